/*
 * store.c - the public API (include/stele.h) at its edge: every argument is
 * checked here, with a precise message, before a backend sees it; the
 * backend then assumes valid input. Limits, name rules and ids are decided
 * here, so every backend enforces the same ones.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "store/store_int.h"
#include "stele.h"
#include "util/util.h"

#define DEFAULT_SEGMENT_SIZE (64ull << 20)
#define MIN_SEGMENT_SIZE (64ull << 10)
#define MAX_SEGMENT_SIZE (2ull << 30)
#define DEFAULT_MAX_EVENT (16ull << 20)
#define DEFAULT_MAX_APPEND (64ull << 20)
#define DEFAULT_MAX_GROUPS 1000u
#define DEFAULT_MAX_CONSUMERS 100u
#define MAX_NAME 255u
#define MAX_TAGS 64u


int stele_open(const char *uri, const stele_options *opts, stele_db **out)
{
    err_clear();
    if (!uri || !*uri || !out)
        return err_set(STELE_EINVAL, "stele_open: %s is NULL or empty", !out ? "out" : "uri");
    if (strlen(uri) > 3000)
        return err_set(STELE_EINVAL, "stele_open: store URI is longer than 3000 bytes");
    stele_options o = {0};
    if (opts)
        o = *opts;
    if (!o.segment_size)
        o.segment_size = DEFAULT_SEGMENT_SIZE;
    if (!o.max_event_size)
        o.max_event_size = DEFAULT_MAX_EVENT;
    if (!o.max_append_size)
        o.max_append_size = DEFAULT_MAX_APPEND;
    if (!o.max_groups)
        o.max_groups = DEFAULT_MAX_GROUPS;
    if (!o.max_consumers_per_group)
        o.max_consumers_per_group = DEFAULT_MAX_CONSUMERS;
    if (o.segment_size < MIN_SEGMENT_SIZE || o.segment_size > MAX_SEGMENT_SIZE)
        return err_set(STELE_EINVAL, "segment_size must be between 64 KiB and 2 GiB");
    if (o.max_event_size > (1ull << 30) || o.max_append_size > (1ull << 30))
        return err_set(STELE_EINVAL, "max_event_size and max_append_size must be at most 1 GiB");
    if (!memchr(o.node_name, 0, sizeof o.node_name))
        return err_set(STELE_EINVAL, "node_name is not terminated within %d bytes",
                       STELE_NODE_NAME_MAX);
    if (o.flags & ~(STELE_OPEN_VERIFY | STELE_OPEN_NOCREATE | STELE_OPEN_NO_INDEXES |
                    STELE_OPEN_NO_CHAIN))
        return err_set(STELE_EINVAL, "unknown open flags 0x%x", o.flags);
    stele_db *db = calloc(1, sizeof *db);
    if (!db)
        return err_set(STELE_ENOMEM, "out of memory");
    db->opts = o;
    int rc = backend_open(uri, &o, &db->be);
    if (rc) {
        free(db);
        return rc;
    }
    *out = db;
    return 0;
}

void stele_close(stele_db *db)
{
    if (!db)
        return;
    for (int i = 0; i < STORE_UP_N; i++)
        if (db->close_up[i])
            db->close_up[i](db);
    db->be->ops->close(db->be);
    store_chain_close(db);
    free(db);
}

/* Check a stream name; 0 or EINVAL with the reason. Names starting with
 * '$' are system streams: readable by anyone (`system` = 2), written only
 * by the store itself (`system` = 1), and `$deletes` by nobody. */
int check_name_of(const char *stream, size_t *len, int system)
{
    if (!stream)
        return err_set(STELE_EINVAL, "stream name is NULL");
    size_t n = strnlen(stream, MAX_NAME + 1);
    if (n == 0)
        return err_set(STELE_EINVAL, "stream name is empty");
    if (n > MAX_NAME)
        return err_set(STELE_EINVAL, "stream name is longer than %u bytes", MAX_NAME);
    size_t at;
    const char *why = utf8_check_name(stream, n, &at);
    if (why)
        return err_set(STELE_EINVAL, "stream name: %s at byte %zu", why, at);
    if (stream[0] == '$' && !system)
        return err_set(STELE_EINVAL, "stream name '%s': names starting with '$' are reserved",
                       stream);
    /* `$deletes` holds the store's own record of every delete (one event per
     * delete, local_removes.c): no append may forge one, not even the
     * store's projections (emit, linkTo, copyTo). Reads pass system = 2. */
    if (system == 1 && n == sizeof STORE_DELETES - 1 && !memcmp(stream, STORE_DELETES, n))
        return err_set(STELE_EINVAL,
                       "stream name '%s': written only by the store, one event per stream "
                       "delete",
                       stream);
    *len = n;
    return 0;
}

/* A stream to write: no system names. */
int check_stream(const char *stream, size_t *len)
{
    return check_name_of(stream, len, 0);
}

/* A stream to read: system streams too. */
int store_check_read_stream(const char *stream, size_t *len)
{
    return check_name_of(stream, len, 2);
}

/* A type or tag of event i: 0 with its length in *len, or EINVAL. */
static int check_name(const char *what, size_t i, const char *s, size_t *len)
{
    if (!s)
        return err_set(STELE_EINVAL, "event %zu: %s is NULL", i, what);
    size_t n = strnlen(s, MAX_NAME + 1);
    *len = n;
    if (n == 0)
        return err_set(STELE_EINVAL, "event %zu: %s is empty", i, what);
    if (n > MAX_NAME)
        return err_set(STELE_EINVAL, "event %zu: %s is longer than %u bytes", i, what, MAX_NAME);
    size_t at;
    const char *why = utf8_check_name(s, n, &at);
    if (why)
        return err_set(STELE_EINVAL, "event %zu: %s: %s at byte %zu", i, what, why, at);
    return 0;
}

/* One event of an append to a stream whose name is `slen` bytes: 0 with
 * its size (STORE_EVENT_FIXED + name + payload) in *size, or EINVAL /
 * ETOOBIG naming event i. */
int store_check_event(const stele_options *o, size_t i, const stele_event_in *e, size_t slen,
                      const char *checked_type, uint64_t *size)
{
    int rc;
    size_t type_len = 0, tag_len = 0;
    if (e->type && e->type == checked_type)
        type_len = strlen(e->type); /* valid, so at most MAX_NAME bytes */
    else if ((rc = check_name("type", i, e->type, &type_len)))
        return rc;
    if (e->ntags > MAX_TAGS)
        return err_set(STELE_EINVAL, "event %zu: %zu tags, more than %u", i, e->ntags, MAX_TAGS);
    if (e->ntags && !e->tags)
        return err_set(STELE_EINVAL, "event %zu: tags is NULL", i);
    uint64_t payload = type_len + (uint64_t)e->data_len + e->metadata_len;
    for (size_t t = 0; t < e->ntags; t++) {
        if ((rc = check_name("tag", i, e->tags[t], &tag_len)))
            return rc;
        payload += tag_len;
    }
    if ((e->data_len && !e->data) || (e->metadata_len && !e->metadata))
        return err_set(STELE_EINVAL, "event %zu: %s is NULL with a non-zero length", i,
                       e->data_len && !e->data ? "data" : "metadata");
    if (e->flags & ~(uint32_t)(STELE_EVENT_JSON | STELE_META_JSON | STELE_EVENT_ID_ULID))
        return err_set(STELE_EINVAL, "event %zu: unknown flags 0x%x", i, e->flags);
    if (e->data_len > o->max_event_size || e->metadata_len > o->max_event_size ||
        payload > o->max_event_size)
        return err_set(STELE_ETOOBIG, "event %zu: %llu bytes, more than the %llu-byte event limit",
                       i, (unsigned long long)payload, (unsigned long long)o->max_event_size);
    *size = STORE_EVENT_FIXED + slen + payload;
    return 0;
}

/* A name in a query item ("type" or "tag" of item i): 0 or EINVAL. */
int store_check_item_name(const char *what, size_t i, const char *s)
{
    if (!s)
        return err_set(STELE_EINVAL, "condition item %zu: a %s is NULL", i, what);
    size_t n = strnlen(s, MAX_NAME + 1);
    if (n == 0 || n > MAX_NAME)
        return err_set(STELE_EINVAL, "condition item %zu: a %s is %s", i, what,
                       n ? "longer than 255 bytes" : "empty");
    size_t at;
    const char *why = utf8_check_name(s, n, &at);
    if (why)
        return err_set(STELE_EINVAL, "condition item %zu: %s '%s': %s at byte %zu", i, what, s,
                       why, at);
    return 0;
}

int check_expected(int64_t expected)
{
    if (expected >= 0 || expected == STELE_ANY || expected == STELE_NO_STREAM ||
        expected == STELE_STREAM_EXISTS)
        return 0;
    return err_set(STELE_EINVAL,
                   "expected revision %lld is not a revision, STELE_ANY, STELE_NO_STREAM or "
                   "STELE_STREAM_EXISTS",
                   (long long)expected);
}

int store_take_event(const stele_options *o, size_t i, const stele_event_in *e, size_t slen,
                     const char *checked_type, int64_t now_us, uint64_t *total, uint8_t id[16],
                     uint8_t *made, size_t *nclient)
{
    uint64_t size;
    int rc = store_check_event(o, i, e, slen, checked_type, &size);
    if (rc)
        return rc;
    *total += size;
    if (*total > o->max_append_size)
        return err_set(STELE_ETOOBIG, "append is larger than the %llu-byte append limit",
                       (unsigned long long)o->max_append_size);
    if (e->id) {
        if (uuid_is_nil(e->id))
            return err_set(STELE_EINVAL, "event %zu: the nil UUID is not an event id", i);
        memcpy(id, e->id, 16);
        *made = 0;
        (*nclient)++;
    } else {
        uuid_v7_at(id, now_us);
        *made = 1;
    }
    return 0;
}

int store_check_ids(const uint8_t (*ids)[16], const uint8_t *made, size_t n, size_t nclient)
{
    if (nclient < 2)
        return 0;
    long dup = uuid_find_dup(ids, made, n);
    if (dup == -2)
        return err_set(STELE_ENOMEM, "out of memory");
    if (dup < 0)
        return 0;
    char t[37];
    stele_uuid_format(ids[dup], t);
    return err_set(STELE_EINVAL, "event id %s appears twice in the append", t);
}

/* An append checked and ready for a backend: the ids (client-given or
 * made here) and the encoded size. */
typedef struct prepared {
    append_args a;
    uint8_t (*ids)[16];
    uint8_t *made;
} prepared;

static void prepared_free(prepared *p)
{
    free(p->ids); /* made lives in the same block */
    p->ids = NULL;
    p->made = NULL;
}

/* Check every argument of an append and fill *p (free with prepared_free,
 * also on failure). */
static int prepare(stele_db *db, const char *stream, int64_t expected,
                   const stele_event_in *events, size_t n, int system, prepared *p)
{
    memset(p, 0, sizeof *p);
    size_t slen;
    int rc;
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    if ((rc = check_name_of(stream, &slen, system)) || (rc = check_expected(expected)))
        return rc;
    if (n == 0 || !events)
        return err_set(STELE_EINVAL, "an append needs at least one event");
    if (n > db->opts.max_append_size / STORE_EVENT_FIXED)
        return err_set(STELE_ETOOBIG, "append of %zu events is larger than the %llu-byte limit", n,
                       (unsigned long long)db->opts.max_append_size);
    /* One block: the ids, then the made flags (keep_ids keeps it whole). */
    p->ids = malloc(n * 17);
    if (!p->ids)
        return err_set(STELE_ENOMEM, "out of memory");
    p->made = (uint8_t *)(p->ids + n);
    uint64_t total = 0;
    size_t nclient = 0;
    int64_t now_us = time_now_us();
    for (size_t i = 0; i < n; i++)
        if ((rc = store_take_event(&db->opts, i, &events[i], slen, i ? events[i - 1].type : NULL,
                                   now_us, &total, p->ids[i], &p->made[i], &nclient)))
            return rc;
    if ((rc = store_check_ids((const uint8_t(*)[16])p->ids, p->made, n, nclient)))
        return rc;
    p->a = (append_args){stream, slen, expected, events, n, (const uint8_t(*)[16])p->ids,
                         p->made, total};
    return 0;
}

/* The ids of the calling thread's last successful stele_append
 * (stele_append_result.ids): one buffer per thread, replaced by the next
 * append, freed when the thread exits. */
static pthread_key_t ids_key;
static pthread_once_t ids_once = PTHREAD_ONCE_INIT;

static void ids_key_init(void)
{
    if (pthread_key_create(&ids_key, free))
        abort();
}

static const uint8_t (*keep_ids(uint8_t (*ids)[16]))[16]
{
    pthread_once(&ids_once, ids_key_init);
    free(pthread_getspecific(ids_key));
    if (pthread_setspecific(ids_key, ids)) {
        free(ids);
        return NULL;
    }
    return (const uint8_t(*)[16])ids;
}

static int append_sync(stele_db *db, const char *stream, int64_t expected,
                       const stele_event_in *events, size_t n, int system,
                       stele_append_result *res)
{
    err_clear();
    if (res)
        memset(res, 0, sizeof *res);
    prepared p;
    int rc = prepare(db, stream, expected, events, n, system, &p);
    struct proj_inline *pi = rc == 0 && !system ? proj_inline_for(db, stream, p.a.stream_len) : NULL;
    if (rc == 0 && pi)
        rc = proj_inline_append(db, pi, stream, expected, events, n, res);
    else if (rc == 0)
        rc = db->be->ops->append(db->be, &p.a, res);
    if (res) {
        res->ids = NULL;
        if (rc == 0 && !pi) {
            res->ids = keep_ids(p.ids);
            p.ids = NULL;
        }
    }
    prepared_free(&p);
    return rc;
}

int stele_append(stele_db *db, const char *stream, int64_t expected,
                 const stele_event_in *events, size_t n, stele_append_result *res)
{
    return append_sync(db, stream, expected, events, n, 0, res);
}

int store_append_system(stele_db *db, const char *stream, int64_t expected,
                        const stele_event_in *events, size_t n, stele_append_result *res)
{
    return append_sync(db, stream, expected, events, n, 1, res);
}

int stele_append_users(stele_db *db, int64_t expected, const stele_event_in *events, size_t n,
                       stele_append_result *res)
{
    return append_sync(db, "$users", expected, events, n, 1, res);
}

/*
 * An async append owns a deep copy of its stream name and events in one
 * allocation, so the caller may free its own as soon as the call returns.
 */
typedef struct async_append {
    prepared p;
    stele_append_cb cb;
    void *ctx;
    stele_event_in *ev;
    char *mem; /* stream, then per event: type, tags, data, metadata */
    int via_inline; /* an inline projection's worker appends: ids unknown */
} async_append;

static void async_done(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    async_append *aa = ctx;
    stele_append_result r = *res;
    r.ids = rc == 0 && !aa->via_inline ? (const uint8_t(*)[16])aa->p.ids : NULL;
    aa->cb(aa->ctx, rc, &r, msg);
    prepared_free(&aa->p);
    free(aa->ev);
    free(aa->mem);
    free(aa);
}

static int async_copy(async_append *aa, const char *stream, const stele_event_in *events,
                      size_t n)
{
    size_t need = strlen(stream) + 1;
    for (size_t i = 0; i < n; i++) {
        need += strlen(events[i].type) + 1 + events[i].data_len + events[i].metadata_len + 16;
        need += events[i].ntags * sizeof(char *) + 8;
        for (size_t t = 0; t < events[i].ntags; t++)
            need += strlen(events[i].tags[t]) + 1;
    }
    aa->ev = malloc(n * sizeof *aa->ev);
    aa->mem = malloc(need);
    if (!aa->ev || !aa->mem)
        return err_set(STELE_ENOMEM, "out of memory");
    char *p = aa->mem;
    size_t sl = strlen(stream) + 1;
    memcpy(p, stream, sl);
    aa->p.a.stream = p;
    p += sl;
    for (size_t i = 0; i < n; i++) {
        const stele_event_in *e = &events[i];
        stele_event_in *c = &aa->ev[i];
        *c = *e;
        if (e->id) {
            memcpy(p, e->id, 16);
            c->id = (const uint8_t *)p;
            p += 16;
        }
        size_t tl = strlen(e->type) + 1;
        memcpy(p, e->type, tl);
        c->type = p;
        p += tl;
        p += (8 - ((uintptr_t)p & 7)) & 7;
        const char **tags = (const char **)(void *)p;
        p += e->ntags * sizeof(char *);
        for (size_t t = 0; t < e->ntags; t++) {
            size_t l = strlen(e->tags[t]) + 1;
            memcpy(p, e->tags[t], l);
            tags[t] = p;
            p += l;
        }
        c->tags = tags;
        if (e->data_len)
            memcpy(p, e->data, e->data_len);
        c->data = p;
        p += e->data_len;
        if (e->metadata_len)
            memcpy(p, e->metadata, e->metadata_len);
        c->metadata = p;
        p += e->metadata_len;
    }
    aa->p.a.events = aa->ev;
    return 0;
}

static int append_async(stele_db *db, const char *stream, int64_t expected,
                        const stele_event_in *events, size_t n, int system, stele_append_cb cb,
                        void *ctx)
{
    err_clear();
    if (!cb)
        return err_set(STELE_EINVAL, "callback is NULL");
    async_append *aa = calloc(1, sizeof *aa);
    if (!aa)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = prepare(db, stream, expected, events, n, system, &aa->p);
    if (rc == 0)
        rc = async_copy(aa, stream, events, n);
    if (rc == 0) {
        aa->cb = cb;
        aa->ctx = ctx;
        /* a category with an inline projection: its worker thread runs the
         * handlers, then appends; async_done frees the copies after */
        struct proj_inline *pi = system ? NULL : proj_inline_for(db, stream, aa->p.a.stream_len);
        aa->via_inline = pi != NULL;
        rc = pi ? proj_inline_queue(db, pi, aa->p.a.stream, expected, aa->ev, n, async_done, aa)
                : db->be->ops->append_async(db->be, &aa->p.a, async_done, aa);
    }
    if (rc) {
        prepared_free(&aa->p);
        free(aa->ev);
        free(aa->mem);
        free(aa);
    }
    return rc;
}

int stele_append_async(stele_db *db, const char *stream, int64_t expected,
                       const stele_event_in *events, size_t n, stele_append_cb cb, void *ctx)
{
    return append_async(db, stream, expected, events, n, 0, cb, ctx);
}

int store_append_system_async(stele_db *db, const char *stream, int64_t expected,
                              const stele_event_in *events, size_t n, stele_append_cb cb,
                              void *ctx)
{
    return append_async(db, stream, expected, events, n, 1, cb, ctx);
}

static int check_read(stele_db *db, int direction, stele_page **out)
{
    if (!db || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "out");
    *out = NULL;
    if (direction != STELE_FORWARDS && direction != STELE_BACKWARDS)
        return err_set(STELE_EINVAL, "direction %d is neither STELE_FORWARDS nor STELE_BACKWARDS",
                       direction);
    return 0;
}

int stele_read_stream(stele_db *db, const char *stream, uint64_t from, int direction,
                      size_t limit, stele_page **out)
{
    err_clear();
    size_t slen;
    int rc = check_read(db, direction, out);
    if (rc == 0)
        rc = store_check_read_stream(stream, &slen);
    if (rc)
        return rc;
    int kind;
    const char *key;
    size_t klen;
    if (store_view_parse(stream, slen, &kind, &key, &klen))
        return store_read_view(db, stream, slen, from, direction == STELE_BACKWARDS, limit, out);
    return db->be->ops->read_stream(db->be, stream, slen, from, direction == STELE_BACKWARDS,
                                    limit, out);
}

int stele_read_all(stele_db *db, uint64_t from, int direction, size_t limit, stele_page **out)
{
    err_clear();
    int rc = check_read(db, direction, out);
    if (rc)
        return rc;
    return db->be->ops->read_all(db->be, from, direction == STELE_BACKWARDS, limit, out);
}

int stele_stream_head(stele_db *db, const char *stream, stele_stream_info *info)
{
    err_clear();
    size_t slen;
    if (!db || !info)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "info");
    int rc = store_check_read_stream(stream, &slen);
    if (rc)
        return rc;
    int kind;
    const char *key;
    size_t klen;
    if (store_view_parse(stream, slen, &kind, &key, &klen)) {
        /* A view's head: its newest visible event. */
        stele_page *pg;
        if ((rc = store_read_view(db, stream, slen, STELE_END, 1, 1, &pg)))
            return rc;
        memset(info, 0, sizeof *info);
        info->last_revision = info->last_position = STELE_NONE;
        if (stele_page_count(pg)) {
            stele_page_link(pg, 0, NULL, &info->last_revision);
            info->last_position = stele_page_event(pg, 0)->position;
        }
        stele_page_free(pg);
        return 0;
    }
    return db->be->ops->head(db->be, stream, slen, info);
}

static int remove_stream(stele_db *db, const char *stream, int64_t expected, int tombstone,
                         uint64_t *current)
{
    err_clear();
    size_t slen = 0;
    if (current)
        *current = STELE_NONE;
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    int rc = check_stream(stream, &slen);
    if (rc == 0)
        rc = check_expected(expected);
    if (rc)
        return rc;
    return db->be->ops->remove(db->be, stream, slen, expected, tombstone, current);
}

int stele_delete_stream(stele_db *db, const char *stream, int64_t expected, uint64_t *current)
{
    return remove_stream(db, stream, expected, 0, current);
}

int stele_tombstone_stream(stele_db *db, const char *stream, int64_t expected, uint64_t *current)
{
    return remove_stream(db, stream, expected, 1, current);
}

uint64_t stele_position_after(stele_db *db, uint64_t position)
{
    return db->be->ops->pos_after(db->be, position);
}

uint64_t stele_position_before(stele_db *db, uint64_t next)
{
    return db->be->ops->pos_before(db->be, next);
}

int stele_position_head(stele_db *db, uint64_t *next)
{
    err_clear();
    if (!db || !next)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "next");
    return db->be->ops->pos_head(db->be, next);
}

int stele_get_stats(stele_db *db, stele_stats *out)
{
    err_clear();
    if (!db || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "out");
    return db->be->ops->stats(db->be, out);
}

int stele_scavenge(stele_db *db, const stele_scavenge_options *opts, stele_scavenge_result *res)
{
    err_clear();
    if (res)
        memset(res, 0, sizeof *res);
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    if (!db->be->ops->scavenge)
        return 0;
    stele_scavenge_result tmp;
    return db->be->ops->scavenge(db->be, opts, res ? res : &tmp);
}

int stele_check(const char *uri, char *report, size_t report_len)
{
    err_clear();
    if (!uri || !*uri)
        return err_set(STELE_EINVAL, "dir is NULL or empty");
    const char *dir = backend_local_dir(uri);
    if (!dir)
        return err_set(STELE_EINVAL,
                       "%s: stele check verifies local stores (a directory); other backends "
                       "are checked by their database",
                       strncmp(uri, "file:", 5) == 0 ? uri : "store URI");
    return local_check(dir, report, report_len);
}
