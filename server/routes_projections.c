/*
 * routes_projections.c - projections over HTTP (docs/projections.md,
 * docs/http-api.md "Projections"):
 *
 *   GET    /projections                      every projection's status
 *   POST   /projections/{name}               create; the body is the query
 *   POST   /projections/transient        (no name) run the body's query once
 *          over the store as it is and answer its result, keeping nothing
 *   POST   /projections/continuous|onetime|transient?name=NAME   the same,
 *          KurrentDB's form (the official clients use it for
 *          trackEmittedStreams on old servers)
 *          ?mode=continuous|onetime|inline&emit=true&enabled=false
 *          &memoryLimit=BYTES&timeoutMs=N&cachePartitions=N&maxStateSize=BYTES
 *          &snapshotEvery=N
 *   GET    /projections/{name}               status, progress and counters
 *   GET    /projections/{name}/query         the query text
 *   PUT    /projections/{name}/query?emit=   replace the query
 *   POST   /projections/{name}/enable | /disable | /reset
 *   DELETE /projections/{name}?deleteState=true&deleteEmittedStreams=true
 *   GET    /projections/{name}/state?partition=KEY    committed state
 *   GET    /projections/{name}/result?partition=KEY   result (transformBy)
 *   GET    /projections/{name}/partitions?after=&limit=&field=&value=
 *          the read model: partitions in key order with their states,
 *          optionally only those whose state's top-level `field` equals
 *          the JSON `value`
 *   GET    /streams/{stream}/state?projection=NAME[&to=REV|&asOf=TIME]
 *          the stream's state reconstructed with the projection's
 *          handlers, from its newest snapshot at or before that point
 *
 * Each call is answered on the loop: creating compiles the query (ms),
 * disabling, updating and resetting wait for the runner's current batch
 * to commit (well under a second), reset also soft-deletes what the
 * projection emitted. The query body is the JavaScript text itself
 * (any content type).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "server_int.h"
#include "urlcode.h"

static void bad(conn *c, const char *msg) { http_fail(c, 400, "INVALID_ARGUMENT", msg); }

static void lib_error(conn *c, int rc)
{
    const char *m = stele_errmsg();
    if (rc == STELE_ENOTFOUND)
        http_error_code(c, "PROJECTION_NOT_FOUND", m);
    else if (rc == STELE_EEXISTS)
        http_error_code(c, "PROJECTION_EXISTS", m);
    else
        http_stele_error(c, rc, m, NULL); /* queues the answer only */
    conn_request_done(c);
}

static void respond_json(conn *c, int status, buf *b)
{
    http_respond(c, status, "application/json", b->p, b->len, NULL);
    buf_free(b);
    conn_request_done(c);
}

/* A boolean query parameter: 1/0, or -1 (absent), -2 after a 400. */
static int bool_param(conn *c, const char *q, size_t qlen, const char *name)
{
    char v[16];
    int r = query_get(q, qlen, name, v, sizeof v);
    if (r == 0)
        return -1;
    if (r > 0 && (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1") ||
                  !strcmp(v, "True")))
        return 1;
    if (r > 0 && (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0") ||
                  !strcmp(v, "False")))
        return 0;
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be true or false", name);
    bad(c, msg);
    return -2;
}

/* A number query parameter: 1 found, 0 absent, -1 after a 400. */
static int num_param(conn *c, const char *q, size_t qlen, const char *name, uint64_t *out)
{
    char v[32];
    int r = query_get(q, qlen, name, v, sizeof v);
    if (r == 0)
        return 0;
    char *end;
    unsigned long long n = r > 0 && v[0] >= '0' && v[0] <= '9' ? strtoull(v, &end, 10) : 0;
    if (r < 0 || v[0] < '0' || v[0] > '9' || *end || strlen(v) > 19) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s must be a non-negative number", name);
        bad(c, msg);
        return -1;
    }
    *out = n;
    return 1;
}

static void w(buf *b, const char *s) { json_w_raw(b, s, strlen(s)); }

static void w_kv_u64(buf *b, const char *k, uint64_t v)
{
    char t[96];
    snprintf(t, sizeof t, ",\"%s\":", k);
    w(b, t);
    json_w_u64(b, v);
}

void projection_info_json(buf *b, const stele_projection_info *in, int with_query)
{
    w(b, "{\"name\":");
    json_w_str(b, in->name, strlen(in->name));
    w(b, ",\"mode\":");
    w(b, in->mode == STELE_PROJ_ONE_TIME ? "\"OneTime\""
         : in->mode == STELE_PROJ_INLINE ? "\"Inline\"" : "\"Continuous\"");
    w(b, ",\"status\":");
    json_w_str(b, in->status, strlen(in->status));
    w(b, in->enabled ? ",\"enabled\":true" : ",\"enabled\":false");
    w(b, in->emit_enabled ? ",\"emitEnabled\":true" : ",\"emitEnabled\":false");
    if (in->fault[0]) {
        w(b, ",\"fault\":");
        json_w_str(b, in->fault, strlen(in->fault));
        if (in->fault_position != STELE_NONE)
            w_kv_u64(b, "faultPosition", in->fault_position);
    }
    w_kv_u64(b, "position", in->position);
    w_kv_u64(b, "head", in->head);
    w_kv_u64(b, "lag", in->lag);
    char t[64];
    snprintf(t, sizeof t, ",\"progress\":%.1f",
             in->head ? 100.0 * (double)(in->head - in->lag) / (double)in->head : 100.0);
    w(b, t);
    w_kv_u64(b, "eventsRead", in->events_read);
    w_kv_u64(b, "eventsProcessed", in->events_processed);
    w_kv_u64(b, "commits", in->commits);
    w_kv_u64(b, "handlerMicroseconds", in->handler_ns / 1000);
    w_kv_u64(b, "stateBytesWritten", in->state_bytes);
    w_kv_u64(b, "partitionsCached", in->partitions_cached);
    w_kv_u64(b, "heapBytes", in->heap_bytes);
    w_kv_u64(b, "epoch", in->epoch);
    w_kv_u64(b, "memoryLimit", in->settings.memory_limit);
    w_kv_u64(b, "timeoutMs", in->settings.timeout_ms);
    w_kv_u64(b, "cachePartitions", in->settings.cache_partitions);
    w_kv_u64(b, "maxStateSize", in->settings.max_state_size);
    w_kv_u64(b, "snapshotEvery", in->settings.snapshot_every);
    if (in->definition[0]) {
        w(b, ",\"definition\":");
        w(b, in->definition);
    }
    if (with_query) {
        w(b, ",\"query\":");
        json_w_str(b, in->query, strlen(in->query));
    }
    w(b, "}");
}

static void list(conn *c)
{
    stele_projection_info *all;
    size_t n;
    int rc = stele_projection_list(c->srv->db, &all, &n);
    if (rc) {
        lib_error(c, rc);
        return;
    }
    buf b = {0};
    w(&b, "{\"projections\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            w(&b, ",");
        projection_info_json(&b, &all[i], 0);
    }
    w(&b, "]}\n");
    stele_projection_info_free(all);
    respond_json(c, 200, &b);
}

static void get_one(conn *c, const char *name, int query_only, int status)
{
    stele_projection_info *in;
    int rc = stele_projection_get(c->srv->db, name, &in);
    if (rc) {
        lib_error(c, rc);
        return;
    }
    if (query_only) {
        http_respond(c, 200, "application/javascript", in->query, strlen(in->query), NULL);
        stele_projection_info_free(in);
        conn_request_done(c);
        return;
    }
    buf b = {0};
    projection_info_json(&b, in, 1);
    w(&b, "\n");
    stele_projection_info_free(in);
    respond_json(c, status, &b);
}

/* ?memoryLimit= and ?timeoutMs= into s (both kinds of run take them): 0,
 * or -1 after a 400. */
static int limit_params(conn *c, const char *q, size_t qlen, stele_projection_settings *s)
{
    uint64_t v;
    int r;
    if ((r = num_param(c, q, qlen, "memoryLimit", &v)) < 0)
        return -1;
    if (r)
        s->memory_limit = v;
    if ((r = num_param(c, q, qlen, "timeoutMs", &v)) < 0)
        return -1;
    if (r) {
        if (v == 0 || v > 600000) {
            bad(c, "timeoutMs must be 1 .. 600000");
            return -1;
        }
        s->timeout_ms = (uint32_t)v;
    }
    return 0;
}

static void create(conn *c, const char *name, const char *q, size_t qlen, int force_mode)
{
    stele_projection_settings s;
    memset(&s, 0, sizeof s);
    s.query = (const char *)c->req.body.p;
    s.query_len = c->req.body.len;
    s.enabled = 1;
    char mode[32];
    int r = query_get(q, qlen, "mode", mode, sizeof mode);
    if (r > 0 && (!strcmp(mode, "onetime") || !strcmp(mode, "one-time") || !strcmp(mode, "OneTime")))
        s.mode = STELE_PROJ_ONE_TIME;
    else if (r > 0 && (!strcmp(mode, "inline") || !strcmp(mode, "Inline")))
        s.mode = STELE_PROJ_INLINE;
    else if (r != 0 && strcmp(mode, "continuous") && strcmp(mode, "Continuous")) {
        bad(c, "mode must be continuous, onetime or inline");
        return;
    }
    if (force_mode >= 0)
        s.mode = force_mode;
    int e = bool_param(c, q, qlen, "emit");
    if (e == -2)
        return;
    s.emit_enabled = e == 1;
    int en = bool_param(c, q, qlen, "enabled");
    if (en == -2)
        return;
    if (en == 0)
        s.enabled = 0;
    uint64_t v;
    if (limit_params(c, q, qlen, &s))
        return;
    if ((r = num_param(c, q, qlen, "cachePartitions", &v)) < 0)
        return;
    if (r) {
        if (v == 0 || v > 10000000) {
            bad(c, "cachePartitions must be 1 .. 10000000");
            return;
        }
        s.cache_partitions = (uint32_t)v;
    }
    if ((r = num_param(c, q, qlen, "maxStateSize", &v)) < 0)
        return;
    if (r)
        s.max_state_size = v;
    if ((r = num_param(c, q, qlen, "snapshotEvery", &v)) < 0)
        return;
    if (r) {
        if (v > 1000000) {
            bad(c, "snapshotEvery must be 0 .. 1000000");
            return;
        }
        s.snapshot_every = (uint32_t)v;
    }
    int rc = stele_projection_create(c->srv->db, name, &s);
    if (rc) {
        lib_error(c, rc);
        return;
    }
    get_one(c, name, 0, 201);
}

static void state(conn *c, const char *name, const char *q, size_t qlen, int result)
{
    char part[1024] = "";
    int r = query_get(q, qlen, "partition", part, sizeof part);
    if (r < 0) {
        bad(c, "partition: malformed or longer than 1023 bytes");
        return;
    }
    char *json = NULL;
    size_t len = 0;
    int rc = stele_projection_state(c->srv->db, name, part, result, &json, &len);
    if (rc) {
        lib_error(c, rc);
        return;
    }
    if (!json) {
        /* no state yet: KurrentDB answers an empty body; we answer null */
        http_respond(c, 200, "application/json", "null\n", 5, NULL);
        conn_request_done(c);
        return;
    }
    buf b = {0};
    json_w_raw(&b, json, len);
    w(&b, "\n");
    stele_free(json);
    respond_json(c, 200, &b);
}

static void command(conn *c, const char *name, const char *cmd, const char *q, size_t qlen)
{
    int rc;
    stele_db *db = c->srv->db;
    if (!strcmp(cmd, "enable"))
        rc = stele_projection_enable(db, name);
    else if (!strcmp(cmd, "disable"))
        rc = stele_projection_disable(db, name);
    else if (!strcmp(cmd, "reset"))
        rc = stele_projection_reset(db, name);
    else if (!strcmp(cmd, "query")) {
        int e = bool_param(c, q, qlen, "emit");
        if (e == -2)
            return;
        rc = stele_projection_update(db, name, (const char *)c->req.body.p, c->req.body.len,
                                     e < 0 ? -1 : e);
    } else
        rc = STELE_EINTERNAL;
    if (rc) {
        lib_error(c, rc);
        return;
    }
    get_one(c, name, 0, 200);
}

static void del(conn *c, const char *name, const char *q, size_t qlen)
{
    int ds = bool_param(c, q, qlen, "deleteState");
    if (ds == -2)
        return;
    int de = bool_param(c, q, qlen, "deleteEmittedStreams");
    if (de == -2)
        return;
    unsigned flags = (ds == 1 ? STELE_PROJ_DELETE_STATE : 0) | (de == 1 ? STELE_PROJ_DELETE_EMITTED : 0);
    int rc = stele_projection_delete(c->srv->db, name, flags);
    if (rc) {
        lib_error(c, rc);
        return;
    }
    static const char b[] = "{\"deleted\":true}\n";
    http_respond(c, 200, "application/json", b, sizeof b - 1, NULL);
    conn_request_done(c);
}

static void partitions(conn *c, const char *name, const char *q, size_t qlen);

/* POST /projections/transient (no name): run the body's query over the
 * store as it is now and answer its result; nothing is kept. */
static void transient(conn *c, const char *q, size_t qlen)
{
    stele_projection_settings lim;
    memset(&lim, 0, sizeof lim);
    if (limit_params(c, q, qlen, &lim))
        return;
    char *json = NULL;
    size_t len = 0;
    int rc = stele_projection_query(c->srv->db, (const char *)c->req.body.p, c->req.body.len,
                                    &lim, &json, &len);
    if (rc) {
        lib_error(c, rc);
        return;
    }
    buf b = {0};
    json_w_raw(&b, json, len);
    w(&b, "\n");
    stele_free(json);
    respond_json(c, 200, &b);
}

static void method(conn *c, const char *path, size_t plen)
{
    char msg[300];
    snprintf(msg, sizeof msg, "method %s is not allowed on %.*s", http_method_str(c->req.method),
             (int)(plen > 200 ? 200 : plen), path);
    http_error(c, 405, "METHOD_NOT_ALLOWED", msg);
    conn_request_done(c);
}

int route_projections(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    int m = c->req.method;
    if (plen == 12 && !memcmp(path, "/projections", 12)) {
        if (m != HTTP_GET)
            method(c, path, plen);
        else
            list(c);
        return 1;
    }
    if (plen <= 13 || memcmp(path, "/projections/", 13))
        return 0;
    const char *seg = path + 13;
    size_t slen = plen - 13;
    const char *slash = memchr(seg, '/', slen);
    size_t nlen = slash ? (size_t)(slash - seg) : slen;
    char name[512];
    if (url_decode_name(seg, nlen, name, sizeof name)) {
        bad(c, "malformed projection name in the path");
        return 1;
    }
    const char *rest = slash ? slash + 1 : "";
    size_t rlen = slash ? slen - nlen - 1 : 0;
    /* KurrentDB's form: POST /projections/continuous?name=X&emit=..., also
     * onetime and transient (run as one-time): the mode is the path and
     * the name a parameter. These three words are not projection names. */
    if (rlen == 0 && (!strcmp(name, "continuous") || !strcmp(name, "onetime") ||
                      !strcmp(name, "transient"))) {
        if (m != HTTP_POST) {
            method(c, path, plen);
            return 1;
        }
        char pname[512];
        int r = query_get(q, qlen, "name", pname, sizeof pname);
        if (r == 0 && !strcmp(name, "transient")) {
            transient(c, q, qlen);
            return 1;
        }
        if (r <= 0 || !*pname) {
            bad(c, "name is missing (POST /projections/continuous?name=NAME, or POST /projections/NAME)");
            return 1;
        }
        create(c, pname, q, qlen, strcmp(name, "continuous") ? STELE_PROJ_ONE_TIME : -1);
        return 1;
    }
#define REST_IS(lit) (rlen == sizeof(lit) - 1 && !memcmp(rest, lit, rlen))
    if (rlen == 0) {
        if (m == HTTP_GET)
            get_one(c, name, 0, 200);
        else if (m == HTTP_POST)
            create(c, name, q, qlen, -1);
        else if (m == HTTP_DELETE)
            del(c, name, q, qlen);
        else
            method(c, path, plen);
    } else if (REST_IS("query")) {
        if (m == HTTP_GET)
            get_one(c, name, 1, 200);
        else if (m == HTTP_PUT)
            command(c, name, "query", q, qlen);
        else
            method(c, path, plen);
    } else if (REST_IS("state") || REST_IS("result")) {
        if (m != HTTP_GET)
            method(c, path, plen);
        else
            state(c, name, q, qlen, REST_IS("result"));
    } else if (REST_IS("partitions")) {
        if (m != HTTP_GET)
            method(c, path, plen);
        else
            partitions(c, name, q, qlen);
    } else if (REST_IS("enable") || REST_IS("disable") || REST_IS("reset")) {
        char cmd[16];
        snprintf(cmd, sizeof cmd, "%.*s", (int)rlen, rest);
        if (m != HTTP_POST)
            method(c, path, plen);
        else
            command(c, name, cmd, q, qlen);
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, "no route for %s %.*s", http_method_str(m),
                 (int)(plen > 200 ? 200 : plen), path);
        http_error(c, 404, "NOT_FOUND", msg);
        conn_request_done(c);
    }
#undef REST_IS
    return 1;
}

/* GET /projections/{name}/partitions?after=&limit=&field=&value= */
static void partitions(conn *c, const char *name, const char *q, size_t qlen)
{
    char after[1024] = "", field[256] = "", value[1024] = "";
    int ra = query_get(q, qlen, "after", after, sizeof after);
    int rf = query_get(q, qlen, "field", field, sizeof field);
    int rv = query_get(q, qlen, "value", value, sizeof value);
    if (ra < 0 || rf < 0 || rv < 0) {
        bad(c, "after, field or value: malformed or too long");
        return;
    }
    if ((rf > 0) != (rv > 0)) {
        bad(c, "give field and value together (value is JSON: \"c-1\" with quotes, 42, true)");
        return;
    }
    uint64_t limit = 100;
    int r = num_param(c, q, qlen, "limit", &limit);
    if (r < 0)
        return;
    if (limit == 0 || limit > 10000) {
        bad(c, "limit must be 1 .. 10000");
        return;
    }
    stele_partition *ps;
    size_t n;
    int more;
    int rc = stele_projection_partitions(c->srv->db, name, after, (size_t)limit,
                                         rf > 0 ? field : NULL, rv > 0 ? value : NULL, &ps, &n,
                                         &more);
    if (rc) {
        lib_error(c, rc);
        return;
    }
    buf b = {0};
    w(&b, "{\"partitions\":[");
    for (size_t i = 0; i < n; i++) {
        w(&b, i ? ",{\"key\":" : "{\"key\":");
        json_w_str(&b, ps[i].key, ps[i].key_len);
        w(&b, ",\"state\":");
        json_w_raw(&b, ps[i].state, ps[i].state_len);
        w(&b, "}");
    }
    w(&b, "]");
    if (more && n) {
        char enc[3200], tmp[1300];
        w(&b, ",\"next\":");
        url_encode(ps[n - 1].key, ps[n - 1].key_len, enc, sizeof enc);
        char link[4000];
        snprintf(link, sizeof link, "/projections/%s/partitions?after=%s&limit=%llu", name, enc,
                 (unsigned long long)limit);
        if (rf > 0) {
            size_t l = strlen(link);
            url_encode(field, strlen(field), tmp, sizeof tmp);
            snprintf(link + l, sizeof link - l, "&field=%s", tmp);
            l = strlen(link);
            url_encode(value, strlen(value), enc, sizeof enc);
            snprintf(link + l, sizeof link - l, "&value=%s", enc);
        }
        json_w_str(&b, link, strlen(link));
    }
    w(&b, "}\n");
    stele_free(ps);
    respond_json(c, 200, &b);
}

int route_stream_state(conn *c, const char *stream, const char *q, size_t qlen)
{
    char name[256];
    int r = query_get(q, qlen, "projection", name, sizeof name);
    if (r == 0)
        return 0;
    if (c->req.method != HTTP_GET) {
        method(c, "/streams/{stream}/state", 23);
        return 1;
    }
    if (r < 0 || !*name) {
        bad(c, "projection: malformed, empty or too long");
        return 1;
    }
    char t[64];
    int has_to = query_get(q, qlen, "to", t, sizeof t);
    char a[128];
    int has_as_of = query_get(q, qlen, "asOf", a, sizeof a);
    if (has_to && has_as_of) {
        bad(c, "give to or asOf, not both");
        return 1;
    }
    uint64_t to = STELE_END;
    int64_t as_of;
    if (has_to) {
        char *end;
        unsigned long long v = has_to > 0 && t[0] >= '0' && t[0] <= '9' ? strtoull(t, &end, 10) : 0;
        if (has_to < 0 || t[0] < '0' || t[0] > '9' || *end || strlen(t) > 19) {
            bad(c, "to must be a revision (a non-negative number)");
            return 1;
        }
        to = v;
    }
    if (has_as_of) {
        if (has_as_of < 0 || stele_time_parse(a, 0, &as_of) != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "asOf: %s", has_as_of < 0 ? "malformed" : stele_errmsg());
            bad(c, msg);
            return 1;
        }
    }
    char *json = NULL;
    size_t len;
    uint64_t rev, snap;
    int rc = stele_projection_fold(c->srv->db, name, stream, to, has_as_of ? &as_of : NULL, &json,
                                   &len, &rev, &snap);
    if (rc) {
        if (rc == STELE_ENOTFOUND && strstr(stele_errmsg(), "projection"))
            lib_error(c, rc);
        else {
            http_stele_error(c, rc, stele_errmsg(), NULL);
        }
        return 1;
    }
    buf b = {0};
    w(&b, "{\"stream\":");
    json_w_str(&b, stream, strlen(stream));
    w(&b, ",\"projection\":");
    json_w_str(&b, name, strlen(name));
    w(&b, ",\"revision\":");
    if (rev == STELE_NONE)
        w(&b, "null");
    else
        json_w_u64(&b, rev);
    w(&b, ",\"snapshotRevision\":");
    if (snap == STELE_NONE)
        w(&b, "null");
    else
        json_w_u64(&b, snap);
    w(&b, ",\"state\":");
    json_w_raw(&b, json, len);
    w(&b, "}\n");
    stele_free(json);
    respond_json(c, 200, &b);
    return 1;
}
