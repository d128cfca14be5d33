/*
 * deliver.c - the delivery engine of one rule (live) or one replay: the
 * matched events it holds, in FIFO queues per partition, and their
 * attempts. Used by one thread only.
 *
 * Ordering: the partition key (the stream by default; category, type, a
 * top-level member of data or metadata, or none) maps each event to a
 * queue; only the head of a queue is ever attempted, so events of one
 * partition reach the target in the order they came (for live delivery:
 * the stream's revision order), and a failing event holds back only its
 * own partition. Heads of different partitions are attempted in parallel,
 * at most max_in_flight at once. "none" gives every event its own queue.
 *
 * An attempt ends in one of three ways:
 *   delivered   2xx (or the stream append succeeded): the event leaves,
 *               done(DELIVERED).
 *   retry       408, 429, 5xx, a timeout or a transport error, while
 *               attempts < maxAttempts and the event has been held less
 *               than maxAgeSeconds: it stays at its queue's head, due
 *               again after backoff = min(maxBackoff, backoff * 2^(n-1)),
 *               jittered to [backoff/2, backoff], and never before the
 *               target's Retry-After.
 *   dead        any other status, or retries used up: done(DEAD) with the
 *               last error (live delivery dead-letters it).
 * Targets (target_ops, rules_int.h): webhooks are asynchronous, many
 * heads on the wire at once through libcurl's multi handle. Every other
 * target is synchronous: each step hands deliver() one batch made of the
 * due partitions' queues (from each head, in order, up to the target's
 * batch_max) and settles each event from its result; a failed event holds
 * back the rest of its partition. A target that applies events exactly
 * once itself (a read model with its own checkpoint) gets one queue for
 * the whole rule, in position order, whatever the partitionKey. A
 * connection failure closes the connection; the next step reopens it.
 *
 * The caller bounds what the engine holds (max_buffered), so memory stays
 * bounded however slow the target is.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rules/rules_int.h"

typedef struct item {
    ev_blob *ev;
    struct part *part;
    struct item *next;
    uint32_t attempts;
    int on_wire;
    int64_t added_ms, due_ms;
    char error[256];
} item;

typedef struct part {
    struct part *hnext;        /* hash chain */
    struct part *prev, *next;  /* list of partitions holding items */
    item *head, *tail;
    uint32_t hash;
    size_t klen;
    char key[];
} part;

struct dlv {
    stele_db *db;
    char rule[STELE_RULE_NAME_MAX + 1];
    rule_def *def;
    uint64_t replay_id;
    rule_stats *st;
    dlv_done_fn done;
    void *ctx;
    wh *wh;                    /* asynchronous targets (webhooks) */
    void *conn;                /* synchronous targets: open connection or NULL */
    const target_ops *conn_ops;
    item **batch;              /* synchronous targets: the events of one call */
    const stele_event **bev;
    tgt_result *bres;
    size_t batch_cap;
    part **tab;
    size_t nb;                 /* buckets, a power of two */
    part *parts;               /* partitions with items */
    size_t held, on_wire;
    uint64_t seq;              /* for "none": unique keys */
    uint64_t rnd;
};

static int64_t now_ms(void) { return (int64_t)(time_mono_ns() / 1000000u); }

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

int dlv_new(stele_db *db, const char *rule_name, rule_def *d, uint64_t replay_id, rule_stats *st,
            dlv_done_fn done, void *ctx, dlv **out)
{
    dlv *v = calloc(1, sizeof *v);
    if (!v)
        return err_set(STELE_ENOMEM, "out of memory");
    v->db = db;
    snprintf(v->rule, sizeof v->rule, "%s", rule_name);
    v->def = rule_def_ref(d);
    v->replay_id = replay_id;
    v->st = st;
    v->done = done;
    v->ctx = ctx;
    v->nb = 1024;
    v->rnd = time_mono_ns() | 1;
    v->tab = calloc(v->nb, sizeof *v->tab);
    v->batch_cap = 1000;
    v->batch = calloc(v->batch_cap, sizeof *v->batch);
    v->bev = calloc(v->batch_cap, sizeof *v->bev);
    v->bres = calloc(v->batch_cap, sizeof *v->bres);
    int rc = v->tab && v->batch && v->bev && v->bres ? wh_new(&v->wh)
                                                      : err_set(STELE_ENOMEM, "out of memory");
    if (rc) {
        dlv_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

static void part_remove(dlv *v, part *p)
{
    part **s = &v->tab[p->hash & (v->nb - 1)];
    while (*s != p)
        s = &(*s)->hnext;
    *s = p->hnext;
    if (p->prev)
        p->prev->next = p->next;
    else
        v->parts = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);
}

void dlv_free(dlv *v)
{
    if (!v)
        return;
    wh_free(v->wh); /* aborts transfers: their items are simply dropped */
    if (v->conn)
        v->conn_ops->close(v->conn);
    free(v->batch);
    free(v->bev);
    free(v->bres);
    while (v->parts) {
        part *p = v->parts;
        while (p->head) {
            item *it = p->head;
            p->head = it->next;
            ev_blob_unref(it->ev);
            free(it);
        }
        part_remove(v, p);
    }
    if (v->st) {
        atomic_store(&v->st->in_flight, 0);
        atomic_store(&v->st->pending, 0);
        atomic_store(&v->st->oldest_us, 0);
    }
    free(v->tab);
    rule_def_unref(v->def);
    free(v);
}

void dlv_set_def(dlv *v, rule_def *def)
{
    if (v->conn) { /* reconnect with the new definition */
        v->conn_ops->close(v->conn);
        v->conn = NULL;
    }
    rule_def_ref(def);
    rule_def_unref(v->def);
    v->def = def;
}

size_t dlv_held(const dlv *v) { return v->held; }

/* A top-level member of JSON data as the key (its raw text), or "". */
static void json_member_key(const void *data, size_t len, const char *field, buf *out)
{
    json_error_t je;
    json_t *j = json_loadb(data, len, 0, &je);
    json_t *v = json_is_object(j) ? json_object_get(j, field) : NULL;
    if (json_is_string(v)) {
        buf_append(out, json_string_value(v), json_string_length(v));
    } else if (v) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s)
            buf_append(out, s, strlen(s));
        free(s);
    }
    json_decref(j);
}

static void part_key(dlv *v, const stele_event *e, buf *k)
{
    const rule_def *d = v->def;
    if (d->ops->exactly_once)
        return; /* one queue in position order: the target's checkpoint is exact */
    switch (d->pkey) {
    case PKEY_CATEGORY:
        buf_append(k, e->stream, stream_category_len(e->stream, e->stream_len));
        break;
    case PKEY_TYPE:
        buf_append(k, e->type, e->type_len);
        break;
    case PKEY_NONE: {
        uint64_t s = ++v->seq;
        buf_append(k, "\0n", 2);
        buf_append(k, &s, sizeof s);
        break;
    }
    case PKEY_DATA:
        if (e->flags & STELE_EVENT_JSON)
            json_member_key(e->data, e->data_len, d->pkey_field, k);
        break;
    case PKEY_METADATA:
        if (e->flags & STELE_META_JSON)
            json_member_key(e->metadata, e->metadata_len, d->pkey_field, k);
        break;
    default:
        buf_append(k, e->stream, e->stream_len);
    }
}

int dlv_add(dlv *v, const stele_event *e)
{
    buf k = {0};
    part_key(v, e, &k);
    const char *key = k.p ? (const char *)k.p : "";
    uint32_t h = hash_bytes(key, k.len);
    part *p = v->tab[h & (v->nb - 1)];
    while (p && !(p->hash == h && p->klen == k.len && !memcmp(p->key, key, k.len)))
        p = p->hnext;
    item *it = calloc(1, sizeof *it);
    if (it)
        it->ev = ev_blob_copy(e);
    if (!p && it && it->ev && (p = malloc(sizeof *p + k.len + 1))) {
        memset(p, 0, sizeof *p);
        p->hash = h;
        p->klen = k.len;
        memcpy(p->key, key, k.len);
        p->key[k.len] = 0;
        p->hnext = v->tab[h & (v->nb - 1)];
        v->tab[h & (v->nb - 1)] = p;
        p->next = v->parts;
        if (v->parts)
            v->parts->prev = p;
        v->parts = p;
    }
    buf_free(&k);
    if (!it || !it->ev || !p) {
        if (it)
            ev_blob_unref(it->ev);
        free(it);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    it->part = p;
    it->added_ms = now_ms();
    if (p->tail)
        p->tail->next = it;
    else
        p->head = it;
    p->tail = it;
    v->held++;
    if (v->st)
        atomic_store(&v->st->pending, v->held);
    return 0;
}

void rule_stats_latency(rule_stats *st, int64_t us)
{
    if (us < 0)
        us = 0;
    int i = 0;
    while (i < STELE_RULE_LAT_BUCKETS && (double)us / 1e6 > stele_rule_latency_bound(i))
        i++;
    atomic_fetch_add(&st->latency[i], 1);
    atomic_fetch_add(&st->latency_sum_us, (uint64_t)us);
}

/* The head of p leaves: delivered or dead. */
static void finish(dlv *v, item *it, int outcome)
{
    part *p = it->part;
    p->head = it->next;
    if (!p->head)
        p->tail = NULL;
    v->held--;
    if (v->st) {
        if (outcome == DLV_DELIVERED) {
            atomic_fetch_add(&v->st->delivered, 1);
            if (!v->replay_id)
                rule_stats_latency(v->st, time_now_us() - it->ev->e.created_us);
        } else {
            atomic_fetch_add(&v->st->dead, 1);
        }
        atomic_store(&v->st->pending, v->held);
    }
    v->done(v->ctx, &it->ev->e, outcome, it->error);
    ev_blob_unref(it->ev);
    free(it);
    if (!p->head)
        part_remove(v, p);
}

static uint64_t rnd_next(dlv *v)
{
    v->rnd ^= v->rnd << 13;
    v->rnd ^= v->rnd >> 7;
    v->rnd ^= v->rnd << 17;
    return v->rnd;
}

/* An attempt failed: schedule a retry or give up. */
static void failed(dlv *v, item *it, int kind, int retryable, int64_t retry_after, const char *err)
{
    const rule_def *d = v->def;
    if (v->st) {
        atomic_fetch_add(&v->st->failures[kind], 1);
        atomic_fetch_add(&v->st->failed, 1);
    }
    snprintf(it->error, sizeof it->error, "attempt %u: %s", it->attempts, err);
    int64_t now = now_ms();
    if (!retryable || it->attempts >= d->max_attempts) {
        if (retryable)
            snprintf(it->error + strlen(it->error), sizeof it->error - strlen(it->error),
                     " (%u attempts)", it->attempts);
        finish(v, it, DLV_DEAD);
        return;
    }
    uint64_t b = d->backoff_ms;
    for (uint32_t i = 1; i < it->attempts && b < d->backoff_max_ms; i++)
        b *= 2;
    if (b > d->backoff_max_ms)
        b = d->backoff_max_ms;
    int64_t delay = (int64_t)(b / 2 + rnd_next(v) % (b / 2 + 1));
    if (retry_after > delay)
        delay = retry_after;
    if (now + delay - it->added_ms > (int64_t)d->max_age_ms) {
        snprintf(it->error + strlen(it->error), sizeof it->error - strlen(it->error),
                 " (max age %llus reached)", (unsigned long long)(d->max_age_ms / 1000));
        finish(v, it, DLV_DEAD);
        return;
    }
    it->due_ms = now + delay;
    if (v->st)
        atomic_fetch_add(&v->st->retries, 1);
}

static void wh_done(void *ctx, void *tag, const wh_result *r)
{
    dlv *v = ctx;
    item *it = tag;
    it->on_wire = 0;
    v->on_wire--;
    if (r->kind < 0)
        finish(v, it, DLV_DELIVERED);
    else
        failed(v, it, r->kind, r->retryable, r->retry_after_ms, r->error);
}

/* Start every due partition head, up to max_in_flight on the wire. Sets
 * *next_due to the earliest head still backing off. Returns how many
 * attempts started. */
static int start_due(dlv *v, int64_t now, int64_t *next_due)
{
    const rule_def *d = v->def;
    int started = 0;
    for (part *p = v->parts, *pn; p; p = pn) {
        pn = p->next;
        item *it = p->head;
        if (it->on_wire)
            continue;
        if (it->due_ms > now) {
            if (it->due_ms < *next_due)
                *next_due = it->due_ms;
            continue;
        }
        if (v->on_wire >= d->max_in_flight)
            break;
        it->attempts++;
        started++;
        if (wh_post(v->wh, d, v->rule, &it->ev->e, it->attempts, v->replay_id, it)) {
            it->attempts--;
            it->due_ms = now + 100;
            continue;
        }
        it->on_wire = 1;
        v->on_wire++;
    }
    return started;
}

/* Synchronous targets: one deliver() call with the due partitions' events
 * (each partition's queue from its head, in order), then settle each. A
 * failed event holds back the rest of its partition. Returns how many
 * events were settled or retried. */
static int sync_round(dlv *v, int64_t now, int64_t *next_due)
{
    const rule_def *d = v->def;
    const target_ops *ops = d->ops;
    size_t want = d->batch ? d->batch : ops->batch_max;
    size_t cap = want < v->batch_cap ? want : v->batch_cap, n = 0;
    for (part *p = v->parts; p && n < cap; p = p->next) {
        if (p->head->due_ms > now) {
            if (p->head->due_ms < *next_due)
                *next_due = p->head->due_ms;
            continue;
        }
        for (item *it = p->head; it && n < cap; it = it->next)
            v->batch[n++] = it;
    }
    if (!n)
        return 0;
    if (!v->conn) {
        char err[256] = "";
        if (ops->open(d, v->db, v->rule, &v->conn, err)) {
            v->conn = NULL;
            for (size_t i = 0; i < n; i++) {
                item *it = v->batch[i];
                if (it != it->part->head || it->due_ms > now)
                    continue;
                it->attempts++;
                failed(v, it, STELE_FAIL_CONNECT, 1, -1, err[0] ? err : "cannot connect");
            }
            return (int)n;
        }
        v->conn_ops = ops;
    }
    for (size_t i = 0; i < n; i++) {
        v->bev[i] = &v->batch[i]->ev->e;
        memset(&v->bres[i], 0, sizeof v->bres[i]);
        v->bres[i].outcome = TGT_NOT_TRIED;
        v->bres[i].retry_after_ms = -1;
    }
    ops->deliver(v->conn, d, v->bev, n, v->replay_id, v->bres);
    int reconnect = 0, settled = 0;
    for (size_t i = 0; i < n; i++) {
        item *it = v->batch[i];
        if (!it)
            continue;
        const tgt_result *r = &v->bres[i];
        if (r->outcome != TGT_DELIVERED) /* the rest of its partition waits */
            for (size_t j = i + 1; j < n; j++)
                if (v->batch[j] && v->batch[j]->part == it->part)
                    v->batch[j] = NULL;
        if (r->outcome == TGT_NOT_TRIED)
            continue;
        it->attempts++;
        settled++;
        if (r->outcome == TGT_DELIVERED) {
            finish(v, it, DLV_DELIVERED);
            continue;
        }
        reconnect |= r->kind == STELE_FAIL_CONNECT;
        failed(v, it, r->kind, r->outcome == TGT_RETRY, r->retry_after_ms,
               r->error[0] ? r->error : "failed");
    }
    if (reconnect) {
        ops->close(v->conn);
        v->conn = NULL;
    }
    return settled;
}

void dlv_step(dlv *v, int wait_ms, int extra_fd)
{
    const rule_def *d = v->def;
    int64_t now = now_ms(), next_due = INT64_MAX;
    int started = d->ops->async ? start_due(v, now, &next_due) : sync_round(v, now, &next_due);
    if (next_due != INT64_MAX && next_due - now < wait_ms)
        wait_ms = (int)(next_due - now < 0 ? 0 : next_due - now);
    if (started && !d->ops->async)
        wait_ms = 0;
    if (v->on_wire || d->ops->async) {        size_t before = v->held;
        wh_poll(v->wh, wait_ms, extra_fd, wh_done, v);
        /* Finished heads free their partitions: start the next events now
         * and send them with this step's transfers, not a loop later. */
        if (v->held != before) {
            int64_t nd = INT64_MAX;
            if (start_due(v, now_ms(), &nd))
                wh_poll(v->wh, 0, -1, wh_done, v);
        }
    } else if (wait_ms > 0) {
        struct pollfd pf = {.fd = extra_fd, .events = POLLIN};
        if (poll(&pf, extra_fd >= 0 ? 1 : 0, wait_ms) > 0 && (pf.revents & POLLIN)) {
            uint64_t x;
            ssize_t r = read(extra_fd, &x, sizeof x);
            (void)r;
        }
    }
    if (v->st) {
        int64_t oldest = 0;
        for (part *p = v->parts; p; p = p->next)
            if (!oldest || p->head->ev->e.created_us < oldest)
                oldest = p->head->ev->e.created_us;
        atomic_store(&v->st->in_flight, v->on_wire);
        atomic_store(&v->st->oldest_us, oldest);
    }
}
