#!/usr/bin/env python3
"""make_seeds.py - writes the seed corpora of fuzz/corpus/NAME/ (seed-*
files): small valid and invalid inputs for each driver, taken from the
tests (tests/test_pattern.c's patterns, the HTTP API tests' requests) and
from the formats the code writes (record.h's layout, group_store.c's
records, KurrentDB's protobuf messages). Inputs found by fuzzing are kept
beside them under other names (crash-*, min-*); this script only rewrites
seed-* files. Run from anywhere: python3 fuzz/make_seeds.py
"""
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(name, items):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for i, data in enumerate(items):
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, "seed-%03d" % i), "wb") as f:
            f.write(data)


# ---------------------------------------------------------------- records

def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC_T = _crc_table()


def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c = CRC_T[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def pad8(n):
    return (n + 7) & ~7


def record(kind, stream, typ=b"", tags=(), data=b"", meta=b"", flags=0, count=1, index=0,
           pos=0, rev=0, created=1796000000000000, eid=b"\x01" * 16, crc_ok=True):
    body = stream + b"\0" + typ + b"\0"
    for t in tags:
        body += struct.pack("<H", len(t)) + t + b"\0"
    body += data + meta
    n = pad8(72 + len(body))
    head = struct.pack("<BBHHHIIQQq16sII", kind, flags, len(stream), len(typ), len(tags), count,
                       index, pos, rev, created, eid, len(data), len(meta))
    rest = head + body
    rest += b"\0" * (n - 8 - len(rest))
    return struct.pack("<II", n, crc32c(rest) if crc_ok else 0) + rest


def varint(v):
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def compact(stream, typ=b"", tags=(), data=b"", meta=b"", flags=0, count=1, index=0, pos=0,
            rev=0, created=1796000000000000, eid=b"\x01" * 16, crc_ok=True):
    """A compact event record (kind 8, record.h)."""
    body = stream + b"\0" + typ + b"\0"
    for t in tags:
        body += struct.pack("<H", len(t)) + t + b"\0"
    body += data + meta
    head = struct.pack("<BB16sq", 8, flags, eid, created)
    for v in (count, index, pos, rev, len(stream), len(typ), len(tags), len(data), len(meta)):
        head += varint(v)
    rest = head + body
    n = pad8(8 + len(rest))
    rest += b"\0" * (n - 8 - len(rest))
    return struct.pack("<II", n, crc32c(rest) if crc_ok else 0) + rest


def shared(stream, typ=b"", tags=(), data=b"", meta=b"", flags=0, count=2, index=1, pos=1,
           rev=1, sref=0, tref=0, created=1796000000000000, eid=b"\x02" * 16, crc_ok=True):
    """A shared-names event record (kind 9, record.h): sref / tref are the
    distances back (in 8-byte units) to the records holding the stream and
    the type; 0 writes that field inline."""
    body = b""
    if not sref:
        body += stream + b"\0"
    if not tref:
        body += typ + b"\0"
    for t in tags:
        body += struct.pack("<H", len(t)) + t + b"\0"
    body += data + meta
    head = struct.pack("<BB16sq", 9, flags, eid, created)
    for v in (count, index, pos, rev, sref, tref):
        head += varint(v)
    if not sref:
        head += varint(len(stream))
    if not tref:
        head += varint(len(typ))
    for v in (len(tags), len(data), len(meta)):
        head += varint(v)
    rest = head + body
    n = pad8(8 + len(rest))
    rest += b"\0" * (n - 8 - len(rest))
    return struct.pack("<II", n, crc32c(rest) if crc_ok else 0) + rest


def seg_header(segno=0, first=0, created=1796000000000000):
    tail = struct.pack("<QQq", segno, first, created) + b"\0" * 24
    return b"STELESEG" + struct.pack("<II", 1, crc32c(tail)) + tail


def record_seeds():
    ev = lambda i, **k: record(1, b"order-1", b"OrderPlaced", data=b'{"n":%d}' % i, flags=1,
                               pos=i, rev=i, **k)
    commit2 = record(1, b"a", b"T", tags=(b"t1", b"tenant:x"), data=b"xy", meta=b'{"m":1}',
                     flags=3, count=2, index=0, pos=3, rev=0) + \
        record(1, b"a", b"T", data=b"z", count=2, index=1, pos=4, rev=1)
    seg = seg_header() + ev(0) + ev(1) + ev(2) + commit2
    meta_block = struct.pack("<QQQII", 0, 10, 0, 0, 0)
    out = [
        seg,
        seg + b"\0" * 64,
        seg_header() + record(2, b"order-1", pos=1, rev=2),              # delete
        seg_header() + record(3, b"order-1", rev=2),                      # tombstone
        seg_header() + record(4, b"", pos=100),                           # seal
        seg_header() + record(5, b"order-1", data=meta_block, meta=b'{"owner":"x"}', flags=2),
        seg_header() + record(6, b"order-1", data=b'{"total":3}', flags=1, pos=1, rev=7),
        seg_header() + ev(0, ) [:100],                                     # torn record
        ev(0) + ev(1),                                                     # records alone
        seg[:64],
        b"STELESEG" + b"\2\0\0\0" + b"\0" * 52,                            # version 2, bad crc
        record(1, b"m", b"T", data=b"1", flags=0x40 | 1, count=2, index=0, pos=0, rev=0) +
        record(6, b"m", data=b"{}", flags=0x40 | 1, count=2, index=1),    # multi commit
    ]
    bad = bytearray(ev(5))
    bad[80] ^= 0xFF
    out.append(bytes(bad))
    # Compact event records (kind 8): a commit of three, one with tags,
    # a multi-stream commit beside kind 1 records, big numbers, an empty
    # event, an overlong varint (refused) and bad padding (refused).
    c8 = lambda i, **k: compact(b"order-1", b"OrderPlaced", data=b'{"n":%d}' % i, flags=1,
                                count=3, index=i, pos=1000000 + i, rev=70000 + i, **k)
    out.append(seg_header() + c8(0) + c8(1) + c8(2))
    out.append(seg_header() + ev(0) + compact(b"a", b"T", tags=(b"t1", b"tenant:x"), data=b"xy",
                                                meta=b'{"m":1}', flags=3 | 0x80, pos=1))
    out.append(compact(b"m", b"T", data=b"1", flags=0x40 | 1, count=2, index=0) +
               record(6, b"m", data=b"{}", flags=0x40 | 1, count=2, index=1))
    out.append(compact(b"x", b"A", count=0xFFFFFFFF, index=0xFFFFFFFE, pos=(1 << 63) + 5,
                       rev=(1 << 64) - 2, created=-1))
    out.append(compact(b"", b""))
    over = bytearray(compact(b"s", b"T", data=b"12345"))
    over[34:35] = b"\x81\x00"          # count 1 written in two bytes
    over[0] += 0
    out.append(bytes(over[:len(over) - 1]))
    badpad = bytearray(compact(b"s", b"T", data=b"1"))
    badpad[-1] = 1
    out.append(bytes(badpad))
    # Shared names (kind 9): a commit of four whose later records take the
    # stream (and the type) from the first, one with its own type that the
    # last takes; a multi-stream commit A, B, A; a record whose holder is
    # not in the input (REC_FAR); refused shapes (no ref, index 0, a ref to
    # a record of another time, a ref into the middle of a record).
    first = compact(b"order-1", b"OrderPlaced", data=b'{"n":0}', flags=1, count=4, pos=10, rev=0)
    u = len(first) // 8
    s1 = shared(b"order-1", b"OrderPlaced", data=b'{"n":1}', flags=1, count=4, index=1, pos=11,
                rev=1, sref=u, tref=u)
    s2 = shared(b"order-1", b"ItemAdded", tags=(b"vip",), data=b'{"n":2}', flags=1, count=4,
                index=2, pos=12, rev=2, sref=(len(first) + len(s1)) // 8)
    s3 = shared(b"order-1", b"ItemAdded", data=b'{"n":3}', flags=1, count=4, index=3, pos=13,
                rev=3, sref=(len(first) + len(s1) + len(s2)) // 8, tref=len(s2) // 8)
    out.append(seg_header(first=10) + first + s1 + s2 + s3)
    ma = compact(b"multi-a", b"Moved", data=b"1", flags=0x40, count=3, pos=20)
    mb = shared(b"multi-b", b"Moved", data=b"2", flags=0x40, count=3, index=1, pos=21, rev=0,
                tref=len(ma) // 8)
    mc = shared(b"multi-a", b"Moved", data=b"3", flags=0x40, count=3, index=2, pos=22, rev=1,
                sref=(len(ma) + len(mb)) // 8, tref=(len(ma) + len(mb)) // 8)
    out.append(seg_header(first=20) + ma + mb + mc)
    out.append(s1)                                                     # holder not given
    out.append(first + shared(b"order-1", b"T", count=4, index=1, pos=11, rev=1))  # no ref
    out.append(shared(b"order-1", b"T", count=4, index=0, pos=10, sref=1))        # index 0
    out.append(first + shared(b"order-1", b"OrderPlaced", count=4, index=1, pos=11, rev=1,
                              sref=u, tref=u, created=5))               # another commit
    out.append(first + shared(b"order-1", b"OrderPlaced", count=4, index=1, pos=11, rev=1,
                              sref=u - 1, tref=u))                      # mid-record
    return out, seg


# ---------------------------------------------------------------- JSON

def json_append_seeds():
    return [
        '[{"type":"OrderPlaced","data":{"total":42}}]',
        '[{"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","type":"A","data":[1,2.5e3,-0,true,'
        'false,null,"x\\u00e9\\ud83d\\ude00"],"metadata":{"$correlationId":"c-1"},'
        '"tags":["vip","tenant:acme"]}]',
        '{"expectedRevision":"no_stream","events":[{"type":"A","dataBase64":"AAEC",'
        '"metadataBase64":"/w=="}]}',
        '{"expectedRevision":7,"events":[{"type":"A"}],"state":{"n":1},"stateSchemaVersion":2}',
        '{"events":[{"type":"A"}],"stateBase64":"eHl6"}',
        '{"expectedRevision":"stream_exists","events":[{"type":"A","contentType":"x"}]}',
        '[{"type":"A","tpye":"B"}]',
        '[{"type":"A","data":01}]',
        '[{"type":"A","data":"\\ud800"}]',
        '[{"type":"A\\u0000"}]',
        '[]',
        '[{"type":"A","dataBase64":"AAE="}]',
        '[' * 70 + ']' * 70,
        '[{"type":"A","data":{"a":[{"b":{"c":[1e400,-1.0E-2]}}]}}] x',
        '\xef\xbb\xbf[{"type":"A"}]',
        '  [ {"type" : "A" , "data" : "\\"\\\\\\/\\b\\f\\n\\r\\t"} ]  ',
    ]


def json_doc_seeds():
    return [
        '{"startFrom":0,"strategy":"RoundRobin","maxInFlight":10,"messageTimeoutMs":30000}',
        '{"ids":["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","x"],"action":"park"}',
        '{"streams":[{"stream":"a","expectedRevision":"any","events":[{"type":"T","data":{}}]}]}',
        '[1,-2,3.5,1e10,18446744073709551615,18446744073709551616,"\\u00e9",true,false,null]',
        '{"a":{"b":{"c":[[],{}]}},"a":2}',
        '{"dest":"/tmp/x"}',
        '{"x":"\\ud83d\\ude00","y":"\\u0000"}',
        '{"a" 1}',
        '[1,]',
        b'"\xc3\x28"',
        '{' * 80,
        '',
    ]


def url_seeds():
    return [
        "streams/order-1?from=0&limit=20&direction=forwards",
        "streams/Order%2D1/head",
        "all?from=123&limit=5&direction=backwards&type=A&type=B",
        "streams/a%00b?x=%00",
        "streams/a%zz?from=%2",
        "streams/%E2%82%AC?embed=body&resolveLinks=true&&tombstone",
        "a//b/?a+b=c+d&e=%41%42",
        "?" + "&".join("k%d=v" % i for i in range(40)),
        "streams/" + "x" * 300 + "?limit=" + "9" * 30,
        "",
    ]


def meta_ids_seeds():
    return [
        '{"$correlationId":"c-1","$causationId":"e-9","$actor":"alice"}',
        '{"correlationId":"c-2","userId":"bob","causationId":"x"}',
        '{"correlation_id":"c-3","user_id":"carol","actorId":"dave","causation_id":"y"}',
        '{"$correlationId":5,"correlationId":"","correlation_id":"ok"}',
        '{"$actor":"a\\u00e9\\ud83d\\ude00","$correlationId":"\\u0001"}',
        '{"nested":{"$actor":"no"},"$actor":"yes"}',
        '["$actor","x"]',
        '{"$actor":"' + "a" * 300 + '"}',
        'not json',
        '{"$actor":"x",',
    ]


def meta_json_seeds():
    return [
        b'\x08{"owner":"team-a","retention":"30d"}',
        b'\x08{}',
        b'\x02{"a":1,"b":2,"c":3}',
        b'\x08{"a":1,"a":2}',
        b'\x08{"maxAge":10}',
        b'\x08{"$acl":{}}',
        b'\x08{"x":[1,{"y":"\\u00e9"}],"z":null}',
        b'\x08[1]',
        b'\x08{"x":"\xff"}',
        b'\x08  {"k\\u0061":true}  ',
    ]


def pattern_seeds():
    src = open(os.path.join(HERE, "..", "tests", "test_pattern.c"), encoding="latin1").read()
    pats = []
    for m in re.finditer(r'^\s*\{"((?:[^"\\]|\\.)*)",\s*[01]', src, re.M):
        s = m.group(1).encode("latin1").decode("unicode_escape").encode("latin1")
        pats.append(s)
    data = (b'{"amount": 250.5, "count": 3, "currency": "EUR", "customer": {"name": "Alice",'
            b' "country": "FR", "vip": true}, "items": [{"sku": "A-1", "qty": 2}],'
            b' "labels": ["new"], "note": "", "coupon": null, "ip": "10.0.0.33"}')
    meta = b'{"$correlationId": "c-1", "tenant": "acme"}'
    out = [p + b"\xff" + data + b"\xff" + meta for p in pats[:60]]
    out += [
        b'{"data":{"amount":[{"numeric":[">",100,"<=",300]}]}}\xff' + data,
        b'{"$or":[{"data":{"currency":["EUR"]}},{"metadata":{"tenant":[{"prefix":"ac"}]}}]}'
        b'\xff' + data + b'\xff' + meta,
        b'{"data":{"ip":[{"cidr":"10.0.0.0/24"}],"note":[{"exists":true}],'
        b'"customer":{"name":[{"wildcard":"Al*"}],"country":[{"anything-but":["DE"]}]}}}\xff' + data,
        b'{"data":{"x":[{"equals-ignore-case":"a"},{"suffix":"b"}]}}\xffnot json',
        b'{"type":[1,]}',
    ]
    return out


def group_seeds():
    settings = ('{"startFrom":0,"strategy":"RoundRobin","maxInFlight":10,"messageTimeoutMs":30000,'
                '"maxRetries":10,"bufferSize":500,"checkpointAfterMs":2000,'
                '"checkpointMinCount":10,"checkpointMaxCount":1000')
    filt = ('{"streamPrefixes":["order-"],"categories":["x"],"types":["A"],"typePrefixes":["B"],'
            '"streamRegex":"^o","typeRegex":"A$","tags":["vip"],"excludeSystem":true}')
    created = ('{"stream":"order-1","group":"g1","settings":' + settings +
               '},"checkpointBase":0,"parkedBase":0}')
    created_all = ('{"stream":null,"group":"g2","settings":' + settings + ',"filter":' + filt +
                   '},"checkpointBase":3,"parkedBase":4}')
    updated = ('{"stream":"order-1","group":"g1","settings":' +
               settings.replace("RoundRobin", "Pinned") + '}}')
    deleted = '{"stream":"order-1","group":"g1"}'
    rec = lambda t, s: bytes([t]) + s.encode()
    return [
        rec(0, created),
        rec(0, created) + b"\xff" + rec(1, updated) + b"\xff" + rec(2, deleted),
        rec(0, created_all) + b"\xff" + rec(2, '{"stream":null,"group":"g2"}'),
        rec(1, updated),
        rec(0, created.replace("RoundRobin", "Other")),
        rec(0, '{"stream":5,"group":"g"}'),
        rec(3, created),
        rec(0, filt),
        rec(0, '{"streamRegex":"(","tags":[1]}'),
        rec(0, '{"group":"\\u00e9\\ud83d\\ude00","stream":"a\\"b"}'),
    ]


def auth_seeds():
    import base64
    b = lambda s: base64.b64encode(s.encode()).decode()
    return [
        "Basic " + b("admin:the-admin-password"),
        "Basic " + b("admin:wrong"),
        "Basic " + b("nouser:x"),
        "Basic " + b("admin"),
        "Basic " + b(":pass"),
        "basic " + b("admin:x"),
        "Basic YQ",
        "Basic ====",
        "Bearer stele_0123456789abcdef_0123456789abcdef0123456789abcdef",
        "Bearer stele_",
        "Bearer ",
        "Digest username=admin",
        "",
        "Basic " + b("a" * 300 + ":" + "p" * 300),
    ]


# ---------------------------------------------------------------- HTTP

def http_seeds():
    def req(method, path, body=b"", headers=()):
        h = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
        for k, v in headers:
            h += "%s: %s\r\n" % (k, v)
        if body or method in ("POST", "PUT"):
            h += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        return h.encode() + b"\r\n" + (body.encode() if isinstance(body, str) else body)
    app = '[{"type":"OrderPlaced","data":{"total":1},"tags":["vip"]}]'
    return [
        req("POST", "/streams/order-1", app),
        req("POST", "/streams/order-1", app, [("Stele-Expected-Revision", "no_stream")]) +
        req("GET", "/streams/order-1?from=0&limit=10"),
        req("GET", "/all?from=0&limit=5&direction=backwards"),
        req("GET", "/streams/order-1/head"),
        req("GET", "/streams/order-1", headers=[("Accept", "text/event-stream"),
                                                ("Last-Event-ID", "3")]),
        req("GET", "/all", headers=[("Accept", "text/event-stream"), ("Last-Event-ID", "x")]),
        req("DELETE", "/streams/order-1?tombstone"),
        req("POST", "/streams/a/metadata", '{"maxCount":10,"custom":{"owner":"x"}}'),
        req("GET", "/health/ready") + req("GET", "/metrics") + req("GET", "/info"),
        req("POST", "/streams", '{"streams":[{"stream":"a","events":[{"type":"T"}]}]}'),
        req("GET", "/query?category=order&type=OrderPlaced"),
        req("OPTIONS", "/streams/a", headers=[("Origin", "http://evil.example"),
                                              ("Access-Control-Request-Method", "POST")]),
        req("GET", "/streams/a", headers=[("Authorization", "Basic YWRtaW46eA==")]),
        b"POST /streams/c HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\n[{\"ty\r\n13\r\npe\":\"A\",\"data\":1}]\r\n0\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"\r\n\r\nGET /health/live HTTP/1.0\r\n\r\n",
        b"GET /streams/%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        req("PUT", "/subscriptions/order-1/g1", '{"startFrom":0}'),
        req("GET", "/ui/"),
    ]


def hpack_lit(name, value):
    name, value = name.encode(), value.encode()
    return b"\0" + bytes([len(name)]) + name + bytes([len(value)]) + value


def frame(ftype, flags, stream, payload):
    n = len(payload)
    return bytes([n >> 16 & 255, n >> 8 & 255, n & 255, ftype, flags]) + \
        struct.pack(">I", stream) + payload


def grpc_headers(path, extra=()):
    h = (hpack_lit(":method", "POST") + hpack_lit(":scheme", "http") + hpack_lit(":path", path) +
         hpack_lit(":authority", "localhost") + hpack_lit("content-type", "application/grpc") +
         hpack_lit("te", "trailers"))
    for k, v in extra:
        h += hpack_lit(k, v)
    return h


# protobuf, hand-encoded (field numbers from proto/*.proto)
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def fld(num, val):
    if isinstance(val, int):
        return varint(num << 3) + varint(val)
    if isinstance(val, str):
        val = val.encode()
    return varint(num << 3 | 2) + varint(len(val)) + val


def sid(name):
    return fld(3, name)


READ_STREAM = fld(1, fld(1, fld(1, sid("order-1")) + fld(3, b"")) + fld(3, 0) + fld(5, 10) +
                  fld(8, b"") + fld(9, fld(2, b"")))
READ_ALL_SUB = fld(1, fld(2, fld(2, b"")) + fld(6, b"") +
                   fld(7, fld(2, fld(2, "Order")) + fld(3, 10) + fld(5, 1)) + fld(9, fld(1, b"")))
READ_BACK = fld(1, fld(1, fld(1, sid("order-1")) + fld(4, b"")) + fld(3, 1) + fld(5, 3) +
                fld(8, b"") + fld(9, fld(2, b"")))
APPEND_OPTS = fld(1, fld(1, sid("order-1")) + fld(4, b""))
APPEND_MSG = fld(2, fld(1, fld(2, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")) +
                 fld(2, fld(1, "type") + fld(2, "OrderPlaced")) +
                 fld(2, fld(1, "content-type") + fld(2, "application/json")) +
                 fld(3, b"{}") + fld(4, b'{"total":1}'))
DELETE = fld(1, fld(1, sid("order-1")) + fld(4, b""))


def grpc_input(method_index, msgs):
    out = bytes([method_index])
    for m in msgs:
        out += struct.pack("<H", len(m)) + m
    return out


GRPC_METHODS = 38  # entries in fuzz_grpc.c's table


def grpc_seeds():
    out = [
        grpc_input(0, [READ_STREAM]),
        grpc_input(0, [READ_ALL_SUB]),
        grpc_input(0, [READ_BACK]),
        grpc_input(1, [APPEND_OPTS, APPEND_MSG, APPEND_MSG]),
        grpc_input(3, [DELETE]),
        grpc_input(4, [DELETE]),
        grpc_input(9, [fld(1, fld(4, fld(1, sid("order-1")) + fld(3, b"")) + fld(2, "g1") +
                             fld(3, fld(5, 10) + fld(7, 10) + fld(8, 1000) + fld(9, 5) +
                                 fld(10, 500) + fld(11, 20) + fld(12, 500) + fld(14, 30000) +
                                 fld(15, 2000) + fld(16, "RoundRobin")))]),
        grpc_input(9, [fld(1, fld(5, fld(2, b"") + fld(4, fld(2, fld(2, "Order")) + fld(3, 5))) +
                             fld(2, "g2") + fld(3, fld(16, "Pinned") + fld(14, 1000)))]),
        grpc_input(12, [fld(1, fld(1, sid("order-1")) + fld(2, "g1") + fld(3, 10)),
                        fld(2, fld(1, b"") + fld(2, b""))]),
        grpc_input(17, [fld(1, fld(3, fld(1, "p1") + fld(2, "fromAll().when({})")))]),
        grpc_input(27, [fld(1, fld(1, "bob") + fld(2, "pw") + fld(3, "Bob"))]),
        grpc_input(35, [fld(1, fld(1, "order-1"))]),
    ]
    out += [grpc_input(i, [b""]) for i in range(GRPC_METHODS)]
    return out


def h2_seeds():
    settings = frame(4, 0, 0, b"")
    read = grpc_headers("/event_store.client.streams.Streams/Read")
    msg = b"\0" + struct.pack(">I", len(READ_STREAM)) + READ_STREAM
    amsg = lambda m: b"\0" + struct.pack(">I", len(m)) + m
    return [
        settings + frame(1, 4, 1, read) + frame(0, 1, 1, msg),
        settings + frame(1, 4, 1, grpc_headers("/event_store.client.streams.Streams/Append",
                                               [("grpc-timeout", "5S")])) +
        frame(0, 0, 1, amsg(APPEND_OPTS)) + frame(0, 1, 1, amsg(APPEND_MSG)),
        settings + frame(1, 4, 1, read) + frame(3, 0, 1, struct.pack(">I", 8)),   # RST_STREAM
        settings + frame(6, 0, 0, b"12345678") + frame(8, 0, 0, struct.pack(">I", 65535)),
        settings + frame(1, 0, 1, read[:20]) + frame(9, 4, 1, read[20:]),        # CONTINUATION
        settings + frame(1, 5, 3, hpack_lit(":method", "GET") + hpack_lit(":path", "/x")),
        frame(4, 0, 0, struct.pack(">HI", 3, 100) + struct.pack(">HI", 4, 1 << 20)) +
        frame(1, 4, 1, read) + frame(0, 1, 1, msg[:3]),
        settings + frame(7, 0, 0, struct.pack(">II", 0, 0)),                     # GOAWAY
        settings + frame(1, 0x24, 1, b"\0\0\0\0\x10" + read) + frame(0, 9, 1, b"\2ab" + msg[:0]),
        b"\0\0\0\4\0\0\0\0\0garbage",
    ]


def recover_seeds():
    # The template store (fuzz_recover.c) holds positions 0..3; order-1 is
    # at revision 1, order-2 at 1. Byte 0 odd: the driver fixes the CRCs.
    nxt = record(1, b"order-1", b"OrderShipped", data=b'{"s":1}', flags=1, pos=4, rev=2)
    two = record(1, b"order-3", b"A", data=b"1", count=2, index=0, pos=4, rev=0) + \
        record(1, b"order-3", b"A", data=b"2", count=2, index=1, pos=5, rev=1)
    return [
        b"\0" + nxt,                                   # a whole valid commit
        b"\0" + nxt[:40],                              # torn in the header
        b"\0" + nxt[:len(nxt) - 8],                    # torn in the body
        b"\0" + two[:len(two) // 2 + 8],               # first record of two
        b"\0" + two,
        b"\1" + record(1, b"order-1", b"X", pos=9, rev=7, crc_ok=False),  # gap in positions
        b"\1" + record(2, b"order-1", pos=1, rev=1),   # a delete commit
        b"\1" + record(3, b"order-2", rev=1),          # a tombstone
        b"\1" + record(4, b"", pos=4),                 # a seal
        b"\1" + record(1, b"order-1", b"Y", count=3, index=1, pos=4, rev=2),
        b"\0" + b"\xff" * 200,
        b"\0" + b"\0" * 80,
        b"\1" + struct.pack("<I", 72) + b"\0" * 68,
    ]


def proj_seeds():
    import json

    def d(query, **k):
        o = {"name": "p1", "query": query, "mode": "Continuous", "enabled": 1,
             "emitEnabled": 0, "memoryLimit": 16777216, "timeoutMs": 250,
             "cachePartitions": 1000, "maxStateSize": 16777216, "snapshotEvery": 0,
             "epoch": 0, "resetPending": 0, "deleted": 0}
        o.update(k)
        return json.dumps(o)
    return [
        d("fromAll().when({$init: function(){return {n:0}}, $any: function(s,e){s.n++}})"),
        d("fromStream('order-1').when({OrderPlaced: function(s,e){s.t=(s.t||0)+e.body.total}})"),
        d("fromCategory('order').foreachStream().when({$any: function(s,e){return s}})",
          mode="OneTime"),
        d("options({resultStreamName:'r', $includeLinks:true}); fromStreams(['a','b'])"
          ".partitionBy(function(e){return e.body.k}).when({$any:function(s,e){}})"
          ".transformBy(function(s){return s}).outputState()", mode="Inline"),
        d("fromAll().when({$any:function(s,e){emit('x','T',{a:1}); linkTo('y',e)}})",
          emitEnabled=1),
        d("fromAll().when({"),
        d("while(true){}"),
        d("fromAll()", memoryLimit=1e300, timeoutMs=-5, epoch=1.5e19),
        d("x", name="n" * 120),
        '{"name":"p","query":"fromAll()","deleted":true,"resetPending":true}',
        '{"name":"p"}',
        '[1,2]',
        'not json',
    ]


def tls_seeds(http, h2):
    import ssl
    out = []
    for alpn in (["http/1.1"], ["h2"], None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        inc, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, outb, server_hostname="localhost")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        out.append(b"\0" + outb.read())              # a ClientHello, raw
    out.append(b"\0" + b"GET /health/live HTTP/1.1\r\n\r\n")  # cleartext: refused
    out.append(b"\0\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")  # a tiny bad hello
    out += [b"\1" + x for x in http[:6]]              # HTTP/1.1 over TLS
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    out += [b"\3" + preface + x for x in h2[:3]]      # HTTP/2 over TLS
    return out


def json_text_seeds():
    return json_doc_seeds()[:8] + [
        'plain ascii',
        'a\\"b\\\\c\\/d\\b\\f\\n\\r\\t',
        '\\u00e9\\ud83d\\ude00\\u0000',
        '\\ud800',
        '\\udc00\\ud800',
        '\\u12',
        b'\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80',
        b'\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xff',
        b'\x01\x1f\x7f',
    ]


def main():
    recs, _ = record_seeds()
    put("record", recs)
    put("json_append", json_append_seeds())
    put("json_doc", json_doc_seeds())
    put("json_text", json_text_seeds())
    put("urlcode", url_seeds())
    put("meta_ids", meta_ids_seeds())
    put("meta_json", meta_json_seeds())
    put("pattern", pattern_seeds())
    put("group_store", group_seeds())
    put("auth", auth_seeds())
    put("http", http_seeds())
    put("grpc", grpc_seeds())
    put("h2", h2_seeds())
    put("recover", recover_seeds())
    put("proj", proj_seeds())
    put("tls", tls_seeds(http_seeds(), h2_seeds()))


if __name__ == "__main__":
    main()
