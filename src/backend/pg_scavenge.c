/*
 * pg_scavenge.c - scavenging on PostgreSQL: deleting the rows of events
 * that no read can return any more (soft-deleted, tombstoned, past
 * maxAge, maxCount or truncateBefore), as local_scavenge.c does for the
 * local engine's segments (docs/backends.md, "Scavenging").
 *
 * What goes. An append (a commit: positions c0 .. c0 + commit_count - 1,
 * c0 = global_position - commit_index, one stream or several) is deleted
 * when every one of its events is hidden by the stream rule that reads
 * use (pg_visible_sql: the same rule as visibility.c), judged against the
 * stream rows as one statement's snapshot sees them. Whole commits only,
 * as on the local engine, so a retry check or a reader never finds half
 * an append.
 *
 * What always stays: the last commit of every stream (the commit holding
 * its last revision), as on the local engine; stream rows, metadata and
 * snapshots (they are not events).
 *
 * $all stays gapless for readers: positions are never renumbered, reads
 * ask for "global_position >= from" and so step over the removed
 * positions, and the feed's order and the positions of the kept events
 * do not change. A subscriber that stopped inside a removed range resumes
 * at the next kept event.
 *
 * How. The feed is walked in chunks of PG_SCAV_CHUNK positions, one
 * statement (its own transaction) each: it decides every commit that
 * starts in the chunk, looking at its events up to the commit's end (which
 * may lie past the chunk), and deletes the dead ones, returning their
 * count and size. Appends go on meanwhile: the statement takes no lock but
 * the row locks of the rows it deletes, which nobody else ever locks
 * (events are never updated), so writers never wait for it. Commits
 * happening during the scavenge are judged by the chunk's snapshot; a
 * rule loosened after that snapshot does not bring removed events back
 * (as on the local engine). Two servers scavenging at once delete the same
 * rows once (a row already deleted is skipped).
 *
 * Results: segments_scanned counts chunks (segments_rewritten stays 0); bytes_scanned is the events
 * table's size (with its indexes and TOAST) before; bytes_removed the
 * removed rows' size (pg_column_size); after a scavenge that removed
 * anything a plain VACUUM makes the space reusable for new rows, and
 * bytes_reclaimed is what the table then shrank by (usually little:
 * PostgreSQL keeps freed pages for reuse; VACUUM FULL, run by an operator,
 * gives them back to the file system).
 */
#ifdef STELE_WITH_POSTGRES
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_int.h"
#include "util/util.h"

#define PG_SCAV_CHUNK 16384

static int table_size(PGconn *c, uint64_t *out)
{
    PGresult *r = NULL;
    int rc = pg_exec(c, "SELECT pg_total_relation_size('events'::regclass)", 0, NULL, NULL, NULL,
                     1, &r, "measuring the events table");
    if (rc == 0) {
        *out = pg_u64(r, 0, 0);
        PQclear(r);
    }
    return rc;
}

/* Delete the dead commits that start in [lo, hi); adds to res. */
static int scav_chunk(PGconn *c, uint64_t lo, uint64_t hi, int64_t now, stele_scavenge_result *res)
{
    char vis[700], sql[2400];
    pg_visible_sql(vis, sizeof vis, "$3");
    snprintf(sql, sizeof sql,
             "WITH ev AS (SELECT e.global_position AS p, e.global_position - e.commit_index AS "
             "c0, e.commit_count AS cc, (%s OR e.revision = s.last_revision) AS keep FROM events "
             "e JOIN streams s ON s.stream_id = e.stream_id WHERE e.global_position >= "
             "$1::bigint AND e.global_position < (SELECT COALESCE(max(global_position + "
             "commit_count), $2::bigint) FROM events WHERE global_position >= $1::bigint AND "
             "global_position < $2::bigint AND commit_index = 0)), dead AS (SELECT c0 FROM ev "
             "WHERE c0 >= $1::bigint AND c0 < $2::bigint GROUP BY c0, cc HAVING NOT bool_or(keep) "
             "AND count(*) = cc), gone AS (DELETE FROM events d WHERE d.global_position IN "
             "(SELECT p FROM ev JOIN dead USING (c0)) RETURNING pg_column_size(d.*) AS sz) "
             "SELECT count(*), COALESCE(sum(sz), 0)::bigint FROM gone",
             vis);
    pg_num b1, b2, b3;
    const char *v[3] = {pg_numtxt(&b1, (int64_t)lo), pg_numtxt(&b2, (int64_t)hi),
                        pg_numtxt(&b3, now)};
    PGresult *r = NULL;
    int rc = pg_exec(c, sql, 3, v, NULL, NULL, 1, &r, "scavenging events");
    if (rc)
        return rc;
    res->events_removed += pg_u64(r, 0, 0);
    res->bytes_removed += pg_u64(r, 0, 1);
    PQclear(r);
    return 0;
}

int pg_scavenge(backend *b, const stele_scavenge_options *opts, stele_scavenge_result *res)
{
    pg_backend *P = (pg_backend *)b;
    memset(res, 0, sizeof *res);
    uint64_t t0 = time_mono_ns();
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    uint64_t head = 0, before = 0;
    PGresult *r = NULL;
    int rc = table_size(c, &before);
    if (rc == 0)
        rc = pg_exec(c, "SELECT " PG_DURABLE, 0, NULL, NULL, NULL, 1, &r,
                     "reading the head of $all");
    if (rc == 0) {
        head = pg_u64(r, 0, 0);
        PQclear(r);
        res->bytes_scanned = before;
    }
    for (uint64_t lo = 0; rc == 0 && lo < head; lo += PG_SCAV_CHUNK) {
        uint64_t hi = lo + PG_SCAV_CHUNK < head ? lo + PG_SCAV_CHUNK : head;
        rc = scav_chunk(c, lo, hi, time_now_us(), res);
        if (rc)
            break;
        res->segments_scanned++;
        res->duration_us = (time_mono_ns() - t0) / 1000;
        if (opts && opts->progress && opts->progress(opts->ctx, res)) {
            res->stopped = 1;
            break;
        }
    }
    if (rc == 0 && res->events_removed) {
        uint64_t after = 0;
        rc = pg_cmd(c, "VACUUM events");
        if (rc == 0 && (rc = table_size(c, &after)) == 0 && after < before)
            res->bytes_reclaimed = before - after;
    }
    pg_conn_put(P, c);
    res->duration_us = (time_mono_ns() - t0) / 1000;
    return rc;
}

#endif /* STELE_WITH_POSTGRES */
