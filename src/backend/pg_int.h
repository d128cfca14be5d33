/*
 * pg_int.h - what the files of the PostgreSQL backend share (pg.c: open,
 * schema, connections, commit notification; pg_write.c: the writer thread
 * and every write; pg_read.c: reads, queries, views, metadata, snapshots).
 * docs/backends.md describes the schema and the guarantees.
 */
#ifndef STELE_PG_INT_H
#define STELE_PG_INT_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/page.h"
#include "backend/visibility.h"

/* The schema version this build writes (pg.c's migrations). */
#define PG_SCHEMA_VERSION 4
/* The NOTIFY channel every commit signals. */
#define PG_CHANNEL "stele_commit"
/* Read connections kept per server. */
#define PG_POOL_MAX 8
/* Appends one writer transaction takes at most. */
#define PG_BATCH_MAX 512
/* Writer threads (each with its own connection, so as many batches in
 * flight) by default, and at most; STELE_PG_WRITERS overrides the default
 * (pg_write.c). */
#define PG_WRITERS 2
#define PG_WRITERS_MAX 4
#define PG_WATCH_MAX 64

/* The durable position (pg.c, "Durability"): every position below it is
 * committed and flushed to PostgreSQL's WAL, so no crash can lose it.
 * Every read is bounded by it, as an SQL expression (an InitPlan: computed
 * once per statement). */
#define PG_DURABLE "(SELECT coalesce(max(next_position), 0) FROM stele_durable)"
/* Moves the durable position up to the feed's next position: run in a
 * synchronous transaction (the session default), whose COMMIT flushes the
 * WAL past every commit it can see and becomes visible only after that
 * flush. */
#define PG_DURABLE_INSERT                                                                          \
    "INSERT INTO stele_durable (next_position) SELECT next_position FROM stele_feed"

/* A stream's row (table streams) as C sees it; STELE_NONE for "none". */
typedef struct pg_stream {
    int exists; /* written, deleted, tombstoned or given metadata */
    uint64_t last_rev, last_pos, first_pos;
    uint64_t truncate_before; /* soft delete: revisions below are hidden */
    int deleted, tombstoned;
    uint64_t meta_version;
    uint64_t max_age_us, max_count, meta_tb;
    uint32_t max_snapshots;
} pg_stream;

typedef struct pg_req pg_req;
typedef struct pg_backend pg_backend;

/* One writer thread and its connection (pg_write.c). */
typedef struct pg_writer {
    pg_backend *P;
    pthread_t thread;
    PGconn *conn;
    uint32_t epoch; /* P->epoch when conn was made */
    /* Which of the writer's named statements conn has prepared (bit i:
     * pg_write.c's statement i); 0 whenever conn is made anew. */
    uint32_t prepared;
} pg_writer;

struct pg_backend {
    backend base;
    char *uri;
    stele_options opts;
    pool *pl;
    /* Read connections: idle ones on a stack; `nconns` made in all. */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    PGconn *idle[PG_POOL_MAX];
    int nidle, nconns;
    /* Bumped by the listener each time it reconnects (the database may
     * have restarted): connections made before are dropped, not reused. */
    _Atomic uint32_t epoch;
    uint32_t idle_epoch[PG_POOL_MAX];
    /* The writer threads and their queue. `door` is held by the writer
     * taking requests off the queue until its batch holds its stream rows
     * (pg_write.c: queue order per stream across batches in flight). */
    pg_writer writers[PG_WRITERS_MAX];
    int nwriters;
    /* Batches in flight (pg_write.c, "Queue order"): each writer's batch's
     * stream names, sorted, from its registration (under the door) to the
     * end of its transaction; under fly_mu, fly_cv broadcast on each end. */
    pthread_mutex_t fly_mu;
    pthread_cond_t fly_cv;
    const void *fly[PG_WRITERS_MAX];
    size_t fly_n[PG_WRITERS_MAX];
    pthread_mutex_t door;
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    pg_req *q_head, *q_tail;
    int stopping;
    /* Names of streams known to have a row (the writers' cache, under
     * known_mu: rows are never removed, so a name once seen needs no
     * INSERT again). */
    pthread_mutex_t known_mu;
    char **known;
    size_t known_cap, known_n;
    /* The listener thread (LISTEN stele_commit) and commit notification. */
    pthread_t listener;
    _Atomic int listen_stop;
    int listen_wake; /* eventfd: wakes the listener to stop at once */
    _Atomic uint32_t gen;
    pthread_mutex_t gen_mu;
    pthread_cond_t gen_cv;
    int watch_fds[PG_WATCH_MAX];
    int nwatch;
    /* Counters since open (stats). */
    _Atomic uint64_t appends, groups;
    /* The flusher (pg_write.c): requests of batches whose events are
     * committed without a flush wait in its list (fl_head, under fl_mu)
     * for the synchronous commit that makes them durable and answers
     * them; it has a connection of its own. */
    pg_writer flusher;
    int flusher_on, fl_stopping;
    pthread_mutex_t fl_mu;
    pthread_cond_t fl_cv;
    pg_req *fl_head, *fl_tail;
    /* Durable commits since the flusher last pruned stele_durable. */
    uint32_t prune_tick;
    /* Test hook (STELE_PG_TEST_PAUSE=PREFIX:MS): a batch with an append to
     * a stream whose name starts with PREFIX waits MS milliseconds between
     * its events' COMMIT and the durable COMMIT (tests/http). */
    char pause_prefix[64];
    int pause_ms;
    /* Test hook (STELE_PG_TEST_DISCARD=N): before every Nth batch a writer
     * drops its prepared statements behind its own back, as a pooler's
     * DISCARD ALL would, alternately all of them (DISCARD ALL) and one
     * (DEALLOCATE), so the 26000 and 42P05 recoveries of pg_write.c run
     * (tests/http/test_http_pg_schema.py). */
    int discard_every;
    _Atomic uint32_t discard_tick;
};

/* pg.c */
/* A connection: an idle one, a new one, or NULL with the error set. */
PGconn *pg_conn_get(pg_backend *P);
/* Give it back; a broken connection is closed instead. */
void pg_conn_put(pg_backend *P, PGconn *c);
/* Connect to the store's database (error set on failure). */
PGconn *pg_connect(const char *uri);
/* The error of a failed result, as STELE_EIO (connection lost or refused)
 * or STELE_EINTERNAL, with `what` and PostgreSQL's message. Clears res. */
int pg_fail(PGconn *c, PGresult *res, const char *what);
/* Run a statement; 0 with *out set (caller PQclear()s it), or the error.
 * Parameters are text (lens NULL) unless `fmts` gives 1 for binary ones;
 * results are binary when `binary`. */
int pg_exec(PGconn *c, const char *sql, int n, const char *const *vals, const int *lens,
            const int *fmts, int binary, PGresult **out, const char *what);
/* Simple statements without results ("BEGIN", "COMMIT"). */
int pg_cmd(PGconn *c, const char *sql);
/* Wake subscribers after a local commit (the listener does it for commits
 * by other servers). */
void pg_bump(pg_backend *P);

/* Binary result fields. */
uint64_t pg_u64(const PGresult *r, int row, int col);
int64_t pg_i64(const PGresult *r, int row, int col);
int32_t pg_i32(const PGresult *r, int row, int col);
int pg_bool(const PGresult *r, int row, int col);
/* A bigint that may be -1 (none) as STELE_NONE. */
uint64_t pg_rev(const PGresult *r, int row, int col);

/* The stream row's columns, in this order, for pg_stream_from(). */
#define PG_STREAM_COLS                                                                             \
    "last_revision, last_position, first_position, truncate_before, deleted, tombstoned, "         \
    "meta_version, max_age_us, max_count, meta_truncate_before, max_snapshots"
void pg_stream_from(const PGresult *r, int row, int col0, pg_stream *st);
/* Read a stream's row (unlocked); a missing row is exists = 0. A row last
 * changed by a batch that is not durable yet is made durable first
 * (pg_durable_cover), so what a reader is told is never lost. */
int pg_stream_get(PGconn *c, const char *stream, size_t len, pg_stream *st);
/* The same; with cover = 0 the row is taken as it is (inside a read-only
 * transaction, after a pg_stream_get() outside it). */
int pg_stream_get_x(PGconn *c, const char *stream, size_t len, pg_stream *st, int cover);
/* Move the durable position up to the feed's next position in a
 * synchronous transaction of its own, and notify every server. */
int pg_durable_cover(PGconn *c);
/* After an append or other write answered with an error that reports
 * what the transaction saw (a wrong expected revision, a conflict): make
 * what it saw durable before the answer goes out; rc, or the failure of
 * the cover (EIO). Errors that report nothing pass through. */
int pg_durable_settle(PGconn *c, int rc);
/* The first revision the stream shows (soft delete, truncateBefore,
 * maxCount). */
uint64_t pg_stream_start(const pg_stream *st);
/* The stream's visibility inputs for the shared rule (visibility.h). */
void pg_stream_vis(const pg_stream *st, stream_vis *v);

/* The text of a 64-bit number, for text parameters. */
typedef struct pg_num {
    char s[24];
} pg_num;
const char *pg_numtxt(pg_num *b, int64_t v);

/* pg_write.c */
int pg_writer_start(pg_backend *P);
void pg_writer_stop(pg_backend *P);
int pg_append(backend *b, const append_args *a, stele_append_result *res);
int pg_append_async(backend *b, const append_args *a, append_done_fn done, void *ctx);
int pg_remove(backend *b, const char *stream, size_t len, int64_t expected, int tombstone,
              uint64_t *current);
int pg_set_metadata(backend *b, const char *stream, size_t len, const stele_stream_metadata *md,
                    int64_t expected, uint64_t *version);
int pg_put_snapshot(backend *b, const char *stream, size_t len, const stele_snapshot_in *s);
int pg_append_multi(backend *b, const multi_args *m, stele_append_result *per_stream,
                    stele_multi_result *res);
int pg_append_multi_async(backend *b, const multi_args *m, stele_append_result *per_stream,
                          const stele_multi_result *init, stele_append_multi_cb done, void *ctx,
                          size_t nstreams);

/* pg_read.c */
int pg_read_stream(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                   size_t limit, stele_page **out);
int pg_read_all(backend *b, uint64_t from, int backwards, size_t limit, stele_page **out);
int pg_head(backend *b, const char *stream, size_t len, stele_stream_info *out);
int pg_query(backend *b, const query_args *q, stele_page **out);
int pg_read_stream_to(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                      size_t limit, uint64_t to, int has_as_of, int64_t as_of_us,
                      stele_page **out);
int pg_read_view(backend *b, int kind, const char *key, size_t key_len, uint64_t from,
                 int backwards, size_t limit, stele_page **out);
int pg_stats(backend *b, stele_stats *out);
/* pg_scavenge.c: stele_scavenge on PostgreSQL. */
int pg_scavenge(backend *b, const stele_scavenge_options *opts, stele_scavenge_result *res);
/* pg_names.c: stele_list_names on PostgreSQL. */
int pg_list_names(backend *b, int kind, const char *prefix, const char *after, size_t limit,
                  unsigned flags, int (*fn)(void *ctx, const stele_name_info *info), void *ctx);
int pg_read_matching(backend *b, const stele_condition *cond, uint64_t from, int backwards,
                     size_t limit, stele_page **out);
int pg_get_metadata(backend *b, const char *stream, size_t len, stele_stream_metadata **out);
int pg_get_snapshot(backend *b, const char *stream, size_t len, uint64_t at_or_before,
                    stele_snapshot **out);
int pg_load(backend *b, const char *stream, size_t len, size_t limit, stele_snapshot **snap,
            stele_page **events);
/* The SQL condition (on events e joined with streams s, now in $1's
 * place given as `nowp`) under which an event is visible in its stream. */
void pg_visible_sql(char *out, size_t n, const char *nowp);
/* An SQL scalar subquery: the first view number (rcol: ce_rev, et_rev)
 * under col = key whose event's position is `cmp` (">=" or ">") pos,
 * found by a binary search over the view's index (pg_read.c). */
void pg_rank_bound_sql(char *out, size_t n, const char *col, const char *rcol, const char *key,
                       const char *pos, const char *cmp);
/* Append the rows of an event result (PG_EVENT_COLS) to a page. */
#define PG_EVENT_COLS                                                                              \
    "e.global_position, e.revision, e.event_id, e.stream_id, e.event_type, e.data, e.meta, "       \
    "e.flags, e.tags, e.created_us"
int pg_page_add_rows(stele_page *pg, const PGresult *r);
/* A DCB query as SQL over events e: appends "(...)" to `sql` and its
 * parameters from index *np + 1 (values into vals, at most PG_DCB_PARAMS). */
#define PG_DCB_PARAMS (2 * STELE_MAX_CONDITION_ITEMS)
int pg_dcb_sql(const stele_condition *cond, char *sql, size_t n, int *np, const char **vals,
               char **owned);

#endif
