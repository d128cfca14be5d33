/*
 * index_sec.c - the secondary indexes of the local engine: which events
 * belong to a category, an event type, a tag, a correlation id or an
 * actor, and which position was committed at which time. Queries
 * (src/backend/local_query.c) read them; layout:
 *
 *   sec   key  kind:u8 | name bytes                (1 + 1..255 bytes)
 *         data position:be64 | loc:be64            (sorted duplicates,
 *                                                   MDB_DUPSORT|MDB_DUPFIXED)
 *   time  key  created:be64 (sign bit flipped) | position:be64
 *         data (none)
 *
 * kind is one of SEC_* (index.h): 'c' category (the stream name before its
 * first '-', sec_category_len), 't' event type, 'g' each tag, 'r'
 * correlation id, 'a' actor (both from JSON metadata, src/util/meta.c).
 * Names are validated names (no NUL, no control characters), so one key
 * never is a prefix-confusion of another kind's. Every event has exactly
 * one category and one type entry; tags, correlation id and actor add one
 * each when present.
 *
 * Duplicates of one key are 16-byte items sorted by position: positions
 * only grow, so each new item is appended (MDB_APPENDDUP fills the pages of
 * a key's sub-tree completely). `loc` names the event's record in the log,
 * so fetching an event is one read.
 *
 * The time table has one entry per distinct commit time: the first
 * position created at that microsecond. Commit times never go backwards
 * (the writer keeps them monotonic), so the first entry at or after a time
 * T names the first position created at or after T, and the events created
 * in [A, B) are exactly the positions [first(A), first(B)).
 *
 * Consistency: the writer calls idx_sec_commit for each commit inside the
 * group's LMDB write transaction (with the checkpoint), and recovery calls
 * it for each complete commit it replays, with the same record bytes; an
 * acknowledged append is therefore always indexed, and a rebuilt index is
 * identical to one built by the writer.
 */
#include <string.h>

#include "index/index.h"
#include "log/log.h"
#include "log/record.h"
#include "stele.h"
#include "util/util.h"

size_t sec_category_len(const char *stream, size_t len)
{
    const char *dash = memchr(stream, '-', len);
    return dash && dash != stream ? (size_t)(dash - stream) : len;
}

static void key_make(uint8_t *key, size_t *klen, int kind, const char *name, size_t len)
{
    key[0] = (uint8_t)kind;
    memcpy(key + 1, name, len);
    *klen = 1 + len;
}

/* Add (or with `del`, remove) one entry. */
static int sec_one(idx *ix, MDB_txn *txn, MDB_cursor *cur, int del, int kind, const char *name,
                   size_t len, uint64_t pos, uint64_t loc)
{
    uint8_t key[1 + 255], val[16];
    size_t klen;
    if (len == 0 || len > 255)
        return 0; /* never a valid name: cannot be queried */
    key_make(key, &klen, kind, name, len);
    stbe64(val, pos);
    stbe64(val + 8, loc);
    MDB_val k = {klen, key}, v = {16, val};
    int rc;
    if (del) {
        rc = mdb_del(txn, ix->sec, &k, &v);
        return rc == MDB_NOTFOUND ? 0 : idx_err(rc, "delete secondary index entry");
    }
    rc = mdb_cursor_put(cur, &k, &v, MDB_APPENDDUP);
    if (rc == MDB_KEYEXIST) /* the same tag twice on one event */
        rc = mdb_cursor_put(cur, &k, &v, 0);
    return idx_err(rc, "put secondary index entry");
}

static uint64_t time_key_u(int64_t t) { return (uint64_t)t ^ (1ull << 63); }

/* A time entry for the commit created at `created` starting at `pos`,
 * unless that time already has one (commits of one group share a time). */
static int time_add(idx *ix, MDB_txn *txn, int64_t created, uint64_t pos)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->time, &cur);
    if (rc)
        return idx_err(rc, "open cursor");
    MDB_val k, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 16 && ldbe64(k.mv_data) >= time_key_u(created)) {
        mdb_cursor_close(cur);
        return 0;
    }
    if (rc == 0 || rc == MDB_NOTFOUND) {
        uint8_t key[16];
        stbe64(key, time_key_u(created));
        stbe64(key + 8, pos);
        k = (MDB_val){16, key};
        v = (MDB_val){0, key};
        rc = mdb_cursor_put(cur, &k, &v, MDB_APPEND);
    }
    mdb_cursor_close(cur);
    return idx_err(rc, "put time entry");
}

static int walk_commit(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc,
                       int del)
{
    if (!ix->sec_on)
        return 0;
    MDB_cursor *cur;
    int rc = idx_err(mdb_cursor_open(txn, ix->sec, &cur), "open cursor");
    size_t off = 0;
    for (int first = 1; rc == 0 && off < len; first = 0) {
        rec r;
        const char *why = "not an event record";
        rec_status st = rec_decode(recs + off, len - off, &r, &why);
        if (st != REC_OK || r.kind != REC_EVENT) {
            char name[32];
            log_seg_name(loc_seg(loc), name);
            rc = err_set(STELE_ECORRUPT, "segment %s offset %llu: indexing a commit: %s", name,
                         (unsigned long long)(loc_off(loc) + off),
                         st == REC_OK ? "not an event record" : why);
            break;
        }
        uint64_t at = loc + off, pos = r.position;
        rc = sec_one(ix, txn, cur, del, SEC_CATEGORY, r.stream,
                     sec_category_len(r.stream, r.stream_len), pos, at);
        if (rc == 0)
            rc = sec_one(ix, txn, cur, del, SEC_TYPE, r.type, r.type_len, pos, at);
        const uint8_t *t = r.tags;
        for (unsigned i = 0; i < r.ntags && rc == 0; i++) {
            uint16_t tl = ld16(t);
            rc = sec_one(ix, txn, cur, del, SEC_TAG, (const char *)t + 2, tl, pos, at);
            t += 3 + tl;
        }
        if (rc == 0 && (r.flags & STELE_META_JSON) && r.meta_len) {
            meta_ids m;
            rc = meta_ids_extract(r.meta, r.meta_len, &m);
            if (rc == 0)
                rc = sec_one(ix, txn, cur, del, SEC_CORRELATION, m.correlation,
                             m.correlation_len, pos, at);
            if (rc == 0)
                rc = sec_one(ix, txn, cur, del, SEC_ACTOR, m.actor, m.actor_len, pos, at);
        }
        if (rc == 0 && first && !del)
            rc = time_add(ix, txn, r.created_us, pos);
        off += r.len;
    }
    mdb_cursor_close(cur);
    return rc;
}

int idx_sec_commit(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc)
{
    return walk_commit(ix, txn, recs, len, loc, 0);
}

int idx_sec_uncommit(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc)
{
    return walk_commit(ix, txn, recs, len, loc, 1);
}

int idx_time_first(idx *ix, MDB_txn *txn, int64_t t_us, uint64_t *pos)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->time, &cur);
    if (rc)
        return idx_err(rc, "open cursor");
    uint8_t key[16];
    stbe64(key, time_key_u(t_us));
    stbe64(key + 8, 0);
    MDB_val k = {16, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int r = 0;
    if (rc == MDB_NOTFOUND)
        r = STELE_ENOTFOUND;
    else if (rc)
        r = idx_err(rc, "time cursor");
    else if (k.mv_size != 16)
        r = err_set(STELE_ECORRUPT, "index: malformed time entry");
    else
        *pos = ldbe64((uint8_t *)k.mv_data + 8);
    mdb_cursor_close(cur);
    return r;
}

/* ------------------------------------------------------------- cursors */

int idx_sec_open(idx *ix, MDB_txn *txn, int kind, const char *name, size_t len,
                 idx_sec_cursor *sc)
{
    key_make(sc->key, &sc->klen, kind, name, len);
    sc->cur = NULL;
    return idx_err(mdb_cursor_open(txn, ix->sec, &sc->cur), "open cursor");
}

void idx_sec_close(idx_sec_cursor *sc)
{
    if (sc->cur)
        mdb_cursor_close(sc->cur);
    sc->cur = NULL;
}

static int sec_decode(int rc, const MDB_val *v, uint64_t *at, uint64_t *loc)
{
    if (rc == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    if (rc)
        return idx_err(rc, "secondary index cursor");
    if (v->mv_size != 16)
        return err_set(STELE_ECORRUPT, "index: malformed secondary index entry");
    *at = ldbe64(v->mv_data);
    *loc = ldbe64((const uint8_t *)v->mv_data + 8);
    return 0;
}

int idx_sec_seek(idx_sec_cursor *sc, uint64_t pos, int backwards, uint64_t *at, uint64_t *loc)
{
    uint8_t val[16];
    stbe64(val, pos);
    memset(val + 8, backwards ? 0xff : 0, 8);
    MDB_val k = {sc->klen, sc->key}, v = {16, val};
    int rc = mdb_cursor_get(sc->cur, &k, &v, MDB_GET_BOTH_RANGE);
    if (!backwards)
        return sec_decode(rc, &v, at, loc);
    if (rc == 0) {
        /* The first item after pos|ff..: the one before it is ours. */
        int r = sec_decode(rc, &v, at, loc);
        if (r || *at <= pos)
            return r;
        return sec_decode(mdb_cursor_get(sc->cur, &k, &v, MDB_PREV_DUP), &v, at, loc);
    }
    if (rc != MDB_NOTFOUND)
        return sec_decode(rc, &v, at, loc);
    /* Every item is before pos (or the key is absent): take the last. */
    k = (MDB_val){sc->klen, sc->key};
    rc = mdb_cursor_get(sc->cur, &k, &v, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_get(sc->cur, &k, &v, MDB_LAST_DUP);
    return sec_decode(rc, &v, at, loc);
}

int idx_sec_step(idx_sec_cursor *sc, int backwards, uint64_t *at, uint64_t *loc)
{
    MDB_val k, v;
    int rc = mdb_cursor_get(sc->cur, &k, &v, backwards ? MDB_PREV_DUP : MDB_NEXT_DUP);
    return sec_decode(rc, &v, at, loc);
}

int idx_sec_count(idx_sec_cursor *sc, uint64_t *n)
{
    MDB_val k = {sc->klen, sc->key}, v;
    int rc = mdb_cursor_get(sc->cur, &k, &v, MDB_SET);
    if (rc == MDB_NOTFOUND) {
        *n = 0;
        return 0;
    }
    size_t c = 0;
    if (rc == 0)
        rc = mdb_cursor_count(sc->cur, &c);
    *n = c;
    return idx_err(rc, "count");
}
