/*
 * grpc_projections.c - event_store.client.projections.Projections, so the
 * official clients manage projections (createProjection, getProjection-
 * State, listProjections, enable/disable/reset/delete ...): each method is
 * one libstele projection call (docs/projections.md).
 *
 * Mapping: Create's continuous mode is a continuous projection (its
 * emit_enabled kept; track_emitted_streams is always on in Stele); one_time
 * has no name in the protocol, so the server names it "onetime-<uuid>";
 * transient is run as a one-time projection under the given name (Stele
 * has no transient queries). Statistics streams one Details per
 * projection (by name, all, or by mode). State and Result convert the
 * stored JSON into google.protobuf.Value. Errors carry KurrentDB's status
 * codes: NOT_FOUND for an unknown projection, ALREADY_EXISTS,
 * INVALID_ARGUMENT with the query's error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google_types.pb-c.h"
#include "grpc.h"
#include "json_doc.h"
#include "projections.pb-c.h"
#include "shared.pb-c.h"

static void fail(gcall *call, int rc)
{
    const char *m = stele_errmsg();
    if (rc == STELE_ENOTFOUND)
        grpc_fail_code(call, "PROJECTION_NOT_FOUND", m);
    else if (rc == STELE_EEXISTS)
        grpc_fail_code(call, "PROJECTION_EXISTS", m);
    else if (rc == STELE_ETOOBIG) /* not an append: no append-size trailers */
        grpc_fail_status(call, rc, m);
    else
        grpc_fail_stele(call, rc, m, NULL);
}

static void ok_empty(gcall *call, const ProtobufCMessageDescriptor *d)
{
    /* every *Resp of this service is an empty message */
    ProtobufCMessage m;
    protobuf_c_message_init(d, &m);
    grpc_send(call, &m);
    grpc_finish(call, GRPC_OK, NULL);
}

/* ------------------------------------------------------------ Create */

static void p_create(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Projections__CreateReq *req = (void *)msg;
    EventStore__Client__Projections__CreateReq__Options *o = req->options;
    if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options are missing");
        return;
    }
    stele_projection_settings s;
    memset(&s, 0, sizeof s);
    s.query = o->query;
    s.query_len = strlen(o->query);
    s.enabled = 1;
    char name[64];
    const char *pname;
    switch (o->mode_case) {
    case EVENT_STORE__CLIENT__PROJECTIONS__CREATE_REQ__OPTIONS__MODE_CONTINUOUS:
        pname = o->continuous ? o->continuous->name : "";
        s.emit_enabled = o->continuous && o->continuous->emit_enabled;
        break;
    case EVENT_STORE__CLIENT__PROJECTIONS__CREATE_REQ__OPTIONS__MODE_TRANSIENT:
        pname = o->transient ? o->transient->name : "";
        s.mode = STELE_PROJ_ONE_TIME;
        break;
    case EVENT_STORE__CLIENT__PROJECTIONS__CREATE_REQ__OPTIONS__MODE_ONE_TIME: {
        uint8_t id[16];
        char u[37];
        for (int i = 0; i < 16; i++)
            id[i] = (uint8_t)rand();
        id[6] = (uint8_t)((id[6] & 0x0f) | 0x40);
        id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
        stele_uuid_format(id, u);
        snprintf(name, sizeof name, "onetime-%s", u);
        pname = name;
        s.mode = STELE_PROJ_ONE_TIME;
        break;
    }
    default:
        grpc_fail_code(call, "INVALID_ARGUMENT",
                       "the mode (one_time, transient, continuous) is missing");
        return;
    }
    int rc = stele_projection_create(call->c->srv->db, pname, &s);
    if (rc) {
        fail(call, rc);
        return;
    }
    ok_empty(call, &event_store__client__projections__create_resp__descriptor);
}

/* ------------------------------------------------------------ Update, Delete, ... */

static void p_update(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Projections__UpdateReq *req = (void *)msg;
    EventStore__Client__Projections__UpdateReq__Options *o = req->options;
    if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options are missing");
        return;
    }
    int emit = o->emit_option_case ==
                       EVENT_STORE__CLIENT__PROJECTIONS__UPDATE_REQ__OPTIONS__EMIT_OPTION_EMIT_ENABLED
                   ? (o->emit_enabled ? 1 : 0)
                   : -1;
    int rc = stele_projection_update(call->c->srv->db, o->name, o->query, strlen(o->query), emit);
    if (rc)
        fail(call, rc);
    else
        ok_empty(call, &event_store__client__projections__update_resp__descriptor);
}

static void p_delete(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Projections__DeleteReq *req = (void *)msg;
    EventStore__Client__Projections__DeleteReq__Options *o = req->options;
    if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options are missing");
        return;
    }
    unsigned flags = (o->delete_emitted_streams ? STELE_PROJ_DELETE_EMITTED : 0) |
                     (o->delete_state_stream || o->delete_checkpoint_stream ? STELE_PROJ_DELETE_STATE : 0);
    int rc = stele_projection_delete(call->c->srv->db, o->name, flags);
    if (rc)
        fail(call, rc);
    else
        ok_empty(call, &event_store__client__projections__delete_resp__descriptor);
}

static void p_enable(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Projections__EnableReq *req = (void *)msg;
    int rc = req->options ? stele_projection_enable(call->c->srv->db, req->options->name)
                          : STELE_EINVAL;
    if (rc)
        fail(call, rc);
    else
        ok_empty(call, &event_store__client__projections__enable_resp__descriptor);
}

static void p_disable(gcall *call, ProtobufCMessage *msg)
{
    /* write_checkpoint: a disable always commits the batch in progress */
    EventStore__Client__Projections__DisableReq *req = (void *)msg;
    int rc = req->options ? stele_projection_disable(call->c->srv->db, req->options->name)
                          : STELE_EINVAL;
    if (rc)
        fail(call, rc);
    else
        ok_empty(call, &event_store__client__projections__disable_resp__descriptor);
}

static void p_reset(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Projections__ResetReq *req = (void *)msg;
    int rc = req->options ? stele_projection_reset(call->c->srv->db, req->options->name)
                          : STELE_EINVAL;
    if (rc)
        fail(call, rc);
    else
        ok_empty(call, &event_store__client__projections__reset_resp__descriptor);
}

static void p_restart(gcall *call, ProtobufCMessage *msg)
{
    (void)msg; /* the subsystem has nothing to restart: projections run on their own */
    EventStore__Client__Empty resp = EVENT_STORE__CLIENT__EMPTY__INIT;
    grpc_send(call, &resp.base);
    grpc_finish(call, GRPC_OK, NULL);
}

/* ------------------------------------------------------------ Statistics */

static void p_statistics(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Projections__StatisticsReq *req = (void *)msg;
    int mode = req->options ? (int)req->options->mode_case : 0;
    stele_db *db = call->c->srv->db;
    stele_projection_info *all = NULL;
    size_t n = 0;
    int rc;
    if (mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_NAME) {
        rc = stele_projection_get(db, req->options->name, &all);
        n = rc ? 0 : 1;
    } else {
        rc = stele_projection_list(db, &all, &n);
    }
    if (rc) {
        fail(call, rc);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const stele_projection_info *p = &all[i];
        int one_time = p->mode == STELE_PROJ_ONE_TIME;
        if ((mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_CONTINUOUS &&
             one_time) ||
            (mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_ONE_TIME &&
             !one_time) ||
            mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_TRANSIENT)
            continue;
        EventStore__Client__Projections__StatisticsResp__Details d =
            EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_RESP__DETAILS__INIT;
        char pos[32], ck[32];
        snprintf(pos, sizeof pos, "C:%llu/P:%llu", (unsigned long long)p->position,
                 (unsigned long long)p->position);
        snprintf(ck, sizeof ck, "C:%llu/P:%llu", (unsigned long long)p->position,
                 (unsigned long long)p->position);
        d.coreprocessingtime = (int64_t)(p->handler_ns / 1000000u);
        d.version = (int64_t)p->epoch;
        d.epoch = (int64_t)p->epoch;
        d.effectivename = (char *)p->name;
        d.name = (char *)p->name;
        d.partitionscached = (int32_t)p->partitions_cached;
        d.status = (char *)p->status;
        d.statereason = (char *)p->fault;
        d.mode = one_time ? "OneTime" : p->mode == STELE_PROJ_INLINE ? "Inline" : "Continuous";
        d.position = pos;
        d.lastcheckpoint = ck;
        d.progress = p->head ? (float)(100.0 * (double)(p->head - p->lag) / (double)p->head) : 100.0f;
        d.eventsprocessedafterrestart = (int64_t)p->events_processed;
        d.checkpointstatus = "";
        EventStore__Client__Projections__StatisticsResp resp =
            EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_RESP__INIT;
        resp.details = &d;
        grpc_send(call, &resp.base);
    }
    stele_projection_info_free(all);
    grpc_finish(call, GRPC_OK, NULL);
}

/* ------------------------------------------------------------ JSON -> Value */

typedef struct pool {
    void **p;
    size_t n, cap;
} pool;

static void *palloc(pool *pl, size_t size)
{
    if (pl->n == pl->cap) {
        size_t nc = pl->cap ? pl->cap * 2 : 64;
        void **np = realloc(pl->p, nc * sizeof *np);
        if (!np)
            return NULL;
        pl->p = np;
        pl->cap = nc;
    }
    void *m = calloc(1, size);
    if (m)
        pl->p[pl->n++] = m;
    return m;
}

/* Hand an existing allocation to the pool (freed on failure too). */
static int pool_keep(pool *pl, void *m)
{
    if (pl->n == pl->cap) {
        size_t nc = pl->cap ? pl->cap * 2 : 64;
        void **np = realloc(pl->p, nc * sizeof *np);
        if (!np) {
            free(m);
            return -1;
        }
        pl->p = np;
        pl->cap = nc;
    }
    pl->p[pl->n++] = m;
    return 0;
}

static void pool_free(pool *pl)
{
    for (size_t i = 0; i < pl->n; i++)
        free(pl->p[i]);
    free(pl->p);
}

/* Token i of d as a Value, allocated in the pool. NULL on ENOMEM. */
static Google__Protobuf__Value *to_value(const json_doc *d, const char *text, int i, pool *pl,
                                         int depth)
{
    Google__Protobuf__Value *v = palloc(pl, sizeof *v);
    if (!v || depth > 64)
        return NULL;
    google__protobuf__value__init(v);
    switch (json_doc_type(d, i)) {
    case JD_NULL:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        break;
    case JD_TRUE:
    case JD_FALSE:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        v->bool_value = json_doc_type(d, i) == JD_TRUE;
        break;
    case JD_NUMBER: {
        size_t off, len;
        json_doc_span(d, i, &off, &len);
        char t[64];
        snprintf(t, sizeof t, "%.*s", (int)(len < 63 ? len : 63), text + off);
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = strtod(t, NULL);
        break;
    }
    case JD_STRING: {
        char *s = json_doc_str(d, i);
        if (!s || pool_keep(pl, s))
            return NULL;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        v->string_value = s;
        break;
    }
    case JD_ARRAY: {
        Google__Protobuf__ListValue *l = palloc(pl, sizeof *l);
        int n = json_doc_size(d, i);
        if (!l)
            return NULL;
        google__protobuf__list_value__init(l);
        l->values = palloc(pl, (size_t)(n ? n : 1) * sizeof *l->values);
        if (!l->values)
            return NULL;
        int j = i + 1;
        for (int k = 0; k < n; k++) {
            if (!(l->values[k] = to_value(d, text, j, pl, depth + 1)))
                return NULL;
            j = json_doc_next(d, j);
        }
        l->n_values = (size_t)n;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v->list_value = l;
        break;
    }
    default: { /* object */
        Google__Protobuf__Struct *st = palloc(pl, sizeof *st);
        int n = json_doc_size(d, i);
        if (!st)
            return NULL;
        google__protobuf__struct__init(st);
        st->fields = palloc(pl, (size_t)(n ? n : 1) * sizeof *st->fields);
        if (!st->fields)
            return NULL;
        int j = i + 1;
        for (int k = 0; k < n; k++) {
            Google__Protobuf__Struct__FieldsEntry *e = palloc(pl, sizeof *e);
            if (!e)
                return NULL;
            google__protobuf__struct__fields_entry__init(e);
            char *key = json_doc_str(d, j);
            if (!key || pool_keep(pl, key))
                return NULL;
            e->key = key;
            if (!(e->value = to_value(d, text, j + 1, pl, depth + 1)))
                return NULL;
            st->fields[k] = e;
            j = json_doc_next(d, j + 1);
        }
        st->n_fields = (size_t)n;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v->struct_value = st;
        break;
    }
    }
    return v;
}

static void state_or_result(gcall *call, const char *name, const char *partition, int result)
{
    char *json = NULL;
    size_t len = 0;
    int rc = stele_projection_state(call->c->srv->db, name, partition, result, &json, &len);
    if (rc) {
        fail(call, rc);
        return;
    }
    pool pl = {0};
    json_doc *d = NULL;
    Google__Protobuf__Value *v = NULL;
    char err[256];
    if (!json) {
        /* no state yet: KurrentDB answers an empty object */
        v = palloc(&pl, sizeof *v);
        Google__Protobuf__Struct *st = palloc(&pl, sizeof *st);
        if (v && st) {
            google__protobuf__value__init(v);
            google__protobuf__struct__init(st);
            v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
            v->struct_value = st;
        }
    } else if (json_doc_parse_max(json, len, 64u << 20, &d, err, sizeof err) == 0) {
        v = to_value(d, json, 0, &pl, 0);
    }
    if (!v) {
        grpc_finish(call, GRPC_INTERNAL, "the state could not be converted");
    } else if (result) {
        EventStore__Client__Projections__ResultResp resp =
            EVENT_STORE__CLIENT__PROJECTIONS__RESULT_RESP__INIT;
        resp.result = v;
        grpc_send(call, &resp.base);
        grpc_finish(call, GRPC_OK, NULL);
    } else {
        EventStore__Client__Projections__StateResp resp =
            EVENT_STORE__CLIENT__PROJECTIONS__STATE_RESP__INIT;
        resp.state = v;
        grpc_send(call, &resp.base);
        grpc_finish(call, GRPC_OK, NULL);
    }
    json_doc_free(d);
    pool_free(&pl);
    stele_free(json);
}

static void p_state(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Projections__StateReq *req = (void *)msg;
    if (!req->options) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options are missing");
        return;
    }
    state_or_result(call, req->options->name, req->options->partition, 0);
}

static void p_result(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Projections__ResultReq *req = (void *)msg;
    if (!req->options) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options are missing");
        return;
    }
    state_or_result(call, req->options->name, req->options->partition, 1);
}

/* ------------------------------------------------------------ the table */

static const char *const create_features[] = {"track_emitted_streams", NULL};

#define P(m) "/event_store.client.projections.Projections/" m
const grpc_method grpc_projections_methods[] = {
    {.path = P("Create"), .req = &event_store__client__projections__create_req__descriptor,
     .features = create_features, .on_msg = p_create},
    {.path = P("Update"), .req = &event_store__client__projections__update_req__descriptor,
     .on_msg = p_update},
    {.path = P("Delete"), .req = &event_store__client__projections__delete_req__descriptor,
     .on_msg = p_delete},
    {.path = P("Statistics"), .req = &event_store__client__projections__statistics_req__descriptor,
     .server_streaming = 1, .on_msg = p_statistics},
    {.path = P("Disable"), .req = &event_store__client__projections__disable_req__descriptor,
     .on_msg = p_disable},
    {.path = P("Enable"), .req = &event_store__client__projections__enable_req__descriptor,
     .on_msg = p_enable},
    {.path = P("Reset"), .req = &event_store__client__projections__reset_req__descriptor,
     .on_msg = p_reset},
    {.path = P("State"), .req = &event_store__client__projections__state_req__descriptor,
     .on_msg = p_state},
    {.path = P("Result"), .req = &event_store__client__projections__result_req__descriptor,
     .on_msg = p_result},
    {.path = P("RestartSubsystem"), .req = &event_store__client__empty__descriptor,
     .on_msg = p_restart},
};
#undef P
const size_t grpc_projections_nmethods =
    sizeof grpc_projections_methods / sizeof grpc_projections_methods[0];
