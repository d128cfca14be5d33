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
 *
 * Retention (keep a stream's `keep` highest revisions) costs what it
 * removes, not what the stream holds: one cursor stands on the stream's
 * highest entry (where a put of a new highest snapshot leaves it, or one
 * seek), steps down over the `keep` kept entries and deletes what lies
 * below. Entries are never counted; after every put the stream holds at
 * most keep + 1, so a state written with each append costs its put, `keep`
 * in-page steps and one delete.
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

/* Where a cursor step landed: 0 on an entry of the stream whose key prefix
 * is `sk` (its revision in *rev), STELE_ENOTFOUND past the stream's
 * entries. Only the key is looked at: the walk needs no values. */
static int snap_at_key(int g, const MDB_val *k, const uint8_t sk[8], uint64_t *rev)
{
    if (g == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    if (g)
        return idx_err(g, "snapshot cursor");
    if (k->mv_size != 16)
        return err_set(STELE_ECORRUPT, "index: malformed snapshot entry");
    if (memcmp(k->mv_data, sk, 8))
        return STELE_ENOTFOUND;
    *rev = ldbe64((const uint8_t *)k->mv_data + 8);
    return 0;
}

/* With `cur` on sid's highest entry: delete every entry of sid below its
 * `keep` highest. */
static int snap_trim_down(MDB_cursor *cur, uint64_t sid, uint64_t keep)
{
    MDB_val k, v;
    uint8_t sk[8];
    stbe64(sk, sid);
    uint64_t rev = 0, kept_low = 0;
    int rc = 0;
    if (!keep)
        return err_set(STELE_EINTERNAL, "index: keep no snapshots");
    for (uint64_t i = 0; i < keep && rc == 0; i++) {
        rc = snap_at_key(mdb_cursor_get(cur, &k, &v, i ? MDB_PREV : MDB_GET_CURRENT), &k, sk,
                         &rev);
        kept_low = rev;
    }
    if (rc == 0) /* the first entry below the kept ones, if any */
        rc = snap_at_key(mdb_cursor_get(cur, &k, &v, MDB_PREV), &k, sk, &rev);
    if (rc)
        return rc == STELE_ENOTFOUND ? 0 : rc;
    /* Usually the only one (the stream held keep + 1): look one further
     * down before deleting, so the common case needs no seek. */
    uint64_t victim = rev;
    int more = 0;
    int g = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    if (g == 0) {
        more = snap_at_key(g, &k, sk, &rev) == 0;
        g = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else if (g == MDB_NOTFOUND) {
        g = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT); /* the table's start: not moved */
    }
    rc = snap_at_key(g, &k, sk, &rev);
    if (rc == STELE_ENOTFOUND || (rc == 0 && rev != victim))
        return err_set(STELE_EINTERNAL, "index: snapshot cursor lost its place");
    if (rc)
        return rc;
    rc = idx_err(mdb_cursor_del(cur, 0), "delete snapshot");
    while (rc == 0 && more) {
        /* More than one below (a lowered maxSnapshots, or recovery): from
         * the lowest up, one seek each, until the kept ones. */
        uint8_t key[16];
        snap_key(key, sid, 0);
        k = (MDB_val){sizeof key, key};
        rc = snap_at_key(mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE), &k, sk, &rev);
        if (rc == STELE_ENOTFOUND || (rc == 0 && rev >= kept_low))
            return 0;
        if (rc == 0)
            rc = idx_err(mdb_cursor_del(cur, 0), "delete snapshot");
    }
    return rc;
}

int idx_snap_trim(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t keep)
{
    if (!ix->has_snaps)
        return 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->snaps, &cur);
    if (rc)
        return idx_err(rc, "snapshot cursor");
    /* sid's highest entry: the one before the first key of sid + 1. */
    uint8_t key[16];
    snap_key(key, sid + 1, 0);
    MDB_val k = {sizeof key, key}, v;
    uint8_t sk[8];
    uint64_t rev;
    stbe64(sk, sid);
    int g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (g == 0 || g == MDB_NOTFOUND)
        g = mdb_cursor_get(cur, &k, &v, g == 0 ? MDB_PREV : MDB_LAST);
    rc = snap_at_key(g, &k, sk, &rev);
    if (rc == 0)
        rc = snap_trim_down(cur, sid, keep);
    mdb_cursor_close(cur);
    return rc == STELE_ENOTFOUND ? 0 : rc;
}

int idx_snap_put_top(idx *ix, MDB_txn *txn, uint64_t sid, const idx_snap *s, uint64_t keep)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->snaps, &cur);
    if (rc)
        return idx_err(rc, "snapshot cursor");
    uint8_t key[16], val[SNAP_VAL];
    snap_key(key, sid, s->revision);
    st64(val, s->loc);
    st32(val + 8, s->bytes);
    st32(val + 12, s->schema);
    MDB_val k = {sizeof key, key}, v = {sizeof val, val};
    /* mdb_cursor_put leaves the cursor on the new entry. */
    rc = idx_err(mdb_cursor_put(cur, &k, &v, 0), "put snapshot");
    if (rc == 0)
        rc = snap_trim_down(cur, sid, keep);
    mdb_cursor_close(cur);
    return rc;
}

int idx_snap_repoint(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t rev, uint64_t from,
                     uint64_t to)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->snaps, &cur);
    if (rc)
        return idx_err(rc, "snapshot cursor");
    uint8_t key[16];
    snap_key(key, sid, rev);
    MDB_val k = {sizeof key, key}, v;
    idx_snap e = {0}; /* set by snap_decode on success (gcc -O3 cannot tell) */
    uint64_t s;
    int g = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (g == MDB_NOTFOUND)
        rc = STELE_ENOTFOUND;
    else if (g)
        rc = idx_err(g, "get snapshot");
    else if ((rc = snap_decode(&k, &v, &s, &e)) == 0 && e.loc != from)
        rc = STELE_ENOTFOUND;
    else if (rc == 0) {
        uint8_t val[SNAP_VAL];
        st64(val, to);
        st32(val + 8, e.bytes);
        st32(val + 12, e.schema);
        MDB_val nv = {sizeof val, val};
        /* Same size, same key: LMDB overwrites the value in place. */
        rc = idx_err(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT), "put snapshot");
    }
    mdb_cursor_close(cur);
    return rc;
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
