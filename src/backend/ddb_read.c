/*
 * ddb_read.c - reads of the DynamoDB backend: streams (a consistent Query
 * on the events table), $all (the feed's commit items, then a consistent
 * BatchGetItem of their events), stream heads, queries through the GSIs,
 * metadata and snapshots.
 *
 * Visibility: the stream's item is read first (consistently) and decides,
 * with the rule shared with the local engine (ddb_event_visible), what a
 * stream read or a query may show. $all shows every committed event, and
 * only committed ones: it reads the sequencer first, and the commit that
 * set it to H is visible in full to a later read (transactions are
 * serialisable with single-item reads), so positions below H are all
 * there. A missing one is reported as an error, never skipped.
 *
 * Queries go through global secondary indexes, which DynamoDB keeps
 * eventually consistent (DynamoDB Local: at once): an event may reach a
 * query a moment after its append returned. Their sort key is timePos
 * (created * 10^20 + position): created times are monotonic along
 * positions (ddb.c), so a time range is a key range and results come in
 * position order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ddb_int.h"
#include "util/util.h"

int ddb_page_add_item(stele_page *pg, json_t *item)
{
    size_t sl, tl = 0;
    const char *stream = ddb_get_s(item, "stream", &sl);
    const char *type = ddb_get_s(item, "eventType", &tl);
    const char *idt = ddb_get_s(item, "eventId", NULL);
    int64_t created = 0, flags = 0;
    uint8_t id[16];
    if (!stream || !type || !idt || stele_uuid_parse(idt, id) || ddb_get_n(item, "created", &created) ||
        ddb_get_n(item, "flags", &flags))
        return err_set(STELE_ECORRUPT, "dynamodb: an event item lacks stream, eventType, eventId, created or flags");
    uint64_t rev = ddb_get_nu(item, "revision"), pos = ddb_get_nu(item, "position");
    uint8_t *data = NULL, *meta = NULL;
    size_t dl = 0, ml = 0;
    int rc = ddb_get_b(item, "data", &data, &dl);
    if (rc == 0)
        rc = ddb_get_b(item, "metadata", &meta, &ml);
    const char *tags[64];
    size_t ntags = 0;
    json_t *tl_ = json_object_get(json_object_get(item, "tags"), "L");
    size_t i;
    json_t *t;
    json_array_foreach(tl_, i, t) {
        const char *s = json_string_value(json_object_get(t, "S"));
        if (s && ntags < 64)
            tags[ntags++] = s;
    }
    if (rc == 0) {
        page_event pe = {.stream = stream, .stream_len = sl, .type = type, .type_len = tl, .tags = tags,
                         .ntags = ntags, .data = data, .data_len = dl, .metadata = meta, .metadata_len = ml,
                         .id = id, .flags = (uint32_t)flags, .created_us = created, .revision = rev,
                         .position = pos};
        rc = page_add(pg, &pe);
    }
    free(data);
    free(meta);
    return rc;
}

/* The stream's state for a read: ENOTFOUND / EDELETED as the local engine. */
static int read_state(ddb *D, const char *stream, size_t len, dstate *st)
{
    int rc = ddb_state_get(D, stream, len, st);
    if (rc)
        return rc;
    if (!st->found) {
        rc = err_set(STELE_ENOTFOUND, "stream '%.*s' not found", (int)len, stream);
    } else if (st->tombstoned) {
        rc = err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)len, stream);
    } else if (st->deleted || st->last == UINT64_MAX) {
        rc = err_set(STELE_ENOTFOUND, "stream '%.*s' not found (deleted)", (int)len, stream);
    }
    if (rc)
        ddb_state_free(st);
    return rc;
}

/* A stream read's pages (query_stream). */
typedef struct spage {
    const dstate *st;
    int backwards;
    size_t limit;
    stele_page *pg;
    uint64_t *last;
    int *any, *aged;
    int64_t now;
} spage;

static int stream_page(void *ctx, json_t *items)
{
    spage *sp = ctx;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        if (page_full(sp->pg, sp->limit))
            return 1;
        uint64_t rev = ddb_get_nu(it, "revision");
        int64_t created = 0;
        ddb_get_n(it, "created", &created);
        if (!ddb_event_visible(sp->st, rev, created, sp->now) || json_object_get(it, "scavenged")) {
            if (sp->backwards) {
                *sp->aged = 1;
                return 1;
            }
            continue;
        }
        int rc = ddb_page_add_item(sp->pg, it);
        if (rc)
            return rc;
        *sp->last = rev;
        *sp->any = 1;
    }
    return page_full(sp->pg, sp->limit);
}

/* Events of the stream with lo <= revision <= hi into pg, in the read's
 * direction, visible under st. *last: the last revision added; *aged: a
 * backwards read met an event maxAge hides. */
static int query_stream(ddb *D, const char *stream, size_t len, const dstate *st, uint64_t lo,
                        uint64_t hi, int backwards, size_t limit, stele_page *pg, uint64_t *last,
                        int *any, int *aged)
{
    if (page_full(pg, limit))
        return 0;
    size_t want = limit - pg->count;
    spage sp = {st, backwards, limit, pg, last, any, aged, time_now_us()};
    json_t *req = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o, s:o}, s:b, s:b, s:i}", "TableName", D->t_events,
                            "KeyConditionExpression", "#s = :s AND #r BETWEEN :a AND :b",
                            "ExpressionAttributeNames", "#s", "stream", "#r", "revision",
                            "ExpressionAttributeValues", ":s", ddb_s(stream, len), ":a", ddb_nu(lo), ":b",
                            ddb_nu(hi), "ConsistentRead", 1, "ScanIndexForward", !backwards, "Limit",
                            (int)(want > 1000 ? 1000 : want));
    return ddb_pages(D, "Query", req, stream_page, &sp);
}

/* A stream read of revisions <= cap (UINT64_MAX: no cap). */
static int read_stream_capped(ddb *D, const char *stream, size_t len, uint64_t from, int backwards,
                              size_t limit, uint64_t cap, stele_page **out)
{
    dstate st;
    int rc = read_state(D, stream, len, &st);
    if (rc)
        return rc;
    stele_page *pg;
    if ((rc = page_new(D->pl, &pg))) {
        ddb_state_free(&st);
        return rc;
    }
    page_expect(pg, limit);
    uint64_t lo = ddb_stream_start(&st), hi = st.last < cap ? st.last : cap;
    if (!backwards && from < lo)
        from = lo;
    if (backwards && from > hi)
        from = hi;
    if (!(from < lo || from > hi || limit == 0)) {
        uint64_t last = 0;
        int any = 0, aged = 0;
        rc = backwards ? query_stream(D, stream, len, &st, lo, from, 1, limit, pg, &last, &any, &aged)
                       : query_stream(D, stream, len, &st, from, hi, 0, limit, pg, &last, &any, &aged);
        if (rc == 0 && any) {
            if (!backwards && last < hi) {
                pg->has_next = 1;
                pg->next = last + 1;
            } else if (backwards && last > lo && !aged) {
                pg->has_next = 1;
                pg->next = last - 1;
            }
        }
    }
    ddb_state_free(&st);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

int ddb_read_stream(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                    size_t limit, stele_page **out)
{
    return read_stream_capped((ddb *)b, stream, len, from, backwards, limit, UINT64_MAX, out);
}

/* rev_as_of's pages: *to follows the items until one is later. */
typedef struct apage {
    int64_t as_of_us;
    uint64_t *to;
} apage;

static int as_of_page(void *ctx, json_t *items)
{
    apage *ap = ctx;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        int64_t c = 0;
        ddb_get_n(it, "created", &c);
        if (c > ap->as_of_us)
            return 1;
        *ap->to = ddb_get_nu(it, "revision");
    }
    return 0;
}

/* The last revision created at or before as_of (STELE_NONE: none):
 * created times grow along the stream, so the events up to it are a
 * prefix; its items are read in key order until one is later. */
static int rev_as_of(ddb *D, const char *stream, size_t len, int64_t as_of_us, uint64_t *to)
{
    *to = STELE_NONE;
    apage ap = {as_of_us, to};
    json_t *req = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:{s:o}, s:b, s:b}", "TableName",
                            D->t_events, "KeyConditionExpression", "#s = :s", "ProjectionExpression",
                            "#r, #c", "ExpressionAttributeNames", "#s", "stream", "#c", "created", "#r",
                            "revision", "ExpressionAttributeValues", ":s", ddb_s(stream, len),
                            "ConsistentRead", 1, "ScanIndexForward", 1);
    return ddb_pages(D, "Query", req, as_of_page, &ap);
}

int ddb_read_stream_to(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                       size_t limit, uint64_t to, int has_as_of, int64_t as_of_us, stele_page **out)
{
    ddb *D = (ddb *)b;
    int rc;
    if (has_as_of) {
        if ((rc = rev_as_of(D, stream, len, as_of_us, &to)))
            return rc;
        if (to == STELE_NONE) {
            stele_page *pg;
            dstate st;
            if ((rc = read_state(D, stream, len, &st)))
                return rc;
            ddb_state_free(&st);
            if ((rc = page_new(D->pl, &pg)))
                return rc;
            *out = pg;
            return 0;
        }
    }
    return read_stream_capped(D, stream, len, from, backwards, limit, to, out);
}

int ddb_head(backend *b, const char *stream, size_t len, stele_stream_info *out)
{
    ddb *D = (ddb *)b;
    dstate st;
    int rc = ddb_state_get(D, stream, len, &st);
    if (rc)
        return rc;
    if (!st.found)
        return err_set(STELE_ENOTFOUND, "stream '%.*s' not found", (int)len, stream);
    out->last_revision = st.last;
    out->last_position = st.last_pos;
    out->truncate_before = st.tb;
    out->deleted = st.deleted;
    out->tombstoned = st.tombstoned;
    ddb_state_free(&st);
    return 0;
}

/* ------------------------------------------------------------------ $all */

typedef struct slot {
    uint64_t pos, rev;
    const char *stream; /* into the feed answers kept in `keep` */
    size_t len;
} slot;

int ddb_feed_at(ddb *D, uint64_t p, json_t **keep, json_t **item)
{
    *item = NULL;
    uint64_t b = p >> DDB_BUCKET_SHIFT;
    for (int k = 0; k < 2; k++, b--) {
        json_t *resp;
        int rc = ddb_call(D, "Query",
                          json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o}, s:b, s:b, s:i}", "TableName", D->t_feed,
                                    "KeyConditionExpression", "#b = :b AND #p <= :p",
                                    "ExpressionAttributeNames", "#b", "bucket", "#p", "position",
                                    "ExpressionAttributeValues", ":b", ddb_nu(b), ":p", ddb_nu(p),
                                    "ConsistentRead", 1, "ScanIndexForward", 0, "Limit", 1),
                          &resp, NULL);
        if (rc)
            return rc;
        json_array_append_new(*keep, resp);
        json_t *it = json_array_get(json_object_get(resp, "Items"), 0);
        if (it) {
            *item = it;
            return 0;
        }
        if (b == 0)
            break;
    }
    return 0;
}

/* Append the commit's positions in [lo, hi] to slots, in the direction. */
static int feed_slots(json_t *item, uint64_t lo, uint64_t hi, int backwards, slot *sl, size_t *n, size_t max)
{
    uint64_t pos = ddb_get_nu(item, "position");
    slot tmp[DDB_MAX_ACTIONS];
    size_t k = 0;
    size_t i;
    json_t *part;
    json_array_foreach(json_object_get(json_object_get(item, "parts"), "L"), i, part) {
        json_t *m = json_object_get(part, "M");
        size_t len;
        const char *s = ddb_get_s(m, "s", &len);
        uint64_t r = ddb_get_nu(m, "r"), c = ddb_get_nu(m, "n");
        if (!s || r == UINT64_MAX || c == UINT64_MAX || k + c > DDB_MAX_ACTIONS)
            return err_set(STELE_ECORRUPT, "dynamodb: feed item at position %llu is malformed",
                           (unsigned long long)pos);
        for (uint64_t j = 0; j < c; j++, k++)
            tmp[k] = (slot){pos + k, r + j, s, len};
    }
    /* positions: pos + index */
    for (size_t j = 0; j < k; j++)
        tmp[j].pos = pos + j;
    for (size_t j = 0; j < k && *n < max; j++) {
        slot *s = &tmp[backwards ? k - 1 - j : j];
        if (s->pos < lo || s->pos > hi)
            continue;
        sl[(*n)++] = *s;
    }
    return 0;
}

/* Positions [from .. head) forwards or [.. from] backwards, at most max. */
static int feed_collect(ddb *D, uint64_t from, int backwards, uint64_t head, size_t max, json_t *keep,
                        slot *sl, size_t *n)
{
    *n = 0;
    json_t *item;
    int rc = ddb_feed_at(D, from, &keep, &item);
    if (rc || !item)
        return rc;
    uint64_t lo = backwards ? 0 : from, hi = backwards ? from : head - 1;
    if ((rc = feed_slots(item, lo, hi, backwards, sl, n, max)))
        return rc;
    uint64_t cur = ddb_get_nu(item, "position");
    while (*n < max) {
        if (backwards && cur == 0)
            break;
        uint64_t b = cur >> DDB_BUCKET_SHIFT;
        if (!backwards && cur + 1 >= head)
            break;
        json_t *resp;
        rc = ddb_call(D, "Query",
                      json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o}, s:b, s:b, s:i}",
                                "TableName", D->t_feed, "KeyConditionExpression",
                                backwards ? "#b = :b AND #p < :p" : "#b = :b AND #p > :p",
                                "ExpressionAttributeNames", "#b", "bucket", "#p", "position",
                                "ExpressionAttributeValues", ":b", ddb_nu(b), ":p", ddb_nu(cur),
                                "ConsistentRead", 1, "ScanIndexForward", !backwards, "Limit", 100),
                      &resp, NULL);
        if (rc)
            return rc;
        json_array_append_new(keep, resp);
        json_t *items = json_object_get(resp, "Items");
        if (!json_array_size(items)) {
            /* The bucket is done: the next (or previous) one. */
            if (backwards) {
                if (b == 0)
                    break;
                /* the last commit of bucket b-1 */
                json_t *it2;
                uint64_t p = (b << DDB_BUCKET_SHIFT) - 1;
                if ((rc = ddb_feed_at(D, p, &keep, &it2)))
                    return rc;
                if (!it2)
                    break;
                if ((rc = feed_slots(it2, lo, hi, 1, sl, n, max)))
                    return rc;
                cur = ddb_get_nu(it2, "position");
                continue;
            }
            uint64_t nb = b + 1;
            if ((nb << DDB_BUCKET_SHIFT) >= head)
                break;
            cur = (nb << DDB_BUCKET_SHIFT) - 1; /* "> cur" in the next bucket */
            json_t *r2;
            rc = ddb_call(D, "Query",
                          json_pack("{s:s, s:s, s:{s:s}, s:{s:o}, s:b, s:b, s:i}", "TableName", D->t_feed,
                                    "KeyConditionExpression", "#b = :b", "ExpressionAttributeNames", "#b",
                                    "bucket", "ExpressionAttributeValues",
                                    ":b", ddb_nu(nb), "ConsistentRead", 1, "ScanIndexForward", 1, "Limit", 100),
                          &r2, NULL);
            if (rc)
                return rc;
            json_array_append_new(keep, r2);
            items = json_object_get(r2, "Items");
            if (!json_array_size(items))
                break; /* the last commit read spans the bucket's start up to the head */
        }
        size_t i;
        json_t *it;
        int past = 0;
        json_array_foreach(items, i, it) {
            if (*n >= max)
                break;
            uint64_t p = ddb_get_nu(it, "position");
            if (!backwards && p >= head) {
                past = 1; /* committed after the sequencer was read */
                break;
            }
            if ((rc = feed_slots(it, lo, hi, backwards, sl, n, max)))
                return rc;
            cur = p;
        }
        if (past)
            break;
    }
    return 0;
}

static int slot_cmp_key(const slot *s, const char *name, size_t len, uint64_t rev)
{
    return s->len == len && !memcmp(s->stream, name, len) && s->rev == rev;
}

/* Fetch the slots' events (consistent BatchGetItem, 100 keys a call) and
 * add them to pg in slot order. */
static int fetch_slots(ddb *D, const slot *sl, size_t n, size_t limit, stele_page *pg)
{
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0 && !page_full(pg, limit); at += 100) {
        size_t k = n - at < 100 ? n - at : 100;
        json_t **got = calloc(k, sizeof *got);
        if (!got)
            return err_set(STELE_ENOMEM, "out of memory");
        json_t *keys = json_array();
        for (size_t j = 0; j < k; j++)
            json_array_append_new(keys, json_pack("{s:o, s:o}", "stream", ddb_s(sl[at + j].stream, sl[at + j].len),
                                                  "revision", ddb_nu(sl[at + j].rev)));
        json_t *req = json_pack("{s:{s:{s:o, s:b}}}", "RequestItems", D->t_events, "Keys", keys,
                                "ConsistentRead", 1);
        json_t *keep = json_array();
        for (int round = 0; req && rc == 0; round++) {
            json_t *resp;
            if ((rc = ddb_call(D, "BatchGetItem", req, &resp, NULL)))
                break;
            json_array_append_new(keep, resp);
            size_t i;
            json_t *it;
            json_array_foreach(json_object_get(json_object_get(resp, "Responses"), D->t_events), i, it) {
                size_t len;
                const char *s = ddb_get_s(it, "stream", &len);
                uint64_t rev = ddb_get_nu(it, "revision");
                for (size_t j = 0; s && j < k; j++)
                    if (!got[j] && slot_cmp_key(&sl[at + j], s, len, rev)) {
                        got[j] = it;
                        break;
                    }
            }
            json_t *un = json_object_get(json_object_get(resp, "UnprocessedKeys"), D->t_events);
            req = NULL;
            if (un && json_array_size(json_object_get(un, "Keys"))) {
                if (round > 20) {
                    rc = err_set(STELE_EBUSY, "dynamodb BatchGetItem: keys left unprocessed");
                    break;
                }
                req = json_pack("{s:{s:O}}", "RequestItems", D->t_events, un);
            }
        }
        for (size_t j = 0; j < k && rc == 0 && !page_full(pg, limit); j++) {
            if (got[j] && json_object_get(got[j], "scavenged"))
                continue; /* reclaimed by a scavenge (ddb_scavenge.c) */
            if (!got[j]) {
                rc = err_set(STELE_ECORRUPT, "dynamodb: the event at position %llu ('%.*s' revision %llu) is missing",
                             (unsigned long long)sl[at + j].pos, (int)sl[at + j].len, sl[at + j].stream,
                             (unsigned long long)sl[at + j].rev);
                break;
            }
            rc = ddb_page_add_item(pg, got[j]);
        }
        free(got);
        json_decref(keep);
    }
    return rc;
}

int ddb_read_all(backend *b, uint64_t from, int backwards, size_t limit, stele_page **out)
{
    ddb *D = (ddb *)b;
    uint64_t head;
    int rc = ddb_seq_get(D, &head);
    if (rc)
        return rc;
    stele_page *pg;
    if ((rc = page_new(D->pl, &pg)))
        return rc;
    page_expect(pg, limit);
    if (head == 0 || limit == 0 || (!backwards && from >= head)) {
        *out = pg;
        return 0;
    }
    if (backwards && from >= head)
        from = head - 1;
    size_t max = limit < 1000 ? limit : 1000;
    slot *sl = malloc(max * sizeof *sl);
    json_t *keep = NULL;
    if (!sl)
        rc = err_set(STELE_ENOMEM, "out of memory");
    /* In rounds of at most 1,000 events until the page is full or $all ends. */
    while (rc == 0 && !page_full(pg, limit)) {
        size_t n = 0, want = limit - pg->count < max ? limit - pg->count : max;
        json_decref(keep);
        keep = json_array();
        rc = feed_collect(D, from, backwards, head, want, keep, sl, &n);
        if (rc == 0)
            rc = fetch_slots(D, sl, n, limit, pg);
        if (rc || n < want || n == 0)
            break;
        /* On past the last position read, kept or not: a round of
         * scavenged stubs only adds nothing to the page. */
        uint64_t last = sl[n - 1].pos;
        if (backwards ? last == 0 : last + 1 >= head)
            break;
        from = backwards ? last - 1 : last + 1;
    }
    if (rc == 0 && pg->count) {
        uint64_t last = page_ev(pg, pg->count - 1)->position;
        if (!backwards && last + 1 < head) {
            pg->has_next = 1;
            pg->next = last + 1;
        } else if (backwards && last > 0) {
            pg->has_next = 1;
            pg->next = last - 1;
        }
    }
    free(sl);
    json_decref(keep);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

/* --------------------------------------------------------------- queries */

typedef struct qstate {
    char *name;
    size_t len;
    int ok;
    dstate st;
} qstate;

/* Is this event visible to queries (its stream's rules)? States are read
 * once per query and stream. */
static int query_visible_ev(ddb *D, qstate **cache, size_t *nc, const char *s, size_t len, uint64_t rev,
                            int64_t created, int *vis)
{
    qstate *q = NULL;
    for (size_t i = 0; i < *nc; i++)
        if ((*cache)[i].len == len && !memcmp((*cache)[i].name, s, len))
            q = &(*cache)[i];
    if (!q) {
        qstate *nq = realloc(*cache, (*nc + 1) * sizeof *nq);
        if (!nq)
            return err_set(STELE_ENOMEM, "out of memory");
        *cache = nq;
        q = &nq[(*nc)++];
        q->name = strndup(s, len);
        q->len = len;
        int rc = ddb_state_get(D, s, len, &q->st);
        if (rc) {
            (*nc)--;
            free(q->name);
            return rc;
        }
    }
    *vis = !q->st.deleted || rev >= q->st.tb;
    *vis = *vis && ddb_event_visible(&q->st, rev, created, time_now_us());
    return 0;
}

static int query_visible(ddb *D, qstate **cache, size_t *nc, json_t *it, int *vis)
{
    size_t len;
    const char *s = ddb_get_s(it, "stream", &len);
    if (!s)
        return err_set(STELE_ECORRUPT, "dynamodb: event item without a stream");
    int64_t created = 0;
    ddb_get_n(it, "created", &created);
    return query_visible_ev(D, cache, nc, s, len, ddb_get_nu(it, "revision"), created, vis);
}

static void qcache_free(qstate *cache, size_t nc)
{
    for (size_t i = 0; i < nc; i++) {
        free(cache[i].name);
        ddb_state_free(&cache[i].st);
    }
    free(cache);
}

/*
 * A query by reading $all: STELE_QUERY_ALL (a time range of $all, every
 * event) and STELE_QUERY_TAG (DynamoDB cannot key an index on a list, so
 * tags are matched while $all is read, with the type restriction and the
 * stream's visibility rules; the cost is that of reading $all from
 * `from`, docs/backends.md).
 */
static int query_by_all(ddb *D, const query_args *q, stele_page *pg)
{
    int tag = q->kind == STELE_QUERY_TAG;
    qstate *cache = NULL;
    size_t nc = 0;
    uint64_t from = q->from;
    int rc = 0, more = 0;
    uint64_t last = 0;
    /* Chunks of $all grow from a little more than the page (a small page
     * of a frequent tag, the newest match) to 500 events (a rare tag). */
    size_t chunk = q->limit + 8 < 500 ? q->limit + 8 : 500;
    while (!more) {
        stele_page *part;
        if ((rc = ddb_read_all(&D->base, from, q->backwards, chunk, &part)))
            break;
        chunk = chunk * 2 < 500 ? chunk * 2 : 500;
        int past = 0;
        for (size_t i = 0; i < part->count; i++) {
            stele_event *e = page_ev(part, i);
            if ((q->has_after && e->created_us < q->after_us) || (q->has_before && e->created_us >= q->before_us)) {
                past = q->backwards ? (q->has_after && e->created_us < q->after_us)
                                    : (q->has_before && e->created_us >= q->before_us);
                if (past)
                    break;
                continue;
            }
            if (tag) {
                int has = 0;
                for (size_t t = 0; !has && t < e->ntags; t++)
                    has = strlen(e->tags[t]) == q->key_len && !memcmp(e->tags[t], q->key, q->key_len);
                if (!has || (q->type && (e->type_len != q->type_len || memcmp(e->type, q->type, q->type_len))))
                    continue;
                int vis;
                if ((rc = query_visible_ev(D, &cache, &nc, e->stream, e->stream_len, e->revision, e->created_us,
                                           &vis)))
                    break;
                if (!vis)
                    continue;
            }
            if (page_full(pg, q->limit)) {
                more = 1;
                last = e->position; /* the next match: the page's next */
                break;
            }
            page_event pe = {.stream = e->stream, .stream_len = e->stream_len, .type = e->type,
                             .type_len = e->type_len, .tags = e->tags, .ntags = e->ntags, .data = e->data,
                             .data_len = e->data_len, .metadata = e->metadata,
                             .metadata_len = e->metadata_len, .id = e->id, .flags = e->flags,
                             .created_us = e->created_us, .revision = e->revision, .position = e->position};
            if ((rc = page_add(pg, &pe)))
                break;
        }
        int next = part->has_next;
        from = part->next;
        stele_page_free(part);
        if (rc || past || more || !next)
            break;
    }
    qcache_free(cache, nc);
    if (rc)
        return rc;
    /* The next match's position, when one was seen past the full page. */
    if (more) {
        pg->has_next = 1;
        pg->next = last;
    }
    return 0;
}

/* A GSI query's pages (ddb_query). */
typedef struct qpage {
    ddb *D;
    const query_args *q;
    stele_page *pg;
    qstate *cache;
    size_t nc;
} qpage;

static int index_page(void *ctx, json_t *items)
{
    qpage *qp = ctx;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        int vis = 0;
        int rc = query_visible(qp->D, &qp->cache, &qp->nc, it, &vis);
        if (rc)
            return rc;
        if (!vis)
            continue;
        if (page_full(qp->pg, qp->q->limit)) {
            qp->pg->has_next = 1;
            qp->pg->next = ddb_get_nu(it, "position");
            return 1;
        }
        if ((rc = ddb_page_add_item(qp->pg, it)))
            return rc;
    }
    return 0;
}

int ddb_query(backend *b, const query_args *q, stele_page **out)
{
    ddb *D = (ddb *)b;
    const char *index = NULL, *attr = NULL;
    switch (q->kind) {
    case STELE_QUERY_TYPE: index = "byType", attr = "eventType"; break;
    case STELE_QUERY_CATEGORY: index = "byCategory", attr = "category"; break;
    case STELE_QUERY_ACTOR: index = "byActor", attr = "actor"; break;
    case STELE_QUERY_CORRELATION: index = "byCorrelation", attr = "correlationId"; break;
    case STELE_QUERY_CAUSATION: index = "byCausation", attr = "causationId"; break;
    case STELE_QUERY_ALL: case STELE_QUERY_TAG: break;
    default:
        return err_set(STELE_EINVAL, "dynamodb: unknown query kind %d", q->kind);
    }
    stele_page *pg;
    int rc = page_new(D->pl, &pg);
    if (rc)
        return rc;
    page_expect(pg, q->limit);
    if (q->kind == STELE_QUERY_ALL || q->kind == STELE_QUERY_TAG) {
        if ((rc = query_by_all(D, q, pg))) {
            stele_page_free(pg);
            return rc;
        }
        *out = pg;
        return 0;
    }
    /* timePos range from the time range; the position bound as a filter. */
    char lo[64], hi[64];
    snprintf(lo, sizeof lo, "%lld%020d", (long long)(q->has_after && q->after_us > 0 ? q->after_us : 0), 0);
    if (q->has_before && (q->before_us <= 0 || (q->has_after && q->after_us >= q->before_us))) {
        *out = pg; /* an empty range (BETWEEN refuses lo > hi) */
        return 0;
    }
    if (q->has_before && q->before_us == 1) /* created < before: up to before - 1 us */
        snprintf(hi, sizeof hi, "99999999999999999999");
    else if (q->has_before)
        snprintf(hi, sizeof hi, "%lld99999999999999999999", (long long)q->before_us - 1);
    else
        snprintf(hi, sizeof hi, "99999999999999999999999999999999999999");
    char filter[256];
    snprintf(filter, sizeof filter, "#p %s :p%s", q->backwards ? "<=" : ">=",
             q->type ? " AND #t = :t" : "");
    qpage qp = {D, q, pg, NULL, 0};
    /* Until the page is full and the next visible match is seen: the
     * page's next is that match's position, as on the local engine. */
    if (q->limit != 0) {
        json_t *vals = json_pack("{s:o, s:{s:s}, s:{s:s}, s:o}", ":k", ddb_s(q->key, q->key_len), ":lo", "N", lo,
                                 ":hi", "N", hi, ":p", ddb_nu(q->from > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : q->from));
        if (q->type)
            json_object_set_new(vals, ":t", ddb_s(q->type, q->type_len));
        json_t *names = json_pack("{s:s, s:s, s:s}", "#a", attr, "#tp", "timePos", "#p", "position");
        if (q->type)
            json_object_set_new(names, "#t", json_string("eventType"));
        json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:b, s:i}", "TableName", D->t_events, "IndexName",
                                index, "KeyConditionExpression", "#a = :k AND #tp BETWEEN :lo AND :hi",
                                "FilterExpression", filter, "ExpressionAttributeNames", names,
                                "ExpressionAttributeValues", vals, "ScanIndexForward", !q->backwards, "Limit",
                                1000);
        rc = ddb_pages(D, "Query", req, index_page, &qp);
    }
    qcache_free(qp.cache, qp.nc);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

/* ------------------------------------------------ metadata and snapshots */

int ddb_get_metadata(backend *b, const char *stream, size_t len, stele_stream_metadata **out)
{
    ddb *D = (ddb *)b;
    dstate st;
    int rc = ddb_state_get(D, stream, len, &st);
    if (rc)
        return rc;
    if (!st.found)
        return err_set(STELE_ENOTFOUND, "stream '%.*s' not found", (int)len, stream);
    if (st.tombstoned) {
        ddb_state_free(&st);
        return err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)len, stream);
    }
    stele_stream_metadata *md = malloc(sizeof *md + st.custom_len + 1);
    if (!md) {
        ddb_state_free(&st);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    memset(md, 0, sizeof *md);
    char *custom = (char *)(md + 1);
    if (st.custom_len)
        memcpy(custom, st.custom, st.custom_len);
    custom[st.custom_len] = 0;
    md->max_age_us = st.max_age;
    md->max_count = st.max_count;
    md->truncate_before = st.md_tb;
    md->max_snapshots = st.max_snaps;
    md->custom = st.custom_len ? custom : NULL;
    md->custom_len = st.custom_len;
    md->version = st.md_version;
    ddb_state_free(&st);
    *out = md;
    return 0;
}

/* The latest snapshot at or before rev and at or after the stream's start. */
static int snap_at(ddb *D, const char *stream, size_t len, const dstate *st, uint64_t rev,
                   stele_snapshot **out)
{
    *out = NULL;
    json_t *resp;
    int rc = ddb_call(D, "Query",
                      json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o}, s:b, s:b, s:i}", "TableName", D->t_snaps,
                                "KeyConditionExpression", "#s = :s AND #r <= :r",
                                "ExpressionAttributeNames", "#s", "stream", "#r", "revision",
                                "ExpressionAttributeValues", ":s", ddb_s(stream, len), ":r",
                                ddb_nu(rev == STELE_END ? (uint64_t)INT64_MAX : rev), "ConsistentRead", 1,
                                "ScanIndexForward", 0, "Limit", 1),
                      &resp, NULL);
    if (rc)
        return rc;
    json_t *it = json_array_get(json_object_get(resp, "Items"), 0);
    if (!it || ddb_get_nu(it, "revision") < st->tb || ddb_get_nu(it, "revision") > st->last) {
        json_decref(resp);
        return 0;
    }
    uint8_t *state;
    size_t sl;
    if ((rc = ddb_get_b(it, "state", &state, &sl))) {
        json_decref(resp);
        return rc;
    }
    stele_snapshot *s = malloc(sizeof *s + len + 1 + sl);
    if (!s) {
        free(state);
        json_decref(resp);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    char *name = (char *)(s + 1);
    memcpy(name, stream, len);
    name[len] = 0;
    if (sl)
        memcpy(name + len + 1, state, sl);
    int64_t v = 0;
    s->stream = name;
    s->stream_len = len;
    s->revision = ddb_get_nu(it, "revision");
    s->schema_version = (uint32_t)ddb_get_nu(it, "schemaVersion");
    s->flags = ddb_get_n(it, "flags", &v) == 0 ? (uint32_t)v & STELE_EVENT_JSON : 0;
    s->created_us = ddb_get_n(it, "created", &v) == 0 ? v : 0;
    s->state = name + len + 1;
    s->state_len = sl;
    free(state);
    json_decref(resp);
    *out = s;
    return 0;
}

int ddb_get_snapshot(backend *b, const char *stream, size_t len, uint64_t at_or_before,
                     stele_snapshot **out)
{
    ddb *D = (ddb *)b;
    dstate st;
    int rc = read_state(D, stream, len, &st);
    if (rc)
        return rc;
    rc = snap_at(D, stream, len, &st, at_or_before, out);
    ddb_state_free(&st);
    return rc;
}

int ddb_load(backend *b, const char *stream, size_t len, size_t limit, stele_snapshot **snap,
             stele_page **events)
{
    ddb *D = (ddb *)b;
    dstate st;
    int rc = read_state(D, stream, len, &st);
    if (rc)
        return rc;
    stele_snapshot *s = NULL;
    stele_page *pg = NULL;
    rc = snap_at(D, stream, len, &st, STELE_END, &s);
    if (rc == 0)
        rc = page_new(D->pl, &pg);
    if (rc == 0) {
        page_expect(pg, limit);
        uint64_t from = s ? s->revision + 1 : 0, lo = ddb_stream_start(&st), hi = st.last;
        if (from < lo)
            from = lo;
        uint64_t last = 0;
        int any = 0, aged = 0;
        if (from <= hi && limit)
            rc = query_stream(D, stream, len, &st, from, hi, 0, limit, pg, &last, &any, &aged);
        if (rc == 0 && any && last < hi) {
            pg->has_next = 1;
            pg->next = last + 1;
        }
    }
    ddb_state_free(&st);
    if (rc) {
        free(s);
        stele_page_free(pg);
        return rc;
    }
    *snap = s;
    *events = pg;
    return 0;
}

/* ------------------------------------------------------------ DCB queries */

/* Does an event (type, tags) match the condition's query? */
int ddb_cond_match(const stele_condition *c, const char *type, size_t type_len, const char *const *tags,
                   size_t ntags)
{
    for (size_t i = 0; i < c->nitems; i++) {
        const stele_query_item *it = &c->items[i];
        int ok = it->ntypes == 0;
        for (size_t k = 0; !ok && k < it->ntypes; k++)
            ok = strlen(it->types[k]) == type_len && !memcmp(it->types[k], type, type_len);
        for (size_t k = 0; ok && k < it->ntags; k++) {
            int has = 0;
            for (size_t j = 0; !has && j < ntags; j++)
                has = !strcmp(tags[j], it->tags[k]);
            ok = has;
        }
        if (ok)
            return 1;
    }
    return 0;
}

/*
 * Events of $all matching a DCB query: $all read in pages and filtered
 * (DynamoDB has no index over several types and tags at once; the cost
 * is that of reading $all from `from`). The page's next is the position
 * of the next match, as on the local engine.
 */
int ddb_read_matching(backend *b, const stele_condition *cond, uint64_t from, int backwards, size_t limit,
                      stele_page **out)
{
    ddb *D = (ddb *)b;
    stele_page *pg;
    int rc = page_new(D->pl, &pg);
    if (rc)
        return rc;
    page_expect(pg, limit);
    uint64_t at = from;
    int done = limit == 0;
    while (rc == 0 && !done) {
        stele_page *part;
        if ((rc = ddb_read_all(b, at, backwards, 500, &part)))
            break;
        for (size_t i = 0; i < part->count; i++) {
            stele_event *e = page_ev(part, i);
            if (!ddb_cond_match(cond, e->type, e->type_len, e->tags, e->ntags))
                continue;
            if (page_full(pg, limit)) {
                pg->has_next = 1;
                pg->next = e->position;
                done = 1;
                break;
            }
            page_event pe = {.stream = e->stream, .stream_len = e->stream_len, .type = e->type,
                             .type_len = e->type_len, .tags = e->tags, .ntags = e->ntags, .data = e->data,
                             .data_len = e->data_len, .metadata = e->metadata, .metadata_len = e->metadata_len,
                             .id = e->id, .flags = e->flags, .created_us = e->created_us,
                             .revision = e->revision, .position = e->position};
            if ((rc = page_add(pg, &pe)))
                break;
        }
        if (!part->has_next)
            done = 1;
        at = part->next;
        stele_page_free(part);
    }
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}
