/*
 * inline.c - inline projections: a projection of mode STELE_PROJ_INLINE on
 * one category runs its handlers on an append's new events before the
 * append commits, and the stream's new state is stored with the events in
 * the same commit (a stream snapshot at the new last revision, tagged
 * with the projection's query hash). A handler that throws refuses the
 * append: nothing is written and the caller gets EINVAL with the message.
 *
 * The append path (src/store/store.c) asks proj_inline_for() whether a
 * user stream's category has an inline projection; if so the append is
 * done here instead, in the caller's thread (stele_append) or, for
 * stele_append_async, on one of the projection's worker threads:
 * JavaScript never runs on the writer thread, nor on a server's event loop.
 *
 * Per append:
 *   1. the stream's head (one index lookup);
 *   2. its state at that head: from the projection's state cache when it
 *      holds the stream at exactly that revision, else the newest tagged
 *      snapshot plus a fold of any events after it;
 *   3. the new events folded into it on one of the projection's runtimes
 *      (a small pool: appends to different streams fold in parallel); when
 *      no handler takes any of the new events and the state came from the
 *      cache, no JavaScript runs at all;
 *   4. outside any runtime, one stele_append_multi of the events with the
 *      state, expecting the head it folded from. A racing append to the
 *      same stream makes that fail with EWRONGREV: the append is folded
 *      again from the new head when the caller's expectation (any, stream
 *      exists) allows it. Appends to different streams share group
 *      commits;
 *   5. after a commit that wrote (not an idempotent retry), the new state
 *      goes into the cache at the new head revision.
 *
 * The cache's invariant: an entry (stream, revision R, state S) is only
 * put after the commit that stored S as the stream's snapshot at R, and it
 * is used only when the stream's head is R and the stream is not deleted.
 * Revisions are never reused (a soft-deleted stream goes on after its
 * last revision; a deleted one is folded from $init), so an entry that
 * matches is the stored state. A conflict, a throwing handler or a failed
 * commit puts nothing; a changed query, a disable/enable, a delete and
 * re-create of the projection make a new proj_inline with an empty cache
 * (proj_inline_add); a restart starts empty. Entries are bounded in
 * number (the projection's cachePartitions, at most INL_SLOTS_MAX), in
 * size each (INL_ENTRY_MAX) and in total (INL_BYTES_MAX).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proj/proj_int.h"

#define INL_RUNTIMES 4         /* runtimes per projection (created on first use) */
#define INL_WORKERS 8          /* threads for stele_append_async (they wait on fsyncs) */
#define INL_SLOTS_MAX 65536    /* cache entries per projection, at most */
#define INL_ENTRY_MAX (64u << 10) /* a bigger state is not cached */
#define INL_BYTES_MAX (16u << 20) /* cached state bytes per projection */

/* One queued async append (worker thread). */
typedef struct ijob {
    char *stream;
    int64_t expected;
    const stele_event_in *events;
    size_t n;
    stele_append_cb cb;
    void *ctx;
    struct ijob *next;
} ijob;

/* One async worker: the jobs of the streams that hash to it, in order
 * (so two async appends to one stream run in the order they came). Its
 * thread (detached) starts with the first job; once the projection is
 * dropped (stop) it ends when its queue is empty, and a job queued after
 * that (an append that found the projection just before) starts another. */
typedef struct iworker {
    struct proj_inline *pi;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ijob *head, *tail;
    int stop, has_thread;
} iworker;

/* One runtime of the pool; js is made on first use, freed after a
 * handler fails (its heap may be left half changed). */
typedef struct irt {
    pthread_mutex_t mu;
    proj_js *js;
} irt;

/* A cached state: the stream's name and the state in one block. */
typedef struct ient {
    uint64_t revision;
    size_t slen, len;
    char *state; /* after the name */
    char stream[];
} ient;

struct proj_inline {
    proj_sys *sys;
    char name[PROJ_NAME_MAX + 1];
    char category[256];
    int dead; /* deleted or no longer inline */
    proj_def def; /* as it was when added: a change makes a new proj_inline */
    uint32_t tag; /* the snapshots' tag: pstore_snapshot_tag(&def) */
    /* which event types a handler takes (from the query) */
    char **types;
    size_t ntypes;
    int any;
    irt rt[INL_RUNTIMES];
    /* the state cache: direct-mapped by the stream name's hash */
    pthread_mutex_t cmu;
    ient **slots;
    size_t nslots, cbytes;
    iworker w[INL_WORKERS];
    pthread_mutex_t tmu; /* nthreads: worker threads running */
    pthread_cond_t tcv;
    int nthreads;
};

static int no_load(void *ctx, const char *k, size_t kl, int sh, buf *o, uint64_t *p, int *f)
{
    (void)ctx, (void)k, (void)kl, (void)sh, (void)o, (void)p;
    *f = 0;
    return 0;
}
static int no_emit(void *ctx, const proj_emit *e)
{
    (void)ctx, (void)e;
    return 0;
}

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* ------------------------------------------------------------ registry */

struct proj_inline *proj_inline_for(stele_db *db, const char *stream, size_t len)
{
    /* Every append asks, from any thread, without init_mu: an acquire load
     * pairs with proj_sys_get's release store, so a registry seen here is
     * seen whole (ThreadSanitizer, make test-tsan). */
    proj_sys *s = __atomic_load_n(&db->projs, __ATOMIC_ACQUIRE);
    if (!s) {
        if (proj_sys_get(db, &s)) {
            err_clear();
            return NULL;
        }
    }
    size_t cl = stream_category_len(stream, len);
    struct proj_inline *found = NULL;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->ninline && !found; i++) {
        struct proj_inline *pi = s->inl[i];
        if (!pi->dead && strlen(pi->category) == cl && !memcmp(pi->category, stream, cl))
            found = pi;
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* ------------------------------------------------------------ state cache */

/* The cached state of `stream` at exactly `revision` into *out: 1 if
 * found, else 0. */
static int cache_get(struct proj_inline *pi, const char *stream, size_t slen, uint64_t h,
                     uint64_t revision, buf *out)
{
    int found = 0;
    pthread_mutex_lock(&pi->cmu);
    ient *e = pi->slots[h % pi->nslots];
    if (e && e->revision == revision && e->slen == slen && !memcmp(e->stream, stream, slen)) {
        out->len = 0;
        found = buf_append(out, e->state, e->len) == 0;
    }
    pthread_mutex_unlock(&pi->cmu);
    return found;
}

/* After a commit that stored `state` as the snapshot of `stream` at
 * `revision`. A slot keeps the newer of two revisions of one stream (puts
 * of racing appends may come in any order); a state over the limits is
 * not cached (and the stream's older entry goes). */
static void cache_put(struct proj_inline *pi, const char *stream, size_t slen, uint64_t h,
                      uint64_t revision, const char *state, size_t len)
{
    ient *n = NULL;
    if (len <= INL_ENTRY_MAX && (n = malloc(sizeof *n + slen + 1 + len))) {
        n->revision = revision;
        n->slen = slen;
        n->len = len;
        memcpy(n->stream, stream, slen);
        n->stream[slen] = 0;
        n->state = n->stream + slen + 1;
        memcpy(n->state, state, len);
    }
    pthread_mutex_lock(&pi->cmu);
    ient **slot = &pi->slots[h % pi->nslots], *old = *slot;
    if (old && n && old->slen == slen && !memcmp(old->stream, stream, slen) &&
        old->revision >= revision) {
        pthread_mutex_unlock(&pi->cmu);
        free(n);
        return;
    }
    if (old) {
        pi->cbytes -= old->len;
        free(old);
        *slot = NULL;
    }
    if (n && pi->cbytes + len <= INL_BYTES_MAX) {
        *slot = n;
        pi->cbytes += len;
        n = NULL;
    }
    pthread_mutex_unlock(&pi->cmu);
    free(n);
}

/* ------------------------------------------------------------ append */

/* Does a handler of the query take an event of this type? ($any takes
 * every type; a type named like a special handler only reaches $any.) */
static int taken(const struct proj_inline *pi, const char *type)
{
    if (pi->any)
        return 1;
    if (type[0] == '$' && (!strcmp(type, "$init") || !strcmp(type, "$initShared") ||
                           !strcmp(type, "$deleted")))
        return 0;
    for (size_t i = 0; i < pi->ntypes; i++)
        if (!strcmp(pi->types[i], type))
            return 1;
    return 0;
}

/* A runtime of the pool, locked: the first free one from the stream's
 * own, else wait for the stream's own. */
static irt *rt_take(struct proj_inline *pi, uint64_t h)
{
    for (size_t k = 0; k < INL_RUNTIMES; k++) {
        irt *r = &pi->rt[(h + k) % INL_RUNTIMES];
        if (pthread_mutex_trylock(&r->mu) == 0)
            return r;
    }
    irt *r = &pi->rt[h % INL_RUNTIMES];
    pthread_mutex_lock(&r->mu);
    return r;
}

static int fold_events(proj_js *js, const stele_page *pg, char *err, size_t errlen)
{
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        int rc = proj_js_fold_event(js, stele_page_event(pg, i), err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

/* Fold the stored stream up to its head `head` into the runtime. */
static int load_state(struct proj_inline *pi, proj_js *js, stele_db *db, const char *stream,
                      uint64_t head, char *err, size_t errlen)
{
    stele_snapshot *sn = NULL;
    int rc = 0;
    if (head != STELE_NONE) {
        rc = stele_get_snapshot(db, stream, head, &sn);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            rc = 0;
        }
        if (rc)
            return rc;
        if (sn && sn->schema_version != pi->tag) {
            stele_free(sn);
            sn = NULL;
        }
    }
    rc = sn ? proj_js_fold_start(js, sn->state, sn->state_len, err, errlen)
            : proj_js_fold_start(js, NULL, 0, err, errlen);
    uint64_t from = sn ? sn->revision + 1 : 0;
    stele_free(sn);
    while (!rc && head != STELE_NONE && from <= head) {
        stele_page *pg;
        rc = stele_read_stream_to(db, stream, from, STELE_FORWARDS, 1024, head, &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            return 0;
        }
        if (rc)
            return rc;
        size_t n = stele_page_count(pg);
        rc = fold_events(js, pg, err, errlen);
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (rc) {
            snprintf(err + strlen(err), errlen - strlen(err), " (folding the stored events)");
            return STELE_EINVAL;
        }
        if (!more || !n)
            break;
        from = next;
    }
    return rc;
}

/* On runtime r (locked): the state at `head` (`cached` when given, else
 * loaded) with the new events folded in, into *state. */
static int fold_on(struct proj_inline *pi, irt *r, stele_db *db, const char *stream,
                   uint64_t head, const buf *cached, const stele_event_in *events, size_t n,
                   buf *state)
{
    char err[1200] = "";
    int rc;
    const proj_def *d = &pi->def;
    if (!r->js) {
        proj_js_cb cb = {.load = no_load, .emit = no_emit};
        if ((rc = proj_js_new(d->query, d->query_len, d->memory_limit, d->timeout_ms, &cb, &r->js,
                              err, sizeof err)))
            return err_set(rc, "inline projection '%s': %s", pi->name, err);
    }
    rc = cached ? proj_js_fold_start(r->js, (const char *)cached->p, cached->len, err, sizeof err)
                : load_state(pi, r->js, db, stream, head, err, sizeof err);
    if (rc)
        return err[0] ? err_set(STELE_EINVAL, "inline projection '%s': %s", pi->name, err) : rc;
    int64_t now = time_now_us();
    size_t slen = strlen(stream);
    for (size_t i = 0; i < n; i++) {
        stele_event e;
        memset(&e, 0, sizeof e);
        e.stream = stream;
        e.stream_len = slen;
        e.type = events[i].type;
        e.type_len = strlen(events[i].type);
        e.data = events[i].data;
        e.data_len = events[i].data_len;
        e.metadata = events[i].metadata;
        e.metadata_len = events[i].metadata_len;
        e.flags = events[i].flags;
        e.created_us = now;
        e.revision = (head == STELE_NONE ? 0 : head + 1) + i;
        e.position = 0; /* not known before the commit */
        if ((rc = proj_js_fold_event(r->js, &e, err, sizeof err)))
            return err_set(STELE_EINVAL,
                           "inline projection '%s' refused event %zu (%s): %s; nothing was "
                           "written",
                           pi->name, i, events[i].type, err);
    }
    state->len = 0;
    if ((rc = proj_js_fold_json(r->js, state, err, sizeof err)))
        return err_set(rc, "inline projection '%s': %s", pi->name, err);
    return 0;
}

/* The state of `stream` with the new events folded in, into *state; *head
 * the revision it was folded from. */
static int fold_new(struct proj_inline *pi, stele_db *db, const char *stream, uint64_t h,
                    const stele_event_in *events, size_t n, buf *cached, buf *state,
                    uint64_t *head)
{
    stele_stream_info info;
    *head = STELE_NONE;
    int rc = stele_stream_head(db, stream, &info);
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        rc = 0;
    } else if (rc) {
        return rc;
    } else if (!info.deleted) {
        *head = info.last_revision;
    }
    size_t slen = strlen(stream);
    int hit = *head != STELE_NONE && cache_get(pi, stream, slen, h, *head, cached);
    int any_taken = 0;
    for (size_t i = 0; i < n && !any_taken; i++)
        any_taken = taken(pi, events[i].type);
    if (hit && !any_taken) {
        /* no handler runs: the state stays as it is */
        state->len = 0;
        return buf_append(state, cached->p, cached->len) ? err_set(STELE_ENOMEM, "out of memory")
                                                      : 0;
    }
    irt *r = rt_take(pi, h);
    rc = fold_on(pi, r, db, stream, *head, hit ? cached : NULL, events, n, state);
    if (rc == STELE_EINVAL) {
        /* a throw, a timeout or the memory limit: the heap may be left
         * half changed, the next fold gets a new runtime */
        proj_js_free(r->js);
        r->js = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (!rc && state->len > pi->def.max_state_size)
        rc = err_set(STELE_ETOOBIG, "inline projection '%s': the state of '%s' would be %zu "
                     "bytes, over the limit of %llu", pi->name, stream, state->len,
                     (unsigned long long)pi->def.max_state_size);
    return rc;
}

int proj_inline_append(stele_db *db, struct proj_inline *pi, const char *stream,
                       int64_t expected, const stele_event_in *events, size_t n,
                       stele_append_result *res)
{
    buf state = {0}, cached = {0};
    stele_append_record *recs = calloc(n, sizeof *recs);
    if (!recs)
        return err_set(STELE_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        recs[i] = (stele_append_record){.stream = 0, .event = events[i]};
    size_t slen = strlen(stream);
    uint64_t h = name_hash(stream, slen);
    int rc;
    /* The append expects the head the state was folded from: a racing
     * append to the same stream makes it fail with EWRONGREV, and it is
     * folded again from the new head when the caller's expectation
     * allows. */
    for (int attempt = 0;; attempt++) {
        uint64_t head = STELE_NONE;
        if ((rc = fold_new(pi, db, stream, h, events, n, &cached, &state, &head)))
            break;
        int retry = expected == STELE_ANY || expected == STELE_STREAM_EXISTS;
        int64_t exp = expected;
        if (retry && !(head == STELE_NONE && expected == STELE_STREAM_EXISTS))
            exp = head == STELE_NONE ? STELE_NO_STREAM : (int64_t)head;
        stele_snapshot_in sn = {.schema_version = pi->tag, .flags = STELE_EVENT_JSON,
                                .state = state.p, .state_len = state.len};
        stele_append_stream st = {.stream = stream, .expected = exp, .state = &sn};
        stele_append_result per;
        stele_multi_result mr;
        rc = stele_append_multi(db, &st, 1, recs, n, NULL, &per, &mr);
        if (rc == STELE_EWRONGREV && retry && exp != STELE_STREAM_EXISTS && attempt < 10000) {
            err_clear();
            continue; /* the head moved: fold again */
        }
        if (rc == 0 && !mr.idempotent)
            cache_put(pi, stream, slen, h, per.last_revision, (const char *)state.p, state.len);
        if (res) {
            *res = per;
            res->idempotent = mr.idempotent;
            if (rc == STELE_EWRONGREV)
                res->current_revision = mr.current_revision;
        }
        break;
    }
    free(recs);
    buf_free(&state);
    buf_free(&cached);
    return rc;
}

/* ------------------------------------------------------------ async */

static void *worker(void *arg)
{
    iworker *w = arg;
    struct proj_inline *pi = w->pi;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        ijob *j = w->head;
        if (!j) {
            w->has_thread = 0; /* stopping with nothing left */
            break;
        }
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        stele_append_result res;
        memset(&res, 0, sizeof res);
        err_clear();
        int rc = proj_inline_append(pi->sys->db, pi, j->stream, j->expected, j->events, j->n, &res);
        j->cb(j->ctx, rc, &res, rc ? stele_errmsg() : "");
        free(j->stream);
        free(j);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_lock(&pi->tmu);
    pi->nthreads--;
    pthread_cond_broadcast(&pi->tcv);
    pthread_mutex_unlock(&pi->tmu);
    return NULL;
}

int proj_inline_queue(stele_db *db, struct proj_inline *pi, const char *stream, int64_t expected,
                      const stele_event_in *events, size_t n, stele_append_cb cb, void *ctx)
{
    (void)db;
    ijob *j = calloc(1, sizeof *j);
    if (!j || !(j->stream = strdup(stream))) {
        free(j);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    j->expected = expected;
    j->events = events;
    j->n = n;
    j->cb = cb;
    j->ctx = ctx;
    /* one stream's appends go to one worker, in order */
    iworker *w = &pi->w[name_hash(stream, strlen(stream)) % INL_WORKERS];
    pthread_mutex_lock(&w->mu);
    if (!w->has_thread) {
        pthread_mutex_lock(&pi->tmu);
        pi->nthreads++;
        pthread_mutex_unlock(&pi->tmu);
        pthread_attr_t at;
        pthread_t th;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int e = pthread_create(&th, &at, worker, w);
        pthread_attr_destroy(&at);
        if (e) {
            pthread_mutex_unlock(&w->mu);
            pthread_mutex_lock(&pi->tmu);
            pi->nthreads--;
            pthread_mutex_unlock(&pi->tmu);
            free(j->stream);
            free(j);
            return err_set(STELE_ENOMEM, "cannot start the inline projection's thread");
        }
        w->has_thread = 1;
    }
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

static void inline_free(struct proj_inline *pi)
{
    for (size_t i = 0; i < INL_RUNTIMES; i++) {
        proj_js_free(pi->rt[i].js);
        pthread_mutex_destroy(&pi->rt[i].mu);
    }
    for (size_t i = 0; i < INL_WORKERS; i++) {
        pthread_mutex_destroy(&pi->w[i].mu);
        pthread_cond_destroy(&pi->w[i].cv);
    }
    pthread_mutex_destroy(&pi->tmu);
    pthread_cond_destroy(&pi->tcv);
    for (size_t i = 0; i < pi->nslots; i++)
        free(pi->slots[i]);
    free(pi->slots);
    pthread_mutex_destroy(&pi->cmu);
    for (size_t i = 0; i < pi->ntypes; i++)
        free(pi->types[i]);
    free(pi->types);
    proj_def_free(&pi->def);
    free(pi);
}

/* A new proj_inline for definition d: its query's shape checked, the
 * handlers' event types noted. */
static int inline_new(const proj_def *d, struct proj_inline **out)
{
    proj_js_cb cb = {.load = no_load, .emit = no_emit};
    proj_js *js;
    char err[1024];
    int rc = proj_js_new(d->query, d->query_len, d->memory_limit, d->timeout_ms, &cb, &js, err,
                         sizeof err);
    if (rc)
        return err_set(STELE_EINVAL, "query: %s", err);
    const proj_source *src = proj_js_source(js);
    if (src->ncategories != 1 || !src->foreach_stream || src->bi_state || src->all ||
        src->nstreams) {
        proj_js_free(js);
        return err_set(STELE_EINVAL, "an inline projection must be fromCategory('C')"
                                     ".foreachStream().when({...}) (one category, one state per "
                                     "stream, no $initShared)");
    }
    for (size_t i = 0; i < src->nhandlers; i++)
        if (!strcmp(src->handlers[i], "$deleted")) {
            proj_js_free(js);
            return err_set(STELE_EINVAL, "an inline projection cannot have a $deleted handler: "
                           "its state is its stream's snapshot, which goes with the stream (a "
                           "recreated stream starts again from $init), so it would never be "
                           "called");
        }
    struct proj_inline *pi = calloc(1, sizeof *pi);
    if (!pi || proj_def_copy(&pi->def, d)) {
        free(pi);
        proj_js_free(js);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    snprintf(pi->name, sizeof pi->name, "%s", d->name);
    snprintf(pi->category, sizeof pi->category, "%s", src->categories[0]);
    pi->tag = pstore_snapshot_tag(d);
    pi->nslots = d->cache_partitions < INL_SLOTS_MAX ? d->cache_partitions : INL_SLOTS_MAX;
    if (!pi->nslots)
        pi->nslots = 1;
    pi->slots = calloc(pi->nslots, sizeof *pi->slots);
    pi->types = calloc(src->nhandlers + 1, sizeof *pi->types);
    for (size_t i = 0; pi->types && i < src->nhandlers; i++) {
        const char *t = src->handlers[i];
        if (!strcmp(t, "$any"))
            pi->any = 1;
        else if (!(pi->types[pi->ntypes++] = strdup(t)))
            rc = STELE_ENOMEM;
    }
    proj_js_free(js);
    pthread_mutex_init(&pi->cmu, NULL);
    pthread_mutex_init(&pi->tmu, NULL);
    pthread_cond_init(&pi->tcv, NULL);
    for (size_t i = 0; i < INL_RUNTIMES; i++)
        pthread_mutex_init(&pi->rt[i].mu, NULL);
    for (size_t i = 0; i < INL_WORKERS; i++) {
        pi->w[i].pi = pi;
        pthread_mutex_init(&pi->w[i].mu, NULL);
        pthread_cond_init(&pi->w[i].cv, NULL);
    }
    if (rc || !pi->slots || !pi->types) {
        inline_free(pi);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    *out = pi;
    return 0;
}

int proj_inline_add(proj_sys *s, const proj_def *d)
{
    struct proj_inline *pi;
    int rc = inline_new(d, &pi);
    if (rc)
        return rc;
    pi->sys = s;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->ninline; i++)
        if (!s->inl[i]->dead && !strcmp(s->inl[i]->category, pi->category)) {
            pthread_mutex_unlock(&s->mu);
            rc = err_set(STELE_EEXISTS, "category '%s' already has an inline projection ('%s')",
                         pi->category, s->inl[i]->name);
            inline_free(pi);
            return rc;
        }
    struct proj_inline **nl = realloc(s->inl, (s->ninline + 1) * sizeof *nl);
    if (!nl) {
        pthread_mutex_unlock(&s->mu);
        inline_free(pi);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    s->inl = nl;
    s->inl[s->ninline++] = pi;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Tell pi's workers to end once their queues are empty. */
static void stop_workers(struct proj_inline *pi)
{
    for (size_t k = 0; k < INL_WORKERS; k++) {
        iworker *w = &pi->w[k];
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
}

/* A dropped projection is kept (an append may still hold it) until the
 * store closes; what it holds goes now: its workers end when idle, its
 * cached states and its idle runtimes are freed (an append still running
 * makes what it needs again). */
static void inline_release(struct proj_inline *pi)
{
    stop_workers(pi);
    pthread_mutex_lock(&pi->cmu);
    for (size_t i = 0; i < pi->nslots; i++) {
        free(pi->slots[i]);
        pi->slots[i] = NULL;
    }
    pi->cbytes = 0;
    pthread_mutex_unlock(&pi->cmu);
    for (size_t i = 0; i < INL_RUNTIMES; i++)
        if (pthread_mutex_trylock(&pi->rt[i].mu) == 0) {
            proj_js_free(pi->rt[i].js);
            pi->rt[i].js = NULL;
            pthread_mutex_unlock(&pi->rt[i].mu);
        }
}

void proj_inline_drop(proj_sys *s, const char *name)
{
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->ninline; i++)
        if (!s->inl[i]->dead && !strcmp(s->inl[i]->name, name)) {
            s->inl[i]->dead = 1;
            inline_release(s->inl[i]);
        }
    pthread_mutex_unlock(&s->mu);
}

void proj_inline_close(proj_sys *s)
{
    for (size_t i = 0; i < s->ninline; i++) {
        struct proj_inline *pi = s->inl[i];
        stop_workers(pi);
        /* the workers finish the queued appends first */
        pthread_mutex_lock(&pi->tmu);
        while (pi->nthreads)
            pthread_cond_wait(&pi->tcv, &pi->tmu);
        pthread_mutex_unlock(&pi->tmu);
        inline_free(pi);
    }
    free(s->inl);
    s->inl = NULL;
    s->ninline = 0;
}
