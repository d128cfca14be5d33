/*
 * test_conventions.c - the seeds' conventions in the library (issue 19
 * item 5; the HTTP side is tests/http/test_http_conventions.py):
 *   - ULIDs: format/parse round trips against known values, bad texts
 *     refused, stele_id_parse/stele_id_format by form, the flag stored with
 *     the event and returned by reads, also after reopening;
 *   - stele_append_result.ids: every event's id, given or made, after
 *     stele_append and in the stele_append_async callback;
 *   - a retry of written ids with other data is STELE_EIDCONFLICT, an
 *     identical retry idempotent;
 *   - the seeds' metadata names indexed: correlation_id, causation_id,
 *     user_id and causationId, with STELE_QUERY_CAUSATION;
 *   - stele_read_stream_between against a model of the events' times.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele.h"
#include "testutil.h"

static void ulid_text(void)
{
    /* The spec's example layout: all-zero and all-one values, and a value
     * whose digits are known. */
    uint8_t id[16], back[16];
    char t[37];
    memset(id, 0xff, 16);
    stele_ulid_format(id, t);
    CHECK(!strcmp(t, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
    CHECK_OK(stele_ulid_parse("7zzzzzzzzzzzzzzzzzzzzzzzzz", back));
    CHECK(!memcmp(id, back, 16));
    memset(id, 0, 16);
    id[15] = 1;
    stele_ulid_format(id, t);
    CHECK(!strcmp(t, "00000000000000000000000001"));
    /* 01ARZ3NDEKTSV4RRFFQ69G5FAV (the ULID spec's example) has the
     * timestamp 1469922850259 ms: its first 48 bits. */
    CHECK_OK(stele_ulid_parse("01ARZ3NDEKTSV4RRFFQ69G5FAV", id));
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | id[i];
    CHECK(ms == 1469922850259ull);
    stele_ulid_format(id, t);
    CHECK(!strcmp(t, "01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    /* Random round trips, both forms. */
    for (int k = 0; k < 1000; k++) {
        for (int i = 0; i < 16; i++)
            id[i] = (uint8_t)t_rand();
        uint32_t fl = 0;
        stele_id_format(id, STELE_EVENT_ID_ULID, t);
        CHECK(strlen(t) == 26);
        CHECK_OK(stele_id_parse(t, back, &fl));
        CHECK(!memcmp(id, back, 16) && fl == STELE_EVENT_ID_ULID);
        fl = 0;
        stele_id_format(id, 0, t);
        CHECK(strlen(t) == 36);
        CHECK_OK(stele_id_parse(t, back, &fl));
        CHECK(!memcmp(id, back, 16) && fl == 0);
    }
    /* Refused: too long, too short, above 128 bits, letters outside the
     * alphabet, other lengths. The output is untouched. */
    const char *bad[] = {"01ARZ3NDEKTSV4RRFFQ69G5FAVX", "01ARZ3NDEKTSV4RRFFQ69G5FA",
                         "81ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAI",
                         "01ARZ3NDEKTSV4RRFFQ69G5FAL", "01ARZ3NDEKTSV4RRFFQ69G5FAO",
                         "01ARZ3NDEKTSV4RRFFQ69G5FAU", "01ARZ3NDEKTSV4RRFFQ69G5FA-", ""};
    memset(back, 0xaa, 16);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(stele_ulid_parse(bad[i], back), STELE_EINVAL);
        CHECK_RC(stele_id_parse(bad[i], back, NULL), STELE_EINVAL);
    }
    for (int i = 0; i < 16; i++)
        CHECK(back[i] == 0xaa);
}

static int count_page(stele_page *pg) { return pg ? (int)stele_page_count(pg) : -1; }

static void ulid_stored(void)
{
    const char *dir = t_tmpdir("conv-ulid");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    uint8_t a[16], b[16];
    CHECK_OK(stele_ulid_parse("01HGW2N7EHJVWX1VD8W4Z0Q9QK", a));
    CHECK_OK(stele_uuid_parse("6f5c63b6-438e-48f3-8613-c0c69402232e", b));
    stele_event_in ev[3] = {
        {.id = a, .type = "A", .flags = STELE_EVENT_ID_ULID},
        {.id = b, .type = "B"},
        {.type = "C", .flags = STELE_EVENT_ID_ULID}, /* made by the store */
    };
    stele_append_result res;
    CHECK_OK(stele_append(db, "U-1", STELE_NO_STREAM, ev, 3, &res));
    CHECK(res.ids != NULL);
    uint8_t made[16];
    if (res.ids) {
        CHECK(!memcmp(res.ids[0], a, 16) && !memcmp(res.ids[1], b, 16));
        memcpy(made, res.ids[2], 16);
    }
    for (int round = 0; round < 2; round++) {
        stele_page *pg = NULL;
        CHECK_OK(stele_read_stream(db, "U-1", 0, STELE_FORWARDS, 10, &pg));
        CHECK(count_page(pg) == 3);
        if (count_page(pg) == 3) {
            char t[37];
            const stele_event *e0 = stele_page_event(pg, 0), *e1 = stele_page_event(pg, 1),
                              *e2 = stele_page_event(pg, 2);
            stele_id_format(e0->id, e0->flags, t);
            CHECK(!strcmp(t, "01HGW2N7EHJVWX1VD8W4Z0Q9QK"));
            stele_id_format(e1->id, e1->flags, t);
            CHECK(!strcmp(t, "6f5c63b6-438e-48f3-8613-c0c69402232e"));
            CHECK(e2->flags & STELE_EVENT_ID_ULID);
            CHECK(!memcmp(e2->id, made, 16));
        }
        stele_page_free(pg);
        stele_close(db);
        CHECK_OK(stele_open(dir, NULL, &db));
    }
    /* The same bits given as a UUID: the same id (an identical retry). */
    uint8_t c[16];
    CHECK_OK(stele_ulid_parse("01HGW2N7EHJVWX1VD8W4Z0Q9QM", c));
    stele_event_in as_ulid = {.id = c, .type = "A", .flags = STELE_EVENT_ID_ULID};
    stele_event_in as_uuid = {.id = c, .type = "A"};
    CHECK_OK(stele_append(db, "U-2", STELE_ANY, &as_ulid, 1, &res));
    CHECK_OK(stele_append(db, "U-2", STELE_ANY, &as_uuid, 1, &res)); /* idempotent */
    CHECK(res.idempotent == 1);
    stele_event_in unknown = {.type = "X", .flags = 0x100};
    CHECK_RC(stele_append(db, "U-3", STELE_ANY, &unknown, 1, &res), STELE_EINVAL);
    stele_close(db);
    CHECK_OK(stele_check(dir, NULL, 0)); /* the flag is part of the format */
    t_rmdir(dir);
}

/* stele_append_async: the ids are in the callback's result. */
typedef struct async_box {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, rc, have_ids;
    uint8_t ids[4][16];
} async_box;

static void async_cb(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    (void)msg;
    async_box *b = ctx;
    pthread_mutex_lock(&b->mu);
    b->rc = rc;
    b->have_ids = res->ids != NULL;
    if (res->ids)
        memcpy(b->ids, res->ids, 4 * 16);
    b->done = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void result_ids(void)
{
    const char *dir = t_tmpdir("conv-ids");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    uint8_t given[16];
    CHECK_OK(stele_uuid_parse("0d3b8a94-3a4c-4d8e-9c1e-0a1b2c3d4e5f", given));
    stele_event_in ev[4] = {{.type = "A"}, {.id = given, .type = "B"}, {.type = "C"},
                            {.type = "D"}};
    async_box box = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    CHECK_OK(stele_append_async(db, "Ids-1", STELE_NO_STREAM, ev, 4, async_cb, &box));
    pthread_mutex_lock(&box.mu);
    while (!box.done)
        pthread_cond_wait(&box.cv, &box.mu);
    pthread_mutex_unlock(&box.mu);
    CHECK(box.rc == 0 && box.have_ids);
    CHECK(!memcmp(box.ids[1], given, 16));
    stele_page *pg = NULL;
    CHECK_OK(stele_read_stream(db, "Ids-1", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count_page(pg) == 4);
    for (size_t i = 0; i < 4 && count_page(pg) == 4; i++)
        CHECK(!memcmp(stele_page_event(pg, i)->id, box.ids[i], 16));
    stele_page_free(pg);
    /* Sync: ids of the last append of this thread; NULL after a failure. */
    stele_append_result res;
    uint8_t given2[16];
    memcpy(given2, given, 16);
    given2[15] ^= 1;
    ev[1].id = given2;
    CHECK_OK(stele_append(db, "Ids-2", STELE_ANY, ev, 4, &res));
    CHECK(res.ids && !memcmp(res.ids[1], given2, 16));
    stele_event_in fresh[2] = {{.type = "A"}, {.type = "B"}};
    CHECK_OK(stele_append(db, "Ids-3", STELE_ANY, fresh, 2, &res));
    CHECK(res.ids != NULL && memcmp(res.ids[0], res.ids[1], 16) != 0);
    CHECK_RC(stele_append(db, "Ids-3", STELE_NO_STREAM, fresh, 2, &res), STELE_EWRONGREV);
    CHECK(res.ids == NULL);
    stele_close(db);
    t_rmdir(dir);
}

static void retry_conflict(void)
{
    const char *dir = t_tmpdir("conv-retry");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    uint8_t a[16], b[16];
    for (int i = 0; i < 16; i++)
        a[i] = (uint8_t)(i + 1), b[i] = (uint8_t)(i + 100);
    const char *tags[] = {"t"}, *tags2[] = {"u"};
    stele_event_in ev[2] = {
        {.id = a, .type = "A", .data = "{\"x\":1}", .data_len = 7, .flags = STELE_EVENT_JSON,
         .tags = tags, .ntags = 1},
        {.id = b, .type = "B", .metadata = "m", .metadata_len = 1},
    };
    stele_append_result res;
    CHECK_OK(stele_append(db, "R-1", STELE_NO_STREAM, ev, 2, &res));
    for (int reopen = 0; reopen < 2; reopen++) {
        CHECK_OK(stele_append(db, "R-1", STELE_NO_STREAM, ev, 2, &res));
        CHECK(res.idempotent == 1 && res.first_revision == 0);
        stele_event_in x[2];
        memcpy(x, ev, sizeof x);
        x[0].data = "{\"x\":2}";
        CHECK_RC(stele_append(db, "R-1", STELE_NO_STREAM, x, 2, &res), STELE_EIDCONFLICT);
        CHECK(strstr(stele_errmsg(), "different data") != NULL);
        memcpy(x, ev, sizeof x);
        x[1].metadata = "n";
        CHECK_RC(stele_append(db, "R-1", STELE_ANY, x, 2, &res), STELE_EIDCONFLICT);
        CHECK(strstr(stele_errmsg(), "different metadata") != NULL);
        memcpy(x, ev, sizeof x);
        x[0].tags = tags2;
        CHECK_RC(stele_append(db, "R-1", 0 - 1, x, 2, &res), STELE_EIDCONFLICT);
        CHECK(strstr(stele_errmsg(), "different tags") != NULL);
        memcpy(x, ev, sizeof x);
        x[0].flags = 0;
        CHECK_RC(stele_append(db, "R-1", STELE_ANY, x, 2, &res), STELE_EIDCONFLICT);
        CHECK(strstr(stele_errmsg(), "different content type") != NULL);
        memcpy(x, ev, sizeof x);
        x[1].type = "C";
        CHECK_RC(stele_append(db, "R-1", STELE_ANY, x, 2, &res), STELE_EIDCONFLICT);
        CHECK(strstr(stele_errmsg(), "different type") != NULL);
        stele_close(db);
        CHECK_OK(stele_open(dir, NULL, &db));
    }
    stele_stream_info info;
    CHECK_OK(stele_stream_head(db, "R-1", &info));
    CHECK(info.last_revision == 1);
    stele_close(db);
    t_rmdir(dir);
}

static size_t query_count(stele_db *db, int kind, const char *key)
{
    stele_query q = {.kind = kind, .key = key, .limit = 100};
    stele_page *pg = NULL;
    int rc = stele_read_query(db, &q, &pg);
    if (rc == STELE_ENOTFOUND)
        return 0;
    CHECK_OK(rc);
    size_t n = pg ? stele_page_count(pg) : 0;
    stele_page_free(pg);
    return n;
}

static void metadata_names(void)
{
    const char *dir = t_tmpdir("conv-meta");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    const char *metas[] = {
        "{\"correlation_id\":\"c1\",\"causation_id\":\"k1\",\"user_id\":\"u1\"}",
        "{\"correlationId\":\"c1\",\"causationId\":\"k1\",\"userId\":\"u1\"}",
        "{\"$correlationId\":\"c1\",\"$causationId\":\"k2\",\"$actor\":\"u2\"}",
        /* precedence: the $-names, then camelCase, then snake_case */
        "{\"causation_id\":\"k9\",\"causationId\":\"k1\",\"user_id\":\"u9\",\"actorId\":\"u1\"}",
        "{\"causation_id\":5,\"correlation_id\":\"\"}", /* not usable: nothing */
    };
    for (int i = 0; i < 5; i++) {
        stele_event_in e = {.type = "M", .metadata = metas[i], .metadata_len = strlen(metas[i]),
                            .flags = STELE_META_JSON};
        CHECK_OK(stele_append(db, "Meta-1", STELE_ANY, &e, 1, NULL));
    }
    for (int reopen = 0; reopen < 2; reopen++) {
        CHECK(query_count(db, STELE_QUERY_CORRELATION, "c1") == 3);
        CHECK(query_count(db, STELE_QUERY_CAUSATION, "k1") == 3);
        CHECK(query_count(db, STELE_QUERY_CAUSATION, "k2") == 1);
        CHECK(query_count(db, STELE_QUERY_CAUSATION, "k9") == 0);
        CHECK(query_count(db, STELE_QUERY_ACTOR, "u1") == 3);
        CHECK(query_count(db, STELE_QUERY_ACTOR, "u9") == 0);
        stele_close(db);
        CHECK_OK(stele_open(dir, NULL, &db));
    }
    char report[256];
    stele_close(db);
    CHECK_OK(stele_check(dir, report, sizeof report));
    t_rmdir(dir);
}

static void time_bounds(void)
{
    const char *dir = t_tmpdir("conv-time");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    /* Batches of random sizes with pauses, beside another stream; then
     * random [after, before) windows against the events' own times. */
    int n = 0;
    for (int b = 0; b < 12; b++) {
        int k = 1 + (int)t_rand_below(5);
        stele_event_in ev[5];
        for (int i = 0; i < k; i++)
            ev[i] = (stele_event_in){.type = "T"};
        CHECK_OK(stele_append(db, "Time-1", STELE_ANY, ev, (size_t)k, NULL));
        CHECK_OK(stele_append(db, "Time-2", STELE_ANY, ev, 1, NULL));
        n += k;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    int64_t created[64];
    stele_page *pg = NULL;
    CHECK_OK(stele_read_stream(db, "Time-1", 0, STELE_FORWARDS, 100, &pg));
    CHECK(count_page(pg) == n);
    for (int i = 0; i < n && count_page(pg) == n; i++)
        created[i] = stele_page_event(pg, (size_t)i)->created_us;
    stele_page_free(pg);
    int rounds = getenv("TEST_QUICK") ? 40 : 300;
    for (int round = 0; round < rounds; round++) {
        int64_t lo = created[t_rand_below((uint64_t)n)] + (int64_t)t_rand_below(3) - 1;
        int64_t hi = created[t_rand_below((uint64_t)n)] + (int64_t)t_rand_below(3) - 1;
        if (round % 7 == 0)
            lo = INT64_MIN;
        if (round % 11 == 0)
            hi = INT64_MAX;
        if (lo > hi) {
            CHECK_RC(stele_read_stream_between(db, "Time-1", lo, hi, 0, STELE_FORWARDS, 10, &pg),
                     STELE_EINVAL);
            continue;
        }
        int backwards = (int)t_rand_below(2);
        size_t limit = 1 + t_rand_below(6);
        /* The model: revisions with lo <= created < hi, in read order. */
        int want[64], nw = 0;
        for (int i = 0; i < n; i++) {
            int r = backwards ? n - 1 - i : i;
            if (created[r] >= lo && created[r] < hi)
                want[nw++] = r;
        }
        int got[64], ng = 0;
        uint64_t from = backwards ? STELE_END : 0;
        for (int pages = 0; pages < 100; pages++) {
            pg = NULL;
            CHECK_OK(stele_read_stream_between(db, "Time-1", lo, hi, from,
                                               backwards ? STELE_BACKWARDS : STELE_FORWARDS,
                                               limit, &pg));
            for (size_t i = 0; pg && i < stele_page_count(pg) && ng < 64; i++)
                got[ng++] = (int)stele_page_event(pg, i)->revision;
            int more = pg && stele_page_next(pg, &from);
            stele_page_free(pg);
            if (!more)
                break;
        }
        CHECK(ng == nw);
        for (int i = 0; i < ng && ng == nw; i++)
            CHECK(got[i] == want[i]);
        if (ng != nw || (nw && memcmp(got, want, (size_t)nw * sizeof(int)))) {
            fprintf(stderr, "window [%lld, %lld) %s limit %zu: got %d events, want %d\n",
                    (long long)lo, (long long)hi, backwards ? "backwards" : "forwards", limit,
                    ng, nw);
            break;
        }
    }
    CHECK_RC(stele_read_stream_between(db, "Time-none", 0, INT64_MAX, 0, STELE_FORWARDS, 10, &pg),
             STELE_ENOTFOUND);
    stele_close(db);
    t_rmdir(dir);
}

int main(void)
{
    t_seed();
    int passed = 0;
#define STEP(fn)                                                                         \
    do {                                                                                 \
        int before_ = t_failures;                                                        \
        fn();                                                                            \
        if (t_failures == before_)                                                       \
            passed++;                                                                    \
        printf("%s: %s\n", #fn, t_failures == before_ ? "ok" : "FAILED");               \
        fflush(stdout);                                                                  \
    } while (0)
    STEP(ulid_text);
    STEP(ulid_stored);
    STEP(result_ids);
    STEP(retry_conflict);
    STEP(metadata_names);
    STEP(time_bounds);
    return t_done("test_conventions", passed);
}
