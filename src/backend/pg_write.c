/*
 * pg_write.c - writes of the PostgreSQL backend: group commit of appends
 * on one writer thread per server, and deletes, metadata and snapshots in
 * the caller's thread. pg.c describes the schema and the lock order.
 *
 * Group commit. Callers queue appends; the writer takes every queued one
 * (up to PG_BATCH_MAX) and commits them in one transaction:
 *   0. makes sure every stream of the batch has a row (an INSERT ... ON
 *      CONFLICT DO NOTHING in its own short transaction, names sorted: a
 *      row with nothing in it counts as "never written");
 *   1. BEGIN; locks the batch's stream rows in name order (FOR UPDATE):
 *      no other server can change them until COMMIT;
 *   2. looks up the batch's client-given event ids (the unique index on
 *      event_id is what makes them unique across servers);
 *   3. plans each append in queue order in C, on the locked rows as the
 *      appends before it in the batch left them: tombstone, idempotent
 *      retry, expected revision (the same rules as the local engine). An
 *      append that fails a check is simply left out: the others go on;
 *   4. takes the positions of every accepted event at once by updating the
 *      stele_feed row (this serialises commits: see pg.c), inserts the
 *      events in one statement, updates the stream rows, NOTIFYs;
 *   5. COMMIT, then answers every append of the batch.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_write.h"
#include "util/util.h"

/* ------------------------------------------------------------ text arrays */

/* Append `s` (len bytes) to a PostgreSQL array literal being built in b,
 * quoted and escaped; `first` says whether it is the first element. */
int pgw_arr_add(buf *b, const char *s, size_t len, int first)
{
    int rc = first ? 0 : buf_append(b, ",", 1);
    if (rc == 0)
        rc = buf_append(b, "\"", 1);
    for (size_t i = 0; i < len && rc == 0; i++) {
        if (s[i] == '"' || s[i] == '\\')
            rc = buf_append(b, "\\", 1);
        if (rc == 0)
            rc = buf_append(b, &s[i], 1);
    }
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

/* Plan and commit reqs[0..n) in one transaction. Returns 0 when every
 * request has its outcome (rc in each); STELE_EBUSY with *retry_alone set
 * when the batch should be tried one request at a time; another code when
 * the whole batch failed (set in every request by the caller). */
static int run_batch(pg_backend *P, pg_req **reqs, size_t n, int *retry_alone)
{
    PGconn *c = P->wconn;
    char state[6] = "";
    *retry_alone = 0;
    bstream *bs = calloc(n, sizeof *bs);
    idrow *ids = NULL;
    size_t nbs = 0, nids = 0;
    buf names = {0}, cats = {0}, idarr = {0};
    PGresult *r = NULL, *idres = NULL;
    int rc = bs ? 0 : err_set(STELE_ENOMEM, "out of memory");
    int in_tx = 0;
    /* Distinct stream names, sorted. */
    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(bs[nbs].name, sizeof bs[nbs].name, "%.*s", (int)reqs[i]->a->stream_len,
                 reqs[i]->a->stream);
        bs[nbs].len = reqs[i]->a->stream_len;
        nbs++;
    }
    if (rc == 0) {
        qsort(bs, nbs, sizeof *bs, pgw_bs_cmp);
        size_t u = 0;
        for (size_t i = 0; i < nbs; i++)
            if (u == 0 || strcmp(bs[u - 1].name, bs[i].name) != 0)
                bs[u++] = bs[i];
        nbs = u;
        for (size_t i = 0; i < n; i++) {
            char nm[256];
            snprintf(nm, sizeof nm, "%.*s", (int)reqs[i]->a->stream_len, reqs[i]->a->stream);
            reqs[i]->sidx = find_stream(bs, nbs, nm);
        }
    }
    /* 0. Every stream has a row (the known ones are skipped). */
    int unknown = 0;
    if (rc == 0 && !(rc = pgw_arr_open(&names)) && !(rc = pgw_arr_open(&cats))) {
        for (size_t i = 0; i < nbs && rc == 0; i++) {
            rc = pgw_arr_add(&names, bs[i].name, bs[i].len, i == 0);
            if (rc == 0 && !known_has(P, bs[i].name))
                rc = pgw_arr_add(&cats, bs[i].name, bs[i].len, unknown++ == 0);
        }
        if (rc == 0 && !(rc = pgw_arr_close(&names)) && !(rc = pgw_arr_close(&cats)) &&
            unknown) {
            /* The category: the name up to its first '-' (the whole name when
             * it has none or starts with one), as stream_category_len(). */
            const char *v[1] = {(const char *)cats.p};
            rc = pgw_wexec(c,
                           "INSERT INTO streams (stream_id, stream_type) SELECT n, CASE WHEN "
                           "strpos(n, '-') > 1 THEN substr(n, 1, strpos(n, '-') - 1) ELSE n END "
                           "FROM unnest($1::text[]) AS u(n) ORDER BY u.n ON CONFLICT DO NOTHING",
                           1, v, NULL, NULL, 0, NULL, "creating stream rows", state);
        }
    }
    /* 1. Lock the rows. */
    if (rc == 0 && (rc = pg_cmd(c, "BEGIN")) == 0)
        in_tx = 1;
    if (rc == 0) {
        const char *v[1] = {(const char *)names.p};
        rc = pgw_wexec(c,
                   "SELECT stream_id, " PG_STREAM_COLS " FROM streams WHERE stream_id = "
                   "ANY($1::text[]) ORDER BY stream_id FOR UPDATE",
                   1, v, NULL, NULL, 1, &r, "locking streams", state);
        for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
            char nm[256];
            snprintf(nm, sizeof nm, "%.*s", PQgetlength(r, i, 0), PQgetvalue(r, i, 0));
            int j = find_stream(bs, nbs, nm);
            if (j >= 0) {
                pg_stream_from(r, i, 1, &bs[j].st);
                bs[j].found = 1;
            }
        }
        /* A row missing (the cache was wrong): start again without it. */
        for (size_t i = 0; rc == 0 && i < nbs; i++)
            if (!bs[i].found) {
                known_clear(P);
                snprintf(state, 6, "40001");
                rc = err_set(STELE_EINTERNAL, "stream '%s' has no row", bs[i].name);
            }
        for (size_t i = 0; rc == 0 && i < nbs; i++)
            known_add(P, bs[i].name);
        if (r)
            PQclear(r);
        r = NULL;
    }
    /* 2. Client-given ids already written. */
    size_t nclient = 0;
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
    if (rc == 0 && nclient)
        rc = pgw_lookup_ids(c, (const char *)idarr.p, &ids, &nids, &idres, state);
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
    /* 4. Positions, rows, notification. */
    if (rc == 0 && nev) {
        pg_num nb;
        const char *v[1] = {pg_numtxt(&nb, (int64_t)nev)};
        rc = pgw_wexec(c,
                   "UPDATE stele_feed SET next_position = next_position + $1::bigint "
                   "RETURNING next_position - $1::bigint",
                   1, v, NULL, NULL, 1, &r, "taking positions", state);
        uint64_t pos = rc == 0 ? pg_u64(r, 0, 0) : 0;
        if (r)
            PQclear(r);
        r = NULL;
        for (size_t i = 0; i < n && rc == 0; i++) {
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
        if (rc == 0)
            rc = pgw_insert_events(c, reqs, n, bs, time_now_us(), state);
        /* The changed stream rows. */
        buf un = {0}, ulr = {0}, ulp = {0}, ufp = {0};
        int first = 1;
        if (rc == 0 && !(rc = pgw_arr_open(&un)) && !(rc = pgw_arr_open(&ulr)) && !(rc = pgw_arr_open(&ulp)) &&
            !(rc = pgw_arr_open(&ufp))) {
            for (size_t i = 0; i < nbs && rc == 0; i++) {
                if (!bs[i].changed || !bs[i].first_new_pos)
                    continue;
                pg_num a1, a2, a3;
                const char *lr = pg_numtxt(&a1, (int64_t)bs[i].st.last_rev);
                const char *lp = pg_numtxt(&a2, (int64_t)bs[i].st.last_pos);
                const char *fp = pg_numtxt(&a3, (int64_t)bs[i].first_new_pos - 1);
                if (!(rc = pgw_arr_add(&un, bs[i].name, bs[i].len, first)) &&
                    !(rc = pgw_arr_add(&ulr, lr, strlen(lr), first)) &&
                    !(rc = pgw_arr_add(&ulp, lp, strlen(lp), first)))
                    rc = pgw_arr_add(&ufp, fp, strlen(fp), first);
                first = 0;
            }
            if (rc == 0 && !(rc = pgw_arr_close(&un)) && !(rc = pgw_arr_close(&ulr)) &&
                !(rc = pgw_arr_close(&ulp)) && !(rc = pgw_arr_close(&ufp))) {
                const char *v4[4] = {(const char *)un.p, (const char *)ulr.p,
                                     (const char *)ulp.p, (const char *)ufp.p};
                rc = pgw_wexec(c,
                           "UPDATE streams AS s SET last_revision = u.lr, last_position = u.lp, "
                           "first_position = COALESCE(s.first_position, u.fp), deleted = false "
                           "FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) "
                           "AS u(n, lr, lp, fp) WHERE s.stream_id = u.n",
                           4, v4, NULL, NULL, 0, NULL, "updating streams", state);
            }
        }
        buf_free(&un);
        buf_free(&ulr);
        buf_free(&ulp);
        buf_free(&ufp);
        if (rc == 0)
            rc = pgw_wexec(c, "NOTIFY " PG_CHANNEL, 0, NULL, NULL, NULL, 0, NULL, "notifying", state);
    }
    /* 5. Commit. */
    int committing = 0;
    if (rc == 0) {
        committing = 1;
        rc = pgw_wexec(c, "COMMIT", 0, NULL, NULL, NULL, 0, NULL, "committing", state);
        in_tx = 0;
    }
    if (rc && in_tx && PQstatus(c) == CONNECTION_OK) {
        PGresult *x = PQexec(c, "ROLLBACK");
        PQclear(x);
    }
    if (rc && (strcmp(state, "23505") == 0 || strcmp(state, "40P01") == 0 ||
               strcmp(state, "40001") == 0)) {
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
        pg_bump(P);
    }
    free(bs);
    free(ids);
    if (idres)
        PQclear(idres);
    buf_free(&names);
    buf_free(&cats);
    buf_free(&idarr);
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

/* The writer's connection, remade when broken or older than the
 * listener's last reconnect (the database may have restarted). */
void pgw_writer_conn(pg_backend *P)
{
    if (P->wconn && (PQstatus(P->wconn) != CONNECTION_OK ||
                     P->wconn_epoch != atomic_load(&P->epoch))) {
        PQfinish(P->wconn);
        P->wconn = NULL;
    }
    if (!P->wconn) {
        P->wconn_epoch = atomic_load(&P->epoch);
        P->wconn = pg_connect(P->uri);
    }
}

static void process(pg_backend *P, pg_req **reqs, size_t n)
{
    pgw_writer_conn(P);
    if (!P->wconn) {
        fail_all(reqs, n, STELE_EIO);
        for (size_t i = 0; i < n; i++)
            req_done(reqs[i]);
        return;
    }
    int retry_alone = 0;
    int rc = run_batch(P, reqs, n, &retry_alone);
    if (rc && retry_alone && n > 1) {
        for (size_t i = 0; i < n; i++)
            process(P, &reqs[i], 1);
        return;
    }
    if (rc && retry_alone) {
        /* A deadlock or serialization failure alone: try once more. */
        rc = run_batch(P, reqs, n, &retry_alone);
    }
    if (rc)
        fail_all(reqs, n, rc);
    for (size_t i = 0; i < n; i++)
        req_done(reqs[i]);
}

static void *writer_main(void *arg)
{
    pg_backend *P = arg;
    pg_req **reqs = malloc(PG_BATCH_MAX * sizeof *reqs);
    for (;;) {
        pthread_mutex_lock(&P->q_mu);
        while (!P->q_head && !P->stopping)
            pthread_cond_wait(&P->q_cv, &P->q_mu);
        if (!P->q_head && P->stopping) {
            pthread_mutex_unlock(&P->q_mu);
            break;
        }
        if (P->q_head && P->q_head->kind == REQ_MULTI) {
            pg_req *one = P->q_head;
            P->q_head = one->next;
            if (!P->q_head)
                P->q_tail = NULL;
            pthread_mutex_unlock(&P->q_mu);
            pgw_process_multi(P, one);
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
        if (!reqs)
            break;
        /* Cut the batch before the first request repeating an earlier id. */
        size_t cut = n;
        for (size_t i = 1; i < n; i++)
            if (repeats_earlier(reqs, i)) {
                cut = i;
                break;
            }
        requeue(P, reqs + cut, n - cut);
        process(P, reqs, cut);
    }
    free(reqs);
    known_clear(P);
    if (P->wconn)
        PQfinish(P->wconn);
    P->wconn = NULL;
    return NULL;
}

int pg_writer_start(pg_backend *P)
{
    if (pthread_create(&P->writer, NULL, writer_main, P))
        return err_set(STELE_ENOMEM, "cannot start the PostgreSQL writer thread");
    return 0;
}

void pg_writer_stop(pg_backend *P)
{
    pthread_mutex_lock(&P->q_mu);
    P->stopping = 1;
    pthread_cond_broadcast(&P->q_cv);
    pthread_mutex_unlock(&P->q_mu);
    pthread_join(P->writer, NULL);
}

/* ------------------------------------------------------------ appends */

int pg_append_async(backend *b, const append_args *a, append_done_fn done, void *ctx)
{
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
