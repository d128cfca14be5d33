/*
 * http.c - HTTP/1.1 on a connection: request parsing with Debian's
 * http-parser, the limits on headers and bodies, and writing responses.
 *
 * The parser is paused at the end of every message, so one request is
 * served at a time and pipelined requests wait in the input buffer until the
 * response before them is queued; responses therefore leave in request
 * order even when an append completes asynchronously. Responses answered
 * at once to pipelined requests gather in `out` while the parsing loop
 * runs and leave in one write (over TLS, one record) when it stops.
 *
 * A client that does not read its responses stops the parsing of its
 * further pipelined requests (net.c: back-pressure). Requests other than
 * HTTP/1.0 and HTTP/1.1 get 505; at most MAX_BLANK_BYTES line breaks may
 * come before a request line (400 beyond; they start the request timer,
 * so a connection that sends only those gets 408). Over the memory budget
 * (limits.c) a request other than /health and /metrics gets 503 BUSY.
 *
 * Limits: the request line plus headers may not exceed max_header_bytes
 * (431); a body larger than max_body_bytes is refused from its
 * Content-Length before it is read, or as soon as a chunked body passes the
 * limit (413). Both close the connection, since the rest of the request
 * cannot be skipped reliably.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "server_int.h"

enum {
    HDR_OTHER,
    HDR_EXPECTED,
    HDR_ACCEPT,
    HDR_CONTENT_TYPE,
    HDR_LAST_EVENT_ID,
    HDR_IF_NONE_MATCH, /* the web UI's assets (routes_ui.c) */
    HDR_ORIGIN,
    HDR_HOST,
    HDR_FETCH_SITE,
    HDR_FETCH_MODE,
    HDR_AUTHORIZATION,
    HDR_ACR_METHOD,     /* Access-Control-Request-Method: only noted */
    HDR_REQUESTED_WITH, /* X-Requested-With: only noted */
};

/* The header names the server reads. A name is looked up by its length
 * first, so most headers (and every unknown one) cost a few integer
 * compares instead of a dozen case-insensitive string compares. */
static const struct {
    const char *name;
    size_t len;
    int id;
} known_headers[] = {
#define H(lit, id) {lit, sizeof(lit) - 1, id}
    H("Host", HDR_HOST),
    H("Accept", HDR_ACCEPT),
    H("Origin", HDR_ORIGIN),
    H("Content-Type", HDR_CONTENT_TYPE),
    H("Authorization", HDR_AUTHORIZATION),
    H("Last-Event-ID", HDR_LAST_EVENT_ID),
    H("If-None-Match", HDR_IF_NONE_MATCH),
    H("Sec-Fetch-Site", HDR_FETCH_SITE),
    H("Sec-Fetch-Mode", HDR_FETCH_MODE),
    H("X-Requested-With", HDR_REQUESTED_WITH),
    H("Stele-Expected-Revision", HDR_EXPECTED),
    H("Access-Control-Request-Method", HDR_ACR_METHOD),
#undef H
};

/* The HDR_* of a header name (case-insensitive), HDR_OTHER if unknown. */
static int header_known(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof known_headers / sizeof known_headers[0]; i++)
        if (known_headers[i].len == len && !strcasecmp(known_headers[i].name, name))
            return known_headers[i].id;
    return HDR_OTHER;
}

static http_parser_settings settings;

/* At most this many CR/LF bytes before a request line. */
#define MAX_BLANK_BYTES 1024

static conn *conn_of(http_parser *p) { return (conn *)p->data; }

static int add_header_bytes(conn *c, size_t n)
{
    c->req.header_bytes += n;
    if (c->req.header_bytes > c->srv->cfg.max_header_bytes) {
        c->req.headers_too_large = 1;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn *c = conn_of(p);
    /* conn_request_done reset the request after the last one: only a
     * request that something wrote into since is reset again. */
    if (!c->req.fresh)
        request_reset(&c->req);
    c->req.fresh = 0;
    c->req.begun = 1;
    if (!c->request_start_ms)
        c->request_start_ms = now_ms();
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn *c = conn_of(p);
    if (add_header_bytes(c, len))
        return -1;
    return buf_append(&c->req.url, at, len) ? -1 : 0;
}

/* RFC 9110 token characters: a header name with anything else (a space
 * before the colon, say) is a 400, never a guess (request smuggling). */
static int is_tchar_slow(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* is_tchar_slow as a table (filled once, by http_conn_init): one load per
 * byte of every header name. */
static unsigned char tchar_table[256];

static void tchar_table_fill(void)
{
    for (int ch = 0; ch < 256; ch++)
        tchar_table[ch] = (unsigned char)(is_tchar_slow((unsigned char)ch) != 0);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn *c = conn_of(p);
    if (add_header_bytes(c, len))
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!tchar_table[(unsigned char)at[i]])
            return -1;
    request *r = &c->req;
    if (r->in_header_value) {
        r->in_header_value = 0;
        r->hdr_name_len = 0;
    }
    size_t room = sizeof r->hdr_name - 1 - r->hdr_name_len;
    size_t n = len < room ? len : room;
    memcpy(r->hdr_name + r->hdr_name_len, at, n);
    r->hdr_name_len += n;
    r->hdr_name[r->hdr_name_len] = 0;
    return 0;
}

/* Append to a header value; 1 if it had to be cut. */
static int append_value(char *dst, size_t cap, const char *at, size_t len)
{
    size_t have = strlen(dst);
    size_t n = len < cap - 1 - have ? len : cap - 1 - have;
    memcpy(dst + have, at, n);
    dst[have + n] = 0;
    return n < len;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn *c = conn_of(p);
    if (add_header_bytes(c, len))
        return -1;
    request *r = &c->req;
    if (!r->in_header_value) {
        r->in_header_value = 1;
        switch (header_known(r->hdr_name, r->hdr_name_len)) {
        case HDR_EXPECTED:
            r->header_id = HDR_EXPECTED;
            r->has_expected = 1;
            r->expected[0] = 0;
            break;
        case HDR_ACCEPT:
            r->header_id = HDR_ACCEPT;
            break;
        case HDR_CONTENT_TYPE:
            r->header_id = HDR_CONTENT_TYPE;
            r->has_content_type = 1;
            r->content_type[0] = 0;
            break;
        case HDR_ORIGIN:
            /* A second Origin or Host header joins the first one's value:
             * the result matches nothing and is refused. */
            r->header_id = HDR_ORIGIN;
            if (r->has_origin)
                append_value(r->origin, sizeof r->origin, ",", 1);
            r->has_origin = 1;
            break;
        case HDR_HOST:
            r->header_id = HDR_HOST;
            if (r->has_host)
                append_value(r->host, sizeof r->host, ",", 1);
            r->has_host = 1;
            break;
        case HDR_FETCH_SITE:
            r->header_id = HDR_FETCH_SITE;
            r->fetch_site[0] = 0;
            break;
        case HDR_FETCH_MODE:
            r->header_id = HDR_FETCH_MODE;
            r->fetch_mode[0] = 0;
            break;
        case HDR_ACR_METHOD:
            r->header_id = HDR_OTHER;
            r->has_acr_method = 1;
            break;
        case HDR_REQUESTED_WITH:
            r->header_id = HDR_OTHER; /* scripts' requests: no browser prompt on 401 */
            r->has_requested_with = 1;
            break;
        case HDR_AUTHORIZATION:
            /* A second Authorization header joins the first: refused. */
            r->header_id = HDR_AUTHORIZATION;
            if (r->has_authorization)
                r->authorization_too_long = 1;
            r->has_authorization = 1;
            break;
        case HDR_LAST_EVENT_ID:
            r->header_id = HDR_LAST_EVENT_ID;
            r->has_last_event_id = 1;
            r->last_event_id[0] = 0;
            break;
        case HDR_IF_NONE_MATCH:
            r->header_id = HDR_IF_NONE_MATCH;
            r->if_none_match[0] = 0;
            break;
        default:
            r->header_id = HDR_OTHER;
        }
    }
    if (r->header_id == HDR_EXPECTED) {
        append_value(r->expected, sizeof r->expected, at, len);
    } else if (r->header_id == HDR_LAST_EVENT_ID) {
        append_value(r->last_event_id, sizeof r->last_event_id, at, len);
    } else if (r->header_id == HDR_IF_NONE_MATCH) {
        append_value(r->if_none_match, sizeof r->if_none_match, at, len);
    } else if (r->header_id == HDR_ACCEPT) {
        if (memmem(at, len, "application/x-ndjson", 20))
            r->accept_ndjson = 1;
    } else if (r->header_id == HDR_CONTENT_TYPE) {
        append_value(r->content_type, sizeof r->content_type, at, len);
    } else if (r->header_id == HDR_ORIGIN) {
        r->origin_too_long |= append_value(r->origin, sizeof r->origin, at, len);
    } else if (r->header_id == HDR_HOST) {
        r->host_too_long |= append_value(r->host, sizeof r->host, at, len);
    } else if (r->header_id == HDR_FETCH_SITE) {
        append_value(r->fetch_site, sizeof r->fetch_site, at, len);
    } else if (r->header_id == HDR_FETCH_MODE) {
        append_value(r->fetch_mode, sizeof r->fetch_mode, at, len);
    } else if (r->header_id == HDR_AUTHORIZATION) {
        r->authorization_too_long |=
            append_value(r->authorization, sizeof r->authorization, at, len);
    }
    return 0;
}

/* Health checks and metrics are answered even over the memory budget. */
static int exempt_from_budget(const buf *url)
{
    return (url->len >= 7 && !memcmp(url->p, "/health", 7)) ||
           (url->len >= 8 && !memcmp(url->p, "/metrics", 8));
}

/* Bodies up to this size are read (and dropped) when a request is refused
 * over the memory budget, so the connection stays usable; a bigger one
 * closes it. */
#define BUSY_BODY_MAX (64u << 10)

/* RFC 9110 section 5.5: a field value excludes leading and trailing
 * whitespace (SP and HTAB). http-parser drops the leading part only, so a
 * trailing space ("Stele-Expected-Revision: 0 ") is cut here, once the
 * headers are complete, from every value the server reads. */
static void trim_ows(char *v)
{
    if (!v[0])
        return; /* most of them: headers the request did not send */
    size_t n = strlen(v), b = 0;
    while (b < n && (v[b] == ' ' || v[b] == '\t'))
        b++;
    while (n > b && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    memmove(v, v + b, n - b);
    v[n - b] = 0;
}

static int on_headers_complete(http_parser *p)
{
    conn *c = conn_of(p);
    request *r = &c->req;
    trim_ows(r->expected);
    trim_ows(r->last_event_id);
    trim_ows(r->content_type);
    trim_ows(r->origin);
    trim_ows(r->host);
    trim_ows(r->fetch_site);
    trim_ows(r->fetch_mode);
    if (p->http_major != 1 || p->http_minor > 1) {
        c->req.bad_version = 1;
        return -1;
    }
    if (p->content_length != ULLONG_MAX && p->content_length > c->srv->cfg.max_body_bytes) {
        c->req.too_large = 1;
        return -1;
    }
    if (!exempt_from_budget(&c->req.url) && limits_over(c->srv)) {
        c->req.busy = 1;
        if (p->content_length == ULLONG_MAX ? (p->flags & F_CHUNKED) != 0
                                            : p->content_length > BUSY_BODY_MAX)
            return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn *c = conn_of(p);
    if (c->req.busy)
        return 0; /* refused: the body is dropped */
    if (c->req.body.len + len > c->srv->cfg.max_body_bytes) {
        c->req.too_large = 1;
        return -1;
    }
    return buf_append(&c->req.body, at, len) ? -1 : 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = conn_of(p);
    c->req.complete = 1;
    c->req.method = p->method;
    c->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

void http_conn_init(conn *c)
{
    if (!settings.on_message_complete) {
        tchar_table_fill();
        settings.on_message_begin = on_message_begin;
        settings.on_url = on_url;
        settings.on_header_field = on_header_field;
        settings.on_header_value = on_header_value;
        settings.on_headers_complete = on_headers_complete;
        settings.on_body = on_body;
        settings.on_message_complete = on_message_complete;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = CS_READING;
    request_reset(&c->req);
}

void request_reset(request *r)
{
    buf url = r->url, body = r->body;
    url.len = body.len = 0;
    /* Give back big bodies instead of keeping them per connection. */
    if (body.cap > (1u << 20)) {
        buf_free(&body);
    }
    memset(r, 0, sizeof *r);
    r->url = url;
    r->body = body;
    r->fresh = 1;
}

void http_conn_process(conn *c)
{
    if (c->in_process)
        return;
    c->in_process = 1;
    /* One request at a time; the next pipelined one only while the
     * responses before it are (nearly) sent: a client that does not read
     * stops its further requests from being served (conn_flush resumes). */
    while (c->fd >= 0 && c->state == CS_READING && c->in_off < c->in.len &&
           conn_unsent(c) < CONN_OUT_HIGH_WATER) {
        if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
            http_parser_pause(&c->parser, 0);
        size_t avail = c->in.len - c->in_off;
        if (!c->req.begun) {
            /* Line breaks before a request line are allowed (RFC 9112
             * 2.2), a few of them: they start the request timer, and a
             * connection that sends nothing else is cut. */
            const uint8_t *p = c->in.p + c->in_off;
            size_t k = 0;
            while (k < avail && (p[k] == '\r' || p[k] == '\n'))
                k++;
            c->blank_bytes += k;
            if (!c->request_start_ms)
                c->request_start_ms = now_ms();
            if (c->blank_bytes > MAX_BLANK_BYTES) {
                c->keep_alive = 0;
                http_error(c, 400, "BAD_REQUEST", "too many empty lines before a request line");
                c->state = CS_CLOSING;
                c->in_process = 0;
                conn_flush(c);
                return;
            }
        }
        size_t n = http_parser_execute(&c->parser, &settings, (const char *)c->in.p + c->in_off,
                                       avail);
        c->in_off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            c->keep_alive = 0;
            if (c->req.bad_version)
                http_error(c, 505, "HTTP_VERSION_NOT_SUPPORTED",
                           "only HTTP/1.0 and HTTP/1.1 are served here (and HTTP/2 with prior "
                           "knowledge, for gRPC)");
            else if (c->req.busy)
                http_stele_error(c, STELE_EBUSY, BUSY_MESSAGE, NULL);
            else if (c->req.headers_too_large || e == HPE_HEADER_OVERFLOW)
                http_error(c, 431, "HEADERS_TOO_LARGE", "request line and headers are too large");
            else if (c->req.too_large)
                http_error(c, 413, "TOO_LARGE", "request body is larger than the server's limit");
            else {
                char msg[256];
                snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
                http_error(c, 400, "BAD_REQUEST", msg);
            }
            c->state = CS_CLOSING;
            c->in_process = 0;
            conn_flush(c);
            return;
        }
        if (!c->req.complete)
            break; /* need more bytes */
        c->t_start_ns = time_mono_ns();
        c->srv->m.requests++;
        c->blank_bytes = 0;
        if (c->req.busy) {
            http_stele_error(c, STELE_EBUSY, BUSY_MESSAGE, NULL);
            conn_request_done(c);
            continue;
        }
        route_request(c);
        /* route_request queued a response (then conn_request_done ran) or
         * moved the connection to BUSY/STREAMING; the loop ends there. */
    }
    c->in_process = 0;
    /* Responses of pipelined requests wait in `out` until here
     * (conn_request_done): one write for all of them. */
    if (c->fd >= 0 && conn_unsent(c))
        conn_flush(c);
}

/* ------------------------------------------------------------ responses */

const char *http_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 403: return "Forbidden";
    case 401: return "Unauthorized";
    case 429: return "Too Many Requests";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* (Appended piece by piece: snprintf with its format cost about 2,000
 * instructions per response, a tenth of an append's work on the loop.) */
int http_head_fields(conn *c, buf *b, const char *content_type)
{
    static const char name[] = "Server: stele/" STELE_VERSION "\r\n";
    size_t before = b->len;
    int bad = buf_append(b, name, sizeof name - 1);
    if (content_type)
        bad |= buf_append(b, "Content-Type: ", 14) ||
               buf_append(b, content_type, strlen(content_type)) || buf_append(b, "\r\n", 2);
    if (!c->keep_alive)
        bad |= buf_append(b, "Connection: close\r\n", 19);
    guard_cors_headers(c, b);
    return bad || b->len == before;
}

static void put_head(conn *c, int status, const char *content_type, const char *extra)
{
    char line[64];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
    buf_append(&c->out, line, (size_t)n);
    http_head_fields(c, &c->out, content_type);
    if (extra)
        buf_append(&c->out, extra, strlen(extra));
}

void http_respond(conn *c, int status, const char *content_type, const void *body, size_t len,
                  const char *extra_headers)
{
    put_head(c, status, content_type, extra_headers);
    char cl[64];
    int n = snprintf(cl, sizeof cl, "Content-Length: %zu\r\n\r\n", len);
    buf_append(&c->out, cl, (size_t)n);
    if (len && c->req.method != HTTP_HEAD)
        buf_append(&c->out, body, len);
}

void http_error(conn *c, int status, const char *code, const char *message)
{
    buf b = {0};
    json_w_error(&b, code, message);
    buf_append(&b, "\n", 1);
    http_respond(c, status, "application/json", b.p, b.len, NULL);
    buf_free(&b);
    metrics_error(&c->srv->m, status, 0);
    server_log(c->srv, status >= 500 ? 0 : 2, "msg=\"request failed\" status=%d code=%s", status,
               code);
}

void http_error_code(conn *c, const char *code, const char *message)
{
    const stele_error_info *e = stele_error_lookup(code);
    if (!e) /* a code missing from the table: a bug, said as one */
        e = stele_error_info_of(STELE_EINTERNAL);
    http_error(c, e->http_status, e->code, message);
}

void http_stele_error(conn *c, int rc, const char *message, const stele_append_result *res)
{
    /* The error vocabulary (src/util/errors.c, docs/errors.md) names it. */
    const stele_error_info *e = stele_error_info_of(rc);
    int status = e->http_status;
    const char *code = e->code;
    buf b = {0};
    if (rc == STELE_EWRONGREV && res)
        json_w_error_rev(&b, code, message, res->current_revision);
    else
        json_w_error(&b, code, message);
    buf_append(&b, "\n", 1);
    http_respond(c, status, "application/json", b.p, b.len,
                 rc == STELE_EBUSY ? "Retry-After: 1\r\n" : NULL);
    buf_free(&b);
    metrics_error(&c->srv->m, status, rc);
    server_log(c->srv, status >= 500 ? 0 : 2, "msg=\"request failed\" status=%d code=%s error=\"%s\"",
               status, code, message);
}

void http_request_finish(conn *c)
{
    metrics_observe(&c->srv->m, 0, (double)(time_mono_ns() - c->t_start_ns) / 1e9);
    conn_request_done(c);
}

void http_append_finish(conn *c)
{
    metrics_observe(&c->srv->m, 1, (double)(time_mono_ns() - c->t_start_ns) / 1e9);
    conn_request_done(c);
}

void http_fail(conn *c, int status, const char *code, const char *message)
{
    http_error(c, status, code, message);
    conn_request_done(c);
}

void http_json_done(conn *c, int status, buf *b)
{
    buf_append(b, "\n", 1);
    http_respond(c, status, "application/json", b->p, b->len, NULL);
    buf_free(b);
    http_request_finish(c);
}

void http_chunked_start(conn *c, int status, const char *content_type)
{
    put_head(c, status, content_type, "Transfer-Encoding: chunked\r\n\r\n");
}

void http_chunked_start_ex(conn *c, int status, const char *content_type, const char *extra)
{
    put_head(c, status, content_type, extra);
    buf_append(&c->out, "Transfer-Encoding: chunked\r\n\r\n", 30);
}

void http_chunk(conn *c, const void *data, size_t len)
{
    if (!len)
        return;
    char h[32];
    int n = snprintf(h, sizeof h, "%zx\r\n", len);
    buf_append(&c->out, h, (size_t)n);
    buf_append(&c->out, data, len);
    buf_append(&c->out, "\r\n", 2);
}

void http_chunked_end(conn *c) { buf_append(&c->out, "0\r\n\r\n", 5); }
