/*
 * routes_users.c - user and API key management over HTTP (docs/security.md,
 * docs/http-api.md), for $admins except where a user acts on itself:
 *
 *   GET    /users                      every user (no secrets)
 *   GET    /users/{name}               one user (admins, or the user itself)
 *   PUT    /users/{name}               create: {"password","fullName","groups"}
 *   POST   /users/{name}               update: {"fullName","groups"}
 *   DELETE /users/{name}               delete
 *   POST   /users/{name}/enable        enable / disable
 *   POST   /users/{name}/disable
 *   POST   /users/{name}/password      change: {"currentPassword","newPassword"}
 *                                      (the user itself, or an admin)
 *   POST   /users/{name}/reset-password  {"newPassword"} (admins)
 *   GET    /api-keys                   every key (id, user, name, revoked)
 *   POST   /api-keys                   create: {"loginName","name"}: the
 *                                      token is in this answer only
 *   DELETE /api-keys/{id}              revoke
 *
 * Hashing a password (Argon2id) runs on auth.c's worker thread: the request
 * waits (BUSY) and is answered from the completion. Each change is one
 * event in `$users` (auth_write) and one audit line.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "urlcode.h"

typedef struct pending_user {
    char name[AUTH_NAME_MAX];
    char full_name[256];
    json_t *groups;
    int kind; /* PU_CREATE, PU_CHANGE, PU_RESET */
} pending_user;

enum { PU_CREATE, PU_CHANGE, PU_RESET };

static void reply_json(conn *c, int status, json_t *o)
{
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!t) {
        http_fail(c, 503, "UNAVAILABLE", "out of memory");
        return;
    }
    size_t n = strlen(t);
    http_respond(c, status, "application/json", t, n, NULL);
    free(t);
    http_request_finish(c);
}

static void audit(conn *c, const char *action, const char *result, const char *detail)
{
    char addr[64];
    auth_peer_addr(c, addr, sizeof addr);
    auth_audit(c->srv, c->who.name, addr, action, result, "%s", detail ? detail : "");
}

static void deny(conn *c, const char *action)
{
    audit(c, action, "denied", "needs $admins");
    http_fail(c, 403, "ACCESS_DENIED", "this operation needs $admins");
}

static int groups_ok(json_t *g, char *msg, size_t cap)
{
    if (!g)
        return 1;
    if (!json_is_array(g) || json_array_size(g) > AUTH_MAX_GROUPS) {
        snprintf(msg, cap, "groups must be an array of at most %d names", AUTH_MAX_GROUPS);
        return 0;
    }
    size_t i;
    json_t *x;
    json_array_foreach(g, i, x)
    {
        if (!json_is_string(x) || !auth_name_ok(json_string_value(x))) {
            snprintf(msg, cap, "groups must be names (1-127 printable characters, no spaces, "
                               "':', '\"', '\\\\' or '/')");
            return 0;
        }
    }
    return 1;
}

static void hash_done(conn *c, completion *cp)
{
    struct auth_job *j = cp->extra;
    pending_user *pu = auth_job_ctx(j);
    c->state = CS_READING;
    static const char *const actions[] = {"create user", "change password", "reset password"};
    const char *action = actions[pu->kind];
    if (!auth_job_ok(j)) {
        audit(c, action, "failed", pu->kind == PU_CHANGE ? "wrong current password" : "hashing");
        if (pu->kind == PU_CHANGE)
            http_fail(c, 401, "UNAUTHENTICATED", "the current password is wrong");
        else
            http_fail(c, 503, "UNAVAILABLE", "the password could not be hashed (memory?)");
        goto out;
    }
    json_t *o;
    const char *type;
    if (pu->kind == PU_CREATE) {
        if (auth_user_exists(c->srv, pu->name)) {
            http_fail(c, 409, "ALREADY_EXISTS", "the user exists already");
            goto out;
        }
        o = json_pack("{s:s,s:s,s:o,s:s}", "loginName", pu->name, "fullName", pu->full_name,
                      "groups", pu->groups ? json_incref(pu->groups) : json_array(), "hash",
                      auth_job_hash(j));
        type = "$UserCreated";
    } else {
        o = json_pack("{s:s,s:s}", "loginName", pu->name, "hash", auth_job_hash(j));
        type = "$PasswordChanged";
    }
    char err[256];
    int rc = o ? auth_write(c->srv, type, o, err, sizeof err) : STELE_ENOMEM;
    json_decref(o);
    if (rc) {
        audit(c, action, "failed", err);
        http_stele_error(c, rc, err, NULL);
        goto out;
    }
    if (pu->kind == PU_CREATE)
        auth_enable(c->srv);
    audit(c, action, "ok", pu->name);
    reply_json(c, pu->kind == PU_CREATE ? 201 : 200,
               pu->kind == PU_CREATE ? auth_user_json(c->srv, pu->name)
                                     : json_pack("{s:s}", "loginName", pu->name));
out:
    json_decref(pu->groups);
    free(pu);
}

/* Hash `password` on the worker (verifying `current` against the stored
 * hash first for PU_CHANGE), then finish in hash_done. */
static void start_hash(conn *c, pending_user *pu, const char *password, const char *current,
                       const char *stored)
{
    struct auth_job *j;
    if (pu->kind == PU_CHANGE) {
        j = auth_job_new(c->srv, AUTH_JOB_CHANGE, pu->name, current);
        if (j)
            auth_job_set_new_password(j, password, stored);
    } else {
        j = auth_job_new(c->srv, AUTH_JOB_HASH, pu->name, password);
    }
    completion *cp = j ? calloc(1, sizeof *cp) : NULL;
    if (!cp) {
        auth_job_free(j);
        json_decref(pu->groups);
        free(pu);
        http_fail(c, 503, "UNAVAILABLE", "out of memory");
        return;
    }
    auth_job_set_ctx(j, pu);
    cp->c = c;
    cp->done = hash_done;
    c->async_pending++;
    c->state = CS_BUSY;
    auth_job_submit(c->srv, j, cp);
}

static json_t *body_object(conn *c)
{
    json_error_t err;
    json_t *o = c->req.body.len ? json_loadb((const char *)c->req.body.p, c->req.body.len, 0, &err)
                                : json_object();
    if (!json_is_object(o)) {
        json_decref(o);
        http_fail(c, 400, "INVALID_JSON", "the body must be a JSON object");
        return NULL;
    }
    return o;
}

static const char *str_member(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int password_ok(conn *c, const char *pw, const char *what)
{
    if (!pw || !*pw || strlen(pw) >= AUTH_PASSWORD_MAX) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s must be a string of 1 to %d bytes", what,
                 AUTH_PASSWORD_MAX - 1);
        http_fail(c, 400, "INVALID_ARGUMENT", msg);
        return 0;
    }
    return 1;
}

/* PUT /users/NAME (admin): a new user; its password is hashed off the
 * event loop (start_hash), which answers. */
static void user_create(conn *c, const char *name)
{
    json_t *o = body_object(c);
    if (!o)
        return;
    const char *pw = str_member(o, "password");
    char msg[200];
    json_t *g = json_object_get(o, "groups");
    if (!password_ok(c, pw, "password")) {
    } else if (!groups_ok(g, msg, sizeof msg)) {
        http_fail(c, 400, "INVALID_ARGUMENT", msg);
    } else if (auth_user_exists(c->srv, name)) {
        http_fail(c, 409, "ALREADY_EXISTS", "the user exists already");
    } else {
        pending_user *pu = calloc(1, sizeof *pu);
        if (!pu) {
            http_fail(c, 503, "UNAVAILABLE", "out of memory");
        } else {
            pu->kind = PU_CREATE;
            snprintf(pu->name, sizeof pu->name, "%s", name);
            const char *fn = str_member(o, "fullName");
            snprintf(pu->full_name, sizeof pu->full_name, "%s", fn ? fn : "");
            pu->groups = g ? json_incref(g) : NULL;
            start_hash(c, pu, pw, NULL, NULL);
        }
    }
    if (pw)
        sodium_memzero((char *)pw, strlen(pw));
    json_decref(o);
}

/* Writes the user event ev (taken; NULL: out of memory) and audits it:
 * 0, or the error already answered. */
static int write_user_event(conn *c, const char *action, const char *name, const char *type,
                            json_t *ev)
{
    char err[256];
    int rc = ev ? auth_write(c->srv, type, ev, err, sizeof err) : STELE_ENOMEM;
    json_decref(ev);
    if (rc) {
        audit(c, action, "failed", err);
        http_stele_error(c, rc, err, NULL);
        return rc;
    }
    audit(c, action, "ok", name);
    return 0;
}

/* POST /users/NAME (admin): new full name and groups; those not given
 * stay. */
static void user_update(conn *c, const char *name, const char *action)
{
    json_t *o = body_object(c);
    if (!o)
        return;
    json_t *cur = auth_user_json(c->srv, name);
    json_t *g = json_object_get(o, "groups");
    char msg[200];
    if (!groups_ok(g, msg, sizeof msg)) {
        json_decref(o);
        json_decref(cur);
        return (void)http_fail(c, 400, "INVALID_ARGUMENT", msg);
    }
    const char *fn = str_member(o, "fullName");
    json_t *ev = json_pack("{s:s,s:s,s:O}", "loginName", name, "fullName",
                           fn ? fn : str_member(cur, "fullName"), "groups",
                           g ? g : json_object_get(cur, "groups"));
    json_decref(o);
    json_decref(cur);
    if (!write_user_event(c, action, name, "$UserUpdated", ev))
        reply_json(c, 200, auth_user_json(c->srv, name));
}

/* DELETE /users/NAME (admin) */
static void user_delete(conn *c, const char *name, const char *action)
{
    json_t *ev = json_pack("{s:s}", "loginName", name);
    if (write_user_event(c, action, name, "$UserDeleted", ev))
        return;
    http_respond(c, 204, NULL, NULL, 0, NULL);
    http_request_finish(c);
}

/* /users/NAME: GET (admin or the user), PUT, POST, DELETE (admin). */
static void user_resource(conn *c, const char *name, int admin, int self)
{
    int m = c->req.method;
    char action[200];
    if (m == HTTP_GET) {
        if (!admin && !self)
            return deny(c, "user details");
        json_t *u = auth_user_json(c->srv, name);
        if (!u)
            return (void)http_fail(c, 404, "NOT_FOUND", "no such user");
        return reply_json(c, 200, u);
    }
    snprintf(action, sizeof action, "%s user %s", http_method_str(m), name);
    if (!admin)
        return deny(c, action);
    if (m == HTTP_PUT)
        return user_create(c, name);
    if (!auth_user_exists(c->srv, name))
        return (void)http_fail(c, 404, "NOT_FOUND", "no such user");
    if (m == HTTP_POST)
        return user_update(c, name, action);
    if (m == HTTP_DELETE)
        return user_delete(c, name, action);
    http_fail(c, 405, "METHOD_NOT_ALLOWED", "GET, PUT, POST or DELETE");
}

/* POST /users/NAME/enable or /disable (admin) */
static void user_enable(conn *c, const char *name, const char *action, int enable)
{
    json_t *ev = json_pack("{s:s}", "loginName", name);
    if (!write_user_event(c, action, name, enable ? "$UserEnabled" : "$UserDisabled", ev))
        reply_json(c, 200, auth_user_json(c->srv, name));
}

/* POST /users/NAME/password (the user, with the current password, or an
 * admin) and /reset-password (admin): the new password is hashed off the
 * event loop (start_hash), which answers. */
static void user_password(conn *c, const char *name, int admin, int reset, int change)
{
    json_t *o = body_object(c);
    if (!o)
        return;
    const char *np = str_member(o, "newPassword"), *cur = str_member(o, "currentPassword");
    if (password_ok(c, np, "newPassword") &&
        (reset || admin || password_ok(c, cur, "currentPassword"))) {
        pending_user *pu = calloc(1, sizeof *pu);
        if (!pu) {
            http_fail(c, 503, "UNAVAILABLE", "out of memory");
        } else {
            snprintf(pu->name, sizeof pu->name, "%s", name);
            /* An admin changing someone's password needs no current one. */
            pu->kind = change && !admin ? PU_CHANGE : PU_RESET;
            start_hash(c, pu, np, cur, auth_user_hash(c->srv, name));
        }
    }
    if (np)
        sodium_memzero((char *)np, strlen(np));
    if (cur)
        sodium_memzero((char *)cur, strlen(cur));
    json_decref(o);
}

static void user_route(conn *c, const char *name, const char *rest, size_t rlen)
{
    int m = c->req.method;
    int admin = access_admin(&c->who);
    int self = c->who.authenticated && !strcmp(c->who.name, name);
    if (rlen == 0)
        return user_resource(c, name, admin, self);
    if (m != HTTP_POST)
        return (void)http_fail(c, 405, "METHOD_NOT_ALLOWED", "POST");
    char action[200];
    snprintf(action, sizeof action, "%.*s user %s", (int)(rlen - 1), rest + 1, name);
    int enable = rlen == 7 && !memcmp(rest, "/enable", 7);
    int disable = rlen == 8 && !memcmp(rest, "/disable", 8);
    int change = rlen == 9 && !memcmp(rest, "/password", 9);
    int reset = rlen == 15 && !memcmp(rest, "/reset-password", 15);
    if (!enable && !disable && !change && !reset)
        return (void)http_fail(c, 404, "NOT_FOUND", "no such route");
    if (!admin && !(change && self))
        return deny(c, action);
    if (!auth_user_exists(c->srv, name))
        return (void)http_fail(c, 404, "NOT_FOUND", "no such user");
    if (enable || disable)
        return user_enable(c, name, action, enable);
    user_password(c, name, admin, reset, change);
}

static void keys_route(conn *c, const char *id, size_t idlen)
{
    int m = c->req.method;
    if (!access_admin(&c->who))
        return deny(c, "api keys");
    if (!idlen && m == HTTP_GET)
        return reply_json(c, 200, auth_keys_json(c->srv));
    if (!idlen && m == HTTP_POST) {
        json_t *o = body_object(c);
        if (!o)
            return;
        const char *user = str_member(o, "loginName"), *name = str_member(o, "name");
        if (!user || !auth_user_exists(c->srv, user)) {
            json_decref(o);
            return (void)http_fail(c, 400, "INVALID_ARGUMENT", "loginName must name a user");
        }
        char token[128], kid[32], err[256];
        int rc = auth_new_key(c->srv, user, name ? name : "", token, sizeof token, kid,
                              sizeof kid, err, sizeof err);
        if (rc) {
            json_decref(o);
            audit(c, "create api key", "failed", err);
            return (void)http_stele_error(c, rc, err, NULL);
        }
        char detail[200];
        snprintf(detail, sizeof detail, "key %s for %s", kid, user);
        audit(c, "create api key", "ok", detail);
        json_t *r = json_pack("{s:s,s:s,s:s}", "id", kid, "loginName", user, "token", token);
        sodium_memzero(token, sizeof token);
        json_decref(o);
        return reply_json(c, 201, r);
    }
    if (idlen && m == HTTP_DELETE) {
        char kid[64];
        snprintf(kid, sizeof kid, "%.*s", (int)(idlen > 60 ? 60 : idlen), id);
        if (!auth_key_exists(c->srv, kid))
            return (void)http_fail(c, 404, "NOT_FOUND", "no such API key (or revoked)");
        json_t *ev = json_pack("{s:s}", "id", kid);
        char err[256];
        int rc = ev ? auth_write(c->srv, "$ApiKeyRevoked", ev, err, sizeof err) : STELE_ENOMEM;
        json_decref(ev);
        if (rc)
            return (void)http_stele_error(c, rc, err, NULL);
        audit(c, "revoke api key", "ok", kid);
        http_respond(c, 204, NULL, NULL, 0, NULL);
        return http_request_finish(c);
    }
    http_fail(c, 405, "METHOD_NOT_ALLOWED", "GET or POST /api-keys, DELETE /api-keys/{id}");
}

/* GET / PUT /policies: the stream policies (access.c), $admins only. */
static void policies_route(conn *c)
{
    int m = c->req.method;
    if (!access_admin(&c->who))
        return deny(c, "stream policies");
    if (m == HTTP_GET) {
        json_t *p = auth_policies(c->srv);
        return reply_json(c, 200, p ? json_incref(p) : json_object());
    }
    if (m != HTTP_PUT)
        return (void)http_fail(c, 405, "METHOD_NOT_ALLOWED", "GET or PUT");
    json_t *o = body_object(c);
    if (!o)
        return;
    char msg[256], err[256];
    if (access_policies_check(o, msg, sizeof msg) != 0) {
        json_decref(o);
        return (void)http_fail(c, 400, "INVALID_ARGUMENT", msg);
    }
    int rc = auth_write(c->srv, "$StreamPoliciesSet", o, err, sizeof err);
    if (rc) {
        json_decref(o);
        audit(c, "set stream policies", "failed", err);
        return (void)http_stele_error(c, rc, err, NULL);
    }
    audit(c, "set stream policies", "ok", "");
    reply_json(c, 200, o);
}

int route_users(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    (void)q;
    (void)qlen;
    if (plen == 9 && !memcmp(path, "/policies", 9)) {
        policies_route(c);
        return 1;
    }
    if (plen == 6 && !memcmp(path, "/users", 6)) {
        if (c->req.method != HTTP_GET)
            http_fail(c, 405, "METHOD_NOT_ALLOWED", "GET");
        else if (!access_admin(&c->who))
            deny(c, "list users");
        else
            reply_json(c, 200, auth_users_json(c->srv));
        return 1;
    }
    if (plen > 7 && !memcmp(path, "/users/", 7)) {
        const char *seg = path + 7;
        size_t slen = plen - 7;
        const char *slash = memchr(seg, '/', slen);
        size_t nlen = slash ? (size_t)(slash - seg) : slen;
        char name[AUTH_NAME_MAX + 1];
        size_t n = 0;
        if (url_decode(seg, nlen, name, sizeof name - 1, &n) != 0) {
            http_fail(c, 400, "INVALID_ARGUMENT", "malformed user name in the path");
            return 1;
        }
        name[n] = 0;
        if (n != strlen(name) || !auth_name_ok(name)) {
            http_fail(c, 400, "INVALID_ARGUMENT",
                      "user names are 1-127 printable characters without spaces, ':', '\"', "
                      "'\\' or '/'");
            return 1;
        }
        user_route(c, name, slash ? slash : "", slash ? slen - nlen : 0);
        return 1;
    }
    if (plen >= 9 && !memcmp(path, "/api-keys", 9) && (plen == 9 || path[9] == '/')) {
        keys_route(c, plen > 10 ? path + 10 : "", plen > 10 ? plen - 10 : 0);
        return 1;
    }
    return 0;
}
