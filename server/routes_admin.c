/*
 * routes_admin.c - administration endpoints (docs/http-api.md, "Admin"):
 *
 *   POST   /admin/scavenge   start a scavenge (202), or report the one
 *                            already running (200)
 *   GET    /admin/scavenge   the running or last scavenge (404 if none
 *                            since the server started)
 *   DELETE /admin/scavenge   ask the running scavenge to stop after the
 *                            segment it is on (202), 404 if none runs
 *
 * A scavenge takes seconds to minutes, so it runs on its own thread, never
 * on the event loop: the loop only starts it and reads its status (under a
 * mutex the thread updates after every segment, from stele_scavenge's
 * progress callback). One scavenge runs at a time. The server stops a
 * running scavenge and joins its thread before closing the store.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "server_int.h"

enum { SCAV_NONE, SCAV_RUNNING, SCAV_DONE, SCAV_STOPPED, SCAV_FAILED };

struct admin {
    pthread_mutex_t mu;
    pthread_t thread;
    int joinable;          /* a thread was started and not joined yet */
    int state;             /* SCAV_* */
    uint64_t id;           /* 1, 2, ... per scavenge since start */
    int64_t started_us, finished_us;
    stele_scavenge_result res;
    int rc;
    char msg[512];
    _Atomic int stop;      /* DELETE or server shutdown */
    server *srv;           /* for its db and its log (server_log is thread-safe) */
};

static const char *state_name(int st)
{
    switch (st) {
    case SCAV_RUNNING: return "running";
    case SCAV_DONE: return "done";
    case SCAV_STOPPED: return "stopped";
    case SCAV_FAILED: return "failed";
    default: return "none";
    }
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int progress(void *ctx, const stele_scavenge_result *so_far)
{
    struct admin *a = ctx;
    pthread_mutex_lock(&a->mu);
    a->res = *so_far;
    pthread_mutex_unlock(&a->mu);
    return atomic_load(&a->stop);
}

static void *scavenge_main(void *arg)
{
    struct admin *a = arg;
    stele_scavenge_options o = {progress, a};
    stele_scavenge_result res;
    int rc = stele_scavenge(a->srv->db, &o, &res);
    if (rc)
        server_log(a->srv, 0, "msg=\"scavenge failed\" id=%llu error=\"%s\"",
                   (unsigned long long)a->id, stele_errmsg());
    else
        server_log(a->srv, 1,
                   "msg=\"scavenge %s\" id=%llu segments_rewritten=%llu events_removed=%llu "
                   "bytes_reclaimed=%llu ms=%llu",
                   res.stopped ? "stopped" : "done", (unsigned long long)a->id,
                   (unsigned long long)res.segments_rewritten,
                   (unsigned long long)res.events_removed,
                   (unsigned long long)res.bytes_reclaimed,
                   (unsigned long long)(res.duration_us / 1000));
    pthread_mutex_lock(&a->mu);
    a->res = res;
    a->rc = rc;
    snprintf(a->msg, sizeof a->msg, "%s", rc ? stele_errmsg() : "");
    a->state = rc ? SCAV_FAILED : res.stopped ? SCAV_STOPPED : SCAV_DONE;
    a->finished_us = wall_us();
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* {"scavenge":{...}} of the current state. Caller holds a->mu. */
static void write_status(struct admin *a, buf *b)
{
    const stele_scavenge_result *r = &a->res;
    char num[512];
    snprintf(num, sizeof num, "{\"scavenge\":{\"id\":%llu,\"status\":\"%s\",\"startedAt\":",
             (unsigned long long)a->id, state_name(a->state));
    buf_append(b, num, strlen(num));
    json_w_time_rfc3339(b, a->started_us);
    if (a->state != SCAV_RUNNING) {
        buf_append(b, ",\"finishedAt\":", 14);
        json_w_time_rfc3339(b, a->finished_us);
    }
    snprintf(num, sizeof num,
             ",\"segmentsScanned\":%llu,\"segmentsRewritten\":%llu,\"eventsRemoved\":%llu,"
             "\"bytesRemoved\":%llu,\"bytesReclaimed\":%llu,\"bytesScanned\":%llu,"
             "\"durationMs\":%llu",
             (unsigned long long)r->segments_scanned, (unsigned long long)r->segments_rewritten,
             (unsigned long long)r->events_removed, (unsigned long long)r->bytes_removed,
             (unsigned long long)r->bytes_reclaimed, (unsigned long long)r->bytes_scanned,
             (unsigned long long)(r->duration_us / 1000));
    buf_append(b, num, strlen(num));
    if (a->state == SCAV_FAILED) {
        buf_append(b, ",\"error\":{\"code\":", 18);
        const char *code = stele_error_info_of(a->rc)->code;
        json_w_str(b, code, strlen(code));
        buf_append(b, ",\"message\":", 11);
        json_w_str(b, a->msg, strlen(a->msg));
        buf_append(b, "}", 1);
    }
    buf_append(b, "}}\n", 3);
}

static void respond_status(conn *c, int status)
{
    struct admin *a = c->srv->admin;
    buf b = {0};
    pthread_mutex_lock(&a->mu);
    write_status(a, &b);
    pthread_mutex_unlock(&a->mu);
    http_respond(c, status, "application/json", b.p, b.len, NULL);
    buf_free(&b);
    conn_request_done(c);
}

static struct admin *admin_get(server *s)
{
    if (!s->admin) {
        struct admin *a = calloc(1, sizeof *a);
        if (!a)
            return NULL;
        pthread_mutex_init(&a->mu, NULL);
        a->srv = s;
        s->admin = a;
    }
    return s->admin;
}

int admin_scavenge_start(server *s, uint64_t *id, int *running)
{
    *running = 0;
    struct admin *a = admin_get(s);
    if (!a)
        return ADMIN_NOMEM;
    if (s->stopping)
        return ADMIN_STOPPING;
    pthread_mutex_lock(&a->mu);
    if (a->state == SCAV_RUNNING) {
        *id = a->id;
        *running = 1;
        pthread_mutex_unlock(&a->mu);
        return 0;
    }
    if (a->joinable) {
        pthread_join(a->thread, NULL); /* finished: it only set its state */
        a->joinable = 0;
    }
    a->id++;
    a->state = SCAV_RUNNING;
    a->started_us = wall_us();
    a->finished_us = 0;
    memset(&a->res, 0, sizeof a->res);
    a->rc = 0;
    a->msg[0] = 0;
    atomic_store(&a->stop, 0);
    if (pthread_create(&a->thread, NULL, scavenge_main, a) != 0) {
        a->state = SCAV_FAILED;
        a->rc = STELE_EINTERNAL;
        snprintf(a->msg, sizeof a->msg, "cannot start the scavenge thread");
        a->finished_us = wall_us();
    } else {
        a->joinable = 1;
    }
    int failed = a->state == SCAV_FAILED;
    *id = a->id;
    pthread_mutex_unlock(&a->mu);
    server_log(s, 1, "msg=\"scavenge %s\" id=%llu", failed ? "failed to start" : "started",
               (unsigned long long)*id);
    return failed ? ADMIN_FAILED : 0;
}

int admin_scavenge_stop(server *s, uint64_t want, uint64_t *id)
{
    struct admin *a = s->admin;
    *id = 0;
    if (!a)
        return ADMIN_NONE;
    pthread_mutex_lock(&a->mu);
    int state = a->state;
    *id = a->id;
    pthread_mutex_unlock(&a->mu);
    if (state != SCAV_RUNNING || (want && want != *id))
        return ADMIN_NONE;
    atomic_store(&a->stop, 1);
    server_log(s, 1, "msg=\"scavenge stop requested\" id=%llu", (unsigned long long)*id);
    return 0;
}

static void scavenge_start(conn *c)
{
    uint64_t id;
    int running;
    int rc = admin_scavenge_start(c->srv, &id, &running);
    if (rc == ADMIN_NOMEM)
        http_fail(c, 503, "UNAVAILABLE", "out of memory");
    else if (rc == ADMIN_STOPPING)
        http_fail(c, 503, "UNAVAILABLE", "shutting down");
    else
        respond_status(c, rc ? 500 : running ? 200 : 202);
}

/* The admin jobs' (scavenge, backup) common gate: starting (POST) and
 * stopping (DELETE) one is for loopback clients only, and only GET, POST and
 * DELETE exist on `path`. 0 if the request goes on; else it has been
 * answered. */
int admin_job_gate(conn *c, const char *job, const char *path)
{
    int m = c->req.method;
    if (m == HTTP_POST || m == HTTP_DELETE) {
        char addr[64], what[64], msg[512];
        if (!guard_peer_is_loopback(c, addr, sizeof addr)) {
            snprintf(what, sizeof what, "%s a %s", m == HTTP_POST ? "starting" : "stopping", job);
            guard_loopback_message(what, addr, msg, sizeof msg);
            http_fail(c, 403, "PERMISSION_DENIED", msg);
            return -1;
        }
    } else if (m != HTTP_GET) {
        char msg[256];
        snprintf(msg, sizeof msg, "method %s is not allowed on %s", http_method_str(m), path);
        http_fail(c, 405, "METHOD_NOT_ALLOWED", msg);
        return -1;
    }
    return 0;
}

void route_admin(conn *c, const char *path, size_t plen)
{
    int m = c->req.method;
    if ((plen == 13 && !memcmp(path, "/admin/backup", 13)) ||
        (plen == 14 && !memcmp(path, "/admin/archive", 14))) {
        route_backup(c, path, plen);
        return;
    }
    if (!(plen == 15 && !memcmp(path, "/admin/scavenge", 15))) {
        char msg[256];
        snprintf(msg, sizeof msg, "no route for %s %.*s", http_method_str(m),
                 (int)(plen > 200 ? 200 : plen), path);
        http_fail(c, 404, "NOT_FOUND", msg);
        return;
    }
    if (admin_job_gate(c, "scavenge", "/admin/scavenge"))
        return;
    if (m == HTTP_POST) {
        scavenge_start(c);
        return;
    }
    struct admin *a = c->srv->admin;
    int state = SCAV_NONE;
    if (a) {
        pthread_mutex_lock(&a->mu);
        state = a->state;
        pthread_mutex_unlock(&a->mu);
    }
    if (m == HTTP_GET) {
        if (state == SCAV_NONE)
            http_fail(c, 404, "NOT_FOUND", "no scavenge has run since the server started");
        else
            respond_status(c, 200);
        return;
    }
    uint64_t id;
    if (admin_scavenge_stop(c->srv, 0, &id)) {
        http_fail(c, 404, "NOT_FOUND", "no scavenge is running");
        return;
    }
    respond_status(c, 202);
}

void admin_shutdown(server *s)
{
    struct admin *a = s->admin;
    if (!a)
        return;
    atomic_store(&a->stop, 1);
    if (a->joinable)
        pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->mu);
    free(a);
    s->admin = NULL;
}
