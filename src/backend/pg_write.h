/*
 * pg_write.h - what the PostgreSQL backend's write files share (pg_write.c:
 * the writer and its batches; pg_insert.c: inserting a commit's events;
 * pg_stream.c: deletes, metadata, snapshots; pg_multi.c: multi-stream
 * appends). Internal to src/backend/pg_*.c.
 */
#ifndef STELE_PG_WRITE_H
#define STELE_PG_WRITE_H

#include "backend/expect.h"
#include "backend/pg_int.h"
#include "util/util.h"

enum { REQ_APPEND = 1, REQ_MULTI = 2 };

struct pg_req {
    pg_req *next;
    int kind;
    const append_args *a;
    append_done_fn done;
    void *ctx;
    /* planning */
    int rc;
    char msg[512];
    stele_append_result res;
    int accepted;
    int sidx; /* index of its stream in the batch's sorted names */
    /* Its events' place in their commit: commit_index = ci0 + k, and
     * commit_count = cc (0: the append's own count). */
    size_t ci0, cc;
    /* REQ_MULTI */
    const multi_args *m;
    stele_append_result *ps;
    stele_multi_result mres;
    stele_append_multi_cb mdone;
    size_t nstreams;
};

typedef struct bstream {
    char name[256];
    size_t len;
    pg_stream st;
    int changed;
    uint64_t first_new_pos; /* first position given to it in this batch */
    int found;              /* its row was there when read */
    char xmin[16];          /* the version read (its xmin): the UPDATE's check */
} bstream;

typedef struct idrow {
    uint8_t id[16];
    char stream[256];
    uint64_t rev, pos;
    int32_t ci, cc;
    /* The stored event: row `row` of pgw_lookup_ids()'s result. */
    const PGresult *src;
    int row;
} idrow;

/* A PostgreSQL array literal in b: open, add (quoted, escaped), close. */
int pgw_arr_open(buf *b);
int pgw_arr_add(buf *b, const char *s, size_t len, int first);
int pgw_arr_close(buf *b);
void pgw_uuid_text(const uint8_t id[16], char out[37]);
int pgw_bs_cmp(const void *a, const void *b);
const idrow *pgw_find_id(const idrow *ids, size_t n, const uint8_t id[16]);
uint64_t pgw_visible_rev(const pg_stream *st);
/* pg_exec() that keeps the SQLSTATE of a failure in `state`; out may be
 * NULL. */
int pgw_wexec(PGconn *c, const char *sql, int n, const char *const *vals, const int *lens,
              const int *fmts, int binary, PGresult **out, const char *what, char state[6]);
/* pg_insert.c: insert the accepted, non-idempotent appends of reqs[0..n)
 * (positions and revisions already in their res), numbering their view
 * revisions. Inside the transaction that holds the feed lock. */
int pgw_insert_events(PGconn *c, pg_req **reqs, size_t n, bstream *bs, int64_t now,
                      char state[6]);
/* The same in two steps (the writer pipelines them). First, under the feed
 * lock, the view counters reqs[0..n) may touch: PGW_SEQ_READ_SQL with the
 * text arrays pgw_seq_keys() fills (binary result). */
#define PGW_SEQ_READ_SQL                                                                           \
    "SELECT kind, key, next FROM stele_seq WHERE (kind, key) IN (SELECT * FROM "                  \
    "unnest($1::text[], $2::text[]))"
int pgw_seq_keys(pg_req **reqs, size_t n, const bstream *bs, buf *kinds, buf *keys);
/* Then, after planning, the parameters of two statements that need no
 * answer before the COMMIT: pgw_seq_write_sql (seq_vals, text) and
 * pgw_insert_sql (vals/lens/fmts). total = 0: no event to insert. */
#define PGW_EV_COLS 20
typedef struct pgw_ins {
    size_t total;
    buf col[PGW_EV_COLS];
    buf kinds, keys, nexts;
    pg_num now;
    const char *vals[PGW_EV_COLS + 1];
    int lens[PGW_EV_COLS + 1], fmts[PGW_EV_COLS + 1];
    const char *seq_vals[3];
} pgw_ins;
extern const char pgw_seq_write_sql[], pgw_insert_sql[];
int pgw_ins_build(pgw_ins *x, pg_req **reqs, size_t n, const bstream *bs, const PGresult *seq,
                  int64_t now);
void pgw_ins_free(pgw_ins *x);
/* pg_retry.c: the client-given ids of $1 (a uuid[]) already written, with
 * their stored events (binary result; pgw_ids_from reads it). */
#define PGW_IDS_SQL                                                                                \
    "SELECT event_id, stream_id, revision, global_position, commit_index, commit_count, "          \
    "event_type, data, meta, flags, tags FROM events WHERE NOT id_made AND event_id = "           \
    "ANY($1::uuid[])"
/* The rows of a PGW_IDS_SQL result (which they point into: keep it until
 * *ids is freed). */
int pgw_ids_from(PGresult *r, idrow **ids, size_t *n);
/* PGW_IDS_SQL for the ids in `idarr` (a uuid[] literal); *keep is the
 * result the rows point into (caller PQclear()s it, and frees *ids). */
int pgw_lookup_ids(PGconn *c, const char *idarr, idrow **ids, size_t *n, PGresult **keep,
                   char state[6]);
/* Which part of the stored event f differs from y ("type", "data",
 * "metadata", "content type", "tags"), or NULL if none. */
const char *pgw_retry_diff(const idrow *f, const stele_event_in *y);
/* Set EIDCONFLICT for an id written at `rev` of `stream` with another
 * `part`; returns STELE_EIDCONFLICT. */
int pgw_retry_conflict(const uint8_t id[16], const char *stream, uint64_t rev, const char *part);
/* pg_stream.c: keep the stream's `max` latest snapshots (0: the default). */
int pgw_trim_snapshots(PGconn *c, const char *name, uint32_t max);
/* pg_write.c: queue a request for the writers (ECLOSED when closing), and
 * (on a writer thread) make its connection usable. */
int pgw_enqueue(pg_backend *P, pg_req *r);
void pgw_writer_conn(pg_writer *W);
/* pg_deletes.c: inside pg_remove()'s transaction, after the stream `name`
 * was marked deleted (tombstone) with visible revision `cur` and
 * truncate-before `tb`: its `$streamDeleted` event in `$deletes`. */
int pg_record_remove(PGconn *c, const char *name, size_t len, int tombstone, uint64_t cur,
                     uint64_t tb);
/* pg_multi.c: on a writer thread, one queued multi-stream append. */
void pgw_process_multi(pg_writer *W, pg_req *r);

#endif
