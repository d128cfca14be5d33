/*
 * test_group_share.c - consumer groups shared across servers (src/sub/
 * group_share.c, backend_group_ops in src/backend/backend.h). A contract
 * test: on the local engine by default, on PostgreSQL through
 * tests/contract/pg.sh (STELE_TEST_STORE).
 *
 * - the claims contract itself, op by op: the frontier is made once; a
 *   claim from a stale frontier fails with EWRONGREV and gives the new
 *   one; live claims are never taken, released ones are (by anyone, their
 *   old owner too), from where their owner reported progress; sync moves
 *   a claim's start up only, drops finished claims, ignores claims that
 *   are no longer the caller's and reports the frontier and the lowest
 *   claim of others; reset drops claims and moves or forgets the frontier;
 * - a node name that is not NUL-terminated is refused at open;
 * - racing claims from 4 threads: every key in exactly one claim;
 * - on a shared backend, two store handles ("servers") on one store with
 *   a consumer each: every event of the group delivered exactly once, and
 *   after one handle closes with events in flight, the other delivers them.
 */
#include <pthread.h>
#include <string.h>

#include "backend/backend.h"
#include "store/store_int.h"
#include "testutil.h"

static int passed;

static const backend_group_ops *gops(stele_db *db) { return db->be->ops->groups; }

static void test_contract(void)
{
    const char *uri = t_store("gshare");
    stele_db *db;
    CHECK_OK(stele_open(uri, NULL, &db));
    backend *b = db->be;
    const backend_group_ops *o = gops(db);
    CHECK(o && o->frontier && o->claim && o->steal && o->sync && o->reset);
    const char *k = "7:$all::g";
    uint64_t f = 0, others = 0;
    CHECK_OK(o->frontier(b, k, 10, &f));
    CHECK(f == 10);
    CHECK_OK(o->frontier(b, k, 99, &f)); /* made once: start ignored now */
    CHECK(f == 10);

    /* A owns [10,20) and [20,25); B's claim from the stale 10 fails. */
    CHECK_OK(o->claim(b, k, "A", 10, 20, 600000, &f));
    CHECK(f == 20);
    CHECK_RC(o->claim(b, k, "B", 10, 30, 600000, &f), STELE_EWRONGREV);
    CHECK(f == 20);
    CHECK_OK(o->claim(b, k, "A", 20, 25, 600000, &f));
    CHECK(f == 25);
    group_claim c;
    CHECK_RC(o->steal(b, k, "B", 600000, &c), STELE_ENOTFOUND); /* all live */
    CHECK_RC(o->steal(b, k, "A", 600000, &c), STELE_ENOTFOUND); /* never one's own */

    /* B sees A's lowest claim. */
    CHECK_OK(o->sync(b, k, "B", NULL, 0, 600000, &f, &others));
    CHECK(f == 25 && others == 10);

    /* A: [10,20) done up to 14, [20,25) all done. */
    group_claim prog[2] = {{14, 20}, {25, 25}};
    CHECK_OK(o->sync(b, k, "A", prog, 2, 600000, &f, &others));
    CHECK(f == 25 && others == STELE_NONE);
    CHECK_OK(o->sync(b, k, "B", NULL, 0, 600000, &f, &others));
    CHECK(others == 14);
    /* A start never moves down. */
    group_claim back = {12, 20};
    CHECK_OK(o->sync(b, k, "A", &back, 1, 600000, &f, &others));
    CHECK_OK(o->sync(b, k, "B", NULL, 0, 600000, &f, &others));
    CHECK(others == 14);

    /* A releases (ttl 0): B takes [14,20) at once. */
    CHECK_OK(o->sync(b, k, "A", NULL, 0, 0, &f, &others));
    CHECK_OK(o->steal(b, k, "B", 600000, &c));
    CHECK(c.from == 14 && c.to == 20);
    CHECK_RC(o->steal(b, k, "C", 600000, &c), STELE_ENOTFOUND); /* B's now, live */
    /* A's late report on it changes nothing: not A's any more. */
    group_claim late = {19, 20};
    CHECK_OK(o->sync(b, k, "A", &late, 1, 600000, &f, &others));
    CHECK(others == 14);

    /* A released claim may go back to its old owner (a restart). */
    CHECK_OK(o->claim(b, k, "A", 25, 30, 600000, &f));
    CHECK_OK(o->sync(b, k, "A", NULL, 0, 0, &f, &others));
    CHECK_OK(o->steal(b, k, "A", 600000, &c));
    CHECK(c.from == 25 && c.to == 30);

    /* Reset: no claims, frontier moved; forgotten: no state. */
    CHECK_OK(o->reset(b, k, 3));
    CHECK_OK(o->sync(b, k, "B", NULL, 0, 600000, &f, &others));
    CHECK(f == 3 && others == STELE_NONE);
    CHECK_RC(o->steal(b, k, "C", 600000, &c), STELE_ENOTFOUND);
    CHECK_OK(o->reset(b, k, STELE_NONE));
    CHECK_RC(o->sync(b, k, "B", NULL, 0, 600000, &f, &others), STELE_ENOTFOUND);
    /* Keys are independent. */
    CHECK_OK(o->frontier(b, "8:$all::g", 0, &f));
    CHECK(f == 0);

    stele_close(db);
    t_store_drop(uri);
    passed++;
}

/* ------------------------------------------------------------ racing */

#define RACERS 4
#define RACE_STEPS 40

typedef struct racer {
    stele_db *db;
    char owner[8];
    uint64_t won[RACE_STEPS * RACERS];
    size_t nwon;
    int errors;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    backend *b = r->db->be;
    uint64_t f;
    if (gops(r->db)->frontier(b, "1:race::g", 0, &f)) {
        r->errors++;
        return NULL;
    }
    while (f < RACE_STEPS) {
        uint64_t to = f + 1;
        int rc = gops(r->db)->claim(b, "1:race::g", r->owner, f, to, 600000, &f);
        if (rc == 0)
            r->won[r->nwon++] = to - 1;
        else if (rc != STELE_EWRONGREV) {
            r->errors++;
            return NULL;
        }
    }
    return NULL;
}

static void test_race(void)
{
    const char *uri = t_store("gshare_race");
    stele_db *db;
    CHECK_OK(stele_open(uri, NULL, &db));
    static racer rs[RACERS];
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        memset(&rs[i], 0, sizeof rs[i]);
        rs[i].db = db;
        snprintf(rs[i].owner, sizeof rs[i].owner, "r%d", i);
        CHECK(pthread_create(&th[i], NULL, race, &rs[i]) == 0);
    }
    int seen[RACE_STEPS] = {0};
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        CHECK(rs[i].errors == 0);
        for (size_t j = 0; j < rs[i].nwon; j++)
            if (rs[i].won[j] < RACE_STEPS)
                seen[rs[i].won[j]]++;
    }
    for (int i = 0; i < RACE_STEPS; i++)
        CHECK(seen[i] == 1); /* every key claimed by exactly one */
    stele_close(db);
    t_store_drop(uri);
    passed++;
}

/* ------------------------------------------------------------ two handles */

/* Read and ack until nothing comes for a while; count deliveries per id. */
static size_t drain(stele_consumer *c, int (*seen)[2], size_t n, int who, int ack)
{
    size_t got = 0;
    for (int idle = 0; idle < 10;) { /* 3 s: more than a takeover attempt's period */
        stele_batch *bt;
        if (stele_consumer_read(c, 10, 300, &bt)) {
            CHECK(0);
            return got;
        }
        size_t m = stele_batch_count(bt);
        idle = m ? 0 : idle + 1;
        for (size_t i = 0; i < m; i++) {
            const stele_event *e = stele_batch_event(bt, i);
            if (e->revision < n)
                seen[e->revision][who]++;
            if (ack)
                CHECK_OK(stele_consumer_ack(c, (const uint8_t (*)[16])e->id, 1));
            got++;
        }
        stele_batch_free(bt);
        if (!ack && got)
            return got; /* keep them in flight */
    }
    return got;
}

static void test_two_handles(void)
{
    if (t_store_is_local()) {
        printf("two handles on one store: skipped on the local engine (one process)\n");
        passed++;
        return;
    }
    const char *uri = t_store("gshare_two");
    stele_options oa = {0}, ob = {0};
    snprintf(oa.node_name, sizeof oa.node_name, "a");
    snprintf(ob.node_name, sizeof ob.node_name, "b");
    oa.group_lease_ms = ob.group_lease_ms = 60000;
    stele_db *a, *b;
    CHECK_OK(stele_open(uri, &oa, &a));
    CHECK_OK(stele_open(uri, &ob, &b));
    enum { N = 300 };
    for (int i = 0; i < N; i += 10) {
        stele_event_in ev[10];
        for (int j = 0; j < 10; j++)
            ev[j] = (stele_event_in){.type = "T", .data = "{}", .data_len = 2,
                                     .flags = STELE_EVENT_JSON};
        stele_append_result res;
        CHECK_OK(stele_append(a, "Two-1", STELE_ANY, ev, 10, &res));
    }
    stele_group_settings s;
    stele_group_settings_init(&s);
    s.buffer_size = 20; /* small reads: the handles interleave */
    CHECK_OK(stele_group_create(a, "Two-1", "g", &s));
    stele_consumer *ca, *cb;
    CHECK_OK(stele_group_connect(a, "Two-1", "g", "ca", &ca));
    CHECK_OK(stele_group_connect(b, "Two-1", "g", "cb", &cb)); /* b learns of it */
    static int seen[N][2];
    memset(seen, 0, sizeof seen);
    /* Alternate: each handle takes and acks what it claimed. */
    size_t ga = 0, gb = 0;
    for (int round = 0; round < 200 && ga + gb < N; round++) {
        stele_batch *bt;
        for (int w = 0; w < 2; w++) {
            stele_consumer *c = w ? cb : ca;
            CHECK_OK(stele_consumer_read(c, 7, 0, &bt));
            for (size_t i = 0; i < stele_batch_count(bt); i++) {
                const stele_event *e = stele_batch_event(bt, i);
                seen[e->revision][w]++;
                CHECK_OK(stele_consumer_ack(c, (const uint8_t (*)[16])e->id, 1));
                *(w ? &gb : &ga) += 1;
            }
            stele_batch_free(bt);
        }
    }
    int once = 1;
    for (int i = 0; i < N; i++)
        once &= seen[i][0] + seen[i][1] == 1;
    CHECK(once); /* every event delivered once, by one handle */
    CHECK(ga > 0 && gb > 0);
    printf("two handles: %zu + %zu deliveries of %d events\n", ga, gb, N);

    /* More events; a takes some and closes without acking them: its claims
     * are released at close and b delivers them. */
    for (int i = 0; i < 30; i++) {
        stele_event_in ev = {.type = "T", .data = "{}", .data_len = 2, .flags = STELE_EVENT_JSON};
        stele_append_result res;
        CHECK_OK(stele_append(b, "Two-1", STELE_ANY, &ev, 1, &res));
    }
    static int more[N + 30][2];
    memset(more, 0, sizeof more);
    size_t held = drain(ca, more, N + 30, 0, 0);
    CHECK(held > 0);
    stele_consumer_close(ca);
    stele_close(a);
    drain(cb, more, N + 30, 1, 1);
    int all = 1;
    for (int i = N; i < N + 30; i++)
        all &= more[i][1] >= 1;
    CHECK(all); /* none lost: b delivered every new event, a's included */
    stele_consumer_close(cb);
    stele_close(b);
    t_store_drop(uri);
    passed++;
}

/* Bad options: a node name without its NUL is refused at open. */
static void test_bad_options(void)
{
    stele_options o = {0};
    memset(o.node_name, 'x', sizeof o.node_name);
    stele_db *db = NULL;
    const char *uri = t_store("gshare_bad");
    CHECK_RC(stele_open(uri, &o, &db), STELE_EINVAL);
    CHECK(db == NULL);
    CHECK(strstr(stele_errmsg(), "node_name") != NULL);
    t_store_drop(uri);
    passed++;
}

int main(void)
{
    test_bad_options();
    test_contract();
    test_race();
    test_two_handles();
    return t_done("test_group_share", passed);
}
