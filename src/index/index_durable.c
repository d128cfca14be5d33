/*
 * index_durable.c - durable index checkpoints: a snapshot of the LMDB index
 * that survives a machine crash, so recovery after one replays only the
 * log written after it instead of rebuilding the whole index.
 *
 * Why LMDB alone is not enough. The index is written with MDB_NOSYNC |
 * MDB_WRITEMAP: a commit only changes memory, and the kernel writes the
 * pages back whenever it likes, in any order. After a machine crash the
 * file may hold the newest meta page while the pages it points to never
 * reached the disk, and pages of older snapshots may have been reused
 * (overwritten) by later transactions. Neither meta page can be trusted.
 *
 * The scheme. A durable checkpoint names one LMDB snapshot T and promises
 * that every page of T is on disk:
 *   1. capture: with LMDB's write lock held for a moment (an empty write
 *      transaction, so no commit can rewrite a meta page meanwhile), begin
 *      a read transaction - it sees T, the last commit - and copy T's meta
 *      page (page T % 2 of data.mdb) and the index checkpoint ("ckpt" in
 *      the meta table) as T sees it. Release the write lock;
 *   2. mdb_env_sync(env, 1): msync of the map. Every page of T was written
 *      into the map before T committed, so T's pages are now on disk;
 *   3. write index/durable (below) to a temporary file, fdatasync, rename
 *      over the old one, fsync the directory;
 *   4. keep the read transaction on T open until the next durable
 *      checkpoint has completed step 3, then abort it. LMDB never reuses a
 *      page freed after the oldest open reader's snapshot, and never writes
 *      into a page of a committed snapshot (copy on write), so the on-disk
 *      bytes of T's pages stay as synced for as long as index/durable names
 *      T: whatever later, unsynced transactions leave behind after a crash
 *      lies outside T.
 * The writer waits only for step 1's lock (a page read); steps 2-4 run in
 * the checkpointer's thread (src/backend/local_ckpt.c).
 *
 * After a machine crash (idx_durable_prepare, before LMDB opens the file):
 * T's meta page from index/durable is written over both meta pages of
 * data.mdb and fdatasynced, so LMDB opens exactly T; index/durable is then
 * removed (durably) before any write transaction, because once this
 * process writes without holding a reader on T, T's pages may be reused.
 * idx_durable_check then verifies that the opened index is T (transaction
 * id, checkpoint bytes, a walk of each table's first and last entries).
 * Anything that does not match - no file, a bad checksum, another page
 * size, a data.mdb too short, a failed check - makes the caller rebuild the
 * index from the whole log in a new data.mdb: a wrong index is never used.
 * After a clean close or a process crash (same boot) the file is removed at
 * open too (the process that held T's reader is gone).
 *
 * index/durable (all integers little-endian):
 *     0   8  magic "STELEIX1"
 *     8   4  format version (1)
 *    12   4  LMDB page size P
 *    16   8  LMDB transaction id T
 *    24  56  the index checkpoint as stored in T ("ckpt", index.c)
 *    80   P  T's meta page, as LMDB wrote it
 *  80+P   4  CRC32C of bytes 0 .. 80+P
 *
 * The meta page is LMDB's (lmdb 0.9, MDB_DATA_VERSION 1, 64-bit): a 16-byte
 * page header (page number, pad, flags with P_META), then MDB_meta: magic
 * 0xBEEFC0DE, version, address, map size, the free and main databases
 * (48 bytes each; the free one's md_pad is the page size), last page, and
 * the transaction id. Only those fields are read here, to validate a copy;
 * the page is written back byte for byte (with its own page number).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/index.h"
#include "os/os.h"
#include "stele.h"
#include "util/util.h"

#define DUR_MAGIC "STELEIX1"
#define DUR_VERSION 1u
#define DUR_HEAD 80u
#define DUR_MAX_PAGE 65536u

/* Offsets in an LMDB meta page (see above). */
#define META_FLAGS 10    /* u16 mp_flags */
#define META_MAGIC 16    /* u32 mm_magic */
#define META_VERSION 20  /* u32 mm_version */
#define META_PSIZE 40    /* u32 mm_dbs[FREE_DBI].md_pad */
#define META_LAST_PG 136 /* u64 mm_last_pg */
#define META_TXNID 144   /* u64 mm_txnid */
#define LMDB_P_META 0x08u
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u

_Static_assert(sizeof(void *) == 8 && sizeof(size_t) == 8,
               "the LMDB meta offsets above are for 64-bit builds");

static int meta_valid(const uint8_t *page, uint32_t psize, uint64_t txnid)
{
    uint16_t flags = (uint16_t)(page[META_FLAGS] | page[META_FLAGS + 1] << 8);
    return (flags & LMDB_P_META) && ld32(page + META_MAGIC) == LMDB_MAGIC &&
           ld32(page + META_VERSION) == LMDB_DATA_VERSION &&
           ld32(page + META_PSIZE) == psize && ld64(page + META_TXNID) == txnid;
}

static void paths(const char *dir, char *file, char *tmp, char *idir, size_t n)
{
    snprintf(idir, n, "%s/index", dir);
    snprintf(file, n, "%s/index/durable", dir);
    snprintf(tmp, n, "%s/index/durable.tmp", dir);
}

/* Write index/durable atomically and durably. */
static int write_file(const char *dir, const uint8_t *fb, size_t n)
{
    char file[4200], tmp[4200], idir[4200];
    paths(dir, file, tmp, idir, sizeof file);
    int fd = os_io->open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(STELE_EIO, "index: create %s: %s", tmp, strerror(-fd));
    int rc = os_write_full(fd, fb, n, 0);
    if (rc == 0)
        rc = os_io->fdatasync(fd);
    os_io->close(fd);
    if (rc == 0)
        rc = os_io->rename(tmp, file);
    if (rc == 0)
        rc = os_fsync_dir(idir);
    if (rc) {
        os_io->unlink(tmp);
        return err_set(STELE_EIO, "index: write %s: %s", file, strerror(-rc));
    }
    return 0;
}

int idx_durable_take(idx *ix, const char *dir, uint64_t *txnid)
{
    MDB_stat ms;
    int fd, rc = mdb_env_stat(ix->env, &ms);
    if (rc == 0)
        rc = mdb_env_get_fd(ix->env, &fd);
    if (rc)
        return idx_err(rc, "durable checkpoint");
    uint32_t psize = ms.ms_psize;
    if (psize < 256 || psize > DUR_MAX_PAGE)
        return err_set(STELE_EINTERNAL, "index: page size %u", psize);
    size_t n = DUR_HEAD + psize + 4;
    uint8_t *fb = calloc(1, n);
    if (!fb)
        return err_set(STELE_ENOMEM, "out of memory");

    /* 1. Capture T under LMDB's write lock. */
    MDB_txn *w = NULL, *r = NULL;
    rc = mdb_txn_begin(ix->env, NULL, 0, &w);
    if (rc == 0)
        rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &r);
    uint64_t t = r ? (uint64_t)mdb_txn_id(r) : 0;
    if (rc == 0 && t + 1 != (uint64_t)mdb_txn_id(w))
        rc = MDB_BAD_TXN; /* cannot happen: w is the next writer */
    if (rc == 0) {
        int e = os_read_full(fd, fb + DUR_HEAD, psize, (t & 1) * psize);
        rc = e ? -e : 0;
    }
    if (w)
        mdb_txn_abort(w);
    if (rc) {
        if (r)
            mdb_txn_abort(r);
        free(fb);
        return idx_err(rc, "durable checkpoint: capture");
    }
    MDB_val k = {4, "ckpt"}, v;
    rc = mdb_get(r, ix->meta, &k, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && v.mv_size != 56) ||
        !meta_valid(fb + DUR_HEAD, psize, t)) {
        /* Nothing to name (no checkpoint yet), or a meta page that is not
         * T's: no durable checkpoint this time. */
        mdb_txn_abort(r);
        free(fb);
        return rc && rc != MDB_NOTFOUND ? idx_err(rc, "durable checkpoint") : STELE_ENOTFOUND;
    }
    memcpy(fb, DUR_MAGIC, 8);
    st32(fb + 8, DUR_VERSION);
    st32(fb + 12, psize);
    st64(fb + 16, t);
    memcpy(fb + 24, v.mv_data, 56);

    /* 2. T's pages to disk. */
    rc = mdb_env_sync(ix->env, 1);
    if (rc) {
        mdb_txn_abort(r);
        free(fb);
        return idx_err(rc, "durable checkpoint: sync");
    }
    /* 3. Name T durably. */
    st32(fb + DUR_HEAD + psize, crc32c(0, fb, DUR_HEAD + psize));
    rc = write_file(dir, fb, n);
    free(fb);
    if (rc) {
        mdb_txn_abort(r);
        return rc;
    }
    /* 4. Keep T's pages until the next one is named. */
    if (ix->durable_held)
        mdb_txn_abort(ix->durable_held);
    ix->durable_held = r;
    ix->durable_txnid = t;
    if (txnid)
        *txnid = t;
    return 0;
}

void idx_durable_release(idx *ix)
{
    if (ix && ix->durable_held) {
        mdb_txn_abort(ix->durable_held);
        ix->durable_held = NULL;
    }
}

/* Remove a file if it exists: 1 removed, 0 absent, or an error. */
static int remove_file(const char *path)
{
    int rc = os_io->unlink(path);
    if (rc == 0)
        return 1;
    if (rc == -ENOENT)
        return 0;
    return err_set(STELE_EIO, "remove %s: %s", path, strerror(-rc));
}

int idx_remove_files(const char *dir)
{
    char p[4200], idir[4200];
    snprintf(idir, sizeof idir, "%s/index", dir);
    snprintf(p, sizeof p, "%s/index/data.mdb", dir);
    int a = remove_file(p);
    snprintf(p, sizeof p, "%s/index/lock.mdb", dir);
    int b = a < 0 ? 0 : remove_file(p);
    if (a < 0 || b < 0)
        return a < 0 ? a : b;
    if (a + b == 0)
        return 0;
    int rc = os_fsync_dir(idir);
    return rc && rc != -ENOENT ? err_set(STELE_EIO, "fsync %s: %s", idir, strerror(-rc)) : 0;
}

/* Read and validate index/durable: 0 with *out (malloc'd, *n bytes), or
 * STELE_ENOTFOUND when it is missing or not valid (why in the message). */
static int read_file(const char *dir, uint8_t **out, size_t *n)
{
    char file[4200], tmp[4200], idir[4200];
    paths(dir, file, tmp, idir, sizeof file);
    int fd = os_io->open(file, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return err_set(STELE_ENOTFOUND, "no durable index checkpoint (%s)", strerror(-fd));
    int64_t size = os_file_size(fd);
    uint8_t *fb = NULL;
    int rc = 0;
    if (size < (int64_t)(DUR_HEAD + 256 + 4) || size > (int64_t)(DUR_HEAD + DUR_MAX_PAGE + 4))
        rc = err_set(STELE_ENOTFOUND, "durable index checkpoint: %lld bytes", (long long)size);
    else if (!(fb = malloc((size_t)size)))
        rc = err_set(STELE_ENOMEM, "out of memory");
    else if (os_read_full(fd, fb, (size_t)size, 0))
        rc = err_set(STELE_ENOTFOUND, "durable index checkpoint: unreadable");
    os_io->close(fd);
    if (rc == 0) {
        uint32_t psize = ld32(fb + 12);
        if (memcmp(fb, DUR_MAGIC, 8) || ld32(fb + 8) != DUR_VERSION ||
            (int64_t)(DUR_HEAD + psize + 4) != size ||
            ld32(fb + DUR_HEAD + psize) != crc32c(0, fb, DUR_HEAD + psize) ||
            !meta_valid(fb + DUR_HEAD, psize, ld64(fb + 16)))
            rc = err_set(STELE_ENOTFOUND, "durable index checkpoint: bad checksum or format");
    }
    if (rc) {
        free(fb);
        return rc;
    }
    *out = fb;
    *n = (size_t)size;
    return 0;
}

/* Write T's meta page over both meta pages of data.mdb. */
static int restore_meta(const char *dir, const uint8_t *fb)
{
    uint32_t psize = ld32(fb + 12);
    const uint8_t *meta = fb + DUR_HEAD;
    char p[4200];
    snprintf(p, sizeof p, "%s/index/data.mdb", dir);
    int fd = os_io->open(p, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return err_set(STELE_ENOTFOUND, "durable index checkpoint: no %s", p);
    int64_t size = os_file_size(fd);
    uint64_t need = (ld64(meta + META_LAST_PG) + 1) * (uint64_t)psize;
    int rc = 0;
    if (size < 0 || (uint64_t)size < need)
        rc = err_set(STELE_ENOTFOUND, "durable index checkpoint: data.mdb is shorter than it");
    uint8_t *page = rc ? NULL : malloc(psize);
    if (!rc && !page)
        rc = err_set(STELE_ENOMEM, "out of memory");
    for (uint64_t slot = 0; slot < 2 && rc == 0; slot++) {
        memcpy(page, meta, psize);
        st64(page, slot); /* mp_pgno */
        int e = os_write_full(fd, page, psize, slot * psize);
        if (e)
            rc = err_set(STELE_EIO, "index: restore meta page of %s: %s", p, strerror(-e));
    }
    if (rc == 0) {
        int e = os_io->fdatasync(fd);
        if (e)
            rc = err_set(STELE_EIO, "index: fdatasync %s: %s", p, strerror(-e));
    }
    free(page);
    os_io->close(fd);
    return rc;
}

int idx_durable_prepare(const char *dir, int crashed, int use, idx_durable_info *info)
{
    memset(info, 0, sizeof *info);
    int rc = 0;
    if (crashed) {
        uint8_t *fb = NULL;
        size_t n = 0;
        int found = use ? read_file(dir, &fb, &n) : STELE_ENOTFOUND;
        if (found != 0 && found != STELE_ENOTFOUND)
            return found;
        if (found == 0 && (rc = restore_meta(dir, fb)) == 0) {
            info->restored = 1;
            info->txnid = ld64(fb + 16);
            memcpy(info->ckpt, fb + 24, 56);
        } else if (found == STELE_ENOTFOUND || rc == STELE_ENOTFOUND) {
            snprintf(info->why, sizeof info->why, "%.200s", stele_errmsg());
            rc = 0;
        }
        free(fb);
        if (rc)
            return rc;
        err_clear();
        /* No trustworthy snapshot: the index is rebuilt in a new file (the
         * old one may point anywhere). */
        if (!info->restored && (rc = idx_remove_files(dir)) < 0)
            return rc;
    }
    /* From here on the file names nothing this process protects. */
    return idx_durable_forget(dir);
}

int idx_durable_forget(const char *dir)
{
    char file[4200], tmp[4200], idir[4200];
    paths(dir, file, tmp, idir, sizeof file);
    int rc = remove_file(tmp);
    int had = rc < 0 ? rc : remove_file(file);
    if (rc < 0 || had < 0)
        return rc < 0 ? rc : had;
    if (had || rc) {
        int e = os_fsync_dir(idir);
        if (e)
            return err_set(STELE_EIO, "fsync %s: %s", idir, strerror(-e));
    }
    return 0;
}

int idx_durable_check(idx *ix, const idx_durable_info *info)
{
    MDB_txn *txn;
    int rc = idx_begin(ix, 1, &txn);
    if (rc)
        return rc;
    uint64_t t = mdb_txn_id(txn);
    MDB_val k = {4, "ckpt"}, v;
    int mrc = mdb_get(txn, ix->meta, &k, &v);
    if (t != info->txnid)
        rc = err_set(STELE_ECORRUPT, "index opened at transaction %llu, not %llu",
                     (unsigned long long)t, (unsigned long long)info->txnid);
    else if (mrc || v.mv_size != 56 || memcmp(v.mv_data, info->ckpt, 56))
        rc = err_set(STELE_ECORRUPT, "index checkpoint differs from the durable one");
    /* Each table's first and last entries: the paths from the roots. */
    MDB_dbi t8[8] = {ix->streams, ix->revs, ix->ids, ix->pos, ix->meta, ix->snaps, ix->sec,
                     ix->time};
    for (int i = 0; i < 8 && rc == 0; i++) {
        MDB_cursor *cur;
        mrc = mdb_cursor_open(txn, t8[i], &cur);
        if (mrc == 0) {
            MDB_val a, b;
            mrc = mdb_cursor_get(cur, &a, &b, MDB_FIRST);
            if (mrc == 0)
                mrc = mdb_cursor_get(cur, &a, &b, MDB_LAST);
            mdb_cursor_close(cur);
        }
        if (mrc && mrc != MDB_NOTFOUND)
            rc = idx_err(mrc, "check the durable checkpoint");
    }
    mdb_txn_abort(txn);
    return rc;
}
