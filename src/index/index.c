/*
 * index.c - the LMDB-backed indexes of the local engine (layout and
 * durability rules in index.h). Values are fixed little-endian records so
 * the file does not depend on struct padding.
 */
#include "index/index.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "stele.h"
#include "util/util.h"

/* Address space reserved for the index (the file grows only as needed).
 * 32 GiB holds the index of hundreds of millions of events (valgrind cannot
 * map much more); a full map is STELE_ENOSPC ("index: ... MDB_MAP_FULL"). */
#define MAP_SIZE (32ull << 30)

/* STELE_INDEX_MAP_MB overrides the reserved size: valgrind's memcheck
 * spends a minute marking a 32 GiB mapping, so the leak check runs with a
 * small one (scripts/valgrind.sh). */
static uint64_t map_size(void)
{
    const char *v = getenv("STELE_INDEX_MAP_MB");
    if (v && *v) {
        unsigned long long mb = strtoull(v, NULL, 10);
        if (mb >= 16 && mb <= (1ull << 20))
            return (uint64_t)mb << 20;
    }
    return MAP_SIZE;
}

int idx_err(int mdb_rc, const char *what)
{
    if (mdb_rc == 0)
        return 0;
    if (mdb_rc == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    int code = mdb_rc == ENOMEM ? STELE_ENOMEM
             : mdb_rc == ENOSPC || mdb_rc == MDB_MAP_FULL ? STELE_ENOSPC
             : mdb_rc == MDB_CORRUPTED || mdb_rc == MDB_PAGE_NOTFOUND || mdb_rc == MDB_INVALID
                 ? STELE_ECORRUPT
             : mdb_rc == EIO ? STELE_EIO
                             : STELE_EINTERNAL;
    return err_set(code, "index: %s: %s", what, mdb_strerror(mdb_rc));
}

/* The tables every index has, in the order idx_drop_all empties them. */
#define IDX_TABLES 8

static void all_tables(const idx *ix, MDB_dbi out[IDX_TABLES])
{
    MDB_dbi t[IDX_TABLES] = {ix->streams, ix->revs, ix->ids,  ix->pos,
                             ix->meta,    ix->snaps, ix->sec, ix->time};
    memcpy(out, t, sizeof t);
}

static int format_get(idx *ix, MDB_txn *txn, uint32_t *version, uint32_t *flags)
{
    MDB_val k = {6, "format"}, v;
    int rc = mdb_get(txn, ix->meta, &k, &v);
    if (rc == 0 && v.mv_size == 8) {
        *version = ld32(v.mv_data);
        *flags = ld32((uint8_t *)v.mv_data + 4);
    }
    return rc == 0 && v.mv_size != 8 ? MDB_INVALID : rc;
}

static int format_put(idx *ix, MDB_txn *txn)
{
    uint8_t p[8];
    st32(p, IDX_FORMAT);
    st32(p + 4, ix->sec_on ? IDX_F_SEC : 0);
    MDB_val k = {6, "format"}, v = {sizeof p, p};
    return mdb_put(txn, ix->meta, &k, &v, 0);
}

/*
 * Settle the index's format inside the opening transaction (LMDB codes):
 * an index of another format, or one kept without the secondary indexes
 * when they are wanted now, is emptied, and recovery then rebuilds it from
 * the log (it finds no checkpoint). An index with secondary indexes opened
 * without them has those emptied: when they are wanted again, the flag
 * says they are incomplete and everything is rebuilt.
 */
static int format_settle(idx *ix, MDB_txn *txn, int fresh)
{
    MDB_dbi t[IDX_TABLES];
    all_tables(ix, t);
    uint32_t version = 0, flags = 0;
    int rc = format_get(ix, txn, &version, &flags);
    if (rc && rc != MDB_NOTFOUND && rc != MDB_INVALID)
        return rc;
    int have = rc == 0;
    int drop_all = fresh || !have || version != IDX_FORMAT ||
                   (ix->sec_on && !(flags & IDX_F_SEC));
    rc = 0;
    if (drop_all) {
        for (int i = 0; i < IDX_TABLES && rc == 0; i++)
            rc = mdb_drop(txn, t[i], 0);
    } else if (!ix->sec_on && (flags & IDX_F_SEC)) {
        rc = mdb_drop(txn, ix->sec, 0);
        if (rc == 0)
            rc = mdb_drop(txn, ix->time, 0);
    }
    if (rc == 0 && (drop_all || (flags & IDX_F_SEC) != (ix->sec_on ? IDX_F_SEC : 0u)))
        rc = format_put(ix, txn);
    return rc;
}

/* IDX_RESIDENT_MAX, or STELE_INDEX_RESIDENT_MB (MiB; 0: never drop). */
static uint64_t resident_max(void)
{
    const char *v = getenv("STELE_INDEX_RESIDENT_MB");
    if (v && *v)
        return (uint64_t)strtoull(v, NULL, 10) << 20;
    return IDX_RESIDENT_MAX;
}

/* Where LMDB mapped data.mdb (it tells only of a fixed map): the shared
 * mapping of that file (device and inode of its descriptor, offset 0) in
 * /proc/self/maps. NULL if not found: then nothing is ever dropped. */
static void *map_address(MDB_env *env)
{
    int fd;
    struct stat sb;
    if (mdb_env_get_fd(env, &fd) || fstat(fd, &sb))
        return NULL;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return NULL;
    char line[4352];
    void *addr = NULL;
    while (!addr && fgets(line, sizeof line, f)) {
        unsigned long long start, end, off, ino;
        unsigned maj, mnr;
        char perms[8];
        if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &start, &end, perms, &off, &maj, &mnr,
                   &ino) == 7 &&
            perms[3] == 's' && off == 0 && ino == (unsigned long long)sb.st_ino &&
            maj == major(sb.st_dev) && mnr == minor(sb.st_dev))
            addr = (void *)(uintptr_t)start;
    }
    fclose(f);
    return addr;
}

int idx_open(const char *dir, int fresh, int sec_on, idx **out)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/index", dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return err_set(STELE_EIO, "mkdir %s: %s", path, strerror(errno));
    idx *ix = calloc(1, sizeof *ix);
    if (!ix)
        return err_set(STELE_ENOMEM, "out of memory");
    ix->sec_on = sec_on != 0;
    ix->resident_max = resident_max();
    int rc = mdb_env_create(&ix->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(ix->env, 16);
    if (rc == 0)
        rc = mdb_env_set_mapsize(ix->env, map_size());
    if (rc == 0)
        rc = mdb_env_set_maxreaders(ix->env, 1024);
    if (rc == 0)
        rc = mdb_env_open(ix->env, path, MDB_NOSYNC | MDB_WRITEMAP | MDB_NOTLS | MDB_NORDAHEAD, 0644);
    if (rc) {
        int r = idx_err(rc, "open");
        idx_close(ix);
        return r;
    }
    MDB_txn *txn;
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "streams", MDB_CREATE, &ix->streams);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "revs", MDB_CREATE, &ix->revs);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "ids", MDB_CREATE, &ix->ids);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "pos", MDB_CREATE, &ix->pos);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &ix->meta);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "snaps", MDB_CREATE, &ix->snaps);
    ix->has_snaps = rc == 0;
    if (rc == 0)
        rc = mdb_dbi_open(txn, "sec", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED, &ix->sec);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "time", MDB_CREATE, &ix->time);
    if (rc == 0)
        rc = format_settle(ix, txn, fresh);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc == 0 && fresh)
        rc = mdb_env_sync(ix->env, 1);
    if (rc == 0 && ix->resident_max)
        ix->map = map_address(ix->env);
    if (rc) {
        int r = idx_err(rc, "open tables");
        idx_close(ix);
        return r;
    }
    *out = ix;
    return 0;
}

void idx_close(idx *ix)
{
    if (!ix)
        return;
    if (ix->env)
        mdb_env_close(ix->env);
    free(ix);
}

int idx_sync(idx *ix) { return idx_err(mdb_env_sync(ix->env, 1), "sync"); }

/*
 * The map is written directly (MDB_WRITEMAP: an unsynced commit is then only
 * memory operations, half the CPU of writing pages with pwrite). LMDB makes
 * data.mdb a sparse file as large as the map, and a store into a hole on a
 * full disk would be a SIGBUS, not an error. So the writer keeps the blocks
 * under the used part of the map plus some headroom allocated with
 * fallocate; running out of disk is then STELE_ENOSPC here, before any
 * transaction touches the unallocated part.
 */
/*
 * Resident pages. A process's RSS counts every page of data.mdb it has
 * touched since the page was mapped, so a store that writes or reads a
 * large index shows most of it as resident (a per-stream projection with
 * 666,667 partitions: 265 MiB of its 289 MiB), though those pages are the
 * kernel's page cache: clean or written back as the kernel likes, and
 * reclaimable. So before a write transaction, at most once a second and
 * only when the used part of the map is over IDX_RESIDENT_MAX, the writer
 * unmaps them with madvise(MADV_DONTNEED). The map is a MAP_SHARED file
 * mapping (MDB_WRITEMAP), so this discards nothing: the kernel moves a
 * page's dirty bit to the page cache as it unmaps it, and the next access
 * maps the same page cache page again. Readers in other threads holding
 * pointers into the map (zero-copy reads) fault the page back in on their
 * next access; a write transaction of another thread (LMDB has one at a
 * time) does the same. What changes is what RSS and ps count; a cgroup's
 * memory charge includes the page cache either way. The cost is a minor
 * fault for each page touched again after a drop (tests:
 * test_index_resident; figures: docs/benchmarks.md).
 */
static void trim_resident(idx *ix, uint64_t used)
{
    uint64_t max = ix->resident_max;
    if (!max || used <= max || !ix->map)
        return;
    uint64_t now = time_mono_ns();
    if (now - ix->trimmed_ns < 1000000000ull)
        return;
    ix->trimmed_ns = now;
    long pg = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)((used + (uint64_t)pg - 1) / (uint64_t)pg * (uint64_t)pg);
    (void)madvise(ix->map, len, MADV_DONTNEED); /* advice: a failure changes nothing */
}

int idx_reserve(idx *ix)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc = mdb_env_info(ix->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(ix->env, &st);
    if (rc)
        return idx_err(rc, "info");
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    trim_resident(ix, used);
    int fd;
    if ((rc = mdb_env_get_fd(ix->env, &fd)))
        return idx_err(rc, "get fd");
    if (ix->reserved == 0) {
        /* First call since open: what earlier runs reserved is still
         * allocated (always from offset 0), so a full disk does not stop a
         * store from opening while that headroom lasts. */
        struct stat sb;
        if (fstat(fd, &sb) == 0 && (uint64_t)sb.st_blocks * 512 < info.me_mapsize)
            ix->reserved = (uint64_t)sb.st_blocks * 512 / st.ms_psize * st.ms_psize;
    }
    /* Headroom grows with the index (1 MiB .. IDX_HEADROOM), so a small
     * store stays small on disk. One transaction dirties far less. */
    uint64_t room = used < (1u << 20) ? (1u << 20) : used > IDX_HEADROOM ? IDX_HEADROOM : used;
    if (used + room / 2 <= ix->reserved)
        return 0;
    uint64_t want = used + room;
    if (want > info.me_mapsize)
        want = info.me_mapsize;
    rc = posix_fallocate(fd, 0, (off_t)want);
    if (rc)
        return err_set(rc == ENOSPC ? STELE_ENOSPC : STELE_EIO,
                       "index: cannot allocate %llu bytes for data.mdb: %s",
                       (unsigned long long)want, strerror(rc));
    ix->reserved = want;
    return 0;
}

int idx_begin(idx *ix, int rdonly, MDB_txn **txn)
{
    return idx_err(mdb_txn_begin(ix->env, NULL, rdonly ? MDB_RDONLY : 0, txn), "begin");
}

int idx_commit_txn(MDB_txn *txn) { return idx_err(mdb_txn_commit(txn), "commit"); }

/* ---------------------------------------------------------------- streams */

#define STREAM_VAL 40
#define STREAM_VAL_META 88

int idx_stream_get(idx *ix, MDB_txn *txn, const char *name, size_t len, idx_stream *out)
{
    MDB_val k = {len, (void *)name}, v;
    int rc = mdb_get(txn, ix->streams, &k, &v);
    if (rc == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    if (rc)
        return idx_err(rc, "get stream");
    if (v.mv_size != STREAM_VAL && v.mv_size != STREAM_VAL_META)
        return err_set(STELE_ECORRUPT, "index: stream entry has %zu bytes", v.mv_size);
    const uint8_t *p = v.mv_data;
    memset(out, 0, sizeof *out);
    out->sid = ld64(p);
    out->last_rev = ld64(p + 8);
    out->last_pos = ld64(p + 16);
    out->truncate_before = ld64(p + 24);
    out->flags = ld32(p + 32);
    if (v.mv_size == STREAM_VAL_META) {
        out->max_snapshots = ld32(p + 36);
        out->max_age_us = ld64(p + 40);
        out->max_count = ld64(p + 48);
        out->meta_tb = ld64(p + 56);
        out->meta_seq = ld64(p + 64);
        out->meta_loc = ld64(p + 72);
    }
    return 0;
}

int idx_stream_put(idx *ix, MDB_txn *txn, const char *name, size_t len, const idx_stream *st)
{
    /* A stream that never had metadata keeps the short entry. */
    uint8_t p[STREAM_VAL_META] = {0};
    st64(p, st->sid);
    st64(p + 8, st->last_rev);
    st64(p + 16, st->last_pos);
    st64(p + 24, st->truncate_before);
    st32(p + 32, st->flags);
    size_t n = STREAM_VAL;
    if (st->meta_seq) {
        st32(p + 36, st->max_snapshots);
        st64(p + 40, st->max_age_us);
        st64(p + 48, st->max_count);
        st64(p + 56, st->meta_tb);
        st64(p + 64, st->meta_seq);
        st64(p + 72, st->meta_loc);
        n = STREAM_VAL_META;
    }
    MDB_val k = {len, (void *)name}, v = {n, p};
    return idx_err(mdb_put(txn, ix->streams, &k, &v, 0), "put stream");
}

/* The stream entries in name order, those starting with `prefix` and
 * after `after` (exclusive), at most `limit` (index.h). */
int idx_stream_keys(idx *ix, MDB_txn *txn, const char *prefix, size_t plen, const char *after,
                    size_t alen, size_t limit, int no_system, idx_stream_fn fn, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->streams, &cur);
    if (rc)
        return idx_err(rc, "streams cursor");
    int skip_equal = after && alen && (alen > plen || memcmp(after, prefix, alen) >= 0);
    MDB_val k = skip_equal ? (MDB_val){alen, (void *)after} : (MDB_val){plen, (void *)prefix}, v;
    size_t n = 0;
    rc = plen || skip_equal ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                            : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0 && n < limit) {
        const char *name = k.mv_data;
        if (k.mv_size < plen || memcmp(name, prefix, plen))
            break;
        if (skip_equal && k.mv_size == alen && !memcmp(name, after, alen)) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        if (no_system && name[0] == '$') {
            /* every '$' name sorts before "%": jump past them */
            static const char past[] = "%";
            k = (MDB_val){1, (void *)past};
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
            continue;
        }
        idx_stream st;
        if ((rc = idx_stream_get(ix, txn, name, k.mv_size, &st)))
            break;
        if ((rc = fn(ctx, name, k.mv_size, &st)))
            break;
        n++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    else if (rc > 0)
        rc = idx_err(rc, "streams cursor");
    return rc;
}

/* -------------------------------------------------------------------- ids */

int idx_id_get(idx *ix, MDB_txn *txn, const uint8_t id[16], uint64_t *sid, uint64_t *rev,
               uint64_t *pos)
{
    MDB_val k = {16, (void *)id}, v;
    int rc = mdb_get(txn, ix->ids, &k, &v);
    if (rc == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    if (rc)
        return idx_err(rc, "get id");
    if (v.mv_size != 24)
        return err_set(STELE_ECORRUPT, "index: id entry has %zu bytes", v.mv_size);
    *sid = ld64(v.mv_data);
    *rev = ld64((uint8_t *)v.mv_data + 8);
    *pos = ld64((uint8_t *)v.mv_data + 16);
    return 0;
}

int idx_id_put(idx *ix, MDB_txn *txn, const uint8_t id[16], uint64_t sid, uint64_t rev,
               uint64_t pos)
{
    uint8_t p[24];
    st64(p, sid);
    st64(p + 8, rev);
    st64(p + 16, pos);
    MDB_val k = {16, (void *)id}, v = {sizeof p, p};
    return idx_err(mdb_put(txn, ix->ids, &k, &v, 0), "put id");
}

/* ------------------------------------------------------------------- revs */

#define COMMIT_VAL 24

int idx_commit_put(idx *ix, MDB_txn *txn, const idx_commit *c)
{
    uint8_t key[16], val[COMMIT_VAL];
    stbe64(key, c->sid);
    stbe64(key + 8, c->first_rev);
    st64(val, c->loc);
    st64(val + 8, c->first_pos);
    st32(val + 16, c->count);
    st32(val + 20, c->bytes);
    MDB_val k = {16, key}, v = {sizeof val, val};
    /* Commits of one stream arrive in revision order; appending is cheaper
     * but only valid at the end of the whole table, so use a plain put. */
    return idx_err(mdb_put(txn, ix->revs, &k, &v, 0), "put commit");
}

int idx_rev_open(idx *ix, MDB_txn *txn, uint64_t sid, idx_rev_cursor *rc)
{
    rc->sid = sid;
    return idx_err(mdb_cursor_open(txn, ix->revs, &rc->cur), "open cursor");
}

void idx_rev_close(idx_rev_cursor *rc)
{
    if (rc->cur)
        mdb_cursor_close(rc->cur);
    rc->cur = NULL;
}

/* Decode the cursor's entry; ENOTFOUND if it belongs to another stream. */
static int rev_decode(idx_rev_cursor *rc, const MDB_val *k, const MDB_val *v, idx_commit *out)
{
    if (k->mv_size != 16 || v->mv_size != COMMIT_VAL)
        return err_set(STELE_ECORRUPT, "index: malformed commit entry");
    const uint8_t *kp = k->mv_data, *vp = v->mv_data;
    out->sid = ldbe64(kp);
    if (out->sid != rc->sid)
        return STELE_ENOTFOUND;
    out->first_rev = ldbe64(kp + 8);
    out->loc = ld64(vp);
    out->first_pos = ld64(vp + 8);
    out->count = ld32(vp + 16);
    out->bytes = ld32(vp + 20);
    return 0;
}

static int rev_get(idx_rev_cursor *rc, MDB_cursor_op op, MDB_val *k, idx_commit *out)
{
    MDB_val v;
    int r = mdb_cursor_get(rc->cur, k, &v, op);
    if (r == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    if (r)
        return idx_err(r, "cursor");
    return rev_decode(rc, k, &v, out);
}

int idx_rev_stream_at(idx *ix, MDB_txn *txn, uint64_t sid, int backwards, idx_commit *last)
{
    /* Keys are sid:be64 first_rev:be64: the entry before the first key of
     * the next stream is a stream's last commit. */
    idx_rev_cursor rc;
    int r = idx_rev_open(ix, txn, sid, &rc);
    if (r)
        return r;
    uint8_t key[16];
    MDB_val k = {16, key}, v;
    if (backwards) {
        if (sid == UINT64_MAX) {
            r = mdb_cursor_get(rc.cur, &k, &v, MDB_LAST);
        } else {
            stbe64(key, sid + 1);
            stbe64(key + 8, 0);
            r = mdb_cursor_get(rc.cur, &k, &v, MDB_SET_RANGE);
            r = r == 0 || r == MDB_NOTFOUND
                    ? mdb_cursor_get(rc.cur, &k, &v, r == 0 ? MDB_PREV : MDB_LAST)
                    : r;
        }
    } else {
        stbe64(key, sid);
        stbe64(key + 8, 0);
        r = mdb_cursor_get(rc.cur, &k, &v, MDB_SET_RANGE);
        if (r == 0 && k.mv_size == 16) {
            /* On the stream's first commit: find its last. */
            uint64_t found = ldbe64(k.mv_data);
            if (found == UINT64_MAX) {
                r = mdb_cursor_get(rc.cur, &k, &v, MDB_LAST);
            } else {
                stbe64(key, found + 1);
                k = (MDB_val){16, key};
                r = mdb_cursor_get(rc.cur, &k, &v, MDB_SET_RANGE);
                r = r == 0 || r == MDB_NOTFOUND
                        ? mdb_cursor_get(rc.cur, &k, &v, r == 0 ? MDB_PREV : MDB_LAST)
                        : r;
            }
        }
    }
    if (r == 0) {
        rc.sid = k.mv_size == 16 ? ldbe64(k.mv_data) : 0;
        r = rev_decode(&rc, &k, &v, last);
    } else {
        r = r == MDB_NOTFOUND ? STELE_ENOTFOUND : idx_err(r, "cursor");
    }
    idx_rev_close(&rc);
    return r;
}

int idx_rev_seek(idx_rev_cursor *rc, uint64_t rev, int backwards, idx_commit *out)
{
    uint8_t key[16];
    stbe64(key, rc->sid);
    stbe64(key + 8, rev);
    MDB_val k = {16, key}, v;
    idx_commit at, prev;
    int have_at = 0;
    int g = mdb_cursor_get(rc->cur, &k, &v, MDB_SET_RANGE);
    if (g == 0) {
        int r = rev_decode(rc, &k, &v, &at);
        if (r == 0 && at.first_rev == rev) {
            *out = at;
            return 0;
        }
        if (r != 0 && r != STELE_ENOTFOUND)
            return r;
        have_at = r == 0;
        g = mdb_cursor_get(rc->cur, &k, &v, MDB_PREV);
    } else if (g == MDB_NOTFOUND) {
        g = mdb_cursor_get(rc->cur, &k, &v, MDB_LAST);
    } else {
        return idx_err(g, "cursor");
    }
    /* The commit holding `rev`, if any, starts before it: the previous. */
    int pr = g == MDB_NOTFOUND ? STELE_ENOTFOUND : g ? idx_err(g, "cursor")
                                                      : rev_decode(rc, &k, &v, &prev);
    if (pr != 0 && pr != STELE_ENOTFOUND)
        return pr;
    if (pr == 0 && (rev - prev.first_rev < prev.count || backwards)) {
        *out = prev; /* holds rev, or is the nearest before it */
        return 0;
    }
    if (backwards || !have_at)
        return STELE_ENOTFOUND;
    /* Forwards: the nearest commit after rev; put the cursor back on it. */
    k = (MDB_val){16, key};
    return rev_get(rc, MDB_SET_RANGE, &k, out);
}

int idx_rev_step(idx_rev_cursor *rc, int backwards, idx_commit *out)
{
    MDB_val k;
    return rev_get(rc, backwards ? MDB_PREV : MDB_NEXT, &k, out);
}

/* -------------------------------------------------------------------- pos */

int idx_pos_put(idx *ix, MDB_txn *txn, uint64_t pos, uint64_t loc)
{
    uint8_t key[8], val[8];
    stbe64(key, pos);
    st64(val, loc);
    MDB_val k = {8, key}, v = {8, val};
    return idx_err(mdb_put(txn, ix->pos, &k, &v, MDB_APPEND), "put position");
}

int idx_pos_floor(idx *ix, MDB_txn *txn, uint64_t pos, uint64_t *found, uint64_t *loc)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->pos, &cur);
    if (rc)
        return idx_err(rc, "open cursor");
    uint8_t key[8];
    stbe64(key, pos);
    MDB_val k = {8, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && ldbe64(k.mv_data) != pos)
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    else if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    int r = 0;
    if (rc == MDB_NOTFOUND)
        r = STELE_ENOTFOUND;
    else if (rc)
        r = idx_err(rc, "position cursor");
    else if (k.mv_size != 8 || v.mv_size != 8)
        r = err_set(STELE_ECORRUPT, "index: malformed position entry");
    else {
        *found = ldbe64(k.mv_data);
        *loc = ld64(v.mv_data);
    }
    mdb_cursor_close(cur);
    return r;
}

/* ------------------------------------------------------------------- meta */

int idx_ckpt_get(idx *ix, MDB_txn *txn, idx_ckpt *out)
{
    MDB_val k = {4, "ckpt"}, v;
    int rc = mdb_get(txn, ix->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    if (rc)
        return idx_err(rc, "get checkpoint");
    if (v.mv_size != 56)
        return err_set(STELE_ECORRUPT, "index: malformed checkpoint");
    const uint8_t *p = v.mv_data;
    out->loc = ld64(p);
    out->next_pos = ld64(p + 8);
    out->next_sid = ld64(p + 16);
    out->last_pos_loc = ld64(p + 24);
    out->streams = ld64(p + 32);
    out->log_bytes = ld64(p + 40);
    out->last_commit = ld64(p + 48);
    return 0;
}

int idx_ckpt_put(idx *ix, MDB_txn *txn, const idx_ckpt *c)
{
    uint8_t p[56];
    st64(p, c->loc);
    st64(p + 8, c->next_pos);
    st64(p + 16, c->next_sid);
    st64(p + 24, c->last_pos_loc);
    st64(p + 32, c->streams);
    st64(p + 40, c->log_bytes);
    st64(p + 48, c->last_commit);
    MDB_val k = {4, "ckpt"}, v = {sizeof p, p};
    return idx_err(mdb_put(txn, ix->meta, &k, &v, 0), "put checkpoint");
}

int idx_drop_all(idx *ix, MDB_txn *txn)
{
    MDB_dbi all[IDX_TABLES];
    all_tables(ix, all);
    for (int i = 0; i < IDX_TABLES; i++) {
        int rc = mdb_drop(txn, all[i], 0);
        if (rc)
            return idx_err(rc, "drop");
    }
    return idx_err(format_put(ix, txn), "put format");
}

int idx_open_readonly(const char *dir, idx **out)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/index", dir);
    idx *ix = calloc(1, sizeof *ix);
    if (!ix)
        return err_set(STELE_ENOMEM, "out of memory");
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&ix->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(ix->env, 16);
    if (rc == 0)
        rc = mdb_env_set_mapsize(ix->env, map_size());
    if (rc == 0)
        rc = mdb_env_open(ix->env, path, MDB_RDONLY | MDB_NOTLS, 0644);
    if (rc == 0)
        rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "streams", 0, &ix->streams);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "revs", 0, &ix->revs);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "ids", 0, &ix->ids);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "pos", 0, &ix->pos);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", 0, &ix->meta);
    /* An index of an older format is rebuilt when the store is next
     * opened; until then it cannot be checked. */
    uint32_t version = 0, flags = 0;
    int fr = rc == 0 ? format_get(ix, txn, &version, &flags) : 0;
    if (rc == 0 && (fr || version != IDX_FORMAT)) {
        mdb_txn_abort(txn);
        idx_close(ix);
        return err_set(STELE_EVERSION,
                       "index: format %u, this version of stele writes %u; open the store once "
                       "to rebuild its index from the log",
                       fr ? 1u : version, IDX_FORMAT);
    }
    ix->sec_on = (flags & IDX_F_SEC) != 0;
    if (rc == 0)
        rc = mdb_dbi_open(txn, "snaps", 0, &ix->snaps);
    ix->has_snaps = rc == 0;
    if (rc == 0)
        rc = mdb_dbi_open(txn, "sec", MDB_DUPSORT | MDB_DUPFIXED, &ix->sec);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "time", 0, &ix->time);
    /* Handles opened in a transaction survive only if it commits. */
    if (txn && rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc) {
        int r = idx_err(rc, "open read-only");
        idx_close(ix);
        return r;
    }
    *out = ix;
    return 0;
}

int idx_count(idx *ix, MDB_txn *txn, MDB_dbi dbi, uint64_t *n)
{
    MDB_stat st;
    int rc = mdb_stat(txn, dbi, &st);
    if (rc)
        return idx_err(rc, "stat");
    *n = st.ms_entries;
    (void)ix;
    return 0;
}
