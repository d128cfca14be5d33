/*
 * api.c - the public projection calls of include/stele.h: argument checks
 * at the edge, then the registry (run.c) and the records (pstore.c).
 *
 * Definition changes are serialised by sys->admin and are durable (a
 * "$ProjectionDefinition" event in $projections-$all) before they return.
 * A change to a running projection stops its runner first (after its
 * current batch commits), so a runner always works with one definition.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proj/proj_int.h"

static const char *const status_names[] = {"Stopped", "Running", "Faulted", "Completed"};

static int check_name(const char *name)
{
    if (!name)
        return err_set(STELE_EINVAL, "projection name is NULL");
    size_t n = strlen(name), bad;
    const char *why = n == 0 ? "is empty" : n > PROJ_NAME_MAX ? "is longer than 100 bytes"
                    : name[0] == '$' ? "starts with '$' (reserved)"
                    : strchr(name, '/') ? "contains '/'"
                    : strchr(name, ':') ? "contains ':' (it separates the name in its streams)"
                                        : NULL;
    if (!why && utf8_check_name(name, n, &bad))
        why = "is not valid UTF-8 or has a control character";
    if (why)
        return err_set(STELE_EINVAL, "projection name %s", why);
    return 0;
}

static int check_query(const char *q, size_t len)
{
    if (!q || len == 0)
        return err_set(STELE_EINVAL, "the query is empty");
    if (len > PROJ_QUERY_MAX)
        return err_set(STELE_ETOOBIG, "the query is %zu bytes, over the limit of %u", len,
                       PROJ_QUERY_MAX);
    if (memchr(q, 0, len))
        return err_set(STELE_EINVAL, "the query contains a NUL byte");
    return 0;
}

/* Compile and run the query once in a throw-away runtime: a syntax error
 * or a query without a source is refused before anything is stored. */
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

static int try_query(const proj_def *d)
{
    proj_js_cb cb = {.load = no_load, .emit = no_emit};
    proj_js *js;
    char err[1024];
    int rc = proj_js_new(d->query, d->query_len, d->memory_limit, d->timeout_ms, &cb, &js, err,
                         sizeof err);
    if (rc)
        return err_set(rc == STELE_ENOMEM ? STELE_ENOMEM : STELE_EINVAL, "query: %s", err);
    proj_js_free(js);
    return 0;
}

int proj_check_settings(stele_db *db, const char *name, const stele_projection_settings *st,
                        proj_def *d)
{
    memset(d, 0, sizeof *d);
    int rc = check_name(name);
    if (rc)
        return rc;
    if (!st)
        return err_set(STELE_EINVAL, "settings is NULL");
    if ((rc = check_query(st->query, st->query_len)))
        return rc;
    if (st->mode != STELE_PROJ_CONTINUOUS && st->mode != STELE_PROJ_ONE_TIME &&
        st->mode != STELE_PROJ_INLINE)
        return err_set(STELE_EINVAL, "mode %d is not continuous, one-time or inline", st->mode);
    if (st->mode == STELE_PROJ_INLINE && st->emit_enabled)
        return err_set(STELE_EINVAL, "an inline projection cannot emit");
    snprintf(d->name, sizeof d->name, "%s", name);
    d->mode = st->mode;
    d->enabled = st->enabled != 0;
    d->emit_enabled = st->emit_enabled != 0;
    d->memory_limit = st->memory_limit ? st->memory_limit : 64u << 20;
    d->timeout_ms = st->timeout_ms ? st->timeout_ms : 1000;
    d->cache_partitions = st->cache_partitions ? st->cache_partitions : 10000;
    d->max_state_size = st->max_state_size ? st->max_state_size : 4u << 20;
    d->snapshot_every = st->snapshot_every;
    if (d->memory_limit < (1u << 20) || d->memory_limit > (4ull << 30))
        return err_set(STELE_EINVAL, "memory limit %llu: give 1 MiB .. 4 GiB",
                       (unsigned long long)d->memory_limit);
    if (d->timeout_ms > 600000)
        return err_set(STELE_EINVAL, "timeout %u ms: give 1 .. 600000", d->timeout_ms);
    if (d->cache_partitions > 10000000)
        return err_set(STELE_EINVAL, "cache of %u partitions: give 1 .. 10000000",
                       d->cache_partitions);
    if (d->snapshot_every > 1000000)
        return err_set(STELE_EINVAL, "snapshot every %u events: give 0 .. 1000000",
                       d->snapshot_every);
    if (d->max_state_size > db->opts.max_event_size)
        return err_set(STELE_EINVAL, "max state size %llu is over the store's max event size %llu",
                       (unsigned long long)d->max_state_size,
                       (unsigned long long)db->opts.max_event_size);
    d->query = malloc(st->query_len + 1);
    if (!d->query)
        return err_set(STELE_ENOMEM, "out of memory");
    memcpy(d->query, st->query, st->query_len);
    d->query[st->query_len] = 0;
    d->query_len = st->query_len;
    if ((rc = try_query(d)))
        proj_def_free(d);
    return rc;
}

/* Take the registry and the admin lock; find `name` (may be NULL). */
static int enter(stele_db *db, const char *name, proj_sys **s, proj **p)
{
    err_clear();
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    int rc = name ? check_name(name) : 0;
    if (rc || (rc = proj_sys_get(db, s)))
        return rc;
    pthread_mutex_lock(&(*s)->admin);
    if ((*s)->closing) {
        pthread_mutex_unlock(&(*s)->admin);
        return err_set(STELE_ECLOSED, "store is closing");
    }
    if (p) {
        pthread_mutex_lock(&(*s)->mu);
        *p = name ? proj_find(*s, name) : NULL;
        pthread_mutex_unlock(&(*s)->mu);
        if (name && !*p) {
            pthread_mutex_unlock(&(*s)->admin);
            return err_set(STELE_ENOTFOUND, "no projection named '%s'", name);
        }
    }
    return 0;
}

int stele_projections_start(stele_db *db)
{
    err_clear();
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    proj_sys *s;
    return proj_sys_get(db, &s);
}

int stele_projection_create(stele_db *db, const char *name,
                            const stele_projection_settings *settings)
{
    proj_sys *s;
    proj *p;
    int rc = enter(db, NULL, &s, NULL);
    if (rc)
        return rc;
    proj_def d;
    if ((rc = proj_check_settings(db, name, settings, &d)))
        goto out;
    pthread_mutex_lock(&s->mu);
    p = proj_find(s, name);
    pthread_mutex_unlock(&s->mu);
    if (p) {
        proj_def_free(&d);
        rc = err_set(STELE_EEXISTS, "a projection named '%s' exists", name);
        goto out;
    }
    if (d.mode == STELE_PROJ_INLINE && (rc = proj_inline_add(s, &d))) {
        proj_def_free(&d);
        goto out;
    }
    if ((rc = pstore_write_def(db, &d))) {
        if (d.mode == STELE_PROJ_INLINE)
            proj_inline_drop(s, d.name);
        proj_def_free(&d);
        goto out;
    }
    if (d.mode == STELE_PROJ_INLINE && !d.enabled)
        proj_inline_drop(s, d.name);
    /* only the newest checkpoint matters */
    char ck[256];
    stele_stream_metadata md = {.max_count = 1};
    if (pstore_stream_name(&d, "checkpoint", ck) == 0)
        store_set_metadata_system(db, ck, &md, STELE_ANY, NULL);
    err_clear();
    p = calloc(1, sizeof *p);
    proj **nl = s->n == s->cap ? realloc(s->list, (s->cap * 2 + 1) * sizeof *nl) : s->list;
    if (!p || !nl) {
        free(p);
        if (nl)
            s->list = nl;
        proj_def_free(&d);
        rc = err_set(STELE_ENOMEM, "out of memory (the projection is stored: it starts when "
                     "the store is opened again)");
        goto out;
    }
    if (nl != s->list || s->n == s->cap) {
        s->list = nl;
        s->cap = s->cap * 2 + 1;
    }
    p->sys = s;
    p->def = d;
    p->status = PS_STOPPED;
    p->fault_position = STELE_NONE;
    pthread_cond_init(&p->cv, NULL);
    pthread_mutex_lock(&s->mu);
    s->list[s->n++] = p;
    pthread_mutex_unlock(&s->mu);
    if (d.enabled)
        rc = proj_start(p);
out:
    pthread_mutex_unlock(&s->admin);
    return rc;
}

/* Write a changed definition of p (stopped by the caller) and adopt it. */
static int save_def(proj *p, proj_def *nd)
{
    int rc = pstore_write_def(p->sys->db, nd);
    if (rc) {
        proj_def_free(nd);
        return rc;
    }
    pthread_mutex_lock(&p->sys->mu);
    proj_def_free(&p->def);
    p->def = *nd;
    pthread_mutex_unlock(&p->sys->mu);
    return 0;
}

int stele_projection_update(stele_db *db, const char *name, const char *query, size_t query_len,
                            int emit_enabled)
{
    proj_sys *s;
    proj *p;
    int rc = enter(db, name, &s, &p);
    if (rc)
        return rc;
    proj_def nd;
    if ((rc = check_query(query, query_len)) || (rc = proj_def_copy(&nd, &p->def)))
        goto out;
    free(nd.query);
    nd.query = malloc(query_len + 1);
    if (!nd.query) {
        rc = err_set(STELE_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(nd.query, query, query_len);
    nd.query[query_len] = 0;
    nd.query_len = query_len;
    if (emit_enabled == 0 || emit_enabled == 1)
        nd.emit_enabled = emit_enabled;
    if ((rc = try_query(&nd))) {
        proj_def_free(&nd);
        goto out;
    }
    if (nd.mode == STELE_PROJ_INLINE) {
        if (nd.emit_enabled) {
            proj_def_free(&nd);
            rc = err_set(STELE_EINVAL, "an inline projection cannot emit");
            goto out;
        }
        proj_inline_drop(s, name);
        if (nd.enabled && (rc = proj_inline_add(s, &nd))) {
            proj_inline_add(s, &p->def); /* the old query goes on */
            proj_def_free(&nd);
            goto out;
        }
    }
    proj_stop(p);
    if ((rc = save_def(p, &nd)) == 0 && p->def.enabled)
        rc = proj_start(p);
out:
    pthread_mutex_unlock(&s->admin);
    return rc;
}

static int set_enabled(stele_db *db, const char *name, int on)
{
    proj_sys *s;
    proj *p;
    int rc = enter(db, name, &s, &p);
    if (rc)
        return rc;
    proj_stop(p);
    if (p->def.mode == STELE_PROJ_INLINE && p->def.enabled != on) {
        if (on && (rc = proj_inline_add(s, &p->def))) {
            pthread_mutex_unlock(&s->admin);
            return rc;
        }
        if (!on)
            proj_inline_drop(s, name);
    }
    if (p->def.enabled != on) {
        proj_def nd;
        if ((rc = proj_def_copy(&nd, &p->def)) == 0) {
            nd.enabled = on;
            rc = save_def(p, &nd);
        }
    }
    if (!rc && on)
        rc = proj_start(p);
    if (!rc && !on) {
        pthread_mutex_lock(&s->mu);
        p->status = PS_STOPPED;
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&s->admin);
    return rc;
}

int stele_projection_enable(stele_db *db, const char *name) { return set_enabled(db, name, 1); }
int stele_projection_disable(stele_db *db, const char *name) { return set_enabled(db, name, 0); }

int stele_projection_reset(stele_db *db, const char *name)
{
    proj_sys *s;
    proj *p;
    int rc = enter(db, name, &s, &p);
    if (rc)
        return rc;
    if (p->def.mode == STELE_PROJ_INLINE) {
        rc = err_set(STELE_EINVAL, "an inline projection keeps no state of its own to reset: its "
                     "states are its streams' snapshots, made by their appends");
        goto out;
    }
    proj_stop(p);
    proj_def nd;
    if ((rc = proj_def_copy(&nd, &p->def)))
        goto out;
    nd.epoch++;
    nd.reset_pending = 1;
    if ((rc = save_def(p, &nd)))
        goto out;
    /* Emitted streams go before the projection runs again, so nothing it
     * emits from now on is deleted with them. */
    if ((rc = pstore_delete_streams(db, &p->def, 1, 1)))
        goto out;
    if ((rc = proj_def_copy(&nd, &p->def)))
        goto out;
    nd.reset_pending = 0;
    if ((rc = save_def(p, &nd)))
        goto out;
    pthread_mutex_lock(&s->mu);
    p->position = 0;
    p->status = PS_STOPPED;
    p->fault[0] = 0;
    pthread_mutex_unlock(&s->mu);
    if (p->def.enabled)
        rc = proj_start(p);
out:
    pthread_mutex_unlock(&s->admin);
    return rc;
}

int stele_projection_delete(stele_db *db, const char *name, unsigned flags)
{
    proj_sys *s;
    proj *p;
    int rc = enter(db, name, &s, &p);
    if (rc)
        return rc;
    if (flags & ~(STELE_PROJ_DELETE_STATE | STELE_PROJ_DELETE_EMITTED)) {
        rc = err_set(STELE_EINVAL, "unknown delete flags 0x%x", flags);
        goto out;
    }
    proj_stop(p);
    if (p->def.mode == STELE_PROJ_INLINE)
        proj_inline_drop(s, name);
    if (flags && (rc = pstore_delete_streams(db, &p->def, (flags & STELE_PROJ_DELETE_EMITTED) != 0,
                                             (flags & STELE_PROJ_DELETE_STATE) != 0)))
        goto out;
    proj_def nd;
    if ((rc = proj_def_copy(&nd, &p->def)))
        goto out;
    nd.deleted = 1;
    nd.enabled = 0;
    /* the next projection of this name starts afresh */
    nd.epoch++;
    if ((rc = pstore_write_def(db, &nd))) {
        proj_def_free(&nd);
        goto out;
    }
    proj_def_free(&nd);
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++)
        if (s->list[i] == p) {
            s->list[i] = s->list[--s->n];
            break;
        }
    /* kept until close: a waiter may hold it */
    proj **kept = realloc(s->dead, (s->ndead + 1) * sizeof *kept);
    if (kept) {
        s->dead = kept;
        s->dead[s->ndead++] = p;
    }
    p->gone = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&s->mu);
    /* (out of memory for the list: it is leaked rather than freed under a
     * waiter) */
out:
    pthread_mutex_unlock(&s->admin);
    return rc;
}

/* ------------------------------------------------------------ info */

static size_t info_strings(const proj *p)
{
    return strlen(p->def.name) + 1 + p->def.query_len + 1 + strlen(p->fault) + 1 +
           (p->definition ? strlen(p->definition) : 0) + 1;
}

static char *put(char **area, const char *s, size_t n)
{
    char *r = *area;
    memcpy(r, s, n);
    r[n] = 0;
    *area += n + 1;
    return r;
}

static void fill_info(const proj *p, stele_projection_info *in, char **area, uint64_t head)
{
    memset(in, 0, sizeof *in);
    in->name = put(area, p->def.name, strlen(p->def.name));
    in->query = put(area, p->def.query, p->def.query_len);
    in->fault = put(area, p->fault, strlen(p->fault));
    in->definition = put(area, p->definition ? p->definition : "",
                         p->definition ? strlen(p->definition) : 0);
    in->mode = p->def.mode;
    in->enabled = p->def.enabled;
    in->emit_enabled = p->def.emit_enabled;
    in->status = status_names[p->status];
    in->fault_position = p->fault_position;
    in->position = p->position;
    in->head = head;
    in->lag = head > p->position ? head - p->position : 0;
    in->events_read = atomic_load(&p->events_read);
    in->events_processed = atomic_load(&p->events_processed);
    in->commits = atomic_load(&p->commits);
    in->handler_ns = atomic_load(&p->handler_ns);
    in->state_bytes = atomic_load(&p->state_bytes);
    in->partitions_cached = atomic_load(&p->partitions_cached);
    in->heap_bytes = atomic_load(&p->heap_bytes);
    in->epoch = p->def.epoch;
    in->settings.query = in->query;
    in->settings.query_len = p->def.query_len;
    in->settings.mode = p->def.mode;
    in->settings.enabled = p->def.enabled;
    in->settings.emit_enabled = p->def.emit_enabled;
    in->settings.memory_limit = p->def.memory_limit;
    in->settings.timeout_ms = p->def.timeout_ms;
    in->settings.cache_partitions = p->def.cache_partitions;
    in->settings.max_state_size = p->def.max_state_size;
    in->settings.snapshot_every = p->def.snapshot_every;
}

static int infos(stele_db *db, const char *name, stele_projection_info **out, size_t *n)
{
    err_clear();
    if (!db || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "out");
    *out = NULL;
    if (n)
        *n = 0;
    int rc = name ? check_name(name) : 0;
    proj_sys *s;
    if (rc || (rc = proj_sys_get(db, &s)))
        return rc;
    uint64_t head = 0; /* the end of $all, for the lag */
    stele_position_head(db, &head);
    pthread_mutex_lock(&s->mu);
    size_t cnt = 0, bytes = 0;
    for (size_t i = 0; i < s->n; i++)
        if (!name || !strcmp(s->list[i]->def.name, name)) {
            cnt++;
            bytes += info_strings(s->list[i]);
        }
    if (name && !cnt) {
        pthread_mutex_unlock(&s->mu);
        return err_set(STELE_ENOTFOUND, "no projection named '%s'", name);
    }
    if (!cnt) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    stele_projection_info *arr = malloc(cnt * sizeof *arr + bytes);
    if (!arr) {
        pthread_mutex_unlock(&s->mu);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    char *area = (char *)(arr + cnt);
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        if (!name || !strcmp(s->list[i]->def.name, name))
            fill_info(s->list[i], &arr[k++], &area, head);
    pthread_mutex_unlock(&s->mu);
    *out = arr;
    if (n)
        *n = cnt;
    return 0;
}

int stele_projection_list(stele_db *db, stele_projection_info **out, size_t *n)
{
    if (!n)
        return err_set(STELE_EINVAL, "n is NULL");
    return infos(db, NULL, out, n);
}

int stele_projection_get(stele_db *db, const char *name, stele_projection_info **out)
{
    return infos(db, name, out, NULL);
}

void stele_projection_info_free(stele_projection_info *infos_) { free(infos_); }

/* ------------------------------------------------------------ state */

int stele_projection_state(stele_db *db, const char *name, const char *partition, int result,
                           char **json, size_t *len)
{
    err_clear();
    if (!json)
        return err_set(STELE_EINVAL, "json is NULL");
    *json = NULL;
    if (len)
        *len = 0;
    if (!partition)
        partition = "";
    proj_sys *s;
    proj *p;
    int rc = enter(db, name, &s, &p);
    if (rc)
        return rc;
    proj_def d;
    pthread_mutex_lock(&s->mu);
    rc = proj_def_copy(&d, &p->def);
    int partitioned = p->definition && strstr(p->definition, "\"partitioned\":true");
    int transforms = p->definition && !strstr(p->definition, "\"transforms\":0");
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->admin);
    if (rc)
        return rc;
    buf b = {0};
    uint64_t pos;
    int found = 0;
    if (d.mode == STELE_PROJ_INLINE) {
        /* the stream's snapshot saved by its last append */
        stele_snapshot *sn = NULL;
        rc = *partition ? stele_get_snapshot(db, partition, STELE_END, &sn) : 0;
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            rc = 0;
        }
        if (!rc && sn && sn->schema_version == pstore_snapshot_tag(&d)) {
            if (buf_append(&b, sn->state, sn->state_len))
                rc = err_set(STELE_ENOMEM, "out of memory");
            found = 1;
        }
        stele_free(sn);
    } else if (result && transforms) {
        /* the newest result event */
        char rs[256];
        int n = *partition ? snprintf(rs, sizeof rs, "$projections-%s-%s-result", d.name, partition)
                           : snprintf(rs, sizeof rs, "$projections-%s-result", d.name);
        stele_page *pg = NULL;
        if (n > 0 && n < (int)sizeof rs) {
            rc = stele_read_stream(db, rs, STELE_END, STELE_BACKWARDS, 1, &pg);
            if (rc == STELE_ENOTFOUND || rc == STELE_EINVAL) {
                rc = 0;
                err_clear();
            }
            if (!rc && pg && stele_page_count(pg)) {
                const stele_event *e = stele_page_event(pg, 0);
                if (buf_append(&b, e->data, e->data_len))
                    rc = err_set(STELE_ENOMEM, "out of memory");
                found = 1;
            }
            stele_page_free(pg);
        }
    } else {
        (void)partitioned;
        rc = pstore_load_state(db, &d, partition, strlen(partition), 0, &b, &pos, &found);
    }
    proj_def_free(&d);
    if (rc || found != 1) { /* 2: dropped by $deleted */
        buf_free(&b);
        return rc;
    }
    char *r = malloc(b.len + 1);
    if (!r) {
        buf_free(&b);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    memcpy(r, b.p, b.len);
    r[b.len] = 0;
    *json = r;
    if (len)
        *len = b.len;
    buf_free(&b);
    return 0;
}

int stele_projection_wait(stele_db *db, const char *name, uint64_t position, int timeout_ms)
{
    proj_sys *s;
    proj *p;
    int rc = enter(db, name, &s, &p);
    if (rc)
        return rc;
    pthread_mutex_unlock(&s->admin);
    if (position == STELE_END) {
        if ((rc = stele_position_head(db, &position)))
            return rc;
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s->mu);
    /* p stays valid: a deleted projection is kept until the store closes */
    for (;;) {
        if (p->gone) {
            rc = err_set(STELE_ENOTFOUND, "projection '%s' was deleted", name);
            break;
        }
        if (p->position >= position || p->status != PS_RUNNING)
            break;
        if (timeout_ms < 0)
            pthread_cond_wait(&p->cv, &s->mu);
        else if (pthread_cond_timedwait(&p->cv, &s->mu, &dl)) {
            rc = err_set(STELE_EBUSY, "projection '%s' is at position %llu, not yet at %llu",
                         name, (unsigned long long)p->position, (unsigned long long)position);
            break;
        }
    }
    if (!rc && !p->gone && p->position < position && p->status == PS_FAULTED)
        rc = err_set(STELE_EINVAL, "projection '%s' faulted: %s", name, p->fault);
    pthread_mutex_unlock(&s->mu);
    return rc;
}
