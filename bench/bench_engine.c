/*
 * bench_engine.c - in-process benchmarks of the local engine through the
 * public API (include/stele.h): durable appends (fsync on, always), reads,
 * open after a clean close and after a kill, resident memory.
 *
 * Every result is one line on stdout: a name, then key=value fields, e.g.
 *
 *   append_1x1 threads=1 batch=1 ids=server events=20000 secs=2.9 events_per_s=6890 ...
 *
 * Progress and errors go to stderr. Events carry 200 bytes of JSON data
 * (STELE_EVENT_JSON), type "OrderPlaced", no metadata, no tags.
 *
 * Subcommands (run with no arguments for the flags):
 *   fsync        raw 4 KiB pwrite+fdatasync rate, pre-zeroed and fresh file
 *   append_vs_fsync  1 thread, 1 event per append, and the raw fdatasync
 *                rate, measured in alternating rounds (same background load)
 *   append       T threads appending B events per append to a new store
 *   build        a big store: N events in S streams, B-event appends
 *   read_stream  read the 1,000-event streams `build` made, R times
 *   read_all     read $all of the store from position 0 to the end
 *   open_clean   time stele_open of the (cleanly closed) store
 *   open_kill    a child opens the store, appends, is SIGKILLed; time reopen
 *   mixed        read and append to the store for some seconds; memory
 *   all          every workload above in sequence (sizes from the flags);
 *                used by tests/test_bench_smoke.c with tiny sizes
 *
 * Nothing here asserts a timing: the numbers are reported, never judged.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stele.h"

#include "measure.h"

#define DATA_LEN 200
#define EVENT_TYPE "OrderPlaced"
#define STREAM_1000X1 "bench-read-1000x1"     /* 1,000 single-event appends */
#define STREAM_10X100 "bench-read-10x100"     /* 10 appends of 100 events */

/* ------------------------------------------------------------ options */

typedef struct bopts {
    const char *dir;      /* working directory (stores and files go under it) */
    uint64_t events;      /* events (or writes, for fsync) */
    int threads;
    int batch;            /* events per append */
    int client_ids;       /* 1: client-given ids (indexed), 0: id = NULL */
    uint64_t streams;     /* 0: one stream per thread; else random among S */
    size_t page;          /* events per read page */
    uint64_t reps;
    double secs;
    int keep;             /* keep the append stores */
    const char *name;     /* result name override */
    /* `all` only */
    uint64_t store_events, store_streams;
    uint64_t fsync_events;
    uint64_t ceiling_syncs; /* append: raw syncs for the ceiling (0: none) */
} bopts;

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_engine COMMAND [flags]\n"
            "  fsync        --dir D --events N                      raw fdatasync rate\n"
            "  append_vs_fsync --dir D --events N --reps ROUNDS [--ids server|client]\n"
            "               1x1 appends and raw fdatasync, interleaved in ROUNDS\n"
            "  append       --dir D --threads T --batch B --events N [--ids server|client]\n"
            "               [--streams S] [--name NAME] [--keep] [--ceiling-syncs K]\n"
            "               (K raw pwrite+fdatasync of one full group's bytes after the\n"
            "               run give the closed-loop ceiling; default 50, 0: none)\n"
            "  build        --dir D --events N --streams S --batch B --threads T\n"
            "               [--ids server|client]                   makes D/store\n"
            "  read_stream  --dir D --reps R                        reads D/store\n"
            "  read_all     --dir D --page P                        reads D/store\n"
            "  open_clean   --dir D --reps R                        opens D/store\n"
            "  open_kill    --dir D                                 opens D/store\n"
            "  mixed        --dir D --secs S --streams S [--ids ..] uses D/store\n"
            "  all          [--dir D] --events N --store-events N --store-streams S\n"
            "               --fsync-events N --reps R --secs S\n"
            "               (1x1 and vs-fsync: N events, 64x1: 4N, 1x1000: 100N)\n"
            "--dir defaults to a new directory under $TMPDIR (or /tmp), removed at exit,\n"
            "except for the commands that use an existing D/store.\n");
    exit(2);
}

static uint64_t parse_u64(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "bench_engine: %s wants a number, not '%s'\n", flag, v);
        exit(2);
    }
    return x;
}

static void parse_flags(int argc, char **argv, bopts *o)
{
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--keep") == 0) {
            o->keep = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(f, "--dir") == 0)
            o->dir = v;
        else if (strcmp(f, "--events") == 0)
            o->events = parse_u64(f, v);
        else if (strcmp(f, "--threads") == 0)
            o->threads = (int)parse_u64(f, v);
        else if (strcmp(f, "--batch") == 0)
            o->batch = (int)parse_u64(f, v);
        else if (strcmp(f, "--ids") == 0) {
            if (strcmp(v, "client") == 0)
                o->client_ids = 1;
            else if (strcmp(v, "server") == 0)
                o->client_ids = 0;
            else
                usage();
        } else if (strcmp(f, "--streams") == 0)
            o->streams = parse_u64(f, v);
        else if (strcmp(f, "--page") == 0)
            o->page = (size_t)parse_u64(f, v);
        else if (strcmp(f, "--reps") == 0)
            o->reps = parse_u64(f, v);
        else if (strcmp(f, "--secs") == 0)
            o->secs = atof(v);
        else if (strcmp(f, "--name") == 0)
            o->name = v;
        else if (strcmp(f, "--store-events") == 0)
            o->store_events = parse_u64(f, v);
        else if (strcmp(f, "--store-streams") == 0)
            o->store_streams = parse_u64(f, v);
        else if (strcmp(f, "--fsync-events") == 0)
            o->fsync_events = parse_u64(f, v);
        else if (strcmp(f, "--ceiling-syncs") == 0)
            o->ceiling_syncs = parse_u64(f, v);
        else {
            fprintf(stderr, "bench_engine: unknown flag %s\n", f);
            usage();
        }
    }
    if (o->threads < 1 || o->threads > 4096 || o->batch < 1 || o->page < 1) {
        fprintf(stderr, "bench_engine: --threads, --batch and --page must be >= 1\n");
        exit(2);
    }
}

/* ------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: fine for ids and picking streams. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_seed(int salt)
{
    return bench_now_ns() ^ ((uint64_t)getpid() << 32) ^ ((uint64_t)(salt + 1) * 0x632be59bd9b4e019ull);
}

/* A random (version 4) UUID, never nil. */
static void random_id(uint64_t *s, uint8_t id[16])
{
    uint64_t a = rng_next(s), b = rng_next(s);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40);
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
}

/* Exactly DATA_LEN bytes of JSON. */
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

/* Sort `lat` (ns) and give the q-quantile in microseconds. */
static double pct_us(uint64_t *lat, size_t n, double q, int sorted)
{
    if (n == 0)
        return 0;
    if (!sorted)
        qsort(lat, n, sizeof *lat, cmp_u64);
    size_t i = (size_t)((double)(n - 1) * q + 0.5);
    return (double)lat[i] / 1000.0;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_engine: %s: %s (%s): %s\n", what, stele_errname(rc),
            stele_strerror(rc), stele_errmsg());
    exit(1);
}

static void join_path(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *path) { nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static double cpu_secs(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Bytes under a directory (allocated blocks, i.e. what the disk holds). */
static uint64_t du_total;
static int du_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F)
        du_total += (uint64_t)sb->st_blocks * 512;
    return 0;
}

static double du_mib(const char *path)
{
    du_total = 0;
    nftw(path, du_cb, 16, FTW_PHYS);
    return (double)du_total / (1 << 20);
}

/* Resident memory from /proc/self/status. RssFile includes LMDB's mmap of
 * the index; pread(2) of the log fills the page cache but not RSS. */
static void print_mem(const char *phase)
{
    long rss = -1, hwm = -1, anon = -1, file = -1, shmem = -1;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        long v;
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            rss = v;
        else if (sscanf(line, "VmHWM: %ld", &v) == 1)
            hwm = v;
        else if (sscanf(line, "RssAnon: %ld", &v) == 1)
            anon = v;
        else if (sscanf(line, "RssFile: %ld", &v) == 1)
            file = v;
        else if (sscanf(line, "RssShmem: %ld", &v) == 1)
            shmem = v;
    }
    if (f)
        fclose(f);
    printf("mem phase=%s vmrss_mib=%.1f vmhwm_mib=%.1f rss_anon_mib=%.1f rss_file_mib=%.1f "
           "rss_shmem_mib=%.1f\n",
           phase, rss / 1024.0, hwm / 1024.0, anon / 1024.0, file / 1024.0, shmem / 1024.0);
    fflush(stdout);
}

/* Bytes this process passed to write(2)-like calls (/proc/self/io wchar):
 * the log records, the index's (LMDB) page writes and any zero-filled spare
 * segment. (write_bytes is not used: with large folios it counts a whole
 * folio per small write, far more than reaches the disk.) */
static uint64_t read_wchar(void)
{
    uint64_t wchar = 0;
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "wchar: %llu", &v) == 1)
            wchar = v;
    }
    if (f)
        fclose(f);
    return wchar;
}

static stele_db *open_store(const char *path, uint32_t flags)
{
    stele_options so = {0};
    so.flags = flags;
    stele_db *db = NULL;
    int rc = stele_open(path, &so, &db);
    if (rc)
        die(path, rc);
    return db;
}

/* A new store makes its first segment, then a helper thread writes a
 * spare segment of zeros (64 MiB) in the background. Wait for that spare
 * and flush it, so the timed part of a short benchmark does not share the
 * disk with this one-off start-up write (later spares, one per 64 MiB of
 * log, are part of the steady state and are measured). */
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

/* ------------------------------------------------------------ fsync */

/* `n` 4 KiB pwrite+fdatasync at consecutive offsets of `fd`; rate and
 * latencies. */
static double fsync_loop(int fd, uint64_t first, uint64_t n, uint64_t *lat)
{
    static uint8_t block[4096];
    memset(block, 'a', sizeof block);
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = first; i < first + n; i++) {
        uint64_t a = bench_now_ns();
        block[0] = (uint8_t)i;
        if (pwrite(fd, block, sizeof block, (off_t)(i * sizeof block)) != (ssize_t)sizeof block ||
            fdatasync(fd) != 0) {
            perror("bench_engine: fsync: pwrite/fdatasync");
            exit(1);
        }
        lat[i - first] = bench_now_ns() - a;
    }
    return (double)(bench_now_ns() - t0) / 1e9;
}

/* A file of `size` zero bytes, written (in 1 MiB writes, as the engine
 * makes its segments) and synced; an open descriptor. */
static int prezeroed_file(const char *path, uint64_t size)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    static uint8_t zeros[1 << 20];
    for (uint64_t off = 0; off < size; off += sizeof zeros) {
        size_t len = size - off < sizeof zeros ? (size_t)(size - off) : sizeof zeros;
        if (pwrite(fd, zeros, len, (off_t)off) != (ssize_t)len) {
            perror("bench_engine: fsync: pre-zero");
            exit(1);
        }
    }
    if (fsync(fd) != 0) {
        perror("bench_engine: fsync");
        exit(1);
    }
    return fd;
}

static void cmd_fsync(const bopts *o)
{
    uint64_t n = o->events;
    char pre[4200], fresh[4200];
    join_path(pre, sizeof pre, o->dir, "fsync-prezeroed.dat");
    join_path(fresh, sizeof fresh, o->dir, "fsync-fresh.dat");
    uint64_t *lat = calloc(n ? n : 1, sizeof *lat);
    if (!lat)
        exit(1);

    /* Pre-zeroed: written whole with zeros and synced first, as the engine
     * does with its segments. */
    int fd = prezeroed_file(pre, n * 4096);
    double s1 = fsync_loop(fd, 0, n, lat);
    double p50a = pct_us(lat, n, 0.50, 0);
    double p99a = pct_us(lat, n, 0.99, 1);
    close(fd);
    unlink(pre);

    /* Fresh: an empty file that every write extends. */
    fd = open(fresh, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(fresh);
        exit(1);
    }
    double s2 = fsync_loop(fd, 0, n, lat);
    double p50b = pct_us(lat, n, 0.50, 0);
    double p99b = pct_us(lat, n, 0.99, 1);
    close(fd);
    unlink(fresh);
    free(lat);
    printf("fsync_raw writes=%llu prezeroed=%.0f fresh=%.0f prezeroed_p50_us=%.1f "
           "prezeroed_p99_us=%.1f fresh_p50_us=%.1f fresh_p99_us=%.1f\n",
           (unsigned long long)n, n / s1, n / s2, p50a, p99a, p50b, p99b);
    fflush(stdout);
}

/* CPU time (ns, /proc/.../schedstat) of this process's thread named
 * `comm` (the engine names its writer "stele-writer"); 0 if none. */
static uint64_t thread_cpu_ns(const char *comm)
{
    DIR *d = opendir("/proc/self/task");
    uint64_t ns = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], name[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(name, sizeof name, f))
            name[0] = 0;
        fclose(f);
        name[strcspn(name, "\n")] = 0;
        if (strcmp(name, comm) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
        f = fopen(path, "r");
        unsigned long long v;
        if (f && fscanf(f, "%llu", &v) == 1)
            ns += v;
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return ns;
}

static uint64_t thread_self_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ the ceiling */

/*
 * The physical bound of an append workload, measured on the same disk right
 * after it ran: `n` pwrite+fdatasync of `bytes` (one full group's log
 * records) at consecutive offsets of a pre-zeroed file in `dir`, as the
 * writer writes its segments. The mean time of one such sync in *mean_s and
 * the median in *p50_s.
 *
 * A closed loop with T appenders of B events and one writer can have at
 * most T appends in a group, and each group costs at least one such sync
 * plus the writer's own CPU for it (planning, encoding, indexing: serial,
 * before the write), so events/s <= T * B / (sync + T * writer CPU per
 * append). With one appender nothing of the append overlaps: its caller's
 * checks come first too, so events/s <= B / (sync + (caller + writer) CPU
 * per append). The CPU of the other threads (the chain's hasher, the
 * segment preallocation, LMDB's page writes) can overlap and is not in
 * the bound. Both are upper bounds: the real loop also waits for the
 * writer to take the group and for the appenders to wake.
 */
static void group_sync_probe(const char *dir, uint64_t bytes, uint64_t n, double *mean_s,
                             double *p50_s)
{
    char path[4200];
    join_path(path, sizeof path, dir, "ceiling-probe.dat");
    if (bytes == 0)
        bytes = 1;
    int fd = prezeroed_file(path, bytes * n);
    uint8_t *buf = malloc(bytes);
    uint64_t *lat = calloc(n, sizeof *lat);
    if (!buf || !lat)
        exit(1);
    memset(buf, 'a', bytes);
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        uint64_t a = bench_now_ns();
        buf[0] = (uint8_t)i;
        if (pwrite(fd, buf, bytes, (off_t)(i * bytes)) != (ssize_t)bytes || fdatasync(fd) != 0) {
            perror("bench_engine: ceiling probe: pwrite/fdatasync");
            exit(1);
        }
        lat[i] = bench_now_ns() - a;
    }
    *mean_s = (double)(bench_now_ns() - t0) / 1e9 / (double)n;
    *p50_s = pct_us(lat, n, 0.50, 0) / 1e6;
    close(fd);
    unlink(path);
    free(buf);
    free(lat);
}

/* ------------------------------------------------------------ appends */

typedef struct aworker {
    stele_db *db;
    const bopts *o;
    int tid;
    uint64_t nappends;
    uint64_t *lat;
    uint64_t rng;
    pthread_barrier_t *start;
    int rc;
    uint64_t cpu_ns; /* this appender thread's CPU while appending */
} aworker;

static void *append_main(void *arg)
{
    aworker *w = arg;
    const bopts *o = w->o;
    int b = o->batch;
    stele_event_in *ev = calloc((size_t)b, sizeof *ev);
    uint8_t(*ids)[16] = malloc((size_t)b * 16);
    char *data = malloc((size_t)b * DATA_LEN);
    if (!ev || !ids || !data) {
        w->rc = STELE_ENOMEM;
        pthread_barrier_wait(w->start);
        return NULL;
    }
    for (int i = 0; i < b; i++) {
        make_json(data + (size_t)i * DATA_LEN, (uint64_t)w->tid * 1000003u + (uint64_t)i);
        ev[i].type = EVENT_TYPE;
        ev[i].data = data + (size_t)i * DATA_LEN;
        ev[i].data_len = DATA_LEN;
        ev[i].flags = STELE_EVENT_JSON;
        ev[i].id = o->client_ids ? ids[i] : NULL;
    }
    char stream[64];
    snprintf(stream, sizeof stream, "bench-%d", w->tid);
    pthread_barrier_wait(w->start);
    uint64_t cpu0 = thread_self_cpu_ns();
    for (uint64_t k = 0; k < w->nappends; k++) {
        if (o->streams)
            snprintf(stream, sizeof stream, "bench-%llu",
                     (unsigned long long)(rng_next(&w->rng) % o->streams));
        if (o->client_ids)
            for (int i = 0; i < b; i++)
                random_id(&w->rng, ids[i]);
        uint64_t t0 = bench_now_ns();
        int rc = stele_append(w->db, stream, STELE_ANY, ev, (size_t)b, NULL);
        w->lat[k] = bench_now_ns() - t0;
        if (rc) {
            fprintf(stderr, "bench_engine: append: %s: %s\n", stele_errname(rc), stele_errmsg());
            w->rc = rc;
            break;
        }
    }
    w->cpu_ns = thread_self_cpu_ns() - cpu0;
    free(ev);
    free(ids);
    free(data);
    return NULL;
}

static void cmd_append(const bopts *o)
{
    char name[64], path[4200];
    if (o->name)
        snprintf(name, sizeof name, "%s", o->name);
    else
        snprintf(name, sizeof name, "append_%dx%d%s", o->threads, o->batch,
                 o->client_ids ? "_ids" : "");
    join_path(path, sizeof path, o->dir, name);
    rm_rf(path);
    stele_db *db = open_store(path, 0);
    settle(path);
    stele_stats st0;
    int rc = stele_get_stats(db, &st0);
    if (rc)
        die("stats", rc);
    int T = o->threads;
    uint64_t appends = o->events / (uint64_t)o->batch;
    if (appends < (uint64_t)T)
        appends = (uint64_t)T;
    uint64_t per = appends / (uint64_t)T;
    appends = per * (uint64_t)T;
    aworker *w = calloc((size_t)T, sizeof *w);
    pthread_t *th = calloc((size_t)T, sizeof *th);
    uint64_t *lat = calloc(appends, sizeof *lat);
    if (!w || !th || !lat)
        exit(1);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)T + 1);
    for (int t = 0; t < T; t++) {
        w[t] = (aworker){db, o, t, per, lat + (uint64_t)t * per, rng_seed(t), &start, 0, 0};
        if (pthread_create(&th[t], NULL, append_main, &w[t]) != 0) {
            fprintf(stderr, "bench_engine: cannot start thread %d\n", t);
            exit(1);
        }
    }
    uint64_t wc0 = read_wchar();
    uint64_t wcpu0 = thread_cpu_ns("stele-writer");
    pthread_barrier_wait(&start);
    double c0 = cpu_secs();
    uint64_t t0 = bench_now_ns();
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    double cpu = cpu_secs() - c0;
    uint64_t wc1 = read_wchar();
    double wcpu = (double)(thread_cpu_ns("stele-writer") - wcpu0) / 1e9, ccpu = 0;
    for (int t = 0; t < T; t++)
        ccpu += (double)w[t].cpu_ns / 1e9;
    for (int t = 0; t < T; t++)
        if (w[t].rc)
            exit(1);
    stele_stats st;
    rc = stele_get_stats(db, &st);
    if (rc)
        die("stats", rc);
    uint64_t events = appends * (uint64_t)o->batch;
    double p50 = pct_us(lat, appends, 0.50, 0);
    double p99 = pct_us(lat, appends, 0.99, 1);
    uint64_t groups = st.groups - st0.groups;
    printf("%s threads=%d batch=%d ids=%s events=%llu appends=%llu secs=%.6f events_per_s=%.0f "
           "appends_per_s=%.0f p50_us=%.1f p99_us=%.1f groups=%llu appends_per_group=%.1f "
           "cpu_pct=%.0f cpu_us_per_event=%.3f writer_cpu_us_per_event=%.3f "
           "caller_cpu_us_per_event=%.3f write_syscall_bytes_per_event=%.0f",
           name, T, o->batch, o->client_ids ? "client" : "server", (unsigned long long)events,
           (unsigned long long)appends, secs, events / secs, appends / secs, p50, p99,
           (unsigned long long)groups, groups ? (double)(st.appends - st0.appends) / groups : 0.0,
           100.0 * cpu / secs, cpu * 1e6 / events, wcpu * 1e6 / events, ccpu * 1e6 / events,
           (double)(wc1 - wc0) / events);
    stele_close(db);
    if (o->ceiling_syncs) {
        /* The closed loop's bound (group_sync_probe): a full group is T
         * appends' log records (chain record included). */
        double per_append = (double)(st.log_bytes - st0.log_bytes) / appends;
        uint64_t gbytes = (uint64_t)(per_append * (T < (int)appends ? T : (int)appends) + 0.5);
        double sync_s, sync_p50_s;
        group_sync_probe(o->dir, gbytes, o->ceiling_syncs, &sync_s, &sync_p50_s);
        double serial = T == 1 ? (wcpu + ccpu) / appends : (double)T * wcpu / appends;
        double ceiling = (double)T * o->batch / (sync_s + serial);
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        printf(" group_log_bytes=%llu disk_sync_us=%.1f disk_sync_p50_us=%.1f "
               "ceiling_events_per_s=%.0f of_ceiling=%.3f ceiling_sync_only_events_per_s=%.0f "
               "ceiling_cpu_events_per_s=%.0f",
               (unsigned long long)gbytes, sync_s * 1e6, sync_p50_s * 1e6, ceiling,
               events / secs / ceiling, (double)T * o->batch / sync_s,
               cpu > 0 ? (double)(ncpu > 0 ? ncpu : 1) * events / cpu : 0.0);
    }
    printf("\n");
    fflush(stdout);
    if (!o->keep)
        rm_rf(path);
    pthread_barrier_destroy(&start);
    free(w);
    free(th);
    free(lat);
}

/* 1 thread, 1 event per append, against the raw fdatasync rate of the same
 * disk, interleaved: `rounds` times, N/rounds raw 4 KiB pwrite+fdatasync on
 * a pre-zeroed file in the same directory, then N/rounds appends. Both
 * rates see the same background load, which a shared machine needs. */
static void cmd_append_vs_fsync(const bopts *o)
{
    char path[4200], raw[4200];
    const char *ids = o->client_ids ? "client" : "server";
    snprintf(path, sizeof path, "%s/vs-fsync-%s", o->dir, ids);
    join_path(raw, sizeof raw, o->dir, "vs-fsync-raw.dat");
    rm_rf(path);
    uint64_t rounds = o->reps ? o->reps : 10;
    uint64_t per = o->events / rounds;
    if (per == 0)
        per = 1;
    uint64_t n = per * rounds;
    uint64_t *alat = calloc(n, sizeof *alat), *flat = calloc(n, sizeof *flat);
    if (!alat || !flat)
        exit(1);
    int fd = prezeroed_file(raw, n * 4096);
    stele_db *db = open_store(path, 0);
    settle(path);
    stele_event_in ev = {0};
    char data[DATA_LEN];
    uint8_t id[16];
    uint64_t rng = rng_seed(5);
    make_json(data, 1);
    ev.type = EVENT_TYPE;
    ev.data = data;
    ev.data_len = DATA_LEN;
    ev.flags = STELE_EVENT_JSON;
    ev.id = o->client_ids ? id : NULL;
    double fsecs = 0, asecs = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        fsecs += fsync_loop(fd, r * per, per, flat + r * per);
        uint64_t t0 = bench_now_ns();
        for (uint64_t i = r * per; i < (r + 1) * per; i++) {
            if (o->client_ids)
                random_id(&rng, id);
            uint64_t a = bench_now_ns();
            int rc = stele_append(db, "bench-vs-fsync", STELE_ANY, &ev, 1, NULL);
            alat[i] = bench_now_ns() - a;
            if (rc)
                die("append", rc);
        }
        asecs += (double)(bench_now_ns() - t0) / 1e9;
    }
    close(fd);
    unlink(raw);
    stele_close(db);
    rm_rf(path);
    double ap50 = pct_us(alat, n, 0.50, 0);
    double ap99 = pct_us(alat, n, 0.99, 1);
    double fp50 = pct_us(flat, n, 0.50, 0);
    double fp99 = pct_us(flat, n, 0.99, 1);
    printf("append_1x1_vs_fsync ids=%s rounds=%llu events=%llu appends_per_s=%.0f "
           "fsync_prezeroed_per_s=%.0f ratio=%.3f append_p50_us=%.1f append_p99_us=%.1f "
           "fsync_p50_us=%.1f fsync_p99_us=%.1f\n",
           ids, (unsigned long long)rounds, (unsigned long long)n, n / asecs, n / fsecs,
           fsecs / asecs, ap50, ap99, fp50, fp99);
    fflush(stdout);
    free(alat);
    free(flat);
}

/* ------------------------------------------------------------ the big store */

typedef struct bworker {
    stele_db *db;
    const bopts *o;
    int tid;
    _Atomic uint64_t *next;  /* next append number */
    uint64_t total;          /* appends of the bulk */
    const uint32_t *perm;    /* stream order */
    uint64_t rng;
    int rc;
} bworker;

static int append_n(stele_db *db, const char *stream, stele_event_in *ev, int n,
                    uint8_t (*ids)[16], int client_ids, uint64_t *rng)
{
    if (client_ids)
        for (int i = 0; i < n; i++)
            random_id(rng, ids[i]);
    int rc = stele_append(db, stream, STELE_ANY, ev, (size_t)n, NULL);
    if (rc)
        fprintf(stderr, "bench_engine: append to %s: %s: %s\n", stream, stele_errname(rc),
                stele_errmsg());
    return rc;
}

static void *build_main(void *arg)
{
    bworker *w = arg;
    const bopts *o = w->o;
    int b = o->batch;
    stele_event_in *ev = calloc((size_t)b, sizeof *ev);
    uint8_t(*ids)[16] = malloc((size_t)b * 16);
    char *data = malloc((size_t)b * DATA_LEN);
    if (!ev || !ids || !data) {
        w->rc = STELE_ENOMEM;
        return NULL;
    }
    for (int i = 0; i < b; i++) {
        make_json(data + (size_t)i * DATA_LEN, (uint64_t)w->tid * 1000003u + (uint64_t)i);
        ev[i].type = EVENT_TYPE;
        ev[i].data = data + (size_t)i * DATA_LEN;
        ev[i].data_len = DATA_LEN;
        ev[i].flags = STELE_EVENT_JSON;
        ev[i].id = o->client_ids ? ids[i] : NULL;
    }
    /* Thread 0 also spreads the two read-benchmark streams through the log:
     * 1,000 single-event appends and 10 appends of 100 events. */
    int singles = 0, hundreds = 0;
    uint64_t every1 = w->total / 1000 / (uint64_t)o->threads + 1;
    uint64_t every100 = w->total / 10 / (uint64_t)o->threads + 1;
    char stream[64];
    uint64_t mine = 0;
    for (;;) {
        uint64_t k = atomic_fetch_add(w->next, 1);
        if (k >= w->total)
            break;
        uint64_t S = o->streams;
        snprintf(stream, sizeof stream, "stream-%06u", w->perm[k % S]);
        if ((w->rc = append_n(w->db, stream, ev, b, ids, o->client_ids, &w->rng)))
            break;
        if (k && k % 20000 == 0)
            fprintf(stderr, "  build: %llu of %llu appends\n", (unsigned long long)k,
                    (unsigned long long)w->total);
        if (w->tid == 0) {
            mine++;
            if (singles < 1000 && mine % every1 == 0) {
                if ((w->rc = append_n(w->db, STREAM_1000X1, ev, 1, ids, o->client_ids, &w->rng)))
                    break;
                singles++;
            }
            if (hundreds < 10 && b >= 100 && mine % every100 == 0) {
                if ((w->rc =
                         append_n(w->db, STREAM_10X100, ev, 100, ids, o->client_ids, &w->rng)))
                    break;
                hundreds++;
            }
        }
    }
    /* Small stores: finish the read-benchmark streams. */
    if (w->tid == 0 && w->rc == 0) {
        while (singles < 1000 &&
               (w->rc = append_n(w->db, STREAM_1000X1, ev, 1, ids, o->client_ids, &w->rng)) == 0)
            singles++;
        stele_event_in *e100 = ev;
        stele_event_in local[100];
        uint8_t lids[100][16];
        if (b < 100) {
            for (int i = 0; i < 100; i++) {
                local[i] = ev[0];
                local[i].id = o->client_ids ? lids[i] : NULL;
            }
            e100 = local;
        }
        while (w->rc == 0 && hundreds < 10 &&
               (w->rc = append_n(w->db, STREAM_10X100, e100, 100, b < 100 ? lids : ids,
                                 o->client_ids, &w->rng)) == 0)
            hundreds++;
    }
    free(ev);
    free(ids);
    free(data);
    return NULL;
}

static void store_path(const bopts *o, char *out, size_t n) { join_path(out, n, o->dir, "store"); }

static void cmd_build(const bopts *o)
{
    char path[4200];
    store_path(o, path, sizeof path);
    rm_rf(path);
    if (o->streams == 0 || o->streams > UINT32_MAX) {
        fprintf(stderr, "bench_engine: build needs --streams S (1..2^32-1)\n");
        exit(2);
    }
    uint64_t S = o->streams;
    uint64_t total = o->events / (uint64_t)o->batch;
    if (total == 0)
        total = 1;
    /* Streams in a random order, each pass over all of them, so every
     * stream exists and appends hit the index at random places. */
    uint32_t *perm = malloc(S * sizeof *perm);
    if (!perm)
        exit(1);
    uint64_t rng = rng_seed(99);
    for (uint64_t i = 0; i < S; i++)
        perm[i] = (uint32_t)i;
    for (uint64_t i = S - 1; i > 0; i--) {
        uint64_t j = rng_next(&rng) % (i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    stele_db *db = open_store(path, 0);
    int T = o->threads;
    bworker *w = calloc((size_t)T, sizeof *w);
    pthread_t *th = calloc((size_t)T, sizeof *th);
    _Atomic uint64_t next = 0;
    if (!w || !th)
        exit(1);
    uint64_t t0 = bench_now_ns();
    for (int t = 0; t < T; t++) {
        w[t] = (bworker){db, o, t, &next, total, perm, rng_seed(t + 1000), 0};
        if (pthread_create(&th[t], NULL, build_main, &w[t]) != 0)
            exit(1);
    }
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    for (int t = 0; t < T; t++)
        if (w[t].rc)
            exit(1);
    stele_stats st;
    int rc = stele_get_stats(db, &st);
    if (rc)
        die("stats", rc);
    print_mem(o->client_ids ? "build_ids_client" : "build");
    uint64_t c0 = bench_now_ns();
    stele_close(db);
    double close_secs = (double)(bench_now_ns() - c0) / 1e9;
    char logdir[4300], idxdir[4300];
    join_path(logdir, sizeof logdir, path, "log");
    join_path(idxdir, sizeof idxdir, path, "index");
    double log_disk = du_mib(logdir), idx_disk = du_mib(idxdir);
    printf("build_store events=%llu streams=%llu batch=%d threads=%d ids=%s secs=%.3f "
           "events_per_s=%.0f close_secs=%.6f log_data_mib=%.1f log_disk_mib=%.1f "
           "index_disk_mib=%.1f\n",
           (unsigned long long)st.events, (unsigned long long)st.streams, o->batch, T,
           o->client_ids ? "client" : "server", secs, st.events / secs, close_secs,
           (double)st.log_bytes / (1 << 20), log_disk, idx_disk);
    fflush(stdout);
    free(perm);
    free(w);
    free(th);
}

/* ------------------------------------------------------------ reads */

static void read_stream_bench(stele_db *db, const char *stream, const char *name, uint64_t reps)
{
    uint64_t *lat = calloc(reps, sizeof *lat);
    if (!lat)
        exit(1);
    uint64_t events = 0, bytes = 0;
    stele_stream_info info;
    int rc = stele_stream_head(db, stream, &info);
    if (rc)
        die(stream, rc);
    uint64_t t0 = bench_now_ns();
    for (uint64_t r = 0; r < reps; r++) {
        uint64_t a = bench_now_ns();
        uint64_t from = 0;
        for (;;) {
            stele_page *pg;
            rc = stele_read_stream(db, stream, from, STELE_FORWARDS, 1000, &pg);
            if (rc)
                die("read_stream", rc);
            size_t n = stele_page_count(pg);
            for (size_t i = 0; i < n; i++)
                bytes += stele_page_event(pg, i)->data_len;
            events += n;
            int more = stele_page_next(pg, &from);
            stele_page_free(pg);
            if (!more || n == 0)
                break;
        }
        lat[r] = bench_now_ns() - a;
    }
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    uint64_t per = events / reps;
    double p50 = pct_us(lat, reps, 0.50, 0);
    double p99 = pct_us(lat, reps, 0.99, 1);
    printf("%s stream=%s events_per_read=%llu reads=%llu secs=%.6f events_per_s=%.0f "
           "reads_per_s=%.0f p50_us=%.1f p99_us=%.1f\n",
           name, stream, (unsigned long long)per, (unsigned long long)reps, secs, events / secs,
           reps / secs, p50, p99);
    fflush(stdout);
    if (bytes != events * DATA_LEN || per != info.last_revision + 1) {
        fprintf(stderr, "bench_engine: %s: read %llu events per read, want %llu\n", stream,
                (unsigned long long)per, (unsigned long long)(info.last_revision + 1));
        exit(1);
    }
    free(lat);
}

static void cmd_read_stream(const bopts *o)
{
    char path[4200];
    store_path(o, path, sizeof path);
    stele_db *db = open_store(path, STELE_OPEN_NOCREATE);
    uint64_t reps = o->reps ? o->reps : 1000;
    read_stream_bench(db, STREAM_1000X1, "read_stream_1000x1", reps);
    read_stream_bench(db, STREAM_10X100, "read_stream_10x100", reps);
    print_mem("read_stream");
    stele_close(db);
}

static void cmd_read_all(const bopts *o)
{
    char path[4200];
    store_path(o, path, sizeof path);
    stele_db *db = open_store(path, STELE_OPEN_NOCREATE);
    stele_stats st;
    int rc = stele_get_stats(db, &st);
    if (rc)
        die("stats", rc);
    uint64_t events = 0, bytes = 0, pages = 0, from = 0, expect = 0;
    int ordered = 1;
    uint64_t t0 = bench_now_ns();
    for (;;) {
        stele_page *pg;
        rc = stele_read_all(db, from, STELE_FORWARDS, o->page, &pg);
        if (rc)
            die("read_all", rc);
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_page_event(pg, i);
            bytes += e->data_len;
            ordered &= e->position == expect++;
        }
        events += n;
        pages++;
        int more = stele_page_next(pg, &from);
        stele_page_free(pg);
        if (!more || n == 0)
            break;
    }
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    printf("read_all events=%llu page=%zu pages=%llu secs=%.6f events_per_s=%.0f mib_per_s=%.0f\n",
           (unsigned long long)events, o->page, (unsigned long long)pages, secs, events / secs,
           (double)bytes / (1 << 20) / secs);
    fflush(stdout);
    char phase[64];
    snprintf(phase, sizeof phase, "read_all_page%zu", o->page);
    print_mem(phase);
    if (events != st.events || !ordered) {
        fprintf(stderr, "bench_engine: read_all: %llu events (in order: %d), store has %llu\n",
                (unsigned long long)events, ordered, (unsigned long long)st.events);
        exit(1);
    }
    stele_close(db);
}

/* ------------------------------------------------------------ open */

static void cmd_open_clean(const bopts *o)
{
    char path[4200];
    store_path(o, path, sizeof path);
    double first = 0, worst = 0;
    uint64_t reps = o->reps ? o->reps : 3;
    double *all = calloc(reps, sizeof *all);
    if (!all)
        exit(1);
    stele_stats st = {0};
    for (uint64_t r = 0; r < reps; r++) {
        uint64_t t0 = bench_now_ns();
        stele_db *db = open_store(path, STELE_OPEN_NOCREATE);
        double s = (double)(bench_now_ns() - t0) / 1e9;
        int rc = stele_get_stats(db, &st);
        if (rc)
            die("stats", rc);
        if (r == 0) {
            first = s;
            print_mem("open_clean");
        }
        if (s > worst)
            worst = s;
        all[r] = s;
        stele_close(db);
    }
    qsort(all, reps, sizeof *all, cmp_double);
    double median = all[reps / 2];
    free(all);
    printf("open_clean events=%llu streams=%llu runs=%llu secs=%.6f median_secs=%.6f "
           "max_secs=%.6f\n",
           (unsigned long long)st.events, (unsigned long long)st.streams,
           (unsigned long long)reps, first, median, worst);
    fflush(stdout);
}

/* The child: open, append a little, report the last acknowledged position
 * on the pipe, then keep appending until the parent kills it. */
static void kill_child(const char *path, uint64_t streams, int wfd)
{
    stele_db *db = open_store(path, STELE_OPEN_NOCREATE);
    stele_event_in ev[100];
    char data[DATA_LEN];
    make_json(data, 42);
    for (int i = 0; i < 100; i++)
        ev[i] = (stele_event_in){NULL, EVENT_TYPE, data, DATA_LEN, NULL, 0, NULL, 0,
                                 STELE_EVENT_JSON};
    uint64_t rng = rng_seed(7);
    stele_append_result res;
    uint64_t acked = 0;
    for (int k = 0; k < 20; k++) {
        char stream[64];
        snprintf(stream, sizeof stream, "stream-%06llu",
                 (unsigned long long)(rng_next(&rng) % (streams ? streams : 1)));
        int rc = stele_append(db, stream, STELE_ANY, ev, k % 2 ? 100 : 1, &res);
        if (rc)
            die("child append", rc);
        acked = res.last_position;
    }
    if (write(wfd, &acked, sizeof acked) != (ssize_t)sizeof acked)
        _exit(1);
    for (;;) {
        char stream[64];
        snprintf(stream, sizeof stream, "stream-%06llu",
                 (unsigned long long)(rng_next(&rng) % (streams ? streams : 1)));
        if (stele_append(db, stream, STELE_ANY, ev, 100, NULL))
            _exit(1);
    }
}

static void cmd_open_kill(const bopts *o)
{
    char path[4200];
    store_path(o, path, sizeof path);
    /* How many streams the store has, for the child's random appends. */
    stele_db *db = open_store(path, STELE_OPEN_NOCREATE);
    stele_stats before;
    int rc = stele_get_stats(db, &before);
    if (rc)
        die("stats", rc);
    stele_close(db);
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        exit(1);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        close(p[0]);
        /* `build` made streams stream-000000.. plus the two read streams. */
        kill_child(path, o->streams ? o->streams : before.streams > 2 ? before.streams - 2 : 1,
                   p[1]);
        _exit(0);
    }
    close(p[1]);
    uint64_t acked = 0;
    ssize_t got = read(p[0], &acked, sizeof acked);
    close(p[0]);
    if (got != (ssize_t)sizeof acked) {
        fprintf(stderr, "bench_engine: open_kill: the child failed before appending\n");
        exit(1);
    }
    /* Let it be in the middle of appending. */
    struct timespec ts = {0, 30 * 1000000L};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    uint64_t t0 = bench_now_ns();
    db = open_store(path, STELE_OPEN_NOCREATE);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    stele_stats st;
    rc = stele_get_stats(db, &st);
    if (rc)
        die("stats", rc);
    print_mem("open_kill");
    stele_close(db);
    printf("open_kill events=%llu streams=%llu child_killed=%d acked_events=%llu "
           "events_added_by_child=%llu secs=%.6f\n",
           (unsigned long long)st.events, (unsigned long long)st.streams,
           WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, (unsigned long long)(acked + 1),
           (unsigned long long)(st.events - before.events), secs);
    fflush(stdout);
    if (st.events <= acked) {
        fprintf(stderr, "bench_engine: open_kill: acknowledged position %llu lost (%llu events)\n",
                (unsigned long long)acked, (unsigned long long)st.events);
        exit(1);
    }
}

/* ------------------------------------------------------------ mixed */

typedef struct mixed_state {
    stele_db *db;
    const bopts *o;
    uint64_t streams, events_at_start;
    _Atomic int stop;
    uint64_t reads, read_events, appends, append_events;
    int rc;
} mixed_state;

static void *mixed_reader(void *arg)
{
    mixed_state *m = arg;
    uint64_t rng = rng_seed(31);
    while (!atomic_load(&m->stop)) {
        stele_page *pg;
        int rc;
        if (m->reads % 2 == 0) {
            char stream[64];
            snprintf(stream, sizeof stream, "stream-%06llu",
                     (unsigned long long)(rng_next(&rng) % m->streams));
            rc = stele_read_stream(m->db, stream, 0, STELE_FORWARDS, 1000, &pg);
        } else {
            rc = stele_read_all(m->db, rng_next(&rng) % m->events_at_start, STELE_FORWARDS, 1000,
                                &pg);
        }
        if (rc) {
            fprintf(stderr, "bench_engine: mixed read: %s: %s\n", stele_errname(rc),
                    stele_errmsg());
            m->rc = rc;
            return NULL;
        }
        m->read_events += stele_page_count(pg);
        m->reads++;
        stele_page_free(pg);
    }
    return NULL;
}

static void *mixed_appender(void *arg)
{
    mixed_state *m = arg;
    uint64_t rng = rng_seed(32);
    stele_event_in ev[100];
    uint8_t ids[100][16];
    char data[DATA_LEN];
    make_json(data, 7);
    for (int i = 0; i < 100; i++)
        ev[i] = (stele_event_in){m->o->client_ids ? ids[i] : NULL, EVENT_TYPE, data, DATA_LEN,
                                 NULL, 0, NULL, 0, STELE_EVENT_JSON};
    while (!atomic_load(&m->stop)) {
        char stream[64];
        snprintf(stream, sizeof stream, "stream-%06llu",
                 (unsigned long long)(rng_next(&rng) % m->streams));
        /* Alternate single events and 100-event appends. */
        int n = m->appends % 2 ? 100 : 1;
        if ((m->rc = append_n(m->db, stream, ev, n, ids, m->o->client_ids, &rng)))
            return NULL;
        m->appends++;
        m->append_events += (uint64_t)n;
    }
    return NULL;
}

static void cmd_mixed(const bopts *o)
{
    char path[4200];
    store_path(o, path, sizeof path);
    mixed_state m = {0};
    m.o = o;
    m.db = open_store(path, STELE_OPEN_NOCREATE);
    stele_stats st;
    int rc = stele_get_stats(m.db, &st);
    if (rc)
        die("stats", rc);
    /* `build` made streams stream-000000.. plus the two read streams. */
    m.streams = o->streams ? o->streams : st.streams > 2 ? st.streams - 2 : 1;
    m.events_at_start = st.events;
    print_mem(o->client_ids ? "mixed_open_ids_client" : "mixed_open");
    pthread_t r, a;
    uint64_t t0 = bench_now_ns();
    pthread_create(&r, NULL, mixed_reader, &m);
    pthread_create(&a, NULL, mixed_appender, &m);
    struct timespec ts = {(time_t)o->secs, (long)((o->secs - (double)(time_t)o->secs) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&m.stop, 1);
    pthread_join(r, NULL);
    pthread_join(a, NULL);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    if (m.rc)
        exit(1);
    printf("mixed secs=%.2f ids=%s reads=%llu read_events=%llu appends=%llu append_events=%llu "
           "read_events_per_s=%.0f append_events_per_s=%.0f\n",
           secs, o->client_ids ? "client" : "server", (unsigned long long)m.reads,
           (unsigned long long)m.read_events, (unsigned long long)m.appends,
           (unsigned long long)m.append_events, m.read_events / secs, m.append_events / secs);
    print_mem(o->client_ids ? "mixed_ids_client" : "mixed");
    stele_close(m.db);
}

/* ------------------------------------------------------------ all */

static void cmd_all(const bopts *o)
{
    bopts x = *o;
    uint64_t E = o->events;
    x.events = o->fsync_events ? o->fsync_events : E;
    cmd_fsync(&x);

    x = *o;
    x.events = E, x.reps = 4, x.client_ids = 0;
    cmd_append_vs_fsync(&x);
    x.client_ids = 1;
    cmd_append_vs_fsync(&x);

    x = *o;
    x.threads = 1, x.batch = 1, x.events = E, x.client_ids = 0, x.streams = 0;
    cmd_append(&x);
    x.client_ids = 1;
    cmd_append(&x);
    x.threads = 64, x.events = E * 4, x.client_ids = 0;
    cmd_append(&x);
    x.client_ids = 1;
    cmd_append(&x);
    x.threads = 1, x.batch = 1000, x.events = E * 100, x.client_ids = 0;
    cmd_append(&x);

    x = *o;
    x.events = o->store_events, x.streams = o->store_streams, x.batch = 100, x.threads = 2;
    cmd_build(&x);
    x.reps = o->reps;
    cmd_read_stream(&x);
    x.page = 1000;
    cmd_read_all(&x);
    x.reps = 3;
    cmd_open_clean(&x);
    x.reps = o->reps;
    cmd_open_kill(&x);
    x.secs = o->secs;
    cmd_mixed(&x);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    bopts o = {0};
    o.events = 20000;
    o.threads = 1;
    o.batch = 1;
    o.page = 1000;
    o.secs = 10;
    o.store_events = 200000;
    o.store_streams = 2000;
    o.ceiling_syncs = 50;
    const char *cmd = argv[1];
    static const char *const cmds[] = {"fsync",    "append_vs_fsync", "append",     "build",
                                       "read_stream", "read_all",     "open_clean", "open_kill",
                                       "mixed",    "all"};
    int known = 0;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        known |= strcmp(cmd, cmds[i]) == 0;
    if (!known)
        usage();
    parse_flags(argc, argv, &o);
    int needs_store = !strcmp(cmd, "read_stream") || !strcmp(cmd, "read_all") ||
                      !strcmp(cmd, "open_clean") || !strcmp(cmd, "open_kill") ||
                      !strcmp(cmd, "mixed");
    char tmp[512] = "";
    if (!o.dir) {
        if (needs_store) {
            fprintf(stderr, "bench_engine: %s needs --dir D with a store made by build\n", cmd);
            exit(2);
        }
        const char *base = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/stele-bench-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmp)) {
            perror("mkdtemp");
            exit(1);
        }
        o.dir = tmp;
    } else if (mkdir(o.dir, 0755) != 0 && errno != EEXIST) {
        perror(o.dir);
        exit(1);
    }
    if (!strcmp(cmd, "fsync"))
        cmd_fsync(&o);
    else if (!strcmp(cmd, "append"))
        cmd_append(&o);
    else if (!strcmp(cmd, "append_vs_fsync"))
        cmd_append_vs_fsync(&o);
    else if (!strcmp(cmd, "build"))
        cmd_build(&o);
    else if (!strcmp(cmd, "read_stream"))
        cmd_read_stream(&o);
    else if (!strcmp(cmd, "read_all"))
        cmd_read_all(&o);
    else if (!strcmp(cmd, "open_clean"))
        cmd_open_clean(&o);
    else if (!strcmp(cmd, "open_kill"))
        cmd_open_kill(&o);
    else if (!strcmp(cmd, "mixed"))
        cmd_mixed(&o);
    else if (!strcmp(cmd, "all"))
        cmd_all(&o);
    else
        usage();
    if (tmp[0])
        rm_rf(tmp);
    return 0;
}
