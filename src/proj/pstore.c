/*
 * pstore.c - where projections keep what they know: definitions,
 * checkpoints, partition states, emitted events (stream names in
 * proj_int.h).
 *
 * Every record is an event in a system stream, so the log is the only
 * truth and a backup or a crash treats projections like everything else.
 *
 * Exactly once. pstore_commit() writes one processed batch as ONE
 * stele_append_multi commit: the emitted events, the state of every
 * partition the batch changed (each tagged with the position of the
 * batch's last handled event, "position" in its metadata), new partitions'
 * and emitted streams' registrations, results, and the checkpoint (the
 * next position to process). All or nothing: after a crash the runner
 * restarts at the last checkpoint, and nothing of an unacknowledged batch
 * exists. The runner ends a batch before it names more streams than one
 * commit takes (STELE_MAX_APPEND_STREAMS).
 *
 * A batch too big for one commit anyway (over max_append_size) is written
 * in three steps instead, each a group of appends the writer makes
 * durable together: (1) the emitted events, each appended on its own with
 * an id derived from (projection, epoch, source position, index of the
 * emit in that event's handler), so appending it again is an idempotent
 * retry that writes nothing; (2) the states, registrations and results
 * (also with derived ids); (3) the checkpoint. After a crash in between,
 * the batch is processed again: emitted events already written are
 * idempotent retries, and a partition whose stored state already covers
 * an event skips it (prelude.js compares the state's position with the
 * event's). So both ways each event changes each state once and each
 * emitted event is stored once.
 *
 * Handlers must be deterministic for this (no Math.random or Date.now in
 * what they emit), as in KurrentDB.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proj/proj_int.h"
#include "proj/pstore_int.h"

/* ---------------------------------------------------------------- names */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void hash128(const void *parts[], const size_t lens[], size_t n, uint8_t out[16])
{
    uint64_t a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
    for (size_t i = 0; i < n; i++) {
        uint64_t l = lens[i];
        a = fnv(fnv(a, &l, sizeof l), parts[i], lens[i]);
        b = fnv(fnv(b ^ 0x5bd1e995u, parts[i], lens[i]), &l, sizeof l);
    }
    /* mix the halves so that each depends on every input bit */
    a ^= b >> 29;
    b ^= a * 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(a >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(b >> (56 - 8 * i));
    }
}

int pstore_stream_name(const proj_def *d, const char *kind, char out[256])
{
    int n = snprintf(out, 256, "$projections-%s:%s", d->name, kind);
    if (n < 0 || n >= 256)
        return err_set(STELE_EINVAL, "projection stream name too long");
    return 0;
}

int pstore_partition_stream(const proj_def *d, const char *key, size_t klen, int shared,
                            char out[256])
{
    if (shared)
        return pstore_stream_name(d, "shared", out);
    int n = snprintf(out, 256, "$projections-%s:state", d->name);
    if (n < 0 || n >= 256)
        return err_set(STELE_EINVAL, "projection stream name too long");
    if (klen == 0)
        return 0; /* a projection without partitions (or the key "") */
    size_t bad;
    if ((size_t)n + 1 + klen < 256 && key[0] != '#' && !memchr(key, 0, klen) &&
        !utf8_check_name(key, klen, &bad)) {
        out[n] = '-';
        memcpy(out + n + 1, key, klen);
        out[n + 1 + klen] = 0;
        return 0;
    }
    const void *parts[] = {key};
    size_t lens[] = {klen};
    uint8_t h[16];
    hash128(parts, lens, 1, h);
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    n = snprintf(out, 256, "$projections-%s:state-#%s", d->name, hex);
    return n < 256 ? 0 : err_set(STELE_EINVAL, "projection stream name too long");
}

void pstore_event_id(const proj_def *d, const char *kind, uint64_t position, uint64_t seq,
                     const char *key, size_t klen, uint8_t id[16])
{
    const void *parts[] = {d->name, &d->epoch, kind, &position, &seq, key ? key : ""};
    size_t lens[] = {strlen(d->name), sizeof d->epoch, strlen(kind), sizeof position,
                     sizeof seq, key ? klen : 0};
    hash128(parts, lens, 6, id);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x80); /* version 8: custom */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    if (uuid_is_nil(id))
        id[15] = 1;
}

uint32_t pstore_snapshot_tag(const proj_def *d)
{
    uint32_t c = crc32c(0, d->name, strlen(d->name) + 1);
    return crc32c(c, d->query, d->query_len) | 1u; /* never 0 */
}

/* ---------------------------------------------------------------- JSON */

static int w(buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

static int w_str(buf *b, const char *s, size_t n)
{
    int rc = w(b, "\"");
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            rc = buf_append(b, e, 2);
        } else if (c < 0x20) {
            snprintf(e, sizeof e, "\\u%04x", c);
            rc = w(b, e);
        } else {
            rc = buf_append(b, &s[i], 1);
        }
    }
    return rc ? rc : w(b, "\"");
}

static int w_num(buf *b, const char *key, uint64_t v, int comma)
{
    char t[96];
    snprintf(t, sizeof t, "%s\"%s\":%llu", comma ? "," : "", key, (unsigned long long)v);
    return w(b, t);
}

/* ---------------------------------------------------------------- definitions */

void proj_def_free(proj_def *d)
{
    free(d->query);
    d->query = NULL;
}

int proj_def_copy(proj_def *dst, const proj_def *src)
{
    *dst = *src;
    dst->query = malloc(src->query_len + 1);
    if (!dst->query)
        return err_set(STELE_ENOMEM, "out of memory");
    memcpy(dst->query, src->query, src->query_len);
    dst->query[src->query_len] = 0;
    return 0;
}

int pstore_write_def(stele_db *db, const proj_def *d)
{
    buf b = {0};
    int rc = w(&b, "{\"name\":");
    rc = rc ? rc : w_str(&b, d->name, strlen(d->name));
    rc = rc ? rc : w(&b, ",\"query\":");
    rc = rc ? rc : w_str(&b, d->query, d->query_len);
    rc = rc ? rc : w(&b, d->mode == STELE_PROJ_ONE_TIME ? ",\"mode\":\"OneTime\""
                       : d->mode == STELE_PROJ_INLINE ? ",\"mode\":\"Inline\""
                                                      : ",\"mode\":\"Continuous\"");
    rc = rc ? rc : w_num(&b, "enabled", (uint64_t)d->enabled, 1);
    rc = rc ? rc : w_num(&b, "emitEnabled", (uint64_t)d->emit_enabled, 1);
    rc = rc ? rc : w_num(&b, "memoryLimit", d->memory_limit, 1);
    rc = rc ? rc : w_num(&b, "timeoutMs", d->timeout_ms, 1);
    rc = rc ? rc : w_num(&b, "cachePartitions", d->cache_partitions, 1);
    rc = rc ? rc : w_num(&b, "maxStateSize", d->max_state_size, 1);
    rc = rc ? rc : w_num(&b, "snapshotEvery", d->snapshot_every, 1);
    rc = rc ? rc : w_num(&b, "epoch", d->epoch, 1);
    rc = rc ? rc : w_num(&b, "resetPending", (uint64_t)d->reset_pending, 1);
    rc = rc ? rc : w_num(&b, "deleted", (uint64_t)d->deleted, 1);
    rc = rc ? rc : w(&b, "}");
    if (rc) {
        buf_free(&b);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    stele_event_in ev = {.type = "$ProjectionDefinition", .data = b.p, .data_len = b.len,
                         .flags = STELE_EVENT_JSON};
    rc = store_append_system(db, PROJ_REGISTRY, STELE_ANY, &ev, 1, NULL);
    buf_free(&b);
    return rc;
}

enum { F_NAME, F_QUERY, F_MODE, F_ENABLED, F_EMIT, F_MEM, F_TIMEOUT, F_CACHE, F_MAXSTATE,
       F_EPOCH, F_RESET, F_DELETED, F_SNAP, F_N };
static const char *const def_fields[F_N] = {
    "name", "query", "mode", "enabled", "emitEnabled", "memoryLimit", "timeoutMs",
    "cachePartitions", "maxStateSize", "epoch", "resetPending", "deleted", "snapshotEvery"};

/* A stored count as pstore_write_def wrote it (%llu), read back as a
 * double: 0 and *out, or -1 if negative, fractional or above `max` (a
 * value no writer made; converting it would be undefined behaviour).
 * UINT64_MAX reads back as 2^64. */
static int def_count(double v, uint64_t max, uint64_t *out)
{
    if (!(v >= 0))
        return -1;
    if (v >= 18446744073709551616.0) {
        if (v > 18446744073709551616.0 || max != UINT64_MAX)
            return -1;
        *out = UINT64_MAX;
        return 0;
    }
    uint64_t u = (uint64_t)v;
    if ((double)u != v || u > max)
        return -1;
    *out = u;
    return 0;
}

static int parse_def(const stele_event *e, proj_def *d)
{
    char *strs[F_N];
    double nums[F_N];
    int present[F_N];
    int rc = proj_json_fields(e->data, e->data_len, def_fields, F_N, strs, nums, present);
    if (rc)
        return err_set(STELE_ECORRUPT, "projection definition at position %llu is not valid",
                       (unsigned long long)e->position);
    memset(d, 0, sizeof *d);
    if (!strs[F_NAME] || !strs[F_QUERY] || strlen(strs[F_NAME]) > PROJ_NAME_MAX) {
        for (int i = 0; i < F_N; i++)
            free(strs[i]);
        return err_set(STELE_ECORRUPT, "projection definition at position %llu lacks a name "
                       "or query", (unsigned long long)e->position);
    }
    /* The counts first: a definition with one out of range is refused. */
    static const int count_fields[] = {F_MEM, F_TIMEOUT, F_CACHE, F_MAXSTATE, F_EPOCH, F_SNAP};
    uint64_t counts[F_N] = {0};
    for (size_t i = 0; i < sizeof count_fields / sizeof count_fields[0]; i++) {
        int f = count_fields[i];
        uint64_t max = f == F_TIMEOUT || f == F_CACHE || f == F_SNAP ? UINT32_MAX : UINT64_MAX;
        if (def_count(nums[f], max, &counts[f])) {
            for (int k = 0; k < F_N; k++)
                free(strs[k]);
            return err_set(STELE_ECORRUPT, "projection definition at position %llu: %s is "
                           "out of range", (unsigned long long)e->position, def_fields[f]);
        }
    }
    snprintf(d->name, sizeof d->name, "%s", strs[F_NAME]);
    d->query = strs[F_QUERY];
    strs[F_QUERY] = NULL;
    d->query_len = strlen(d->query);
    d->mode = strs[F_MODE] && !strcmp(strs[F_MODE], "OneTime") ? STELE_PROJ_ONE_TIME
            : strs[F_MODE] && !strcmp(strs[F_MODE], "Inline") ? STELE_PROJ_INLINE
                                                               : STELE_PROJ_CONTINUOUS;
    d->enabled = nums[F_ENABLED] != 0;
    d->emit_enabled = nums[F_EMIT] != 0;
    d->memory_limit = counts[F_MEM];
    d->timeout_ms = (uint32_t)counts[F_TIMEOUT];
    d->cache_partitions = (uint32_t)counts[F_CACHE];
    d->max_state_size = counts[F_MAXSTATE];
    d->epoch = counts[F_EPOCH];
    d->snapshot_every = (uint32_t)counts[F_SNAP];
    d->reset_pending = nums[F_RESET] != 0;
    d->deleted = nums[F_DELETED] != 0;
    for (int i = 0; i < F_N; i++)
        free(strs[i]);
    return 0;
}

int pstore_load_defs(stele_db *db, proj_def **defs, size_t *n)
{
    *defs = NULL;
    *n = 0;
    size_t cap = 0;
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        int rc = stele_read_stream(db, PROJ_REGISTRY, from, STELE_FORWARDS, 512, &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            return 0;
        }
        if (rc)
            goto fail;
        size_t cnt = stele_page_count(pg);
        for (size_t i = 0; i < cnt; i++) {
            proj_def d;
            if ((rc = parse_def(stele_page_event(pg, i), &d))) {
                stele_page_free(pg);
                goto fail;
            }
            size_t j = 0;
            while (j < *n && strcmp((*defs)[j].name, d.name))
                j++;
            if (j < *n) {
                proj_def_free(&(*defs)[j]);
                (*defs)[j] = d;
            } else {
                if (*n == cap) {
                    size_t nc = cap ? cap * 2 : 16;
                    proj_def *nd = realloc(*defs, nc * sizeof *nd);
                    if (!nd) {
                        proj_def_free(&d);
                        stele_page_free(pg);
                        rc = err_set(STELE_ENOMEM, "out of memory");
                        goto fail;
                    }
                    *defs = nd;
                    cap = nc;
                }
                (*defs)[(*n)++] = d;
            }
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || cnt == 0)
            break;
        from = next;
    }
    /* deleted ones are dropped */
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if ((*defs)[i].deleted)
            proj_def_free(&(*defs)[i]);
        else
            (*defs)[k++] = (*defs)[i];
    }
    *n = k;
    return 0;
fail:
    for (size_t i = 0; i < *n; i++)
        proj_def_free(&(*defs)[i]);
    free(*defs);
    *defs = NULL;
    *n = 0;
    return STELE_ECORRUPT;
}

/* ---------------------------------------------------------------- reads */

/* The last event of a system stream; *out NULL if it has none. */
static int last_event(stele_db *db, const char *stream, stele_page **pg,
                      const stele_event **out)
{
    *out = NULL;
    *pg = NULL;
    int rc = stele_read_stream(db, stream, STELE_END, STELE_BACKWARDS, 1, pg);
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        return 0;
    }
    if (rc)
        return rc;
    if (stele_page_count(*pg))
        *out = stele_page_event(*pg, 0);
    return 0;
}

/* "position" and "epoch" of a record we wrote ({"position":N,"epoch":E...}). */
static int pos_epoch(const void *p, size_t n, uint64_t *pos, uint64_t *epoch)
{
    char t[128];
    if (n >= sizeof t)
        n = sizeof t - 1;
    memcpy(t, p, n);
    t[n] = 0;
    unsigned long long a, b;
    if (sscanf(t, "{\"position\":%llu,\"epoch\":%llu", &a, &b) != 2)
        return -1;
    *pos = a;
    *epoch = b;
    return 0;
}

int pstore_read_checkpoint(stele_db *db, const proj_def *d, uint64_t *position)
{
    char name[256];
    *position = 0;
    int rc = pstore_stream_name(d, "checkpoint", name);
    if (rc)
        return rc;
    stele_page *pg;
    const stele_event *e;
    if ((rc = last_event(db, name, &pg, &e)))
        return rc;
    uint64_t pos, epoch;
    if (e && pos_epoch(e->data, e->data_len, &pos, &epoch) == 0 && epoch == d->epoch)
        *position = pos;
    stele_page_free(pg);
    return 0;
}

/* Does a state record say its partition was dropped ("dropped":true in
 * its metadata, after position and epoch)? */
static int dropped_mark(const stele_event *e)
{
    static const char mark[] = ",\"dropped\":true}";
    size_t n = sizeof mark - 1;
    return e->metadata_len > n &&
           !memcmp((const char *)e->metadata + e->metadata_len - n, mark, n);
}

int pstore_load_state(stele_db *db, const proj_def *d, const char *key, size_t klen,
                      int shared, buf *out, uint64_t *pos, int *found)
{
    char name[256];
    *found = 0;
    int rc = pstore_partition_stream(d, key, klen, shared, name);
    if (rc)
        return rc;
    stele_page *pg;
    const stele_event *e;
    if ((rc = last_event(db, name, &pg, &e)))
        return rc;
    uint64_t p, epoch;
    if (e && pos_epoch(e->metadata, e->metadata_len, &p, &epoch) == 0 && epoch == d->epoch &&
        dropped_mark(e)) {
        /* dropped by the $deleted handler (run.c add_drop): no state */
        *pos = p;
        *found = 2;
    } else if (e && pos_epoch(e->metadata, e->metadata_len, &p, &epoch) == 0 &&
               epoch == d->epoch) {
        if (buf_append(out, e->data, e->data_len)) {
            stele_page_free(pg);
            return err_set(STELE_ENOMEM, "out of memory");
        }
        *pos = p;
        *found = 1;
    }
    stele_page_free(pg);
    return 0;
}

/* ---------------------------------------------------------------- deletes */

static int remove_sys(stele_db *db, const char *stream)
{
    int rc = db->be->ops->remove(db->be, stream, strlen(stream), STELE_ANY, 0, NULL);
    if (rc == STELE_ENOTFOUND || rc == STELE_EDELETED) {
        err_clear();
        return 0;
    }
    return rc;
}

/* Soft-delete every stream named by the events of list stream `list`
 * (data = a stream name, or a partition key when `partitions`). */
static int remove_listed(stele_db *db, const proj_def *d, const char *list, int partitions)
{
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        int rc = stele_read_stream(db, list, from, STELE_FORWARDS, 512, &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            return 0;
        }
        if (rc)
            return rc;
        size_t cnt = stele_page_count(pg);
        for (size_t i = 0; i < cnt && !rc; i++) {
            const stele_event *e = stele_page_event(pg, i);
            char name[256];
            if (partitions) {
                rc = pstore_partition_stream(d, e->data, e->data_len, 0, name);
                if (rc)
                    continue;
                /* and its result stream (outputState), if it has one */
                char rs[256];
                int n = snprintf(rs, sizeof rs, "$projections-%s-%.*s-result", d->name,
                                 (int)e->data_len, (const char *)e->data);
                size_t bad;
                if (n > 0 && n < (int)sizeof rs && !utf8_check_name(rs, (size_t)n, &bad) &&
                    (rc = remove_sys(db, rs)))
                    continue;
            } else {
                if (e->data_len == 0 || e->data_len > 255)
                    continue;
                memcpy(name, e->data, e->data_len);
                name[e->data_len] = 0;
            }
            rc = remove_sys(db, name);
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (rc)
            return rc;
        if (!more || cnt == 0)
            return 0;
        from = next;
    }
}

int pstore_delete_streams(stele_db *db, const proj_def *d, int emitted, int state)
{
    char name[256];
    int rc = 0;
    if (emitted) {
        if ((rc = pstore_stream_name(d, "emittedstreams", name)) ||
            (rc = remove_listed(db, d, name, 0)) || (rc = remove_sys(db, name)))
            return rc;
    }
    if (state) {
        if ((rc = pstore_stream_name(d, "partitions", name)) ||
            (rc = remove_listed(db, d, name, 1)) || (rc = remove_sys(db, name)))
            return rc;
        static const char *const kinds[] = {"state", "shared", "checkpoint"};
        for (size_t i = 0; i < 3; i++)
            if ((rc = pstore_stream_name(d, kinds[i], name)) || (rc = remove_sys(db, name)))
                return rc;
        snprintf(name, sizeof name, "$projections-%s-result", d->name);
        if ((rc = remove_sys(db, name)))
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- commit */

pcommit_event *pcommit_add(pcommit *c, int state)
{
    pcommit_event **arr = state ? &c->states : &c->emits;
    size_t *n = state ? &c->nstates : &c->nemits;
    size_t *cap = state ? &c->cap_states : &c->cap_emits;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        pcommit_event *na = realloc(*arr, nc * sizeof *na);
        if (!na)
            return NULL;
        memset(na + *cap, 0, (nc - *cap) * sizeof *na);
        *arr = na;
        *cap = nc;
    }
    pcommit_event *e = &(*arr)[(*n)++];
    e->data.len = 0;
    e->meta.len = 0;
    e->flags = 0;
    e->stream[0] = e->type[0] = 0;
    e->lazy_kind = NULL;
    return e;
}

int pcommit_lazy_id(pcommit_event *pe, const char *kind, uint64_t position, const char *key,
                    size_t klen)
{
    pe->lazy_kind = kind;
    pe->lazy_pos = position;
    pe->lazy_key.len = 0;
    if (klen && buf_append(&pe->lazy_key, key, klen))
        return err_set(STELE_ENOMEM, "out of memory");
    return 0;
}

/* The ids left to make (commit_steps needs every one). */
static void make_lazy_ids(const proj_def *d, pcommit_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (evs[i].lazy_kind)
            pstore_event_id(d, evs[i].lazy_kind, evs[i].lazy_pos, 0,
                            (const char *)evs[i].lazy_key.p, evs[i].lazy_key.len, evs[i].id);
}

void pcommit_clear(pcommit *c)
{
    c->nemits = 0;
    c->nstates = 0;
}

void pcommit_free(pcommit *c)
{
    for (size_t i = 0; i < c->cap_emits; i++) {
        buf_free(&c->emits[i].data);
        buf_free(&c->emits[i].meta);
        buf_free(&c->emits[i].lazy_key);
    }
    for (size_t i = 0; i < c->cap_states; i++) {
        buf_free(&c->states[i].data);
        buf_free(&c->states[i].meta);
        buf_free(&c->states[i].lazy_key);
    }
    free(c->emits);
    free(c->states);
    memset(c, 0, sizeof *c);
}

/* Waiting for a group of queued appends. */
typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t pending;
    int rc;
    char msg[512];
} waiter;

static void waiter_done(void *ctx, int rc, const stele_append_result *res, const char *errmsg)
{
    (void)res;
    waiter *wt = ctx;
    pthread_mutex_lock(&wt->mu);
    if (rc && !wt->rc) {
        wt->rc = rc;
        snprintf(wt->msg, sizeof wt->msg, "%s", errmsg);
    }
    if (--wt->pending == 0)
        pthread_cond_signal(&wt->cv);
    pthread_mutex_unlock(&wt->mu);
}

/* Append each event on its own, queued together so the writer commits
 * them in one group; wait for all. */
static int append_each(stele_db *db, pcommit_event *evs, size_t n)
{
    if (n == 0)
        return 0;
    waiter wt;
    memset(&wt, 0, sizeof wt);
    pthread_mutex_init(&wt.mu, NULL);
    pthread_cond_init(&wt.cv, NULL);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        pcommit_event *e = &evs[i];
        stele_event_in in = {.id = e->id, .type = e->type, .data = e->data.p,
                             .data_len = e->data.len, .metadata = e->meta.p,
                             .metadata_len = e->meta.len, .flags = e->flags};
        pthread_mutex_lock(&wt.mu);
        wt.pending++;
        pthread_mutex_unlock(&wt.mu);
        rc = store_append_system_async(db, e->stream, STELE_ANY, &in, 1, waiter_done, &wt);
        if (rc) {
            char msg[600];
            snprintf(msg, sizeof msg, "appending to '%s': %s", e->stream, stele_errmsg());
            pthread_mutex_lock(&wt.mu);
            wt.pending--;
            pthread_mutex_unlock(&wt.mu);
            err_set(rc, "%s", msg);
            break;
        }
    }
    pthread_mutex_lock(&wt.mu);
    while (wt.pending)
        pthread_cond_wait(&wt.cv, &wt.mu);
    pthread_mutex_unlock(&wt.mu);
    pthread_mutex_destroy(&wt.mu);
    pthread_cond_destroy(&wt.cv);
    if (!rc && wt.rc)
        rc = err_set(wt.rc, "%s", wt.msg);
    return rc;
}

int pstore_keep_last(stele_db *db, const char *stream)
{
    stele_stream_metadata *md = NULL;
    int rc = store_get_metadata_system(db, stream, &md);
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        rc = 0;
    }
    if (rc || (md && md->max_count == 1)) {
        stele_free(md);
        return rc;
    }
    stele_stream_metadata nm;
    memset(&nm, 0, sizeof nm);
    if (md)
        nm = *md; /* its custom text stays valid until md is freed */
    nm.max_count = 1;
    rc = store_set_metadata_system(db, stream, &nm, STELE_ANY, NULL);
    stele_free(md);
    return rc;
}

/* The checkpoint record of a batch. */
static void checkpoint_event(const proj_def *d, const pcommit *c, char *t, size_t cap,
                             stele_event_in *ev)
{
    snprintf(t, cap, "{\"position\":%llu,\"epoch\":%llu}", (unsigned long long)c->checkpoint,
             (unsigned long long)d->epoch);
    memset(ev, 0, sizeof *ev);
    ev->type = "$ProjectionCheckpoint";
    ev->data = t;
    ev->data_len = strlen(t);
    ev->flags = STELE_EVENT_JSON;
}

static int commit_steps(stele_db *db, const proj_def *d, pcommit *c)
{
    make_lazy_ids(d, c->emits, c->nemits);
    make_lazy_ids(d, c->states, c->nstates);
    int rc = append_each(db, c->emits, c->nemits);
    if (!rc)
        rc = append_each(db, c->states, c->nstates);
    if (rc)
        return rc;
    char name[256], t[128];
    if ((rc = pstore_stream_name(d, "checkpoint", name)))
        return rc;
    stele_event_in ev;
    checkpoint_event(d, c, t, sizeof t, &ev);
    return store_append_system(db, name, STELE_ANY, &ev, 1, NULL);
}

/* Index of `name` in the request's stream table, adding it if new. */
typedef struct stab {
    const char **names;
    size_t n, cap;
    uint32_t *slots; /* open addressing: index + 1, 0 = empty */
    size_t nslots;
} stab;

static long stab_index(stab *t, const char *name)
{
    if (t->n + 1 > t->nslots / 2) {
        size_t ns = t->nslots ? t->nslots * 2 : 256;
        uint32_t *sl = calloc(ns, sizeof *sl);
        if (!sl)
            return -1;
        for (size_t i = 0; i < t->n; i++) {
            size_t h = fnv(0xcbf29ce484222325ull, t->names[i], strlen(t->names[i])) & (ns - 1);
            while (sl[h])
                h = (h + 1) & (ns - 1);
            sl[h] = (uint32_t)i + 1;
        }
        free(t->slots);
        t->slots = sl;
        t->nslots = ns;
    }
    size_t h = fnv(0xcbf29ce484222325ull, name, strlen(name)) & (t->nslots - 1);
    while (t->slots[h]) {
        if (!strcmp(t->names[t->slots[h] - 1], name))
            return t->slots[h] - 1;
        h = (h + 1) & (t->nslots - 1);
    }
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        const char **nn = realloc(t->names, nc * sizeof *nn);
        if (!nn)
            return -1;
        t->names = nn;
        t->cap = nc;
    }
    t->names[t->n] = name;
    t->slots[h] = (uint32_t)t->n + 1;
    return (long)t->n++;
}

/* Order of a batch's states, registrations, results and snapshots in its
 * commit (an array of pointers into the batch's states): by stream name,
 * and in batch order within a stream (the addresses break ties, so the
 * sort is stable). */
static int state_cmp(const void *a, const void *b)
{
    const pcommit_event *x = *(const pcommit_event *const *)a;
    const pcommit_event *y = *(const pcommit_event *const *)b;
    int c = strcmp(x->stream, y->stream);
    return c ? c : (x > y) - (x < y);
}

/*
 * The batch as one stele_append_multi commit: every emitted event, state,
 * registration, result and the checkpoint, all or nothing. Returns 1
 * (without writing) when the batch does not fit one commit (streams or
 * bytes over the limits): the caller then commits it in steps.
 *
 * Emitted events keep the order the handlers emitted them in; the rest is
 * sorted by stream name (state_cmp). So the partition registrations of a
 * batch are one run of records in one stream (one commit entry in the
 * index and one run per secondary key, instead of one each per new
 * partition between its states), and new state streams go into the
 * index's stream table in key order, next to each other. Readers never
 * depend on the order of records inside one commit across streams.
 */
static int commit_multi(stele_db *db, const proj_def *d, pcommit *c)
{
    size_t nrec = c->nemits + c->nstates + 1;
    uint64_t bytes = 0;
    for (size_t i = 0; i < c->nemits; i++)
        bytes += c->emits[i].data.len + c->emits[i].meta.len + 600;
    for (size_t i = 0; i < c->nstates; i++)
        bytes += c->states[i].data.len + c->states[i].meta.len + 600;
    if (bytes + 1024 > db->opts.max_append_size)
        return 1;
    stab t;
    memset(&t, 0, sizeof t);
    stele_append_record *recs = calloc(nrec, sizeof *recs);
    char ckname[256], ckdata[128];
    int rc = recs ? pstore_stream_name(d, "checkpoint", ckname)
                  : err_set(STELE_ENOMEM, "out of memory");
    size_t k = 0;
    pcommit_event **order = NULL;
    if (!rc && c->nstates && !(order = malloc(c->nstates * sizeof *order)))
        rc = err_set(STELE_ENOMEM, "out of memory");
    if (!rc && c->nstates) {
        for (size_t i = 0; i < c->nstates; i++)
            order[i] = &c->states[i];
        qsort(order, c->nstates, sizeof *order, state_cmp);
    }
    for (size_t pass = 0; pass < 2 && !rc; pass++) {
        size_t n = pass ? c->nstates : c->nemits;
        for (size_t i = 0; i < n && !rc; i++) {
            pcommit_event *ev = pass ? order[i] : &c->emits[i];
            long ix = stab_index(&t, ev->stream);
            if (ix < 0) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            recs[k].stream = (size_t)ix;
            /* Emitted events keep their derived ids: a replay of a batch
             * partly written in steps must find them. States,
             * registrations and results need none in one commit (a
             * duplicate of those is harmless), which spares the id index. */
            recs[k].event = (stele_event_in){.id = pass ? NULL : ev->id, .type = ev->type,
                                             .data = ev->data.p, .data_len = ev->data.len,
                                             .metadata = ev->meta.p,
                                             .metadata_len = ev->meta.len,
                                             .flags = ev->flags};
            k++;
        }
    }
    if (!rc) {
        long ix = stab_index(&t, ckname);
        if (ix < 0)
            rc = err_set(STELE_ENOMEM, "out of memory");
        else {
            recs[k].stream = (size_t)ix;
            checkpoint_event(d, c, ckdata, sizeof ckdata, &recs[k].event);
            k++;
        }
    }
    stele_append_stream *st = NULL;
    if (!rc && t.n > STELE_MAX_APPEND_STREAMS)
        rc = 1;
    if (!rc && !(st = calloc(t.n, sizeof *st)))
        rc = err_set(STELE_ENOMEM, "out of memory");
    if (!rc) {
        for (size_t i = 0; i < t.n; i++)
            st[i] = (stele_append_stream){.stream = t.names[i], .expected = STELE_ANY};
        stele_multi_result res;
        rc = store_append_multi_system(db, st, t.n, recs, k, NULL, NULL, &res);
        /* Too big; or a replay of a batch that was partly written in
         * steps before a crash (some derived ids exist as single
         * appends): the steps, made of idempotent single appends, finish
         * it. Nothing was written by the failed commit. */
        if (rc == STELE_ETOOBIG || rc == STELE_EIDCONFLICT) {
            err_clear();
            rc = 1;
        }
    }
    free(st);
    free(recs);
    free(order);
    free(t.names);
    free(t.slots);
    return rc;
}

int pstore_commit(stele_db *db, const proj_def *d, pcommit *c)
{
    /* Tests set STELE_PROJ_COMMIT_STEPS=1 to exercise the step path. */
    const char *steps = getenv("STELE_PROJ_COMMIT_STEPS");
    int rc = steps && *steps == '1' ? 1 : commit_multi(db, d, c);
    if (rc == 1)
        rc = commit_steps(db, d, c);
    return rc;
}

/* ---------------------------------------------------------------- snapshots */

/* $projections-NAME:snap-STREAM, or :snap-#HASH when that is too long. */
static int snapshot_stream(const proj_def *d, const char *stream, size_t slen, char out[256])
{
    int n = snprintf(out, 256, "$projections-%s:snap-%.*s", d->name, (int)slen, stream);
    if (n > 0 && n < 256)
        return 0;
    const void *parts[] = {stream};
    size_t lens[] = {slen};
    uint8_t h[16];
    hash128(parts, lens, 1, h);
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    n = snprintf(out, 256, "$projections-%s:snap-#%s", d->name, hex);
    return n > 0 && n < 256 ? 0 : err_set(STELE_EINVAL, "projection stream name too long");
}

int pstore_snapshot_record(const proj_def *d, const char *stream, size_t slen, uint64_t revision,
                           uint64_t position, pcommit_event *pe)
{
    int rc = snapshot_stream(d, stream, slen, pe->stream);
    if (rc)
        return rc;
    snprintf(pe->type, sizeof pe->type, "$ProjectionSnapshot");
    char t[160];
    snprintf(t, sizeof t, "{\"revision\":%llu,\"tag\":%u,\"position\":%llu}",
             (unsigned long long)revision, pstore_snapshot_tag(d), (unsigned long long)position);
    pe->meta.len = 0;
    if (buf_append(&pe->meta, t, strlen(t)))
        return err_set(STELE_ENOMEM, "out of memory");
    pe->flags = STELE_EVENT_JSON | STELE_META_JSON;
    pstore_event_id(d, "snap", revision, 0, stream, slen, pe->id);
    return 0;
}

static int snap_meta(const stele_event *e, uint64_t *rev, uint32_t *tag)
{
    char t[160];
    size_t n = e->metadata_len < sizeof t - 1 ? e->metadata_len : sizeof t - 1;
    memcpy(t, e->metadata, n);
    t[n] = 0;
    unsigned long long r;
    unsigned g;
    if (sscanf(t, "{\"revision\":%llu,\"tag\":%u", &r, &g) != 2)
        return -1;
    *rev = r;
    *tag = g;
    return 0;
}

int pstore_find_snapshot(stele_db *db, const proj_def *d, const char *stream, uint64_t revision,
                         buf *state, uint64_t *at, int *found)
{
    *found = 0;
    char name[256];
    int rc = snapshot_stream(d, stream, strlen(stream), name);
    if (rc || !d->snapshot_every || revision + 1 < d->snapshot_every)
        return rc;
    uint32_t tag = pstore_snapshot_tag(d);
    /* The k-th snapshot is normally at revision k of the snapshot stream;
     * a query changed since, or a batch written twice in steps, shifts
     * them: then read backwards from there (or from the end). */
    uint64_t k = (revision + 1) / d->snapshot_every - 1;
    for (int attempt = 0; attempt < 2 && !*found; attempt++) {
        stele_page *pg;
        rc = stele_read_stream(db, name, attempt ? STELE_END : k, STELE_BACKWARDS,
                               attempt ? 256 : 1, &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            return 0;
        }
        if (rc)
            return rc;
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            const stele_event *e = stele_page_event(pg, i);
            uint64_t r;
            uint32_t g;
            if (snap_meta(e, &r, &g) || g != tag || r > revision)
                continue;
            if (attempt == 0 && r != (k + 1) * d->snapshot_every - 1)
                break; /* not the one expected: search */
            if (buf_append(state, e->data, e->data_len)) {
                stele_page_free(pg);
                return err_set(STELE_ENOMEM, "out of memory");
            }
            *at = r;
            *found = 1;
            break;
        }
        stele_page_free(pg);
    }
    return 0;
}

/* The fuzz driver's door to parse_def() (pstore_int.h). */
int pstore_parse_def_int(const stele_event *e, proj_def *d) { return parse_def(e, d); }
