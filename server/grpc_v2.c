/*
 * grpc_v2.c - kurrentdb.protocol.v2.streams.StreamsService: KurrentDB's
 * multi-stream appends (AppendSession, AppendRecords), on top of
 * stele_append_multi(). docs/kurrentdb-compatibility.md has the mapping.
 *
 * AppendSession is client-streaming: one AppendRequest per stream (its
 * records and an optional expected revision), then half-close; the
 * requests become one multi-stream append, stream i being the i-th
 * request. Append is the same with one request, unary, answered with that
 * stream's AppendResponse. AppendRecords is unary: records name their own streams, in any
 * order, and consistency checks name any streams, written or not; the
 * request's streams are the checked ones first, then the written ones, in
 * order of first appearance, each with the check's expected state (any if
 * unchecked). Either way the records keep the request's order, so their
 * positions in $all are that order, gapless.
 *
 * Request messages are kept as decoded (grpc_keep): the events point into
 * them, no copy, until the store has taken the append
 * (stele_append_multi_async copies it) and the answer, which names the
 * streams, is sent. A v2_op owns them and the arrays built over them; the
 * store's callback fills in the outcome on its writer thread and posts the
 * op to the loop as a completion, where session_done / records_done
 * answer, and the op's cleanup frees it whether or not the call is still
 * there.
 *
 * Errors are KurrentDB's v2 error details: a google.rpc.Status in the
 * `grpc-status-details-bin` trailer whose Any holds
 * kurrentdb.protocol.v2.streams.errors.<Name>ErrorDetails. Which status and
 * which details for which failure is the table in the compatibility page.
 * AppendRecords reports every failing check (AppendConsistencyViolation),
 * as the store marks them (stele_append_result.failed per stream).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc.h"
#include "json.h"
#include "status.pb-c.h"
#include "v2_errors.pb-c.h"
#include "v2_streams.pb-c.h"

typedef Kurrentdb__Protocol__V2__Streams__AppendRequest V2AppendRequest;
typedef Kurrentdb__Protocol__V2__Streams__AppendRecord V2Record;
typedef Kurrentdb__Protocol__V2__Streams__AppendRecordsRequest V2RecordsRequest;
typedef Kurrentdb__Protocol__V2__Streams__ConsistencyCheck V2Check;
typedef Kurrentdb__Protocol__V2__Streams__Errors__ConsistencyViolation V2Violation;
typedef Kurrentdb__Protocol__V2__Streams__Errors__ConsistencyViolation__StreamStateViolation
    V2StateViolation;

/* Expected and actual states on the v2 wire. */
#define V2_NO_STREAM (-1)
#define V2_ANY (-2)
#define V2_EXISTS (-4)
#define V2_DELETED (-5)
#define V2_SOFT_DELETED (-10)
#define V2_TOMBSTONED (-100)

#define V2_MAX_JSON_DEPTH 32

/* ------------------------------------------------------------ the op */

typedef struct v2_op v2_op;

/* One multi-stream append of a call: what the store reads (pointing into
 * the kept request messages, which also name the streams in the answer)
 * and what it answered. */
struct v2_op {
    grpc_op base;
    grpc_kept kept; /* the request messages */
    stele_append_stream *streams;
    size_t nstreams;
    int64_t *wire_expected; /* per stream: the expected state as sent */
    int32_t *check_index;   /* per stream: its check's index, -1 if none */
    unsigned char *writes;  /* per stream: 1 if records go to it */
    stele_append_record *records;
    size_t nrecords;
    uint8_t (*ids)[16];
    char *meta; /* every record's metadata (properties as JSON) */
    /* While the records are read in: the metadata so far, and where each
     * record's is in it (op_set_meta then points the records there). */
    buf meta_buf;
    size_t *meta_off, *meta_len;
    uint64_t bytes;
    int unary; /* Append (one stream): answer with an AppendResponse */
    /* The outcome (set on the writer thread, read on the loop). */
    int rc;
    char msg[512];
    stele_append_result *per_stream;
    stele_multi_result res;
};

static void v2_op_cleanup(grpc_op *base)
{
    v2_op *op = (v2_op *)base;
    grpc_kept_free(&op->kept);
    free(op->streams);
    free(op->wire_expected);
    free(op->check_index);
    free(op->writes);
    free(op->records);
    free(op->ids);
    free(op->meta);
    buf_free(&op->meta_buf);
    free(op->meta_off);
    free(op->meta_len);
    free(op->per_stream);
}

/* The store's answer (on its writer thread): keep it in the op, hand the
 * op to the loop. */
static void v2_multi_cb(void *ctx, int rc, const stele_append_result *per_stream, size_t nstreams,
                        const stele_multi_result *res, const char *errmsg)
{
    v2_op *op = ctx;
    op->rc = rc;
    snprintf(op->msg, sizeof op->msg, "%s", errmsg ? errmsg : "");
    if (per_stream && nstreams == op->nstreams)
        memcpy(op->per_stream, per_stream, nstreams * sizeof *per_stream);
    if (res)
        op->res = *res;
    completion *cp = calloc(1, sizeof *cp);
    if (!cp)
        abort(); /* cannot report the outcome */
    cp->c = op->base.call->c;
    cp->op = op;
    cp->rc = rc;
    completion_post(cp->c->srv, cp);
}

/* Hand `op` to the store (stele_append_multi_async: the writer thread
 * commits it and v2_multi_cb brings the answer back). A request the store
 * refuses at once is answered now, through op->base.done. Either way the
 * op is taken care of. */
static void v2_submit(gcall *call, v2_op *op)
{
    op->base.call = call;
    call->pending++;
    call->c->async_pending++;
    int rc = stele_append_multi_async(call->c->srv->db, op->streams, op->nstreams, op->records,
                                      op->nrecords, NULL, v2_multi_cb, op);
    if (rc) {
        call->pending--;
        call->c->async_pending--;
        op->rc = rc;
        snprintf(op->msg, sizeof op->msg, "%s", stele_errmsg());
        op->base.done(call, &op->base, NULL);
        v2_op_cleanup(&op->base);
        free(op);
    }
}

/* ------------------------------------------------------------ errors */

/* End the call with `status`, `text`, and `details` (a
 * kurrentdb.protocol.v2.streams.errors message named `name`) packed in
 * the grpc-status-details-bin trailer. */
static void v2_fail(gcall *call, int status, const char *text, const char *name,
                    const ProtobufCMessage *details)
{
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    char type_url[160];
    uint8_t *packed = NULL, *outer = NULL;
    buf b64 = {0};
    st.code = (Google__Rpc__Code)status;
    st.message = (char *)text;
    if (details) {
        snprintf(type_url, sizeof type_url,
                 "type.googleapis.com/kurrentdb.protocol.v2.streams.errors.%s", name);
        packed = grpc_any_pack(&any, type_url, details);
        if (packed)
            st.details = &any;
    }
    size_t n = protobuf_c_message_get_packed_size(&st.base);
    outer = malloc(n ? n : 1);
    /* Binary trailers ("-bin") travel base64-encoded (gRPC over HTTP/2). */
    if (outer && protobuf_c_message_pack(&st.base, outer) == n &&
        json_w_base64(&b64, outer, n) == 0 && buf_append(&b64, "", 1) == 0) {
        b64.p[b64.len - 2] = 0; /* drop the closing quote ... */
        grpc_trailer(call, "grpc-status-details-bin", (const char *)b64.p + 1); /* ... and the opening one */
    }
    buf_free(&b64);
    free(outer);
    free(packed);
    metrics_error(&call->c->srv->m,
                  status == GRPC_INVALID_ARGUMENT ? 400 : status == GRPC_INTERNAL ? 500 : 409,
                  status == GRPC_INVALID_ARGUMENT ? STELE_EINVAL : 0);
    grpc_finish(call, status, text);
}

static void v2_fail_text(gcall *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void v2_fail_text(gcall *call, int status, const char *fmt, ...)
{
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    v2_fail(call, status, text, NULL, NULL);
}

static void fail_record_size(gcall *call, const char *stream, const V2Record *r, uint64_t size,
                             uint64_t max)
{
    Kurrentdb__Protocol__V2__Streams__Errors__AppendRecordSizeExceededErrorDetails d =
        KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__APPEND_RECORD_SIZE_EXCEEDED_ERROR_DETAILS__INIT;
    d.stream = (char *)stream;
    d.record_id = r->record_id_option_case ? r->record_id : (char *)"";
    d.size = size > INT32_MAX ? INT32_MAX : (int32_t)size;
    d.max_size = max > INT32_MAX ? INT32_MAX : (int32_t)max;
    char text[600];
    snprintf(text, sizeof text,
             "TOO_LARGE: a record of stream '%.200s' is %llu bytes, over the limit of %llu bytes",
             stream, (unsigned long long)size, (unsigned long long)max);
    v2_fail(call, GRPC_INVALID_ARGUMENT, text, "AppendRecordSizeExceededErrorDetails", &d.base);
}

static void fail_transaction_size(gcall *call, uint64_t size, uint64_t max)
{
    Kurrentdb__Protocol__V2__Streams__Errors__AppendTransactionSizeExceededErrorDetails d =
        KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__APPEND_TRANSACTION_SIZE_EXCEEDED_ERROR_DETAILS__INIT;
    d.size = size > INT32_MAX ? INT32_MAX : (int32_t)size;
    d.max_size = max > INT32_MAX ? INT32_MAX : (int32_t)max;
    char text[200];
    snprintf(text, sizeof text,
             "TOO_LARGE: the append is at least %llu bytes, over the limit of %llu bytes",
             (unsigned long long)size, (unsigned long long)max);
    v2_fail(call, GRPC_ABORTED, text, "AppendTransactionSizeExceededErrorDetails", &d.base);
}

/* ------------------------------------------------------------ records */

/* An expected state from the wire as a libstele expectation; 0, or -1 if
 * it is none of the accepted values. */
static int expected_in(int64_t wire, int64_t *out)
{
    switch (wire) {
    case V2_NO_STREAM: *out = STELE_NO_STREAM; return 0;
    case V2_ANY: *out = STELE_ANY; return 0;
    case V2_EXISTS: *out = STELE_STREAM_EXISTS; return 0;
    case V2_DELETED: *out = STELE_DELETED; return 0;
    default:
        if (wire < 0)
            return -1;
        *out = wire;
        return 0;
    }
}

/* A google.protobuf.Value as JSON. 0, or -1 with `why` set. */
static int value_json(buf *b, const Google__Protobuf__Value *v, int depth, char *why, size_t n)
{
    if (depth > V2_MAX_JSON_DEPTH) {
        snprintf(why, n, "properties are nested more than %d deep", V2_MAX_JSON_DEPTH);
        return -1;
    }
    int rc = 0;
    switch (v ? v->kind_case : GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET) {
    case GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET:
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE: rc = json_w_raw(b, "null", 4); break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        rc = v->bool_value ? json_w_raw(b, "true", 4) : json_w_raw(b, "false", 5);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        rc = json_w_str(b, v->string_value, strlen(v->string_value));
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
        if (!isfinite(v->number_value)) {
            snprintf(why, n, "a property number is not finite (JSON has no NaN or infinity)");
            return -1;
        }
        char num[40];
        int len = snprintf(num, sizeof num, "%.17g", v->number_value);
        rc = json_w_raw(b, num, (size_t)len);
        break;
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE: {
        const Google__Protobuf__Struct *s = v->struct_value;
        rc = json_w_raw(b, "{", 1);
        size_t k = 0;
        for (size_t i = 0; !rc && s && i < s->n_fields; i++) {
            /* A map's last entry for a key wins (protobuf's rule). */
            size_t j = i + 1;
            while (j < s->n_fields && strcmp(s->fields[j]->key, s->fields[i]->key))
                j++;
            if (j < s->n_fields)
                continue;
            if (k++)
                rc = json_w_raw(b, ",", 1);
            if (!rc)
                rc = json_w_str(b, s->fields[i]->key, strlen(s->fields[i]->key));
            if (!rc)
                rc = json_w_raw(b, ":", 1);
            if (!rc && value_json(b, s->fields[i]->value, depth + 1, why, n))
                return -1;
        }
        if (!rc)
            rc = json_w_raw(b, "}", 1);
        break;
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        const Google__Protobuf__ListValue *l = v->list_value;
        rc = json_w_raw(b, "[", 1);
        for (size_t i = 0; !rc && l && i < l->n_values; i++) {
            if (i)
                rc = json_w_raw(b, ",", 1);
            if (!rc && value_json(b, l->values[i], depth + 1, why, n))
                return -1;
        }
        if (!rc)
            rc = json_w_raw(b, "]", 1);
        break;
    }
    default:
        snprintf(why, n, "a property has an unknown value kind %d", (int)v->kind_case);
        return -1;
    }
    if (rc) {
        snprintf(why, n, "out of memory");
        return -1;
    }
    return 0;
}

/* Record `r` as the event of op->records[k] (op->meta_buf gets its
 * properties; the metadata pointer is set once every record is in, since
 * the buffer may move). 0, or -1 with an error sent. */
static int record_in(gcall *call, v2_op *op, size_t k, const V2Record *r, const char *stream)
{
    buf *meta = &op->meta_buf;
    size_t *meta_off = &op->meta_off[k], *meta_len = &op->meta_len[k];
    stele_event_in *ev = &op->records[k].event;
    memset(ev, 0, sizeof *ev);
    if (!r->schema || !r->schema->name || !*r->schema->name) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: record %zu: schema.name (the record's type) is required", k);
        return -1;
    }
    ev->type = r->schema->name;
    switch (r->schema->format) {
    case KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_JSON: {
        size_t at;
        const char *reason;
        if (json_validate((const char *)r->data.data, r->data.len, &at, &reason)) {
            v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                         "INVALID_ARGUMENT: record %zu: the schema format is JSON but the data is not JSON "
                         "(byte %zu: %s)",
                         k, at, reason);
            return -1;
        }
        ev->flags |= STELE_EVENT_JSON;
        break;
    }
    case KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_PROTOBUF:
    case KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_AVRO:
    case KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_BYTES: break;
    default:
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: record %zu: schema.format must be JSON, PROTOBUF, AVRO or BYTES "
                     "(got %d)",
                     k, (int)r->schema->format);
        return -1;
    }
    ev->data = r->data.data;
    ev->data_len = r->data.len;
    if (r->record_id_option_case ==
        KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD__RECORD_ID_OPTION_RECORD_ID) {
        if (!r->record_id || stele_id_parse(r->record_id, op->ids[k], &ev->flags)) {
            v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                         "INVALID_ARGUMENT: record %zu: record_id \"%.64s\" is not a UUID or a ULID", k,
                         r->record_id ? r->record_id : "");
            return -1;
        }
        ev->id = op->ids[k];
    }
    *meta_off = meta->len;
    *meta_len = 0;
    if (r->n_properties) {
        /* The properties as one JSON object (a Struct of the same
         * entries): the event's metadata. */
        Google__Protobuf__Struct__FieldsEntry *fe = calloc(r->n_properties, sizeof *fe);
        Google__Protobuf__Struct__FieldsEntry **fp = calloc(r->n_properties, sizeof *fp);
        if (!fe || !fp) {
            free(fe);
            free(fp);
            grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < r->n_properties; i++) {
            fe[i].key = r->properties[i]->key;
            fe[i].value = r->properties[i]->value;
            fp[i] = &fe[i];
        }
        Google__Protobuf__Struct s = GOOGLE__PROTOBUF__STRUCT__INIT;
        Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
        s.n_fields = r->n_properties;
        s.fields = fp;
        v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v.struct_value = &s;
        char why[200];
        int bad = value_json(meta, &v, 0, why, sizeof why);
        free(fe);
        free(fp);
        if (bad) {
            v2_fail_text(call, GRPC_INVALID_ARGUMENT, "INVALID_ARGUMENT: record %zu: %s", k, why);
            return -1;
        }
        *meta_len = meta->len - *meta_off;
        ev->flags |= STELE_META_JSON;
    }
    uint64_t size = strlen(ev->type) + ev->data_len + *meta_len;
    uint64_t max_event = call->c->srv->cfg.store.max_event_size
                             ? call->c->srv->cfg.store.max_event_size
                             : (16u << 20);
    if (size > max_event) {
        fail_record_size(call, stream, r, size, max_event);
        return -1;
    }
    op->bytes += size;
    if (op->bytes > grpc_max_append_size(call->c->srv)) {
        fail_transaction_size(call, op->bytes, grpc_max_append_size(call->c->srv));
        return -1;
    }
    return 0;
}

static void op_free(v2_op *op)
{
    v2_op_cleanup(&op->base);
    free(op);
}

/* A new op with its per-stream and per-record arrays: NULL if out of
 * memory (error sent). */
static v2_op *op_create(gcall *call, size_t nstreams, size_t nrecords)
{
    v2_op *op = calloc(1, sizeof *op);
    if (!op) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    op->base.cleanup = v2_op_cleanup;
    op->nstreams = nstreams;
    op->nrecords = nrecords;
    op->streams = calloc(nstreams, sizeof *op->streams);
    op->wire_expected = calloc(nstreams, sizeof *op->wire_expected);
    op->check_index = calloc(nstreams, sizeof *op->check_index);
    op->writes = calloc(nstreams, 1);
    op->per_stream = calloc(nstreams, sizeof *op->per_stream);
    op->records = calloc(nrecords ? nrecords : 1, sizeof *op->records);
    op->ids = calloc(nrecords ? nrecords : 1, 16);
    op->meta_off = calloc(nrecords ? nrecords : 1, sizeof *op->meta_off);
    op->meta_len = calloc(nrecords ? nrecords : 1, sizeof *op->meta_len);
    if (!op->streams || !op->wire_expected || !op->check_index || !op->writes ||
        !op->per_stream || !op->records || !op->ids || !op->meta_off || !op->meta_len) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        op_free(op);
        return NULL;
    }
    for (size_t i = 0; i < nstreams; i++)
        op->check_index[i] = -1;
    return op;
}

/* Point every record's metadata into op->meta (now that it is complete). */
static void op_set_meta(v2_op *op)
{
    op->meta = (char *)op->meta_buf.p; /* owned by the op from now on */
    op->meta_buf.p = NULL;
    op->meta_buf.len = op->meta_buf.cap = 0;
    for (size_t k = 0; k < op->nrecords; k++)
        if (op->meta_len[k]) {
            op->records[k].event.metadata = op->meta + op->meta_off[k];
            op->records[k].event.metadata_len = op->meta_len[k];
        }
}

/* The state of `stream` as the v2 wire reports it: a revision, or
 * V2_NO_STREAM, V2_SOFT_DELETED, V2_TOMBSTONED; *last (if not NULL) its
 * last revision ever written (-1: none), which a soft-deleted stream keeps. */
static int64_t head_state(server *s, const char *stream, int64_t *last)
{
    stele_stream_info info;
    int rc = stele_stream_head(s->db, stream, &info);
    int64_t lr = rc || info.last_revision == STELE_NONE ? V2_NO_STREAM : (int64_t)info.last_revision;
    if (last)
        *last = lr;
    if (rc)
        return V2_NO_STREAM;
    if (info.tombstoned)
        return V2_TOMBSTONED;
    if (info.deleted)
        return V2_SOFT_DELETED;
    return lr;
}

/* A tombstoned stream fails every expectation here, even as a check only:
 * the store lets such a check pass any and no_stream (KurrentDB's core
 * rule); KurrentDB's v2 service reports it as a failure, and so does
 * Stele. A check-only stream found tombstoned now (a tombstone is
 * permanent, so it still is at commit time) is handed to the store as
 * stream_exists, which a tombstoned stream fails (EDELETED): the store
 * then reports it with every other failing check of the same attempt. */
static void tombstoned_check_only(server *s, v2_op *op)
{
    for (size_t i = 0; i < op->nstreams; i++)
        if (!op->writes[i] && (op->wire_expected[i] == V2_ANY || op->wire_expected[i] == V2_NO_STREAM) &&
            head_state(s, op->streams[i].stream, NULL) == V2_TOMBSTONED)
            op->streams[i].expected = STELE_STREAM_EXISTS;
}

/* ------------------------------------------------------------ AppendSession */

typedef struct session_st {
    grpc_kept kept; /* the requests (V2AppendRequest), one per stream */
    size_t nrecords;
    uint64_t bytes; /* a running estimate, to refuse early */
} session_st;

static void session_close(gcall *call)
{
    session_st *st = call->st;
    if (!st)
        return;
    grpc_kept_free(&st->kept);
    free(st);
    call->st = NULL;
}

static void session_msg(gcall *call, ProtobufCMessage *msg)
{
    V2AppendRequest *req = (V2AppendRequest *)msg;
    session_st *st = grpc_state(call, sizeof *st);
    if (!st)
        return;
    if (!req->stream || !*req->stream) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: append request %zu of the session names no stream", st->kept.n);
        return;
    }
    for (size_t i = 0; i < st->kept.n; i++)
        if (!strcmp(((V2AppendRequest *)st->kept.msgs[i])->stream, req->stream)) {
            Kurrentdb__Protocol__V2__Streams__Errors__StreamAlreadyInAppendSessionErrorDetails d =
                KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__STREAM_ALREADY_IN_APPEND_SESSION_ERROR_DETAILS__INIT;
            d.stream = req->stream;
            char text[600];
            snprintf(text, sizeof text,
                     "INVALID_ARGUMENT: stream '%.400s' appears twice in the append session (requests %zu "
                     "and %zu); send each stream's records in one request",
                     req->stream, i, st->kept.n);
            v2_fail(call, GRPC_ABORTED, text, "StreamAlreadyInAppendSessionErrorDetails", &d.base);
            return;
        }
    if (st->kept.n >= STELE_MAX_APPEND_STREAMS) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: an append session may name at most %u streams",
                     STELE_MAX_APPEND_STREAMS);
        return;
    }
    if (req->expected_revision_option_case ==
        KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_REQUEST__EXPECTED_REVISION_OPTION_EXPECTED_REVISION) {
        int64_t e;
        if (expected_in(req->expected_revision, &e)) {
            v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                         "INVALID_ARGUMENT: stream '%.400s': expected revision %lld is not a revision, -1 "
                         "(no stream), -2 (any), -4 (exists) or -5 (soft-deleted)",
                         req->stream, (long long)req->expected_revision);
            return;
        }
    }
    for (size_t i = 0; i < req->n_records; i++) {
        const V2Record *r = req->records[i];
        st->bytes += r->data.len + (r->schema && r->schema->name ? strlen(r->schema->name) : 0);
    }
    if (st->bytes > grpc_max_append_size(call->c->srv)) {
        fail_transaction_size(call, st->bytes, grpc_max_append_size(call->c->srv));
        grpc_kept_free(&st->kept);
        return;
    }
    if (grpc_kept_add(call, &st->kept, req))
        return;
    st->nrecords += req->n_records;
}

static void session_done(gcall *call, grpc_op *base, const completion *cp);

static void session_end(gcall *call)
{
    session_st *st = call->st;
    if (!st || st->kept.n == 0) {
        v2_fail_text(call, GRPC_FAILED_PRECONDITION,
                     "INVALID_ARGUMENT: the append session ended without any append request");
        return;
    }
    if (st->nrecords == 0) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT, "INVALID_ARGUMENT: the %s has no records to append",
                     call->m->client_streaming ? "append session" : "append");
        return;
    }
    v2_op *op = op_create(call, st->kept.n, st->nrecords);
    if (!op)
        return;
    size_t k = 0;
    for (size_t i = 0; i < st->kept.n; i++) {
        const V2AppendRequest *req = st->kept.msgs[i];
        op->streams[i].stream = req->stream;
        op->wire_expected[i] = req->expected_revision_option_case ? req->expected_revision : V2_ANY;
        expected_in(op->wire_expected[i], &op->streams[i].expected); /* checked in session_msg */
        op->writes[i] = req->n_records > 0;
        for (size_t j = 0; j < req->n_records; j++, k++) {
            op->records[k].stream = i;
            if (record_in(call, op, k, req->records[j], req->stream)) {
                op_free(op);
                return;
            }
        }
    }
    op_set_meta(op);
    /* The op owns the messages from here on. */
    op->kept = st->kept;
    memset(&st->kept, 0, sizeof st->kept);
    op->base.done = session_done;
    op->unary = !call->m->client_streaming;
    tombstoned_check_only(call->c->srv, op);
    v2_submit(call, op);
}

/* Failures shared by both methods: the store said no. */
static void v2_store_error(gcall *call, v2_op *op)
{
    if (op->rc == STELE_ETOOBIG) {
        fail_transaction_size(call, op->bytes, grpc_max_append_size(call->c->srv));
    } else if (op->rc == STELE_EINVAL) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT, "INVALID_ARGUMENT: %s", op->msg);
    } else if (op->rc == STELE_EIDCONFLICT) {
        v2_fail_text(call, GRPC_ALREADY_EXISTS, "ID_CONFLICT: %s", op->msg);
    } else {
        grpc_fail_stele(call, op->rc, op->msg, NULL);
    }
}

/* What both methods' answers start with: count the append, and answer a
 * failure (a failed expectation through `conflict`, the method's own
 * report). 1 if the call is answered, 0 if the append succeeded. */
static int v2_failed(gcall *call, v2_op *op, void (*conflict)(gcall *call, v2_op *op))
{
    server *s = call->c->srv;
    s->m.appends++;
    if (op->rc == STELE_EWRONGREV || op->rc == STELE_EDELETED) {
        conflict(call, op);
        return 1;
    }
    if (op->rc) {
        v2_store_error(call, op);
        return 1;
    }
    s->m.append_events += op->nrecords;
    s->m.append_bytes += op->bytes;
    return 0;
}

/* calloc an answer's `n` items of `size` bytes and as many pointers: 0, or
 * -1 with RESOURCE_EXHAUSTED sent (nothing allocated). */
static int v2_items(gcall *call, size_t n, size_t size, void *items, void *ptrs)
{
    void *a = calloc(n ? n : 1, size), *b = calloc(n ? n : 1, sizeof(void *));
    if (!a || !b) {
        free(a);
        free(b);
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    memcpy(items, &a, sizeof a);
    memcpy(ptrs, &b, sizeof b);
    return 0;
}

/* AppendSession failed an expectation: the stream the store names. */
static void session_conflict(gcall *call, v2_op *op)
{
    server *s = call->c->srv;
    size_t i = op->res.failed_stream < op->nstreams ? op->res.failed_stream : 0;
    const char *stream = op->streams[i].stream;
    if (head_state(s, stream, NULL) == V2_TOMBSTONED) {
        Kurrentdb__Protocol__V2__Streams__Errors__StreamTombstonedErrorDetails d =
            KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__STREAM_TOMBSTONED_ERROR_DETAILS__INIT;
        d.stream = (char *)stream;
        char text[600];
        snprintf(text, sizeof text, "STREAM_DELETED: stream '%.400s' is tombstoned", stream);
        v2_fail(call, GRPC_FAILED_PRECONDITION, text, "StreamTombstonedErrorDetails", &d.base);
        return;
    }
    Kurrentdb__Protocol__V2__Streams__Errors__StreamRevisionConflictErrorDetails d =
        KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__STREAM_REVISION_CONFLICT_ERROR_DETAILS__INIT;
    d.stream = (char *)stream;
    d.expected_revision = op->wire_expected[i];
    /* EDELETED without a tombstone: stream_exists on a soft-deleted
     * stream (reported as -10, KurrentDB's actual state for it). */
    d.actual_revision = op->rc == STELE_EDELETED ? V2_SOFT_DELETED
                        : op->res.current_revision == STELE_NONE
                            ? V2_NO_STREAM
                            : (int64_t)op->res.current_revision;
    char text[700];
    snprintf(text, sizeof text,
             "WRONG_EXPECTED_REVISION: stream '%.400s': expected revision %lld, current revision %lld", stream,
             (long long)d.expected_revision, (long long)d.actual_revision);
    v2_fail(call, GRPC_FAILED_PRECONDITION, text, "StreamRevisionConflictErrorDetails", &d.base);
}

static void session_done(gcall *call, grpc_op *base, const completion *cp)
{
    (void)cp;
    v2_op *op = (v2_op *)base;
    server *s = call->c->srv;
    Kurrentdb__Protocol__V2__Streams__AppendResponse *items, **ptrs;
    if (v2_failed(call, op, session_conflict) ||
        v2_items(call, op->nstreams, sizeof *items, &items, &ptrs))
        return;
    for (size_t i = 0; i < op->nstreams; i++) {
        Kurrentdb__Protocol__V2__Streams__AppendResponse init =
            KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RESPONSE__INIT;
        items[i] = init;
        items[i].stream = (char *)op->streams[i].stream;
        const stele_append_result *r = &op->per_stream[i];
        if (op->writes[i] && r->last_revision != STELE_NONE) {
            items[i].stream_revision = (int64_t)r->last_revision;
            items[i].position_option_case =
                KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RESPONSE__POSITION_OPTION_POSITION;
            items[i].position = (int64_t)r->last_position;
        } else {
            /* A stream named without records: its current state. */
            items[i].stream_revision = head_state(s, op->streams[i].stream, NULL);
        }
        ptrs[i] = &items[i];
    }
    if (op->unary) {
        grpc_send(call, &items[0].base); /* Append: its one stream */
    } else {
        Kurrentdb__Protocol__V2__Streams__AppendSessionResponse resp =
            KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_SESSION_RESPONSE__INIT;
        resp.n_output = op->nstreams;
        resp.output = ptrs;
        resp.position = (int64_t)op->res.last_position;
        grpc_send(call, &resp.base);
    }
    grpc_finish(call, GRPC_OK, NULL);
    free(items);
    free(ptrs);
}

/* ------------------------------------------------------------ AppendRecords */

static void records_done(gcall *call, grpc_op *base, const completion *cp);

/* The streams of an AppendRecords request, by name: a hash table of
 * indexes into op->streams (open addressing, 0 = empty), so a request of
 * many records costs O(1) per record whatever its streams. */
#define V2_HASH_SLOTS 2048u /* a power of two, over twice STELE_MAX_APPEND_STREAMS */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* The index of `stream` in op->streams[0..*n), added if absent; SIZE_MAX
 * if that would make more than STELE_MAX_APPEND_STREAMS. */
static size_t stream_index(v2_op *op, uint16_t *slots, size_t *n, const char *stream)
{
    uint32_t i = name_hash(stream) & (V2_HASH_SLOTS - 1);
    for (; slots[i]; i = (i + 1) & (V2_HASH_SLOTS - 1))
        if (!strcmp(op->streams[slots[i] - 1].stream, stream))
            return slots[i] - 1u;
    if (*n >= STELE_MAX_APPEND_STREAMS)
        return SIZE_MAX;
    op->streams[*n].stream = stream;
    op->streams[*n].expected = STELE_ANY;
    op->wire_expected[*n] = V2_ANY;
    slots[i] = (uint16_t)(*n + 1);
    return (*n)++;
}

/* At least one record, each naming a stream: 0, or -1 after failing the
 * call. */
static int check_records(gcall *call, const V2RecordsRequest *req)
{
    if (req->n_records == 0) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: AppendRecords needs at least one record");
        return -1;
    }
    for (size_t i = 0; i < req->n_records; i++) {
        const V2Record *r = req->records[i];
        if (r->stream_option_case != KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD__STREAM_OPTION_STREAM ||
            !r->stream || !*r->stream) {
            v2_fail_text(call, GRPC_INVALID_ARGUMENT, "INVALID_ARGUMENT: record %zu names no stream", i);
            return -1;
        }
    }
    return 0;
}

/* Consistency check i: a stream_state check naming a stream, with a known
 * expected state, the only one on its stream. 0, or -1 after failing the
 * call. */
static int check_one_check(gcall *call, const V2RecordsRequest *req, size_t i)
{
    const V2Check *c = req->checks[i];
    if (c->type_case != KURRENTDB__PROTOCOL__V2__STREAMS__CONSISTENCY_CHECK__TYPE_STREAM_STATE ||
        !c->stream_state) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: consistency check %zu is of a kind this server does not know "
                     "(only stream_state checks are supported)",
                     i);
        return -1;
    }
    const char *cs = c->stream_state->stream;
    if (!cs || !*cs) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: consistency check %zu names no stream", i);
        return -1;
    }
    int64_t e;
    if (expected_in(c->stream_state->expected_state, &e)) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: consistency check %zu (stream '%.400s'): expected state %lld is "
                     "not a revision, -1 (no stream), -2 (any), -4 (exists) or -5 "
                     "(soft-deleted)",
                     i, cs, (long long)c->stream_state->expected_state);
        return -1;
    }
    for (size_t j = 0; j < i; j++)
        if (!strcmp(req->checks[j]->stream_state->stream, cs)) {
            v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                         "INVALID_ARGUMENT: consistency checks %zu and %zu both check stream '%.400s'; "
                         "give each stream at most one check",
                         j, i, cs);
            return -1;
        }
    return 0;
}

/* The checks: at most STELE_MAX_APPEND_STREAMS, each valid. 0, or -1
 * after failing the call. */
static int check_checks(gcall *call, const V2RecordsRequest *req)
{
    if (req->n_checks > STELE_MAX_APPEND_STREAMS) {
        v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                     "INVALID_ARGUMENT: AppendRecords names more than %u streams (%zu checks)",
                     STELE_MAX_APPEND_STREAMS, req->n_checks);
        return -1;
    }
    for (size_t i = 0; i < req->n_checks; i++)
        if (check_one_check(call, req, i))
            return -1;
    return 0;
}

/* op's streams (checked ones first, in check order, then those records
 * add) and records from req. 0, or -1 after failing the call. */
static int records_fill(gcall *call, v2_op *op, const V2RecordsRequest *req)
{
    uint16_t *slots = calloc(V2_HASH_SLOTS, sizeof *slots);
    if (!slots) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < req->n_checks; i++) {
        const V2Check *c = req->checks[i];
        size_t x = stream_index(op, slots, &n, c->stream_state->stream);
        op->wire_expected[x] = c->stream_state->expected_state;
        expected_in(op->wire_expected[x], &op->streams[x].expected);
        op->check_index[x] = (int32_t)i;
    }
    for (size_t k = 0; k < req->n_records; k++) {
        const V2Record *r = req->records[k];
        size_t x = stream_index(op, slots, &n, r->stream);
        if (x == SIZE_MAX) {
            v2_fail_text(call, GRPC_INVALID_ARGUMENT,
                         "INVALID_ARGUMENT: AppendRecords names more than %u streams (record %zu names "
                         "stream number %u)",
                         STELE_MAX_APPEND_STREAMS, k, STELE_MAX_APPEND_STREAMS + 1);
            free(slots);
            return -1;
        }
        op->writes[x] = 1;
        op->records[k].stream = x;
        if (record_in(call, op, k, r, r->stream)) {
            free(slots);
            return -1;
        }
    }
    free(slots);
    op->nstreams = n;
    return 0;
}

static void records_msg(gcall *call, ProtobufCMessage *msg)
{
    V2RecordsRequest *req = (V2RecordsRequest *)msg;
    if (check_records(call, req) || check_checks(call, req))
        return;
    size_t maxstreams = req->n_checks + req->n_records;
    if (maxstreams > STELE_MAX_APPEND_STREAMS)
        maxstreams = STELE_MAX_APPEND_STREAMS;
    v2_op *op = op_create(call, maxstreams, req->n_records);
    if (!op)
        return;
    if (records_fill(call, op, req)) {
        op_free(op);
        return;
    }
    op_set_meta(op);
    if (grpc_kept_add(call, &op->kept, req)) {
        op_free(op);
        return;
    }
    op->base.done = records_done;
    tombstoned_check_only(call->c->srv, op);
    v2_submit(call, op);
}

/* Stream i failed its check with `failed` (EWRONGREV / EDELETED) and the
 * store saw `current` as its last revision: the actual state to report. */
static int64_t actual_state(server *s, const char *stream, int failed, uint64_t current)
{
    if (failed == STELE_EDELETED)
        /* A tombstone (permanent, so still there now) or stream_exists on
         * a soft-deleted stream. */
        return head_state(s, stream, NULL) == V2_TOMBSTONED ? V2_TOMBSTONED : V2_SOFT_DELETED;
    return current == STELE_NONE ? V2_NO_STREAM : (int64_t)current;
}

/* AppendRecords failed a check: every failing one, as the store marked
 * them in the same commit attempt (per_stream[i].failed), the first one
 * first. */
static void records_violations(gcall *call, v2_op *op)
{
    server *s = call->c->srv;
    V2Violation *vs, **ptrs;
    V2StateViolation *ss = calloc(op->nstreams + 1, sizeof *ss);
    if (!ss) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (v2_items(call, op->nstreams + 1, sizeof *vs, &vs, &ptrs)) {
        free(ss);
        return;
    }
    size_t first = op->res.failed_stream < op->nstreams ? op->res.failed_stream : 0;
    size_t n = 0;
    char text[700] = "";
    for (size_t pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < op->nstreams; i++) {
            if ((pass == 0) != (i == first))
                continue;
            int failed = op->per_stream[i].failed;
            uint64_t current = op->per_stream[i].current_revision;
            if (pass == 0 && !failed) { /* older stores mark only the first */
                failed = op->rc;
                current = op->res.current_revision;
            }
            if (!failed)
                continue;
            const char *stream = op->streams[i].stream;
            int64_t actual = actual_state(s, stream, failed, current);
            if (pass == 0)
                snprintf(text, sizeof text,
                         "stream '%.400s' is not in the expected state %lld (actual state %lld)",
                         stream, (long long)op->wire_expected[i], (long long)actual);
            Kurrentdb__Protocol__V2__Streams__Errors__ConsistencyViolation__StreamStateViolation
                sinit = KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__CONSISTENCY_VIOLATION__STREAM_STATE_VIOLATION__INIT;
            V2Violation vinit = KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__CONSISTENCY_VIOLATION__INIT;
            ss[n] = sinit;
            vs[n] = vinit;
            ss[n].stream = (char *)stream;
            ss[n].expected_state = op->wire_expected[i];
            ss[n].actual_state = actual;
            vs[n].check_index = op->check_index[i];
            vs[n].type_case = KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__CONSISTENCY_VIOLATION__TYPE_STREAM_STATE;
            vs[n].stream_state = &ss[n];
            ptrs[n] = &vs[n];
            n++;
        }
    Kurrentdb__Protocol__V2__Streams__Errors__AppendConsistencyViolationErrorDetails d =
        KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__APPEND_CONSISTENCY_VIOLATION_ERROR_DETAILS__INIT;
    d.n_violations = n;
    d.violations = ptrs;
    char full[900];
    snprintf(full, sizeof full, "%s: %zu consistency check%s failed, first: %s",
             stele_error_info_of(op->rc)->code, n, n == 1 ? "" : "s", text);
    v2_fail(call, GRPC_FAILED_PRECONDITION, full, "AppendConsistencyViolationErrorDetails", &d.base);
    free(vs);
    free(ss);
    free(ptrs);
}

static void records_done(gcall *call, grpc_op *base, const completion *cp)
{
    (void)cp;
    v2_op *op = (v2_op *)base;
    Kurrentdb__Protocol__V2__Streams__StreamRevision *items, **ptrs;
    if (v2_failed(call, op, records_violations) ||
        v2_items(call, op->nstreams, sizeof *items, &items, &ptrs))
        return;
    size_t n = 0;
    for (size_t i = 0; i < op->nstreams; i++) {
        if (!op->writes[i])
            continue;
        Kurrentdb__Protocol__V2__Streams__StreamRevision init =
            KURRENTDB__PROTOCOL__V2__STREAMS__STREAM_REVISION__INIT;
        items[n] = init;
        items[n].stream = (char *)op->streams[i].stream;
        items[n].revision = (int64_t)op->per_stream[i].last_revision;
        ptrs[n] = &items[n];
        n++;
    }
    Kurrentdb__Protocol__V2__Streams__AppendRecordsResponse resp =
        KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORDS_RESPONSE__INIT;
    resp.n_revisions = n;
    resp.revisions = ptrs;
    resp.position = (int64_t)op->res.last_position;
    grpc_send(call, &resp.base);
    grpc_finish(call, GRPC_OK, NULL);
    free(items);
    free(ptrs);
}

/* ------------------------------------------------------------ the table */

const grpc_method grpc_v2_methods[] = {
    {.path = "/kurrentdb.protocol.v2.streams.StreamsService/AppendSession",
     .req = &kurrentdb__protocol__v2__streams__append_request__descriptor,
     .client_streaming = 1,
     .on_msg = session_msg,
     .on_end = session_end,
     .on_close = session_close},
    /* Unary, one stream (KurrentDB 26.x servers; no client release calls
     * it yet): an AppendSession of one request, answered with its one
     * AppendResponse. */
    {.path = "/kurrentdb.protocol.v2.streams.StreamsService/Append",
     .req = &kurrentdb__protocol__v2__streams__append_request__descriptor,
     .on_msg = session_msg,
     .on_end = session_end,
     .on_close = session_close},
    {.path = "/kurrentdb.protocol.v2.streams.StreamsService/AppendRecords",
     .req = &kurrentdb__protocol__v2__streams__append_records_request__descriptor,
     .on_msg = records_msg},
};
const size_t grpc_v2_nmethods = sizeof grpc_v2_methods / sizeof grpc_v2_methods[0];
