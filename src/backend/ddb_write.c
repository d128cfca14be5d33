/*
 * ddb_write.c - the DynamoDB backend's writer: appends queued by any
 * thread, committed by one writer thread per server in group commits of
 * one TransactWriteItems each (the table layout and the global feed are
 * described at the top of ddb.c).
 *
 * A transaction holds at most 100 items and 4 MB: a group is built within
 * that; one append that cannot fit (events + their client ids + 3) fails
 * with STELE_ETOOBIG and says how many events fit; an event item over
 * 400 KB likewise. Nothing is split: an append stays atomic.
 *
 * The writer. One thread per server takes the queued appends, reads the
 * sequencer and the streams they touch in one consistent BatchGetItem,
 * plans them in order (ddb_plan.c: tombstones, expected revisions,
 * revisions and positions) and commits them in one transaction. The
 * transaction's conditions (sequencer value, each stream's ver,
 * attribute_not_exists on every event and id item) make it fail whole when
 * anything it read has moved; the cancellation reasons tell a concurrent
 * commit (re-read, plan again) from a duplicate event id (that append
 * takes the idempotency path: its original result, or STELE_EIDCONFLICT).
 * A transaction whose answer was lost (DynamoDB unreachable) fails its
 * appends with STELE_EIO: it may have committed, and a retry with the same
 * event ids is idempotent.
 *
 * Requests: every append (single or multi-stream) and every delete or
 * tombstone (ddb_deletes.c: alone in its group) becomes a dreq that the
 * caller's thread queues and, for the synchronous calls, waits on (a
 * futex); the writer completes each exactly once.
 */
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backend/ddb_write.h"
#include "util/util.h"

void ddb_req_free(dreq *r)
{
    free(r->rm_buf);
    free(r->streams);
    free(r->recs);
    free(r->meta);
    free(r);
}

/* Called on the writer thread exactly once. */
static void req_complete(dreq *r)
{
    if (r->kind == DR_APPEND && r->done) {
        r->done(r->ctx, r->rc, &r->res, r->rc ? r->msg : "");
        ddb_req_free(r);
        return;
    }
    if (r->kind == DR_MULTI && r->mdone) {
        r->mdone(r->ctx, r->rc, r->per, r->nstreams, &r->mres, r->rc ? r->msg : "");
        ddb_req_free(r);
        return;
    }
    atomic_store(&r->finished, 1);
    syscall(SYS_futex, &r->finished, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void req_wait(dreq *r)
{
    while (!atomic_load(&r->finished))
        syscall(SYS_futex, &r->finished, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

/* Size of an event's item, as DynamoDB counts it (names + values), with
 * some slack. */
static uint64_t event_item_size(size_t stream_len, const stele_event_in *ev)
{
    uint64_t n = 260 + 2 * stream_len + 2 * strlen(ev->type) + ev->data_len + ev->metadata_len;
    for (size_t i = 0; i < ev->ntags; i++)
        n += strlen(ev->tags[i]) + 4;
    return n + (ev->metadata_len ? 2 * META_NAME_MAX : 0);
}

/* Check an append against the transaction limits; 0 or ETOOBIG. */
static int req_size(dreq *r)
{
    size_t ids = 0;
    r->bytes = 0;
    for (size_t i = 0; i < r->nrecs; i++) {
        uint64_t sz = event_item_size(r->streams[r->recs[i].s].len, r->recs[i].ev);
        if (sz > DDB_MAX_ITEM - 8192)
            return err_set(STELE_ETOOBIG,
                           "event %zu is about %llu bytes: a DynamoDB item holds at most 400 KB "
                           "(data, metadata, type and tags of one event at most ~390 KB)",
                           i, (unsigned long long)sz);
        r->bytes += sz;
        ids += !r->recs[i].made;
    }
    size_t states = 0;
    for (size_t s = 0; s < r->nstreams; s++) {
        if (r->streams[s].state) {
            states++;
            r->bytes += r->streams[s].state->state_len + 200;
            if (r->streams[s].state->state_len + 200 > DDB_MAX_ITEM - 8192)
                return err_set(STELE_ETOOBIG, "a state of %zu bytes: a DynamoDB item holds at most 400 KB",
                               r->streams[s].state->state_len);
        }
    }
    /* The view counters it moves (distinct kind + name). */
    r->nkeys = 0;
    for (size_t i = 0; i < r->nrecs; i++)
        for (int k = 0; k < 3; k++) {
            char kind, kind2;
            const char *name, *name2;
            size_t len, len2;
            if (!ddb_rec_key(r, i, k, &kind, &name, &len))
                continue;
            int seen = 0;
            for (size_t j = 0; j < i && !seen; j++)
                seen = ddb_rec_key(r, j, k, &kind2, &name2, &len2) && len2 == len && !memcmp(name, name2, len);
            r->nkeys += !seen;
        }
    r->actions = r->nrecs + ids + r->nstreams + states + r->nkeys;
    if (r->actions + 2 > DDB_MAX_ACTIONS)
        return err_set(STELE_ETOOBIG,
                       "this append needs %zu items in one DynamoDB transaction (events, their "
                       "client ids, %zu stream(s)%s, %zu view counters (categories, types, "
                       "correlation ids) and the sequencer and feed), and a "
                       "transaction holds at most %u: append at most %u events at once (%u "
                       "with client-given ids)",
                       r->actions + 2, r->nstreams, states ? ", states" : "", r->nkeys, DDB_MAX_ACTIONS,
                       DDB_MAX_ACTIONS - 2 - (unsigned)r->nstreams - (unsigned)states - (unsigned)r->nkeys,
                       (DDB_MAX_ACTIONS - 2 - (unsigned)r->nstreams - (unsigned)states - (unsigned)r->nkeys) / 2);
    if (r->bytes > DDB_MAX_TXN_BYTES - 65536)
        return err_set(STELE_ETOOBIG,
                       "this append is about %llu bytes: a DynamoDB transaction holds at most 4 MB",
                       (unsigned long long)r->bytes);
    return 0;
}

static int enqueue(ddb *D, dreq *r)
{
    pthread_mutex_lock(&D->qmu);
    if (D->stop) {
        pthread_mutex_unlock(&D->qmu);
        return err_set(STELE_ECLOSED, "store is closing");
    }
    r->next = NULL;
    if (D->qtail)
        D->qtail->next = r;
    else
        D->qhead = r;
    D->qtail = r;
    pthread_cond_signal(&D->qcv);
    pthread_mutex_unlock(&D->qmu);
    return 0;
}


/* ------------------------------------------------------------ the items */

/* An event's item; an append of n > 1 events gives each of them its
 * first position and n (cFirst, cCount: scavenging removes whole appends,
 * ddb_scavenge.c). */
static json_t *event_item(const char *stream, size_t len, const drec *d, const meta_ids *m, int64_t created,
                          uint64_t c_first, size_t c_count)
{
    const stele_event_in *ev = d->ev;
    char idt[37];
    stele_uuid_format(d->id, idt);
    char tp[64];
    snprintf(tp, sizeof tp, "%lld%020llu", (long long)created, (unsigned long long)d->pos);
    size_t cl = ddb_category_len(stream, len);
    json_t *it = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:{s:s}, s:o}", "stream",
                           ddb_s(stream, len), "revision", ddb_nu(d->rev), "position", ddb_nu(d->pos),
                           "eventId", ddb_s(idt, 36), "eventType", ddb_s(ev->type, strlen(ev->type)),
                           "flags", ddb_n(ev->flags & (STELE_EVENT_JSON | STELE_META_JSON | STELE_EVENT_ID_ULID)),
                           "created", ddb_n(created), "timePos", "N", tp, "category",
                           ddb_s(stream, cl));
    if (d->made)
        json_object_set_new(it, "idMade", ddb_n(1));
    if (c_count > 1) {
        json_object_set_new(it, "cFirst", ddb_nu(c_first));
        json_object_set_new(it, "cCount", ddb_nu(c_count));
    }
    if (ev->data_len)
        json_object_set_new(it, "data", ddb_b(ev->data, ev->data_len));
    if (ev->metadata_len) {
        json_object_set_new(it, "metadata", ddb_b(ev->metadata, ev->metadata_len));
        if (m->actor_len)
            json_object_set_new(it, "actor", ddb_s(m->actor, m->actor_len));
        if (m->correlation_len)
            json_object_set_new(it, "correlationId", ddb_s(m->correlation, m->correlation_len));
        if (m->causation_len)
            json_object_set_new(it, "causationId", ddb_s(m->causation, m->causation_len));
    }
    /* View ordinals: the keys of the KEYS_ONLY view indexes (ddb_view.c). */
    if (d->ce != UINT64_MAX)
        json_object_set_new(it, "ceRev", ddb_nu(d->ce));
    if (d->et != UINT64_MAX)
        json_object_set_new(it, "etRev", ddb_nu(d->et));
    if (d->bc != UINT64_MAX)
        json_object_set_new(it, "bcRev", ddb_nu(d->bc));
    if (d->sno != UINT64_MAX) {
        json_object_set_new(it, "streamNo", ddb_nu(d->sno));
        json_object_set_new(it, "nk", ddb_s("s", 1));
    }
    if (ev->ntags) {
        json_t *l = json_array();
        for (size_t i = 0; i < ev->ntags; i++)
            json_array_append_new(l, ddb_s(ev->tags[i], strlen(ev->tags[i])));
        json_object_set_new(it, "tags", json_pack("{s:o}", "L", l));
    }
    return it;
}

/* What each action of the transaction is, to read the cancellation
 * reasons. */
typedef struct act {
    int kind; /* 0 sequencer, 1 feed, 2 stream, 3 event, 4 id, 5 state, 6 view counter */
    dreq *r;
} act;

#define PUT_NEW(table, item, keyattr)                                                            \
    json_pack("{s:{s:s, s:o, s:s, s:{s:s}}}", "Put", "TableName", table, "Item", item,          \
              "ConditionExpression", "attribute_not_exists(#k)", "ExpressionAttributeNames", "#k", \
              keyattr)

/* The transaction being built: its actions and what each one is. */
typedef struct txn_b {
    json_t *items;
    act *acts;
    size_t na;
} txn_b;

static void txn_add(txn_b *t, json_t *item, int kind, dreq *r)
{
    json_array_append_new(t->items, item);
    t->acts[t->na++] = (act){kind, r};
}

/* The sequencer: moves from g->seq to `next` (conditional on g->seq, or
 * made by the first commit), with the count of streams made. */
static json_t *seq_action(ddb *D, const group *g, uint64_t next, int64_t created)
{
    uint64_t new_streams = 0;
    for (size_t i = 0; i < g->ngs; i++)
        new_streams += g->gs[i].touched && !g->gs[i].st.found &&
                       (g->gs[i].last != g->gs[i].st.last || g->gs[i].rm);
    if (g->seq_found)
        return json_pack("{s:{s:s, s:{s:o}, s:s, s:s, s:{s:s, s:s, s:s, s:s}, s:{s:o, s:o, s:o, s:o, s:o}}}",
                         "Update", "TableName", D->t_streams, "Key", "stream",
                         ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)), "UpdateExpression",
                         "SET #n = :n2, #t = :t, #sn = :sn ADD #c :c", "ConditionExpression", "#n = :n",
                         "ExpressionAttributeNames", "#n", "next", "#t", "t", "#c", "streams", "#sn", "streamNo",
                         "ExpressionAttributeValues", ":n", ddb_nu(g->seq), ":n2", ddb_nu(next), ":t",
                         ddb_n(created), ":c", ddb_nu(new_streams), ":sn", ddb_nu(g->sno_next));
    return json_pack("{s:{s:s, s:{s:o}, s:s, s:s, s:{s:s, s:s, s:s, s:s}, s:{s:o, s:o, s:o, s:o}}}",
                     "Update", "TableName", D->t_streams, "Key", "stream",
                     ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)), "UpdateExpression",
                     "SET #n = :n2, #t = :t, #sn = :sn ADD #c :c", "ConditionExpression",
                     "attribute_not_exists(#n)", "ExpressionAttributeNames", "#n", "next", "#t", "t",
                     "#c", "streams", "#sn", "streamNo", "ExpressionAttributeValues", ":n2", ddb_nu(next),
                     ":t", ddb_n(created), ":c", ddb_nu(new_streams), ":sn", ddb_nu(g->sno_next));
}

static json_t *feed_part(const char *rs, size_t rl, uint64_t rfirst, uint64_t rcount)
{
    return json_pack("{s:{s:o, s:o, s:o}}", "M", "s", ddb_s(rs, rl), "r", ddb_nu(rfirst), "n",
                     ddb_nu(rcount));
}

/* The feed item: the commit's events in position order, as runs of one
 * stream's consecutive revisions. */
static json_t *feed_action(ddb *D, const group *g, uint64_t next, int64_t created)
{
    json_t *parts = json_array();
    const char *rs = NULL;
    size_t rl = 0;
    uint64_t rfirst = 0, rcount = 0;
    for (size_t q = 0; q < g->nreqs; q++) {
        dreq *r = g->reqs[q];
        if (!r->planned)
            continue;
        for (size_t i = 0; i < r->nrecs; i++) {
            dstr *s = &r->streams[r->recs[i].s];
            if (rs && rl == s->len && !memcmp(rs, s->name, rl) && r->recs[i].rev == rfirst + rcount) {
                rcount++;
                continue;
            }
            if (rs)
                json_array_append_new(parts, feed_part(rs, rl, rfirst, rcount));
            rs = s->name;
            rl = s->len;
            rfirst = r->recs[i].rev;
            rcount = 1;
        }
    }
    if (rs)
        json_array_append_new(parts, feed_part(rs, rl, rfirst, rcount));
    return PUT_NEW(D->t_feed,
                   json_pack("{s:o, s:o, s:o, s:o, s:{s:o}}", "bucket",
                             ddb_nu(g->seq >> DDB_BUCKET_SHIFT), "position", ddb_nu(g->seq),
                             "count", ddb_nu(next - g->seq), "created", ddb_n(created),
                             "parts", "L", parts),
                   "position");
}

/* Streams the group changed: new state under the version read; streams
 * only checked: their state must still hold at commit. */
static void stream_actions(ddb *D, const group *g, txn_b *t)
{
    for (size_t i = 0; i < g->ngs; i++) {
        const gstream *gs = &g->gs[i];
        if (gs->rm) { /* the stream a removal deletes (ddb_deletes.c) */
            txn_add(t, ddb_remove_item(D, gs), 2, NULL);
            continue;
        }
        if (gs->touched && gs->last == gs->st.last) {
            json_t *cc = gs->st.found
                ? json_pack("{s:{s:s, s:{s:o}, s:s, s:{s:o}}}", "ConditionCheck", "TableName", D->t_streams,
                            "Key", "stream", ddb_s(gs->name, gs->len), "ConditionExpression", "ver = :v",
                            "ExpressionAttributeValues", ":v", ddb_nu(gs->st.ver))
                : json_pack("{s:{s:s, s:{s:o}, s:s, s:{s:s}}}", "ConditionCheck", "TableName", D->t_streams,
                            "Key", "stream", ddb_s(gs->name, gs->len), "ConditionExpression",
                            "attribute_not_exists(#k)", "ExpressionAttributeNames", "#k", "stream");
            txn_add(t, cc, 2, NULL);
            continue;
        }
        if (!gs->touched || gs->last == gs->st.last)
            continue;
        json_t *u;
        if (gs->st.found)
            u = json_pack("{s:{s:s, s:{s:o}, s:s, s:s, s:{s:o, s:o, s:o, s:o, s:o}}}", "Update",
                          "TableName", D->t_streams, "Key", "stream", ddb_s(gs->name, gs->len),
                          "UpdateExpression",
                          "SET lastRevision = :lr, lastPosition = :lp, deleted = :z, ver = :v2",
                          "ConditionExpression", "ver = :v", "ExpressionAttributeValues", ":lr",
                          ddb_nu(gs->last), ":lp", ddb_nu(gs->last_pos), ":z", ddb_n(0), ":v",
                          ddb_nu(gs->st.ver), ":v2", ddb_nu(gs->st.ver + 1));
        else
            u = PUT_NEW(D->t_streams,
                        json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "stream", ddb_s(gs->name, gs->len),
                                  "lastRevision", ddb_nu(gs->last), "lastPosition", ddb_nu(gs->last_pos),
                                  "deleted", ddb_n(0), "tombstoned", ddb_n(0), "ver", ddb_n(1),
                                  "metaVersion", ddb_n(-1), "nk", ddb_s("s", 1)),
                        "stream");
        txn_add(t, u, 2, NULL);
    }
}

/* View counters the group moved: their new counts under the value read
 * (the sequencer's condition already orders every commit; this one guards
 * a counter taken from a stale cache). */
static void view_counter_actions(ddb *D, const group *g, txn_b *t)
{
    for (size_t i = 0; i < g->nkeys; i++) {
        const gkey *k = &g->keys[i];
        if (k->next == k->read)
            continue;
        char kn[META_NAME_MAX + 3];
        size_t kl = ddb_key_name(k->kind, k->name, k->len, kn);
        char nk[2] = {k->kind, 0};
        json_t *u = json_pack("{s:{s:s, s:{s:o}, s:s, s:{s:s, s:s}, s:{s:o, s:o}}}", "Update", "TableName",
                              D->t_streams, "Key", "stream", ddb_s(kn, kl), "UpdateExpression",
                              "SET #n = :n2, nk = :k", "ExpressionAttributeNames", "#n", "next", "#s", "stream",
                              "ExpressionAttributeValues", ":n2", ddb_nu(k->next), ":k", ddb_s(nk, 1));
        json_t *up = json_object_get(u, "Update");
        if (k->found) {
            json_object_set_new(up, "ConditionExpression", json_string("#n = :n"));
            json_object_set_new(json_object_get(up, "ExpressionAttributeValues"), ":n", ddb_nu(k->read));
            json_object_del(json_object_get(up, "ExpressionAttributeNames"), "#s");
        } else {
            json_object_set_new(up, "ConditionExpression", json_string("attribute_not_exists(#s)"));
            json_object_del(json_object_get(up, "ExpressionAttributeNames"), "#n");
            json_object_set_new(up, "UpdateExpression", json_string("SET #n2 = :n2, nk = :k"));
            json_object_set_new(json_object_get(up, "ExpressionAttributeNames"), "#n2", json_string("next"));
        }
        txn_add(t, u, 6, NULL);
    }
}

/* Each planned request's events, id items and states. */
static void request_actions(ddb *D, const group *g, int64_t created, txn_b *t)
{
    for (size_t q = 0; q < g->nreqs; q++) {
        dreq *r = g->reqs[q];
        if (!r->planned)
            continue;
        for (size_t i = 0; i < r->nrecs; i++) {
            drec *d = &r->recs[i];
            dstr *s = &r->streams[d->s];
            txn_add(t,
                    PUT_NEW(D->t_events,
                            event_item(s->name, s->len, d, &r->meta[i], created, r->recs[0].pos, r->nrecs),
                            "revision"),
                    3, r);
            if (!d->made) {
                char idt[37];
                stele_uuid_format(d->id, idt);
                txn_add(t,
                        PUT_NEW(D->t_ids,
                                json_pack("{s:o, s:o, s:o, s:o, s:o}", "eventId", ddb_s(idt, 36), "stream",
                                          ddb_s(s->name, s->len), "revision", ddb_nu(d->rev), "position",
                                          ddb_nu(d->pos), "count", ddb_nu(r->nrecs)),
                                "eventId"),
                        4, r);
            }
        }
        for (size_t s = 0; s < r->nstreams; s++) {
            const stele_snapshot_in *st = r->streams[s].state;
            if (!st)
                continue;
            uint64_t rev = r->per[s].last_revision != STELE_NONE ? r->per[s].last_revision
                                                                   : r->per[s].current_revision;
            json_t *it = json_pack("{s:o, s:o, s:o, s:o, s:o}", "stream",
                                   ddb_s(r->streams[s].name, r->streams[s].len), "revision", ddb_nu(rev),
                                   "schemaVersion", ddb_nu(st->schema_version), "flags",
                                   ddb_n(st->flags & STELE_EVENT_JSON), "created", ddb_n(created));
            if (st->state_len)
                json_object_set_new(it, "state", ddb_b(st->state, st->state_len));
            txn_add(t, json_pack("{s:{s:s, s:o}}", "Put", "TableName", D->t_snaps, "Item", it), 5, r);
        }
    }
}

/* Build the group's transaction; fills acts. */
static json_t *build_txn(ddb *D, group *g, uint64_t next, int64_t created, act *acts, size_t *nacts)
{
    txn_b t = {json_array(), acts, 0};
    txn_add(&t, seq_action(D, g, next, created), 0, NULL);
    txn_add(&t, feed_action(D, g, next, created), 1, NULL);
    stream_actions(D, g, &t);
    view_counter_actions(D, g, &t);
    request_actions(D, g, created, &t);
    *nacts = t.na;
    return json_pack("{s:o, s:s}", "TransactItems", t.items, "ReturnConsumedCapacity", "TOTAL");
}

/* ------------------------------------------------------------ the writer */

/* Commit the group: plan, transact, and on a cancellation re-read and
 * plan again. Every request ends settled. */
static void cache_forget_group(ddb *D, group *g)
{
    D->cache->seq_known = 0;
    for (size_t i = 0; i < g->ngs; i++)
        ddb_cache_drop(D->cache, g->gs[i].name, g->gs[i].len);
    for (size_t i = 0; i < g->nkeys; i++)
        ddb_cache_drop_key(D->cache, &g->keys[i]);
}

/* Plan every request again from states read afresh (the group's cached
 * ones are forgotten); idempotent retries stay settled. */
static void replan_fresh(ddb *D, group *g)
{
    for (size_t q = 0; q < g->nreqs; q++) {
        dreq *r = g->reqs[q];
        if (!r->idempotent) {
            r->rc = 1;
            r->planned = 0;
            r->deferred = 0;
        }
    }
    cache_forget_group(D, g);
}

/* Read the group's states and plan each open request: 0 with *next the
 * sequencer after the planned events and *refused set when a check
 * failed, or the read's error. */
static int plan_group(ddb *D, group *g, int fresh, int *cached, uint64_t *next, int *refused)
{
    int rc = ddb_group_read(D, g, fresh, cached);
    *next = g->seq;
    *refused = 0;
    for (size_t q = 0; rc == 0 && q < g->nreqs; q++) {
        dreq *r = g->reqs[q];
        if (r->planned || (r->rc && r->rc != 1) || r->idempotent || r->deferred)
            continue;
        rc = ddb_plan(D, g, r, next);
        *refused |= rc == 0 && r->rc != 0 && r->rc != 1 && !r->idempotent;
    }
    return rc;
}

/* The transaction committed: the cache learns the new states, the
 * counters move, subscribers are told. */
static void group_committed(ddb *D, group *g, uint64_t next, int64_t created, json_t *resp)
{
    D->cache->seq_known = 1;
    D->cache->seq = next;
    D->cache->seq_t = created;
    D->cache->sno = g->sno_next;
    for (size_t i = 0; i < g->nkeys; i++)
        ddb_cache_put_key(D->cache, &g->keys[i]);
    for (size_t i = 0; i < g->ngs; i++)
        if (g->gs[i].rm)
            ddb_cache_drop(D->cache, g->gs[i].name, g->gs[i].len);
        else if (g->gs[i].touched && g->gs[i].last != g->gs[i].st.last)
            ddb_cache_put(D->cache, &g->gs[i]);
    ddb_count_capacity(D, resp, 1);
    atomic_fetch_add(&D->groups, 1);
    for (size_t q = 0; q < g->nreqs; q++)
        if (g->reqs[q]->planned)
            atomic_fetch_add(&D->appends, 1);
    atomic_fetch_add(&D->events, next - g->seq);
    atomic_store(&D->head, next);
    ddb_notify(D);
}

/* Whether a failed TransactWriteItems lost a race (read again, plan
 * again): a cancellation (a failed id item's condition marks its request
 * a duplicate) or a transaction conflict. STELE_DDB_DEBUG: the cancelled
 * actions go to stderr (`dbg` is the transaction). */
static int lost_race(const char *type, json_t *resp, const act *acts, size_t na, json_t *dbg)
{
    if (!strcmp(type, "TransactionConflictException") || !strcmp(type, "TransactionInProgressException"))
        return 1;
    if (strcmp(type, "TransactionCanceledException"))
        return 0;
    json_t *reasons = json_object_get(resp, "CancellationReasons");
    if (!json_array_size(reasons))
        return 1;
    int again = 0;
    size_t i;
    json_t *why;
    json_array_foreach(reasons, i, why) {
        const char *code = json_string_value(json_object_get(why, "Code"));
        if (!code || !strcmp(code, "None") || i >= na)
            continue;
        if (dbg) {
            char *t = json_dumps(json_array_get(json_object_get(dbg, "TransactItems"), i), JSON_COMPACT);
            fprintf(stderr, "ddb: cancelled: action %zu (kind %d): %s %.1000s\n", i, acts[i].kind, code, t);
            free(t);
        }
        if (!strcmp(code, "ConditionalCheckFailed") && acts[i].kind == 4)
            acts[i].r->dup = 1; /* a duplicate event id */
        again = 1;              /* conflicts: read again, plan again */
    }
    return again;
}

/* The transaction failed for good: each planned request gets the error,
 * worded for what the caller can do. */
static void group_failed(group *g, int rc, int again, int removal)
{
    if (again)
        rc = err_set(STELE_EBUSY, "dynamodb: the %s lost 200 races for the sequencer; retry later",
                     removal ? "delete" : "append");
    else if (rc == STELE_EIO && removal)
        err_set(STELE_EIO, "%s (the delete may have been written: read the stream to see)",
                stele_errmsg());
    else if (rc == STELE_EIO)
        err_set(STELE_EIO, "%s (the append may have been written: retry with the same event ids, "
                "which is idempotent)", stele_errmsg());
    for (size_t q = 0; q < g->nreqs; q++)
        if (g->reqs[q]->planned)
            ddb_req_fail(g->reqs[q], rc);
}

static void commit_group(ddb *D, group *g)
{
    act acts[DDB_MAX_ACTIONS + 4];
    /* A removal plans from every attribute of its stream's item (the
     * cache keeps only a few): it always reads afresh. */
    int removal = g->nreqs && g->reqs[0]->kind == DR_REMOVE;
    int fresh = removal;
    for (int attempt = 0;; attempt++) {
        int cached, refused;
        uint64_t next;
        int rc = plan_group(D, g, fresh, &cached, &next, &refused);
        if (rc == 0 && refused && cached) {
            /* Checks failed against cached states: read them afresh and
             * plan every request again before reporting anything. */
            replan_fresh(D, g);
            fresh = 1;
            continue;
        }
        if (rc) {
            cache_forget_group(D, g);
            for (size_t q = 0; q < g->nreqs; q++)
                if (g->reqs[q]->rc == 1 || g->reqs[q]->planned)
                    g->reqs[q]->rc = rc, snprintf(g->reqs[q]->msg, sizeof g->reqs[q]->msg, "%s",
                                                  stele_errmsg());
            return;
        }
        if (next == g->seq) { /* nothing to write: every request settled */
            int ok = 0;
            for (size_t q = 0; q < g->nreqs; q++)
                ok |= g->reqs[q]->rc == 0 && !g->reqs[q]->idempotent;
            if (ok && cached) {
                /* Check-only successes must not rest on cached states. */
                replan_fresh(D, g);
                fresh = 1;
                continue;
            }
            return;
        }
        int64_t created = time_now_us();
        if (created < g->seq_t)
            created = g->seq_t;
        size_t na;
        json_t *txn = build_txn(D, g, next, created, acts, &na);
        json_t *resp = NULL;
        char type[128];
        json_t *dbg = getenv("STELE_DDB_DEBUG") ? json_incref(txn) : NULL;
        rc = ddb_call(D, "TransactWriteItems", txn, &resp, type);
        if (rc == 0) {
            json_decref(dbg);
            group_committed(D, g, next, created, resp);
            json_decref(resp);
            return;
        }
        int again = lost_race(type, resp, acts, na, dbg);
        json_decref(resp);
        json_decref(dbg);
        cache_forget_group(D, g);
        fresh = 1;
        if (again && attempt < 200) {
            atomic_fetch_add(&D->retries, 1);
            for (size_t q = 0; q < g->nreqs; q++) {
                dreq *r = g->reqs[q];
                if (r->planned)
                    r->rc = 1; /* planned, not written: plan again */
                r->planned = 0;
                r->deferred = 0;
            }
            err_clear();
            if (attempt > 2)
                usleep((useconds_t)(1000 + rand() % (1000 * (attempt < 20 ? attempt : 20))));
            continue;
        }
        group_failed(g, rc, again, removal);
        return;
    }
}

/* The view counters r moves that the group does not have yet: counted
 * (add = 0) or added (1). */
static size_t group_add_keys(group *g, const dreq *r, int add)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nrecs; i++)
        for (int k = 0; k < 3; k++) {
            char kind, kind2;
            const char *name, *name2;
            size_t len, len2;
            if (!ddb_rec_key(r, i, k, &kind, &name, &len) || gk_find(g, kind, name, len))
                continue;
            int seen = 0;
            for (size_t j = 0; !add && j < i && !seen; j++)
                seen = ddb_rec_key(r, j, k, &kind2, &name2, &len2) && len2 == len && !memcmp(name, name2, len);
            if (seen)
                continue;
            n++;
            if (add)
                g->keys[g->nkeys++] = (gkey){kind, name, len, 0, 0, 0};
        }
    return n;
}

void *ddb_writer_main(void *arg)
{
    ddb *D = arg;
    group *g = D->grp;
    for (;;) {
        pthread_mutex_lock(&D->qmu);
        while (!D->qhead && !D->stop)
            pthread_cond_wait(&D->qcv, &D->qmu);
        if (!D->qhead && D->stop) {
            pthread_mutex_unlock(&D->qmu);
            break;
        }
        /* Take what fits in one transaction. */
        size_t actions = 2, nstreams = 0;
        uint64_t bytes = 0;
        g->nreqs = 0;
        g->ngs = 0;
        g->nkeys = 0;
        while (D->qhead && g->nreqs < DDB_MAX_ACTIONS) {
            dreq *r = D->qhead;
            /* A removal commits alone: its plan reads its stream afresh
             * and may not meet an append to it in the same group. */
            if (g->nreqs && (r->kind == DR_REMOVE || g->reqs[0]->kind == DR_REMOVE))
                break;
            size_t extra = 0;
            for (size_t s = 0; s < r->nstreams; s++)
                extra += !gs_find(g, r->streams[s].name, r->streams[s].len);
            size_t need = r->actions - r->nstreams - r->nkeys + extra + group_add_keys(g, r, 0);
            if (g->nreqs && (actions + need > DDB_MAX_ACTIONS || bytes + r->bytes > DDB_MAX_TXN_BYTES - 65536))
                break;
            actions += need;
            bytes += r->bytes;
            for (size_t s = 0; s < r->nstreams; s++)
                if (!gs_find(g, r->streams[s].name, r->streams[s].len)) {
                    gstream *gs = &g->gs[g->ngs++];
                    memset(gs, 0, sizeof *gs);
                    gs->name = r->streams[s].name;
                    gs->len = r->streams[s].len;
                    nstreams++;
                }
            group_add_keys(g, r, 1);
            D->qhead = r->next;
            if (!D->qhead)
                D->qtail = NULL;
            r->rc = 1; /* pending */
            r->planned = 0;
            g->reqs[g->nreqs++] = r;
        }
        pthread_mutex_unlock(&D->qmu);
        commit_group(D, g);
        for (size_t i = 0; i < g->ngs; i++)
            ddb_state_free(&g->gs[i].st);
        /* Deferred appends go back to the head of the queue, in order. */
        dreq *dh = NULL, *dl = NULL;
        for (size_t q = 0; q < g->nreqs; q++) {
            dreq *r = g->reqs[q];
            if (r->deferred && r->rc == 1) {
                r->deferred = 2;
                r->next = NULL;
                if (dl)
                    dl->next = r;
                else
                    dh = r;
                dl = r;
            }
        }
        if (dh) {
            pthread_mutex_lock(&D->qmu);
            dl->next = D->qhead;
            if (!D->qhead)
                D->qtail = dl;
            D->qhead = dh;
            pthread_mutex_unlock(&D->qmu);
        }
        for (size_t q = 0; q < g->nreqs; q++) {
            dreq *r = g->reqs[q];
            if (r->deferred == 2) {
                r->deferred = 0;
                continue;
            }
            if (r->rc == 1) { /* never planned: cannot happen */
                err_set(STELE_EINTERNAL, "dynamodb: an append was left unplanned");
                ddb_req_fail(r, STELE_EINTERNAL);
            }
            req_complete(r);
        }
        (void)nstreams;
    }
    return NULL;
}

/* --------------------------------------------------------------- appends */

/* The ids in each event's JSON metadata (actor, correlation, causation):
 * index attributes and view counters. 0 or ENOMEM. */
static int req_meta(dreq *r)
{
    if (!(r->meta = calloc(r->nrecs ? r->nrecs : 1, sizeof *r->meta)))
        return STELE_ENOMEM;
    for (size_t i = 0; i < r->nrecs; i++) {
        const stele_event_in *ev = r->recs[i].ev;
        if (ev->metadata_len && (ev->flags & STELE_META_JSON) &&
            meta_ids_extract(ev->metadata, ev->metadata_len, &r->meta[i]))
            return STELE_ENOMEM;
    }
    return 0;
}

static dreq *req_single(const append_args *a)
{
    dreq *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = DR_APPEND;
    r->streams = calloc(1, sizeof *r->streams);
    r->recs = calloc(a->n, sizeof *r->recs);
    if (!r->streams || !r->recs) {
        ddb_req_free(r);
        return NULL;
    }
    r->nstreams = 1;
    r->streams[0] = (dstr){a->stream, a->stream_len, a->expected, NULL, 0, a->n};
    r->nrecs = a->n;
    for (size_t i = 0; i < a->n; i++)
        r->recs[i] = (drec){0, &a->events[i], a->ids[i], a->made[i], 0, 0, 0, 0, 0, 0};
    if (req_meta(r)) {
        ddb_req_free(r);
        return NULL;
    }
    r->res = append_result_none();
    r->mres.failed_stream = SIZE_MAX;
    return r;
}

int ddb_req_run(ddb *D, dreq *r)
{
    int rc = req_size(r);
    if (rc == 0)
        rc = enqueue(D, r);
    if (rc)
        return rc;
    req_wait(r);
    if (r->rc)
        err_set(r->rc, "%s", r->msg);
    return r->rc;
}

int ddb_append(backend *b, const append_args *a, stele_append_result *res)
{
    backend_assert_append(a);
    ddb *D = (ddb *)b;
    dreq *r = req_single(a);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = ddb_req_run(D, r);
    if (res)
        *res = r->res;
    ddb_req_free(r);
    return rc;
}

int ddb_append_async(backend *b, const append_args *a, append_done_fn done, void *ctx)
{
    backend_assert_append(a);
    ddb *D = (ddb *)b;
    dreq *r = req_single(a);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    r->done = done;
    r->ctx = ctx;
    int rc = req_size(r);
    if (rc == 0)
        rc = enqueue(D, r);
    if (rc)
        ddb_req_free(r);
    return rc;
}

static dreq *req_multi(const multi_args *m, stele_append_result *per)
{
    dreq *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = DR_MULTI;
    r->streams = calloc(m->nstreams, sizeof *r->streams);
    r->recs = calloc(m->nrecords ? m->nrecords : 1, sizeof *r->recs);
    if (!r->streams || !r->recs) {
        ddb_req_free(r);
        return NULL;
    }
    r->nstreams = m->nstreams;
    for (size_t s = 0; s < m->nstreams; s++)
        r->streams[s] = (dstr){m->streams[s].stream, m->streams[s].len, m->streams[s].expected,
                               m->streams[s].state, 0, m->streams[s].nevents};
    r->nrecs = m->nrecords;
    for (size_t i = 0; i < m->nrecords; i++)
        r->recs[i] = (drec){m->records[i].stream, &m->records[i].event, m->ids[i], m->made[i], 0, 0, 0, 0, 0, 0};
    if (req_meta(r)) {
        ddb_req_free(r);
        return NULL;
    }
    r->per = per;
    r->cond = m->cond;
    for (size_t s = 0; s < m->nstreams; s++)
        per[s] = append_result_none();
    r->mres = (stele_multi_result){STELE_NONE, STELE_NONE, 0, SIZE_MAX, STELE_NONE, STELE_NONE};
    return r;
}

static int multi_check(const multi_args *m)
{
    (void)m;
    return 0;
}

int ddb_append_multi(backend *b, const multi_args *m, stele_append_result *per,
                            stele_multi_result *res)
{
    backend_assert_multi(m);
    ddb *D = (ddb *)b;
    int rc = multi_check(m);
    if (rc)
        return rc;
    dreq *r = req_multi(m, per);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    rc = ddb_req_run(D, r);
    *res = r->mres;
    ddb_req_free(r);
    return rc;
}

int ddb_append_multi_async(backend *b, const multi_args *m, stele_append_result *per,
                                  const stele_multi_result *init, stele_append_multi_cb done,
                                  void *ctx, size_t nstreams)
{
    backend_assert_multi(m);
    ddb *D = (ddb *)b;
    int rc = multi_check(m);
    if (rc)
        return rc;
    dreq *r = req_multi(m, per);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    r->mres = *init;
    r->mdone = done;
    r->ctx = ctx;
    (void)nstreams;
    if ((rc = req_size(r)) == 0)
        rc = enqueue(D, r);
    if (rc)
        ddb_req_free(r);
    return rc;
}


/* ------------------------------------------------------------ lifetime */

int ddb_writer_new(ddb *D)
{
    if (!(D->grp = calloc(1, sizeof *D->grp)) || !(D->cache = calloc(1, sizeof *D->cache)))
        return err_set(STELE_ENOMEM, "out of memory");
    return 0;
}

void ddb_writer_free(ddb *D)
{
    if (D->cache)
        for (unsigned i = 0; i < DDB_CACHE; i++)
            free(D->cache->e[i].name);
    free(D->cache);
    free(D->grp);
    D->cache = NULL;
    D->grp = NULL;
}
