/*
 * pg.c - the PostgreSQL backend: several Stele servers in front of one
 * PostgreSQL database (docs/backends.md). This file opens the store,
 * creates and migrates the schema, keeps the connections and turns
 * commits (this server's and, through LISTEN/NOTIFY, every other
 * server's) into commit notifications. The writes are in pg_write.c, the
 * reads in pg_read.c.
 *
 * Schema (version 4; seeds/001's tables and names where they fit):
 *   stele_schema   one row: the schema version (migrations below).
 *   stele_feed     one row: the next global position. Every transaction
 *                  that writes events locks this row (FOR UPDATE, or an
 *                  UPDATE), takes its positions from it and moves it on
 *                  before COMMIT. The row lock is
 *                  held until the transaction ends, so commits that write
 *                  events are serialised on it: positions are gapless and
 *                  a transaction's positions become visible before the next
 *                  transaction can even take its own (PostgreSQL makes a
 *                  commit visible before it releases its locks). A reader
 *                  therefore never sees position p+1 without p.
 *   streams        one row per stream name: last revision and position,
 *                  soft delete and tombstone, metadata. Its row lock (SELECT
 *                  ... FOR UPDATE, taken in name order) serialises the
 *                  expected-revision checks of every server.
 *   events         seeds/001's events table: stream_id, stream_type (the
 *                  category), event_type, revision (seeds' version - 1),
 *                  global_position, created_at; plus the event id (unique
 *                  for client-given ids: idempotency across servers), its
 *                  place in its append (commit_index, commit_count), data
 *                  and metadata as bytes (bytea: Stele accepts any bytes,
 *                  and JSON PostgreSQL refuses, such as \u0000, must not fail
 *                  an append; the view stele_events_json casts JSON ones),
 *                  flags, tags (text[], GIN index), correlation id, causation
 *                  id and actor (taken from JSON metadata by Stele,
 *                  indexed; the causation id since version 2).
 *   snapshots      seeds/001's snapshots, keyed by (stream_id, revision).
 * Consumer group checkpoints are events in system streams, as on every
 * backend, so seeds/001's subscription_checkpoints table is not used.
 *
 *   stele_durable  (version 3) the durable position: rows of one bigint,
 *                  the largest is the position below which every event is
 *                  flushed to the WAL (see "Durability").
 * The events' indexes (version 4): the primary key ($all), (stream_id,
 * revision) (streams), the client-given event ids (idempotency), the view
 * numbers (stream_type, ce_rev) and (event_type, et_rev), which also serve
 * the category and type queries, and a BRIN on the time: six insertions
 * for a plain event. Partial ones (correlation, causation, actor, tags,
 * $bc-, $streams) only for events that carry what they index.
 *
 * Lock order, everywhere (since schema version 4): stele_feed, then
 * stream rows (in name order where several are locked at once). Append
 * batches read their stream rows without a lock and update them, checking
 * the version read, after taking the feed row (pg_write.c); deletes and
 * multi-stream appends take the feed row before locking theirs; metadata
 * and snapshots lock a stream row and never the feed. No two transactions
 * can wait on each other in a cycle.
 *
 * Durability. An append batch commits its events with synchronous_commit
 * off (pg_write.c; answered later by the flusher): the feed row is released as soon as the commit record
 * is in the WAL buffers, not after the flush, so the next batch can take
 * it at once. Such a commit is visible before it is durable: a PostgreSQL
 * crash may lose it and hand its positions out again. So readers never go
 * past the durable position D = max(stele_durable.next_position):
 *   - D moves only by PG_DURABLE_INSERT, which records stele_feed's next
 *     position as its transaction sees it, in a *synchronous* transaction:
 *     that transaction's COMMIT is flushed before it becomes visible, and
 *     the WAL is flushed in order, so every commit record written before it
 *     is flushed too. Every position below the recorded value belongs to a
 *     transaction that had committed (its commit record in the WAL) before
 *     the insert read the feed row: the feed row is held to COMMIT and the
 *     positions are gapless. So a visible D has all of [0, D) flushed.
 *   - Any session may run it at any time (the flusher, before it answers
 *     the batches committed so far; a reader that met a stream row newer
 *     than D; the multi-stream and delete transactions before their own
 *     synchronous COMMIT); several servers insert rows of their own (no
 *     row lock between them, so their flushes merge), and the largest
 *     visible row wins.
 *   - Old rows are pruned (pg_write.c) below the largest visible one,
 *     which is durable, so D never goes down, even across a crash.
 * A crash between a batch's two commits loses at most positions >= D,
 * which no reader was shown and no append was acknowledged with.
 */
#ifdef STELE_WITH_POSTGRES
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "backend/pg_int.h"
#include "util/util.h"

/* ------------------------------------------------------------ helpers */

const char *pg_numtxt(pg_num *b, int64_t v)
{
    snprintf(b->s, sizeof b->s, "%lld", (long long)v);
    return b->s;
}

uint64_t pg_u64(const PGresult *r, int row, int col)
{
    return ldbe64((const uint8_t *)PQgetvalue(r, row, col));
}

int64_t pg_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return -1;
    return (int64_t)ldbe64((const uint8_t *)PQgetvalue(r, row, col));
}

int32_t pg_i32(const PGresult *r, int row, int col)
{
    const uint8_t *p = (const uint8_t *)PQgetvalue(r, row, col);
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
}

int pg_bool(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col)[0] != 0;
}

uint64_t pg_rev(const PGresult *r, int row, int col)
{
    int64_t v = pg_i64(r, row, col);
    return v < 0 ? STELE_NONE : (uint64_t)v;
}

int pg_fail(PGconn *c, PGresult *res, const char *what)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg)
        msg = PQerrorMessage(c);
    char m[600];
    snprintf(m, sizeof m, "%s", msg);
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
        m[--n] = 0;
    /* Unavailable: the connection is gone, or the error came from libpq
     * itself (no SQLSTATE), or from a server shutting down or starting
     * (class 08, 57P01..57P03). Anything else is a server-side error. */
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int lost = PQstatus(c) != CONNECTION_OK || !code || !*code || strncmp(code, "08", 2) == 0 ||
               strncmp(code, "57P", 3) == 0;
    if (res)
        PQclear(res);
    return err_set(lost ? STELE_EIO : STELE_EINTERNAL, "PostgreSQL%s: %s: %s",
                   lost ? " unavailable" : "", what, m);
}

int pg_exec(PGconn *c, const char *sql, int n, const char *const *vals, const int *lens,
            const int *fmts, int binary, PGresult **out, const char *what)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, lens, fmts, binary);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        return pg_fail(c, r, what);
    *out = r;
    return 0;
}

int pg_cmd(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        return pg_fail(c, r, sql);
    PQclear(r);
    return 0;
}

void pg_stream_from(const PGresult *r, int row, int c, pg_stream *st)
{
    st->last_rev = pg_rev(r, row, c);
    st->last_pos = pg_rev(r, row, c + 1);
    st->first_pos = pg_rev(r, row, c + 2);
    st->truncate_before = pg_u64(r, row, c + 3);
    st->deleted = pg_bool(r, row, c + 4);
    st->tombstoned = pg_bool(r, row, c + 5);
    st->meta_version = pg_rev(r, row, c + 6);
    st->max_age_us = pg_u64(r, row, c + 7);
    st->max_count = pg_u64(r, row, c + 8);
    st->meta_tb = pg_u64(r, row, c + 9);
    st->max_snapshots = (uint32_t)pg_i32(r, row, c + 10);
    st->exists = st->last_rev != STELE_NONE || st->deleted || st->tombstoned ||
                 st->meta_version != STELE_NONE;
}

int pg_stream_get(PGconn *c, const char *stream, size_t len, pg_stream *st)
{
    return pg_stream_get_x(c, stream, len, st, 1);
}

int pg_stream_get_x(PGconn *c, const char *stream, size_t len, pg_stream *st, int cover)
{
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    const char *v[1] = {name};
    PGresult *r = NULL;
    int rc = pg_exec(c, "SELECT " PG_STREAM_COLS ", " PG_DURABLE " FROM streams WHERE stream_id = $1",
                     1, v, NULL, NULL, 1, &r, "reading a stream");
    if (rc)
        return rc;
    memset(st, 0, sizeof *st);
    uint64_t durable = 0;
    if (PQntuples(r) == 0) {
        st->last_rev = st->last_pos = st->first_pos = st->meta_version = STELE_NONE;
    } else {
        pg_stream_from(r, 0, 0, st);
        durable = pg_u64(r, 0, 11);
    }
    PQclear(r);
    /* The row as read was committed; once D covers its last position, it
     * is durable (rows change with no new position only in synchronous
     * transactions: deletes, metadata). */
    if (cover && st->last_pos != STELE_NONE && st->last_pos >= durable)
        rc = pg_durable_cover(c);
    return rc;
}

int pg_durable_cover(PGconn *c)
{
    return pg_cmd(c, PG_DURABLE_INSERT "; NOTIFY " PG_CHANNEL);
}

int pg_durable_settle(PGconn *c, int rc)
{
    if (rc == 0 || rc == STELE_EIO || rc == STELE_EINTERNAL || rc == STELE_ENOMEM ||
        rc == STELE_ECLOSED || rc == STELE_EINVAL || rc == STELE_ETOOBIG)
        return rc;
    if (!c || PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE)
        return err_set(STELE_EIO, "PostgreSQL unavailable: the answer could not be made durable");
    char msg[512];
    snprintf(msg, sizeof msg, "%s", stele_errmsg());
    int crc = pg_durable_cover(c);
    if (crc)
        return crc;
    return err_set(rc, "%s", msg);
}

void pg_stream_vis(const pg_stream *st, stream_vis *v)
{
    v->last_rev = st->last_rev;
    v->truncate_before = st->truncate_before;
    v->tombstoned = st->tombstoned;
    v->max_age_us = st->max_age_us;
    v->max_count = st->max_count;
    v->meta_tb = st->meta_tb;
}

uint64_t pg_stream_start(const pg_stream *st)
{
    stream_vis v;
    pg_stream_vis(st, &v);
    return vis_stream_start(&v);
}

/* ------------------------------------------------------------ connections */

PGconn *pg_connect(const char *uri)
{
    /* The URI's own settings win (they come after these, and libpq lets
     * later ones override); these are defaults: a server that does
     * not answer fails a call within seconds instead of hanging it, and a
     * dead peer is noticed by keepalives. */
    const char *keys[] = {"connect_timeout", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "application_name", "dbname", NULL};
    const char *vals[] = {"5", "10", "5", "3", "stele", uri, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        err_set(STELE_ENOMEM, "out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        pg_fail(c, NULL, "connecting");
        PQfinish(c);
        return NULL;
    }
    PGresult *r = PQexec(c, "SET synchronous_commit = on; SET client_min_messages = warning");
    PQclear(r);
    return c;
}

PGconn *pg_conn_get(pg_backend *P)
{
    pthread_mutex_lock(&P->pool_mu);
    while (P->nidle == 0 && P->nconns >= PG_POOL_MAX)
        pthread_cond_wait(&P->pool_cv, &P->pool_mu);
    while (P->nidle && P->idle_epoch[P->nidle - 1] != atomic_load(&P->epoch)) {
        PQfinish(P->idle[--P->nidle]);
        P->nconns--;
    }
    if (P->nidle) {
        PGconn *c = P->idle[--P->nidle];
        pthread_mutex_unlock(&P->pool_mu);
        return c;
    }
    P->nconns++;
    pthread_mutex_unlock(&P->pool_mu);
    PGconn *c = pg_connect(P->uri);
    if (!c) {
        pthread_mutex_lock(&P->pool_mu);
        P->nconns--;
        pthread_cond_signal(&P->pool_cv);
        pthread_mutex_unlock(&P->pool_mu);
    }
    return c;
}

void pg_conn_put(pg_backend *P, PGconn *c)
{
    if (!c)
        return;
    int broken = PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE;
    if (broken)
        PQfinish(c);
    pthread_mutex_lock(&P->pool_mu);
    if (broken) {
        P->nconns--;
    } else {
        P->idle_epoch[P->nidle] = atomic_load(&P->epoch);
        P->idle[P->nidle++] = c;
    }
    pthread_cond_signal(&P->pool_cv);
    pthread_mutex_unlock(&P->pool_mu);
}

/* ------------------------------------------------------------ schema */

/* Migration steps: step i takes the schema from version i to i + 1. Each
 * runs in the migrating transaction, under an advisory lock, so servers
 * starting together migrate once. */
static const char *const migrations[PG_SCHEMA_VERSION] = {
    "CREATE TABLE stele_feed (id int PRIMARY KEY CHECK (id = 1), next_position bigint NOT NULL);"
    "INSERT INTO stele_feed VALUES (1, 0);"
    "CREATE TABLE streams ("
    "  stream_id text PRIMARY KEY,"
    "  stream_type text NOT NULL,"
    "  last_revision bigint NOT NULL DEFAULT -1,"
    "  last_position bigint NOT NULL DEFAULT -1,"
    "  first_position bigint,"
    "  truncate_before bigint NOT NULL DEFAULT 0,"
    "  deleted boolean NOT NULL DEFAULT false,"
    "  tombstoned boolean NOT NULL DEFAULT false,"
    "  meta_version bigint NOT NULL DEFAULT -1,"
    "  max_age_us bigint NOT NULL DEFAULT 0,"
    "  max_count bigint NOT NULL DEFAULT 0,"
    "  meta_truncate_before bigint NOT NULL DEFAULT 0,"
    "  max_snapshots int NOT NULL DEFAULT 0,"
    "  meta_custom bytea);"
    "CREATE INDEX streams_first ON streams (first_position) WHERE first_position IS NOT NULL;"
    "CREATE TABLE events ("
    "  global_position bigint PRIMARY KEY,"
    "  stream_id text NOT NULL,"
    "  stream_type text NOT NULL,"
    "  revision bigint NOT NULL,"
    "  event_id uuid NOT NULL,"
    "  id_made boolean NOT NULL,"
    "  commit_index int NOT NULL,"
    "  commit_count int NOT NULL,"
    "  event_type text NOT NULL,"
    "  data bytea NOT NULL,"
    "  meta bytea NOT NULL,"
    "  flags smallint NOT NULL,"
    "  tags text[] NOT NULL,"
    "  correlation_id text,"
    "  actor text,"
    "  ce_rev bigint NOT NULL,"
    "  et_rev bigint NOT NULL,"
    "  bc_rev bigint,"
    "  stream_no bigint,"
    "  created_us bigint NOT NULL,"
    "  created_at timestamptz NOT NULL,"
    "  CONSTRAINT unique_stream_revision UNIQUE (stream_id, revision));"
    "CREATE UNIQUE INDEX events_event_id ON events (event_id) WHERE NOT id_made;"
    "CREATE INDEX events_category ON events (stream_type, global_position);"
    "CREATE INDEX events_type ON events (event_type, global_position);"
    "CREATE INDEX events_correlation ON events (correlation_id, global_position)"
    "  WHERE correlation_id IS NOT NULL;"
    "CREATE INDEX events_actor ON events (actor, global_position) WHERE actor IS NOT NULL;"
    "CREATE INDEX events_tags ON events USING gin (tags) WHERE cardinality(tags) > 0;"
    "CREATE INDEX events_created ON events USING brin (created_us);"
    "CREATE UNIQUE INDEX events_ce ON events (stream_type, ce_rev);"
    "CREATE UNIQUE INDEX events_et ON events (event_type, et_rev);"
    "CREATE UNIQUE INDEX events_bc ON events (correlation_id, bc_rev) WHERE bc_rev IS NOT NULL;"
    "CREATE UNIQUE INDEX events_streams ON events (stream_no) WHERE stream_no IS NOT NULL;"
    "CREATE TABLE stele_seq (kind text NOT NULL, key text NOT NULL, next bigint NOT NULL,"
    "  PRIMARY KEY (kind, key));"
    "CREATE TABLE snapshots ("
    "  stream_id text NOT NULL,"
    "  revision bigint NOT NULL,"
    "  schema_version bigint NOT NULL,"
    "  flags int NOT NULL,"
    "  state bytea NOT NULL,"
    "  created_us bigint NOT NULL,"
    "  PRIMARY KEY (stream_id, revision));"
    "CREATE VIEW stele_events_json AS SELECT global_position, stream_id, stream_type, revision,"
    "  revision + 1 AS version, event_id, event_type,"
    "  CASE WHEN flags & 1 = 1 THEN convert_from(data, 'UTF8')::jsonb END AS event_data,"
    "  CASE WHEN flags & 2 = 2 THEN convert_from(meta, 'UTF8')::jsonb END AS metadata,"
    "  tags, created_at FROM events;",
    /* 2: the causation id of JSON metadata, indexed for
     * STELE_QUERY_CAUSATION as on the local engine. Events written before
     * keep NULL there (they are not found by causation). */
    "ALTER TABLE events ADD COLUMN causation_id text;"
    "CREATE INDEX events_causation ON events (causation_id, global_position)"
    "  WHERE causation_id IS NOT NULL;",
    /* 3: the durable position (the top of this file, "Durability"). What
     * was written before was committed synchronously: all of it is. */
    "CREATE TABLE stele_durable (next_position bigint NOT NULL);"
    "CREATE INDEX stele_durable_next ON stele_durable (next_position);"
    "INSERT INTO stele_durable SELECT next_position FROM stele_feed;",
    /* 4: two fewer index insertions per event. The category and type
     * queries are served by the view numbers' unique indexes (events_ce,
     * events_et), which follow position order within their key
     * (pg_read.c, pg_rank_bound_sql); DCB reads by type use events_et's
     * leading column. Nothing is rewritten: only the two indexes go. */
    "DROP INDEX IF EXISTS events_category;"
    "DROP INDEX IF EXISTS events_type;"
    /* and the check of an append batch's stream rows (pg_write.c): the
     * UPDATE wrote `got` of the `want` rows it read; fewer means another
     * transaction changed one since, and the batch must not commit. */
    "CREATE FUNCTION stele_stream_rows(want int, got bigint) RETURNS int LANGUAGE plpgsql AS "
    "$f$ BEGIN IF got <> want THEN RAISE EXCEPTION 'a stream row changed after the batch read it "
    "(% of % rows unchanged)', got, want USING ERRCODE = '40001'; END IF; RETURN 0; END $f$;",
};

/* Several stores may share one database, each in its own PostgreSQL
 * schema named by the URI's search_path (options=-csearch_path%3DNAME):
 * the first schema of the search path is made if it does not exist yet. */
static int pg_make_schema(PGconn *c)
{
    PGresult *r = NULL;
    int rc = pg_exec(c, "SELECT current_schema() IS NULL, current_setting('search_path')", 0,
                     NULL, NULL, NULL, 0, &r, "reading the search path");
    if (rc)
        return rc;
    int missing = PQgetvalue(r, 0, 0)[0] == 't';
    char first[256] = "";
    const char *sp = PQgetvalue(r, 0, 1);
    /* The first entry that is not $user, unquoted. */
    while (missing && *sp) {
        while (*sp == ' ' || *sp == ',')
            sp++;
        size_t n = 0;
        int quoted = *sp == '"';
        if (quoted)
            sp++;
        while (*sp && (quoted ? *sp != '"' : *sp != ',') && n + 1 < sizeof first)
            first[n++] = *sp++;
        if (quoted && *sp == '"')
            sp++;
        while (n && first[n - 1] == ' ')
            n--;
        first[n] = 0;
        if (n && strcmp(first, "$user") != 0)
            break;
        first[0] = 0;
    }
    PQclear(r);
    if (!missing || !first[0])
        return 0;
    char *id = PQescapeIdentifier(c, first, strlen(first));
    if (!id)
        return pg_fail(c, NULL, "quoting the schema name");
    char sql[600];
    snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s", id);
    PQfreemem(id);
    return pg_cmd(c, sql);
}

/* Whether the schema is already at this build's version: one statement,
 * no lock, so a reopen of a migrated store costs one round trip. Any
 * failure (no table yet, no schema) means "migrate". */
static int pg_schema_current(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT version FROM stele_schema");
    int ok = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
             atoi(PQgetvalue(r, 0, 0)) == PG_SCHEMA_VERSION;
    PQclear(r);
    return ok;
}

/* Create or migrate the schema; 0 or the error. */
static int pg_migrate(PGconn *c)
{
    if (pg_schema_current(c))
        return 0;
    int rc = pg_cmd(c, "BEGIN");
    if (rc)
        return rc;
    /* 0x5374656c65 = "Stele": one migrator at a time. */
    if ((rc = pg_cmd(c, "SELECT pg_advisory_xact_lock(358470247525)")) ||
        (rc = pg_make_schema(c)) ||
        (rc = pg_cmd(c, "CREATE TABLE IF NOT EXISTS stele_schema (version int NOT NULL)")))
        goto fail;
    PGresult *r = NULL;
    if ((rc = pg_exec(c, "SELECT version FROM stele_schema", 0, NULL, NULL, NULL, 0, &r,
                      "reading the schema version")))
        goto fail;
    int have = PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : 0;
    int norow = PQntuples(r) == 0;
    PQclear(r);
    if (have > PG_SCHEMA_VERSION) {
        pg_cmd(c, "ROLLBACK");
        return err_set(STELE_EVERSION,
                       "the database has Stele schema version %d; this build knows up to %d",
                       have, PG_SCHEMA_VERSION);
    }
    for (int v = have; v < PG_SCHEMA_VERSION; v++)
        if ((rc = pg_cmd(c, migrations[v])))
            goto fail;
    if (have < PG_SCHEMA_VERSION) {
        char sql[96];
        snprintf(sql, sizeof sql,
                 norow ? "INSERT INTO stele_schema VALUES (%d)" : "UPDATE stele_schema SET version = %d",
                 PG_SCHEMA_VERSION);
        if ((rc = pg_cmd(c, sql)))
            goto fail;
    }
    return pg_cmd(c, "COMMIT");
fail:
    {
        PGresult *x = PQexec(c, "ROLLBACK");
        PQclear(x);
    }
    return rc;
}

/* ------------------------------------------------------------ notification */

void pg_bump(pg_backend *P)
{
    pthread_mutex_lock(&P->gen_mu);
    atomic_fetch_add(&P->gen, 1);
    pthread_cond_broadcast(&P->gen_cv);
    for (int i = 0; i < P->nwatch; i++) {
        uint64_t one = 1;
        ssize_t w = write(P->watch_fds[i], &one, sizeof one);
        (void)w; /* EAGAIN: the counter is already readable */
    }
    pthread_mutex_unlock(&P->gen_mu);
}

/* The listener: LISTEN on its own connection; every notification (a commit
 * of any server) bumps the generation. While the connection is down it
 * retries every half second, and bumps once after reconnecting (commits
 * may have been missed meanwhile; subscribers then read and find them). */
static void *listen_main(void *arg)
{
    pg_backend *P = arg;
    PGconn *c = NULL;
    int first = 1;
    while (!atomic_load(&P->listen_stop)) {
        if (!c || PQstatus(c) != CONNECTION_OK) {
            if (c)
                PQfinish(c);
            c = pg_connect(P->uri);
            PGresult *r = c ? PQexec(c, "LISTEN " PG_CHANNEL) : NULL;
            if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
                PQclear(r);
                if (c)
                    PQfinish(c);
                c = NULL;
                struct pollfd w = {P->listen_wake, POLLIN, 0};
                poll(&w, 1, 500); /* or woken to stop */
                continue;
            }
            PQclear(r);
            /* A reconnect: the database may have restarted, so connections
             * made before are dropped rather than reused. The first
             * connect of this store needs no such thing. */
            if (!first)
                atomic_fetch_add(&P->epoch, 1);
            first = 0;
            pg_bump(P);
        }
        struct pollfd pfd[2] = {{PQsocket(c), POLLIN, 0}, {P->listen_wake, POLLIN, 0}};
        int n = poll(pfd, 2, 200);
        if (n <= 0 || !(pfd[0].revents & (POLLIN | POLLERR | POLLHUP)))
            continue;
        if (!PQconsumeInput(c))
            continue; /* the status check above reconnects */
        int any = 0;
        PGnotify *nt;
        while ((nt = PQnotifies(c))) {
            any = 1;
            PQfreemem(nt);
        }
        if (any)
            pg_bump(P);
    }
    if (c)
        PQfinish(c);
    return NULL;
}

static uint32_t pg_commit_gen(backend *b)
{
    return atomic_load(&((pg_backend *)b)->gen);
}

static void pg_wait_commit(backend *b, uint32_t gen, int timeout_ms)
{
    pg_backend *P = (pg_backend *)b;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_ms >= 0) {
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&P->gen_mu);
    while (atomic_load(&P->gen) == gen) {
        if (timeout_ms < 0)
            pthread_cond_wait(&P->gen_cv, &P->gen_mu);
        else if (pthread_cond_timedwait(&P->gen_cv, &P->gen_mu, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&P->gen_mu);
}

static int pg_watch(backend *b, int *fd)
{
    pg_backend *P = (pg_backend *)b;
    int e = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e < 0)
        return err_set(STELE_EIO, "eventfd: %s", strerror(errno));
    pthread_mutex_lock(&P->gen_mu);
    if (P->nwatch >= PG_WATCH_MAX) {
        pthread_mutex_unlock(&P->gen_mu);
        close(e);
        return err_set(STELE_EBUSY, "at most %d watches per store", PG_WATCH_MAX);
    }
    P->watch_fds[P->nwatch++] = e;
    pthread_mutex_unlock(&P->gen_mu);
    *fd = e;
    return 0;
}

static void pg_unwatch(backend *b, int fd)
{
    pg_backend *P = (pg_backend *)b;
    pthread_mutex_lock(&P->gen_mu);
    for (int i = 0; i < P->nwatch; i++)
        if (P->watch_fds[i] == fd) {
            P->watch_fds[i] = P->watch_fds[--P->nwatch];
            close(fd);
            break;
        }
    pthread_mutex_unlock(&P->gen_mu);
}

/* ------------------------------------------------------------ open/close */

static void pg_close(backend *b)
{
    pg_backend *P = (pg_backend *)b;
    pg_writer_stop(P);
    atomic_store(&P->listen_stop, 1);
    uint64_t one = 1;
    ssize_t w = write(P->listen_wake, &one, sizeof one);
    (void)w; /* EAGAIN: already readable */
    pthread_join(P->listener, NULL);
    close(P->listen_wake);
    for (int i = 0; i < P->nidle; i++)
        PQfinish(P->idle[i]);
    for (int i = 0; i < P->nwatch; i++)
        close(P->watch_fds[i]);
    pool_unref(P->pl);
    free(P->uri);
    free(P);
}

/* Positions: gapless integers in commit order (the stele_feed row; see
 * the top of this file), like the local engine's. */
static uint64_t pg_pos_after(backend *b, uint64_t pos)
{
    (void)b;
    return pos == STELE_NONE ? 0 : pos + 1;
}

static uint64_t pg_pos_before(backend *b, uint64_t pos)
{
    (void)b;
    return pos == 0 || pos == STELE_NONE ? STELE_NONE : pos - 1;
}

/* The next position readers may see: the durable position (the top of
 * this file); every event below it is committed, visible and flushed. */
static int pg_pos_head(backend *b, uint64_t *next)
{
    pg_backend *P = (pg_backend *)b;
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    PGresult *r = NULL;
    int rc = pg_exec(c, "SELECT " PG_DURABLE, 0, NULL, NULL, NULL, 1, &r,
                     "reading the head of $all");
    pg_conn_put(P, c);
    if (rc)
        return rc;
    *next = pg_u64(r, 0, 0);
    PQclear(r);
    return 0;
}

static const backend_ops pg_ops = {
    .version = BACKEND_OPS_VERSION,
    .name = "postgres",
    .append = pg_append,
    .append_async = pg_append_async,
    .remove = pg_remove,
    .read_stream = pg_read_stream,
    .read_all = pg_read_all,
    .head = pg_head,
    .query = pg_query,
    .read_stream_to = pg_read_stream_to,
    .read_view = pg_read_view,
    .stats = pg_stats,
    .append_multi = pg_append_multi,
    .append_multi_async = pg_append_multi_async,
    .read_matching = pg_read_matching,
    .set_metadata = pg_set_metadata,
    .get_metadata = pg_get_metadata,
    .put_snapshot = pg_put_snapshot,
    .get_snapshot = pg_get_snapshot,
    .load = pg_load,
    .pos_after = pg_pos_after,
    .pos_before = pg_pos_before,
    .pos_head = pg_pos_head,
    .commit_gen = pg_commit_gen,
    .wait_commit = pg_wait_commit,
    .watch = pg_watch,
    .unwatch = pg_unwatch,
    .scavenge = pg_scavenge,
    .list_names = pg_list_names,
    .groups = &pg_group_ops,
    .close = pg_close,
};

int pg_backend_open(const char *uri, const stele_options *opts, backend **out)
{
    PGconn *c = pg_connect(uri);
    if (!c)
        return STELE_EIO;
    int rc = pg_migrate(c);
    /* A server that stopped between a batch's two commits (killed, or its
     * flusher's connection lost) left committed events above the durable
     * position, which no reader sees until a later durable commit: make
     * them durable now rather than at the next append or stream read, so a
     * restarted server (and what it replays, such as projections) starts
     * from everything committed. They were never acknowledged, so showing
     * them is as correct as losing them would have been. */
    if (rc == 0)
        rc = pg_durable_cover(c);
    if (rc) {
        PQfinish(c);
        return rc;
    }
    pg_backend *P = calloc(1, sizeof *P);
    if (!P || !(P->uri = strdup(uri)) || !(P->pl = pool_new())) {
        PQfinish(c);
        if (P)
            free(P->uri);
        free(P);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    P->base.ops = &pg_ops;
    P->opts = *opts;
    pthread_mutex_init(&P->pool_mu, NULL);
    pthread_cond_init(&P->pool_cv, NULL);
    pthread_mutex_init(&P->q_mu, NULL);
    pthread_cond_init(&P->q_cv, NULL);
    pthread_mutex_init(&P->gen_mu, NULL);
    pthread_cond_init(&P->gen_cv, NULL);
    P->idle[P->nidle++] = c;
    P->nconns = 1;
    P->epoch = 1; /* bumped by the listener's reconnects (not its first connect) */
    P->listen_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (P->listen_wake < 0) {
        PQfinish(c);
        pool_unref(P->pl);
        free(P->uri);
        free(P);
        return err_set(STELE_ENOMEM, "cannot make the listener's eventfd");
    }
    if ((rc = pg_writer_start(P))) {
        close(P->listen_wake);
        PQfinish(c);
        pool_unref(P->pl);
        free(P->uri);
        free(P);
        return rc;
    }
    if (pthread_create(&P->listener, NULL, listen_main, P)) {
        pg_writer_stop(P);
        close(P->listen_wake);
        PQfinish(c);
        pool_unref(P->pl);
        free(P->uri);
        free(P);
        return err_set(STELE_ENOMEM, "cannot start the PostgreSQL listener thread");
    }
    *out = &P->base;
    return 0;
}

#endif /* STELE_WITH_POSTGRES */
