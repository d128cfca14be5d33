"""
test_http_pg_schema.py - the PostgreSQL backend's schema version 4 and the
writer's prepared statements (docs/backends.md, "Schema versions" and
"Prepared statements").

Starts its own PostgreSQL (pg_server.py) and Stele servers on it. Cases:

- a version 3 store migrates and reads identically: a store is written
  (categories, types, correlation ids, several streams), every read of it
  recorded ($all, streams, category and type queries forwards and
  backwards from every position, $ce- and $et- views, the listings); the
  server is stopped and the store put back to version 3 (version 3 is
  version 4 plus the indexes events_category and events_type and without
  the function stele_stream_rows, exactly what migration step 4 changes:
  the indexes are created again, the function dropped, the version row
  set to 3). `stele migrate --store URI` then takes it to version 4
  (the two indexes gone, the version row 4), a second store at version 3
  is migrated by the first start of `stele serve` instead, and every read
  gives what it gave before;
- the category and type queries, whose (key, position) indexes are gone,
  answer as a plain SQL scan of the events table does, from every
  position in both directions, also with holes in the view numbers (rows
  removed as a scavenge removes them);
- the stream row written only if it is still the version the batch read
  (schema version 4: no FOR UPDATE; pg_write.c): on two servers, eight
  clients append with `any` to one stream at once (every read of the row
  races another server's UPDATE): every append succeeds, once, at
  consecutive revisions; and a tombstone sent through one server while
  four clients append through the other lands after every event of the
  stream that was acknowledged and before none (a batch that read the row
  before the tombstone must not commit after it);
- the recovery of the writer's prepared statements: a server with the
  test hook STELE_PG_TEST_DISCARD=2 loses its prepared statements in
  PostgreSQL before every second batch (DISCARD ALL, or DEALLOCATE of one
  statement, in turn), as behind a pooler; every append still succeeds,
  exactly once, and PostgreSQL's log shows both recoveries ran
  (SQLSTATE 26000 "does not exist" and 42P05 "already exists"). Without
  the recovery in pg_write.c the appends fail with the 26000 error.
"""
import json
import os
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_server import PgServer  # noqa: E402
from stele_server import STELE_BIN, Server, Suite, request  # noqa: E402

T = Suite("http_pg_schema")
S = {}


def uri(db):
    pg = S["pg"]
    return "postgresql:///%s?host=%s&port=%d&user=postgres" % (db, pg.tmp, pg.port)


def setup():
    pg = S["pg"] = PgServer()
    with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
        f.write("max_connections = 60\nlog_min_error_statement = error\n")
    pg.start()
    for db in ("mig_cli", "mig_serve", "holes", "prep"):
        pg.psql("CREATE DATABASE " + db)


def teardown():
    for k in list(S):
        if k != "pg":
            S[k].cleanup()
    if "pg" in S:
        S["pg"].cleanup()


def post(port, stream, events, expected=None):
    h = {"Content-Type": "application/json"}
    if expected is not None:
        h["Stele-Expected-Revision"] = "no_stream" if expected < 0 else str(expected)
    return request(port, "POST", "/streams/" + stream, json.dumps(events), headers=h)


def get_json(port, path):
    r = request(port, "GET", path)
    return r.status, (json.loads(r.raw) if r.status == 200 else r.raw.decode(errors="replace"))


def write_store(port):
    """A store with three categories, four types, correlation ids; 90
    events in appends of 1 to 3 events."""
    n = 0
    for i in range(40):
        cat = ("Order", "Cart", "Ship")[i % 3]
        stream = "%s-%d" % (cat, i % 5)
        evs = []
        for k in range(1 + i % 3):
            t = ("Placed", "Paid", "Moved", "Closed")[(i + k) % 4]
            meta = {"$correlationId": "c%d" % (i % 4)}
            evs.append({"type": t, "data": {"i": i, "k": k}, "metadata": meta,
                        "id": str(uuid.uuid4())})
            n += 1
        r = post(port, stream, evs)
        T.check(r.status in (200, 201), "the store's appends succeed", None, 201,
                (r.status, r.raw[:200]))
    return n


def query_all(port, base, frm, backwards, limit):
    """Every event of a query from `frm`, following next links."""
    out, path, guard = [], "%s%sfrom=%s&direction=%s&limit=%d" % (
        base, "&" if "?" in base else "?", frm, "backwards" if backwards else "forwards",
        limit), 0
    while path and guard < 200:
        guard += 1
        st, body = get_json(port, path)
        if st != 200:
            return ("status", st, body)
        out += [(e["position"], e["stream"], e["revision"], e["type"]) for e in body["events"]]
        path = body.get("next") if body["events"] else None
    return out


def snapshot(port, npos):
    """Every read the migration must leave unchanged."""
    snap = {}
    snap["all"] = query_all(port, "/all", 0, False, 7)
    snap["all_back"] = query_all(port, "/all", "end", True, 7)
    for s in ["%s-%d" % (c, i) for c in ("Order", "Cart", "Ship") for i in range(5)]:
        snap["stream " + s] = get_json(port, "/streams/%s?limit=1000" % s)
    for key in ("/categories/Order", "/categories/Cart", "/categories/Ship",
                "/types/Placed", "/types/Paid", "/types/Moved", "/types/Closed",
                "/categories/Order?type=Paid", "/categories/Nothing", "/types/Nothing"):
        for p in range(0, npos + 1, 3):
            snap["%s f%d" % (key, p)] = query_all(port, key, p, False, 4)
            snap["%s b%d" % (key, p)] = query_all(port, key, p, True, 4)
        snap[key + " end"] = query_all(port, key, "end", True, 5)
    for v in ("$ce-Order", "$ce-Ship", "$et-Paid", "$et-Closed", "$bc-c1"):
        snap["view " + v] = get_json(port, "/streams/%s?limit=1000" % v)
        snap["view back " + v] = get_json(port, "/streams/%s?from=end&direction=backwards"
                                          "&limit=1000" % v)
    for lst in ("/streams?limit=1000", "/categories?limit=1000", "/types?limit=1000"):
        snap[lst] = get_json(port, lst)
    return snap


def indexes(db):
    return sorted(r[0] for r in S["pg"].psql(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'events' AND schemaname = "
        "current_schema()", db=db))


def version(db):
    return S["pg"].psql("SELECT version FROM stele_schema", db=db)[0][0]


def functions(db):
    return S["pg"].psql("SELECT proname FROM pg_proc WHERE proname = 'stele_stream_rows' AND "
                        "pronamespace = current_schema()::regnamespace", db=db)


def to_v3(db):
    """Put a version 4 store back to version 3: version 3's schema is
    version 4's plus these two indexes (pg.c's migrations 0-2 create them,
    step 4 drops them) and without step 4's function."""
    S["pg"].psql("DROP FUNCTION stele_stream_rows(int, bigint);"
                 "CREATE INDEX events_category ON events (stream_type, global_position);"
                 "CREATE INDEX events_type ON events (event_type, global_position);"
                 "UPDATE stele_schema SET version = 3", db=db)


def migrate_case(db, with_cli):
    srv = S[db] = Server(store=uri(db), name=db).start()
    n = write_store(srv.port)
    before = snapshot(srv.port, n)
    T.check(version(db) == "4", "a new store is at version 4", None, "4", version(db))
    v4 = indexes(db)
    T.check("events_category" not in v4 and "events_type" not in v4,
            "version 4 has no (category, position) or (type, position) index", None, "absent", v4)
    srv.stop()
    to_v3(db)
    T.check(version(db) == "3" and "events_category" in indexes(db) and not functions(db),
            "the store is at version 3 with its indexes", None, "3", (version(db), indexes(db)))
    if with_cli:
        r = subprocess.run([STELE_BIN, "migrate", "--store", uri(db)], capture_output=True,
                           text=True, timeout=120)
        T.check(r.returncode == 0, "stele migrate succeeds", None, 0,
                (r.returncode, r.stdout, r.stderr))
        T.check(version(db) == "4", "stele migrate takes version 3 to 4", None, "4", version(db))
    srv.start()
    T.check(version(db) == "4", "after the first start the store is at version 4", None, "4",
            version(db))
    T.check(indexes(db) == v4, "the migrated store has version 4's indexes", None, v4,
            indexes(db))
    T.check(len(functions(db)) == 1, "the migrated store has stele_stream_rows", None, 1,
            functions(db))
    after = snapshot(srv.port, n)
    diff = [k for k in before if before[k] != after.get(k)]
    T.check(not diff, "every read gives what it gave before the migration", None, [],
            [(k, before[k], after.get(k)) for k in diff[:3]])
    bad = [k for k in before if isinstance(before[k], tuple) and before[k][0] == "status"]
    T.check(not bad, "every recorded read succeeded", None, [], bad[:5])
    # Appends go on after the migration.
    r = post(srv.port, "Order-9", [{"type": "Placed", "data": {}, "id": str(uuid.uuid4())}])
    T.check(r.status in (200, 201), "appends work after the migration", None, 201, r.status)


@T.case
def v3_store_migrates_with_stele_migrate():
    migrate_case("mig_cli", True)


@T.case
def v3_store_migrates_on_first_start():
    migrate_case("mig_serve", False)


def table_rows(db):
    """The events table itself (no index): (position, stream, revision,
    type, category) in position order."""
    rows = S["pg"].psql("SELECT global_position, stream_id, revision, event_type, stream_type "
                        "FROM events ORDER BY global_position", db=db)
    return [(int(a), b, int(c), d, e) for a, b, c, d, e in rows]


def expect(rows, col, key, frm, backwards):
    """What a query answers, computed from the table's rows."""
    i = 4 if col == "stream_type" else 3
    sel = [r[:4] for r in rows if r[i] == key and (r[0] <= frm if backwards else r[0] >= frm)]
    return sel[::-1] if backwards else sel


@T.case
def category_and_type_queries_match_a_scan_with_holes():
    db = "holes"
    srv = S[db] = Server(store=uri(db), name=db).start()
    n = write_store(srv.port)
    # Holes in the view numbers, as a scavenge leaves them: the first
    # event of each view, a run in the middle, and the last of one type.
    S["pg"].psql("DELETE FROM events WHERE ce_rev IN (0, 5, 6, 7, 8) OR et_rev = 3 OR "
                 "global_position = (SELECT max(global_position) FROM events WHERE "
                 "event_type = 'Moved')", db=db)
    bad = []
    checked = 0
    rows = table_rows(db)
    for col, path, keys in (("stream_type", "/categories/", ("Order", "Cart", "Ship", "None")),
                            ("event_type", "/types/", ("Placed", "Paid", "Moved", "Closed"))):
        for key in keys:
            for p in range(0, n + 2):
                for back in (False, True):
                    want = expect(rows, col, key, p, back)
                    got = query_all(srv.port, path + key, p, back, 4)
                    checked += 1
                    if got != want:
                        bad.append((path + key, p, back, want[:4], got[:4] if isinstance(
                            got, list) else got))
    T.check(not bad, "category and type queries equal a scan of the table (%d reads)" % checked,
            None, [], bad[:3])
    # The plan uses the view numbers' index, not a scan of the table.
    plan = "\n".join(r[0] for r in S["pg"].psql(
        "SET enable_seqscan = off; EXPLAIN SELECT global_position FROM events e WHERE e.stream_type = 'Order' AND "
        "e.ce_rev >= 3 ORDER BY e.ce_rev LIMIT 10", db=db))
    T.check("events_ce" in plan, "the category query runs on events_ce", None, "events_ce",
            plan)


@T.case
def stream_rows_checked_across_servers():
    db = "race"
    S["pg"].psql("CREATE DATABASE race")
    a = S["race_a"] = Server(store=uri(db), name="race_a").start()
    b = S["race_b"] = Server(store=uri(db), name="race_b").start()
    errs, acked = [], []
    lock = threading.Lock()

    def anyclient(srv, c):
        for i in range(25):
            r = post(srv.port, "hot-1", [{"type": "T", "data": {"c": c, "i": i},
                                          "id": str(uuid.uuid4())}])
            with lock:
                if r.status != 201:
                    errs.append((c, i, r.status, r.raw[:200]))
                else:
                    acked.append(json.loads(r.raw)["firstRevision"])
    ts = [threading.Thread(target=anyclient, args=((a, b)[c % 2], c)) for c in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    T.check(not errs, "every `any` append to one stream through two servers succeeds", None, [],
            errs[:3])
    T.check(sorted(acked) == list(range(200)), "each at its own revision, consecutive", None,
            "0..199", sorted(acked)[:10])
    st, body = get_json(a.port, "/streams/hot-1?limit=1000")
    T.check(st == 200 and [e["revision"] for e in body["events"]] == list(range(200)),
            "the stream holds the 200 events once each", None, 200,
            st == 200 and len(body["events"]))
    # A tombstone racing appends through the other server.
    stop = threading.Event()
    ok_pos, bad = [], []

    def tombclient(c):
        while not stop.is_set():
            r = post(a.port, "tomb-1", [{"type": "T", "data": {"c": c}, "id": str(uuid.uuid4())}])
            with lock:
                if r.status == 201:
                    ok_pos.append(json.loads(r.raw)["firstPosition"])
                elif r.status == 410:
                    return
                else:
                    bad.append((r.status, r.raw[:200]))
                    return
    ts = [threading.Thread(target=tombclient, args=(c,)) for c in range(4)]
    for t in ts:
        t.start()
    while True:
        with lock:
            if len(ok_pos) >= 40 or bad:
                break
        time.sleep(0.01)
    r = request(b.port, "DELETE", "/streams/tomb-1?tombstone=true")
    T.check(r.status in (200, 204), "the tombstone succeeds", None, 204, (r.status, r.raw[:200]))
    for t in ts:
        t.join(timeout=60)
    stop.set()
    T.check(not bad, "appends fail only with 410 after the tombstone", None, [], bad[:3])
    st, body = get_json(a.port, "/streams/$deletes?limit=1000")
    dpos = [e["position"] for e in body.get("events", []) if "tomb-1" in json.dumps(e)] \
        if st == 200 else []
    T.check(len(dpos) == 1, "the tombstone is recorded in $deletes", None, 1, (st, dpos))
    late = [p for p in ok_pos if dpos and p > dpos[0]]
    T.check(not late, "no acknowledged append lands after the tombstone", None, [], late[:5])
    rows = S["pg"].psql("SELECT count(*) FROM events WHERE stream_id = 'tomb-1' AND "
                        "global_position > (SELECT min(global_position) FROM events WHERE "
                        "stream_id = '$deletes')", db=db)
    T.check(rows[0][0] == "0", "no event of the stream is after the tombstone in the table",
            None, "0", rows)
    with open(os.path.join(S["pg"].tmp, "pg.log"), errors="replace") as f:
        seen = f.read().count("a stream row changed after the batch read it")
    print("    (stream row version checks that failed and were retried: %d)" % seen)


@T.case
def prepared_statements_recovered_after_discard():
    db = "prep"
    os.environ["STELE_PG_TEST_DISCARD"] = "2"
    os.environ["STELE_PG_WRITERS"] = "1"
    try:
        srv = S[db] = Server(store=uri(db), name=db).start()
    finally:
        del os.environ["STELE_PG_TEST_DISCARD"]
        del os.environ["STELE_PG_WRITERS"]
    statuses = []
    # One client, appends one after another: every batch is one append,
    # so every second one meets a discarded statement.
    for i in range(24):
        r = post(srv.port, "prep-%d" % (i % 3), [{"type": "T", "data": {"i": i},
                                                  "id": str(uuid.uuid4())}],
                 expected=i // 3 - 1)
        statuses.append((r.status, r.raw[:160]))
    bad = [s for s in statuses if s[0] not in (200, 201)]
    T.check(not bad, "every sequential append succeeds across the discards", None, [], bad[:3])
    # Eight clients at once: batches of several appends meet them too.
    errs = []

    def client(c):
        for i in range(10):
            r = post(srv.port, "prep-c%d" % c, [{"type": "T", "data": {"i": i},
                                                 "id": str(uuid.uuid4())}], expected=i - 1)
            if r.status not in (200, 201):
                errs.append((c, i, r.status, r.raw[:160]))
    ts = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    T.check(not errs, "every concurrent append succeeds across the discards", None, [], errs[:3])
    st, body = get_json(srv.port, "/all?limit=1000")
    evs = body["events"] if st == 200 else []
    T.check(len(evs) == 24 + 80 and [e["position"] for e in evs] == list(range(len(evs))),
            "each append was written exactly once, $all gapless", None, 104, len(evs))
    with open(os.path.join(S["pg"].tmp, "pg.log"), errors="replace") as f:
        log = f.read()
    T.check('prepared statement "stele_w' in log and "does not exist" in log,
            "the writer met a discarded statement (26000)", None, "26000", log[-600:])
    T.check("already exists" in log, "the writer met a statement still there (42P05)", None,
            "42P05", log[-600:])


if __name__ == "__main__":
    sys.exit(T.run(setup=setup, teardown=teardown))
