/*
 * group_run.c - one consumer group at work: reading events into a bounded
 * buffer, handing them to consumers, acks and nacks, timeouts, parking,
 * replaying parked events and saving checkpoints. Every function here runs
 * with the group's mutex held (see group_int.h for the lock order).
 *
 * The buffer ("main queue") holds the events read from the group's stream
 * or $all in key order (key = position for $all, revision for a stream),
 * each in one state:
 *
 *     AVAIL --read--> INFLIGHT --ack / nack skip--------------> DONE
 *       ^                |  \---nack park / retries used up--> PARKING
 *       |                |                                       |
 *       +--timeout, nack retry, consumer closed (retries+1)--+   |
 *       +------------------- park append failed -----------------+
 *                                         park append durable -> DONE
 *
 * DONE messages leave from the head, so the checkpoint, "every event below
 * it is done", is the key of the first message still in the queue, or the
 * read position when the queue is empty. The queue never holds more than
 * buffer_size messages: a stuck message at the head stops reading, never
 * memory. Events a filter rejects never enter the queue but move the read
 * position, so the checkpoint moves with them.
 *
 * Parked events being replayed sit in a second queue, keyed by the
 * revision of their link in the parked stream. The parked stream's
 * truncation point follows the first replayed message not yet done, so a
 * replayed event leaves the parked stream only once it is done (at least
 * once, like everything else).
 *
 * Pinned strategy: `pins` maps each stream with events in flight to the
 * one consumer that has them; another consumer skips that stream's events
 * until they are all done. As messages are scanned in key order, a
 * consumer never gets a later event of a stream before an earlier one that
 * is waiting. The map is kept for both strategies, so a strategy change
 * takes effect at once.
 *
 * Appends (checkpoints, parked links) are asynchronous: their completions
 * come back on the store's writer thread and take the group's mutex.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sub/group_int.h"

/* ------------------------------------------------------------ queues */

static int mq_reserve(mqueue *q, size_t want)
{
    if (q->cap >= want)
        return 0;
    size_t cap = q->cap ? q->cap : 16;
    while (cap < want)
        cap *= 2;
    gmsg *v = malloc(cap * sizeof *v);
    if (!v)
        return err_set(STELE_ENOMEM, "out of memory");
    for (size_t i = 0; i < q->n; i++)
        v[i] = *mq_at(q, i);
    free(q->v);
    q->v = v;
    q->cap = cap;
    q->head = 0;
    return 0;
}

static gmsg *mq_push(mqueue *q)
{
    if (q->n == q->cap && mq_reserve(q, q->n + 1))
        return NULL;
    gmsg *m = mq_at(q, q->n++);
    memset(m, 0, sizeof *m);
    return m;
}

static void mq_free(mqueue *q)
{
    for (size_t i = 0; i < q->n; i++)
        ev_blob_unref(mq_at(q, i)->ev);
    free(q->v);
    memset(q, 0, sizeof *q);
}

/* The message with `key` (keys ascend), or NULL. */
static gmsg *mq_find(const mqueue *q, uint64_t key)
{
    size_t lo = 0, hi = q->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t k = mq_at(q, mid)->key;
        if (k == key)
            return mq_at(q, mid);
        if (k < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* A range taken over from another server sits out of key order. */
    for (size_t i = 0; i < q->n; i++)
        if (mq_at(q, i)->key == key)
            return mq_at(q, i);
    return NULL;
}

/* ------------------------------------------------------------ pins */

static uint32_t hash_name(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static pin **pin_slot(pin_map *pm, const char *s, size_t len, uint32_t h)
{
    pin **pp = &pm->b[h & (pm->nb - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->len == len && !memcmp((*pp)->name, s, len)))
        pp = &(*pp)->next;
    return pp;
}

static pin *pin_find(pin_map *pm, const stele_event *e)
{
    if (!pm->nb)
        return NULL;
    return *pin_slot(pm, e->stream, e->stream_len, hash_name(e->stream, e->stream_len));
}

/* One more in-flight event of e's stream for c. */
static int pin_add(pin_map *pm, const stele_event *e, gconsumer *c)
{
    if (!pm->nb) {
        pm->b = calloc(256, sizeof *pm->b);
        if (!pm->b)
            return err_set(STELE_ENOMEM, "out of memory");
        pm->nb = 256;
    }
    uint32_t h = hash_name(e->stream, e->stream_len);
    pin **pp = pin_slot(pm, e->stream, e->stream_len, h);
    if (*pp) {
        (*pp)->count++;
        return 0;
    }
    pin *p = malloc(sizeof *p + e->stream_len);
    if (!p)
        return err_set(STELE_ENOMEM, "out of memory");
    p->next = NULL;
    p->owner = c;
    p->count = 1;
    p->hash = h;
    p->len = e->stream_len;
    memcpy(p->name, e->stream, e->stream_len);
    *pp = p;
    return 0;
}

static void pin_drop(pin_map *pm, const stele_event *e)
{
    if (!pm->nb)
        return;
    pin **pp = pin_slot(pm, e->stream, e->stream_len, hash_name(e->stream, e->stream_len));
    if (*pp && --(*pp)->count == 0) {
        pin *p = *pp;
        *pp = p->next;
        free(p);
    }
}

static void pins_free(pin_map *pm)
{
    for (size_t i = 0; i < pm->nb; i++)
        for (pin *p = pm->b[i], *nx; p; p = nx) {
            nx = p->next;
            free(p);
        }
    free(pm->b);
    memset(pm, 0, sizeof *pm);
}

/* ------------------------------------------------------------ set-up */

static void set_error(group *g, int rc)
{
    snprintf(g->last_error, sizeof g->last_error, "%s: %s", stele_errname(rc), stele_errmsg());
}

int group_runtime_init(group *g)
{
    g->next_deadline_ms = INT64_MAX;
    int rc = mq_reserve(&g->main, g->def.set.buffer_size < 16 ? 16 : g->def.set.buffer_size);
    if (rc == 0)
        rc = mq_reserve(&g->replay, 16);
    return rc;
}

void group_runtime_free(group *g)
{
    mq_free(&g->main);
    mq_free(&g->replay);
    pins_free(&g->pins);
    gshare_free(g);
    stele_sub_close(g->sub);
    g->sub = NULL;
}

int group_apply_settings(group *g, const stele_group_settings *s)
{
    int rc = mq_reserve(&g->main, s->buffer_size);
    if (rc)
        return rc;
    const stele_filter *keep = g->def.set.filter;
    g->def.set = *s;
    g->def.set.filter = keep;
    /* New deadlines apply to new deliveries; recheck timeouts soon. */
    g->next_deadline_ms = 0;
    return 0;
}

uint64_t group_checkpoint(const group *g)
{
    return gshare_checkpoint(g);
}

void group_wake(group *g)
{
    if (g->waiters)
        pthread_cond_broadcast(&g->cv);
    groups_notify(g->gs);
}

void group_wait_pending(group *g)
{
    while (g->pending)
        pthread_cond_wait(&g->cv, &g->mu);
}

/* ------------------------------------------------------------ done */

/* Drop the done messages at the heads of the queues; move the parked
 * stream's truncation point behind finished replays. */
static void pop_done(group *g)
{
    while (g->main.n && mq_at(&g->main, 0)->state == M_DONE) {
        ev_blob_unref(mq_at(&g->main, 0)->ev);
        g->main.head = (g->main.head + 1) & (g->main.cap - 1);
        g->main.n--;
    }
    if (g->main.n == 0)
        g->unordered = 0;
    while (g->replay.n && mq_at(&g->replay, 0)->state == M_DONE) {
        ev_blob_unref(mq_at(&g->replay, 0)->ev);
        g->replay.head = (g->replay.head + 1) & (g->replay.cap - 1);
        g->replay.n--;
    }
    uint64_t t = g->replay.n ? mq_at(&g->replay, 0)->key : g->replay_next;
    if (t > g->parked_trunc)
        g->parked_trunc = t;
}

/* Take a message out of flight (it goes to another state next). */
static void unassign(group *g, gmsg *m)
{
    if (m->owner) {
        m->owner->in_flight--;
        pin_drop(&g->pins, &m->ev->e);
        m->owner = NULL;
    }
}

static void set_done(group *g, gmsg *m)
{
    unassign(g, m);
    m->state = M_DONE;
    g->done_since_save++;
}

static void set_avail(group *g, gmsg *m, int replay)
{
    unassign(g, m);
    m->state = M_AVAIL;
    if (replay)
        g->replay_avail++;
    else
        g->main_avail++;
}

/* ------------------------------------------------------------ parking */

typedef struct park_ctx {
    group *g;
    int replay;
    uint64_t key;
} park_ctx;

static void park_done(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    park_ctx *pc = ctx;
    group *g = pc->g;
    pthread_mutex_lock(&g->mu);
    gmsg *m = mq_find(pc->replay ? &g->replay : &g->main, pc->key);
    if (m && m->state == M_PARKING) {
        if (rc == 0) {
            m->state = M_DONE;
            g->done_since_save++;
            g->parked_total++;
            if (res->last_revision + 1 > g->parked_next)
                g->parked_next = res->last_revision + 1;
            pop_done(g);
        } else {
            /* Deliver it again rather than lose it. */
            set_avail(g, m, pc->replay);
            snprintf(g->last_error, sizeof g->last_error, "%s: parking: %s", stele_errname(rc),
                     msg);
        }
    }
    g->pending--;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (rc)
        groups_notify(g->gs);
    free(pc);
}

/* Append a link to m's event to the parked stream; m is done once the
 * link is durable. */
static void park(group *g, gmsg *m, int replay, const char *reason)
{
    unassign(g, m);
    if (g->deleted) {
        /* Its parked stream is gone with it: nothing to write. */
        m->state = M_DONE;
        return;
    }
    m->state = M_PARKING;
    char data[300];
    const stele_event *e = &m->ev->e;
    int dn = snprintf(data, sizeof data, "%llu@%s", (unsigned long long)e->revision, e->stream);
    buf meta = {0};
    park_ctx *pc = malloc(sizeof *pc);
    int rc = gstore_link_meta_json(&meta, e, reason, m->retries);
    if (!pc || rc) {
        rc = err_set(STELE_ENOMEM, "out of memory");
    } else {
        *pc = (park_ctx){g, replay, m->key};
        stele_event_in ev = {.type = EV_LINK, .data = data, .data_len = (size_t)dn,
                             .metadata = meta.p, .metadata_len = meta.len,
                             .flags = STELE_META_JSON};
        rc = store_append_system_async(g->gs->db, g->parked_stream, STELE_ANY, &ev, 1, park_done,
                                       pc);
    }
    buf_free(&meta);
    if (rc) {
        free(pc);
        set_error(g, rc);
        set_avail(g, m, replay);
        return;
    }
    g->pending++;
}

/* A failed delivery: deliver again, or park once the retries are used. */
static void retry_or_park(group *g, gmsg *m, int replay, const char *reason)
{
    m->retries++;
    if (m->retries > g->def.set.max_retries)
        park(g, m, replay, reason);
    else
        set_avail(g, m, replay);
}

/* ------------------------------------------------------------ timeouts */

static int expire_queue(group *g, mqueue *q, int replay, int64_t now, int64_t *next)
{
    int any = 0;
    for (size_t i = 0; i < q->n; i++) {
        gmsg *m = mq_at(q, i);
        if (m->state != M_INFLIGHT)
            continue;
        if (m->deadline_ms <= now) {
            g->timed_out++;
            retry_or_park(g, m, replay, "message timeout");
            any = 1;
        } else if (m->deadline_ms < *next) {
            *next = m->deadline_ms;
        }
    }
    return any;
}

int group_expire(group *g, int64_t now)
{
    if (now < g->next_deadline_ms)
        return 0;
    int64_t next = INT64_MAX;
    int any = expire_queue(g, &g->main, 0, now, &next);
    any |= expire_queue(g, &g->replay, 1, now, &next);
    g->next_deadline_ms = next;
    if (any) {
        pop_done(g);
        group_wake(g);
    }
    return any;
}

/* ------------------------------------------------------------ checkpoints */

typedef struct save_ctx {
    group *g;
    uint64_t ckpt, trunc, seq;
} save_ctx;

static void save_done(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    (void)res;
    save_ctx *sc = ctx;
    group *g = sc->g;
    pthread_mutex_lock(&g->mu);
    g->saving = 0;
    g->save_rc = rc;
    if (rc == 0) {
        g->ckpt_saved = sc->ckpt;
        g->trunc_saved = sc->trunc;
        g->saved_seq = sc->seq;
    } else {
        snprintf(g->last_error, sizeof g->last_error, "%s: saving a checkpoint: %s",
                 stele_errname(rc), msg);
        g->saved_seq = sc->seq; /* failed, but finished: waiters move on */
    }
    g->pending--;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    free(sc);
}

/*
 * The rules (KurrentDB's, plus one): a checkpoint is written only when it
 * moved, at once after checkpoint_max_count completed messages, or once
 * checkpoint_after_ms passed since the last one and either
 * checkpoint_min_count messages completed, or nothing is outstanding and
 * something completed, or the read position passed SKIP_SAVE_MIN events
 * that the filter did not select (so a filter that matches little still
 * moves the checkpoint). The last rule keeps an idle group on $all from
 * writing checkpoints for ever: its own checkpoint events (and other
 * groups') move its read position, and each move must not call for
 * another checkpoint. One write at a time. The checkpoint stream has
 * maxCount = 1 (groups.c: set at creation, or at load for older groups),
 * so only the last checkpoint is visible and scavenging reclaims the rest.
 */
#define SKIP_SAVE_MIN 1000
void group_maybe_save(group *g, int64_t now, int force)
{
    if (g->saving || g->deleted)
        return;
    uint64_t ck = group_checkpoint(g);
    if (ck == g->ckpt_saved && g->parked_trunc == g->trunc_saved)
        return;
    const stele_group_settings *s = &g->def.set;
    int idle = g->main.n == 0 && g->replay.n == 0;
    uint64_t from = g->ckpt_saved == STELE_NONE ? s->start : g->ckpt_saved;
    uint64_t moved = ck > from ? ck - from : 0;
    int worth = (g->done_since_save && g->done_since_save >= s->checkpoint_min_count) ||
                (idle && g->done_since_save) || moved - g->done_since_save >= SKIP_SAVE_MIN ||
                g->parked_trunc != g->trunc_saved;
    int due = force || g->done_since_save >= s->checkpoint_max_count ||
              (now - g->last_save_ms >= (int64_t)s->checkpoint_after_ms && worth);
    if (!due)
        return;
    /* Tell the other servers how far this one is, and learn how far they
     * are: the checkpoint covers the whole group. A failure leaves this
     * server's own view, which is never ahead of the truth. */
    int src = gshare_sync(g, now, GSHARE_PROGRESS);
    if (src == 0)
        ck = group_checkpoint(g);
    else
        set_error(g, src);
    buf b = {0};
    save_ctx *sc = malloc(sizeof *sc);
    int rc = gstore_checkpoint_json(&b, ck, g->parked_trunc);
    if (!sc || rc) {
        rc = err_set(STELE_ENOMEM, "out of memory");
    } else {
        *sc = (save_ctx){g, ck, g->parked_trunc, ++g->save_seq};
        stele_event_in ev = {.type = EV_CHECKPOINT, .data = b.p, .data_len = b.len,
                             .flags = STELE_EVENT_JSON};
        rc = store_append_system_async(g->gs->db, g->ckpt_stream, STELE_ANY, &ev, 1, save_done,
                                       sc);
    }
    buf_free(&b);
    g->last_save_ms = now;
    if (rc) {
        free(sc);
        set_error(g, rc);
        return;
    }
    g->saving = 1;
    g->pending++;
    g->done_since_save = 0;
}

/* ------------------------------------------------------------ reading */

/* Events of the groups' own streams never reach a group. */
static int is_group_stream(const stele_event *e)
{
    return e->stream_len && e->stream[0] == '$' &&
           ((e->stream_len > sizeof SYS_PREFIX - 1 &&
             !memcmp(e->stream, SYS_PREFIX, sizeof SYS_PREFIX - 1)) ||
            (e->stream_len == sizeof CONFIG_STREAM - 1 && !memcmp(e->stream, CONFIG_STREAM, e->stream_len)));
}

static int64_t mono_now_ms(void) { return (int64_t)(time_mono_ns() / 1000000u); }

/* Open (or move) the subscription so that it reads from `from`. */
static int sub_at(group *g, uint64_t from)
{
    if (g->sub && stele_sub_position(g->sub) == from)
        return 0;
    stele_sub_close(g->sub);
    g->sub = NULL;
    return g->def.stream ? stele_subscribe_stream(g->gs->db, g->def.stream, from, &g->sub)
                         : stele_subscribe_all(g->gs->db, from, g->filter_in, &g->sub);
}

/* A stream's key is its revision; a view stream's ($ce-...), the event's
 * revision in the view; $all's, the position. */
static uint64_t key_of(group *g, stele_page *pg, size_t i)
{
    const stele_event *e = stele_page_event(pg, i);
    uint64_t key = g->def.stream ? e->revision : e->position;
    if (g->def.stream)
        stele_page_link(pg, i, NULL, &key);
    return key;
}

/* Queue the events [0, n) of a page read from a range ending at `to`. 1
 * if some came. */
static int queue_page(group *g, stele_page *pg, size_t n, uint64_t to)
{
    size_t added = 0;
    for (size_t i = 0; i < n; i++) {
        const stele_event *e = stele_page_event(pg, i);
        if (!g->def.stream && is_group_stream(e))
            continue;
        uint64_t key = key_of(g, pg, i);
        ev_blob *b = ev_blob_copy(e);
        gmsg *m = b ? mq_push(&g->main) : NULL;
        if (!m) {
            /* Nothing is lost: the rest of the range is read later. */
            ev_blob_unref(b);
            gshare_read_to(g, to, key);
            int rc = err_set(STELE_ENOMEM, "out of memory");
            g->read_err = rc;
            set_error(g, rc);
            return added > 0;
        }
        if (g->main.n > 1 && mq_at(&g->main, g->main.n - 2)->key > key)
            g->unordered = 1;
        m->ev = b;
        m->key = key;
        m->state = M_AVAIL;
        g->main_avail++;
        added++;
    }
    return added > 0;
}

/*
 * Read more events into the main queue, up to its room. 1 if some came.
 * What is read is what this server may deliver (group_share.c): the rest
 * of a range taken over from a server that died, or new events from the
 * frontier, claimed once read (a lost race drops the page and reads again
 * from where the winner stopped).
 */
static int fill(group *g)
{
    size_t size = g->def.set.buffer_size;
    int rc = 0;
    for (int attempt = 0; attempt < 4 && g->main.n < size; attempt++) {
        uint64_t from, to;
        if ((rc = gshare_next(g, mono_now_ms(), &from, &to)) || (rc = sub_at(g, from)))
            goto fail;
        stele_page *pg;
        if ((rc = stele_sub_next(g->sub, size - g->main.n, 0, &pg)))
            goto fail;
        g->read_err = 0;
        size_t n = stele_page_count(pg), keep = n;
        uint64_t end = stele_sub_position(g->sub);
        if (to != STELE_NONE) {
            for (size_t i = 0; i < n && keep == n; i++)
                if (key_of(g, pg, i) >= to)
                    keep = i;
            /* An empty read: nothing of the range is left to read. */
            if (keep < n || end > to || (n == 0 && end == from))
                end = to;
            int added = queue_page(g, pg, keep, to);
            stele_page_free(pg);
            gshare_read_to(g, to, end);
            if (added)
                return 1;
            continue;
        }
        if (end == from) {
            stele_page_free(pg);
            return 0; /* nothing new */
        }
        rc = gshare_claim(g, from, end);
        if (rc == STELE_EWRONGREV) {
            err_clear();
            stele_page_free(pg);
            continue;
        }
        if (rc) {
            stele_page_free(pg);
            goto fail;
        }
        int added = queue_page(g, pg, n, end);
        stele_page_free(pg);
        if (added)
            return 1;
    }
    return 0;
fail:
    g->read_err = rc;
    set_error(g, rc);
    return 0;
}

/* Load parked links to replay into the replay queue, up to its room. */
static int load_replay(group *g)
{
    size_t size = g->def.set.buffer_size;
    int added = 0;
    while (g->replay_next < g->replay_stop && g->replay.n < size) {
        backend *be = g->gs->db->be;
        stele_page *pg;
        uint64_t want = g->replay_stop - g->replay_next;
        if (want > size - g->replay.n)
            want = size - g->replay.n;
        int rc = be->ops->read_stream(be, g->parked_stream, strlen(g->parked_stream),
                                      g->replay_next, 0, (size_t)want, &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            g->replay_next = g->replay_stop;
            break;
        }
        if (rc) {
            set_error(g, rc);
            break;
        }
        size_t n = stele_page_count(pg);
        if (n == 0) {
            g->replay_next = g->replay_stop;
            stele_page_free(pg);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            const stele_event *link = stele_page_event(pg, i);
            if (link->revision >= g->replay_stop)
                break;
            ev_blob *b = NULL;
            if ((rc = gstore_resolve_link(g->gs->db, link, &b))) {
                set_error(g, rc);
                break;
            }
            if (b) {
                gmsg *m = mq_push(&g->replay);
                if (!m) {
                    ev_blob_unref(b);
                    break;
                }
                m->ev = b;
                m->key = link->revision;
                m->state = M_AVAIL;
                g->replay_avail++;
                added = 1;
            }
            /* An event that is gone (scavenged) is dropped from the
             * parked stream with the others. */
            g->replay_next = link->revision + 1;
        }
        stele_page_free(pg);
        if (rc)
            break;
    }
    pop_done(g);
    return added;
}

int group_start_replay(group *g, uint64_t max, uint64_t *count)
{
    uint64_t from = g->replay_next > g->parked_trunc ? g->replay_next : g->parked_trunc;
    if (g->replay_stop > from)
        from = g->replay_stop; /* a replay is under way: extend it */
    uint64_t stop = g->parked_next;
    if (stop < from)
        stop = from;
    else if (max && stop - from > max)
        stop = from + max;
    if (g->replay_next < g->parked_trunc)
        g->replay_next = g->parked_trunc;
    if (stop > g->replay_stop)
        g->replay_stop = stop;
    if (count)
        *count = stop - from;
    load_replay(g);
    group_wake(g);
    return 0;
}

/* ------------------------------------------------------------ dispatch */

static int batch_add(stele_batch *b, gmsg *m)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        batch_item *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return err_set(STELE_ENOMEM, "out of memory");
        b->v = v;
        b->cap = cap;
    }
    atomic_fetch_add(&m->ev->refs, 1);
    b->v[b->n++] = (batch_item){m->ev, m->retries};
    return 0;
}

/* Hand available messages of q from index `from` on to c. */
static int take(group *g, mqueue *q, size_t *navail, size_t from, gconsumer *c, size_t want,
                stele_batch *b, int64_t now, size_t *got)
{
    int pinned = g->def.set.strategy == STELE_PINNED;
    size_t left = *navail;
    for (size_t i = from; i < q->n && *got < want && left; i++) {
        gmsg *m = mq_at(q, i);
        if (m->state != M_AVAIL)
            continue;
        left--;
        pin *p = pin_find(&g->pins, &m->ev->e);
        if (pinned && p && p->owner != c)
            continue;
        int rc = pin_add(&g->pins, &m->ev->e, c);
        if (rc == 0 && (rc = batch_add(b, m)))
            pin_drop(&g->pins, &m->ev->e);
        if (rc)
            return rc;
        m->state = M_INFLIGHT;
        m->owner = c;
        m->deadline_ms = now + g->def.set.message_timeout_ms;
        if (m->deadline_ms < g->next_deadline_ms)
            g->next_deadline_ms = m->deadline_ms;
        c->in_flight++;
        c->delivered++;
        g->delivered++;
        (*navail)--;
        (*got)++;
    }
    return 0;
}

int group_dispatch(group *g, gconsumer *c, size_t want, stele_batch *b, int64_t now)
{
    size_t got = 0;
    if (g->replay_next < g->replay_stop)
        load_replay(g);
    int rc = take(g, &g->replay, &g->replay_avail, 0, c, want, b, now, &got);
    if (rc == 0)
        rc = take(g, &g->main, &g->main_avail, 0, c, want, b, now, &got);
    while (rc == 0 && got < want) {
        size_t before = g->main.n;
        if (!fill(g))
            break;
        rc = take(g, &g->main, &g->main_avail, before, c, want, b, now, &got);
    }
    if (rc)
        return rc;
    if (got == 0 && g->read_err && g->main.n == 0)
        return err_set(g->read_err, "%s", g->last_error);
    return 0;
}

/* ------------------------------------------------------------ ack / nack */

/* The in-flight message with this id (c's, or anyone's if c is NULL). */
static gmsg *find_inflight(group *g, gconsumer *c, const uint8_t id[16], int *replay)
{
    for (int r = 0; r < 2; r++) {
        mqueue *q = r ? &g->main : &g->replay;
        for (size_t i = 0; i < q->n; i++) {
            gmsg *m = mq_at(q, i);
            if (m->state == M_INFLIGHT && (!c || m->owner == c) && !memcmp(m->ev->e.id, id, 16)) {
                *replay = !r;
                return m;
            }
        }
    }
    return NULL;
}

int group_settle(group *g, gconsumer *c, const uint8_t (*ids)[16], size_t n, int action,
                 const char *reason)
{
    int replay;
    for (size_t i = 0; i < n; i++)
        if (!find_inflight(g, c, ids[i], &replay)) {
            char t[37];
            stele_uuid_format(ids[i], t);
            if (c)
                return err_set(STELE_ENOTFOUND,
                               "event %s is not in flight to consumer '%s' (never delivered to "
                               "it, already settled, or timed out)",
                               t, c->name);
            return err_set(STELE_ENOTFOUND,
                           "event %s is not in flight in group '%s' (never delivered, already "
                           "settled, or timed out)",
                           t, g->def.name);
        }
    for (size_t i = 0; i < n; i++) {
        gmsg *m = find_inflight(g, c, ids[i], &replay);
        if (!m)
            continue; /* the same id twice in one call */
        if (action < 0) {
            g->acked++;
            set_done(g, m);
        } else {
            g->nacked++;
            if (action == STELE_NACK_SKIP) {
                set_done(g, m);
            } else if (action == STELE_NACK_PARK) {
                park(g, m, replay, reason && *reason ? reason : "parked by the consumer");
            } else {
                retry_or_park(g, m, replay, reason && *reason ? reason : "retried by the consumer");
            }
        }
    }
    pop_done(g);
    /* A freed slot or stream (pinned) may let a waiting consumer go on. */
    group_wake(g);
    return 0;
}

void group_release_consumer(group *g, gconsumer *c)
{
    for (int r = 0; r < 2; r++) {
        mqueue *q = r ? &g->main : &g->replay;
        for (size_t i = 0; i < q->n; i++) {
            gmsg *m = mq_at(q, i);
            if (m->state == M_INFLIGHT && m->owner == c)
                retry_or_park(g, m, !r, "consumer disconnected");
        }
    }
    pop_done(g);
    group_wake(g);
}

/* ------------------------------------------------------------ rewind */

/* Drop the main queue and read again from `key`. Waits first for appends
 * in flight (a parking link must land before its message goes), then
 * forces a checkpoint and waits until it is durable, so a rewind survives
 * a crash. In-flight messages simply vanish: their acks find nothing. */
int group_rewind(group *g, uint64_t key, int64_t now)
{
    group_wait_pending(g);
    for (size_t i = 0; i < g->main.n; i++) {
        gmsg *m = mq_at(&g->main, i);
        unassign(g, m);
        ev_blob_unref(m->ev);
    }
    g->main.n = 0;
    g->main.head = 0;
    g->main_avail = 0;
    stele_sub_close(g->sub);
    g->sub = NULL;
    int rc = gshare_reset(g, key);
    if (rc)
        return rc;
    g->read_pos = key;
    g->read_err = 0;
    g->done_since_save = 1;
    if (key == g->ckpt_saved && g->parked_trunc == g->trunc_saved) {
        group_wake(g);
        return 0;
    }
    uint64_t seq = g->save_seq;
    group_maybe_save(g, now, 1);
    if (g->save_seq == seq)
        return err_set(STELE_EIO, "rewind: could not write the checkpoint: %s", g->last_error);
    group_wait_pending(g);
    if (g->save_rc)
        return err_set(g->save_rc, "rewind: writing the checkpoint failed: %s", g->last_error);
    group_wake(g);
    return 0;
}
