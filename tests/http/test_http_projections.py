#!/usr/bin/env python3
"""test_http_projections.py - projections over HTTP against a real `stele serve`.

  - create (continuous, one-time), status, query, state, result, enable,
    disable, reset, update, delete, with every error (bad name, syntax
    error, exists, unknown, bad parameters, wrong methods);
  - seed 000's OrderReadModel (orders by customer, a partitionBy
    projection) and seed 001's OrderSummaryProjection (totals over the
    Order category), compared with a fold done here;
  - SIGKILL of the server while appends continue and projections run
    (several rounds): after each restart every state equals the fold of
    the events the store holds, emitted events are there exactly once;
  - per-projection lines in /metrics.

Python 3 standard library only.
"""
import json
import os
import random
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stele_server import STELE_BIN, Client, Server, Suite, request, stop_servers  # noqa: E402

T = Suite("test_http_projections")
S = None
C = None

ORDERS_BY_CUSTOMER = """
fromCategory('Order')
.partitionBy(function (e) { return e.body.customerId; })
.when({
  $init: function () { return { orders: 0, total: 0, open: 0 }; },
  OrderPlaced: function (s, e) { s.orders++; s.total += e.body.amount; s.open++; },
  OrderShipped: function (s, e) { s.open--; }
});
"""

ORDER_SUMMARY = """
fromCategory('Order').when({
  $init: function () { return { placed: 0, shipped: 0, revenue: 0 }; },
  OrderPlaced: function (s, e) { s.placed++; s.revenue += e.body.amount; },
  OrderShipped: function (s, e) { s.shipped++;
    emit('Shipments-' + e.body.customerId, 'Shipped', { order: e.streamId }); }
}).transformBy(function (s) { return { open: s.placed - s.shipped }; }).outputState();
"""


def setup():
    global S, C
    S = Server().start()
    C = Client(S.port)


def teardown():
    stop_servers([S], client=C, check_exit=False)


def append(stream, events):
    r = C.post("/streams/" + stream, json.dumps([{"type": t, "data": d} for t, d in events]))
    return T.expect(r, 201)


def wait(name, timeout=30):
    """Until the projection's lag is 0 (or it is not running)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = T.expect(C.get("/projections/" + name), 200)
        if b["status"] != "Running" or b["lag"] == 0:
            return b
        time.sleep(0.02)
    T.fail("projection %s did not catch up" % name)


def state(name, partition=None, result=False):
    path = "/projections/%s/%s" % (name, "result" if result else "state")
    if partition is not None:
        path += "?partition=" + partition
    return T.expect(C.get(path), 200)


def read_all():
    evs, frm = [], 0
    while True:
        b = T.expect(C.get("/all?from=%d&limit=1000" % frm), 200)
        evs += b["events"]
        if not b["events"] or "next" not in b:
            return evs
        frm = b["events"][-1]["position"] + 1


ORDERS = {}  # order id -> (customer, amount, shipped)


def place_orders(n, start):
    for i in range(start, start + n):
        cust = "cust-%d" % (i % 5)
        amount = (i * 37) % 100 + 1
        append("Order-%d" % i, [("OrderPlaced", {"customerId": cust, "amount": amount})])
        ORDERS[i] = [cust, amount, False]
        if i % 3 == 0:
            append("Order-%d" % i, [("OrderShipped", {"customerId": cust})])
            ORDERS[i][2] = True


def model_by_customer(orders):
    m = {}
    for cust, amount, shipped in orders.values():
        s = m.setdefault(cust, {"orders": 0, "total": 0, "open": 0})
        s["orders"] += 1
        s["total"] += amount
        s["open"] += 0 if shipped else 1
    return m


@T.case
def lifecycle_and_errors():
    place_orders(30, 0)
    r = C.post("/projections/orders-by-customer", ORDERS_BY_CUSTOMER)
    b = T.expect(r, 201)
    T.check(b["name"] == "orders-by-customer" and b["mode"] == "Continuous", "create answer",
            r.req, "name, mode", b)
    T.expect(C.post("/projections/order-summary?emit=true", ORDER_SUMMARY), 201)
    T.expect(C.post("/projections/orders-by-customer", ORDERS_BY_CUSTOMER), 409,
             "PROJECTION_EXISTS")
    T.expect(C.post("/projections/bad", "fromAll().when({X: function(s, e) { s.x = ; }});"),
             400, "INVALID_ARGUMENT")
    T.expect(C.post("/projections/nosource", "var x = 1;"), 400, "INVALID_ARGUMENT")
    T.expect(C.post("/projections/%24sys", "fromAll();"), 400, "INVALID_ARGUMENT")
    T.expect(C.post("/projections/x?mode=sometimes", "fromAll();"), 400, "INVALID_ARGUMENT")
    T.expect(C.post("/projections/x?emit=maybe", "fromAll();"), 400, "INVALID_ARGUMENT")
    T.expect(C.post("/projections/x?timeoutMs=abc", "fromAll();"), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/projections/nope"), 404, "PROJECTION_NOT_FOUND")
    T.expect(C.get("/projections/nope/state"), 404, "PROJECTION_NOT_FOUND")
    T.expect(C.post("/projections/nope/enable", ""), 404, "PROJECTION_NOT_FOUND")
    T.expect(C.request("PUT", "/projections", b""), 405, "METHOD_NOT_ALLOWED")
    T.expect(C.get("/projections/orders-by-customer/enable"), 405, "METHOD_NOT_ALLOWED")
    T.expect(C.get("/projections/orders-by-customer/bogus"), 404, "NOT_FOUND")
    q = C.get("/projections/orders-by-customer/query")
    T.check(q.status == 200 and q.raw.decode() == ORDERS_BY_CUSTOMER, "query text", q.req,
            ORDERS_BY_CUSTOMER, q)
    lst = T.expect(C.get("/projections"), 200)
    T.check(sorted(p["name"] for p in lst["projections"]) == ["order-summary", "orders-by-customer"],
            "list", None, "two projections", lst)
    wait("orders-by-customer")
    wait("order-summary")
    for cust, want in model_by_customer(ORDERS).items():
        got = state("orders-by-customer", cust)
        T.check(got == want, "OrderReadModel of " + cust, None, want, got)
    T.check(state("orders-by-customer", "nobody") is None, "unknown partition: null")
    placed = len(ORDERS)
    shipped = sum(1 for o in ORDERS.values() if o[2])
    got = state("order-summary")
    want = {"placed": placed, "shipped": shipped,
            "revenue": sum(o[1] for o in ORDERS.values())}
    T.check(got == want, "order summary state", None, want, got)
    got = state("order-summary", result=True)
    T.check(got == {"open": placed - shipped}, "order summary result", None, placed - shipped, got)
    # disable: events appended meanwhile are processed after enable
    T.expect(C.post("/projections/orders-by-customer/disable", ""), 200)
    place_orders(5, 30)
    b = T.expect(C.get("/projections/orders-by-customer"), 200)
    T.check(b["status"] == "Stopped" and not b["enabled"], "disabled", None, "Stopped", b)
    T.expect(C.post("/projections/orders-by-customer/enable", ""), 200)
    wait("orders-by-customer")
    for cust, want in model_by_customer(ORDERS).items():
        T.check(state("orders-by-customer", cust) == want, "after enable: " + cust)
    # reset rebuilds the same states; emitted streams hold each event once
    T.expect(C.post("/projections/order-summary/reset", ""), 200)
    wait("order-summary")
    for c in range(5):
        r = C.get("/streams/Shipments-cust-%d?limit=1000" % c)
        n = len(r.body["events"]) if r.status == 200 else 0
        want = sum(1 for o in ORDERS.values() if o[2] and o[0] == "cust-%d" % c)
        T.check(n == want, "emitted Shipped events of cust-%d after reset" % c, None, want, n)
    # update: a new query goes on from the checkpoint with the kept state
    upd = ORDERS_BY_CUSTOMER.replace("s.orders++;", "s.orders += 100;")
    T.expect(C.request("PUT", "/projections/orders-by-customer/query", upd), 200)
    append("Order-1000", [("OrderPlaced", {"customerId": "cust-0", "amount": 5})])
    wait("orders-by-customer")
    m = model_by_customer(ORDERS)["cust-0"]
    got = state("orders-by-customer", "cust-0")
    T.check(got["orders"] == m["orders"] + 100 and got["total"] == m["total"] + 5,
            "updated query", None, "orders + 100", got)
    ORDERS[1000] = ["cust-0", 5, False]
    T.expect(C.request("PUT", "/projections/orders-by-customer/query", ORDERS_BY_CUSTOMER), 200)
    T.expect(C.post("/projections/orders-by-customer/reset", ""), 200)
    wait("orders-by-customer")
    for cust, want in model_by_customer(ORDERS).items():
        T.check(state("orders-by-customer", cust) == want, "after reset: " + cust)
    # transient: the answer now, nothing kept
    got = T.expect(C.post("/projections/transient", ORDER_SUMMARY.replace("emit(", "(function(){})(")), 200)
    want_open = sum(1 for o in ORDERS.values() if not o[2])
    T.check(got == {"open": want_open}, "transient result", None, want_open, got)
    T.expect(C.post("/projections/transient", "fromAll("), 400, "INVALID_ARGUMENT")
    T.expect(C.post("/projections/transient", ORDER_SUMMARY), 400, "INVALID_ARGUMENT")
    T.check(len(T.expect(C.get("/projections"), 200)["projections"]) == 2, "nothing kept")
    # one-time
    T.expect(C.post("/projections/once?mode=onetime", ORDER_SUMMARY.replace("emit(", "(function(){})(")), 201)
    deadline = time.time() + 30
    while T.expect(C.get("/projections/once"), 200)["status"] != "Completed":
        T.check(time.time() < deadline, "one-time completes")
        time.sleep(0.02)
    T.expect(C.delete("/projections/once?deleteState=true"), 200)
    T.expect(C.get("/projections/once"), 404, "PROJECTION_NOT_FOUND")
    T.expect(C.delete("/projections/once?deleteState=perhaps"), 400, "INVALID_ARGUMENT")


@T.case
def hostile_queries():
    T.expect(C.post("/projections/loop?timeoutMs=100",
                    "fromCategory('Order').when({$any: function(s, e){ for(;;){} }});"), 201)
    T.expect(C.post("/projections/bomb?memoryLimit=8000000",
                    "fromCategory('Order').when({$any: function(s, e){ var a=[]; "
                    "for(;;) a.push(new Array(1000).join('y') + a.length); }});"), 201)
    for name, want in (("loop", "execution timeout"), ("bomb", "memory limit")):
        b = wait(name)
        T.check(b["status"] == "Faulted" and want in b["fault"] and "faultPosition" in b,
                "hostile " + name, None, "Faulted: " + want, b)
    T.expect(C.get("/health/ready"), 200)
    append("Order-2000", [("OrderPlaced", {"customerId": "cust-1", "amount": 1})])
    ORDERS[2000] = ["cust-1", 1, False]
    wait("orders-by-customer")
    T.check(state("orders-by-customer", "cust-1") == model_by_customer(ORDERS)["cust-1"],
            "others unaffected")
    for name in ("loop", "bomb"):
        T.expect(C.delete("/projections/" + name), 200)


ORDER_READ_MODEL = """
fromCategory('Order').foreachStream().when({
  $init: function () { return { customerId: null, status: 'new', amount: 0 }; },
  OrderPlaced: function (s, e) { s.customerId = e.body.customerId; s.amount = e.body.amount;
    s.status = 'placed'; },
  OrderShipped: function (s, e) { s.status = 'shipped'; }
});
"""

ACCOUNT = """
fromCategory('Account').foreachStream().when({
  $init: function () { return { balance: 0, count: 0 }; },
  MoneyDeposited: function (s, e) { s.balance += e.body.amount; s.count++; },
  MoneyWithdrawn: function (s, e) { s.balance -= e.body.amount; s.count++; }
});
"""


@T.case
def read_models_and_reconstruct():
    # seed 000's OrderReadModel: one row per order, queried by customerId
    T.expect(C.post("/projections/order-rows", ORDER_READ_MODEL), 201)
    b = wait("order-rows")
    rows, after = [], None
    while True:
        path = "/projections/order-rows/partitions?limit=7"
        if after is not None:
            path += "&after=" + after
        page = T.expect(C.get(path), 200)
        rows += page["partitions"]
        if "next" not in page:
            break
        after = page["partitions"][-1]["key"]
    keys = [r["key"] for r in rows]
    want_keys = sorted("Order-%d" % i for i in ORDERS)
    T.check(keys == want_keys, "every order in key order", None, want_keys[:5], keys[:5])
    for r in rows:
        o = ORDERS[int(r["key"][6:])]
        want = {"customerId": o[0], "status": "shipped" if o[2] else "placed", "amount": o[1]}
        T.check(r["state"] == want, "row " + r["key"], None, want, r["state"])
    got = T.expect(C.get('/projections/order-rows/partitions?field=customerId&value=%22cust-2%22'
                         '&limit=1000'), 200)
    want = sorted("Order-%d" % i for i, o in ORDERS.items() if o[0] == "cust-2")
    T.check([r["key"] for r in got["partitions"]] == want, "orders of cust-2", None, want, got)
    T.expect(C.get("/projections/order-rows/partitions?field=customerId"), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/projections/order-rows/partitions?field=x&value=%7Bbad"), 400,
             "INVALID_ARGUMENT")
    T.expect(C.get("/projections/order-rows/partitions?limit=0"), 400, "INVALID_ARGUMENT")
    # seed 002's reconstructState(aggregateId, upToSequence), snapshots every 100
    T.expect(C.post("/projections/accounts?snapshotEvery=100", ACCOUNT), 201)
    balance, balances = 0, []
    for i in range(0, 250, 50):
        evs = []
        for j in range(i, i + 50):
            amt = j % 13 + 1
            t = "MoneyWithdrawn" if j % 4 == 3 else "MoneyDeposited"
            balance += -amt if t == "MoneyWithdrawn" else amt
            balances.append(balance)
            evs.append((t, {"amount": amt}))
        append("Account-7", evs)
    wait("accounts")
    for to in (0, 57, 99, 100, 199, 230, 249):
        r = T.expect(C.get("/streams/Account-7/state?projection=accounts&to=%d" % to), 200)
        want = {"balance": balances[to], "count": to + 1}
        T.check(r["state"] == want and r["revision"] == to, "reconstruct to %d" % to, None, want, r)
        snap = (to + 1) // 100 * 100 - 1 if to >= 99 else None
        T.check(r["snapshotRevision"] == snap, "from the snapshot at or before %d" % to, None,
                snap, r)
    r = T.expect(C.get("/streams/Account-7/state?projection=accounts"), 200)
    T.check(r["state"]["balance"] == balance and r["revision"] == 249, "reconstruct all")
    T.expect(C.get("/streams/Account-7/state?projection=nope"), 404, "PROJECTION_NOT_FOUND")
    T.expect(C.get("/streams/Account-7/state?projection=accounts&to=x"), 400, "INVALID_ARGUMENT")
    T.expect(C.get("/streams/Account-7/state?projection=accounts&asOf=yesterday"), 400,
             "INVALID_ARGUMENT")
    T.expect(C.get("/streams/Account-404/state?projection=accounts"), 404)


def stele(*args, stdin=None):
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[k]
    env["STELE_SERVER"] = "http://127.0.0.1:%d" % S.port
    p = subprocess.run([STELE_BIN] + list(args), capture_output=True, text=True, env=env,
                       input=stdin, timeout=60)
    return p.returncode, p.stdout, p.stderr


@T.case
def cli():
    q = "fromCategory('Order').foreachStream().when({$init: function(){ return {n: 0}; }, " \
        "$any: function(s, e){ s.n++; }});"
    rc, out, err = stele("projection", "create", "cli-count", "--query", q, "--snapshot-every", "2")
    T.check(rc == 0 and json.loads(out)["name"] == "cli-count", "create", None, 0, (rc, out, err))
    rc, out, err = stele("projection", "create", "cli-file", "--file", "-", stdin=q)
    T.check(rc == 0, "create from stdin", None, 0, (rc, out, err))
    wait("cli-count")
    rc, out, err = stele("projection", "status", "cli-count")
    T.check(rc == 0 and json.loads(out)["status"] == "Running", "status", None, "Running", out)
    rc, out, err = stele("projection", "list")
    names = [p["name"] for p in json.loads(out)["projections"]]
    T.check(rc == 0 and "cli-count" in names and "cli-file" in names, "list", None, names, out)
    n0 = sum(1 for e in read_all() if e["stream"] == "Order-0")
    rc, out, err = stele("projection", "state", "cli-count", "--partition", "Order-0")
    T.check(rc == 0 and json.loads(out) == {"n": n0}, "state", None, {"n": n0}, (rc, out, err))
    rc, out, err = stele("projection", "partitions", "cli-count", "--limit", "3", "--where", "n=%d" % n0)
    got = json.loads(out)["partitions"] if rc == 0 else None
    T.check(rc == 0 and got and all(p["state"] == {"n": n0} for p in got), "partitions --where",
            None, n0, (rc, out, err))
    rc, out, err = stele("projection", "fold", "cli-count", "Order-0", "--to", "0")
    T.check(rc == 0 and json.loads(out)["state"] == {"n": 1}, "fold --to 0", None, 1, (rc, out, err))
    for sub in ("disable", "enable", "reset"):
        rc, out, err = stele("projection", sub, "cli-count")
        T.check(rc == 0, sub, None, 0, (rc, out, err))
    rc, out, err = stele("projection", "query", "cli-count")
    T.check(rc == 0 and out.strip() == q, "query", None, q, out)
    rc, out, err = stele("projection", "update", "cli-count", "--query", q.replace("s.n++", "s.n += 2"))
    T.check(rc == 0, "update", None, 0, (rc, out, err))
    rc, out, err = stele("projection", "delete", "cli-file", "--delete-state")
    T.check(rc == 0, "delete", None, 0, (rc, out, err))
    rc, out, err = stele("projection", "status", "cli-file")
    T.check(rc == 1 and "PROJECTION_NOT_FOUND" in err, "status of a deleted one", None, 1,
            (rc, out, err))
    rc, out, err = stele("projection", "create", "bad", "--query", "fromAll(")
    T.check(rc == 1 and "INVALID_ARGUMENT" in err, "syntax error", None, 1, (rc, out, err))
    rc, out, err = stele("projection", "run", "--query", q.replace("foreachStream()", "partitionBy(function(e){ return 'all'; })"))
    T.check(rc == 0 and json.loads(out)["all"]["n"] > 0, "run (transient)", None, "n", (rc, out, err))
    rc, out, err = stele("projection", "status")
    T.check(rc == 2, "missing name", None, 2, (rc, out, err))
    rc, out, err = stele("projection", "frobnicate", "x")
    T.check(rc == 2, "unknown subcommand", None, 2, (rc, out, err))
    rc, out, err = stele("projection", "create", "x")
    T.check(rc == 2, "create without a query", None, 2, (rc, out, err))


INLINE = """
fromCategory('Wallet').foreachStream().when({
  $init: function () { return { balance: 0 }; },
  Credited: function (s, e) { s.balance += e.body.amount; },
  Debited: function (s, e) {
    if (s.balance < e.body.amount) throw new Error('insufficient funds');
    s.balance -= e.body.amount; }
});
"""


@T.case
def inline_projection():
    b = T.expect(C.post("/projections/wallets?mode=inline", INLINE), 201)
    T.check(b["mode"] == "Inline", "inline mode", None, "Inline", b)
    T.expect(C.post("/projections/wallets2?mode=inline", INLINE), 409, "PROJECTION_EXISTS")
    T.expect(C.post("/projections/w3?mode=inline", "fromAll().when({});"), 400, "INVALID_ARGUMENT")
    append("Wallet-1", [("Credited", {"amount": 50}), ("Debited", {"amount": 20})])
    st = state("wallets", "Wallet-1")
    T.check(st == {"balance": 30}, "state stored with the append", None, 30, st)
    r = C.post("/streams/Wallet-1", json.dumps([{"type": "Debited", "data": {"amount": 31}}]))
    T.expect(r, 400, "INVALID_ARGUMENT")
    T.check("insufficient funds" in r.body["error"]["message"], "the handler's message", r.req,
            "insufficient funds", r)
    evs = T.expect(C.get("/streams/Wallet-1"), 200)["events"]
    T.check(len(evs) == 2, "nothing written by the refused append", None, 2, len(evs))
    append("Wallet-1", [("Debited", {"amount": 30})])
    T.check(state("wallets", "Wallet-1") == {"balance": 0}, "after a valid debit")
    snap = T.expect(C.get("/streams/Wallet-1/snapshots"), 200)
    T.check(snap.get("revision") == 2 and snap.get("state") == {"balance": 0},
            "the snapshot at the head", None, 2, snap)


@T.case
def metrics():
    r = C.get("/metrics")
    text = r.raw.decode()
    T.check('stele_projection_events_processed_total{projection="orders-by-customer"}' in text
            and 'stele_projection_lag_events{projection="order-summary"}' in text,
            "per-projection metrics", None, "lines", text[-2000:])


@T.case
def sigkill_rounds():
    global C
    stop = threading.Event()
    counter = [3000]

    def writer():
        cl = Client(S.port, timeout=5)
        while not stop.is_set():
            i = counter[0]
            counter[0] += 1
            try:
                cl.post("/streams/Order-%d" % i, json.dumps([{"type": "OrderPlaced", "data": {
                    "customerId": "cust-%d" % (i % 5), "amount": i % 100 + 1}}]))
            except Exception:  # noqa: BLE001 - the server is being killed
                return

    rounds = int(os.environ.get("PROJ_KILL_ROUNDS", "6"))
    for rnd in range(rounds):
        stop.clear()
        th = threading.Thread(target=writer)
        th.start()
        time.sleep(0.1 + random.random() * 0.3)
        S.kill()
        stop.set()
        th.join()
        S.start()
        C = Client(S.port)
        wait("orders-by-customer")
        wait("order-summary")
        orders = {}
        for e in read_all():
            s, t, d = e["stream"], e["type"], e.get("data")
            if not s.startswith("Order-"):
                continue
            i = int(s[6:])
            if t == "OrderPlaced":
                orders[i] = [d["customerId"], d["amount"], False]
            elif t == "OrderShipped":
                orders[i][2] = True
        for cust, want in model_by_customer(orders).items():
            got = state("orders-by-customer", cust)
            T.check(got == want, "round %d: %s" % (rnd, cust), None, want, got)
        want = {"placed": len(orders), "shipped": sum(1 for o in orders.values() if o[2]),
                "revenue": sum(o[1] for o in orders.values())}
        got = state("order-summary")
        T.check(got == want, "round %d: summary" % rnd, None, want, got)


@T.case
def deleted_needs_foreach_stream():
    """As KurrentDB: $deleted is only for foreachStream() projections. A
    partitionBy() projection or one without partitions that has it is
    refused on every door (HTTP create, update and transient queries, the
    CLI), with the reason, and nothing is stored."""
    part = "fromCategory('Order').partitionBy(function(e){ return 'p'; }).when({" \
        "$any: function(s, e){ s.n = (s.n || 0) + 1; }, $deleted: function(s, e){ return null; }});"
    whole = "fromAll().when({$any: function(s, e){ s.n = (s.n || 0) + 1; }, " \
        "$deleted: function(s, e){ s.gone = true; }});"
    for i, q in enumerate((part, whole)):
        r = C.post("/projections/del-%d" % i, q)
        T.expect(r, 400, "INVALID_ARGUMENT")
        T.check("foreachStream()" in r.body["error"]["message"], "the reason", r.req,
                "foreachStream()", r.body)
        T.expect(C.get("/projections/del-%d" % i), 404, "PROJECTION_NOT_FOUND")
        T.expect(C.post("/projections/transient", q), 400, "INVALID_ARGUMENT")
        rc, out, err = stele("projection", "create", "del-cli-%d" % i, "--query", q)
        T.check(rc == 1 and "INVALID_ARGUMENT" in err and "foreachStream()" in err,
                "CLI create", None, 1, (rc, out, err))
    ok = "fromCategory('Order').foreachStream().when({$any: function(s, e){ s.n = (s.n || 0) + 1; }, " \
        "$deleted: function(s, e){ return null; }});"
    T.expect(C.post("/projections/del-ok", ok), 201)
    r = C.request("PUT", "/projections/del-ok/query", part.encode())
    T.expect(r, 400, "INVALID_ARGUMENT")
    rc, out, err = stele("projection", "update", "del-ok", "--query", whole)
    T.check(rc == 1 and "foreachStream()" in err, "CLI update", None, 1, (rc, out, err))
    q = C.get("/projections/del-ok/query")
    T.check(q.status == 200 and q.raw.decode() == ok, "the query is unchanged", q.req, ok, q)
    T.expect(C.delete("/projections/del-ok"), 200)


if __name__ == "__main__":
    T.run(setup, teardown)
