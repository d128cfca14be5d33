/*
 * routes_names.c - listing names (docs/http-api.md, "Listing streams,
 * categories and types"): GET /streams, GET /categories and GET /types,
 * each with ?prefix=&after=&limit=&excludeSystem=, in byte order, paged by name (the
 * answer's `next` link carries the last name as `after`). The walk is
 * stele_list_names; this file parses the query and writes the JSON. POST
 * /streams (multi-stream appends) stays routes_multi.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "auth.h"
#include "server_int.h"
#include "urlcode.h"

#define NAMES_DEFAULT 100
#define NAMES_MAX 10000

static void names_fail(conn *c, int status, const char *code, const char *msg)
{
    http_error(c, status, code, msg);
    conn_request_done(c);
}


static const struct names_kind {
    const char *path, *member;
    int kind;
} kinds[] = {{"/streams", "streams", STELE_NAMES_STREAMS},
             {"/categories", "categories", STELE_NAMES_CATEGORIES},
             {"/types", "types", STELE_NAMES_TYPES}};

/* The query string of a listing. */
typedef struct names_query {
    char prefix[256], after[256];
    size_t limit;
    unsigned flags;
} names_query;

/* excludeSystem, prefix, after and limit from q into *nq: 0, or -1 after
 * answering 400. */
static int parse_query(conn *c, const char *q, size_t qlen, names_query *nq)
{
    char lim[32], ex[8];
    int re = query_get(q, qlen, "excludeSystem", ex, sizeof ex);
    if (re < 0 || (re > 0 && strcmp(ex, "true") && strcmp(ex, "false"))) {
        names_fail(c, 400, "INVALID_ARGUMENT", "excludeSystem must be true or false");
        return -1;
    }
    nq->flags = re > 0 && !strcmp(ex, "true") ? STELE_NAMES_NO_SYSTEM : 0;
    int rp = query_get(q, qlen, "prefix", nq->prefix, sizeof nq->prefix);
    int ra = query_get(q, qlen, "after", nq->after, sizeof nq->after);
    int rl = query_get(q, qlen, "limit", lim, sizeof lim);
    if (rp < 0 || ra < 0 || rl < 0) {
        names_fail(c, 400, "INVALID_ARGUMENT",
                   rp < 0 ? "prefix: a bad escape, a NUL byte, or longer than a name (255 bytes)"
                   : ra < 0 ? "after: a bad escape, a NUL byte, or longer than a name (255 bytes)"
                            : "limit must be a number from 1 to 10000");
        return -1;
    }
    nq->limit = NAMES_DEFAULT;
    if (rl > 0) {
        char *end;
        unsigned long long l = strtoull(lim, &end, 10);
        if (!*lim || *end || lim[0] < '0' || lim[0] > '9' || l < 1 || l > NAMES_MAX) {
            names_fail(c, 400, "INVALID_ARGUMENT", "limit must be a number from 1 to 10000");
            return -1;
        }
        nq->limit = (size_t)l;
    }
    return 0;
}

/* One name's object; a stream's also carries its last position and
 * deletion state. */
static void write_name(buf *b, const stele_name_info *in, int stream, int first)
{
    buf_append(b, first ? "{\"name\":" : ",{\"name\":", first ? 8 : 9);
    json_w_str(b, in->name, strlen(in->name));
    buf_append(b, ",\"count\":", 9);
    json_w_u64(b, in->count);
    if (stream) {
        char t[128];
        int tn;
        if (in->last_position == STELE_END)
            tn = snprintf(t, sizeof t, ",\"lastPosition\":null");
        else
            tn = snprintf(t, sizeof t, ",\"lastPosition\":%llu",
                          (unsigned long long)in->last_position);
        buf_append(b, t, (size_t)tn);
        tn = snprintf(t, sizeof t, ",\"deleted\":%s,\"tombstoned\":%s",
                      in->deleted ? "true" : "false", in->tombstoned ? "true" : "false");
        buf_append(b, t, (size_t)tn);
    }
    buf_append(b, "}", 1);
}

/* A full page's `next` link: the same listing after its last name. */
static void write_next(buf *b, const struct names_kind *k, const names_query *nq,
                       const char *last)
{
    char ep[3 * 255 + 1], ea[3 * 255 + 1];
    url_encode(nq->prefix, strlen(nq->prefix), ep, sizeof ep);
    url_encode(last, strlen(last), ea, sizeof ea);
    buf_append(b, ",\"next\":", 8);
    char link[2200];
    const char *prefix = nq->prefix;
    int ln = snprintf(link, sizeof link, "%s?%s%s%s%safter=%s&limit=%zu", k->path,
                      nq->flags ? "excludeSystem=true&" : "", *prefix ? "prefix=" : "",
                      *prefix ? ep : "", *prefix ? "&" : "", ea, nq->limit);
    json_w_str(b, link, (size_t)ln);
}

/* GET on one of kinds: a page of names. */
static void list_names(conn *c, const struct names_kind *k, const char *q, size_t qlen)
{
    names_query nq;
    if (parse_query(c, q, qlen, &nq))
        return;
    stele_name_info *list;
    size_t n;
    int rc = stele_list_names(c->srv->db, k->kind, nq.prefix, nq.after, nq.limit, nq.flags, &list,
                              &n);
    if (rc) {
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
        return;
    }
    /* GET /streams by a user without $ops: only the streams it may read
     * (its ACLs letting it read $all whole: all of them). `limit` and the
     * `next` link count the names scanned, as filtered event reads count
     * events: a page may hold fewer. */
    int stream = k->kind == STELE_NAMES_STREAMS;
    int filter = stream && access_filtered(&c->who) &&
                 !access_stream(c->srv, &c->who, "$all", ACL_R);
    buf b = {0};
    buf_append(&b, "{\"", 2);
    buf_append(&b, k->member, strlen(k->member));
    buf_append(&b, "\":[", 3);
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        if (filter && !access_stream(c->srv, &c->who, list[i].name, ACL_R))
            continue;
        write_name(&b, &list[i], stream, shown++ == 0);
    }
    buf_append(&b, "]", 1);
    if (n == nq.limit)
        write_next(&b, k, &nq, list[n - 1].name);
    buf_append(&b, "}\n", 2);
    stele_names_free(list);
    http_respond(c, 200, "application/json", b.p, b.len, NULL);
    buf_free(&b);
    conn_request_done(c);
}

int route_names(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    int k = -1;
    for (int i = 0; i < 3; i++)
        if (plen == strlen(kinds[i].path) && !memcmp(path, kinds[i].path, plen))
            k = i;
    if (k < 0)
        return 0;
    int m = c->req.method;
    if (m != HTTP_GET) {
        if (kinds[k].kind == STELE_NAMES_STREAMS)
            return 0; /* POST /streams: a multi-stream append (routes_multi.c) */
        char msg[128];
        snprintf(msg, sizeof msg, "method %s is not allowed on %s", http_method_str(m),
                 kinds[k].path);
        names_fail(c, 405, "METHOD_NOT_ALLOWED", msg);
        return 1;
    }
    list_names(c, &kinds[k], q, qlen);
    return 1;
}
