#!/usr/bin/env python3
"""test_cli.py - the `stele` command-line client against a real server.

Starts `stele serve` (binary from $STELE_BIN, default build/stele) on a free
port in a temporary data directory, then runs the client commands (append,
read, head, delete) as subprocesses and checks their output and exit codes:
0 ok, 1 the server answered with an error, 2 usage error, 3 no server.
Table output is checked through a pseudo-terminal; everything else runs with
stdout on a pipe, where the output must be NDJSON.

Python 3 standard library only. Prints "test_cli: N passed, M failed" and
exits non-zero when anything failed.
"""
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.environ.get("STELE_BIN") or os.path.join(ROOT, "build", "stele"))

SERVER = None  # base URL of the server under test
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def client_env(extra=None):
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[k]
    env.pop("COLUMNS", None)
    env["STELE_SERVER"] = SERVER
    if extra:
        env.update(extra)
    return env


def stele(*args, input=None, env=None):
    """Run the client with stdout on a pipe; returns (rc, stdout, stderr)."""
    p = subprocess.run([BIN] + list(args), input=input, capture_output=True, text=True,
                       env=client_env(env), timeout=60)
    return p.returncode, p.stdout, p.stderr


def stele_tty(*args, columns=120, env=None):
    """Run the client with stdout on a pseudo-terminal: (rc, stdout, stderr)."""
    master, slave = pty.openpty()
    e = {"COLUMNS": str(columns)}
    if env:
        e.update(env)
    p = subprocess.Popen([BIN] + list(args), stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=subprocess.PIPE, env=client_env(e))
    os.close(slave)
    out = b""
    while True:
        try:
            r, _, _ = select.select([master], [], [], 60)
            if not r:
                break
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    err = p.stderr.read().decode()
    p.stderr.close()
    rc = p.wait(timeout=60)
    return rc, out.decode().replace("\r\n", "\n"), err


def ndjson(text):
    """Parse NDJSON strictly: every line one JSON object, newline-terminated."""
    assert text == "" or text.endswith("\n"), "output does not end with a newline: %r" % text[-80:]
    events = []
    for line in text.split("\n")[:-1]:
        v = json.loads(line)
        assert isinstance(v, dict), "line is not an object: %r" % line
        events.append(v)
    return events


def ok(rc, out, err):
    assert rc == 0, "exit %d, stderr: %s" % (rc, err)
    return out


def append_json(stream, *args, input=None):
    return json.loads(ok(*stele("append", stream, "--json", *args, input=input)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ append

@test
def append_from_arguments():
    r = append_json("args-1", "--expect", "no_stream", "--type", "OrderPlaced",
                    "--data", '{"orderId":"1","total":42}', "--metadata", '{"$actor":"alice"}',
                    "--tag", "tenant:acme", "--tag", "region:eu")
    assert r["firstRevision"] == 0 and r["lastRevision"] == 0 and r["idempotent"] is False, r
    evs = ndjson(ok(*stele("read", "args-1")))
    assert len(evs) == 1
    e = evs[0]
    assert e["type"] == "OrderPlaced" and e["stream"] == "args-1" and e["revision"] == 0
    assert e["data"] == {"orderId": "1", "total": 42} and e["metadata"] == {"$actor": "alice"}
    assert e["tags"] == ["tenant:acme", "region:eu"]
    assert e["position"] == r["firstPosition"]


@test
def append_data_passes_through_byte_exact():
    # Numbers and escapes the client must not re-serialise.
    data = '{"big":123456789012345678901234567890,"f":1.50,"s":"\\u00e9\\n"}'
    append_json("exact-1", "--type", "T", "--data", data)
    rc, out, err = stele("read", "exact-1")
    line = ok(rc, out, err).strip()
    assert '"data":' + data in line, line


@test
def append_with_id_is_idempotent():
    uid = "0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7a"
    a = append_json("idem-1", "--type", "T", "--id", uid, "--data", "1")
    b = append_json("idem-1", "--type", "T", "--id", uid, "--data", "1")
    assert a["idempotent"] is False and b["idempotent"] is True, (a, b)
    assert a["firstPosition"] == b["firstPosition"]
    evs = ndjson(ok(*stele("read", "idem-1")))
    assert len(evs) == 1 and evs[0]["id"] == uid


@test
def append_from_file():
    d = tempfile.mkdtemp(dir=WORK)
    arr = os.path.join(d, "events.json")
    with open(arr, "w") as f:  # pretty-printed: data spans several lines
        json.dump([{"type": "A", "data": {"n": 1, "nested": {"k": [1, 2]}}},
                   {"type": "B", "data": {"n": 2}}], f, indent=2)
    r = append_json("file-1", "--file", arr, "--expect", "no_stream")
    assert (r["firstRevision"], r["lastRevision"]) == (0, 1), r
    one = os.path.join(d, "one.json")
    with open(one, "w") as f:
        f.write('{"type": "C", "data": "single"}\n')
    r = append_json("file-1", "--file", one, "--expect", "1")
    assert r["firstRevision"] == 2, r
    wrapped = os.path.join(d, "wrapped.json")
    with open(wrapped, "w") as f:
        f.write('{"events": [{"type": "D"}]}')
    r = append_json("file-1", "--file", wrapped)
    assert r["firstRevision"] == 3, r
    evs = ndjson(ok(*stele("read", "file-1")))
    assert [e["type"] for e in evs] == ["A", "B", "C", "D"]
    assert evs[0]["data"] == {"n": 1, "nested": {"k": [1, 2]}}
    assert evs[2]["data"] == "single" and "data" not in evs[3]
    # --file - reads stdin.
    r = append_json("file-1", "--file", "-", input='[{"type":"E"}]')
    assert r["firstRevision"] == 4, r


@test
def append_from_stdin_ndjson():
    lines = ['{"type":"S","data":{"i":%d}}' % i for i in range(3)]
    text = lines[0] + "\n\n" + lines[1] + "\r\n" + lines[2]  # blank line, CRLF, no final newline
    r = append_json("stdin-1", "--expect", "no_stream", input=text)
    assert (r["firstRevision"], r["lastRevision"]) == (0, 2), r
    evs = ndjson(ok(*stele("read", "stdin-1")))
    assert [e["data"]["i"] for e in evs] == [0, 1, 2]


@test
def append_human_output():
    rc, out, err = stele_tty("append", "human-1", "--type", "T", "--data", "{}")
    assert rc == 0, err
    assert "appended 1 event to human-1: revision 0, position" in out, out
    rc, out, err = stele_tty("append", "human-1", "--file", "-")
    # stdin is /dev/null here: an empty file is not JSON.
    assert rc == 2, (rc, out, err)
    p = subprocess.run([BIN, "append", "human-1"], input='{"type":"a"}\n{"type":"b"}\n',
                       capture_output=True, text=True, env=client_env())
    assert p.returncode == 0, p.stderr
    json.loads(p.stdout)  # not a terminal: JSON
    rc, out, err = stele_tty("append", "human-1", "--type", "T", "--json")
    assert rc == 0 and json.loads(out)["firstRevision"] == 3, (out, err)


@test
def stream_names_are_encoded():
    name = "odd name/with?chars&=%+é"
    append_json(name, "--type", "T", "--data", "1")
    evs = ndjson(ok(*stele("read", name)))
    assert len(evs) == 1 and evs[0]["stream"] == name
    h = json.loads(ok(*stele("head", name)))
    assert h["stream"] == name and h["lastRevision"] == 0
    # A name that starts with a dash, after "--".
    r = json.loads(ok(*stele("append", "--json", "--type", "T", "--", "-dash")))
    assert r["firstRevision"] == 0
    assert len(ndjson(ok(*stele("read", "--", "-dash")))) == 1


# ------------------------------------------------------------------ read

@test
def read_forwards_backwards_from_limit():
    append_json("rd-1", input="".join('{"type":"T","data":%d}\n' % i for i in range(10)))
    evs = ndjson(ok(*stele("read", "rd-1")))
    assert [e["revision"] for e in evs] == list(range(10))
    evs = ndjson(ok(*stele("read", "rd-1", "--backwards")))
    assert [e["revision"] for e in evs] == list(range(9, -1, -1))
    evs = ndjson(ok(*stele("read", "rd-1", "--from", "3", "--limit", "4")))
    assert [e["data"] for e in evs] == [3, 4, 5, 6]
    evs = ndjson(ok(*stele("read", "rd-1", "--backwards", "--from=5", "--limit=2")))
    assert [e["revision"] for e in evs] == [5, 4]
    evs = ndjson(ok(*stele("read", "rd-1", "--from", "end")))
    assert evs == []
    evs = ndjson(ok(*stele("read", "rd-1", "--json", "--limit", "1")))
    assert len(evs) == 1


@test
def read_all_and_follow_next():
    before = ndjson(ok(*stele("read", "--all", "--follow-next")))
    n = 250
    append_json("many-1", input="".join('{"type":"M","data":%d}\n' % i for i in range(n)))
    evs = ndjson(ok(*stele("read", "--all", "--follow-next")))
    assert len(evs) == len(before) + n
    assert [e["position"] for e in evs] == list(range(len(evs)))  # gapless, in order
    page = ndjson(ok(*stele("read", "--all")))
    assert len(page) == 100  # the default limit
    evs = ndjson(ok(*stele("read", "many-1", "--follow-next")))
    assert [e["data"] for e in evs] == list(range(n))
    back = ndjson(ok(*stele("read", "--all", "--backwards", "--limit", "3")))
    assert [e["position"] for e in back] == [len(before) + n - 1 - i for i in range(3)]
    big = ndjson(ok(*stele("read", "many-1", "--limit", "20000")))  # above a JSON page
    assert len(big) == n


@test
def read_output_is_ndjson_even_for_pretty_data():
    # Data appended pretty-printed keeps its bytes; each event must still be
    # exactly one line.
    body = '[{"type":"P","data":{\n  "a": [\n    1,\n    2\n  ],\r\n  "s": "x y"\n}}]'
    with open(os.path.join(WORK, "pretty.json"), "w") as f:
        f.write(body)
    append_json("pretty-1", "--file", os.path.join(WORK, "pretty.json"))
    append_json("pretty-1", "--type", "Q", "--data", "[ 1 ,\n 2 ]")
    out = ok(*stele("read", "pretty-1"))
    evs = ndjson(out)
    assert len(evs) == 2 and out.count("\n") == 2
    assert evs[0]["data"] == {"a": [1, 2], "s": "x y"} and evs[1]["data"] == [1, 2]
    evs = ndjson(ok(*stele("read", "--all", "--follow-next")))
    assert any(e["stream"] == "pretty-1" for e in evs)


@test
def read_table_on_terminal():
    append_json("tbl-1", input="".join(
        '{"type":"Thing","data":{"i":%d,"pad":"%s"}}\n' % (i, "x" * 200) for i in range(5)))
    rc, out, err = stele_tty("read", "tbl-1", columns=100)
    assert rc == 0, err
    lines = out.rstrip("\n").split("\n")
    assert lines[0].split() == ["POSITION", "REVISION", "STREAM", "TYPE", "CREATED", "DATA"], lines[0]
    assert len(lines) == 6, out
    for i, line in enumerate(lines[1:]):
        cells = line.split()
        assert cells[1] == str(i) and cells[2] == "tbl-1" and cells[3] == "Thing", line
        assert len(line) <= 100, (len(line), line)  # data cut to the width
        assert line.endswith("\u2026"), line
        assert '{"i":%d,"pad":"xxx' % i in line
    # The data column starts at the same place on every row.
    col = lines[0].index("DATA")
    assert all(l[col] == "{" for l in lines[1:]), out
    # Limited: a hint on stderr; with --follow-next every event, over pages.
    rc, out, err = stele_tty("read", "tbl-1", "--limit", "2")
    assert rc == 0 and len(out.strip().split("\n")) == 3 and "--from 2" in err, (out, err)
    rc, out, err = stele_tty("read", "tbl-1", "--follow-next", "--limit", "2")
    assert rc == 0 and len(out.strip().split("\n")) == 6 and err == "", (out, err)
    rc, out, err = stele_tty("read", "--all", "--backwards", "--limit", "3")
    assert rc == 0 and len(out.strip().split("\n")) == 4, out
    # --json on a terminal: NDJSON.
    rc, out, err = stele_tty("read", "tbl-1", "--json")
    assert rc == 0 and len(ndjson(out)) == 5
    rc, out, err = stele_tty("read", "empty-never-written")
    assert rc == 1 and "STREAM_NOT_FOUND" in err


@test
def read_to_a_closed_pipe():
    append_json("pipe-1", input='{"type":"T","data":"%s"}\n' % ("y" * 1000) * 1000)
    p = subprocess.Popen([BIN, "read", "--all", "--follow-next"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=client_env())
    json.loads(p.stdout.readline())
    p.stdout.close()
    rc = p.wait(timeout=60)
    err = p.stderr.read().decode()
    assert rc == 0 and err == "", (rc, err)


# ------------------------------------------------------------------ head, delete

@test
def head_json_and_table():
    append_json("hd-1", input='{"type":"a"}\n{"type":"b"}\n')
    h = json.loads(ok(*stele("head", "hd-1")))
    assert h["stream"] == "hd-1" and h["lastRevision"] == 1 and h["deleted"] is False, h
    rc, out, err = stele_tty("head", "hd-1")
    assert rc == 0 and "last revision    1" in out and "tombstoned       no" in out, out
    rc, out, err = stele("head", "hd-never")
    assert rc in (0, 1), err  # a never-written stream: no events, or not found
    if rc == 0:
        assert json.loads(out)["lastRevision"] is None


@test
def delete_soft_and_recreate():
    append_json("del-1", input='{"type":"a"}\n{"type":"b"}\n')
    rc, out, err = stele("delete", "del-1", "--expect", "0")
    assert rc == 1 and err.startswith("stele: WRONG_EXPECTED_REVISION: "), err
    rc, out, err = stele("delete", "del-1", "--expect", "1")
    assert rc == 0 and out == "" and err == "", (rc, out, err)
    rc, out, err = stele("read", "del-1")
    assert rc == 1 and out == "" and err.startswith("stele: STREAM_NOT_FOUND: "), (rc, out, err)
    h = json.loads(ok(*stele("head", "del-1")))
    assert h["deleted"] is True, h
    r = append_json("del-1", "--type", "again")
    assert r["firstRevision"] == 2, r
    evs = ndjson(ok(*stele("read", "del-1")))
    assert [e["type"] for e in evs] == ["again"]
    rc, out, err = stele_tty("delete", "del-1")
    assert rc == 0 and "deleted stream del-1" in out, out


@test
def delete_tombstone():
    append_json("tomb-1", "--type", "a")
    rc, out, err = stele_tty("delete", "tomb-1", "--tombstone")
    assert rc == 0 and "tombstoned stream tomb-1" in out, (out, err)
    for args in (["read", "tomb-1"], ["append", "tomb-1", "--type", "x"],
                 ["delete", "tomb-1"]):
        rc, out, err = stele(*args)
        assert rc == 1 and err.startswith("stele: STREAM_DELETED: "), (args, rc, err)
    h = json.loads(ok(*stele("head", "tomb-1")))
    assert h["tombstoned"] is True


# ------------------------------------------------------------------ errors

@test
def wrong_expected_revision_exit_1():
    append_json("a", "--type", "T", "--expect", "no_stream")
    rc, out, err = stele("append", "a", "--type", "T", "--expect", "no_stream")
    assert rc == 1 and out == "", (rc, out)
    assert err == ("stele: WRONG_EXPECTED_REVISION: stream 'a': expected revision no_stream, "
                   "but its revision is 0\n"), err
    rc, out, err = stele("append", "a", "--type", "T", "--expect", "5")
    assert rc == 1 and "WRONG_EXPECTED_REVISION" in err
    rc, out, err = stele("append", "never-a", "--type", "T", "--expect", "stream_exists")
    assert rc == 1 and "WRONG_EXPECTED_REVISION" in err
    r = append_json("a", "--type", "T", "--expect", "0")
    assert r["firstRevision"] == 1


@test
def server_rejections_exit_1():
    rc, out, err = stele("append", "bad-1", input='{"data":1}\n')  # no type
    assert rc == 1 and err.split(":")[1].strip() in ("INVALID_ARGUMENT", "BAD_REQUEST"), \
        (rc, err)
    rc, out, err = stele("append", "bad-1", "--type", "T", "--id", "not-a-uuid")
    assert rc == 1 and err.startswith("stele: "), (rc, err)
    rc, out, err = stele("append", "bad-1", "--type", "bad\ttype")
    assert rc == 1 and err.startswith("stele: "), (rc, err)
    rc, out, err = stele("read", "never-written")
    assert rc == 1 and err == "stele: STREAM_NOT_FOUND: stream 'never-written' not found\n", err
    rc, out, err = stele("delete", "never-written")
    assert rc == 1 and "STREAM_NOT_FOUND" in err


@test
def usage_errors_exit_2():
    cases = [
        ["append", "x", "--bogus"],
        ["read", "x", "--bogus"],
        ["head", "x", "--bogus"],
        ["delete", "x", "--bogus"],
        ["append"],
        ["read"],
        ["head"],
        ["delete"],
        ["read", "x", "--all"],
        ["read", "x", "y"],
        ["read", "x", "--limit", "0"],
        ["read", "x", "--limit", "ten"],
        ["read", "x", "--from", "-1"],
        ["read", "x", "--limit"],
        ["append", "x", "--type", "T", "--data", "not json"],
        ["append", "x", "--type", "T", "--data", '{"a":1'],
        ["append", "x", "--type", "T", "--metadata", "{,}"],
        ["append", "x", "--type", "T", "--expect", "maybe"],
        ["append", "x", "--data", "1"],
        ["append", "x", "--type", "T", "--file", "f.json"],
        ["append", "x", "--file", "/nonexistent/events.json"],
        ["delete", "x", "--expect", "-3"],
        ["read", "x", "--server", "ftp://127.0.0.1:1"],
        ["head", "x", "--server", "::not a url"],
        ["frobnicate"],
    ]
    for args in cases:
        rc, out, err = stele(*args, input="")
        assert rc == 2, (args, rc, out, err)
        assert err.startswith("stele"), (args, err)
        assert out == "", (args, out)
    for text, what in (('{"type":"a"}\n{"type":\n', "stdin line 2: invalid JSON"),
                       ('[{"type":"a"}]\n', "stdin line 1: expected an event object"),
                       ("\n\n", "no events on stdin")):
        rc, out, err = stele("append", "x", input=text)
        assert rc == 2 and what in err, (text, rc, err)
    # Nothing was appended by any of them.
    rc, out, err = stele("read", "x")
    assert rc == 1 and "STREAM_NOT_FOUND" in err, (rc, err)


@test
def unknown_flag_message():
    rc, out, err = stele("append", "x", "--bogus")
    assert rc == 2 and "unknown option '--bogus'" in err and "usage: stele append" in err, err


@test
def no_server_exit_3():
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    for args in (["read", "x"], ["append", "x", "--type", "T"], ["head", "x"],
                 ["delete", "x"], ["read", "--all"]):
        rc, out, err = stele(*args, "--server", url)
        assert rc == 3, (args, rc, err)
        assert err == "stele: cannot reach %s: Connection refused\n" % url, err
    rc, out, err = stele("read", "x", env={"STELE_SERVER": url})
    assert rc == 3 and url in err
    # --server wins over STELE_SERVER.
    rc, out, err = stele("head", "a", "--server", SERVER, env={"STELE_SERVER": url})
    assert rc == 0, err
    # The default server is 127.0.0.1:2113.
    env = client_env()
    del env["STELE_SERVER"]
    p = subprocess.run([BIN, "read", "x"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode in (1, 3) and ("127.0.0.1:2113" in p.stderr or p.returncode == 1), \
        p.stderr


@test
def help_texts():
    rc, out, err = stele("help")
    assert rc == 0 and "append STREAM" in out and "read STREAM" in out, out
    for cmd in ("append", "read", "head", "delete", "serve", "check"):
        rc, out, err = stele(cmd, "--help")
        assert rc == 0 and out.startswith("usage: stele " + cmd), (cmd, out)
        rc2, out2, err2 = stele("help", cmd)
        assert rc2 == 0 and out2 == out, cmd
    rc, out, err = stele("help", "nope")
    assert rc == 2


# ------------------------------------------------------------------ main

def start_server(data):
    r, w = os.pipe()
    env = dict(os.environ, STELE_READY_FD=str(w))
    log = open(os.path.join(WORK, "server.log"), "wb")
    p = subprocess.Popen([BIN, "serve", "--port", "0", "--data", data], env=env,
                         stdout=log, stderr=log, pass_fds=(w,))
    os.close(w)
    line = b""
    deadline = time.time() + 30
    while not line.endswith(b"\n") and time.time() < deadline:
        ready, _, _ = select.select([r], [], [], 1)
        if ready:
            chunk = os.read(r, 100)
            if not chunk:
                break
            line += chunk
        if p.poll() is not None:
            break
    os.close(r)
    if not line.startswith(b"ready "):
        p.kill()
        raise SystemExit("test_cli: server did not start (%r); see %s" % (line, log.name))
    return p, int(line.split()[1])


def main():
    global SERVER, WORK
    if not os.access(BIN, os.X_OK):
        print("test_cli: no stele binary at %s (set STELE_BIN)" % BIN)
        return 1
    WORK = tempfile.mkdtemp(prefix="stele-cli-")
    server, port = start_server(os.path.join(WORK, "data"))
    SERVER = "http://127.0.0.1:%d" % port
    passed = failed = 0
    try:
        for t in TESTS:
            try:
                t()
                passed += 1
            except Exception:
                failed += 1
                print("FAIL %s" % t.__name__)
                traceback.print_exc()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            rc = "killed"
        if rc != 0:
            failed += 1
            print("FAIL server exit status %s" % rc)
    print("test_cli: %d passed, %d failed" % (passed, failed))
    if failed == 0:
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        print("test_cli: kept %s" % WORK)
    return 1 if failed else 0


WORK = None
if __name__ == "__main__":
    sys.exit(main())
