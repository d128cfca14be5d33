/*
 * bench_multi_pg.c - the PostgreSQL peer of bench_multi (docs/benchmarks.md,
 * `make bench-multi`): the same two-account transfer as one transaction
 * with row locks, on seeds/001's schema (events + snapshots tables).
 *
 *   transfer  BEGIN; SELECT the two accounts' snapshot rows FOR UPDATE (the
 *             per-stream row seeds/001 keeps: its version is the stream's
 *             version); check both versions; INSERT the Debited and Credited
 *             events at version + 1; UPDATE both rows; COMMIT. Each thread
 *             owns its two accounts (no conflicts), as in bench_multi.
 *   single    the same two events appended to one stream in one INSERT
 *             with seeds/001's version check (autocommit), the PostgreSQL
 *             counterpart of a single-stream append.
 *
 * fsync and synchronous_commit are on (bench/run_multi.sh starts the
 * cluster). Phases alternate like bench_multi's.
 *
 * Usage: bench_multi_pg CONNINFO [seconds (5)] [threads (64)] [rounds (2)]
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_phase.h"
#include "pg_seed.h"

static const char *conninfo;

static const char *SCHEMA = PG_SEED_SCHEMA;

static const char DATA[] = "{\"amount\":10,\"currency\":\"EUR\",\"ref\":\"bench\"}";

static int ok(PGconn *c, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 1;
    fprintf(stderr, "%s: %s", what, PQerrorMessage(c));
    bench_failures++;
    return 0;
}

static int exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int k = ok(c, r, sql);
    PQclear(r);
    return k;
}

/* A worker's connection: NULL (a failure counted) if it cannot connect. */
static PGconn *pg_connect(void)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        bench_failures++;
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void *transfer_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    PGconn *c = pg_connect();
    if (!c)
        return NULL;
    char a[64], b[64];
    snprintf(a, sizeof a, "pacct-%d-a", me);
    snprintf(b, sizeof b, "pacct-%d-b", me);
    const char *p2[2] = {a, b};
    PGresult *r = PQexecParams(c,
                               "INSERT INTO snapshots (stream_id, stream_type, snapshot_data, "
                               "version) VALUES ($1, 'Account', '{}', 0), ($2, 'Account', '{}', 0)",
                               2, NULL, p2, NULL, NULL, 0);
    int good = ok(c, r, "create accounts");
    PQclear(r);
    long long va = 0, vb = 0;
    while (good && !bench_stop) {
        if (!exec(c, "BEGIN"))
            break;
        r = PQexecParams(c,
                         "SELECT stream_id, version FROM snapshots WHERE stream_id IN ($1, $2) "
                         "ORDER BY stream_id FOR UPDATE",
                         2, NULL, p2, NULL, NULL, 0);
        if (!ok(c, r, "lock") || PQntuples(r) != 2 || atoll(PQgetvalue(r, 0, 1)) != va ||
            atoll(PQgetvalue(r, 1, 1)) != vb) {
            fprintf(stderr, "transfer: versions moved\n");
            bench_failures++;
            PQclear(r);
            break;
        }
        PQclear(r);
        char sa[24], sb[24];
        snprintf(sa, sizeof sa, "%lld", va + 1);
        snprintf(sb, sizeof sb, "%lld", vb + 1);
        const char *p5[5] = {a, b, DATA, sa, sb};
        r = PQexecParams(c,
                         "INSERT INTO events (stream_id, stream_type, event_type, event_data, "
                         "version) VALUES ($1, 'Account', 'Debited', $3::jsonb, $4::bigint), "
                         "($2, 'Account', 'Credited', $3::jsonb, $5::bigint)",
                         5, NULL, p5, NULL, NULL, 0);
        int k = ok(c, r, "insert");
        PQclear(r);
        if (!k)
            break;
        r = PQexecParams(c,
                         "UPDATE snapshots SET version = version + 1, "
                         "snapshot_data = jsonb_build_object('v', version + 1) "
                         "WHERE stream_id IN ($1, $2)",
                         2, NULL, p2, NULL, NULL, 0);
        k = ok(c, r, "update");
        PQclear(r);
        if (!k || !exec(c, "COMMIT"))
            break;
        va++;
        vb++;
        bench_ops++;
    }
    PQfinish(c);
    return NULL;
}

static void *single_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    PGconn *c = pg_connect();
    if (!c)
        return NULL;
    char s[64], v[24];
    snprintf(s, sizeof s, "psingle-%d", me);
    long long ver = 0;
    char arr[256];
    snprintf(arr, sizeof arr, "[%s,%s]", DATA, DATA);
    while (!bench_stop) {
        snprintf(v, sizeof v, "%lld", ver);
        const char *p[3] = {s, v, arr};
        PGresult *r = PQexecParams(
            c,
            "INSERT INTO events (stream_id, stream_type, event_type, event_data, version) "
            "SELECT $1, 'Account', CASE t.i WHEN 1 THEN 'Debited' ELSE 'Credited' END, t.d, "
            "cur.v + t.i "
            "FROM (SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE stream_id = $1) cur, "
            "     jsonb_array_elements($3::jsonb) WITH ORDINALITY AS t(d, i) "
            "WHERE cur.v = $2::bigint ORDER BY t.i",
            3, NULL, p, NULL, NULL, 0);
        int k = ok(c, r, "single append") && atoi(PQcmdTuples(r)) == 2;
        PQclear(r);
        if (!k) {
            fprintf(stderr, "single: the version check failed\n");
            bench_failures++;
            break;
        }
        ver += 2;
        bench_ops++;
    }
    PQfinish(c);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_multi_pg CONNINFO [seconds] [threads] [rounds]\n");
        return 2;
    }
    conninfo = argv[1];
    if (argc > 2)
        bench_secs = atof(argv[2]);
    int threads = argc > 3 ? atoi(argv[3]) : 64;
    int rounds = argc > 4 ? atoi(argv[4]) : 2;
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK || !exec(c, SCHEMA)) {
        fprintf(stderr, "setup: %s", PQerrorMessage(c));
        return 1;
    }
    PQfinish(c);
    double single = 0, multi = 0;
    for (int r = 0; r < rounds && !bench_failures; r++) {
        single += bench_phase("pg-single", 12, single_thread, threads, 2);
        multi += bench_phase("pg-transfer", 12, transfer_thread, threads, 2);
    }
    printf("pg transfer/single ratio: %.2f (%d alternating rounds)\n",
           single > 0 ? multi / single : 0, rounds);
    return bench_failures ? 1 : 0;
}
