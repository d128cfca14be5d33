/*
 * pg_multi.c - multi-stream appends on PostgreSQL (docs/consistency.md).
 */
#ifdef STELE_WITH_POSTGRES
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_write.h"
#include "util/util.h"

/* ------------------------------------------------------------ multi-stream */

/*
 * A multi-stream append is one transaction (docs/consistency.md; the
 * rules are local_multi.c's): stream rows made and locked in name order,
 * tombstoned writes refused, the idempotent-retry check on the ids,
 * every stream's expectation, then the positions taken (stele_feed's row
 * lock: from here on no other commit of events can happen until ours ends),
 * and only then the DCB condition, so it sees every event committed
 * before ours and none can slip in between the check and the commit.
 * The transaction commits synchronously and records the durable position
 * before its COMMIT (pg.c, "Durability"); a refusal is answered after
 * pg_durable_settle() made what it saw durable.
 */

typedef struct mst {
    char name[256];
    size_t len;
    pg_stream st;
    uint64_t next_rev;
} mst;

static int m_expectation(const multi_args *m, const mst *ms, size_t i, stele_append_result *ps,
                         stele_multi_result *res, int *first)
{
    const multi_stream_args *s = &m->streams[i];
    const pg_stream *st = &ms[i].st;
    int tomb = st->tombstoned;
    int softdel = !tomb && st->deleted;
    int exists = st->exists && !tomb && !softdel && st->last_rev != STELE_NONE;
    uint64_t cur = st->last_rev;
    int64_t e = s->expected;
    expect_stream es = {tomb, softdel, exists, cur};
    int rc = expect_multi_check(e, &es, s->nevents != 0);
    if (!rc)
        return 0;
    ps[i].failed = rc;
    ps[i].current_revision = cur;
    if (*first)
        return rc;
    *first = rc;
    res->failed_stream = i;
    res->current_revision = cur;
    return expect_multi_fail(rc, i, s->stream, s->len, e, &es);
}

static int m_expectations(const multi_args *m, const mst *ms, stele_append_result *ps,
                          stele_multi_result *res, int tomb_writes)
{
    int first = 0;
    for (size_t i = 0; i < m->nstreams; i++) {
        if (tomb_writes && !(m->streams[i].nevents && ms[i].st.tombstoned))
            continue;
        m_expectation(m, ms, i, ps, res, &first);
    }
    return first;
}

static int m_conflict(const multi_args *m, size_t k, const char *why)
{
    char t[37];
    stele_uuid_format(m->ids[k], t);
    return err_set(STELE_EIDCONFLICT, "event %zu: id %s was already written%s", k, t, why);
}

/* 1 settled as a retry (results filled), 0 not a retry, < 0 an error. */
static int m_retry(PGconn *c, const multi_args *m, mst *ms, stele_append_result *ps,
                   stele_multi_result *res)
{
    size_t k0 = 0;
    while (k0 < m->nrecords && m->made[k0])
        k0++;
    if (k0 == m->nrecords)
        return 0;
    buf arr = {0};
    int rc = pgw_arr_open(&arr);
    size_t cnt = 0;
    for (size_t k = 0; k < m->nrecords && rc == 0; k++)
        if (!m->made[k]) {
            char t[37];
            pgw_uuid_text(m->ids[k], t);
            rc = pgw_arr_add(&arr, t, 36, cnt++ == 0);
        }
    if (rc == 0)
        rc = pgw_arr_close(&arr);
    PGresult *keep = NULL;
    idrow *ids = NULL;
    size_t nids = 0;
    char state[6] = "";
    if (rc == 0)
        rc = pgw_lookup_ids(c, (const char *)arr.p, &ids, &nids, &keep, state);
    buf_free(&arr);
    if (rc)
        return rc;
    const idrow *f0 = pgw_find_id(ids, nids, m->ids[k0]);
    int out = 0;
    if (!f0) {
        for (size_t k = k0 + 1; k < m->nrecords && !out; k++) {
            const idrow *f = m->made[k] ? NULL : pgw_find_id(ids, nids, m->ids[k]);
            if (f) {
                char why[64];
                snprintf(why, sizeof why, " (position %llu)", (unsigned long long)f->pos);
                out = m_conflict(m, k, why);
            }
        }
        free(ids);
        PQclear(keep);
        return out;
    }
    if (k0 != 0) {
        free(ids);
        PQclear(keep);
        return m_conflict(m, k0, ", but not by an append that this one repeats (every event of "
                                 "a retry carries its id)");
    }
    uint64_t pos0 = f0->pos;
    if (f0->ci != 0 || (size_t)f0->cc != m->nrecords) {
        free(ids);
        PQclear(keep);
        return m_conflict(m, 0, ", by an append that this one does not repeat exactly");
    }
    for (size_t i = 0; i < m->nstreams; i++)
        ms[i].next_rev = STELE_NONE;
    for (size_t k = 0; k < m->nrecords; k++) {
        size_t s = m->records[k].stream;
        const idrow *f = m->made[k] ? NULL : pgw_find_id(ids, nids, m->ids[k]);
        if (!f || strcmp(f->stream, ms[s].name) != 0 || f->pos != pos0 + k ||
            (ms[s].next_rev != STELE_NONE && f->rev != ms[s].next_rev)) {
            for (size_t i = 0; i < m->nstreams; i++)
                ps[i] = append_result_none();
            free(ids);
            PQclear(keep);
            return m_conflict(m, 0, ", by an append that this one does not repeat exactly");
        }
        if (ms[s].next_rev == STELE_NONE) {
            ps[s].first_revision = f->rev;
            ps[s].first_position = f->pos;
        }
        const char *part = pgw_retry_diff(f, &m->records[k].event);
        if (part) {
            for (size_t i = 0; i < m->nstreams; i++)
                ps[i] = append_result_none();
            int crc = pgw_retry_conflict(m->ids[k], f->stream, f->rev, part);
            free(ids);
            PQclear(keep);
            return crc;
        }
        ps[s].last_revision = f->rev;
        ps[s].last_position = f->pos;
        ps[s].idempotent = 1;
        ms[s].next_rev = f->rev + 1;
    }
    free(ids);
    PQclear(keep);
    res->first_position = pos0;
    res->last_position = pos0 + m->nrecords - 1;
    res->idempotent = 1;
    return 1;
}


static int multi_run(pg_backend *P, PGconn *c, const multi_args *m, stele_append_result *ps,
                     stele_multi_result *res)
{
    mst *ms = calloc(m->nstreams, sizeof *ms);
    bstream *bs = calloc(m->nstreams, sizeof *bs);
    pg_req *fr = calloc(m->nrecords ? m->nrecords : 1, sizeof *fr);
    append_args *fa = calloc(m->nrecords ? m->nrecords : 1, sizeof *fa);
    pg_req **frp = calloc(m->nrecords ? m->nrecords : 1, sizeof *frp);
    buf names = {0}, cats = {0};
    int rc = (!ms || !bs || !fr || !fa || !frp) ? err_set(STELE_ENOMEM, "out of memory") : 0;
    int tx = 0;
    char state[6] = "";
    for (size_t i = 0; rc == 0 && i < m->nstreams; i++) {
        snprintf(ms[i].name, sizeof ms[i].name, "%.*s", (int)m->streams[i].len,
                 m->streams[i].stream);
        ms[i].len = m->streams[i].len;
        snprintf(bs[i].name, sizeof bs[i].name, "%s", ms[i].name);
        bs[i].len = ms[i].len;
    }
    if (rc == 0)
        qsort(bs, m->nstreams, sizeof *bs, pgw_bs_cmp);
    if (rc == 0 && !(rc = pgw_arr_open(&names)) && !(rc = pgw_arr_open(&cats))) {
        for (size_t i = 0; i < m->nstreams && rc == 0; i++) {
            rc = pgw_arr_add(&names, bs[i].name, bs[i].len, i == 0);
            if (rc == 0)
                rc = pgw_arr_add(&cats, bs[i].name, stream_category_len(bs[i].name, bs[i].len),
                             i == 0);
        }
        if (rc == 0 && !(rc = pgw_arr_close(&names)))
            rc = pgw_arr_close(&cats);
    }
    const char *nv[2] = {(const char *)names.p, (const char *)cats.p};
    if (rc == 0)
        rc = pgw_wexec(c,
                   "INSERT INTO streams (stream_id, stream_type) SELECT n, t FROM "
                   "unnest($1::text[], $2::text[]) AS u(n, t) ORDER BY n ON CONFLICT DO NOTHING",
                   2, nv, NULL, NULL, 0, NULL, "creating stream rows", state);
    if (rc == 0 && (rc = pg_cmd(c, "BEGIN")) == 0)
        tx = 1;
    /* The feed row before the stream rows (pg.c, "Lock order"): append
     * batches update their stream rows while they hold it. */
    if (rc == 0)
        rc = pgw_wexec(c, "SELECT 1 FROM stele_feed FOR UPDATE", 0, NULL, NULL, NULL, 0, NULL,
                       "locking the feed", state);
    PGresult *r = NULL;
    if (rc == 0)
        rc = pgw_wexec(c,
                   "SELECT stream_id, " PG_STREAM_COLS " FROM streams WHERE stream_id = "
                   "ANY($1::text[]) ORDER BY stream_id FOR UPDATE",
                   1, nv, NULL, NULL, 1, &r, "locking streams", state);
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        char nm[256];
        snprintf(nm, sizeof nm, "%.*s", PQgetlength(r, i, 0), PQgetvalue(r, i, 0));
        for (size_t j = 0; j < m->nstreams; j++)
            if (strcmp(ms[j].name, nm) == 0)
                pg_stream_from(r, i, 1, &ms[j].st);
    }
    if (r)
        PQclear(r);
    r = NULL;
    int settled = 0;
    if (rc == 0)
        rc = m_expectations(m, ms, ps, res, 1);
    if (rc == 0) {
        int k = m_retry(c, m, ms, ps, res);
        if (k < 0)
            rc = k;
        else
            settled = k;
    }
    if (rc == 0 && !settled)
        rc = m_expectations(m, ms, ps, res, 0);
    uint64_t pos0 = 0;
    if (rc == 0 && !settled && m->nrecords) {
        pg_num nb;
        const char *v[1] = {pg_numtxt(&nb, (int64_t)m->nrecords)};
        rc = pgw_wexec(c,
                   "UPDATE stele_feed SET next_position = next_position + $1::bigint "
                   "RETURNING next_position - $1::bigint",
                   1, v, NULL, NULL, 1, &r, "taking positions", state);
        if (rc == 0)
            pos0 = pg_u64(r, 0, 0);
        if (r)
            PQclear(r);
        r = NULL;
    } else if (rc == 0 && !settled && m->cond) {
        /* No events but a condition: still serialise with every commit. */
        rc = pgw_wexec(c, "SELECT next_position FROM stele_feed FOR UPDATE", 0, NULL, NULL, NULL, 1,
                   NULL, "locking the feed", state);
    }
    if (rc == 0 && !settled && m->cond) {
        char *sql = malloc(65536);
        const char *vals[PG_DCB_PARAMS + 1];
        char *owned[PG_DCB_PARAMS] = {0};
        int np = 0;
        rc = sql ? 0 : err_set(STELE_ENOMEM, "out of memory");
        if (rc == 0) {
            snprintf(sql, 65536, "SELECT e.global_position FROM events e WHERE ");
            rc = pg_dcb_sql(m->cond, sql, 65536, &np, vals, owned);
        }
        pg_num ab;
        if (rc == 0) {
            size_t used = strlen(sql);
            snprintf(sql + used, 65536 - used,
                     " AND e.global_position > $%d::bigint ORDER BY e.global_position LIMIT 1",
                     np + 1);
            vals[np] = pg_numtxt(&ab, m->cond->after == STELE_NONE ? -1 : (int64_t)m->cond->after);
            rc = pgw_wexec(c, sql, np + 1, vals, NULL, NULL, 1, &r, "checking the condition", state);
        }
        if (rc == 0 && PQntuples(r)) {
            uint64_t at = pg_u64(r, 0, 0);
            char ab2[32];
            res->condition_position = at;
            snprintf(ab2, sizeof ab2, "%llu", (unsigned long long)m->cond->after);
            rc = err_set(STELE_ECONDITION,
                         "append condition failed: the event at position %llu matches the "
                         "condition's query (after %s)",
                         (unsigned long long)at, m->cond->after == STELE_NONE ? "none" : ab2);
        }
        if (r)
            PQclear(r);
        r = NULL;
        for (int i = 0; i < np; i++)
            free(owned[i]);
        free(sql);
    }
    for (size_t i = 0; rc == 0 && !settled && i < m->nstreams; i++) {
        const pg_stream *st = &ms[i].st;
        int has = m->streams[i].nevents ||
                  (st->exists && !st->deleted && !st->tombstoned && st->last_rev != STELE_NONE);
        if (m->streams[i].state && !has) {
            res->failed_stream = i;
            rc = err_set(STELE_ENOTFOUND,
                         "stream %zu '%.*s': a state needs events to be the fold of, and the "
                         "stream has none and gets none in this append",
                         i, (int)m->streams[i].len, m->streams[i].stream);
        }
    }
    if (rc == 0 && !settled) {
        for (size_t i = 0; i < m->nstreams; i++)
            ms[i].next_rev = ms[i].st.last_rev == STELE_NONE ? 0 : ms[i].st.last_rev + 1;
        for (size_t k = 0; k < m->nrecords; k++) {
            size_t i = m->records[k].stream;
            uint64_t rev = ms[i].next_rev++;
            if (ps[i].first_revision == STELE_NONE) {
                ps[i].first_revision = rev;
                ps[i].first_position = pos0 + k;
            }
            ps[i].last_revision = rev;
            ps[i].last_position = pos0 + k;
            /* One synthetic one-event append per record, for insert_events. */
            fa[k].stream = ms[i].name;
            fa[k].stream_len = ms[i].len;
            fa[k].events = &m->records[k].event;
            fa[k].n = 1;
            fa[k].ids = &m->ids[k];
            fa[k].made = &m->made[k];
            fr[k].a = &fa[k];
            fr[k].accepted = 1;
            fr[k].res.first_revision = rev;
            fr[k].res.first_position = pos0 + k;
            fr[k].ci0 = k;
            fr[k].cc = m->nrecords;
            for (size_t j = 0; j < m->nstreams; j++)
                if (strcmp(bs[j].name, ms[i].name) == 0)
                    fr[k].sidx = (int)j;
            frp[k] = &fr[k];
        }
        if (m->nrecords) {
            res->first_position = pos0;
            res->last_position = pos0 + m->nrecords - 1;
            rc = pgw_insert_events(c, frp, m->nrecords, bs, time_now_us(), state);
        }
        for (size_t i = 0; rc == 0 && i < m->nstreams; i++) {
            if (!m->streams[i].nevents)
                continue;
            pg_num a1, a2, a3;
            const char *v[4] = {ms[i].name, pg_numtxt(&a1, (int64_t)ps[i].last_revision),
                                pg_numtxt(&a2, (int64_t)ps[i].last_position),
                                pg_numtxt(&a3, (int64_t)ps[i].first_position)};
            rc = pgw_wexec(c,
                       "UPDATE streams SET last_revision = $2, last_position = $3, "
                       "first_position = COALESCE(first_position, $4), deleted = false WHERE "
                       "stream_id = $1",
                       4, v, NULL, NULL, 0, NULL, "updating streams", state);
        }
        for (size_t i = 0; rc == 0 && i < m->nstreams; i++) {
            const stele_snapshot_in *s = m->streams[i].state;
            if (!s)
                continue;
            uint64_t at = m->streams[i].nevents ? ps[i].last_revision : ms[i].st.last_rev;
            pg_num b1, b2, b3, b4;
            const char *v[6] = {ms[i].name,
                                pg_numtxt(&b1, (int64_t)at),
                                pg_numtxt(&b2, s->schema_version),
                                pg_numtxt(&b3, s->flags & STELE_EVENT_JSON),
                                s->state_len ? (const char *)s->state : "",
                                pg_numtxt(&b4, time_now_us())};
            int lens[6] = {0, 0, 0, 0, (int)s->state_len, 0};
            int fmts[6] = {0, 0, 0, 0, 1, 0};
            rc = pgw_wexec(c,
                       "INSERT INTO snapshots (stream_id, revision, schema_version, flags, "
                       "state, created_us) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT "
                       "(stream_id, revision) DO UPDATE SET schema_version = "
                       "EXCLUDED.schema_version, flags = EXCLUDED.flags, state = EXCLUDED.state, "
                       "created_us = EXCLUDED.created_us",
                       6, v, lens, fmts, 0, NULL, "saving a state", state);
            if (rc == 0)
                rc = pgw_trim_snapshots(c, ms[i].name, ms[i].st.max_snapshots);
        }
        if (rc == 0 && m->nrecords)
            rc = pgw_wexec(c, "NOTIFY " PG_CHANNEL, 0, NULL, NULL, NULL, 0, NULL, "notifying", state);
    }
    int committing = 0;
    /* The durable position moves past this transaction's events (and every
     * commit it saw: a retry's original, the events its condition read) in
     * this synchronous transaction itself (pg.c, "Durability"). */
    if (tx && rc == 0)
        rc = pgw_wexec(c, PG_DURABLE_INSERT, 0, NULL, NULL, NULL, 0, NULL,
                       "recording the durable position", state);
    if (tx && rc == 0) {
        committing = 1;
        rc = pgw_wexec(c, "COMMIT", 0, NULL, NULL, NULL, 0, NULL, "committing", state);
        tx = 0;
    }
    if (tx && PQstatus(c) == CONNECTION_OK) {
        PGresult *x = PQexec(c, "ROLLBACK");
        PQclear(x);
    }
    if (rc && strcmp(state, "23505") == 0)
        rc = err_set(STELE_EIDCONFLICT,
                     "an event id of this append was written concurrently by another append");
    else if (rc == STELE_EIO && committing)
        rc = err_set(STELE_EIO,
                     "%s; the connection was lost during COMMIT, so the append may or may not "
                     "have been written: retry it with the same event ids",
                     stele_errmsg());
    /* A refusal (expectation, condition, conflict) reports what the rolled
     * back transaction saw: made durable before it is answered. */
    rc = pg_durable_settle(c, rc);
    if (rc == 0 && !settled && m->nrecords) {
        atomic_fetch_add(&P->appends, 1);
        atomic_fetch_add(&P->groups, 1);
        pg_bump(P);
    }
    if (rc && rc != STELE_EWRONGREV && rc != STELE_EDELETED) {
        for (size_t i = 0; i < m->nstreams; i++)
            ps[i] = append_result_none();
        if (rc != STELE_ECONDITION && rc != STELE_ENOTFOUND) {
            res->first_position = res->last_position = STELE_NONE;
            res->idempotent = 0;
        }
    }
    if (rc == STELE_EWRONGREV || rc == STELE_EDELETED) {
        for (size_t i = 0; i < m->nstreams; i++) {
            ps[i].first_revision = ps[i].last_revision = STELE_NONE;
            ps[i].first_position = ps[i].last_position = STELE_NONE;
        }
    }
    if (rc)
        res->idempotent = 0;
    free(ms);
    free(bs);
    free(fr);
    free(fa);
    free(frp);
    buf_free(&names);
    buf_free(&cats);
    return rc;
}

int pg_append_multi(backend *b, const multi_args *m, stele_append_result *per_stream,
                    stele_multi_result *res)
{
    backend_assert_multi(m);
    pg_backend *P = (pg_backend *)b;
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    int rc = multi_run(P, c, m, per_stream, res);
    pg_conn_put(P, c);
    return rc;
}

int pg_append_multi_async(backend *b, const multi_args *m, stele_append_result *per_stream,
                          const stele_multi_result *init, stele_append_multi_cb done, void *ctx,
                          size_t nstreams)
{
    backend_assert_multi(m);
    pg_backend *P = (pg_backend *)b;
    pg_req *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    r->kind = REQ_MULTI;
    r->m = m;
    r->ps = per_stream;
    r->mres = *init;
    r->mdone = done;
    r->ctx = ctx;
    r->nstreams = nstreams;
    int rc = pgw_enqueue(P, r);
    if (rc)
        free(r);
    return rc;
}

/* On a writer thread: one queued multi-stream append. */
void pgw_process_multi(pg_writer *W, pg_req *r)
{
    pgw_writer_conn(W);
    err_clear();
    int rc = W->conn ? multi_run(W->P, W->conn, r->m, r->ps, &r->mres) : STELE_EIO;
    r->mdone(r->ctx, rc, r->ps, r->nstreams, &r->mres, rc ? stele_errmsg() : "");
    free(r);
}

#endif /* STELE_WITH_POSTGRES */
