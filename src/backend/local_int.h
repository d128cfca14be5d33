/*
 * local_int.h - what the files of the local engine share: the engine's
 * state (struct local), the writer's request, and the functions one file
 * of the engine calls in another. Nothing outside src/backend includes it.
 *
 *   local.c          the writer (planning, group commit), appends, deletes,
 *                    open and close
 *   local_read.c     reads: streams, $all, heads, stats
 *   local_recover.c  recovery at open, the lock-file marker, verification
 *   local_check.c    `stele check` (a closed store)
 *   local_scavenge.c scavenging: rewriting sealed segments without the
 *                    events no read can return
 *   local_query.c    queries through the secondary indexes, temporal
 *                    stream reads
 *   local_multi.c    multi-stream commits (planning, encoding, recovery,
 *                    scavenging decisions), DCB conditions and reads
 */
#ifndef STELE_LOCAL_INT_H
#define STELE_LOCAL_INT_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "backend/backend.h"
#include "index/index.h"
#include "log/log.h"
#include "backend/page.h"
#include "backend/local_chain.h"
#include "util/util.h"

#define GROUP_MAX_BYTES (32u << 20)
#define RECOVERY_TXN_EVENTS 65536u

enum { OP_APPEND, OP_DELETE, OP_TOMBSTONE, OP_METADATA, OP_SNAPSHOT, OP_MULTI };

struct mstream;

/* How a finished group's waiters are woken (local_wake.c). */
enum { WAKE_BULK, WAKE_RELAY };

typedef struct wreq {
    int op;
    const append_args *a;  /* OP_APPEND */
    const char *stream;    /* OP_DELETE / OP_TOMBSTONE */
    size_t stream_len;
    int64_t expected;
    uint64_t bytes;        /* record bytes if accepted */
    const stele_stream_metadata *md; /* OP_METADATA (expected version in `expected`) */
    const stele_snapshot_in *snap;   /* OP_SNAPSHOT */
    const multi_args *m;             /* OP_MULTI */
    stele_append_result *ps;         /* OP_MULTI: per-stream results */
    stele_multi_result mres;         /* OP_MULTI: the request's result */
    struct mstream *ms;              /* OP_MULTI: writer scratch per stream */
    struct wreq *group;              /* the first request of its group */
    stele_append_multi_cb mdone_fn;  /* OP_MULTI async: called when done */

    /* results */
    int rc;
    stele_append_result res;
    uint64_t current;
    char msg[512];

    /* writer scratch */
    int accepted;
    idx_stream st;         /* stream state after this request */
    int new_stream;
    /* OP_DELETE / OP_TOMBSTONE: its `$deletes` event (local_removes.c);
     * rm_buf holds the data then the removes block, freed by the caller */
    uint8_t *rm_buf;
    size_t rm_data_len, rm_meta_len;
    uint64_t rm_sid, rm_rev, rm_pos;

    _Atomic uint32_t done;  /* a waiter's flag: 1 once its result is final */
    append_done_fn done_fn; /* async: called instead of the futex wake */
    void *done_ctx;
    struct wreq *next;
} wreq;

#define TAIL_GROUPS 256

typedef struct local {
    backend base;
    char dir[4096];
    stele_options opts;
    logf *lg;
    idx *ix;
    int lockfd;

    /* the queue */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    wreq *qhead, *qtail;
    int stopping;
    pthread_t writer;
    int writer_started;

    /* writer-owned state */
    idx_ckpt ck;           /* what the next checkpoint will say */
    int64_t last_created;
    buf gbuf;

    /* Readers take visibility from their LMDB snapshot (snapshot()); this
     * is only the event count for stats. */
    _Atomic uint64_t pub_next_pos;
    _Atomic int fault;
    char fault_msg[512];
    /* Read-only for lack of space (local.c "Running out of space"): not
     * sticky; the message under nospace_mu; nospace_tried_ms is writer's. */
    _Atomic int nospace;
    char nospace_msg[512];
    pthread_mutex_t nospace_mu;
    int64_t nospace_tried_ms;
    pool *pl;              /* read buffers, shared with live pages */
    _Atomic uint64_t n_appends, n_groups;
    int wake_mode;         /* WAKE_BULK, WAKE_RELAY (wake_config) */
    _Atomic uint32_t done_gen;   /* bulk, relay: the waiters' futex word */
    _Atomic uint32_t wake_relay; /* relay: 1 while the bulk wake is owed */
    uint32_t wake_relay_n;       /* relay: sleepers the writer wakes */

    /* Commit notification (subscriptions): commit_gen is bumped after each
     * group that committed something, then sleepers are woken (futex) and
     * every watch eventfd is written. */
    _Atomic uint32_t commit_gen;
    _Atomic uint32_t commit_sleepers;
    pthread_mutex_t watch_mu;
    int watch_fds[64];
    unsigned nwatch;

    /* Where the latest groups start: (first position, location) of each,
     * oldest first, all in the segment being written (emptied when a new
     * one starts). A forward read of $all from a recent position starts
     * its scan there instead of at the sparse position index's entry (up
     * to IDX_POS_STRIDE bytes earlier): live subscribers read only what is
     * new. */
    pthread_mutex_t tail_mu;
    struct tail_group {
        uint64_t position, loc;
    } tail[TAIL_GROUPS];
    unsigned tail_n, tail_first; /* entries, index of the oldest */

    /* scavenging (local_scavenge.c) */
    pthread_mutex_t scav_mu;   /* one scavenge at a time */
    /* Record bytes scavenging removed that the checkpoint's log_bytes
     * still counts; the writer subtracts them at its next commit. */
    _Atomic uint64_t scav_unaccounted;

    /* the hash chain (local_chain.c) */
    chain_state chain;

    /* The syncer (local.c, "Overlap"): runs a large group's fdatasync while
     * the writer indexes and hashes the group. Under smu; the writer waits
     * for sync_busy to fall back to 0. */
    pthread_t syncer;
    int syncer_started;
    pthread_mutex_t smu;
    pthread_cond_t scv_go, scv_done;
    int sync_fd, sync_busy, sync_rc, sync_stop;
    uint64_t sync_ns;      /* the last fdatasync's duration (syncer's) */
    uint64_t overlap_min;  /* group bytes from which the fsync is overlapped */
    int overlap_timed;     /* also require fdatasyncs slower than a hand-off */
    uint64_t fsync_avg_ns; /* writer's: moving average of fdatasync times */

    /* durable index checkpoints (local_ckpt.c) */
    struct ckpt_ctl *cp;
} local;

/* Find the start of the latest group at or before `from` in the tail
 * ring: 1 and *loc set, or 0. */
int tail_hint(local *L, uint64_t from, uint64_t *loc);

/* local_retry.c: an append recognised as a retry by its ids (check_retry
 * in local.c) against the original: 0 when every event is the same, 1
 * when one differs (r failed with STELE_EIDCONFLICT) or the original could
 * not be read (r failed with that error). `orig` is the original commit, pos[i] event i's
 * position. */
int retry_compare(local *L, wreq *r, uint64_t sid, const idx_commit *orig, const uint64_t *pos);
/* Which part of a stored event record differs from an offered event
 * ("data", "type", ...), or NULL if they are the same event. */
const char *retry_event_diff(const rec *r, const stele_event_in *e);
/* The request accepted earlier in r's group whose events start at
 * position pos0 (a single or multi-stream append, not written yet): 1 when
 * it has as many events as r, with *differs naming the first part that
 * differs (event *differs_k) or NULL when every event is the same; 0 when
 * there is no such request. */
int retry_in_group(const wreq *r, uint64_t pos0, const char **differs, size_t *differs_k);

/* local_read.c */

/* Add the event record r to page pg through its neutral fields
 * (page_add). 0, ENOMEM, or ECORRUPT for a record no writer made. */
int local_page_add(stele_page *pg, const rec *r);

/*
 * Whether the event at `revision` of a stream in state `st`, committed at
 * `created_us`, is visible to stream-shaped reads (stream reads, queries,
 * snapshot loads) at time `now_us`: the shared rule of
 * src/backend/visibility.c (vis_event_visible) applied to the engine's
 * stream state. $all shows every event until it is scavenged; this rule is
 * also what the scavenger removes.
 */
int event_visible(const idx_stream *st, uint64_t revision, int64_t created_us, int64_t now_us);
/* The lowest revision event_visible() can accept, maxAge aside
 * (vis_stream_start). */
uint64_t stream_start(const idx_stream *st);
void scratch_init(local *L, buf *b);
void scratch_free(local *L, buf *b);
int read_commit(local *L, const idx_commit *c, buf *b);
int commit_rec(local *L, log_holders *h, const idx_commit *c, const buf *b, size_t off, rec *r);
int snapshot(local *L, MDB_txn **txn, uint64_t *visible, uint64_t *end);
int stream_state(local *L, MDB_txn *txn, const char *stream, size_t len, idx_stream *st);
int scan_all(local *L, uint64_t loc, uint64_t end, uint64_t from, uint64_t to, size_t limit,
             stele_page *pg);
int local_read_stream(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                      size_t limit, stele_page **out);
int local_read_all(backend *b, uint64_t from, int backwards, size_t limit, stele_page **out);
int local_head(backend *b, const char *stream, size_t len, stele_stream_info *out);
int local_stats(backend *b, stele_stats *out);
/* local_names.c */
int local_list_names(backend *b, int kind, const char *prefix, const char *after, size_t limit,
                     unsigned flags, int (*fn)(void *ctx, const stele_name_info *info), void *ctx);

/* local_streams.c: stream metadata and snapshot records (docs/streams.md) */

/* Plan an OP_METADATA / OP_SNAPSHOT request in the group's transaction
 * (like plan() in local.c: 0 with r->rc set or r->accepted = 1; < 0 when
 * the index failed). */
int sm_plan(local *L, MDB_txn *txn, wreq *r);
/* Encode an accepted request's record at `out` (r->bytes long), which will
 * be at `loc`, and point the index at it. 0 or an index error. */
int sm_encode(local *L, MDB_txn *txn, wreq *r, uint8_t *out, uint64_t loc, int64_t now);
/* Recovery: apply a REC_METADATA / REC_SNAPSHOT record found at `loc`. */
int sm_apply(local *L, MDB_txn *txn, const rec *r, uint64_t loc);
/* A soft delete or tombstone was applied to `st` (writer and recovery):
 * drop the snapshots it hides (all of them for a tombstone, those below
 * the new truncate-before for a delete). */
int sm_on_remove(local *L, MDB_txn *txn, const idx_stream *st);

/*
 * For the scavenger: is the REC_METADATA or REC_SNAPSHOT record `r`, found
 * at `loc`, still referenced by the index in `txn`? A metadata record is
 * live while it is its stream's current one (idx_stream.meta_loc); a
 * snapshot record while the snapshot index entry of its stream and revision
 * points at it (retention, a replacing snapshot, a soft delete or a
 * tombstone remove entries). Returns 1 live, 0 not (the record may be
 * dropped), or a negative STELE_E* code.
 */
int sm_record_live(local *L, MDB_txn *txn, const rec *r, uint64_t loc);
/* For the scavenger: the live record `r` moved from `old_loc` to
 * `new_loc`; repoint the index entry (0, STELE_ENOTFOUND if it is not
 * live, or an index error). */
int sm_record_moved(local *L, MDB_txn *txn, const rec *r, uint64_t old_loc, uint64_t new_loc);

int local_set_metadata(backend *b, const char *stream, size_t len,
                       const stele_stream_metadata *md, int64_t expected, uint64_t *version);
int local_get_metadata(backend *b, const char *stream, size_t len, stele_stream_metadata **out);
int local_put_snapshot(backend *b, const char *stream, size_t len, const stele_snapshot_in *s);
int local_get_snapshot(backend *b, const char *stream, size_t len, uint64_t at_or_before,
                       stele_snapshot **out);
int local_load(backend *b, const char *stream, size_t len, size_t limit, stele_snapshot **snap,
               stele_page **events);
/* A multi-stream commit's state snapshot (local_multi.c): plan its index
 * entry at `revision` of stream `st` under `tag` (never a real loc), and
 * later point it at the record's `loc` if it still carries the tag. */
int sm_plan_state(local *L, MDB_txn *txn, const idx_stream *st, uint64_t revision,
                  uint32_t bytes, uint32_t schema_version, uint64_t tag);
int sm_encode_state(local *L, MDB_txn *txn, uint64_t sid, uint64_t revision, uint64_t tag,
                    uint64_t loc);
/* Mark the store read-only for lack of space, `why` in the message
 * (local.c; recovery when the next segment cannot be made). */
void local_set_nospace(local *L, const char *why);
/* Queue a request and wait for the writer (local.c). */
int local_submit(local *L, wreq *r);
/* Queue a request without waiting (its done_fn / mdone_fn completes it). */
int local_enqueue(local *L, wreq *r);

/* local_wake.c: waking a finished group's waiting appenders (bulk by
 * default; relay: STELE_WAKE) */
/* The caller: sleep until the writer has marked `r` done (in relay mode,
 * wake the group's other sleepers if this thread takes the relay). */
void wake_wait(local *L, wreq *r);
/* The writer, once the group is published (or failed) and every request's
 * result is final: complete the asynchronous requests and wake the
 * waiters. No request of `group` may be touched after this. */
void wake_group(local *L, wreq *group);
/* Open: the way of waking from the environment (local_wake.c). */
void wake_config(local *L);

/* local_scavenge.c */
int local_scavenge(backend *b, const stele_scavenge_options *opts, stele_scavenge_result *res);
/* The hash chain's head and export (local_chain.c; backend_ops). */
int local_chain_head(backend *b, stele_chain_head *out);
int local_chain_export(backend *b, uint64_t from, uint64_t to,
                       int (*fn)(void *ctx, uint64_t seq, const uint8_t *bytes, size_t n,
                                 const uint8_t digest[32]),
                       void *ctx, uint64_t *first_seq, uint8_t prev[32], stele_chain_head *head);

/* local_query.c */
/* Recovery's hook: index the secondary entries of the complete commit
 * [start, end) it has just applied (idx_sec_commit on the log's bytes). */
int sec_recover_commit(local *L, MDB_txn *txn, uint64_t start, uint64_t end);
int local_query(backend *b, const query_args *q, stele_page **out);
/* A query through the secondary indexes within positions [lo, hi), in the
 * caller's snapshot (local_view.c reads the view streams with it). */
int local_query_sec(local *L, MDB_txn *txn, const query_args *q, uint64_t lo, uint64_t hi,
                    stele_page *pg);
int local_read_stream_to(backend *b, const char *stream, size_t len, uint64_t from,
                         int backwards, size_t limit, uint64_t to, int has_as_of,
                         int64_t as_of_us, stele_page **out);

/* local_view.c */
int local_read_view(backend *b, int kind, const char *key, size_t key_len, uint64_t from,
                    int backwards, size_t limit, stele_page **out);

/* local_multi.c: multi-stream commits and DCB conditions */

/* Plan an OP_MULTI request in the group's transaction (as plan()). */
int multi_plan(local *L, MDB_txn *txn, wreq *r);
/* Encode an accepted OP_MULTI request's records at the end of L->gbuf,
 * the group's buffer that starts at `write_off` of segment `seg`, and
 * point the index at them. 0 or an index error. */
int multi_encode(local *L, MDB_txn *txn, wreq *r, uint32_t seg, uint64_t write_off, int64_t now);
/* Recovery: apply the complete multi-stream commit [start, start+bytes). */
int multi_recover_commit(local *L, MDB_txn *txn, uint64_t start, uint64_t bytes);
/* Whether the multi-stream commit starting at `at` may be scavenged: 1
 * remove, 0 keep, or an error. */
int multi_removable(local *L, MDB_txn *txn, uint64_t at, int64_t now);
int local_append_multi(backend *b, const multi_args *m, stele_append_result *per_stream,
                       stele_multi_result *res);
int local_append_multi_async(backend *b, const multi_args *m, stele_append_result *per_stream,
                             const stele_multi_result *init, stele_append_multi_cb done,
                             void *ctx, size_t nstreams);
/* Complete an async OP_MULTI request (req_finish in local.c); frees r. */
void multi_finish_async(wreq *r);
int local_read_matching(backend *b, const stele_condition *cond, uint64_t from, int backwards,
                        size_t limit, stele_page **out);

/* local_removes.c: a delete or tombstone as an event of `$deletes` */

/* The record bytes a removal of a stream of `len` bytes takes at most. */
uint64_t rm_bytes_bound(size_t len);
/* After plan() accepted an OP_DELETE / OP_TOMBSTONE: take its position and
 * `$deletes` revision, record `$deletes`' state and commit entry, build
 * the record's parts and set r->bytes. 0 or an index error. */
int rm_plan(local *L, MDB_txn *txn, wreq *r);
/* Encode its record at the end of L->gbuf (the group's buffer starting at
 * `write_off` of segment `seg`) and point the indexes at it. */
int rm_encode(local *L, MDB_txn *txn, wreq *r, uint32_t seg, uint64_t write_off, int64_t now);
/* Recovery: after the REC_REMOVES record `r` at `at` was applied as an
 * event of `$deletes`, apply the delete it carries. */
int rm_recover(local *L, MDB_txn *txn, const rec *r, uint64_t at);

/* How an open recovered (local_recover.c, local_ckpt.c). */
enum { RECOVER_FAST = 1, RECOVER_DURABLE, RECOVER_REBUILD };
typedef struct recover_report {
    int mode;          /* RECOVER_FAST: clean close or process crash, from
                          the index's checkpoint; RECOVER_DURABLE: machine
                          crash, from the durable checkpoint; RECOVER_REBUILD:
                          from the start of the log */
    uint64_t from_pos; /* the log was replayed from this position ... */
    uint64_t to_pos;   /* ... up to this one (the next position) */
    uint64_t txnid;    /* RECOVER_DURABLE: the LMDB snapshot restored */
    char why[208];     /* RECOVER_REBUILD: why */
} recover_report;
/* The last open's recovery in this process (tests and benchmarks read it;
 * opens running at the same time overwrite each other's). */
extern recover_report recover_last;
/* Groups whose fdatasync the syncer ran (local.c, "Overlap"), in every
 * store of the process: for tests and benchmarks. */
extern _Atomic uint64_t local_overlap_groups;
/* Durable index checkpoints taken, and failed, in this process (all
 * stores). */
extern _Atomic uint64_t ckpt_taken_total, ckpt_failed_total;

/* local_ckpt.c: durable index checkpoints (see the file's comment for the
 * order local_open calls them in) */
struct ckpt_ctl;
typedef struct ckpt_ctl ckpt_ctl;
int ckpt_prepare(local *L, int crashed);
int ckpt_open_index(local *L, int crashed, int sec_on);
int ckpt_start(local *L);
void ckpt_stop(local *L);

/* local_recover.c */
void boot_id(char out[64]);
int write_marker(local *L, const char *text);
/* Replay the log into the index from its checkpoint (from nothing if
 * `rebuild`); *rep gets the positions replayed (and mode RECOVER_REBUILD
 * if the index had to be dropped). */
int recover(local *L, int rebuild, recover_report *rep);
int verify_all(local *L);

#endif
