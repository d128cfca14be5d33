/*
 * local_removes.c - a stream delete or tombstone as an event of `$deletes`
 * in the local engine (docs/projections.md "$deleted", record.h
 * REC_REMOVES).
 *
 * A delete's commit is one record: an event of the system stream
 * `$deletes`, type `$streamDeleted`, flagged REC_REMOVES, whose metadata is
 * the removes block naming the deleted stream. So the delete takes a
 * position in `$all` and the next revision of `$deletes`, and `$all`
 * readers (projections among them) see it in commit order. Because it is
 * one record of a one-record commit, the existing framing keeps or cuts the
 * delete and its event together: no recovery rule is new.
 *
 * The writer (local.c plan()) first applies the delete to the deleted
 * stream's state as before, then calls rm_plan(), which takes the position
 * and revision, records `$deletes`' new state and commit entry and builds
 * the record's data and metadata; write_group() calls rm_encode(), which
 * writes the record and points the position and commit indexes at it.
 * Recovery applies the record as an event of `$deletes` (its ordinary
 * path) and then rm_recover() applies the delete it carries, exactly as a
 * REC_DELETE / REC_TOMBSTONE marker of an older store is applied.
 *
 * Invariants: `$deletes` is written only here (src/store refuses every
 * other write to it; nothing deletes it), so its revisions are gapless and
 * each is one delete (of any stream, system streams the store removes
 * itself included, e.g. a deleted projection's); the record is never
 * scavenged (local_scavenge.c keeps it like a marker), since recovery
 * needs it to know the stream is deleted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/local_int.h"
#include "backend/removes.h"
#include "log/record.h"
#include "util/util.h"

#define RM_STREAM_LEN (sizeof REC_REMOVES_STREAM - 1)

/* The most bytes the record of a removal of a stream of `len` bytes takes:
 * the group's byte budget before planning (rm_plan sets the exact size). */
uint64_t rm_bytes_bound(size_t len)
{
    return rec_event_size(RM_STREAM_LEN, sizeof REC_REMOVES_TYPE - 1, NULL, 0, removes_cap(len),
                          REC_REMOVES_FIXED + len);
}

int rm_plan(local *L, MDB_txn *txn, wreq *r)
{
    idx_stream st;
    int rc = idx_stream_get(L->ix, txn, REC_REMOVES_STREAM, RM_STREAM_LEN, &st);
    if (rc && rc != STELE_ENOTFOUND)
        return rc;
    if (rc == STELE_ENOTFOUND) {
        memset(&st, 0, sizeof st);
        st.sid = L->ck.next_sid++;
        st.last_rev = st.last_pos = UINT64_MAX;
        L->ck.streams++;
    }
    uint64_t rev = st.last_rev == UINT64_MAX ? 0 : st.last_rev + 1;
    uint64_t pos = L->ck.next_pos;
    /* data (JSON) then the removes block, in one allocation */
    free(r->rm_buf);
    if (!(r->rm_buf = malloc(removes_cap(r->stream_len))))
        return err_set(STELE_ENOMEM, "out of memory");
    int tomb = r->op == OP_TOMBSTONE;
    removes_build(r->rm_buf, r->stream, r->stream_len, tomb, r->current,
                  tomb ? 0 : r->st.truncate_before, &r->rm_data_len, &r->rm_meta_len);
    r->bytes = rec_event_size_at(RM_STREAM_LEN, sizeof REC_REMOVES_TYPE - 1, NULL, 0,
                                 r->rm_data_len, r->rm_meta_len, 1, 0, pos, rev);
    st.last_rev = rev;
    st.last_pos = pos;
    L->ck.next_pos++;
    r->rm_sid = st.sid;
    r->rm_rev = rev;
    r->rm_pos = pos;
    r->res.first_position = r->res.last_position = pos;
    if ((rc = idx_stream_put(L->ix, txn, REC_REMOVES_STREAM, RM_STREAM_LEN, &st)))
        return rc;
    /* The commit's entry; rm_encode() fills in where it lands. */
    idx_commit c = {st.sid, rev, 0, pos, 1, 0};
    return idx_commit_put(L->ix, txn, &c);
}

int rm_encode(local *L, MDB_txn *txn, wreq *r, uint32_t seg, uint64_t write_off, int64_t now)
{
    int rc = 0;
    uint64_t start = write_off + L->gbuf.len;
    uint64_t loc = loc_make(seg, (uint32_t)start);
    if (L->ck.last_pos_loc == UINT64_MAX || loc_seg(L->ck.last_pos_loc) != seg ||
        loc - L->ck.last_pos_loc >= IDX_POS_STRIDE) {
        rc = idx_pos_put(L->ix, txn, r->rm_pos, loc);
        L->ck.last_pos_loc = loc;
    }
    uint8_t id[16];
    uuid_v7(id);
    stele_event_in ev;
    memset(&ev, 0, sizeof ev);
    ev.type = REC_REMOVES_TYPE;
    ev.data = r->rm_buf;
    ev.data_len = r->rm_data_len;
    ev.metadata = r->rm_buf + r->rm_data_len;
    ev.metadata_len = r->rm_meta_len;
    size_t n = rec_encode_event(L->gbuf.p + L->gbuf.len, REC_REMOVES_STREAM, RM_STREAM_LEN, &ev,
                                id, STELE_EVENT_JSON | REC_ID_MADE | REC_REMOVES, 1, 0, r->rm_pos,
                                r->rm_rev, now);
    L->gbuf.len += n;
    idx_commit c = {r->rm_sid, r->rm_rev, loc, r->rm_pos, 1, (uint32_t)n};
    if (rc == 0)
        rc = idx_commit_put(L->ix, txn, &c);
    return rc;
}

int rm_recover(local *L, MDB_txn *txn, const rec *r, uint64_t at)
{
    rec_removes rm;
    if (rec_removes_decode(r, &rm)) {
        char name[32];
        log_seg_name(loc_seg(at), name);
        return err_set(STELE_ECORRUPT, "segment %s offset %u: malformed stream delete record",
                       name, loc_off(at));
    }
    idx_stream st;
    int rc = idx_stream_get(L->ix, txn, rm.stream, rm.stream_len, &st);
    if (rc == STELE_ENOTFOUND) {
        memset(&st, 0, sizeof st);
        st.sid = L->ck.next_sid++;
        st.last_rev = st.last_pos = UINT64_MAX;
        L->ck.streams++;
        rc = 0;
    } else if (rc) {
        return rc;
    }
    if (rm.kind == REC_DELETE) {
        st.truncate_before = rm.truncate_before;
        st.flags |= IDX_DELETED;
    } else {
        st.flags |= IDX_TOMBSTONED;
    }
    rc = idx_stream_put(L->ix, txn, rm.stream, rm.stream_len, &st);
    return rc ? rc : sm_on_remove(L, txn, &st); /* the snapshots it hides */
}
