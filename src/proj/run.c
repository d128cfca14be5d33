/*
 * run.c - the projection runner: one thread per running projection, and
 * the registry of a store's projections (db->projs).
 *
 * A runner owns its projection's JavaScript runtime (js.c) and loops:
 *
 *   read a page of events at its position (a catch-up subscription on
 *   $all with the query's source as a filter: history and live events
 *   alike, src/sub/sub.c), run the handlers on each, then commit the
 *   batch (pstore_commit: emitted events, changed partition states,
 *   checkpoint) on a thread of its own while the next batch is handled
 *   (one commit in flight: "Pipelining" below), then trim the partition
 *   cache.
 *
 * Partition states are cached in the heap and bounded by an LRU list kept
 * here (cache_partitions): a partition enters when prelude.js loads it,
 * moves to the front when a batch changes it, and the least recently used
 * clean ones are evicted after each commit (they are in the store).
 *
 * A handler that throws, runs past its time limit or exhausts its heap
 * faults the projection: the batch is dropped (nothing of it is
 * committed), the runtime is freed, the status becomes Faulted with the
 * message and the event's position, and the thread ends. The store, the
 * server and other projections are not affected. Enabling it again
 * restarts from its checkpoint.
 *
 * States: Stopped -> Running (enable, create, start) -> Stopped (disable),
 * Faulted (handler or commit failure) or Completed (a one-time projection
 * at the end it saw when it started).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proj/proj_int.h"

#define PAGE_EVENTS 16384
#define IDLE_CKPT_GAP 65536u
/* A batch stops before it writes this many streams (STELE_MAX_APPEND_STREAMS). */
#define BATCH_STREAMS (STELE_MAX_APPEND_STREAMS - 40)

/* ------------------------------------------------------------ key sets */

typedef struct knode {
    char *key;
    size_t klen;
    int is_new; /* no stored state when it was loaded: register it */
    int stored; /* a state of it is in the store (loaded, or committed since) */
    int keep_last; /* its state stream is known to keep only its last event */
    uint64_t gen;  /* the batch that last changed it: not evicted before that
                    * batch's commit is acknowledged */
    struct knode *hnext, *prev, *next;
} knode;

typedef struct kset {
    knode **tab;
    size_t nb, n;
    knode head; /* LRU list: head.next is the most recent */
} kset;

static uint64_t khash(const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)k[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void kset_init(kset *s)
{
    memset(s, 0, sizeof *s);
    s->head.next = s->head.prev = &s->head;
}

static knode *kset_find(kset *s, const char *k, size_t n)
{
    if (!s->nb)
        return NULL;
    for (knode *x = s->tab[khash(k, n) & (s->nb - 1)]; x; x = x->hnext)
        if (x->klen == n && !memcmp(x->key, k, n))
            return x;
    return NULL;
}

static void lru_unlink(knode *x)
{
    x->prev->next = x->next;
    x->next->prev = x->prev;
}

static void lru_front(kset *s, knode *x)
{
    x->next = s->head.next;
    x->prev = &s->head;
    s->head.next->prev = x;
    s->head.next = x;
}

/* Find or add `k`, moving it to the front. NULL on ENOMEM. */
static knode *kset_touch(kset *s, const char *k, size_t n, int *added)
{
    if (added)
        *added = 0;
    knode *x = kset_find(s, k, n);
    if (x) {
        lru_unlink(x);
        lru_front(s, x);
        return x;
    }
    if (s->n + 1 > s->nb / 2) {
        size_t nb = s->nb ? s->nb * 2 : 64;
        knode **t = calloc(nb, sizeof *t);
        if (!t)
            return NULL;
        for (size_t i = 0; i < s->nb; i++)
            for (knode *y = s->tab[i], *nx; y; y = nx) {
                nx = y->hnext;
                size_t b = khash(y->key, y->klen) & (nb - 1);
                y->hnext = t[b];
                t[b] = y;
            }
        free(s->tab);
        s->tab = t;
        s->nb = nb;
    }
    x = calloc(1, sizeof *x);
    if (!x || !(x->key = malloc(n + 1))) {
        free(x);
        return NULL;
    }
    memcpy(x->key, k, n);
    x->key[n] = 0;
    x->klen = n;
    size_t b = khash(k, n) & (s->nb - 1);
    x->hnext = s->tab[b];
    s->tab[b] = x;
    lru_front(s, x);
    s->n++;
    if (added)
        *added = 1;
    return x;
}

static void kset_remove(kset *s, knode *x)
{
    size_t b = khash(x->key, x->klen) & (s->nb - 1);
    knode **pp = &s->tab[b];
    while (*pp != x)
        pp = &(*pp)->hnext;
    *pp = x->hnext;
    lru_unlink(x);
    s->n--;
    free(x->key);
    free(x);
}

static void kset_free(kset *s)
{
    while (s->head.next != &s->head)
        kset_remove(s, s->head.next);
    free(s->tab);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------ runner */

/* A batch whose commit runs on its own thread while the runner handles
 * the next one (see "Pipelining" below). */
typedef struct inflight {
    int active, threaded;
    pthread_t thread;
    pcommit batch;
    char **keys;  /* the partitions it changes */
    size_t *lens, n;
    int shared;
    uint64_t gen, last_handled, next;
    stele_db *db;
    const proj_def *d;
    int rc;
    char msg[512];
} inflight;

/* Stream metadata writes (maxCount 1 on state streams) made by a thread
 * of their own, so that their fsyncs never hold up the runner: a bounded
 * queue of stream names; a name that does not fit is asked for again the
 * next time its partition is committed. */
#define RECLAIM_QUEUE 1024
typedef struct reclaimer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char (*names)[256];
    size_t head, n;
    int stop, started;
    pthread_t thread;
    stele_db *db;
} reclaimer;

typedef struct runner {
    proj *p;
    stele_db *db;
    proj_def d;
    proj_js *js;
    const proj_source *src;
    kset cache;   /* partitions in the heap, LRU */
    kset emitted; /* streams emitted to (registered) */
    pcommit batch;
    uint64_t cur_pos; /* position of the event being handled */
    const stele_event *cur; /* the event being handled */
    uint64_t emit_seq;
    uint64_t last_handled; /* position of the batch's last handled event */
    int shared_keep_last;   /* the shared state stream keeps only its last event */
    inflight fl;            /* the batch being committed, if fl.active */
    reclaimer rq;
    uint64_t gen;           /* batches prepared so far */
    uint64_t acked;         /* batches whose commit is acknowledged */
    char state_meta[96];    /* the metadata of the batch's states, for ... */
    size_t state_meta_len;
    uint64_t state_meta_pos; /* ... this last_handled (STELE_NONE: none yet) */
} runner;

static void *reclaim_main(void *arg)
{
    reclaimer *q = arg;
    char name[256];
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->n && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->stop)
            break;
        memcpy(name, q->names[q->head], sizeof name);
        q->head = (q->head + 1) % RECLAIM_QUEUE;
        q->n--;
        pthread_mutex_unlock(&q->mu);
        if (pstore_keep_last(q->db, name))
            err_clear(); /* only space is at stake: asked again later */
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void reclaim_stop(reclaimer *q)
{
    if (q->started) {
        pthread_mutex_lock(&q->mu);
        q->stop = 1;
        pthread_cond_signal(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv);
    }
    free(q->names);
    memset(q, 0, sizeof *q);
}

/* Superseded states: a partition's state stream gets maxCount 1 when its
 * second state is committed (a partition written once has nothing to
 * reclaim, so the common one-batch partition costs no metadata write);
 * scavenging then frees the older states (docs/projections.md). Queued
 * after the batch's commit for the reclaimer thread: maxCount 1 always
 * shows the newest state, so losing the request in a crash (or to a full
 * queue) only delays the reclaiming. 1 if queued. */
static int keep_last_state(runner *r, const char *key, size_t klen, int shared)
{
    reclaimer *q = &r->rq;
    char name[256];
    if (pstore_partition_stream(&r->d, key, klen, shared, name)) {
        err_clear();
        return 0;
    }
    if (!q->started) {
        if (!q->names && !(q->names = malloc(RECLAIM_QUEUE * sizeof *q->names)))
            return 0;
        q->db = r->db;
        pthread_mutex_init(&q->mu, NULL);
        pthread_cond_init(&q->cv, NULL);
        if (pthread_create(&q->thread, NULL, reclaim_main, q)) {
            pthread_mutex_destroy(&q->mu);
            pthread_cond_destroy(&q->cv);
            return 0;
        }
        q->started = 1;
    }
    pthread_mutex_lock(&q->mu);
    int queued = q->n < RECLAIM_QUEUE;
    if (queued) {
        memcpy(q->names[(q->head + q->n) % RECLAIM_QUEUE], name, sizeof name);
        q->n++;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return queued;
}

/* After handling event e of a foreachStream() projection: every
 * snapshot_every events of a stream, its state goes into the batch as a
 * snapshot record ($projections-NAME:snap-STREAM, pstore.c), committed
 * with the batch, so the k-th snapshot of a stream is normally its
 * snapshot stream's revision k. */
static int want_snapshot(runner *r, const stele_event *e, char *err, size_t errlen)
{
    if (!r->d.snapshot_every || !r->src->foreach_stream ||
        (e->revision + 1) % r->d.snapshot_every != 0 ||
        (r->src->on_deleted && e->stream_len == 8 && !memcmp(e->stream, "$deletes", 8)))
        return 0;
    pcommit_event *pe = pcommit_add(&r->batch, 1);
    if (!pe)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = proj_js_state(r->js, e->stream, e->stream_len, 0, &pe->data, err, errlen);
    if (!rc)
        rc = pstore_snapshot_record(&r->d, e->stream, e->stream_len, e->revision, e->position, pe);
    if (rc) {
        r->batch.nstates--;
        if (!err[0])
            snprintf(err, errlen, "%s", stele_errmsg());
    }
    return rc;
}

/* The partition of a foreachStream() projection whose event is the first
 * of its stream (revision 0) has no stored state worth loading: a state of
 * that stream could only fold events of it, and there are none before
 * this one. (A state a crashed run wrote in steps for this very event is
 * not needed either: the fold starts from $init and applies the event once,
 * which gives the same state, and the batch's registration then meets its
 * derived id and the commit falls back to the idempotent steps.) Most
 * partitions of a per-stream projection over history are such new ones:
 * this saves each a store lookup. */
static int first_of_stream(const runner *r, const char *key, size_t klen)
{
    const stele_event *e = r->cur;
    return r->src->foreach_stream && e && e->revision == 0 && e->stream_len == klen &&
           !memcmp(e->stream, key, klen);
}

static int cb_load(void *ctx, const char *key, size_t klen, int shared, buf *out, uint64_t *pos,
                   int *found)
{
    runner *r = ctx;
    int rc = 0;
    if (!shared && first_of_stream(r, key, klen))
        *found = 0;
    else
        rc = pstore_load_state(r->db, &r->d, key, klen, shared, out, pos, found);
    if (rc || shared)
        return rc;
    knode *x = kset_touch(&r->cache, key, klen, NULL);
    if (!x)
        return err_set(STELE_ENOMEM, "out of memory");
    x->is_new = !*found && r->src->partitioned;
    x->stored = *found;
    atomic_store(&r->p->partitions_cached, r->cache.n);
    return 0;
}

static int check_name(const char *what, const char *s, size_t n)
{
    size_t bad;
    const char *why = n == 0 ? "empty" : n > 255 ? "longer than 255 bytes"
                    : memchr(s, 0, n) ? "contains a NUL byte" : utf8_check_name(s, n, &bad);
    if (why)
        return err_set(STELE_EINVAL, "%s: %s", what, why);
    return 0;
}

static int cb_emit(void *ctx, const proj_emit *e)
{
    runner *r = ctx;
    if (!r->d.emit_enabled)
        return err_set(STELE_EINVAL, "emit, linkTo and copyTo need emitEnabled: create or update "
                                     "the projection with emit enabled");
    int rc = check_name("emitted stream name", e->stream, e->stream_len);
    if (!rc)
        rc = check_name("emitted event type", e->type, e->type_len);
    if (rc)
        return rc;
    if (e->stream_len > 12 && !memcmp(e->stream, "$projections", 12))
        return err_set(STELE_EINVAL, "a projection may not emit to $projections-... streams");
    if (e->stream_len == 8 && !memcmp(e->stream, "$deletes", 8))
        return err_set(STELE_EINVAL, "a projection may not emit to $deletes (the store's record "
                                     "of stream deletes)");
    pcommit_event *pe = pcommit_add(&r->batch, 0);
    if (!pe)
        return err_set(STELE_ENOMEM, "out of memory");
    memcpy(pe->stream, e->stream, e->stream_len);
    pe->stream[e->stream_len] = 0;
    memcpy(pe->type, e->type, e->type_len);
    pe->type[e->type_len] = 0;
    if (buf_append(&pe->data, e->data, e->data_len) ||
        (e->meta && buf_append(&pe->meta, e->meta, e->meta_len)))
        return err_set(STELE_ENOMEM, "out of memory");
    pe->flags = (e->data_json ? STELE_EVENT_JSON : 0) | (e->meta && e->meta_json ? STELE_META_JSON : 0);
    pstore_event_id(&r->d, "emit", r->cur_pos, r->emit_seq++, NULL, 0, pe->id);
    int added;
    if (!kset_touch(&r->emitted, e->stream, e->stream_len, &added))
        return err_set(STELE_ENOMEM, "out of memory");
    if (added) {
        pcommit_event *reg = pcommit_add(&r->batch, 1);
        if (!reg)
            return err_set(STELE_ENOMEM, "out of memory");
        if ((rc = pstore_stream_name(&r->d, "emittedstreams", reg->stream)))
            return rc;
        snprintf(reg->type, sizeof reg->type, "$StreamEmitted");
        if (buf_append(&reg->data, e->stream, e->stream_len))
            return err_set(STELE_ENOMEM, "out of memory");
        pstore_event_id(&r->d, "emitted", 0, 0, e->stream, e->stream_len, reg->id);
    }
    return 0;
}

static void cb_log(void *ctx, const char *msg, size_t len)
{
    runner *r = ctx;
    fprintf(stderr, "projection %s: %.*s\n", r->d.name, (int)(len > 2000 ? 2000 : len), msg);
}

/* The emitted streams registered before (so each is registered once). */
static int load_emitted(runner *r)
{
    char name[256];
    int rc = pstore_stream_name(&r->d, "emittedstreams", name);
    uint64_t from = 0;
    while (!rc) {
        stele_page *pg;
        rc = stele_read_stream(r->db, name, from, STELE_FORWARDS, 1024, &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            return 0;
        }
        if (rc)
            return rc;
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n && !rc; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (!kset_touch(&r->emitted, e->data, e->data_len, NULL))
                rc = err_set(STELE_ENOMEM, "out of memory");
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || !n)
            break;
        from = next;
    }
    return rc;
}

static void set_status(proj *p, int status, const char *fault, uint64_t fault_pos)
{
    pthread_mutex_lock(&p->sys->mu);
    p->status = status;
    if (fault) {
        snprintf(p->fault, sizeof p->fault, "%s", fault);
        p->fault_position = fault_pos;
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->sys->mu);
}

static int add_state(runner *r, const char *key, size_t klen, int shared, const buf *json)
{
    pcommit_event *pe = pcommit_add(&r->batch, 1);
    if (!pe)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = pstore_partition_stream(&r->d, key, klen, shared, pe->stream);
    if (rc)
        return rc;
    snprintf(pe->type, sizeof pe->type, "$ProjectionState");
    if (buf_append(&pe->data, json->p, json->len))
        return err_set(STELE_ENOMEM, "out of memory");
    pe->flags = STELE_EVENT_JSON | STELE_META_JSON;
    if (r->state_meta_pos != r->last_handled) {
        /* the same for every state of a batch: formatted once */
        int n = snprintf(r->state_meta, sizeof r->state_meta, "{\"position\":%llu,\"epoch\":%llu}",
                         (unsigned long long)r->last_handled, (unsigned long long)r->d.epoch);
        r->state_meta_len = (size_t)n;
        r->state_meta_pos = r->last_handled;
    }
    if (buf_append(&pe->meta, r->state_meta, r->state_meta_len))
        return err_set(STELE_ENOMEM, "out of memory");
    if (pcommit_lazy_id(pe, shared ? "shared" : "state", r->last_handled, key, klen))
        return err_set(STELE_ENOMEM, "out of memory");
    atomic_fetch_add(&r->p->state_bytes, json->len);
    return 0;
}

/* The record of a partition the $deleted handler dropped: state null,
 * "dropped":true after position and epoch in its metadata (pstore.c
 * reads it as no state), in the batch's commit like any state. */
static int add_drop(runner *r, const char *key, size_t klen)
{
    pcommit_event *pe = pcommit_add(&r->batch, 1);
    if (!pe)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = pstore_partition_stream(&r->d, key, klen, 0, pe->stream);
    if (rc)
        return rc;
    snprintf(pe->type, sizeof pe->type, "$ProjectionState");
    char meta[128];
    int n = snprintf(meta, sizeof meta, "{\"position\":%llu,\"epoch\":%llu,\"dropped\":true}",
                     (unsigned long long)r->last_handled, (unsigned long long)r->d.epoch);
    if (buf_append(&pe->data, "null", 4) || buf_append(&pe->meta, meta, (size_t)n))
        return err_set(STELE_ENOMEM, "out of memory");
    pe->flags = STELE_EVENT_JSON | STELE_META_JSON;
    if (pcommit_lazy_id(pe, "state", r->last_handled, key, klen))
        return err_set(STELE_ENOMEM, "out of memory");
    return 0;
}

static int add_result(runner *r, const char *key, size_t klen, buf *tmp, char *err, size_t errlen)
{
    int has;
    int rc = proj_js_result(r->js, key, klen, tmp, &has, err, errlen);
    if (rc)
        return rc;
    if (!r->src->has_transforms) {
        if ((rc = proj_js_state(r->js, key, klen, 0, tmp, err, errlen)))
            return rc;
        has = 1;
    }
    if (!has)
        return 0;
    pcommit_event *pe = pcommit_add(&r->batch, 1);
    if (!pe)
        return err_set(STELE_ENOMEM, "out of memory");
    int n;
    if (r->src->result_stream && !r->src->partitioned)
        n = snprintf(pe->stream, sizeof pe->stream, "%s", r->src->result_stream);
    else if (klen)
        n = snprintf(pe->stream, sizeof pe->stream, "$projections-%s-%.*s-result", r->d.name,
                     (int)klen, key);
    else
        n = snprintf(pe->stream, sizeof pe->stream, "$projections-%s-result", r->d.name);
    size_t bad;
    if (n < 0 || n >= (int)sizeof pe->stream || utf8_check_name(pe->stream, (size_t)n, &bad)) {
        r->batch.nstates--; /* a key unusable in a stream name: no result stream */
        return 0;
    }
    snprintf(pe->type, sizeof pe->type, "Result");
    if (buf_append(&pe->data, tmp->p, tmp->len))
        return err_set(STELE_ENOMEM, "out of memory");
    pe->flags = STELE_EVENT_JSON;
    if (pcommit_lazy_id(pe, "result", r->last_handled, key, klen))
        return err_set(STELE_ENOMEM, "out of memory");
    return 0;
}

/*
 * Pipelining. A batch's commit (one multi-stream append, an fsync) runs on
 * a thread of its own while the runner handles the next batch, so the
 * handlers' CPU time and the commit's I/O overlap. At most one commit is in
 * flight, and the next is submitted only after it is acknowledged, so
 * commits land in order and each checkpoint still follows every state it
 * covers (exactly once as before). Every state of a batch is serialised
 * before its commit is submitted, so the commit thread never touches the
 * JavaScript heap. A partition changed by a batch in flight is not evicted
 * until that batch is acknowledged (knode.gen), or a load from the store
 * could see its previous state. A batch's partition registrations are
 * marked done when it is submitted, so the next batch does not repeat them;
 * a failed commit faults the projection and drops the runtime anyway.
 */

/* Gather the batch's states into r->batch and the dirty keys into r->fl
 * (not active yet). 0, or fills `err`. */
static int prepare(runner *r, uint64_t next, char **keys_out[], size_t **lens_out, size_t *n_out,
                   int *shared_out, char *err, size_t errlen)
{
    char **keys = NULL;
    size_t *lens = NULL, n = 0;
    int shared = 0;
    buf tmp = {0};
    int rc = proj_js_take_dirty(r->js, &keys, &lens, &n, &shared, err, errlen);
    if (rc)
        return rc;
    r->gen++;
    for (size_t i = 0; i < n && !rc; i++) {
        if (r->src->on_deleted && proj_js_dropped(r->js, keys[i], lens[i])) {
            rc = add_drop(r, keys[i], lens[i]); /* no result for it */
            knode *x = kset_touch(&r->cache, keys[i], lens[i], NULL);
            if (!x)
                rc = err_set(STELE_ENOMEM, "out of memory");
            else
                x->gen = r->gen;
            continue;
        }
        if ((rc = proj_js_state(r->js, keys[i], lens[i], 0, &tmp, err, errlen)))
            break;
        if (tmp.len > r->d.max_state_size) {
            snprintf(err, errlen,
                     "the state of partition '%.100s' is %zu bytes, over the limit of %llu "
                     "(maxStateSize)",
                     keys[i], tmp.len, (unsigned long long)r->d.max_state_size);
            rc = STELE_ETOOBIG;
            break;
        }
        if ((rc = add_state(r, keys[i], lens[i], 0, &tmp)))
            break;
        knode *x = kset_touch(&r->cache, keys[i], lens[i], NULL);
        if (!x) {
            rc = err_set(STELE_ENOMEM, "out of memory");
            break;
        }
        x->gen = r->gen;
        if (x->is_new) {
            pcommit_event *reg = pcommit_add(&r->batch, 1);
            if (!reg) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            if ((rc = pstore_stream_name(&r->d, "partitions", reg->stream)))
                break;
            snprintf(reg->type, sizeof reg->type, "$Partition");
            if (buf_append(&reg->data, keys[i], lens[i])) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            if ((rc = pcommit_lazy_id(reg, "partition", 0, keys[i], lens[i])))
                break;
            x->is_new = 0;
        }
        if (r->src->output_state || r->src->has_transforms)
            rc = add_result(r, keys[i], lens[i], &tmp, err, errlen);
    }
    if (!rc && shared) {
        rc = proj_js_state(r->js, "", 0, 1, &tmp, err, errlen);
        if (!rc && tmp.len > r->d.max_state_size) {
            snprintf(err, errlen, "the shared state is %zu bytes, over the limit of %llu", tmp.len,
                     (unsigned long long)r->d.max_state_size);
            rc = STELE_ETOOBIG;
        }
        if (!rc)
            rc = add_state(r, "", 0, 1, &tmp);
    }
    buf_free(&tmp);
    if (rc) {
        if (!err[0])
            snprintf(err, errlen, "%s", stele_errmsg());
        proj_js_keys_free(keys, lens, n);
        return rc;
    }
    r->batch.checkpoint = next;
    *keys_out = keys;
    *lens_out = lens;
    *n_out = n;
    *shared_out = shared;
    return 0;
}

static void *commit_main(void *arg)
{
    inflight *f = arg;
    f->rc = pstore_commit(f->db, f->d, &f->batch);
    if (f->rc)
        snprintf(f->msg, sizeof f->msg, "%s", stele_errmsg());
    return NULL;
}

/* Wait for the batch in flight, if any, and finish it: its partitions are
 * committed (clean, evictable, maxCount set when due), the position moves
 * on. 0, or fills `err`. */
static int finish(runner *r, char *err, size_t errlen)
{
    inflight *f = &r->fl;
    if (!f->active)
        return 0;
    if (f->threaded)
        pthread_join(f->thread, NULL);
    f->active = 0;
    int rc = f->rc;
    if (rc)
        snprintf(err, errlen, "committing the batch: %s", f->msg);
    if (!rc) {
        r->acked = f->gen;
        for (size_t i = 0; i < f->n && !rc; i++) {
            knode *x = kset_find(&r->cache, f->keys[i], f->lens[i]);
            if (x) {
                if (x->stored && !x->keep_last)
                    x->keep_last = keep_last_state(r, f->keys[i], f->lens[i], 0);
                x->stored = 1;
            }
            proj_js_committed(r->js, f->keys[i], f->lens[i], 0, f->last_handled);
        }
        if (f->shared) {
            proj_js_committed(r->js, "", 0, 1, f->last_handled);
            if (!r->shared_keep_last)
                r->shared_keep_last = keep_last_state(r, "", 0, 1);
        }
        atomic_fetch_add(&r->p->commits, 1);
        pthread_mutex_lock(&r->p->sys->mu);
        r->p->position = f->next;
        pthread_cond_broadcast(&r->p->cv);
        pthread_mutex_unlock(&r->p->sys->mu);
    }
    proj_js_keys_free(f->keys, f->lens, f->n);
    f->keys = NULL;
    f->lens = NULL;
    f->n = 0;
    pcommit_clear(&f->batch);
    return rc;
}

/* Gather the batch, wait for the one in flight, then submit this one. */
static int commit(runner *r, uint64_t next, char *err, size_t errlen)
{
    char **keys;
    size_t *lens, n;
    int shared;
    int rc = prepare(r, next, &keys, &lens, &n, &shared, err, errlen);
    if (rc) {
        pcommit_clear(&r->batch);
        return rc;
    }
    if ((rc = finish(r, err, errlen))) {
        proj_js_keys_free(keys, lens, n);
        pcommit_clear(&r->batch);
        return rc;
    }
    inflight *f = &r->fl;
    pcommit t = f->batch; /* swap: both keep their buffers for reuse */
    f->batch = r->batch;
    r->batch = t;
    pcommit_clear(&r->batch);
    f->keys = keys;
    f->lens = lens;
    f->n = n;
    f->shared = shared;
    f->gen = r->gen;
    f->last_handled = r->last_handled;
    f->next = next;
    f->db = r->db;
    f->d = &r->d;
    f->rc = 0;
    f->msg[0] = 0;
    f->active = 1;
    f->threaded = pthread_create(&f->thread, NULL, commit_main, f) == 0;
    if (!f->threaded) {
        commit_main(f); /* no thread to be had: commit here */
        return finish(r, err, errlen);
    }
    return 0;
}

static void trim_cache(runner *r)
{
    /* least recently used first; partitions of a batch in flight stay */
    knode *x = r->cache.head.prev;
    while (r->cache.n > r->d.cache_partitions && x != &r->cache.head) {
        knode *prev = x->prev;
        if (x->gen <= r->acked) {
            proj_js_evict(r->js, x->key, x->klen);
            kset_remove(&r->cache, x);
        }
        x = prev;
    }
    atomic_store(&r->p->partitions_cached, r->cache.n);
    atomic_store(&r->p->heap_bytes, proj_js_heap_bytes(r->js));
}

/* Append `s` to `b` with the regex metacharacters escaped. */
static int regex_quote(buf *b, const char *s)
{
    int rc = 0;
    for (const char *c = s; *c && !rc; c++) {
        if (strchr("\\^$.|?*+()[]{}", *c))
            rc = buf_append(b, "\\", 1);
        if (!rc)
            rc = buf_append(b, c, 1);
    }
    return rc;
}

/* The filter of a query whose $deleted handler runs: its source plus the
 * stream $deletes, as one stream regex (types, when fromStreams names $et-
 * views, cannot be mixed with it: then everything, checked in
 * JavaScript as for mixed names). */
static int deletes_filter(const proj_source *src, stele_filter *f, char **regex)
{
    buf b = {0};
    static const char head[] = "^(\\$deletes";
    int rc = buf_append(&b, head, sizeof head - 1);
    for (size_t i = 0; i < src->nstreams && !rc; i++) {
        const char *name = src->streams[i];
        if (!strncmp(name, "$et-", 4)) {
            buf_free(&b);
            return 0;
        }
        rc = buf_append(&b, "|", 1);
        if (!rc && !strncmp(name, "$ce-", 4)) {
            rc = regex_quote(&b, name + 4);
            if (!rc)
                rc = buf_append(&b, "(-.*)?", 6);
        } else if (!rc) {
            rc = regex_quote(&b, name);
        }
    }
    for (size_t i = 0; i < src->ncategories && !rc; i++) {
        rc = buf_append(&b, "|", 1);
        if (!rc)
            rc = regex_quote(&b, src->categories[i]);
        if (!rc)
            rc = buf_append(&b, "(-.*)?", 6);
    }
    if (!rc && !src->ncategories && !src->nstreams) /* fromAll: user streams */
        rc = buf_append(&b, "|[^$].*", 7);
    if (!rc)
        rc = buf_append(&b, ")$", 3);
    if (rc) {
        buf_free(&b);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    *regex = (char *)b.p;
    f->stream_regex = *regex;
    return 0;
}

/*
 * The subscription filter of the query's source. fromStream(s) may name
 * the views $ce-C and $et-T (KurrentDB's link streams; Stele has none, so
 * their events are read where they are: category C, type T). The filter
 * here narrows what the subscription delivers; when the names mix kinds it
 * cannot express (types with streams), it delivers more and prelude.js
 * checks each event against the names (describe() marks such a source).
 */
int proj_make_filter(const proj_source *src, stele_filter *f, char **regex)
{
    memset(f, 0, sizeof *f);
    *regex = NULL;
    if (src->on_deleted)
        return deletes_filter(src, f, regex);
    if (src->ncategories) {
        f->categories = (const char *const *)src->categories;
        f->n_categories = src->ncategories;
        return 0;
    }
    if (src->nstreams) {
        size_t net = 0;
        for (size_t i = 0; i < src->nstreams; i++)
            net += !strncmp(src->streams[i], "$et-", 4);
        if (net == src->nstreams) {
            /* $et- names only: the type filter, on the names after "$et-"
             * (the list is *regex's allocation; the names are the
             * source's, which outlive the subscription) */
            const char **types = malloc(net * sizeof *types);
            if (!types)
                return err_set(STELE_ENOMEM, "out of memory");
            for (size_t i = 0; i < net; i++)
                types[i] = src->streams[i] + 4;
            f->types = types;
            f->n_types = net;
            *regex = (char *)types;
            return 0;
        }
        if (net)
            return 0; /* types mixed with streams: everything, checked in JavaScript */
        buf b = {0};
        int rc = buf_append(&b, "^(", 2);
        for (size_t i = 0; i < src->nstreams && !rc; i++) {
            if (i)
                rc = buf_append(&b, "|", 1);
            const char *name = src->streams[i];
            if (!rc && !strncmp(name, "$ce-", 4)) {
                /* category C: "C" itself or "C-..." (the first '-' ends it) */
                rc = regex_quote(&b, name + 4);
                if (!rc)
                    rc = buf_append(&b, "(-.*)?", 6);
            } else if (!rc) {
                rc = regex_quote(&b, name);
            }
        }
        if (!rc)
            rc = buf_append(&b, ")$", 3);
        if (rc) {
            buf_free(&b);
            return err_set(STELE_ENOMEM, "out of memory");
        }
        *regex = (char *)b.p;
        f->stream_regex = *regex;
        return 0;
    }
    f->exclude_system = 1; /* fromAll: user streams only */
    return 0;
}

/* Tell waiters (stele_projection_wait ...) the projection reached `pos`. */
static void publish_position(proj *p, uint64_t pos)
{
    pthread_mutex_lock(&p->sys->mu);
    p->position = pos;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->sys->mu);
}

/* Set the runner up: its copy of the definition, the JavaScript, the
 * checkpoint (*pos) and emitted streams, and a subscription from the
 * checkpoint. 0, or an error with `err` filled. */
static int run_start(runner *r, uint64_t *pos, stele_sub **sub, char **regex, char *err,
                     size_t errlen)
{
    proj *p = r->p;
    pthread_mutex_lock(&p->sys->mu);
    int rc = proj_def_copy(&r->d, &p->def);
    pthread_mutex_unlock(&p->sys->mu);
    if (rc) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    proj_js_cb cb = {.ctx = r, .load = cb_load, .emit = cb_emit, .log = cb_log};
    if ((rc = proj_js_new(r->d.query, r->d.query_len, r->d.memory_limit, r->d.timeout_ms, &cb,
                          &r->js, err, errlen)))
        return rc;
    r->src = proj_js_source(r->js);
    pthread_mutex_lock(&p->sys->mu);
    free(p->definition);
    p->definition = strdup(r->src->json);
    pthread_mutex_unlock(&p->sys->mu);
    char ckname[256];
    if ((rc = pstore_read_checkpoint(r->db, &r->d, pos)) || (rc = load_emitted(r)) ||
        (rc = pstore_stream_name(&r->d, "checkpoint", ckname)) ||
        (rc = pstore_keep_last(r->db, ckname))) {
        snprintf(err, errlen, "reading the checkpoint: %s", stele_errmsg());
        return rc;
    }
    stele_filter f;
    if (!(rc = proj_make_filter(r->src, &f, regex)))
        rc = stele_subscribe_all(r->db, *pos, &f, sub);
    if (rc)
        snprintf(err, errlen, "subscribing: %s", stele_errmsg());
    return rc;
}

/* Where run_page is in the projection's feed. */
typedef struct rpos {
    uint64_t pos;       /* read up to here */
    uint64_t last_ckpt; /* the last checkpoint committed */
    uint64_t target;    /* one-time projections: where to stop, else STELE_NONE */
    uint64_t fault_pos; /* the event whose handler failed */
    size_t per_partition;
} rpos;

/* Events [*i, n) of the page through the handlers, up to a batch's worth
 * of streams (*i moves past them; *cut is where the next batch starts when
 * the batch was cut short). Counts handled events in *handled_n and sets
 * *any when one was. 0 or the handler's error (fault_pos set). */
static int run_events(runner *r, stele_page *pg, size_t *i, size_t n, rpos *rp,
                      uint64_t *handled_n, uint64_t *cut, int *any, char *err, size_t errlen)
{
    size_t streams = 0; /* an upper bound */
    int rc = 0;
    for (; *i < n; (*i)++) {
        const stele_event *e = stele_page_event(pg, *i);
        if (rp->target != STELE_NONE && e->position >= rp->target) {
            *i = n;
            break;
        }
        r->cur_pos = e->position;
        r->cur = e;
        r->emit_seq = 0;
        int handled;
        size_t emits_before = r->batch.nemits;
        rc = proj_js_event(r->js, e, &handled, err, errlen);
        r->cur = NULL;
        if (rc) {
            rp->fault_pos = e->position;
            break;
        }
        if (handled) {
            (*handled_n)++;
            r->last_handled = e->position;
            *any = 1;
            if ((rc = want_snapshot(r, e, err, errlen))) {
                rp->fault_pos = e->position;
                break;
            }
        }
        streams += (handled == 2 ? rp->per_partition : 0) + (r->batch.nemits - emits_before);
        if (streams >= BATCH_STREAMS && *i + 1 < n) {
            *cut = stele_position_after(r->db, e->position);
            (*i)++;
            break;
        }
    }
    return rc;
}

/* One page of events: a page may hold several batches: each ends before
 * it names more streams than one commit takes, is committed, and the next
 * goes on from the following event of the same page. 0 or an error. */
static int run_page(runner *r, stele_sub *sub, stele_page *pg, rpos *rp, char *err,
                    size_t errlen)
{
    proj *p = r->p;
    size_t n = stele_page_count(pg), i = 0;
    int rc = 0;
    do {
        uint64_t t0 = time_mono_ns(), handled_n = 0, cut = STELE_NONE;
        int any = 0;
        size_t first = i;
        rc = run_events(r, pg, &i, n, rp, &handled_n, &cut, &any, err, errlen);
        atomic_fetch_add(&p->handler_ns, time_mono_ns() - t0);
        atomic_fetch_add(&p->events_read, (i > n ? n : i) - first);
        atomic_fetch_add(&p->events_processed, handled_n);
        if (rc)
            break;
        uint64_t next = cut != STELE_NONE ? cut : stele_sub_position(sub);
        if (rp->target != STELE_NONE && next > rp->target)
            next = rp->target;
        int done = rp->target != STELE_NONE && next >= rp->target;
        if (any || r->batch.nemits || next - rp->last_ckpt >= IDLE_CKPT_GAP ||
            (done && next > rp->last_ckpt)) {
            if ((rc = commit(r, next, err, errlen)))
                break;
            rp->last_ckpt = next;
        }
        rp->pos = next;
        trim_cache(r);
        if (!r->fl.active) /* else finish() moves it when acknowledged */
            publish_position(p, rp->pos);
    } while (i < n);
    return rc;
}

static void *run_main(void *arg)
{
    proj *p = arg;
    runner r;
    memset(&r, 0, sizeof r);
    r.p = p;
    r.db = p->sys->db;
    r.state_meta_pos = STELE_NONE;
    kset_init(&r.cache);
    kset_init(&r.emitted);
    char err[1024] = "";
    rpos rp = {.target = STELE_NONE, .fault_pos = STELE_NONE};
    stele_sub *sub = NULL;
    char *regex = NULL;
    int final = PS_STOPPED;
    int rc;

    if ((rc = run_start(&r, &rp.pos, &sub, &regex, err, sizeof err))) {
        final = PS_FAULTED;
        goto out;
    }
    if (r.d.mode == STELE_PROJ_ONE_TIME) {
        if (stele_position_head(r.db, &rp.target))
            rp.target = STELE_NONE;
    }
    publish_position(p, rp.pos);
    rp.last_ckpt = rp.pos;
    /* streams written per newly dirty partition: its state and a result;
     * registrations, the checkpoint and the shared state go to a few
     * streams of their own (BATCH_STREAMS leaves room for them) */
    rp.per_partition = 1 + (r.src->output_state || r.src->has_transforms);
    while (!atomic_load(&p->stop)) {
        if (rp.target != STELE_NONE && rp.pos >= rp.target) {
            if ((rc = finish(&r, err, sizeof err))) {
                final = PS_FAULTED;
                break;
            }
            final = PS_COMPLETED;
            break;
        }
        stele_page *pg;
        /* with a commit in flight, only what is there: nothing new means
         * the commit is finished before waiting for events */
        if ((rc = stele_sub_next(sub, PAGE_EVENTS, r.fl.active ? 0 : 200, &pg))) {
            snprintf(err, sizeof err, "reading events: %s", stele_errmsg());
            final = PS_FAULTED;
            break;
        }
        if (stele_page_count(pg) == 0 && r.fl.active && (rc = finish(&r, err, sizeof err))) {
            stele_page_free(pg);
            final = PS_FAULTED;
            break;
        }
        rc = run_page(&r, sub, pg, &rp, err, sizeof err);
        stele_page_free(pg);
        if (rc) {
            final = PS_FAULTED;
            break;
        }
    }
out:
    if (r.fl.active) {
        /* the batch in flight was whole: let it land */
        char ferr[1024] = "";
        if (finish(&r, ferr, sizeof ferr) && final != PS_FAULTED) {
            final = PS_FAULTED;
            snprintf(err, sizeof err, "%s", ferr);
        }
    }
    pcommit_free(&r.fl.batch);
    reclaim_stop(&r.rq);
    stele_sub_close(sub);
    free(regex);
    proj_js_free(r.js);
    kset_free(&r.cache);
    kset_free(&r.emitted);
    pcommit_free(&r.batch);
    atomic_store(&p->partitions_cached, 0);
    atomic_store(&p->heap_bytes, 0);
    if (final == PS_FAULTED && rp.fault_pos == STELE_NONE && !err[0])
        snprintf(err, sizeof err, "%s", stele_errmsg());
    set_status(p, final, final == PS_FAULTED ? err : NULL, rp.fault_pos);
    proj_def_free(&r.d);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

int proj_start(proj *p)
{
    if (p->def.mode == STELE_PROJ_INLINE) {
        /* runs in the append path (inline.c): nothing to start */
        pthread_mutex_lock(&p->sys->mu);
        p->status = PS_RUNNING;
        p->fault[0] = 0;
        pthread_mutex_unlock(&p->sys->mu);
        return 0;
    }
    if (p->has_thread)
        return 0;
    atomic_store(&p->stop, 0);
    pthread_mutex_lock(&p->sys->mu);
    p->status = PS_RUNNING;
    p->fault[0] = 0;
    p->fault_position = STELE_NONE;
    pthread_mutex_unlock(&p->sys->mu);
    if (pthread_create(&p->thread, NULL, run_main, p)) {
        set_status(p, PS_FAULTED, "cannot start a thread", STELE_NONE);
        return err_set(STELE_ENOMEM, "cannot start a projection thread");
    }
    p->has_thread = 1;
    return 0;
}

void proj_stop(proj *p)
{
    if (!p->has_thread)
        return;
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL);
    p->has_thread = 0;
    pthread_mutex_lock(&p->sys->mu);
    if (p->status == PS_RUNNING)
        p->status = PS_STOPPED;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->sys->mu);
}

proj *proj_find(proj_sys *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->list[i]->def.name, name))
            return s->list[i];
    return NULL;
}

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;

int proj_sys_get(stele_db *db, proj_sys **out)
{
    pthread_mutex_lock(&init_mu);
    if (db->projs) {
        *out = db->projs;
        pthread_mutex_unlock(&init_mu);
        return 0;
    }
    proj_sys *s = calloc(1, sizeof *s);
    if (!s) {
        pthread_mutex_unlock(&init_mu);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    s->db = db;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->admin, NULL);
    proj_def *defs;
    size_t n;
    int rc = pstore_load_defs(db, &defs, &n);
    if (rc) {
        pthread_mutex_unlock(&init_mu);
        free(s);
        return rc;
    }
    s->list = calloc(n ? n : 1, sizeof *s->list);
    s->cap = n ? n : 1;
    for (size_t i = 0; i < n; i++) {
        proj *p = calloc(1, sizeof *p);
        if (!p || !s->list) {
            free(p);
            proj_def_free(&defs[i]);
            continue;
        }
        p->sys = s;
        p->def = defs[i];
        p->status = PS_STOPPED;
        p->fault_position = STELE_NONE;
        pthread_cond_init(&p->cv, NULL);
        s->list[s->n++] = p;
    }
    free(defs);
    db->close_up[STORE_UP_PROJ] = proj_sys_close;
    /* Published with release: proj_inline_for reads db->projs without
     * init_mu on every append (an acquire load). */
    __atomic_store_n(&db->projs, s, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&init_mu);
    /* Finish interrupted resets, then start the enabled ones. */
    pthread_mutex_lock(&s->admin);
    for (size_t i = 0; i < s->n; i++) {
        proj *p = s->list[i];
        if (p->def.reset_pending && pstore_delete_streams(db, &p->def, 1, 1) == 0) {
            p->def.reset_pending = 0;
            pstore_write_def(db, &p->def);
        }
        if (p->def.mode == STELE_PROJ_INLINE) {
            if (proj_inline_add(s, &p->def)) {
                pthread_mutex_lock(&s->mu);
                p->status = PS_FAULTED;
                snprintf(p->fault, sizeof p->fault, "%s", stele_errmsg());
                pthread_mutex_unlock(&s->mu);
                err_clear();
                continue;
            }
            if (!p->def.enabled)
                proj_inline_drop(s, p->def.name);
        }
        if (p->def.enabled && !p->def.reset_pending)
            proj_start(p);
    }
    pthread_mutex_unlock(&s->admin);
    *out = s;
    return 0;
}

void proj_sys_close(stele_db *db)
{
    proj_sys *s = db->projs;
    if (!s)
        return;
    pthread_mutex_lock(&s->admin);
    s->closing = 1;
    for (size_t i = 0; i < s->n; i++)
        proj_stop(s->list[i]);
    proj_inline_close(s); /* after the queued inline appends are done */
    for (size_t i = 0; i < s->n + s->ndead; i++) {
        proj *p = i < s->n ? s->list[i] : s->dead[i - s->n];
        proj_def_free(&p->def);
        free(p->definition);
        pthread_cond_destroy(&p->cv);
        free(p);
    }
    free(s->dead);
    pthread_mutex_unlock(&s->admin);
    free(s->list);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->admin);
    free(s);
    db->projs = NULL;
}
