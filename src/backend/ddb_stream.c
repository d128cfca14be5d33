/*
 * ddb_stream.c - the DynamoDB backend's writes to one stream outside the
 * writer: metadata, and snapshots (seed 003's table) with their retention.
 * (Deletes and tombstones go through the writer: ddb_deletes.c.)
 *
 * A metadata change is one UpdateItem of the stream's item under the
 * condition `ver = <the version read>` (or, for a stream without an item,
 * attribute_not_exists), so it is serialised with the writer's
 * transactions, which condition on the same `ver` and bump it: a metadata
 * change that races an append or a delete makes one of them start again
 * from a fresh read (ddb_write.c re-plans; here the loop reads again, up
 * to 100 times, then STELE_EBUSY). Snapshots are plain items keyed by
 * (stream, revision); the oldest beyond maxSnapshots are deleted after
 * each save and when the metadata lowers the limit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ddb_int.h"
#include "backend/expect.h"
#include "util/util.h"

/* ------------------------------------------------- metadata, snapshots */

/* Update a stream's item under the version read (any concurrent append,
 * delete or metadata change moves it). values: the update's own; the
 * version's are added. Returns 1 when the item moved (read again). */
static int state_update(ddb *D, const char *stream, size_t len, const dstate *st, const char *set,
                        json_t *values)
{
    char expr[512];
    /* A new item is a stream too (stele_list_names: nk). */
    snprintf(expr, sizeof expr, "SET %s, ver = :v2%s", set, st->found ? "" : ", nk = :nk");
    if (!st->found)
        json_object_set_new(values, ":nk", ddb_s("s", 1));
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

static int snaps_trim(ddb *D, const char *stream, size_t len, uint32_t keep);

int ddb_set_metadata(backend *b, const char *stream, size_t len, const stele_stream_metadata *md,
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
            ddb_notify(D);
            return snaps_trim(D, stream, len, md->max_snapshots ? md->max_snapshots : STELE_DEFAULT_MAX_SNAPSHOTS);
        }
    }
    return err_set(STELE_EBUSY, "stream '%.*s' kept changing", (int)len, stream);
}

/* snaps_list's pages: the revisions into a growing array. */
typedef struct rlist {
    uint64_t *revs;
    size_t n, cap;
} rlist;

static int revs_page(void *ctx, json_t *items)
{
    rlist *l = ctx;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        if (l->n == l->cap) {
            uint64_t *nr = realloc(l->revs, (l->cap = l->cap ? l->cap * 2 : 16) * sizeof *nr);
            if (!nr)
                return err_set(STELE_ENOMEM, "out of memory");
            l->revs = nr;
        }
        l->revs[l->n++] = ddb_get_nu(it, "revision");
    }
    return 0;
}

/* The revisions of a stream's snapshots, ascending (malloc'd). */
static int snaps_list(ddb *D, const char *stream, size_t len, uint64_t **revs, size_t *n)
{
    rlist l = {NULL, 0, 0};
    json_t *req = json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:{s:o}, s:b}", "TableName", D->t_snaps,
                            "KeyConditionExpression", "#s = :s", "ProjectionExpression", "#r",
                            "ExpressionAttributeNames", "#s", "stream", "#r", "revision",
                            "ExpressionAttributeValues", ":s", ddb_s(stream, len), "ConsistentRead", 1);
    int rc = ddb_pages(D, "Query", req, revs_page, &l);
    if (rc) {
        free(l.revs);
        l.revs = NULL;
        l.n = 0;
    }
    *revs = l.revs;
    *n = l.n;
    return rc;
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

int ddb_put_snapshot(backend *b, const char *stream, size_t len, const stele_snapshot_in *s)
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

