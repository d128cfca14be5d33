/*
 * routes_rules.c - rules over HTTP (docs/rules.md), on top of libstele's
 * rules API, and the rewind of consumer groups.
 *
 *   GET    /rules                              every rule with its counters
 *   PUT    /rules/{name}                       create or replace (JSON definition)
 *   GET    /rules/{name}                       definition and live counters
 *   DELETE /rules/{name}                       delete (checkpoint, dead letters)
 *   POST   /rules/{name}/pause   .../resume    stop / restart delivery
 *   GET    /rules/{name}/dead-letters?from=&limit=
 *   POST   /rules/{name}/dead-letters/redrive?max=
 *   DELETE /rules/{name}/dead-letters?before=
 *   POST   /rules/{name}/replays               {"from": T|P, "to": T|P}
 *   GET    /rules/{name}/replays[/{id}]        progress
 *   DELETE /rules/{name}/replays/{id}          cancel
 *   POST   /subscriptions/{stream}/{group}/rewind?to=P | ?time=T
 *
 * Changes (every method but GET) are accepted from loopback peers only,
 * until the server has authentication: a rule makes the server POST to
 * any URL. T is an RFC 3339 time, P a position (a JSON number or digits). Every
 * call answers on the loop thread; changes wait for their durable write,
 * like the consumer groups' administrative calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_doc.h"
#include "server_int.h"
#include "urlcode.h"

#define RULE_BODY_MAX (256u << 10)

static void rule_error(conn *c, int rc, const char *what)
{
    char code[48];
    if (rc == STELE_ENOTFOUND) {
        snprintf(code, sizeof code, "%s_NOT_FOUND", what);
        http_error_code(c, code, stele_errmsg());
        conn_request_done(c);
    } else {
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
    }
}

static void w_lit(buf *b, const char *s) { buf_append(b, s, strlen(s)); }

/* The answer to a change without a body: 204, or the error (`what` as in
 * rule_error). */
static void respond_empty(conn *c, int rc, const char *what)
{
    if (rc) {
        rule_error(c, rc, what);
        return;
    }
    http_respond(c, 204, NULL, NULL, 0, NULL);
    http_request_finish(c);
}

/* 200 with {"key": v}. */
static void respond_u64(conn *c, const char *key, uint64_t v)
{
    buf b = {0};
    w_lit(&b, "{");
    json_w_str(&b, key, strlen(key));
    w_lit(&b, ":");
    json_w_u64(&b, v);
    w_lit(&b, "}");
    http_json_done(c, 200, &b);
}

static void w_u64(buf *b, const char *key, uint64_t v)
{
    char t[96];
    snprintf(t, sizeof t, ",\"%s\":%llu", key, (unsigned long long)v);
    w_lit(b, t);
}

static void w_info(buf *b, const stele_rule_info *in)
{
    w_lit(b, "{\"name\":");
    json_w_str(b, in->name, strlen(in->name));
    w_lit(b, in->enabled ? ",\"enabled\":true" : ",\"enabled\":false");
    w_lit(b, ",\"definition\":");
    w_lit(b, in->definition);
    w_lit(b, ",\"deadLetterStream\":");
    json_w_str(b, in->dead_letter_stream, strlen(in->dead_letter_stream));
    w_lit(b, ",\"stats\":{\"matched\":");
    json_w_u64(b, in->matched);
    w_u64(b, "delivered", in->delivered);
    w_u64(b, "retries", in->retries);
    w_u64(b, "deadLettered", in->dead_lettered);
    w_u64(b, "deadLetters", in->dead_letters);
    w_u64(b, "inFlight", in->in_flight);
    w_u64(b, "pending", in->pending);
    w_u64(b, "checkpoint", in->checkpoint);
    w_u64(b, "lagEvents", in->lag_events);
    char t[64];
    snprintf(t, sizeof t, ",\"lagSeconds\":%.3f", in->lag_seconds);
    w_lit(b, t);
    w_lit(b, ",\"failures\":{");
    for (int k = 0; k < STELE_FAIL_KINDS; k++) {
        snprintf(t, sizeof t, "%s\"%s\":%llu", k ? "," : "", stele_rule_failure_name(k),
                 (unsigned long long)in->failures[k]);
        w_lit(b, t);
    }
    w_lit(b, "}},\"lastError\":");
    json_w_str(b, in->last_error, strlen(in->last_error));
    w_lit(b, "}");
}

static void respond_rule(conn *c, int status, const char *name)
{
    stele_rule_info *in = NULL;
    int rc = stele_rule_get(c->srv->db, name, &in);
    if (rc) {
        rule_error(c, rc, "RULE");
        return;
    }
    buf b = {0};
    w_info(&b, in);
    stele_rule_info_free(in);
    http_json_done(c, status, &b);
}

static void handle_list(conn *c)
{
    stele_rule_info *v = NULL;
    size_t n = 0;
    int rc = stele_rule_list(c->srv->db, &v, &n);
    if (rc) {
        rule_error(c, rc, "RULE");
        return;
    }
    buf b = {0};
    w_lit(&b, "{\"rules\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            w_lit(&b, ",");
        w_info(&b, &v[i]);
    }
    w_lit(&b, "]}");
    stele_rule_info_free(v);
    http_json_done(c, 200, &b);
}

static void handle_put(conn *c, const char *name)
{
    request *r = &c->req;
    if (r->body.len > RULE_BODY_MAX) {
        http_fail(c, 413, "TOO_LARGE", "a rule definition takes at most 256 KiB");
        return;
    }
    int created = 0;
    int rc = stele_rule_put(c->srv->db, name, r->body.len ? (const char *)r->body.p : "",
                            r->body.len, &created);
    if (rc) {
        rule_error(c, rc, "RULE");
        return;
    }
    respond_rule(c, created ? 201 : 200, name);
}

static int query_u64(const char *q, size_t qlen, const char *key, uint64_t *v, int *given)
{
    char s[32];
    int r = query_get(q, qlen, key, s, sizeof s);
    *given = r > 0;
    if (r <= 0)
        return r;
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    unsigned long long x = strtoull(s, &end, 10);
    if (*end)
        return -1;
    *v = x;
    return 0;
}

static void handle_dead_read(conn *c, const char *name, const char *q, size_t qlen)
{
    uint64_t from = 0, limit = 100;
    int g;
    if (query_u64(q, qlen, "from", &from, &g) || query_u64(q, qlen, "limit", &limit, &g) ||
        limit < 1 || limit > 10000) {
        http_fail(c, 400, "INVALID_ARGUMENT", "from must be a dead-letter revision and limit 1..10000");
        return;
    }
    stele_page *pg;
    int rc = stele_rule_read_dead(c->srv->db, name, from, (size_t)limit, &pg);
    if (rc) {
        rule_error(c, rc, "RULE");
        return;
    }
    buf b = {0};
    w_lit(&b, "{\"deadLetters\":[");
    size_t n = stele_page_count(pg);
    for (size_t i = 0; i < n; i++) {
        const stele_event *l = stele_page_event(pg, i);
        w_lit(&b, i ? ",{\"revision\":" : "{\"revision\":");
        json_w_u64(&b, l->revision);
        w_lit(&b, ",\"link\":");
        json_w_str(&b, l->data, l->data_len);
        w_lit(&b, ",\"deadLettered\":");
        if (l->flags & STELE_META_JSON)
            json_w_raw(&b, l->metadata, l->metadata_len);
        else
            w_lit(&b, "null");
        w_lit(&b, ",\"at\":");
        json_w_time_rfc3339(&b, l->created_us);
        w_lit(&b, "}");
    }
    w_lit(&b, "]}");
    stele_page_free(pg);
    http_json_done(c, 200, &b);
}

static void handle_redrive(conn *c, const char *name, const char *q, size_t qlen)
{
    uint64_t max = 0, count = 0;
    int g;
    if (query_u64(q, qlen, "max", &max, &g)) {
        http_fail(c, 400, "INVALID_ARGUMENT", "max must be a number (0: all)");
        return;
    }
    int rc = stele_rule_redrive(c->srv->db, name, max, &count);
    if (rc) {
        rule_error(c, rc, "RULE");
        return;
    }
    respond_u64(c, "redriving", count);
}

static void handle_dead_truncate(conn *c, const char *name, const char *q, size_t qlen)
{
    uint64_t before = STELE_END;
    int g;
    if (query_u64(q, qlen, "before", &before, &g)) {
        http_fail(c, 400, "INVALID_ARGUMENT", "before must be a dead-letter revision");
        return;
    }
    respond_empty(c, stele_rule_truncate_dead(c->srv->db, name, before), "RULE");
}

/* One end of a window: a number (position) or a string (RFC 3339). 1 if
 * given, 0 if absent, -1 bad (err set). *kind: 'p' or 't'. */
static int window_end(const json_doc *d, const char *key, int *kind, uint64_t *pos, int64_t *us,
                      char *err, size_t errlen)
{
    int i = json_doc_get(d, 0, key);
    if (i < 0 || json_doc_type(d, i) == JD_NULL)
        return 0;
    if (json_doc_type(d, i) == JD_NUMBER) {
        if (json_doc_u64(d, i, pos)) {
            snprintf(err, errlen, "%s: a position must be a whole number >= 0", key);
            return -1;
        }
        *kind = 'p';
        return 1;
    }
    if (json_doc_type(d, i) == JD_STRING) {
        char *s = json_doc_str(d, i);
        int rc = s ? stele_time_parse(s, 0, us) : -1;
        if (rc)
            snprintf(err, errlen, "%s: not an RFC 3339 time: %s", key, s ? stele_errmsg() : "");
        free(s);
        if (rc)
            return -1;
        *kind = 't';
        return 1;
    }
    snprintf(err, errlen, "%s: must be a position (number) or an RFC 3339 time (string)", key);
    return -1;
}

static void w_replay(buf *b, const stele_replay_info *in)
{
    char t[64];
    w_lit(b, "{\"id\":");
    json_w_u64(b, in->id);
    w_lit(b, ",\"state\":");
    json_w_str(b, in->state, strlen(in->state));
    if (in->window.by_time) {
        w_lit(b, ",\"from\":");
        json_w_time_rfc3339(b, in->window.from_us);
        w_lit(b, ",\"to\":");
        json_w_time_rfc3339(b, in->window.to_us);
    } else {
        w_u64(b, "from", in->window.from_pos);
        w_u64(b, "to", in->window.to_pos);
    }
    w_u64(b, "nextPosition", in->next_position);
    w_u64(b, "scanned", in->scanned);
    w_u64(b, "matched", in->matched);
    w_u64(b, "delivered", in->delivered);
    w_u64(b, "failed", in->failed);
    w_lit(b, ",\"started\":");
    json_w_time_rfc3339(b, in->started_us);
    w_lit(b, ",\"finished\":");
    if (in->finished_us)
        json_w_time_rfc3339(b, in->finished_us);
    else
        w_lit(b, "null");
    w_lit(b, ",\"lastError\":");
    json_w_str(b, in->last_error, strlen(in->last_error));
    (void)t;
    w_lit(b, "}");
}

static void handle_replays(conn *c, const char *name, uint64_t id, int one)
{
    stele_replay_info *v = NULL;
    size_t n = 0;
    int rc = stele_rule_replays(c->srv->db, name, &v, &n);
    if (rc) {
        rule_error(c, rc, "RULE");
        return;
    }
    buf b = {0};
    int found = 0;
    if (!one)
        w_lit(&b, "{\"replays\":[");
    for (size_t i = 0; i < n; i++) {
        if (one && v[i].id != id)
            continue;
        if (found++ && !one)
            w_lit(&b, ",");
        w_replay(&b, &v[i]);
    }
    if (!one)
        w_lit(&b, "]}");
    stele_replay_info_free(v);
    if (one && !found) {
        buf_free(&b);
        http_fail(c, 404, "REPLAY_NOT_FOUND", "no such replay");
        return;
    }
    http_json_done(c, 200, &b);
}

static void handle_replay_start(conn *c, const char *name)
{
    request *r = &c->req;
    json_doc *d = NULL;
    char err[256] = "";
    if (r->body.len > 4096 || json_doc_parse(r->body.len ? (const char *)r->body.p : "{}",
                                             r->body.len ? r->body.len : 2, &d, err, sizeof err) ||
        json_doc_type(d, 0) != JD_OBJECT) {
        json_doc_free(d);
        http_fail(c, 400, "INVALID_ARGUMENT",
                  err[0] ? err : "the body must be a JSON object {\"from\": ..., \"to\": ...}");
        return;
    }
    for (int k = 0; k < json_doc_size(d, 0); k++) {
        int key, val;
        json_doc_member(d, 0, k, &key, &val);
        if (!json_doc_eq(d, key, "from") && !json_doc_eq(d, key, "to")) {
            json_doc_free(d);
            http_fail(c, 400, "INVALID_ARGUMENT", "unknown member in the replay body (from, to)");
            return;
        }
    }
    stele_replay_window w = {.to_pos = STELE_END};
    int kf = 0, kt = 0;
    int hf = window_end(d, "from", &kf, &w.from_pos, &w.from_us, err, sizeof err);
    int ht = hf < 0 ? 0 : window_end(d, "to", &kt, &w.to_pos, &w.to_us, err, sizeof err);
    json_doc_free(d);
    if (hf < 0 || ht < 0) {
        http_fail(c, 400, "INVALID_ARGUMENT", err);
        return;
    }
    if (hf == 0) {
        http_fail(c, 400, "INVALID_ARGUMENT", "from: required (a position or an RFC 3339 time)");
        return;
    }
    if (ht && kf != kt) {
        http_fail(c, 400, "INVALID_ARGUMENT", "from and to must both be positions or both be times");
        return;
    }
    w.by_time = kf == 't';
    w.has_to = ht;
    uint64_t id;
    int rc = stele_rule_replay_start(c->srv->db, name, &w, &id);
    if (rc) {
        rule_error(c, rc, "RULE");
        return;
    }
    buf b = {0};
    w_lit(&b, "{\"id\":");
    json_w_u64(&b, id);
    char link[300];
    snprintf(link, sizeof link, ",\"progress\":\"/rules/%s/replays/%llu\"}", name,
             (unsigned long long)id);
    w_lit(&b, link);
    http_json_done(c, 202, &b);
}

/* What a rule route did with the request. */
enum { ROUTE_DONE, ROUTE_METHOD, ROUTE_NONE };

/* /rules/NAME: PUT, GET, DELETE */
static int route_rule(conn *c, const char *name)
{
    int m = c->req.method;
    if (m == HTTP_PUT)
        handle_put(c, name);
    else if (m == HTTP_GET)
        respond_rule(c, 200, name);
    else if (m == HTTP_DELETE)
        respond_empty(c, stele_rule_delete(c->srv->db, name), "RULE");
    else
        return ROUTE_METHOD;
    return ROUTE_DONE;
}

/* POST /rules/NAME/pause or /resume */
static void handle_pause(conn *c, const char *name, int resume)
{
    int rc = stele_rule_set_enabled(c->srv->db, name, resume);
    if (rc)
        return rule_error(c, rc, "RULE");
    respond_rule(c, 200, name);
}

/* /rules/NAME/replays/ID: GET reads it, DELETE cancels it. */
static int route_replay(conn *c, const char *name, const char *seg, size_t len)
{
    char idt[24];
    size_t il;
    char *e2;
    unsigned long long id = 0;
    if (len == 0 || len >= sizeof idt || url_decode(seg, len, idt, sizeof idt, &il) ||
        (id = strtoull(idt, &e2, 10), *e2) || idt[0] < '0' || idt[0] > '9') {
        http_fail(c, 404, "REPLAY_NOT_FOUND", "replay ids are numbers");
        return ROUTE_DONE;
    }
    int m = c->req.method;
    if (m == HTTP_GET)
        handle_replays(c, name, id, 1);
    else if (m == HTTP_DELETE)
        respond_empty(c, stele_rule_replay_cancel(c->srv->db, name, id), "REPLAY");
    else
        return ROUTE_METHOD;
    return ROUTE_DONE;
}

/* The rule's sub-resources (seg[1] on): pause, resume, dead-letters,
 * dead-letters/redrive, replays, replays/ID. */
static int route_rule_part(conn *c, const char *name, const char **seg, const size_t *len,
                           int nseg, const char *q, size_t qlen)
{
    int m = c->req.method;
#define SEG_IS(i, lit) (len[i] == sizeof(lit) - 1 && !memcmp(seg[i], lit, len[i]))
    if (nseg == 2 && (SEG_IS(1, "pause") || SEG_IS(1, "resume"))) {
        if (m != HTTP_POST)
            return ROUTE_METHOD;
        handle_pause(c, name, SEG_IS(1, "resume"));
    } else if (nseg == 2 && SEG_IS(1, "dead-letters")) {
        if (m == HTTP_GET)
            handle_dead_read(c, name, q, qlen);
        else if (m == HTTP_DELETE)
            handle_dead_truncate(c, name, q, qlen);
        else
            return ROUTE_METHOD;
    } else if (nseg == 3 && SEG_IS(1, "dead-letters") && SEG_IS(2, "redrive")) {
        if (m != HTTP_POST)
            return ROUTE_METHOD;
        handle_redrive(c, name, q, qlen);
    } else if (nseg == 2 && SEG_IS(1, "replays")) {
        if (m == HTTP_POST)
            handle_replay_start(c, name);
        else if (m == HTTP_GET)
            handle_replays(c, name, 0, 0);
        else
            return ROUTE_METHOD;
    } else if (nseg == 3 && SEG_IS(1, "replays")) {
        return route_replay(c, name, seg[2], len[2]);
    } else {
        return ROUTE_NONE;
    }
#undef SEG_IS
    return ROUTE_DONE;
}

/* A rule makes the server send requests to any URL it names: until the
 * server has authentication, changing rules (anything but GET) is
 * accepted only from a loopback peer, like the other operations that
 * reconfigure the server (guard.c). 0, or -1 after a 403. */
static int change_allowed(conn *c)
{
    char addr[64], msg[512];
    if (c->req.method == HTTP_GET || guard_peer_is_loopback(c, addr, sizeof addr))
        return 0;
    guard_loopback_message("changing rules", addr, msg, sizeof msg);
    http_fail(c, 403, "PERMISSION_DENIED", msg);
    return -1;
}

int route_rules(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    static const char pre[] = "/rules";
    size_t pl = sizeof pre - 1;
    if (plen < pl || memcmp(path, pre, pl) || (plen > pl && path[pl] != '/'))
        return 0;
    int r;
    if (plen <= pl + 1) {
        r = c->req.method == HTTP_GET ? ROUTE_DONE : ROUTE_METHOD;
        if (r == ROUTE_DONE)
            handle_list(c);
    } else {
        const char *seg[4];
        size_t len[4];
        int nseg = url_path_split(path + pl + 1, plen - pl - 1, seg, len, 4);
        char name[STELE_RULE_NAME_MAX + 1];
        if (nseg < 0 || url_decode_name(seg[0], len[0], name, sizeof name)) {
            http_fail(c, 404, "NOT_FOUND", "no such rules route (rule names are 1..100 of A-Z a-z 0-9 . _ -)");
            return 1;
        }
        if (change_allowed(c))
            return 1;
        r = nseg == 1 ? route_rule(c, name) : route_rule_part(c, name, seg, len, nseg, q, qlen);
    }
    if (r == ROUTE_NONE)
        http_fail(c, 404, "NOT_FOUND", "no such rules route");
    else if (r == ROUTE_METHOD)
        http_fail(c, 405, "METHOD_NOT_ALLOWED", "method not allowed here");
    return 1;
}

void route_group_rewind(conn *c, const char *stream, const char *group, const char *q,
                        size_t qlen)
{
    char tv[64];
    uint64_t to = 0;
    int g, rc;
    int ht = query_get(q, qlen, "time", tv, sizeof tv);
    if (ht < 0 || query_u64(q, qlen, "to", &to, &g) || (ht > 0) == (g > 0)) {
        http_fail(c, 400, "INVALID_ARGUMENT",
                  "give ?to=POSITION (a revision for a stream group) or ?time=RFC3339, one of them");
        return;
    }
    if (ht > 0) {
        int64_t us;
        if (stele_time_parse(tv, 0, &us)) {
            char msg[300];
            snprintf(msg, sizeof msg, "time: %s", stele_errmsg());
            http_fail(c, 400, "INVALID_ARGUMENT", msg);
            return;
        }
        rc = stele_group_rewind_time(c->srv->db, stream, group, us, &to);
    } else {
        rc = stele_group_rewind(c->srv->db, stream, group, to);
    }
    if (rc) {
        rule_error(c, rc, "GROUP");
        return;
    }
    respond_u64(c, "rewoundTo", to);
}
