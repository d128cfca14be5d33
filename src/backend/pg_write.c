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

#include "backend/pg_int.h"
#include "util/util.h"

enum { REQ_APPEND = 1, REQ_MULTI = 2 };

struct pg_req {
    pg_req *next;
    int kind;
    const append_args *a;
    append_done_fn done;
    void *ctx;
    /* planning */
    int rc;
    char msg[512];
    stele_append_result res;
    int accepted;
    int sidx; /* index of its stream in the batch's sorted names */
    /* Its events' place in their commit: commit_index = ci0 + k, and
     * commit_count = cc (0: the append's own count). */
    size_t ci0, cc;
    /* REQ_MULTI */
    const multi_args *m;
    stele_append_result *ps;
    stele_multi_result mres;
    stele_append_multi_cb mdone;
    size_t nstreams;
};

/* ------------------------------------------------------------ text arrays */

/* Append `s` (len bytes) to a PostgreSQL array literal being built in b,
 * quoted and escaped; `first` says whether it is the first element. */
static int arr_add(buf *b, const char *s, size_t len, int first)
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

static int arr_open(buf *b)
{
    b->len = 0;
    return buf_append(b, "{", 1);
}

static int arr_close(buf *b)
{
    int rc = buf_append(b, "}", 2); /* with the NUL */
    return rc;
}

static void uuid_text(const uint8_t id[16], char out[37])
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

static int enqueue(pg_backend *P, pg_req *r)
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

typedef struct bstream {
    char name[256];
    size_t len;
    pg_stream st;
    int changed;
    uint64_t first_new_pos; /* first position given to it in this batch */
} bstream;

typedef struct idrow {
    uint8_t id[16];
    char stream[256];
    uint64_t rev, pos;
    int32_t ci, cc;
} idrow;

static int bs_cmp(const void *a, const void *b)
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

static const idrow *find_id(const idrow *ids, size_t n, const uint8_t id[16])
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(ids[i].id, id, 16) == 0)
            return &ids[i];
    return NULL;
}

static const char *expected_text(int64_t e, char *b, size_t n)
{
    if (e == STELE_ANY) return "any";
    if (e == STELE_NO_STREAM) return "no_stream";
    if (e == STELE_STREAM_EXISTS) return "stream_exists";
    snprintf(b, n, "%lld", (long long)e);
    return b;
}

static int expected_ok(int64_t e, uint64_t cur)
{
    switch (e) {
    case STELE_ANY: return 1;
    case STELE_NO_STREAM: return cur == STELE_NONE;
    case STELE_STREAM_EXISTS: return cur != STELE_NONE;
    default: return cur != STELE_NONE && cur == (uint64_t)e;
    }
}

static uint64_t visible_rev(const pg_stream *st)
{
    if (!st->exists || st->deleted || st->last_rev == STELE_NONE)
        return STELE_NONE;
    return st->last_rev;
}

static int wrong_rev(const char *stream, size_t len, int64_t expected, uint64_t cur)
{
    char eb[32];
    if (cur == STELE_NONE)
        return err_set(STELE_EWRONGREV,
                       "stream '%.*s': expected revision %s, but the stream has no events", (int)len,
                       stream, expected_text(expected, eb, sizeof eb));
    return err_set(STELE_EWRONGREV, "stream '%.*s': expected revision %s, but its revision is %llu",
                   (int)len, stream, expected_text(expected, eb, sizeof eb),
                   (unsigned long long)cur);
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
        const idrow *f = find_id(ids, nids, a->ids[i]);
        if (!f)
            continue;
        uuid_text(a->ids[i], idt);
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
            const idrow *g = a->made[k] ? NULL : find_id(ids, nids, a->ids[k]);
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
    uint64_t cur = visible_rev(st);
    int recreate = st->deleted && a->expected >= 0 && st->last_rev != STELE_NONE &&
                   (uint64_t)a->expected == st->last_rev;
    if (!recreate && !expected_ok(a->expected, cur)) {
        r->res.current_revision = cur;
        wrong_rev(s->name, s->len, a->expected, cur);
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
static int wexec(PGconn *c, const char *sql, int n, const char *const *vals, const int *lens,
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

/*
 * View revisions. $ce-, $et-, $bc- and $streams number their events 0, 1,
 * 2 ... in position order (the event's ordinal under its category, type or
 * correlation id; for $streams the stream's ordinal, given to its revision
 * 0), as the local engine's index does. The counters are rows of
 * stele_seq, bumped once per batch after the positions were taken: the
 * stele_feed row lock already serialises every commit of events, so the
 * ordinals follow commit order and have no gaps.
 */
typedef struct vkey {
    char kind; /* 'c', 't', 'b', 's' */
    const char *key;
    size_t len;
    size_t ev; /* event index in the batch */
} vkey;

static int vkey_cmp(const void *a, const void *b)
{
    const vkey *x = a, *y = b;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, m);
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->ev < y->ev ? -1 : x->ev > y->ev;
}

static int vkey_same(const vkey *x, const vkey *y)
{
    return x->kind == y->kind && x->len == y->len && memcmp(x->key, y->key, x->len) == 0;
}

/* Fill vrev[4 * total] (-1: none) for the batch's events, described by
 * cat/type/corr/rev0 per event. */
static int view_revs(PGconn *c, size_t total, char (*cat)[256], const char **type,
                     const meta_ids *mi, const uint8_t *rev0, int64_t *vrev, char state[6])
{
    vkey *k = malloc(4 * total * sizeof *k);
    if (!k)
        return err_set(STELE_ENOMEM, "out of memory");
    size_t nk = 0;
    for (size_t e = 0; e < total; e++) {
        for (int j = 0; j < 4; j++)
            vrev[4 * e + j] = -1;
        k[nk++] = (vkey){'c', cat[e], strlen(cat[e]), e};
        k[nk++] = (vkey){'t', type[e], strlen(type[e]), e};
        if (mi[e].correlation_len)
            k[nk++] = (vkey){'b', mi[e].correlation, mi[e].correlation_len, e};
        if (rev0[e])
            k[nk++] = (vkey){'s', "", 0, e};
    }
    qsort(k, nk, sizeof *k, vkey_cmp);
    buf kinds = {0}, keys = {0}, counts = {0};
    int rc = 0;
    if ((rc = buf_append(&kinds, "{", 1)) || (rc = buf_append(&keys, "{", 1)) ||
        (rc = buf_append(&counts, "{", 1)))
        goto out;
    size_t ngroups = 0;
    for (size_t i = 0; i < nk && rc == 0;) {
        size_t j = i;
        while (j < nk && vkey_same(&k[i], &k[j]))
            j++;
        char num[24];
        snprintf(num, sizeof num, "%zu", j - i);
        if (ngroups && ((rc = buf_append(&kinds, ",", 1)) || (rc = buf_append(&keys, ",", 1)) ||
                        (rc = buf_append(&counts, ",", 1))))
            break;
        char kc[2] = {k[i].kind, 0};
        if ((rc = buf_append(&kinds, kc, 1)) || (rc = buf_append(&counts, num, strlen(num))))
            break;
        rc = buf_append(&keys, "\"", 1);
        for (size_t x = 0; x < k[i].len && rc == 0; x++) {
            if (k[i].key[x] == '"' || k[i].key[x] == '\\')
                rc = buf_append(&keys, "\\", 1);
            if (rc == 0)
                rc = buf_append(&keys, &k[i].key[x], 1);
        }
        if (rc == 0)
            rc = buf_append(&keys, "\"", 1);
        ngroups++;
        i = j;
    }
    if (rc || (rc = buf_append(&kinds, "}", 2)) || (rc = buf_append(&keys, "}", 2)) ||
        (rc = buf_append(&counts, "}", 2)))
        goto out;
    /* The new counter values come back in the order given (WITH ORDINALITY). */
    const char *v[3] = {(const char *)kinds.p, (const char *)keys.p, (const char *)counts.p};
    PGresult *r;
    rc = wexec(c,
               "WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH "
               "ORDINALITY AS u(kind, key, n, o)), up AS (INSERT INTO stele_seq (kind, key, next) "
               "SELECT kind, key, n FROM u ORDER BY kind, key ON CONFLICT (kind, key) DO UPDATE "
               "SET next = stele_seq.next + EXCLUDED.next RETURNING kind, key, next) SELECT "
               "up.next - u.n FROM u JOIN up USING (kind, key) ORDER BY u.o",
               3, v, NULL, NULL, 1, &r, "numbering view events", state);
    if (rc)
        goto out;
    if ((size_t)PQntuples(r) != ngroups) {
        PQclear(r);
        rc = err_set(STELE_EINTERNAL, "view counters: %d rows for %zu keys", PQntuples(r),
                     ngroups);
        goto out;
    }
    size_t g = 0;
    for (size_t i = 0; i < nk; g++) {
        int64_t base = pg_i64(r, (int)g, 0);
        size_t j = i;
        while (j < nk && vkey_same(&k[i], &k[j])) {
            int slot = k[j].kind == 'c' ? 0 : k[j].kind == 't' ? 1 : k[j].kind == 'b' ? 2 : 3;
            vrev[4 * k[j].ev + slot] = base + (int64_t)(j - i);
            j++;
        }
        i = j;
    }
    PQclear(r);
out:
    buf_free(&kinds);
    buf_free(&keys);
    buf_free(&counts);
    free(k);
    return rc;
}

/*
 * Binary array parameters. The batch's events go to PostgreSQL as one
 * INSERT ... SELECT FROM unnest($1, ..., $19): one array per column, in
 * PostgreSQL's binary array format (ndim 1, has-null flag, element type,
 * length, lower bound 1, then each element as length + bytes, -1 for
 * NULL). One short statement whatever the batch size: nothing to parse
 * per row, no escaping, bytes sent as they are.
 */
typedef struct barr {
    buf b;
    uint32_t n, oid;
    int nulls;
} barr;

#define OID_BOOL 16u
#define OID_BYTEA 17u
#define OID_INT8 20u
#define OID_INT2 21u
#define OID_INT4 23u
#define OID_TEXT 25u
#define OID_UUID 2950u

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static int barr_init(barr *a, uint32_t oid)
{
    memset(a, 0, sizeof *a);
    a->oid = oid;
    static const uint8_t zero[20];
    return buf_append(&a->b, zero, sizeof zero); /* header, filled by barr_done */
}

/* An element of len bytes, or NULL (p NULL). */
static int barr_add(barr *a, const void *p, size_t len)
{
    uint8_t l[4];
    be32(l, p ? (uint32_t)len : 0xffffffffu);
    int rc = buf_append(&a->b, l, 4);
    if (rc == 0 && p && len)
        rc = buf_append(&a->b, p, len);
    a->nulls |= !p;
    a->n++;
    return rc;
}

static int barr_i64(barr *a, int64_t v)
{
    uint8_t x[8];
    stbe64(x, (uint64_t)v);
    return barr_add(a, x, 8);
}

static int barr_i32(barr *a, int32_t v)
{
    uint8_t x[4];
    be32(x, (uint32_t)v);
    return barr_add(a, x, 4);
}

static void barr_done(barr *a)
{
    uint8_t *h = a->b.p;
    be32(h, 1);
    be32(h + 4, (uint32_t)a->nulls);
    be32(h + 8, a->oid);
    be32(h + 12, a->n);
    be32(h + 16, 1);
}

#define EV_COLS 19

/* Insert the accepted events of the batch; 0 or the error. */
static int insert_events(PGconn *c, pg_req **reqs, size_t n, bstream *bs, int64_t now,
                         char state[6])
{
    static const uint32_t oids[EV_COLS] = {
        OID_INT8, OID_TEXT, OID_TEXT, OID_INT8, OID_UUID, OID_BOOL, OID_INT4, OID_INT4,
        OID_TEXT, OID_BYTEA, OID_BYTEA, OID_INT2, OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8,
        OID_INT8, OID_INT8, OID_INT8};
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (reqs[i]->accepted && !reqs[i]->res.idempotent)
            total += reqs[i]->a->n;
    if (total == 0)
        return 0;
    /* Per event of the batch, in position order: what view_revs needs. */
    char(*cat)[256] = calloc(total, sizeof *cat);
    const char **type = calloc(total, sizeof *type);
    meta_ids *mi = calloc(total, sizeof *mi);
    uint8_t *rev0 = calloc(total, 1);
    int64_t *vrev = calloc(4 * total, sizeof *vrev);
    barr col[EV_COLS];
    memset(col, 0, sizeof col);
    buf tb = {0};
    int rc = (!cat || !type || !mi || !rev0 || !vrev) ? err_set(STELE_ENOMEM, "out of memory") : 0;
    for (size_t i = 0, e = 0; rc == 0 && i < n; i++) {
        pg_req *q = reqs[i];
        if (!q->accepted || q->res.idempotent)
            continue;
        const bstream *s = &bs[q->sidx];
        for (size_t k = 0; k < q->a->n; k++, e++) {
            const stele_event_in *x = &q->a->events[k];
            snprintf(cat[e], sizeof cat[e], "%.*s", (int)stream_category_len(s->name, s->len),
                     s->name);
            type[e] = x->type;
            if ((x->flags & STELE_META_JSON) && x->metadata_len)
                meta_ids_extract(x->metadata, x->metadata_len, &mi[e]);
            rev0[e] = q->res.first_revision + k == 0;
        }
    }
    if (rc == 0)
        rc = view_revs(c, total, cat, type, mi, rev0, vrev, state);
    for (int j = 0; j < EV_COLS && rc == 0; j++)
        rc = barr_init(&col[j], oids[j]);
    for (size_t i = 0, e = 0; rc == 0 && i < n; i++) {
        pg_req *q = reqs[i];
        if (!q->accepted || q->res.idempotent)
            continue;
        const append_args *a = q->a;
        const bstream *s = &bs[q->sidx];
        for (size_t k = 0; k < a->n && rc == 0; k++, e++) {
            const stele_event_in *x = &a->events[k];
            uint8_t made = a->made[k] ? 1 : 0;
            uint8_t fl[2] = {0, (uint8_t)(x->flags & (STELE_EVENT_JSON | STELE_META_JSON))};
            if ((rc = arr_open(&tb)))
                break;
            for (size_t t = 0; t < x->ntags && rc == 0; t++)
                rc = arr_add(&tb, x->tags[t], strlen(x->tags[t]), t == 0);
            if (rc == 0)
                rc = buf_append(&tb, "}", 1);
            if (rc || (rc = barr_i64(&col[0], (int64_t)(q->res.first_position + k))) ||
                (rc = barr_add(&col[1], s->name, s->len)) ||
                (rc = barr_add(&col[2], cat[e], strlen(cat[e]))) ||
                (rc = barr_i64(&col[3], (int64_t)(q->res.first_revision + k))) ||
                (rc = barr_add(&col[4], a->ids[k], 16)) || (rc = barr_add(&col[5], &made, 1)) ||
                (rc = barr_i32(&col[6], (int32_t)(q->ci0 + k))) ||
                (rc = barr_i32(&col[7], (int32_t)(q->cc ? q->cc : a->n))) ||
                (rc = barr_add(&col[8], x->type, strlen(x->type))) ||
                (rc = barr_add(&col[9], x->data_len ? x->data : "", x->data_len)) ||
                (rc = barr_add(&col[10], x->metadata_len ? x->metadata : "", x->metadata_len)) ||
                (rc = barr_add(&col[11], fl, 2)) || (rc = barr_add(&col[12], tb.p, tb.len)) ||
                (rc = barr_add(&col[13], mi[e].correlation_len ? mi[e].correlation : NULL,
                               mi[e].correlation_len)) ||
                (rc = barr_add(&col[14], mi[e].actor_len ? mi[e].actor : NULL, mi[e].actor_len)) ||
                (rc = barr_i64(&col[15], vrev[4 * e])) || (rc = barr_i64(&col[16], vrev[4 * e + 1])))
                break;
            rc = vrev[4 * e + 2] >= 0 ? barr_i64(&col[17], vrev[4 * e + 2])
                                      : barr_add(&col[17], NULL, 0);
            if (rc == 0)
                rc = vrev[4 * e + 3] >= 0 ? barr_i64(&col[18], vrev[4 * e + 3])
                                          : barr_add(&col[18], NULL, 0);
        }
    }
    if (rc == 0) {
        const char *vals[EV_COLS + 1];
        int lens[EV_COLS + 1], fmts[EV_COLS + 1];
        pg_num nowb;
        for (int j = 0; j < EV_COLS; j++) {
            barr_done(&col[j]);
            vals[j] = (const char *)col[j].b.p;
            lens[j] = (int)col[j].b.len;
            fmts[j] = 1;
        }
        vals[EV_COLS] = pg_numtxt(&nowb, now);
        lens[EV_COLS] = 0;
        fmts[EV_COLS] = 0;
        rc = wexec(c,
                   "INSERT INTO events (global_position, stream_id, stream_type, revision, "
                   "event_id, id_made, commit_index, commit_count, event_type, data, meta, flags, "
                   "tags, correlation_id, actor, ce_rev, et_rev, bc_rev, stream_no, created_us, "
                   "created_at) SELECT p, sid, st, rv, eid, im, ci, cc, et, d, m, f, tg::text[], "
                   "co, ac, ce, er, bc, sn, $20::bigint, to_timestamp($20::bigint / 1000000.0) "
                   "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::uuid[], "
                   "$6::bool[], $7::int[], $8::int[], $9::text[], $10::bytea[], $11::bytea[], "
                   "$12::int2[], $13::text[], $14::text[], $15::text[], $16::bigint[], "
                   "$17::bigint[], $18::bigint[], $19::bigint[]) AS u(p, sid, st, rv, eid, im, ci, "
                   "cc, et, d, m, f, tg, co, ac, ce, er, bc, sn)",
                   EV_COLS + 1, vals, lens, fmts, 0, NULL, "inserting events", state);
    }
    for (int j = 0; j < EV_COLS; j++)
        buf_free(&col[j].b);
    buf_free(&tb);
    free(cat);
    free(type);
    free(mi);
    free(rev0);
    free(vrev);
    return rc;
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
    PGresult *r = NULL;
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
        qsort(bs, nbs, sizeof *bs, bs_cmp);
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
    /* 0. Every stream has a row. */
    if (rc == 0 && !(rc = arr_open(&names)) && !(rc = arr_open(&cats))) {
        for (size_t i = 0; i < nbs && rc == 0; i++) {
            rc = arr_add(&names, bs[i].name, bs[i].len, i == 0);
            if (rc == 0)
                rc = arr_add(&cats, bs[i].name, stream_category_len(bs[i].name, bs[i].len),
                             i == 0);
        }
        if (rc == 0 && !(rc = arr_close(&names)) && !(rc = arr_close(&cats))) {
            const char *v[2] = {(const char *)names.p, (const char *)cats.p};
            rc = wexec(c,
                       "INSERT INTO streams (stream_id, stream_type) SELECT n, t FROM "
                       "unnest($1::text[], $2::text[]) AS u(n, t) ORDER BY n ON CONFLICT DO NOTHING",
                       2, v, NULL, NULL, 0, NULL, "creating stream rows", state);
        }
    }
    /* 1. Lock the rows. */
    if (rc == 0 && (rc = pg_cmd(c, "BEGIN")) == 0)
        in_tx = 1;
    if (rc == 0) {
        const char *v[1] = {(const char *)names.p};
        rc = wexec(c,
                   "SELECT stream_id, " PG_STREAM_COLS " FROM streams WHERE stream_id = "
                   "ANY($1::text[]) ORDER BY stream_id FOR UPDATE",
                   1, v, NULL, NULL, 1, &r, "locking streams", state);
        for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
            char nm[256];
            snprintf(nm, sizeof nm, "%.*s", PQgetlength(r, i, 0), PQgetvalue(r, i, 0));
            int j = find_stream(bs, nbs, nm);
            if (j >= 0)
                pg_stream_from(r, i, 1, &bs[j].st);
        }
        if (r)
            PQclear(r);
        r = NULL;
    }
    /* 2. Client-given ids already written. */
    size_t nclient = 0;
    if (rc == 0 && !(rc = arr_open(&idarr))) {
        for (size_t i = 0; i < n && rc == 0; i++)
            for (size_t k = 0; k < reqs[i]->a->n && rc == 0; k++)
                if (!reqs[i]->a->made[k]) {
                    char t[37];
                    uuid_text(reqs[i]->a->ids[k], t);
                    rc = arr_add(&idarr, t, 36, nclient++ == 0);
                }
        if (rc == 0)
            rc = arr_close(&idarr);
    }
    if (rc == 0 && nclient) {
        const char *v[1] = {(const char *)idarr.p};
        rc = wexec(c,
                   "SELECT event_id, stream_id, revision, global_position, commit_index, "
                   "commit_count FROM events WHERE NOT id_made AND event_id = ANY($1::uuid[])",
                   1, v, NULL, NULL, 1, &r, "looking up event ids", state);
        if (rc == 0 && PQntuples(r)) {
            nids = (size_t)PQntuples(r);
            if (!(ids = calloc(nids, sizeof *ids)))
                rc = err_set(STELE_ENOMEM, "out of memory");
            for (size_t i = 0; rc == 0 && i < nids; i++) {
                memcpy(ids[i].id, PQgetvalue(r, (int)i, 0), 16);
                snprintf(ids[i].stream, sizeof ids[i].stream, "%.*s",
                         PQgetlength(r, (int)i, 1), PQgetvalue(r, (int)i, 1));
                ids[i].rev = pg_u64(r, (int)i, 2);
                ids[i].pos = pg_u64(r, (int)i, 3);
                ids[i].ci = pg_i32(r, (int)i, 4);
                ids[i].cc = pg_i32(r, (int)i, 5);
            }
        }
        if (r)
            PQclear(r);
        r = NULL;
    }
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
        rc = wexec(c,
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
            rc = insert_events(c, reqs, n, bs, time_now_us(), state);
        /* The changed stream rows. */
        buf un = {0}, ulr = {0}, ulp = {0}, ufp = {0};
        int first = 1;
        if (rc == 0 && !(rc = arr_open(&un)) && !(rc = arr_open(&ulr)) && !(rc = arr_open(&ulp)) &&
            !(rc = arr_open(&ufp))) {
            for (size_t i = 0; i < nbs && rc == 0; i++) {
                if (!bs[i].changed || !bs[i].first_new_pos)
                    continue;
                pg_num a1, a2, a3;
                const char *lr = pg_numtxt(&a1, (int64_t)bs[i].st.last_rev);
                const char *lp = pg_numtxt(&a2, (int64_t)bs[i].st.last_pos);
                const char *fp = pg_numtxt(&a3, (int64_t)bs[i].first_new_pos - 1);
                if (!(rc = arr_add(&un, bs[i].name, bs[i].len, first)) &&
                    !(rc = arr_add(&ulr, lr, strlen(lr), first)) &&
                    !(rc = arr_add(&ulp, lp, strlen(lp), first)))
                    rc = arr_add(&ufp, fp, strlen(fp), first);
                first = 0;
            }
            if (rc == 0 && !(rc = arr_close(&un)) && !(rc = arr_close(&ulr)) &&
                !(rc = arr_close(&ulp)) && !(rc = arr_close(&ufp))) {
                const char *v4[4] = {(const char *)un.p, (const char *)ulr.p,
                                     (const char *)ulp.p, (const char *)ufp.p};
                rc = wexec(c,
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
            rc = wexec(c, "NOTIFY " PG_CHANNEL, 0, NULL, NULL, NULL, 0, NULL, "notifying", state);
    }
    /* 5. Commit. */
    int committing = 0;
    if (rc == 0) {
        committing = 1;
        rc = wexec(c, "COMMIT", 0, NULL, NULL, NULL, 0, NULL, "committing", state);
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
            uuid_text(reqs[0]->a->ids[0], t);
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
static void writer_conn(pg_backend *P)
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
    writer_conn(P);
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

static void process_multi(pg_backend *P, pg_req *r);

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
            process_multi(P, one);
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
    int rc = enqueue(P, r);
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

/* ------------------------------------------------------------ one-off writes */

/* BEGIN and lock one stream's row (made first when `create`); *found = 0
 * when it has none. */
static int lock_stream(PGconn *c, const char *name, size_t len, int create, pg_stream *st,
                       int *found)
{
    char cat[256];
    snprintf(cat, sizeof cat, "%.*s", (int)stream_category_len(name, len), name);
    const char *v[2] = {name, cat};
    PGresult *r;
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

static int finish(pg_backend *P, PGconn *c, int rc, int notify)
{
    if (rc == 0 && notify)
        rc = pg_cmd(c, "NOTIFY " PG_CHANNEL);
    if (rc == 0)
        rc = pg_cmd(c, "COMMIT");
    if (rc && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *x = PQexec(c, "ROLLBACK");
        PQclear(x);
    }
    if (rc == 0 && notify)
        pg_bump(P);
    pg_conn_put(P, c);
    return rc;
}

/* Keep the stream's max_snapshots latest snapshots. */
static int trim_snapshots(PGconn *c, const char *name, uint32_t max)
{
    pg_num nb;
    const char *v[2] = {name, pg_numtxt(&nb, max ? max : STELE_DEFAULT_MAX_SNAPSHOTS)};
    PGresult *r;
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
    pg_backend *P = (pg_backend *)b;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    pg_stream st;
    int found;
    int rc = lock_stream(c, name, len, tombstone, &st, &found);
    if (rc)
        return finish(P, c, rc, 0);
    found = found && st.exists;
    if (st.tombstoned)
        return finish(P, c, err_set(STELE_EDELETED, "stream '%s' is tombstoned", name), 0);
    uint64_t cur = visible_rev(&st);
    if (!tombstone && cur == STELE_NONE)
        return finish(P, c,
                      err_set(STELE_ENOTFOUND, "stream '%s' %s", name,
                              found ? "is already deleted" : "does not exist"),
                      0);
    int was_last = st.deleted && expected >= 0 && st.last_rev != STELE_NONE &&
                   (uint64_t)expected == st.last_rev;
    if (!was_last && !expected_ok(expected, cur)) {
        if (current)
            *current = cur;
        return finish(P, c, wrong_rev(name, len, expected, cur), 0);
    }
    const char *v[1] = {name};
    PGresult *r;
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
    if (rc == 0 && current)
        *current = cur;
    return finish(P, c, rc, 1);
}

static const char *version_text(int64_t e, char *b, size_t n)
{
    return expected_text(e, b, n);
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
    int rc = lock_stream(c, name, len, 1, &st, &found);
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
    PGresult *r;
    rc = pg_exec(c,
                 "UPDATE streams SET meta_version = $2, max_age_us = $3, max_count = $4, "
                 "meta_truncate_before = $5, max_snapshots = $6, meta_custom = $7 WHERE "
                 "stream_id = $1",
                 7, v, lens, fmts, 0, &r, "setting metadata");
    if (rc == 0) {
        PQclear(r);
        rc = trim_snapshots(c, name, md->max_snapshots);
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
    int rc = lock_stream(c, name, len, 0, &st, &found);
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
    PGresult *r;
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
        rc = trim_snapshots(c, name, st.max_snapshots);
    }
    return finish(P, c, rc, 0);
}

/* ------------------------------------------------------------ multi-stream */

/*
 * A multi-stream append is one transaction (docs/consistency.md; the
 * rules are local_multi.c's): stream rows made and locked in name order,
 * tombstoned writes refused, the idempotent-retry check on the ids,
 * every stream's expectation, then the positions taken (stele_feed's row
 * lock: from here on no other commit of events can happen until ours ends),
 * and only then the DCB condition, so it sees every event committed
 * before ours and none can slip in between the check and the commit.
 */

typedef struct mst {
    char name[256];
    size_t len;
    pg_stream st;
    uint64_t next_rev;
} mst;

static const char *mexp_text(int64_t e, char *b, size_t n)
{
    if (e == STELE_DELETED)
        return "deleted";
    return expected_text(e, b, n);
}

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
    int rc = 0;
    if (tomb) {
        if (s->nevents || (e != STELE_ANY && e != STELE_NO_STREAM))
            rc = STELE_EDELETED;
    } else if (e == STELE_NO_STREAM) {
        rc = exists ? STELE_EWRONGREV : 0;
    } else if (e == STELE_STREAM_EXISTS) {
        rc = softdel ? STELE_EDELETED : !exists ? STELE_EWRONGREV : 0;
    } else if (e == STELE_DELETED) {
        rc = softdel ? 0 : STELE_EWRONGREV;
    } else if (e >= 0) {
        rc = (exists || softdel) && cur == (uint64_t)e ? 0 : STELE_EWRONGREV;
    }
    if (!rc)
        return 0;
    ps[i].failed = rc;
    ps[i].current_revision = cur;
    if (*first)
        return rc;
    *first = rc;
    char eb[32], cb[64];
    const char *state = tomb ? "is tombstoned"
                        : softdel ? "is soft-deleted"
                        : exists ? "is at revision"
                                 : "has no events";
    snprintf(cb, sizeof cb, exists ? " %llu" : softdel ? " (its last revision was %llu)" : "",
             (unsigned long long)cur);
    res->failed_stream = i;
    res->current_revision = cur;
    err_set(rc, "stream %zu '%.*s': expected %s, but the stream %s%s", i, (int)s->len, s->stream,
            mexp_text(e, eb, sizeof eb), state, cb);
    return rc;
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
    int rc = arr_open(&arr);
    size_t cnt = 0;
    for (size_t k = 0; k < m->nrecords && rc == 0; k++)
        if (!m->made[k]) {
            char t[37];
            uuid_text(m->ids[k], t);
            rc = arr_add(&arr, t, 36, cnt++ == 0);
        }
    if (rc == 0)
        rc = arr_close(&arr);
    PGresult *r = NULL;
    if (rc == 0) {
        const char *v[1] = {(const char *)arr.p};
        rc = pg_exec(c,
                     "SELECT event_id, stream_id, revision, global_position, commit_index, "
                     "commit_count FROM events WHERE NOT id_made AND event_id = ANY($1::uuid[])",
                     1, v, NULL, NULL, 1, &r, "looking up event ids");
    }
    buf_free(&arr);
    if (rc)
        return rc;
    size_t nids = (size_t)PQntuples(r);
    idrow *ids = nids ? calloc(nids, sizeof *ids) : NULL;
    if (nids && !ids) {
        PQclear(r);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < nids; i++) {
        memcpy(ids[i].id, PQgetvalue(r, (int)i, 0), 16);
        snprintf(ids[i].stream, sizeof ids[i].stream, "%.*s", PQgetlength(r, (int)i, 1),
                 PQgetvalue(r, (int)i, 1));
        ids[i].rev = pg_u64(r, (int)i, 2);
        ids[i].pos = pg_u64(r, (int)i, 3);
        ids[i].ci = pg_i32(r, (int)i, 4);
        ids[i].cc = pg_i32(r, (int)i, 5);
    }
    PQclear(r);
    const idrow *f0 = find_id(ids, nids, m->ids[k0]);
    int out = 0;
    if (!f0) {
        for (size_t k = k0 + 1; k < m->nrecords && !out; k++) {
            const idrow *f = m->made[k] ? NULL : find_id(ids, nids, m->ids[k]);
            if (f) {
                char why[64];
                snprintf(why, sizeof why, " (position %llu)", (unsigned long long)f->pos);
                out = m_conflict(m, k, why);
            }
        }
        free(ids);
        return out;
    }
    if (k0 != 0) {
        free(ids);
        return m_conflict(m, k0, ", but not by an append that this one repeats (every event of "
                                 "a retry carries its id)");
    }
    uint64_t pos0 = f0->pos;
    if (f0->ci != 0 || (size_t)f0->cc != m->nrecords) {
        free(ids);
        return m_conflict(m, 0, ", by an append that this one does not repeat exactly");
    }
    for (size_t i = 0; i < m->nstreams; i++)
        ms[i].next_rev = STELE_NONE;
    for (size_t k = 0; k < m->nrecords; k++) {
        size_t s = m->records[k].stream;
        const idrow *f = m->made[k] ? NULL : find_id(ids, nids, m->ids[k]);
        if (!f || strcmp(f->stream, ms[s].name) != 0 || f->pos != pos0 + k ||
            (ms[s].next_rev != STELE_NONE && f->rev != ms[s].next_rev)) {
            for (size_t i = 0; i < m->nstreams; i++)
                ps[i] = append_result_none();
            free(ids);
            return m_conflict(m, 0, ", by an append that this one does not repeat exactly");
        }
        if (ms[s].next_rev == STELE_NONE) {
            ps[s].first_revision = f->rev;
            ps[s].first_position = f->pos;
        }
        ps[s].last_revision = f->rev;
        ps[s].last_position = f->pos;
        ps[s].idempotent = 1;
        ms[s].next_rev = f->rev + 1;
    }
    free(ids);
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
        qsort(bs, m->nstreams, sizeof *bs, bs_cmp);
    if (rc == 0 && !(rc = arr_open(&names)) && !(rc = arr_open(&cats))) {
        for (size_t i = 0; i < m->nstreams && rc == 0; i++) {
            rc = arr_add(&names, bs[i].name, bs[i].len, i == 0);
            if (rc == 0)
                rc = arr_add(&cats, bs[i].name, stream_category_len(bs[i].name, bs[i].len),
                             i == 0);
        }
        if (rc == 0 && !(rc = arr_close(&names)))
            rc = arr_close(&cats);
    }
    const char *nv[2] = {(const char *)names.p, (const char *)cats.p};
    if (rc == 0)
        rc = wexec(c,
                   "INSERT INTO streams (stream_id, stream_type) SELECT n, t FROM "
                   "unnest($1::text[], $2::text[]) AS u(n, t) ORDER BY n ON CONFLICT DO NOTHING",
                   2, nv, NULL, NULL, 0, NULL, "creating stream rows", state);
    if (rc == 0 && (rc = pg_cmd(c, "BEGIN")) == 0)
        tx = 1;
    PGresult *r = NULL;
    if (rc == 0)
        rc = wexec(c,
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
        rc = wexec(c,
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
        rc = wexec(c, "SELECT next_position FROM stele_feed FOR UPDATE", 0, NULL, NULL, NULL, 1,
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
            rc = wexec(c, sql, np + 1, vals, NULL, NULL, 1, &r, "checking the condition", state);
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
            rc = insert_events(c, frp, m->nrecords, bs, time_now_us(), state);
        }
        for (size_t i = 0; rc == 0 && i < m->nstreams; i++) {
            if (!m->streams[i].nevents)
                continue;
            pg_num a1, a2, a3;
            const char *v[4] = {ms[i].name, pg_numtxt(&a1, (int64_t)ps[i].last_revision),
                                pg_numtxt(&a2, (int64_t)ps[i].last_position),
                                pg_numtxt(&a3, (int64_t)ps[i].first_position)};
            rc = wexec(c,
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
            rc = wexec(c,
                       "INSERT INTO snapshots (stream_id, revision, schema_version, flags, "
                       "state, created_us) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT "
                       "(stream_id, revision) DO UPDATE SET schema_version = "
                       "EXCLUDED.schema_version, flags = EXCLUDED.flags, state = EXCLUDED.state, "
                       "created_us = EXCLUDED.created_us",
                       6, v, lens, fmts, 0, NULL, "saving a state", state);
            if (rc == 0)
                rc = trim_snapshots(c, ms[i].name, ms[i].st.max_snapshots);
        }
        if (rc == 0 && m->nrecords)
            rc = wexec(c, "NOTIFY " PG_CHANNEL, 0, NULL, NULL, NULL, 0, NULL, "notifying", state);
    }
    int committing = 0;
    if (tx && rc == 0) {
        committing = 1;
        rc = wexec(c, "COMMIT", 0, NULL, NULL, NULL, 0, NULL, "committing", state);
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
    int rc = enqueue(P, r);
    if (rc)
        free(r);
    return rc;
}

/* On the writer thread: one queued multi-stream append. */
static void process_multi(pg_backend *P, pg_req *r)
{
    writer_conn(P);
    err_clear();
    int rc = P->wconn ? multi_run(P, P->wconn, r->m, r->ps, &r->mres) : STELE_EIO;
    r->mdone(r->ctx, rc, r->ps, r->nstreams, &r->mres, rc ? stele_errmsg() : "");
    free(r);
}

#endif /* STELE_WITH_POSTGRES */
