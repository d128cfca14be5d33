/*
 * fuzz_tls.c - the TLS transport of the server (server/tls.c over
 * OpenSSL: deciding TLS or cleartext from the first byte, the handshake
 * on a non-blocking socket, records read with read-ahead, close_notify
 * and failures) on a server running in a thread of this process with a
 * self-signed P-256 certificate made at start (the openssl command).
 *
 * Input: the first byte picks the mode.
 *   even: the rest is sent raw (a ClientHello and what follows, or
 *         cleartext, which the server must refuse with its one 400);
 *   odd:  the driver makes a real TLS 1.3 handshake (OpenSSL client,
 *         ALPN h2 when byte 0 & 2, else http/1.1), sends the rest as
 *         application data and its close_notify, and reads the answer
 *         until the server closes or goes quiet.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"

static int port = -1;
static SSL_CTX *client_ctx;
static char cert[600], key[600];

static void setup(void)
{
    const char *dir = fz_tmpdir("tls");
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    char cmd[2000];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s "
             "-out %s -days 30 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 "
             ">/dev/null 2>&1",
             key, cert);
    if (system(cmd) != 0) {
        fprintf(stderr, "fuzz_tls: cannot make a certificate with the openssl command\n");
        abort();
    }
    server_config cfg;
    fz_server_config(&cfg);
    cfg.tls_cert = cert;
    cfg.tls_key = key;
    port = fz_server_start(&cfg);
    client_ctx = SSL_CTX_new(TLS_client_method());
    if (!client_ctx)
        abort();
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
}

static void over_tls(const uint8_t *data, size_t size, int h2)
{
    int fd = fz_connect(port);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(client_ctx);
    static const unsigned char alpn_h2[] = "\x02h2", alpn_h1[] = "\x08http/1.1";
    if (h2)
        SSL_set_alpn_protos(ssl, alpn_h2, sizeof alpn_h2 - 1);
    else
        SSL_set_alpn_protos(ssl, alpn_h1, sizeof alpn_h1 - 1);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) == 1) {
        size_t off = 0;
        while (off < size) {
            int k = SSL_write(ssl, data + off, (int)(size - off > 16384 ? 16384 : size - off));
            if (k <= 0)
                break;
            off += (size_t)k;
        }
        /* Done sending: close_notify, so the server answers and closes
         * instead of waiting for the next request (a quiet wait per input
         * held the driver to a few runs a second). */
        SSL_shutdown(ssl);
        char sink[16384];
        for (;;) {
            if (!SSL_pending(ssl)) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                if (poll(&p, 1, 50) <= 0)
                    break; /* quiet: an open stream, or a request left waiting */
            }
            int k = SSL_read(ssl, sink, sizeof sink);
            if (k <= 0)
                break;
            if (getenv("FUZZ_VERBOSE"))
                fprintf(stderr, "fuzz_tls: %d bytes over TLS: %.40s\n", k, sink);
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (port < 0)
        setup();
    if (memmem(data, size, "/admin", 6) || memmem(data, size, "Shutdown", 8))
        return 0; /* as fuzz_http.c and fuzz_h2.c: no admin jobs, no stop */
    if (data[0] & 1)
        over_tls(data + 1, size - 1, data[0] & 2);
    else
        fz_exchange(port, data + 1, size - 1, 50);
    return 0;
}
