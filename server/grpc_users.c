/*
 * grpc_users.c - event_store.client.users.Users: the KurrentDB clients'
 * user management (createUser, updateUser, deleteUser, enableUser,
 * disableUser, getUser, changeUserPassword, resetUserPassword) over the
 * same users as HTTP's /users (auth.c; docs/security.md).
 *
 * $admins may do everything; a user may read its own details and change its
 * own password (with the current one). Hashing a password (Argon2id) runs
 * on auth.c's worker: the call waits (a grpc_op in flight) and answers from
 * the completion. Each change is one event in `$users` and one audit line.
 * Errors: NOT_FOUND (no such user), ALREADY_EXISTS, INVALID_ARGUMENT (names,
 * empty passwords), UNAUTHENTICATED (a wrong current password),
 * PERMISSION_DENIED with `exception: access-denied`.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "grpc.h"
#include "users.pb-c.h"

typedef struct hash_op {
    grpc_op op;
    int kind; /* H_CREATE, H_UPDATE, H_CHANGE, H_RESET */
    char name[AUTH_NAME_MAX];
    char full_name[256];
    json_t *groups;
} hash_op;

enum { H_CREATE, H_UPDATE, H_CHANGE, H_RESET };

static void audit(gcall *call, const char *action, const char *result, const char *detail)
{
    char addr[64];
    auth_peer_addr(call->c, addr, sizeof addr);
    auth_audit(call->c->srv, call->who.name, addr, action, result, "%s", detail ? detail : "");
}

static int deny(gcall *call, const char *action)
{
    audit(call, action, "denied", "needs $admins");
    grpc_fail_code(call, "ACCESS_DENIED", "Access denied");
    return -1;
}

/* 0 if `name` is a user name and (must_exist) a user. */
static int check_name(gcall *call, const char *name, int must_exist)
{
    if (!name || !auth_name_ok(name)) {
        grpc_fail_code(call, "INVALID_ARGUMENT",
                    "login_name: 1-127 printable characters without spaces, ':', '\"', '\\' "
                    "or '/'");
        return -1;
    }
    if (must_exist && !auth_user_exists(call->c->srv, name)) {
        grpc_fail_code(call, "USER_NOT_FOUND", "no such user");
        return -1;
    }
    return 0;
}

static int password_ok(gcall *call, const char *pw, const char *what)
{
    if (!pw || !*pw || strlen(pw) >= AUTH_PASSWORD_MAX) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: 1 to %d bytes", what, AUTH_PASSWORD_MAX - 1);
        grpc_fail_code(call, "INVALID_ARGUMENT", msg);
        return 0;
    }
    return 1;
}

static json_t *groups_json(gcall *call, size_t n, char **groups)
{
    if (n > AUTH_MAX_GROUPS) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "at most 8 groups");
        return NULL;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        if (!auth_name_ok(groups[i])) {
            json_decref(a);
            grpc_fail_code(call, "INVALID_ARGUMENT", "groups must be names");
            return NULL;
        }
        json_array_append_new(a, json_string(groups[i]));
    }
    return a;
}

/* One event to $users, then an empty response of `desc` (or the error). */
static void write_event(gcall *call, const char *type, json_t *ev, const char *action,
                        const char *name, const ProtobufCMessageDescriptor *desc)
{
    char err[256];
    int rc = ev ? auth_write(call->c->srv, type, ev, err, sizeof err) : STELE_ENOMEM;
    json_decref(ev);
    if (rc) {
        audit(call, action, "failed", err);
        grpc_finish(call, rc == STELE_EWRONGREV ? GRPC_ABORTED : GRPC_UNAVAILABLE, err);
        return;
    }
    audit(call, action, "ok", name);
    ProtobufCMessage m;
    protobuf_c_message_init(desc, &m);
    grpc_send(call, &m);
    grpc_finish(call, GRPC_OK, NULL);
}

static void hash_done(gcall *call, grpc_op *op, const completion *cp)
{
    hash_op *h = (hash_op *)op;
    struct auth_job *j = cp->extra;
    static const char *const actions[] = {"create user", "update user", "change password",
                                          "reset password"};
    static const ProtobufCMessageDescriptor *const descs[] = {
        &event_store__client__users__create_resp__descriptor,
        &event_store__client__users__update_resp__descriptor,
        &event_store__client__users__change_password_resp__descriptor,
        &event_store__client__users__reset_password_resp__descriptor};
    if (!auth_job_ok(j)) {
        audit(call, actions[h->kind], "failed",
              h->kind == H_CHANGE ? "wrong current password" : "hashing");
        grpc_finish(call, h->kind == H_CHANGE ? GRPC_UNAUTHENTICATED : GRPC_UNAVAILABLE,
                    h->kind == H_CHANGE ? "the current password is wrong"
                                        : "the password could not be hashed");
        return;
    }
    if (h->kind == H_CREATE) {
        if (auth_user_exists(call->c->srv, h->name)) {
            grpc_finish(call, GRPC_ALREADY_EXISTS, "the user exists already");
            return;
        }
        json_t *ev = json_pack("{s:s,s:s,s:O,s:s}", "loginName", h->name, "fullName",
                               h->full_name, "groups", h->groups, "hash", auth_job_hash(j));
        write_event(call, "$UserCreated", ev, actions[h->kind], h->name, descs[h->kind]);
        auth_enable(call->c->srv);
        return;
    }
    if (h->kind == H_UPDATE) {
        /* The password first, then name and groups (two events). */
        json_t *pw = json_pack("{s:s,s:s}", "loginName", h->name, "hash", auth_job_hash(j));
        char err[256];
        int rc = pw ? auth_write(call->c->srv, "$PasswordChanged", pw, err, sizeof err)
                    : STELE_ENOMEM;
        json_decref(pw);
        if (rc) {
            grpc_finish(call, GRPC_UNAVAILABLE, err);
            return;
        }
        json_t *ev = json_pack("{s:s,s:s,s:O}", "loginName", h->name, "fullName", h->full_name,
                               "groups", h->groups);
        write_event(call, "$UserUpdated", ev, actions[h->kind], h->name, descs[h->kind]);
        return;
    }
    json_t *ev = json_pack("{s:s,s:s}", "loginName", h->name, "hash", auth_job_hash(j));
    write_event(call, "$PasswordChanged", ev, actions[h->kind], h->name, descs[h->kind]);
}

static void hash_cleanup(grpc_op *op)
{
    json_decref(((hash_op *)op)->groups);
}

/* Start a hash (kind, name, the new password; for H_CHANGE the current one
 * checked first), finishing in hash_done. */
static void start_hash(gcall *call, int kind, const char *name, const char *full_name,
                       json_t *groups, const char *newpw, const char *current)
{
    server *s = call->c->srv;
    hash_op *h = calloc(1, sizeof *h);
    struct auth_job *j = NULL;
    if (h) {
        if (kind == H_CHANGE) {
            j = auth_job_new(s, AUTH_JOB_CHANGE, name, current);
            if (j)
                auth_job_set_new_password(j, newpw, auth_user_hash(s, name));
        } else {
            j = auth_job_new(s, AUTH_JOB_HASH, name, newpw);
        }
    }
    completion *cp = j ? calloc(1, sizeof *cp) : NULL;
    if (!cp) {
        auth_job_free(j);
        free(h);
        json_decref(groups);
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    h->kind = kind;
    snprintf(h->name, sizeof h->name, "%s", name);
    snprintf(h->full_name, sizeof h->full_name, "%s", full_name ? full_name : "");
    h->groups = groups;
    h->op.call = call;
    h->op.done = hash_done;
    h->op.cleanup = hash_cleanup;
    cp->c = call->c;
    cp->op = &h->op;
    call->pending++;
    call->c->async_pending++;
    auth_job_submit(s, j, cp);
}

static void wipe(char *p)
{
    if (p)
        sodium_memzero(p, strlen(p));
}

/* ------------------------------------------------------------ methods */

static void users_create(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Users__CreateReq *r = (void *)msg;
    EventStore__Client__Users__CreateReq__Options *o = r->options;
    if (!access_admin(&call->who)) {
        deny(call, "create user");
    } else if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options missing");
    } else if (check_name(call, o->login_name, 0) == 0 && password_ok(call, o->password, "password")) {
        if (auth_user_exists(call->c->srv, o->login_name)) {
            grpc_finish(call, GRPC_ALREADY_EXISTS, "the user exists already");
        } else {
            json_t *g = groups_json(call, o->n_groups, o->groups);
            if (g)
                start_hash(call, H_CREATE, o->login_name, o->full_name, g, o->password, NULL);
        }
    }
    if (o)
        wipe(o->password);
}

static void users_update(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Users__UpdateReq *r = (void *)msg;
    EventStore__Client__Users__UpdateReq__Options *o = r->options;
    if (!access_admin(&call->who)) {
        deny(call, "update user");
    } else if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options missing");
    } else if (check_name(call, o->login_name, 1) == 0) {
        json_t *g = groups_json(call, o->n_groups, o->groups);
        if (g && o->password && *o->password) {
            if (password_ok(call, o->password, "password"))
                start_hash(call, H_UPDATE, o->login_name, o->full_name, g, o->password, NULL);
            else
                json_decref(g);
        } else if (g) {
            json_t *ev = json_pack("{s:s,s:s,s:o}", "loginName", o->login_name, "fullName",
                                   o->full_name ? o->full_name : "", "groups", g);
            write_event(call, "$UserUpdated", ev, "update user", o->login_name,
                        &event_store__client__users__update_resp__descriptor);
        }
    }
    if (o)
        wipe(o->password);
}

/* Delete, Enable, Disable: one event naming the user. */
static void simple(gcall *call, const char *name, const char *type, const char *action,
                   const ProtobufCMessageDescriptor *desc)
{
    if (!access_admin(&call->who)) {
        deny(call, action);
        return;
    }
    if (check_name(call, name, 1) != 0)
        return;
    write_event(call, type, json_pack("{s:s}", "loginName", name), action, name, desc);
}

static void users_delete(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Users__DeleteReq *r = (void *)msg;
    simple(call, r->options ? r->options->login_name : NULL, "$UserDeleted", "delete user",
           &event_store__client__users__delete_resp__descriptor);
}

static void users_enable(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Users__EnableReq *r = (void *)msg;
    simple(call, r->options ? r->options->login_name : NULL, "$UserEnabled", "enable user",
           &event_store__client__users__enable_resp__descriptor);
}

static void users_disable(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Users__DisableReq *r = (void *)msg;
    simple(call, r->options ? r->options->login_name : NULL, "$UserDisabled", "disable user",
           &event_store__client__users__disable_resp__descriptor);
}

static void send_details(gcall *call, json_t *u)
{
    EventStore__Client__Users__DetailsResp__UserDetails__DateTime when =
        EVENT_STORE__CLIENT__USERS__DETAILS_RESP__USER_DETAILS__DATE_TIME__INIT;
    EventStore__Client__Users__DetailsResp__UserDetails d =
        EVENT_STORE__CLIENT__USERS__DETAILS_RESP__USER_DETAILS__INIT;
    EventStore__Client__Users__DetailsResp resp = EVENT_STORE__CLIENT__USERS__DETAILS_RESP__INIT;
    char *groups[AUTH_MAX_GROUPS];
    json_t *g = json_object_get(u, "groups");
    size_t n = 0, i;
    json_t *x;
    json_array_foreach(g, i, x)
    {
        if (n < AUTH_MAX_GROUPS)
            groups[n++] = (char *)json_string_value(x);
    }
    d.login_name = (char *)json_string_value(json_object_get(u, "loginName"));
    d.full_name = (char *)json_string_value(json_object_get(u, "fullName"));
    d.n_groups = n;
    d.groups = groups;
    d.disabled = json_is_true(json_object_get(u, "disabled"));
    /* KurrentDB's DateTime: 100 ns ticks since the Unix epoch. */
    when.ticks_since_epoch = (int64_t)json_integer_value(json_object_get(u, "lastUpdatedUs")) * 10;
    d.last_updated = &when;
    resp.user_details = &d;
    grpc_send(call, &resp.base);
}

static void users_details(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Users__DetailsReq *r = (void *)msg;
    const char *name = r->options ? r->options->login_name : "";
    server *s = call->c->srv;
    if (!name || !*name) {
        if (!access_admin(&call->who)) {
            deny(call, "list users");
            return;
        }
        json_t *all = auth_users_json(s);
        size_t i;
        json_t *u;
        json_array_foreach(all, i, u) send_details(call, u);
        json_decref(all);
        grpc_finish(call, GRPC_OK, NULL);
        return;
    }
    if (!access_admin(&call->who) && strcmp(call->who.name, name)) {
        deny(call, "user details");
        return;
    }
    if (check_name(call, name, 1) != 0)
        return;
    json_t *u = auth_user_json(s, name);
    send_details(call, u);
    json_decref(u);
    grpc_finish(call, GRPC_OK, NULL);
}

static void users_change_password(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Users__ChangePasswordReq *r = (void *)msg;
    EventStore__Client__Users__ChangePasswordReq__Options *o = r->options;
    if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options missing");
        return;
    }
    if (!access_admin(&call->who) && strcmp(call->who.name, o->login_name)) {
        deny(call, "change password");
    } else if (check_name(call, o->login_name, 1) == 0 &&
               password_ok(call, o->new_password, "new_password") &&
               password_ok(call, o->current_password, "current_password")) {
        start_hash(call, H_CHANGE, o->login_name, NULL, NULL, o->new_password,
                   o->current_password);
    }
    wipe(o->current_password);
    wipe(o->new_password);
}

static void users_reset_password(gcall *call, ProtobufCMessage *msg)
{
    EventStore__Client__Users__ResetPasswordReq *r = (void *)msg;
    EventStore__Client__Users__ResetPasswordReq__Options *o = r->options;
    if (!access_admin(&call->who)) {
        deny(call, "reset password");
    } else if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "options missing");
    } else if (check_name(call, o->login_name, 1) == 0 &&
               password_ok(call, o->new_password, "new_password")) {
        start_hash(call, H_RESET, o->login_name, NULL, NULL, o->new_password, NULL);
    }
    if (o)
        wipe(o->new_password);
}

#define USERS "/event_store.client.users.Users/"
const grpc_method grpc_users_methods[] = {
    {.path = USERS "Create", .req = &event_store__client__users__create_req__descriptor,
     .on_msg = users_create},
    {.path = USERS "Update", .req = &event_store__client__users__update_req__descriptor,
     .on_msg = users_update},
    {.path = USERS "Delete", .req = &event_store__client__users__delete_req__descriptor,
     .on_msg = users_delete},
    {.path = USERS "Disable", .req = &event_store__client__users__disable_req__descriptor,
     .on_msg = users_disable},
    {.path = USERS "Enable", .req = &event_store__client__users__enable_req__descriptor,
     .on_msg = users_enable},
    {.path = USERS "Details", .req = &event_store__client__users__details_req__descriptor,
     .server_streaming = 1, .on_msg = users_details},
    {.path = USERS "ChangePassword",
     .req = &event_store__client__users__change_password_req__descriptor,
     .on_msg = users_change_password},
    {.path = USERS "ResetPassword",
     .req = &event_store__client__users__reset_password_req__descriptor,
     .on_msg = users_reset_password},
};
const size_t grpc_users_nmethods = sizeof grpc_users_methods / sizeof grpc_users_methods[0];
