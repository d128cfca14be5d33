/*
 * routes_multi.c - multi-stream appends and DCB queries over HTTP
 * (docs/http-api.md, docs/consistency.md):
 *
 *   POST /streams   {"streams":[{"stream","expectedRevision","events":[...],
 *                    "state"|"stateBase64","stateSchemaVersion"}...],
 *                    "condition":{"failIfEventsMatch":[{"types","tags"}],"after"}}
 *   POST /query     {"query":[{"types","tags"}...],"from","direction","limit"}
 *
 * The envelope is read with json_doc (validated first, then tokens); each
 * stream's "events" array is parsed by json_parse_append on its own span of
 * the body, so event data keeps the exact bytes the client sent, as for
 * single-stream appends. Events go into the commit stream by stream, in the
 * order the request lists the streams (documented choice: a client that
 * wants another interleaving splits the request).
 *
 * The append is queued with stele_append_multi_async, like single-stream
 * appends: the loop goes on serving while the writer commits it, and the
 * completion answers in request order. Every failure names what
 * failed: the stream (index and name) and its current revision for
 * WRONG_EXPECTED_REVISION and STREAM_DELETED, the first matching position
 * for CONDITION_FAILED (409).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_doc.h"
#include "server_int.h"

#define MULTI_MAX_BODY (256u << 20)
#define QUERY_MAX_LIMIT 10000

static void bad(conn *c, const char *msg)
{
    http_error(c, 400, "INVALID_ARGUMENT", msg);
    conn_request_done(c);
}

/* Free a list of malloc'd strings. */
static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* A JSON array of strings at token `a` (or absent: -1) into *out. 0, or
 * -1 with a message in err. */
static int str_array(const json_doc *d, int a, const char *what, size_t item, char ***out,
                     size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (a < 0)
        return 0;
    if (json_doc_type(d, a) != JD_ARRAY) {
        snprintf(err, errlen, "query item %zu: \"%s\" must be an array of strings", item, what);
        return -1;
    }
    int m = json_doc_size(d, a);
    if (m > 64) {
        snprintf(err, errlen, "query item %zu: more than 64 %s", item, what);
        return -1;
    }
    char **v = calloc((size_t)m + 1, sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int j = a + 1;
    for (int k = 0; k < m; k++) {
        v[k] = json_doc_str(d, j);
        if (!v[k]) {
            free_strs(v, (size_t)k);
            snprintf(err, errlen, "query item %zu: \"%s\" must hold strings without U+0000",
                     item, what);
            return -1;
        }
        j = json_doc_next(d, j);
    }
    *out = v;
    *n = (size_t)m;
    return 0;
}

/* A DCB query (an array of {"types","tags"}) at token `q`. */
typedef struct query_buf {
    stele_query_item *items;
    char ***types, ***tags;
    size_t n;
} query_buf;

static void query_free(query_buf *qb)
{
    for (size_t i = 0; i < qb->n; i++) {
        free_strs(qb->types[i], qb->items[i].ntypes);
        free_strs(qb->tags[i], qb->items[i].ntags);
    }
    free(qb->items);
    free(qb->types);
    free(qb->tags);
    memset(qb, 0, sizeof *qb);
}

static int parse_query(const json_doc *d, int q, const char *name, query_buf *qb, char *err,
                       size_t errlen)
{
    memset(qb, 0, sizeof *qb);
    if (json_doc_type(d, q) != JD_ARRAY) {
        snprintf(err, errlen, "\"%s\" must be an array of query items", name);
        return -1;
    }
    int n = json_doc_size(d, q);
    if (n == 0) {
        snprintf(err, errlen, "\"%s\" has no query items", name);
        return -1;
    }
    if (n > (int)STELE_MAX_CONDITION_ITEMS) {
        snprintf(err, errlen, "\"%s\" has %d query items, more than %u", name, n,
                 STELE_MAX_CONDITION_ITEMS);
        return -1;
    }
    qb->items = calloc((size_t)n, sizeof *qb->items);
    qb->types = calloc((size_t)n, sizeof *qb->types);
    qb->tags = calloc((size_t)n, sizeof *qb->tags);
    if (!qb->items || !qb->types || !qb->tags) {
        query_free(qb);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int j = q + 1;
    for (int k = 0; k < n; k++, qb->n++) {
        if (json_doc_type(d, j) != JD_OBJECT) {
            snprintf(err, errlen, "query item %d must be an object with \"types\" and/or \"tags\"",
                     k);
            return -1;
        }
        for (int m = 0; m < json_doc_size(d, j); m++) {
            int key, val;
            json_doc_member(d, j, m, &key, &val);
            if (!json_doc_eq(d, key, "types") && !json_doc_eq(d, key, "tags")) {
                snprintf(err, errlen, "query item %d: unknown field (expected \"types\" and "
                         "\"tags\")", k);
                return -1;
            }
        }
        size_t nt, ng;
        if (str_array(d, json_doc_get(d, j, "types"), "types", (size_t)k, &qb->types[k], &nt, err,
                      errlen) ||
            str_array(d, json_doc_get(d, j, "tags"), "tags", (size_t)k, &qb->tags[k], &ng, err,
                      errlen))
            return -1;
        qb->items[k] = (stele_query_item){(const char *const *)qb->types[k], nt,
                                          (const char *const *)qb->tags[k], ng};
        j = json_doc_next(d, j);
    }
    return 0;
}

static int parse_expected(const json_doc *d, int v, int64_t *out)
{
    uint64_t n;
    if (json_doc_type(d, v) == JD_NUMBER && json_doc_u64(d, v, &n) == 0 && n <= INT64_MAX) {
        *out = (int64_t)n;
        return 0;
    }
    static const struct {
        const char *s;
        int64_t v;
    } words[] = {{"any", STELE_ANY},
                 {"no_stream", STELE_NO_STREAM},
                 {"stream_exists", STELE_STREAM_EXISTS},
                 {"deleted", STELE_DELETED}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (json_doc_eq(d, v, words[i].s)) {
            *out = words[i].v;
            return 0;
        }
    return -1;
}

static void w_rev(buf *b, const char *name, uint64_t v)
{
    buf_append(b, ",\"", 2);
    buf_append(b, name, strlen(name));
    buf_append(b, "\":", 2);
    if (v == STELE_NONE)
        buf_append(b, "null", 4);
    else
        json_w_u64(b, v);
}

/* The error body of a failed multi-stream append. */
static void multi_error(conn *c, int rc, const char *msg, const stele_multi_result *mr,
                        const stele_append_result *ps, char *const *names, size_t nstreams)
{
    const stele_error_info *e = stele_error_info_of(rc); /* docs/errors.md */
    int status = e->http_status;
    const char *code = e->code;
    buf b = {0};
    buf_append(&b, "{\"error\":{\"code\":", 17);
    json_w_str(&b, code, strlen(code));
    buf_append(&b, ",\"message\":", 11);
    json_w_str(&b, msg, strlen(msg));
    if ((rc == STELE_EWRONGREV || rc == STELE_EDELETED || rc == STELE_ENOTFOUND) && mr &&
        mr->failed_stream < nstreams) {
        buf_append(&b, ",\"streamIndex\":", 15);
        json_w_u64(&b, mr->failed_stream);
        buf_append(&b, ",\"stream\":", 10);
        const char *s = names[mr->failed_stream];
        json_w_str(&b, s, strlen(s));
        w_rev(&b, "currentRevision", mr->current_revision);
    }
    if ((rc == STELE_EWRONGREV || rc == STELE_EDELETED) && ps) {
        /* Every stream whose check failed, as KurrentDB lists them. */
        buf_append(&b, ",\"failures\":[", 13);
        int any = 0;
        for (size_t i = 0; i < nstreams; i++) {
            if (!ps[i].failed)
                continue;
            if (any++)
                buf_append(&b, ",", 1);
            buf_append(&b, "{\"streamIndex\":", 15);
            json_w_u64(&b, i);
            buf_append(&b, ",\"stream\":", 10);
            json_w_str(&b, names[i], strlen(names[i]));
            const char *fc = ps[i].failed == STELE_EDELETED ? "STREAM_DELETED"
                                                            : "WRONG_EXPECTED_REVISION";
            buf_append(&b, ",\"code\":", 8);
            json_w_str(&b, fc, strlen(fc));
            w_rev(&b, "currentRevision", ps[i].current_revision);
            buf_append(&b, "}", 1);
        }
        buf_append(&b, "]", 1);
    }
    if (rc == STELE_ECONDITION && mr)
        w_rev(&b, "position", mr->condition_position);
    buf_append(&b, "}}\n", 3);
    http_respond(c, status, "application/json", b.p, b.len, NULL);
    buf_free(&b);
    metrics_error(&c->srv->m, status, rc);
    conn_request_done(c);
}

/* Everything one POST /streams body holds. */
typedef struct mreq {
    json_doc *d;
    size_t n;
    stele_append_stream *streams;
    stele_snapshot_in *states;
    uint8_t **state_mem;
    char **names;
    json_append *ev;
    stele_append_record *recs;
    size_t nrecs;
    query_buf cond_q;
    stele_condition cond;
    int has_cond;
} mreq;

static void mreq_free(mreq *m)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->names)
            free(m->names[i]);
        if (m->ev)
            json_append_free(&m->ev[i]);
        if (m->state_mem)
            free(m->state_mem[i]);
    }
    free(m->names);
    free(m->ev);
    free(m->state_mem);
    free(m->streams);
    free(m->states);
    free(m->recs);
    query_free(&m->cond_q);
    json_doc_free(m->d);
}

/* A multi-stream append in flight: what its completion needs to answer. */
typedef struct mctx {
    conn *c;
    size_t n;
    char **names;
    int rc;
    stele_multi_result mr;
    stele_append_result *ps;
    char msg[512];
} mctx;

static void mctx_free(void *p)
{
    mctx *x = p;
    for (size_t i = 0; x->names && i < x->n; i++)
        free(x->names[i]);
    free(x->names);
    free(x->ps);
    free(x);
}

/* On the loop thread: answer the request. */
static void multi_done(conn *c, completion *cp)
{
    mctx *x = cp->extra;
    c->srv->m.appends++;
    c->state = CS_READING;
    if (x->rc) {
        multi_error(c, x->rc, x->msg, &x->mr, x->ps, x->names, x->n);
        return;
    }
    const stele_multi_result *mr = &x->mr;
    buf b = {0};
    buf_append(&b, "{\"firstPosition\":", 17);
    json_w_u64(&b, mr->first_position);
    buf_append(&b, ",\"lastPosition\":", 16);
    json_w_u64(&b, mr->last_position);
    if (mr->idempotent)
        buf_append(&b, ",\"idempotent\":true", 18);
    else
        buf_append(&b, ",\"idempotent\":false", 19);
    buf_append(&b, ",\"streams\":[", 12);
    for (size_t i = 0; i < x->n; i++) {
        if (i)
            buf_append(&b, ",", 1);
        buf_append(&b, "{\"stream\":", 10);
        json_w_str(&b, x->names[i], strlen(x->names[i]));
        w_rev(&b, "firstRevision", x->ps[i].first_revision);
        w_rev(&b, "lastRevision", x->ps[i].last_revision);
        w_rev(&b, "firstPosition", x->ps[i].first_position);
        w_rev(&b, "lastPosition", x->ps[i].last_position);
        buf_append(&b, "}", 1);
    }
    buf_append(&b, "]}\n", 3);
    http_respond(c, mr->idempotent ? 200 : 201, "application/json", b.p, b.len, NULL);
    buf_free(&b);
    metrics_observe(&c->srv->m, 1, (double)(time_mono_ns() - c->t_start_ns) / 1e9);
    conn_request_done(c);
}

/* On the store's writer thread: hand the outcome to the loop. */
static void multi_cb(void *ctx, int rc, const stele_append_result *ps, size_t n,
                     const stele_multi_result *res, const char *msg)
{
    mctx *x = ctx;
    completion *cp = calloc(1, sizeof *cp);
    x->ps = malloc(n * sizeof *x->ps);
    if (!cp || !x->ps)
        abort(); /* cannot report the outcome: no way to keep order */
    memcpy(x->ps, ps, n * sizeof *ps);
    x->rc = rc;
    x->mr = *res;
    snprintf(x->msg, sizeof x->msg, "%s", msg);
    cp->c = x->c;
    cp->rc = rc;
    cp->done = multi_done;
    cp->extra = x;
    cp->extra_free = mctx_free;
    completion_post(x->c->srv, cp);
}

static int parse_stream(conn *c, mreq *m, size_t i, int o, char *err, size_t errlen)
{
    const json_doc *d = m->d;
    const char *body = (const char *)c->req.body.p;
    if (json_doc_type(d, o) != JD_OBJECT) {
        snprintf(err, errlen, "streams[%zu] must be an object", i);
        return -1;
    }
    static const char *const fields[] = {"stream", "expectedRevision", "events", "state",
                                         "stateBase64", "stateSchemaVersion"};
    for (int k = 0; k < json_doc_size(d, o); k++) {
        int key, val, ok = 0;
        json_doc_member(d, o, k, &key, &val);
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
            ok |= json_doc_eq(d, key, fields[f]);
        if (!ok) {
            snprintf(err, errlen, "streams[%zu]: unknown field (expected stream, "
                     "expectedRevision, events, state, stateBase64, stateSchemaVersion)", i);
            return -1;
        }
    }
    int sv = json_doc_get(d, o, "stream");
    m->names[i] = sv >= 0 ? json_doc_str(d, sv) : NULL;
    if (!m->names[i]) {
        snprintf(err, errlen, "streams[%zu]: \"stream\" must be a string", i);
        return -1;
    }
    m->streams[i].stream = m->names[i];
    m->streams[i].expected = STELE_ANY;
    int ev = json_doc_get(d, o, "expectedRevision");
    if (ev >= 0 && parse_expected(d, ev, &m->streams[i].expected)) {
        snprintf(err, errlen, "streams[%zu]: \"expectedRevision\" must be any, no_stream, "
                 "stream_exists, deleted or a revision", i);
        return -1;
    }
    int evs = json_doc_get(d, o, "events");
    if (evs >= 0) {
        if (json_doc_type(d, evs) != JD_ARRAY) {
            snprintf(err, errlen, "streams[%zu]: \"events\" must be an array", i);
            return -1;
        }
        if (json_doc_size(d, evs) > 0) {
            size_t off, len;
            json_doc_span(d, evs, &off, &len);
            char e2[400];
            int rc = json_parse_append(body + off, len, &m->ev[i], e2, sizeof e2);
            if (rc) {
                snprintf(err, errlen, "streams[%zu]: %s", i, e2);
                return rc == STELE_ETOOBIG ? -2 : -1;
            }
        }
    }
    int st = json_doc_get(d, o, "state"), sb = json_doc_get(d, o, "stateBase64");
    if (st >= 0 && sb >= 0) {
        snprintf(err, errlen, "streams[%zu]: give \"state\" or \"stateBase64\", not both", i);
        return -1;
    }
    if (st >= 0 || sb >= 0) {
        stele_snapshot_in *s = &m->states[i];
        size_t off, len;
        if (st >= 0) {
            json_doc_span(d, st, &off, &len);
            s->state = body + off;
            s->state_len = len;
            s->flags = STELE_EVENT_JSON;
        } else {
            char *txt = json_doc_str(d, sb);
            if (!txt) {
                snprintf(err, errlen, "streams[%zu]: \"stateBase64\" must be a string", i);
                return -1;
            }
            size_t n = strlen(txt), outn, bad_at;
            const char *why;
            m->state_mem[i] = malloc(json_b64_decoded_max(n) + 1);
            int rc = m->state_mem[i] ? json_b64_decode(txt, n, m->state_mem[i], &outn, &bad_at,
                                                       &why)
                                     : -1;
            free(txt);
            if (rc) {
                snprintf(err, errlen, "streams[%zu]: \"stateBase64\" is not valid base64", i);
                return -1;
            }
            s->state = m->state_mem[i];
            s->state_len = outn;
        }
        int sv2 = json_doc_get(d, o, "stateSchemaVersion");
        uint64_t ver = 0;
        if (sv2 >= 0 && (json_doc_u64(d, sv2, &ver) || ver > UINT32_MAX)) {
            snprintf(err, errlen, "streams[%zu]: \"stateSchemaVersion\" must be a number "
                     "0..4294967295", i);
            return -1;
        }
        s->schema_version = (uint32_t)ver;
        m->streams[i].state = s;
    }
    return 0;
}

/* The body's "condition": {"failIfEventsMatch": query, "after": position
 * or null}. 0, or -1 with err set. */
static int parse_condition(const json_doc *d, int cond, mreq *m, char *err, size_t errlen)
{
    if (json_doc_type(d, cond) != JD_OBJECT) {
        snprintf(err, errlen, "\"condition\" must be an object with \"failIfEventsMatch\"");
        return -1;
    }
    int q = json_doc_get(d, cond, "failIfEventsMatch"), af = json_doc_get(d, cond, "after");
    for (int k = 0; k < json_doc_size(d, cond); k++) {
        int key, val;
        json_doc_member(d, cond, k, &key, &val);
        if (!json_doc_eq(d, key, "failIfEventsMatch") && !json_doc_eq(d, key, "after")) {
            snprintf(err, errlen, "condition: unknown field (expected "
                     "\"failIfEventsMatch\" and \"after\")");
            return -1;
        }
    }
    if (q < 0) {
        snprintf(err, errlen, "condition: missing \"failIfEventsMatch\"");
        return -1;
    }
    if (parse_query(d, q, "failIfEventsMatch", &m->cond_q, err, errlen))
        return -1;
    m->cond = (stele_condition){m->cond_q.items, m->cond_q.n, STELE_NONE};
    if (af >= 0 && json_doc_type(d, af) != JD_NULL && json_doc_u64(d, af, &m->cond.after)) {
        snprintf(err, errlen, "condition: \"after\" must be a position or null");
        return -1;
    }
    m->has_cond = 1;
    return 0;
}

/* The body into m: its streams with their events and states, and the
 * condition. 0, or the HTTP status to answer (400, 413) with err set. */
static int parse_multi(conn *c, mreq *m, char *err, size_t errlen)
{
    request *r = &c->req;
    int rc = json_doc_parse_max((const char *)r->body.p, r->body.len, MULTI_MAX_BODY, &m->d, err,
                                errlen);
    if (rc)
        return rc == STELE_ETOOBIG ? 413 : 400;
    const json_doc *d = m->d;
    int sa = -1, cond = -1;
    if (json_doc_type(d, 0) != JD_OBJECT) {
        snprintf(err, errlen, "the body must be an object with \"streams\"");
        return 400;
    }
    for (int k = 0; k < json_doc_size(d, 0); k++) {
        int key, val;
        json_doc_member(d, 0, k, &key, &val);
        if (json_doc_eq(d, key, "streams"))
            sa = val;
        else if (json_doc_eq(d, key, "condition"))
            cond = val;
        else {
            snprintf(err, errlen, "unknown field (expected \"streams\" and \"condition\")");
            return 400;
        }
    }
    if (sa < 0 || json_doc_type(d, sa) != JD_ARRAY || json_doc_size(d, sa) == 0) {
        snprintf(err, errlen, "\"streams\" must be a non-empty array");
        return 400;
    }
    m->n = (size_t)json_doc_size(d, sa);
    if (m->n > STELE_MAX_APPEND_STREAMS) {
        snprintf(err, errlen, "%zu streams, more than %u in one append", m->n,
                 STELE_MAX_APPEND_STREAMS);
        return 413;
    }
    m->streams = calloc(m->n, sizeof *m->streams);
    m->states = calloc(m->n, sizeof *m->states);
    m->state_mem = calloc(m->n, sizeof *m->state_mem);
    m->names = calloc(m->n, sizeof *m->names);
    m->ev = calloc(m->n, sizeof *m->ev);
    if (!m->streams || !m->states || !m->state_mem || !m->names || !m->ev) {
        snprintf(err, errlen, "out of memory");
        return 400;
    }
    int j = sa + 1;
    for (size_t i = 0; i < m->n; i++) {
        int pr = parse_stream(c, m, i, j, err, errlen);
        if (pr)
            return pr == -2 ? 413 : 400;
        m->nrecs += m->ev[i].n;
        j = json_doc_next(d, j);
    }
    if (cond >= 0 && parse_condition(d, cond, m, err, errlen))
        return 400;
    return 0;
}

static void handle_multi(conn *c)
{
    mreq m;
    memset(&m, 0, sizeof m);
    char err[600];
    int st = parse_multi(c, &m, err, sizeof err);
    if (st == 413 || (st && !m.d)) {
        if (st == 413)
            http_error(c, 413, "TOO_LARGE", err);
        else
            http_error(c, 400, "INVALID_JSON", err);
        conn_request_done(c);
        mreq_free(&m);
        return;
    }
    if (st)
        goto bad_req;
    if (access_append_multi(c, m.names, m.n, m.has_cond)) {
        mreq_free(&m); /* answered 403: nothing written */
        return;
    }
    m.recs = calloc(m.nrecs ? m.nrecs : 1, sizeof *m.recs);
    if (!m.recs) {
        snprintf(err, sizeof err, "out of memory");
        goto bad_req;
    }
    size_t k = 0;
    for (size_t i = 0; i < m.n; i++)
        for (size_t e = 0; e < m.ev[i].n; e++)
            m.recs[k++] = (stele_append_record){i, m.ev[i].events[e]};
    mctx *x = calloc(1, sizeof *x);
    if (!x) {
        snprintf(err, sizeof err, "out of memory");
        goto bad_req;
    }
    x->c = c;
    x->n = m.n;
    x->names = m.names; /* the completion answers with them */
    m.names = NULL;
    c->srv->m.append_bytes += c->req.body.len;
    c->srv->m.append_events += m.nrecs;
    c->async_pending = 1;
    c->state = CS_BUSY;
    int rc = stele_append_multi_async(c->srv->db, m.streams, m.n, m.recs, m.nrecs,
                                      m.has_cond ? &m.cond : NULL, multi_cb, x);
    mreq_free(&m); /* the store copied the request */
    if (rc) {
        c->async_pending = 0;
        c->state = CS_READING;
        multi_error(c, rc, stele_errmsg(), NULL, NULL, x->names, x->n);
        mctx_free(x);
    }
    return;
bad_req:
    mreq_free(&m);
    bad(c, err);
}

/* A query read's body: the query, where to start, which way, how many. */
typedef struct query_read {
    query_buf qb;
    uint64_t from, limit;
    int backwards;
} query_read;

/* The body's members ("query", "from", "direction", "limit") into *qr:
 * 0, or -1 with the reason in err. */
static int parse_query_read(const json_doc *d, query_read *qr, char *err, size_t errlen)
{
    int q = -1, fr = -1, dir = -1, lim = -1;
    if (json_doc_type(d, 0) != JD_OBJECT) {
        snprintf(err, errlen, "the body must be an object with \"query\"");
        return -1;
    }
    for (int k = 0; k < json_doc_size(d, 0); k++) {
        int key, val;
        json_doc_member(d, 0, k, &key, &val);
        if (json_doc_eq(d, key, "query"))
            q = val;
        else if (json_doc_eq(d, key, "from"))
            fr = val;
        else if (json_doc_eq(d, key, "direction"))
            dir = val;
        else if (json_doc_eq(d, key, "limit"))
            lim = val;
        else {
            snprintf(err, errlen,
                     "unknown field (expected \"query\", \"from\", \"direction\", \"limit\")");
            return -1;
        }
    }
    if (q < 0) {
        snprintf(err, errlen, "missing \"query\"");
        return -1;
    }
    if (parse_query(d, q, "query", &qr->qb, err, errlen))
        return -1;
    if (dir >= 0) {
        if (json_doc_eq(d, dir, "backwards"))
            qr->backwards = 1;
        else if (!json_doc_eq(d, dir, "forwards")) {
            snprintf(err, errlen, "\"direction\" must be \"forwards\" or \"backwards\"");
            return -1;
        }
    }
    qr->from = qr->backwards ? STELE_END : 0;
    if (fr >= 0 && !(json_doc_type(d, fr) == JD_STRING && json_doc_eq(d, fr, "end")) &&
        json_doc_u64(d, fr, &qr->from)) {
        snprintf(err, errlen, "\"from\" must be a position or \"end\"");
        return -1;
    }
    if (fr >= 0 && json_doc_eq(d, fr, "end"))
        qr->from = STELE_END;
    qr->limit = 100;
    if (lim >= 0 &&
        (json_doc_u64(d, lim, &qr->limit) || qr->limit == 0 || qr->limit > QUERY_MAX_LIMIT)) {
        snprintf(err, errlen, "\"limit\" must be 1..%d", QUERY_MAX_LIMIT);
        return -1;
    }
    return 0;
}

/* The page's events this user may read, its `next` position and "after":
 * the newest position the page shows, the condition's `after` for a
 * decision based on this read (forwards: read every page first). Frees
 * pg. */
static void reply_query_page(conn *c, stele_page *pg)
{
    buf b = {0};
    buf_append(&b, "{\"events\":[", 11);
    uint64_t newest = STELE_NONE;
    int filter = access_filter_read(c->srv, &c->who, NULL);
    size_t sent = 0;
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        if (filter && !access_visible(c, e->stream))
            continue; /* a stream this user may not read (docs/security.md) */
        if (sent++)
            buf_append(&b, ",", 1);
        json_w_event(&b, e);
        if (newest == STELE_NONE || e->position > newest)
            newest = e->position;
    }
    buf_append(&b, "]", 1);
    uint64_t next;
    w_rev(&b, "next", stele_page_next(pg, &next) ? next : STELE_NONE);
    w_rev(&b, "after", newest);
    buf_append(&b, "}\n", 2);
    http_respond(c, 200, "application/json", b.p, b.len, NULL);
    buf_free(&b);
    stele_page_free(pg);
    metrics_observe(&c->srv->m, 0, (double)(time_mono_ns() - c->t_start_ns) / 1e9);
    conn_request_done(c);
}

static void handle_query(conn *c)
{
    request *r = &c->req;
    json_doc *d;
    char err[600];
    int rc = json_doc_parse((const char *)r->body.p, r->body.len, &d, err, sizeof err);
    if (rc) {
        http_error(c, rc == STELE_ETOOBIG ? 413 : 400,
                   rc == STELE_ETOOBIG ? "TOO_LARGE" : "INVALID_JSON", err);
        conn_request_done(c);
        return;
    }
    query_read qr;
    memset(&qr, 0, sizeof qr);
    if (parse_query_read(d, &qr, err, sizeof err)) {
        query_free(&qr.qb);
        json_doc_free(d);
        bad(c, err);
        return;
    }
    stele_condition cond = {qr.qb.items, qr.qb.n, STELE_NONE};
    stele_page *pg;
    rc = stele_read_matching(c->srv->db, &cond, qr.from,
                             qr.backwards ? STELE_BACKWARDS : STELE_FORWARDS, (size_t)qr.limit, &pg);
    if (rc) {
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
    } else {
        reply_query_page(c, pg);
    }
    query_free(&qr.qb);
    json_doc_free(d);
}

int route_multi(conn *c, const char *path, size_t plen)
{
    int is_streams = plen == 8 && !memcmp(path, "/streams", 8);
    int is_query = plen == 6 && !memcmp(path, "/query", 6);
    /* Only POST: other methods on these paths are left to the other
     * routes (a GET /streams listing may live elsewhere). */
    if ((!is_streams && !is_query) || c->req.method != HTTP_POST)
        return 0;
    if (is_streams)
        handle_multi(c);
    else
        handle_query(c);
    return 1;
}
