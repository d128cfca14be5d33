/*
 * log.h - the segmented log of the local engine: segment files, reads at a
 * location, a forward record iterator, and segment creation (with a
 * preallocated, zero-filled spare made ahead of time by a helper thread).
 *
 * A location ("loc") names a byte in the log: segment number in the high 32
 * bits, offset inside the segment file in the low 32 bits. Segment files
 * are at most 4 GiB.
 */
#ifndef STELE_LOG_H
#define STELE_LOG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "log/record.h"
#include "util/util.h"

#define LOG_MAX_SEGS 65536u

static inline uint64_t loc_make(uint32_t seg, uint32_t off) { return ((uint64_t)seg << 32) | off; }
static inline uint32_t loc_seg(uint64_t loc) { return (uint32_t)(loc >> 32); }
static inline uint32_t loc_off(uint64_t loc) { return (uint32_t)loc; }

typedef struct log_seg {
    int fd;
    uint64_t size;           /* file size (preallocated) */
    uint64_t first_position; /* from the header */
} log_seg;

typedef struct logf {
    char dir[4096];          /* .../log */
    uint64_t seg_size;
    /* segs[i] for first_seg <= i < nsegs; readers load nsegs (acquire). */
    log_seg *segs[LOG_MAX_SEGS];
    uint32_t first_seg;
    _Atomic uint32_t nsegs;

    /* The helper thread that keeps one zero-filled spare segment ready. */
    pthread_t prealloc_thread;
    pthread_mutex_t prealloc_mu;
    pthread_cond_t prealloc_cv;
    int prealloc_started, prealloc_stop, spare_ready, spare_wanted;
    uint64_t spare_size;
} logf;

/* Open the log directory `dir`/log (created if `create`), open every
 * segment and check its header and the numbering. Does not look at records
 * (recovery does). */
int log_open(const char *dir, uint64_t seg_size, int create, logf **out);
void log_close(logf *lg);

/* Start the spare-segment helper thread (the writer's store only). */
int log_start_prealloc(logf *lg);

/* Create segment `segno` of at least `min_size` bytes (zero-filled,
 * durable, directory synced), using the spare if it fits. The caller writes
 * its header. */
int log_add_segment(logf *lg, uint32_t segno, uint64_t min_size);

/* Drop the last segment file (an empty segment torn at creation). */
int log_drop_last(logf *lg);

/* Read `n` bytes at `loc`. 0 or a STELE_E* code (message set). */
int log_read(logf *lg, uint64_t loc, void *buf, size_t n);

/* Segment file name for messages: "00000003.seg". */
void log_seg_name(uint32_t segno, char out[32]);

/*
 * Forward iterator over records. Reads the log in chunks. Stops at `end`
 * (a location; UINT64_MAX for "as far as there is data"). A seal record
 * moves it to the next segment.
 */
typedef struct log_iter {
    logf *lg;
    uint64_t loc;   /* next record */
    uint64_t end;
    buf chunk;      /* bytes of the current segment from chunk_loc */
    uint64_t chunk_loc;
} log_iter;

typedef enum log_iter_status {
    LOG_ITER_REC = 1,  /* *r and *at hold a record */
    LOG_ITER_END = 0,  /* reached `end`, or zeros/the end of the last segment */
} log_iter_status;

void log_iter_init(log_iter *it, logf *lg, uint64_t loc, uint64_t end);
/* Next record, LOG_ITER_END, or a negative STELE_E* code: ECORRUPT (message
 * names segment and offset; *at = its loc), EIO. A record that runs past
 * the end of data is reported as ECORRUPT with status in *short_tail = 1 so
 * recovery can tell a torn tail from damage. */
int log_iter_next(log_iter *it, rec *r, uint64_t *at, int *short_tail);
void log_iter_free(log_iter *it);

/* After a bad or short record at `bad` in the last segment: 1 if a valid
 * event record (position >= next_pos) follows it in the segment (damage),
 * 0 if only the rest of a torn write does (recovery cuts it). Recovery and
 * `stele check` decide with the same rule. */
int log_valid_record_after(logf *lg, uint64_t bad, uint64_t next_pos);

#endif
