/*
 * ddb.c - the DynamoDB backend: Stele's streams, $all and snapshots in
 * DynamoDB tables, so any number of Stele servers can share one store
 * (`--store dynamodb://PREFIX?endpoint=URL&region=R`, docs/backends.md).
 *
 * Tables (PREFIX-NAME, created by the first open or `stele migrate`,
 * on-demand capacity):
 *   events     key (stream S, revision N): one item per event, seed 000's
 *              layout: position, eventId, eventType, data (B), metadata (B),
 *              tags, flags, created (µs), category, actor, correlationId, and
 *              timePos = created * 10^20 + position, the sort key of four
 *              GSIs: byType (eventType), byCategory (category, seed 003's
 *              aggregateType), byActor (actor, seed 003's userId) and
 *              byCorrelation.
 *   streams    key stream: each stream's state (lastRevision, lastPosition,
 *              deleted, tombstoned, truncateBefore, its metadata) with a
 *              version `ver` bumped by every write to it; and one more item,
 *              the sequencer (key "\x01seq"): next (the next position) and t
 *              (the last commit's created time).
 *   ids        key eventId: where each client-given event id was written,
 *              for idempotent retries.
 *   feed       key (bucket N, position N): one item per commit, at its
 *              first position (bucket = position >> 12): the streams and
 *              revisions of its events in position order. $all reads go
 *              through it.
 *   snapshots  key (stream S, revision N): saved states (seed 003's table).
 *
 * The global feed. Every commit is one TransactWriteItems that also moves
 * the sequencer from N to N+k under the condition next = N; its k events
 * take positions N..N+k-1. DynamoDB serialises transactions on an item, so
 * commits on any number of servers are totally ordered by the sequencer;
 * positions are gapless and in commit order, and a reader that read
 * next = H (a consistent read) and then reads positions below H sees
 * committed events only, all of them. Created times are made monotonic
 * along positions (max(now, t)), so time ranges are position ranges.
 * The price: one hot item. Every commit writes it (2 WCU, as every item in a
 * transaction), so a store commits at most ~1,000/2 transactions a second
 * on real DynamoDB (the per-item limit); each server therefore batches the
 * appends queued while its previous transaction was in flight into one
 * transaction (group commit), so events/s grows with concurrency.
 *
 * A transaction holds at most 100 items and 4 MB: a group is built within
 * that; one append that cannot fit (events + their client ids + 3) fails
 * with STELE_ETOOBIG and says how many events fit; an event item over
 * 400 KB likewise. Nothing is split: an append stays atomic.
 *
 * The writer. One thread per server takes the queued appends, reads the
 * sequencer and the streams they touch in one consistent BatchGetItem,
 * plans them in order (tombstones, expected revisions, revisions and
 * positions) and commits them in one transaction. The transaction's
 * conditions (sequencer value, each stream's ver, attribute_not_exists on
 * every event and id item) make it fail whole when anything it read has
 * moved; the cancellation reasons tell a concurrent commit (re-read, plan
 * again) from a duplicate event id (that append takes the idempotency path:
 * its original result, or STELE_EIDCONFLICT). A transaction whose answer
 * was lost (DynamoDB unreachable) fails its appends with STELE_EIO: it may
 * have committed, and a retry with the same event ids is idempotent.
 *
 * Commit notification. A poller thread reads the sequencer (10 ms after a
 * change, backing off to 100 ms when idle) and bumps the commit generation
 * when it moves, so subscribers on every server wake within ~100 ms of a
 * commit elsewhere; the server's own commits wake them at once.
 */
#include <errno.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backend/expect.h"
#include "backend/ddb_int.h"
#include "util/util.h"

/* ------------------------------------------------------------- requests */

typedef struct dstr {
    const char *name;
    size_t len;
    int64_t expected;
    const stele_snapshot_in *state;
    uint64_t first_rev; /* planned */
    size_t nev;
} dstr;

typedef struct drec {
    size_t s;
    const stele_event_in *ev;
    const uint8_t *id;
    int made;
    uint64_t rev, pos; /* planned */
} drec;

enum { DR_APPEND, DR_MULTI };

struct dreq {
    int kind;
    dstr *streams;
    size_t nstreams;
    const stele_condition *cond; /* DR_MULTI: NULL or the DCB condition */
    drec *recs;
    size_t nrecs;
    size_t actions;
    uint64_t bytes;
    int rc;
    char msg[512];
    int dup;         /* a duplicate id was reported: take the idempotency path */
    int idempotent;  /* settled as a retry of an earlier append */
    int planned;     /* part of the transaction being built */
    int deferred;    /* shares a client id with an earlier append of the group: next group */
    /* results */
    stele_append_result res;        /* DR_APPEND */
    stele_append_result *per;       /* DR_MULTI: nstreams */
    stele_multi_result mres;
    /* completion */
    append_done_fn done;
    stele_append_multi_cb mdone;
    void *ctx;
    _Atomic uint32_t finished;
    dreq *next;
};

static void req_free(dreq *r)
{
    free(r->streams);
    free(r->recs);
    free(r);
}

static void req_fail(dreq *r, int rc)
{
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
}

/* Called on the writer thread exactly once. */
static void req_complete(dreq *r)
{
    if (r->kind == DR_APPEND && r->done) {
        r->done(r->ctx, r->rc, &r->res, r->rc ? r->msg : "");
        req_free(r);
        return;
    }
    if (r->kind == DR_MULTI && r->mdone) {
        r->mdone(r->ctx, r->rc, r->per, r->nstreams, &r->mres, r->rc ? r->msg : "");
        req_free(r);
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
    r->actions = r->nrecs + ids + r->nstreams + states;
    if (r->actions + 2 > DDB_MAX_ACTIONS)
        return err_set(STELE_ETOOBIG,
                       "this append needs %zu items in one DynamoDB transaction (events, their "
                       "client ids, %zu stream(s)%s and the sequencer and feed), and a "
                       "transaction holds at most %u: append at most %u events at once (%u "
                       "with client-given ids)",
                       r->actions + 2, r->nstreams, states ? ", states" : "", DDB_MAX_ACTIONS,
                       DDB_MAX_ACTIONS - 2 - (unsigned)r->nstreams - (unsigned)states,
                       (DDB_MAX_ACTIONS - 2 - (unsigned)r->nstreams - (unsigned)states) / 2);
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

/* ------------------------------------------------------------- planning */

/* A stream as the group sees it. */
typedef struct gstream {
    const char *name;
    size_t len;
    dstate st;     /* as read */
    uint64_t last, last_pos; /* after the group's planned appends */
    int deleted;
    int touched;
} gstream;

struct group {
    dreq *reqs[DDB_MAX_ACTIONS];
    size_t nreqs;
    gstream gs[DDB_MAX_ACTIONS];
    size_t ngs;
    uint64_t seq;
    int64_t seq_t;
    int seq_found;
};

static gstream *gs_find(group *g, const char *name, size_t len)
{
    for (size_t i = 0; i < g->ngs; i++)
        if (g->gs[i].len == len && !memcmp(g->gs[i].name, name, len))
            return &g->gs[i];
    return NULL;
}

/*
 * The writer's cache: the sequencer and the streams as its own last
 * transactions left them. Planning from it saves the BatchGetItem of the
 * next group; it is safe because every input of a plan is a condition of
 * the transaction (the sequencer's value, each stream's ver), so a stale
 * entry only costs a cancelled transaction and a fresh read. A request that
 * fails its checks against cached states is planned again after a fresh
 * read before its error is reported. Only the writer thread uses it.
 */
typedef struct centry {
    char *name;
    size_t len;
    uint64_t ver, last, last_pos;
    int deleted;
} centry;

#define DDB_CACHE 4096u

typedef struct dcache {
    int seq_known;
    uint64_t seq;
    int64_t seq_t;
    centry e[DDB_CACHE];
} dcache;

static centry *cache_slot(dcache *c, const char *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return &c->e[h % DDB_CACHE];
}

static void cache_drop(dcache *c, const char *name, size_t len)
{
    centry *e = cache_slot(c, name, len);
    if (e->name && e->len == len && !memcmp(e->name, name, len)) {
        free(e->name);
        e->name = NULL;
    }
}

static void cache_put(dcache *c, const gstream *gs)
{
    centry *e = cache_slot(c, gs->name, gs->len);
    if (!e->name || e->len != gs->len || memcmp(e->name, gs->name, gs->len)) {
        free(e->name);
        if (!(e->name = strndup(gs->name, gs->len)))
            return;
        e->len = gs->len;
    }
    e->ver = gs->st.found ? gs->st.ver + 1 : 1;
    e->last = gs->last;
    e->last_pos = gs->last_pos;
    e->deleted = 0;
}

/* The group's streams and the sequencer from the cache where it has them,
 * the rest in one consistent BatchGetItem (several when DynamoDB leaves
 * keys unprocessed). *cached: something came from the cache. */
static int group_read(ddb *D, group *g, int fresh, int *cached)
{
    dcache *c = D->cache;
    json_t *keys = json_array();
    *cached = 0;
    g->seq = 0;
    g->seq_t = 0;
    g->seq_found = 0;
    if (!fresh && c->seq_known) {
        g->seq = c->seq;
        g->seq_t = c->seq_t;
        g->seq_found = 1;
        *cached = 1;
    } else {
        json_array_append_new(keys, json_pack("{s:o}", "stream", ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY))));
    }
    for (size_t i = 0; i < g->ngs; i++) {
        gstream *gs = &g->gs[i];
        ddb_state_free(&gs->st);
        ddb_state_parse(NULL, &gs->st);
        centry *e = cache_slot(c, gs->name, gs->len);
        if (!fresh && e->name && e->len == gs->len && !memcmp(e->name, gs->name, gs->len)) {
            gs->st.found = 1;
            gs->st.ver = e->ver;
            gs->st.last = e->last;
            gs->st.last_pos = e->last_pos;
            gs->st.deleted = e->deleted;
            *cached = 1;
            continue;
        }
        json_array_append_new(keys, json_pack("{s:o}", "stream", ddb_s(gs->name, gs->len)));
    }
    if (!json_array_size(keys)) {
        json_decref(keys);
        for (size_t i = 0; i < g->ngs; i++) {
            gstream *gs = &g->gs[i];
            gs->last = gs->st.last;
            gs->last_pos = gs->st.last_pos;
            gs->deleted = gs->st.deleted;
            gs->touched = 0;
        }
        return 0;
    }
    json_t *req = json_pack("{s:{s:{s:o, s:b}}, s:s}", "RequestItems", D->t_streams, "Keys", keys,
                            "ConsistentRead", 1, "ReturnConsumedCapacity", "TOTAL");
    for (int round = 0; req; round++) {
        json_t *resp;
        int rc = ddb_call(D, "BatchGetItem", req, &resp, NULL);
        if (rc)
            return rc;
        ddb_count_capacity(D, resp, 0);
        json_t *items = json_object_get(json_object_get(resp, "Responses"), D->t_streams);
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
            size_t n;
            const char *name = ddb_get_s(it, "stream", &n);
            if (!name)
                continue;
            if (n == strlen(DDB_SEQ_KEY) && !memcmp(name, DDB_SEQ_KEY, n)) {
                int64_t v;
                g->seq_found = 1;
                g->seq = ddb_get_n(it, "next", &v) == 0 ? (uint64_t)v : 0;
                g->seq_t = ddb_get_n(it, "t", &v) == 0 ? v : 0;
                continue;
            }
            gstream *gs = gs_find(g, name, n);
            if (gs)
                ddb_state_parse(it, &gs->st);
        }
        json_t *un = json_object_get(json_object_get(resp, "UnprocessedKeys"), D->t_streams);
        req = NULL;
        if (un && json_array_size(json_object_get(un, "Keys"))) {
            if (round > 20) {
                json_decref(resp);
                return err_set(STELE_EBUSY, "dynamodb BatchGetItem: keys left unprocessed");
            }
            usleep(10000u << (round < 5 ? round : 5));
            req = json_pack("{s:{s:O}, s:s}", "RequestItems", D->t_streams, un, "ReturnConsumedCapacity", "TOTAL");
        }
        json_decref(resp);
    }
    for (size_t i = 0; i < g->ngs; i++) {
        gstream *gs = &g->gs[i];
        gs->last = gs->st.last;
        gs->last_pos = gs->st.last_pos;
        gs->deleted = gs->st.deleted;
        gs->touched = 0;
    }
    return 0;
}

/* Is r a retry of an append already written? Reads where its client ids
 * went. Returns 1 when settled (r holds the original result or an id
 * conflict), 0 when not a retry, or an error of the read itself. */
static int check_retry(ddb *D, dreq *r)
{
    size_t nids = 0;
    json_t *keys = json_array();
    for (size_t i = 0; i < r->nrecs && nids < 100; i++)
        if (!r->recs[i].made) {
            char t[37];
            stele_uuid_format(r->recs[i].id, t);
            json_array_append_new(keys, json_pack("{s:o}", "eventId", ddb_s(t, 36)));
            nids++;
        }
    if (!nids) {
        json_decref(keys);
        return 0;
    }
    /* Every key, following UnprocessedKeys (DynamoDB may leave some). */
    json_t *resp = json_object(), *items = json_array();
    json_object_set_new(resp, "items", items);
    json_t *req = json_pack("{s:{s:{s:o, s:b}}}", "RequestItems", D->t_ids, "Keys", keys, "ConsistentRead", 1);
    int rc = 0;
    for (int round = 0; req; round++) {
        json_t *part;
        if ((rc = ddb_call(D, "BatchGetItem", req, &part, NULL))) {
            json_decref(resp);
            return rc;
        }
        json_array_extend(items, json_object_get(json_object_get(part, "Responses"), D->t_ids));
        json_t *un = json_object_get(json_object_get(part, "UnprocessedKeys"), D->t_ids);
        req = NULL;
        if (un && json_array_size(json_object_get(un, "Keys"))) {
            if (round > 50) {
                json_decref(part);
                json_decref(resp);
                return err_set(STELE_EBUSY, "dynamodb BatchGetItem: keys left unprocessed");
            }
            usleep(5000u << (round < 4 ? round : 4));
            req = json_pack("{s:{s:O}}", "RequestItems", D->t_ids, un);
        }
        json_decref(part);
    }
    /* found[i]: record i's id item, or NULL */
    json_t **found = calloc(r->nrecs, sizeof *found);
    size_t nfound = 0;
    size_t k;
    json_t *it;
    json_array_foreach(items, k, it) {
        const char *t = ddb_get_s(it, "eventId", NULL);
        uint8_t id[16];
        if (!t || stele_uuid_parse(t, id))
            continue;
        for (size_t i = 0; i < r->nrecs; i++)
            if (!r->recs[i].made && !memcmp(r->recs[i].id, id, 16) && found) {
                found[i] = it;
                nfound++;
                break;
            }
    }
    int settled = 0;
    if (!found) {
        rc = err_set(STELE_ENOMEM, "out of memory");
        goto out;
    }
    if (!nfound)
        goto out;
    settled = 1;
    char idt[37];
    /* Every event must have been written by one earlier append: same
     * streams, consecutive revisions per stream, in this order. */
    uint64_t first_pos = UINT64_MAX, last_pos = 0;
    for (size_t s = 0; s < r->nstreams; s++) {
        r->streams[s].first_rev = UINT64_MAX;
        r->streams[s].nev = 0;
    }
    for (size_t i = 0; i < r->nrecs; i++) {
        drec *d = &r->recs[i];
        dstr *s = &r->streams[d->s];
        if (d->made || !found[i]) {
            stele_uuid_format(d->id, idt);
            err_set(STELE_EIDCONFLICT,
                    "event %zu: an earlier append wrote some of this append's event ids but not "
                    "event %zu's, so this is not a retry of it",
                    i, i);
            req_fail(r, STELE_EIDCONFLICT);
            goto out;
        }
        size_t n;
        const char *sn = ddb_get_s(found[i], "stream", &n);
        uint64_t rev = ddb_get_nu(found[i], "revision"), pos = ddb_get_nu(found[i], "position");
        stele_uuid_format(d->id, idt);
        if (!sn || n != s->len || memcmp(sn, s->name, n)) {
            err_set(STELE_EIDCONFLICT, "event id %s was already written to another stream", idt);
            req_fail(r, STELE_EIDCONFLICT);
            goto out;
        }
        uint64_t want = s->nev == 0 ? (s->expected >= 0 ? (uint64_t)s->expected + 1 : rev)
                                    : s->first_rev + s->nev;
        if (rev != want) {
            err_set(STELE_EIDCONFLICT,
                    "event id %s was already written at revision %llu of '%.*s', not where this "
                    "append puts it",
                    idt, (unsigned long long)rev, (int)s->len, s->name);
            req_fail(r, STELE_EIDCONFLICT);
            goto out;
        }
        if (s->nev == 0)
            s->first_rev = rev;
        s->nev++;
        d->rev = rev;
        d->pos = pos;
        first_pos = pos < first_pos ? pos : first_pos;
        last_pos = pos > last_pos ? pos : last_pos;
    }
    for (size_t i = 0; i < r->nrecs; i++)
        if (r->recs[i].pos != first_pos + i) {
            stele_uuid_format(r->recs[i].id, idt);
            err_set(STELE_EIDCONFLICT,
                    "event %zu: id %s was already written, but not by an append that this one repeats "
                    "exactly (same events, same order)", i, idt);
            req_fail(r, STELE_EIDCONFLICT);
            goto out;
        }
    if (last_pos - first_pos + 1 != r->nrecs) {
        err_set(STELE_EIDCONFLICT, "the event ids were written by several earlier appends");
        req_fail(r, STELE_EIDCONFLICT);
        goto out;
    }
    r->rc = 0;
    r->idempotent = 1;
    if (r->kind == DR_APPEND) {
        r->res.first_revision = r->recs[0].rev;
        r->res.last_revision = r->recs[r->nrecs - 1].rev;
        r->res.first_position = first_pos;
        r->res.last_position = last_pos;
        r->res.idempotent = 1;
    } else {
        for (size_t s = 0; s < r->nstreams; s++) {
            stele_append_result *p = &r->per[s];
            p->idempotent = 1;
            if (!r->streams[s].nev)
                continue;
            p->first_revision = r->streams[s].first_rev;
            p->last_revision = r->streams[s].first_rev + r->streams[s].nev - 1;
        }
        for (size_t i = 0; i < r->nrecs; i++) {
            stele_append_result *p = &r->per[r->recs[i].s];
            if (p->first_position == STELE_NONE || r->recs[i].pos < p->first_position)
                p->first_position = r->recs[i].pos;
            if (p->last_position == STELE_NONE || r->recs[i].pos > p->last_position)
                p->last_position = r->recs[i].pos;
        }
        r->mres.first_position = first_pos;
        r->mres.last_position = last_pos;
        r->mres.idempotent = 1;
    }
out:
    free(found);
    json_decref(resp);
    return rc ? rc : settled;
}

/* A multi-stream append's expectation for stream i, KurrentDB 26.1's table
 * as the local engine applies it (local_multi.c): 0 or the failure, with
 * the stream marked in per[] and the first failure reported. */
static int multi_expect(group *g, dreq *r, size_t i)
{
    dstr *ds = &r->streams[i];
    gstream *gs = gs_find(g, ds->name, ds->len);
    int found = gs->st.found || gs->touched;
    int tomb = gs->st.tombstoned;
    int softdel = found && !tomb && gs->deleted;
    int exists = found && !tomb && !softdel && gs->last != UINT64_MAX;
    uint64_t cur = found && gs->last != UINT64_MAX ? gs->last : STELE_NONE;
    int64_t e = ds->expected;
    expect_stream es = {tomb, softdel, exists, cur};
    int rc = expect_multi_check(e, &es, ds->nev != 0);
    if (!rc)
        return 0;
    r->per[i].failed = rc;
    r->per[i].current_revision = cur;
    if (r->mres.failed_stream != SIZE_MAX)
        return rc;
    r->mres.failed_stream = i;
    r->mres.current_revision = cur;
    return expect_multi_fail(rc, i, ds->name, ds->len, e, &es);
}

/* All of them (or, with tomb_writes, only the tombstoned streams written). */
static int multi_expectations(group *g, dreq *r, int tomb_writes)
{
    int first = 0;
    for (size_t i = 0; i < r->nstreams; i++) {
        gstream *gs = gs_find(g, r->streams[i].name, r->streams[i].len);
        if (tomb_writes && !(r->streams[i].nev && gs->st.tombstoned))
            continue;
        int rc = multi_expect(g, r, i);
        if (rc && !first)
            first = rc;
    }
    if (first)
        req_fail(r, first);
    return first;
}

/* Plan r against the group's states: 0 with r->planned set (revisions and
 * positions assigned from *next), or r settled with its error. A negative
 * return is a failed read (the whole group fails with it). */
static int plan(ddb *D, group *g, dreq *r, uint64_t *next)
{
    char eb[32];
    r->mres.failed_stream = SIZE_MAX;
    r->mres.current_revision = STELE_NONE;
    r->res.current_revision = STELE_NONE;
    /* The same client id in an earlier append of this group (a retry
     * racing its original): one transaction cannot hold both id items, so
     * this one waits for the next group, where it is a retry or a
     * conflict. */
    for (size_t q = 0; q < g->nreqs; q++) {
        dreq *o = g->reqs[q];
        if (o == r || !o->planned)
            continue;
        for (size_t i = 0; i < r->nrecs; i++)
            for (size_t k = 0; !r->recs[i].made && k < o->nrecs; k++)
                if (!o->recs[k].made && !memcmp(o->recs[k].id, r->recs[i].id, 16)) {
                    r->deferred = 1;
                    r->rc = 1; /* pending: an earlier attempt's plan must not count */
                    return 0;
                }
    }
    if (r->dup) {
        int t = check_retry(D, r);
        if (t < 0)
            return t;
        if (t)
            return 0;
        r->dup = 0;
    }
    if (r->kind == DR_MULTI) {
        for (size_t s = 0; s < r->nstreams; s++) {
            r->per[s] = append_result_none();
            r->per[s].failed = 0;
        }
        if (multi_expectations(g, r, 1))
            return 0;
        int t = check_retry(D, r);
        if (t < 0)
            return t;
        if (t)
            return 0;
        if (multi_expectations(g, r, 0))
            return 0;
        for (size_t s = 0; s < r->nstreams; s++) {
            dstr *ds = &r->streams[s];
            gstream *gs = gs_find(g, ds->name, ds->len);
            uint64_t cur = (!gs->st.found && !gs->touched) || gs->deleted ? STELE_NONE : gs->last;
            if (ds->state && !ds->nev && cur == STELE_NONE) {
                err_set(STELE_ENOTFOUND, "stream '%.*s': a state needs events", (int)ds->len, ds->name);
                req_fail(r, STELE_ENOTFOUND);
                r->mres.failed_stream = s;
                return 0;
            }
        }
        goto conditions;
    }
    for (size_t s = 0; s < r->nstreams; s++) {
        dstr *ds = &r->streams[s];
        gstream *gs = gs_find(g, ds->name, ds->len);
        if (gs->st.tombstoned) {
            err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)ds->len, ds->name);
            req_fail(r, STELE_EDELETED);
            r->mres.failed_stream = s;
            return 0;
        }
        uint64_t cur = (!gs->st.found && !gs->touched) || gs->deleted ? STELE_NONE : gs->last;
        int recreate = gs->deleted && ds->expected >= 0 && gs->last != UINT64_MAX &&
                       (uint64_t)ds->expected == gs->last;
        int ok = ds->expected == STELE_DELETED ? gs->st.found && gs->deleted
                                                : recreate || expect_ok(ds->expected, cur);
        if (!ok) {
            int t = check_retry(D, r);
            if (t < 0)
                return t;
            if (t)
                return 0;
            r->res.current_revision = cur;
            r->mres.failed_stream = s;
            r->mres.current_revision = gs->deleted ? gs->last : cur;
            if (cur == STELE_NONE)
                err_set(STELE_EWRONGREV, "stream '%.*s': expected revision %s, but the stream has no events",
                        (int)ds->len, ds->name, expect_text(ds->expected, eb, sizeof eb));
            else
                err_set(STELE_EWRONGREV, "stream '%.*s': expected revision %s, but its revision is %llu",
                        (int)ds->len, ds->name, expect_text(ds->expected, eb, sizeof eb),
                        (unsigned long long)cur);
            req_fail(r, STELE_EWRONGREV);
            return 0;
        }
        if (ds->state && !ds->nev && cur == STELE_NONE) {
            err_set(STELE_ENOTFOUND, "stream '%.*s': a state needs events", (int)ds->len, ds->name);
            req_fail(r, STELE_ENOTFOUND);
            r->mres.failed_stream = s;
            return 0;
        }
    }
conditions:
    if (r->cond) {
        /* No event matching the query after cond->after: the committed ones
         * below the sequencer (the transaction's condition on it keeps
         * that true at commit), then those planned before in this group. */
        uint64_t at = STELE_NONE;
        uint64_t from = r->cond->after == STELE_NONE ? 0 : r->cond->after + 1;
        if (from < g->seq) {
            stele_page *pg;
            int rc = ddb_read_matching(&D->base, r->cond, from, 0, 1, &pg);
            if (rc)
                return rc;
            if (pg->count && page_ev(pg, 0)->position < g->seq)
                at = page_ev(pg, 0)->position;
            stele_page_free(pg);
        }
        for (size_t q = 0; at == STELE_NONE && q < g->nreqs; q++) {
            dreq *o = g->reqs[q];
            if (o == r || !o->planned)
                continue;
            for (size_t i = 0; i < o->nrecs && at == STELE_NONE; i++)
                if (o->recs[i].pos >= from &&
                    ddb_cond_match(r->cond, o->recs[i].ev->type, strlen(o->recs[i].ev->type),
                                   o->recs[i].ev->tags, o->recs[i].ev->ntags))
                    at = o->recs[i].pos;
        }
        if (at != STELE_NONE) {
            char ab[32];
            r->mres.condition_position = at;
            snprintf(ab, sizeof ab, "%llu", (unsigned long long)r->cond->after);
            err_set(STELE_ECONDITION,
                    "append condition failed: the event at position %llu matches the condition's query (after %s)",
                    (unsigned long long)at, r->cond->after == STELE_NONE ? "none" : ab);
            req_fail(r, STELE_ECONDITION);
            return 0;
        }
    }
    /* Accepted: assign revisions and positions. */
    for (size_t s = 0; s < r->nstreams; s++) {
        gstream *gs = gs_find(g, r->streams[s].name, r->streams[s].len);
        r->streams[s].first_rev = gs->last == UINT64_MAX ? 0 : gs->last + 1;
    }
    uint64_t first = *next;
    for (size_t i = 0; i < r->nrecs; i++) {
        drec *d = &r->recs[i];
        dstr *ds = &r->streams[d->s];
        gstream *gs = gs_find(g, ds->name, ds->len);
        d->rev = gs->last == UINT64_MAX ? 0 : gs->last + 1;
        d->pos = (*next)++;
        gs->last = d->rev;
        gs->last_pos = d->pos;
        gs->deleted = 0;
        gs->touched = 1;
    }
    for (size_t s = 0; s < r->nstreams; s++) {
        gstream *gs = gs_find(g, r->streams[s].name, r->streams[s].len);
        gs->touched = 1;
    }
    r->planned = 1;
    r->rc = 0;
    if (r->kind == DR_APPEND) {
        r->res.first_revision = r->recs[0].rev;
        r->res.last_revision = r->recs[r->nrecs - 1].rev;
        r->res.first_position = first;
        r->res.last_position = *next - 1;
        r->res.idempotent = 0;
    } else {
        for (size_t s = 0; s < r->nstreams; s++)
            r->per[s] = append_result_none();
        for (size_t i = 0; i < r->nrecs; i++) {
            stele_append_result *p = &r->per[r->recs[i].s];
            if (p->first_revision == STELE_NONE) {
                p->first_revision = r->recs[i].rev;
                p->first_position = r->recs[i].pos;
            }
            p->last_revision = r->recs[i].rev;
            p->last_position = r->recs[i].pos;
        }
        for (size_t s = 0; s < r->nstreams; s++) {
            if (r->per[s].first_revision == STELE_NONE) {
                gstream *gs = gs_find(g, r->streams[s].name, r->streams[s].len);
                r->per[s].current_revision = gs->last;
            }
        }
        r->mres.first_position = r->nrecs ? first : STELE_NONE;
        r->mres.last_position = r->nrecs ? *next - 1 : STELE_NONE;
        r->mres.idempotent = 0;
    }
    return 0;
}

/* ------------------------------------------------------------ the items */

static void category_of(const char *s, size_t n, size_t *cl)
{
    const char *d = memchr(s, '-', n);
    *cl = d && d != s ? (size_t)(d - s) : n;
}

static json_t *event_item(const char *stream, size_t len, const drec *d, int64_t created)
{
    const stele_event_in *ev = d->ev;
    char idt[37];
    stele_uuid_format(d->id, idt);
    char tp[64];
    snprintf(tp, sizeof tp, "%lld%020llu", (long long)created, (unsigned long long)d->pos);
    size_t cl;
    category_of(stream, len, &cl);
    json_t *it = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:{s:s}, s:o}", "stream",
                           ddb_s(stream, len), "revision", ddb_nu(d->rev), "position", ddb_nu(d->pos),
                           "eventId", ddb_s(idt, 36), "eventType", ddb_s(ev->type, strlen(ev->type)),
                           "flags", ddb_n(ev->flags & (STELE_EVENT_JSON | STELE_META_JSON)),
                           "created", ddb_n(created), "timePos", "N", tp, "category",
                           ddb_s(stream, cl));
    if (d->made)
        json_object_set_new(it, "idMade", ddb_n(1));
    if (ev->data_len)
        json_object_set_new(it, "data", ddb_b(ev->data, ev->data_len));
    if (ev->metadata_len) {
        json_object_set_new(it, "metadata", ddb_b(ev->metadata, ev->metadata_len));
        meta_ids m;
        if ((ev->flags & STELE_META_JSON) && meta_ids_extract(ev->metadata, ev->metadata_len, &m) == 0) {
            if (m.actor_len)
                json_object_set_new(it, "actor", ddb_s(m.actor, m.actor_len));
            if (m.correlation_len)
                json_object_set_new(it, "correlationId", ddb_s(m.correlation, m.correlation_len));
        }
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
    int kind; /* 0 sequencer, 1 feed, 2 stream, 3 event, 4 id, 5 state */
    dreq *r;
} act;

#define PUT_NEW(table, item, keyattr)                                                            \
    json_pack("{s:{s:s, s:o, s:s, s:{s:s}}}", "Put", "TableName", table, "Item", item,          \
              "ConditionExpression", "attribute_not_exists(#k)", "ExpressionAttributeNames", "#k", \
              keyattr)

/* Build the group's transaction; fills acts. */
static json_t *build_txn(ddb *D, group *g, uint64_t next, int64_t created, act *acts, size_t *nacts)
{
    json_t *items = json_array();
    size_t na = 0;
    /* The sequencer. */
    json_t *seq;
    uint64_t new_streams = 0;
    for (size_t i = 0; i < g->ngs; i++)
        new_streams += g->gs[i].touched && !g->gs[i].st.found && g->gs[i].last != g->gs[i].st.last;
    if (g->seq_found)
        seq = json_pack("{s:{s:s, s:{s:o}, s:s, s:s, s:{s:s, s:s, s:s}, s:{s:o, s:o, s:o, s:o}}}", "Update",
                        "TableName", D->t_streams, "Key", "stream", ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)),
                        "UpdateExpression", "SET #n = :n2, #t = :t ADD #c :c", "ConditionExpression", "#n = :n",
                        "ExpressionAttributeNames", "#n", "next", "#t", "t", "#c", "streams",
                        "ExpressionAttributeValues", ":n", ddb_nu(g->seq), ":n2", ddb_nu(next), ":t",
                        ddb_n(created), ":c", ddb_nu(new_streams));
    else
        seq = json_pack("{s:{s:s, s:{s:o}, s:s, s:s, s:{s:s, s:s, s:s}, s:{s:o, s:o, s:o}}}", "Update",
                        "TableName", D->t_streams, "Key", "stream", ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)),
                        "UpdateExpression", "SET #n = :n2, #t = :t ADD #c :c", "ConditionExpression",
                        "attribute_not_exists(#n)", "ExpressionAttributeNames", "#n", "next", "#t", "t",
                        "#c", "streams", "ExpressionAttributeValues", ":n2", ddb_nu(next), ":t", ddb_n(created),
                        ":c", ddb_nu(new_streams));
    json_array_append_new(items, seq);
    acts[na++] = (act){0, NULL};
    /* The feed item: the commit's events in position order, as runs of
     * one stream's consecutive revisions. */
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
                json_array_append_new(parts, json_pack("{s:{s:o, s:o, s:o}}", "M", "s", ddb_s(rs, rl),
                                                       "r", ddb_nu(rfirst), "n", ddb_nu(rcount)));
            rs = s->name;
            rl = s->len;
            rfirst = r->recs[i].rev;
            rcount = 1;
        }
    }
    if (rs)
        json_array_append_new(parts, json_pack("{s:{s:o, s:o, s:o}}", "M", "s", ddb_s(rs, rl), "r",
                                               ddb_nu(rfirst), "n", ddb_nu(rcount)));
    json_array_append_new(items,
                          PUT_NEW(D->t_feed,
                                  json_pack("{s:o, s:o, s:o, s:o, s:{s:o}}", "bucket",
                                            ddb_nu(g->seq >> DDB_BUCKET_SHIFT), "position", ddb_nu(g->seq),
                                            "count", ddb_nu(next - g->seq), "created", ddb_n(created),
                                            "parts", "L", parts),
                                  "position"));
    acts[na++] = (act){1, NULL};
    /* Streams the group changed: new state under the version read. */
    for (size_t i = 0; i < g->ngs; i++) {
        gstream *gs = &g->gs[i];
        if (gs->touched && gs->last == gs->st.last) {
            /* Checked, not written: its state must still hold at commit. */
            json_t *cc = gs->st.found
                ? json_pack("{s:{s:s, s:{s:o}, s:s, s:{s:o}}}", "ConditionCheck", "TableName", D->t_streams,
                            "Key", "stream", ddb_s(gs->name, gs->len), "ConditionExpression", "ver = :v",
                            "ExpressionAttributeValues", ":v", ddb_nu(gs->st.ver))
                : json_pack("{s:{s:s, s:{s:o}, s:s, s:{s:s}}}", "ConditionCheck", "TableName", D->t_streams,
                            "Key", "stream", ddb_s(gs->name, gs->len), "ConditionExpression",
                            "attribute_not_exists(#k)", "ExpressionAttributeNames", "#k", "stream");
            json_array_append_new(items, cc);
            acts[na++] = (act){2, NULL};
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
                        json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "stream", ddb_s(gs->name, gs->len),
                                  "lastRevision", ddb_nu(gs->last), "lastPosition", ddb_nu(gs->last_pos),
                                  "deleted", ddb_n(0), "tombstoned", ddb_n(0), "ver", ddb_n(1),
                                  "metaVersion", ddb_n(-1)),
                        "stream");
        json_array_append_new(items, u);
        acts[na++] = (act){2, NULL};
    }
    for (size_t q = 0; q < g->nreqs; q++) {
        dreq *r = g->reqs[q];
        if (!r->planned)
            continue;
        for (size_t i = 0; i < r->nrecs; i++) {
            drec *d = &r->recs[i];
            dstr *s = &r->streams[d->s];
            json_array_append_new(items, PUT_NEW(D->t_events, event_item(s->name, s->len, d, created),
                                                 "revision"));
            acts[na++] = (act){3, r};
            if (!d->made) {
                char idt[37];
                stele_uuid_format(d->id, idt);
                json_array_append_new(
                    items, PUT_NEW(D->t_ids,
                                   json_pack("{s:o, s:o, s:o, s:o}", "eventId", ddb_s(idt, 36), "stream",
                                             ddb_s(s->name, s->len), "revision", ddb_nu(d->rev),
                                             "position", ddb_nu(d->pos)),
                                   "eventId"));
                acts[na++] = (act){4, r};
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
            json_array_append_new(items, json_pack("{s:{s:s, s:o}}", "Put", "TableName", D->t_snaps, "Item", it));
            acts[na++] = (act){5, r};
        }
    }
    *nacts = na;
    return json_pack("{s:o, s:s}", "TransactItems", items, "ReturnConsumedCapacity", "TOTAL");
}

/* ------------------------------------------------------------ the writer */

static void notify(ddb *D)
{
    atomic_fetch_add(&D->gen, 1);
    syscall(SYS_futex, &D->gen, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    pthread_mutex_lock(&D->gmu);
    uint64_t one = 1;
    for (ddb_watch *w = D->watches; w; w = w->next)
        if (write(w->fd, &one, sizeof one) < 0) {
            /* a full counter still reads as readable */
        }
    pthread_mutex_unlock(&D->gmu);
}

/* Commit the group: plan, transact, and on a cancellation re-read and
 * plan again. Every request ends settled. */
static void cache_forget_group(ddb *D, group *g)
{
    D->cache->seq_known = 0;
    for (size_t i = 0; i < g->ngs; i++)
        cache_drop(D->cache, g->gs[i].name, g->gs[i].len);
}

static void commit_group(ddb *D, group *g)
{
    act acts[DDB_MAX_ACTIONS + 4];
    int fresh = 0;
    for (int attempt = 0;; attempt++) {
        int cached;
        int rc = group_read(D, g, fresh, &cached);
        uint64_t next = g->seq;
        int refused = 0;
        for (size_t q = 0; rc == 0 && q < g->nreqs; q++) {
            dreq *r = g->reqs[q];
            if (r->planned || (r->rc && r->rc != 1) || r->idempotent || r->deferred)
                continue;
            rc = plan(D, g, r, &next);
            refused |= rc == 0 && r->rc != 0 && r->rc != 1 && !r->idempotent;
        }
        if (rc == 0 && refused && cached) {
            /* Checks failed against cached states: read them afresh and
             * plan every request again before reporting anything. */
            for (size_t q = 0; q < g->nreqs; q++) {
                dreq *r = g->reqs[q];
                if (!r->idempotent) {
                    r->rc = 1;
                    r->planned = 0;
                    r->deferred = 0;
                }
            }
            cache_forget_group(D, g);
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
                for (size_t q = 0; q < g->nreqs; q++)
                    if (!g->reqs[q]->idempotent)
                        g->reqs[q]->rc = 1, g->reqs[q]->planned = 0, g->reqs[q]->deferred = 0;
                cache_forget_group(D, g);
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
            D->cache->seq_known = 1;
            D->cache->seq = next;
            D->cache->seq_t = created;
            for (size_t i = 0; i < g->ngs; i++)
                if (g->gs[i].touched && g->gs[i].last != g->gs[i].st.last)
                    cache_put(D->cache, &g->gs[i]);
            ddb_count_capacity(D, resp, 1);
            json_decref(resp);
            atomic_fetch_add(&D->groups, 1);
            for (size_t q = 0; q < g->nreqs; q++)
                if (g->reqs[q]->planned)
                    atomic_fetch_add(&D->appends, 1);
            atomic_fetch_add(&D->events, next - g->seq);
            atomic_store(&D->head, next);
            notify(D);
            return;
        }
        int again = 0;
        if (!strcmp(type, "TransactionCanceledException")) {
            json_t *reasons = json_object_get(resp, "CancellationReasons");
            size_t i;
            json_t *why;
            json_array_foreach(reasons, i, why) {
                const char *code = json_string_value(json_object_get(why, "Code"));
                if (!code || !strcmp(code, "None") || i >= na)
                    continue;
                if (dbg) {
                    char *t = json_dumps(json_array_get(json_object_get(dbg, "TransactItems"), i), JSON_COMPACT);
                    fprintf(stderr, "ddb: cancelled: action %zu (kind %d): %s %.300s\n", i, acts[i].kind, code, t);
                    free(t);
                }
                if (!strcmp(code, "ConditionalCheckFailed") && acts[i].kind == 4)
                    acts[i].r->dup = 1; /* a duplicate event id */
                again = 1;              /* conflicts: read again, plan again */
            }
            if (!json_array_size(reasons))
                again = 1;
        } else if (!strcmp(type, "TransactionConflictException") ||
                   !strcmp(type, "TransactionInProgressException")) {
            again = 1;
        }
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
        if (again)
            rc = err_set(STELE_EBUSY, "dynamodb: the append lost 200 races for the sequencer; retry later");
        else if (rc == STELE_EIO)
            err_set(STELE_EIO, "%s (the append may have been written: retry with the same event ids, "
                    "which is idempotent)", stele_errmsg());
        for (size_t q = 0; q < g->nreqs; q++)
            if (g->reqs[q]->planned)
                req_fail(g->reqs[q], rc);
        return;
    }
}

static void *writer_main(void *arg)
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
        while (D->qhead && g->nreqs < DDB_MAX_ACTIONS) {
            dreq *r = D->qhead;
            size_t extra = 0;
            for (size_t s = 0; s < r->nstreams; s++)
                extra += !gs_find(g, r->streams[s].name, r->streams[s].len);
            size_t need = r->actions - r->nstreams + extra;
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
                req_fail(r, STELE_EINTERNAL);
            }
            req_complete(r);
        }
        (void)nstreams;
    }
    return NULL;
}

/* --------------------------------------------------------------- appends */

static dreq *req_single(const append_args *a)
{
    dreq *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = DR_APPEND;
    r->streams = calloc(1, sizeof *r->streams);
    r->recs = calloc(a->n, sizeof *r->recs);
    if (!r->streams || !r->recs) {
        req_free(r);
        return NULL;
    }
    r->nstreams = 1;
    r->streams[0] = (dstr){a->stream, a->stream_len, a->expected, NULL, 0, a->n};
    r->nrecs = a->n;
    for (size_t i = 0; i < a->n; i++)
        r->recs[i] = (drec){0, &a->events[i], a->ids[i], a->made[i], 0, 0};
    r->res = append_result_none();
    r->mres.failed_stream = SIZE_MAX;
    return r;
}

static int ddb_append(backend *b, const append_args *a, stele_append_result *res)
{
    ddb *D = (ddb *)b;
    dreq *r = req_single(a);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = req_size(r);
    if (rc == 0)
        rc = enqueue(D, r);
    if (rc) {
        req_free(r);
        return rc;
    }
    req_wait(r);
    if (res)
        *res = r->res;
    rc = r->rc;
    if (rc)
        err_set(rc, "%s", r->msg);
    req_free(r);
    return rc;
}

static int ddb_append_async(backend *b, const append_args *a, append_done_fn done, void *ctx)
{
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
        req_free(r);
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
        req_free(r);
        return NULL;
    }
    r->nstreams = m->nstreams;
    for (size_t s = 0; s < m->nstreams; s++)
        r->streams[s] = (dstr){m->streams[s].stream, m->streams[s].len, m->streams[s].expected,
                               m->streams[s].state, 0, m->streams[s].nevents};
    r->nrecs = m->nrecords;
    for (size_t i = 0; i < m->nrecords; i++)
        r->recs[i] = (drec){m->records[i].stream, &m->records[i].event, m->ids[i], m->made[i], 0, 0};
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

static int ddb_append_multi(backend *b, const multi_args *m, stele_append_result *per,
                            stele_multi_result *res)
{
    ddb *D = (ddb *)b;
    int rc = multi_check(m);
    if (rc)
        return rc;
    dreq *r = req_multi(m, per);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    if ((rc = req_size(r)) == 0)
        rc = enqueue(D, r);
    if (rc) {
        req_free(r);
        return rc;
    }
    req_wait(r);
    *res = r->mres;
    rc = r->rc;
    if (rc)
        err_set(rc, "%s", r->msg);
    req_free(r);
    return rc;
}

static int ddb_append_multi_async(backend *b, const multi_args *m, stele_append_result *per,
                                  const stele_multi_result *init, stele_append_multi_cb done,
                                  void *ctx, size_t nstreams)
{
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
        req_free(r);
    return rc;
}

/* ------------------------------------------- deletes, metadata, snapshots */

/* Update a stream's item under the version read (any concurrent append,
 * delete or metadata change moves it). values: the update's own; the
 * version's are added. Returns 1 when the item moved (read again). */
static int state_update(ddb *D, const char *stream, size_t len, const dstate *st, const char *set,
                        json_t *values)
{
    char expr[512];
    snprintf(expr, sizeof expr, "SET %s, ver = :v2", set);
    json_object_set_new(values, ":v2", ddb_nu(st->ver + 1));
    json_t *req = json_pack("{s:s, s:{s:o}, s:s, s:o}", "TableName", D->t_streams, "Key", "stream",
                            ddb_s(stream, len), "UpdateExpression", expr, "ExpressionAttributeValues",
                            values);
    if (st->found) {
        json_object_set_new(values, ":v", ddb_nu(st->ver));
        json_object_set_new(req, "ConditionExpression", json_string("ver = :v"));
    } else {
        json_object_set_new(req, "ConditionExpression", json_string("attribute_not_exists(#k)"));
        json_object_set_new(req, "ExpressionAttributeNames", json_pack("{s:s}", "#k", "stream"));
    }
    char type[128];
    int rc = ddb_call(D, "UpdateItem", req, NULL, type);
    if (rc && !strcmp(type, "ConditionalCheckFailedException")) {
        err_clear();
        return 1;
    }
    if (rc == 0 && !st->found) /* a new stream: count it (stats) */
        rc = ddb_call(D, "UpdateItem",
                      json_pack("{s:s, s:{s:o}, s:s, s:{s:s}, s:{s:o}}", "TableName", D->t_streams, "Key",
                                "stream", ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)), "UpdateExpression",
                                "ADD #c :one", "ExpressionAttributeNames", "#c", "streams",
                                "ExpressionAttributeValues", ":one", ddb_n(1)),
                      NULL, NULL);
    return rc;
}

static int ddb_remove(backend *b, const char *stream, size_t len, int64_t expected, int tombstone,
                      uint64_t *current)
{
    ddb *D = (ddb *)b;
    for (int attempt = 0; attempt < 100; attempt++) {
        dstate st;
        int rc = ddb_state_get(D, stream, len, &st);
        if (rc)
            return rc;
        if (st.tombstoned) {
            ddb_state_free(&st);
            return err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)len, stream);
        }
        uint64_t cur = ddb_visible_rev(&st);
        if (current)
            *current = cur;
        if (!tombstone && cur == STELE_NONE) {
            ddb_state_free(&st);
            return err_set(STELE_ENOTFOUND, "stream '%.*s' %s", (int)len, stream,
                           st.found ? "is already deleted" : "does not exist");
        }
        int was_last = st.deleted && expected >= 0 && st.last != UINT64_MAX &&
                       (uint64_t)expected == st.last;
        if (!was_last && !expect_ok(expected, cur)) {
            ddb_state_free(&st);
            return expect_wrong_rev(stream, len, expected, cur);
        }
        json_t *v;
        const char *set;
        if (tombstone) {
            v = json_pack("{s:o, s:o, s:o}", ":t", ddb_n(1), ":lr", ddb_nu(st.last), ":lp", ddb_nu(st.last_pos));
            set = "tombstoned = :t, lastRevision = :lr, lastPosition = :lp";
        } else {
            v = json_pack("{s:o, s:o}", ":d", ddb_n(1), ":tb", ddb_nu(st.last + 1));
            set = "deleted = :d, truncateBefore = :tb";
        }
        rc = state_update(D, stream, len, &st, set, v);
        ddb_state_free(&st);
        if (rc <= 0)
            return rc;
    }
    return err_set(STELE_EBUSY, "stream '%.*s' kept changing while being deleted", (int)len, stream);
}

static int snaps_trim(ddb *D, const char *stream, size_t len, uint32_t keep);

static int ddb_set_metadata(backend *b, const char *stream, size_t len, const stele_stream_metadata *md,
                            int64_t expected, uint64_t *version)
{
    ddb *D = (ddb *)b;
    for (int attempt = 0; attempt < 100; attempt++) {
        dstate st;
        int rc = ddb_state_get(D, stream, len, &st);
        if (rc)
            return rc;
        if (st.tombstoned) {
            ddb_state_free(&st);
            return err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)len, stream);
        }
        uint64_t cur = st.md_version;
        if (!expect_ok(expected, cur)) {
            ddb_state_free(&st);
            if (version)
                *version = cur;
            char eb[32];
            const char *et = expected == STELE_NO_STREAM ? "none"
                             : expected == STELE_STREAM_EXISTS ? "exists"
                                                               : expect_text(expected, eb, sizeof eb);
            if (cur == STELE_NONE)
                return err_set(STELE_EWRONGREV, "stream '%.*s': expected metadata version %s, but it has no metadata",
                               (int)len, stream, et);
            return err_set(STELE_EWRONGREV, "stream '%.*s': expected metadata version %s, but its version is %llu",
                           (int)len, stream, et, (unsigned long long)cur);
        }
        uint64_t nv = cur == STELE_NONE ? 0 : cur + 1;
        json_t *v = json_pack("{s:o, s:o, s:o, s:o, s:o}", ":mv", ddb_nu(nv), ":ma", ddb_nu(md->max_age_us),
                              ":mc", ddb_nu(md->max_count), ":mt", ddb_nu(md->truncate_before), ":ms",
                              ddb_n(md->max_snapshots));
        char set[400];
        snprintf(set, sizeof set,
                 "metaVersion = :mv, maxAge = :ma, maxCount = :mc, metaTruncateBefore = :mt, "
                 "maxSnapshots = :ms%s%s",
                 md->custom_len ? ", custom = :cu" : "",
                 st.found ? "" : ", lastRevision = :none, lastPosition = :none, deleted = :z, tombstoned = :z");
        if (md->custom_len)
            json_object_set_new(v, ":cu", ddb_b(md->custom, md->custom_len));
        if (!st.found) {
            json_object_set_new(v, ":none", ddb_n(-1));
            json_object_set_new(v, ":z", ddb_n(0));
        }
        rc = state_update(D, stream, len, &st, set, v);
        if (rc == 0 && !md->custom_len && st.custom_len) {
            /* A later REMOVE of the custom fields, under the new version. */
            json_t *req = json_pack("{s:s, s:{s:o}, s:s, s:s, s:{s:o}}", "TableName", D->t_streams, "Key",
                                    "stream", ddb_s(stream, len), "UpdateExpression", "REMOVE custom",
                                    "ConditionExpression", "ver = :v", "ExpressionAttributeValues", ":v",
                                    ddb_nu(st.ver + 1));
            if (ddb_call(D, "UpdateItem", req, NULL, NULL))
                err_clear();
        }
        ddb_state_free(&st);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            if (version)
                *version = nv;
            notify(D);
            return snaps_trim(D, stream, len, md->max_snapshots ? md->max_snapshots : STELE_DEFAULT_MAX_SNAPSHOTS);
        }
    }
    return err_set(STELE_EBUSY, "stream '%.*s' kept changing", (int)len, stream);
}

/* The revisions of a stream's snapshots, ascending (malloc'd). */
static int snaps_list(ddb *D, const char *stream, size_t len, uint64_t **revs, size_t *n)
{
    *revs = NULL;
    *n = 0;
    size_t cap = 0;
    json_t *start = NULL;
    for (;;) {
        json_t *req = json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:{s:o}, s:b}", "TableName", D->t_snaps,
                                "KeyConditionExpression", "#s = :s", "ProjectionExpression", "#r",
                                "ExpressionAttributeNames", "#s", "stream", "#r", "revision",
                                "ExpressionAttributeValues", ":s", ddb_s(stream, len), "ConsistentRead", 1);
        if (start)
            json_object_set_new(req, "ExclusiveStartKey", start);
        json_t *resp;
        int rc = ddb_call(D, "Query", req, &resp, NULL);
        if (rc) {
            free(*revs);
            *revs = NULL;
            return rc;
        }
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(resp, "Items"), i, it) {
            if (*n == cap) {
                uint64_t *nr = realloc(*revs, (cap = cap ? cap * 2 : 16) * sizeof *nr);
                if (!nr) {
                    json_decref(resp);
                    free(*revs);
                    *revs = NULL;
                    return err_set(STELE_ENOMEM, "out of memory");
                }
                *revs = nr;
            }
            (*revs)[(*n)++] = ddb_get_nu(it, "revision");
        }
        json_t *lek = json_object_get(resp, "LastEvaluatedKey");
        start = lek ? json_incref(lek) : NULL;
        json_decref(resp);
        if (!start)
            return 0;
    }
}

/* Delete the oldest snapshots beyond `keep`. */
static int snaps_trim(ddb *D, const char *stream, size_t len, uint32_t keep)
{
    uint64_t *revs;
    size_t n;
    int rc = snaps_list(D, stream, len, &revs, &n);
    for (size_t i = 0; rc == 0 && n > keep && i < n - keep; i++)
        rc = ddb_call(D, "DeleteItem",
                      json_pack("{s:s, s:{s:o, s:o}}", "TableName", D->t_snaps, "Key", "stream",
                                ddb_s(stream, len), "revision", ddb_nu(revs[i])),
                      NULL, NULL);
    free(revs);
    return rc;
}

static int ddb_put_snapshot(backend *b, const char *stream, size_t len, const stele_snapshot_in *s)
{
    ddb *D = (ddb *)b;
    dstate st;
    int rc = ddb_state_get(D, stream, len, &st);
    if (rc)
        return rc;
    uint64_t cur = ddb_visible_rev(&st);
    if (st.tombstoned)
        rc = err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)len, stream);
    else if (cur == STELE_NONE)
        rc = err_set(STELE_ENOTFOUND, "stream '%.*s' %s", (int)len, stream,
                     !st.found || st.last == UINT64_MAX ? "has no events" : "is deleted");
    else if (s->revision > cur)
        rc = err_set(STELE_EINVAL, "snapshot revision %llu is beyond the last revision %llu of stream '%.*s'",
                     (unsigned long long)s->revision, (unsigned long long)cur, (int)len, stream);
    else if (s->revision < st.tb)
        rc = err_set(STELE_EINVAL, "snapshot revision %llu is below the stream's start %llu (soft delete)",
                     (unsigned long long)s->revision, (unsigned long long)st.tb);
    else if (s->state_len + 300 + len > DDB_MAX_ITEM)
        rc = err_set(STELE_ETOOBIG, "a snapshot of %zu bytes: a DynamoDB item holds at most 400 KB",
                     s->state_len);
    uint32_t keep = st.max_snaps ? st.max_snaps : STELE_DEFAULT_MAX_SNAPSHOTS;
    uint64_t tb = st.tb;
    ddb_state_free(&st);
    if (rc)
        return rc;
    /* Retention: the latest `keep` (by revision) at or above the start. */
    uint64_t *revs;
    size_t n;
    if ((rc = snaps_list(D, stream, len, &revs, &n)))
        return rc;
    size_t kept = 0, same = 0;
    uint64_t oldest = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        if (revs[i] < tb)
            continue;
        kept++;
        same |= revs[i] == s->revision;
        oldest = revs[i] < oldest ? revs[i] : oldest;
    }
    free(revs);
    if (!same && kept >= keep && s->revision < oldest)
        return err_set(STELE_EINVAL,
                       "stream '%.*s' keeps its %u latest snapshots, and revision %llu is older than every one of them",
                       (int)len, stream, keep, (unsigned long long)s->revision);
    json_t *it = json_pack("{s:o, s:o, s:o, s:o, s:o}", "stream", ddb_s(stream, len), "revision",
                           ddb_nu(s->revision), "schemaVersion", ddb_nu(s->schema_version), "flags",
                           ddb_n(s->flags & STELE_EVENT_JSON), "created", ddb_n(time_now_us()));
    if (s->state_len)
        json_object_set_new(it, "state", ddb_b(s->state, s->state_len));
    rc = ddb_call(D, "PutItem", json_pack("{s:s, s:o}", "TableName", D->t_snaps, "Item", it), NULL, NULL);
    return rc ? rc : snaps_trim(D, stream, len, keep);
}

/* ---------------------------------------------------- notification, stats */

static uint32_t ddb_commit_gen(backend *b)
{
    return atomic_load(&((ddb *)b)->gen);
}

static void ddb_wait_commit(backend *b, uint32_t gen, int timeout_ms)
{
    ddb *D = (ddb *)b;
    struct timespec ts, *tsp = NULL;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    if (atomic_load(&D->gen) == gen)
        syscall(SYS_futex, &D->gen, FUTEX_WAIT_PRIVATE, gen, tsp, NULL, 0);
}

static int ddb_watch_fd(backend *b, int *fd)
{
    ddb *D = (ddb *)b;
    ddb_watch *w = malloc(sizeof *w);
    if (!w)
        return err_set(STELE_ENOMEM, "out of memory");
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->fd < 0) {
        free(w);
        return err_set(STELE_EIO, "eventfd: %s", strerror(errno));
    }
    pthread_mutex_lock(&D->gmu);
    w->next = D->watches;
    D->watches = w;
    pthread_mutex_unlock(&D->gmu);
    *fd = w->fd;
    return 0;
}

static void ddb_unwatch(backend *b, int fd)
{
    ddb *D = (ddb *)b;
    pthread_mutex_lock(&D->gmu);
    for (ddb_watch **p = &D->watches; *p; p = &(*p)->next)
        if ((*p)->fd == fd) {
            ddb_watch *w = *p;
            *p = w->next;
            close(w->fd);
            free(w);
            break;
        }
    pthread_mutex_unlock(&D->gmu);
}

static void *poller_main(void *arg)
{
    ddb *D = arg;
    unsigned delay_ms = 10;
    for (;;) {
        pthread_mutex_lock(&D->qmu);
        int stop = D->stop;
        if (!stop) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += (long)delay_ms * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&D->pcv, &D->qmu, &ts);
            stop = D->stop;
        }
        pthread_mutex_unlock(&D->qmu);
        if (stop)
            break;
        uint64_t next;
        if (ddb_seq_get(D, &next)) {
            err_clear();
            delay_ms = 100;
            continue;
        }
        if (next != atomic_load(&D->head)) {
            atomic_store(&D->head, next);
            notify(D);
            delay_ms = 10;
        } else if (delay_ms < 100) {
            delay_ms = delay_ms * 2 > 100 ? 100 : delay_ms * 2;
        }
    }
    return NULL;
}

static int ddb_stats(backend *b, stele_stats *out)
{
    ddb *D = (ddb *)b;
    memset(out, 0, sizeof *out);
    json_t *resp;
    int rc = ddb_call(D, "GetItem",
                      json_pack("{s:s, s:{s:o}, s:b}", "TableName", D->t_streams, "Key", "stream",
                                ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)), "ConsistentRead", 1),
                      &resp, NULL);
    if (rc)
        return rc;
    json_t *it = json_object_get(resp, "Item");
    int64_t v = 0;
    out->events = it && ddb_get_n(it, "next", &v) == 0 ? (uint64_t)v : 0;
    out->streams = it && ddb_get_n(it, "streams", &v) == 0 ? (uint64_t)v : 0;
    json_decref(resp);
    out->appends = atomic_load(&D->appends);
    out->groups = atomic_load(&D->groups);
    return 0;
}

/* Positions are gapless: the next cursor is the next number. */
static uint64_t ddb_pos_after(backend *b, uint64_t pos)
{
    (void)b;
    return pos == STELE_NONE ? 0 : pos + 1;
}

static uint64_t ddb_pos_before(backend *b, uint64_t pos)
{
    (void)b;
    return pos == 0 || pos == STELE_NONE ? STELE_NONE : pos - 1;
}

static int ddb_pos_head(backend *b, uint64_t *next)
{
    return ddb_seq_get((ddb *)b, next);
}

static void ddb_close(backend *b)
{
    ddb *D = (ddb *)b;
    /* For benchmarks: what the writer consumed (docs/backends.md). */
    const char *cf = getenv("STELE_DDB_CAPACITY_FILE");
    FILE *f = cf ? fopen(cf, "a") : NULL;
    if (f) {
        fprintf(f, "ddb appends=%llu groups=%llu retries=%llu events=%llu write_cu=%.1f read_cu=%.1f\n",
                (unsigned long long)atomic_load(&D->appends), (unsigned long long)atomic_load(&D->groups),
                (unsigned long long)atomic_load(&D->retries), (unsigned long long)atomic_load(&D->events),
                atomic_load(&D->wcu_milli) / 1000.0, atomic_load(&D->rcu_milli) / 1000.0);
        fclose(f);
    }
    pthread_mutex_lock(&D->qmu);
    D->stop = 1;
    pthread_cond_broadcast(&D->qcv);
    pthread_cond_broadcast(&D->pcv);
    pthread_mutex_unlock(&D->qmu);
    pthread_join(D->writer, NULL);
    pthread_join(D->poller, NULL);
    while (D->watches)
        ddb_unwatch(b, D->watches->fd);
    for (int i = 0; i < D->nfree; i++)
        aws_client_free(D->clients[i]);
    aws_creds_clear(&D->creds);
    pool_unref(D->pl);
    for (unsigned i = 0; i < DDB_CACHE; i++)
        free(D->cache->e[i].name);
    free(D->cache);
    free(D->grp);
    free(D->endpoint);
    free(D->region);
    free(D->prefix);
    free(D);
}

static const backend_ops ddb_ops = {
    .version = BACKEND_OPS_VERSION,
    .name = "dynamodb",
    .append = ddb_append,
    .append_async = ddb_append_async,
    .remove = ddb_remove,
    .read_stream = ddb_read_stream,
    .read_all = ddb_read_all,
    .head = ddb_head,
    .query = ddb_query,
    .read_stream_to = ddb_read_stream_to,
    .read_view = NULL,
    .stats = ddb_stats,
    .append_multi = ddb_append_multi,
    .append_multi_async = ddb_append_multi_async,
    .read_matching = ddb_read_matching,
    .set_metadata = ddb_set_metadata,
    .get_metadata = ddb_get_metadata,
    .put_snapshot = ddb_put_snapshot,
    .get_snapshot = ddb_get_snapshot,
    .load = ddb_load,
    .pos_after = ddb_pos_after,
    .pos_before = ddb_pos_before,
    .pos_head = ddb_pos_head,
    .commit_gen = ddb_commit_gen,
    .wait_commit = ddb_wait_commit,
    .watch = ddb_watch_fd,
    .unwatch = ddb_unwatch,
    .scavenge = NULL,
    .groups = &ddb_group_ops,
    .close = ddb_close,
};

/* ------------------------------------------------------------------ open */

/* Percent-decode a URI query value into a malloc'd string. */
static char *pct_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
            o[k++] = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
            i += 2;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = 0;
    return o;
}

/* dynamodb://PREFIX?endpoint=URL&region=R */
static int parse_uri(ddb *D, const char *uri)
{
    const char *p = uri + strlen("dynamodb://");
    size_t n = strcspn(p, "?");
    if (n == 0 || n > 200)
        return err_set(STELE_EINVAL, "store URI %s: the table prefix must be 1..200 characters", uri);
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') ||
              p[i] == '_' || p[i] == '-' || p[i] == '.'))
            return err_set(STELE_EINVAL,
                           "store URI: table prefix '%.*s': only letters, digits, '_', '-' and '.'",
                           (int)n, p);
    D->prefix = strndup(p, n);
    p += n;
    if (*p == '?')
        p++;
    while (*p) {
        size_t l = strcspn(p, "&");
        const char *eq = memchr(p, '=', l);
        if (!eq)
            return err_set(STELE_EINVAL, "store URI: '%.*s' is not NAME=VALUE", (int)l, p);
        size_t kl = (size_t)(eq - p);
        char *v = pct_decode(eq + 1, l - kl - 1);
        if (!v)
            return err_set(STELE_ENOMEM, "out of memory");
        if (kl == 8 && !memcmp(p, "endpoint", 8)) {
            free(D->endpoint);
            D->endpoint = v;
            if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8))
                return err_set(STELE_EINVAL, "store URI: endpoint must start with http:// or https://");
        } else if (kl == 6 && !memcmp(p, "region", 6)) {
            free(D->region);
            D->region = v;
        } else {
            free(v);
            return err_set(STELE_EINVAL, "store URI: unknown parameter '%.*s' (endpoint, region)", (int)kl, p);
        }
        p += l;
        if (*p == '&')
            p++;
    }
    if (!D->region) {
        const char *r = getenv("AWS_REGION");
        if (!r || !*r)
            r = getenv("AWS_DEFAULT_REGION");
        D->region = strdup(r && *r ? r : "us-east-1");
    }
    return 0;
}

int ddb_backend_open(const char *uri, const stele_options *opts, backend **out)
{
    ddb *D = calloc(1, sizeof *D);
    if (!D)
        return err_set(STELE_ENOMEM, "out of memory");
    D->base.ops = &ddb_ops;
    D->opts = *opts;
    pthread_mutex_init(&D->cmu, NULL);
    pthread_cond_init(&D->ccv, NULL);
    pthread_mutex_init(&D->qmu, NULL);
    pthread_cond_init(&D->qcv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&D->pcv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&D->gmu, NULL);
    int rc = parse_uri(D, uri);
    if (rc == 0) {
        rc = aws_creds_load(NULL, NULL, &D->creds);
        if (rc) {
            const char *f = getenv("AWS_SHARED_CREDENTIALS_FILE");
            char path[4096];
            if (!f && getenv("HOME")) {
                snprintf(path, sizeof path, "%s/.aws/credentials", getenv("HOME"));
                f = path;
            }
            if (f && access(f, R_OK) == 0) {
                err_clear();
                rc = aws_creds_load(f, getenv("AWS_PROFILE"), &D->creds);
            }
        }
    }
    for (int i = 0; rc == 0 && i < DDB_CLIENTS; i++) {
        rc = aws_client_new(D->endpoint, D->region, "dynamodb", "application/x-amz-json-1.0", &D->creds,
                            10000, &D->clients[i]);
        if (rc == 0)
            D->nfree++;
    }
    snprintf(D->t_events, sizeof D->t_events, "%s-events", D->prefix ? D->prefix : "");
    snprintf(D->t_streams, sizeof D->t_streams, "%s-streams", D->prefix ? D->prefix : "");
    snprintf(D->t_ids, sizeof D->t_ids, "%s-ids", D->prefix ? D->prefix : "");
    snprintf(D->t_feed, sizeof D->t_feed, "%s-feed", D->prefix ? D->prefix : "");
    snprintf(D->t_snaps, sizeof D->t_snaps, "%s-snapshots", D->prefix ? D->prefix : "");
    if (rc == 0 && (!(D->pl = pool_new()) || !(D->grp = calloc(1, sizeof *D->grp)) ||
                    !(D->cache = calloc(1, sizeof *D->cache))))
        rc = err_set(STELE_ENOMEM, "out of memory");
    if (rc == 0 && !(opts->flags & STELE_OPEN_NOCREATE))
        rc = ddb_migrate(D);
    uint64_t next = 0;
    if (rc == 0)
        rc = ddb_seq_get(D, &next);
    if (rc) {
        for (int i = 0; i < D->nfree; i++)
            aws_client_free(D->clients[i]);
        aws_creds_clear(&D->creds);
        if (D->pl)
            pool_unref(D->pl);
        free(D->grp);
        free(D->cache);
        free(D->endpoint);
        free(D->region);
        free(D->prefix);
        free(D);
        return rc;
    }
    atomic_store(&D->head, next);
    pthread_create(&D->writer, NULL, writer_main, D);
    pthread_create(&D->poller, NULL, poller_main, D);
    *out = &D->base;
    return 0;
}
