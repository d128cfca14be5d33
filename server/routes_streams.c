/*
 * routes_streams.c - the REST routes for stream metadata and snapshots
 * (docs/http-api.md, docs/streams.md):
 *
 *   GET  /streams/{s}/metadata       {"stream","version","metadata":{...}}
 *   PUT  /streams/{s}/metadata       body: the metadata object; ?expectedVersion=
 *   PUT  /streams/{s}/snapshots      body: {"revision","schemaVersion","state"|"stateBase64"}
 *   GET  /streams/{s}/snapshots      ?atOrBefore=REV
 *   GET  /streams/{s}/load           ?limit=N: the latest snapshot + the events after it
 *   GET  /streams/{s}/state          the latest state (saved with an append or as a
 *                                    snapshot), its revision, and whether it is current
 *
 * Bodies are validated as JSON first (json_validate), then their top-level
 * members are walked here as byte spans: values that are stored (custom
 * metadata fields, a JSON state) keep the exact bytes the client sent. The
 * rules that need the store (revisions, tombstones, retention) and the
 * custom-field checks are libstele's, whose messages become the error
 * bodies. These calls write one record and fsync; like deletes they run on
 * the loop thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "server_int.h"
#include "urlcode.h"

#define LOAD_LIMIT 10000
#define MAX_MEMBERS 1100 /* reserved ones + STELE_MAX_CUSTOM_FIELDS, with room */

/* ------------------------------------------------------------ helpers */

static void bad(conn *c, const char *code, const char *msg)
{
    http_error(c, 400, code, msg);
    conn_request_done(c);
}

static void stele_fail(conn *c, int rc)
{
    http_stele_error(c, rc, stele_errmsg(), NULL);
    conn_request_done(c);
}

/* One top-level member of a JSON object: spans into the body. `key` is the
 * raw text between the quotes (escapes not decoded). */
typedef struct member {
    const char *key;
    size_t key_len;
    const char *val;
    size_t val_len;
} member;

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* End of the string starting at s[i] == '"' (index after the quote). */
static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len && s[i] != '"'; i++)
        if (s[i] == '\\')
            i++;
    return i + 1;
}

/* End of the (valid) JSON value at s[i]. */
static size_t skip_value(const char *s, size_t len, size_t i)
{
    if (s[i] == '"')
        return skip_string(s, len, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        for (; i < len; i++) {
            if (s[i] == '"') {
                i = skip_string(s, len, i) - 1;
            } else if (s[i] == '{' || s[i] == '[') {
                depth++;
            } else if (s[i] == '}' || s[i] == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return len;
    }
    while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
           s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
        i++;
    return i;
}

/*
 * Parse a body that must be one JSON object into its top-level members.
 * Returns 0, or -1 after answering 400 (INVALID_JSON with the byte offset,
 * or INVALID_ARGUMENT when it is JSON but not an object / too many members).
 */
/* The top-level members of the JSON object `body`: 0, or -1 with the
 * error code (INVALID_JSON, INVALID_ARGUMENT, INTERNAL) and message. */
static int parse_members(const char *body, size_t len, member **out, size_t *n,
                         const char **code, char *msg, size_t msglen)
{
    size_t at;
    const char *why;
    *out = NULL;
    *n = 0;
    if (json_validate(body, len, &at, &why)) {
        snprintf(msg, msglen, "invalid JSON at byte %zu: %s", at, why);
        *code = "INVALID_JSON";
        return -1;
    }
    size_t i = skip_ws(body, len, 0);
    if (body[i] != '{') {
        *code = "INVALID_ARGUMENT";
        snprintf(msg, msglen, "the body must be a JSON object");
        return -1;
    }
    member *ms = NULL;
    size_t cnt = 0;
    i = skip_ws(body, len, i + 1);
    while (i < len && body[i] == '"') {
        if (cnt == MAX_MEMBERS) {
            free(ms);
            snprintf(msg, msglen, "the body has more than %d members", MAX_MEMBERS);
            *code = "INVALID_ARGUMENT";
            return -1;
        }
        if (cnt % 64 == 0) {
            member *nm = realloc(ms, (cnt + 64) * sizeof *nm);
            if (!nm) {
                free(ms);
                snprintf(msg, msglen, "out of memory");
                *code = "INTERNAL";
                return -1;
            }
            ms = nm;
        }
        size_t kend = skip_string(body, len, i);
        member *m = &ms[cnt++];
        m->key = body + i + 1;
        m->key_len = kend - i - 2;
        i = skip_ws(body, len, kend);
        i = skip_ws(body, len, i + 1); /* the ':' */
        size_t vend = skip_value(body, len, i);
        m->val = body + i;
        m->val_len = vend - i;
        i = skip_ws(body, len, vend);
        if (i < len && body[i] == ',')
            i = skip_ws(body, len, i + 1);
    }
    *out = ms;
    *n = cnt;
    return 0;
}

static int parse_object(conn *c, const char *body, size_t len, member **out, size_t *n)
{
    const char *code;
    char msg[256];
    if (!parse_members(body, len, out, n, &code, msg, sizeof msg))
        return 0;
    if (!strcmp(code, "INTERNAL")) {
        http_error(c, 500, code, msg);
        conn_request_done(c);
    } else {
        bad(c, code, msg);
    }
    return -1;
}

static int key_is(const member *m, const char *name)
{
    return m->key_len == strlen(name) && !memcmp(m->key, name, m->key_len);
}

static int val_is_null(const member *m) { return m->val_len == 4 && !memcmp(m->val, "null", 4); }

/* A non-negative integer (digits only) up to `max`: 0 ok, -1 not one. */
static int val_u64(const member *m, uint64_t max, uint64_t *out)
{
    if (!m->val_len || m->val_len > 20 || (m->val_len > 1 && m->val[0] == '0'))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < m->val_len; i++) {
        if (m->val[i] < '0' || m->val[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(m->val[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* Seconds with at most 6 decimals ("30", "0.5") as microseconds > 0. */
static int val_seconds_us(const member *m, uint64_t *out)
{
    const char *p = m->val, *end = m->val + m->val_len;
    uint64_t sec = 0, frac = 0;
    int fd = 0;
    if (p == end || *p < '0' || *p > '9' || (*p == '0' && end - p > 1 && p[1] != '.'))
        return -1;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        sec = sec * 10 + (uint64_t)(*p - '0');
        if (sec > (uint64_t)INT64_MAX / 1000000)
            return -1;
    }
    if (p < end && *p == '.') {
        p++;
        if (p == end)
            return -1;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            if (++fd > 6)
                return -1;
            frac = frac * 10 + (uint64_t)(*p - '0');
        }
    }
    if (p != end)
        return -1;
    while (fd++ < 6)
        frac *= 10;
    uint64_t us = sec * 1000000 + frac;
    if (!us || us > (uint64_t)INT64_MAX)
        return -1;
    *out = us;
    return 0;
}

static void w_num_or_null(buf *b, uint64_t v)
{
    if (v == STELE_NONE)
        buf_append(b, "null", 4);
    else
        json_w_u64(b, v);
}

/* ------------------------------------------------------------ metadata */

void stream_metadata_write(buf *b, const stele_stream_metadata *md, int kurrent)
{
    char t[64];
    int first = 1;
    buf_append(b, "{", 1);
#define FIELD(name, kname)                                                             \
    do {                                                                               \
        if (!first)                                                                    \
            buf_append(b, ",", 1);                                                     \
        first = 0;                                                                     \
        if (kurrent)                                                                   \
            buf_append(b, "\"" kname "\":", sizeof(kname) + 2);                         \
        else                                                                           \
            buf_append(b, "\"" name "\":", sizeof(name) + 2);                           \
    } while (0)
    if (md->max_age_us) {
        FIELD("maxAge", "$maxAge");
        int n = md->max_age_us % 1000000
                    ? snprintf(t, sizeof t, "%llu.%06llu",
                               (unsigned long long)(md->max_age_us / 1000000),
                               (unsigned long long)(md->max_age_us % 1000000))
                    : snprintf(t, sizeof t, "%llu", (unsigned long long)(md->max_age_us / 1000000));
        while (md->max_age_us % 1000000 && t[n - 1] == '0')
            n--; /* 0.500000 -> 0.5 */
        buf_append(b, t, (size_t)n);
    }
    if (md->max_count) {
        FIELD("maxCount", "$maxCount");
        json_w_u64(b, md->max_count);
    }
    if (md->truncate_before) {
        FIELD("truncateBefore", "$tb");
        json_w_u64(b, md->truncate_before);
    }
    if (md->max_snapshots) {
        FIELD("maxSnapshots", "maxSnapshots");
        json_w_u64(b, md->max_snapshots);
    }
#undef FIELD
    /* The custom object's members, byte for byte (libstele checked that it
     * is one JSON object). */
    if (md->custom_len) {
        const char *s = md->custom;
        size_t lo = 0, hi = md->custom_len;
        while (lo < hi && s[lo] != '{')
            lo++;
        while (hi > lo && s[hi - 1] != '}')
            hi--;
        lo = skip_ws(s, hi, lo + 1);
        if (hi > lo + 1) {
            hi--; /* drop the '}' */
            while (hi > lo && (s[hi - 1] == ' ' || s[hi - 1] == '\t' || s[hi - 1] == '\n' ||
                               s[hi - 1] == '\r'))
                hi--;
            if (hi > lo) {
                if (!first)
                    buf_append(b, ",", 1);
                buf_append(b, s + lo, hi - lo);
            }
        }
    }
    buf_append(b, "}", 1);
}

/* {"stream":..,"version":..,"metadata":{reserved fields, custom members}} */
static void w_metadata(buf *b, const char *stream, const stele_stream_metadata *md)
{
    buf_append(b, "{\"stream\":", 10);
    json_w_str(b, stream, strlen(stream));
    buf_append(b, ",\"version\":", 11);
    w_num_or_null(b, md->version);
    buf_append(b, ",\"metadata\":", 12);
    stream_metadata_write(b, md, 0);
    buf_append(b, "}", 1);
}

static void get_metadata(conn *c, const char *stream)
{
    stele_stream_metadata *md;
    int rc = stele_get_stream_metadata(c->srv->db, stream, &md);
    if (rc) {
        stele_fail(c, rc);
        return;
    }
    buf b = {0};
    w_metadata(&b, stream, md);
    stele_free(md);
    http_json_done(c, 200, &b);
}

static int parse_version(const char *s, int64_t *out)
{
    if (!strcmp(s, "any"))
        *out = STELE_ANY;
    else if (!strcmp(s, "none"))
        *out = STELE_NO_STREAM;
    else if (!strcmp(s, "exists"))
        *out = STELE_STREAM_EXISTS;
    else {
        member m = {NULL, 0, s, strlen(s)};
        uint64_t v;
        if (val_u64(&m, INT64_MAX, &v))
            return -1;
        *out = (int64_t)v;
    }
    return 0;
}

int stream_metadata_parse(const char *json, size_t len, int kurrent, stele_stream_metadata *md,
                          buf *custom, const char **code, char *msg, size_t msglen)
{
    member *ms;
    size_t n;
    memset(md, 0, sizeof *md);
    if (parse_members(json, len, &ms, &n, code, msg, msglen))
        return -1;
    static const struct {
        const char *name, *alias;
    } reserved[] = {{"maxAge", "$maxAge"},
                    {"maxCount", "$maxCount"},
                    {"truncateBefore", "$tb"},
                    {"maxSnapshots", NULL}};
    int seen[4] = {0};
    const char *err = NULL;
    for (size_t i = 0; i < n && !err; i++) {
        member *m = &ms[i];
        int k = -1;
        for (int j = 0; j < 4; j++)
            if (key_is(m, reserved[j].name) || (reserved[j].alias && key_is(m, reserved[j].alias)))
                k = j;
        if (k < 0 && key_is(m, "$acl") &&
            access_acl_check(m->val, m->val_len, msg, msglen) != 0) {
            err = msg;
            break;
        }
        if (k < 0 && kurrent && key_is(m, "$cacheControl"))
            continue; /* no HTTP caching: dropped (docs/kurrentdb-compatibility.md); $acl
                         is kept as a custom member (access checks, docs/security.md) */
        if (k < 0) {
            buf_append(custom, custom->len ? "," : "{", 1);
            buf_append(custom, m->key - 1, m->key_len + 2);
            buf_append(custom, ":", 1);
            buf_append(custom, m->val, m->val_len);
            continue;
        }
        if (seen[k]++) {
            snprintf(msg, msglen, "%s is given twice", reserved[k].name);
            err = msg;
            break;
        }
        if (val_is_null(m))
            continue; /* null: unset */
        uint64_t x = 0;
        switch (k) {
        case 0:
            if (val_seconds_us(m, &md->max_age_us))
                err = "maxAge must be a number of seconds above 0 (at most 6 decimals), or null";
            break;
        case 1:
            if (val_u64(m, INT64_MAX, &md->max_count) || !md->max_count)
                err = "maxCount must be an integer from 1 to 9223372036854775807, or null";
            break;
        case 2:
            if (val_u64(m, INT64_MAX, &md->truncate_before))
                err = "truncateBefore must be a revision (an integer from 0 to "
                      "9223372036854775807), or null";
            break;
        default:
            if (val_u64(m, STELE_MAX_SNAPSHOTS_LIMIT, &x) || !x) {
                snprintf(msg, msglen, "maxSnapshots must be an integer from 1 to %u, or null",
                         STELE_MAX_SNAPSHOTS_LIMIT);
                err = msg;
            }
            md->max_snapshots = (uint32_t)x;
            break;
        }
    }
    free(ms);
    if (err) {
        if (err != msg)
            snprintf(msg, msglen, "%s", err);
        *code = "INVALID_ARGUMENT";
        return -1;
    }
    if (custom->len) {
        buf_append(custom, "}", 1);
        md->custom = (const char *)custom->p;
        md->custom_len = custom->len;
    }
    return 0;
}

static void put_metadata(conn *c, const char *stream, const char *q, size_t qlen)
{
    char v[64], msg[512];
    int64_t expected = STELE_ANY;
    int r = query_get(q, qlen, "expectedVersion", v, sizeof v);
    if (r < 0 || (r > 0 && parse_version(v, &expected))) {
        bad(c, "INVALID_ARGUMENT", "expectedVersion must be any, none, exists or a version number");
        return;
    }
    request *rq = &c->req;
    stele_stream_metadata md;
    buf custom = {0};
    const char *code;
    if (stream_metadata_parse((const char *)rq->body.p, rq->body.len, 0, &md, &custom, &code, msg,
                              sizeof msg)) {
        buf_free(&custom);
        if (!strcmp(code, "INTERNAL")) {
            http_error(c, 500, code, msg);
            conn_request_done(c);
        } else {
            bad(c, code, msg);
        }
        return;
    }
    uint64_t version;
    int rc = stele_set_stream_metadata(c->srv->db, stream, &md, expected, &version);
    if (rc == STELE_EWRONGREV) {
        buf b = {0};
        static const char head[] = "{\"error\":{\"code\":\"WRONG_EXPECTED_VERSION\",\"message\":";
        buf_append(&b, head, sizeof head - 1);
        json_w_str(&b, stele_errmsg(), strlen(stele_errmsg()));
        buf_append(&b, ",\"currentVersion\":", 18);
        w_num_or_null(&b, version);
        buf_append(&b, "}}\n", 3);
        http_respond(c, 409, "application/json", b.p, b.len, NULL);
        metrics_error(&c->srv->m, 409, rc);
        buf_free(&b);
        buf_free(&custom);
        conn_request_done(c);
        return;
    }
    if (rc) {
        buf_free(&custom);
        stele_fail(c, rc);
        return;
    }
    md.version = version;
    buf b = {0};
    w_metadata(&b, stream, &md);
    buf_free(&custom);
    http_json_done(c, 200, &b);
}

/* ------------------------------------------------------------ snapshots */

static void w_snapshot(buf *b, const stele_snapshot *s)
{
    buf_append(b, "{\"stream\":", 10);
    json_w_str(b, s->stream, s->stream_len);
    buf_append(b, ",\"revision\":", 12);
    json_w_u64(b, s->revision);
    buf_append(b, ",\"schemaVersion\":", 17);
    json_w_u64(b, s->schema_version);
    buf_append(b, ",\"created\":", 11);
    json_w_time_rfc3339(b, s->created_us);
    if (s->flags & STELE_EVENT_JSON) {
        buf_append(b, ",\"state\":", 9);
        json_w_raw(b, s->state, s->state_len);
    } else {
        buf_append(b, ",\"stateBase64\":", 15);
        json_w_base64(b, s->state, s->state_len);
    }
    buf_append(b, "}", 1);
}

static void put_snapshot(conn *c, const char *stream)
{
    request *rq = &c->req;
    member *ms;
    size_t n;
    if (parse_object(c, (const char *)rq->body.p, rq->body.len, &ms, &n))
        return;
    stele_snapshot_in sn = {0};
    const member *state = NULL, *state64 = NULL;
    int have_rev = 0, have_schema = 0;
    char msg[512];
    const char *err = NULL;
    for (size_t i = 0; i < n && !err; i++) {
        member *m = &ms[i];
        uint64_t x = 0;
        if (key_is(m, "revision")) {
            if (have_rev++)
                err = "revision is given twice";
            else if (val_u64(m, INT64_MAX, &sn.revision))
                err = "revision must be an integer from 0 to 9223372036854775807";
        } else if (key_is(m, "schemaVersion")) {
            if (have_schema++)
                err = "schemaVersion is given twice";
            else if (val_u64(m, UINT32_MAX, &x))
                err = "schemaVersion must be an integer from 0 to 4294967295";
            sn.schema_version = (uint32_t)x;
        } else if (key_is(m, "state")) {
            if (state)
                err = "state is given twice";
            state = m;
        } else if (key_is(m, "stateBase64")) {
            if (state64)
                err = "stateBase64 is given twice";
            else if (m->val[0] != '"')
                err = "stateBase64 must be a string";
            state64 = m;
        } else {
            snprintf(msg, sizeof msg,
                     "unknown field \"%.*s\" (a snapshot has revision, schemaVersion, state or "
                     "stateBase64)",
                     (int)(m->key_len > 64 ? 64 : m->key_len), m->key);
            err = msg;
        }
    }
    if (!err && !have_rev)
        err = "revision is missing";
    else if (!err && !state && !state64)
        err = "state (JSON) or stateBase64 (bytes) is missing";
    else if (!err && state && state64)
        err = "give state or stateBase64, not both";
    uint8_t *bytes = NULL;
    if (!err && state) {
        sn.state = state->val;
        sn.state_len = state->val_len;
        sn.flags = STELE_EVENT_JSON;
    } else if (!err) {
        size_t in = state64->val_len - 2, outn, at;
        const char *why;
        bytes = malloc(json_b64_decoded_max(in) + 1);
        if (!bytes) {
            err = "out of memory";
        } else if (json_b64_decode(state64->val + 1, in, bytes, &outn, &at, &why)) {
            snprintf(msg, sizeof msg, "stateBase64: %s at character %zu", why, at);
            err = msg;
        } else {
            sn.state = bytes;
            sn.state_len = outn;
        }
    }
    free(ms);
    if (err) {
        free(bytes);
        bad(c, "INVALID_ARGUMENT", err);
        return;
    }
    int rc = stele_put_snapshot(c->srv->db, stream, &sn);
    free(bytes);
    if (rc) {
        stele_fail(c, rc);
        return;
    }
    buf b = {0};
    buf_append(&b, "{\"stream\":", 10);
    json_w_str(&b, stream, strlen(stream));
    buf_append(&b, ",\"revision\":", 12);
    json_w_u64(&b, sn.revision);
    buf_append(&b, ",\"schemaVersion\":", 17);
    json_w_u64(&b, sn.schema_version);
    buf_append(&b, "}", 1);
    http_json_done(c, 201, &b);
}

static void get_snapshot(conn *c, const char *stream, const char *q, size_t qlen)
{
    char v[64];
    uint64_t at = STELE_END;
    int r = query_get(q, qlen, "atOrBefore", v, sizeof v);
    member m = {NULL, 0, v, r > 0 ? strlen(v) : 0};
    if (r < 0 || (r > 0 && val_u64(&m, INT64_MAX, &at))) {
        bad(c, "INVALID_ARGUMENT", "atOrBefore must be a revision (a non-negative integer)");
        return;
    }
    stele_snapshot *s;
    int rc = stele_get_snapshot(c->srv->db, stream, at, &s);
    if (rc) {
        stele_fail(c, rc);
        return;
    }
    if (!s) {
        char msg[512];
        if (at == STELE_END)
            snprintf(msg, sizeof msg, "stream '%s' has no snapshot", stream);
        else
            snprintf(msg, sizeof msg, "stream '%s' has no snapshot at or before revision %llu",
                     stream, (unsigned long long)at);
        http_error(c, 404, "SNAPSHOT_NOT_FOUND", msg);
        conn_request_done(c);
        return;
    }
    buf b = {0};
    w_snapshot(&b, s);
    stele_free(s);
    http_json_done(c, 200, &b);
}

static void get_load(conn *c, const char *stream, const char *q, size_t qlen)
{
    char v[64];
    uint64_t limit = LOAD_LIMIT;
    int r = query_get(q, qlen, "limit", v, sizeof v);
    member m = {NULL, 0, v, r > 0 ? strlen(v) : 0};
    if (r < 0 || (r > 0 && (val_u64(&m, LOAD_LIMIT, &limit) || !limit))) {
        char msg[128];
        snprintf(msg, sizeof msg, "limit must be a number from 1 to %d", LOAD_LIMIT);
        bad(c, "INVALID_ARGUMENT", msg);
        return;
    }
    stele_snapshot *s;
    stele_page *pg;
    int rc = stele_load_stream(c->srv->db, stream, (size_t)limit, &s, &pg);
    if (rc) {
        stele_fail(c, rc);
        return;
    }
    buf b = {0};
    buf_append(&b, "{\"stream\":", 10);
    json_w_str(&b, stream, strlen(stream));
    buf_append(&b, ",\"snapshot\":", 12);
    if (s)
        w_snapshot(&b, s);
    else
        buf_append(&b, "null", 4);
    buf_append(&b, ",\"events\":[", 11);
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        if (i)
            buf_append(&b, ",", 1);
        json_w_event(&b, stele_page_event(pg, i));
    }
    buf_append(&b, "]", 1);
    uint64_t next;
    if (stele_page_next(pg, &next)) {
        char enc[800], link[1024];
        url_encode(stream, strlen(stream), enc, sizeof enc);
        int n = snprintf(link, sizeof link,
                         ",\"next\":\"/streams/%s?from=%llu&direction=forwards&limit=%llu\"", enc,
                         (unsigned long long)next, (unsigned long long)limit);
        buf_append(&b, link, (size_t)n);
    }
    buf_append(&b, "}", 1);
    c->srv->m.reads++;
    c->srv->m.read_events += stele_page_count(pg);
    stele_free(s);
    stele_page_free(pg);
    http_json_done(c, 200, &b);
}

/* The latest state of a stream, without replay: its newest snapshot (an
 * append with "state" saves one at its last revision), read in one
 * consistent read with the events after it (stele_load_stream), so
 * "current" is true exactly when no visible event follows the state. */
static void get_state(conn *c, const char *stream)
{
    stele_snapshot *s;
    stele_page *pg;
    int rc = stele_load_stream(c->srv->db, stream, 1, &s, &pg);
    if (rc) {
        stele_fail(c, rc);
        return;
    }
    if (!s) {
        stele_page_free(pg);
        char msg[512];
        snprintf(msg, sizeof msg, "stream '%s' has no state (append with \"state\" or put a "
                 "snapshot)", stream);
        http_error(c, 404, "STATE_NOT_FOUND", msg);
        conn_request_done(c);
        return;
    }
    int current = stele_page_count(pg) == 0;
    stele_page_free(pg);
    stele_stream_info info;
    rc = stele_stream_head(c->srv->db, stream, &info);
    buf b = {0};
    w_snapshot(&b, s);
    stele_free(s);
    b.len--; /* reopen the object */
    buf_append(&b, ",\"current\":", 11);
    buf_append(&b, current ? "true" : "false", current ? 4 : 5);
    if (rc == 0 && info.last_revision != STELE_NONE) {
        buf_append(&b, ",\"lastRevision\":", 16);
        json_w_u64(&b, info.last_revision);
    }
    buf_append(&b, "}", 1);
    c->srv->m.reads++;
    http_json_done(c, 200, &b);
}

/* ------------------------------------------------------------ routing */

int route_streams(conn *c, int method, const char *stream, const char *rest, size_t rest_len,
                  const char *q, size_t qlen)
{
    int allowed;
#define REST_IS(lit) (rest_len == sizeof(lit) - 1 && !memcmp(rest, lit, rest_len))
    if (REST_IS("/metadata")) {
        allowed = method == HTTP_GET || method == HTTP_PUT;
        if (method == HTTP_GET)
            get_metadata(c, stream);
        else if (method == HTTP_PUT)
            put_metadata(c, stream, q, qlen);
    } else if (REST_IS("/snapshots")) {
        allowed = method == HTTP_GET || method == HTTP_PUT;
        if (method == HTTP_GET)
            get_snapshot(c, stream, q, qlen);
        else if (method == HTTP_PUT)
            put_snapshot(c, stream);
    } else if (REST_IS("/load")) {
        allowed = method == HTTP_GET;
        if (allowed)
            get_load(c, stream, q, qlen);
    } else if (REST_IS("/state")) {
        allowed = method == HTTP_GET;
        if (allowed)
            get_state(c, stream);
    } else {
        return 0;
    }
#undef REST_IS
    if (!allowed) {
        char msg[256];
        snprintf(msg, sizeof msg, "method %s is not allowed on /streams/{stream}%.*s",
                 http_method_str(method), (int)rest_len, rest);
        http_error(c, 405, "METHOD_NOT_ALLOWED", msg);
        conn_request_done(c);
    }
    return 1;
}
