/*
 * grpc.h - what the gRPC parts of server/ share: calls (one per HTTP/2
 * stream), the method table and the services. Not for use outside server/.
 *
 *   h2.c            HTTP/2 sessions (nghttp2) on the epoll loop: streams,
 *                   gRPC message framing, flow control, status trailers,
 *                   deadlines and keepalive pings.
 *   grpc.c          the method table, status mapping of libstele errors,
 *                   ServerFeatures, Gossip, Operations.
 *   grpc_streams.c  event_store.client.streams.Streams: Append,
 *                   BatchAppend, Read, Delete, Tombstone.
 *   grpc_v2.c       kurrentdb.protocol.v2.streams.StreamsService:
 *                   multi-stream appends (AppendSession, AppendRecords).
 *
 * A call's life: h2.c creates it when a request's headers arrive, finds its
 * method, and hands each complete request message (decoded with
 * protobuf-c) to the method's on_msg; on_end once the client has sent
 * everything. The method answers with grpc_send() (any number of messages)
 * and grpc_finish() (the status, sent as trailers once every message is
 * out). A server-streaming method produces lazily: h2.c calls on_more
 * whenever the call's queued output falls below GRPC_OUT_LOW, so a client
 * that stops reading (HTTP/2 flow control) stops the production and costs
 * at most about GRPC_OUT_HIGH bytes. on_close runs once when the stream is
 * gone (finished, reset by the client or the connection closed) and frees
 * the method's state; the call itself lives on while an append it started
 * is still in flight (`pending`), and a completion that arrives for a
 * finished call is dropped.
 */
#ifndef STELE_GRPC_H
#define STELE_GRPC_H

#include <protobuf-c/protobuf-c.h>

#include "server_int.h"

/* gRPC status codes. */
enum {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
};

/* A server-streaming call produces while less than grpc_out_low() bytes
 * wait to be sent and stops once more than grpc_out_high() do: at most
 * GRPC_OUT_HIGH, less when the connection has many calls open (their
 * queues share GRPC_CONN_OUT_BYTES, each keeping at least GRPC_OUT_MIN),
 * so a connection with a thousand subscriptions it does not read holds a
 * few megabytes, not a thousand queues of GRPC_OUT_HIGH. */
#define GRPC_OUT_LOW (64u << 10)
#define GRPC_OUT_HIGH (256u << 10)
#define GRPC_OUT_MIN (16u << 10)
#define GRPC_CONN_OUT_BYTES (8u << 20)

typedef struct gcall gcall;

typedef struct grpc_method {
    const char *path; /* "/event_store.client.streams.Streams/Append" */
    const ProtobufCMessageDescriptor *req;
    int client_streaming, server_streaming;
    /* Listed in ServerFeatures.GetSupportedMethods with these features
     * (NULL-terminated), unless `unlisted`. */
    const char *const *features;
    int unlisted;
    /* A request message, valid until on_msg returns, unless the method
     * calls grpc_keep() during on_msg. */
    void (*on_msg)(gcall *call, ProtobufCMessage *msg);
    /* The client sent its last message (optional). */
    void (*on_end)(gcall *call);
    /* Output drained below GRPC_OUT_LOW: produce more (optional). */
    void (*on_more)(gcall *call);
    /* The stream is gone: free the method's state (optional). */
    void (*on_close)(gcall *call);
} grpc_method;

struct gcall {
    conn *c;
    struct h2_session *h;
    int32_t id;                 /* HTTP/2 stream id */
    const grpc_method *m;
    void *st;                   /* the method's state */
    int64_t deadline_ms;        /* from grpc-timeout; 0 = none */
    int pending;                /* appends in flight */
    unsigned headers_sent : 1;  /* response HEADERS submitted */
    unsigned done : 1;          /* status decided (grpc_finish ran) */
    unsigned trailers_sent : 1;
    unsigned half_closed : 1;   /* the client sent END_STREAM */
    unsigned closed : 1;        /* the HTTP/2 stream is gone */
    unsigned deferred : 1;      /* nghttp2 waits for data from us */
    unsigned want_more : 1;     /* on the session's list of calls to produce */
    unsigned nmsgs_in : 2;      /* request messages so far (saturating) */
    unsigned timeout_given : 1;
    unsigned bad_encoding : 1;  /* grpc-encoding other than identity */
    unsigned bad_content_type : 1;
    unsigned not_post : 1;
    unsigned kept : 1;          /* the method kept the message being delivered */
    unsigned rest_unread : 1;   /* request bytes arrived that will never be read */
    unsigned final_sent : 1;    /* our last HEADERS went out; the client's END_STREAM is due */
    buf path;                   /* :path */
    buf in;                     /* request bytes not yet decoded */
    size_t in_off;
    buf out;                    /* framed response messages not yet sent */
    size_t out_off;
    int status;
    char *status_msg;
    buf trailers;               /* extra trailers: name\0value\0 ... */
    gcall *prev, *next;         /* the session's calls */
    gcall *more_next;           /* the session's list of calls to produce */
    gcall *sub_prev, *sub_next; /* subscriptions waiting for commits (grpc.c) */
    unsigned sub_registered : 1;
    /* access_grpc.c: the caller, and whether its password check runs. */
    unsigned auth_wait : 1;     /* request bytes buffered, not decoded, until checked */
    char *authz;                /* the `authorization` metadata (malloc'ed) */
    auth_who who;
};

/* access_grpc.c: authenticate a call whose headers arrived (call->m set):
 * 0 to go on (maybe waiting: auth_wait), -1 when finished (refused). */
int access_grpc_start(gcall *call);
/* Before on_msg: 0 to deliver, -1 when the call was finished (denied). */
int access_grpc_msg(gcall *call, const ProtobufCMessage *msg);
/* h2.c: the password check of a waiting call succeeded: decode and
 * deliver what was buffered, and its end if it came. */
void h2_auth_resume(gcall *call);

/* h2.c: what methods use. */
/* Keep the message being delivered to on_msg beyond the call: returns the
 * handle of the memory it lives in (an arena: one decode, one block or a
 * few), for grpc_msg_free() once done with it. */
void *grpc_keep(gcall *call);
void grpc_msg_free(void *handle);
/* Queue one response message. */
void grpc_send(gcall *call, const ProtobufCMessage *msg);
/* Add a trailer (before grpc_finish): exception=stream-deleted ... */
void grpc_trailer(gcall *call, const char *name, const char *value);
/* End the call with a status; sent after every queued message. */
void grpc_finish(gcall *call, int status, const char *message);
/* Bytes queued and not yet handed to HTTP/2. */
size_t grpc_out_pending(const gcall *call);
size_t grpc_out_high(const gcall *call);
size_t grpc_out_low(const gcall *call);
/* Ask for on_more soon (e.g. new events for a subscription). */
void grpc_want_more(gcall *call);
/* An append the call started has completed: drop the count; frees a call
 * whose stream is gone once nothing is pending. */
void grpc_call_release(gcall *call);
/* Send what is queued on the call's connection. */
void h2_pump(conn *c);
/* Milliseconds left before the call's deadline (INT64_MAX if none). */
int64_t grpc_time_left(const gcall *call);

/* grpc.c */
const grpc_method *grpc_find_method(const char *path, size_t len);
/* Finish with a libstele error as the error vocabulary names it
 * (stele_error_info_of, docs/errors.md): its gRPC status, KurrentDB's
 * `exception` trailer where the clients expect one (stream-deleted ...)
 * with `stream-name`, and the message "CODE: message". */
void grpc_fail_stele(gcall *call, int rc, const char *message, const char *stream);
/* The same for a vocabulary code that names the failure more precisely
 * ("GROUP_NOT_FOUND", "ACCESS_DENIED"): its status and exception trailer,
 * no stream trailer; the message "CODE: message". */
void grpc_fail_code(gcall *call, const char *code, const char *message);
/* A libstele error's status and "CODE: message" only, without trailers
 * (for calls the KurrentDB exceptions are not about, such as projections). */
void grpc_fail_status(gcall *call, int rc, const char *message);
/* Effective limits of the store (the configured value or its default). */
uint64_t grpc_max_append_size(const server *s);

/* Subscriptions waiting for commits (grpc.c keeps the list). */
void grpc_sub_register(gcall *call);
void grpc_sub_unregister(gcall *call);

/* An append of a gRPC call in flight: the completion's `op`. `done` runs on
 * the loop when the append completes and the call still waits for it. */
typedef struct grpc_op {
    gcall *call;
    void (*done)(gcall *call, struct grpc_op *op, const completion *cp);
    /* Optional: frees what the op owns, before the op itself is freed
     * (after `done`, or instead of it when the call or server is gone). */
    void (*cleanup)(struct grpc_op *op);
} grpc_op;

/* Queue an append for `call` (stele_append_async); `op` (malloc'ed, with
 * op->done set) is freed after delivery. On an immediate error returns it
 * (op freed, nothing pending). */
int grpc_append(gcall *call, grpc_op *op, const char *stream, int64_t expected,
                const stele_event_in *events, size_t n);

/* The method's state (call->st), allocated zeroed on first use: NULL with
 * RESOURCE_EXHAUSTED sent if out of memory. */
void *grpc_state(gcall *call, size_t size);

/* Request messages a method keeps beyond on_msg (grpc_keep), in order. */
typedef struct grpc_kept {
    void **msgs;   /* the decoded messages */
    void **arenas; /* where each lives */
    size_t n, cap;
} grpc_kept;
/* Keep `msg`, the message being delivered to on_msg: 0, or -1 with
 * RESOURCE_EXHAUSTED sent (then it is not kept). */
int grpc_kept_add(gcall *call, grpc_kept *k, void *msg);
/* Free every kept message and the lists; `k` is empty again. */
void grpc_kept_free(grpc_kept *k);

/* Pack `details` into `any` (a google.protobuf.Any) under `type_url`:
 * returns the packed bytes (malloc'ed, the caller frees them after
 * sending), or NULL with `any` left untouched if out of memory. */
struct Google__Protobuf__Any;
uint8_t *grpc_any_pack(struct Google__Protobuf__Any *any, const char *type_url,
                       const ProtobufCMessage *details);

/* grpc_streams.c */
/* A StreamIdentifier as a C string: 0, or -1 with an error status sent. */
struct EventStore__Client__StreamIdentifier;
struct EventStore__Client__UUID;
int grpc_stream_name(gcall *call, const struct EventStore__Client__StreamIdentifier *id, char *out,
                     size_t cap);
/* A UUID message as 16 bytes: 0, 1 if absent, -1 if malformed. */
int grpc_uuid_in(const struct EventStore__Client__UUID *u, uint8_t out[16]);
extern const grpc_method grpc_streams_methods[];
extern const size_t grpc_streams_nmethods;
/* grpc_persistent.c: PersistentSubscriptions. */
extern const grpc_method grpc_persistent_methods[];
extern const size_t grpc_persistent_nmethods;
/* grpc_projections.c */
extern const grpc_method grpc_projections_methods[];
extern const size_t grpc_projections_nmethods;
/* grpc_users.c: event_store.client.users.Users. */
extern const grpc_method grpc_users_methods[];
extern const size_t grpc_users_nmethods;

/* grpc_v2.c: kurrentdb.protocol.v2.streams.StreamsService (AppendSession,
 * AppendRecords): multi-stream appends. */
extern const grpc_method grpc_v2_methods[];
extern const size_t grpc_v2_nmethods;

/* grpc_read.c: Streams.Read, as a read or a subscription. */
void grpc_read_msg(gcall *call, ProtobufCMessage *msg);
void grpc_read_more(gcall *call);
void grpc_read_close(gcall *call);

/* .NET ticks (100 ns) since the Unix epoch, as KurrentDB's "created". */
static inline int64_t grpc_ticks(int64_t created_us) { return created_us * 10; }

#endif
