/*
 * pg_write.c - writes of the PostgreSQL backend: group commit of appends
 * on one writer thread per server, and deletes, metadata and snapshots in
 * the caller's thread. pg.c describes the schema and the lock order.
 *
 * Group commit. Callers queue appends; a writer thread (PG_WRITERS of
 * them, each with its own connection: that many batches in flight) takes
 * every queued one (up to PG_BATCH_MAX) and commits them in one
 * transaction, in three round trips (libpq pipeline mode: a round trip's
 * statements go out together and their results are read together):
 *   1. first round trip:
 *      - makes sure every stream of the batch has a row (an INSERT ... ON
 *        CONFLICT DO NOTHING in its own short transaction, names sorted, a
 *        Sync after it: a row with nothing in it counts as "never written");
 *      - BEGIN; reads the batch's stream rows with their versions (xmin),
 *        without a lock (schema version 4; before, FOR UPDATE here and an
 *        UPDATE in step 4: two writes of each row per batch);
 *      - looks up the batch's client-given event ids with their stored
 *        events (the unique index on event_id is what makes them unique
 *        across servers and batches; pg_retry.c compares a retry's events);
 *   2. plans each append in queue order in C, on the rows as read and as
 *      the appends before it in the batch left them: tombstone, idempotent
 *      retry, expected revision (the same rules as the local engine). An
 *      append that fails a check is simply left out: the others go on;
 *   3. second round trip: takes the feed row, moving it on by the batch's
 *      event count (UPDATE ... RETURNING: this serialises commits of
 *      events, see pg.c), and reads the view counters the batch may touch
 *      (pg_insert.c; nobody else writes them meanwhile). Positions and view
 *      revisions are assigned in C;
 *   4. third round trip: the view counters, the stream rows, every event
 *      in one statement, then COMMIT with synchronous_commit off: the feed
 *      row is released without waiting for the WAL flush. The stream rows'
 *      UPDATE writes a row only if it is still the version read (same
 *      xmin) and fails the batch with 40001 unless it wrote every one: the
 *      expected-revision check and the write are one statement, and a row
 *      changed by another server, a delete or metadata since the read
 *      sends the batch back to be retried (append by append, each reading
 *      its row anew). PostgreSQL's row lock, taken by that UPDATE, keeps
 *      two transactions from writing one row version twice;
 *   5. the batch's requests, with their outcomes, go to the flusher, and
 *      the writer takes the next batch at once.
 * The flusher (one thread and connection per server) takes every request
 * handed to it so far and runs one small synchronous transaction,
 * PG_DURABLE_INSERT and NOTIFY: its COMMIT flushes the WAL past every
 * batch committed before it and moves the durable position (pg.c,
 * "Durability") past them; then it answers those requests, in the order
 * they were handed over. One flush thus answers every batch committed
 * meanwhile, by both writers, and the flushes of other servers' flushers
 * merge with it in PostgreSQL. Every answer (accepted, idempotent retry,
 * wrong expected revision) is given only after that COMMIT, so no answer
 * reports anything a crash could lose. The feed row is held from the
 * second round trip to the first COMMIT only: no flush inside it.
 * Batches in flight. The feed row is held only from the second round trip
 * to COMMIT, so one writer's first round trip and planning overlap the
 * other's insert and COMMIT. Queue order per stream: requests leave the
 * queue through a door (P->door); the writer holding it registers its
 * batch's streams as in flight (fly_enter), first waiting until no batch
 * in flight on this server shares a stream with it, then leaves the door.
 * A later batch with one of those streams thus reads the row only after
 * this batch's COMMIT, and sees its result, as the FOR UPDATE wait gave
 * before; between servers the version check above does it (a stale read
 * fails the UPDATE, and the retry reads the new row).
 * An append is acknowledged only after COMMIT returned. Two appends of one
 * batch that carry the same event id are not planned together: the second
 * and those after it go back to the queue for the next batch, which then
 * sees the first as written (a retry, or a conflict). If a statement fails
 * in a way a smaller batch could avoid (a unique violation because another
 * server wrote the same id concurrently, a deadlock), the batch is rolled
 * back and each append is tried alone. If the connection is lost, every
 * append of the batch fails with EIO; when that happened during COMMIT the
 * outcome is unknown, which the message says: retrying with the same event
 * ids is safe (idempotent).
 */
#ifdef STELE_WITH_POSTGRES
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/pg_write.h"
#include "util/util.h"

/* ------------------------------------------------------------ text arrays */

/* Append `s` (len bytes) to a PostgreSQL array literal being built in b,
 * quoted and escaped; `first` says whether it is the first element. */
int pgw_arr_add(buf *b, const char *s, size_t len, int first)
{
    int rc = buf_append(b, first ? "\"" : ",\"", first ? 1 : 2);
    /* Runs without a quote or backslash go in one call each. */
    size_t from = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        if (s[i] != '"' && s[i] != '\\')
            continue;
        if (!(rc = buf_append(b, s + from, i - from)))
            rc = buf_append(b, "\\", 1);
        from = i;
    }
    if (rc == 0)
        rc = buf_append(b, s + from, len - from);
    return rc ? rc : buf_append(b, "\"", 1);
}

int pgw_arr_open(buf *b)
{
    b->len = 0;
    return buf_append(b, "{", 1);
}

int pgw_arr_close(buf *b)
{
    int rc = buf_append(b, "}", 2); /* with the NUL */
    return rc;
}

void pgw_uuid_text(const uint8_t id[16], char out[37])
{
    stele_uuid_format(id, out);
}

/* ------------------------------------------------------------ the queue */

static void req_done(pg_req *r)
{
    if (r->rc == 0)
        r->msg[0] = 0;
    r->done(r->ctx, r->rc, &r->res, r->msg);
    free(r);
}

static void req_fail(pg_req *r, int rc)
{
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
    r->accepted = 0;
}

int pgw_enqueue(pg_backend *P, pg_req *r)
{
    pthread_mutex_lock(&P->q_mu);
    if (P->stopping) {
        pthread_mutex_unlock(&P->q_mu);
        return err_set(STELE_ECLOSED, "store is closing");
    }
    r->next = NULL;
    if (P->q_tail)
        P->q_tail->next = r;
    else
        P->q_head = r;
    P->q_tail = r;
    pthread_cond_signal(&P->q_cv);
    pthread_mutex_unlock(&P->q_mu);
    return 0;
}

/* Put reqs[0..n) back at the front of the queue, in order. */
static void requeue(pg_backend *P, pg_req **reqs, size_t n)
{
    if (!n)
        return;
    pthread_mutex_lock(&P->q_mu);
    for (size_t i = 0; i + 1 < n; i++)
        reqs[i]->next = reqs[i + 1];
    reqs[n - 1]->next = P->q_head;
    if (!P->q_head)
        P->q_tail = reqs[n - 1];
    P->q_head = reqs[0];
    pthread_mutex_unlock(&P->q_mu);
}

/* ------------------------------------------------------------ planning */

int pgw_bs_cmp(const void *a, const void *b)
{
    return strcmp(((const bstream *)a)->name, ((const bstream *)b)->name);
}

static int find_stream(bstream *bs, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(bs[mid].name, name);
        if (c == 0)
            return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

const idrow *pgw_find_id(const idrow *ids, size_t n, const uint8_t id[16])
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(ids[i].id, id, 16) == 0)
            return &ids[i];
    return NULL;
}

uint64_t pgw_visible_rev(const pg_stream *st)
{
    if (!st->exists || st->deleted || st->last_rev == STELE_NONE)
        return STELE_NONE;
    return st->last_rev;
}

/* The idempotency rules of local.c's check_retry, on the looked-up ids:
 * 1 settled (retry result or conflict in r), 0 not a retry. */
static int check_retry(pg_req *r, const bstream *s, const idrow *ids, size_t nids)
{
    const append_args *a = r->a;
    char idt[37];
    for (size_t i = 0; i < a->n; i++) {
        if (a->made[i])
            continue;
        const idrow *f = pgw_find_id(ids, nids, a->ids[i]);
        if (!f)
            continue;
        pgw_uuid_text(a->ids[i], idt);
        if (i != 0) {
            err_set(STELE_EIDCONFLICT, "event %zu: id %s was already written (position %llu)", i,
                    idt, (unsigned long long)f->pos);
            req_fail(r, STELE_EIDCONFLICT);
            return 1;
        }
        if (strcmp(f->stream, s->name) != 0) {
            err_set(STELE_EIDCONFLICT, "event id %s was already written to another stream", idt);
            req_fail(r, STELE_EIDCONFLICT);
            return 1;
        }
        uint64_t want = r->a->expected >= 0 ? (uint64_t)r->a->expected + 1 : f->rev;
        if (f->rev != want) {
            err_set(STELE_EIDCONFLICT,
                    "event id %s was already written at revision %llu of '%s', not where this "
                    "append's expected revision puts it",
                    idt, (unsigned long long)f->rev, s->name);
            req_fail(r, STELE_EIDCONFLICT);
            return 1;
        }
        if (f->ci != 0 || (size_t)f->cc != a->n) {
            err_set(STELE_EIDCONFLICT,
                    "event id %s was already written at revision %llu of '%s' by an append that "
                    "this one does not repeat exactly",
                    idt, (unsigned long long)f->rev, s->name);
            req_fail(r, STELE_EIDCONFLICT);
            return 1;
        }
        uint64_t last_pos = f->pos;
        for (size_t k = 1; k < a->n; k++) {
            const idrow *g = a->made[k] ? NULL : pgw_find_id(ids, nids, a->ids[k]);
            if (!g || strcmp(g->stream, s->name) != 0 || g->rev != f->rev + k) {
                err_set(STELE_EIDCONFLICT,
                        "event id %s was already written at revision %llu of '%s', but event "
                        "%zu of this append does not repeat that append",
                        idt, (unsigned long long)f->rev, s->name, k);
                req_fail(r, STELE_EIDCONFLICT);
                return 1;
            }
            last_pos = g->pos;
        }
        for (size_t k = 0; k < a->n; k++) {
            const idrow *g = a->made[k] ? NULL : pgw_find_id(ids, nids, a->ids[k]);
            const char *part = g ? pgw_retry_diff(g, &a->events[k]) : NULL;
            if (part) {
                pgw_retry_conflict(a->ids[k], s->name, g->rev, part);
                req_fail(r, STELE_EIDCONFLICT);
                return 1;
            }
        }
        r->res.first_revision = f->rev;
        r->res.last_revision = f->rev + a->n - 1;
        r->res.first_position = f->pos;
        r->res.last_position = last_pos;
        r->res.idempotent = 1;
        r->rc = 0;
        return 1;
    }
    return 0;
}

/* Plan one append on its (locked) stream row; 1 if accepted. */
static int plan(pg_req *r, bstream *s, const idrow *ids, size_t nids)
{
    const append_args *a = r->a;
    pg_stream *st = &s->st;
    if (st->tombstoned) {
        err_set(STELE_EDELETED, "stream '%s' is tombstoned", s->name);
        req_fail(r, STELE_EDELETED);
        return 0;
    }
    if (check_retry(r, s, ids, nids))
        return 0;
    uint64_t cur = pgw_visible_rev(st);
    int recreate = st->deleted && a->expected >= 0 && st->last_rev != STELE_NONE &&
                   (uint64_t)a->expected == st->last_rev;
    if (!recreate && !expect_ok(a->expected, cur)) {
        r->res.current_revision = cur;
        expect_wrong_rev(s->name, s->len, a->expected, cur);
        req_fail(r, STELE_EWRONGREV);
        return 0;
    }
    uint64_t first = st->last_rev == STELE_NONE ? 0 : st->last_rev + 1;
    r->res.first_revision = first;
    r->res.last_revision = first + a->n - 1;
    st->last_rev = r->res.last_revision;
    st->deleted = 0;
    st->exists = 1;
    s->changed = 1;
    r->accepted = 1;
    r->rc = 0;
    return 1;
}

/* ------------------------------------------------------------ one batch */

static const char *sqlstate(PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

/* Run a statement, keeping the SQLSTATE of a failure in `state`. */
int pgw_wexec(PGconn *c, const char *sql, int n, const char *const *vals, const int *lens,
                 const int *fmts, int binary, PGresult **out, const char *what, char state[6])
{
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, lens, fmts, binary);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        snprintf(state, 6, "%s", sqlstate(r));
        return pg_fail(c, r, what);
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

/* The known-streams cache: open addressing on an FNV-1a hash of the name,
 * at most half full; emptied when it would grow past PG_KNOWN_MAX. */
#define PG_KNOWN_MAX (1u << 17)

static uint64_t name_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

/* Callers hold known_mu. */
static void known_clear(pg_backend *P)
{
    for (size_t i = 0; i < P->known_cap; i++)
        free(P->known[i]);
    free(P->known);
    P->known = NULL;
    P->known_cap = P->known_n = 0;
}

static int known_has(const pg_backend *P, const char *name)
{
    /* Under known_mu. */
    if (!P->known_cap)
        return 0;
    size_t m = P->known_cap - 1;
    for (size_t i = name_hash(name, strlen(name)) & m; P->known[i]; i = (i + 1) & m)
        if (strcmp(P->known[i], name) == 0)
            return 1;
    return 0;
}

static void known_add(pg_backend *P, const char *name)
{
    /* Under known_mu. */
    if (known_has(P, name))
        return;
    if ((P->known_n + 1) * 2 > P->known_cap) {
        size_t cap = P->known_cap ? P->known_cap * 2 : 1024;
        if (cap > PG_KNOWN_MAX) {
            known_clear(P);
            cap = 1024;
        }
        char **old = P->known;
        size_t oldcap = P->known_cap;
        char **t = calloc(cap, sizeof *t);
        if (!t)
            return; /* only a cache */
        P->known = t;
        P->known_cap = cap;
        for (size_t i = 0; i < oldcap; i++) {
            if (!old[i])
                continue;
            size_t j = name_hash(old[i], strlen(old[i])) & (cap - 1);
            while (t[j])
                j = (j + 1) & (cap - 1);
            t[j] = old[i];
        }
        free(old);
    }
    char *copy = strdup(name);
    if (!copy)
        return;
    size_t m = P->known_cap - 1, i = name_hash(name, strlen(name)) & m;
    while (P->known[i])
        i = (i + 1) & m;
    P->known[i] = copy;
    P->known_n++;
}

/* ------------------------------------------------------------ pipelines */

/*
 * The writer's statements, prepared once per connection as named
 * statements ("stele_w<i>") and then only bound and executed: PostgreSQL
 * parses, analyses and plans each of them once per connection instead of
 * once per batch. (At 256 clients x 1 event those three steps were a
 * quarter of PostgreSQL's CPU, and the ones in round trips 2 and 3 ran
 * while the batch held the feed row: docs/benchmarks.md.) After five runs
 * PostgreSQL keeps a generic plan when it costs no more than the custom
 * ones; every statement here has one plan shape whatever its arrays hold.
 * Prepared statements outlive transactions and their rollbacks, and a
 * schema change only makes PostgreSQL re-plan them; a new connection
 * (W->prepared = 0) prepares them again.
 */
enum {
    PW_CREATE_ROWS,
    PW_LOCK_ROWS,
    PW_IDS,
    PW_FEED,
    PW_SEQ_READ,
    PW_SEQ_WRITE,
    PW_INSERT,
    PW_STREAMS,
    PW_COUNT
};

static const char pw_create_rows_sql[] =
    "INSERT INTO streams (stream_id, stream_type) SELECT n, CASE WHEN strpos(n, '-') > 1 THEN "
    "substr(n, 1, strpos(n, '-') - 1) ELSE n END FROM unnest($1::text[]) AS u(n) ORDER BY u.n "
    "ON CONFLICT DO NOTHING";
/* The stream rows as they are, not locked: the UPDATE of the third round
 * trip (pw_streams_sql) checks that each changed row is still the version
 * read (its xmin), so the check and the write are one statement. */
static const char pw_lock_rows_sql[] = "SELECT stream_id, " PG_STREAM_COLS
                                       ", xmin::text FROM streams WHERE stream_id = "
                                       "ANY($1::text[])";
static const char pw_feed_sql[] = "UPDATE stele_feed SET next_position = next_position + "
                                  "$1::bigint RETURNING next_position - $1::bigint";
/* The changed stream rows, each only if it is still the version the first
 * round trip read (same xmin: no other transaction changed it since); then
 * stele_stream_rows() (schema version 4) raises 40001 unless all $6 were
 * written, which aborts the batch before its events go in. */
static const char pw_streams_sql[] =
    "WITH c AS (UPDATE streams AS s SET last_revision = u.lr, last_position = u.lp, "
    "first_position = COALESCE(s.first_position, u.fp), deleted = false FROM unnest($1::text[], "
    "$2::bigint[], $3::bigint[], $4::bigint[], $5::text[]) AS u(n, lr, lp, fp, x) WHERE "
    "s.stream_id = u.n AND s.xmin = u.x::xid RETURNING 1) SELECT stele_stream_rows($6::int, "
    "(SELECT count(*) FROM c))";

static const struct {
    const char *sql;
    int nparams;
} pw_stmts[PW_COUNT] = {
    [PW_CREATE_ROWS] = {pw_create_rows_sql, 1},
    [PW_LOCK_ROWS] = {pw_lock_rows_sql, 1},
    [PW_IDS] = {PGW_IDS_SQL, 1},
    [PW_FEED] = {pw_feed_sql, 1},
    [PW_SEQ_READ] = {PGW_SEQ_READ_SQL, 2},
    [PW_SEQ_WRITE] = {pgw_seq_write_sql, 3},
    [PW_INSERT] = {pgw_insert_sql, PGW_EV_COLS + 1},
    [PW_STREAMS] = {pw_streams_sql, 6},
};

/* One statement of a pipeline; `res` receives its result when `keep`.
 * `prep` is 1 + its index in pw_stmts (then `sql` is unused), or 0 for a
 * statement sent as text (BEGIN, COMMIT, SET LOCAL). */
typedef struct pstmt {
    int prep;
    const char *sql;
    int n;
    const char *const *vals;
    const int *lens, *fmts;
    int binary, keep, sync_after;
    const char *what;
    PGresult *res;
} pstmt;

static void pw_name(int i, char out[24])
{
    snprintf(out, 24, "stele_w%d", i);
}

/* Prepare on W's connection every named statement it has not prepared
 * yet (one round trip each, once per connection). The first round trip of
 * a batch comes first, so this happens outside any transaction. A name
 * that exists already (42P05: W->prepared was cleared after a 26000 while
 * some statements were still there) is deallocated and prepared anew, so
 * its text is this binary's. */
static int pw_prepare(pg_writer *W, char state[6])
{
    for (int k = 0; k < PW_COUNT; k++) {
        if (W->prepared & (1u << k))
            continue;
        char name[24];
        pw_name(k, name);
        PGresult *r = PQprepare(W->conn, name, pw_stmts[k].sql, pw_stmts[k].nparams, NULL);
        if (r && strcmp(sqlstate(r), "42P05") == 0) {
            char sql[48];
            snprintf(sql, sizeof sql, "DEALLOCATE %s", name);
            PQclear(r);
            r = PQexec(W->conn, sql);
            PQclear(r);
            r = PQprepare(W->conn, name, pw_stmts[k].sql, pw_stmts[k].nparams, NULL);
        }
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(state, 6, "%s", sqlstate(r));
            return pg_fail(W->conn, r, "preparing the writer's statements");
        }
        PQclear(r);
        W->prepared |= 1u << k;
    }
    return 0;
}

/*
 * Send st[0..n) in one pipeline (a Sync after each statement marked
 * sync_after and after the last: each Sync ends an implicit transaction,
 * so a statement before BEGIN commits on its own), then read every
 * result. One round trip for all of them. 0 when every statement
 * succeeded (kept results in res, the caller PQclear()s them); else the
 * first failure as pg_fail() makes it, its SQLSTATE in `state`, and every
 * kept result cleared. A connection left in pipeline mode (lost in the
 * middle) is the caller's to drop.
 */
static int pipe_run(pg_writer *W, pstmt *st, size_t n, char state[6])
{
    PGconn *c = W->conn;
    int rc = pw_prepare(W, state);
    if (rc)
        return rc;
    if (!PQenterPipelineMode(c))
        return pg_fail(c, NULL, "entering pipeline mode");
    size_t sent = 0, syncs = 0;
    for (size_t i = 0; i < n; i++) {
        st[i].res = NULL;
        char name[24];
        if (st[i].prep)
            pw_name(st[i].prep - 1, name);
        if (st[i].prep ? !PQsendQueryPrepared(c, name, st[i].n, st[i].vals, st[i].lens,
                                              st[i].fmts, st[i].binary)
                       : !PQsendQueryParams(c, st[i].sql, st[i].n, NULL, st[i].vals, st[i].lens,
                                            st[i].fmts, st[i].binary)) {
            rc = pg_fail(c, NULL, st[i].what);
            break;
        }
        sent++;
        if ((st[i].sync_after || i + 1 == n) && PQpipelineSync(c))
            syncs++;
    }
    if (sent && sent < n && PQpipelineSync(c))
        syncs++;
    /* Results: one per statement (each followed by a NULL), one
     * PGRES_PIPELINE_SYNC per Sync. */
    size_t got = 0, synced = 0;
    int nulls = 0;
    while ((got < sent || synced < syncs) && nulls < 2) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            nulls++;
            continue;
        }
        nulls = 0;
        ExecStatusType es = PQresultStatus(r);
        if (es == PGRES_PIPELINE_SYNC) {
            synced++;
            PQclear(r);
            continue;
        }
        size_t i = got < sent ? got++ : sent - 1;
        if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
            if (st[i].keep && !st[i].res && rc == 0)
                st[i].res = r;
            else
                PQclear(r);
        } else if (es == PGRES_PIPELINE_ABORTED) {
            PQclear(r);
            if (rc == 0)
                rc = err_set(STELE_EINTERNAL, "PostgreSQL: %s: not run (pipeline aborted)",
                             st[i].what);
        } else if (rc == 0) {
            const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            snprintf(state, 6, "%s", code ? code : "");
            rc = pg_fail(c, r, st[i].what);
        } else {
            PQclear(r);
        }
    }
    if (rc == 0 && (got < sent || synced < syncs))
        rc = pg_fail(c, NULL, "reading pipeline results");
    if (PQpipelineStatus(c) != PQ_PIPELINE_OFF && !PQexitPipelineMode(c) && rc == 0)
        rc = pg_fail(c, NULL, "leaving pipeline mode");
    if (rc)
        for (size_t i = 0; i < n; i++)
            if (st[i].res) {
                PQclear(st[i].res);
                st[i].res = NULL;
            }
    return rc;
}

/* stele_durable gets a row per durable commit; every PGW_PRUNE_EVERY of
 * them the flusher deletes the rows below the largest visible one. That one is
 * durable (it became visible after its flush), so the durable position
 * stays where it is even if this delete survives a crash and rows inserted
 * meanwhile do not. No flush is waited for: a lost delete is only redone
 * later. A failure is left for the next batch to meet. */
#define PGW_PRUNE_EVERY 1024

static void prune_durable(PGconn *c)
{
    PGresult *r = PQexec(c, "BEGIN; SET LOCAL synchronous_commit = off; DELETE FROM "
                            "stele_durable WHERE next_position < " PG_DURABLE "; COMMIT");
    PQclear(r);
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        r = PQexec(c, "ROLLBACK");
        PQclear(r);
    }
}

/* Distinct stream names of the batch into bs (sorted), each request's
 * index in it into its sidx; the number of names. */
static size_t batch_streams(pg_req **reqs, size_t n, bstream *bs)
{
    size_t nbs = 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(bs[nbs].name, sizeof bs[nbs].name, "%.*s", (int)reqs[i]->a->stream_len,
                 reqs[i]->a->stream);
        bs[nbs].len = reqs[i]->a->stream_len;
        nbs++;
    }
    qsort(bs, nbs, sizeof *bs, pgw_bs_cmp);
    size_t u = 0;
    for (size_t i = 0; i < nbs; i++)
        if (u == 0 || strcmp(bs[u - 1].name, bs[i].name) != 0)
            bs[u++] = bs[i];
    for (size_t i = 0; i < n; i++) {
        char nm[256];
        snprintf(nm, sizeof nm, "%.*s", (int)reqs[i]->a->stream_len, reqs[i]->a->stream);
        reqs[i]->sidx = find_stream(bs, u, nm);
    }
    return u;
}

/* The text arrays of the changed stream rows (name, last revision, last
 * position, first new position, the xmin read) for the UPDATE of step 4;
 * their number in *nrows. */
static int changed_rows(const bstream *bs, size_t nbs, buf *un, buf *ulr, buf *ulp, buf *ufp,
                        buf *ux, size_t *nrows)
{
    int rc = 0, first = 1;
    *nrows = 0;
    if ((rc = pgw_arr_open(un)) || (rc = pgw_arr_open(ulr)) || (rc = pgw_arr_open(ulp)) ||
        (rc = pgw_arr_open(ufp)) || (rc = pgw_arr_open(ux)))
        return rc;
    for (size_t i = 0; i < nbs && rc == 0; i++) {
        if (!bs[i].changed || !bs[i].first_new_pos)
            continue;
        pg_num a1, a2, a3;
        const char *lr = pg_numtxt(&a1, (int64_t)bs[i].st.last_rev);
        const char *lp = pg_numtxt(&a2, (int64_t)bs[i].st.last_pos);
        const char *fp = pg_numtxt(&a3, (int64_t)bs[i].first_new_pos - 1);
        if (!(rc = pgw_arr_add(un, bs[i].name, bs[i].len, first)) &&
            !(rc = pgw_arr_add(ulr, lr, strlen(lr), first)) &&
            !(rc = pgw_arr_add(ulp, lp, strlen(lp), first)) &&
            !(rc = pgw_arr_add(ufp, fp, strlen(fp), first)))
            rc = pgw_arr_add(ux, bs[i].xmin, strlen(bs[i].xmin), first);
        first = 0;
        (*nrows)++;
    }
    if (rc == 0 && !(rc = pgw_arr_close(un)) && !(rc = pgw_arr_close(ulr)) &&
        !(rc = pgw_arr_close(ulp)) && !(rc = pgw_arr_close(ufp)))
        rc = pgw_arr_close(ux);
    return rc;
}

/* The rows of step 1 (the stream rows as read) into bs; a missing row (the
 * known-streams cache was wrong) is a retryable error (40001). */
static int take_rows(pg_backend *P, const PGresult *r, bstream *bs, size_t nbs, char state[6])
{
    for (int i = 0; i < PQntuples(r); i++) {
        char nm[256];
        snprintf(nm, sizeof nm, "%.*s", PQgetlength(r, i, 0), PQgetvalue(r, i, 0));
        int j = find_stream(bs, nbs, nm);
        if (j >= 0) {
            pg_stream_from(r, i, 1, &bs[j].st);
            snprintf(bs[j].xmin, sizeof bs[j].xmin, "%.*s", PQgetlength(r, i, 12),
                     PQgetvalue(r, i, 12));
            bs[j].found = 1;
        }
    }
    pthread_mutex_lock(&P->known_mu);
    for (size_t i = 0; i < nbs; i++)
        if (!bs[i].found) {
            known_clear(P);
            pthread_mutex_unlock(&P->known_mu);
            snprintf(state, 6, "40001");
            return err_set(STELE_EINTERNAL, "stream '%s' has no row", bs[i].name);
        }
    for (size_t i = 0; i < nbs; i++)
        known_add(P, bs[i].name);
    pthread_mutex_unlock(&P->known_mu);
    return 0;
}

/* ------------------------------------------------------------ in flight */

static int fly_slot(const pg_writer *W)
{
    return (int)(W - W->P->writers);
}

/* Whether the sorted names a[0..na) and b[0..nb) share one. */
static int fly_overlap(const bstream *a, size_t na, const bstream *b, size_t nb)
{
    size_t i = 0, j = 0;
    while (i < na && j < nb) {
        int c = strcmp(a[i].name, b[j].name);
        if (c == 0)
            return 1;
        if (c < 0)
            i++;
        else
            j++;
    }
    return 0;
}

/* Register W's batch (bs[0..nbs), sorted) as in flight, first waiting
 * until no other writer's batch in flight shares a stream with it. Called
 * with the queue's door held, so batches register in queue order. With
 * nbs == 0, wait until no batch at all is in flight (a multi-stream
 * append) and register nothing. */
static void fly_enter(pg_writer *W, const bstream *bs, size_t nbs)
{
    pg_backend *P = W->P;
    int me = fly_slot(W);
    pthread_mutex_lock(&P->fly_mu);
    for (;;) {
        int busy = 0;
        for (int k = 0; k < PG_WRITERS_MAX && !busy; k++)
            if (k != me && P->fly[k])
                busy = nbs == 0 || fly_overlap(bs, nbs, P->fly[k], P->fly_n[k]);
        if (!busy)
            break;
        pthread_cond_wait(&P->fly_cv, &P->fly_mu);
    }
    if (nbs) {
        P->fly[me] = bs;
        P->fly_n[me] = nbs;
    }
    pthread_mutex_unlock(&P->fly_mu);
}

/* W's batch has ended (committed, rolled back or lost). */
static void fly_leave(pg_writer *W)
{
    pg_backend *P = W->P;
    pthread_mutex_lock(&P->fly_mu);
    P->fly[fly_slot(W)] = NULL;
    P->fly_n[fly_slot(W)] = 0;
    pthread_cond_broadcast(&P->fly_cv);
    pthread_mutex_unlock(&P->fly_mu);
}

/*
 * Plan and commit reqs[0..n) in one transaction on W's connection, in three
 * round trips:
 *   0. register the batch's streams as in flight (fly_enter: waits for an
 *      earlier batch in flight with one of them to end), then unlock
 *      *door (when not NULL) and set it to NULL: another writer may take
 *      the next requests off the queue;
 *   1. (the missing stream rows, Sync,) BEGIN, read the stream rows, look
 *      up the client-given ids;
 *   2. after planning in C: take the feed row (the batch's first position)
 *      and read the view counters the batch may touch;
 *   3. the view counters, the stream rows (checked: 40001 if one changed
 *      since step 1), the events, COMMIT.
 * The feed row is held from the second round trip to COMMIT only, so the
 * first round trip and the planning of one batch overlap the insert and
 * COMMIT of the batch in flight on the other connection.
 * Returns 0 when every request has its outcome (rc in each); STELE_EBUSY
 * with *retry_alone set when the batch should be tried one request at a
 * time; another code when the whole batch failed (set in every request by
 * the caller).
 */
static int run_batch(pg_writer *W, pg_req **reqs, size_t n, int *retry_alone,
                     pthread_mutex_t **door)
{
    pg_backend *P = W->P;
    PGconn *c = W->conn;
    char state[6] = "";
    *retry_alone = 0;
    bstream *bs = calloc(n, sizeof *bs);
    idrow *ids = NULL;
    size_t nbs = 0, nids = 0;
    buf names = {0}, cats = {0}, idarr = {0}, skinds = {0}, skeys = {0};
    buf un = {0}, ulr = {0}, ulp = {0}, ufp = {0}, ux = {0};
    size_t nrows = 0;
    pg_num nrowsb;
    pgw_ins ins;
    memset(&ins, 0, sizeof ins);
    pstmt p1[5], p2[2], p3[8];
    memset(p1, 0, sizeof p1);
    memset(p2, 0, sizeof p2);
    memset(p3, 0, sizeof p3);
    size_t n1 = 0, n2 = 0, n3 = 0;
    int rc = bs ? 0 : err_set(STELE_ENOMEM, "out of memory");
    if (rc == 0)
        nbs = batch_streams(reqs, n, bs);
    /* In flight from here to the end of the transaction: a later batch
     * with one of these streams waits for it (queue order), so the door
     * can be left at once. */
    int flying = rc == 0 && nbs > 0;
    if (flying)
        fly_enter(W, bs, nbs);
    if (*door) {
        pthread_mutex_unlock(*door);
        *door = NULL;
    }
    /* The arrays of round trip 1. */
    int unknown = 0;
    size_t nclient = 0;
    if (rc == 0 && !(rc = pgw_arr_open(&names)) && !(rc = pgw_arr_open(&cats))) {
        pthread_mutex_lock(&P->known_mu);
        for (size_t i = 0; i < nbs && rc == 0; i++) {
            rc = pgw_arr_add(&names, bs[i].name, bs[i].len, i == 0);
            if (rc == 0 && !known_has(P, bs[i].name))
                rc = pgw_arr_add(&cats, bs[i].name, bs[i].len, unknown++ == 0);
        }
        pthread_mutex_unlock(&P->known_mu);
        if (rc == 0 && !(rc = pgw_arr_close(&names)))
            rc = pgw_arr_close(&cats);
    }
    if (rc == 0 && !(rc = pgw_arr_open(&idarr))) {
        for (size_t i = 0; i < n && rc == 0; i++)
            for (size_t k = 0; k < reqs[i]->a->n && rc == 0; k++)
                if (!reqs[i]->a->made[k]) {
                    char t[37];
                    pgw_uuid_text(reqs[i]->a->ids[k], t);
                    rc = pgw_arr_add(&idarr, t, 36, nclient++ == 0);
                }
        if (rc == 0)
            rc = pgw_arr_close(&idarr);
    }
    const char *v_cats[1] = {(const char *)cats.p}, *v_names[1] = {(const char *)names.p};
    const char *v_ids[1] = {(const char *)idarr.p};
    /* 0. Every stream has a row (the known ones are skipped): its own
     * transaction. The category: the name up to its first '-' (the whole
     * name when it has none or starts with one), as stream_category_len(). */
    if (unknown)
        p1[n1++] = (pstmt){.prep = 1 + PW_CREATE_ROWS, .n = 1, .vals = v_cats, .sync_after = 1,
                           .what = "creating stream rows"};
    p1[n1++] = (pstmt){.sql = "BEGIN", .what = "BEGIN"};
    int i_rows = (int)n1;
    p1[n1++] = (pstmt){.prep = 1 + PW_LOCK_ROWS, .n = 1, .vals = v_names, .binary = 1, .keep = 1,
                       .what = "reading streams"};
    /* Last: its rows carry the stored events of retries and may be big;
     * only the Sync is sent after it, so the server never waits for us to
     * read while we wait for it to read. */
    int i_ids = -1;
    if (nclient) {
        i_ids = (int)n1;
        p1[n1++] = (pstmt){.prep = 1 + PW_IDS, .n = 1, .vals = v_ids, .binary = 1, .keep = 1,
                           .what = "looking up event ids"};
    }
    if (rc == 0)
        rc = pipe_run(W, p1, n1, state);
    if (rc == 0 && (rc = take_rows(P, p1[i_rows].res, bs, nbs, state)) == 0 && i_ids >= 0)
        rc = pgw_ids_from(p1[i_ids].res, &ids, &nids);
    /* 3. Plan. */
    uint64_t nev = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        pg_req *q = reqs[i];
        q->res = append_result_none();
        q->accepted = 0;
        err_clear();
        if (plan(q, &bs[q->sidx], ids, nids))
            nev += q->a->n;
    }
    /* 4. The feed row (taken here, so that until now the other writer's
     * batch could commit) with the batch's first position, and the view
     * counters it may touch: one round trip (nobody else writes them
     * while this transaction holds the feed row). */
    pg_num nevb;
    const char *v_nev[1] = {pg_numtxt(&nevb, (int64_t)nev)};
    const char *v_seq[2];
    const char *v_rows[6];
    int committing = 0;
    if (rc == 0 && nev) {
        rc = pgw_seq_keys(reqs, n, bs, &skinds, &skeys);
        v_seq[0] = (const char *)skinds.p;
        v_seq[1] = (const char *)skeys.p;
        p2[n2++] = (pstmt){.prep = 1 + PW_FEED, .n = 1, .vals = v_nev, .binary = 1, .keep = 1,
                           .what = "taking positions"};
        p2[n2++] = (pstmt){.prep = 1 + PW_SEQ_READ, .n = 2, .vals = v_seq, .binary = 1,
                           .keep = 1, .what = "reading view counters"};
        if (rc == 0)
            rc = pipe_run(W, p2, n2, state);
        if (rc == 0 && PQntuples(p2[0].res) != 1)
            rc = err_set(STELE_EINTERNAL, "PostgreSQL: stele_feed has no row");
    }
    /* 5. Positions, rows, notification, commit: one round trip. */
    if (rc == 0 && nev) {
        uint64_t pos = pg_u64(p2[0].res, 0, 0);
        for (size_t i = 0; i < n; i++) {
            pg_req *q = reqs[i];
            if (!q->accepted || q->res.idempotent)
                continue;
            bstream *s = &bs[q->sidx];
            q->res.first_position = pos;
            q->res.last_position = pos + q->a->n - 1;
            if (s->first_new_pos == 0)
                s->first_new_pos = pos + 1; /* +1: 0 means unset */
            s->st.last_pos = q->res.last_position;
            pos += q->a->n;
        }
        assert(pos == pg_u64(p2[0].res, 0, 0) + nev);
        rc = pgw_ins_build(&ins, reqs, n, bs, p2[1].res, time_now_us());
        if (rc == 0)
            rc = changed_rows(bs, nbs, &un, &ulr, &ulp, &ufp, &ux, &nrows);
        v_rows[0] = (const char *)un.p;
        v_rows[1] = (const char *)ulr.p;
        v_rows[2] = (const char *)ulp.p;
        v_rows[3] = (const char *)ufp.p;
        v_rows[4] = (const char *)ux.p;
        v_rows[5] = pg_numtxt(&nrowsb, (int64_t)nrows);
        p3[n3++] = (pstmt){.prep = 1 + PW_SEQ_WRITE, .n = 3, .vals = ins.seq_vals,
                           .what = "numbering view events"};
        /* The stream rows before the events: a row changed since it was
         * read fails the batch (40001) before the insert does its work. */
        p3[n3++] = (pstmt){.prep = 1 + PW_STREAMS, .n = 6, .vals = v_rows, .what = "updating streams"};
        p3[n3++] = (pstmt){.prep = 1 + PW_INSERT, .n = PGW_EV_COLS + 1, .vals = ins.vals,
                           .lens = ins.lens, .fmts = ins.fmts, .what = "inserting events"};
    }
    /* The events' COMMIT does not wait for the WAL flush; the flusher's
     * synchronous transaction does, and only then are the appends
     * answered (the top of this file). */
    p3[n3++] = (pstmt){.sql = "SET LOCAL synchronous_commit = off",
                       .what = "committing without a flush"};
    p3[n3++] = (pstmt){.sql = "COMMIT", .what = "committing"};
    if (rc == 0) {
        committing = nev > 0;
        rc = pipe_run(W, p3, n3, state);
    }
    if (PQpipelineStatus(c) != PQ_PIPELINE_OFF) {
        /* Lost in the middle of a pipeline: the connection is unusable. */
        PQfinish(W->conn);
        W->conn = c = NULL;
    }
    if (c && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *x = PQexec(c, "ROLLBACK");
        PQclear(x);
    }
    if (flying)
        fly_leave(W);
    /* 26000: a named statement is gone (a pooler in front of PostgreSQL
     * ran DISCARD ALL): prepare them again, and retry. */
    if (rc && strcmp(state, "26000") == 0)
        W->prepared = 0;
    if (rc && (strcmp(state, "23505") == 0 || strcmp(state, "40P01") == 0 ||
               strcmp(state, "40001") == 0 || strcmp(state, "26000") == 0)) {
        *retry_alone = 1;
        if (n == 1 && strcmp(state, "23505") == 0) {
            char t[37] = "";
            pgw_uuid_text(reqs[0]->a->ids[0], t);
            rc = err_set(STELE_EIDCONFLICT,
                         "an event id of this append was written concurrently by another append "
                         "(first id %s)",
                         t);
            *retry_alone = 0;
        }
    } else if (rc == STELE_EIO && committing) {
        rc = err_set(STELE_EIO,
                     "%s; the connection was lost during COMMIT, so the append may or may not "
                     "have been written: retry it with the same event ids (retries are idempotent)",
                     stele_errmsg());
    } else if (rc == STELE_EIO) {
        rc = err_set(STELE_EIO, "%s; nothing was written: retry with the same event ids",
                     stele_errmsg());
    }
    if (rc == 0 && nev) {
        atomic_fetch_add(&P->groups, 1);
        atomic_fetch_add(&P->appends, n);
    }
    for (size_t i = 0; i < n1; i++)
        if (p1[i].res)
            PQclear(p1[i].res);
    for (size_t i = 0; i < n2; i++)
        if (p2[i].res)
            PQclear(p2[i].res);
    pgw_ins_free(&ins);
    buf_free(&skinds);
    buf_free(&skeys);
    free(bs);
    free(ids);
    buf_free(&names);
    buf_free(&cats);
    buf_free(&idarr);
    buf_free(&un);
    buf_free(&ulr);
    buf_free(&ulp);
    buf_free(&ufp);
    buf_free(&ux);
    return rc;
}

/* Ids of reqs[i] that an earlier request of the batch also carries. */
static int repeats_earlier(pg_req **reqs, size_t i)
{
    const append_args *a = reqs[i]->a;
    for (size_t k = 0; k < a->n; k++) {
        if (a->made[k])
            continue;
        for (size_t j = 0; j < i; j++) {
            const append_args *b = reqs[j]->a;
            for (size_t l = 0; l < b->n; l++)
                if (!b->made[l] && memcmp(a->ids[k], b->ids[l], 16) == 0)
                    return 1;
        }
    }
    return 0;
}

static void fail_all(pg_req **reqs, size_t n, int rc)
{
    for (size_t i = 0; i < n; i++) {
        reqs[i]->res = append_result_none();
        reqs[i]->rc = rc;
        snprintf(reqs[i]->msg, sizeof reqs[i]->msg, "%s", stele_errmsg());
        reqs[i]->accepted = 0;
    }
}

/* A writer's connection, remade when broken or older than the listener's
 * last reconnect (the database may have restarted). */
void pgw_writer_conn(pg_writer *W)
{
    if (W->conn &&
        (PQstatus(W->conn) != CONNECTION_OK || W->epoch != atomic_load(&W->P->epoch))) {
        PQfinish(W->conn);
        W->conn = NULL;
    }
    if (!W->conn) {
        W->epoch = atomic_load(&W->P->epoch);
        W->conn = pg_connect(W->P->uri);
        W->prepared = 0;
    }
}

/* ------------------------------------------------------------ the flusher */

/* Whether an outcome reports nothing a crash could lose (a failure of the
 * batch as a whole): answered without waiting for a durable commit. */
static int needs_no_flush(const pg_req *r)
{
    return r->rc == STELE_EIO || r->rc == STELE_EINTERNAL || r->rc == STELE_ENOMEM ||
           r->rc == STELE_ECLOSED;
}

/* Hand reqs[0..n) (their outcomes set) to the flusher, in order. */
static void to_flusher(pg_backend *P, pg_req **reqs, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (needs_no_flush(reqs[i]))
            req_done(reqs[i]);
        else
            reqs[k++] = reqs[i];
    }
    if (!k)
        return;
    pthread_mutex_lock(&P->fl_mu);
    for (size_t i = 0; i < k; i++) {
        reqs[i]->next = NULL;
        if (P->fl_tail)
            P->fl_tail->next = reqs[i];
        else
            P->fl_head = reqs[i];
        P->fl_tail = reqs[i];
    }
    pthread_cond_signal(&P->fl_cv);
    pthread_mutex_unlock(&P->fl_mu);
}

/* Whether the test hook's pause applies to the list `r`. */
static int pause_wanted_list(const pg_backend *P, const pg_req *r)
{
    size_t pl = strlen(P->pause_prefix);
    for (; r; r = r->next)
        if (r->kind == REQ_APPEND && r->a->stream_len >= pl &&
            memcmp(r->a->stream, P->pause_prefix, pl) == 0)
            return 1;
    return 0;
}

/*
 * The flusher thread: takes every request handed over so far, makes them
 * durable with one synchronous commit (PG_DURABLE_INSERT, NOTIFY) and
 * answers them in order. If that commit fails, the requests it should have
 * answered fail with EIO: their events are committed but may be lost by a
 * crash, so the outcome is unknown and a retry with the same ids is the
 * way to learn it.
 */
static void *flusher_main(void *arg)
{
    pg_backend *P = arg;
    pg_writer *F = &P->flusher;
    for (;;) {
        pthread_mutex_lock(&P->fl_mu);
        while (!P->fl_head && !P->fl_stopping)
            pthread_cond_wait(&P->fl_cv, &P->fl_mu);
        pg_req *list = P->fl_head;
        P->fl_head = P->fl_tail = NULL;
        pthread_mutex_unlock(&P->fl_mu);
        if (!list)
            break; /* stopping, and nothing left */
        if (P->pause_ms && pause_wanted_list(P, list)) {
            struct timespec ts = {P->pause_ms / 1000, (long)(P->pause_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        err_clear();
        pgw_writer_conn(F);
        int rc = F->conn ? pg_cmd(F->conn, PG_DURABLE_INSERT "; NOTIFY " PG_CHANNEL) : STELE_EIO;
        char msg[512] = "";
        if (rc)
            snprintf(msg, sizeof msg,
                     "%s; the append was committed but not yet made durable when this happened, "
                     "so it may or may not have been written: retry it with the same event ids "
                     "(retries are idempotent)",
                     stele_errmsg());
        while (list) {
            pg_req *r = list;
            list = r->next;
            if (rc) {
                r->rc = STELE_EIO;
                r->res = append_result_none();
                r->accepted = 0;
                snprintf(r->msg, sizeof r->msg, "%s", msg);
            }
            req_done(r);
        }
        if (rc == 0) {
            pg_bump(P);
            if (++P->prune_tick % PGW_PRUNE_EVERY == 0)
                prune_durable(F->conn);
        }
    }
    if (F->conn)
        PQfinish(F->conn);
    F->conn = NULL;
    return NULL;
}

/* The test hook STELE_PG_TEST_DISCARD (pg_int.h): every discard_every-th
 * batch, forget the prepared statements in PostgreSQL while W->prepared
 * still says they are there. Odd turns DISCARD ALL (every statement gone:
 * the batch meets 26000), even turns DEALLOCATE the row-locking statement
 * only (26000 for it, then 42P05 for the others when they are prepared
 * again). Outside any transaction: between batches. */
static void test_discard(pg_writer *W)
{
    pg_backend *P = W->P;
    if (!P->discard_every || !W->conn || !W->prepared)
        return;
    uint32_t t = atomic_fetch_add(&P->discard_tick, 1) + 1;
    if (t % (uint32_t)P->discard_every)
        return;
    char sql[48];
    if ((t / (uint32_t)P->discard_every) % 2) {
        snprintf(sql, sizeof sql, "DISCARD ALL");
    } else {
        char name[24];
        pw_name(PW_LOCK_ROWS, name);
        snprintf(sql, sizeof sql, "DEALLOCATE %s", name);
    }
    PGresult *r = PQexec(W->conn, sql);
    PQclear(r);
}

#define PGW_RETRIES_ALONE 32

/* Commit reqs[0..n) and answer them. *door, when not NULL, is the queue's
 * door this writer holds: unlocked (and set to NULL) as soon as the batch
 * holds its stream rows, or on failure. */
static void process(pg_writer *W, pg_req **reqs, size_t n, pthread_mutex_t **door)
{
    pgw_writer_conn(W);
    if (!W->conn) {
        if (*door) {
            pthread_mutex_unlock(*door);
            *door = NULL;
        }
        fail_all(reqs, n, STELE_EIO);
        to_flusher(W->P, reqs, n);
        return;
    }
    test_discard(W);
    int retry_alone = 0;
    int rc = run_batch(W, reqs, n, &retry_alone, door);
    assert(*door == NULL);
    if (rc && retry_alone && n > 1) {
        for (size_t i = 0; i < n; i++)
            process(W, &reqs[i], 1, door);
        return;
    }
    /* Alone: a stream row changed by another server between this
     * append's read and its UPDATE (40001), a deadlock, a discarded
     * statement: try again, reading the row anew. Each 40001 means some
     * other transaction changed the row, so the retries make progress;
     * the bound only stops a pathological loop. */
    for (int tries = 0; rc && retry_alone && tries < PGW_RETRIES_ALONE; tries++)
        rc = run_batch(W, reqs, n, &retry_alone, door);
    if (rc)
        fail_all(reqs, n, rc);
    to_flusher(W->P, reqs, n);
}

/*
 * A writer thread. Batches in flight: one per writer. Queue order per
 * stream holds across them because requests leave the queue only through
 * the door: a writer takes the door, takes the queued requests, and keeps
 * the door until its batch is registered as in flight. A later batch that
 * shares a stream therefore waits (fly_enter) for this batch's end before
 * it reads that row, and reads it as this batch left it. A multi-stream
 * append waits until no batch is in flight and runs with the door held
 * from start to end.
 */
static void *writer_main(void *arg)
{
    pg_writer *W = arg;
    pg_backend *P = W->P;
    pg_req **reqs = malloc(PG_BATCH_MAX * sizeof *reqs);
    for (;;) {
        pthread_mutex_t *door = &P->door;
        pthread_mutex_lock(door);
        pthread_mutex_lock(&P->q_mu);
        while (!P->q_head && !P->stopping)
            pthread_cond_wait(&P->q_cv, &P->q_mu);
        if (!P->q_head && P->stopping) {
            pthread_mutex_unlock(&P->q_mu);
            pthread_mutex_unlock(door);
            break;
        }
        if (P->q_head && P->q_head->kind == REQ_MULTI) {
            pg_req *one = P->q_head;
            P->q_head = one->next;
            if (!P->q_head)
                P->q_tail = NULL;
            pthread_mutex_unlock(&P->q_mu);
            fly_enter(W, NULL, 0); /* no batch in flight: queue order */
            pgw_process_multi(W, one);
            pthread_mutex_unlock(door);
            continue;
        }
        size_t n = 0;
        while (P->q_head && P->q_head->kind == REQ_APPEND && n < PG_BATCH_MAX && reqs) {
            reqs[n++] = P->q_head;
            P->q_head = P->q_head->next;
        }
        if (!P->q_head)
            P->q_tail = NULL;
        pthread_mutex_unlock(&P->q_mu);
        if (!reqs) {
            pthread_mutex_unlock(door);
            break;
        }
        /* Cut the batch before the first request repeating an earlier id. */
        size_t cut = n;
        for (size_t i = 1; i < n; i++)
            if (repeats_earlier(reqs, i)) {
                cut = i;
                break;
            }
        requeue(P, reqs + cut, n - cut);
        process(W, reqs, cut, &door);
        assert(door == NULL);
    }
    free(reqs);
    if (W->conn)
        PQfinish(W->conn);
    W->conn = NULL;
    return NULL;
}

/* How many writers: STELE_PG_WRITERS (1..PG_WRITERS_MAX) or PG_WRITERS. */
static int writers_wanted(void)
{
    const char *e = getenv("STELE_PG_WRITERS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == 0 && v >= 1 && v <= PG_WRITERS_MAX)
            return (int)v;
    }
    return PG_WRITERS;
}

int pg_writer_start(pg_backend *P)
{
    const char *hook = getenv("STELE_PG_TEST_PAUSE");
    const char *colon = hook ? strrchr(hook, ':') : NULL;
    if (colon && (size_t)(colon - hook) < sizeof P->pause_prefix) {
        snprintf(P->pause_prefix, sizeof P->pause_prefix, "%.*s", (int)(colon - hook), hook);
        P->pause_ms = atoi(colon + 1);
    }
    const char *disc = getenv("STELE_PG_TEST_DISCARD");
    P->discard_every = disc && atoi(disc) > 0 ? atoi(disc) : 0;
    pthread_mutex_init(&P->door, NULL);
    pthread_mutex_init(&P->fly_mu, NULL);
    pthread_cond_init(&P->fly_cv, NULL);
    pthread_mutex_init(&P->known_mu, NULL);
    pthread_mutex_init(&P->fl_mu, NULL);
    pthread_cond_init(&P->fl_cv, NULL);
    P->flusher.P = P;
    if (pthread_create(&P->flusher.thread, NULL, flusher_main, P))
        return err_set(STELE_ENOMEM, "cannot start the PostgreSQL flusher thread");
    P->flusher_on = 1;
    int want = writers_wanted();
    P->nwriters = 0;
    for (int i = 0; i < want; i++) {
        pg_writer *W = &P->writers[i];
        W->P = P;
        if (pthread_create(&W->thread, NULL, writer_main, W)) {
            pg_writer_stop(P);
            return err_set(STELE_ENOMEM, "cannot start the PostgreSQL writer threads");
        }
        P->nwriters++;
    }
    return 0;
}

void pg_writer_stop(pg_backend *P)
{
    pthread_mutex_lock(&P->q_mu);
    P->stopping = 1;
    pthread_cond_broadcast(&P->q_cv);
    pthread_mutex_unlock(&P->q_mu);
    for (int i = 0; i < P->nwriters; i++)
        pthread_join(P->writers[i].thread, NULL);
    P->nwriters = 0;
    /* Then the flusher, once it has answered everything handed to it. */
    if (P->flusher_on) {
        pthread_mutex_lock(&P->fl_mu);
        P->fl_stopping = 1;
        pthread_cond_broadcast(&P->fl_cv);
        pthread_mutex_unlock(&P->fl_mu);
        pthread_join(P->flusher.thread, NULL);
        P->flusher_on = 0;
    }
    pthread_mutex_lock(&P->known_mu);
    known_clear(P);
    pthread_mutex_unlock(&P->known_mu);
}

/* ------------------------------------------------------------ appends */

int pg_append_async(backend *b, const append_args *a, append_done_fn done, void *ctx)
{
    backend_assert_append(a);
    pg_backend *P = (pg_backend *)b;
    pg_req *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    r->kind = REQ_APPEND;
    r->a = a;
    r->done = done;
    r->ctx = ctx;
    int rc = pgw_enqueue(P, r);
    if (rc)
        free(r);
    return rc;
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished, rc;
    stele_append_result res;
    char msg[512];
} waiter;

static void wake(void *ctx, int rc, const stele_append_result *res, const char *msg)
{
    waiter *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->res = *res;
    snprintf(w->msg, sizeof w->msg, "%s", msg ? msg : "");
    w->finished = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int pg_append(backend *b, const append_args *a, stele_append_result *res)
{
    backend_assert_append(a);
    waiter w = {.finished = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = pg_append_async(b, a, wake, &w);
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.finished)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.rc;
        if (res)
            *res = w.res;
        if (rc)
            err_set(rc, "%s", w.msg);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}


#endif /* STELE_WITH_POSTGRES */
