/*
 * local_streams.c - stream metadata and snapshots in the local engine
 * (docs/streams.md; the record layouts are in src/log/record.h).
 *
 * Both are records in the log, written by the writer thread in a group
 * commit like a delete: one record, no position (positions belong to events,
 * so neither ever shows in $all), fsynced before the caller is answered.
 * The log is the truth; the index holds what reads need:
 *
 *   metadata  the stream's entry (idx_stream) carries the retention values,
 *             the version (meta_seq = version + 1) and the loc of the latest
 *             metadata record, from which the custom fields are read back.
 *   snapshot  the `snaps` table maps (sid, revision) to the record's loc.
 *             Retention keeps the stream's max_snapshots highest revisions;
 *             a soft delete drops the snapshots below its truncate point, a
 *             tombstone all of them.
 *
 * The same apply functions run in the writer (planning a request) and in
 * recovery (replaying a record), so an index caught up or rebuilt from the
 * log holds exactly what the writer made. The writer does not know a
 * record's loc when it plans (the group is placed afterwards), so it first
 * stores a tag unique to the request (bit 63 set: never a real loc) and
 * sm_encode() swaps in the loc, only if the entry still carries that tag (a
 * later request of the same group may have replaced or dropped it).
 *
 * Reads (metadata, snapshots, load) take an LMDB read transaction, read the
 * referenced record from the log and verify it, like event reads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/local_int.h"
#include "log/record.h"

/* ------------------------------------------------------------ helpers */

static uint64_t loc_tag(const wreq *r)
{
    return (1ull << 63) | ((uint64_t)(uintptr_t)r & ~(1ull << 63));
}

static uint32_t max_snaps(const idx_stream *st)
{
    return st->max_snapshots ? st->max_snapshots : STELE_DEFAULT_MAX_SNAPSHOTS;
}

static int fail(wreq *r, int rc)
{
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
    return 0;
}

static const char *version_text(int64_t expected, char *b, size_t n)
{
    if (expected == STELE_ANY) return "any";
    if (expected == STELE_NO_STREAM) return "none";
    if (expected == STELE_STREAM_EXISTS) return "exists";
    snprintf(b, n, "%lld", (long long)expected);
    return b;
}

/* A new stream entry (metadata before any event). */
static void new_stream(local *L, idx_stream *st)
{
    memset(st, 0, sizeof *st);
    st->sid = L->ck.next_sid++;
    st->last_rev = st->last_pos = UINT64_MAX;
    L->ck.streams++;
}

/* Collect the revisions of `sid`'s snapshots that a predicate picks. */
typedef struct pick {
    uint64_t below;     /* pick revisions < below */
    uint64_t max;       /* at most this many (the lowest) */
    uint64_t *revs;
    uint64_t n;
    int oom;
} pick;

static int pick_one(void *ctx, uint64_t sid, const idx_snap *s)
{
    pick *p = ctx;
    (void)sid;
    if (s->revision >= p->below || p->n == p->max)
        return 1; /* keys are in revision order: nothing more to pick */
    p->revs[p->n++] = s->revision;
    return 0;
}

/* Drop the lowest `max` snapshots of `sid` with revision < below. */
static int drop_snaps(local *L, MDB_txn *txn, uint64_t sid, uint64_t below, uint64_t max)
{
    if (!max)
        return 0;
    uint64_t n;
    int rc = idx_snap_count(L->ix, txn, sid, &n, NULL);
    if (rc || !n)
        return rc;
    if (max > n)
        max = n;
    pick p = {below, max, malloc(max * sizeof(uint64_t)), 0, 0};
    if (!p.revs)
        return err_set(STELE_ENOMEM, "out of memory");
    rc = idx_snap_each(L->ix, txn, sid, 0, pick_one, &p);
    if (rc == 1)
        rc = 0;
    for (uint64_t i = 0; i < p.n && rc == 0; i++)
        rc = idx_snap_del(L->ix, txn, sid, p.revs[i]);
    free(p.revs);
    return rc;
}

/* Keep only the stream's max_snapshots highest revisions (without counting
 * them: src/index/index_snap.c). */
static int trim_snaps(local *L, MDB_txn *txn, const idx_stream *st)
{
    return idx_snap_trim(L->ix, txn, st->sid, max_snaps(st));
}

/* The writer placed the record tagged `tag` at `loc`: point the entry at it,
 * unless a later request of the group replaced or dropped the entry. */
static int snap_placed(local *L, MDB_txn *txn, uint64_t sid, uint64_t revision, uint64_t tag,
                       uint64_t loc)
{
    int rc = idx_snap_repoint(L->ix, txn, sid, revision, tag, loc);
    return rc == STELE_ENOTFOUND ? 0 : rc;
}

int sm_on_remove(local *L, MDB_txn *txn, const idx_stream *st)
{
    uint64_t below = (st->flags & IDX_TOMBSTONED) ? UINT64_MAX : st->truncate_before;
    return drop_snaps(L, txn, st->sid, below, UINT64_MAX);
}

/* The metadata values of a record's data block into a stream state. */
static void meta_from_block(idx_stream *st, const uint8_t *blk)
{
    st->max_age_us = ld64(blk);
    st->max_count = ld64(blk + 8);
    st->meta_tb = ld64(blk + 16);
    st->max_snapshots = ld32(blk + 24);
}

static void meta_to_block(const idx_stream *st, uint8_t blk[REC_META_DATA_SIZE])
{
    memset(blk, 0, REC_META_DATA_SIZE);
    st64(blk, st->max_age_us);
    st64(blk + 8, st->max_count);
    st64(blk + 16, st->meta_tb);
    st32(blk + 24, st->max_snapshots);
}

/* ------------------------------------------------------------ the writer */

static int plan_metadata(local *L, MDB_txn *txn, wreq *r, int found)
{
    const stele_stream_metadata *md = r->md;
    uint64_t cur = found && r->st.meta_seq ? r->st.meta_seq - 1 : STELE_NONE;
    int ok = r->expected == STELE_ANY || (r->expected == STELE_NO_STREAM && cur == STELE_NONE) ||
             (r->expected == STELE_STREAM_EXISTS && cur != STELE_NONE) ||
             (r->expected >= 0 && cur == (uint64_t)r->expected);
    if (!ok) {
        char eb[32];
        r->current = cur;
        if (cur == STELE_NONE)
            err_set(STELE_EWRONGREV,
                    "stream '%.*s': expected metadata version %s, but it has no metadata",
                    (int)r->stream_len, r->stream, version_text(r->expected, eb, sizeof eb));
        else
            err_set(STELE_EWRONGREV,
                    "stream '%.*s': expected metadata version %s, but its version is %llu",
                    (int)r->stream_len, r->stream, version_text(r->expected, eb, sizeof eb),
                    (unsigned long long)cur);
        return fail(r, STELE_EWRONGREV);
    }
    if (!found) {
        new_stream(L, &r->st);
        r->new_stream = 1;
    }
    r->st.max_age_us = md->max_age_us;
    r->st.max_count = md->max_count;
    r->st.meta_tb = md->truncate_before;
    r->st.max_snapshots = md->max_snapshots;
    r->st.meta_seq++;
    r->st.meta_loc = loc_tag(r);
    r->current = r->st.meta_seq - 1;
    int rc = idx_stream_put(L->ix, txn, r->stream, r->stream_len, &r->st);
    if (rc == 0)
        rc = trim_snaps(L, txn, &r->st);
    if (rc)
        return rc;
    r->accepted = 1;
    return 0;
}

static int plan_snapshot(local *L, MDB_txn *txn, wreq *r, int found)
{
    const stele_snapshot_in *s = r->snap;
    const idx_stream *st = &r->st;
    if (!found || (st->flags & IDX_DELETED) || st->last_rev == UINT64_MAX) {
        err_set(STELE_ENOTFOUND, "stream '%.*s' %s: there is nothing to snapshot",
                (int)r->stream_len, r->stream,
                !found || st->last_rev == UINT64_MAX ? "has no events" : "is deleted");
        return fail(r, STELE_ENOTFOUND);
    }
    if (s->revision > st->last_rev) {
        err_set(STELE_EINVAL,
                "snapshot revision %llu is beyond the last revision %llu of stream '%.*s'",
                (unsigned long long)s->revision, (unsigned long long)st->last_rev,
                (int)r->stream_len, r->stream);
        return fail(r, STELE_EINVAL);
    }
    if (s->revision < st->truncate_before) {
        err_set(STELE_EINVAL,
                "snapshot revision %llu is below revision %llu, where stream '%.*s' starts again "
                "after its soft delete",
                (unsigned long long)s->revision, (unsigned long long)st->truncate_before,
                (int)r->stream_len, r->stream);
        return fail(r, STELE_EINVAL);
    }
    uint64_t n;
    idx_snap lowest;
    int rc = idx_snap_count(L->ix, txn, st->sid, &n, &lowest);
    if (rc)
        return rc;
    if (n >= max_snaps(st) && s->revision < lowest.revision) {
        err_set(STELE_EINVAL,
                "stream '%.*s' keeps its %u latest snapshots and the oldest is at revision %llu: "
                "a snapshot at revision %llu would be dropped at once (raise maxSnapshots in the "
                "stream metadata)",
                (int)r->stream_len, r->stream, max_snaps(st),
                (unsigned long long)lowest.revision, (unsigned long long)s->revision);
        return fail(r, STELE_EINVAL);
    }
    idx_snap e = {s->revision, loc_tag(r), (uint32_t)r->bytes, s->schema_version};
    rc = idx_snap_put(L->ix, txn, st->sid, &e);
    if (rc == 0)
        rc = trim_snaps(L, txn, st);
    if (rc)
        return rc;
    r->current = s->revision;
    r->accepted = 1;
    return 0;
}

int sm_plan(local *L, MDB_txn *txn, wreq *r)
{
    int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &r->st);
    if (rc && rc != STELE_ENOTFOUND)
        return rc;
    int found = rc == 0;
    if (found && (r->st.flags & IDX_TOMBSTONED)) {
        err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)r->stream_len, r->stream);
        return fail(r, STELE_EDELETED);
    }
    return r->op == OP_METADATA ? plan_metadata(L, txn, r, found)
                                : plan_snapshot(L, txn, r, found);
}

int sm_encode(local *L, MDB_txn *txn, wreq *r, uint8_t *out, uint64_t loc, int64_t now)
{
    uint64_t tag = loc_tag(r);
    int rc;
    if (r->op == OP_METADATA) {
        const stele_stream_metadata *md = r->md;
        uint8_t blk[REC_META_DATA_SIZE];
        meta_to_block(&r->st, blk);
        size_t n = rec_encode_body(out, REC_METADATA, md->custom_len ? STELE_META_JSON : 0,
                                   r->stream, r->stream_len, blk, sizeof blk, md->custom,
                                   md->custom_len, r->current, r->st.last_rev, now);
        if (n != r->bytes)
            return err_set(STELE_EINTERNAL, "metadata record size mismatch");
        idx_stream st;
        rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &st);
        if (rc == 0 && st.meta_loc == tag) {
            st.meta_loc = loc;
            rc = idx_stream_put(L->ix, txn, r->stream, r->stream_len, &st);
        }
        return rc;
    }
    const stele_snapshot_in *s = r->snap;
    size_t n = rec_encode_body(out, REC_SNAPSHOT, (uint8_t)(s->flags & STELE_EVENT_JSON),
                               r->stream, r->stream_len, s->state, s->state_len, NULL, 0,
                               s->schema_version, s->revision, now);
    if (n != r->bytes)
        return err_set(STELE_EINTERNAL, "snapshot record size mismatch");
    return snap_placed(L, txn, r->st.sid, s->revision, tag, loc);
}

/* ------------------------------------------------- multi-stream commits */

int sm_plan_state(local *L, MDB_txn *txn, const idx_stream *st, uint64_t revision,
                  uint32_t bytes, uint32_t schema_version, uint64_t tag)
{
    /* A state is stored at the stream's last revision, above any snapshot
     * it has: put and trim in one cursor pass. */
    idx_snap e = {revision, tag, bytes, schema_version};
    if (revision != st->last_rev)
        return err_set(STELE_EINTERNAL, "state at revision %llu, the stream is at %llu",
                       (unsigned long long)revision, (unsigned long long)st->last_rev);
    return idx_snap_put_top(L->ix, txn, st->sid, &e, max_snaps(st));
}

int sm_encode_state(local *L, MDB_txn *txn, uint64_t sid, uint64_t revision, uint64_t tag,
                    uint64_t loc)
{
    return snap_placed(L, txn, sid, revision, tag, loc);
}

/* ------------------------------------------------------------ recovery */

int sm_apply(local *L, MDB_txn *txn, const rec *r, uint64_t loc)
{
    idx_stream st;
    int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &st);
    int found = rc == 0;
    if (rc && rc != STELE_ENOTFOUND)
        return rc;
    char name[32];
    log_seg_name(loc_seg(loc), name);
    /* After scavenging, older metadata versions and the events under a
     * snapshot may be gone from the log before this record. */
    int gaps = log_scavenged_upto(L->lg, loc_seg(loc));
    if (r->kind == REC_METADATA) {
        if (!found)
            new_stream(L, &st);
        if (r->position != st.meta_seq && !(gaps && r->position > st.meta_seq))
            return err_set(STELE_ECORRUPT,
                           "segment %s offset %u: metadata version %llu of stream '%.*s' is out "
                           "of sequence (expected %llu)",
                           name, loc_off(loc), (unsigned long long)r->position,
                           (int)r->stream_len, r->stream, (unsigned long long)st.meta_seq);
        meta_from_block(&st, r->data);
        st.meta_seq = r->position + 1;
        st.meta_loc = loc;
        rc = idx_stream_put(L->ix, txn, r->stream, r->stream_len, &st);
        if (rc == 0)
            rc = trim_snaps(L, txn, &st);
        return rc;
    }
    if (gaps && !found) {
        new_stream(L, &st); /* its events come later, or were all removed */
        if ((rc = idx_stream_put(L->ix, txn, r->stream, r->stream_len, &st)))
            return rc;
        found = 1;
    }
    if (!found || ((st.last_rev == UINT64_MAX || r->revision > st.last_rev) && !gaps))
        return err_set(STELE_ECORRUPT,
                       "segment %s offset %u: snapshot of stream '%.*s' at revision %llu, which "
                       "the stream does not have",
                       name, loc_off(loc), (int)r->stream_len, r->stream,
                       (unsigned long long)r->revision);
    idx_snap e = {r->revision, loc, r->len, (uint32_t)r->position};
    rc = idx_snap_put(L->ix, txn, st.sid, &e);
    if (rc == 0)
        rc = trim_snaps(L, txn, &st);
    return rc;
}

/* ------------------------------------------------------------ scavenger */

int sm_record_live(local *L, MDB_txn *txn, const rec *r, uint64_t loc)
{
    idx_stream st;
    int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &st);
    if (rc == STELE_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (r->kind == REC_METADATA)
        return st.meta_seq && st.meta_loc == loc;
    if (r->kind != REC_SNAPSHOT)
        return err_set(STELE_EINTERNAL, "sm_record_live: record kind %u", r->kind);
    idx_snap e;
    rc = idx_snap_get(L->ix, txn, st.sid, r->revision, &e);
    if (rc == STELE_ENOTFOUND)
        return 0;
    return rc ? rc : e.loc == loc;
}

int sm_record_moved(local *L, MDB_txn *txn, const rec *r, uint64_t old_loc, uint64_t new_loc)
{
    idx_stream st;
    int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &st);
    if (rc)
        return rc;
    if (r->kind == REC_METADATA) {
        if (!st.meta_seq || st.meta_loc != old_loc)
            return STELE_ENOTFOUND;
        st.meta_loc = new_loc;
        return idx_stream_put(L->ix, txn, r->stream, r->stream_len, &st);
    }
    idx_snap e;
    rc = idx_snap_get(L->ix, txn, st.sid, r->revision, &e);
    if (rc)
        return rc;
    if (e.loc != old_loc)
        return STELE_ENOTFOUND;
    e.loc = new_loc;
    return idx_snap_put(L->ix, txn, st.sid, &e);
}

/* ------------------------------------------------------------ requests */

int local_set_metadata(backend *b, const char *stream, size_t len,
                       const stele_stream_metadata *md, int64_t expected, uint64_t *version)
{
    local *L = (local *)b;
    wreq r;
    memset(&r, 0, sizeof r);
    r.op = OP_METADATA;
    r.stream = stream;
    r.stream_len = len;
    r.expected = expected;
    r.md = md;
    r.current = STELE_NONE;
    r.bytes = rec_body_size(len, REC_META_DATA_SIZE, md->custom_len);
    int rc = local_submit(L, &r);
    if (version)
        *version = rc == 0 || rc == STELE_EWRONGREV ? r.current : STELE_NONE;
    return rc;
}

int local_put_snapshot(backend *b, const char *stream, size_t len, const stele_snapshot_in *s)
{
    local *L = (local *)b;
    wreq r;
    memset(&r, 0, sizeof r);
    r.op = OP_SNAPSHOT;
    r.stream = stream;
    r.stream_len = len;
    r.snap = s;
    r.bytes = rec_body_size(len, s->state_len, 0);
    return local_submit(L, &r);
}

/* ------------------------------------------------------------ reads */

/* Read and verify the record of `kind` for `stream` at `loc` into b
 * (`bytes` long, or 0: read its header first). */
static int read_rec(local *L, uint64_t loc, uint32_t bytes, uint8_t kind, const char *stream,
                    size_t len, buf *b, rec *r)
{
    char name[32];
    log_seg_name(loc_seg(loc), name);
    int rc;
    if (!bytes) {
        uint8_t h[REC_HEADER_SIZE];
        if ((rc = log_read(L->lg, loc, h, sizeof h)))
            return rc;
        bytes = ld32(h);
        if (bytes < REC_HEADER_SIZE || bytes % REC_ALIGN)
            return err_set(STELE_ECORRUPT, "segment %s offset %u: bad record length", name,
                           loc_off(loc));
    }
    b->len = 0;
    if ((rc = buf_reserve(b, bytes)) || (rc = log_read(L->lg, loc, b->p, bytes)))
        return rc;
    b->len = bytes;
    const char *why = "record runs past its length";
    rec_status st = rec_decode(b->p, bytes, r, &why);
    if (st == REC_OK && (r->kind != kind || r->len != bytes || r->stream_len != len ||
                         memcmp(r->stream, stream, len)))
        why = "the index points at another record", st = REC_BAD;
    if (st != REC_OK)
        return err_set(STELE_ECORRUPT, "segment %s offset %u: %s", name, loc_off(loc), why);
    return 0;
}

int local_get_metadata(backend *b, const char *stream, size_t len, stele_stream_metadata **out)
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
    if (st.flags & IDX_TOMBSTONED)
        return err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)len, stream);
    buf rb = {0};
    rec r;
    r.meta_len = 0;
    r.meta = NULL;
    /* The record is immutable once the index names it (until a scavenge
     * moves it; the scavenger repoints the index under its own rules). */
    if (st.meta_seq && (rc = read_rec(L, st.meta_loc, 0, REC_METADATA, stream, len, &rb, &r))) {
        buf_free(&rb);
        return rc;
    }
    stele_stream_metadata *md = malloc(sizeof *md + r.meta_len + 1);
    if (!md) {
        buf_free(&rb);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    memset(md, 0, sizeof *md);
    char *custom = (char *)(md + 1);
    if (r.meta_len)
        memcpy(custom, r.meta, r.meta_len);
    custom[r.meta_len] = 0;
    md->max_age_us = st.max_age_us;
    md->max_count = st.max_count;
    md->truncate_before = st.meta_tb;
    md->max_snapshots = st.max_snapshots;
    md->custom = r.meta_len ? custom : NULL;
    md->custom_len = r.meta_len;
    md->version = st.meta_seq ? st.meta_seq - 1 : STELE_NONE;
    buf_free(&rb);
    *out = md;
    return 0;
}

/* The latest visible snapshot at or before `rev` (NULL if none). */
static int snap_at(local *L, MDB_txn *txn, const idx_stream *st, const char *stream, size_t len,
                   uint64_t rev, stele_snapshot **out)
{
    *out = NULL;
    idx_snap e;
    int rc = idx_snap_floor(L->ix, txn, st->sid, rev, &e);
    if (rc == STELE_ENOTFOUND || (rc == 0 && e.revision < st->truncate_before))
        return 0;
    if (rc)
        return rc;
    buf rb = {0};
    rec r;
    if ((rc = read_rec(L, e.loc, e.bytes, REC_SNAPSHOT, stream, len, &rb, &r)) == 0 &&
        r.revision != e.revision)
        rc = err_set(STELE_ECORRUPT, "snapshot record at revision %llu, the index says %llu",
                     (unsigned long long)r.revision, (unsigned long long)e.revision);
    if (rc) {
        buf_free(&rb);
        return rc;
    }
    stele_snapshot *s = malloc(sizeof *s + len + 1 + r.data_len);
    if (!s) {
        buf_free(&rb);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    char *name = (char *)(s + 1);
    memcpy(name, stream, len);
    name[len] = 0;
    if (r.data_len)
        memcpy(name + len + 1, r.data, r.data_len);
    s->stream = name;
    s->stream_len = len;
    s->revision = r.revision;
    s->schema_version = (uint32_t)r.position;
    s->flags = r.flags & STELE_EVENT_JSON;
    s->created_us = r.created_us;
    s->state = name + len + 1;
    s->state_len = r.data_len;
    buf_free(&rb);
    *out = s;
    return 0;
}

int local_get_snapshot(backend *b, const char *stream, size_t len, uint64_t at_or_before,
                       stele_snapshot **out)
{
    local *L = (local *)b;
    MDB_txn *txn;
    uint64_t visible, end;
    int rc = snapshot(L, &txn, &visible, &end);
    if (rc)
        return rc;
    idx_stream st;
    if ((rc = stream_state(L, txn, stream, len, &st)) == 0)
        rc = snap_at(L, txn, &st, stream, len, at_or_before, out);
    mdb_txn_abort(txn);
    return rc;
}

/* Visible events of the stream forwards from `from`, at most `limit` (the
 * forward half of local_read_stream, inside the caller's snapshot). */
static int read_after(local *L, MDB_txn *txn, uint64_t visible, const idx_stream *st,
                      uint64_t from, size_t limit, stele_page *pg)
{
    uint64_t lo = stream_start(st), hi = st->last_rev;
    int64_t now = time_now_us();
    if (from < lo)
        from = lo;
    if (from > hi || limit == 0)
        return 0;
    idx_rev_cursor cur = {0};
    buf cb;
    scratch_init(L, &cb);
    log_holders hold = {0};
    uint64_t last = 0;
    int any = 0;
    idx_commit c;
    int rc = idx_rev_open(L->ix, txn, st->sid, &cur);
    if (rc == 0)
        rc = idx_rev_seek(&cur, from, 0, &c);
    while (rc == 0 && !page_full(pg, limit) && c.first_pos < visible) {
        if ((rc = read_commit(L, &c, &cb)))
            break;
        size_t off = 0;
        for (uint32_t i = 0; i < c.count && rc == 0 && !page_full(pg, limit); i++) {
            rec r;
            if ((rc = commit_rec(L, &hold, &c, &cb, off, &r)))
                break;
            off += r.len;
            if (r.revision < from || !event_visible(st, r.revision, r.created_us, now))
                continue;
            rc = local_page_add(pg, &r);
            last = r.revision;
            any = 1;
        }
        if (rc || page_full(pg, limit))
            break;
        rc = idx_rev_step(&cur, 0, &c);
    }
    if (rc == STELE_ENOTFOUND)
        rc = 0;
    if (rc == 0 && any && last < hi) {
        pg->has_next = 1;
        pg->next = last + 1;
    }
    idx_rev_close(&cur);
    scratch_free(L, &cb);
    log_holders_free(&hold);
    return rc;
}

int local_load(backend *b, const char *stream, size_t len, size_t limit, stele_snapshot **snap,
               stele_page **events)
{
    local *L = (local *)b;
    MDB_txn *txn;
    uint64_t visible, end;
    int rc = snapshot(L, &txn, &visible, &end);
    if (rc)
        return rc;
    idx_stream st;
    stele_snapshot *s = NULL;
    stele_page *pg = NULL;
    if ((rc = stream_state(L, txn, stream, len, &st)) == 0)
        rc = snap_at(L, txn, &st, stream, len, STELE_END, &s);
    if (rc == 0)
        rc = page_new(L->pl, &pg);
    if (rc == 0)
        page_expect(pg, limit);
    if (rc == 0)
        rc = read_after(L, txn, visible, &st, s ? s->revision + 1 : 0, limit, pg);
    mdb_txn_abort(txn);
    if (rc) {
        free(s);
        stele_page_free(pg);
        return rc;
    }
    *snap = s;
    *events = pg;
    return 0;
}
