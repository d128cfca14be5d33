/*
 * measure.h - what every benchmark in bench/ measures the same way: a
 * monotonic clock, the CPU time of this process, of the machine and of a
 * server's process tree, latency samples with nearest-rank quantiles, and
 * the order-like JSON payload that the HTTP, gRPC and peer benchmarks send,
 * so that Stele and its peers are timed and fed identically.
 */
#ifndef BENCH_MEASURE_H
#define BENCH_MEASURE_H

#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* User plus system CPU seconds of this process so far. */
double bench_self_cpu_s(void);

/* Machine-wide jiffies from /proc/stat: busy (excluding idle and iowait)
 * and total; both 0 when it cannot be read. */
void bench_machine_cpu(unsigned long long *busy, unsigned long long *total);

/* CPU seconds of process `pid` and of its direct children (a server's
 * worker processes, as PostgreSQL's backends), from /proc; 0 if pid <= 0. */
double bench_proc_tree_cpu_s(int pid);

/* Latency samples in nanoseconds. */
typedef struct bench_lats {
    uint64_t *v;
    size_t n, cap;
} bench_lats;

void bench_lat_add(bench_lats *l, uint64_t ns); /* exits on out of memory */
void bench_lat_sort(bench_lats *l);
/* After bench_lat_sort: the p-quantile (nearest rank) in milliseconds; 0
 * when empty. */
double bench_lat_ms(const bench_lats *l, double p);

/* `bytes` bytes of JSON: an order-like object padded with a note (caller
 * frees). Exits with a message naming `prog` when `bytes` is too small. */
char *bench_order_json(const char *prog, int bytes);

#endif
