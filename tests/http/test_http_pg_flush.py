"""
test_http_pg_flush.py - the PostgreSQL backend's two commits per batch
(docs/backends.md, "Durability: two commits per batch"). A batch commits its
events with synchronous_commit off, then a small synchronous transaction
moves the durable position past them; appends are answered after the
second, and every read stops below the durable position.

The test starts its own PostgreSQL (pg_server.py; no autovacuum, no
background writer), and two Stele servers on it: server A
with the test hook STELE_PG_TEST_PAUSE=crash-:PAUSE_MS (a batch appending to
a stream named crash-... waits between its two commits) and one writer
thread, server B without it. Then:

- while A's batch sits between its commits (its events committed, as psql
  shows), no door of either server shows them: $all forwards and
  backwards, the stream (404), its head (404), the category view
  $ce-crash (404), the category query, the $all subscription, /info's
  event count; and the append is not answered;
- PostgreSQL is killed before the second commit (its WAL writer stopped
  first, then SIGKILL of the postmaster and every backend, so the first
  commit, only in the WAL buffers, is lost and its positions are handed
  out again): the paused append fails with a 503, never a success;
- a second round: a stream read during the pause makes the batch durable
  itself (and shows it); after `pg_ctl stop -m immediate` those events are
  there;
- after the restart every acknowledged event is at its acknowledged
  position, every event a reader was shown before the crash is still
  there unchanged, $all is gapless, appends resume on both servers, and a
  retry of the failed append with the same ids succeeds exactly once
  (idempotent if its first commit survived the crash, written anew if
  not; the test reports which).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_server import PgServer  # noqa: E402
from stele_server import SSE, Server, Suite, request  # noqa: E402

T = Suite("http_pg_flush")
S = {}
PAUSE_MS = 6000


def uri():
    pg = S["pg"]
    return "postgresql:///stele?host=%s&port=%d&user=postgres" % (pg.tmp, pg.port)


def setup():
    pg = S["pg"] = PgServer()
    with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
        # Nothing but the WAL writer (stopped by the test when it wants an
        # asynchronous commit to stay in memory) writes WAL out unasked:
        # no autovacuum, no background writer.
        f.write("max_connections = 60\nautovacuum = off\nbgwriter_lru_maxpages = 0\n")
    pg.start()
    pg.psql("CREATE DATABASE stele")
    os.environ["STELE_PG_TEST_PAUSE"] = "crash-:%d" % PAUSE_MS
    os.environ["STELE_PG_WRITERS"] = "1"
    try:
        S["a"] = Server(data_dir=uri(), name="paused").start()
    finally:
        del os.environ["STELE_PG_TEST_PAUSE"]
        del os.environ["STELE_PG_WRITERS"]
    S["b"] = Server(data_dir=uri(), name="plain").start()


def teardown():
    for k in ("a", "b"):
        if k in S:
            S[k].cleanup()
    if "pg" in S:
        S["pg"].cleanup()


def post(port, stream, events, timeout=60):
    return request(port, "POST", "/streams/" + stream, json.dumps(events),
                   headers={"Content-Type": "application/json"}, timeout=timeout)


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


def gapless(events):
    return [e["position"] for e in events] == list(range(len(events)))


def append_some(n, tag, acked, deadline):
    """n one-event appends through both servers (retried while PostgreSQL
    comes back); their positions into acked."""
    a, b = S["a"], S["b"]
    for i in range(n):
        s = a if i % 2 else b
        evs = [{"type": tag, "data": {"i": i}, "id": str(uuid.uuid4())}]
        r = None
        while time.monotonic() < deadline:
            r = post(s.port, "%s-%d" % (tag.lower(), i % 3), evs, timeout=30)
            if r.status in (200, 201):
                break
            time.sleep(0.2)
        T.check(r is not None and r.status in (200, 201), "appends succeed (%s)" % tag, None,
                201, r and (r.status, r.raw[:200]))
        if r is not None and r.status in (200, 201):
            acked[json.loads(r.raw)["firstPosition"]] = evs[0]["id"]


def sse_positions(sub, want):
    got = []
    sub.sock.settimeout(0.5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(got) < want + 1:
        try:
            m = sub.next()
        except OSError:
            break
        if m is None:
            break
        if m["event"] == "message" and m.get("data"):
            e = json.loads(m["data"])
            got.append((e["position"], e["id"]))
    return got


def pg_procs():
    """The postmaster's pid and {pid: title} of its children."""
    pg = S["pg"]
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        pm = int(f.readline())
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pm)], capture_output=True,
                         text=True).stdout
    kids = {}
    for line in out.splitlines():
        pid, _, title = line.strip().partition(" ")
        kids[int(pid)] = title
    return pm, kids


def kill_cluster():
    """SIGKILL the postmaster and every process of the cluster: what is
    only in PostgreSQL's memory (WAL buffers) is gone."""
    pm, kids = pg_procs()
    for pid in [pm] + list(kids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in [pm] + list(kids):
        while os.path.exists("/proc/%d" % pid):
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().split(")")[-1].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.05)


def crash(stream, helping, acked, shown):
    """Append 3 events to `stream` on server A, which pauses between the
    two commits; check the reads; kill PostgreSQL; restart; retry. With
    `helping`, a stream read is made first, which makes the batch durable
    itself (pg_stream_get): then the events must survive the crash."""
    pg, a, b = S["pg"], S["a"], S["b"]
    head = len(read_all(b.port))
    subs = [SSE(s.port, "/subscribe/all?from=0", timeout=30) for s in (a, b)]
    ids = [str(uuid.uuid4()) for _ in range(3)]
    evs = [{"type": "Crash", "data": {"k": k}, "id": ids[k]} for k in range(3)]
    answer = {}
    if not helping:
        # The WAL writer stopped: the batch's asynchronous first commit
        # stays in PostgreSQL's WAL buffers, and the crash loses it.
        walwriter = [p for p, t in pg_procs()[1].items() if "walwriter" in t]
        T.check(len(walwriter) == 1, "the WAL writer is found", None, 1, walwriter)
        for p in walwriter:
            os.kill(p, signal.SIGSTOP)

    def paused_append():
        try:
            r = post(a.port, stream, evs, timeout=120)
            answer["status"], answer["raw"] = r.status, r.raw
        except OSError as ex:
            answer["status"], answer["raw"] = "os", str(ex).encode()

    t = threading.Thread(target=paused_append)
    t0 = time.monotonic()
    t.start()
    committed = False
    while time.monotonic() - t0 < PAUSE_MS / 1000.0 - 2:
        n = pg.psql("SELECT count(*) FROM events WHERE stream_id = '%s'" % stream, db="stele")
        if n == [["3"]]:
            committed = True
            break
        time.sleep(0.05)
    T.check(committed, "the paused batch's first commit made its events visible to SQL", None,
            True, committed)
    leaks = []
    if helping:
        r = request(b.port, "GET", "/streams/" + stream)
        got = [e["id"] for e in json.loads(r.raw)["events"]] if r.status == 200 else []
        T.check(got == ids, "a stream read makes a batch between its commits durable and "
                "shows it", None, ids, (r.status, r.raw[:200]))
        for e in json.loads(r.raw)["events"] if r.status == 200 else []:
            shown[e["position"]] = e["id"]
    else:
        for s in (a, b):
            for e in read_all(s.port):
                shown[e["position"]] = e["id"]
                if e["position"] >= head:
                    leaks.append(("$all", s.name, e["position"]))
            r = request(s.port, "GET", "/all?direction=backwards&limit=10")
            bw = json.loads(r.raw)["events"] if r.status == 200 else []
            leaks += [("$all backwards", s.name, e["position"]) for e in bw
                      if e["position"] >= head]
            r = request(s.port, "GET", "/streams/$ce-crash")
            if r.status != 404:
                leaks.append(("$ce-crash", s.name, r.status, r.raw[:200]))
            r = request(s.port, "GET", "/categories/crash")
            if r.status == 200 and json.loads(r.raw)["events"]:
                leaks.append(("/categories/crash", s.name, r.raw[:200]))
            r = request(s.port, "GET", "/info")
            if r.status == 200 and b'"events":%d,' % head not in r.raw.replace(b" ", b""):
                leaks.append(("/info", s.name, r.raw[:300]))
        T.check(not leaks, "no read shows the events between the two commits", None, [], leaks)
        T.check("status" not in answer, "the append is not answered between the two commits",
                None, "no answer yet", answer)
        for sub in subs:
            got = sse_positions(sub, head)
            shown.update(dict(got))
            T.check([p for p, _ in got] == list(range(head)),
                    "a subscriber gets the durable events, no more", None,
                    list(range(head))[-3:], got[-3:])
    for sub in subs:
        sub.close()

    if helping:
        pg.stop("immediate")
    else:
        kill_cluster()
    t.join(timeout=150)
    T.check(answer.get("status") in (503, "os"), "the append fails when PostgreSQL dies "
            "between the commits", None, 503, (answer.get("status"), answer.get("raw", b"")[:300]))
    pg.start()
    deadline = time.monotonic() + 90
    survived = None
    while survived is None and time.monotonic() < deadline:
        try:
            survived = pg.psql("SELECT count(*) FROM events WHERE stream_id = '%s'" % stream,
                               db="stele")[0][0]
        except RuntimeError:
            time.sleep(0.2)
    print("# %s: the paused batch's first commit %s the crash (%s of its 3 events after "
          "restart)" % (stream, "survived" if survived == "3" else "did not survive", survived))
    if helping:
        T.check(survived == "3", "a batch a reader made durable survives the crash", None, "3",
                survived)
    else:
        T.check(survived == "0", "the batch's first commit, never flushed, is lost", None, "0",
                survived)
    append_some(10, "After", acked, deadline)
    r = None
    while time.monotonic() < deadline:
        r = post(b.port, stream, evs, timeout=30)
        if r.status in (200, 201):
            break
        time.sleep(0.2)
    T.check(r.status in (200, 201), "the failed append, retried with its ids, succeeds", None,
            201, (r.status, r.raw[:200]))
    res = json.loads(r.raw)
    T.check(res.get("idempotent", False) == (survived == "3"),
            "the retry is idempotent exactly when the first commit survived", None,
            survived == "3", res)
    acked[res["firstPosition"]] = ids[0]
    return ids


@T.case
def crash_between_the_two_commits():
    pg, a = S["pg"], S["a"]
    acked, shown = {}, {}  # position -> id: acknowledged; shown by any read
    deadline = time.monotonic() + 120
    append_some(40, "Acked", acked, deadline)
    ids1 = crash("crash-1", False, acked, shown)
    ids2 = crash("crash-2", True, acked, shown)
    events = read_all(a.port)
    by_pos = {e["position"]: e["id"] for e in events}
    lost = [p for p, i in acked.items() if by_pos.get(p) != i]
    T.check(not lost, "nothing acknowledged is lost", None, [], lost[:10])
    changed = [p for p, i in shown.items() if by_pos.get(p) != i]
    T.check(not changed, "every event shown before a crash is still there, unchanged", None,
            [], changed[:10])
    T.check(gapless(events), "$all is gapless", None, "gapless", len(events))
    got = sorted(e["id"] for e in events if e.get("type") == "Crash")
    T.check(got == sorted(ids1 + ids2), "the crashed appends' events are there once each", None,
            sorted(ids1 + ids2), got)
    dur = pg.psql("SELECT (SELECT max(next_position) FROM stele_durable), (SELECT next_position "
                  "FROM stele_feed)", db="stele")
    T.check(dur[0][0] == dur[0][1], "the durable position reaches the feed's head once idle",
            None, "equal", dur)


if __name__ == "__main__":
    sys.exit(T.run(setup=setup, teardown=teardown))
