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
 * stele_append_async, on the projection's own worker thread: JavaScript
 * never runs on the writer thread, nor on a server's event loop.
 *
 * Per append: under the projection's mutex (its one runtime), load the
 * stream's state (the newest tagged snapshot, normally at the head, plus
 * a fold of any events after it) and fold the new events; then, outside
 * the mutex, one stele_append_multi of the events with the state,
 * expecting the head it folded from. A racing append to the same stream
 * makes that fail with EWRONGREV: the append is folded again from the new
 * head when the caller's expectation (any, stream exists) allows it.
 * Appends to different streams of the category share group commits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proj/proj_int.h"

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

struct proj_inline {
    proj_sys *sys;
    char name[PROJ_NAME_MAX + 1];
    char category[256];
    int dead; /* deleted or no longer inline */
    pthread_mutex_t mu; /* one append at a time; guards js */
    proj_js *js;
    uint32_t js_epoch; /* the query (its tag) the runtime was made for */
    /* async worker */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    ijob *head, *tail;
    int stop, has_thread;
    pthread_t thread;
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

/* The definition of pi's projection (a copy); ENOTFOUND if it is gone. */
static int inline_def(struct proj_inline *pi, proj_def *d)
{
    pthread_mutex_lock(&pi->sys->mu);
    proj *p = proj_find(pi->sys, pi->name);
    int rc = p ? proj_def_copy(d, &p->def)
               : err_set(STELE_ENOTFOUND, "inline projection '%s' was deleted", pi->name);
    pthread_mutex_unlock(&pi->sys->mu);
    return rc;
}

/* ------------------------------------------------------------ append */

static int fold_events(struct proj_inline *pi, const stele_page *pg, char *err, size_t errlen)
{
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        int rc = proj_js_fold_event(pi->js, stele_page_event(pg, i), err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

/* Fold the stored stream up to its head `head` into the runtime. */
static int load_state(struct proj_inline *pi, stele_db *db, const proj_def *d, const char *stream,
                      uint64_t head, char *err, size_t errlen)
{
    uint32_t tag = pstore_snapshot_tag(d);
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
        if (sn && sn->schema_version != tag) {
            stele_free(sn);
            sn = NULL;
        }
    }
    rc = sn ? proj_js_fold_start(pi->js, sn->state, sn->state_len, err, errlen)
            : proj_js_fold_start(pi->js, NULL, 0, err, errlen);
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
        rc = fold_events(pi, pg, err, errlen);
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

/* Under pi->mu: the runtime for the current query, then the state of
 * `stream` with the new events folded in, into *state; *head the revision
 * it was folded from. */
static int fold_new(struct proj_inline *pi, stele_db *db, const proj_def *d, const char *stream,
                    const stele_event_in *events, size_t n, buf *state, uint64_t *head)
{
    char err[1200] = "";
    int rc;
    if (!pi->js || pi->js_epoch != pstore_snapshot_tag(d)) {
        proj_js_free(pi->js);
        pi->js = NULL;
        proj_js_cb cb = {.load = no_load, .emit = no_emit};
        if ((rc = proj_js_new(d->query, d->query_len, d->memory_limit, d->timeout_ms, &cb, &pi->js,
                              err, sizeof err)))
            return err_set(rc, "inline projection '%s': %s", pi->name, err);
        pi->js_epoch = pstore_snapshot_tag(d);
    }
    stele_stream_info info;
    *head = STELE_NONE;
    rc = stele_stream_head(db, stream, &info);
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        rc = 0;
    } else if (rc) {
        return rc;
    } else if (!info.deleted) {
        *head = info.last_revision;
    }
    if ((rc = load_state(pi, db, d, stream, *head, err, sizeof err)))
        return err[0] ? err_set(STELE_EINVAL, "inline projection '%s': %s", pi->name, err) : rc;
    int64_t now = time_now_us();
    for (size_t i = 0; i < n; i++) {
        stele_event e;
        memset(&e, 0, sizeof e);
        e.stream = stream;
        e.stream_len = strlen(stream);
        e.type = events[i].type;
        e.type_len = strlen(events[i].type);
        e.data = events[i].data;
        e.data_len = events[i].data_len;
        e.metadata = events[i].metadata;
        e.metadata_len = events[i].metadata_len;
        e.flags = events[i].flags;
        e.created_us = now;
        e.revision = (*head == STELE_NONE ? 0 : *head + 1) + i;
        e.position = 0; /* not known before the commit */
        if ((rc = proj_js_fold_event(pi->js, &e, err, sizeof err)))
            return err_set(STELE_EINVAL,
                           "inline projection '%s' refused event %zu (%s): %s; nothing was "
                           "written",
                           pi->name, i, events[i].type, err);
    }
    state->len = 0;
    if ((rc = proj_js_fold_json(pi->js, state, err, sizeof err)))
        return err_set(rc, "inline projection '%s': %s", pi->name, err);
    if (state->len > d->max_state_size)
        return err_set(STELE_ETOOBIG, "inline projection '%s': the state of '%s' would be %zu "
                       "bytes, over the limit of %llu", pi->name, stream, state->len,
                       (unsigned long long)d->max_state_size);
    return 0;
}

int proj_inline_append(stele_db *db, struct proj_inline *pi, const char *stream,
                       int64_t expected, const stele_event_in *events, size_t n,
                       stele_append_result *res)
{
    proj_def d;
    int rc = inline_def(pi, &d);
    if (rc)
        return rc;
    buf state = {0};
    stele_append_record *recs = calloc(n, sizeof *recs);
    if (!recs) {
        proj_def_free(&d);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        recs[i] = (stele_append_record){.stream = 0, .event = events[i]};
    /* The handlers run under the projection's mutex (one runtime); the
     * commit does not, so appends to different streams of the category
     * share group commits. The append expects the head the state was
     * folded from: a racing append to the same stream makes it fail with
     * EWRONGREV, and it is folded again from the new head when the
     * caller's expectation allows. */
    for (int attempt = 0;; attempt++) {
        uint64_t head = STELE_NONE;
        pthread_mutex_lock(&pi->mu);
        rc = fold_new(pi, db, &d, stream, events, n, &state, &head);
        pthread_mutex_unlock(&pi->mu);
        if (rc)
            break;
        int retry = expected == STELE_ANY || expected == STELE_STREAM_EXISTS;
        int64_t exp = expected;
        if (retry && !(head == STELE_NONE && expected == STELE_STREAM_EXISTS))
            exp = head == STELE_NONE ? STELE_NO_STREAM : (int64_t)head;
        stele_snapshot_in sn = {.schema_version = pstore_snapshot_tag(&d),
                                .flags = STELE_EVENT_JSON, .state = state.p,
                                .state_len = state.len};
        stele_append_stream st = {.stream = stream, .expected = exp, .state = &sn};
        stele_append_result per;
        stele_multi_result mr;
        rc = stele_append_multi(db, &st, 1, recs, n, NULL, &per, &mr);
        if (rc == STELE_EWRONGREV && retry && exp != STELE_STREAM_EXISTS && attempt < 10000) {
            err_clear();
            continue; /* the head moved: fold again */
        }
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
    proj_def_free(&d);
    return rc;
}

/* ------------------------------------------------------------ async */

static void *worker(void *arg)
{
    struct proj_inline *pi = arg;
    pthread_mutex_lock(&pi->qmu);
    for (;;) {
        while (!pi->head && !pi->stop)
            pthread_cond_wait(&pi->qcv, &pi->qmu);
        ijob *j = pi->head;
        if (!j)
            break; /* stopping with nothing left */
        pi->head = j->next;
        if (!pi->head)
            pi->tail = NULL;
        pthread_mutex_unlock(&pi->qmu);
        stele_append_result res;
        memset(&res, 0, sizeof res);
        err_clear();
        int rc = proj_inline_append(pi->sys->db, pi, j->stream, j->expected, j->events, j->n, &res);
        j->cb(j->ctx, rc, &res, rc ? stele_errmsg() : "");
        free(j->stream);
        free(j);
        pthread_mutex_lock(&pi->qmu);
    }
    pthread_mutex_unlock(&pi->qmu);
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
    pthread_mutex_lock(&pi->qmu);
    if (!pi->has_thread) {
        if (pthread_create(&pi->thread, NULL, worker, pi)) {
            pthread_mutex_unlock(&pi->qmu);
            free(j->stream);
            free(j);
            return err_set(STELE_ENOMEM, "cannot start the inline projection's thread");
        }
        pi->has_thread = 1;
    }
    if (pi->tail)
        pi->tail->next = j;
    else
        pi->head = j;
    pi->tail = j;
    pthread_cond_signal(&pi->qcv);
    pthread_mutex_unlock(&pi->qmu);
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

int proj_inline_add(proj_sys *s, const proj_def *d)
{
    proj_js_cb cb = {.load = no_load, .emit = no_emit};
    proj_js *js;
    char err[1024];
    int rc = proj_js_new(d->query, d->query_len, d->memory_limit, d->timeout_ms, &cb, &js, err,
                         sizeof err);
    if (rc)
        return err_set(STELE_EINVAL, "query: %s", err);
    const proj_source *src = proj_js_source(js);
    if (src->ncategories != 1 || !src->foreach_stream || src->bi_state) {
        proj_js_free(js);
        return err_set(STELE_EINVAL, "an inline projection must be fromCategory('C')"
                                     ".foreachStream().when({...}) (one category, one state per "
                                     "stream, no $initShared)");
    }
    struct proj_inline *pi = calloc(1, sizeof *pi);
    struct proj_inline **nl = realloc(s->inl, (s->ninline + 1) * sizeof *nl);
    if (!pi || !nl) {
        free(pi);
        if (nl)
            s->inl = nl;
        proj_js_free(js);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    s->inl = nl;
    pi->sys = s;
    snprintf(pi->name, sizeof pi->name, "%s", d->name);
    snprintf(pi->category, sizeof pi->category, "%s", src->categories[0]);
    proj_js_free(js);
    pthread_mutex_init(&pi->mu, NULL);
    pthread_mutex_init(&pi->qmu, NULL);
    pthread_cond_init(&pi->qcv, NULL);
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->ninline; i++)
        if (!s->inl[i]->dead && !strcmp(s->inl[i]->category, pi->category)) {
            pthread_mutex_unlock(&s->mu);
            rc = err_set(STELE_EEXISTS, "category '%s' already has an inline projection ('%s')",
                         pi->category, s->inl[i]->name);
            pthread_mutex_destroy(&pi->mu);
            pthread_mutex_destroy(&pi->qmu);
            pthread_cond_destroy(&pi->qcv);
            free(pi);
            return rc;
        }
    s->inl[s->ninline++] = pi;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void proj_inline_drop(proj_sys *s, const char *name)
{
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->ninline; i++)
        if (!strcmp(s->inl[i]->name, name))
            s->inl[i]->dead = 1;
    pthread_mutex_unlock(&s->mu);
}

void proj_inline_close(proj_sys *s)
{
    for (size_t i = 0; i < s->ninline; i++) {
        struct proj_inline *pi = s->inl[i];
        pthread_mutex_lock(&pi->qmu);
        pi->stop = 1;
        pthread_cond_signal(&pi->qcv);
        pthread_mutex_unlock(&pi->qmu);
        if (pi->has_thread)
            pthread_join(pi->thread, NULL); /* it finishes the queued appends first */
        proj_js_free(pi->js);
        pthread_mutex_destroy(&pi->mu);
        pthread_mutex_destroy(&pi->qmu);
        pthread_cond_destroy(&pi->qcv);
        free(pi);
    }
    free(s->inl);
    s->inl = NULL;
    s->ninline = 0;
}
