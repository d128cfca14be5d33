/*
 * http_early.c - the early reply: a plain HTTP/1.1 append answered from the
 * store's writer thread, right after its group commit, instead of by the
 * event loop after a wake-up.
 *
 * Why. An append's acknowledgement used to cross two threads after the
 * fdatasync: the writer posted a completion and wrote the loop's eventfd,
 * the loop thread woke (on a 2-vCPU VM often a halted vCPU: an IPI and a
 * VM exit), rendered the answer and sent it. With one client and one event
 * per append (1x1) that hand-off sat on every append's latency; with 256
 * connections the loop thread, which also parses every request, spent a
 * third of its time in `send`. Now the writer renders and sends the answer
 * itself, and the completion it still posts only does the loop's
 * bookkeeping (metrics, the connection's state, the next pipelined
 * request), off the client's path.
 *
 * What is unchanged. The callback that sends runs where the old one posted
 * its completion: after the group's fdatasync, index commit and publish, so
 * an acknowledged event is durable and readable, and positions stay in
 * commit order. The bytes are those route_append_done() would write (the
 * same head fields, the same body renderer).
 *
 * When. Only when, at submit time on the loop thread: the connection is
 * HTTP/1.1, with nothing unsent in `out` (no earlier response may follow
 * this one), and the append succeeds (errors take the loop's path, with
 * their logging and metrics). While the append is in flight the
 * connection is CS_BUSY: the loop writes nothing to it and parses no
 * further request (pipelined bytes wait in `in`), so the writer's bytes
 * are the only ones on the socket and the order of responses holds.
 *
 * Over TLS (branch tls21c). An SSL object must not be used by two threads
 * at once, so it is lent: at submit (tls_early_lend: an established
 * session, no retry pending) the writer gets the SSL pointer, and until
 * the completion is back the loop does not touch the object at all. It
 * does not read (conn_read notes tls_read_deferred and returns; input
 * still asks for a wake-up, as below), flush (nothing is queued), free
 * the record buffers (tls_conn_tick) nor shut or free the session
 * (conn_close leaves it to conn_free, after the completion). The writer
 * encrypts and sends the answer with SSL_write; a full socket
 * (WANT_WRITE) or a session wanting to read hands the rest back through
 * `out`, which conn_flush retries with the same bytes (OpenSSL's
 * moving-buffer mode), and a failed session closes the connection. Once
 * back, the loop reads what may have arrived meanwhile (conn_read_resume):
 * lending notes whether the socket was known drained with nothing
 * buffered in OpenSSL, and any epoll input during the flight sets the
 * flag too. The mutexes of the engine's queue and of the completion list
 * order the two threads' uses of the object. Measured:
 * docs/benchmarks.md "TLS 256x1: the writer encrypts its answers".
 *
 * Invariants.
 *   - The writer touches no field of the conn: what it needs (the
 *     descriptor or the lent SSL object, the head fields) is copied into
 *     the early_ctx at submit, and the kernel serialises send() against
 *     the loop's recv() (over TLS the loop does not read meanwhile).
 *   - The descriptor outlives the send: while c->early_inflight, conn_close
 *     keeps it open (c->held_fd) and conn_free closes it, once the
 *     completion arrived. A number cannot be reused by a new connection
 *     while the writer may still write to it.
 *   - What the writer could not send (the socket buffer full, or an error)
 *     goes to `out` in early_done: the loop's flush sends the rest or sees
 *     the error and closes, as for any response.
 *
 * Quiet completions. When the answer left whole, on a keep-alive
 * connection with no further bytes buffered at submit, the completion is
 * posted without writing the loop's eventfd (completion_post_quiet): the
 * client has its answer, and the loop takes the completion at the top of
 * its next turn (net.c drain_quiet), which the client's next request, or
 * any other event, or the loop's 250 ms tick starts. The one hazard is
 * input that reaches the loop before the completion is queued (the client
 * answered fast, or closed): the connection is still busy then, and no
 * later event would come. So on input for a connection with an early
 * answer in flight the loop sets cq_wake_wanted under the queue's lock
 * (and drains what is queued); a quiet post that finds it set writes the
 * eventfd after all. For a lone client this saves the eventfd's write, the
 * loop's wake-up and its read per append: three system calls and a thread
 * switch, off the client's path but not off the machine's CPUs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "json.h"
#include "server_int.h"

#define LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

/* What the writer thread sent, and what is left for the loop. */
typedef struct early_reply {
    size_t len, off;
    int sent; /* the writer sent it (else it only rendered it) */
    int tls;  /* through a lent SSL object: how it went (TLS_EARLY_*) */
    int tls_status;
    char p[];
} early_reply;

int http_append_body(buf *b, const stele_append_result *res, const uint8_t (*ids)[16],
                     const uint8_t *ulid, size_t nids)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "{\"firstRevision\":%llu,\"lastRevision\":%llu,\"firstPosition\":%llu,"
                     "\"lastPosition\":%llu,\"idempotent\":%s,\"events\":[",
                     (unsigned long long)res->first_revision,
                     (unsigned long long)res->last_revision,
                     (unsigned long long)res->first_position,
                     (unsigned long long)res->last_position, res->idempotent ? "true" : "false");
    int bad = buf_append(b, head, (size_t)n);
    uint64_t count = res->last_revision - res->first_revision + 1;
    for (uint64_t i = 0; i < count && !bad; i++) {
        char item[160];
        int k = snprintf(item, sizeof item, "%s{", i ? "," : "");
        bad |= buf_append(b, item, (size_t)k);
        if (ids && i < nids)
            bad |= LIT(b, "\"id\":") ||
                   json_w_id(b, ids[i], ulid[i] ? STELE_EVENT_ID_ULID : 0) || LIT(b, ",");
        k = snprintf(item, sizeof item, "\"revision\":%llu,\"position\":%llu}",
                     (unsigned long long)(res->first_revision + i),
                     (unsigned long long)(res->first_position + i));
        bad |= buf_append(b, item, (size_t)k);
    }
    bad |= LIT(b, "]}\n");
    return bad;
}

void early_prepare(conn *c, early_ctx *e)
{
    e->fd = -1;
    e->ssl = NULL;
    e->render = 0;
    e->quiet = 0;
    memset(&e->fields, 0, sizeof e->fields);
    if (c->srv->cfg.no_early_reply || c->h2)
        return;
    /* One allocation for the few head fields (instead of the buffer
     * growing while they are appended). */
    if (buf_reserve(&e->fields, 160) || http_head_fields(c, &e->fields, "application/json")) {
        buf_free(&e->fields);
        return;
    }
    e->render = 1;
    if (conn_unsent(c) != 0)
        return;
    if (!conn_is_plain(c)) {
        /* TLS: the SSL object is lent to the writer, which encrypts and
         * sends the answer; the loop does not touch it until the
         * completion (conn_read, conn_flush, the tick and conn_close wait).
         * Else (a handshake or a retry pending) the loop sends it. */
        if (!tls_early_lend(c))
            return;
        e->ssl = c->ssl;
        e->quiet = c->keep_alive && c->in_off == c->in.len && !c->tls_read_deferred;
        c->early_inflight = 1;
        return;
    }
    e->fd = c->fd;
    /* Its completion may skip waking the loop when the answer leaves
     * whole, unless the connection closes after it or already holds
     * further (pipelined) bytes: those need the loop at once. */
    e->quiet = c->keep_alive && c->in_off == c->in.len;
    c->early_inflight = 1;
}

int early_quiet(const early_ctx *e, const completion *cp)
{
    const early_reply *r = cp->extra;
    return e->quiet && cp->done == early_done && r && r->sent && r->off == r->len;
}

void early_ctx_free(early_ctx *e) { buf_free(&e->fields); }

int early_send(early_ctx *e, completion *cp, const uint8_t (*ids)[16], const uint8_t *ulid,
               size_t nids)
{
    if (!e->render || cp->rc != 0)
        return 0;
    buf body = {0};
    if (http_append_body(&body, &cp->res, ids, ulid, nids)) {
        buf_free(&body);
        return 0; /* out of memory: the loop answers (500) */
    }
    int status = cp->res.idempotent ? 200 : 201;
    char line[64], cl[64];
    int ln = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
    int cn = snprintf(cl, sizeof cl, "Content-Length: %zu\r\n\r\n", body.len);
    size_t len = (size_t)ln + e->fields.len + (size_t)cn + body.len;
    early_reply *r = malloc(sizeof *r + len);
    if (!r) {
        buf_free(&body);
        return 0;
    }
    char *p = r->p;
    memcpy(p, line, (size_t)ln);
    p += ln;
    memcpy(p, e->fields.p, e->fields.len);
    p += e->fields.len;
    memcpy(p, cl, (size_t)cn);
    p += cn;
    memcpy(p, body.p, body.len);
    buf_free(&body);
    r->len = len;
    r->off = 0;
    r->sent = e->fd >= 0 || e->ssl;
    r->tls = e->ssl != NULL;
    r->tls_status = TLS_EARLY_SENT;
    if (e->ssl)
        r->tls_status = tls_early_write(e->ssl, r->p, r->len, &r->off);
    while (e->fd >= 0 && r->off < r->len) {
        ssize_t n = send(e->fd, r->p + r->off, r->len - r->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
            r->off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break; /* full, or failed: the loop sends the rest or sees the error */
    }
    cp->done = early_done;
    cp->extra = r;
    cp->extra_free = free;
    return 1;
}

void early_done(conn *c, completion *cp)
{
    early_reply *r = cp->extra;
    c->early_inflight = 0;
    c->srv->m.appends++;
    c->srv->m.early_replies += r->sent;
    if (r->tls) { /* the SSL object is the loop's again */
        c->tls_bufs_freed = 0;
        if (r->tls_status == TLS_EARLY_FAILED) {
            c->tls_failed = 1; /* no close_notify on a broken session */
            conn_close(c);
            return;
        }
        if (r->tls_status == TLS_EARLY_WANT_READ)
            c->tls_write_wants_read = 1;
    }
    if (r->off < r->len && buf_append(&c->out, r->p + r->off, r->len - r->off)) {
        /* The rest of an answer that cannot be queued: the client would
         * see half a response; end the connection instead. */
        conn_close(c);
        return;
    }
    c->state = CS_READING;
    server_log(c->srv, 2, "msg=request method=POST path=/streams rc=0 early=1");
    http_append_finish(c);
    /* TLS: what arrived while the writer held the SSL object. */
    if (r->tls)
        conn_read_resume(c);
}
