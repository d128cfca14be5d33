/*
 * bench_phase.h - the timed phases of bench_multi and bench_multi_pg, so
 * that Stele and its PostgreSQL peer are measured by the same loop.
 * Included once by each program (it defines its state): the workers loop
 * until `bench_stop`, count each operation in `bench_ops` and each failure
 * in `bench_failures` (which ends the phase early).
 */
#ifndef BENCH_PHASE_H
#define BENCH_PHASE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double bench_secs = 5;
static _Atomic int bench_stop, bench_failures;
static _Atomic uint64_t bench_ops;

static double bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Run `fn` on `threads` threads for bench_secs (each gets a number unique
 * across phases); print a line named `name` (padded to `width`) with
 * ops/s and events/s (`events_per_op` each); return ops/s. */
static double bench_phase(const char *name, int width, void *(*fn)(void *), int threads,
                          int events_per_op)
{
    static int phase_no;
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    if (!th) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    phase_no++;
    bench_stop = 0;
    bench_ops = 0;
    double t0 = bench_now();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, fn, (void *)(intptr_t)(i + phase_no * 100000));
    while (bench_now() - t0 < bench_secs && !bench_failures) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    bench_stop = 1;
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double dt = bench_now() - t0, rate = (double)bench_ops / dt;
    printf("%-*s %3d threads  %9.0f ops/s  %9.0f events/s  (%llu ops in %.1f s)\n", width, name,
           threads, rate, rate * events_per_op, (unsigned long long)bench_ops, dt);
    fflush(stdout);
    free(th);
    return rate;
}

#endif
