/*
 * bench_backup.c - online backup and point-in-time restore of a big store
 * (docs/benchmarks.md, "Backup and restore").
 *
 *   bench_backup --dir D [--events N --streams S --batch B --writers W --secs T]
 *
 * The store: N events (200 bytes of JSON data each, as bench_engine) in
 * appends of B events over S streams, 64 MiB segments. Then, one result
 * line each:
 *
 *   load              how long writing the store took, its log size
 *   append_before     W threads making durable 1-event appends for T s
 *                     (group commit), nothing else running: events/s
 *                     (each window starts after a sync(), so the kernel's
 *                     writeback of what came before is not in it)
 *   backup_with_appends  stele_backup into an empty directory while the
 *                     same W appenders run: the backup's MB/s (bytes copied
 *                     / wall time, each copy synced and read back), and the
 *                     appenders' events/s during the backup
 *   append_after      the appenders alone again for T s (the baseline after,
 *                     so a drift of the machine shows)
 *   backup_interleaved  a backup into another empty directory, pausing
 *                     after each segment as long as the segment took, the
 *                     appenders running throughout: their events/s in the
 *                     windows with the backup copying (busy) and without
 *                     (idle), which share the same background load (this
 *                     machine is shared: separate windows minutes apart
 *                     differ by more than the effect), their ratio, and
 *                     the backup's MB/s over its busy time
 *   backup_incremental  a second backup into the same directory, nothing
 *                     running: segments kept and copied, time
 *   restore_mid       stele_restore to the position in the middle of the
 *                     store: writing the log, rebuilding the indexes from it
 *                     and the check of the result (stele_restore does all
 *                     three), seconds and events restored
 *
 * Nothing here judges a number.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stele.h"

#include "measure.h"

#define DATA_LEN 200

static struct {
    const char *dir;
    uint64_t events, streams, batch;
    int writers;
    double secs;
} o = {NULL, 10000000, 1000, 1000, 4, 10};

static void die(const char *what)
{
    fprintf(stderr, "bench_backup: %s: %s\n", what, stele_errmsg());
    exit(1);
}

static size_t fill(char *buf, uint64_t i)
{
    int n = snprintf(buf, DATA_LEN, "{\"n\":%llu,\"pad\":\"", (unsigned long long)i);
    memset(buf + n, 'x', DATA_LEN - (size_t)n - 2);
    buf[DATA_LEN - 2] = '"';
    buf[DATA_LEN - 1] = '}';
    return DATA_LEN;
}

/* ----------------------------------------------------------- appenders */

typedef struct appenders {
    stele_db *db;
    pthread_t th[64];
    _Atomic int stop;
    _Atomic uint64_t count;
    /* The interleaved run: appends completed in idle (0) and busy (1)
     * windows. */
    _Atomic int phase;
    _Atomic uint64_t by_phase[2];
} appenders;

static void *append_main(void *arg)
{
    appenders *a = arg;
    char data[DATA_LEN], stream[32];
    static _Atomic int next_id;
    int me = atomic_fetch_add(&next_id, 1);
    snprintf(stream, sizeof stream, "Live-%d", me);
    for (uint64_t i = 0; !atomic_load(&a->stop); i++) {
        stele_event_in ev = {.type = "Live", .data = data, .data_len = fill(data, i),
                             .flags = STELE_EVENT_JSON};
        if (stele_append(a->db, stream, STELE_ANY, &ev, 1, NULL))
            die("append");
        atomic_fetch_add(&a->count, 1);
        atomic_fetch_add(&a->by_phase[atomic_load(&a->phase)], 1);
    }
    return NULL;
}

static void appenders_start(appenders *a)
{
    atomic_store(&a->stop, 0);
    for (int i = 0; i < o.writers; i++)
        pthread_create(&a->th[i], NULL, append_main, a);
}

static void appenders_stop(appenders *a)
{
    atomic_store(&a->stop, 1);
    for (int i = 0; i < o.writers; i++)
        pthread_join(a->th[i], NULL);
}

static double appends_for(appenders *a, double secs)
{
    appenders_start(a);
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    uint64_t c0 = atomic_load(&a->count), t0 = bench_now_ns();
    nanosleep(&ts, NULL);
    uint64_t c1 = atomic_load(&a->count), t1 = bench_now_ns();
    appenders_stop(a);
    return (double)(c1 - c0) / ((double)(t1 - t0) / 1e9);
}

/* The interleaved backup: after each segment, a pause as long as the
 * segment took, so the appenders alternate between windows with the
 * backup copying (busy) and without (idle) under the same background. */
typedef struct interleave {
    appenders *a;
    uint64_t mark_ns, busy_ns, idle_ns;
} interleave;

static int interleave_cb(void *ctx, const stele_backup_result *so_far)
{
    (void)so_far;
    interleave *iv = ctx;
    uint64_t t = bench_now_ns(), busy = t - iv->mark_ns;
    iv->busy_ns += busy;
    atomic_store(&iv->a->phase, 0);
    struct timespec ts = {(time_t)(busy / 1000000000ull), (long)(busy % 1000000000ull)};
    nanosleep(&ts, NULL);
    uint64_t t2 = bench_now_ns();
    iv->idle_ns += t2 - t;
    atomic_store(&iv->a->phase, 1);
    iv->mark_ns = t2;
    return 0;
}

/* ---------------------------------------------------------------- main */

static uint64_t arg_u64(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "bench_backup: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return strtoull(argv[++*i], NULL, 10);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            o.dir = argv[++i];
        else if (!strcmp(argv[i], "--events"))
            o.events = arg_u64(argc, argv, &i);
        else if (!strcmp(argv[i], "--streams"))
            o.streams = arg_u64(argc, argv, &i);
        else if (!strcmp(argv[i], "--batch"))
            o.batch = arg_u64(argc, argv, &i);
        else if (!strcmp(argv[i], "--writers"))
            o.writers = (int)arg_u64(argc, argv, &i);
        else if (!strcmp(argv[i], "--secs"))
            o.secs = (double)arg_u64(argc, argv, &i);
        else {
            fprintf(stderr, "usage: bench_backup --dir D [--events N --streams S --batch B "
                            "--writers W --secs T]\n");
            return 2;
        }
    }
    if (!o.dir || !o.events || !o.streams || !o.batch || o.writers < 1 || o.writers > 64) {
        fprintf(stderr, "bench_backup: --dir is required; sizes must be positive, writers "
                        "1..64\n");
        return 2;
    }
    char store[4096], bk[4096], rs[4096];
    snprintf(store, sizeof store, "%s/store", o.dir);
    snprintf(bk, sizeof bk, "%s/backup", o.dir);
    snprintf(rs, sizeof rs, "%s/restored", o.dir);

    stele_db *db;
    if (stele_open(store, NULL, &db))
        die("open");
    /* load */
    uint64_t t0 = bench_now_ns();
    stele_event_in *ev = calloc(o.batch, sizeof *ev);
    char *data = malloc(o.batch * DATA_LEN);
    for (uint64_t done = 0, k = 0; done < o.events; k++) {
        uint64_t n = o.events - done < o.batch ? o.events - done : o.batch;
        for (uint64_t j = 0; j < n; j++) {
            ev[j] = (stele_event_in){.type = "Loaded", .data = data + j * DATA_LEN,
                                     .data_len = fill(data + j * DATA_LEN, done + j),
                                     .flags = STELE_EVENT_JSON};
        }
        char stream[32];
        snprintf(stream, sizeof stream, "Load-%llu", (unsigned long long)(k % o.streams));
        if (stele_append(db, stream, STELE_ANY, ev, n, NULL))
            die("load append");
        done += n;
    }
    free(ev);
    free(data);
    stele_stats st;
    stele_get_stats(db, &st);
    double load_s = (double)(bench_now_ns() - t0) / 1e9;
    printf("load events=%llu log_bytes=%llu segments=%llu seconds=%.1f events_per_s=%.0f\n",
           (unsigned long long)st.events, (unsigned long long)st.log_bytes,
           (unsigned long long)st.segments, load_s, (double)st.events / load_s);
    fflush(stdout);
    uint64_t mid = st.events / 2;

    /* Each window starts with the page cache's dirty data written out
     * (sync), so that the writeback of the load (or of the backup) does
     * not land in the next window's fdatasyncs. */
    appenders a = {.db = db};
    sync();
    printf("append_before writers=%d seconds=%.0f events_per_s=%.0f\n", o.writers, o.secs,
           appends_for(&a, o.secs));
    fflush(stdout);

    sync();
    appenders_start(&a);
    uint64_t c0 = atomic_load(&a.count);
    t0 = bench_now_ns();
    stele_backup_result r;
    if (stele_backup(db, bk, NULL, &r))
        die("backup");
    uint64_t t1 = bench_now_ns(), c1 = atomic_load(&a.count);
    appenders_stop(&a);
    double bs = (double)(t1 - t0) / 1e9;
    printf("backup_with_appends bytes=%llu segments=%llu seconds=%.2f MB_per_s=%.0f "
           "appends_during_events_per_s=%.0f\n",
           (unsigned long long)r.bytes_copied, (unsigned long long)r.segments, bs,
           (double)r.bytes_copied / bs / 1e6, (double)(c1 - c0) / bs);
    fflush(stdout);

    sync();
    printf("append_after writers=%d seconds=%.0f events_per_s=%.0f\n", o.writers, o.secs,
           appends_for(&a, o.secs));
    fflush(stdout);

    char bk2[4200];
    snprintf(bk2, sizeof bk2, "%s/backup-interleaved", o.dir);
    sync();
    interleave iv = {&a, 0, 0, 0};
    atomic_store(&a.phase, 1);
    atomic_store(&a.by_phase[0], 0);
    atomic_store(&a.by_phase[1], 0);
    appenders_start(&a);
    iv.mark_ns = bench_now_ns();
    stele_backup_options io = {0, interleave_cb, &iv};
    if (stele_backup(db, bk2, &io, &r))
        die("interleaved backup");
    appenders_stop(&a);
    double busy_s = (double)iv.busy_ns / 1e9, idle_s = (double)iv.idle_ns / 1e9;
    printf("backup_interleaved bytes=%llu busy_seconds=%.2f idle_seconds=%.2f MB_per_s_busy=%.0f "
           "busy_events_per_s=%.0f idle_events_per_s=%.0f ratio=%.3f\n",
           (unsigned long long)r.bytes_copied, busy_s, idle_s,
           (double)r.bytes_copied / busy_s / 1e6, (double)atomic_load(&a.by_phase[1]) / busy_s,
           (double)atomic_load(&a.by_phase[0]) / idle_s,
           ((double)atomic_load(&a.by_phase[1]) / busy_s) /
               ((double)atomic_load(&a.by_phase[0]) / idle_s));
    fflush(stdout);

    t0 = bench_now_ns();
    if (stele_backup(db, bk, NULL, &r))
        die("incremental backup");
    bs = (double)(bench_now_ns() - t0) / 1e9;
    printf("backup_incremental segments_kept=%llu segments_copied=%llu bytes_copied=%llu "
           "seconds=%.2f\n",
           (unsigned long long)r.segments_kept, (unsigned long long)r.segments_copied,
           (unsigned long long)r.bytes_copied, bs);
    fflush(stdout);
    stele_close(db);

    stele_restore_options ro = {.flags = STELE_RESTORE_TO_POSITION, .to_position = mid};
    stele_restore_result rr;
    t0 = bench_now_ns();
    if (stele_restore(bk, rs, &ro, &rr))
        die("restore");
    double rsec = (double)(bench_now_ns() - t0) / 1e9;
    printf("restore_mid to_position=%llu events=%llu log_bytes=%llu segments=%llu seconds=%.1f "
           "(copy, index rebuild and check)\n",
           (unsigned long long)mid, (unsigned long long)rr.end_position,
           (unsigned long long)rr.bytes, (unsigned long long)rr.segments, rsec);
    return 0;
}
