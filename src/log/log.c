/*
 * log.c - segment files of the local engine.
 *
 * The log is a directory of segment files 00000000.seg, 00000001.seg, ...
 * numbered without gaps. Each is created at its full size filled with
 * zeros, so that later writes followed by fdatasync only flush data blocks
 * (no file-size metadata): measured here to double the fsync rate over
 * fallocate. Creating 64 MiB of zeros takes tens of milliseconds, so a
 * helper thread keeps one spare ready (log/spare.tmp, renamed to
 * log/spare.zero once zero-filled and synced, so a spare found at open is
 * known good); rolling to a new segment is then a rename and a directory
 * fsync.
 *
 * Running out of space. A preallocation that fails (ENOSPC while writing
 * the zeros, or any error) removes its partial file at once, so a failed
 * attempt never leaves a file that fills the disk again; the caller
 * decides what the failure means (local.c: read-only until space returns).
 * log_room() tells from statvfs whether an attempt can succeed at all, so
 * a full disk costs no zero-writing. A spare found at open can be used
 * before the helper thread starts (recovery), when it may be the only room
 * left.
 *
 * Only the writer thread adds segments; readers index `segs` below the
 * acquire-loaded `nsegs`, and a log_seg never changes after publication.
 *
 * Scavenged segments. Scavenging (log_rewrite.c) replaces a sealed segment
 * by a compact file without some records, whose relocation table maps the
 * original offsets (which the index keeps using) to offsets in the new
 * file. This file translates: log_read() exactly (a removed record is
 * LOG_REMOVED), the iterator from the first kept record at or after where
 * it starts, reporting each record at its original location.
 *
 * Swapping a segment. segs[i] of a sealed segment may be replaced while
 * readers use it. A reader pins the segment it reads (log_seg_get: bump
 * `refs`, then re-load segs[i] and retry if it changed) and unpins it when
 * done (log_seg_put). log_seg_replace() stores the new pointer, marks the
 * old one retired, and closes its fd if nobody holds a pin; otherwise the
 * last log_seg_put() does. Both sides use sequentially consistent atomics
 * (store the pointer, then read refs / bump refs, then re-read the
 * pointer), so either the replacer sees the pin or the reader sees the new
 * pointer. A retired log_seg stays allocated until log_close (a reader may
 * still bump and drop its count after the fd is closed; it never uses the
 * fd then).
 */
#include "log/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "os/os.h"

#define ZERO_CHUNK (1u << 20)
#define ITER_CHUNK (1u << 20)

static int io_err(int neg_errno, const char *what, const char *path)
{
    int e = -neg_errno;
    int code = e == ENOSPC ? STELE_ENOSPC : STELE_EIO;
    return err_set(code, "%s %s: %s", what, path, strerror(e));
}

void log_seg_name(uint32_t segno, char out[32]) { snprintf(out, 32, "%08u.seg", segno); }

static void seg_path(const logf *lg, uint32_t segno, char *out, size_t n)
{
    char name[32];
    log_seg_name(segno, name);
    snprintf(out, n, "%s/%s", lg->dir, name);
}

/* Write a file of `size` zero bytes at `path` and make it durable. */
static int make_zero_file(const char *path, uint64_t size)
{
    int fd = os_io->open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return io_err(fd, "create", path);
    static const uint8_t zeros[ZERO_CHUNK];
    int rc = 0;
    for (uint64_t off = 0; off < size && rc == 0; off += ZERO_CHUNK) {
        uint64_t n = size - off < ZERO_CHUNK ? size - off : ZERO_CHUNK;
        rc = os_write_full(fd, zeros, n, off);
    }
    if (rc == 0)
        rc = os_io->fdatasync(fd);
    os_io->close(fd);
    if (rc) {
        /* Never leave a partial file behind: it would hold the space that
         * just ran out. Nothing refers to it yet. */
        os_io->unlink(path);
        return io_err(rc, "preallocate", path);
    }
    return 0;
}

/* Whether the file system of the log has `need` bytes free (statvfs; 1
 * when it cannot tell); *avail gets the free bytes. */
static int log_room(logf *lg, uint64_t need, uint64_t *avail)
{
    struct statvfs sv;
    if (statvfs(lg->dir, &sv) != 0) {
        *avail = UINT64_MAX;
        return 1; /* cannot tell: let the attempt decide */
    }
    /* f_bfree counts blocks reserved for root too; the attempt settles it
     * for an unprivileged server with less than that. */
    *avail = (uint64_t)sv.f_bfree * sv.f_frsize;
    return *avail >= need;
}

static void seg_free_all(log_seg *s)
{
    if (!atomic_load(&s->closed))
        os_io->close(s->fd);
    free(s->runs);
    free(s);
}

static int open_seg(logf *lg, uint32_t segno, log_seg **out)
{
    char path[4200];
    seg_path(lg, segno, path, sizeof path);
    int fd = os_io->open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return io_err(fd, "open", path);
    int64_t size = os_file_size(fd);
    if (size < 0) {
        os_io->close(fd);
        return io_err((int)size, "stat", path);
    }
    log_seg *s = calloc(1, sizeof *s);
    if (!s) {
        os_io->close(fd);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    s->fd = fd;
    s->size = (uint64_t)size;
    *out = s;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* A leftover of a crash in the log directory (a half-made or finished
 * spare, a scavenged copy never renamed into place): dealt with here.
 * 1 if `name` was one, else 0. */
static int log_leftover(logf *lg, const char *name, uint64_t seg_size)
{
    char path[4200];
    if (strcmp(name, "spare.tmp") == 0) {
        snprintf(path, sizeof path, "%s/spare.tmp", lg->dir);
        os_io->unlink(path); /* a half-made spare from before a crash */
        return 1;
    }
    if (strcmp(name, "spare.zero") == 0) {
        /* A finished spare (renamed only once zero-filled and synced). */
        struct stat sb;
        snprintf(path, sizeof path, "%s/spare.zero", lg->dir);
        if (stat(path, &sb) == 0 && (uint64_t)sb.st_size == seg_size) {
            lg->spare_ready = 1;
            lg->spare_size = seg_size;
        } else {
            os_io->unlink(path);
        }
        return 1;
    }
    size_t len = strlen(name);
    if (len == 17 && strcmp(name + 8, ".seg.scav") == 0) {
        /* A scavenged segment that was not renamed into place before a
         * crash: the original is still there. */
        snprintf(path, sizeof path, "%s/%.17s", lg->dir, name);
        os_io->unlink(path);
        return 1;
    }
    return 0;
}

/* The numbers of the segment files in the log directory (unsorted, in
 * *nums, malloc'd; *n of them), leftovers dealt with on the way. */
static int log_list_segments(logf *lg, uint64_t seg_size, uint32_t **nums, size_t *n)
{
    DIR *d = opendir(lg->dir);
    if (!d)
        return err_set(errno == ENOENT ? STELE_ENOTFOUND : STELE_EIO, "open %s: %s", lg->dir,
                       strerror(errno));
    size_t cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        if (log_leftover(lg, name, seg_size))
            continue;
        if (strlen(name) != 12 || strcmp(name + 8, ".seg") != 0)
            continue;
        char *end;
        unsigned long v = strtoul(name, &end, 10);
        if (end != name + 8 || v >= LOG_MAX_SEGS)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            uint32_t *nn = realloc(*nums, cap * sizeof *nn);
            if (!nn) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            *nums = nn;
        }
        (*nums)[(*n)++] = (uint32_t)v;
    }
    closedir(d);
    return rc;
}

/* Open segment `segno`, the i-th of n, and read its header: a damaged
 * header is an error except in the last segment (torn at creation:
 * recovery decides). */
static int log_open_segment(logf *lg, uint32_t segno, size_t i, size_t n)
{
    log_seg *s;
    int rc = open_seg(lg, segno, &s);
    if (rc)
        return rc;
    lg->segs[segno] = s;
    atomic_store(&lg->nsegs, segno + 1);
    uint8_t hdr[SEG_HEADER_SIZE];
    char name[32];
    log_seg_name(segno, name);
    if (s->size < SEG_HEADER_SIZE || os_read_full(s->fd, hdr, sizeof hdr, 0)) {
        /* A last segment shorter than a header was torn at creation;
         * recovery decides. */
        memset(hdr, 0, sizeof hdr);
    }
    seg_info si;
    const char *why = seg_header_read(hdr, &si);
    s->first_position = si.first_position;
    if (why && i + 1 < n)
        rc = err_set(STELE_ECORRUPT, "segment %s offset 0: %s", name, why);
    else if (!why && si.segno != segno)
        rc = err_set(STELE_ECORRUPT, "segment %s offset 0: header names segment %llu", name,
                     (unsigned long long)si.segno);
    else if (why)
        s->first_position = UINT64_MAX; /* last segment, header invalid */
    else if (si.version == SEG_VERSION_SCAVENGED && (rc = log_seg_load_table(s, segno, &si)) == 0 &&
             atomic_load(&lg->first_scavenged) == UINT32_MAX)
        atomic_store(&lg->first_scavenged, segno);
    return rc;
}

int log_open(const char *dir, uint64_t seg_size, int create, logf **out)
{
    logf *lg = calloc(1, sizeof *lg);
    if (!lg)
        return err_set(STELE_ENOMEM, "out of memory");
    lg->seg_size = seg_size;
    pthread_mutex_init(&lg->prealloc_mu, NULL);
    pthread_mutex_init(&lg->retire_mu, NULL);
    atomic_store(&lg->first_scavenged, UINT32_MAX);
    pthread_cond_init(&lg->prealloc_cv, NULL);
    snprintf(lg->dir, sizeof lg->dir, "%s/log", dir);
    if (create && mkdir(lg->dir, 0755) != 0 && errno != EEXIST) {
        int rc = err_set(STELE_EIO, "mkdir %s: %s", lg->dir, strerror(errno));
        log_close(lg);
        return rc;
    }
    uint32_t *nums = NULL;
    size_t n = 0;
    int rc = log_list_segments(lg, seg_size, &nums, &n);
    if (rc == 0 && n) {
        /* Segments are numbered without gaps. */
        qsort(nums, n, sizeof *nums, cmp_u32);
        for (size_t i = 1; i < n && rc == 0; i++)
            if (nums[i] != nums[i - 1] + 1) {
                char name[32];
                log_seg_name(nums[i - 1] + 1, name);
                rc = err_set(STELE_ECORRUPT, "log: segment %s is missing", name);
            }
        lg->first_seg = nums[0];
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = log_open_segment(lg, nums[i], i, n);
    }
    free(nums);
    if (rc) {
        log_close(lg);
        return rc;
    }
    *out = lg;
    return 0;
}

static void *prealloc_main(void *arg)
{
    logf *lg = arg;
    char path[4200], ready[4200];
    snprintf(path, sizeof path, "%s/spare.tmp", lg->dir);
    snprintf(ready, sizeof ready, "%s/spare.zero", lg->dir);
    pthread_mutex_lock(&lg->prealloc_mu);
    for (;;) {
        while (!lg->prealloc_stop && (lg->spare_ready || !lg->spare_wanted))
            pthread_cond_wait(&lg->prealloc_cv, &lg->prealloc_mu);
        if (lg->prealloc_stop)
            break;
        uint64_t size = lg->seg_size;
        pthread_mutex_unlock(&lg->prealloc_mu);
        int rc = make_zero_file(path, size);
        if (rc == 0)
            rc = os_io->rename(path, ready);
        pthread_mutex_lock(&lg->prealloc_mu);
        if (rc == 0) {
            lg->spare_ready = 1;
            lg->spare_size = size;
        } else {
            /* No spare: the writer makes its segments itself (and meets
             * the same error there, where it counts). */
            lg->spare_wanted = 0;
        }
        pthread_cond_broadcast(&lg->prealloc_cv);
    }
    pthread_mutex_unlock(&lg->prealloc_mu);
    return NULL;
}

int log_start_prealloc(logf *lg)
{
    lg->spare_wanted = 1;
    if (pthread_create(&lg->prealloc_thread, NULL, prealloc_main, lg) != 0)
        return err_set(STELE_EINTERNAL, "cannot start the preallocation thread");
    lg->prealloc_started = 1;
    return 0;
}

int log_add_segment(logf *lg, uint32_t segno, uint64_t min_size)
{
    if (segno >= LOG_MAX_SEGS)
        return err_set(STELE_ENOSPC, "log: too many segments (%u)", segno);
    char path[4200], spare[4200];
    seg_path(lg, segno, path, sizeof path);
    snprintf(spare, sizeof spare, "%s/spare.zero", lg->dir);
    uint64_t size = min_size > lg->seg_size ? min_size : lg->seg_size;
    int used_spare = 0, made_own = 0;
    pthread_mutex_lock(&lg->prealloc_mu);
    /* A spare being made: wait for it rather than make a second file
     * beside it (on a nearly full disk only one of them would fit). */
    while (lg->prealloc_started && lg->spare_wanted && !lg->spare_ready && !lg->prealloc_stop &&
           lg->seg_size >= size)
        pthread_cond_wait(&lg->prealloc_cv, &lg->prealloc_mu);
    /* The spare (also one found at open, before the helper starts: on a
     * full disk it may be the only room there is). */
    if (lg->spare_ready && lg->spare_size >= size) {
        int rc = os_io->rename(spare, path);
        if (rc == 0) {
            used_spare = 1;
            lg->spare_ready = 0;
            lg->spare_wanted = 1;
            pthread_cond_broadcast(&lg->prealloc_cv);
        }
    }
    pthread_mutex_unlock(&lg->prealloc_mu);
    made_own = !used_spare;
    uint64_t avail;
    if (made_own && !log_room(lg, size, &avail)) {
        char name[32];
        log_seg_name(segno, name);
        return err_set(STELE_ENOSPC, "segment %s needs %llu bytes, %.200s has %llu free", name,
                       (unsigned long long)size, lg->dir, (unsigned long long)avail);
    }
    int rc = used_spare ? 0 : make_zero_file(path, size);
    if (rc == 0 && made_own && lg->prealloc_started) {
        /* The helper gave up after a failure (no space then): there may be
         * room again, so let it make the next spare. */
        pthread_mutex_lock(&lg->prealloc_mu);
        if (!lg->spare_ready && !lg->spare_wanted) {
            lg->spare_wanted = 1;
            pthread_cond_broadcast(&lg->prealloc_cv);
        }
        pthread_mutex_unlock(&lg->prealloc_mu);
    }
    if (rc == 0) {
        rc = os_fsync_dir(lg->dir);
        if (rc)
            rc = io_err(rc, "fsync directory", lg->dir);
    }
    if (rc)
        return rc;
    log_seg *s;
    rc = open_seg(lg, segno, &s);
    if (rc)
        return rc;
    s->first_position = UINT64_MAX; /* set by the writer with the header */
    lg->segs[segno] = s;
    if (atomic_load(&lg->nsegs) == 0)
        lg->first_seg = segno;
    atomic_store_explicit(&lg->nsegs, segno + 1, memory_order_release);
    return 0;
}

int log_drop_last(logf *lg)
{
    uint32_t n = atomic_load(&lg->nsegs);
    if (n == 0 || n - 1 < lg->first_seg)
        return 0;
    log_seg *s = lg->segs[n - 1];
    char path[4200];
    seg_path(lg, n - 1, path, sizeof path);
    seg_free_all(s);
    lg->segs[n - 1] = NULL;
    atomic_store(&lg->nsegs, n - 1);
    int rc = os_io->unlink(path);
    if (rc == 0)
        rc = os_fsync_dir(lg->dir);
    return rc ? io_err(rc, "remove", path) : 0;
}

int log_peek(logf *lg, uint64_t loc, uint8_t *kind, uint64_t *position, int64_t *created_us)
{
    uint8_t h[REC_PEEK_SIZE];
    int rc = log_read(lg, loc, h, 4);
    if (rc)
        return rc;
    uint32_t len = ld32(h);
    size_t n = len < sizeof h ? len : sizeof h;
    if (len < REC_MIN_SIZE || (rc = log_read(lg, loc, h, n)) == 0) {
        if (len < REC_MIN_SIZE || rec_peek(h, n, kind, position, created_us)) {
            char name[32];
            log_seg_name(loc_seg(loc), name);
            rc = err_set(STELE_ECORRUPT, "segment %s offset %u: not a record header", name,
                         loc_off(loc));
        }
    }
    return rc;
}

int log_read(logf *lg, uint64_t loc, void *b, size_t n)
{
    uint32_t segno = loc_seg(loc);
    char name[32];
    log_seg *s = NULL;
    if (segno >= atomic_load_explicit(&lg->nsegs, memory_order_acquire) || segno < lg->first_seg ||
        !(s = log_seg_get(lg, segno))) {
        log_seg_name(segno, name);
        return err_set(STELE_ECORRUPT, "segment %s is missing", name);
    }
    int64_t phys = log_seg_phys(s, loc_off(loc), 0);
    int rc = 0;
    if (phys < 0) {
        log_seg_name(segno, name);
        rc = err_set(LOG_REMOVED, "segment %s offset %u: the record was removed by scavenging",
                     name, loc_off(loc));
    } else if (s->nruns && phys >= SEG_HEADER_SIZE && (uint64_t)phys + n > log_seg_run_end(s, (uint64_t)phys)) {
        log_seg_name(segno, name);
        rc = err_set(STELE_ECORRUPT,
                     "segment %s offset %u: a read of %zu bytes runs past the records scavenging "
                     "kept there",
                     name, loc_off(loc), n);
    } else if ((rc = os_read_full(s->fd, b, n, (uint64_t)phys)) != 0) {
        log_seg_name(segno, name);
        if (rc == -ENODATA)
            rc = err_set(STELE_ECORRUPT, "segment %s offset %u: read past the end of the file",
                         name, loc_off(loc));
        else
            rc = err_set(STELE_EIO, "read segment %s offset %u: %s", name, loc_off(loc),
                         strerror(-rc));
    }
    log_seg_put(s);
    return rc;
}

/* ------------------------------------------------- scavenged segments */

log_seg *log_seg_get(logf *lg, uint32_t segno)
{
    for (;;) {
        log_seg *s = atomic_load(&lg->segs[segno]);
        if (!s)
            return NULL;
        atomic_fetch_add(&s->refs, 1);
        if (atomic_load(&lg->segs[segno]) == s)
            return s;
        log_seg_put(s); /* replaced meanwhile: take the new one */
    }
}

static void seg_close_once(log_seg *s)
{
    if (!atomic_exchange(&s->closed, 1))
        os_io->close(s->fd);
}

void log_seg_put(log_seg *s)
{
    if (atomic_fetch_sub(&s->refs, 1) == 1 && atomic_load(&s->retired))
        seg_close_once(s);
}

void log_seg_replace(logf *lg, uint32_t segno, log_seg *fresh)
{
    if (segno < atomic_load(&lg->first_scavenged))
        atomic_store(&lg->first_scavenged, segno); /* one scavenger at a time */
    log_seg *old = atomic_exchange(&lg->segs[segno], fresh);
    pthread_mutex_lock(&lg->retire_mu);
    old->retired_next = lg->retired;
    lg->retired = old;
    pthread_mutex_unlock(&lg->retire_mu);
    atomic_store(&old->retired, 1);
    if (atomic_load(&old->refs) == 0)
        seg_close_once(old);
}

int log_seg_scavenged(logf *lg, uint32_t segno)
{
    if (segno < lg->first_seg || segno >= atomic_load(&lg->nsegs))
        return 0;
    log_seg *s = log_seg_get(lg, segno);
    int yes = s && s->nruns > 0;
    if (s)
        log_seg_put(s);
    return yes;
}

/* File bytes of run i. */
static uint64_t run_len(const log_seg *s, uint32_t i)
{
    uint64_t end = i + 1 < s->nruns ? s->runs[i + 1].new_off : s->rec_end;
    return end - s->runs[i].new_off;
}

int64_t log_seg_phys(const log_seg *s, uint64_t off, int at_or_after)
{
    if (!s->nruns)
        return (int64_t)off;
    if (off < SEG_HEADER_SIZE)
        return at_or_after ? (int64_t)s->runs[0].new_off : (int64_t)off;
    /* The last run starting at or before `off`. */
    uint32_t lo = 0, hi = s->nruns;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->runs[mid].old_off <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return at_or_after ? (int64_t)s->runs[0].new_off : -1;
    uint32_t i = lo - 1;
    uint64_t d = off - s->runs[i].old_off;
    if (d < run_len(s, i))
        return (int64_t)(s->runs[i].new_off + d);
    if (!at_or_after)
        return -1;
    return (int64_t)(i + 1 < s->nruns ? s->runs[i + 1].new_off : s->rec_end);
}

/* The run holding file offset `phys` (>= the header). */
static uint32_t run_of_phys(const log_seg *s, uint64_t phys)
{
    uint32_t lo = 0, hi = s->nruns;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->runs[mid].new_off <= phys)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? lo - 1 : 0;
}

uint64_t log_seg_orig(const log_seg *s, uint64_t phys)
{
    if (!s->nruns || phys < SEG_HEADER_SIZE)
        return phys;
    uint32_t i = run_of_phys(s, phys);
    return s->runs[i].old_off + (phys - s->runs[i].new_off);
}

uint64_t log_seg_run_end(const log_seg *s, uint64_t phys)
{
    if (!s->nruns)
        return s->size;
    uint32_t i = run_of_phys(s, phys);
    return i + 1 < s->nruns ? s->runs[i + 1].new_off : s->rec_end;
}

int log_seg_load_table(log_seg *s, uint32_t segno, const seg_info *si)
{
    char name[32];
    log_seg_name(segno, name);
    uint64_t bytes = (uint64_t)si->nruns * SEG_RUN_SIZE;
    if (si->table_off + bytes > s->size)
        return err_set(STELE_ECORRUPT, "segment %s offset %llu: relocation table runs past the end "
                       "of the file", name, (unsigned long long)si->table_off);
    uint8_t *raw = malloc(bytes);
    log_run *runs = calloc(si->nruns, sizeof *runs);
    if (!raw || !runs) {
        free(raw);
        free(runs);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    int rc = os_read_full(s->fd, raw, bytes, si->table_off);
    if (rc) {
        rc = err_set(STELE_EIO, "read segment %s offset %llu: %s", name,
                     (unsigned long long)si->table_off, strerror(-rc));
    } else if (crc32c(0, raw, bytes) != si->table_crc) {
        rc = err_set(STELE_ECORRUPT, "segment %s offset %llu: relocation table checksum mismatch",
                     name, (unsigned long long)si->table_off);
    }
    /* Runs are sorted both ways, do not overlap in the original file, and
     * pack the new file's records from the header to the table. */
    for (uint32_t i = 0; i < si->nruns && rc == 0; i++) {
        runs[i].old_off = ld32(raw + i * SEG_RUN_SIZE);
        runs[i].new_off = ld32(raw + i * SEG_RUN_SIZE + 4);
        uint64_t next_new = i + 1 < si->nruns ? ld32(raw + (i + 1) * SEG_RUN_SIZE + 4)
                                              : si->table_off;
        int ok = runs[i].old_off >= SEG_HEADER_SIZE && runs[i].old_off % REC_ALIGN == 0 &&
                 runs[i].new_off % REC_ALIGN == 0 && next_new > runs[i].new_off &&
                 (i > 0 || runs[i].new_off == SEG_HEADER_SIZE) &&
                 (uint64_t)runs[i].old_off + (next_new - runs[i].new_off) <= UINT32_MAX;
        if (ok && i > 0)
            ok = runs[i].old_off >= (uint64_t)runs[i - 1].old_off +
                                        (runs[i].new_off - runs[i - 1].new_off);
        if (!ok)
            rc = err_set(STELE_ECORRUPT, "segment %s offset %llu: relocation table entry %u is "
                         "malformed", name, (unsigned long long)si->table_off, i);
    }
    free(raw);
    if (rc) {
        free(runs);
        return rc;
    }
    s->runs = runs;
    s->nruns = si->nruns;
    s->rec_end = si->table_off;
    return 0;
}

void log_close(logf *lg)
{
    if (!lg)
        return;
    if (lg->prealloc_started) {
        pthread_mutex_lock(&lg->prealloc_mu);
        lg->prealloc_stop = 1;
        pthread_cond_broadcast(&lg->prealloc_cv);
        pthread_mutex_unlock(&lg->prealloc_mu);
        pthread_join(lg->prealloc_thread, NULL);
    }
    uint32_t n = atomic_load(&lg->nsegs);
    for (uint32_t i = lg->first_seg; i < n; i++)
        if (lg->segs[i])
            seg_free_all(lg->segs[i]);
    for (log_seg *s = lg->retired, *nx; s; s = nx) {
        nx = s->retired_next;
        seg_free_all(s);
    }
    pthread_mutex_destroy(&lg->retire_mu);
    pthread_mutex_destroy(&lg->prealloc_mu);
    pthread_cond_destroy(&lg->prealloc_cv);
    free(lg);
}

/* ------------------------------------------------------------ iterator */

void log_iter_init(log_iter *it, logf *lg, uint64_t loc, uint64_t end)
{
    memset(it, 0, sizeof *it);
    it->lg = lg;
    it->loc = loc;
    it->end = end;
}

void log_iter_done(log_iter *it)
{
    if (it->seg)
        log_seg_put(it->seg);
    it->seg = NULL;
    /* Holders are the iterator's own (never the caller's chunk), and never
     * span segments. */
    if (it->hold) {
        log_holders_free(it->hold);
        free(it->hold);
        it->hold = NULL;
    }
}

void log_iter_free(log_iter *it)
{
    log_iter_done(it);
    buf_free(&it->chunk);
}

/* ------------------------------------------------- shared names (kind 9) */

void log_holders_free(log_holders *h)
{
    for (int i = 0; i < 2; i++) {
        buf_free(&h->b[i]);
        h->loc[i] = 0;
    }
}

int log_share_fetch(logf *lg, uint64_t loc, rec *r, log_holders *h)
{
    static const unsigned fields[2] = {REC_FAR_STREAM, REC_FAR_TYPE};
    for (int i = 0; i < 2 && r->far; i++) {
        uint32_t back = i == 0 ? r->stream_back : r->type_back;
        if (!(r->far & fields[i]))
            continue;
        char name[32];
        const char *why = "its holder is before the segment's first record";
        int rc = 0;
        uint64_t hl = loc - back;
        if (loc_off(loc) < SEG_HEADER_SIZE + (uint64_t)back)
            goto bad;
        if (h->loc[i] != hl) {
            /* Its length, then the record (it ends at or before r). */
            uint8_t head[4];
            h->loc[i] = 0;
            if ((rc = log_read(lg, hl, head, sizeof head)))
                goto fail;
            uint32_t len = ld32(head);
            why = "its holder's length is bad";
            if (len < REC_MIN_SIZE || len > back || len % REC_ALIGN)
                goto bad;
            h->b[i].len = 0;
            if ((rc = buf_reserve(&h->b[i], len)) || (rc = log_read(lg, hl, h->b[i].p, len)))
                goto fail;
            rec_status st = rec_decode(h->b[i].p, len, &h->r[i], &why);
            if (st != REC_OK && st != REC_FAR)
                goto bad;
            h->loc[i] = hl;
        }
        if (rec_share_apply(r, fields[i], &h->r[i], &why))
            goto bad;
        continue;
    bad:
        log_seg_name(loc_seg(loc), name);
        return err_set(STELE_ECORRUPT, "segment %s offset %u: %s", name, loc_off(loc), why);
    fail:
        /* A holder removed or unreadable: whole commits are scavenged, so
         * its record's commit is damaged. */
        if (rc == LOG_REMOVED) {
            log_seg_name(loc_seg(loc), name);
            return err_set(STELE_ECORRUPT, "segment %s offset %u: the record holding its names "
                           "was removed", name, loc_off(loc));
        }
        return rc;
    }
    return 0;
}

/* Make file bytes [ploc, ploc+need) of the pinned segment available in the
 * chunk (as many as the segment has, up to a chunk). Returns available
 * bytes at ploc, or < 0. */
static int64_t iter_fill(log_iter *it, uint64_t need)
{
    log_seg *s = it->seg;
    uint64_t limit = s->nruns ? s->rec_end : s->size;
    uint64_t off = it->ploc;
    if (off >= limit)
        return 0;
    uint64_t at = loc_make(it->segno, (uint32_t)off);
    if (it->chunk.len && loc_seg(it->chunk_loc) == it->segno && at >= it->chunk_loc &&
        at + need <= it->chunk_loc + it->chunk.len)
        return (int64_t)(it->chunk_loc + it->chunk.len - at);
    uint64_t want = need > ITER_CHUNK ? need : ITER_CHUNK;
    /* Nothing past `end` is read: a read near the tail of a preallocated
     * segment would otherwise copy up to a chunk of zeros for a few bytes
     * of records (every live subscriber's read). `end` is a location and
     * `off` a file offset: the same in a segment never scavenged, the only
     * kind `end` can fall inside (the tail). */
    if (!s->nruns && loc_seg(it->end) == it->segno && loc_off(it->end) > off) {
        uint64_t left = loc_off(it->end) - off;
        if (want > left)
            want = left > need ? left : need;
    }
    if (want > limit - off)
        want = limit - off;
    it->chunk.len = 0;
    if (buf_reserve(&it->chunk, want))
        return STELE_ENOMEM;
    int rc = os_read_full(s->fd, it->chunk.p, want, off);
    if (rc) {
        char name[32];
        log_seg_name(it->segno, name);
        return err_set(STELE_EIO, "read segment %s offset %llu: %s", name,
                       (unsigned long long)off, strerror(-rc));
    }
    it->chunk.len = want;
    it->chunk_loc = at;
    return (int64_t)want;
}

int log_iter_next(log_iter *it, rec *r, uint64_t *at, int *short_tail)
{
    *short_tail = 0;
again:
    it->raw = NULL;
    if (it->loc >= it->end)
        return LOG_ITER_END;
    uint32_t segno = loc_seg(it->loc);
    if (segno >= atomic_load_explicit(&it->lg->nsegs, memory_order_acquire))
        return LOG_ITER_END;
    if (!it->seg || it->segno != segno) {
        /* Entering a segment: pin it and find where to start in its file. */
        log_iter_done(it);
        if (!(it->seg = log_seg_get(it->lg, segno)))
            return LOG_ITER_END;
        it->segno = segno;
        it->chunk.len = 0;
        it->ploc = (uint64_t)log_seg_phys(it->seg, loc_off(it->loc), 1);
    }
    if (loc_off(it->loc) == 0)
        it->loc += SEG_HEADER_SIZE;
    if (it->ploc < SEG_HEADER_SIZE)
        it->ploc = SEG_HEADER_SIZE;
    log_seg *s = it->seg;
    /* The original location of the next record: past `end`, stop. */
    uint64_t vat = loc_make(segno, (uint32_t)log_seg_orig(s, it->ploc));
    *at = vat;
    if (vat >= it->end || (s->nruns && it->ploc >= s->rec_end))
        return LOG_ITER_END;
    int64_t avail = iter_fill(it, REC_HEADER_SIZE);
    if (avail < 0)
        return (int)avail;
    uint64_t pat = loc_make(segno, (uint32_t)it->ploc);
    const uint8_t *p = it->chunk.p + (pat - it->chunk_loc);
    if (avail >= 4) {
        uint32_t len = ld32(p);
        if (len > (uint64_t)avail) {
            avail = iter_fill(it, len);
            if (avail < 0)
                return (int)avail;
            p = it->chunk.p + (pat - it->chunk_loc);
        }
    }
    const char *why = NULL;
    /* A kind 9 record's holders, earlier in its commit, are in the chunk
     * unless the chunk starts inside the commit (a commit is contiguous in
     * the file, scavenged or not). */
    rec_status st = rec_decode_in(it->chunk.p, (uint64_t)(p - it->chunk.p), (uint64_t)avail, r,
                                  &why);
    if (st == REC_FAR) {
        if (!it->hold && !(it->hold = calloc(1, sizeof *it->hold)))
            return err_set(STELE_ENOMEM, "out of memory");
        int rc = log_share_fetch(it->lg, vat, r, it->hold);
        if (rc) {
            *at = vat;
            return rc;
        }
        st = REC_OK;
    }
    if (st == REC_ZERO)
        return LOG_ITER_END;
    /* A chain record torn in its rewrite (record.h): no event in it, and
     * only the chain's walks (it->chain) judge it, so a reader racing the
     * writer's rewrite, or after a crash, steps over it. */
    if (st == REC_BAD && !it->chain && rec_chain_torn(p, (uint64_t)avail)) {
        it->loc = vat + CHAIN_REC_SIZE;
        it->ploc += CHAIN_REC_SIZE;
        goto again;
    }
    /* Messages name the offset in the file (for a scavenged segment, also
     * the original one the index uses). */
    char name[48];
    if (st != REC_OK) {
        log_seg_name(segno, name);
        if (s->nruns)
            snprintf(name + strlen(name), sizeof name - strlen(name), " (scavenged)");
    }
    if (st == REC_SHORT) {
        *short_tail = 1;
        return err_set(STELE_ECORRUPT, "segment %s offset %llu: record runs past the end", name,
                       (unsigned long long)it->ploc);
    }
    if (st == REC_BAD)
        return err_set(STELE_ECORRUPT, "segment %s offset %llu: %s", name,
                       (unsigned long long)it->ploc, why);
    if (r->kind == REC_CHAIN && !it->chain) {
        it->loc = vat + r->len;
        it->ploc += r->len;
        goto again;
    }
    it->raw = p;
    if (r->kind == REC_SEAL) {
        it->loc = loc_make(segno + 1, 0);
    } else {
        it->loc = vat + r->len;
        it->ploc += r->len;
    }
    return LOG_ITER_REC;
}

/* After a bad record at `bad` in the last segment: is there a valid event
 * record later in the segment (damage), or only the rest of a torn write
 * (then the tail is cut)? Returns 1 if a later valid record exists. */
int log_valid_record_after(logf *lg, uint64_t bad, uint64_t next_pos)
{
    log_seg *s = lg->segs[loc_seg(bad)];
    uint64_t off = loc_off(bad) + REC_ALIGN;
    buf b = {0};
    int found = 0;
    const uint64_t CH = 4u << 20;
    while (off + REC_MIN_SIZE <= s->size && !found) {
        uint64_t n = s->size - off < CH ? s->size - off : CH;
        b.len = 0;
        if (buf_reserve(&b, n) || os_read_full(s->fd, b.p, n, off))
            break;
        int nonzero = 0;
        for (uint64_t i = 0; i + REC_MIN_SIZE <= n; i += REC_ALIGN) {
            uint32_t len = ld32(b.p + i);
            if (len)
                nonzero = 1;
            /* An event record of either kind (1 or compact 8). */
            uint8_t kind;
            uint64_t pos;
            int64_t created;
            if (rec_peek(b.p + i, n - i, &kind, &pos, &created) || kind != REC_EVENT)
                continue;
            if (pos < next_pos || pos - next_pos > (1ull << 32))
                continue;
            /* A record cannot run past the segment: no buffer for one that
             * claims to (a torn length could ask for 4 GiB). */
            if (len > s->size - (off + i))
                continue;
            uint8_t *rp = b.p + i;
            uint8_t *big = NULL;
            if (i + len > n) {
                big = malloc(len);
                if (!big || os_read_full(s->fd, big, len, off + i)) {
                    free(big);
                    continue;
                }
                rp = big;
            }
            rec r;
            const char *why;
            rec_status st = rec_decode(rp, len, &r, &why);
            if (st == REC_OK || st == REC_FAR) /* valid; its names are not needed */
                found = 1;
            free(big);
            if (found)
                break;
        }
        if (!nonzero)
            break; /* a whole chunk of zeros: past any torn write */
        if (off + n >= s->size)
            break; /* the chunk ran to the end of the file */
        /* The next chunk repeats the last headers this one could not
         * peek whole. */
        off += n - REC_PEEK_SIZE + REC_ALIGN;
    }
    buf_free(&b);
    return found;
}
