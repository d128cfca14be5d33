/*
 * tls.c - the transport under every connection: plain TCP or TLS
 * (OpenSSL) on the same port, for HTTP/1.1, SSE and HTTP/2 (gRPC) alike.
 *
 * net.c never calls recv()/send() on a connection itself: it calls
 * conn_recv() and conn_send(), which behave like the system calls on a
 * non-blocking socket (n > 0, 0 at end of stream, -1 with errno EAGAIN
 * when they would block, -1 with another errno on failure) whether the
 * bytes travel in clear or through an SSL object. Everything above
 * (http.c, h2.c, sse.c, the back-pressure rules of net.c) sees only
 * cleartext and is unchanged.
 *
 * Deciding the protocol. With a certificate configured (--tls-cert and
 * --tls-key), a new connection is undecided until its first byte arrives,
 * read with MSG_PEEK so that nothing is consumed: 0x16 (a TLS handshake
 * record) makes it a TLS connection; anything else is cleartext, served
 * only with --allow-cleartext and otherwise answered with one plain
 * "400 this port speaks TLS" response and closed, so a cleartext client
 * gets a clear error instead of a hang or garbage. Without a certificate
 * every connection is plain, as before.
 *
 * TLS on a non-blocking socket. SSL_read may need to write (the handshake,
 * a TLS 1.3 key update) and SSL_write may need to read. The loop arms
 * EPOLLIN and EPOLLOUT edge-triggered on every connection and calls
 * conn_read() on readable and conn_flush() on writable, so a read that
 * wants the socket writable sets `tls_read_wants_write` and a write that
 * wants it readable sets `tls_write_wants_read`: net.c then runs the other
 * side on the other event (tls_after_event). SSL_write runs with partial
 * writes and a moving buffer allowed: conn_flush retries from `out` at
 * the same offset with at least as many bytes, which OpenSSL accepts.
 * Memory: a busy connection keeps its two record buffers (about 17 KB
 * each) from request to request; one quiet for TLS_IDLE_RELEASE_MS gives
 * them back (tls_conn_tick, from net.c's once-a-second pass), so idle
 * clients cost little more than plain ones. (SSL_MODE_RELEASE_BUFFERS
 * would free and reallocate both around every request.) Reads run with
 * read-ahead (one recv per batch of records, not two per record). The read
 * loop stops once a socket read under SSL_read came back short (seen by
 * our socket BIO, tls_sock_read: the socket is drained, a later byte raises
 * a new edge) and OpenSSL holds no bytes (SSL_has_pending), else at
 * WANT_READ; bytes OpenSSL buffered are read when a paused connection
 * resumes (conn_flush calls conn_read), never left waiting for an epoll
 * event.
 *
 * Settings: TLS 1.2 and 1.3 only; TLS 1.2 with forward-secret AEAD suites
 * only (also what HTTP/2 requires); no renegotiation, no compression.
 * ALPN: `http/1.1` when the client offers it (curl, browsers), else `h2`
 * (gRPC clients offer h2 alone; see alpn_select); a client that offers
 * neither is still served (the first bytes tell HTTP/2 from HTTP/1.1, as
 * in clear). Client certificates: with --tls-client-ca the
 * server asks for one and refuses a handshake without a certificate
 * signed by that CA.
 *
 * Answers from the writer thread (http_early.c): an HTTP/1.1 append's
 * answer is encrypted and sent by the store's writer thread through the
 * connection's SSL object, lent to it from submit to completion
 * (tls_early_lend, tls_early_write); meanwhile the loop leaves the object
 * alone (conn_read, conn_flush, tls_conn_tick and tls_conn_close wait), so
 * one thread uses it at a time. The writer's OpenSSL error queue is its
 * own (OpenSSL keeps one per thread).
 *
 * Reload: SIGHUP builds a new SSL_CTX from the same files. If that fails
 * (a missing file, a key that does not match) the error is logged and the
 * old context stays; if it works, new connections use it while existing
 * ones keep theirs (every SSL object holds a reference to its context).
 */
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_int.h"

/* A connection quiet for this long gives its record buffers back. */
#define TLS_IDLE_RELEASE_MS 1000

typedef struct tls_server {
    SSL_CTX *ctx;
    uint64_t handshakes, handshake_failures, cleartext_refused, reloads, reload_failures;
    uint64_t buffers_released; /* idle connections that gave back their buffers */
} tls_server;

enum { TLS_UNDECIDED = 0, TLS_PLAIN, TLS_ON };

/* Our socket BIO (see tls_sock_read), one method for the process. */
static BIO_METHOD *tls_sock_method;
static int tls_sock_method_init(void);

/* The newest OpenSSL error as text (and clear the queue). */
static void tls_errtext(char *out, size_t cap)
{
    unsigned long e = ERR_get_error(), last = e;
    while (e) {
        last = e;
        e = ERR_get_error();
    }
    if (last)
        ERR_error_string_n(last, out, cap);
    else
        snprintf(out, cap, "%s", errno ? strerror(errno) : "unknown error");
}

/* Whether the ALPN list `in` names protocol `p`. */
static int alpn_has(const unsigned char *in, unsigned int inlen, const char *p,
                    const unsigned char **at)
{
    size_t want = strlen(p);
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == want && !memcmp(in + i + 1, p, n)) {
            *at = in + i + 1;
            return 1;
        }
        i += 1 + n;
    }
    return 0;
}

/*
 * HTTP/2 on this port is gRPC; the REST API, SSE and the web UI are
 * HTTP/1.1. gRPC clients offer `h2` alone (grpc-js, grpc-go, grpc-java,
 * C-core adds "grpc-exp"); curl, browsers and HTTP libraries offer `h2` and
 * `http/1.1`. So: `http/1.1` whenever the client offers it, else `h2`.
 */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    const unsigned char *at;
    if (alpn_has(in, inlen, "http/1.1", &at)) {
        *out = at;
        *outlen = 8;
        return SSL_TLSEXT_ERR_OK;
    }
    if (alpn_has(in, inlen, "h2", &at)) {
        *out = at;
        *outlen = 2;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* no protocol of ours offered: go on without */
}

/* Log the certificate's subject and expiry once loaded. */
static void tls_log_cert(server *s, SSL_CTX *ctx)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (!x)
        return;
    char subject[256] = "", until[64] = "";
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
    BIO *b = BIO_new(BIO_s_mem());
    if (b) {
        ASN1_TIME_print(b, X509_get0_notAfter(x));
        int n = BIO_read(b, until, sizeof until - 1);
        until[n > 0 ? n : 0] = 0;
        BIO_free(b);
    }
    server_log(s, 1, "msg=\"tls certificate loaded\" subject=\"%s\" not_after=\"%s\"", subject,
               until);
}

/* A new context from the configured files, or NULL with `err` set. */
static SSL_CTX *tls_ctx_new(const server_config *cfg, char *err, size_t cap)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_errtext(err, cap);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* No SSL_MODE_RELEASE_BUFFERS: it frees and reallocates both record
     * buffers around every request; tls_conn_tick frees them once a
     * connection is idle instead. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One recv() fills the record buffer with whatever arrived, instead of
     * one for each record's header and one for its body. */
    SSL_CTX_set_read_ahead(ctx, 1);
    const char *step = "cipher list";
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1)
        goto fail;
    /* TLS 1.3: AES-128-GCM first (the server's preference decides; Go's
     * TLS stack orders them so too): with AES-NI it is the cheapest per
     * record (10 AES rounds, not 14), and still 128-bit security;
     * AES-256-GCM and ChaCha20-Poly1305 remain for clients that offer
     * only those. */
    step = "TLS 1.3 cipher suites";
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                      "TLS_CHACHA20_POLY1305_SHA256") != 1)
        goto fail;
    step = cfg->tls_cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1)
        goto fail;
    step = cfg->tls_key;
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1)
        goto fail;
    step = "the key does not match the certificate";
    if (SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    if (cfg->tls_client_ca) {
        step = cfg->tls_client_ca;
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1)
            goto fail;
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca);
        if (!names)
            goto fail;
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    static const unsigned char sid[] = "stele";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    return ctx;
fail:;
    char e[256];
    tls_errtext(e, sizeof e);
    snprintf(err, cap, "%s: %s", step, e);
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_init(server *s)
{
    const server_config *cfg = &s->cfg;
    if (!cfg->tls_cert && !cfg->tls_key) {
        if (cfg->tls_client_ca) {
            fprintf(stderr, "stele serve: --tls-client-ca needs --tls-cert and --tls-key\n");
            return -1;
        }
        return 0;
    }
    if (!cfg->tls_cert || !cfg->tls_key) {
        fprintf(stderr, "stele serve: TLS needs both --tls-cert and --tls-key\n");
        return -1;
    }
    tls_server *t = calloc(1, sizeof *t);
    if (!t || tls_sock_method_init() != 0) {
        free(t);
        return -1;
    }
    char err[512];
    t->ctx = tls_ctx_new(cfg, err, sizeof err);
    if (!t->ctx) {
        fprintf(stderr, "stele serve: cannot set up TLS: %s\n", err);
        free(t);
        return -1;
    }
    s->tls = t;
    tls_log_cert(s, t->ctx);
    return 0;
}

void tls_free(server *s)
{
    if (!s->tls)
        return;
    SSL_CTX_free(s->tls->ctx);
    free(s->tls);
    s->tls = NULL;
    /* Every connection (and its BIOs) is gone by now. */
    BIO_meth_free(tls_sock_method);
    tls_sock_method = NULL;
}

int tls_enabled(const server *s) { return s->tls != NULL; }

void tls_reload(server *s)
{
    if (!s->tls) {
        server_log(s, 1, "msg=\"SIGHUP: no TLS certificate configured, nothing to reload\"");
        return;
    }
    char err[512];
    SSL_CTX *ctx = tls_ctx_new(&s->cfg, err, sizeof err);
    if (!ctx) {
        s->tls->reload_failures++;
        server_log(s, 0, "msg=\"tls reload failed; the previous certificate stays\" error=\"%s\"",
                   err);
        return;
    }
    SSL_CTX_free(s->tls->ctx); /* connections using it hold their own reference */
    s->tls->ctx = ctx;
    s->tls->reloads++;
    tls_log_cert(s, ctx);
}

/* Answer a cleartext client of a TLS-only port and close. */
static void tls_refuse_cleartext(conn *c)
{
    static const char body[] =
        "{\"error\":{\"code\":\"TLS_REQUIRED\",\"message\":\"this port speaks TLS only: use "
        "https:// (or tls=true)\"}}\n";
    char msg[512];
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof body - 1, body);
    ssize_t w = send(c->fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    c->srv->tls->cleartext_refused++;
    server_log(c->srv, 2, "msg=\"cleartext connection to a TLS-only port refused\" fd=%d", c->fd);
    /* Shut our side so the response is not lost in a reset by unread input. */
    shutdown(c->fd, SHUT_WR);
    conn_close(c);
}

/*
 * The socket under OpenSSL: a BIO method of our own instead of OpenSSL's
 * socket BIO, doing exactly what the record layer needs and no more. Per
 * record, libssl asks its BIOs a dozen questions through BIO_ctrl (kernel
 * TLS? pending bytes? flush?); the socket BIO answers them through its
 * generic control function, and the read side went through a callback
 * (before and after each read) to learn whether the socket was drained.
 * Here the control function answers the few questions asked, and the read
 * itself notes a short read: a read that got fewer bytes than it asked
 * for drained the socket (as a short recv() does on a plain connection),
 * so once the library holds no buffered bytes either, conn_read may stop
 * without the SSL_read that would only answer WANT_READ (one read() system
 * call and a trip through the record layer per request saved). With
 * read-ahead, OpenSSL asks for all the room left in its record buffer, so
 * "short" means what it means for recv().
 *
 * Each BIO holds its own copy of the descriptor (the writer thread writes
 * through it while the loop may close the connection: http_early.c keeps
 * the number open until then) and, for the reading one, where to note a
 * drained socket (the connection's tls_drained, the loop's alone: the
 * writer never reads). The descriptor is closed by conn_close, not here.
 */
typedef struct tls_sock {
    int fd;
    int eof;      /* a read returned 0: BIO_eof, as the socket BIO says it */
    int *drained; /* the reading BIO: set on a short read */
} tls_sock;

static int tls_sock_write(BIO *b, const char *p, size_t len, size_t *done)
{
    tls_sock *t = BIO_get_data(b);
    ssize_t n;
    do
        n = send(t->fd, p, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    BIO_clear_retry_flags(b);
    if (n >= 0) {
        *done = (size_t)n;
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_write(b);
    *done = 0;
    return 0;
}

static int tls_sock_read(BIO *b, char *p, size_t len, size_t *done)
{
    tls_sock *t = BIO_get_data(b);
    ssize_t n;
    do
        n = recv(t->fd, p, len, 0);
    while (n < 0 && errno == EINTR);
    BIO_clear_retry_flags(b);
    if (t->drained)
        *t->drained = n > 0 && (size_t)n < len;
    if (n > 0) {
        *done = (size_t)n;
        return 1;
    }
    if (n == 0)
        t->eof = 1; /* libssl then reports an unexpected EOF (no close_notify) */
    else if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_read(b);
    *done = 0;
    return 0; /* 0 bytes: end of stream (SSL_ERROR_SYSCALL or ZERO_RETURN) */
}

static long tls_sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    switch (cmd) {
    case BIO_CTRL_FLUSH: /* every write goes straight to the socket */
        return 1;
    case BIO_CTRL_EOF:
        return ((tls_sock *)BIO_get_data(b))->eof;
    case BIO_C_GET_FD: {
        tls_sock *t = BIO_get_data(b);
        if (ptr)
            *(int *)ptr = t->fd;
        return t->fd;
    }
    default: /* no kernel TLS, nothing pending, no close flag to change */
        return 0;
    }
}

static int tls_sock_destroy(BIO *b)
{
    free(BIO_get_data(b));
    BIO_set_data(b, NULL);
    BIO_set_init(b, 0);
    return 1;
}

/* The method, made once (tls_init); -1 without memory. */
static int tls_sock_method_init(void)
{
    if (tls_sock_method)
        return 0;
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "stele socket");
    if (!m || !BIO_meth_set_write_ex(m, tls_sock_write) ||
        !BIO_meth_set_read_ex(m, tls_sock_read) || !BIO_meth_set_ctrl(m, tls_sock_ctrl) ||
        !BIO_meth_set_destroy(m, tls_sock_destroy)) {
        BIO_meth_free(m);
        return -1;
    }
    tls_sock_method = m;
    return 0;
}

static BIO *tls_sock_new(int fd, int *drained)
{
    tls_sock *t = malloc(sizeof *t);
    BIO *b = t ? BIO_new(tls_sock_method) : NULL;
    if (!b) {
        free(t);
        return NULL;
    }
    t->fd = fd;
    t->eof = 0;
    t->drained = drained;
    BIO_set_data(b, t);
    BIO_set_init(b, 1);
    return b;
}

int tls_conn_start(conn *c)
{
    server *s = c->srv;
    if (c->tls_state != TLS_UNDECIDED)
        return 1;
    if (!s->tls) {
        c->tls_state = TLS_PLAIN;
        return 1;
    }
    unsigned char first;
    ssize_t n;
    do
        n = recv(c->fd, &first, 1, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n <= 0) {
        conn_close(c);
        return -1;
    }
    if (first != 0x16) {
        if (s->cfg.allow_cleartext) {
            c->tls_state = TLS_PLAIN;
            return 1;
        }
        tls_refuse_cleartext(c);
        return -1;
    }
    /* Two BIOs of our socket method on the one descriptor: the reading
     * one notes a drained socket, the writing one is the writer thread's
     * while it holds the SSL object (http_early.c). */
    SSL *ssl = SSL_new(s->tls->ctx);
    BIO *rbio = tls_sock_new(c->fd, &c->tls_drained);
    BIO *wbio = tls_sock_new(c->fd, NULL);
    if (!ssl || !rbio || !wbio) {
        SSL_free(ssl);
        BIO_free(rbio);
        BIO_free(wbio);
        conn_close(c);
        return -1;
    }
    SSL_set_bio(ssl, rbio, wbio); /* the SSL object owns both now */
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->tls_state = TLS_ON;
    return 1;
}

/* The first time a handshake is seen complete: count it, log at debug. */
static void tls_handshake_done(conn *c)
{
    c->tls_established = 1;
    c->srv->tls->handshakes++;
    if (c->srv->cfg.log_level >= 2) {
        const unsigned char *alpn = NULL;
        unsigned int alen = 0;
        SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
        server_log(c->srv, 2, "msg=\"tls handshake\" fd=%d version=%s cipher=%s alpn=%.*s", c->fd,
                   SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl), (int)alen,
                   alpn ? (const char *)alpn : "");
    }
}

/* Map an SSL_read/SSL_write failure to the system-call convention. */
static ssize_t tls_fail(conn *c, int r, int is_read)
{
    int e = SSL_get_error(c->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (!is_read)
            c->tls_write_wants_read = 1;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        if (is_read)
            c->tls_read_wants_write = 1;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0; /* close_notify */
    case SSL_ERROR_SYSCALL:
        c->tls_failed = 1;
        if (errno == 0 || errno == EAGAIN) /* EOF without close_notify */
            return 0;
        return -1;
    default: {
        c->tls_failed = 1;
        if (!c->tls_established)
            c->srv->tls->handshake_failures++;
        /* The text only when it is logged (a client that closes without
         * close_notify lands here; formatting costs more than the rest). */
        if (c->srv->cfg.log_level >= 2) {
            char err[256];
            tls_errtext(err, sizeof err);
            server_log(c->srv, 2, "msg=\"%s\" fd=%d error=\"%s\"",
                       c->tls_established ? "tls error" : "tls handshake failed", c->fd, err);
        } else {
            ERR_clear_error();
        }
        errno = EPROTO;
        return -1;
    }
    }
}

/* SSL_get_error needs an empty error queue before the call. Emptying it
 * costs a walk over all its slots, and it is almost always empty already
 * (a failure drains it in tls_errtext): look first. */
static void tls_clear_errors(void)
{
    if (ERR_peek_error())
        ERR_clear_error();
}

ssize_t conn_recv(conn *c, void *p, size_t len)
{
    if (!c->ssl)
        return recv(c->fd, p, len, 0);
    if (len > INT_MAX)
        len = INT_MAX;
    tls_clear_errors();
    errno = 0;
    c->tls_read_wants_write = 0;
    c->tls_drained = 0;
    c->tls_bufs_freed = 0;
    int r = SSL_read(c->ssl, p, (int)len);
    if (!c->tls_established && SSL_is_init_finished(c->ssl))
        tls_handshake_done(c);
    if (r > 0)
        return r;
    return tls_fail(c, r, 1);
}

int conn_is_plain(const conn *c) { return c->tls_state == TLS_PLAIN; }

int conn_recv_drained(const conn *c, size_t got, size_t room)
{
    if (!c->ssl)
        return got < room;
    /* A socket read during this SSL_read came back short, and OpenSSL
     * holds no further bytes (records or read-ahead). */
    return c->tls_drained && !SSL_has_pending(c->ssl);
}

ssize_t conn_send(conn *c, const void *p, size_t len)
{
    if (!c->ssl)
        return send(c->fd, p, len, MSG_NOSIGNAL);
    if (len > INT_MAX)
        len = INT_MAX;
    tls_clear_errors();
    errno = 0;
    c->tls_write_wants_read = 0;
    c->tls_bufs_freed = 0;
    int r = SSL_write(c->ssl, p, (int)len);
    if (r > 0)
        return r;
    ssize_t n = tls_fail(c, r, 0);
    if (n == 0) { /* the peer closed: a write cannot go on */
        errno = EPIPE;
        return -1;
    }
    return n;
}

int tls_early_lend(conn *c)
{
    if (!c->ssl || !c->tls_established || c->tls_failed || c->tls_read_wants_write ||
        c->tls_write_wants_read)
        return 0;
    /* While the writer holds the object the loop does not read (conn_read
     * puts it off): unless the last socket read came back short with
     * nothing buffered in OpenSSL, read once the object is back. */
    if (!c->tls_drained || SSL_has_pending(c->ssl))
        c->tls_read_deferred = 1;
    return 1;
}

int tls_early_write(struct ssl_st *ssl, const char *p, size_t len, size_t *off)
{
    /* The writer thread's own error queue (OpenSSL keeps one per thread). */
    tls_clear_errors();
    while (*off < len) {
        size_t n = len - *off;
        int r = SSL_write(ssl, p + *off, n > INT_MAX ? INT_MAX : (int)n);
        if (r > 0) {
            *off += (size_t)r;
            continue;
        }
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_WRITE)
            return TLS_EARLY_WANT_WRITE;
        if (e == SSL_ERROR_WANT_READ)
            return TLS_EARLY_WANT_READ;
        ERR_clear_error(); /* the loop logs nothing for it: the peer went away */
        return TLS_EARLY_FAILED;
    }
    return TLS_EARLY_SENT;
}

void tls_conn_tick(conn *c, int64_t now)
{
    /* Idle for a second with nothing left to send: give back the record
     * buffers (about 34 KB; OpenSSL refuses while it holds unread or
     * unsent bytes). The next read or write allocates them again. Never
     * while the writer holds the object (an answer in flight). */
    if (!c->ssl || c->tls_bufs_freed || !c->tls_established || conn_unsent(c) ||
        c->early_inflight ||
        now - c->last_activity_ms < TLS_IDLE_RELEASE_MS)
        return;
    if (SSL_free_buffers(c->ssl) == 1) {
        c->tls_bufs_freed = 1;
        c->srv->tls->buffers_released++;
    }
}

void tls_conn_close(conn *c)
{
    /* The writer may be in SSL_write on it (http_early.c): conn_free
     * frees it once the answer's completion arrived. */
    if (!c->ssl || c->early_inflight)
        return;
    /* Best effort close_notify (never waits); then the object goes. */
    if (c->tls_established && !c->tls_failed) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);
    }
    ERR_clear_error();
    SSL_free(c->ssl);
    c->ssl = NULL;
}

void tls_conn_free(conn *c)
{
    if (!c->ssl)
        return;
    ERR_clear_error();
    SSL_free(c->ssl);
    c->ssl = NULL;
}

void tls_metrics(server *s, buf *out)
{
    if (!s->tls)
        return;
    const tls_server *t = s->tls;
    metrics_line(out, "# HELP stele_tls_handshakes_total TLS handshakes completed.\n"
                      "# TYPE stele_tls_handshakes_total counter\nstele_tls_handshakes_total "
                      "%llu\n",
                 (unsigned long long)t->handshakes);
    metrics_line(out,
                 "# HELP stele_tls_handshake_failures_total TLS handshakes that failed.\n"
                 "# TYPE stele_tls_handshake_failures_total counter\n"
                 "stele_tls_handshake_failures_total %llu\n",
                 (unsigned long long)t->handshake_failures);
    metrics_line(out,
                 "# HELP stele_tls_cleartext_refused_total Cleartext connections refused by "
                 "a TLS-only port.\n# TYPE stele_tls_cleartext_refused_total counter\n"
                 "stele_tls_cleartext_refused_total %llu\n",
                 (unsigned long long)t->cleartext_refused);
    metrics_line(out,
                 "# HELP stele_tls_buffers_released_total Times an idle TLS connection gave "
                 "back its record buffers.\n# TYPE stele_tls_buffers_released_total counter\n"
                 "stele_tls_buffers_released_total %llu\n",
                 (unsigned long long)t->buffers_released);
    metrics_line(out,
                 "# HELP stele_tls_reloads_total Certificate reloads (SIGHUP) by result.\n"
                 "# TYPE stele_tls_reloads_total counter\n"
                 "stele_tls_reloads_total{result=\"ok\"} %llu\n"
                 "stele_tls_reloads_total{result=\"failed\"} %llu\n",
                 (unsigned long long)t->reloads, (unsigned long long)t->reload_failures);
}
