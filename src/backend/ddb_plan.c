/*
 * ddb_plan.c - planning a group commit of the DynamoDB writer: read the
 * sequencer and the streams the group touches (or take them from the
 * writer's cache), check each append against them in queue order
 * (tombstones, expected revisions, multi-stream expectations, DCB
 * conditions), assign revisions and positions, and take the idempotency
 * path for an append whose client ids were written before.
 *
 * Every input of a plan becomes a condition of the group's transaction
 * (ddb_write.c): the sequencer's value, each stream's ver, the absence of
 * every event and id item. So a plan made from stale states can only cost
 * a cancelled transaction, never a wrong commit.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/ddb_write.h"
#include "backend/expect.h"
#include "util/util.h"

static centry *cache_slot(dcache *c, const char *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return &c->e[h % DDB_CACHE];
}

void ddb_cache_drop(dcache *c, const char *name, size_t len)
{
    centry *e = cache_slot(c, name, len);
    if (e->name && e->len == len && !memcmp(e->name, name, len)) {
        free(e->name);
        e->name = NULL;
    }
}

void ddb_cache_put(dcache *c, const gstream *gs)
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

/* A view counter's cache entry: its item key, `last` = its count. */
void ddb_cache_put_key(dcache *c, const gkey *k)
{
    char kn[META_NAME_MAX + 3];
    size_t kl = ddb_key_name(k->kind, k->name, k->len, kn);
    centry *e = cache_slot(c, kn, kl);
    if (!e->name || e->len != kl || memcmp(e->name, kn, kl)) {
        free(e->name);
        if (!(e->name = strndup(kn, kl)))
            return;
        e->len = kl;
    }
    e->last = k->next;
}

void ddb_cache_drop_key(dcache *c, const gkey *k)
{
    char kn[META_NAME_MAX + 3];
    size_t kl = ddb_key_name(k->kind, k->name, k->len, kn);
    ddb_cache_drop(c, kn, kl);
}

/* The sequencer, the group's streams and its keys from the cache where it
 * has them (unless fresh); the keys of the rest appended to keys.
 * *cached: something came from the cache. */
static void read_cached(ddb *D, group *g, int fresh, int *cached, json_t *keys)
{
    dcache *c = D->cache;
    if (!fresh && c->seq_known) {
        g->seq = c->seq;
        g->seq_t = c->seq_t;
        g->sno = c->sno;
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
    for (size_t i = 0; i < g->nkeys; i++) {
        gkey *k = &g->keys[i];
        char kn[META_NAME_MAX + 3];
        size_t kl = ddb_key_name(k->kind, k->name, k->len, kn);
        centry *e = cache_slot(c, kn, kl);
        k->found = 0;
        k->read = k->next = 0;
        if (!fresh && e->name && e->len == kl && !memcmp(e->name, kn, kl)) {
            k->found = 1;
            k->read = k->next = e->last;
            *cached = 1;
            continue;
        }
        json_array_append_new(keys, json_pack("{s:o}", "stream", ddb_s(kn, kl)));
    }
}

/* One item of the streams table read for g: the sequencer, a key counter
 * ('\002' kind name) or one of the group's streams. */
static void take_item(group *g, json_t *it)
{
    size_t n;
    int64_t v;
    const char *name = ddb_get_s(it, "stream", &n);
    if (!name)
        return;
    if (n == strlen(DDB_SEQ_KEY) && !memcmp(name, DDB_SEQ_KEY, n)) {
        /* A metadata write to a new stream counts it on this item
         * (ddb_stream.c) before any commit: no `next` yet, and the
         * transaction then conditions on its absence. */
        g->seq_found = ddb_get_n(it, "next", &v) == 0;
        g->seq = g->seq_found ? (uint64_t)v : 0;
        g->seq_t = ddb_get_n(it, "t", &v) == 0 ? v : 0;
        g->sno = g->sno_next = ddb_get_n(it, "streamNo", &v) == 0 ? (uint64_t)v : 0;
        return;
    }
    if (n >= 2 && name[0] == '\002') {
        gkey *k = gk_find(g, name[1], name + 2, n - 2);
        if (k) {
            k->found = 1;
            k->read = k->next = ddb_get_n(it, "next", &v) == 0 ? (uint64_t)v : 0;
        }
        return;
    }
    gstream *gs = gs_find(g, name, n);
    if (gs)
        ddb_state_parse(it, &gs->st);
}

/* keys (taken) read in consistent BatchGetItems, following UnprocessedKeys
 * with backoff: 0, or an error. */
static int read_items(ddb *D, group *g, json_t *keys)
{
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
        json_array_foreach(items, i, it)
            take_item(g, it);
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
    return 0;
}

/* The group's streams start planning from their read states. */
static void start_streams(group *g)
{
    for (size_t i = 0; i < g->ngs; i++) {
        gstream *gs = &g->gs[i];
        gs->last = gs->st.last;
        gs->last_pos = gs->st.last_pos;
        gs->deleted = gs->st.deleted;
        gs->touched = 0;
        gs->rm = 0;
    }
}

/* The group's streams and the sequencer from the cache where it has them,
 * the rest in one consistent BatchGetItem (several when DynamoDB leaves
 * keys unprocessed). *cached: something came from the cache. */
int ddb_group_read(ddb *D, group *g, int fresh, int *cached)
{
    json_t *keys = json_array();
    *cached = 0;
    g->seq = 0;
    g->seq_t = 0;
    g->seq_found = 0;
    g->sno = 0;
    read_cached(D, g, fresh, cached, keys);
    g->sno_next = g->sno;
    if (!json_array_size(keys)) {
        json_decref(keys);
    } else {
        int rc = read_items(D, g, keys);
        if (rc)
            return rc;
    }
    start_streams(g);
    return 0;
}

/* Which part of a stored event item differs from the event offered
 * again, or NULL (the id's text form, UUID or ULID, is not compared). */
static const char *item_diff(json_t *it, const stele_event_in *ev, int *err)
{
    const uint32_t fm = STELE_EVENT_JSON | STELE_META_JSON;
    size_t tl;
    const char *type = ddb_get_s(it, "eventType", &tl);
    if (!type || tl != strlen(ev->type) || memcmp(type, ev->type, tl))
        return "type";
    uint8_t *p;
    size_t n;
    if ((*err = ddb_get_b(it, "data", &p, &n)))
        return NULL;
    int same = n == ev->data_len && (!n || !memcmp(p, ev->data, n));
    free(p);
    if (!same)
        return "data";
    if ((*err = ddb_get_b(it, "metadata", &p, &n)))
        return NULL;
    same = n == ev->metadata_len && (!n || !memcmp(p, ev->metadata, n));
    free(p);
    if (!same)
        return "metadata";
    int64_t flags = 0;
    ddb_get_n(it, "flags", &flags);
    if (((uint32_t)flags & fm) != (ev->flags & fm))
        return "content type";
    json_t *tags = json_object_get(json_object_get(it, "tags"), "L");
    if (json_array_size(tags) != ev->ntags)
        return "tags";
    for (size_t t = 0; t < ev->ntags; t++) {
        const char *s = json_string_value(json_object_get(json_array_get(tags, t), "S"));
        if (!s || strcmp(s, ev->tags[t]))
            return "tags";
    }
    return NULL;
}

/*
 * A retry recognised by its ids (check_retry) is compared with what was
 * stored, on this path only: the events at the revisions the ids name, in
 * one consistent BatchGetItem. A difference fails r with EIDCONFLICT
 * naming the event and the part (seed 004's duplicate error); an event no
 * longer there (scavenged) has nothing to differ from. 1 when r failed,
 * 0 when the retry stands, or the read's error.
 */
static int retry_compare(ddb *D, dreq *r)
{
    json_t *keys = json_array();
    for (size_t i = 0; i < r->nrecs; i++) {
        const dstr *s = &r->streams[r->recs[i].s];
        json_array_append_new(keys, json_pack("{s:o, s:o}", "stream", ddb_s(s->name, s->len), "revision",
                                              ddb_nu(r->recs[i].rev)));
    }
    json_t *req = json_pack("{s:{s:{s:o, s:b}}}", "RequestItems", D->t_events, "Keys", keys, "ConsistentRead", 1);
    json_t *keep = json_array();
    int rc = 0, failed = 0;
    for (int round = 0; req && rc == 0; round++) {
        json_t *resp;
        if ((rc = ddb_call(D, "BatchGetItem", req, &resp, NULL)))
            break;
        json_array_append_new(keep, resp);
        json_t *un = json_object_get(json_object_get(resp, "UnprocessedKeys"), D->t_events);
        req = NULL;
        if (un && json_array_size(json_object_get(un, "Keys"))) {
            if (round > 50) {
                rc = err_set(STELE_EBUSY, "dynamodb BatchGetItem: keys left unprocessed");
                break;
            }
            usleep(5000u << (round < 4 ? round : 4));
            req = json_pack("{s:{s:O}}", "RequestItems", D->t_events, un);
        }
    }
    size_t k, j;
    json_t *resp, *it;
    json_array_foreach(keep, k, resp) {
        json_array_foreach(json_object_get(json_object_get(resp, "Responses"), D->t_events), j, it) {
            if (rc || failed)
                break;
            size_t sl;
            const char *sn = ddb_get_s(it, "stream", &sl);
            uint64_t rev = ddb_get_nu(it, "revision");
            if (json_object_get(it, "scavenged"))
                continue; /* nothing left to differ from */
            for (size_t i = 0; sn && i < r->nrecs; i++) {
                const dstr *s = &r->streams[r->recs[i].s];
                if (r->recs[i].rev != rev || s->len != sl || memcmp(s->name, sn, sl))
                    continue;
                int err = 0;
                const char *part = item_diff(it, r->recs[i].ev, &err);
                if (err) {
                    rc = err;
                } else if (part) {
                    char idt[37];
                    stele_uuid_format(r->recs[i].id, idt);
                    err_set(STELE_EIDCONFLICT,
                            "event id %s was already written at revision %llu of '%.*s' with a different %s; "
                            "an event id names one event: use a new id for new data",
                            idt, (unsigned long long)rev, (int)sl, sn, part);
                    ddb_req_fail(r, STELE_EIDCONFLICT);
                    failed = 1;
                }
                break;
            }
        }
    }
    json_decref(keep);
    return rc ? rc : failed;
}

/* The id items of r's client-given ids (at most 100), consistent reads,
 * following UnprocessedKeys (DynamoDB may leave some): 0 with *items an
 * array (owned by *resp; NULL when r has no client ids), or an error. */
static int fetch_id_items(ddb *D, const dreq *r, json_t **resp, json_t **items)
{
    *resp = *items = NULL;
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
    *resp = json_object();
    *items = json_array();
    json_object_set_new(*resp, "items", *items);
    json_t *req = json_pack("{s:{s:{s:o, s:b}}}", "RequestItems", D->t_ids, "Keys", keys, "ConsistentRead", 1);
    for (int round = 0; req; round++) {
        json_t *part;
        int rc = ddb_call(D, "BatchGetItem", req, &part, NULL);
        if (rc)
            return rc;
        json_array_extend(*items, json_object_get(json_object_get(part, "Responses"), D->t_ids));
        json_t *un = json_object_get(json_object_get(part, "UnprocessedKeys"), D->t_ids);
        req = NULL;
        if (un && json_array_size(json_object_get(un, "Keys"))) {
            if (round > 50) {
                json_decref(part);
                return err_set(STELE_EBUSY, "dynamodb BatchGetItem: keys left unprocessed");
            }
            usleep(5000u << (round < 4 ? round : 4));
            req = json_pack("{s:{s:O}}", "RequestItems", D->t_ids, un);
        }
        json_decref(part);
    }
    return 0;
}

/* found[i]: the id item of record i, or NULL. The number found. */
static size_t match_id_items(const dreq *r, json_t *items, json_t **found)
{
    size_t nfound = 0, k;
    json_t *it;
    json_array_foreach(items, k, it) {
        const char *t = ddb_get_s(it, "eventId", NULL);
        uint8_t id[16];
        if (!t || stele_uuid_parse(t, id))
            continue;
        for (size_t i = 0; i < r->nrecs; i++)
            if (!r->recs[i].made && !memcmp(r->recs[i].id, id, 16)) {
                found[i] = it;
                nfound++;
                break;
            }
    }
    return nfound;
}

static int retry_conflict(dreq *r)
{
    ddb_req_fail(r, STELE_EIDCONFLICT);
    return 1;
}

/* Every event of r must have been written by one earlier append: same
 * streams, consecutive revisions per stream, in this order, all of that
 * append. Fills each record's rev and pos and the streams' first_rev and
 * nev. 0 (so far a retry, *first and *last its positions) or 1 (r failed
 * with EIDCONFLICT). */
static int retry_shape(dreq *r, json_t **found, uint64_t *first, uint64_t *last)
{
    char idt[37];
    uint64_t first_pos = UINT64_MAX, last_pos = 0;
    for (size_t s = 0; s < r->nstreams; s++) {
        r->streams[s].first_rev = UINT64_MAX;
        r->streams[s].nev = 0;
    }
    for (size_t i = 0; i < r->nrecs; i++) {
        drec *d = &r->recs[i];
        dstr *s = &r->streams[d->s];
        if (d->made || !found[i]) {
            err_set(STELE_EIDCONFLICT,
                    "event %zu: an earlier append wrote some of this append's event ids but not "
                    "event %zu's, so this is not a retry of it",
                    i, i);
            return retry_conflict(r);
        }
        size_t n;
        const char *sn = ddb_get_s(found[i], "stream", &n);
        uint64_t rev = ddb_get_nu(found[i], "revision"), pos = ddb_get_nu(found[i], "position");
        stele_uuid_format(d->id, idt);
        if (!sn || n != s->len || memcmp(sn, s->name, n)) {
            err_set(STELE_EIDCONFLICT, "event id %s was already written to another stream", idt);
            return retry_conflict(r);
        }
        uint64_t want = s->nev == 0 ? (s->expected >= 0 ? (uint64_t)s->expected + 1 : rev)
                                    : s->first_rev + s->nev;
        if (rev != want) {
            err_set(STELE_EIDCONFLICT,
                    "event id %s was already written at revision %llu of '%.*s', not where this "
                    "append puts it",
                    idt, (unsigned long long)rev, (int)s->len, s->name);
            return retry_conflict(r);
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
            return retry_conflict(r);
        }
    /* The original append's size (id items written before it was kept
     * have none): a retry repeats all of it, not a part. */
    for (size_t i = 0; i < r->nrecs; i++) {
        uint64_t count = ddb_get_nu(found[i], "count");
        if (count != UINT64_MAX && count != r->nrecs) {
            err_set(STELE_EIDCONFLICT,
                    "the event ids were written by an earlier append of %llu events; this one has %zu, "
                    "so it is not a retry of it",
                    (unsigned long long)count, r->nrecs);
            return retry_conflict(r);
        }
    }
    if (last_pos - first_pos + 1 != r->nrecs) {
        err_set(STELE_EIDCONFLICT, "the event ids were written by several earlier appends");
        return retry_conflict(r);
    }
    *first = first_pos;
    *last = last_pos;
    return 0;
}

/* r is the retry of the append at [first_pos, last_pos]: its result. */
static void retry_result(dreq *r, uint64_t first_pos, uint64_t last_pos)
{
    r->rc = 0;
    r->idempotent = 1;
    if (r->kind == DR_APPEND) {
        r->res.first_revision = r->recs[0].rev;
        r->res.last_revision = r->recs[r->nrecs - 1].rev;
        r->res.first_position = first_pos;
        r->res.last_position = last_pos;
        r->res.idempotent = 1;
        return;
    }
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

/* Is r a retry of an append already written? Reads where its client ids
 * went. Returns 1 when settled (r holds the original result or an id
 * conflict), 0 when not a retry, or an error of the read itself. */
static int check_retry(ddb *D, dreq *r)
{
    json_t *resp, *items;
    int rc = fetch_id_items(D, r, &resp, &items);
    if (rc || !items) {
        json_decref(resp);
        return rc;
    }
    json_t **found = calloc(r->nrecs, sizeof *found);
    int settled = 0;
    uint64_t first_pos, last_pos;
    if (!found)
        rc = err_set(STELE_ENOMEM, "out of memory");
    else if (match_id_items(r, items, found) == 0)
        settled = 0;
    else if ((settled = retry_shape(r, found, &first_pos, &last_pos)) == 0) {
        settled = 1;
        if ((rc = retry_compare(D, r)) > 0)
            rc = 0; /* settled: r failed with EIDCONFLICT */
        else if (rc == 0)
            retry_result(r, first_pos, last_pos);
    }
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
        ddb_req_fail(r, first);
    return first;
}

/* The same client id in an earlier append of this group (a retry racing
 * its original): one transaction cannot hold both id items, so r waits
 * for the next group, where it is a retry or a conflict. 1 when deferred. */
static int defer_same_ids(group *g, dreq *r)
{
    for (size_t q = 0; q < g->nreqs; q++) {
        dreq *o = g->reqs[q];
        if (o == r || !o->planned)
            continue;
        for (size_t i = 0; i < r->nrecs; i++)
            for (size_t k = 0; !r->recs[i].made && k < o->nrecs; k++)
                if (!o->recs[k].made && !memcmp(o->recs[k].id, r->recs[i].id, 16)) {
                    r->deferred = 1;
                    r->rc = 1; /* pending: an earlier attempt's plan must not count */
                    return 1;
                }
    }
    return 0;
}

/* Stream s of r offers a state but has no events and gets none: 1 with r
 * failed, else 0. */
static int state_without_events(dreq *r, size_t s, uint64_t cur)
{
    dstr *ds = &r->streams[s];
    if (!ds->state || ds->nev || cur != STELE_NONE)
        return 0;
    err_set(STELE_ENOTFOUND, "stream '%.*s': a state needs events", (int)ds->len, ds->name);
    ddb_req_fail(r, STELE_ENOTFOUND);
    r->mres.failed_stream = s;
    return 1;
}

/* A multi-stream append: writes to tombstoned streams fail before the
 * retry check, the other expectations after it. 0 to go on, 1 when r is
 * settled, or a negative read error. */
static int plan_multi(ddb *D, group *g, dreq *r)
{
    for (size_t s = 0; s < r->nstreams; s++) {
        r->per[s] = append_result_none();
        r->per[s].failed = 0;
    }
    if (multi_expectations(g, r, 1))
        return 1;
    int t = check_retry(D, r);
    if (t)
        return t;
    if (multi_expectations(g, r, 0))
        return 1;
    for (size_t s = 0; s < r->nstreams; s++) {
        dstr *ds = &r->streams[s];
        gstream *gs = gs_find(g, ds->name, ds->len);
        uint64_t cur = (!gs->st.found && !gs->touched) || gs->deleted ? STELE_NONE : gs->last;
        if (state_without_events(r, s, cur))
            return 1;
    }
    return 0;
}

/* r fails with EWRONGREV on stream s, whose revision is cur. */
static void wrong_revision(dreq *r, size_t s, const gstream *gs, uint64_t cur)
{
    char eb[32];
    dstr *ds = &r->streams[s];
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
    ddb_req_fail(r, STELE_EWRONGREV);
}

/* A single-stream append (one stream per dstr): tombstones, the expected
 * revision (a retry is checked before failing it) and states. 0 to go on,
 * 1 when r is settled, or a negative read error. */
static int plan_streams(ddb *D, group *g, dreq *r)
{
    for (size_t s = 0; s < r->nstreams; s++) {
        dstr *ds = &r->streams[s];
        gstream *gs = gs_find(g, ds->name, ds->len);
        if (gs->st.tombstoned) {
            err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)ds->len, ds->name);
            ddb_req_fail(r, STELE_EDELETED);
            r->mres.failed_stream = s;
            return 1;
        }
        uint64_t cur = (!gs->st.found && !gs->touched) || gs->deleted ? STELE_NONE : gs->last;
        int recreate = gs->deleted && ds->expected >= 0 && gs->last != UINT64_MAX &&
                       (uint64_t)ds->expected == gs->last;
        int ok = ds->expected == STELE_DELETED ? gs->st.found && gs->deleted
                                                : recreate || expect_ok(ds->expected, cur);
        if (!ok) {
            int t = check_retry(D, r);
            if (t)
                return t;
            wrong_revision(r, s, gs, cur);
            return 1;
        }
        if (state_without_events(r, s, cur))
            return 1;
    }
    return 0;
}

/* r's append condition: no event matching the query after cond->after,
 * neither the committed ones below the sequencer (the transaction's
 * condition on it keeps that true at commit) nor those planned before in
 * this group. 0 when it holds, 1 when r failed with ECONDITION, or a
 * negative read error. */
static int check_condition(ddb *D, group *g, dreq *r)
{
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
    if (at == STELE_NONE)
        return 0;
    char ab[32];
    r->mres.condition_position = at;
    snprintf(ab, sizeof ab, "%llu", (unsigned long long)r->cond->after);
    err_set(STELE_ECONDITION,
            "append condition failed: the event at position %llu matches the condition's query (after %s)",
            (unsigned long long)at, r->cond->after == STELE_NONE ? "none" : ab);
    ddb_req_fail(r, STELE_ECONDITION);
    return 1;
}

/* Plan r against the group's states: 0 with r->planned set (revisions and
 * positions assigned from *next), or r settled with its error. A negative
 * return is a failed read (the whole group fails with it). */
int ddb_plan(ddb *D, group *g, dreq *r, uint64_t *next)
{
    if (r->kind == DR_REMOVE)
        return ddb_plan_remove(g, r, next);
    r->mres.failed_stream = SIZE_MAX;
    r->mres.current_revision = STELE_NONE;
    r->res.current_revision = STELE_NONE;
    if (defer_same_ids(g, r))
        return 0;
    if (r->dup) {
        int t = check_retry(D, r);
        if (t)
            return t < 0 ? t : 0;
        r->dup = 0;
    }
    int t = r->kind == DR_MULTI ? plan_multi(D, g, r) : plan_streams(D, g, r);
    if (!t && r->cond)
        t = check_condition(D, g, r);
    if (t < 0)
        return t;
    if (!t)
        ddb_plan_accept(g, r, next);
    return 0;
}

void ddb_plan_accept(group *g, dreq *r, uint64_t *next)
{
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
        /* View ordinals in position order (the group's counters). */
        d->ce = d->et = d->bc = UINT64_MAX;
        d->sno = d->rev == 0 ? g->sno_next++ : UINT64_MAX;
        for (int k = 0; k < 3; k++) {
            char kind;
            const char *kname;
            size_t klen;
            if (!ddb_rec_key(r, i, k, &kind, &kname, &klen))
                continue;
            gkey *gk = gk_find(g, kind, kname, klen);
            uint64_t *o = k == 0 ? &d->ce : k == 1 ? &d->et : &d->bc;
            *o = gk->next++;
        }
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
    if (r->kind != DR_MULTI) {
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
}

