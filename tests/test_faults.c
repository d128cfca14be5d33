/*
 * test_faults.c - storage faults injected through os_io (src/os/os_fault.c).
 *
 * The fault table is installed (OS_FAULT_NONE) before stele_open so it
 * knows the segment descriptors; the real fault is armed on ".seg" files
 * after the open.
 *
 *   sticky faults  for SHORT_WRITE, EIO_WRITE, ENOSPC and EIO_SYNC, firing
 *                  in the 1st, 2nd and 6th append and on a segment roll
 *                  (the seal, and the first write/sync of the next segment;
 *                  an append is two writes, its group's and its chain
 *                  records' rewrite after the acknowledgement, and one sync):
 *                  the failing append returns EIO (ENOSPC for ENOSPC) with a
 *                  message, every later append / delete / tombstone returns
 *                  EREADONLY naming the original fault, reads return exactly
 *                  the acknowledged events, stats say readonly; after
 *                  os_fault_reset + close + reopen every acknowledged event
 *                  is there byte for byte, the failed append is wholly absent
 *                  (or, for EIO_SYNC, whose data reached the file, wholly
 *                  present), positions are gapless, appends work again and
 *                  `stele check` passes. A write fault in a chain rewrite
 *                  fails no append (its own was acknowledged): the next
 *                  one is read-only naming it, and after reopen the
 *                  acknowledged append is there, its chain record written;
 *   torn exit      a forked child appends until TORN_EXIT writes a prefix of
 *                  `torn_bytes` of some write and _exit(99)s: inside the
 *                  header of a new segment, in the middle of a segment, and
 *                  in a seal record, and in the in-place rewrite of a
 *                  chain record (reopen fills it in). It reports every acknowledged append on
 *                  a pipe; after reopen all of them are there, the torn
 *                  append is not, and check passes;
 *   threads        4 threads append when the fault fires: no thread gets
 *                  success for an append that is not in the store after
 *                  reopen (an append of the failed group may survive whole:
 *                  its records were in the written part of the group).
 *
 * Every event's id encodes (stream number, append number, index), and its
 * content is a function of those and the seed, so a store can be checked
 * against what was acknowledged without a copy. Replay with TEST_SEED=n.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "os/os.h"

#define SEG (64u * 1024u)
#define MAXS 4     /* streams */
#define MAXA 1024  /* appends per stream */
#define MAXN 3     /* events per append */
#define MAXDATA 2000
#define ID_MAGIC 0xA5

static uint64_t g_seed;
static int g_passed;

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ------------------------------------------------------ generated appends */

typedef struct gapp {
    size_t n;
    char stream[16];
    stele_event_in ev[MAXN];
    uint8_t id[MAXN][16];
    char type[MAXN][40];
    uint8_t data[MAXN][MAXDATA];
    uint8_t meta[MAXN][32];
    char tag[MAXN][16];
    const char *tagp[MAXN][1];
    uint64_t bytes; /* record bytes (approximate lower bound) */
} gapp;

/* Append number `ano` of stream `sno`: 1..3 events of 300..2000 bytes. */
static void gen(int sno, uint64_t ano, gapp *g)
{
    uint64_t h = mix64(g_seed ^ ((uint64_t)sno << 48) ^ (ano << 8));
    memset(g->ev, 0, sizeof g->ev);
    g->n = 1 + h % MAXN;
    g->bytes = 0;
    snprintf(g->stream, sizeof g->stream, "F-%d", sno);
    for (size_t i = 0; i < g->n; i++) {
        uint64_t x = mix64(h + i + 1);
        stele_event_in *e = &g->ev[i];
        uint8_t *id = g->id[i];
        id[0] = ID_MAGIC;
        id[1] = (uint8_t)sno;
        id[2] = (uint8_t)ano;
        id[3] = (uint8_t)(ano >> 8);
        id[4] = (uint8_t)(ano >> 16);
        id[5] = (uint8_t)(ano >> 24);
        id[6] = (uint8_t)(0x40 | i);
        id[7] = (uint8_t)g_seed;
        id[8] = (uint8_t)(0x80 | (x & 0x3f));
        for (int k = 9; k < 16; k++)
            id[k] = (uint8_t)(x >> (8 * (k - 8)));
        e->id = id;
        snprintf(g->type[i], sizeof g->type[i], "Ev%d-%" PRIu64 "-%zu", sno, ano, i);
        e->type = g->type[i];
        size_t dl = 300 + (size_t)(x % (MAXDATA - 300));
        uint64_t r = x | 1;
        for (size_t k = 0; k < dl; k++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            g->data[i][k] = (uint8_t)r;
        }
        e->data = g->data[i];
        e->data_len = dl;
        size_t ml = (size_t)((x >> 20) % sizeof g->meta[i]);
        for (size_t k = 0; k < ml; k++)
            g->meta[i][k] = (uint8_t)('a' + (x >> (k % 50)) % 26);
        e->metadata = ml ? g->meta[i] : NULL;
        e->metadata_len = ml;
        if ((x >> 30) & 1) {
            snprintf(g->tag[i], sizeof g->tag[i], "t%u", (unsigned)((x >> 32) % 100));
            g->tagp[i][0] = g->tag[i];
            e->tags = g->tagp[i];
            e->ntags = 1;
        }
        e->flags = (uint32_t)((x >> 40) & 3);
        g->bytes += 72 + dl + ml;
    }
}

static int decode_id(const uint8_t *id, int *sno, uint64_t *ano, size_t *idx)
{
    if (id[0] != ID_MAGIC || id[1] >= MAXS)
        return 0;
    *sno = id[1];
    *ano = (uint64_t)id[2] | (uint64_t)id[3] << 8 | (uint64_t)id[4] << 16 | (uint64_t)id[5] << 24;
    *idx = id[6] & 0x0f;
    return *ano < MAXA && *idx < MAXN;
}

static int event_matches(const stele_event *e, const gapp *g, size_t i)
{
    const stele_event_in *in = &g->ev[i];
    if (strcmp(e->stream, g->stream) || e->stream_len != strlen(g->stream))
        return 0;
    if (strcmp(e->type, in->type) || memcmp(e->id, g->id[i], 16) || e->flags != in->flags)
        return 0;
    if (e->data_len != in->data_len || memcmp(e->data, in->data, in->data_len))
        return 0;
    if (e->metadata_len != in->metadata_len ||
        (in->metadata_len && memcmp(e->metadata, in->metadata, in->metadata_len)))
        return 0;
    if (e->ntags != in->ntags)
        return 0;
    for (size_t k = 0; k < in->ntags; k++)
        if (strcmp(e->tags[k], in->tags[k]))
            return 0;
    return 1;
}

/* -------------------------------------------------------------- tracking */

enum { NOT_TRIED = 0, TRIED = 1 };

typedef struct attempt {
    int tried;
    int rc;
    stele_append_result res;
} attempt;

typedef struct tracker {
    int nstreams;
    attempt a[MAXS][MAXA];
    uint64_t next_rev[MAXS]; /* acknowledged revisions so far (writers' view) */
} tracker;

static tracker *tracker_new(int nstreams)
{
    tracker *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->nstreams = nstreams;
    return t;
}

/* Append `ano` of stream `sno` with the exact expected revision; records
 * the outcome. */
static int do_append(stele_db *db, tracker *t, int sno, uint64_t ano, char *msg, size_t msglen)
{
    gapp *g = malloc(sizeof *g);
    if (!g)
        abort();
    gen(sno, ano, g);
    int64_t expected = t->next_rev[sno] == 0 ? STELE_NO_STREAM : (int64_t)t->next_rev[sno] - 1;
    stele_append_result res;
    memset(&res, 0, sizeof res);
    int rc = stele_append(db, g->stream, expected, g->ev, g->n, &res);
    if (msg)
        snprintf(msg, msglen, "%s", rc ? stele_errmsg() : "");
    attempt *a = &t->a[sno][ano];
    a->tried = TRIED;
    a->rc = rc;
    a->res = res;
    if (rc == 0)
        t->next_rev[sno] += g->n;
    free(g);
    return rc;
}

/* What a store holds, as found by verify(). */
typedef struct found {
    uint64_t events;
    uint64_t next_rev[MAXS];
    int present[MAXS][MAXA];
} found;

/*
 * The store against the tracker: $all gapless from 0, every event one of
 * ours and equal to what was appended, every append whole and in revision
 * order, every acknowledged append present at its acknowledged revision and
 * position; a failed append present only if `allow_failed` and it failed
 * with EIO/ENOSPC (the group the fault hit), never if it got EREADONLY.
 */
static void verify(stele_db *db, const tracker *t, int allow_failed, found *f, const char *what)
{
    int failures = t_failures;
    memset(f, 0, sizeof *f);
    gapp *g = malloc(sizeof *g);
    if (!g)
        abort();
    int cur_s = -1;
    uint64_t cur_a = 0, cur_first = 0;
    size_t cur_seen = 0, cur_n = 0;
    uint64_t from = 0;
    int rc = 0;
#define VFAIL(...)                                                                  \
    do {                                                                            \
        fprintf(stderr, "%s: ", what);                                              \
        fprintf(stderr, __VA_ARGS__);                                               \
        fputc('\n', stderr);                                                        \
        CHECK(!"store matches the acknowledged appends");                           \
        goto out;                                                                   \
    } while (0)
    for (;;) {
        stele_page *pg = NULL;
        rc = stele_read_all(db, from, STELE_FORWARDS, 256, &pg);
        if (rc)
            VFAIL("read $all from %" PRIu64 ": %s: %s", from, stele_errname(rc), stele_errmsg());
        size_t c = stele_page_count(pg);
        for (size_t i = 0; i < c; i++) {
            const stele_event *e = stele_page_event(pg, i);
            int sno;
            uint64_t ano;
            size_t idx;
            if (e->position != f->events) {
                stele_page_free(pg);
                VFAIL("position %" PRIu64 " where %" PRIu64 " was next (gap)", e->position,
                      f->events);
            }
            if (!decode_id(e->id, &sno, &ano, &idx) || sno >= t->nstreams) {
                stele_page_free(pg);
                VFAIL("position %" PRIu64 ": an event the test never appended", e->position);
            }
            if (idx == 0) {
                if (cur_s >= 0 && cur_seen != cur_n) {
                    stele_page_free(pg);
                    VFAIL("append %d/%" PRIu64 " is not whole: %zu of %zu events", cur_s, cur_a,
                          cur_seen, cur_n);
                }
                gen(sno, ano, g);
                cur_s = sno;
                cur_a = ano;
                cur_n = g->n;
                cur_seen = 0;
                cur_first = e->position;
                if (f->present[sno][ano]) {
                    stele_page_free(pg);
                    VFAIL("append %d/%" PRIu64 " is in the log twice", sno, ano);
                }
                f->present[sno][ano] = 1;
                const attempt *a = &t->a[sno][ano];
                if (!a->tried) {
                    stele_page_free(pg);
                    VFAIL("append %d/%" PRIu64 " was never attempted", sno, ano);
                }
                if (a->rc == 0 && (a->res.first_position != e->position ||
                                   a->res.first_revision != e->revision)) {
                    stele_page_free(pg);
                    VFAIL("append %d/%" PRIu64 " acknowledged at position %" PRIu64
                          " revision %" PRIu64 ", found at %" PRIu64 " / %" PRIu64,
                          sno, ano, a->res.first_position, a->res.first_revision, e->position,
                          e->revision);
                }
                /* allow_failed 2: also an append in flight when the child
                 * died (-999), whose own write was whole before it. */
                if (a->rc != 0 &&
                    !(allow_failed && (a->rc == STELE_EIO || a->rc == STELE_ENOSPC ||
                                       (allow_failed == 2 && a->rc == -999)))) {
                    stele_page_free(pg);
                    VFAIL("append %d/%" PRIu64 " failed (%s) but is in the store at position "
                          "%" PRIu64,
                          sno, ano, stele_errname(a->rc), e->position);
                }
            } else if (sno != cur_s || ano != cur_a || idx != cur_seen) {
                stele_page_free(pg);
                VFAIL("position %" PRIu64 ": event %zu of append %d/%" PRIu64
                      " out of sequence",
                      e->position, idx, sno, ano);
            }
            if (!event_matches(e, g, idx)) {
                stele_page_free(pg);
                VFAIL("position %" PRIu64 ": event %zu of append %d/%" PRIu64
                      " differs from what was appended",
                      e->position, idx, sno, ano);
            }
            if (e->revision != f->next_rev[sno]) {
                stele_page_free(pg);
                VFAIL("position %" PRIu64 ": revision %" PRIu64 ", expected %" PRIu64,
                      e->position, e->revision, f->next_rev[sno]);
            }
            (void)cur_first;
            f->next_rev[sno]++;
            f->events++;
            cur_seen++;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || !c)
            break;
        from = next;
    }
    if (cur_s >= 0 && cur_seen != cur_n)
        VFAIL("the last append %d/%" PRIu64 " is not whole: %zu of %zu events", cur_s, cur_a,
              cur_seen, cur_n);
    /* Every acknowledged append is there. */
    for (int s = 0; s < t->nstreams; s++)
        for (uint64_t a = 0; a < MAXA; a++)
            if (t->a[s][a].tried && t->a[s][a].rc == 0 && !f->present[s][a])
                VFAIL("acknowledged append %d/%" PRIu64 " (position %" PRIu64 ") is missing", s,
                      a, t->a[s][a].res.first_position);
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    if (st.events != f->events)
        VFAIL("stats say %" PRIu64 " events, $all has %" PRIu64, st.events, f->events);
    /* The streams agree with $all. */
    for (int s = 0; s < t->nstreams; s++) {
        char name[16];
        snprintf(name, sizeof name, "F-%d", s);
        stele_stream_info info;
        rc = stele_stream_head(db, name, &info);
        if (f->next_rev[s] == 0) {
            if (rc != STELE_ENOTFOUND)
                VFAIL("stream %s has no events but its head is %s", name, stele_errname(rc));
            continue;
        }
        if (rc || info.last_revision != f->next_rev[s] - 1)
            VFAIL("stream %s: head %s, last revision %" PRIu64 ", expected %" PRIu64, name,
                  stele_errname(rc), rc ? 0 : info.last_revision, f->next_rev[s] - 1);
        uint64_t rev = 0;
        for (;;) {
            stele_page *pg;
            rc = stele_read_stream(db, name, rev, STELE_FORWARDS, 100, &pg);
            if (rc)
                VFAIL("read %s: %s: %s", name, stele_errname(rc), stele_errmsg());
            size_t c = stele_page_count(pg);
            int bad = 0;
            for (size_t i = 0; i < c; i++)
                if (stele_page_event(pg, i)->revision != rev + i)
                    bad = 1;
            uint64_t next;
            int more = stele_page_next(pg, &next);
            stele_page_free(pg);
            if (bad)
                VFAIL("read %s: revisions out of order", name);
            rev += c;
            if (!more || !c)
                break;
        }
        if (rev != f->next_rev[s])
            VFAIL("stream %s has %" PRIu64 " events, $all has %" PRIu64, name, rev,
                  f->next_rev[s]);
    }
out:
#undef VFAIL
    free(g);
    if (t_failures != failures)
        fprintf(stderr, "  (%s)\n", what);
}

/* Reopen with plain POSIX I/O, verify, append once more, close, check.
 * Returns how many failed appends are in the store (whole). */
static int reopen_and_check(const char *dir, tracker *t, int allow_failed, const char *what)
{
    CHECK(os_io == &os_posix);
    stele_options o = {.segment_size = SEG};
    stele_db *db = NULL;
    int rc = stele_open(dir, &o, &db);
    if (rc)
        fprintf(stderr, "%s: reopen: %s\n", what, stele_errmsg());
    CHECK_OK(rc);
    if (!db)
        return 0;
    found f;
    char label[256];
    snprintf(label, sizeof label, "%s, after reopen", what);
    verify(db, t, allow_failed, &f, label);
    int survivors = 0;
    for (int s = 0; s < t->nstreams; s++)
        for (uint64_t a = 0; a < MAXA; a++)
            survivors += f.present[s][a] && t->a[s][a].tried && t->a[s][a].rc != 0;
    /* Appends work again, at the next position. */
    uint64_t ano = 0;
    while (ano < MAXA && t->a[0][ano].tried)
        ano++;
    CHECK(ano < MAXA);
    t->next_rev[0] = f.next_rev[0];
    char msg[512];
    rc = do_append(db, t, 0, ano, msg, sizeof msg);
    if (rc)
        fprintf(stderr, "%s: append after reopen: %s\n", what, msg);
    CHECK_OK(rc);
    CHECK(t->a[0][ano].res.first_position == f.events);
    CHECK(t->a[0][ano].res.first_revision == f.next_rev[0]);
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(st.readonly == 0);
    stele_close(db);
    char report[1024];
    rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "%s: check: %s\n", what, stele_errmsg());
    CHECK_OK(rc);
    return survivors;
}

static const char *kind_name(os_fault_kind k)
{
    switch (k) {
    case OS_FAULT_SHORT_WRITE: return "SHORT_WRITE";
    case OS_FAULT_EIO_WRITE: return "EIO_WRITE";
    case OS_FAULT_ENOSPC: return "ENOSPC";
    case OS_FAULT_EIO_SYNC: return "EIO_SYNC";
    case OS_FAULT_TORN_EXIT: return "TORN_EXIT";
    default: return "NONE";
    }
}

/* ------------------------------------------------- single-thread faults */

/* The append number during which the first segment roll happens, with
 * appends going round-robin to 3 streams (a dry run without faults). */
static uint64_t find_roll(void)
{
    const char *dir = t_tmpdir("faults-dry");
    stele_options o = {.segment_size = SEG};
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    tracker *t = tracker_new(3);
    uint64_t roll = 0;
    for (uint64_t ano = 0; ano < MAXA; ano++) {
        CHECK_OK(do_append(db, t, (int)(ano % 3), ano, NULL, 0));
        stele_stats st;
        CHECK_OK(stele_get_stats(db, &st));
        if (st.segments > 1) {
            roll = ano;
            break;
        }
    }
    stele_close(db);
    free(t);
    t_rmdir(dir);
    CHECK(roll > 6);
    return roll;
}

/* Matching calls per append: a write of the group and, after its fsync
 * and acknowledgement, a write of its hash chain records in place
 * (local_chain.c, "Hashing after the fsync"); one fdatasync. The roll adds
 * one of each (the seal) before the append's own. */
static int is_sync(os_fault_kind kind) { return kind == OS_FAULT_EIO_SYNC; }
#define WRITES_PER_APPEND 2u

/* The fault fires at matching call `after`, inside append `expect`; with
 * `rewrite`, at the rewrite of append `expect`'s chain records, after it
 * was acknowledged: then the next append is the first to fail, read-only
 * (the fault is sticky) with a message naming the chain's write. */
static void sticky_case(os_fault_kind kind, unsigned after, uint64_t expect, int rewrite,
                        const char *where)
{
    char what[160];
    snprintf(what, sizeof what, "%s after %u (%s)", kind_name(kind), after, where);
    const char *dir = t_tmpdir("faults");
    tracker *t = tracker_new(3);
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    stele_options o = {.segment_size = SEG};
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    if (!db) {
        os_fault_reset();
        free(t);
        return;
    }
    os_fault_arm(kind, ".seg", after, 0);

    uint64_t ano = 0;
    int rc = 0;
    char msg[512] = "", fault_msg[512] = "";
    for (; ano < MAXA; ano++) {
        rc = do_append(db, t, (int)(ano % 3), ano, msg, sizeof msg);
        if (rc)
            break;
    }
    uint64_t failed_ano = ano;
    int want = rewrite ? STELE_EREADONLY : kind == OS_FAULT_ENOSPC ? STELE_ENOSPC : STELE_EIO;
    if (rc != want)
        fprintf(stderr, "%s: append %" PRIu64 " returned %s (%s), want %s\n", what, ano,
                stele_errname(rc), msg, stele_errname(want));
    CHECK(rc == want);
    CHECK(msg[0] != 0);
    CHECK(os_fault_fired() >= 1);
    if (ano != expect + (rewrite != 0))
        fprintf(stderr, "%s: append %" PRIu64 " failed, want %" PRIu64 "\n", what, ano,
                expect + (rewrite != 0));
    CHECK(ano == expect + (rewrite != 0));
    if (rewrite)
        CHECK(strstr(msg, "hash chain") != NULL);
    snprintf(fault_msg, sizeof fault_msg, "%s", msg);
    printf("  %-32s append %" PRIu64 " failed: %s: %s\n", what, ano, stele_errname(rc), msg);

    /* From now on: read-only, naming the original fault. */
    char prefix[48];
    snprintf(prefix, sizeof prefix, "%.40s", fault_msg);
    for (int i = 0; i < 3; i++) {
        ano++;
        rc = do_append(db, t, (int)(ano % 3), ano, msg, sizeof msg);
        CHECK_RC(rc, STELE_EREADONLY);
        if (!strstr(msg, prefix))
            fprintf(stderr, "%s: read-only message \"%s\" does not mention \"%s\"\n", what, msg,
                    prefix);
        CHECK(strstr(msg, prefix) != NULL);
    }
    uint64_t cur;
    CHECK_RC(stele_delete_stream(db, "F-1", STELE_ANY, &cur), STELE_EREADONLY);
    CHECK(strstr(stele_errmsg(), prefix) != NULL);
    CHECK_RC(stele_tombstone_stream(db, "F-2", STELE_ANY, &cur), STELE_EREADONLY);
    CHECK(strstr(stele_errmsg(), prefix) != NULL);
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(st.readonly == 1);
    /* Reads still work and see exactly the acknowledged appends. */
    found f;
    char label[200];
    snprintf(label, sizeof label, "%s, read-only", what);
    verify(db, t, 0, &f, label);
    CHECK(!f.present[(int)(failed_ano % 3)][failed_ano]);

    os_fault_reset();
    stele_close(db);
    int survivors = reopen_and_check(dir, t, kind == OS_FAULT_EIO_SYNC, what);
    CHECK(survivors <= 1);
    free(t);
    t_rmdir(dir);
    g_passed++;
}

static void test_sticky(uint64_t roll)
{
    static const os_fault_kind kinds[] = {OS_FAULT_SHORT_WRITE, OS_FAULT_EIO_WRITE,
                                          OS_FAULT_ENOSPC, OS_FAULT_EIO_SYNC};
    for (int k = 0; k < 4; k++) {
        unsigned per = is_sync(kinds[k]) ? 1 : WRITES_PER_APPEND, r = (unsigned)roll * per;
        sticky_case(kinds[k], 0, 0, 0, "first append");
        sticky_case(kinds[k], per, 1, 0, "second append");
        sticky_case(kinds[k], 5 * per, 5, 0, "sixth append");
        sticky_case(kinds[k], r, roll, 0, "roll: the seal");
        sticky_case(kinds[k], r + 1, roll, 0, "roll: the next segment");
        if (is_sync(kinds[k]))
            continue;
        /* The chain records' rewrite (no fsync of its own) fails. */
        sticky_case(kinds[k], 1, 0, 1, "first append's chain rewrite");
        sticky_case(kinds[k], 5 * per + 1, 5, 1, "sixth append's chain rewrite");
        sticky_case(kinds[k], r + 2, roll, 1, "roll: the chain rewrite");
    }
}

/* ------------------------------------------------------------ torn exit */

enum { MSG_ATTEMPT = 1, MSG_ACK = 2, MSG_FAIL = 3 };

typedef struct pmsg {
    int32_t type;
    int32_t rc;
    uint64_t ano;
    stele_append_result res;
} pmsg;

static void child_write(int fd, const pmsg *m)
{
    const char *p = (const char *)m;
    size_t done = 0;
    while (done < sizeof *m) {
        ssize_t n = write(fd, p + done, sizeof *m - done);
        if (n <= 0)
            _exit(5);
        done += (size_t)n;
    }
}

static void child_main(const char *dir, const char *part, unsigned after, size_t torn, int wfd)
{
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    stele_options o = {.segment_size = SEG};
    stele_db *db;
    if (stele_open(dir, &o, &db))
        _exit(2);
    os_fault_arm(OS_FAULT_TORN_EXIT, part, after, torn);
    tracker *t = tracker_new(3);
    for (uint64_t ano = 0; ano < MAXA; ano++) {
        pmsg m = {.type = MSG_ATTEMPT, .ano = ano};
        child_write(wfd, &m);
        int rc = do_append(db, t, (int)(ano % 3), ano, NULL, 0);
        m.type = rc ? MSG_FAIL : MSG_ACK;
        m.rc = rc;
        m.res = t->a[ano % 3][ano].res;
        child_write(wfd, &m);
        if (rc)
            _exit(3);
    }
    _exit(4);
}

static int torn_case_allow(const char *part, unsigned after, size_t torn, const char *where,
                           int allow_unacked);

static int torn_case(const char *part, unsigned after, size_t torn, const char *where)
{
    return torn_case_allow(part, after, torn, where, 0);
}

/* allow_unacked: the write torn comes after the append's fsync, so the
 * append it was in may be present whole though not acknowledged. */
static int torn_case_allow(const char *part, unsigned after, size_t torn, const char *where,
                           int allow_unacked)
{
    char what[160];
    snprintf(what, sizeof what, "TORN_EXIT %s after %u torn %zu (%s)", part, after, torn, where);
    const char *dir = t_tmpdir("faults-torn");
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        child_main(dir, part, after, torn, pfd[1]);
    }
    close(pfd[1]);
    tracker *t = tracker_new(3);
    int64_t torn_ano = -1;
    pmsg m;
    for (;;) {
        size_t got = 0;
        while (got < sizeof m) {
            ssize_t n = read(pfd[0], (char *)&m + got, sizeof m - got);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got < sizeof m)
            break;
        CHECK(m.ano < MAXA);
        attempt *a = &t->a[m.ano % 3][m.ano];
        if (m.type == MSG_ATTEMPT) {
            a->tried = TRIED;
            a->rc = -999; /* not acknowledged (yet) */
            torn_ano = (int64_t)m.ano;
        } else {
            a->rc = m.rc;
            a->res = m.res;
            torn_ano = -1;
        }
    }
    close(pfd[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 99)
        fprintf(stderr, "%s: child status 0x%x (want exit 99)\n", what, status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 99);
    /* It died inside an append (or, for a chain rewrite, which follows
     * the acknowledgement, perhaps between two). */
    CHECK(torn_ano >= 0 || allow_unacked);

    /* Did this case tear a segment header? (It does unless the roll made
     * the new segment itself instead of using the preallocated spare.) */
    int tore_header = 0;
    char seg1[600];
    snprintf(seg1, sizeof seg1, "%s/log/00000001.seg", dir);
    struct stat sb;
    /* (A spare renamed into place has the full size; a segment made on
     * the spot was torn inside its zero fill and is shorter.) */
    if (!strcmp(part, "00000001.seg") && stat(seg1, &sb) == 0 && sb.st_size == SEG)
        tore_header = 1;
    /* The torn append's records were cut short (torn < its size), so it
     * must be absent: it is recorded as not acknowledged. (Unless the write
     * torn was its chain rewrite: allow_unacked.) */
    reopen_and_check(dir, t, allow_unacked, what);
    free(t);
    t_rmdir(dir);
    g_passed++;
    return tore_header;
}

static void test_torn(uint64_t roll)
{
    /* The first write to segment 1 starts with its 64-byte header. */
    static const size_t header[] = {0, 1, 4, 8, 12, 16, 24, 32, 40, 56, 63, 64, 65, 72, 100, 136,
                                    200};
    int tore = 0, n = 0;
    for (size_t i = 0; i < sizeof header / sizeof header[0]; i++, n++)
        tore += torn_case("00000001.seg", 0, header[i], "segment header");
    printf("  torn segment headers: %d of %d cases tore the header write (the others tore the "
           "zero fill of a new segment)\n",
           tore, n);
    /* The 4th append's write, in the middle of segment 0. */
    static const size_t middle[] = {0, 1, 4, 7, 8, 71, 72, 73, 150, 300};
    for (size_t i = 0; i < sizeof middle / sizeof middle[0]; i++)
        torn_case(".seg", 3 * WRITES_PER_APPEND, middle[i], "mid segment");
    /* The rewrite of the 4th append's chain record, in place after its
     * fsync (acknowledged or not yet: its events are durable, so reopen
     * may find it whole): the torn record (a prefix new, the rest pending)
     * is filled in at open, and the chain verifies. */
    static const size_t rewrite[] = {0, 4, 8, 12, 72, 74, 100, 137, 143};
    for (size_t i = 0; i < sizeof rewrite / sizeof rewrite[0]; i++)
        torn_case_allow(".seg", 3 * WRITES_PER_APPEND + 1, rewrite[i], "chain rewrite", 2);
    /* The seal record at the roll. */
    static const size_t seal[] = {0, 8, 40, 79};
    for (size_t i = 0; i < sizeof seal / sizeof seal[0]; i++)
        torn_case(".seg", (unsigned)roll * WRITES_PER_APPEND, seal[i], "seal record");
}

/* -------------------------------------------------------------- threads */

#define NTHREADS 4

typedef struct targ {
    stele_db *db;
    tracker *t;
    int sno;
    int first_fail_rc;
    int after_fail_rc;
    char first_fail_msg[512];
    int success_after_fail;
} targ;

static void *thread_main(void *p)
{
    targ *a = p;
    a->first_fail_rc = 0;
    for (uint64_t ano = 0; ano + 1 < MAXA / 4; ano++) {
        char msg[512];
        int rc = do_append(a->db, a->t, a->sno, ano, msg, sizeof msg);
        if (rc) {
            a->first_fail_rc = rc;
            snprintf(a->first_fail_msg, sizeof a->first_fail_msg, "%s", msg);
            /* Once an append failed, the store is read-only. */
            a->after_fail_rc = do_append(a->db, a->t, a->sno, ano + 1, NULL, 0);
            break;
        }
    }
    return NULL;
}

static void threads_case(os_fault_kind kind, unsigned after)
{
    char what[160];
    snprintf(what, sizeof what, "%s after %u, %d threads", kind_name(kind), after, NTHREADS);
    const char *dir = t_tmpdir("faults-mt");
    tracker *t = tracker_new(NTHREADS);
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    stele_options o = {.segment_size = SEG};
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    if (!db) {
        os_fault_reset();
        free(t);
        return;
    }
    os_fault_arm(kind, ".seg", after, 0);
    pthread_t th[NTHREADS];
    targ args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].db = db;
        args[i].t = t;
        args[i].sno = i;
        CHECK(pthread_create(&th[i], NULL, thread_main, &args[i]) == 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    int want = kind == OS_FAULT_ENOSPC ? STELE_ENOSPC : STELE_EIO;
    int faulted = 0, acked = 0;
    for (int i = 0; i < NTHREADS; i++) {
        int rc = args[i].first_fail_rc;
        if (rc != want && rc != STELE_EREADONLY)
            fprintf(stderr, "%s: thread %d: first failure %s (%s)\n", what, i, stele_errname(rc),
                    args[i].first_fail_msg);
        CHECK(rc == want || rc == STELE_EREADONLY);
        /* A write fault on a group's chain rewrite (after its appends were
         * acknowledged) fails no append itself: the next ones are read-only,
         * naming it. */
        faulted += rc == want || (rc == STELE_EREADONLY &&
                                  strstr(args[i].first_fail_msg, "hash chain") != NULL);
        CHECK_RC(args[i].after_fail_rc, STELE_EREADONLY);
        for (uint64_t a = 0; a < MAXA; a++)
            acked += t->a[i][a].tried && t->a[i][a].rc == 0;
    }
    CHECK(faulted >= 1);
    CHECK(os_fault_fired() >= 1);
    printf("  %-32s %d appends acknowledged, %d thread(s) saw the fault\n", what, acked,
           faulted);
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(st.readonly == 1);
    found f;
    char label[200];
    snprintf(label, sizeof label, "%s, read-only", what);
    verify(db, t, 0, &f, label);
    os_fault_reset();
    stele_close(db);
    /* A group holds several appends in one write: a short or torn group
     * write can hold the first of them whole, and recovery keeps a whole
     * commit. So an append that got EIO/ENOSPC may be present (whole) for
     * every kind here; one that got EREADONLY never is, and every
     * acknowledged one must be. */
    int survivors = reopen_and_check(dir, t, 1, what);
    printf("  %-32s after reopen: %d failed append(s) present whole\n", "", survivors);
    free(t);
    t_rmdir(dir);
    g_passed++;
}

static void test_threads(void)
{
    static const os_fault_kind kinds[] = {OS_FAULT_SHORT_WRITE, OS_FAULT_EIO_WRITE,
                                          OS_FAULT_ENOSPC, OS_FAULT_EIO_SYNC};
    for (int k = 0; k < 4; k++) {
        threads_case(kinds[k], 3 + (unsigned)t_rand_below(10));
        threads_case(kinds[k], 15 + (unsigned)t_rand_below(30));
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_seed = t_seed();
    uint64_t roll = find_roll();
    printf("the first segment roll happens at append %" PRIu64 "\n", roll);
    printf("sticky faults\n");
    test_sticky(roll);
    printf("torn writes (TORN_EXIT in a child)\n");
    test_torn(roll);
    printf("faults under 4 appending threads\n");
    test_threads();
    return t_done("test_faults", g_passed);
}
