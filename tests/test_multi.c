/*
 * test_multi.c - multi-stream appends and DCB conditions
 * (stele_append_multi, stele_read_matching; docs/consistency.md).
 *
 *   basics      one commit over three streams: per-stream revisions, gapless
 *               positions in request order, stream reads, $all, heads;
 *   expect      every expectation against never-written, existing,
 *               soft-deleted and tombstoned streams, written to and check-only
 *               (KurrentDB 26.1's table), with the failing stream reported;
 *   state       a state snapshot saved in the same commit;
 *   retry       idempotent retries of the whole request, id conflicts;
 *   retry raced two copies of one append in one group commit: one written,
 *               the other its idempotent result; a changed copy a conflict;
 *   condition   DCB conditions: match, after, no match, types/tags semantics;
 *   matching    stele_read_matching both directions, paged;
 *   bad         bad input: clear errors, nothing written;
 *   recovery    reopen, `stele check`, a torn multi-stream commit at the tail
 *               cut off whole, scavenging a deleted stream's events of a
 *               multi-stream commit;
 *   transfers   8 threads move money between 50 accounts with exact
 *               expectations: the total stays constant, every winner's events
 *               are contiguous in $all;
 *   dcb races   the dcb-events scenarios (unique username, course capacity)
 *               with concurrent writers are never violated, and a condition
 *               that does not overlap never fails.
 */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log/record.h"
#include "util/util.h"

static int passed;
static int quick; /* TEST_QUICK=1 (ASan, valgrind): smaller races */

static stele_event_in ev(const char *type, const char *data, const char *const *tags,
                         size_t ntags)
{
    stele_event_in e = {0};
    e.type = type;
    e.data = data;
    e.data_len = strlen(data);
    e.tags = tags;
    e.ntags = ntags;
    e.flags = STELE_EVENT_JSON;
    return e;
}

static stele_append_record recd(size_t s, const char *type, const char *data)
{
    stele_append_record r = {s, ev(type, data, NULL, 0)};
    return r;
}

static uint64_t all_count(stele_db *db)
{
    stele_stats st;
    stele_get_stats(db, &st);
    return st.events;
}

static uint64_t head_rev(stele_db *db, const char *s)
{
    stele_stream_info info;
    if (stele_stream_head(db, s, &info))
        return STELE_NONE;
    return info.deleted || info.tombstoned ? STELE_NONE : info.last_revision;
}

/* ------------------------------------------------------------------ basics */

static void test_basics(void)
{
    const char *dir = t_store("multi-basics");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    stele_event_in e0 = ev("Seed", "{}", NULL, 0);
    CHECK_OK(stele_append(db, "other", STELE_NO_STREAM, &e0, 1, NULL));
    stele_append_stream s[3] = {
        {"acct-1", STELE_NO_STREAM, NULL}, {"acct-2", STELE_ANY, NULL}, {"audit", STELE_ANY, NULL}};
    stele_append_record r[5] = {recd(0, "Debited", "{\"a\":1}"), recd(1, "Credited", "{\"a\":1}"),
                                recd(0, "Debited", "{\"a\":2}"), recd(2, "Logged", "{}"),
                                recd(1, "Credited", "{\"a\":2}")};
    stele_append_result ps[3];
    stele_multi_result mr;
    CHECK_OK(stele_append_multi(db, s, 3, r, 5, NULL, ps, &mr));
    CHECK(mr.first_position == 1 && mr.last_position == 5 && !mr.idempotent);
    CHECK(ps[0].first_revision == 0 && ps[0].last_revision == 1);
    CHECK(ps[0].first_position == 1 && ps[0].last_position == 3);
    CHECK(ps[1].first_revision == 0 && ps[1].last_revision == 1);
    CHECK(ps[1].first_position == 2 && ps[1].last_position == 5);
    CHECK(ps[2].first_revision == 0 && ps[2].first_position == 4);
    /* $all in request order */
    stele_page *pg;
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 100, &pg));
    CHECK(stele_page_count(pg) == 6);
    const char *want[6] = {"other", "acct-1", "acct-2", "acct-1", "audit", "acct-2"};
    for (size_t i = 0; i < stele_page_count(pg) && i < 6; i++) {
        const stele_event *e = stele_page_event(pg, i);
        CHECK(e->position == i && !strcmp(e->stream, want[i]));
    }
    stele_page_free(pg);
    /* stream reads, both directions */
    CHECK_OK(stele_read_stream(db, "acct-2", 0, STELE_FORWARDS, 10, &pg));
    CHECK(stele_page_count(pg) == 2);
    CHECK(stele_page_event(pg, 0)->position == 2 && stele_page_event(pg, 1)->position == 5);
    CHECK(stele_page_event(pg, 1)->revision == 1);
    CHECK(!memcmp(stele_page_event(pg, 1)->data, "{\"a\":2}", 7));
    stele_page_free(pg);
    CHECK_OK(stele_read_stream(db, "acct-1", STELE_END, STELE_BACKWARDS, 10, &pg));
    CHECK(stele_page_count(pg) == 2 && stele_page_event(pg, 0)->revision == 1);
    stele_page_free(pg);
    /* a single append continues the streams */
    CHECK_OK(stele_append(db, "acct-1", 1, &e0, 1, NULL));
    CHECK(head_rev(db, "acct-1") == 2);
    /* a second multi append with exact expectations and a check-only stream */
    stele_append_stream s2[3] = {
        {"acct-1", 2, NULL}, {"acct-2", 1, NULL}, {"other", 0, NULL}};
    stele_append_record r2[2] = {recd(0, "Debited", "{}"), recd(1, "Credited", "{}")};
    CHECK_OK(stele_append_multi(db, s2, 3, r2, 2, NULL, ps, &mr));
    CHECK(ps[2].first_revision == STELE_NONE && ps[2].first_position == STELE_NONE);
    CHECK(mr.first_position == 7 && ps[0].first_revision == 3 && ps[1].first_revision == 2);
    /* subscriptions, queries and consumer groups see ordinary events */
    stele_sub *sub;
    CHECK_OK(stele_subscribe_stream(db, "acct-2", 0, &sub));
    CHECK_OK(stele_sub_next(sub, 100, 1000, &pg));
    CHECK(stele_page_count(pg) == 3 && stele_page_event(pg, 2)->position == 8);
    stele_page_free(pg);
    stele_sub_close(sub);
    stele_query qq = {0};
    qq.kind = STELE_QUERY_CATEGORY;
    qq.key = "acct";
    qq.limit = 100;
    CHECK_OK(stele_read_query(db, &qq, &pg));
    CHECK(stele_page_count(pg) == 7);
    stele_page_free(pg);
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    CHECK_OK(stele_group_create(db, NULL, "g1", &gs));
    stele_consumer *cons;
    CHECK_OK(stele_group_connect(db, NULL, "g1", "c1", &cons));
    stele_batch *bt;
    size_t seen = 0;
    for (int tries = 0; tries < 20 && seen < 9; tries++) {
        CHECK_OK(stele_consumer_read(cons, 100, 200, &bt));
        seen += stele_batch_count(bt);
        stele_batch_free(bt);
    }
    CHECK(seen == 9);
    stele_consumer_close(cons);
    stele_close(db);
    /* reopen: recovery replays nothing (clean), check is clean */
    char report[512];
    CHECK_OK(t_store_check(dir, report, sizeof report));
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK(head_rev(db, "acct-1") == 3 && head_rev(db, "acct-2") == 2 && all_count(db) >= 9);
    stele_close(db);
    t_store_drop(dir);
    passed++;
}

/* ----------------------------------------------------------- expectations */

enum { NEVER, EXISTS, SOFTDEL, TOMB };

/* One row of KurrentDB 26.1's table: target stream in `state` (with 3
 * events unless NEVER), written to or check-only. */
static void expect_row(stele_db *db, int n, int state, int64_t expected, int write, int want)
{
    char t[64], a[64];
    snprintf(t, sizeof t, "t%d", n);
    snprintf(a, sizeof a, "a%d", n);
    stele_event_in e[3] = {ev("E", "{}", NULL, 0), ev("E", "{}", NULL, 0), ev("E", "{}", NULL, 0)};
    if (state != NEVER)
        CHECK_OK(stele_append(db, t, STELE_ANY, e, 3, NULL));
    if (state == SOFTDEL)
        CHECK_OK(stele_delete_stream(db, t, STELE_ANY, NULL));
    if (state == TOMB)
        CHECK_OK(stele_tombstone_stream(db, t, STELE_ANY, NULL));
    uint64_t before = all_count(db);
    stele_append_stream s[2] = {{t, expected, NULL}, {a, STELE_ANY, NULL}};
    stele_append_record r = recd(write ? 0 : 1, "X", "{}");
    stele_multi_result mr;
    int rc = stele_append_multi(db, s, 2, &r, 1, NULL, NULL, &mr);
    if (rc != want)
        fprintf(stderr, "row state %d expected %lld write %d: got %s (%s), want %s\n", state,
                (long long)expected, write, stele_errname(rc), stele_errmsg(),
                stele_errname(want));
    CHECK(rc == want);
    if (rc) {
        CHECK(all_count(db) == before);
        CHECK(mr.failed_stream == 0);
        CHECK(mr.current_revision == (state == NEVER ? STELE_NONE : 2));
    } else {
        CHECK(all_count(db) == before + 1);
    }
}

static void test_expect(void)
{
    const char *dir = t_store("multi-expect");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    const int OK = 0, W = STELE_EWRONGREV, D = STELE_EDELETED;
    struct {
        int64_t exp;
        int want[4][2]; /* [state][write?] : check-only, write */
    } rows[] = {
        {STELE_ANY, {{OK, OK}, {OK, OK}, {OK, OK}, {OK, D}}},
        {STELE_STREAM_EXISTS, {{W, W}, {OK, OK}, {D, D}, {D, D}}},
        {STELE_NO_STREAM, {{OK, OK}, {W, W}, {OK, OK}, {OK, D}}},
        {STELE_DELETED, {{W, W}, {W, W}, {OK, OK}, {D, D}}},
        {1, {{W, W}, {W, W}, {W, W}, {D, D}}},
        {2, {{W, W}, {OK, OK}, {OK, OK}, {D, D}}},
        {3, {{W, W}, {W, W}, {W, W}, {D, D}}},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        for (int st = 0; st < 4; st++)
            for (int w = 0; w < 2; w++)
                expect_row(db, n++, st, rows[i].exp, w, rows[i].want[st][w]);
    /* the first failing stream is reported, with a message naming it */
    stele_event_in e = ev("E", "{}", NULL, 0);
    CHECK_OK(stele_append(db, "x-1", STELE_ANY, &e, 1, NULL));
    stele_append_stream s[3] = {
        {"x-0", STELE_ANY, NULL}, {"x-1", 5, NULL}, {"x-2", STELE_STREAM_EXISTS, NULL}};
    stele_append_record r = recd(0, "E", "{}");
    stele_multi_result mr;
    stele_append_result fps[3];
    CHECK_RC(stele_append_multi(db, s, 3, &r, 1, NULL, fps, &mr), STELE_EWRONGREV);
    CHECK(strstr(stele_errmsg(), "x-1") != NULL);
    CHECK(mr.failed_stream == 1 && mr.current_revision == 0);
    /* every failing stream is marked */
    CHECK(fps[0].failed == 0 && fps[1].failed == STELE_EWRONGREV && fps[1].current_revision == 0);
    CHECK(fps[2].failed == STELE_EWRONGREV && fps[2].current_revision == STELE_NONE);
    CHECK(fps[1].first_position == STELE_NONE);
    /* a soft-deleted stream written with STELE_DELETED continues its revisions */
    stele_append_stream s2 = {"t0x", STELE_DELETED, NULL};
    stele_event_in e3[3] = {e, e, e};
    CHECK_OK(stele_append(db, "t0x", STELE_ANY, e3, 3, NULL));
    CHECK_OK(stele_delete_stream(db, "t0x", STELE_ANY, NULL));
    stele_append_result ps;
    CHECK_OK(stele_append_multi(db, &s2, 1, &r, 1, NULL, &ps, NULL));
    CHECK(ps.first_revision == 3);
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "t0x", 0, STELE_FORWARDS, 10, &pg));
    CHECK(stele_page_count(pg) == 1 && stele_page_event(pg, 0)->revision == 3);
    stele_page_free(pg);
    stele_close(db);
    CHECK_OK(t_store_check(dir, NULL, 0));
    t_store_drop(dir);
    passed++;
}

/* ------------------------------------------------------------------ async */

static _Atomic int async_done_n;
static int async_rc;
static uint64_t async_pos, async_rev1;

static void async_cb(void *ctx, int rc, const stele_append_result *ps, size_t n,
                     const stele_multi_result *res, const char *msg)
{
    (void)ctx;
    (void)msg;
    async_rc = rc;
    async_pos = res->first_position;
    async_rev1 = n == 2 ? ps[1].last_revision : 99;
    async_done_n++;
}

static void test_async(void)
{
    const char *dir = t_store("multi-async");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    /* the request lives in heap memory freed (and scribbled) at once */
    stele_append_stream *s = calloc(2, sizeof *s);
    char *n0 = strdup("as-0"), *n1 = strdup("as-1"), *ty = strdup("T"), *tg = strdup("tag:x");
    const char **tags = calloc(1, sizeof *tags);
    tags[0] = tg;
    s[0] = (stele_append_stream){n0, STELE_NO_STREAM, NULL};
    s[1] = (stele_append_stream){n1, STELE_NO_STREAM, NULL};
    stele_append_record *r = calloc(3, sizeof *r);
    for (int i = 0; i < 3; i++)
        r[i] = (stele_append_record){(size_t)(i % 2), ev(ty, "{}", tags, 1)};
    stele_query_item *it = calloc(1, sizeof *it);
    it->tags = tags;
    it->ntags = 1;
    stele_condition c = {it, 1, STELE_NONE};
    CHECK_OK(stele_append_multi_async(db, s, 2, r, 3, &c, async_cb, NULL));
    memset(n0, 'z', 4);
    memset(ty, 'z', 1);
    memset(tg, 'z', 5);
    free(s);
    free(r);
    free(it);
    for (int i = 0; i < 2000 && !async_done_n; i++)
        usleep(5000);
    CHECK(async_done_n == 1 && async_rc == 0 && async_pos == 0 && async_rev1 == 0);
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "as-0", 0, STELE_FORWARDS, 10, &pg));
    CHECK(stele_page_count(pg) == 2 && !strcmp(stele_page_event(pg, 0)->type, "T"));
    CHECK(stele_page_event(pg, 0)->ntags == 1 &&
          !strcmp(stele_page_event(pg, 0)->tags[0], "tag:x"));
    stele_page_free(pg);
    /* bad arguments fail at once, without a callback */
    stele_append_stream bad = {"as-0", -9, NULL};
    stele_append_record rr = recd(0, "T", "{}");
    CHECK_RC(stele_append_multi_async(db, &bad, 1, &rr, 1, NULL, async_cb, NULL), STELE_EINVAL);
    stele_close(db);
    CHECK(async_done_n == 1);
    free(n0);
    free(n1);
    free(ty);
    free(tg);
    free(tags);
    t_store_drop(dir);
    passed++;
}

/* ------------------------------------------------------------------ state */

static void test_state(void)
{
    const char *dir = t_store("multi-state");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    stele_snapshot_in st = {0, 3, STELE_EVENT_JSON, "{\"balance\":90}", 14};
    stele_append_stream s[2] = {{"order-1", STELE_NO_STREAM, &st}, {"log", STELE_ANY, NULL}};
    stele_append_record r[3] = {recd(0, "Created", "{}"), recd(1, "Noted", "{}"),
                                recd(0, "Paid", "{}")};
    CHECK_OK(stele_append_multi(db, s, 2, r, 3, NULL, NULL, NULL));
    stele_snapshot *snap;
    CHECK_OK(stele_get_snapshot(db, "order-1", STELE_END, &snap));
    CHECK(snap && snap->revision == 1 && snap->schema_version == 3 && snap->state_len == 14);
    CHECK(snap && !memcmp(snap->state, "{\"balance\":90}", 14));
    stele_free(snap);
    /* a state on a stream without events fails, nothing written */
    stele_append_stream s2[2] = {{"empty", STELE_ANY, &st}, {"log", STELE_ANY, NULL}};
    stele_append_record r2 = recd(1, "Noted", "{}");
    stele_multi_result mr;
    uint64_t before = all_count(db);
    CHECK_RC(stele_append_multi(db, s2, 2, &r2, 1, NULL, NULL, &mr), STELE_ENOTFOUND);
    CHECK(all_count(db) == before && mr.failed_stream == 0);
    /* a state for a stream with events but none in this append: at its head */
    stele_append_stream s3[2] = {{"order-1", 1, &st}, {"log", STELE_ANY, NULL}};
    st.state = "{\"balance\":80}";
    CHECK_OK(stele_append_multi(db, s3, 2, &r2, 1, NULL, NULL, NULL));
    CHECK_OK(stele_get_snapshot(db, "order-1", STELE_END, &snap));
    CHECK(snap && snap->revision == 1 && !memcmp(snap->state, "{\"balance\":80}", 14));
    stele_free(snap);
    stele_close(db);
    CHECK_OK(t_store_check(dir, NULL, 0));
    /* the snapshots survive a rebuild of the local engine's index from the
     * log; on another backend, a reopen */
    if (t_store_is_local()) {
        char p[4200];
        snprintf(p, sizeof p, "%s/index", dir);
        t_rmdir(p);
    }
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK_OK(stele_get_snapshot(db, "order-1", STELE_END, &snap));
    CHECK(snap && snap->revision == 1 && !memcmp(snap->state, "{\"balance\":80}", 14));
    stele_free(snap);
    stele_close(db);
    t_store_drop(dir);
    passed++;
}

/* ------------------------------------------------------------------ retry */

static void test_retry(void)
{
    const char *dir = t_store("multi-retry");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    uint8_t ids[3][16];
    for (int i = 0; i < 3; i++)
        uuid_v7(ids[i]);
    stele_append_stream s[2] = {{"a", STELE_NO_STREAM, NULL}, {"b", STELE_NO_STREAM, NULL}};
    stele_append_record r[3] = {recd(0, "X", "{}"), recd(1, "Y", "{}"), recd(0, "Z", "{}")};
    for (int i = 0; i < 3; i++)
        r[i].event.id = ids[i];
    stele_append_result ps[2], ps2[2];
    stele_multi_result mr, mr2;
    CHECK_OK(stele_append_multi(db, s, 2, r, 3, NULL, ps, &mr));
    uint64_t n = all_count(db);
    /* the same request again: the original result, nothing written */
    CHECK_OK(stele_append_multi(db, s, 2, r, 3, NULL, ps2, &mr2));
    CHECK(mr2.idempotent && mr2.first_position == mr.first_position);
    CHECK(ps2[0].first_revision == ps[0].first_revision && ps2[0].last_revision == 1);
    CHECK(ps2[1].last_position == ps[1].last_position && ps2[1].idempotent);
    CHECK(all_count(db) == n);
    /* the same ids in the same places with another event: a conflict that
     * names what differs (issue 19; on every backend) */
    stele_append_record rd[3] = {r[0], r[1], r[2]};
    rd[1].event.data = "{\"n\":2}";
    rd[1].event.data_len = 7;
    CHECK_RC(stele_append_multi(db, s, 2, rd, 3, NULL, NULL, NULL), STELE_EIDCONFLICT);
    CHECK(strstr(stele_errmsg(), "data") != NULL);
    rd[1] = r[1];
    rd[2].event.type = "Other";
    CHECK_RC(stele_append_multi(db, s, 2, rd, 3, NULL, NULL, NULL), STELE_EIDCONFLICT);
    CHECK(strstr(stele_errmsg(), "type") != NULL);
    CHECK(all_count(db) == n);
    /* a subset, or another order: a conflict */
    CHECK_RC(stele_append_multi(db, s, 2, r, 2, NULL, NULL, NULL), STELE_EIDCONFLICT);
    stele_append_record rr[3] = {r[1], r[0], r[2]};
    CHECK_RC(stele_append_multi(db, s, 2, rr, 3, NULL, NULL, NULL), STELE_EIDCONFLICT);
    /* one reused id in a new request */
    stele_append_record r3[2] = {recd(0, "X", "{}"), r[1]};
    s[0].expected = STELE_ANY;
    s[1].expected = STELE_ANY;
    CHECK_RC(stele_append_multi(db, s, 2, r3, 2, NULL, NULL, NULL), STELE_EIDCONFLICT);
    CHECK(all_count(db) == n);
    stele_close(db);
    t_store_drop(dir);
    passed++;
}

/* Two copies of one multi-stream append that race into one group commit
 * (a client's retry while its original still waits in the queue): the
 * second is the idempotent success, not an id conflict; a copy with other
 * data is told apart in that group too. A single async append queued first
 * keeps the writer busy, so the copies behind it wait together. */
typedef struct raced_call {
    _Atomic int *done;
    int rc;
    uint64_t pos;
    int idem;
    char msg[256];
} raced_call;

static void raced_cb(void *ctx, int rc, const stele_append_result *ps, size_t n,
                     const stele_multi_result *res, const char *msg)
{
    (void)ps;
    (void)n;
    raced_call *c = ctx;
    c->rc = rc;
    c->pos = res ? res->first_position : STELE_NONE;
    c->idem = res ? res->idempotent : 0;
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "");
    atomic_fetch_add(c->done, 1);
}

static void raced_single_cb(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    (void)rc;
    (void)res;
    (void)msg;
    atomic_fetch_add((_Atomic int *)ctx, 1);
}

static void test_retry_raced(void)
{
    const char *dir = t_store("multi-retry-raced");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    int rounds = quick ? 10 : 40;
    for (int round = 0; round < rounds; round++) {
        uint8_t ids[3][16];
        for (int i = 0; i < 3; i++)
            uuid_v7(ids[i]);
        char a[32], b[32];
        snprintf(a, sizeof a, "raced-a-%d", round);
        snprintf(b, sizeof b, "raced-b-%d", round);
        stele_append_stream s[2] = {{a, STELE_ANY, NULL}, {b, STELE_ANY, NULL}};
        stele_append_record r[3] = {recd(0, "X", "{}"), recd(1, "Y", "{}"), recd(0, "Z", "{}")};
        for (int i = 0; i < 3; i++)
            r[i].event.id = ids[i];
        stele_append_record rd[3] = {r[0], r[1], r[2]};
        rd[1].event.data = "{\"n\":2}";
        rd[1].event.data_len = 7;
        _Atomic int done = 0;
        raced_call c[3] = {{.done = &done}, {.done = &done}, {.done = &done}};
        stele_event_in blocker = ev("B", "{}", NULL, 0);
        uint64_t before = all_count(db);
        CHECK_OK(stele_append_async(db, "raced-blocker", STELE_ANY, &blocker, 1, raced_single_cb,
                                    (void *)&done));
        CHECK_OK(stele_append_multi_async(db, s, 2, r, 3, NULL, raced_cb, &c[0]));
        CHECK_OK(stele_append_multi_async(db, s, 2, r, 3, NULL, raced_cb, &c[1]));
        CHECK_OK(stele_append_multi_async(db, s, 2, rd, 3, NULL, raced_cb, &c[2]));
        for (int i = 0; i < 4000 && atomic_load(&done) < 4; i++)
            usleep(1000);
        CHECK(atomic_load(&done) == 4);
        if (c[0].rc || c[1].rc)
            printf("raced round %d: rc %d \"%s\" / rc %d \"%s\"\n", round, c[0].rc, c[0].msg,
                   c[1].rc, c[1].msg);
        CHECK(c[0].rc == 0 && c[1].rc == 0);
        CHECK(c[0].pos == c[1].pos && !c[0].idem && c[1].idem);
        CHECK(c[2].rc == STELE_EIDCONFLICT && strstr(c[2].msg, "data") != NULL);
        CHECK(all_count(db) == before + 4); /* the blocker and one copy */
        CHECK(head_rev(db, a) == 1 && head_rev(db, b) == 0);
    }
    stele_close(db);
    t_store_drop(dir);
    passed++;
}

/* -------------------------------------------------------------- condition */

static void test_condition(void)
{
    const char *dir = t_store("multi-cond");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    const char *t_user[] = {"user:alice"}, *t_course[] = {"course:c1"},
               *t_both[] = {"user:alice", "course:c1"};
    stele_append_stream s = {"c-1", STELE_ANY, NULL};
    stele_append_record r = {0, ev("Registered", "{}", t_user, 1)};
    CHECK_OK(stele_append_multi(db, &s, 1, &r, 1, NULL, NULL, NULL)); /* position 0 */
    r.event = ev("CourseDefined", "{}", t_course, 1);
    CHECK_OK(stele_append_multi(db, &s, 1, &r, 1, NULL, NULL, NULL)); /* 1 */
    r.event = ev("Subscribed", "{}", t_both, 2);
    CHECK_OK(stele_append_multi(db, &s, 1, &r, 1, NULL, NULL, NULL)); /* 2 */
    const char *types_reg[] = {"Registered"}, *types_sub[] = {"Subscribed", "Left"};
    stele_query_item it_reg = {types_reg, 1, t_user, 1};
    stele_condition c = {&it_reg, 1, STELE_NONE};
    stele_multi_result mr;
    uint64_t n = all_count(db);
    CHECK_RC(stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr), STELE_ECONDITION);
    CHECK(strstr(stele_errmsg(), "position 0") != NULL);
    CHECK(mr.condition_position == 0 && all_count(db) == n);
    c.after = 0; /* the decision saw position 0 */
    CHECK_OK(stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr));
    /* tags must all be there; types any of */
    stele_query_item it2 = {types_sub, 2, t_both, 2};
    c = (stele_condition){&it2, 1, 2};
    n = all_count(db); /* the last append's Subscribed is at position 3 */
    CHECK_RC(stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr), STELE_ECONDITION);
    CHECK(mr.condition_position == 3);
    c.after = 3;
    CHECK_OK(stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr)); /* 4 */
    /* tags only, a tag no event has, several items (OR) */
    const char *t_none[] = {"user:bob"}, *t_c2[] = {"course:c2", "user:alice"};
    stele_query_item items[2] = {{NULL, 0, t_none, 1}, {NULL, 0, t_c2, 2}};
    c = (stele_condition){items, 2, STELE_NONE};
    CHECK_OK(stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr)); /* 5 */
    items[1] = (stele_query_item){NULL, 0, t_course, 1};
    c.after = 1;
    CHECK_RC(stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr), STELE_ECONDITION);
    CHECK(mr.condition_position == 2);
    /* condition failure wins over nothing else: a wrong expectation first */
    s.expected = 100;
    CHECK_RC(stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr), STELE_EWRONGREV);
    stele_close(db);
    t_store_drop(dir);
    passed++;
}

/* --------------------------------------------------------------- matching */

static void test_matching(void)
{
    const char *dir = t_store("multi-match");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    const char *ta[] = {"a"}, *tb[] = {"b"}, *tab[] = {"a", "b"};
    /* 60 events: type T<i%3>, tags: i%2 ? a : b, every 5th both */
    for (int i = 0; i < 60; i++) {
        char type[8];
        snprintf(type, sizeof type, "T%d", i % 3);
        const char *const *tags = i % 5 == 0 ? tab : i % 2 ? ta : tb;
        size_t nt = i % 5 == 0 ? 2 : 1;
        stele_append_stream s = {i % 4 ? "m-1" : "m-2", STELE_ANY, NULL};
        stele_append_record r = {0, ev(type, "{}", tags, nt)};
        CHECK_OK(stele_append_multi(db, &s, 1, &r, 1, NULL, NULL, NULL));
    }
    const char *types[] = {"T1"};
    stele_query_item items[2] = {{types, 1, ta, 1}, {NULL, 0, tab, 2}};
    stele_condition c = {items, 2, 0};
    /* expected matches */
    uint64_t want[60];
    size_t nwant = 0;
    for (int i = 0; i < 60; i++) {
        int has_a = i % 5 == 0 || i % 2, has_b = i % 5 == 0 || !(i % 2);
        if ((i % 3 == 1 && has_a) || (has_a && has_b))
            want[nwant++] = (uint64_t)i;
    }
    for (int dirn = 0; dirn < 2; dirn++) {
        size_t got = 0;
        uint64_t from = dirn ? STELE_END : 0;
        for (int pages = 0; pages < 100; pages++) {
            stele_page *pg;
            CHECK_OK(stele_read_matching(db, &c, from, dirn, 3, &pg));
            for (size_t i = 0; i < stele_page_count(pg); i++, got++) {
                uint64_t w = dirn ? want[nwant - 1 - got] : want[got];
                CHECK(got < nwant && stele_page_event(pg, i)->position == w);
            }
            int more = stele_page_next(pg, &from);
            stele_page_free(pg);
            if (!more)
                break;
        }
        CHECK(got == nwant);
    }
    /* a query nothing matches */
    const char *tz[] = {"zzz"};
    stele_query_item iz = {NULL, 0, tz, 1};
    stele_condition cz = {&iz, 1, 0};
    stele_page *pg;
    CHECK_OK(stele_read_matching(db, &cz, 0, STELE_FORWARDS, 10, &pg));
    CHECK(stele_page_count(pg) == 0);
    stele_page_free(pg);
    stele_close(db);
    t_store_drop(dir);
    passed++;
}

/* -------------------------------------------------------------------- bad */

static void test_bad(void)
{
    const char *dir = t_store("multi-bad");
    stele_db *db;
    stele_options o = {0};
    o.max_append_size = 64 << 10;
    CHECK_OK(stele_open(dir, &o, &db));
    stele_append_stream s[2] = {{"a", STELE_ANY, NULL}, {"b", STELE_ANY, NULL}};
    stele_append_record r = recd(0, "E", "{}");
    CHECK_RC(stele_append_multi(db, s, 0, &r, 1, NULL, NULL, NULL), STELE_EINVAL);
    CHECK_RC(stele_append_multi(db, s, 2, &r, 0, NULL, NULL, NULL), STELE_EINVAL);
    stele_append_stream dup[2] = {{"a", STELE_ANY, NULL}, {"a", 3, NULL}};
    CHECK_RC(stele_append_multi(db, dup, 2, &r, 1, NULL, NULL, NULL), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "named twice") != NULL);
    stele_append_record bad = recd(2, "E", "{}");
    CHECK_RC(stele_append_multi(db, s, 2, &bad, 1, NULL, NULL, NULL), STELE_EINVAL);
    /* event ids: unique across the streams of the request, never nil */
    uint8_t id1[16] = {1}, nil[16] = {0};
    stele_append_record twice[2] = {recd(0, "E", "{}"), recd(1, "E", "{}")};
    twice[0].event.id = twice[1].event.id = id1;
    CHECK_RC(stele_append_multi(db, s, 2, twice, 2, NULL, NULL, NULL), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "appears twice") != NULL);
    twice[1].event.id = nil;
    CHECK_RC(stele_append_multi(db, s, 2, twice, 2, NULL, NULL, NULL), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "nil UUID") != NULL);
    stele_append_stream sys = {"$sys", STELE_ANY, NULL};
    CHECK_RC(stele_append_multi(db, &sys, 1, &r, 1, NULL, NULL, NULL), STELE_EINVAL);
    stele_append_stream badexp = {"a", -9, NULL};
    CHECK_RC(stele_append_multi(db, &badexp, 1, &r, 1, NULL, NULL, NULL), STELE_EINVAL);
    stele_condition c0 = {NULL, 0, 0};
    CHECK_RC(stele_append_multi(db, s, 2, &r, 1, &c0, NULL, NULL), STELE_EINVAL);
    stele_query_item empty = {NULL, 0, NULL, 0};
    stele_condition c1 = {&empty, 1, 0};
    CHECK_RC(stele_append_multi(db, s, 2, &r, 1, &c1, NULL, NULL), STELE_EINVAL);
    const char *bt[] = {""};
    stele_query_item emptytag = {NULL, 0, bt, 1};
    stele_condition c2 = {&emptytag, 1, 0};
    CHECK_RC(stele_append_multi(db, s, 2, &r, 1, &c2, NULL, NULL), STELE_EINVAL);
    stele_page *pg;
    CHECK_RC(stele_read_matching(db, &c1, 0, STELE_FORWARDS, 10, &pg), STELE_EINVAL);
    /* too many streams */
    size_t ns = STELE_MAX_APPEND_STREAMS + 1;
    stele_append_stream *many = calloc(ns, sizeof *many);
    char (*names)[16] = calloc(ns, 16);
    for (size_t i = 0; i < ns; i++) {
        snprintf(names[i], 16, "s%zu", i);
        many[i] = (stele_append_stream){names[i], STELE_ANY, NULL};
    }
    CHECK_RC(stele_append_multi(db, many, ns, &r, 1, NULL, NULL, NULL), STELE_ETOOBIG);
    free(many);
    free(names);
    /* too big */
    static char big[40 << 10];
    memset(big, 'x', sizeof big - 1);
    stele_append_record two[2] = {{0, ev("E", big, NULL, 0)}, {1, ev("E", big, NULL, 0)}};
    two[0].event.flags = two[1].event.flags = 0;
    CHECK_RC(stele_append_multi(db, s, 2, two, 2, NULL, NULL, NULL), STELE_ETOOBIG);
    /* duplicate ids in one request */
    uint8_t id[16];
    uuid_v7(id);
    stele_append_record dupid[2] = {recd(0, "E", "{}"), recd(1, "E", "{}")};
    dupid[0].event.id = dupid[1].event.id = id;
    CHECK_RC(stele_append_multi(db, s, 2, dupid, 2, NULL, NULL, NULL), STELE_EINVAL);
    /* a bad event names its index */
    stele_append_record badev[2] = {recd(0, "E", "{}"), recd(1, "", "{}")};
    CHECK_RC(stele_append_multi(db, s, 2, badev, 2, NULL, NULL, NULL), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "event 1") != NULL);
    CHECK(all_count(db) == 0);
    stele_close(db);
    t_store_drop(dir);
    passed++;
}

/* --------------------------------------------------------------- recovery */

/* The offset of the last record and of the last commit's start in segment
 * file `path` (walking the records). */
static void last_commit(const char *path, long *commit, long *last_rec, long *end)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f)
        return;
    long off = SEG_HEADER_SIZE;
    *commit = *last_rec = *end = -1;
    for (;;) {
        /* Records of every kind (a compact one's header has no fixed
         * layout): decoded whole. */
        uint8_t h[4], *whole;
        rec r;
        const char *why;
        fseek(f, off, SEEK_SET);
        if (fread(h, 1, sizeof h, f) != sizeof h || ld32(h) == 0 || !(whole = malloc(ld32(h))))
            break;
        fseek(f, off, SEEK_SET);
        rec_status st = REC_BAD;
        if (fread(whole, 1, ld32(h), f) == ld32(h))
            st = rec_decode(whole, ld32(h), &r, &why);
        int ok = st == REC_OK || st == REC_FAR; /* the names are not needed */
        free(whole);
        if (!ok)
            break;
        /* (A chain record, before or after its commit, is not part of it.) */
        if (r.kind != REC_CHAIN && r.commit_index == 0)
            *commit = off;
        if (r.kind != REC_CHAIN)
            *last_rec = off;
        off += ld32(h);
    }
    *end = off;
    fclose(f);
}

static void test_recovery(void)
{
    if (!t_store_is_local()) {
        printf("test_recovery: skipped (tears the local engine's log)\n");
        return;
    }
    const char *dir = t_store("multi-recovery");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    stele_snapshot_in st = {0, 1, 0, "S", 1};
    stele_append_stream s[3] = {
        {"r-1", STELE_ANY, NULL}, {"r-2", STELE_ANY, &st}, {"r-3", STELE_ANY, NULL}};
    stele_append_record r[4] = {recd(0, "A", "{}"), recd(1, "B", "{}"), recd(2, "C", "{}"),
                                recd(1, "D", "{}")};
    CHECK_OK(stele_append_multi(db, s, 3, r, 4, NULL, NULL, NULL));
    CHECK_OK(stele_append_multi(db, s, 3, r, 4, NULL, NULL, NULL));
    stele_close(db);
    CHECK_OK(t_store_check(dir, NULL, 0));
    /* tear the last commit: zero its last record (the state snapshot) */
    char seg[4200];
    snprintf(seg, sizeof seg, "%s/log/00000000.seg", dir);
    long commit = -1, last = -1, end = -1;
    last_commit(seg, &commit, &last, &end);
    CHECK(commit > 0 && last > commit);
    int fd = open(seg, O_WRONLY);
    static const uint8_t zeros[4096];
    CHECK(pwrite(fd, zeros, (size_t)(end - last), last) == end - last);
    close(fd);
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK(all_count(db) == 4);
    CHECK(head_rev(db, "r-1") == 0 && head_rev(db, "r-2") == 1 && head_rev(db, "r-3") == 0);
    stele_snapshot *snap;
    CHECK_OK(stele_get_snapshot(db, "r-2", STELE_END, &snap));
    CHECK(snap && snap->revision == 1);
    stele_free(snap);
    /* appends go on after the cut */
    CHECK_OK(stele_append_multi(db, s, 3, r, 4, NULL, NULL, NULL));
    CHECK(all_count(db) == 8 && head_rev(db, "r-2") == 3);
    /* scavenging: r-3's events of the multi commits are hidden after a delete;
     * the commits stay whole because their other streams' events are visible */
    CHECK_OK(stele_delete_stream(db, "r-3", STELE_ANY, NULL));
    stele_close(db);
    CHECK_OK(t_store_check(dir, NULL, 0));
    t_store_drop(dir);
    passed++;
}

/* Scavenging removes a multi-stream commit whole when every stream in it
 * is deleted, and keeps one with a visible event. */
static void test_scavenge(void)
{
    if (!t_store_is_local()) {
        printf("test_scavenge: skipped (the local engine's scavenger)\n");
        return;
    }
    const char *dir = t_store("multi-scav");
    stele_options o = {0};
    o.segment_size = 64 << 10;
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    static char pad[2000];
    memset(pad, 'p', sizeof pad - 1);
    for (int i = 0; i < 100; i++) {
        stele_append_stream s[3] = {
            {"gone-1", STELE_ANY, NULL}, {"gone-2", STELE_ANY, NULL}, {"kept", STELE_ANY, NULL}};
        stele_append_record r[2] = {{0, ev("A", pad, NULL, 0)}, {(size_t)(i % 2 ? 1 : 2), ev("B", pad, NULL, 0)}};
        r[0].event.flags = r[1].event.flags = 0;
        CHECK_OK(stele_append_multi(db, s, 3, r, 2, NULL, NULL, NULL));
    }
    CHECK_OK(stele_delete_stream(db, "gone-1", STELE_ANY, NULL));
    CHECK_OK(stele_delete_stream(db, "gone-2", STELE_ANY, NULL));
    stele_scavenge_result res;
    CHECK_OK(stele_scavenge(db, NULL, &res));
    CHECK(res.events_removed > 0 && res.events_removed % 2 == 0);
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "kept", 0, STELE_FORWARDS, 1000, &pg));
    CHECK(stele_page_count(pg) == 50);
    stele_page_free(pg);
    /* $all: every multi commit whole or gone */
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 1000, &pg));
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        if (e->position % 2 == 0) {
            CHECK(i + 1 < stele_page_count(pg) &&
                  stele_page_event(pg, i + 1)->position == e->position + 1);
        } else {
            CHECK(i > 0 && stele_page_event(pg, i - 1)->position == e->position - 1);
        }
    }
    stele_page_free(pg);
    stele_close(db);
    CHECK_OK(t_store_check(dir, NULL, 0));
    /* and a rebuild from the scavenged log */
    char p[4200];
    snprintf(p, sizeof p, "%s/index", dir);
    t_rmdir(p);
    CHECK_OK(stele_open(dir, &o, &db));
    CHECK(head_rev(db, "kept") == 49);
    stele_close(db);
    CHECK_OK(t_store_check(dir, NULL, 0));
    t_store_drop(dir);
    passed++;
}

/* -------------------------------------------------------------- transfers */

#define ACCOUNTS 50
#define THREADS 8
#define TRANSFERS (quick ? 15 : 150)

static stele_db *tdb;

/* The balance and revision of an account, folded from its events. */
static void fold(const char *acct, long *bal, uint64_t *rev)
{
    *bal = 0;
    *rev = STELE_NONE;
    stele_page *pg;
    if (stele_read_stream(tdb, acct, 0, STELE_FORWARDS, 100000, &pg))
        return;
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        long v = strtol((const char *)e->data + 5, NULL, 10);
        *bal += !strcmp(e->type, "Credited") || !strcmp(e->type, "Opened") ? v : -v;
        *rev = e->revision;
    }
    stele_page_free(pg);
}

static void *transfer_thread(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 7919 + 1;
    int done = 0;
    for (int tries = 0; done < TRANSFERS && tries < TRANSFERS * 50; tries++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int a = (int)((seed >> 33) % ACCOUNTS), b = (int)((seed >> 17) % ACCOUNTS);
        if (a == b)
            continue;
        char na[16], nb[16];
        snprintf(na, sizeof na, "acct-%d", a);
        snprintf(nb, sizeof nb, "acct-%d", b);
        long ba, bb;
        uint64_t ra, rb;
        fold(na, &ba, &ra);
        fold(nb, &bb, &rb);
        long amt = 1 + (long)((seed >> 5) % 20);
        if (amt > ba)
            continue;
        char d[32];
        snprintf(d, sizeof d, "{\"a\":%ld}", amt);
        stele_append_stream s[2] = {{na, (int64_t)ra, NULL}, {nb, (int64_t)rb, NULL}};
        stele_append_record r[2] = {{0, ev("Debited", d, NULL, 0)}, {1, ev("Credited", d, NULL, 0)}};
        int rc = stele_append_multi(tdb, s, 2, r, 2, NULL, NULL, NULL);
        if (rc == 0)
            done++;
        else if (rc != STELE_EWRONGREV) {
            fprintf(stderr, "transfer: %s\n", stele_errmsg());
            CHECK(0);
            break;
        }
    }
    return NULL;
}

static void test_transfers(void)
{
    const char *dir = t_store("multi-transfers");
    CHECK_OK(stele_open(dir, NULL, &tdb));
    for (int i = 0; i < ACCOUNTS; i++) {
        char n[16];
        snprintf(n, sizeof n, "acct-%d", i);
        stele_event_in e = ev("Opened", "{\"a\":100}", NULL, 0);
        CHECK_OK(stele_append(tdb, n, STELE_NO_STREAM, &e, 1, NULL));
    }
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, transfer_thread, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    long total = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        char n[16];
        snprintf(n, sizeof n, "acct-%d", i);
        long b;
        uint64_t rev;
        fold(n, &b, &rev);
        CHECK(b >= 0);
        total += b;
    }
    CHECK(total == 100L * ACCOUNTS);
    /* every transfer's two events are adjacent in $all: Debited then Credited */
    stele_page *pg;
    CHECK_OK(stele_read_all(tdb, ACCOUNTS, STELE_FORWARDS, 1000000, &pg));
    size_t n = stele_page_count(pg);
    CHECK(n % 2 == 0 && n > 0);
    for (size_t i = 0; i + 1 < n; i += 2) {
        const stele_event *x = stele_page_event(pg, i), *y = stele_page_event(pg, i + 1);
        CHECK(!strcmp(x->type, "Debited") && !strcmp(y->type, "Credited"));
        CHECK(y->position == x->position + 1 && x->data_len == y->data_len &&
              !memcmp(x->data, y->data, x->data_len));
    }
    stele_page_free(pg);
    stele_close(tdb);
    CHECK_OK(t_store_check(dir, NULL, 0));
    t_store_drop(dir);
    passed++;
}

/* -------------------------------------------------------------- dcb races */

#define CLAIMERS 8
#define NAMES (quick ? 4 : 20)
#define COURSE_CAP 5

static _Atomic int claims_ok, subs_ok, free_fail;

/* Unique username: every claimer tries to claim the same names; the
 * decision reads the events tagged with the name, appends with the
 * condition "no such event after what I read". */
static void *claim_thread(void *arg)
{
    int me = (int)(uintptr_t)arg;
    for (int n = 0; n < NAMES; n++) {
        char tag[32], stream[32];
        snprintf(tag, sizeof tag, "username:u%d", n);
        snprintf(stream, sizeof stream, "user-%d-%d", me, n);
        const char *tags[] = {tag}, *types[] = {"AccountRegistered"};
        stele_query_item it = {types, 1, tags, 1};
        stele_condition c = {&it, 1, STELE_NONE};
        stele_page *pg;
        if (stele_read_matching(tdb, &c, 0, STELE_FORWARDS, 10, &pg))
            continue;
        size_t cnt = stele_page_count(pg);
        if (cnt)
            c.after = stele_page_event(pg, cnt - 1)->position;
        stele_page_free(pg);
        if (cnt)
            continue; /* taken */
        stele_append_stream s = {stream, STELE_NO_STREAM, NULL};
        stele_append_record r = {0, ev("AccountRegistered", "{}", tags, 1)};
        int rc = stele_append_multi(tdb, &s, 1, &r, 1, &c, NULL, NULL);
        if (rc == 0)
            claims_ok++;
        else
            CHECK(rc == STELE_ECONDITION);
        /* A condition that does not overlap never fails: a name only this
         * thread uses. */
        char own[32];
        snprintf(own, sizeof own, "own:%d", me);
        const char *otags[] = {own};
        stele_query_item oi = {types, 1, otags, 1};
        stele_condition oc = {&oi, 1, STELE_NONE};
        CHECK_OK(stele_read_matching(tdb, &oc, STELE_END, STELE_BACKWARDS, 1, &pg));
        if (stele_page_count(pg))
            oc.after = stele_page_event(pg, 0)->position;
        stele_page_free(pg);
        stele_append_record orr = {0, ev("AccountRegistered", "{}", otags, 1)};
        stele_append_stream os = {own, STELE_ANY, NULL};
        rc = stele_append_multi(tdb, &os, 1, &orr, 1, &oc, NULL, NULL);
        if (rc)
            free_fail++;
    }
    return NULL;
}

/* Course capacity: subscribe students while fewer than COURSE_CAP are
 * subscribed, deciding on the events tagged with the course. */
static void *course_thread(void *arg)
{
    int me = (int)(uintptr_t)arg;
    for (int tries = 0; tries < 50; tries++) {
        const char *ct[] = {"course:c9"}, *types[] = {"StudentSubscribed"};
        stele_query_item it = {types, 1, ct, 1};
        stele_condition c = {&it, 1, STELE_NONE};
        stele_page *pg;
        if (stele_read_matching(tdb, &c, 0, STELE_FORWARDS, 100, &pg))
            continue;
        size_t cnt = stele_page_count(pg);
        if (cnt)
            c.after = stele_page_event(pg, cnt - 1)->position;
        stele_page_free(pg);
        if (cnt >= COURSE_CAP)
            break;
        char st[32];
        snprintf(st, sizeof st, "student:%d-%d", me, tries);
        const char *tags[] = {"course:c9", st};
        stele_append_stream s = {"course-c9", STELE_ANY, NULL};
        stele_append_record r = {0, ev("StudentSubscribed", "{}", tags, 2)};
        int rc = stele_append_multi(tdb, &s, 1, &r, 1, &c, NULL, NULL);
        if (rc == 0)
            subs_ok++;
        else
            CHECK(rc == STELE_ECONDITION);
    }
    return NULL;
}

static void test_dcb_races(void)
{
    const char *dir = t_store("multi-dcb");
    CHECK_OK(stele_open(dir, NULL, &tdb));
    pthread_t th[CLAIMERS * 2];
    for (int i = 0; i < CLAIMERS; i++) {
        pthread_create(&th[i], NULL, claim_thread, (void *)(uintptr_t)i);
        pthread_create(&th[CLAIMERS + i], NULL, course_thread, (void *)(uintptr_t)i);
    }
    for (int i = 0; i < CLAIMERS * 2; i++)
        pthread_join(th[i], NULL);
    CHECK(claims_ok == NAMES);
    CHECK(subs_ok == COURSE_CAP);
    CHECK(free_fail == 0);
    /* and the log agrees: one registration per name, COURSE_CAP subscriptions */
    for (int n = 0; n < NAMES; n++) {
        char tag[32];
        snprintf(tag, sizeof tag, "username:u%d", n);
        const char *tags[] = {tag};
        stele_query_item it = {NULL, 0, tags, 1};
        stele_condition c = {&it, 1, 0};
        stele_page *pg;
        CHECK_OK(stele_read_matching(tdb, &c, 0, STELE_FORWARDS, 10, &pg));
        CHECK(stele_page_count(pg) == 1);
        stele_page_free(pg);
    }
    stele_close(tdb);
    CHECK_OK(t_store_check(dir, NULL, 0));
    t_store_drop(dir);
    passed++;
}

int main(void)
{
    t_seed();
    quick = getenv("TEST_QUICK") != NULL && atoi(getenv("TEST_QUICK")) != 0;
    test_basics();
    test_async();
    test_expect();
    test_state();
    test_retry();
    test_retry_raced();
    test_condition();
    test_matching();
    test_bad();
    test_recovery();
    test_scavenge();
    test_transfers();
    test_dcb_races();
    return t_done("test_multi", passed);
}
