/*
 * local_check.c - `stele check`: verify a closed local store without
 * changing it. It walks the whole log once, checking every record's
 * checksum and framing, commit completeness, gapless positions, segment
 * headers and seals, and each stream's revisions; and it checks the index
 * against the log in both directions: every indexed commit, id and sparse
 * position entry points at the right record, and every commit, client id
 * and stream of the log is indexed; with secondary indexes, every item a
 * commit makes (idx_sec_check) and its time entry are there, and there are
 * no others. The first damage found is reported
 * with its segment and offset.
 *
 * Records after the index checkpoint are not damage: they are replayed at
 * the next open (an incomplete commit there, a torn write, is cut then).
 *
 * Scavenged segments may skip positions (and a stream's revisions) where
 * events were removed; nowhere else. Each gap is remembered, so that a
 * revision gap must be covered by removed positions, and index entries of
 * removed events (commits, ids, sparse positions: scavenging leaves the
 * index alone) must fall inside gaps.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/local_chain.h"
#include "index/index.h"
#include "log/log.h"
#include "util/util.h"

/* Per-stream expectations, in a small open-addressing table. */
typedef struct sslot {
    char *name;
    uint16_t len;
    uint64_t next_rev;  /* revision the next commit must start at */
    uint64_t last_pos;
    uint64_t truncate_before;
    uint32_t flags;
    uint64_t removed_at; /* removed positions before this stream's last commit */
    uint64_t meta_seq, meta_loc; /* metadata records seen, the latest's loc */
} sslot;

typedef struct stable {
    sslot *s;
    size_t cap, n;
} stable;

static uint64_t hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static sslot *st_get(stable *t, const char *name, size_t len)
{
    if (t->n * 2 >= t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        sslot *ns = calloc(cap, sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t i = 0; i < t->cap; i++)
            if (t->s[i].name) {
                size_t j = hash(t->s[i].name, t->s[i].len) & (cap - 1);
                while (ns[j].name)
                    j = (j + 1) & (cap - 1);
                ns[j] = t->s[i];
            }
        free(t->s);
        t->s = ns;
        t->cap = cap;
    }
    size_t j = hash(name, len) & (t->cap - 1);
    while (t->s[j].name) {
        if (t->s[j].len == len && !memcmp(t->s[j].name, name, len))
            return &t->s[j];
        j = (j + 1) & (t->cap - 1);
    }
    t->s[j].name = malloc(len + 1);
    if (!t->s[j].name)
        return NULL;
    memcpy(t->s[j].name, name, len);
    t->s[j].name[len] = 0;
    t->s[j].len = (uint16_t)len;
    t->s[j].last_pos = UINT64_MAX;
    t->n++;
    return &t->s[j];
}

static void st_free(stable *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->s[i].name);
    free(t->s);
}

static int damage(uint64_t at, const char *fmt, const char *detail)
{
    char name[32];
    log_seg_name(loc_seg(at), name);
    return err_set(STELE_ECORRUPT, "segment %s offset %u: %s%s", name, loc_off(at), fmt,
                   detail ? detail : "");
}

typedef struct checker {
    logf *lg;
    idx *ix;
    MDB_txn *txn;
    idx_ckpt ck;
    int have_index;
    stable streams;
    uint64_t commits, client_ids, events, markers, pos_entries;
    uint64_t metas, snaps, snap_entries; /* stream metadata and snapshots */
    int unindexed; /* records past the checkpoint (replayed at next open) */
    /* positions removed by scavenging: sorted [start, end) ranges */
    uint64_t (*gaps)[2];
    size_t ngaps, gapcap;
    uint64_t removed;  /* positions in gaps */
    uint64_t next_pos; /* after the walk: the next position of the log */
    uint64_t removed_commits, removed_ids;
    /* secondary indexes: items and time entries the indexed commits need */
    uint64_t sec_items, time_entries;
    int64_t last_created;
    int have_created;
    buf cbuf;
} checker;

/* A delete recorded as an event of `$deletes` (REC_REMOVES, record.h):
 * well formed, in `$deletes`, and its effect applied like a marker's. */
static int check_removes(checker *k, const rec *r, uint64_t at)
{
    rec_removes rm;
    if (rec_removes_decode(r, &rm) || r->stream_len != sizeof REC_REMOVES_STREAM - 1 ||
        memcmp(r->stream, REC_REMOVES_STREAM, r->stream_len) ||
        r->type_len != sizeof REC_REMOVES_TYPE - 1 ||
        memcmp(r->type, REC_REMOVES_TYPE, r->type_len) ||
        (rm.stream_len == r->stream_len && !memcmp(rm.stream, r->stream, r->stream_len)))
        return damage(at, "malformed stream delete record", NULL);
    sslot *s = st_get(&k->streams, rm.stream, rm.stream_len);
    if (!s)
        return err_set(STELE_ENOMEM, "out of memory");
    if (rm.kind == REC_DELETE) {
        s->truncate_before = rm.truncate_before;
        s->flags |= IDX_DELETED;
    } else {
        s->flags |= IDX_TOMBSTONED;
    }
    k->markers++;
    return 0;
}

/* Positions [from, to) were removed by scavenging. */
static int add_gap(checker *k, uint64_t from, uint64_t to)
{
    if (k->ngaps == k->gapcap) {
        size_t cap = k->gapcap ? k->gapcap * 2 : 64;
        uint64_t(*ng)[2] = realloc(k->gaps, cap * sizeof *ng);
        if (!ng)
            return err_set(STELE_ENOMEM, "out of memory");
        k->gaps = ng;
        k->gapcap = cap;
    }
    k->gaps[k->ngaps][0] = from;
    k->gaps[k->ngaps][1] = to;
    k->ngaps++;
    k->removed += to - from;
    return 0;
}

/* Whether positions [from, to) all lie in one gap. */
static int in_gap(const checker *k, uint64_t from, uint64_t to)
{
    size_t lo = 0, hi = k->ngaps;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (k->gaps[mid][0] <= from)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && to <= k->gaps[lo - 1][1] && from < k->gaps[lo - 1][1];
}

/* Check one complete event commit (or one stream's run of records in a
 * multi-stream commit) against the index. */
static int check_commit(checker *k, uint64_t start, uint64_t end, const rec *first,
                        uint32_t count, const uint8_t (*ids)[16], const uint8_t *made)
{
    char what[512];
    idx_stream st;
    int rc = idx_stream_get(k->ix, k->txn, first->stream, first->stream_len, &st);
    if (rc) {
        snprintf(what, sizeof what, "stream '%.*s' is not in the index", first->stream_len,
                 first->stream);
        return damage(start, "index: ", what);
    }
    idx_rev_cursor cur = {0};
    idx_commit c;
    rc = idx_rev_open(k->ix, k->txn, st.sid, &cur);
    if (rc == 0)
        rc = idx_rev_seek(&cur, first->revision, 0, &c);
    idx_rev_close(&cur);
    if (rc || c.first_rev != first->revision || c.loc != start || c.count != count ||
        c.first_pos != first->position || c.bytes != end - start) {
        snprintf(what, sizeof what, "commit of '%.*s' at revision %llu is missing or wrong",
                 first->stream_len, first->stream, (unsigned long long)first->revision);
        return damage(start, "index: ", what);
    }
    for (uint32_t i = 0; i < count; i++) {
        if (made[i])
            continue;
        uint64_t sid, rev, pos;
        rc = idx_id_get(k->ix, k->txn, ids[i], &sid, &rev, &pos);
        if (rc || sid != st.sid || rev != first->revision + i || pos != first->position + i) {
            char t[37];
            stele_uuid_format(ids[i], t);
            snprintf(what, sizeof what, "event id %s is missing or wrong", t);
            return damage(start, "index: ", what);
        }
        k->client_ids++;
    }
    k->commits++;
    return 0;
}

/* The secondary index items and time entry of the commit [start, end). */
static int check_sec(checker *k, uint64_t start, uint64_t end, const rec *first)
{
    int rc = 0;
    if (k->ix->sec_on) {
        /* An entry only where time advances, as idx's time_add makes them
         * (a commit stamped earlier than the one before, which no writer
         * makes but a file may hold, has none). */
        int first_time = !k->have_created || first->created_us > k->last_created;
        if (first_time && k->removed)
            first_time = 2; /* see idx_sec_check */
        k->cbuf.len = 0;
        rc = buf_reserve(&k->cbuf, (size_t)(end - start));
        if (rc == 0)
            rc = log_read(k->lg, start, k->cbuf.p, (size_t)(end - start));
        if (rc == 0)
            rc = idx_sec_check(k->ix, k->txn, k->cbuf.p, (size_t)(end - start), start, first_time,
                               &k->sec_items);
        if (rc == STELE_ECORRUPT) {
            char why[400];
            snprintf(why, sizeof why, "%s", stele_errmsg());
            return damage(start, "", why);
        }
        if (rc)
            return rc;
        k->time_entries += first_time != 0;
        if (first_time)
            k->last_created = first->created_us;
        k->have_created = 1;
    }
    return 0;
}

static int check_streammeta(checker *k, const rec *r, uint64_t at);

/*
 * A complete multi-stream commit [start, end): each stream's revisions go
 * on from its previous commit and ascend by one inside this one; each run
 * of one stream's records has its commit entry and ids in the index; the
 * state snapshots are of revisions their streams have; the secondary items
 * of the whole commit are there.
 */
static int check_multi(checker *k, uint64_t start, uint64_t end, int indexed)
{
    size_t n = (size_t)(end - start), off = 0;
    buf b = {0};
    int rc = buf_reserve(&b, n);
    if (rc == 0)
        rc = log_read(k->lg, start, b.p, n);
    uint32_t cap = (uint32_t)(n / REC_MIN_SIZE) + 1;
    uint8_t(*ids)[16] = malloc((size_t)cap * 16);
    uint8_t *made = malloc(cap);
    const rec **seen = malloc((size_t)cap * sizeof *seen);
    rec *recs = malloc((size_t)cap * sizeof *recs);
    if (rc == 0 && (!ids || !made || !seen || !recs))
        rc = err_set(STELE_ENOMEM, "out of memory");
    size_t nseen = 0, nrec = 0, run0 = 0;
    while (rc == 0 && off <= n) {
        int end_ = off == n;
        rec *r = &recs[nrec];
        const char *why = "bad record";
        if (!end_ && rec_decode_trusted_in(b.p, off, n - off, r, &why) != REC_OK) {
            rc = damage(start + off, why, NULL);
            break;
        }
        int ev = !end_ && r->kind == REC_EVENT;
        /* The end of a run of one stream's records. */
        if (nrec > run0 && (!ev || r->stream_len != recs[run0].stream_len ||
                            memcmp(r->stream, recs[run0].stream, r->stream_len))) {
            uint64_t rs = start + (uint64_t)(recs[run0].at - b.p);
            uint64_t re = start + off;
            if (indexed && (rc = check_commit(k, rs, re, &recs[run0], (uint32_t)(nrec - run0),
                                              (const uint8_t(*)[16])ids + run0, made + run0)))
                break;
            run0 = nrec;
        }
        if (end_)
            break;
        if (!ev) {
            if ((rc = check_streammeta(k, r, start + off)))
                break;
            off += r->len;
            continue;
        }
        sslot *sl = st_get(&k->streams, r->stream, r->stream_len);
        if (!sl) {
            rc = err_set(STELE_ENOMEM, "out of memory");
            break;
        }
        if (sl->flags & IDX_TOMBSTONED) {
            rc = damage(start + off, "event in a tombstoned stream", NULL);
            break;
        }
        int again = 0;
        for (size_t j = 0; j < nseen && !again; j++)
            again = seen[j]->stream_len == r->stream_len &&
                    !memcmp(seen[j]->stream, r->stream, r->stream_len);
        int ok = r->revision == sl->next_rev ||
                 (!again && r->revision > sl->next_rev &&
                  r->revision - sl->next_rev <= k->removed - sl->removed_at);
        if (!ok) {
            char what[64];
            snprintf(what, sizeof what, " (revision %llu, expected %llu)",
                     (unsigned long long)r->revision, (unsigned long long)sl->next_rev);
            rc = damage(start + off, "stream revisions are not contiguous", what);
            break;
        }
        if (!again)
            seen[nseen++] = r;
        sl->next_rev = r->revision + 1;
        sl->last_pos = r->position;
        sl->flags &= ~IDX_DELETED;
        sl->removed_at = k->removed;
        memcpy(ids[nrec], r->id, 16);
        made[nrec] = (r->flags & REC_ID_MADE) != 0;
        nrec++;
        off += r->len;
    }
    if (rc == 0 && indexed && nrec)
        rc = check_sec(k, start, end, &recs[0]);
    free(ids);
    free(made);
    free(seen);
    free(recs);
    buf_free(&b);
    return rc;
}

/* A stream metadata or snapshot record in the log walk: metadata versions
 * count up from 0; a snapshot is of a revision its stream has. */
static int check_streammeta(checker *k, const rec *r, uint64_t at)
{
    sslot *s = st_get(&k->streams, r->stream, r->stream_len);
    if (!s)
        return err_set(STELE_ECORRUPT, "out of memory");
    /* After scavenging, older metadata versions and the events under a
     * snapshot may be gone from before this record. */
    int gaps = log_scavenged_upto(k->lg, loc_seg(at));
    if (r->kind == REC_METADATA) {
        if (r->position != s->meta_seq && !(gaps && r->position > s->meta_seq))
            return damage(at, "stream metadata version out of sequence", NULL);
        s->meta_seq = r->position + 1;
        s->meta_loc = at;
        k->metas++;
        return 0;
    }
    if ((s->flags & IDX_TOMBSTONED) || (r->revision >= s->next_rev && !gaps))
        return damage(at, "snapshot of a revision its stream does not have", NULL);
    k->snaps++;
    return 0;
}

/* The walk of check_log: where it is in the log, and in the commit whose
 * records it is reading (seen of count records so far). */
typedef struct lwalk {
    checker *k;
    log_iter it;
    uint32_t nsegs;
    uint32_t seg_checked; /* the segment whose header was compared */
    uint32_t scav_seg;    /* the segment `scavenged` describes */
    int scavenged;
    uint64_t next_pos;
    uint64_t tail_note; /* an incomplete commit at the tail, cut at next open */
    uint64_t commit_start;
    uint32_t count, seen, cap;
    uint8_t (*ids)[16];
    uint8_t *made;
    rec first; /* the commit's first event */
    char first_stream[256];
    int multi, in_states;
} lwalk;

/* A record at `at` in a segment not seen yet: its header's first position
 * must continue the log. */
static int walk_segment_header(lwalk *w, uint64_t at)
{
    if (loc_seg(at) == w->seg_checked)
        return 0;
    w->seg_checked = loc_seg(at);
    if (w->k->lg->segs[w->seg_checked]->first_position != w->next_pos)
        return damage(loc_make(w->seg_checked, 0), "segment header's first position is wrong",
                      NULL);
    return 0;
}

/* The data stopped at a bad record (st < 0, at `at`) or in the middle of
 * a commit. Past the checkpoint in the last segment that is a torn write
 * the next open cuts (noted, not damage); anywhere else, damage. */
static int walk_bad_end(lwalk *w, int st, uint64_t at)
{
    checker *k = w->k;
    uint64_t bad = st < 0 ? at : w->it.loc;
    uint64_t cstart = w->seen < w->count ? w->commit_start : bad;
    uint64_t from_pos = w->seen < w->count ? w->first.position : w->next_pos;
    if (loc_seg(bad) == w->nsegs - 1 && !log_seg_scavenged(k->lg, loc_seg(bad)) &&
        (!k->have_index || cstart >= k->ck.loc) &&
        !(st < 0 && log_valid_record_after(k->lg, bad, from_pos))) {
        w->tail_note = cstart;
        err_clear();
        return 0;
    }
    return st < 0 ? st : damage(bad, "incomplete commit", NULL);
}

/* The data ended between commits: only the last segment may end unsealed. */
static int walk_end(lwalk *w)
{
    if (loc_seg(w->it.loc) < w->nsegs - 1)
        return damage(w->it.loc, "data ends without a seal, but later segments exist", NULL);
    return 0;
}

static int walk_seal(lwalk *w, const rec *r, uint64_t at)
{
    if (w->seen < w->count || r->position < w->next_pos ||
        (r->position > w->next_pos && !w->scavenged))
        return damage(at, "seal record does not match the segment's events", NULL);
    int rc = r->position > w->next_pos ? add_gap(w->k, w->next_pos, r->position) : 0;
    w->next_pos = r->position;
    return rc;
}

/* The next record of a multi-stream commit: events at consecutive
 * positions, then state snapshots (the streams' revisions are checked in
 * check_multi). 1: a snapshot, handled; 0: an event, for walk_event. */
static int walk_multi_next(lwalk *w, const rec *r, uint64_t at)
{
    checker *k = w->k;
    if (!(r->flags & REC_MULTI) || r->commit_index != w->seen || r->commit_count != w->count ||
        (r->kind == REC_EVENT ? w->in_states || r->position != w->next_pos
                              : r->kind != REC_SNAPSHOT))
        return damage(at, "record out of sequence in its multi-stream commit", NULL);
    if (r->kind != REC_SNAPSHOT)
        return 0;
    w->in_states = 1;
    if (++w->seen == w->count) {
        int rc = check_multi(k, w->commit_start, w->it.loc,
                             k->have_index && w->commit_start < k->ck.loc);
        if (rc)
            return rc;
    }
    return 1;
}

/* The next event of a single-stream commit: same stream, next revision
 * and position. */
static int walk_commit_next(lwalk *w, const rec *r, uint64_t at)
{
    if (r->kind != REC_EVENT || r->commit_index != w->seen || r->commit_count != w->count ||
        r->position != w->next_pos || r->revision != w->first.revision + w->seen ||
        r->stream_len != w->first.stream_len ||
        memcmp(r->stream, w->first_stream, r->stream_len) || (r->flags & REC_MULTI))
        return damage(at, "record out of sequence in its commit", NULL);
    return 0;
}

/* An event starts a commit, of one stream or (REC_MULTI) of several: at
 * the next position (or past a scavenged gap), at index 0, and for one
 * stream at its next revision (or past revisions scavenging removed since
 * the stream's previous commit). */
static int walk_commit_start(lwalk *w, const rec *r, uint64_t at)
{
    checker *k = w->k;
    int gap_ok = w->scavenged && r->position > w->next_pos;
    if (r->commit_index != 0 || (r->position != w->next_pos && !gap_ok))
        return damage(at,
                      r->position != w->next_pos ? "position is not the next one (gap)"
                                                 : "commit does not start at index 0",
                      NULL);
    int rc;
    if (gap_ok) {
        if ((rc = add_gap(k, w->next_pos, r->position)))
            return rc;
        w->next_pos = r->position;
    }
    w->commit_start = at;
    w->count = r->commit_count;
    w->seen = 0;
    w->multi = (r->flags & REC_MULTI) != 0;
    w->in_states = 0;
    w->first = *r;
    if (!w->multi) {
        memcpy(w->first_stream, r->stream, r->stream_len);
        w->first.stream = w->first_stream;
    }
    if (w->cap < w->count) {
        free(w->ids);
        free(w->made);
        w->ids = malloc((size_t)w->count * 16);
        w->made = malloc(w->count);
        w->cap = w->ids && w->made ? w->count : 0;
        if (!w->cap)
            return err_set(STELE_ENOMEM, "out of memory");
    }
    if (w->multi)
        return 0;
    sslot *s = st_get(&k->streams, r->stream, r->stream_len);
    if (!s)
        return err_set(STELE_ENOMEM, "out of memory");
    if (s->flags & IDX_TOMBSTONED)
        return damage(at, "event in a tombstoned stream", NULL);
    if (r->revision != s->next_rev &&
        !(r->revision > s->next_rev && r->revision - s->next_rev <= k->removed - s->removed_at)) {
        char what[64];
        snprintf(what, sizeof what, " (revision %llu, expected %llu)",
                 (unsigned long long)r->revision, (unsigned long long)s->next_rev);
        return damage(at, "stream revisions are not contiguous", what);
    }
    return 0;
}

/* A delete or tombstone record of the older format (a record of its own
 * kind, not a `$deletes` event). */
static int walk_marker(lwalk *w, const rec *r)
{
    sslot *s = st_get(&w->k->streams, r->stream, r->stream_len);
    if (!s)
        return err_set(STELE_ENOMEM, "out of memory");
    if (r->kind == REC_DELETE) {
        s->truncate_before = r->position;
        s->flags |= IDX_DELETED;
    } else {
        s->flags |= IDX_TOMBSTONED;
    }
    w->k->markers++;
    return 0;
}

/* An event of the current commit passed its checks: count it, and once the
 * commit is complete check it against the index. */
static int walk_event(lwalk *w, const rec *r, uint64_t at)
{
    checker *k = w->k;
    memcpy(w->ids[w->seen], r->id, 16);
    w->made[w->seen] = (r->flags & REC_ID_MADE) != 0;
    w->next_pos++;
    k->events++;
    if (++w->seen < w->count)
        return 0;
    int indexed = k->have_index && w->commit_start < k->ck.loc;
    if (w->multi)
        return check_multi(k, w->commit_start, w->it.loc, indexed);
    sslot *s = st_get(&k->streams, w->first.stream, w->first.stream_len);
    s->next_rev = w->first.revision + w->count;
    s->last_pos = r->position;
    s->flags &= ~IDX_DELETED;
    s->removed_at = k->removed;
    int rc = 0;
    if (indexed && ((rc = check_commit(k, w->commit_start, w->it.loc, &w->first, w->count,
                                       (const uint8_t(*)[16])w->ids, w->made)) ||
                    (rc = check_sec(k, w->commit_start, w->it.loc, &w->first))))
        return rc;
    if (r->flags & REC_REMOVES)
        rc = check_removes(k, r, at);
    return rc;
}

/* One record that is not a seal. */
static int walk_record(lwalk *w, const rec *r, uint64_t at)
{
    checker *k = w->k;
    if (k->have_index && w->seen == w->count && at >= k->ck.loc)
        k->unindexed = 1;
    int rc;
    if (w->seen < w->count)
        rc = w->multi ? walk_multi_next(w, r, at) : walk_commit_next(w, r, at);
    else if (r->kind == REC_EVENT)
        rc = walk_commit_start(w, r, at);
    else if (r->kind == REC_METADATA || r->kind == REC_SNAPSHOT)
        return check_streammeta(k, r, at);
    else
        return walk_marker(w, r);
    if (rc)
        return rc < 0 ? rc : 0;
    return walk_event(w, r, at);
}

/* Walk the whole log once: framing, positions, revisions, and each commit
 * against the index (walk_* above). */
static int check_log(checker *k, char *summary, size_t summary_len)
{
    logf *lg = k->lg;
    lwalk w = {.k = k, .nsegs = atomic_load(&lg->nsegs), .seg_checked = lg->first_seg,
               .scav_seg = UINT32_MAX};
    if (w.nsegs == lg->first_seg)
        return err_set(STELE_ECORRUPT, "log: no segment files");
    log_iter_init(&w.it, lg, loc_make(lg->first_seg, 0), UINT64_MAX);
    w.next_pos = lg->segs[lg->first_seg]->first_position;
    int rc = 0;
    for (;;) {
        rec r;
        uint64_t at = 0;
        int short_tail = 0;
        int st = log_iter_next(&w.it, &r, &at, &short_tail);
        if (st == LOG_ITER_REC && (rc = walk_segment_header(&w, at)))
            break;
        if (st < 0 || (st == LOG_ITER_END && w.seen < w.count)) {
            rc = walk_bad_end(&w, st, at);
            break;
        }
        if (st == LOG_ITER_END) {
            rc = walk_end(&w);
            break;
        }
        if (loc_seg(at) != w.scav_seg) {
            w.scav_seg = loc_seg(at);
            w.scavenged = log_seg_scavenged(lg, w.scav_seg);
        }
        if ((rc = r.kind == REC_SEAL ? walk_seal(&w, &r, at) : walk_record(&w, &r, at)))
            break;
    }
    log_iter_free(&w.it);
    free(w.ids);
    free(w.made);
    k->next_pos = w.next_pos;
    if (rc)
        return rc;
    if (w.tail_note) {
        char name[32];
        log_seg_name(loc_seg(w.tail_note), name);
        snprintf(summary, summary_len,
                 "note: an incomplete commit at segment %s offset %u (a torn write) is cut at the "
                 "next open\n",
                 name, loc_off(w.tail_note));
    }
    return 0;
}

/* Every snapshot entry points at a snapshot record of its stream and
 * revision (retention decides which records have one). */
static int snap_entry(void *ctx, uint64_t sid, const idx_snap *e)
{
    checker *k = ctx;
    buf b = {0};
    rec r;
    const char *why = "unreadable";
    int ok = e->bytes >= REC_HEADER_SIZE && e->bytes <= (1u << 31) &&
             buf_reserve(&b, e->bytes) == 0 && log_read(k->lg, e->loc, b.p, e->bytes) == 0 &&
             rec_decode(b.p, e->bytes, &r, &why) == REC_OK && r.kind == REC_SNAPSHOT &&
             r.revision == e->revision && r.len == e->bytes;
    idx_stream st;
    if (ok)
        ok = idx_stream_get(k->ix, k->txn, r.stream, r.stream_len, &st) == 0 && st.sid == sid;
    buf_free(&b);
    err_clear();
    k->snap_entries++;
    if (!ok)
        return err_set(STELE_ECORRUPT,
                       "index: snapshot entry of revision %llu (stream number %llu) points to the "
                       "wrong place",
                       (unsigned long long)e->revision, (unsigned long long)sid);
    return 0;
}

static int check_snap_entries(checker *k)
{
    int rc = idx_snap_each(k->ix, k->txn, 0, 1, snap_entry, k);
    if (rc == 0 && k->snap_entries > k->snaps)
        rc = err_set(STELE_ECORRUPT, "index: %llu snapshot entries, but the log has %llu snapshots",
                     (unsigned long long)k->snap_entries, (unsigned long long)k->snaps);
    return rc;
}

/* The index's own tables against what the log walk counted. */
/*
 * Index entries of events that scavenging removed: commits whose location
 * is gone and whose positions all lie in gaps, ids of positions in gaps.
 * Any other entry that points at nothing is damage.
 */
static int count_removed(checker *k)
{
    MDB_cursor *cur;
    MDB_val key, val;
    int rc = idx_err(mdb_cursor_open(k->txn, k->ix->revs, &cur), "cursor");
    for (int g = rc ? -1 : mdb_cursor_get(cur, &key, &val, MDB_FIRST); g == 0 && rc == 0;
         g = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        uint64_t loc = ld64(val.mv_data), first_pos = ld64((uint8_t *)val.mv_data + 8);
        uint32_t count = ld32((uint8_t *)val.mv_data + 16);
        uint32_t sn = loc_seg(loc);
        log_seg *s = sn >= k->lg->first_seg && sn < atomic_load(&k->lg->nsegs)
                         ? log_seg_get(k->lg, sn)
                         : NULL;
        int gone = s && s->nruns && log_seg_phys(s, loc_off(loc), 0) < 0;
        if (s)
            log_seg_put(s);
        if (!gone)
            continue; /* a kept commit: check_commit matched it from the log */
        if (!in_gap(k, first_pos, first_pos + count))
            rc = damage(loc, "index: ", "a commit entry points at a removed record, but its "
                                        "positions were not removed");
        k->removed_commits++;
    }
    if (rc == 0)
        mdb_cursor_close(cur);
    if (rc || k->ngaps == 0)
        return rc;
    if ((rc = idx_err(mdb_cursor_open(k->txn, k->ix->ids, &cur), "cursor")))
        return rc;
    for (int g = mdb_cursor_get(cur, &key, &val, MDB_FIRST); g == 0;
         g = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        uint64_t pos = ld64((uint8_t *)val.mv_data + 16);
        k->removed_ids += in_gap(k, pos, pos + 1);
    }
    mdb_cursor_close(cur);
    return 0;
}

static int check_index(checker *k)
{
    uint64_t n;
    int rc = count_removed(k);
    if (rc == 0)
        rc = idx_count(k->ix, k->txn, k->ix->revs, &n);
    if (rc == 0 && n != k->commits + k->removed_commits)
        rc = err_set(STELE_ECORRUPT,
                     "index: %llu commit entries, but the log has %llu commits (and %llu were "
                     "scavenged)",
                     (unsigned long long)n, (unsigned long long)k->commits,
                     (unsigned long long)k->removed_commits);
    if (rc == 0)
        rc = idx_count(k->ix, k->txn, k->ix->ids, &n);
    if (rc == 0 && n != k->client_ids + k->removed_ids)
        rc = err_set(STELE_ECORRUPT,
                     "index: %llu id entries, but the log has %llu client ids (and %llu were "
                     "scavenged)",
                     (unsigned long long)n, (unsigned long long)k->client_ids,
                     (unsigned long long)k->removed_ids);
    if (rc == 0 && k->ix->sec_on) {
        rc = idx_count(k->ix, k->txn, k->ix->sec, &n);
        /* Scavenging leaves the items of removed commits in the index
         * (nothing reads them: their locations read as removed), so
         * after it the index may hold more than the log makes. */
        if (rc == 0 && (k->removed ? n < k->sec_items : n != k->sec_items))
            rc = err_set(STELE_ECORRUPT,
                         "index: %llu secondary index items, but the log's events make %llu",
                         (unsigned long long)n, (unsigned long long)k->sec_items);
        if (rc == 0)
            rc = idx_count(k->ix, k->txn, k->ix->time, &n);
        if (rc == 0 && (k->removed ? n < k->time_entries : n != k->time_entries))
            rc = err_set(STELE_ECORRUPT,
                         "index: %llu time entries, but the log's commits make %llu",
                         (unsigned long long)n, (unsigned long long)k->time_entries);
    }
    if (k->unindexed)
        return rc; /* stream states include commits the index has not seen yet */
    if (rc == 0)
        rc = idx_count(k->ix, k->txn, k->ix->streams, &n);
    if (rc == 0 && n != k->streams.n)
        rc = err_set(STELE_ECORRUPT, "index: %llu streams, but the log has %zu",
                     (unsigned long long)n, k->streams.n);
    for (size_t i = 0; rc == 0 && i < k->streams.cap; i++) {
        sslot *s = &k->streams.s[i];
        if (!s->name)
            continue;
        idx_stream st;
        rc = idx_stream_get(k->ix, k->txn, s->name, s->len, &st);
        uint64_t last = s->next_rev ? s->next_rev - 1 : UINT64_MAX;
        if (rc == 0 && (st.last_rev != last || st.flags != s->flags ||
                        st.truncate_before != s->truncate_before || st.last_pos != s->last_pos ||
                        st.meta_seq != s->meta_seq || (s->meta_seq && st.meta_loc != s->meta_loc)))
            rc = err_set(STELE_ECORRUPT, "index: state of stream '%s' does not match the log",
                         s->name);
        else if (rc)
            rc = err_set(STELE_ECORRUPT, "index: stream '%s' is missing", s->name);
    }
    if (rc == 0)
        rc = check_snap_entries(k);
    if (rc == 0 && k->ck.next_pos != k->next_pos)
        rc = err_set(STELE_ECORRUPT,
                     "index: checkpoint says %llu events, the log has %llu (%llu scavenged)",
                     (unsigned long long)k->ck.next_pos, (unsigned long long)k->next_pos,
                     (unsigned long long)k->removed);
    /* Every sparse position entry points at its event. */
    MDB_cursor *cur;
    if (rc == 0 && (rc = idx_err(mdb_cursor_open(k->txn, k->ix->pos, &cur), "cursor")) == 0) {
        MDB_val key, val;
        int g = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
        while (g == 0 && rc == 0) {
            uint64_t pos = ldbe64(key.mv_data), loc = ld64(val.mv_data), at_pos = 0;
            uint8_t kind = 0;
            int64_t created;
            int r = log_peek(k->lg, loc, &kind, &at_pos, &created);
            if (r == LOG_REMOVED && in_gap(k, pos, pos + 1)) {
                err_clear(); /* the entry of a scavenged event: reads start after it */
            } else if (r || kind != REC_EVENT || at_pos != pos) {
                err_clear();
                rc = err_set(STELE_ECORRUPT, "index: position entry %llu points to the wrong place",
                             (unsigned long long)pos);
            }
            k->pos_entries++;
            g = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
        }
        mdb_cursor_close(cur);
    }
    return rc;
}

int local_check(const char *dir, char *report, size_t report_len)
{
    char path[4200], note[512] = "";
    snprintf(path, sizeof path, "%s/stele.lock", dir);
    int lockfd = open(path, O_RDONLY | O_CLOEXEC);
    if (lockfd < 0)
        return err_set(STELE_ENOTFOUND, "%s is not a Stele store (no stele.lock)", dir);
    if (flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
        close(lockfd);
        return err_set(STELE_ELOCKED, "store %s is open in another process", dir);
    }
    checker k;
    memset(&k, 0, sizeof k);
    int rc = log_open(dir, 64u << 20, 0, &k.lg);
    if (rc == 0) {
        if (idx_open_readonly(dir, &k.ix) == 0 && idx_begin(k.ix, 1, &k.txn) == 0 &&
            idx_ckpt_get(k.ix, k.txn, &k.ck) == 0)
            k.have_index = 1;
        err_clear(); /* no index is not damage: it is rebuilt at open */
    }
    /* A last segment without a valid header is a torn creation if nothing
     * follows the header (the next open drops it), else damage. */
    uint32_t last = rc == 0 ? atomic_load(&k.lg->nsegs) : 0;
    int hidden = 0;
    if (rc == 0 && last > k.lg->first_seg && k.lg->segs[last - 1]->first_position == UINT64_MAX) {
        uint8_t w[8] = {0};
        static const uint8_t zero[8];
        char name[32];
        log_seg_name(last - 1, name);
        if (k.lg->segs[last - 1]->size >= SEG_HEADER_SIZE + 8 &&
            (log_read(k.lg, loc_make(last - 1, SEG_HEADER_SIZE), w, 8) || memcmp(w, zero, 8))) {
            err_clear();
            rc = err_set(STELE_ECORRUPT, "segment %s offset 0: segment header is damaged", name);
        } else {
            snprintf(note, sizeof note,
                     "note: segment %s was torn at creation (empty); the next open removes it\n",
                     name);
            atomic_store(&k.lg->nsegs, last - 1);
            hidden = 1; /* restored before log_close, which frees segments below nsegs */
        }
    }
    if (rc == 0)
        rc = check_log(&k, note, sizeof note);
    if (rc == 0 && k.have_index)
        rc = check_index(&k);
    if (rc == 0)
        rc = chain_check(k.lg, note, sizeof note); /* local_chain.c */
    if (rc == 0 && report) {
        char scav[96] = "";
        uint32_t nscav = 0;
        for (uint32_t i = k.lg->first_seg; i < atomic_load(&k.lg->nsegs); i++)
            nscav += log_seg_scavenged(k.lg, i);
        if (nscav)
            snprintf(scav, sizeof scav, " (%llu removed by scavenging %u segments)",
                     (unsigned long long)k.removed, nscav);
        snprintf(report, report_len,
                 "%s%u segments, %llu events%s, %zu streams, %llu commits indexed, %llu deletes, "
                 "%llu position entries, %llu metadata records, %llu snapshots (%llu kept): %s\n",
                 note, atomic_load(&k.lg->nsegs) - k.lg->first_seg,
                 (unsigned long long)k.events, scav, k.streams.n, (unsigned long long)k.commits,
                 (unsigned long long)k.markers, (unsigned long long)k.pos_entries,
                 (unsigned long long)k.metas, (unsigned long long)k.snaps,
                 (unsigned long long)k.snap_entries,
                 k.have_index ? "ok" : "ok (no index: rebuilt at the next open)");
    }
    if (k.txn)
        mdb_txn_abort(k.txn);
    idx_close(k.ix);
    if (hidden)
        atomic_store(&k.lg->nsegs, last);
    log_close(k.lg);
    st_free(&k.streams);
    free(k.gaps);
    buf_free(&k.cbuf);
    flock(lockfd, LOCK_UN);
    close(lockfd);
    return rc;
}
