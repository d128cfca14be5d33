/*
 * access_grpc.c - authentication and access checks for gRPC calls, in one
 * place so that the services (grpc_*.c) stay unaware of users.
 *
 * A call's `authorization` metadata (what the KurrentDB clients send:
 * "Basic base64(user:password)", or "Bearer <API key>") is checked when its
 * headers arrive (access_grpc_start). While Argon2id runs on auth.c's
 * worker the call waits: its request bytes are buffered, not decoded
 * (call->auth_wait), and h2_auth_resume() goes on once the answer is in.
 * Refusals use KurrentDB's shapes: UNAUTHENTICATED for missing or wrong
 * credentials, PERMISSION_DENIED with the trailer `exception:
 * access-denied` for an operation the user may not do (the clients raise
 * AccessDeniedError), RESOURCE_EXHAUSTED for a throttled address.
 *
 * Per method (access.c has the roles and ACLs):
 *   ServerFeatures, Gossip               anyone, no credentials needed
 *   Operations                           $ops
 *   Projections: Statistics, State, Result   any user; the rest $admins
 *                                        or $projection-managers
 *   PersistentSubscriptions: Read        read of its stream ($all: $ops)
 *     GetInfo, List                      any user; the rest $ops
 *   Streams: Read (a stream, also subscriptions; $all and views for
 *     anyone, filtered per stream by grpc_read.c for users without $ops
 *     who may not read the view itself), Append,
 *     BatchAppend (each append), Delete, Tombstone: the stream's ACL,
 *     checked on each request message that names a stream
 *   Users                                checked by grpc_users.c
 *   v2 AppendSession / Append: each request's stream ($w); AppendRecords:
 *     $w on every stream a record names and $r or $w on every stream a
 *     consistency check names, as HTTP's POST /streams; one refusal
 *     refuses the whole request, so nothing of it is written
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "grpc.h"
#include "persistent.pb-c.h"
#include "streams.pb-c.h"
#include "v2_streams.pb-c.h"

enum { M_ANY, M_USER, M_OPS, M_ADMIN, M_MSG, M_PROJ };

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

static int method_need(const char *path)
{
    if (strstr(path, ".server_features.") || strstr(path, ".gossip."))
        return M_ANY;
    if (strstr(path, ".operations.Operations/"))
        return M_OPS;
    if (strstr(path, ".projections.Projections/"))
        return ends_with(path, "/Statistics") || ends_with(path, "/State") ||
                       ends_with(path, "/Result")
                   ? M_USER
                   : M_PROJ;
    if (strstr(path, ".persistent_subscriptions.PersistentSubscriptions/"))
        return ends_with(path, "/Read")      ? M_MSG
               : ends_with(path, "/GetInfo") || ends_with(path, "/List") ? M_USER
                                                                          : M_OPS;
    if (strstr(path, ".users.Users/"))
        return M_USER; /* grpc_users.c checks: $admins, or a user acting on itself */
    if (strstr(path, ".streams.Streams/") || strstr(path, ".v2.streams.StreamsService/"))
        return M_MSG;
    return M_USER;
}

static void denied(gcall *call, const char *what)
{
    char addr[64];
    auth_peer_addr(call->c, addr, sizeof addr);
    auth_audit(call->c->srv, call->who.name, addr, (const char *)call->path.p, "denied", "%s",
               what);
    grpc_fail_code(call, "ACCESS_DENIED", "Access denied");
}

static void refused(gcall *call, const char *user, const auth_refusal *ref)
{
    if (ref->audit) {
        char addr[64];
        auth_peer_addr(call->c, addr, sizeof addr);
        auth_audit(call->c->srv, user, addr, (const char *)call->path.p,
                   ref->status == 429 ? "throttled" : "unauthenticated", "%s", ref->message);
    }
    const stele_error_info *e = stele_error_lookup(ref->code); /* docs/errors.md */
    grpc_finish(call, e ? e->grpc_status : GRPC_UNAUTHENTICATED, ref->message);
}

/* The method-level check once `who` is known: 0 go on, -1 finished. */
static int method_check(gcall *call)
{
    int need = method_need((const char *)call->path.p);
    if (need == M_OPS && !access_ops(&call->who)) {
        denied(call, "needs $ops or $admins");
        return -1;
    }
    if (need == M_PROJ && !access_admin(&call->who) &&
        !access_in_group(&call->who, "$projection-managers")) {
        denied(call, "needs $admins or $projection-managers");
        return -1;
    }
    if (need == M_ADMIN && !access_admin(&call->who)) {
        denied(call, "needs $admins");
        return -1;
    }
    return 0;
}

typedef struct auth_op {
    grpc_op op;
} auth_op;

static void auth_done(gcall *call, grpc_op *op, const completion *cp)
{
    (void)op;
    auth_refusal ref;
    call->auth_wait = 0;
    if (auth_finish(call->c->srv, cp->extra, &call->who, &ref) != AUTH_OK) {
        refused(call, auth_job_user(cp->extra), &ref);
        return;
    }
    if (method_check(call) == 0)
        h2_auth_resume(call);
}

int access_grpc_start(gcall *call)
{
    server *s = call->c->srv;
    if (method_need((const char *)call->path.p) == M_ANY || !auth_enabled(s)) {
        auth_who_superuser(&call->who);
        if (auth_enabled(s))
            memset(&call->who, 0, sizeof call->who);
        return 0;
    }
    char addr[64];
    auth_peer_addr(call->c, addr, sizeof addr);
    struct auth_job *job = NULL;
    auth_refusal ref;
    int rc = auth_start(s, call->authz, call->authz ? strlen(call->authz) : 0, addr, &call->who,
                        &job, &ref);
    if (rc == AUTH_FAIL) {
        refused(call, NULL, &ref);
        return -1;
    }
    if (rc == AUTH_OK)
        return method_check(call);
    grpc_op *op = calloc(1, sizeof *op);
    completion *cp = op ? calloc(1, sizeof *cp) : NULL;
    if (!cp) {
        free(op);
        auth_job_free(job);
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    op->call = call;
    op->done = auth_done;
    cp->c = call->c;
    cp->op = op;
    call->pending++;
    call->c->async_pending++;
    call->auth_wait = 1;
    auth_job_submit(s, job, cp);
    return 0;
}

static int stream_of(const EventStore__Client__StreamIdentifier *id, char *out, size_t cap)
{
    if (!id || !id->stream_name.len || id->stream_name.len >= cap ||
        memchr(id->stream_name.data, 0, id->stream_name.len))
        return -1;
    memcpy(out, id->stream_name.data, id->stream_name.len);
    out[id->stream_name.len] = 0;
    return 0;
}

static const char *const op_names[] = {"read", "write", "delete", "read metadata of",
                                       "write metadata of"};

/* AppendRecords: $w on each record's stream (checked again only when the
 * stream changes from one record to the next), $r or $w on each checked
 * stream (a writer learns a stream's state from an expected revision
 * anyway). Malformed requests (no stream) are left to grpc_v2.c. */
static int records_check(gcall *call, const Kurrentdb__Protocol__V2__Streams__AppendRecordsRequest *r)
{
    const auth_who *who = &call->who;
    const char *bad = NULL;
    int bad_op = ACL_W;
    for (size_t i = 0; !bad && i < r->n_records; i++) {
        const char *st = r->records[i]->stream;
        if (!st || !*st)
            continue;
        const char *prev = i ? r->records[i - 1]->stream : NULL;
        if ((!prev || strcmp(prev, st)) && !access_stream(call->c->srv, who, st, ACL_W))
            bad = st;
    }
    for (size_t i = 0; !bad && i < r->n_checks; i++) {
        const Kurrentdb__Protocol__V2__Streams__ConsistencyCheck *c = r->checks[i];
        const char *st = c->type_case ==
                                 KURRENTDB__PROTOCOL__V2__STREAMS__CONSISTENCY_CHECK__TYPE_STREAM_STATE &&
                                 c->stream_state
                             ? c->stream_state->stream
                             : NULL;
        if (!st || !*st)
            continue;
        if (!access_stream(call->c->srv, who, st, ACL_R) &&
            !access_stream(call->c->srv, who, st, ACL_W)) {
            bad = st;
            bad_op = ACL_R;
        }
    }
    if (!bad)
        return 0;
    char why[1200];
    snprintf(why, sizeof why, "%s may not %s %.1000s", who->name, op_names[bad_op], bad);
    denied(call, why);
    return -1;
}

int access_grpc_msg(gcall *call, const ProtobufCMessage *msg)
{
    const auth_who *who = &call->who;
    if (who->open || who->admin)
        return 0;
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    char stream[1024];
    int op = -1;
    stream[0] = 0;
    if (d == &event_store__client__streams__read_req__descriptor) {
        const EventStore__Client__Streams__ReadReq *r = (const void *)msg;
        const EventStore__Client__Streams__ReadReq__Options *o = r->options;
        if (o && o->stream_option_case ==
                     EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_STREAM) {
            if (o->stream && stream_of(o->stream->stream_identifier, stream, sizeof stream) == 0 &&
                !access_is_view(stream))
                op = ACL_R;
        }
        /* $all and views ($ce-, $et-, $bc-, $streams): any user; grpc_read.c
         * sends only the streams it may read. */
    } else if (d == &event_store__client__streams__append_req__descriptor) {
        const EventStore__Client__Streams__AppendReq *r = (const void *)msg;
        if (r->content_case == EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_OPTIONS &&
            r->options && stream_of(r->options->stream_identifier, stream, sizeof stream) == 0)
            op = ACL_W;
    } else if (d == &event_store__client__streams__batch_append_req__descriptor) {
        const EventStore__Client__Streams__BatchAppendReq *r = (const void *)msg;
        if (r->options && stream_of(r->options->stream_identifier, stream, sizeof stream) == 0)
            op = ACL_W;
    } else if (d == &event_store__client__streams__delete_req__descriptor) {
        const EventStore__Client__Streams__DeleteReq *r = (const void *)msg;
        if (r->options && stream_of(r->options->stream_identifier, stream, sizeof stream) == 0)
            op = ACL_D;
    } else if (d == &event_store__client__streams__tombstone_req__descriptor) {
        const EventStore__Client__Streams__TombstoneReq *r = (const void *)msg;
        if (r->options && stream_of(r->options->stream_identifier, stream, sizeof stream) == 0)
            op = ACL_D;
    } else if (d == &event_store__client__persistent_subscriptions__read_req__descriptor) {
        const EventStore__Client__PersistentSubscriptions__ReadReq *r = (const void *)msg;
        const EventStore__Client__PersistentSubscriptions__ReadReq__Options *o = r->options;
        if (r->content_case ==
                EVENT_STORE__CLIENT__PERSISTENT_SUBSCRIPTIONS__READ_REQ__CONTENT_OPTIONS &&
            o) {
            if (o->stream_option_case ==
                EVENT_STORE__CLIENT__PERSISTENT_SUBSCRIPTIONS__READ_REQ__OPTIONS__STREAM_OPTION_ALL)
                snprintf(stream, sizeof stream, "$all");
            else if (stream_of(o->stream_identifier, stream, sizeof stream) != 0)
                stream[0] = 0;
            if (stream[0])
                op = ACL_R;
        }
    } else if (d == &kurrentdb__protocol__v2__streams__append_request__descriptor) {
        const Kurrentdb__Protocol__V2__Streams__AppendRequest *r = (const void *)msg;
        if (r->stream && *r->stream && strlen(r->stream) < sizeof stream) {
            snprintf(stream, sizeof stream, "%s", r->stream);
            op = ACL_W;
        }
    } else if (d == &kurrentdb__protocol__v2__streams__append_records_request__descriptor) {
        return records_check(call, (const void *)msg);
    }
    if (op < 0)
        return 0; /* names no stream: the service answers it (or it is checked above) */
    if (access_stream(call->c->srv, who, stream, op))
        return 0;
    char why[1200];
    snprintf(why, sizeof why, "%s may not %s %s", who->name, op_names[op], stream);
    denied(call, why);
    return -1;
}
