/*
 * test_proj_inline.c - inline projections' state cache (src/proj/inline.c)
 * and the definition checks of `$deleted`.
 *
 * The cache keeps a stream's state at a revision so the next append folds
 * from memory; it must never give a state the stored one is not. Each case
 * below makes the cache's entry stale in one way (a conflict, a throwing
 * handler, an idempotent retry, a write that bypasses the projection, a
 * soft delete, a changed query, a disable/enable, a re-created projection,
 * a restart) and then checks that the stored state equals a fold of the
 * stream's events by a model written here in C. Then 8 racing writers (sync
 * and async, handled and unhandled types, refused events, exact expected
 * revisions that conflict) must leave every stream's state equal to the
 * model's fold.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static int passed;

/* The query: order-sensitive (h), counts (n), a handler that throws on a
 * negative value; Note is a type no handler takes. Q2 differs (v doubled). */
static const char Q1[] =
    "fromCategory('Wal').foreachStream().when({\n"
    "  $init: function(){ return {sum: 0, n: 0, h: 0, last: null}; },\n"
    "  Add: function(s, e){ if (e.body.v < 0) throw new Error('negative value');\n"
    "    s.sum += e.body.v; s.n++; s.h = (s.h * 31 + e.body.v) % 1000003; s.last = e.body.v; }});";
static const char Q2[] =
    "fromCategory('Wal').foreachStream().when({\n"
    "  $init: function(){ return {sum: 0, n: 0, h: 0, last: null}; },\n"
    "  Add: function(s, e){ if (e.body.v < 0) throw new Error('negative value');\n"
    "    s.sum += 2 * e.body.v; s.n++; s.h = (s.h * 31 + e.body.v) % 1000003; s.last = e.body.v; }});";

/* The model's fold of the stream's visible events with Q1 (mul 1) or Q2
 * (mul 2), as the JSON duktape writes. */
static void model(stele_db *db, const char *stream, int mul, char *out, size_t cap)
{
    long long sum = 0, n = 0, h = 0, last = 0;
    int has_last = 0;
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        int rc = stele_read_stream(db, stream, from, STELE_FORWARDS, 1000, &pg);
        if (rc == STELE_ENOTFOUND)
            break;
        CHECK_OK(rc);
        size_t cnt = stele_page_count(pg);
        for (size_t i = 0; i < cnt; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (strcmp(e->type, "Add"))
                continue;
            char d[64];
            snprintf(d, sizeof d, "%.*s", (int)e->data_len, (const char *)e->data);
            long long v = atoll(strchr(d, ':') + 1);
            sum += mul * v;
            n++;
            h = (h * 31 + v) % 1000003;
            last = v;
            has_last = 1;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || !cnt)
            break;
        from = next;
    }
    if (has_last)
        snprintf(out, cap, "{\"sum\":%lld,\"n\":%lld,\"h\":%lld,\"last\":%lld}", sum, n, h, last);
    else
        snprintf(out, cap, "{\"sum\":%lld,\"n\":%lld,\"h\":%lld,\"last\":null}", sum, n, h);
}

/* The stored state is at the stream's head and equals the model's fold. */
static void check_state(stele_db *db, const char *stream, int mul, const char *what)
{
    char want[256];
    model(db, stream, mul, want, sizeof want);
    stele_stream_info info;
    CHECK_OK(stele_stream_head(db, stream, &info));
    stele_snapshot *sn = NULL;
    CHECK_OK(stele_get_snapshot(db, stream, STELE_END, &sn));
    if (!sn || sn->revision != info.last_revision || sn->state_len != strlen(want) ||
        memcmp(sn->state, want, sn->state_len)) {
        fprintf(stderr, "%s: %s: state %.*s at %lld, want %s at %llu\n", what, stream,
                sn ? (int)sn->state_len : 6, sn ? (const char *)sn->state : "(none)",
                sn ? (long long)sn->revision : -1LL, want,
                (unsigned long long)info.last_revision);
        CHECK(0);
    }
    stele_free(sn);
}

static int add(stele_db *db, const char *stream, int64_t expected, const char *type, long v)
{
    char d[64];
    snprintf(d, sizeof d, "{\"v\":%ld}", v);
    stele_event_in ev = {.type = type, .data = d, .data_len = strlen(d),
                         .flags = STELE_EVENT_JSON};
    return stele_append(db, stream, expected, &ev, 1, NULL);
}

/* An append the inline projection does not see: stele_append_multi
 * without a state (the head moves, no snapshot is written). */
static void bypass(stele_db *db, const char *stream, long v)
{
    char d[64];
    snprintf(d, sizeof d, "{\"v\":%ld}", v);
    stele_append_stream st = {.stream = stream, .expected = STELE_ANY};
    stele_append_record rec = {.stream = 0, .event = {.type = "Add", .data = d,
                                                      .data_len = strlen(d),
                                                      .flags = STELE_EVENT_JSON}};
    stele_append_result per;
    stele_multi_result mr;
    CHECK_OK(stele_append_multi(db, &st, 1, &rec, 1, NULL, &per, &mr));
}

static uint64_t head_of(stele_db *db, const char *stream)
{
    stele_stream_info info;
    CHECK_OK(stele_stream_head(db, stream, &info));
    return info.last_revision;
}

static void create(stele_db *db, const char *name, const char *q)
{
    stele_projection_settings st = {.query = q, .query_len = strlen(q), .enabled = 1,
                                    .mode = STELE_PROJ_INLINE};
    CHECK_OK(stele_projection_create(db, name, &st));
}

struct async_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, rc;
};

static void async_cb(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    (void)res, (void)msg;
    struct async_wait *a = ctx;
    pthread_mutex_lock(&a->mu);
    a->done = 1;
    a->rc = rc;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* An append through stele_append_async (the projection's workers). */
static int add_async(stele_db *db, const char *stream, long v)
{
    char d[64];
    snprintf(d, sizeof d, "{\"v\":%ld}", v);
    stele_event_in ev = {.type = "Add", .data = d, .data_len = strlen(d),
                         .flags = STELE_EVENT_JSON};
    struct async_wait aw = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    int rc = stele_append_async(db, stream, STELE_ANY, &ev, 1, async_cb, &aw);
    if (rc)
        return rc;
    pthread_mutex_lock(&aw.mu);
    while (!aw.done)
        pthread_cond_wait(&aw.cv, &aw.mu);
    pthread_mutex_unlock(&aw.mu);
    return aw.rc;
}

/* ------------------------------------------------------------ invalidation */

static void test_invalidation(void)
{
    const char *dir = t_tmpdir("proj_inline_cache");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    create(db, "wal", Q1);
    const char *s = "Wal-1";
    for (long v = 1; v <= 3; v++)
        CHECK_OK(add(db, s, STELE_ANY, "Add", v));
    check_state(db, s, 1, "three appends");
    /* a type no handler takes: the state is carried to the new head */
    CHECK_OK(add(db, s, STELE_ANY, "Note", 0));
    check_state(db, s, 1, "an unhandled type");
    /* a conflict writes nothing, and caches nothing: a write the
     * projection does not see then moves the head by one, as the refused
     * append would have */
    uint64_t h = head_of(db, s);
    CHECK_RC(add(db, s, (int64_t)h - 1, "Add", 100), STELE_EWRONGREV);
    bypass(db, s, 5);
    CHECK_OK(add(db, s, STELE_ANY, "Add", 7));
    check_state(db, s, 1, "after a conflict");
    /* a throwing handler: nothing written, the runtime is not trusted */
    CHECK_RC(add(db, s, STELE_ANY, "Add", -1), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "negative value") != NULL);
    bypass(db, s, 4);
    CHECK_OK(add(db, s, STELE_ANY, "Add", 6));
    check_state(db, s, 1, "after a throw");
    /* an idempotent retry writes nothing new: its fold (the events folded
     * twice) must not become the cached state */
    {
        stele_event_in ev = {.type = "Add", .data = "{\"v\":9}", .data_len = 7,
                             .flags = STELE_EVENT_JSON};
        uint8_t id[16];
        for (int k = 0; k < 16; k++)
            id[k] = (uint8_t)(0xa0 + k);
        id[6] = 0x4a; /* a version-4 UUID */
        ev.id = id;
        stele_append_result r1, r2;
        CHECK_OK(stele_append(db, s, STELE_ANY, &ev, 1, &r1));
        /* from a cold cache, so that the retry's fold could be put */
        stele_close(db);
        CHECK_OK(stele_open(dir, NULL, &db));
        CHECK_OK(stele_append(db, s, STELE_ANY, &ev, 1, &r2));
        CHECK(r2.idempotent && r2.last_revision == r1.last_revision);
        check_state(db, s, 1, "after an idempotent retry");
        CHECK_OK(add(db, s, STELE_ANY, "Add", 1));
        check_state(db, s, 1, "an append after an idempotent retry");
    }
    /* a soft delete: the recreated stream starts from $init */
    uint64_t cur;
    CHECK_OK(stele_delete_stream(db, s, STELE_ANY, &cur));
    CHECK_OK(add(db, s, STELE_ANY, "Add", 2));
    check_state(db, s, 1, "recreated after a delete");
    CHECK_OK(add(db, s, STELE_ANY, "Add", 3));
    check_state(db, s, 1, "recreated, second append");
    /* a restart, with a write the projection did not see in between */
    stele_close(db);
    CHECK_OK(stele_open(dir, NULL, &db));
    bypass(db, s, 8);
    CHECK_OK(add(db, s, STELE_ANY, "Add", 1));
    check_state(db, s, 1, "after a restart");
    CHECK_OK(add_async(db, s, 3));
    check_state(db, s, 1, "async");
    /* a changed query: the old states are not the new query's (and the
     * old projection's worker thread ends) */
    CHECK_OK(stele_projection_update(db, "wal", Q2, strlen(Q2), -1));
    CHECK_OK(add(db, s, STELE_ANY, "Add", 1));
    check_state(db, s, 2, "after an update");
    CHECK_OK(add_async(db, s, 4));
    check_state(db, s, 2, "async, after an update");
    /* disabled: appends go through without it; enabled again, it folds
     * them in */
    CHECK_OK(stele_projection_disable(db, "wal"));
    CHECK_OK(add(db, s, STELE_ANY, "Add", 11));
    CHECK_OK(stele_projection_enable(db, "wal"));
    CHECK_OK(add(db, s, STELE_ANY, "Add", 1));
    check_state(db, s, 2, "after disable, enable");
    CHECK_OK(add_async(db, s, 5));
    check_state(db, s, 2, "async, after disable, enable");
    /* deleted and created again with the first query (the same snapshot
     * tag as the first states: the newest one with it is older than the
     * head, the events after it are folded) */
    CHECK_OK(stele_projection_delete(db, "wal", 0));
    CHECK_OK(add(db, s, STELE_ANY, "Add", 12));
    create(db, "wal", Q1);
    CHECK_OK(add(db, s, STELE_ANY, "Add", 1));
    check_state(db, s, 1, "re-created projection");
    CHECK_OK(add(db, s, STELE_ANY, "Note", 0));
    CHECK_OK(add(db, s, STELE_ANY, "Add", 2));
    check_state(db, s, 1, "re-created projection, more appends");
    stele_close(db);
    t_rmdir(dir);
    passed++;
}

/* ------------------------------------------------------------ racing */

struct writer {
    stele_db *db;
    int id;
    int refused;
};

static void *writer(void *arg)
{
    struct writer *w = arg;
    for (int i = 0; i < 60; i++) {
        char s[32], d[64];
        snprintf(s, sizeof s, "Wal-r%d", (w->id + i) % 3);
        int bad = i % 17 == 16;
        long v = bad ? -1 : (w->id * 100 + i) % 97;
        snprintf(d, sizeof d, "{\"v\":%ld}", v);
        stele_event_in ev[2] = {
            {.type = i % 5 == 4 ? "Note" : "Add", .data = d, .data_len = strlen(d),
             .flags = STELE_EVENT_JSON},
            {.type = "Add", .data = "{\"v\":1}", .data_len = 7, .flags = STELE_EVENT_JSON}};
        size_t n = 1 + (size_t)(i % 2);
        int rc;
        if (i % 7 == 3) {
            /* an exact expected revision: may lose the race (a conflict) */
            stele_stream_info info;
            int64_t exp = stele_stream_head(w->db, s, &info) == 0 && !info.deleted
                              ? (int64_t)info.last_revision
                              : STELE_NO_STREAM;
            rc = stele_append(w->db, s, exp, ev, n, NULL);
            CHECK(rc == 0 || rc == STELE_EWRONGREV || (bad && rc == STELE_EINVAL));
        } else if (i % 3 == 1) {
            struct async_wait aw = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
            CHECK_OK(stele_append_async(w->db, s, STELE_ANY, ev, n, async_cb, &aw));
            pthread_mutex_lock(&aw.mu);
            while (!aw.done)
                pthread_cond_wait(&aw.cv, &aw.mu);
            pthread_mutex_unlock(&aw.mu);
            rc = aw.rc;
            CHECK(bad ? rc == STELE_EINVAL || ev[0].type[0] == 'N' : rc == 0);
        } else {
            rc = stele_append(w->db, s, STELE_ANY, ev, n, NULL);
            CHECK(bad && ev[0].type[0] == 'A' ? rc == STELE_EINVAL : rc == 0);
        }
        w->refused += rc == STELE_EINVAL;
    }
    return NULL;
}

static void test_racing(void)
{
    const char *dir = t_tmpdir("proj_inline_race");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    create(db, "wal", Q1);
    pthread_t th[8];
    struct writer w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (struct writer){.db = db, .id = i};
        pthread_create(&th[i], NULL, writer, &w[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    int refused = 0;
    for (int i = 0; i < 8; i++)
        refused += w[i].refused;
    CHECK(refused > 0);
    for (int k = 0; k < 3; k++) {
        char s[32];
        snprintf(s, sizeof s, "Wal-r%d", k);
        check_state(db, s, 1, "8 racing writers");
    }
    /* and again from a cold cache */
    stele_close(db);
    CHECK_OK(stele_open(dir, NULL, &db));
    for (int k = 0; k < 3; k++) {
        char s[32];
        snprintf(s, sizeof s, "Wal-r%d", k);
        CHECK_OK(add(db, s, STELE_ANY, "Add", 1));
        check_state(db, s, 1, "after a restart");
    }
    stele_close(db);
    t_rmdir(dir);
    passed++;
}

/* ------------------------------------------------------------ $deleted */

/* As KurrentDB: a $deleted handler needs foreachStream(). partitionBy()
 * and no partitions are refused at create, update and for transient
 * queries, with the reason; inline projections never call it and refuse
 * it too. */
static void test_deleted_definitions(void)
{
    const char *dir = t_tmpdir("proj_inline_deleted");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    static const char by_part[] =
        "fromCategory('Cart').partitionBy(function(e){ return e.body.c; }).when({\n"
        "  $any: function(s, e){ s.n = (s.n || 0) + 1; },\n"
        "  $deleted: function(s, e){ return null; }});";
    static const char whole[] =
        "fromAll().when({$any: function(s, e){ s.n = (s.n || 0) + 1; },\n"
        "  $deleted: function(s, e){ s.gone = true; }});";
    static const char per_stream[] =
        "fromCategory('Cart').foreachStream().when({$any: function(s, e){ s.n = (s.n || 0) + 1; },\n"
        "  $deleted: function(s, e){ return null; }});";
    const char *bad[] = {by_part, whole};
    for (int i = 0; i < 2; i++) {
        stele_projection_settings st = {.query = bad[i], .query_len = strlen(bad[i]),
                                        .enabled = 1};
        CHECK_RC(stele_projection_create(db, "d", &st), STELE_EINVAL);
        CHECK(strstr(stele_errmsg(), "$deleted") && strstr(stele_errmsg(), "foreachStream()"));
        st.mode = STELE_PROJ_ONE_TIME;
        CHECK_RC(stele_projection_create(db, "d", &st), STELE_EINVAL);
        char *out = NULL;
        CHECK_RC(stele_projection_query(db, bad[i], strlen(bad[i]), NULL, &out, NULL), STELE_EINVAL);
        CHECK(strstr(stele_errmsg(), "foreachStream()") != NULL);
        stele_free(out);
    }
    stele_projection_info *in = NULL;
    CHECK_RC(stele_projection_get(db, "d", &in), STELE_ENOTFOUND);
    /* foreachStream() is accepted; an update to a refused query keeps it */
    stele_projection_settings ok = {.query = per_stream, .query_len = strlen(per_stream),
                                    .enabled = 1};
    CHECK_OK(stele_projection_create(db, "d", &ok));
    CHECK_RC(stele_projection_update(db, "d", by_part, strlen(by_part), -1), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "foreachStream()") != NULL);
    CHECK_OK(stele_projection_get(db, "d", &in));
    CHECK(in->query && !strcmp(in->query, per_stream));
    stele_projection_info_free(in);
    /* inline: never called, so refused */
    static const char inl[] =
        "fromCategory('Wal').foreachStream().when({Add: function(s, e){ s.n = 1; },\n"
        "  $deleted: function(s, e){ return null; }});";
    stele_projection_settings is = {.query = inl, .query_len = strlen(inl), .enabled = 1,
                                    .mode = STELE_PROJ_INLINE};
    CHECK_RC(stele_projection_create(db, "i", &is), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "$deleted") != NULL);
    CHECK_RC(stele_projection_get(db, "i", &in), STELE_ENOTFOUND);
    stele_close(db);
    t_rmdir(dir);
    passed++;
}

int main(void)
{
    test_invalidation();
    test_racing();
    test_deleted_definitions();
    printf("test_proj_inline: %d passed, %d failures\n", passed, (int)t_failures);
    return t_failures ? 1 : 0;
}
