/*
 * grpc.c - the gRPC method table and the small services: ServerFeatures
 * (which methods this server implements), Gossip (a one-node cluster:
 * this node, alive, leader) and Operations (Shutdown, Start/StopScavenge). Also what every
 * service shares: the status a libstele error becomes (with KurrentDB's
 * `exception` trailers, which the official clients turn into typed errors),
 * appends handed to the store for a call, the request messages a method
 * keeps, error details packed as a google.protobuf.Any, and the list of
 * subscriptions woken by commits: the server's own commit and group
 * watches (sse.c, routes_groups.c) call grpc_on_commit, so the writer
 * signals one eventfd of each kind per commit for SSE, consumer groups and
 * gRPC together, and the loop reads each once.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gossip.pb-c.h"
#include "grpc.h"
#include "operations.pb-c.h"
#include "serverfeatures.pb-c.h"
#include "shared.pb-c.h"
#include "status.pb-c.h"

typedef struct grpc_server {
    server *s;
    gcall *subs;
    uint8_t instance_id[16]; /* this node, for Gossip */
} grpc_server;

/* ------------------------------------------------------------ errors */

uint64_t grpc_max_append_size(const server *s)
{
    return s->cfg.store.max_append_size ? s->cfg.store.max_append_size : (64u << 20);
}

/* Status, exception trailer, message and metrics of one vocabulary entry. */
static void fail_info(gcall *call, const stele_error_info *e, int rc, const char *message,
                      const char *stream, int trailers)
{
    if (e->exception && trailers) {
        grpc_trailer(call, "exception", e->exception);
        if (stream)
            grpc_trailer(call, "stream-name", stream);
        if (rc == STELE_ETOOBIG) {
            char n[32];
            snprintf(n, sizeof n, "%llu",
                     (unsigned long long)grpc_max_append_size(call->c->srv));
            grpc_trailer(call, "maximum-append-size", n);
        }
    }
    char text[1200];
    snprintf(text, sizeof text, "%s: %s", e->code,
             message && *message ? message : e->rc ? stele_strerror(e->rc) : e->when);
    metrics_error(&call->c->srv->m, e->http_status, rc);
    grpc_finish(call, e->grpc_status, text);
}

void grpc_fail_stele(gcall *call, int rc, const char *message, const char *stream)
{
    fail_info(call, stele_error_info_of(rc), rc, message, stream, 1);
}

void grpc_fail_status(gcall *call, int rc, const char *message)
{
    fail_info(call, stele_error_info_of(rc), rc, message, NULL, 0);
}

void grpc_fail_code(gcall *call, const char *code, const char *message)
{
    const stele_error_info *e = stele_error_lookup(code);
    if (!e)
        e = stele_error_info_of(STELE_EINTERNAL); /* a code missing from the table */
    fail_info(call, e, e->rc, message, NULL, 1);
}

/* ------------------------------------------------------------ appends */

static void append_cb(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    grpc_op *op = ctx;
    completion *cp = calloc(1, sizeof *cp);
    if (!cp)
        abort(); /* cannot report the outcome */
    cp->c = op->call->c;
    cp->op = op;
    cp->rc = rc;
    cp->res = *res;
    snprintf(cp->msg, sizeof cp->msg, "%s", msg);
    completion_post(cp->c->srv, cp);
}

int grpc_append(gcall *call, grpc_op *op, const char *stream, int64_t expected,
                const stele_event_in *events, size_t n)
{
    op->call = call;
    call->pending++;
    call->c->async_pending++;
    int rc = stele_append_async(call->c->srv->db, stream, expected, events, n, append_cb, op);
    if (rc) {
        call->pending--;
        call->c->async_pending--;
        free(op);
    }
    return rc;
}

/* ------------------------------------------------------------ method helpers */

void *grpc_state(gcall *call, size_t size)
{
    if (!call->st && !(call->st = calloc(1, size)))
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return call->st;
}

int grpc_kept_add(gcall *call, grpc_kept *k, void *msg)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 8;
        void **p = realloc(k->msgs, cap * sizeof *p);
        if (p)
            k->msgs = p;
        void **a = p ? realloc(k->arenas, cap * sizeof *a) : NULL;
        if (!a) {
            grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return -1;
        }
        k->arenas = a;
        k->cap = cap;
    }
    k->msgs[k->n] = msg;
    k->arenas[k->n++] = grpc_keep(call);
    return 0;
}

void grpc_kept_free(grpc_kept *k)
{
    for (size_t i = 0; i < k->n; i++)
        grpc_msg_free(k->arenas[i]);
    free(k->msgs);
    free(k->arenas);
    k->msgs = k->arenas = NULL;
    k->n = k->cap = 0;
}

uint8_t *grpc_any_pack(Google__Protobuf__Any *any, const char *type_url,
                       const ProtobufCMessage *details)
{
    size_t n = protobuf_c_message_get_packed_size(details);
    uint8_t *packed = malloc(n ? n : 1);
    if (!packed)
        return NULL;
    protobuf_c_message_pack(details, packed);
    any->type_url = (char *)type_url;
    any->value.data = packed;
    any->value.len = n;
    return packed;
}

void grpc_completion(conn *c, completion *cp)
{
    grpc_op *op = cp->op;
    if (c->dead) {
        if (op->cleanup)
            op->cleanup(op);
        free(op); /* the connection is gone, and its calls with it */
        return;
    }
    gcall *call = op->call;
    if (!call->done && !call->closed)
        op->done(call, op, cp);
    if (op->cleanup)
        op->cleanup(op);
    free(op);
    grpc_call_release(call);
    /* No h2_pump here: drain_completions pumps each connection once after
     * its whole batch of completions, so the answers of many calls on one
     * connection go out in one send. */
}

void grpc_completion_discard(completion *cp)
{
    grpc_op *op = cp->op;
    if (op->cleanup)
        op->cleanup(op);
    free(op);
}

/* ------------------------------------------------------------ subscriptions */

void grpc_sub_register(gcall *call)
{
    grpc_server *g = call->c->srv->grpc;
    if (call->sub_registered)
        return;
    call->sub_registered = 1;
    call->c->srv->subscriptions++;
    call->sub_prev = NULL;
    call->sub_next = g->subs;
    if (g->subs)
        g->subs->sub_prev = call;
    g->subs = call;
}

void grpc_sub_unregister(gcall *call)
{
    grpc_server *g = call->c->srv->grpc;
    if (!call->sub_registered)
        return;
    call->sub_registered = 0;
    call->c->srv->subscriptions--;
    if (call->sub_prev)
        call->sub_prev->sub_next = call->sub_next;
    else
        g->subs = call->sub_next;
    if (call->sub_next)
        call->sub_next->sub_prev = call->sub_prev;
    call->sub_prev = call->sub_next = NULL;
}

void grpc_on_commit(server *s)
{
    grpc_server *g = s->grpc;
    if (!g)
        return;
    /* Wake every subscription, then send on their connections. Pumping
     * may end calls (and unlink them from g->subs), so the connections are
     * collected first; a connection stays allocated until the end of the
     * loop's batch even if it closes, and pumping one twice is harmless. */
    size_t n = 0;
    for (gcall *call = g->subs; call; call = call->sub_next) {
        grpc_want_more(call);
        n++;
    }
    conn **cs = n ? malloc(n * sizeof *cs) : NULL;
    if (!cs)
        return; /* n == 0, or out of memory: the next commit retries */
    size_t k = 0;
    for (gcall *call = g->subs; call; call = call->sub_next)
        if (k == 0 || cs[k - 1] != call->c)
            cs[k++] = call->c;
    for (size_t i = 0; i < k; i++)
        h2_pump(cs[i]);
    free(cs);
}

/* ------------------------------------------------------------ ServerFeatures */

static const grpc_method grpc_misc_methods[];
static const size_t grpc_misc_nmethods;

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

static void features_get(gcall *call, ProtobufCMessage *msg)
{
    (void)msg;
    const grpc_method *tables[] = {grpc_streams_methods, grpc_persistent_methods,
                                   grpc_projections_methods, grpc_misc_methods, grpc_v2_methods,
                                   grpc_users_methods};
    const size_t counts[] = {grpc_streams_nmethods, grpc_persistent_nmethods,
                             grpc_projections_nmethods, grpc_misc_nmethods, grpc_v2_nmethods,
                             grpc_users_nmethods};
    EventStore__Client__ServerFeatures__SupportedMethod items[64];
    EventStore__Client__ServerFeatures__SupportedMethod *ptrs[64];
    char names[64][2][128];
    size_t n = 0;
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        for (size_t i = 0; i < counts[t] && n < 64; i++) {
            const grpc_method *m = &tables[t][i];
            if (m->unlisted)
                continue;
            /* "/pkg.Service/Method" -> service "pkg.service", method "method" */
            const char *slash = strrchr(m->path, '/');
            snprintf(names[n][0], sizeof names[n][0], "%.*s", (int)(slash - m->path - 1),
                     m->path + 1);
            snprintf(names[n][1], sizeof names[n][1], "%s", slash + 1);
            lower(names[n][0]);
            lower(names[n][1]);
            EventStore__Client__ServerFeatures__SupportedMethod init =
                EVENT_STORE__CLIENT__SERVER_FEATURES__SUPPORTED_METHOD__INIT;
            items[n] = init;
            items[n].service_name = names[n][0];
            items[n].method_name = names[n][1];
            size_t nf = 0;
            while (m->features && m->features[nf])
                nf++;
            items[n].n_features = nf;
            items[n].features = (char **)m->features;
            ptrs[n] = &items[n];
            n++;
        }
    }
    EventStore__Client__ServerFeatures__SupportedMethods resp =
        EVENT_STORE__CLIENT__SERVER_FEATURES__SUPPORTED_METHODS__INIT;
    resp.n_methods = n;
    resp.methods = ptrs;
    resp.event_store_server_version = (char *)STELE_VERSION;
    grpc_send(call, &resp.base);
    grpc_finish(call, GRPC_OK, NULL);
}

/* ------------------------------------------------------------ Gossip */

static void gossip_read(gcall *call, ProtobufCMessage *msg)
{
    (void)msg;
    server *s = call->c->srv;
    /* The address this client reached us on: what it can connect to. */
    char addr[INET_ADDRSTRLEN] = "127.0.0.1";
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(call->c->fd, (struct sockaddr *)&sa, &len) == 0 && sa.sin_family == AF_INET)
        inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof addr);
    char id[37];
    stele_uuid_format(s->grpc->instance_id, id);
    EventStore__Client__UUID uuid = EVENT_STORE__CLIENT__UUID__INIT;
    uuid.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRING;
    uuid.string = id;
    EventStore__Client__Gossip__EndPoint ep = EVENT_STORE__CLIENT__GOSSIP__END_POINT__INIT;
    ep.address = addr;
    ep.port = (uint32_t)s->port;
    EventStore__Client__Gossip__MemberInfo me = EVENT_STORE__CLIENT__GOSSIP__MEMBER_INFO__INIT;
    me.instance_id = &uuid;
    me.time_stamp = grpc_ticks(time_now_us());
    me.state = EVENT_STORE__CLIENT__GOSSIP__MEMBER_INFO__VNODE_STATE__Leader;
    me.is_alive = 1;
    me.http_end_point = &ep;
    EventStore__Client__Gossip__MemberInfo *members[] = {&me};
    EventStore__Client__Gossip__ClusterInfo resp = EVENT_STORE__CLIENT__GOSSIP__CLUSTER_INFO__INIT;
    resp.n_members = 1;
    resp.members = members;
    grpc_send(call, &resp.base);
    grpc_finish(call, GRPC_OK, NULL);
}

/* ------------------------------------------------------------ Operations */

/* Operations stop or reconfigure the server: only from loopback until
 * there is authentication (guard.c). 1 if refused (the call is finished). */
static int operations_refused(gcall *call, const char *what)
{
    char addr[64], msg[512];
    if (guard_peer_is_loopback(call->c, addr, sizeof addr))
        return 0;
    guard_loopback_message(what, addr, msg, sizeof msg);
    server_log(call->c->srv, 1, "msg=\"refused\" operation=%s peer=%s", what, addr);
    grpc_finish(call, GRPC_PERMISSION_DENIED, msg);
    return 1;
}

static void operations_shutdown(gcall *call, ProtobufCMessage *msg)
{
    (void)msg;
    if (operations_refused(call, "Operations.Shutdown"))
        return;
    server *s = call->c->srv;
    server_log(s, 1, "msg=\"stopping\" reason=\"Operations.Shutdown over gRPC\"");
    EventStore__Client__Empty resp = EVENT_STORE__CLIENT__EMPTY__INIT;
    grpc_send(call, &resp.base);
    grpc_finish(call, GRPC_OK, NULL);
    s->stopping = 1;
}

/* Scavenges run on routes_admin.c's thread, the one POST /admin/scavenge
 * starts; the scavenge id is its number there ("1", "2", ...), so the HTTP
 * GET /admin/scavenge shows the progress of one started over gRPC. */
static void scavenge_reply(gcall *call, uint64_t id, int result)
{
    char sid[24];
    snprintf(sid, sizeof sid, "%llu", (unsigned long long)id);
    EventStore__Client__Operations__ScavengeResp resp =
        EVENT_STORE__CLIENT__OPERATIONS__SCAVENGE_RESP__INIT;
    resp.scavenge_id = sid;
    resp.scavenge_result = result;
    grpc_send(call, &resp.base);
    grpc_finish(call, GRPC_OK, NULL);
}

static void operations_start_scavenge(gcall *call, ProtobufCMessage *msg)
{
    (void)msg; /* thread_count and start_from_chunk do not apply: one thread, every segment */
    if (operations_refused(call, "Operations.StartScavenge"))
        return;
    uint64_t id;
    int running;
    int rc = admin_scavenge_start(call->c->srv, &id, &running);
    if (rc == ADMIN_NOMEM || rc == ADMIN_STOPPING)
        grpc_finish(call, GRPC_UNAVAILABLE, rc == ADMIN_NOMEM ? "out of memory" : "shutting down");
    else if (rc)
        grpc_finish(call, GRPC_INTERNAL, "cannot start the scavenge thread");
    else
        scavenge_reply(call, id,
                       running ? EVENT_STORE__CLIENT__OPERATIONS__SCAVENGE_RESP__SCAVENGE_RESULT__InProgress
                               : EVENT_STORE__CLIENT__OPERATIONS__SCAVENGE_RESP__SCAVENGE_RESULT__Started);
}

static void operations_stop_scavenge(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Operations__StopScavengeReq *req = (void *)msg;
    if (operations_refused(call, "Operations.StopScavenge"))
        return;
    const char *given = req->options && req->options->scavenge_id ? req->options->scavenge_id : "";
    /* The running scavenge's id, or "" / "current" for whichever runs. */
    uint64_t want = 0;
    int bad = 0;
    if (*given && strcmp(given, "current")) {
        char *end;
        want = strtoull(given, &end, 10);
        bad = *end || want == 0 || given[0] < '0' || given[0] > '9';
    }
    uint64_t id;
    if (bad || admin_scavenge_stop(call->c->srv, want, &id)) {
        grpc_trailer(call, "scavenge-id", given);
        char text[160];
        snprintf(text, sizeof text, "no running scavenge has id \"%.100s\"", given);
        grpc_fail_code(call, "SCAVENGE_NOT_FOUND", text);
        return;
    }
    scavenge_reply(call, id, EVENT_STORE__CLIENT__OPERATIONS__SCAVENGE_RESP__SCAVENGE_RESULT__Stopped);
}

/* ------------------------------------------------------------ the table */

static const grpc_method grpc_misc_methods[] = {
    {.path = "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
     .req = &event_store__client__empty__descriptor,
     .on_msg = features_get},
    {.path = "/event_store.client.gossip.Gossip/Read",
     .req = &event_store__client__empty__descriptor,
     .on_msg = gossip_read},
    {.path = "/event_store.client.operations.Operations/Shutdown",
     .req = &event_store__client__empty__descriptor,
     .on_msg = operations_shutdown},
    {.path = "/event_store.client.operations.Operations/StartScavenge",
     .req = &event_store__client__operations__start_scavenge_req__descriptor,
     .on_msg = operations_start_scavenge},
    {.path = "/event_store.client.operations.Operations/StopScavenge",
     .req = &event_store__client__operations__stop_scavenge_req__descriptor,
     .on_msg = operations_stop_scavenge},
};
static const size_t grpc_misc_nmethods = sizeof grpc_misc_methods / sizeof grpc_misc_methods[0];

const grpc_method *grpc_find_method(const char *path, size_t len)
{
    if (!path)
        return NULL;
    const grpc_method *tables[] = {grpc_streams_methods, grpc_persistent_methods,
                                   grpc_projections_methods, grpc_misc_methods, grpc_v2_methods,
                                   grpc_users_methods};
    const size_t counts[] = {grpc_streams_nmethods, grpc_persistent_nmethods,
                             grpc_projections_nmethods, grpc_misc_nmethods, grpc_v2_nmethods,
                             grpc_users_nmethods};
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (size_t i = 0; i < counts[t]; i++)
            if (strlen(tables[t][i].path) == len && !memcmp(tables[t][i].path, path, len))
                return &tables[t][i];
    return NULL;
}

/* ------------------------------------------------------------ setup */

int grpc_server_init(server *s)
{
    grpc_server *g = calloc(1, sizeof *g);
    if (!g)
        return STELE_ENOMEM;
    g->s = s;
    /* A random (version 4) instance id for this run of the server. */
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(g->instance_id, 1, 16, f) != 16)
        memset(g->instance_id, 0x5a, 16);
    if (f)
        fclose(f);
    g->instance_id[6] = (uint8_t)((g->instance_id[6] & 0x0f) | 0x40);
    g->instance_id[8] = (uint8_t)((g->instance_id[8] & 0x3f) | 0x80);
    s->grpc = g;
    return 0;
}

void grpc_server_free(server *s)
{
    grpc_server *g = s->grpc;
    if (!g)
        return;
    /* Subscriptions still open (on connections that wait for appends)
     * release their libstele handles now, before the store closes. */
    while (g->subs) {
        gcall *call = g->subs;
        grpc_sub_unregister(call);
        if (call->m && call->m->on_close)
            call->m->on_close(call);
        call->st = NULL;
    }
    free(g);
    s->grpc = NULL;
}
