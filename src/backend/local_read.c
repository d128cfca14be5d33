/*
 * local_read.c - reads of the local engine: a stream (through its commits
 * in the revs index), $all (from the sparse position index, scanning the
 * log), a stream's head and the store's stats. Readers take an LMDB read
 * transaction (snapshot()) and never wait for the writer.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/local_int.h"
#include "backend/visibility.h"
#include "log/record.h"
#include "os/os.h"
#include "util/assert.h"

/* ----------------------------------------------------------------- reads */

/* The local engine's stream state as the shared visibility rule sees it
 * (src/backend/visibility.c holds the rule itself). */
static stream_vis vis_of(const idx_stream *st)
{
    return (stream_vis){.last_rev = st->last_rev,
                        .truncate_before = st->truncate_before,
                        .tombstoned = (st->flags & IDX_TOMBSTONED) != 0,
                        .max_age_us = st->max_age_us,
                        .max_count = st->max_count,
                        .meta_tb = st->meta_tb};
}

uint64_t stream_start(const idx_stream *st)
{
    stream_vis v = vis_of(st);
    return vis_stream_start(&v);
}

int event_visible(const idx_stream *st, uint64_t revision, int64_t created_us, int64_t now_us)
{
    stream_vis v = vis_of(st);
    return vis_event_visible(&v, revision, created_us, now_us);
}

/* A scratch buffer seeded with a pool block (already mapped memory). */
int local_page_add(stele_page *pg, const rec *r)
{
    /* The API edge allows at most 64 tags; a record with more was not
     * written by this engine. */
    const char *tags[64];
    if (r->ntags > sizeof tags / sizeof tags[0])
        return err_set(STELE_ECORRUPT, "event at position %llu has %u tags",
                       (unsigned long long)r->position, (unsigned)r->ntags);
    const uint8_t *t = r->tags;
    for (unsigned i = 0; i < r->ntags; i++) {
        tags[i] = (const char *)t + 2;
        t += 3 + ld16(t);
    }
    page_event e = {.stream = r->stream,
                    .stream_len = r->stream_len,
                    .type = r->type,
                    .type_len = r->type_len,
                    .tags = tags,
                    .ntags = r->ntags,
                    .data = r->data,
                    .data_len = r->data_len,
                    .metadata = r->meta,
                    .metadata_len = r->meta_len,
                    .id = r->id,
                    /* One copy of the body, unless a kind 9 record's name
                     * or type lives in another record (record.h). */
                    .block = r->compact == 2 ? NULL : r->stream,
                    .block_len = r->compact == 2
                                     ? 0
                                     : (size_t)(r->meta + r->meta_len - (const uint8_t *)r->stream),
                    .flags = r->flags,
                    .created_us = r->created_us,
                    .revision = r->revision,
                    .position = r->position};
    return page_add(pg, &e);
}

void scratch_init(local *L, buf *b)
{
    memset(b, 0, sizeof *b);
    b->p = pool_get(L->pl);
    b->cap = b->p ? POOL_BLOCK : 0;
}

void scratch_free(local *L, buf *b)
{
    if (b->cap == POOL_BLOCK)
        pool_put(L->pl, b->p);
    else
        free(b->p);
    memset(b, 0, sizeof *b);
}

int read_commit(local *L, const idx_commit *c, buf *b)
{
    b->len = 0;
    int rc = buf_reserve(b, c->bytes);
    if (rc == 0)
        rc = log_read(L->lg, c->loc, b->p, c->bytes);
    if (rc == 0)
        b->len = c->bytes;
    return rc;
}

/* Decode the record at p (within a commit read whole); damage is ECORRUPT
 * naming where. */
int commit_rec(local *L, log_holders *h, const idx_commit *c, const buf *b, size_t off, rec *r)
{
    const char *why = "record runs past its commit";
    rec_status st =
        off < b->len ? rec_decode_in(b->p, off, b->len - off, r, &why) : REC_SHORT;
    /* A kind 9 record whose holder is before the bytes read (a stream's
     * run inside a multi-stream commit): read it. */
    if (st == REC_FAR) {
        int rc = log_share_fetch(L->lg, c->loc + off, r, h);
        if (rc)
            return rc;
        st = REC_OK;
    }
    if (st == REC_OK && r->kind == REC_EVENT)
        return 0;
    if (st == REC_OK)
        why = "unexpected record kind in a commit";
    char name[32];
    log_seg_name(loc_seg(c->loc), name);
    return err_set(STELE_ECORRUPT, "segment %s offset %llu: %s", name,
                   (unsigned long long)(loc_off(c->loc) + off), why);
}

/*
 * A reader's snapshot: an LMDB read transaction and the checkpoint inside
 * it. The index is committed only after the log is fsynced, so everything
 * the snapshot describes is durable and complete, and a stream's head, its
 * events and $all agree with each other within one read.
 */
int snapshot(local *L, MDB_txn **txn, uint64_t *visible, uint64_t *end)
{
    int rc = idx_begin(L->ix, 1, txn);
    if (rc)
        return rc;
    idx_ckpt ck;
    rc = idx_ckpt_get(L->ix, *txn, &ck);
    if (rc) {
        mdb_txn_abort(*txn);
        return rc == STELE_ENOTFOUND ? err_set(STELE_ECORRUPT, "index: no checkpoint") : rc;
    }
    *visible = ck.next_pos;
    *end = ck.loc;
    return 0;
}

int stream_state(local *L, MDB_txn *txn, const char *stream, size_t len, idx_stream *st)
{
    int rc = idx_stream_get(L->ix, txn, stream, len, st);
    if (rc == STELE_ENOTFOUND)
        return err_set(STELE_ENOTFOUND, "stream '%.*s' not found", (int)len, stream);
    if (rc)
        return rc;
    if (st->flags & IDX_TOMBSTONED)
        return err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)len, stream);
    if ((st->flags & IDX_DELETED) || st->last_rev == UINT64_MAX)
        return err_set(STELE_ENOTFOUND, "stream '%.*s' not found (deleted)", (int)len, stream);
    return 0;
}

/*
 * A commit scavenging removed was hidden when the scavenger decided, and
 * stays hidden. A read meets one when its own snapshot hides it too (then
 * it is skipped; its time is not in the index, so for a stream with maxAge
 * it counts as aged), when the stream's retention was loosened after the
 * scavenge (skipped: removed events do not come back), or when the read's
 * snapshot is older than the scavenger's decision (a delete landed and was
 * scavenged while the read ran): then the read starts again once with a
 * fresh snapshot (attempt 1), which sees the delete, so a stream read never
 * returns a hole it should not have.
 */
#define READ_STALE 1

static int read_stream_try(local *L, const char *stream, size_t len, uint64_t from,
                           int backwards, size_t limit, int attempt, stele_page **out);

int local_read_stream(backend *b, const char *stream, size_t len, uint64_t from,
                             int backwards, size_t limit, stele_page **out)
{
    local *L = (local *)b;
    int rc = read_stream_try(L, stream, len, from, backwards, limit, 0, out);
    if (rc == READ_STALE)
        rc = read_stream_try(L, stream, len, from, backwards, limit, 1, out);
    return rc;
}

/* One stream read in progress (read_stream_try and its steps). */
typedef struct sread {
    idx_stream st;
    stele_page *pg;
    size_t limit;
    uint64_t from, lo, hi; /* start, and the visible revisions' range */
    int64_t now;
    uint64_t last;         /* the last revision added to pg */
    int any, aged;         /* something was added; maxAge ended the read */
    local *L;
    log_holders hold;      /* kind 9 holders read by commit_rec */
} sread;

/* The visible events of commit c (its records in cb) at or after `from`. */
static int commit_forwards(sread *sr, const idx_commit *c, const buf *cb)
{
    size_t off = 0;
    int rc = 0;
    for (uint32_t i = 0; i < c->count && rc == 0 && !page_full(sr->pg, sr->limit); i++) {
        rec r;
        if ((rc = commit_rec(sr->L, &sr->hold, c, cb, off, &r)))
            break;
        off += r.len;
        if (r.revision < sr->from || !event_visible(&sr->st, r.revision, r.created_us, sr->now))
            continue;
        rc = local_page_add(sr->pg, &r);
        sr->last = r.revision;
        sr->any = 1;
    }
    return rc;
}

/* The same backwards: from `from` down, stopping where maxAge hides the
 * rest. */
static int commit_backwards(sread *sr, const idx_commit *c, const buf *cb)
{
    /* Records are variable-sized: find their offsets, then go back. */
    size_t *offs = malloc(c->count * sizeof *offs);
    if (!offs)
        return err_set(STELE_ENOMEM, "out of memory");
    size_t off = 0;
    int rc = 0;
    for (uint32_t i = 0; i < c->count && rc == 0; i++) {
        rec r;
        offs[i] = off;
        if ((rc = commit_rec(sr->L, &sr->hold, c, cb, off, &r)) == 0)
            off += r.len;
    }
    for (uint32_t i = c->count; i-- > 0 && rc == 0 && !page_full(sr->pg, sr->limit);) {
        rec r;
        if ((rc = commit_rec(sr->L, &sr->hold, c, cb, offs[i], &r)))
            break;
        if (r.revision > sr->from)
            continue;
        if (r.revision < sr->lo)
            break;
        /* Created times never decrease along a stream, so what maxAge
         * hides is a prefix: nothing older is visible. */
        if (!event_visible(&sr->st, r.revision, r.created_us, sr->now)) {
            sr->aged = 1;
            break;
        }
        rc = local_page_add(sr->pg, &r);
        sr->last = r.revision;
        sr->any = 1;
    }
    free(offs);
    return rc;
}

/* Walk the stream's commits from the one holding `from`, adding their
 * visible events, within the snapshot (visible, end). READ_STALE when a
 * commit scavenging removed should still be visible (attempt 0 only). */
static int walk_stream(local *L, sread *sr, idx_rev_cursor *cur, int backwards, int attempt,
                       uint64_t visible, uint64_t end)
{
    buf cb;
    scratch_init(L, &cb);
    idx_commit c;
    int rc = idx_rev_seek(cur, sr->from, backwards, &c);
    while (rc == 0 && !page_full(sr->pg, sr->limit)) {
        if (c.first_pos >= visible)
            break;
        /* An entry of this snapshot points inside the log it describes
         * (write_group asserts the same before writing it). */
        STELE_ASSERT(c.count >= 1 && c.loc + c.bytes <= end);
        if ((rc = read_commit(L, &c, &cb)) == LOG_REMOVED) {
            if (attempt == 0 &&
                event_visible(&sr->st, c.first_rev + c.count - 1, INT64_MIN, time_now_us())) {
                rc = READ_STALE;
                break;
            }
            if (backwards && c.first_rev <= sr->lo)
                break;
            rc = idx_rev_step(cur, backwards, &c);
            continue;
        }
        if (rc)
            break;
        /* Decode the commit's records; walk them in the read's direction. */
        rc = backwards ? commit_backwards(sr, &c, &cb) : commit_forwards(sr, &c, &cb);
        if (rc || page_full(sr->pg, sr->limit))
            break;
        if (backwards && (c.first_rev <= sr->lo || sr->aged))
            break;
        rc = idx_rev_step(cur, backwards, &c);
    }
    scratch_free(L, &cb);
    return rc == STELE_ENOTFOUND ? 0 : rc;
}

static int read_stream_try(local *L, const char *stream, size_t len, uint64_t from,
                           int backwards, size_t limit, int attempt, stele_page **out)
{
    MDB_txn *txn;
    uint64_t visible = 0, end = 0;
    int rc = snapshot(L, &txn, &visible, &end);
    if (rc)
        return rc;
    sread sr = {.limit = limit, .L = L};
    idx_rev_cursor cur = {0};
    if ((rc = stream_state(L, txn, stream, len, &sr.st)) || (rc = page_new(L->pl, &sr.pg)))
        goto done;
    page_expect(sr.pg, limit);
    /* Retention moves the start up; maxAge is checked per event below. */
    sr.lo = stream_start(&sr.st);
    sr.hi = sr.st.last_rev;
    sr.now = time_now_us();
    if (!backwards && from < sr.lo)
        from = sr.lo;
    if (backwards && from > sr.hi)
        from = sr.hi;
    sr.from = from;
    if (from < sr.lo || from > sr.hi || limit == 0)
        goto done;
    if ((rc = idx_rev_open(L->ix, txn, sr.st.sid, &cur)))
        goto done;
    rc = walk_stream(L, &sr, &cur, backwards, attempt, visible, end);
    if (rc == 0 && sr.any) {
        stele_page *pg = sr.pg;
        if (!backwards && sr.last < sr.hi && sr.last + 1 < UINT64_MAX) {
            pg->has_next = 1;
            pg->next = sr.last + 1;
        } else if (backwards && sr.last > sr.lo && !sr.aged) {
            pg->has_next = 1;
            pg->next = sr.last - 1;
        }
    }
done:
    idx_rev_close(&cur);
    mdb_txn_abort(txn);
    log_holders_free(&sr.hold);
    if (rc) {
        stele_page_free(sr.pg);
        return rc;
    }
    *out = sr.pg;
    return 0;
}

/* Scan $all forwards from the sparse entry at `loc` into pg: events with
 * from <= position <= to, at most `limit` (and the page's byte budget). */
int scan_all(local *L, uint64_t loc, uint64_t end, uint64_t from, uint64_t to,
                    size_t limit, stele_page *pg)
{
    log_iter it;
    log_iter_init(&it, L->lg, loc, end);
    scratch_init(L, &it.chunk);
    int rc = 0;
    for (;;) {
        rec r;
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st < 0) {
            rc = st;
            break;
        }
        if (st == LOG_ITER_END)
            break;
        if (r.kind != REC_EVENT || r.position < from)
            continue;
        if (r.position > to || page_full(pg, limit))
            break;
        if ((rc = local_page_add(pg, &r)))
            break;
    }
    log_iter_done(&it);
    scratch_free(L, &it.chunk);
    return rc;
}

/* The sparse entry at or before `pos`; without one (the first events of
 * the log were scavenged and the index rebuilt since), the log's start. */
static int pos_floor(local *L, MDB_txn *txn, uint64_t pos, uint64_t *found, uint64_t *loc)
{
    int rc = idx_pos_floor(L->ix, txn, pos, found, loc);
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        *found = 0;
        *loc = loc_make(L->lg->first_seg, 0);
        rc = 0;
    }
    return rc;
}

int local_read_all(backend *b, uint64_t from, int backwards, size_t limit,
                          stele_page **out)
{
    local *L = (local *)b;
    MDB_txn *txn;
    uint64_t visible = 0, end = 0;
    int rc = snapshot(L, &txn, &visible, &end);
    if (rc)
        return rc;
    stele_page *pg;
    if ((rc = page_new(L->pl, &pg))) {
        mdb_txn_abort(txn);
        return rc;
    }
    page_expect(pg, limit);
    if (visible == 0 || limit == 0 || (!backwards && from >= visible)) {
        mdb_txn_abort(txn);
        *out = pg;
        return 0;
    }
    uint64_t found, loc;
    if (!backwards) {
        rc = pos_floor(L, txn, from, &found, &loc);
        uint64_t near;
        /* A recent group's start is nearer than the sparse entry, if it is
         * after it; both are at or before `from`'s record, which is in
         * this snapshot (from < visible). */
        if (rc == 0 && tail_hint(L, from, &near) && near > loc && near < end)
            loc = near;
        if (rc == 0)
            rc = scan_all(L, loc, end, from, visible - 1, limit, pg);
        if (rc == 0 && pg->count) {
            uint64_t last = page_ev(pg, pg->count - 1)->position;
            if (last + 1 < visible) {
                pg->has_next = 1;
                pg->next = last + 1;
            }
        }
    } else {
        uint64_t target = from < visible ? from : visible - 1;
        while (rc == 0 && !page_full(pg, limit)) {
            rc = pos_floor(L, txn, target, &found, &loc);
            stele_page *part = NULL;
            if (rc == 0)
                rc = page_new(L->pl, &part);
            if (rc == 0)
                rc = scan_all(L, loc, end, found, target, SIZE_MAX, part);
            if (rc == 0)
                rc = page_take_reversed(pg, part, limit - pg->count);
            else
                stele_page_free(part);
            if (rc || found == 0)
                break;
            target = found - 1;
        }
        if (rc == 0 && pg->count) {
            uint64_t last = page_ev(pg, pg->count - 1)->position;
            if (last > 0) {
                pg->has_next = 1;
                pg->next = last - 1;
            }
        }
    }
    mdb_txn_abort(txn);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

int local_head(backend *b, const char *stream, size_t len, stele_stream_info *out)
{
    local *L = (local *)b;
    MDB_txn *txn;
    int rc = idx_begin(L->ix, 1, &txn);
    if (rc)
        return rc;
    idx_stream st;
    rc = idx_stream_get(L->ix, txn, stream, len, &st);
    mdb_txn_abort(txn);
    if (rc == STELE_ENOTFOUND)
        return err_set(STELE_ENOTFOUND, "stream '%.*s' not found", (int)len, stream);
    if (rc)
        return rc;
    out->last_revision = st.last_rev;
    out->last_position = st.last_pos;
    out->truncate_before = st.truncate_before;
    out->deleted = (st.flags & IDX_DELETED) != 0;
    out->tombstoned = (st.flags & IDX_TOMBSTONED) != 0;
    return 0;
}

int local_stats(backend *b, stele_stats *out)
{
    local *L = (local *)b;
    MDB_txn *txn;
    idx_ckpt ck = {0};
    int rc = idx_begin(L->ix, 1, &txn);
    if (rc)
        return rc;
    rc = idx_ckpt_get(L->ix, txn, &ck);
    mdb_txn_abort(txn);
    if (rc && rc != STELE_ENOTFOUND)
        return rc;
    memset(out, 0, sizeof *out);
    out->events = atomic_load(&L->pub_next_pos);
    out->streams = ck.streams;
    uint64_t gone = atomic_load(&L->scav_unaccounted);
    out->log_bytes = ck.log_bytes > gone ? ck.log_bytes - gone : 0;
    out->segments = atomic_load(&L->lg->nsegs) - L->lg->first_seg;
    out->appends = atomic_load(&L->n_appends);
    out->groups = atomic_load(&L->n_groups);
    int fault = atomic_load(&L->fault);
    if (fault) {
        out->readonly = 1;
        out->readonly_code = STELE_EREADONLY;
        snprintf(out->readonly_reason, sizeof out->readonly_reason,
                 "store is read-only after a storage fault (%.380s); reopen it", L->fault_msg);
    } else if (atomic_load(&L->nospace)) {
        out->readonly = 1;
        out->readonly_code = STELE_ENOSPC;
        pthread_mutex_lock(&L->nospace_mu);
        snprintf(out->readonly_reason, sizeof out->readonly_reason, "%s", L->nospace_msg);
        pthread_mutex_unlock(&L->nospace_mu);
    }
    return 0;
}
