#!/usr/bin/env python3
"""
test_http_fanout.py - many live SSE subscribers of every kind against a real
`stele serve` (docs/subscriptions.md, "Many subscribers"), the paths that
keep them cheap for the writers (issue 21 item 5):

- 120 live subscribers (100 of $all, 10 filtered by category, 10 of single
  streams) while 8 writers append concurrently: the server wakes them in
  rounds (commits held for 2 ms, up to 20 ms when the rounds are dear,
  and sent together)
  and sends each one's events with one sendmsg straight from the shared
  rendering; every subscriber must still get exactly its events, in order,
  each byte for byte as the $all read renders it (stream subscriptions
  with their revision as id)
- filtered and stream subscriptions take events that the shared rendering
  already holds from it instead of rendering them again
  (stele_subscription_events_shared_total counts them), with the same bytes
- commits held back for a round (--sub-batch-us of a second, 100
  subscribers) are delivered when the round is due, with no later commit
- a bad --sub-batch-us is refused with a clear message

Python 3 standard library only.
"""
import json
import os
import random
import re
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (SSE, STELE_BIN, Client, Ev, Server, Suite, all_lines_from,  # noqa: E402
                          all_next, body_of, check_servers, request, stop_servers)

T = Suite("test_http_fanout")
S = None
RUN = "%06x" % random.getrandbits(24)  # names unique to this run


def setup():
    global S
    S = Server([], name="main").start()


def teardown():
    stop_servers([S])


def after_case():
    check_servers(T, [S])


# --------------------------------------------------------------- helpers

def head():
    """The next position of $all."""
    return all_next(S.port, T)


def all_lines(frm):
    """{position: raw JSON line} of $all from `frm` (gapless positions)."""
    return all_lines_from(S.port, T, frm)


def metric(name):
    r = request(S.port, "GET", "/metrics")
    m = re.search(r"^%s (\d+)$" % re.escape(name), r.raw.decode(), re.M)
    T.check(m is not None, "metric %s is exported" % name, "GET /metrics", name, None)
    return int(m.group(1))


def append(client, stream, events):
    r = client.post("/streams/" + stream, body_of(events))
    T.expect(r, 201, what="append to " + stream)
    return r.body


def subscribe(path):
    c = SSE(S.port, path, timeout=60)
    T.check(c.status == 200, "subscription refused", "GET " + path, 200, (c.status, c.body))
    return c


def until_caught_up(c):
    while True:
        m = c.next()
        T.check(m is not None, "the event stream ended before caught-up", c.path, "caught-up", None)
        if m["event"] == "caught-up":
            return


def events_until(c, done):
    """(id, data) of the events received until done(id, data) is true."""
    got = []
    while True:
        m = c.next()
        T.check(m is not None, "the event stream ended early", c.path, "more events",
                "end after %d events" % len(got))
        if m["event"] != "message":
            continue
        got.append((m["id"], m["data"]))
        if done(m["id"], m["data"]):
            return got


def same_events(what, got, want):
    """got and want: lists of (id, data bytes); the first difference fails."""
    for k in range(max(len(got), len(want))):
        g = got[k] if k < len(got) else None
        w = want[k] if k < len(want) else None
        if g != w:
            T.fail("%s: event %d of %d differs" % (what, k, len(want)), None,
                   w and (w[0], w[1][:300]), g and (g[0], g[1][:300]))


def position_of(data):
    return json.loads(data)["position"]


# --------------------------------------------------------------- cases

@T.case
def live_subscribers_of_every_kind_get_every_event_while_8_writers_append():
    cat = "FanA%s" % RUN
    streams = ["%s-%d" % (cat, k) for k in range(10)] + ["FanB%s-%d" % (RUN, k) for k in range(10)]
    subs = []
    try:
        alls = [subscribe("/subscribe/all?from=end") for _ in range(100)]
        filt = [subscribe("/subscribe/all?from=end&category=" + cat) for _ in range(10)]
        per_stream = [subscribe("/subscribe/streams/%s?from=start" % streams[k]) for k in range(10)]
        subs = alls + filt + per_stream
        for c in subs:
            until_caught_up(c)
        base = head()
        errors = []

        def writer(w):
            rnd = random.Random(w)
            cl = Client(S.port)
            try:
                for i in range(60):
                    n = rnd.randint(1, 3)
                    st = rnd.choice(streams)
                    r = cl.post("/streams/" + st, body_of(
                        [Ev("Fan", data='{"w":%d,"i":%d,"j":%d}' % (w, i, j)) for j in range(n)]))
                    if r.status != 201:
                        errors.append((st, r.status, r.body))
            finally:
                cl.close()

        ws = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in ws:
            t.start()
        for t in ws:
            t.join()
        T.check(not errors, "every append succeeded", None, "no error", errors[:3])
        last = head() - 1
        lines = {p: l.encode() if isinstance(l, str) else l for p, l in all_lines(base).items()}
        T.check(len(lines) == last - base + 1, "the $all read", None, last - base + 1, len(lines))
        want_all = [(str(p), lines[p]) for p in range(base, last + 1)]
        for k, c in enumerate(alls):
            got = events_until(c, lambda i, d: int(i) >= last)
            same_events("$all subscriber %d" % k, got, want_all)
        mine = [(p, l) for p, l in sorted(lines.items())
                if json.loads(l)["stream"].startswith(cat + "-")]
        want_cat = [(str(p), l) for p, l in mine]
        for k, c in enumerate(filt):
            got = events_until(c, lambda i, d: int(i) >= mine[-1][0])
            same_events("category subscriber %d" % k, got, want_cat)
        for k, c in enumerate(per_stream):
            evs = [l for _, l in mine if json.loads(l)["stream"] == streams[k]]
            if not evs:
                continue
            want = [(str(r), l) for r, l in enumerate(evs)]
            got = events_until(c, lambda i, d: int(i) >= len(evs) - 1)
            same_events("stream subscriber %d (%s)" % (k, streams[k]), got, want)
        print("     120 subscribers x %d events (8 writers, %d appends)"
              % (last - base + 1, 8 * 60))
    finally:
        for c in subs:
            c.close()


@T.case
def filtered_and_stream_subscriptions_reuse_the_shared_rendering():
    cat = "FanC%s" % RUN
    live = subscribe("/subscribe/all?from=end")
    others = []
    try:
        until_caught_up(live)
        base = head()
        c = Client(S.port)
        for i in range(10):
            append(c, "%s-1" % cat, [Ev("C", data='{"i":%d,"j":%d}' % (i, j)) for j in range(2)])
            append(c, "Other%s-1" % RUN, [Ev("O", data='{"i":%d}' % i)])
        c.close()
        last = head() - 1
        # The unfiltered live subscriber renders every event into the shared
        # rendering as it reads them.
        events_until(live, lambda i, d: int(i) >= last)
        lines = {p: l.encode() if isinstance(l, str) else l for p, l in all_lines(base).items()}
        mine = [(p, l) for p, l in sorted(lines.items())
                if json.loads(l)["stream"] == "%s-1" % cat]
        shared0 = metric("stele_subscription_events_shared_total")
        filt = subscribe("/subscribe/all?from=%d&category=%s" % (base, cat))
        strm = subscribe("/subscribe/streams/%s-1?from=start" % cat)
        others = [filt, strm]
        got_f = events_until(filt, lambda i, d: int(i) >= mine[-1][0])
        same_events("category subscriber", got_f, [(str(p), l) for p, l in mine])
        got_s = events_until(strm, lambda i, d: int(i) >= len(mine) - 1)
        same_events("stream subscriber", got_s, [(str(r), l) for r, (_, l) in enumerate(mine)])
        shared = metric("stele_subscription_events_shared_total") - shared0
        T.check(shared >= 2 * len(mine), "the filtered and the stream subscriptions took their "
                "events from the shared rendering (stele_subscription_events_shared_total)",
                None, ">= %d" % (2 * len(mine)), shared)
    finally:
        live.close()
        for o in others:
            o.close()


@T.case
def commits_held_for_a_round_are_delivered_when_it_is_due():
    # A server whose rounds of 100 subscribers are a second apart: the
    # first append wakes them at once, the next ones (committed well within
    # the second) are held, then must all arrive, in order, without any
    # further commit to wake the server. (No keep-alive comments: a lost
    # wake-up ends in the socket's 60-s timeout, a failure, not a hang.)
    srv = Server(["--sub-batch-us", "1000000", "--sse-keepalive", "3600"], name="held").start()
    subs = []
    try:
        subs = [SSE(srv.port, "/subscribe/all?from=end", timeout=60) for _ in range(100)]
        for c in subs:
            until_caught_up(c)
        cl = Client(srv.port)
        firsts = [cl.post("/streams/held%s-1" % RUN, body_of([Ev("H", data='{"k":%d}' % k)]))
                  for k in range(5)]
        cl.close()
        for r in firsts:
            T.expect(r, 201, what="append")
        want = [str(r.body["firstPosition"]) for r in firsts]
        for k, c in enumerate(subs):
            got = events_until(c, lambda i, d: i == want[-1])
            T.check([i for i, _ in got] == want, "subscriber %d got the held events" % k,
                    None, want, [i for i, _ in got])
    finally:
        for c in subs:
            c.close()
        stop_servers([srv])


@T.case
def bad_sub_batch_us_is_refused():
    for bad in ("-1", "abc", "1000001"):
        p = subprocess.run([STELE_BIN, "serve", "--port", "0", "--data", "/nonexistent/x",
                            "--sub-batch-us", bad], capture_output=True, text=True, timeout=30)
        T.check(p.returncode == 2 and "sub-batch-us" in p.stderr,
                "stele serve --sub-batch-us %s is refused with a message naming the flag" % bad,
                None, "exit 2 and a message", (p.returncode, p.stderr[:300]))


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
