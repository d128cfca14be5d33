#!/usr/bin/env python3
"""test_cli_tail.py - `stele tail` against a real server.

Runs `stele tail` as a subprocess (binary from $STELE_BIN) and checks that it
prints new events exactly as $all reads render them (NDJSON on a pipe, a
table on a terminal), applies its --filter options, resumes after the
server was killed and restarted without missing or repeating an event,
exits 0 on Ctrl-C (SIGINT) and when its reader goes away, and reports
errors with the usual exit codes (1 the server refused, 2 usage, 3 no
server).

Python 3 standard library only.
"""
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (STELE_BIN, Client, Ev, Server, Suite, all_lines_from,  # noqa: E402
                          all_next, body_of, check_servers, request, stop_servers)

T = Suite("test_cli_tail")
S = None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def setup():
    global S
    # a fixed port, so that `stele tail` finds the server again after a restart
    S = Server(["--port", str(free_port()), "--sse-keepalive", "1"], name="main").start()


def teardown():
    stop_servers([S])


def after_case():
    check_servers(T, [S])


def env(extra=None):
    e = {k: v for k, v in os.environ.items()
         if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "columns")}
    e["STELE_SERVER"] = "http://127.0.0.1:%d" % S.port
    e.update(extra or {})
    return e


class Tail:
    """`stele tail ARGS` with stdout on a pipe (or a pseudo-terminal)."""

    def __init__(self, *args, tty=False, env_extra=None):
        self.master = None
        if tty:
            self.master, slave = pty.openpty()
            self.p = subprocess.Popen([STELE_BIN, "tail"] + list(args), stdin=subprocess.DEVNULL,
                                      stdout=slave, stderr=subprocess.PIPE,
                                      env=env(dict({"COLUMNS": "120"}, **(env_extra or {}))))
            os.close(slave)
            self.fd = self.master
        else:
            self.p = subprocess.Popen([STELE_BIN, "tail"] + list(args), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=env(env_extra))
            self.fd = self.p.stdout.fileno()
        self.buf = b""

    def lines(self, n, timeout=30):
        """The next n output lines (without line endings)."""
        deadline = time.monotonic() + timeout
        while self.buf.count(b"\n") < n:
            left = deadline - time.monotonic()
            T.check(left > 0, "stele tail printed %d of %d lines in %ds" % (
                self.buf.count(b"\n"), n, timeout), None, None, self.buf[-500:])
            r, _, _ = select.select([self.fd], [], [], min(left, 1))
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    T.fail("stele tail stopped printing", None, "%d lines" % n,
                           (self.buf[-500:], self.stop()))
                self.buf += chunk.replace(b"\r\n", b"\n")
        out = self.buf.split(b"\n")
        self.buf = b"\n".join(out[n:])
        return out[:n]

    def stop(self, sig=signal.SIGINT):
        """Send `sig`; (exit code, stderr)."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = "hung"
        err = self.p.stderr.read().decode()
        if self.master is not None:
            os.close(self.master)
            self.master = None
        return rc, err


def subscribers():
    r = request(S.port, "GET", "/metrics")
    return int(re.search(r"^stele_subscribers (\d+)$", r.raw.decode(), re.M).group(1))


def wait_subscribed(n=1):
    deadline = time.monotonic() + 30
    while subscribers() < n:
        T.check(time.monotonic() < deadline, "stele tail subscribed")
        time.sleep(0.05)


def append(stream, events):
    r = request(S.port, "POST", "/streams/" + stream, body=body_of(events))
    T.expect(r, 201)
    return r.body


def all_lines(frm):
    return list(all_lines_from(S.port, T, frm).values())


def head():
    """The next position of $all."""
    return all_next(S.port, T)


# ------------------------------------------------------------------ cases

@T.case
def ndjson_follows_new_events_and_ctrl_c_exits_0():
    append("old-1", [Ev("Old")])
    t = Tail("--all")
    wait_subscribed()
    start = head()
    append("new-1", [Ev("A", data='{"n":1}'), Ev("B", data='{"n":2}')])
    append("new-2", [Ev("C", data='[3]', tags=["x"])])
    got = t.lines(3)
    T.check(got == all_lines(start), "tail prints the new events as $all reads render them",
            None, all_lines(start), got)
    rc, err = t.stop()
    T.check(rc == 0, "Ctrl-C exits 0", None, 0, (rc, err))


@T.case
def from_start_with_filters():
    base = head()
    append("Fcat-1", [Ev("OrderPlaced"), Ev("Noise")])
    append("Gcat-1", [Ev("OrderPlaced")])
    append("Fcat-2", [Ev("OrderShipped", tags=["t1"]), Ev("Other", tags=["t1"])])
    lines = all_lines(base)
    evs = [json.loads(x) for x in lines]
    want = [lines[i] for i, e in enumerate(evs)
            if e["stream"].startswith("Fcat-") and e["type"].startswith("Order")]
    t = Tail("--all", "--from", str(base), "--filter-category", "Fcat",
             "--filter-type-prefix", "Order")
    got = t.lines(len(want))
    T.check(got == want, "category + type prefix", None, want, got)
    # nothing else arrives: the next line is a later matching event
    append("Fcat-3", [Ev("Noise"), Ev("OrderX")])
    got = t.lines(1)
    T.check(json.loads(got[0])["type"] == "OrderX", "the next match", None, "OrderX", got)
    T.check(t.stop()[0] == 0, "exit 0")
    # repeated options: any of the values
    t = Tail("--all", "--from", str(base), "--filter-type", "Other", "--filter-type", "Noise",
             "--filter-stream-prefix", "Fcat-1", "--filter-stream-prefix", "Fcat-2")
    want = [lines[i] for i, e in enumerate(evs)
            if e["type"] in ("Other", "Noise") and e["stream"] in ("Fcat-1", "Fcat-2")]
    got = t.lines(len(want))
    T.check(got == want, "repeated --filter-type and --filter-stream-prefix", None, want, got)
    T.check(t.stop()[0] == 0, "exit 0")
    t = Tail("--all", "--from", str(base), "--filter-tag", "t1", "--filter-type-regex",
             "^Order(Placed|Shipped)$", "--exclude-system")
    got = t.lines(1)
    T.check(json.loads(got[0])["type"] == "OrderShipped", "--filter-tag and --filter-type-regex",
            None, "OrderShipped", got)
    T.check(t.stop()[0] == 0, "exit 0")


@T.case
def one_stream_from_a_revision():
    append("one-1", [Ev("A", data=str(i)) for i in range(4)])
    t = Tail("one-1", "--from", "2")
    got = [json.loads(x) for x in t.lines(2)]
    T.check([(e["stream"], e["revision"]) for e in got] == [("one-1", 2), ("one-1", 3)],
            "revisions 2 and 3", None, None, got)
    append("one-2", [Ev("B")])
    append("one-1", [Ev("C")])
    got = json.loads(t.lines(1)[0])
    T.check((got["stream"], got["revision"]) == ("one-1", 4), "only the stream's events", None,
            ("one-1", 4), got)
    T.check(t.stop()[0] == 0, "exit 0")


@T.case
def resumes_after_the_server_was_killed():
    start = head()
    append("res-1", [Ev("Before", data=str(i)) for i in range(3)])
    t = Tail("--all", "--from", str(start))
    got = t.lines(3)
    S.kill()
    time.sleep(0.5)
    S.start()
    append("res-1", [Ev("After", data=str(i)) for i in range(3)])
    got += t.lines(3)
    T.check(got == all_lines(start), "every event once, in order, across the restart", None,
            all_lines(start), got)
    rc, err = t.stop()
    T.check(rc == 0, "exit 0", None, 0, (rc, err))
    T.check("reconnecting after id %d" % (start + 2) in err, "the reconnection is reported",
            None, "reconnecting after id %d" % (start + 2), err)


@T.case
def table_on_a_terminal():
    start = head()
    append("tbl-1", [Ev("Shown", data='{"k":"v"}')])
    t = Tail("--all", "--from", str(start), tty=True)
    got = t.lines(3)
    T.check(got[0].split() == [b"POSITION", b"REVISION", b"STREAM", b"TYPE", b"CREATED", b"DATA"],
            "the header", None, None, got)
    T.check(got[1].split()[:4] == [str(start).encode(), b"0", b"tbl-1", b"Shown"] and
            got[1].rstrip().endswith(b'{"k":"v"}'), "a row", None, None, got[1])
    T.check(got[2].startswith(b"-- caught up at position %d" % start), "the caught-up note",
            None, None, got[2])
    T.check(t.stop()[0] == 0, "exit 0")


@T.case
def reader_going_away_exits_0():
    # bash reports tail's own status (PIPESTATUS), not head's
    p = subprocess.Popen(["bash", "-c", "%s tail --all --from start | head -n 1 >/dev/null; "
                          "exit ${PIPESTATUS[0]}" % STELE_BIN], env=env(),
                         stderr=subprocess.PIPE)
    time.sleep(1)
    append("pipe-1", [Ev("Wake")])  # a write after `head` left: EPIPE
    try:
        rc = p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        T.fail("stele tail kept running after its reader went away")
    T.check(rc == 0, "stele tail exits 0 when its reader goes away", None, 0,
            (rc, p.stderr.read()))


@T.case
def errors_and_exit_codes():
    t = Tail("--all", "--filter-type-regex", "(")
    rc, err = t.stop(sig=0)  # signal 0: just wait for it
    T.check(rc == 1 and "INVALID_ARGUMENT: filter: type regex '('" in err, "bad regex: exit 1",
            None, 1, (rc, err))
    for args, text in [
            (["one-1", "--filter-type", "A"], "filters work with --all only"),
            (["--all", "--from", "x"], "--from must be a number"),
            (["--all", "one-1"], "not both"),
            ([], "missing STREAM"),
            (["--all", "--bogus"], "unknown option '--bogus'"),
            (["--all", "--filter-tag"], "--filter-tag needs a value"),
            (["--all", "--filter-tag", ""], "needs a non-empty value")]:
        r = subprocess.run([STELE_BIN, "tail"] + args, env=env(), capture_output=True, text=True,
                           timeout=30)
        T.check(r.returncode == 2 and text in r.stderr, "usage error %r" % args, None,
                (2, text), (r.returncode, r.stderr))
    r = subprocess.run([STELE_BIN, "tail", "--all"], env=env({"STELE_SERVER":
                       "http://127.0.0.1:%d" % free_port()}), capture_output=True, text=True,
                       timeout=30)
    T.check(r.returncode == 3 and "cannot reach" in r.stderr, "no server: exit 3", None, 3,
            (r.returncode, r.stderr))
    # a stream tombstoned while followed: exit 1 with the reason
    append("tomb-1", [Ev("A")])
    t = Tail("tomb-1")
    wait_subscribed()
    c = Client(S.port)
    T.expect(c.delete("/streams/tomb-1?tombstone=true"), 204)
    c.close()
    rc, err = t.stop(sig=0)
    T.check(rc == 1 and "tombstoned" in err, "tombstoned while followed: exit 1", None, 1,
            (rc, err))
    r = subprocess.run([STELE_BIN, "tail", "tomb-1"], env=env(), capture_output=True, text=True,
                       timeout=30)
    T.check(r.returncode == 1 and "STREAM_DELETED" in r.stderr, "tombstoned: exit 1", None, 1,
            (r.returncode, r.stderr))
    r = subprocess.run([STELE_BIN, "tail", "--help"], env=env(), capture_output=True, text=True,
                       timeout=30)
    T.check(r.returncode == 0 and "--filter-category" in r.stdout, "--help")


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
