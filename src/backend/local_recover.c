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

/* Does the newest indexed commit still end exactly at the checkpoint? */
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
            ok = it.loc == L->ck.loc;
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

int recover(local *L, int rebuild)
{
    logf *lg = L->lg;
    MDB_txn *txn = NULL;
    int rc = idx_reserve(L->ix);
    if (rc == 0)
        rc = idx_begin(L->ix, 0, &txn);
    if (rc)
        return rc;
    rc = rebuild ? STELE_ENOTFOUND : idx_ckpt_get(L->ix, txn, &L->ck);
    if (rc == 0 && !last_commit_intact(L)) {
        /* The log lost what the index says it holds (truncated or zeroed
         * after it was indexed): the index cannot be trusted; rebuild. */
        rc = idx_drop_all(L->ix, txn);
        if (rc == 0)
            rc = STELE_ENOTFOUND;
    }
    if (rc == STELE_ENOTFOUND) {
        memset(&L->ck, 0, sizeof L->ck);
        L->ck.loc = loc_make(lg->first_seg, 0);
        L->ck.next_sid = 1;
        L->ck.last_pos_loc = UINT64_MAX;
        L->ck.last_commit = UINT64_MAX;
        rc = 0;
    }
    uint32_t nsegs = atomic_load(&lg->nsegs);
    /* A last segment without a valid header: the header is written in the
     * same write as the segment's first records, so a torn creation leaves
     * no records behind it. Records there mean the header is damaged. */
    if (rc == 0 && nsegs > lg->first_seg && lg->segs[nsegs - 1]->first_position == UINT64_MAX &&
        seg_has_records(lg, nsegs - 1)) {
        char name[32];
        log_seg_name(nsegs - 1, name);
        rc = err_set(STELE_ECORRUPT, "segment %s offset 0: segment header is damaged", name);
    }
    /* Torn at creation: drop it (its predecessor is sealed). */
    if (rc == 0 && nsegs > lg->first_seg && lg->segs[nsegs - 1]->first_position == UINT64_MAX &&
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
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }

    log_iter it;
    log_iter_init(&it, lg, L->ck.loc, UINT64_MAX);
    rcommit c = {0};
    uint64_t in_txn = 0, after = L->ck.loc;
    for (;;) {
        rec r;
        uint64_t at = 0;
        int short_tail = 0;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        uint32_t last_seg = atomic_load(&lg->nsegs) - 1;
        if (st == LOG_ITER_REC) {
            /* Framing: a commit's records are consecutive. */
            int ok = 1;
            if (c.seen < c.count && c.multi) {
                /* Events at consecutive positions, then snapshots. */
                ok = (r.flags & REC_MULTI) && r.commit_index == c.seen &&
                     r.commit_count == c.count &&
                     (r.kind == REC_EVENT ? !c.in_states && r.position == c.first_pos + c.nevents
                                          : r.kind == REC_SNAPSHOT);
                if (ok && r.kind == REC_SNAPSHOT)
                    c.in_states = 1;
            } else if (c.seen < c.count) {
                ok = r.kind == REC_EVENT && r.commit_index == c.seen && r.commit_count == c.count &&
                     r.position == c.first_pos + c.seen && r.revision == c.first_rev + c.seen &&
                     r.stream_len == c.stream_len && !memcmp(r.stream, c.stream, c.stream_len) &&
                     !(r.flags & REC_MULTI);
            } else if (r.kind == REC_EVENT) {
                /* Gapless, except where scavenging removed events. */
                ok = r.commit_index == 0 &&
                     (r.position == L->ck.next_pos ||
                      (r.position > L->ck.next_pos && log_seg_scavenged(lg, loc_seg(at))));
            }
            if (!ok) {
                char name[32];
                log_seg_name(loc_seg(at), name);
                rc = err_set(STELE_ECORRUPT, "segment %s offset %u: record out of sequence", name,
                             loc_off(at));
                st = rc;
                short_tail = 0;
            }
        }
        if (st < 0 || (st == LOG_ITER_END && c.seen < c.count)) {
            /* Damage or a torn tail. Only the last segment may be torn. */
            uint64_t bad = st < 0 ? at : it.loc;
            int torn = loc_seg(bad) == last_seg && !log_seg_scavenged(lg, loc_seg(bad)) &&
                       (st == LOG_ITER_END ||
                        (st == STELE_ECORRUPT && !log_valid_record_after(L->lg, bad, L->ck.next_pos)));
            if (!torn) {
                if (st == LOG_ITER_END) {
                    char name[32];
                    log_seg_name(loc_seg(bad), name);
                    st = err_set(STELE_ECORRUPT,
                                 "segment %s offset %u: commit is incomplete in a sealed segment",
                                 name, loc_off(bad));
                }
                rc = st;
                break;
            }
            uint64_t cut = c.seen < c.count ? c.start : bad;
            if ((rc = cut_tail(L, cut)))
                break;
            after = cut;
            c.seen = c.count = 0;
            break;
        }
        if (st == LOG_ITER_END) {
            if (atomic_load(&lg->nsegs) > lg->first_seg && loc_seg(it.loc) < last_seg) {
                char name[32];
                log_seg_name(loc_seg(it.loc), name);
                rc = err_set(STELE_ECORRUPT,
                             "segment %s offset %u: data ends without a seal, but later segments "
                             "exist",
                             name, loc_off(it.loc));
            }
            break;
        }
        if (r.kind == REC_SEAL) {
            /* Events removed from the end of a scavenged segment: the seal
             * still names the next position. */
            if (r.position > L->ck.next_pos && log_seg_scavenged(lg, loc_seg(at)))
                L->ck.next_pos = r.position;
            L->ck.log_bytes += r.len;
            after = it.loc;
            continue;
        }
        if (r.kind != REC_EVENT && c.seen == c.count) {
            rc = r.kind == REC_METADATA || r.kind == REC_SNAPSHOT ? sm_apply(L, txn, &r, at)
                                                                 : apply_marker(L, txn, &r);
            L->ck.last_commit = at;
            L->ck.log_bytes += r.len;
            after = it.loc;
        } else {
            if (r.commit_index == 0) {
                c.start = at;
                c.count = r.commit_count;
                c.seen = 0;
                c.first_rev = r.revision;
                c.first_pos = r.position;
                c.stream_len = r.stream_len;
                memcpy(c.stream, r.stream, r.stream_len);
                c.multi = (r.flags & REC_MULTI) != 0;
                c.in_states = 0;
                c.nevents = 0;
                if (c.cap < c.count) {
                    free(c.ids);
                    free(c.made);
                    c.ids = malloc((size_t)c.count * 16);
                    c.made = malloc(c.count);
                    c.cap = c.ids && c.made ? c.count : 0;
                    if (!c.cap) {
                        rc = err_set(STELE_ENOMEM, "out of memory");
                        break;
                    }
                }
            }
            memcpy(c.ids[c.seen], r.id, 16);
            c.made[c.seen] = (r.flags & REC_ID_MADE) != 0;
            if (c.seen == 0) {
                c.npos = 0;
                c.bytes = 0;
                c.last_pos_loc = L->ck.last_pos_loc;
            }
            c.nevents += r.kind == REC_EVENT;
            if (r.kind == REC_EVENT &&
                (c.last_pos_loc == UINT64_MAX || loc_seg(c.last_pos_loc) != loc_seg(at) ||
                 at - c.last_pos_loc >= IDX_POS_STRIDE)) {
                if (c.npos == c.poscap) {
                    size_t cap = c.poscap ? c.poscap * 2 : 16;
                    uint64_t(*np)[2] = realloc(c.pos, cap * sizeof *np);
                    if (!np) {
                        rc = err_set(STELE_ENOMEM, "out of memory");
                        break;
                    }
                    c.pos = np;
                    c.poscap = cap;
                }
                c.pos[c.npos][0] = r.position;
                c.pos[c.npos][1] = at;
                c.npos++;
                c.last_pos_loc = at;
            }
            c.bytes += r.len;
            if (++c.seen == c.count) {
                for (size_t i = 0; i < c.npos && rc == 0; i++)
                    rc = idx_pos_put(L->ix, txn, c.pos[i][0], c.pos[i][1]);
                L->ck.last_pos_loc = c.last_pos_loc;
                L->ck.log_bytes += c.bytes;
                if (rc == 0)
                    rc = c.multi ? multi_recover_commit(L, txn, c.start, c.bytes)
                                 : apply_event_commit(L, txn, &c);
                if (rc == 0 && (r.flags & REC_REMOVES))
                    rc = rm_recover(L, txn, &r, at); /* the delete it carries */
                L->ck.last_commit = c.start;
                L->ck.next_pos = c.first_pos + c.nevents;
                L->last_created = r.created_us;
                after = it.loc;
                in_txn += c.count;
            }
        }
        if (rc)
            break;
        if (in_txn >= RECOVERY_TXN_EVENTS && c.seen == c.count) {
            L->ck.loc = after;
            if ((rc = idx_ckpt_put(L->ix, txn, &L->ck)) || (rc = idx_commit_txn(txn))) {
                txn = NULL;
                break;
            }
            if ((rc = idx_reserve(L->ix)) || (rc = idx_begin(L->ix, 0, &txn))) {
                txn = NULL;
                break;
            }
            in_txn = 0;
        }
    }
    log_iter_free(&it);
    free(c.ids);
    free(c.made);
    free(c.pos);
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

/* Verify every record of the log (STELE_OPEN_VERIFY). */
int verify_all(local *L)
{
    log_iter it;
    log_iter_init(&it, L->lg, loc_make(L->lg->first_seg, 0), L->ck.loc);
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
