/*
 * test_state.c - aggregate state with the append through the library
 * (seed 004): stele_append_multi of one stream with `state`, racing.
 *
 *   race      8 writer threads fold the same two streams: each loads the
 *             stream's state (stele_load_stream), folds its own new event
 *             into it and appends the event with the new state at the
 *             expected revision it loaded; on WRONGREV it reloads and
 *             retries. A checker thread keeps loading: the state it finds
 *             is always at the stream's last revision (no event follows
 *             it) and always equals the fold of the events up to it.
 *   after     the stream holds exactly the acknowledged events (a conflict
 *             stored no event), the state equals their fold, and both
 *             survive a reopen and a rebuild of the index from the log.
 *   conflict  an append with a wrong expected revision, or one over the
 *             size limit, stores neither its events nor its state.
 *   bad input a state with a NULL pointer, unknown flags, or too big:
 *             clear EINVAL / ETOOBIG, nothing written.
 *
 * Replay with TEST_SEED=n.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define WRITERS 8
#define PER_WRITER 60

static int g_passed;
static stele_db *g_db;
static const char *const g_streams[] = {"Account-1", "Account-2"};
static _Atomic int g_done;
static _Atomic long g_acked[2], g_conflicts, g_checks;

/* The state text: {"n":N,"sum":S,"last":"wW-k"}; parsed back with sscanf. */
typedef struct fold {
    long n, sum;
} fold;

static int parse_state(const void *p, size_t len, fold *f)
{
    char buf[256];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, p, len);
    buf[len] = 0;
    return sscanf(buf, "{\"n\":%ld,\"sum\":%ld", &f->n, &f->sum) == 2 ? 0 : -1;
}

/* An event's value: its data is {"v":V}. */
static long event_value(const stele_event *e)
{
    char buf[64];
    size_t n = e->data_len < sizeof buf - 1 ? e->data_len : sizeof buf - 1;
    memcpy(buf, e->data, n);
    buf[n] = 0;
    long v = 0;
    CHECK(sscanf(buf, "{\"v\":%ld}", &v) == 1);
    return v;
}

/* The fold of the stream's events up to revision `to` (all: STELE_END). */
static fold fold_events(stele_db *db, const char *stream, uint64_t to)
{
    fold f = {0, 0};
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        int rc = stele_read_stream(db, stream, from, STELE_FORWARDS, 500, &pg);
        if (rc == STELE_ENOTFOUND)
            return f;
        CHECK_OK(rc);
        if (rc)
            return f;
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (e->revision > to)
                break;
            f.n++;
            f.sum += event_value(e);
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || next > to)
            return f;
        from = next;
    }
}

static int append_with_state(stele_db *db, const char *stream, int64_t expected, long v,
                             const fold *nf, stele_multi_result *mr)
{
    char data[64], state[128];
    int dl = snprintf(data, sizeof data, "{\"v\":%ld}", v);
    int sl = snprintf(state, sizeof state, "{\"n\":%ld,\"sum\":%ld}", nf->n, nf->sum);
    stele_snapshot_in st = {0, 1, STELE_EVENT_JSON, state, (size_t)sl};
    stele_append_stream as = {stream, expected, &st};
    stele_append_record rec;
    memset(&rec, 0, sizeof rec);
    rec.stream = 0;
    rec.event.type = "Deposited";
    rec.event.data = data;
    rec.event.data_len = (size_t)dl;
    rec.event.flags = STELE_EVENT_JSON;
    stele_append_result per;
    return stele_append_multi(db, &as, 1, &rec, 1, NULL, &per, mr);
}

static void *writer(void *arg)
{
    long w = (long)(intptr_t)arg;
    for (int k = 0; k < PER_WRITER; k++) {
        int s = (int)((w + k) % 2);
        long v = w * 1000 + k;
        for (int attempt = 0; attempt < 10000; attempt++) {
            stele_snapshot *snap;
            stele_page *pg;
            int rc = stele_load_stream(g_db, g_streams[s], 10, &snap, &pg);
            fold f = {0, 0};
            int64_t expected = STELE_NO_STREAM;
            if (rc == 0) {
                CHECK(snap != NULL);
                if (snap) {
                    CHECK(parse_state(snap->state, snap->state_len, &f) == 0);
                    expected = (int64_t)snap->revision;
                }
                stele_free(snap);
                stele_page_free(pg);
            } else {
                CHECK_RC(rc, STELE_ENOTFOUND);
            }
            fold nf = {f.n + 1, f.sum + v};
            stele_multi_result mr;
            rc = append_with_state(g_db, g_streams[s], expected, v, &nf, &mr);
            if (rc == 0) {
                g_acked[s]++;
                break;
            }
            CHECK_RC(rc, STELE_EWRONGREV);
            g_conflicts++;
        }
    }
    return NULL;
}

/* The state found is always at the last revision and is the fold. */
static void *checker(void *arg)
{
    (void)arg;
    while (!g_done) {
        for (int s = 0; s < 2; s++) {
            stele_snapshot *snap;
            stele_page *pg;
            int rc = stele_load_stream(g_db, g_streams[s], 10, &snap, &pg);
            if (rc == STELE_ENOTFOUND)
                continue;
            CHECK_OK(rc);
            if (rc)
                continue;
            CHECK(snap != NULL);
            CHECK(stele_page_count(pg) == 0); /* no event after the state */
            if (snap) {
                fold f;
                CHECK(parse_state(snap->state, snap->state_len, &f) == 0);
                CHECK(f.n == (long)snap->revision + 1);
                if ((g_checks % 16) == 0) {
                    fold e = fold_events(g_db, g_streams[s], snap->revision);
                    CHECK(e.n == f.n && e.sum == f.sum);
                }
                g_checks++;
            }
            stele_free(snap);
            stele_page_free(pg);
        }
    }
    return NULL;
}

static void check_final(stele_db *db, const char *when)
{
    for (int s = 0; s < 2; s++) {
        stele_snapshot *snap;
        CHECK_OK(stele_get_snapshot(db, g_streams[s], STELE_END, &snap));
        stele_stream_info info;
        CHECK_OK(stele_stream_head(db, g_streams[s], &info));
        fold e = fold_events(db, g_streams[s], STELE_END), f = {-1, -1};
        CHECK(snap && parse_state(snap->state, snap->state_len, &f) == 0);
        if (!snap || e.n != g_acked[s] || f.n != e.n || f.sum != e.sum ||
            snap->revision != info.last_revision) {
            fprintf(stderr, "%s: %s: %ld acked, %ld events, state n=%ld sum=%ld, fold sum=%ld\n",
                    when, g_streams[s], (long)g_acked[s], e.n, f.n, f.sum, e.sum);
            t_failures++;
            t_fail_hook();
        }
        stele_free(snap);
    }
    g_passed++;
}

static void check_conflict_and_bad_input(stele_db *db)
{
    const char *s = g_streams[0];
    stele_stream_info before;
    CHECK_OK(stele_stream_head(db, s, &before));
    stele_snapshot *snap0;
    CHECK_OK(stele_get_snapshot(db, s, STELE_END, &snap0));
    fold nf = {999, 999};
    stele_multi_result mr;
    /* A wrong expected revision: neither the event nor the state. */
    CHECK_RC(append_with_state(db, s, (int64_t)before.last_revision - 1, 5, &nf, &mr),
             STELE_EWRONGREV);
    CHECK(mr.current_revision == before.last_revision);
    CHECK_RC(append_with_state(db, s, STELE_NO_STREAM, 5, &nf, &mr), STELE_EWRONGREV);
    /* Bad states. */
    stele_snapshot_in st = {0, 0, STELE_EVENT_JSON, NULL, 10};
    stele_append_stream as = {s, STELE_ANY, &st};
    stele_append_record rec;
    memset(&rec, 0, sizeof rec);
    rec.event.type = "Deposited";
    CHECK_RC(stele_append_multi(db, &as, 1, &rec, 1, NULL, NULL, &mr), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "state") != NULL);
    st.state = "{}";
    st.state_len = 2;
    st.flags = 0x80;
    CHECK_RC(stele_append_multi(db, &as, 1, &rec, 1, NULL, NULL, &mr), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "flags") != NULL);
    size_t big = (16u << 20) + 1;
    char *huge = malloc(big);
    memset(huge, 'x', big);
    st.state = huge;
    st.state_len = big;
    st.flags = 0;
    CHECK_RC(stele_append_multi(db, &as, 1, &rec, 1, NULL, NULL, &mr), STELE_ETOOBIG);
    free(huge);
    /* Nothing of that was written. */
    stele_stream_info after;
    CHECK_OK(stele_stream_head(db, s, &after));
    CHECK(after.last_revision == before.last_revision);
    stele_snapshot *snap1;
    CHECK_OK(stele_get_snapshot(db, s, STELE_END, &snap1));
    CHECK(snap0 && snap1 && snap1->revision == snap0->revision &&
          snap1->state_len == snap0->state_len &&
          !memcmp(snap1->state, snap0->state, snap0->state_len));
    stele_free(snap0);
    stele_free(snap1);
    g_passed++;
}

int main(void)
{
    t_seed();
    const char *dir = t_tmpdir("state");
    CHECK_OK(stele_open(dir, NULL, &g_db));
    pthread_t w[WRITERS], ck;
    pthread_create(&ck, NULL, checker, NULL);
    for (long i = 0; i < WRITERS; i++)
        pthread_create(&w[i], NULL, writer, (void *)(intptr_t)i);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(w[i], NULL);
    g_done = 1;
    pthread_join(ck, NULL);
    fprintf(stderr, "%ld + %ld appends, %ld conflicts retried, %ld checks\n", (long)g_acked[0],
            (long)g_acked[1], (long)g_conflicts, (long)g_checks);
    CHECK(g_acked[0] + g_acked[1] == WRITERS * PER_WRITER);
    CHECK(g_checks > 0);
    check_final(g_db, "after the race");
    check_conflict_and_bad_input(g_db);
    stele_close(g_db);
    CHECK_OK(stele_open(dir, NULL, &g_db));
    check_final(g_db, "after a reopen");
    stele_close(g_db);
    char path[600];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    CHECK(unlink(path) == 0);
    CHECK_OK(stele_open(dir, NULL, &g_db));
    check_final(g_db, "after an index rebuild");
    stele_close(g_db);
    char report[512];
    CHECK_OK(stele_check(dir, report, sizeof report));
    t_rmdir(dir);
    return t_done("test_state", g_passed);
}
