/*
 * test_streams_meta.c - stream metadata (maxAge, maxCount, truncateBefore,
 * maxSnapshots, custom fields) and snapshots against a model.
 *
 *   random      random appends, metadata changes, snapshots, soft deletes
 *               and a tombstone on a few streams, applied to the store and
 *               to an in-memory model; after every op the return code must
 *               be the model's, and every few ops the whole store is
 *               compared: $all (every event, never a snapshot or metadata
 *               record), heads, stream reads forwards and backwards in
 *               random page sizes (retention hides exactly the model's
 *               events), metadata (values, custom bytes, version),
 *               snapshots (latest, at or before random revisions, exactly
 *               the retained ones) and loads.
 *   max_age     small maxAge values: events older than the age are hidden
 *               at once, newer ones are not. Visibility depends on the
 *               read's clock, so each check brackets the read with the
 *               clock: an event created before (start - maxAge) must be
 *               hidden, one created at or after (end - maxAge) must be
 *               shown; only the band between may go either way.
 *   retention   snapshot retention (keep N, replace, lower N, soft delete)
 *               and load = latest snapshot + later events.
 *   errors      bad metadata and bad snapshots get their precise error and
 *               write nothing (the log does not grow, nothing changes).
 *   crash       a child runs the random ops and reports each finished one
 *               through a pipe; it is SIGKILLed at a random moment. The
 *               reopened store must equal the model of the finished ops
 *               (or of those plus the one in flight), and so must the
 *               index rebuilt from the log (index removed; or stele.lock
 *               saying another boot); stele_check passes.
 *
 * TEST_SEED=n replays a run; TEST_QUICK=1 makes it smaller.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stele.h"
#include "testutil.h"

#define NSTREAMS 6
#define MAXEV 4096
#define MAXSN 16
#define MAXPOS (NSTREAMS * MAXEV)

static int quick;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A PRNG of its own, so the crash child and the parent generate the same
 * ops from the same seed. */
typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnext(rng *r)
{
    uint64_t x = r->s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return r->s = x;
}

static uint64_t rbelow(rng *r, uint64_t n) { return n ? rnext(r) % n : 0; }

/* ------------------------------------------------------------ the model */

typedef struct msnap {
    uint64_t rev;
    uint32_t schema, flags;
    char state[96];
    size_t len;
} msnap;

typedef struct mstream {
    char name[32];
    uint64_t n;          /* events: revisions 0..n-1 */
    uint64_t pos[MAXEV]; /* position of each revision */
    int64_t created[MAXEV];
    uint64_t tb;         /* soft delete's truncate-before */
    int deleted, tomb, exists;
    uint64_t max_age, max_count, meta_tb;
    uint32_t max_snaps;
    char custom[160];
    size_t custom_len;
    uint64_t version;    /* STELE_NONE: no metadata */
    msnap snaps[MAXSN];  /* sorted by revision */
    int nsnaps;
} mstream;

typedef struct model {
    mstream s[NSTREAMS];
    uint64_t next_pos;
    int pos_stream[MAXPOS];
    uint64_t pos_rev[MAXPOS];
} model;

static void model_init(model *m, const char *prefix)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < NSTREAMS; i++) {
        snprintf(m->s[i].name, sizeof m->s[i].name, "%s-%d", prefix, i);
        m->s[i].version = STELE_NONE;
    }
}

static uint32_t msnaps_max(const mstream *s)
{
    return s->max_snaps ? s->max_snaps : STELE_DEFAULT_MAX_SNAPSHOTS;
}

static void msnaps_trim(mstream *s)
{
    int keep = (int)msnaps_max(s);
    if (s->nsnaps > keep) {
        int drop = s->nsnaps - keep;
        memmove(s->snaps, s->snaps + drop, (size_t)keep * sizeof s->snaps[0]);
        s->nsnaps = keep;
    }
}

static void msnaps_drop_below(mstream *s, uint64_t below)
{
    int k = 0;
    for (int i = 0; i < s->nsnaps; i++)
        if (s->snaps[i].rev >= below)
            s->snaps[k++] = s->snaps[i];
    s->nsnaps = k;
}

/* The lowest revision retention and deletes leave visible (maxAge aside). */
static uint64_t mstart(const mstream *s)
{
    uint64_t lo = s->tb > s->meta_tb ? s->tb : s->meta_tb;
    if (s->max_count && s->n > s->max_count && s->n - s->max_count > lo)
        lo = s->n - s->max_count;
    return lo;
}

/* Visibility of revision r for a read whose clock ran within [t0, t1]:
 * 1 shown, 0 hidden, -1 either. */
static int mvisible(const mstream *s, uint64_t r, int64_t t0, int64_t t1)
{
    if (s->tomb || r >= s->n || r < mstart(s))
        return 0;
    if (!s->max_age)
        return 1;
    int64_t c = s->created[r];
    if (c < t0 - (int64_t)s->max_age)
        return 0;
    if (c >= t1 - (int64_t)s->max_age)
        return 1;
    return -1;
}

/* ------------------------------------------------------------ ops */

enum { O_APPEND, O_META, O_SNAP, O_DELETE, O_TOMB };

typedef struct op {
    int kind, s;
    int n;               /* O_APPEND: events */
    int64_t expected;    /* O_META: expected version */
    stele_stream_metadata md;
    char custom[160];
    stele_snapshot_in sn;
    char state[96];
} op;

static void gen_op(rng *g, const model *m, int idx, op *o, int allow_age)
{
    memset(o, 0, sizeof *o);
    o->s = (int)rbelow(g, NSTREAMS);
    const mstream *s = &m->s[o->s];
    uint64_t k = rbelow(g, 100);
    if (k < 45) {
        o->kind = O_APPEND;
        o->n = 1 + (int)rbelow(g, 5);
    } else if (k < 63) {
        o->kind = O_META;
        uint64_t e = rbelow(g, 10);
        o->expected = e < 5 ? STELE_ANY
                    : e < 8 ? (s->version == STELE_NONE ? STELE_NO_STREAM : (int64_t)s->version)
                    : e < 9 ? STELE_STREAM_EXISTS
                            : (int64_t)rbelow(g, 4); /* often wrong */
        stele_stream_metadata *md = &o->md;
        if (rbelow(g, 3) == 0)
            md->max_count = 1 + rbelow(g, 8);
        if (rbelow(g, 4) == 0)
            md->truncate_before = rbelow(g, s->n + 4);
        if (allow_age && rbelow(g, 5) == 0)
            md->max_age_us = rbelow(g, 2) ? 1 : 3600ull * 1000000;
        else if (rbelow(g, 6) == 0)
            md->max_age_us = 3600ull * 1000000;
        if (rbelow(g, 2) == 0)
            md->max_snapshots = 1 + (uint32_t)rbelow(g, 4);
        if (rbelow(g, 2) == 0) {
            snprintf(o->custom, sizeof o->custom,
                     rbelow(g, 2) ? "{\"op\":%d,\"owner\":\"t\\u00e4m-%d\"}"
                                  : " { \"op\" : %d , \"list\" : [1, 2.5e3, null, true, \"%d\"] } ",
                     idx, idx);
            md->custom = o->custom;
            md->custom_len = strlen(o->custom);
        }
    } else if (k < 88) {
        o->kind = O_SNAP;
        o->sn.revision = s->n ? rbelow(g, s->n + 1) : 0; /* sometimes beyond the head */
        if (s->n && rbelow(g, 2))
            o->sn.revision = s->n - 1 - rbelow(g, s->n < 3 ? s->n : 3);
        o->sn.schema_version = (uint32_t)rbelow(g, 4);
        if (rbelow(g, 2)) {
            snprintf(o->state, sizeof o->state, "{\"op\":%d,\"rev\":%llu}", idx,
                     (unsigned long long)o->sn.revision);
            o->sn.flags = STELE_EVENT_JSON;
        } else {
            snprintf(o->state, sizeof o->state, "bytes\x01\x02 op %d", idx);
        }
        o->sn.state = o->state;
        o->sn.state_len = strlen(o->state);
    } else if (k < 98) {
        o->kind = O_DELETE;
    } else {
        o->kind = o->s == 0 ? O_TOMB : O_DELETE; /* only stream 0 may be tombstoned */
    }
}

/* Run op on the store (db may be NULL: model only). */
static int do_op(stele_db *db, const model *m, const op *o, uint64_t *ver)
{
    const char *name = m->s[o->s].name;
    *ver = STELE_NONE;
    switch (o->kind) {
    case O_APPEND: {
        stele_event_in ev[5];
        char data[5][48];
        memset(ev, 0, sizeof ev);
        for (int i = 0; i < o->n; i++) {
            snprintf(data[i], sizeof data[i], "{\"i\":%d}", i);
            ev[i].type = "Happened";
            ev[i].data = data[i];
            ev[i].data_len = strlen(data[i]);
            ev[i].flags = STELE_EVENT_JSON;
        }
        return stele_append(db, name, STELE_ANY, ev, (size_t)o->n, NULL);
    }
    case O_META:
        return stele_set_stream_metadata(db, name, &o->md, o->expected, ver);
    case O_SNAP:
        return stele_put_snapshot(db, name, &o->sn);
    case O_DELETE:
        return stele_delete_stream(db, name, STELE_ANY, NULL);
    default:
        return stele_tombstone_stream(db, name, STELE_ANY, NULL);
    }
}

/* Apply op to the model; returns the code the store must return (and the
 * metadata version through *ver for O_META). */
static int model_apply(model *m, const op *o, uint64_t *ver)
{
    mstream *s = &m->s[o->s];
    *ver = STELE_NONE;
    if (s->tomb)
        return STELE_EDELETED;
    switch (o->kind) {
    case O_APPEND:
        for (int i = 0; i < o->n; i++) {
            s->pos[s->n] = m->next_pos;
            s->created[s->n] = 0;
            m->pos_stream[m->next_pos] = o->s;
            m->pos_rev[m->next_pos] = s->n;
            m->next_pos++;
            s->n++;
        }
        s->deleted = 0;
        s->exists = 1;
        return 0;
    case O_META: {
        uint64_t cur = s->version;
        int ok = o->expected == STELE_ANY || (o->expected == STELE_NO_STREAM && cur == STELE_NONE) ||
                 (o->expected == STELE_STREAM_EXISTS && cur != STELE_NONE) ||
                 (o->expected >= 0 && cur == (uint64_t)o->expected);
        if (!ok) {
            *ver = cur;
            return STELE_EWRONGREV;
        }
        s->exists = 1;
        s->max_age = o->md.max_age_us;
        s->max_count = o->md.max_count;
        s->meta_tb = o->md.truncate_before;
        s->max_snaps = o->md.max_snapshots;
        memcpy(s->custom, o->custom, sizeof s->custom);
        s->custom_len = o->md.custom_len;
        s->version = cur == STELE_NONE ? 0 : cur + 1;
        *ver = s->version;
        msnaps_trim(s);
        return 0;
    }
    case O_SNAP: {
        if (!s->n || s->deleted)
            return STELE_ENOTFOUND;
        const stele_snapshot_in *sn = &o->sn;
        if (sn->revision >= s->n || sn->revision < s->tb)
            return STELE_EINVAL;
        int at = 0;
        while (at < s->nsnaps && s->snaps[at].rev < sn->revision)
            at++;
        int replace = at < s->nsnaps && s->snaps[at].rev == sn->revision;
        if (!replace && s->nsnaps >= (int)msnaps_max(s) && at == 0)
            return STELE_EINVAL; /* older than every kept one */
        if (!replace) {
            memmove(&s->snaps[at + 1], &s->snaps[at], (size_t)(s->nsnaps - at) * sizeof(msnap));
            s->nsnaps++;
        }
        msnap *x = &s->snaps[at];
        x->rev = sn->revision;
        x->schema = sn->schema_version;
        x->flags = sn->flags;
        memcpy(x->state, sn->state, sn->state_len);
        x->len = sn->state_len;
        msnaps_trim(s);
        return 0;
    }
    case O_DELETE:
        if (!s->n || s->deleted)
            return STELE_ENOTFOUND;
        s->tb = s->n;
        s->deleted = 1;
        msnaps_drop_below(s, s->tb);
        return 0;
    default:
        s->tomb = 1;
        s->exists = 1;
        s->nsnaps = 0;
        return 0;
    }
}

/* ------------------------------------------------------------ comparing */

typedef struct cmp {
    int quiet;
    int bad;
} cmp;

#define MISMATCH(c, ...)                                                                \
    do {                                                                               \
        (c)->bad++;                                                                    \
        if (!(c)->quiet) {                                                             \
            fprintf(stderr, "%s:%d: mismatch: ", __FILE__, __LINE__);                  \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, " [%s]\n", stele_errmsg());                                \
        }                                                                              \
    } while (0)

/* $all holds every event and nothing else; learn each event's created. */
static void cmp_all(stele_db *db, model *m, cmp *c)
{
    uint64_t from = 0, seen = 0;
    for (;;) {
        stele_page *pg;
        int rc = stele_read_all(db, from, STELE_FORWARDS, 1 + t_rand_below(200), &pg);
        if (rc) {
            MISMATCH(c, "read_all: %s", stele_errname(rc));
            return;
        }
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (e->position != seen || seen >= m->next_pos) {
                MISMATCH(c, "$all: position %llu, expected %llu of %llu",
                         (unsigned long long)e->position, (unsigned long long)seen,
                         (unsigned long long)m->next_pos);
                stele_page_free(pg);
                return;
            }
            mstream *s = &m->s[m->pos_stream[seen]];
            if (strcmp(e->stream, s->name) || e->revision != m->pos_rev[seen])
                MISMATCH(c, "$all position %llu: %s@%llu, expected %s@%llu",
                         (unsigned long long)seen, e->stream, (unsigned long long)e->revision,
                         s->name, (unsigned long long)m->pos_rev[seen]);
            else
                s->created[e->revision] = e->created_us;
            seen++;
        }
        int more = stele_page_next(pg, &from);
        stele_page_free(pg);
        if (!more)
            break;
    }
    if (seen != m->next_pos)
        MISMATCH(c, "$all has %llu events, the model %llu", (unsigned long long)seen,
                 (unsigned long long)m->next_pos);
    stele_stats st;
    if (stele_get_stats(db, &st) == 0 && st.events != m->next_pos)
        MISMATCH(c, "stats: %llu events, the model %llu", (unsigned long long)st.events,
                 (unsigned long long)m->next_pos);
}

/* Read the whole stream in random pages in one direction and check it. */
static void cmp_read(stele_db *db, const mstream *s, int dir, cmp *c)
{
    uint64_t from = dir == STELE_FORWARDS ? (t_rand_below(3) ? 0 : t_rand_below(s->n + 2))
                                          : (t_rand_below(3) ? STELE_END : t_rand_below(s->n + 2));
    uint64_t first = from;
    uint64_t got[MAXEV];
    size_t ngot = 0;
    int64_t t0 = now_us();
    for (int pages = 0; pages < 10000; pages++) {
        stele_page *pg;
        int rc = stele_read_stream(db, s->name, from, dir, 1 + t_rand_below(12), &pg);
        if (rc) {
            MISMATCH(c, "read %s: %s", s->name, stele_errname(rc));
            return;
        }
        for (size_t i = 0; i < stele_page_count(pg) && ngot < MAXEV; i++)
            got[ngot++] = stele_page_event(pg, i)->revision;
        int more = stele_page_next(pg, &from);
        stele_page_free(pg);
        if (!more)
            break;
    }
    int64_t t1 = now_us();
    /* Ordered, and exactly the visible events in range. */
    for (size_t i = 1; i < ngot; i++)
        if (dir == STELE_FORWARDS ? got[i] <= got[i - 1] : got[i] >= got[i - 1]) {
            MISMATCH(c, "%s: revisions out of order at %zu", s->name, i);
            return;
        }
    size_t k = 0;
    for (uint64_t j = 0; j < s->n; j++) {
        uint64_t r = dir == STELE_FORWARDS ? j : s->n - 1 - j;
        if (dir == STELE_FORWARDS ? r < first : (first != STELE_END && r > first))
            continue;
        int v = mvisible(s, r, t0, t1);
        int shown = k < ngot && got[k] == r;
        if (shown)
            k++;
        if (v == 1 && !shown) {
            MISMATCH(c, "%s %s: revision %llu is missing (start %llu, n %llu)", s->name,
                     dir == STELE_FORWARDS ? "forwards" : "backwards", (unsigned long long)r,
                     (unsigned long long)mstart(s), (unsigned long long)s->n);
            return;
        }
        if (v == 0 && shown) {
            MISMATCH(c, "%s %s: revision %llu is shown but hidden (start %llu, n %llu)", s->name,
                     dir == STELE_FORWARDS ? "forwards" : "backwards", (unsigned long long)r,
                     (unsigned long long)mstart(s), (unsigned long long)s->n);
            return;
        }
    }
    if (k != ngot)
        MISMATCH(c, "%s: %zu events read, %zu expected", s->name, ngot, k);
}

static int snap_eq(const stele_snapshot *g, const msnap *w)
{
    return g && w && g->revision == w->rev && g->schema_version == w->schema &&
           g->flags == w->flags && g->state_len == w->len && !memcmp(g->state, w->state, w->len);
}

static const msnap *msnap_floor(const mstream *s, uint64_t rev)
{
    const msnap *best = NULL;
    for (int i = 0; i < s->nsnaps; i++)
        if (s->snaps[i].rev <= rev)
            best = &s->snaps[i];
    return best;
}

static void cmp_stream(stele_db *db, const mstream *s, cmp *c)
{
    stele_stream_info info;
    int rc = stele_stream_head(db, s->name, &info);
    if (!s->exists) {
        if (rc != STELE_ENOTFOUND)
            MISMATCH(c, "head %s: %s, want NOTFOUND", s->name, stele_errname(rc));
    } else if (rc) {
        MISMATCH(c, "head %s: %s", s->name, stele_errname(rc));
    } else if (info.last_revision != (s->n ? s->n - 1 : STELE_NONE) ||
               info.tombstoned != s->tomb || info.deleted != s->deleted ||
               info.truncate_before != s->tb) {
        MISMATCH(c, "head %s: last %llu tomb %d deleted %d tb %llu", s->name,
                 (unsigned long long)info.last_revision, info.tombstoned, info.deleted,
                 (unsigned long long)info.truncate_before);
    }
    /* metadata */
    stele_stream_metadata *md = NULL;
    rc = stele_get_stream_metadata(db, s->name, &md);
    int want = s->tomb ? STELE_EDELETED : !s->exists ? STELE_ENOTFOUND : 0;
    if (rc != want)
        MISMATCH(c, "metadata %s: %s, want %s", s->name, stele_errname(rc), stele_errname(want));
    else if (rc == 0 && (md->version != s->version || md->max_age_us != s->max_age ||
                         md->max_count != s->max_count || md->truncate_before != s->meta_tb ||
                         md->max_snapshots != s->max_snaps || md->custom_len != s->custom_len ||
                         (s->custom_len && memcmp(md->custom, s->custom, s->custom_len))))
        MISMATCH(c, "metadata %s: version %llu count %llu tb %llu snaps %u custom '%.*s'", s->name,
                 (unsigned long long)md->version, (unsigned long long)md->max_count,
                 (unsigned long long)md->truncate_before, md->max_snapshots, (int)md->custom_len,
                 md->custom ? md->custom : "");
    stele_free(md);
    /* reads */
    int live = s->exists && s->n && !s->deleted && !s->tomb;
    if (!live) {
        stele_page *pg = NULL;
        rc = stele_read_stream(db, s->name, 0, STELE_FORWARDS, 10, &pg);
        stele_page_free(pg);
        want = s->tomb ? STELE_EDELETED : STELE_ENOTFOUND;
        if (rc != want)
            MISMATCH(c, "read %s: %s, want %s", s->name, stele_errname(rc), stele_errname(want));
        stele_snapshot *sn = NULL;
        rc = stele_get_snapshot(db, s->name, STELE_END, &sn);
        stele_free(sn);
        if (rc != want)
            MISMATCH(c, "snapshot %s: %s, want %s", s->name, stele_errname(rc),
                     stele_errname(want));
        return;
    }
    cmp_read(db, s, STELE_FORWARDS, c);
    cmp_read(db, s, STELE_BACKWARDS, c);
    /* snapshots: the latest, each kept one, and random floors */
    for (int i = -1; i < s->nsnaps + 3; i++) {
        uint64_t at = i < 0 ? STELE_END
                    : i < s->nsnaps ? s->snaps[i].rev
                                    : t_rand_below(s->n + 2);
        const msnap *w = at == STELE_END ? (s->nsnaps ? &s->snaps[s->nsnaps - 1] : NULL)
                                         : msnap_floor(s, at);
        stele_snapshot *g = NULL;
        rc = stele_get_snapshot(db, s->name, at, &g);
        if (rc)
            MISMATCH(c, "snapshot %s at %llu: %s", s->name, (unsigned long long)at,
                     stele_errname(rc));
        else if (w ? !snap_eq(g, w) : g != NULL)
            MISMATCH(c, "snapshot %s at or before %llu: got %lld, want %lld", s->name,
                     (unsigned long long)at, g ? (long long)g->revision : -1LL,
                     w ? (long long)w->rev : -1LL);
        else if (g && (strcmp(g->stream, s->name) || g->created_us <= 0))
            MISMATCH(c, "snapshot %s: stream or created wrong", s->name);
        stele_free(g);
    }
    /* load = the latest snapshot + the visible events after it */
    size_t limit = 1 + t_rand_below(s->n + 2);
    stele_snapshot *ls = NULL;
    stele_page *ev = NULL;
    int64_t t0 = now_us();
    rc = stele_load_stream(db, s->name, limit, &ls, &ev);
    int64_t t1 = now_us();
    const msnap *w = s->nsnaps ? &s->snaps[s->nsnaps - 1] : NULL;
    if (rc) {
        MISMATCH(c, "load %s: %s", s->name, stele_errname(rc));
    } else if (w ? !snap_eq(ls, w) : ls != NULL) {
        MISMATCH(c, "load %s: wrong snapshot", s->name);
    } else {
        uint64_t r = w ? w->rev + 1 : 0;
        size_t k = 0, cnt = stele_page_count(ev);
        for (; r < s->n && k < limit; r++) {
            int v = mvisible(s, r, t0, t1);
            int shown = k < cnt && stele_page_event(ev, k)->revision == r;
            if ((v == 1 && !shown) || (v == 0 && shown)) {
                MISMATCH(c, "load %s: revision %llu %s", s->name, (unsigned long long)r,
                         shown ? "shown but hidden" : "missing");
                break;
            }
            k += (size_t)shown;
        }
        if (k != cnt && !c->bad)
            MISMATCH(c, "load %s: %zu events, %zu expected", s->name, cnt, k);
    }
    stele_free(ls);
    stele_page_free(ev);
}

static int compare(stele_db *db, model *m, int quiet)
{
    cmp c = {quiet, 0};
    cmp_all(db, m, &c);
    for (int i = 0; i < NSTREAMS; i++)
        cmp_stream(db, &m->s[i], &c);
    return c.bad;
}

/* stele_check on a closed store; returns the snapshot entries it counted
 * in the index ("... snapshots (N kept)"). */
static long check_kept(const char *dir)
{
    char report[1024] = "";
    CHECK_OK(stele_check(dir, report, sizeof report));
    const char *p = strstr(report, "snapshots (");
    unsigned long long n;
    if (!p || sscanf(p, "snapshots (%llu kept)", &n) != 1) {
        fprintf(stderr, "check report without a snapshot count: %s\n", report);
        t_failures++;
        t_fail_hook();
        return -1;
    }
    return (long)n;
}

static long model_kept(const model *m)
{
    long n = 0;
    for (int i = 0; i < NSTREAMS; i++)
        n += m->s[i].nsnaps;
    return n;
}

/* ------------------------------------------------------------ random */

static void test_random(void)
{
    const char *dir = t_store("smeta-random");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    static model m;
    model_init(&m, "rnd");
    rng g = {t_rand() | 1};
    int nops = quick ? 150 : 500;
    for (int i = 0; i < nops; i++) {
        op o;
        gen_op(&g, &m, i, &o, 1);
        uint64_t ver, mver;
        int rc = do_op(db, &m, &o, &ver);
        int want = model_apply(&m, &o, &mver);
        if (rc != want)
            fprintf(stderr, "op %d (kind %d on %s): %s (%s), model says %s\n", i, o.kind,
                    m.s[o.s].name, stele_errname(rc), stele_errmsg(), stele_errname(want));
        CHECK(rc == want);
        if (o.kind == O_META && (rc == 0 || rc == STELE_EWRONGREV))
            CHECK(ver == mver);
        if (i % 20 == 19 || i == nops - 1)
            CHECK(compare(db, &m, 0) == 0);
    }
    /* The same after a clean reopen. */
    stele_close(db);
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK(compare(db, &m, 0) == 0);
    stele_close(db);
    if (t_store_is_local())
        CHECK(check_kept(dir) == model_kept(&m));
    t_store_drop(dir);
}

/* ------------------------------------------------------------ max_age */

static void append_n(stele_db *db, const char *stream, int n)
{
    for (int i = 0; i < n; i++) {
        stele_event_in ev = {0};
        ev.type = "Tick";
        ev.data = "{}";
        ev.data_len = 2;
        ev.flags = STELE_EVENT_JSON;
        CHECK_OK(stele_append(db, stream, STELE_ANY, &ev, 1, NULL));
    }
}

static void set_meta(stele_db *db, const char *stream, uint64_t age, uint64_t count, uint64_t tb,
                     uint32_t snaps)
{
    stele_stream_metadata md = {0};
    md.max_age_us = age;
    md.max_count = count;
    md.truncate_before = tb;
    md.max_snapshots = snaps;
    CHECK_OK(stele_set_stream_metadata(db, stream, &md, STELE_ANY, NULL));
}

static void test_max_age(void)
{
    const char *dir = t_store("smeta-age");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    static model m;
    model_init(&m, "age");
    mstream *s = &m.s[0];
    s->exists = 1;
    /* Three batches of 5 events, 120 ms apart. With maxAge 180 ms the
     * first batch (>= 240 ms old) is certainly hidden; the second (~120 ms)
     * and third are shown unless the machine stalls for 60 ms (then the
     * bracket allows either). */
    op o = {0};
    uint64_t v;
    o.kind = O_APPEND;
    o.n = 5;
    CHECK_OK(do_op(db, &m, &o, &v));
    model_apply(&m, &o, &v);
    sleep_ms(120);
    CHECK_OK(do_op(db, &m, &o, &v));
    model_apply(&m, &o, &v);
    sleep_ms(120);
    CHECK_OK(do_op(db, &m, &o, &v));
    model_apply(&m, &o, &v);
    struct {
        uint64_t age;
        int sleep;
    } cases[] = {{180000, 0}, {3600ull * 1000000, 0}, {1, 2}, {20000, 30}, {90000, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        set_meta(db, s->name, cases[i].age, 0, 0, 0);
        s->max_age = cases[i].age;
        s->version = s->version == STELE_NONE ? 0 : s->version + 1;
        sleep_ms(cases[i].sleep);
        CHECK(compare(db, &m, 0) == 0);
        /* The first five are certainly older than 180 ms: check they were
         * really hidden (not only "allowed to be"). */
        if (cases[i].age == 180000) {
            stele_page *pg;
            CHECK_OK(stele_read_stream(db, s->name, 0, STELE_FORWARDS, 100, &pg));
            CHECK(stele_page_count(pg) <= 10);
            for (size_t k = 0; k < stele_page_count(pg); k++)
                CHECK(stele_page_event(pg, k)->revision >= 5);
            stele_page_free(pg);
        }
        if (cases[i].age == 3600ull * 1000000) {
            stele_page *pg;
            CHECK_OK(stele_read_stream(db, s->name, STELE_END, STELE_BACKWARDS, 100, &pg));
            CHECK(stele_page_count(pg) == 15);
            stele_page_free(pg);
        }
        if (cases[i].age == 1) {
            /* Everything is older than 1 µs after 2 ms: an empty stream, but
             * the head still says where appends go on. */
            stele_page *pg;
            CHECK_OK(stele_read_stream(db, s->name, 0, STELE_FORWARDS, 100, &pg));
            CHECK(stele_page_count(pg) == 0);
            uint64_t nx;
            CHECK(stele_page_next(pg, &nx) == 0);
            stele_page_free(pg);
            stele_stream_info info;
            CHECK_OK(stele_stream_head(db, s->name, &info));
            CHECK(info.last_revision == 14);
        }
    }
    /* maxAge together with maxCount: the stricter one wins. */
    set_meta(db, s->name, 3600ull * 1000000, 3, 0, 0);
    s->max_age = 3600ull * 1000000;
    s->max_count = 3;
    s->version++;
    CHECK(compare(db, &m, 0) == 0);
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, s->name, 0, STELE_FORWARDS, 100, &pg));
    CHECK(stele_page_count(pg) == 3 && stele_page_event(pg, 0)->revision == 12);
    stele_page_free(pg);
    stele_close(db);
    t_store_drop(dir);
}

/* ------------------------------------------------------------ retention */

static void put_snap(stele_db *db, const char *stream, uint64_t rev, const char *state)
{
    stele_snapshot_in sn = {rev, 1, STELE_EVENT_JSON, state, strlen(state)};
    CHECK_OK(stele_put_snapshot(db, stream, &sn));
}

static uint64_t latest_rev(stele_db *db, const char *stream, uint64_t at)
{
    stele_snapshot *s = NULL;
    CHECK_OK(stele_get_snapshot(db, stream, at, &s));
    uint64_t r = s ? s->revision : STELE_NONE;
    stele_free(s);
    return r;
}

static void test_retention(void)
{
    const char *dir = t_store("smeta-ret");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    const char *S = "Order-1";
    append_n(db, S, 12);
    char state[64];
    for (uint64_t r = 0; r < 8; r++) {
        snprintf(state, sizeof state, "{\"total\":%llu}", (unsigned long long)r * 10);
        put_snap(db, S, r, state);
    }
    /* Default retention keeps 5: revisions 3..7. */
    CHECK(latest_rev(db, S, STELE_END) == 7);
    CHECK(latest_rev(db, S, 2) == STELE_NONE);
    CHECK(latest_rev(db, S, 3) == 3);
    CHECK(latest_rev(db, S, 100) == 7);
    /* Older than every kept one, with 5 kept: refused. */
    stele_snapshot_in old = {1, 1, 0, "x", 1};
    CHECK_RC(stele_put_snapshot(db, S, &old), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "keeps its 5 latest") != NULL);
    /* Same revision: replaced. */
    put_snap(db, S, 5, "{\"total\":\"again\"}");
    stele_snapshot *g = NULL;
    CHECK_OK(stele_get_snapshot(db, S, 5, &g));
    CHECK(g && g->revision == 5 && g->state_len == 17 && !memcmp(g->state, "{\"total\":\"again\"}", 17));
    stele_free(g);
    /* Load: snapshot 7 and events 8..11. */
    stele_snapshot *ls;
    stele_page *ev;
    CHECK_OK(stele_load_stream(db, S, 100, &ls, &ev));
    CHECK(ls && ls->revision == 7);
    CHECK(stele_page_count(ev) == 4 && stele_page_event(ev, 0)->revision == 8);
    uint64_t nx;
    CHECK(stele_page_next(ev, &nx) == 0);
    stele_free(ls);
    stele_page_free(ev);
    /* Load with a small limit: continue with stele_read_stream. */
    CHECK_OK(stele_load_stream(db, S, 3, &ls, &ev));
    CHECK(stele_page_count(ev) == 3 && stele_page_next(ev, &nx) == 1 && nx == 11);
    stele_free(ls);
    stele_page_free(ev);
    /* Snapshot at the last revision: load has no events. */
    put_snap(db, S, 11, "{\"total\":110}");
    CHECK_OK(stele_load_stream(db, S, 100, &ls, &ev));
    CHECK(ls && ls->revision == 11 && stele_page_count(ev) == 0);
    stele_free(ls);
    stele_page_free(ev);
    /* Lowering maxSnapshots drops the oldest at once: 7 and 11 remain. */
    set_meta(db, S, 0, 0, 0, 2);
    CHECK(latest_rev(db, S, 6) == STELE_NONE);
    CHECK(latest_rev(db, S, 10) == 7);
    /* Retention hides events right after the snapshot: the load shows the
     * gap (first event above snapshot + 1). */
    set_meta(db, S, 0, 0, 9, 2);
    put_snap(db, S, 8, "{\"total\":80}");
    CHECK(latest_rev(db, S, 7) == STELE_NONE); /* 7 was the oldest of 2 */
    stele_close(db);
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK(latest_rev(db, S, STELE_END) == 11);
    /* Soft delete: its snapshots go with its events; recreate continues. */
    CHECK_OK(stele_delete_stream(db, S, STELE_ANY, NULL));
    CHECK_RC(stele_get_snapshot(db, S, STELE_END, &g), STELE_ENOTFOUND);
    CHECK_RC(stele_load_stream(db, S, 10, &ls, &ev), STELE_ENOTFOUND);
    append_n(db, S, 2); /* revisions 12, 13 */
    CHECK(latest_rev(db, S, STELE_END) == STELE_NONE);
    stele_snapshot_in below = {11, 1, 0, "x", 1};
    CHECK_RC(stele_put_snapshot(db, S, &below), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "soft delete") != NULL);
    put_snap(db, S, 12, "{\"total\":1}");
    CHECK_OK(stele_load_stream(db, S, 100, &ls, &ev));
    CHECK(ls && ls->revision == 12 && stele_page_count(ev) == 1 &&
          stele_page_event(ev, 0)->revision == 13);
    stele_free(ls);
    stele_page_free(ev);
    /* Metadata survives the soft delete (it was set before). */
    stele_stream_metadata *md;
    CHECK_OK(stele_get_stream_metadata(db, S, &md));
    CHECK(md->version == 1 && md->truncate_before == 9 && md->max_snapshots == 2);
    stele_free(md);
    /* Tombstone: everything is gone for good. */
    CHECK_OK(stele_tombstone_stream(db, S, STELE_ANY, NULL));
    CHECK_RC(stele_get_snapshot(db, S, STELE_END, &g), STELE_EDELETED);
    CHECK_RC(stele_get_stream_metadata(db, S, &md), STELE_EDELETED);
    /* Snapshots and metadata are never in $all. */
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(st.events == 14);
    stele_page *all;
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 1000, &all));
    CHECK(stele_page_count(all) == 14);
    stele_page_free(all);
    /* A second stream whose soft delete leaves one of three snapshots. */
    append_n(db, "Order-2", 4);
    put_snap(db, "Order-2", 1, "{}");
    put_snap(db, "Order-2", 3, "{}");
    CHECK_OK(stele_delete_stream(db, "Order-2", STELE_ANY, NULL));
    append_n(db, "Order-2", 2);
    put_snap(db, "Order-2", 4, "{}");
    stele_close(db);
    /* The index keeps exactly the one live snapshot (the tombstone and the
     * soft delete dropped the others), also when rebuilt from the log. */
    if (t_store_is_local()) {
        CHECK(check_kept(dir) == 1);
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s/index'", dir);
        CHECK(system(cmd) == 0);
    }
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK(latest_rev(db, "Order-2", STELE_END) == 4);
    stele_close(db);
    if (t_store_is_local())
        CHECK(check_kept(dir) == 1);
    t_store_drop(dir);
}

/* ------------------------------------------------------------ errors */

typedef struct snapshot_of_store {
    uint64_t log_bytes, version, snap_rev, events;
} sos;

static sos take(stele_db *db, const char *stream)
{
    sos x = {0};
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    x.log_bytes = st.log_bytes;
    x.events = st.events;
    stele_stream_metadata *md = NULL;
    if (stele_get_stream_metadata(db, stream, &md) == 0)
        x.version = md->version;
    stele_free(md);
    stele_snapshot *s = NULL;
    if (stele_get_snapshot(db, stream, STELE_END, &s) == 0 && s)
        x.snap_rev = s->revision;
    stele_free(s);
    return x;
}

static void expect_err(stele_db *db, const char *stream, int got, int want, const char *text,
                       const char *what)
{
    if (got != want || (text && !strstr(stele_errmsg(), text))) {
        fprintf(stderr, "%s: got %s '%s', want %s containing '%s'\n", what, stele_errname(got),
                stele_errmsg(), stele_errname(want), text ? text : "");
        t_failures++;
        t_fail_hook();
    }
    (void)db;
    (void)stream;
}

static void test_errors(void)
{
    const char *dir = t_store("smeta-err");
    stele_options opts = {0};
    opts.max_event_size = 4096;
    stele_db *db;
    CHECK_OK(stele_open(dir, &opts, &db));
    const char *S = "Acct-1";
    append_n(db, S, 3);
    set_meta(db, S, 0, 0, 0, 0);
    put_snap(db, S, 1, "{\"b\":1}");
    sos before = take(db, S);

    struct {
        const char *custom;
        size_t len; /* 0: strlen */
        int want;
        const char *text;
    } bad_custom[] = {
        {"[1]", 0, STELE_EINVAL, "must be a JSON object"},
        {"{\"a\":1,}", 0, STELE_EINVAL, "not valid JSON"},
        {"{\"a\":01}", 0, STELE_EINVAL, "leading zero"},
        {"{\"a\":\"x\\q\"}", 0, STELE_EINVAL, "invalid escape"},
        {"{\"a\":\"\xc3\x28\"}", 0, STELE_EINVAL, "invalid UTF-8"},
        {"{\"a\":\"\\ud800\"}", 0, STELE_EINVAL, "surrogate"},
        {"{\"a\":1} x", 0, STELE_EINVAL, "data after the JSON value"},
        {"{\"a\":tru}", 0, STELE_EINVAL, "invalid literal"},
        {"{\"maxAge\":1}", 0, STELE_EINVAL, "reserved"},
        {"{\"x\":1,\"max\\u0043ount\":1}", 0, STELE_EINVAL, "reserved"},
        {"{\"$tb2\":{}}", 0, STELE_EINVAL, "reserved"}, /* $acl is allowed: access control */
        {"{\"a\":1,\"b\":2,\"a\":3}", 0, STELE_EINVAL, "appears twice"},
        {"{\"a\":1,\"\\u0061\":2}", 0, STELE_EINVAL, "appears twice"},
        {"{\"a\":\"tab\there\"}", 0, STELE_EINVAL, "control character"},
    };
    for (size_t i = 0; i < sizeof bad_custom / sizeof bad_custom[0]; i++) {
        stele_stream_metadata md = {0};
        md.custom = bad_custom[i].custom;
        md.custom_len = bad_custom[i].len ? bad_custom[i].len : strlen(bad_custom[i].custom);
        char what[64];
        snprintf(what, sizeof what, "bad custom %zu", i);
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL),
                   bad_custom[i].want, bad_custom[i].text, what);
    }
    /* Nesting, size and member limits. */
    {
        char deep[300];
        size_t n = 0;
        deep[n++] = '{';
        memcpy(deep + n, "\"a\":", 4);
        n += 4;
        for (int d = 0; d < 70; d++)
            deep[n++] = '[';
        for (int d = 0; d < 70; d++)
            deep[n++] = ']';
        deep[n++] = '}';
        stele_stream_metadata md = {0};
        md.custom = deep;
        md.custom_len = n;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL), STELE_EINVAL,
                   "nesting deeper than 64", "deep custom");
        size_t big = STELE_MAX_CUSTOM_METADATA + 1;
        char *b = malloc(big);
        memset(b, ' ', big);
        b[0] = '{';
        b[big - 1] = '}';
        md.custom = b;
        md.custom_len = big;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL), STELE_ETOOBIG,
                   "65536-byte limit", "big custom");
        size_t k = 0;
        b[k++] = '{';
        for (unsigned f = 0; f <= STELE_MAX_CUSTOM_FIELDS; f++)
            k += (size_t)sprintf(b + k, "%s\"f%u\":%u", f ? "," : "", f, f);
        b[k++] = '}';
        md.custom_len = k;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL), STELE_EINVAL,
                   "more than 1000 members", "many members");
        free(b);
    }
    {
        stele_stream_metadata md = {0};
        md.max_snapshots = STELE_MAX_SNAPSHOTS_LIMIT + 1;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL), STELE_EINVAL,
                   "max_snapshots 1001", "max_snapshots");
        md.max_snapshots = 0;
        md.max_age_us = (uint64_t)INT64_MAX + 1;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL), STELE_EINVAL,
                   "max_age_us", "max_age");
        md.max_age_us = 0;
        md.max_count = UINT64_MAX;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL), STELE_EINVAL,
                   "max_count", "max_count");
        md.max_count = 0;
        md.truncate_before = (uint64_t)INT64_MAX + 5;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL), STELE_EINVAL,
                   "truncate_before", "truncate_before");
        md.truncate_before = 0;
        md.custom_len = 3;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_ANY, NULL), STELE_EINVAL,
                   "custom is NULL", "custom NULL");
        md.custom_len = 0;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, -7, NULL), STELE_EINVAL,
                   "expected metadata version -7", "expected -7");
        expect_err(db, "$x", stele_set_stream_metadata(db, "$x", &md, STELE_ANY, NULL),
                   STELE_EINVAL, "reserved", "$ stream");
        expect_err(db, S, stele_set_stream_metadata(db, S, NULL, STELE_ANY, NULL), STELE_EINVAL,
                   "md is NULL", "NULL md");
        uint64_t cur = 77;
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, 5, &cur), STELE_EWRONGREV,
                   "expected metadata version 5, but its version is 0", "wrong version");
        CHECK(cur == 0);
        expect_err(db, S, stele_set_stream_metadata(db, S, &md, STELE_NO_STREAM, &cur),
                   STELE_EWRONGREV, "expected metadata version none", "version none");
    }
    /* Bad snapshots. */
    {
        char big[5000];
        memset(big, 'x', sizeof big);
        struct {
            const char *stream;
            stele_snapshot_in sn;
            int want;
            const char *text;
        } bad[] = {
            {S, {3, 0, 0, "x", 1}, STELE_EINVAL, "beyond the last revision 2"},
            {S, {(uint64_t)INT64_MAX + 1, 0, 0, "x", 1}, STELE_EINVAL, "larger than"},
            {S, {1, 0, 0x2, "x", 1}, STELE_EINVAL, "unknown flags"},
            {S, {1, 0, STELE_EVENT_JSON, "", 0}, STELE_EINVAL, "cannot be empty"},
            {S, {1, 0, 0, NULL, 4}, STELE_EINVAL, "state is NULL"},
            {S, {1, 0, 0, big, sizeof big}, STELE_ETOOBIG, "4096-byte limit"},
            {"Never-1", {0, 0, 0, "x", 1}, STELE_ENOTFOUND, "has no events"},
            {"$all", {0, 0, 0, "x", 1}, STELE_EINVAL, "reserved"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char what[64];
            snprintf(what, sizeof what, "bad snapshot %zu", i);
            expect_err(db, bad[i].stream, stele_put_snapshot(db, bad[i].stream, &bad[i].sn),
                       bad[i].want, bad[i].text, what);
        }
        expect_err(db, S, stele_put_snapshot(db, S, NULL), STELE_EINVAL, "snap is NULL", "NULL");
    }
    sos after = take(db, S);
    CHECK(after.log_bytes == before.log_bytes && after.version == before.version &&
          after.snap_rev == before.snap_rev && after.events == before.events);

    /* Metadata before any event is allowed; a snapshot is not. */
    stele_stream_metadata md = {0};
    md.max_count = 2;
    md.custom = "{\"owner\":\"ops\"}";
    md.custom_len = strlen(md.custom);
    uint64_t ver;
    CHECK_OK(stele_set_stream_metadata(db, "Fresh-1", &md, STELE_NO_STREAM, &ver));
    CHECK(ver == 0);
    stele_stream_info info;
    CHECK_OK(stele_stream_head(db, "Fresh-1", &info));
    CHECK(info.last_revision == STELE_NONE && !info.deleted);
    stele_page *pg = NULL;
    CHECK_RC(stele_read_stream(db, "Fresh-1", 0, STELE_FORWARDS, 10, &pg), STELE_ENOTFOUND);
    stele_snapshot_in sn = {0, 0, 0, "x", 1};
    expect_err(db, "Fresh-1", stele_put_snapshot(db, "Fresh-1", &sn), STELE_ENOTFOUND,
               "has no events", "metadata-only snapshot");
    /* The first append obeys the metadata at once. */
    append_n(db, "Fresh-1", 5);
    CHECK_OK(stele_read_stream(db, "Fresh-1", 0, STELE_FORWARDS, 10, &pg));
    CHECK(stele_page_count(pg) == 2 && stele_page_event(pg, 0)->revision == 3);
    stele_page_free(pg);
    /* Soft-deleted: snapshots refused; tombstoned: EDELETED for all. */
    CHECK_OK(stele_delete_stream(db, "Fresh-1", STELE_ANY, NULL));
    expect_err(db, "Fresh-1", stele_put_snapshot(db, "Fresh-1", &sn), STELE_ENOTFOUND,
               "is deleted", "deleted snapshot");
    CHECK_OK(stele_set_stream_metadata(db, "Fresh-1", &md, 0, &ver)); /* allowed */
    CHECK(ver == 1);
    CHECK_OK(stele_tombstone_stream(db, "Fresh-1", STELE_ANY, NULL));
    expect_err(db, "Fresh-1", stele_put_snapshot(db, "Fresh-1", &sn), STELE_EDELETED,
               "tombstoned", "tombstoned snapshot");
    expect_err(db, "Fresh-1", stele_set_stream_metadata(db, "Fresh-1", &md, STELE_ANY, NULL),
               STELE_EDELETED, "tombstoned", "tombstoned metadata");
    stele_snapshot *g = NULL;
    CHECK_RC(stele_get_snapshot(db, "Never-2", STELE_END, &g), STELE_ENOTFOUND);
    stele_stream_metadata *got = NULL;
    CHECK_RC(stele_get_stream_metadata(db, "Never-2", &got), STELE_ENOTFOUND);
    stele_snapshot *ls;
    stele_page *ev;
    CHECK_RC(stele_load_stream(db, "Never-2", 10, &ls, &ev), STELE_ENOTFOUND);
    CHECK_RC(stele_load_stream(db, S, 10, NULL, &ev), STELE_EINVAL);
    /* Exactly STELE_MAX_CUSTOM_FIELDS members is fine. */
    {
        char *b = malloc(STELE_MAX_CUSTOM_METADATA);
        size_t k = 0;
        b[k++] = '{';
        for (unsigned f = 0; f < STELE_MAX_CUSTOM_FIELDS; f++)
            k += (size_t)sprintf(b + k, "%s\"f%u\":%u", f ? "," : "", f, f);
        b[k++] = '}';
        stele_stream_metadata many = {0};
        many.custom = b;
        many.custom_len = k;
        CHECK_OK(stele_set_stream_metadata(db, S, &many, STELE_ANY, &ver));
        CHECK(ver == 1);
        free(b);
    }
    /* Custom bytes come back exactly, whitespace and escapes included. */
    const char *exact = " {\n \"owner\" : \"t\\u00e4m \xc3\xa4\" ,\"n\":[1 , 2.5E-3,{}]\t} ";
    md.custom = exact;
    md.custom_len = strlen(exact);
    CHECK_OK(stele_set_stream_metadata(db, S, &md, STELE_STREAM_EXISTS, &ver));
    CHECK(ver == 2);
    CHECK_OK(stele_get_stream_metadata(db, S, &got));
    CHECK(got->custom_len == strlen(exact) && !memcmp(got->custom, exact, strlen(exact)) &&
          got->max_count == 2 && got->version == 2);
    stele_free(got);
    stele_close(db);
    char report[1024];
    CHECK_OK(t_store_check(dir, report, sizeof report));
    t_store_drop(dir);
}

/* ------------------------------------------------------------ crash */

/* The child: run ops until killed, reporting each finished one. */
static void crash_child(const char *dir, uint64_t seed, int fd)
{
    stele_db *db;
    if (stele_open(dir, NULL, &db))
        _exit(3);
    static model m;
    model_init(&m, "crash");
    rng g = {seed};
    for (int i = 0;; i++) {
        op o;
        gen_op(&g, &m, i, &o, 0);
        uint64_t v, mv;
        int rc = do_op(db, &m, &o, &v);
        if (rc != model_apply(&m, &o, &mv))
            _exit(4);
        uint32_t done = (uint32_t)i;
        if (write(fd, &done, sizeof done) != (ssize_t)sizeof done)
            _exit(5);
    }
}

/* Models of the first n ops (a) and of n + 1 ops (b). */
static void crash_models(uint64_t seed, int n, model *a, model *b)
{
    model_init(a, "crash");
    rng g = {seed};
    for (int i = 0; i <= n; i++) {
        op o;
        if (i == n)
            memcpy(b, a, sizeof *a);
        gen_op(&g, i == n ? b : a, i, &o, 0);
        uint64_t v;
        model_apply(i == n ? b : a, &o, &v);
    }
}

static void reopen_compare(const char *dir, model *a, model *b, const char *what)
{
    stele_db *db;
    int rc = stele_open(dir, NULL, &db);
    CHECK_RC(rc, 0);
    if (rc)
        return;
    int ba = compare(db, a, 1);
    int bb = ba ? compare(db, b, 1) : 0;
    if (ba && bb) {
        fprintf(stderr, "%s: the store matches neither model; against the finished ops:\n", what);
        compare(db, a, 0);
        t_failures++;
        t_fail_hook();
    }
    stele_close(db);
    /* Reads cannot tell whether a snapshot put in flight landed (it changes
     * no event): either model's count of kept snapshots is then right. */
    long kept = t_store_is_local() ? check_kept(dir) : -1;
    CHECK(kept == -1 || (!ba && kept == model_kept(a)) || (!bb && kept == model_kept(b)));
    if (ba && !bb)
        memcpy(a, b, sizeof *a); /* the op in flight was durable */
}

static void test_crash(void)
{
    int rounds = quick ? 2 : 5;
    static model a, b;
    for (int round = 0; round < rounds; round++) {
        const char *dir = t_store("smeta-crash");
        uint64_t seed = t_rand() | 1;
        int pfd[2];
        CHECK(pipe(pfd) == 0);
        pid_t pid = fork();
        if (pid == 0) {
            close(pfd[0]);
            crash_child(dir, seed, pfd[1]);
        }
        close(pfd[1]);
        /* Let it finish a random number of ops, then kill it mid-way. */
        uint32_t want = 20 + (uint32_t)t_rand_below(quick ? 60 : 200), done = 0, x;
        int last = -1;
        while (done < want && read(pfd[0], &x, sizeof x) == (ssize_t)sizeof x) {
            last = (int)x;
            done++;
        }
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        while (read(pfd[0], &x, sizeof x) == (ssize_t)sizeof x)
            last = (int)x;
        close(pfd[0]);
        int n = last + 1;
        crash_models(seed, n, &a, &b);
        char what[96];
        snprintf(what, sizeof what, "round %d (%d ops finished), after SIGKILL", round, n);
        reopen_compare(dir, &a, &b, what);
        /* Rebuild the local engine's index from the log: remove it, or say
         * another boot. (Another backend: a second reopen.) */
        int local = t_store_is_local();
        if (local && round % 2 == 0) {
            char cmd[700];
            snprintf(cmd, sizeof cmd, "rm -rf '%s/index'", dir);
            CHECK(system(cmd) == 0);
        } else if (local) {
            char path[600];
            snprintf(path, sizeof path, "%s/stele.lock", dir);
            FILE *f = fopen(path, "w");
            CHECK(f != NULL);
            if (f) {
                fputs("open 00000000-1111-2222-3333-444444444444\n", f);
                fclose(f);
            }
        }
        snprintf(what, sizeof what, "round %d, after an index rebuild", round);
        memcpy(&b, &a, sizeof a);
        reopen_compare(dir, &a, &b, what);
        t_store_drop(dir);
    }
}

int main(void)
{
    quick = getenv("TEST_QUICK") != NULL;
    t_seed();
    int passed = 0;
#define STEP(fn)                                                                         \
    do {                                                                                 \
        int before_ = t_failures;                                                        \
        fn;                                                                              \
        if (t_failures == before_)                                                       \
            passed++;                                                                    \
        printf("%s: %s\n", #fn, t_failures == before_ ? "ok" : "FAILED");               \
        fflush(stdout);                                                                  \
    } while (0)
    STEP(test_errors());
    STEP(test_retention());
    STEP(test_max_age());
    STEP(test_random());
    STEP(test_crash());
    return t_done("test_streams_meta", passed);
}
