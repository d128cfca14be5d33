/*
 * pg_names.c - listing names on PostgreSQL (stele_list_names): streams
 * from the streams table (those with events, a delete or metadata, as
 * pg_stats counts them), categories and event types from stele_seq (the
 * view counters: kind 'c' / 't', key, next = events numbered under the
 * key). Names are compared and ordered COLLATE "C" so the order is byte
 * order whatever the database's collation (the same pages as the local
 * engine); a page is one statement, so one snapshot.
 *
 * Durability (pg.c): the rows' counts and last positions may include a
 * batch that is committed but not durable yet. The statement also says
 * whether its snapshot holds any such batch (the feed ahead of the durable
 * position); if so the durable position is moved up (pg_durable_cover)
 * before the page is given out: what the snapshot showed is then durable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_int.h"
#include "util/util.h"

int pg_list_names(backend *b, int kind, const char *prefix, const char *after, size_t limit,
                  unsigned flags, int (*fn)(void *ctx, const stele_name_info *info), void *ctx)
{
    pg_backend *P = (pg_backend *)b;
    char lim[32];
    snprintf(lim, sizeof lim, "%zu", limit);
    const char *nosys = (flags & STELE_NAMES_NO_SYSTEM) ? "t" : "f";
    const char *v[5] = {prefix ? prefix : "", after ? after : "", nosys, lim,
                        kind == STELE_NAMES_CATEGORIES ? "c" : "t"};
    const char *sql =
        kind == STELE_NAMES_STREAMS
            ? "SELECT stream_id, last_revision, last_position, deleted, tombstoned, (SELECT "
              "next_position FROM stele_feed) > " PG_DURABLE " FROM streams "
              "WHERE starts_with(stream_id, $1) AND stream_id COLLATE \"C\" > $2 "
              "AND NOT ($3::boolean AND starts_with(stream_id, '$')) "
              "AND (last_revision >= 0 OR deleted OR tombstoned OR meta_version >= 0) "
              "ORDER BY stream_id COLLATE \"C\" LIMIT $4::bigint"
            : "SELECT key, next, 0, 0, 0, (SELECT next_position FROM stele_feed) > " PG_DURABLE
              " FROM stele_seq WHERE kind = $5 AND starts_with(key, $1) "
              "AND key COLLATE \"C\" > $2 AND NOT ($3::boolean AND starts_with(key, '$')) "
              "ORDER BY key COLLATE \"C\" LIMIT $4::bigint";
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    PGresult *r = NULL;
    int rc = pg_exec(c, sql, kind == STELE_NAMES_STREAMS ? 4 : 5, v, NULL, NULL, 0, &r,
                     "listing names");
    if (rc == 0 && PQntuples(r) && PQgetvalue(r, 0, 5)[0] == 't' && (rc = pg_durable_cover(c)))
        PQclear(r);
    pg_conn_put(P, c);
    if (rc)
        return rc;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        stele_name_info in = {.name = PQgetvalue(r, i, 0)};
        if (kind == STELE_NAMES_STREAMS) {
            long long rev = strtoll(PQgetvalue(r, i, 1), NULL, 10);
            long long pos = strtoll(PQgetvalue(r, i, 2), NULL, 10);
            in.count = rev < 0 ? 0 : (uint64_t)rev + 1;
            in.last_position = pos < 0 ? STELE_END : (uint64_t)pos;
            in.deleted = PQgetvalue(r, i, 3)[0] == 't';
            in.tombstoned = PQgetvalue(r, i, 4)[0] == 't';
        } else {
            in.count = strtoull(PQgetvalue(r, i, 1), NULL, 10);
        }
        rc = fn(ctx, &in);
    }
    PQclear(r);
    return rc;
}
