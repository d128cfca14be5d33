#!/usr/bin/env python3
"""test_http_chain.py - the hash chain through a real `stele serve` and the
CLI (docs/security.md, "The hash chain"; docs/http-api.md).

  - `stele keygen` makes a key (0600, FILE.pub); `stele serve --signing-key`
    signs the head: GET /chain/head has commits, position, hash, signature
    and the public key of FILE.pub, and counts each append;
  - GET /chain/proof?position=P and /chain/export?from=&to=, saved by
    `stele chain proof|export --out`, verify offline with `stele verify
    --public-key` (exit 0, the events counted); after any change to the
    file (a byte of the records, the head's hash, its position, the
    signature) verify exits 1; a wrong key exits 1;
  - proofs are built off the event loop, one at a time: parallel requests
    get 200 or 503 BUSY, hang-ups are harmless, the server answers meanwhile;
  - bad input: a missing or malformed position, from > to, a range past the
    head, a too-big range, other methods, unknown /chain paths: clear
    errors (400, 404, 405, 413), and the server keeps serving;
  - the head survives a restart; `stele check` on the stopped store reports
    the verified chain; a bad --signing-key file stops serve with a message.

Python 3 standard library only.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import STELE_BIN, Client, Server, Suite, stop_servers  # noqa: E402

T = Suite("test_http_chain")
S = None
C = None
TMP = tempfile.mkdtemp(prefix="stele-chain-")
KEY = os.path.join(TMP, "signing.key")


def env():
    e = dict(os.environ)
    for k in list(e):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del e[k]
    if S:
        e["STELE_SERVER"] = "http://127.0.0.1:%d" % S.port
    return e


def stele(*args):
    p = subprocess.run([STELE_BIN] + list(args), capture_output=True, text=True, env=env(),
                       timeout=120)
    return p.returncode, p.stdout, p.stderr


def append(stream, n):
    body = json.dumps([{"type": "T", "data": {"i": i, "pad": "p" * (i * 7 % 90)}}
                       for i in range(n)])
    return T.expect(C.post("/streams/" + stream, body), 201)


def setup():
    global S, C
    rc, out, err = stele("keygen", KEY)
    T.check(rc == 0 and len(out.strip()) == 64, "stele keygen", None, "64 hex digits",
            (rc, out, err))
    T.check(os.stat(KEY).st_mode & 0o777 == 0o600, "key file mode 0600")
    S = Server(args=["--segment-size", "65536", "--signing-key", KEY]).start()
    C = Client(S.port)


def teardown():
    stop_servers([S], client=C, check_exit=False)


def pub():
    with open(KEY + ".pub") as f:
        return f.read().strip()


@T.case
def head_is_signed_and_counts_commits():
    h0 = T.expect(C.get("/chain/head"), 200)
    T.check(h0["publicKey"] == pub() and len(h0["signature"]) == 128, "signed head", None,
            pub(), h0)
    for i in range(40):
        append("chain-%d" % (i % 4), 1 + i % 3)
    h = T.expect(C.get("/chain/head"), 200)
    T.check(h["commits"] == h0["commits"] + 40, "40 appends, 40 commits", None,
            h0["commits"] + 40, h)
    T.check(h["position"] == sum(1 + i % 3 for i in range(40)) + h0["position"],
            "head position", None, "next position", h)
    T.check(h["hash"] != h0["hash"] and len(h["hash"]) == 64, "hash moved")


def save(path, text):
    with open(path, "w") as f:
        f.write(text)


@T.case
def proofs_and_exports_verify_offline():
    p = os.path.join(TMP, "proof.json")
    rc, out, err = stele("chain", "proof", "7", "--out", p)
    T.check(rc == 0, "stele chain proof", None, 0, (rc, out, err))
    rc, out, err = stele("verify", p, "--public-key", KEY + ".pub")
    T.check(rc == 0 and "verified: 1 events (positions 7..7)" in out, "proof verifies", None,
            "verified", (rc, out, err))
    e = os.path.join(TMP, "export.json")
    rc, out, err = stele("chain", "export", "3", "40", "--out", e)
    T.check(rc == 0, "stele chain export", None, 0, (rc, out, err))
    rc, out, err = stele("verify", e, "--public-key", pub())
    T.check(rc == 0 and "verified: 38 events (positions 3..40)" in out, "export verifies", None,
            "38 events", (rc, out, err))
    # The same document over HTTP.
    doc = T.expect(C.get("/chain/export?from=3&to=40"), 200)
    T.check(doc["format"] == "stele-chain-export/1" and doc["from"] == 3, "export format",
            None, "stele-chain-export/1", doc.get("format"))
    # Without a key: the chain's consistency only, said so.
    rc, out, err = stele("verify", e)
    T.check(rc == 0 and "not checked" in out, "unsigned verify", None, "not checked",
            (rc, out, err))
    # A wrong key.
    other = os.path.join(TMP, "other.key")
    rc, opub, _ = stele("keygen", other)
    rc, out, err = stele("verify", e, "--public-key", opub.strip())
    T.check(rc == 1 and "another public key" in err, "wrong key fails", None, 1,
            (rc, out, err))
    # Any change fails.
    text = open(e).read().strip()
    d = json.loads(text)
    changes = []
    rec = d["commits"][1]["records"]
    changes.append(("a records byte", text.replace(rec, rec[:10] + ("A" if rec[10] != "A" else "B")
                                                   + rec[11:])))
    changes.append(("the head's hash", text.replace(d["head"]["hash"],
                                                    ("0" if d["head"]["hash"][0] != "0" else "1")
                                                    + d["head"]["hash"][1:])))
    changes.append(("the head's position", text.replace('"position":%d' % d["head"]["position"],
                                                        '"position":%d' % (d["head"]["position"] + 1))))
    sig = d["head"]["signature"]
    changes.append(("the signature", text.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"))))
    changes.append(("a commit dropped", json.dumps(dict(d, commits=d["commits"][:-1]))))
    for what, t in changes:
        T.check(t != text, "the change is made: " + what)
        bad = os.path.join(TMP, "bad.json")
        save(bad, t)
        rc, out, err = stele("verify", bad, "--public-key", KEY + ".pub")
        T.check(rc == 1 and "stele verify:" in err, "verify fails after " + what, None, 1,
                (rc, out, err))
    save(os.path.join(TMP, "junk.json"), "not json")
    rc, out, err = stele("verify", os.path.join(TMP, "junk.json"))
    T.check(rc == 2, "junk is a bad file", None, 2, (rc, out, err))


@T.case
def bad_input_gets_clear_errors():
    h = T.expect(C.get("/chain/head"), 200)
    T.expect(C.get("/chain/proof"), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/chain/proof?position=abc"), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/chain/proof?position=-1"), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/chain/export?from=5"), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/chain/export?from=9&to=5"), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/chain/export?from=0&to=%d" % (h["position"] + 10)), 400)
    T.expect(C.get("/chain/export?from=0&to=20000"), 413)
    T.expect(C.get("/chain/other"), 404, "NOT_FOUND")
    T.expect(C.post("/chain/head", b"{}"), 405, "METHOD_NOT_ALLOWED")
    rc, out, err = stele("chain", "proof", "x")
    T.check(rc == 2, "CLI usage error", None, 2, (rc, out, err))
    T.expect(C.get("/chain/head"), 200)  # still serving


@T.case
def exports_run_off_the_loop():
    """Proofs built on their own thread, one at a time: parallel requests
    each get the proof or 503 BUSY (never anything else), a client that
    hangs up mid-way harms nothing, and the server answers meanwhile."""
    import socket
    import threading
    from stele_server import request
    statuses = []

    def one():
        r = request(S.port, "GET", "/chain/proof?position=3", timeout=60)
        statuses.append((r.status, r.body.get("error", {}).get("code")
                         if isinstance(r.body, dict) else None))
    th = [threading.Thread(target=one) for _ in range(6)]
    for t in th:
        t.start()
    T.check(request(S.port, "GET", "/health/live", timeout=60).status == 200, "live meanwhile")
    for t in th:
        t.join(120)
    ok = [s for s in statuses if s[0] == 200]
    T.check(len(statuses) == 6 and ok and all(s[0] == 200 or s == (503, "BUSY")
                                              for s in statuses),
            "200 or 503 BUSY", None, "200 / 503 BUSY", statuses)
    for _ in range(3):  # hang up before the answer
        so = socket.create_connection(("127.0.0.1", S.port))
        so.sendall(b"GET /chain/export?from=0&to=50 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        so.close()
    for _ in range(600):  # retried while an abandoned export still runs
        r = C.get("/chain/proof?position=5")
        if r.status != 503:
            break
        time.sleep(0.1)
    T.expect(r, 200)


@T.case
def head_survives_restart_and_check_verifies():
    global C
    h = T.expect(C.get("/chain/head"), 200)
    C.close()
    T.check(S.stop() == 0, "clean stop")
    rc, out, err = stele("check", S.data_dir)
    T.check(rc == 0 and ("hash chain: %d commits verified" % h["commits"]) in out,
            "stele check verifies the chain", None, h["commits"], (rc, out, err))
    S.start()
    C = Client(S.port)
    h2 = T.expect(C.get("/chain/head"), 200)
    T.check(h2["hash"] == h["hash"] and h2["commits"] == h["commits"], "same head after restart",
            None, h, h2)
    append("chain-after", 2)
    T.check(T.expect(C.get("/chain/head"), 200)["commits"] == h["commits"] + 1, "chain goes on")
    # A bad key file stops serve with a message.
    bad = os.path.join(TMP, "bad.key")
    save(bad, "zz")
    p = subprocess.run([STELE_BIN, "serve", "--port", "0", "--data", os.path.join(TMP, "d2"),
                        "--signing-key", bad], capture_output=True, text=True, timeout=60,
                       env=env())
    T.check(p.returncode != 0 and "--signing-key" in p.stderr, "bad key refused", None,
            "a message", (p.returncode, p.stderr))


if __name__ == "__main__":
    T.run(setup, teardown)
