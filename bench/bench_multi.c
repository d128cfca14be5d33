/*
 * bench_multi.c - multi-stream appends and DCB conditional appends,
 * in-process (docs/benchmarks.md, `make bench-multi`).
 *
 *   transfers   N threads (default 64) each move money between two accounts
 *               of their own with stele_append_multi: a Debited event on one
 *               stream and a Credited event on the other, exact expected
 *               revisions (disjoint accounts per thread, so no conflicts:
 *               this measures the commit path, not contention);
 *   single      the same threads append the same two events to one stream
 *               with stele_append (the single-stream baseline, same run);
 *   dcb         conditional appends, 1 and N threads: each appends one event
 *               tagged with its own key, conditioned on "no event with that
 *               tag after the last one I wrote" (the DCB decision pattern
 *               with non-overlapping boundaries).
 *
 * Usage: bench_multi DIR [seconds per phase (default 5)] [threads (64)]
 * Prints one line per phase: operations/s and events/s.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele.h"

static stele_db *db;
static double secs = 5;
static _Atomic int stop;
static _Atomic uint64_t ops;
static _Atomic int failures;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const char data[] = "{\"amount\":10,\"currency\":\"EUR\",\"ref\":\"bench\"}";

static stele_event_in ev(const char *type, const char *const *tags, size_t ntags)
{
    stele_event_in e = {0};
    e.type = type;
    e.data = data;
    e.data_len = sizeof data - 1;
    e.flags = STELE_EVENT_JSON;
    e.tags = tags;
    e.ntags = ntags;
    return e;
}

static void *transfer_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    char a[32], b[32];
    snprintf(a, sizeof a, "acct-%d-a", me);
    snprintf(b, sizeof b, "acct-%d-b", me);
    int64_t ra = STELE_NO_STREAM, rb = STELE_NO_STREAM;
    while (!stop) {
        stele_append_stream s[2] = {{a, ra, NULL}, {b, rb, NULL}};
        stele_append_record r[2] = {{0, ev("Debited", NULL, 0)}, {1, ev("Credited", NULL, 0)}};
        stele_append_result ps[2];
        if (stele_append_multi(db, s, 2, r, 2, NULL, ps, NULL)) {
            fprintf(stderr, "transfer: %s\n", stele_errmsg());
            failures++;
            break;
        }
        ra = (int64_t)ps[0].last_revision;
        rb = (int64_t)ps[1].last_revision;
        ops++;
    }
    return NULL;
}

static void *single_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    char a[32];
    snprintf(a, sizeof a, "single-%d", me);
    int64_t ra = STELE_NO_STREAM;
    while (!stop) {
        stele_event_in e[2] = {ev("Debited", NULL, 0), ev("Credited", NULL, 0)};
        stele_append_result res;
        if (stele_append(db, a, ra, e, 2, &res)) {
            fprintf(stderr, "single: %s\n", stele_errmsg());
            failures++;
            break;
        }
        ra = (int64_t)res.last_revision;
        ops++;
    }
    return NULL;
}

static void *dcb_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    char tag[32], stream[32];
    snprintf(tag, sizeof tag, "key:%d", me);
    snprintf(stream, sizeof stream, "dcb-%d", me);
    const char *tags[] = {tag}, *types[] = {"Claimed"};
    stele_query_item it = {types, 1, tags, 1};
    uint64_t after = STELE_NONE;
    while (!stop) {
        stele_condition c = {&it, 1, after};
        stele_append_stream s = {stream, STELE_ANY, NULL};
        stele_append_record r = {0, ev("Claimed", tags, 1)};
        stele_multi_result mr;
        if (stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr)) {
            fprintf(stderr, "dcb: %s\n", stele_errmsg());
            failures++;
            break;
        }
        after = mr.last_position;
        ops++;
    }
    return NULL;
}

static double phase(const char *name, void *(*fn)(void *), int threads, int events_per_op)
{
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    stop = 0;
    ops = 0;
    double t0 = now();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, fn, (void *)(intptr_t)(i + threads * 1000));
    while (now() - t0 < secs && !failures) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    stop = 1;
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double dt = now() - t0, rate = (double)ops / dt;
    printf("%-10s %3d threads  %9.0f ops/s  %9.0f events/s  (%llu ops in %.1f s)\n", name,
           threads, rate, rate * events_per_op, (unsigned long long)ops, dt);
    fflush(stdout);
    free(th);
    return rate;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_multi DIR [seconds per phase] [threads]\n");
        return 2;
    }
    if (argc > 2)
        secs = atof(argv[2]);
    int threads = argc > 3 ? atoi(argv[3]) : 64;
    if (stele_open(argv[1], NULL, &db)) {
        fprintf(stderr, "open: %s\n", stele_errmsg());
        return 1;
    }
    double single = phase("single", single_thread, threads, 2);
    double multi = phase("transfer", transfer_thread, threads, 2);
    printf("transfer/single ratio: %.2f\n", single > 0 ? multi / single : 0);
    phase("dcb", dcb_thread, 1, 1);
    phase("dcb", dcb_thread, threads, 1);
    stele_close(db);
    return failures ? 1 : 0;
}
