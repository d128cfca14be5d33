/*
 * bench_pgnotify.c - the peer of `bench_subs latency`: tailing PostgreSQL
 * with LISTEN/NOTIFY, on seeds/001's events table.
 *
 *   bench_pgnotify --conninfo STR --mode setup
 *       (Re)create seeds/001's events table and an AFTER INSERT trigger
 *       that calls pg_notify('events', global_position) for every row:
 *       the usual way to tail a PostgreSQL event table without polling.
 *
 *   bench_pgnotify --conninfo STR --mode latency --rate R [--clients C]
 *                  [--duration S] [--warmup S] [--data-bytes B]
 *       One listener connection (LISTEN events) and C appending
 *       connections (a thread each, libpq's blocking calls, as behind a
 *       connection pool), paced by one schedule of R appends/s: append k is
 *       sent at start + k/R by the next free connection. An append is
 *       bench_peers' seeds/001 append of 1 event (an exact expected
 *       version, one autocommit statement) with RETURNING global_position.
 *       For each: send -> result (the commit's acknowledgement: fsync on)
 *       and send -> its notification arriving at the listener. The output
 *       line has the fields of `bench_subs latency`, with target=postgres.
 *
 * NOTIFY is delivered at commit, to listeners that are idle between
 * transactions; it carries only what the trigger puts in the payload (here
 * the position). A real tailer would then SELECT the rows; that read is
 * not counted here, which favours PostgreSQL.
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pg_seed.h"

#include "measure.h"

static struct {
    const char *conninfo;
    int setup;
    double rate, duration, warmup;
    int clients, data_bytes;
} opt = {.conninfo = "", .duration = 10, .warmup = 2, .clients = 16, .data_bytes = 100};

static void usage(void)
{
    fprintf(stderr, "usage: bench_pgnotify --conninfo STR --mode setup|latency [--rate R]\n"
                    "         [--clients C] [--duration S] [--warmup S] [--data-bytes B]\n");
    exit(2);
}

static PGconn *connect_pg(void)
{
    PGconn *c = PQconnectdb(opt.conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_pgnotify: connect: %s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_pgnotify: %s\n  in: %.200s\n", PQerrorMessage(c), sql);
        exit(1);
    }
    PQclear(r);
}

/* seeds/001's events table (as bench_peers --schema seed) and the trigger. */
static const char *SETUP =
    "DROP TABLE IF EXISTS events, snapshots, subscription_checkpoints;" PG_SEED_EVENTS
    "CREATE OR REPLACE FUNCTION notify_event() RETURNS trigger AS $$"
    " BEGIN PERFORM pg_notify('events', NEW.global_position::text); RETURN NEW; END"
    " $$ LANGUAGE plpgsql;"
    "CREATE TRIGGER events_notify AFTER INSERT ON events"
    " FOR EACH ROW EXECUTE FUNCTION notify_event();";

static const char *APPEND =
    "INSERT INTO events (stream_id, stream_type, event_type, event_data, version) "
    "SELECT $1, 'Bench', 'BenchEvent', t.d, cur.v + t.i "
    "FROM (SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE stream_id = $1) cur, "
    "     jsonb_array_elements($3::jsonb) WITH ORDINALITY AS t(d, i) "
    "WHERE cur.v = $2::bigint ORDER BY t.i RETURNING global_position";

/* ------------------------------------------------------------ latency run */

static uint64_t g_t0, g_period, g_total, g_base, g_win_start, g_win_end;
static _Atomic uint64_t g_next;   /* next slot of the schedule */
static _Atomic int g_stop, g_listening;
static _Atomic uint64_t g_errors, g_late;
static uint64_t *g_sent, *g_ack, *g_recv;
static char *g_array;

static void *appender(void *arg)
{
    int idx = (int)(intptr_t)arg;
    PGconn *c = connect_pg();
    PGresult *r = PQprepare(c, "append", APPEND, 3, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_pgnotify: prepare: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    char stream[64], ver[32];
    snprintf(stream, sizeof stream, "pgn-%d-%llu", idx, (unsigned long long)g_t0);
    long long version = 0;
    while (!atomic_load(&g_stop)) {
        uint64_t k = atomic_fetch_add(&g_next, 1);
        if (k >= g_total)
            break;
        uint64_t due = g_t0 + k * g_period, t = bench_now_ns();
        if (due > t) {
            struct timespec ts = {(time_t)((due - t) / 1000000000u), (long)((due - t) % 1000000000u)};
            nanosleep(&ts, NULL);
        } else if (t - due > 2000000) {
            atomic_fetch_add(&g_late, 1);
        }
        if (bench_now_ns() >= g_win_end)
            break;
        snprintf(ver, sizeof ver, "%lld", version);
        const char *v[3] = {stream, ver, g_array};
        uint64_t t0 = bench_now_ns();
        r = PQexecPrepared(c, "append", 3, v, NULL, NULL, 0);
        uint64_t t1 = bench_now_ns();
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            if (atomic_fetch_add(&g_errors, 1) < 5)
                fprintf(stderr, "bench_pgnotify: append: %s", PQerrorMessage(c));
            PQclear(r);
            continue;
        }
        uint64_t pos = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        version++;
        if (pos >= g_base && pos - g_base < g_total) {
            g_sent[pos - g_base] = t0;
            g_ack[pos - g_base] = t1;
        }
    }
    PQfinish(c);
    return NULL;
}

static void *listener(void *arg)
{
    PGconn *c = arg;
    exec_ok(c, "LISTEN events");
    atomic_store(&g_listening, 1);
    int fd = PQsocket(c);
    while (!atomic_load(&g_stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        uint64_t t = bench_now_ns();
        if (!PQconsumeInput(c)) {
            fprintf(stderr, "bench_pgnotify: listener: %s", PQerrorMessage(c));
            exit(1);
        }
        PGnotify *n;
        while ((n = PQnotifies(c))) {
            uint64_t pos = strtoull(n->extra, NULL, 10);
            if (pos >= g_base && pos - g_base < g_total && !g_recv[pos - g_base])
                g_recv[pos - g_base] = t;
            PQfreemem(n);
        }
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double q_ms(const int64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)(p * (double)n + 0.999999);
    k = k < 1 ? 1 : k > n ? n : k;
    return (double)v[k - 1] / 1e6;
}

static int run_latency(void)
{
    if (opt.rate <= 0)
        usage();
    PGconn *lc = connect_pg();
    PGresult *r = PQexec(lc, "SELECT COALESCE(MAX(global_position), 0) + 1 FROM events");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_pgnotify: %s", PQerrorMessage(lc));
        return 1;
    }
    g_base = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    g_total = (uint64_t)(opt.rate * (opt.warmup + opt.duration)) + 16;
    g_sent = calloc(g_total, sizeof *g_sent);
    g_ack = calloc(g_total, sizeof *g_ack);
    g_recv = calloc(g_total, sizeof *g_recv);
    /* [DATA] of one event: the same bytes as bench_subs'. */
    static const char head[] = "{\"orderId\":\"ord-000000001\",\"total\":12345,\"note\":\"";
    int pad = opt.data_bytes - (int)(sizeof head - 1) - 2;
    g_array = malloc((size_t)opt.data_bytes + 8);
    if (!g_sent || !g_ack || !g_recv || !g_array || pad < 0)
        usage();
    size_t n = 0;
    g_array[n++] = '[';
    memcpy(g_array + n, head, sizeof head - 1);
    n += sizeof head - 1;
    memset(g_array + n, 'x', (size_t)pad);
    n += (size_t)pad;
    memcpy(g_array + n, "\"}]", 4);

    pthread_t lt;
    pthread_create(&lt, NULL, listener, lc);
    while (!atomic_load(&g_listening))
        usleep(1000);
    g_period = (uint64_t)(1e9 / opt.rate);
    g_t0 = bench_now_ns() + 100000000u;
    g_win_start = g_t0 + (uint64_t)(opt.warmup * 1e9);
    g_win_end = g_win_start + (uint64_t)(opt.duration * 1e9);
    pthread_t *at = calloc((size_t)opt.clients, sizeof *at);
    for (int i = 0; i < opt.clients; i++)
        pthread_create(&at[i], NULL, appender, (void *)(intptr_t)i);
    for (int i = 0; i < opt.clients; i++)
        pthread_join(at[i], NULL);
    usleep(2000000); /* the last notifications */
    atomic_store(&g_stop, 1);
    pthread_join(lt, NULL);
    PQfinish(lc);

    int64_t *ack = calloc(g_total, sizeof *ack), *ev = calloc(g_total, sizeof *ev),
            *beyond = calloc(g_total, sizeof *beyond);
    size_t na = 0, ne = 0;
    uint64_t missing = 0, before = 0;
    for (uint64_t i = 0; i < g_total; i++) {
        if (!g_sent[i] || g_sent[i] < g_win_start || g_sent[i] >= g_win_end)
            continue;
        ack[na++] = (int64_t)(g_ack[i] - g_sent[i]);
        if (!g_recv[i]) {
            missing++;
            continue;
        }
        ev[ne] = (int64_t)(g_recv[i] - g_sent[i]);
        beyond[ne] = (int64_t)g_recv[i] - (int64_t)g_ack[i];
        before += g_recv[i] < g_ack[i];
        ne++;
    }
    qsort(ack, na, sizeof *ack, cmp_i64);
    qsort(ev, ne, sizeof *ev, cmp_i64);
    qsort(beyond, ne, sizeof *beyond, cmp_i64);
    printf("subs latency target=postgres rate=%.0f achieved=%.0f clients=%d appends=%zu "
           "ack_p50_ms=%.3f ack_p99_ms=%.3f ack_p999_ms=%.3f "
           "event_p50_ms=%.3f event_p99_ms=%.3f event_p999_ms=%.3f "
           "event_minus_ack_p50_ms=%.3f event_minus_ack_p99_ms=%.3f event_minus_ack_p999_ms=%.3f "
           "before_ack=%.0f%% late_sends=%llu missing=%llu errors=%llu\n",
           opt.rate, (double)na / opt.duration, opt.clients, na, q_ms(ack, na, .5),
           q_ms(ack, na, .99), q_ms(ack, na, .999), q_ms(ev, ne, .5), q_ms(ev, ne, .99),
           q_ms(ev, ne, .999), q_ms(beyond, ne, .5), q_ms(beyond, ne, .99),
           q_ms(beyond, ne, .999), ne ? 100.0 * (double)before / (double)ne : 0,
           (unsigned long long)atomic_load(&g_late), (unsigned long long)missing,
           (unsigned long long)atomic_load(&g_errors));
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"conninfo", 1, 0, 'c'}, {"mode", 1, 0, 'm'},    {"rate", 1, 0, 'r'},
        {"clients", 1, 0, 'n'},  {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'},
        {"data-bytes", 1, 0, 'b'}, {0, 0, 0, 0}};
    int ch, mode = -1;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': opt.conninfo = optarg; break;
        case 'm': mode = !strcmp(optarg, "setup") ? 0 : !strcmp(optarg, "latency") ? 1 : -1; break;
        case 'r': opt.rate = atof(optarg); break;
        case 'n': opt.clients = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'b': opt.data_bytes = atoi(optarg); break;
        default: usage();
        }
    }
    if (mode < 0)
        usage();
    if (mode == 0) {
        PGconn *c = connect_pg();
        exec_ok(c, "SET client_min_messages = warning");
        exec_ok(c, SETUP);
        PQfinish(c);
        printf("# postgres: seeds/001 events table with an AFTER INSERT trigger calling "
               "pg_notify('events', global_position)\n");
        return 0;
    }
    return run_latency();
}
