/*
 * log_rewrite.c - writing a scavenged segment: a sealed segment's kept
 * records, packed, with a relocation table, swapped in place of the
 * original without stopping readers or the writer.
 *
 * File layout (record.h and docs/file-format.md have the bytes):
 *
 *   +----------------------+ 0
 *   | header, version 2    |  same segment number, first position and
 *   |                      |  creation time as the original; where the
 *   |                      |  table is, its size and CRC
 *   +----------------------+ 64
 *   | kept records, in     |  byte for byte as written (CRCs unchanged),
 *   | their original order |  the seal record last
 *   +----------------------+ table offset
 *   | relocation table     |  one (original offset, new offset) pair per
 *   |                      |  run of records that were contiguous before
 *   +----------------------+ end of file (no zero padding)
 *
 * The index keeps the original locations; log.c translates them through
 * the table. A segment scavenged again is read through its table, so the
 * records come with their original locations and the new table maps those:
 * tables never chain.
 *
 * Swapping is crash-safe by construction: the new file is written under a
 * temporary name (NNNNNNNN.seg.scav), fdatasynced, renamed over the
 * original, and the directory fsynced. After a crash at any point the
 * segment's name holds either the old or the new file, complete, and both
 * give every kept record at the same original location; a leftover
 * temporary file is removed at open (log_open). In memory the new file
 * replaces the old in `segs` (log_seg_replace); readers that pinned the old
 * file finish with it, and its descriptor is closed when the last of them
 * lets go.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "log/log_rewrite.h"
#include "os/os.h"

#define FLUSH_AT (1u << 20)

struct log_rewrite {
    logf *lg;
    uint32_t segno;
    seg_info si;        /* header of the segment being replaced */
    uint64_t old_size;  /* its file size */
    char tmp[4200], path[4200];
    int fd;
    buf out;            /* records not yet written */
    uint64_t out_off;   /* file offset of out.p[0] */
    uint64_t off;       /* file offset of the next record */
    log_run *runs;
    uint32_t nruns, cap;
    uint64_t old_end;   /* original offset just past the last kept record */
};

static int io_fail(log_rewrite *w, int neg, const char *what)
{
    int e = -neg;
    return err_set(e == ENOSPC ? STELE_ENOSPC : STELE_EIO, "scavenge: %s %s: %s", what, w->tmp,
                   strerror(e));
}

int log_rewrite_begin(logf *lg, uint32_t segno, log_rewrite **out)
{
    log_rewrite *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(STELE_ENOMEM, "out of memory");
    w->lg = lg;
    w->segno = segno;
    w->fd = -1;
    char name[32];
    log_seg_name(segno, name);
    snprintf(w->path, sizeof w->path, "%s/%s", lg->dir, name);
    snprintf(w->tmp, sizeof w->tmp, "%s/%s.scav", lg->dir, name);
    log_seg *s = log_seg_get(lg, segno);
    int rc = 0;
    uint8_t hdr[SEG_HEADER_SIZE];
    if (!s) {
        rc = err_set(STELE_ECORRUPT, "segment %s is missing", name);
    } else {
        w->old_size = s->size;
        int r = os_read_full(s->fd, hdr, sizeof hdr, 0);
        const char *why = r ? "cannot read the header" : seg_header_read(hdr, &w->si);
        if (why)
            rc = err_set(STELE_ECORRUPT, "segment %s offset 0: %s", name, why);
        log_seg_put(s);
    }
    if (rc == 0) {
        w->fd = os_io->open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (w->fd < 0) {
            rc = io_fail(w, w->fd, "create");
            w->fd = -1;
        }
    }
    if (rc) {
        log_rewrite_abort(w);
        return rc;
    }
    w->off = w->out_off = SEG_HEADER_SIZE;
    *out = w;
    return 0;
}

static int flush(log_rewrite *w)
{
    if (!w->out.len)
        return 0;
    int rc = os_write_full(w->fd, w->out.p, w->out.len, w->out_off);
    if (rc)
        return io_fail(w, rc, "write");
    w->out_off += w->out.len;
    w->out.len = 0;
    return 0;
}

int log_rewrite_add(log_rewrite *w, uint64_t loc, const uint8_t *raw, uint32_t len)
{
    uint32_t old = loc_off(loc);
    if (w->off + len > UINT32_MAX)
        return err_set(STELE_EINTERNAL, "scavenge: segment too large");
    if (!w->nruns || old != w->old_end) {
        if (w->nruns == w->cap) {
            uint32_t cap = w->cap ? w->cap * 2 : 64;
            log_run *nr = realloc(w->runs, cap * sizeof *nr);
            if (!nr)
                return err_set(STELE_ENOMEM, "out of memory");
            w->runs = nr;
            w->cap = cap;
        }
        w->runs[w->nruns].old_off = old;
        w->runs[w->nruns].new_off = (uint32_t)w->off;
        w->nruns++;
    }
    w->old_end = (uint64_t)old + len;
    int rc = buf_append(&w->out, raw, len);
    if (rc)
        return rc;
    w->off += len;
    return w->out.len >= FLUSH_AT ? flush(w) : 0;
}

int log_rewrite_commit(log_rewrite *w, uint64_t *old_size, uint64_t *new_size)
{
    if (!w->nruns)
        return err_set(STELE_EINTERNAL, "scavenge: a rewritten segment keeps at least its seal");
    int rc = flush(w);
    /* The table, then the header that points at it. */
    uint64_t tbytes = (uint64_t)w->nruns * SEG_RUN_SIZE;
    uint8_t *t = rc ? NULL : malloc(tbytes);
    if (!rc && !t)
        rc = err_set(STELE_ENOMEM, "out of memory");
    if (rc == 0) {
        for (uint32_t i = 0; i < w->nruns; i++) {
            st32(t + i * SEG_RUN_SIZE, w->runs[i].old_off);
            st32(t + i * SEG_RUN_SIZE + 4, w->runs[i].new_off);
        }
        seg_info si = w->si;
        si.version = SEG_VERSION_SCAVENGED;
        si.table_off = w->off;
        si.nruns = w->nruns;
        si.table_crc = crc32c(0, t, tbytes);
        si.scavenged_us = time_now_us();
        uint8_t hdr[SEG_HEADER_SIZE];
        seg_header_encode_scavenged(hdr, &si);
        int r = os_write_full(w->fd, t, tbytes, w->off);
        if (r == 0)
            r = os_write_full(w->fd, hdr, sizeof hdr, 0);
        if (r)
            rc = io_fail(w, r, "write");
        else if ((r = os_io->fdatasync(w->fd)) != 0)
            rc = io_fail(w, r, "fdatasync");
        w->si = si;
    }
    free(t);
    /* The new segment, built before the rename so that nothing can fail
     * between the rename and the swap in memory. */
    log_seg *fresh = NULL;
    if (rc == 0) {
        fresh = calloc(1, sizeof *fresh);
        if (!fresh)
            rc = err_set(STELE_ENOMEM, "out of memory");
    }
    if (rc == 0) {
        fresh->fd = w->fd;
        fresh->size = w->off + tbytes;
        fresh->first_position = w->si.first_position;
        fresh->runs = w->runs;
        fresh->nruns = w->nruns;
        fresh->rec_end = w->off;
        int r = os_io->rename(w->tmp, w->path);
        if (r) {
            rc = io_fail(w, r, "rename");
            free(fresh); /* runs and fd are still w's */
            fresh = NULL;
        }
    }
    if (rc) {
        log_rewrite_abort(w);
        return rc;
    }
    /* In place on disk: from here on, the new file is the segment. */
    w->runs = NULL;
    w->fd = -1;
    log_seg_replace(w->lg, w->segno, fresh);
    *old_size = w->old_size;
    *new_size = fresh->size;
    int r = os_fsync_dir(w->lg->dir);
    if (r) {
        /* Both files are complete and equivalent: whichever name survives
         * a crash is right. Report the failure; the store is intact. */
        rc = err_set(STELE_EIO, "scavenge: fsync directory %s: %s", w->lg->dir, strerror(-r));
    }
    buf_free(&w->out);
    free(w);
    return rc;
}

void log_rewrite_abort(log_rewrite *w)
{
    if (!w)
        return;
    if (w->fd >= 0) {
        os_io->close(w->fd);
        os_io->unlink(w->tmp);
    }
    buf_free(&w->out);
    free(w->runs);
    free(w);
}
