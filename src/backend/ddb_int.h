/*
 * ddb_int.h - internals of the DynamoDB backend (ddb.c: open, close,
 * notification; ddb_api.c: calls and tables; ddb_write.c and ddb_plan.c:
 * the writer; ddb_deletes.c: deletes as events of `$deletes`;
 * ddb_stream.c: metadata, snapshots; ddb_read.c:
 * reads and queries). The table layout, the feed and the limits are
 * described at the top of ddb.c and in docs/backends.md.
 */
#ifndef STELE_DDB_INT_H
#define STELE_DDB_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "rules/aws_http.h"
#include "backend/page.h"

/* DynamoDB's own limits. */
#define DDB_MAX_ACTIONS 100u          /* items per TransactWriteItems */
#define DDB_MAX_TXN_BYTES (4u << 20)  /* bytes per TransactWriteItems */
#define DDB_MAX_ITEM (400u << 10)     /* bytes per item */
/* What Stele keeps below them: room for attribute names and JSON/base64
 * overhead is accounted when items are built; this is the event payload
 * a single item may carry (data + metadata + type + tags). */
#define DDB_MAX_EVENT_PAYLOAD (280u << 10)
/* Positions per feed bucket (a commit holds at most DDB_MAX_ACTIONS events,
 * so the commit holding position p starts in p's bucket or the one before). */
#define DDB_BUCKET_SHIFT 12
#define DDB_CLIENTS 6
#define DDB_SEQ_KEY "\001seq"

/* The key of a counter item ("\x02" kind name) into out (>= 258 bytes). */
static inline size_t ddb_key_name(char kind, const char *name, size_t len, char *out)
{
    out[0] = '\002';
    out[1] = kind;
    memcpy(out + 2, name, len);
    return len + 2;
}

/* The category of a stream name: up to its first '-' (all of it when none). */
static inline size_t ddb_category_len(const char *s, size_t n)
{
    const char *d = memchr(s, '-', n);
    return d && d != s ? (size_t)(d - s) : n;
}

typedef struct ddb_watch {
    int fd;
    struct ddb_watch *next;
} ddb_watch;

typedef struct dreq dreq;
typedef struct group group;
typedef struct dcache dcache;

typedef struct ddb {
    backend base;
    char *endpoint, *region, *prefix;
    char t_events[256], t_streams[256], t_ids[256], t_feed[256], t_snaps[256];
    aws_creds creds;
    stele_options opts;
    pool *pl;
    /* HTTP clients (one connection each), lent to one call at a time. */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    aws_client *clients[DDB_CLIENTS];
    int nfree;
    /* The writer: group commit of queued appends. */
    pthread_t writer;
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    dreq *qhead, *qtail;
    int stop;
    /* Commit notification: a poller watches the sequencer. */
    pthread_t poller;
    pthread_cond_t pcv; /* the poller's sleep (with qmu) */
    pthread_mutex_t gmu;
    pthread_cond_t gcv;
    _Atomic uint32_t gen;
    _Atomic uint64_t head; /* next position as last seen */
    ddb_watch *watches;
    _Atomic uint64_t appends, groups, retries, events;
    _Atomic uint64_t wcu_milli, rcu_milli; /* capacity the writer consumed, x1000 */
    _Atomic int down; /* the last call failed to reach DynamoDB */
    _Atomic int view_hole; /* a view read stopped at an ordinal not yet indexed */
    group *grp;       /* the writer's group (large: allocated once) */
    dcache *cache;    /* the writer's cache of the sequencer and streams */
} ddb;

/* ddb_api.c: calls, attribute values, tables. */
/* One DynamoDB call: op "PutItem" ...; req is consumed. 0 with *resp (the
 * parsed answer, caller json_decref; may be NULL if resp is NULL), or an
 * error set (EIO when DynamoDB could not be reached, EBUSY when it
 * throttled after the retries, EINTERNAL for other refusals), with the
 * error type in type (if not NULL) and the raw answer in *resp for
 * TransactionCanceledException. */
int ddb_call(ddb *D, const char *op, json_t *req, json_t **resp, char type[128]);
/* A Query or Scan (req, consumed) page after page: fn(ctx, items) for each
 * answer's Items in order, until fn returns nonzero (> 0: stop; < 0: that
 * error, set) or the last page. 0 or an error. */
int ddb_pages(ddb *D, const char *op, json_t *req, int (*fn)(void *ctx, json_t *items), void *ctx);
json_t *ddb_s(const char *s, size_t n);
json_t *ddb_n(int64_t v);
json_t *ddb_nu(uint64_t v); /* UINT64_MAX as -1 */
json_t *ddb_b(const void *p, size_t n);
/* Attribute readers: 0 or ENOTFOUND (missing) / ECORRUPT (wrong type). */
int ddb_get_n(json_t *item, const char *name, int64_t *out);
uint64_t ddb_get_nu(json_t *item, const char *name); /* -1 or missing: UINT64_MAX */
const char *ddb_get_s(json_t *item, const char *name, size_t *len);
/* Base64 attribute decoded into a malloc'd buffer (NUL-terminated);
 * missing: *out NULL, *len 0. */
int ddb_get_b(json_t *item, const char *name, uint8_t **out, size_t *len);
int ddb_migrate(ddb *D);
/* Add an answer's ConsumedCapacity (an object or an array of them) to the
 * writer's write (1) or read (0) units. */
void ddb_count_capacity(ddb *D, json_t *resp, int write);

/* A stream's item in the streams table. */
typedef struct dstate {
    int found;
    uint64_t ver;               /* changes on every write to the item */
    uint64_t last, last_pos;    /* UINT64_MAX: none */
    uint64_t tb;                /* truncate-before of a soft delete */
    int deleted, tombstoned;
    uint64_t md_version;        /* UINT64_MAX: never set */
    uint64_t max_age, max_count, md_tb;
    uint32_t max_snaps;
    uint8_t *custom;            /* malloc'd or NULL */
    size_t custom_len;
} dstate;

void ddb_state_parse(json_t *item, dstate *st);
void ddb_state_free(dstate *st);
/* A consistent read of a stream's item. */
int ddb_state_get(ddb *D, const char *stream, size_t len, dstate *st);
uint64_t ddb_visible_rev(const dstate *st);
uint64_t ddb_stream_start(const dstate *st);
int ddb_event_visible(const dstate *st, uint64_t rev, int64_t created, int64_t now);
/* The sequencer (next position), read consistently. */
int ddb_seq_get(ddb *D, uint64_t *next);

/* ddb.c: wake this server's subscribers (a commit became visible). */
void ddb_notify(ddb *D);

/* ddb_write.c: the writer thread and the append entry points. */
int ddb_writer_new(ddb *D);
void ddb_writer_free(ddb *D);
void *ddb_writer_main(void *arg);
int ddb_append(backend *b, const append_args *a, stele_append_result *res);
int ddb_append_async(backend *b, const append_args *a, append_done_fn done, void *ctx);
int ddb_append_multi(backend *b, const multi_args *m, stele_append_result *per,
                     stele_multi_result *res);
int ddb_append_multi_async(backend *b, const multi_args *m, stele_append_result *per,
                           const stele_multi_result *init, stele_append_multi_cb done,
                           void *ctx, size_t nstreams);

/* ddb_stream.c */
int ddb_remove(backend *b, const char *stream, size_t len, int64_t expected, int tombstone,
               uint64_t *current);
int ddb_set_metadata(backend *b, const char *stream, size_t len, const stele_stream_metadata *md,
                     int64_t expected, uint64_t *version);
int ddb_put_snapshot(backend *b, const char *stream, size_t len, const stele_snapshot_in *s);

/* ddb_read.c */
int ddb_read_stream(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                    size_t limit, stele_page **out);
int ddb_read_stream_to(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                       size_t limit, uint64_t to, int has_as_of, int64_t as_of_us,
                       stele_page **out);
int ddb_read_all(backend *b, uint64_t from, int backwards, size_t limit, stele_page **out);
int ddb_head(backend *b, const char *stream, size_t len, stele_stream_info *out);
int ddb_query(backend *b, const query_args *q, stele_page **out);
int ddb_get_metadata(backend *b, const char *stream, size_t len, stele_stream_metadata **out);
int ddb_get_snapshot(backend *b, const char *stream, size_t len, uint64_t at_or_before,
                     stele_snapshot **out);
int ddb_load(backend *b, const char *stream, size_t len, size_t limit, stele_snapshot **snap,
             stele_page **events);
int ddb_read_matching(backend *b, const stele_condition *cond, uint64_t from, int backwards, size_t limit,
                      stele_page **out);
int ddb_cond_match(const stele_condition *c, const char *type, size_t type_len, const char *const *tags,
                   size_t ntags);
/* ddb_scavenge.c */
int ddb_scavenge(backend *b, const stele_scavenge_options *opts, stele_scavenge_result *res);

/* ddb_view.c */
int ddb_read_view(backend *b, int kind, const char *key, size_t key_len, uint64_t from, int backwards,
                  size_t limit, stele_page **out);
int ddb_list_names(backend *b, int kind, const char *prefix, const char *after, size_t limit, unsigned flags,
                   int (*fn)(void *ctx, const stele_name_info *info), void *ctx);

/* The feed item of the commit (group) holding position p, or *item NULL
 * if none; the answers are appended to the array *keep (which owns them). */
int ddb_feed_at(ddb *D, uint64_t p, json_t **keep, json_t **item);

/* Add an event item to a page. */
int ddb_page_add_item(stele_page *pg, json_t *item);

#endif
