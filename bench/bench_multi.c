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
 * Over HTTP (--http PORT, a running `stele serve`): the same two workloads,
 * each of N threads with one keep-alive connection and one request in
 * flight: POST /streams with the transfer (exact expectations taken from
 * the previous response) against POST /streams/{s} with the same two
 * events (exact Stele-Expected-Revision).
 *
 * Phases alternate (single, transfer, single, transfer, ...) for `rounds`
 * rounds, so both see the same machine load; the ratio is over the sums.
 *
 * Usage: bench_multi DIR [seconds per phase (5)] [threads (64)] [rounds (2)]
 *        bench_multi --http PORT [seconds] [threads] [rounds]
 * Prints one line per phase: operations/s and events/s.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_phase.h"
#include "stele.h"

static stele_db *db;

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
    while (!bench_stop) {
        stele_append_stream s[2] = {{a, ra, NULL}, {b, rb, NULL}};
        stele_append_record r[2] = {{0, ev("Debited", NULL, 0)}, {1, ev("Credited", NULL, 0)}};
        stele_append_result ps[2];
        if (stele_append_multi(db, s, 2, r, 2, NULL, ps, NULL)) {
            fprintf(stderr, "transfer: %s\n", stele_errmsg());
            bench_failures++;
            break;
        }
        ra = (int64_t)ps[0].last_revision;
        rb = (int64_t)ps[1].last_revision;
        bench_ops++;
    }
    return NULL;
}

static void *single_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    char a[32];
    snprintf(a, sizeof a, "single-%d", me);
    int64_t ra = STELE_NO_STREAM;
    while (!bench_stop) {
        stele_event_in e[2] = {ev("Debited", NULL, 0), ev("Credited", NULL, 0)};
        stele_append_result res;
        if (stele_append(db, a, ra, e, 2, &res)) {
            fprintf(stderr, "single: %s\n", stele_errmsg());
            bench_failures++;
            break;
        }
        ra = (int64_t)res.last_revision;
        bench_ops++;
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
    while (!bench_stop) {
        stele_condition c = {&it, 1, after};
        stele_append_stream s = {stream, STELE_ANY, NULL};
        stele_append_record r = {0, ev("Claimed", tags, 1)};
        stele_multi_result mr;
        if (stele_append_multi(db, &s, 1, &r, 1, &c, NULL, &mr)) {
            fprintf(stderr, "dcb: %s\n", stele_errmsg());
            bench_failures++;
            break;
        }
        after = mr.last_position;
        bench_ops++;
    }
    return NULL;
}

/* ---------------------------------------------------------------- HTTP */

static int http_port;

typedef struct hconn {
    int fd;
    char buf[65536];
    size_t have;
} hconn;

static int hconnect(hconn *h)
{
    h->have = 0;
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)http_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return connect(h->fd, (struct sockaddr *)&a, sizeof a);
}

/* One request; returns the status and the body (NUL-terminated) in *body. */
static int hpost(hconn *h, const char *path, const char *extra, const char *body, char **out)
{
    char req[8192];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     path, extra, strlen(body), body);
    if (write(h->fd, req, (size_t)n) != n)
        return -1;
    h->have = 0;
    for (;;) {
        ssize_t k = read(h->fd, h->buf + h->have, sizeof h->buf - 1 - h->have);
        if (k <= 0)
            return -1;
        h->have += (size_t)k;
        h->buf[h->have] = 0;
        char *end = strstr(h->buf, "\r\n\r\n");
        if (!end)
            continue;
        char *cl = strcasestr(h->buf, "Content-Length:");
        size_t len = cl ? strtoul(cl + 15, NULL, 10) : 0;
        if (h->have < (size_t)(end + 4 - h->buf) + len)
            continue;
        *out = end + 4;
        return atoi(h->buf + 9);
    }
}

/* The n-th "lastRevision": value in a response body. */
static long long nth_rev(const char *b, int n)
{
    const char *p = b;
    for (int i = 0; i <= n; i++) {
        p = strstr(p, "\"lastRevision\":");
        if (!p)
            return -1;
        p += 15;
    }
    return atoll(p);
}

static void *http_transfer_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    hconn *h = malloc(sizeof *h);
    if (hconnect(h)) {
        bench_failures++;
        free(h);
        return NULL;
    }
    char ra[32] = "\"no_stream\"", rb[32] = "\"no_stream\"", body[1024];
    while (!bench_stop) {
        snprintf(body, sizeof body,
                 "{\"streams\":[{\"stream\":\"hacct-%d-a\",\"expectedRevision\":%s,\"events\":"
                 "[{\"type\":\"Debited\",\"data\":%s}]},{\"stream\":\"hacct-%d-b\","
                 "\"expectedRevision\":%s,\"events\":[{\"type\":\"Credited\",\"data\":%s}]}]}",
                 me, ra, data, me, rb, data);
        char *out;
        int st = hpost(h, "/streams", "", body, &out);
        if (st != 201) {
            fprintf(stderr, "http transfer: %d %s\n", st, st > 0 ? out : "");
            bench_failures++;
            break;
        }
        snprintf(ra, sizeof ra, "%lld", nth_rev(out, 0));
        snprintf(rb, sizeof rb, "%lld", nth_rev(out, 1));
        bench_ops++;
    }
    close(h->fd);
    free(h);
    return NULL;
}

static void *http_single_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    hconn *h = malloc(sizeof *h);
    if (hconnect(h)) {
        bench_failures++;
        free(h);
        return NULL;
    }
    char path[64], hdr[96], body[512];
    snprintf(path, sizeof path, "/streams/hsingle-%d", me);
    snprintf(hdr, sizeof hdr, "Stele-Expected-Revision: no_stream\r\n");
    snprintf(body, sizeof body, "[{\"type\":\"Debited\",\"data\":%s},{\"type\":\"Credited\","
             "\"data\":%s}]", data, data);
    while (!bench_stop) {
        char *out;
        int st = hpost(h, path, hdr, body, &out);
        if (st != 201) {
            fprintf(stderr, "http single: %d %s\n", st, st > 0 ? out : "");
            bench_failures++;
            break;
        }
        snprintf(hdr, sizeof hdr, "Stele-Expected-Revision: %lld\r\n", nth_rev(out, 0));
        bench_ops++;
    }
    close(h->fd);
    free(h);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_multi DIR [seconds] [threads] [rounds]\n"
                        "       bench_multi --http PORT [seconds] [threads] [rounds]\n");
        return 2;
    }
    int a = 1;
    if (!strcmp(argv[1], "--http")) {
        if (argc < 3)
            return 2;
        http_port = atoi(argv[2]);
        a = 2;
    }
    if (argc > a + 1)
        bench_secs = atof(argv[a + 1]);
    int threads = argc > a + 2 ? atoi(argv[a + 2]) : 64;
    int rounds = argc > a + 3 ? atoi(argv[a + 3]) : 2;
    if (!http_port && stele_open(argv[1], NULL, &db)) {
        fprintf(stderr, "open: %s\n", stele_errmsg());
        return 1;
    }
    double single = 0, multi = 0;
    for (int r = 0; r < rounds && !bench_failures; r++) {
        /* new streams each round (thread ids differ by round) */
        if (http_port) {
            single += bench_phase("http-single", 10, http_single_thread, threads, 2);
            multi += bench_phase("http-transfer", 10, http_transfer_thread, threads, 2);
        } else {
            single += bench_phase("single", 10, single_thread, threads, 2);
            multi += bench_phase("transfer", 10, transfer_thread, threads, 2);
        }
    }
    printf("%stransfer/single ratio: %.2f (%d alternating rounds)\n", http_port ? "http " : "",
           single > 0 ? multi / single : 0, rounds);
    if (!http_port) {
        bench_phase("dcb", 10, dcb_thread, 1, 1);
        bench_phase("single", 10, single_thread, 1, 2);
        bench_phase("dcb", 10, dcb_thread, threads, 1);
        stele_close(db);
    }
    return bench_failures ? 1 : 0;
}
