/*
 * bench_subs.c - benchmarks of subscriptions over Server-Sent Events
 * (issue 4), against a running `stele serve`:
 *
 *   bench_subs build --dir D --events N [--batch K] [--data-bytes B]
 *       Fill a new store in D with N events through libstele directly, K
 *       events per append (default 10,000) over 100 streams, B bytes of
 *       JSON data each (default 100). For the catch-up benchmark.
 *
 *   bench_subs catchup --port P --events N [--server-pid PID]
 *       One subscriber: GET /subscribe/all?from=0, read until the event with
 *       id N-1, checking that the ids are exactly 0..N-1 in order. Reports
 *       events/s and MB/s from the request to the last event.
 *
 *   bench_subs latency --port P --rate R [--clients C] [--duration S]
 *                      [--warmup S] [--data-bytes B] [--server-pid PID]
 *       One live subscriber (from=end) and C keep-alive connections that
 *       append 1 event each, paced by a schedule of R appends/s (a request
 *       goes out when it is due, on an idle connection). For every append:
 *       send -> response (the append's acknowledgement, i.e. its fsync) and
 *       send -> the event arriving at the subscriber, matched by position.
 *       Reports p50/p99/p99.9 of both and of (event received - ack), which
 *       is negative when the event reached the subscriber before the
 *       response reached the appender.
 *
 *   bench_subs fanout --port P --subs N [--clients C] [--batch K]
 *                     [--duration S] [--warmup S] [--server-pid PID]
 *       N live subscribers (from=end), C connections appending K events
 *       each as fast as they are acknowledged (closed loop). Reports append
 *       throughput and latency; then checks that every subscriber received
 *       every event (up to the last position) and reports the events they
 *       received per second. The subscribers run in a child process (its
 *       CPU is subscriber_cpu), so parsing their streams never delays the
 *       appenders' next request. The line ends with the window's CPU per
 *       append by who spends it: the server's loop thread, its writer and
 *       other threads (/proc/PID/task), the appending connections, the
 *       subscribers' user time (parsing) and system time (recv), and the
 *       subscribers' CPU per event received.
 *
 *   bench_subs parse-check
 *       The subscribers' SSE scanner against streams of known shape fed in
 *       pieces of every size; exits 1 if a clean stream is miscounted or a
 *       gap, duplicate or swap goes unseen (the test bench_subs_parse).
 *
 * One thread, one epoll loop for every connection, so the load generator
 * costs the server as little CPU as this small machine allows; its own CPU
 * (client_cpu) and the server's (server_cpu, with --server-pid) are in the
 * result line. The SSE parser only looks at line starts ("id: ", "event:",
 * blank lines): it checks order and counts, it does not decode JSON. A
 * whole event of the usual shape ("id: N", one data line, a blank line) is
 * taken in one step (the id's digits, one memchr over the data line), with
 * no copy and no allocation; anything else, or an event cut by a read, goes
 * through the byte-wise scanner, which checks the same things.
 * Nothing here judges a number.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stele.h"

#include "measure.h"

/* ------------------------------------------------------------ options */

enum { M_BUILD, M_CATCHUP, M_LATENCY, M_FANOUT, M_PARSE_CHECK };

static struct {
    int mode;
    const char *host;
    int port;
    const char *dir;
    unsigned long long events;
    int batch, data_bytes, clients, subs;
    double rate, duration, warmup;
    int server_pid;
} opt = {.host = "127.0.0.1", .port = 2113, .batch = 0, .data_bytes = 100, .clients = 0,
         .duration = 10, .warmup = 2};

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_subs build --dir D --events N [--batch K] [--data-bytes B]\n"
            "       bench_subs catchup --port P --events N [--server-pid PID]\n"
            "       bench_subs latency --port P --rate R [--clients C] [--duration S] [--warmup S]\n"
            "                          [--data-bytes B] [--server-pid PID]\n"
            "       bench_subs fanout --port P --subs N [--clients C] [--batch K] [--duration S]\n"
            "                         [--warmup S] [--data-bytes B] [--server-pid PID]\n"
            "       bench_subs parse-check\n");
    exit(2);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* ------------------------------------------------------------ time, cpu */

/* The CPU time of process `pid` in seconds: user + system, or only one of
 * them (which: 0 both, 1 user, 2 system). */
static double proc_cpu_part_s(int pid, int which)
{
    if (pid <= 0)
        return 0;
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    unsigned long long v = which == 1 ? ut : which == 2 ? st : ut + st;
    return (double)v / (double)sysconf(_SC_CLK_TCK);
}

static double proc_cpu_s(int pid)
{
    return proc_cpu_part_s(pid, 0);
}

/* The CPU seconds (user + system) of the server's threads by role: [0] its
 * main thread (the event loop: HTTP, SSE pumps and their sends), [1] the
 * store's writer ("stele-writer"), [2] every other thread (the syncer, the
 * preallocator ...). From /proc/PID/task/TID/stat and .../comm. */
static void proc_thread_cpu_s(int pid, double out[3])
{
    out[0] = out[1] = out[2] = 0;
    if (pid <= 0)
        return;
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        int tid = atoi(de->d_name);
        if (tid <= 0)
            continue;
        char comm[32] = "";
        snprintf(path, sizeof path, "/proc/%d/task/%d/comm", pid, tid);
        FILE *f = fopen(path, "r");
        if (f) {
            if (!fgets(comm, sizeof comm, f))
                comm[0] = 0;
            fclose(f);
        }
        snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, tid);
        if (!(f = fopen(path, "r")))
            continue;
        char line[1024];
        size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = 0;
        char *p = strrchr(line, ')');
        unsigned long long ut, st;
        if (!p ||
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
            continue;
        int role = tid == pid ? 0 : !strncmp(comm, "stele-writer", 12) ? 1 : 2;
        out[role] += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    closedir(d);
}

typedef struct cpu_mark {
    uint64_t t;
    double self, server, server_sys;
} cpu_mark;

static cpu_mark cpu_now(void)
{
    cpu_mark m = {bench_now_ns(), bench_self_cpu_s(), proc_cpu_s(opt.server_pid),
                  proc_cpu_part_s(opt.server_pid, 2)};
    return m;
}

/* "client_cpu=..% server_cpu=..%" over [a, b]. */
static void cpu_fmt(char *out, size_t len, cpu_mark a, cpu_mark b)
{
    double s = (double)(b.t - a.t) / 1e9;
    if (opt.server_pid > 0)
        snprintf(out, len, "client_cpu=%.0f%% server_cpu=%.0f%% server_sys=%.0f%%",
                 100 * (b.self - a.self) / s, 100 * (b.server - a.server) / s,
                 100 * (b.server_sys - a.server_sys) / s);
    else
        snprintf(out, len, "client_cpu=%.0f%% server_cpu=n/a", 100 * (b.self - a.self) / s);
}

/* ------------------------------------------------------------ latencies */

typedef struct lats {
    int64_t *v;
    size_t n, cap;
} lats;

static void lat_add(lats *l, int64_t ns)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 65536;
        if (!(l->v = realloc(l->v, l->cap * sizeof *l->v)))
            die("realloc");
    }
    l->v[l->n++] = ns;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sort first. The p-quantile (nearest rank) in milliseconds. */
static double q_ms(const lats *l, double p)
{
    if (!l->n)
        return 0;
    size_t k = (size_t)(p * (double)l->n + 0.999999);
    k = k < 1 ? 1 : k > l->n ? l->n : k;
    return (double)l->v[k - 1] / 1e6;
}

/* ------------------------------------------------------------ payload */

/* B bytes of JSON: an order-like object padded with a note. */
static char *make_data(int bytes)
{
    static const char head[] = "{\"orderId\":\"ord-000000001\",\"total\":12345,\"note\":\"";
    int pad = bytes - (int)(sizeof head - 1) - 2;
    if (pad < 0) {
        fprintf(stderr, "bench_subs: --data-bytes must be at least %d\n", (int)sizeof head + 1);
        exit(2);
    }
    char *d = malloc((size_t)bytes + 1);
    if (!d)
        die("malloc");
    memcpy(d, head, sizeof head - 1);
    memset(d + sizeof head - 1, 'x', (size_t)pad);
    memcpy(d + bytes - 2, "\"}", 3);
    return d;
}

/* ------------------------------------------------------------ build */

static int run_build(void)
{
    if (!opt.dir || !opt.events)
        usage();
    int batch = opt.batch ? opt.batch : 10000;
    stele_db *db;
    if (stele_open(opt.dir, NULL, &db)) {
        fprintf(stderr, "bench_subs: open %s: %s\n", opt.dir, stele_errmsg());
        return 1;
    }
    char *data = make_data(opt.data_bytes);
    stele_event_in *evs = calloc((size_t)batch, sizeof *evs);
    if (!evs)
        die("calloc");
    for (int i = 0; i < batch; i++) {
        evs[i].type = "BenchEvent";
        evs[i].data = data;
        evs[i].data_len = strlen(data);
        evs[i].flags = STELE_EVENT_JSON;
    }
    uint64_t t0 = bench_now_ns();
    unsigned long long done = 0;
    for (unsigned long long k = 0; done < opt.events; k++) {
        size_t n = opt.events - done < (unsigned long long)batch ? (size_t)(opt.events - done)
                                                                 : (size_t)batch;
        char stream[32];
        snprintf(stream, sizeof stream, "bench-%llu", k % 100);
        if (stele_append(db, stream, STELE_ANY, evs, n, NULL)) {
            fprintf(stderr, "bench_subs: append: %s\n", stele_errmsg());
            return 1;
        }
        done += n;
    }
    double s = (double)(bench_now_ns() - t0) / 1e9;
    stele_close(db);
    printf("subs build events=%llu batch=%d data_bytes=%d seconds=%.1f events_per_s=%.0f\n",
           done, batch, opt.data_bytes, s, (double)done / s);
    free(evs);
    free(data);
    return 0;
}

/* ------------------------------------------------------------ HTTP responses */

/* De-chunking of a response body (Transfer-Encoding: chunked). */
enum { CH_SIZE, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_DONE };

typedef struct dechunk {
    int state;
    uint64_t left;
} dechunk;

/* SSE scanning: only line starts matter ("id: ", "event:", blank lines). */
typedef struct sse_scan {
    char head[8];
    int headlen;
    int skipping;   /* in the rest of a line we do not need */
    int in_id;      /* reading the digits of an id line */
    uint64_t idv;
    int msg_event, msg_id;
    uint64_t msg_idv;
} sse_scan;

typedef struct conn conn;
typedef void (*on_event_fn)(conn *c, uint64_t id);
typedef void (*on_control_fn)(conn *c);

struct conn {
    int fd;
    int kind; /* K_SUB or K_APPEND */
    int idx;
    /* output */
    char req[1024];
    size_t req_len, req_sent;
    const char *body;
    size_t body_len, body_sent;
    int busy;
    uint64_t t_sent;
    /* input */
    char *in;
    size_t in_len, in_cap;
    int have_head, status, chunked;
    long long clen;
    dechunk dc;
    sse_scan sc;
    /* subscriber */
    uint64_t events, next_id, bytes;
    int next_known; /* next_id is known: from an event or a control event */
    int caught_up;
    int bad_order;
    int peer_hup; /* the server closed its side (EPOLLRDHUP) */
};

enum { K_SUB, K_APPEND };

static int g_ep;
static uint64_t g_sub_recvs; /* recv calls on subscriptions that returned data */
static on_event_fn g_on_event;
static on_control_fn g_on_control;

static int connect_to(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bench_subs: bad host %s\n", opt.host);
        exit(2);
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static conn *conn_new(int kind, int idx)
{
    conn *c = calloc(1, sizeof *c);
    if (!c)
        die("calloc");
    c->fd = connect_to();
    c->kind = kind;
    c->idx = idx;
    c->in_cap = 1 << 20;
    if (!(c->in = malloc(c->in_cap)))
        die("malloc");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev))
        die("epoll_ctl");
    return c;
}

static void conn_write(conn *c)
{
    while (c->req_sent < c->req_len || c->body_sent < c->body_len) {
        ssize_t n;
        if (c->req_sent < c->req_len)
            n = send(c->fd, c->req + c->req_sent, c->req_len - c->req_sent, MSG_NOSIGNAL);
        else
            n = send(c->fd, c->body + c->body_sent, c->body_len - c->body_sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            die("send");
        }
        if (c->req_sent < c->req_len)
            c->req_sent += (size_t)n;
        else
            c->body_sent += (size_t)n;
    }
}

static void sse_message_end(conn *c)
{
    sse_scan *s = &c->sc;
    if (s->msg_id && !s->msg_event) {
        /* Each event's id is the one after the last id seen: no gap, no
         * duplicate, in order. */
        if (s->msg_idv != c->next_id && c->next_known)
            c->bad_order++;
        c->next_id = s->msg_idv + 1;
        c->next_known = 1;
        c->events++;
        g_on_event(c, s->msg_idv);
    } else if (s->msg_event) {
        /* A control event's id is the resume point; one without an id
         * before any event or id (caught-up on an empty store) says
         * nothing was covered: the first event must be 0 (next_id's
         * initial value). */
        if (s->msg_id)
            c->next_id = s->msg_idv + 1;
        c->next_known = 1;
        c->caught_up = 1;
        if (g_on_control)
            g_on_control(c);
    }
    s->msg_event = s->msg_id = 0;
}

/* The common message whole at p[0..n): "id: " decimal digits, "\n",
 * "data: " and one line, "\n\n". Its length, its id in *id; 0 when the
 * bytes are anything else or cut short (the byte-wise scanner takes them). */
static size_t sse_whole_event(const char *p, size_t n, uint64_t *id)
{
    if (n < 13 || memcmp(p, "id: ", 4))
        return 0;
    size_t i = 4;
    uint64_t v = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9' && i < 24)
        v = v * 10 + (uint64_t)(p[i++] - '0');
    if (i == 4 || n - i < 9 || p[i] != '\n' || memcmp(p + i + 1, "data: ", 6))
        return 0;
    i += 7;
    const char *nl = memchr(p + i, '\n', n - i);
    if (!nl || (size_t)(nl - p) + 1 >= n || nl[1] != '\n')
        return 0;
    *id = v;
    return (size_t)(nl - p) + 2;
}

/* Scan de-chunked body bytes. */
static void sse_feed(conn *c, const char *p, size_t n)
{
    sse_scan *s = &c->sc;
    size_t i = 0;
    c->bytes += n;
    while (i < n) {
        /* Between messages, take whole events in one step: a look at the
         * line starts, one memchr over the data line. */
        if (!s->headlen && !s->skipping && !s->in_id && !s->msg_id && !s->msg_event) {
            uint64_t id;
            size_t k = sse_whole_event(p + i, n - i, &id);
            if (k) {
                s->msg_id = 1;
                s->msg_idv = id;
                sse_message_end(c);
                i += k;
                continue;
            }
        }
        if (s->skipping) {
            const char *nl = memchr(p + i, '\n', n - i);
            if (!nl)
                return;
            i = (size_t)(nl - p) + 1;
            s->skipping = 0;
            s->headlen = 0;
            continue;
        }
        char ch = p[i++];
        if (s->in_id) {
            if (ch >= '0' && ch <= '9') {
                s->idv = s->idv * 10 + (uint64_t)(ch - '0');
                continue;
            }
            s->in_id = 0;
            s->msg_id = 1;
            s->msg_idv = s->idv;
            s->headlen = 0;
            if (ch != '\n')
                s->skipping = 1;
            continue;
        }
        if (ch == '\n') {
            if (s->headlen == 0)
                sse_message_end(c);
            s->headlen = 0;
            continue;
        }
        s->head[s->headlen++] = ch;
        if (s->head[0] == ':') {
            s->skipping = 1; /* a comment */
        } else if (s->headlen == 4 && !memcmp(s->head, "id: ", 4)) {
            s->in_id = 1;
            s->idv = 0;
        } else if (s->headlen == 6) {
            if (!memcmp(s->head, "event:", 6))
                s->msg_event = 1;
            s->skipping = 1;
        }
    }
}

/* Feed raw body bytes through the de-chunker to the SSE scanner. */
static void body_feed(conn *c, const char *p, size_t n)
{
    dechunk *d = &c->dc;
    size_t i = 0;
    while (i < n && d->state != CH_DONE) {
        switch (d->state) {
        case CH_SIZE: {
            char ch = p[i++];
            if (ch == '\r')
                d->state = CH_SIZE_LF;
            else if (ch >= '0' && ch <= '9')
                d->left = d->left * 16 + (uint64_t)(ch - '0');
            else if ((ch | 32) >= 'a' && (ch | 32) <= 'f')
                d->left = d->left * 16 + (uint64_t)((ch | 32) - 'a' + 10);
            break;
        }
        case CH_SIZE_LF:
            i++;
            d->state = d->left ? CH_DATA : CH_DONE;
            break;
        case CH_DATA: {
            size_t k = n - i < d->left ? n - i : (size_t)d->left;
            sse_feed(c, p + i, k);
            i += k;
            d->left -= k;
            if (!d->left)
                d->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            i++;
            d->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            i++;
            d->state = CH_SIZE;
            d->left = 0;
            break;
        }
    }
}

static void on_append_response(conn *c, const char *body, size_t len);

/* Read what arrived; parse responses. */
static void conn_read(conn *c)
{
    for (;;) {
        if (c->kind == K_SUB && c->have_head) {
            static char buf[1 << 18];
            ssize_t n = recv(c->fd, buf, sizeof buf, 0);
            if (n > 0) {
                g_sub_recvs++;
                body_feed(c, buf, (size_t)n);
                /* A short read drained the socket: edge-triggered epoll
                 * reports the next bytes that arrive, so no recv that
                 * would only say EAGAIN; once the server has closed, read
                 * on to the end, which ends the run). */
                if ((size_t)n < sizeof buf && !c->peer_hup)
                    return;
                continue;
            }
            if (n == 0) {
                fprintf(stderr, "bench_subs: the server closed a subscription\n");
                exit(1);
            }
            if (errno == EAGAIN || errno == EINTR)
                return;
            die("recv");
        }
        if (c->in_len == c->in_cap)
            die("response too large");
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n == 0) {
            fprintf(stderr, "bench_subs: the server closed a connection\n");
            exit(1);
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            die("recv");
        }
        c->in_len += (size_t)n;
        for (;;) {
            char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (!end)
                break;
            size_t hlen = (size_t)(end - c->in) + 4;
            c->status = atoi(c->in + 9);
            c->clen = -1;
            for (char *p = c->in; p < end; p++) {
                if (!strncasecmp(p, "\r\ncontent-length:", 17))
                    c->clen = atoll(p + 17);
                if (!strncasecmp(p, "\r\ntransfer-encoding: chunked", 28))
                    c->chunked = 1;
            }
            if (c->kind == K_SUB) {
                if (c->status != 200 || !c->chunked) {
                    fprintf(stderr, "bench_subs: subscription refused: %.*s\n", (int)c->in_len,
                            c->in);
                    exit(1);
                }
                c->have_head = 1;
                body_feed(c, c->in + hlen, c->in_len - hlen);
                c->in_len = 0;
                break;
            }
            if (c->clen < 0 || c->in_len < hlen + (size_t)c->clen)
                break;
            on_append_response(c, c->in + hlen, (size_t)c->clen);
            size_t used = hlen + (size_t)c->clen;
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
        }
        if (c->kind == K_SUB && c->have_head)
            continue;
    }
}

static conn *subscribe(int idx, const char *from)
{
    conn *c = conn_new(K_SUB, idx);
    c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                  "GET /subscribe/all?from=%s HTTP/1.1\r\nHost: %s\r\n"
                                  "Accept: text/event-stream\r\n\r\n",
                                  from, opt.host);
    conn_write(c);
    return c;
}

/* Handle epoll events for up to timeout_ms. */
static void poll_once(int timeout_ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(g_ep, evs, 256, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    /* Subscribers first, then appenders: an event and an acknowledgement
     * that arrived together are timed in the order they arrived, not in
     * the order epoll happened to list them (one thread times both). */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if ((c->kind == K_SUB) != (pass == 0))
                continue;
            if (evs[i].events & (EPOLLRDHUP | EPOLLHUP))
                c->peer_hup = 1;
            if (evs[i].events & EPOLLOUT)
                conn_write(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                conn_read(c);
        }
}

/* GET a small JSON document: the next position of $all. */
static uint64_t store_head(void)
{
    int fd = connect_to();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    char req[256], resp[8192];
    int n = snprintf(req, sizeof req,
                     "GET /all?direction=backwards&limit=1 HTTP/1.1\r\nHost: %s\r\n"
                     "Connection: close\r\n\r\n",
                     opt.host);
    if (send(fd, req, (size_t)n, 0) != n)
        die("send");
    size_t got = 0;
    ssize_t r;
    while ((r = recv(fd, resp + got, sizeof resp - 1 - got, 0)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = 0;
    char *p = strstr(resp, "\"position\":");
    return p ? strtoull(p + 11, NULL, 10) + 1 : 0;
}

/* ------------------------------------------------------------ catchup */

static uint64_t g_target;
static int g_done;

static void catchup_event(conn *c, uint64_t id)
{
    (void)c;
    if (id + 1 >= g_target)
        g_done = 1;
}

static int run_catchup(void)
{
    if (!opt.events)
        usage();
    g_target = opt.events;
    g_on_event = catchup_event;
    cpu_mark a = cpu_now();
    conn *s = subscribe(0, "0");
    uint64_t last_report = a.t;
    while (!g_done) {
        poll_once(1000);
        uint64_t t = bench_now_ns();
        if (t - last_report > 5000000000ull) {
            fprintf(stderr, "bench_subs: %llu events\n", (unsigned long long)s->events);
            last_report = t;
        }
    }
    cpu_mark b = cpu_now();
    double secs = (double)(b.t - a.t) / 1e9;
    char cpu[128];
    cpu_fmt(cpu, sizeof cpu, a, b);
    /* Events per CPU-second of the server: what one core would do if it
     * had the server to itself (the machine is shared). */
    double srv = b.server - a.server;
    char per_cpu[64] = "n/a";
    if (opt.server_pid > 0 && srv > 0)
        snprintf(per_cpu, sizeof per_cpu, "%.0f", (double)s->events / srv);
    printf("subs catchup events=%llu seconds=%.2f events_per_s=%.0f mb_per_s=%.0f "
           "events_per_server_cpu_s=%s out_of_order=%d %s\n",
           (unsigned long long)s->events, secs, (double)s->events / secs,
           (double)s->bytes / secs / 1e6, per_cpu, s->bad_order + (s->events != opt.events), cpu);
    return s->bad_order || s->events != opt.events;
}

/* ------------------------------------------------------------ appends */

static char *g_body;
static size_t g_body_len;
static conn **g_app;
static int g_napp;
static uint64_t g_base;     /* first position of this run's appends */
static uint64_t g_cap;      /* slots in the arrays below */
static uint64_t *g_sent, *g_ack, *g_recv; /* by position - g_base */
static uint64_t g_acked_events, g_acked_req, g_errors, g_max_pos;
static int g_have_max;
static uint64_t g_win_start, g_win_end;
static lats g_lat_ack;

static void send_append(conn *c)
{
    c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                  "POST /streams/bench-sub-%d HTTP/1.1\r\nHost: %s\r\n"
                                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                                  c->idx, opt.host, g_body_len);
    c->req_sent = 0;
    c->body = g_body;
    c->body_len = g_body_len;
    c->body_sent = 0;
    c->busy = 1;
    c->t_sent = bench_now_ns();
    conn_write(c);
}

static void on_append_response(conn *c, const char *body, size_t len)
{
    uint64_t t = bench_now_ns();
    c->busy = 0;
    if (c->status != 201 && c->status != 200) {
        if (g_errors++ < 5)
            fprintf(stderr, "bench_subs: append: HTTP %d %.*s\n", c->status, (int)len, body);
        return;
    }
    const char *p = memmem(body, len, "\"firstPosition\":", 16);
    const char *q = memmem(body, len, "\"lastPosition\":", 15);
    if (!p || !q) {
        g_errors++;
        return;
    }
    uint64_t first = strtoull(p + 16, NULL, 10), last = strtoull(q + 15, NULL, 10);
    if (!g_have_max || last > g_max_pos)
        g_max_pos = last;
    g_have_max = 1;
    if (c->t_sent >= g_win_start && c->t_sent < g_win_end) {
        g_acked_req++;
        g_acked_events += last - first + 1;
        lat_add(&g_lat_ack, (int64_t)(t - c->t_sent));
    }
    for (uint64_t pos = first; pos <= last; pos++) {
        if (pos < g_base || pos - g_base >= g_cap)
            continue;
        g_sent[pos - g_base] = c->t_sent;
        g_ack[pos - g_base] = t;
    }
}

static void open_appenders(int n)
{
    size_t len;
    char *data = make_data(opt.data_bytes);
    int k = opt.batch ? opt.batch : 1;
    static const char pre[] = "{\"type\":\"BenchEvent\",\"data\":";
    size_t one = sizeof pre - 1 + strlen(data) + 1;
    g_body = malloc(2 + (size_t)k * (one + 1));
    if (!g_body)
        die("malloc");
    len = 0;
    g_body[len++] = '[';
    for (int i = 0; i < k; i++) {
        if (i)
            g_body[len++] = ',';
        len += (size_t)sprintf(g_body + len, "%s%s}", pre, data);
    }
    g_body[len++] = ']';
    g_body_len = len;
    free(data);
    g_napp = n;
    g_app = calloc((size_t)n, sizeof *g_app);
    for (int i = 0; i < n; i++)
        g_app[i] = conn_new(K_APPEND, i);
}

/* ------------------------------------------------------------ latency */

static void latency_event(conn *c, uint64_t id)
{
    (void)c;
    if (id >= g_base && id - g_base < g_cap && !g_recv[id - g_base])
        g_recv[id - g_base] = bench_now_ns();
}

static int run_latency(void)
{
    uint64_t due;
    if (opt.rate <= 0)
        usage();
    int clients = opt.clients ? opt.clients : 64;
    g_on_event = latency_event;
    g_base = store_head();
    uint64_t total = (uint64_t)(opt.rate * (opt.warmup + opt.duration)) + 16;
    g_cap = total;
    g_sent = calloc(total, sizeof *g_sent);
    g_ack = calloc(total, sizeof *g_ack);
    g_recv = calloc(total, sizeof *g_recv);
    if (!g_sent || !g_ack || !g_recv)
        die("calloc");
    conn *s = subscribe(0, "end");
    while (!s->caught_up)
        poll_once(1000);
    open_appenders(clients);
    uint64_t t0 = bench_now_ns(), period = (uint64_t)(1e9 / opt.rate);
    g_win_start = t0 + (uint64_t)(opt.warmup * 1e9);
    g_win_end = g_win_start + (uint64_t)(opt.duration * 1e9);
    cpu_mark a = {0}, b = {0};
    int a_taken = 0;
    uint64_t sent = 0, late = 0;
    for (;;) {
        uint64_t t = bench_now_ns();
        if (!a_taken && t >= g_win_start) {
            a = cpu_now();
            a_taken = 1;
        }
        if (t >= g_win_end)
            break;
        /* Every append whose time has come goes out on an idle connection. */
        while (sent < total && t0 + sent * period <= t) {
            conn *c = NULL;
            for (int i = 0; i < g_napp && !c; i++)
                if (!g_app[(sent + (uint64_t)i) % (uint64_t)g_napp]->busy)
                    c = g_app[(sent + (uint64_t)i) % (uint64_t)g_napp];
            if (!c)
                break;
            if (t - (t0 + sent * period) > 2000000)
                late++; /* sent more than 2 ms after its time */
            send_append(c);
            sent++;
        }
        /* Sleep until the next append is due, 1 ms at least (epoll's
         * resolution): appends go out in small bursts, and this loop does
         * not spin on the CPUs the server needs. */
        due = t0 + sent * period;
        int64_t wait_ns = (int64_t)due - (int64_t)bench_now_ns();
        poll_once(wait_ns > 1000000 ? (int)(wait_ns / 1000000) : 1);
    }
    b = cpu_now();
    /* Drain: every append answered and every event received (5 s at most). */
    uint64_t stop = bench_now_ns() + 5000000000ull;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < g_napp; i++)
            busy |= g_app[i]->busy;
        if ((!busy && s->next_id > g_max_pos) || bench_now_ns() > stop)
            break;
        poll_once(10);
    }
    lats ack = {0}, ev = {0}, beyond = {0};
    uint64_t missing = 0, before_ack = 0;
    for (uint64_t i = 0; i < total; i++) {
        if (!g_sent[i] || g_sent[i] < g_win_start || g_sent[i] >= g_win_end)
            continue;
        lat_add(&ack, (int64_t)(g_ack[i] - g_sent[i]));
        if (!g_recv[i]) {
            missing++;
            continue;
        }
        lat_add(&ev, (int64_t)(g_recv[i] - g_sent[i]));
        lat_add(&beyond, (int64_t)g_recv[i] - (int64_t)g_ack[i]);
        before_ack += g_recv[i] < g_ack[i];
    }
    qsort(ack.v, ack.n, sizeof *ack.v, cmp_i64);
    qsort(ev.v, ev.n, sizeof *ev.v, cmp_i64);
    qsort(beyond.v, beyond.n, sizeof *beyond.v, cmp_i64);
    char cpu[128];
    cpu_fmt(cpu, sizeof cpu, a, b);
    printf("subs latency rate=%.0f achieved=%.0f clients=%d appends=%zu "
           "ack_p50_ms=%.3f ack_p99_ms=%.3f ack_p999_ms=%.3f "
           "event_p50_ms=%.3f event_p99_ms=%.3f event_p999_ms=%.3f "
           "event_minus_ack_p50_ms=%.3f event_minus_ack_p99_ms=%.3f event_minus_ack_p999_ms=%.3f "
           "before_ack=%.0f%% late_sends=%llu missing=%llu out_of_order=%d errors=%llu %s\n",
           opt.rate, (double)ack.n / opt.duration, clients, ack.n, q_ms(&ack, .5), q_ms(&ack, .99),
           q_ms(&ack, .999), q_ms(&ev, .5), q_ms(&ev, .99), q_ms(&ev, .999), q_ms(&beyond, .5),
           q_ms(&beyond, .99), q_ms(&beyond, .999),
           ev.n ? 100.0 * (double)before_ack / (double)ev.n : 0, (unsigned long long)late,
           (unsigned long long)missing, s->bad_order, (unsigned long long)g_errors, cpu);
    return missing || s->bad_order || g_errors;
}

/* ------------------------------------------------------------ fanout */

/* Subscriber 0 times each event it receives (the others only count and
 * check), for the delivery latency under the heavy stream. */
static void fanout_event(conn *c, uint64_t id)
{
    if (c->idx == 0 && id >= g_base && id - g_base < g_cap && !g_recv[id - g_base])
        g_recv[id - g_base] = bench_now_ns();
}

/* Positions timed per run in fanout (appends' send and acknowledgement,
 * subscriber 0's receipt): more than a run of 12 s makes on this machine. */
#define FAN_TIMED (4u << 20)

/* What the subscriber process reports to the appending one. */
typedef struct fan_result {
    int complete, bad;
    uint64_t window_events, window_bytes, window_recvs;
} fan_result;

/*
 * The subscribers, in their own process (so that parsing 100 event streams
 * never delays the appenders' next request): subscribe, say "R" on `out`,
 * take the measurement window [start, end) from `in`, count the events
 * received inside it, then take the last position appended from `in` and
 * wait until every subscriber has it (60 s at most); report a fan_result.
 */
static int fanout_subscribers(int in, int out)
{
    close(g_ep);
    if ((g_ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    conn **subs = calloc((size_t)opt.subs, sizeof *subs);
    for (int i = 0; i < opt.subs; i++)
        subs[i] = subscribe(i, "end");
    for (int i = 0; i < opt.subs; i++)
        while (!subs[i]->caught_up)
            poll_once(1000);
    if (write(out, "R", 1) != 1)
        die("write");
    uint64_t win[2];
    if (read(in, win, sizeof win) != (ssize_t)sizeof win)
        die("read window");
    fcntl(in, F_SETFL, fcntl(in, F_GETFL) | O_NONBLOCK);
    uint64_t e0 = 0, e1 = 0, b0 = 0, b1 = 0, r0 = 0, r1 = 0, target = 0, stop = 0;
    int have0 = 0, have1 = 0, have_target = 0;
    fan_result res = {0};
    for (;;) {
        poll_once(10);
        uint64_t t = bench_now_ns(), sum = 0, bytes = 0;
        for (int i = 0; i < opt.subs; i++) {
            sum += subs[i]->events;
            bytes += subs[i]->bytes;
        }
        if (!have0 && t >= win[0]) {
            e0 = sum;
            b0 = bytes;
            r0 = g_sub_recvs;
            have0 = 1;
        }
        if (!have1 && t >= win[1]) {
            e1 = sum;
            b1 = bytes;
            r1 = g_sub_recvs;
            have1 = 1;
        }
        if (!have_target && read(in, &target, sizeof target) == (ssize_t)sizeof target) {
            have_target = 1;
            stop = t + 60000000000ull;
        }
        if (!have_target)
            continue;
        res.complete = 0;
        for (int i = 0; i < opt.subs; i++)
            res.complete += subs[i]->next_id > target;
        if (res.complete == opt.subs || t > stop)
            break;
    }
    for (int i = 0; i < opt.subs; i++)
        res.bad += subs[i]->bad_order;
    res.window_events = e1 - e0;
    res.window_bytes = b1 - b0;
    res.window_recvs = r1 - r0;
    if (write(out, &res, sizeof res) != (ssize_t)sizeof res)
        die("write");
    /* Then subscriber 0's receipt times up to the target. */
    uint64_t n = target >= g_base ? target - g_base + 1 : 0;
    n = n < g_cap ? n : g_cap;
    if (write(out, &n, sizeof n) != (ssize_t)sizeof n)
        die("write");
    for (uint64_t done = 0; done < n;) {
        ssize_t w = write(out, (char *)g_recv + done * 8, (size_t)(n - done) * 8 > (1u << 20)
                                                              ? (1u << 20)
                                                              : (size_t)(n - done) * 8);
        if (w <= 0 || w % 8)
            die("write");
        done += (uint64_t)w / 8;
    }
    return 0;
}

static int run_fanout(void)
{
    int clients = opt.clients ? opt.clients : 64;
    g_on_event = fanout_event;
    g_cap = 0;
    if (opt.subs > 0) {
        g_base = store_head();
        g_cap = FAN_TIMED;
        g_sent = calloc(g_cap, sizeof *g_sent);
        g_ack = calloc(g_cap, sizeof *g_ack);
        g_recv = calloc(g_cap, sizeof *g_recv);
        if (!g_sent || !g_ack || !g_recv)
            die("calloc");
    }
    int p2c[2] = {-1, -1}, c2p[2] = {-1, -1};
    pid_t child = -1;
    if (opt.subs > 0) {
        if (pipe(p2c) || pipe(c2p))
            die("pipe");
        fflush(NULL);
        child = fork();
        if (child < 0)
            die("fork");
        if (child == 0) {
            close(p2c[1]);
            close(c2p[0]);
            _exit(fanout_subscribers(p2c[0], c2p[1]));
        }
        close(p2c[0]);
        close(c2p[1]);
        char r;
        if (read(c2p[0], &r, 1) != 1) {
            fprintf(stderr, "bench_subs: the subscribers did not start\n");
            return 1;
        }
    }
    open_appenders(clients);
    uint64_t t0 = bench_now_ns();
    g_win_start = t0 + (uint64_t)(opt.warmup * 1e9);
    g_win_end = g_win_start + (uint64_t)(opt.duration * 1e9);
    uint64_t win[2] = {g_win_start, g_win_end};
    if (child > 0 && write(p2c[1], win, sizeof win) != (ssize_t)sizeof win)
        die("write");
    cpu_mark a = {0}, b;
    double child_a = 0, child_b, cu_a = 0, cu_b, th_a[3] = {0}, th_b[3];
    int a_taken = 0;
    for (;;) {
        uint64_t t = bench_now_ns();
        if (!a_taken && t >= g_win_start) {
            a = cpu_now();
            child_a = proc_cpu_s(child);
            cu_a = proc_cpu_part_s(child, 1);
            proc_thread_cpu_s(opt.server_pid, th_a);
            a_taken = 1;
        }
        if (t >= g_win_end)
            break;
        for (int i = 0; i < g_napp; i++)
            if (!g_app[i]->busy)
                send_append(g_app[i]);
        poll_once(100);
    }
    b = cpu_now();
    child_b = proc_cpu_s(child);
    cu_b = proc_cpu_part_s(child, 1);
    proc_thread_cpu_s(opt.server_pid, th_b);
    /* Drain the appends; then every subscriber must reach the last one. */
    for (;;) {
        int busy = 0;
        for (int i = 0; i < g_napp; i++)
            busy |= g_app[i]->busy;
        if (!busy)
            break;
        poll_once(10);
    }
    fan_result res = {0};
    if (child > 0) {
        uint64_t n = 0;
        if (write(p2c[1], &g_max_pos, sizeof g_max_pos) != (ssize_t)sizeof g_max_pos ||
            read(c2p[0], &res, sizeof res) != (ssize_t)sizeof res ||
            read(c2p[0], &n, sizeof n) != (ssize_t)sizeof n || n > g_cap) {
            fprintf(stderr, "bench_subs: the subscriber process failed\n");
            return 1;
        }
        for (uint64_t got = 0; got < n * 8;) {
            ssize_t r = read(c2p[0], (char *)g_recv + got, (size_t)(n * 8 - got));
            if (r <= 0)
                die("read receipt times");
            got += (uint64_t)r;
        }
        waitpid(child, NULL, 0);
    }
    /* Delivery to subscriber 0 of the events appended in the window: from
     * the append's send, and minus its acknowledgement (negative: the
     * event arrived first). */
    lats ev = {0}, beyond = {0};
    for (uint64_t i = 0; i < g_cap; i++)
        if (g_recv[i] && g_sent[i] >= g_win_start && g_sent[i] < g_win_end) {
            lat_add(&ev, (int64_t)(g_recv[i] - g_sent[i]));
            lat_add(&beyond, (int64_t)g_recv[i] - (int64_t)g_ack[i]);
        }
    qsort(ev.v, ev.n, sizeof *ev.v, cmp_i64);
    qsort(beyond.v, beyond.n, sizeof *beyond.v, cmp_i64);
    qsort(g_lat_ack.v, g_lat_ack.n, sizeof *g_lat_ack.v, cmp_i64);
    char cpu[128];
    cpu_fmt(cpu, sizeof cpu, a, b);
    double s = (double)(b.t - a.t) / 1e9;
    /* The same window's CPU per append, by who spends it (microseconds):
     * the server's event loop, its writer and its other threads; the
     * appending connections (this process); the subscribers' process,
     * user (parsing) and system (recv, the copy out of the socket). And
     * the subscribers' CPU per event received (nanoseconds). */
    double ap = g_acked_req ? (double)g_acked_req * (b.t - a.t) / 1e9 / opt.duration : 0;
    double sub_ev = (double)res.window_events * (b.t - a.t) / 1e9 / opt.duration;
    double su = cu_b - cu_a, ss = (child_b - child_a) - su;
    char cost[512] = "";
    if (ap > 0)
        snprintf(cost, sizeof cost,
                 " server_us_per_append=%.2f loop_us_per_append=%.2f "
                 "writer_us_per_append=%.2f other_us_per_append=%.2f client_us_per_append=%.2f "
                 "sub_user_us_per_append=%.2f sub_sys_us_per_append=%.2f "
                 "sub_user_ns_per_event=%.1f sub_sys_ns_per_event=%.1f",
                 (b.server - a.server) * 1e6 / ap, (th_b[0] - th_a[0]) * 1e6 / ap,
                 (th_b[1] - th_a[1]) * 1e6 / ap, (th_b[2] - th_a[2]) * 1e6 / ap,
                 (b.self - a.self) * 1e6 / ap, su * 1e6 / ap, ss * 1e6 / ap,
                 sub_ev > 0 ? su * 1e9 / sub_ev : 0, sub_ev > 0 ? ss * 1e9 / sub_ev : 0);
    printf("subs fanout subs=%d clients=%d batch=%d events_per_s=%.0f appends_per_s=%.0f "
           "ack_p50_ms=%.3f ack_p99_ms=%.3f sub_events_per_s=%.0f subs_complete=%d/%d "
           "out_of_order=%d errors=%llu %s subscriber_cpu=%.0f%% sub_bytes_per_append=%.0f "
           "sub_recvs_per_append=%.2f event_p50_ms=%.3f event_p99_ms=%.3f "
           "event_minus_ack_p50_ms=%.3f event_minus_ack_p99_ms=%.3f%s\n",
           opt.subs, clients, opt.batch ? opt.batch : 1, (double)g_acked_events / opt.duration,
           (double)g_acked_req / opt.duration, q_ms(&g_lat_ack, .5), q_ms(&g_lat_ack, .99),
           (double)res.window_events / opt.duration, res.complete, opt.subs, res.bad,
           (unsigned long long)g_errors, cpu, 100 * (child_b - child_a) / s,
           g_acked_req ? (double)res.window_bytes / (double)g_acked_req : 0,
           g_acked_req ? (double)res.window_recvs / (double)g_acked_req : 0, q_ms(&ev, .5),
           q_ms(&ev, .99), q_ms(&beyond, .5), q_ms(&beyond, .99), cost);
    return res.bad || res.complete != opt.subs || g_errors;
}

/* ------------------------------------------------------------ parse-check */

/* The subscribers' scanner against streams of known shape, fed in pieces
 * of every size from 1 byte to the whole (so every message is cut at every
 * byte somewhere): a clean stream must count every event with no error; a
 * gap, a duplicate or a swap must each be caught. Exit 0 when all hold. */
static void check_noop(conn *c, uint64_t id)
{
    (void)c;
    (void)id;
}

/* A chunked SSE body: caught-up (with id `first - 1`, or none when
 * first == 0), then events with ids ids[0..n), a comment and a
 * checkpoint in between, a multi-line data event, chunks of `per` events. */
static size_t check_stream(char *out, size_t cap, uint64_t first, const uint64_t *ids, size_t n,
                           size_t per)
{
    char body[1 << 16];
    size_t len = 0, o = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == 0) {
            if (first)
                len += (size_t)snprintf(body + len, sizeof body - len,
                                        "event: caught-up\nid: %llu\ndata: {\"position\":%llu}\n\n",
                                        (unsigned long long)first - 1,
                                        (unsigned long long)first - 1);
            else
                len += (size_t)snprintf(body + len, sizeof body - len,
                                        "event: caught-up\ndata: {\"position\":null}\n\n");
        } else {
            uint64_t v = ids[i - 1];
            if (i % 7 == 3)
                len += (size_t)snprintf(body + len, sizeof body - len, ": keep-alive\n\n");
            if (i % 5 == 4)
                len += (size_t)snprintf(body + len, sizeof body - len,
                                        "id: %llu\ndata: {\"a\":1,\ndata: \"b\":2}\n\n",
                                        (unsigned long long)v);
            else
                len += (size_t)snprintf(body + len, sizeof body - len,
                                        "id: %llu\ndata: {\"id\":\"x\",\"stream\":\"s-1\","
                                        "\"data\":{\"note\":\"id: 9\\n\"}}\n\n",
                                        (unsigned long long)v);
        }
        if (i % per == 0 || i == n) {
            o += (size_t)snprintf(out + o, cap - o, "%zx\r\n", len);
            memcpy(out + o, body, len);
            o += len;
            memcpy(out + o, "\r\n", 2);
            o += 2;
            len = 0;
        }
    }
    return o;
}

static int run_parse_check(void)
{
    static char wire[1 << 20];
    uint64_t ids[200];
    int fails = 0;
    g_on_event = check_noop;
    /* kind 0: clean; 1: a gap; 2: a duplicate; 3: two swapped; 4: clean
     * from an empty store (the first event must be 0); 5: that, but the
     * first event is 1. */
    for (int kind = 0; kind < 6; kind++) {
        uint64_t first = kind >= 4 ? 0 : 1000;
        size_t n = 150;
        for (size_t i = 0; i < n; i++)
            ids[i] = first + i + (kind == 5);
        if (kind == 1)
            for (size_t i = 77; i < n; i++)
                ids[i]++;
        if (kind == 2)
            ids[77] = ids[76];
        if (kind == 3) {
            uint64_t t = ids[77];
            ids[77] = ids[78];
            ids[78] = t;
        }
        size_t len = check_stream(wire, sizeof wire, first, ids, n, 1 + (size_t)kind * 9);
        for (size_t piece = 1; piece <= len; piece += piece < 64 ? 1 : piece / 4) {
            conn c;
            memset(&c, 0, sizeof c);
            for (size_t at = 0; at < len; at += piece)
                body_feed(&c, wire + at, len - at < piece ? len - at : piece);
            int clean = kind == 0 || kind == 4;
            if (c.events != n || !c.caught_up || (clean ? c.bad_order != 0 : c.bad_order == 0) ||
                c.next_id != ids[n - 1] + 1) {
                fprintf(stderr,
                        "parse-check: kind %d in pieces of %zu: events=%llu bad_order=%d "
                        "next=%llu\n",
                        kind, piece, (unsigned long long)c.events, c.bad_order,
                        (unsigned long long)c.next_id);
                fails++;
                break;
            }
        }
    }
    printf("subs parse-check %s\n", fails ? "FAILED" : "ok");
    return fails != 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "build"))
        opt.mode = M_BUILD;
    else if (!strcmp(argv[1], "catchup"))
        opt.mode = M_CATCHUP;
    else if (!strcmp(argv[1], "latency"))
        opt.mode = M_LATENCY;
    else if (!strcmp(argv[1], "fanout"))
        opt.mode = M_FANOUT;
    else if (!strcmp(argv[1], "parse-check"))
        return run_parse_check();
    else
        usage();
    static const struct option lo[] = {
        {"host", 1, 0, 'h'},      {"port", 1, 0, 'p'},       {"dir", 1, 0, 'd'},
        {"events", 1, 0, 'n'},    {"batch", 1, 0, 'b'},      {"data-bytes", 1, 0, 'B'},
        {"clients", 1, 0, 'c'},   {"subs", 1, 0, 's'},       {"rate", 1, 0, 'r'},
        {"duration", 1, 0, 'D'},  {"warmup", 1, 0, 'w'},     {"server-pid", 1, 0, 'P'},
        {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'd': opt.dir = optarg; break;
        case 'n': opt.events = strtoull(optarg, NULL, 10); break;
        case 'b': opt.batch = atoi(optarg); break;
        case 'B': opt.data_bytes = atoi(optarg); break;
        case 'c': opt.clients = atoi(optarg); break;
        case 's': opt.subs = atoi(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'D': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'P': opt.server_pid = atoi(optarg); break;
        default: usage();
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (opt.mode == M_BUILD)
        return run_build();
    if ((g_ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    switch (opt.mode) {
    case M_CATCHUP: return run_catchup();
    case M_LATENCY: return run_latency();
    default: return run_fanout();
    }
}
