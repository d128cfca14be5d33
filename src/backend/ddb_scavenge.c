/*
 * ddb_scavenge.c - reclaiming the space of hidden events on DynamoDB
 * (stele_scavenge): events before a soft delete's truncate-before, of
 * tombstoned streams, and past their stream's maxCount, truncateBefore or
 * maxAge.
 *
 * A removed event's item is replaced by a stub: the same key (stream,
 * revision) with its position, created time, eventId, append marks
 * (cFirst, cCount, below) and view keys (category and ceRev, eventType and
 * etRev, correlationId and bcRev, nk and streamNo), `scavenged` = 1, and
 * nothing else. The data, metadata, tags, timePos and actor/causation go,
 * so the item shrinks to a few dozen bytes and drops out of every query
 * GSI (their sort key is timePos) but keeps its entries in the view GSIs:
 * a view still finds an entry at each of its ordinals and skips the stub,
 * so a missing entry means "not indexed yet" (ddb_view.c). Stubs written
 * before they kept view keys leave holes that ddb_view.c judges. The stub
 * keeps $all whole: a $all read still finds an item at every position
 * below the sequencer and skips the stubs, so a missing item stays an
 * error, never a silent skip (ddb_read.c). Stream reads never show a stub
 * (it is hidden, and loosening retention later does not bring it back:
 * the reads skip stubs too). A retry of a scavenged event stays the
 * idempotent success it was (the id item is kept; ddb_plan.c compares
 * nothing with a stub).
 *
 * What goes: whole appends (commits), as on the local engine and
 * PostgreSQL, so a retry check or a reader never finds half an append. An
 * append is removed when every one of its events is hidden and it is not
 * the last append of any stream it wrote (that one stays, as everywhere:
 * the stream's head keeps its event). The events of an append of n > 1
 * events carry its first position and n (cFirst, cCount, ddb_write.c), so
 * the walk knows which events go together; an event without them is an
 * append of its own (single-event appends, and events written before
 * appends were marked). An append over several streams is removed when
 * its events in the other streams are hidden too: the feed item of its
 * group names them, and their streams' items are read.
 *
 * The walk: every stream item of the streams table (a consistent Scan),
 * then the stream's events from revision 0 while they are hidden. The
 * hidden events of a stream are always a prefix of it (truncate-before,
 * maxCount and deletes hide revisions below a bound; created times grow
 * along the stream, so maxAge hides a prefix too), so the walk stops at
 * the first visible event, which keeps the append it belongs to. An
 * append's events in one stream are consecutive revisions, so the walk
 * decides each append when it has passed its last event here (a run of
 * at most 100 events in memory). Stubs are written with BatchWriteItem (25
 * a call). Online: appends and reads go on; an event hidden after its
 * stream's item was read waits for the next scavenge.
 *
 * Result fields on this backend: segments_scanned counts the streams
 * examined, segments_rewritten those that lost events, bytes_scanned and
 * bytes_removed the data, metadata, type and tags of the events read and of
 * those stubbed (bytes_reclaimed is the same estimate: DynamoDB reports no
 * table size change at once).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/ddb_int.h"
#include "util/util.h"

/* The payload of an event item as this scavenge counts it. */
static uint64_t item_bytes(json_t *it)
{
    uint64_t n = 0;
    if (json_object_get(it, "scavenged"))
        return 0; /* a stub: its view keys are not payload */
    static const char *const b64[] = {"data", "metadata"};
    for (int i = 0; i < 2; i++) {
        const char *s = json_string_value(json_object_get(json_object_get(it, b64[i]), "B"));
        if (s)
            n += strlen(s) / 4 * 3;
    }
    size_t tl = 0;
    if (ddb_get_s(it, "eventType", &tl))
        n += tl;
    json_t *t;
    size_t i;
    json_array_foreach(json_object_get(json_object_get(it, "tags"), "L"), i, t)
        n += json_string_length(json_object_get(t, "S"));
    return n;
}

/* Write the stubs in puts (PutRequests; consumed), 25 a call. */
static int write_stubs(ddb *D, json_t *puts)
{
    int rc = 0;
    size_t n = json_array_size(puts);
    for (size_t at = 0; at < n && rc == 0; at += 25) {
        json_t *batch = json_array();
        for (size_t i = at; i < n && i < at + 25; i++)
            json_array_append(batch, json_array_get(puts, i));
        json_t *req = json_pack("{s:{s:o}}", "RequestItems", D->t_events, batch);
        for (int round = 0; req && rc == 0; round++) {
            json_t *resp;
            if ((rc = ddb_call(D, "BatchWriteItem", req, &resp, NULL)))
                break;
            json_t *un = json_object_get(json_object_get(resp, "UnprocessedItems"), D->t_events);
            req = NULL;
            if (un && json_array_size(un)) {
                if (round > 50)
                    rc = err_set(STELE_EBUSY, "dynamodb BatchWriteItem: items left unprocessed");
                else
                    req = json_pack("{s:{s:O}}", "RequestItems", D->t_events, un);
                usleep(5000u << (round < 4 ? round : 4));
            }
            json_decref(resp);
        }
        json_decref(req);
    }
    json_decref(puts);
    return rc;
}

/* Are the events of the commit at positions c0 .. c0 + cn - 1 outside
 * `stream` all hidden, and none of them its stream's last? (A multi-stream
 * append.) The feed item of the group holding c0 names them; each other
 * stream's item is read consistently. 1 yes, 0 no, or an error. */
static int commit_dead_elsewhere(ddb *D, uint64_t c0, uint64_t cn, const char *stream, size_t len, int64_t now)
{
    json_t *keep = json_array(), *feed;
    int rc = ddb_feed_at(D, c0, &keep, &feed);
    if (rc || !feed) {
        json_decref(keep);
        return rc; /* no commit found: keep the events */
    }
    int64_t created = 0;
    ddb_get_n(feed, "created", &created);
    uint64_t pos = ddb_get_nu(feed, "position");
    int dead = 1;
    size_t i;
    json_t *part;
    json_array_foreach(json_object_get(json_object_get(feed, "parts"), "L"), i, part) {
        json_t *m = json_object_get(part, "M");
        size_t sl;
        const char *sn = ddb_get_s(m, "s", &sl);
        uint64_t r0 = ddb_get_nu(m, "r"), n = ddb_get_nu(m, "n");
        if (!sn || r0 == UINT64_MAX || n == UINT64_MAX) {
            dead = 0;
            break;
        }
        /* The part's positions pos .. pos + n - 1 against the commit's. */
        uint64_t lo = pos > c0 ? pos : c0, hi = pos + n < c0 + cn ? pos + n : c0 + cn;
        pos += n;
        if (lo >= hi || (sl == len && !memcmp(sn, stream, len)))
            continue;
        dstate st;
        if ((rc = ddb_state_get(D, sn, sl, &st)))
            break;
        if (st.last_pos != UINT64_MAX && st.last_pos >= c0 && st.last_pos < c0 + cn)
            dead = 0; /* that stream's last commit */
        for (uint64_t p = lo; p < hi && dead; p++)
            dead = !ddb_event_visible(&st, r0 + (p - (pos - n)), created, now);
        ddb_state_free(&st);
        if (!dead)
            break;
    }
    json_decref(keep);
    return rc ? rc : dead;
}

/* One stream's events of one commit (an append), in revision order. */
typedef struct crun {
    uint64_t c0, cn;        /* the commit's first position and size */
    json_t *items;          /* this stream's items of it */
} crun;

/* The commit of an event item: its first position and size (an item
 * without cFirst is an append of one event, or one written before
 * appends were marked). */
static void item_commit(json_t *it, uint64_t *c0, uint64_t *cn)
{
    *c0 = ddb_get_nu(it, "cFirst");
    *cn = ddb_get_nu(it, "cCount");
    if (*c0 == UINT64_MAX || *cn == UINT64_MAX) {
        *c0 = ddb_get_nu(it, "position");
        *cn = 1;
    }
}

/* Decide a run whose events in this stream are all hidden: the commit
 * goes when it is not the stream's last commit and its events in other
 * streams (if any) are hidden too; its stubs go into puts. */
static int run_decide(ddb *D, const char *stream, size_t len, const dstate *st, crun *run, json_t *puts,
                      uint64_t *removed, stele_scavenge_result *res, int64_t now)
{
    size_t n = json_array_size(run->items), stubs = 0, i;
    json_t *it;
    json_array_foreach(run->items, i, it)
        stubs += json_object_get(it, "scavenged") != NULL;
    if (stubs == n) { /* nothing left to remove (or an empty run) */
        json_array_clear(run->items);
        return 0;
    }
    int rc = 0, dead = !(st->last_pos != UINT64_MAX && st->last_pos >= run->c0 &&
                         st->last_pos < run->c0 + run->cn);
    if (dead && n < run->cn)
        dead = rc = commit_dead_elsewhere(D, run->c0, run->cn, stream, len, now);
    if (rc < 0)
        dead = 0;
    json_array_foreach(run->items, i, it) {
        if (!dead || json_object_get(it, "scavenged"))
            continue;
        json_t *stub = json_pack("{s:o, s:o, s:O, s:O, s:o}", "stream", ddb_s(stream, len), "revision",
                                 ddb_nu(ddb_get_nu(it, "revision")), "position", json_object_get(it, "position"),
                                 "created", json_object_get(it, "created"), "scavenged", ddb_n(1));
        /* The view keys stay (their GSIs' entries with them): the event
         * keeps its place in its views, so a view reader tells the stub
         * (skipped) from an entry not yet indexed (waited for). Without
         * timePos the stub is in no query index. */
        static const char *const keep[] = {"eventId", "cFirst",        "cCount", "category", "ceRev", "eventType",
                                           "etRev",   "correlationId", "bcRev",  "nk",       "streamNo"};
        for (size_t k = 0; k < sizeof keep / sizeof keep[0]; k++)
            if (json_object_get(it, keep[k]))
                json_object_set(stub, keep[k], json_object_get(it, keep[k]));
        json_array_append_new(puts, json_pack("{s:{s:o}}", "PutRequest", "Item", stub));
        uint64_t sz = item_bytes(it);
        (*removed)++;
        res->bytes_removed += sz;
        res->bytes_reclaimed += sz;
    }
    json_array_clear(run->items);
    return rc < 0 ? rc : 0;
}

/* One stream's walk (scavenge_stream). */
typedef struct swalk {
    ddb *D;
    const char *stream;
    size_t len;
    const dstate *st;
    stele_scavenge_result *res;
    crun run;
    json_t *puts;
    uint64_t removed;
    int64_t now;
} swalk;

/* A page of the stream's events, in revision order: 1 at the first
 * visible one (the end of the hidden prefix). */
static int walk_page(void *ctx, json_t *items)
{
    swalk *w = ctx;
    int rc = 0;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        uint64_t rev = ddb_get_nu(it, "revision"), c0, cn;
        int64_t created = 0;
        ddb_get_n(it, "created", &created);
        w->res->bytes_scanned += item_bytes(it);
        item_commit(it, &c0, &cn);
        int visible = !json_object_get(it, "scavenged") && ddb_event_visible(w->st, rev, created, w->now);
        if (json_array_size(w->run.items) && c0 != w->run.c0 &&
            (rc = run_decide(w->D, w->stream, w->len, w->st, &w->run, w->puts, &w->removed, w->res, w->now)))
            return rc; /* the run's commit has no more events here: decided */
        if (visible) {
            /* A visible event keeps its commit (and ends the prefix). */
            json_array_clear(w->run.items);
            return 1;
        }
        w->run.c0 = c0;
        w->run.cn = cn;
        json_array_append(w->run.items, it);
    }
    if (json_array_size(w->puts) >= 500) { /* keep memory bounded */
        rc = write_stubs(w->D, w->puts);
        w->puts = json_array();
    }
    return rc;
}

/* Stub the dead commits of one stream's hidden prefix. */
static int scavenge_stream(ddb *D, const char *stream, size_t len, const dstate *st, stele_scavenge_result *res)
{
    swalk w = {D, stream, len, st, res, {0, 0, json_array()}, json_array(), 0, time_now_us()};
    json_t *req = json_pack("{s:s, s:s, s:{s:s}, s:{s:o}, s:b, s:b, s:i}", "TableName", D->t_events,
                            "KeyConditionExpression", "#s = :s", "ExpressionAttributeNames", "#s", "stream",
                            "ExpressionAttributeValues", ":s", ddb_s(stream, len), "ConsistentRead", 1,
                            "ScanIndexForward", 1, "Limit", 200);
    int rc = ddb_pages(D, "Query", req, walk_page, &w);
    if (rc == 0) /* the stream's end or its first visible event: the last run is whole */
        rc = run_decide(D, stream, len, st, &w.run, w.puts, &w.removed, res, w.now);
    json_decref(w.run.items);
    if (rc == 0) {
        rc = write_stubs(D, w.puts);
        w.puts = NULL;
    }
    json_decref(w.puts);
    if (rc == 0 && w.removed) {
        res->events_removed += w.removed;
        res->segments_rewritten++;
    }
    return rc;
}

/* The whole walk (ddb_scavenge). */
typedef struct sall {
    ddb *D;
    const stele_scavenge_options *opts;
    stele_scavenge_result *res;
    int64_t t0;
} sall;

/* A page of the streams table: each stream's walk; 1 when the progress
 * callback asks to stop. */
static int streams_page(void *ctx, json_t *items)
{
    sall *a = ctx;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        size_t len;
        const char *name = ddb_get_s(it, "stream", &len);
        if (!name || !len || name[0] == '\001' || name[0] == '\002')
            continue; /* the sequencer, view counters */
        dstate st;
        ddb_state_parse(it, &st);
        a->res->segments_scanned++;
        int rc = st.last != UINT64_MAX ? scavenge_stream(a->D, name, len, &st, a->res) : 0;
        ddb_state_free(&st);
        a->res->duration_us = (uint64_t)(time_now_us() - a->t0);
        if (rc)
            return rc;
        if (a->opts && a->opts->progress && a->opts->progress(a->opts->ctx, a->res)) {
            a->res->stopped = 1; /* the caller asked to stop */
            return 1;
        }
    }
    return 0;
}

int ddb_scavenge(backend *b, const stele_scavenge_options *opts, stele_scavenge_result *res)
{
    ddb *D = (ddb *)b;
    stele_scavenge_result tmp;
    if (!res)
        res = &tmp;
    memset(res, 0, sizeof *res);
    sall a = {D, opts, res, time_now_us()};
    int rc = ddb_pages(D, "Scan",
                       json_pack("{s:s, s:b, s:i}", "TableName", D->t_streams, "ConsistentRead", 1, "Limit", 100),
                       streams_page, &a);
    res->duration_us = (uint64_t)(time_now_us() - a.t0);
    return rc;
}
