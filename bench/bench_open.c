/*
 * bench_open.c - open after a machine crash (issue 21 item 6): how long
 * stele_open takes when stele.lock says the store was open under another
 * boot, with the durable index checkpoint (only the log after it is
 * replayed) and without it (STELE_INDEX_CKPT_MS=0: the whole index is
 * rebuilt from the log, the behaviour before durable checkpoints).
 * bench/run_open.sh (`make bench-open`) runs the sequence.
 *
 *   build  --dir D --events N [--streams S] [--batch B] [--threads T] [--types K]
 *          [--data-bytes DB]
 *          append to the store D/store (made if missing): T threads append
 *          N events (DB bytes of JSON, default 200; server ids) in appends
 *          of B (default 100) to S streams in 100 categories, each event of
 *          one of K (default 1,000) types (the shape of bench_query's query
 *          store, whose rebuild docs/benchmarks.md gives; --data-bytes 16
 *          --types 1 is close to bench_engine's one-type events, small
 *          enough for a 100M-event store to fit a shared disk), while the
 *          checkpointer takes durable checkpoints as usual; then the
 *          process exits without closing the store, right after its last
 *          acknowledged append (a crash at the worst moment: the log after
 *          the last durable checkpoint is as long as the policy allows).
 *   crash-open --dir D [--keep]
 *          write "open <another boot id>" into D/store/stele.lock and time
 *          stele_open: seconds, CPU-seconds of this process, how recovery
 *          went (durable / rebuild, positions replayed). Then check the
 *          event count and exit without closing (so the store is crashed
 *          again for the next measurement) unless --keep (clean close).
 *          With STELE_INDEX_CKPT_MS=0 in the environment the durable
 *          checkpoint is ignored: a full rebuild.
 *   open   --dir D  time an open after a clean close (reference).
 *
 * Output lines are "key=value" pairs, one per measurement.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/local_int.h"
#include "measure.h"
#include "stele.h"

typedef struct opts {
    const char *dir;
    uint64_t events, streams, batch, threads, types, data_bytes;
    int keep;
} opts;

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_open: %s: %s (%s)\n", what, stele_strerror(rc), stele_errmsg());
    exit(1);
}

static void store_path(const opts *o, char *out, size_t n) { snprintf(out, n, "%s/store", o->dir); }

/* ------------------------------------------------------------- build */

typedef struct worker {
    const opts *o;
    stele_db *db;
    uint64_t events; /* this worker's share */
    uint64_t seed;
    const char *data;
    char (*types)[16];
} worker;

static _Atomic uint64_t g_acked;

static void *build_worker(void *arg)
{
    worker *w = arg;
    stele_event_in *ev = calloc(w->o->batch, sizeof *ev);
    if (!ev)
        exit(1);
    for (uint64_t i = 0; i < w->o->batch; i++)
        ev[i] = (stele_event_in){NULL, "OrderPlaced", w->data, w->o->data_bytes, NULL, 0, NULL, 0,
                                 STELE_EVENT_JSON};
    uint64_t x = w->seed;
    for (uint64_t done = 0; done < w->events;) {
        uint64_t n = w->events - done < w->o->batch ? w->events - done : w->o->batch;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* bench_query's query store: 100 categories, 1,000 event types
         * (drawn per event), so the secondary indexes hold many keys. */
        char stream[64];
        uint64_t sn = x % w->o->streams;
        snprintf(stream, sizeof stream, "cat%02llu-%07llu", (unsigned long long)(sn % 100),
                 (unsigned long long)sn);
        for (uint64_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ev[i].type = w->types[x % w->o->types];
        }
        int rc = stele_append(w->db, stream, STELE_ANY, ev, n, NULL);
        if (rc)
            die("append", rc);
        done += n;
        atomic_fetch_add(&g_acked, n);
    }
    free(ev);
    return NULL;
}

/* The events' data: bench_order_json's order when DB bytes hold it, else
 * {"n":"xx..."} padded to exactly DB bytes (at least 8), still valid JSON. */
static char *event_data(uint64_t bytes)
{
    static const size_t order_min = 152; /* bench_order_json's fixed fields, an empty note */
    if (bytes >= order_min)
        return bench_order_json("bench_open", (int)bytes);
    char *d = malloc(bytes + 1);
    if (!d) {
        perror("malloc");
        exit(1);
    }
    memcpy(d, "{\"n\":\"", 6);
    memset(d + 6, 'x', bytes - 8);
    memcpy(d + bytes - 2, "\"}", 3);
    return d;
}

static void cmd_build(const opts *o)
{
    char path[4200];
    store_path(o, path, sizeof path);
    stele_db *db;
    stele_options so = {0};
    int rc = stele_open(path, &so, &db);
    if (rc)
        die("open", rc);
    char *data = event_data(o->data_bytes);
    static char types[1000][16];
    for (int i = 0; i < 1000; i++)
        snprintf(types[i], sizeof types[i], "type%04d", i);
    worker *w = calloc(o->threads, sizeof *w);
    pthread_t *th = calloc(o->threads, sizeof *th);
    uint64_t t0 = bench_now_ns();
    double c0 = bench_self_cpu_s();
    for (uint64_t i = 0; i < o->threads; i++) {
        w[i] = (worker){o, db, o->events / o->threads + (i < o->events % o->threads), 88172645463325252ull + i * 7919, data, types};
        pthread_create(&th[i], NULL, build_worker, &w[i]);
    }
    for (uint64_t i = 0; i < o->threads; i++)
        pthread_join(th[i], NULL);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    printf("build events=%llu streams=%llu types=%llu data_bytes=%llu batch=%llu threads=%llu "
           "secs=%.3f cpu_secs=%.3f events_per_s=%.0f durable_checkpoints=%llu\n",
           (unsigned long long)atomic_load(&g_acked), (unsigned long long)o->streams,
           (unsigned long long)o->types, (unsigned long long)o->data_bytes,
           (unsigned long long)o->batch, (unsigned long long)o->threads, secs,
           bench_self_cpu_s() - c0, (double)atomic_load(&g_acked) / secs,
           (unsigned long long)atomic_load(&ckpt_taken_total));
    fflush(stdout);
    _exit(0); /* the crash: nothing closed, the last checkpoint wherever it is */
}

/* ------------------------------------------------------------- opens */

static void other_boot(const char *path)
{
    char lock[4300];
    snprintf(lock, sizeof lock, "%s/stele.lock", path);
    FILE *f = fopen(lock, "w");
    if (!f || fputs("open 00000000-0000-0000-0000-0000b0075eed\n", f) < 0 || fclose(f)) {
        fprintf(stderr, "bench_open: cannot write %s\n", lock);
        exit(1);
    }
}

static const char *mode_name(int m)
{
    return m == RECOVER_DURABLE ? "durable" : m == RECOVER_REBUILD ? "rebuild"
                                          : m == RECOVER_FAST      ? "fast"
                                                                   : "?";
}

static void cmd_open(const opts *o, int crash)
{
    char path[4200];
    store_path(o, path, sizeof path);
    if (crash)
        other_boot(path);
    stele_db *db;
    stele_options so = {0};
    so.flags = STELE_OPEN_NOCREATE;
    double c0 = bench_self_cpu_s();
    uint64_t t0 = bench_now_ns();
    int rc = stele_open(path, &so, &db);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    double cpu = bench_self_cpu_s() - c0;
    if (rc)
        die("open", rc);
    recover_report rep = recover_last;
    stele_stats st;
    if ((rc = stele_get_stats(db, &st)))
        die("stats", rc);
    const char *ckms = getenv("STELE_INDEX_CKPT_MS");
    printf("%s events=%llu streams=%llu secs=%.3f cpu_secs=%.3f recovery=%s replayed_from=%llu "
           "replayed_events=%llu durable_checkpoints=%s\n",
           crash ? "crash_open" : "clean_open", (unsigned long long)st.events,
           (unsigned long long)st.streams, secs, cpu, mode_name(rep.mode),
           (unsigned long long)rep.from_pos, (unsigned long long)(rep.to_pos - rep.from_pos),
           ckms && strtoull(ckms, NULL, 10) > 0 ? "on" : "off");
    fflush(stdout);
    if (st.events != rep.to_pos) {
        fprintf(stderr, "bench_open: %llu events, recovery ended at %llu\n",
                (unsigned long long)st.events, (unsigned long long)rep.to_pos);
        exit(1);
    }
    if (crash && !o->keep)
        _exit(0); /* crashed again */
    stele_close(db);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_open build|crash-open|open --dir D [--events N] "
                        "[--streams S] [--batch B] [--threads T] [--types K] [--data-bytes DB] "
                        "[--keep]\n");
        return 2;
    }
    opts o = {.events = 1000000, .streams = 10000, .batch = 100, .threads = 4, .types = 1000,
              .data_bytes = 200};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--keep")) {
            o.keep = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bench_open: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--dir"))
            o.dir = v;
        else if (!strcmp(a, "--events"))
            o.events = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--streams"))
            o.streams = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--batch"))
            o.batch = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--types"))
            o.types = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--data-bytes"))
            o.data_bytes = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--threads"))
            o.threads = strtoull(v, NULL, 10);
        else {
            fprintf(stderr, "bench_open: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!o.dir || !o.streams || !o.batch || !o.threads || !o.types || o.types > 1000 ||
        o.data_bytes < 8 || o.data_bytes > 1000000) {
        fprintf(stderr, "bench_open: --dir is required; counts must be > 0, --types at most "
                        "1000, --data-bytes from 8 to 1000000\n");
        return 2;
    }
    if (!strcmp(argv[1], "build"))
        cmd_build(&o);
    else if (!strcmp(argv[1], "crash-open"))
        cmd_open(&o, 1);
    else if (!strcmp(argv[1], "open"))
        cmd_open(&o, 0);
    else {
        fprintf(stderr, "bench_open: unknown command %s\n", argv[1]);
        return 2;
    }
    return 0;
}
