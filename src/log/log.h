/*
 * log.h - the segmented log of the local engine: segment files, reads at a
 * location, a forward record iterator, and segment creation (with a
 * preallocated, zero-filled spare made ahead of time by a helper thread).
 *
 * A location ("loc") names a byte in the log: segment number in the high 32
 * bits, offset inside the segment file in the low 32 bits. Segment files
 * are at most 4 GiB.
 *
 * Locations are those of the segment as it was written. Scavenging
 * (log_rewrite.c) rewrites a sealed segment without some of its records;
 * the rewritten file carries a relocation table, and this layer translates
 * every location through it, so the index never changes: log_read of a
 * location whose record was removed is STELE_ENOTFOUND (LOG_REMOVED), an
 * iterator started anywhere gives the first kept record at or after it, and
 * the iterator reports records at their original locations.
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

/* One run of a scavenged segment's relocation table: records that were
 * contiguous at old_off in the original file are at new_off in this one. */
typedef struct log_run {
    uint32_t old_off;
    uint32_t new_off;
} log_run;

typedef struct log_seg {
    int fd;
    uint64_t size;           /* file size (preallocated) */
    uint64_t first_position; /* from the header */
    /* A scavenged segment (nruns > 0): records end at rec_end (where the
     * relocation table starts) and offsets are translated through runs. */
    uint32_t nruns;
    log_run *runs;
    uint64_t rec_end;
    /* Lifetime: readers pin the segment they read (log_seg_get/put); a
     * segment replaced by scavenging is retired and its fd closed by
     * whoever drops the last pin. See "Swapping a segment" in log.c. */
    _Atomic uint32_t refs;
    _Atomic int retired;
    _Atomic int closed;
    struct log_seg *retired_next;
} log_seg;

typedef struct logf {
    char dir[4096];          /* .../log */
    uint64_t seg_size;
    /* segs[i] for first_seg <= i < nsegs; readers load nsegs (acquire).
     * A sealed segment's pointer is replaced (atomically) by scavenging. */
    log_seg *_Atomic segs[LOG_MAX_SEGS];
    uint32_t first_seg;
    _Atomic uint32_t nsegs;
    /* Segments replaced by scavenging, freed at log_close. */
    pthread_mutex_t retire_mu;
    log_seg *retired;
    /* The lowest scavenged segment, UINT32_MAX if none: records after it
     * may miss earlier ones that scavenging removed (log_scavenged_upto). */
    _Atomic uint32_t first_scavenged;

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
 * its header. On failure (STELE_ENOSPC when the disk is full) no file of
 * the attempt is left. */
int log_add_segment(logf *lg, uint32_t segno, uint64_t min_size);

/* Drop the last segment file (an empty segment torn at creation). */
int log_drop_last(logf *lg);

/* Read `n` bytes at `loc`. 0 or a STELE_E* code (message set); LOG_REMOVED
 * if scavenging removed the record at `loc`. */
int log_read(logf *lg, uint64_t loc, void *buf, size_t n);

/* The kind, position and created time of the record at `loc` (rec_peek:
 * header only, no CRC), reading no further than the record. 0, a code
 * from log_read, or STELE_ECORRUPT when the bytes are not a record. */
int log_peek(logf *lg, uint64_t loc, uint8_t *kind, uint64_t *position, int64_t *created_us);
#define LOG_REMOVED STELE_ENOTFOUND

/* Pin segment `segno` (NULL if there is none) so that it stays usable
 * while scavenging replaces it; unpin with log_seg_put. */
log_seg *log_seg_get(logf *lg, uint32_t segno);
void log_seg_put(log_seg *s);
/* Whether segment `segno` has been rewritten by scavenging. */
int log_seg_scavenged(logf *lg, uint32_t segno);
/* Whether any segment up to `segno` (included) has been: then records in
 * it and after it may follow records that scavenging removed (a metadata
 * version or a snapshot's events may be missing before them). */
static inline int log_scavenged_upto(logf *lg, uint32_t segno)
{
    return atomic_load(&lg->first_scavenged) <= segno;
}
/* Offset translation in a pinned segment (identity for a plain one). The
 * file offset of the record at original offset `off`, or -1 if it was
 * removed; with `at_or_after`, of the first kept record at or after it
 * (rec_end if none). */
int64_t log_seg_phys(const log_seg *s, uint64_t off, int at_or_after);
/* The original offset of the record at file offset `phys`. */
uint64_t log_seg_orig(const log_seg *s, uint64_t phys);
/* The file offset where the run holding file offset `phys` ends. */
uint64_t log_seg_run_end(const log_seg *s, uint64_t phys);
/* Install `fresh` as segment `segno` (scavenging; log_rewrite.c) and
 * retire the one it replaces. */
void log_seg_replace(logf *lg, uint32_t segno, log_seg *fresh);
/* Load the relocation table of a version 2 segment into s (log_open and
 * log_rewrite.c). 0 or ECORRUPT naming the segment. */
int log_seg_load_table(log_seg *s, uint32_t segno, const seg_info *si);

/* Segment file name for messages: "00000003.seg". */
void log_seg_name(uint32_t segno, char out[32]);

/*
 * Forward iterator over records. Reads the log in chunks. Stops at `end`
 * (a location; UINT64_MAX for "as far as there is data"). A seal record
 * moves it to the next segment.
 */
/* Holders of kind 9 records read from the log by log_share_fetch(): the
 * last one read for each field (stream, type), kept so that the records of
 * one commit read one after another cost one read per holder. Zero-
 * initialise; log_holders_free() at the end. */
typedef struct log_holders {
    buf b[2];
    uint64_t loc[2]; /* original location of b[i]'s record; 0: none */
    rec r[2];
} log_holders;
void log_holders_free(log_holders *h);
/* Resolve the far fields of r (decoded as REC_FAR from the record at
 * original location loc) by reading their holders: 0, or ECORRUPT naming
 * the record when a holder is missing or cannot hold the field. r's stream
 * and type then point into h, valid until the next call with h. */
int log_share_fetch(logf *lg, uint64_t loc, rec *r, log_holders *h);

typedef struct log_iter {
    logf *lg;
    uint64_t loc;   /* original location just past the last record returned */
    uint64_t end;
    buf chunk;      /* bytes of the current segment file from chunk_loc */
    uint64_t chunk_loc;
    log_seg *seg;   /* the pinned segment being read (NULL before the first) */
    uint32_t segno;
    uint64_t ploc;  /* file offset of the next record in seg */
    const uint8_t *raw; /* the last record's bytes (valid until the next call) */
    int chain;      /* 1: return chain records (REC_CHAIN) too; 0 (the
                     * default): skip them, as if they were not there,
                     * also one torn in its rewrite (rec_chain_torn) */
    log_holders *hold; /* kind 9 holders before the chunk (made when needed) */
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
/* Unpin the segment and free the chunk; log_iter_done only unpins (for a
 * caller that owns the chunk buffer). */
void log_iter_free(log_iter *it);
void log_iter_done(log_iter *it);

/* After a bad or short record at `bad` in the last segment: 1 if a valid
 * event record (position >= next_pos) follows it in the segment (damage),
 * 0 if only the rest of a torn write does (recovery cuts it). Recovery and
 * `stele check` decide with the same rule. */
int log_valid_record_after(logf *lg, uint64_t bad, uint64_t next_pos);

#endif
