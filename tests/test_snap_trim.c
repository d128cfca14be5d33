/*
 * test_snap_trim.c - snapshot retention (maxSnapshots) of the local engine
 * against a model, for states written with the append and for explicit
 * snapshots (src/index/index_snap.c trims without counting: this test is
 * what shows it keeps exactly the right entries).
 *
 *   model     random operations on a few streams: an append with a state
 *             (the state at the new last revision), an explicit snapshot
 *             at a recent revision (refused, as documented, when it would
 *             be dropped at once), new metadata raising or lowering
 *             maxSnapshots (lowering drops several at once), a soft delete
 *             (drops them all) and appends after it. After each step the
 *             snapshots the store keeps (walked down with
 *             stele_get_snapshot) are the model's: the `max` highest
 *             revisions, each with the state written for it. The first
 *             stream holds the lowest keys of the table (its start).
 *   reopen    the same after a reopen and after an index rebuild from the
 *             log, and stele_check passes.
 *   group     4 threads append with a state to one stream that keeps one
 *             snapshot: requests of one group commit replace each other's
 *             entry before their records are placed; the one kept entry
 *             is the last revision's and points at its record.
 *
 * Replay with TEST_SEED=n.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NS 5
#define MAXK 8    /* largest maxSnapshots used */
#define STEPS 700
#define GROUP_THREADS 4
#define GROUP_PER 50

typedef struct msnap {
    uint64_t rev;
    char state[48];
} msnap;

typedef struct mstream {
    char name[16];
    uint64_t n;  /* revisions 0..n-1 written */
    uint64_t tb; /* visible from here (soft delete) */
    uint32_t max;
    msnap snaps[MAXK + 1]; /* ascending */
    int nsnaps;
} mstream;

static int g_passed;
static mstream g_m[NS];

static uint32_t keep_of(const mstream *s)
{
    return s->max ? s->max : STELE_DEFAULT_MAX_SNAPSHOTS;
}

static void m_trim(mstream *s)
{
    int keep = (int)keep_of(s);
    if (s->nsnaps > keep) {
        int drop = s->nsnaps - keep;
        memmove(s->snaps, s->snaps + drop, (size_t)keep * sizeof s->snaps[0]);
        s->nsnaps = keep;
    }
}

/* Insert or replace the model's snapshot at rev (then trim). */
static void m_put(mstream *s, uint64_t rev, const char *state)
{
    int i = 0;
    while (i < s->nsnaps && s->snaps[i].rev < rev)
        i++;
    if (i == s->nsnaps || s->snaps[i].rev != rev) {
        CHECK(s->nsnaps <= MAXK);
        memmove(s->snaps + i + 1, s->snaps + i, (size_t)(s->nsnaps - i) * sizeof s->snaps[0]);
        s->nsnaps++;
    }
    s->snaps[i].rev = rev;
    snprintf(s->snaps[i].state, sizeof s->snaps[i].state, "%s", state);
    m_trim(s);
}

static int append_state(stele_db *db, const char *stream, const char *state)
{
    stele_snapshot_in st = {0, 3, STELE_EVENT_JSON, state, strlen(state)};
    stele_append_stream as = {stream, STELE_ANY, &st};
    stele_append_record rec;
    memset(&rec, 0, sizeof rec);
    rec.event.type = "Noted";
    rec.event.data = "{}";
    rec.event.data_len = 2;
    rec.event.flags = STELE_EVENT_JSON;
    stele_append_result per;
    stele_multi_result mr;
    return stele_append_multi(db, &as, 1, &rec, 1, NULL, &per, &mr);
}

/* The store's snapshots of s, walked down from the top, against the model. */
static void compare_stream(stele_db *db, const mstream *s, const char *when)
{
    int i = s->nsnaps - 1;
    uint64_t at = STELE_END;
    for (;;) {
        stele_snapshot *got = NULL;
        int rc = stele_get_snapshot(db, s->name, at, &got);
        if (rc == STELE_ENOTFOUND && s->n == s->tb) {
            CHECK(s->nsnaps == 0); /* soft-deleted, nothing since */
            return;
        }
        CHECK_OK(rc);
        if (rc || !got)
            break;
        if (i < 0 || got->revision != s->snaps[i].rev ||
            got->state_len != strlen(s->snaps[i].state) ||
            memcmp(got->state, s->snaps[i].state, got->state_len)) {
            fprintf(stderr, "%s: %s: store has a snapshot at %llu (%.*s), model %s %llu\n", when,
                    s->name, (unsigned long long)got->revision, (int)got->state_len,
                    (const char *)got->state, i < 0 ? "has none below, last" : "expects",
                    i < 0 ? 0ull : (unsigned long long)s->snaps[i].rev);
            CHECK(0);
        }
        uint64_t r = got->revision;
        stele_free(got);
        i--;
        if (r == 0)
            break;
        at = r - 1;
    }
    if (i >= 0)
        fprintf(stderr, "%s: %s: the store lacks the model's snapshot at %llu\n", when, s->name,
                (unsigned long long)s->snaps[i].rev);
    CHECK(i < 0);
    g_passed++;
}

static void compare_all(stele_db *db, const char *when)
{
    for (int i = 0; i < NS; i++)
        compare_stream(db, &g_m[i], when);
}

static void step(stele_db *db, int k)
{
    mstream *s = &g_m[t_rand_below(NS)];
    uint64_t c = t_rand_below(100);
    char state[48];
    snprintf(state, sizeof state, "{\"step\":%d}", k);
    if (c < 60 || s->n == s->tb) {
        CHECK_OK(append_state(db, s->name, state));
        s->n++;
        m_put(s, s->n - 1, state);
    } else if (c < 80) {
        uint64_t back = t_rand_below(s->n - s->tb < 10 ? s->n - s->tb : 10);
        uint64_t rev = s->n - 1 - back;
        stele_snapshot_in in = {rev, 1, STELE_EVENT_JSON, state, strlen(state)};
        int refused = s->nsnaps >= (int)keep_of(s) && rev < s->snaps[0].rev;
        int rc = stele_put_snapshot(db, s->name, &in);
        CHECK_RC(rc, refused ? STELE_EINVAL : 0);
        if (!refused)
            m_put(s, rev, state);
    } else if (c < 95) {
        stele_stream_metadata md;
        memset(&md, 0, sizeof md);
        md.max_snapshots = (uint32_t)t_rand_below(MAXK + 1); /* 0: the default */
        CHECK_OK(stele_set_stream_metadata(db, s->name, &md, STELE_ANY, NULL));
        s->max = md.max_snapshots;
        m_trim(s);
    } else {
        CHECK_OK(stele_delete_stream(db, s->name, STELE_ANY, NULL));
        s->tb = s->n;
        s->nsnaps = 0;
    }
}

static stele_db *g_db;

static void *group_writer(void *arg)
{
    long t = (long)(intptr_t)arg;
    for (int i = 0; i < GROUP_PER; i++) {
        char state[48];
        snprintf(state, sizeof state, "{\"t\":%ld,\"i\":%d}", t, i);
        CHECK_OK(append_state(g_db, "Group-1", state));
    }
    return NULL;
}

/* The one kept entry is the last revision's, and its state is one a writer
 * wrote (the record it points at was verified by the read). */
static void check_group(stele_db *db, const char *when)
{
    stele_snapshot *got = NULL;
    CHECK_OK(stele_get_snapshot(db, "Group-1", STELE_END, &got));
    CHECK(got && got->revision == GROUP_THREADS * GROUP_PER - 1);
    if (got) {
        CHECK(got->state_len > 5 && memcmp(got->state, "{\"t\":", 5) == 0);
        uint64_t below = got->revision;
        stele_free(got);
        got = NULL;
        CHECK_OK(stele_get_snapshot(db, "Group-1", below - 1, &got));
        if (got)
            fprintf(stderr, "%s: Group-1 keeps a second snapshot at %llu\n", when,
                    (unsigned long long)got->revision);
        CHECK(got == NULL);
        stele_free(got);
    }
    g_passed++;
}

int main(void)
{
    t_seed();
    int steps = STEPS;
    const char *dir = t_tmpdir("snaptrim");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    for (int i = 0; i < NS; i++)
        snprintf(g_m[i].name, sizeof g_m[i].name, "Trim-%d", i);
    /* Every stream exists from the start, so stream 0 has the lowest keys. */
    for (int i = 0; i < NS; i++) {
        char state[48];
        snprintf(state, sizeof state, "{\"first\":%d}", i);
        CHECK_OK(append_state(db, g_m[i].name, state));
        g_m[i].n = 1;
        m_put(&g_m[i], 0, state);
    }
    for (int k = 0; k < steps; k++) {
        step(db, k);
        if (k % 50 == 49)
            compare_all(db, "model");
    }
    compare_all(db, "model, end");

    /* group: one snapshot kept, entries replaced within group commits */
    stele_stream_metadata md;
    memset(&md, 0, sizeof md);
    md.max_snapshots = 1;
    CHECK_OK(stele_set_stream_metadata(db, "Group-1", &md, STELE_ANY, NULL));
    g_db = db;
    pthread_t th[GROUP_THREADS];
    for (long t = 0; t < GROUP_THREADS; t++)
        pthread_create(&th[t], NULL, group_writer, (void *)(intptr_t)t);
    for (int t = 0; t < GROUP_THREADS; t++)
        pthread_join(th[t], NULL);
    check_group(db, "group");
    stele_close(db);

    CHECK_OK(stele_open(dir, NULL, &db));
    compare_all(db, "after a reopen");
    check_group(db, "group, after a reopen");
    stele_close(db);
    char path[600];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    CHECK(unlink(path) == 0);
    CHECK_OK(stele_open(dir, NULL, &db));
    compare_all(db, "after an index rebuild");
    check_group(db, "group, after an index rebuild");
    stele_close(db);
    char report[512];
    CHECK_OK(stele_check(dir, report, sizeof report));
    t_rmdir(dir);
    return t_done("test_snap_trim", g_passed);
}
