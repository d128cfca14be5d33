/*
 * group_share.c - a consumer group shared by every server of a store. Each
 * server runs the group (group_run.c) for its own consumers, but delivers
 * only the events of the key ranges it claimed in the backend
 * (backend_group_ops in backend.h):
 *
 *   frontier F: every key below F belongs to some claim or is done.
 *   claim [from, to) owner expiry: `owner` delivers these; `from` moves up
 *                    as the head of the range is done; gone when all is.
 *
 * Reading new events: read a page from F, then claim [F, end of the page)
 * with a compare-and-set on F. The loser of a race drops its page and reads
 * again from the frontier the winner left, so no key is ever in two live
 * claims and, without failures, every event is delivered by one server
 * only (once, as on one server).
 *
 * A server renews all its claims every third of the lease (the groups
 * thread, gshare_tick) and reports how far the head of each range is done
 * right before it writes a checkpoint (gshare_sync), so what another
 * server resumes from is what the checkpoint says, as on one server. A server that dies stops
 * renewing: when its claims expire, a server whose consumers are reading
 * takes them over one at a time (steal, at most every quarter lease) and
 * delivers the range from its reported `from`: events acked after the
 * last checkpoint are delivered again, none is lost (at least once).
 *
 * The checkpoint (every event below it is done, across all servers) is
 * the lowest of: this server's first event not done, the unread part of a
 * range it is reading, the lowest claim of other owners and the frontier,
 * both as of the last sync, lowered by any claim race lost since (the
 * winner's range starts where this server wanted to start). Everything
 * only moves up, so a stale view gives a lower checkpoint, never one that
 * passes an event not done.
 *
 * Keys: "<checkpointBase>:<stream>::<group>", so a group deleted and made
 * again never sees the old incarnation's claims. A server started again
 * under the same node name (stele_options.node_name) first releases the
 * claims its name still holds, so they are taken over at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sub/group_int.h"

static backend *be(const group *g) { return g->gs->db->be; }
static const backend_group_ops *gops(const group *g) { return be(g)->ops->groups; }

static void make_key(group *g)
{
    snprintf(g->share_key, sizeof g->share_key, "%llu:%s::%s",
             (unsigned long long)g->def.ckpt_base, g->def.stream ? g->def.stream : "$all",
             g->def.name);
}

/* Fetch the frontier once; release what an earlier process of this node
 * name still holds. */
static int share_ready(group *g)
{
    if (g->share_ready)
        return 0;
    make_key(g);
    uint64_t f, fr, others;
    int rc = gops(g)->frontier(be(g), g->share_key, g->read_pos, &f);
    if (rc == 0)
        rc = gops(g)->sync(be(g), g->share_key, g->gs->node, NULL, 0, 0, &fr, &others);
    if (rc)
        return rc;
    g->read_pos = f;
    g->frontier_seen = fr;
    g->others_min = others;
    g->share_ready = 1;
    g->last_steal_ms = INT64_MIN / 2;
    return 0;
}

/* Insert a range, keeping them in key order (they are disjoint). */
static int range_add(group *g, uint64_t from, uint64_t to, uint64_t next)
{
    if (g->nranges == g->cap_ranges) {
        size_t cap = g->cap_ranges ? g->cap_ranges * 2 : 16;
        grange *v = realloc(g->ranges, cap * sizeof *v);
        if (!v)
            return err_set(STELE_ENOMEM, "out of memory");
        g->ranges = v;
        g->cap_ranges = cap;
    }
    size_t i = g->nranges;
    while (i > 0 && g->ranges[i - 1].from > from) {
        g->ranges[i] = g->ranges[i - 1];
        i--;
    }
    g->ranges[i] = (grange){from, to, next};
    g->nranges++;
    return 0;
}

/* The range holding `key`, or NULL. */
static grange *range_of(const group *g, uint64_t key)
{
    size_t lo = 0, hi = g->nranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g->ranges[mid].from <= key)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    grange *r = &g->ranges[lo - 1];
    return key < r->to ? r : NULL;
}

static int64_t steal_every_ms(const group *g)
{
    int64_t t = g->gs->lease_ms / 4;
    return t < 50 ? 50 : t > 1000 ? 1000 : t;
}

int gshare_next(group *g, int64_t now, uint64_t *from, uint64_t *to)
{
    int rc = share_ready(g);
    if (rc)
        return rc;
    for (size_t i = 0; i < g->nranges; i++)
        if (g->ranges[i].next < g->ranges[i].to) {
            *from = g->ranges[i].next;
            *to = g->ranges[i].to;
            return 0;
        }
    if (now - g->last_steal_ms >= steal_every_ms(g)) {
        g->last_steal_ms = now;
        group_claim c;
        rc = gops(g)->steal(be(g), g->share_key, g->gs->node, g->gs->lease_ms, &c);
        if (rc == 0) {
            if ((rc = range_add(g, c.from, c.to, c.from)))
                return rc; /* it expires again and someone takes it */
            g->ranges_taken++;
            *from = c.from;
            *to = c.to;
            return 0;
        }
        if (rc != STELE_ENOTFOUND)
            return rc;
        err_clear();
    }
    *from = g->read_pos;
    *to = STELE_NONE;
    return 0;
}

int gshare_claim(group *g, uint64_t from, uint64_t to)
{
    uint64_t f = STELE_NONE;
    int rc = gops(g)->claim(be(g), g->share_key, g->gs->node, from, to, g->gs->lease_ms, &f);
    if (rc == STELE_EWRONGREV) {
        /* Another server claimed from `from`: its ranges start there. */
        if (g->others_min == STELE_NONE || from < g->others_min)
            g->others_min = from;
        g->read_pos = f;
        g->claim_conflicts++;
        return rc;
    }
    if (rc)
        return rc;
    if ((rc = range_add(g, from, to, to))) {
        /* Claimed but not tracked: it expires and another server (or this
         * one) takes it over; nothing is lost. */
        g->read_pos = to;
        return rc;
    }
    g->read_pos = to;
    g->ranges_claimed++;
    return 0;
}

void gshare_read_to(group *g, uint64_t to, uint64_t next)
{
    for (size_t i = 0; i < g->nranges; i++)
        if (g->ranges[i].to == to) {
            g->ranges[i].next = next < to ? next : to;
            return;
        }
}

/* The lowest key of the main queue not done (STELE_NONE: none). */
static uint64_t queue_low(const group *g)
{
    if (!g->unordered) {
        for (size_t i = 0; i < g->main.n; i++)
            if (mq_at(&g->main, i)->state != M_DONE)
                return mq_at(&g->main, i)->key;
        return STELE_NONE;
    }
    uint64_t low = STELE_NONE;
    for (size_t i = 0; i < g->main.n; i++) {
        const gmsg *m = mq_at(&g->main, i);
        if (m->state != M_DONE && (low == STELE_NONE || m->key < low))
            low = m->key;
    }
    return low;
}

static uint64_t min_key(uint64_t a, uint64_t b)
{
    return a == STELE_NONE ? b : b == STELE_NONE ? a : a < b ? a : b;
}

uint64_t gshare_checkpoint(const group *g)
{
    if (!g->share_ready)
        return g->read_pos;
    uint64_t ck = queue_low(g);
    for (size_t i = 0; i < g->nranges; i++)
        if (g->ranges[i].next < g->ranges[i].to)
            ck = min_key(ck, g->ranges[i].next);
    ck = min_key(ck, g->others_min);
    uint64_t f = g->read_pos > g->frontier_seen ? g->read_pos : g->frontier_seen;
    return min_key(ck, f);
}

int gshare_sync(group *g, int64_t now, int mode)
{
    if (!g->share_ready)
        return 0;
    int release = mode == GSHARE_RELEASE;
    size_t n = mode == GSHARE_RENEW ? 0 : g->nranges;
    group_claim *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return err_set(STELE_ENOMEM, "out of memory");
    /* Each range's progress: the unread part, lowered by its first
     * message not done. */
    for (size_t i = 0; i < n; i++)
        v[i] = (group_claim){g->ranges[i].next, g->ranges[i].to};
    for (size_t i = 0; n && i < g->main.n; i++) {
        const gmsg *m = mq_at(&g->main, i);
        grange *r = m->state == M_DONE ? NULL : range_of(g, m->key);
        if (r && m->key < v[r - g->ranges].from)
            v[r - g->ranges].from = m->key;
    }
    uint64_t f, others;
    int rc = gops(g)->sync(be(g), g->share_key, g->gs->node, v, n, release ? 0 : g->gs->lease_ms,
                           &f, &others);
    if (rc == 0 && mode != GSHARE_RENEW) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].from >= v[i].to && !release)
                continue; /* all done: the claim is gone */
            g->ranges[k] = g->ranges[i];
            g->ranges[k].from = v[i].from;
            k++;
        }
        g->nranges = k;
    }
    if (rc == 0) {
        g->frontier_seen = f;
        g->others_min = others;
        g->last_sync_ms = now;
    }
    free(v);
    return rc;
}

void gshare_tick(group *g, int64_t now)
{
    if (!g->share_ready || now - g->last_sync_ms < (int64_t)g->gs->lease_ms / 3)
        return;
    int rc = gshare_sync(g, now, GSHARE_RENEW);
    if (rc)
        snprintf(g->last_error, sizeof g->last_error, "%s: renewing the group's claims: %s",
                 stele_errname(rc), stele_errmsg());
}

int gshare_reset(group *g, uint64_t pos)
{
    make_key(g);
    int rc = gops(g)->reset(be(g), g->share_key, pos);
    if (rc)
        return rc;
    g->nranges = 0;
    if (pos != STELE_NONE) {
        g->read_pos = g->frontier_seen = pos;
        g->others_min = STELE_NONE;
    }
    return 0;
}

void gshare_free(group *g)
{
    free(g->ranges);
    g->ranges = NULL;
    g->nranges = g->cap_ranges = 0;
}
