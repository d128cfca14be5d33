/*
 * net.c - the event loop: the listening socket, connections, timeouts,
 * append completions and graceful shutdown, all on one thread with epoll.
 *
 * Connections are edge-triggered: on readable we read until EAGAIN (or, on
 * a plain socket whose peer has not hung up, until a short read, which
 * means the socket is drained), then let http.c parse; on writable we flush `out`. A connection whose response
 * cannot be written (the client stopped reading) holds at most one part of
 * output: NDJSON reads and large JSON pages produce their next part only
 * once `out` drains. Pipelined requests are back-pressured the same way:
 * while CONN_OUT_HIGH_WATER bytes of responses wait to be sent, the next
 * request is not parsed and, once 64 KiB of requests are buffered, the
 * socket is not read (read_paused); conn_flush resumes both when `out`
 * drains. So a client that pipelines requests and never reads costs one
 * response part and its unread requests stay in the kernel and the client.
 * Memory for the whole server: limits.c (the budget, the allocator).
 *
 * The store's writer thread completes appends by pushing a completion on a
 * mutex-protected list and writing the eventfd; the loop drains the list.
 * A connection closed while its append is in flight is only marked dead and
 * freed when the completion arrives, so the callback never sees freed
 * memory.
 *
 * Timeouts (checked once a second): an idle keep-alive connection closes
 * after idle_timeout_ms, but one that never sent a byte closes at
 * request_timeout_ms; a request that started arriving (or blank lines
 * before one) must be complete
 * within request_timeout_ms (slowloris) or gets 408; a response that has not
 * drained for request_timeout_ms closes the connection. An event stream
 * (SSE, sse.c) never ends by itself, so it has its own rule: it is closed
 * when its output has not moved at all for sse_stall_timeout_ms (the
 * client stopped reading, or vanished without a FIN); a client that reads,
 * however slowly, keeps it. Keep-alive comments make a vanished client show
 * up as a send error or a stall.
 *
 * Out of descriptors: accept() failing with EMFILE/ENFILE pauses accepting
 * (the listener leaves epoll for a moment, see accept_pause) instead of
 * spinning on a listener that stays readable.
 *
 * Subscriptions: the store's watch eventfd wakes sse.c after commits (and
 * gRPC's subscriptions: commit_seen; the group watch wakes consumer groups
 * and gRPC too, so the writer signals two eventfds per commit, not four), and
 * after every batch of epoll events sse_run() pumps the feeds that are
 * ready; if some are left (its per-turn budget ran out) the next epoll_wait
 * does not sleep. Commits that sse.c holds back to batch them for many
 * live subscribers (cfg.sub_batch_us) bound the wait: sse_due().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "server_int.h"

#define READ_CHUNK (64u << 10)
#define STOP_GRACE_MS 10000

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void server_log(server *s, int level, const char *fmt, ...)
{
    if (level > s->cfg.log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    static const char *names[] = {"error", "info", "debug"};
    fprintf(stderr, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            names[level < 0 ? 0 : level > 2 ? 2 : level], line);
}

/* The store URI for messages, its password (user:PASSWORD@ or a password=
 * parameter) replaced by "***". */
static const char *redact_uri(const char *uri, char *out, size_t n)
{
    const char *auth = strstr(uri, "://"), *colon = NULL, *at = NULL;
    if (auth) {
        auth += 3;
        size_t alen = strcspn(auth, "/?#");
        at = memrchr(auth, '@', alen);
        colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    }
    size_t o = 0;
    for (const char *p = uri; *p && o + 1 < n;) {
        const char *put = NULL;
        if (colon && p == colon + 1) {
            put = "***";
            p = at;
        } else if (strncmp(p, "password=", 9) == 0 && p > uri && (p[-1] == '?' || p[-1] == '&')) {
            put = "password=***";
            p += 9 + strcspn(p + 9, "&#");
        }
        if (!put) {
            out[o++] = *p++;
            continue;
        }
        for (; *put && o + 1 < n; put++)
            out[o++] = *put;
    }
    out[o] = 0;
    return out;
}

void server_config_init(server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->data_dir = "./data";
    cfg->host = "127.0.0.1";
    cfg->port = 2113;
    cfg->max_connections = 10000;
    cfg->max_header_bytes = 16u << 10;
    cfg->max_body_bytes = 64u << 20;
    cfg->idle_timeout_ms = 60000;
    cfg->request_timeout_ms = 30000;
    cfg->log_level = 1;
    cfg->sse_keepalive_ms = 15000;
    cfg->sse_stall_timeout_ms = 60000;
    cfg->sub_behind_events = 10000;
    cfg->sub_behind_ms = 5000;
    cfg->sub_batch_us = 2000;
    cfg->sub_checkpoint_events = 1000;
    cfg->memory_budget = (size_t)1 << 30;
    cfg->max_streams_per_connection = 100;
    cfg->max_subscriptions = 10000;
    cfg->ready_fd = -1;
    cfg->archive_interval_ms = 60000;
    const char *early = getenv("STELE_EARLY_REPLY");
    cfg->no_early_reply = early && !strcmp(early, "0");
}

/* ------------------------------------------------------------ connections */

static void conn_free(conn *c)
{
    tls_conn_free(c); /* an SSL object conn_close left to an answer in flight */
    if (c->fd_held)
        close(c->held_fd);
    if (c->h2)
        h2_free(c);
    request_reset(&c->req);
    buf_free(&c->req.url);
    buf_free(&c->req.body);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

void conn_close(conn *c)
{
    if (c->fd < 0)
        return;
    server *s = c->srv;
    if (c->sse)
        sse_detach(c);
    if (c->gwait)
        groups_conn_gone(c);
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    tls_conn_close(c);
    /* The writer thread may still send an append's answer on it
     * (http_early.c): the number must not be reused before that. */
    if (c->early_inflight) {
        c->held_fd = c->fd;
        c->fd_held = 1;
    } else {
        close(c->fd);
    }
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    /* Never free here: the caller (or a later event of the same epoll batch)
     * may still hold the pointer. An append in flight frees it on arrival;
     * otherwise it is freed once the batch is handled. */
    c->dead = 1;
    if (!c->async_pending) {
        c->next = s->graveyard;
        s->graveyard = c;
    }
}

static void bury(server *s)
{
    while (s->graveyard) {
        conn *c = s->graveyard;
        s->graveyard = c->next;
        conn_free(c);
    }
}

size_t conn_unsent(const conn *c) { return c->out.len - c->out_off; }

static void conn_read(conn *c);
static void conn_process(conn *c);

/* Write what `out` holds; keeps EPOLLOUT armed only while output is stuck. */
void conn_flush(conn *c)
{
    /* TLS: the writer thread holds the SSL object until the answer's
     * completion (http_early.c); `out` is empty meanwhile. */
    if (c->ssl && c->early_inflight)
        return;
    while (c->fd >= 0 && c->out_off < c->out.len) {
        ssize_t n = conn_send(c, c->out.p + c->out_off, c->out.len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            c->stalled_since_ms = 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->stalled_since_ms)
                c->stalled_since_ms = now_ms();
            return; /* EPOLLOUT (edge-triggered, always armed) resumes us */
        }
        conn_close(c);
        return;
    }
    if (c->fd < 0)
        return;
    c->out.len = c->out_off = 0;
    if (c->h2) {
        h2_writable(c);
        return;
    }
    /* Give a big output buffer back once it drained (a large page). */
    if (c->out.cap > (1u << 20))
        buf_free(&c->out);
    if (c->state == CS_STREAMING) {
        route_stream_more(c);
        if (c->fd >= 0 && c->out.len)
            conn_flush(c);
    } else if (c->state == CS_READING && !c->in_process) {
        /* Requests that waited for this output to drain (pipelining). */
        if (c->read_paused)
            conn_read(c);
        else if (c->in_off < c->in.len)
            conn_process(c);
    } else if (c->state == CS_CLOSING) {
        conn_close(c);
    } else if (c->state == CS_SSE) {
        sse_drained(c);
    }
}

void conn_request_done(conn *c)
{
    if (c->fd < 0)
        return;
    c->state = c->keep_alive && !c->srv->stopping ? CS_READING : CS_CLOSING;
    request_reset(&c->req);
    c->request_start_ms = 0;
    /* Inside the parsing loop with more requests already buffered
     * (pipelining): their responses join this one in `out` and leave
     * together when the loop ends (http_conn_process), one write and, over
     * TLS, one record for the lot instead of one per response. */
    if (c->in_process && c->state == CS_READING && c->in_off < c->in.len &&
        conn_unsent(c) < CONN_OUT_HIGH_WATER)
        return;
    conn_flush(c);
    /* Pipelined requests already buffered: parsed now if the response
     * went out (else when it drains: conn_flush), unless the parsing loop
     * that routed this request is still running and goes on by itself. */
    if (c->fd >= 0 && c->state == CS_READING && !c->in_process &&
        conn_unsent(c) < CONN_OUT_HIGH_WATER) {
        if (c->read_paused)
            conn_read(c);
        else if (c->in_off < c->in.len)
            http_conn_process(c);
    }
}

/* Parse what arrived: HTTP/1.1 or, from a connection that opened with the
 * HTTP/2 preface, HTTP/2 (gRPC). */
static void conn_process(conn *c)
{
    if (!c->proto_known) {
        int r = h2_detect(c);
        if (r < 0)
            return; /* too few bytes to tell */
        c->proto_known = 1;
    }
    if (c->h2)
        h2_conn_process(c);
    else
        http_conn_process(c);
}

static void conn_read(conn *c)
{
    if (c->tls_state == 0 && tls_conn_start(c) <= 0)
        return; /* waiting for the first byte, or refused and closed */
    /* TLS with the SSL object lent to the writer (an append's answer in
     * flight, http_early.c): read when it is back (conn_read_resume). */
    if (c->ssl && c->early_inflight) {
        c->tls_read_deferred = 1;
        return;
    }
    c->tls_read_deferred = 0; /* this read goes on until the socket is drained */
    for (;;) {
        if (c->in_off == c->in.len)
            c->in.len = c->in_off = 0;
        else if (c->in_off > (1u << 20)) {
            memmove(c->in.p, c->in.p + c->in_off, c->in.len - c->in_off);
            c->in.len -= c->in_off;
            c->in_off = 0;
        }
        /* An event stream takes no more requests: drop what arrives. */
        if (c->state == CS_SSE)
            c->in.len = c->in_off = 0;
        /* Don't read without bound while a request is being served, nor
         * while the client does not read its responses: pipelined requests
         * wait in the socket (back-pressure) until `out` drains. */
        c->read_paused = 0;
        if (c->state != CS_READING && c->in.len - c->in_off > (4u << 20)) {
            c->read_paused = 1;
            return;
        }
        if (c->state == CS_READING && !c->h2 && conn_unsent(c) >= CONN_OUT_HIGH_WATER &&
            c->in.len - c->in_off >= READ_CHUNK) {
            c->read_paused = 1;
            return;
        }
        if (buf_reserve(&c->in, READ_CHUNK)) {
            conn_close(c);
            return;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t n = conn_recv(c, c->in.p + c->in.len, room);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->last_activity_ms = now_ms();
            c->got_bytes = 1;
            if (c->state == CS_READING) {
                conn_process(c); /* enforce limits as bytes arrive */
                if (c->fd < 0)
                    return;
                /* The request went to the writer with the SSL object
                 * (tls_early_lend noted whether to read again). */
                if (c->ssl && c->early_inflight)
                    return;
            }
            /* A short read drained the socket: bytes that arrive later
             * raise a new edge, so the recv that would only say EAGAIN is
             * saved (one recv per request). With TLS, only when the
             * library holds no bytes either (tls.c watches its socket
             * reads). Not once the peer hung up (its FIN may already sit
             * behind the bytes: read to EOF). */
            if (!c->peer_hup && conn_recv_drained(c, (size_t)n, room))
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* EOF or error: a half-sent request is dropped; in-flight work is
         * finished by its owner (completion or stream) and then closed. An
         * event stream's client is gone. */
        if (c->state == CS_READING || c->state == CS_SSE)
            conn_close(c);
        else
            c->keep_alive = 0;
        return;
    }
    if (c->state == CS_READING)
        conn_process(c);
}

void conn_read_resume(conn *c)
{
    if (c->fd < 0 || !c->tls_read_deferred || (c->ssl && c->early_inflight))
        return;
    c->tls_read_deferred = 0;
    conn_read(c);
}

/*
 * Out of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM):
 * the listening socket stays readable, so retrying at once would spin. Stop
 * watching it for ACCEPT_PAUSE_MS (the pending clients wait in the backlog;
 * existing connections are served meanwhile and free descriptors as they
 * close), then accept again. The condition is logged at most once per
 * ACCEPT_LOG_MS, with how many pauses happened since the previous line.
 */
#define ACCEPT_PAUSE_MS 200
#define ACCEPT_LOG_MS 10000

static void accept_pause(server *s, int err)
{
    int64_t now = now_ms();
    s->accept_paused_until = now + ACCEPT_PAUSE_MS;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
    s->accept_pauses++;
    if (!s->accept_logged_ms || now - s->accept_logged_ms >= ACCEPT_LOG_MS) {
        server_log(s, 0,
                   "msg=\"accept failed: %s; not accepting new connections for %d ms at a "
                   "time, existing connections are served\" connections=%zu pauses=%llu",
                   strerror(err), ACCEPT_PAUSE_MS, s->nconns,
                   (unsigned long long)s->accept_pauses);
        s->accept_logged_ms = now;
        s->accept_pauses = 0;
    }
}

/* Watch the listening socket again once a pause is over. */
static void accept_resume(server *s, int64_t now)
{
    if (!s->accept_paused_until || now < s->accept_paused_until || s->lfd < 0)
        return;
    s->accept_paused_until = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->lfd};
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev);
}

static void accept_all(server *s)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(s->lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                accept_pause(s, errno);
            return;
        }
        if (s->stopping || s->nconns >= s->cfg.max_connections) {
            static const char busy[] =
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                "Content-Length: 79\r\nConnection: close\r\n\r\n"
                "{\"error\":{\"code\":\"UNAVAILABLE\",\"message\":\"too many connections, or stopping\"}}\n";
            ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->srv = s;
        c->fd = fd;
        /* The peer's address, once (auth and audit name it per request). */
        if (peer.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, c->peer, sizeof c->peer);
        else if (peer.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, c->peer,
                      sizeof c->peer);
        c->last_activity_ms = now_ms();
        http_conn_init(c);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            conn_free(c);
            continue;
        }
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
        s->m.connections_total++;
    }
}

/* epoll_wait with a timeout in nanoseconds (held subscriber rounds are due
 * within a fraction of a millisecond): epoll_pwait2 (Linux 5.11), else,
 * where the kernel or valgrind lacks it (ENOSYS), epoll_wait with the
 * timeout rounded up to whole milliseconds. */
static int loop_wait(int epfd, struct epoll_event *evs, int max, const struct timespec *t)
{
    static int no_pwait2;
    if (!no_pwait2) {
        int n = epoll_pwait2(epfd, evs, max, t, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        no_pwait2 = 1;
    }
    return epoll_wait(epfd, evs, max, (int)((t->tv_nsec + 999999) / 1000000));
}

/* ------------------------------------------------------------ completions */

/* Queue a completion for the loop (any thread). The eventfd is written
 * once until the loop drains (cq_signalled: one wake-up per batch), and
 * for a quiet post only if the loop asked for it (cq_wake_wanted). */
static void cq_push(server *s, completion *cp, int quiet)
{
    pthread_mutex_lock(&s->cq_mu);
    if (s->cq_tail)
        s->cq_tail->next = cp;
    else
        s->cq_head = cp;
    s->cq_tail = cp;
    int wake = !s->cq_signalled && (!quiet || s->cq_wake_wanted);
    if (wake) {
        s->cq_signalled = 1;
        s->cq_wake_wanted = 0;
    }
    pthread_mutex_unlock(&s->cq_mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t w = write(s->evfd, &one, sizeof one);
        (void)w;
    }
}

void completion_post(server *s, completion *cp) { cq_push(s, cp, 0); }

void completion_post_quiet(server *s, completion *cp) { cq_push(s, cp, 1); }

/* A commit announced on the server's watch fd (read once here for SSE
 * and gRPC: the writer signals one eventfd, not one per consumer): 1 if
 * there was one. */
static int commit_seen(server *s)
{
    if (!sse_on_commit(s))
        return 0;
    grpc_on_commit(s);
    return 1;
}

/* evfd_ready: the eventfd is known readable (its epoll event), so it is
 * read even if cq_signalled was reset meanwhile (a post that signalled
 * after a drain took the list and cleared the flag); otherwise it is read
 * only when signalled, so a drain at the top of a turn costs no system
 * call. Returns whether it read the eventfd. */
static int drain_completions(server *s, int evfd_ready)
{
    /* The writer announces a commit on the watch fd right after
     * completing its appends: if an announcement is already unread, serve
     * the subscribers first, so an event does not wait behind the
     * acknowledgements of its commit (unless sse.c holds the commit to
     * batch it for many subscribers). */
    if (commit_seen(s))
        sse_run(s);
    pthread_mutex_lock(&s->cq_mu);
    int signalled = s->cq_signalled;
    pthread_mutex_unlock(&s->cq_mu);
    /* Read before taking the list: a post after the read finds the flag
     * still set (no write) and its completion is taken below; a post
     * after the list is taken finds it clear and writes again. */
    if (signalled || evfd_ready) {
        uint64_t v;
        ssize_t r = read(s->evfd, &v, sizeof v);
        (void)r;
    }
    pthread_mutex_lock(&s->cq_mu);
    completion *list = s->cq_head;
    s->cq_head = s->cq_tail = NULL;
    s->cq_signalled = 0;
    pthread_mutex_unlock(&s->cq_mu);
    conn *pump = NULL; /* HTTP/2 connections with answers to write */
    while (list) {
        completion *next = list->next;
        conn *c = list->c;
        int was_dead = c->dead; /* a close from here on buries it itself */
        c->async_pending--;
        if (list->op) {
            grpc_completion(c, list); /* frees its operation, dead or not */
            if (!c->dead && !c->pump_queued) {
                c->pump_queued = 1;
                c->async_pending++; /* held until pumped below */
                c->pump_next = pump;
                pump = c;
            }
        } else if (!was_dead && list->done)
            list->done(c, list);
        else if (!was_dead)
            route_append_done(c, list);
        if (list->extra_free)
            list->extra_free(list->extra);
        if (was_dead && !c->async_pending)
            conn_free(c); /* closed while appends were in flight */
        free(list);
        list = next;
    }
    /* One pump per connection: the answers of every call completed in this
     * batch (256 appends multiplexed on one connection) leave in one send. */
    while (pump) {
        conn *c = pump;
        pump = c->pump_next;
        c->pump_queued = 0;
        c->async_pending--;
        if (!c->dead)
            h2_writable(c);
        else if (!c->async_pending)
            conn_free(c); /* closed meanwhile: its last holder frees it */
    }
    return signalled || evfd_ready;
}

/* The top of a loop turn: completions posted quietly (answers the writer
 * already sent) are handled before this turn's events, so a request, a
 * close or a /metrics on any connection sees them done. 1 if the eventfd
 * was read. */
static int drain_quiet(server *s)
{
    pthread_mutex_lock(&s->cq_mu);
    int pending = s->cq_head != NULL;
    pthread_mutex_unlock(&s->cq_mu);
    return pending ? drain_completions(s, 0) : 0;
}

/* ------------------------------------------------------------ timeouts */

static void check_timeouts(server *s)
{
    int64_t now = now_ms();
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        tls_conn_tick(c, now);
        if (c->h2) {
            h2_tick(c, now);
            continue;
        }
        if (c->state == CS_READING && c->request_start_ms &&
            now - c->request_start_ms > s->cfg.request_timeout_ms) {
            server_log(s, 2, "msg=\"request timeout\" fd=%d", c->fd);
            c->keep_alive = 0;
            http_error(c, 408, "REQUEST_TIMEOUT", "the request did not arrive in time");
            c->state = CS_CLOSING;
            conn_flush(c);
        } else if (c->state == CS_READING && !c->got_bytes &&
                   now - c->last_activity_ms > s->cfg.request_timeout_ms) {
            /* Connected and never sent a byte: closed (silently, as an idle
             * connection is) at the request timeout, not the idle one, so
             * silent sockets cannot hold connection slots for long. */
            server_log(s, 2, "msg=\"nothing sent: closed at the request timeout\" fd=%d", c->fd);
            conn_close(c);
        } else if (c->state == CS_READING && !c->request_start_ms && c->out.len == 0 &&
                   now - c->last_activity_ms > s->cfg.idle_timeout_ms) {
            conn_close(c);
        } else if (c->stalled_since_ms &&
                   now - c->stalled_since_ms > (c->state == CS_SSE ? s->cfg.sse_stall_timeout_ms
                                                                   : s->cfg.request_timeout_ms)) {
            server_log(s, 2, "msg=\"client stopped reading\" fd=%d", c->fd);
            if (!c->async_pending || c->state != CS_BUSY)
                conn_close(c);
        }
    }
}

/* ------------------------------------------------------------ the loop */

static int listen_on(server *s)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->cfg.port)};
    if (inet_pton(AF_INET, s->cfg.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "stele serve: bad listen address '%s' (an IPv4 address)\n", s->cfg.host);
        return -1;
    }
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(s->lfd, 4096) != 0) {
        fprintf(stderr, "stele serve: cannot listen on %s:%d: %s\n", s->cfg.host, s->cfg.port,
                strerror(errno));
        return -1;
    }
    socklen_t len = sizeof sa;
    getsockname(s->lfd, (struct sockaddr *)&sa, &len);
    s->port = ntohs(sa.sin_port);
    return 0;
}

/* Refuse to listen on a non-loopback address without TLS and users, unless
 * --insecure: anyone who reaches such a port could read and delete
 * everything, in clear. */
static int security_check_listen(server *s)
{
    const char *h = s->cfg.host;
    int loopback = !strncmp(h, "127.", 4) || !strcmp(h, "localhost") || !strcmp(h, "::1");
    if (loopback || s->cfg.insecure || (tls_enabled(s) && auth_enabled(s)))
        return 0;
    fprintf(stderr,
            "stele serve: refusing to listen on %s without %s: set --tls-cert/--tls-key and "
            "--admin-password (docs/security.md), or --insecure to accept the risk\n",
            h, !tls_enabled(s) && !auth_enabled(s) ? "TLS and users"
               : !tls_enabled(s)                    ? "TLS"
                                                    : "users");
    return -1;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Open the store and every subsystem, the listener and the loop's own
 * descriptors (commits, completions, signals in `mask`); say "ready".
 * 0, or 1 after saying what failed. */
static int server_start(server *s, const sigset_t *mask)
{
    const server_config *cfg = &s->cfg;
    char shown[512];
    redact_uri(cfg->data_dir, shown, sizeof shown);
    if (stele_open(cfg->data_dir, &cfg->store, &s->db)) {
        fprintf(stderr, "stele serve: cannot open the store %s: %s\n", shown, stele_errmsg());
        return 1;
    }
    if (cfg->signing_key && stele_chain_set_signing_key(s->db, cfg->signing_key) != 0) {
        fprintf(stderr, "stele serve: --signing-key: %s\n", stele_errmsg());
        return 1;
    }
    if (tls_init(s) != 0 || auth_init(s) != 0 || security_check_listen(s) != 0 ||
        listen_on(s) != 0 || guard_init(s) != 0)
        return 1;
    if (archive_start(s) != 0)
        return 1;
    if (grpc_server_init(s) != 0) {
        fprintf(stderr, "stele serve: cannot set up gRPC: %s\n", stele_errmsg());
        return 1;
    }
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->sigfd = signalfd(-1, mask, SFD_NONBLOCK | SFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->lfd};
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev);
    ev.data.ptr = &s->evfd;
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &ev);
    ev.data.ptr = &s->sigfd;
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->sigfd, &ev);
    if (sse_hub_open(s) != 0 || groups_srv_open(s) != 0)
        return 1;
    if (stele_rules_start(s->db))
        server_log(s, 0, "msg=\"rules not started\" error=\"%s\"", stele_errmsg());
    if (stele_projections_start(s->db) != 0)
        server_log(s, 0, "msg=\"projections not started\" error=\"%s\"", stele_errmsg());
    server_log(s, 1, "msg=\"listening\" addr=%s:%d data=%s version=%s tls=%s auth=%s",
               cfg->host, s->port, shown, STELE_VERSION,
               !s->tls ? "off" : cfg->allow_cleartext ? "on+cleartext" : "on",
               auth_enabled(s) ? "on" : "off");
    route_health_tick(s); /* says so now if the store opened read-only */
    if (cfg->ready_fd >= 0) {
        char line[32];
        int n = snprintf(line, sizeof line, "ready %d\n", s->port);
        ssize_t w = write(cfg->ready_fd, line, (size_t)n);
        (void)w;
    }
    return 0;
}

/* SIGHUP reloads the TLS certificate; SIGTERM and SIGINT stop. */
static void on_signals(server *s)
{
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            tls_reload(s);
            continue;
        }
        if (!s->stopping)
            server_log(s, 1, "msg=\"stopping\" signal=%u", si.ssi_signo);
        s->stopping = 1;
    }
}

static void on_conn_event(conn *c, uint32_t events)
{
    if (c->early_inflight && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        /* Input (a next request, a close) while the writer answers this
         * connection's append: its completion may be posted quietly, so
         * ask for a wake-up, and take what is already queued (maybe it). */
        server *s = c->srv;
        pthread_mutex_lock(&s->cq_mu);
        s->cq_wake_wanted = 1;
        int queued = s->cq_head != NULL;
        pthread_mutex_unlock(&s->cq_mu);
        if (queued)
            drain_completions(s, 0);
        if (c->fd < 0)
            return;
    }
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->peer_hup = 1;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        conn_read(c);
    if (c->fd >= 0 && (events & EPOLLOUT))
        conn_flush(c);
    /* TLS: a read that waited for writable, a write that waited for
     * readable (tls.c). */
    if (c->fd >= 0 && c->tls_read_wants_write && (events & EPOLLOUT))
        conn_read(c);
    if (c->fd >= 0 && c->tls_write_wants_read && (events & EPOLLIN))
        conn_flush(c);
}

/* One turn's events. A commit first: live subscribers get their events
 * before this batch's other work (acknowledgements, new requests). */
static void dispatch(server *s, const struct epoll_event *evs, int n)
{
    int evfd_read = drain_quiet(s);
    for (int i = 0; i < n; i++)
        if (evs[i].data.ptr == &s->watch_fd && commit_seen(s))
            sse_run(s);
    for (int i = 0; i < n; i++) {
        void *p = evs[i].data.ptr;
        if (p == &s->lfd)
            accept_all(s);
        else if (p == &s->evfd)
            drain_completions(s, !evfd_read); /* read already: it may be empty */
        else if (p == &s->watch_fd)
            continue; /* done above */
        else if (p == &s->group_fd) {
            groups_on_watch(s); /* consumer groups over HTTP, then gRPC's */
            grpc_on_commit(s);
        }
        else if (p == &s->sigfd)
            on_signals(s);
        else
            on_conn_event(p, evs[i].events);
    }
}

/* Timers: every turn (<= 250 ms) and once a second. */
static void housekeeping(server *s, int64_t now, int64_t *last_tick)
{
    accept_resume(s, now);
    groups_tick(s, now); /* long-poll deadlines */
    if (now - *last_tick >= 1000) {
        check_timeouts(s);
        route_health_tick(s);
        sse_tick(s, now);
        limits_tick(s);
        auth_tick(s);
        *last_tick = now;
    }
    bury(s);
}

/* A stop under way: the listener closes at once, event streams end, idle
 * connections close, busy ones get STOP_GRACE_MS. 1 when the loop may
 * end. */
static int stop_step(server *s, int64_t now, int64_t *stop_at)
{
    if (!*stop_at) {
        s->accept_paused_until = 0; /* the listener closes now */
        sse_stop(s);                /* end every event stream cleanly */
        *stop_at = now + STOP_GRACE_MS;
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
        close(s->lfd);
        s->lfd = -1;
    }
    int busy = 0;
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->h2 ? h2_stop(c) : c->state == CS_READING && !c->request_start_ms && c->out.len == 0)
            conn_close(c);
        else
            busy++;
    }
    return !busy || now > *stop_at;
}

static void event_loop(server *s)
{
    int64_t last_tick = now_ms(), stop_at = 0;
    struct epoll_event evs[256];
    int sse_busy = 0;
    for (;;) {
        /* Sleep at most 250 ms, not at all while feeds are ready, and not
         * past the moment held commits wake the live subscribers. */
        int64_t due = sse_due(s);
        struct timespec wait = {0, 250000000};
        if (sse_busy || due == 0)
            wait.tv_nsec = 0;
        else if (due > 0 && due < wait.tv_nsec)
            wait.tv_nsec = (long)due;
        dispatch(s, evs, loop_wait(s->epfd, evs, 256, &wait));
        sse_due(s); /* wakes the live feeds if their held commits are due */
        sse_busy = sse_run(s);
        int64_t now = now_ms();
        housekeeping(s, now, &last_tick);
        if (s->stopping && stop_step(s, now, &stop_at))
            break;
    }
    while (s->conns)
        conn_close(s->conns);
    bury(s);
}

/* Stop every subsystem (each waits for its own work), close the store and
 * free what its last callbacks posted, then the descriptors. */
static void server_teardown(server *s)
{
    admin_shutdown(s);        /* a running scavenge stops after its segment */
    chain_routes_shutdown(s); /* waits for an export being built */
    auth_free(s);             /* joins the verifier thread; its completions are freed below */
    backup_shutdown(s);       /* a running backup too (DEST keeps the previous one) */
    grpc_server_free(s);      /* before stele_close: releases the commit watch */
    groups_srv_close(s);
    sse_hub_close(s);
    archive_stop(s); /* the last copy of the tail, before the store closes */
    if (s->db) {
        stele_close(s->db); /* waits for queued appends; their callbacks post
                               completions that nobody reads any more */
        s->db = NULL;
        pthread_mutex_lock(&s->cq_mu);
        for (completion *cp = s->cq_head, *nx; cp; cp = nx) {
            nx = cp->next;
            if (cp->op)
                grpc_completion_discard(cp);
            if (cp->extra_free)
                cp->extra_free(cp->extra);
            if (--cp->c->async_pending == 0 && cp->c->dead)
                conn_free(cp->c);
            free(cp);
        }
        s->cq_head = NULL;
        pthread_mutex_unlock(&s->cq_mu);
        server_log(s, 1, "msg=\"stopped\"");
    }
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->evfd >= 0)
        close(s->evfd);
    if (s->sigfd >= 0)
        close(s->sigfd);
    guard_free(s);
    tls_free(s);
    pthread_mutex_destroy(&s->cq_mu);
    limits_free(s);
}

int server_run(const server_config *cfg)
{
    server *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    s->cfg = *cfg;
    s->lfd = s->epfd = s->evfd = s->sigfd = s->watch_fd = s->group_fd = s->statm_fd = -1;
    pthread_mutex_init(&s->cq_mu, NULL);
    raise_fd_limit();
    limits_init(s);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP); /* reload the TLS certificate */
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = server_start(s, &mask);
    if (rc == 0)
        event_loop(s);
    server_teardown(s);
    free(s);
    return rc;
}
