#!/usr/bin/env python3
"""
test_http_api.py - every endpoint of docs/http-api.md and every error case,
against a real `stele serve` (see stele_server.py). Every acknowledged
append is recorded; the last case checks that /all holds exactly those
events, byte for byte, after all the bad requests.
"""
import base64
import json
import os
import re
import sys
from urllib.parse import quote

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import (Client, Ev, Ledger, Server, Suite, body_of, check_servers,  # noqa: E402
                          compare_event, connect, event_json, ndjson_lines, new_id,
                          page_events_raw, parse_responses, recv_all, request, stop_servers)

T = Suite("test_http_api")
L = Ledger()
S = None      # the main server
# Run by run_on_pg.py on a PostgreSQL store (it sets PGW_HOST).
ON_PG = "PGW_HOST" in os.environ
C = None      # a keep-alive client on it
SMALL = None  # a server with small limits


def sp(stream):
    return "/streams/" + quote(stream, safe="")


def append(stream, events, header=None, expected=None, status=201, code=None, record=True):
    """POST events; check the status (and code); record acknowledged ones."""
    headers = {"Stele-Expected-Revision": header} if header is not None else None
    r = C.post(sp(stream), body_of(events, expected), headers)
    T.expect(r, status, code)
    if record and r.status in (200, 201):
        b = r.body
        for k in ("firstRevision", "lastRevision", "firstPosition", "lastPosition", "idempotent"):
            T.check(k in b, "append response lacks %s" % k, r.req, None, r)
        T.check(b["lastRevision"] - b["firstRevision"] + 1 == len(events),
                "revisions do not cover the events", r.req, "%d events" % len(events), r)
        T.check(b["idempotent"] is (r.status == 200), "idempotent flag vs status", r.req,
                None, r)
        T.problems(L.record(stream, events, b), "ledger (%s)" % r.req)
    return r


def post_raw(stream, body, status, code, headers=None):
    r = C.post(sp(stream), body, headers)
    T.expect(r, status, code)
    return r


def read_pages(path, max_pages=100000):
    """Follow `next` from `path`; returns (raw events, pages)."""
    out = []
    pages = 0
    while path:
        r = C.get(path)
        T.expect(r, 200, what="page %d of a paginated read" % pages)
        T.check(r.headers.get("content-type", "").startswith("application/json"),
                "page content type", r.req, "application/json", r.headers)
        out.extend(page_events_raw(r.raw))
        path = r.body.get("next")
        pages += 1
        T.check(pages <= max_pages, "pagination does not end", r.req, "<= %d pages" % max_pages,
                pages)
    return out, pages


def ndjson(path):
    r = C.get(path, {"Accept": "application/x-ndjson"})
    T.expect(r, 200)
    T.check(r.headers.get("content-type", "").startswith("application/x-ndjson"),
            "NDJSON content type", r.req, "application/x-ndjson", r.headers)
    lines = ndjson_lines(r.raw)
    for ln in lines:
        try:
            json.loads(ln)
        except ValueError:
            T.fail("NDJSON line is not JSON", r.req, "JSON", ln)
    return lines


def setup():
    global S, C, SMALL
    S = Server(name="main").start()
    C = Client(S.port)
    SMALL = Server(["--max-body", "8192", "--max-event-size", "1024"], name="small").start()


def after_case():
    def reconnect(srv):
        global C
        if srv is S:
            C.close()
            C = Client(S.port)
    check_servers(T, [S, SMALL], reconnect)


def teardown():
    stop_servers([S, SMALL], client=C)


# ====================================================================== cases

@T.case
def health_and_info():
    r = C.get("/health/live")
    T.check(T.expect(r, 200) == {"status": "live"}, "live body", r.req, {"status": "live"}, r)
    T.check(r.headers.get("content-type", "").startswith("application/json"), "content type",
            r.req, "application/json", r.headers)
    r = C.get("/health/ready")
    T.check(T.expect(r, 200) == {"status": "ready"}, "ready body", r.req, {"status": "ready"}, r)
    r = C.get("/info")
    b = T.expect(r, 200)
    T.check(isinstance(b.get("version"), str) and b["version"], "info version", r.req,
            "a version string", r)
    st = b.get("store", {})
    T.check(st.get("events") == 0 and st.get("readOnly") is False, "info store of a new store",
            r.req, "events 0, readOnly false", r)
    for k in ("streams", "logBytes", "segments"):
        T.check(isinstance(st.get(k), int), "info store.%s" % k, r.req, "an integer", r)
    T.check(isinstance(b.get("connections"), int) and b["connections"] >= 1, "info connections",
            r.req, ">= 1", r)


@T.case
def append_array_body():
    evs = [Ev("OrderPlaced", data='{"orderId":"1","total":42}'),
           Ev("OrderPaid", data='{"amount":42}', metadata='{"$correlationId":"c-1"}'),
           Ev("OrderShipped")]
    r = append("api-array", evs)
    b = r.body
    T.check(r.headers.get("content-type", "").startswith("application/json"), "content type",
            r.req, "application/json", r.headers)
    T.check((b["firstRevision"], b["lastRevision"], b["firstPosition"], b["lastPosition"],
             b["idempotent"]) == (0, 2, 0, 2, False), "first append of a store", r.req,
            "revisions 0..2 positions 0..2", b)
    r = C.get(sp("api-array"))
    raws = page_events_raw(T.expect(r, 200) and r.raw)
    T.check(len(raws) == 3, "read back", r.req, "3 events", r)
    for k, raw in enumerate(raws):
        d = compare_event(raw, "api-array", k, k, evs[k])
        T.check(not d, "event %d read back differs: %s" % (k, d), r.req, None, raw)
        obj = json.loads(raw)
        T.check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", obj.get("created", "")),
                "created is RFC 3339 UTC with microseconds", r.req, None, obj.get("created"))
        T.check(re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
                         obj.get("id", "")), "server-made id is a UUIDv7", r.req, None,
                obj.get("id"))
    # a single event object per append too
    append("api-array", [Ev("One")])


@T.case
def append_object_body_expected_revision():
    s = "api-object"
    r = append(s, [Ev("A")], expected="no_stream")
    T.check(r.body["firstRevision"] == 0, "no_stream on a new stream", r.req, 0, r)
    r = append(s, [Ev("A")], expected="no_stream", status=409, code="WRONG_EXPECTED_REVISION")
    T.check(r.body["error"].get("currentRevision") == 0, "currentRevision", r.req, 0, r)
    r = append(s, [Ev("B"), Ev("C")], expected=0)
    T.check((r.body["firstRevision"], r.body["lastRevision"]) == (1, 2), "exact expected 0",
            r.req, "1..2", r)
    r = append(s, [Ev("D")], expected=7, status=409, code="WRONG_EXPECTED_REVISION")
    T.check(r.body["error"].get("currentRevision") == 2, "currentRevision", r.req, 2, r)
    r = append(s, [Ev("D")], expected=1, status=409, code="WRONG_EXPECTED_REVISION")
    T.check(r.body["error"].get("currentRevision") == 2, "currentRevision", r.req, 2, r)
    append(s, [Ev("D")], expected="stream_exists")
    append(s, [Ev("E")], expected="any")
    r = append(s, [Ev("F")], expected=4)
    T.check(r.body["firstRevision"] == 5, "exact expected 4", r.req, 5, r)
    # object body without expectedRevision, fields in either order
    r = C.post(sp(s), '{"events":[%s]}' % Ev("G").json())
    T.expect(r, 201)
    T.problems(L.record(s, [Ev("G")], r.body), "ledger")
    ev = Ev("H")
    r = C.post(sp(s), '{"events":[%s],"expectedRevision":6}' % ev.json())
    T.expect(r, 201)
    T.problems(L.record(s, [ev], r.body), "ledger")
    r = append("api-object-new", [Ev("A")], expected="stream_exists", status=409,
               code="WRONG_EXPECTED_REVISION")
    T.check("currentRevision" in r.body["error"] and r.body["error"]["currentRevision"] is None,
            "currentRevision null for a stream without events", r.req, "null", r)
    r = append("api-object-new", [Ev("A")], expected=0, status=409, code="WRONG_EXPECTED_REVISION")
    T.check("currentRevision" in r.body["error"] and r.body["error"]["currentRevision"] is None,
            "currentRevision null for a stream without events", r.req, "null", r)
    r = C.get(sp("api-object-new"))
    T.expect(r, 404, "STREAM_NOT_FOUND", "rejected appends wrote nothing")


@T.case
def append_header_expected_revision():
    s = "api-header"
    append(s, [Ev("A")], header="no_stream")
    r = append(s, [Ev("A")], header="no_stream", status=409, code="WRONG_EXPECTED_REVISION")
    T.check(r.body["error"].get("currentRevision") == 0, "currentRevision", r.req, 0, r)
    r = append(s, [Ev("B")], header="0")
    T.check(r.body["firstRevision"] == 1, "header 0", r.req, 1, r)
    r = append(s, [Ev("B")], header="0", status=409, code="WRONG_EXPECTED_REVISION")
    T.check(r.body["error"].get("currentRevision") == 1, "currentRevision", r.req, 1, r)
    r = append(s, [Ev("B")], header="5", status=409, code="WRONG_EXPECTED_REVISION")
    T.check(r.body["error"].get("currentRevision") == 1, "currentRevision", r.req, 1, r)
    append(s, [Ev("C")], header="stream_exists")
    append(s, [Ev("D")], header="any")
    r = append(s, [Ev("E")], header="3")
    T.check(r.body["firstRevision"] == 4, "header 3", r.req, 4, r)
    # the header name is case-insensitive
    ev = Ev("F")
    r = C.post(sp(s), body_of([ev]), {"stele-expected-revision": "4"})
    T.expect(r, 201)
    T.problems(L.record(s, [ev], r.body), "ledger")
    # header and body agreeing
    r = append(s, [Ev("G")], header="5", expected=5)
    T.check(r.body["firstRevision"] == 6, "header and body agree", r.req, 6, r)
    append(s, [Ev("H")], header="any", expected="any")
    # header and body disagreeing
    append(s, [Ev("X")], header="7", expected=3, status=400, code="INVALID_ARGUMENT")
    append(s, [Ev("X")], header="any", expected="no_stream", status=400, code="INVALID_ARGUMENT")
    # new streams
    r = append("api-header-new", [Ev("A")], header="stream_exists", status=409,
               code="WRONG_EXPECTED_REVISION")
    T.check("currentRevision" in r.body["error"] and r.body["error"]["currentRevision"] is None,
            "currentRevision null", r.req, "null", r)
    r = append("api-header-new", [Ev("A")], header="3", status=409, code="WRONG_EXPECTED_REVISION")
    T.check(r.body["error"].get("currentRevision", "absent") is None, "currentRevision null",
            r.req, "null", r)
    r = C.get(sp(s) + "/head")
    T.check(T.expect(r, 200)["lastRevision"] == 7, "head after header appends", r.req, 7, r)


@T.case
def bad_expected_revision_header():
    for v in ("-1", "abc", "1.5", "NO_STREAM", "Any", "99999999999999999999", "1e3", "0x10",
              "+1", ""):
        r = C.post(sp("api-badhdr"), body_of([Ev("A")]), {"Stele-Expected-Revision": v})
        T.expect(r, 400, "INVALID_ARGUMENT", "bad expected revision %r" % v)
        r = C.delete(sp("api-badhdr"), {"Stele-Expected-Revision": v})
        T.expect(r, 400, "INVALID_ARGUMENT", "bad expected revision %r on DELETE" % v)
    for v in ('"NO_STREAM"', "-1", "1.5", '"5"', "true", "null", "[]", "99999999999999999999"):
        r = C.post(sp("api-badhdr"), '{"expectedRevision":%s,"events":[{"type":"A"}]}' % v)
        T.expect(r, 400, "INVALID_ARGUMENT", "bad body expectedRevision %s" % v)
    r = C.get(sp("api-badhdr"))
    T.expect(r, 404, "STREAM_NOT_FOUND", "nothing was written")


@T.case
def idempotent_retry_and_id_conflict():
    s = "api-idem"
    a, b, c = new_id(), new_id(), new_id()
    append(s, [Ev("First", id_=c)])
    evs = [Ev("A", data='{"n":1}', id_=a), Ev("B", data='{"n":2}', id_=b)]
    r1 = append(s, evs, header="0")
    T.check(r1.status == 201 and r1.body["idempotent"] is False, "first append", r1.req, 201, r1)
    for hdr in (None, "0", "any"):
        r2 = append(s, evs, header=hdr, status=200)
        want = dict(r1.body, idempotent=True)
        T.check(r2.body == want, "retry returns the original result", r2.req, want, r2)
    # upper-case ids are the same UUIDs
    up = [Ev("A", data='{"n":1}', id_=a.upper()), Ev("B", data='{"n":2}', id_=b.upper())]
    r2 = append(s, up, status=200, record=False)
    T.check(r2.body == dict(r1.body, idempotent=True), "upper-case retry", r2.req, r1.body, r2)
    # any other reuse of a written id
    append(s, [Ev("A", id_=a)], status=409, code="ID_CONFLICT")
    append(s, [Ev("B", id_=b), Ev("A", id_=a)], status=409, code="ID_CONFLICT")
    append(s, [Ev("N", id_=new_id()), Ev("A", id_=a)], status=409, code="ID_CONFLICT")
    append(s, evs + [Ev("C", id_=new_id())], status=409, code="ID_CONFLICT")
    # a single-event append repeating the first one's id and event is a
    # retry; the same id with another event is a conflict (issue 19)
    r = append(s, [Ev("First", id_=c)], status=200, record=False)
    T.check((r.body["firstRevision"], r.body["idempotent"]) == (0, True),
            "retry of the first append", r.req, "revision 0, idempotent", r)
    append(s, [Ev("X", id_=c)], status=409, code="ID_CONFLICT")
    append(s, [Ev("X", id_=c), Ev("Y", id_=new_id())], status=409, code="ID_CONFLICT")
    append("api-idem-other", evs, status=409, code="ID_CONFLICT")
    # duplicate ids in one append, the nil UUID, malformed ids
    d = new_id()
    append(s, [Ev("D", id_=d), Ev("D", id_=d)], status=400, code="INVALID_ARGUMENT")
    append(s, [Ev("D", id_="00000000-0000-0000-0000-000000000000")], status=400,
           code="INVALID_ARGUMENT")
    for bad in ("not-a-uuid", "0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7", "", "{%s}" % new_id()):
        append(s, [Ev("D", id_=bad)], status=400, code="INVALID_ARGUMENT")
    r = C.get(sp(s) + "/head")
    T.check(T.expect(r, 200)["lastRevision"] == 2, "conflicts wrote nothing", r.req, 2, r)
    r = C.get(sp("api-idem-other"))
    T.expect(r, 404, "STREAM_NOT_FOUND", "conflicting append to another stream wrote nothing")
    # the retry also works for a stream written since (it is not the last append)
    append(s, [Ev("Later")])
    r2 = append(s, evs, status=200)
    T.check(r2.body == dict(r1.body, idempotent=True), "retry after later appends", r2.req,
            r1.body, r2)


DATA_VALUES = [
    '"a string"',
    '""',
    r'"escapes \" \\ \/ \b \f \n \r \t \u0000 \u00e9 \ud83d\ude00"',
    '"raw UTF-8: é ü 中文 😀"',
    '0', '-0', '42', '-17', '3.25', '-0.0e0', '1E+400', '6.02e23', '1e-7',
    '123456789012345678901234567890123456789',
    'true', 'false', 'null',
    '{}', '[]', '{ }', '[ ]',
    '{"a":1,"b":[1,2,3],"c":{"d":null}}',
    '{ "a" : [ 1 , { "b" : null } ] ,\t"c":"d" ,  "e" :\t{ } }',
    '[ "x" , 1 ,true,  null , [ ] ,{"k" :"v"}]',
    '{"dup":1,"dup":2}',
    '{"nested":' + '[' * 60 + '1' + ']' * 60 + '}',
    '"' + 'x' * 20000 + '"',
]


@T.case
def data_of_every_json_type_round_trips():
    s = "api-data"
    evs = [Ev("T%d" % k, data=d) for k, d in enumerate(DATA_VALUES)]
    evs += [Ev("M%d" % k, data='{"i":%d}' % k, metadata=d) for k, d in enumerate(DATA_VALUES[:12])]
    evs.append(Ev("Typé 😀 ü", data='1'))
    evs.append(Ev("t" * 255, data='2'))
    r = append(s, evs)
    fp = r.body["firstPosition"]
    # JSON page, NDJSON, $all page, $all NDJSON, backwards
    r = C.get(sp(s) + "?limit=1000")
    raws = page_events_raw(T.expect(r, 200) and r.raw)
    lines = ndjson(sp(s))
    r2 = C.get("/all?from=%d&limit=%d" % (fp, len(evs)))
    alls = page_events_raw(T.expect(r2, 200) and r2.raw)
    all_nd = ndjson("/all?from=%d&limit=%d" % (fp, len(evs)))
    r3 = C.get(sp(s) + "?direction=backwards&limit=1000")
    back = list(reversed(page_events_raw(T.expect(r3, 200) and r3.raw)))
    for name, got in (("stream page", raws), ("stream NDJSON", lines), ("$all page", alls),
                      ("$all NDJSON", all_nd), ("stream backwards", back)):
        T.check(len(got) == len(evs), "%s: number of events" % name, None, len(evs), len(got))
        for k, raw in enumerate(got):
            d = compare_event(raw, s, k, fp + k, evs[k])
            T.check(not d, "%s: event %d differs: %s" % (name, k, d), body_of([evs[k]]), None,
                    raw[:400])
    # the same events are returned byte-identically by every kind of read
    T.check(raws == lines == alls == all_nd == back, "reads disagree byte-wise")


@T.case
def json_depth_limit():
    # depth counts the envelope: [ {event} data... ] ; 64 levels at most
    ok = '[' * 62 + ']' * 62
    append("api-depth", [Ev("Deep", data=ok)])
    bad = '[' * 63 + ']' * 63
    post_raw("api-depth", body_of([Ev("Deep", data=bad)]), 400, "INVALID_JSON")


@T.case
def data_base64_round_trips():
    s = "api-b64"
    blob = bytes(range(256)) * 3 + b"\x00\xff\x00"
    evs = [Ev("Bin", data_bytes=blob),
           Ev("Bin", data_bytes=b"\xff", meta_bytes=b"\x00\x01\x02\xc3\x28"),
           Ev("Bin", data_bytes=b"\x80\x81", metadata='{"m": true}'),
           Ev("Bin", data='"json"', meta_bytes=bytes(range(255, -1, -1))),
           Ev("Bin", data_bytes=b"{}"),
           Ev("Bin", data_bytes=b"")]
    append(s, evs)
    # contentType is accepted with dataBase64
    ev = Ev("Bin", data_bytes=b"\x01\x02\x03")
    body = '[{"type":"Bin","dataBase64":"AQID","contentType":"application/octet-stream"}]'
    r = C.post(sp(s), body)
    T.expect(r, 201)
    T.problems(L.record(s, [ev], r.body), "ledger")
    evs.append(ev)
    for path in (sp(s), "/all?from=%d" % r.body["firstPosition"]):
        r = C.get(path)
        raws = page_events_raw(T.expect(r, 200) and r.raw)
        if path == sp(s):
            T.check(len(raws) == len(evs), "count", r.req, len(evs), len(raws))
            for k, raw in enumerate(raws):
                pos = json.loads(raw)["position"]
                d = compare_event(raw, s, k, pos, evs[k])
                T.check(not d, "event %d differs: %s" % (k, d), body_of([evs[k]]), None, raw)
                obj = json.loads(raw)
                if evs[k].data_bytes:
                    T.check(base64.b64decode(obj["dataBase64"]) == evs[k].data_bytes,
                            "decoded bytes", r.req, evs[k].data_bytes, obj)
                    T.check("data" not in obj, "binary data has no 'data'", r.req, None, obj)
    for bad in ('"abc"', '"ab=="', '"AQID "', '"A QID"', '"AQ=D"', '"AQID=="', '"*AQI"', '5',
                'null'):
        post_raw(s, '[{"type":"Bin","dataBase64":%s}]' % bad, 400, "INVALID_ARGUMENT")
        post_raw(s, '[{"type":"Bin","metadataBase64":%s}]' % bad, 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"Bin","data":1,"dataBase64":"AQID"}]', 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"Bin","metadata":1,"metadataBase64":"AQID"}]', 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"Bin","dataBase64":"AQID","contentType":5}]', 400, "INVALID_ARGUMENT")


@T.case
def metadata_and_tags():
    s = "api-tags"
    evs = [Ev("T", metadata='{"$correlationId":"c-1","$actor":"alice"}', tags=["tenant:acme"]),
           Ev("T", tags=["a", "é", "x y", "t" * 255]),
           Ev("T", tags=["t%d" % k for k in range(64)]),
           Ev("T", metadata='[1, 2 ,3]', tags=[]),
           Ev("T", metadata='"just a string"')]
    append(s, evs)
    r = C.get(sp(s))
    raws = page_events_raw(T.expect(r, 200) and r.raw)
    for k, raw in enumerate(raws):
        d = compare_event(raw, s, k, json.loads(raw)["position"], evs[k])
        T.check(not d, "event %d differs: %s" % (k, d), body_of([evs[k]]), None, raw)
    post_raw(s, "[%s]" % event_json("T", tags=["t%d" % k for k in range(65)]), 400,
             "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"T","tags":"tenant:acme"}]', 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"T","tags":[1]}]', 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"T","tags":[""]}]', 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"T","tags":["%s"]}]' % ("t" * 256), 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"T","tags":["a\\u0001"]}]', 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"T","tags":["a\\u0000"]}]', 400, "INVALID_ARGUMENT")
    post_raw(s, '[{"type":"T","tags":{}}]', 400, "INVALID_ARGUMENT")


@T.case
def malformed_and_wrongly_typed_bodies():
    s = "api-bad-body"
    cases = [
        ('[{"type":"A"}', "INVALID_JSON"),
        ('', "INVALID_JSON"),
        ('   ', "INVALID_JSON"),
        ('[{"type":"A"},]', "INVALID_JSON"),
        ('[{"type":"A",}]', "INVALID_JSON"),
        ('[{"type":"A","data":01}]', "INVALID_JSON"),
        ('[{"type":"A","data":NaN}]', "INVALID_JSON"),
        ('[{"type":"A","data":.5}]', "INVALID_JSON"),
        ('[{"type":"A","data":1.}]', "INVALID_JSON"),
        ('[{"type":"A","data":tru}]', "INVALID_JSON"),
        ('[{"type":"A","data":"\\ud800"}]', "INVALID_JSON"),
        ('[{"type":"A","data":"\\x41"}]', "INVALID_JSON"),
        ('[{"type":"A","data":\'x\'}]', "INVALID_JSON"),
        ('[{type:"A"}]', "INVALID_JSON"),
        ('[{"type":"A"}] x', "INVALID_JSON"),
        ('[{"type":"A"}][]', "INVALID_JSON"),
        ('[{"type":"A\x01"}]', "INVALID_JSON"),          # raw control char in a JSON string
        ('[{"type":"A"}]\x00', "INVALID_JSON"),
        (b'[{"type":"\xff"}]', "INVALID_JSON"),          # bad UTF-8 in the body
        (b'[{"type":"A","data":"\xc0\xaf"}]', "INVALID_JSON"),  # overlong
        (b'[{"type":"A","data":"\xed\xa0\x80"}]', "INVALID_JSON"),  # surrogate
        (b'\xef\xbb\xbf[{"type":"A"}]', "INVALID_JSON"),  # BOM
        ('[]', "INVALID_ARGUMENT"),
        ('{"events":[]}', "INVALID_ARGUMENT"),
        ('{}', "INVALID_ARGUMENT"),
        ('{"type":"A"}', "INVALID_ARGUMENT"),
        ('{"events":{"type":"A"}}', "INVALID_ARGUMENT"),
        ('{"events":[{"type":"A"}],"extra":1}', "INVALID_ARGUMENT"),
        ('{"events":[{"type":"A"}],"events":[{"type":"A"}]}', "INVALID_ARGUMENT"),
        ('"events"', "INVALID_ARGUMENT"),
        ('5', "INVALID_ARGUMENT"),
        ('null', "INVALID_ARGUMENT"),
        ('[1]', "INVALID_ARGUMENT"),
        ('[[{"type":"A"}]]', "INVALID_ARGUMENT"),
        ('[{"type":"A"}, "B"]', "INVALID_ARGUMENT"),
        ('[{}]', "INVALID_ARGUMENT"),
        ('[{"data":{"x":1}}]', "INVALID_ARGUMENT"),         # missing type
        ('[{"type":null}]', "INVALID_ARGUMENT"),
        ('[{"type":5}]', "INVALID_ARGUMENT"),
        ('[{"type":["A"]}]', "INVALID_ARGUMENT"),
        ('[{"type":""}]', "INVALID_ARGUMENT"),
        ('[{"type":"%s"}]' % ("t" * 256), "INVALID_ARGUMENT"),
        ('[{"type":"A","tpye":"B"}]', "INVALID_ARGUMENT"),   # unknown field
        ('[{"type":"A","Data":1}]', "INVALID_ARGUMENT"),
        ('[{"type":"A","type":"B"}]', "INVALID_ARGUMENT"),   # duplicate field
        ('[{"type":"A","data":1,"data":2}]', "INVALID_ARGUMENT"),
        ('[{"type":"A","id":5}]', "INVALID_ARGUMENT"),
        ('[{"type":"A\\u0001B"}]', "INVALID_ARGUMENT"),      # control characters in type
        ('[{"type":"A\\u001fB"}]', "INVALID_ARGUMENT"),
        ('[{"type":"A\\u007fB"}]', "INVALID_ARGUMENT"),
        ('[{"type":"A\\u0085B"}]', "INVALID_ARGUMENT"),
        ('[{"type":"A\\nB"}]', "INVALID_ARGUMENT"),
        ('[{"type":"A\\u0000B"}]', "INVALID_ARGUMENT"),
        ('[{"type":"A"},{"type":"B"},{"type":3}]', "INVALID_ARGUMENT"),
    ]
    for body, code in cases:
        r = C.post(sp(s), body)
        T.expect(r, 400, code)
        T.check(set(r.body.keys()) == {"error"} and set(r.body["error"].keys()) == {"code",
                                                                                    "message"},
                "error body shape", r.req, '{"error":{"code","message"}}', r)
    # the same through the header/object paths: the body is checked first
    r = C.post(sp(s), '[{"type":"A"', {"Stele-Expected-Revision": "no_stream"})
    T.expect(r, 400, "INVALID_JSON")
    r = C.get(sp(s))
    T.expect(r, 404, "STREAM_NOT_FOUND", "no bad body wrote anything")


@T.case
def stream_names():
    good = ["api name with spaces", "api+plus", "api/slash", "Ordér-1 中文 😀", "a" * 255,
            "api%percent", "api?q&x=y#frag"]
    for name in good:
        ev = Ev("N", data='{"name":%s}' % json.dumps(name))
        append(name, [ev])
        r = C.get(sp(name))
        raws = page_events_raw(T.expect(r, 200) and r.raw)
        T.check(len(raws) == 1 and json.loads(raws[0])["stream"] == name, "stream name back",
                r.req, name, r)
        r = C.get(sp(name) + "/head")
        T.check(T.expect(r, 200)["stream"] == name, "head stream name", r.req, name, r)
    bad = ["%FF", "api%FFname", "%C0%AF", "%ED%A0%80", "%F4%90%80%80", "api%E2%82",
           "a%00b", "a%01b", "a%7Fb", "a%C2%85b",
           "%ZZ", "a%2", "a%", "%0A", "%C3%A9" * 128]
    for name in bad:
        path = "/streams/" + name
        for method, body in (("POST", '[{"type":"A"}]'), ("GET", None), ("DELETE", None)):
            r = C.request(method, path, body)
            T.expect(r, 400, "INVALID_ARGUMENT", "bad stream name %r" % name)
        r = C.get(path + "/head")
        T.expect(r, 400, "INVALID_ARGUMENT", "bad stream name %r" % name)
    # System streams ('$...') are written only by the store: writes are 400,
    # reads are allowed (404 while the stream does not exist).
    for name in ("%24all", "%24ce-Order", "$reserved"):
        path = "/streams/" + name
        for method, body in (("POST", '[{"type":"A"}]'), ("DELETE", None)):
            r = C.request(method, path, body)
            T.expect(r, 400, "INVALID_ARGUMENT", "write to system stream %r" % name)
        T.expect(C.get(path), 404, "STREAM_NOT_FOUND", "read of system stream %r" % name)
        T.expect(C.get(path + "/head"), 404, "STREAM_NOT_FOUND", "head of system stream %r" % name)
    # a name too long for the server's buffer is still a 400, not a crash
    r = C.get("/streams/" + "b" * 2000)
    T.expect(r, 400, "INVALID_ARGUMENT")


@T.case
def overlong_stream_name_is_rejected_not_truncated():
    # "a"*255 exists (stream_names); "a"*256 is an invalid name for every route
    # and must not be read as the 255-byte stream.
    append("a" * 255 + "-", [Ev("Other")], status=400, code="INVALID_ARGUMENT")
    for name in ("a" * 256, "a" * 300):
        r = C.post(sp(name), '[{"type":"A"}]')
        T.expect(r, 400, "INVALID_ARGUMENT", "append to a %d-byte name" % len(name))
        r = C.get(sp(name) + "/head")
        T.expect(r, 400, "INVALID_ARGUMENT", "head of a %d-byte name" % len(name))
        r = C.get(sp(name))
        T.expect(r, 400, "INVALID_ARGUMENT", "read of a %d-byte name" % len(name))
        r = C.get(sp(name), {"Accept": "application/x-ndjson"})
        T.expect(r, 400, "INVALID_ARGUMENT", "NDJSON read of a %d-byte name" % len(name))


@T.case
def ndjson_framing_with_newlines_in_data():
    # Stored JSON may contain raw CR/LF as whitespace (it is kept byte for
    # byte); an NDJSON read must still be one event per line. Uses the small
    # server so that the main store's NDJSON reads are not affected.
    c = Client(SMALL.port)
    try:
        evs = [Ev("NL", data='{ "a" : [ 1 ,\n { "b" : null } ] ,\r\n\t"c":"d" }'),
               Ev("NL", data='[\n1,\n2\n]', metadata='{\r\n"m":\n1}'),
               Ev("NL", data='\n"x"'.strip())]
        r = c.post("/streams/ndjson-nl", body_of(evs))
        T.expect(r, 201)
        r = c.get("/streams/ndjson-nl")
        raws = page_events_raw(T.expect(r, 200) and r.raw)
        for k, raw in enumerate(raws):
            d = compare_event(raw, "ndjson-nl", k, json.loads(raw)["position"], evs[k])
            T.check(not d, "JSON page: event %d differs: %s" % (k, d), r.req, None, raw)
        for path in ("/streams/ndjson-nl", "/all"):
            r = c.get(path, {"Accept": "application/x-ndjson"})
            T.expect(r, 200)
            lines = ndjson_lines(r.raw)
            T.check(len(lines) == len(evs) if path != "/all" else len(lines) >= len(evs),
                    "NDJSON: one line per event", r.req, "%d lines" % len(evs), r.raw)
            for ln in lines:
                try:
                    json.loads(ln)
                except ValueError:
                    T.fail("NDJSON line is not a JSON event (raw newline of the stored data "
                           "splits the event)", r.req, "one JSON event per line", r.raw)
            got = [json.loads(x) for x in lines if json.loads(x)["stream"] == "ndjson-nl"]
            for k, obj in enumerate(got):
                T.check(obj.get("data") == json.loads(evs[k].data), "NDJSON data value",
                        r.req, evs[k].data, obj)
    finally:
        c.close()


@T.case
def reads_stream_forwards_backwards_from_limit():
    s = "api-read"
    evs = [Ev("R", data='{"k":%d}' % k) for k in range(25)]
    r = append(s, evs)
    fp = r.body["firstPosition"]

    def revs(path, want_next=None):
        r = C.get(path)
        b = T.expect(r, 200)
        got = [e["revision"] for e in b["events"]]
        if want_next is not None:
            T.check(b.get("next") == want_next, "next link", r.req, want_next, b.get("next"))
        return got, b

    got, b = revs(sp(s))
    T.check(got == list(range(25)) and "next" not in b, "default read", sp(s),
            "0..24, no next", b)
    got, _ = revs(sp(s) + "?limit=10", "/streams/api-read?from=10&direction=forwards&limit=10")
    T.check(got == list(range(10)), "limit 10", None, list(range(10)), got)
    got, _ = revs(sp(s) + "?from=start&limit=3")
    T.check(got == [0, 1, 2], "from=start", None, [0, 1, 2], got)
    got, _ = revs(sp(s) + "?from=7&limit=3")
    T.check(got == [7, 8, 9], "from=7", None, [7, 8, 9], got)
    got, _ = revs(sp(s) + "?from=20")
    T.check(got == [20, 21, 22, 23, 24], "from=20 to the end", None, "20..24", got)
    got, b = revs(sp(s) + "?from=end")
    T.check(got == [], "from=end forwards is empty", None, [], b)
    got, b = revs(sp(s) + "?from=25")
    T.check(got == [] and "next" not in b, "past the end", None, [], b)
    got, b = revs(sp(s) + "?from=1000000")
    T.check(got == [], "far past the end", None, [], b)
    got, _ = revs(sp(s) + "?direction=backwards&limit=4",
                  "/streams/api-read?from=20&direction=backwards&limit=4")
    T.check(got == [24, 23, 22, 21], "backwards default from end", None, [24, 23, 22, 21], got)
    got, _ = revs(sp(s) + "?direction=backwards&from=end&limit=2")
    T.check(got == [24, 23], "backwards from=end", None, [24, 23], got)
    got, b = revs(sp(s) + "?direction=backwards&from=3")
    T.check(got == [3, 2, 1, 0] and "next" not in b, "backwards from 3", None, [3, 2, 1, 0], b)
    got, b = revs(sp(s) + "?direction=backwards&from=start")
    T.check(got == [0] and "next" not in b, "backwards from start", None, [0], b)
    got, _ = revs(sp(s) + "?direction=forwards&from=0&limit=1")
    T.check(got == [0], "limit=1", None, [0], got)
    got, _ = revs(sp(s) + "?limit=10000")
    T.check(got == list(range(25)), "limit=10000", None, "0..24", got)
    got, _ = revs(sp(s) + "?limit=5&from=20&direction=forwards")
    T.check(got == list(range(20, 25)), "exact last page", None, "20..24", got)
    # positions in the stream read are those of $all
    r = C.get(sp(s))
    for k, e in enumerate(T.expect(r, 200)["events"]):
        T.check(e["position"] == fp + k, "position of revision %d" % k, r.req, fp + k, e)
    # NDJSON honours from/direction/limit
    lines = ndjson(sp(s) + "?from=5&limit=3")
    T.check([json.loads(x)["revision"] for x in lines] == [5, 6, 7], "NDJSON limit", None,
            [5, 6, 7], lines)
    lines = ndjson(sp(s) + "?direction=backwards")
    T.check([json.loads(x)["revision"] for x in lines] == list(range(24, -1, -1)),
            "NDJSON backwards", None, "24..0", lines)
    lines = ndjson(sp(s) + "?limit=20000")
    T.check(len(lines) == 25, "NDJSON limit over 10000 is allowed", None, 25, len(lines))
    # a stream never written / NDJSON of it
    T.expect(C.get(sp("api-never")), 404, "STREAM_NOT_FOUND")
    T.expect(C.get(sp("api-never"), {"Accept": "application/x-ndjson"}), 404, "STREAM_NOT_FOUND")


@T.case
def bad_query_parameters():
    for base in (sp("api-read"), "/all"):
        for q in ("limit=0", "limit=abc", "limit=-1", "limit=10001", "limit=1.5", "limit=",
                  "limit=1e3", "limit=%205", "from=-1", "from=abc", "from=1e3", "from=+1",
                  "from=18446744073709551616", "from=START", "direction=up",
                  "direction=", "direction=Forwards", "from=%ZZ", "limit=%FF"):
            r = C.get(base + "?" + q)
            T.expect(r, 400, "INVALID_ARGUMENT", "query %s" % q)
        for q in ("limit=0", "limit=abc", "from=-1"):
            r = C.get(base + "?" + q, {"Accept": "application/x-ndjson"})
            T.expect(r, 400, "INVALID_ARGUMENT", "NDJSON query %s" % q)
    for q in ("tombstone=yes", "tombstone=1", "tombstone="):
        r = C.delete(sp("api-read") + "?" + q)
        T.expect(r, 400, "INVALID_ARGUMENT", "delete %s" % q)
    T.expect(C.get(sp("api-read") + "/head"), 200)


@T.case
def pagination_follows_next_to_the_end():
    s = "api-pages"
    evs = [Ev("P", data='{"k":%d,"pad":"%s"}' % (k, "p" * (k % 7))) for k in range(103)]
    append(s, evs[:50])
    append("api-pages-other", [Ev("Noise")])
    append(s, evs[50:])
    single = ndjson(sp(s))
    T.check(len(single) == 103, "NDJSON has every event", None, 103, len(single))
    for limit in (1, 7, 10, 50, 103, 1000):
        got, pages = read_pages(sp(s) + "?limit=%d" % limit)
        T.check(got == single, "paging by %d equals one NDJSON read (byte for byte)" % limit,
                None, "%d events" % len(single), "%d events in %d pages" % (len(got), pages))
        T.check(pages <= 103 // limit + 2, "number of pages", None, "<= %d" % (103 // limit + 2),
                pages)
    back = ndjson(sp(s) + "?direction=backwards")
    T.check(back == list(reversed(single)), "backwards NDJSON is the reverse", None,
            "reverse of forwards", "differs")
    for limit in (1, 9, 103):
        got, _ = read_pages(sp(s) + "?direction=backwards&limit=%d" % limit)
        T.check(got == back, "backwards paging by %d" % limit, None, len(back), len(got))
    # $all
    single = ndjson("/all")
    T.check([json.loads(x)["position"] for x in single] == list(range(len(single))),
            "$all NDJSON positions are gapless from 0", None, "0..n-1", "not")
    for limit in (13, 100, 10000):
        got, _ = read_pages("/all?limit=%d" % limit)
        T.check(got == single, "$all paging by %d equals one NDJSON read" % limit, None,
                len(single), len(got))
    got, _ = read_pages("/all")
    T.check(got == single, "$all paging with the default limit", None, len(single), len(got))
    back = ndjson("/all?direction=backwards")
    T.check(back == list(reversed(single)), "$all backwards NDJSON", None, len(single), len(back))
    got, _ = read_pages("/all?direction=backwards&limit=11")
    T.check(got == back, "$all backwards paging", None, len(back), len(got))
    got, _ = read_pages("/all?direction=backwards&from=end&limit=11")
    T.check(got == back, "$all backwards paging from=end", None, len(back), len(got))
    n = len(single)
    r = C.get("/all?from=%d" % n)
    T.check(T.expect(r, 200)["events"] == [], "$all from the end is empty", r.req, [], r)
    r = C.get("/all?from=end")
    T.check(T.expect(r, 200)["events"] == [], "$all from=end forwards is empty", r.req, [], r)
    r = C.get("/all?from=3&limit=2")
    T.check([e["position"] for e in T.expect(r, 200)["events"]] == [3, 4], "$all from=3",
            r.req, [3, 4], r)
    r = C.get("/all?from=4&direction=backwards&limit=3")
    T.check([e["position"] for e in T.expect(r, 200)["events"]] == [4, 3, 2],
            "$all backwards from=4", r.req, [4, 3, 2], r)
    r = C.get("/all?from=start&direction=backwards")
    T.check([e["position"] for e in T.expect(r, 200)["events"]] == [0],
            "$all backwards from=start", r.req, [0], r)
    # the next link of a stream with an encoded name
    name = "api pages/é+x"
    append(name, [Ev("E") for _ in range(5)])
    got, pages = read_pages(sp(name) + "?limit=2")
    T.check(len(got) == 5 and all(json.loads(x)["stream"] == name for x in got),
            "paging a stream whose name needs encoding", None, 5, len(got))


@T.case
def head():
    s = "api-head"
    r = append(s, [Ev("H"), Ev("H"), Ev("H")])
    lp = r.body["lastPosition"]
    r = C.get(sp(s) + "/head")
    want = {"stream": s, "lastRevision": 2, "lastPosition": lp, "truncateBefore": 0,
            "deleted": False, "tombstoned": False}
    T.check(T.expect(r, 200) == want, "head", r.req, want, r)
    T.expect(C.get(sp("api-head-never") + "/head"), 404, "STREAM_NOT_FOUND")


@T.case
def soft_delete_then_recreate():
    s = "api-del"
    append(s, [Ev("D", data=str(k)) for k in range(3)])
    r = C.delete(sp(s), {"Stele-Expected-Revision": "1"})
    b = T.expect(r, 409, "WRONG_EXPECTED_REVISION")
    T.check(b["error"].get("currentRevision") == 2, "currentRevision", r.req, 2, r)
    r = C.delete(sp(s), {"Stele-Expected-Revision": "2"})
    T.expect(r, 204)
    T.check(r.raw == b"", "204 has no body", r.req, b"", r.raw)
    T.expect(C.get(sp(s)), 404, "STREAM_NOT_FOUND")
    T.expect(C.get(sp(s), {"Accept": "application/x-ndjson"}), 404, "STREAM_NOT_FOUND")
    T.expect(C.get(sp(s) + "?direction=backwards"), 404, "STREAM_NOT_FOUND")
    r = C.get(sp(s) + "/head")
    h = T.expect(r, 200)
    T.check(h.get("deleted") is True and h.get("tombstoned") is False and
            h.get("truncateBefore") == 3, "head of a deleted stream", r.req,
            "deleted, truncateBefore 3", r)
    T.expect(C.delete(sp(s)), 404, "STREAM_NOT_FOUND")
    T.expect(C.delete(sp("api-del-never")), 404, "STREAM_NOT_FOUND")
    append(s, [Ev("X")], header="stream_exists", status=409, code="WRONG_EXPECTED_REVISION")
    r = append(s, [Ev("Again", data='"again"')], header="no_stream")
    T.check(r.body["firstRevision"] == 3, "revisions continue after a soft delete", r.req, 3, r)
    r = C.get(sp(s))
    got = [e["revision"] for e in T.expect(r, 200)["events"]]
    T.check(got == [3], "only the new events are visible", r.req, [3], r)
    r = C.get(sp(s) + "/head")
    h = T.expect(r, 200)
    T.check(h["deleted"] is False and h["lastRevision"] == 3 and h["truncateBefore"] == 3,
            "head after recreate", r.req, "lastRevision 3, not deleted", r)
    # delete again with "any" (default), recreate with the exact last revision
    T.expect(C.delete(sp(s)), 204)
    r = append(s, [Ev("Third")], header="3")
    T.check(r.body["firstRevision"] == 4, "recreate with the exact last revision", r.req, 4, r)
    r = C.get(sp(s) + "?direction=backwards")
    T.check([e["revision"] for e in T.expect(r, 200)["events"]] == [4], "after second delete",
            r.req, [4], r)


@T.case
def tombstone():
    s = "api-tomb"
    append(s, [Ev("T"), Ev("T")])
    r = C.delete(sp(s) + "?tombstone=true", {"Stele-Expected-Revision": "0"})
    b = T.expect(r, 409, "WRONG_EXPECTED_REVISION")
    T.check(b["error"].get("currentRevision") == 1, "currentRevision", r.req, 1, r)
    T.expect(C.delete(sp(s) + "?tombstone=false&x=1", {"Stele-Expected-Revision": "5"}), 409,
             "WRONG_EXPECTED_REVISION")
    r = C.delete(sp(s) + "?tombstone=true", {"Stele-Expected-Revision": "1"})
    T.expect(r, 204)
    T.expect(C.get(sp(s)), 410, "STREAM_DELETED")
    T.expect(C.get(sp(s) + "?direction=backwards&from=end"), 410, "STREAM_DELETED")
    T.expect(C.get(sp(s), {"Accept": "application/x-ndjson"}), 410, "STREAM_DELETED")
    for hdr in (None, "any", "no_stream", "1", "stream_exists"):
        append(s, [Ev("T")], header=hdr, status=410, code="STREAM_DELETED")
    T.expect(C.delete(sp(s)), 410, "STREAM_DELETED")
    T.expect(C.delete(sp(s) + "?tombstone=true"), 410, "STREAM_DELETED")
    T.expect(C.delete(sp(s) + "?tombstone=true", {"Stele-Expected-Revision": "1"}), 410,
             "STREAM_DELETED")
    r = C.get(sp(s) + "/head")
    h = T.expect(r, 200)
    T.check(h.get("tombstoned") is True, "head of a tombstoned stream", r.req, "tombstoned", r)
    # a never-written stream can be tombstoned (reserving the name)
    T.expect(C.delete(sp("api-tomb-never") + "?tombstone=true"), 204)
    append("api-tomb-never", [Ev("T")], status=410, code="STREAM_DELETED")
    T.expect(C.get(sp("api-tomb-never")), 410, "STREAM_DELETED")
    # a soft-deleted stream can be tombstoned
    append("api-tomb-soft", [Ev("T")])
    T.expect(C.delete(sp("api-tomb-soft")), 204)
    T.expect(C.delete(sp("api-tomb-soft") + "?tombstone=true"), 204)
    T.expect(C.get(sp("api-tomb-soft")), 410, "STREAM_DELETED")


@T.case
def unknown_routes_and_wrong_methods():
    # GET / is the web UI and GET /streams the stream listing (docs/ui.md,
    # docs/http-api.md); both are tested in tests/ui
    for method, path in (("GET", "/nope"), ("GET", "/ui"), ("GET", "/ui/nope.js"),
                         ("GET", "/streams/"), ("POST", "/streams/"), ("GET", "/health"),
                         ("GET", "/health/"), ("GET", "/health/live/"), ("GET", "/all/"),
                         ("GET", "/alls"), ("GET", "/info/x"), ("GET", "/streams/x/tail"),
                         ("GET", "/streams/x/head/more"), ("GET", "/streams/x/"),
                         ("GET", "/STREAMS/x"), ("GET", "/metrics/"), ("PUT", "/nope"),
                         ("GET", "/streams/api-read/head/")):
        r = C.request(method, path, "" if method in ("POST", "PUT") else None)
        T.expect(r, 404, "NOT_FOUND", "%s %s" % (method, path))
    for method, path in (("PUT", "/streams/x"), ("PATCH", "/streams/x"), ("POST", "/all"),
                         ("DELETE", "/all"), ("PUT", "/all"), ("POST", "/health/live"),
                         ("DELETE", "/health/ready"), ("POST", "/info"), ("POST", "/metrics"),
                         ("POST", "/streams/x/head"), ("DELETE", "/streams/x/head"),
                         ("OPTIONS", "/streams/x")):
        r = C.request(method, path, "[]" if method in ("POST", "PUT", "PATCH") else None)
        T.expect(r, 405, "METHOD_NOT_ALLOWED", "%s %s" % (method, path))
    T.expect(C.get("/streams/x"), 404, "STREAM_NOT_FOUND", "PUT/PATCH wrote nothing")


def metrics_parse(text):
    """Parse Prometheus text; returns {sample name with labels: value} or
    raises with the offending line."""
    name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
    label_re = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
    line_re = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*,?\})? (\S+)( -?\d+)?$"
                         % (name_re, label_re, label_re))
    samples = {}
    types = {}
    for line in text.split("\n"):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 2 and parts[1] == "TYPE":
                types[parts[2]] = parts[3]
            continue
        m = line_re.match(line)
        if not m:
            raise ValueError("not a Prometheus sample line: %r" % line)
        v = m.group(3)
        if v not in ("+Inf", "-Inf", "NaN"):
            float(v)
        samples[m.group(1) + (m.group(2) or "")] = float(v)
    return samples, types


@T.case
def metrics():
    r = C.get("/metrics")
    T.expect(r, 200)
    T.check(r.headers.get("content-type", "").startswith("text/plain"), "content type", r.req,
            "text/plain", r.headers)
    try:
        m1, types = metrics_parse(r.raw.decode())
    except ValueError as e:
        T.fail(str(e), r.req)
    for name in ("stele_http_requests_total", "stele_appends_total", "stele_reads_total",
                 "stele_connections_total", "stele_store_events"):
        T.check(name in m1, "metric %s present" % name, r.req, name, sorted(m1)[:50])
    for name, kind in types.items():
        T.check(kind in ("counter", "gauge", "histogram", "summary", "untyped"),
                "TYPE of %s" % name, r.req, "a Prometheus type", kind)
    # histograms: cumulative buckets, +Inf == count
    for h in ("stele_append_latency_seconds", "stele_read_latency_seconds"):
        buckets = sorted(((float(k.split('le="')[1].split('"')[0]), v) for k, v in m1.items()
                          if k.startswith(h + "_bucket{")), key=lambda x: x[0])
        T.check(buckets, "histogram %s has buckets" % h, r.req)
        vals = [v for _, v in buckets]
        T.check(vals == sorted(vals), "histogram %s is cumulative" % h, r.req, "monotonic", vals)
        T.check(buckets[-1][0] == float("inf") and buckets[-1][1] == m1.get(h + "_count"),
                "histogram %s: +Inf bucket equals _count" % h, r.req, None, buckets[-1])
    # counters increase after requests
    append("api-metrics", [Ev("M"), Ev("M")])
    T.expect(C.get(sp("api-metrics")), 200)
    T.expect(C.get("/all?limit=1"), 200)
    T.expect(C.get(sp("api-metrics-never")), 404, "STREAM_NOT_FOUND")
    T.expect(C.post(sp("api-metrics"), "[x"), 400, "INVALID_JSON")
    append("api-metrics", [Ev("M")], header="no_stream", status=409,
           code="WRONG_EXPECTED_REVISION")
    request(S.port, "GET", "/health/live")  # a new connection
    r = C.get("/metrics")
    m2, _ = metrics_parse(T.expect(r, 200) and r.raw.decode())

    def grew(name, by=1):
        T.check(m2.get(name, 0) >= m1.get(name, 0) + by, "counter %s increased by >= %d" % (name, by),
                r.req, ">= %s" % (m1.get(name, 0) + by), m2.get(name))
    grew("stele_http_requests_total", 8)
    grew("stele_appends_total", 2)
    grew("stele_append_events_total", 3)
    grew("stele_append_bytes_total", 10)
    grew("stele_reads_total", 3)
    grew("stele_read_events_total", 3)
    grew("stele_connections_total", 1)
    grew('stele_http_errors_total{status="404"}', 1)
    grew('stele_http_errors_total{status="400"}', 1)
    grew('stele_http_errors_total{status="409"}', 1)
    grew("stele_append_latency_seconds_count", 1)
    grew("stele_read_latency_seconds_count", 2)
    grew("stele_store_events", 2)
    for k, v in m1.items():
        if k.endswith("_total") or "_bucket" in k or k.endswith("_count"):
            T.check(m2.get(k, -1) >= v, "counter %s never decreases" % k, r.req, ">= %s" % v,
                    m2.get(k))


def raw_request(port, data, timeout=30):
    """Send raw bytes; returns (responses, how the connection ended)."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        got, how = recv_all(s, timeout)
    finally:
        s.close()
    return parse_responses(got, allow_partial=True), how, got


@T.case
def body_over_max_body_is_413_and_closes():
    port = SMALL.port
    # Content-Length over the limit: refused from the headers, no body sent
    resps, how, got = raw_request(port, b"POST /streams/big HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 100000\r\n\r\n")
    T.check(len(resps) == 1 and resps[0].status == 413 and resps[0].code() == "TOO_LARGE",
            "413 TOO_LARGE from Content-Length", "POST Content-Length: 100000 (max-body 8192)",
            "413 TOO_LARGE", got)
    T.check(how == "eof", "connection closed after 413", None, "eof", how)
    T.check(resps[0].headers.get("connection", "").lower() == "close", "Connection: close",
            None, "close", resps[0].headers)
    # the body sent, one byte over; followed by a pipelined request that must not run
    body = b'[{"type":"Big","data":"' + b"x" * (8193 - 26) + b'"}]'
    assert len(body) == 8193
    req = (b"POST /streams/big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
           + body + b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    resps, how, got = raw_request(port, req)
    T.check(len(resps) == 1 and resps[0].status == 413 and resps[0].code() == "TOO_LARGE",
            "413 for a body one byte over, and nothing after it", "POST 8193-byte body",
            "one 413 TOO_LARGE", got)
    T.check(how == "eof", "connection closed after 413", None, "eof", how)
    # chunked body over the limit
    chunks = b"".join(b"%x\r\n%s\r\n" % (1000, b"y" * 1000) for _ in range(10)) + b"0\r\n\r\n"
    resps, how, got = raw_request(port, b"POST /streams/big HTTP/1.1\r\nHost: x\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    T.check(len(resps) == 1 and resps[0].status == 413 and resps[0].code() == "TOO_LARGE",
            "413 for a chunked body over the limit", "POST chunked 10000 bytes", "413", got)
    T.check(how == "eof", "connection closed after 413", None, "eof", how)
    # exactly at the limit is accepted (an event over --max-event-size is 413 from the store)
    small = Client(port)
    try:
        body = b'[{"type":"Big","data":"' + b"x" * (8192 - 26) + b'"}]'
        r = small.post("/streams/big", body)
        T.expect(r, 413, "TOO_LARGE", "event over --max-event-size 1024")
        ok = b'[{"type":"Ok","data":"' + b"x" * 900 + b'"}]'
        r = small.post("/streams/big", ok)
        T.expect(r, 201, what="event under the limits")
        r = small.get("/streams/big")
        T.check(len(T.expect(r, 200)["events"]) == 1, "only the acknowledged event", r.req, 1, r)
        # a chunked body under the limit is fine
        resps, how, got = raw_request(port, b"POST /streams/big HTTP/1.1\r\nHost: x\r\n"
                                      b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                      b"5\r\n[{\"ty\r\n9\r\npe\":\"C\"}]\r\n0\r\n\r\n")
        T.check(len(resps) == 1 and resps[0].status == 201, "chunked append", None, 201, got)
        T.expect(small.get("/health/live"), 200)
    finally:
        small.close()


@T.case
def headers_over_16k_are_431():
    port = S.port
    pad = b"a" * 17000
    resps, how, got = raw_request(port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad
                                  + b"\r\n\r\n")
    T.check(len(resps) == 1 and resps[0].status == 431 and resps[0].code() == "HEADERS_TOO_LARGE",
            "431 for a 17000-byte header", "GET with X-Pad: 17000 bytes", "431 HEADERS_TOO_LARGE",
            got[:300])
    T.check(how == "eof", "connection closed after 431", None, "eof", how)
    many = b"".join(b"X-H%d: %s\r\n" % (k, b"v" * 100) for k in range(200))
    resps, how, got = raw_request(port, b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + many
                                  + b"\r\n")
    T.check(len(resps) == 1 and resps[0].status == 431, "431 for many headers", None, 431,
            got[:300])
    resps, how, got = raw_request(port, b"GET /" + b"u" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    T.check(len(resps) == 1 and resps[0].status == 431, "431 for a 17000-byte URL", None, 431,
            got[:300])
    # under the limit is fine
    resps, how, got = raw_request(port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: "
                                  + b"a" * 15000 + b"\r\nConnection: close\r\n\r\n")
    T.check(len(resps) == 1 and resps[0].status == 200, "15000-byte header is fine", None, 200,
            got[:300])
    T.expect(C.get("/health/live"), 200)


@T.case
def malformed_http():
    for data in (b"GARBAGE\r\n\r\n", b"GET /health/live HTTP/1.1\r\nBad Header\r\n\r\n",
                 b"POST /streams/x HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                 b"POST /streams/x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                 b"POST /streams/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        resps, how, got = raw_request(S.port, data)
        T.check(len(resps) == 1 and resps[0].status == 400 and resps[0].code() == "BAD_REQUEST",
                "malformed HTTP is 400 BAD_REQUEST", data, "400 BAD_REQUEST", got)
        T.check(how == "eof", "connection closed after a malformed request", data, "eof", how)
    T.expect(C.get(sp("x")), 404, "STREAM_NOT_FOUND", "malformed requests wrote nothing")


@T.case
def keep_alive_and_connection_close():
    s = connect(S.port)
    try:
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while got.count(b"\r\n\r\n") < 1 or not got.endswith(b"}\n"):
            got += s.recv(4096)
        s.sendall(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest, how = recv_all(s)
        resps = parse_responses(got + rest)
        T.check([r.status for r in resps] == [200, 200] and how == "eof",
                "keep-alive then Connection: close", None, "two 200 then close", got + rest)
        T.check(resps[1].headers.get("connection", "").lower() == "close",
                "Connection: close echoed", None, "close", resps[1].headers)
    finally:
        s.close()
    # HTTP/1.0 closes by default
    resps, how, got = raw_request(S.port, b"GET /health/live HTTP/1.0\r\n\r\n")
    T.check(len(resps) == 1 and resps[0].status == 200 and how == "eof", "HTTP/1.0 closes",
            None, "200 and close", got)


@T.case
def head_request_has_no_body():
    # RFC 9110 9.3.2: a response to HEAD has no content. The 405 for HEAD must
    # not carry a body, or a keep-alive client reads it as the next response.
    s = connect(S.port)
    try:
        s.sendall(b"HEAD /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got, how = recv_all(s)
    finally:
        s.close()
    end = got.find(b"\r\n\r\n")
    T.check(end > 0 and got.startswith(b"HTTP/1.1 405 "), "405 for HEAD",
            "HEAD /health/live", "405", got)
    rest = got[end + 4:]
    T.check(rest.startswith(b"HTTP/1.1 200 "),
            "the response to HEAD carries a body (the next response must follow the head)",
            "HEAD /health/live then GET /health/live on one connection",
            "405 head only, then 'HTTP/1.1 200 ...'", got)


@T.case
def store_has_exactly_the_acknowledged_events():
    T.expect(C.get("/health/live"), 200)
    T.expect(C.get("/health/ready"), 200)
    T.problems(L.verify(S.port), "/all vs acknowledged appends")
    r = C.get("/info")
    n = T.expect(r, 200)["store"]["events"]
    T.check(n == len(L.by_pos), "info store.events", r.req, len(L.by_pos), n)
    T.check(S.alive(), "server alive")


if __name__ == "__main__":
    T.run(setup, teardown, after_case)
