/*
 * pg_deletes.c - the PostgreSQL backend's record of a stream delete or
 * tombstone: one `$streamDeleted` event in `$deletes` (docs/projections.md
 * "$deleted"), inserted by pg_remove() inside the transaction that already
 * locks the deleted stream's row and marks it, so the delete and its event
 * commit or roll back together.
 *
 * Lock order (pg.c): the stele_feed row that hands out positions (taken by
 * pg_remove() first), then the deleted stream's row, then `$deletes`' row,
 * as an append batch takes the feed and then updates its stream rows.
 * `$deletes` is never locked first: no append or multi-stream append may
 * name it (src/store refuses it), so no cycle can form. The event goes in through pgw_insert_events(), the path
 * every append takes, so its position, view revisions and columns are made
 * exactly as an appended event's.
 */
#ifdef STELE_WITH_POSTGRES
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_write.h"
#include "backend/removes.h"
#include "util/util.h"

int pg_record_remove(PGconn *c, const char *name, size_t len, int tombstone, uint64_t cur,
                     uint64_t tb)
{
    static const char dname[] = REMOVES_STREAM;
    const char *v[4] = {dname, dname};
    PGresult *r = NULL;
    char state[6] = "";
    int rc = pgw_wexec(c,
                       "INSERT INTO streams (stream_id, stream_type) VALUES ($1, $2) ON CONFLICT "
                       "DO NOTHING",
                       2, v, NULL, NULL, 0, NULL, "creating the $deletes row", state);
    if (rc == 0)
        rc = pgw_wexec(c,
                       "SELECT " PG_STREAM_COLS " FROM streams WHERE stream_id = $1 FOR UPDATE", 1,
                       v, NULL, NULL, 1, &r, "locking $deletes", state);
    if (rc)
        return rc;
    bstream bs;
    memset(&bs, 0, sizeof bs);
    memcpy(bs.name, dname, sizeof dname);
    bs.len = sizeof dname - 1;
    bs.found = PQntuples(r) > 0;
    if (bs.found)
        pg_stream_from(r, 0, 0, &bs.st);
    else
        bs.st.last_rev = bs.st.last_pos = bs.st.first_pos = bs.st.meta_version = STELE_NONE;
    PQclear(r);
    r = NULL;
    uint64_t rev = bs.st.last_rev == STELE_NONE ? 0 : bs.st.last_rev + 1;
    rc = pgw_wexec(c,
                   "UPDATE stele_feed SET next_position = next_position + 1 RETURNING "
                   "next_position - 1",
                   0, NULL, NULL, NULL, 1, &r, "taking a position", state);
    if (rc)
        return rc;
    uint64_t pos = pg_u64(r, 0, 0);
    PQclear(r);
    uint8_t *parts = malloc(removes_cap(len));
    if (!parts)
        return err_set(STELE_ENOMEM, "out of memory");
    size_t dlen, mlen;
    removes_build(parts, name, len, tombstone, cur, tb, &dlen, &mlen);
    stele_event_in ev = {.type = REMOVES_TYPE, .data = parts, .data_len = dlen,
                         .metadata = parts + dlen, .metadata_len = mlen,
                         .flags = STELE_EVENT_JSON};
    uint8_t ids[1][16], made[1] = {1};
    uuid_v7(ids[0]);
    append_args a = {.stream = dname, .stream_len = sizeof dname - 1, .expected = STELE_ANY,
                     .events = &ev, .n = 1, .ids = (const uint8_t(*)[16])ids, .made = made};
    pg_req q;
    memset(&q, 0, sizeof q);
    q.kind = REQ_APPEND;
    q.a = &a;
    q.accepted = 1;
    q.res.first_revision = q.res.last_revision = rev;
    q.res.first_position = q.res.last_position = pos;
    pg_req *qp = &q;
    rc = pgw_insert_events(c, &qp, 1, &bs, time_now_us(), state);
    free(parts);
    if (rc)
        return rc;
    pg_num a1, a2;
    v[1] = pg_numtxt(&a1, (int64_t)rev);
    v[2] = pg_numtxt(&a2, (int64_t)pos);
    return pgw_wexec(c,
                     "UPDATE streams SET last_revision = $2, last_position = $3, first_position = "
                     "COALESCE(first_position, $3), deleted = false WHERE stream_id = $1",
                     3, v, NULL, NULL, 0, NULL, "updating $deletes", state);
}

#endif /* STELE_WITH_POSTGRES */
