/*
 * property_model.h - the model-based property test's model, checks, single-
 * stream operations and run loop, shared by test_property.c (single-stream
 * operations) and test_property_multi.c (the same plus multi-stream
 * appends and DCB reads). Included once by each (static code, one
 * translation unit each, as h2o's tests include the code under test). The
 * store comes from t_store(): STELE_TEST_STORE picks the backend.
 *
 * The test, model-based, of the public API:
 *
 * An in-memory model (every event of $all, per stream: revisions -> positions,
 * truncate_before, deleted, tombstoned) is driven side by side with a real
 * store through thousands of random operations: appends with every kind of
 * expected revision, idempotent retries, id conflicts, soft deletes,
 * tombstones, paged stream and $all reads in both directions, stream heads,
 * and close+reopen. After every step the store's answers are compared with
 * the model field by field; at every reopen the whole store is compared.
 *
 * Replay a failure with TEST_SEED=n (the seed is printed first). Failures
 * print the run, step and operation.
 *
 * Semantics where stele.h is silent or ambiguous (resolved as KurrentDB does,
 * unless the header says otherwise):
 *  A1 Positions are taken by events only: soft delete and tombstone do not
 *     take a position; the first append of a store starts at position 0.
 *  A2 Appending to a soft-deleted stream (not written since): ANY and
 *     NO_STREAM succeed (the header: such a stream "has no events");
 *     STREAM_EXISTS fails with EWRONGREV, current_revision = STELE_NONE
 *     (the header reserves EDELETED for tombstones; KurrentDB answers
 *     StreamDeleted here). An exact expected revision equal to the last
 *     revision ever written succeeds, as in KurrentDB
 *     (soft_deleted_stream_allows_recreation_when_expver_is_exact); set
 *     EXACT_LAST_OK_AFTER_SOFT_DELETE to 0 for the stricter reading where a
 *     deleted stream's current revision is STELE_NONE.
 *  A3 After the recreation, truncate_before stays at the first new revision
 *     and reads return only revisions >= truncate_before.
 *  A4 Events of soft-deleted and of tombstoned streams stay in $all (no
 *     scavenging happens in this test).
 *  A5 Idempotent retries: a retry with exactly the ids of an earlier append
 *     (same order) is idempotent with STELE_ANY, STELE_STREAM_EXISTS (stream
 *     not soft-deleted), the exact revision first_revision-1, and
 *     STELE_NO_STREAM when the original append started at revision 0, even
 *     if the stream moved on or was soft-deleted since. The same ids to
 *     another stream, or with an exact expected revision that is the
 *     stream's current one but not the original place, give EIDCONFLICT; so
 *     does a new append mixing fresh ids with one already-written id (the
 *     header: "the same ids anywhere else"). Not tested, as the header does
 *     not settle them: a retry of only part of an earlier append (KurrentDB:
 *     idempotent), and NO_STREAM retries of an append that did not start at
 *     revision 0. Tombstoned stream: EDELETED first.
 *  A6 Soft delete of a stream that is soft-deleted and not written since:
 *     not pinned down; 0, ENOTFOUND or EWRONGREV are accepted, but the
 *     stream's state must not change. Soft delete of a never-written stream:
 *     ENOTFOUND (EWRONGREV also accepted when the expected revision could
 *     never match it: STREAM_EXISTS or exact).
 *  A7 Stream head of a tombstoned stream: returns 0 with tombstoned = 1,
 *     also when it was never written (last_revision/last_position NONE);
 *     truncate_before/deleted of a tombstoned stream are not checked.
 *  A8 Backwards reads from a revision/position past the end start at the
 *     last event; forwards reads past the end return an empty page (rc 0).
 *     A forwards stream read from below truncate_before starts at it.
 *  A9 All events of one append carry the same created_us.
 *
 * The multi-stream part (M1) is stated in test_property_multi.c.
 */
#ifndef STELE_PROPERTY_MODEL_H
#define STELE_PROPERTY_MODEL_H
/* Each test uses part of what follows. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include "testutil.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#ifndef EXACT_LAST_OK_AFTER_SOFT_DELETE
#define EXACT_LAST_OK_AFTER_SOFT_DELETE 1
#endif

/* TEST_QUICK=1 (valgrind): two short runs with a few reopens instead */
#define NRUNS (quick ? 2 : 3)
#define OPS_PER_RUN (quick ? 400 : 3000)
static int quick;
#define NS 40            /* streams in the pool */
#define TOMB_FIRST 28    /* streams >= this may be tombstoned */
#define PAGE_SOFT_CAP (24u << 20) /* a page may stop early only near 32 MiB */

/* ------------------------------------------------------------------ model */

typedef struct mev {
    int stream;
    uint64_t revision;
    uint8_t id[16];
    int id_known;
    const char *type;
    uint8_t *data;
    size_t data_len;
    uint8_t *meta;
    size_t meta_len;
    const char **tags;
    size_t ntags;
    uint32_t flags;
    size_t append; /* index into aps */
} mev;

typedef struct mstream {
    uint64_t *pos; /* pos[rev] = position */
    size_t nrev, cap;
    uint64_t tb;
    int deleted;
    int tombstoned;
    int ever; /* written or tombstoned */
} mstream;

typedef struct mappend {
    int stream;
    int64_t expected;
    size_t n;
    uint64_t first_rev;
    uint64_t first_pos;
    int all_ids;
    int64_t created;
    int created_known;
    int multi; /* a multi-stream append: events of several streams */
} mappend;

static stele_db *db;
static stele_options opts;
static const char *dir;
static char names[NS][300];

static mev *evs;
static size_t N, evcap;
static mstream st[NS];
static mappend *aps;
static size_t naps, apcap;

static int run;
static long step;
/* what happened, per run (so a run that exercised little is visible) */
static struct {
    long app_ok, app_wrongrev, app_deleted, retry_ok, conflict, del_ok, del_other, tomb_ok, tomb_other,
        reads, reads_all, heads, multi_ok, multi_fail, cond_fail, multi_retry, matching;
} tally;
static char opbuf[600];

/* ---------------------------------------------------------- failure aid */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL run %d step %ld op: %s\n  ", run, step, opbuf);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  last stele_errmsg: \"%s\"\n", stele_errmsg());
    t_failures++;
    t_fail_hook();
}

static const char *rcname(int rc) { return stele_errname(rc); }

static void expect_rc(int rc, int want, const char *what)
{
    if (rc != want)
        fail("%s returned %d (%s), want %d (%s)", what, rc, rcname(rc), want, rcname(want));
    if (rc != 0 && stele_errmsg()[0] == '\0')
        fail("%s failed with %s but stele_errmsg() is empty", what, rcname(rc));
}

static void expect_rc_in(int rc, const int *set, size_t nset, const char *what)
{
    char buf[200] = "";
    for (size_t i = 0; i < nset; i++) {
        if (rc == set[i]) {
            if (rc != 0 && stele_errmsg()[0] == '\0')
                fail("%s failed with %s but stele_errmsg() is empty", what, rcname(rc));
            return;
        }
        size_t l = strlen(buf);
        snprintf(buf + l, sizeof buf - l, "%s%s", i ? "/" : "", rcname(set[i]));
    }
    fail("%s returned %d (%s), want one of %s", what, rc, rcname(rc), buf);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return p;
}

static void hexid(const uint8_t id[16], char out[37]) { stele_uuid_format(id, out); }

static char *exp_str(int64_t e, char *buf, size_t len)
{
    if (e == STELE_ANY)
        snprintf(buf, len, "ANY");
    else if (e == STELE_NO_STREAM)
        snprintf(buf, len, "NO_STREAM");
    else if (e == STELE_STREAM_EXISTS)
        snprintf(buf, len, "STREAM_EXISTS");
    else
        snprintf(buf, len, "%" PRId64, e);
    return buf;
}

static const char *u64s(uint64_t v, char *buf)
{
    if (v == STELE_NONE)
        return "NONE";
    sprintf(buf, "%" PRIu64, v);
    return buf;
}

/* ------------------------------------------------------------ the pools */

static const char *type_pool[8];
static const char *tag_pool[12];
static char long_type[256], long_tag[256];
static char many_tags[64][16];

static void init_pools(void)
{
    static const char *base_names[] = {
        "Order-1", "Order-2", "Customer-\xce\xb1", /* α */
        "\xd0\x97\xd0\xb0\xd0\xba\xd0\xb0\xd0\xb7-7", /* Заказ-7 */
        "\xe6\xb3\xa8\xe6\x96\x87-3", /* 注文-3 */
        "emoji-\xf0\x9f\xa6\x80-stream", /* 🦀 */
        "x", "\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9-Stra\xc3\x9f" "e", "a b c", "Order-10",
    };
    int i = 0;
    for (; i < (int)(sizeof base_names / sizeof *base_names); i++)
        snprintf(names[i], sizeof names[i], "%s", base_names[i]);
    for (; i < 20; i++)
        snprintf(names[i], sizeof names[i], "acct-%d", i);
    /* exactly 255 bytes, multibyte: "long-" + 125 x "é" */
    strcpy(names[i], "long-");
    for (int k = 0; k < 125; k++)
        strcat(names[i], "\xc3\xa9");
    i++;
    snprintf(names[i++], sizeof names[0], "mixed-\xc3\xbc-\xe2\x82\xac-\xf0\x9d\x84\x9e"); /* ü € 𝄞 */
    snprintf(names[i++], sizeof names[0], "Cart-%s", "42");
    snprintf(names[i++], sizeof names[0], "Cart-%s", "43");
    for (; i < 32; i++)
        snprintf(names[i], sizeof names[i], "tomb-%d", i);
    for (; i < NS; i++)
        snprintf(names[i], sizeof names[i], "reserved-\xe2\x9c\x93-%d", i); /* ✓ */
    if (strlen(names[20]) != 255) {
        fprintf(stderr, "bad test setup: long name is %zu bytes\n", strlen(names[20]));
        abort();
    }

    memset(long_type, 'T', 255);
    long_type[255] = 0;
    memset(long_tag, 'g', 255);
    long_tag[255] = 0;
    type_pool[0] = "OrderPlaced";
    type_pool[1] = "ItemAdded";
    type_pool[2] = "Zahlung-eingegangen-\xc3\xbc";
    type_pool[3] = "\xe9\xa1\x9e\xe5\x9e\x8b"; /* 類型 */
    type_pool[4] = long_type;
    type_pool[5] = "a";
    type_pool[6] = "with space";
    type_pool[7] = "Snapshot.v2";
    tag_pool[0] = "tag1";
    tag_pool[1] = "region:eu";
    tag_pool[2] = "\xe5\xae\xa2\xe6\x88\xb7"; /* 客户 */
    tag_pool[3] = long_tag;
    tag_pool[4] = "t";
    tag_pool[5] = "customer:42";
    tag_pool[6] = "x y";
    tag_pool[7] = "dup";
    tag_pool[8] = "\xf0\x9f\x8f\xb7"; /* 🏷 */
    tag_pool[9] = "tenant=7";
    tag_pool[10] = "z";
    tag_pool[11] = "priority/high";
    for (int k = 0; k < 64; k++)
        snprintf(many_tags[k], sizeof many_tags[k], "many-%02d", k);
}

/* ----------------------------------------------------------- model ops */

static void model_reset(void)
{
    for (size_t i = 0; i < N; i++) {
        free(evs[i].data);
        free(evs[i].meta);
        free(evs[i].tags);
    }
    free(evs);
    evs = NULL;
    N = evcap = 0;
    for (int s = 0; s < NS; s++)
        free(st[s].pos);
    memset(st, 0, sizeof st);
    free(aps);
    aps = NULL;
    naps = apcap = 0;
}

static int stream_live(int s) { return st[s].nrev > 0 && !st[s].deleted && !st[s].tombstoned; }

/* current revision as EWRONGREV reports it */
static uint64_t stream_cur(int s) { return stream_live(s) ? st[s].nrev - 1 : STELE_NONE; }

static uint64_t stream_last(int s) { return st[s].nrev ? st[s].nrev - 1 : STELE_NONE; }

/* Would an append/tombstone with `e` pass the expected-revision check? */
static int expected_ok(int s, int64_t e)
{
    int live = stream_live(s);
    if (e == STELE_ANY)
        return 1;
    if (e == STELE_NO_STREAM)
        return !live;
    if (e == STELE_STREAM_EXISTS)
        return live;
    if (e < 0)
        return 0;
    if (live)
        return (uint64_t)e == st[s].nrev - 1;
    if (st[s].deleted && st[s].nrev > 0 && EXACT_LAST_OK_AFTER_SOFT_DELETE)
        return (uint64_t)e == st[s].nrev - 1;
    return 0;
}

static void stream_push(int s, uint64_t pos)
{
    mstream *m = &st[s];
    if (m->nrev == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->pos = xrealloc(m->pos, m->cap * sizeof *m->pos);
    }
    m->pos[m->nrev++] = pos;
}

/* ------------------------------------------------------ event comparing */

static size_t ev_bytes(const stele_event *e)
{
    size_t b = e->data_len + e->metadata_len + e->type_len + e->stream_len;
    for (size_t i = 0; i < e->ntags; i++)
        b += e->tags[i] ? strlen(e->tags[i]) : 0;
    return b + 64;
}

static size_t mev_bytes(const mev *m)
{
    size_t b = m->data_len + m->meta_len + strlen(m->type) + strlen(names[m->stream]);
    for (size_t i = 0; i < m->ntags; i++)
        b += strlen(m->tags[i]);
    return b + 64;
}

static int is_uuidv7(const uint8_t id[16])
{
    return (id[6] >> 4) == 7 && (id[8] & 0xc0) == 0x80;
}

static void check_event(const stele_event *e, uint64_t pos, const char *where)
{
    char a[37], b[37], t1[24], t2[24];
    if (!e) {
        fail("%s: stele_page_event returned NULL for position %" PRIu64, where, pos);
        return;
    }
    if (pos >= N) {
        fail("%s: got an event at position %" PRIu64 " but the model has only %zu events", where,
             e->position, N);
        return;
    }
    mev *m = &evs[pos];
    const char *sname = names[m->stream];
    if (e->position != pos)
        fail("%s: position %s, want %s", where, u64s(e->position, t1), u64s(pos, t2));
    if (e->revision != m->revision)
        fail("%s: position %" PRIu64 ": revision %s, want %s", where, pos, u64s(e->revision, t1),
             u64s(m->revision, t2));
    if (!e->stream || e->stream_len != strlen(sname) || memcmp(e->stream, sname, e->stream_len) != 0 ||
        e->stream[e->stream_len] != 0)
        fail("%s: position %" PRIu64 ": stream \"%s\" (len %zu), want \"%s\"", where, pos,
             e->stream ? e->stream : "(null)", e->stream_len, sname);
    if (!e->type || e->type_len != strlen(m->type) || memcmp(e->type, m->type, e->type_len) != 0 ||
        e->type[e->type_len] != 0)
        fail("%s: position %" PRIu64 ": type \"%s\" (len %zu), want \"%s\"", where, pos,
             e->type ? e->type : "(null)", e->type_len, m->type);
    if (e->data_len != m->data_len || (m->data_len && (!e->data || memcmp(e->data, m->data, m->data_len) != 0)))
        fail("%s: position %" PRIu64 ": data differs (len %zu, want %zu)", where, pos, e->data_len,
             m->data_len);
    if (e->metadata_len != m->meta_len ||
        (m->meta_len && (!e->metadata || memcmp(e->metadata, m->meta, m->meta_len) != 0)))
        fail("%s: position %" PRIu64 ": metadata differs (len %zu, want %zu)", where, pos,
             e->metadata_len, m->meta_len);
    if (e->flags != m->flags)
        fail("%s: position %" PRIu64 ": flags %u, want %u", where, pos, e->flags, m->flags);
    if (e->ntags != m->ntags) {
        fail("%s: position %" PRIu64 ": %zu tags, want %zu", where, pos, e->ntags, m->ntags);
    } else {
        for (size_t i = 0; i < m->ntags; i++)
            if (!e->tags || !e->tags[i] || strcmp(e->tags[i], m->tags[i]) != 0)
                fail("%s: position %" PRIu64 ": tag %zu is \"%s\", want \"%s\"", where, pos, i,
                     e->tags && e->tags[i] ? e->tags[i] : "(null)", m->tags[i]);
    }
    if (m->id_known) {
        if (memcmp(e->id, m->id, 16) != 0) {
            hexid(e->id, a);
            hexid(m->id, b);
            fail("%s: position %" PRIu64 ": id %s, want %s", where, pos, a, b);
        }
    } else {
        static const uint8_t nil[16];
        hexid(e->id, a);
        if (memcmp(e->id, nil, 16) == 0 || !is_uuidv7(e->id))
            fail("%s: position %" PRIu64 ": server-made id %s is not a UUIDv7", where, pos, a);
        memcpy(m->id, e->id, 16);
        m->id_known = 1;
    }
    mappend *ap = &aps[m->append];
    if (ap->created_known) {
        if (e->created_us != ap->created)
            fail("%s: position %" PRIu64 ": created_us %" PRId64 ", want %" PRId64
                 " (same as the rest of its append, and stable)",
                 where, pos, e->created_us, ap->created);
    } else {
        int64_t now = (int64_t)time(NULL) * 1000000;
        if (e->created_us < 1577836800LL * 1000000 || e->created_us > now + 86400LL * 1000000)
            fail("%s: position %" PRIu64 ": created_us %" PRId64 " is not a plausible time", where,
                 pos, e->created_us);
        ap->created = e->created_us;
        ap->created_known = 1;
    }
}

/* ------------------------------------------------------------- reading */

/*
 * Read with paging, comparing against `want` (positions, in the order the
 * read must return them). `rev_mode`: stream read (next = revision) or $all.
 * At most `maxpages` pages are read.
 */
static void paged_read(int s, uint64_t from, int dir_, size_t limit, const uint64_t *want,
                       size_t nwant, int maxpages, const char *what)
{
    size_t got = 0;
    int empties = 0;
    char where[700];
    for (int pg = 0; pg < maxpages; pg++) {
        stele_page *page = (stele_page *)0x1;
        int rc = s >= 0 ? stele_read_stream(db, names[s], from, dir_, limit, &page)
                        : stele_read_all(db, from, dir_, limit, &page);
        snprintf(where, sizeof where, "%s page %d (from %" PRIu64 ", %s, limit %zu)", what, pg, from,
                 dir_ == STELE_FORWARDS ? "fwd" : "bwd", limit);
        if (rc != 0) {
            fail("%s: rc %d (%s), want 0", where, rc, rcname(rc));
            return;
        }
        if (!page || page == (stele_page *)0x1) {
            fail("%s: rc 0 but no page", where);
            return;
        }
        size_t cnt = stele_page_count(page);
        size_t remaining = nwant - got;
        size_t bytes = 0;
        if (cnt > limit)
            fail("%s: %zu events in a page with limit %zu", where, cnt, limit);
        if (cnt > remaining)
            fail("%s: %zu events, but only %zu remain in the model", where, cnt, remaining);
        for (size_t i = 0; i < cnt && got + i < nwant; i++) {
            const stele_event *e = stele_page_event(page, i);
            check_event(e, want[got + i], where);
            if (e)
                bytes += ev_bytes(e);
        }
        size_t full = remaining < limit ? remaining : limit;
        if (cnt < full) {
            size_t nextb = mev_bytes(&evs[want[got + cnt]]);
            if (bytes + nextb < PAGE_SOFT_CAP)
                fail("%s: short page: %zu events (%zu bytes), want %zu", where, cnt, bytes, full);
        }
        got += cnt;
        uint64_t next = 0xdeadbeef;
        int more = stele_page_next(page, &next);
        uint64_t lastkey = 0;
        if (cnt > 0) {
            const stele_event *le = stele_page_event(page, cnt - 1);
            lastkey = s >= 0 ? le->revision : le->position;
        }
        stele_page_free(page);
        if (more != 0 && more != 1)
            fail("%s: stele_page_next returned %d", where, more);
        if (!more) {
            if (got < nwant)
                fail("%s: stele_page_next says the end, but %zu more events exist", where,
                     nwant - got);
            return;
        }
        if (cnt == 0) {
            /* "may follow": an empty page after a "more" is allowed once */
            if (got < nwant)
                fail("%s: empty page with %zu events still to come", where, nwant - got);
            if (++empties > 1)
                fail("%s: stele_page_next keeps returning 1 on empty pages", where);
            return;
        }
        if (dir_ == STELE_FORWARDS) {
            if (next != lastkey + 1)
                fail("%s: next %" PRIu64 ", want %" PRIu64, where, next, lastkey + 1);
        } else {
            if (lastkey == 0)
                fail("%s: backwards read reached 0 but stele_page_next returned 1 (next %" PRIu64 ")",
                     where, next);
            else if (next != lastkey - 1)
                fail("%s: next %" PRIu64 ", want %" PRIu64, where, next, lastkey - 1);
        }
        from = next;
    }
}

/* Expected positions of a stream read. */
static size_t stream_expect(int s, uint64_t from, int dir_, uint64_t **out)
{
    mstream *m = &st[s];
    size_t n = 0;
    uint64_t *v = xmalloc((m->nrev + 1) * sizeof *v);
    if (m->nrev > 0) {
        uint64_t last = m->nrev - 1;
        if (dir_ == STELE_FORWARDS) {
            uint64_t r = from < m->tb ? m->tb : from;
            for (; r <= last; r++)
                v[n++] = m->pos[r];
        } else {
            uint64_t r = from > last ? last : from;
            if (r >= m->tb) {
                for (;; r--) {
                    v[n++] = m->pos[r];
                    if (r == m->tb)
                        break;
                }
            }
        }
    }
    *out = v;
    return n;
}

static void do_stream_read(int s, uint64_t from, int dir_, size_t limit, int maxpages)
{
    mstream *m = &st[s];
    char what[400], t1[24];
    snprintf(what, sizeof what, "read_stream(\"%s\")", names[s]);
    if (m->tombstoned || !m->ever || m->deleted) {
        int want = m->tombstoned ? STELE_EDELETED : STELE_ENOTFOUND;
        stele_page *page = NULL;
        int rc = stele_read_stream(db, names[s], from, dir_, limit, &page);
        if (rc != want)
            fail("%s from %s %s: rc %d (%s), want %s", what, u64s(from, t1),
                 dir_ ? "bwd" : "fwd", rc, rcname(rc), rcname(want));
        else if (stele_errmsg()[0] == 0)
            fail("%s: failed with %s but stele_errmsg() is empty", what, rcname(rc));
        if (rc == 0)
            stele_page_free(page);
        return;
    }
    uint64_t *want;
    size_t n = stream_expect(s, from, dir_, &want);
    paged_read(s, from, dir_, limit, want, n, maxpages, what);
    free(want);
}

static void do_all_read(uint64_t from, int dir_, size_t limit, int maxpages)
{
    size_t n = 0;
    uint64_t *want = xmalloc((N + 1) * sizeof *want);
    if (dir_ == STELE_FORWARDS) {
        for (uint64_t p = from; p < N; p++)
            want[n++] = p;
    } else if (N > 0) {
        uint64_t p = from >= N ? N - 1 : from;
        for (;; p--) {
            want[n++] = p;
            if (p == 0)
                break;
        }
    }
    paged_read(-1, from, dir_, limit, want, n, maxpages, "read_all");
    free(want);
}

static void check_head(int s)
{
    stele_stream_info info;
    char t1[24], t2[24];
    memset(&info, 0xA5, sizeof info);
    int rc = stele_stream_head(db, names[s], &info);
    mstream *m = &st[s];
    if (!m->ever) {
        if (rc != STELE_ENOTFOUND)
            fail("stream_head(\"%s\") of a never-written stream: rc %d (%s), want ENOTFOUND",
                 names[s], rc, rcname(rc));
        return;
    }
    if (rc != 0) {
        fail("stream_head(\"%s\"): rc %d (%s), want 0", names[s], rc, rcname(rc));
        return;
    }
    uint64_t last = stream_last(s);
    uint64_t lastpos = m->nrev ? m->pos[m->nrev - 1] : STELE_NONE;
    if (info.last_revision != last)
        fail("stream_head(\"%s\"): last_revision %s, want %s", names[s], u64s(info.last_revision, t1),
             u64s(last, t2));
    if (info.last_position != lastpos)
        fail("stream_head(\"%s\"): last_position %s, want %s", names[s],
             u64s(info.last_position, t1), u64s(lastpos, t2));
    if (info.tombstoned != m->tombstoned)
        fail("stream_head(\"%s\"): tombstoned %d, want %d", names[s], info.tombstoned, m->tombstoned);
    if (!m->tombstoned) {
        if (info.truncate_before != m->tb)
            fail("stream_head(\"%s\"): truncate_before %s, want %s", names[s],
                 u64s(info.truncate_before, t1), u64s(m->tb, t2));
        if (info.deleted != m->deleted)
            fail("stream_head(\"%s\"): deleted %d, want %d", names[s], info.deleted, m->deleted);
    }
}

static void check_stats(void)
{
    stele_stats s;
    memset(&s, 0xA5, sizeof s);
    int rc = stele_get_stats(db, &s);
    if (rc != 0) {
        fail("stele_get_stats: rc %d (%s)", rc, rcname(rc));
        return;
    }
    uint64_t streams = 0;
    for (int i = 0; i < NS; i++)
        streams += st[i].ever;
    if (s.events != N)
        fail("stats.events %" PRIu64 ", want %zu", s.events, N);
    if (s.streams != streams)
        fail("stats.streams %" PRIu64 ", want %" PRIu64, s.streams, streams);
    if (s.readonly != 0)
        fail("stats.readonly %d", s.readonly);
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, 16); }

static void full_verify(int streams_too)
{
    snprintf(opbuf, sizeof opbuf, "full verification (N=%zu)", N);
    check_stats();
    static const size_t full_lims[] = {13, 500, 4000};
    /* Another backend pays a round trip per page (hundreds of them for a
     * whole-store read in 13-event pages, at every third reopen): there
     * the full reads use the big pages, and small pages are checked by
     * op_read_all's random reads. */
    size_t lim = t_store_is_local() ? full_lims[t_rand_below(3)] : full_lims[1 + t_rand_below(2)];
    do_all_read(0, STELE_FORWARDS, lim, 1000000);
    if (N > 0 && t_rand_below(2))
        do_all_read(STELE_END, STELE_BACKWARDS, 2000, 1000000);
    for (int s = 0; s < NS; s++) {
        check_head(s);
        if (streams_too) {
            do_stream_read(s, 0, STELE_FORWARDS, 500, 1000000);
            do_stream_read(s, STELE_END, STELE_BACKWARDS, 1 + t_rand_below(700), 1000000);
        }
    }
    /* every id unique ($all covered every event, so all ids are known) */
    uint8_t(*ids)[16] = xmalloc((N + 1) * 16);
    for (size_t i = 0; i < N; i++) {
        if (!evs[i].id_known)
            fail("event %zu id still unknown after a full read", i);
        memcpy(ids[i], evs[i].id, 16);
    }
    qsort(ids, N, 16, cmp_id);
    for (size_t i = 1; i < N; i++)
        if (memcmp(ids[i - 1], ids[i], 16) == 0) {
            char a[37];
            hexid(ids[i], a);
            fail("id %s is used by two events", a);
        }
    free(ids);
}

/* ---------------------------------------------------------- operations */

static int pick_stream(void)
{
    /* mostly streams that are never tombstoned */
    if (t_rand_below(100) < 15)
        return TOMB_FIRST + (int)t_rand_below(NS - TOMB_FIRST);
    return (int)t_rand_below(TOMB_FIRST);
}

static size_t pick_size(size_t small_max)
{
    uint64_t r = t_rand_below(100);
    if (r < 2)
        return t_rand_below(100 * 1024 + 1);
    if (r < 10)
        return 0;
    return t_rand_below(small_max + 1);
}

static void fill_random(uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i + 8 <= n) {
        uint64_t r = t_rand();
        memcpy(p + i, &r, 8);
        i += 8;
    }
    if (i < n) {
        uint64_t r = t_rand();
        memcpy(p + i, &r, n - i);
    }
}

static int64_t pick_expected(int s, int *kind)
{
    /* 0 any, 1 no_stream, 2 stream_exists, 3 exact correct, 4 exact wrong */
    int k = (int)t_rand_below(10);
    k = k < 2 ? 0 : k < 3 ? 1 : k < 4 ? 2 : k < 8 ? 3 : 4;
    *kind = k;
    mstream *m = &st[s];
    switch (k) {
    case 0:
        return STELE_ANY;
    case 1:
        return STELE_NO_STREAM;
    case 2:
        return STELE_STREAM_EXISTS;
    case 3:
        if (stream_live(s) || (m->deleted && EXACT_LAST_OK_AFTER_SOFT_DELETE && m->nrev))
            return (int64_t)(m->nrev - 1);
        return STELE_NO_STREAM;
    default: {
        uint64_t r = t_rand_below(4);
        if (r == 0)
            return (int64_t)1000000000000LL;
        if (m->nrev == 0)
            return (int64_t)t_rand_below(5);
        if (r == 1 && m->nrev > 1)
            return (int64_t)t_rand_below(m->nrev - 1); /* below the last */
        return (int64_t)(m->nrev + t_rand_below(3)); /* past the last */
    }
    }
}

typedef struct built {
    stele_event_in *in;
    uint8_t (*ids)[16];
    uint8_t **data, **meta;
    const char ***tags;
    size_t n;
    int all_ids;
} built;

static void build_events(built *b, size_t n)
{
    b->n = n;
    b->in = calloc(n, sizeof *b->in);
    b->ids = calloc(n, 16);
    b->data = calloc(n, sizeof *b->data);
    b->meta = calloc(n, sizeof *b->meta);
    b->tags = calloc(n, sizeof *b->tags);
    int idmode = (int)t_rand_below(20); /* 0..16 client ids, 17,18 NULL, 19 mixed */
    b->all_ids = idmode <= 16;
    for (size_t i = 0; i < n; i++) {
        stele_event_in *e = &b->in[i];
        fill_random(b->ids[i], 16);
        b->ids[i][6] = (uint8_t)((b->ids[i][6] & 0x0f) | 0x40);
        b->ids[i][8] = (uint8_t)((b->ids[i][8] & 0x3f) | 0x80);
        int withid = idmode <= 16 ? 1 : idmode <= 18 ? 0 : (int)t_rand_below(2);
        e->id = withid ? b->ids[i] : NULL;
        e->type = type_pool[t_rand_below(8)];
        size_t dl = pick_size(2048), ml = t_rand_below(3) ? pick_size(512) : 0;
        b->data[i] = xmalloc(dl);
        b->meta[i] = xmalloc(ml);
        fill_random(b->data[i], dl);
        fill_random(b->meta[i], ml);
        e->data = b->data[i];
        e->data_len = dl;
        e->metadata = b->meta[i];
        e->metadata_len = ml;
        /* distinct tags: 0..3 from the pool, or now and then the maximum, 64 */
        size_t nt = t_rand_below(50) == 0 ? 64 : t_rand_below(4);
        b->tags[i] = xmalloc((nt + 1) * sizeof(char *));
        if (nt == 64) {
            for (size_t k = 0; k < nt; k++)
                b->tags[i][k] = many_tags[k];
        } else {
            size_t first = t_rand_below(12);
            for (size_t k = 0; k < nt; k++)
                b->tags[i][k] = tag_pool[(first + k * 5) % 12];
        }
        e->tags = nt || t_rand_below(2) ? (const char *const *)b->tags[i] : NULL;
        e->ntags = nt;
        e->flags = (uint32_t)t_rand_below(4);
    }
}

static void built_free(built *b, int keep_payload)
{
    if (!keep_payload) {
        for (size_t i = 0; i < b->n; i++) {
            free(b->data[i]);
            free(b->meta[i]);
            free(b->tags[i]);
        }
    }
    free(b->in);
    free(b->ids);
    free(b->data);
    free(b->meta);
    free(b->tags);
}

/* Move a successful append into the model. */
static void model_commit(int s, int64_t expected, built *b)
{
    if (naps == apcap) {
        apcap = apcap ? apcap * 2 : 256;
        aps = xrealloc(aps, apcap * sizeof *aps);
    }
    mappend *ap = &aps[naps];
    memset(ap, 0, sizeof *ap);
    ap->stream = s;
    ap->expected = expected;
    ap->n = b->n;
    ap->first_rev = st[s].nrev;
    ap->first_pos = N;
    ap->all_ids = b->all_ids;
    for (size_t i = 0; i < b->n; i++) {
        if (N == evcap) {
            evcap = evcap ? evcap * 2 : 1024;
            evs = xrealloc(evs, evcap * sizeof *evs);
        }
        mev *m = &evs[N];
        memset(m, 0, sizeof *m);
        m->stream = s;
        m->revision = st[s].nrev;
        if (b->in[i].id) {
            memcpy(m->id, b->in[i].id, 16);
            m->id_known = 1;
        }
        m->type = b->in[i].type;
        m->data = b->data[i];
        m->data_len = b->in[i].data_len;
        m->meta = b->meta[i];
        m->meta_len = b->in[i].metadata_len;
        m->tags = b->tags[i];
        m->ntags = b->in[i].ntags;
        m->flags = b->in[i].flags;
        m->append = naps;
        stream_push(s, N);
        N++;
    }
    naps++;
    st[s].ever = 1;
    st[s].deleted = 0;
}

static void check_result(const stele_append_result *res, const mappend *ap, int idem, const char *what)
{
    char t1[24], t2[24];
    uint64_t last_rev = ap->first_rev + ap->n - 1, last_pos = ap->first_pos + ap->n - 1;
    if (res->first_revision != ap->first_rev)
        fail("%s: first_revision %s, want %s", what, u64s(res->first_revision, t1), u64s(ap->first_rev, t2));
    if (res->last_revision != last_rev)
        fail("%s: last_revision %s, want %s", what, u64s(res->last_revision, t1), u64s(last_rev, t2));
    if (res->first_position != ap->first_pos)
        fail("%s: first_position %s, want %s", what, u64s(res->first_position, t1), u64s(ap->first_pos, t2));
    if (res->last_position != last_pos)
        fail("%s: last_position %s, want %s", what, u64s(res->last_position, t1), u64s(last_pos, t2));
    if (res->idempotent != idem)
        fail("%s: idempotent %d, want %d", what, res->idempotent, idem);
}

/* After a step that may have written: store size and the stream's head. */
static void post_write_checks(int s)
{
    check_stats();
    check_head(s);
}

static void op_append(void)
{
    int s = pick_stream();
    size_t r = t_rand_below(100);
    size_t n = r < 50 ? 1 + t_rand_below(3) : r < 85 ? 4 + t_rand_below(7) : 11 + t_rand_below(10);
    int kind;
    int64_t e = pick_expected(s, &kind);
    built b;
    build_events(&b, n);
    char es[32];
    snprintf(opbuf, sizeof opbuf, "append %zu events to \"%s\" expected %s (%s ids)", n, names[s],
             exp_str(e, es, sizeof es), b.all_ids ? "client" : "some server");

    int want;
    if (st[s].tombstoned)
        want = STELE_EDELETED;
    else if (!expected_ok(s, e))
        want = STELE_EWRONGREV;
    else
        want = 0;

    stele_append_result res;
    memset(&res, 0xA5, sizeof res);
    int rc = stele_append(db, names[s], e, b.in, n, &res);
    expect_rc(rc, want, "stele_append");
    tally.app_ok += rc == 0;
    tally.app_wrongrev += rc == STELE_EWRONGREV;
    tally.app_deleted += rc == STELE_EDELETED;
    if (rc == STELE_EWRONGREV && want == STELE_EWRONGREV) {
        char t1[24], t2[24];
        if (res.current_revision != stream_cur(s))
            fail("EWRONGREV current_revision %s, want %s", u64s(res.current_revision, t1),
                 u64s(stream_cur(s), t2));
    }
    if (rc == 0 && want == 0) {
        model_commit(s, e, &b);
        check_result(&res, &aps[naps - 1], 0, "append result");
        built_free(&b, 1);
        /* the new events, from both ends */
        do_all_read(STELE_END, STELE_BACKWARDS, n, 1);
        do_stream_read(s, STELE_END, STELE_BACKWARDS, n, 1);
    } else {
        built_free(&b, 0);
    }
    post_write_checks(s);
}

static void rebuild_from_model(const mappend *ap, built *b)
{
    b->n = ap->n;
    b->in = calloc(ap->n, sizeof *b->in);
    b->ids = calloc(ap->n, 16);
    b->data = NULL;
    b->meta = NULL;
    b->tags = NULL;
    for (size_t i = 0; i < ap->n; i++) {
        const mev *m = &evs[ap->first_pos + i];
        memcpy(b->ids[i], m->id, 16);
        b->in[i].id = b->ids[i];
        b->in[i].type = m->type;
        b->in[i].data = m->data;
        b->in[i].data_len = m->data_len;
        b->in[i].metadata = m->meta;
        b->in[i].metadata_len = m->meta_len;
        b->in[i].tags = (const char *const *)m->tags;
        b->in[i].ntags = m->ntags;
        b->in[i].flags = m->flags;
    }
}

static void free_rebuilt(built *b)
{
    free(b->in);
    free(b->ids);
}

static long pick_client_append(void)
{
    for (int tries = 0; tries < 20 && naps > 0; tries++) {
        size_t a = t_rand_below(naps);
        if (aps[a].all_ids && !aps[a].multi)
            return (long)a;
    }
    return -1;
}

/* Repeat an earlier append: must be idempotent. */
static void op_retry(void)
{
    long a = pick_client_append();
    if (a < 0)
        return;
    const mappend *ap = &aps[a];
    int s = ap->stream;
    int64_t e;
    int v = (int)t_rand_below(4);
    if (v == 0) {
        e = ap->expected;
        if (e == STELE_NO_STREAM && ap->first_rev != 0)
            e = STELE_ANY;
        if (e == STELE_STREAM_EXISTS && st[s].deleted)
            e = STELE_ANY;
    } else if (v == 1) {
        e = STELE_ANY;
    } else if (v == 2) {
        e = ap->first_rev == 0 ? STELE_NO_STREAM : (int64_t)(ap->first_rev - 1);
    } else {
        e = st[s].deleted ? STELE_ANY : STELE_STREAM_EXISTS;
    }
    char es[32], es2[32];
    snprintf(opbuf, sizeof opbuf,
             "idempotent retry of append #%ld (%zu events to \"%s\" at revision %" PRIu64
             ", position %" PRIu64 ", originally expected %s) with expected %s",
             a, ap->n, names[s], ap->first_rev, ap->first_pos, exp_str(ap->expected, es2, sizeof es2),
             exp_str(e, es, sizeof es));
    built b;
    rebuild_from_model(ap, &b);
    stele_append_result res;
    memset(&res, 0xA5, sizeof res);
    int rc = stele_append(db, names[s], e, b.in, b.n, &res);
    free_rebuilt(&b);
    if (st[s].tombstoned) {
        expect_rc(rc, STELE_EDELETED, "stele_append (retry to a tombstoned stream)");
    } else {
        expect_rc(rc, 0, "stele_append (idempotent retry)");
        if (rc == 0)
            check_result(&res, ap, 1, "idempotent retry result");
        tally.retry_ok += rc == 0;
    }
    post_write_checks(s);
}

/* Reuse ids where they are not allowed: EIDCONFLICT, nothing written. */
static void op_conflict(void)
{
    long a = pick_client_append();
    if (a < 0)
        return;
    const mappend *ap = &aps[a];
    int s = ap->stream;
    int v = (int)t_rand_below(3);
    int target = s;
    int64_t e = STELE_ANY;
    built b;
    if (v == 1) {
        /* the stream's current revision, but not the original place */
        if (!stream_live(s))
            v = 0;
        else
            e = (int64_t)(st[s].nrev - 1);
    }
    if (v == 0) {
        /* the same events to another stream */
        for (int tries = 0; tries < 20; tries++) {
            target = pick_stream();
            if (target != s && !st[target].tombstoned)
                break;
        }
        if (target == s || st[target].tombstoned)
            return;
    }
    if (v == 2) {
        /* a new append with one already-written id among fresh ones */
        for (int tries = 0; tries < 20; tries++) {
            target = pick_stream();
            if (!st[target].tombstoned)
                break;
        }
        if (st[target].tombstoned)
            return;
        /* In the original stream a lone reused id would be a (partial)
         * retry of the original append, not a conflict: keep fresh ids
         * beside it there. */
        size_t n = target == s ? 2 + t_rand_below(4) : 1 + t_rand_below(5);
        build_events(&b, n);
        size_t k = t_rand_below(n);
        const mev *old = &evs[ap->first_pos + t_rand_below(ap->n)];
        memcpy(b.ids[k], old->id, 16);
        for (size_t i = 0; i < n; i++)
            b.in[i].id = b.ids[i]; /* all client ids: the others are fresh */
        char hid[37];
        hexid(old->id, hid);
        snprintf(opbuf, sizeof opbuf,
                 "append %zu new events to \"%s\" expected ANY, event %zu reusing id %s of position %" PRIu64,
                 n, names[target], k, hid, ap->first_pos);
    } else {
        rebuild_from_model(ap, &b);
        char es[32];
        snprintf(opbuf, sizeof opbuf,
                 "re-append append #%ld (%zu events of \"%.120s\" at revision %" PRIu64 ") to \"%.120s\" expected %s",
                 a, ap->n, names[s], ap->first_rev, names[target], exp_str(e, es, sizeof es));
    }
    stele_append_result res;
    memset(&res, 0xA5, sizeof res);
    int rc = stele_append(db, names[target], e, b.in, b.n, &res);
    if (v == 2)
        built_free(&b, 0);
    else
        free_rebuilt(&b);
    expect_rc(rc, STELE_EIDCONFLICT, "stele_append (id reuse)");
    tally.conflict++;
    post_write_checks(target);
}

static void op_delete(int tomb)
{
    int s = tomb ? TOMB_FIRST + (int)t_rand_below(NS - TOMB_FIRST) : pick_stream();
    int kind;
    int64_t e = pick_expected(s, &kind);
    if (!tomb && kind == 3 && !stream_live(s) && st[s].nrev)
        e = (int64_t)(st[s].nrev - 1);
    mstream *m = &st[s];
    char es[32];
    snprintf(opbuf, sizeof opbuf, "%s \"%s\" expected %s (stream: %zu revisions, tb %" PRIu64
             ", deleted %d, tombstoned %d)",
             tomb ? "tombstone" : "soft delete", names[s], exp_str(e, es, sizeof es), m->nrev, m->tb,
             m->deleted, m->tombstoned);
    uint64_t cur = 0xA5A5A5A5A5A5A5A5ull;
    int rc = tomb ? stele_tombstone_stream(db, names[s], e, &cur)
                  : stele_delete_stream(db, names[s], e, &cur);
    int set[3], nset = 0;
    int applies = 0;
    if (m->tombstoned) {
        set[nset++] = STELE_EDELETED;
    } else if (tomb) {
        if (expected_ok(s, e)) {
            set[nset++] = 0;
            applies = 1;
        } else {
            set[nset++] = STELE_EWRONGREV;
        }
    } else if (!m->ever) {
        set[nset++] = STELE_ENOTFOUND; /* A6 */
        if (e == STELE_STREAM_EXISTS || e >= 0)
            set[nset++] = STELE_EWRONGREV;
    } else if (m->deleted) {
        set[nset++] = 0; /* A6: no change either way */
        set[nset++] = STELE_ENOTFOUND;
        set[nset++] = STELE_EWRONGREV;
    } else {
        /* live */
        if (expected_ok(s, e)) {
            set[nset++] = 0;
            applies = 1;
        } else {
            set[nset++] = STELE_EWRONGREV;
        }
    }
    expect_rc_in(rc, set, (size_t)nset, tomb ? "stele_tombstone_stream" : "stele_delete_stream");
    if (rc == STELE_EWRONGREV) {
        char t1[24], t2[24];
        if (cur != stream_cur(s))
            fail("EWRONGREV *current %s, want %s", u64s(cur, t1), u64s(stream_cur(s), t2));
    }
    if (tomb) {
        tally.tomb_ok += rc == 0;
        tally.tomb_other += rc != 0;
    } else {
        tally.del_ok += rc == 0 && applies;
        tally.del_other += !(rc == 0 && applies);
    }
    if (rc == 0 && applies) {
        if (tomb) {
            m->tombstoned = 1;
            m->ever = 1;
        } else {
            m->deleted = 1;
            m->tb = m->nrev;
        }
    }
    post_write_checks(s);
    do_stream_read(s, 0, STELE_FORWARDS, 10, 1);
}

static size_t pick_limit(void)
{
    static const size_t lims[] = {1, 1, 2, 3, 5, 7, 10, 20, 50, 100, 1000, SIZE_MAX};
    return lims[t_rand_below(sizeof lims / sizeof *lims)];
}

static void op_read_stream(void)
{
    int s = pick_stream();
    int d = (int)t_rand_below(2);
    uint64_t last = st[s].nrev;
    uint64_t from;
    uint64_t r = t_rand_below(10);
    if (d == STELE_FORWARDS)
        from = r < 4 ? 0 : r < 6 && st[s].tb ? t_rand_below(st[s].tb + 1) : t_rand_below(last + 3);
    else
        from = r < 4 ? STELE_END : t_rand_below(last + 3);
    if (t_rand_below(25) == 0)
        from = t_rand_below(2) ? STELE_END - 1 : (uint64_t)1 << 62; /* far past the end */
    size_t lim = pick_limit();
    char t1[24];
    snprintf(opbuf, sizeof opbuf, "read_stream \"%s\" from %s %s limit %zu", names[s],
             u64s(from, t1), d ? "backwards" : "forwards", lim);
    do_stream_read(s, from, d, lim, 40);
    tally.reads++;
}

static void op_read_all(void)
{
    int d = (int)t_rand_below(2);
    uint64_t from;
    uint64_t r = t_rand_below(10);
    if (d == STELE_FORWARDS)
        from = r < 2 ? 0 : t_rand_below(N + 3);
    else
        from = r < 4 ? STELE_END : t_rand_below(N + 3);
    if (t_rand_below(25) == 0)
        from = t_rand_below(2) ? STELE_END - 1 : (uint64_t)1 << 62; /* far past the end */
    size_t lim = pick_limit();
    char t1[24];
    snprintf(opbuf, sizeof opbuf, "read_all from %s %s limit %zu", u64s(from, t1),
             d ? "backwards" : "forwards", lim);
    do_all_read(from, d, lim, 30);
    tally.reads_all++;
}

static void op_head(void)
{
    int s = (int)t_rand_below(NS);
    snprintf(opbuf, sizeof opbuf, "stream_head \"%s\"", names[s]);
    check_head(s);
    tally.heads++;
}


/* ---------------------------------------------------------------- runs */

/* The name of the test: a tag for its stores. */
static const char *prop_tag = "prop";

static int nreopens;

static void reopen(void)
{
    snprintf(opbuf, sizeof opbuf, "close + reopen (N=%zu)", N);
    stele_close(db);
    db = NULL;
    stele_options o = opts;
    if (t_rand_below(5) == 0)
        o.flags |= STELE_OPEN_VERIFY;
    int rc = stele_open(dir, &o, &db);
    expect_rc(rc, 0, "stele_open (reopen)");
    if (rc != 0) {
        fprintf(stderr, "cannot continue without a store\n");
        abort();
    }
    nreopens++;
    full_verify(nreopens % 3 == 0);
}

static void one_run(int small, void (*extra)(uint64_t r))
{
    model_reset();
    memset(&tally, 0, sizeof tally);
    memset(&opts, 0, sizeof opts);
    if (small)
        opts.segment_size = 64 * 1024;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dir = t_store(prop_tag);
    printf("run %d: %s segments, store %s\n", run, small ? "64 KiB" : "default", dir);
    fflush(stdout);
    snprintf(opbuf, sizeof opbuf, "stele_open (new store)");
    int rc = stele_open(dir, &opts, &db);
    expect_rc(rc, 0, "stele_open");
    if (rc != 0)
        abort();
    full_verify(1);
    int ops_since_reopen = 0;
    const int local = t_store_is_local();
    for (step = 0; step < OPS_PER_RUN; step++) {
        uint64_t r = t_rand_below(1000);
        if (r < 360)
            op_append();
        else if (r < 410)
            op_retry();
        else if (r < 440)
            op_conflict();
        else if (r < 480)
            op_delete(0);
        else if (r < 487)
            op_delete(1);
        else if (r < 690)
            op_read_stream();
        else if (r < 820)
            op_read_all();
        else if (r < 900)
            op_head();
        else if (r < 950) {
            if (extra)
                extra(r); /* the multi-stream test's operations */
            else
                op_append();
        } else if (quick ? ops_since_reopen >= 200
                       : ops_since_reopen >= 3 && ((small && local) || r >= 980)) {
            /* default-size stores reopen less often: each open/close of one
             * costs ~0.1 s (a 64 MiB spare segment); under valgrind
             * (TEST_QUICK) an open/close costs ~1 min, so only a few. The
             * segment size means nothing to another backend, whose reopens
             * (new connections, threads) are what its runs spend most on:
             * there every run reopens as often as a default-size one. */
            reopen();
            ops_since_reopen = 0;
            continue;
        }
        ops_since_reopen++;
    }
    step = OPS_PER_RUN;
    reopen();
    snprintf(opbuf, sizeof opbuf, "final close + stele_check");
    stele_close(db);
    db = NULL;
    char report[512] = "";
    rc = t_store_is_local() ? stele_check(dir, report, sizeof report) : 0;
    if (rc != 0)
        fail("stele_check after a clean close: rc %d (%s): %s", rc, rcname(rc), report);
    size_t tombs = 0, dels = 0;
    for (int s = 0; s < NS; s++) {
        tombs += st[s].tombstoned;
        dels += st[s].tb > 0;
    }
    printf("run %d: %zu events, %zu appends, %d reopens so far, %zu tombstoned, %zu soft-deleted\n"
           "  appends ok %ld / EWRONGREV %ld / EDELETED %ld; idempotent retries %ld; id conflicts %ld;\n"
           "  soft deletes ok %ld / other %ld; tombstones ok %ld / other %ld; reads %ld stream, %ld $all; "
           "heads %ld\n  multi-stream appends ok %ld / failed %ld (condition %ld), retries %ld; "
           "DCB reads %ld\n",
           run, N, naps, nreopens, tombs, dels, tally.app_ok, tally.app_wrongrev, tally.app_deleted,
           tally.retry_ok, tally.conflict, tally.del_ok, tally.del_other, tally.tomb_ok, tally.tomb_other,
           tally.reads, tally.reads_all, tally.heads, tally.multi_ok, tally.multi_fail,
           tally.cond_fail, tally.multi_retry, tally.matching);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("  %.1f s\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    fflush(stdout);
    t_store_drop(dir);
}


#endif
