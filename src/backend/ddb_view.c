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
 * event's index entry may arrive a moment after its append returned
 * (DynamoDB Local: at once). A view read never shows an ordinal at or past
 * the counter it read first, and never passes one below it: every ordinal
 * below the counter has an item carrying it (a scavenged event's stub
 * keeps its view keys, ddb_scavenge.c), so a missing index entry means
 * "not indexed yet". The read takes the entries in order from `from`; at
 * the first missing ordinal (a hole) it queries again from there, up to
 * HOLE_RETRIES times with a doubling wait from HOLE_WAIT_MS, then judges
 * the hole (hole_judge: stubs written before stubs kept their view keys
 * are passed, found through $all) and otherwise returns what it has with
 * next = the hole, never past it. Backwards reads keep the same rule
 * downwards. The page's next is then the hole, and view_hole asks the
 * poller (ddb.c) to wake subscribers for another read. Name listing has no
 * ordinals to check: a new name may reach it a moment late.
 */
#include <pthread.h>
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

/* ------------------------------------------------- test-only: index lag */

/*
 * STELE_DDB_TEST_VIEW_LAG, for tests only (nothing else sets it): mimics
 * the lag of AWS's eventually consistent GSIs, which DynamoDB Local does
 * not have. "ATTR:O1,O2,...:MS" (ATTR one of ceRev, etRev, bcRev,
 * streamNo) drops the view index entries with those ordinals from every
 * view Query answer until MS milliseconds after the first answer that
 * held them, in every view of that kind (tests use fresh names). A new
 * value of the variable starts afresh.
 */
#define LAG_MAX 64

static struct {
    pthread_mutex_t mu;
    char spec[512];
    char attr[16];
    uint64_t ord[LAG_MAX];
    int64_t seen[LAG_MAX]; /* the first answer that held it (µs), 0: none yet */
    size_t n;
    int64_t ms;
} lag = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void lag_parse(const char *s)
{
    snprintf(lag.spec, sizeof lag.spec, "%s", s);
    lag.n = 0;
    lag.ms = 0;
    lag.attr[0] = 0;
    const char *c = strchr(s, ':');
    const char *m = c ? strrchr(s, ':') : NULL;
    if (!c || m == c || (size_t)(c - s) >= sizeof lag.attr)
        return; /* malformed: no lag */
    memcpy(lag.attr, s, (size_t)(c - s));
    lag.attr[c - s] = 0;
    for (const char *p = c + 1; p < m && lag.n < LAG_MAX;) {
        char *end;
        unsigned long long o = strtoull(p, &end, 10);
        if (end == p)
            break;
        lag.seen[lag.n] = 0;
        lag.ord[lag.n++] = o;
        p = *end == ',' ? end + 1 : end;
    }
    lag.ms = strtoll(m + 1, NULL, 10);
}

/* Is the index entry of ordinal o (attribute attr) hidden by the hook? */
static int lag_hidden(const char *attr, uint64_t o)
{
    const char *s = getenv("STELE_DDB_TEST_VIEW_LAG");
    if (!s || !*s)
        return 0;
    int hide = 0;
    pthread_mutex_lock(&lag.mu);
    if (strcmp(s, lag.spec))
        lag_parse(s);
    if (!strcmp(attr, lag.attr))
        for (size_t i = 0; i < lag.n; i++)
            if (lag.ord[i] == o) {
                int64_t now = time_now_us();
                if (!lag.seen[i])
                    lag.seen[i] = now;
                hide = now - lag.seen[i] < lag.ms * 1000;
                break;
            }
    pthread_mutex_unlock(&lag.mu);
    return hide;
}

/* ------------------------------------------------------------ view reads */

/* A view's index and its key (ddb_read_view). */
typedef struct vdef {
    int kind;
    const char *index, *hash, *ord;
    const char *key; /* "s" for $streams */
    size_t key_len;
} vdef;

/* One view read (ddb_read_view), page after page of its index. */
typedef struct vpage {
    ddb *D;
    const vdef *vd;
    uint64_t bound; /* the counter read first: ordinals below it exist */
    int backwards;
    size_t limit;
    vcache *vc;
    stele_page *pg;
    uint64_t expect; /* the ordinal the read needs next */
    int bottom;      /* backwards: ordinal 0 was passed */
    int full;        /* the page is full, its next set */
    int hole;        /* stopped at `expect`, missing from the index */
} vpage;

/* The entry's ordinal in the read's order: 0 take it, 1 skip it, -1 a
 * hole at v->expect comes first (v->hole is then set: the read stops). */
static int entry_check(vpage *v, uint64_t o)
{
    if (lag_hidden(v->vd->ord, o))
        return 1; /* as if its index entry had not arrived */
    int c;
    if (!v->backwards) {
        if (o >= v->bound || o < v->expect)
            return 1; /* numbered after the counter was read */
        c = o > v->expect ? -1 : 0;
    } else {
        if (v->bottom || o > v->expect)
            return 1;
        c = o < v->expect ? -1 : 0;
    }
    if (c < 0)
        v->hole = 1;
    return c;
}

static void entry_taken(vpage *v, uint64_t o)
{
    if (!v->backwards)
        v->expect = o + 1;
    else if (o == 0)
        v->bottom = 1;
    else
        v->expect = o - 1;
}

/* One answer of a view index (category, type, correlation) into the page:
 * entries in order up to the first hole, their events read consistently,
 * those their streams' rules show added. */
static int view_chunk(vpage *v, json_t *items)
{
    json_t *keys = json_array();
    uint64_t ords[100];
    size_t k = 0;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        uint64_t o = ddb_get_nu(it, v->vd->ord);
        size_t sl;
        const char *s = ddb_get_s(it, "stream", &sl);
        if (!s || o == UINT64_MAX || k == 100)
            continue;
        int c = entry_check(v, o);
        if (c < 0)
            break;
        if (c > 0)
            continue;
        entry_taken(v, o);
        ords[k++] = o;
        json_array_append_new(keys, json_pack("{s:o, s:o}", "stream", ddb_s(s, sl), "revision",
                                              ddb_nu(ddb_get_nu(it, "revision"))));
    }
    if (!k) {
        json_decref(keys);
        return 0;
    }
    json_t *got[100], *keep;
    int rc = get_events(v->D, keys, got, &keep);
    for (size_t j = 0; rc == 0 && j < k; j++) {
        if (!got[j] || json_object_get(got[j], "scavenged"))
            continue; /* a stub: the event was scavenged */
        int vis = 0;
        if ((rc = vis_of_item(v->D, v->vc, got[j], &vis)) || !vis)
            continue;
        if (page_full(v->pg, v->limit)) {
            v->pg->has_next = 1;
            v->pg->next = ords[j];
            v->full = 1;
            break;
        }
        if ((rc = ddb_page_add_item(v->pg, got[j])) == 0)
            rc = page_set_link(v->pg, v->pg->count - 1, ords[j]);
    }
    json_decref(keep);
    return rc;
}

/* $streams: streams by their ordinal, each with its first visible event. */
static int view_streams_chunk(vpage *v, json_t *items)
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
        int c = entry_check(v, o);
        if (c < 0)
            break;
        if (c > 0)
            continue;
        stele_page *one;
        rc = ddb_read_stream(&v->D->base, s, sl, 0, 0, 1, &one);
        if (rc == STELE_ENOTFOUND || rc == STELE_EDELETED) {
            err_clear();
            entry_taken(v, o);
            rc = 0;
            continue;
        }
        if (rc)
            break;
        if (one->count) {
            if (page_full(v->pg, v->limit)) {
                v->pg->has_next = 1;
                v->pg->next = o;
                v->full = 1;
                stele_page_free(one);
                break;
            }
            stele_event *e = page_ev(one, 0);
            page_event pe = {.stream = e->stream, .stream_len = e->stream_len, .type = e->type,
                             .type_len = e->type_len, .tags = e->tags, .ntags = e->ntags, .data = e->data,
                             .data_len = e->data_len, .metadata = e->metadata, .metadata_len = e->metadata_len,
                             .id = e->id, .flags = e->flags, .created_us = e->created_us,
                             .revision = e->revision, .position = e->position};
            if ((rc = page_add(v->pg, &pe)) == 0)
                rc = page_set_link(v->pg, v->pg->count - 1, o);
        }
        entry_taken(v, o);
        stele_page_free(one);
        if (rc)
            break;
    }
    return rc;
}

static int view_page(void *ctx, json_t *items)
{
    vpage *v = ctx;
    int rc = v->vd->kind != VIEW_STREAMS ? view_chunk(v, items) : view_streams_chunk(v, items);
    return rc ? rc : v->full || v->hole;
}

/* Query the view's index from v->expect on, in the read's direction. */
static int view_query(vpage *v)
{
    const vdef *vd = v->vd;
    size_t want = v->limit - v->pg->count + 1;
    json_t *req = json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o}, s:b, s:i}", "TableName", v->D->t_events,
                            "IndexName", vd->index, "KeyConditionExpression",
                            v->backwards ? "#h = :h AND #o <= :o" : "#h = :h AND #o >= :o",
                            "ExpressionAttributeNames", "#h", vd->hash, "#o", vd->ord, "ExpressionAttributeValues",
                            ":h", ddb_s(vd->key, vd->key_len), ":o", ddb_nu(v->expect), "ScanIndexForward",
                            !v->backwards, "Limit", (int)(want > 100 ? 100 : want));
    return ddb_pages(v->D, "Query", req, view_page, v);
}

/* The first index entry of the view past ordinal `o` in direction
 * `backwards` (and below bound): *found, its ordinal and its event's
 * position (read consistently). */
typedef struct vnear {
    const vdef *vd;
    uint64_t bound;
    int found;
    uint64_t ord;
    char stream[META_NAME_MAX + 1];
    size_t len;
    uint64_t rev;
} vnear;

static int near_page(void *ctx, json_t *items)
{
    vnear *n = ctx;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        uint64_t o = ddb_get_nu(it, n->vd->ord);
        size_t sl;
        const char *s = ddb_get_s(it, "stream", &sl);
        if (!s || sl > META_NAME_MAX || o == UINT64_MAX || lag_hidden(n->vd->ord, o))
            continue;
        if (o >= n->bound)
            return 1; /* past the view's extent: none */
        n->found = 1;
        n->ord = o;
        memcpy(n->stream, s, sl);
        n->len = sl;
        n->rev = ddb_get_nu(it, "revision");
        return 1;
    }
    return 0;
}

static int view_near(ddb *D, const vdef *vd, uint64_t o, int backwards, uint64_t bound, int *found,
                     uint64_t *ord, uint64_t *pos)
{
    vnear n = {.vd = vd, .bound = bound};
    json_t *req = json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o}, s:b, s:i}", "TableName", D->t_events,
                            "IndexName", vd->index, "KeyConditionExpression",
                            backwards ? "#h = :h AND #o < :o" : "#h = :h AND #o > :o", "ExpressionAttributeNames",
                            "#h", vd->hash, "#o", vd->ord, "ExpressionAttributeValues", ":h",
                            ddb_s(vd->key, vd->key_len), ":o", ddb_nu(o), "ScanIndexForward", !backwards,
                            "Limit", 20);
    int rc = ddb_pages(D, "Query", req, near_page, &n);
    *found = n.found;
    if (rc || !n.found)
        return rc;
    *ord = n.ord;
    json_t *resp;
    rc = ddb_call(D, "GetItem",
                  json_pack("{s:s, s:{s:o, s:o}, s:b}", "TableName", D->t_events, "Key", "stream",
                            ddb_s(n.stream, n.len), "revision", ddb_nu(n.rev), "ConsistentRead", 1),
                  &resp, NULL);
    if (rc)
        return rc;
    json_t *it = json_object_get(resp, "Item");
    *pos = it ? ddb_get_nu(it, "position") : UINT64_MAX;
    json_decref(resp);
    if (*pos == UINT64_MAX)
        return err_set(STELE_ECORRUPT, "dynamodb: a view index entry without its event");
    return 0;
}

/* Does event e belong to the view? */
static int view_member(const vdef *vd, const stele_event *e)
{
    switch (vd->kind) {
    case STELE_QUERY_CATEGORY:
        return ddb_category_len(e->stream, e->stream_len) == vd->key_len &&
               !memcmp(e->stream, vd->key, vd->key_len);
    case STELE_QUERY_TYPE: return e->type_len == vd->key_len && !memcmp(e->type, vd->key, vd->key_len);
    case STELE_QUERY_CORRELATION: {
        meta_ids m = {0};
        if (!e->metadata_len || !(e->flags & STELE_META_JSON) || meta_ids_extract(e->metadata, e->metadata_len, &m))
            return 0;
        return m.correlation_len == vd->key_len && !memcmp(m.correlation, vd->key, vd->key_len);
    }
    default: return e->revision == 0; /* $streams: a stream's first event */
    }
}

/*
 * A hole that outlived the retries: index lag, or a stub written before
 * stubs kept their view keys (older stores). Between q, the view's
 * nearest present ordinal below the hole, and o, the nearest above (below
 * the bound), the view's events are exactly the ordinals q+1 .. o-1 (view
 * ordinals follow positions), all missing from the index. $all, read
 * consistently, shows every event that is not a stub, and a live event
 * keeps its view keys: if no event of the view lies between q's position
 * and o's, the missing ordinals are all stubs and *skip is set, with *lo
 * = q (UINT64_MAX: none) and *hi = o (the bound: none). Otherwise an
 * event is on its way into the index: wait.
 */
static int hole_judge(ddb *D, const vdef *vd, uint64_t h, uint64_t bound, int *skip, uint64_t *lo, uint64_t *hi)
{
    int found;
    uint64_t ord, plo = UINT64_MAX, phi = UINT64_MAX;
    *skip = 0;
    *lo = UINT64_MAX;
    *hi = bound;
    int rc = h ? view_near(D, vd, h, 1, bound, &found, &ord, &plo) : 0;
    if (rc)
        return rc;
    if (h && found)
        *lo = ord;
    else
        plo = UINT64_MAX; /* from position 0 */
    if ((rc = view_near(D, vd, h, 0, bound, &found, &ord, &phi)))
        return rc;
    if (found)
        *hi = ord;
    else if ((rc = ddb_seq_get(D, &phi))) /* every position the bound's events hold is below it */
        return rc;
    uint64_t from = plo == UINT64_MAX ? 0 : plo + 1;
    int member = 0;
    while (rc == 0 && from < phi && !member) {
        stele_page *pg;
        if ((rc = ddb_read_all(&D->base, from, 0, phi - from < 1000 ? (size_t)(phi - from) : 1000, &pg)))
            break;
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n && !member; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (e->position >= phi)
                break;
            member = view_member(vd, e);
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        if (!n || !more || next <= from || (n && stele_page_event(pg, n - 1)->position >= phi))
            from = phi;
        else
            from = next;
        stele_page_free(pg);
    }
    if (rc == 0)
        *skip = !member;
    return rc;
}

/* Re-queries of a hole before it is judged, and their waits (ms). */
#define HOLE_RETRIES 3
#define HOLE_WAIT_MS 10

int ddb_read_view(backend *b, int kind, const char *key, size_t key_len, uint64_t from, int backwards,
                  size_t limit, stele_page **out)
{
    ddb *D = (ddb *)b;
    vdef vd = {kind, NULL, NULL, NULL, key, key_len};
    const char *pre;
    char ck;
    switch (kind) {
    case STELE_QUERY_CATEGORY:
        vd.index = "viewCategory", vd.hash = "category", vd.ord = "ceRev", pre = "$ce-", ck = 'c';
        break;
    case STELE_QUERY_TYPE: vd.index = "viewType", vd.hash = "eventType", vd.ord = "etRev", pre = "$et-", ck = 't'; break;
    case STELE_QUERY_CORRELATION:
        vd.index = "viewCorrelation", vd.hash = "correlationId", vd.ord = "bcRev", pre = "$bc-", ck = 'b';
        break;
    case VIEW_STREAMS:
        vd.index = "viewStreams", vd.hash = "nk", vd.ord = "streamNo", pre = "$streams", ck = 0;
        vd.key = "s", vd.key_len = 1;
        break;
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
    vpage v = {D, &vd, bound, backwards, limit, &vc, pg, from, 0, 0, 0};
    /* Page by page until the page is full, the view's end, or a hole that
     * outlives its re-queries and is not judged a run of stubs. */
    for (int tries = 0; rc == 0;) {
        v.hole = 0;
        if ((rc = view_query(&v)) || v.full)
            break;
        if (!v.hole) /* the answers ended: a hole before the end? */
            v.hole = backwards ? !v.bottom : v.expect < bound;
        if (!v.hole)
            break;
        if (tries < HOLE_RETRIES) {
            usleep((useconds_t)(HOLE_WAIT_MS << tries) * 1000u);
            tries++;
            continue;
        }
        int skip;
        uint64_t lo, hi;
        if ((rc = hole_judge(D, &vd, v.expect, bound, &skip, &lo, &hi)) || !skip)
            break;
        /* Stubs only: on past them. */
        if (!backwards)
            v.expect = hi;
        else if (lo == UINT64_MAX)
            v.bottom = 1;
        else
            v.expect = lo;
        v.hole = 0;
        tries = 0;
        if (backwards ? v.bottom : v.expect >= bound)
            break;
    }
    vcache_free(&vc);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    if (v.hole) {
        /* Not yet in the index: the next read starts at the hole. */
        pg->has_next = 1;
        pg->next = v.expect;
        atomic_store(&D->view_hole, 1);
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
