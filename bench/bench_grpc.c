/*
 * bench_grpc.c - a gRPC load generator for `stele serve`: the KurrentDB
 * client protocol's appends over HTTP/2 (nghttp2), the same workloads and
 * the same result line as bench_http, so the two APIs compare side by side.
 *
 * One thread, one poll loop, --clients HTTP/2 connections with --streams
 * calls in flight on each (a closed loop: a slot sends its next call when
 * the previous answer has arrived). Each slot owns one stream
 * (<prefix>-<workload>-<conn>-<slot>).
 *
 *   append  Streams.Append: options (the stream, an exact expected revision:
 *           no_stream, then the revision the previous answer reported), then
 *           --batch ProposedMessages, then half-close; one AppendResp.
 *   batch   Streams.BatchAppend: one long-lived call per slot; each request
 *           is one BatchAppendReq (a new correlation id, the options with
 *           the exact expected revision, --batch events, is_final), answered
 *           by one BatchAppendResp.
 *   records kurrentdb.protocol.v2 AppendRecords (the official clients'
 *           appendRecords): a two-stream transfer per call, --batch
 *           records to each of the slot's two streams (<stream>-a, <stream>-b),
 *           with a consistency check on each: its exact revision from the
 *           previous answer (no stream at first). One atomic commit of
 *           2 x --batch events per call.
 *   --expect any sends expected revision `any` instead (KurrentDB's write
 *   flood test; with records: no checks).
 *
 * Events are JSON of --data-bytes bytes (as bench_http's), type
 * "BenchEvent", content-type application/json, without ids (the server
 * makes them, as the HTTP benchmark's events). A wrong expected revision is
 * counted as a conflict (there should be none) and the slot continues from
 * the server's current revision; a non-OK gRPC status is an error.
 *
 * Warm-up --warmup seconds (not counted), then --duration seconds
 * (completions inside the window, the latency of each call from its first
 * byte queued to its answer), then the calls in flight drain. One line:
 *
 *   grpc workload=256x1 target=stele events_per_s=... p50_ms=... p99_ms=...
 *     p999_ms=... requests_per_s=... events=... requests=... errors=0
 *     conflicts=0 seconds=... clients=4 streams=64 batch=1 mode=append
 *     client_cpu=...% server_cpu=...% cpu_busy=...%
 *
 * (CPU figures as in bench_http.) Nothing here judges a number.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "streams.pb-c.h"
#include "v2_streams.pb-c.h"

#include "measure.h"

static struct {
    const char *host;
    int port;
    int batch_mode;
    int records_mode; /* --mode records: v2 AppendRecords transfers */
    int expect_any;
    int clients, streams, batch;
    double duration, warmup;
    const char *workload, *target, *prefix;
    int data_bytes;
    int server_pid;
} opt = {.host = "127.0.0.1", .port = 2113, .clients = 1, .streams = 1, .batch = 1,
         .duration = 10, .warmup = 1, .target = "stele", .data_bytes = 200};

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_grpc [--host H] [--port P] [--mode append|batch|records] [--clients C]\n"
            "                  [--streams M] [--batch K] [--expect exact|any] [--duration S]\n"
            "                  [--warmup S] [--workload NAME] [--target NAME] [--prefix P]\n"
            "                  [--data-bytes N] [--server-pid PID]\n");
    exit(2);
}

/* ------------------------------------------------------------ CPU */

/* CPU seconds of the server process (all its threads). */
static double server_cpu_s(int pid)
{
    if (pid <= 0)
        return 0;
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ------------------------------------------------------------ latencies */

static bench_lats g_lat;

/* ------------------------------------------------------------ messages */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("realloc");
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* Append a protobuf-c message with its 5-byte gRPC prefix. */
static void put_framed(bytes *b, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t h[5] = {0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    put(b, h, 5);
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    protobuf_c_message_pack(m, b->p + b->len);
    b->len += n;
}

static char *g_data;            /* the event's JSON data */
static bytes g_append_events;   /* Append: K framed AppendReq{proposed_message} */
static bytes g_batch_events;    /* BatchAppend: K encoded field-3 entries */

static EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry g_m1 =
    EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__PROPOSED_MESSAGE__METADATA_ENTRY__INIT;
static EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry g_m2 =
    EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__PROPOSED_MESSAGE__METADATA_ENTRY__INIT;

static void make_events(void)
{
    static const char head[] = "{\"orderId\":\"ord-000000001\",\"customerId\":\"cust-00042\","
                               "\"currency\":\"EUR\",\"total\":12345,\"items\":[{\"sku\":\"SKU-1\","
                               "\"qty\":2},{\"sku\":\"SKU-2\",\"qty\":1}],\"note\":\"";
    int pad = opt.data_bytes - (int)(sizeof head - 1) - 2;
    if (pad < 0) {
        fprintf(stderr, "bench_grpc: --data-bytes must be at least %d\n", (int)sizeof head + 1);
        exit(2);
    }
    g_data = malloc((size_t)opt.data_bytes + 1);
    memcpy(g_data, head, sizeof head - 1);
    memset(g_data + sizeof head - 1, 'x', (size_t)pad);
    memcpy(g_data + opt.data_bytes - 2, "\"}", 3);

    g_m1.key = "type";
    g_m1.value = "BenchEvent";
    g_m2.key = "content-type";
    g_m2.value = "application/json";
    EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry *meta[] = {&g_m1, &g_m2};
    EventStore__Client__Streams__AppendReq__ProposedMessage pm =
        EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__PROPOSED_MESSAGE__INIT;
    pm.n_metadata = 2;
    pm.metadata = meta;
    pm.data.data = (uint8_t *)g_data;
    pm.data.len = (size_t)opt.data_bytes;
    EventStore__Client__Streams__AppendReq r = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__INIT;
    r.content_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_PROPOSED_MESSAGE;
    r.proposed_message = &pm;
    for (int i = 0; i < opt.batch; i++)
        put_framed(&g_append_events, &r.base);

    /* BatchAppendReq field 3 (repeated ProposedMessage): the same event
     * bytes with tag 3, length-delimited; appended after the other fields
     * of each request (protobuf fields may come in any order). */
    EventStore__Client__Streams__BatchAppendReq__ProposedMessage bpm =
        EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__PROPOSED_MESSAGE__INIT;
    bpm.n_metadata = 2;
    bpm.metadata = (void *)meta;
    bpm.data.data = (uint8_t *)g_data;
    bpm.data.len = (size_t)opt.data_bytes;
    size_t n = protobuf_c_message_get_packed_size(&bpm.base);
    uint8_t *one = malloc(n);
    protobuf_c_message_pack(&bpm.base, one);
    uint8_t hdr[11];
    size_t h = 0;
    hdr[h++] = (3 << 3) | 2;
    for (size_t v = n;; v >>= 7) {
        hdr[h++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f)
            break;
    }
    for (int i = 0; i < opt.batch; i++) {
        put(&g_batch_events, hdr, h);
        put(&g_batch_events, one, n);
    }
    free(one);
}

/* ------------------------------------------------------------ slots */

typedef struct gconn gconn;

typedef struct slot {
    gconn *c;
    int idx;
    char stream[160];
    int64_t expected; /* -1 no_stream, else the exact revision */
    int64_t expected_b; /* records: the second stream's */
    int32_t sid;      /* HTTP/2 stream of the current call */
    int busy;
    uint64_t t0;
    bytes req;        /* request bytes */
    size_t req_off;
    int req_more;     /* BatchAppend: the call stays open for more */
    bytes resp;       /* response bytes not yet decoded */
    int grpc_status;  /* -1 until the trailers */
    uint64_t corr;
} slot;

struct gconn {
    int fd;
    nghttp2_session *ng;
    slot *slots;
};

static int g_stopping;
static uint64_t g_win_start, g_win_end;
static unsigned long long g_events, g_requests, g_errors, g_conflicts;
static int g_inflight;

static void start_call(slot *s);

/* One answer arrived: count it, then send the next call if running. */
static void answered(slot *s, int ok, int conflict, uint64_t current, int have_current)
{
    uint64_t t = bench_now_ns();
    s->busy = 0;
    g_inflight--;
    if (t >= g_win_start && t <= g_win_end) {
        g_requests++;
        if (ok) {
            g_events += (unsigned long long)opt.batch * (opt.records_mode ? 2u : 1u);
            bench_lat_add(&g_lat, t - s->t0);
        } else if (conflict) {
            g_conflicts++;
        } else {
            g_errors++;
        }
    }
    if (ok || conflict)
        s->expected = have_current ? (int64_t)current : -1;
    if (!ok && !conflict && g_errors < 5)
        fprintf(stderr, "bench_grpc: slot %d: call failed (grpc-status %d)\n", s->idx,
                s->grpc_status);
    if (!g_stopping)
        start_call(s);
}

/* Decode complete framed messages of a slot's response. */
static void decode(slot *s)
{
    size_t off = 0;
    while (s->resp.len - off >= 5) {
        const uint8_t *p = s->resp.p + off;
        uint32_t l = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (s->resp.len - off < 5 + (size_t)l)
            break;
        if (opt.batch_mode) {
            EventStore__Client__Streams__BatchAppendResp *r =
                event_store__client__streams__batch_append_resp__unpack(NULL, l, p + 5);
            if (!r) {
                answered(s, 0, 0, 0, 0);
            } else if (r->result_case == EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__RESULT_SUCCESS) {
                answered(s, 1, 0, r->success->current_revision, 1);
            } else {
                int conflict = r->error && r->error->details && r->error->details->type_url &&
                               strstr(r->error->details->type_url, "WrongExpectedVersion");
                uint64_t cur = 0;
                int have = 0;
                if (conflict) {
                    EventStore__Client__WrongExpectedVersion *w =
                        event_store__client__wrong_expected_version__unpack(
                            NULL, r->error->details->value.len, r->error->details->value.data);
                    if (w && w->current_stream_revision_option_case ==
                                 EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__CURRENT_STREAM_REVISION_OPTION_CURRENT_STREAM_REVISION) {
                        cur = w->current_stream_revision;
                        have = 1;
                    }
                    event_store__client__wrong_expected_version__free_unpacked(w, NULL);
                }
                answered(s, 0, conflict, cur, have);
            }
            event_store__client__streams__batch_append_resp__free_unpacked(r, NULL);
        } else {
            /* Append: the one answer is handled when the stream closes. */
            break;
        }
        off += 5 + l;
    }
    memmove(s->resp.p, s->resp.p + off, s->resp.len - off);
    s->resp.len -= off;
}

static void append_closed(slot *s)
{
    EventStore__Client__Streams__AppendResp *r = NULL;
    if (s->resp.len >= 5) {
        uint32_t l = (uint32_t)s->resp.p[1] << 24 | (uint32_t)s->resp.p[2] << 16 |
                     (uint32_t)s->resp.p[3] << 8 | s->resp.p[4];
        if (s->resp.len >= 5 + (size_t)l)
            r = event_store__client__streams__append_resp__unpack(NULL, l, s->resp.p + 5);
    }
    s->resp.len = 0;
    if (s->grpc_status != 0 || !r) {
        answered(s, 0, 0, 0, 0);
    } else if (r->result_case == EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__RESULT_SUCCESS) {
        answered(s, 1, 0, r->success->current_revision, 1);
    } else {
        EventStore__Client__Streams__AppendResp__WrongExpectedVersion *w = r->wrong_expected_version;
        int have = w->current_revision_option_case ==
                   EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__CURRENT_REVISION_OPTION_CURRENT_REVISION;
        answered(s, 0, 1, w->current_revision, have);
    }
    event_store__client__streams__append_resp__free_unpacked(r, NULL);
}

/* AppendRecords answered (the stream closed): the transfer's revisions. */
static void records_closed(slot *s)
{
    Kurrentdb__Protocol__V2__Streams__AppendRecordsResponse *r = NULL;
    if (s->resp.len >= 5) {
        uint32_t l = (uint32_t)s->resp.p[1] << 24 | (uint32_t)s->resp.p[2] << 16 |
                     (uint32_t)s->resp.p[3] << 8 | s->resp.p[4];
        if (s->resp.len >= 5 + (size_t)l)
            r = kurrentdb__protocol__v2__streams__append_records_response__unpack(NULL, l,
                                                                                 s->resp.p + 5);
    }
    s->resp.len = 0;
    if (s->grpc_status != 0 || !r || r->n_revisions != 2) {
        /* FAILED_PRECONDITION is a failed check: none should fail here,
         * since each slot owns its streams. */
        if (s->grpc_status == 9)
            g_conflicts++, g_requests++;
        answered(s, 0, 0, 0, 0);
    } else {
        s->expected_b = r->revisions[1]->revision;
        answered(s, 1, 0, (uint64_t)r->revisions[0]->revision, 1);
    }
    kurrentdb__protocol__v2__streams__append_records_response__free_unpacked(r, NULL);
}

/* ------------------------------------------------------------ nghttp2 */

static ssize_t cb_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *u)
{
    (void)ng;
    (void)flags;
    gconn *c = u;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return NGHTTP2_ERR_WOULDBLOCK;
    return n < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : n;
}

static int cb_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *u)
{
    (void)flags;
    (void)u;
    slot *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (s && nl == 11 && !memcmp(name, "grpc-status", 11)) {
        char v[16];
        snprintf(v, sizeof v, "%.*s", (int)(vl < 15 ? vl : 15), value);
        s->grpc_status = atoi(v);
    }
    return 0;
}

static int cb_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *u)
{
    (void)flags;
    (void)u;
    slot *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return 0;
    put(&s->resp, data, len);
    if (opt.batch_mode)
        decode(s);
    return 0;
}

static int cb_close(nghttp2_session *ng, int32_t id, uint32_t code, void *u)
{
    (void)code;
    (void)u;
    slot *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s || s->sid != id)
        return 0;
    s->sid = 0;
    if (opt.batch_mode) {
        if (!g_stopping) {
            fprintf(stderr, "bench_grpc: slot %d: BatchAppend call ended (grpc-status %d)\n",
                    s->idx, s->grpc_status);
            exit(1);
        }
        if (s->busy) {
            s->busy = 0;
            g_inflight--;
        }
        return 0;
    }
    if (opt.records_mode)
        records_closed(s);
    else
        append_closed(s);
    return 0;
}

static ssize_t body_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *u)
{
    (void)ng;
    (void)id;
    (void)u;
    slot *s = src->ptr;
    size_t n = s->req.len - s->req_off;
    if (n == 0) {
        if (s->req_more && !g_stopping)
            return NGHTTP2_ERR_DEFERRED;
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    if (n > len)
        n = len;
    memcpy(buf, s->req.p + s->req_off, n);
    s->req_off += n;
    if (s->req_off == s->req.len && !s->req_more)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void open_call(slot *s, const char *path)
{
    nghttp2_nv nv[] = {
#define NV(a, b) {(uint8_t *)(a), (uint8_t *)(b), sizeof(a) - 1, strlen(b), NGHTTP2_NV_FLAG_NONE}
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":authority", "127.0.0.1"),
        NV(":path", path),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
#undef NV
    };
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = body_read};
    s->grpc_status = -1;
    s->sid = nghttp2_submit_request(s->c->ng, NULL, nv, sizeof nv / sizeof nv[0], &prd, s);
    if (s->sid < 0) {
        fprintf(stderr, "bench_grpc: submit_request: %s\n", nghttp2_strerror(s->sid));
        exit(1);
    }
}

static void start_call(slot *s)
{
    EventStore__Client__Empty e = EVENT_STORE__CLIENT__EMPTY__INIT;
    Google__Protobuf__Empty ge = GOOGLE__PROTOBUF__EMPTY__INIT;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)s->stream;
    sid.stream_name.len = strlen(s->stream);
    s->busy = 1;
    g_inflight++;
    s->t0 = bench_now_ns();
    s->req.len = s->req_off = 0;
    if (opt.records_mode) {
        /* records 0..batch-1 to <stream>-a, then batch to <stream>-b; the
         * checks name both streams, so the response lists a first, b second. */
        char a[170], b[170];
        snprintf(a, sizeof a, "%s-a", s->stream);
        snprintf(b, sizeof b, "%s-b", s->stream);
        Kurrentdb__Protocol__V2__Streams__SchemaInfo si = KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_INFO__INIT;
        si.format = KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_JSON;
        si.name = "BenchEvent";
        size_t n = 2 * (size_t)opt.batch;
        Kurrentdb__Protocol__V2__Streams__AppendRecord *recs = calloc(n, sizeof *recs);
        Kurrentdb__Protocol__V2__Streams__AppendRecord **rp = calloc(n, sizeof *rp);
        for (size_t i = 0; i < n; i++) {
            Kurrentdb__Protocol__V2__Streams__AppendRecord init = KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD__INIT;
            recs[i] = init;
            recs[i].schema = &si;
            recs[i].data.data = (uint8_t *)g_data;
            recs[i].data.len = (size_t)opt.data_bytes;
            recs[i].stream_option_case = KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD__STREAM_OPTION_STREAM;
            recs[i].stream = i < (size_t)opt.batch ? a : b;
            rp[i] = &recs[i];
        }
        Kurrentdb__Protocol__V2__Streams__ConsistencyCheck__StreamStateCheck sc[2] = {
            KURRENTDB__PROTOCOL__V2__STREAMS__CONSISTENCY_CHECK__STREAM_STATE_CHECK__INIT,
            KURRENTDB__PROTOCOL__V2__STREAMS__CONSISTENCY_CHECK__STREAM_STATE_CHECK__INIT};
        Kurrentdb__Protocol__V2__Streams__ConsistencyCheck cc[2] = {
            KURRENTDB__PROTOCOL__V2__STREAMS__CONSISTENCY_CHECK__INIT,
            KURRENTDB__PROTOCOL__V2__STREAMS__CONSISTENCY_CHECK__INIT};
        Kurrentdb__Protocol__V2__Streams__ConsistencyCheck *cp[2] = {&cc[0], &cc[1]};
        sc[0].stream = a;
        sc[0].expected_state = s->expected;
        sc[1].stream = b;
        sc[1].expected_state = s->expected_b;
        for (int i = 0; i < 2; i++) {
            cc[i].type_case = KURRENTDB__PROTOCOL__V2__STREAMS__CONSISTENCY_CHECK__TYPE_STREAM_STATE;
            cc[i].stream_state = &sc[i];
        }
        Kurrentdb__Protocol__V2__Streams__AppendRecordsRequest r =
            KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORDS_REQUEST__INIT;
        r.n_records = n;
        r.records = rp;
        r.n_checks = opt.expect_any ? 0 : 2;
        r.checks = cp;
        put_framed(&s->req, &r.base);
        free(recs);
        free(rp);
        open_call(s, "/kurrentdb.protocol.v2.streams.StreamsService/AppendRecords");
        return;
    }
    if (!opt.batch_mode) {
        EventStore__Client__Streams__AppendReq__Options o =
            EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__OPTIONS__INIT;
        o.stream_identifier = &sid;
        if (opt.expect_any) {
            o.expected_stream_revision_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__OPTIONS__EXPECTED_STREAM_REVISION_ANY;
            o.any = &e;
        } else if (s->expected < 0) {
            o.expected_stream_revision_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__OPTIONS__EXPECTED_STREAM_REVISION_NO_STREAM;
            o.no_stream = &e;
        } else {
            o.expected_stream_revision_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__OPTIONS__EXPECTED_STREAM_REVISION_REVISION;
            o.revision = (uint64_t)s->expected;
        }
        EventStore__Client__Streams__AppendReq r = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__INIT;
        r.content_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_OPTIONS;
        r.options = &o;
        put_framed(&s->req, &r.base);
        put(&s->req, g_append_events.p, g_append_events.len);
        open_call(s, "/event_store.client.streams.Streams/Append");
        return;
    }
    /* BatchAppend: one request message on the slot's open call. */
    EventStore__Client__UUID__Structured su = EVENT_STORE__CLIENT__UUID__STRUCTURED__INIT;
    su.most_significant_bits = (int64_t)(((uint64_t)getpid() << 32) | (uint64_t)s->idx);
    su.least_significant_bits = (int64_t)++s->corr;
    EventStore__Client__UUID corr = EVENT_STORE__CLIENT__UUID__INIT;
    corr.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRUCTURED;
    corr.structured = &su;
    EventStore__Client__Streams__BatchAppendReq__Options o =
        EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__INIT;
    o.stream_identifier = &sid;
    if (opt.expect_any) {
        o.expected_stream_position_case = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__EXPECTED_STREAM_POSITION_ANY;
        o.any = &ge;
    } else if (s->expected < 0) {
        o.expected_stream_position_case = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__EXPECTED_STREAM_POSITION_NO_STREAM;
        o.no_stream = &ge;
    } else {
        o.expected_stream_position_case = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__EXPECTED_STREAM_POSITION_STREAM_POSITION;
        o.stream_position = (uint64_t)s->expected;
    }
    EventStore__Client__Streams__BatchAppendReq r = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__INIT;
    r.correlation_id = &corr;
    r.options = &o;
    r.is_final = 1;
    size_t head = protobuf_c_message_get_packed_size(&r.base);
    size_t n = head + g_batch_events.len;
    uint8_t pre[5] = {0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    put(&s->req, pre, 5);
    if (s->req.len + head > s->req.cap) {
        s->req.cap = (s->req.len + head) * 2;
        s->req.p = realloc(s->req.p, s->req.cap);
    }
    protobuf_c_message_pack(&r.base, s->req.p + s->req.len);
    s->req.len += head;
    put(&s->req, g_batch_events.p, g_batch_events.len);
    if (!s->sid) {
        s->req_more = 1;
        open_call(s, "/event_store.client.streams.Streams/BatchAppend");
    } else {
        nghttp2_session_resume_data(s->c->ng, s->sid);
    }
}

static gconn *conn_open(void)
{
    gconn *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bench_grpc: bad host %s (an IPv4 address)\n", opt.host);
        exit(2);
    }
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa))
        die("connect");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, cb_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_close);
    nghttp2_session_client_new(&c->ng, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 24}};
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 1);
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, 1 << 26);
    return c;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},       {"mode", 1, 0, 'm'},
        {"clients", 1, 0, 'c'},  {"streams", 1, 0, 's'},    {"batch", 1, 0, 'b'},
        {"expect", 1, 0, 'e'},   {"duration", 1, 0, 'd'},   {"warmup", 1, 0, 'w'},
        {"workload", 1, 0, 'W'}, {"target", 1, 0, 'T'},     {"prefix", 1, 0, 'P'},
        {"data-bytes", 1, 0, 'D'}, {"server-pid", 1, 0, 'S'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'm':
            if (!strcmp(optarg, "batch"))
                opt.batch_mode = 1;
            else if (!strcmp(optarg, "records"))
                opt.records_mode = 1;
            else if (strcmp(optarg, "append"))
                usage();
            break;
        case 'c': opt.clients = atoi(optarg); break;
        case 's': opt.streams = atoi(optarg); break;
        case 'b': opt.batch = atoi(optarg); break;
        case 'e':
            if (!strcmp(optarg, "any"))
                opt.expect_any = 1;
            else if (strcmp(optarg, "exact"))
                usage();
            break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'W': opt.workload = optarg; break;
        case 'T': opt.target = optarg; break;
        case 'P': opt.prefix = optarg; break;
        case 'D': opt.data_bytes = atoi(optarg); break;
        case 'S': opt.server_pid = atoi(optarg); break;
        default: usage();
        }
    }
    if (optind != argc || opt.port <= 0 || opt.clients < 1 || opt.streams < 1 || opt.batch < 1 ||
        opt.duration <= 0 || opt.warmup < 0)
        usage();
    signal(SIGPIPE, SIG_IGN);
    char wl[64], pfx[64];
    if (!opt.workload) {
        snprintf(wl, sizeof wl, "%dx%d", opt.clients * opt.streams, opt.batch);
        opt.workload = wl;
    }
    if (!opt.prefix) {
        snprintf(pfx, sizeof pfx, "gbench%ld", (long)getpid());
        opt.prefix = pfx;
    }
    make_events();

    int nc = opt.clients;
    gconn **cs = calloc((size_t)nc, sizeof *cs);
    struct pollfd *pfds = calloc((size_t)nc, sizeof *pfds);
    for (int i = 0; i < nc; i++) {
        cs[i] = conn_open();
        cs[i]->slots = calloc((size_t)opt.streams, sizeof(slot));
        for (int j = 0; j < opt.streams; j++) {
            slot *s = &cs[i]->slots[j];
            s->c = cs[i];
            s->idx = i * opt.streams + j;
            s->expected = s->expected_b = -1;
            snprintf(s->stream, sizeof s->stream, "%s-%s-%d-%d", opt.prefix, opt.workload, i, j);
        }
    }
    uint64_t t_begin = bench_now_ns();
    g_win_start = t_begin + (uint64_t)(opt.warmup * 1e9);
    g_win_end = g_win_start + (uint64_t)(opt.duration * 1e9);
    for (int i = 0; i < nc; i++)
        for (int j = 0; j < opt.streams; j++)
            start_call(&cs[i]->slots[j]);

    int window_started = 0;
    double cpu0 = 0, cpu1 = 0, srv0 = 0, srv1 = 0;
    unsigned long long mb0 = 0, mt0 = 0, mb1 = 0, mt1 = 0;
    uint64_t drain_deadline = 0;
    uint8_t buf[1 << 16];
    for (;;) {
        for (int i = 0; i < nc; i++) {
            if (nghttp2_session_send(cs[i]->ng) != 0) {
                fprintf(stderr, "bench_grpc: connection %d failed\n", i);
                exit(1);
            }
            pfds[i].fd = cs[i]->fd;
            pfds[i].events = POLLIN | (nghttp2_session_want_write(cs[i]->ng) ? POLLOUT : 0);
        }
        int n = poll(pfds, (nfds_t)nc, 5);
        if (n < 0 && errno != EINTR)
            die("poll");
        for (int i = 0; i < nc && n > 0; i++) {
            if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = recv(cs[i]->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                fprintf(stderr, "bench_grpc: connection %d closed by the server\n", i);
                exit(1);
            }
            if (r > 0 && nghttp2_session_mem_recv(cs[i]->ng, buf, (size_t)r) < 0) {
                fprintf(stderr, "bench_grpc: HTTP/2 error on connection %d\n", i);
                exit(1);
            }
        }
        uint64_t t = bench_now_ns();
        if (!window_started && t >= g_win_start) {
            window_started = 1;
            cpu0 = bench_self_cpu_s();
            srv0 = server_cpu_s(opt.server_pid);
            bench_machine_cpu(&mb0, &mt0);
        }
        if (!g_stopping && t >= g_win_end) {
            g_stopping = 1;
            cpu1 = bench_self_cpu_s();
            srv1 = server_cpu_s(opt.server_pid);
            bench_machine_cpu(&mb1, &mt1);
            drain_deadline = t + 10000000000ull;
            /* Let open BatchAppend calls end. */
            for (int i = 0; i < nc; i++)
                for (int j = 0; j < opt.streams; j++)
                    if (cs[i]->slots[j].sid)
                        nghttp2_session_resume_data(cs[i]->ng, cs[i]->slots[j].sid);
        }
        if (g_stopping && (g_inflight == 0 || t > drain_deadline))
            break;
    }
    bench_lat_sort(&g_lat);
    double secs = opt.duration;
    double busy = mt1 > mt0 ? 100.0 * (double)(mb1 - mb0) / (double)(mt1 - mt0) : 0;
    char srv[32];
    if (opt.server_pid > 0)
        snprintf(srv, sizeof srv, "%.0f%%", 100.0 * (srv1 - srv0) / secs);
    else
        snprintf(srv, sizeof srv, "n/a");
    printf("grpc workload=%s target=%s events_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
           "requests_per_s=%.0f events=%llu requests=%llu errors=%llu conflicts=%llu seconds=%.2f "
           "clients=%d streams=%d batch=%d mode=%s expect=%s client_cpu=%.0f%% server_cpu=%s "
           "cpu_busy=%.0f%%\n",
           opt.workload, opt.target, (double)g_events / secs, bench_lat_ms(&g_lat, 0.50), bench_lat_ms(&g_lat, 0.99),
           bench_lat_ms(&g_lat, 0.999), (double)g_requests / secs, g_events, g_requests, g_errors, g_conflicts,
           secs, opt.clients, opt.streams, opt.batch, opt.batch_mode ? "batch" : opt.records_mode ? "records" : "append",
           opt.expect_any ? "any" : "exact", 100.0 * (cpu1 - cpu0) / secs, srv, busy);
    return g_errors || g_conflicts ? 1 : 0;
}
