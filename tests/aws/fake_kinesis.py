"""
fake_kinesis.py - a PutRecords endpoint that throttles, for
tests/aws/test_kinesis.sh: kinesalite never answers
ProvisionedThroughputExceededException, so this one does. Each record of a
call fails with it at random (30%), and every 4th call is refused whole
(HTTP 400, the same error). GET /stats gives {"accepted", "duplicates",
"throttled_records", "throttled_calls", "calls"}: a record accepted twice
means a batch was re-sent whole instead of its failed records alone.
Prints "port N" when ready.
"""
import base64
import json
import random
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

rnd = random.Random(14)
stats = {"accepted": 0, "duplicates": 0, "throttled_records": 0, "throttled_calls": 0, "calls": 0}
seen = set()


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
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 Credential="):
            return self.reply(400, {"__type": "MissingAuthenticationTokenException", "message": "no signature"})
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
