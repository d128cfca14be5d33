/*
 * pg_stream.c - the PostgreSQL backend's writes that are not appends:
 * soft deletes, tombstones, stream metadata and snapshots. Each runs in the
 * caller's thread, on a pooled connection, as one transaction that locks
 * the stream's row (the lock order of pg.c: a stream row, never the feed);
 * the rules are the local engine's (local.c, local_streams.c).
 */
#ifdef STELE_WITH_POSTGRES
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_write.h"
#include "util/util.h"

/* ------------------------------------------------------------ one-off writes */

/* BEGIN and lock one stream's row (made first when `create`); *found = 0
 * when it has none. */
static int lock_stream(PGconn *c, const char *name, size_t len, int create, int feed,
                       pg_stream *st, int *found)
{
    char cat[256];
    snprintf(cat, sizeof cat, "%.*s", (int)stream_category_len(name, len), name);
    const char *v[2] = {name, cat};
    PGresult *r = NULL;
    int rc;
    if (create &&
        (rc = pg_exec(c,
                      "INSERT INTO streams (stream_id, stream_type) VALUES ($1, $2) ON CONFLICT "
                      "DO NOTHING",
                      2, v, NULL, NULL, 0, &r, "creating a stream row")) == 0)
        PQclear(r);
    else if (create)
        return rc;
    if ((rc = pg_cmd(c, "BEGIN")))
        return rc;
    /* A transaction that will take a position (a delete records its
     * $deletes event) takes the feed row before any stream row, as append
     * batches do (pg.c, "Lock order"). */
    if (feed && (rc = pg_cmd(c, "SELECT 1 FROM stele_feed FOR UPDATE")))
        return rc;
    rc = pg_exec(c, "SELECT " PG_STREAM_COLS " FROM streams WHERE stream_id = $1 FOR UPDATE", 1, v,
                 NULL, NULL, 1, &r, "locking a stream");
    if (rc)
        return rc;
    *found = PQntuples(r) > 0;
    memset(st, 0, sizeof *st);
    if (*found)
        pg_stream_from(r, 0, 0, st);
    else
        st->last_rev = st->last_pos = st->first_pos = st->meta_version = STELE_NONE;
    PQclear(r);
    return 0;
}

/* End the transaction: on success the durable position moves past every
 * commit it saw (pg.c, "Durability"; the COMMIT is synchronous); a refusal
 * (expected revision, tombstone) is made durable before it is answered. */
static int finish(pg_backend *P, PGconn *c, int rc, int notify)
{
    if (rc == 0)
        rc = pg_cmd(c, PG_DURABLE_INSERT);
    if (rc == 0 && notify)
        rc = pg_cmd(c, "NOTIFY " PG_CHANNEL);
    if (rc == 0)
        rc = pg_cmd(c, "COMMIT");
    if (rc && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *x = PQexec(c, "ROLLBACK");
        PQclear(x);
    }
    rc = pg_durable_settle(c, rc);
    if (rc == 0 && notify)
        pg_bump(P);
    pg_conn_put(P, c);
    return rc;
}

/* Keep the stream's max_snapshots latest snapshots. */
int pgw_trim_snapshots(PGconn *c, const char *name, uint32_t max)
{
    pg_num nb;
    const char *v[2] = {name, pg_numtxt(&nb, max ? max : STELE_DEFAULT_MAX_SNAPSHOTS)};
    PGresult *r = NULL;
    int rc = pg_exec(c,
                     "DELETE FROM snapshots WHERE stream_id = $1 AND revision NOT IN (SELECT "
                     "revision FROM snapshots WHERE stream_id = $1 ORDER BY revision DESC LIMIT "
                     "$2::bigint)",
                     2, v, NULL, NULL, 0, &r, "trimming snapshots");
    if (rc == 0)
        PQclear(r);
    return rc;
}

int pg_remove(backend *b, const char *stream, size_t len, int64_t expected, int tombstone,
              uint64_t *current)
{
    backend_assert_remove(stream, len, expected);
    pg_backend *P = (pg_backend *)b;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    pg_stream st;
    int found;
    int rc = lock_stream(c, name, len, tombstone, 1, &st, &found);
    if (rc)
        return finish(P, c, rc, 0);
    found = found && st.exists;
    if (st.tombstoned)
        return finish(P, c, err_set(STELE_EDELETED, "stream '%s' is tombstoned", name), 0);
    uint64_t cur = pgw_visible_rev(&st);
    if (!tombstone && cur == STELE_NONE)
        return finish(P, c,
                      err_set(STELE_ENOTFOUND, "stream '%s' %s", name,
                              found ? "is already deleted" : "does not exist"),
                      0);
    int was_last = st.deleted && expected >= 0 && st.last_rev != STELE_NONE &&
                   (uint64_t)expected == st.last_rev;
    if (!was_last && !expect_ok(expected, cur)) {
        if (current)
            *current = cur;
        return finish(P, c, expect_wrong_rev(name, len, expected, cur), 0);
    }
    const char *v[1] = {name};
    PGresult *r = NULL;
    if (tombstone) {
        rc = pg_exec(c, "UPDATE streams SET tombstoned = true WHERE stream_id = $1", 1, v, NULL,
                     NULL, 0, &r, "tombstoning");
        if (rc == 0) {
            PQclear(r);
            rc = pg_exec(c, "DELETE FROM snapshots WHERE stream_id = $1", 1, v, NULL, NULL, 0, &r,
                         "dropping snapshots");
        }
    } else {
        rc = pg_exec(c,
                     "UPDATE streams SET deleted = true, truncate_before = last_revision + 1 "
                     "WHERE stream_id = $1",
                     1, v, NULL, NULL, 0, &r, "deleting");
        if (rc == 0) {
            PQclear(r);
            rc = pg_exec(c,
                         "DELETE FROM snapshots WHERE stream_id = $1 AND revision < (SELECT "
                         "truncate_before FROM streams WHERE stream_id = $1)",
                         1, v, NULL, NULL, 0, &r, "dropping snapshots");
        }
    }
    if (rc == 0)
        PQclear(r);
    if (rc == 0) /* its event in $deletes, in this transaction (pg_deletes.c) */
        rc = pg_record_remove(c, name, len, tombstone, cur,
                              st.last_rev == STELE_NONE ? 0 : st.last_rev + 1);
    if (rc == 0 && current)
        *current = cur;
    return finish(P, c, rc, 1);
}

static const char *version_text(int64_t e, char *b, size_t n)
{
    if (e == STELE_ANY) return "any";
    if (e == STELE_NO_STREAM) return "none";
    if (e == STELE_STREAM_EXISTS) return "exists";
    snprintf(b, n, "%lld", (long long)e);
    return b;
}

int pg_set_metadata(backend *b, const char *stream, size_t len, const stele_stream_metadata *md,
                    int64_t expected, uint64_t *version)
{
    pg_backend *P = (pg_backend *)b;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    pg_stream st;
    int found;
    int rc = lock_stream(c, name, len, 1, 0, &st, &found);
    if (rc)
        return finish(P, c, rc, 0);
    if (st.tombstoned)
        return finish(P, c, err_set(STELE_EDELETED, "stream '%s' is tombstoned", name), 0);
    uint64_t cur = st.meta_version;
    int ok = expected == STELE_ANY || (expected == STELE_NO_STREAM && cur == STELE_NONE) ||
             (expected == STELE_STREAM_EXISTS && cur != STELE_NONE) ||
             (expected >= 0 && cur == (uint64_t)expected);
    if (!ok) {
        char eb[32];
        if (version)
            *version = cur;
        if (cur == STELE_NONE)
            rc = err_set(STELE_EWRONGREV,
                         "stream '%s': expected metadata version %s, but it has no metadata", name,
                         version_text(expected, eb, sizeof eb));
        else
            rc = err_set(STELE_EWRONGREV,
                         "stream '%s': expected metadata version %s, but its version is %llu",
                         name, version_text(expected, eb, sizeof eb), (unsigned long long)cur);
        return finish(P, c, rc, 0);
    }
    uint64_t nv = cur == STELE_NONE ? 0 : cur + 1;
    pg_num b1, b2, b3, b4, b5;
    const char *v[7] = {name,
                        pg_numtxt(&b1, (int64_t)nv),
                        pg_numtxt(&b2, (int64_t)md->max_age_us),
                        pg_numtxt(&b3, (int64_t)md->max_count),
                        pg_numtxt(&b4, (int64_t)md->truncate_before),
                        pg_numtxt(&b5, md->max_snapshots),
                        md->custom_len ? md->custom : NULL};
    int lens[7] = {0, 0, 0, 0, 0, 0, (int)md->custom_len};
    int fmts[7] = {0, 0, 0, 0, 0, 0, 1};
    PGresult *r = NULL;
    rc = pg_exec(c,
                 "UPDATE streams SET meta_version = $2, max_age_us = $3, max_count = $4, "
                 "meta_truncate_before = $5, max_snapshots = $6, meta_custom = $7 WHERE "
                 "stream_id = $1",
                 7, v, lens, fmts, 0, &r, "setting metadata");
    if (rc == 0) {
        PQclear(r);
        rc = pgw_trim_snapshots(c, name, md->max_snapshots);
    }
    if (rc == 0 && version)
        *version = nv;
    return finish(P, c, rc, 1);
}

int pg_put_snapshot(backend *b, const char *stream, size_t len, const stele_snapshot_in *s)
{
    pg_backend *P = (pg_backend *)b;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    pg_stream st;
    int found;
    int rc = lock_stream(c, name, len, 0, 0, &st, &found);
    if (rc)
        return finish(P, c, rc, 0);
    if (st.tombstoned)
        return finish(P, c, err_set(STELE_EDELETED, "stream '%s' is tombstoned", name), 0);
    if (!found || st.deleted || st.last_rev == STELE_NONE)
        return finish(P, c,
                      err_set(STELE_ENOTFOUND, "stream '%s' %s: there is nothing to snapshot",
                              name,
                              !found || st.last_rev == STELE_NONE ? "has no events"
                                                                  : "is deleted"),
                      0);
    if (s->revision > st.last_rev)
        return finish(P, c,
                      err_set(STELE_EINVAL,
                              "snapshot revision %llu is beyond the last revision %llu of stream "
                              "'%s'",
                              (unsigned long long)s->revision, (unsigned long long)st.last_rev,
                              name),
                      0);
    if (s->revision < st.truncate_before)
        return finish(P, c,
                      err_set(STELE_EINVAL,
                              "snapshot revision %llu is below revision %llu, where stream '%s' "
                              "starts again after its soft delete",
                              (unsigned long long)s->revision,
                              (unsigned long long)st.truncate_before, name),
                      0);
    const char *v1[1] = {name};
    PGresult *r = NULL;
    rc = pg_exec(c, "SELECT count(*), min(revision) FROM snapshots WHERE stream_id = $1", 1, v1,
                 NULL, NULL, 0, &r, "counting snapshots");
    if (rc)
        return finish(P, c, rc, 0);
    uint64_t nsnap = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    uint64_t lowest = PQgetisnull(r, 0, 1) ? 0 : strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    uint32_t max = st.max_snapshots ? st.max_snapshots : STELE_DEFAULT_MAX_SNAPSHOTS;
    if (nsnap >= max && s->revision < lowest)
        return finish(P, c,
                      err_set(STELE_EINVAL,
                              "stream '%s' keeps its %u latest snapshots and the oldest is at "
                              "revision %llu: a snapshot at revision %llu would be dropped at "
                              "once (raise maxSnapshots in the stream metadata)",
                              name, max, (unsigned long long)lowest,
                              (unsigned long long)s->revision),
                      0);
    pg_num b1, b2, b3, b4;
    const char *v[6] = {name,
                        pg_numtxt(&b1, (int64_t)s->revision),
                        pg_numtxt(&b2, s->schema_version),
                        pg_numtxt(&b3, s->flags & STELE_EVENT_JSON),
                        s->state_len ? (const char *)s->state : "",
                        pg_numtxt(&b4, time_now_us())};
    int lens[6] = {0, 0, 0, 0, (int)s->state_len, 0};
    int fmts[6] = {0, 0, 0, 0, 1, 0};
    rc = pg_exec(c,
                 "INSERT INTO snapshots (stream_id, revision, schema_version, flags, state, "
                 "created_us) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stream_id, revision) "
                 "DO UPDATE SET schema_version = EXCLUDED.schema_version, flags = EXCLUDED.flags, "
                 "state = EXCLUDED.state, created_us = EXCLUDED.created_us",
                 6, v, lens, fmts, 0, &r, "saving a snapshot");
    if (rc == 0) {
        PQclear(r);
        rc = pgw_trim_snapshots(c, name, st.max_snapshots);
    }
    return finish(P, c, rc, 0);
}


#endif /* STELE_WITH_POSTGRES */
