/*
 * bench_http.c - an HTTP/1.1 keep-alive load generator for `stele serve`.
 *
 * One thread, one epoll loop, N keep-alive connections, each with one
 * request in flight at a time (a closed loop: a connection sends its next
 * request when the previous response has arrived).
 *
 *   append  each connection owns one stream (<prefix>-<workload>-<i>) and
 *           POSTs K events of DATA_BYTES bytes of JSON data to it with an
 *           exact Stele-Expected-Revision (no_stream, then the revision the
 *           previous response reported), so the check is real on every
 *           append. A 409 is counted as a conflict (an error: there should
 *           be none) and the connection continues from the server's
 *           currentRevision.
 *   read    each connection reads $all as NDJSON (Accept:
 *           application/x-ndjson) in pages of --page events (GET
 *           /all?from=P&limit=L), P advancing by the lines received (the
 *           local engine's positions are gapless from 0), back to 0 at
 *           --range or at the end of $all. With --page 0, one request per
 *           connection streams the first --range events (or all of $all)
 *           and the latency reported is the time to the first byte.
 *           With --json, the pages are JSON (Accept: application/json; the
 *           events counted by their "revision" keys).
 *   ping    GET /health/live: the HTTP round trip alone (no store work),
 *           a baseline for the append latencies; events_per_s is 0.
 *
 * Appends and paged reads run --warmup seconds (not counted), then
 * --duration seconds (counted: completions inside the window, and the
 * latency of each, from the first byte sent to the last byte received);
 * then no new request is sent and the ones in flight are drained.
 *
 * One result line on stdout, e.g.
 *
 *   http workload=256x1 target=stele events_per_s=... p50_ms=... p99_ms=...
 *     p999_ms=... requests_per_s=... events=... requests=... errors=0
 *     conflicts=0 seconds=20.00 clients=256 batch=1 client_cpu=31% server_cpu=64%
 *     cpu_busy=97%
 *
 * client_cpu is this process's CPU time over the window (100% = one core);
 * server_cpu that of --server-pid and its children (n/a without it);
 * cpu_busy is the whole machine's (100% = every core), from /proc/stat.
 * errors counts failed requests and 201s whose lastRevision was not the one
 * expected; conflicts counts 409s (both should be 0).
 * Progress and errors go to stderr. Nothing here judges a number.
 *
 * --basic USER:PASSWORD sends HTTP Basic credentials with every request
 * (a server with users: the first request of each pair of credentials pays
 * the Argon2id check, the rest hit the server's cache).
 *
 * --tls-ca FILE speaks TLS (OpenSSL, ALPN http/1.1, the server's
 * certificate checked against FILE): each connection does its handshake
 * before the run starts, so the figures are those of an established TLS
 * connection's requests, as with any keep-alive client.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "measure.h"

/* ------------------------------------------------------------ options */

static struct {
    const char *host;
    int port;
    int mode_read;
    int mode_ping;
    int clients;
    int batch;
    double duration, warmup;
    const char *workload, *target, *prefix;
    long page;          /* read: events per request; 0 = one streamed read */
    unsigned long long range; /* read: positions [0, range); 0 = all of $all */
    int data_bytes;
    int server_pid;     /* for server_cpu: this process and its children */
    int json;           /* read: JSON pages */
    const char *tls_ca; /* TLS, trusting this CA file */
    const char *basic;  /* user:password sent with every request */
} opt = {.host = "127.0.0.1", .port = 2113, .clients = 1, .batch = 1, .duration = 10, .warmup = 1,
       .target = "stele", .page = 1000, .data_bytes = 200};

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_http --port P [--host 127.0.0.1] [--mode append|read|ping]\n"
            "         [--clients N] [--batch K] [--duration S] [--warmup S]\n"
            "         [--workload NAME] [--target NAME] [--prefix STREAM_PREFIX]\n"
            "         [--page L (read; 0 = one streamed read)] [--range M] [--data-bytes B]\n"
            "         [--server-pid PID (reports its CPU and its children's)]\n"
            "         [--json (read: JSON pages instead of NDJSON)] [--tls-ca CA_PEM]\n"
            "         [--basic USER:PASSWORD (HTTP Basic on every request)]\n");
    exit(2);
}

/* ------------------------------------------------------------ time, cpu */

/* ------------------------------------------------------------ latencies */

/* ------------------------------------------------------------ the payload */

/* The append body: a JSON array of K events. */
static char *make_body(int k, const char *data, size_t *len)
{
    static const char pre[] = "{\"type\":\"BenchEvent\",\"data\":";
    size_t dl = strlen(data), one = sizeof pre - 1 + dl + 1;
    char *b = malloc(2 + (size_t)k * (one + 1));
    size_t n = 0;
    b[n++] = '[';
    for (int i = 0; i < k; i++) {
        if (i)
            b[n++] = ',';
        memcpy(b + n, pre, sizeof pre - 1);
        n += sizeof pre - 1;
        memcpy(b + n, data, dl);
        n += dl;
        b[n++] = '}';
    }
    b[n++] = ']';
    *len = n;
    return b;
}

/* ------------------------------------------------------------ connections */

enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

typedef struct hconn {
    int fd, idx;
    SSL *ssl;           /* --tls-ca */
    int drained;        /* TLS: the last socket read under SSL_read came back short */
    char *tx;           /* TLS: the request in one piece (SSL_write has no iovec) */
    char stream[128];
    long long expected; /* -1: no_stream */
    /* request being sent */
    char hdr[512];
    size_t hdr_len, sent, total;
    int busy;           /* a request is in flight */
    uint64_t t0, t_first;
    /* response */
    char *in;
    size_t in_len, in_cap;
    int have_head, status, chunked;
    long long clen;
    size_t head_len;
    int ch_state;
    unsigned long long ch_left;
    unsigned long long lines; /* NDJSON lines (--json: events) of this response */
    int key_state;            /* --json: bytes of "revision": matched so far */
    /* read position */
    unsigned long long from;
    int finished;       /* --page 0: the one read is done */
} hconn;

static char *g_body;
static size_t g_body_len;
static int g_ep;
static int g_stopping;
static uint64_t g_win_start, g_win_end;
static bench_lats g_lat;
static unsigned long long g_events, g_requests, g_errors, g_conflicts, g_bad_rev;
static int g_inflight;
static int g_reported_error;
static SSL_CTX *g_tls;
static char g_auth[512]; /* --basic: "Authorization: Basic ...\r\n", else "" */

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/*
 * The client's socket under OpenSSL is the server's (server/tls.c,
 * tls_sock_*): a BIO method doing send/recv and answering libssl's few
 * control questions, the reading one noting a short read (the socket
 * drained), so that with nothing buffered in OpenSSL either the read loop
 * stops there, without the SSL_read (and the read() system call) that
 * would only say WANT_READ. One read per response, as in clear. The
 * handshake runs on the still blocking socket through the same BIOs.
 */
typedef struct bsock {
    int fd, eof;
    int *drained;
} bsock;

static BIO_METHOD *g_bio_method;

static int bsock_write(BIO *b, const char *p, size_t len, size_t *done)
{
    bsock *t = BIO_get_data(b);
    ssize_t n;
    do
        n = send(t->fd, p, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    BIO_clear_retry_flags(b);
    *done = n > 0 ? (size_t)n : 0;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(b);
    return n >= 0;
}

static int bsock_read(BIO *b, char *p, size_t len, size_t *done)
{
    bsock *t = BIO_get_data(b);
    ssize_t n;
    do
        n = recv(t->fd, p, len, 0);
    while (n < 0 && errno == EINTR);
    BIO_clear_retry_flags(b);
    if (t->drained)
        *t->drained = n > 0 && (size_t)n < len;
    *done = n > 0 ? (size_t)n : 0;
    if (n == 0)
        t->eof = 1;
    else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_read(b);
    return n > 0;
}

static long bsock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    if (cmd == BIO_CTRL_FLUSH)
        return 1;
    if (cmd == BIO_CTRL_EOF)
        return ((bsock *)BIO_get_data(b))->eof;
    return 0;
}

static BIO *bsock_new(int fd, int *drained)
{
    if (!g_bio_method) {
        g_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "bench socket");
        if (!g_bio_method || !BIO_meth_set_write_ex(g_bio_method, bsock_write) ||
            !BIO_meth_set_read_ex(g_bio_method, bsock_read) ||
            !BIO_meth_set_ctrl(g_bio_method, bsock_ctrl))
            die("BIO_meth_new");
    }
    bsock *t = calloc(1, sizeof *t);
    BIO *b = t ? BIO_new(g_bio_method) : NULL;
    if (!b)
        die("BIO_new");
    t->fd = fd;
    t->drained = drained;
    BIO_set_data(b, t); /* not freed: the process ends with its connections */
    BIO_set_init(b, 1);
    return b;
}

/* A TLS client on connected, still blocking socket fd (handshake done). */
static SSL *tls_connect(int fd, int *drained)
{
    SSL *ssl = SSL_new(g_tls);
    if (!ssl)
        die("SSL_new");
    SSL_set_bio(ssl, bsock_new(fd, drained), bsock_new(fd, NULL));
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        fprintf(stderr, "bench_http: TLS handshake failed\n");
        exit(1);
    }
    return ssl;
}

static int connect_to(SSL **ssl, int *drained)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bench_http: bad host %s (an IPv4 address)\n", opt.host);
        exit(2);
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *ssl = g_tls ? tls_connect(fd, drained) : NULL;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void conn_send(hconn *c);

static void start_request(hconn *c)
{
    int n;
    if (opt.mode_ping) {
        n = snprintf(c->hdr, sizeof c->hdr, "GET /health/live HTTP/1.1\r\nHost: %s\r\n%s\r\n",
                     opt.host, g_auth);
        c->total = (size_t)n;
    } else if (opt.mode_read) {
        if (opt.page > 0)
            n = snprintf(c->hdr, sizeof c->hdr,
                         "GET /all?from=%llu&limit=%ld HTTP/1.1\r\nHost: %s\r\n%s"
                         "Accept: application/%s\r\n\r\n",
                         c->from, opt.page, opt.host, g_auth, opt.json ? "json" : "x-ndjson");
        else if (opt.range)
            n = snprintf(c->hdr, sizeof c->hdr,
                         "GET /all?from=0&limit=%llu HTTP/1.1\r\nHost: %s\r\n%s"
                         "Accept: application/x-ndjson\r\n\r\n",
                         opt.range, opt.host, g_auth);
        else
            n = snprintf(c->hdr, sizeof c->hdr,
                         "GET /all?from=0 HTTP/1.1\r\nHost: %s\r\n%s"
                         "Accept: application/x-ndjson\r\n\r\n",
                         opt.host, g_auth);
        c->total = (size_t)n;
    } else {
        char exp[32];
        if (c->expected < 0)
            snprintf(exp, sizeof exp, "no_stream");
        else
            snprintf(exp, sizeof exp, "%lld", c->expected);
        n = snprintf(c->hdr, sizeof c->hdr,
                     "POST /streams/%s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\n"
                     "Stele-Expected-Revision: %s\r\nContent-Length: %zu\r\n\r\n",
                     c->stream, opt.host, g_auth, exp, g_body_len);
        c->total = (size_t)n + g_body_len;
    }
    c->hdr_len = (size_t)n;
    if (c->ssl) {
        free(c->tx);
        c->tx = malloc(c->total);
        if (!c->tx)
            die("malloc");
        memcpy(c->tx, c->hdr, c->hdr_len);
        memcpy(c->tx + c->hdr_len, g_body, c->total - c->hdr_len);
    }
    c->sent = 0;
    c->busy = 1;
    c->have_head = 0;
    c->lines = 0;
    c->key_state = 0;
    c->t_first = 0;
    g_inflight++;
    c->t0 = bench_now_ns();
    conn_send(c);
}

static void conn_send(hconn *c)
{
    while (c->busy && c->sent < c->total) {
        struct iovec iov[2];
        int n = 0;
        if (c->sent < c->hdr_len) {
            iov[n].iov_base = c->hdr + c->sent;
            iov[n++].iov_len = c->hdr_len - c->sent;
            if (g_body_len) {
                iov[n].iov_base = g_body;
                iov[n++].iov_len = g_body_len;
            }
        } else {
            size_t off = c->sent - c->hdr_len;
            iov[n].iov_base = g_body + off;
            iov[n++].iov_len = g_body_len - off;
        }
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, c->tx + c->sent, (int)(c->total - c->sent));
            int e = r > 0 ? 0 : SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return; /* the next event resumes */
            if (r <= 0) {
                ERR_print_errors_fp(stderr);
                die("SSL_write");
            }
            w = r;
        } else {
            w = writev(c->fd, iov, n);
        }
        if (w > 0) {
            c->sent += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* EPOLLOUT (edge-triggered) resumes */
        die("send");
    }
}

static long long json_num_after(const char *body, size_t len, const char *key, int *is_null)
{
    *is_null = 0;
    const char *p = memmem(body, len, key, strlen(key));
    if (!p)
        return -2;
    p += strlen(key);
    if (!strncmp(p, "null", 4)) {
        *is_null = 1;
        return -1;
    }
    return strtoll(p, NULL, 10);
}

/* A whole response has arrived (body in c->in[head_len..] unless chunked). */
static void response_done(hconn *c, const char *body, size_t blen)
{
    uint64_t t = bench_now_ns();
    int in_window = t >= g_win_start && t <= g_win_end;
    c->busy = 0;
    g_inflight--;
    int ok = 0;
    unsigned long long ev = 0;
    if (opt.mode_ping) {
        ok = c->status == 200;
    } else if (opt.mode_read) {
        if (c->status == 200) {
            ok = 1;
            ev = c->lines;
            if (opt.page > 0) {
                c->from += c->lines;
                if (c->lines < (unsigned long long)opt.page || (opt.range && c->from >= opt.range))
                    c->from = 0;
            } else {
                c->finished = 1;
            }
        }
    } else {
        int is_null;
        if (c->status == 201) {
            long long last = json_num_after(body, blen, "\"lastRevision\":", &is_null);
            if (last != c->expected + opt.batch) {
                g_bad_rev++;
                if (!g_reported_error++)
                    fprintf(stderr, "bench_http: %s: expected lastRevision %lld, got %.*s\n",
                            c->stream, c->expected + opt.batch, (int)blen, body);
            }
            c->expected = last;
            ok = 1;
            ev = (unsigned long long)opt.batch;
        } else if (c->status == 409) {
            long long cur = json_num_after(body, blen, "\"currentRevision\":", &is_null);
            if (in_window)
                g_conflicts++;
            if (cur >= -1)
                c->expected = cur;
        }
    }
    if (!ok && c->status != 409) {
        if (in_window)
            g_errors++;
        if (!g_reported_error++)
            fprintf(stderr, "bench_http: status %d: %.*s\n", c->status,
                    (int)(blen > 300 ? 300 : blen), body);
    }
    if (in_window) {
        if (ok) {
            g_events += ev;
            g_requests++;
        }
        bench_lat_add(&g_lat, (opt.mode_read && opt.page == 0 ? c->t_first : t) - c->t0);
    }
}

/* Parse the status line and headers once they are all in. 1 = done, 0 = more. */
static int parse_head(hconn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    c->head_len = (size_t)(end - c->in) + 4;
    c->status = 0;
    c->chunked = 0;
    c->clen = -1;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 ", 9)) {
        fprintf(stderr, "bench_http: malformed response: %.40s\n", c->in);
        exit(1);
    }
    c->status = atoi(c->in + 9);
    for (char *p = memchr(c->in, '\n', c->head_len); p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p++;
        if (!strncasecmp(p, "Content-Length:", 15))
            c->clen = strtoll(p + 15, NULL, 10);
        else if (!strncasecmp(p, "Transfer-Encoding:", 18)) {
            const char *e = memchr(p, '\r', (size_t)(end + 2 - p));
            if (e && memmem(p, (size_t)(e - p), "chunked", 7))
                c->chunked = 1;
        }
    }
    c->have_head = 1;
    c->ch_state = CH_SIZE;
    return 1;
}

/* --json: count the "revision": keys (one per event), across calls. */
static unsigned long long count_key(hconn *c, const char *p, size_t n)
{
    static const char key[] = "\"revision\":";
    unsigned long long k = 0;
    int st = c->key_state;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == key[st]) {
            if (++st == (int)sizeof key - 1) {
                k++;
                st = 0;
            }
        } else {
            st = p[i] == '"';
        }
    }
    c->key_state = st;
    return k;
}

static unsigned long long count_nl(const char *p, size_t n)
{
    unsigned long long k = 0;
    const char *e = p + n;
    while (p < e && (p = memchr(p, '\n', (size_t)(e - p)))) {
        k++;
        p++;
    }
    return k;
}

/* Decode what chunked body bytes are buffered from `off`; returns the bytes
 * consumed. Counts the lines of the data. */
static size_t chunked_feed(hconn *c, size_t off)
{
    size_t start = off;
    while (off < c->in_len && c->ch_state != CH_DONE) {
        char *p = c->in + off;
        size_t avail = c->in_len - off;
        if (c->ch_state == CH_SIZE || c->ch_state == CH_TRAILER) {
            char *nl = memmem(p, avail, "\r\n", 2);
            if (!nl)
                break;
            if (c->ch_state == CH_SIZE) {
                c->ch_left = strtoull(p, NULL, 16);
                c->ch_state = c->ch_left ? CH_DATA : CH_TRAILER;
            } else if (nl == p) {
                c->ch_state = CH_DONE;
            }
            off += (size_t)(nl - p) + 2;
        } else if (c->ch_state == CH_DATA) {
            size_t n = avail < c->ch_left ? avail : (size_t)c->ch_left;
            if (!c->t_first)
                c->t_first = bench_now_ns();
            c->lines += opt.json ? count_key(c, p, n) : count_nl(p, n);
            c->ch_left -= n;
            off += n;
            if (!c->ch_left)
                c->ch_state = CH_DATA_END;
        } else { /* CH_DATA_END */
            if (avail < 2)
                break;
            off += 2;
            c->ch_state = CH_SIZE;
        }
    }
    return off - start;
}

static void conn_recv(hconn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 262144;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in)
                die("realloc");
        }
        size_t room = c->in_cap - c->in_len;
        ssize_t r;
        if (c->ssl) {
            c->drained = 0;
            int k = SSL_read(c->ssl, c->in + c->in_len, (int)(room > (1u << 30) ? 1u << 30 : room));
            int e = k > 0 ? 0 : SSL_get_error(c->ssl, k);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            r = k > 0 ? k : e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
        } else {
            r = recv(c->fd, c->in + c->in_len, room, 0);
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0) {
            if (c->busy || !g_stopping) {
                fprintf(stderr, "bench_http: connection %d closed by the server%s\n", c->idx,
                        r < 0 ? strerror(errno) : "");
                exit(1);
            }
            return;
        }
        c->in_len += (size_t)r;
        /* Process as much as is buffered. */
        for (;;) {
            if (!c->busy) {
                if (c->in_len) {
                    fprintf(stderr, "bench_http: %zu unexpected bytes from the server\n", c->in_len);
                    exit(1);
                }
                break;
            }
            if (!c->have_head && !parse_head(c))
                break;
            if (c->chunked) {
                size_t used = chunked_feed(c, c->head_len);
                /* Keep only the undecoded tail (a partial size line). */
                size_t keep = c->in_len - c->head_len - used;
                memmove(c->in + c->head_len, c->in + c->head_len + used, keep);
                c->in_len = c->head_len + keep;
                if (c->ch_state != CH_DONE)
                    break;
                size_t rest = c->in_len - c->head_len;
                response_done(c, "", 0);
                memmove(c->in, c->in + c->head_len, rest);
                c->in_len = rest;
            } else {
                size_t need = c->head_len + (size_t)(c->clen < 0 ? 0 : c->clen);
                if (c->in_len < need)
                    break;
                if (!c->t_first)
                    c->t_first = bench_now_ns();
                c->key_state = 0;
                c->lines = opt.json ? count_key(c, c->in + c->head_len, need - c->head_len)
                                    : count_nl(c->in + c->head_len, need - c->head_len);
                response_done(c, c->in + c->head_len, need - c->head_len);
                memmove(c->in, c->in + need, c->in_len - need);
                c->in_len -= need;
            }
            if (!g_stopping && !(opt.mode_read && opt.page == 0))
                start_request(c);
        }
        /* A short read drained the socket: with edge-triggered epoll, more
         * data makes a new event, so no recv just to see EAGAIN. */
        if (c->ssl ? c->drained && !SSL_has_pending(c->ssl) : (size_t)r < room)
            return;
    }
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},       {"mode", 1, 0, 'm'},
        {"clients", 1, 0, 'c'},  {"batch", 1, 0, 'b'},      {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},   {"workload", 1, 0, 'W'},   {"target", 1, 0, 'T'},
        {"prefix", 1, 0, 'P'},   {"page", 1, 0, 'L'},       {"range", 1, 0, 'R'},
        {"data-bytes", 1, 0, 'D'}, {"server-pid", 1, 0, 'S'}, {"json", 0, 0, 'J'},
        {"tls-ca", 1, 0, 'C'},   {"basic", 1, 0, 'B'},      {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'm':
            if (!strcmp(optarg, "read"))
                opt.mode_read = 1;
            else if (!strcmp(optarg, "ping"))
                opt.mode_ping = 1;
            else if (strcmp(optarg, "append"))
                usage();
            break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'b': opt.batch = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'W': opt.workload = optarg; break;
        case 'T': opt.target = optarg; break;
        case 'P': opt.prefix = optarg; break;
        case 'L': opt.page = atol(optarg); break;
        case 'R': opt.range = strtoull(optarg, NULL, 10); break;
        case 'D': opt.data_bytes = atoi(optarg); break;
        case 'S': opt.server_pid = atoi(optarg); break;
        case 'J': opt.json = 1; break;
        case 'C': opt.tls_ca = optarg; break;
        case 'B': opt.basic = optarg; break;
        default: usage();
        }
    }
    if (optind != argc || opt.port <= 0 || opt.clients < 1 || opt.batch < 1 || opt.duration <= 0 ||
        opt.warmup < 0 || opt.page < 0)
        usage();
    signal(SIGPIPE, SIG_IGN);
    if (opt.basic) {
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const unsigned char *in = (const unsigned char *)opt.basic;
        size_t len = strlen(opt.basic), o = 0;
        char enc[400];
        if (len > 280)
            usage();
        for (size_t i = 0; i < len; i += 3) {
            unsigned v = in[i] << 16 | (i + 1 < len ? in[i + 1] << 8 : 0) |
                         (i + 2 < len ? in[i + 2] : 0);
            enc[o++] = b64[v >> 18 & 63];
            enc[o++] = b64[v >> 12 & 63];
            enc[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
            enc[o++] = i + 2 < len ? b64[v & 63] : '=';
        }
        enc[o] = 0;
        snprintf(g_auth, sizeof g_auth, "Authorization: Basic %s\r\n", enc);
    }
    if (opt.tls_ca) {
        g_tls = SSL_CTX_new(TLS_client_method());
        static const unsigned char alpn[] = "\x08http/1.1";
        if (!g_tls || SSL_CTX_load_verify_locations(g_tls, opt.tls_ca, NULL) != 1 ||
            SSL_CTX_set_alpn_protos(g_tls, alpn, sizeof alpn - 1) != 0) {
            ERR_print_errors_fp(stderr);
            fprintf(stderr, "bench_http: cannot use --tls-ca %s\n", opt.tls_ca);
            exit(2);
        }
        SSL_CTX_set_verify(g_tls, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_read_ahead(g_tls, 1);
    }
    char wl[64];
    if (!opt.workload) {
        if (opt.mode_ping)
            snprintf(wl, sizeof wl, "ping%d", opt.clients);
        else if (opt.mode_read)
            snprintf(wl, sizeof wl, "read%dx%ld", opt.clients, opt.page);
        else
            snprintf(wl, sizeof wl, "%dx%d", opt.clients, opt.batch);
        opt.workload = wl;
    }
    char pfx[64];
    if (!opt.prefix) {
        snprintf(pfx, sizeof pfx, "bench%ld", (long)getpid());
        opt.prefix = pfx;
    }
    if (!opt.mode_read && !opt.mode_ping) {
        char *data = bench_order_json("bench_http", opt.data_bytes);
        g_body = make_body(opt.batch, data, &g_body_len);
        free(data);
    }

    g_ep = epoll_create1(EPOLL_CLOEXEC);
    hconn *cs = calloc((size_t)opt.clients, sizeof *cs);
    for (int i = 0; i < opt.clients; i++) {
        hconn *c = &cs[i];
        c->idx = i;
        c->fd = connect_to(&c->ssl, &c->drained);
        c->expected = -1;
        snprintf(c->stream, sizeof c->stream, "%s-%s-%d", opt.prefix, opt.workload, i);
        if (opt.mode_read && opt.page > 0 && opt.range)
            c->from = opt.range / (unsigned long long)opt.clients * (unsigned long long)i;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev))
            die("epoll_ctl");
    }

    int stream_once = opt.mode_read && opt.page == 0;
    uint64_t t_begin = bench_now_ns();
    if (stream_once) {
        g_win_start = t_begin;
        g_win_end = UINT64_MAX;
    } else {
        g_win_start = t_begin + (uint64_t)(opt.warmup * 1e9);
        g_win_end = g_win_start + (uint64_t)(opt.duration * 1e9);
    }
    double cpu0 = 0, srv0 = 0, srv1 = 0;
    unsigned long long mb0 = 0, mt0 = 0, mb1, mt1;
    int window_started = 0;
    if (g_win_start <= t_begin) {
        cpu0 = bench_self_cpu_s();
        srv0 = bench_proc_tree_cpu_s(opt.server_pid);
        bench_machine_cpu(&mb0, &mt0);
        window_started = 1;
    }
    for (int i = 0; i < opt.clients; i++)
        start_request(&cs[i]);

    uint64_t t_last_done = 0, drain_deadline = 0;
    double cpu1 = 0;
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(g_ep, evs, 512, 5);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            hconn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT)
                conn_send(c);
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                conn_recv(c);
        }
        uint64_t t = bench_now_ns();
        if (!window_started && t >= g_win_start) {
            cpu0 = bench_self_cpu_s();
            srv0 = bench_proc_tree_cpu_s(opt.server_pid);
            bench_machine_cpu(&mb0, &mt0);
            window_started = 1;
        }
        if (stream_once) {
            if (g_inflight == 0) {
                t_last_done = t;
                cpu1 = bench_self_cpu_s();
                srv1 = bench_proc_tree_cpu_s(opt.server_pid);
                bench_machine_cpu(&mb1, &mt1);
                break;
            }
            continue;
        }
        if (!g_stopping && t >= g_win_end) {
            g_stopping = 1;
            cpu1 = bench_self_cpu_s();
            srv1 = bench_proc_tree_cpu_s(opt.server_pid);
            bench_machine_cpu(&mb1, &mt1);
            drain_deadline = t + 30000000000ull;
        }
        if (g_stopping && (g_inflight == 0 || t > drain_deadline))
            break;
    }
    if (g_inflight)
        fprintf(stderr, "bench_http: %d requests still in flight after 30 s of draining\n",
                g_inflight);

    double secs = stream_once ? (double)(t_last_done - g_win_start) / 1e9 : opt.duration;
    bench_lat_sort(&g_lat);
    char srv_pct[32] = "n/a";
    if (opt.server_pid > 0)
        snprintf(srv_pct, sizeof srv_pct, "%.0f%%", 100.0 * (srv1 - srv0) / secs);
    double cpu_busy = mt1 > mt0 ? 100.0 * (double)(mb1 - mb0) / (double)(mt1 - mt0) : 0;
    /* Everything else the machine did meanwhile (other processes, and the
     * kernel's work not charged to us or the server), 100% = one core:
     * a measure of how disturbed this result is. */
    char other_pct[32] = "n/a";
    if (opt.server_pid > 0)
        snprintf(other_pct, sizeof other_pct, "%.0f%%",
                 100.0 * ((double)(mb1 - mb0) / (double)sysconf(_SC_CLK_TCK) - (cpu1 - cpu0) -
                          (srv1 - srv0)) / secs);
    printf("http workload=%s target=%s events_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
           "requests_per_s=%.0f events=%llu requests=%llu errors=%llu conflicts=%llu "
           "seconds=%.2f clients=%d batch=%ld client_cpu=%.0f%% server_cpu=%s other_cpu=%s cpu_busy=%.0f%%%s\n",
           opt.workload, opt.target, (double)g_events / secs, bench_lat_ms(&g_lat, 0.50),
           bench_lat_ms(&g_lat, 0.99), bench_lat_ms(&g_lat, 0.999), (double)g_requests / secs, g_events,
           g_requests, g_errors + g_bad_rev, g_conflicts, secs, opt.clients,
           opt.mode_read ? opt.page : opt.mode_ping ? 0 : (long)opt.batch, 100.0 * (cpu1 - cpu0) / secs, srv_pct, other_pct, cpu_busy,
           stream_once ? " latency=first_byte" : "");
    fflush(stdout);
    for (int i = 0; i < opt.clients; i++) {
        close(cs[i].fd);
        free(cs[i].in);
    }
    free(cs);
    free(g_body);
    free(g_lat.v);
    return 0;
}
