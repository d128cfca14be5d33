/*
 * test_proj.c - projections through the library API (src/proj):
 * KurrentDB's documented projection shapes (count by type, per-stream
 * state, partitionBy, emit, linkTo, outputState, bi-state) against a model
 * fold computed here; reset and update; hostile queries (endless loop,
 * memory bomb, throw, huge state, syntax error) fault or are refused while
 * the store keeps working; and SIGKILL rounds: a child appends while its
 * projections run and is killed at a random moment, then the parent
 * checks that every state equals the model fold of the events in the
 * store and every emitted event is there exactly once.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static int passed;

static void append_json(stele_db *db, const char *stream, const char *type, const char *json)
{
    stele_event_in ev = {.type = type, .data = json, .data_len = strlen(json),
                         .flags = STELE_EVENT_JSON};
    CHECK_OK(stele_append(db, stream, STELE_ANY, &ev, 1, NULL));
}

static void create(stele_db *db, const char *name, const char *q, int emit)
{
    stele_projection_settings s = {.query = q, .query_len = strlen(q), .enabled = 1,
                                   .emit_enabled = emit};
    CHECK_OK(stele_projection_create(db, name, &s));
}

static char *state(stele_db *db, const char *name, const char *part)
{
    char *j = NULL;
    CHECK_OK(stele_projection_state(db, name, part, 0, &j, NULL));
    return j;
}

static void expect_state(stele_db *db, const char *name, const char *part, const char *want)
{
    char *j = state(db, name, part);
    if (!j || strcmp(j, want)) {
        fprintf(stderr, "projection %s partition '%s': state %s, want %s\n", name, part,
                j ? j : "(none)", want);
        CHECK(0);
    }
    stele_free(j);
}

static void wait_all(stele_db *db, const char *name)
{
    CHECK_OK(stele_projection_wait(db, name, STELE_END, 30000));
}

static const char *status(stele_db *db, const char *name, char *fault, size_t cap)
{
    static char st[32];
    stele_projection_info *in = NULL;
    CHECK_OK(stele_projection_get(db, name, &in));
    if (!in)
        return "";
    snprintf(st, sizeof st, "%s", in->status);
    if (fault)
        snprintf(fault, cap, "%s", in->fault);
    stele_projection_info_free(in);
    return st;
}

/* Count of events per stream of a type, from the store (the model). */
static size_t count_stream(stele_db *db, const char *stream, const char *type)
{
    stele_page *pg;
    size_t n = 0;
    if (stele_read_stream(db, stream, 0, STELE_FORWARDS, 100000, &pg))
        return 0;
    for (size_t i = 0; i < stele_page_count(pg); i++)
        if (!type || !strcmp(stele_page_event(pg, i)->type, type))
            n++;
    stele_page_free(pg);
    return n;
}

static const char q_count[] =
    "fromAll().when({$init: function(){ return {count: 0, added: 0}; },\n"
    "  ItemAdded: function(s, e){ s.count++; s.added += e.body.qty; },\n"
    "  ItemRemoved: function(s, e){ s.count++; s.added -= e.body.qty; }});";

static const char q_per_stream[] =
    "fromCategory('Cart').foreachStream().when({$init: function(){ return {n: 0, total: 0}; },\n"
    "  $any: function(s, e){ s.n++; if (e.body && e.body.qty) s.total += e.body.qty; }});";

static const char q_partition[] =
    "fromAll().partitionBy(function(e){ return e.body.customer; })\n"
    ".when({$init: function(){ return {orders: 0}; },\n"
    "  ItemAdded: function(s, e){ s.orders++; return s; }});";

static const char q_emit[] =
    "fromCategory('Cart').when({ItemAdded: function(s, e){\n"
    "  emit('Audit-' + e.body.customer, 'Audited', {stream: e.streamId, rev: e.sequenceNumber});\n"
    "  linkTo('Links-all', e); }});";

static const char q_output[] =
    "fromAll().when({$init: function(){ return {n: 0}; }, ItemAdded: function(s, e){ s.n++; }})\n"
    ".transformBy(function(s){ return {double: s.n * 2}; }).outputState();";

static const char q_bistate[] =
    "fromCategory('Cart').foreachStream().when({\n"
    "  $init: function(){ return {n: 0}; }, $initShared: function(){ return {total: 0}; },\n"
    "  ItemAdded: function(s, e){ s[0].n++; s[1].total++; return s; }});";

static void test_examples(void)
{
    const char *dir = t_tmpdir("proj_examples");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    /* some history before the projections exist, some after */
    const char *customers[] = {"alice", "bob", "carol"};
    char stream[64], data[128];
    int added[3] = {0}, carts = 6;
    int total_qty = 0, nadd = 0, nrem = 0;
    for (int i = 0; i < 60; i++) {
        int c = i % carts;
        snprintf(stream, sizeof stream, "Cart-%d", c);
        int cust = c % 3;
        int qty = i % 7 + 1;
        int rem = i % 5 == 4;
        snprintf(data, sizeof data, "{\"customer\":\"%s\",\"qty\":%d}", customers[cust], qty);
        append_json(db, stream, rem ? "ItemRemoved" : "ItemAdded", data);
        if (rem) {
            nrem++;
            total_qty -= qty;
        } else {
            nadd++;
            total_qty += qty;
            added[cust]++;
        }
        if (i == 29) {
            create(db, "count", q_count, 0);
            create(db, "perstream", q_per_stream, 0);
            create(db, "bycustomer", q_partition, 0);
            create(db, "emitter", q_emit, 1);
            create(db, "output", q_output, 0);
            create(db, "bistate", q_bistate, 0);
        }
    }
    append_json(db, "Other-1", "ItemAdded", "{\"customer\":\"dave\",\"qty\":1}");
    nadd++;
    total_qty += 1;
    const char *names[] = {"count", "perstream", "bycustomer", "emitter", "output", "bistate"};
    for (size_t i = 0; i < 6; i++)
        wait_all(db, names[i]);
    char want[256];
    snprintf(want, sizeof want, "{\"count\":%d,\"added\":%d}", nadd + nrem, total_qty);
    expect_state(db, "count", "", want);
    for (int c = 0; c < carts; c++) {
        snprintf(stream, sizeof stream, "Cart-%d", c);
        stele_page *pg;
        CHECK_OK(stele_read_stream(db, stream, 0, STELE_FORWARDS, 1000, &pg));
        int tot = 0;
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            const stele_event *e = stele_page_event(pg, i);
            const char *q = strstr(e->data, "\"qty\":");
            tot += atoi(q + 6);
        }
        snprintf(want, sizeof want, "{\"n\":%zu,\"total\":%d}", stele_page_count(pg), tot);
        stele_page_free(pg);
        expect_state(db, "perstream", stream, want);
    }
    for (int k = 0; k < 3; k++) {
        snprintf(want, sizeof want, "{\"orders\":%d}", added[k]);
        expect_state(db, "bycustomer", customers[k], want);
    }
    expect_state(db, "bycustomer", "dave", "{\"orders\":1}");
    /* emit: one Audited event per ItemAdded of a cart, per customer stream */
    size_t audited = 0;
    for (int k = 0; k < 3; k++) {
        snprintf(stream, sizeof stream, "Audit-%s", customers[k]);
        audited += count_stream(db, stream, "Audited");
    }
    CHECK(audited == (size_t)(nadd - 1));
    CHECK(count_stream(db, "Links-all", "$>") == (size_t)(nadd - 1));
    /* outputState + transformBy: the result, and the Result stream */
    char *r = NULL;
    CHECK_OK(stele_projection_state(db, "output", "", 1, &r, NULL));
    snprintf(want, sizeof want, "{\"double\":%d}", nadd * 2);
    CHECK(r && !strcmp(r, want));
    stele_free(r);
    CHECK(count_stream(db, "$projections-output-result", "Result") >= 1);
    /* bi-state: per stream n, shared total in the shared stream */
    for (int c = 0; c < carts; c++) {
        snprintf(stream, sizeof stream, "Cart-%d", c);
        snprintf(want, sizeof want, "{\"n\":%zu}", count_stream(db, stream, "ItemAdded"));
        expect_state(db, "bistate", stream, want);
    }
    {
        stele_page *pg;
        CHECK_OK(stele_read_stream(db, "$projections-bistate:shared", STELE_END, STELE_BACKWARDS,
                                   1, &pg));
        snprintf(want, sizeof want, "{\"total\":%d}", nadd - 1);
        CHECK(stele_page_count(pg) == 1 && stele_page_event(pg, 0)->data_len == strlen(want) &&
              !memcmp(stele_page_event(pg, 0)->data, want, strlen(want)));
        stele_page_free(pg);
    }
    /* list */
    stele_projection_info *all;
    size_t n;
    CHECK_OK(stele_projection_list(db, &all, &n));
    CHECK(n == 6);
    for (size_t i = 0; i < n; i++)
        CHECK(!strcmp(all[i].status, "Running"));
    stele_projection_info_free(all);

    /* reset rebuilds the same state; emitted streams hold each event once */
    CHECK_OK(stele_projection_reset(db, "emitter"));
    CHECK_OK(stele_projection_reset(db, "count"));
    wait_all(db, "emitter");
    wait_all(db, "count");
    snprintf(want, sizeof want, "{\"count\":%d,\"added\":%d}", nadd + nrem, total_qty);
    expect_state(db, "count", "", want);
    audited = 0;
    for (int k = 0; k < 3; k++) {
        snprintf(stream, sizeof stream, "Audit-%s", customers[k]);
        audited += count_stream(db, stream, "Audited");
    }
    CHECK(audited == (size_t)(nadd - 1));

    /* update: a new query restarts from the checkpoint, states kept */
    static const char q2[] =
        "fromAll().when({$init: function(){ return {count: 0, added: 0}; },\n"
        "  ItemAdded: function(s, e){ s.count += 10; }});";
    CHECK_OK(stele_projection_update(db, "count", q2, strlen(q2), -1));
    append_json(db, "Cart-9", "ItemAdded", "{\"customer\":\"x\",\"qty\":1}");
    wait_all(db, "count");
    snprintf(want, sizeof want, "{\"count\":%d,\"added\":%d}", nadd + nrem + 10, total_qty);
    expect_state(db, "count", "", want);
    CHECK(!strcmp(status(db, "count", NULL, 0), "Running"));

    /* disable / enable */
    CHECK_OK(stele_projection_disable(db, "count"));
    CHECK(!strcmp(status(db, "count", NULL, 0), "Stopped"));
    append_json(db, "Cart-9", "ItemAdded", "{\"customer\":\"x\",\"qty\":1}");
    CHECK_OK(stele_projection_enable(db, "count"));
    wait_all(db, "count");
    snprintf(want, sizeof want, "{\"count\":%d,\"added\":%d}", nadd + nrem + 20, total_qty);
    expect_state(db, "count", "", want);

    /* reopen: projections resume from their checkpoints */
    stele_close(db);
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK_OK(stele_projections_start(db));
    append_json(db, "Cart-9", "ItemAdded", "{\"customer\":\"x\",\"qty\":1}");
    wait_all(db, "count");
    snprintf(want, sizeof want, "{\"count\":%d,\"added\":%d}", nadd + nrem + 30, total_qty);
    expect_state(db, "count", "", want);

    /* transient: the answer now, nothing kept */
    {
        char *j = NULL;
        CHECK_OK(stele_projection_query(db, q_count, strlen(q_count), NULL, &j, NULL));
        snprintf(want, sizeof want, "{\"count\":%d,\"added\":%d}", nadd + nrem + 3, total_qty + 3);
        if (!j || strcmp(j, want)) {
            fprintf(stderr, "transient: %s want %s\n", j ? j : "-", want);
            CHECK(0);
        }
        stele_free(j);
        CHECK_OK(stele_projection_query(db, q_partition, strlen(q_partition), NULL, &j, NULL));
        snprintf(want, sizeof want, "\"alice\":{\"orders\":%d}", added[0]);
        CHECK(j && j[0] == '{' && strstr(j, want));
        stele_free(j);
        CHECK_OK(stele_projection_query(db, q_output, strlen(q_output), NULL, &j, NULL));
        snprintf(want, sizeof want, "{\"double\":%d}", (nadd + 3) * 2);
        CHECK(j && !strcmp(j, want));
        stele_free(j);
        CHECK_RC(stele_projection_query(db, q_emit, strlen(q_emit), NULL, &j, NULL), STELE_EINVAL);
        CHECK(strstr(stele_errmsg(), "cannot emit") != NULL);
        CHECK_RC(stele_projection_query(db, "fromAll(", 8, NULL, &j, NULL), STELE_EINVAL);
        stele_projection_info *all2;
        size_t n2;
        CHECK_OK(stele_projection_list(db, &all2, &n2));
        CHECK(n2 == 6); /* nothing kept */
        stele_projection_info_free(all2);
    }

    /* one-time */
    stele_projection_settings one = {.query = q_count, .query_len = strlen(q_count),
                                     .enabled = 1, .mode = STELE_PROJ_ONE_TIME};
    CHECK_OK(stele_projection_create(db, "once", &one));
    wait_all(db, "once");
    for (int i = 0; i < 200 && strcmp(status(db, "once", NULL, 0), "Completed"); i++)
        usleep(10000);
    CHECK(!strcmp(status(db, "once", NULL, 0), "Completed"));

    /* delete with emitted streams */
    CHECK_OK(stele_projection_delete(db, "emitter", STELE_PROJ_DELETE_EMITTED | STELE_PROJ_DELETE_STATE));
    CHECK(count_stream(db, "Links-all", NULL) == 0);
    CHECK_RC(stele_projection_get(db, "emitter", &all), STELE_ENOTFOUND);
    /* bad input */
    stele_projection_settings bad = {.query = q_count, .query_len = strlen(q_count)};
    CHECK_RC(stele_projection_create(db, "count", &bad), STELE_EEXISTS);
    CHECK_RC(stele_projection_create(db, "$x", &bad), STELE_EINVAL);
    CHECK_RC(stele_projection_create(db, "", &bad), STELE_EINVAL);
    CHECK_RC(stele_projection_create(db, "a/b", &bad), STELE_EINVAL);
    CHECK_RC(stele_projection_create(db, "a:b", &bad), STELE_EINVAL);
    CHECK_RC(stele_projection_enable(db, "nope"), STELE_ENOTFOUND);
    stele_close(db);
    t_rmdir(dir);
    passed++;
}

static void test_hostile(void)
{
    const char *dir = t_tmpdir("proj_hostile");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    for (int i = 0; i < 20; i++)
        append_json(db, "Cart-1", "ItemAdded", "{\"customer\":\"a\",\"qty\":1}");
    struct {
        const char *name, *query, *want;
    } h[] = {
        {"loop", "fromAll().when({ItemAdded: function(s, e){ while (true) {} }});",
         "execution timeout"},
        {"bomb", "fromAll().when({ItemAdded: function(s, e){ var a = []; "
                 "for (;;) a.push(new Array(100000).join('x') + a.length); }});",
         "memory"},
        {"throw", "fromAll().when({ItemAdded: function(s, e){ "
                  "if (e.sequenceNumber == 7) throw new Error('broken precondition'); }});",
         "broken precondition"},
        {"huge", "fromAll().when({$init: function(){ return {s: ''}; }, "
                 "ItemAdded: function(s, e){ s.s = new Array(500000).join('abcdefghij'); }});",
         "over the limit"},
        {"noemit", "fromAll().when({ItemAdded: function(s, e){ emit('X-1', 'T', {}); }});",
         "emitEnabled"},
    };
    /* Created disabled, then enabled together: under valgrind every thread
     * shares one CPU, so a running endless loop would eat the wall-clock
     * time limit of the next query's creation. Under valgrind (TEST_QUICK)
     * JavaScript also runs ~50x slower: the loop gets 5 s to time out, the
     * others a minute, so each faults for its own reason, not the clock. */
    int quick = getenv("TEST_QUICK") != NULL;
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        int is_loop = !strcmp(h[i].name, "loop");
        stele_projection_settings s = {.query = h[i].query, .query_len = strlen(h[i].query),
                                       .enabled = 0,
                                       .timeout_ms = !quick ? 200 : is_loop ? 5000 : 60000,
                                       .memory_limit = 16u << 20};
        CHECK_OK(stele_projection_create(db, h[i].name, &s));
    }
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        CHECK_OK(stele_projection_enable(db, h[i].name));
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        /* until it faults (minutes under valgrind for the memory bomb) */
        stele_projection_wait(db, h[i].name, STELE_END, 600000);
        char fault[1024];
        const char *st = status(db, h[i].name, fault, sizeof fault);
        if (strcmp(st, "Faulted") || !strstr(fault, h[i].want)) {
            fprintf(stderr, "%s: status %s fault '%s', want Faulted with '%s'\n", h[i].name, st,
                    fault, h[i].want);
            CHECK(0);
        }
    }
    {
        stele_projection_info *in;
        CHECK_OK(stele_projection_get(db, "throw", &in));
        stele_page *pg;
        CHECK_OK(stele_read_stream(db, "Cart-1", 7, STELE_FORWARDS, 1, &pg));
        CHECK(in->fault_position == stele_page_event(pg, 0)->position);
        stele_page_free(pg);
        stele_projection_info_free(in);
    }
    /* refused at create: syntax error, no source, throwing query */
    const char *refused[] = {"fromAll().when({ItemAdded: function(s, e) { s.x = ; }});",
                             "var x = 1;", "throw new Error('no');",
                             "fromAll(); fromAll();", "fromAll().when({a: 1});"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        stele_projection_settings s = {.query = refused[i], .query_len = strlen(refused[i]),
                                       .enabled = 1};
        CHECK_RC(stele_projection_create(db, "refused", &s), STELE_EINVAL);
        CHECK(strstr(stele_errmsg(), "query:") != NULL);
    }
    /* the store and a healthy projection are unaffected */
    create(db, "ok", q_count, 0);
    append_json(db, "Cart-1", "ItemAdded", "{\"customer\":\"a\",\"qty\":1}");
    wait_all(db, "ok");
    expect_state(db, "ok", "", "{\"count\":21,\"added\":21}");
    /* a fixed query and enable: the faulted one runs again */
    static const char fixed[] = "fromAll().when({$init: function(){ return {n: 0}; }, "
                                "ItemAdded: function(s, e){ s.n++; }});";
    CHECK_OK(stele_projection_update(db, "throw", fixed, strlen(fixed), -1));
    CHECK_OK(stele_projection_enable(db, "throw"));
    wait_all(db, "throw");
    expect_state(db, "throw", "", "{\"n\":21}");
    stele_close(db);
    t_rmdir(dir);
    passed++;
}


/* Read models (seed 000's orders by customer) and reconstructed state
 * (seed 002's reconstructState) with snapshots every 10 events. */
static void test_read_models_and_fold(void)
{
    const char *dir = t_tmpdir("proj_rm");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    static const char q_orders[] =
        "fromCategory('Order').foreachStream().when({\n"
        "  $init: function(){ return {customerId: null, status: 'new', total: 0}; },\n"
        "  OrderPlaced: function(s, e){ s.customerId = e.body.customerId; s.total = e.body.total;"
        " s.status = 'placed'; },\n"
        "  OrderShipped: function(s, e){ s.status = 'shipped'; }});";
    create(db, "orders", q_orders, 0);
    char stream[64], data[128];
    int cust_of[40];
    for (int i = 0; i < 40; i++) {
        snprintf(stream, sizeof stream, "Order-%02d", i);
        cust_of[i] = (i * 7) % 4;
        snprintf(data, sizeof data, "{\"customerId\":\"c%d\",\"total\":%d}", cust_of[i], i * 10);
        append_json(db, stream, "OrderPlaced", data);
        if (i % 4 == 0)
            append_json(db, stream, "OrderShipped", "{}");
    }
    wait_all(db, "orders");
    /* all partitions in key order, paged by 7 */
    char after[64] = "";
    int seen = 0;
    for (;;) {
        stele_partition *ps;
        size_t n;
        int more;
        CHECK_OK(stele_projection_partitions(db, "orders", after, 7, NULL, NULL, &ps, &n, &more));
        for (size_t i = 0; i < n; i++) {
            snprintf(stream, sizeof stream, "Order-%02d", seen);
            CHECK(!strcmp(ps[i].key, stream));
            snprintf(data, sizeof data, "{\"customerId\":\"c%d\",\"status\":\"%s\",\"total\":%d}",
                     cust_of[seen], seen % 4 == 0 ? "shipped" : "placed", seen * 10);
            if (strcmp(ps[i].state, data)) {
                fprintf(stderr, "%s: %s want %s\n", ps[i].key, ps[i].state, data);
                CHECK(0);
            }
            seen++;
        }
        if (n)
            snprintf(after, sizeof after, "%s", ps[n - 1].key);
        stele_free(ps);
        if (!more)
            break;
    }
    CHECK(seen == 40);
    /* filtered by customerId: seed 000's orders of one customer */
    for (int c = 0; c < 4; c++) {
        char v[16];
        snprintf(v, sizeof v, "\"c%d\"", c);
        stele_partition *ps;
        size_t n;
        int more;
        CHECK_OK(stele_projection_partitions(db, "orders", NULL, 100, "customerId", v, &ps, &n, &more));
        int want = 0;
        for (int i = 0; i < 40; i++)
            want += cust_of[i] == c;
        CHECK((int)n == want && !more);
        for (size_t i = 0; i < n; i++)
            CHECK(strstr(ps[i].state, v) != NULL);
        stele_free(ps);
    }
    {
        stele_partition *ps;
        size_t n;
        int more;
        CHECK_OK(stele_projection_partitions(db, "orders", NULL, 100, "total", "30", &ps, &n, &more));
        CHECK(n == 1 && !strcmp(ps[0].key, "Order-03"));
        stele_free(ps);
        CHECK_RC(stele_projection_partitions(db, "orders", NULL, 100, "total", "{bad", &ps, &n, &more),
                 STELE_EINVAL);
        CHECK_RC(stele_projection_partitions(db, "orders", NULL, 0, NULL, NULL, &ps, &n, &more),
                 STELE_EINVAL);
        CHECK_RC(stele_projection_partitions(db, "nope", NULL, 10, NULL, NULL, &ps, &n, &more),
                 STELE_ENOTFOUND);
    }

    /* reconstructState: an account folded to any revision or time */
    static const char q_acct[] =
        "fromCategory('Account').foreachStream().when({\n"
        "  $init: function(){ return {balance: 0, n: 0}; },\n"
        "  Deposited: function(s, e){ s.balance += e.body.amount; s.n++; },\n"
        "  Withdrawn: function(s, e){ if (s.balance < e.body.amount) throw new Error('overdrawn');"
        " s.balance -= e.body.amount; s.n++; }});";
    stele_projection_settings st = {.query = q_acct, .query_len = strlen(q_acct), .enabled = 1,
                                    .snapshot_every = 10};
    CHECK_OK(stele_projection_create(db, "acct", &st));
    int64_t bal[60];
    int64_t times[60];
    int64_t b = 0;
    for (int i = 0; i < 55; i++) {
        int dep = i % 3 != 2;
        int amount = dep ? 10 + i : 5;
        snprintf(data, sizeof data, "{\"amount\":%d}", amount);
        append_json(db, "Account-1", dep ? "Deposited" : "Withdrawn", data);
        b += dep ? amount : -amount;
        bal[i] = b;
        stele_page *pg;
        CHECK_OK(stele_read_stream(db, "Account-1", STELE_END, STELE_BACKWARDS, 1, &pg));
        times[i] = stele_page_event(pg, 0)->created_us;
        stele_page_free(pg);
        if (i == 20)
            wait_all(db, "acct"); /* snapshots at revisions 9 and 19 exist by now */
    }
    wait_all(db, "acct");
    uint64_t tos[] = {0, 8, 9, 10, 19, 33, 54, STELE_END};
    for (size_t k = 0; k < sizeof tos / sizeof tos[0]; k++) {
        char *j = NULL;
        uint64_t rev, snap;
        CHECK_OK(stele_projection_fold(db, "acct", "Account-1", tos[k], NULL, &j, NULL, &rev, &snap));
        uint64_t r = tos[k] == STELE_END ? 54 : tos[k];
        snprintf(data, sizeof data, "{\"balance\":%lld,\"n\":%llu}", (long long)bal[r],
                 (unsigned long long)r + 1);
        if (!j || strcmp(j, data) || rev != r) {
            fprintf(stderr, "fold to %llu: %s (rev %llu) want %s\n", (unsigned long long)r,
                    j ? j : "-", (unsigned long long)rev, data);
            CHECK(0);
        }
        /* from the newest snapshot at or before it */
        uint64_t want_snap = r >= 9 ? (r + 1) / 10 * 10 - 1 : STELE_NONE;
        if (snap != want_snap) {
            fprintf(stderr, "fold to %llu started at snapshot %llu, want %llu\n",
                    (unsigned long long)r, (unsigned long long)snap, (unsigned long long)want_snap);
            CHECK(0);
        }
        stele_free(j);
    }
    {
        char *j = NULL;
        uint64_t rev;
        CHECK_OK(stele_projection_fold(db, "acct", "Account-1", 0, &times[30], &j, NULL, &rev, NULL));
        CHECK(rev >= 30 && rev < 55);
        snprintf(data, sizeof data, "{\"balance\":%lld,\"n\":%llu}", (long long)bal[rev],
                 (unsigned long long)rev + 1);
        CHECK(j && !strcmp(j, data));
        stele_free(j);
        CHECK_RC(stele_projection_fold(db, "acct", "Account-404", STELE_END, NULL, &j, NULL, NULL, NULL),
                 STELE_ENOTFOUND);
        CHECK_RC(stele_projection_fold(db, "nope", "Account-1", STELE_END, NULL, &j, NULL, NULL, NULL),
                 STELE_ENOTFOUND);
    }
    stele_close(db);
    t_rmdir(dir);
    passed++;
}


/* Inline projections: 8 writers race on 4 streams of one category; after
 * each append the stored state (the stream's snapshot at its head) is the
 * fold of its events; a throwing handler refuses the append and writes
 * nothing; async appends go through the projection's thread. */
struct inl_arg {
    stele_db *db;
    int id;
    int refused, ok;
};

static void *inl_writer(void *a)
{
    struct inl_arg *w = a;
    for (int i = 0; i < 40; i++) {
        char s[32], d[64];
        snprintf(s, sizeof s, "Acct-%d", (w->id + i) % 4);
        int bad = i % 13 == 12;
        snprintf(d, sizeof d, "{\"amount\":%d}", bad ? -1 : w->id + i);
        stele_event_in ev[2] = {
            {.type = "Deposited", .data = d, .data_len = strlen(d), .flags = STELE_EVENT_JSON},
            {.type = "Deposited", .data = "{\"amount\":1}", .data_len = 12, .flags = STELE_EVENT_JSON}};
        int rc = stele_append(w->db, s, STELE_ANY, ev, 2, NULL);
        if (bad) {
            CHECK(rc == STELE_EINVAL && strstr(stele_errmsg(), "negative amount"));
            w->refused++;
        } else {
            CHECK(rc == 0);
            w->ok++;
        }
    }
    return NULL;
}

struct async_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, rc;
};

static void async_cb(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    (void)res;
    (void)msg;
    struct async_wait *a = ctx;
    pthread_mutex_lock(&a->mu);
    a->done = 1;
    a->rc = rc;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void test_inline(void)
{
    const char *dir = t_tmpdir("proj_inline");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    static const char q[] =
        "fromCategory('Acct').foreachStream().when({\n"
        "  $init: function(){ return {balance: 0, n: 0}; },\n"
        "  Deposited: function(s, e){ if (e.body.amount < 0) throw new Error('negative amount');\n"
        "    s.balance += e.body.amount; s.n++; }});";
    stele_projection_settings st = {.query = q, .query_len = strlen(q), .enabled = 1,
                                    .mode = STELE_PROJ_INLINE};
    /* events before the projection exists: folded on the first append */
    stele_event_in pre = {.type = "Deposited", .data = "{\"amount\":100}", .data_len = 14,
                          .flags = STELE_EVENT_JSON};
    CHECK_OK(stele_append(db, "Acct-0", STELE_ANY, &pre, 1, NULL));
    CHECK_OK(stele_projection_create(db, "balances", &st));
    /* refused shapes */
    static const char q_bad[] = "fromAll().when({});";
    stele_projection_settings bad = {.query = q_bad, .query_len = strlen(q_bad), .enabled = 1,
                                     .mode = STELE_PROJ_INLINE};
    CHECK_RC(stele_projection_create(db, "inl-bad", &bad), STELE_EINVAL);
    CHECK_RC(stele_projection_create(db, "balances2", &st), STELE_EEXISTS);
    pthread_t th[8];
    struct inl_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct inl_arg){.db = db, .id = i};
        pthread_create(&th[i], NULL, inl_writer, &args[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    /* async, through the projection's thread */
    struct async_wait aw = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    stele_event_in ev = {.type = "Deposited", .data = "{\"amount\":7}", .data_len = 12,
                         .flags = STELE_EVENT_JSON};
    CHECK_OK(stele_append_async(db, "Acct-1", STELE_ANY, &ev, 1, async_cb, &aw));
    pthread_mutex_lock(&aw.mu);
    while (!aw.done)
        pthread_cond_wait(&aw.cv, &aw.mu);
    pthread_mutex_unlock(&aw.mu);
    CHECK(aw.rc == 0);
    for (int k = 0; k < 4; k++) {
        char s[32];
        snprintf(s, sizeof s, "Acct-%d", k);
        stele_page *pg;
        CHECK_OK(stele_read_stream(db, s, 0, STELE_FORWARDS, 100000, &pg));
        long bal = 0;
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_page_event(pg, i);
            char t[64];
            snprintf(t, sizeof t, "%.*s", (int)e->data_len, (const char *)e->data);
            long a = atol(strchr(t, ':') + 1);
            CHECK(a >= 0); /* nothing of a refused append was written */
            bal += a;
        }
        uint64_t head = stele_page_event(pg, n - 1)->revision;
        stele_page_free(pg);
        char want[96];
        snprintf(want, sizeof want, "{\"balance\":%ld,\"n\":%zu}", bal, n);
        stele_snapshot *sn = NULL;
        CHECK_OK(stele_get_snapshot(db, s, STELE_END, &sn));
        CHECK(sn && sn->revision == head && sn->state_len == strlen(want) &&
              !memcmp(sn->state, want, sn->state_len));
        stele_free(sn);
        expect_state(db, "balances", s, want);
    }
    int refused = 0;
    for (int i = 0; i < 8; i++)
        refused += args[i].refused;
    CHECK(refused == 8 * 3);
    /* disabled: appends go straight through, no state is kept */
    CHECK_OK(stele_projection_disable(db, "balances"));
    stele_event_in neg = {.type = "Deposited", .data = "{\"amount\":-5}", .data_len = 13,
                          .flags = STELE_EVENT_JSON};
    CHECK_OK(stele_append(db, "Acct-3", STELE_ANY, &neg, 1, NULL));
    CHECK_OK(stele_projection_enable(db, "balances"));
    CHECK_RC(stele_append(db, "Acct-3", STELE_ANY, &neg, 1, NULL), STELE_EINVAL);
    CHECK_RC(stele_projection_reset(db, "balances"), STELE_EINVAL);
    /* reopened: the inline projection is there again */
    stele_close(db);
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK_RC(stele_append(db, "Acct-2", STELE_ANY, &neg, 1, NULL), STELE_EINVAL);
    CHECK_OK(stele_projection_delete(db, "balances", 0));
    CHECK_OK(stele_append(db, "Acct-2", STELE_ANY, &neg, 1, NULL));
    stele_close(db);
    t_rmdir(dir);
    passed++;
}

/* ------------------------------------------------------------ SIGKILL */

static const char q_kill_count[] =
    "fromAll().when({$init: function(){ return {n: 0, sum: 0}; },\n"
    "  Tick: function(s, e){ s.n++; s.sum += e.body.v; }});";
static const char q_kill_stream[] =
    "fromCategory('K').foreachStream().when({$init: function(){ return {n: 0, last: -1}; },\n"
    "  Tick: function(s, e){ s.n++; s.last = e.body.v;\n"
    "    if (e.body.v % 3 == 0) emit('Out-' + e.streamId, 'Three', {v: e.body.v}); }});";

static void child_run(const char *dir)
{
    stele_db *db;
    if (stele_open(dir, NULL, &db))
        _exit(2);
    stele_projections_start(db);
    stele_stats st;
    stele_get_stats(db, &st);
    for (uint64_t i = st.events;; i++) {
        char s[32], d[64];
        snprintf(s, sizeof s, "K-%llu", (unsigned long long)(i % 7));
        snprintf(d, sizeof d, "{\"v\":%llu}", (unsigned long long)i);
        stele_event_in ev = {.type = "Tick", .data = d, .data_len = strlen(d),
                             .flags = STELE_EVENT_JSON};
        stele_append(db, s, STELE_ANY, &ev, 1, NULL);
        if (i % 16 == 0)
            usleep(200);
    }
}

static void check_kill_state(stele_db *db)
{
    /* model: fold every Tick of the store */
    uint64_t n = 0, sum = 0, per_n[7] = {0};
    int64_t last[7];
    uint64_t threes[7] = {0};
    for (int i = 0; i < 7; i++)
        last[i] = -1;
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        CHECK_OK(stele_read_all(db, from, STELE_FORWARDS, 4096, &pg));
        size_t cnt = stele_page_count(pg);
        for (size_t i = 0; i < cnt; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (strcmp(e->type, "Tick") || strncmp(e->stream, "K-", 2))
                continue;
            uint64_t v = strtoull(strstr(e->data, ":") + 1, NULL, 10);
            int k = atoi(e->stream + 2);
            n++;
            sum += v;
            per_n[k]++;
            last[k] = (int64_t)v;
            if (v % 3 == 0)
                threes[k]++;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || !cnt)
            break;
        from = next;
    }
    char want[128];
    snprintf(want, sizeof want, "{\"n\":%llu,\"sum\":%llu}", (unsigned long long)n,
             (unsigned long long)sum);
    if (n)
        expect_state(db, "kc", "", want);
    for (int k = 0; k < 7; k++) {
        char s[32];
        snprintf(s, sizeof s, "K-%d", k);
        if (!per_n[k])
            continue;
        snprintf(want, sizeof want, "{\"n\":%llu,\"last\":%lld}", (unsigned long long)per_n[k],
                 (long long)last[k]);
        expect_state(db, "ks", s, want);
        /* each emitted event exactly once, in order */
        snprintf(s, sizeof s, "Out-K-%d", k);
        stele_page *pg;
        uint64_t got = 0;
        if (stele_read_stream(db, s, 0, STELE_FORWARDS, 100000, &pg) == 0) {
            got = stele_page_count(pg);
            int64_t prev = -1;
            for (size_t i = 0; i < got; i++) {
                int64_t v = atoll(strstr(stele_page_event(pg, i)->data, ":") + 1);
                CHECK(v > prev);
                prev = v;
            }
            stele_page_free(pg);
        }
        if (got != threes[k]) {
            fprintf(stderr, "%s: %llu emitted events, want %llu\n", s, (unsigned long long)got,
                    (unsigned long long)threes[k]);
            CHECK(0);
        }
    }
}

static void test_sigkill(int rounds)
{
    const char *dir = t_tmpdir("proj_kill");
    {
        stele_db *db;
        CHECK_OK(stele_open(dir, NULL, &db));
        stele_projection_settings a = {.query = q_kill_count, .query_len = strlen(q_kill_count),
                                       .enabled = 1, .cache_partitions = 3};
        stele_projection_settings b = {.query = q_kill_stream, .query_len = strlen(q_kill_stream),
                                       .enabled = 1, .emit_enabled = 1, .cache_partitions = 3};
        CHECK_OK(stele_projection_create(db, "kc", &a));
        CHECK_OK(stele_projection_create(db, "ks", &b));
        stele_close(db);
    }
    for (int r = 0; r < rounds; r++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* odd rounds commit batches in steps (the path of batches too
             * big for one commit), even rounds as one commit */
            if (r % 2)
                setenv("STELE_PROJ_COMMIT_STEPS", "1", 1);
            child_run(dir);
            _exit(0);
        }
        usleep((useconds_t)(20000 + t_rand_below(120000)));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        CHECK(WIFSIGNALED(st));
        stele_db *db;
        CHECK_OK(stele_open(dir, NULL, &db));
        CHECK_OK(stele_projections_start(db));
        wait_all(db, "kc");
        wait_all(db, "ks");
        check_kill_state(db);
        char fault[512];
        CHECK(!strcmp(status(db, "ks", fault, sizeof fault), "Running"));
        stele_close(db);
        if (t_failures)
            break;
    }
    t_rmdir(dir);
    passed++;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    t_seed();
    test_examples();
    test_hostile();
    test_read_models_and_fold();
    test_inline();
    const char *q = getenv("TEST_QUICK");
    test_sigkill(q && atoi(q) ? 3 : 30);
    return t_done("test_proj", passed);
}
