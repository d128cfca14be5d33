/*
 * local_recover.c - opening the local engine after a clean close or a
 * crash: the lock-file marker with the boot id, replaying the log into the
 * index from its checkpoint (or rebuilding it), cutting a torn tail, and
 * STELE_OPEN_VERIFY.
 *
 * A full disk. When the log ends in a sealed segment (or the store is new)
 * recovery makes the next segment. If there is no room for it, open still
 * succeeds, read-only for lack of space (local.c "Running out of space"):
 * the checkpoint then says offset 0 of the missing segment, which the
 * writer makes when an append arrives and space has come back. A headerless
 * last segment at the checkpoint itself (a crash while it was being made)
 * is dropped and made again.
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
#include "log/record.h"
#include "os/os.h"
#include "util/assert.h"

/* -------------------------------------------------------------- recovery */

/* The boot id tells a crash of this process (same boot) from a crash of
 * the machine (another boot). */
void boot_id(char out[64])
{
    snprintf(out, 64, "unknown");
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (fgets(out, 64, f))
            out[strcspn(out, "\n")] = 0;
        fclose(f);
    }
}

int write_marker(local *L, const char *text)
{
    size_t n = strlen(text);
    int rc = os_io->ftruncate(L->lockfd, 0);
    if (rc == 0)
        rc = os_write_full(L->lockfd, text, n, 0);
    if (rc == 0)
        rc = os_io->fdatasync(L->lockfd);
    return rc ? err_set(STELE_EIO, "write %s/stele.lock: %s", L->dir, strerror(-rc)) : 0;
}

/* Apply one complete event commit found by recovery to the index. */
typedef struct rcommit {
    uint64_t start;        /* loc of its first record */
    uint32_t count, seen;
    uint64_t first_rev, first_pos;
    int64_t created;
    char stream[256];
    uint16_t stream_len;
    uint8_t (*ids)[16];
    uint8_t *made;
    uint32_t cap;
    /* Sparse position entries and bytes of this commit, applied only once
     * it is complete (a torn commit must leave no trace in the index). */
    uint64_t (*pos)[2];
    size_t npos, poscap;
    uint64_t last_pos_loc;
    uint64_t bytes;
    /* A multi-stream commit (REC_MULTI): its events may name several
     * streams, snapshot records may follow them; nevents counts events. */
    int multi, in_states;
    uint32_t nevents;
} rcommit;

static int apply_event_commit(local *L, MDB_txn *txn, rcommit *c)
{
    idx_stream st;
    int rc = idx_stream_get(L->ix, txn, c->stream, c->stream_len, &st);
    if (rc == STELE_ENOTFOUND) {
        memset(&st, 0, sizeof st);
        st.sid = L->ck.next_sid++;
        L->ck.streams++;
        rc = 0;
    } else if (rc) {
        return rc;
    }
    st.last_rev = c->first_rev + c->count - 1;
    st.last_pos = c->first_pos + c->count - 1;
    st.flags &= ~IDX_DELETED;
    rc = idx_stream_put(L->ix, txn, c->stream, c->stream_len, &st);
    for (uint32_t i = 0; i < c->count && rc == 0; i++)
        if (!c->made[i])
            rc = idx_id_put(L->ix, txn, c->ids[i], st.sid, c->first_rev + i, c->first_pos + i);
    /* The commit's own bytes (not "up to the next record": in a scavenged
     * segment that may lie beyond a removed stretch). */
    idx_commit ic = {st.sid, c->first_rev, c->start, c->first_pos, c->count,
                     (uint32_t)c->bytes};
    if (rc == 0)
        rc = idx_commit_put(L->ix, txn, &ic);
    if (rc == 0)
        rc = sec_recover_commit(L, txn, c->start, c->start + c->bytes);
    return rc;
}

static int apply_marker(local *L, MDB_txn *txn, const rec *r)
{
    idx_stream st;
    int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &st);
    if (rc == STELE_ENOTFOUND) {
        memset(&st, 0, sizeof st);
        st.sid = L->ck.next_sid++;
        st.last_rev = st.last_pos = UINT64_MAX;
        L->ck.streams++;
        rc = 0;
    } else if (rc) {
        return rc;
    }
    if (r->kind == REC_DELETE) {
        st.truncate_before = r->position;
        st.flags |= IDX_DELETED;
    } else {
        st.flags |= IDX_TOMBSTONED;
    }
    rc = idx_stream_put(L->ix, txn, r->stream, r->stream_len, &st);
    return rc ? rc : sm_on_remove(L, txn, &st); /* the snapshots it hides */
}

/* Zero the log from `from` to the end of the segment's written data. */
static int cut_tail(local *L, uint64_t from)
{
    log_seg *s = L->lg->segs[loc_seg(from)];
    static const uint8_t zeros[1 << 16];
    uint8_t probe[1 << 16];
    uint64_t off = loc_off(from);
    while (off < s->size) {
        uint64_t n = s->size - off < sizeof zeros ? s->size - off : sizeof zeros;
        if (os_read_full(s->fd, probe, n, off))
            break;
        if (memcmp(probe, zeros, n) == 0)
            break;
        int rc = os_write_full(s->fd, zeros, n, off);
        if (rc)
            return err_set(STELE_EIO, "cut torn tail: %s", strerror(-rc));
        off += n;
    }
    int rc = os_io->fdatasync(s->fd);
    return rc ? err_set(STELE_EIO, "cut torn tail: %s", strerror(-rc)) : 0;
}

/* Is the record at `at` a trailing chain record (local_chain.c, "Trailing
 * records": the commit's before it own, which the log's end covers with
 * it)? Complete, pending or torn in its rewrite: the header's first bytes
 * are the same (the chain's own walks judge the rest). */
static int trailing_chain_rec_at(local *L, uint64_t at)
{
    uint8_t h[REC_HEADER_SIZE];
    if (loc_off(at) + CHAIN_REC_SIZE > L->lg->segs[loc_seg(at)]->size)
        return 0;
    if (log_read(L->lg, at, h, sizeof h)) {
        err_clear(); /* (callers have no error of their own) */
        return 0;
    }
    return ld32(h) == CHAIN_REC_SIZE && h[8] == REC_CHAIN && (h[9] & REC_CHAIN_TRAILING);
}

static int trailing_chain_rec_ends(local *L, uint64_t at)
{
    return at + CHAIN_REC_SIZE == L->ck.loc && trailing_chain_rec_at(L, at);
}

/* Where the log goes on after a commit ending at `end`: past its trailing
 * chain record, if it has one (else the next group would write over it). */
static uint64_t past_trailing(local *L, uint64_t end)
{
    return trailing_chain_rec_at(L, end) ? end + CHAIN_REC_SIZE : end;
}

/* Does the newest indexed commit still end exactly at the checkpoint (or
 * its trailing chain record does)? */
static int last_commit_intact(local *L)
{
    if (L->ck.last_commit == UINT64_MAX)
        return 1;
    uint32_t nsegs = atomic_load(&L->lg->nsegs);
    /* At most the start of the next segment, not made yet (no space). */
    if (loc_seg(L->ck.loc) > nsegs || (loc_seg(L->ck.loc) == nsegs && loc_off(L->ck.loc) != 0))
        return 0;
    log_iter it;
    log_iter_init(&it, L->lg, L->ck.last_commit, UINT64_MAX);
    rec r;
    uint64_t at;
    int short_tail, ok = 0;
    uint32_t count = 0;
    for (uint32_t i = 0;; i++) {
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st != LOG_ITER_REC || r.kind == REC_SEAL || r.commit_index != i)
            break;
        count = r.commit_count;
        if (i + 1 == count) {
            ok = it.loc == L->ck.loc || trailing_chain_rec_ends(L, it.loc);
            /* ... or a seal follows and the checkpoint is in the next
             * segment, just past its header. */
            if (!ok && log_iter_next(&it, &r, &at, &short_tail) == LOG_ITER_REC &&
                r.kind == REC_SEAL)
                ok = loc_seg(L->ck.loc) == loc_seg(it.loc) && loc_off(L->ck.loc) <= SEG_HEADER_SIZE;
            break;
        }
    }
    log_iter_free(&it);
    err_clear();
    return ok;
}

/* Make segment `segno` and write its header (first position `first`). 0,
 * or STELE_ENOSPC (nothing left behind) or another error. */
static int start_segment(local *L, uint32_t segno, uint64_t first)
{
    int rc = log_add_segment(L->lg, segno, L->lg->seg_size);
    if (rc)
        return rc;
    uint8_t h[SEG_HEADER_SIZE];
    seg_header_encode(h, segno, first, time_now_us());
    log_seg *s = L->lg->segs[segno];
    rc = os_write_full(s->fd, h, sizeof h, 0);
    if (rc == 0)
        rc = os_io->fdatasync(s->fd);
    if (rc)
        return err_set(STELE_EIO, "write segment header: %s", strerror(-rc));
    s->first_position = first;
    return 0;
}

/* No room for segment `segno`: open read-only, the log continuing at its
 * start once it can be made. */
static void no_room(local *L, uint32_t segno)
{
    char why[400];
    snprintf(why, sizeof why, "%.380s", stele_errmsg());
    local_set_nospace(L, why);
    L->ck.loc = loc_make(segno, 0);
    err_clear();
}

/* Does the segment hold anything after its header? */
static int seg_has_records(logf *lg, uint32_t segno)
{
    uint8_t w[8] = {0};
    log_seg *s = lg->segs[segno];
    if (s->size < SEG_HEADER_SIZE + sizeof w)
        return 0;
    if (os_read_full(s->fd, w, sizeof w, SEG_HEADER_SIZE))
        return 1; /* unreadable: treat as damage, never as empty */
    static const uint8_t zero[8];
    return memcmp(w, zero, sizeof w) != 0;
}

/*
 * recover() in named steps:
 *   recover_checkpoint  open the write transaction, take the index's
 *                       checkpoint (or start from nothing for a rebuild,
 *                       or when the log lost what the index holds);
 *   recover_segments    settle the last segment: a damaged header, one
 *                       torn at creation, a new store;
 *   recover_scan        walk the log from the checkpoint, applying each
 *                       complete commit (scan_*), cutting a torn tail;
 *   recover_finish      start the next segment after a sealed one, write
 *                       the checkpoint, commit and sync the index.
 */

/* Open the recovery transaction (*txn) and set L->ck to where the log must
 * be replayed from. On error *txn may be open (the caller aborts it). */
static int recover_checkpoint(local *L, int rebuild, MDB_txn **txn, recover_report *rep)
{
    int rc = idx_reserve(L->ix);
    if (rc == 0)
        rc = idx_begin(L->ix, 0, txn);
    if (rc)
        return rc;
    rc = rebuild ? STELE_ENOTFOUND : idx_ckpt_get(L->ix, *txn, &L->ck);
    if (rc == 0 && !last_commit_intact(L)) {
        /* The log lost what the index says it holds (truncated or zeroed
         * after it was indexed): the index cannot be trusted; rebuild. */
        rc = idx_drop_all(L->ix, *txn);
        if (rc == 0)
            rc = STELE_ENOTFOUND;
        rep->mode = RECOVER_REBUILD;
        snprintf(rep->why, sizeof rep->why, "the log no longer holds the index's newest commit");
    }
    if (rc == STELE_ENOTFOUND) {
        memset(&L->ck, 0, sizeof L->ck);
        L->ck.loc = loc_make(L->lg->first_seg, 0);
        L->ck.next_sid = 1;
        L->ck.last_pos_loc = UINT64_MAX;
        L->ck.last_commit = UINT64_MAX;
        rc = 0;
    }
    return rc;
}

/* Settle the last segment before the walk: a damaged header is an error,
 * one torn at creation is dropped or its header rewritten, and a new store
 * gets its first segment. */
static int recover_segments(local *L)
{
    logf *lg = L->lg;
    int rc = 0;
    uint32_t nsegs = atomic_load(&lg->nsegs);
    /* A last segment without a valid header: the header is written in the
     * same write as the segment's first records, so a torn creation leaves
     * no records behind it. Records there mean the header is damaged. */
    if (nsegs > lg->first_seg && lg->segs[nsegs - 1]->first_position == UINT64_MAX &&
        seg_has_records(lg, nsegs - 1)) {
        char name[32];
        log_seg_name(nsegs - 1, name);
        return err_set(STELE_ECORRUPT, "segment %s offset 0: segment header is damaged", name);
    }
    /* Torn at creation: drop it (its predecessor is sealed). */
    if (nsegs > lg->first_seg && lg->segs[nsegs - 1]->first_position == UINT64_MAX &&
        nsegs - 1 > lg->first_seg &&
        (loc_seg(L->ck.loc) < nsegs - 1 || L->ck.loc == loc_make(nsegs - 1, 0))) {
        rc = log_drop_last(lg);
        nsegs = atomic_load(&lg->nsegs);
    }
    if (rc == 0 && nsegs == lg->first_seg) {
        /* A new store (or one whose first segment could not be made): segment
         * `first_seg` with its header. */
        rc = start_segment(L, lg->first_seg, 0);
        L->ck.loc = loc_make(lg->first_seg, SEG_HEADER_SIZE);
        if (rc == STELE_ENOSPC) {
            no_room(L, lg->first_seg);
            rc = 0;
        }
    } else if (rc == 0 && lg->segs[nsegs - 1]->first_position == UINT64_MAX) {
        /* The only segment past the checkpoint has no header: torn at
         * creation of the store or of this segment. Rewrite it. */
        uint8_t h[SEG_HEADER_SIZE];
        seg_header_encode(h, nsegs - 1, L->ck.next_pos, time_now_us());
        log_seg *s = lg->segs[nsegs - 1];
        rc = os_write_full(s->fd, h, sizeof h, 0);
        if (rc == 0)
            rc = os_io->fdatasync(s->fd);
        if (rc)
            rc = err_set(STELE_EIO, "write segment header: %s", strerror(-rc));
        s->first_position = L->ck.next_pos;
    }
    return rc;
}

/* Recovery's walk over the log from the checkpoint. */
typedef struct rscan {
    local *L;
    MDB_txn *txn;    /* the write transaction; NULL once it is gone */
    log_iter it;
    rcommit c;       /* the commit being gathered (seen < count) */
    uint64_t in_txn; /* events applied in txn */
    uint64_t after;  /* just past the last complete commit or record */
} rscan;

/* Framing: a commit's records are consecutive, and a new commit starts at
 * the next position. 0, or ECORRUPT naming the record at `at`. */
static int scan_framing(rscan *sc, const rec *r, uint64_t at)
{
    local *L = sc->L;
    rcommit *c = &sc->c;
    int ok = 1;
    if (c->seen < c->count && c->multi) {
        /* Events at consecutive positions, then snapshots. */
        ok = (r->flags & REC_MULTI) && r->commit_index == c->seen &&
             r->commit_count == c->count &&
             (r->kind == REC_EVENT ? !c->in_states && r->position == c->first_pos + c->nevents
                                   : r->kind == REC_SNAPSHOT);
        if (ok && r->kind == REC_SNAPSHOT)
            c->in_states = 1;
    } else if (c->seen < c->count) {
        ok = r->kind == REC_EVENT && r->commit_index == c->seen && r->commit_count == c->count &&
             r->position == c->first_pos + c->seen && r->revision == c->first_rev + c->seen &&
             r->stream_len == c->stream_len && !memcmp(r->stream, c->stream, c->stream_len) &&
             !(r->flags & REC_MULTI);
    } else if (r->kind == REC_EVENT) {
        /* Gapless, except where scavenging removed events. */
        ok = r->commit_index == 0 &&
             (r->position == L->ck.next_pos ||
              (r->position > L->ck.next_pos && log_seg_scavenged(L->lg, loc_seg(at))));
    }
    if (ok)
        return 0;
    char name[32];
    log_seg_name(loc_seg(at), name);
    return err_set(STELE_ECORRUPT, "segment %s offset %u: record out of sequence", name,
                   loc_off(at));
}

/* The walk met damage (st < 0, at `at`) or the end of the data inside a
 * commit (st == LOG_ITER_END). Only the last segment may be torn: a torn
 * tail is cut off and the walk ends there (0); anything else is damage
 * (its error). */
static int scan_stop(rscan *sc, int st, uint64_t at)
{
    local *L = sc->L;
    rcommit *c = &sc->c;
    uint32_t last_seg = atomic_load(&L->lg->nsegs) - 1;
    uint64_t bad = st < 0 ? at : sc->it.loc;
    int torn = loc_seg(bad) == last_seg && !log_seg_scavenged(L->lg, loc_seg(bad)) &&
               (st == LOG_ITER_END ||
                (st == STELE_ECORRUPT && !log_valid_record_after(L->lg, bad, L->ck.next_pos)));
    if (!torn) {
        if (st == LOG_ITER_END) {
            char name[32];
            log_seg_name(loc_seg(bad), name);
            st = err_set(STELE_ECORRUPT,
                         "segment %s offset %u: commit is incomplete in a sealed segment", name,
                         loc_off(bad));
        }
        return st;
    }
    uint64_t cut = c->seen < c->count ? c->start : bad;
    int rc = cut_tail(L, cut);
    if (rc)
        return rc;
    sc->after = cut;
    c->seen = c->count = 0;
    return 0;
}

/* The data ended between commits: only the last segment may end unsealed. */
static int scan_end(rscan *sc)
{
    logf *lg = sc->L->lg;
    uint32_t last_seg = atomic_load(&lg->nsegs) - 1;
    if (atomic_load(&lg->nsegs) > lg->first_seg && loc_seg(sc->it.loc) < last_seg) {
        char name[32];
        log_seg_name(loc_seg(sc->it.loc), name);
        return err_set(STELE_ECORRUPT,
                       "segment %s offset %u: data ends without a seal, but later segments exist",
                       name, loc_off(sc->it.loc));
    }
    return 0;
}

static void scan_seal(rscan *sc, const rec *r, uint64_t at)
{
    local *L = sc->L;
    /* Events removed from the end of a scavenged segment: the seal still
     * names the next position. */
    if (r->position > L->ck.next_pos && log_seg_scavenged(L->lg, loc_seg(at)))
        L->ck.next_pos = r->position;
    L->ck.log_bytes += r->len;
    sc->after = sc->it.loc;
}

/* A record that is a commit by itself: metadata, a snapshot, a delete or a
 * tombstone. */
static int scan_single(rscan *sc, const rec *r, uint64_t at)
{
    local *L = sc->L;
    int rc = r->kind == REC_METADATA || r->kind == REC_SNAPSHOT ? sm_apply(L, sc->txn, r, at)
                                                                : apply_marker(L, sc->txn, r);
    L->ck.last_commit = at;
    L->ck.log_bytes += r->len;
    sc->after = rc ? sc->it.loc : past_trailing(L, sc->it.loc);
    return rc;
}

/* Record r (commit_index 0) starts a commit: reset the gatherer and make
 * room for the commit's ids. */
static int commit_begin(rcommit *c, const rec *r, uint64_t at)
{
    c->start = at;
    c->count = r->commit_count;
    c->seen = 0;
    c->first_rev = r->revision;
    c->first_pos = r->position;
    c->stream_len = r->stream_len;
    memcpy(c->stream, r->stream, r->stream_len);
    c->multi = (r->flags & REC_MULTI) != 0;
    c->in_states = 0;
    c->nevents = 0;
    if (c->cap < c->count) {
        free(c->ids);
        free(c->made);
        c->ids = malloc((size_t)c->count * 16);
        c->made = malloc(c->count);
        c->cap = c->ids && c->made ? c->count : 0;
        if (!c->cap)
            return err_set(STELE_ENOMEM, "out of memory");
    }
    return 0;
}

/* Note the sparse position entry record r (an event at `at`) needs, to be
 * written once its commit is complete. */
static int commit_note_pos(rcommit *c, const rec *r, uint64_t at)
{
    if (c->last_pos_loc != UINT64_MAX && loc_seg(c->last_pos_loc) == loc_seg(at) &&
        at - c->last_pos_loc < IDX_POS_STRIDE)
        return 0;
    if (c->npos == c->poscap) {
        size_t cap = c->poscap ? c->poscap * 2 : 16;
        uint64_t(*np)[2] = realloc(c->pos, cap * sizeof *np);
        if (!np)
            return err_set(STELE_ENOMEM, "out of memory");
        c->pos = np;
        c->poscap = cap;
    }
    c->pos[c->npos][0] = r->position;
    c->pos[c->npos][1] = at;
    c->npos++;
    c->last_pos_loc = at;
    return 0;
}

/* The append edge refuses an event id given twice in one append
 * (store_check_ids), so a commit holding one is not the writer's: a
 * crafted or damaged log whose checksums still match. Applying it would map
 * the id to its second event only (stele check would then report the
 * first); recovery refuses it instead, naming where it lies. */
static int commit_ids_unique(const rcommit *c)
{
    long dup = uuid_find_dup((const uint8_t(*)[16])c->ids, c->made, c->count);
    if (dup == -1)
        return 0;
    if (dup == -2)
        return err_set(STELE_ENOMEM, "out of memory");
    char name[32], t[37];
    log_seg_name(loc_seg(c->start), name);
    stele_uuid_format(c->ids[dup], t);
    return err_set(STELE_ECORRUPT,
                   "segment %s offset %u: the commit holds event id %s twice, which no writer "
                   "makes (damaged or altered log)",
                   name, loc_off(c->start), t);
}

/* The commit is complete (its last record r was just read): apply it to
 * the index and move the checkpoint past it. */
static int commit_apply(rscan *sc, const rec *r)
{
    local *L = sc->L;
    rcommit *c = &sc->c;
    /* A commit starts with an event at or after the checkpoint's next
     * position (scan_framing) and ends after its start. */
    STELE_ASSERT(c->seen == c->count && c->nevents >= 1 && c->nevents <= c->count);
    STELE_ASSERT(c->first_pos >= L->ck.next_pos && sc->it.loc > c->start);
    int rc = commit_ids_unique(c);
    for (size_t i = 0; i < c->npos && rc == 0; i++)
        rc = idx_pos_put(L->ix, sc->txn, c->pos[i][0], c->pos[i][1]);
    L->ck.last_pos_loc = c->last_pos_loc;
    L->ck.log_bytes += c->bytes;
    if (rc == 0)
        rc = c->multi ? multi_recover_commit(L, sc->txn, c->start, c->bytes)
                      : apply_event_commit(L, sc->txn, c);
    /* A delete's record (a commit of its own, so at c->start): the delete
     * it carries (local_removes.c). */
    if (rc == 0 && (r->flags & REC_REMOVES))
        rc = rm_recover(L, sc->txn, r, c->start);
    L->ck.last_commit = c->start;
    L->ck.next_pos = c->first_pos + c->nevents;
    L->last_created = r->created_us;
    sc->after = rc ? sc->it.loc : past_trailing(L, sc->it.loc);
    sc->in_txn += c->count;
    return rc;
}

/* Gather record r (an event, or a multi-stream commit's snapshot) at `at`
 * into its commit; apply the commit once it is complete. */
static int scan_commit_rec(rscan *sc, const rec *r, uint64_t at)
{
    local *L = sc->L;
    rcommit *c = &sc->c;
    int rc;
    if (r->commit_index == 0 && (rc = commit_begin(c, r, at)))
        return rc;
    /* Framing (scan_framing) and the decoder (commit_index < commit_count)
     * put this record next in its commit. */
    STELE_ASSERT(c->seen < c->count && r->commit_index == c->seen && c->seen < c->cap);
    memcpy(c->ids[c->seen], r->id, 16);
    /* made: the id was made by the writer, or the record is not an event
     * (a multi-stream commit's snapshot): neither is a client's id. */
    c->made[c->seen] = (r->flags & REC_ID_MADE) != 0 || r->kind != REC_EVENT;
    if (c->seen == 0) {
        c->npos = 0;
        c->bytes = 0;
        c->last_pos_loc = L->ck.last_pos_loc;
    }
    c->nevents += r->kind == REC_EVENT;
    if (r->kind == REC_EVENT && (rc = commit_note_pos(c, r, at)))
        return rc;
    c->bytes += r->len;
    if (++c->seen == c->count)
        return commit_apply(sc, r);
    return 0;
}

/* Commit what has been applied so far with its checkpoint and go on in a
 * new transaction, so a long replay holds no giant transaction. */
static int scan_checkpoint(rscan *sc)
{
    local *L = sc->L;
    /* Never between the records of one commit. */
    STELE_ASSERT(sc->c.seen == sc->c.count && sc->after >= L->ck.loc);
    L->ck.loc = sc->after;
    int rc = idx_ckpt_put(L->ix, sc->txn, &L->ck);
    if (rc)
        return rc; /* the caller aborts sc->txn */
    rc = idx_commit_txn(sc->txn);
    sc->txn = NULL;
    if (rc == 0)
        rc = idx_reserve(L->ix);
    if (rc == 0)
        rc = idx_begin(L->ix, 0, &sc->txn);
    if (rc)
        sc->txn = NULL;
    sc->in_txn = 0;
    return rc;
}

/* Walk the log from L->ck.loc to its end, applying every complete commit.
 * 0 at the end of the data (a torn tail cut off), or the error that
 * stopped it. */
static int recover_scan(rscan *sc)
{
    for (;;) {
        rec r;
        uint64_t at = 0;
        int short_tail = 0;
        int st = log_iter_next(&sc->it, &r, &at, &short_tail);
        if (st == LOG_ITER_REC) {
            int bad = scan_framing(sc, &r, at);
            if (bad)
                st = bad;
        }
        if (st < 0 || (st == LOG_ITER_END && sc->c.seen < sc->c.count))
            return scan_stop(sc, st, at);
        if (st == LOG_ITER_END)
            return scan_end(sc);
        if (r.kind == REC_SEAL) {
            scan_seal(sc, &r, at);
            continue;
        }
        int rc = r.kind != REC_EVENT && sc->c.seen == sc->c.count ? scan_single(sc, &r, at)
                                                                  : scan_commit_rec(sc, &r, at);
        if (rc)
            return rc;
        if (sc->in_txn >= RECOVERY_TXN_EVENTS && sc->c.seen == sc->c.count &&
            (rc = scan_checkpoint(sc)))
            return rc;
    }
}

/* After the walk (rc its result): the log continues at `after`; start the
 * next segment if the log ends sealed, then commit the checkpoint (txn is
 * consumed) and sync the index. */
static int recover_finish(local *L, MDB_txn *txn, uint64_t after, int rc)
{
    logf *lg = L->lg;
    if (rc == 0) {
        L->ck.loc = after;
        /* The log ends in a sealed segment (seen now, or when there was no
         * room for the next one before): start the next one. */
        if (loc_seg(after) >= atomic_load(&lg->nsegs)) {
            rc = start_segment(L, loc_seg(after), L->ck.next_pos);
            if (rc == STELE_ENOSPC) {
                no_room(L, loc_seg(after));
                rc = 0;
            }
        }
        if (loc_off(L->ck.loc) == 0 && loc_seg(L->ck.loc) < atomic_load(&lg->nsegs))
            L->ck.loc += SEG_HEADER_SIZE;
    }
    /* The newest commit lies before where the log continues. */
    STELE_ASSERT(rc || L->ck.last_commit == UINT64_MAX || L->ck.last_commit < L->ck.loc);
    if (rc == 0)
        rc = idx_ckpt_put(L->ix, txn, &L->ck);
    if (rc == 0) {
        rc = idx_commit_txn(txn);
        txn = NULL;
    }
    if (txn)
        mdb_txn_abort(txn);
    if (rc == 0)
        rc = idx_sync(L->ix);
    return rc;
}

int recover(local *L, int rebuild, recover_report *rep)
{
    MDB_txn *txn = NULL;
    int rc = recover_checkpoint(L, rebuild, &txn, rep);
    rep->from_pos = L->ck.next_pos;
    if (rc == 0)
        rc = recover_segments(L);
    if (rc) {
        if (txn)
            mdb_txn_abort(txn);
        return rc;
    }
    rscan sc = {.L = L, .txn = txn, .after = L->ck.loc};
    log_iter_init(&sc.it, L->lg, L->ck.loc, UINT64_MAX);
    rc = recover_scan(&sc);
    log_iter_free(&sc.it);
    free(sc.c.ids);
    free(sc.c.made);
    free(sc.c.pos);
    rc = recover_finish(L, sc.txn, sc.after, rc);
    rep->to_pos = L->ck.next_pos;
    return rc;
}

/* Verify every record of the log (STELE_OPEN_VERIFY). */
int verify_all(local *L)
{
    log_iter it;
    log_iter_init(&it, L->lg, loc_make(L->lg->first_seg, 0), L->ck.loc);
    it.chain = 1; /* chain records too (chain_open has written any a crash left) */
    int rc = 0;
    for (;;) {
        rec r;
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st <= 0) {
            rc = st;
            break;
        }
    }
    log_iter_free(&it);
    return rc;
}
