/*
 * bench_floor.c - what this machine allows an event store, measured by
 * programs that have none of Stele's code (libc and the kernel only): the
 * floors under issue 21's goals, to be run beside Stele in the same run
 * (bench/run_floor.sh does that).
 *
 *   bench_floor disk  --dir D [--bytes B] [--writes N]
 *       the disk's own rate: B-byte pwrite + fdatasync at consecutive
 *       offsets of a pre-zeroed file in D (default 4,096 bytes).
 *   bench_floor serve --dir D [--port P] [--nosync] [--spin-us N] [--handoff]
 *                     [--ready-fd FD]
 *       the ideal append server (below), until SIGTERM or SIGINT; prints
 *       its port ("ready PORT", on FD if given, else stdout) and, at the
 *       end, its appends, groups and CPU. --spin-us: after a turn with
 *       work the loop polls (epoll_wait with no timeout) for N µs before
 *       it sleeps. --handoff: Stele's shape, two threads (below).
 *   bench_floor wire1 --dir D [--secs S] [--rounds R] [--bytes B]
 *       the ideal 1 x 1: in each round the disk's rate for the record the
 *       server writes, the server with fdatasync and the server without
 *       (the round trip alone), each server in a child process and one
 *       client in this one sending one request at a time; the order of the
 *       three rotates from round to round. Medians of the rounds and the
 *       ratio to the disk's rate.
 *   bench_floor group --dir D --threads T --batch B [--events N] [--rounds R]
 *                     [--bytes B] [--syncs K]
 *       the ideal in-process group commit (below); then K raw
 *       pwrite + fdatasync of one full group's bytes, the disk's bound.
 *
 * The server (serve, wire1). One thread and one epoll loop (level-
 * triggered), every socket non-blocking. Each turn of the loop reads
 * every ready connection once and parses the complete requests in it: a
 * GET is a no-op whose answer is sent at once; a POST is an append whose
 * bytes (the whole request, head and body, behind a 4-byte length) are
 * added to the turn's group. At the end of the turn the group goes to the
 * log with one pwrite and one fdatasync, and only then are the appends'
 * answers sent: a group commit with the loop's turn as the group, and an
 * answer never leaves before its bytes are on the disk. No JSON, no index,
 * no check: a POST's answer is `{"lastRevision":N}` with N one above its
 * Stele-Expected-Revision header (-1 for no_stream or none), which is what
 * bench_http checks for one event per append. With one client, a turn is
 * epoll_wait, recv, pwrite, fdatasync, send: nothing between the request
 * and the disk but the kernel. The log is a pre-zeroed 64 MiB file (as
 * Stele's segments are pre-zeroed), written from offset 0 and wrapping.
 * With --handoff the loop does not write: at the end of its turn it hands
 * the turn's records and answers to a writer thread (mutex and condition
 * variable) and goes back to epoll at once; the writer takes everything
 * handed over since its last group, writes and fdatasyncs it and sends
 * the answers itself. That is the shape of Stele's server (an event loop
 * and a writer thread answering plain HTTP appends) with none of its
 * work: the hand-off's cost at 1 x 1, and the loop reading on while the
 * disk syncs at 256 x 1.
 *
 * The group commit (group). T threads each append B records of --bytes
 * bytes per call and wait for them to be durable: under a mutex the
 * caller copies its records into the pending buffer, notes the number of
 * the group they will be in, signals the writer if it sleeps (a condition
 * variable) and sleeps on a futex word holding the number of the last
 * durable group. One writer thread takes the whole pending buffer (a swap
 * under the mutex), writes it with one pwrite, fdatasyncs, stores the
 * group's number and wakes every sleeper with one FUTEX_WAKE. The records
 * are copied once and written once; nothing else is done with them.
 *
 * Every result is one line of key=value pairs. These are floors in the
 * sense of the simplest competent implementation doing none of a store's
 * work, not a proof that nothing can do better; each design choice above
 * is what Stele's own path could at best become.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOG_SIZE (64u << 20)
#define MAX_CONNS 4096
#define CONN_BUF 65536

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_s(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The p-quantile (nearest rank) of n samples in ns, in µs; sorts v. */
static double pct_us(uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    size_t k = (size_t)(p * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)v[k - 1] / 1e3;
}

static double median(double *v, int n)
{
    double t[64];
    int m = n < 64 ? n : 64;
    memcpy(t, v, (size_t)m * sizeof *t);
    for (int i = 1; i < m; i++)
        for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    return m ? (m % 2 ? t[m / 2] : (t[m / 2 - 1] + t[m / 2]) / 2) : 0;
}

/* ------------------------------------------------------------ options */

typedef struct fopts {
    const char *dir;
    int port, nosync, ready_fd, rounds, threads, batch, spin_us, handoff;
    double secs;
    long bytes, writes, events, syncs;
} fopts;

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_floor disk  --dir D [--bytes B] [--writes N]\n"
            "       bench_floor serve --dir D [--port P] [--nosync] [--spin-us N] [--handoff]\n"
            "                         [--ready-fd FD]\n"
            "       bench_floor wire1 --dir D [--secs S] [--rounds R] [--bytes B]\n"
            "       bench_floor group --dir D --threads T --batch B [--events N] [--rounds R]\n"
            "                         [--bytes B] [--syncs K]\n"
            "(the header of bench/bench_floor.c says what each measures)\n");
    exit(2);
}

static long num(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < 0) {
        fprintf(stderr, "bench_floor: %s: not a number: %s\n", flag, v);
        exit(2);
    }
    return x;
}

static void parse(int argc, char **argv, fopts *o)
{
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--nosync") || !strcmp(f, "--handoff")) {
            *(f[2] == 'n' ? &o->nosync : &o->handoff) = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(f, "--dir"))
            o->dir = v;
        else if (!strcmp(f, "--port"))
            o->port = (int)num(f, v);
        else if (!strcmp(f, "--spin-us"))
            o->spin_us = (int)num(f, v);
        else if (!strcmp(f, "--ready-fd"))
            o->ready_fd = (int)num(f, v);
        else if (!strcmp(f, "--secs"))
            o->secs = atof(v);
        else if (!strcmp(f, "--rounds"))
            o->rounds = (int)num(f, v);
        else if (!strcmp(f, "--threads"))
            o->threads = (int)num(f, v);
        else if (!strcmp(f, "--batch"))
            o->batch = (int)num(f, v);
        else if (!strcmp(f, "--bytes"))
            o->bytes = num(f, v);
        else if (!strcmp(f, "--writes"))
            o->writes = num(f, v);
        else if (!strcmp(f, "--events"))
            o->events = num(f, v);
        else if (!strcmp(f, "--syncs"))
            o->syncs = num(f, v);
        else
            usage();
    }
    if (!o->dir)
        usage();
    if (o->rounds < 1 || o->rounds > 64 || o->threads < 1 || o->batch < 1 || o->secs <= 0) {
        fprintf(stderr, "bench_floor: rounds 1..64, threads and batch >= 1, secs > 0\n");
        exit(2);
    }
}

/* ------------------------------------------------------------ the log */

/* A pre-zeroed file of LOG_SIZE bytes in `dir` (written in 1 MiB writes
 * and fsynced, as Stele makes its segments); an open descriptor. */
static int log_open(const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die(path);
    static char zeros[1 << 20];
    for (uint32_t off = 0; off < LOG_SIZE; off += sizeof zeros)
        if (pwrite(fd, zeros, sizeof zeros, off) != (ssize_t)sizeof zeros)
            die("bench_floor: pre-zero");
    if (fsync(fd) != 0)
        die("bench_floor: fsync");
    unlink(path); /* the descriptor keeps it until the end */
    return fd;
}

/* Write `n` bytes at *off (wrapping to 0 at the end of the file), then
 * fdatasync unless nosync. */
static void log_write(int fd, uint64_t *off, const void *p, size_t n, int nosync)
{
    if (*off + n > LOG_SIZE)
        *off = 0;
    if (pwrite(fd, p, n, (off_t)*off) != (ssize_t)n)
        die("bench_floor: pwrite");
    *off += n;
    if (!nosync && fdatasync(fd) != 0)
        die("bench_floor: fdatasync");
}

/* ------------------------------------------------------------ disk */

/* `n` writes of `bytes` + fdatasync on a fresh pre-zeroed log: writes/s
 * and p50/p99 in µs. */
static double disk_rate(const char *dir, long bytes, long n, double *p50, double *p99)
{
    int fd = log_open(dir, "floor-disk.dat");
    char *buf = malloc((size_t)bytes);
    uint64_t *lat = malloc((size_t)n * sizeof *lat);
    if (!buf || !lat)
        die("malloc");
    memset(buf, 'd', (size_t)bytes);
    uint64_t off = 0, t0 = now_ns();
    for (long i = 0; i < n; i++) {
        uint64_t a = now_ns();
        buf[0] = (char)i;
        log_write(fd, &off, buf, (size_t)bytes, 0);
        lat[i] = now_ns() - a;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    *p50 = pct_us(lat, (size_t)n, 0.50);
    *p99 = pct_us(lat, (size_t)n, 0.99);
    close(fd);
    free(buf);
    free(lat);
    return (double)n / secs;
}

static void cmd_disk(const fopts *o)
{
    double p50, p99;
    double r = disk_rate(o->dir, o->bytes, o->writes, &p50, &p99);
    printf("floor disk bytes=%ld writes=%ld rate=%.0f p50_us=%.1f p99_us=%.1f\n", o->bytes,
           o->writes, r, p50, p99);
}

/* ------------------------------------------------------------ serve */

typedef struct fconn {
    int fd;
    size_t in_len, out_len, out_off;
    int deferred; /* answers wait for this turn's fdatasync */
    int inflight, closing; /* --handoff: answers the writer owes (under its mutex) */
    char in[CONN_BUF];
    char out[CONN_BUF];
} fconn;

static volatile sig_atomic_t g_stop;
static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* Send what is left of c's answers; 0, or -1 when the connection failed. */
static int conn_flush(int ep, fconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        }
        if (k <= 0)
            return -1;
        c->out_off += (size_t)k;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

/* --handoff: the writer thread's state (serve_loop, handoff_writer). */
typedef struct fanswer {
    fconn *c;
    int len;
    char b[232];
} fanswer;

typedef struct fhandoff {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *recs, *wrecs; /* the next group's records; the one being written */
    size_t rlen, rcap;
    fanswer *ans, *wans;
    int nans, acap, stop;
    int logfd, nosync;
    uint64_t off, groups;
} fhandoff;

static fhandoff *g_ho; /* NULL: one thread */

static void conn_close(int ep, fconn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (g_ho) {
        pthread_mutex_lock(&g_ho->mu);
        if (c->inflight) { /* the writer closes it after its answers */
            c->closing = 1;
            pthread_mutex_unlock(&g_ho->mu);
            return;
        }
        pthread_mutex_unlock(&g_ho->mu);
    }
    close(c->fd);
    free(c);
}

/* The writer thread of --handoff: takes the loop's published group,
 * writes and fdatasyncs it, then sends its answers itself (as Stele's
 * writer answers plain HTTP appends). One request in flight per
 * connection is assumed (bench_http's and wrk's way), so the loop's own
 * answers (no-ops) never interleave with these. */
static void *handoff_writer(void *arg)
{
    fhandoff *h = arg;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        while (!h->rlen && !h->stop)
            pthread_cond_wait(&h->cv, &h->mu);
        if (!h->rlen) {
            pthread_mutex_unlock(&h->mu);
            return NULL;
        }
        char *r = h->recs;
        h->recs = h->wrecs;
        h->wrecs = r;
        fanswer *a = h->ans;
        h->ans = h->wans;
        h->wans = a;
        size_t len = h->rlen;
        int na = h->nans;
        h->rlen = 0;
        h->nans = 0;
        pthread_mutex_unlock(&h->mu);
        log_write(h->logfd, &h->off, h->wrecs, len, h->nosync);
        h->groups++;
        for (int i = 0; i < na; i++) {
            fanswer *x = &h->wans[i];
            ssize_t k = send(x->c->fd, x->b, (size_t)x->len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k >= 0 && k != x->len) {
                fprintf(stderr, "bench_floor: a partial answer (a full socket buffer)\n");
                exit(1);
            }
        }
        pthread_mutex_lock(&h->mu);
        for (int i = 0; i < na; i++) {
            fconn *c = h->wans[i].c;
            if (--c->inflight == 0 && c->closing) {
                close(c->fd);
                free(c);
            }
        }
        pthread_mutex_unlock(&h->mu);
    }
}

/* --handoff: publish the loop's turn (its records and the answers in the
 * deferred connections' buffers) to the writer. */
static void handoff_publish(fhandoff *h, const char *grp, size_t glen, fconn **pend, int npend)
{
    pthread_mutex_lock(&h->mu);
    if (h->rlen + glen > h->rcap || h->nans + npend > h->acap) {
        fprintf(stderr, "bench_floor: the writer's group overflows its buffer\n");
        exit(1);
    }
    memcpy(h->recs + h->rlen, grp, glen);
    h->rlen += glen;
    for (int i = 0; i < npend; i++) {
        fconn *c = pend[i];
        fanswer *x = &h->ans[h->nans++];
        if (c->out_len > sizeof x->b) {
            fprintf(stderr, "bench_floor: --handoff: one request in flight per connection\n");
            exit(1);
        }
        x->c = c;
        x->len = (int)c->out_len;
        memcpy(x->b, c->out, c->out_len);
        c->out_len = c->out_off = 0;
        c->deferred = 0;
        c->inflight++;
    }
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* A header's value as a number (case-insensitive name), or `dflt`. */
static long long head_num(const char *h, size_t n, const char *name, long long dflt)
{
    size_t nl = strlen(name);
    for (const char *p = h; p && p < h + n; p = memchr(p, '\n', (size_t)(h + n - p))) {
        if (*p == '\n')
            p++;
        if ((size_t)(h + n - p) > nl && !strncasecmp(p, name, nl)) {
            p += nl;
            while (*p == ' ')
                p++;
            if (*p < '0' || *p > '9')
                return dflt;
            return strtoll(p, NULL, 10);
        }
    }
    return dflt;
}

static void out_add(fconn *c, const char *s, size_t n)
{
    if (c->out_len + n > sizeof c->out) {
        fprintf(stderr, "bench_floor: answers overflow a connection's buffer\n");
        exit(1);
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

/* Parse c's complete requests: no-ops answered into c->out, appends added
 * to the group (length-prefixed) with their answers into c->out. Returns
 * the appends; -1 on a malformed request. */
static long conn_parse(fconn *c, char *grp, size_t *glen, size_t gcap)
{
    static const char noop[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               "Content-Length: 18\r\n\r\n{\"status\":\"live\"}\n";
    long appends = 0;
    size_t at = 0;
    for (;;) {
        char *h = c->in + at, *end = memmem(h, c->in_len - at, "\r\n\r\n", 4);
        if (!end)
            break;
        size_t hlen = (size_t)(end - h) + 4;
        long long clen = head_num(h, hlen, "Content-Length:", 0);
        if (clen < 0 || hlen + (size_t)clen > sizeof c->in)
            return -1;
        if (at + hlen + (size_t)clen > c->in_len)
            break;
        size_t rlen = hlen + (size_t)clen;
        if (!strncmp(h, "POST ", 5)) {
            if (*glen + 4 + rlen > gcap) {
                fprintf(stderr, "bench_floor: a turn's group overflows its buffer\n");
                exit(1);
            }
            uint32_t len = (uint32_t)rlen;
            memcpy(grp + *glen, &len, 4);
            memcpy(grp + *glen + 4, h, rlen);
            *glen += 4 + rlen;
            long long exp = head_num(h, hlen, "Stele-Expected-Revision:", -1);
            char body[64], head[160];
            int bn = snprintf(body, sizeof body, "{\"lastRevision\":%lld}\n", exp + 1);
            int hn = snprintf(head, sizeof head,
                              "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                              "Content-Length: %d\r\n\r\n",
                              bn);
            out_add(c, head, (size_t)hn);
            out_add(c, body, (size_t)bn);
            c->deferred = 1;
            appends++;
        } else {
            out_add(c, noop, sizeof noop - 1);
        }
        at += rlen;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return appends;
}

typedef struct serve_stats {
    uint64_t appends, groups;
    double cpu_s;
} serve_stats;

/* The server's loop until g_stop; `lfd` listens. */
static serve_stats serve_loop(int lfd, int logfd, int nosync, int spin_us, int handoff)
{
    fhandoff h = {0};
    pthread_t wt;
    if (handoff) {
        pthread_mutex_init(&h.mu, NULL);
        pthread_cond_init(&h.cv, NULL);
        h.rcap = 64u << 20;
        h.acap = 2 * MAX_CONNS;
        h.recs = malloc(h.rcap);
        h.wrecs = malloc(h.rcap);
        h.ans = calloc((size_t)h.acap, sizeof *h.ans);
        h.wans = calloc((size_t)h.acap, sizeof *h.wans);
        if (!h.recs || !h.wrecs || !h.ans || !h.wans)
            die("malloc");
        h.logfd = logfd;
        h.nosync = nosync;
        g_ho = &h;
        if (pthread_create(&wt, NULL, handoff_writer, &h) != 0)
            die("pthread_create");
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0)
        die("epoll_ctl");
    size_t gcap = 64u << 20, glen = 0;
    char *grp = malloc(gcap);
    fconn **pend = calloc(MAX_CONNS, sizeof *pend);
    if (!grp || !pend)
        die("malloc");
    serve_stats st = {0, 0, 0};
    uint64_t off = 0;
    double c0 = cpu_s(RUSAGE_SELF);
    struct epoll_event evs[512];
    uint64_t spin_until = 0;
    while (!g_stop) {
        int n = epoll_wait(ep, evs, 512, spin_until ? 0 : 200);
        if (n == 0 && spin_until) {
            if (now_ns() >= spin_until)
                spin_until = 0;
            continue;
        }
        if (spin_us > 0 && n > 0)
            spin_until = now_ns() + (uint64_t)spin_us * 1000u;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait");
        int npend = 0;
        glen = 0;
        for (int i = 0; i < n; i++) {
            fconn *c = evs[i].data.ptr;
            if (!c) { /* the listener */
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    fconn *nc = calloc(1, sizeof *nc);
                    if (!nc)
                        die("calloc");
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
                        die("epoll_ctl");
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                if (conn_flush(ep, c) != 0) {
                    conn_close(ep, c);
                    continue;
                }
                if (c->out_len == 0) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            ssize_t k = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
            if (k < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (k > 0)
                c->in_len += (size_t)k;
            long a = k > 0 ? conn_parse(c, grp, &glen, gcap) : -1;
            if (a < 0) {
                conn_close(ep, c);
                continue;
            }
            st.appends += (uint64_t)a;
            if (c->deferred) {
                if (npend < MAX_CONNS)
                    pend[npend++] = c;
            } else if (c->out_len && conn_flush(ep, c) != 0) {
                conn_close(ep, c);
            }
        }
        if (handoff) {
            if (glen)
                handoff_publish(&h, grp, glen, pend, npend);
            continue;
        }
        if (glen) {
            log_write(logfd, &off, grp, glen, nosync);
            st.groups++;
        }
        for (int i = 0; i < npend; i++) {
            pend[i]->deferred = 0;
            if (conn_flush(ep, pend[i]) != 0)
                conn_close(ep, pend[i]);
        }
    }
    if (handoff) {
        pthread_mutex_lock(&h.mu);
        h.stop = 1;
        pthread_cond_signal(&h.cv);
        pthread_mutex_unlock(&h.mu);
        pthread_join(wt, NULL);
        st.groups = h.groups;
        g_ho = NULL;
        free(h.recs);
        free(h.wrecs);
        free(h.ans);
        free(h.wans);
    }
    st.cpu_s = cpu_s(RUSAGE_SELF) - c0;
    free(grp);
    free(pend);
    close(ep);
    return st;
}

/* A listening socket on 127.0.0.1:port (0: any free port); the port. */
static int listen_on(int port, int *lfd)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0)
        die("bind/listen");
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *lfd = fd;
    return ntohs(sa.sin_port);
}

static void stop_signals(void)
{
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static void cmd_serve(const fopts *o)
{
    int lfd, port = listen_on(o->port, &lfd);
    int logfd = log_open(o->dir, "floor-serve.log");
    stop_signals();
    if (o->ready_fd > 0) {
        dprintf(o->ready_fd, "ready %d\n", port);
        close(o->ready_fd);
    } else {
        printf("ready %d\n", port);
        fflush(stdout);
    }
    serve_stats st = serve_loop(lfd, logfd, o->nosync, o->spin_us, o->handoff);
    printf("floor serve sync=%d appends=%llu groups=%llu appends_per_group=%.1f "
           "cpu_us_per_append=%.2f\n",
           !o->nosync, (unsigned long long)st.appends, (unsigned long long)st.groups,
           st.groups ? (double)st.appends / (double)st.groups : 0.0,
           st.appends ? st.cpu_s * 1e6 / (double)st.appends : 0.0);
    close(logfd);
    close(lfd);
}

/* ------------------------------------------------------------ wire1 */

/* The request one client sends: bench_http's shape (an append of one
 * event with an exact expected revision) with a body of `body` bytes. */
static size_t make_request(char *buf, size_t cap, long long exp, const char *body, size_t blen)
{
    char e[32];
    if (exp < 0)
        snprintf(e, sizeof e, "no_stream");
    else
        snprintf(e, sizeof e, "%lld", exp);
    int n = snprintf(buf, cap,
                     "POST /streams/floor-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nStele-Expected-Revision: %s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     e, blen);
    if (n < 0 || (size_t)n + blen > cap)
        die("request too large");
    memcpy(buf + n, body, blen);
    return (size_t)n + blen;
}

typedef struct wire_result {
    double rate, p50, p99, client_cpu_us, server_cpu_us, per_group;
    size_t req_bytes;
} wire_result;

/* One server in a child process (sync or not), one blocking client here
 * for `secs` (after a warm-up of a fifth of it, at least 0.5 s). */
static wire_result wire_run(const fopts *o, int nosync, int spin_us, const char *body,
                            size_t blen)
{
    int lfd, port = listen_on(0, &lfd);
    int sp[2];
    if (pipe(sp) != 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(sp[0]);
        int logfd = log_open(o->dir, "floor-wire1.log");
        stop_signals();
        serve_stats st = serve_loop(lfd, logfd, nosync, spin_us, 0);
        if (write(sp[1], &st, sizeof st) != (ssize_t)sizeof st)
            _exit(1);
        _exit(0);
    }
    close(sp[1]);
    close(lfd);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* The child pre-zeroes its log before its loop; connect queues until
     * then, and the warm-up below covers it. */
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[4096], ans[4096];
    double warm = o->secs / 5 < 0.5 ? 0.5 : o->secs / 5;
    size_t cap = 1 << 20, nlat = 0;
    uint64_t *lat = malloc(cap * sizeof *lat);
    if (!lat)
        die("malloc");
    long long exp = -1;
    wire_result r = {0};
    /* The first request waits for the child's pre-zeroing: not timed. */
    uint64_t t_end = 0, t_win = 0;
    double cpu0 = 0;
    for (int first = 1;; first = 0) {
        size_t rl = make_request(req, sizeof req, exp, body, blen);
        r.req_bytes = rl;
        uint64_t a = now_ns();
        if (send(fd, req, rl, MSG_NOSIGNAL) != (ssize_t)rl)
            die("send");
        size_t got = 0;
        char *e = NULL;
        long long clen = -1;
        for (;;) {
            ssize_t k = recv(fd, ans + got, sizeof ans - 1 - got, 0);
            if (k <= 0)
                die("recv");
            got += (size_t)k;
            ans[got] = 0;
            if (!e && (e = strstr(ans, "\r\n\r\n")) != NULL)
                clen = head_num(ans, (size_t)(e - ans) + 4, "Content-Length:", 0);
            if (e && got >= (size_t)(e - ans) + 4 + (size_t)clen)
                break;
        }
        uint64_t b = now_ns();
        if (strncmp(ans, "HTTP/1.1 201", 12) != 0) {
            fprintf(stderr, "bench_floor: unexpected answer: %.60s\n", ans);
            exit(1);
        }
        exp++;
        if (first) {
            t_win = b + (uint64_t)(warm * 1e9);
            t_end = t_win + (uint64_t)(o->secs * 1e9);
            continue;
        }
        if (a >= t_win) {
            if (nlat == 0)
                cpu0 = cpu_s(RUSAGE_SELF);
            if (nlat == cap) {
                cap *= 2;
                lat = realloc(lat, cap * sizeof *lat);
                if (!lat)
                    die("realloc");
            }
            lat[nlat++] = b - a;
        }
        if (b >= t_end)
            break;
    }
    double cpu1 = cpu_s(RUSAGE_SELF);
    close(fd);
    kill(pid, SIGTERM);
    serve_stats st = {0, 0, 0};
    if (read(sp[0], &st, sizeof st) != (ssize_t)sizeof st)
        fprintf(stderr, "bench_floor: no stats from the server\n");
    close(sp[0]);
    waitpid(pid, NULL, 0);
    double secs = (double)(now_ns() - t_win) / 1e9;
    r.rate = (double)nlat / (o->secs < secs ? o->secs : secs);
    r.client_cpu_us = nlat ? (cpu1 - cpu0) * 1e6 / (double)nlat : 0;
    r.server_cpu_us = st.appends ? st.cpu_s * 1e6 / (double)st.appends : 0;
    r.per_group = st.groups ? (double)st.appends / (double)st.groups : 0;
    r.p50 = pct_us(lat, nlat, 0.50);
    r.p99 = pct_us(lat, nlat, 0.99);
    free(lat);
    return r;
}

static void cmd_wire1(const fopts *o)
{
    size_t blen = (size_t)o->bytes;
    char *body = malloc(blen + 1);
    if (!body)
        die("malloc");
    /* JSON-looking filler of the body's size (nothing parses it). */
    int hn = snprintf(body, blen + 1, "[{\"type\":\"OrderPlaced\",\"data\":{\"note\":\"");
    if (hn < 0 || blen < (size_t)hn + 4) {
        fprintf(stderr, "bench_floor: --bytes at least %d\n", hn + 4);
        exit(2);
    }
    memset(body + hn, 'x', blen - (size_t)hn);
    memcpy(body + blen - 4, "\"}}]", 4);
    char tmp[4096];
    size_t rec = 4 + make_request(tmp, sizeof tmp, 0, body, blen);
    /* Parts: the disk, the server with fdatasync, without, and (with
     * --spin-us) with fdatasync and the loop polling before it sleeps. */
    int parts = o->spin_us > 0 ? 4 : 3;
    double v[4][64], p50[4][64], ratio[64], spin_ratio[64];
    for (int r = 0; r < o->rounds; r++) {
        wire_result w[4] = {{0}};
        double d99 = 0;
        for (int k = 0; k < parts; k++) {
            int part = (k + r) % parts;
            if (part == 0) {
                /* The record the server writes: a request behind 4 bytes. */
                long n = o->writes ? o->writes : (long)(o->secs * 3000);
                w[0].rate = disk_rate(o->dir, (long)rec, n, &w[0].p50, &d99);
            } else {
                w[part] = wire_run(o, part == 2, part == 3 ? o->spin_us : 0, body, blen);
            }
        }
        for (int k = 0; k < parts; k++) {
            v[k][r] = w[k].rate;
            p50[k][r] = w[k].p50;
        }
        ratio[r] = w[1].rate / w[0].rate;
        spin_ratio[r] = parts > 3 ? w[3].rate / w[0].rate : 0;
        printf("floor wire1 round=%d request_bytes=%zu disk_rate=%.0f disk_p50_us=%.1f "
               "disk_p99_us=%.1f sync_rate=%.0f sync_p50_us=%.1f sync_p99_us=%.1f "
               "sync_server_cpu_us=%.1f sync_client_cpu_us=%.1f nosync_rate=%.0f "
               "nosync_p50_us=%.1f nosync_p99_us=%.1f nosync_server_cpu_us=%.1f "
               "nosync_client_cpu_us=%.1f sync_per_disk=%.3f",
               r + 1, rec - 4, w[0].rate, w[0].p50, d99, w[1].rate, w[1].p50, w[1].p99,
               w[1].server_cpu_us, w[1].client_cpu_us, w[2].rate, w[2].p50, w[2].p99,
               w[2].server_cpu_us, w[2].client_cpu_us, ratio[r]);
        if (parts > 3)
            printf(" spin_us=%d spin_rate=%.0f spin_p50_us=%.1f spin_p99_us=%.1f "
                   "spin_server_cpu_us=%.1f spin_per_disk=%.3f",
                   o->spin_us, w[3].rate, w[3].p50, w[3].p99, w[3].server_cpu_us, spin_ratio[r]);
        printf("\n");
        fflush(stdout);
    }
    int R = o->rounds;
    printf("floor wire1 median rounds=%d secs=%.1f request_bytes=%zu disk_rate=%.0f "
           "disk_p50_us=%.1f sync_rate=%.0f sync_p50_us=%.1f nosync_rate=%.0f nosync_p50_us=%.1f "
           "sync_per_disk=%.3f",
           R, o->secs, rec - 4, median(v[0], R), median(p50[0], R), median(v[1], R),
           median(p50[1], R), median(v[2], R), median(p50[2], R), median(ratio, R));
    if (parts > 3)
        printf(" spin_rate=%.0f spin_p50_us=%.1f spin_per_disk=%.3f", median(v[3], R),
               median(p50[3], R), median(spin_ratio, R));
    printf("\n");
    free(body);
}
/* ------------------------------------------------------------ group */

typedef struct gshared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *pend, *spare;
    size_t pend_len, cap;
    uint32_t taken;            /* groups the writer has taken (under mu) */
    _Atomic uint32_t done;     /* groups durable: the appenders' futex word */
    int writer_idle, stopping; /* under mu */
    int logfd;
    uint64_t off, groups, appends_taken, pend_appends;
} gshared;

typedef struct gworker {
    gshared *g;
    const char *rec;
    size_t rec_len;
    int batch;
    long calls;
    uint64_t *lat;
    pthread_barrier_t *start;
} gworker;

static void *group_writer(void *arg)
{
    gshared *g = arg;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        while (!g->pend_len && !g->stopping) {
            g->writer_idle = 1;
            pthread_cond_wait(&g->cv, &g->mu);
            g->writer_idle = 0;
        }
        if (!g->pend_len) {
            pthread_mutex_unlock(&g->mu);
            return NULL;
        }
        char *buf = g->pend;
        size_t len = g->pend_len;
        g->pend = g->spare;
        g->spare = buf;
        g->pend_len = 0;
        g->appends_taken += g->pend_appends;
        g->pend_appends = 0;
        uint32_t id = ++g->taken;
        pthread_mutex_unlock(&g->mu);
        log_write(g->logfd, &g->off, buf, len, 0);
        g->groups++;
        atomic_store_explicit(&g->done, id, memory_order_release);
        syscall(SYS_futex, &g->done, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
}

static void *group_appender(void *arg)
{
    gworker *w = arg;
    gshared *g = w->g;
    size_t n = w->rec_len * (size_t)w->batch;
    pthread_barrier_wait(w->start);
    for (long k = 0; k < w->calls; k++) {
        uint64_t t0 = now_ns();
        pthread_mutex_lock(&g->mu);
        if (g->pend_len + n > g->cap) {
            fprintf(stderr, "bench_floor: the pending buffer is full\n");
            exit(1);
        }
        for (int i = 0; i < w->batch; i++)
            memcpy(g->pend + g->pend_len + (size_t)i * w->rec_len, w->rec, w->rec_len);
        g->pend_len += n;
        g->pend_appends++;
        uint32_t mine = g->taken + 1;
        if (g->writer_idle)
            pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
        uint32_t d;
        while ((int32_t)((d = atomic_load_explicit(&g->done, memory_order_acquire)) - mine) < 0)
            syscall(SYS_futex, &g->done, FUTEX_WAIT_PRIVATE, d, NULL, NULL, 0);
        w->lat[k] = now_ns() - t0;
    }
    return NULL;
}

typedef struct group_result {
    double rate, p50, p99, per_group, cpu_us;
} group_result;

static group_result group_run(const fopts *o, long calls_per_thread)
{
    int T = o->threads;
    gshared g = {0};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    g.cap = (size_t)T * (size_t)o->batch * (size_t)o->bytes * 2 + 4096;
    g.pend = malloc(g.cap);
    g.spare = malloc(g.cap);
    g.logfd = log_open(o->dir, "floor-group.log");
    char *rec = malloc((size_t)o->bytes);
    gworker *w = calloc((size_t)T, sizeof *w);
    pthread_t *th = calloc((size_t)T, sizeof *th);
    uint64_t *lat = calloc((size_t)T * (size_t)calls_per_thread, sizeof *lat);
    if (!g.pend || !g.spare || !rec || !w || !th || !lat)
        die("malloc");
    memset(rec, 'r', (size_t)o->bytes);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)T + 1);
    pthread_t wt;
    if (pthread_create(&wt, NULL, group_writer, &g) != 0)
        die("pthread_create");
    for (int t = 0; t < T; t++) {
        w[t] = (gworker){&g, rec, (size_t)o->bytes, o->batch, calls_per_thread,
                         lat + (size_t)t * (size_t)calls_per_thread, &start};
        if (pthread_create(&th[t], NULL, group_appender, &w[t]) != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&start);
    double c0 = cpu_s(RUSAGE_SELF);
    uint64_t t0 = now_ns();
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    double secs = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_s(RUSAGE_SELF) - c0;
    pthread_mutex_lock(&g.mu);
    g.stopping = 1;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(wt, NULL);
    size_t calls = (size_t)T * (size_t)calls_per_thread;
    double events = (double)calls * o->batch;
    group_result r = {events / secs, pct_us(lat, calls, 0.50), pct_us(lat, calls, 0.99),
                      g.groups ? (double)g.appends_taken / (double)g.groups : 0,
                      cpu * 1e6 / events};
    close(g.logfd);
    pthread_barrier_destroy(&start);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    free(g.pend);
    free(g.spare);
    free(rec);
    free(w);
    free(th);
    free(lat);
    return r;
}

static void cmd_group(const fopts *o)
{
    int T = o->threads;
    long events = o->events ? o->events : (long)T * o->batch * 2000;
    long calls = events / ((long)T * o->batch);
    if (calls < 1)
        calls = 1;
    long warm = calls / 10 > 0 ? calls / 10 : 1;
    size_t gbytes = (size_t)T * (size_t)o->batch * (size_t)o->bytes;
    double rate[64], sync_us[64], ceil[64];
    for (int r = 0; r < o->rounds; r++) {
        group_run(o, warm);
        group_result g = group_run(o, calls);
        /* The disk's bound: K pwrite + fdatasync of one full group. */
        double p50 = 0, p99 = 0;
        long k = o->syncs ? o->syncs : 50;
        double sync_rate = gbytes <= LOG_SIZE / 2 ? disk_rate(o->dir, (long)gbytes, k, &p50, &p99)
                                                  : 0;
        rate[r] = g.rate;
        sync_us[r] = sync_rate > 0 ? 1e6 / sync_rate : 0;
        ceil[r] = sync_rate * (double)T * o->batch;
        printf("floor group round=%d threads=%d batch=%d bytes=%ld events=%ld events_per_s=%.0f "
               "p50_us=%.1f p99_us=%.1f appends_per_group=%.1f cpu_us_per_event=%.3f "
               "group_bytes=%zu group_sync_us=%.1f group_sync_p50_us=%.1f "
               "sync_only_events_per_s=%.0f of_sync_only=%.3f\n",
               r + 1, T, o->batch, o->bytes, calls * T * o->batch, g.rate, g.p50, g.p99,
               g.per_group, g.cpu_us, gbytes, sync_us[r], p50, ceil[r],
               ceil[r] > 0 ? g.rate / ceil[r] : 0.0);
        fflush(stdout);
    }
    int R = o->rounds;
    printf("floor group median threads=%d batch=%d rounds=%d events_per_s=%.0f "
           "group_sync_us=%.1f sync_only_events_per_s=%.0f\n",
           T, o->batch, R, median(rate, R), median(sync_us, R), median(ceil, R));
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    fopts o = {.rounds = 3, .threads = 1, .batch = 1, .secs = 5, .bytes = 4096,
               .writes = 2000, .syncs = 50, .ready_fd = -1};
    const char *cmd = argv[1];
    if (!strcmp(cmd, "wire1") || !strcmp(cmd, "group"))
        o.bytes = 300, o.writes = 0;
    parse(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(cmd, "disk"))
        cmd_disk(&o);
    else if (!strcmp(cmd, "serve"))
        cmd_serve(&o);
    else if (!strcmp(cmd, "wire1"))
        cmd_wire1(&o);
    else if (!strcmp(cmd, "group"))
        cmd_group(&o);
    else
        usage();
    return 0;
}
