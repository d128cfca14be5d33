/*
 * test_async.c - stele_append_async: bad arguments fail at once without a
 * callback; every queued append calls back exactly once, in queue order per
 * stream, after it is readable; the caller's buffers may be reused at once;
 * wrong expected revisions come back through the callback with the current
 * revision; close waits for queued appends. A contract test too: on
 * PostgreSQL (test_async_pg) the appends are committed by several writer
 * connections with batches in flight at once, and queue order per stream,
 * the expected revisions that depend on it, and one $all in commit order
 * holding every acknowledged event are what this checks there.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define N 2000

typedef struct slot {
    _Atomic int calls;
    int rc;
    stele_append_result res;
    char msg[256];
} slot;

static slot slots[N];
static _Atomic int completed;

static void on_done(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    slot *s = ctx;
    s->rc = rc;
    s->res = *res;
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    atomic_fetch_add(&s->calls, 1);
    atomic_fetch_add(&completed, 1);
}

static void wait_for(int n)
{
    for (int i = 0; i < 20000 && atomic_load(&completed) < n; i++)
        usleep(1000);
}

int main(void)
{
    t_seed();
    const char *dir = t_store("async");
    stele_options o = {.segment_size = 64 << 10};
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    int passed = 0;

    /* Bad arguments: an error now, never a callback. */
    stele_event_in bad = {.type = ""};
    CHECK_RC(stele_append_async(db, "a-1", STELE_ANY, &bad, 1, on_done, &slots[0]), STELE_EINVAL);
    CHECK_RC(stele_append_async(db, "$sys", STELE_ANY, &bad, 1, on_done, &slots[0]), STELE_EINVAL);
    CHECK_RC(stele_append_async(db, "a-1", STELE_ANY, NULL, 0, on_done, &slots[0]), STELE_EINVAL);
    CHECK_RC(stele_append_async(db, "a-1", STELE_ANY, &bad, 1, NULL, NULL), STELE_EINVAL);
    usleep(10000);
    CHECK(atomic_load(&slots[0].calls) == 0);
    passed++;

    /* N appends queued from this thread with exact expected revisions; the
     * buffers are overwritten right after each call. */
    for (int i = 0; i < N; i++) {
        char data[64], stream[32], type[32];
        snprintf(data, sizeof data, "{\"i\":%d}", i);
        snprintf(stream, sizeof stream, "s-%d", i % 10);
        snprintf(type, sizeof type, "T%d", i % 7);
        const char *tags[] = {"tag-a", "tag-b"};
        stele_event_in ev = {.type = type, .data = data, .data_len = strlen(data),
                             .tags = tags, .ntags = 2, .flags = STELE_EVENT_JSON};
        int64_t expected = i < 10 ? STELE_NO_STREAM : (int64_t)(i / 10 - 1);
        CHECK_OK(stele_append_async(db, stream, expected, &ev, 1, on_done, &slots[i]));
        memset(data, 'X', sizeof data);
        memset(stream, 'Y', sizeof stream - 1);
        memset(type, 'Z', sizeof type - 1);
    }
    wait_for(N);
    CHECK(atomic_load(&completed) == N);
    for (int i = 0; i < N; i++) {
        CHECK(atomic_load(&slots[i].calls) == 1);
        CHECK_RC(slots[i].rc, 0);
        CHECK(slots[i].res.first_revision == (uint64_t)(i / 10));
    }
    passed++;

    /* Every event readable with the bytes given at call time. */
    for (int s = 0; s < 10; s++) {
        char stream[32];
        snprintf(stream, sizeof stream, "s-%d", s);
        stele_page *pg;
        CHECK_OK(stele_read_stream(db, stream, 0, STELE_FORWARDS, N, &pg));
        CHECK(stele_page_count(pg) == N / 10);
        for (size_t k = 0; k < stele_page_count(pg); k++) {
            const stele_event *e = stele_page_event(pg, k);
            int i = (int)k * 10 + s;
            char want[64], type[32];
            snprintf(want, sizeof want, "{\"i\":%d}", i);
            snprintf(type, sizeof type, "T%d", i % 7);
            CHECK(e->data_len == strlen(want) && !memcmp(e->data, want, e->data_len));
            CHECK(!strcmp(e->type, type));
            CHECK(e->ntags == 2 && !strcmp(e->tags[0], "tag-a") && !strcmp(e->tags[1], "tag-b"));
            CHECK(e->position == slots[i].res.first_position);
            /* Revision order is position order in a stream. */
            CHECK(k == 0 || e->position > stele_page_event(pg, k - 1)->position);
        }
        stele_page_free(pg);
    }
    passed++;

    /* $all: every acknowledged event once, in position order, each where
     * its acknowledgment put it. */
    {
        stele_page *pg;
        CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 2 * N, &pg));
        CHECK(stele_page_count(pg) == N);
        static unsigned char seen[N];
        memset(seen, 0, sizeof seen);
        for (size_t k = 0; k < stele_page_count(pg); k++) {
            const stele_event *e = stele_page_event(pg, k);
            CHECK(k == 0 || e->position > stele_page_event(pg, k - 1)->position);
            int i = -1;
            char txt[64];
            snprintf(txt, sizeof txt, "%.*s", (int)(e->data_len < 63 ? e->data_len : 63),
                     (const char *)e->data);
            CHECK(sscanf(txt, "{\"i\":%d}", &i) == 1 && i >= 0 && i < N);
            CHECK(!seen[i]);
            seen[i] = 1;
            CHECK(e->position == slots[i].res.first_position);
            CHECK(e->revision == (uint64_t)(i / 10));
        }
        stele_page_free(pg);
    }
    passed++;

    /* A conflict comes back through the callback. */
    atomic_store(&completed, 0);
    memset(&slots[0], 0, sizeof slots[0]);
    stele_event_in ev = {.type = "T"};
    CHECK_OK(stele_append_async(db, "s-0", STELE_NO_STREAM, &ev, 1, on_done, &slots[0]));
    wait_for(1);
    CHECK_RC(slots[0].rc, STELE_EWRONGREV);
    CHECK(slots[0].res.current_revision == N / 10 - 1);
    CHECK(strstr(slots[0].msg, "s-0") != NULL);
    passed++;

    /* Close waits for what is queued: all of it completes, then reopen sees it. */
    atomic_store(&completed, 0);
    for (int i = 0; i < 500; i++) {
        memset(&slots[i], 0, sizeof slots[i]);
        CHECK_OK(stele_append_async(db, "late-1", STELE_ANY, &ev, 1, on_done, &slots[i]));
    }
    stele_close(db);
    CHECK(atomic_load(&completed) == 500);
    CHECK_OK(stele_open(dir, &o, &db));
    stele_stream_info info;
    CHECK_OK(stele_stream_head(db, "late-1", &info));
    CHECK(info.last_revision == 499);
    stele_close(db);
    passed++;

    t_store_drop(dir);
    return t_done("test_async", passed);
}
