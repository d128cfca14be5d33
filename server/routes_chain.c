/*
 * routes_chain.c - the hash chain over the API (docs/http-api.md, "The hash
 * chain"; docs/security.md, "The hash chain"):
 *
 *   GET /chain/head                     the head: commits, position, hash,
 *                                       and its Ed25519 signature with the
 *                                       public key when the server has
 *                                       --signing-key
 *   GET /chain/proof?position=P         the proof of one event: the export
 *                                       of P..P
 *   GET /chain/export?from=F&to=T       the events F..T with what links them
 *                                       to the head (stele_chain_export's
 *                                       document), for `stele verify`
 *
 * The head shows no event data (any authenticated user); a proof or an
 * export holds events of any stream, so it needs $r on $all (access.c).
 *
 * A proof reads the chain record of every commit after its event: seconds
 * for an old event of a big store. So an export is built on a thread of its
 * own, never on the event loop, one at a time per server (another request
 * meanwhile gets 503 BUSY), and its answer comes back as a completion; the
 * thread is joined before the store closes (chain_routes_shutdown). One
 * request covers at most CHAIN_HTTP_MAX_RANGE positions; a bigger range is
 * exported in pieces (each verifies on its own) or with the library.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "server_int.h"
#include "urlcode.h"

#define CHAIN_HTTP_MAX_RANGE 10000u

/* The one export thread (a server per process). */
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;
static int job_running, job_joinable;
static pthread_t job_thread;

typedef struct chain_job {
    server *s;
    completion *cp;
    uint64_t from, to;
    int rc;
    char *json;
    size_t len;
    char msg[512];
} chain_job;

static void *job_main(void *arg)
{
    chain_job *j = arg;
    j->rc = stele_chain_export(j->s->db, j->from, j->to, &j->json, &j->len);
    if (j->rc)
        snprintf(j->msg, sizeof j->msg, "%s", stele_errmsg());
    pthread_mutex_lock(&job_mu);
    job_running = 0;
    pthread_mutex_unlock(&job_mu);
    completion_post(j->s, j->cp);
    return NULL;
}

static void job_free(void *p)
{
    chain_job *j = p;
    stele_free(j->json);
    free(j);
}

static void job_done(conn *c, completion *cp)
{
    chain_job *j = cp->extra;
    c->state = CS_READING;
    if (j->rc) {
        http_stele_error(c, j->rc, j->msg, NULL);
        conn_request_done(c);
        return;
    }
    buf b = {0};
    buf_append(&b, j->json, j->len);
    http_json_done(c, 200, &b);
}

void chain_routes_shutdown(server *s)
{
    (void)s;
    pthread_mutex_lock(&job_mu);
    int join = job_joinable;
    job_joinable = 0;
    pthread_mutex_unlock(&job_mu);
    if (join)
        pthread_join(job_thread, NULL);
}

static void chain_fail(conn *c, int status, const char *code, const char *msg)
{
    http_error(c, status, code, msg);
    conn_request_done(c);
}

static void hex(buf *b, const uint8_t *p, size_t n)
{
    static const char d[] = "0123456789abcdef";
    char s[130];
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = d[p[i] >> 4];
        s[2 * i + 1] = d[p[i] & 15];
    }
    buf_append(b, "\"", 1);
    buf_append(b, s, 2 * n);
    buf_append(b, "\"", 1);
}

/* A position parameter: 1 and *out, 0 if absent, -1 (answered) if bad. */
static int position_arg(conn *c, const char *q, size_t qlen, const char *name, uint64_t *out)
{
    char v[32], msg[96];
    int r = query_get(q, qlen, name, v, sizeof v);
    if (r == 0)
        return 0;
    char *end;
    unsigned long long x = r > 0 ? strtoull(v, &end, 10) : 0;
    if (r < 0 || !*v || v[0] < '0' || v[0] > '9' || *end || x > INT64_MAX) {
        snprintf(msg, sizeof msg, "%s must be a position (a number from 0)", name);
        chain_fail(c, 400, "INVALID_ARGUMENT", msg);
        return -1;
    }
    *out = x;
    return 1;
}

static void head(conn *c)
{
    stele_chain_head h;
    int rc = stele_chain_get_head(c->srv->db, &h);
    if (rc) {
        http_stele_error(c, rc, stele_errmsg(), NULL);
        conn_request_done(c);
        return;
    }
    buf b = {0};
    char t[96];
    int n = snprintf(t, sizeof t, "{\"commits\":%llu,\"position\":%llu,\"hash\":",
                     (unsigned long long)h.commits, (unsigned long long)h.position);
    buf_append(&b, t, (size_t)n);
    hex(&b, h.hash, 32);
    if (h.is_signed) {
        buf_append(&b, ",\"signature\":", 13);
        hex(&b, h.signature, 64);
        buf_append(&b, ",\"publicKey\":", 13);
        hex(&b, h.public_key, 32);
    }
    buf_append(&b, "}", 1);
    http_json_done(c, 200, &b);
}

static void export_range(conn *c, uint64_t from, uint64_t to)
{
    char msg[160];
    if (from > to) {
        snprintf(msg, sizeof msg, "from (%llu) is after to (%llu)", (unsigned long long)from,
                 (unsigned long long)to);
        chain_fail(c, 400, "INVALID_ARGUMENT", msg);
        return;
    }
    if (to - from >= CHAIN_HTTP_MAX_RANGE) {
        snprintf(msg, sizeof msg, "an export covers at most %u positions per request: export "
                 "the range in pieces", CHAIN_HTTP_MAX_RANGE);
        chain_fail(c, 413, "TOO_LARGE", msg);
        return;
    }
    pthread_mutex_lock(&job_mu);
    int busy = job_running;
    int join = !busy && job_joinable;
    if (!busy)
        job_running = 1;
    job_joinable = 0;
    pthread_mutex_unlock(&job_mu);
    if (busy) {
        chain_fail(c, 503, "BUSY", "another export or proof is being built: retry shortly");
        return;
    }
    if (join)
        pthread_join(job_thread, NULL); /* the previous one, already finished */
    chain_job *j = calloc(1, sizeof *j);
    completion *cp = j ? calloc(1, sizeof *cp) : NULL;
    if (!cp) {
        free(j);
        pthread_mutex_lock(&job_mu);
        job_running = 0;
        pthread_mutex_unlock(&job_mu);
        chain_fail(c, 503, "UNAVAILABLE", "out of memory");
        return;
    }
    *j = (chain_job){.s = c->srv, .cp = cp, .from = from, .to = to};
    cp->c = c;
    cp->done = job_done;
    cp->extra = j;
    cp->extra_free = job_free;
    c->async_pending++;
    c->state = CS_BUSY;
    pthread_mutex_lock(&job_mu);
    int started = pthread_create(&job_thread, NULL, job_main, j) == 0;
    job_joinable = started;
    if (!started)
        job_running = 0;
    pthread_mutex_unlock(&job_mu);
    if (!started) {
        c->async_pending--;
        c->state = CS_READING;
        free(cp);
        free(j);
        chain_fail(c, 503, "UNAVAILABLE", "cannot start the export thread");
    }
}

int route_chain(conn *c, const char *path, size_t plen, const char *q, size_t qlen)
{
    if (plen < 6 || memcmp(path, "/chain", 6) || (plen > 6 && path[6] != '/'))
        return 0;
#define IS(lit) (plen == sizeof(lit) - 1 && !memcmp(path, lit, plen))
    int which = IS("/chain/head") ? 1 : IS("/chain/proof") ? 2 : IS("/chain/export") ? 3 : 0;
#undef IS
    char msg[300];
    int shown = plen > 200 ? 200 : (int)plen; /* path is not NUL-terminated */
    if (!which) {
        snprintf(msg, sizeof msg, "no route for %.*s (the chain has /chain/head, /chain/proof "
                 "and /chain/export)", shown, path);
        chain_fail(c, 404, "NOT_FOUND", msg);
        return 1;
    }
    int m = c->req.method;
    if (m != HTTP_GET) {
        snprintf(msg, sizeof msg, "method %s is not allowed on %.*s (GET only)",
                 http_method_str(m), shown, path);
        chain_fail(c, 405, "METHOD_NOT_ALLOWED", msg);
        return 1;
    }
    if (which == 1) {
        head(c);
        return 1;
    }
    uint64_t from = 0, to = 0;
    int a, b;
    if (which == 2) {
        if ((a = position_arg(c, q, qlen, "position", &from)) < 0)
            return 1;
        if (!a) {
            chain_fail(c, 400, "INVALID_ARGUMENT", "position is required");
            return 1;
        }
        export_range(c, from, from);
        return 1;
    }
    if ((a = position_arg(c, q, qlen, "from", &from)) < 0 ||
        (b = position_arg(c, q, qlen, "to", &to)) < 0)
        return 1;
    if (!a || !b) {
        chain_fail(c, 400, "INVALID_ARGUMENT", "from and to are required");
        return 1;
    }
    export_range(c, from, to);
    return 1;
}
