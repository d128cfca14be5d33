/*
 * bench_chain.c - what the hash chain (docs/security.md, "The hash chain")
 * costs durable appends: the same workload on a store with the chain and on
 * one opened with STELE_OPEN_NO_CHAIN, in alternating rounds of the same
 * run (so both see the same background load), through the public API.
 *
 *   bench_chain [--secs S] [--rounds R] [--dir DIR] [--case TxB] [--only chain|plain]
 *
 * Workloads: T threads each appending B events per append (about 300 bytes
 * of JSON each, fsync on, always): 1x1, 16x1, 64x1 and 1x100. Each runs R
 * rounds (default 20) of S seconds (default 0.5) on each store, the two
 * stores alternating slice by slice (ABBAABBA...), so that a burst of other
 * load on the machine hits both about equally, and prints
 *
 *   chain threads=16 batch=1 rounds=20 chain_events_per_s=... \
 *         plain_events_per_s=... ratio=0.98 median_round_ratio=0.99 \
 *         chain_cpu_us_per_event=... plain_cpu_us_per_event=... \
 *         writer_us_per_event=CHAIN/PLAIN p10_us=CHAIN/PLAIN p50_us=CHAIN/PLAIN
 *
 * ratio = chain / plain over all rounds; median_round_ratio is the median
 * of the rounds' own ratios (robust to one disturbed slice); and the
 * process's CPU time (user + system, all threads) per event on each store,
 * which other load on the machine disturbs far less than throughput.
 * With --dir on a tmpfs (/dev/shm) fdatasync costs nothing and appends are
 * CPU-bound: the chain's cost is then at its most visible. Then the cost of proofs: one
 * `export` line with the time of stele_chain_export and stele_chain_verify
 * of 1,000 events and of one event's proof near the start of the store.
 * Two figures that background load disturbs least are printed beside the
 * ratios: the store's writer thread's CPU time per event (writer_us, from
 * /proc/self/task/N/schedstat of the thread named stele-writer; with 64
 * threads the writer is the serial bottleneck) plus, for the chain, its
 * hasher thread's (hasher_us, stele-hasher); and the median (p50) and 10th
 * percentile (p10) of the first thread's append latency (with one appending
 * thread, its critical path; p10 is what an undisturbed append takes).
 * --only runs one side alone (no ratio, no export): for callgrind, where the
 * instructions of one side per event are the measure (bench/run_chain.sh
 * CALLGRIND=1).
 * Nothing here asserts a timing: the numbers are reported, never judged.
 */
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "stele.h"

static double secs = 0.5;
static int rounds = 20;
static int only; /* 0 both, 1 chain only, 2 plain only */
static _Atomic int stop_flag;
static _Atomic uint64_t appended;

/* Append latencies of worker 0 (microseconds), per side. */
#define LAT_MAX 200000
typedef struct lat {
    float *v;
    size_t n;
} lat;
static lat *lat_cur;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

typedef struct worker {
    stele_db *db;
    int id, batch;
    int failed;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    char data[256], stream[64];
    snprintf(data, sizeof data,
             "{\"orderId\":\"%08d\",\"customer\":\"c-%05d\",\"lines\":[{\"sku\":\"A-1\",\"qty\":2,"
             "\"price\":1999},{\"sku\":\"B-7\",\"qty\":1,\"price\":4999}],\"currency\":\"EUR\","
             "\"note\":\"%s\"}",
             w->id, w->id, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    stele_event_in ev[100];
    for (int i = 0; i < w->batch; i++)
        ev[i] = (stele_event_in){.type = "OrderPlaced", .data = data, .data_len = strlen(data),
                                 .flags = STELE_EVENT_JSON};
    uint64_t n = 0;
    while (!atomic_load(&stop_flag)) {
        snprintf(stream, sizeof stream, "Order-%d-%llu", w->id, (unsigned long long)(n % 50));
        double t0 = w->id == 0 ? now() : 0;
        if (stele_append(w->db, stream, STELE_ANY, ev, (size_t)w->batch, NULL)) {
            fprintf(stderr, "append: %s\n", stele_errmsg());
            w->failed = 1;
            break;
        }
        if (w->id == 0 && lat_cur->n < LAT_MAX)
            lat_cur->v[lat_cur->n++] = (float)((now() - t0) * 1e6);
        n++;
        atomic_fetch_add(&appended, (uint64_t)w->batch);
    }
    return NULL;
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds used so far by this process's threads named `name` (the
 * scheduler's nanosecond count; 0 if /proc is not there). */
static double thread_cpu(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    double sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(comm, sizeof comm, f))
            comm[0] = 0;
        fclose(f);
        comm[strcspn(comm, "\n")] = 0;
        if (strcmp(comm, name))
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
        unsigned long long ns = 0;
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%llu", &ns) != 1)
                ns = 0;
            fclose(f);
        }
        sum += ns / 1e9;
    }
    closedir(d);
    return sum;
}

typedef struct side {
    double cpu, events, writer, hasher;
    lat lat;
} side;

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static double pct(lat *l, double p)
{
    if (!l->n)
        return 0;
    qsort(l->v, l->n, sizeof l->v[0], cmp_float);
    return l->v[(size_t)(p * (double)(l->n - 1))];
}

/* One timed phase: events/s; adds the process's CPU seconds, the writer's
 * and the hasher's, and the events to *sd. */
static double phase(stele_db *db, int threads, int batch, side *sd)
{
    pthread_t th[64];
    worker w[64];
    atomic_store(&stop_flag, 0);
    atomic_store(&appended, 0);
    lat_cur = &sd->lat;
    double w0 = thread_cpu("stele-writer"), h0 = thread_cpu("stele-hasher");
    double t0 = now(), c0 = cpu_now();
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){db, i, batch, 0};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double dt = now() - t0;
    sd->cpu += cpu_now() - c0;
    sd->writer += thread_cpu("stele-writer") - w0;
    sd->hasher += thread_cpu("stele-hasher") - h0;
    sd->events += (double)atomic_load(&appended);
    for (int i = 0; i < threads; i++)
        if (w[i].failed)
            exit(1);
    return (double)atomic_load(&appended) / dt;
}

static stele_db *open_at(const char *dir, uint32_t flags)
{
    stele_options o = {0};
    o.flags = flags;
    stele_db *db;
    if (stele_open(dir, &o, &db)) {
        fprintf(stderr, "open %s: %s\n", dir, stele_errmsg());
        exit(1);
    }
    return db;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static void rmrf(const char *p) { nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void workload(const char *base, int threads, int batch)
{
    char dc[600], dp[600];
    snprintf(dc, sizeof dc, "%s/chain-%dx%d", base, threads, batch);
    snprintf(dp, sizeof dp, "%s/plain-%dx%d", base, threads, batch);
    side C = {0}, P = {0};
    C.lat.v = malloc(LAT_MAX * sizeof(float));
    P.lat.v = malloc(LAT_MAX * sizeof(float));
    if (!C.lat.v || !P.lat.v)
        exit(1);
    if (only) {
        const char *d = only == 1 ? dc : dp;
        stele_db *db = open_at(d, only == 1 ? 0 : STELE_OPEN_NO_CHAIN);
        double rate = 0;
        for (int r = 0; r < rounds; r++)
            rate += phase(db, threads, batch, &C);
        printf("%s threads=%d batch=%d rounds=%d secs=%.1f events=%.0f events_per_s=%.0f "
               "cpu_us_per_event=%.2f writer_us_per_event=%.2f hasher_us_per_event=%.2f "
               "p10_us=%.0f p50_us=%.0f\n",
               only == 1 ? "chain" : "plain", threads, batch, rounds, secs, C.events,
               rate / rounds, C.cpu / C.events * 1e6, C.writer / C.events * 1e6,
               C.hasher / C.events * 1e6, pct(&C.lat, 0.1), pct(&C.lat, 0.5));
        free(C.lat.v);
        free(P.lat.v);
        fflush(stdout);
        stele_close(db);
        rmrf(d);
        return;
    }
    stele_db *c = open_at(dc, 0), *p = open_at(dp, STELE_OPEN_NO_CHAIN);
    double sc = 0, sp = 0, ratios[1000];
    for (int r = 0; r < rounds; r++) {
        /* Alternate which goes first, so neither always follows the other. */
        double a, b;
        if (r % 2) {
            b = phase(p, threads, batch, &P);
            a = phase(c, threads, batch, &C);
        } else {
            a = phase(c, threads, batch, &C);
            b = phase(p, threads, batch, &P);
        }
        sc += a;
        sp += b;
        ratios[r] = a / b;
        fprintf(stderr, "  %dx%d round %d: chain %.0f/s, plain %.0f/s\n", threads, batch, r + 1,
                a, b);
    }
    qsort(ratios, (size_t)rounds, sizeof ratios[0], cmp_double);
    double med = rounds % 2 ? ratios[rounds / 2]
                            : (ratios[rounds / 2 - 1] + ratios[rounds / 2]) / 2;
    printf("chain threads=%d batch=%d rounds=%d secs=%.1f chain_events_per_s=%.0f "
           "plain_events_per_s=%.0f ratio=%.3f median_round_ratio=%.3f "
           "chain_cpu_us_per_event=%.2f plain_cpu_us_per_event=%.2f "
           "writer_us_per_event=%.2f/%.2f hasher_us_per_event=%.2f "
           "p10_us=%.0f/%.0f p50_us=%.0f/%.0f\n",
           threads, batch, rounds, secs, sc / rounds, sp / rounds, sc / sp, med,
           C.cpu / C.events * 1e6, P.cpu / P.events * 1e6, C.writer / C.events * 1e6,
           P.writer / P.events * 1e6, C.hasher / C.events * 1e6, pct(&C.lat, 0.1),
           pct(&P.lat, 0.1), pct(&C.lat, 0.5), pct(&P.lat, 0.5));
    free(C.lat.v);
    free(P.lat.v);
    fflush(stdout);
    stele_chain_head h;
    stele_chain_get_head(c, &h);
    stele_close(p);
    rmrf(dp);
    if (threads == 16) { /* keep one chained store for the export line */
        char *json;
        size_t len;
        stele_chain_verified v;
        double t0 = now();
        int rc = stele_chain_export(c, 1000, 1999, &json, &len);
        double t1 = now();
        if (rc == 0) {
            rc = stele_chain_verify(json, len, NULL, &v);
            double t2 = now();
            fflush(stdout);
            printf("export events=1000 commits_to_head=%llu bytes=%zu export_ms=%.1f "
                   "verify_ms=%.1f\n",
                   (unsigned long long)v.commits, len, (t1 - t0) * 1e3, (t2 - t1) * 1e3);
            stele_free(json);
        }
        t0 = now();
        if (rc == 0 && (rc = stele_chain_export(c, 10, 10, &json, &len)) == 0) {
            t1 = now();
            rc = stele_chain_verify(json, len, NULL, &v);
            printf("proof position=10 commits_to_head=%llu bytes=%zu export_ms=%.1f "
                   "verify_ms=%.1f\n",
                   (unsigned long long)v.commits, len, (t1 - t0) * 1e3, (now() - t1) * 1e3);
            stele_free(json);
        }
        if (rc)
            fprintf(stderr, "export: %s\n", stele_errmsg());
        fflush(stdout);
    }
    stele_close(c);
    rmrf(dc);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int only_t = 0, only_b = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--secs") && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--case") && i + 1 < argc &&
                 sscanf(argv[++i], "%dx%d", &only_t, &only_b) == 2 && only_t >= 1 &&
                 only_t <= 64 && only_b >= 1 && only_b <= 100)
            ;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc &&
                 (!strcmp(argv[i + 1], "chain") || !strcmp(argv[i + 1], "plain")))
            only = !strcmp(argv[++i], "chain") ? 1 : 2;
        else {
            fprintf(stderr, "usage: bench_chain [--secs S] [--rounds R] [--dir DIR] "
                            "[--case THREADSxBATCH (at most 64x100)] [--only chain|plain]\n");
            return 2;
        }
    }
    if (secs <= 0 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "bench_chain: --secs and --rounds must be positive\n");
        return 2;
    }
    char tmpl[] = "/tmp/stele-bench-chain-XXXXXX";
    const char *base = dir ? dir : mkdtemp(tmpl);
    if (!base) {
        perror("mkdtemp");
        return 1;
    }
    static const int cases[][2] = {{1, 1}, {16, 1}, {64, 1}, {1, 100}};
    if (only_t)
        workload(base, only_t, only_b);
    else
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            workload(base, cases[i][0], cases[i][1]);
    if (!dir)
        rmdir(base);
    return 0;
}
