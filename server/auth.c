/*
 * auth.c - users, API keys and authentication for every door of the
 * server (HTTP/1.1, SSE, gRPC), docs/security.md.
 *
 * Where users live. In the store, in the system stream `$users`, so they
 * follow the store through backups, restores and every backend. Each
 * change is one event:
 *
 *   $UserCreated     {"loginName","fullName","groups":[...],"hash"}
 *   $UserUpdated     {"loginName","fullName","groups":[...]}
 *   $PasswordChanged {"loginName","hash"}
 *   $UserEnabled / $UserDisabled / $UserDeleted  {"loginName"}
 *   $ApiKeyCreated   {"id","loginName","name","hash"}
 *   $ApiKeyRevoked   {"id"}
 *   $StreamPoliciesSet  the stream policies (access.c), replacing the last
 *
 * `hash` of a password is libsodium's Argon2id string (crypto_pwhash_str:
 * algorithm, parameters, salt and hash in one string); an API key's is the
 * hex SHA-256 of its secret (32 random bytes: no dictionary to guard
 * against, so a fast hash suffices). Neither a password nor a key secret is
 * ever stored, logged or returned after creation.
 *
 * Each user keeps the time of its last change event (created_us of its
 * $UserCreated, $UserUpdated, $PasswordChanged, $UserEnabled or
 * $UserDisabled): `lastUpdated` in /users and gRPC Users Details.
 *
 * The table in memory is the fold of `$users`, read at start and caught up
 * once a second (auth_tick), so servers that share a PostgreSQL or
 * DynamoDB store see each other's changes within about a second. Changes go
 * through auth_write(): one append with the expected revision this server
 * last folded, so two servers changing users at once cannot both win; the
 * loser catches up and reports a conflict.
 *
 * Verifying a password with Argon2id costs tens of milliseconds of CPU and
 * 64 MiB: never on the event loop. A worker thread (one: it bounds the
 * memory and leaves a core to the loop) verifies and hashes; the request
 * waits (its connection BUSY, its gRPC call held) and resumes when the
 * worker posts the result through the loop's completion queue. A success
 * is cached for AUTH_CACHE_TTL_MS, keyed by a BLAKE2b keyed hash (a key
 * random per process) of user and password: later requests with the same
 * credentials cost a hash and a lookup. A password change, disable or
 * delete makes the user's cached entries useless at once (the entry names
 * the user's version).
 *
 * Failed authentications are counted per client address: after
 * AUTH_FAIL_LIMIT failures within AUTH_FAIL_WINDOW_MS the address gets 429
 * (gRPC RESOURCE_EXHAUSTED) at once, without a verification, until the
 * window ends: a brute force is slowed to a few
 * guesses a minute and costs no Argon2 time, and other clients are served
 * as usual. An unknown user name is verified against a dummy hash, so the
 * time of an answer does not tell whether a user exists. Comparisons of
 * secrets are constant-time (sodium_memcmp, crypto_pwhash_str_verify).
 *
 * Every admin action and every refusal writes one audit line
 * (msg=audit ...) at level error, so it is kept at every log level.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "auth.h"

#define AUTH_CACHE_SLOTS 4096
#define AUTH_FAIL_SLOTS 4096
#define AUTH_FAIL_LIMIT 5
#define AUTH_FAIL_WINDOW_MS 60000

typedef struct auth_user {
    char name[AUTH_NAME_MAX];
    char full_name[256];
    char groups[AUTH_MAX_GROUPS][AUTH_NAME_MAX];
    int ngroups;
    char hash[crypto_pwhash_STRBYTES];
    int disabled, deleted;
    uint64_t version; /* bumped by every change: stale cache entries miss */
    int64_t updated_us; /* created_us of the user's last change event */
} auth_user;

typedef struct auth_key {
    char id[32];
    char user[AUTH_NAME_MAX];
    char name[128];
    uint8_t hash[32];
    int revoked;
} auth_key;

typedef struct cache_entry {
    uint8_t key[32];
    char user[AUTH_NAME_MAX];
    uint64_t version;
    int64_t expires_ms;
} cache_entry;

typedef struct fail_entry {
    char addr[48];
    int64_t window_start_ms;
    int failures;
} fail_entry;

struct auth_job {
    struct auth_job *next;
    int kind; /* JOB_VERIFY, JOB_HASH */
    char user[AUTH_NAME_MAX];
    char password[AUTH_PASSWORD_MAX];
    char password2[AUTH_PASSWORD_MAX]; /* AUTH_JOB_CHANGE: the new one */
    char hash[crypto_pwhash_STRBYTES];
    int ok;
    uint64_t version;
    uint8_t cache_key[32];
    char addr[48];
    completion *cp;
    server *s;
    /* For a HASH job: what to do with the hash on the loop. */
    void (*then)(server *s, struct auth_job *job);
    void *ctx;
};

typedef struct auth_state {
    int enabled;
    auth_user *users;
    size_t nusers, capusers;
    auth_key *keys;
    size_t nkeys, capkeys;
    json_t *policies; /* the last $StreamPoliciesSet, or NULL */
    uint64_t next_rev; /* the next revision of $users to fold */
    cache_entry *cache;
    fail_entry *fails;
    uint8_t cache_secret[crypto_generichash_KEYBYTES];
    char dummy_hash[crypto_pwhash_STRBYTES];
    /* the worker */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct auth_job *head, *tail;
    int stop;
    /* metrics */
    uint64_t ok, cache_hits, failures, throttled, denied, admin_actions, key_ok;
    int fail_limit; /* failures per address and window before 429 */
    /* The worker's last successful verifications (under mu): many requests
     * with the same new credentials at once (256 connections of one
     * service starting) cost one Argon2id check, not one each. */
    struct {
        uint8_t key[32];
        char hash[crypto_pwhash_STRBYTES];
    } recent[16];
    unsigned recent_next;
} auth_state;

#define A(s) ((auth_state *)(s)->auth)

/* ------------------------------------------------------------ audit */

void auth_audit(server *s, const char *who, const char *addr, const char *action,
                const char *result, const char *fmt, ...)
{
    char detail[512] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    if (!strcmp(result, "denied") || !strcmp(result, "unauthenticated") ||
        !strcmp(result, "throttled"))
        A(s)->denied++;
    else
        A(s)->admin_actions++;
    /* Names are ours (checked characters) or quoted with quotes replaced. */
    char d2[512];
    size_t j = 0;
    for (size_t i = 0; detail[i] && j < sizeof d2 - 1; i++)
        d2[j++] = detail[i] == '"' ? '\'' : (detail[i] < 32 ? ' ' : detail[i]);
    d2[j] = 0;
    server_log(s, 0, "msg=audit user=\"%s\" addr=%s action=\"%s\" result=%s detail=\"%s\"",
               who && *who ? who : "(anonymous)", addr && *addr ? addr : "-", action, result, d2);
}

void auth_peer_addr(const conn *c, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    out[0] = 0;
    if (c->peer[0]) { /* noted at accept (net.c) */
        snprintf(out, cap, "%s", c->peer);
        return;
    }
    if (c->fd < 0 || getpeername(c->fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(out, cap, "-");
        return;
    }
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)cap);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)cap);
    else
        snprintf(out, cap, "-");
}

/* ------------------------------------------------------------ the table */

static auth_user *user_find(auth_state *a, const char *name)
{
    for (size_t i = 0; i < a->nusers; i++)
        if (!a->users[i].deleted && !strcmp(a->users[i].name, name))
            return &a->users[i];
    return NULL;
}

static auth_user *user_add(auth_state *a, const char *name)
{
    auth_user *u = NULL;
    for (size_t i = 0; i < a->nusers; i++)
        if (!strcmp(a->users[i].name, name))
            u = &a->users[i]; /* re-created after a delete */
    if (!u) {
        if (a->nusers == a->capusers) {
            size_t cap = a->capusers ? a->capusers * 2 : 16;
            auth_user *p = realloc(a->users, cap * sizeof *p);
            if (!p)
                return NULL;
            a->users = p;
            a->capusers = cap;
        }
        u = &a->users[a->nusers++];
    }
    uint64_t v = u->version;
    memset(u, 0, sizeof *u);
    u->version = v + 1;
    snprintf(u->name, sizeof u->name, "%s", name);
    return u;
}

static auth_key *key_find(auth_state *a, const char *id)
{
    for (size_t i = 0; i < a->nkeys; i++)
        if (!strcmp(a->keys[i].id, id))
            return &a->keys[i];
    return NULL;
}

static void user_set_groups(auth_user *u, json_t *groups)
{
    u->ngroups = 0;
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        if (json_is_string(g) && u->ngroups < AUTH_MAX_GROUPS)
            snprintf(u->groups[u->ngroups++], AUTH_NAME_MAX, "%s", json_string_value(g));
    }
}

static const char *jstr(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static int hex_decode32(const char *hex, uint8_t out[32])
{
    size_t bin_len = 0;
    return sodium_hex2bin(out, 32, hex, strlen(hex), NULL, &bin_len, NULL) == 0 && bin_len == 32
               ? 0
               : -1;
}

/* Fold one event of $users into the table. */
static void fold(auth_state *a, const stele_event *e)
{
    json_error_t jerr;
    json_t *o = json_loadb(e->data, e->data_len, 0, &jerr);
    if (!o)
        return;
    const char *type = e->type;
    const char *name = jstr(o, "loginName");
    if (!strcmp(type, "$UserCreated")) {
        auth_user *u = user_add(a, name);
        if (u) {
            snprintf(u->full_name, sizeof u->full_name, "%s", jstr(o, "fullName"));
            snprintf(u->hash, sizeof u->hash, "%s", jstr(o, "hash"));
            user_set_groups(u, json_object_get(o, "groups"));
            u->updated_us = e->created_us;
        }
    } else if (!strcmp(type, "$ApiKeyCreated")) {
        if (a->nkeys == a->capkeys) {
            size_t cap = a->capkeys ? a->capkeys * 2 : 16;
            auth_key *p = realloc(a->keys, cap * sizeof *p);
            if (!p)
                goto out;
            a->keys = p;
            a->capkeys = cap;
        }
        auth_key *k = &a->keys[a->nkeys];
        memset(k, 0, sizeof *k);
        snprintf(k->id, sizeof k->id, "%s", jstr(o, "id"));
        snprintf(k->user, sizeof k->user, "%s", name);
        snprintf(k->name, sizeof k->name, "%s", jstr(o, "name"));
        if (hex_decode32(jstr(o, "hash"), k->hash) == 0)
            a->nkeys++;
    } else if (!strcmp(type, "$StreamPoliciesSet")) {
        json_decref(a->policies);
        a->policies = json_incref(o);
    } else if (!strcmp(type, "$ApiKeyRevoked")) {
        auth_key *k = key_find(a, jstr(o, "id"));
        if (k)
            k->revoked = 1;
    } else {
        auth_user *u = user_find(a, name);
        if (!u)
            goto out;
        u->version++;
        u->updated_us = e->created_us;
        if (!strcmp(type, "$UserUpdated")) {
            snprintf(u->full_name, sizeof u->full_name, "%s", jstr(o, "fullName"));
            user_set_groups(u, json_object_get(o, "groups"));
        } else if (!strcmp(type, "$PasswordChanged")) {
            snprintf(u->hash, sizeof u->hash, "%s", jstr(o, "hash"));
        } else if (!strcmp(type, "$UserDisabled")) {
            u->disabled = 1;
        } else if (!strcmp(type, "$UserEnabled")) {
            u->disabled = 0;
        } else if (!strcmp(type, "$UserDeleted")) {
            u->deleted = 1;
        }
    }
out:
    json_decref(o);
}

/* Fold what $users gained since the last call. */
static int catch_up(server *s)
{
    auth_state *a = A(s);
    for (;;) {
        stele_page *pg = NULL;
        int rc = stele_read_stream(s->db, "$users", a->next_rev, STELE_FORWARDS, 500, &pg);
        if (rc == STELE_ENOTFOUND)
            return 0;
        if (rc)
            return rc;
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_page_event(pg, i);
            fold(a, e);
            a->next_rev = e->revision + 1;
        }
        stele_page_free(pg);
        if (n < 500)
            return 0;
    }
}

static size_t live_users(const auth_state *a)
{
    size_t n = 0;
    for (size_t i = 0; i < a->nusers; i++)
        n += !a->users[i].deleted;
    return n;
}

int auth_write(server *s, const char *type, json_t *data, char *err, size_t cap)
{
    auth_state *a = A(s);
    char *text = json_dumps(data, JSON_COMPACT);
    if (!text) {
        snprintf(err, cap, "out of memory");
        return STELE_ENOMEM;
    }
    stele_event_in ev = {.type = type, .data = text, .data_len = strlen(text),
                         .flags = STELE_EVENT_JSON};
    stele_append_result res;
    int rc = stele_append_users(s->db, a->next_rev ? (int64_t)(a->next_rev - 1) : STELE_NO_STREAM,
                                &ev, 1, &res);
    sodium_memzero(text, strlen(text));
    free(text);
    if (rc) {
        snprintf(err, cap, "%s", rc == STELE_EWRONGREV
                                     ? "users were changed meanwhile by another server: retry"
                                     : stele_errmsg());
    }
    catch_up(s); /* our own event, or the other server's */
    return rc;
}

/* ------------------------------------------------------------ the worker */

static void *worker(void *arg)
{
    server *s = arg;
    auth_state *a = A(s);
    for (;;) {
        pthread_mutex_lock(&a->mu);
        while (!a->head && !a->stop)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop && !a->head) {
            pthread_mutex_unlock(&a->mu);
            return NULL;
        }
        struct auth_job *j = a->head;
        a->head = j->next;
        if (!a->head)
            a->tail = NULL;
        int known = 0, stopping = a->stop;
        if (j->kind == AUTH_JOB_VERIFY)
            for (unsigned i = 0; i < 16 && !known; i++)
                known = sodium_memcmp(a->recent[i].key, j->cache_key, 32) == 0 &&
                        !strcmp(a->recent[i].hash, j->hash) && j->hash[0];
        pthread_mutex_unlock(&a->mu);
        if (stopping) {
            /* Shutting down: nobody waits for the answer (the completion
             * is freed by the server's exit); no Argon2 work. */
            j->ok = 0;
        } else if (j->kind == AUTH_JOB_VERIFY && known) {
            /* The same user and password, verified against this very hash
             * a moment ago (the keys are keyed hashes of both). */
            j->ok = 1;
        } else if (j->kind == AUTH_JOB_VERIFY) {
            j->ok = crypto_pwhash_str_verify(j->hash, j->password, strlen(j->password)) == 0;
            if (j->ok) {
                pthread_mutex_lock(&a->mu);
                unsigned k = a->recent_next++ % 16;
                memcpy(a->recent[k].key, j->cache_key, 32);
                memcpy(a->recent[k].hash, j->hash, sizeof j->hash);
                pthread_mutex_unlock(&a->mu);
            }
        } else if (j->kind == AUTH_JOB_CHANGE) {
            j->ok = crypto_pwhash_str_verify(j->hash, j->password, strlen(j->password)) == 0 &&
                    crypto_pwhash_str(j->hash, j->password2, strlen(j->password2),
                                      crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                      crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0;
            sodium_memzero(j->password2, sizeof j->password2);
        } else {
            j->ok = crypto_pwhash_str(j->hash, j->password, strlen(j->password),
                                      crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                      crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0;
        }
        sodium_memzero(j->password, sizeof j->password);
        completion_post(s, j->cp);
    }
}

void auth_job_free(void *p)
{
    struct auth_job *j = p;
    if (!j)
        return;
    sodium_memzero(j, sizeof *j);
    free(j);
}

struct auth_job *auth_job_new(server *s, int kind, const char *user, const char *password)
{
    struct auth_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->s = s;
    j->kind = kind;
    snprintf(j->user, sizeof j->user, "%s", user);
    snprintf(j->password, sizeof j->password, "%s", password);
    return j;
}

void auth_job_submit(server *s, struct auth_job *j, completion *cp)
{
    auth_state *a = A(s);
    j->cp = cp;
    cp->extra = j;
    cp->extra_free = auth_job_free;
    pthread_mutex_lock(&a->mu);
    if (a->tail)
        a->tail->next = j;
    else
        a->head = j;
    a->tail = j;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

int auth_job_ok(const struct auth_job *j) { return j->ok; }
void auth_job_set_new_password(struct auth_job *j, const char *newpw, const char *stored)
{
    snprintf(j->password2, sizeof j->password2, "%s", newpw);
    snprintf(j->hash, sizeof j->hash, "%s", stored ? stored : "");
}
const char *auth_job_hash(const struct auth_job *j) { return j->hash; }
const char *auth_job_user(const struct auth_job *j) { return j->user; }
void auth_job_set_ctx(struct auth_job *j, void *ctx) { j->ctx = ctx; }
void *auth_job_ctx(const struct auth_job *j) { return j->ctx; }

/* ------------------------------------------------------------ start, stop */

int auth_enabled(const server *s) { return s->auth && A(s)->enabled; }

static int hash_now(const char *password, char out[crypto_pwhash_STRBYTES])
{
    return crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                             crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

int auth_init(server *s)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "stele serve: libsodium could not start\n");
        return -1;
    }
    auth_state *a = calloc(1, sizeof *a);
    if (!a)
        return -1;
    s->auth = a;
    a->cache = calloc(AUTH_CACHE_SLOTS, sizeof *a->cache);
    a->fails = calloc(AUTH_FAIL_SLOTS, sizeof *a->fails);
    if (!a->cache || !a->fails)
        return -1;
    randombytes_buf(a->cache_secret, sizeof a->cache_secret);
    a->fail_limit = s->cfg.auth_fail_limit > 0 ? s->cfg.auth_fail_limit : AUTH_FAIL_LIMIT;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    int rc = catch_up(s);
    if (rc) {
        fprintf(stderr, "stele serve: cannot read the users ($users): %s\n", stele_errmsg());
        return -1;
    }
    /* A hash of a random password, to verify unknown users against. */
    char dummy[33];
    randombytes_buf(dummy, 32);
    for (int i = 0; i < 32; i++)
        dummy[i] = (char)('a' + ((unsigned char)dummy[i] % 26));
    dummy[32] = 0;
    if (hash_now(dummy, a->dummy_hash) != 0) {
        fprintf(stderr, "stele serve: cannot hash (out of memory for Argon2id?)\n");
        return -1;
    }
    const char *pw = s->cfg.admin_password;
    if (pw && *pw && !user_find(a, "admin")) {
        if (strlen(pw) >= AUTH_PASSWORD_MAX) {
            fprintf(stderr, "stele serve: --admin-password is longer than %d bytes\n",
                    AUTH_PASSWORD_MAX - 1);
            return -1;
        }
        char h[crypto_pwhash_STRBYTES];
        if (hash_now(pw, h) != 0) {
            fprintf(stderr, "stele serve: cannot hash the admin password\n");
            return -1;
        }
        json_t *o = json_pack("{s:s,s:s,s:[s],s:s}", "loginName", "admin", "fullName",
                              "Administrator", "groups", "$admins", "hash", h);
        char err[256];
        rc = o ? auth_write(s, "$UserCreated", o, err, sizeof err) : STELE_ENOMEM;
        json_decref(o);
        sodium_memzero(h, sizeof h);
        if (rc) {
            fprintf(stderr, "stele serve: cannot create the admin user: %s\n", err);
            return -1;
        }
        server_log(s, 1, "msg=\"created the admin user from --admin-password\"");
    }
    a->enabled = live_users(a) > 0;
    if (pthread_create(&a->thread, NULL, worker, s) != 0) {
        fprintf(stderr, "stele serve: cannot start the authentication thread\n");
        return -1;
    }
    a->thread_started = 1;
    return 0;
}

void auth_free(server *s)
{
    auth_state *a = A(s);
    if (!a)
        return;
    if (a->thread_started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    /* Jobs never run (the loop stopped first) are freed with their
     * completions by the server's shutdown. */
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    if (a->users)
        sodium_memzero(a->users, a->capusers * sizeof *a->users);
    free(a->users);
    free(a->keys);
    json_decref(a->policies);
    free(a->cache);
    free(a->fails);
    free(a);
    s->auth = NULL;
}

void auth_tick(server *s)
{
    auth_state *a = A(s);
    if (!a)
        return;
    uint64_t before = a->next_rev;
    catch_up(s);
    if (a->next_rev != before)
        a->enabled = a->enabled || live_users(a) > 0;
}

/* ------------------------------------------------------------ principals */

static void who_of_user(const auth_user *u, auth_who *who)
{
    memset(who, 0, sizeof *who);
    snprintf(who->name, sizeof who->name, "%s", u->name);
    who->authenticated = 1;
    who->ngroups = u->ngroups;
    for (int i = 0; i < u->ngroups; i++) {
        snprintf(who->groups[i], AUTH_NAME_MAX, "%s", u->groups[i]);
        if (!strcmp(u->groups[i], "$admins"))
            who->admin = 1;
        if (!strcmp(u->groups[i], "$ops"))
            who->ops = 1;
    }
}

void auth_who_superuser(auth_who *who)
{
    memset(who, 0, sizeof *who);
    who->authenticated = 1;
    who->admin = 1;
    who->ops = 1;
    who->open = 1;
}

/* ------------------------------------------------------------ cache, failures */

static void cache_key(auth_state *a, const char *user, const char *password, uint8_t out[32])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, a->cache_secret, sizeof a->cache_secret, 32);
    crypto_generichash_update(&st, (const uint8_t *)user, strlen(user) + 1);
    crypto_generichash_update(&st, (const uint8_t *)password, strlen(password));
    crypto_generichash_final(&st, out, 32);
}

static cache_entry *cache_slot(auth_state *a, const uint8_t key[32])
{
    uint64_t h;
    memcpy(&h, key, 8);
    return &a->cache[h % AUTH_CACHE_SLOTS];
}

static fail_entry *fail_slot(auth_state *a, const char *addr, int create)
{
    uint8_t h[8];
    crypto_generichash(h, sizeof h, (const uint8_t *)addr, strlen(addr), NULL, 0);
    uint64_t x;
    memcpy(&x, h, 8);
    fail_entry *f = &a->fails[x % AUTH_FAIL_SLOTS];
    int64_t now = now_ms();
    if (strcmp(f->addr, addr) || now - f->window_start_ms > AUTH_FAIL_WINDOW_MS) {
        if (!create)
            return NULL;
        snprintf(f->addr, sizeof f->addr, "%s", addr);
        f->window_start_ms = now;
        f->failures = 0;
    }
    return f;
}

/* Seconds until `addr` may try again, 0 if it may now. */
static int throttled_for(auth_state *a, const char *addr)
{
    fail_entry *f = fail_slot(a, addr, 0);
    if (!f || f->failures < a->fail_limit)
        return 0;
    int64_t left = f->window_start_ms + AUTH_FAIL_WINDOW_MS - now_ms();
    return left > 0 ? (int)((left + 999) / 1000) : 0;
}

static void count_failure(auth_state *a, const char *addr)
{
    a->failures++;
    fail_entry *f = fail_slot(a, addr, 1);
    if (f)
        f->failures++;
}

/* 1 (with *ref) if `addr` failed too often lately. */
static int throttle(auth_state *a, const char *addr, auth_refusal *ref)
{
    int wait = throttled_for(a, addr);
    if (!wait)
        return 0;
    a->throttled++;
    ref->status = 429;
    ref->code = "TOO_MANY_FAILED_LOGINS";
    ref->message = "too many failed authentications from this address: wait and retry";
    ref->retry_after = wait;
    ref->audit = 1;
    return 1;
}

/* ------------------------------------------------------------ credentials */

/* Split "Basic base64" into user and password; 0 or -1 (malformed). */
static int parse_basic(const char *v, size_t len, char *user, char *pass)
{
    char dec[AUTH_NAME_MAX + AUTH_PASSWORD_MAX + 2];
    size_t n = 0;
    if (len > 4 * (sizeof dec / 3))
        return -1;
    if (sodium_base642bin((unsigned char *)dec, sizeof dec - 1, v, len, " \t", &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return -1;
    dec[n] = 0;
    if (memchr(dec, 0, n))
        goto bad;
    char *colon = memchr(dec, ':', n);
    if (!colon || colon == dec || (size_t)(colon - dec) >= AUTH_NAME_MAX ||
        strlen(colon + 1) >= AUTH_PASSWORD_MAX)
        goto bad;
    *colon = 0;
    memcpy(user, dec, (size_t)(colon - dec) + 1);
    memcpy(pass, colon + 1, strlen(colon + 1) + 1);
    sodium_memzero(dec, sizeof dec);
    return 0;
bad:
    sodium_memzero(dec, sizeof dec);
    return -1;
}

/* A bearer API key: "stele_<id>_<secret hex>". */
static int check_key(auth_state *a, const char *v, size_t len, auth_who *who, const char **why)
{
    char tok[160];
    if (len >= sizeof tok || len < 8 || memcmp(v, "stele_", 6)) {
        *why = "malformed API key";
        return -1;
    }
    memcpy(tok, v, len);
    tok[len] = 0;
    char *id = tok + 6, *us = strchr(id, '_');
    if (!us) {
        *why = "malformed API key";
        return -1;
    }
    *us = 0;
    const char *secret = us + 1;
    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)secret, strlen(secret));
    auth_key *k = key_find(a, id);
    sodium_memzero(tok, sizeof tok);
    /* Compare even when the id is unknown (same time either way). */
    static const uint8_t none[32];
    int same = sodium_memcmp(h, k ? k->hash : none, 32) == 0;
    if (!k || !same || k->revoked) {
        *why = k && same ? "API key revoked" : "unknown API key";
        return -1;
    }
    auth_user *u = user_find(a, k->user);
    if (!u || u->disabled) {
        *why = "the API key's user is disabled or deleted";
        return -1;
    }
    who_of_user(u, who);
    who->via_key = 1;
    return 0;
}

int auth_start(server *s, const char *hdr, size_t hlen, const char *addr, auth_who *who,
               struct auth_job **job, auth_refusal *ref)
{
    auth_state *a = A(s);
    *job = NULL;
    memset(ref, 0, sizeof *ref);
    if (!auth_enabled(s)) {
        auth_who_superuser(who);
        return AUTH_OK;
    }
    memset(who, 0, sizeof *who);
    if (!hdr || !hlen) {
        ref->status = 401;
        ref->code = "UNAUTHENTICATED";
        ref->message = "authentication required (HTTP Basic or a bearer API key)";
        ref->audit = 0; /* a client's first try without credentials is normal */
        return AUTH_FAIL;
    }
    if (hlen > 7 && !strncasecmp(hdr, "Bearer ", 7)) {
        const char *why;
        /* A valid key passes even from a throttled address (checking one
         * costs a SHA-256, and 256-bit secrets cannot be guessed). */
        if (check_key(a, hdr + 7, hlen - 7, who, &why) == 0) {
            a->key_ok++;
            return AUTH_OK;
        }
        if (throttle(a, addr, ref))
            return AUTH_FAIL;
        count_failure(a, addr);
        ref->status = 401;
        ref->code = "UNAUTHENTICATED";
        ref->message = why;
        ref->audit = 1;
        return AUTH_FAIL;
    }
    char user[AUTH_NAME_MAX], pass[AUTH_PASSWORD_MAX];
    if (!(hlen > 6 && !strncasecmp(hdr, "Basic ", 6)) && throttle(a, addr, ref))
        return AUTH_FAIL;
    if (!(hlen > 6 && !strncasecmp(hdr, "Basic ", 6)) ||
        parse_basic(hdr + 6, hlen - 6, user, pass) != 0) {
        count_failure(a, addr);
        ref->status = 401;
        ref->code = "UNAUTHENTICATED";
        ref->message = "malformed Authorization header (expected Basic or Bearer credentials)";
        ref->audit = 1;
        return AUTH_FAIL;
    }
    uint8_t key[32];
    cache_key(a, user, pass, key);
    auth_user *u = user_find(a, user);
    cache_entry *ce = cache_slot(a, key);
    if (u && !u->disabled && ce->expires_ms > now_ms() && sodium_memcmp(ce->key, key, 32) == 0 &&
        !strcmp(ce->user, u->name) && ce->version == u->version) {
        sodium_memzero(pass, sizeof pass);
        a->cache_hits++;
        a->ok++;
        who_of_user(u, who);
        return AUTH_OK;
    }
    /* Throttled addresses still get what the cache answers (credentials
     * verified lately); only new verifications are refused. */
    if (throttle(a, addr, ref)) {
        sodium_memzero(pass, sizeof pass);
        return AUTH_FAIL;
    }
    struct auth_job *j = auth_job_new(s, AUTH_JOB_VERIFY, user, pass);
    sodium_memzero(pass, sizeof pass);
    if (!j) {
        ref->status = 503;
        ref->code = "UNAVAILABLE";
        ref->message = "out of memory";
        return AUTH_FAIL;
    }
    snprintf(j->hash, sizeof j->hash, "%s", u && !u->disabled ? u->hash : a->dummy_hash);
    j->version = u ? u->version : 0;
    memcpy(j->cache_key, key, 32);
    snprintf(j->addr, sizeof j->addr, "%s", addr);
    j->ok = 0;
    /* u NULL or disabled: verified against the dummy and failed below. */
    j->ctx = u && !u->disabled ? (void *)1 : NULL;
    *job = j;
    return AUTH_PENDING;
}

int auth_finish(server *s, struct auth_job *j, auth_who *who, auth_refusal *ref)
{
    auth_state *a = A(s);
    memset(ref, 0, sizeof *ref);
    auth_user *u = user_find(a, j->user);
    if (j->ok && j->ctx && u && !u->disabled && u->version == j->version) {
        cache_entry *ce = cache_slot(a, j->cache_key);
        memcpy(ce->key, j->cache_key, 32);
        snprintf(ce->user, sizeof ce->user, "%s", u->name);
        ce->version = u->version;
        ce->expires_ms = now_ms() + AUTH_CACHE_TTL_MS;
        a->ok++;
        who_of_user(u, who);
        return AUTH_OK;
    }
    count_failure(a, j->addr);
    ref->status = 401;
    ref->code = "UNAUTHENTICATED";
    ref->message = "wrong user name or password, or the user is disabled";
    ref->audit = 1;
    return AUTH_FAIL;
}

/* ------------------------------------------------------------ management */

int auth_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (!n || n >= AUTH_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch < 33 || ch == 127 || ch == ':' || ch == '"' || ch == '\\' || ch == '/')
            return 0;
    }
    return 1;
}

json_t *auth_user_json(server *s, const char *name)
{
    auth_user *u = user_find(A(s), name);
    if (!u)
        return NULL;
    json_t *g = json_array();
    for (int i = 0; i < u->ngroups; i++)
        json_array_append_new(g, json_string(u->groups[i]));
    char when[32];
    stele_time_format(u->updated_us, when);
    return json_pack("{s:s,s:s,s:o,s:b,s:s,s:I}", "loginName", u->name, "fullName",
                     u->full_name, "groups", g, "disabled", u->disabled, "lastUpdated", when,
                     "lastUpdatedUs", (json_int_t)u->updated_us);
}

json_t *auth_users_json(server *s)
{
    auth_state *a = A(s);
    json_t *arr = json_array();
    for (size_t i = 0; i < a->nusers; i++)
        if (!a->users[i].deleted)
            json_array_append_new(arr, auth_user_json(s, a->users[i].name));
    return arr;
}

json_t *auth_keys_json(server *s)
{
    auth_state *a = A(s);
    json_t *arr = json_array();
    for (size_t i = 0; i < a->nkeys; i++)
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:b}", "id", a->keys[i].id,
                                             "loginName", a->keys[i].user, "name",
                                             a->keys[i].name, "revoked", a->keys[i].revoked));
    return arr;
}

int auth_user_exists(server *s, const char *name) { return user_find(A(s), name) != NULL; }

const char *auth_user_hash(server *s, const char *name)
{
    auth_user *u = user_find(A(s), name);
    return u ? u->hash : "";
}

int auth_user_disabled(server *s, const char *name)
{
    auth_user *u = user_find(A(s), name);
    return u && u->disabled;
}

int auth_key_exists(server *s, const char *id)
{
    auth_key *k = key_find(A(s), id);
    return k && !k->revoked;
}

int auth_new_key(server *s, const char *user, const char *name, char *token, size_t cap,
                 char *id_out, size_t idcap, char *err, size_t errcap)
{
    uint8_t idb[8], sec[32];
    char id[17], sech[65], hh[65];
    randombytes_buf(idb, sizeof idb);
    randombytes_buf(sec, sizeof sec);
    sodium_bin2hex(id, sizeof id, idb, sizeof idb);
    sodium_bin2hex(sech, sizeof sech, sec, sizeof sec);
    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)sech, strlen(sech));
    sodium_bin2hex(hh, sizeof hh, h, sizeof h);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "id", id, "loginName", user, "name", name, "hash",
                          hh);
    int rc = o ? auth_write(s, "$ApiKeyCreated", o, err, errcap) : STELE_ENOMEM;
    json_decref(o);
    if (!rc) {
        snprintf(token, cap, "stele_%s_%s", id, sech);
        snprintf(id_out, idcap, "%s", id);
    }
    sodium_memzero(sech, sizeof sech);
    sodium_memzero(sec, sizeof sec);
    return rc;
}

void auth_enable(server *s) { A(s)->enabled = 1; }

json_t *auth_policies(server *s) { return s->auth ? A(s)->policies : NULL; }

/* ------------------------------------------------------------ metrics */

void auth_metrics(server *s, buf *out)
{
    auth_state *a = A(s);
    if (!a)
        return;
    metrics_line(out, "# HELP stele_auth_enabled 1 when every request must authenticate.\n"
                      "# TYPE stele_auth_enabled gauge\nstele_auth_enabled %d\n",
                 a->enabled);
    metrics_line(out,
                 "# HELP stele_auth_total Authentications by result.\n"
                 "# TYPE stele_auth_total counter\n"
                 "stele_auth_total{result=\"ok\"} %llu\n"
                 "stele_auth_total{result=\"api_key\"} %llu\n"
                 "stele_auth_total{result=\"failed\"} %llu\n"
                 "stele_auth_total{result=\"throttled\"} %llu\n",
                 (unsigned long long)a->ok, (unsigned long long)a->key_ok,
                 (unsigned long long)a->failures, (unsigned long long)a->throttled);
    metrics_line(out,
                 "# HELP stele_auth_cache_hits_total Password checks answered by the cache.\n"
                 "# TYPE stele_auth_cache_hits_total counter\nstele_auth_cache_hits_total %llu\n",
                 (unsigned long long)a->cache_hits);
    metrics_line(out,
                 "# HELP stele_audit_denied_total Requests refused (unauthenticated, denied, "
                 "throttled), each with an audit line.\n"
                 "# TYPE stele_audit_denied_total counter\nstele_audit_denied_total %llu\n",
                 (unsigned long long)a->denied);
    metrics_line(out,
                 "# HELP stele_audit_admin_actions_total Admin actions, each with an audit "
                 "line.\n# TYPE stele_audit_admin_actions_total counter\n"
                 "stele_audit_admin_actions_total %llu\n",
                 (unsigned long long)a->admin_actions);
}
