/*
 * rules_int.h - what the rule modules share (rule_def.c: definitions,
 * rules.c: the registry, persistence and the public calls, worker.c: live
 * delivery, deliver.c: the delivery engine, webhook.c: HTTP targets,
 * render.c: request bodies, replay.c: replays).
 *
 * Locks: reg.mu (the list of rules) before rule.mu (one rule's definition,
 * state and replays). Neither is held while waiting for the store's writer
 * or for a thread to stop. Counters are atomics written by one thread.
 */
#ifndef STELE_RULES_INT_H
#define STELE_RULES_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <jansson.h>

#include "rules/pattern.h"
#include "store/store_int.h"
#include "sub/group_int.h"
#include "sub/sub_int.h"
#include "util/util.h"

#define RULES_STREAM "$rules"
#define RULE_GROUP_PREFIX "$rule-"
#define RULE_CONSUMER "rules"
#define EV_RULE_SAVED "RuleSaved"
#define EV_RULE_DELETED "RuleDeleted"
#define REPLAYS_MAX 16u      /* running replays per rule */
#define REPLAYS_KEPT 32u     /* finished replays remembered per rule */

/* ------------------------------------------------------------ definitions */

enum { TARGET_WEBHOOK, TARGET_STREAM, TARGET_OTHER };
struct target_ops;
enum { PKEY_STREAM, PKEY_CATEGORY, PKEY_TYPE, PKEY_NONE, PKEY_DATA, PKEY_METADATA };

/* A checked, compiled rule definition. Immutable once made, shared by the
 * rule, its worker and its replays (reference counted). */
typedef struct rule_def {
    _Atomic int refs;
    json_t *doc;          /* normalized definition (secret included) */
    pattern *pat;
    sub_filter *source;   /* NULL: every non-system event */
    int target;
    const struct target_ops *ops; /* the target's implementation (targets.c) */
    void *tcfg;           /* the target's own parsed configuration (ops->free_cfg) */
    uint32_t batch;       /* events per deliver() call; 0: ops->batch_max */
    /* webhook */
    char *url, *secret, *tmpl, *content_type;
    json_t *headers;      /* object of strings, or NULL */
    uint32_t timeout_ms;
    /* stream */
    char *stream;
    int link;
    /* retry policy */
    uint32_t max_attempts;
    uint64_t max_age_ms;
    uint32_t backoff_ms, backoff_max_ms;
    /* ordering and bounds */
    int pkey;
    char *pkey_field;     /* PKEY_DATA / PKEY_METADATA: top-level member */
    uint32_t max_in_flight, max_buffered;
    uint64_t start;       /* STELE_END, or the first position */
    int enabled;
} rule_def;

/* Helpers for target parsers: an error names "path.key". */
int rdef_only_keys(json_t *obj, const char *path, const char *const *keys);
int rdef_get_uint(json_t *obj, const char *path, const char *key, uint64_t lo, uint64_t hi,
                  uint64_t *out);
int rdef_get_str(json_t *obj, const char *path, const char *key, size_t max, int required,
                 char **out);
int rdef_check_template(const char *t);

/* Parse and check a definition (EINVAL with the path of the error). */
int rule_def_parse(const char *json, size_t len, rule_def **out);
/* From the normalized document of a stored definition. */
int rule_def_from_doc(json_t *doc, rule_def **out);
rule_def *rule_def_ref(rule_def *d);
void rule_def_unref(rule_def *d);
/* The definition as users see it (secret hidden): malloc'd JSON text. */
char *rule_def_public_json(const rule_def *d);
/* 1 if the event passes the source filter and the pattern. */
int rule_def_matches(const rule_def *d, const stele_event *e, pattern_input **in);
/* Check a rule name. 0 or EINVAL. */
int rule_name_check(const char *name);

/* ------------------------------------------------------------ counters */

typedef struct rule_stats {
    _Atomic uint64_t matched, delivered, retries, dead, failed;
    _Atomic uint64_t failures[STELE_FAIL_KINDS];
    _Atomic uint64_t in_flight, pending;
    _Atomic int64_t oldest_us; /* created time of the oldest held event, 0: none */
    _Atomic uint64_t latency[STELE_RULE_LAT_BUCKETS + 1];
    _Atomic uint64_t latency_sum_us;
} rule_stats;

void rule_stats_latency(rule_stats *st, int64_t us);

/* ------------------------------------------------------------ rendering */

/* The event as reads render it, plus "replay":true for a replay. */
int render_event_json(buf *b, const stele_event *e, int is_replay);
/* The request body of a webhook: the event JSON or the template. */
int render_body(buf *b, const rule_def *d, const stele_event *e, int is_replay);

/* ------------------------------------------------------------ webhooks */

typedef struct wh wh;

typedef struct wh_result {
    long status;           /* HTTP status, 0 if none came */
    int kind;              /* STELE_FAIL_* or -1: delivered */
    int retryable;
    int64_t retry_after_ms; /* from Retry-After, -1 if none */
    char error[256];
} wh_result;

typedef void (*wh_done_fn)(void *ctx, void *tag, const wh_result *r);

int wh_new(wh **out);
void wh_free(wh *w);
/* Start a POST of event e under definition d; `tag` comes back in the
 * result. Everything needed is copied. */
int wh_post(wh *w, const rule_def *d, const char *rule_name, const stele_event *e, uint32_t attempt,
            uint64_t replay_id, void *tag);
/* Wait up to timeout_ms for transfers or `extra_fd` (-1: none), then call
 * done for every finished transfer. */
int wh_poll(wh *w, int timeout_ms, int extra_fd, wh_done_fn done, void *ctx);
size_t wh_running(const wh *w);
/* Stele-Signature value for body at unix time t (tests use it too). */
void wh_sign(const char *secret, int64_t t, const void *body, size_t len, char out[96]);

/* ------------------------------------------------------------ targets */

/*
 * A target type (targets.c lists them). Parsing runs when a rule is saved;
 * a delivery engine opens one connection per rule (or replay) and hands it
 * events in order. A target is either asynchronous (webhooks: deliver.c
 * drives wh_post / wh_poll itself) or synchronous: deliver() is called on
 * the engine's thread with a batch of events, in order within each
 * partition, and fills one result per event it attempted.
 *
 * exactly_once: the target applies each event once by itself (a read model
 * that keeps the rule's checkpoint in its own transaction). The engine then
 * keeps every event of the rule in one queue, in position order, so the
 * target's checkpoint (the last applied position) is exact: an event at or
 * below it was applied and is skipped on a retry, a redelivery after a
 * crash or a replay.
 */
enum { TGT_DELIVERED, TGT_RETRY, TGT_FAIL, TGT_NOT_TRIED };

typedef struct tgt_result {
    int outcome;            /* TGT_* */
    int kind;               /* STELE_FAIL_* when not delivered */
    int64_t retry_after_ms; /* -1: none */
    char error[256];        /* the target's own error text (never credentials) */
} tgt_result;

typedef struct target_ops {
    const char *type; /* "webhook", "stream", "postgres", ... */
    /* Check target's JSON object t (path "target") and fill d->tcfg (and
     * the legacy fields of d). EINVAL with the member's path. */
    int (*parse)(json_t *t, rule_def *d);
    /* Write defaults into the stored document's target object (optional). */
    int (*normalize)(json_t *t, const rule_def *d);
    void (*free_cfg)(rule_def *d); /* optional */
    /* Hide secrets in the public copy of the target object (optional). */
    void (*redact)(json_t *t);
    /* Synchronous targets only. open: connect (errors are retried by the
     * engine, with text in *err). deliver: attempt evs[0..n) in order;
     * fill res[i] for each; an event after a failed one of the same
     * partition may be left TGT_NOT_TRIED. */
    int (*open)(const rule_def *d, stele_db *db, const char *rule_name, void **conn,
                char err[256]);
    void (*deliver)(void *conn, const rule_def *d, const stele_event *const *evs, size_t n,
                    uint64_t replay_id, tgt_result *res);
    void (*close)(void *conn);
    uint32_t batch_max; /* events per deliver() call */
    int exactly_once;
    int async;
} target_ops;

/* target_tmpl.c: {{...}} text templates (subjects, routing keys). */
int tmpl_check(const char *path, const char *t);
/* Render into out (cap bytes, NUL-terminated); bytes of `bad` in
 * substituted values become '_'. -1 if it does not fit. */
int tmpl_render(const char *t, const stele_event *e, const char *bad, char *out, size_t cap);
/* The password (or token) a target reads from the environment variable
 * `env` or the file `file` (first line); 0, or -1 with err set. */
int target_secret(const char *env, const char *file, char *out, size_t cap, char err[256]);

const target_ops *target_find(const char *type);
/* "webhook", "stream", ...: the known types, for error messages. */
const char *target_names(void);
extern const target_ops target_webhook, target_stream;
extern const target_ops target_kinesis, target_dynamodb; /* kinesis.c, dynamodb.c */
#ifdef STELE_WITH_POSTGRES
extern const target_ops target_postgres;
#endif
#ifdef STELE_WITH_NATS
extern const target_ops target_nats;
#endif
#ifdef STELE_WITH_RABBITMQ
extern const target_ops target_rabbitmq;
#endif

/* ------------------------------------------------------------ delivery */

typedef struct dlv dlv;

/* Outcome of an event: delivered, or given up (reason = last error). */
enum { DLV_DELIVERED, DLV_DEAD };
typedef void (*dlv_done_fn)(void *ctx, const stele_event *e, int outcome, const char *reason);

/* replay_id 0: live delivery. `st` receives the counters. */
int dlv_new(stele_db *db, const char *rule_name, rule_def *d, uint64_t replay_id, rule_stats *st,
            dlv_done_fn done, void *ctx, dlv **out);
void dlv_free(dlv *d);
/* Use definition d for attempts from now on (takes a reference). */
void dlv_set_def(dlv *d, rule_def *def);
/* Hold event e (copied) for delivery behind its partition. */
int dlv_add(dlv *d, const stele_event *e);
size_t dlv_held(const dlv *d);
/* Start what is due, wait up to wait_ms (less if a retry is due sooner)
 * for transfers or extra_fd, and report finished events. */
void dlv_step(dlv *d, int wait_ms, int extra_fd);

/* ------------------------------------------------------------ rules */

struct rules_reg;
typedef struct replay replay;

typedef struct rule {
    struct rules_reg *reg;
    char name[STELE_RULE_NAME_MAX + 1];
    char group[STELE_RULE_NAME_MAX + sizeof RULE_GROUP_PREFIX];
    pthread_mutex_t mu;
    rule_def *def;        /* current definition (mu) */
    uint64_t def_gen;     /* bumped on every change (mu) */
    int deleted;          /* (mu) */
    pthread_t thread;
    int running;          /* worker thread started (reg.mu) */
    _Atomic int stop;
    rule_stats st;
    char last_error[256]; /* (mu) */
    replay *replays;      /* newest first (mu) */
    _Atomic int refs;
    struct rule *next;
} rule;

typedef struct rules_reg {
    stele_db *db;
    pthread_mutex_t mu;
    rule *list;
    int started;
    uint64_t next_replay_id;
} rules_reg;

void rule_unref(rule *r);
void rule_set_error(rule *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
rule_def *rule_current_def(rule *r, uint64_t *gen);

/* worker.c: the live delivery thread of a rule. */
void *rule_worker_main(void *arg);

/* replay.c */
int replay_start(rule *r, const stele_replay_window *w, uint64_t id);
void replays_stop_all(rule *r);
int replay_infos(rule *r, stele_replay_info **out, size_t *n);
int replay_cancel(rule *r, uint64_t id);

/* Stop the rules (rules.c): their threads and consumers. stele_close
 * calls it through db->close_up[STORE_UP_RULES]. */
void rules_close(stele_db *db);

#endif
