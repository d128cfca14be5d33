/*
 * access.c - who may do what (docs/security.md), and the gate every HTTP
 * request passes before its route.
 *
 * Principals. With no users (no --admin-password, `$users` empty) the
 * server is open as before: every request is a superuser (auth_who.open).
 * Once a user exists every request must authenticate (auth.c), except
 * GET /health/live and /health/ready (load balancers) and the web UI's own
 * files (GET / and /ui/..., compiled-in code holding no data: the UI then
 * asks for a login in its own form). A 401 says `WWW-Authenticate: Basic`
 * unless the request has `X-Requested-With` (the UI's fetches), so that a
 * browser does not put up its own prompt in front of the UI's form.
 *
 * Roles. `$admins` may do everything. `$ops` may run operations (scavenge,
 * shutdown), manage consumer groups and read `$all`. `$projection-managers`
 * and `$rule-managers` may manage projections and rules (granted without
 * making someone an admin). Other groups are
 * names a user belongs to, used in ACLs like user names.
 *
 * Streams: KurrentDB's ACL meanings. A stream's metadata may hold `$acl`:
 *   {"$r": R, "$w": W, "$d": D, "$mr": MR, "$mw": MW}
 * each a user or group name or an array of them; `$all` in a list means
 * every authenticated user. An operation missing from `$acl` (or a stream
 * without one) gets the stream policy that applies (policy_says: by name
 * prefix, else the default policy for user or system streams), and without
 * one the built-in default: every authenticated user for user streams,
 * `$admins` only for system streams (names starting with `$`).
 * Reading or writing a metastream (`$$name`, gRPC) is $mr / $mw on `name`.
 * `$admins` members pass every check. `$all` (a reserved name
 * without metadata) takes its ACL from the stream policy for the name
 * `$all`, else `$ops` and `$admins` (KurrentDB: `$all` reads need
 * `$admins` unless `$$$all` grants more). Reads across streams ($all, its
 * SSE and gRPC subscriptions, queries by category, type, tag, correlation,
 * actor, DCB queries, and the view streams $ce-, $et-, $bc-, $streams) are
 * open to every user and filtered per event's stream for users without
 * `$r` on `$all` (access_filter_read, access_visible; the routes skip what
 * the user may not read). A view the user may read by policy is not
 * filtered. The category and type lists, chain proofs and exports, and
 * `$all` consumer groups need `$r` on `$all`; the list of stream names is
 * filtered.
 * Multi-stream appends need `$w` on each stream (access_append_multi); a
 * DCB condition reads every stream, so it needs `$r` on `$all`. The check reads
 * the stream's metadata (an index lookup and a small JSON parse) on each
 * request.
 *
 * HTTP: http_need() maps method and path to what they require; the gate
 * (access_http_gate) authenticates (maybe waiting for the verifier
 * thread), then checks, answering 401 / 403 / 429 itself. With
 * authentication off (no user: the open server) the gate decides nothing:
 * every request is the open superuser, whom every check lets through, so
 * it skips straight to the route (no path analysis, no peer address); the
 * checks are the same once a user exists.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "json.h"
#include "urlcode.h"

int access_admin(const auth_who *who) { return who->open || who->admin; }

int access_in_group(const auth_who *who, const char *group)
{
    for (int i = 0; i < who->ngroups; i++)
        if (!strcmp(who->groups[i], group))
            return 1;
    return 0;
}
int access_ops(const auth_who *who) { return who->open || who->admin || who->ops; }

static int role_matches(const auth_who *who, const char *role)
{
    if (!strcmp(role, "$all"))
        return who->authenticated;
    if (!strcmp(role, "$admins"))
        return who->admin;
    if (!strcmp(role, "$ops"))
        return who->ops;
    if (who->authenticated && !strcmp(role, who->name))
        return 1;
    for (int i = 0; i < who->ngroups; i++)
        if (!strcmp(role, who->groups[i]))
            return 1;
    return 0;
}

static const char *const acl_names[] = {"$r", "$w", "$d", "$mr", "$mw"};

/* What an ACL value (a name or an array of names) says for `who`: -1 when
 * absent. */
static int value_says(json_t *v, const auth_who *who)
{
    if (json_is_string(v))
        return role_matches(who, json_string_value(v));
    if (!json_is_array(v))
        return -1;
    int r = 0;
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        if (json_is_string(x) && role_matches(who, json_string_value(x)))
            r = 1;
    }
    return r;
}

/*
 * Stream policies (KurrentDB 24.10's model, set with PUT /policies):
 *   {"streamPolicies": {"NAME": {"$r": ..., "$w": ..., ...}, ...},
 *    "streamRules": [{"startsWith": "Payroll-", "policy": "NAME"}, ...],
 *    "defaultStreamRules": {"userStreams": "NAME", "systemStreams": "NAME"}}
 * The first rule whose prefix starts the stream name picks the policy,
 * else the default for user or system streams. -1 when no policy says.
 */
static int policy_says(server *s, const char *stream, int op, const auth_who *who)
{
    json_t *p = auth_policies(s);
    if (!p)
        return -1;
    const char *name = NULL;
    size_t i;
    json_t *rule;
    json_array_foreach(json_object_get(p, "streamRules"), i, rule)
    {
        const char *pre = json_string_value(json_object_get(rule, "startsWith"));
        if (pre && !strncmp(stream, pre, strlen(pre))) {
            name = json_string_value(json_object_get(rule, "policy"));
            break;
        }
    }
    if (!name)
        name = json_string_value(json_object_get(json_object_get(p, "defaultStreamRules"),
                                                 stream[0] == '$' ? "systemStreams"
                                                                  : "userStreams"));
    if (!name)
        return -1;
    json_t *pol = json_object_get(json_object_get(p, "streamPolicies"), name);
    return value_says(json_object_get(pol, acl_names[op]), who);
}

int access_policies_check(json_t *p, char *msg, size_t cap)
{
    const char *why = NULL;
    json_t *pols = json_object_get(p, "streamPolicies");
    json_t *rules = json_object_get(p, "streamRules");
    json_t *defs = json_object_get(p, "defaultStreamRules");
    const char *k;
    json_t *v;
    if (!json_is_object(p))
        why = "the policies must be a JSON object";
    else if (pols && !json_is_object(pols))
        why = "streamPolicies must be an object of policy name to ACL";
    else if (rules && !json_is_array(rules))
        why = "streamRules must be an array of {\"startsWith\",\"policy\"}";
    else if (defs && !json_is_object(defs))
        why = "defaultStreamRules must be {\"userStreams\",\"systemStreams\"}";
    if (!why) {
        json_object_foreach(p, k, v)
        {
            if (strcmp(k, "streamPolicies") && strcmp(k, "streamRules") &&
                strcmp(k, "defaultStreamRules"))
                why = "unknown member (streamPolicies, streamRules, defaultStreamRules)";
        }
    }
    if (!why && pols) {
        json_object_foreach(pols, k, v)
        {
            char *t = json_dumps(v, JSON_COMPACT);
            char m[256];
            if (!t || access_acl_check(t, strlen(t), m, sizeof m) != 0)
                why = "each policy is an ACL: an object of $r, $w, $d, $mr, $mw, each a name "
                      "or an array of names";
            free(t);
        }
    }
    if (!why && rules) {
        size_t i;
        json_array_foreach(rules, i, v)
        {
            const char *pre = json_string_value(json_object_get(v, "startsWith"));
            const char *pol = json_string_value(json_object_get(v, "policy"));
            if (!pre || !*pre || !pol || !json_object_get(pols, pol))
                why = "each stream rule needs a non-empty startsWith and a policy that exists";
        }
    }
    if (!why && defs) {
        json_object_foreach(defs, k, v)
        {
            if ((strcmp(k, "userStreams") && strcmp(k, "systemStreams")) ||
                !json_is_string(v) || !json_object_get(pols, json_string_value(v)))
                why = "defaultStreamRules: userStreams / systemStreams name existing policies";
        }
    }
    if (why)
        snprintf(msg, cap, "%s", why);
    return why ? -1 : 0;
}

/* -1: the ACL does not say; 0 / 1: it denies / allows. */
static int acl_says(const char *custom, size_t len, int op, const auth_who *who)
{
    if (!custom || !len || !memmem(custom, len, "\"$acl\"", 6))
        return -1;
    json_error_t err;
    json_t *o = json_loadb(custom, len, 0, &err);
    if (!o)
        return -1;
    json_t *acl = json_object_get(o, "$acl");
    int r = json_is_object(acl) ? value_says(json_object_get(acl, acl_names[op]), who) : -1;
    json_decref(o);
    return r;
}

int access_acl_check(const char *val, size_t len, char *msg, size_t cap)
{
    json_error_t err;
    json_t *o = json_loadb(val, len, 0, &err);
    int ok = json_is_object(o);
    const char *k;
    json_t *v;
    if (ok) {
        json_object_foreach(o, k, v)
        {
            if (strcmp(k, "$r") && strcmp(k, "$w") && strcmp(k, "$d") && strcmp(k, "$mr") &&
                strcmp(k, "$mw"))
                ok = 0;
            else if (json_is_array(v)) {
                size_t i;
                json_t *x;
                json_array_foreach(v, i, x)
                {
                    if (!json_is_string(x))
                        ok = 0;
                }
            } else if (!json_is_string(v)) {
                ok = 0;
            }
        }
    }
    json_decref(o);
    if (!ok)
        snprintf(msg, cap, "$acl must be an object of $r, $w, $d, $mr and $mw, each a user or "
                           "group name or an array of them");
    return ok ? 0 : -1;
}

int access_stream(server *s, const auth_who *who, const char *stream, int op)
{
    if (who->open || who->admin)
        return 1;
    if (!who->authenticated)
        return 0;
    if (!strcmp(stream, "$all")) {
        /* `$all` has no metadata here (the name is reserved): its ACL is
         * the stream policy that applies to the name `$all` (a rule
         * `{"startsWith": "$all", ...}`, else the system streams'
         * default), as KurrentDB's `$$$all` grants reads of `$all`; the
         * built-in default is `$ops` and `$admins`. */
        if (who->ops)
            return 1;
        return policy_says(s, stream, op, who) > 0;
    }
    const char *target = stream;
    if (!strncmp(stream, "$$", 2) && stream[2]) {
        target = stream + 2;
        op = op == ACL_R ? ACL_MR : ACL_MW;
    }
    stele_stream_metadata *md = NULL;
    int says = -1;
    if (stele_get_stream_metadata(s->db, target, &md) == 0 && md) {
        says = acl_says(md->custom, md->custom_len, op, who);
        stele_free(md);
    }
    if (says < 0)
        says = policy_says(s, target, op, who);
    if (says >= 0)
        return says;
    return target[0] != '$'; /* defaults: user streams everyone, system streams $admins */
}

static void refuse(conn *c, const auth_refusal *ref, const char *who, const char *action);
static void action_of(const conn *c, char *out, size_t cap);

int access_filtered(const auth_who *who) { return !access_ops(who); }

int access_is_view(const char *stream)
{
    return !strcmp(stream, "$streams") || !strncmp(stream, "$ce-", 4) ||
           !strncmp(stream, "$et-", 4) || !strncmp(stream, "$bc-", 4);
}

int access_filter_read(server *s, const auth_who *who, const char *stream)
{
    if (!access_filtered(who) || access_stream(s, who, "$all", ACL_R))
        return 0; /* $r on $all: every event, every view, whole */
    if (!stream)
        return 1;
    return access_is_view(stream) && !access_stream(s, who, stream, ACL_R);
}

int access_append_multi(conn *c, char *const *names, size_t n, int has_condition)
{
    const auth_who *who = &c->who;
    char why[1300] = "";
    if (who->open || who->admin)
        return 0;
    if (has_condition && !access_stream(c->srv, who, "$all", ACL_R)) {
        snprintf(why, sizeof why,
                 "access denied: a condition (failIfEventsMatch) reads events of every "
                 "stream; it needs $r on $all ($ops, $admins or a stream policy)");
    } else {
        for (size_t i = 0; i < n; i++) {
            if (!access_stream(c->srv, who, names[i], ACL_W)) {
                snprintf(why, sizeof why, "access denied: %.100s may not write %.900s (streams[%zu])",
                         who->name, names[i], i);
                break;
            }
        }
    }
    if (!why[0])
        return 0;
    char action[300];
    action_of(c, action, sizeof action);
    auth_refusal ref = {.status = 403, .code = "ACCESS_DENIED", .message = why, .audit = 1};
    refuse(c, &ref, who->name, action);
    return -1;
}

int access_visible(conn *c, const char *stream)
{
    if (c->vis_stream[0] && !strcmp(c->vis_stream, stream))
        return c->vis_ok;
    c->vis_ok = access_stream(c->srv, &c->who, stream, ACL_R);
    snprintf(c->vis_stream, sizeof c->vis_stream, "%s", stream);
    return c->vis_ok;
}

/* ------------------------------------------------------------ HTTP */

enum { NEED_NONE, NEED_USER, NEED_OPS, NEED_ADMIN, NEED_STREAM, NEED_GROUP };

typedef struct need {
    int kind;
    const char *group; /* NEED_GROUP: $admins or this group */
    char stream[1024];
    int op;
} need;

static int prefix(const char *path, size_t plen, const char *p)
{
    size_t n = strlen(p);
    return plen >= n && !memcmp(path, p, n) && (plen == n || path[n] == '/' || p[n - 1] == '/');
}

static void need_stream(need *n, const char *seg, size_t len, int op)
{
    size_t out = 0;
    n->kind = NEED_STREAM;
    n->op = op;
    if (url_decode(seg, len, n->stream, sizeof n->stream - 1, &out) != 0 || !out ||
        memchr(n->stream, 0, out)) {
        n->kind = NEED_USER; /* malformed: the route answers 400 */
        return;
    }
    n->stream[out] = 0;
}

/* A read of $all: the lists and exports that hold any stream's data. */
static void need_all(need *n)
{
    n->kind = NEED_STREAM;
    snprintf(n->stream, sizeof n->stream, "$all");
    n->op = ACL_R;
}

#define IS(lit) (plen == sizeof(lit) - 1 && !memcmp(path, lit, plen))

/* The server's own paths and the reads across streams: 1 with *n set, 0
 * for a path of streams, groups, projections or rules. */
static int need_server(int get, const char *path, size_t plen, need *n)
{
    if (IS("/health/live") || IS("/health/ready")) {
        n->kind = NEED_NONE;
    } else if (get && (IS("/") || prefix(path, plen, "/ui/"))) {
        n->kind = NEED_NONE; /* the web UI's own files: code, no data; it shows a login form */
    } else if (IS("/metrics") || IS("/info") || prefix(path, plen, "/users")) {
        n->kind = NEED_USER; /* /users checks itself (routes_users.c) */
    } else if (prefix(path, plen, "/admin")) {
        n->kind = NEED_OPS;
    } else if (prefix(path, plen, "/chain")) {
        /* The hash chain (routes_chain.c): the head shows no event data;
         * a proof or an export holds events of any stream (a read of $all). */
        n->kind = NEED_USER;
        if (!IS("/chain/head"))
            need_all(n);
    } else if (IS("/all") && get) {
        n->kind = NEED_USER; /* filtered per stream for users without $ops (routes.c) */
    } else if ((IS("/categories") || IS("/types")) && get) {
        /* The name lists (routes_names.c): like GET /streams, a read of $all. */
        need_all(n);
    } else if (IS("/subscribe/all") || IS("/query") || prefix(path, plen, "/categories") ||
               prefix(path, plen, "/types") || prefix(path, plen, "/tags") ||
               prefix(path, plen, "/correlations") || prefix(path, plen, "/actors")) {
        /* Reads across streams: filtered per stream for users without
         * $ops (routes.c, routes_multi.c, subscribe.c). */
        n->kind = NEED_USER;
    } else if (IS("/all")) {
        need_all(n);
    } else {
        return 0;
    }
    return 1;
}

/* Consumer groups (/subscriptions...): consuming (pull, ack, nack,
 * subscribe, info) is a read of the group's stream; creating, changing,
 * deleting and parked-message handling are for $ops. */
static void need_groups(int m, const char *path, size_t plen, need *n)
{
    const char *seg = path + 14;
    size_t rest = plen - 14;
    if (rest <= 1 || *seg != '/') {
        n->kind = NEED_USER;
        return;
    }
    seg++, rest--;
    const char *slash = memchr(seg, '/', rest);
    size_t slen = slash ? (size_t)(slash - seg) : rest;
    const char *after = slash ? memchr(slash + 1, '/', rest - slen - 1) : NULL;
    int admin_op = (!after && (m == HTTP_PUT || m == HTTP_POST || m == HTTP_DELETE)) ||
                   (after && memmem(after, plen - (size_t)(after - path), "/parked", 7));
    if (admin_op)
        n->kind = NEED_OPS;
    else
        need_stream(n, seg, slen, ACL_R);
}

/* /streams/NAME[/...]: the stream's ACL entry for what the method does to
 * the stream, its metadata or its snapshots; its groups are for $ops. */
static void need_stream_path(int m, int get, const char *path, size_t plen, need *n)
{
    const char *seg = path + 9;
    size_t slen = plen - 9;
    const char *slash = memchr(seg, '/', slen);
    size_t nlen = slash ? (size_t)(slash - seg) : slen;
    const char *rest = slash ? slash : "";
    size_t rlen = slash ? slen - nlen : 0;
    int op;
    if (rlen == 0)
        op = get ? ACL_R : m == HTTP_DELETE ? ACL_D : ACL_W;
    else if (rlen >= 9 && !memcmp(rest, "/metadata", 9))
        op = get ? ACL_MR : ACL_MW;
    else if (rlen >= 10 && !memcmp(rest, "/snapshots", 10))
        op = get ? ACL_R : ACL_W;
    else if (rlen >= 7 && !memcmp(rest, "/groups", 7)) {
        n->kind = NEED_OPS;
        return;
    } else
        op = get ? ACL_R : ACL_W;
    need_stream(n, seg, nlen, op);
    /* A view: filtered per stream (routes.c). HEAD is checked as GET
     * is, so its answer never depends on the view's own ACL. */
    if (n->kind == NEED_STREAM && rlen == 0 && get && access_is_view(n->stream))
        n->kind = NEED_USER;
}

static void http_need(int m, const char *path, size_t plen, need *n)
{
    memset(n, 0, sizeof *n);
    int get = m == HTTP_GET || m == HTTP_HEAD;
    if (need_server(get, path, plen, n))
        return;
    if (prefix(path, plen, "/subscribe/streams/")) {
        const char *seg = path + 19;
        const char *end = memchr(seg, '/', plen - 19);
        need_stream(n, seg, end ? (size_t)(end - seg) : plen - 19, ACL_R);
        if (n->kind == NEED_STREAM && !end && access_is_view(n->stream))
            n->kind = NEED_USER; /* a view: filtered per stream (subscribe.c) */
    } else if (prefix(path, plen, "/subscriptions")) {
        need_groups(m, path, plen, n);
    } else if (prefix(path, plen, "/projections")) {
        n->kind = get ? NEED_USER : NEED_GROUP;
        n->group = "$projection-managers";
    } else if (prefix(path, plen, "/rules")) {
        n->kind = NEED_GROUP; /* definitions name targets and their secrets */
        n->group = "$rule-managers";
    } else if (IS("/streams")) {
        /* GET: the list of stream names, filtered per stream for users
         * without $ops (routes_names.c); POST: multi-stream appends, each
         * stream's $w (routes_multi.c). */
        n->kind = NEED_USER;
    } else if (plen > 9 && !memcmp(path, "/streams/", 9)) {
        need_stream_path(m, get, path, plen, n);
    } else {
        n->kind = get ? NEED_USER : NEED_ADMIN; /* the web UI, unknown paths (404) */
    }
}

#undef IS

static const char *op_name(int op)
{
    static const char *const names[] = {"read", "write", "delete", "read metadata of",
                                        "write metadata of"};
    return names[op];
}

static void refuse(conn *c, const auth_refusal *ref, const char *who, const char *action)
{
    char addr[64];
    auth_peer_addr(c, addr, sizeof addr);
    if (ref->audit)
        auth_audit(c->srv, who, addr, action,
                   ref->status == 429 ? "throttled"
                   : ref->status == 403 ? "denied"
                                        : "unauthenticated",
                   "%s", ref->message);
    buf b = {0};
    json_w_raw(&b, "{\"error\":{\"code\":", 17);
    json_w_str(&b, ref->code, strlen(ref->code));
    json_w_raw(&b, ",\"message\":", 11);
    json_w_str(&b, ref->message, strlen(ref->message));
    json_w_raw(&b, "}}\n", 3);
    char extra[128] = "";
    if (ref->status == 401 && !c->req.has_requested_with)
        snprintf(extra, sizeof extra, "WWW-Authenticate: Basic realm=\"stele\", charset=\"UTF-8\"\r\n");
    else if (ref->status == 429)
        snprintf(extra, sizeof extra, "Retry-After: %d\r\n", ref->retry_after);
    http_respond(c, ref->status, "application/json", b.p, b.len, extra);
    buf_free(&b);
    http_request_finish(c);
}

/* The request's action for audit lines: "GET /streams/x". */
static void action_of(const conn *c, char *out, size_t cap)
{
    const request *r = &c->req;
    size_t n = r->url.len;
    const char *q = memchr(r->url.p, '?', n);
    if (q)
        n = (size_t)(q - (const char *)r->url.p);
    snprintf(out, cap, "%s %.*s", http_method_str(r->method), (int)(n > 200 ? 200 : n),
             (const char *)r->url.p);
}

/* Authenticated: is it allowed? 0 go on, -1 answered (403). */
static int authorize(conn *c, const char *path, size_t plen)
{
    c->vis_stream[0] = 0;
    need n;
    http_need(c->req.method, path, plen, &n);
    const auth_who *who = &c->who;
    int ok = 1;
    char why[1200] = "";
    switch (n.kind) {
    case NEED_NONE:
    case NEED_USER:
        break;
    case NEED_OPS:
        ok = access_ops(who);
        snprintf(why, sizeof why, "this operation needs $ops or $admins");
        break;
    case NEED_GROUP:
        ok = access_admin(who) || access_in_group(who, n.group);
        snprintf(why, sizeof why, "this operation needs $admins or %s", n.group);
        break;
    case NEED_ADMIN:
        ok = access_admin(who);
        snprintf(why, sizeof why, "this operation needs $admins");
        break;
    case NEED_STREAM:
        ok = access_stream(c->srv, who, n.stream, n.op);
        snprintf(why, sizeof why, "access denied: %.100s may not %s %.900s", who->name,
                 op_name(n.op), n.stream);
        break;
    }
    if (ok)
        return 0;
    char action[300];
    action_of(c, action, sizeof action);
    auth_refusal ref = {.status = 403, .code = "ACCESS_DENIED", .message = why, .audit = 1};
    refuse(c, &ref, who->name, action);
    return -1;
}

static void http_auth_done(conn *c, completion *cp)
{
    auth_refusal ref;
    c->state = CS_READING;
    if (auth_finish(c->srv, cp->extra, &c->who, &ref) != AUTH_OK) {
        char action[300];
        action_of(c, action, sizeof action);
        refuse(c, &ref, auth_job_user(cp->extra), action);
        return;
    }
    c->req.authed = 1;
    route_request(c); /* again: the gate now only authorises */
}

int access_http_gate(conn *c, const char *path, size_t plen)
{
    request *r = &c->req;
    if (!auth_enabled(c->srv)) {
        /* Authentication off (no user yet): every request is the open
         * superuser, whom every check below lets through (auth_start and
         * authorize would say so after working out what the path needs,
         * formatting the peer's address and the refusal's words), so
         * nothing is decided here. The connection keeps its superuser
         * from one request to the next. Once a user exists this branch
         * is never taken again (auth.c: authentication never turns off
         * while serving). */
        if (!c->who.open)
            auth_who_superuser(&c->who);
        c->vis_stream[0] = 0;
        r->authed = 1;
        return 0;
    }
    if (!r->authed) {
        need n;
        http_need(r->method, path, plen, &n);
        if (n.kind == NEED_NONE) {
            auth_who_superuser(&c->who);
            c->who.open = 0;
            c->who.admin = c->who.ops = 0;
            return 0;
        }
        char addr[64];
        auth_peer_addr(c, addr, sizeof addr);
        struct auth_job *job = NULL;
        auth_refusal ref;
        int rc;
        if (r->authorization_too_long) {
            ref = (auth_refusal){.status = 401, .code = "UNAUTHENTICATED",
                                 .message = "Authorization header too long or repeated",
                                 .audit = 1};
            rc = AUTH_FAIL;
            if (!auth_enabled(c->srv)) {
                auth_who_superuser(&c->who);
                rc = AUTH_OK;
            }
        } else {
            rc = auth_start(c->srv, r->has_authorization ? r->authorization : NULL,
                            r->has_authorization ? strlen(r->authorization) : 0, addr, &c->who,
                            &job, &ref);
        }
        if (rc == AUTH_FAIL) {
            char action[300];
            action_of(c, action, sizeof action);
            refuse(c, &ref, NULL, action);
            return -1;
        }
        if (rc == AUTH_PENDING) {
            completion *cp = calloc(1, sizeof *cp);
            if (!cp) {
                auth_job_free(job);
                http_fail(c, 503, "UNAVAILABLE", "out of memory");
                return -1;
            }
            cp->c = c;
            cp->done = http_auth_done;
            c->async_pending++;
            c->state = CS_BUSY;
            auth_job_submit(c->srv, job, cp);
            return -1;
        }
        r->authed = 1;
    }
    return authorize(c, path, plen);
}
