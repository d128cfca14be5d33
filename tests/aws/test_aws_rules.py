"""
test_aws_rules.py - rules with AWS targets in a real `stele serve`, against
kinesalite (npm) and AWS's DynamoDB Local (npm amplify-dynamodb-simulator,
run with Debian's openjdk-17), both started here on free loopback ports.

Kinesis: 8 writers append OrderPlaced events (and non-matching Noise) while
Stele is killed with SIGKILL twice and kinesalite is stopped and restarted
once; then every acknowledged OrderPlaced event is in the Kinesis stream
(read back shard by shard; at least once: a batch whose answer was lost
in a crash is sent again, docs/rules.md), with the event's stream as its
partition key, and no Noise event. A rule naming a missing stream
dead-letters its events with Kinesis's ResourceNotFoundException text; a
rule whose credentials file is missing dead-letters with that reason after
its attempts; bad target definitions are refused and store nothing.

DynamoDB (read models of seed 002's AccountSummary and seed 000's
OrderReadModel; DynamoDB Local keeps its tables on disk, -sharedDb
-dbPath): writers append account and order events while Stele is killed
with SIGKILL twice and DynamoDB Local is stopped (SIGTERM, then SIGKILL)
and restarted on the same files twice; the tables then equal a fold of the
acknowledged events exactly (no increment applied twice), and still do
after a replay of every event; a rule naming a missing table dead-letters
with DynamoDB's ResourceNotFoundException text; rules without usable
credentials (a missing file, a file without the secret or the profile,
unset variables) dead-letter with that reason and no secret in the log.

No timing assertions: waits are "until, or fail after a generous deadline".
Needs STELE_BIN and KINESIS_CHECK (the tests/aws driver, for reading back).
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
from stele_server import Server, Suite, request  # noqa: E402

T = Suite("aws_rules")
S = {}
CHECK = os.environ.get("KINESIS_CHECK", "")
os.environ.update(AWS_ACCESS_KEY_ID="AKIDSTELETEST", AWS_SECRET_ACCESS_KEY="stele-test-secret",
                  AWS_REGION="us-east-1")
os.environ.pop("AWS_SESSION_TOKEN", None)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=60):
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on %d" % port)


class Kinesalite:
    def __init__(self, tmp):
        self.port = free_port()
        self.path = os.path.join(tmp, "kinesalite")
        self.log = os.path.join(tmp, "kinesalite.log")
        self.proc = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        cli = os.path.join(HERE, "node_modules", "kinesalite", "cli.js")
        self.proc = subprocess.Popen(
            ["node", cli, "--port", str(self.port), "--path", self.path, "--createStreamMs", "0",
             "--deleteStreamMs", "0", "--updateStreamMs", "0"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class DynamoLocal:
    def __init__(self, tmp):
        self.port = free_port()
        self.log = os.path.join(tmp, "dynamodb.log")
        self.db = os.path.join(tmp, "dynamodb")  # on disk: a restart keeps the tables
        os.makedirs(self.db, exist_ok=True)
        self.proc = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        d = os.path.join(HERE, "node_modules", "amplify-dynamodb-simulator", "emulator")
        self.proc = subprocess.Popen(
            ["java", "-Djava.library.path=DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar", "-sharedDb",
             "-dbPath", self.db, "-port", str(self.port)], cwd=d,
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self, sig=9):
        if self.proc:
            self.proc.send_signal(sig)
            self.proc.wait()
            self.proc = None


def ddb(op, body):
    """One DynamoDB call through tests/aws/aws_cli: the parsed answer, or
    raises with DynamoDB's error."""
    r = subprocess.run([os.environ["AWS_CLI"], "dynamodb", S["ddb"].endpoint, "DynamoDB_20120810." + op,
                        json.dumps(body)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (op, r.stderr.strip()))
    return json.loads(r.stdout)


def plain(attr):
    (t, v), = attr.items()
    if t == "N":
        return Decimal(v)
    if t == "M":
        return {k: plain(x) for k, x in v.items()}
    if t == "L":
        return [plain(x) for x in v]
    if t == "NULL":
        return None
    return v


def scan(table):
    items, start = [], None
    while True:
        body = {"TableName": table, "ConsistentRead": True}
        if start:
            body["ExclusiveStartKey"] = start
        r = ddb("Scan", body)
        items += [{k: plain(v) for k, v in it.items()} for it in r.get("Items", [])]
        start = r.get("LastEvaluatedKey")
        if not start:
            return items


def npm_ci():
    lock = os.path.join(HERE, "package-lock.json")
    mark = os.path.join(HERE, "node_modules", ".package-lock.json")
    if not os.path.exists(mark) or os.path.getmtime(lock) > os.path.getmtime(mark):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True)


def setup():
    npm_ci()
    S["tmp"] = tempfile.mkdtemp(prefix="stele-aws-")
    S["kin"] = Kinesalite(S["tmp"])
    S["kin"].start()
    S["ddb"] = DynamoLocal(S["tmp"])
    S["ddb"].start()
    S["srv"] = Server().start()


def teardown():
    S["srv"].cleanup()
    S["kin"].stop()
    S["ddb"].stop()
    subprocess.run(["rm", "-rf", S["tmp"]])


def req(method, path, body=None, timeout=30):
    return request(S["srv"].port, method, path, body, timeout=timeout)


def driver(*args):
    env = dict(os.environ, KINESIS_ENDPOINT=S["kin"].endpoint)
    return subprocess.run([CHECK] + list(args), env=env, capture_output=True, text=True, timeout=300)


def wait_for(cond, what, timeout=180):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.3)
    T.check(False, what + " (waited %ds)" % timeout)


def rule_info(name):
    return T.expect(req("GET", "/rules/" + name), 200)


@T.case
def bad_definitions_store_nothing():
    bad = [{"type": "kinesis"},
           {"type": "kinesis", "streamName": "a b"},
           {"type": "kinesis", "streamName": "s", "partitionKey": "{{nope}}"},
           {"type": "kinesis", "streamName": "s", "endpoint": "ftp://x"},
           {"type": "kinesis", "streamName": "s", "region": "US East"},
           {"type": "kinesis", "streamName": "s", "shards": 3}]
    for t in bad:
        r = req("PUT", "/rules/bad", json.dumps({"pattern": {"type": ["X"]}, "target": t}))
        T.check(r.status == 400 and "target." in json.dumps(r.body), "refused with the member's path", r.req,
                400, r)
    T.expect(req("GET", "/rules/bad"), 404)


@T.case
def kinesis_every_event_across_crashes():
    r = driver("setup", "orders")
    T.check(r.returncode == 0, "stream created", None, 0, r.stderr)
    rule = {"pattern": {"type": ["OrderPlaced"]},
            "target": {"type": "kinesis", "streamName": "orders", "endpoint": S["kin"].endpoint,
                       "region": "us-east-1", "timeoutMs": 2000},
            "retry": {"maxAttempts": 100, "backoffMs": 50, "maxBackoffMs": 500},
            "start": "beginning"}
    r = req("PUT", "/rules/kin", json.dumps(rule))
    T.check(r.status in (200, 201), "rule created", r.req, 201, r)
    acked = {}
    lock = threading.Lock()
    rnd = random.Random(int(os.environ.get("TEST_SEED", "0")) or None)

    def writer(w):
        for i in range(120):
            evs = []
            for k in range(1 + i % 3):
                n = (w * 1000 + i) * 4 + k
                typ = "Noise" if k == 2 else "OrderPlaced"
                evs.append({"id": str(uuid.uuid4()), "type": typ, "data": {"n": n}, "_n": n})
            body = json.dumps([{k: v for k, v in e.items() if k != "_n"} for e in evs])
            stream = "order-%d" % (w % 7)
            end = time.monotonic() + 120
            while time.monotonic() < end:
                try:
                    st = request(S["srv"].port, "POST", "/streams/" + stream, body, timeout=10).status
                    if st in (200, 201):
                        with lock:
                            for e in evs:
                                acked[e["_n"]] = e["type"]
                        break
                except Exception:  # noqa: BLE001 (a killed server: retry the same ids)
                    pass
                time.sleep(0.05)
            time.sleep(0.02)  # spread the writes over the kills and restarts

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for step in range(3):
        time.sleep(0.3 + rnd.random() / 2)
        if step == 1:
            S["kin"].stop()
            time.sleep(0.5)
            S["kin"].start()
        else:
            S["srv"].kill()
            time.sleep(0.2)
            S["srv"].start()
    for t in threads:
        t.join(300)
    want = sorted(n for n, typ in acked.items() if typ == "OrderPlaced")
    T.check(all(not t.is_alive() for t in threads), "writers done")
    T.check(len(want) > 100, "writers got appends acknowledged", None, "> 100", len(want))
    # Read back: the driver prints "check: N records, M missing, D duplicates"
    # for the ids 0..max; compare with the acknowledged set here instead.
    got = {}

    def read_back():
        r = driver("dump", "orders")
        if r.returncode != 0:
            return False
        got.clear()
        for line in r.stdout.splitlines():
            n, key, stream, typ = line.split()
            got.setdefault(int(n), []).append((key, stream, typ))
        return set(want) <= set(got)
    wait_for(read_back, "every acknowledged OrderPlaced event in Kinesis")
    missing = set(want) - set(got)
    T.check(not missing, "none missing", None, 0, sorted(missing)[:10])
    noise = [n for n, v in got.items() if any(t != "OrderPlaced" for _, _, t in v)]
    T.check(not noise, "no non-matching event", None, [], noise[:10])
    keys = [n for n, v in got.items() if any(k != s for k, s, _ in v)]
    T.check(not keys, "partition key = the event's stream", None, [], keys[:10])
    dups = sum(len(v) - 1 for v in got.values())
    print("kinesis: %d events, %d duplicates (allowed: at least once)" % (len(got), dups))
    T.expect(req("DELETE", "/rules/kin"), 204)


@T.case
def kinesis_errors_dead_letter_with_reason():
    req("POST", "/streams/err-1", json.dumps([{"id": str(uuid.uuid4()), "type": "ErrTest", "data": {"n": 1}}]))
    rule = {"pattern": {"type": ["ErrTest"]},
            "target": {"type": "kinesis", "streamName": "no-such-stream", "endpoint": S["kin"].endpoint},
            "retry": {"maxAttempts": 3, "backoffMs": 20, "maxBackoffMs": 50}, "start": "beginning"}
    T.check(req("PUT", "/rules/missing", json.dumps(rule)).status in (200, 201), "rule created")
    wait_for(lambda: rule_info("missing")["stats"]["deadLetters"] == 1, "dead-lettered")
    dl = T.expect(req("GET", "/rules/missing/dead-letters"), 200)["deadLetters"]
    reason = dl[0]["deadLettered"]["reason"]
    T.check("ResourceNotFoundException" in reason, "the service's error text", None, "ResourceNotFound", reason)
    rule["target"]["streamName"] = "orders"
    rule["target"]["credentialsFile"] = os.path.join(S["tmp"], "no-such-credentials")
    T.check(req("PUT", "/rules/nocreds", json.dumps(rule)).status in (200, 201), "rule created")
    wait_for(lambda: rule_info("nocreds")["stats"]["deadLetters"] == 1, "dead-lettered")
    dl = T.expect(req("GET", "/rules/nocreds/dead-letters"), 200)["deadLetters"]
    reason = dl[0]["deadLettered"]["reason"]
    T.check("credentials file" in reason and "stele-test-secret" not in reason, "the reason, no secret",
            None, "credentials file", reason)
    log = open(S["srv"].log_path).read()
    T.check("stele-test-secret" not in log, "the secret is never logged")
    T.check(S["srv"].alive(), "server alive")


ACCOUNT_RULE = {
    "pattern": {"type": ["AccountCreated", "TransactionProcessed", "AccountClosed"]},
    "target": {
        "type": "dynamodb", "table": "AccountSummary",
        "key": {"AccountId": "{{data.accountId}}", "ProjectionType": "AccountSummary"},
        "operations": {
            "AccountCreated": {
                "update": "SET Balance = :zero, #s = :active, TransactionCount = :zero, CreatedAt = :t, "
                          "LastUpdated = :t",
                "names": {"#s": "Status"},
                "values": {":zero": 0, ":active": "Active", ":t": "{{data.createdAt}}"}},
            "TransactionProcessed": {
                "update": "SET Balance = Balance + :amount, TransactionCount = TransactionCount + :one, "
                          "LastTransactionAt = :t, LastUpdated = :t",
                "values": {":amount": "{{data.amount}}", ":one": 1, ":t": "{{data.timestamp}}"}},
            "AccountClosed": {
                "update": "SET #s = :closed, ClosedAt = :t, LastUpdated = :t",
                "names": {"#s": "Status"},
                "values": {":closed": "Closed", ":t": "{{data.closedAt}}"}}}},
    "retry": {"maxAttempts": 100, "backoffMs": 50, "maxBackoffMs": 500},
    "start": "beginning"}

ORDER_RULE = {
    "pattern": {"type": ["OrderPlaced", "OrderCancelled"]},
    "target": {
        "type": "dynamodb", "table": "OrderReadModel",
        "key": {"orderId": "{{data.orderId}}"},
        "operations": {
            "OrderPlaced": {"put": {"customerId": "{{data.customerId}}", "status": "placed",
                                    "total": {"S": "{{data.total}}"}, "itemCount": "{{data.itemCount}}",
                                    "lastUpdated": "{{data.timestamp}}"}},
            "OrderCancelled": {
                "update": "SET #s = :s, lastUpdated = :t",
                "names": {"#s": "status"},
                "values": {":s": "cancelled", ":t": "{{data.timestamp}}"}}}},
    "retry": {"maxAttempts": 100, "backoffMs": 50, "maxBackoffMs": 500},
    "start": "beginning"}


def fold(events):
    """The read models as seeds 002 and 000 compute them, from the
    acknowledged events in order."""
    acc, orders = {}, {}
    for typ, d in events:
        if typ == "AccountCreated":
            acc[d["accountId"]] = {"AccountId": d["accountId"], "ProjectionType": "AccountSummary",
                                   "Balance": Decimal(0), "Status": "Active", "TransactionCount": Decimal(0),
                                   "CreatedAt": d["createdAt"], "LastUpdated": d["createdAt"]}
        elif typ == "TransactionProcessed":
            a = acc[d["accountId"]]
            a["Balance"] += Decimal(str(d["amount"]))
            a["TransactionCount"] += 1
            a["LastTransactionAt"] = a["LastUpdated"] = d["timestamp"]
        elif typ == "AccountClosed":
            a = acc[d["accountId"]]
            a["Status"], a["ClosedAt"], a["LastUpdated"] = "Closed", d["closedAt"], d["closedAt"]
        elif typ == "OrderPlaced":
            orders[d["orderId"]] = {"orderId": d["orderId"], "customerId": d["customerId"], "status": "placed",
                                    "total": str(d["total"]), "itemCount": Decimal(d["itemCount"]),
                                    "lastUpdated": d["timestamp"]}
        elif typ == "OrderCancelled":
            o = orders[d["orderId"]]
            o["status"], o["lastUpdated"] = "cancelled", d["timestamp"]
    return acc, orders


def tables_now():
    acc = {i["AccountId"]: i for i in scan("AccountSummary")}
    orders = {i["orderId"]: i for i in scan("OrderReadModel")}
    for i in list(acc.values()) + list(orders.values()):
        T.check(isinstance(i.pop("stelePosition", None), Decimal), "the last applied position is kept", None,
                "a number", i)
    return acc, orders


@T.case
def dynamodb_read_models_exactly_once_across_crashes():
    ddb("CreateTable", {"TableName": "AccountSummary", "BillingMode": "PAY_PER_REQUEST",
                        "KeySchema": [{"AttributeName": "AccountId", "KeyType": "HASH"},
                                      {"AttributeName": "ProjectionType", "KeyType": "RANGE"}],
                        "AttributeDefinitions": [{"AttributeName": "AccountId", "AttributeType": "S"},
                                                 {"AttributeName": "ProjectionType", "AttributeType": "S"}]})
    ddb("CreateTable", {"TableName": "OrderReadModel", "BillingMode": "PAY_PER_REQUEST",
                        "KeySchema": [{"AttributeName": "orderId", "KeyType": "HASH"}],
                        "AttributeDefinitions": [{"AttributeName": "orderId", "AttributeType": "S"}]})
    for name, rule in (("acc", ACCOUNT_RULE), ("ord", ORDER_RULE)):
        rule["target"]["endpoint"] = S["ddb"].endpoint
        r = req("PUT", "/rules/" + name, json.dumps(rule))
        T.check(r.status in (200, 201), "rule created", r.req, 201, r)
    rnd = random.Random(int(os.environ.get("TEST_SEED", "0")) or None)
    acked = {}  # writer -> [(type, data)] in append order
    lock = threading.Lock()
    restarts_done = threading.Event()

    def writer(w):
        wr = random.Random(w)
        mine = []
        j = -1
        # 6 accounts and 6 orders per writer (one stream each), and more
        # until the kills and restarts below are over.
        while j < 5 or not restarts_done.is_set():
            j += 1
            aid, oid = "acct-%d-%d" % (w, j), "order-%d-%d" % (w, j)
            evs = [("account-" + aid, "AccountCreated", {"accountId": aid, "createdAt": "2026-01-0%dT00:00:00Z" % (j + 1)})]
            for t in range(25):
                evs.append(("account-" + aid, "TransactionProcessed",
                            {"accountId": aid, "amount": round(wr.uniform(-50, 100), 2),
                             "timestamp": "2026-02-01T00:%02d:%02dZ" % (j, t)}))
            if j % 3 == 0:
                evs.append(("account-" + aid, "AccountClosed", {"accountId": aid, "closedAt": "2026-03-01T00:00:00Z"}))
            evs.append(("order-" + oid, "OrderPlaced", {"orderId": oid, "customerId": "c%d" % w,
                                                        "total": round(wr.uniform(1, 500), 2),
                                                        "itemCount": wr.randint(1, 9),
                                                        "timestamp": "2026-01-01T00:00:%02dZ" % j}))
            if j % 2 == 0:
                evs.append(("order-" + oid, "OrderCancelled", {"orderId": oid, "timestamp": "2026-01-02T00:00:00Z"}))
            for stream, typ, data in evs:
                body = json.dumps([{"id": str(uuid.uuid4()), "type": typ, "data": data}])
                end = time.monotonic() + 120
                while time.monotonic() < end:
                    try:
                        if request(S["srv"].port, "POST", "/streams/" + stream, body, timeout=10).status in (200, 201):
                            mine.append((typ, data))
                            break
                    except Exception:  # noqa: BLE001 (killed server: retry the same id)
                        pass
                    time.sleep(0.05)
                else:
                    return
                time.sleep(0.002 if restarts_done.is_set() else 0.02)
        with lock:
            acked[w] = mine

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    # Stele killed, then DynamoDB Local stopped (SIGTERM) and restarted on
    # the same files, Stele killed again, DynamoDB Local killed (SIGKILL)
    # and restarted: all while the writers append and the rules deliver.
    writing = []
    for step in range(4):
        time.sleep(0.5 + rnd.random())
        if step % 2:
            writing.append(sum(t.is_alive() for t in threads))
            S["ddb"].stop(15 if step == 1 else 9)
            time.sleep(0.3)
            S["ddb"].start()
        else:
            S["srv"].kill()
            time.sleep(0.2)
            S["srv"].start()
    restarts_done.set()
    for t in threads:
        t.join(300)
    T.check(min(writing) > 0, "DynamoDB Local restarted while events were appended", None, "> 0 writers",
            writing)
    T.check(len(acked) == 6, "every writer finished", None, 6, len(acked))
    want_acc, want_orders = fold([e for w in sorted(acked) for e in acked[w]])
    got = {}

    def converged():
        got["acc"], got["orders"] = tables_now()
        return got["acc"] == want_acc and got["orders"] == want_orders
    end = time.monotonic() + 180
    while time.monotonic() < end and not converged():
        time.sleep(0.5)
    bad = [k for k in want_acc if got["acc"].get(k) != want_acc[k]]
    T.check(not bad, "AccountSummary equals the fold (no double-applied increment)", None,
            want_acc.get(bad[0]) if bad else None, got["acc"].get(bad[0]) if bad else None)
    T.check(got["orders"] == want_orders, "OrderReadModel equals the fold", None, len(want_orders),
            len(got["orders"]))
    print("dynamodb: %d accounts, %d orders, %d events" % (len(want_acc), len(want_orders),
                                                          sum(len(v) for v in acked.values())))
    # A replay of everything applies nothing twice.
    r = T.expect(req("POST", "/rules/acc/replays", json.dumps({"from": 0})), 202)
    wait_for(lambda: T.expect(req("GET", "/rules/acc/replays/%d" % r["id"]), 200)["state"] == "done", "replay done")
    acc, _ = tables_now()
    T.check(acc == want_acc, "a replay changes nothing", None, "the fold", "changed")
    T.expect(req("DELETE", "/rules/acc"), 204)
    T.expect(req("DELETE", "/rules/ord"), 204)


@T.case
def dynamodb_missing_table_dead_letters():
    rule = json.loads(json.dumps(ORDER_RULE))
    rule["target"]["table"] = "NoSuchTable"
    rule["target"]["endpoint"] = S["ddb"].endpoint
    rule["retry"] = {"maxAttempts": 2, "backoffMs": 20, "maxBackoffMs": 50}
    rule["pattern"] = {"type": ["OrderMissing"]}
    rule["target"]["operations"] = {"OrderMissing": {"delete": True}}
    req("POST", "/streams/miss-1", json.dumps([{"id": str(uuid.uuid4()), "type": "OrderMissing",
                                                "data": {"orderId": "x"}}]))
    T.check(req("PUT", "/rules/miss", json.dumps(rule)).status in (200, 201), "rule created")
    wait_for(lambda: rule_info("miss")["stats"]["deadLetters"] == 1, "dead-lettered")
    reason = T.expect(req("GET", "/rules/miss/dead-letters"), 200)["deadLetters"][0]["deadLettered"]["reason"]
    T.check("ResourceNotFoundException" in reason, "DynamoDB's error text", None, "ResourceNotFound", reason)
    bad = [{"type": "dynamodb", "table": "T1", "key": {"k": "{{id}}"}, "operations": {"X": {"delete": True}}},
           {"type": "dynamodb", "table": "Tab", "key": {"k": "{{id}}"}, "operations": {}},
           {"type": "dynamodb", "table": "Tab", "key": {"k": "{{id}}"},
            "operations": {"X": {"put": {"a": 1}, "delete": True}}},
           {"type": "dynamodb", "table": "Tab", "key": {"k": "{{bogus}}"}, "operations": {"X": {"delete": True}}},
           {"type": "dynamodb", "table": "Tab", "key": {"k": "{{id}}"},
            "operations": {"X": {"update": "SET a = :a", "values": {"a": 1}}}}]
    for t in bad:
        r = req("PUT", "/rules/bad", json.dumps({"pattern": {"type": ["X"]}, "target": t}))
        T.check(r.status == 400 and "target." in json.dumps(r.body), "refused with the member's path", r.req,
                400, r)
    T.expect(req("GET", "/rules/bad"), 404)
    T.check(S["srv"].alive(), "server alive")



@T.case
def dynamodb_credentials_dead_letter_with_reason():
    """DynamoDB Local accepts any secret (it checks no signature), so a
    wrong secret cannot be refused here; tests/aws/fake_kinesis.py checks
    Stele's signature for that. What Stele decides itself is tested: no
    credentials at all, from a file or from the environment."""
    req("POST", "/streams/cred-1", json.dumps([{"id": str(uuid.uuid4()), "type": "CredTest",
                                                "data": {"orderId": "c1"}}]))
    only_key = os.path.join(S["tmp"], "creds-no-secret")
    with open(only_key, "w") as f:
        f.write("[default]\naws_access_key_id = AKIDFILEONLY\n")
    other = os.path.join(S["tmp"], "creds-other-profile")
    with open(other, "w") as f:
        f.write("[other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = file-secret-xyz\n")
    cases = [("credmissing", {"credentialsFile": os.path.join(S["tmp"], "no-such-file")}, "credentials file"),
             ("credkeyonly", {"credentialsFile": only_key}, "no AWS secret access key in " + only_key),
             ("credprofile", {"credentialsFile": other, "profile": "prod"}, "has no profile [prod]"),
             ("credenv", {}, "no AWS access key id in the environment")]
    # The last case: a server started without the variables.
    saved = {k: os.environ.pop(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    try:
        S["srv"].kill()
        S["srv"].start()
        for name, creds, want in cases:
            rule = {"pattern": {"type": ["CredTest"]},
                    "target": dict({"type": "dynamodb", "table": "OrderReadModel", "endpoint": S["ddb"].endpoint,
                                    "key": {"orderId": "{{data.orderId}}"},
                                    "operations": {"CredTest": {"delete": True}}}, **creds),
                    "retry": {"maxAttempts": 2, "backoffMs": 20, "maxBackoffMs": 50}, "start": "beginning"}
            T.check(req("PUT", "/rules/" + name, json.dumps(rule)).status in (200, 201), "rule created")
            wait_for(lambda: rule_info(name)["stats"]["deadLetters"] == 1, name + " dead-lettered")
            dl = T.expect(req("GET", "/rules/%s/dead-letters" % name), 200)["deadLetters"]
            reason = dl[0]["deadLettered"]["reason"]
            T.check(want in reason, name + ": the reason", None, want, reason)
            T.expect(req("DELETE", "/rules/" + name), 204)
    finally:
        os.environ.update(saved)
        S["srv"].kill()
        S["srv"].start()
    log = open(S["srv"].log_path).read()
    T.check("file-secret-xyz" not in log and "stele-test-secret" not in log, "no secret in the log")
    T.check(S["srv"].alive(), "server alive")


if __name__ == "__main__":
    sys.exit(T.run(setup=setup, teardown=teardown))
