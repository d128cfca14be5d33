/*
 * index_snap.c - the `snaps` table of the local engine's index: one entry
 * per retained snapshot, keyed by stream and revision so that "the latest
 * snapshot at or before revision R" is one cursor seek.
 *
 *   key    sid:be64 revision:be64
 *   value  16 bytes: loc u64 (its REC_SNAPSHOT record), record bytes u32,
 *          schema version u32
 *
 * Like every table it is derived from the log: the writer and recovery
 * apply the same snapshot and retention rules (src/backend/local_streams.c),
 * so a rebuilt index holds the same entries.
 */
#include <string.h>

#include "index/index.h"
#include "stele.h"
#include "util/util.h"

#define SNAP_VAL 16

static void snap_key(uint8_t key[16], uint64_t sid, uint64_t rev)
{
    stbe64(key, sid);
    stbe64(key + 8, rev);
}

static int snap_decode(const MDB_val *k, const MDB_val *v, uint64_t *sid, idx_snap *out)
{
    if (k->mv_size != 16 || v->mv_size != SNAP_VAL)
        return err_set(STELE_ECORRUPT, "index: malformed snapshot entry");
    const uint8_t *kp = k->mv_data, *vp = v->mv_data;
    *sid = ldbe64(kp);
    out->revision = ldbe64(kp + 8);
    out->loc = ld64(vp);
    out->bytes = ld32(vp + 8);
    out->schema = ld32(vp + 12);
    return 0;
}

int idx_snap_put(idx *ix, MDB_txn *txn, uint64_t sid, const idx_snap *s)
{
    uint8_t key[16], val[SNAP_VAL];
    snap_key(key, sid, s->revision);
    st64(val, s->loc);
    st32(val + 8, s->bytes);
    st32(val + 12, s->schema);
    MDB_val k = {sizeof key, key}, v = {sizeof val, val};
    return idx_err(mdb_put(txn, ix->snaps, &k, &v, 0), "put snapshot");
}

int idx_snap_del(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t revision)
{
    uint8_t key[16];
    snap_key(key, sid, revision);
    MDB_val k = {sizeof key, key};
    int rc = mdb_del(txn, ix->snaps, &k, NULL);
    return rc == MDB_NOTFOUND ? STELE_ENOTFOUND : idx_err(rc, "delete snapshot");
}

int idx_snap_get(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t rev, idx_snap *out)
{
    uint8_t key[16];
    snap_key(key, sid, rev);
    MDB_val k = {sizeof key, key}, v;
    int rc = mdb_get(txn, ix->snaps, &k, &v);
    if (rc == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    if (rc)
        return idx_err(rc, "get snapshot");
    uint64_t s;
    return snap_decode(&k, &v, &s, out);
}

int idx_snap_floor(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t rev, idx_snap *out)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->snaps, &cur);
    if (rc)
        return idx_err(rc, "snapshot cursor");
    uint8_t key[16];
    snap_key(key, sid, rev);
    MDB_val k = {sizeof key, key}, v;
    /* The first key >= (sid, rev): an exact hit, or step back one. */
    int g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int r = 0;
    uint64_t s = 0;
    if (g == 0) {
        r = snap_decode(&k, &v, &s, out);
        if (r == 0 && s == sid && out->revision == rev)
            goto done;
        if (r)
            goto done;
        g = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    } else if (g == MDB_NOTFOUND) {
        g = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }
    if (g == MDB_NOTFOUND)
        r = STELE_ENOTFOUND;
    else if (g)
        r = idx_err(g, "snapshot cursor");
    else if ((r = snap_decode(&k, &v, &s, out)) == 0 && s != sid)
        r = STELE_ENOTFOUND;
done:
    mdb_cursor_close(cur);
    return r;
}

typedef struct count_ctx {
    uint64_t n;
    idx_snap *lowest;
} count_ctx;

static int count_one(void *ctx, uint64_t sid, const idx_snap *s)
{
    count_ctx *c = ctx;
    (void)sid;
    if (c->n++ == 0 && c->lowest)
        *c->lowest = *s;
    return 0;
}

int idx_snap_count(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t *n, idx_snap *lowest)
{
    count_ctx c = {0, lowest};
    int rc = idx_snap_each(ix, txn, sid, 0, count_one, &c);
    *n = c.n;
    return rc;
}

int idx_snap_each(idx *ix, MDB_txn *txn, uint64_t sid, int all, idx_snap_fn fn, void *ctx)
{
    if (!ix->has_snaps)
        return 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->snaps, &cur);
    if (rc)
        return idx_err(rc, "snapshot cursor");
    uint8_t key[16];
    snap_key(key, all ? 0 : sid, 0);
    MDB_val k = {sizeof key, key}, v;
    int g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int r = 0;
    while (g == 0 && r == 0) {
        uint64_t s = 0;
        idx_snap e;
        if ((r = snap_decode(&k, &v, &s, &e)))
            break;
        if (!all && s != sid)
            break;
        if ((r = fn(ctx, s, &e)))
            break;
        g = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (r == 0 && g && g != MDB_NOTFOUND)
        r = idx_err(g, "snapshot cursor");
    mdb_cursor_close(cur);
    return r;
}
