/*
 * test_backup.c - backup, archive and point-in-time restore
 * (stele_backup, stele_restore, stele_backup_verify).
 *
 *   online     8 writer threads append while the main thread takes a
 *              backup; the backup restored: every event acknowledged
 *              before the backup started is there byte for byte (id,
 *              type, data, metadata) with its position and time, nothing
 *              after the backup's end is, positions are gapless; `stele
 *              check` passes; a second backup into the same directory
 *              keeps every sealed segment of the first and copies only
 *              the rest (counted, and the kept files untouched: same
 *              inode and mtime); a third with no appends copies only the
 *              tail;
 *   pitr       a model: random appends, stream metadata, snapshots and
 *              consumer-group acks (each a checkpoint) over 64 KiB
 *              segments, recording the model after every step with the
 *              time between steps and the last position. Then a backup,
 *              and restores to a time and to a position of random steps
 *              (and the first and last): each result equals the model at
 *              that step (events with positions and times, metadata,
 *              latest snapshot, the group's saved checkpoint), and
 *              appends continue at the right position;
 *   archive    a store with an archive: deletes and a scavenge rewrite
 *              sealed segments; a backup recopies them, the archive keeps
 *              them as sealed, and a restore from the archive to a point
 *              inside a rewritten segment gives back the deleted events,
 *              while the backup refuses that point with a clear message;
 *   race       backups while another thread appends, deletes, tombstones
 *              and scavenges (segments rewritten during the copy): each
 *              restores, passes the check, and holds every event of the
 *              live stream acknowledged before it began, byte for byte;
 *   damage     a flipped byte in a segment copy, a missing copy, a copy of
 *              the wrong length, a torn manifest: restore and verify fail
 *              naming the file, and leave no store behind; bad arguments
 *              (a non-empty target, a point outside the backup, both
 *              points, a backup into another store's backup).
 *
 * Replay with TEST_SEED=n.
 */
#include "testutil.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEG (64u * 1024u)
#define MAXDATA 900

static int passed;
/* TEST_QUICK (ASan, valgrind): smaller workloads, the same checks. */
static int quick;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The data of event `rev` of stream number `s`: a function of both. */
static size_t ev_data(int s, uint64_t rev, uint8_t *out)
{
    uint64_t h = mix(((uint64_t)s << 40) ^ rev);
    size_t len = 20 + h % (MAXDATA - 20);
    int k = snprintf((char *)out, 64, "{\"s\":%d,\"r\":%" PRIu64 ",\"p\":\"", s, rev);
    for (size_t i = (size_t)k; i < len - 2; i++)
        out[i] = (uint8_t)('a' + (h >> (i % 50)) % 26);
    out[len - 2] = '"';
    out[len - 1] = '}';
    return len;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static stele_db *open_store(const char *dir)
{
    stele_options o = {.segment_size = SEG};
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

/* ============================================================= online */

#define WRITERS 8
#define PER_WRITER 1500
static uint64_t per_writer = PER_WRITER;

typedef struct ack {
    uint64_t position;
    int64_t created;
} ack;

typedef struct writer {
    stele_db *db;
    int s;
    ack acks[PER_WRITER];
    _Atomic uint64_t acked; /* events acknowledged, in revision order */
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    char stream[32], meta[64];
    snprintf(stream, sizeof stream, "W-%d", w->s);
    static _Thread_local uint8_t data[MAXDATA];
    for (uint64_t rev = 0; rev < per_writer; rev++) {
        stele_event_in ev = {0};
        ev.type = "Written";
        ev.data = data;
        ev.data_len = ev_data(w->s, rev, data);
        ev.flags = STELE_EVENT_JSON;
        int ml = snprintf(meta, sizeof meta, "{\"rev\":%" PRIu64 "}", rev);
        ev.metadata = meta;
        ev.metadata_len = (size_t)ml;
        stele_append_result r;
        int rc = stele_append(w->db, stream, rev == 0 ? STELE_NO_STREAM : (int64_t)rev - 1, &ev, 1, &r);
        if (rev == 0 && rc == 0)
            CHECK(r.first_revision == 0);
        CHECK_OK(rc);
        if (rc)
            break;
        stele_page *pg;
        if (stele_read_stream(w->db, stream, rev, STELE_FORWARDS, 1, &pg) == 0) {
            const stele_event *e = stele_page_event(pg, 0);
            w->acks[rev].position = e->position;
            w->acks[rev].created = e->created_us;
            CHECK(e->position == r.first_position);
            stele_page_free(pg);
        }
        atomic_store(&w->acked, rev + 1);
    }
    return NULL;
}

/* Every acknowledged event of writer `w` below `upto` is in `db`, byte for
 * byte, at its position and time; none at or above `beyond`. */
static void check_writer(stele_db *db, writer *w, uint64_t upto)
{
    char stream[32], meta[64];
    snprintf(stream, sizeof stream, "W-%d", w->s);
    uint8_t data[MAXDATA];
    uint64_t rev = 0;
    while (rev < upto) {
        stele_page *pg;
        CHECK_OK(stele_read_stream(db, stream, rev, STELE_FORWARDS, 500, &pg));
        size_t n = stele_page_count(pg);
        CHECK(n > 0);
        for (size_t i = 0; i < n && rev < upto; i++, rev++) {
            const stele_event *e = stele_page_event(pg, i);
            size_t len = ev_data(w->s, rev, data);
            int ml = snprintf(meta, sizeof meta, "{\"rev\":%" PRIu64 "}", rev);
            CHECK(e->revision == rev);
            CHECK(e->data_len == len && memcmp(e->data, data, len) == 0);
            CHECK(e->metadata_len == (size_t)ml && memcmp(e->metadata, meta, (size_t)ml) == 0);
            CHECK(e->type_len == 7 && memcmp(e->type, "Written", 7) == 0);
            CHECK(e->position == w->acks[rev].position);
            CHECK(e->created_us == w->acks[rev].created);
        }
        stele_page_free(pg);
        if (n == 0)
            break;
    }
}

static void test_online(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", t_tmpdir("bk-online"));
    char bk[1024];
    snprintf(bk, sizeof bk, "%s", t_tmpdir("bk-online-dest"));
    char rs[1024];
    snprintf(rs, sizeof rs, "%s", t_tmpdir("bk-online-restored"));
    char rs2[1024];
    snprintf(rs2, sizeof rs2, "%s", t_tmpdir("bk-online-restored2"));
    stele_db *db = open_store(dir);
    static writer ws[WRITERS];
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        ws[i].db = db;
        ws[i].s = i;
        atomic_store(&ws[i].acked, 0);
        pthread_create(&th[i], NULL, writer_main, &ws[i]);
    }
    /* Let them write a few segments first (no timing: a count). */
    for (;;) {
        uint64_t total = 0;
        for (int i = 0; i < WRITERS; i++)
            total += atomic_load(&ws[i].acked);
        if (total >= WRITERS * per_writer / 3)
            break;
        usleep(2000);
    }
    uint64_t before[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        before[i] = atomic_load(&ws[i].acked);
    stele_backup_result r1;
    CHECK_OK(stele_backup(db, bk, NULL, &r1));
    uint64_t during[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        during[i] = atomic_load(&ws[i].acked);
    CHECK(r1.segments > (quick ? 1u : 3u));
    CHECK(r1.segments_copied == r1.segments && r1.segments_kept == 0);
    CHECK(r1.bytes_copied == r1.bytes_total && r1.bytes_total > 3 * SEG / 2);
    char report[512];
    CHECK_OK(stele_backup_verify(bk, report, sizeof report));

    /* Restore while the writers go on. */
    stele_restore_result rr;
    CHECK_OK(stele_restore(bk, rs, NULL, &rr));
    CHECK(rr.end_position == r1.end_position);
    CHECK(rr.segments == r1.segments);
    CHECK_OK(stele_check(rs, report, sizeof report));
    stele_db *rdb = open_store(rs);
    stele_stats st;
    CHECK_OK(stele_get_stats(rdb, &st));
    CHECK(st.events == r1.end_position);
    for (int i = 0; i < WRITERS; i++) {
        /* Acked before the backup: there. */
        check_writer(rdb, &ws[i], before[i]);
        /* Nothing beyond the backup's end; whatever is there is whole. */
        stele_stream_info info;
        char stream[32];
        snprintf(stream, sizeof stream, "W-%d", i);
        CHECK_OK(stele_stream_head(rdb, stream, &info));
        /* A writer counts an append once it has read it back, so the
         * backup may hold one more than it had counted (its append in
         * flight); whatever it counted is whole. */
        CHECK(info.last_revision + 1 >= before[i] && info.last_revision + 1 <= during[i] + 1);
        check_writer(rdb, &ws[i],
                     info.last_revision + 1 < during[i] ? info.last_revision + 1 : during[i]);
        CHECK(info.last_position < r1.end_position);
    }
    /* $all is gapless up to the end. */
    uint64_t pos = 0, next = 0;
    for (;;) {
        stele_page *pg;
        CHECK_OK(stele_read_all(rdb, next, STELE_FORWARDS, 1000, &pg));
        for (size_t i = 0; i < stele_page_count(pg); i++)
            CHECK(stele_page_event(pg, i)->position == pos++);
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more)
            break;
    }
    CHECK(pos == r1.end_position);
    stele_close(rdb);

    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);

    /* A second backup: the sealed segments of the first stay as they were;
     * the first's tail is extended in place (same file). */
    char seg0[4200], tail1[4200];
    snprintf(seg0, sizeof seg0, "%s/segments/00000000.seg", bk);
    snprintf(tail1, sizeof tail1, "%s/segments/%08u.seg", bk, (unsigned)(r1.segments - 1));
    struct stat s0, s1, t0, t1;
    CHECK(stat(seg0, &s0) == 0 && stat(tail1, &t0) == 0);
    stele_backup_result r2;
    CHECK_OK(stele_backup(db, bk, NULL, &r2));
    CHECK(r2.segments_kept == r1.segments - 1); /* all but the first's tail */
    CHECK(r2.segments_copied == r2.segments - r2.segments_kept);
    CHECK(r2.segments > r1.segments);
    CHECK(r2.bytes_copied < r2.bytes_total);
    CHECK(stat(seg0, &s1) == 0 && s1.st_ino == s0.st_ino &&
          s1.st_mtim.tv_sec == s0.st_mtim.tv_sec && s1.st_mtim.tv_nsec == s0.st_mtim.tv_nsec);
    CHECK(stat(tail1, &t1) == 0 && t1.st_ino == t0.st_ino && t1.st_size > t0.st_size);
    /* Only what is new was copied: the total less the first backup's. */
    CHECK(r2.bytes_copied == r2.bytes_total - r1.bytes_total);
    /* A third without appends: only the tail. */
    stele_backup_result r3;
    CHECK_OK(stele_backup(db, bk, NULL, &r3));
    CHECK(r3.segments_copied == 1 && r3.segments_kept == r3.segments - 1);
    CHECK(r3.bytes_copied == 0);
    CHECK(r3.end_position == WRITERS * per_writer);
    /* A backup that died while extending the tail's copy leaves bytes past
     * what the manifest names: the backup still verifies and restores. */
    char tailn[4200];
    snprintf(tailn, sizeof tailn, "%s/segments/%08u.seg", bk, (unsigned)(r3.segments - 1));
    FILE *tf = fopen(tailn, "ab");
    CHECK(tf != NULL);
    if (tf) {
        fputs("garbage of a torn extension", tf);
        fclose(tf);
    }
    CHECK_OK(stele_backup_verify(bk, report, sizeof report));
    stele_close(db);

    CHECK_OK(stele_restore(bk, rs2, NULL, &rr));
    CHECK(rr.end_position == WRITERS * per_writer);
    rdb = open_store(rs2);
    for (int i = 0; i < WRITERS; i++)
        check_writer(rdb, &ws[i], per_writer);
    /* Appends continue after the restored end. */
    stele_event_in ev = {.type = "After", .data = "x", .data_len = 1};
    stele_append_result ar;
    CHECK_OK(stele_append(rdb, "W-0", per_writer - 1, &ev, 1, &ar));
    CHECK(ar.first_position == WRITERS * per_writer);
    stele_close(rdb);
    CHECK_OK(stele_check(rs2, report, sizeof report));
    t_rmdir(dir);
    t_rmdir(bk);
    t_rmdir(rs);
    t_rmdir(rs2);
    passed++;
}

/* =============================================================== pitr */

#define NS 6
#define STEPS 700
static int steps = STEPS;
#define GROUP_STREAM "S-0"
/* A projection counting S-1's events: its state is committed in the log. */
#define PROJ_QUERY                                                               \
    "fromStream('S-1').when({$init: function () { return {n: 0}; },"             \
    " Modelled: function (s, e) { s.n++; return s; }})"

typedef struct mstate {
    uint64_t nevents[NS];
    uint64_t meta_version[NS]; /* STELE_NONE: none */
    int meta_step[NS];
    uint64_t snap_rev[NS];     /* STELE_NONE: none */
    int snap_step[NS];
    uint64_t checkpoint;       /* the group's saved checkpoint, STELE_NONE */
    uint64_t total;            /* next position */
    int64_t time;              /* between this step and the next */
    int has_events;            /* this step's last commit holds events */
} mstate;

static mstate model[STEPS + 1];
static ack mev[NS][STEPS * 3 + 8];

static void wait_checkpoint(stele_db *db, uint64_t want)
{
    for (int i = 0; i < 60000; i++) {
        stele_group_info *gi;
        CHECK_OK(stele_group_get(db, GROUP_STREAM, "g", &gi));
        uint64_t saved = gi->checkpoint_saved;
        stele_group_info_free(gi);
        if (saved == want)
            return;
        usleep(1000);
    }
    CHECK(!"the group's checkpoint never reached the acked revision");
}

static void check_model(stele_db *db, const mstate *m, int step)
{
    uint8_t data[MAXDATA];
    for (int s = 0; s < NS; s++) {
        char stream[16];
        snprintf(stream, sizeof stream, "S-%d", s);
        stele_stream_info info;
        int rc = stele_stream_head(db, stream, &info);
        if (m->nevents[s] == 0 && m->meta_version[s] == STELE_NONE) {
            CHECK_RC(rc, STELE_ENOTFOUND);
            continue;
        }
        if (m->nevents[s]) {
            CHECK_OK(rc);
            stele_page *pg;
            CHECK_OK(stele_read_stream(db, stream, 0, STELE_FORWARDS, 10000, &pg));
            CHECK(stele_page_count(pg) == m->nevents[s]);
            for (size_t i = 0; i < stele_page_count(pg); i++) {
                const stele_event *e = stele_page_event(pg, i);
                size_t n = ev_data(s, i, data);
                CHECK(e->revision == i && e->data_len == n && !memcmp(e->data, data, n));
                CHECK(e->position == mev[s][i].position && e->created_us == mev[s][i].created);
            }
            stele_page_free(pg);
        }
        stele_stream_metadata *md = NULL;
        rc = stele_get_stream_metadata(db, stream, &md);
        if (rc == 0) {
            CHECK(md->version == m->meta_version[s]);
            if (m->meta_version[s] != STELE_NONE) {
                char want[64];
                int wl = snprintf(want, sizeof want, "{\"step\":%d}", m->meta_step[s]);
                CHECK(md->custom_len == (size_t)wl && !memcmp(md->custom, want, (size_t)wl));
                CHECK(md->max_count == (uint64_t)(1000 + m->meta_step[s]));
            }
            stele_free(md);
        } else {
            CHECK(m->nevents[s] == 0 && m->meta_version[s] == STELE_NONE);
        }
        if (m->nevents[s]) {
            stele_snapshot *sn = NULL;
            CHECK_OK(stele_get_snapshot(db, stream, STELE_END, &sn));
            if (m->snap_rev[s] == STELE_NONE) {
                CHECK(sn == NULL);
            } else if (sn) {
                char want[64];
                int wl = snprintf(want, sizeof want, "{\"snapStep\":%d}", m->snap_step[s]);
                CHECK(sn->revision == m->snap_rev[s]);
                CHECK(sn->state_len == (size_t)wl && !memcmp(sn->state, want, (size_t)wl));
            } else {
                CHECK(!"snapshot missing");
            }
            stele_free(sn);
        }
    }
    stele_group_info *gi = NULL;
    int rc = stele_group_get(db, GROUP_STREAM, "g", &gi);
    if (step < 0) {
        CHECK_RC(rc, STELE_ENOTFOUND);
    } else {
        CHECK_OK(rc);
        if (gi)
            CHECK(gi->checkpoint_saved == m->checkpoint);
    }
    stele_group_info_free(gi);
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(st.events == m->total);
    /* The projection's committed state as of then (checked last: reading
     * it starts the projections of the restored store). */
    char *json = NULL;
    size_t jl = 0;
    rc = stele_projection_state(db, "count", "", 0, &json, &jl);
    if (step < 0) {
        CHECK_RC(rc, STELE_ENOTFOUND);
    } else {
        CHECK_OK(rc);
        const char *p = json ? strstr(json, "\"n\":") : NULL;
        unsigned long long n = p ? strtoull(p + 4, NULL, 10) : 0;
        if (m->nevents[1] == 0)
            CHECK(json == NULL || n == 0);
        else if (n != m->nevents[1]) {
            fprintf(stderr, "projection state %s, want n=%llu\n", json ? json : "(none)",
                    (unsigned long long)m->nevents[1]);
            CHECK(!"the projection's state is the model's");
        }
    }
    stele_free(json);
}

static void restore_and_compare(const char *bk, const stele_restore_options *o, const mstate *m,
                                int step)
{
    char rs[1024];
    snprintf(rs, sizeof rs, "%s", t_tmpdir("bk-pitr-restored"));
    t_rmdir(rs);
    stele_restore_result rr;
    CHECK_OK(stele_restore(bk, rs, o, &rr));
    CHECK(rr.end_position == m->total);
    stele_db *db = open_store(rs);
    check_model(db, m, step);
    /* Appends continue at the model's next position. */
    stele_event_in ev = {.type = "After", .data = "x", .data_len = 1};
    stele_append_result ar;
    CHECK_OK(stele_append(db, "After-1", STELE_ANY, &ev, 1, &ar));
    CHECK(ar.first_position == m->total);
    stele_close(db);
    char report[512];
    CHECK_OK(stele_check(rs, report, sizeof report));
    t_rmdir(rs);
}

static void test_pitr(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", t_tmpdir("bk-pitr"));
    char bk[1024];
    snprintf(bk, sizeof bk, "%s", t_tmpdir("bk-pitr-dest"));
    stele_db *db = open_store(dir);
    mstate cur;
    memset(&cur, 0, sizeof cur);
    for (int s = 0; s < NS; s++)
        cur.meta_version[s] = cur.snap_rev[s] = STELE_NONE;
    cur.checkpoint = STELE_NONE;
    /* Step 0: an empty store (the group comes at step 1). */
    cur.time = now_us();
    model[0] = cur;
    while (now_us() <= cur.time)
        ;
    stele_consumer *con = NULL;
    uint64_t acked = 0; /* revisions of S-0 acked */
    uint8_t data[MAXDATA];
    for (int step = 1; step <= steps; step++) {
        int s = (int)t_rand_below(NS);
        char stream[16];
        snprintf(stream, sizeof stream, "S-%d", s);
        int op = step == 1 ? 9 : (int)t_rand_below(10);
        cur.has_events = 0;
        if (op == 9 && step == 1) {
            stele_group_settings gs;
            stele_group_settings_init(&gs);
            gs.checkpoint_min_count = 1;
            gs.checkpoint_max_count = 1;
            gs.checkpoint_after_ms = 3600000;
            CHECK_OK(stele_group_create(db, GROUP_STREAM, "g", &gs));
            CHECK_OK(stele_group_connect(db, GROUP_STREAM, "g", "c1", &con));
            stele_projection_settings ps = {.query = PROJ_QUERY, .query_len = strlen(PROJ_QUERY),
                                            .mode = STELE_PROJ_CONTINUOUS, .enabled = 1,
                                            .timeout_ms = 60000}; /* valgrind is slow */
            CHECK_OK(stele_projection_create(db, "count", &ps));
            CHECK_OK(stele_projection_wait(db, "count", STELE_END, 60000));
            cur.has_events = 1; /* GroupCreated, the projection's definition */
        } else if (op <= 4 || cur.nevents[s] == 0) {
            size_t n = 1 + t_rand_below(3);
            stele_event_in ev[3];
            static uint8_t bufs[3][MAXDATA];
            for (size_t i = 0; i < n; i++) {
                memset(&ev[i], 0, sizeof ev[i]);
                ev[i].type = "Modelled";
                ev[i].data = bufs[i];
                ev[i].data_len = ev_data(s, cur.nevents[s] + i, bufs[i]);
                ev[i].flags = STELE_EVENT_JSON;
            }
            stele_append_result r;
            CHECK_OK(stele_append(db, stream, STELE_ANY, ev, n, &r));
            stele_page *pg;
            CHECK_OK(stele_read_stream(db, stream, cur.nevents[s], STELE_FORWARDS, n, &pg));
            for (size_t i = 0; i < n; i++) {
                const stele_event *e = stele_page_event(pg, i);
                mev[s][cur.nevents[s] + i] = (ack){e->position, e->created_us};
            }
            stele_page_free(pg);
            cur.nevents[s] += n;
            cur.has_events = 1;
            /* The projection commits its state for S-1's events now, in
             * this step (it writes nothing for other streams). */
            if (s == 1)
                CHECK_OK(stele_projection_wait(db, "count", STELE_END, 60000));
        } else if (op <= 6) {
            stele_stream_metadata md = {0};
            char custom[64];
            int cl = snprintf(custom, sizeof custom, "{\"step\":%d}", step);
            md.custom = custom;
            md.custom_len = (size_t)cl;
            md.max_count = 1000 + (uint64_t)step;
            uint64_t v;
            CHECK_OK(stele_set_stream_metadata(db, stream, &md, STELE_ANY, &v));
            cur.meta_version[s] = v;
            cur.meta_step[s] = step;
        } else if (op <= 7) {
            char state[64];
            int sl = snprintf(state, sizeof state, "{\"snapStep\":%d}", step);
            uint64_t rev = cur.nevents[s] - 1;
            if (cur.snap_rev[s] != STELE_NONE && rev < cur.snap_rev[s])
                rev = cur.snap_rev[s];
            stele_snapshot_in si = {.revision = rev, .flags = STELE_EVENT_JSON, .state = state,
                                    .state_len = (size_t)sl};
            CHECK_OK(stele_put_snapshot(db, stream, &si));
            cur.snap_rev[s] = rev;
            cur.snap_step[s] = step;
        } else if (cur.nevents[0] > acked) {
            /* Take and ack one event of S-0: the group writes a checkpoint. */
            stele_batch *b;
            CHECK_OK(stele_consumer_read(con, 1, 5000, &b));
            CHECK(stele_batch_count(b) == 1);
            if (stele_batch_count(b) == 1) {
                const stele_event *e = stele_batch_event(b, 0);
                CHECK(e->revision == acked);
                uint8_t id[1][16];
                memcpy(id[0], e->id, 16);
                CHECK_OK(stele_consumer_ack(con, (const uint8_t(*)[16])id, 1));
                acked++;
                wait_checkpoint(db, acked);
                cur.checkpoint = acked;
                cur.has_events = 1;
            }
            stele_batch_free(b);
        }
        (void)data;
        stele_stats st;
        CHECK_OK(stele_get_stats(db, &st));
        cur.total = st.events;
        cur.time = now_us();
        model[step] = cur;
        while (now_us() <= cur.time)
            ;
    }
    stele_consumer_close(con);
    stele_backup_result br;
    CHECK_OK(stele_backup(db, bk, NULL, &br));
    CHECK(br.segments > (quick ? 1u : 3u));
    CHECK(br.end_position == cur.total);
    stele_close(db);

    /* To times: step 0 (empty), the last, and random ones. */
    int picks[8] = {0, steps, 1};
    for (int i = 3; i < 8; i++)
        picks[i] = 1 + (int)t_rand_below(steps);
    for (int i = 0; i < 8; i++) {
        int k = picks[i];
        stele_restore_options o = {.flags = STELE_RESTORE_TO_TIME, .to_time_us = model[k].time};
        restore_and_compare(bk, &o, &model[k], k == 0 ? -1 : k);
    }
    /* To positions: the model at a step whose last commit wrote events is
     * the store right after that commit. Half of the picks are steps
     * followed by metadata or a snapshot (no position of their own), which
     * must not be in the result. */
    int done = 0, followed = 0;
    for (int tries = 0; tries < 5000 && done < 8; tries++) {
        int k = tries == 0 ? steps : 1 + (int)t_rand_below(steps - 1);
        if (!model[k].has_events || model[k].total == 0)
            continue;
        int quiet_next = k < steps && model[k + 1].total == model[k].total;
        if (done >= 4 && !quiet_next && tries < 4000)
            continue;
        stele_restore_options o = {.flags = STELE_RESTORE_TO_POSITION,
                                   .to_position = model[k].total - 1};
        restore_and_compare(bk, &o, &model[k], k);
        done++;
        followed += quiet_next;
    }
    CHECK(followed >= 3);
    CHECK(done >= 3);
    t_rmdir(dir);
    t_rmdir(bk);
    passed++;
}

/* ============================================================ archive */

static void append_filler(stele_db *db, const char *stream, int n)
{
    uint8_t data[MAXDATA];
    for (int i = 0; i < n; i++) {
        stele_event_in ev = {.type = "Filler", .data = data, .data_len = ev_data(99, (uint64_t)i, data)};
        CHECK_OK(stele_append(db, stream, STELE_ANY, &ev, 1, NULL));
    }
}

static void test_archive(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", t_tmpdir("bk-arch"));
    char ar[1024];
    snprintf(ar, sizeof ar, "%s", t_tmpdir("bk-arch-archive"));
    char bk[1024];
    snprintf(bk, sizeof bk, "%s", t_tmpdir("bk-arch-backup"));
    char rs[1024];
    snprintf(rs, sizeof rs, "%s", t_tmpdir("bk-arch-restored"));
    stele_db *db = open_store(dir);
    append_filler(db, "Doomed-1", 150);
    append_filler(db, "Kept-1", 150);
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    uint64_t doomed_last = 149, mid = 75; /* positions of Doomed-1 */
    stele_backup_options ao = {.flags = STELE_BACKUP_ARCHIVE};
    stele_backup_result r;
    CHECK_OK(stele_backup(db, ar, &ao, &r));
    CHECK_OK(stele_backup(db, bk, NULL, &r));
    CHECK_OK(stele_tombstone_stream(db, "Doomed-1", STELE_ANY, NULL));
    append_filler(db, "Kept-2", 150); /* seal the segments holding Doomed-1 */
    stele_scavenge_result sr;
    CHECK_OK(stele_scavenge(db, NULL, &sr));
    CHECK(sr.segments_rewritten > 0);
    stele_backup_result ra, rb;
    CHECK_OK(stele_backup(db, ar, &ao, &ra));
    CHECK_OK(stele_backup(db, bk, NULL, &rb));
    /* The backup recopied the rewritten segments, the archive did not. */
    CHECK(rb.segments_copied >= sr.segments_rewritten + 1);
    CHECK(ra.segments_copied + ra.segments_kept == ra.segments);
    CHECK(ra.segments_copied < rb.segments_copied);
    stele_close(db);
    char report[512];
    CHECK_OK(stele_backup_verify(ar, report, sizeof report));
    CHECK_OK(stele_backup_verify(bk, report, sizeof report));
    /* From the archive: to position `mid`, Doomed-1 is there as it was. */
    stele_restore_options o = {.flags = STELE_RESTORE_TO_POSITION, .to_position = mid};
    CHECK_OK(stele_restore(ar, rs, &o, NULL));
    stele_db *rdb = open_store(rs);
    stele_page *pg;
    CHECK_OK(stele_read_stream(rdb, "Doomed-1", 0, STELE_FORWARDS, 1000, &pg));
    CHECK(stele_page_count(pg) == mid + 1);
    stele_page_free(pg);
    stele_close(rdb);
    t_rmdir(rs);
    /* From the backup: that point is inside a rewritten segment. */
    int rc = stele_restore(bk, rs, &o, NULL);
    CHECK_RC(rc, STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "scavenging rewrote") != NULL);
    struct stat sb;
    CHECK(stat(rs, &sb) != 0); /* nothing left behind */
    /* The whole archive restores too, with the tombstone at its end. */
    CHECK_OK(stele_restore(ar, rs, NULL, NULL));
    rdb = open_store(rs);
    CHECK_RC(stele_read_stream(rdb, "Doomed-1", 0, STELE_FORWARDS, 10, &pg), STELE_EDELETED);
    CHECK_OK(stele_read_stream(rdb, "Kept-2", 0, STELE_FORWARDS, 1000, &pg));
    CHECK(stele_page_count(pg) == 150);
    stele_page_free(pg);
    stele_close(rdb);
    (void)doomed_last;
    t_rmdir(dir);
    t_rmdir(ar);
    t_rmdir(bk);
    t_rmdir(rs);
    passed++;
}

/* ===================================================== scavenge race */

typedef struct churn {
    stele_db *db;
    _Atomic int stop;
    _Atomic uint64_t keep_acked; /* events of Keep-1 acknowledged */
    int scavenges;
} churn;

/* Appends to Keep-1 and to doomed streams, deletes and tombstones them,
 * and scavenges, until told to stop. */
static void *churn_main(void *arg)
{
    churn *c = arg;
    uint8_t data[MAXDATA];
    for (int round = 0; !atomic_load(&c->stop); round++) {
        char doomed[32];
        snprintf(doomed, sizeof doomed, "Doomed-%d", round);
        for (int i = 0; i < 40; i++) {
            stele_event_in ev = {.type = "Churn", .data = data,
                                 .data_len = ev_data(7, (uint64_t)i, data)};
            CHECK_OK(stele_append(c->db, doomed, STELE_ANY, &ev, 1, NULL));
            uint64_t k = atomic_load(&c->keep_acked);
            stele_event_in kev = {.type = "Keep", .data = data, .data_len = ev_data(1, k, data)};
            CHECK_OK(stele_append(c->db, "Keep-1", (int64_t)k - 1, &kev, 1, NULL));
            atomic_store(&c->keep_acked, k + 1);
        }
        if (round % 2)
            CHECK_OK(stele_tombstone_stream(c->db, doomed, STELE_ANY, NULL));
        else
            CHECK_OK(stele_delete_stream(c->db, doomed, STELE_ANY, NULL));
        CHECK_OK(stele_scavenge(c->db, NULL, NULL));
        c->scavenges++;
    }
    return NULL;
}

/* Backups taken while another thread appends, deletes and scavenges (so
 * segments are rewritten under the backup's feet): each restores, passes
 * the check, and holds every Keep-1 event acknowledged before it began. */
static void test_scavenge_race(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", t_tmpdir("bk-race"));
    stele_db *db = open_store(dir);
    churn c = {.db = db};
    /* Keep-1 starts with one event so that appends can name revisions. */
    uint8_t data[MAXDATA];
    stele_event_in ev0 = {.type = "Keep", .data = data, .data_len = ev_data(1, 0, data)};
    CHECK_OK(stele_append(db, "Keep-1", STELE_NO_STREAM, &ev0, 1, NULL));
    atomic_store(&c.keep_acked, 1);
    pthread_t th;
    pthread_create(&th, NULL, churn_main, &c);
    int rounds = quick ? 3 : 8;
    for (int r = 0; r < rounds; r++) {
        while (atomic_load(&c.keep_acked) < (uint64_t)(r + 1) * 150)
            usleep(1000);
        char bk[1024], rs[1024];
        snprintf(bk, sizeof bk, "%s", t_tmpdir("bk-race-dest"));
        snprintf(rs, sizeof rs, "%s", t_tmpdir("bk-race-restored"));
        t_rmdir(rs);
        uint64_t before = atomic_load(&c.keep_acked);
        CHECK_OK(stele_backup(db, bk, NULL, NULL));
        CHECK_OK(stele_restore(bk, rs, NULL, NULL));
        stele_db *rdb = open_store(rs);
        uint64_t rev = 0;
        while (rev < before) {
            stele_page *pg;
            CHECK_OK(stele_read_stream(rdb, "Keep-1", rev, STELE_FORWARDS, 1000, &pg));
            size_t n = stele_page_count(pg);
            for (size_t i = 0; i < n; i++, rev++) {
                const stele_event *e = stele_page_event(pg, i);
                size_t len = ev_data(1, rev, data);
                CHECK(e->revision == rev && e->data_len == len && !memcmp(e->data, data, len));
            }
            stele_page_free(pg);
            if (n == 0)
                break;
        }
        CHECK(rev >= before);
        stele_close(rdb);
        t_rmdir(bk);
        t_rmdir(rs);
    }
    atomic_store(&c.stop, 1);
    pthread_join(th, NULL);
    CHECK(c.scavenges > 0);
    stele_close(db);
    t_rmdir(dir);
    passed++;
}

/* ============================================================= damage */

static int copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) {
        if (a)
            fclose(a);
        if (b)
            fclose(b);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        fwrite(buf, 1, n, b);
    fclose(a);
    fclose(b);
    return 0;
}

static void expect_fail(const char *bk, int want, const char *names)
{
    char rs[1024];
    snprintf(rs, sizeof rs, "%s", t_tmpdir("bk-dmg-restored"));
    t_rmdir(rs);
    CHECK_RC(stele_restore(bk, rs, NULL, NULL), want);
    if (!strstr(stele_errmsg(), names)) {
        fprintf(stderr, "message \"%s\" does not name %s\n", stele_errmsg(), names);
        CHECK(!"the message names the file");
    }
    struct stat sb;
    CHECK(stat(rs, &sb) != 0);
    char report[512];
    CHECK_RC(stele_backup_verify(bk, report, sizeof report), want);
    CHECK(strstr(stele_errmsg(), names) != NULL);
}

static void test_damage(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", t_tmpdir("bk-dmg"));
    char bk[1024];
    snprintf(bk, sizeof bk, "%s", t_tmpdir("bk-dmg-dest"));
    stele_db *db = open_store(dir);
    append_filler(db, "D-1", 300);
    CHECK_OK(stele_backup(db, bk, NULL, NULL));
    char seg[4200], save[4200], man[4200];
    snprintf(seg, sizeof seg, "%s/segments/00000001.seg", bk);
    snprintf(save, sizeof save, "%s/saved", bk);
    snprintf(man, sizeof man, "%s/stele-backup.manifest", bk);
    CHECK(copy_file(seg, save) == 0);

    /* A flipped byte in the middle of a record. */
    FILE *f = fopen(seg, "r+b");
    CHECK(f != NULL);
    fseek(f, 5000, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 5000, SEEK_SET);
    fputc(c ^ 0x20, f);
    fclose(f);
    expect_fail(bk, STELE_ECORRUPT, "segments/00000001.seg");
    /* Missing. */
    CHECK(unlink(seg) == 0);
    expect_fail(bk, STELE_ENOTFOUND, "segments/00000001.seg is missing");
    /* Cut short. */
    CHECK(copy_file(save, seg) == 0);
    CHECK(truncate(seg, 4096) == 0);
    expect_fail(bk, STELE_ECORRUPT, "segments/00000001.seg");
    CHECK(copy_file(save, seg) == 0);
    char report[512];
    CHECK_OK(stele_backup_verify(bk, report, sizeof report));
    /* A torn manifest. */
    char mansave[4200];
    snprintf(mansave, sizeof mansave, "%s/saved.manifest", bk);
    CHECK(copy_file(man, mansave) == 0);
    struct stat sb;
    CHECK(stat(man, &sb) == 0);
    CHECK(truncate(man, sb.st_size - 8) == 0);
    expect_fail(bk, STELE_ECORRUPT, "stele-backup.manifest");
    CHECK(copy_file(mansave, man) == 0);
    unlink(mansave);
    unlink(save);

    /* Bad arguments. */
    char rs[1024];
    snprintf(rs, sizeof rs, "%s", t_tmpdir("bk-dmg-restored"));
    t_rmdir(rs);
    stele_restore_options o = {.flags = STELE_RESTORE_TO_POSITION, .to_position = 300};
    CHECK_RC(stele_restore(bk, rs, &o, NULL), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "position 300 is not in the backup") != NULL);
    o.flags |= STELE_RESTORE_TO_TIME;
    CHECK_RC(stele_restore(bk, rs, &o, NULL), STELE_EINVAL);
    CHECK_RC(stele_restore(dir, rs, NULL, NULL), STELE_ENOTFOUND); /* a store, not a backup */
    CHECK(strstr(stele_errmsg(), "not a backup") != NULL);
    CHECK_OK(stele_restore(bk, rs, NULL, NULL));
    CHECK_RC(stele_restore(bk, rs, NULL, NULL), STELE_EINVAL); /* not empty */
    CHECK(strstr(stele_errmsg(), "not empty") != NULL);
    CHECK_RC(stele_restore(bk, NULL, NULL, NULL), STELE_EINVAL);
    /* A backup of another store into the same directory. */
    char other[1024];
    snprintf(other, sizeof other, "%s", t_tmpdir("bk-dmg-other"));
    stele_db *odb = open_store(other);
    append_filler(odb, "O-1", 3);
    CHECK_RC(stele_backup(odb, bk, NULL, NULL), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "another store") != NULL);
    /* A second writer into the same directory. */
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/stele-backup.lock", bk);
    int lfd = open(lock, O_RDWR);
    CHECK(lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) == 0);
    CHECK_RC(stele_backup(db, bk, NULL, NULL), STELE_EBUSY);
    CHECK(strstr(stele_errmsg(), "another backup is writing") != NULL);
    close(lfd);
    CHECK_OK(stele_backup(db, bk, NULL, NULL));
    stele_backup_options bad = {.flags = 0x80};
    CHECK_RC(stele_backup(odb, t_tmpdir("bk-dmg-x"), &bad, NULL), STELE_EINVAL);
    stele_close(odb);
    stele_close(db);
    CHECK_OK(stele_backup_verify(bk, report, sizeof report));
    t_rmdir(rs);
    t_rmdir(other);
    t_rmdir(dir);
    t_rmdir(bk);
    passed++;
}

int main(void)
{
    t_seed();
    quick = getenv("TEST_QUICK") != NULL;
    if (quick) {
        per_writer = 150;
        steps = 150;
    }
    test_damage();
    test_archive();
    test_scavenge_race();
    test_pitr();
    test_online();
    return t_done("test_backup", passed);
}
