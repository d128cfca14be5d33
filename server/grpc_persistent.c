/*
 * grpc_persistent.c - event_store.client.persistent_subscriptions.
 * PersistentSubscriptions over libstele's consumer groups (stele_group_*,
 * docs/consumer-groups.md): Create, Update, Delete, Read (a consumer:
 * events out, acks and nacks in, on one bidirectional call), GetInfo,
 * List, ReplayParked, RestartSubsystem.
 *
 * Read connects a consumer named after the client's address and the call
 * ("127.0.0.1:50312#7"), answers with a confirmation ("<stream>::<group>"),
 * then delivers what stele_consumer_read() gives it, at most the request's
 * buffer_size per read and only while the call's queue is short (grpc.h),
 * so a consumer that stops reading keeps at most its in-flight events,
 * which time out and go to other consumers. Acks and nacks name events by
 * id. A commit or any group news (stele_group_watch) wakes every consumer
 * call. Closing the call (or the connection) closes the consumer: its
 * in-flight events go back to the group at once.
 *
 * Settings: max_retry_count, message timeout (ms or ticks), checkpoint
 * after (ms or ticks), min/max checkpoint counts map one to one; the
 * group's buffer is the larger of live_buffer_size and history_buffer_size;
 * RoundRobin and Pinned map to Stele's strategies and DispatchToSingle to
 * RoundRobin; PinnedByCorrelation is refused. resolve_links,
 * extra_statistics, read_batch_size and max_subscriber_count have no
 * counterpart and are ignored (GetInfo reports them as 0 / false).
 * KurrentDB's errors become its `exception` trailers
 * (persistent-subscription-does-not-exist, -exists, -dropped), from which
 * the clients build their typed errors.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "grpc.h"
#include "persistent.pb-c.h"

#define PS(x) EVENT_STORE__CLIENT__PERSISTENT_SUBSCRIPTIONS__##x
typedef EventStore__Client__PersistentSubscriptions__ReadReq PsReadReq;
typedef EventStore__Client__PersistentSubscriptions__ReadResp PsReadResp;
typedef EventStore__Client__PersistentSubscriptions__ReadResp__ReadEvent PsReadEvent;
typedef EventStore__Client__PersistentSubscriptions__ReadResp__ReadEvent__RecordedEvent PsRecorded;
typedef EventStore__Client__PersistentSubscriptions__ReadResp__ReadEvent__RecordedEvent__MetadataEntry PsMeta;
typedef EventStore__Client__PersistentSubscriptions__SubscriptionInfo PsInfo;
typedef EventStore__Client__PersistentSubscriptions__SubscriptionInfo__ConnectionInfo PsConn;

#define MAX_BUFFER 10000

/* ------------------------------------------------------------ errors */

static void fail_group(gcall *call, int rc, const char *stream, const char *group)
{
    if (rc != STELE_ENOTFOUND && rc != STELE_EEXISTS) {
        grpc_fail_stele(call, rc, stele_errmsg(), stream);
        return;
    }
    /* Before grpc_fail_code's exception trailer: the group's names, which
     * the clients put in their typed errors. */
    grpc_trailer(call, "stream-name", stream ? stream : "$all");
    grpc_trailer(call, "group-name", group);
    grpc_fail_code(call, rc == STELE_ENOTFOUND ? "GROUP_NOT_FOUND" : "GROUP_EXISTS",
                   stele_errmsg());
}

/* The stream of a request: a stream identifier, or $all (stream NULL).
 * 0, or -1 with a status sent. */
static int which_stream(gcall *call, int is_all, const EventStore__Client__StreamIdentifier *id,
                        char *out, size_t cap, const char **stream)
{
    if (is_all) {
        *stream = NULL;
        return 0;
    }
    if (grpc_stream_name(call, id, out, cap))
        return -1;
    *stream = strcmp(out, "$all") ? out : NULL;
    return 0;
}

static int check_group(gcall *call, const char *group)
{
    if (!group || !*group) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "a group name is required");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ settings */

/* KurrentDB's settings as Stele's. Create and Update carry the same fields
 * in different message types, hence macros. Values Stele cannot take are
 * left to stele_group_create/update, which say which and why. */
#define SETTINGS_NEGATIVE(s)                                                                  \
    ((s)->max_retry_count < 0 || (s)->min_checkpoint_count < 0 ||                             \
     (s)->max_checkpoint_count < 0 || (s)->live_buffer_size < 0 || (s)->history_buffer_size < 0)

#define SETTINGS_APPLY(st, s)                                                                 \
    do {                                                                                      \
        (st)->max_retries = (uint32_t)(s)->max_retry_count;                                   \
        (st)->checkpoint_min_count = (uint32_t)(s)->min_checkpoint_count;                     \
        if ((s)->max_checkpoint_count)                                                        \
            (st)->checkpoint_max_count = (uint32_t)(s)->max_checkpoint_count;                 \
        int32_t buf_ = (s)->live_buffer_size > (s)->history_buffer_size                       \
                           ? (s)->live_buffer_size                                            \
                           : (s)->history_buffer_size;                                        \
        if (buf_)                                                                             \
            (st)->buffer_size = (uint32_t)buf_;                                               \
        /* oneof message_timeout: 14 milliseconds, 4 .NET ticks */                            \
        if ((int)(s)->message_timeout_case == 14 && (s)->message_timeout_ms > 0)              \
            (st)->message_timeout_ms = (uint32_t)(s)->message_timeout_ms;                     \
        else if ((int)(s)->message_timeout_case == 4 && (s)->message_timeout_ticks > 0)       \
            (st)->message_timeout_ms = (uint32_t)((s)->message_timeout_ticks / 10000);        \
        /* oneof checkpoint_after: 15 milliseconds, 6 ticks */                                \
        if ((int)(s)->checkpoint_after_case == 15 && (s)->checkpoint_after_ms >= 0)           \
            (st)->checkpoint_after_ms = (uint32_t)(s)->checkpoint_after_ms;                   \
        else if ((int)(s)->checkpoint_after_case == 6 && (s)->checkpoint_after_ticks >= 0)    \
            (st)->checkpoint_after_ms = (uint32_t)((s)->checkpoint_after_ticks / 10000);      \
        /* ConsumerStrategy: 0 DispatchToSingle, 1 RoundRobin, 2 Pinned */                    \
        (st)->strategy = (int)(s)->named_consumer_strategy == 2 ? STELE_PINNED : STELE_ROUND_ROBIN; \
    } while (0)

/* A $all group's filter, borrowed from the request. */
static int filter_from(gcall *call,
                       const EventStore__Client__PersistentSubscriptions__CreateReq__AllOptions__FilterOptions *f,
                       stele_filter *sf)
{
    memset(sf, 0, sizeof *sf);
    const EventStore__Client__PersistentSubscriptions__CreateReq__AllOptions__FilterOptions__Expression *x =
        f->filter_case == PS(CREATE_REQ__ALL_OPTIONS__FILTER_OPTIONS__FILTER_STREAM_IDENTIFIER)
            ? f->stream_identifier
            : f->filter_case == PS(CREATE_REQ__ALL_OPTIONS__FILTER_OPTIONS__FILTER_EVENT_TYPE)
                  ? f->event_type
                  : NULL;
    int on_stream = f->filter_case == PS(CREATE_REQ__ALL_OPTIONS__FILTER_OPTIONS__FILTER_STREAM_IDENTIFIER);
    if (!x) {
        grpc_fail_code(call, "INVALID_ARGUMENT",
                       "a filter needs a stream name or event type expression");
        return -1;
    }
    if (x->n_prefix) {
        if (on_stream) {
            sf->stream_prefixes = (const char *const *)x->prefix;
            sf->n_stream_prefixes = x->n_prefix;
        } else {
            sf->type_prefixes = (const char *const *)x->prefix;
            sf->n_type_prefixes = x->n_prefix;
        }
    } else if (x->regex && *x->regex) {
        if (on_stream)
            sf->stream_regex = x->regex;
        else
            sf->type_regex = x->regex;
    }
    return 0;
}

static void create_msg(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__PersistentSubscriptions__CreateReq *req = (void *)msg;
    EventStore__Client__PersistentSubscriptions__CreateReq__Options *o = req->options;
    if (!o || !o->settings) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Create: options and settings are required");
        return;
    }
    if (check_group(call, o->group_name))
        return;
    char name[1024];
    const char *stream;
    stele_group_settings st;
    stele_group_settings_init(&st);
    stele_filter sf;
    if (o->stream_option_case == PS(CREATE_REQ__OPTIONS__STREAM_OPTION_STREAM)) {
        if (which_stream(call, 0, o->stream->stream_identifier, name, sizeof name, &stream))
            return;
        st.start = o->stream->revision_option_case == PS(CREATE_REQ__STREAM_OPTIONS__REVISION_OPTION_REVISION)
                       ? o->stream->revision
                   : o->stream->revision_option_case == PS(CREATE_REQ__STREAM_OPTIONS__REVISION_OPTION_END)
                       ? STELE_END
                       : 0;
    } else if (o->stream_option_case == PS(CREATE_REQ__OPTIONS__STREAM_OPTION_ALL)) {
        stream = NULL;
        st.start = o->all->all_option_case == PS(CREATE_REQ__ALL_OPTIONS__ALL_OPTION_POSITION) && o->all->position
                       ? o->all->position->commit_position
                   : o->all->all_option_case == PS(CREATE_REQ__ALL_OPTIONS__ALL_OPTION_END)
                       ? STELE_END
                       : 0;
        if (o->all->filter_option_case == PS(CREATE_REQ__ALL_OPTIONS__FILTER_OPTION_FILTER)) {
            if (filter_from(call, o->all->filter, &sf))
                return;
            st.filter = &sf;
        }
    } else {
        /* The older form: the stream in options, the start in settings
         * (UINT64_MAX: the end). */
        if (which_stream(call, 0, o->stream_identifier, name, sizeof name, &stream))
            return;
        st.start = o->settings->revision; /* STELE_END == UINT64_MAX */
    }
    if (SETTINGS_NEGATIVE(o->settings)) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "settings may not be negative");
        return;
    }
    SETTINGS_APPLY(&st, o->settings);
    const char *cs = o->settings->consumer_strategy;
    if (cs && *cs) {
        if (!strcmp(cs, "Pinned"))
            st.strategy = STELE_PINNED;
        else if (!strcmp(cs, "RoundRobin") || !strcmp(cs, "DispatchToSingle"))
            st.strategy = STELE_ROUND_ROBIN;
        else {
            char m[200];
            snprintf(m, sizeof m, "consumer strategy %.60s is not supported (RoundRobin, Pinned, DispatchToSingle)", cs);
            grpc_fail_code(call, "INVALID_ARGUMENT", m);
            return;
        }
    }
    int rc = stele_group_create(call->c->srv->db, stream, o->group_name, &st);
    if (rc) {
        fail_group(call, rc, stream, o->group_name);
        return;
    }
    EventStore__Client__PersistentSubscriptions__CreateResp r = PS(CREATE_RESP__INIT);
    grpc_send(call, &r.base);
    grpc_finish(call, GRPC_OK, NULL);
}

static void update_msg(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__PersistentSubscriptions__UpdateReq *req = (void *)msg;
    EventStore__Client__PersistentSubscriptions__UpdateReq__Options *o = req->options;
    if (!o || !o->settings) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Update: options and settings are required");
        return;
    }
    if (check_group(call, o->group_name))
        return;
    char name[1024];
    const char *stream;
    uint64_t start = 0;
    if (o->stream_option_case == PS(UPDATE_REQ__OPTIONS__STREAM_OPTION_STREAM)) {
        if (which_stream(call, 0, o->stream->stream_identifier, name, sizeof name, &stream))
            return;
        start = o->stream->revision_option_case == PS(UPDATE_REQ__STREAM_OPTIONS__REVISION_OPTION_REVISION)
                    ? o->stream->revision
                : o->stream->revision_option_case == PS(UPDATE_REQ__STREAM_OPTIONS__REVISION_OPTION_END)
                    ? STELE_END
                    : 0;
    } else if (o->stream_option_case == PS(UPDATE_REQ__OPTIONS__STREAM_OPTION_ALL)) {
        stream = NULL;
        start = o->all->all_option_case == PS(UPDATE_REQ__ALL_OPTIONS__ALL_OPTION_POSITION) && o->all->position
                    ? o->all->position->commit_position
                : o->all->all_option_case == PS(UPDATE_REQ__ALL_OPTIONS__ALL_OPTION_END)
                    ? STELE_END
                    : 0;
    } else {
        if (which_stream(call, 0, o->stream_identifier, name, sizeof name, &stream))
            return;
        start = o->settings->revision;
    }
    if (SETTINGS_NEGATIVE(o->settings)) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "settings may not be negative");
        return;
    }
    /* The filter cannot change: keep the group's own. */
    stele_group_info *cur = NULL;
    int rc = stele_group_get(call->c->srv->db, stream, o->group_name, &cur);
    if (rc) {
        fail_group(call, rc, stream, o->group_name);
        return;
    }
    stele_group_settings st = cur->settings;
    st.start = start;
    SETTINGS_APPLY(&st, o->settings);
    rc = stele_group_update(call->c->srv->db, stream, o->group_name, &st);
    stele_group_info_free(cur);
    if (rc) {
        fail_group(call, rc, stream, o->group_name);
        return;
    }
    EventStore__Client__PersistentSubscriptions__UpdateResp r = PS(UPDATE_RESP__INIT);
    grpc_send(call, &r.base);
    grpc_finish(call, GRPC_OK, NULL);
}

static void delete_msg(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__PersistentSubscriptions__DeleteReq *req = (void *)msg;
    EventStore__Client__PersistentSubscriptions__DeleteReq__Options *o = req->options;
    if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Delete: options are required");
        return;
    }
    char name[1024];
    const char *stream;
    if (check_group(call, o->group_name) ||
        which_stream(call, o->stream_option_case == PS(DELETE_REQ__OPTIONS__STREAM_OPTION_ALL),
                     o->stream_identifier, name, sizeof name, &stream))
        return;
    int rc = stele_group_delete(call->c->srv->db, stream, o->group_name);
    if (rc) {
        fail_group(call, rc, stream, o->group_name);
        return;
    }
    EventStore__Client__PersistentSubscriptions__DeleteResp r = PS(DELETE_RESP__INIT);
    grpc_send(call, &r.base);
    grpc_finish(call, GRPC_OK, NULL);
}

/* ------------------------------------------------------------ info */

/* A position or revision as KurrentDB writes them in SubscriptionInfo:
 * "C:<commit>/P:<prepare>" for $all, the number for a stream; "" when
 * there is none. */
static void pos_text(char *out, size_t cap, int all, uint64_t v)
{
    if (v == STELE_NONE)
        out[0] = 0;
    else if (all)
        snprintf(out, cap, "C:%llu/P:%llu", (unsigned long long)v, (unsigned long long)v);
    else
        snprintf(out, cap, "%llu", (unsigned long long)v);
}

typedef struct info_mem {
    PsInfo info;
    char last_cp[64], last_known[64], start[64];
    PsConn *conns;
    PsConn **conn_ptrs;
} info_mem;

static int32_t i32(uint64_t v) { return v > INT32_MAX ? INT32_MAX : (int32_t)v; }

/* The last event covered by resume point `next` (a position for $all, a
 * revision otherwise): STELE_NONE before the first. Positions are the
 * store's: stele_position_before, never next - 1. */
static uint64_t covered_by(stele_db *db, int all, uint64_t next)
{
    if (next == STELE_NONE || next == 0)
        return STELE_NONE;
    return all ? stele_position_before(db, next) : next - 1;
}

static int build_info(stele_db *db, const stele_group_info *g, info_mem *m)
{
    PsInfo init = PS(SUBSCRIPTION_INFO__INIT);
    m->info = init;
    PsInfo *p = &m->info;
    int all = !strcmp(g->stream, "$all");
    p->event_source = (char *)g->stream;
    p->group_name = (char *)g->group;
    p->status = "Live";
    m->conns = calloc(g->n_consumers ? g->n_consumers : 1, sizeof *m->conns);
    m->conn_ptrs = calloc(g->n_consumers ? g->n_consumers : 1, sizeof *m->conn_ptrs);
    if (!m->conns || !m->conn_ptrs)
        return -1;
    for (size_t i = 0; i < g->n_consumers; i++) {
        PsConn ci = PS(SUBSCRIPTION_INFO__CONNECTION_INFO__INIT);
        const stele_consumer_info *c = &g->consumers[i];
        ci.from = (char *)c->name;
        ci.connection_name = (char *)c->name;
        ci.total_items = (int64_t)c->delivered;
        ci.in_flight_messages = i32(c->in_flight);
        ci.available_slots = c->in_flight < g->settings.max_in_flight
                                 ? i32(g->settings.max_in_flight - c->in_flight)
                                 : 0;
        m->conns[i] = ci;
        m->conn_ptrs[i] = &m->conns[i];
    }
    p->n_connections = g->n_consumers;
    p->connections = m->conn_ptrs;
    p->total_items = (int64_t)g->delivered;
    /* The checkpoint is where the group resumes: the last checkpointed
     * event is the one before it. */
    pos_text(m->last_cp, sizeof m->last_cp, all, covered_by(db, all, g->checkpoint_saved));
    pos_text(m->last_known, sizeof m->last_known, all, covered_by(db, all, g->read_position));
    pos_text(m->start, sizeof m->start, all, g->settings.start);
    p->last_checkpointed_event_position = m->last_cp;
    p->last_known_event_position = m->last_known;
    p->start_from = m->start;
    p->message_timeout_milliseconds = i32(g->settings.message_timeout_ms);
    p->max_retry_count = i32(g->settings.max_retries);
    p->live_buffer_size = i32(g->settings.buffer_size);
    p->buffer_size = i32(g->settings.buffer_size);
    p->check_point_after_milliseconds = i32(g->settings.checkpoint_after_ms);
    p->min_check_point_count = i32(g->settings.checkpoint_min_count);
    p->max_check_point_count = i32(g->settings.checkpoint_max_count);
    p->live_buffer_count = (int64_t)g->waiting;
    p->total_in_flight_messages = i32(g->in_flight);
    p->outstanding_messages_count = i32(g->in_flight);
    p->named_consumer_strategy = g->settings.strategy == STELE_PINNED ? "Pinned" : "RoundRobin";
    p->parked_message_count = (int64_t)g->parked;
    return 0;
}

static void info_mem_free(info_mem *m)
{
    free(m->conns);
    free(m->conn_ptrs);
}

static void get_info_msg(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__PersistentSubscriptions__GetInfoReq *req = (void *)msg;
    EventStore__Client__PersistentSubscriptions__GetInfoReq__Options *o = req->options;
    if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "GetInfo: options are required");
        return;
    }
    char name[1024];
    const char *stream;
    if (check_group(call, o->group_name) ||
        which_stream(call, o->stream_option_case == PS(GET_INFO_REQ__OPTIONS__STREAM_OPTION_ALL),
                     o->stream_identifier, name, sizeof name, &stream))
        return;
    stele_group_info *g;
    int rc = stele_group_get(call->c->srv->db, stream, o->group_name, &g);
    if (rc) {
        fail_group(call, rc, stream, o->group_name);
        return;
    }
    info_mem m;
    memset(&m, 0, sizeof m);
    if (build_info(call->c->srv->db, g, &m)) {
        info_mem_free(&m);
        stele_group_info_free(g);
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    EventStore__Client__PersistentSubscriptions__GetInfoResp r = PS(GET_INFO_RESP__INIT);
    r.subscription_info = &m.info;
    grpc_send(call, &r.base);
    info_mem_free(&m);
    stele_group_info_free(g);
    grpc_finish(call, GRPC_OK, NULL);
}

static void list_msg(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__PersistentSubscriptions__ListReq *req = (void *)msg;
    char name[1024];
    const char *only = NULL; /* NULL: every group */
    if (req->options && req->options->list_option_case == PS(LIST_REQ__OPTIONS__LIST_OPTION_LIST_FOR_STREAM)) {
        const EventStore__Client__PersistentSubscriptions__ListReq__StreamOption *so =
            req->options->list_for_stream;
        const char *stream;
        if (which_stream(call, so->stream_option_case == PS(LIST_REQ__STREAM_OPTION__STREAM_OPTION_ALL),
                         so->stream, name, sizeof name, &stream))
            return;
        only = stream ? stream : "$all";
    }
    stele_group_info *gs = NULL;
    size_t n = 0;
    int rc = stele_group_list(call->c->srv->db, &gs, &n);
    if (rc) {
        grpc_fail_stele(call, rc, stele_errmsg(), NULL);
        return;
    }
    info_mem *ms = calloc(n ? n : 1, sizeof *ms);
    PsInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    size_t k = 0;
    int oom = !ms || !ptrs;
    for (size_t i = 0; i < n && !oom; i++) {
        if (only && strcmp(gs[i].stream, only))
            continue;
        if (build_info(call->c->srv->db, &gs[i], &ms[k])) {
            oom = 1;
            break;
        }
        ptrs[k] = &ms[k].info;
        k++;
    }
    if (!oom) {
        EventStore__Client__PersistentSubscriptions__ListResp r = PS(LIST_RESP__INIT);
        r.n_subscriptions = k;
        r.subscriptions = ptrs;
        grpc_send(call, &r.base);
    }
    for (size_t i = 0; ms && i < n; i++)
        info_mem_free(&ms[i]);
    free(ms);
    free(ptrs);
    stele_group_info_free(gs);
    if (oom)
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    else
        grpc_finish(call, GRPC_OK, NULL);
}

static void replay_msg(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__PersistentSubscriptions__ReplayParkedReq *req = (void *)msg;
    EventStore__Client__PersistentSubscriptions__ReplayParkedReq__Options *o = req->options;
    if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "ReplayParked: options are required");
        return;
    }
    char name[1024];
    const char *stream;
    if (check_group(call, o->group_name) ||
        which_stream(call, o->stream_option_case == PS(REPLAY_PARKED_REQ__OPTIONS__STREAM_OPTION_ALL),
                     o->stream_identifier, name, sizeof name, &stream))
        return;
    uint64_t max = o->stop_at_option_case == PS(REPLAY_PARKED_REQ__OPTIONS__STOP_AT_OPTION_STOP_AT) && o->stop_at > 0
                       ? (uint64_t)o->stop_at
                       : 0;
    int rc = stele_group_replay_parked(call->c->srv->db, stream, o->group_name, max, NULL);
    if (rc) {
        fail_group(call, rc, stream, o->group_name);
        return;
    }
    EventStore__Client__PersistentSubscriptions__ReplayParkedResp r = PS(REPLAY_PARKED_RESP__INIT);
    grpc_send(call, &r.base);
    grpc_finish(call, GRPC_OK, NULL);
}

/* Nothing to restart: every group keeps running. */
static void restart_msg(gcall *call, ProtobufCMessage *msg)
{
    (void)msg;
    EventStore__Client__Empty r = EVENT_STORE__CLIENT__EMPTY__INIT;
    grpc_send(call, &r.base);
    grpc_finish(call, GRPC_OK, NULL);
}

/* ------------------------------------------------------------ Read (a consumer) */

typedef struct ps_st {
    stele_consumer *cons;
    char stream[1024]; /* "$all" for $all */
    char group[256];
    int uuid_string;
    size_t buffer;
    stele_batch *batch;
    size_t idx;
} ps_st;

static void send_ps_event(gcall *call, const stele_event *e, uint32_t retries, int uuid_string)
{
    char idtext[37];
    EventStore__Client__UUID uuid = EVENT_STORE__CLIENT__UUID__INIT;
    EventStore__Client__UUID__Structured su = EVENT_STORE__CLIENT__UUID__STRUCTURED__INIT;
    if (uuid_string) {
        stele_uuid_format(e->id, idtext); /* a UUID to gRPC clients: grpc_read.c */
        uuid.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRING;
        uuid.string = idtext;
    } else {
        su.most_significant_bits = (int64_t)ldbe64(e->id);
        su.least_significant_bits = (int64_t)ldbe64(e->id + 8);
        uuid.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRUCTURED;
        uuid.structured = &su;
    }
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)e->stream;
    sid.stream_name.len = e->stream_len;
    char created[24];
    snprintf(created, sizeof created, "%lld", (long long)grpc_ticks(e->created_us));
    PsMeta m_type = PS(READ_RESP__READ_EVENT__RECORDED_EVENT__METADATA_ENTRY__INIT);
    PsMeta m_ct = m_type, m_created = m_type;
    m_type.key = "type";
    m_type.value = (char *)e->type;
    m_ct.key = "content-type";
    m_ct.value = (e->flags & STELE_EVENT_JSON) ? "application/json" : "application/octet-stream";
    m_created.key = "created";
    m_created.value = created;
    PsMeta *meta[] = {&m_type, &m_ct, &m_created};
    PsRecorded rec = PS(READ_RESP__READ_EVENT__RECORDED_EVENT__INIT);
    rec.id = &uuid;
    rec.stream_identifier = &sid;
    rec.stream_revision = e->revision;
    rec.prepare_position = rec.commit_position = e->position;
    rec.n_metadata = 3;
    rec.metadata = meta;
    rec.custom_metadata.data = (uint8_t *)e->metadata;
    rec.custom_metadata.len = e->metadata_len;
    rec.data.data = (uint8_t *)e->data;
    rec.data.len = e->data_len;
    PsReadEvent re = PS(READ_RESP__READ_EVENT__INIT);
    re.event = &rec;
    re.position_case = PS(READ_RESP__READ_EVENT__POSITION_COMMIT_POSITION);
    re.commit_position = e->position;
    re.count_case = PS(READ_RESP__READ_EVENT__COUNT_RETRY_COUNT);
    re.retry_count = retries > INT32_MAX ? INT32_MAX : (int32_t)retries;
    PsReadResp r = PS(READ_RESP__INIT);
    r.content_case = PS(READ_RESP__CONTENT_EVENT);
    r.event = &re;
    grpc_send(call, &r.base);
}

static void ps_more(gcall *call)
{
    ps_st *st = call->st;
    if (!st || !st->cons)
        return;
    server *s = call->c->srv;
    while (!call->done && grpc_out_pending(call) < grpc_out_high(call)) {
        if (st->batch && st->idx < stele_batch_count(st->batch)) {
            size_t i = st->idx++;
            send_ps_event(call, stele_batch_event(st->batch, i),
                          stele_batch_retry_count(st->batch, i), st->uuid_string);
            s->m.read_events++;
            continue;
        }
        stele_batch_free(st->batch);
        st->batch = NULL;
        int rc = stele_consumer_read(st->cons, st->buffer, 0, &st->batch);
        if (rc) {
            st->batch = NULL;
            if (rc == STELE_ENOTFOUND) {
                grpc_trailer(call, "exception", "persistent-subscription-dropped");
                grpc_trailer(call, "stream-name", st->stream);
                grpc_trailer(call, "group-name", st->group);
                grpc_trailer(call, "reason", "the group was deleted");
                grpc_finish(call, GRPC_CANCELLED, "the persistent subscription was deleted");
            } else {
                grpc_fail_stele(call, rc, stele_errmsg(), st->stream);
            }
            return;
        }
        st->idx = 0;
        if (stele_batch_count(st->batch) == 0)
            return; /* nothing now: a commit or group news wakes us */
    }
}

/* Event ids of an ack or nack (UUID messages). NULL with a status sent if
 * one is malformed. */
static uint8_t (*ids_of(gcall *call, EventStore__Client__UUID **u, size_t n))[16]
{
    uint8_t(*ids)[16] = calloc(n ? n : 1, 16);
    if (!ids) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (grpc_uuid_in(u[i], ids[i]) != 0) {
            free(ids);
            grpc_fail_code(call, "INVALID_ARGUMENT", "an ack or nack names a malformed event id");
            return NULL;
        }
    return ids;
}

static void ps_read_msg(gcall *call, ProtobufCMessage *msg)
{
    PsReadReq *req = (PsReadReq *)msg;
    ps_st *st = call->st;
    server *s = call->c->srv;
    if (!st) {
        if (req->content_case != PS(READ_REQ__CONTENT_OPTIONS)) {
            grpc_fail_code(call, "INVALID_ARGUMENT", "Read: the first message must be the options");
            return;
        }
        EventStore__Client__PersistentSubscriptions__ReadReq__Options *o = req->options;
        if (check_group(call, o->group_name))
            return;
        st = call->st = calloc(1, sizeof *st);
        if (!st) {
            grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        const char *stream;
        if (which_stream(call, o->stream_option_case == PS(READ_REQ__OPTIONS__STREAM_OPTION_ALL),
                         o->stream_identifier, st->stream, sizeof st->stream, &stream))
            return;
        if (!stream)
            snprintf(st->stream, sizeof st->stream, "$all");
        snprintf(st->group, sizeof st->group, "%s", o->group_name);
        st->uuid_string = !(o->uuid_option && o->uuid_option->content_case ==
                                                  PS(READ_REQ__OPTIONS__UUIDOPTION__CONTENT_STRUCTURED));
        st->buffer = o->buffer_size > 0 ? (size_t)o->buffer_size : 10;
        if (st->buffer > MAX_BUFFER)
            st->buffer = MAX_BUFFER;
        /* The consumer is named after the client and the call. */
        char peer[INET_ADDRSTRLEN] = "?", cname[96];
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        int port = 0;
        if (getpeername(call->c->fd, (struct sockaddr *)&sa, &len) == 0 && sa.sin_family == AF_INET) {
            inet_ntop(AF_INET, &sa.sin_addr, peer, sizeof peer);
            port = ntohs(sa.sin_port);
        }
        snprintf(cname, sizeof cname, "%s:%d#%d", peer, port, (int)call->id);
        int rc = stele_group_connect(s->db, stream, st->group, cname, &st->cons);
        if (rc) {
            st->cons = NULL;
            fail_group(call, rc, stream, st->group);
            return;
        }
        char id[1400];
        snprintf(id, sizeof id, "%s::%s", st->stream, st->group);
        EventStore__Client__PersistentSubscriptions__ReadResp__SubscriptionConfirmation conf =
            PS(READ_RESP__SUBSCRIPTION_CONFIRMATION__INIT);
        conf.subscription_id = id;
        PsReadResp r = PS(READ_RESP__INIT);
        r.content_case = PS(READ_RESP__CONTENT_SUBSCRIPTION_CONFIRMATION);
        r.subscription_confirmation = &conf;
        grpc_send(call, &r.base);
        grpc_sub_register(call);
        ps_more(call);
        return;
    }
    if (!st->cons)
        return;
    if (req->content_case == PS(READ_REQ__CONTENT_ACK)) {
        uint8_t(*ids)[16] = ids_of(call, req->ack->ids, req->ack->n_ids);
        if (!ids)
            return;
        /* An id no longer in flight here (timed out, gone to another
         * consumer) is not an error of the call: KurrentDB ignores it. */
        if (req->ack->n_ids && stele_consumer_ack(st->cons, (const uint8_t(*)[16])ids, req->ack->n_ids))
            server_log(s, 2, "msg=\"persistent ack ignored\" error=\"%s\"", stele_errmsg());
        free(ids);
    } else if (req->content_case == PS(READ_REQ__CONTENT_NACK)) {
        EventStore__Client__PersistentSubscriptions__ReadReq__Nack *nk = req->nack;
        uint8_t(*ids)[16] = ids_of(call, nk->ids, nk->n_ids);
        if (!ids)
            return;
        int action = nk->action == PS(READ_REQ__NACK__ACTION__Park)   ? STELE_NACK_PARK
                     : nk->action == PS(READ_REQ__NACK__ACTION__Skip) ? STELE_NACK_SKIP
                                                                      : STELE_NACK_RETRY;
        const char *reason = nk->reason && *nk->reason ? nk->reason : NULL;
        if (nk->n_ids && stele_consumer_nack(st->cons, (const uint8_t(*)[16])ids, nk->n_ids, action, reason))
            server_log(s, 2, "msg=\"persistent nack ignored\" error=\"%s\"", stele_errmsg());
        free(ids);
        if (nk->action == PS(READ_REQ__NACK__ACTION__Stop)) {
            /* Stop: the events go back to the group (retry) and this
             * consumer ends. */
            grpc_finish(call, GRPC_OK, NULL);
            return;
        }
    } else {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Read: options may be sent only once");
        return;
    }
    grpc_want_more(call); /* slots were freed */
}

static void ps_read_end(gcall *call)
{
    /* The client will send no more acks: the consumer ends. */
    grpc_finish(call, GRPC_OK, NULL);
}

static void ps_read_close(gcall *call)
{
    ps_st *st = call->st;
    if (!st)
        return;
    grpc_sub_unregister(call);
    stele_batch_free(st->batch);
    stele_consumer_close(st->cons);
    free(st);
    call->st = NULL;
}

/* ------------------------------------------------------------ the table */

static const char *const stream_and_all[] = {"stream", "all", NULL};

const grpc_method grpc_persistent_methods[] = {
    {.path = "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Create",
     .req = &event_store__client__persistent_subscriptions__create_req__descriptor,
     .features = stream_and_all,
     .on_msg = create_msg},
    {.path = "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Update",
     .req = &event_store__client__persistent_subscriptions__update_req__descriptor,
     .features = stream_and_all,
     .on_msg = update_msg},
    {.path = "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Delete",
     .req = &event_store__client__persistent_subscriptions__delete_req__descriptor,
     .features = stream_and_all,
     .on_msg = delete_msg},
    {.path = "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Read",
     .req = &event_store__client__persistent_subscriptions__read_req__descriptor,
     .client_streaming = 1,
     .server_streaming = 1,
     .features = stream_and_all,
     .on_msg = ps_read_msg,
     .on_end = ps_read_end,
     .on_more = ps_more,
     .on_close = ps_read_close},
    {.path = "/event_store.client.persistent_subscriptions.PersistentSubscriptions/GetInfo",
     .req = &event_store__client__persistent_subscriptions__get_info_req__descriptor,
     .features = stream_and_all,
     .on_msg = get_info_msg},
    {.path = "/event_store.client.persistent_subscriptions.PersistentSubscriptions/ReplayParked",
     .req = &event_store__client__persistent_subscriptions__replay_parked_req__descriptor,
     .features = stream_and_all,
     .on_msg = replay_msg},
    {.path = "/event_store.client.persistent_subscriptions.PersistentSubscriptions/List",
     .req = &event_store__client__persistent_subscriptions__list_req__descriptor,
     .features = stream_and_all,
     .on_msg = list_msg},
    {.path = "/event_store.client.persistent_subscriptions.PersistentSubscriptions/RestartSubsystem",
     .req = &event_store__client__empty__descriptor,
     .on_msg = restart_msg},
};
const size_t grpc_persistent_nmethods = sizeof grpc_persistent_methods / sizeof grpc_persistent_methods[0];
