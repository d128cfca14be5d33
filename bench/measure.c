/*
 * measure.c - clocks, CPU accounting, latency quantiles and the shared
 * payload of the benchmarks (measure.h). Quantiles are nearest-rank over
 * every sample (no histogram buckets), so a p99 is a latency some request
 * really had.
 */
#include "measure.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double bench_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

void bench_machine_cpu(unsigned long long *busy, unsigned long long *total)
{
    unsigned long long v[10] = {0};
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) >= 8) {
        for (int i = 0; i < 8; i++)
            *total += v[i];
        *busy = *total - v[3] - v[4];
    }
    fclose(f);
}

double bench_proc_tree_cpu_s(int pid)
{
    if (pid <= 0)
        return 0;
    double hz = (double)sysconf(_SC_CLK_TCK), total = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        char path[300], line[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = 0;
        char *p = strrchr(line, ')');
        if (!p)
            continue;
        /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
         * majflt cmajflt utime stime */
        char st;
        int ppid;
        unsigned long long ut, stt;
        if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &st, &ppid, &ut,
                   &stt) != 4)
            continue;
        if (atoi(de->d_name) == pid || ppid == pid)
            total += (double)(ut + stt) / hz;
    }
    closedir(d);
    return total;
}

void bench_lat_add(bench_lats *l, uint64_t ns)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 65536;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) {
            perror("realloc");
            exit(1);
        }
    }
    l->v[l->n++] = ns;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void bench_lat_sort(bench_lats *l)
{
    if (l->n)
        qsort(l->v, l->n, sizeof *l->v, cmp_u64);
}

double bench_lat_ms(const bench_lats *l, double p)
{
    if (!l->n)
        return 0;
    size_t k = (size_t)(p * (double)l->n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > l->n)
        k = l->n;
    return (double)l->v[k - 1] / 1e6;
}

char *bench_order_json(const char *prog, int bytes)
{
    static const char head[] = "{\"orderId\":\"ord-000000001\",\"customerId\":\"cust-00042\","
                               "\"currency\":\"EUR\",\"total\":12345,\"items\":[{\"sku\":\"SKU-1\","
                               "\"qty\":2},{\"sku\":\"SKU-2\",\"qty\":1}],\"note\":\"";
    int pad = bytes - (int)(sizeof head - 1) - 2;
    if (pad < 0) {
        fprintf(stderr, "%s: --data-bytes must be at least %d\n", prog, (int)sizeof head + 1);
        exit(2);
    }
    char *d = malloc((size_t)bytes + 1);
    if (!d) {
        perror("malloc");
        exit(1);
    }
    memcpy(d, head, sizeof head - 1);
    memset(d + sizeof head - 1, 'x', (size_t)pad);
    memcpy(d + bytes - 2, "\"}", 3);
    return d;
}
