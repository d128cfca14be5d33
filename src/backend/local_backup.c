/*
 * local_backup.c - online backup of the local engine (stele_backup), and
 * the manifest of a backup directory (backup_int.h has the layout).
 *
 * Why a copy of the log is enough. Everything the store keeps is a record
 * of the log: events, stream metadata, snapshots, deletes, and (as events
 * of system streams) consumer-group checkpoints and projection state and
 * checkpoints. The index is derived from the log and rebuilt at restore.
 * So a backup is the log up to one commit.
 *
 * Why the copy is consistent while appends go on. The log is append-only:
 * a byte before the published commit location never changes again, except
 * that scavenging may replace a whole sealed segment file by a rewritten
 * one (rename over it). The backup reads the index checkpoint once (the
 * location past the last commit acknowledged, `end`), then copies:
 *
 *   - every segment before end's segment: sealed, whole (up to the end of
 *     its written data; zero padding is not copied);
 *   - end's segment up to end's offset (the writer only writes after it).
 *
 * A backup and a scavenge never run at once: the backup holds the
 * scavenger's lock (scav_mu) from before it reads the checkpoint to its
 * end, so a scavenge that starts meanwhile waits, and a backup waits for a
 * running scavenge's end. Without that, a scavenge could rewrite a segment
 * not copied yet on the strength of a delete made after `end` (the copy
 * would lack events that were live at its point), or rewrite `end`'s own
 * segment once the writer has sealed it (the copy's prefix would be of a
 * relocated file). Segments are still pinned while they are copied.
 *
 * Incremental. A sealed segment whose header checksum and file length
 * equal those of the copy the previous manifest names (and whose copy is
 * there with the right length) is kept, not copied. A segment is copied
 * under a temporary name, synced, read back and compared with the
 * checksum computed while reading the store, and renamed into place; the
 * manifest is written last. In archive mode (STELE_BACKUP_ARCHIVE) a
 * sealed copy is never replaced: the archive keeps each segment as it was
 * sealed, before any scavenge.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backup_int.h"
#include "backend/local_int.h"
#include "log/record.h"
#include "os/os.h"

#define BK_CHUNK (4u << 20)

/* ------------------------------------------------------------ manifest */

void bk_seg_path(const char *dir, uint32_t segno, char *out, size_t n)
{
    char name[32];
    log_seg_name(segno, name);
    snprintf(out, n, "%s/" BK_SEGDIR "/%s", dir, name);
}

int bk_manifest_add(bk_manifest *m, const bk_seg *s)
{
    if (m->nsegs == m->cap) {
        uint32_t cap = m->cap ? m->cap * 2 : 64;
        bk_seg *n = realloc(m->segs, cap * sizeof *n);
        if (!n)
            return err_set(STELE_ENOMEM, "out of memory");
        m->segs = n;
        m->cap = cap;
    }
    m->segs[m->nsegs++] = *s;
    return 0;
}

void bk_manifest_free(bk_manifest *m)
{
    free(m->segs);
    memset(m, 0, sizeof *m);
}

int bk_manifest_read(const char *dir, bk_manifest *m)
{
    memset(m, 0, sizeof *m);
    char path[4200];
    snprintf(path, sizeof path, "%s/" BK_MANIFEST, dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(errno == ENOENT ? STELE_ENOTFOUND : STELE_EIO, "%s: %s", path,
                       strerror(errno));
    char line[512];
    int lineno = 0, rc = 0, done = 0, have_head = 0, have_end = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        int v;
        bk_seg s = {0};
        unsigned long long a, b, c;
        long long t;
        if (done) {
            rc = -1;
        } else if (lineno == 1) {
            if (sscanf(line, "stele-backup %d", &v) != 1)
                rc = -1;
            else if (v != BK_VERSION)
                rc = err_set(STELE_EVERSION, "%s: backup format %d, this Stele reads %d", path,
                             v, BK_VERSION);
            have_head = 1;
        } else if (!strncmp(line, "store ", 6)) {
            if (sscanf(line, "store %lld", &t) != 1)
                rc = -1;
            m->store_created = t;
        } else if (!strncmp(line, "end ", 4)) {
            if (sscanf(line, "end %llu %llu %lld", &a, &b, &t) != 3)
                rc = -1;
            m->end_position = a;
            m->end_loc = b;
            m->end_time = t;
            have_end = 1;
        } else if (!strncmp(line, "seg ", 4)) {
            unsigned no, ver, crc, hcrc;
            int sealed;
            if (sscanf(line, "seg %u %u %llu %llu %x %x %d", &no, &ver, &a, &c, &crc, &hcrc,
                       &sealed) != 7 ||
                (m->nsegs && no != m->segs[m->nsegs - 1].segno + 1) || ver < 1 || ver > 2 ||
                a < SEG_HEADER_SIZE || a > c) {
                rc = -1;
            } else {
                s = (bk_seg){no, ver, a, c, crc, hcrc, sealed != 0};
                rc = bk_manifest_add(m, &s);
            }
        } else if (!strcmp(line, "done\n")) {
            done = 1;
        } else {
            rc = -1;
        }
        (void)b;
    }
    fclose(f);
    if (rc == 0 && (!have_head || !have_end || !done))
        rc = err_set(STELE_ECORRUPT, "%s: incomplete (no %s line)", path,
                     !have_head ? "header" : !have_end ? "end" : "done");
    else if (rc == -1)
        rc = err_set(STELE_ECORRUPT, "%s line %d: malformed", path, lineno);
    if (rc)
        bk_manifest_free(m);
    return rc;
}

int bk_manifest_write(const char *dir, const bk_manifest *m)
{
    char path[4200], tmp[4220];
    snprintf(path, sizeof path, "%s/" BK_MANIFEST, dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return err_set(STELE_EIO, "create %s: %s", tmp, strerror(errno));
    fprintf(f, "stele-backup %d\nstore %" PRId64 "\nend %" PRIu64 " %" PRIu64 " %" PRId64 "\n",
            BK_VERSION, m->store_created, m->end_position, m->end_loc, m->end_time);
    for (uint32_t i = 0; i < m->nsegs; i++) {
        const bk_seg *s = &m->segs[i];
        fprintf(f, "seg %u %u %" PRIu64 " %" PRIu64 " %08x %08x %d\n", s->segno, s->version,
                s->bytes, s->size, s->crc, s->hdr_crc, s->sealed);
    }
    fprintf(f, "done\n");
    int rc = fflush(f) != 0 || ferror(f) ? -errno : 0;
    if (rc == 0 && fsync(fileno(f)) != 0)
        rc = -errno;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc == 0)
        rc = os_fsync_dir(dir);
    if (rc) {
        unlink(tmp);
        return err_set(rc == -ENOSPC ? STELE_ENOSPC : STELE_EIO, "write %s: %s", path,
                       strerror(-rc));
    }
    return 0;
}

/* -------------------------------------------------------------- copying */

typedef struct bk_run {
    local *L;
    const char *dest;
    uint8_t *chunk;
    stele_backup_result *res;
} bk_run;

static int io_err(int rc, const char *what, const char *path)
{
    return err_set(rc == -ENOSPC ? STELE_ENOSPC : STELE_EIO, "%s %s: %s", what, path,
                   strerror(-rc));
}

/* Read back [from, end) of the copy at `path` and compare its checksum,
 * continued from `crc0` (the checksum of [0, from)). */
static int verify_copy(bk_run *b, const char *path, uint64_t from, uint64_t end, uint32_t crc0,
                       uint32_t crc)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return io_err(-errno, "open", path);
    uint32_t c = crc0;
    int rc = 0;
    for (uint64_t off = from; rc == 0 && off < end; off += BK_CHUNK) {
        size_t n = end - off < BK_CHUNK ? (size_t)(end - off) : BK_CHUNK;
        rc = os_read_full(fd, b->chunk, n, off);
        if (rc == 0)
            c = crc32c(c, b->chunk, n);
    }
    close(fd);
    if (rc)
        return io_err(rc, "read back", path);
    if (c != crc)
        return err_set(STELE_EIO, "%s: the copy reads back with another checksum (%08x, wrote "
                       "%08x): the destination's storage is failing", path, c, crc);
    return 0;
}

/*
 * Copy bytes [from, *end) of segment `s` to `out` at the same offsets,
 * continuing *crc. With `walk` (a sealed plain segment, *end its file
 * size), stop at the end of its written data instead, found by walking the
 * records' length words from `from` (a record boundary), and set *end.
 */
static int copy_range(bk_run *b, const char *name, log_seg *s, int out, const char *outpath,
                      uint64_t from, uint64_t *end, int walk, uint32_t *crc)
{
    uint64_t stop = *end, next = from < SEG_HEADER_SIZE ? SEG_HEADER_SIZE : from, off = from;
    int rc = 0;
    while (rc == 0 && off < stop) {
        size_t n = stop - off < BK_CHUNK ? (size_t)(stop - off) : BK_CHUNK;
        rc = os_read_full(s->fd, b->chunk, n, off);
        if (rc)
            return io_err(rc, "read segment", name);
        size_t use = n;
        /* Walk the length words inside this chunk; a record that straddles
         * the chunk's end is passed in the next one. */
        while (walk && next + 4 <= off + n) {
            uint32_t len;
            memcpy(&len, b->chunk + (next - off), 4);
            len = le32toh(len);
            if (len == 0) {
                stop = next;
                use = (size_t)(next - off);
                break;
            }
            if (len < REC_MIN_SIZE || len % REC_ALIGN || next + len > *end)
                return err_set(STELE_ECORRUPT,
                               "segment %s offset %" PRIu64 ": bad record length %u", name, next,
                               len);
            next += len;
        }
        if (use) {
            *crc = crc32c(*crc, b->chunk, use);
            int w = os_write_full(out, b->chunk, use, off);
            if (w)
                return io_err(w, "write", outpath);
        }
        off += n;
    }
    if (walk && stop > next)
        stop = next; /* data runs to the end of the file */
    *end = stop;
    return 0;
}

/* The header of pinned segment `s`: its version and checksum, its size. */
static int seg_head(log_seg *s, const char *name, seg_info *si, uint32_t *hdr_crc,
                    uint64_t *fsize)
{
    int64_t sz = os_file_size(s->fd);
    if (sz < 0)
        return io_err((int)sz, "stat segment", name);
    uint8_t h[SEG_HEADER_SIZE];
    int rc = os_read_full(s->fd, h, sizeof h, 0);
    if (rc)
        return io_err(rc, "read segment", name);
    const char *why = seg_header_read(h, si);
    if (why)
        return err_set(STELE_ECORRUPT, "segment %s offset 0: %s", name, why);
    *hdr_crc = crc32c(0, h, sizeof h);
    *fsize = (uint64_t)sz;
    return 0;
}

/*
 * Copy segment `segno` (pinned as `s`) into DEST: `limit` bytes (the tail
 * segment) or, for a sealed plain segment, up to the end of its written
 * data; a scavenged segment whole. Fills *e except `sealed`.
 *
 * When `prev` (the previous backup's copy of this segment, not sealed
 * then) holds a prefix of it (same header, a plain segment: the tail is
 * only ever appended to), only the bytes after that prefix are copied,
 * into the same file in place: the previous manifest names only the prefix
 * and its checksum, which stay as they were, so it stays valid whatever
 * happens to the bytes after (readers check the prefix; backup_int.h).
 */
static int copy_segment(bk_run *b, uint32_t segno, log_seg *s, uint64_t limit,
                        const bk_seg *prev, bk_seg *e)
{
    char name[32], path[4200], tmp[4220];
    log_seg_name(segno, name);
    bk_seg_path(b->dest, segno, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    seg_info si;
    uint32_t hdr_crc = 0;
    uint64_t fsize = 0;
    int rc = seg_head(s, name, &si, &hdr_crc, &fsize);
    if (rc)
        return rc;
    uint64_t end = limit != UINT64_MAX ? limit : fsize;
    int walk = limit == UINT64_MAX && si.version == SEG_VERSION;
    int extend = prev && !prev->sealed && prev->hdr_crc == hdr_crc &&
                 si.version == SEG_VERSION && prev->version == SEG_VERSION &&
                 prev->bytes <= end;
    struct stat sb;
    if (extend && (stat(path, &sb) != 0 || (uint64_t)sb.st_size < prev->bytes))
        extend = 0;
    uint64_t from = extend ? prev->bytes : 0;
    uint32_t crc0 = extend ? prev->crc : 0, crc = crc0;
    const char *target = extend ? path : tmp;
    int out = open(target, extend ? O_WRONLY | O_CLOEXEC
                                  : O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0)
        return io_err(-errno, "create", target);
    rc = copy_range(b, name, s, out, target, from, &end, walk, &crc);
    if (rc == 0 && extend && ftruncate(out, (off_t)end) != 0)
        rc = io_err(-errno, "truncate", target);
    if (rc == 0 && fdatasync(out) != 0)
        rc = io_err(-errno, "sync", target);
    close(out);
    if (rc == 0)
        rc = verify_copy(b, target, from, end, crc0, crc);
    if (rc == 0 && !extend && rename(tmp, path) != 0)
        rc = io_err(-errno, "rename", tmp);
    if (rc) {
        if (!extend)
            unlink(tmp);
        return rc;
    }
    *e = (bk_seg){segno, si.version, end, fsize, crc, hdr_crc, 0};
    b->res->bytes_copied += end - from;
    return 0;
}

/* Whether the copy named by `old` is in DEST with its length. */
static int copy_present(const char *dest, const bk_seg *old)
{
    char path[4200];
    struct stat sb;
    bk_seg_path(dest, old->segno, path, sizeof path);
    return stat(path, &sb) == 0 && (uint64_t)sb.st_size == old->bytes;
}

static int make_dirs(const char *dest)
{
    char path[4200];
    struct stat sb;
    if (stat(dest, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return err_set(STELE_EINVAL, "backup destination %s is not a directory", dest);
    if (mkdir(dest, 0755) != 0 && errno != EEXIST)
        return io_err(-errno, "create", dest);
    snprintf(path, sizeof path, "%s/" BK_SEGDIR, dest);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return io_err(-errno, "create", path);
    return 0;
}

/* The created time of the store's first segment (its identity). */
static int store_identity(local *L, int64_t *created)
{
    log_seg *s = log_seg_get(L->lg, L->lg->first_seg);
    if (!s)
        return err_set(STELE_ECORRUPT, "the store has no first segment");
    uint8_t h[SEG_HEADER_SIZE];
    int rc = os_read_full(s->fd, h, sizeof h, 0);
    log_seg_put(s);
    seg_info si;
    if (rc)
        return io_err(rc, "read", "the first segment");
    const char *why = seg_header_read(h, &si);
    if (why)
        return err_set(STELE_ECORRUPT, "the first segment's header: %s", why);
    *created = si.created_us;
    return 0;
}

/* The checkpoint: end of the last commit, next position, and that commit's
 * time (from its first record's header). */
static int backup_point(local *L, bk_manifest *m)
{
    MDB_txn *txn;
    int rc = idx_begin(L->ix, 1, &txn);
    if (rc)
        return rc;
    idx_ckpt ck;
    rc = idx_ckpt_get(L->ix, txn, &ck);
    mdb_txn_abort(txn);
    if (rc)
        return rc == STELE_ENOTFOUND ? err_set(STELE_ECORRUPT, "index: no checkpoint") : rc;
    /* Every chain record before the point rewritten (local_chain.c): the
     * tail's copy is only ever extended by later backups, so a record
     * copied pending would stay pending in it. */
    chain_wait_rewritten(L, ck.loc);
    m->end_loc = ck.loc;
    m->end_position = ck.next_pos;
    m->end_time = 0;
    if (ck.last_commit != UINT64_MAX) {
        uint8_t kind;
        uint64_t pos;
        rc = log_peek(L->lg, ck.last_commit, &kind, &pos, &m->end_time);
        if (rc && rc != LOG_REMOVED)
            return rc;
    }
    return 0;
}

/* One writer per destination: a second backup (another process, or the
 * archive thread and an admin backup) into it waits for nothing and
 * fails. The lock goes with the descriptor: 0 with *fd, EBUSY, or an I/O
 * error. */
static int backup_lock(const char *dest, int *fd)
{
    char lpath[4200];
    snprintf(lpath, sizeof lpath, "%s/stele-backup.lock", dest);
    int lockfd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lockfd < 0)
        return io_err(-errno, "create", lpath);
    if (flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
        close(lockfd);
        return err_set(STELE_EBUSY, "another backup is writing into %s", dest);
    }
    *fd = lockfd;
    return 0;
}

/* Segment `segno` of the backup point (`sealed`, or the tail up to
 * m->end_loc) into the backup: copied, or kept when the previous backup
 * (`old`) already holds it whole; then added to m's manifest. */
static int backup_segment(bk_run *b, const bk_manifest *old, bk_manifest *m, uint32_t segno,
                          int sealed, int archive)
{
    local *L = b->L;
    stele_backup_result *res = b->res;
    const bk_seg *prev = NULL;
    if (old->nsegs && segno >= old->segs[0].segno && segno - old->segs[0].segno < old->nsegs)
        prev = &old->segs[segno - old->segs[0].segno];
    log_seg *s = log_seg_get(L->lg, segno);
    if (!s) {
        char name[32];
        log_seg_name(segno, name);
        return err_set(STELE_ECORRUPT, "segment %s is missing from the store", name);
    }
    bk_seg e;
    int keep = 0, rc = 0;
    if (sealed && prev && prev->sealed && copy_present(b->dest, prev)) {
        if (archive) {
            keep = 1;
        } else {
            uint8_t h[SEG_HEADER_SIZE];
            int64_t fsize = os_file_size(s->fd);
            if (os_read_full(s->fd, h, sizeof h, 0) == 0 && fsize >= 0 &&
                (uint64_t)fsize == prev->size && crc32c(0, h, sizeof h) == prev->hdr_crc)
                keep = 1;
        }
    }
    if (keep) {
        e = *prev;
        res->segments_kept++;
    } else {
        rc = copy_segment(b, segno, s, sealed ? UINT64_MAX : loc_off(m->end_loc), prev, &e);
        e.sealed = sealed;
        if (rc == 0)
            res->segments_copied++;
    }
    log_seg_put(s);
    if (rc == 0)
        rc = bk_manifest_add(m, &e);
    if (rc == 0) {
        res->segments++;
        res->bytes_total += e.bytes;
    }
    return rc;
}

int local_backup(backend *be, const char *dest, const stele_backup_options *opts,
                 stele_backup_result *res)
{
    local *L = (local *)be;
    uint64_t t0 = time_mono_ns();
    int archive = opts && (opts->flags & STELE_BACKUP_ARCHIVE);
    int lockfd = -1;
    int rc = make_dirs(dest);
    if (rc == 0)
        rc = backup_lock(dest, &lockfd);
    if (rc)
        return rc;
    bk_manifest old, m = {0};
    rc = bk_manifest_read(dest, &old);
    if (rc == STELE_ENOTFOUND) {
        memset(&old, 0, sizeof old);
        err_clear();
        rc = 0;
    } else if (rc) {
        close(lockfd);
        return rc;
    }
    pthread_mutex_lock(&L->scav_mu); /* no scavenge until the copy is done */
    if (rc == 0)
        rc = store_identity(L, &m.store_created);
    if (rc == 0 && old.nsegs && old.store_created != m.store_created)
        rc = err_set(STELE_EINVAL,
                     "%s holds a backup of another store (first segment made at %" PRId64
                     " µs, this store's at %" PRId64 " µs): use an empty directory",
                     dest, old.store_created, m.store_created);
    if (rc == 0)
        rc = backup_point(L, &m);
    bk_run b = {L, dest, NULL, res};
    if (rc == 0 && !(b.chunk = malloc(BK_CHUNK)))
        rc = err_set(STELE_ENOMEM, "out of memory");
    uint32_t first = L->lg->first_seg, last = loc_seg(m.end_loc);
    /* The checkpoint may name offset 0 of a segment not made yet (no room
     * for it): then the log ends with the sealed one before. */
    int has_tail = loc_off(m.end_loc) != 0;
    uint32_t upto = has_tail ? last + 1 : last;
    res->segments_todo = upto > first ? upto - first : 0;
    for (uint32_t segno = first; rc == 0 && segno < upto; segno++) {
        if ((rc = backup_segment(&b, &old, &m, segno, segno < last, archive)))
            break;
        res->segments_done++;
        res->end_position = m.end_position;
        res->end_time_us = m.end_time;
        res->duration_us = (time_mono_ns() - t0) / 1000;
        if (opts && opts->progress && opts->progress(opts->ctx, res))
            rc = err_set(STELE_ECLOSED, "backup stopped before it was complete; %s holds the "
                         "previous backup", dest);
    }
    /* Copies of segments past the new end (a store restored to an earlier
     * point into the same DEST is refused above; nothing else shrinks a
     * log) would be stale: none can be left. */
    if (rc == 0) {
        char segdir[4200];
        snprintf(segdir, sizeof segdir, "%s/" BK_SEGDIR, dest);
        if ((rc = os_fsync_dir(segdir)))
            rc = io_err(rc, "sync", segdir);
    }
    if (rc == 0)
        rc = bk_manifest_write(dest, &m);
    res->end_position = m.end_position;
    res->end_time_us = m.end_time;
    res->duration_us = (time_mono_ns() - t0) / 1000;
    pthread_mutex_unlock(&L->scav_mu);
    free(b.chunk);
    bk_manifest_free(&old);
    bk_manifest_free(&m);
    close(lockfd);
    return rc;
}
