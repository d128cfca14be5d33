/*
 * state.c - reading what projections built: read models (a projection's
 * partitions in key order, paged, filtered by a top-level field) and
 * reconstructed state (one stream folded with a projection's handlers up
 * to a revision or a time, from the newest snapshot at or before it).
 *
 * Read models read the store, never a runner's heap: they see committed
 * states only. A listing reads the partition list ($projections-NAME:
 * partitions, one event per partition), sorts the keys, then loads the
 * state of each key after `after` until `limit` match: its cost grows
 * with the number of partitions (the list) plus the partitions it has to
 * look at (one index lookup and one log read each); docs/projections.md
 * gives figures.
 *
 * Reconstruction runs in the caller's thread in a fresh runtime of the
 * projection's query, with the projection's limits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proj/proj_int.h"

/* A copy of the named projection's definition. */
static int def_of(stele_db *db, const char *name, proj_def *d)
{
    if (!db || !name)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "name");
    proj_sys *s;
    int rc = proj_sys_get(db, &s);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->mu);
    proj *p = proj_find(s, name);
    rc = p ? proj_def_copy(d, &p->def) : err_set(STELE_ENOTFOUND, "no projection named '%s'", name);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ------------------------------------------------------------ read models */

typedef struct key {
    char *k;
    size_t n;
} key;

static int key_cmp(const void *a, const void *b)
{
    const key *x = a, *y = b;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->k, y->k, m);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

static int read_keys(stele_db *db, const proj_def *d, key **out, size_t *n)
{
    char name[256];
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    int rc = pstore_stream_name(d, "partitions", name);
    uint64_t from = 0;
    while (!rc) {
        stele_page *pg;
        rc = stele_read_stream(db, name, from, STELE_FORWARDS, 4096, &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            return 0;
        }
        if (rc)
            break;
        size_t cnt = stele_page_count(pg);
        for (size_t i = 0; i < cnt && !rc; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (*n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                key *nk = realloc(*out, nc * sizeof *nk);
                if (!nk) {
                    rc = err_set(STELE_ENOMEM, "out of memory");
                    break;
                }
                *out = nk;
                cap = nc;
            }
            key *k = &(*out)[*n];
            if (!(k->k = malloc(e->data_len + 1))) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            memcpy(k->k, e->data, e->data_len);
            k->k[e->data_len] = 0;
            k->n = e->data_len;
            (*n)++;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || !cnt)
            break;
        from = next;
    }
    if (!rc)
        qsort(*out, *n, sizeof **out, key_cmp);
    return rc;
}

int stele_projection_partitions(stele_db *db, const char *name, const char *after, size_t limit,
                                const char *field, const char *value, stele_partition **out,
                                size_t *n, int *more)
{
    err_clear();
    if (!out || !n || !more)
        return err_set(STELE_EINVAL, "out, n and more must not be NULL");
    *out = NULL;
    *n = 0;
    *more = 0;
    if (limit == 0 || limit > 10000)
        return err_set(STELE_EINVAL, "limit %zu: give 1 .. 10000", limit);
    if (field && (!*field || !value))
        return err_set(STELE_EINVAL, "a filter needs a non-empty field and a value");
    proj_def d;
    int rc = def_of(db, name, &d);
    if (rc)
        return rc;
    proj_filter *f = NULL;
    key *keys = NULL;
    size_t nkeys = 0;
    if (field && (rc = proj_filter_new(field, value, strlen(value), &f)))
        goto out;
    if ((rc = read_keys(db, &d, &keys, &nkeys)))
        goto out;
    size_t i = 0;
    if (after && *after) {
        key a = {(char *)after, strlen(after)};
        while (i < nkeys && key_cmp(&keys[i], &a) <= 0)
            i++;
    }
    /* collect matches in a buffer of (key, state) pairs, then lay them out */
    buf states = {0};
    size_t *offs = calloc(limit, 2 * sizeof *offs);
    size_t *which = calloc(limit, sizeof *which);
    size_t got = 0;
    if (!offs || !which)
        rc = err_set(STELE_ENOMEM, "out of memory");
    for (; i < nkeys && !rc; i++) {
        if (i > 0 && key_cmp(&keys[i], &keys[i - 1]) == 0)
            continue; /* registered twice (a retried commit) */
        if (got == limit) {
            *more = 1;
            break;
        }
        size_t before = states.len;
        uint64_t pos;
        int found;
        if ((rc = pstore_load_state(db, &d, keys[i].k, keys[i].n, 0, &states, &pos, &found)))
            break;
        if (found != 1) /* none, or dropped by $deleted */
            continue;
        if (f) {
            int eq;
            proj_filter_match(f, (const char *)states.p + before, states.len - before, &eq);
            if (!eq) {
                states.len = before;
                continue;
            }
        }
        offs[2 * got] = before;
        offs[2 * got + 1] = states.len - before;
        which[got++] = i;
    }
    if (!rc && got) {
        size_t bytes = got * sizeof(stele_partition) + states.len + got;
        for (size_t j = 0; j < got; j++)
            bytes += keys[which[j]].n + 1;
        stele_partition *arr = malloc(bytes);
        if (!arr)
            rc = err_set(STELE_ENOMEM, "out of memory");
        else {
            char *area = (char *)(arr + got);
            for (size_t j = 0; j < got; j++) {
                key *k = &keys[which[j]];
                memcpy(area, k->k, k->n + 1);
                arr[j].key = area;
                arr[j].key_len = k->n;
                area += k->n + 1;
                memcpy(area, states.p + offs[2 * j], offs[2 * j + 1]);
                area[offs[2 * j + 1]] = 0;
                arr[j].state = area;
                arr[j].state_len = offs[2 * j + 1];
                area += offs[2 * j + 1] + 1;
            }
            *out = arr;
            *n = got;
        }
    }
    if (rc)
        *more = 0;
    buf_free(&states);
    free(offs);
    free(which);
out:
    for (size_t j = 0; j < nkeys; j++)
        free(keys[j].k);
    free(keys);
    proj_filter_free(f);
    proj_def_free(&d);
    return rc;
}

/* ------------------------------------------------------------ reconstruct */

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

int stele_projection_fold(stele_db *db, const char *name, const char *stream, uint64_t to,
                          const int64_t *as_of_us, char **json, size_t *len, uint64_t *revision,
                          uint64_t *snapshot)
{
    err_clear();
    if (!json || !stream)
        return err_set(STELE_EINVAL, "%s is NULL", !json ? "json" : "stream");
    *json = NULL;
    if (len)
        *len = 0;
    if (revision)
        *revision = STELE_NONE;
    if (snapshot)
        *snapshot = STELE_NONE;
    proj_def d;
    int rc = def_of(db, name, &d);
    if (rc)
        return rc;
    proj_js *js = NULL;
    buf out = {0};
    char err[1024];
    /* the last revision to fold */
    stele_page *pg = NULL;
    if (as_of_us)
        rc = stele_read_stream_as_of(db, stream, *as_of_us, STELE_END, STELE_BACKWARDS, 1, &pg);
    else
        rc = stele_read_stream_to(db, stream, STELE_END, STELE_BACKWARDS, 1, to, &pg);
    if (rc)
        goto out;
    uint64_t last = stele_page_count(pg) ? stele_page_event(pg, 0)->revision : STELE_NONE;
    stele_page_free(pg);
    pg = NULL;
    proj_js_cb cb = {.load = no_load, .emit = no_emit};
    if ((rc = proj_js_new(d.query, d.query_len, d.memory_limit, d.timeout_ms, &cb, &js, err,
                          sizeof err))) {
        rc = err_set(rc, "projection '%s': %s", name, err);
        goto out;
    }
    /* the newest snapshot of this projection (and query) at or before it */
    buf snap = {0};
    uint64_t snap_rev = STELE_NONE;
    int have = 0;
    if (last != STELE_NONE && (rc = pstore_find_snapshot(db, &d, stream, last, &snap, &snap_rev,
                                                          &have))) {
        buf_free(&snap);
        goto out;
    }
    rc = have ? proj_js_fold_start(js, (const char *)snap.p, snap.len, err, sizeof err)
              : proj_js_fold_start(js, NULL, 0, err, sizeof err);
    buf_free(&snap);
    if (rc) {
        rc = err_set(rc, "%s", err);
        goto out;
    }
    uint64_t from = have ? snap_rev + 1 : 0;
    if (snapshot && have)
        *snapshot = snap_rev;
    uint64_t done = have ? snap_rev : STELE_NONE;
    while (last != STELE_NONE && from <= last) {
        rc = stele_read_stream_to(db, stream, from, STELE_FORWARDS, 1024, last, &pg);
        if (rc)
            goto out;
        size_t cnt = stele_page_count(pg);
        for (size_t i = 0; i < cnt; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if ((rc = proj_js_fold_event(js, e, err, sizeof err))) {
                rc = err_set(rc, "event %llu of %s: %s", (unsigned long long)e->revision, stream,
                             err);
                goto out;
            }
            done = e->revision;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        pg = NULL;
        if (!more || !cnt)
            break;
        from = next;
    }
    if ((rc = proj_js_fold_json(js, &out, err, sizeof err))) {
        rc = err_set(rc, "%s", err);
        goto out;
    }
    char *r = malloc(out.len + 1);
    if (!r) {
        rc = err_set(STELE_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(r, out.p, out.len);
    r[out.len] = 0;
    *json = r;
    if (len)
        *len = out.len;
    if (revision)
        *revision = done;
out:
    stele_page_free(pg);
    buf_free(&out);
    proj_js_free(js);
    proj_def_free(&d);
    return rc;
}

/* ------------------------------------------------------------ transient */

static int transient_emit(void *ctx, const proj_emit *e)
{
    (void)ctx, (void)e;
    return err_set(STELE_EINVAL, "a transient query cannot emit");
}

int stele_projection_query(stele_db *db, const char *query, size_t query_len,
                           const stele_projection_settings *limits, char **json, size_t *len)
{
    err_clear();
    if (!db || !json)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "json");
    *json = NULL;
    if (len)
        *len = 0;
    if (!query || !query_len)
        return err_set(STELE_EINVAL, "the query is empty");
    if (query_len > PROJ_QUERY_MAX || memchr(query, 0, query_len))
        return err_set(STELE_EINVAL, "the query is over %u bytes or has a NUL byte", PROJ_QUERY_MAX);
    uint64_t mem = limits && limits->memory_limit ? limits->memory_limit : 64u << 20;
    uint32_t tmo = limits && limits->timeout_ms ? limits->timeout_ms : 1000;
    if (mem < (1u << 20) || mem > (4ull << 30) || tmo > 600000)
        return err_set(STELE_EINVAL, "limits: memory 1 MiB .. 4 GiB, timeout 1 .. 600000 ms");
    uint64_t head;
    int rc = stele_position_head(db, &head);
    if (rc)
        return rc;
    proj_js_cb cb = {.load = no_load, .emit = transient_emit};
    proj_js *js;
    char err[1024];
    if ((rc = proj_js_new(query, query_len, mem, tmo, &cb, &js, err, sizeof err)))
        return err_set(rc == STELE_ENOMEM ? rc : STELE_EINVAL, "query: %s", err);
    stele_filter f;
    char *regex = NULL;
    stele_sub *sub = NULL;
    buf out = {0};
    if (!(rc = proj_make_filter(proj_js_source(js), &f, &regex)))
        rc = stele_subscribe_all(db, 0, &f, &sub);
    while (!rc && stele_sub_position(sub) < head) {
        stele_page *pg;
        if ((rc = stele_sub_next(sub, 4096, 0, &pg)))
            break;
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n && !rc; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (e->position >= head)
                break;
            int handled;
            if ((rc = proj_js_event(js, e, &handled, err, sizeof err)))
                rc = err_set(STELE_EINVAL, "event at position %llu (%s in %s): %s",
                             (unsigned long long)e->position, e->type, e->stream, err);
        }
        stele_page_free(pg);
        if (!n && stele_sub_caught_up(sub))
            break;
    }
    if (!rc && (rc = proj_js_dump(js, &out, err, sizeof err)))
        rc = err_set(rc, "%s", err);
    if (!rc) {
        char *r = malloc(out.len + 1);
        if (!r)
            rc = err_set(STELE_ENOMEM, "out of memory");
        else {
            memcpy(r, out.p, out.len);
            r[out.len] = 0;
            *json = r;
            if (len)
                *len = out.len;
        }
    }
    buf_free(&out);
    stele_sub_close(sub);
    free(regex);
    proj_js_free(js);
    return rc;
}
