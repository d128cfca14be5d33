/*
 * grpc_streams.c - event_store.client.streams.Streams: Append,
 * BatchAppend, Delete and Tombstone, and the method table of the service
 * (Read is in grpc_read.c). docs/kurrentdb-compatibility.md has the
 * mapping.
 *
 * Append is client-streaming: an Options message (stream, expected
 * revision), then one ProposedMessage per event. The messages are kept as
 * decoded (their bytes are the events' bytes, no copy) until the client
 * half-closes; then one stele_append_async() and, on completion, one
 * AppendResp. A wrong expected revision is a response
 * (AppendResp.wrong_expected_version), not an error; other failures are
 * gRPC statuses with KurrentDB's `exception` trailers. The running size is
 * checked as messages arrive, so an append over the store's limit is
 * refused (maximum-append-size-exceeded) without buffering it all.
 *
 * BatchAppend is one long-lived bidirectional call carrying many appends,
 * each named by a correlation id and split over one or more requests
 * (options in the first, is_final on the last). Each is appended as soon
 * as its last part arrives; several may be in flight at once, and each
 * gets its own BatchAppendResp, in completion order. Errors travel inside
 * the response as a google.rpc.Status whose `details` names the
 * KurrentDB error (WrongExpectedVersion, StreamDeleted,
 * MaximumAppendSizeExceeded, Timeout, BadRequest). The call ends (OK) once
 * the client half-closed and nothing is in flight.
 *
 * Event mapping: metadata "type" is the event type, "content-type"
 * application/json sets STELE_EVENT_JSON (the data must then be valid
 * JSON, since the HTTP API writes such data verbatim into its responses),
 * custom_metadata is the event's metadata (STELE_META_JSON when it is
 * valid JSON), the id is the event id (structured or string form).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc.h"
#include "json.h"
#include "streams.pb-c.h"

typedef EventStore__Client__StreamIdentifier StreamIdentifier;
typedef EventStore__Client__UUID PbUUID;
typedef EventStore__Client__Empty PbEmpty;
typedef EventStore__Client__Streams__AppendReq AppendReq;
typedef EventStore__Client__Streams__AppendReq__ProposedMessage ProposedMessage;
typedef EventStore__Client__Streams__AppendResp AppendResp;
typedef EventStore__Client__Streams__BatchAppendReq BatchAppendReq;
typedef EventStore__Client__Streams__BatchAppendReq__ProposedMessage BatchProposedMessage;
typedef EventStore__Client__Streams__BatchAppendResp BatchAppendResp;

/* Expected-revision oneofs number their cases alike in every request:
 * 2 revision, 3 no_stream, 4 any, 5 stream_exists (unset: any). */
static int64_t expected_of(int which, uint64_t revision)
{
    switch (which) {
    case 2: return revision > INT64_MAX ? -100 : (int64_t)revision;
    case 3: return STELE_NO_STREAM;
    case 5: return STELE_STREAM_EXISTS;
    default: return STELE_ANY;
    }
}

/* A StreamIdentifier as a C string. 0, or -1 with a status sent. */
int grpc_stream_name(gcall *call, const StreamIdentifier *id, char *out, size_t cap)
{
    if (!id || id->stream_name.len == 0) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "a stream name is required");
        return -1;
    }
    if (id->stream_name.len >= cap || memchr(id->stream_name.data, 0, id->stream_name.len)) {
        grpc_fail_code(call, "INVALID_ARGUMENT",
                    id->stream_name.len >= cap ? "stream name is too long"
                                               : "stream name contains a NUL byte");
        return -1;
    }
    memcpy(out, id->stream_name.data, id->stream_name.len);
    out[id->stream_name.len] = 0;
    return 0;
}

/* A UUID message as 16 bytes: 0, 1 if absent, -1 if malformed. Its string
 * form may also be a ULID (seed 004's ids): the same 16 bytes. */
int grpc_uuid_in(const PbUUID *u, uint8_t out[16])
{
    if (!u || u->value_case == EVENT_STORE__CLIENT__UUID__VALUE__NOT_SET)
        return 1;
    if (u->value_case == EVENT_STORE__CLIENT__UUID__VALUE_STRING)
        return u->string && stele_id_parse(u->string, out, NULL) == 0 ? 0 : -1;
    if (!u->structured)
        return -1;
    stbe64(out, (uint64_t)u->structured->most_significant_bits);
    stbe64(out + 8, (uint64_t)u->structured->least_significant_bits);
    return 0;
}

static const char *map_get(EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry **m,
                           size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (m[i]->key && !strcmp(m[i]->key, key))
            return m[i]->value ? m[i]->value : "";
    return NULL;
}

/* One proposed message (Append's or BatchAppend's: the same fields) as a
 * stele_event_in. 0, or -1 with `why` set (and *missing if a required
 * metadata property is absent). */
static int event_in(size_t idx, const PbUUID *id, void **meta, size_t nmeta,
                    const ProtobufCBinaryData *data, const ProtobufCBinaryData *custom,
                    stele_event_in *ev, uint8_t idbuf[16], char *why, size_t whylen,
                    const char **missing)
{
    /* Both message types' map entries have the same layout (key, value). */
    EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry **m = (void *)meta;
    memset(ev, 0, sizeof *ev);
    int r = grpc_uuid_in(id, idbuf);
    if (r < 0) {
        snprintf(why, whylen, "event %zu: malformed event id", idx);
        return -1;
    }
    ev->id = r == 0 ? idbuf : NULL;
    if (r == 0 && id->value_case == EVENT_STORE__CLIENT__UUID__VALUE_STRING &&
        strlen(id->string) == 26)
        ev->flags |= STELE_EVENT_ID_ULID; /* returned as it was given */
    const char *type = map_get(m, nmeta, "type");
    const char *ct = map_get(m, nmeta, "content-type");
    if (!type || !ct) {
        *missing = !type ? "type" : "content-type";
        snprintf(why, whylen, "event %zu: metadata property \"%s\" is required", idx, *missing);
        return -1;
    }
    ev->type = type;
    ev->data = data->data;
    ev->data_len = data->len;
    ev->metadata = custom->data;
    ev->metadata_len = custom->len;
    if (!strcmp(ct, "application/json")) {
        size_t at;
        const char *reason;
        if (json_validate((const char *)data->data, data->len, &at, &reason)) {
            snprintf(why, whylen,
                     "event %zu: content-type is application/json but the data is not JSON "
                     "(byte %zu: %s)",
                     idx, at, reason);
            return -1;
        }
        ev->flags |= STELE_EVENT_JSON;
    }
    if (custom->len && json_validate((const char *)custom->data, custom->len, NULL, NULL) == 0)
        ev->flags |= STELE_META_JSON;
    return 0;
}

static uint64_t event_size(const char *type, const ProtobufCBinaryData *data,
                           const ProtobufCBinaryData *custom)
{
    return (type ? strlen(type) : 0) + data->len + custom->len;
}

static void fail_too_big(gcall *call, const char *stream)
{
    char msg[160];
    snprintf(msg, sizeof msg, "the append is larger than the server's limit of %llu bytes",
             (unsigned long long)grpc_max_append_size(call->c->srv));
    grpc_fail_stele(call, STELE_ETOOBIG, msg, stream);
}

/* ------------------------------------------------------------ metastreams */

/* KurrentDB's metastream `$$S`: an append of one `$metadata` event (JSON
 * with $maxAge, $maxCount, $tb, custom fields) sets S's stream metadata;
 * the expected revision is the metadata's version. 0 with *version the new
 * version, or a libstele error with `why` (EWRONGREV: *version the current
 * one, STELE_NONE if none). */
static int is_metastream(const char *stream) { return !strncmp(stream, "$$", 2); }

static int meta_append(server *s, const char *metastream, int64_t expected,
                       const stele_event_in *evs, size_t n, uint64_t *version, char *why,
                       size_t whylen)
{
    *version = STELE_NONE;
    if (n != 1 || strcmp(evs[0].type, "$metadata") || !(evs[0].flags & STELE_EVENT_JSON)) {
        snprintf(why, whylen,
                 "a metastream ($$stream) takes one event of type $metadata with JSON data");
        return STELE_EINVAL;
    }
    stele_stream_metadata md;
    buf custom = {0};
    const char *code;
    if (stream_metadata_parse(evs[0].data, evs[0].data_len, 1, &md, &custom, &code, why, whylen)) {
        buf_free(&custom);
        return strcmp(code, "INTERNAL") ? STELE_EINVAL : STELE_ENOMEM;
    }
    int rc = stele_set_stream_metadata(s->db, metastream + 2, &md, expected, version);
    if (rc)
        snprintf(why, whylen, "%s", stele_errmsg());
    buf_free(&custom);
    return rc;
}

/* ------------------------------------------------------------ Append */

typedef struct append_st {
    char stream[1024];
    int have_opts;
    int expected_case;
    int64_t expected;
    uint64_t expected_rev;
    grpc_kept kept; /* the proposed messages (AppendReq), kept decoded */
    uint64_t bytes;
} append_st;

typedef struct append_op {
    grpc_op base;
    char stream[1024];
    int expected_case;
    uint64_t expected_rev;
} append_op;

static void append_close(gcall *call)
{
    append_st *st = call->st;
    if (!st)
        return;
    grpc_kept_free(&st->kept);
    free(st);
    call->st = NULL;
}

static void send_wrong_expected(gcall *call, int expected_case, uint64_t expected_rev,
                                uint64_t current)
{
    EventStore__Client__Streams__AppendResp__WrongExpectedVersion w =
        EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__INIT;
    PbEmpty e = EVENT_STORE__CLIENT__EMPTY__INIT;
    if (current == STELE_NONE) {
        w.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__CURRENT_REVISION_OPTION_CURRENT_NO_STREAM;
        w.current_no_stream = &e;
        w.current_revision_option_20_6_0_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__CURRENT_REVISION_OPTION_20_6_0_NO_STREAM_20_6_0;
        w.no_stream_20_6_0 = &e;
    } else {
        w.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__CURRENT_REVISION_OPTION_CURRENT_REVISION;
        w.current_revision = current;
        w.current_revision_option_20_6_0_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__CURRENT_REVISION_OPTION_20_6_0_CURRENT_REVISION_20_6_0;
        w.current_revision_20_6_0 = current;
    }
    switch (expected_case) {
    case 2:
        w.expected_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_EXPECTED_REVISION;
        w.expected_revision = expected_rev;
        w.expected_revision_option_20_6_0_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_20_6_0_EXPECTED_REVISION_20_6_0;
        w.expected_revision_20_6_0 = expected_rev;
        break;
    case 3:
        w.expected_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_EXPECTED_NO_STREAM;
        w.expected_no_stream = &e;
        break;
    case 5:
        w.expected_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_EXPECTED_STREAM_EXISTS;
        w.expected_stream_exists = &e;
        w.expected_revision_option_20_6_0_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_20_6_0_STREAM_EXISTS_20_6_0;
        w.stream_exists_20_6_0 = &e;
        break;
    default:
        w.expected_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_EXPECTED_ANY;
        w.expected_any = &e;
        w.expected_revision_option_20_6_0_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_20_6_0_ANY_20_6_0;
        w.any_20_6_0 = &e;
        break;
    }
    AppendResp r = EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__INIT;
    r.result_case = EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__RESULT_WRONG_EXPECTED_VERSION;
    r.wrong_expected_version = &w;
    grpc_send(call, &r.base);
    grpc_finish(call, GRPC_OK, NULL);
}

static void send_append_success(gcall *call, uint64_t revision, uint64_t position)
{
    EventStore__Client__Streams__AppendResp__Success ok =
        EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__INIT;
    EventStore__Client__Streams__AppendResp__Position pos =
        EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__POSITION__INIT;
    PbEmpty e = EVENT_STORE__CLIENT__EMPTY__INIT;
    if (revision == STELE_NONE) {
        ok.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_NO_STREAM;
        ok.no_stream = &e;
    } else {
        ok.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_CURRENT_REVISION;
        ok.current_revision = revision;
    }
    if (position == STELE_NONE) {
        ok.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__POSITION_OPTION_NO_POSITION;
        ok.no_position = &e;
    } else {
        pos.commit_position = pos.prepare_position = position;
        ok.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__POSITION_OPTION_POSITION;
        ok.position = &pos;
    }
    AppendResp r = EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__INIT;
    r.result_case = EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__RESULT_SUCCESS;
    r.success = &ok;
    grpc_send(call, &r.base);
    grpc_finish(call, GRPC_OK, NULL);
}

static void append_done(gcall *call, grpc_op *base, const completion *cp)
{
    append_op *op = (append_op *)base;
    call->c->srv->m.appends++;
    if (cp->rc == 0)
        send_append_success(call, cp->res.last_revision, cp->res.last_position);
    else if (cp->rc == STELE_EWRONGREV)
        send_wrong_expected(call, op->expected_case, op->expected_rev, cp->res.current_revision);
    else
        grpc_fail_stele(call, cp->rc, cp->msg, op->stream);
}

static void append_msg(gcall *call, ProtobufCMessage *msg)
{
    AppendReq *req = (AppendReq *)msg;
    append_st *st = grpc_state(call, sizeof *st);
    if (!st)
        return;
    if (req->content_case == EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_OPTIONS) {
        if (st->have_opts) {
            grpc_fail_code(call, "INVALID_ARGUMENT", "Append: options sent twice");
            return;
        }
        if (grpc_stream_name(call, req->options->stream_identifier, st->stream,
                             sizeof st->stream))
            return;
        st->have_opts = 1;
        st->expected_case = (int)req->options->expected_stream_revision_case;
        st->expected_rev = req->options->revision;
        st->expected = expected_of(st->expected_case, st->expected_rev);
        if (st->expected == -100) {
            grpc_fail_code(call, "INVALID_ARGUMENT", "expected revision is out of range");
            return;
        }
        return;
    }
    if (req->content_case != EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_PROPOSED_MESSAGE) {
        grpc_fail_code(call, "INVALID_ARGUMENT",
                       "Append: a message with neither options nor an event");
        return;
    }
    if (!st->have_opts) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Append: the first message must be the options");
        return;
    }
    ProposedMessage *pm = req->proposed_message;
    const char *type = map_get(pm->metadata, pm->n_metadata, "type");
    st->bytes += event_size(type, &pm->data, &pm->custom_metadata);
    if (st->bytes > grpc_max_append_size(call->c->srv)) {
        fail_too_big(call, st->stream);
        grpc_kept_free(&st->kept);
        return;
    }
    grpc_kept_add(call, &st->kept, req);
}

static void append_end(gcall *call)
{
    append_st *st = call->st;
    if (!st || !st->have_opts) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Append: no options were sent");
        return;
    }
    server *s = call->c->srv;
    size_t n = st->kept.n;
    if (n == 0) {
        /* Nothing to write: answer with the stream's state, checking the
         * expected revision as an append would. */
        stele_stream_info info;
        int rc = stele_stream_head(s->db, st->stream, &info);
        if (rc && rc != STELE_ENOTFOUND) {
            grpc_fail_stele(call, rc, stele_errmsg(), st->stream);
            return;
        }
        if (!rc && info.tombstoned) {
            grpc_fail_stele(call, STELE_EDELETED, "the stream is tombstoned", st->stream);
            return;
        }
        uint64_t cur = rc || info.deleted ? STELE_NONE : info.last_revision;
        int ok = st->expected == STELE_ANY || (st->expected == STELE_NO_STREAM && cur == STELE_NONE) ||
                 (st->expected == STELE_STREAM_EXISTS && cur != STELE_NONE) ||
                 (st->expected >= 0 && (uint64_t)st->expected == cur);
        if (ok)
            send_append_success(call, cur, STELE_NONE);
        else
            send_wrong_expected(call, st->expected_case, st->expected_rev, cur);
        return;
    }
    stele_event_in *evs = calloc(n, sizeof *evs);
    uint8_t(*ids)[16] = calloc(n, 16);
    append_op *op = calloc(1, sizeof *op);
    if (!evs || !ids || !op) {
        free(evs);
        free(ids);
        free(op);
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        ProposedMessage *pm = ((AppendReq *)st->kept.msgs[i])->proposed_message;
        char why[300];
        const char *missing = NULL;
        if (event_in(i, pm->id, (void **)pm->metadata, pm->n_metadata, &pm->data,
                     &pm->custom_metadata, &evs[i], ids[i], why, sizeof why, &missing)) {
            if (missing) {
                grpc_trailer(call, "exception", "missing-required-metadata-property");
                grpc_trailer(call, "required-metadata-properties", missing);
            }
            grpc_fail_code(call, "INVALID_ARGUMENT", why);
            free(evs);
            free(ids);
            free(op);
            return;
        }
    }
    if (is_metastream(st->stream)) {
        char why[512];
        uint64_t version;
        int rc = meta_append(s, st->stream, st->expected, evs, n, &version, why, sizeof why);
        free(evs);
        free(ids);
        free(op);
        grpc_kept_free(&st->kept);
        if (rc == 0)
            send_append_success(call, version, STELE_NONE);
        else if (rc == STELE_EWRONGREV)
            send_wrong_expected(call, st->expected_case, st->expected_rev, version);
        else
            grpc_fail_stele(call, rc, why, st->stream);
        return;
    }
    op->base.done = append_done;
    snprintf(op->stream, sizeof op->stream, "%s", st->stream);
    op->expected_case = st->expected_case;
    op->expected_rev = st->expected_rev;
    s->m.append_events += n;
    s->m.append_bytes += st->bytes;
    int rc = grpc_append(call, &op->base, st->stream, st->expected, evs, n);
    free(evs);
    free(ids);
    grpc_kept_free(&st->kept); /* the store copied what it needs */
    if (rc)
        grpc_fail_stele(call, rc, stele_errmsg(), st->stream);
}

/* ------------------------------------------------------------ BatchAppend */

typedef struct batch {
    uint8_t corr[16];
    int corr_structured;
    char stream[1024];
    int expected_case;
    uint64_t expected_rev;
    int64_t expected;
    int64_t deadline_us; /* wall clock, 0 = none */
    grpc_kept kept;      /* its parts with events (BatchAppendReq) */
    size_t nevents;
    uint64_t bytes;
    struct batch *next;
} batch;

typedef struct batch_st {
    batch *open; /* batches whose final part has not arrived */
    size_t nopen;
} batch_st;

typedef struct batch_op {
    grpc_op base;
    uint8_t corr[16];
    int corr_structured;
    char stream[1024];
    int expected_case;
    uint64_t expected_rev;
} batch_op;

#define MAX_OPEN_BATCHES 4096

static void batch_free(batch *b)
{
    grpc_kept_free(&b->kept);
    free(b);
}

static void batch_close(gcall *call)
{
    batch_st *st = call->st;
    if (!st)
        return;
    while (st->open) {
        batch *b = st->open;
        st->open = b->next;
        batch_free(b);
    }
    free(st);
    call->st = NULL;
}

/* A response for one batch: success (err == NULL) or an error status. */
static void batch_respond(gcall *call, const uint8_t corr[16], int corr_structured,
                          const char *stream, int expected_case, uint64_t expected_rev,
                          const stele_append_result *res, const Google__Rpc__Status *err)
{
    char corr_text[37];
    PbUUID uuid = EVENT_STORE__CLIENT__UUID__INIT;
    EventStore__Client__UUID__Structured su = EVENT_STORE__CLIENT__UUID__STRUCTURED__INIT;
    if (corr_structured) {
        su.most_significant_bits = (int64_t)ldbe64(corr);
        su.least_significant_bits = (int64_t)ldbe64(corr + 8);
        uuid.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRUCTURED;
        uuid.structured = &su;
    } else {
        stele_uuid_format(corr, corr_text);
        uuid.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRING;
        uuid.string = corr_text;
    }
    StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)stream;
    sid.stream_name.len = strlen(stream);
    Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
    BatchAppendResp r = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__INIT;
    r.correlation_id = &uuid;
    r.stream_identifier = &sid;
    switch (expected_case) {
    case 2:
        r.expected_stream_position_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__EXPECTED_STREAM_POSITION_STREAM_POSITION;
        r.stream_position = expected_rev;
        break;
    case 3:
        r.expected_stream_position_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__EXPECTED_STREAM_POSITION_NO_STREAM;
        r.no_stream = &e;
        break;
    case 5:
        r.expected_stream_position_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__EXPECTED_STREAM_POSITION_STREAM_EXISTS;
        r.stream_exists = &e;
        break;
    default:
        r.expected_stream_position_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__EXPECTED_STREAM_POSITION_ANY;
        r.any = &e;
        break;
    }
    EventStore__Client__Streams__BatchAppendResp__Success ok =
        EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__INIT;
    EventStore__Client__AllStreamPosition pos = EVENT_STORE__CLIENT__ALL_STREAM_POSITION__INIT;
    if (err) {
        r.result_case = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__RESULT_ERROR;
        r.error = (Google__Rpc__Status *)err;
    } else {
        ok.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_CURRENT_REVISION;
        ok.current_revision = res->last_revision;
        if (res->last_position == STELE_NONE) { /* a metastream's: not in $all */
            ok.position_option_case =
                EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__POSITION_OPTION_NO_POSITION;
            ok.no_position = &e;
        } else {
            pos.commit_position = pos.prepare_position = res->last_position;
            ok.position_option_case =
                EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__POSITION_OPTION_POSITION;
            ok.position = &pos;
        }
        r.result_case = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__RESULT_SUCCESS;
        r.success = &ok;
    }
    grpc_send(call, &r.base);
}

/* An error response for one batch, with KurrentDB's details message. */
static void batch_fail(gcall *call, const uint8_t corr[16], int corr_structured, const char *stream,
                       int expected_case, uint64_t expected_rev, int rc, const char *message,
                       uint64_t current)
{
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    ProtobufCMessage *details = NULL;
    const char *type_url;
    Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
    EventStore__Client__WrongExpectedVersion w = EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__INIT;
    EventStore__Client__StreamDeleted del = EVENT_STORE__CLIENT__STREAM_DELETED__INIT;
    StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    EventStore__Client__MaximumAppendSizeExceeded big =
        EVENT_STORE__CLIENT__MAXIMUM_APPEND_SIZE_EXCEEDED__INIT;
    EventStore__Client__Timeout tmo = EVENT_STORE__CLIENT__TIMEOUT__INIT;
    EventStore__Client__BadRequest bad = EVENT_STORE__CLIENT__BAD_REQUEST__INIT;
    char text[600];
    /* Status and code from the error vocabulary (docs/errors.md); rc 1 is
     * the batch's own deadline. */
    const stele_error_info *info =
        stele_error_lookup(rc == 1 ? "DEADLINE_EXCEEDED" : NULL);
    if (!info)
        info = stele_error_info_of(rc);
    snprintf(text, sizeof text, "%s: %s", info->code,
             message && *message ? message : stele_strerror(rc));
    switch (rc) {
    case STELE_EWRONGREV:
        st.code = GOOGLE__RPC__CODE__FAILED_PRECONDITION;
        if (current == STELE_NONE) {
            w.current_stream_revision_option_case =
                EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__CURRENT_STREAM_REVISION_OPTION_CURRENT_NO_STREAM;
            w.current_no_stream = &e;
        } else {
            w.current_stream_revision_option_case =
                EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__CURRENT_STREAM_REVISION_OPTION_CURRENT_STREAM_REVISION;
            w.current_stream_revision = current;
        }
        switch (expected_case) {
        case 2:
            w.expected_stream_position_option_case =
                EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__EXPECTED_STREAM_POSITION_OPTION_EXPECTED_STREAM_POSITION;
            w.expected_stream_position = expected_rev;
            break;
        case 3:
            w.expected_stream_position_option_case =
                EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__EXPECTED_STREAM_POSITION_OPTION_EXPECTED_NO_STREAM;
            w.expected_no_stream = &e;
            break;
        case 5:
            w.expected_stream_position_option_case =
                EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__EXPECTED_STREAM_POSITION_OPTION_EXPECTED_STREAM_EXISTS;
            w.expected_stream_exists = &e;
            break;
        default:
            w.expected_stream_position_option_case =
                EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__EXPECTED_STREAM_POSITION_OPTION_EXPECTED_ANY;
            w.expected_any = &e;
            break;
        }
        details = &w.base;
        type_url = "type.googleapis.com/event_store.client.WrongExpectedVersion";
        break;
    case STELE_EDELETED:
        st.code = GOOGLE__RPC__CODE__FAILED_PRECONDITION;
        sid.stream_name.data = (uint8_t *)stream;
        sid.stream_name.len = strlen(stream);
        del.stream_identifier = &sid;
        details = &del.base;
        type_url = "type.googleapis.com/event_store.client.StreamDeleted";
        break;
    case STELE_ETOOBIG: {
        uint64_t max = grpc_max_append_size(call->c->srv);
        st.code = GOOGLE__RPC__CODE__INVALID_ARGUMENT;
        big.maxappendsize = max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
        details = &big.base;
        type_url = "type.googleapis.com/event_store.client.MaximumAppendSizeExceeded";
        break;
    }
    case 1: /* the batch's own deadline passed */
        st.code = GOOGLE__RPC__CODE__DEADLINE_EXCEEDED;
        details = &tmo.base;
        type_url = "type.googleapis.com/event_store.client.Timeout";
        break;
    default:
        st.code = info->grpc_status; /* google.rpc.Code numbers are gRPC's */
        bad.message = text;
        details = &bad.base;
        type_url = "type.googleapis.com/event_store.client.BadRequest";
        break;
    }
    st.message = text;
    uint8_t *packed = grpc_any_pack(&any, type_url, details);
    if (packed)
        st.details = &any;
    if (rc != 1)
        metrics_error(&call->c->srv->m, 409, rc);
    batch_respond(call, corr, corr_structured, stream, expected_case, expected_rev, NULL, &st);
    free(packed);
}

static void batch_maybe_end(gcall *call)
{
    batch_st *st = call->st;
    /* `pending` still counts the completion being delivered. */
    if (call->half_closed && !call->done && call->pending <= 1 && (!st || !st->open))
        grpc_finish(call, GRPC_OK, NULL);
}

static void batch_done(gcall *call, grpc_op *base, const completion *cp)
{
    batch_op *op = (batch_op *)base;
    call->c->srv->m.appends++;
    if (cp->rc == 0)
        batch_respond(call, op->corr, op->corr_structured, op->stream, op->expected_case,
                      op->expected_rev, &cp->res, NULL);
    else
        batch_fail(call, op->corr, op->corr_structured, op->stream, op->expected_case,
                   op->expected_rev, cp->rc, cp->msg, cp->res.current_revision);
    batch_maybe_end(call);
}

/* The last part of batch `b` arrived: append it. */
static void batch_submit(gcall *call, batch *b)
{
    server *s = call->c->srv;
    if (b->deadline_us && time_now_us() > b->deadline_us) {
        batch_fail(call, b->corr, b->corr_structured, b->stream, b->expected_case,
                   b->expected_rev, 1, "the batch's deadline passed before it was complete", 0);
        return;
    }
    if (b->nevents == 0) {
        stele_append_result res = {.last_revision = STELE_NONE, .last_position = STELE_NONE};
        stele_stream_info info;
        if (stele_stream_head(s->db, b->stream, &info) == 0 && !info.deleted)
            res.last_revision = info.last_revision;
        batch_respond(call, b->corr, b->corr_structured, b->stream, b->expected_case,
                      b->expected_rev, &res, NULL);
        return;
    }
    stele_event_in *evs = calloc(b->nevents, sizeof *evs);
    uint8_t(*ids)[16] = calloc(b->nevents, 16);
    batch_op *op = calloc(1, sizeof *op);
    if (!evs || !ids || !op) {
        free(evs);
        free(ids);
        free(op);
        batch_fail(call, b->corr, b->corr_structured, b->stream, b->expected_case,
                   b->expected_rev, STELE_ENOMEM, "out of memory", 0);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->kept.n; i++) {
        const BatchAppendReq *part = b->kept.msgs[i];
        for (size_t j = 0; j < part->n_proposed_messages; j++, k++) {
            BatchProposedMessage *pm = part->proposed_messages[j];
            char why[300];
            const char *missing = NULL;
            if (event_in(k, pm->id, (void **)pm->metadata, pm->n_metadata, &pm->data,
                         &pm->custom_metadata, &evs[k], ids[k], why, sizeof why, &missing)) {
                batch_fail(call, b->corr, b->corr_structured, b->stream, b->expected_case,
                           b->expected_rev, STELE_EINVAL, why, 0);
                free(evs);
                free(ids);
                free(op);
                return;
            }
        }
    }
    if (is_metastream(b->stream)) {
        char why[512];
        uint64_t version;
        int rc = meta_append(s, b->stream, b->expected, evs, b->nevents, &version, why, sizeof why);
        free(evs);
        free(ids);
        free(op);
        if (rc == 0) {
            stele_append_result res = {.last_revision = version, .last_position = STELE_NONE};
            batch_respond(call, b->corr, b->corr_structured, b->stream, b->expected_case,
                          b->expected_rev, &res, NULL);
        } else {
            batch_fail(call, b->corr, b->corr_structured, b->stream, b->expected_case,
                       b->expected_rev, rc, why, version);
        }
        return;
    }
    op->base.done = batch_done;
    memcpy(op->corr, b->corr, 16);
    op->corr_structured = b->corr_structured;
    snprintf(op->stream, sizeof op->stream, "%s", b->stream);
    op->expected_case = b->expected_case;
    op->expected_rev = b->expected_rev;
    s->m.append_events += b->nevents;
    s->m.append_bytes += b->bytes;
    int rc = grpc_append(call, &op->base, b->stream, b->expected, evs, b->nevents);
    free(evs);
    free(ids);
    if (rc)
        batch_fail(call, b->corr, b->corr_structured, b->stream, b->expected_case,
                   b->expected_rev, rc, stele_errmsg(), 0);
}

static void batch_msg(gcall *call, ProtobufCMessage *msg)
{
    BatchAppendReq *req = (BatchAppendReq *)msg;
    batch_st *st = grpc_state(call, sizeof *st);
    if (!st)
        return;
    uint8_t corr[16];
    if (grpc_uuid_in(req->correlation_id, corr) != 0) {
        grpc_fail_code(call, "INVALID_ARGUMENT",
                       "BatchAppend: every request needs a correlation id");
        return;
    }
    batch **pp = &st->open;
    while (*pp && memcmp((*pp)->corr, corr, 16))
        pp = &(*pp)->next;
    batch *b = *pp;
    if (!b) {
        if (!req->options) {
            grpc_fail_code(call, "INVALID_ARGUMENT",
                        "BatchAppend: the first request of a batch must carry its options");
            return;
        }
        if (st->nopen >= MAX_OPEN_BATCHES) {
            grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "BatchAppend: too many unfinished batches");
            return;
        }
        b = calloc(1, sizeof *b);
        if (!b) {
            grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        memcpy(b->corr, corr, 16);
        b->corr_structured =
            req->correlation_id->value_case == EVENT_STORE__CLIENT__UUID__VALUE_STRUCTURED;
        if (grpc_stream_name(call, req->options->stream_identifier, b->stream, sizeof b->stream)) {
            free(b);
            return;
        }
        b->expected_case = (int)req->options->expected_stream_position_case;
        b->expected_rev = req->options->stream_position;
        b->expected = expected_of(b->expected_case, b->expected_rev);
        if (req->options->deadline_option_case ==
                EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__DEADLINE_OPTION_DEADLINE_21_10_0 &&
            req->options->deadline_21_10_0)
            b->deadline_us = req->options->deadline_21_10_0->seconds * 1000000 +
                             req->options->deadline_21_10_0->nanos / 1000;
        else if (req->options->deadline_option_case ==
                     EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__DEADLINE_OPTION_DEADLINE &&
                 req->options->deadline)
            b->deadline_us = time_now_us() + req->options->deadline->seconds * 1000000 +
                             req->options->deadline->nanos / 1000;
        b->next = st->open;
        st->open = b;
        st->nopen++;
        pp = &st->open;
    }
    for (size_t i = 0; i < req->n_proposed_messages; i++) {
        BatchProposedMessage *pm = req->proposed_messages[i];
        const char *type = map_get((void *)pm->metadata, pm->n_metadata, "type");
        b->bytes += event_size(type, &pm->data, &pm->custom_metadata);
    }
    b->nevents += req->n_proposed_messages;
    if (b->bytes > grpc_max_append_size(call->c->srv)) {
        *pp = b->next;
        st->nopen--;
        char m[160];
        snprintf(m, sizeof m, "the append is larger than the server's limit of %llu bytes",
                 (unsigned long long)grpc_max_append_size(call->c->srv));
        batch_fail(call, b->corr, b->corr_structured, b->stream, b->expected_case,
                   b->expected_rev, STELE_ETOOBIG, m, 0);
        batch_free(b);
        return;
    }
    if (req->n_proposed_messages && grpc_kept_add(call, &b->kept, req))
        return;
    if (req->is_final) {
        *pp = b->next;
        st->nopen--;
        batch_submit(call, b);
        batch_free(b); /* with the messages it kept */
    }
}

static void batch_end(gcall *call)
{
    /* Unfinished batches can never complete now: drop them. */
    batch_st *st = call->st;
    if (st)
        while (st->open) {
            batch *b = st->open;
            st->open = b->next;
            batch_free(b);
        }
    if (!call->pending)
        grpc_finish(call, GRPC_OK, NULL);
}

/* ------------------------------------------------------------ Delete, Tombstone */

static void delete_common(gcall *call, int tomb, const StreamIdentifier *sid, int which,
                          uint64_t rev)
{
    char stream[1024];
    if (grpc_stream_name(call, sid, stream, sizeof stream))
        return;
    int64_t expected = expected_of(which, rev);
    if (expected == -100) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "expected revision is out of range");
        return;
    }
    server *s = call->c->srv;
    uint64_t current = STELE_NONE;
    /* Deletes are rare: done synchronously (one fsync) on the loop, as in
     * the HTTP API. */
    int rc = tomb ? stele_tombstone_stream(s->db, stream, expected, &current)
                  : stele_delete_stream(s->db, stream, expected, &current);
    if (rc == STELE_EWRONGREV) {
        char exp[32], act[32];
        snprintf(exp, sizeof exp, "%lld", (long long)expected);
        grpc_trailer(call, "expected-version", exp);
        if (current != STELE_NONE) {
            snprintf(act, sizeof act, "%llu", (unsigned long long)current);
            grpc_trailer(call, "actual-version", act);
        }
        grpc_fail_stele(call, rc, stele_errmsg(), stream); /* exception, stream-name */
        return;
    }
    if (rc) {
        grpc_fail_stele(call, rc, stele_errmsg(), stream);
        return;
    }
    PbEmpty e = EVENT_STORE__CLIENT__EMPTY__INIT;
    if (tomb) {
        EventStore__Client__Streams__TombstoneResp r = EVENT_STORE__CLIENT__STREAMS__TOMBSTONE_RESP__INIT;
        r.position_option_case = EVENT_STORE__CLIENT__STREAMS__TOMBSTONE_RESP__POSITION_OPTION_NO_POSITION;
        r.no_position = &e;
        grpc_send(call, &r.base);
    } else {
        EventStore__Client__Streams__DeleteResp r = EVENT_STORE__CLIENT__STREAMS__DELETE_RESP__INIT;
        r.position_option_case = EVENT_STORE__CLIENT__STREAMS__DELETE_RESP__POSITION_OPTION_NO_POSITION;
        r.no_position = &e;
        grpc_send(call, &r.base);
    }
    grpc_finish(call, GRPC_OK, NULL);
}

static void delete_msg(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Streams__DeleteReq *req = (void *)msg;
    if (!req->options) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Delete: options are required");
        return;
    }
    delete_common(call, 0, req->options->stream_identifier,
                  (int)req->options->expected_stream_revision_case, req->options->revision);
}

static void tombstone_msg(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Streams__TombstoneReq *req = (void *)msg;
    if (!req->options) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Tombstone: options are required");
        return;
    }
    delete_common(call, 1, req->options->stream_identifier,
                  (int)req->options->expected_stream_revision_case, req->options->revision);
}

/* ------------------------------------------------------------ the table */

const grpc_method grpc_streams_methods[] = {
    {.path = "/event_store.client.streams.Streams/Read",
     .req = &event_store__client__streams__read_req__descriptor,
     .server_streaming = 1,
     .on_msg = grpc_read_msg,
     .on_more = grpc_read_more,
     .on_close = grpc_read_close},
    {.path = "/event_store.client.streams.Streams/Append",
     .req = &event_store__client__streams__append_req__descriptor,
     .client_streaming = 1,
     .on_msg = append_msg,
     .on_end = append_end,
     .on_close = append_close},
    {.path = "/event_store.client.streams.Streams/BatchAppend",
     .req = &event_store__client__streams__batch_append_req__descriptor,
     .client_streaming = 1,
     .server_streaming = 1,
     .on_msg = batch_msg,
     .on_end = batch_end,
     .on_close = batch_close},
    {.path = "/event_store.client.streams.Streams/Delete",
     .req = &event_store__client__streams__delete_req__descriptor,
     .on_msg = delete_msg},
    {.path = "/event_store.client.streams.Streams/Tombstone",
     .req = &event_store__client__streams__tombstone_req__descriptor,
     .on_msg = tombstone_msg},
};
const size_t grpc_streams_nmethods = sizeof grpc_streams_methods / sizeof grpc_streams_methods[0];
