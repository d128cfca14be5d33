"""
fake_kinesis.py - a PutRecords endpoint that throttles, for
tests/aws/test_kinesis.sh: kinesalite never answers
ProvisionedThroughputExceededException, so this one does. Each record of a
call fails with it at random (30%), and every 4th call is refused whole
(HTTP 400, the same error). GET /stats gives {"accepted", "duplicates",
"throttled_records", "throttled_calls", "calls"}: a record accepted twice
means a batch was re-sent whole instead of its failed records alone.
Requests are checked with SigV4 (computed here independently of
src/rules/sigv4.c) against the test secret: a wrong one is answered 400
InvalidSignatureException, as AWS does.
Prints "port N" when ready.
"""
import base64
import hashlib
import hmac
import json
import os
import random
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

rnd = random.Random(14)
stats = {"accepted": 0, "duplicates": 0, "throttled_records": 0, "throttled_calls": 0, "calls": 0}
seen = set()


SECRET = os.environ.get("FAKE_SECRET", "stele-test-secret")


def signature_ok(method, headers, payload):
    auth = headers.get("Authorization", "")
    try:
        scheme, rest = auth.split(" ", 1)
        parts = dict(p.strip().split("=", 1) for p in rest.split(","))
        _, day, region, service, _ = parts["Credential"].split("/")
        signed = parts["SignedHeaders"].split(";")
    except ValueError:
        return False
    canon = "".join("%s:%s\n" % (h, " ".join(headers.get(h, "").split())) for h in signed)
    creq = "\n".join([method, "/", "", canon, ";".join(signed), hashlib.sha256(payload).hexdigest()])
    sts = "\n".join(["AWS4-HMAC-SHA256", headers.get("X-Amz-Date", ""),
                      "%s/%s/%s/aws4_request" % (day, region, service),
                      hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + SECRET).encode()
    for m in (day, region, service, "aws4_request"):
        k = hmac.new(k, m.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(k, sts.encode(), hashlib.sha256).hexdigest(), parts.get("Signature", ""))


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200, stats)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if not signature_ok("POST", self.headers, raw):
            return self.reply(400, {"__type": "InvalidSignatureException",
                                    "message": "The request signature we calculated does not match the signature "
                                               "you provided."})
        body = json.loads(raw)
        stats["calls"] += 1
        if stats["calls"] % 4 == 0:
            stats["throttled_calls"] += 1
            return self.reply(400, {"__type": "ProvisionedThroughputExceededException",
                                    "message": "Rate exceeded for stream"})
        out, failed = [], 0
        for r in body["Records"]:
            if rnd.random() < 0.3:
                failed += 1
                stats["throttled_records"] += 1
                out.append({"ErrorCode": "ProvisionedThroughputExceededException",
                            "ErrorMessage": "Rate exceeded for shard shardId-000000000000"})
                continue
            ev = json.loads(base64.b64decode(r["Data"]))
            key = ev["data"]["n"]
            stats["duplicates"] += key in seen
            seen.add(key)
            stats["accepted"] += 1
            out.append({"SequenceNumber": str(stats["accepted"]), "ShardId": "shardId-000000000000"})
        self.reply(200, {"FailedRecordCount": failed, "Records": out})


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print("port", srv.server_address[1], flush=True)
srv.serve_forever()
