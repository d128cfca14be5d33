/*
 * subscribe.c - catch-up subscriptions over Server-Sent Events:
 *
 *   GET /subscribe/all?from=POS|start|end&<filters>
 *   GET /subscribe/streams/{stream}?from=REV|start|end
 *
 * Each subscription is a stele_sub (src/sub): a cursor in the log read at
 * every pump, for old and new events alike, so history and live events
 * come from one source in one order (no gap, no duplicate at the switch),
 * and a slow client costs disk reads, never memory (sse.c pumps it only
 * while its output is below the high-water mark).
 *
 * The stream a client sees (docs/subscriptions.md):
 *
 *   id: 41                     an event: id = its position ($all) or
 *   data: {"id":...}           revision (stream); data = the event JSON
 *                              exactly as reads render it
 *
 *   event: caught-up           reached the end of the log; again after a
 *   id: 41                     fell-behind once it has caught up
 *   data: {"position":41}
 *
 *   event: checkpoint          filtered events were passed: everything up
 *   id: 5000                   to this position was sent or filtered out
 *   data: {"position":5000}
 *
 *   event: fell-behind         a live subscriber is far behind the head
 *   data: {"position":41,"head":90000}
 *
 *   : keep-alive               a comment, when silent for a while
 *
 * Every `id` means "everything up to here was delivered or filtered out",
 * so Last-Event-ID (or ?lastEventId=) with the last id seen resumes
 * exactly after it. Control events carry an id only when it moves the
 * resume point forward.
 *
 * Many live subscribers read the same new events. For those of $all
 * without a filter (the common case: projections, integrations) the newest
 * events are rendered once into a shared cache (sub_cache: the SSE text of
 * the events between cursors lo and hi, at most CACHE_EVENTS / CACHE_BYTES,
 * each with its position: positions are the store's cursors, not
 * necessarily gapless, so entries are found by position, never by
 * subtraction) and each of them
 * is sent the bytes straight from the cache (sse_shared: one sendmsg, no
 * copy unless its socket is full), its cursor moved with stele_sub_seek(); a
 * subscriber at the cache's end reads the store and extends the cache for
 * the others. Only subscribers near the head use it: a catch-up far behind
 * reads the store directly. Filtered and stream subscriptions always read
 * their own way (libstele's filters run inside stele_sub_next).
 *
 * A subscriber without $ops (to $all, or to a view it may not read as a
 * whole: access_filter_read) gets only the events of streams it may read;
 * the others are passed like filtered events (checkpoints move over them),
 * and it reads the store itself, never the shared cache.
 *
 * States of a subscription: HISTORY (reading towards the end of the log),
 * LIVE (caught up: woken by commits), BEHIND (it was live, then fell more
 * than cfg.sub_behind_events or cfg.sub_behind_ms behind the head; it
 * keeps reading from disk and becomes LIVE again, with a new caught-up,
 * when it reaches the end). The behind rule is checked once a second, so
 * a burst that the subscriber absorbs within the second is not reported.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "server_int.h"
#include "urlcode.h"

#define MAX_LIST 64        /* entries per filter list (libstele's limit) */
#define MAX_NAME 255       /* bytes per list entry */
#define MAX_REGEX 1024     /* bytes per regular expression */
#define CHECKPOINT_MS 1000 /* a pending checkpoint waits at most this long */

/* Bytes of events per pump, about (one event at least): with the hub's
 * high-water mark, what a subscriber that does not read holds. */
#define PUMP_BYTES (128u << 10)
/* A pump of the shared rendering (and the read that extends it) takes up
 * to twice that, and up to CACHE_PUMP_MUL times the hub's events per pump:
 * such a pump is one sendmsg whatever it carries, and a round of many live
 * subscribers spaced by sse.c for their cost carries more than PUMP_BYTES
 * under a heavy stream of appends (one more send each, otherwise). */
#define CACHE_PUMP_BYTES (2 * PUMP_BYTES)
#define CACHE_PUMP_MUL 4u

#define CACHE_EVENTS 8192u
#define CACHE_BYTES (8u << 20)

enum { SUB_HISTORY, SUB_LIVE, SUB_BEHIND };

/* The SSE text of every event of $all from cursor lo up to cursor hi: n
 * events, event i at position pos[i] (ascending; lo <= pos[0], and hi is
 * the cursor after pos[n - 1], or lo when n = 0), its text
 * text[off[i] .. off[i + 1]). */
typedef struct sub_cache {
    uint64_t lo, hi;
    size_t n;
    buf text;
    size_t *off;    /* n + 1 entries used */
    uint64_t *pos;  /* n entries used */
    size_t off_cap;
} sub_cache;

void subscribe_free_shared(server *s)
{
    sub_cache *k = s->sub_cache;
    if (!k)
        return;
    buf_free(&k->text);
    free(k->off);
    free(k->pos);
    free(k);
    s->sub_cache = NULL;
}

/* The cache, made on first use; NULL if memory is short (then no cache). */
static sub_cache *cache_of(server *s)
{
    if (!s->sub_cache && (s->sub_cache = calloc(1, sizeof *s->sub_cache))) {
        s->sub_cache->off = malloc(sizeof *s->sub_cache->off * (CACHE_EVENTS + 1));
        s->sub_cache->pos = malloc(sizeof *s->sub_cache->pos * (CACHE_EVENTS + 1));
        if (!s->sub_cache->off || !s->sub_cache->pos) {
            free(s->sub_cache->off);
            free(s->sub_cache->pos);
            free(s->sub_cache);
            s->sub_cache = NULL;
        } else {
            s->sub_cache->off_cap = CACHE_EVENTS + 1;
            s->sub_cache->off[0] = 0;
        }
    }
    return s->sub_cache;
}

/* Start the cache over at position `at`, empty. */
static void cache_reset(sub_cache *k, uint64_t at)
{
    k->lo = k->hi = at;
    k->n = 0;
    k->text.len = 0;
    k->off[0] = 0;
}

/* Drop the older half when full, so appending stays cheap. */
static void cache_make_room(sub_cache *k, size_t bytes)
{
    size_t n = k->n;
    if (n + 1 < CACHE_EVENTS && k->text.len + bytes <= CACHE_BYTES)
        return;
    size_t drop = n / 2 ? n / 2 : n;
    size_t cut = k->off[drop];
    memmove(k->text.p, k->text.p + cut, k->text.len - cut);
    k->text.len -= cut;
    for (size_t i = drop; i <= n; i++)
        k->off[i - drop] = k->off[i] - cut;
    for (size_t i = drop; i < n; i++)
        k->pos[i - drop] = k->pos[i];
    k->n -= drop;
    k->lo = k->n ? k->pos[0] : k->hi;
}

/* Append the SSE text of the event at position `pos`, the first event at
 * or after cursor k->hi. */
static void cache_add(stele_db *db, sub_cache *k, uint64_t pos, const void *p, size_t len)
{
    cache_make_room(k, len);
    uint64_t next = stele_position_after(db, pos);
    if (buf_append(&k->text, p, len)) {
        cache_reset(k, next);
        return;
    }
    k->pos[k->n++] = pos;
    k->off[k->n] = k->text.len;
    k->hi = next;
}

/* The first cache entry at or after cursor `at` (k->n if none). */
static size_t cache_find(const sub_cache *k, uint64_t at)
{
    size_t a = 0, b = k->n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (k->pos[m] < at)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

/* The cached SSE text of the event at position `pos` (1), or 0. */
static int cache_text(const sub_cache *k, uint64_t pos, const char **p, size_t *len)
{
    if (!k || !k->n || pos < k->pos[0] || pos > k->pos[k->n - 1])
        return 0;
    size_t i = cache_find(k, pos);
    if (i == k->n || k->pos[i] != pos)
        return 0;
    *p = (const char *)k->text.p + k->off[i];
    *len = k->off[i + 1] - k->off[i];
    return 1;
}

typedef struct subscription {
    stele_sub *sub;
    int all;             /* $all (ids are positions) or a stream (revisions) */
    char stream[1024];
    int state;
    int has_id;          /* an id was sent: `id` is the resume point */
    uint64_t id;
    uint64_t ckpt_base;  /* the resume point when the last id went out */
    int64_t ckpt_ms;     /* and when */
    int64_t behind_since_ms; /* live but not at the end since (0: at the end) */
    int filtered;        /* $all with a filter: never uses the cache */
    int acl_filter;      /* only streams the user may read (access_filter_read) */
    pager pg;            /* events per read, by their size */
} subscription;

static void sub_free(void *ctx)
{
    subscription *u = ctx;
    stele_sub_close(u->sub);
    free(u);
}

/* v in decimal into out (at least 21 bytes); faster than snprintf, which
 * showed in profiles at a million events a second. */
static void u64_text(uint64_t v, char *out)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

/* ------------------------------------------------------------ markers */

/* What the subscription has covered: its resume point, i.e. the id of the
 * last event delivered or passed. 0 (none) before the first. */
static int covered(stele_db *db, const subscription *u, uint64_t *out)
{
    uint64_t next = stele_sub_position(u->sub);
    if (next == 0)
        return 0;
    *out = u->all ? stele_position_before(db, next) : next - 1;
    return *out != STELE_NONE;
}

/* A control event; with an id when `with_id` and it moves the resume
 * point forward. */
static void marker(conn *c, subscription *u, const char *event, int with_id, const char *extra)
{
    uint64_t at;
    int has = covered(c->srv->db, u, &at);
    char id[24], data[160];
    int set_id = with_id && has && (!u->has_id || at > u->id);
    if (set_id)
        snprintf(id, sizeof id, "%llu", (unsigned long long)at);
    const char *key = u->all ? "position" : "revision";
    int n = has ? snprintf(data, sizeof data, "{\"%s\":%llu%s}", key, (unsigned long long)at,
                           extra ? extra : "")
                : snprintf(data, sizeof data, "{\"%s\":null%s}", key, extra ? extra : "");
    sse_event(c, event, set_id ? id : NULL, data, (size_t)n);
    if (set_id) {
        u->has_id = 1;
        u->id = at;
        u->ckpt_base = at;
        u->ckpt_ms = now_ms();
    }
}

/* A checkpoint when events were passed without being sent: after
 * cfg.sub_checkpoint_events of them, or CHECKPOINT_MS after the last id. */
static void maybe_checkpoint(conn *c, subscription *u, int64_t now)
{
    uint64_t at;
    if (!covered(c->srv->db, u, &at) || (u->has_id && at <= u->id))
        return;
    uint64_t base = u->has_id ? u->ckpt_base : 0;
    if (at - base >= c->srv->cfg.sub_checkpoint_events || now - u->ckpt_ms >= CHECKPOINT_MS) {
        marker(c, u, "checkpoint", 1, NULL);
        c->srv->m.sse_checkpoints++;
    }
}

/* How far the subscription is from the end of the log (or stream). */
static uint64_t lag(conn *c, subscription *u)
{
    uint64_t next = stele_sub_position(u->sub), end = next;
    if (u->all) {
        end = sse_head(c->srv);
    } else {
        stele_stream_info info;
        if (stele_stream_head(c->srv->db, u->stream, &info) == 0 &&
            info.last_revision != STELE_NONE)
            end = info.last_revision + 1;
    }
    return end > next ? end - next : 0;
}

/* ------------------------------------------------------------ the feed */

/* The subscription cannot go on (stream tombstoned, storage error): say
 * why in an event, then end the response. */
static int feed_error(conn *c, int rc)
{
    buf b = {0};
    int deleted = rc == STELE_EDELETED;
    json_w_error(&b, deleted ? "STREAM_DELETED" : rc == STELE_ECORRUPT ? "CORRUPT" : "INTERNAL",
                 stele_errmsg());
    sse_event(c, deleted ? "deleted" : "error", NULL, b.p, b.len);
    buf_free(&b);
    server_log(c->srv, deleted ? 2 : 0, "msg=\"subscription ended\" error=\"%s\"", stele_errmsg());
    return SSE_END;
}

/* Serve an unfiltered $all subscriber from the cache if it can: 1 and *n
 * events sent (*caught: it reached the head), or 0. */
static int from_cache(conn *c, subscription *u, size_t max_events, size_t *n, int *caught)
{
    sub_cache *k = c->srv->sub_cache;
    uint64_t at = stele_sub_position(u->sub);
    if (!k || at < k->lo || at >= k->hi)
        return 0;
    size_t i = cache_find(k, at);
    if (i == k->n)
        return 0;
    max_events *= CACHE_PUMP_MUL;
    size_t take = k->n - i < max_events ? k->n - i : max_events;
    size_t a = k->off[i], b = k->off[i + take];
    /* At most about CACHE_PUMP_BYTES (one event at least). */
    while (take > 1 && b - a > CACHE_PUMP_BYTES)
        b = k->off[i + (take = take / 2)];
    sse_shared(c, k->text.p + a, b - a);
    uint64_t last = k->pos[i + take - 1];
    int at_end = i + take == k->n;
    stele_sub_seek(u->sub, at_end ? k->hi : stele_position_after(c->srv->db, last));
    u->has_id = 1;
    u->id = last;
    c->srv->m.sse_events_shared += take;
    *n = take;
    *caught = at_end && k->hi >= sse_head(c->srv);
    return 1;
}

/* Read the next events from the store and send them; extend the cache
 * when this subscriber is at its end and near the head. */
static int from_store(conn *c, subscription *u, size_t max_events, size_t *n, int *caught)
{
    server *s = c->srv;
    uint64_t at = stele_sub_position(u->sub);
    sub_cache *k = NULL;
    if (u->all && !u->filtered && at + CACHE_EVENTS >= sse_head(s) && (k = cache_of(s))) {
        if (at > k->hi)
            cache_reset(k, at); /* the cache fell behind: move it here */
        else if (at != k->hi)
            k = NULL; /* behind the cache (at < lo): leave it to the others */
    }
    /* The subscriber that extends the shared rendering reads as much as the
     * others then take from it in one pump each. */
    size_t bytes = PUMP_BYTES;
    if (k) {
        bytes = CACHE_PUMP_BYTES;
        max_events *= CACHE_PUMP_MUL;
    }
    stele_page *pg;
    int rc = stele_sub_next(u->sub, pager_limit(&u->pg, bytes, max_events), 0, &pg);
    if (rc)
        return rc;
    pager_observe(&u->pg, pg);
    *n = stele_page_count(pg);
    /* Each event is rendered once, straight into the pump's output (event
     * JSON has no line breaks: route_event_json keeps it on one line), and
     * copied into the cache when it extends it. A subscriber that reads its
     * own way (a filter, a stream, access rules) takes an event the cache
     * already holds from there instead of rendering it again: the same
     * event JSON, behind its own id line. */
    sub_cache *shared = k ? NULL : s->sub_cache;
    buf *out = sse_stage(c);
    for (size_t i = 0; i < *n; i++) {
        const stele_event *e = stele_page_event(pg, i);
        if (u->acl_filter && !access_visible(c, e->stream))
            continue; /* passed by the checkpoints like a filtered event */
        char id[24];
        uint64_t v = u->all ? e->position : e->revision;
        int link = !u->all && stele_page_link(pg, i, NULL, &v); /* a view: its revisions */
        u64_text(v, id);
        const char *t;
        size_t tl;
        if (shared && !link && cache_text(shared, e->position, &t, &tl)) {
            /* t is "id: <position>\ndata: <json>\n\n": keep from "\ndata: " on. */
            const char *d = memchr(t, '\n', tl);
            if (buf_append(out, "id: ", 4) || buf_append(out, id, strlen(id)) ||
                buf_append(out, d, tl - (size_t)(d - t)))
                abort();
            s->m.sse_events_shared++;
            u->has_id = 1;
            u->id = v;
            continue;
        }
        size_t start = out->len;
        if (buf_append(out, "id: ", 4) || buf_append(out, id, strlen(id)) ||
            buf_append(out, "\ndata: ", 7))
            abort(); /* as sse.c: no memory, no consistent stream */
        route_event_json(out, e);
        route_link_json(out, pg, i);
        if (buf_append(out, "\n\n", 2))
            abort();
        /* The subscriber read from k->hi on: each event is the next one
         * after the cache's end. */
        if (k)
            cache_add(s->db, k, v, out->p + start, out->len - start);
        u->has_id = 1;
        u->id = v;
    }
    stele_page_free(pg);
    *caught = stele_sub_caught_up(u->sub);
    return 0;
}

static int sub_pump(conn *c, void *ctx, size_t max_events)
{
    subscription *u = ctx;
    server *s = c->srv;
    size_t n = 0;
    int caught = 0;
    if (!u->all || u->filtered || !from_cache(c, u, max_events, &n, &caught)) {
        int rc = from_store(c, u, max_events, &n, &caught);
        if (rc)
            return feed_error(c, rc);
    }
    int64_t now = sse_now_ms(c);
    if (n) {
        s->m.sse_events += n;
        u->ckpt_base = u->id;
        u->ckpt_ms = now;
    }
    if (caught) {
        u->behind_since_ms = 0;
        if (u->state != SUB_LIVE) {
            marker(c, u, "caught-up", 1, NULL);
            s->m.sse_caught_up++;
            u->state = SUB_LIVE;
        } else {
            maybe_checkpoint(c, u, now);
        }
        return SSE_WAIT;
    }
    maybe_checkpoint(c, u, now);
    if (u->state == SUB_LIVE && !u->behind_since_ms)
        u->behind_since_ms = now;
    return SSE_MORE;
}

static int sub_tick(conn *c, void *ctx, int64_t now)
{
    subscription *u = ctx;
    server *s = c->srv;
    maybe_checkpoint(c, u, now);
    if (u->state != SUB_LIVE)
        return SSE_MORE;
    uint64_t behind = lag(c, u);
    if (behind == 0) {
        u->behind_since_ms = 0;
        return SSE_MORE;
    }
    if (!u->behind_since_ms)
        u->behind_since_ms = now;
    if (behind > s->cfg.sub_behind_events || now - u->behind_since_ms >= s->cfg.sub_behind_ms) {
        uint64_t next = stele_sub_position(u->sub);
        char extra[64];
        uint64_t head = u->all ? stele_position_before(s->db, sse_head(s)) : next + behind - 1;
        snprintf(extra, sizeof extra, ",\"head\":%llu", (unsigned long long)head);
        marker(c, u, "fell-behind", 0, extra);
        s->m.sse_fell_behind++;
        u->state = SUB_BEHIND;
        server_log(s, 2, "msg=\"subscriber fell behind\" fd=%d behind=%llu", c->fd,
                   (unsigned long long)behind);
    }
    return SSE_MORE;
}

static const sse_source sub_all_source = {"subscribe/all", sub_pump, sub_tick, sub_free};
static const sse_source sub_stream_source = {"subscribe/stream", sub_pump, sub_tick, sub_free};

/* ------------------------------------------------------------ requests */

static void fail(conn *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(conn *c, int status, const char *code, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_error(c, status, code, msg);
    conn_request_done(c);
}

/* A decimal number below UINT64_MAX: 0, or -1. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s || strlen(s) > 20)
        return -1;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - 1 - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* The query of a subscription, decoded. Lists own their strings. */
typedef struct sub_query {
    const char *from;
    char from_buf[32];
    const char *last_id;
    char last_id_buf[48];
    char *lists[5][MAX_LIST];
    size_t nlist[5];
    char *stream_regex, *type_regex;
    int exclude_system;
    const char *first_filter; /* the first filter parameter seen, for errors */
} sub_query;

enum { L_STREAM_PREFIX, L_CATEGORY, L_TYPE, L_TYPE_PREFIX, L_TAG };
static const char *const list_names[5] = {"streamPrefix", "category", "type", "typePrefix", "tag"};

static void query_free(sub_query *sq)
{
    for (int l = 0; l < 5; l++)
        for (size_t i = 0; i < sq->nlist[l]; i++)
            free(sq->lists[l][i]);
    free(sq->stream_regex);
    free(sq->type_regex);
}

/* from and lastEventId: given once, short enough for dst (size cap);
 * *slot then points at dst. 0, or -1 after a 400. */
static int take_once(conn *c, const char *key, const char *val, const char **slot, char *dst,
                     size_t cap)
{
    if (*slot || strlen(val) >= cap) {
        fail(c, 400, "INVALID_ARGUMENT", *slot ? "%s given more than once" : "%s is too long",
             key);
        return -1;
    }
    memcpy(dst, val, strlen(val) + 1);
    *slot = dst;
    return 0;
}

/* typeRegex or streamRegex: once, 1..MAX_REGEX bytes. 0, or -1 after an
 * error answer. */
static int take_regex(conn *c, sub_query *sq, const char *key, const char *val)
{
    char **slot = key[0] == 't' ? &sq->type_regex : &sq->stream_regex;
    if (*slot) {
        fail(c, 400, "INVALID_ARGUMENT", "%s given more than once", key);
        return -1;
    }
    if (!val[0] || strlen(val) > MAX_REGEX) {
        if (val[0])
            fail(c, 400, "INVALID_ARGUMENT", "%s is longer than %d bytes", key, MAX_REGEX);
        else
            fail(c, 400, "INVALID_ARGUMENT", "%s is empty", key);
        return -1;
    }
    if (!(*slot = strdup(val))) {
        fail(c, 500, "INTERNAL", "out of memory");
        return -1;
    }
    if (!sq->first_filter)
        sq->first_filter = key[0] == 't' ? "typeRegex" : "streamRegex";
    return 0;
}

/* One value of a list filter (list_names; repeatable up to MAX_LIST):
 * 0, or -1 after an error answer (an unknown key included). */
static int take_list(conn *c, sub_query *sq, const char *key, const char *val)
{
    int l = 0;
    while (l < 5 && strcmp(key, list_names[l]))
        l++;
    if (l == 5) {
        fail(c, 400, "INVALID_ARGUMENT",
             "unknown query parameter '%s' (known: from, lastEventId, streamPrefix, "
             "category, type, typePrefix, typeRegex, streamRegex, tag, excludeSystem)",
             key);
        return -1;
    }
    size_t len = strlen(val);
    if (len == 0 || len > MAX_NAME) {
        fail(c, 400, "INVALID_ARGUMENT", "%s value %zu %s", key, sq->nlist[l],
             len ? "is longer than 255 bytes" : "is empty");
        return -1;
    }
    if (sq->nlist[l] == MAX_LIST) {
        fail(c, 400, "INVALID_ARGUMENT", "more than %d %s values", MAX_LIST, key);
        return -1;
    }
    if (!(sq->lists[l][sq->nlist[l]] = strdup(val))) {
        fail(c, 500, "INTERNAL", "out of memory");
        return -1;
    }
    sq->nlist[l]++;
    if (!sq->first_filter)
        sq->first_filter = list_names[l];
    return 0;
}

/* One decoded parameter into *sq: 0, or -1 after an error answer. */
static int take_param(conn *c, sub_query *sq, const char *key, const char *val)
{
    if (!strcmp(key, "from"))
        return take_once(c, key, val, &sq->from, sq->from_buf, sizeof sq->from_buf);
    if (!strcmp(key, "lastEventId"))
        return take_once(c, key, val, &sq->last_id, sq->last_id_buf, sizeof sq->last_id_buf);
    if (!strcmp(key, "excludeSystem")) {
        if (strcmp(val, "true") && strcmp(val, "false")) {
            fail(c, 400, "INVALID_ARGUMENT", "excludeSystem must be true or false (got '%.40s')",
                 val);
            return -1;
        }
        sq->exclude_system = !strcmp(val, "true");
        if (!sq->first_filter && sq->exclude_system)
            sq->first_filter = "excludeSystem";
        return 0;
    }
    if (!strcmp(key, "typeRegex") || !strcmp(key, "streamRegex"))
        return take_regex(c, sq, key, val);
    return take_list(c, sq, key, val);
}

/* Parse the query into *sq; on a bad parameter respond 400 and return -1. */
static int parse_query(conn *c, const char *q, size_t qlen, sub_query *sq)
{
    size_t off = 0;
    char key[64], val[MAX_REGEX + 2];
    for (;;) {
        int r = query_next(q, qlen, &off, key, sizeof key, val, sizeof val);
        if (r == 0)
            return 0;
        if (r < 0 && !key[0]) {
            fail(c, 400, "INVALID_ARGUMENT", "malformed query string (a bad %%-escape or a "
                                             "parameter name over %zu bytes)", sizeof key - 1);
            return -1;
        }
        int is_regex = !strcmp(key, "typeRegex") || !strcmp(key, "streamRegex");
        if (r == STELE_ETOOBIG) {
            if (is_regex)
                fail(c, 400, "INVALID_ARGUMENT", "%s is longer than %d bytes", key, MAX_REGEX);
            else
                fail(c, 400, "INVALID_ARGUMENT", "query parameter '%s' is too long", key);
            return -1;
        }
        if (r < 0) {
            fail(c, 400, "INVALID_ARGUMENT",
                 "query parameter '%s' has a bad %%-escape (or %%00)", key);
            return -1;
        }
        if (take_param(c, sq, key, val))
            return -1;
    }
}

/* Where to start: Last-Event-ID (header, else ?lastEventId) resumes just
 * after that id; otherwise `from` (default start). -1 after a 400. */
static int start_at(conn *c, const sub_query *sq, int all, uint64_t *from)
{
    const char *what = all ? "position" : "revision";
    const char *last = NULL;
    char hdr[48];
    if (c->req.has_last_event_id) {
        /* The header buffer holds 39 bytes: a longer value was cut. */
        const char *p = c->req.last_event_id;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (strlen(c->req.last_event_id) >= sizeof c->req.last_event_id - 1) {
            fail(c, 400, "INVALID_ARGUMENT", "Last-Event-ID is too long (a %s)", what);
            return -1;
        }
        snprintf(hdr, sizeof hdr, "%.*s", (int)n, p);
        if (n)
            last = hdr;
    }
    if (!last && sq->last_id && sq->last_id[0])
        last = sq->last_id;
    if (last) {
        uint64_t v;
        if (parse_u64(last, &v)) {
            fail(c, 400, "INVALID_ARGUMENT",
                 "Last-Event-ID must be a %s (the id of the last event received), got '%.40s'",
                 what, last);
            return -1;
        }
        *from = all ? stele_position_after(c->srv->db, v) : v + 1;
        return 0;
    }
    const char *f = sq->from ? sq->from : "start";
    if (!strcmp(f, "start")) {
        *from = 0;
    } else if (!strcmp(f, "end")) {
        *from = STELE_END;
    } else if (parse_u64(f, from)) {
        fail(c, 400, "INVALID_ARGUMENT", "from must be a %s, 'start' or 'end' (got '%.40s')",
             what, f);
        return -1;
    }
    return 0;
}

static void subscribe(conn *c, const char *stream, const char *q, size_t qlen)
{
    server *s = c->srv;
    if (s->stopping) {
        fail(c, 503, "UNAVAILABLE", "shutting down");
        return;
    }
    sub_query sq;
    memset(&sq, 0, sizeof sq);
    if (parse_query(c, q, qlen, &sq)) {
        query_free(&sq);
        return;
    }
    if (stream && sq.first_filter) {
        query_free(&sq);
        fail(c, 400, "INVALID_ARGUMENT",
             "filters (%s) apply to /subscribe/all only; a stream subscription has none",
             sq.first_filter);
        return;
    }
    uint64_t from;
    if (start_at(c, &sq, stream == NULL, &from)) {
        query_free(&sq);
        return;
    }
    char full[200];
    if (limits_subscriptions_full(s, full, sizeof full)) {
        query_free(&sq);
        fail(c, 503, "TOO_MANY_SUBSCRIPTIONS", "%s", full);
        return;
    }
    subscription *u = calloc(1, sizeof *u);
    if (!u) {
        query_free(&sq);
        fail(c, 500, "INTERNAL", "out of memory");
        return;
    }
    int rc;
    if (stream) {
        stele_stream_info info;
        rc = stele_stream_head(s->db, stream, &info);
        if (rc == 0 && info.tombstoned)
            rc = STELE_EDELETED;
        else if (rc == STELE_ENOTFOUND)
            rc = 0; /* not written yet: wait for it */
        if (rc == 0)
            rc = stele_subscribe_stream(s->db, stream, from, &u->sub);
        u->all = 0;
        u->acl_filter = access_filter_read(s, &c->who, stream);
        snprintf(u->stream, sizeof u->stream, "%s", stream);
    } else {
        stele_filter f;
        memset(&f, 0, sizeof f);
        f.stream_prefixes = (const char *const *)sq.lists[L_STREAM_PREFIX];
        f.n_stream_prefixes = sq.nlist[L_STREAM_PREFIX];
        f.categories = (const char *const *)sq.lists[L_CATEGORY];
        f.n_categories = sq.nlist[L_CATEGORY];
        f.types = (const char *const *)sq.lists[L_TYPE];
        f.n_types = sq.nlist[L_TYPE];
        f.type_prefixes = (const char *const *)sq.lists[L_TYPE_PREFIX];
        f.n_type_prefixes = sq.nlist[L_TYPE_PREFIX];
        f.tags = (const char *const *)sq.lists[L_TAG];
        f.n_tags = sq.nlist[L_TAG];
        f.stream_regex = sq.stream_regex;
        f.type_regex = sq.type_regex;
        f.exclude_system = sq.exclude_system;
        rc = stele_subscribe_all(s->db, from, &f, &u->sub);
        u->all = 1;
        u->acl_filter = access_filter_read(s, &c->who, NULL);
        u->filtered = sq.first_filter != NULL || u->acl_filter; /* no shared cache */
    }
    query_free(&sq);
    if (rc) {
        if (rc == STELE_EDELETED) {
            char msg[1100];
            snprintf(msg, sizeof msg, "stream '%s' is tombstoned", stream);
            http_stele_error(c, rc, msg, NULL);
        } else
            http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
        sub_free(u);
        return;
    }
    u->state = SUB_HISTORY;
    u->ckpt_ms = now_ms();
    server_log(s, 2, "msg=subscribe stream=\"%s\" from=%llu", stream ? stream : "$all",
               (unsigned long long)from);
    sse_begin(c, stream ? &sub_stream_source : &sub_all_source, u);
}

int route_subscribe(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    static const char all[] = "/subscribe/all", streams[] = "/subscribe/streams/";
    int is_all = plen == sizeof all - 1 && !memcmp(path, all, plen);
    int is_stream = plen > sizeof streams - 1 && !memcmp(path, streams, sizeof streams - 1);
    if (!is_all && !is_stream)
        return 0;
    if (c->req.method != HTTP_GET) {
        fail(c, 405, "METHOD_NOT_ALLOWED", "method %s is not allowed on %.*s (use GET)",
             http_method_str(c->req.method), (int)(plen > 200 ? 200 : plen), path);
        return 1;
    }
    if (is_all) {
        subscribe(c, NULL, q, qlen);
        return 1;
    }
    const char *seg = path + sizeof streams - 1;
    size_t slen = plen - (sizeof streams - 1);
    if (memchr(seg, '/', slen))
        return 0; /* no such route: a 404 */
    char name[1024];
    size_t nlen;
    if (url_decode(seg, slen, name, sizeof name, &nlen) != 0 || memchr(name, 0, nlen)) {
        fail(c, 400, "INVALID_ARGUMENT", "malformed stream name in the path");
        return 1;
    }
    subscribe(c, name, q, qlen);
    return 1;
}
