/*
 * routes_backup.c - online backups and the continuous archive
 * (docs/operations.md, docs/http-api.md "Admin"):
 *
 *   POST   /admin/backup   {"dest": "/abs/dir"}: start a backup of the
 *                          store into a directory on the server's machine
 *                          (202); 409 while another runs
 *   GET    /admin/backup   the running or last backup (404 if none since
 *                          the server started): progress in segments and
 *                          bytes, the backup's end position and time
 *   DELETE /admin/backup   stop the running one after its segment (202);
 *                          DEST keeps its previous backup
 *   GET    /admin/archive  the archive's state (404 without --archive-dir)
 *
 * Starting and stopping are loopback-only, like scavenging: a backup
 * writes files wherever the server may. A backup runs on its own thread
 * (stele_backup copies while appends go on); the loop only starts it and
 * reads its status under a mutex that the progress callback updates.
 *
 * The archive (`stele serve --archive-dir DIR`) is one more thread: it runs
 * stele_backup in archive mode into DIR as soon as it starts, whenever the store has
 * made a new segment (the previous one is sealed: checked every second),
 * every --archive-interval seconds for the tail, and once more when the
 * server stops, after the last connection closed and before the store
 * closes. A failed run is logged and retried at the next occasion; the
 * status says when the archive last succeeded and up to which position.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "json_doc.h"
#include "server_int.h"

enum { BK_NONE, BK_RUNNING, BK_DONE, BK_STOPPED, BK_FAILED };

struct backup_admin {
    pthread_mutex_t mu;
    pthread_t thread;
    int joinable;
    int state;
    uint64_t id;
    char dest[4096];
    int64_t started_us, finished_us;
    stele_backup_result res;
    int rc;
    char msg[512];
    _Atomic int stop;
    server *srv;
};

struct archive {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stop;
    server *srv;
    /* status, under mu */
    uint64_t runs, failures;
    int64_t last_run_us, last_ok_us;
    stele_backup_result last;   /* of the last successful run */
    char error[512];            /* of the last run, "" if it succeeded */
};

static const char *state_name(int st)
{
    switch (st) {
    case BK_RUNNING: return "running";
    case BK_DONE: return "done";
    case BK_STOPPED: return "stopped";
    case BK_FAILED: return "failed";
    default: return "none";
    }
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- backup */

static int progress(void *ctx, const stele_backup_result *so_far)
{
    struct backup_admin *a = ctx;
    pthread_mutex_lock(&a->mu);
    a->res = *so_far;
    pthread_mutex_unlock(&a->mu);
    return atomic_load(&a->stop);
}

static void *backup_main(void *arg)
{
    struct backup_admin *a = arg;
    stele_backup_options o = {0, progress, a};
    stele_backup_result res;
    int rc = stele_backup(a->srv->db, a->dest, &o, &res);
    int stopped = rc == STELE_ECLOSED && atomic_load(&a->stop);
    if (rc && !stopped)
        server_log(a->srv, 0, "msg=\"backup failed\" id=%llu dest=\"%s\" error=\"%s\"",
                   (unsigned long long)a->id, a->dest, stele_errmsg());
    else
        server_log(a->srv, 1,
                   "msg=\"backup %s\" id=%llu dest=\"%s\" segments_copied=%llu "
                   "segments_kept=%llu bytes_copied=%llu end_position=%llu ms=%llu",
                   stopped ? "stopped" : "done", (unsigned long long)a->id, a->dest,
                   (unsigned long long)res.segments_copied, (unsigned long long)res.segments_kept,
                   (unsigned long long)res.bytes_copied, (unsigned long long)res.end_position,
                   (unsigned long long)(res.duration_us / 1000));
    pthread_mutex_lock(&a->mu);
    a->res = res;
    a->rc = stopped ? 0 : rc;
    snprintf(a->msg, sizeof a->msg, "%s", rc && !stopped ? stele_errmsg() : "");
    a->state = stopped ? BK_STOPPED : rc ? BK_FAILED : BK_DONE;
    a->finished_us = wall_us();
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void write_counts(buf *b, const stele_backup_result *r)
{
    char num[640];
    snprintf(num, sizeof num,
             ",\"segments\":%llu,\"segmentsTodo\":%llu,\"segmentsDone\":%llu,"
             "\"segmentsCopied\":%llu,\"segmentsKept\":%llu,\"bytesCopied\":%llu,"
             "\"bytesTotal\":%llu,\"endPosition\":%llu,\"durationMs\":%llu",
             (unsigned long long)r->segments, (unsigned long long)r->segments_todo,
             (unsigned long long)r->segments_done, (unsigned long long)r->segments_copied,
             (unsigned long long)r->segments_kept, (unsigned long long)r->bytes_copied,
             (unsigned long long)r->bytes_total, (unsigned long long)r->end_position,
             (unsigned long long)(r->duration_us / 1000));
    buf_append(b, num, strlen(num));
    if (r->end_time_us) {
        buf_append(b, ",\"endTime\":", 11);
        json_w_time_rfc3339(b, r->end_time_us);
    }
}

/* {"backup":{...}}. Caller holds a->mu. */
static void write_status(struct backup_admin *a, buf *b)
{
    char num[128];
    snprintf(num, sizeof num, "{\"backup\":{\"id\":%llu,\"status\":\"%s\",\"dest\":",
             (unsigned long long)a->id, state_name(a->state));
    buf_append(b, num, strlen(num));
    json_w_str(b, a->dest, strlen(a->dest));
    buf_append(b, ",\"startedAt\":", 13);
    json_w_time_rfc3339(b, a->started_us);
    if (a->state != BK_RUNNING) {
        buf_append(b, ",\"finishedAt\":", 14);
        json_w_time_rfc3339(b, a->finished_us);
    }
    write_counts(b, &a->res);
    if (a->state == BK_FAILED) {
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
    struct backup_admin *a = c->srv->backup;
    buf b = {0};
    pthread_mutex_lock(&a->mu);
    write_status(a, &b);
    pthread_mutex_unlock(&a->mu);
    http_respond(c, status, "application/json", b.p, b.len, NULL);
    buf_free(&b);
    conn_request_done(c);
}

/* The body's "dest": an absolute path. NULL after answering 400. */
static char *parse_dest(conn *c)
{
    char err[256];
    json_doc *d;
    int rc = json_doc_parse((const char *)c->req.body.p, c->req.body.len, &d, err, sizeof err);
    if (rc) {
        http_fail(c, rc == STELE_EINVAL ? 400 : 413,
                  rc == STELE_EINVAL ? "INVALID_JSON" : "TOO_LARGE", err);
        return NULL;
    }
    char *dest = NULL;
    const char *why = NULL;
    if (json_doc_type(d, 0) != JD_OBJECT) {
        why = "the body must be a JSON object: {\"dest\": \"/absolute/directory\"}";
    } else {
        for (int k = 0; k < json_doc_size(d, 0) && !why; k++) {
            int key, val;
            json_doc_member(d, 0, k, &key, &val);
            if (!json_doc_eq(d, key, "dest"))
                why = "unknown member in the body: only \"dest\" is accepted";
        }
        int v = json_doc_get(d, 0, "dest");
        if (!why && v < 0)
            why = "\"dest\" is missing: the directory (on the server's machine) to back up to";
        else if (!why && !(dest = json_doc_str(d, v)))
            why = "\"dest\" must be a string";
        else if (!why && (dest[0] != '/' || strlen(dest) > 3000))
            why = "\"dest\" must be an absolute path of at most 3000 bytes";
    }
    json_doc_free(d);
    if (why) {
        free(dest);
        http_fail(c, 400, "INVALID_ARGUMENT", why);
        return NULL;
    }
    return dest;
}

static void backup_start(conn *c)
{
    server *s = c->srv;
    if (s->stopping) {
        http_fail(c, 503, "UNAVAILABLE", "shutting down");
        return;
    }
    char *dest = parse_dest(c);
    if (!dest)
        return;
    if (s->cfg.archive_dir && !strcmp(dest, s->cfg.archive_dir)) {
        free(dest);
        http_fail(c, 400, "INVALID_ARGUMENT",
                  "\"dest\" is the server's archive directory: back up elsewhere");
        return;
    }
    if (!s->backup) {
        struct backup_admin *a = calloc(1, sizeof *a);
        if (!a) {
            free(dest);
            http_fail(c, 503, "UNAVAILABLE", "out of memory");
            return;
        }
        pthread_mutex_init(&a->mu, NULL);
        a->srv = s;
        s->backup = a;
    }
    struct backup_admin *a = s->backup;
    pthread_mutex_lock(&a->mu);
    if (a->state == BK_RUNNING) {
        char msg[4300];
        snprintf(msg, sizeof msg, "backup %llu into %s is running; one backup runs at a time",
                 (unsigned long long)a->id, a->dest);
        pthread_mutex_unlock(&a->mu);
        free(dest);
        http_fail(c, 409, "BACKUP_RUNNING", msg);
        return;
    }
    if (a->joinable) {
        pthread_join(a->thread, NULL);
        a->joinable = 0;
    }
    a->id++;
    a->state = BK_RUNNING;
    snprintf(a->dest, sizeof a->dest, "%s", dest);
    free(dest);
    a->started_us = wall_us();
    a->finished_us = 0;
    memset(&a->res, 0, sizeof a->res);
    a->rc = 0;
    a->msg[0] = 0;
    atomic_store(&a->stop, 0);
    if (pthread_create(&a->thread, NULL, backup_main, a) != 0) {
        a->state = BK_FAILED;
        a->rc = STELE_EINTERNAL;
        snprintf(a->msg, sizeof a->msg, "cannot start the backup thread");
        a->finished_us = wall_us();
    } else {
        a->joinable = 1;
    }
    int failed = a->state == BK_FAILED;
    server_log(s, 1, "msg=\"backup %s\" id=%llu dest=\"%s\"",
               failed ? "failed to start" : "started", (unsigned long long)a->id, a->dest);
    pthread_mutex_unlock(&a->mu);
    respond_status(c, failed ? 500 : 202);
}

/* ---------------------------------------------------------------- archive */

static void archive_run(struct archive *ar)
{
    server *s = ar->srv;
    stele_backup_options o = {.flags = STELE_BACKUP_ARCHIVE};
    stele_backup_result res;
    int rc = stele_backup(s->db, s->cfg.archive_dir, &o, &res);
    pthread_mutex_lock(&ar->mu);
    ar->runs++;
    ar->last_run_us = wall_us();
    if (rc) {
        ar->failures++;
        snprintf(ar->error, sizeof ar->error, "%s: %s", stele_error_info_of(rc)->code,
                 stele_errmsg());
    } else {
        ar->last_ok_us = ar->last_run_us;
        ar->last = res;
        ar->error[0] = 0;
    }
    pthread_mutex_unlock(&ar->mu);
    if (rc)
        server_log(s, 0, "msg=\"archive failed\" dir=\"%s\" error=\"%s\"", s->cfg.archive_dir,
                   stele_errmsg());
    else if (res.segments_copied > 1 || s->cfg.log_level >= 2)
        server_log(s, 1, "msg=\"archived\" dir=\"%s\" segments_copied=%llu end_position=%llu",
                   s->cfg.archive_dir, (unsigned long long)res.segments_copied,
                   (unsigned long long)res.end_position);
}

static void *archive_main(void *arg)
{
    struct archive *ar = arg;
    server *s = ar->srv;
    uint64_t seen_segments = 0;
    int64_t last = 0;
    for (;;) {
        pthread_mutex_lock(&ar->mu);
        if (!ar->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&ar->cv, &ar->mu, &ts);
        }
        int stop = ar->stop;
        pthread_mutex_unlock(&ar->mu);
        if (stop)
            break; /* the last run is archive_stop's, after the connections */
        stele_stats st;
        int new_seg = stele_get_stats(s->db, &st) == 0 && st.segments != seen_segments;
        if (new_seg || last == 0 || mono_ms() - last >= s->cfg.archive_interval_ms) {
            archive_run(ar);
            last = mono_ms();
            if (new_seg)
                seen_segments = st.segments;
        }
    }
    return NULL;
}

int archive_start(server *s)
{
    if (!s->cfg.archive_dir || !*s->cfg.archive_dir)
        return 0;
    struct archive *ar = calloc(1, sizeof *ar);
    if (!ar)
        return -1;
    pthread_mutex_init(&ar->mu, NULL);
    pthread_cond_init(&ar->cv, NULL);
    ar->srv = s;
    s->archive = ar;
    /* A directory that cannot be written stops the start; the first copy
     * (the whole store, for a new archive) is the thread's, so a big store
     * does not hold up the server's start. */
    const char *dir = s->cfg.archive_dir;
    if ((mkdir(dir, 0755) != 0 && errno != EEXIST) || access(dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "stele serve: archive directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    if (pthread_create(&ar->thread, NULL, archive_main, ar) != 0) {
        fprintf(stderr, "stele serve: cannot start the archive thread\n");
        return -1;
    }
    ar->started = 1;
    return 0;
}

void archive_stop(server *s)
{
    struct archive *ar = s->archive;
    if (!ar)
        return;
    if (ar->started) {
        pthread_mutex_lock(&ar->mu);
        ar->stop = 1;
        pthread_cond_signal(&ar->cv);
        pthread_mutex_unlock(&ar->mu);
        pthread_join(ar->thread, NULL);
        if (s->db)
            archive_run(ar); /* the tail as the server leaves it */
    }
    pthread_cond_destroy(&ar->cv);
    pthread_mutex_destroy(&ar->mu);
    free(ar);
    s->archive = NULL;
}

static void archive_status(conn *c)
{
    struct archive *ar = c->srv->archive;
    if (!ar) {
        http_fail(c, 404, "NOT_FOUND", "the server has no archive (start it with --archive-dir)");
        return;
    }
    buf b = {0};
    char num[128];
    buf_append(&b, "{\"archive\":{\"dir\":", 18);
    json_w_str(&b, c->srv->cfg.archive_dir, strlen(c->srv->cfg.archive_dir));
    pthread_mutex_lock(&ar->mu);
    snprintf(num, sizeof num, ",\"intervalSeconds\":%d,\"runs\":%llu,\"failures\":%llu",
             c->srv->cfg.archive_interval_ms / 1000, (unsigned long long)ar->runs,
             (unsigned long long)ar->failures);
    buf_append(&b, num, strlen(num));
    if (ar->last_run_us) {
        buf_append(&b, ",\"lastRunAt\":", 13);
        json_w_time_rfc3339(&b, ar->last_run_us);
    }
    if (ar->last_ok_us) {
        buf_append(&b, ",\"lastSuccessAt\":", 17);
        json_w_time_rfc3339(&b, ar->last_ok_us);
        write_counts(&b, &ar->last);
    }
    if (ar->error[0]) {
        buf_append(&b, ",\"error\":", 9);
        json_w_str(&b, ar->error, strlen(ar->error));
    }
    pthread_mutex_unlock(&ar->mu);
    buf_append(&b, "}}\n", 3);
    http_respond(c, 200, "application/json", b.p, b.len, NULL);
    buf_free(&b);
    conn_request_done(c);
}

/* ----------------------------------------------------------------- routes */

void route_backup(conn *c, const char *path, size_t plen)
{
    int m = c->req.method;
    if (plen == 14 && !memcmp(path, "/admin/archive", 14)) {
        if (m != HTTP_GET) {
            http_fail(c, 405, "METHOD_NOT_ALLOWED", "only GET is allowed on /admin/archive");
            return;
        }
        archive_status(c);
        return;
    }
    if (admin_job_gate(c, "backup", "/admin/backup"))
        return;
    if (m == HTTP_POST) {
        backup_start(c);
        return;
    }
    struct backup_admin *a = c->srv->backup;
    int state = BK_NONE;
    if (a) {
        pthread_mutex_lock(&a->mu);
        state = a->state;
        pthread_mutex_unlock(&a->mu);
    }
    if (m == HTTP_GET) {
        if (state == BK_NONE)
            http_fail(c, 404, "NOT_FOUND", "no backup has run since the server started");
        else
            respond_status(c, 200);
        return;
    }
    if (state != BK_RUNNING) {
        http_fail(c, 404, "NOT_FOUND", "no backup is running");
        return;
    }
    atomic_store(&a->stop, 1);
    server_log(c->srv, 1, "msg=\"backup stop requested\" id=%llu", (unsigned long long)a->id);
    respond_status(c, 202);
}

void backup_shutdown(server *s)
{
    struct backup_admin *a = s->backup;
    if (!a)
        return;
    atomic_store(&a->stop, 1);
    if (a->joinable)
        pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->mu);
    free(a);
    s->backup = NULL;
}
