/*
 * bench_query.c - benchmarks of the secondary indexes and queries (issue 5),
 * with PostgreSQL (the seeds' schema and indexes) as the peer:
 *
 *   append   durable appends with the secondary indexes on and off
 *            (STELE_OPEN_NO_INDEXES), in alternating rounds so both modes see
 *            the same background load; bench_engine's workloads (T threads x
 *            B events per append) and its event (type "OrderPlaced", 200
 *            bytes of JSON, no metadata: 2 index keys per event), or with
 *            --shape full (6 keys per event): per event one of 10 types and a
 *            "region:N" tag of 8; per append (one request) a new
 *            $correlationId, an $actor of 1,000 and a "tenant:N" tag of 50
 *   build    the query store: N events in S streams, C categories
 *            ("cat042-001234"), 1,000 types of which "type0000" takes 10% of
 *            the events and the rest share the remainder uniformly, appended
 *            B events per append by T threads (each stream one append when
 *            N = S x B)
 *   open     time stele_open of the store after a clean close, or with
 *            --no-indexes after removing its index (a full rebuild from the
 *            log, secondary indexes included)
 *   params   the queries to time, written to a file that every target reads:
 *              category CAT FROM_POS FROM_US   the next COUNT events of
 *                                             category CAT from a position
 *              type TYPE AFTER_US BEFORE_US    the events of TYPE in a time
 *                                             window holding COUNT of them
 *   query    those queries in process (libstele: stele_read_query)
 *   http     the same over HTTP against `stele serve` on the store
 *            (GET /categories/CAT?from=&limit=COUNT and
 *            /types/TYPE?after=&before=, NDJSON)
 *   pgload   copy the store's events into PostgreSQL (seeds/001's table,
 *            COPY, then the seeds' indexes built after the load)
 *   views    the view streams on the built store (docs/kurrentdb-compatibility.md):
 *            R reads of 1 event of $ce-catNNN at a random view revision
 *            (p50, p99: the bisection by ordinal), and a whole category
 *            read as $ce-catNNN and as the category query, in pages of
 *            1,000 (events/s; the views add each event's view revision)
 *   pgquery  the same queries on PostgreSQL through libpq (text results):
 *              SELECT * FROM events WHERE stream_type = $1 AND
 *                created_at >= $2 ORDER BY created_at LIMIT COUNT
 *                (seed 003's aggregate type + time index)
 *              SELECT * FROM events WHERE event_type = $1 AND
 *                created_at >= $2 AND created_at < $3 ORDER BY created_at
 *                (seed 002's event type + timestamp index)
 *
 * Every result is one line on stdout (name key=value ...); progress goes to
 * stderr. Latencies are per query, wall clock, from the call to the last
 * event received; events_per_s = events returned / total query time. Each
 * target runs every query once untimed first (warm caches), then REPS
 * rounds timed. Nothing here judges a number.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBPQ
#include <libpq-fe.h>
#endif

#include "stele.h"

#include "measure.h"

#define DATA_LEN 200
#define MAX_PARAMS 4096

/* ------------------------------------------------------------ options */

static struct {
    const char *cmd, *dir, *params, *conninfo, *shape, *host;
    uint64_t events, streams, types, categories, count, reps;
    int threads, batch, rounds, port, no_indexes;
} opt = {.events = 10000000, .streams = 100000, .types = 1000, .categories = 100,
         .count = 10000, .reps = 20, .threads = 8, .batch = 100, .rounds = 5,
         .shape = "engine", .host = "127.0.0.1"};

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_query COMMAND [flags]\n"
            "  append  --dir D --threads T --batch B --events N --rounds R [--shape engine|full]\n"
            "  build   --dir D --events N --streams S --types 1000 --categories 100\n"
            "          --batch B --threads T [--no-indexes]          makes D/store\n"
            "  open    --dir D [--no-indexes]     time opening D/store (--no-indexes: remove\n"
            "          its index first, so that it is rebuilt from the log)\n"
            "  params  --dir D --params FILE --reps R --count 10000   queries on D/store\n"
            "  query   --dir D --params FILE --reps R                 in process\n"
            "  http    --port P --params FILE --reps R                over HTTP\n"
            "  pgload  --dir D --conninfo STR                         D/store -> PostgreSQL\n"
            "  pgquery --conninfo STR --params FILE --reps R\n"
            "  views   --dir D --categories C --reps R               $ce- reads on D/store\n");
    exit(2);
}

static uint64_t num(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "bench_query: %s wants a number, not '%s'\n", flag, v);
        exit(2);
    }
    return x;
}

static void parse_flags(int argc, char **argv)
{
    if (argc < 2)
        usage();
    opt.cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--no-indexes")) {
            opt.no_indexes = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(f, "--dir")) opt.dir = v;
        else if (!strcmp(f, "--params")) opt.params = v;
        else if (!strcmp(f, "--conninfo")) opt.conninfo = v;
        else if (!strcmp(f, "--shape")) opt.shape = v;
        else if (!strcmp(f, "--host")) opt.host = v;
        else if (!strcmp(f, "--events")) opt.events = num(f, v);
        else if (!strcmp(f, "--streams")) opt.streams = num(f, v);
        else if (!strcmp(f, "--types")) opt.types = num(f, v);
        else if (!strcmp(f, "--categories")) opt.categories = num(f, v);
        else if (!strcmp(f, "--count")) opt.count = num(f, v);
        else if (!strcmp(f, "--reps")) opt.reps = num(f, v);
        else if (!strcmp(f, "--threads")) opt.threads = (int)num(f, v);
        else if (!strcmp(f, "--batch")) opt.batch = (int)num(f, v);
        else if (!strcmp(f, "--rounds")) opt.rounds = (int)num(f, v);
        else if (!strcmp(f, "--port")) opt.port = (int)num(f, v);
        else usage();
    }
}

/* ------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_query: %s: %s: %s\n", what, stele_errname(rc), stele_errmsg());
    exit(1);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(uint64_t *lat, size_t n, double q)
{
    if (!n)
        return 0;
    qsort(lat, n, sizeof *lat, cmp_u64);
    return (double)lat[(size_t)((double)(n - 1) * q + 0.5)] / 1e6;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path) { nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* Bytes on disk (allocated blocks) under a path. */
static uint64_t du_total;
static int du_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path, (void)flag, (void)ftw;
    du_total += (uint64_t)sb->st_blocks * 512;
    return 0;
}

static double du_mib(const char *path)
{
    du_total = 0;
    nftw(path, du_cb, 16, FTW_PHYS);
    return (double)du_total / (1 << 20);
}

static double cpu_secs(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static stele_db *open_store(const char *path, uint32_t flags)
{
    stele_options so = {.flags = flags};
    stele_db *db = NULL;
    int rc = stele_open(path, &so, &db);
    if (rc)
        die(path, rc);
    return db;
}

/* A new store writes a 64 MiB spare segment of zeros in the background:
 * wait for it and flush it before timing (as bench_engine does). */
static void settle(const char *store)
{
    char spare[4300];
    snprintf(spare, sizeof spare, "%s/log/spare.tmp", store);
    for (int i = 0; i < 500; i++) {
        struct stat sb;
        if (stat(spare, &sb) == 0 && sb.st_size >= (off_t)(64 << 20))
            break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    int fd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
}

/* Exactly DATA_LEN bytes of JSON (bench_engine's event data). */
static void make_json(char *out, uint64_t seq)
{
    char tmp[DATA_LEN + 64];
    int n = snprintf(tmp, sizeof tmp,
                     "{\"orderId\":\"order-%012llu\",\"customerId\":\"cust-%08llu\","
                     "\"amount\":%llu,\"currency\":\"EUR\",\"note\":\"",
                     (unsigned long long)seq, (unsigned long long)(seq % 100000000ull),
                     (unsigned long long)(seq * 7919 % 100000));
    if (n < 0 || n > DATA_LEN - 2)
        n = 0;
    memcpy(out, tmp, (size_t)n);
    memset(out + n, 'x', (size_t)(DATA_LEN - 2 - n));
    out[DATA_LEN - 2] = '"';
    out[DATA_LEN - 1] = '}';
}

/* ------------------------------------------------------------ append */

typedef struct aworker {
    stele_db *db;
    int tid, full;
    uint64_t nappends;
    uint64_t *lat;
    pthread_barrier_t *start;
} aworker;

static const char *const full_types[] = {"OrderPlaced", "OrderPaid", "OrderShipped",
                                         "OrderCancelled", "ItemAdded", "ItemRemoved",
                                         "PriceChanged", "CustomerMoved", "RefundIssued",
                                         "InvoiceSent"};

static void *append_main(void *arg)
{
    aworker *w = arg;
    int b = opt.batch;
    stele_event_in *ev = calloc((size_t)b, sizeof *ev);
    char *data = malloc((size_t)b * DATA_LEN), (*meta)[128] = malloc((size_t)b * 128);
    const char *(*tags)[2] = malloc((size_t)b * sizeof *tags);
    char (*tagtext)[2][32] = malloc((size_t)b * sizeof *tagtext);
    if (!ev || !data || !meta || !tags || !tagtext)
        exit(1);
    uint64_t rng = bench_now_ns() ^ (uint64_t)w->tid * 0x632be59bd9b4e019ull;
    for (int i = 0; i < b; i++) {
        make_json(data + (size_t)i * DATA_LEN, (uint64_t)w->tid * 1000003u + (uint64_t)i);
        ev[i] = (stele_event_in){.type = "OrderPlaced", .data = data + (size_t)i * DATA_LEN,
                                 .data_len = DATA_LEN, .flags = STELE_EVENT_JSON};
        if (w->full) {
            /* Per event: one of 10 types and a region tag of 8. */
            uint64_t r = rng_next(&rng);
            ev[i].type = full_types[r % 10];
            snprintf(tagtext[i][1], 32, "region:%llu", (unsigned long long)(r >> 16) % 8);
            tags[i][0] = tagtext[i][0];
            tags[i][1] = tagtext[i][1];
            ev[i].tags = tags[i];
            ev[i].ntags = 2;
            ev[i].metadata = meta[i];
            ev[i].flags |= STELE_META_JSON;
        }
    }
    char stream[64];
    snprintf(stream, sizeof stream, "bench-%d", w->tid);
    pthread_barrier_wait(w->start);
    for (uint64_t k = 0; k < w->nappends; k++) {
        if (w->full) {
            /* One request per append: a new correlation id, a user of
             * 1,000 and a tenant of 50 for all its events. */
            uint64_t r = rng_next(&rng);
            for (int i = 0; i < b; i++) {
                int n = snprintf(meta[i], 128,
                                 "{\"$correlationId\":\"req-%d-%llu\",\"$actor\":\"user-%llu\"}",
                                 w->tid, (unsigned long long)k,
                                 (unsigned long long)(r % 1000));
                ev[i].metadata_len = (size_t)n;
                snprintf(tagtext[i][0], 32, "tenant:%llu", (unsigned long long)(r >> 16) % 50);
            }
        }
        uint64_t t0 = bench_now_ns();
        int rc = stele_append(w->db, stream, STELE_ANY, ev, (size_t)b, NULL);
        w->lat[k] = bench_now_ns() - t0;
        if (rc)
            die("append", rc);
    }
    free(ev);
    free(data);
    free(meta);
    free(tags);
    free(tagtext);
    return NULL;
}

/* One round: a fresh store, T threads; returns events/s, sets p50/p99. */
static double append_round(int no_indexes, int full, double *p50, double *p99, double *cpu_pct)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/append-store", opt.dir);
    rm_rf(path);
    stele_db *db = open_store(path, no_indexes ? STELE_OPEN_NO_INDEXES : 0);
    settle(path);
    int T = opt.threads;
    uint64_t per = opt.events / (uint64_t)opt.batch / (uint64_t)T;
    if (per == 0)
        per = 1;
    uint64_t appends = per * (uint64_t)T;
    aworker *w = calloc((size_t)T, sizeof *w);
    pthread_t *th = calloc((size_t)T, sizeof *th);
    uint64_t *lat = calloc(appends, sizeof *lat);
    if (!w || !th || !lat)
        exit(1);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)T + 1);
    for (int t = 0; t < T; t++) {
        w[t] = (aworker){db, t, full, per, lat + (uint64_t)t * per, &start};
        if (pthread_create(&th[t], NULL, append_main, &w[t]))
            exit(1);
    }
    pthread_barrier_wait(&start);
    double c0 = cpu_secs();
    uint64_t t0 = bench_now_ns();
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    *cpu_pct = 100.0 * (cpu_secs() - c0) / secs;
    *p50 = pct_ms(lat, appends, 0.5) * 1000;
    *p99 = pct_ms(lat, appends, 0.99) * 1000;
    stele_close(db);
    rm_rf(path);
    pthread_barrier_destroy(&start);
    free(w);
    free(th);
    free(lat);
    return (double)(appends * (uint64_t)opt.batch) / secs;
}

static void cmd_append(void)
{
    int full = !strcmp(opt.shape, "full");
    int R = opt.rounds;
    double on[64], off[64];
    if (R > 64)
        R = 64;
    char name[64];
    snprintf(name, sizeof name, "append_%dx%d_%s", opt.threads, opt.batch, full ? "full" : "engine");
    for (int r = 0; r < R; r++) {
        /* Alternate which mode goes first. */
        for (int k = 0; k < 2; k++) {
            int no_idx = (k + r) % 2;
            double p50, p99, cpu;
            double eps = append_round(no_idx, full, &p50, &p99, &cpu);
            (no_idx ? off : on)[r] = eps;
            printf("%s round=%d/%d indexes=%s events_per_s=%.0f p50_us=%.1f p99_us=%.1f "
                   "cpu_pct=%.0f\n",
                   name, r + 1, R, no_idx ? "off" : "on", eps, p50, p99, cpu);
            fflush(stdout);
        }
    }
    qsort(on, (size_t)R, sizeof *on, cmp_double);
    qsort(off, (size_t)R, sizeof *off, cmp_double);
    double mon = on[R / 2], moff = off[R / 2];
    printf("%s_summary rounds=%d events=%llu median_on=%.0f median_off=%.0f on_over_off=%.3f\n",
           name, R, (unsigned long long)opt.events, mon, moff, moff > 0 ? mon / moff : 0);
    fflush(stdout);
}

/* ------------------------------------------------------------ build */

static void stream_name(char *out, size_t n, uint64_t s)
{
    snprintf(out, n, "cat%03llu-%06llu", (unsigned long long)(s % opt.categories),
             (unsigned long long)s);
}

static void type_name(char *out, size_t n, uint64_t t)
{
    snprintf(out, n, "type%04llu", (unsigned long long)(t % 10000));
}

/* 10% "type0000", the rest uniform over the others. */
static uint64_t pick_type(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    if (r % 10 == 0 || opt.types < 2)
        return 0;
    return 1 + (r >> 8) % (opt.types - 1);
}

typedef struct bworker {
    stele_db *db;
    uint64_t *order; /* stream numbers to visit */
    uint64_t first, count;
    int tid;
} bworker;

static void *build_main(void *arg)
{
    bworker *w = arg;
    int b = opt.batch;
    stele_event_in *ev = calloc((size_t)b, sizeof *ev);
    char *data = malloc((size_t)b * DATA_LEN);
    char (*types)[24] = malloc((size_t)b * 24);
    if (!ev || !data || !types)
        exit(1);
    uint64_t rng = 0x1234567ull * (uint64_t)(w->tid + 1);
    char stream[64];
    for (uint64_t k = w->first; k < w->first + w->count; k++) {
        uint64_t s = w->order[k];
        stream_name(stream, sizeof stream, s);
        for (int i = 0; i < b; i++) {
            make_json(data + (size_t)i * DATA_LEN, s * (uint64_t)b + (uint64_t)i);
            type_name(types[i], 24, pick_type(&rng));
            ev[i] = (stele_event_in){.type = types[i], .data = data + (size_t)i * DATA_LEN,
                                     .data_len = DATA_LEN, .flags = STELE_EVENT_JSON};
        }
        int rc = stele_append(w->db, stream, STELE_ANY, ev, (size_t)b, NULL);
        if (rc)
            die("append", rc);
        if (w->tid == 0 && (k - w->first) % 2000 == 0)
            fprintf(stderr, "\rbench_query build: %llu%%", (unsigned long long)((k - w->first) *
                                                                                 100 / w->count));
    }
    free(ev);
    free(data);
    free(types);
    return NULL;
}

static void cmd_build(void)
{
    char path[4200], sub[4400];
    snprintf(path, sizeof path, "%s/store", opt.dir);
    rm_rf(path);
    stele_db *db = open_store(path, opt.no_indexes ? STELE_OPEN_NO_INDEXES : 0);
    settle(path);
    uint64_t appends = opt.events / (uint64_t)opt.batch;
    uint64_t *order = malloc(appends * sizeof *order);
    if (!order)
        exit(1);
    for (uint64_t k = 0; k < appends; k++)
        order[k] = k % opt.streams;
    uint64_t rng = 42;
    for (uint64_t k = appends; k > 1; k--) {
        uint64_t j = rng_next(&rng) % k;
        uint64_t t = order[k - 1];
        order[k - 1] = order[j];
        order[j] = t;
    }
    int T = opt.threads;
    bworker *w = calloc((size_t)T, sizeof *w);
    pthread_t *th = calloc((size_t)T, sizeof *th);
    if (!w || !th)
        exit(1);
    uint64_t per = appends / (uint64_t)T;
    double c0 = cpu_secs();
    uint64_t t0 = bench_now_ns();
    for (int t = 0; t < T; t++) {
        w[t] = (bworker){db, order, per * (uint64_t)t,
                         t == T - 1 ? appends - per * (uint64_t)t : per, t};
        if (pthread_create(&th[t], NULL, build_main, &w[t]))
            exit(1);
    }
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    double secs = (double)(bench_now_ns() - t0) / 1e9, cpu = cpu_secs() - c0;
    fprintf(stderr, "\r");
    uint64_t c1 = bench_now_ns();
    stele_close(db);
    double close_s = (double)(bench_now_ns() - c1) / 1e9;
    snprintf(sub, sizeof sub, "%s/log", path);
    double log_mib = du_mib(sub);
    snprintf(sub, sizeof sub, "%s/index", path);
    double idx_mib = du_mib(sub);
    printf("build_query_store events=%llu streams=%llu categories=%llu types=%llu batch=%d "
           "threads=%d indexes=%s secs=%.1f events_per_s=%.0f cpu_pct=%.0f close_s=%.2f "
           "log_mib=%.0f index_mib=%.0f\n",
           (unsigned long long)(appends * (uint64_t)opt.batch), (unsigned long long)opt.streams,
           (unsigned long long)opt.categories, (unsigned long long)opt.types, opt.batch, T,
           opt.no_indexes ? "off" : "on", secs, (double)(appends * (uint64_t)opt.batch) / secs,
           100 * cpu / secs, close_s, log_mib, idx_mib);
    fflush(stdout);
    free(order);
    free(w);
    free(th);
}

/* ------------------------------------------------------------ open */

/* Time stele_open of D/store: after a clean close, or (--rebuild) with the
 * index removed, so that every index, the secondary ones included, is
 * rebuilt from the log. */
static void cmd_open(void)
{
    char path[4200], cmd[4400];
    snprintf(path, sizeof path, "%s/store", opt.dir);
    if (opt.no_indexes) { /* --no-indexes here means: rebuild */
        snprintf(cmd, sizeof cmd, "%s/index", path);
        rm_rf(cmd);
    }
    uint64_t t0 = bench_now_ns();
    double c0 = cpu_secs();
    stele_db *db = open_store(path, 0);
    double secs = (double)(bench_now_ns() - t0) / 1e9, cpu = cpu_secs() - c0;
    stele_stats st;
    int rc = stele_get_stats(db, &st);
    if (rc)
        die("stats", rc);
    stele_close(db);
    printf("open_store mode=%s events=%llu secs=%.2f events_per_s=%.0f cpu_pct=%.0f\n",
           opt.no_indexes ? "rebuild" : "clean", (unsigned long long)st.events, secs,
           secs > 0 ? (double)st.events / secs : 0.0, 100 * cpu / secs);
    fflush(stdout);
}

/* ------------------------------------------------------------ params */

typedef struct qparam {
    int is_type;
    char key[64];
    uint64_t from_pos;
    int64_t a_us, b_us; /* category: from time; type: [a, b) */
} qparam;

static qparam params[MAX_PARAMS];
static size_t nparams;

static void load_params(void)
{
    FILE *f = fopen(opt.params, "r");
    if (!f) {
        perror(opt.params);
        exit(1);
    }
    char kind[16];
    qparam p;
    while (nparams < MAX_PARAMS) {
        memset(&p, 0, sizeof p);
        long long a, b;
        unsigned long long pos;
        int n = fscanf(f, "%15s %63s %llu %lld %lld", kind, p.key, &pos, &a, &b);
        if (n != 5)
            break;
        p.is_type = !strcmp(kind, "type");
        p.from_pos = pos;
        p.a_us = a;
        p.b_us = b;
        params[nparams++] = p;
    }
    fclose(f);
    if (!nparams) {
        fprintf(stderr, "bench_query: no queries in %s\n", opt.params);
        exit(1);
    }
}

static void cmd_params(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/store", opt.dir);
    stele_db *db = open_store(path, 0);
    stele_stats st;
    int rc = stele_get_stats(db, &st);
    if (rc)
        die("stats", rc);
    FILE *f = fopen(opt.params, "w");
    if (!f) {
        perror(opt.params);
        exit(1);
    }
    uint64_t rng = 7;
    for (uint64_t i = 0; i < opt.reps; i++) {
        /* A category read: COUNT events from a random position in the first
         * 80% of the log (so that COUNT follow). */
        char cat[32];
        snprintf(cat, sizeof cat, "cat%03llu", (unsigned long long)(rng_next(&rng) % opt.categories));
        uint64_t from = rng_next(&rng) % (st.events * 8 / 10 + 1);
        stele_query q = {.kind = STELE_QUERY_CATEGORY, .key = cat, .from = from,
                         .direction = STELE_FORWARDS, .limit = 1};
        stele_page *pg;
        if ((rc = stele_read_query(db, &q, &pg)))
            die("query", rc);
        if (stele_page_count(pg) == 1)
            fprintf(f, "category %s %llu %lld 0\n", cat,
                    (unsigned long long)stele_page_event(pg, 0)->position,
                    (long long)stele_page_event(pg, 0)->created_us);
        stele_page_free(pg);
        /* A type over a time range: the window from the created time of the
         * hot type's event at a random position to just after its COUNT-th
         * event from there. */
        from = rng_next(&rng) % (st.events * 8 / 10 + 1);
        q = (stele_query){.kind = STELE_QUERY_TYPE, .key = "type0000", .from = from,
                          .direction = STELE_FORWARDS, .limit = opt.count};
        if ((rc = stele_read_query(db, &q, &pg)))
            die("query", rc);
        size_t n = stele_page_count(pg);
        if (n)
            fprintf(f, "type type0000 0 %lld %lld\n",
                    (long long)stele_page_event(pg, 0)->created_us,
                    (long long)stele_page_event(pg, n - 1)->created_us + 1);
        stele_page_free(pg);
    }
    fclose(f);
    stele_close(db);
    fprintf(stderr, "bench_query: wrote %s\n", opt.params);
}

/* ------------------------------------------------------------ report */

typedef struct tally {
    uint64_t *lat;
    size_t n;
    uint64_t events, ns;
} tally;

static void tally_add(tally *t, uint64_t ns, uint64_t events)
{
    t->lat[t->n++] = ns;
    t->ns += ns;
    t->events += events;
}

static void report(const char *name, const char *target, tally *t)
{
    double secs = (double)t->ns / 1e9;
    printf("%s target=%s queries=%zu events=%llu events_per_query=%.0f p50_ms=%.2f p99_ms=%.2f "
           "mean_ms=%.2f events_per_s=%.0f\n",
           name, target, t->n, (unsigned long long)t->events,
           t->n ? (double)t->events / (double)t->n : 0.0, pct_ms(t->lat, t->n, 0.5),
           pct_ms(t->lat, t->n, 0.99), t->n ? secs * 1000 / (double)t->n : 0.0,
           secs > 0 ? (double)t->events / secs : 0.0);
    fflush(stdout);
}

/* Run every query: once untimed, then `reps` timed rounds. */
typedef uint64_t (*run_fn)(void *ctx, const qparam *p);

static void run_all(const char *target, run_fn fn, void *ctx)
{
    tally cat = {0}, typ = {0};
    cat.lat = calloc(nparams * opt.reps + 1, sizeof *cat.lat);
    typ.lat = calloc(nparams * opt.reps + 1, sizeof *typ.lat);
    if (!cat.lat || !typ.lat)
        exit(1);
    for (size_t i = 0; i < nparams; i++)
        fn(ctx, &params[i]);
    for (uint64_t r = 0; r < opt.reps; r++)
        for (size_t i = 0; i < nparams; i++) {
            uint64_t t0 = bench_now_ns();
            uint64_t n = fn(ctx, &params[i]);
            tally_add(params[i].is_type ? &typ : &cat, bench_now_ns() - t0, n);
        }
    report("query_category", target, &cat);
    report("query_type_time", target, &typ);
    free(cat.lat);
    free(typ.lat);
}

/* ------------------------------------------------------------ query (libstele) */

static uint64_t run_stele(void *ctx, const qparam *p)
{
    stele_db *db = ctx;
    stele_query q;
    if (p->is_type)
        q = (stele_query){.kind = STELE_QUERY_TYPE, .key = p->key, .has_after = 1,
                          .has_before = 1, .after_us = p->a_us, .before_us = p->b_us,
                          .direction = STELE_FORWARDS, .limit = 1000000};
    else
        q = (stele_query){.kind = STELE_QUERY_CATEGORY, .key = p->key, .from = p->from_pos,
                          .direction = STELE_FORWARDS, .limit = opt.count};
    stele_page *pg;
    int rc = stele_read_query(db, &q, &pg);
    if (rc)
        die("query", rc);
    uint64_t n = stele_page_count(pg);
    stele_page_free(pg);
    return n;
}

static void cmd_query(void)
{
    load_params();
    char path[4200];
    snprintf(path, sizeof path, "%s/store", opt.dir);
    stele_db *db = open_store(path, 0);
    run_all("stele", run_stele, db);
    stele_close(db);
}

/* ------------------------------------------------------------ views */

/* Read a whole category as the view $ce-CAT or as the category query, in
 * pages of 1,000: the events read. */
static uint64_t read_category(stele_db *db, const char *cat, int as_view)
{
    char view[64];
    snprintf(view, sizeof view, "$ce-%s", cat);
    stele_query q = {0};
    q.kind = STELE_QUERY_CATEGORY;
    q.key = cat;
    q.limit = 1000;
    uint64_t from = 0, n = 0;
    for (;;) {
        stele_page *pg;
        q.from = from;
        int rc = as_view ? stele_read_stream(db, view, from, STELE_FORWARDS, 1000, &pg)
                         : stele_read_query(db, &q, &pg);
        if (rc)
            die(as_view ? "view read" : "query", rc);
        n += stele_page_count(pg);
        int more = stele_page_next(pg, &from);
        stele_page_free(pg);
        if (!more)
            return n;
    }
}

static void cmd_views(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/store", opt.dir);
    stele_db *db = open_store(path, 0);
    uint64_t rng = 42, reps = opt.reps ? opt.reps : 1000;
    uint64_t *lat = malloc(reps * sizeof *lat);
    uint64_t cats = opt.categories ? opt.categories : 100;
    for (uint64_t r = 0; r < reps; r++) {
        char view[64];
        snprintf(view, sizeof view, "$ce-cat%03llu", (unsigned long long)(rng_next(&rng) % cats));
        stele_page *pg;
        int rc = stele_read_stream(db, view, STELE_END, STELE_BACKWARDS, 1, &pg);
        if (rc)
            die("view head", rc);
        uint64_t last = 0;
        stele_page_link(pg, 0, NULL, &last);
        stele_page_free(pg);
        uint64_t at = rng_next(&rng) % (last + 1), t0 = bench_now_ns();
        if ((rc = stele_read_stream(db, view, at, STELE_FORWARDS, 1, &pg)))
            die("view read", rc);
        lat[r] = bench_now_ns() - t0;
        stele_page_free(pg);
    }
    printf("view_seek reads=%llu p50_us=%.1f p99_us=%.1f\n", (unsigned long long)reps,
           pct_ms(lat, reps, 0.5) * 1000, pct_ms(lat, reps, 0.99) * 1000);
    free(lat);
    for (int round = 0; round < 2; round++) {
        for (int as_view = 1; as_view >= 0; as_view--) {
            uint64_t t0 = bench_now_ns(), n = 0;
            for (uint64_t c = 0; c < cats && c < 10; c++) {
                char cat[16];
                snprintf(cat, sizeof cat, "cat%03llu", (unsigned long long)c);
                n += read_category(db, cat, as_view);
            }
            double secs = (double)(bench_now_ns() - t0) / 1e9;
            printf("%s round=%d events=%llu secs=%.3f events_per_s=%.0f\n",
                   as_view ? "view_read" : "query_read", round, (unsigned long long)n, secs,
                   (double)n / secs);
        }
    }
    stele_close(db);
}

/* ------------------------------------------------------------ http */

typedef struct hconn {
    int fd;
    char *buf;
    size_t len, off, cap;
} hconn;

static void h_connect(hconn *h)
{
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    if (h->fd < 0 || connect(h->fd, (struct sockaddr *)&sa, sizeof sa)) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    h->cap = 1 << 20;
    h->buf = malloc(h->cap);
    h->len = h->off = 0;
}

/* More bytes into the buffer (compacting it); exits on EOF/error. */
static void h_fill(hconn *h)
{
    if (h->off > 0) {
        memmove(h->buf, h->buf + h->off, h->len - h->off);
        h->len -= h->off;
        h->off = 0;
    }
    if (h->len == h->cap) {
        h->cap *= 2;
        h->buf = realloc(h->buf, h->cap);
    }
    ssize_t n = read(h->fd, h->buf + h->len, h->cap - h->len);
    if (n <= 0) {
        fprintf(stderr, "bench_query: http: connection closed\n");
        exit(1);
    }
    h->len += (size_t)n;
}

/* A line ending in CRLF starting at h->off: returns its length (without
 * CRLF) and moves past it. */
static size_t h_line(hconn *h, char *out, size_t cap)
{
    for (;;) {
        char *e = memmem(h->buf + h->off, h->len - h->off, "\r\n", 2);
        if (e) {
            size_t n = (size_t)(e - (h->buf + h->off));
            size_t k = n < cap - 1 ? n : cap - 1;
            memcpy(out, h->buf + h->off, k);
            out[k] = 0;
            h->off += n + 2;
            return n;
        }
        h_fill(h);
    }
}

/* GET path with NDJSON; returns the number of events (lines). */
static uint64_t h_get(hconn *h, const char *path)
{
    char req[1024], line[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: bench\r\nAccept: application/x-ndjson\r\n\r\n", path);
    if (write(h->fd, req, (size_t)n) != n) {
        perror("write");
        exit(1);
    }
    h_line(h, line, sizeof line);
    if (strncmp(line, "HTTP/1.1 200", 12)) {
        fprintf(stderr, "bench_query: GET %s: %s\n", path, line);
        exit(1);
    }
    while (h_line(h, line, sizeof line) > 0) {
    }
    uint64_t events = 0;
    for (;;) {
        h_line(h, line, sizeof line);
        size_t size = strtoul(line, NULL, 16);
        while (h->len - h->off < size + 2)
            h_fill(h);
        const char *p = h->buf + h->off, *end = p + size;
        while ((p = memchr(p, '\n', (size_t)(end - p)))) {
            events++;
            p++;
        }
        h->off += size + 2;
        if (size == 0)
            break;
    }
    return events;
}

static uint64_t run_http(void *ctx, const qparam *p)
{
    hconn *h = ctx;
    char path[512];
    if (p->is_type) {
        char a[32], b[32];
        stele_time_format(p->a_us, a);
        stele_time_format(p->b_us, b);
        snprintf(path, sizeof path, "/types/%s?after=%s&before=%s", p->key, a, b);
    } else {
        snprintf(path, sizeof path, "/categories/%s?from=%llu&limit=%llu", p->key,
                 (unsigned long long)p->from_pos, (unsigned long long)opt.count);
    }
    return h_get(h, path);
}

static void cmd_http(void)
{
    load_params();
    hconn h;
    h_connect(&h);
    run_all("stele_http", run_http, &h);
    close(h.fd);
    free(h.buf);
}

/* ------------------------------------------------------------ PostgreSQL */

#ifdef HAVE_LIBPQ

static PGconn *pg_connect(void)
{
    PGconn *c = PQconnectdb(opt.conninfo ? opt.conninfo : "");
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_query: postgres: %s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

static void pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_query: postgres: %s: %s", sql, PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
}

static double pg_size_mib(PGconn *c, const char *what)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s", what);
    PGresult *r = PQexec(c, sql);
    double v = PQresultStatus(r) == PGRES_TUPLES_OK ? atof(PQgetvalue(r, 0, 0)) / (1 << 20) : -1;
    PQclear(r);
    return v;
}

/* seeds/001's schema; the seeds' indexes are built after the load. */
static const char *const pg_schema =
    "DROP TABLE IF EXISTS events;"
    "CREATE TABLE events ("
    " id UUID NOT NULL DEFAULT gen_random_uuid(),"
    " stream_id VARCHAR(255) NOT NULL,"
    " stream_type VARCHAR(255) NOT NULL,"
    " event_type VARCHAR(255) NOT NULL,"
    " event_data JSONB NOT NULL,"
    " metadata JSONB DEFAULT '{}',"
    " version BIGINT NOT NULL,"
    " global_position BIGSERIAL,"
    " created_at TIMESTAMPTZ DEFAULT NOW())";

static const char *const pg_indexes[] = {
    /* seeds/001 */
    "ALTER TABLE events ADD PRIMARY KEY (id)",
    "ALTER TABLE events ADD CONSTRAINT unique_stream_version UNIQUE (stream_id, version)",
    "CREATE INDEX idx_events_stream ON events(stream_id, version)",
    "CREATE INDEX idx_events_global ON events(global_position)",
    "CREATE INDEX idx_events_type ON events(event_type)",
    /* seeds/003: aggregate type + event time (the category index) */
    "CREATE INDEX idx_events_type_time_003 ON events(stream_type, created_at)",
    /* seeds/002: event type + timestamp */
    "CREATE INDEX idx_events_eventtype_time_002 ON events(event_type, created_at)",
    "VACUUM ANALYZE events",
};

static void cmd_pgload(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/store", opt.dir);
    stele_db *db = open_store(path, 0);
    PGconn *c = pg_connect();
    pg_exec(c, "SET synchronous_commit = on");
    pg_exec(c, pg_schema);
    uint64_t t0 = bench_now_ns();
    PGresult *r = PQexec(c, "COPY events (id, stream_id, stream_type, event_type, event_data, "
                            "metadata, version, global_position, created_at) FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        fprintf(stderr, "bench_query: COPY: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    size_t cap = 4 << 20, len = 0;
    char *out = malloc(cap);
    uint64_t from = 0, rows = 0;
    for (;;) {
        stele_page *pg;
        int rc = stele_read_all(db, from, STELE_FORWARDS, 10000, &pg);
        if (rc)
            die("read_all", rc);
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (cap - len < e->data_len + 1024) {
                if (PQputCopyData(c, out, (int)len) != 1) {
                    fprintf(stderr, "bench_query: COPY data: %s", PQerrorMessage(c));
                    exit(1);
                }
                len = 0;
            }
            char id[37], t[32], cat[64];
            stele_uuid_format(e->id, id);
            stele_time_format(e->created_us, t);
            const char *dash = memchr(e->stream, '-', e->stream_len);
            snprintf(cat, sizeof cat, "%.*s",
                     (int)(dash && dash != e->stream ? (size_t)(dash - e->stream) : e->stream_len),
                     e->stream);
            /* Event data here is JSON without tabs, newlines or backslashes,
             * so it needs no COPY escaping. */
            len += (size_t)snprintf(out + len, cap - len, "%s\t%s\t%s\t%s\t%.*s\t{}\t%llu\t%llu\t%s\n",
                                    id, e->stream, cat, e->type, (int)e->data_len,
                                    (const char *)e->data,
                                    (unsigned long long)e->revision + 1,
                                    (unsigned long long)e->position + 1, t);
            rows++;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || !n)
            break;
        from = next;
        if (rows % 1000000 < 10000)
            fprintf(stderr, "\rbench_query pgload: %llu rows", (unsigned long long)rows);
    }
    if ((len && PQputCopyData(c, out, (int)len) != 1) || PQputCopyEnd(c, NULL) != 1) {
        fprintf(stderr, "bench_query: COPY end: %s", PQerrorMessage(c));
        exit(1);
    }
    r = PQgetResult(c);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_query: COPY: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    free(out);
    stele_close(db);
    double copy_s = (double)(bench_now_ns() - t0) / 1e9;
    fprintf(stderr, "\rbench_query pgload: %llu rows copied in %.0f s; indexing\n",
            (unsigned long long)rows, copy_s);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT setval('events_global_position_seq', %llu)",
             (unsigned long long)rows + 1);
    pg_exec(c, sql);
    uint64_t t1 = bench_now_ns();
    for (size_t i = 0; i < sizeof pg_indexes / sizeof pg_indexes[0]; i++)
        pg_exec(c, pg_indexes[i]);
    double index_s = (double)(bench_now_ns() - t1) / 1e9;
    printf("pgload rows=%llu copy_s=%.1f index_s=%.1f table_mib=%.0f indexes_mib=%.0f "
           "seed_query_indexes_mib=%.0f\n",
           (unsigned long long)rows, copy_s, index_s,
           pg_size_mib(c, "pg_table_size('events')"), pg_size_mib(c, "pg_indexes_size('events')"),
           pg_size_mib(c, "pg_relation_size('idx_events_type_time_003') + "
                          "pg_relation_size('idx_events_eventtype_time_002')"));
    fflush(stdout);
    PQfinish(c);
}

static uint64_t run_pg(void *ctx, const qparam *p)
{
    PGconn *c = ctx;
    char a[32], b[32], lim[32];
    stele_time_format(p->a_us, a);
    stele_time_format(p->b_us, b);
    snprintf(lim, sizeof lim, "%llu", (unsigned long long)opt.count);
    PGresult *r;
    if (p->is_type) {
        const char *v[3] = {p->key, a, b};
        r = PQexecPrepared(c, "type_time", 3, v, NULL, NULL, 0);
    } else {
        const char *v[3] = {p->key, a, lim};
        r = PQexecPrepared(c, "category", 3, v, NULL, NULL, 0);
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_query: postgres query: %s", PQerrorMessage(c));
        exit(1);
    }
    uint64_t n = (uint64_t)PQntuples(r);
    PQclear(r);
    return n;
}

static void cmd_pgquery(void)
{
    load_params();
    PGconn *c = pg_connect();
    PGresult *r = PQprepare(c, "category",
                            "SELECT * FROM events WHERE stream_type = $1 AND created_at >= $2 "
                            "ORDER BY created_at LIMIT $3",
                            3, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_query: prepare: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    r = PQprepare(c, "type_time",
                  "SELECT * FROM events WHERE event_type = $1 AND created_at >= $2 AND "
                  "created_at < $3 ORDER BY created_at",
                  3, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_query: prepare: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    /* What the planner does with the two queries (first of each kind). */
    for (size_t i = 0; i < nparams; i++) {
        if (i > 1)
            break;
        char sql[512], a[32], b[32];
        stele_time_format(params[i].a_us, a);
        stele_time_format(params[i].b_us, b);
        if (params[i].is_type)
            snprintf(sql, sizeof sql, "EXPLAIN SELECT * FROM events WHERE event_type = '%s' AND "
                     "created_at >= '%s' AND created_at < '%s' ORDER BY created_at", params[i].key, a, b);
        else
            snprintf(sql, sizeof sql, "EXPLAIN SELECT * FROM events WHERE stream_type = '%s' AND "
                     "created_at >= '%s' ORDER BY created_at LIMIT %llu", params[i].key, a,
                     (unsigned long long)opt.count);
        r = PQexec(c, sql);
        for (int k = 0; PQresultStatus(r) == PGRES_TUPLES_OK && k < PQntuples(r); k++)
            printf("# plan: %s\n", PQgetvalue(r, k, 0));
        PQclear(r);
    }
    run_all("postgres", run_pg, c);
    PQfinish(c);
}

#else

static void cmd_pgload(void)
{
    fprintf(stderr, "bench_query: built without libpq (install libpq-dev)\n");
    exit(1);
}

static void cmd_pgquery(void) { cmd_pgload(); }

#endif

int main(int argc, char **argv)
{
    parse_flags(argc, argv);
    if (!strcmp(opt.cmd, "append") && opt.dir)
        cmd_append();
    else if (!strcmp(opt.cmd, "build") && opt.dir)
        cmd_build();
    else if (!strcmp(opt.cmd, "open") && opt.dir)
        cmd_open();
    else if (!strcmp(opt.cmd, "params") && opt.dir && opt.params)
        cmd_params();
    else if (!strcmp(opt.cmd, "query") && opt.dir && opt.params)
        cmd_query();
    else if (!strcmp(opt.cmd, "http") && opt.port && opt.params)
        cmd_http();
    else if (!strcmp(opt.cmd, "pgload") && opt.dir)
        cmd_pgload();
    else if (!strcmp(opt.cmd, "views") && opt.dir)
        cmd_views();
    else if (!strcmp(opt.cmd, "pgquery") && opt.params)
        cmd_pgquery();
    else
        usage();
    return 0;
}
