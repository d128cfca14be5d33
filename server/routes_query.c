/*
 * routes_query.c - the query endpoints of the REST API (docs/http-api.md,
 * docs/queries.md):
 *
 *   GET /categories/{category}   ?type=  events of streams "{category}-..."
 *   GET /types/{type}                    events of one type
 *   GET /tags/{tag}              ?type=  events with a tag
 *   GET /correlations/{id}       ?type=  events whose metadata names the id
 *   GET /actors/{actor}          ?type=  events whose metadata names the actor
 *   GET /all                     ?after=&before=   $all by time
 *   GET /streams/{stream}        ?to=REV | ?asOf=TIME   temporal reads
 *
 * each with ?after=&before= (RFC 3339) where it applies and the usual
 * ?from=&direction=&limit=, answered exactly like stream reads (a JSON page
 * with a next link, or NDJSON) by routes.c. Times are RFC 3339 date-times
 * (stele_time_parse: "2026-11-23T16:30:00Z", fractional seconds to
 * nanoseconds, "Z" or an offset "+02:00"; in a query string '+' must be
 * sent as %2B, and a space where the offset's sign belongs is taken as the
 * '+' it was). Every malformed value is a 400 naming the parameter and
 * what is wrong.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"
#include "urlcode.h"

/* ---------------------------------------------------------------- times */

/*
 * A time parameter as microseconds: `ceil` rounds a sub-microsecond time
 * up (for bounds "created >= t" and "created < t"), else down ("created <=
 * t"). 1 found, 0 absent, -1 after a 400 response.
 */
static int time_param(conn *c, const char *q, size_t qlen, const char *name, int ceil,
                      int64_t *us)
{
    char v[128], msg[400];
    int r = query_get(q, qlen, name, v, sizeof v);
    if (r == 0)
        return 0;
    if (r < 0)
        snprintf(msg, sizeof msg, "%s: malformed or too long", name);
    else if (!*v)
        snprintf(msg, sizeof msg, "%s is empty: give an RFC 3339 time", name);
    else if (stele_time_parse(v, ceil, us) == 0)
        return 1;
    else
        snprintf(msg, sizeof msg, "%s: %s", name, stele_errmsg());
    http_error(c, 400, "INVALID_ARGUMENT", msg);
    conn_request_done(c);
    return -1;
}

/* Append "name=<RFC 3339 of us>&" to a link. */
static void link_time(char *link, size_t cap, const char *name, int64_t us)
{
    char t[32];
    stele_time_format(us, t);
    size_t n = strlen(link);
    snprintf(link + n, cap - n, "%s=%s&", name, t);
}

static void link_param(char *link, size_t cap, const char *name, const char *value)
{
    char enc[800];
    url_encode(value, strlen(value), enc, sizeof enc);
    size_t n = strlen(link);
    snprintf(link + n, cap - n, "%s=%s&", name, enc);
}

static void bad(conn *c, const char *msg)
{
    http_error(c, 400, "INVALID_ARGUMENT", msg);
    conn_request_done(c);
}

/* ---------------------------------------------------------------- pages */

int route_query_page(conn *c, const read_job *j, size_t limit, stele_page **pg)
{
    int dir = j->backwards ? STELE_BACKWARDS : STELE_FORWARDS;
    switch (j->query) {
    case QJ_STREAM_TO:
        return stele_read_stream_to(c->srv->db, j->stream, j->next, dir, limit, j->to, pg);
    case QJ_STREAM_AS_OF:
        return stele_read_stream_as_of(c->srv->db, j->stream, j->as_of_us, j->next, dir, limit,
                                       pg);
    case QJ_STREAM_BETWEEN:
        return stele_read_stream_between(c->srv->db, j->stream, j->after_us, j->before_us,
                                         j->next, dir, limit, pg);
    default: {
        stele_query q = j->q;
        q.key = q.kind == STELE_QUERY_ALL ? NULL : j->qkey;
        q.type = j->qtype[0] ? j->qtype : NULL;
        q.from = j->next;
        q.direction = dir;
        q.limit = limit;
        return stele_read_query(c->srv->db, &q, pg);
    }
    }
}

/* ?after= and ?before= into the job's query and the link: 0 or -1 (after
 * a response). */
static int time_bounds(conn *c, const char *q, size_t qlen, read_job *j, char *link, size_t cap)
{
    int r;
    if ((r = time_param(c, q, qlen, "after", 1, &j->q.after_us)) < 0)
        return -1;
    j->q.has_after = r;
    if ((r = time_param(c, q, qlen, "before", 1, &j->q.before_us)) < 0)
        return -1;
    j->q.has_before = r;
    if (j->q.has_after && j->q.has_before && j->q.after_us > j->q.before_us) {
        char a[128], b[128], msg[400];
        query_get(q, qlen, "after", a, sizeof a);
        query_get(q, qlen, "before", b, sizeof b);
        snprintf(msg, sizeof msg, "after (%s) is later than before (%s)", a, b);
        bad(c, msg);
        return -1;
    }
    if (j->q.has_after)
        link_time(link, cap, "after", j->q.after_us);
    if (j->q.has_before)
        link_time(link, cap, "before", j->q.before_us);
    return 0;
}

int route_query_read(conn *c, const char *stream, const char *q, size_t qlen)
{
    char v[64];
    int has_after = query_get(q, qlen, "after", v, sizeof v) != 0;
    int has_before = query_get(q, qlen, "before", v, sizeof v) != 0;
    int has_to = query_get(q, qlen, "to", v, sizeof v) != 0;
    int has_as_of = query_get(q, qlen, "asOf", v, sizeof v) != 0;
    if (!has_after && !has_before && !has_to && !has_as_of)
        return 0;
    read_args ra;
    if (route_parse_read_args(c, q, qlen, &ra))
        return 1;
    read_job *j = &c->job;
    memset(j, 0, sizeof *j);
    char link[1400];
    if (!stream) {
        if (has_to || has_as_of) {
            bad(c, "to and asOf apply to stream reads; read $all by time with after and before");
            return 1;
        }
        j->all = 1;
        j->filter = access_filter_read(c->srv, &c->who, NULL);
        j->query = QJ_QUERY;
        j->q.kind = STELE_QUERY_ALL;
        snprintf(link, sizeof link, "/all?");
        if (time_bounds(c, q, qlen, j, link, sizeof link))
            return 1;
        route_serve_read(c, &ra, link);
        return 1;
    }
    if ((has_after || has_before) && (has_to || has_as_of)) {
        bad(c, "give after/before (a time range) or to/asOf (the stream as it was), not both");
        return 1;
    }
    if (has_to && has_as_of) {
        bad(c, "give to or asOf, not both");
        return 1;
    }
    snprintf(j->stream, sizeof j->stream, "%s", stream);
    j->filter = access_filter_read(c->srv, &c->who, stream); /* a view as it was */
    char enc[800];
    url_encode(stream, strlen(stream), enc, sizeof enc);
    snprintf(link, sizeof link, "/streams/%s?", enc);
    if (has_after || has_before) {
        /* A time-bounded stream read: events created at or after `after`
         * and before `before` (the same bounds as the queries'). */
        if (time_bounds(c, q, qlen, j, link, sizeof link))
            return 1;
        j->query = QJ_STREAM_BETWEEN;
        j->after_us = j->q.has_after ? j->q.after_us : INT64_MIN;
        j->before_us = j->q.has_before ? j->q.before_us : INT64_MAX;
    } else if (has_to) {
        char t[64];
        int r = query_get(q, qlen, "to", t, sizeof t);
        char *end;
        unsigned long long rev = r > 0 ? strtoull(t, &end, 10) : 0;
        if (r <= 0 || t[0] < '0' || t[0] > '9' || *end || rev == UINT64_MAX || strlen(t) > 20) {
            bad(c, "to must be a revision (a non-negative number)");
            return 1;
        }
        j->query = QJ_STREAM_TO;
        j->to = rev;
        size_t n = strlen(link);
        snprintf(link + n, sizeof link - n, "to=%llu&", rev);
    } else {
        int r = time_param(c, q, qlen, "asOf", 0, &j->as_of_us);
        if (r < 0)
            return 1;
        j->query = QJ_STREAM_AS_OF;
        link_time(link, sizeof link, "asOf", j->as_of_us);
    }
    route_serve_read(c, &ra, link);
    return 1;
}

/* ------------------------------------------------------------- routing */

static const struct {
    const char *prefix;
    int kind;
} query_routes[] = {
    {"/categories/", STELE_QUERY_CATEGORY},   {"/types/", STELE_QUERY_TYPE},
    {"/tags/", STELE_QUERY_TAG},              {"/correlations/", STELE_QUERY_CORRELATION},
    {"/actors/", STELE_QUERY_ACTOR},          {"/causations/", STELE_QUERY_CAUSATION},
};

int route_query_request(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    int kind = 0;
    size_t pl = 0;
    for (size_t i = 0; i < sizeof query_routes / sizeof query_routes[0]; i++) {
        pl = strlen(query_routes[i].prefix);
        if (plen >= pl && !memcmp(path, query_routes[i].prefix, pl)) {
            kind = query_routes[i].kind;
            break;
        }
    }
    if (!kind)
        return 0;
    const char *seg = path + pl;
    size_t slen = plen - pl;
    if (c->req.method != HTTP_GET) {
        char msg[256];
        snprintf(msg, sizeof msg, "method %s is not allowed on %.*s",
                 http_method_str(c->req.method), (int)(plen > 200 ? 200 : plen), path);
        http_error(c, 405, "METHOD_NOT_ALLOWED", msg);
        conn_request_done(c);
        return 1;
    }
    read_job *j = &c->job;
    memset(j, 0, sizeof *j);
    size_t klen;
    int dr = slen && !memchr(seg, '/', slen) ? url_decode(seg, slen, j->qkey, sizeof j->qkey, &klen)
                                             : STELE_EINVAL;
    if (dr) {
        bad(c, slen == 0             ? "the key is missing from the path"
               : dr == STELE_ETOOBIG ? "the key in the path is longer than 255 bytes"
                                     : "malformed key in the path (one segment, percent-encoded)");
        return 1;
    }
    read_args ra;
    if (route_parse_read_args(c, q, qlen, &ra))
        return 1;
    j->query = QJ_QUERY;
    j->q.kind = kind;
    j->filter = access_filter_read(c->srv, &c->who, NULL);
    char t[300];
    int r = query_get(q, qlen, "type", t, sizeof t);
    if (r < 0 || (r > 0 && strlen(t) >= sizeof j->qtype)) {
        bad(c, "type: malformed or longer than 255 bytes");
        return 1;
    }
    if (r > 0 && kind == STELE_QUERY_TYPE) {
        bad(c, "type applies to categories, tags, correlations and actors (and causations); "
               "this is a type query");
        return 1;
    }
    if (r > 0 && !*t) {
        bad(c, "type is empty");
        return 1;
    }
    if (r > 0)
        memcpy(j->qtype, t, strlen(t) + 1); /* fits: checked above */
    char link[1400];
    snprintf(link, sizeof link, "%.*s", (int)pl, path);
    url_encode(j->qkey, klen, link + pl, sizeof link - pl - 2);
    strcat(link, "?");
    if (j->qtype[0])
        link_param(link, sizeof link, "type", j->qtype);
    if (time_bounds(c, q, qlen, j, link, sizeof link))
        return 1;
    route_serve_read(c, &ra, link);
    return 1;
}
