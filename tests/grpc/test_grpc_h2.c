/*
 * test_grpc_h2.c - the gRPC server at the HTTP/2 level, against a real
 * `stele serve` ($STELE_CLI), with an nghttp2 client written here: what
 * the official clients never do.
 *
 *   - a client that stops reading the socket in the middle of a big read,
 *     and one that stops granting HTTP/2 flow-control window to a
 *     subscription: the server's anonymous memory stays bounded, other
 *     clients (and other streams of the same connection) are served, and
 *     once the window opens again the subscription delivers every event,
 *     in order, exactly once;
 *   - grpc-timeout: the server ends a call with DEADLINE_EXCEEDED;
 *   - keepalive: an idle connection gets a PING; a peer that answers
 *     nothing is disconnected;
 *   - a request whose END_STREAM comes after the server answered it: no
 *     reset after an OK status (a reset while the request content is still
 *     unread, as for an unknown method);
 *   - a client that resets a stream mid-read; 300 concurrent streams on one
 *     connection; 256 concurrent Append calls on one connection, answered,
 *     then abandoned in flight; non-POST (405) and non-gRPC content types (415);
 *     garbage after the preface (the connection is closed);
 *   - v2 multi-stream appends (AppendRecords, AppendSession) abandoned in
 *     flight: the client goes away while the worker threads commit them;
 *     each commit is whole or absent, and the server stops cleanly.
 */
#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <time.h>
#include <unistd.h>

#include "streams.pb-c.h"
#include "testutil.h"
#include "v2_streams.pb-c.h"

static int quick;
static pid_t server_pid = -1;
static int server_port;
static const char *listen_host = "127.0.0.1"; /* the server's --host */
static char connect_host[64] = "127.0.0.1";   /* where the client connects */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ the server */

static void start_server(const char *dir)
{
    const char *bin = getenv("STELE_CLI");
    CHECK(bin != NULL);
    int p[2];
    CHECK(pipe(p) == 0);
    char log[512];
    snprintf(log, sizeof log, "%s.log", dir);
    server_pid = fork();
    if (server_pid == 0) {
        /* The server dies with the test, and logs to a file (never to the
         * test's stdout, which ctest waits on). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(lfd, 1);
        dup2(lfd, 2);
        char fd[16];
        snprintf(fd, sizeof fd, "%d", p[1]);
        close(p[0]);
        setenv("STELE_READY_FD", fd, 1);
        setenv("STELE_LOG_LEVEL", "error", 0); /* STELE_LOG_LEVEL=debug to see calls */
        setenv("STELE_INSECURE", "1", 0); /* the 0.0.0.0 case: no TLS, no users */
        execl(bin, bin, "serve", "--host", listen_host, "--port", "0", "--data", dir,
              "--idle-timeout", "1", "--request-timeout", "3", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char line[64] = {0};
    size_t n = 0;
    while (n < sizeof line - 1) {
        ssize_t r = read(p[0], line + n, sizeof line - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (memchr(line, '\n', n))
            break;
    }
    close(p[0]);
    CHECK(sscanf(line, "ready %d", &server_port) == 1);
}

static int stop_server(void)
{
    kill(server_pid, SIGTERM);
    int st = 0;
    waitpid(server_pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int server_alive(void) { return kill(server_pid, 0) == 0 && waitpid(server_pid, NULL, WNOHANG) == 0; }

/* Anonymous resident memory of the server, KiB. */
static long server_rss_anon(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)server_pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)server_port)};
    inet_pton(AF_INET, connect_host, &sa.sin_addr);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* ------------------------------------------------------------ an HTTP/2 client */

typedef struct stream_rec {
    int32_t id;
    int http_status;
    int grpc_status; /* -1 until seen */
    char grpc_message[256];
    size_t data_bytes;
    uint8_t *data; /* everything received (when keep_data) */
    size_t data_len, data_cap;
    int closed;
    uint32_t rst_code;
    const uint8_t *body;
    size_t body_len, body_off;
    int keep_data;
    int hold_eos;    /* send the body but not END_STREAM (until cleared and resumed) */
    int hold_window; /* do not grant this stream flow-control window */
    size_t held;     /* bytes received and not yet granted back */
} stream_rec;

typedef struct h2c {
    int fd;
    nghttp2_session *ng;
    stream_rec st[400];
    int n;
    int pings;
    int ping_acks;
    int eof;
} h2c;

static stream_rec *rec_of(h2c *c, int32_t id)
{
    for (int i = 0; i < c->n; i++)
        if (c->st[i].id == id)
            return &c->st[i];
    return NULL;
}

static ssize_t cb_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *u)
{
    (void)s;
    (void)flags;
    h2c *c = u;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return NGHTTP2_ERR_WOULDBLOCK;
    return n < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : n;
}

static int cb_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *u)
{
    (void)s;
    (void)flags;
    stream_rec *r = rec_of(u, f->hd.stream_id);
    if (!r)
        return 0;
    char v[300];
    snprintf(v, sizeof v, "%.*s", (int)vl, value);
    if (nl == 7 && !memcmp(name, ":status", 7))
        r->http_status = atoi(v);
    else if (nl == 11 && !memcmp(name, "grpc-status", 11))
        r->grpc_status = atoi(v);
    else if (nl == 12 && !memcmp(name, "grpc-message", 12))
        snprintf(r->grpc_message, sizeof r->grpc_message, "%.200s", v);
    return 0;
}

static int cb_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *u)
{
    (void)flags;
    h2c *c = u;
    stream_rec *r = rec_of(c, id);
    /* The connection window is always granted back; a stream's only unless
     * it is being held. */
    nghttp2_session_consume_connection(s, len);
    if (!r)
        return 0;
    r->data_bytes += len;
    if (r->hold_window)
        r->held += len;
    else
        nghttp2_session_consume_stream(s, id, len);
    if (r->keep_data) {
        if (r->data_len + len > r->data_cap) {
            r->data_cap = (r->data_len + len) * 2;
            r->data = realloc(r->data, r->data_cap);
        }
        memcpy(r->data + r->data_len, data, len);
        r->data_len += len;
    }
    return 0;
}

static int cb_close(nghttp2_session *s, int32_t id, uint32_t code, void *u)
{
    (void)s;
    stream_rec *r = rec_of(u, id);
    if (r) {
        r->closed = 1;
        r->rst_code = code;
    }
    return 0;
}

static int cb_frame(nghttp2_session *s, const nghttp2_frame *f, void *u)
{
    (void)s;
    h2c *c = u;
    if (f->hd.type == NGHTTP2_PING && !(f->hd.flags & NGHTTP2_FLAG_ACK))
        c->pings++;
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK))
        c->ping_acks++;
    return 0;
}

static int cb_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *u)
{
    (void)s;
    (void)u;
    if (getenv("TEST_TRACE"))
        fprintf(stderr, "client sent frame type %d stream %d flags %d\n", f->hd.type, f->hd.stream_id,
                f->hd.flags);
    return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *u)
{
    (void)s;
    (void)id;
    (void)u;
    stream_rec *r = src->ptr;
    size_t n = r->body_len - r->body_off;
    if (n > len)
        n = len;
    if (!n && r->hold_eos)
        return NGHTTP2_ERR_DEFERRED;
    memcpy(buf, r->body + r->body_off, n);
    r->body_off += n;
    if (r->body_off == r->body_len && !r->hold_eos)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static h2c *h2c_open(void)
{
    h2c *c = calloc(1, sizeof *c);
    c->fd = tcp_connect();
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, cb_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cb_frame);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, cb_frame_send);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_session_client_new2(&c->ng, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, NULL, 0);
    return c;
}

static void h2c_close(h2c *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->st[i].data);
    nghttp2_session_del(c->ng);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

/* Start a gRPC call with a framed request body (not copied: keep it). */
static stream_rec *h2c_call(h2c *c, const char *path, const uint8_t *body, size_t len,
                            const char *timeout, const char *method, const char *ctype)
{
    nghttp2_nv nv[8];
    size_t n = 0;
#define NV(a, b) nv[n++] = (nghttp2_nv){(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), 0}
    NV(":method", method ? method : "POST");
    NV(":scheme", "http");
    NV(":authority", "127.0.0.1");
    NV(":path", path);
    NV("content-type", ctype ? ctype : "application/grpc");
    NV("te", "trailers");
    if (timeout)
        NV("grpc-timeout", timeout);
#undef NV
    stream_rec *r = &c->st[c->n++];
    memset(r, 0, sizeof *r);
    r->grpc_status = -1;
    r->body = body;
    r->body_len = len;
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = body_read};
    r->id = nghttp2_submit_request(c->ng, NULL, nv, n, &prd, NULL);
    CHECK(r->id > 0);
    return r;
}

/* Exchange frames for up to `ms`, or until done(c, arg) is true. */
static int h2c_run(h2c *c, int ms, int (*done)(h2c *, void *), void *arg)
{
    int64_t end = mono_ms() + ms;
    for (;;) {
        if (nghttp2_session_send(c->ng) != 0)
            return -1;
        if (done && done(c, arg))
            return 1;
        int64_t left = end - mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(left > 50 ? 50 : left)) > 0) {
            uint8_t buf[65536];
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r <= 0) {
                c->eof = 1;
                return -1;
            }
            if (nghttp2_session_mem_recv(c->ng, buf, (size_t)r) < 0)
                return -1;
        }
    }
}

static int rec_closed(h2c *c, void *arg)
{
    (void)c;
    return ((stream_rec *)arg)->closed;
}

static int acks_reach(h2c *c, void *arg) { return c->ping_acks >= *(int *)arg; }

/* A PING and its ACK: the server handled everything sent before it, and
 * what it sent in answer (frames go out in order) has arrived. */
static int h2c_roundtrip(h2c *c)
{
    int want = c->ping_acks + 1;
    nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
    return h2c_run(c, 30000, acks_reach, &want) == 1;
}

static int status_seen(h2c *c, void *arg)
{
    (void)c;
    return ((stream_rec *)arg)->grpc_status >= 0;
}

static int all_closed(h2c *c, void *arg)
{
    (void)arg;
    for (int i = 0; i < c->n; i++)
        if (!c->st[i].closed)
            return 0;
    return 1;
}

/* ------------------------------------------------------------ messages */

/* A protobuf-c message framed as one gRPC message (malloc'ed). */
static uint8_t *frame(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n + 5);
    b[0] = 0;
    b[1] = (uint8_t)(n >> 24);
    b[2] = (uint8_t)(n >> 16);
    b[3] = (uint8_t)(n >> 8);
    b[4] = (uint8_t)n;
    protobuf_c_message_pack(m, b + 5);
    *len = n + 5;
    return b;
}

/* A Read request: $all (stream NULL) or a stream, from the start; a read
 * of `count` events or (count 0) a subscription. */
static uint8_t *read_req(const char *stream, uint64_t count, size_t *len)
{
    EventStore__Client__Empty e = EVENT_STORE__CLIENT__EMPTY__INIT;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    EventStore__Client__Streams__ReadReq__Options__StreamOptions so =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__INIT;
    EventStore__Client__Streams__ReadReq__Options__AllOptions ao =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__INIT;
    EventStore__Client__Streams__ReadReq__Options__SubscriptionOptions sub =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__SUBSCRIPTION_OPTIONS__INIT;
    EventStore__Client__Streams__ReadReq__Options o = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__INIT;
    if (stream) {
        sid.stream_name.data = (uint8_t *)stream;
        sid.stream_name.len = strlen(stream);
        so.stream_identifier = &sid;
        so.revision_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_START;
        so.start = &e;
        o.stream_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_STREAM;
        o.stream = &so;
    } else {
        ao.all_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_START;
        ao.start = &e;
        o.stream_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_ALL;
        o.all = &ao;
    }
    if (count) {
        o.count_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_COUNT;
        o.count = count;
    } else {
        o.count_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_SUBSCRIPTION;
        o.subscription = &sub;
    }
    o.filter_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTION_NO_FILTER;
    o.no_filter = &e;
    EventStore__Client__Streams__ReadReq r = EVENT_STORE__CLIENT__STREAMS__READ_REQ__INIT;
    r.options = &o;
    return frame(&r.base, len);
}

/* An Append of `n` events of `size` bytes each to `stream` (framed
 * messages concatenated). */
static uint8_t *append_req(const char *stream, int n, size_t size, size_t *len)
{
    EventStore__Client__Empty e = EVENT_STORE__CLIENT__EMPTY__INIT;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)stream;
    sid.stream_name.len = strlen(stream);
    EventStore__Client__Streams__AppendReq__Options o = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__OPTIONS__INIT;
    o.stream_identifier = &sid;
    o.expected_stream_revision_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__OPTIONS__EXPECTED_STREAM_REVISION_ANY;
    o.any = &e;
    EventStore__Client__Streams__AppendReq r = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__INIT;
    r.content_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_OPTIONS;
    r.options = &o;
    size_t l0;
    uint8_t *first = frame(&r.base, &l0);
    uint8_t *data = malloc(size);
    memset(data, 'x', size);
    EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry m1 =
        EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__PROPOSED_MESSAGE__METADATA_ENTRY__INIT;
    EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry m2 = m1;
    m1.key = "type";
    m1.value = "Blob";
    m2.key = "content-type";
    m2.value = "application/octet-stream";
    EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry *meta[] = {&m1, &m2};
    EventStore__Client__Streams__AppendReq__ProposedMessage pm =
        EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__PROPOSED_MESSAGE__INIT;
    pm.n_metadata = 2;
    pm.metadata = meta;
    pm.data.data = data;
    pm.data.len = size;
    EventStore__Client__Streams__AppendReq r2 = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__INIT;
    r2.content_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_PROPOSED_MESSAGE;
    r2.proposed_message = &pm;
    size_t l1;
    uint8_t *one = frame(&r2.base, &l1);
    uint8_t *all = malloc(l0 + (size_t)n * l1);
    memcpy(all, first, l0);
    for (int i = 0; i < n; i++)
        memcpy(all + l0 + (size_t)i * l1, one, l1);
    *len = l0 + (size_t)n * l1;
    free(first);
    free(one);
    free(data);
    return all;
}

/* Count the ReadResp events in a response body; checks every message
 * decodes, and that event revisions of `stream` run 0, 1, 2 ... */
static int count_events(const uint8_t *p, size_t len, int *caught_up, int *in_order)
{
    int n = 0;
    *in_order = 1;
    *caught_up = 0;
    for (size_t off = 0; off + 5 <= len;) {
        uint32_t l = (uint32_t)p[off + 1] << 24 | (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 8 | p[off + 4];
        if (off + 5 + l > len)
            break;
        EventStore__Client__Streams__ReadResp *r =
            event_store__client__streams__read_resp__unpack(NULL, l, p + off + 5);
        CHECK(r != NULL);
        if (r && r->content_case == EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_EVENT) {
            if (r->event->event->stream_revision != (uint64_t)n)
                *in_order = 0;
            n++;
        }
        if (r && r->content_case == EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CAUGHT_UP)
            *caught_up = 1;
        event_store__client__streams__read_resp__free_unpacked(r, NULL);
        off += 5 + l;
    }
    return n;
}

/* One unary call on a fresh connection; returns its grpc-status. */
static int quick_call_status(const char *path, const uint8_t *body, size_t len)
{
    h2c *c = h2c_open();
    stream_rec *r = h2c_call(c, path, body, len, NULL, NULL, NULL);
    h2c_run(c, 10000, rec_closed, r);
    int st = r->grpc_status;
    h2c_close(c);
    return st;
}

static int features_status(void)
{
    static const uint8_t empty[5] = {0};
    return quick_call_status("/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
                             empty, 5);
}

/* ------------------------------------------------------------ the tests */

#define EVENT_SIZE (64u << 10)

static void fill_store(int events)
{
    h2c *c = h2c_open();
    int per = 16; /* 1 MiB commits: the engine reads a commit whole */
    for (int done = 0; done < events; done += per) {
        size_t len;
        uint8_t *body = append_req("big", per, EVENT_SIZE, &len);
        stream_rec *r = h2c_call(c, "/event_store.client.streams.Streams/Append", body, len, NULL,
                                 NULL, NULL);
        h2c_run(c, 60000, rec_closed, r);
        CHECK(r->grpc_status == 0);
        free(body);
        c->n = 0; /* reuse the slots */
    }
    h2c_close(c);
}

/* A client that sends a big read and then never reads its socket. */
static void test_socket_stall(int events)
{
    long before = server_rss_anon();
    h2c *c = h2c_open();
    size_t len;
    uint8_t *body = read_req(NULL, (uint64_t)events, &len);
    h2c_call(c, "/event_store.client.streams.Streams/Read", body, len, NULL, NULL, NULL);
    nghttp2_session_send(c->ng); /* the request goes out; nothing is read back */
    usleep(1500 * 1000);
    long during = server_rss_anon();
    printf("socket stall: %d events of %u KiB requested, server anon RSS %ld -> %ld KiB\n",
           events, EVENT_SIZE >> 10, before, during);
    /* Everything requested is events * 64 KiB; what the server may hold is
     * one page plus its queues. */
    CHECK(during - before < 16 * 1024);
    CHECK(features_status() == 0); /* others are served meanwhile */
    CHECK(server_alive());
    h2c_close(c);
    free(body);
}

/* A subscription whose HTTP/2 window is held: the server stops, serves the
 * same connection's other streams, then resumes with nothing lost. */
static void test_window_stall(int events)
{
    long before = server_rss_anon();
    h2c *c = h2c_open();
    size_t len;
    uint8_t *body = read_req("big", 0, &len);
    stream_rec *sub = h2c_call(c, "/event_store.client.streams.Streams/Read", body, len, NULL, NULL,
                               NULL);
    sub->hold_window = 1;
    sub->keep_data = 1;
    h2c_run(c, 1500, NULL, NULL);
    long during = server_rss_anon();
    printf("window stall: got %zu bytes of ~%d MiB, server anon RSS %ld -> %ld KiB\n",
           sub->data_bytes, (int)((size_t)events * EVENT_SIZE >> 20), before, during);
    CHECK(sub->data_bytes < (2u << 20)); /* the initial window, not the stream */
    CHECK(during - before < 16 * 1024);
    /* Another stream of the same connection still gets its answer. */
    static const uint8_t empty[5] = {0};
    stream_rec *other = h2c_call(c, "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
                                 empty, 5, NULL, NULL, NULL);
    h2c_run(c, 5000, rec_closed, other);
    CHECK(other->grpc_status == 0);
    /* Open the window: every event arrives, in order, then caught-up. */
    sub = &c->st[0];
    sub->hold_window = 0;
    nghttp2_session_consume_stream(c->ng, sub->id, sub->held);
    sub->held = 0;
    int n = 0, caught = 0, in_order = 0;
    int64_t end = mono_ms() + 60000;
    while (mono_ms() < end) {
        h2c_run(c, 200, NULL, NULL);
        n = count_events(sub->data, sub->data_len, &caught, &in_order);
        if (caught)
            break;
    }
    printf("window stall: after resuming, %d events (want %d), caught up %d, in order %d\n", n,
           events, caught, in_order);
    CHECK(n == events);
    CHECK(caught);
    CHECK(in_order);
    CHECK(!sub->closed);
    h2c_close(c);
    free(body);
}

static void test_deadline(void)
{
    h2c *c = h2c_open();
    size_t len;
    uint8_t *body = read_req("quiet-stream", 0, &len); /* a subscription: never ends */
    int64_t t0 = mono_ms();
    stream_rec *r = h2c_call(c, "/event_store.client.streams.Streams/Read", body, len, "300m", NULL, NULL);
    h2c_run(c, 5000, rec_closed, r);
    printf("deadline: status %d after %lld ms\n", r->grpc_status, (long long)(mono_ms() - t0));
    CHECK(r->closed);
    CHECK(r->grpc_status == 4); /* DEADLINE_EXCEEDED, from the server */
    h2c_close(c);
    free(body);
}

static void test_keepalive(void)
{
    /* An idle connection is pinged (--idle-timeout 1) and, answering,
     * stays usable. */
    h2c *c = h2c_open();
    h2c_run(c, 3500, NULL, NULL);
    printf("keepalive: %d pings from the server\n", c->pings);
    CHECK(c->pings >= 1);
    CHECK(!c->eof);
    static const uint8_t empty[5] = {0};
    stream_rec *r = h2c_call(c, "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
                             empty, 5, NULL, NULL, NULL);
    h2c_run(c, 5000, rec_closed, r);
    CHECK(r->grpc_status == 0);
    h2c_close(c);

    /* A peer that sends the preface and then never answers is closed. */
    int fd = tcp_connect();
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    CHECK(send(fd, preface, sizeof preface - 1, 0) == (ssize_t)(sizeof preface - 1));
    int64_t t0 = mono_ms();
    int closed = 0;
    while (mono_ms() - t0 < 10000) {
        char buf[4096];
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) > 0) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) {
                closed = 1;
                break;
            }
        }
    }
    printf("keepalive: a silent peer was closed after %lld ms\n", (long long)(mono_ms() - t0));
    CHECK(closed);
    close(fd);
}

static void test_reset_and_many(void)
{
    h2c *c = h2c_open();
    size_t len;
    uint8_t *body = read_req(NULL, 1000000, &len);
    stream_rec *r = h2c_call(c, "/event_store.client.streams.Streams/Read", body, len, NULL, NULL, NULL);
    h2c_run(c, 300, NULL, NULL);
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, r->id, NGHTTP2_CANCEL);
    h2c_run(c, 300, NULL, NULL);
    CHECK(r->closed);
    /* Now 300 reads at once on the same connection. */
    size_t alen;
    uint8_t *abody = append_req("small", 3, 1000, &alen);
    stream_rec *a = h2c_call(c, "/event_store.client.streams.Streams/Append", abody, alen, NULL, NULL, NULL);
    h2c_run(c, 10000, rec_closed, a);
    CHECK(a->grpc_status == 0);
    free(abody);
    uint8_t *small = read_req("small", 3, &len);
    int first = c->n;
    for (int i = 0; i < 300; i++) {
        stream_rec *s = h2c_call(c, "/event_store.client.streams.Streams/Read", small, len, NULL, NULL, NULL);
        s->keep_data = 1;
    }
    int64_t t0 = mono_ms();
    h2c_run(c, 30000, all_closed, NULL);
    size_t total = 0;
    int nclosed = 0;
    for (int i = first; i < c->n; i++) {
        total += c->st[i].data_bytes;
        nclosed += c->st[i].closed;
    }
    printf("many streams: %lld ms, %d closed, %zu bytes, eof %d\n", (long long)(mono_ms() - t0), nclosed, total, c->eof);
    int ok = 0;
    for (int i = first; i < c->n; i++) {
        int caught, in_order;
        if (c->st[i].grpc_status == 0 &&
            count_events(c->st[i].data, c->st[i].data_len, &caught, &in_order) == 3 && in_order)
            ok++;
    }
    printf("many streams: %d of 300 complete with 3 events (first: closed %d, http %d, grpc %d \"%s\", %zu bytes)\n",
           ok, c->st[first].closed, c->st[first].http_status, c->st[first].grpc_status,
           c->st[first].grpc_message, c->st[first].data_len);
    CHECK(ok == 300);
    h2c_close(c);
    free(body);
    free(small);
}

/* 256 Append calls at once on one connection, as a KurrentDB client
 * multiplexes them: the server answers the calls completed by one batch of
 * commits with one pump of the connection (drain_completions), and every
 * call gets its OK. Then the same 256 abandoned in flight: the client
 * closes the connection while they commit, and the server (which holds the
 * connection until that pump) survives and serves the next client. */
static void test_many_appends(void)
{
    static uint8_t *bodies[256];
    size_t lens[256];
    for (int round = 0; round < 2; round++) {
        h2c *c = h2c_open();
        /* The server's SETTINGS first: 256 calls exceed its 100 concurrent
         * streams, so the client must know to queue the rest. */
        CHECK(h2c_roundtrip(c));
        int first = c->n;
        for (int i = 0; i < 256; i++) {
            char name[64];
            snprintf(name, sizeof name, "many-append-%d-%d-%d", (int)getpid(), round, i);
            bodies[i] = append_req(name, 1 + i % 3, 100, &lens[i]);
            h2c_call(c, "/event_store.client.streams.Streams/Append", bodies[i], lens[i], NULL, NULL,
                     NULL);
        }
        if (round == 0) {
            h2c_run(c, 30000, all_closed, NULL);
            int ok = 0;
            for (int i = first; i < c->n; i++)
                ok += c->st[i].closed && c->st[i].grpc_status == 0;
            printf("many appends: %d of 256 answered OK on one connection (first: closed %d, "
                   "grpc %d, rst %u)\n", ok, c->st[first].closed, c->st[first].grpc_status,
                   c->st[first].rst_code);
            CHECK(ok == 256);
        } else {
            h2c_run(c, 20, NULL, NULL); /* the requests leave, the answers are not read */
        }
        h2c_close(c);
        for (int i = 0; i < 256; i++)
            free(bodies[i]);
    }
    CHECK(server_alive());
    h2c *c = h2c_open();
    size_t len;
    uint8_t *body = append_req("many-append-after", 1, 100, &len);
    stream_rec *r = h2c_call(c, "/event_store.client.streams.Streams/Append", body, len, NULL, NULL, NULL);
    h2c_run(c, 30000, rec_closed, r);
    CHECK(r->closed && r->grpc_status == 0);
    h2c_close(c);
    free(body);
}

/* One commit that ends several subscriptions at once (a tombstone): each
 * ends with FAILED_PRECONDITION (stream-deleted), and the server, which
 * wakes them all from one list, survives them leaving it. */
/* A request whose END_STREAM comes after its message (tonic/hyper send it
 * as a separate empty DATA frame, sometimes in a later TCP segment): the
 * server answers a unary or server-streaming call as soon as the message
 * is whole, and must not reset the stream after its status, since some
 * clients (the KurrentDB client's Rust core) report such a call as failed
 * (UnavailableError). A call whose request content is still unread (here:
 * an unknown method) is still reset after its status, so that the client
 * stops sending. */
static void test_late_end_stream(void)
{
    h2c *c = h2c_open();
    size_t len;
    uint8_t *body = read_req("late-eos", 3, &len);
    /* Events to read: one Append call, whole. */
    size_t alen;
    uint8_t *abody = append_req("late-eos", 3, 16, &alen);
    stream_rec *a = h2c_call(c, "/event_store.client.streams.Streams/Append", abody, alen, NULL, NULL, NULL);
    CHECK(h2c_run(c, 30000, rec_closed, a) == 1);
    CHECK(a->grpc_status == 0);

    stream_rec *r = h2c_call(c, "/event_store.client.streams.Streams/Read", body, len, NULL, NULL, NULL);
    r->hold_eos = 1;
    r->keep_data = 1;
    CHECK(h2c_run(c, 30000, status_seen, r) == 1);
    CHECK(h2c_roundtrip(c));
    int caught_up, in_order;
    int events = count_events(r->data, r->data_len, &caught_up, &in_order);
    printf("late END_STREAM: read answered (grpc-status %d, %d events) before the request ended; "
           "stream %s\n", r->grpc_status, events, r->closed ? "reset" : "left open");
    CHECK(r->grpc_status == 0);
    CHECK(events == 3 && in_order);
    CHECK(!r->closed); /* no RST_STREAM after the status */
    r->hold_eos = 0;
    nghttp2_session_resume_data(c->ng, r->id);
    CHECK(h2c_run(c, 30000, rec_closed, r) == 1);
    CHECK(r->rst_code == NGHTTP2_NO_ERROR);

    /* Unknown method, request still open: UNIMPLEMENTED, then a reset. */
    stream_rec *u = h2c_call(c, "/event_store.client.streams.Streams/NoSuchMethod", body, len, NULL, NULL, NULL);
    u->hold_eos = 1;
    CHECK(h2c_run(c, 30000, status_seen, u) == 1);
    CHECK(h2c_roundtrip(c));
    printf("late END_STREAM: unknown method answered with grpc-status %d; stream %s\n", u->grpc_status,
           u->closed ? "reset" : "left open");
    CHECK(u->grpc_status == 12);
    CHECK(u->closed);
    h2c_close(c);
    free(body);
    free(abody);
}

static void test_tombstone_ends_subscriptions(void)
{
    h2c *c = h2c_open();
    size_t len, alen, tlen;
    uint8_t *abody = append_req("tomb-h2", 1, 10, &alen);
    stream_rec *a = h2c_call(c, "/event_store.client.streams.Streams/Append", abody, alen, NULL, NULL, NULL);
    h2c_run(c, 10000, rec_closed, a);
    CHECK(a->grpc_status == 0);
    uint8_t *body = read_req("tomb-h2", 0, &len);
    stream_rec *subs[3];
    for (int i = 0; i < 3; i++)
        subs[i] = h2c_call(c, "/event_store.client.streams.Streams/Read", body, len, NULL, NULL, NULL);
    h2c_run(c, 300, NULL, NULL);
    EventStore__Client__Empty e = EVENT_STORE__CLIENT__EMPTY__INIT;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)"tomb-h2";
    sid.stream_name.len = 7;
    EventStore__Client__Streams__TombstoneReq__Options o = EVENT_STORE__CLIENT__STREAMS__TOMBSTONE_REQ__OPTIONS__INIT;
    o.stream_identifier = &sid;
    o.expected_stream_revision_case = EVENT_STORE__CLIENT__STREAMS__TOMBSTONE_REQ__OPTIONS__EXPECTED_STREAM_REVISION_ANY;
    o.any = &e;
    EventStore__Client__Streams__TombstoneReq t = EVENT_STORE__CLIENT__STREAMS__TOMBSTONE_REQ__INIT;
    t.options = &o;
    uint8_t *tbody = frame(&t.base, &tlen);
    h2c *c2 = h2c_open();
    stream_rec *tr = h2c_call(c2, "/event_store.client.streams.Streams/Tombstone", tbody, tlen, NULL, NULL, NULL);
    h2c_run(c2, 10000, rec_closed, tr);
    CHECK(tr->grpc_status == 0);
    h2c_run(c, 5000, all_closed, NULL);
    int ended = 0;
    for (int i = 0; i < 3; i++)
        ended += subs[i]->closed && subs[i]->grpc_status == 9;
    printf("tombstone: %d of 3 subscriptions ended with FAILED_PRECONDITION\n", ended);
    CHECK(ended == 3);
    CHECK(server_alive());
    h2c_close(c);
    h2c_close(c2);
    free(abody);
    free(body);
    free(tbody);
}

/* A v2 AppendRecords: one record to <base>-a and one to <base>-b, with
 * fixed record ids (so a retry is idempotent). */
static uint8_t *v2_transfer_req(const char *base, int i, size_t *len)
{
    char a[64], b[64], ida[40], idb[40];
    snprintf(a, sizeof a, "%s-%d-a", base, i);
    snprintf(b, sizeof b, "%s-%d-b", base, i);
    snprintf(ida, sizeof ida, "00000000-0000-4000-8000-%012d", 2 * i + 1);
    snprintf(idb, sizeof idb, "00000000-0000-4000-8000-%012d", 2 * i + 2);
    Kurrentdb__Protocol__V2__Streams__SchemaInfo si = KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_INFO__INIT;
    si.format = KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_JSON;
    si.name = "Moved";
    Kurrentdb__Protocol__V2__Streams__AppendRecord r[2] = {KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD__INIT,
                                                           KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD__INIT};
    Kurrentdb__Protocol__V2__Streams__AppendRecord *rp[2] = {&r[0], &r[1]};
    for (int k = 0; k < 2; k++) {
        r[k].schema = &si;
        r[k].data.data = (uint8_t *)"{\"amount\":1}";
        r[k].data.len = 12;
        r[k].stream_option_case = KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD__STREAM_OPTION_STREAM;
        r[k].stream = k ? b : a;
        r[k].record_id_option_case = KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD__RECORD_ID_OPTION_RECORD_ID;
        r[k].record_id = k ? idb : ida;
    }
    Kurrentdb__Protocol__V2__Streams__AppendRecordsRequest q =
        KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORDS_REQUEST__INIT;
    q.n_records = 2;
    q.records = rp;
    return frame(&q.base, len);
}

/* The newest `count` events of $all, in one read (one consistent prefix
 * of the log: a commit is in it whole or not at all): for each transfer
 * i, *pa / *pb get the positions of its two events (-1 if absent). */
static void v2_tail(h2c *c, int count, int n, int64_t *pa, int64_t *pb)
{
    EventStore__Client__Empty e = EVENT_STORE__CLIENT__EMPTY__INIT;
    EventStore__Client__Streams__ReadReq__Options__AllOptions ao =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__INIT;
    ao.all_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_END;
    ao.end = &e;
    EventStore__Client__Streams__ReadReq__Options o = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__INIT;
    o.stream_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_ALL;
    o.all = &ao;
    o.read_direction = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__READ_DIRECTION__Backwards;
    o.count_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_COUNT;
    o.count = (uint64_t)count;
    o.filter_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTION_NO_FILTER;
    o.no_filter = &e;
    EventStore__Client__Streams__ReadReq q = EVENT_STORE__CLIENT__STREAMS__READ_REQ__INIT;
    q.options = &o;
    size_t len;
    uint8_t *body = frame(&q.base, &len);
    stream_rec *r = h2c_call(c, "/event_store.client.streams.Streams/Read", body, len, NULL, NULL, NULL);
    r->keep_data = 1;
    h2c_run(c, 20000, rec_closed, r);
    CHECK(r->grpc_status == 0);
    for (int i = 0; i < n; i++)
        pa[i] = pb[i] = -1;
    for (size_t off = 0; off + 5 <= r->data_len;) {
        const uint8_t *p = r->data + off;
        uint32_t l = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        CHECK(off + 5 + l <= r->data_len);
        EventStore__Client__Streams__ReadResp *m = event_store__client__streams__read_resp__unpack(NULL, l, p + 5);
        CHECK(m != NULL);
        if (m->content_case == EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_EVENT) {
            const EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent *ev = m->event->event;
            char name[80];
            size_t nl = ev->stream_identifier->stream_name.len;
            snprintf(name, sizeof name, "%.*s", (int)(nl < 79 ? nl : 79),
                     (const char *)ev->stream_identifier->stream_name.data);
            int i;
            char side;
            if (sscanf(name, "v2h2-%d-%c", &i, &side) == 2 && i >= 0 && i < n)
                (side == 'a' ? pa : pb)[i] = (int64_t)ev->commit_position;
        }
        event_store__client__streams__read_resp__free_unpacked(m, NULL);
        off += 5 + l;
    }
    free(body);
}

static void test_v2_abandoned(void)
{
    enum { N = 60 };
    uint8_t *bodies[N];
    size_t lens[N];
    h2c *c = h2c_open();
    for (int i = 0; i < N; i++) {
        bodies[i] = v2_transfer_req("v2h2", i, &lens[i]);
        h2c_call(c, "/kurrentdb.protocol.v2.streams.StreamsService/AppendRecords", bodies[i], lens[i],
                 NULL, NULL, NULL);
    }
    /* An append session that ends without its last request: the client
     * resets it after the first. */
    Kurrentdb__Protocol__V2__Streams__AppendRequest ar = KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_REQUEST__INIT;
    ar.stream = "v2h2-session";
    size_t slen;
    uint8_t *sbody = frame(&ar.base, &slen);
    stream_rec *sr = h2c_call(c, "/kurrentdb.protocol.v2.streams.StreamsService/AppendSession", sbody,
                              slen, NULL, NULL, NULL);
    if (nghttp2_session_send(c->ng) == 0)
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, sr->id, NGHTTP2_CANCEL);
    nghttp2_session_send(c->ng);
    /* Gone before the answers: a FIN after the requests (so the server
     * reads them all: a close with unread input would be a TCP reset that
     * discards them), then nothing is read but the server's close. */
    shutdown(c->fd, SHUT_WR);
    char sink[4096];
    for (int64_t end = mono_ms() + 10000; mono_ms() < end;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) > 0 && recv(c->fd, sink, sizeof sink, 0) <= 0)
            break;
    }
    h2c_close(c);
    CHECK(server_alive());

    /* In one read of the log's tail (taken while some may still be
     * committing), each transfer is whole, its two events adjacent, or
     * absent. Then a retry of each (same ids) leaves exactly one copy. */
    h2c *d = h2c_open();
    int64_t pa[N], pb[N];
    v2_tail(d, 2 * N + 10, N, pa, pb);
    int whole = 0, absent = 0;
    for (int i = 0; i < N; i++) {
        CHECK((pa[i] < 0) == (pb[i] < 0));
        CHECK(pa[i] < 0 || pb[i] == pa[i] + 1);
        whole += pa[i] >= 0;
        absent += pa[i] < 0;
    }
    for (int i = 0; i < N; i++) {
        stream_rec *r = h2c_call(d, "/kurrentdb.protocol.v2.streams.StreamsService/AppendRecords",
                                 bodies[i], lens[i], NULL, NULL, NULL);
        h2c_run(d, 10000, rec_closed, r);
        if (r->grpc_status != 0)
            printf("v2 retry %d: closed %d, grpc-status %d \"%s\", rst %u\n", i, r->closed,
                   r->grpc_status, r->grpc_message, r->rst_code);
        CHECK(r->grpc_status == 0);
    }
    h2c_close(d);
    d = h2c_open();
    int64_t qa[N], qb[N];
    v2_tail(d, 4 * N + 10, N, qa, qb);
    for (int i = 0; i < N; i++) {
        CHECK(qa[i] >= 0 && qb[i] == qa[i] + 1);
        CHECK(pa[i] < 0 || qa[i] == pa[i]); /* a retry of a committed one wrote nothing */
    }
    printf("v2 abandoned: %d of %d transfers committed in the first read, %d absent, none torn\n",
           whole, N, absent);
    h2c_close(d);
    for (int i = 0; i < N; i++)
        free(bodies[i]);
    free(sbody);
    CHECK(features_status() == 0);
}

static void test_not_grpc(void)
{
    static const uint8_t empty[5] = {0};
    h2c *c = h2c_open();
    stream_rec *a = h2c_call(c, "/event_store.client.streams.Streams/Read", empty, 5, NULL, "PUT", NULL);
    stream_rec *b = h2c_call(c, "/event_store.client.streams.Streams/Read", empty, 5, NULL, NULL,
                             "application/json");
    stream_rec *d = h2c_call(c, "/event_store.client.streams.Streams/Read", empty, 5, NULL, NULL,
                             "application/grpc+proto");
    h2c_run(c, 5000, all_closed, NULL);
    CHECK(a->http_status == 405);
    CHECK(b->http_status == 415);
    CHECK(d->http_status == 200);
    CHECK(d->grpc_status == 3); /* INVALID_ARGUMENT: a Read without options */
    h2c_close(c);

    /* Garbage after the preface: the server closes the connection. */
    int fd = tcp_connect();
    static const char bad[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nthis is not a frame at all.......";
    CHECK(send(fd, bad, sizeof bad - 1, 0) == (ssize_t)(sizeof bad - 1));
    char buf[4096];
    int closed = 0;
    for (int i = 0; i < 50 && !closed; i++) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) > 0 && recv(fd, buf, sizeof buf, 0) <= 0)
            closed = 1;
    }
    CHECK(closed);
    close(fd);
    CHECK(features_status() == 0);
}

/* Over the memory budget (docs/limits.md) a new call ends with
 * RESOURCE_EXHAUSTED: a second server whose budget (1 MiB, from
 * STELE_MEMORY_BUDGET) is below any process's baseline. */
static void test_memory_budget(void)
{
    pid_t keep_pid = server_pid;
    int keep_port = server_port;
    const char *dir = t_tmpdir("grpc-h2-budget");
    setenv("STELE_MEMORY_BUDGET", "1", 1);
    start_server(dir);
    unsetenv("STELE_MEMORY_BUDGET");
    int st = features_status();
    printf("memory budget: a call over it ends with grpc-status %d\n", st);
    CHECK(st == 8);
    CHECK(stop_server() == 0);
    t_rmdir(dir);
    /* --max-subscriptions 2 (docs/limits.md): the third subscription ends
     * with RESOURCE_EXHAUSTED; once one ends, a new one is accepted. */
    dir = t_tmpdir("grpc-h2-subs");
    setenv("STELE_MAX_SUBSCRIPTIONS", "2", 1);
    start_server(dir);
    unsetenv("STELE_MAX_SUBSCRIPTIONS");
    h2c *c = h2c_open();
    size_t len;
    uint8_t *body = read_req("limit-stream", 0, &len);
    const char *read = "/event_store.client.streams.Streams/Read";
    stream_rec *s1 = h2c_call(c, read, body, len, NULL, NULL, NULL);
    stream_rec *s2 = h2c_call(c, read, body, len, NULL, NULL, NULL);
    h2c_run(c, 500, NULL, NULL);
    stream_rec *s3 = h2c_call(c, read, body, len, NULL, NULL, NULL);
    h2c_run(c, 10000, rec_closed, s3);
    printf("max subscriptions: the third ends with grpc-status %d (\"%s\")\n", s3->grpc_status,
           s3->grpc_message);
    CHECK(!s1->closed && !s2->closed);
    CHECK(s3->closed && s3->grpc_status == 8);
    CHECK(strstr(s3->grpc_message, "max-subscriptions") != NULL);
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s1->id, NGHTTP2_CANCEL);
    h2c_run(c, 500, NULL, NULL);
    stream_rec *s4 = h2c_call(c, read, body, len, NULL, NULL, NULL);
    h2c_run(c, 1000, NULL, NULL);
    CHECK(!s4->closed);
    h2c_close(c);
    free(body);
    CHECK(stop_server() == 0);
    t_rmdir(dir);
    server_pid = keep_pid;
    server_port = keep_port;
}

/* A non-loopback IPv4 address of this machine: 1 and `out`, or 0. */
static int non_loopback_ipv4(char *out, size_t cap)
{
    struct ifaddrs *ifs, *i;
    int found = 0;
    if (getifaddrs(&ifs) != 0)
        return 0;
    for (i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP))
            continue;
        const struct sockaddr_in *sa = (const struct sockaddr_in *)i->ifa_addr;
        if ((ntohl(sa->sin_addr.s_addr) >> 24) == 127)
            continue;
        inet_ntop(AF_INET, &sa->sin_addr, out, (socklen_t)cap);
        found = 1;
    }
    freeifaddrs(ifs);
    return found;
}

/* Operations that stop or reconfigure the server are refused from a
 * non-loopback peer (PERMISSION_DENIED) and accepted from loopback. The
 * server listens on every address; the client connects to one of this
 * machine's non-loopback addresses (added to lo for the test if there is
 * none, or with STELE_TEST_EXTRA_ADDR=1), so the server sees that address as
 * its peer. */
static void test_operations_need_loopback(void)
{
    char addr[64];
    int extra = 0;
    if (getenv("STELE_TEST_EXTRA_ADDR") || !non_loopback_ipv4(addr, sizeof addr)) {
        /* None: add one to lo (local, but outside 127.0.0.0/8, which is what
         * the rule looks at); needs CAP_NET_ADMIN. */
        extra = system("ip addr add 198.51.100.78/32 dev lo 2>/dev/null") == 0;
        if (!extra) {
            printf("SKIP operations from a non-loopback peer: this machine has no non-loopback "
                   "IPv4 address and cannot add one\n");
            return;
        }
        snprintf(addr, sizeof addr, "198.51.100.78");
    }
    const char *dir = t_tmpdir("grpc-ops");
    listen_host = "0.0.0.0";
    start_server(dir);
    static const uint8_t empty[5] = {0};
    const char *ops[] = {"/event_store.client.operations.Operations/Shutdown",
                         "/event_store.client.operations.Operations/StartScavenge",
                         "/event_store.client.operations.Operations/StopScavenge"};
    snprintf(connect_host, sizeof connect_host, "%s", addr);
    for (size_t i = 0; i < 3; i++) {
        h2c *c = h2c_open();
        stream_rec *r = h2c_call(c, ops[i], empty, 5, NULL, NULL, NULL);
        h2c_run(c, 10000, rec_closed, r);
        printf("from %s: %s -> grpc-status %d (%s)\n", addr, ops[i], r->grpc_status,
               r->grpc_message);
        CHECK(r->grpc_status == 7); /* PERMISSION_DENIED */
        CHECK(strstr(r->grpc_message, "loopback") != NULL);
        h2c_close(c);
    }
    CHECK(features_status() == 0); /* other calls from there are served */
    CHECK(server_alive());
    snprintf(connect_host, sizeof connect_host, "127.0.0.1");
    CHECK(quick_call_status(ops[0], empty, 5) == 0);
    int st = 0;
    CHECK(waitpid(server_pid, &st, 0) == server_pid); /* Shutdown from loopback stops it */
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    listen_host = "127.0.0.1";
    t_rmdir(dir);
    if (extra && system("ip addr del 198.51.100.78/32 dev lo") != 0)
        printf("could not remove 198.51.100.78 from lo\n");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    quick = getenv("TEST_QUICK") != NULL;
    const char *dir = t_tmpdir("grpc-h2");
    start_server(dir);
    int events = quick ? 512 : 1024; /* x 64 KiB: 32 or 64 MiB */
    const char *only = getenv("TEST_ONLY"); /* run one part: stall, deadline, ... */
#define PART(name) (!only || !strcmp(only, name))
    fill_store(events);
    if (PART("stall"))
        test_socket_stall(events);
    if (PART("window"))
        test_window_stall(events);
    if (PART("deadline"))
        test_deadline();
    if (PART("keepalive"))
        test_keepalive();
    if (PART("many"))
        test_reset_and_many();
    if (PART("notgrpc"))
        test_not_grpc();
    if (PART("tombstone"))
        test_tombstone_ends_subscriptions();
    if (PART("lateeos"))
        test_late_end_stream();
    if (PART("budget"))
        test_memory_budget();
    if (PART("v2"))
        test_v2_abandoned();
    if (PART("manyappends"))
        test_many_appends();
#undef PART
    CHECK(server_alive());
    /* A graceful stop with a live subscription: the subscription ends with
     * UNAVAILABLE and the server exits cleanly. */
    h2c *c = h2c_open();
    size_t len;
    uint8_t *body = read_req("quiet-stream", 0, &len);
    stream_rec *sub = h2c_call(c, "/event_store.client.streams.Streams/Read", body, len, NULL, NULL, NULL);
    h2c_run(c, 500, NULL, NULL);
    CHECK(!sub->closed);
    kill(server_pid, SIGTERM);
    h2c_run(c, 10000, rec_closed, sub);
    printf("shutdown: the live subscription ended with grpc-status %d\n", sub->grpc_status);
    CHECK(sub->closed);
    CHECK(sub->grpc_status == 14);
    h2c_close(c);
    free(body);
    CHECK(stop_server() == 0);
    t_rmdir(dir);
    if (!only || !strcmp(only, "operations"))
        test_operations_need_loopback();
    return t_done("test_grpc_h2", 1);
}
