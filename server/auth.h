/*
 * auth.h - users, authentication (auth.c) and access control (access.c)
 * for the parts of server/. Not for use outside server/.
 */
#ifndef STELE_AUTH_H
#define STELE_AUTH_H

#include <jansson.h>

#include "server_int.h"

#define AUTH_CACHE_TTL_MS 30000 /* a verified password is trusted this long */
#define AUTH_PASSWORD_MAX 256
enum { AUTH_OK, AUTH_PENDING, AUTH_FAIL };
enum { AUTH_JOB_VERIFY, AUTH_JOB_HASH, AUTH_JOB_CHANGE };

/* Why a request was refused: HTTP status (401, 403, 429, 503), code,
 * message; retry_after in seconds for 429; audit: write an audit line. */
typedef struct auth_refusal {
    int status;
    const char *code;
    const char *message;
    int retry_after;
    int audit;
} auth_refusal;

struct auth_job;

/* auth.c */
int auth_init(server *s); /* -1 with a message on stderr */
void auth_free(server *s);
void auth_tick(server *s);
int auth_enabled(const server *s);
void auth_enable(server *s);
/* Look at the Authorization value `hdr` (NULL: none) of a request from
 * `addr`: AUTH_OK with *who set (auth off: a superuser), AUTH_FAIL with
 * *ref, or AUTH_PENDING with *job to hand to auth_job_submit (Argon2id runs
 * on the worker thread); then auth_finish on the loop. */
int auth_start(server *s, const char *hdr, size_t hlen, const char *addr, auth_who *who,
               struct auth_job **job, auth_refusal *ref);
int auth_finish(server *s, struct auth_job *j, auth_who *who, auth_refusal *ref);
/* Queue `j` on the worker; `cp` (malloc'ed, c / op / done set) is posted
 * when done, with cp->extra = j and cp->extra_free freeing it. */
void auth_job_submit(server *s, struct auth_job *j, completion *cp);
struct auth_job *auth_job_new(server *s, int kind, const char *user, const char *password);
void auth_job_free(void *j);
int auth_job_ok(const struct auth_job *j);
const char *auth_job_hash(const struct auth_job *j);
const char *auth_job_user(const struct auth_job *j);
void auth_job_set_ctx(struct auth_job *j, void *ctx);
void *auth_job_ctx(const struct auth_job *j);
/* AUTH_JOB_CHANGE: the job's password is the current one, checked against
 * `stored`; then `newpw` is hashed. */
void auth_job_set_new_password(struct auth_job *j, const char *newpw, const char *stored);
/* The stored Argon2id string of a user ("" if none). */
const char *auth_user_hash(server *s, const char *name);
void auth_who_superuser(auth_who *who);
/* One event to $users (type, JSON data); catches up the table after. 0 or
 * a STELE_E* code with `err`. */
int auth_write(server *s, const char *type, json_t *data, char *err, size_t cap);
int auth_name_ok(const char *name);
json_t *auth_user_json(server *s, const char *name); /* NULL: no such user */
json_t *auth_users_json(server *s);
json_t *auth_keys_json(server *s);
int auth_user_exists(server *s, const char *name);
int auth_user_disabled(server *s, const char *name);
int auth_key_exists(server *s, const char *id);
/* A new API key for `user`: the token (shown once) and its id. */
int auth_new_key(server *s, const char *user, const char *name, char *token, size_t cap,
                 char *id, size_t idcap, char *err, size_t errcap);
/* An audit line (and the denied / admin-action counters). result:
 * "ok", "failed", "denied", "unauthenticated", "throttled". */
void auth_audit(server *s, const char *who, const char *addr, const char *action,
                const char *result, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void auth_peer_addr(const conn *c, char *out, size_t cap);
void auth_metrics(server *s, buf *out);
/* The stream policies in force (borrowed; NULL: none set). */
json_t *auth_policies(server *s);

/* access.c: what a principal may do. */
enum { ACL_R, ACL_W, ACL_D, ACL_MR, ACL_MW };
/* 1 if `who` may do `op` on `stream` ("$all" for $all reads). */
int access_stream(server *s, const auth_who *who, const char *stream, int op);
/* Stream policies (PUT /policies): 0 if `p` is well formed, else -1 with
 * msg. */
int access_policies_check(json_t *p, char *msg, size_t cap);
/* 1 if `who` is in $admins (or auth is off). */
int access_admin(const auth_who *who);
/* 1 if `who` belongs to `group`. */
int access_in_group(const auth_who *who, const char *group);
/* 1 if `who` is in $admins or $ops. */
int access_ops(const auth_who *who);

#endif
