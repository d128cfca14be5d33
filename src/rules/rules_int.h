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

enum { TARGET_WEBHOOK, TARGET_STREAM };
enum { PKEY_STREAM, PKEY_CATEGORY, PKEY_TYPE, PKEY_NONE, PKEY_DATA, PKEY_METADATA };

/* A checked, compiled rule definition. Immutable once made, shared by the
 * rule, its worker and its replays (reference counted). */
typedef struct rule_def {
    _Atomic int refs;
    json_t *doc;          /* normalized definition (secret included) */
    pattern *pat;
    sub_filter *source;   /* NULL: every non-system event */
    int target;
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

#endif
