/*
 * bench_scavenge.c - reclaiming the space of deleted events: Stele's
 * scavenge against PostgreSQL's VACUUM on the seeds/001 schema, on stores
 * where about half the events are deleted; and what each does to append
 * latency while it runs.
 *
 *   bench_scavenge stele --dir D [--events N --streams S --batch B --secs T]
 *   bench_scavenge pg --conninfo C [same sizes]   (built when libpq is there)
 *
 * The store: S streams of N/S events each, written in appends of B events
 * (200 bytes of JSON data per event, as bench_engine), streams visited
 * round-robin so every segment (every table page) holds all of them; then
 * every other stream is deleted. Stele keeps each stream's last append, so
 * (1 - B*S/N) / 2 of the events can go (48.75% with the defaults).
 *
 * Stele (one result line each):
 *   scavenge_alone        stele_scavenge with nothing else running: bytes
 *                         scanned, removed and given back, MB/s scanned
 *   append_idle           one thread, 1-event durable appends for T s:
 *                         latency p50/p99/max (the baseline)
 *   scavenge_with_appends on a copy of the same store: the appender runs
 *                         while stele_scavenge does; latency of the appends
 *                         made during the scavenge, and its MB/s
 *   scavenge_interleaved  on another copy: the scavenge pauses after every
 *                         segment as long as the segment took, so appends
 *                         alternate between "busy" windows (scavenge
 *                         running) and "idle" ones, under the same
 *                         background load: busy_* and idle_* latencies
 *                         compare the two within one run (this machine is
 *                         shared, and separate runs differ more than the
 *                         effect); MB/s over the busy time
 * PostgreSQL (seeds/001 schema, fsync on, rows deleted with DELETE):
 *   append_idle           one connection, 1-row INSERTs with the seeds'
 *                         expected-version check, for T s
 *   vacuum_with_appends   VACUUM events while the appender runs (space is
 *                         marked reusable, the files do not shrink)
 *   vacuum_full_with_appends  VACUUM FULL events (rewrites the table and
 *                         its indexes, gives space back; holds an ACCESS
 *                         EXCLUSIVE lock, so appends wait)
 *
 * Latencies are wall-clock per append, nearest-rank percentiles. Nothing
 * here judges a number.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "stele.h"

#ifdef HAVE_LIBPQ
#include <libpq-fe.h>

#include "pg_seed.h"

#include "measure.h"
#endif

#define DATA_LEN 200

typedef struct opts {
    const char *dir, *conninfo;
    uint64_t events, streams, batch;
    double secs;
} opts;

static opts o = {NULL, NULL, 4000000, 1000, 100, 10};

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_scavenge: %s: %s\n", what, msg);
    exit(1);
}

/* ------------------------------------------------------------ latencies */

typedef struct lat {
    uint64_t *v;   /* ns */
    uint64_t *at;  /* start, ns */
    size_t n, cap;
} lat;

static void lat_add(lat *l, uint64_t start, uint64_t ns)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        l->at = realloc(l->at, l->cap * sizeof *l->at);
        if (!l->v || !l->at)
            die("memory", "out of memory");
    }
    l->v[l->n] = ns;
    l->at[l->n++] = start;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Time windows [w[i][0], w[i][1]). */
typedef struct windows {
    uint64_t (*w)[2];
    size_t n, cap;
} windows;

static void win_add(windows *ws, uint64_t from, uint64_t to)
{
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? ws->cap * 2 : 64;
        ws->w = realloc(ws->w, ws->cap * sizeof *ws->w);
        if (!ws->w)
            die("memory", "out of memory");
    }
    ws->w[ws->n][0] = from;
    ws->w[ws->n][1] = to;
    ws->n++;
}

static int in_windows(const windows *ws, uint64_t t)
{
    for (size_t i = 0; i < ws->n; i++)
        if (t >= ws->w[i][0] && t < ws->w[i][1])
            return 1;
    return 0;
}

static uint64_t win_total(const windows *ws)
{
    uint64_t t = 0;
    for (size_t i = 0; i < ws->n; i++)
        t += ws->w[i][1] - ws->w[i][0];
    return t;
}

/* " PREFIXappends=N ... p50_us=.. p99_us=.. max_us=.." of the samples
 * started inside the windows (or in [from, to) when ws is NULL). */
static void lat_print_in(const lat *l, const char *prefix, const windows *ws, uint64_t from,
                         uint64_t to)
{
    uint64_t *s = malloc((l->n + 1) * sizeof *s);
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        if (ws ? in_windows(ws, l->at[i]) : l->at[i] >= from && l->at[i] < to)
            s[n++] = l->v[i];
    qsort(s, n, sizeof *s, cmp_u64);
    uint64_t span = ws ? win_total(ws) : to - from;
#define PCT(p) (n ? s[(size_t)((double)(n - 1) * (p) + 0.5)] / 1000 : 0)
    printf(" %sappends=%zu %sappends_per_s=%.0f %sp50_us=%llu %sp99_us=%llu %smax_us=%llu", prefix,
           n, prefix, span ? (double)n / ((double)span / 1e9) : 0.0, prefix,
           (unsigned long long)PCT(0.50), prefix, (unsigned long long)PCT(0.99), prefix,
           (unsigned long long)(n ? s[n - 1] / 1000 : 0));
#undef PCT
    free(s);
}

static void lat_print(const lat *l, uint64_t from, uint64_t to)
{
    lat_print_in(l, "", NULL, from, to);
}

/* Interleaving: after each segment the scavenge pauses as long as the
 * segment took (at least PAUSE_MIN_NS), so appends run alternately with
 * and without a scavenge beside them, under the same background load of
 * this shared machine. */
#define PAUSE_MIN_NS 300000000ull

typedef struct interleave {
    windows busy, idle;
    uint64_t busy_from;
} interleave;

static int interleave_cb(void *ctx, const stele_scavenge_result *so_far)
{
    (void)so_far;
    interleave *iv = ctx;
    uint64_t t = bench_now_ns(), d = t - iv->busy_from;
    win_add(&iv->busy, iv->busy_from, t);
    uint64_t pause = d > PAUSE_MIN_NS ? d : PAUSE_MIN_NS;
    struct timespec ts = {(time_t)(pause / 1000000000ull), (long)(pause % 1000000000ull)};
    nanosleep(&ts, NULL);
    iv->busy_from = bench_now_ns();
    win_add(&iv->idle, t, iv->busy_from);
    return 0;
}

/* ------------------------------------------------------------ payload */

static char g_data[DATA_LEN + 1];

static void make_data(void)
{
    memset(g_data, 'x', DATA_LEN);
    memcpy(g_data, "{\"orderId\":\"", 12);
    g_data[DATA_LEN - 2] = '"';
    g_data[DATA_LEN - 1] = '}';
    g_data[DATA_LEN] = 0;
}

static void stream_name(char *out, uint64_t s) { snprintf(out, 32, "bench-%06llu", (unsigned long long)s); }

/* ------------------------------------------------------------ Stele */

static void stele_must(int rc, const char *what)
{
    if (rc)
        die(what, stele_errmsg());
}

typedef struct builder {
    stele_db *db;
    int t, nthreads;
} builder;

/* Thread t writes rounds of appends to streams s with s % nthreads == t. */
static void *build_main(void *arg)
{
    builder *b = arg;
    uint64_t per = o.events / o.streams, rounds = per / o.batch;
    stele_event_in *ev = calloc(o.batch, sizeof *ev);
    for (uint64_t i = 0; i < o.batch; i++) {
        ev[i].type = "OrderPlaced";
        ev[i].data = g_data;
        ev[i].data_len = DATA_LEN;
        ev[i].flags = STELE_EVENT_JSON;
    }
    for (uint64_t r = 0; r < rounds; r++)
        for (uint64_t s = (uint64_t)b->t; s < o.streams; s += (uint64_t)b->nthreads) {
            char name[32];
            stream_name(name, s);
            stele_must(stele_append(b->db, name, STELE_ANY, ev, o.batch, NULL), "append");
        }
    free(ev);
    return NULL;
}

typedef struct appender {
    stele_db *db;
#ifdef HAVE_LIBPQ
    PGconn *pg;
#endif
    _Atomic int stop;
    lat l;
    uint64_t n;
} appender;

static void *stele_append_main(void *arg)
{
    appender *a = arg;
    stele_event_in ev = {.type = "OrderPlaced", .data = g_data, .data_len = DATA_LEN,
                         .flags = STELE_EVENT_JSON};
    while (!atomic_load(&a->stop)) {
        uint64_t t0 = bench_now_ns();
        stele_must(stele_append(a->db, "bench-live", STELE_ANY, &ev, 1, NULL), "append");
        lat_add(&a->l, t0, bench_now_ns() - t0);
    }
    return NULL;
}

static void run_cmd(const char *cmd)
{
    if (system(cmd) != 0)
        die("command failed", cmd);
}

static stele_db *open_store(const char *path)
{
    stele_db *db;
    stele_must(stele_open(path, NULL, &db), "open");
    return db;
}

static void print_scavenge(const char *name, const stele_scavenge_result *r)
{
    double secs = (double)r->duration_us / 1e6;
    printf("%s events=%llu streams=%llu batch=%llu segments=%llu rewritten=%llu events_removed=%llu "
           "mb_scanned=%.1f mb_removed=%.1f mb_reclaimed=%.1f secs=%.2f mb_per_s=%.1f",
           name, (unsigned long long)o.events, (unsigned long long)o.streams,
           (unsigned long long)o.batch, (unsigned long long)r->segments_scanned,
           (unsigned long long)r->segments_rewritten, (unsigned long long)r->events_removed,
           (double)r->bytes_scanned / 1e6, (double)r->bytes_removed / 1e6,
           (double)r->bytes_reclaimed / 1e6, secs,
           secs > 0 ? (double)r->bytes_scanned / 1e6 / secs : 0.0);
}

/* Scavenge the store at `path` while one thread appends; `paced`: pause
 * after each segment (interleave_cb). */
static void run_with_appends(const char *path, int paced)
{
    stele_db *db = open_store(path);
    appender ap = {.db = db};
    pthread_t at;
    pthread_create(&at, NULL, stele_append_main, &ap);
    usleep(1000 * 1000);
    interleave iv = {0};
    stele_scavenge_options so = {interleave_cb, &iv};
    stele_scavenge_result r;
    uint64_t s0 = bench_now_ns();
    iv.busy_from = s0;
    stele_must(stele_scavenge(db, paced ? &so : NULL, &r), "scavenge");
    uint64_t s1 = bench_now_ns();
    if (paced)
        win_add(&iv.busy, iv.busy_from, s1);
    atomic_store(&ap.stop, 1);
    pthread_join(at, NULL);
    if (!paced) {
        print_scavenge("scavenge_with_appends", &r);
        lat_print(&ap.l, s0, s1);
    } else {
        /* MB/s over the time spent scavenging, not the pauses. */
        r.duration_us = win_total(&iv.busy) / 1000;
        print_scavenge("scavenge_interleaved", &r);
        lat_print_in(&ap.l, "busy_", &iv.busy, 0, 0);
        lat_print_in(&ap.l, "idle_", &iv.idle, 0, 0);
    }
    printf("\n");
    fflush(stdout);
    stele_close(db);
    free(ap.l.v);
    free(ap.l.at);
    free(iv.busy.w);
    free(iv.idle.w);
}

static int bench_stele(void)
{
    char a[1100], b[1100], cmd[6000];
    snprintf(a, sizeof a, "%.1000s/scav-a", o.dir);
    snprintf(b, sizeof b, "%.1000s/scav-b", o.dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", a, b);
    run_cmd(cmd);

    /* Build, delete every other stream. */
    uint64_t t0 = bench_now_ns();
    stele_db *db = open_store(a);
    enum { BUILDERS = 8 };
    pthread_t th[BUILDERS];
    builder bs[BUILDERS];
    for (int t = 0; t < BUILDERS; t++) {
        bs[t] = (builder){db, t, BUILDERS};
        pthread_create(&th[t], NULL, build_main, &bs[t]);
    }
    for (int t = 0; t < BUILDERS; t++)
        pthread_join(th[t], NULL);
    for (uint64_t s = 0; s < o.streams; s += 2) {
        char name[32];
        stream_name(name, s);
        stele_must(stele_delete_stream(db, name, STELE_ANY, NULL), "delete");
    }
    stele_stats st;
    stele_must(stele_get_stats(db, &st), "stats");
    stele_close(db);
    fprintf(stderr, "bench_scavenge: built %llu events (%.0f MB of log) in %.1f s\n",
            (unsigned long long)st.events, (double)st.log_bytes / 1e6,
            (double)(bench_now_ns() - t0) / 1e9);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s' && cp -a '%s' '%s.orig' && sync", a, b, a, b);
    run_cmd(cmd);

    /* Baseline appends, then the scavenge alone. */
    db = open_store(a);
    appender ap = {.db = db};
    pthread_t at;
    uint64_t s0 = bench_now_ns();
    pthread_create(&at, NULL, stele_append_main, &ap);
    usleep((useconds_t)(o.secs * 1e6));
    atomic_store(&ap.stop, 1);
    pthread_join(at, NULL);
    uint64_t s1 = bench_now_ns();
    printf("append_idle threads=1 batch=1 secs=%.1f", (double)(s1 - s0) / 1e9);
    lat_print(&ap.l, s0, s1);
    printf("\n");
    stele_scavenge_result r;
    stele_must(stele_scavenge(db, NULL, &r), "scavenge");
    print_scavenge("scavenge_alone", &r);
    printf("\n");
    fflush(stdout);
    stele_close(db);

    /* The same scavenge on a copy, with the appender running: once at
     * full speed, once pausing after every segment (interleaved). */
    run_with_appends(b, 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s.orig' '%s' && sync", b, b, b);
    run_cmd(cmd);
    run_with_appends(b, 1);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s.orig'", a, b, b);
    run_cmd(cmd);
    free(ap.l.v);
    free(ap.l.at);
    return 0;
}

/* ------------------------------------------------------------ PostgreSQL */

#ifdef HAVE_LIBPQ
static PGconn *pg_connect(void)
{
    PGconn *c = PQconnectdb(o.conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        die("postgres", PQerrorMessage(c));
    return c;
}

static void pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
    PQclear(r);
}

static uint64_t pg_u64(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
    uint64_t v = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* The seeds/001 append of one event with its expected-version check. */
static const char *PG_APPEND =
    "INSERT INTO events (stream_id, stream_type, event_type, event_data, version) "
    "SELECT $1, 'Bench', 'OrderPlaced', $3::jsonb, cur.v + 1 "
    "FROM (SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE stream_id = $1) cur "
    "WHERE cur.v = $2::bigint";

static void *pg_append_main(void *arg)
{
    appender *a = arg;
    PGresult *r = PQprepare(a->pg, "append", PG_APPEND, 3, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("prepare", PQerrorMessage(a->pg));
    PQclear(r);
    long long version = 0;
    while (!atomic_load(&a->stop)) {
        char exp[32];
        snprintf(exp, sizeof exp, "%lld", version);
        const char *v[3] = {"bench-live", exp, g_data};
        uint64_t t0 = bench_now_ns();
        r = PQexecPrepared(a->pg, "append", 3, v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK || atol(PQcmdTuples(r)) != 1)
            die("append", PQerrorMessage(a->pg));
        PQclear(r);
        lat_add(&a->l, t0, bench_now_ns() - t0);
        version++;
    }
    return NULL;
}

static const char *PG_SCHEMA = "DROP TABLE IF EXISTS events;"
                                "CREATE EXTENSION IF NOT EXISTS pgcrypto;" PG_SEED_EVENTS;

/* One reclaiming statement with the appender running on its own
 * connection; sizes of the table with its indexes before and after. */
static void pg_reclaim(PGconn *c, const char *name, const char *sql)
{
    uint64_t before = pg_u64(c, "SELECT pg_total_relation_size('events')");
    appender ap = {.pg = pg_connect()};
    pthread_t at;
    pthread_create(&at, NULL, pg_append_main, &ap);
    usleep(1000 * 1000);
    uint64_t s0 = bench_now_ns();
    pg_exec(c, sql);
    uint64_t s1 = bench_now_ns();
    atomic_store(&ap.stop, 1);
    pthread_join(at, NULL);
    uint64_t after = pg_u64(c, "SELECT pg_total_relation_size('events')");
    double secs = (double)(s1 - s0) / 1e9;
    printf("%s events=%llu streams=%llu batch=%llu mb_before=%.1f mb_after=%.1f mb_reclaimed=%.1f "
           "secs=%.2f mb_per_s=%.1f",
           name, (unsigned long long)o.events, (unsigned long long)o.streams,
           (unsigned long long)o.batch, (double)before / 1e6, (double)after / 1e6,
           before > after ? (double)(before - after) / 1e6 : 0.0, secs,
           secs > 0 ? (double)before / 1e6 / secs : 0.0);
    lat_print(&ap.l, s0, s1);
    printf("\n");
    fflush(stdout);
    /* Start the next one from the same table: drop what the appender wrote. */
    pg_exec(c, "DELETE FROM events WHERE stream_id = 'bench-live'");
    PQfinish(ap.pg);
    free(ap.l.v);
    free(ap.l.at);
}

static int bench_pg(void)
{
    PGconn *c = pg_connect();
    pg_exec(c, "SET client_min_messages = warning");
    pg_exec(c, PG_SCHEMA);
    /* Load (not timed): the same streams, events and batches as the Stele
     * store, in position order, a round of appends per statement. */
    uint64_t t0 = bench_now_ns();
    uint64_t per = o.events / o.streams, rounds = per / o.batch;
    char sql[1024];
    for (uint64_t r = 0; r < rounds; r++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO events (stream_id, stream_type, event_type, event_data, version) "
                 "SELECT format('bench-%%s', lpad(s::text, 6, '0')), 'Bench', 'OrderPlaced', "
                 "'%s'::jsonb, %llu + i "
                 "FROM generate_series(0, %llu) s, generate_series(1, %llu) i ORDER BY s, i",
                 g_data, (unsigned long long)(r * o.batch), (unsigned long long)(o.streams - 1),
                 (unsigned long long)o.batch);
        pg_exec(c, sql);
    }
    /* Every other stream deleted, as on the Stele store. */
    pg_exec(c, "DELETE FROM events WHERE (substr(stream_id, 7)::int % 2) = 0");
    pg_exec(c, "CHECKPOINT");
    fprintf(stderr, "bench_scavenge: postgres loaded %llu rows in %.1f s\n",
            (unsigned long long)pg_u64(c, "SELECT count(*) FROM events"),
            (double)(bench_now_ns() - t0) / 1e9);

    appender ap = {.pg = pg_connect()};
    pthread_t at;
    uint64_t s0 = bench_now_ns();
    pthread_create(&at, NULL, pg_append_main, &ap);
    usleep((useconds_t)(o.secs * 1e6));
    atomic_store(&ap.stop, 1);
    pthread_join(at, NULL);
    uint64_t s1 = bench_now_ns();
    printf("append_idle threads=1 batch=1 secs=%.1f", (double)(s1 - s0) / 1e9);
    lat_print(&ap.l, s0, s1);
    printf("\n");
    pg_exec(c, "DELETE FROM events WHERE stream_id = 'bench-live'");
    PQfinish(ap.pg);
    free(ap.l.v);
    free(ap.l.at);

    pg_reclaim(c, "vacuum_with_appends", "VACUUM events");
    pg_reclaim(c, "vacuum_full_with_appends", "VACUUM FULL events");
    pg_exec(c, "DROP TABLE events");
    PQfinish(c);
    return 0;
}
#endif

/* ------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_scavenge stele --dir D [--events N] [--streams S] [--batch B] [--secs T]\n"
            "       bench_scavenge pg --conninfo C [--events N] [--streams S] [--batch B] [--secs T]\n"
            "defaults: --events 4000000 --streams 1000 --batch 100 --secs 10\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--dir"))
            o.dir = v;
        else if (!strcmp(a, "--conninfo"))
            o.conninfo = v;
        else if (!strcmp(a, "--events"))
            o.events = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--streams"))
            o.streams = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--batch"))
            o.batch = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--secs"))
            o.secs = atof(v);
        else
            usage();
    }
    if (!o.streams || !o.batch || o.events < o.streams * o.batch)
        die("sizes", "--events must be at least --streams x --batch");
    make_data();
    if (!strcmp(argv[1], "stele")) {
        if (!o.dir || strlen(o.dir) > 1000)
            usage();
        return bench_stele();
    }
#ifdef HAVE_LIBPQ
    if (!strcmp(argv[1], "pg")) {
        if (!o.conninfo)
            usage();
        return bench_pg();
    }
#endif
    usage();
    return 2;
}
