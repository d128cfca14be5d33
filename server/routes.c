/*
 * routes.c - the REST API (docs/http-api.md): routing a complete request to
 * its handler, and the handlers for streams, $all, health, info and
 * metrics. Handlers validate the URL and query here and leave everything
 * about events to libstele, whose precise messages become the error bodies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "server_int.h"
#include "urlcode.h"

#define DEFAULT_LIMIT 100
#define MAX_LIMIT 10000
#define NDJSON_PAGE 1000
/* Reads size their pages by bytes (limits.c: pager), from the largest
 * event the connection's last read saw (a few events first on a new
 * connection): a JSON page of up to about PART_BYTES is answered whole
 * (with a Content-Length), a longer one goes out in parts of about
 * PART_BYTES (chunked), produced as the client takes them. */
#define PART_BYTES (1u << 20)

/* ------------------------------------------------------------ helpers */

static void respond_json(conn *c, int status, buf *b)
{
    buf_append(b, "\n", 1);
    http_respond(c, status, "application/json", b->p, b->len, NULL);
}

static void finish(conn *c, int is_append)
{
    metrics_observe(&c->srv->m, is_append, (double)(time_mono_ns() - c->t_start_ns) / 1e9);
    conn_request_done(c);
}

static void fail(conn *c, int status, const char *code, const char *msg)
{
    http_error(c, status, code, msg);
    conn_request_done(c);
}

/* Parse an expected revision: any, no_stream, stream_exists or a number. */
static int parse_expected(const char *s, int64_t *out)
{
    if (!strcmp(s, "any"))
        *out = STELE_ANY;
    else if (!strcmp(s, "no_stream"))
        *out = STELE_NO_STREAM;
    else if (!strcmp(s, "stream_exists"))
        *out = STELE_STREAM_EXISTS;
    else {
        char *end;
        if (!*s || *s < '0' || *s > '9')
            return -1;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end || v > INT64_MAX)
            return -1;
        *out = (int64_t)v;
    }
    return 0;
}

/* A position/revision query value: a number, "start" or "end". */
static int parse_from(const char *s, int backwards, uint64_t *out)
{
    if (!*s) {
        *out = backwards ? STELE_END : 0;
        return 0;
    }
    if (!strcmp(s, "start")) {
        *out = 0;
        return 0;
    }
    if (!strcmp(s, "end")) {
        *out = STELE_END;
        return 0;
    }
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v == UINT64_MAX)
        return -1;
    *out = v;
    return 0;
}

int route_parse_read_args(conn *c, const char *q, size_t qlen, read_args *ra)
{
    char v[64];
    int r;
    memset(ra, 0, sizeof *ra);
    if ((r = query_get(q, qlen, "direction", v, sizeof v)) < 0)
        goto bad;
    if (r > 0) {
        if (!strcmp(v, "backwards"))
            ra->backwards = 1;
        else if (strcmp(v, "forwards")) {
            fail(c, 400, "INVALID_ARGUMENT", "direction must be 'forwards' or 'backwards'");
            return -1;
        }
    }
    if ((r = query_get(q, qlen, "from", v, sizeof v)) < 0)
        goto bad;
    if (parse_from(r > 0 ? v : "", ra->backwards, &ra->from)) {
        fail(c, 400, "INVALID_ARGUMENT", "from must be a non-negative number, 'start' or 'end'");
        return -1;
    }
    if ((r = query_get(q, qlen, "limit", v, sizeof v)) < 0)
        goto bad;
    ra->limit = DEFAULT_LIMIT;
    if (r > 0) {
        char *end;
        unsigned long long l = strtoull(v, &end, 10);
        if (!*v || *end || v[0] < '0' || v[0] > '9' || l == 0 ||
            (!c->req.accept_ndjson && l > MAX_LIMIT)) {
            char msg[128];
            snprintf(msg, sizeof msg, "limit must be a number from 1 to %d", MAX_LIMIT);
            fail(c, 400, "INVALID_ARGUMENT", msg);
            return -1;
        }
        ra->limit = l;
        ra->limit_given = 1;
    } else if (c->req.accept_ndjson) {
        ra->limit = UINT64_MAX; /* NDJSON streams the whole read by default */
    }
    return 0;
bad:
    fail(c, 400, "INVALID_ARGUMENT", "malformed query string");
    return -1;
}

/* ------------------------------------------------------------ append */

/*
 * What the answer to an append lists besides the result: every event's id
 * (the store's result gives the ids it made) in the form the client wrote
 * it (ULID or UUID). The request's side is an append_ctx (the connection
 * and the forms), the answer's an append_ids in the completion's `extra`.
 */

typedef struct append_ctx {
    conn *c;
    early_ctx early; /* the writer may answer (http_early.c) */
    size_t n;
    uint8_t ulid[]; /* 1: event i's id was given as a ULID */
} append_ctx;

typedef struct append_ids {
    size_t n;
    uint8_t *ulid;
    uint8_t (*ids)[16];
} append_ids;

static void append_cb(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    append_ctx *x = ctx;
    conn *c = x->c;
    server *s = c->srv;
    completion *cp = calloc(1, sizeof *cp);
    if (!cp)
        abort(); /* cannot report the outcome: no way to keep order */
    cp->c = c;
    cp->rc = rc;
    cp->res = *res;
    cp->res.ids = NULL;
    /* A plain connection's successful append is answered from here, and
     * its completion only does the loop's bookkeeping (http_early.c). */
    int early = early_send(&x->early, cp, (const uint8_t(*)[16])res->ids, x->ulid,
                           res->ids ? x->n : 0);
    if (!early && rc == 0 && res->ids) {
        append_ids *ai = malloc(sizeof *ai + x->n * 17);
        if (ai) { /* without memory the answer just lacks the ids */
            ai->n = x->n;
            ai->ids = (uint8_t(*)[16])(void *)(ai + 1);
            ai->ulid = (uint8_t *)(ai->ids + x->n);
            memcpy(ai->ids, res->ids, x->n * 16);
            memcpy(ai->ulid, x->ulid, x->n);
            cp->extra = ai;
            cp->extra_free = free;
        }
    }
    int quiet = early && early_quiet(&x->early, cp);
    early_ctx_free(&x->early);
    free(x);
    snprintf(cp->msg, sizeof cp->msg, "%s", msg);
    /* One wake-up per batch (completion_post); none at all for an answer
     * the client already has, unless the loop waits for it (http_early.c). */
    if (quiet)
        completion_post_quiet(s, cp);
    else
        completion_post(s, cp);
}

/*
 * An append that carries the stream's new state (docs/streams.md): one
 * multi-stream append of this one stream, so the events and the state (a
 * snapshot at the new last revision) are one commit, and a failed check
 * writes neither. Queued like plain appends (stele_append_multi_async); the
 * answer is a plain append's, through route_append_done.
 */
typedef struct state_ctx {
    conn *c;
    int64_t expected;
    char stream[256];
} state_ctx;

/* On the store's writer thread: hand the outcome to the loop. */
static void state_cb(void *ctx, int rc, const stele_append_result *per_stream, size_t n,
                     const stele_multi_result *res, const char *msg)
{
    state_ctx *x = ctx;
    completion *cp = calloc(1, sizeof *cp);
    if (!cp)
        abort(); /* cannot report the outcome: no way to keep order */
    cp->c = x->c;
    cp->rc = rc;
    if (rc == 0 && n == 1) {
        cp->res = per_stream[0];
        cp->res.idempotent = res->idempotent;
    } else {
        cp->res.current_revision = res->current_revision;
    }
    if (rc == STELE_EWRONGREV) {
        /* The words of a plain append (the engine names "stream 0"). */
        char eb[32];
        int64_t e = x->expected;
        snprintf(eb, sizeof eb, "%lld", (long long)e);
        const char *et = e == STELE_ANY             ? "any"
                         : e == STELE_NO_STREAM     ? "no_stream"
                         : e == STELE_STREAM_EXISTS ? "stream_exists"
                                                    : eb;
        if (res->current_revision == STELE_NONE)
            snprintf(cp->msg, sizeof cp->msg, "stream '%s': expected revision %s, but the stream "
                     "has no events; nothing was written", x->stream, et);
        else
            snprintf(cp->msg, sizeof cp->msg, "stream '%s': expected revision %s, but its "
                     "revision is %llu; nothing was written (neither events nor state)",
                     x->stream, et, (unsigned long long)res->current_revision);
    } else {
        snprintf(cp->msg, sizeof cp->msg, "%s", msg);
    }
    completion_post(x->c->srv, cp);
    free(x);
}

static void append_with_state(conn *c, const char *stream, int64_t expected,
                              const json_append *ja)
{
    stele_snapshot_in st = {0, ja->state_schema, ja->state_flags, ja->state, ja->state_len};
    stele_append_stream as = {stream, expected, &st};
    stele_append_record *recs = malloc(ja->n * sizeof *recs);
    state_ctx *x = calloc(1, sizeof *x);
    if (!recs || !x) {
        free(recs);
        free(x);
        fail(c, 500, "INTERNAL", "out of memory");
        return;
    }
    for (size_t i = 0; i < ja->n; i++) {
        recs[i].stream = 0;
        recs[i].event = ja->events[i];
    }
    x->c = c;
    x->expected = expected;
    snprintf(x->stream, sizeof x->stream, "%s", stream);
    c->async_pending = 1;
    c->state = CS_BUSY;
    int rc = stele_append_multi_async(c->srv->db, &as, 1, recs, ja->n, NULL, state_cb, x);
    free(recs); /* the store copied the request */
    if (rc) {
        free(x);
        c->async_pending = 0;
        c->state = CS_READING;
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
    }
}

static void handle_append(conn *c, const char *stream)
{
    /* The body is JSON: guard.c refused any other Content-Type (415); one
     * without a Content-Type is read as JSON. */
    request *r = &c->req;
    json_append ja;
    char err[512];
    int rc = json_parse_append((const char *)r->body.p, r->body.len, &ja, err, sizeof err);
    if (rc) {
        if (rc == STELE_EINVAL && ja.bad_json)
            fail(c, 400, "INVALID_JSON", err);
        else {
            http_stele_error(c, rc, err, NULL);
            conn_request_done(c);
        }
        return;
    }
    int64_t expected = STELE_ANY;
    if (r->has_expected) {
        if (parse_expected(r->expected, &expected)) {
            json_append_free(&ja);
            fail(c, 400, "INVALID_ARGUMENT",
                 "Stele-Expected-Revision must be any, no_stream, stream_exists or a revision");
            return;
        }
        if (ja.has_expected && ja.expected != expected) {
            json_append_free(&ja);
            fail(c, 400, "INVALID_ARGUMENT",
                 "the Stele-Expected-Revision header and the body's expectedRevision disagree");
            return;
        }
    } else if (ja.has_expected) {
        expected = ja.expected;
    }
    c->srv->m.append_bytes += r->body.len;
    c->srv->m.append_events += ja.n;
    if (ja.has_state) {
        append_with_state(c, stream, expected, &ja);
        json_append_free(&ja);
        return;
    }
    append_ctx *x = malloc(sizeof *x + ja.n);
    if (!x) {
        json_append_free(&ja);
        fail(c, 500, "INTERNAL", "out of memory");
        return;
    }
    x->c = c;
    x->n = ja.n;
    for (size_t i = 0; i < ja.n; i++)
        x->ulid[i] = (ja.events[i].flags & STELE_EVENT_ID_ULID) != 0;
    early_prepare(c, &x->early);
    c->async_pending = 1;
    c->state = CS_BUSY;
    rc = stele_append_async(c->srv->db, stream, expected, ja.events, ja.n, append_cb, x);
    json_append_free(&ja);
    if (rc) {
        early_ctx_free(&x->early);
        c->early_inflight = 0;
        free(x);
        c->async_pending = 0;
        c->state = CS_READING;
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
    }
}

void route_append_done(conn *c, const completion *cp)
{
    c->early_inflight = 0;
    c->srv->m.appends++;
    if (cp->rc) {
        http_stele_error(c, cp->rc, cp->msg, &cp->res);
    } else {
        /* The result, then every event: its id (when known: an append with
         * its new state reports the revisions and positions only),
         * revision and position. An append's events are consecutive in the
         * stream and in $all. */
        const append_ids *ai = cp->extra;
        buf b = {0};
        int bad = http_append_body(&b, &cp->res, ai ? (const uint8_t(*)[16])ai->ids : NULL,
                                   ai ? ai->ulid : NULL, ai ? ai->n : 0);
        if (bad)
            http_error(c, 500, "INTERNAL", "out of memory");
        else
            http_respond(c, cp->res.idempotent ? 200 : 201, "application/json", b.p, b.len,
                         NULL);
        buf_free(&b);
    }
    c->state = CS_READING;
    server_log(c->srv, 2, "msg=request method=POST path=/streams rc=%d", cp->rc);
    finish(c, 1);
}

/* ------------------------------------------------------------ reads */

/* One event as JSON on one line. Stored JSON data may contain line breaks
 * as whitespace between tokens (they cannot occur unescaped inside JSON
 * strings, and every other string is escaped by json_w_str), so turning
 * them into spaces keeps the same JSON value on one line. */
void route_event_json(buf *b, const stele_event *e)
{
    size_t start = b->len;
    json_w_event(b, e);
    /* Only stored JSON data/metadata can hold raw line breaks: look there
     * (memchr is fast) before touching the line. */
    int breaks = 0;
    if (e->flags & STELE_EVENT_JSON)
        breaks |= memchr(e->data, '\n', e->data_len) || memchr(e->data, '\r', e->data_len);
    if (e->flags & STELE_META_JSON)
        breaks |= memchr(e->metadata, '\n', e->metadata_len) ||
                  memchr(e->metadata, '\r', e->metadata_len);
    for (size_t i = start; breaks && i < b->len; i++)
        if (b->p[i] == '\n' || b->p[i] == '\r')
            b->p[i] = ' ';
}

void route_link_json(buf *b, const stele_page *pg, size_t i)
{
    const char *view;
    uint64_t rev;
    if (!stele_page_link(pg, i, &view, &rev) || !b->len || b->p[b->len - 1] != '}')
        return;
    b->len--;
    buf_append(b, ",\"link\":{\"stream\":", 18);
    json_w_str(b, view, strlen(view));
    buf_append(b, ",\"revision\":", 12);
    json_w_u64(b, rev);
    buf_append(b, "}}", 2);
}

void route_page_event_json(buf *b, const stele_page *pg, size_t i)
{
    route_event_json(b, stele_page_event(pg, i));
    route_link_json(b, pg, i);
}

/* Event i of a page as an NDJSON line. */
static void ndjson_event(buf *b, const stele_page *pg, size_t i)
{
    route_page_event_json(b, pg, i);
    buf_append(b, "\n", 1);
}

/* A read of $all, a query or a view by a user without $ops
 * (access_filter_read): only the events of streams it may read are sent
 * (access_visible), the rest are skipped; `remaining` and the next link
 * count what was scanned. */
static int hidden(conn *c, const read_job *j, const stele_event *e)
{
    return j->filter && !access_visible(c, e->stream);
}

/* Queue a page as one chunk of NDJSON or of a JSON page's events, advance
 * the job and free the page. A JSON page's last part also closes the array
 * and adds the next link. */
static void page_chunk(conn *c, stele_page *pg)
{
    read_job *j = &c->job;
    buf b = {0};
    size_t n = stele_page_count(pg), sent = 0;
    for (size_t i = 0; i < n; i++) {
        if (hidden(c, j, stele_page_event(pg, i)))
            continue;
        sent++;
        if (j->json) {
            if (j->json_sent++)
                buf_append(&b, ",", 1);
            json_w_event(&b, stele_page_event(pg, i));
            route_link_json(&b, pg, i);
        } else {
            ndjson_event(&b, pg, i);
        }
    }
    c->srv->m.read_events += sent;
    j->remaining -= n;
    int has_next = stele_page_next(pg, &j->next);
    j->done = !has_next || j->remaining == 0 || n == 0;
    if (j->json && j->done) {
        buf_append(&b, "]", 1);
        if (has_next) {
            char tail[128];
            buf_append(&b, ",\"next\":\"", 9);
            buf_append(&b, j->link, strlen(j->link));
            int k = snprintf(tail, sizeof tail, "from=%llu&direction=%s&limit=%llu\"",
                             (unsigned long long)j->next, j->backwards ? "backwards" : "forwards",
                             (unsigned long long)j->json_limit);
            buf_append(&b, tail, (size_t)k);
        }
        buf_append(&b, "}\n", 2);
    }
    http_chunk(c, b.p, b.len);
    buf_free(&b);
    stele_page_free(pg);
}

static int read_page(conn *c, const read_job *j, size_t limit, stele_page **pg)
{
    if (j->query)
        return route_query_page(c, j, limit, pg);
    int dir = j->backwards ? STELE_BACKWARDS : STELE_FORWARDS;
    return j->all ? stele_read_all(c->srv->db, j->next, dir, limit, pg)
                  : stele_read_stream(c->srv->db, j->stream, j->next, dir, limit, pg);
}

void route_serve_read(conn *c, const read_args *ra, const char *link)
{
    read_job *j = &c->job;
    j->next = ra->from;
    j->backwards = ra->backwards;
    j->remaining = ra->limit;
    j->json = 0;
    c->srv->m.reads++;

    if (c->req.accept_ndjson) {
        /* Check the stream exists before committing to a 200. */
        stele_page *pg;
        size_t first = j->remaining < NDJSON_PAGE ? (size_t)j->remaining : NDJSON_PAGE;
        int rc = read_page(c, j, pager_limit(&c->rpg, PART_BYTES, first), &pg);
        if (rc) {
            http_stele_error(c, rc, stele_errmsg(), NULL);
            conn_request_done(c);
            return;
        }
        pager_observe(&c->rpg, pg);
        http_chunked_start(c, 200, "application/x-ndjson");
        page_chunk(c, pg);
        c->state = CS_STREAMING;
        conn_flush(c); /* continues in route_stream_more as output drains */
        return;
    }

    /* As many events as fit in PART_BYTES by what the connection has seen
     * (a few on its first read): then either the whole read is there, or
     * the rest fits as well (read at once: the page is answered whole,
     * with a Content-Length), or it goes out in parts (chunked), each read
     * when the one before it has been sent, so a large page (limit=10000,
     * or big events) is never whole in memory, however slowly the client
     * reads. */
    stele_page *pg, *pg2 = NULL;
    size_t first = j->remaining < MAX_LIMIT ? (size_t)j->remaining : MAX_LIMIT;
    int rc = read_page(c, j, pager_limit(&c->rpg, PART_BYTES, first), &pg);
    if (rc) {
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
        return;
    }
    pager_observe(&c->rpg, pg);
    uint64_t after;
    size_t n1 = stele_page_count(pg);
    if (n1 < j->remaining && n1 > 0 && stele_page_next(pg, &after)) {
        uint64_t rest = j->remaining - n1;
        if (rest > pager_limit(&c->rpg, PART_BYTES, MAX_LIMIT)) {
            j->json = 1;
            j->json_sent = 0;
            j->json_limit = ra->limit;
            snprintf(j->link, sizeof j->link, "%s", link);
            http_chunked_start(c, 200, "application/json");
            http_chunk(c, "{\"events\":[", 11);
            page_chunk(c, pg);
            c->state = CS_STREAMING;
            conn_flush(c); /* continues in route_stream_more as output drains */
            return;
        }
        j->next = after;
        rc = read_page(c, j, (size_t)rest, &pg2);
        if (rc) {
            stele_page_free(pg);
            http_stele_error(c, rc, stele_errmsg(), NULL);
            conn_request_done(c);
            return;
        }
    }
    buf b = {0};
    buf_append(&b, "{\"events\":[", 11);
    size_t k = 0;
    for (stele_page *p = pg; p; p = p == pg ? pg2 : NULL)
        for (size_t i = 0; i < stele_page_count(p); i++) {
            if (hidden(c, j, stele_page_event(p, i)))
                continue;
            if (k++)
                buf_append(&b, ",", 1);
            json_w_event(&b, stele_page_event(p, i));
            route_link_json(&b, p, i);
        }
    buf_append(&b, "]", 1);
    uint64_t next;
    if (stele_page_next(pg2 ? pg2 : pg, &next)) {
        char tail[128];
        buf_append(&b, ",\"next\":\"", 9);
        buf_append(&b, link, strlen(link));
        int n = snprintf(tail, sizeof tail, "from=%llu&direction=%s&limit=%llu\"",
                         (unsigned long long)next, ra->backwards ? "backwards" : "forwards",
                         (unsigned long long)ra->limit);
        buf_append(&b, tail, (size_t)n);
    }
    buf_append(&b, "}", 1);
    c->srv->m.read_events += k;
    stele_page_free(pg2);
    stele_page_free(pg);
    respond_json(c, 200, &b);
    buf_free(&b);
    finish(c, 0);
}

static void handle_read(conn *c, const char *stream, const char *q, size_t qlen)
{
    /* ?after=/?before= on $all and ?to=/?asOf= on a stream: routes_query.c */
    if (route_query_read(c, stream, q, qlen))
        return;
    read_args ra;
    if (route_parse_read_args(c, q, qlen, &ra))
        return;
    read_job *j = &c->job;
    memset(j, 0, sizeof *j);
    j->all = stream == NULL;
    j->filter = access_filter_read(c->srv, &c->who, stream);
    char link[900];
    if (stream) {
        snprintf(j->stream, sizeof j->stream, "%s", stream);
        char enc[800];
        url_encode(stream, strlen(stream), enc, sizeof enc);
        snprintf(link, sizeof link, "/streams/%s?", enc);
    } else {
        snprintf(link, sizeof link, "/all?");
    }
    route_serve_read(c, &ra, link);
}

void route_stream_more(conn *c)
{
    read_job *j = &c->job;
    if (j->done) {
        http_chunked_end(c);
        c->state = CS_READING;
        finish(c, 0);
        return;
    }
    stele_page *pg;
    size_t n = j->remaining < NDJSON_PAGE ? (size_t)j->remaining : NDJSON_PAGE;
    int rc = read_page(c, j, pager_limit(&c->rpg, PART_BYTES, n), &pg);
    if (rc) {
        /* Headers are gone: end the stream abruptly so the client sees a
         * truncated (invalid) chunked body rather than a clean end. */
        server_log(c->srv, 0, "msg=\"streamed read failed\" error=\"%s\"", stele_errmsg());
        c->keep_alive = 0;
        c->state = CS_CLOSING;
        conn_close(c);
        return;
    }
    pager_observe(&c->rpg, pg);
    page_chunk(c, pg);
}

/* ------------------------------------------------------------ others */

static void handle_head(conn *c, const char *stream)
{
    stele_stream_info info;
    int rc = stele_stream_head(c->srv->db, stream, &info);
    if (rc) {
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
        return;
    }
    buf b = {0};
    buf_append(&b, "{\"stream\":", 10);
    json_w_str(&b, stream, strlen(stream));
    char tail[256];
    int n = snprintf(tail, sizeof tail, ",\"lastRevision\":");
    buf_append(&b, tail, (size_t)n);
#define NUM_OR_NULL(v)                                                                 \
    do {                                                                               \
        if ((v) == STELE_NONE)                                                         \
            buf_append(&b, "null", 4);                                                 \
        else {                                                                         \
            n = snprintf(tail, sizeof tail, "%llu", (unsigned long long)(v));          \
            buf_append(&b, tail, (size_t)n);                                           \
        }                                                                              \
    } while (0)
    NUM_OR_NULL(info.last_revision);
    buf_append(&b, ",\"lastPosition\":", 16);
    NUM_OR_NULL(info.last_position);
#undef NUM_OR_NULL
    n = snprintf(tail, sizeof tail, ",\"truncateBefore\":%llu,\"deleted\":%s,\"tombstoned\":%s}",
                 (unsigned long long)info.truncate_before, info.deleted ? "true" : "false",
                 info.tombstoned ? "true" : "false");
    buf_append(&b, tail, (size_t)n);
    respond_json(c, 200, &b);
    buf_free(&b);
    finish(c, 0);
}

static void handle_delete(conn *c, const char *stream, const char *q, size_t qlen)
{
    char v[16];
    int tomb = 0;
    int r = query_get(q, qlen, "tombstone", v, sizeof v);
    if (r < 0 || (r > 0 && strcmp(v, "true") && strcmp(v, "false"))) {
        fail(c, 400, "INVALID_ARGUMENT", "tombstone must be true or false");
        return;
    }
    tomb = r > 0 && !strcmp(v, "true");
    int64_t expected = STELE_ANY;
    if (c->req.has_expected && parse_expected(c->req.expected, &expected)) {
        fail(c, 400, "INVALID_ARGUMENT",
             "Stele-Expected-Revision must be any, no_stream, stream_exists or a revision");
        return;
    }
    /* Deletes are rare: done synchronously (one fsync) on the loop. */
    uint64_t current;
    int rc = tomb ? stele_tombstone_stream(c->srv->db, stream, expected, &current)
                  : stele_delete_stream(c->srv->db, stream, expected, &current);
    if (rc) {
        stele_append_result res = {.current_revision = current};
        http_stele_error(c, rc, stele_errmsg(), &res);
        conn_request_done(c);
        return;
    }
    http_respond(c, 204, NULL, NULL, 0, NULL);
    finish(c, 0);
}

static void handle_info(conn *c)
{
    stele_stats st;
    int rc = stele_get_stats(c->srv->db, &st);
    if (rc) {
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
        return;
    }
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"version\":\"%s\",\"store\":{\"events\":%llu,\"streams\":%llu,"
                     "\"logBytes\":%llu,\"segments\":%llu,\"readOnly\":%s},"
                     "\"connections\":%zu}\n",
                     STELE_VERSION, (unsigned long long)st.events, (unsigned long long)st.streams,
                     (unsigned long long)st.log_bytes, (unsigned long long)st.segments,
                     st.readonly ? "true" : "false", c->srv->nconns);
    http_respond(c, 200, "application/json", body, (size_t)n, NULL);
    finish(c, 0);
}

/* Once a second: log when the store becomes read-only or writable again
 * (a full disk comes and goes without a request noticing). */
void route_health_tick(server *s)
{
    stele_stats st;
    if (stele_get_stats(s->db, &st))
        return;
    if (st.readonly && !s->store_readonly)
        server_log(s, 0, "msg=\"store is read-only\" code=%s reason=\"%s\"",
                   stele_error_info_of(st.readonly_code)->code, st.readonly_reason);
    else if (!st.readonly && s->store_readonly)
        server_log(s, 0, "msg=\"store is writable again\"");
    s->store_readonly = st.readonly;
}

/* ------------------------------------------------------------ routing */

static void method_not_allowed(conn *c, const char *path, size_t plen)
{
    char msg[256];
    snprintf(msg, sizeof msg, "method %s is not allowed on %.*s", http_method_str(c->req.method),
             (int)(plen > 200 ? 200 : plen), path);
    fail(c, 405, "METHOD_NOT_ALLOWED", msg);
}

static void handle_live(conn *c)
{
    static const char b[] = "{\"status\":\"live\"}\n";
    http_respond(c, 200, "application/json", b, sizeof b - 1, NULL);
    finish(c, 0);
}

/* 200 while the store takes appends; 503 with the reason when it is
 * read-only, failing or the server is stopping. */
static void handle_ready(conn *c)
{
    stele_stats st;
    int src = stele_get_stats(c->srv->db, &st);
    if (src || st.readonly || c->srv->stopping) {
        if (c->srv->stopping)
            fail(c, 503, "UNAVAILABLE", "shutting down");
        else if (src)
            fail(c, 503, "UNAVAILABLE", stele_errmsg());
        else
            fail(c, 503, st.readonly_code == STELE_ENOSPC ? "NO_SPACE" : "READ_ONLY",
                 st.readonly_reason);
        return;
    }
    static const char b[] = "{\"status\":\"ready\"}\n";
    http_respond(c, 200, "application/json", b, sizeof b - 1, NULL);
    finish(c, 0);
}

static void handle_metrics(conn *c)
{
    buf b = {0};
    metrics_render(c->srv, &b);
    http_respond(c, 200, "text/plain; version=0.0.4", b.p, b.len, NULL);
    buf_free(&b);
    finish(c, 0);
}

/* The server's own GET-only paths. */
static const struct {
    const char *path;
    void (*get)(conn *c);
} fixed_routes[] = {
    {"/health/live", handle_live},
    {"/health/ready", handle_ready},
    {"/info", handle_info},
    {"/metrics", handle_metrics},
};

/* 1 when path is one of fixed_routes (answered), else 0. */
static int route_fixed(conn *c, const char *path, size_t plen)
{
    for (size_t i = 0; i < sizeof fixed_routes / sizeof fixed_routes[0]; i++) {
        const char *p = fixed_routes[i].path;
        if (strlen(p) != plen || memcmp(path, p, plen))
            continue;
        if (c->req.method != HTTP_GET)
            method_not_allowed(c, path, plen);
        else
            fixed_routes[i].get(c);
        return 1;
    }
    return 0;
}

/* /streams/NAME[/...]: the stream itself (append, read, delete), its head,
 * its state and the sub-resources of routes_streams.c. 1 when answered,
 * 0 when no route takes the path. */
static int route_stream(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    int m = c->req.method;
    const char *seg = path + 9;
    size_t slen = plen - 9;
    const char *slash = memchr(seg, '/', slen);
    size_t name_len = slash ? (size_t)(slash - seg) : slen;
    const char *rest = slash ? slash : "";
    size_t rest_len = slash ? slen - name_len : 0;
    char name[1024];
    size_t nlen;
    if (name_len == 0 || url_decode(seg, name_len, name, sizeof name, &nlen) != 0) {
        fail(c, 400, "INVALID_ARGUMENT", "malformed stream name in the path");
        return 1;
    }
    if (memchr(name, 0, nlen)) {
        fail(c, 400, "INVALID_ARGUMENT", "stream name contains a NUL byte");
        return 1;
    }
    if (rest_len == 0) {
        if (m == HTTP_POST)
            handle_append(c, name);
        else if (m == HTTP_GET)
            handle_read(c, name, q, qlen);
        else if (m == HTTP_DELETE)
            handle_delete(c, name, q, qlen);
        else
            method_not_allowed(c, path, plen);
        return 1;
    }
    if (rest_len == 5 && !memcmp(rest, "/head", 5)) {
        if (m != HTTP_GET)
            method_not_allowed(c, path, plen);
        else
            handle_head(c, name);
        return 1;
    }
    /* state reconstructed with a projection (routes_projections.c) */
    if (rest_len == 6 && !memcmp(rest, "/state", 6) && route_stream_state(c, name, q, qlen))
        return 1;
    /* metadata, snapshots, load (routes_streams.c) */
    return route_streams(c, m, name, rest, rest_len, q, qlen);
}

/* The routers of the other route files, in order; each returns 1 when it
 * took the request. */
static int route_others(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    return route_users(c, path, plen, q, qlen) || route_subscribe(c, path, plen, q, qlen) ||
           route_groups(c, path, plen, q, qlen) || route_projections(c, path, plen, q, qlen) ||
           route_names(c, path, plen, q, qlen) || /* GET /streams, /categories, /types */
           route_chain(c, path, plen, q, qlen) || /* the hash chain (routes_chain.c) */
           route_multi(c, path, plen) || route_rules(c, path, plen, q, qlen);
}

void route_request(conn *c)
{
    request *r = &c->req;
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *url = (const char *)r->url.p;
    if (http_parser_parse_url(url, r->url.len, 0, &u) || !(u.field_set & (1 << UF_PATH))) {
        fail(c, 400, "BAD_REQUEST", "malformed request target");
        return;
    }
    const char *path = url + u.field_data[UF_PATH].off;
    size_t plen = u.field_data[UF_PATH].len;
    const char *q = (u.field_set & (1 << UF_QUERY)) ? url + u.field_data[UF_QUERY].off : "";
    size_t qlen = (u.field_set & (1 << UF_QUERY)) ? u.field_data[UF_QUERY].len : 0;
    int m = r->method;
    server_log(c->srv, 2, "msg=request method=%s path=\"%.*s\"", http_method_str(m), (int)plen,
               path);
    if (guard_http_request(c)) /* Host, Origin, Content-Type; OPTIONS (guard.c) */
        return;
    if (access_http_gate(c, path, plen)) /* users and access (access.c) */
        return;
    if (route_ui(c, path, plen)) /* the web UI: / and /ui/ (routes_ui.c) */
        return;
    if (route_fixed(c, path, plen))
        return;
    if (plen >= 7 && !memcmp(path, "/admin/", 7)) {
        route_admin(c, path, plen);
        return;
    }
    if (plen == 4 && !memcmp(path, "/all", 4)) {
        if (m != HTTP_GET)
            method_not_allowed(c, path, plen);
        else
            handle_read(c, NULL, q, qlen);
        return;
    }
    if (route_others(c, path, plen, q, qlen))
        return;
    if (plen > 9 && !memcmp(path, "/streams/", 9) && route_stream(c, path, plen, q, qlen))
        return;
    /* /categories/, /types/, /tags/, /correlations/, /actors/ */
    if (route_query_request(c, path, plen, q, qlen))
        return;
    char msg[256];
    snprintf(msg, sizeof msg, "no route for %s %.*s", http_method_str(m),
             (int)(plen > 200 ? 200 : plen), path);
    fail(c, 404, "NOT_FOUND", msg);
}
