/*
 * backend.h - the storage backend interface. Everything above it (the
 * public API in src/store, and later subscriptions and projections) talks
 * to a backend only through this table, so the local engine, PostgreSQL and
 * DynamoDB are interchangeable. A backend enforces the store semantics that
 * a shared database must enforce itself: expected revisions, idempotent
 * retries, deletes.
 *
 * Arguments reach a backend already validated by src/store (names, sizes,
 * limits); backends assert rather than re-check them.
 *
 * The contract (docs/architecture.md, "The backend contract"): a backend is
 * chosen by the store URI (backend_open, backend.c); its ops carry
 * BACKEND_OPS_VERSION; it builds the pages it returns from neutral event
 * fields (page_add in page.h); it decides visibility with the shared rule
 * (vis_event_visible in visibility.h); it owns $all positions (pos_after,
 * pos_before, pos_head); it sizes its own storage and enforces its own
 * limits (ETOOBIG) beyond the public ones. A fresh URI opens an empty store
 * (the contract tests make one per case from STELE_TEST_STORE).
 */
#ifndef STELE_BACKEND_H
#define STELE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "stele.h"

typedef struct backend backend;

/* One append as the API edge prepared it. */
typedef struct append_args {
    const char *stream;
    size_t stream_len;
    int64_t expected;
    const stele_event_in *events;
    size_t n;
    /* ids[i]: the client's id or one made by the store (made[i] = 1). */
    const uint8_t (*ids)[16];
    const uint8_t *made;
    uint64_t bytes; /* size of all events as the API edge measures it
                     * (STORE_EVENT_FIXED in store_int.h), not the
                     * backend's encoding: a backend sizes its own */
} append_args;

/*
 * A multi-stream append as the API edge prepared it (src/store/multi.c):
 * streams named once each, every record naming one of them, ids made or
 * checked, the condition's items non-empty. `bytes` is the size of every
 * event and state snapshot of the commit as the API edge measures it, not
 * the backend's encoding.
 */
typedef struct multi_stream_args {
    const char *stream;
    size_t len;
    int64_t expected;
    const stele_snapshot_in *state; /* NULL: none */
    size_t nevents;                 /* records naming this stream */
} multi_stream_args;

typedef struct multi_args {
    const multi_stream_args *streams;
    size_t nstreams;
    const stele_append_record *records;
    size_t nrecords;
    const uint8_t (*ids)[16];
    const uint8_t *made;
    const stele_condition *cond; /* NULL: none */
    uint64_t bytes;
} multi_args;

/* A per-stream result before (or instead of) an append: nothing written. */
static inline stele_append_result append_result_none(void)
{
    return (stele_append_result){.first_revision = STELE_NONE,
                                 .last_revision = STELE_NONE,
                                 .first_position = STELE_NONE,
                                 .last_position = STELE_NONE,
                                 .current_revision = STELE_NONE};
}

/* A query as the API edge validated it (src/store/query.c). */
typedef struct query_args {
    int kind;              /* STELE_QUERY_* */
    const char *key;       /* NULL for STELE_QUERY_ALL */
    size_t key_len;
    const char *type;      /* NULL: no type restriction */
    size_t type_len;
    int has_after, has_before;
    int64_t after_us, before_us; /* after_us <= before_us when both */
    uint64_t from;
    int backwards;
    size_t limit;
} query_args;

/* read_view's kind for $streams. */
#define VIEW_STREAMS 100

typedef void (*append_done_fn)(void *ctx, int rc, const stele_append_result *res,
                               const char *msg);

/* The version of this table's layout and meaning. A backend sets
 * `version` to the value it was built against; backend_open() refuses a
 * mismatch. Bump it whenever a slot is added, removed or changes meaning. */
#define BACKEND_OPS_VERSION 5u

/*
 * Consumer groups shared by every server of a store (src/sub/group_share.c,
 * docs/consumer-groups.md "Several servers"). A group incarnation, named
 * by `key`, has in the backend a frontier (everything of its stream below
 * it has been claimed) and claims: ranges [from, to) of positions ($all)
 * or revisions (a stream), disjoint, each held by one owner (a server's
 * node name) until an expiry. An owner delivers only the events of its
 * claims; a range whose holder stopped renewing it is taken over by
 * another server. Times are the backend's clock where it has one
 * (PostgreSQL's now()), so servers' clocks do not matter there.
 */
typedef struct group_claim {
    uint64_t from, to;
} group_claim;

typedef struct backend_group_ops {
    /* The frontier of `key`, set to `start` when the key has no state yet. */
    int (*frontier)(backend *b, const char *key, uint64_t start, uint64_t *frontier);
    /* If the frontier is `from`, move it to `to` and give [from, to) to
     * `owner` for ttl_ms. STELE_EWRONGREV with *frontier = the frontier
     * now if it moved (nothing claimed). */
    int (*claim)(backend *b, const char *key, const char *owner, uint64_t from, uint64_t to,
                 uint32_t ttl_ms, uint64_t *frontier);
    /* Take over the expired claim of lowest `from` of another owner, for
     * `owner` until ttl_ms from now: 0 with *out, or STELE_ENOTFOUND (no
     * error message set) when no such claim has expired. */
    int (*steal)(backend *b, const char *key, const char *owner, uint32_t ttl_ms,
                 group_claim *out);
    /* Report owner's progress: v[i].to names one of its claims, v[i].from
     * is its new start (from == to: every event of it is done, the claim
     * goes). Then renew every claim of `owner` to ttl_ms from now (ttl_ms
     * 0: release them, expired at once). Claims that are no longer the
     * owner's are left alone. Released claims have no owner (any server,
     * this one too, may take them at once). Out: the frontier, and the lowest `from` of
     * other owners' claims (STELE_NONE if none). */
    int (*sync)(backend *b, const char *key, const char *owner, const group_claim *v, size_t n,
                uint32_t ttl_ms, uint64_t *frontier, uint64_t *others);
    /* Drop every claim and set the frontier to `pos` (a rewind), or forget
     * the key (pos STELE_NONE: the group is deleted). */
    int (*reset)(backend *b, const char *key, uint64_t pos);
} backend_group_ops;

typedef struct backend_ops {
    unsigned version; /* BACKEND_OPS_VERSION */
    const char *name; /* "local", "postgres", "dynamodb": for messages and stats */
    int (*append)(backend *b, const append_args *a, stele_append_result *res);
    /* Queue an append; `done` runs exactly once (on a backend thread) after
     * it is durable or failed, and `a` must stay valid until then. Returns 0,
     * or an error without calling `done`. */
    int (*append_async)(backend *b, const append_args *a, append_done_fn done, void *ctx);
    /* Soft delete (tombstone = 0) or tombstone (1). */
    int (*remove)(backend *b, const char *stream, size_t len, int64_t expected, int tombstone,
                  uint64_t *current);
    int (*read_stream)(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                       size_t limit, stele_page **out);
    int (*read_all)(backend *b, uint64_t from, int backwards, size_t limit, stele_page **out);
    int (*head)(backend *b, const char *stream, size_t len, stele_stream_info *out);
    /* Queries through the secondary indexes. */
    int (*query)(backend *b, const query_args *q, stele_page **out);
    /* A stream read limited to revisions <= to, or with has_as_of to the
     * events created at or before as_of_us (then `to` is ignored). */
    int (*read_stream_to)(backend *b, const char *stream, size_t len, uint64_t from,
                          int backwards, size_t limit, uint64_t to, int has_as_of,
                          int64_t as_of_us, stele_page **out);
    /* A system view stream (docs/kurrentdb-compatibility.md): `kind`
     * STELE_QUERY_CATEGORY ($ce-key), STELE_QUERY_TYPE ($et-key),
     * STELE_QUERY_CORRELATION ($bc-key), or VIEW_STREAMS ($streams, no
     * key). `from` and the page's next are revisions in the view; the page
     * holds the original events, with their view revisions as links
     * (page_set_link). ENOTFOUND when the view has no event yet. */
    int (*read_view)(backend *b, int kind, const char *key, size_t key_len, uint64_t from,
                     int backwards, size_t limit, stele_page **out);
    int (*stats)(backend *b, stele_stats *out);
    /* A multi-stream append (res and per_stream as in stele.h, never NULL)
     * and a read by a DCB query (cond->after ignored). */
    int (*append_multi)(backend *b, const multi_args *m, stele_append_result *per_stream,
                        stele_multi_result *res);
    /* Queue one; `done` runs exactly once on a backend thread, and `m`
     * and `per_stream` must stay valid until then. */
    int (*append_multi_async)(backend *b, const multi_args *m, stele_append_result *per_stream,
                              const stele_multi_result *init, stele_append_multi_cb done,
                              void *ctx, size_t nstreams);
    int (*read_matching)(backend *b, const stele_condition *cond, uint64_t from, int backwards,
                         size_t limit, stele_page **out);
    /* Stream metadata and snapshots (docs/streams.md). `md->custom` was
     * validated by src/store. */
    int (*set_metadata)(backend *b, const char *stream, size_t len, const stele_stream_metadata *md,
                        int64_t expected, uint64_t *version);
    int (*get_metadata)(backend *b, const char *stream, size_t len, stele_stream_metadata **out);
    int (*put_snapshot)(backend *b, const char *stream, size_t len, const stele_snapshot_in *s);
    int (*get_snapshot)(backend *b, const char *stream, size_t len, uint64_t at_or_before,
                        stele_snapshot **out);
    int (*load)(backend *b, const char *stream, size_t len, size_t limit, stele_snapshot **snap,
                stele_page **events);
    /* $all positions are the backend's: opaque 64-bit cursors, totally
     * ordered as unsigned integers in $all order (a later commit has a
     * larger position), STELE_NONE never a position. Nothing above the
     * backend does arithmetic on them; it asks these instead.
     * pos_after(p): the cursor where a read of the events after p starts
     * (read_all(pos_after(p)) never returns p itself or anything before).
     * pos_before(p): a cursor c < p such that no event lies strictly
     * between c and p (the "covered up to" form of cursor p, for
     * checkpoints in KurrentDB's wire formats); STELE_NONE for the first.
     * pos_head(): the cursor after the last commit visible to reads now
     * (read_all from it returns nothing yet); 0 for an empty store. */
    uint64_t (*pos_after)(backend *b, uint64_t pos);
    uint64_t (*pos_before)(backend *b, uint64_t pos);
    int (*pos_head)(backend *b, uint64_t *next);
    /* Commit notification, for subscriptions. commit_gen() changes after
     * every commit that is visible to reads; wait_commit() sleeps until it
     * differs from `gen` or `timeout_ms` passes (-1: no limit). watch()
     * makes an eventfd readable after every commit. */
    uint32_t (*commit_gen)(backend *b);
    void (*wait_commit)(backend *b, uint32_t gen, int timeout_ms);
    int (*watch)(backend *b, int *fd);
    void (*unwatch)(backend *b, int fd);
    /* Copy the store into a backup directory (stele_backup). NULL: the
     * backend is backed up with its database's own tools. */
    int (*backup)(backend *b, const char *dest, const stele_backup_options *opts,
                  stele_backup_result *res);
    /* Reclaim the space of hidden events (stele_scavenge). NULL: the
     * backend has nothing to reclaim. */
    int (*scavenge)(backend *b, const stele_scavenge_options *opts, stele_scavenge_result *res);
    /* List stream, category or type names (stele_list_names; arguments
     * checked). fn is called for each, in byte order; its non-zero return
     * stops the walk and is returned. NULL: the backend cannot list. */
    int (*list_names)(backend *b, int kind, const char *prefix, const char *after, size_t limit,
                      unsigned flags, int (*fn)(void *ctx, const stele_name_info *info),
                      void *ctx);
    /* The hash chain (local_chain.c; NULL: the backend has none). The head
     * (unsigned), and the commits from the one holding position `from` to
     * the head: fn gets each in order, with its records (bytes, n) when it
     * holds an event at or before `to` (or lies between such commits), else
     * only its digest (bytes NULL). */
    int (*chain_head)(backend *b, stele_chain_head *out);
    int (*chain_export)(backend *b, uint64_t from, uint64_t to,
                        int (*fn)(void *ctx, uint64_t seq, const uint8_t *bytes, size_t n,
                                  const uint8_t digest[32]),
                        void *ctx, uint64_t *first_seq, uint8_t prev[32], stele_chain_head *head);
    /* Consumer groups shared across servers (above); never NULL. */
    const backend_group_ops *groups;
    void (*close)(backend *b);
} backend_ops;

struct backend {
    const backend_ops *ops;
};

/* Open the store named by `uri` (src/backend/backend.c): a directory or
 * file: URI (the local engine), postgres:// or postgresql:// (a libpq
 * URI), dynamodb://. `opts` has its defaults filled in and was checked by
 * stele_open. 0 with *out, or the error (EINVAL for a URI this build
 * cannot open, naming what is missing). */
int backend_open(const char *uri, const stele_options *opts, backend **out);
/* 0 if b's ops implement BACKEND_OPS_VERSION; else closes b and returns
 * EINTERNAL naming the backend and both versions. */
int backend_check_version(backend *b);
/* The directory of a local-engine URI (a pointer into `uri`), or NULL if
 * `uri` names another backend or is a malformed file: URI. */
const char *backend_local_dir(const char *uri);

/* Each backend's open function: backend_open's table names them. */
int pg_backend_open(const char *uri, const stele_options *opts, backend **out);
int ddb_backend_open(const char *uri, const stele_options *opts, backend **out);

/* Claims kept in this process's memory (group_mem.c): the local engine's
 * groups (one process has the store: it owns every claim). */
extern const backend_group_ops group_mem_ops;
void group_mem_free(backend *b);
/* The PostgreSQL and DynamoDB tables (pg_groups.c, ddb_groups.c). */
extern const backend_group_ops pg_group_ops;
extern const backend_group_ops ddb_group_ops;

/* The local engine (src/backend/local.c). */
int local_open(const char *dir, const stele_options *opts, backend **out);
/* Verify a closed local store (src/backend/local_check.c). */
int local_check(const char *dir, char *report, size_t report_len);
/* Backups of the local engine (local_backup.c, local_restore.c): write the
 * log of a new store in `dir` from a backup (the caller opens it to rebuild
 * the indexes; *seg_size is the segment size found), verify a backup. */
int local_backup(backend *b, const char *dest, const stele_backup_options *opts,
                 stele_backup_result *res);
int local_restore(const char *src, const char *dir, const stele_restore_options *opts,
                  stele_restore_result *res, uint64_t *seg_size);
int local_backup_verify(const char *src, char *report, size_t report_len);

#endif
