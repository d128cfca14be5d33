/*
 * server_int.h - what the parts of server/ share: the server, its
 * connections and the request being served. Not for use outside server/.
 *
 * A connection is in one of five states:
 *
 *   READING    parsing requests from `in`; a complete request is routed
 *   BUSY       an append was handed to the store; parsing is paused until
 *              its completion arrives (responses stay in request order)
 *   STREAMING  an NDJSON read or a large JSON page is being produced, a
 *              part at a time, each time `out` drains (so a big read never
 *              sits in memory)
 *   SSE        a text/event-stream response that lasts until the client
 *              goes away (subscriptions): sse.c produces it as the store
 *              commits and as `out` drains; input is discarded
 *   CLOSING    flushing `out`, then close
 */
#ifndef STELE_SERVER_INT_H
#define STELE_SERVER_INT_H

#include <http_parser.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "server.h"
#include "util/shared.h"

enum conn_state { CS_READING, CS_BUSY, CS_STREAMING, CS_CLOSING, CS_SSE };

/* Who makes a request (auth.c, access.c): a user and its groups, or, with
 * authentication off, `open` (everything allowed, as before users). */
#define AUTH_NAME_MAX 128
#define AUTH_MAX_GROUPS 8
typedef struct auth_who {
    char name[AUTH_NAME_MAX];
    char groups[AUTH_MAX_GROUPS][AUTH_NAME_MAX];
    int ngroups;
    unsigned authenticated : 1, admin : 1, ops : 1, open : 1, via_key : 1;
} auth_who;

typedef struct request {
    int method;
    buf url;
    buf body;
    int in_header_value;   /* the parser is inside a header value */
    int header_id;         /* which header we are collecting (HDR_*) */
    char hdr_name[40];
    size_t hdr_name_len;
    char expected[40];     /* Stele-Expected-Revision */
    int has_expected;
    char last_event_id[40]; /* Last-Event-ID (SSE resume) */
    int has_last_event_id;
    char if_none_match[128]; /* If-None-Match (the web UI's assets) */
    int accept_ndjson;
    /* guard.c: the headers it judges (values cut at the buffer size, with
     * *_too_long set), and whether the response gets CORS headers. */
    char content_type[128];
    int has_content_type;
    char origin[256];
    int has_origin, origin_too_long;
    char host[256];
    int has_host, host_too_long;
    char fetch_site[24], fetch_mode[24]; /* Sec-Fetch-Site / -Mode */
    int has_acr_method;    /* Access-Control-Request-Method (a preflight) */
    int cors;              /* the Origin is allowed: answer with CORS headers */
    size_t header_bytes;
    int complete;
    int too_large;         /* 413 once the headers are done */
    int headers_too_large; /* 431 */
    int begun;             /* the request line started (on_message_begin) */
    int fresh;             /* as request_reset left it: nothing written since */
    int bad_version;       /* 505: not HTTP/1.0 or 1.1 */
    int busy;              /* over the memory budget: 503 BUSY */
    /* auth.c: the Authorization header (wiped with the request). */
    char authorization[1024];
    int has_authorization, authorization_too_long;
    int has_requested_with; /* X-Requested-With: a 401 without WWW-Authenticate (access.c) */
    int authed;            /* authentication done for this request (who is set) */
} request;

/* Sizing pages by bytes: the largest event of the last page read. */
typedef struct pager {
    size_t event_bytes;
    int seen;
} pager;

/* An NDJSON read, or a JSON page produced in parts, in progress. */
typedef struct read_job {
    int all;
    int filter;            /* only streams the user may read (access_filter_read) */
    char stream[1024];
    uint64_t next;
    int backwards;
    uint64_t remaining;
    int done;
    /* Queries and temporal reads (routes_query.c); 0 for a plain read. */
    int query;             /* QJ_* */
    stele_query q;         /* key and type point into qkey and qtype */
    char qkey[256], qtype[256];
    uint64_t to;           /* QJ_STREAM_TO */
    int64_t as_of_us;      /* QJ_STREAM_AS_OF */
    int64_t after_us, before_us; /* QJ_STREAM_BETWEEN (INT64_MIN / INT64_MAX: none) */
    /* A JSON page (not NDJSON) sent as chunks (routes.c). */
    int json;
    size_t json_sent;      /* events written so far */
    uint64_t json_limit;   /* the request's limit, for the next link */
    char link[900];        /* the next link's path and fixed parameters */
} read_job;

enum { QJ_NONE, QJ_QUERY, QJ_STREAM_TO, QJ_STREAM_AS_OF, QJ_STREAM_BETWEEN };

/* A read's from / direction / limit query parameters. */
typedef struct read_args {
    uint64_t from;
    int backwards;
    uint64_t limit;
    int limit_given;
} read_args;

struct server;
struct sse_conn;

typedef struct conn {
    struct server *srv;
    int fd;
    http_parser parser;
    buf in;
    size_t in_off;
    buf out;
    size_t out_off;
    request req;
    int state;
    int keep_alive;
    int64_t last_activity_ms;
    int64_t request_start_ms; /* 0 when no request is partly read */
    int64_t stalled_since_ms; /* output not draining */
    uint64_t t_start_ns;      /* when the current request was routed */
    read_job job;
    int async_pending;        /* append callbacks that will still arrive */
    int dead;                 /* closed while async_pending: free on arrival */
    int proto_known;          /* HTTP/1.1 or HTTP/2 decided from the first bytes */
    int read_paused;          /* input left in the socket: `out` must drain first */
    int peer_hup;             /* epoll saw RDHUP/HUP/ERR: read to EOF, not to a short read */
    int in_process;           /* http_conn_process is running (no re-entry) */
    size_t blank_bytes;       /* line breaks before a request line (cut at a bound) */
    int got_bytes;            /* anything arrived yet (else: request timeout) */
    pager rpg;                /* reads' page sizes by bytes, kept across requests */
    struct h2_session *h2;    /* HTTP/2 (gRPC) connection: h2.c */
    struct conn *pump_next;   /* drain_completions: gRPC answers to write, */
    int pump_queued;          /* ... once per connection per batch */
    struct sse_conn *sse;     /* SSE: the event stream (sse.c) */
    void *gwait;              /* a consumer-group pull waiting (routes_groups.c) */
    /* tls.c: the transport (plain or TLS; decided by the first byte). */
    struct ssl_st *ssl;       /* NULL: plain TCP */
    int tls_state;            /* undecided, plain, TLS */
    int tls_established;      /* the handshake completed */
    int tls_failed;           /* a fatal TLS error: no close_notify */
    int tls_read_wants_write; /* SSL_read needs the socket writable */
    int tls_write_wants_read; /* SSL_write needs the socket readable */
    int tls_drained;          /* the last socket read under SSL_read was short */
    int tls_bufs_freed;       /* idle: the record buffers were given back */
    int tls_read_deferred;    /* the writer holds the SSL object: read once it is back */
    auth_who who;             /* the current request's principal (auth.c) */
    char vis_stream[256];     /* access_visible's last answer: stream, */
    int vis_ok;               /* ... and whether it was readable */
    /* http_early.c: an append the writer thread may answer itself. */
    int early_inflight;       /* its answer may still be sent on the descriptor */
    int fd_held;              /* closed meanwhile: held_fd stays open until then */
    int held_fd;
    char peer[48];            /* the peer's address as text ("" if unknown) */
    char host_ok[64];         /* guard.c: the last Host value found allowed */
    struct conn *prev, *next;
} conn;

/* An append completion, from the store's writer thread to the loop. */
typedef struct completion {
    conn *c;
    void *op;   /* a gRPC operation (grpc_streams.c); NULL for HTTP/1.1 */
    int rc;
    stele_append_result res;
    char msg[512];
    /* Another kind of HTTP/1.1 completion (multi-stream appends): `done`
     * answers it instead of route_append_done; `extra` is its data, freed
     * with extra_free once delivered or discarded. */
    void (*done)(conn *c, struct completion *cp);
    void *extra;
    void (*extra_free)(void *extra);
    struct completion *next;
} completion;

/* Prometheus metrics (metrics.c). Updated by the loop thread only. */
#define LAT_BUCKETS 14
typedef struct metrics {
    uint64_t requests;
    uint64_t appends, append_events, append_bytes;
    uint64_t reads, read_events;
    uint64_t errors_by_status[6]; /* 400 404 409 410 413 5xx */
    uint64_t errors_by_code[24];  /* index: -STELE_E* */
    uint64_t connections_total;
    uint64_t lat_append[LAT_BUCKETS + 1], lat_read[LAT_BUCKETS + 1];
    double lat_append_sum, lat_read_sum;
    /* Subscriptions over SSE (sse.c, subscribe.c). */
    uint64_t subscriptions_total;  /* SSE responses started */
    uint64_t sse_events;           /* events sent to subscribers */
    uint64_t sse_events_shared;    /* ... of them, copied from the rendering
                                      shared by all subscribers (sub_cache) */
    uint64_t sse_checkpoints;      /* checkpoint markers sent */
    uint64_t sse_caught_up;        /* caught-up markers sent */
    uint64_t sse_fell_behind;      /* fell-behind markers sent */
    uint64_t early_replies;        /* appends answered by the writer (http_early.c) */
    /* Limits (limits.c). */
    uint64_t busy_refusals;        /* work refused over the memory budget */
    uint64_t limit_refusals;       /* refused by a count limit (subscriptions) */
    uint64_t mem_trims;            /* malloc_trim calls */
} metrics;

typedef struct server {
    server_config cfg;
    stele_db *db;
    int epfd, lfd, evfd, sigfd;
    int port;
    conn *conns;
    size_t nconns;
    conn *graveyard; /* closed this loop turn; freed after the event batch */
    pthread_mutex_t cq_mu;
    completion *cq_head, *cq_tail;
    /* Under cq_mu: the eventfd was written since the loop's last drain;
     * and the loop waits for an early answer's completion (a connection
     * with one in flight had input), so a quiet post must wake it. */
    int cq_signalled, cq_wake_wanted;
    int stopping;
    metrics m;
    struct grpc_server *grpc; /* gRPC state shared by connections (grpc.c) */
    int watch_fd;          /* stele_watch(): readable after each commit */
    struct sse_hub *sse;   /* every SSE connection (sse.c) */
    struct sub_cache *sub_cache; /* the newest events as SSE (subscribe.c) */
    int group_fd;          /* stele_group_watch(): consumer groups may have work */
    struct groups_srv *groups; /* pull consumers, waiting pulls (routes_groups.c) */
    struct admin *admin; /* routes_admin.c: the scavenge thread; NULL until used */
    struct backup_admin *backup; /* routes_backup.c: the backup thread; NULL until used */
    struct archive *archive;     /* routes_backup.c: the archive thread; NULL without one */
    /* limits.c: the memory budget. */
    int statm_fd;          /* /proc/self/statm */
    size_t mem_anon;       /* anonymous resident bytes, last sample */
    size_t mem_trimmed;    /* ... after the last malloc_trim (or lower since) */
    size_t mem_last_conns; /* connections at the last tick */
    int64_t mem_sampled_ms;
    size_t subscriptions;  /* SSE feeds and gRPC subscriptions open */
    struct guard *guard; /* guard.c: allowed hosts and origins */
    int store_readonly;  /* as last logged (route_health_tick) */
    /* net.c: accepting paused after EMFILE/ENFILE (0: not paused) */
    int64_t accept_paused_until, accept_logged_ms;
    uint64_t accept_pauses; /* since the last log line about it */
    struct tls_server *tls; /* tls.c: NULL without a certificate */
    struct auth_state *auth; /* auth.c: users, API keys, the verifier thread */
} server;

/* limits.c */
#define BUSY_MESSAGE "the server is at its memory budget (--memory-budget): retry later"
void limits_init(server *s);
void limits_free(server *s);
/* Over the memory budget: new work is to be refused (counts a refusal). */
int limits_over(server *s);
/* Once a second: sample memory; give free memory back after load. */
void limits_tick(server *s);
/* At cfg.max_subscriptions (SSE feeds + gRPC subscriptions): 1 with a
 * message for the client (counts a refusal). */
int limits_subscriptions_full(server *s, char *msg, size_t len);

/* The count limit for the next page: about `target_bytes` of events, at
 * least 1, at most `max_events` (a few before the first page). */
size_t pager_limit(const pager *p, size_t target_bytes, size_t max_events);
/* After reading `pg`. */
void pager_observe(pager *p, const stele_page *pg);

/* net.c */
/* Unsent output at or above which a connection's further pipelined
 * requests are not parsed (nor more input read) until it drains. */
#define CONN_OUT_HIGH_WATER (256u << 10)
size_t conn_unsent(const conn *c);
void conn_flush(conn *c);
/* TLS: the read put off while the writer held the connection's SSL object
 * (http_early.c), done once it is back. */
void conn_read_resume(conn *c);
void conn_close(conn *c);
/* Continue after a response was queued: back to READING (or CLOSING). */
void conn_request_done(conn *c);
int64_t now_ms(void);
void server_log(server *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Hand a completion to the loop (from any thread; wakes it). */
void completion_post(server *s, completion *cp);
/* Post without waking the loop unless it asked (cq_wake_wanted): for a
 * completion that only does bookkeeping (an answer the writer already
 * sent whole), which the loop picks up at the start of its next turn. */
void completion_post_quiet(server *s, completion *cp);

/* tls.c: the transport of every connection (see its header comment).
 * conn_recv/conn_send behave like recv/send on a non-blocking socket. */
int tls_init(server *s); /* -1 with a message on stderr */
void tls_free(server *s);
int tls_enabled(const server *s);
void tls_reload(server *s); /* SIGHUP: new certificate, or keep the old one */
/* Decide plain or TLS from the first byte: 1 go on, 0 wait for it, -1 the
 * connection was closed (refused cleartext, EOF). */
int tls_conn_start(conn *c);
ssize_t conn_recv(conn *c, void *p, size_t len);
/* After conn_recv returned `got` bytes into `room`: 1 when the socket is
 * known drained (bytes arriving later raise a new epoll edge) and no layer
 * holds more, so the read loop may stop without a read that says EAGAIN. */
int conn_recv_drained(const conn *c, size_t got, size_t room);
/* Once a second: an idle TLS connection frees its record buffers. */
void tls_conn_tick(conn *c, int64_t now);
/* 1 when the connection is plain TCP (no TLS layer buffering records). */
int conn_is_plain(const conn *c);
ssize_t conn_send(conn *c, const void *p, size_t len);
void tls_conn_close(conn *c);
/* conn_free: the SSL object that conn_close left to an answer in flight. */
void tls_conn_free(conn *c);
void tls_metrics(server *s, buf *out);
/* Loop thread, before submitting an append whose answer the writer would
 * encrypt and send (http_early.c): 1 if the SSL object may be lent to the
 * writer (an established session with no retry pending); then notes in
 * c->tls_read_deferred whether bytes may be left to read once it is back. */
int tls_early_lend(conn *c);
/* Writer thread: SSL_write the answer's `len` bytes on a lent SSL object,
 * advancing *off; returns TLS_EARLY_SENT (all of it), TLS_EARLY_WANT_WRITE
 * or TLS_EARLY_WANT_READ (the loop retries the rest from `out`), or
 * TLS_EARLY_FAILED (the session is unusable: close). */
enum { TLS_EARLY_SENT = 0, TLS_EARLY_WANT_WRITE, TLS_EARLY_WANT_READ, TLS_EARLY_FAILED };
int tls_early_write(struct ssl_st *ssl, const char *p, size_t len, size_t *off);

/* h2.c: HTTP/2 connections (gRPC). h2_detect looks at the first bytes of a
 * connection: 1 = the HTTP/2 preface (the session is set up), 0 = HTTP/1.1,
 * -1 = too few bytes to tell yet. */
int h2_detect(conn *c);
void h2_conn_process(conn *c);
/* `out` drained: produce more frames. */
void h2_writable(conn *c);
/* Once a second: deadlines and keepalive pings. */
void h2_tick(conn *c, int64_t now);
/* The server is stopping: GOAWAY, end subscriptions; 1 when nothing is
 * left in flight and the connection may close. */
int h2_stop(conn *c);
void h2_free(conn *c);

/* grpc.c: process-wide gRPC state; completions of gRPC appends. */
int grpc_server_init(server *s);
void grpc_server_free(server *s);
/* Wake gRPC's subscriptions: called by the loop when the server's commit
 * watch (s->watch_fd) or group watch (s->group_fd) had news, so gRPC needs
 * no eventfds of its own. Does nothing without gRPC. */
void grpc_on_commit(server *s);
void grpc_completion(conn *c, completion *cp);
/* Free a completion's operation without delivering it (shutdown). */
void grpc_completion_discard(completion *cp);

/* http.c */
void http_conn_init(conn *c);
/* Parse what is buffered; routes each complete request. */
void http_conn_process(conn *c);
void request_reset(request *r);
/* Queue a whole response. */
void http_respond(conn *c, int status, const char *content_type, const void *body, size_t len,
                  const char *extra_headers);
/* Queue {"error":{"code","message"}} with the status. `code` is one of the
 * error vocabulary (docs/errors.md) with its status there; test_errors
 * checks every call site that spells both. */
void http_error(conn *c, int status, const char *code, const char *message);
/* http_error with the status the vocabulary gives `code` ("GROUP_NOT_FOUND"). */
void http_error_code(conn *c, const char *code, const char *message);
/* Name a libstele error by the vocabulary (status + code) and respond. */
void http_stele_error(conn *c, int rc, const char *message, const stele_append_result *res);
/* A request answered: count its latency (as a non-append) and end it. */
void http_request_finish(conn *c);
/* The same for an append. */
void http_append_finish(conn *c);
/* A response's head fields after the status line (Server, Content-Type,
 * Connection, CORS), as http_respond writes them; nonzero without memory. */
int http_head_fields(conn *c, buf *b, const char *content_type);

/* http_early.c: appends answered from the store's writer thread. */
typedef struct early_ctx {
    int fd;      /* the writer sends on it; -1: the loop sends */
    struct ssl_st *ssl; /* TLS: the writer encrypts and sends through it */
    int render;  /* the writer renders the answer (plain and TLS) */
    int quiet;   /* sent whole, its completion need not wake the loop */
    buf fields;  /* the head's fields, rendered at submit */
} early_ctx;
/* Loop thread, before submitting a plain append: whether the writer may
 * answer it (sets e->fd and c->early_inflight). */
void early_prepare(conn *c, early_ctx *e);
void early_ctx_free(early_ctx *e);
/* Writer thread, in the append's callback: render (and on plain TCP send) the answer of a
 * successful append; 1 when it did (cp->done/extra set), 0 when the loop
 * answers. */
int early_send(early_ctx *e, completion *cp, const uint8_t (*ids)[16], const uint8_t *ulid,
               size_t nids);
void early_done(conn *c, completion *cp);
/* Writer thread, after early_send: 1 if the answer left whole and its
 * completion may be posted quietly (completion_post_quiet). */
int early_quiet(const early_ctx *e, const completion *cp);
/* An append's answer body (route_append_done and early_send); nonzero
 * without memory. */
int http_append_body(buf *b, const stele_append_result *res, const uint8_t (*ids)[16],
                     const uint8_t *ulid, size_t nids);
/* http_error, then end the request. */
void http_fail(conn *c, int status, const char *code, const char *message);
/* Answer the JSON in `b` (a newline is added; `b` is freed) and finish. */
void http_json_done(conn *c, int status, buf *b);
/* Start a chunked response / queue a chunk / end it. */
void http_chunked_start(conn *c, int status, const char *content_type);
/* The same with extra header lines ("Name: value\r\n" each, may be NULL). */
void http_chunked_start_ex(conn *c, int status, const char *content_type, const char *extra);
void http_chunk(conn *c, const void *data, size_t len);
void http_chunked_end(conn *c);
const char *http_status_text(int status);

/* routes.c */
void route_request(conn *c);
/* Once a second: log changes of the store's read-only state. */
void route_health_tick(server *s);
/* Parse ?from=&direction=&limit=; on failure responds 400 and returns -1. */
int route_parse_read_args(conn *c, const char *q, size_t qlen, read_args *ra);
/* Serve the read described by c->job (JSON page or NDJSON by the Accept
 * header); a JSON page's next link is `link` (path and fixed parameters,
 * ending in '?' or '&') followed by from, direction and limit. */
void route_serve_read(conn *c, const read_args *ra, const char *link);

/* routes_query.c */
/* GET /categories/{c}, /types/{t}, /tags/{t}, /correlations/{id},
 * /actors/{a}: 1 if the path is one of them (a response is on its way). */
int route_query_request(conn *c, const char *path, size_t plen, const char *q, size_t qlen);
/* A read of $all with ?after=/?before=, or of a stream with ?to=/?asOf=:
 * 1 if so (handled), 0 for a plain read. */
int route_query_read(conn *c, const char *stream, const char *q, size_t qlen);
/* One page of the query or temporal read in `j`. */
int route_query_page(conn *c, const read_job *j, size_t limit, stele_page **pg);
/* Produce the next part of an NDJSON read (STREAMING). */
void route_stream_more(conn *c);
/* An append completed. */
void route_append_done(conn *c, const completion *cp);
/* One event as JSON on one line (no trailing newline), exactly as reads
 * render it: the form SSE data and NDJSON lines share. */
void route_event_json(buf *b, const stele_event *e);
/* Event i of a page as route_event_json writes it; an event read from a
 * view stream ($ce-Order ...) also gets "link":{"stream","revision"}: its
 * place in the view (docs/kurrentdb-compatibility.md). */
void route_page_event_json(buf *b, const stele_page *pg, size_t i);
/* Append ,"link":{...} inside the event object just written to b (which
 * ends with its closing brace) if event i of pg has a view link. */
void route_link_json(buf *b, const stele_page *pg, size_t i);

/* subscribe.c: GET /subscribe/all and /subscribe/streams/{stream}. Returns
 * 1 if `path` is one of its routes (the request is then answered). */
int route_subscribe(conn *c, const char *path, size_t plen, const char *q, size_t qlen);
/* Free what subscriptions share (at server exit). */
void subscribe_free_shared(server *s);

/* routes_projections.c: /projections. Returns 1 if `path` is one of its
 * routes (the request is then answered). */
int route_projections(conn *c, const char *path, size_t plen, const char *q, size_t qlen);
/* GET /streams/{stream}/state?projection=NAME...: 1 if the query names a
 * projection (then answered), 0 otherwise. */
int route_stream_state(conn *c, const char *stream, const char *q, size_t qlen);
/* One projection's status as JSON. */
void projection_info_json(buf *b, const stele_projection_info *in, int with_query);

/* routes_groups.c: /subscriptions (consumer groups). Returns 1 if `path`
 * is one of its routes (the request is then answered or waiting). */
int route_groups(conn *c, const char *path, size_t plen, const char *q, size_t qlen);
/* routes_rules.c: /rules (1 if the path was theirs), and a group's rewind. */
int route_rules(conn *c, const char *path, size_t plen, const char *q, size_t qlen);
/* metrics_rules.c: the rule and consumer group series of /metrics. */
void metrics_render_rules(server *s, buf *b);
void route_group_rewind(conn *c, const char *stream, const char *group, const char *q,
                        size_t qlen);
int groups_srv_open(server *s);      /* -1 on failure, with a message */
void groups_srv_close(server *s);
void groups_on_watch(server *s);     /* the group watch fd is readable */
void groups_tick(server *s, int64_t now);
void groups_conn_gone(conn *c);      /* conn_close of a waiting pull */

/* routes_multi.c: POST /streams (multi-stream append) and POST /query (DCB
 * query). Returns 1 if `path` is one of them (the request is answered). */
int route_multi(conn *c, const char *path, size_t plen);

/* routes_streams.c: /streams/{stream}/metadata, /snapshots, /load. Returns
 * 1 when `rest` is one of them (the request is answered), else 0. */
int route_streams(conn *c, int method, const char *stream, const char *rest, size_t rest_len,
                  const char *q, size_t qlen);

/* Stream metadata as JSON, shared by PUT/GET /streams/{s}/metadata and
 * KurrentDB's `$$stream` metastreams over gRPC. Parse the object `json`
 * (maxAge, maxCount, truncateBefore, maxSnapshots or KurrentDB's $maxAge,
 * $maxCount, $tb; other members are custom fields, gathered in *custom,
 * which md->custom points into: buf_free it after use). `kurrent`: drop
 * KurrentDB's $acl and $cacheControl. 0, or -1 with the error code
 * (INVALID_JSON, INVALID_ARGUMENT, INTERNAL) and message. */
int stream_metadata_parse(const char *json, size_t len, int kurrent, stele_stream_metadata *md,
                          buf *custom, const char **code, char *msg, size_t msglen);
/* Write md's fields and custom members as one JSON object; `kurrent`: with
 * KurrentDB's names ($maxAge, $maxCount, $tb). */
void stream_metadata_write(buf *b, const stele_stream_metadata *md, int kurrent);

/* routes_admin.c */
/* A request under /admin/. */
void route_admin(conn *c, const char *path, size_t plen);
/* routes_admin.c: loopback-only start/stop and the allowed methods of an
 * admin job's path (scavenge, backup); 0 if the request goes on. */
int admin_job_gate(conn *c, const char *job, const char *path);
/* routes_ui.c: the web UI's assets at / and /ui/ (GET and HEAD); 1 if
 * the path is the UI's (answered), 0 otherwise. */
int route_ui(conn *c, const char *path, size_t plen);
/* routes_names.c: GET /streams, /categories, /types (name listings); 1 if
 * answered, 0 otherwise (POST /streams is a multi-stream append). */
int route_names(conn *c, const char *path, size_t plen, const char *q, size_t qlen);
/* GET /chain/head, /chain/proof, /chain/export (routes_chain.c): 1 if handled. */
int route_chain(conn *c, const char *path, size_t plen, const char *q, size_t qlen);
/* Join the export thread of routes_chain.c (before the store closes). */
void chain_routes_shutdown(server *s);
/* Stop a running scavenge and join its thread (before the store closes). */
void admin_shutdown(server *s);
/* The scavenge thread for other front ends (gRPC Operations). Start one:
 * 0 with *id the new scavenge's, or the running one's with *running = 1;
 * else ADMIN_NOMEM, ADMIN_STOPPING (server shutting down) or ADMIN_FAILED
 * (the thread could not start). Stop the running one if `want` is 0 or its
 * id: 0 (asked to stop after its segment; *id its id) or ADMIN_NONE (none
 * runs, or another; *id the last one's, 0 if none). Loop thread only. */
enum { ADMIN_NOMEM = 1, ADMIN_STOPPING, ADMIN_FAILED, ADMIN_NONE };
int admin_scavenge_start(server *s, uint64_t *id, int *running);
int admin_scavenge_stop(server *s, uint64_t want, uint64_t *id);

/* access.c: authenticate and authorise an HTTP request before its route:
 * 0 to go on (c->who set), -1 when answered (401, 403, 429) or waiting for
 * the password check (the route runs again when it is done). */
int access_http_gate(conn *c, const char *path, size_t plen);
/* A `$acl` value of stream metadata: 0 if well formed (an object of $r,
 * $w, $d, $mr, $mw, each a name or an array of names), else -1 with msg. */
int access_acl_check(const char *val, size_t len, char *msg, size_t cap);
/* Reads of $all filtered per stream (GET /all for users without $ops): 1
 * if `who` needs the filter; 1 if the stream is readable by the current
 * request's user (remembers the last stream asked). */
int access_filtered(const auth_who *who);
int access_visible(conn *c, const char *stream);
/* A system view stream ($ce-, $et-, $bc-, $streams)? */
int access_is_view(const char *stream);
/* Must a read of `stream` (NULL: $all, a query or a DCB query) by `who`
 * be filtered per stream? Yes for $all and queries without $ops, and for
 * a view the user may not read as a whole. */
int access_filter_read(server *s, const auth_who *who, const char *stream);
/* POST /streams by c->who: 0 when it may write every named stream (and,
 * with a condition, read across streams: $ops); else -1, answered 403. */
int access_append_multi(conn *c, char *const *names, size_t n, int has_condition);
/* routes_users.c: /users and /api-keys (1 if the path was theirs). */
int route_users(conn *c, const char *path, size_t plen, const char *q, size_t qlen);
/* routes_backup.c: /admin/backup and /admin/archive; the backup thread
 * (stopped and joined by backup_shutdown) and the archive thread (started
 * with the server when cfg.archive_dir is set: -1 with a message on stderr
 * if its first run fails; archive_stop makes the last run and joins). */
void route_backup(conn *c, const char *path, size_t plen);
void backup_shutdown(server *s);
int archive_start(server *s);
void archive_stop(server *s);

/* guard.c: Host, Origin, Content-Type and CORS rules for HTTP/1.1
 * requests, and the loopback rule for operations that stop or reconfigure
 * the server. */
int guard_init(server *s); /* -1 with a message on stderr */
void guard_free(server *s);
/* Before routing: 0 to go on, or -1 when the request was answered (403,
 * 415, or the reply to OPTIONS). */
int guard_http_request(conn *c);
/* The CORS header lines of the current request's response (if any). */
void guard_cors_headers(const conn *c, buf *out);
/* 1 if the peer is a loopback address; `addr` gets its text form. */
int guard_peer_is_loopback(const conn *c, char *addr, size_t cap);
/* The message of a refusal of `what` ("Operations.Shutdown") from `addr`. */
void guard_loopback_message(const char *what, const char *addr, char *msg, size_t cap);

/* metrics.c */
void metrics_observe(metrics *m, int is_append, double seconds);
void metrics_error(metrics *m, int status, int stele_rc);
void metrics_render(server *s, buf *out);
/* Append one printf-formatted piece of the /metrics text to `out` (at most
 * 1023 bytes; longer is cut). */
void metrics_line(buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------ sse.c
 *
 * Server-Sent Events responses (text/event-stream, chunked), for catch-up
 * subscriptions (subscribe.c) and any other push feed (consumer groups).
 * A feed is a `sse_source`: the hub calls its pump() to produce events
 * only while the connection's unsent output is below a high-water mark,
 * so a slow client never makes the server buffer more than about that
 * much; the rest of the feed stays in the store until the client reads.
 *
 * A connection is in one of three queues:
 *   ready    pump() it on this loop turn (round robin, a bounded number of
 *            pumps per turn so one feed cannot starve the others)
 *   waiting  pump() said SSE_WAIT: moved to ready after the next commit
 *            of the store (one stele_watch eventfd for the whole server)
 *            or an explicit sse_wake()
 *   blocked  its output is above the high-water mark: moved to ready when
 *            the socket has drained it
 *
 * Keep-alive comments go out when a stream has been silent for
 * cfg.sse_keepalive_ms. A stream whose output has not moved for
 * cfg.sse_stall_timeout_ms (the client stopped reading or is gone) is
 * closed; one that reads at all, however slowly, is kept.
 */

/* What pump() reports. */
enum {
    SSE_MORE,  /* more can be produced now: pump again (after others) */
    SSE_WAIT,  /* nothing to send until the next commit or sse_wake() */
    SSE_END,   /* the feed is over: end the response cleanly and close */
    SSE_CLOSE, /* cut the connection at once */
};

typedef struct sse_source {
    const char *name; /* for logs: "subscribe/all" */
    /* Produce at most `max_events` events with sse_event(); everything
     * written during one pump goes out as one chunk. */
    int (*pump)(conn *c, void *ctx, size_t max_events);
    /* Once a second (may be NULL): timers of the feed (may call
     * sse_event; may return SSE_END / SSE_CLOSE like pump, else SSE_MORE). */
    int (*tick)(conn *c, void *ctx, int64_t now_ms);
    /* The connection is gone (closed or ended): free ctx. */
    void (*free)(void *ctx);
} sse_source;

/*
 * Answer the current request with 200 text/event-stream and make the
 * connection a feed of `src`; the first pump runs on this loop turn.
 * `ctx` belongs to the hub from now on (src->free frees it), even when
 * this fails (-1: out of memory; the connection is then closed).
 */
int sse_begin(conn *c, const sse_source *src, void *ctx);

/*
 * Queue one SSE event: "event: NAME" (if `event` is not NULL), "id: ID"
 * (if `id` is not NULL), the data as "data:" lines (a line break in it
 * starts a new data line, as the SSE format requires), then a blank line.
 * Inside pump() it joins the pump's chunk; elsewhere it is sent at once.
 */
void sse_event(conn *c, const char *event, const char *id, const void *data, size_t len);

/* Queue a comment line (": text"), which clients ignore. */
void sse_comment(conn *c, const char *text);

/* Queue bytes already in the SSE format (whole events), e.g. ones rendered
 * once and shared by many feeds. Like sse_event, joins the pump's chunk. */
void sse_raw(conn *c, const void *p, size_t len);

/* Inside pump() only: the buffer of this pump's output, for a feed that
 * writes whole SSE events straight into it (no line breaks in data). */
buf *sse_stage(conn *c);
/* Like sse_raw, for bytes shared by many feeds (rendered once): during a
 * pump with nothing staged yet they are sent as the pump's chunk straight
 * from `p` (one sendmsg, no copy unless the socket is full); `p` need only
 * stay valid for the call. */
void sse_shared(conn *c, const void *p, size_t len);

/* Pump this connection again soon even without a commit (if it waits). */
void sse_wake(conn *c);
/* now_ms() for a feed's pump: the clock read once when the pump started
 * (now_ms() itself outside a pump). */
int64_t sse_now_ms(const conn *c);

/* The next position of $all as of the latest commit the hub saw. */
uint64_t sse_head(const server *s);

/* Number of SSE connections open. */
size_t sse_count(const server *s);

/* For net.c. */
int sse_hub_open(server *s);         /* -1 on failure, with a message */
void sse_hub_close(server *s);
int sse_on_commit(server *s);        /* a commit happened: 1 (feeds made
                                        ready), 0 if none since last time */
int sse_run(server *s);              /* pump ready feeds; 1 if more wait */
int64_t sse_due(server *s);          /* ns until held commits wake the live
                                        feeds (-1: none held); at 0 it wakes
                                        them now */
void sse_tick(server *s, int64_t now);
void sse_drained(conn *c);           /* conn_flush emptied `out` */
void sse_detach(conn *c);            /* conn_close: forget the feed */
void sse_stop(server *s);            /* shutting down: end every feed */

#endif
