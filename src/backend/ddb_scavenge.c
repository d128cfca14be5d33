/*
 * ddb_scavenge.c - reclaiming the space of hidden events on DynamoDB
 * (stele_scavenge): events before a soft delete's truncate-before, of
 * tombstoned streams, and past their stream's maxCount, truncateBefore or
 * maxAge.
 *
 * A hidden event's item is replaced by a stub: the same key (stream,
 * revision) with its position, created time and eventId, `scavenged` = 1,
 * and nothing else. The data, metadata, type, tags and index attributes go,
 * so the item shrinks to a few dozen bytes and drops out of every GSI
 * (queries and views: a view keeps its numbering, with a gap). The stub
 * keeps $all whole: a $all read still finds an item at every position
 * below the sequencer and skips the stubs, so a missing item stays an
 * error, never a silent skip (ddb_read.c). Stream reads never show a stub
 * (it is hidden, and loosening retention later does not bring it back:
 * the reads skip stubs too). A retry of a scavenged event stays the
 * idempotent success it was (the id item is kept; ddb_plan.c compares
 * nothing with a stub).
 *
 * The walk: every stream item of the streams table (a consistent Scan),
 * then the stream's events from revision 0 while they are hidden. The
 * hidden events of a stream are always a prefix of it (truncate-before,
 * maxCount and deletes hide revisions below a bound; created times grow
 * along the stream, so maxAge hides a prefix too), so the walk stops at
 * the first visible event. Stubs are written with BatchWriteItem (25 a
 * call). Online: appends and reads go on; an event hidden after its
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

/* Stub the hidden prefix of one stream. */
static int scavenge_stream(ddb *D, const char *stream, size_t len, const dstate *st, stele_scavenge_result *res)
{
    json_t *start = NULL, *puts = json_array();
    int64_t now = time_now_us();
    int rc = 0, done = 0;
    uint64_t removed = 0;
    while (!done && rc == 0) {
        json_t *req = json_pack("{s:s, s:s, s:{s:s}, s:{s:o}, s:b, s:b, s:i}", "TableName", D->t_events,
                                "KeyConditionExpression", "#s = :s", "ExpressionAttributeNames", "#s", "stream",
                                "ExpressionAttributeValues", ":s", ddb_s(stream, len), "ConsistentRead", 1,
                                "ScanIndexForward", 1, "Limit", 200);
        if (start)
            json_object_set_new(req, "ExclusiveStartKey", start);
        start = NULL;
        json_t *resp;
        if ((rc = ddb_call(D, "Query", req, &resp, NULL)))
            break;
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(resp, "Items"), i, it) {
            uint64_t rev = ddb_get_nu(it, "revision");
            int64_t created = 0;
            ddb_get_n(it, "created", &created);
            uint64_t sz = item_bytes(it);
            res->bytes_scanned += sz;
            if (ddb_event_visible(st, rev, created, now)) {
                done = 1;
                break;
            }
            if (json_object_get(it, "scavenged"))
                continue;
            json_t *stub = json_pack("{s:o, s:o, s:O, s:O, s:o}", "stream", ddb_s(stream, len), "revision",
                                     ddb_nu(rev), "position", json_object_get(it, "position"), "created",
                                     json_object_get(it, "created"), "scavenged", ddb_n(1));
            if (json_object_get(it, "eventId"))
                json_object_set(stub, "eventId", json_object_get(it, "eventId"));
            json_array_append_new(puts, json_pack("{s:{s:o}}", "PutRequest", "Item", stub));
            removed++;
            res->bytes_removed += sz;
            res->bytes_reclaimed += sz;
        }
        json_t *lek = json_object_get(resp, "LastEvaluatedKey");
        if (lek && !done)
            start = json_incref(lek);
        json_decref(resp);
        if (!start)
            break;
        if (json_array_size(puts) >= 500) { /* keep memory bounded */
            if ((rc = write_stubs(D, puts)))
                puts = NULL;
            else
                puts = json_array();
        }
    }
    json_decref(start);
    if (rc == 0 && puts) {
        rc = write_stubs(D, puts);
        puts = NULL;
    }
    json_decref(puts);
    if (rc == 0 && removed) {
        res->events_removed += removed;
        res->segments_rewritten++;
    }
    return rc;
}

int ddb_scavenge(backend *b, const stele_scavenge_options *opts, stele_scavenge_result *res)
{
    ddb *D = (ddb *)b;
    stele_scavenge_result tmp;
    if (!res)
        res = &tmp;
    memset(res, 0, sizeof *res);
    int64_t t0 = time_now_us();
    json_t *start = NULL;
    int rc = 0, stop = 0;
    while (rc == 0 && !stop) {
        json_t *req = json_pack("{s:s, s:b, s:i}", "TableName", D->t_streams, "ConsistentRead", 1, "Limit", 100);
        if (start)
            json_object_set_new(req, "ExclusiveStartKey", start);
        start = NULL;
        json_t *resp;
        if ((rc = ddb_call(D, "Scan", req, &resp, NULL)))
            break;
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(resp, "Items"), i, it) {
            size_t len;
            const char *name = ddb_get_s(it, "stream", &len);
            if (!name || !len || name[0] == '\001' || name[0] == '\002')
                continue; /* the sequencer, view counters */
            dstate st;
            ddb_state_parse(it, &st);
            res->segments_scanned++;
            if (st.last != UINT64_MAX)
                rc = scavenge_stream(D, name, len, &st, res);
            ddb_state_free(&st);
            res->duration_us = (uint64_t)(time_now_us() - t0);
            if (rc || (opts && opts->progress && opts->progress(opts->ctx, res))) {
                stop = 1;
                break;
            }
        }
        json_t *lek = json_object_get(resp, "LastEvaluatedKey");
        if (lek && !stop && rc == 0)
            start = json_incref(lek);
        json_decref(resp);
        if (!start)
            break;
    }
    json_decref(start);
    res->duration_us = (uint64_t)(time_now_us() - t0);
    return rc;
}
