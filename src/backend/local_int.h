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
 *   local_query.c    queries through the secondary indexes, temporal
 *                    stream reads
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
#include "store/page.h"
#include "util/util.h"

#define GROUP_MAX_BYTES (32u << 20)
#define RECOVERY_TXN_EVENTS 65536u

enum { OP_APPEND, OP_DELETE, OP_TOMBSTONE };

typedef struct wreq {
    int op;
    const append_args *a;  /* OP_APPEND */
    const char *stream;    /* OP_DELETE / OP_TOMBSTONE */
    size_t stream_len;
    int64_t expected;
    uint64_t bytes;        /* record bytes if accepted */

    /* results */
    int rc;
    stele_append_result res;
    uint64_t current;
    char msg[512];

    /* writer scratch */
    int accepted;
    idx_stream st;         /* stream state after this request */
    int new_stream;

    _Atomic uint32_t done;
    append_done_fn done_fn; /* async: called instead of the futex wake */
    void *done_ctx;
    struct wreq *next;
} wreq;

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
    pool *pl;              /* read buffers, shared with live pages */
    _Atomic uint64_t n_appends, n_groups;
    _Atomic uint32_t done_gen; /* bumped once per finished group (futex word) */
} local;

/* local_read.c */

/*
 * Whether the event at `revision` of a stream in state `st`, committed at
 * `created_us`, is visible to stream-shaped reads (stream reads, queries,
 * snapshot loads) at time `now_us`: not hidden by a tombstone, a soft
 * delete or the stream's retention. $all shows every event until it is
 * scavenged; this rule is also what the scavenger removes. One function, so
 * reads, queries and scavenging can never disagree.
 */
int event_visible(const idx_stream *st, uint64_t revision, int64_t created_us, int64_t now_us);
void scratch_init(local *L, buf *b);
void scratch_free(local *L, buf *b);
int read_commit(local *L, const idx_commit *c, buf *b);
int commit_rec(const idx_commit *c, const buf *b, size_t off, rec *r);
int snapshot(local *L, MDB_txn **txn, uint64_t *visible, uint64_t *end);
int stream_state(local *L, MDB_txn *txn, const char *stream, size_t len, idx_stream *st);
int scan_all(local *L, uint64_t loc, uint64_t end, uint64_t from, uint64_t to, size_t limit,
             stele_page *pg);
int local_read_stream(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                      size_t limit, stele_page **out);
int local_read_all(backend *b, uint64_t from, int backwards, size_t limit, stele_page **out);
int local_head(backend *b, const char *stream, size_t len, stele_stream_info *out);
int local_stats(backend *b, stele_stats *out);

/* local_query.c */
/* Recovery's hook: index the secondary entries of the complete commit
 * [start, end) it has just applied (idx_sec_commit on the log's bytes). */
int sec_recover_commit(local *L, MDB_txn *txn, uint64_t start, uint64_t end);
int local_query(backend *b, const query_args *q, stele_page **out);
int local_read_stream_to(backend *b, const char *stream, size_t len, uint64_t from,
                         int backwards, size_t limit, uint64_t to, int has_as_of,
                         int64_t as_of_us, stele_page **out);

/* local_recover.c */
void boot_id(char out[64]);
int write_marker(local *L, const char *text);
int recover(local *L, int rebuild);
int verify_all(local *L);

#endif
