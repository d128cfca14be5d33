/*
 * bench_proj.c - benchmarks of projections (issue 12), with seed 001's
 * OrderSummaryProjection on PostgreSQL as the peer. bench/run_proj.sh runs
 * them all in one go (`make bench-proj`).
 *
 *   load      N order events into a store: event i is OrderPlaced of a new
 *             order when i % 3 != 2, else OrderShipped of the order placed
 *             two events before; stream "Order-<id>" per order (so 2N/3
 *             streams), JSON data {"order_id","customer_id","total_cents"}
 *             (~80 bytes); written with stele_append_multi, 999 events of
 *             666 streams per commit
 *   count     a counting projection over $all (fromAll, $any: s.count++):
 *             time from creation until it has committed every event;
 *             events/s, resident memory (VmRSS now, VmHWM peak) of this
 *             process (store + projection); the CPU seconds of the
 *             process and of its busiest thread (the runner: the wall
 *             rate with a core of its own cannot beat events per runner
 *             CPU-second)
 *   perstream seed 001's order summary as a Stele projection:
 *             fromCategory('Order').foreachStream() with OrderPlaced /
 *             OrderShipped handlers: one partition per order (2N/3 of them),
 *             a cache of --cache partitions; events/s and memory as above
 *   fold      reconstructState: a 10,000-event stream (100-event appends),
 *             a projection with snapshots every --snapshot-every events and
 *             one without; --reps folds to random revisions with each;
 *             latency p50/p99/max
 *   inline    appends of one event by 8 threads to 1,000 streams of one
 *             category, with an inline projection on it (its handlers run
 *             and the state is stored with each append) and without;
 *             --events appends per mode and round, 3 alternating rounds on
 *             fresh stores; events/s and the ratio
 *   pgload    the same N events into PostgreSQL (seed 001's events table,
 *             COPY, its indexes built after the load)
 *   pgworker  seed 001's OrderSummaryProjection: read_all in batches of
 *             1,000 by global_position, one INSERT (OrderPlaced) or UPDATE
 *             (OrderShipped) per event on order_summaries, the checkpoint
 *             saved in the same transaction as the batch; runs until every
 *             event is done or --seconds pass; events/s
 *
 * One result line per command on stdout (name key=value ...), progress on
 * stderr. Nothing here judges a number.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "stele.h"

#ifdef HAVE_LIBPQ
#include <libpq-fe.h>
#endif

static struct {
    const char *dir, *conninfo;
    uint64_t events;
    uint32_t cache, snapshot_every, reps, seconds, rounds;
    int mode; /* inline: 0 both, 1 with only, 2 without only */
} opt = {.events = 1000000, .cache = 10000, .snapshot_every = 100, .reps = 200, .seconds = 60};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_proj: %s: %s\n", what, stele_errmsg());
    exit(1);
}

/* VmRSS and VmHWM of this process, MiB; RssAnon (heap, stacks: what
 * the process itself allocated) and RssFile (mapped files: LMDB's index
 * pages, clean and reclaimable) of VmRSS. */
static double rss_anon, rss_file;
static void rss(double *now, double *peak)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    *now = *peak = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6))
            *now = atof(line + 6) / 1024.0;
        if (!strncmp(line, "VmHWM:", 6))
            *peak = atof(line + 6) / 1024.0;
        if (!strncmp(line, "RssAnon:", 8))
            rss_anon = atof(line + 8) / 1024.0;
        if (!strncmp(line, "RssFile:", 8))
            rss_file = atof(line + 8) / 1024.0;
    }
    if (f)
        fclose(f);
}

/* Event i of the workload. */
typedef struct ev {
    uint64_t order;
    int shipped;
    char data[160];
    size_t len;
} ev;

static void make_event(uint64_t i, ev *e)
{
    uint64_t t = i / 3, k = i % 3;
    e->shipped = k == 2;
    e->order = t * 2 + (k == 2 ? 0 : k);
    if (e->shipped)
        e->len = (size_t)snprintf(e->data, sizeof e->data, "{\"order_id\":\"o%llu\"}",
                                  (unsigned long long)e->order);
    else
        e->len = (size_t)snprintf(e->data, sizeof e->data,
                                  "{\"order_id\":\"o%llu\",\"customer_id\":\"c%llu\","
                                  "\"total_cents\":%llu}",
                                  (unsigned long long)e->order,
                                  (unsigned long long)(e->order % 10000),
                                  (unsigned long long)(e->order % 9973 + 100));
}

static stele_db *open_store(void)
{
    stele_db *db;
    if (stele_open(opt.dir, NULL, &db))
        die("open");
    return db;
}

/* ------------------------------------------------------------ load */

static void cmd_load(void)
{
    stele_db *db = open_store();
    enum { B = 999 };
    static ev evs[B];
    static char names[B][32];
    stele_append_stream st[B];
    stele_append_record rec[B];
    double t0 = now_s();
    for (uint64_t i = 0; i < opt.events; i += B) {
        size_t n = opt.events - i < B ? (size_t)(opt.events - i) : B, ns = 0;
        for (size_t j = 0; j < n; j++) {
            make_event(i + j, &evs[j]);
            size_t ix;
            if (evs[j].shipped && j >= 2 && evs[j - 2].order == evs[j].order) {
                ix = rec[j - 2].stream;
            } else {
                ix = ns++;
                snprintf(names[ix], sizeof names[ix], "Order-%llu",
                         (unsigned long long)evs[j].order);
                st[ix] = (stele_append_stream){.stream = names[ix], .expected = STELE_ANY};
            }
            rec[j].stream = ix;
            rec[j].event = (stele_event_in){.type = evs[j].shipped ? "OrderShipped" : "OrderPlaced",
                                            .data = evs[j].data, .data_len = evs[j].len,
                                            .flags = STELE_EVENT_JSON};
        }
        if (stele_append_multi(db, st, ns, rec, n, NULL, NULL, NULL))
            die("append_multi");
        if ((i / B) % 100 == 0)
            fprintf(stderr, "\rbench_proj load: %llu events", (unsigned long long)i);
    }
    double dt = now_s() - t0;
    fprintf(stderr, "\n");
    printf("load events=%llu streams=%llu seconds=%.1f events_per_s=%.0f\n",
           (unsigned long long)opt.events, (unsigned long long)((opt.events + 2) / 3 * 2), dt,
           (double)opt.events / dt);
    stele_close(db);
}

/* ------------------------------------------------------------ projections */

/* CPU seconds (user + system, every thread) this process has used: on a
 * shared machine, events per CPU-second say more than per wall second. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds of this process's busiest live thread (the projection's
 * runner, which handles every event): with a core of its own, the wall
 * rate cannot beat events / this. */
static double busiest_thread_cpu_s(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    double best = 0;
    long hz = sysconf(_SC_CLK_TCK);
    while (d && (de = readdir(d))) {
        char path[300], line[1024];
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(line, sizeof line, f)) {
            char *p = strrchr(line, ')'); /* the name may hold spaces */
            unsigned long long ut, st;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                            &st) == 2 &&
                (double)(ut + st) / (double)hz > best)
                best = (double)(ut + st) / (double)hz;
        }
        fclose(f);
    }
    if (d)
        closedir(d);
    return best;
}

static void run_projection(const char *label, const char *name, const char *query)
{
    stele_db *db = open_store();
    double r0, p0;
    rss(&r0, &p0);
    stele_projection_settings s = {.query = query, .query_len = strlen(query), .enabled = 1,
                                   .cache_partitions = opt.cache};
    double t0 = now_s(), c0 = cpu_s();
    if (stele_projection_create(db, name, &s))
        die("create");
    double peak_seen = 0, anon_peak = 0;
    /* memory when the per-stream projection has made 1M partitions (two
     * of every three events start an order): the process's peak so far
     * (VmHWM), and what it held then, anonymous and mapped files */
    double m_peak = -1, m_anon = -1, m_file = -1;
    for (;;) {
        int rc = stele_projection_wait(db, name, STELE_END, 1000);
        double r, p;
        rss(&r, &p);
        if (r > peak_seen)
            peak_seen = r;
        if (rss_anon > anon_peak)
            anon_peak = rss_anon;
        if (rc == 0)
            break;
        if (rc != STELE_EBUSY)
            die("wait");
        stele_projection_info *in;
        if (stele_projection_get(db, name, &in) == 0) {
            if (m_peak < 0 && !strcmp(label, "perstream") && in->events_processed >= 1500000) {
                m_peak = p > peak_seen ? p : peak_seen;
                m_anon = rss_anon;
                m_file = rss_file;
            }
            fprintf(stderr, "\rbench_proj %s: %llu / %llu, %llu partitions cached, rss %.0f MiB",
                    label, (unsigned long long)in->position, (unsigned long long)in->head,
                    (unsigned long long)in->partitions_cached, r);
            stele_projection_info_free(in);
        }
    }
    double dt = now_s() - t0, dc = cpu_s() - c0;
    fprintf(stderr, "\n");
    double r1, p1;
    rss(&r1, &p1);
    stele_projection_info *in;
    if (stele_projection_get(db, name, &in))
        die("get");
    /* partitions: one per order for perstream */
    printf("%s events=%llu processed=%llu seconds=%.1f events_per_s=%.0f commits=%llu "
           "state_mib_written=%.0f cache=%u rss_before_mib=%.0f rss_after_mib=%.0f "
           "rss_peak_mib=%.0f rss_anon_peak_mib=%.0f rss_file_mib=%.0f heap_mib=%.1f "
           "handler_s=%.1f cpu_s=%.1f events_per_cpu_s=%.0f",
           label, (unsigned long long)in->events_read, (unsigned long long)in->events_processed,
           dt, (double)in->events_read / dt, (unsigned long long)in->commits,
           (double)in->state_bytes / 1048576.0, opt.cache, r0, r1, p1 > peak_seen ? p1 : peak_seen,
           anon_peak > rss_anon ? anon_peak : rss_anon, rss_file,
           (double)in->heap_bytes / 1048576.0, (double)in->handler_ns / 1e9, dc,
           (double)in->events_read / dc);
    double bt = busiest_thread_cpu_s();
    printf(" runner_cpu_s=%.1f events_per_runner_cpu_s=%.0f", bt,
           bt > 0 ? (double)in->events_read / bt : 0.0);
    if (m_peak >= 0)
        printf(" at_1m_partitions_rss_peak_mib=%.0f at_1m_partitions_rss_anon_mib=%.0f "
               "at_1m_partitions_rss_file_mib=%.0f", m_peak, m_anon, m_file);
    printf("\n");
    stele_projection_info_free(in);
    stele_close(db);
}

static void cmd_count(void)
{
    run_projection("count", "bench-count",
                   "fromAll().when({$init: function () { return {count: 0}; },\n"
                   "  $any: function (s, e) { s.count++; }});");
}

static void cmd_perstream(void)
{
    run_projection("perstream", "bench-orders",
                   "fromCategory('Order').foreachStream().when({\n"
                   "  $init: function () { return {customer: null, total: 0, status: 'new'}; },\n"
                   "  OrderPlaced: function (s, e) { s.customer = e.body.customer_id;\n"
                   "    s.total = e.body.total_cents; s.status = 'placed'; },\n"
                   "  OrderShipped: function (s, e) { s.status = 'shipped'; }});");
}

/* ------------------------------------------------------------ fold */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void cmd_fold(void)
{
    stele_db *db = open_store();
    static const char q[] =
        "fromCategory('Account').foreachStream().when({\n"
        "  $init: function () { return {balance: 0, count: 0}; },\n"
        "  MoneyDeposited: function (s, e) { s.balance += e.body.amount; s.count++; },\n"
        "  MoneyWithdrawn: function (s, e) { s.balance -= e.body.amount; s.count++; }});";
    stele_projection_settings a = {.query = q, .query_len = strlen(q), .enabled = 1,
                                   .snapshot_every = opt.snapshot_every};
    stele_projection_settings b = {.query = q, .query_len = strlen(q), .enabled = 1};
    if (stele_projection_create(db, "fold-snap", &a) || stele_projection_create(db, "fold-none", &b))
        die("create");
    const uint64_t N = 10000;
    static stele_event_in evs[100];
    static char data[100][64];
    for (uint64_t i = 0; i < N; i += 100) {
        for (int j = 0; j < 100; j++) {
            int dep = (i + (uint64_t)j) % 4 != 3;
            size_t len = (size_t)snprintf(data[j], sizeof data[j], "{\"amount\":%llu}",
                                          (unsigned long long)((i + (uint64_t)j) % 97 + 1));
            evs[j] = (stele_event_in){.type = dep ? "MoneyDeposited" : "MoneyWithdrawn",
                                      .data = data[j], .data_len = len, .flags = STELE_EVENT_JSON};
        }
        if (stele_append(db, "Account-1", STELE_ANY, evs, 100, NULL))
            die("append");
    }
    if (stele_projection_wait(db, "fold-snap", STELE_END, 120000) ||
        stele_projection_wait(db, "fold-none", STELE_END, 120000))
        die("wait");
    const char *names[] = {"fold-snap", "fold-none"};
    double *lat = calloc(opt.reps, sizeof *lat);
    srand(42);
    for (int k = 0; k < 2; k++) {
        for (uint32_t r = 0; r < opt.reps + 5; r++) {
            uint64_t to = (uint64_t)rand() % N;
            char *j = NULL;
            uint64_t rev, snap;
            double t0 = now_s();
            if (stele_projection_fold(db, names[k], "Account-1", to, NULL, &j, NULL, &rev, &snap))
                die("fold");
            double dt = now_s() - t0;
            stele_free(j);
            if (r >= 5) /* the first folds warm the caches */
                lat[r - 5] = dt * 1e3;
        }
        qsort(lat, opt.reps, sizeof *lat, cmp_d);
        printf("fold projection=%s stream_events=%llu snapshot_every=%u reps=%u p50_ms=%.3f "
               "p99_ms=%.3f max_ms=%.3f\n",
               names[k], (unsigned long long)N, k ? 0 : opt.snapshot_every, opt.reps,
               lat[opt.reps / 2], lat[opt.reps * 99 / 100], lat[opt.reps - 1]);
    }
    free(lat);
    stele_close(db);
}

/* ------------------------------------------------------------ inline */

static stele_db *inl_db;
static uint64_t inl_per_thread;

static void *inl_thread(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    char s[32], d[64];
    for (uint64_t i = 0; i < inl_per_thread; i++) {
        snprintf(s, sizeof s, "Acct-%llu", (unsigned long long)((id * 7919 + i) % 1000));
        size_t len = (size_t)snprintf(d, sizeof d, "{\"amount\":%llu}", (unsigned long long)i % 100);
        stele_event_in in = {.type = "Deposited", .data = d, .data_len = len,
                             .flags = STELE_EVENT_JSON};
        if (stele_append(inl_db, s, STELE_ANY, &in, 1, NULL))
            die("append");
    }
    return NULL;
}

/* Appends of one event by 8 threads to 1,000 streams of one category,
 * with an inline projection on it and without, alternating rounds on
 * fresh stores (--rounds, default 3; --mode with|without: one of them
 * only, for instruction counts under callgrind). Wall rate and CPU
 * seconds (user + system, every thread) of each. */
static void cmd_inline(void)
{
    static const char q[] =
        "fromCategory('Acct').foreachStream().when({\n"
        "  $init: function () { return {balance: 0, n: 0}; },\n"
        "  Deposited: function (s, e) { s.balance += e.body.amount; s.n++; }});";
    const int T = 8;
    inl_per_thread = opt.events / (uint64_t)T;
    double rate[2] = {0, 0}, cpu[2] = {0, 0};
    int rounds = opt.rounds ? (int)opt.rounds : 3;
    for (int round = 0; round < rounds; round++) {
        for (int with = 0; with < 2; with++) {
            if ((opt.mode == 1 && !with) || (opt.mode == 2 && with))
                continue;
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/inline-%d-%d", opt.dir, round, with);
            if (stele_open(dir, NULL, &inl_db))
                die("open");
            if (with) {
                stele_projection_settings st = {.query = q, .query_len = strlen(q), .enabled = 1,
                                                .mode = STELE_PROJ_INLINE};
                if (stele_projection_create(inl_db, "inline", &st))
                    die("create");
            }
            pthread_t th[8];
            double t0 = now_s(), c0 = cpu_s();
            for (int t = 0; t < T; t++)
                pthread_create(&th[t], NULL, inl_thread, (void *)(uintptr_t)t);
            for (int t = 0; t < T; t++)
                pthread_join(th[t], NULL);
            double r = (double)(inl_per_thread * (uint64_t)T) / (now_s() - t0);
            double c = cpu_s() - c0;
            fprintf(stderr, "bench_proj inline: round %d %s: %.0f appends/s, %.1f CPU us each\n",
                    round, with ? "with" : "without", r,
                    c / (double)(inl_per_thread * (uint64_t)T) * 1e6);
            cpu[with] += c / rounds;
            rate[with] += r / rounds;
            stele_close(inl_db);
        }
    }
    double n = (double)(inl_per_thread * (uint64_t)T);
    printf("inline threads=%d appends=%llu events_per_append=1 without_per_s=%.0f "
           "with_inline_per_s=%.0f ratio=%.2f cpu_us_per_append_without=%.1f "
           "cpu_us_per_append_with=%.1f cpu_ratio=%.2f rounds=%d\n",
           T, (unsigned long long)n, rate[0], rate[1], rate[0] > 0 ? rate[1] / rate[0] : 0,
           cpu[0] / n * 1e6, cpu[1] / n * 1e6, cpu[1] > 0 ? cpu[0] / cpu[1] : 0, rounds);
}

/* ------------------------------------------------------------ PostgreSQL */

#ifdef HAVE_LIBPQ
static PGconn *pg(void)
{
    PGconn *c = PQconnectdb(opt.conninfo ? opt.conninfo : "");
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_proj: postgres: %s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_proj: postgres: %s: %s", sql, PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
}

static void cmd_pgload(void)
{
    PGconn *c = pg();
    exec_ok(c, "DROP TABLE IF EXISTS events, order_summaries, subscription_checkpoints");
    exec_ok(c, "CREATE TABLE events (id UUID PRIMARY KEY DEFAULT gen_random_uuid(),"
               " stream_id VARCHAR(255) NOT NULL, stream_type VARCHAR(255) NOT NULL,"
               " event_type VARCHAR(255) NOT NULL, event_data JSONB NOT NULL,"
               " metadata JSONB DEFAULT '{}', version BIGINT NOT NULL,"
               " global_position BIGSERIAL, created_at TIMESTAMPTZ DEFAULT NOW(),"
               " CONSTRAINT unique_stream_version UNIQUE (stream_id, version))");
    exec_ok(c, "CREATE TABLE order_summaries (id TEXT PRIMARY KEY, customer TEXT, total BIGINT,"
               " status TEXT)");
    exec_ok(c, "CREATE TABLE subscription_checkpoints (subscription_id VARCHAR(255) PRIMARY KEY,"
               " last_position BIGINT NOT NULL DEFAULT 0, updated_at TIMESTAMPTZ DEFAULT NOW())");
    double t0 = now_s();
    PGresult *r = PQexec(c, "COPY events (stream_id, stream_type, event_type, event_data, version,"
                            " global_position) FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        fprintf(stderr, "bench_proj: COPY: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    char line[512];
    for (uint64_t i = 0; i < opt.events; i++) {
        ev e;
        make_event(i, &e);
        int n = snprintf(line, sizeof line, "Order-%llu\tOrder\t%s\t%.*s\t%d\t%llu\n",
                         (unsigned long long)e.order, e.shipped ? "OrderShipped" : "OrderPlaced",
                         (int)e.len, e.data, e.shipped, (unsigned long long)i + 1);
        if (PQputCopyData(c, line, n) != 1) {
            fprintf(stderr, "bench_proj: COPY data: %s", PQerrorMessage(c));
            exit(1);
        }
    }
    if (PQputCopyEnd(c, NULL) != 1) {
        fprintf(stderr, "bench_proj: COPY end: %s", PQerrorMessage(c));
        exit(1);
    }
    r = PQgetResult(c);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_proj: COPY: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    exec_ok(c, "CREATE INDEX idx_events_stream ON events(stream_id, version)");
    exec_ok(c, "CREATE INDEX idx_events_global ON events(global_position)");
    exec_ok(c, "CREATE INDEX idx_events_type ON events(event_type)");
    exec_ok(c, "ANALYZE events");
    printf("pgload events=%llu seconds=%.1f\n", (unsigned long long)opt.events, now_s() - t0);
    PQfinish(c);
}

static void cmd_pgworker(void)
{
    PGconn *c = pg();
    exec_ok(c, "INSERT INTO subscription_checkpoints (subscription_id, last_position)"
               " VALUES ('order-summary', 0) ON CONFLICT DO NOTHING");
    PGresult *r;
#define PREP(n, sql, np)                                                        \
    r = PQprepare(c, n, sql, np, NULL);                                         \
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {                                \
        fprintf(stderr, "bench_proj: prepare %s: %s", n, PQerrorMessage(c));    \
        exit(1);                                                                \
    }                                                                           \
    PQclear(r);
    PREP("read", "SELECT global_position, event_type, event_data->>'order_id',"
                 " event_data->>'customer_id', event_data->>'total_cents' FROM events"
                 " WHERE global_position > $1 ORDER BY global_position LIMIT 1000", 1)
    PREP("placed", "INSERT INTO order_summaries (id, customer, total, status)"
                   " VALUES ($1, $2, $3, 'placed')", 3)
    PREP("shipped", "UPDATE order_summaries SET status = 'shipped' WHERE id = $1", 1)
    PREP("ckpt", "UPDATE subscription_checkpoints SET last_position = $1, updated_at = now()"
                 " WHERE subscription_id = 'order-summary'", 1)
#undef PREP
    r = PQexec(c, "SELECT last_position FROM subscription_checkpoints"
                  " WHERE subscription_id = 'order-summary'");
    uint64_t pos = PQresultStatus(r) == PGRES_TUPLES_OK ? strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    uint64_t done = 0;
    double t0 = now_s();
    for (;;) {
        if (now_s() - t0 > opt.seconds)
            break;
        exec_ok(c, "BEGIN");
        char p[32];
        snprintf(p, sizeof p, "%llu", (unsigned long long)pos);
        const char *pv[3] = {p};
        PGresult *rows = PQexecPrepared(c, "read", 1, pv, NULL, NULL, 0);
        if (PQresultStatus(rows) != PGRES_TUPLES_OK) {
            fprintf(stderr, "bench_proj: read_all: %s", PQerrorMessage(c));
            exit(1);
        }
        int n = PQntuples(rows);
        for (int i = 0; i < n; i++) {
            int placed = !strcmp(PQgetvalue(rows, i, 1), "OrderPlaced");
            pv[0] = PQgetvalue(rows, i, 2);
            pv[1] = PQgetvalue(rows, i, 3);
            pv[2] = PQgetvalue(rows, i, 4);
            PGresult *u = PQexecPrepared(c, placed ? "placed" : "shipped", placed ? 3 : 1, pv, NULL,
                                         NULL, 0);
            if (PQresultStatus(u) != PGRES_COMMAND_OK) {
                fprintf(stderr, "bench_proj: apply: %s", PQerrorMessage(c));
                exit(1);
            }
            PQclear(u);
            pos = strtoull(PQgetvalue(rows, i, 0), NULL, 10);
        }
        PQclear(rows);
        snprintf(p, sizeof p, "%llu", (unsigned long long)pos);
        pv[0] = p;
        PGresult *u = PQexecPrepared(c, "ckpt", 1, pv, NULL, NULL, 0);
        PQclear(u);
        exec_ok(c, "COMMIT");
        done += (uint64_t)n;
        if (n == 0)
            break;
        if ((done / 1000) % 50 == 0)
            fprintf(stderr, "\rbench_proj pgworker: %llu events", (unsigned long long)done);
    }
    double dt = now_s() - t0;
    fprintf(stderr, "\n");
    printf("pgworker events=%llu of=%llu seconds=%.1f events_per_s=%.0f stopped_by_time=%d\n",
           (unsigned long long)done, (unsigned long long)opt.events, dt, (double)done / dt,
           done < opt.events);
    PQfinish(c);
}
#endif

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr,
                "usage: bench_proj load|count|perstream|fold|inline --dir D [--events N] [--cache N]\n"
                "                  [--snapshot-every N] [--reps N] [--rounds N] [--mode with|without]\n"
                "       bench_proj pgload|pgworker --conninfo STR [--events N] [--seconds S]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--dir"))
            opt.dir = v;
        else if (!strcmp(k, "--conninfo"))
            opt.conninfo = v;
        else if (!strcmp(k, "--events"))
            opt.events = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--cache"))
            opt.cache = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--snapshot-every"))
            opt.snapshot_every = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--reps"))
            opt.reps = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--seconds"))
            opt.seconds = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--rounds"))
            opt.rounds = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--mode"))
            opt.mode = !strcmp(v, "with") ? 1 : !strcmp(v, "without") ? 2 : 0;
        else {
            fprintf(stderr, "bench_proj: unknown option %s\n", k);
            return 2;
        }
    }
    const char *cmd = argv[1];
    if (!strncmp(cmd, "pg", 2)) {
#ifdef HAVE_LIBPQ
        if (!strcmp(cmd, "pgload"))
            cmd_pgload();
        else
            cmd_pgworker();
        return 0;
#else
        fprintf(stderr, "bench_proj: built without libpq\n");
        return 2;
#endif
    }
    if (!opt.dir) {
        fprintf(stderr, "bench_proj: --dir is missing\n");
        return 2;
    }
    if (!strcmp(cmd, "load"))
        cmd_load();
    else if (!strcmp(cmd, "count"))
        cmd_count();
    else if (!strcmp(cmd, "perstream"))
        cmd_perstream();
    else if (!strcmp(cmd, "fold"))
        cmd_fold();
    else if (!strcmp(cmd, "inline"))
        cmd_inline();
    else {
        fprintf(stderr, "bench_proj: unknown command %s\n", cmd);
        return 2;
    }
    return 0;
}
