/*
 * routes_groups.c - consumer groups (persistent subscriptions) over HTTP
 * (docs/http-api.md, docs/consumer-groups.md). The stream segment `$all`
 * names a group on $all.
 *
 *   GET    /subscriptions                          every group
 *   GET    /subscriptions/{stream}                 the groups of a stream
 *   PUT    /subscriptions/{stream}/{group}         create (JSON settings)
 *   POST   /subscriptions/{stream}/{group}         update (fields given)
 *   DELETE /subscriptions/{stream}/{group}         delete
 *   GET    /subscriptions/{stream}/{group}         info
 *   GET    .../messages?count=&consumer=&timeout=  pull (long poll)
 *   POST   .../ack[/{id}]  .../nack[/{id}]?action=retry|skip|park&reason=
 *   GET    .../subscribe?consumer=&count=          push (Server-Sent Events)
 *   GET    .../parked?from=&limit=   POST .../parked/replay?max=
 *   DELETE .../parked?before=
 *
 * Consumers. A pull names its consumer (?consumer=, default "default");
 * the server connects it on its first pull and keeps the handle until the
 * consumer has made no request for max(60 s, the group's message timeout)
 * (its in-flight events are then redelivered, as the timeouts would have
 * done anyway). A push consumer lives as long as its SSE connection:
 * closing the connection closes the consumer, and its in-flight events go
 * to another consumer at once.
 *
 * Waiting. Nothing here blocks the loop: consumer reads are made with
 * timeout 0. A pull with ?timeout= that finds nothing parks its connection
 * (state BUSY, no output) in `waiting`; push feeds wait in the SSE hub.
 * Both are retried when the group watch fd (stele_group_watch: commits,
 * redeliveries, acks that free a slot) is readable, and waiting pulls are
 * answered (empty) at their deadline.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "json.h"
#include "json_doc.h"
#include "server_int.h"
#include "urlcode.h"

#define PULL_MAX_COUNT 1000
#define PULL_MAX_TIMEOUT_MS 300000
#define PULL_IDLE_MS 60000
#define PULL_MAX_CONSUMERS 10000
#define SSE_DEFAULT_COUNT 16
#define MAX_IDS 10000
#define BASE_MAX 1800  /* "/subscriptions/" + 2 encoded names */
#define QNAME_MAX 420  /* "?consumer=" + an encoded name */

/* A pull consumer the server keeps for its clients. */
typedef struct pull_consumer {
    char *stream; /* NULL: $all */
    char *group;
    char *name;
    stele_consumer *c;
    int64_t last_used_ms, idle_ms;
    int waiting; /* a pull is waiting on it */
    struct pull_consumer *next;
} pull_consumer;

/* A pull waiting for events. */
typedef struct pull_wait {
    conn *c;
    pull_consumer *pc;
    size_t count;
    int64_t deadline_ms;
    char base[BASE_MAX]; /* "/subscriptions/{stream}/{group}" for the links */
    struct pull_wait *prev, *next;
} pull_wait;

/* A push (SSE) consumer. */
typedef struct push_feed {
    conn *c;
    stele_consumer *cons;
    size_t count;
    char base[BASE_MAX];
    char qname[QNAME_MAX]; /* "?consumer=..." for the links */
    struct push_feed *prev, *next;
} push_feed;

typedef struct groups_srv {
    pull_consumer *pulls;
    size_t npulls;
    pull_wait *waiting;
    push_feed *feeds;
    unsigned long long feed_seq;
    int64_t last_sweep_ms;
} groups_srv;

/* ------------------------------------------------------------ responses */

/* A libstele error from a group call; `what` names the thing ENOTFOUND and
 * EEXISTS are about ("GROUP", "CONSUMER", "MESSAGE"). */
static void group_error(conn *c, int rc, const char *what)
{
    char code[48];
    const char *msg = stele_errmsg();
    if (rc == STELE_ENOTFOUND) {
        snprintf(code, sizeof code, "%s_NOT_FOUND", what);
        http_error_code(c, code, msg);
        metrics_error(&c->srv->m, 404, rc);
    } else if (rc == STELE_EEXISTS) {
        snprintf(code, sizeof code, "%s_EXISTS", what);
        http_error_code(c, code, msg);
        metrics_error(&c->srv->m, 409, rc);
    } else {
        http_stele_error(c, rc, msg, NULL);
    }
    conn_request_done(c);
}

static void w_lit(buf *b, const char *s) { buf_append(b, s, strlen(s)); }

static void w_num_or_null(buf *b, uint64_t v)
{
    if (v == STELE_NONE)
        w_lit(b, "null");
    else
        json_w_u64(b, v);
}

static void w_list(buf *b, const char *key, const char *const *v, size_t n, int *first)
{
    if (!n)
        return;
    w_lit(b, *first ? "\"" : ",\"");
    *first = 0;
    w_lit(b, key);
    w_lit(b, "\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            w_lit(b, ",");
        json_w_str(b, v[i], strlen(v[i]));
    }
    w_lit(b, "]");
}

static void w_filter(buf *b, const stele_filter *f)
{
    int first = 1;
    w_lit(b, "{");
    w_list(b, "streamPrefixes", f->stream_prefixes, f->n_stream_prefixes, &first);
    w_list(b, "categories", f->categories, f->n_categories, &first);
    w_list(b, "types", f->types, f->n_types, &first);
    w_list(b, "typePrefixes", f->type_prefixes, f->n_type_prefixes, &first);
    if (f->stream_regex) {
        w_lit(b, first ? "\"streamRegex\":" : ",\"streamRegex\":");
        json_w_str(b, f->stream_regex, strlen(f->stream_regex));
        first = 0;
    }
    if (f->type_regex) {
        w_lit(b, first ? "\"typeRegex\":" : ",\"typeRegex\":");
        json_w_str(b, f->type_regex, strlen(f->type_regex));
        first = 0;
    }
    w_list(b, "tags", f->tags, f->n_tags, &first);
    if (f->exclude_system)
        w_lit(b, first ? "\"excludeSystem\":true" : ",\"excludeSystem\":true");
    w_lit(b, "}");
}

static void w_info(buf *b, const stele_group_info *in)
{
    const stele_group_settings *s = &in->settings;
    w_lit(b, "{\"stream\":");
    json_w_str(b, in->stream, strlen(in->stream));
    w_lit(b, ",\"group\":");
    json_w_str(b, in->group, strlen(in->group));
    w_lit(b, ",\"settings\":{\"startFrom\":");
    json_w_u64(b, s->start);
    w_lit(b, s->strategy == STELE_PINNED ? ",\"strategy\":\"Pinned\"" : ",\"strategy\":\"RoundRobin\"");
    const char *keys[] = {"maxInFlight", "messageTimeoutMs", "maxRetries", "bufferSize",
                          "checkpointAfterMs", "checkpointMinCount", "checkpointMaxCount"};
    uint32_t vals[] = {s->max_in_flight, s->message_timeout_ms, s->max_retries, s->buffer_size,
                       s->checkpoint_after_ms, s->checkpoint_min_count, s->checkpoint_max_count};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        w_lit(b, ",\"");
        w_lit(b, keys[i]);
        w_lit(b, "\":");
        json_w_u64(b, vals[i]);
    }
    if (s->filter) {
        w_lit(b, ",\"filter\":");
        w_filter(b, s->filter);
    }
    w_lit(b, "},\"checkpoint\":");
    w_num_or_null(b, in->checkpoint);
    w_lit(b, ",\"checkpointSaved\":");
    w_num_or_null(b, in->checkpoint_saved);
    w_lit(b, ",\"readPosition\":");
    json_w_u64(b, in->read_position);
    const char *ck[] = {"inFlight", "waiting", "parked", "replaying", "delivered", "acked",
                        "nacked", "timedOut", "parkedTotal"};
    uint64_t cv[] = {in->in_flight, in->waiting, in->parked, in->replaying, in->delivered,
                     in->acked, in->nacked, in->timed_out, in->parked_total};
    for (size_t i = 0; i < sizeof ck / sizeof ck[0]; i++) {
        w_lit(b, ",\"");
        w_lit(b, ck[i]);
        w_lit(b, "\":");
        json_w_u64(b, cv[i]);
    }
    w_lit(b, ",\"lastError\":");
    json_w_str(b, in->last_error, strlen(in->last_error));
    w_lit(b, ",\"consumers\":[");
    for (size_t i = 0; i < in->n_consumers; i++) {
        w_lit(b, i ? ",{\"name\":" : "{\"name\":");
        json_w_str(b, in->consumers[i].name, strlen(in->consumers[i].name));
        w_lit(b, ",\"inFlight\":");
        json_w_u64(b, in->consumers[i].in_flight);
        w_lit(b, ",\"delivered\":");
        json_w_u64(b, in->consumers[i].delivered);
        w_lit(b, "}");
    }
    w_lit(b, "]}");
}

/* One delivered event with its retry count and ack / nack links. */
static void w_message(buf *b, const stele_event *e, uint32_t retries, const char *base,
                      const char *qname)
{
    char id[37];
    stele_id_format(e->id, e->flags, id);
    w_lit(b, "{\"event\":");
    route_event_json(b, e);
    w_lit(b, ",\"retryCount\":");
    json_w_u64(b, retries);
    w_lit(b, ",\"ackUri\":\"");
    w_lit(b, base);
    w_lit(b, "/ack/");
    w_lit(b, id);
    w_lit(b, qname);
    w_lit(b, "\",\"nackUri\":\"");
    w_lit(b, base);
    w_lit(b, "/nack/");
    w_lit(b, id);
    w_lit(b, qname);
    w_lit(b, "\"}");
}

/* ------------------------------------------------------------ settings */

/* The strings a parsed filter points to. */
typedef struct filter_mem {
    stele_filter f;
    char *strs[5 * 64 + 2];
    size_t nstrs;
    const char *lists[5][64];
} filter_mem;

static void filter_mem_free(filter_mem *fm)
{
    for (size_t i = 0; i < fm->nstrs; i++)
        free(fm->strs[i]);
    fm->nstrs = 0;
}

static int bad(char *err, size_t errlen, const char *fmt, const char *what)
{
    snprintf(err, errlen, fmt, what);
    return -1;
}

static int parse_filter(const json_doc *d, int obj, filter_mem *fm, char *err, size_t errlen)
{
    if (json_doc_type(d, obj) != JD_OBJECT)
        return bad(err, errlen, "%s must be an object", "\"filter\"");
    static const char *lists[5] = {"streamPrefixes", "categories", "types", "typePrefixes",
                                   "tags"};
    const char *const **lp[5] = {&fm->f.stream_prefixes, &fm->f.categories, &fm->f.types,
                                 &fm->f.type_prefixes, &fm->f.tags};
    size_t *np[5] = {&fm->f.n_stream_prefixes, &fm->f.n_categories, &fm->f.n_types,
                     &fm->f.n_type_prefixes, &fm->f.n_tags};
    for (int k = 0; k < json_doc_size(d, obj); k++) {
        int kt, vt, l;
        json_doc_member(d, obj, k, &kt, &vt);
        for (l = 0; l < 5 && !json_doc_eq(d, kt, lists[l]); l++) {
        }
        if (l < 5) {
            if (json_doc_type(d, vt) != JD_ARRAY || json_doc_size(d, vt) > 64)
                return bad(err, errlen, "filter: \"%s\" must be an array of at most 64 strings",
                           lists[l]);
            int e = vt + 1;
            for (int i = 0; i < json_doc_size(d, vt); i++, e = json_doc_next(d, e)) {
                char *s = json_doc_str(d, e);
                if (!s)
                    return bad(err, errlen, "filter: \"%s\" must hold strings", lists[l]);
                fm->strs[fm->nstrs++] = s;
                fm->lists[l][i] = s;
            }
            *lp[l] = fm->lists[l];
            *np[l] = (size_t)json_doc_size(d, vt);
        } else if (json_doc_eq(d, kt, "streamRegex") || json_doc_eq(d, kt, "typeRegex")) {
            char *s = json_doc_str(d, vt);
            if (!s)
                return bad(err, errlen, "filter: %s must be a string",
                           json_doc_eq(d, kt, "streamRegex") ? "\"streamRegex\"" : "\"typeRegex\"");
            fm->strs[fm->nstrs++] = s;
            if (json_doc_eq(d, kt, "streamRegex"))
                fm->f.stream_regex = s;
            else
                fm->f.type_regex = s;
        } else if (json_doc_eq(d, kt, "excludeSystem")) {
            int t = json_doc_type(d, vt);
            if (t != JD_TRUE && t != JD_FALSE)
                return bad(err, errlen, "filter: %s must be true or false", "\"excludeSystem\"");
            fm->f.exclude_system = t == JD_TRUE;
        } else {
            char *name = json_doc_str(d, kt);
            snprintf(err, errlen, "filter: unknown field \"%s\"", name ? name : "?");
            free(name);
            return -1;
        }
    }
    return 0;
}

/*
 * Settings from a JSON object into *s (which holds the defaults, or the
 * current settings for an update: absent fields keep their value).
 * *has_filter says whether "filter" was given.
 */
static int parse_settings(const char *body, size_t len, stele_group_settings *s, filter_mem *fm,
                          int *has_filter, char *err, size_t errlen, int *bad_json)
{
    *has_filter = 0;
    *bad_json = 0;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'))
        i++;
    if (i == len)
        return 0; /* no body: all defaults (or unchanged) */
    json_doc *d;
    int rc = json_doc_parse(body, len, &d, err, errlen);
    if (rc) {
        *bad_json = rc == STELE_EINVAL;
        return -1;
    }
    rc = -1;
    if (json_doc_type(d, 0) != JD_OBJECT) {
        snprintf(err, errlen, "the settings must be a JSON object");
        goto out;
    }
    static const char *nums[] = {"maxInFlight", "messageTimeoutMs", "maxRetries", "bufferSize",
                                 "checkpointAfterMs", "checkpointMinCount", "checkpointMaxCount"};
    uint32_t *vals[] = {&s->max_in_flight, &s->message_timeout_ms, &s->max_retries,
                        &s->buffer_size, &s->checkpoint_after_ms, &s->checkpoint_min_count,
                        &s->checkpoint_max_count};
    for (int k = 0; k < json_doc_size(d, 0); k++) {
        int kt, vt;
        json_doc_member(d, 0, k, &kt, &vt);
        size_t n;
        for (n = 0; n < sizeof nums / sizeof nums[0] && !json_doc_eq(d, kt, nums[n]); n++) {
        }
        uint64_t v;
        if (n < sizeof nums / sizeof nums[0]) {
            if (json_doc_u64(d, vt, &v) || v > UINT32_MAX) {
                snprintf(err, errlen, "\"%s\" must be a non-negative integer", nums[n]);
                goto out;
            }
            *vals[n] = (uint32_t)v;
        } else if (json_doc_eq(d, kt, "startFrom")) {
            if (json_doc_u64(d, vt, &v) == 0 && v != UINT64_MAX) {
                s->start = v;
            } else if (json_doc_eq(d, vt, "start")) {
                s->start = 0;
            } else if (json_doc_eq(d, vt, "end")) {
                s->start = STELE_END;
            } else {
                snprintf(err, errlen,
                         "\"startFrom\" must be a position / revision, \"start\" or \"end\"");
                goto out;
            }
        } else if (json_doc_eq(d, kt, "strategy")) {
            char *st = json_doc_str(d, vt);
            if (st && !strcasecmp(st, "RoundRobin"))
                s->strategy = STELE_ROUND_ROBIN;
            else if (st && !strcasecmp(st, "Pinned"))
                s->strategy = STELE_PINNED;
            else {
                free(st);
                snprintf(err, errlen, "\"strategy\" must be \"RoundRobin\" or \"Pinned\"");
                goto out;
            }
            free(st);
        } else if (json_doc_eq(d, kt, "filter")) {
            *has_filter = 1;
            if (json_doc_type(d, vt) == JD_NULL)
                continue;
            if (parse_filter(d, vt, fm, err, errlen))
                goto out;
            s->filter = &fm->f;
        } else {
            char *name = json_doc_str(d, kt);
            snprintf(err, errlen, "unknown field \"%s\" in the settings", name ? name : "?");
            free(name);
            goto out;
        }
    }
    rc = 0;
out:
    json_doc_free(d);
    return rc;
}

/* ------------------------------------------------------------ admin */

typedef struct target {
    const char *stream; /* NULL: $all */
    char sname[1024];
    char gname[1024];
    char base[BASE_MAX]; /* "/subscriptions/{stream}/{group}", encoded */
} target;

static void handle_create_update(conn *c, const target *t, int update)
{
    stele_group_settings s;
    filter_mem fm;
    memset(&fm, 0, sizeof fm);
    stele_group_info *cur = NULL;
    int rc;
    if (update) {
        if ((rc = stele_group_get(c->srv->db, t->stream, t->gname, &cur))) {
            group_error(c, rc, "GROUP");
            return;
        }
        s = cur->settings; /* the filter stays unless the body names one */
    } else {
        stele_group_settings_init(&s);
    }
    char err[512];
    int has_filter, bad_json;
    if (parse_settings((const char *)c->req.body.p, c->req.body.len, &s, &fm, &has_filter, err,
                       sizeof err, &bad_json)) {
        filter_mem_free(&fm);
        stele_group_info_free(cur);
        http_fail(c, 400, bad_json ? "INVALID_JSON" : "INVALID_ARGUMENT", err);
        return;
    }
    if (update && has_filter && !s.filter)
        s.filter = NULL; /* "filter": null: the library says whether that is a change */
    rc = update ? stele_group_update(c->srv->db, t->stream, t->gname, &s)
                : stele_group_create(c->srv->db, t->stream, t->gname, &s);
    filter_mem_free(&fm);
    stele_group_info_free(cur);
    if (rc) {
        group_error(c, rc, "GROUP");
        return;
    }
    stele_group_info *in;
    if ((rc = stele_group_get(c->srv->db, t->stream, t->gname, &in))) {
        group_error(c, rc, "GROUP");
        return;
    }
    buf b = {0};
    w_info(&b, in);
    stele_group_info_free(in);
    http_json_done(c, update ? 200 : 201, &b);
}

static void handle_info(conn *c, const target *t)
{
    stele_group_info *in;
    int rc = stele_group_get(c->srv->db, t->stream, t->gname, &in);
    if (rc) {
        group_error(c, rc, "GROUP");
        return;
    }
    buf b = {0};
    w_info(&b, in);
    stele_group_info_free(in);
    http_json_done(c, 200, &b);
}

/* GET /subscriptions[/{stream}]: `stream` NULL for every group; "$all"
 * for the groups on $all. */
static void handle_list(conn *c, const char *stream)
{
    stele_group_info *in;
    size_t n;
    int rc = stele_group_list(c->srv->db, &in, &n);
    if (rc) {
        group_error(c, rc, "GROUP");
        return;
    }
    buf b = {0};
    w_lit(&b, "{\"groups\":[");
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        if (stream && strcmp(stream, in[i].stream))
            continue;
        if (!first)
            w_lit(&b, ",");
        first = 0;
        w_info(&b, &in[i]);
    }
    w_lit(&b, "]}");
    stele_group_info_free(in);
    http_json_done(c, 200, &b);
}

static void close_pulls_of(server *s, const target *t);

static void handle_delete(conn *c, const target *t)
{
    int rc = stele_group_delete(c->srv->db, t->stream, t->gname);
    if (rc) {
        group_error(c, rc, "GROUP");
        return;
    }
    close_pulls_of(c->srv, t);
    http_respond(c, 204, NULL, NULL, 0, NULL);
    http_request_finish(c);
}

/* ------------------------------------------------------------ pull */

static int same_target(const pull_consumer *pc, const target *t)
{
    if ((pc->stream == NULL) != (t->stream == NULL))
        return 0;
    return (!t->stream || !strcmp(pc->stream, t->stream)) && !strcmp(pc->group, t->gname);
}

static void pull_free(groups_srv *g, pull_consumer *pc)
{
    pull_consumer **pp = &g->pulls;
    while (*pp && *pp != pc)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = pc->next;
        g->npulls--;
    }
    stele_consumer_close(pc->c);
    free(pc->stream);
    free(pc->group);
    free(pc->name);
    free(pc);
}

/* Drop the pull consumers of a deleted group (no pull waits on them: a
 * waiting pull would have been answered first). */
static void close_pulls_of(server *s, const target *t)
{
    groups_srv *g = s->groups;
    for (pull_consumer *pc = g->pulls, *nx; pc; pc = nx) {
        nx = pc->next;
        if (same_target(pc, t) && !pc->waiting)
            pull_free(g, pc);
    }
}

/* The pull consumer `name` of the group, connected on first use. */
static int pull_get(server *s, const target *t, const char *name, pull_consumer **out)
{
    groups_srv *g = s->groups;
    for (pull_consumer *pc = g->pulls; pc; pc = pc->next)
        if (same_target(pc, t) && !strcmp(pc->name, name)) {
            *out = pc;
            return 0;
        }
    if (g->npulls >= PULL_MAX_CONSUMERS)
        return STELE_ETOOBIG;
    stele_consumer *c;
    int rc = stele_group_connect(s->db, t->stream, t->gname, name, &c);
    if (rc)
        return rc;
    stele_group_info *in;
    int64_t idle = PULL_IDLE_MS;
    if (stele_group_get(s->db, t->stream, t->gname, &in) == 0) {
        if (in->settings.message_timeout_ms > idle)
            idle = in->settings.message_timeout_ms;
        stele_group_info_free(in);
    }
    pull_consumer *pc = calloc(1, sizeof *pc);
    if (pc) {
        pc->stream = t->stream ? strdup(t->stream) : NULL;
        pc->group = strdup(t->gname);
        pc->name = strdup(name);
    }
    if (!pc || (t->stream && !pc->stream) || !pc->group || !pc->name) {
        if (pc) {
            free(pc->stream);
            free(pc->group);
            free(pc->name);
            free(pc);
        }
        stele_consumer_close(c);
        return STELE_ENOMEM;
    }
    pc->c = c;
    pc->idle_ms = idle;
    pc->last_used_ms = now_ms();
    pc->next = g->pulls;
    g->pulls = pc;
    g->npulls++;
    *out = pc;
    return 0;
}

static void qname_of(const char *name, char *out, size_t outlen)
{
    char enc[400];
    url_encode(name, strlen(name), enc, sizeof enc);
    snprintf(out, outlen, "?consumer=%s", enc);
}

/* Read what is there for a pull: 1 answered (events or an error), 0 none. */
static int pull_try(conn *c, pull_consumer *pc, size_t count, const char *base, int final)
{
    stele_batch *b;
    pc->last_used_ms = now_ms();
    int rc = stele_consumer_read(pc->c, count, 0, &b);
    if (rc) {
        group_error(c, rc, "GROUP");
        if (rc == STELE_ENOTFOUND && !pc->waiting)
            pull_free(c->srv->groups, pc); /* the group is gone */
        return 1;
    }
    size_t n = stele_batch_count(b);
    if (!n && !final) {
        stele_batch_free(b);
        return 0;
    }
    char qname[QNAME_MAX];
    qname_of(pc->name, qname, sizeof qname);
    buf out = {0};
    w_lit(&out, "{\"messages\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            w_lit(&out, ",");
        w_message(&out, stele_batch_event(b, i), stele_batch_retry_count(b, i), base, qname);
    }
    w_lit(&out, "]}");
    c->srv->m.read_events += n;
    stele_batch_free(b);
    http_json_done(c, 200, &out);
    return 1;
}

static int query_num(const char *q, size_t qlen, const char *name, uint64_t lo, uint64_t hi,
                     uint64_t *v, int *given)
{
    char s[32];
    int r = query_get(q, qlen, name, s, sizeof s);
    *given = r > 0;
    if (r < 0)
        return -1;
    if (r == 0)
        return 0;
    char *end;
    if (!*s || *s < '0' || *s > '9')
        return -1;
    unsigned long long x = strtoull(s, &end, 10);
    if (*end || x < lo || x > hi)
        return -1;
    *v = x;
    return 0;
}

static int consumer_param(conn *c, const char *q, size_t qlen, char *name, size_t len,
                          const char *dflt)
{
    int r = query_get(q, qlen, "consumer", name, len);
    if (r < 0) {
        http_fail(c, 400, "INVALID_ARGUMENT", "consumer must be at most 128 bytes, percent-encoded");
        return -1;
    }
    if (r == 0)
        snprintf(name, len, "%s", dflt);
    return 0;
}

static void handle_pull(conn *c, const target *t, const char *q, size_t qlen)
{
    uint64_t count = 1, timeout = 0;
    int given;
    char msg[160];
    if (query_num(q, qlen, "count", 1, PULL_MAX_COUNT, &count, &given)) {
        snprintf(msg, sizeof msg, "count must be a number from 1 to %d", PULL_MAX_COUNT);
        http_fail(c, 400, "INVALID_ARGUMENT", msg);
        return;
    }
    if (query_num(q, qlen, "timeout", 0, PULL_MAX_TIMEOUT_MS, &timeout, &given)) {
        snprintf(msg, sizeof msg, "timeout must be a number of milliseconds from 0 to %d",
                 PULL_MAX_TIMEOUT_MS);
        http_fail(c, 400, "INVALID_ARGUMENT", msg);
        return;
    }
    char name[256];
    if (consumer_param(c, q, qlen, name, sizeof name, "default"))
        return;
    pull_consumer *pc;
    int rc = pull_get(c->srv, t, name, &pc);
    if (rc) {
        if (rc == STELE_ETOOBIG)
            http_fail(c, 503, "UNAVAILABLE", "too many pull consumers");
        else
            group_error(c, rc, rc == STELE_EEXISTS ? "CONSUMER" : "GROUP");
        return;
    }
    if (pc->waiting) {
        http_fail(c, 409, "CONSUMER_BUSY", "another pull of this consumer is waiting");
        return;
    }
    c->srv->m.reads++;
    if (pull_try(c, pc, (size_t)count, t->base, timeout == 0))
        return;
    /* Nothing yet: park the request until events come or time runs out. */
    pull_wait *w = calloc(1, sizeof *w);
    if (!w) {
        pull_try(c, pc, (size_t)count, t->base, 1);
        return;
    }
    groups_srv *g = c->srv->groups;
    w->c = c;
    w->pc = pc;
    w->count = (size_t)count;
    w->deadline_ms = now_ms() + (int64_t)timeout;
    snprintf(w->base, sizeof w->base, "%s", t->base);
    w->next = g->waiting;
    if (g->waiting)
        g->waiting->prev = w;
    g->waiting = w;
    pc->waiting = 1;
    c->gwait = w;
    c->state = CS_BUSY;
}

static void wait_remove(groups_srv *g, pull_wait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        g->waiting = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->pc->waiting = 0;
    w->c->gwait = NULL;
    free(w);
}

/* Retry waiting pulls (all, or only those past their deadline). */
static void retry_waiting(server *s, int only_expired)
{
    groups_srv *g = s->groups;
    int64_t now = now_ms();
    for (pull_wait *w = g->waiting, *nx; w; w = nx) {
        nx = w->next;
        int final = now >= w->deadline_ms || s->stopping;
        if (only_expired && !final)
            continue;
        /* Off the list while it is tried: answering may free the consumer
         * (group deleted) or run the connection's next request. */
        conn *c = w->c;
        pull_consumer *pc = w->pc;
        if (w->prev)
            w->prev->next = w->next;
        else
            g->waiting = w->next;
        if (w->next)
            w->next->prev = w->prev;
        pc->waiting = 0;
        c->gwait = NULL;
        c->state = CS_READING;
        if (pull_try(c, pc, w->count, w->base, final)) {
            free(w);
            continue;
        }
        w->prev = NULL;
        w->next = g->waiting;
        if (g->waiting)
            g->waiting->prev = w;
        g->waiting = w;
        pc->waiting = 1;
        c->gwait = w;
        c->state = CS_BUSY;
    }
}

/* ------------------------------------------------------------ ack / nack */

#define QUERY_IDS_MAX 1000

/* Event ids from the path (one), the query (?ids=a,b: KurrentDB's form) or
 * the body: ["id", ...] or {"ids": [...]}. */
static int parse_ids(conn *c, const char *path_id, const char *q, size_t qlen,
                     uint8_t (**ids)[16], size_t *n)
{
    *ids = NULL;
    *n = 0;
    char err[300];
    static char list[QUERY_IDS_MAX * 37 + 1];
    int r = path_id ? 0 : query_get(q, qlen, "ids", list, sizeof list);
    if (r < 0) {
        snprintf(err, sizeof err, "ids must be at most %d comma-separated event ids",
                 QUERY_IDS_MAX);
        http_fail(c, 400, "INVALID_ARGUMENT", err);
        return -1;
    }
    if (r > 0) {
        size_t cnt = 1;
        for (const char *p = list; *p; p++)
            cnt += *p == ',';
        *ids = malloc(cnt * 16);
        char *save = NULL, *tok = strtok_r(list, ",", &save);
        size_t k = 0;
        while (*ids && tok && k < cnt) {
            if (stele_id_parse(tok, (*ids)[k], NULL)) {
                snprintf(err, sizeof err, "ids: '%.64s' is not an event id (a UUID or a ULID)", tok);
                http_fail(c, 400, "INVALID_ARGUMENT", err);
                return -1;
            }
            k++;
            tok = strtok_r(NULL, ",", &save);
        }
        if (!*ids || k != cnt) {
            http_fail(c, 400, "INVALID_ARGUMENT", "ids: an empty id in the list");
            return -1;
        }
        *n = cnt;
        return 0;
    }
    if (path_id) {
        *ids = malloc(16);
        if (!*ids || stele_id_parse(path_id, (*ids)[0], NULL)) {
            snprintf(err, sizeof err, "'%.64s' is not an event id (a UUID or a ULID)", path_id);
            http_fail(c, 400, "INVALID_ARGUMENT", err);
            return -1;
        }
        *n = 1;
        return 0;
    }
    json_doc *d;
    int rc = json_doc_parse((const char *)c->req.body.p, c->req.body.len, &d, err, sizeof err);
    if (rc) {
        http_fail(c, rc == STELE_EINVAL ? 400 : 413,
                  rc == STELE_EINVAL ? "INVALID_JSON" : "TOO_LARGE", err);
        return -1;
    }
    int arr = json_doc_type(d, 0) == JD_ARRAY ? 0 : json_doc_get(d, 0, "ids");
    if (arr < 0 || json_doc_type(d, arr) != JD_ARRAY || json_doc_size(d, arr) == 0 ||
        json_doc_size(d, arr) > MAX_IDS) {
        json_doc_free(d);
        snprintf(err, sizeof err,
                 "the body must be a JSON array of 1 to %d event ids, or {\"ids\": [...]}",
                 MAX_IDS);
        http_fail(c, 400, "INVALID_ARGUMENT", err);
        return -1;
    }
    size_t cnt = (size_t)json_doc_size(d, arr);
    *ids = malloc(cnt * 16);
    int e = arr + 1;
    for (size_t i = 0; *ids && i < cnt; i++, e = json_doc_next(d, e)) {
        char *s = json_doc_str(d, e);
        int ok = s && stele_id_parse(s, (*ids)[i], NULL) == 0;
        free(s);
        if (!ok) {
            json_doc_free(d);
            snprintf(err, sizeof err, "id %zu is not an event id (a UUID string)", i);
            http_fail(c, 400, "INVALID_ARGUMENT", err);
            return -1;
        }
    }
    json_doc_free(d);
    if (!*ids) {
        http_fail(c, 500, "INTERNAL", "out of memory");
        return -1;
    }
    *n = cnt;
    return 0;
}

static void handle_settle(conn *c, const target *t, const char *path_id, const char *q,
                          size_t qlen, int nack)
{
    int action = -1;
    char v[32], reason[1100] = "", name[256];
    if (nack) {
        int r = query_get(q, qlen, "action", v, sizeof v);
        if (r == 0)
            action = STELE_NACK_RETRY;
        else if (r > 0 && !strcasecmp(v, "retry"))
            action = STELE_NACK_RETRY;
        else if (r > 0 && !strcasecmp(v, "skip"))
            action = STELE_NACK_SKIP;
        else if (r > 0 && !strcasecmp(v, "park"))
            action = STELE_NACK_PARK;
        else {
            http_fail(c, 400, "INVALID_ARGUMENT", "action must be retry, skip or park");
            return;
        }
        if (query_get(q, qlen, "reason", reason, sizeof reason) < 0) {
            http_fail(c, 400, "INVALID_ARGUMENT", "reason must be at most 1024 bytes, percent-encoded");
            return;
        }
    }
    int r = query_get(q, qlen, "consumer", name, sizeof name);
    if (r < 0) {
        http_fail(c, 400, "INVALID_ARGUMENT", "consumer must be at most 128 bytes, percent-encoded");
        return;
    }
    uint8_t(*ids)[16];
    size_t n;
    if (parse_ids(c, path_id, q, qlen, &ids, &n)) {
        free(ids);
        return;
    }
    int rc;
    stele_consumer *cons = NULL;
    if (r > 0) {
        /* A named consumer: a pull consumer of this server, or a push one. */
        for (pull_consumer *pc = c->srv->groups->pulls; pc; pc = pc->next)
            if (same_target(pc, t) && !strcmp(pc->name, name)) {
                cons = pc->c;
                pc->last_used_ms = now_ms();
            }
        for (push_feed *f = c->srv->groups->feeds; f && !cons; f = f->next) {
            const char *fq = f->qname + 10; /* after "?consumer=" */
            char enc[400];
            url_encode(name, strlen(name), enc, sizeof enc);
            if (!strcmp(fq, enc) && !strncmp(f->base, t->base, sizeof f->base))
                cons = f->cons;
        }
        if (!cons) {
            free(ids);
            char msg[400];
            snprintf(msg, sizeof msg, "consumer '%s' is not connected to this group", name);
            http_fail(c, 404, "CONSUMER_NOT_FOUND", msg);
            return;
        }
    }
    const uint8_t(*cids)[16] = (const uint8_t(*)[16])ids;
    if (cons)
        rc = nack ? stele_consumer_nack(cons, cids, n, action, reason)
                  : stele_consumer_ack(cons, cids, n);
    else
        rc = nack ? stele_group_nack(c->srv->db, t->stream, t->gname, cids, n, action, reason)
                  : stele_group_ack(c->srv->db, t->stream, t->gname, cids, n);
    free(ids);
    if (rc == STELE_ENOTFOUND) {
        /* The group, or an event not in flight? */
        stele_group_info *in;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", stele_errmsg());
        int exists = stele_group_get(c->srv->db, t->stream, t->gname, &in) == 0;
        stele_group_info_free(in);
        if (exists)
            http_fail(c, 404, "NOT_IN_FLIGHT", msg);
        else
            http_fail(c, 404, "GROUP_NOT_FOUND", msg);
        return;
    }
    if (rc) {
        group_error(c, rc, "GROUP");
        return;
    }
    http_respond(c, 204, NULL, NULL, 0, NULL);
    http_request_finish(c);
}

/* ------------------------------------------------------------ push */

static int push_pump(conn *c, void *ctx, size_t max_events)
{
    push_feed *f = ctx;
    size_t want = f->count < max_events ? f->count : max_events;
    stele_batch *b;
    int rc = stele_consumer_read(f->cons, want, 0, &b);
    if (rc) {
        buf e = {0};
        json_w_error(&e, rc == STELE_ENOTFOUND ? "GROUP_NOT_FOUND" : stele_error_info_of(rc)->code,
                     stele_errmsg());
        sse_event(c, "error", NULL, e.p, e.len);
        buf_free(&e);
        return SSE_END;
    }
    size_t n = stele_batch_count(b);
    for (size_t i = 0; i < n; i++) {
        const stele_event *e = stele_batch_event(b, i);
        char id[37];
        stele_id_format(e->id, e->flags, id);
        buf m = {0};
        w_message(&m, e, stele_batch_retry_count(b, i), f->base, f->qname);
        sse_event(c, "message", id, m.p, m.len);
        buf_free(&m);
    }
    c->srv->m.sse_events += n;
    stele_batch_free(b);
    /* A full read may have more behind it; an empty one waits for a wake. */
    return n == want && n ? SSE_MORE : SSE_WAIT;
}

static void push_free(void *ctx)
{
    push_feed *f = ctx;
    server *s = f->c->srv;
    groups_srv *g = s->groups;
    if (f->prev)
        f->prev->next = f->next;
    else if (g)
        g->feeds = f->next;
    if (f->next)
        f->next->prev = f->prev;
    /* The consumer is gone with its connection: its in-flight events go
     * to the others now. */
    stele_consumer_close(f->cons);
    free(f);
}

static const sse_source push_source = {"groups/subscribe", push_pump, NULL, push_free};

static void handle_push(conn *c, const target *t, const char *q, size_t qlen)
{
    uint64_t count = SSE_DEFAULT_COUNT;
    int given;
    if (query_num(q, qlen, "count", 1, PULL_MAX_COUNT, &count, &given)) {
        char msg[96];
        snprintf(msg, sizeof msg, "count must be a number from 1 to %d", PULL_MAX_COUNT);
        http_fail(c, 400, "INVALID_ARGUMENT", msg);
        return;
    }
    groups_srv *g = c->srv->groups;
    char name[256], dflt[48];
    snprintf(dflt, sizeof dflt, "push-%llu", ++g->feed_seq);
    if (consumer_param(c, q, qlen, name, sizeof name, dflt))
        return;
    char full[200];
    if (limits_subscriptions_full(c->srv, full, sizeof full)) {
        http_fail(c, 503, "TOO_MANY_SUBSCRIPTIONS", full);
        return;
    }
    stele_consumer *cons;
    int rc = stele_group_connect(c->srv->db, t->stream, t->gname, name, &cons);
    if (rc) {
        group_error(c, rc, rc == STELE_EEXISTS ? "CONSUMER" : "GROUP");
        return;
    }
    push_feed *f = calloc(1, sizeof *f);
    if (!f) {
        stele_consumer_close(cons);
        http_fail(c, 500, "INTERNAL", "out of memory");
        return;
    }
    f->c = c;
    f->cons = cons;
    f->count = (size_t)count;
    snprintf(f->base, sizeof f->base, "%s", t->base);
    qname_of(name, f->qname, sizeof f->qname);
    f->next = g->feeds;
    if (g->feeds)
        g->feeds->prev = f;
    g->feeds = f;
    sse_begin(c, &push_source, f);
}

/* ------------------------------------------------------------ parked */

static void handle_parked_read(conn *c, const target *t, const char *q, size_t qlen)
{
    uint64_t from = 0, limit = 100;
    int given;
    if (query_num(q, qlen, "from", 0, UINT64_MAX - 1, &from, &given) ||
        query_num(q, qlen, "limit", 1, 10000, &limit, &given)) {
        http_fail(c, 400, "INVALID_ARGUMENT",
                  "from must be a parked revision and limit a number from 1 to 10000");
        return;
    }
    stele_page *pg;
    int rc = stele_group_read_parked(c->srv->db, t->stream, t->gname, from, (size_t)limit, &pg);
    if (rc) {
        group_error(c, rc, "GROUP");
        return;
    }
    buf b = {0};
    w_lit(&b, "{\"messages\":[");
    size_t n = stele_page_count(pg);
    uint64_t next = from;
    for (size_t i = 0; i < n; i++) {
        const stele_event *l = stele_page_event(pg, i);
        if (i)
            w_lit(&b, ",");
        w_lit(&b, "{\"parkedRevision\":");
        json_w_u64(&b, l->revision);
        w_lit(&b, ",\"link\":");
        json_w_str(&b, l->data, l->data_len);
        w_lit(&b, ",\"parked\":");
        if (l->flags & STELE_META_JSON)
            json_w_raw(&b, l->metadata, l->metadata_len);
        else
            w_lit(&b, "null");
        w_lit(&b, ",\"parkedAt\":");
        json_w_time_rfc3339(&b, l->created_us);
        /* The original event, if it is still there: "{revision}@{stream}". */
        w_lit(&b, ",\"event\":");
        char link[300];
        size_t ln = l->data_len < sizeof link - 1 ? l->data_len : sizeof link - 1;
        memcpy(link, l->data, ln);
        link[ln] = 0;
        char *at = strchr(link, '@'), *end;
        stele_page *ev = NULL;
        if (at) {
            *at = 0;
            unsigned long long rev = strtoull(link, &end, 10);
            if (*end == 0 && stele_read_stream(c->srv->db, at + 1, rev, STELE_FORWARDS, 1, &ev))
                ev = NULL;
        }
        if (ev && stele_page_count(ev) == 1)
            route_event_json(&b, stele_page_event(ev, 0));
        else
            w_lit(&b, "null");
        stele_page_free(ev);
        w_lit(&b, "}");
        next = l->revision + 1;
    }
    w_lit(&b, "]");
    if (n == limit) {
        char link[BASE_MAX + 100];
        snprintf(link, sizeof link, ",\"next\":\"%s/parked?from=%llu&limit=%llu\"", t->base,
                 (unsigned long long)next, (unsigned long long)limit);
        w_lit(&b, link);
    }
    w_lit(&b, "}");
    stele_page_free(pg);
    http_json_done(c, 200, &b);
}

static void handle_parked_replay(conn *c, const target *t, const char *q, size_t qlen)
{
    uint64_t max = 0, count;
    int given;
    if (query_num(q, qlen, "max", 0, UINT64_MAX - 1, &max, &given)) {
        http_fail(c, 400, "INVALID_ARGUMENT", "max must be a non-negative number (0: all)");
        return;
    }
    int rc = stele_group_replay_parked(c->srv->db, t->stream, t->gname, max, &count);
    if (rc) {
        group_error(c, rc, "GROUP");
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof body, "{\"replaying\":%llu}\n", (unsigned long long)count);
    http_respond(c, 200, "application/json", body, (size_t)n, NULL);
    http_request_finish(c);
}

static void handle_parked_truncate(conn *c, const target *t, const char *q, size_t qlen)
{
    uint64_t before = STELE_END;
    int given;
    if (query_num(q, qlen, "before", 0, UINT64_MAX - 1, &before, &given)) {
        http_fail(c, 400, "INVALID_ARGUMENT", "before must be a parked revision");
        return;
    }
    int rc = stele_group_truncate_parked(c->srv->db, t->stream, t->gname, before);
    if (rc) {
        group_error(c, rc, "GROUP");
        return;
    }
    http_respond(c, 204, NULL, NULL, 0, NULL);
    http_request_finish(c);
}

/* ------------------------------------------------------------ routing */

/* What a group route did with the request. */
enum { ROUTE_DONE, ROUTE_METHOD, ROUTE_NONE };

/* /subscriptions/STREAM/GROUP itself: PUT creates, POST updates, DELETE,
 * GET its info. */
static int route_group_itself(conn *c, const target *t)
{
    int m = c->req.method;
    if (m == HTTP_PUT)
        handle_create_update(c, t, 0);
    else if (m == HTTP_POST)
        handle_create_update(c, t, 1);
    else if (m == HTTP_DELETE)
        handle_delete(c, t);
    else if (m == HTTP_GET)
        handle_info(c, t);
    else
        return ROUTE_METHOD;
    return ROUTE_DONE;
}

/* The group's sub-resources (seg[2] on): messages, ack, nack, subscribe,
 * parked, rewind and parked/replay. */
static int route_group_part(conn *c, const target *t, const char **seg, const size_t *len,
                            int nseg, const char *q, size_t qlen)
{
    int m = c->req.method;
#define SEG_IS(i, lit) (len[i] == sizeof(lit) - 1 && !memcmp(seg[i], lit, len[i]))
    if (nseg == 3 && SEG_IS(2, "messages")) {
        if (m != HTTP_GET)
            return ROUTE_METHOD;
        handle_pull(c, t, q, qlen);
    } else if ((nseg == 3 || nseg == 4) && (SEG_IS(2, "ack") || SEG_IS(2, "nack"))) {
        if (m != HTTP_POST)
            return ROUTE_METHOD;
        char id[64] = "";
        if (nseg == 4 && url_decode_name(seg[3], len[3], id, sizeof id))
            http_fail(c, 400, "INVALID_ARGUMENT", "malformed event id in the path");
        else
            handle_settle(c, t, nseg == 4 ? id : NULL, q, qlen, SEG_IS(2, "nack"));
    } else if (nseg == 3 && SEG_IS(2, "subscribe")) {
        if (m != HTTP_GET)
            return ROUTE_METHOD;
        handle_push(c, t, q, qlen);
    } else if (nseg == 3 && SEG_IS(2, "parked")) {
        if (m == HTTP_GET)
            handle_parked_read(c, t, q, qlen);
        else if (m == HTTP_DELETE)
            handle_parked_truncate(c, t, q, qlen);
        else
            return ROUTE_METHOD;
    } else if (nseg == 3 && SEG_IS(2, "rewind")) {
        if (m != HTTP_POST)
            return ROUTE_METHOD;
        route_group_rewind(c, t->stream, t->gname, q, qlen);
    } else if (nseg == 4 && SEG_IS(2, "parked") && SEG_IS(3, "replay")) {
        if (m != HTTP_POST)
            return ROUTE_METHOD;
        handle_parked_replay(c, t, q, qlen);
    } else {
        return ROUTE_NONE;
    }
#undef SEG_IS
    return ROUTE_DONE;
}

/* The path after /subscriptions/: STREAM lists its groups, STREAM/GROUP
 * and deeper go to the group. */
static int route_under(conn *c, const char *rest, size_t rlen, const char *q, size_t qlen)
{
    const char *seg[5];
    size_t len[5];
    int nseg = url_path_split(rest, rlen, seg, len, 5);
    if (nseg < 0) {
        http_fail(c, 404, "NOT_FOUND", "no such subscriptions route");
        return ROUTE_DONE;
    }
    target t;
    memset(&t, 0, sizeof t);
    if (url_decode_name(seg[0], len[0], t.sname, sizeof t.sname)) {
        http_fail(c, 400, "INVALID_ARGUMENT", "malformed stream name in the path");
        return ROUTE_DONE;
    }
    t.stream = strcmp(t.sname, "$all") ? t.sname : NULL;
    if (nseg == 1) {
        if (c->req.method != HTTP_GET)
            return ROUTE_METHOD;
        handle_list(c, t.sname);
        return ROUTE_DONE;
    }
    if (url_decode_name(seg[1], len[1], t.gname, sizeof t.gname)) {
        http_fail(c, 400, "INVALID_ARGUMENT", "malformed group name in the path");
        return ROUTE_DONE;
    }
    char es[800], eg[800];
    url_encode(t.sname, strlen(t.sname), es, sizeof es);
    url_encode(t.gname, strlen(t.gname), eg, sizeof eg);
    snprintf(t.base, sizeof t.base, "/subscriptions/%s/%s", es, eg);
    if (nseg == 2)
        return route_group_itself(c, &t);
    return route_group_part(c, &t, seg, len, nseg, q, qlen);
}

int route_groups(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    static const char pre[] = "/subscriptions";
    size_t pl = sizeof pre - 1;
    if (plen < pl || memcmp(path, pre, pl) || (plen > pl && path[pl] != '/'))
        return 0;
    int m = c->req.method;
    int r;
    if (plen == pl || plen == pl + 1) {
        r = m == HTTP_GET ? ROUTE_DONE : ROUTE_METHOD;
        if (r == ROUTE_DONE)
            handle_list(c, NULL);
    } else {
        r = route_under(c, path + pl + 1, plen - pl - 1, q, qlen);
    }
    char msg[300];
    if (r == ROUTE_NONE) {
        snprintf(msg, sizeof msg, "no route for %s %.*s", http_method_str(m),
                 (int)(plen > 200 ? 200 : plen), path);
        http_fail(c, 404, "NOT_FOUND", msg);
    } else if (r == ROUTE_METHOD) {
        snprintf(msg, sizeof msg, "method %s is not allowed on %.*s", http_method_str(m),
                 (int)(plen > 200 ? 200 : plen), path);
        http_fail(c, 405, "METHOD_NOT_ALLOWED", msg);
    }
    return 1;
}

/* ------------------------------------------------------------ the loop */

int groups_srv_open(server *s)
{
    s->group_fd = -1;
    s->groups = calloc(1, sizeof *s->groups);
    if (!s->groups) {
        fprintf(stderr, "stele serve: out of memory\n");
        return -1;
    }
    if (stele_group_watch(s->db, &s->group_fd)) {
        fprintf(stderr, "stele serve: cannot watch the consumer groups: %s\n", stele_errmsg());
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->group_fd};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->group_fd, &ev) != 0) {
        fprintf(stderr, "stele serve: epoll_ctl failed for the group watch\n");
        return -1;
    }
    return 0;
}

void groups_on_watch(server *s)
{
    uint64_t v;
    ssize_t r = read(s->group_fd, &v, sizeof v);
    (void)r;
    for (push_feed *f = s->groups->feeds; f; f = f->next)
        sse_wake(f->c);
    retry_waiting(s, 0);
}

void groups_tick(server *s, int64_t now)
{
    groups_srv *g = s->groups;
    if (!g)
        return;
    if (g->waiting)
        retry_waiting(s, 1);
    if (now - g->last_sweep_ms < 1000)
        return;
    g->last_sweep_ms = now;
    /* Pull consumers that went quiet: their events go to others. */
    for (pull_consumer *pc = g->pulls, *nx; pc; pc = nx) {
        nx = pc->next;
        if (!pc->waiting && now - pc->last_used_ms > pc->idle_ms)
            pull_free(g, pc);
    }
}

void groups_conn_gone(conn *c)
{
    pull_wait *w = c->gwait;
    if (w)
        wait_remove(c->srv->groups, w);
}

void groups_srv_close(server *s)
{
    groups_srv *g = s->groups;
    if (!g)
        return;
    while (g->waiting)
        wait_remove(g, g->waiting);
    while (g->pulls)
        pull_free(g, g->pulls);
    /* Push feeds were freed with their connections (sse.c) before this. */
    if (s->db && s->group_fd >= 0)
        stele_group_unwatch(s->db, s->group_fd);
    s->group_fd = -1;
    free(g);
    s->groups = NULL;
}
