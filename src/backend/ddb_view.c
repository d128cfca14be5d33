/*
 * ddb_view.c - the DynamoDB backend's view streams ($ce-{category},
 * $et-{type}, $bc-{correlationId}, $streams) and name listing
 * (stele_list_names), without one stored link event.
 *
 * View revisions are numbered when events are written (ddb_plan.c): the
 * writer keeps one counter item per category, type and correlation id in
 * the streams table (key "\x02" + kind + name, `next` = events ever written
 * under it) and gives each event its ordinals (ceRev, etRev, bcRev) in
 * position order, in the same transaction that moves the counters; the
 * sequencer's `streamNo` numbers streams by their first event (streamNo on
 * the event at revision 0). Every commit is ordered by the sequencer, so
 * the ordinals are gapless, in commit order, and the same on every server,
 * as the local engine's and PostgreSQL's.
 *
 * A view read queries a KEYS_ONLY index keyed by (name, ordinal)
 * (viewCategory, viewType, viewCorrelation; viewStreams keyed by (nk "s",
 * streamNo)), then reads the events themselves with a consistent
 * BatchGetItem and shows those their stream's rules leave visible (deletes
 * and retention leave gaps in a view's revisions, never a change of them).
 * $streams shows each stream's first visible event under the stream's
 * ordinal. The page's next is the ordinal of the next visible event.
 *
 * Names: a GSI of the streams table, byName, keyed (nk, stream): stream
 * items carry nk "s", the counter items of categories and types "c" and
 * "t", so a Query lists each kind in byte order of its key (DynamoDB orders
 * strings by their UTF-8 bytes), from a prefix or after a name.
 *
 * Both read GSIs, which DynamoDB keeps eventually consistent: on AWS an
 * event may reach a view or a new name reach the list a moment after its
 * append returned (DynamoDB Local: at once). A view read never shows an
 * ordinal at or past the counter it read first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/ddb_int.h"
#include "util/util.h"

/* The counter of view `kind` ('c', 't', 'b') and `key`: *next = events
 * numbered under it, 0 when none. */
static int counter_get(ddb *D, char kind, const char *key, size_t len, uint64_t *next)
{
    char kn[META_NAME_MAX + 3];
    size_t kl = ddb_key_name(kind, key, len, kn);
    json_t *resp;
    int rc = ddb_call(D, "GetItem",
                      json_pack("{s:s, s:{s:o}, s:b}", "TableName", D->t_streams, "Key", "stream",
                                ddb_s(kn, kl), "ConsistentRead", 1),
                      &resp, NULL);
    if (rc)
        return rc;
    json_t *it = json_object_get(resp, "Item");
    int64_t v = 0;
    *next = it && ddb_get_n(it, "next", &v) == 0 ? (uint64_t)v : 0;
    json_decref(resp);
    return 0;
}

/* The event items of keys (an array of {stream, revision}, at most 100;
 * consumed), consistently: got[i] is key i's item or NULL (kept alive by
 * *keep, which the caller json_decref's). */
static int get_events(ddb *D, json_t *keys, json_t **got, json_t **keep)
{
    size_t n = json_array_size(keys);
    for (size_t i = 0; i < n; i++)
        got[i] = NULL;
    *keep = json_array();
    json_t *want = json_incref(keys);
    json_t *req = json_pack("{s:{s:{s:o, s:b}}}", "RequestItems", D->t_events, "Keys", keys, "ConsistentRead", 1);
    int rc = 0;
    for (int round = 0; req && rc == 0; round++) {
        json_t *resp;
        if ((rc = ddb_call(D, "BatchGetItem", req, &resp, NULL)))
            break;
        json_array_append_new(*keep, resp);
        size_t j;
        json_t *it;
        json_array_foreach(json_object_get(json_object_get(resp, "Responses"), D->t_events), j, it) {
            size_t sl;
            const char *s = ddb_get_s(it, "stream", &sl);
            uint64_t rev = ddb_get_nu(it, "revision");
            for (size_t i = 0; s && i < n; i++) {
                json_t *k = json_array_get(want, i);
                size_t kl;
                const char *ks = ddb_get_s(k, "stream", &kl);
                if (!got[i] && ks && kl == sl && !memcmp(ks, s, sl) && ddb_get_nu(k, "revision") == rev) {
                    got[i] = it;
                    break;
                }
            }
        }
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
    json_decref(want);
    return rc;
}

/* A stream's state, read once per view read. */
typedef struct vstate {
    char *name;
    size_t len;
    dstate st;
} vstate;

typedef struct vcache {
    vstate *v;
    size_t n;
} vcache;

static int vis_of_item(ddb *D, vcache *c, json_t *it, int *vis)
{
    size_t len;
    const char *s = ddb_get_s(it, "stream", &len);
    if (!s)
        return err_set(STELE_ECORRUPT, "dynamodb: event item without a stream");
    vstate *q = NULL;
    for (size_t i = 0; i < c->n && !q; i++)
        if (c->v[i].len == len && !memcmp(c->v[i].name, s, len))
            q = &c->v[i];
    if (!q) {
        vstate *nv = realloc(c->v, (c->n + 1) * sizeof *nv);
        if (!nv)
            return err_set(STELE_ENOMEM, "out of memory");
        c->v = nv;
        q = &nv[c->n];
        if (!(q->name = strndup(s, len)))
            return err_set(STELE_ENOMEM, "out of memory");
        q->len = len;
        int rc = ddb_state_get(D, s, len, &q->st);
        if (rc) {
            free(q->name);
            return rc;
        }
        c->n++;
    }
    int64_t created = 0;
    ddb_get_n(it, "created", &created);
    uint64_t rev = ddb_get_nu(it, "revision");
    *vis = !q->st.tombstoned && (!q->st.deleted || rev >= q->st.tb) &&
           ddb_event_visible(&q->st, rev, created, time_now_us());
    return 0;
}

static void vcache_free(vcache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].name);
        ddb_state_free(&c->v[i].st);
    }
    free(c->v);
}

/* One chunk of a view index's keys (Query answer `items`) into pg. *done:
 * the page is full and its next is set. */
static int view_chunk(ddb *D, json_t *items, const char *ord_attr, uint64_t bound, int backwards, size_t limit,
                      vcache *vc, stele_page *pg, int *done)
{
    size_t n = json_array_size(items);
    if (!n)
        return 0;
    json_t *keys = json_array();
    uint64_t ords[100];
    size_t k = 0;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        uint64_t o = ddb_get_nu(it, ord_attr);
        size_t sl;
        const char *s = ddb_get_s(it, "stream", &sl);
        if (!s || o == UINT64_MAX || k == 100)
            continue;
        if (!backwards && o >= bound)
            continue; /* numbered after the counter was read */
        ords[k++] = o;
        json_array_append_new(keys, json_pack("{s:o, s:o}", "stream", ddb_s(s, sl), "revision",
                                              ddb_nu(ddb_get_nu(it, "revision"))));
    }
    if (!k) {
        json_decref(keys);
        return 0;
    }
    json_t *got[100], *keep;
    int rc = get_events(D, keys, got, &keep);
    for (size_t j = 0; rc == 0 && j < k && !*done; j++) {
        if (!got[j] || json_object_get(got[j], "scavenged"))
            continue; /* scavenged */
        int vis = 0;
        if ((rc = vis_of_item(D, vc, got[j], &vis)) || !vis)
            continue;
        if (page_full(pg, limit)) {
            pg->has_next = 1;
            pg->next = ords[j];
            *done = 1;
            break;
        }
        if ((rc = ddb_page_add_item(pg, got[j])) == 0)
            rc = page_set_link(pg, pg->count - 1, ords[j]);
    }
    json_decref(keep);
    return rc;
}

/* $streams: streams by their ordinal, each with its first visible event. */
static int view_streams_chunk(ddb *D, json_t *items, size_t limit, stele_page *pg, int *done)
{
    int rc = 0;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        size_t sl;
        const char *s = ddb_get_s(it, "stream", &sl);
        uint64_t o = ddb_get_nu(it, "streamNo");
        if (!s || o == UINT64_MAX)
            continue;
        stele_page *one;
        rc = ddb_read_stream(&D->base, s, sl, 0, 0, 1, &one);
        if (rc == STELE_ENOTFOUND || rc == STELE_EDELETED) {
            err_clear();
            rc = 0;
            continue;
        }
        if (rc)
            break;
        if (one->count) {
            if (page_full(pg, limit)) {
                pg->has_next = 1;
                pg->next = o;
                *done = 1;
                stele_page_free(one);
                break;
            }
            stele_event *e = page_ev(one, 0);
            page_event pe = {.stream = e->stream, .stream_len = e->stream_len, .type = e->type,
                             .type_len = e->type_len, .tags = e->tags, .ntags = e->ntags, .data = e->data,
                             .data_len = e->data_len, .metadata = e->metadata, .metadata_len = e->metadata_len,
                             .id = e->id, .flags = e->flags, .created_us = e->created_us,
                             .revision = e->revision, .position = e->position};
            if ((rc = page_add(pg, &pe)) == 0)
                rc = page_set_link(pg, pg->count - 1, o);
        }
        stele_page_free(one);
        if (rc)
            break;
    }
    return rc;
}

/* A view read's pages (ddb_read_view): ord NULL for $streams. */
typedef struct vpage {
    ddb *D;
    const char *ord;
    uint64_t bound;
    int backwards;
    size_t limit;
    vcache *vc;
    stele_page *pg;
} vpage;

static int view_page(void *ctx, json_t *items)
{
    vpage *v = ctx;
    int done = 0;
    int rc = v->ord ? view_chunk(v->D, items, v->ord, v->bound, v->backwards, v->limit, v->vc, v->pg, &done)
                    : view_streams_chunk(v->D, items, v->limit, v->pg, &done);
    return rc ? rc : done;
}

int ddb_read_view(backend *b, int kind, const char *key, size_t key_len, uint64_t from, int backwards,
                  size_t limit, stele_page **out)
{
    ddb *D = (ddb *)b;
    const char *index, *hash, *ord, *pre;
    char ck;
    switch (kind) {
    case STELE_QUERY_CATEGORY: index = "viewCategory", hash = "category", ord = "ceRev", pre = "$ce-", ck = 'c'; break;
    case STELE_QUERY_TYPE: index = "viewType", hash = "eventType", ord = "etRev", pre = "$et-", ck = 't'; break;
    case STELE_QUERY_CORRELATION:
        index = "viewCorrelation", hash = "correlationId", ord = "bcRev", pre = "$bc-", ck = 'b';
        break;
    case VIEW_STREAMS: index = "viewStreams", hash = "nk", ord = "streamNo", pre = "$streams", ck = 0; break;
    default: return err_set(STELE_EINVAL, "dynamodb: unknown view kind %d", kind);
    }
    /* The view's extent: its counter (the sequencer's streamNo for $streams). */
    uint64_t bound = 0;
    int rc;
    if (ck) {
        rc = counter_get(D, ck, key, key_len, &bound);
    } else {
        json_t *resp;
        rc = ddb_call(D, "GetItem",
                      json_pack("{s:s, s:{s:o}, s:b}", "TableName", D->t_streams, "Key", "stream",
                                ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)), "ConsistentRead", 1),
                      &resp, NULL);
        if (rc == 0) {
            int64_t v = 0;
            json_t *it = json_object_get(resp, "Item");
            bound = it && ddb_get_n(it, "streamNo", &v) == 0 ? (uint64_t)v : 0;
            json_decref(resp);
        }
    }
    if (rc)
        return rc;
    if (bound == 0)
        return ck ? err_set(STELE_ENOTFOUND, "stream '%s%.*s' not found", pre, (int)key_len, key)
                  : err_set(STELE_ENOTFOUND, "stream '$streams' not found");
    stele_page *pg;
    if ((rc = page_new(D->pl, &pg)))
        return rc;
    page_expect(pg, limit);
    if (backwards && from >= bound)
        from = bound - 1;
    if (limit == 0 || (!backwards && from >= bound)) {
        *out = pg;
        return 0;
    }
    vcache vc = {0};
    size_t want = limit + 1;
    vpage v = {D, ck ? ord : NULL, bound, backwards, limit, &vc, pg};
    json_t *req = json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o}, s:b, s:i}", "TableName", D->t_events,
                            "IndexName", index, "KeyConditionExpression",
                            backwards ? "#h = :h AND #o <= :o" : "#h = :h AND #o >= :o",
                            "ExpressionAttributeNames", "#h", hash, "#o", ord, "ExpressionAttributeValues",
                            ":h", ck ? ddb_s(key, key_len) : ddb_s("s", 1), ":o", ddb_nu(from),
                            "ScanIndexForward", !backwards, "Limit", (int)(want > 100 ? 100 : want));
    rc = ddb_pages(D, "Query", req, view_page, &v);
    vcache_free(&vc);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

/* ------------------------------------------------------------------ names */

/* A name listing's pages (ddb_list_names). */
typedef struct npage {
    int kind;
    unsigned flags;
    const char *p; /* the prefix as a key, pl bytes */
    size_t pl, skip;
    int use_after;
    size_t limit, sent;
    int (*fn)(void *ctx, const stele_name_info *info);
    void *ctx;
    int rc; /* what fn returned to stop */
} npage;

static int names_page(void *ctx, json_t *items)
{
    npage *np = ctx;
    char name[META_NAME_MAX + 1];
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        size_t kl;
        const char *k = ddb_get_s(it, "stream", &kl);
        if (!k || kl < np->skip || kl - np->skip > META_NAME_MAX)
            continue;
        if (kl < np->pl || memcmp(k, np->p, np->pl)) {
            if (np->use_after)
                return 1; /* past the prefix range */
            continue;
        }
        memcpy(name, k + np->skip, kl - np->skip);
        name[kl - np->skip] = 0;
        if ((np->flags & STELE_NAMES_NO_SYSTEM) && name[0] == '$')
            continue;
        stele_name_info in = {.name = name};
        if (np->kind == STELE_NAMES_STREAMS) {
            uint64_t last = ddb_get_nu(it, "lastRevision"), lp = ddb_get_nu(it, "lastPosition");
            int64_t v;
            in.count = last == UINT64_MAX ? 0 : last + 1;
            in.last_position = lp == UINT64_MAX ? STELE_END : lp;
            in.deleted = ddb_get_n(it, "deleted", &v) == 0 && v;
            in.tombstoned = ddb_get_n(it, "tombstoned", &v) == 0 && v;
        } else {
            uint64_t c = ddb_get_nu(it, "next");
            in.count = c == UINT64_MAX ? 0 : c;
        }
        if ((np->rc = np->fn(np->ctx, &in)) != 0 || ++np->sent >= np->limit)
            return 1;
    }
    return 0;
}

int ddb_list_names(backend *b, int kind, const char *prefix, const char *after, size_t limit, unsigned flags,
                   int (*fn)(void *ctx, const stele_name_info *info), void *ctx)
{
    ddb *D = (ddb *)b;
    char nk[2] = {kind == STELE_NAMES_STREAMS ? 's' : kind == STELE_NAMES_CATEGORIES ? 'c' : 't', 0};
    /* Counter items' keys start with "\x02" kind; streams' with the name. */
    size_t skip = kind == STELE_NAMES_STREAMS ? 0 : 2;
    char p[META_NAME_MAX + 3], a[META_NAME_MAX + 3];
    size_t pl = prefix ? strlen(prefix) : 0, al = after ? strlen(after) : 0;
    if (pl > META_NAME_MAX || al > META_NAME_MAX)
        return err_set(STELE_EINVAL, "names are at most %d bytes", META_NAME_MAX);
    p[0] = a[0] = '\002';
    p[1] = a[1] = nk[0];
    memcpy(p + skip, prefix ? prefix : "", pl);
    memcpy(a + skip, after ? after : "", al);
    pl += skip;
    al += skip;
    /* "after" inside or beyond the prefix range: start after it; else from
     * the prefix. */
    int cmp = memcmp(a, p, al < pl ? al : pl);
    int use_after = al > skip && (cmp > 0 || (cmp == 0 && al >= pl));
    json_t *vals = json_pack("{s:o}", ":n", ddb_s(nk, 1));
    const char *kc = "#n = :n";
    if (use_after) {
        kc = "#n = :n AND #s > :a";
        json_object_set_new(vals, ":a", ddb_s(a, al));
    } else if (pl) {
        kc = "#n = :n AND begins_with(#s, :p)";
        json_object_set_new(vals, ":p", ddb_s(p, pl));
    }
    json_t *names = json_pack("{s:s}", "#n", "nk");
    if (use_after || pl)
        json_object_set_new(names, "#s", json_string("stream"));
    json_t *req = json_pack("{s:s, s:s, s:s, s:o, s:o, s:i}", "TableName", D->t_streams, "IndexName", "byName",
                            "KeyConditionExpression", kc, "ExpressionAttributeNames", names,
                            "ExpressionAttributeValues", vals, "Limit", 500);
    npage np = {kind, flags, p, pl, skip, use_after, limit, 0, fn, ctx, 0};
    int rc = ddb_pages(D, "Query", req, names_page, &np);
    return rc ? rc : np.rc;
}
