"""
test_http_pg_cluster.py - several `stele serve --data postgres://...` on one
PostgreSQL (issue 15, docs/backends.md). This test starts its own
PostgreSQL (pg_server.py: private port and directory, small memory) and
three Stele servers on one database, then checks what the PostgreSQL
backend promises:

- racing appends with the same exact expected revision sent to different
  servers: exactly one wins, the others get 409;
- an idempotent retry sent to another server returns the original result;
  the same id on another stream is an id conflict;
- subscribers on every server receive the same gapless $all order while 8
  writers append through all three, and one server is SIGKILLed mid-run:
  every acknowledged event is there, at its acknowledged position, and no
  subscriber skips a position;
- PostgreSQL restarted under load: appends fail with a clear 503 while it
  is down, succeed again after, and nothing acknowledged is lost (the
  writers' new connections prepare their statements again);
- stream names, types and correlation ids with quotes, backslashes, commas
  and braces go through the writer's text arrays unchanged.
"""
import json
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_server import PgServer  # noqa: E402
from stele_server import SSE, Server, Suite, request  # noqa: E402

T = Suite("http_pg_cluster")
S = {}


def uri():
    pg = S["pg"]
    return "postgresql:///stele?host=%s&port=%d&user=postgres" % (pg.tmp, pg.port)


def setup():
    pg = S["pg"] = PgServer()
    # Three servers keep up to 10 connections each.
    with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
        f.write("max_connections = 60\n")
    pg.start()
    pg.psql("CREATE DATABASE stele")
    S["srv"] = [Server(data_dir=uri(), name="pg%d" % i).start() for i in range(3)]


def teardown():
    for s in S.get("srv", []):
        s.cleanup()
    if "pg" in S:
        S["pg"].cleanup()


def post(port, stream, events, expected=None, timeout=60):
    h = {"Content-Type": "application/json"}
    if expected is not None:
        h["Stele-Expected-Revision"] = str(expected)
    return request(port, "POST", "/streams/" + stream, json.dumps(events), headers=h,
                   timeout=timeout)


def read_all(port):
    out, frm = [], 0
    while True:
        r = request(port, "GET", "/all?from=%d&limit=1000" % frm)
        assert r.status == 200, r.raw
        evs = json.loads(r.raw)["events"]
        out += evs
        if len(evs) < 1000:
            return out
        frm = evs[-1]["position"] + 1


def live(i):
    return S["srv"][i].alive()


@T.case
def racing_exact_expectations():
    srv = S["srv"]
    for rnd in range(8):
        st = "race-%d" % rnd
        r = post(srv[0].port, st, [{"type": "Opened", "data": {}}], "no_stream")
        T.expect(r, 201, what="first event")
        barrier = threading.Barrier(3)
        got = [None] * 3

        def one(k):
            barrier.wait()
            got[k] = post(srv[k].port, st, [{"type": "Won", "data": {"by": k}}], 0).status

        th = [threading.Thread(target=one, args=(k,)) for k in range(3)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        T.check(sorted(got) == [201, 409, 409], "exactly one winner in round %d" % rnd,
                None, [201, 409, 409], got)
        r = request(srv[1].port, "GET", "/streams/" + st)
        T.check(len(json.loads(r.raw)["events"]) == 2, "two events in %s" % st, None, 2,
                r.raw[:200])


@T.case
def idempotent_retry_on_another_server():
    srv = S["srv"]
    ev = [{"type": "Paid", "data": {"n": 1}, "id": str(uuid.uuid4())},
          {"type": "Shipped", "data": {"n": 2}, "id": str(uuid.uuid4())}]
    a = post(srv[0].port, "idem-1", ev, "no_stream")
    T.expect(a, 201, what="original")
    b = post(srv[1].port, "idem-1", ev, "no_stream")
    T.expect(b, 200, what="retry through another server")
    ja, jb = json.loads(a.raw), json.loads(b.raw)
    T.check(jb["idempotent"] is True and ja["firstPosition"] == jb["firstPosition"] and
            ja["lastRevision"] == jb["lastRevision"], "retry gives the original result", None,
            ja, jb)
    c = post(srv[2].port, "idem-2", ev[:1])
    T.expect(c, 409, "ID_CONFLICT", what="the same id on another stream")
    r = request(srv[2].port, "GET", "/streams/idem-1")
    T.check(len(json.loads(r.raw)["events"]) == 2, "written once", None, 2, r.raw[:200])


class Sub(threading.Thread):
    """An $all subscriber on one server, from position `frm`, keeping
    (position, id) of every event until it has seen position `until` or
    its server dies."""

    def __init__(self, port, frm):
        super().__init__(daemon=True)
        self.sse = SSE(port, "/subscribe/all?from=%d" % frm, timeout=120)
        self.got = []
        self.until = None
        self.error = None

    def run(self):
        try:
            while True:
                m = self.sse.next()
                if m is None:
                    return
                if m["event"] != "message":
                    if self.until is not None and self.got and self.got[-1][0] >= self.until:
                        return
                    continue
                e = json.loads(m["data"])
                self.got.append((e["position"], e["id"]))
                if self.until is not None and e["position"] >= self.until:
                    return
        except Exception as ex:  # noqa: BLE001
            self.error = ex


def gapless(got, frm):
    return [p for p, _ in got] == list(range(frm, frm + len(got)))


def writer(k, ports, n, acked, kill_at, counter, lock):
    """n appends of 1..3 events, round robin over the servers that are up;
    an append that fails on a dead server is retried elsewhere with the
    same ids (idempotent), so each is acknowledged exactly once."""
    for j in range(n):
        evs = [{"type": "W", "data": {"w": k, "j": j, "e": e}, "id": str(uuid.uuid4())}
               for e in range(1 + (j % 3))]
        stream = "w%d-%d" % (k, j % 4)
        tries = 0
        while True:
            i = (k + j + tries) % len(ports)
            tries += 1
            if not ports[i]()[1]:
                continue
            try:
                r = post(ports[i]()[0], stream, evs, timeout=30)
            except OSError:
                continue
            if r.status in (200, 201):
                res = json.loads(r.raw)
                with lock:
                    for e, ev in enumerate(evs):
                        acked[res["firstPosition"] + e] = ev["id"]
                    counter[0] += 1
                    if counter[0] == kill_at:
                        counter[1].set()
                break
            if tries > 200:
                raise RuntimeError("append kept failing: %r" % r.raw)
            time.sleep(0.05)


@T.case
def gapless_feed_with_a_server_killed():
    srv = S["srv"]
    frm = len(read_all(srv[0].port))
    subs = [Sub(s.port, frm) for s in srv]
    for s in subs:
        s.start()
    acked, lock = {}, threading.Lock()
    kill = threading.Event()
    counter = [0, kill]
    ports = [(lambda i=i: (srv[i].port, live(i))) for i in range(3)]
    per_writer = 40
    ws = [threading.Thread(target=writer,
                           args=(k, ports, per_writer, acked, 8 * per_writer // 2, counter, lock))
          for k in range(8)]
    for w in ws:
        w.start()
    kill.wait(120)
    srv[2].kill()
    for w in ws:
        w.join()
    events = read_all(srv[0].port)
    last = events[-1]["position"]
    T.check(gapless([(e["position"], e["id"]) for e in events], 0), "$all is gapless", None,
            "0..%d" % last, [e["position"] for e in events][:20])
    by_pos = {e["position"]: e["id"] for e in events}
    lost = [p for p, i in acked.items() if by_pos.get(p) != i]
    T.check(not lost, "every acknowledged event at its position", None, [], lost[:10])
    T.check(len(acked) == len(events) - frm, "nothing written twice or unacknowledged", None,
            len(events) - frm, len(acked))
    for s in subs[:2]:
        s.until = last
    for s in subs[:2]:
        s.join(120)
    want = [(e["position"], e["id"]) for e in events if e["position"] >= frm]
    for i, s in enumerate(subs[:2]):
        T.check(s.error is None and s.got == want,
                "subscriber on server %d got every event in order" % i, None, len(want),
                (len(s.got), s.error, s.got[:3]))
    dead = subs[2]
    dead.join(30)
    T.check(gapless(dead.got, frm) and dead.got == want[:len(dead.got)],
            "the killed server's subscriber saw a gapless prefix", None, "prefix",
            dead.got[:5])
    srv[2].start()  # on the same database: nothing to recover


@T.case
def postgres_restarted_under_load():
    srv = S["srv"]
    pg = S["pg"]
    acked, lock = {}, threading.Lock()
    errors = []
    stop = threading.Event()
    down = threading.Event()

    def w(k):
        j = 0
        while not stop.is_set():
            evs = [{"type": "R", "data": {"w": k, "j": j}, "id": str(uuid.uuid4())}]
            j += 1
            while not stop.is_set():
                try:
                    r = post(srv[k % 2].port, "restart-%d" % k, evs, timeout=30)
                except OSError as ex:
                    errors.append(("os", str(ex)))
                    time.sleep(0.1)
                    continue
                if r.status in (200, 201):
                    res = json.loads(r.raw)
                    with lock:
                        acked[res["firstPosition"]] = evs[0]["id"]
                    break
                errors.append((r.status, r.raw[:300], down.is_set()))
                time.sleep(0.1)

    ws = [threading.Thread(target=w, args=(k,)) for k in range(4)]
    for t in ws:
        t.start()
    time.sleep(1.5)
    down.set()
    pg.stop("immediate")
    time.sleep(2)
    r = post(srv[0].port, "restart-probe", [{"type": "P", "data": {}}], timeout=30)
    T.check(r.status == 503 and b"PostgreSQL" in r.raw, "a clear 503 while PostgreSQL is down",
            None, "503 naming PostgreSQL", (r.status, r.raw[:300]))
    pg.start()
    n_before = len(acked)
    deadline = time.monotonic() + 60
    while len(acked) < n_before + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for t in ws:
        t.join()
    T.check(len(acked) >= n_before + 20, "appends resume after the restart", None,
            ">= %d" % (n_before + 20), len(acked))
    events = read_all(srv[1].port)
    by_pos = {e["position"]: e["id"] for e in events}
    lost = [p for p, i in acked.items() if by_pos.get(p) != i]
    T.check(not lost, "nothing acknowledged lost across the restart", None, [], lost[:10])
    T.check(gapless([(e["position"], None) for e in events], 0), "$all still gapless", None,
            "gapless", len(events))
    bad = [e for e in errors if e[0] not in (503, "os")]
    T.check(not bad, "only 503s while down", None, [], bad[:3])


# Per view, the events whose view number is not their rank (in position
# order) under the view's key: the writer numbers them relative to the
# batch and PostgreSQL makes them absolute under the feed row
# (src/backend/pg_insert.c), so a wrong base or key shows here.
VIEW_CHECKS = {
    "category ($ce-)": ("ce_rev", "stream_type", "true"),
    "event type ($et-)": ("et_rev", "event_type", "true"),
    "correlation id ($bc-)": ("bc_rev", "correlation_id", "bc_rev IS NOT NULL"),
    "stream number ($streams)": ("stream_no", "1", "stream_no IS NOT NULL"),
}


@T.case
def view_numbers_follow_positions_across_servers():
    srv = S["srv"]
    pg = S["pg"]
    types, corrs = ["Opened", "Moved", "Closed"], ["c-a", "c-b", "c-c", "c-d"]
    errors = []

    def w(k):
        for j in range(30):
            evs = []
            for e in range(1 + (j + k) % 4):
                ev = {"type": types[(j + e) % 3], "data": {"k": k, "j": j},
                      "id": str(uuid.uuid4())}
                if (j + e) % 2:
                    ev["metadata"] = {"$correlationId": corrs[(k + j + e) % 4]}
                evs.append(ev)
            # New streams (numbered in $streams) and repeated ones, in
            # three categories.
            stream = "%s-%d-%d" % (["Order", "Cart", "User"][k % 3], k, j % 7)
            r = post(srv[(k + j) % 3].port, stream, evs, timeout=60)
            if r.status not in (200, 201):
                errors.append((r.status, r.raw[:200]))

    ws = [threading.Thread(target=w, args=(k,)) for k in range(8)]
    for t in ws:
        t.start()
    for t in ws:
        t.join()
    T.check(not errors, "every append through three servers accepted", None, [], errors[:3])
    for name, (col, key, where) in VIEW_CHECKS.items():
        bad = pg.psql("SELECT count(*) FROM (SELECT %s AS v, row_number() OVER (PARTITION BY "
                      "%s ORDER BY global_position) - 1 AS want FROM events WHERE %s) x "
                      "WHERE v IS DISTINCT FROM want" % (col, key, where), db="stele")
        T.check(bad == [["0"]], "view numbers of %s follow positions, gapless" % name, None,
                [["0"]], bad)
    feed = pg.psql("SELECT (SELECT next_position FROM stele_feed), count(*), "
                   "coalesce(max(global_position) + 1, 0) FROM events", db="stele")
    T.check(len(set(feed[0])) == 1, "positions 0..n-1 and the feed's next one is n", None,
            "three equal numbers", feed)
    rows = pg.psql("SELECT count(*) FROM streams s JOIN (SELECT stream_id, min(global_position) "
                   "AS lo, max(global_position) AS hi, max(revision) AS rv FROM events GROUP BY "
                   "stream_id) e USING (stream_id) WHERE s.last_position <> e.hi OR "
                   "s.last_revision <> e.rv OR s.first_position > e.lo", db="stele")
    T.check(rows == [["0"]], "stream rows name their last event's position and revision", None,
            [["0"]], rows)


@T.case
def quotes_and_backslashes_in_names():
    # The writer sends stream names, types and correlation ids to
    # PostgreSQL in text array literals (pg_write.c, pgw_arr_add): quotes,
    # backslashes, commas and braces must arrive as they were sent, in one
    # batch with plain names.
    from urllib.parse import quote
    srv = S["srv"]
    names = ['q"uo\\te-1', '"', '\\', 'a\\"b"\\c-2', '{x,y}-"z"', 'plain-q1']
    errors, acked = [], {}
    lock = threading.Lock()

    def w(k, name):
        for j in range(4):
            ev = {"type": 'T"%d\\' % (j % 2), "data": {"k": k, "j": j}, "id": str(uuid.uuid4()),
                  "metadata": {"$correlationId": 'c"\\%d' % k}}
            r = post(srv[(k + j) % 3].port, quote(name, safe=""), [ev],
                     expected=j - 1 if j else "no_stream")
            if r.status not in (200, 201):
                errors.append((name, r.status, r.raw[:200]))
            else:
                with lock:
                    acked[ev["id"]] = (name, j, ev["type"])

    ws = [threading.Thread(target=w, args=(k, n)) for k, n in enumerate(names)]
    for t in ws:
        t.start()
    for t in ws:
        t.join()
    T.check(not errors, "appends to names with quotes and backslashes accepted", None, [],
            errors[:3])
    got = {e["id"]: (e["stream"], e["revision"], e["type"]) for e in read_all(srv[1].port)
           if e["id"] in acked}
    T.check(got == acked, "$all gives each event its stream, revision and type as sent", None,
            sorted(acked.values())[:4], sorted(got.values())[:4])
    for name in names:
        r = request(srv[2].port, "GET", "/streams/" + quote(name, safe="") + "?limit=10")
        evs = json.loads(r.raw)["events"] if r.status == 200 else []
        T.check(r.status == 200 and [e["revision"] for e in evs] == [0, 1, 2, 3],
                "stream %r reads back revisions 0..3" % name, None, [0, 1, 2, 3],
                (r.status, [e.get("revision") for e in evs]))


if __name__ == "__main__":
    sys.exit(T.run(setup=setup, teardown=teardown))
