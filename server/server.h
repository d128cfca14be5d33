/*
 * server.h - `stele serve`: the network server in front of libstele.
 *
 * One event-loop thread (epoll) owns every connection: it parses HTTP/1.1
 * requests (Debian's http-parser), runs reads inline (they never wait for
 * the writer), and hands appends to the store with stele_append_async(); the
 * store's writer thread completes them through an eventfd back into the
 * loop. The server uses only include/stele.h.
 */
#ifndef STELE_SERVER_H
#define STELE_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "stele.h"

typedef struct server_config {
    const char *data_dir;     /* store URI (stele_open), a directory by default ./data */
    const char *host;         /* listen address (default 127.0.0.1) */
    int port;                 /* default 2113 */
    size_t max_connections;   /* default 10000 */
    size_t max_header_bytes;  /* request line + headers, default 16 KiB */
    size_t max_body_bytes;    /* default 64 MiB */
    int idle_timeout_ms;      /* keep-alive connection with no request, default 60 s */
    int request_timeout_ms;   /* a started request must arrive whole, default 30 s */
    int log_level;            /* 0 error, 1 info, 2 debug (a line per request) */
    /* Subscriptions (docs/subscriptions.md). */
    int sse_keepalive_ms;     /* comment on a silent event stream, default 15 s */
    int sse_stall_timeout_ms; /* close a stream whose output has not moved, default 60 s */
    uint64_t sub_behind_events; /* a live subscriber this many events behind the head
                                   has fallen behind, default 10000 */
    int sub_behind_ms;        /* ... or one not caught up for this long, default 5 s */
    int sub_batch_us;         /* under a stream of commits, 100 or more live
                                 subscribers are woken at most once per this many
                                 µs, fewer in proportion (1: 1/100 of it); 0: at
                                 every commit; default 2000 */
    uint64_t sub_checkpoint_events; /* filtered $all: a checkpoint after this many
                                       events passed unsent, default 1000 (and at
                                       least every second while any pass) */
    /* Limits (docs/limits.md). */
    size_t memory_budget;     /* anonymous resident bytes above which new work is
                                 refused (503 BUSY / RESOURCE_EXHAUSTED); 0 = none;
                                 default 1 GiB */
    size_t max_streams_per_connection; /* HTTP/2 concurrent streams, default 100 */
    size_t max_subscriptions; /* SSE feeds + gRPC subscriptions, default 10000 */
    stele_options store;      /* passed to stele_open */
    int ready_fd;             /* if >= 0, write "ready <port>\n" here once listening */
    /* Browsers (server/guard.c, docs/http-api.md): comma-separated lists,
     * "*" for any. NULL: the defaults (our own names; our own origin). */
    const char *allowed_hosts;   /* extra names a Host header may carry */
    const char *allowed_origins; /* web page origins allowed to use the API */
    /* TLS (server/tls.c, docs/security.md): PEM files; NULL: cleartext. */
    const char *tls_cert;        /* certificate chain */
    const char *tls_key;         /* its private key */
    const char *tls_client_ca;   /* require client certificates signed by this CA */
    int allow_cleartext;         /* with TLS: also serve cleartext clients */
    /* Users (server/auth.c, docs/security.md). */
    const char *signing_key;     /* Ed25519 seed file: chain heads are signed (NULL: not) */
    const char *admin_password;  /* creates the user `admin` if it does not exist */
    int insecure;                /* allow a non-loopback address without TLS and users */
    int no_early_reply;          /* answer appends from the loop only (STELE_EARLY_REPLY=0;
                                    http_early.c) */
    int auth_fail_limit;         /* failed authentications per address a minute before
                                    429 / RESOURCE_EXHAUSTED; default 5 */
    /* The continuous archive (routes_backup.c, docs/operations.md): NULL
     * for none; the tail is archived every archive_interval_ms (default
     * 60 s), each sealed segment within a second of its sealing. */
    const char *archive_dir;
    int archive_interval_ms;
} server_config;

/* Defaults for every field. */
void server_config_init(server_config *cfg);

/* Open the store, listen, serve until SIGTERM/SIGINT, then stop gracefully:
 * stop accepting, finish in-flight appends and responses (10 s at most),
 * close the store. Returns 0 after a clean stop, else an exit code with a
 * message on stderr. */
int server_run(const server_config *cfg);

#endif
