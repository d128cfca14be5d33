/*
 * local_ckpt.c - durable index checkpoints in the local engine: when they
 * are taken, and how open uses the last one after a machine crash.
 *
 * The index commits of the writer are not fsynced (MDB_NOSYNC, local.c),
 * which is right for a process crash (the page cache survives) but after a
 * machine crash would leave only a full rebuild from the log, whose cost
 * grows with the store. So a checkpointer thread makes the index durable
 * from time to time (index_durable.c has the scheme and why it is sound):
 * every STELE_INDEX_CKPT_MS milliseconds (1000 is a good value) or every
 * STELE_INDEX_CKPT_EVENTS new positions (default 200,000), whichever comes
 * first, and only when something was committed since the last one. They
 * are off unless STELE_INDEX_CKPT_MS is set (> 0): their price (below)
 * cut some append workloads 2-8x, a cost every append would pay for a
 * faster open after the rare machine crash. The
 * writer's only cost is a short wait for LMDB's write lock while the
 * checkpointer copies one meta page; the msync and the file writes run in
 * the checkpointer's thread. The bound on what recovery replays after a
 * machine crash is thus about one interval of appends plus the time one
 * checkpoint takes. Without them (STELE_INDEX_CKPT_MS unset or 0) a machine
 * crash rebuilds the whole index from the log.
 *
 * The price is indirect. While a snapshot is held LMDB cannot reuse the
 * pages later commits free, so every commit's copy-on-write pages are new
 * pages that the next msync writes to disk, and the file grows by what the
 * index rewrites in one interval. Commits that touch few index keys per
 * event barely notice; commits whose events each touch their own keys
 * (many event types at random) rewrite kilobytes of index per event and
 * are limited by the disk's write bandwidth (docs/benchmarks.md, "Open
 * after a machine crash").
 *
 * Open (local_open in local.c) calls, in order:
 *   ckpt_prepare     before the lock-file marker is rewritten: after a
 *                    machine crash (the marker names another boot) set the
 *                    index back to the durable checkpoint, or remove it for
 *                    a rebuild; in every case forget index/durable, since
 *                    no process holds its snapshot any more;
 *   ckpt_open_index  open the index, check a restored one against the
 *                    durable checkpoint (rebuilding in a new file if it
 *                    does not match), and recover (replay the log after the
 *                    index's checkpoint);
 *   ckpt_start       after recovery: take the first durable checkpoint (the
 *                    recovered state, already synced) and start the thread.
 * Close calls ckpt_stop after the writer has stopped.
 *
 * A failed durable checkpoint (msync or the file write) is not a storage
 * fault of the store: the log is the truth and appends go on. The
 * checkpointer stops for this open and keeps holding the last good
 * snapshot, so index/durable stays valid; a machine crash then replays
 * more of the log.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/local_int.h"

recover_report recover_last;
_Atomic uint64_t ckpt_taken_total;
_Atomic uint64_t ckpt_failed_total;

struct ckpt_ctl {
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    uint64_t every_ms;     /* 0: durable checkpoints are off */
    uint64_t every_events;
    idx_durable_info info; /* what ckpt_prepare found */
    int failed;
    char failed_msg[256];
};

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    return *end ? dflt : (uint64_t)n;
}

int ckpt_prepare(local *L, int crashed)
{
    ckpt_ctl *cp = calloc(1, sizeof *cp);
    if (!cp)
        return err_set(STELE_ENOMEM, "out of memory");
    pthread_mutex_init(&cp->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cp->cv, &ca);
    pthread_condattr_destroy(&ca);
    cp->every_ms = env_u64("STELE_INDEX_CKPT_MS", 0); /* off unless asked (below) */
    cp->every_events = env_u64("STELE_INDEX_CKPT_EVENTS", 200000);
    if (cp->every_events == 0)
        cp->every_events = 1;
    L->cp = cp;
    return idx_durable_prepare(L->dir, crashed, cp->every_ms != 0, &cp->info);
}

int ckpt_open_index(local *L, int crashed, int sec_on)
{
    ckpt_ctl *cp = L->cp;
    recover_report rep = {.mode = crashed ? RECOVER_REBUILD : RECOVER_FAST};
    int fresh = crashed && !cp->info.restored;
    if (fresh)
        snprintf(rep.why, sizeof rep.why, "%s",
                 cp->every_ms ? cp->info.why : "durable index checkpoints are off");
    int rc = idx_open(L->dir, fresh, sec_on, &L->ix);
    if (cp->info.restored) {
        if (rc == 0)
            rc = idx_durable_check(L->ix, &cp->info);
        if (rc && rc != STELE_ENOMEM && rc != STELE_ENOSPC) {
            /* Not the snapshot index/durable named: never use it. */
            snprintf(rep.why, sizeof rep.why, "%s", stele_errmsg());
            idx_close(L->ix);
            L->ix = NULL;
            cp->info.restored = 0;
            fresh = 1;
            rc = idx_remove_files(L->dir);
            if (rc == 0)
                rc = idx_open(L->dir, 1, sec_on, &L->ix);
        } else if (rc == 0) {
            rep.mode = RECOVER_DURABLE;
            rep.txnid = cp->info.txnid;
        }
    }
    if (rc)
        return rc;
    rc = recover(L, fresh, &rep);
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    recover_last = rep;
    pthread_mutex_unlock(&mu);
    return rc;
}

static void *ckpt_main(void *arg)
{
    local *L = arg;
    ckpt_ctl *cp = L->cp;
    uint32_t gen = atomic_load(&L->commit_gen);
    uint64_t pos = atomic_load(&L->pub_next_pos);
    uint64_t last = time_mono_ns();
    uint64_t poll_ms = cp->every_ms < 50 ? cp->every_ms : 50;
    pthread_mutex_lock(&cp->mu);
    while (!cp->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + poll_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&cp->cv, &cp->mu, &ts);
        if (cp->stopping)
            break;
        uint32_t g = atomic_load(&L->commit_gen);
        uint64_t p = atomic_load(&L->pub_next_pos);
        uint64_t now = time_mono_ns();
        if (g == gen || (p - pos < cp->every_events && now - last < cp->every_ms * 1000000u))
            continue;
        pthread_mutex_unlock(&cp->mu);
        int rc = idx_durable_take(L->ix, L->dir, NULL);
        pthread_mutex_lock(&cp->mu);
        if (rc == 0) {
            gen = g;
            pos = p;
            last = now;
            atomic_fetch_add(&ckpt_taken_total, 1);
        } else if (rc != STELE_ENOTFOUND) {
            atomic_fetch_add(&ckpt_failed_total, 1);
            cp->failed = 1;
            snprintf(cp->failed_msg, sizeof cp->failed_msg, "%s", stele_errmsg());
            break;
        }
    }
    pthread_mutex_unlock(&cp->mu);
    return NULL;
}

int ckpt_start(local *L)
{
    ckpt_ctl *cp = L->cp;
    if (!cp || cp->every_ms == 0)
        return 0;
    /* The recovered state: recovery synced it, so this is cheap. */
    int rc = idx_durable_take(L->ix, L->dir, NULL);
    if (rc && rc != STELE_ENOTFOUND) {
        atomic_fetch_add(&ckpt_failed_total, 1);
        cp->failed = 1;
        snprintf(cp->failed_msg, sizeof cp->failed_msg, "%s", stele_errmsg());
        err_clear();
        return 0;
    }
    err_clear();
    if (rc == 0)
        atomic_fetch_add(&ckpt_taken_total, 1);
    if (pthread_create(&cp->th, NULL, ckpt_main, L) != 0)
        return err_set(STELE_EINTERNAL, "cannot start the index checkpoint thread");
    cp->started = 1;
    return 0;
}

void ckpt_stop(local *L)
{
    ckpt_ctl *cp = L->cp;
    if (!cp)
        return;
    if (cp->started) {
        pthread_mutex_lock(&cp->mu);
        cp->stopping = 1;
        pthread_cond_signal(&cp->cv);
        pthread_mutex_unlock(&cp->mu);
        pthread_join(cp->th, NULL);
    }
    idx_durable_release(L->ix);
    /* Nothing holds its snapshot now: a writer that bypasses stele_open
     * (a tool, a test damaging the index) could reuse its pages. */
    if (L->ix && cp->every_ms) {
        /* Keep the thread's message: a failed open closes through here. */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", stele_errmsg());
        idx_durable_forget(L->dir);
        if (msg[0])
            err_set(0, "%s", msg);
        else
            err_clear();
    }
    pthread_mutex_destroy(&cp->mu);
    pthread_cond_destroy(&cp->cv);
    free(cp);
    L->cp = NULL;
}
