/*
 * test_wake.c - waking the appenders (src/backend/local_wake.c): every
 * waiting appender of a finished group is released exactly once, with its
 * own result, whatever the group's size and whether it was asleep yet.
 *
 * 1. The wake-up alone: groups of 1..100 requests woken in bulk and by
 *    relay (with one and with four sleepers woken by the writer),
 *    asynchronous requests mixed in, each waiter a thread with its
 *    request on its own stack; half of them start waiting before the group
 *    is released and half after (so both the sleeping and the
 *    not-yet-sleeping paths run).
 *    Each waiter must come back with exactly the result the "writer" set
 *    for it; each callback must run once. A lost wake-up hangs the test
 *    (CTest's timeout fails it: no clock in here).
 * 2. The engine: 48 threads append one event at a time to their own
 *    streams with exact expected revisions (every ninth deliberately wrong,
 *    which must fail with the stream's current revision), two threads
 *    append batches of three to one shared stream, and one thread queues
 *    asynchronous appends, all at once, so groups mix waiters, failures
 *    and callbacks. Every append's result must be its own: the event at
 *    its position in $all is the one it appended, and $all holds exactly
 *    the accepted events, gapless.
 */
#include "testutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/local_int.h"

/* ------------------------------------------------------------ 1. the wake-up */

#define MAXG 100

typedef struct waiter {
    wreq *r;                   /* its request (on the waiter's stack) */
    int idx;
    _Atomic int registered;
    _Atomic int returned;
    pthread_barrier_t *before; /* waiters that start before the release */
    int late;                  /* start waiting only after wake_group */
    _Atomic int *go_late;
    int bad;                   /* wrong result seen */
} waiter;

static local *fake; /* the store: only its wake fields are used */
static _Atomic int async_calls[MAXG];
static int async_bad;

static void async_cb(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    int i = (int)(intptr_t)ctx;
    atomic_fetch_add(&async_calls[i], 1);
    if (rc != (i % 3 == 0 ? STELE_EWRONGREV : 0) || res->first_position != 1000u + (unsigned)i ||
        (rc && strcmp(msg, "wrong") != 0))
        async_bad = 1;
}

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    wreq r;
    memset(&r, 0, sizeof r);
    r.op = OP_APPEND;
    w->r = &r;
    atomic_store(&w->registered, 1);
    if (w->late) {
        while (!atomic_load(w->go_late))
            sched_yield();
    } else {
        pthread_barrier_wait(w->before);
    }
    wake_wait(fake, &r);
    /* The writer set these before releasing the group. */
    int want_rc = w->idx % 3 == 0 ? STELE_EWRONGREV : 0;
    if (r.rc != want_rc || r.res.first_position != 1000u + (unsigned)w->idx ||
        atomic_load(&r.done) != 1 || (want_rc && strcmp(r.msg, "wrong") != 0))
        w->bad = 1;
    atomic_store(&w->returned, 1);
    return NULL; /* r is gone now: nothing may touch it */
}

static void wake_one_group(int n, int async_every)
{
    waiter ws[MAXG];
    pthread_t th[MAXG];
    wreq *reqs[MAXG] = {0};
    _Atomic int go_late = 0;
    int nearly = 0;
    memset(ws, 0, sizeof ws);
    for (int i = 0; i < n; i++)
        atomic_store(&async_calls[i], 0);
    /* Which are async, which waiters start early. */
    int is_async[MAXG];
    for (int i = 0; i < n; i++) {
        is_async[i] = async_every && i % async_every == async_every - 1;
        if (!is_async[i] && i % 2 == 0)
            nearly++;
    }
    pthread_barrier_t before;
    pthread_barrier_init(&before, NULL, (unsigned)nearly + 1);
    for (int i = 0; i < n; i++) {
        if (is_async[i]) {
            wreq *r = calloc(1, sizeof *r);
            CHECK(r != NULL);
            r->op = OP_APPEND;
            r->done_fn = async_cb;
            r->done_ctx = (void *)(intptr_t)i;
            reqs[i] = r;
            continue;
        }
        ws[i].idx = i;
        ws[i].before = &before;
        ws[i].late = i % 2 == 1;
        ws[i].go_late = &go_late;
        CHECK(pthread_create(&th[i], NULL, waiter_main, &ws[i]) == 0);
    }
    for (int i = 0; i < n; i++)
        if (!is_async[i]) {
            while (!atomic_load(&ws[i].registered))
                sched_yield();
            reqs[i] = ws[i].r;
        }
    /* The "writer": results first, then the group in queue order. */
    for (int i = 0; i < n; i++) {
        wreq *r = reqs[i];
        r->rc = i % 3 == 0 ? STELE_EWRONGREV : 0;
        if (r->rc)
            snprintf(r->msg, sizeof r->msg, "wrong");
        r->res.first_position = 1000u + (unsigned)i;
        r->next = i + 1 < n ? reqs[i + 1] : NULL;
    }
    pthread_barrier_wait(&before); /* the early ones are (about to be) asleep */
    wake_group(fake, reqs[0]);
    atomic_store(&go_late, 1);
    int bad = 0, released = 0;
    for (int i = 0; i < n; i++) {
        if (is_async[i]) {
            bad |= atomic_load(&async_calls[i]) != 1;
            continue;
        }
        pthread_join(th[i], NULL); /* hangs if a wake-up was lost */
        bad |= ws[i].bad;
        released += atomic_load(&ws[i].returned);
    }
    pthread_barrier_destroy(&before);
    CHECK(!bad && !async_bad);
    int nwait = n;
    for (int i = 0; i < n; i++)
        nwait -= is_async[i];
    CHECK(released == nwait);
}

/* ------------------------------------------------------------ 2. the engine */

#define T 48
#define PER 150 /* appends per thread (TEST_QUICK: 20, for valgrind) */
#define SHARED_T 2
#define SHARED_PER 100
#define ASYNC_N 400

static stele_db *db;
static int per = PER;

typedef struct rec_t {
    uint64_t pos;
    char data[48];
    int nev;
} rec_t;

static rec_t own[T][PER];
static rec_t shared_recs[SHARED_T][SHARED_PER];
static int thread_bad[T + SHARED_T];

static void *own_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    char stream[32];
    snprintf(stream, sizeof stream, "wake-%d", t);
    int64_t next = STELE_NO_STREAM; /* expected revision */
    uint64_t have = 0;               /* events in the stream */
    for (int k = 0; k < per; k++) {
        rec_t *rc_ = &own[t][k];
        snprintf(rc_->data, sizeof rc_->data, "{\"t\":%d,\"k\":%d}", t, k);
        stele_event_in e = {.type = "Woken", .data = rc_->data, .data_len = strlen(rc_->data)};
        stele_append_result res;
        memset(&res, 0xab, sizeof res);
        if (k % 9 == 4 && have) {
            /* Wrong on purpose: must fail with this stream's revision. */
            int rc = stele_append(db, stream, (int64_t)have + 3, &e, 1, &res);
            if (rc != STELE_EWRONGREV || res.current_revision != have - 1)
                thread_bad[t] = 1;
            rc_->nev = 0;
            continue;
        }
        int rc = stele_append(db, stream, next, &e, 1, &res);
        if (rc != 0 || res.first_revision != have || res.last_revision != have ||
            res.first_position != res.last_position || res.idempotent) {
            thread_bad[t] = 1;
            rc_->nev = 0;
            continue;
        }
        rc_->pos = res.first_position;
        rc_->nev = 1;
        next = (int64_t)have;
        have++;
    }
    return NULL;
}

static void *shared_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int k = 0; k < SHARED_PER; k++) {
        rec_t *rc_ = &shared_recs[t][k];
        snprintf(rc_->data, sizeof rc_->data, "{\"s\":%d,\"k\":%d}", t, k);
        stele_event_in e[3];
        for (int j = 0; j < 3; j++)
            e[j] = (stele_event_in){.type = "Shared", .data = rc_->data,
                                    .data_len = strlen(rc_->data)};
        stele_append_result res;
        int rc = stele_append(db, "wake-shared", STELE_ANY, e, 3, &res);
        if (rc != 0 || res.last_revision != res.first_revision + 2 ||
            res.last_position != res.first_position + 2)
            thread_bad[T + t] = 1;
        rc_->pos = res.first_position;
        rc_->nev = rc == 0 ? 3 : 0;
    }
    return NULL;
}

static pthread_mutex_t amu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t acv = PTHREAD_COND_INITIALIZER;
static int async_done_n, async_fail;
static uint64_t async_pos[ASYNC_N];

static void engine_async_cb(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    (void)msg;
    int i = (int)(intptr_t)ctx;
    pthread_mutex_lock(&amu);
    if (rc)
        async_fail++;
    else
        async_pos[i] = res->first_position;
    async_done_n++;
    pthread_cond_signal(&acv);
    pthread_mutex_unlock(&amu);
}

static void *async_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < ASYNC_N; i++) {
        char d[32];
        snprintf(d, sizeof d, "{\"a\":%d}", i);
        stele_event_in e = {.type = "Async", .data = d, .data_len = strlen(d)};
        if (stele_append_async(db, "wake-async", STELE_ANY, &e, 1, engine_async_cb,
                               (void *)(intptr_t)i) != 0) {
            pthread_mutex_lock(&amu);
            async_fail++;
            async_done_n++;
            pthread_mutex_unlock(&amu);
        }
    }
    return NULL;
}

/* The event at `pos` must carry `data`. */
static int event_is(uint64_t pos, const char *data)
{
    stele_page *p = NULL;
    if (stele_read_all(db, pos, STELE_FORWARDS, 1, &p) != 0)
        return 0;
    int ok = stele_page_count(p) == 1;
    if (ok) {
        const stele_event *e = stele_page_event(p, 0);
        ok = e->position == pos && e->data_len == strlen(data) &&
             memcmp(e->data, data, e->data_len) == 0;
    }
    stele_page_free(p);
    return ok;
}

static void engine(void)
{
    const char *dir = t_store("wake");
    stele_options o = {0};
    CHECK_OK(stele_open(dir, &o, &db));
    pthread_t th[T + SHARED_T + 1];
    for (int t = 0; t < T; t++)
        CHECK(pthread_create(&th[t], NULL, own_main, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < SHARED_T; t++)
        CHECK(pthread_create(&th[T + t], NULL, shared_main, (void *)(intptr_t)t) == 0);
    CHECK(pthread_create(&th[T + SHARED_T], NULL, async_main, NULL) == 0);
    for (int t = 0; t < T + SHARED_T + 1; t++)
        pthread_join(th[t], NULL);
    pthread_mutex_lock(&amu);
    while (async_done_n < ASYNC_N)
        pthread_cond_wait(&acv, &amu);
    pthread_mutex_unlock(&amu);
    for (int t = 0; t < T + SHARED_T; t++)
        CHECK(!thread_bad[t]);
    CHECK(async_fail == 0);

    /* Each result is the append's own: the event at its position. */
    uint64_t accepted = 0;
    int wrong = 0;
    for (int t = 0; t < T; t++)
        for (int k = 0; k < per; k++)
            if (own[t][k].nev) {
                accepted++;
                wrong += !event_is(own[t][k].pos, own[t][k].data);
            }
    for (int t = 0; t < SHARED_T; t++)
        for (int k = 0; k < SHARED_PER; k++)
            if (shared_recs[t][k].nev) {
                accepted += 3;
                for (int j = 0; j < 3; j++)
                    wrong += !event_is(shared_recs[t][k].pos + (uint64_t)j,
                                       shared_recs[t][k].data);
            }
    for (int i = 0; i < ASYNC_N; i++) {
        char d[32];
        snprintf(d, sizeof d, "{\"a\":%d}", i);
        accepted++;
        wrong += !event_is(async_pos[i], d);
    }
    CHECK(wrong == 0);
    /* $all is exactly the accepted events, gapless from 0. */
    uint64_t n = 0, from = 0;
    int gap = 0;
    for (;;) {
        stele_page *p = NULL;
        CHECK_OK(stele_read_all(db, from, STELE_FORWARDS, 1000, &p));
        size_t c = stele_page_count(p);
        for (size_t i = 0; i < c; i++)
            gap |= stele_page_event(p, i)->position != n++;
        uint64_t next = 0;
        int more = stele_page_next(p, &next);
        stele_page_free(p);
        if (!c || !more)
            break;
        from = next;
    }
    CHECK(!gap);
    CHECK(n == accepted);
    printf("engine: %" PRIu64 " events from %d threads and %d async appends\n", n,
           T + SHARED_T, ASYNC_N);
    stele_close(db);
    t_store_drop(dir);
}

int main(void)
{
    t_seed();
    fake = calloc(1, sizeof *fake);
    CHECK(fake != NULL);
    wake_config(fake);
    if (getenv("TEST_QUICK"))
        per = 20;
    static const int sizes[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100};
    /* The ways of waking: (mode, sleepers the writer wakes in relay). */
    static const uint32_t ways[][2] = {{WAKE_BULK, 0}, {WAKE_RELAY, 1}, {WAKE_RELAY, 4}};
    for (size_t h = 0; h < sizeof ways / sizeof ways[0]; h++) {
        fake->wake_mode = (int)ways[h][0];
        fake->wake_relay_n = ways[h][1];
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            wake_one_group(sizes[s], 0);
            wake_one_group(sizes[s], 4); /* every fourth request asynchronous */
            wake_one_group(sizes[s], 1); /* only asynchronous requests */
        }
    }
    free(fake);
    printf("wake: groups of 1..100 released\n");
    engine();
    return t_done("test_wake", 2);
}
