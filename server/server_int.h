/*
 * server_int.h - what the parts of server/ share: the server, its
 * connections and the request being served. Not for use outside server/.
 *
 * A connection is in one of four states:
 *
 *   READING    parsing requests from `in`; a complete request is routed
 *   BUSY       an append was handed to the store; parsing is paused until
 *              its completion arrives (responses stay in request order)
 *   STREAMING  an NDJSON read is being produced, a page at a time, each time
 *              `out` drains (so a big read never sits in memory)
 *   CLOSING    flushing `out`, then close
 */
#ifndef STELE_SERVER_INT_H
#define STELE_SERVER_INT_H

#include <http_parser.h>
#include <pthread.h>
#include <stdint.h>

#include "server.h"
#include "util/util.h"

enum conn_state { CS_READING, CS_BUSY, CS_STREAMING, CS_CLOSING };

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
    int accept_ndjson;
    int content_type_json; /* Content-Type absent or application/json */
    size_t header_bytes;
    int complete;
    int too_large;         /* 413 once the headers are done */
    int headers_too_large; /* 431 */
} request;

/* An NDJSON read in progress. */
typedef struct read_job {
    int all;
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
} read_job;

enum { QJ_NONE, QJ_QUERY, QJ_STREAM_TO, QJ_STREAM_AS_OF };

/* A read's from / direction / limit query parameters. */
typedef struct read_args {
    uint64_t from;
    int backwards;
    uint64_t limit;
    int limit_given;
} read_args;

struct server;

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
    int async_pending;        /* an append callback will still arrive */
    int dead;                 /* closed while async_pending: free on arrival */
    struct conn *prev, *next;
} conn;

/* An append completion, from the store's writer thread to the loop. */
typedef struct completion {
    conn *c;
    int rc;
    stele_append_result res;
    char msg[512];
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
    int stopping;
    metrics m;
} server;

/* net.c */
void conn_flush(conn *c);
void conn_close(conn *c);
/* Continue after a response was queued: back to READING (or CLOSING). */
void conn_request_done(conn *c);
int64_t now_ms(void);
void server_log(server *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* http.c */
void http_conn_init(conn *c);
/* Parse what is buffered; routes each complete request. */
void http_conn_process(conn *c);
void request_reset(request *r);
/* Queue a whole response. */
void http_respond(conn *c, int status, const char *content_type, const void *body, size_t len,
                  const char *extra_headers);
/* Queue {"error":{"code","message"}} with the status. */
void http_error(conn *c, int status, const char *code, const char *message);
/* Map a libstele error to status + code and respond. */
void http_stele_error(conn *c, int rc, const char *message, const stele_append_result *res);
/* Start a chunked response / queue a chunk / end it. */
void http_chunked_start(conn *c, int status, const char *content_type);
void http_chunk(conn *c, const void *data, size_t len);
void http_chunked_end(conn *c);
const char *http_status_text(int status);

/* routes.c */
void route_request(conn *c);
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

/* metrics.c */
void metrics_observe(metrics *m, int is_append, double seconds);
void metrics_error(metrics *m, int status, int stele_rc);
void metrics_render(server *s, buf *out);

#endif
