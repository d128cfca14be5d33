#!/usr/bin/env python3
"""
test_http_subscribe.py - catch-up subscriptions over Server-Sent Events
against a real `stele serve` (docs/subscriptions.md):

- no gap, no duplicate: subscribers start at random positions (and at
  `end`) while 8 writers append; each one's sequence equals the $all read
- resume with Last-Event-ID (header and ?lastEventId=) after the client was
  killed mid-stream, and after the server was killed with SIGKILL
- a slow consumer (tiny receive buffer, sleeps, ~100x slower than the
  writers): the server's memory stays bounded, it gets `fell-behind`, then
  everything in order and `caught-up` again
- a client that stops reading is cut after the stall timeout
- filters return exactly the matching events; checkpoints advance when
  nothing matches, and resuming from one is exact
- bad filters get a 400 with a precise message; the server keeps serving
- a stream subscription; a tombstoned stream
- 200 concurrent subscribers all receive a live event

Python 3 standard library only. TEST_QUICK=1 runs smaller sizes.
"""
import json
import os
import random
import re
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (SSE, Client, Ev, Ledger, Server, Suite, all_lines_from,  # noqa: E402
                          all_next, body_of, check_servers, request, stop_servers)

QUICK = bool(os.environ.get("TEST_QUICK"))
# STELE_TEST_SANITIZER=thread (make test-tsan, docs/testing.md): the
# server's RSS includes the sanitizer's shadow memory, so the memory bound is
# printed but not judged.
SANITIZER = os.environ.get("STELE_TEST_SANITIZER", "")
T = Suite("test_http_subscribe")
S = None
RUN = "%06x" % random.getrandbits(24)  # names unique to this run

N_GAP = 10000 if QUICK else 50000
SERVER_ARGS = ["--sub-behind-events", "2000", "--sub-behind-seconds", "2",
               "--sub-checkpoint-events", "100", "--sse-keepalive", "1",
               "--sse-stall-timeout", "3"]


def setup():
    global S
    S = Server(SERVER_ARGS, name="main").start()


def teardown():
    stop_servers([S])


def after_case():
    check_servers(T, [S])


# --------------------------------------------------------------- helpers

def head():
    """The next position of $all."""
    return all_next(S.port, T)


def all_lines(frm=0):
    """{position: raw JSON line} of $all from `frm`, one NDJSON read."""
    return all_lines_from(S.port, T, frm)


def metric(name):
    r = request(S.port, "GET", "/metrics")
    m = re.search(r"^%s (\d+)$" % re.escape(name), r.raw.decode(), re.M)
    return int(m.group(1)) if m else None


def append(client, stream, events, ledger=None):
    r = client.post("/streams/" + stream, body_of(events))
    T.expect(r, 201, what="append to " + stream)
    if ledger is not None:
        T.problems(ledger.record(stream, events, r.body), "ledger")
    return r.body


def subscribe(path, headers=None, rcvbuf=None, timeout=30):
    c = SSE(S.port, path, headers=headers, rcvbuf=rcvbuf, timeout=timeout)
    T.check(c.status == 200, "subscription refused", "GET " + path, 200,
            (c.status, c.body))
    T.check(c.headers.get("content-type") == "text/event-stream", "content type",
            "GET " + path, "text/event-stream", c.headers.get("content-type"))
    return c


def read_until(c, stop, what):
    """Messages (comments dropped) until stop(msg) is true; fails on the
    end of the stream."""
    out = []
    while True:
        m = c.next()
        T.check(m is not None, "the event stream ended early (%s)" % what, c.path,
                "more events", "end after %d messages" % len(out))
        if m["event"] == ":":
            continue
        out.append(m)
        if stop(m):
            return out


def events_of(msgs):
    return [m for m in msgs if m["event"] == "message"]


def check_sequence(ids_data, first, last, lines, what):
    """The events (id, data) are exactly positions first..last of $all."""
    ids = [int(i) for i, _ in ids_data]
    want = list(range(first, last + 1))
    if ids != want:
        # the first difference, for the message
        k = next((k for k in range(min(len(ids), len(want))) if ids[k] != want[k]),
                 min(len(ids), len(want)))
        T.fail("%s: not exactly positions %d..%d" % (what, first, last), None,
               "%d events, at index %d: %r" % (len(want), k, want[k:k + 5]),
               "%d events, at index %d: %r" % (len(ids), k, ids[k:k + 5]))
    for i, data in ids_data:
        if lines[int(i)] != data:
            T.fail("%s: event %s differs from the $all read" % (what, i), None,
                   lines[int(i)][:300], data[:300])


class Writers:
    """`n` threads appending `total` events in batches of 1..max_batch to
    their own streams; .start(), .join(); .errors; .rate (events/s)."""

    def __init__(self, n, total, max_batch=25, data_len=20, prefix="w", ledger=None):
        self.n, self.total, self.max_batch = n, total, max_batch
        self.pad = "x" * data_len
        self.prefix = "%s%s" % (prefix, RUN)
        self.ledger = ledger
        self.errors = []
        self.threads = []
        self.t0 = self.t1 = None
        self.stop = False

    def _run(self, w, count):
        rnd = random.Random(w)
        c = Client(S.port)
        try:
            i = 0
            while i < count and not self.stop:
                k = min(rnd.randint(1, self.max_batch), count - i)
                evs = [Ev("Written", data='{"w":%d,"i":%d,"p":"%s"}' % (w, i + j, self.pad))
                       for j in range(k)]
                stream = "%s-%d-%d" % (self.prefix, w, rnd.randrange(10))
                r = c.post("/streams/" + stream, body_of(evs))
                if r.status != 201:
                    self.errors.append("append: %r" % r)
                    return
                if self.ledger is not None:
                    self.ledger.record(stream, evs, r.body)
                i += k
        except OSError as e:
            self.errors.append("writer %d: %s" % (w, e))
        finally:
            c.close()

    def start(self):
        self.t0 = time.monotonic()
        per = self.total // self.n
        for w in range(self.n):
            count = per + (self.total - per * self.n if w == 0 else 0)
            t = threading.Thread(target=self._run, args=(w, count), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def alive(self):
        return any(t.is_alive() for t in self.threads)

    def join(self, timeout=120):
        for t in self.threads:
            t.join(timeout)
        self.t1 = time.monotonic()
        T.check(not self.alive(), "writers did not finish")
        T.problems(self.errors, "writers")

    @property
    def rate(self):
        return self.total / max(self.t1 - self.t0, 1e-9)


class Reader(threading.Thread):
    """A subscriber on its own thread: collects (id, data) of events until
    the id `target` (set later by the test) or the end of the stream."""

    def __init__(self, path, headers=None):
        super().__init__(daemon=True)
        self.path = path
        self.headers = headers
        self.got = []
        self.markers = []
        self.target = None
        self.error = None
        self.status = None
        self.started = threading.Event()

    def run(self):
        try:
            c = SSE(S.port, self.path, headers=self.headers, timeout=60)
            self.status = c.status
            self.started.set()
            if c.status != 200:
                return
            while True:
                m = c.next()
                if m is None:
                    self.error = "the stream ended after %d events" % len(self.got)
                    break
                if m["event"] == "message":
                    self.got.append((m["id"], m["data"]))
                elif m["event"] != ":":
                    self.markers.append(m)
                last = int(self.got[-1][0]) if self.got else -1
                if self.target is not None and last >= self.target:
                    break
                if self.target is not None and m["event"] == "caught-up" and \
                        json.loads(m["data"])["position"] is not None and \
                        json.loads(m["data"])["position"] >= self.target:
                    break
            c.close()
        except Exception as e:  # noqa: BLE001
            self.error = "%s: %s" % (type(e).__name__, e)
        finally:
            self.started.set()


# --------------------------------------------------------------- cases

@T.case
def no_gap_no_duplicate_while_8_writers_append():
    base = head()
    # The writers write at least N_GAP events and go on until every
    # subscriber has joined (a loaded machine can take seconds to start
    # eight), so the subscribers always switch to live while events arrive.
    wr = Writers(8, N_GAP * 20, max_batch=50).start()
    readers = []
    ends = []  # (reader, head before, head after)
    rnd = random.Random(7)
    # subscribers join at random moments while the writers run: some from a
    # random position of what exists, some from `end`
    during = 0
    for k in range(8):
        time.sleep(rnd.uniform(0.01, 0.06) if QUICK else rnd.uniform(0.05, 0.3))
        during += wr.alive()
        h = head()
        if k % 4 == 3:
            rd = Reader("/subscribe/all?from=end")
            rd.start()
            rd.started.wait(30)
            ends.append((rd, h, head()))
        else:
            rd = Reader("/subscribe/all?from=%d" % rnd.randint(0, h))
            rd.start()
        readers.append(rd)
    T.check(during >= 4, "most subscribers started while the writers were writing (else the "
            "sizes are too small to test the switch to live)", None, ">= 4 of 8", during)
    deadline = time.monotonic() + 120
    while wr.alive() and head() < base + N_GAP and time.monotonic() < deadline:
        time.sleep(0.05)
    wr.stop = True
    wr.join()
    # One more event after the writers: a from=end subscriber that joined
    # after their last event (a loaded machine) still receives something.
    append(Client(S.port), "sentinel-1", [Ev("Sentinel", data='{}')])
    last = head() - 1
    for rd in readers:
        rd.target = last
    for rd in readers:
        rd.join(120)
    lines = all_lines(0)
    T.check(len(lines) == last + 1 and last + 1 >= base + N_GAP + 1, "the $all read", None,
            "%d events, at least %d" % (last + 1, base + N_GAP + 1), len(lines))
    for n, rd in enumerate(readers):
        T.check(rd.error is None and not rd.is_alive(), "subscriber %d (%s) failed" % (n, rd.path),
                None, "all events up to %d" % last, rd.error or "still running")
        if "from=end" in rd.path:
            first = int(rd.got[0][0])
            h0, h1 = next((a, b) for r2, a, b in ends if r2 is rd)
            T.check(h0 <= first <= h1, "a from=end subscriber started outside the window "
                    "of its subscription", rd.path, "%d..%d" % (h0, h1), first)
        else:
            first = int(rd.path.split("from=")[1])
        check_sequence(rd.got, first, last, lines, "subscriber %d (%s)" % (n, rd.path))
    print("     %d subscribers x up to %d events while 8 writers appended at %.0f events/s"
          % (len(readers), last - base, wr.rate))


@T.case
def resume_with_last_event_id_after_the_client_died():
    base = head()
    n = 4000 if QUICK else 12000
    wr = Writers(2, n, prefix="res").start()
    got = []
    c = subscribe("/subscribe/all?from=%d" % base)
    # read a random number of events, then vanish with a reset in the middle
    # of whatever the server was sending
    for m in events_of(read_until(c, lambda m: m["event"] == "message" and
                                  int(m["id"]) >= base + n // 5, "first part")):
        got.append((m["id"], m["data"]))
    c.abort()
    # resume with the Last-Event-ID header (what EventSource sends)
    c = subscribe("/subscribe/all?from=%d" % base, headers={"Last-Event-ID": got[-1][0]})
    for m in events_of(read_until(c, lambda m: m["event"] == "message" and
                                  int(m["id"]) >= base + n // 2, "second part")):
        got.append((m["id"], m["data"]))
    c.abort()
    wr.join()
    last = head() - 1
    # and with ?lastEventId= (clients that cannot set headers); `from` is
    # ignored when a last event id is given
    c = subscribe("/subscribe/all?from=end&lastEventId=%s" % got[-1][0])
    msgs = read_until(c, lambda m: m["event"] == "caught-up", "third part")
    got += [(m["id"], m["data"]) for m in events_of(msgs)]
    c.close()
    check_sequence(got, base, last, all_lines(base), "resumed subscription")
    # the server let go of the dead subscriptions
    deadline = time.monotonic() + 60
    while metric("stele_subscribers") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    T.check(metric("stele_subscribers") == 0, "closed subscriptions are released", None, 0,
            metric("stele_subscribers"))


@T.case
def resume_after_the_server_was_killed():
    ledger = Ledger()
    base = head()
    wr = Writers(2, 200000, max_batch=50, prefix="kill", ledger=ledger).start()
    c = subscribe("/subscribe/all?from=%d" % base)
    got = []
    for m in events_of(read_until(c, lambda m: m["event"] == "message" and
                                  int(m["id"]) >= base + 3000, "before the crash")):
        got.append((m["id"], m["data"]))
    code = S.kill()
    T.check(code == -9, "the server was killed", None, -9, code)
    # keep what arrived before the connection died
    while True:
        try:
            m = c.next()
        except OSError:
            break
        if m is None:
            break
        if m["event"] == "message":
            got.append((m["id"], m["data"]))
    c.close()
    n_before = len(got)
    wr.stop = True
    for t in wr.threads:
        t.join(60)
    S.start()
    # resume while new appends arrive
    wr = Writers(2, 2000 if QUICK else 4000, max_batch=50, prefix="kill2", ledger=ledger).start()
    c = subscribe("/subscribe/all?from=%d" % base, headers={"Last-Event-ID": got[-1][0]})
    while wr.alive():
        m = c.next()
        T.check(m is not None, "the resumed stream ended early")
        if m["event"] == "message":
            got.append((m["id"], m["data"]))
    wr.join()
    last = head() - 1
    if int(got[-1][0]) < last:
        msgs = read_until(c, lambda m: m["event"] == "message" and int(m["id"]) >= last,
                          "after the restart")
        got += [(m["id"], m["data"]) for m in events_of(msgs)]
    c.close()
    check_sequence(got, base, last, all_lines(base), "subscription across a kill -9")
    T.problems(ledger.verify(S.port, exact=False), "acknowledged appends after kill -9")
    print("     %d events received before the kill, %d after the restart"
          % (n_before, len(got) - n_before))


@T.case
def slow_consumer_is_served_from_disk():
    # a fresh process, so that memory kept from earlier cases cannot hide growth
    code = S.stop()
    T.check(code == 0, "exit code after SIGTERM", None, 0, code)
    S.start()
    T.expect(request(S.port, "GET", "/health/ready"), 200)
    # ~40 MiB of events either way (fewer, bigger ones under TEST_QUICK)
    n = 6000 if QUICK else 20000
    data_len = 6000 if QUICK else 2000
    slow = subscribe("/subscribe/all?from=end", rcvbuf=4096)
    read_until(slow, lambda m: m["event"] == "caught-up", "start")
    base_rss = S.rss_kb()
    peak = [base_rss]
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.is_set():
            try:
                peak[0] = max(peak[0], S.rss_kb())
            except OSError:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    first = head()
    wr = Writers(4, n, max_batch=20, data_len=data_len, prefix="slow").start()
    got, markers = [], []
    # ~100x slower than the writers: one message per 20 ms
    while wr.alive():
        m = slow.next()
        T.check(m is not None, "the slow subscriber was cut off while reading", None,
                "more events", "end after %d" % len(got))
        if m["event"] == "message":
            got.append((m["id"], m["data"]))
        elif m["event"] != ":":
            markers.append(m)
        time.sleep(0.02)
    wr.join()
    slow_during = len(got)
    stop_sampling.set()
    sampler.join()
    # Keep reading slowly until the server says it fell behind: the rule
    # (10,000 events, or 5 s off the head) may not have fired while the
    # writers ran if they were quick; a reader this slow stays behind.
    deadline = time.time() + 20
    while not any(m["event"] == "fell-behind" for m in markers) and time.time() < deadline:
        m = slow.next()
        if m is None:
            break
        if m["event"] == "message":
            got.append((m["id"], m["data"]))
        elif m["event"] != ":":
            markers.append(m)
        time.sleep(0.02)
    last = head() - 1
    # now it reads at full speed and must get everything, in order
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    msgs = read_until(slow, lambda m: m["event"] == "message" and int(m["id"]) >= last,
                      "catching up")
    got += [(m["id"], m["data"]) for m in events_of(msgs)]
    markers += [m for m in msgs if m["event"] not in ("message", ":")]
    check_sequence(got, first, last, all_lines(first), "slow subscriber")
    names = [m["event"] for m in markers]
    T.check("fell-behind" in names, "the slow subscriber was told it fell behind", None,
            "a fell-behind event", names)
    fb = json.loads(next(m for m in markers if m["event"] == "fell-behind")["data"])
    T.check(fb["head"] > fb["position"], "fell-behind shows its position and the head", None,
            "head > position", fb)
    # ... and caught up once the writers stopped
    more = read_until(slow, lambda m: m["event"] == "caught-up", "caught-up after fell-behind")
    T.check(not events_of(more), "no events after the last one", None, [], more[:3])
    slow.close()
    T.check(metric("stele_subscription_fell_behind_total") >= 1, "fell-behind is counted")
    ratio = wr.total / max(slow_during, 1)
    stream_mb = n * (data_len + 250) / float(1 << 20)
    growth_mb = (peak[0] - base_rss) / 1024.0
    print("     writers %.0f events/s; the slow subscriber read %d of %d events meanwhile "
          "(%.0fx slower); server RSS %d KiB -> peak %d KiB (+%.1f MiB) for ~%.0f MiB of events"
          % (wr.rate, slow_during, n, ratio, base_rss, peak[0], growth_mb, stream_mb))
    T.check(ratio >= 20, "the slow subscriber was slow", None, ">= 20x slower", "%.0fx" % ratio)
    # buffering the backlog in memory would grow by most of it
    bound = stream_mb / 4
    if SANITIZER:
        print("     (memory bound not judged under %s sanitizer)" % SANITIZER)
    T.check(SANITIZER or growth_mb < bound, "server memory stayed bounded under a slow subscriber", None,
            "growth < %.0f MiB" % bound, "+%.1f MiB" % growth_mb)


@T.case
def a_client_that_stops_reading_is_cut_after_the_stall_timeout():
    before = metric("stele_subscribers")
    # a big backlog and a client that never reads: the server's output
    # stalls; after --sse-stall-timeout 3 the subscription is closed
    dead = SSE(S.port, "/subscribe/all?from=0", rcvbuf=4096)
    T.check(dead.status == 200, "subscription", None, 200, dead.status)
    alive = True
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = metric("stele_subscribers") > before
        if not alive:
            break
        time.sleep(0.5)
    T.check(not alive, "a client that stopped reading is cut after the stall timeout", None,
            "closed within 30 s", "still open")
    dead.close()
    T.expect(request(S.port, "GET", "/health/live"), 200)


@T.case
def sigterm_ends_event_streams_cleanly():
    sub = subscribe("/subscribe/all?from=end")
    read_until(sub, lambda m: m["event"] == "caught-up", "caught-up")
    c = Client(S.port)
    first = append(c, "term%s-1" % RUN, [Ev("BeforeStop")])["firstPosition"]
    c.close()
    msgs = read_until(sub, lambda m: m["event"] == "message", "the event")
    T.check(msgs[-1]["id"] == str(first), "the event before the stop", None, first, msgs)
    code = S.stop()
    T.check(code == 0, "exit code after SIGTERM with an open event stream", None, 0, code)
    T.check(sub.next() is None and sub.ended, "the stream ended with its last chunk", None,
            "a clean end", "eof=%s ended=%s" % (sub.eof, sub.ended))
    sub.close()
    S.start()
    c = Client(S.port)
    second = append(c, "term%s-1" % RUN, [Ev("AfterStart")])["firstPosition"]
    c.close()
    sub = subscribe("/subscribe/all", headers={"Last-Event-ID": str(first)})
    msgs = read_until(sub, lambda m: m["event"] == "message", "resumed")
    T.check(msgs[-1]["id"] == str(second) and second == first + 1,
            "resumed after the restart with the next event", None, second, msgs)
    sub.close()


def py_match(ev, f):
    """The filter semantics of docs/subscriptions.md, in Python."""
    s, t = ev["stream"], ev["type"]
    if f.get("excludeSystem") and s.startswith("$"):
        return False
    if "streamPrefix" in f and not any(s.startswith(p) for p in f["streamPrefix"]):
        return False
    cat = s.split("-", 1)[0] if "-" in s[1:] and not s.startswith("-") else s
    if "category" in f and cat not in f["category"]:
        return False
    if "type" in f and t not in f["type"]:
        return False
    if "typePrefix" in f and not any(t.startswith(p) for p in f["typePrefix"]):
        return False
    if "tag" in f and not set(ev.get("tags", [])) & set(f["tag"]):
        return False
    if "typeRegex" in f and not re.search(f["typeRegex"], t):
        return False
    if "streamRegex" in f and not re.search(f["streamRegex"], s):
        return False
    return True


def query_of(f):
    from urllib.parse import quote
    parts = []
    for k, v in f.items():
        for x in (v if isinstance(v, list) else [v]):
            parts.append("%s=%s" % (k, quote(str(x).lower() if isinstance(x, bool) else x,
                                             safe="")))
    return "&".join(parts)


@T.case
def filters_return_exactly_the_matching_events():
    c = Client(S.port)
    start = head()
    cats = ["Ord%s" % RUN, "Cart%s" % RUN, "Ordx%s" % RUN]
    types = ["OrderPlaced", "OrderShipped", "CartAdded", "Note"]
    rnd = random.Random(3)
    for k in range(120):
        stream = "%s-%d" % (rnd.choice(cats), rnd.randrange(5)) if k % 10 else "nocat%s%d" % (RUN, k)
        evs = [Ev(rnd.choice(types), data='{"k":%d}' % k,
                  tags=rnd.sample(["t:a%s" % RUN, "t:b%s" % RUN, "t:c"], rnd.randint(0, 2)) or None)
               for _ in range(rnd.randint(1, 3))]
        append(c, stream, evs)
    c.close()
    last = head() - 1
    lines = all_lines(start)
    evs = {p: json.loads(l) for p, l in lines.items()}
    filters = [
        {"streamPrefix": [cats[0] + "-1", cats[1] + "-"]},
        {"category": [cats[0]]},
        {"category": [cats[0], cats[2]], "typePrefix": ["Order"]},
        {"type": ["OrderShipped", "Note"]},
        {"typePrefix": ["Cart"], "streamPrefix": [cats[1]]},
        {"typeRegex": "^Order(Placed|Shipped)$", "streamRegex": "^(%s|%s)-[0-2]$" % (cats[0], cats[1])},
        {"tag": ["t:a" + RUN, "t:b" + RUN]},
        {"tag": ["t:a" + RUN], "type": ["Note"]},
        {"streamRegex": "^nocat%s" % RUN, "excludeSystem": True},
        {"excludeSystem": True, "category": [cats[1]]},
    ]
    for f in filters:
        q = query_of(f)
        sub = subscribe("/subscribe/all?from=%d&%s" % (start, q))
        msgs = read_until(sub, lambda m: m["event"] == "caught-up", q)
        sub.close()
        got = [(m["id"], m["data"]) for m in events_of(msgs)]
        want = [p for p in sorted(evs) if py_match(evs[p], f)]
        T.check(want, "the filter selects something (test data)", q)
        T.check([int(i) for i, _ in got] == want, "filter %s" % q, None,
                "%d events %r..." % (len(want), want[:8]),
                "%d events %r..." % (len(got), [int(i) for i, _ in got][:8]))
        for i, data in got:
            T.check(lines[int(i)] == data, "filtered event %s differs from $all" % i)
        # the stream's resume point reached the end of the log
        ids = [int(m["id"]) for m in msgs if m["id"] is not None]
        T.check(ids and ids[-1] == last, "the last id of a filtered subscription is the end of "
                "the log (so resuming skips what was filtered)", q, last, ids[-3:])


@T.case
def checkpoints_advance_when_nothing_matches():
    c = Client(S.port)
    start = head()
    for k in range(5):
        append(c, "noise%s-%d" % (RUN, k), [Ev("Noise", data="1") for _ in range(100)])
    flt = "type=Never%s" % RUN
    sub = subscribe("/subscribe/all?from=%d&%s" % (start, flt))
    msgs = read_until(sub, lambda m: m["event"] == "caught-up", "history")
    T.check(not events_of(msgs), "nothing matches", None, [], msgs[:3])
    ids = [int(m["id"]) for m in msgs if m["id"] is not None]
    T.check(ids and ids[-1] == start + 499, "markers carry the resume point to the end", None,
            start + 499, ids)
    T.check(ids == sorted(set(ids)), "resume points only move forward", None, "increasing", ids)
    # live: more non-matching events; a checkpoint follows (100 events or 1 s)
    for k in range(3):
        append(c, "noise%s-%d" % (RUN, k), [Ev("Noise", data="2") for _ in range(40)])
    end = head() - 1
    msgs = read_until(sub, lambda m: m["id"] is not None and int(m["id"]) >= end, "live")
    names = {m["event"] for m in msgs}
    T.check(names == {"checkpoint"}, "only checkpoints while nothing matches", None,
            {"checkpoint"}, names)
    T.check(json.loads(msgs[-1]["data"])["position"] == end, "checkpoint data", None, end,
            msgs[-1]["data"])
    sub.close()
    # resuming from the checkpoint is exact: the next matching event, nothing else
    sub = subscribe("/subscribe/all?%s" % flt, headers={"Last-Event-ID": str(end)})
    read_until(sub, lambda m: m["event"] == "caught-up", "resume")
    append(c, "noise%s-9" % RUN, [Ev("Noise"), Ev("Never%s" % RUN, data='{"x":1}'), Ev("Noise")])
    msgs = read_until(sub, lambda m: m["event"] == "message", "the match")
    T.check(int(msgs[-1]["id"]) == end + 2, "the matching event after the checkpoint", None,
            end + 2, msgs)
    T.check(json.loads(msgs[-1]["data"])["type"] == "Never%s" % RUN, "its type")
    sub.close()
    c.close()
    T.check(metric("stele_subscription_checkpoints_total") >= 1, "checkpoints are counted")


@T.case
def bad_filters_get_a_precise_400():
    long_re = "a" * 1025
    cases = [
        ("/subscribe/all?typeRegex=(", None, "type regex '('"),
        ("/subscribe/all?streamRegex=%5Bz-a%5D", None, "stream regex '[z-a]'"),
        ("/subscribe/all?typeRegex=a&typeRegex=b", None, "typeRegex given more than once"),
        ("/subscribe/all?typeRegex=" + long_re, None, "typeRegex is longer than 1024 bytes"),
        ("/subscribe/all?typeRegex=", None, "typeRegex is empty"),
        ("/subscribe/all?type=", None, "type value 0 is empty"),
        ("/subscribe/all?type=A&type=" + "b" * 256, None, "type value 1 is longer than 255"),
        ("/subscribe/all?" + "&".join("type=t%d" % i for i in range(65)), None,
         "more than 64 type values"),
        ("/subscribe/all?tag=a%01b", None, "control character"),
        ("/subscribe/all?excludeSystem=yes", None, "excludeSystem must be true or false"),
        ("/subscribe/all?tpye=X", None, "unknown query parameter 'tpye'"),
        ("/subscribe/all?type=%ZZ", None, "bad %-escape"),
        ("/subscribe/all?from=abc", None, "from must be a position"),
        ("/subscribe/all?from=-1", None, "from must be a position"),
        ("/subscribe/all?from=18446744073709551615", None, "from must be a position"),
        ("/subscribe/all", {"Last-Event-ID": "abc"}, "Last-Event-ID must be a position"),
        ("/subscribe/all?lastEventId=1x", None, "Last-Event-ID must be a position"),
        ("/subscribe/all", {"Last-Event-ID": "1" * 45}, "Last-Event-ID is too long"),
        ("/subscribe/streams/s1?type=X", None, "filters (type) apply to /subscribe/all only"),
        ("/subscribe/streams/s1?from=x", None, "from must be a revision"),
        ("/subscribe/streams/%01bad", None, "control character"),
    ]
    for path, hdrs, text in cases:
        c = SSE(S.port, path, headers=hdrs)
        T.check(c.status == 400, "bad subscription refused", path, 400, (c.status, c.body))
        msg = c.body["error"]["message"] if isinstance(c.body, dict) else repr(c.body)
        T.check(c.body["error"]["code"] == "INVALID_ARGUMENT", "error code", path,
                "INVALID_ARGUMENT", c.body)
        T.check(text in msg, "a precise message", path, "...%s..." % text, msg)
        c.close()
    r = request(S.port, "POST", "/subscribe/all", body="{}")
    T.expect(r, 405, "METHOD_NOT_ALLOWED")
    # still serving
    T.expect(request(S.port, "GET", "/health/live"), 200)
    sub = subscribe("/subscribe/all?from=end&type=X")
    read_until(sub, lambda m: m["event"] == "caught-up", "a good subscription after bad ones")
    sub.close()


@T.case
def stream_subscription_ids_are_revisions():
    c = Client(S.port)
    st = "sub%s-1" % RUN
    append(c, st, [Ev("A", data='{"r":%d}' % i) for i in range(5)])
    sub = subscribe("/subscribe/streams/%s?from=2" % st)
    msgs = read_until(sub, lambda m: m["event"] == "caught-up", "history")
    T.check([m["id"] for m in events_of(msgs)] == ["2", "3", "4"], "revisions 2..4", None,
            ["2", "3", "4"], [m["id"] for m in msgs])
    T.check(json.loads(msgs[-1]["data"]) == {"revision": 4}, "caught-up data", None,
            {"revision": 4}, msgs[-1]["data"])
    append(c, "other%s-1" % RUN, [Ev("B")])
    append(c, st, [Ev("A", data='{"r":5}')])
    msgs = read_until(sub, lambda m: m["event"] == "message", "live")
    T.check(msgs[-1]["id"] == "5" and json.loads(msgs[-1]["data"])["stream"] == st,
            "only the stream's own events", None, "revision 5 of " + st, msgs)
    # a tombstone ends the subscription with a `deleted` event
    T.expect(c.delete("/streams/%s?tombstone=true" % st), 204)
    msgs = read_until(sub, lambda m: m["event"] == "deleted", "tombstone")
    T.check(sub.next() is None, "the response ends after `deleted`")
    sub.close()
    r = SSE(S.port, "/subscribe/streams/%s" % st)
    T.check(r.status == 410 and r.body["error"]["code"] == "STREAM_DELETED",
            "subscribing to a tombstoned stream", None, 410, (r.status, r.body))
    r.close()
    # a stream that does not exist yet: waits for it
    fresh = "fresh%s-1" % RUN
    sub = subscribe("/subscribe/streams/%s?from=end" % fresh)
    read_until(sub, lambda m: m["event"] == "caught-up", "empty stream")
    append(c, fresh, [Ev("First")])
    msgs = read_until(sub, lambda m: m["event"] == "message", "first event")
    T.check(msgs[-1]["id"] == "0", "revision 0 of a new stream", None, "0", msgs)
    sub.close()
    c.close()


@T.case
def two_hundred_subscribers_receive_a_live_event():
    n = 200
    subs = []
    try:
        for _ in range(n):
            subs.append(subscribe("/subscribe/all?from=end"))
        for s in subs:
            read_until(s, lambda m: m["event"] == "caught-up", "caught-up")
        T.check(metric("stele_subscribers") >= n, "subscribers gauge", None, ">= %d" % n,
                metric("stele_subscribers"))
        c = Client(S.port)
        res = append(c, "live%s-1" % RUN, [Ev("Ping", data='{"ping":1}')])
        c.close()
        pos = str(res["firstPosition"])
        for k, s in enumerate(subs):
            msgs = read_until(s, lambda m: m["event"] == "message", "the live event")
            T.check(msgs[-1]["id"] == pos and b'"ping":1' in msgs[-1]["data"],
                    "subscriber %d got the live event" % k, None, pos, msgs[-1])
    finally:
        for s in subs:
            s.close()


@T.case
def twenty_live_subscribers_get_every_event_of_a_stream_of_commits():
    # Ten live subscribers or more: the server spaces their wake-up rounds
    # by what the rounds cost (server/sse.c round_gap_ns) and sends each a
    # pump of up to 2,048 events from the shared rendering (subscribe.c
    # from_cache). Whatever it holds and however it cuts the pumps, every
    # subscriber gets every event once, in order, identical to a $all read;
    # one append of 3,000 events (about 600 KB of SSE text) needs several
    # such pumps.
    n = 20
    readers = [Reader("/subscribe/all?from=end") for _ in range(n)]
    for rd in readers:
        rd.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and \
            not all(any(m["event"] == "caught-up" for m in rd.markers) for rd in readers):
        time.sleep(0.05)
    T.check(all(any(m["event"] == "caught-up" for m in rd.markers) for rd in readers),
            "every subscriber is live", None, "caught-up x %d" % n,
            [len(rd.markers) for rd in readers])
    first = head()
    wr = Writers(4, 4000 if QUICK else 12000, max_batch=10, prefix="round").start()
    big = [Ev("Big", data='{"i":%d,"p":"%s"}' % (i, "y" * 150)) for i in range(3000)]
    append(Client(S.port), "roundbig%s-1" % RUN, big)
    wr.join()
    append(Client(S.port), "roundsentinel%s-1" % RUN, [Ev("Sentinel", data='{}')])
    last = head() - 1
    for rd in readers:
        rd.target = last
    for rd in readers:
        rd.join(120)
    lines = all_lines(first)
    for k, rd in enumerate(readers):
        T.check(rd.error is None and not rd.is_alive(), "subscriber %d failed" % k, None,
                "all events up to %d" % last, rd.error or "still running")
        check_sequence(rd.got, first, last, lines, "live subscriber %d of %d" % (k, n))
    print("     %d live subscribers x %d events" % (n, last - first + 1))


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
