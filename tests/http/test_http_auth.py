#!/usr/bin/env python3
"""
test_http_auth.py - users, authentication and access control over HTTP
(server/auth.c, server/access.c, server/routes_users.c; docs/security.md)
against a real `stele serve --admin-password`:

- an ACL matrix: every kind of endpoint (streams, metadata, deletes,
  $all, queries, subscriptions, consumer groups, multi-stream appends,
  admin, users, API keys, projections, rules, metrics, health) against
  anonymous, a reader, a writer, an $ops user and an admin, compared with
  the table MATRIX below (stream ACLs set with KurrentDB's $acl);
- reads across streams by users without $ops (queries, DCB queries, view
  streams, SSE /subscribe/all and view subscriptions) return only the
  streams each user may read; a view granted by policy is read whole;
- multi-stream appends: $w on every stream, refused whole (nothing written)
  when one is not writable; a DCB condition needs $r on $all; audited;
- `$r` on `$all` granted by a stream policy for `$all`: unfiltered reads,
  category and type lists, `$all` consumer groups, proofs, DCB conditions;
  HEAD is checked as GET (a view's own ACL never makes it a 403);
- users' lastUpdated moves with each change;
- users: create, duplicate, disable, enable, change own password (wrong and
  right current one; the old password stops working at once although it
  was cached), reset, delete; API keys: create, use as Bearer, revoke;
- users persist across a restart, and no password or key secret is in the
  store's files or the server's log;
- wrong passwords, garbage and truncated Authorization headers: 401 with
  WWW-Authenticate, nothing written, the server keeps serving;
- brute force from one address (127.0.0.7): after the limit it gets 429
  with Retry-After without a password check, counted in /metrics and in
  audit lines, while another address and already verified credentials keep
  being served;
- a non-loopback --host without TLS and users refuses to start unless
  --insecure.
"""
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import shutil

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (HOST, STELE_BIN, Server, Suite, parse_responses,  # noqa: E402
                          stop_servers)

T = Suite("test_http_auth")
S = None
ADMIN_PW = "adm1n-Secret-%d" % os.getpid()
PW = {"admin": ADMIN_PW, "reader": "reader-pw-x1", "writer": "writer-pw-x2",
      "operator": "ops-pw-x3"}
KEY_TOKENS = []


def call(port, method, path, body=None, user=None, password=None, headers=None, src=None,
         raw_auth=None, stream=False):
    """One request on a fresh connection (from source address `src`);
    returns a Response. `stream`: read only the head (SSE)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(30)
    if src:
        s.bind((src, 0))
    s.connect((HOST, port))
    try:
        data = b""
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, path)
        if body is not None:
            h += "Content-Type: application/json\r\n"
        h += "Content-Length: %d\r\n" % len(data)
        if user is not None:
            tok = base64.b64encode(("%s:%s" % (user, password if password is not None
                                               else PW[user])).encode()).decode()
            h += "Authorization: Basic %s\r\n" % tok
        if raw_auth is not None:
            h += raw_auth
        for k, v in (headers or {}).items():
            h += "%s: %s\r\n" % (k, v)
        s.sendall(h.encode() + b"\r\n" + data)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
            if stream and b"\r\n\r\n" in out:
                break
        if stream:
            head = out.split(b"\r\n", 1)[0]
            status = int(head.split()[1])
            from stele_server import Response
            return Response(status, {}, b"", "%s %s" % (method, path))
        return parse_responses(out)[0]
    finally:
        s.close()


def setup():
    global S
    # The password by environment, as in production (arguments show in ps and
    # in the test's log of each start).
    os.environ["STELE_ADMIN_PASSWORD"] = ADMIN_PW
    S = Server(["--auth-fail-limit", "1000"], name="auth").start()
    # writer may also manage projections and rules (granted by group).
    for u, groups in (("reader", ["readers"]),
                      ("writer", ["writers", "$projection-managers", "$rule-managers"]),
                      ("operator", ["$ops"])):
        r = call(S.port, "PUT", "/users/" + u, {"password": PW[u], "groups": groups,
                                               "fullName": u.title()}, user="admin")
        assert r.status == 201, r
    for st in ("acl-open", "acl-locked", "acl-nodelete"):
        r = call(S.port, "POST", "/streams/" + st, [{"type": "t", "data": {"x": 1}}], user="admin")
        assert r.status == 201, r
    r = call(S.port, "PUT", "/streams/acl-locked/metadata",
             {"$acl": {"$r": ["readers", "$ops"], "$w": "writer", "$d": "$admins",
                       "$mr": "$admins", "$mw": "$admins"}}, user="admin")
    assert r.status in (200, 201), r
    r = call(S.port, "PUT", "/streams/acl-nodelete/metadata", {"$acl": {"$d": "$admins"}},
             user="admin")
    assert r.status in (200, 201), r


def teardown():
    stop_servers([S])


# ------------------------------------------------------------ the matrix

A, R, W, O, D = "anonymous", "reader", "writer", "operator", "admin"
WHO = [A, R, W, O, D]
# (method, path, body, set of principals allowed); anonymous is refused
# with 401 everywhere except the health checks, everyone else not allowed
# gets 403.
ANY_USER = {R, W, O, D}
EV = [{"type": "t", "data": {}}]
MATRIX = [
    ("GET", "/health/live", None, {A, R, W, O, D}),
    ("GET", "/health/ready", None, {A, R, W, O, D}),
    ("GET", "/metrics", None, ANY_USER),
    ("GET", "/info", None, ANY_USER),
    ("GET", "/streams/acl-open", None, ANY_USER),
    ("POST", "/streams/acl-open", EV, ANY_USER),
    ("GET", "/streams/acl-open/head", None, ANY_USER),
    ("GET", "/streams/acl-locked", None, {R, O, D}),
    ("GET", "/streams/acl-locked/head", None, {R, O, D}),
    ("POST", "/streams/acl-locked", EV, {W, D}),
    ("GET", "/streams/acl-locked/metadata", None, {D}),
    ("PUT", "/streams/acl-locked/metadata",
     {"$acl": {"$r": ["readers", "$ops"], "$w": "writer", "$d": "$admins", "$mr": "$admins",
               "$mw": "$admins"}}, {D}),
    ("GET", "/streams/acl-open/metadata", None, ANY_USER),
    ("GET", "/streams/%24users", None, {D}),
    ("GET", "/all", None, ANY_USER),  # filtered for users without $ops: all_filtered
    # Reads across streams: any user, filtered per stream (filtered_reads).
    ("GET", "/categories/acl", None, ANY_USER),
    ("GET", "/types/t", None, ANY_USER),
    ("GET", "/tags/x", None, ANY_USER),
    ("GET", "/correlations/c", None, ANY_USER),
    ("GET", "/actors/a", None, ANY_USER),
    ("POST", "/query", {"query": [{"types": ["t"]}]}, ANY_USER),
    ("GET", "/streams/%24ce-acl", None, ANY_USER),
    # HEAD is checked as GET: the same answer for every user (the route's
    # 405), never a 403 from the view's own ACL.
    ("HEAD", "/streams/%24ce-acl", None, ANY_USER),
    ("HEAD", "/streams/acl-locked", None, {R, O, D}),
    # $all consumer groups: $r on $all ($ops, $admins; all_acl_by_policy).
    ("GET", "/subscriptions/%24all", None, {O, D}),
    ("GET", "/subscriptions/%24all/g-none", None, {O, D}),
    ("GET", "/streams", None, ANY_USER),  # filtered per stream (name_list_filtered)
    ("GET", "/chain/head", None, ANY_USER),  # the hash chain's head: no event data
    ("GET", "/chain/proof?position=0", None, {O, D}),  # events of any stream: $r on $all
    ("GET", "/chain/export?from=0&to=1", None, {O, D}),
    ("GET", "/categories", None, {O, D}),
    ("GET", "/types", None, {O, D}),
    ("GET", "/streams/%24et-t", None, ANY_USER),
    ("GET", "/streams/%24streams", None, ANY_USER),
    ("GET", "/streams/%24ce-acl/metadata", None, {D}),
    ("POST", "/streams/%24ce-acl", EV, {D}),
    # Multi-stream appends: $w on each stream (multi_stream_appends); a
    # condition reads every stream: $ops.
    ("POST", "/streams", {"streams": []}, ANY_USER),  # 400 for all who pass
    ("POST", "/streams", {"streams": [{"stream": "acl-open", "events": EV},
                                      {"stream": "acl-locked", "events": EV}]}, {W, D}),
    ("POST", "/streams", {"streams": [{"stream": "acl-open", "events": EV}],
                          "condition": {"failIfEventsMatch": [{"types": ["none"]}]}}, {O, D}),
    ("GET", "/subscribe/streams/acl-locked", "SSE", {R, O, D}),
    ("GET", "/subscribe/streams/%24ce-acl", "SSE", ANY_USER),
    ("GET", "/subscribe/all", "SSE", ANY_USER),
    ("GET", "/subscriptions", None, ANY_USER),
    ("PUT", "/subscriptions/acl-open/g-%s", {}, {O, D}),
    ("POST", "/admin/scavenge", None, {O, D}),
    ("GET", "/users", None, {D}),
    ("GET", "/users/reader", None, {R, D}),
    ("PUT", "/users/new-%s", {"password": "pw-new-1"}, {D}),
    ("GET", "/api-keys", None, {D}),
    ("GET", "/policies", None, {D}),
    ("GET", "/projections", None, ANY_USER),
    ("POST", "/projections/p-%s", b"fromAll().when({})", {W, D}),
    ("GET", "/rules", None, {W, D}),
]


@T.case
def acl_matrix():
    bad = []
    for method, path, body, allowed in MATRIX:
        for who in WHO:
            p = path % who if "%s" in path else path
            kw = {} if who == A else {"user": who}
            stream = body == "SSE" or method == "HEAD"  # the head only
            b = None if body == "SSE" else body
            r = call(S.port, method, p, b, stream=stream, **kw)
            if who in allowed:
                ok = r.status not in (401, 403)
                want = "allowed"
            elif who == A:
                ok = r.status == 401
                want = "401"
            else:
                ok = r.status == 403
                want = "403"
            if not ok:
                bad.append("%s %s as %s: want %s, got %r" % (method, p, who, want, r))
    T.check(not bad, "every endpoint x principal as in MATRIX", None, "no mismatch",
            "\n    ".join(bad))


@T.case
def name_list_filtered():
    """GET /streams by a user without $ops lists only the streams it may
    read; $ops and $admins see all of them."""
    def names(who):
        r = call(S.port, "GET", "/streams?limit=10000", user=who)
        T.check(r.status == 200, "GET /streams as " + who, None, 200, r)
        return {x["name"] for x in r.body["streams"]}
    for who, sees_locked in (("reader", True), ("writer", False), ("operator", True),
                             ("admin", True)):
        got = names(who)
        T.check("acl-open" in got and ("acl-locked" in got) == sees_locked,
                "the names %s may read" % who, None,
                "acl-open%s" % (" and acl-locked" if sees_locked else ", not acl-locked"),
                sorted(got))


@T.case
def denial_shapes_and_audit():
    r = call(S.port, "GET", "/streams/acl-locked", user="writer")
    T.check(r.status == 403 and r.code() == "ACCESS_DENIED", "403 ACCESS_DENIED", None, 403, r)
    r = call(S.port, "GET", "/streams/acl-open")
    T.check(r.status == 401 and r.code() == "UNAUTHENTICATED", "401 UNAUTHENTICATED", None,
            401, r)
    T.check("Basic" in r.headers.get("www-authenticate", ""), "WWW-Authenticate: Basic", None,
            "Basic realm", r.headers)
    # the web UI's requests (X-Requested-With): the same 401, no browser prompt
    r = call(S.port, "GET", "/streams/acl-open", headers={"X-Requested-With": "stele-ui"})
    T.check(r.status == 401 and r.code() == "UNAUTHENTICATED" and
            "www-authenticate" not in {k.lower() for k in r.headers},
            "401 without WWW-Authenticate for X-Requested-With", None, 401, r.headers)
    # the UI's own files (no data) load without a login; POST to them does not
    for p in ("/", "/ui/app.js"):
        r = call(S.port, "GET", p)
        T.check(r.status == 200, "GET %s without a login" % p, None, 200, r)
    r = call(S.port, "POST", "/", body={})
    T.check(r.status == 401, "POST / without a login", None, 401, r)
    log = open(S.log_path, "rb").read().decode(errors="replace")
    T.check(re.search(r'msg=audit user="writer" .*action="GET /streams/acl-locked" '
                      r'result=denied', log) is not None, "an audit line for the denial")
    T.check(re.search(r'msg=audit user="admin" .*action="create user" result=ok', log)
            is not None, "an audit line for an admin action")


# ------------------------------------------------------------ users, keys

@T.case
def user_lifecycle():
    r = call(S.port, "PUT", "/users/carol", {"password": "carol-pw-1", "groups": ["readers"]},
             user="admin")
    T.check(r.status == 201, "created", None, 201, r)
    r = call(S.port, "PUT", "/users/carol", {"password": "x"}, user="admin")
    T.check(r.status == 409, "duplicate", None, 409, r)
    for bad in ({"password": ""}, {"password": 5}, {"password": "p", "groups": "x"},
                {"password": "p", "groups": ["a b"]}):
        r = call(S.port, "PUT", "/users/dave", bad, user="admin")
        T.check(r.status == 400, "bad create %r" % (bad,), None, 400, r)
    r = call(S.port, "PUT", "/users/bad%20name", {"password": "p"}, user="admin")
    T.check(r.status == 400, "bad name", None, 400, r)
    T.check(call(S.port, "GET", "/streams/acl-locked", user="carol",
                 password="carol-pw-1").status == 200, "carol reads via group readers")
    r = call(S.port, "POST", "/users/carol/disable", user="admin")
    T.check(r.status == 200 and r.body["disabled"] is True, "disabled", None, 200, r)
    T.check(call(S.port, "GET", "/streams/acl-open", user="carol", password="carol-pw-1")
            .status == 401, "a disabled user is refused (even though cached)")
    call(S.port, "POST", "/users/carol/enable", user="admin")
    T.check(call(S.port, "GET", "/streams/acl-open", user="carol", password="carol-pw-1")
            .status == 200, "enabled again")
    r = call(S.port, "POST", "/users/carol/password",
             {"currentPassword": "wrong", "newPassword": "carol-pw-2"}, user="carol",
             password="carol-pw-1")
    T.check(r.status == 401, "change with a wrong current password", None, 401, r)
    r = call(S.port, "POST", "/users/carol/password",
             {"currentPassword": "carol-pw-1", "newPassword": "carol-pw-2"}, user="carol",
             password="carol-pw-1")
    T.check(r.status == 200, "changed", None, 200, r)
    T.check(call(S.port, "GET", "/streams/acl-open", user="carol", password="carol-pw-1")
            .status == 401, "the old password stops at once (cache invalidated)")
    T.check(call(S.port, "GET", "/streams/acl-open", user="carol", password="carol-pw-2")
            .status == 200, "the new one works")
    r = call(S.port, "POST", "/users/reader/password",
             {"currentPassword": PW["reader"], "newPassword": "z"}, user="carol",
             password="carol-pw-2")
    T.check(r.status == 403, "someone else's password", None, 403, r)
    r = call(S.port, "POST", "/users/carol/reset-password", {"newPassword": "carol-pw-3"},
             user="admin")
    T.check(r.status == 200, "reset by an admin", None, 200, r)
    T.check(call(S.port, "GET", "/streams/acl-open", user="carol", password="carol-pw-3")
            .status == 200, "reset password works")
    r = call(S.port, "GET", "/users/carol", user="carol", password="carol-pw-3")
    T.check(r.status == 200 and "hash" not in r.body and "password" not in r.body,
            "details without secrets", None, "no hash", r)
    r = call(S.port, "DELETE", "/users/carol", user="admin")
    T.check(r.status == 204, "deleted", None, 204, r)
    T.check(call(S.port, "GET", "/streams/acl-open", user="carol", password="carol-pw-3")
            .status == 401, "a deleted user is refused")
    T.check(call(S.port, "GET", "/users/carol", user="admin").status == 404, "gone")


@T.case
def api_keys():
    r = call(S.port, "POST", "/api-keys", {"loginName": "writer", "name": "ci"}, user="admin")
    T.check(r.status == 201 and r.body["token"].startswith("stele_"), "created", None, 201, r)
    tok, kid = r.body["token"], r.body["id"]
    KEY_TOKENS.append(tok)
    bearer = {"Authorization": "Bearer " + tok}
    r = call(S.port, "POST", "/streams/acl-locked", EV, headers=bearer)
    T.check(r.status == 201, "the key acts as writer", None, 201, r)
    r = call(S.port, "GET", "/streams/acl-locked", headers=bearer)
    T.check(r.status == 403, "... with writer's rights only", None, 403, r)
    r = call(S.port, "GET", "/api-keys", user="admin")
    T.check(r.status == 200 and tok not in json.dumps(r.body) and
            any(k["id"] == kid for k in r.body), "listed without the secret", None, kid, r)
    for t in (tok[:-1] + ("0" if tok[-1] != "0" else "1"), "stele_" + kid, "stele_nokey_abc",
              tok + "x"):
        r = call(S.port, "GET", "/streams/acl-open", headers={"Authorization": "Bearer " + t})
        T.check(r.status == 401, "a wrong key %r" % t[:20], None, 401, r)
    r = call(S.port, "DELETE", "/api-keys/" + kid, user="admin")
    T.check(r.status == 204, "revoked", None, 204, r)
    r = call(S.port, "GET", "/streams/acl-open", headers=bearer)
    T.check(r.status == 401, "a revoked key is refused", None, 401, r)


@T.case
def stream_policies():
    pol = {"streamPolicies": {
               "payroll": {"$r": ["writer", "$ops"], "$w": "writer", "$d": "$admins",
                           "$mr": "$admins", "$mw": "$admins"},
               "open": {"$r": "$all", "$w": "$all", "$d": "$all", "$mr": "$all", "$mw": "$all"},
               "admins": {"$r": "$admins", "$w": "$admins"}},
           "streamRules": [{"startsWith": "Payroll-", "policy": "payroll"}],
           "defaultStreamRules": {"userStreams": "open", "systemStreams": "admins"}}
    r = call(S.port, "PUT", "/policies", pol, user="reader")
    T.check(r.status == 403, "only admins set policies", None, 403, r)
    for bad in ({"streamRules": [{"startsWith": "X-", "policy": "nope"}]},
                {"streamPolicies": {"p": {"$r": 5}}}, {"other": 1}, [1],
                {"streamPolicies": {"p": {"$r": "a"}},
                 "defaultStreamRules": {"userStreams": "missing"}}):
        r = call(S.port, "PUT", "/policies", bad, user="admin")
        T.check(r.status == 400, "bad policies %r" % (bad,), None, 400, r)
    r = call(S.port, "PUT", "/policies", pol, user="admin")
    T.check(r.status == 200, "policies set", None, 200, r)
    T.check(call(S.port, "GET", "/policies", user="admin").body == pol, "read back")
    for st in ("Payroll-1", "Payroll-2"):
        T.check(call(S.port, "POST", "/streams/" + st, EV, user="admin").status == 201, st)
    cases = [("GET", "/streams/Payroll-1", None, "reader", 403),
             ("GET", "/streams/Payroll-1", None, "writer", 200),
             ("GET", "/streams/Payroll-1", None, "operator", 200),
             ("POST", "/streams/Payroll-1", EV, "writer", 201),
             ("POST", "/streams/Payroll-1", EV, "reader", 403),
             ("DELETE", "/streams/Payroll-1", None, "writer", 403),
             ("GET", "/streams/acl-open", None, "reader", 200)]
    for method, path, body, who, want in cases:
        r = call(S.port, method, path, body, user=who)
        T.check(r.status == want, "%s %s as %s under the policy" % (method, path, who), None,
                want, r)
    # A stream's own $acl wins over the policy for what it names.
    call(S.port, "PUT", "/streams/Payroll-2/metadata", {"$acl": {"$r": "readers"}}, user="admin")
    r = call(S.port, "GET", "/streams/Payroll-2", user="reader")
    T.check(r.status == 200, "$acl over the policy", None, 200, r)
    r = call(S.port, "POST", "/streams/Payroll-2", EV, user="reader")
    T.check(r.status == 403, "... and the policy for the rest", None, 403, r)
    r = call(S.port, "PUT", "/policies", {}, user="admin")
    T.check(r.status == 200, "policies cleared", None, 200, r)
    r = call(S.port, "GET", "/streams/Payroll-1", user="reader")
    T.check(r.status == 200, "back to the defaults", None, 200, r)


@T.case
def all_filtered():
    # acl-locked: $r readers and $ops; $users: admins only; acl-open: anyone.
    def streams_seen(who, ndjson=False, q=""):
        h = {"Accept": "application/x-ndjson"} if ndjson else None
        r = call(S.port, "GET", "/all?limit=10000" + q, user=who, headers=h)
        T.check(r.status == 200, "GET /all as %s" % who, None, 200, r)
        if ndjson:
            evs = [json.loads(x) for x in r.body.split(b"\n") if x.strip()]
        else:
            evs = r.body["events"]
        return {e["stream"] for e in evs}
    for nd in (False, True):
        w = streams_seen("writer", nd)
        T.check("acl-open" in w and "acl-locked" not in w and "$users" not in w,
                "writer sees only what it may read (ndjson=%s)" % nd, None, "no acl-locked",
                sorted(w))
        rd = streams_seen("reader", nd)
        T.check("acl-open" in rd and "acl-locked" in rd and "$users" not in rd,
                "reader sees acl-locked (ndjson=%s)" % nd, None, "acl-locked", sorted(rd))
        a = streams_seen("admin", nd)
        T.check({"acl-open", "acl-locked", "$users"} <= a, "admin sees everything", None,
                "all", sorted(a))
    w = streams_seen("writer", False, "&after=2000-01-01T00:00:00Z")
    T.check("acl-locked" not in w and "acl-open" in w, "a $all read by time is filtered too",
            None, "no acl-locked", sorted(w))


@T.case
def all_acl_by_policy():
    # `$all` has no metadata: a stream policy for the name `$all` grants
    # `$r` on it (KurrentDB's $$$all ACL). readers then read every event
    # unfiltered, list categories and types, use `$all` consumer groups,
    # proofs and DCB conditions; writer (not in readers) stays filtered.
    r = call(S.port, "POST", "/streams/hid-1", EV, user="admin")
    T.check(r.status == 201, "hid-1", None, 201, r)
    r = call(S.port, "PUT", "/streams/hid-1/metadata", {"$acl": {"$r": "$admins"}},
             user="admin")
    T.check(r.status in (200, 201), "hid-1's $acl", None, 200, r)
    r = call(S.port, "PUT", "/subscriptions/%24all/g-audit", {}, user="admin")
    T.check(r.status in (200, 201), "an $all consumer group", None, 201, r)
    cond = {"streams": [{"stream": "acl-open", "events": EV}],
            "condition": {"failIfEventsMatch": [{"types": ["none"]}]}}
    checks = [("GET", "/categories", None), ("GET", "/types", None),
              ("GET", "/chain/proof?position=0", None),
              ("GET", "/subscriptions/%24all/g-audit", None),
              ("GET", "/subscriptions/%24all", None), ("POST", "/streams", cond)]

    def seen_in_all(who):
        r = call(S.port, "GET", "/all?limit=10000", user=who)
        return {e["stream"] for e in r.body["events"]} if r.status == 200 else r

    for granted in (False, True):
        if granted:
            r = call(S.port, "PUT", "/policies",
                     {"streamPolicies": {"audit": {"$r": "readers"}},
                      "streamRules": [{"startsWith": "$all", "policy": "audit"}]},
                     user="admin")
            T.check(r.status == 200, "a policy for $all", None, 200, r)
        for method, path, body in checks:
            r = call(S.port, method, path, body, user="reader")
            want = "allowed" if granted else "403"
            ok = r.status not in (401, 403) if granted else r.status == 403
            T.check(ok, "%s %s as reader, $r on $all granted=%s" % (method, path, granted),
                    None, want, r)
            r = call(S.port, method, path, body, user="writer")
            T.check(r.status == 403, "%s %s as writer (granted=%s)" % (method, path, granted),
                    None, 403, r)
        got = seen_in_all("reader")
        T.check(isinstance(got, set) and ("hid-1" in got) == granted and
                ("$users" in got) == granted,
                "GET /all as reader: whole only when granted (%s)" % granted, None,
                "hid-1 and $users" if granted else "neither", got)
        got = sse_streams("/subscribe/streams/%24ce-hid?from=start", "reader")
        T.check(("hid-1" in got) == granted, "a view whole only when granted (%s)" % granted,
                None, granted, sorted(got))
        got = seen_in_all("writer")
        T.check(isinstance(got, set) and "hid-1" not in got, "writer still filtered", None,
                "no hid-1", got)
    r = call(S.port, "PUT", "/policies", {}, user="admin")
    T.check(r.status == 200, "policies cleared", None, 200, r)
    r = call(S.port, "GET", "/categories", user="reader")
    T.check(r.status == 403, "the grant goes with the policy", None, 403, r)


def auth_headers(who):
    tok = base64.b64encode(("%s:%s" % (who, PW[who])).encode()).decode()
    return {"Authorization": "Basic " + tok}


def sse_streams(path, who):
    """The streams of the events an SSE subscription sends `who` up to its
    first caught-up."""
    from stele_server import SSE
    sub = SSE(S.port, path, headers=auth_headers(who))
    seen = set()
    try:
        T.check(sub.status == 200, "SSE %s as %s" % (path, who), None, 200, sub.body)
        while sub.status == 200:
            m = sub.next()
            if m is None or m["event"] == "caught-up":
                break
            if m["event"] == "message":
                seen.add(json.loads(m["data"])["stream"])
    finally:
        sub.close()
    return seen


@T.case
def filtered_reads():
    # acl-locked: $r readers and $ops; acl-other: $r writer only; acl-open
    # and acl-nodelete: anyone. Only the acl-* streams are compared (the
    # other cases leave streams of type t behind). Each gets an event of type t with tag x, correlation c, actor a.
    r = call(S.port, "POST", "/streams/acl-other", EV, user="admin")
    T.check(r.status == 201, "acl-other", None, 201, r)
    r = call(S.port, "PUT", "/streams/acl-other/metadata", {"$acl": {"$r": "writer"}},
             user="admin")
    T.check(r.status in (200, 201), "acl-other's $acl", None, 200, r)
    ev = [{"type": "t", "data": {}, "tags": ["x"],
           "metadata": {"$correlationId": "c", "$actor": "a"}}]
    for st in ("acl-open", "acl-locked", "acl-other", "acl-nodelete"):
        r = call(S.port, "POST", "/streams/" + st, ev, user="admin")
        T.check(r.status == 201, "tagged event in " + st, None, 201, r)
    everyone = {"acl-open", "acl-nodelete"}
    want = {"reader": everyone | {"acl-locked"}, "writer": everyone | {"acl-other"},
            "operator": everyone | {"acl-locked", "acl-other"},
            "admin": everyone | {"acl-locked", "acl-other"}}
    gets = ["/categories/acl", "/types/t", "/tags/x", "/correlations/c", "/actors/a",
            "/streams/%24ce-acl", "/streams/%24et-t", "/streams/%24bc-c",
            "/categories/acl?after=2000-01-01T00:00:00Z"]
    for who, expect in want.items():
        for path in gets:
            for nd in (False, True):
                h = {"Accept": "application/x-ndjson"} if nd else None
                r = call(S.port, "GET", path + ("&" if "?" in path else "?") + "limit=10000",
                         user=who, headers=h)
                if r.status != 200:
                    T.check(False, "GET %s as %s" % (path, who), None, 200, r)
                    continue
                evs = ([json.loads(x) for x in r.body.split(b"\n") if x.strip()] if nd
                       else r.body["events"])
                got = {e["stream"] for e in evs if e["stream"].startswith("acl-")}
                T.check(got == expect, "GET %s as %s (ndjson=%s): only its streams"
                        % (path, who, nd), None, sorted(expect), sorted(got))
        r = call(S.port, "POST", "/query", {"query": [{"types": ["t"], "tags": ["x"]}],
                                           "limit": 10000}, user=who)
        got = ({e["stream"] for e in r.body["events"] if e["stream"].startswith("acl-")}
               if r.status == 200 else r)
        T.check(got == expect, "POST /query as %s: only its streams" % who, None,
                sorted(expect), got)
        r = call(S.port, "GET", "/streams/%24streams?limit=10000", user=who)
        got = {e["stream"] for e in r.body["events"]} if r.status == 200 else set()
        T.check(r.status == 200 and {x for x in got if x.startswith("acl-")} == expect and
                ("$users" in got) == (who in ("operator", "admin")),
                "GET $streams as %s: only its streams" % who, None, sorted(expect), r)
        for path in ("/subscribe/all?from=start", "/subscribe/streams/%24ce-acl?from=start",
                     "/subscribe/all?from=start&type=t"):
            got = sse_streams(path, who)
            acl = {x for x in got if x.startswith("acl-")}
            T.check(acl == expect, "SSE %s as %s: only its streams" % (path, who), None,
                    sorted(expect), sorted(got))
            if who not in ("operator", "admin"):
                T.check("$users" not in got, "SSE %s as %s: no $users" % (path, who), None,
                        "no $users", sorted(got))
    # A user whom a stream policy lets read a view reads it whole (views
    # have no metadata of their own).
    r = call(S.port, "PUT", "/policies",
             {"streamPolicies": {"view": {"$r": "readers"}},
              "streamRules": [{"startsWith": "$ce-acl", "policy": "view"}]}, user="admin")
    T.check(r.status == 200, "a policy for $ce-acl", None, 200, r)
    r = call(S.port, "GET", "/streams/%24ce-acl?limit=10000", user="reader")
    got = {e["stream"] for e in r.body["events"]} if r.status == 200 else r
    T.check(got == want["admin"], "reader granted $r on $ce-acl reads it whole", None,
            sorted(want["admin"]), got)
    got = sse_streams("/subscribe/streams/%24ce-acl?from=start", "reader")
    T.check(got == want["admin"], "... and subscribes to it whole", None,
            sorted(want["admin"]), sorted(got))
    r = call(S.port, "GET", "/streams/%24ce-acl?limit=10000", user="writer")
    got = {e["stream"] for e in r.body["events"]} if r.status == 200 else r
    T.check(got == want["writer"], "writer still filtered", None, sorted(want["writer"]), got)
    r = call(S.port, "PUT", "/policies", {}, user="admin")
    T.check(r.status == 200, "policies cleared", None, 200, r)


def count(stream):
    r = call(S.port, "GET", "/streams/%s?limit=10000" % stream, user="admin")
    return len(r.body["events"]) if r.status == 200 else 0


@T.case
def multi_stream_appends():
    def multi(who, streams, cond=None):
        body = {"streams": [{"stream": st, "events": [{"type": "m", "data": {"by": who}}]}
                            for st in streams]}
        if cond:
            body["condition"] = cond
        return call(S.port, "POST", "/streams", body, user=who)
    before = {st: count(st) for st in ("acl-open", "acl-locked", "acl-nodelete")}
    r = multi("writer", ["acl-open", "acl-locked"])
    T.check(r.status == 201, "writer appends atomically to two streams it may write", None,
            201, r)
    T.check(count("acl-open") == before["acl-open"] + 1 and
            count("acl-locked") == before["acl-locked"] + 1, "both written")
    before = {st: count(st) for st in ("acl-open", "acl-locked", "$users")}
    for who, streams in (("reader", ["acl-open", "acl-locked"]),
                         ("writer", ["acl-open", "acl-locked", "$users"]),
                         ("operator", ["acl-locked", "acl-open"])):
        r = multi(who, streams)
        T.check(r.status == 403 and r.code() == "ACCESS_DENIED",
                "%s refused when one stream is not writable" % who, None, 403, r)
        T.check(r.status != 403 or "acl-locked" in r.body["error"]["message"] or
                "$users" in r.body["error"]["message"], "the refusal names the stream",
                None, "a stream name", r)
    after = {st: count(st) for st in before}
    T.check(after == before, "nothing written by a refused multi-stream append", None,
            before, after)
    cond = {"failIfEventsMatch": [{"types": ["never-such"]}]}
    r = multi("writer", ["acl-open"], cond)
    T.check(r.status == 403, "a condition needs $ops (it reads every stream)", None, 403, r)
    T.check(count("acl-open") == after["acl-open"], "nothing written")
    r = multi("operator", ["acl-open"], cond)
    T.check(r.status == 201, "$ops may append with a condition", None, 201, r)
    r = multi("admin", ["acl-open", "acl-locked"], cond)
    T.check(r.status == 201, "admin appends anywhere", None, 201, r)
    log = open(S.log_path, "rb").read().decode(errors="replace")
    T.check(re.search(r'msg=audit user="reader" .*action="POST /streams" result=denied', log)
            is not None, "an audit line for a refused multi-stream append")


@T.case
def users_last_updated():
    r = call(S.port, "PUT", "/users/lu-user", {"password": "lu-pw-1"}, user="admin")
    T.check(r.status == 201, "created", None, 201, r)
    first = call(S.port, "GET", "/users/lu-user", user="admin").body
    T.check(first.get("lastUpdated", "").startswith("20") and first["lastUpdatedUs"] > 0,
            "lastUpdated is the creation time", None, "a 20xx time", first)
    r = call(S.port, "POST", "/users/lu-user", {"fullName": "L U"}, user="admin")
    T.check(r.status == 200, "updated", None, 200, r)
    second = call(S.port, "GET", "/users/lu-user", user="admin").body
    T.check(second["lastUpdatedUs"] > first["lastUpdatedUs"], "an update moves lastUpdated",
            None, "> %d" % first["lastUpdatedUs"], second)
    call(S.port, "POST", "/users/lu-user/disable", user="admin")
    third = call(S.port, "GET", "/users/lu-user", user="admin").body
    T.check(third["lastUpdatedUs"] > second["lastUpdatedUs"], "disabling moves it too", None,
            "> %d" % second["lastUpdatedUs"], third)
    call(S.port, "DELETE", "/users/lu-user", user="admin")


# ------------------------------------------------------------ hostile input

@T.case
def garbage_authorization_headers():
    before = call(S.port, "GET", "/streams/acl-open", user="admin").body["events"]
    cases = [
        "Authorization: Basic\r\n",
        "Authorization: Basic \r\n",
        "Authorization: Basic !!!!\r\n",
        "Authorization: Basic %s\r\n" % base64.b64encode(b"nocolon").decode(),
        "Authorization: Basic %s\r\n" % base64.b64encode(b":nouser").decode(),
        "Authorization: Basic %s\r\n" % base64.b64encode(b"admin\x00:x").decode(),
        "Authorization: Basic %s\r\n" % base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Authorization: Basic %s\r\n" % base64.b64encode(b"admin:" + b"p" * 300).decode(),
        "Authorization: Basic %s\r\n" % base64.b64encode(b"u" * 200 + b":p").decode(),
        "Authorization: Basic %s\r\n" % base64.b64encode(("admin:" + ADMIN_PW).encode()).decode()[:-3],
        "Authorization: Bearer\r\n",
        "Authorization: Bearer stele_\r\n",
        "Authorization: Digest username=admin\r\n",
        "Authorization: %s\r\n" % ("A" * 1500),
        ("Authorization: Basic %s\r\nAuthorization: Basic %s\r\n"
         % ((base64.b64encode(("admin:" + ADMIN_PW).encode()).decode(),) * 2)),
    ]
    for h in cases:
        r = call(S.port, "POST", "/streams/acl-open", EV, raw_auth=h)
        T.check(r.status in (400, 401, 431), "refused: %r" % h[:60], None, "401", r)
    after = call(S.port, "GET", "/streams/acl-open", user="admin").body["events"]
    T.check(len(after) == len(before), "nothing was written", None, len(before), len(after))
    T.check(S.alive(), "the server is alive")


@T.case
def brute_force_is_throttled():
    srv = Server([], name="brute").start()
    try:
        # Verified (and cached) before the attack, from the attacker's address.
        T.check(call(srv.port, "GET", "/metrics", user="admin", src="127.0.0.7").status == 200,
                "a good login from 127.0.0.7 first")
        codes = [call(srv.port, "GET", "/streams/x", user="admin", password="guess-%d" % i,
                      src="127.0.0.7").status for i in range(12)]
        T.check(codes[:5] == [401] * 5 and codes[5:] == [429] * 7,
                "5 failures, then throttled", None, "5 x 401, 7 x 429", codes)
        r = call(srv.port, "GET", "/streams/x", user="admin", password="guess", src="127.0.0.7")
        T.check(int(r.headers.get("retry-after", "0")) > 0, "Retry-After", None, "> 0", r.headers)
        # Even the right password needs a check, which a throttled address
        # does not get, unless it was verified lately (the cache).
        r = call(srv.port, "GET", "/metrics", user="admin", src="127.0.0.7")
        T.check(r.status == 200, "cached credentials still pass from 127.0.0.7", None, 200, r)
        r = call(srv.port, "PUT", "/users/zed", {"password": "zed-pw"}, user="admin")
        T.check(r.status == 201, "another address is served", None, 201, r)
        r = call(srv.port, "GET", "/metrics", user="zed", password="zed-pw", src="127.0.0.7")
        T.check(r.status == 429, "an unverified login from the throttled address waits", None,
                429, r)
        m = call(srv.port, "GET", "/metrics", user="admin").body.decode()
        failed = int(re.search(r'stele_auth_total\{result="failed"\} (\d+)', m).group(1))
        thr = int(re.search(r'stele_auth_total\{result="throttled"\} (\d+)', m).group(1))
        T.check(failed == 5 and thr >= 8, "counted", None, "failed 5, throttled >= 8",
                (failed, thr))
        log = open(srv.log_path, "rb").read().decode(errors="replace")
        T.check(log.count("result=throttled") >= 8 and log.count("result=unauthenticated") >= 5,
                "audit lines for every refusal")
        T.check("guess-" not in log, "no password in the log")
    finally:
        T.check(srv.stop() == 0, "exits 0")
        srv.cleanup()


@T.case
def open_server_first_user_same_connection():
    """Without users the gate lets every request through as the open
    superuser, and a connection keeps that principal between requests
    (access.c's fast path): once the first user exists, the same
    keep-alive connection must authenticate like any other."""
    import http.client
    import time
    saved = os.environ.pop("STELE_ADMIN_PASSWORD", None)
    try:
        srv = Server([], name="open-first").start()
    finally:
        if saved is not None:
            os.environ["STELE_ADMIN_PASSWORD"] = saved
    try:
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=30)

        def req(method, path, body=None, user=None, password=None):
            h = {"Content-Type": "application/json"}
            if user:
                h["Authorization"] = "Basic " + base64.b64encode(
                    ("%s:%s" % (user, password)).encode()).decode()
            conn.request(method, path, None if body is None else json.dumps(body), h)
            r = conn.getresponse()
            return r.status, r.read()

        st, _ = req("POST", "/streams/open-first", [{"type": "t", "data": {"n": 1}}])
        T.check(st == 201, "open: an append without credentials", None, 201, st)
        st, _ = req("PUT", "/users/first", {"password": "first-pw-1", "groups": ["$admins"]})
        T.check(st == 201, "open: the first user created", None, 201, st)
        # Authentication turns on when the server's tick reads the new
        # user (about a second): poll on the same connection, no timing
        # assertion beyond a generous bound.
        st = 201
        for i in range(300):
            st, _ = req("POST", "/streams/open-first", [{"type": "t", "data": {"n": 2 + i}}])
            if st == 401:
                break
            time.sleep(0.05)
        T.check(st == 401, "the same connection must now authenticate", None, 401, st)
        st, _ = req("GET", "/streams/open-first")
        T.check(st == 401, "a read without credentials too", None, 401, st)
        st, body = req("GET", "/streams/open-first", user="first", password="first-pw-1")
        T.check(st == 200, "with credentials", None, 200, st)
        st, _ = req("GET", "/streams/open-first", user="first", password="wrong-pw")
        T.check(st == 401, "a wrong password on the same connection", None, 401, st)
        conn.close()
    finally:
        T.check(srv.stop() == 0, "exits 0")
        srv.cleanup()


# ------------------------------------------------------------ persistence, secrets

def data_regions(path, chunk=16 << 20):
    """The bytes of a file's allocated regions (LMDB files are sparse and
    large), in chunks overlapping by 1 KiB."""
    with open(path, "rb") as f:
        fd = f.fileno()
        end = os.fstat(fd).st_size
        off = 0
        while off < end:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
                stop = os.lseek(fd, start, os.SEEK_HOLE)
            except OSError:
                return
            pos = start
            while pos < stop:
                os.lseek(fd, max(start, pos - 1024), os.SEEK_SET)
                yield os.read(fd, min(chunk, stop - pos) + 1024)
                pos += chunk
            off = stop


@T.case
def users_persist_and_no_secrets_stored():
    T.check(S.stop() == 0, "stops cleanly")
    S.start()
    r = call(S.port, "GET", "/streams/acl-locked", user="reader")
    T.check(r.status == 200, "a user created before the restart logs in", None, 200, r)
    r = call(S.port, "GET", "/streams/acl-locked", user="writer")
    T.check(r.status == 403, "ACLs survive the restart", None, 403, r)
    secrets = [p.encode() for p in PW.values()] + [b"carol-pw-1", b"carol-pw-2", b"carol-pw-3"]
    secrets += [t.split("_")[-1].encode() for t in KEY_TOKENS]
    found = []
    for root, _, files in os.walk(S.data_dir):
        for f in files:
            for data in data_regions(os.path.join(root, f)):
                found += ["%s in %s" % (s[:6], f) for s in secrets if s in data]
    log = open(S.log_path, "rb").read()
    found += ["%s in the log" % s[:6] for s in secrets if s in log]
    T.check(not found, "no password or key secret in the store or the log", None, "none", found)


@T.case
def non_loopback_needs_tls_and_users():
    d = tempfile.mkdtemp(prefix="stele-auth-bind-")
    try:
        env = {k: v for k, v in os.environ.items() if k != "STELE_ADMIN_PASSWORD"}
        out = subprocess.run([STELE_BIN, "serve", "--port", "0", "--host", "0.0.0.0", "--data",
                              os.path.join(d, "data")], capture_output=True, text=True,
                             timeout=60, env=env)
        T.check(out.returncode != 0 and "--insecure" in out.stderr,
                "0.0.0.0 without TLS and users refuses", None, "exit != 0", out.stderr[-300:])
        out = subprocess.run([STELE_BIN, "serve", "--port", "0", "--host", "0.0.0.0", "--data",
                              os.path.join(d, "data2"), "--admin-password", "x"],
                             capture_output=True, text=True, timeout=60, env=env)
        T.check(out.returncode != 0 and "TLS" in out.stderr,
                "0.0.0.0 with users but no TLS refuses", None, "exit != 0", out.stderr[-300:])
        srv = Server(["--host", "0.0.0.0", "--insecure"], name="insecure").start()
        try:
            T.check(call(srv.port, "GET", "/health/live").status == 200, "--insecure starts")
        finally:
            srv.stop()
            srv.cleanup()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@T.case
def cli_user_and_api_key_commands():
    base = {k: v for k, v in os.environ.items()
            if k not in ("STELE_USER", "STELE_PASSWORD", "STELE_API_KEY")}
    base["STELE_SERVER"] = "http://127.0.0.1:%d" % S.port

    def cli(args, **env):
        return subprocess.run([STELE_BIN] + args, capture_output=True, text=True, timeout=60,
                              env=dict(base, **env))
    admin = {"STELE_USER": "admin", "STELE_PASSWORD": ADMIN_PW}
    out = cli(["user", "create", "erin", "--group", "readers", "--full-name", "Erin E"],
              STELE_NEW_PASSWORD="erin-pw-1", **admin)
    T.check(out.returncode == 0 and '"erin"' in out.stdout, "stele user create", None, 0,
            (out.returncode, out.stdout, out.stderr))
    out = cli(["user", "list"], **admin)
    T.check(out.returncode == 0 and '"erin"' in out.stdout and "erin-pw-1" not in out.stdout,
            "stele user list", None, 0, (out.returncode, out.stdout, out.stderr))
    out = cli(["user", "list"], STELE_USER="erin", STELE_PASSWORD="erin-pw-1")
    T.check(out.returncode == 1 and "ACCESS_DENIED" in out.stderr, "not an admin", None, 1,
            (out.returncode, out.stderr))
    out = cli(["user", "list"])
    T.check(out.returncode == 1 and "UNAUTHENTICATED" in out.stderr, "no credentials", None, 1,
            (out.returncode, out.stderr))
    out = cli(["user", "create", "fred"], **admin)
    T.check(out.returncode == 2 and "STELE_NEW_PASSWORD" in out.stderr,
            "a password only from the environment", None, 2, (out.returncode, out.stderr))
    out = cli(["api-key", "create", "erin", "--name", "ci"], **admin)
    T.check(out.returncode == 0, "stele api-key create", None, 0, (out.returncode, out.stderr))
    token = json.loads(out.stdout)["token"]
    out = cli(["read", "acl-locked"], STELE_API_KEY=token)
    T.check(out.returncode == 0, "stele read with STELE_API_KEY", None, 0,
            (out.returncode, out.stderr))
    out = cli(["user", "password", "erin"], STELE_USER="erin", STELE_PASSWORD="erin-pw-1",
              STELE_NEW_PASSWORD="erin-pw-2", STELE_CURRENT_PASSWORD="erin-pw-1")
    T.check(out.returncode == 0, "stele user password", None, 0, (out.returncode, out.stderr))
    out = cli(["user", "delete", "erin"], **admin)
    T.check(out.returncode == 0, "stele user delete", None, 0, (out.returncode, out.stderr))


def check_alive():
    if S and S.proc and not S.alive():
        T.fail("the server died (exit %r); log:\n%s" % (S.proc.poll(), S.log_tail()))


if __name__ == "__main__":
    T.run(setup, teardown, after=check_alive)
