/*
 * local_scavenge.c - scavenging: giving back the space of events that no
 * read can return any more (soft-deleted, tombstoned, past retention), by
 * rewriting sealed segments without them.
 *
 * What goes. An append (a commit) is removed when every one of its events
 * is hidden by event_visible() - the rule stream reads use - against the
 * stream's state in an LMDB read transaction taken for the segment (so
 * the decision sees every delete acknowledged before it). Whole commits
 * only: a commit with one visible event stays whole, which keeps the log's
 * "a commit is all its records" rule true for recovery and `stele check`.
 *
 * What always stays.
 *   - The last commit of every stream: an index rebuilt from the log must
 *     find the stream's last revision and position there (KurrentDB keeps
 *     a stream's last event for the same reason).
 *   - Seals, deletes and tombstones: the rebuild replays them to restore
 *     truncate-before and the tombstone flag.
 *   - Stream metadata while it is its stream's current one, a snapshot
 *     while the snapshot index points at it, any other kind of record
 *     always (record_live()).
 *   - The segment being appended to (only sealed ones are rewritten), and
 *     anything the index has not reached yet.
 *
 * How. Per sealed segment: one pass decides and counts; if anything goes,
 * a second pass (same transaction, same decisions) copies the kept records
 * into a new file through log_rewrite.c, which swaps it in atomically on
 * disk and for readers. The index is never touched: its locations are
 * translated through the new file's relocation table, and entries of
 * removed commits point at nothing (readers skip them). Positions of kept
 * events never change; $all reads skip the gaps.
 *
 * Threads. A scavenge runs in its caller's thread, one at a time (scav_mu).
 * It reads the log and the index like any reader, so the writer never
 * waits for it; appends go on into the tail segment, and readers already
 * inside a segment that is swapped keep reading the old file (pinned) until
 * they leave it.
 *
 * Faults. The scavenger writes only its own temporary file until the
 * rename. A failed write or sync there fails the scavenge and removes the
 * temporary file; the store is untouched and stays writable (no
 * acknowledged data was at stake). A damaged record fails the scavenge
 * with ECORRUPT naming it, before that segment is changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/local_int.h"
#include "log/log_rewrite.h"
#include "log/record.h"

/*
 * Whether a record that is not an event, a seal, a delete or a tombstone
 * must survive scavenging (1), may go (0), or a negative error. Stream
 * metadata stays while it is its stream's current one, a snapshot while
 * the snapshot index still points at it (local_streams.c decides); any
 * other kind is kept.
 */
static int record_live(local *L, MDB_txn *txn, const rec *r, uint64_t loc)
{
    if (r->kind == REC_METADATA || r->kind == REC_SNAPSHOT)
        return sm_record_live(L, txn, r, loc);
    return 1;
}

/* Decide the commit that starts with event record r: 1 remove, 0 keep, or
 * a negative error. */
static int commit_removable(local *L, MDB_txn *txn, const rec *r, int64_t now)
{
    idx_stream st;
    int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &st);
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        return 0; /* not indexed (cannot happen below the checkpoint): keep */
    }
    if (rc)
        return rc;
    uint64_t first = r->revision, last = r->revision + r->commit_count - 1;
    if (st.last_rev != UINT64_MAX && st.last_rev >= first && st.last_rev <= last)
        return 0; /* the stream's last commit */
    for (uint64_t rev = first; rev <= last; rev++)
        if (event_visible(&st, rev, r->created_us, now))
            return 0;
    return 1;
}

typedef struct seg_plan {
    uint64_t events_removed, bytes_removed, bytes_scanned;
} seg_plan;

/*
 * One pass over sealed segment `seg`: decide each record; with `w`, copy
 * the kept ones into it. The decisions depend only on txn and now, so the
 * counting pass and the copying pass agree.
 */
static int seg_pass(local *L, MDB_txn *txn, uint32_t seg, int64_t now, log_rewrite *w,
                    seg_plan *p)
{
    log_iter it;
    log_iter_init(&it, L->lg, loc_make(seg, 0), loc_make(seg + 1, 0));
    it.chain = 1; /* chain records stay (record_live), removed commits' too */
    memset(p, 0, sizeof *p);
    int rc = 0, sealed = 0, remove = 0;
    uint32_t left = 0; /* records of the current commit still to come */
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
        p->bytes_scanned += r.len;
        int keep;
        if (r.kind == REC_EVENT || left > 0) {
            if (left == 0) {
                if (r.commit_index != 0) {
                    char name[32];
                    log_seg_name(seg, name);
                    rc = err_set(STELE_ECORRUPT, "segment %s: commit does not start at index 0 "
                                 "(original offset %u)", name, loc_off(at));
                    break;
                }
                /* A multi-stream commit goes only if every event of every
                 * stream in it may go and none of its snapshots is live. */
                int d = (r.flags & REC_MULTI) ? multi_removable(L, txn, at, now)
                                              : commit_removable(L, txn, &r, now);
                if (d < 0) {
                    rc = d;
                    break;
                }
                remove = d;
                left = r.commit_count;
            }
            left--;
            keep = !remove;
            if (remove) {
                p->events_removed += r.kind == REC_EVENT;
                p->bytes_removed += r.len;
            }
        } else {
            sealed |= r.kind == REC_SEAL;
            keep = r.kind == REC_SEAL || r.kind == REC_DELETE || r.kind == REC_TOMBSTONE;
            if (!keep && (keep = record_live(L, txn, &r, at)) < 0) {
                rc = keep;
                break;
            }
            if (!keep)
                p->bytes_removed += r.len;
        }
        if (keep && w && (rc = log_rewrite_add(w, at, it.raw, r.len)))
            break;
    }
    log_iter_free(&it);
    if (rc == 0 && (!sealed || left)) {
        char name[32];
        log_seg_name(seg, name);
        rc = err_set(STELE_ECORRUPT, "segment %s: %s", name,
                     left ? "ends inside a commit" : "sealed segment has no seal record");
    }
    return rc;
}

int local_scavenge(backend *b, const stele_scavenge_options *opts, stele_scavenge_result *res)
{
    local *L = (local *)b;
    memset(res, 0, sizeof *res);
    if (atomic_load(&L->fault))
        return err_set(STELE_EREADONLY,
                       "store is read-only after a storage fault (%s); reopen it before "
                       "scavenging",
                       L->fault_msg);
    pthread_mutex_lock(&L->scav_mu);
    uint64_t t0 = time_mono_ns();
    int rc = 0;
    for (uint32_t seg = L->lg->first_seg;; seg++) {
        MDB_txn *txn;
        uint64_t visible, end;
        if ((rc = snapshot(L, &txn, &visible, &end)))
            break;
        if (seg >= loc_seg(end)) {
            /* The segment being appended to (or past what is indexed). */
            mdb_txn_abort(txn);
            break;
        }
        int64_t now = time_now_us();
        seg_plan plan, done;
        rc = seg_pass(L, txn, seg, now, NULL, &plan);
        res->segments_scanned++;
        res->bytes_scanned += plan.bytes_scanned;
        if (rc == 0 && plan.bytes_removed) {
            log_rewrite *w;
            rc = log_rewrite_begin(L->lg, seg, &w);
            if (rc == 0 && (rc = seg_pass(L, txn, seg, now, w, &done)) != 0)
                log_rewrite_abort(w);
            uint64_t old_size = 0, new_size = 0;
            if (rc == 0)
                rc = log_rewrite_commit(w, &old_size, &new_size);
            if (new_size) {
                /* Swapped in (even if the directory sync then failed). */
                res->segments_rewritten++;
                res->events_removed += done.events_removed;
                res->bytes_removed += done.bytes_removed;
                res->bytes_reclaimed += old_size > new_size ? old_size - new_size : 0;
                atomic_fetch_add(&L->scav_unaccounted, done.bytes_removed);
            }
        }
        mdb_txn_abort(txn);
        res->duration_us = (time_mono_ns() - t0) / 1000;
        if (rc)
            break;
        if (opts && opts->progress && opts->progress(opts->ctx, res)) {
            res->stopped = 1;
            break;
        }
    }
    res->duration_us = (time_mono_ns() - t0) / 1000;
    pthread_mutex_unlock(&L->scav_mu);
    return rc;
}
