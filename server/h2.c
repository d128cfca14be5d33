/*
 * h2.c - HTTP/2 connections (cleartext, prior knowledge) for gRPC, on the
 * same epoll loop and port as HTTP/1.1. A connection whose first 24 bytes
 * are the HTTP/2 preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") gets an
 * nghttp2 server session; every other connection stays HTTP/1.1.
 *
 * Input: conn_read() hands every byte to nghttp2_session_mem_recv(), whose
 * callbacks build calls (grpc.h): request headers pick the method, DATA is
 * cut into gRPC messages (1 byte compressed-flag, 4 bytes big-endian
 * length, the protobuf bytes), each decoded with protobuf-c and handed to
 * the method.
 *
 * Output: a call's messages wait, framed, in its `out`. nghttp2 pulls from
 * there through a data provider only as far as the client's HTTP/2 flow
 * control windows allow, and h2_pump() pulls frames from nghttp2 into the
 * connection's `out` only while less than CONN_OUT_HIGH bytes wait for the
 * socket. So a client that stops reading (one stream or the whole
 * connection) stops its producers: server-streaming methods produce in
 * on_more, which runs only when the call's queue is short.
 *
 * Status: a call that ends before any message is answered with one HEADERS
 * frame (":status 200", "grpc-status", "grpc-message": a trailers-only
 * response); otherwise response HEADERS, DATA and trailing HEADERS. If the
 * client is still sending request content we will not read when we finish
 * (a client-streaming call, a message not yet or only partly received, or
 * bytes beyond a unary call's one message), the stream is reset with
 * NO_ERROR after the trailers (as gRPC servers do) so it stops. A unary or
 * server-streaming call whose one message has arrived whole is never
 * reset: all the client still owes is END_STREAM, which may come a moment
 * after the message (tonic/hyper send it as a separate empty DATA frame),
 * and some clients (the KurrentDB client's Rust core) report a call reset
 * before their END_STREAM went out as failed, although its status was OK.
 * Such a stream closes when the END_STREAM arrives; at shutdown it is
 * reset so that it does not hold the connection open.
 *
 * Limits: one request message may be at most max_body_bytes
 * (RESOURCE_EXHAUSTED, known from the 5-byte prefix, before the bytes are
 * buffered); a connection buffers at most CONN_IN_MAX bytes of incomplete
 * messages. Deadlines (grpc-timeout) and keepalive are checked once a
 * second by h2_tick(): an expired call ends with DEADLINE_EXCEEDED; a
 * connection quiet for the idle timeout gets a PING and is closed if the
 * PING is not answered within PING_TIMEOUT_MS.
 */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc.h"

#define CONN_OUT_HIGH (256u << 10)
#define CONN_IN_MAX ((size_t)256 << 20)
#define STREAM_WINDOW (1u << 20)
#define CONN_WINDOW (16u << 20)
#define PING_TIMEOUT_MS 20000 /* at most; never more than the idle timeout */

typedef struct h2_session {
    nghttp2_session *ng;
    conn *c;
    gcall *calls;
    size_t open_calls;  /* calls whose stream is not closed yet */
    gcall *more_head, *more_tail;
    size_t in_buffered; /* bytes of incomplete request messages, all calls */
    int pumping, repump;
    int64_t ping_sent_ms;
    int goaway;
} h2_session;

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* ------------------------------------------------------------ helpers */

static nghttp2_nv nv(const char *name, const char *value)
{
    nghttp2_nv v = {(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                    NGHTTP2_NV_FLAG_NONE};
    return v;
}

/* grpc-message is percent-encoded: everything outside printable ASCII,
 * and '%' itself. */
static char *percent_encode(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '%') {
            static const char hex[] = "0123456789ABCDEF";
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        } else {
            *o++ = (char)*p;
        }
    }
    *o = 0;
    return out;
}

/* grpc-timeout: 1 to 8 digits and a unit (H M S m u n). Milliseconds,
 * rounded up; -1 if malformed. */
static int64_t parse_timeout(const uint8_t *v, size_t len)
{
    if (len < 2 || len > 9)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H': return n * 3600000;
    case 'M': return n * 60000;
    case 'S': return n * 1000;
    case 'm': return n;
    case 'u': return (n + 999) / 1000;
    case 'n': return (n + 999999) / 1000000;
    default: return -1;
    }
}

static int name_is(const uint8_t *name, size_t len, const char *lit)
{
    return len == strlen(lit) && !memcmp(name, lit, len);
}

/* ------------------------------------------------------------ calls */

static void more_remove(h2_session *h, gcall *call)
{
    if (!call->want_more)
        return;
    gcall **pp = &h->more_head, *prev = NULL;
    while (*pp && *pp != call) {
        prev = *pp;
        pp = &(*pp)->more_next;
    }
    if (*pp) {
        *pp = call->more_next;
        if (h->more_tail == call)
            h->more_tail = prev;
    }
    call->more_next = NULL;
    call->want_more = 0;
}

void grpc_want_more(gcall *call)
{
    h2_session *h = call->h;
    if (call->want_more || call->done || call->closed || !call->m || !call->m->on_more)
        return;
    call->want_more = 1;
    call->more_next = NULL;
    if (h->more_tail)
        h->more_tail->more_next = call;
    else
        h->more_head = call;
    h->more_tail = call;
}

static void call_free(h2_session *h, gcall *call)
{
    more_remove(h, call);
    if (call->prev)
        call->prev->next = call->next;
    else
        h->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    h->in_buffered -= call->in.len - call->in_off;
    buf_free(&call->path);
    buf_free(&call->in);
    buf_free(&call->out);
    buf_free(&call->trailers);
    free(call->status_msg);
    if (call->authz) {
        memset(call->authz, 0, strlen(call->authz));
        free(call->authz);
    }
    free(call);
}

/* The stream is gone: the method frees its state; the call itself waits
 * for appends still in flight. */
static void call_closed(h2_session *h, gcall *call)
{
    if (call->closed)
        return;
    call->closed = 1;
    call->done = 1;
    h->open_calls--;
    more_remove(h, call);
    if (call->m && call->m->on_close)
        call->m->on_close(call);
    call->st = NULL;
    if (!call->pending)
        call_free(h, call);
}

void grpc_call_release(gcall *call)
{
    if (--call->pending == 0 && call->closed)
        call_free(call->h, call);
}

size_t grpc_out_pending(const gcall *call) { return call->out.len - call->out_off; }

size_t grpc_out_high(const gcall *call)
{
    size_t n = call->h->open_calls ? call->h->open_calls : 1;
    size_t per = GRPC_CONN_OUT_BYTES / n;
    return per < GRPC_OUT_MIN ? GRPC_OUT_MIN : per > GRPC_OUT_HIGH ? GRPC_OUT_HIGH : per;
}

size_t grpc_out_low(const gcall *call) { return grpc_out_high(call) / 4; }

int64_t grpc_time_left(const gcall *call)
{
    return call->deadline_ms ? call->deadline_ms - now_ms() : INT64_MAX;
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *dst, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *user);

static int submit_headers(gcall *call)
{
    if (call->headers_sent)
        return 0;
    nghttp2_nv hdrs[] = {nv(":status", "200"), nv("content-type", "application/grpc")};
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = data_read};
    call->headers_sent = 1;
    return nghttp2_submit_response(call->h->ng, call->id, hdrs, 2, &prd);
}

/* The status as header fields: grpc-status, grpc-message, extra trailers.
 * `head` adds ":status" and "content-type" (a trailers-only response). */
static void submit_status(gcall *call, int head)
{
    nghttp2_nv hdrs[24];
    size_t n = 0;
    char code[16];
    snprintf(code, sizeof code, "%d", call->status);
    if (head) {
        hdrs[n++] = nv(":status", "200");
        hdrs[n++] = nv("content-type", "application/grpc");
    }
    hdrs[n++] = nv("grpc-status", code);
    char *msg = call->status_msg && *call->status_msg ? percent_encode(call->status_msg) : NULL;
    if (msg)
        hdrs[n++] = nv("grpc-message", msg);
    for (size_t off = 0; off < call->trailers.len && n + 1 < sizeof hdrs / sizeof hdrs[0];) {
        const char *name = (const char *)call->trailers.p + off;
        const char *value = name + strlen(name) + 1;
        hdrs[n++] = nv(name, value);
        off = (size_t)(value + strlen(value) + 1 - (const char *)call->trailers.p);
    }
    if (head)
        nghttp2_submit_response(call->h->ng, call->id, hdrs, n, NULL);
    else
        nghttp2_submit_trailer(call->h->ng, call->id, hdrs, n);
    call->trailers_sent = 1;
    free(msg);
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *dst, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)ng;
    (void)id;
    (void)user;
    gcall *call = src->ptr;
    size_t avail = call->out.len - call->out_off;
    size_t n = avail < length ? avail : length;
    if (n) {
        memcpy(dst, call->out.p + call->out_off, n);
        call->out_off += n;
        if (call->out_off == call->out.len)
            call->out.len = call->out_off = 0;
    }
    if (call->out.len == call->out_off) {
        if (call->done) {
            *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (!call->trailers_sent)
                submit_status(call, 0);
            return (ssize_t)n;
        }
        if (!n) {
            call->deferred = 1;
            grpc_want_more(call);
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    if (!call->done && grpc_out_pending(call) < grpc_out_low(call))
        grpc_want_more(call);
    return (ssize_t)n;
}

static void resume(gcall *call)
{
    if (call->deferred && !call->closed) {
        call->deferred = 0;
        nghttp2_session_resume_data(call->h->ng, call->id);
    }
}

void grpc_send(gcall *call, const ProtobufCMessage *msg)
{
    if (call->done || call->closed)
        return;
    size_t len = protobuf_c_message_get_packed_size(msg);
    buf *b = &call->out;
    /* Keep the queue compact: what was sent is dropped once it is most of
     * the buffer. */
    if (call->out_off > (64u << 10) && call->out_off * 2 > b->len) {
        memmove(b->p, b->p + call->out_off, b->len - call->out_off);
        b->len -= call->out_off;
        call->out_off = 0;
    }
    if (len > UINT32_MAX || buf_reserve(b, 5 + len)) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "response message too large for memory");
        return;
    }
    uint8_t *p = b->p + b->len;
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    protobuf_c_message_pack(msg, p + 5);
    b->len += 5 + len;
    submit_headers(call);
    resume(call);
}

void grpc_trailer(gcall *call, const char *name, const char *value)
{
    buf_append(&call->trailers, name, strlen(name) + 1);
    /* Header values may not hold line breaks or NULs; event store names
     * and messages never do, but be safe. */
    size_t start = call->trailers.len;
    buf_append(&call->trailers, value, strlen(value) + 1);
    for (size_t i = start; i + 1 < call->trailers.len; i++)
        if (call->trailers.p[i] == '\r' || call->trailers.p[i] == '\n')
            call->trailers.p[i] = ' ';
}

void grpc_finish(gcall *call, int status, const char *message)
{
    if (call->done)
        return;
    call->done = 1;
    call->status = status;
    call->status_msg = strdup(message ? message : "");
    more_remove(call->h, call);
    server_log(call->c->srv, status == GRPC_OK ? 2 : (status == GRPC_INTERNAL ? 1 : 2),
               "msg=\"grpc call\" path=\"%.*s\" status=%d message=\"%s\"", (int)call->path.len,
               call->path.p ? (const char *)call->path.p : "", status, message ? message : "");
    if (call->closed)
        return;
    if (!call->headers_sent) {
        call->headers_sent = 1;
        submit_status(call, 1);
    } else {
        resume(call); /* data_read sends the trailers once `out` is empty */
    }
}

/* A plain HTTP answer for requests that are not gRPC at all. */
static void respond_http(gcall *call, const char *status)
{
    nghttp2_nv hdrs[] = {nv(":status", status)};
    call->done = call->headers_sent = call->trailers_sent = 1;
    nghttp2_submit_response(call->h->ng, call->id, hdrs, 1, NULL);
}

/* ------------------------------------------------------------ message memory */

/* Each request message is decoded into an arena: protobuf-c's many small
 * allocations (every event, map entry and string of an append) come from
 * one block sized for the message, and are all freed at once. */
typedef struct arena_block {
    struct arena_block *next;
    size_t cap, used;
    max_align_t data[];
} arena_block;

typedef struct arena {
    ProtobufCAllocator a;
    arena_block *head;
} arena;

static void *arena_alloc(void *ud, size_t n)
{
    arena *ar = ud;
    n = (n + 15) & ~(size_t)15;
    arena_block *b = ar->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > (64u << 10) ? n : (64u << 10);
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = ar->head;
        ar->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static void arena_nofree(void *ud, void *p)
{
    (void)ud;
    (void)p;
}

/* An arena whose first block has room for about `hint` bytes. */
static arena *arena_new(size_t hint)
{
    size_t cap = (hint + 15) & ~(size_t)15;
    arena_block *b = malloc(sizeof *b + sizeof(arena) + cap);
    if (!b)
        return NULL;
    b->next = NULL;
    b->cap = sizeof(arena) + cap;
    b->used = sizeof(arena);
    arena *ar = (arena *)b->data;
    ar->a.alloc = arena_alloc;
    ar->a.free = arena_nofree;
    ar->a.allocator_data = ar;
    ar->head = b;
    return ar;
}

void grpc_msg_free(void *handle)
{
    arena *ar = handle;
    if (!ar)
        return;
    arena_block *b = ar->head;
    while (b) {
        arena_block *next = b->next;
        free(b); /* the arena itself lives in the first (last freed) block */
        b = next;
    }
}

static arena *g_delivering; /* the arena of the message in on_msg */

void *grpc_keep(gcall *call)
{
    call->kept = 1;
    return g_delivering;
}

/* ------------------------------------------------------------ requests */

static void start_call(gcall *call)
{
    server *s = call->c->srv;
    s->m.requests++;
    if (call->not_post) {
        respond_http(call, "405");
        return;
    }
    if (call->bad_content_type) {
        respond_http(call, "415");
        return;
    }
    const grpc_method *m = grpc_find_method((const char *)call->path.p, call->path.len);
    if (!m) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown method %.*s",
                 (int)(call->path.len > 200 ? 200 : call->path.len),
                 call->path.p ? (const char *)call->path.p : "");
        grpc_finish(call, GRPC_UNIMPLEMENTED, msg);
        return;
    }
    if (call->bad_encoding) {
        grpc_trailer(call, "grpc-accept-encoding", "identity");
        grpc_finish(call, GRPC_UNIMPLEMENTED,
                    "compressed messages are not supported: send grpc-encoding identity");
        return;
    }
    if (s->stopping || call->h->goaway) {
        grpc_finish(call, GRPC_UNAVAILABLE, "the server is shutting down");
        return;
    }
    if (limits_over(s)) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, BUSY_MESSAGE);
        return;
    }
    call->m = m;
    access_grpc_start(call); /* may finish the call, or make it wait (auth_wait) */
}

static void deframe(gcall *call)
{
    h2_session *h = call->h;
    server *s = call->c->srv;
    while (!call->done && !call->auth_wait) {
        size_t avail = call->in.len - call->in_off;
        if (avail < 5)
            break;
        const uint8_t *p = call->in.p + call->in_off;
        uint32_t len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (p[0] > 1) {
            grpc_finish(call, GRPC_INTERNAL, "invalid gRPC message prefix (compressed-flag > 1)");
            break;
        }
        if (p[0] == 1) {
            /* Only identity encoding is accepted (start_call), so a
             * compressed message is a protocol error (gRPC spec). */
            grpc_finish(call, GRPC_INTERNAL,
                        "compressed message without a grpc-encoding: compression is not supported");
            break;
        }
        if (len > s->cfg.max_body_bytes) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "request message of %u bytes is larger than the server's limit of %zu bytes",
                     len, s->cfg.max_body_bytes);
            grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, msg);
            break;
        }
        if (avail < 5 + (size_t)len) {
            /* Room for the whole message at once (no growing copies). */
            if (buf_reserve(&call->in, 5 + (size_t)len - avail)) {
                grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory for the request");
                break;
            }
            break;
        }
        arena *ar = arena_new(2 * (size_t)len + 512);
        ProtobufCMessage *msg =
            ar ? protobuf_c_message_unpack(call->m->req, &ar->a, len, p + 5) : NULL;
        call->in_off += 5 + len;
        h->in_buffered -= 5 + len;
        if (!msg) {
            grpc_msg_free(ar);
            char text[300];
            snprintf(text, sizeof text, "malformed protobuf: cannot decode %s from %u bytes",
                     call->m->req->name, len);
            grpc_finish(call, GRPC_INTERNAL, text);
            break;
        }
        if (!call->m->client_streaming && call->nmsgs_in) {
            grpc_msg_free(ar);
            call->rest_unread = 1;
            grpc_finish(call, GRPC_INTERNAL, "more than one request message for a unary method");
            break;
        }
        if (call->nmsgs_in < 3)
            call->nmsgs_in++;
        if (access_grpc_msg(call, msg) != 0) {
            grpc_msg_free(ar);
            call->rest_unread = 1;
            break;
        }
        call->kept = 0;
        g_delivering = ar;
        call->m->on_msg(call, msg);
        g_delivering = NULL;
        if (!call->kept)
            grpc_msg_free(ar);
    }
    if (call->in_off == call->in.len) {
        call->in.len = call->in_off = 0;
        if (call->in.cap > (1u << 20))
            buf_free(&call->in);
    } else if (call->in_off > (1u << 20)) {
        memmove(call->in.p, call->in.p + call->in_off, call->in.len - call->in_off);
        call->in.len -= call->in_off;
        call->in_off = 0;
    }
    if (call->done) {
        if (call->in.len != call->in_off)
            call->rest_unread = 1;
        h->in_buffered -= call->in.len - call->in_off;
        buf_free(&call->in);
        call->in_off = 0;
    }
}

static void request_complete(gcall *call);

static void end_of_request(gcall *call)
{
    if (call->half_closed)
        return;
    call->half_closed = 1;
    request_complete(call);
}

void h2_auth_resume(gcall *call)
{
    if (call->done || call->closed)
        return;
    deframe(call);
    if (call->half_closed)
        request_complete(call);
    h2_pump(call->c);
}

/* The client sent its whole request (END_STREAM). */
static void request_complete(gcall *call)
{
    if (call->done || !call->m || call->auth_wait)
        return;
    if (call->in.len != call->in_off) {
        grpc_finish(call, GRPC_INTERNAL, "the request ended inside a message");
        return;
    }
    if (!call->m->client_streaming && !call->nmsgs_in) {
        grpc_finish(call, GRPC_INTERNAL, "the request has no message");
        return;
    }
    if (call->m->on_end)
        call->m->on_end(call);
}

/* ------------------------------------------------------------ nghttp2 callbacks */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    h2_session *h = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    gcall *call = calloc(1, sizeof *call);
    if (!call)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    call->c = h->c;
    call->h = h;
    call->id = frame->hd.stream_id;
    call->next = h->calls;
    if (h->calls)
        h->calls->prev = call;
    h->calls = call;
    h->open_calls++;
    nghttp2_session_set_stream_user_data(ng, call->id, call);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    (void)flags;
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers from the client carry nothing we use */
    gcall *call = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!call)
        return 0;
    if (name_is(name, namelen, ":path")) {
        call->path.len = 0;
        if (buf_append(&call->path, value, valuelen) || buf_append(&call->path, "", 1))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        call->path.len--; /* NUL-terminated, not counted */
    } else if (name_is(name, namelen, ":method")) {
        call->not_post = !(valuelen == 4 && !memcmp(value, "POST", 4));
    } else if (name_is(name, namelen, "content-type")) {
        /* application/grpc, application/grpc+proto, application/grpc;... */
        call->bad_content_type =
            !(valuelen >= 16 && !memcmp(value, "application/grpc", 16) &&
              (valuelen == 16 || value[16] == '+' || value[16] == ';'));
    } else if (name_is(name, namelen, "authorization")) {
        if (!call->authz && valuelen < 1024 && !memchr(value, 0, valuelen)) {
            call->authz = malloc(valuelen + 1);
            if (!call->authz)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            memcpy(call->authz, value, valuelen);
            call->authz[valuelen] = 0;
        }
    } else if (name_is(name, namelen, "grpc-encoding")) {
        call->bad_encoding = !(valuelen == 8 && !memcmp(value, "identity", 8));
    } else if (name_is(name, namelen, "grpc-timeout")) {
        int64_t ms = parse_timeout(value, valuelen);
        if (ms >= 0) {
            call->deadline_ms = now_ms() + (ms ? ms : 1);
            call->timeout_given = 1;
        }
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    h2_session *h = user;
    gcall *call = frame->hd.stream_id
                      ? nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id)
                      : NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!call)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
            start_call(call);
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            end_of_request(call);
        break;
    case NGHTTP2_DATA:
        if (call && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            end_of_request(call);
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            h->ping_sent_ms = 0;
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    (void)flags;
    h2_session *h = user;
    gcall *call = nghttp2_session_get_stream_user_data(ng, id);
    if (call && len && (call->done || !call->m))
        call->rest_unread = 1;
    if (!call || call->done || !call->m)
        return 0; /* answered already: the rest of the request is dropped */
    if (h->in_buffered + len > CONN_IN_MAX) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED,
                    "too many request bytes buffered on this connection");
        return 0;
    }
    if (buf_append(&call->in, data, len)) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory for the request");
        return 0;
    }
    h->in_buffered += len;
    deframe(call);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user)
{
    (void)error_code;
    h2_session *h = user;
    gcall *call = nghttp2_session_get_stream_user_data(ng, id);
    if (call)
        call_closed(h, call);
    return 0;
}

/* Whether the client may still be sending request content that will never
 * be read (as opposed to only the END_STREAM of a request that arrived
 * whole): see the top of the file. */
static int request_unfinished(const gcall *call)
{
    return !call->m || call->m->client_streaming || call->nmsgs_in == 0 || call->rest_unread;
}

/* After our final HEADERS (trailers or a trailers-only response) went out
 * while the client is still sending: reset the stream so it stops, unless
 * all it still owes is END_STREAM. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    h2_session *h = user;
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    gcall *call = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!call || call->half_closed || call->closed)
        return 0;
    call->final_sent = 1;
    if (h->goaway || request_unfinished(call)) {
        server_log(call->c->srv, 2, "msg=\"grpc stream reset after its status\" path=\"%s\" stream=%d",
                   call->path.p ? (const char *)call->path.p : "", (int)frame->hd.stream_id);
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_error(nghttp2_session *ng, int code, const char *msg, size_t len, void *user)
{
    (void)ng;
    h2_session *h = user;
    server_log(h->c->srv, 2, "msg=\"http2 error\" fd=%d code=%d error=\"%.*s\"", h->c->fd, code,
               (int)len, msg);
    return 0;
}

/* ------------------------------------------------------------ the session */

int h2_detect(conn *c)
{
    size_t avail = c->in.len - c->in_off;
    size_t n = avail < 24 ? avail : 24;
    if (memcmp(c->in.p + c->in_off, PREFACE, n) != 0)
        return 0;
    if (n < 24)
        return -1;
    h2_session *h = calloc(1, sizeof *h);
    nghttp2_session_callbacks *cbs = NULL;
    if (!h || nghttp2_session_callbacks_new(&cbs) != 0) {
        free(h);
        conn_close(c);
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
    int rc = nghttp2_session_server_new(&h->ng, cbs, h);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0) {
        free(h);
        conn_close(c);
        return -1;
    }
    h->c = c;
    c->h2 = h;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)c->srv->cfg.max_streams_per_connection},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->srv->cfg.max_header_bytes},
    };
    nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    server_log(c->srv, 2, "msg=\"http2 connection\" fd=%d", c->fd);
    return 1;
}

void h2_conn_process(conn *c)
{
    h2_session *h = c->h2;
    if (c->in_off < c->in.len) {
        ssize_t n = nghttp2_session_mem_recv(h->ng, c->in.p + c->in_off, c->in.len - c->in_off);
        if (n < 0) {
            server_log(c->srv, 2, "msg=\"http2 protocol error\" fd=%d error=\"%s\"", c->fd,
                       nghttp2_strerror((int)n));
            c->in.len = c->in_off = 0;
            if (n != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
                nghttp2_session_terminate_session(h->ng, NGHTTP2_PROTOCOL_ERROR);
            h2_pump(c); /* the GOAWAY, if any */
            conn_close(c);
            return;
        }
        c->in_off += (size_t)n;
    }
    h2_pump(c);
}

/* Produce for the calls that asked for it, while their queues are short. */
static void run_more(h2_session *h)
{
    gcall *list = h->more_head;
    h->more_head = h->more_tail = NULL;
    while (list) {
        gcall *call = list;
        list = call->more_next;
        call->more_next = NULL;
        call->want_more = 0;
        if (!call->done && !call->closed && grpc_out_pending(call) < grpc_out_low(call))
            call->m->on_more(call);
    }
}

void h2_pump(conn *c)
{
    h2_session *h = c->h2;
    if (!h || c->fd < 0)
        return;
    if (h->pumping) {
        h->repump = 1;
        return;
    }
    h->pumping = 1;
    do {
        h->repump = 0;
        while (c->out.len - c->out_off < CONN_OUT_HIGH) {
            if (h->more_head)
                run_more(h);
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(h->ng, &data);
            if (n < 0) {
                server_log(c->srv, 0, "msg=\"http2 send failed\" error=\"%s\"",
                           nghttp2_strerror((int)n));
                conn_close(c);
                goto out;
            }
            if (n == 0) {
                if (!h->more_head)
                    break;
                continue;
            }
            if (buf_append(&c->out, data, (size_t)n)) {
                conn_close(c);
                goto out;
            }
        }
        if (c->out.len > c->out_off)
            conn_flush(c); /* a full drain comes back through h2_writable */
        if (c->fd < 0)
            goto out;
    } while (h->repump);
    if (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng) &&
        c->out.len == c->out_off)
        conn_close(c);
out:
    h->pumping = 0;
}

void h2_writable(conn *c) { h2_pump(c); }

void h2_tick(conn *c, int64_t now)
{
    h2_session *h = c->h2;
    server *s = c->srv;
    for (gcall *call = h->calls; call; call = call->next)
        if (!call->done && call->deadline_ms && now >= call->deadline_ms)
            grpc_finish(call, GRPC_DEADLINE_EXCEEDED, "the call's deadline (grpc-timeout) passed");
    if (h->ping_sent_ms) {
        int64_t limit = s->cfg.idle_timeout_ms < PING_TIMEOUT_MS ? s->cfg.idle_timeout_ms : PING_TIMEOUT_MS;
        if (now - h->ping_sent_ms > limit) {
            server_log(s, 2, "msg=\"keepalive ping not answered\" fd=%d", c->fd);
            conn_close(c);
            return;
        }
    } else if (now - c->last_activity_ms > s->cfg.idle_timeout_ms) {
        nghttp2_submit_ping(h->ng, NGHTTP2_FLAG_NONE, NULL);
        h->ping_sent_ms = now;
    }
    if (c->stalled_since_ms && now - c->stalled_since_ms > s->cfg.request_timeout_ms) {
        server_log(s, 2, "msg=\"client stopped reading\" fd=%d", c->fd);
        conn_close(c);
        return;
    }
    h2_pump(c);
}

int h2_stop(conn *c)
{
    h2_session *h = c->h2;
    if (!h->goaway) {
        h->goaway = 1;
        nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(h->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
        /* Appends in flight finish; everything else ends now. */
        for (gcall *call = h->calls; call; call = call->next) {
            if (!call->done && !call->pending)
                grpc_finish(call, GRPC_UNAVAILABLE, "the server is shutting down");
            else if (call->final_sent && !call->half_closed && !call->closed)
                nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_NO_ERROR);
        }
        h2_pump(c);
    }
    if (c->fd < 0)
        return 0;
    return h->open_calls == 0 && c->out.len == c->out_off && !nghttp2_session_want_write(h->ng);
}

void h2_free(conn *c)
{
    h2_session *h = c->h2;
    while (h->calls) {
        gcall *call = h->calls;
        if (!call->closed) {
            call->closed = 1;
            h->open_calls--;
            if (call->m && call->m->on_close)
                call->m->on_close(call);
        }
        call->pending = 0;
        call_free(h, call);
    }
    nghttp2_session_del(h->ng);
    free(h);
    c->h2 = NULL;
}
