/*
 * sse.c - Server-Sent Events responses: the hub that drives every
 * text/event-stream connection of the server (see server_int.h for the
 * interface a feed implements).
 *
 * Backpressure. A feed is pumped only while its connection's unsent output
 * (`out` minus what was sent) is below SSE_HIGH_WATER. Above it the
 * connection is parked in the `blocked` queue and the loop's edge-triggered
 * EPOLLOUT resumes it once the socket took everything (conn_flush calls
 * sse_drained). A feed therefore never holds more than about
 * SSE_HIGH_WATER plus one pump of output in memory, however slowly its
 * client reads; a subscription's events wait in the store, not here.
 *
 * Fairness. The ready queue is served round robin, SSE_PUMP_EVENTS events
 * per pump at most (a feed also sizes its pumps by bytes: subscribe.c reads
 * about PUMP_BYTES of events per pump, so large events go one at a time) and SSE_TURN_PUMPS pumps or SSE_TURN_NS per loop turn; if feeds are still
 * ready after that, the loop polls without sleeping and comes back after
 * serving its other connections (appends, reads) in between.
 *
 * Commits. The server holds one stele_watch eventfd. When it is readable,
 * every waiting feed moves to the ready queue: one wake-up per batch of
 * commits for all subscribers, however many there are. Under a stream of
 * commits the wake-ups are spaced by cfg.sub_batch_us with 100 live feeds
 * or more, by that share of it with fewer (round_gap_ns): the first commit after a quiet spell
 * wakes the live feeds at once (no added latency at low rates); the commits
 * that follow within the interval are held and woken together when it ends
 * (sse_due), so each live subscriber gets one send per interval however
 * many commit groups the writer makes. With ten live feeds or more the
 * interval also stretches to twenty times what the last rounds cost, up to
 * ten times cfg.sub_batch_us, so the rounds keep to about 5% of the loop's
 * time on any machine (round_gap_ns). This is what keeps many subscribers
 * cheap for the writers: a loopback send costs the sender the receiver's
 * TCP work too, a few microseconds each, and the loop that sends them also
 * serves the appends. A lone subscriber is never held.
 *
 * Framing. Each pump's events go out as one HTTP chunk, so the client sees
 * whole SSE events per chunk, sent with one sendmsg from where they were
 * rendered (chunk_out: no copy into the connection's buffer unless the
 * socket is full); an event is "event:" / "id:" / "data:" lines
 * and a blank line (the WHATWG HTML "server-sent events" format).
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "server_int.h"

/* Unsent output above which a feed is not pumped. */
#define SSE_HIGH_WATER (256u << 10)
/* Events per pump; pumps and time per loop turn (a filtered pump may scan
 * tens of thousands of events to find few). */
#define SSE_PUMP_EVENTS 512u
#define SSE_TURN_PUMPS 64u
#define SSE_TURN_NS 5000000u
/* Wake-up rounds of live feeds are cfg.sub_batch_us apart with this many
 * waiting feeds or more, proportionally less with fewer (round_gap_ns). */
#define SSE_ROUND_FEEDS 100u
/* With SSE_STRETCH_FEEDS waiting feeds or more, rounds are spaced further
 * when they are dear: by SSE_ROUND_SHARE times what the last rounds' pumps
 * took (so the rounds take about 1/SSE_ROUND_SHARE of the loop's time),
 * up to SSE_ROUND_STRETCH times the gap above. */
#define SSE_STRETCH_FEEDS 10u
#define SSE_ROUND_SHARE 20u
#define SSE_ROUND_STRETCH 10u
/* Compact `out` (move the unsent bytes to the front) past this offset. */
#define SSE_COMPACT_AT (64u << 10)

enum { Q_READY, Q_WAIT, Q_BLOCKED, Q_NONE };

typedef struct sse_conn {
    conn *c;
    const sse_source *src;
    void *ctx;
    int q;
    int in_round; /* woken by a round and not waiting again yet: its pumps
                     are the round's cost */
    struct sse_conn *prev, *next;
    int64_t last_write_ms; /* for keep-alive comments */
} sse_conn;

typedef struct sse_list {
    sse_conn *head, *tail;
    size_t n;
} sse_list;

typedef struct sse_hub {
    sse_list q[3];
    size_t n;
    uint64_t head;   /* next position of $all at the last commit seen */
    conn *pumping;   /* the connection whose pump is running */
    buf stage;       /* that pump's output, sent as one chunk */
    uint64_t round_ns; /* when waiting feeds were last woken by a commit */
    uint64_t due_ns;   /* a commit is held until then (0: none held) */
    uint64_t round_spent_ns; /* time in pumps of feeds woken by a round, since the last one */
    uint64_t round_cost_ns;  /* that, smoothed over the last rounds */
    uint64_t now_ns; /* the clock when the running pump started (0: none runs) */
} sse_hub;

/* ------------------------------------------------------------ queues */

static void q_remove(sse_hub *h, sse_conn *sc)
{
    if (sc->q == Q_NONE)
        return;
    sse_list *l = &h->q[sc->q];
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        l->head = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    else
        l->tail = sc->prev;
    l->n--;
    sc->prev = sc->next = NULL;
    sc->q = Q_NONE;
}

static void q_push(sse_hub *h, sse_conn *sc, int q)
{
    q_remove(h, sc);
    sse_list *l = &h->q[q];
    sc->prev = l->tail;
    sc->next = NULL;
    if (l->tail)
        l->tail->next = sc;
    else
        l->head = sc;
    l->tail = sc;
    l->n++;
    sc->q = q;
}

static size_t unsent(const conn *c)
{
    return c->out.len - c->out_off;
}

/* ------------------------------------------------------------ output */

/* The time in milliseconds (now_ms's clock): during a pump, the clock
 * sse_run read when it started, so a pump and its sends read it once. */
static int64_t hub_now_ms(const sse_hub *h)
{
    return h->now_ns ? (int64_t)(h->now_ns / 1000000u) : now_ms();
}

int64_t sse_now_ms(const conn *c)
{
    return hub_now_ms(c->srv->sse);
}

/* "<len in hex>\r\n", the head of a chunk, into h (at least 20 bytes): its
 * length. (snprintf cost about 700 instructions per chunk here.) */
static int chunk_head(char *h, size_t len)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[len & 15u];
        len >>= 4;
    } while (len);
    for (int i = 0; i < n; i++)
        h[i] = tmp[n - 1 - i];
    h[n] = '\r';
    h[n + 1] = '\n';
    return n + 2;
}

/* Keep `out` from growing while a slow client drains it from the front. */
static void out_compact(conn *c)
{
    if (c->out_off >= SSE_COMPACT_AT) {
        memmove(c->out.p, c->out.p + c->out_off, c->out.len - c->out_off);
        c->out.len -= c->out_off;
        c->out_off = 0;
    }
}

/* `len` bytes as one chunk of c's response. When nothing else waits to be
 * sent on a plain socket, the chunk's header, the bytes and its trailer go
 * out with one sendmsg straight from where they are (the hub's stage, or
 * the events rendered once for every subscriber: subscribe.c's cache), and
 * only what the socket does not take is copied into `out`, where
 * conn_flush sends it (and handles an error: a pump must not close its
 * own connection). Otherwise the chunk is queued behind the unsent output. */
static void chunk_out(conn *c, const void *p, size_t len)
{
    char h[24];
    int hl = chunk_head(h, len);
    if (unsent(c) == 0 && conn_is_plain(c)) {
        struct iovec iov[3] = {{h, (size_t)hl}, {(void *)p, len}, {(void *)"\r\n", 2}};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = 3};
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        size_t sent = n > 0 ? (size_t)n : 0;
        c->out.len = c->out_off = 0;
        if (sent == (size_t)hl + len + 2) {
            c->stalled_since_ms = 0;
            return;
        }
        if (sent)
            c->stalled_since_ms = 0;
        /* The rest, from where the socket stopped. */
        for (int i = 0; i < 3; i++) {
            if (sent >= iov[i].iov_len) {
                sent -= iov[i].iov_len;
                continue;
            }
            if (buf_append(&c->out, (char *)iov[i].iov_base + sent, iov[i].iov_len - sent))
                abort(); /* as stage_put */
            sent = 0;
        }
        return;
    }
    out_compact(c);
    if (buf_append(&c->out, h, (size_t)hl) || buf_append(&c->out, p, len) ||
        buf_append(&c->out, "\r\n", 2))
        abort();
}

/* Send what the hub staged for `c` as one chunk. */
static void stage_flush(sse_hub *h, conn *c)
{
    if (!h->stage.len)
        return;
    if (c->fd >= 0) {
        chunk_out(c, h->stage.p, h->stage.len);
        if (c->sse)
            c->sse->last_write_ms = hub_now_ms(h);
    }
    h->stage.len = 0;
    if (h->stage.cap > (1u << 20))
        buf_free(&h->stage); /* one large event: do not keep its room */
}

static void stage_put(sse_hub *h, const char *s, size_t n)
{
    if (buf_append(&h->stage, s, n))
        abort(); /* cannot keep the stream consistent without memory */
}

void sse_event(conn *c, const char *event, const char *id, const void *data, size_t len)
{
    sse_hub *h = c->srv->sse;
    if (event) {
        stage_put(h, "event: ", 7);
        stage_put(h, event, strlen(event));
        stage_put(h, "\n", 1);
    }
    if (id) {
        stage_put(h, "id: ", 4);
        stage_put(h, id, strlen(id));
        stage_put(h, "\n", 1);
    }
    /* Each line of the data is a "data:" line; CR, LF and CRLF all end a
     * line in SSE, so they all split here. Event JSON has none (memchr
     * finds that fast). */
    const char *p = data, *end = p + len;
    if (!memchr(p, '\n', len) && !memchr(p, '\r', len)) {
        if (buf_reserve(&h->stage, len + 8))
            abort();
        memcpy(h->stage.p + h->stage.len, "data: ", 6);
        memcpy(h->stage.p + h->stage.len + 6, p, len);
        memcpy(h->stage.p + h->stage.len + 6 + len, "\n\n", 2);
        h->stage.len += len + 8;
    } else {
        do {
            const char *nl = p;
            while (nl < end && *nl != '\n' && *nl != '\r')
                nl++;
            stage_put(h, "data: ", 6);
            stage_put(h, p, (size_t)(nl - p));
            stage_put(h, "\n", 1);
            if (nl < end && *nl == '\r' && nl + 1 < end && nl[1] == '\n')
                nl++;
            p = nl + 1;
        } while (p < end);
        stage_put(h, "\n", 1);
    }
    if (h->pumping != c) {
        stage_flush(h, c);
        conn_flush(c);
    }
}

void sse_raw(conn *c, const void *p, size_t len)
{
    sse_hub *h = c->srv->sse;
    stage_put(h, p, len);
    if (h->pumping != c) {
        stage_flush(h, c);
        conn_flush(c);
    }
}

void sse_shared(conn *c, const void *p, size_t len)
{
    sse_hub *h = c->srv->sse;
    if (h->pumping != c || h->stage.len || c->fd < 0) {
        sse_raw(c, p, len); /* after what is staged: order kept */
        return;
    }
    chunk_out(c, p, len);
    if (c->sse)
        c->sse->last_write_ms = hub_now_ms(h);
}

buf *sse_stage(conn *c)
{
    sse_hub *h = c->srv->sse;
    assert(h->pumping == c);
    return &h->stage;
}

void sse_comment(conn *c, const char *text)
{
    sse_hub *h = c->srv->sse;
    stage_put(h, ": ", 2);
    stage_put(h, text, strlen(text));
    stage_put(h, "\n\n", 2);
    if (h->pumping != c) {
        stage_flush(h, c);
        conn_flush(c);
    }
}

/* ------------------------------------------------------------ feeds */

int sse_begin(conn *c, const sse_source *src, void *ctx)
{
    server *s = c->srv;
    sse_hub *h = s->sse;
    sse_conn *sc = calloc(1, sizeof *sc);
    if (!sc) {
        src->free(ctx);
        conn_close(c);
        return -1;
    }
    sc->c = c;
    sc->src = src;
    sc->ctx = ctx;
    sc->q = Q_NONE;
    sc->last_write_ms = now_ms();
    c->sse = sc;
    c->state = CS_SSE;
    c->request_start_ms = 0;
    h->n++;
    s->m.subscriptions_total++;
    /* No caching or buffering by proxies (nginx honours X-Accel-Buffering). */
    http_chunked_start_ex(c, 200, "text/event-stream",
                          "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    q_push(h, sc, Q_READY);
    server_log(s, 2, "msg=\"sse start\" feed=%s fd=%d", src->name, c->fd);
    return 0;
}

/* Forget the feed of `c` (the connection stays as it is). */
static void forget(conn *c)
{
    sse_conn *sc = c->sse;
    if (!sc)
        return;
    sse_hub *h = c->srv->sse;
    q_remove(h, sc);
    c->sse = NULL;
    h->n--;
    sc->src->free(sc->ctx);
    free(sc);
}

void sse_detach(conn *c)
{
    forget(c);
}

/* End the response cleanly (the last chunk) and close once it is sent. */
static void end_feed(conn *c)
{
    sse_hub *h = c->srv->sse;
    stage_flush(h, c);
    forget(c);
    if (c->fd < 0)
        return;
    http_chunked_end(c);
    c->keep_alive = 0;
    c->state = CS_CLOSING;
    conn_flush(c);
}

/* After a pump or tick returned `r`: end, close, or requeue. */
static void settle(sse_hub *h, conn *c, int r)
{
    if (c->fd < 0 || !c->sse)
        return;
    if (r == SSE_END) {
        end_feed(c);
        return;
    }
    if (r == SSE_CLOSE) {
        stage_flush(h, c);
        conn_close(c);
        return;
    }
    conn_flush(c); /* may close it (the client went away) */
    if (c->fd < 0 || !c->sse)
        return;
    sse_conn *sc = c->sse;
    if (r == SSE_WAIT) {
        sc->in_round = 0;
        q_push(h, sc, Q_WAIT);
    } else if (unsent(c) >= SSE_HIGH_WATER)
        q_push(h, sc, Q_BLOCKED);
    else
        q_push(h, sc, Q_READY);
}

/* One clock read per pump: the time a pump ends is the next one's start,
 * for the turn's budget, the rounds' cost and the pump's own clock
 * (sse_now_ms: keep-alive and checkpoint times). */
int sse_run(server *s)
{
    sse_hub *h = s->sse;
    uint64_t t = time_mono_ns(), until = t + SSE_TURN_NS;
    for (unsigned k = 0; k < SSE_TURN_PUMPS && h->q[Q_READY].head && t < until; k++) {
        sse_conn *sc = h->q[Q_READY].head;
        conn *c = sc->c;
        q_remove(h, sc);
        if (unsent(c) >= SSE_HIGH_WATER) {
            q_push(h, sc, Q_BLOCKED);
            continue;
        }
        int in_round = sc->in_round;
        h->now_ns = t;
        h->pumping = c;
        int r = sc->src->pump(c, sc->ctx, SSE_PUMP_EVENTS);
        h->pumping = NULL;
        stage_flush(h, c);
        h->now_ns = 0;
        settle(h, c, r); /* may free sc */
        uint64_t end = time_mono_ns();
        if (in_round)
            h->round_spent_ns += end - t;
        t = end;
    }
    return h->q[Q_READY].head != NULL;
}

void sse_wake(conn *c)
{
    if (c->sse && c->sse->q == Q_WAIT)
        q_push(c->srv->sse, c->sse, Q_READY);
}

void sse_drained(conn *c)
{
    if (c->sse && c->sse->q == Q_BLOCKED)
        q_push(c->srv->sse, c->sse, Q_READY);
}

/* The least time between two wake-up rounds: cfg.sub_batch_us with
 * SSE_ROUND_FEEDS or more waiting feeds, that share of it with fewer. A
 * round costs about one send per feed (3.7 µs for a small one on loopback
 * here, 7-9 µs for 50 KB, the receiver's TCP work and wake-up included:
 * bench_subs_floor), so the
 * rounds stay a bounded share of the loop's time, while the wait stays
 * bounded too: by default one subscriber is never held more than 20 µs, a
 * hundred or more 2 ms. With SSE_STRETCH_FEEDS feeds or more, the gap
 * grows to SSE_ROUND_SHARE times the smoothed cost of a round when that is
 * longer, up to SSE_ROUND_STRETCH times the base gap (20 ms for a hundred
 * by default): on a busy server a hundred sends take about half a
 * millisecond, so rounds every 2 ms would take a quarter of the thread
 * that also serves the appends. A round's cost barely grows with its
 * events (bytes are cheap next to sends, and a pump from the shared
 * rendering carries up to 256 KiB: subscribe.c), so a longer gap lowers
 * the rounds' share and the gap settles. */
static uint64_t round_gap_ns(const server *s)
{
    const sse_hub *h = s->sse;
    uint64_t n = h->q[Q_WAIT].n;
    if (n > SSE_ROUND_FEEDS)
        n = SSE_ROUND_FEEDS;
    uint64_t base = (uint64_t)s->cfg.sub_batch_us * 1000u * n / SSE_ROUND_FEEDS;
    if (n < SSE_STRETCH_FEEDS)
        return base;
    uint64_t want = h->round_cost_ns * SSE_ROUND_SHARE, cap = base * SSE_ROUND_STRETCH;
    return want < base ? base : want > cap ? cap : want;
}

/* Move every waiting feed to the ready queue: one wake-up round. The
 * pumps since the last round (of feeds that round woke) were its cost. */
static void wake_round(sse_hub *h, uint64_t now)
{
    h->round_cost_ns = (h->round_cost_ns * 3 + h->round_spent_ns) / 4;
    h->round_spent_ns = 0;
    while (h->q[Q_WAIT].head) {
        h->q[Q_WAIT].head->in_round = 1;
        q_push(h, h->q[Q_WAIT].head, Q_READY);
    }
    h->round_ns = now;
    h->due_ns = 0;
}

int sse_on_commit(server *s)
{
    sse_hub *h = s->sse;
    uint64_t v;
    if (read(s->watch_fd, &v, sizeof v) != (ssize_t)sizeof v)
        return 0; /* nothing new since the last call */
    uint64_t head;
    if (stele_position_head(s->db, &head) == 0)
        h->head = head;
    if (!h->q[Q_WAIT].head)
        return 1;
    /* The first commit after a quiet spell wakes the live feeds at once;
     * commits that follow within `gap` of that round are held and go out
     * together when it has passed (sse_due). */
    uint64_t now = time_mono_ns(), gap = round_gap_ns(s);
    if (!gap || now - h->round_ns >= gap)
        wake_round(h, now);
    else if (!h->due_ns)
        h->due_ns = h->round_ns + gap;
    return 1;
}

int64_t sse_due(server *s)
{
    sse_hub *h = s->sse;
    if (!h->due_ns)
        return -1;
    uint64_t now = time_mono_ns();
    if (now >= h->due_ns) {
        wake_round(h, now);
        return 0;
    }
    return (int64_t)(h->due_ns - now);
}

void sse_tick(server *s, int64_t now)
{
    sse_hub *h = s->sse;
    /* Walk a snapshot: a tick may move or end the connection it serves
     * (never another one), so take the next one first. */
    for (int q = 0; q < 3; q++) {
        sse_conn *last = h->q[q].tail;
        for (sse_conn *sc = h->q[q].head, *next; sc; sc = next) {
            int at_end = sc == last;
            next = sc->next;
            conn *c = sc->c;
            int r = SSE_MORE;
            if (sc->src->tick) {
                h->pumping = c;
                r = sc->src->tick(c, sc->ctx, now);
                h->pumping = NULL;
                stage_flush(h, c);
            }
            if (r == SSE_END || r == SSE_CLOSE) {
                settle(h, c, r);
            } else if (c->sse) {
                if (now - c->sse->last_write_ms >= s->cfg.sse_keepalive_ms && unsent(c) == 0)
                    sse_comment(c, "keep-alive");
                else
                    conn_flush(c);
            }
            if (at_end)
                break;
        }
    }
}

void sse_stop(server *s)
{
    sse_hub *h = s->sse;
    for (int q = 0; q < 3; q++)
        while (h->q[q].head)
            end_feed(h->q[q].head->c);
}

uint64_t sse_head(const server *s)
{
    return s->sse->head;
}

size_t sse_count(const server *s)
{
    return s->sse ? s->sse->n : 0;
}

/* ------------------------------------------------------------ hub */

int sse_hub_open(server *s)
{
    s->watch_fd = -1;
    s->sse = calloc(1, sizeof *s->sse);
    if (!s->sse) {
        fprintf(stderr, "stele serve: out of memory\n");
        return -1;
    }
    for (int q = 0; q < 3; q++)
        s->sse->q[q].head = s->sse->q[q].tail = NULL;
    if (stele_watch(s->db, &s->watch_fd)) {
        fprintf(stderr, "stele serve: cannot watch the store for commits: %s\n", stele_errmsg());
        return -1;
    }
    uint64_t head;
    if (stele_position_head(s->db, &head) == 0)
        s->sse->head = head;
    /* Level-triggered: readable until sse_on_commit reads the counter, so a
     * commit that lands while feeds are being pumped is never missed. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->watch_fd};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->watch_fd, &ev) != 0) {
        fprintf(stderr, "stele serve: epoll_ctl: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

void sse_hub_close(server *s)
{
    subscribe_free_shared(s);
    if (s->db && s->watch_fd >= 0)
        stele_unwatch(s->db, s->watch_fd);
    s->watch_fd = -1;
    if (s->sse) {
        buf_free(&s->sse->stage);
        free(s->sse);
        s->sse = NULL;
    }
}
