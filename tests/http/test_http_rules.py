"""
test_http_rules.py - rules against a real `stele serve` and a webhook
receiver started here (tests/http/webhook_receiver.py): definitions and bad
input (nothing stored), signatures, dead letters and redrive, replays of a
time window and of positions, group rewind, a target that never answers,
stream targets, pause/resume and the /metrics series the shipped alert
rules use. The crash test with 8 writers is test_http_rules_crash.py.

Python 3 standard library only. No timing assertions: every wait is "until
this happens, or fail after a generous deadline".
"""
import json
import os
import re
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import Server, Suite, check_servers, request  # noqa: E402
from webhook_receiver import Receiver, verify_signature  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T = Suite("http_rules")
S = {"srv": None, "rcv": None}


def setup():
    S["srv"] = Server().start()
    S["rcv"] = Receiver()


def teardown():
    if S["srv"]:
        S["srv"].cleanup()
    if S["rcv"]:
        S["rcv"].close()


def after_case():
    check_servers(T, [S["srv"]])


def port():
    return S["srv"].port


def put_rule(name, body, status=(200, 201)):
    r = request(port(), "PUT", "/rules/" + name, json.dumps(body) if not isinstance(body, str) else body)
    return T.expect(r, status, what="PUT /rules/" + name)


def append(stream, events):
    body = json.dumps([{"type": t, "data": d} for t, d in events])
    r = request(port(), "POST", "/streams/" + stream, body)
    return T.expect(r, 201, what="append")


def wait_for(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    T.fail("timed out waiting for " + what)


def rule_info(name):
    return T.expect(request(port(), "GET", "/rules/" + name), 200)


def webhook(secret=None, **extra):
    t = {"type": "webhook", "url": S["rcv"].url}
    if secret:
        t["secret"] = secret
    t.update(extra)
    return t


@T.case
def bad_input_stores_nothing():
    url = S["rcv"].url
    bad = [
        ("not json", '{"pattern": '),
        ("no pattern", {"target": {"type": "webhook", "url": url}}),
        ("pattern not object", {"pattern": [1], "target": {"type": "webhook", "url": url}}),
        ("unknown operator", {"pattern": {"type": [{"numbr": [">", 1]}]},
                              "target": {"type": "webhook", "url": url}}),
        ("malformed numeric", {"pattern": {"data": {"n": [{"numeric": [">"]}]}},
                               "target": {"type": "webhook", "url": url}}),
        ("pattern leaf not array", {"pattern": {"type": "A"}, "target": {"type": "webhook", "url": url}}),
        ("no target", {"pattern": {"type": ["A"]}}),
        ("unknown target type", {"pattern": {"type": ["A"]}, "target": {"type": "sqs", "url": url}}),
        ("ftp url", {"pattern": {"type": ["A"]}, "target": {"type": "webhook", "url": "ftp://x/"}}),
        ("no host", {"pattern": {"type": ["A"]}, "target": {"type": "webhook", "url": "http:///x"}}),
        ("url missing", {"pattern": {"type": ["A"]}, "target": {"type": "webhook"}}),
        ("bad template", {"pattern": {"type": ["A"]}, "target": {"type": "webhook", "url": url,
                                                                  "template": "{{nope}}"}}),
        ("reserved header", {"pattern": {"type": ["A"]},
                             "target": {"type": "webhook", "url": url, "headers": {"Stele-X": "1"}}}),
        ("system target stream", {"pattern": {"type": ["A"]}, "target": {"type": "stream", "stream": "$x"}}),
        ("bad mode", {"pattern": {"type": ["A"]}, "target": {"type": "stream", "stream": "X", "mode": "move"}}),
        ("unknown member", {"pattern": {"type": ["A"]}, "target": {"type": "webhook", "url": url}, "colour": 1}),
        ("retry range", {"pattern": {"type": ["A"]}, "target": {"type": "webhook", "url": url},
                         "retry": {"maxAttempts": 0}}),
        ("bad partition key", {"pattern": {"type": ["A"]}, "target": {"type": "webhook", "url": url},
                               "partitionKey": "colour"}),
        ("bad source", {"pattern": {"type": ["A"]}, "target": {"type": "webhook", "url": url},
                        "source": {"streamRegex": "("}}),
    ]
    for what, body in bad:
        r = request(port(), "PUT", "/rules/bad", body if isinstance(body, str) else json.dumps(body))
        T.expect(r, 400, "INVALID_ARGUMENT", what)
    r = request(port(), "PUT", "/rules/" + "x" * 101, json.dumps(bad[1][1]))
    T.check(r.status in (400, 404), "long name refused", r.req, "400/404", r)
    r = request(port(), "PUT", "/rules/a%20b", json.dumps({"pattern": {}, "target": webhook()}))
    T.expect(r, 400, "INVALID_ARGUMENT", "name with a space")
    msg = request(port(), "PUT", "/rules/bad", json.dumps(bad[3][1])).body["error"]["message"]
    T.check(msg.startswith("pattern.type") and "numbr" in msg, "pattern errors carry their path",
            None, "pattern.type...numbr", msg)
    T.check(T.expect(request(port(), "GET", "/rules"), 200)["rules"] == [], "nothing stored")
    T.expect(request(port(), "GET", "/rules/bad"), 404, "RULE_NOT_FOUND")
    r = request(port(), "GET", "/streams/%24rules")
    T.check(r.status == 404, "no $rules events were written", r.req, 404, r)
    # Replay windows on a real rule.
    put_rule("win", {"pattern": {"type": ["W"]}, "target": webhook()})
    for what, body in [("from after to (positions)", {"from": 10, "to": 5}),
                       ("from after to (times)", {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
                       ("mixed kinds", {"from": 1, "to": "2026-01-01T00:00:00Z"}),
                       ("bad time", {"from": "yesterday"}),
                       ("no from", {"to": 5}),
                       ("negative", {"from": -1}),
                       ("unknown member", {"from": 0, "speed": 2})]:
        r = request(port(), "POST", "/rules/win/replays", json.dumps(body))
        T.expect(r, 400, "INVALID_ARGUMENT", what)
    T.check(T.expect(request(port(), "GET", "/rules/win/replays"), 200)["replays"] == [],
            "no replay started")
    T.expect(request(port(), "POST", "/rules/none/replays", json.dumps({"from": 0})), 404, "RULE_NOT_FOUND")
    T.expect(request(port(), "DELETE", "/rules/win"), 204)


@T.case
def delivery_and_signatures():
    rcv = S["rcv"]
    rcv.clear()
    info = put_rule("sig", {"pattern": {"type": ["Paid"], "data": {"amount": [{"numeric": [">", 10]}]}},
                            "target": webhook(secret="s3cret")}, 201)
    T.check(info["definition"]["target"]["secret"] == "***", "secret hidden", None, "***", info)
    T.check(info["definition"]["retry"]["maxAttempts"] == 10, "defaults filled in", None, 10, info)
    append("Acct-1", [("Paid", {"amount": 5}), ("Paid", {"amount": 50}), ("Refunded", {"amount": 99})])
    append("Acct-2", [("Paid", {"amount": 11})])
    got = wait_for(lambda: len(rcv.delivered()) >= 2 and rcv.delivered(), "2 deliveries")
    time.sleep(0.3)
    got = rcv.delivered()
    T.check(sorted(g[3]["data"]["amount"] for g in got) == [11, 50], "only matching events",
            None, [11, 50], [g[3] for g in got])
    for g in got:
        h = g[1]
        T.check(verify_signature("s3cret", h.get("stele-signature", ""), g[2]), "signature verifies",
                None, "valid", h)
        T.check(not verify_signature("other", h.get("stele-signature", ""), g[2]),
                "signature fails with another secret")
        T.check(h.get("stele-event-id") == g[3]["id"], "event id header", None, g[3]["id"], h)
        T.check(h.get("stele-rule") == "sig", "rule header", None, "sig", h)
        T.check("replay" not in g[3] and "stele-replay" not in h, "live is not marked as a replay")
    info = wait_for(lambda: (lambda i: i["stats"]["delivered"] == 2 and i)(rule_info("sig")), "counters")
    T.check(info["stats"]["matched"] == 2, "matched counter", None, 2, info["stats"])
    T.expect(request(port(), "DELETE", "/rules/sig"), 204)


@T.case
def dead_letters_and_redrive():
    rcv = S["rcv"]
    rcv.clear()
    mode = {"fix": False}

    def behave(body, headers):
        if not mode["fix"] and body and body.get("data", {}).get("poison"):
            return (422, {}, 0)
        if not mode["fix"] and body and body.get("data", {}).get("flaky"):
            return (503, {}, 0)
        return (200, {}, 0)
    rcv.behave = behave
    put_rule("dl", {"pattern": {"type": ["Job"]}, "target": webhook(),
                    "retry": {"maxAttempts": 3, "backoffMs": 10, "maxBackoffMs": 50}})
    append("Job-1", [("Job", {"n": 1}), ("Job", {"n": 2, "poison": True}), ("Job", {"n": 3})])
    append("Job-2", [("Job", {"n": 4, "flaky": True}), ("Job", {"n": 5})])
    wait_for(lambda: rule_info("dl")["stats"]["deadLetters"] == 2, "2 dead letters")
    ok = sorted(g[3]["data"]["n"] for g in rcv.delivered())
    T.check(ok == [1, 3, 5], "the others were delivered", None, [1, 3, 5], ok)
    attempts = [g[1]["stele-attempt"] for g in rcv.got if g[3]["data"]["n"] == 4]
    T.check(attempts == ["1", "2", "3"], "503 retried up to maxAttempts", None, ["1", "2", "3"], attempts)
    attempts = [g[1]["stele-attempt"] for g in rcv.got if g[3]["data"]["n"] == 2]
    T.check(attempts == ["1"], "422 goes straight to dead letters", None, ["1"], attempts)
    dl = T.expect(request(port(), "GET", "/rules/dl/dead-letters"), 200)["deadLetters"]
    reasons = sorted(d["deadLettered"]["reason"] for d in dl)
    T.check(len(dl) == 2 and "HTTP status 422" in reasons[0] and "HTTP status 503" in reasons[1]
            and "3 attempts" in reasons[1], "dead letters carry the last error", None, "422, 503", reasons)
    info = rule_info("dl")
    T.check(info["stats"]["failures"]["http_4xx"] == 1 and info["stats"]["failures"]["http_5xx"] == 3,
            "failures by kind", None, "4xx 1, 5xx 3", info["stats"])
    mode["fix"] = True
    r = T.expect(request(port(), "POST", "/rules/dl/dead-letters/redrive", ""), 200)
    T.check(r["redriving"] == 2, "redrive both", None, 2, r)
    wait_for(lambda: sorted(g[3]["data"]["n"] for g in rcv.delivered()) == [1, 2, 3, 4, 5], "redriven")
    wait_for(lambda: rule_info("dl")["stats"]["deadLetters"] == 0, "dead letters drained")
    T.expect(request(port(), "DELETE", "/rules/dl/dead-letters"), 204)
    T.expect(request(port(), "DELETE", "/rules/dl"), 204)
    rcv.behave = lambda b, h: (200, {}, 0)


def first_time_ms():
    r = request(port(), "GET", "/all?direction=backwards&limit=1")
    return r.body


@T.case
def replay_time_window():
    rcv = S["rcv"]
    put_rule("rp", {"pattern": {"type": ["Tick"]}, "target": webhook()})
    append("Clock-1", [("Tick", {"n": i}) for i in range(5)] + [("Tock", {"n": 99})])
    time.sleep(0.02)
    t1 = time.time()
    time.sleep(0.02)
    append("Clock-1", [("Tick", {"n": i}) for i in range(5, 12)] + [("Tock", {"n": 98})])
    append("Clock-2", [("Tick", {"n": 100})])
    time.sleep(0.02)
    t2 = time.time()
    time.sleep(0.02)
    append("Clock-1", [("Tick", {"n": i}) for i in range(12, 15)])
    wait_for(lambda: len([g for g in rcv.delivered() if g[3]["type"] == "Tick"]) >= 16, "live deliveries")
    rcv.clear()

    def iso(t):
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + (".%06dZ" % int((t % 1) * 1e6))
    r = T.expect(request(port(), "POST", "/rules/rp/replays", json.dumps({"from": iso(t1), "to": iso(t2)})), 202)
    rid = r["id"]
    prog = wait_for(lambda: (lambda p: p["state"] == "done" and p)(
        T.expect(request(port(), "GET", "/rules/rp/replays/%d" % rid), 200)), "replay done")
    got = [g for g in rcv.delivered()]
    ns = sorted(g[3]["data"]["n"] for g in got)
    T.check(ns == list(range(5, 12)) + [100], "exactly the window's matching events", None,
            list(range(5, 12)) + [100], ns)
    T.check(all(g[3].get("replay") is True and g[1].get("stele-replay") == str(rid) for g in got),
            "marked as replays (field and header)", None, "replay", [g[1] for g in got][:2])
    T.check(prog["matched"] == 8 and prog["delivered"] == 8, "progress counters", None, 8, prog)
    order = [g[3]["data"]["n"] for g in got if g[3]["stream"] == "Clock-1"]
    T.check(order == sorted(order), "replayed in order per stream", None, sorted(order), order)
    # Positions, and cancel.
    rcv.clear()
    r = T.expect(request(port(), "POST", "/rules/rp/replays", json.dumps({"from": 0})), 202)
    wait_for(lambda: T.expect(request(port(), "GET", "/rules/rp/replays/%d" % r["id"]), 200)["state"] == "done",
             "position replay done")
    T.check(len(rcv.delivered()) == 16, "position replay delivers every match", None, 16, len(rcv.delivered()))
    T.expect(request(port(), "DELETE", "/rules/rp/replays/999"), 404, "REPLAY_NOT_FOUND")
    T.expect(request(port(), "DELETE", "/rules/rp"), 204)


@T.case
def group_rewind():
    p = port()
    T.expect(request(p, "PUT", "/subscriptions/Rw-1/g", json.dumps({"startFrom": 0})), (200, 201))
    append("Rw-1", [("E", {"n": i}) for i in range(10)])

    def pull_all():
        seen = []
        while True:
            r = T.expect(request(p, "GET", "/subscriptions/Rw-1/g/messages?count=100"), 200)
            msgs = r["messages"]
            if not msgs:
                return seen
            ids = [m["event"]["id"] for m in msgs]
            seen += [m["event"]["revision"] for m in msgs]
            T.expect(request(p, "POST", "/subscriptions/Rw-1/g/ack", json.dumps({"ids": ids})), (200, 204))
    T.check(pull_all() == list(range(10)), "first pass")
    T.check(pull_all() == [], "nothing left")
    r = T.expect(request(p, "POST", "/subscriptions/Rw-1/g/rewind?to=6", ""), 200)
    T.check(r["rewoundTo"] == 6, "rewound", None, 6, r)
    T.check(pull_all() == [6, 7, 8, 9], "redelivered from the chosen point", None, [6, 7, 8, 9], None)
    T.expect(request(p, "POST", "/subscriptions/Rw-1/g/rewind?time=2000-01-01T00:00:00Z", ""), 200)
    T.check(pull_all() == list(range(10)), "rewind to a time before everything")
    T.expect(request(p, "POST", "/subscriptions/Rw-1/g/rewind?to=x", ""), 400, "INVALID_ARGUMENT")
    T.expect(request(p, "POST", "/subscriptions/Rw-1/nope/rewind?to=1", ""), 404)
    T.expect(request(p, "DELETE", "/subscriptions/Rw-1/g"), (200, 204))


@T.case
def stream_target_and_pause():
    put_rule("copy", {"pattern": {"type": [{"prefix": "Order"}]},
                      "target": {"type": "stream", "stream": "Audit"}})
    put_rule("link", {"pattern": {"type": ["OrderPlaced"]}, "source": {"categories": ["Order"]},
                      "target": {"type": "stream", "stream": "Links", "mode": "link"}})
    append("Order-1", [("OrderPlaced", {"a": 1}), ("Other", {}), ("OrderShipped", {"a": 2})])

    def read(stream):
        r = request(port(), "GET", "/streams/%s?limit=100" % stream)
        return r.body.get("events", []) if r.status == 200 else []
    wait_for(lambda: len(read("Audit")) == 2, "2 copies")
    T.check([e["type"] for e in read("Audit")] == ["OrderPlaced", "OrderShipped"], "copies in order")
    wait_for(lambda: len(read("Links")) == 1, "1 link")
    T.check(read("Links")[0]["type"] == "$>", "a link event", None, "$>", read("Links"))
    T.expect(request(port(), "POST", "/rules/copy/pause", ""), 200)
    T.check(rule_info("copy")["enabled"] is False, "paused")
    append("Order-2", [("OrderPlaced", {"a": 3})])
    wait_for(lambda: len(read("Links")) == 2, "the other rule goes on")
    T.check(len(read("Audit")) == 2, "a paused rule delivers nothing")
    st = rule_info("copy")["stats"]
    T.check(st["lagEvents"] >= 1 and st["lagSeconds"] > 0, "a paused rule is behind", None,
            "lag > 0", st)
    T.expect(request(port(), "POST", "/rules/copy/resume", ""), 200)
    wait_for(lambda: len(read("Audit")) == 3, "delivered after resume")
    for n in ("copy", "link"):
        T.expect(request(port(), "DELETE", "/rules/" + n), 204)


@T.case
def dead_target_bounded():
    """A target that never answers: appends complete, memory stays bounded."""
    hang = Receiver()
    hang.hang = True
    try:
        put_rule("dead", {"pattern": {"type": ["Load"]}, "maxBuffered": 50, "maxInFlight": 8,
                          "target": {"type": "webhook", "url": hang.url, "timeoutMs": 60000}})
        # Another rule on the same events, with a live target.
        S["rcv"].clear()
        put_rule("alive", {"pattern": {"type": ["Load"], "data": {"i": [0, 249]}}, "target": webhook()})
        srv = S["srv"]
        rss0 = srv.rss_kb()
        blob = "x" * 4000
        done = [0]

        def writer(k):
            for i in range(250):
                append("Load-%d" % k, [("Load", {"i": i, "pad": blob})] * 20)
                done[0] += 20
        ts = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        # 20,000 matching events of 4 KB (80 MB) behind a target that never
        # answers: held in memory, they would show.
        T.check(done[0] == 20000, "every append completed", None, 20000, done[0])
        info = rule_info("dead")
        T.check(info["stats"]["pending"] <= 50 and info["stats"]["inFlight"] <= 8,
                "the rule holds at most maxBuffered", None, "<= 50", info["stats"])
        T.check(info["stats"]["lagEvents"] > 19000, "the rest waits in the log", None, "> 19000",
                info["stats"])
        rss1 = srv.rss_kb()
        T.check(rss1 - rss0 < 40 * 1024, "memory bounded (RSS growth < 40 MiB for 80 MB of events)",
                None, "< 40960 kB", rss1 - rss0)
        wait_for(lambda: len(S["rcv"].delivered()) == 160, "the other rule delivers everything")
        T.expect(request(port(), "DELETE", "/rules/dead"), 204)
        T.expect(request(port(), "DELETE", "/rules/alive"), 204)
    finally:
        hang.close()


@T.case
def metrics_and_alert_names():
    put_rule("m", {"pattern": {"type": ["M"]}, "target": webhook()})
    append("M-1", [("M", {})])
    wait_for(lambda: rule_info("m")["stats"]["delivered"] == 1, "delivered")
    text = request(port(), "GET", "/metrics").raw.decode()
    for series in ('stele_rule_matched_total{rule="m"} 1', 'stele_rule_delivered_total{rule="m"} 1',
                   'stele_rule_failures_total{rule="m",kind="timeout"} 0',
                   'stele_rule_delivery_latency_seconds_count{rule="m"} 1',
                   'stele_rule_lag_seconds{rule="m"}', 'stele_group_parked{stream="$all",group="$rule-m"}',
                   'stele_group_checkpoint_lag_events{stream="$all",group="$rule-m"}'):
        T.check(series in text, "metrics have " + series)
    # Every metric the shipped alert rules use exists.
    with open(os.path.join(REPO, "deploy", "prometheus", "stele-alerts.yml")) as f:
        names = set(re.findall(r"\b(stele_[a-z_]+)", f.read()))
    exposed = set(re.findall(r"^# TYPE (stele_[a-z_]+)", text, re.M))
    missing = [n for n in names if n not in exposed and re.sub(r"_(bucket|sum|count)$", "", n) not in exposed]
    T.check(not missing, "alert rules use only exposed metrics", None, [], missing)
    T.expect(request(port(), "DELETE", "/rules/m"), 204)


@T.case
def rules_survive_restart():
    put_rule("keep", {"pattern": {"type": ["K"]}, "target": webhook(), "description": "kept"})
    T.expect(request(port(), "POST", "/rules/keep/pause", ""), 200)
    T.check(S["srv"].stop() == 0, "the server exits 0 on SIGTERM (an ASan build: no error, no leak)")
    S["srv"].start()
    info = rule_info("keep")
    T.check(info["enabled"] is False and info["definition"]["description"] == "kept",
            "definition and paused state kept", None, "paused", info)
    T.expect(request(port(), "DELETE", "/rules/keep"), 204)
    S["srv"].stop()
    S["srv"].start()
    T.expect(request(port(), "GET", "/rules/keep"), 404, "RULE_NOT_FOUND")


@T.case
def template_and_retry_after():
    rcv = S["rcv"]
    rcv.clear()
    seen = {"n": 0}

    def behave(body, headers):
        seen["n"] += 1
        if seen["n"] == 1:
            return (429, {"Retry-After": "2"}, 0)
        return (200, {}, 0)
    rcv.behave = behave
    put_rule("tpl", {"pattern": {"type": ["T"]}, "retry": {"backoffMs": 1, "maxBackoffMs": 5},
                     "target": webhook(template='{"kind":{{type}},"at":{{stream}},"n":{{data}},"r":{{replay}}}',
                                       headers={"X-Team": "billing"})})
    append("Tpl-1", [("T", {"v": 7})])
    wait_for(lambda: rcv.delivered(), "a delivery")
    got = rcv.delivered()[0]
    T.check(got[3] == {"kind": "T", "at": "Tpl-1", "n": {"v": 7}, "r": False}, "template body",
            None, "the template filled in", got[3])
    T.check(got[1].get("x-team") == "billing", "custom header", None, "billing", got[1])
    times = [g for g in rcv.got]
    T.check(len(times) == 2 and times[1][1]["stele-attempt"] == "2", "retried after the 429")
    T.expect(request(port(), "DELETE", "/rules/tpl"), 204)
    rcv.behave = lambda b, h: (200, {}, 0)


@T.case
def retry_after_is_respected():
    """A lower bound only: a loaded machine can make the retry later, never
    earlier than the target asked."""
    rcv = S["rcv"]
    rcv.clear()
    stamps = []

    def behave(body, headers):
        stamps.append(time.monotonic())
        return (503, {"Retry-After": "2"}, 0) if len(stamps) == 1 else (200, {}, 0)
    rcv.behave = behave
    put_rule("ra", {"pattern": {"type": ["RA"]}, "retry": {"backoffMs": 1, "maxBackoffMs": 5},
                    "target": webhook()})
    append("Ra-1", [("RA", {})])
    wait_for(lambda: rcv.delivered(), "the retry")
    T.check(len(stamps) == 2 and stamps[1] - stamps[0] >= 1.9, "the retry waited for Retry-After",
            None, ">= 1.9 s", [round(b - stamps[0], 3) for b in stamps])
    T.expect(request(port(), "DELETE", "/rules/ra"), 204)
    rcv.behave = lambda b, h: (200, {}, 0)


@T.case
def cancel_running_replay():
    hang = Receiver()
    hang.hang = True
    try:
        put_rule("cx", {"pattern": {"type": ["Cx"]}, "start": "end",
                        "target": {"type": "webhook", "url": hang.url, "timeoutMs": 60000}})
        append("Cx-1", [("Cx", {})] * 3)
        r = T.expect(request(port(), "POST", "/rules/cx/replays", json.dumps({"from": 0})), 202)
        p = T.expect(request(port(), "GET", "/rules/cx/replays/%d" % r["id"]), 200)
        T.check(p["state"] == "running", "running while the target hangs", None, "running", p)
        T.expect(request(port(), "DELETE", "/rules/cx/replays/%d" % r["id"]), 204)
        wait_for(lambda: T.expect(request(port(), "GET", "/rules/cx/replays/%d" % r["id"]), 200)["state"]
                 == "cancelled", "cancelled")
        T.expect(request(port(), "DELETE", "/rules/cx"), 204)
    finally:
        hang.close()


@T.case
def changes_refused_from_non_loopback():
    from stele_server import parse_responses, raw_exchange
    # The same way as test_http_guard.py: one of this machine's own
    # non-loopback addresses as the source, or one added to lo.
    from test_http_guard import del_extra_address, non_loopback_source
    addr, extra = non_loopback_source()
    if addr is None:
        print("  SKIP changes_refused_from_non_loopback: no non-loopback IPv4 address")
        return
    srv = Server(["--host", "0.0.0.0", "--insecure"], name="all-addresses").start()
    try:
        body = json.dumps({"pattern": {"type": ["X"]}, "target": webhook()})
        for method, path in (("PUT", "/rules/x"), ("DELETE", "/rules/x"), ("POST", "/rules/x/pause")):
            out, _ = raw_exchange(srv.port, ("%s %s HTTP/1.1\r\nHost: %s:%d\r\n"
                                             "Content-Type: application/json\r\n"
                                             "Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                             % (method, path, addr, srv.port, len(body),
                                                body)).encode(), host=addr)
            rs = parse_responses(out)
            T.check(len(rs) == 1 and rs[0].status == 403 and b"PERMISSION_DENIED" in rs[0].raw,
                    "%s %s from %s refused" % (method, path, addr), None, 403, out)
        T.expect(request(srv.port, "GET", "/rules/x"), 404, "RULE_NOT_FOUND")
        T.expect(request(srv.port, "PUT", "/rules/x", body), 201)
    finally:
        srv.stop()
        srv.cleanup()
        if extra:
            del_extra_address()


@T.case
def cli_rules():
    import subprocess
    from stele_server import STELE_BIN

    def stele(*args, stdin=None):
        env = dict(os.environ, STELE_SERVER="http://127.0.0.1:%d" % port())
        p = subprocess.run([STELE_BIN, "rules"] + list(args), capture_output=True, text=True,
                           env=env, input=stdin)
        return p.returncode, p.stdout, p.stderr
    d = json.dumps({"pattern": {"type": ["C"]}, "target": webhook()})
    rc, out, err = stele("put", "cli1", d)
    T.check(rc == 0 and json.loads(out)["name"] == "cli1", "put from the argument", None, 0, (rc, out, err))
    rc, out, err = stele("put", "cli2", "-", stdin=d)
    T.check(rc == 0, "put from stdin", None, 0, (rc, err))
    rc, out, err = stele("list")
    names = [r["name"] for r in json.loads(out)["rules"]]
    T.check(rc == 0 and names == ["cli1", "cli2"], "list", None, ["cli1", "cli2"], (rc, out))
    rc, out, err = stele("pause", "cli1")
    T.check(rc == 0 and json.loads(out)["enabled"] is False, "pause", None, 0, (rc, out, err))
    rc, out, err = stele("replay", "cli2", "--from", "0")
    T.check(rc == 0 and "id" in json.loads(out), "replay", None, 0, (rc, out, err))
    rc, out, err = stele("put", "bad", '{"pattern": {"type": [{"x": 1}]}, "target": {"type": "webhook", "url": "http://a"}}')
    T.check(rc == 1 and "INVALID_ARGUMENT" in err, "refused definition: exit 1", None, 1, (rc, err))
    rc, out, err = stele("get", "nope")
    T.check(rc == 1 and "RULE_NOT_FOUND" in err, "unknown rule: exit 1", None, 1, (rc, err))
    rc, out, err = stele("replay", "cli2")
    T.check(rc == 2, "replay without --from: exit 2", None, 2, (rc, err))
    rc, out, err = stele("frobnicate")
    T.check(rc == 2, "unknown subcommand: exit 2", None, 2, (rc, err))
    for n in ("cli1", "cli2"):
        rc, out, err = stele("delete", n)
        T.check(rc == 0, "delete", None, 0, (rc, err))


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
