/*
 * ddb_deletes.c - the DynamoDB backend's soft deletes and tombstones, each
 * recorded as one `$streamDeleted` event of the system stream `$deletes`
 * in the delete's own transaction (docs/projections.md "$deleted"; the
 * local engine does the same in local_removes.c, PostgreSQL in
 * pg_deletes.c, with the same data and metadata: removes.c).
 *
 * A delete is a request of the writer (ddb_write.c), kind DR_REMOVE, with
 * two streams: `$deletes`, which gets the one event as an append with
 * expected revision `any` would, and the stream removed, which gets no
 * event. So the event takes the next position through the sequencer, the
 * next revision of `$deletes`, its view ordinals ($ce-$deletes,
 * $et-$streamDeleted, $streams) and a part of the commit's feed item,
 * exactly as an appended event; `$all` readers and subscribers on every
 * server see it in commit order. The same TransactWriteItems writes the
 * removed stream's item (deleted + truncateBefore, or tombstoned) under
 * the condition `ver = <the version read>`: the delete and its event are
 * committed together or not at all, and an append, metadata change or
 * delete racing it through any server cancels one of them.
 *
 * A removal is alone in its group (the writer starts a new group before
 * and after it) and its group always reads its streams afresh: its checks
 * (tombstoned, already deleted, expected revision) need the whole stream
 * item, which the writer's cache does not keep, and no append of the same
 * group can change the stream between the checks and the write. Deletes
 * are rare; a group of their own costs one transaction each.
 *
 * Invariants: `$deletes` is written only here (src/store refuses every
 * other write to it), so its revisions are gapless and each is one delete;
 * scavenging never removes its events (nothing hides them: the API
 * refuses metadata on `$` names, and `$deletes` is never deleted).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/ddb_write.h"
#include "backend/expect.h"
#include "backend/removes.h"
#include "util/util.h"

int ddb_plan_remove(group *g, dreq *r, uint64_t *next)
{
    const dstr *ds = &r->streams[1];
    gstream *v = gs_find(g, ds->name, ds->len);
    const dstate *st = &v->st;
    r->res = append_result_none();
    r->rm_current = STELE_NONE;
    if (st->tombstoned) {
        err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)ds->len, ds->name);
        ddb_req_fail(r, STELE_EDELETED);
        return 0;
    }
    uint64_t cur = ddb_visible_rev(st);
    r->rm_current = cur;
    if (!r->rm_tomb && cur == STELE_NONE) {
        err_set(STELE_ENOTFOUND, "stream '%.*s' %s", (int)ds->len, ds->name,
                st->found ? "is already deleted" : "does not exist");
        ddb_req_fail(r, STELE_ENOTFOUND);
        return 0;
    }
    /* Deleting again at the revision a soft delete left is allowed (as on
     * the local engine): the expected revision names the last event. */
    int was_last = st->deleted && ds->expected >= 0 && st->last != UINT64_MAX &&
                   (uint64_t)ds->expected == st->last;
    if (!was_last && !expect_ok(ds->expected, cur)) {
        ddb_req_fail(r, expect_wrong_rev(ds->name, ds->len, ds->expected, cur));
        return 0;
    }
    uint64_t tb = st->last + 1; /* UINT64_MAX + 1: a stream without events */
    size_t dlen, mlen;
    removes_build(r->rm_buf, ds->name, ds->len, r->rm_tomb, cur, r->rm_tomb ? 0 : tb, &dlen, &mlen);
    r->rm_ev.data_len = dlen;
    r->rm_ev.metadata = r->rm_buf + dlen;
    r->rm_ev.metadata_len = mlen;
    ddb_plan_accept(g, r, next);
    v->rm = r->rm_tomb ? 2 : 1;
    v->rm_tb = tb;
    return 0;
}

json_t *ddb_remove_item(ddb *D, const gstream *gs)
{
    const dstate *st = &gs->st;
    if (!st->found) /* a tombstone of a stream never written */
        return json_pack("{s:{s:s, s:{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}, s:s, s:{s:s}}}", "Put",
                         "TableName", D->t_streams, "Item", "stream", ddb_s(gs->name, gs->len),
                         "lastRevision", ddb_n(-1), "lastPosition", ddb_n(-1), "deleted", ddb_n(0),
                         "tombstoned", ddb_n(1), "ver", ddb_n(1), "metaVersion", ddb_n(-1), "nk",
                         ddb_s("s", 1), "ConditionExpression", "attribute_not_exists(#k)",
                         "ExpressionAttributeNames", "#k", "stream");
    json_t *v = json_pack("{s:o, s:o, s:o}", ":v", ddb_nu(st->ver), ":v2", ddb_nu(st->ver + 1), ":one",
                          ddb_n(1));
    const char *set;
    if (gs->rm == 2) {
        set = "SET tombstoned = :one, ver = :v2";
    } else {
        set = "SET deleted = :one, truncateBefore = :tb, ver = :v2";
        json_object_set_new(v, ":tb", ddb_nu(gs->rm_tb));
    }
    return json_pack("{s:{s:s, s:{s:o}, s:s, s:s, s:o}}", "Update", "TableName", D->t_streams, "Key",
                     "stream", ddb_s(gs->name, gs->len), "UpdateExpression", set, "ConditionExpression",
                     "ver = :v", "ExpressionAttributeValues", v);
}

int ddb_remove(backend *b, const char *stream, size_t len, int64_t expected, int tombstone,
               uint64_t *current)
{
    backend_assert_remove(stream, len, expected);
    ddb *D = (ddb *)b;
    dreq *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    r->kind = DR_REMOVE;
    r->streams = calloc(2, sizeof *r->streams);
    r->recs = calloc(1, sizeof *r->recs);
    r->meta = calloc(1, sizeof *r->meta);
    r->rm_buf = malloc(removes_cap(len));
    if (!r->streams || !r->recs || !r->meta || !r->rm_buf) {
        ddb_req_free(r);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    r->nstreams = 2;
    r->streams[0] = (dstr){REMOVES_STREAM, sizeof REMOVES_STREAM - 1, STELE_ANY, NULL, 0, 1};
    r->streams[1] = (dstr){stream, len, expected, NULL, 0, 0};
    r->rm_tomb = tombstone;
    r->rm_current = STELE_NONE;
    uuid_v7(r->rm_id);
    /* The data's size is its bound until planned (the transaction's
     * size check). */
    r->rm_ev = (stele_event_in){.type = REMOVES_TYPE, .data = r->rm_buf, .data_len = removes_cap(len),
                                .flags = STELE_EVENT_JSON};
    r->nrecs = 1;
    r->recs[0] = (drec){0, &r->rm_ev, r->rm_id, 1, 0, 0, 0, 0, 0, 0};
    r->res = append_result_none();
    r->mres.failed_stream = SIZE_MAX;
    int rc = ddb_req_run(D, r);
    if (current)
        *current = r->rm_current;
    ddb_req_free(r);
    return rc;
}
