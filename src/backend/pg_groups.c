/*
 * pg_groups.c - the claims of consumer groups shared by the servers of one
 * PostgreSQL store (backend_group_ops in backend.h; the design is in
 * src/sub/group_share.c and docs/backends.md). Two tables, made on first
 * use (CREATE TABLE IF NOT EXISTS under an advisory lock, so they need no
 * schema migration and servers starting together make them once):
 *
 *   stele_group_frontier (key PK, frontier)
 *   stele_group_claims   (key, range_to) PK, range_from, owner, expires
 *
 * Every operation is one statement, so each is atomic by itself:
 * - claim: UPDATE the frontier WHERE frontier = from; only if that row
 *   changed, INSERT the claim (a data-modifying CTE). Under READ
 *   COMMITTED a concurrent claim makes the UPDATE re-check the new row and
 *   find it moved: exactly one server wins each frontier value.
 * - steal: UPDATE the lowest expired claim of another owner, chosen with
 *   FOR UPDATE SKIP LOCKED and re-checked by the UPDATE, so two servers
 *   never take the same one.
 * - sync: delete the owner's finished claims, move the others' `from` up
 *   (never down) and renew their expiry, then read the frontier and the
 *   lowest claim of other owners.
 * Expiries use PostgreSQL's now(): servers' clocks do not matter.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "util/util.h"

#ifdef STELE_WITH_POSTGRES
#include "backend/pg_int.h"

#define T_FRONTIER "stele_group_frontier"
#define T_CLAIMS "stele_group_claims"

static int ensure_tables(PGconn *c)
{
    int rc = pg_cmd(c, "BEGIN");
    /* 0x5374656c65 + 1: not the migrator's lock. */
    if (rc == 0)
        rc = pg_cmd(c, "SELECT pg_advisory_xact_lock(358776810598)");
    if (rc == 0)
        rc = pg_cmd(c, "CREATE TABLE IF NOT EXISTS " T_FRONTIER
                       " (key text PRIMARY KEY, frontier bigint NOT NULL)");
    if (rc == 0)
        rc = pg_cmd(c, "CREATE TABLE IF NOT EXISTS " T_CLAIMS
                       " (key text NOT NULL, range_to bigint NOT NULL, range_from bigint NOT NULL,"
                       " owner text NOT NULL, expires timestamptz NOT NULL,"
                       " PRIMARY KEY (key, range_to))");
    if (rc == 0)
        return pg_cmd(c, "COMMIT");
    PGresult *r = PQexec(c, "ROLLBACK");
    PQclear(r);
    return rc;
}

static uint64_t num(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return STELE_NONE;
    return (uint64_t)strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Run one statement on a pooled connection, text in and out. */
static int run(backend *b, const char *sql, int n, const char *const *vals, PGresult **out,
               const char *what)
{
    pg_backend *P = (pg_backend *)b;
    PGconn *c = pg_conn_get(P);
    if (!c)
        return err_set(STELE_EIO, "consumer group claims: %s", stele_errmsg());
    int rc = pg_exec(c, sql, n, vals, NULL, NULL, 0, out, what);
    pg_conn_put(P, c);
    return rc;
}

static int pgg_frontier(backend *b, const char *key, uint64_t start, uint64_t *frontier)
{
    pg_backend *P = (pg_backend *)b;
    PGconn *c = pg_conn_get(P);
    if (!c)
        return err_set(STELE_EIO, "consumer group claims: %s", stele_errmsg());
    int rc = ensure_tables(c);
    pg_conn_put(P, c);
    if (rc)
        return rc;
    pg_num s;
    const char *v[2] = {key, pg_numtxt(&s, (int64_t)start)};
    PGresult *r;
    rc = run(b,
             "WITH i AS (INSERT INTO " T_FRONTIER " VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
             " RETURNING frontier) SELECT frontier FROM i UNION ALL"
             " SELECT frontier FROM " T_FRONTIER " WHERE key = $1",
             2, v, &r, "reading a group's frontier");
    if (rc)
        return rc;
    *frontier = PQntuples(r) ? num(r, 0, 0) : start;
    PQclear(r);
    return 0;
}

static int pgg_claim(backend *b, const char *key, const char *owner, uint64_t from, uint64_t to,
                     uint32_t ttl_ms, uint64_t *frontier)
{
    pg_num f, t, l;
    const char *v[5] = {key, owner, pg_numtxt(&f, (int64_t)from), pg_numtxt(&t, (int64_t)to),
                        pg_numtxt(&l, ttl_ms)};
    PGresult *r;
    int rc = run(b,
                 "WITH u AS (UPDATE " T_FRONTIER " SET frontier = $4 WHERE key = $1 AND"
                 " frontier = $3 RETURNING 1),"
                 " i AS (INSERT INTO " T_CLAIMS " (key, range_to, range_from, owner, expires)"
                 " SELECT $1, $4, $3, $2, now() + $5::bigint * interval '1 millisecond' FROM u"
                 " RETURNING 1)"
                 " SELECT count(*) FROM i",
                 5, v, &r, "claiming events of a group");
    if (rc)
        return rc;
    int won = num(r, 0, 0) == 1;
    PQclear(r);
    if (won) {
        *frontier = to;
        return 0;
    }
    /* Lost: read the frontier the winner left (a new statement sees it). */
    rc = run(b, "SELECT frontier FROM " T_FRONTIER " WHERE key = $1", 1, v, &r,
             "reading a group's frontier");
    if (rc)
        return rc;
    *frontier = PQntuples(r) ? num(r, 0, 0) : from;
    PQclear(r);
    return err_set(STELE_EWRONGREV, "another server claimed the group's events first");
}

static int pgg_steal(backend *b, const char *key, const char *owner, uint32_t ttl_ms,
                     group_claim *out)
{
    pg_num l;
    const char *v[3] = {key, owner, pg_numtxt(&l, ttl_ms)};
    PGresult *r;
    int rc = run(b,
                 "UPDATE " T_CLAIMS " c SET owner = $2,"
                 " expires = now() + $3::bigint * interval '1 millisecond'"
                 " WHERE c.key = $1 AND c.owner <> $2 AND c.expires <= now() AND c.range_to ="
                 " (SELECT range_to FROM " T_CLAIMS " WHERE key = $1 AND owner <> $2 AND"
                 " expires <= now() ORDER BY range_from LIMIT 1 FOR UPDATE SKIP LOCKED)"
                 " RETURNING c.range_from, c.range_to",
                 3, v, &r, "taking over a group's expired claim");
    if (rc)
        return rc;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return STELE_ENOTFOUND;
    }
    out->from = num(r, 0, 0);
    out->to = num(r, 0, 1);
    PQclear(r);
    return 0;
}

/* A PostgreSQL array literal of v[i].to or v[i].from. */
static int array_text(buf *o, const group_claim *v, size_t n, int to)
{
    int rc = buf_append(o, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char t[24];
        int k = snprintf(t, sizeof t, "%s%" PRId64, i ? "," : "",
                         (int64_t)(to ? v[i].to : v[i].from));
        rc = buf_append(o, t, (size_t)k);
    }
    if (rc == 0)
        rc = buf_append(o, "}", 2); /* with the NUL */
    return rc;
}

static int pgg_sync(backend *b, const char *key, const char *owner, const group_claim *v,
                    size_t n, uint32_t ttl_ms, uint64_t *frontier, uint64_t *others)
{
    buf tos = {0}, froms = {0};
    int rc = array_text(&tos, v, n, 1);
    if (rc == 0)
        rc = array_text(&froms, v, n, 0);
    if (rc) {
        buf_free(&tos);
        buf_free(&froms);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    pg_num l;
    const char *p[5] = {key, owner, (const char *)tos.p, (const char *)froms.p, pg_numtxt(&l, ttl_ms ? (int64_t)ttl_ms : -1000)};
    PGresult *r;
    rc = run(b,
             "WITH p AS (SELECT * FROM unnest($3::bigint[], $4::bigint[]) AS p(t, f)),"
             " d AS (DELETE FROM " T_CLAIMS " c USING p WHERE c.key = $1 AND c.owner = $2 AND"
             " c.range_to = p.t AND p.f >= p.t RETURNING 1),"
             " u AS (UPDATE " T_CLAIMS " c SET"
             " expires = now() + $5::bigint * interval '1 millisecond',"
             " owner = CASE WHEN $5::bigint < 0 THEN '' ELSE c.owner END,"
             " range_from = greatest(c.range_from,"
             " coalesce((SELECT p.f FROM p WHERE p.t = c.range_to), c.range_from))"
             " WHERE c.key = $1 AND c.owner = $2 AND"
             " c.range_to NOT IN (SELECT p.t FROM p WHERE p.f >= p.t) RETURNING 1)"
             " SELECT (SELECT frontier FROM " T_FRONTIER " WHERE key = $1),"
             " (SELECT min(range_from) FROM " T_CLAIMS " WHERE key = $1 AND owner <> $2),"
             " (SELECT count(*) FROM d) + (SELECT count(*) FROM u)",
             5, p, &r, "renewing a group's claims");
    buf_free(&tos);
    buf_free(&froms);
    if (rc)
        return rc;
    *frontier = num(r, 0, 0);
    *others = num(r, 0, 1);
    PQclear(r);
    if (*frontier == STELE_NONE)
        return err_set(STELE_ENOTFOUND, "consumer group claims: no state for '%s'", key);
    return 0;
}

static int pgg_reset(backend *b, const char *key, uint64_t pos)
{
    pg_backend *P = (pg_backend *)b;
    PGconn *c = pg_conn_get(P);
    if (!c)
        return err_set(STELE_EIO, "consumer group claims: %s", stele_errmsg());
    int rc = ensure_tables(c);
    pg_conn_put(P, c);
    if (rc)
        return rc;
    pg_num s;
    const char *v[2] = {key, pg_numtxt(&s, pos == STELE_NONE ? 0 : (int64_t)pos)};
    PGresult *r;
    if (pos == STELE_NONE)
        rc = run(b,
                 "WITH d AS (DELETE FROM " T_CLAIMS " WHERE key = $1)"
                 " DELETE FROM " T_FRONTIER " WHERE key = $1 AND $2::bigint = 0",
                 2, v, &r, "forgetting a group's claims");
    else
        rc = run(b,
                 "WITH d AS (DELETE FROM " T_CLAIMS " WHERE key = $1)"
                 " INSERT INTO " T_FRONTIER " VALUES ($1, $2) ON CONFLICT (key)"
                 " DO UPDATE SET frontier = EXCLUDED.frontier",
                 2, v, &r, "moving a group's frontier");
    if (rc == 0)
        PQclear(r);
    return rc;
}

const backend_group_ops pg_group_ops = {
    .frontier = pgg_frontier,
    .claim = pgg_claim,
    .steal = pgg_steal,
    .sync = pgg_sync,
    .reset = pgg_reset,
};

#endif /* STELE_WITH_POSTGRES */
