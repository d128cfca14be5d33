/*
 * local_restore.c - checking a backup or archive directory and writing a
 * local store's log from it, whole or cut at a commit boundary
 * (stele_restore, stele_backup_verify; backup_int.h has the layout).
 *
 * Restoring to a point is cutting the log. Every piece of state is a
 * record of the log (local_backup.c says why), and records are in commit
 * order, so the store as it was right after commit C is the log up to the
 * end of C with the indexes rebuilt from it. The cut is found by walking
 * the records of the copies in order and stopping at the first commit that
 * is past the point:
 *
 *   --to-time T      the first commit created after T (commit times never
 *                    go down in the log: the writer clamps them);
 *   --to-position P  the first event commit whose first position is above
 *                    P, or the first other commit (metadata, snapshot,
 *                    delete) once an event at or above P has been kept:
 *                    the store right after the commit holding P.
 *
 * The segment holding the cut becomes the last one: its bytes up to the cut,
 * then zeros to its full size, which is exactly what a store looks like
 * after that commit was written. Segments after it are left out. A cut at
 * the first record of a segment leaves that segment out too (its
 * predecessor ends with a seal, as after a rollover; the store makes the
 * next segment when it opens). A cut inside a scavenged segment is refused:
 * that file's layout exists only sealed; an archive keeps segments as they
 * were sealed and can restore there.
 *
 * Damage is found before anything is trusted: each copy's length and
 * CRC32C against the manifest, every walked record's own CRC. Messages
 * name the file (and offset).
 *
 * This file writes only the log; src/store/ then opens the new store (the
 * engine rebuilds the indexes from the log) and runs stele_check on it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/backup_int.h"
#include "log/log.h"
#include "log/record.h"
#include "os/os.h"

#define RS_CHUNK (4u << 20)

/* The walk's state across segments. */
typedef struct rs_walk {
    uint32_t flags;
    uint64_t to_position;
    int64_t to_time;
    int seen_target;        /* an event at or above to_position was kept */
    int cut;                /* the cut was found */
    uint32_t cut_seg;
    uint64_t cut_off;
    uint64_t next_position; /* after the last kept event */
    int64_t last_time;      /* of the last kept commit */
    uint64_t bytes;         /* of kept records */
} rs_walk;

typedef struct rs_file {
    const char *src;
    const bk_seg *e;
    char rel[64];       /* "segments/00000003.seg" for messages */
    int fd;
    const uint8_t *map;
} rs_file;

static void rs_close(rs_file *f)
{
    if (f->map)
        munmap((void *)f->map, f->e->bytes);
    if (f->fd >= 0)
        close(f->fd);
    f->map = NULL;
    f->fd = -1;
}

/* Open and map a copy, check its length and checksum against the
 * manifest. */
static int rs_open(const char *src, const bk_seg *e, rs_file *f)
{
    char path[4200], name[32];
    log_seg_name(e->segno, name);
    *f = (rs_file){src, e, "", -1, NULL};
    snprintf(f->rel, sizeof f->rel, BK_SEGDIR "/%s", name);
    bk_seg_path(src, e->segno, path, sizeof path);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return err_set(errno == ENOENT ? STELE_ENOTFOUND : STELE_EIO,
                       "backup %s: %s is %s", src, f->rel,
                       errno == ENOENT ? "missing" : strerror(errno));
    struct stat sb;
    /* A copy of a segment that was being written may be longer than the
     * manifest says (a later backup was extending it in place): only the
     * manifest's bytes are the backup's. A sealed copy is exact. */
    if (fstat(f->fd, &sb) != 0 || (uint64_t)sb.st_size < e->bytes ||
        (e->sealed && (uint64_t)sb.st_size != e->bytes)) {
        int rc = err_set(STELE_ECORRUPT, "backup %s: %s is %lld bytes, the manifest says %" PRIu64,
                         src, f->rel, (long long)sb.st_size, e->bytes);
        rs_close(f);
        return rc;
    }
    void *p = mmap(NULL, e->bytes, PROT_READ, MAP_SHARED, f->fd, 0);
    if (p == MAP_FAILED) {
        int rc = err_set(STELE_EIO, "backup %s: map %s: %s", src, f->rel, strerror(errno));
        rs_close(f);
        return rc;
    }
    f->map = p;
    madvise(p, e->bytes, MADV_SEQUENTIAL);
    if (crc32c(0, f->map, e->bytes) != e->crc) {
        int rc = err_set(STELE_ECORRUPT, "backup %s: %s is damaged (checksum mismatch with the "
                         "manifest)", src, f->rel);
        rs_close(f);
        return rc;
    }
    return 0;
}

/* Walk the records of one copy, finding the cut when `w` has a point. */
static int rs_walk_seg(rs_file *f, rs_walk *w)
{
    seg_info si;
    const char *why = seg_header_read(f->map, &si);
    if (why)
        return err_set(STELE_ECORRUPT, "backup %s: %s offset 0: %s", f->src, f->rel, why);
    if (si.segno != f->e->segno)
        return err_set(STELE_ECORRUPT, "backup %s: %s offset 0: header names segment %" PRIu64,
                       f->src, f->rel, si.segno);
    uint64_t end = si.version == SEG_VERSION_SCAVENGED ? si.table_off : f->e->bytes;
    if (end > f->e->bytes)
        return err_set(STELE_ECORRUPT, "backup %s: %s offset 0: relocation table past the end",
                       f->src, f->rel);
    uint64_t off = SEG_HEADER_SIZE;
    while (off < end) {
        rec r;
        rec_status st = rec_decode(f->map + off, end - off, &r, &why);
        if (st == REC_ZERO)
            break;
        if (st == REC_FAR) /* valid; the walk needs no names (positions, times) */
            st = REC_OK;
        if (st != REC_OK)
            return err_set(STELE_ECORRUPT, "backup %s: %s offset %" PRIu64 ": %s", f->src,
                           f->rel, off, st == REC_SHORT ? "record runs past the end" : why);
        if (r.kind != REC_SEAL && r.commit_index == 0 && w->flags) {
            int past;
            if (w->flags & STELE_RESTORE_TO_TIME)
                past = r.created_us > w->to_time;
            else if (r.kind == REC_EVENT)
                past = r.position > w->to_position;
            else
                past = w->seen_target;
            if (past) {
                if (si.version == SEG_VERSION_SCAVENGED && (off != SEG_HEADER_SIZE || w->bytes == 0))
                    return err_set(STELE_EINVAL,
                                   "the point is inside %s, which scavenging rewrote before "
                                   "it was backed up: restore from an archive (it keeps "
                                   "segments as they were sealed), or pick a point before "
                                   "position %" PRIu64 " or after this segment",
                                   f->rel, r.kind == REC_EVENT ? r.position : w->next_position);
                w->cut = 1;
                w->cut_seg = f->e->segno;
                w->cut_off = off;
                return 0;
            }
        }
        if (r.kind == REC_EVENT) {
            w->next_position = r.position + 1;
            if ((w->flags & STELE_RESTORE_TO_POSITION) && r.position >= w->to_position)
                w->seen_target = 1;
        }
        if (r.kind != REC_SEAL) {
            w->last_time = r.created_us;
            w->bytes += r.len;
        }
        off += r.len;
    }
    return 0;
}

/* Write `n` bytes of the copy, then pad the file to `size`: with written
 * zeros for the segment the store will append to (preallocated, as the
 * engine makes them), sparsely for a sealed one. */
static int rs_write(const char *dir, uint32_t segno, const uint8_t *p, uint64_t n,
                    uint64_t size, int tail)
{
    char path[4200], name[32];
    log_seg_name(segno, name);
    snprintf(path, sizeof path, "%s/log/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(STELE_EIO, "create %s: %s", path, strerror(errno));
    int rc = 0;
    for (uint64_t off = 0; rc == 0 && off < n; off += RS_CHUNK)
        rc = os_write_full(fd, p + off, n - off < RS_CHUNK ? n - off : RS_CHUNK, off);
    if (rc == 0 && tail && size > n) {
        uint8_t *z = calloc(1, RS_CHUNK);
        if (!z)
            rc = -ENOMEM;
        for (uint64_t off = n; rc == 0 && off < size; off += RS_CHUNK)
            rc = os_write_full(fd, z, size - off < RS_CHUNK ? size - off : RS_CHUNK, off);
        free(z);
    } else if (rc == 0 && size > n && ftruncate(fd, (off_t)size) != 0) {
        rc = -errno;
    }
    if (rc == 0 && fdatasync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc)
        return err_set(rc == -ENOSPC ? STELE_ENOSPC : STELE_EIO, "write %s: %s", path,
                       strerror(-rc));
    return 0;
}

/* `dir` must be missing or empty; *made says whether it was created. */
static int rs_prepare(const char *dir, int *made)
{
    *made = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT)
            return err_set(STELE_EINVAL, "restore into %s: %s", dir, strerror(errno));
        if (mkdir(dir, 0755) != 0)
            return err_set(STELE_EIO, "create %s: %s", dir, strerror(errno));
        *made = 1;
    } else {
        struct dirent *de;
        int empty = 1;
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                empty = 0;
        closedir(d);
        if (!empty)
            return err_set(STELE_EINVAL, "restore into %s: the directory is not empty (restore "
                           "makes a new store; it never writes over one)", dir);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/log", dir);
    if (mkdir(path, 0755) != 0)
        return err_set(STELE_EIO, "create %s: %s", path, strerror(errno));
    return 0;
}

/* Remove what a failed restore wrote. */
static void rs_cleanup(const char *dir, uint32_t first, uint32_t upto, int made)
{
    char path[4200], name[32];
    for (uint32_t s = first; s < upto; s++) {
        log_seg_name(s, name);
        snprintf(path, sizeof path, "%s/log/%s", dir, name);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/log", dir);
    rmdir(path);
    if (made)
        rmdir(dir);
}

int local_restore(const char *src, const char *dir, const stele_restore_options *o,
                  stele_restore_result *res, uint64_t *seg_size)
{
    bk_manifest m;
    int rc = bk_manifest_read(src, &m);
    if (rc == STELE_ENOTFOUND)
        rc = err_set(STELE_ENOTFOUND, "%s is not a backup: it has no " BK_MANIFEST, src);
    if (rc)
        return rc;
    rs_walk w = {0};
    if (o) {
        w.flags = o->flags;
        w.to_position = o->to_position;
        w.to_time = o->to_time_us;
    }
    if ((w.flags & STELE_RESTORE_TO_POSITION) && w.to_position >= m.end_position) {
        rc = err_set(STELE_EINVAL, "position %" PRIu64 " is not in the backup %s (its events "
                     "are below position %" PRIu64 ")", w.to_position, src, m.end_position);
        bk_manifest_free(&m);
        return rc;
    }
    int made;
    if ((rc = rs_prepare(dir, &made))) {
        bk_manifest_free(&m);
        return rc;
    }
    *seg_size = 0;
    uint32_t first = m.nsegs ? m.segs[0].segno : 0, written = first;
    for (uint32_t i = 0; rc == 0 && i < m.nsegs && !w.cut; i++) {
        const bk_seg *e = &m.segs[i];
        if (e->version == SEG_VERSION && (!*seg_size || e->size < *seg_size))
            *seg_size = e->size;
        rs_file f;
        if ((rc = rs_open(src, e, &f)))
            break;
        rc = rs_walk_seg(&f, &w);
        uint64_t n = w.cut ? w.cut_off : e->bytes;
        /* The last segment written is the one appends continue in. */
        int tail = w.cut || i + 1 == m.nsegs;
        if (rc == 0 && !(w.cut && n == SEG_HEADER_SIZE && i > 0)) {
            rc = rs_write(dir, e->segno, f.map, n, e->size, tail && !(e->sealed && !w.cut));
            if (rc == 0) {
                written = e->segno + 1;
                res->segments++;
            }
        }
        rs_close(&f);
    }
    if (rc == 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/log", dir);
        if ((rc = os_fsync_dir(path)) || (rc = os_fsync_dir(dir)))
            rc = err_set(STELE_EIO, "sync %s: %s", dir, strerror(-rc));
    }
    if (rc) {
        rs_cleanup(dir, first, written, made);
    } else {
        res->bytes = w.bytes;
        res->end_position = w.next_position;
        res->end_time_us = w.last_time;
    }
    bk_manifest_free(&m);
    return rc;
}

int local_backup_verify(const char *src, char *report, size_t report_len)
{
    bk_manifest m;
    int rc = bk_manifest_read(src, &m);
    if (rc == STELE_ENOTFOUND)
        rc = err_set(STELE_ENOTFOUND, "%s is not a backup: it has no " BK_MANIFEST, src);
    if (rc)
        return rc;
    rs_walk w = {0};
    uint64_t bytes = 0;
    for (uint32_t i = 0; rc == 0 && i < m.nsegs; i++) {
        rs_file f;
        if ((rc = rs_open(src, &m.segs[i], &f)))
            break;
        rc = rs_walk_seg(&f, &w);
        bytes += m.segs[i].bytes;
        rs_close(&f);
    }
    if (rc == 0 && w.next_position != m.end_position && m.nsegs)
        rc = err_set(STELE_ECORRUPT, "backup %s: its records end at position %" PRIu64
                     ", the manifest says %" PRIu64, src, w.next_position, m.end_position);
    if (rc == 0 && report)
        snprintf(report, report_len,
                 "backup %s: %u segment files, %" PRIu64 " bytes, events below position %" PRIu64
                 ", every checksum matches\n",
                 src, m.nsegs, bytes, m.end_position);
    bk_manifest_free(&m);
    return rc;
}
