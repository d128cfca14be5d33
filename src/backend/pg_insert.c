/*
 * pg_insert.c - how a commit's events reach PostgreSQL (pg_write.c's batches
 * and pg_multi.c's multi-stream appends): their view revisions numbered
 * under the feed lock, then every event in one INSERT ... FROM unnest() of
 * binary arrays.
 *
 * Two steps, so the writer can pipeline them (pg_write.c): under the feed
 * lock, read the view counters the batch may touch (PGW_SEQ_READ_SQL with
 * pgw_seq_keys()' arrays); after planning, build both statements at once
 * (pgw_ins_build): the counters' new values (absolute: no other
 * transaction writes stele_seq while this one holds the feed row) and the
 * events with their positions and view revisions. Nothing in the second
 * step waits for a result of the database, so it goes out with the stream
 * updates and the COMMIT in one round trip. pgw_insert_events() runs both
 * steps one statement at a time (multi-stream appends).
 */
#ifdef STELE_WITH_POSTGRES
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_write.h"
#include "util/util.h"

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

/* The counters read under the feed lock: rows (kind, key, next), binary,
 * in any order. 0 for a key without a row. */
static int64_t seq_base(const PGresult *seq, char kind, const char *key, size_t len)
{
    for (int i = 0; seq && i < PQntuples(seq); i++)
        if (PQgetvalue(seq, i, 0)[0] == kind && (size_t)PQgetlength(seq, i, 1) == len &&
            memcmp(PQgetvalue(seq, i, 1), key, len) == 0)
            return pg_i64(seq, i, 2);
    return 0;
}

/* Add one "kind","key" pair to the text arrays kinds and keys. */
static int key_add(buf *kinds, buf *keys, char kind, const char *key, size_t len, int first)
{
    char kc[1] = {kind};
    int rc = pgw_arr_add(kinds, kc, 1, first);
    return rc ? rc : pgw_arr_add(keys, key, len, first);
}

int pgw_seq_keys(pg_req **reqs, size_t n, const bstream *bs, buf *kinds, buf *keys)
{
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += 1 + 2 * reqs[i]->a->n;
    vkey *k = malloc(cap * sizeof *k);
    meta_ids *mi = NULL;
    size_t nmi = 0;
    for (size_t i = 0; i < n; i++)
        nmi += reqs[i]->a->n;
    mi = calloc(nmi ? nmi : 1, sizeof *mi);
    if (!k || !mi) {
        free(k);
        free(mi);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    /* Every key the batch may touch, each once (sorted, duplicates
     * dropped): 's' for $streams, the categories, types, correlation ids. */
    size_t nk = 0, e = 0;
    k[nk++] = (vkey){'s', "", 0, 0};
    for (size_t i = 0; i < n; i++) {
        const bstream *s = &bs[reqs[i]->sidx];
        k[nk++] = (vkey){'c', s->name, stream_category_len(s->name, s->len), 0};
        for (size_t j = 0; j < reqs[i]->a->n; j++, e++) {
            const stele_event_in *x = &reqs[i]->a->events[j];
            k[nk++] = (vkey){'t', x->type, strlen(x->type), 0};
            if ((x->flags & STELE_META_JSON) && x->metadata_len) {
                meta_ids_extract(x->metadata, x->metadata_len, &mi[e]);
                if (mi[e].correlation_len)
                    k[nk++] = (vkey){'b', mi[e].correlation, mi[e].correlation_len, 0};
            }
        }
    }
    qsort(k, nk, sizeof *k, vkey_cmp);
    int rc = pgw_arr_open(kinds);
    if (rc == 0)
        rc = pgw_arr_open(keys);
    for (size_t i = 0, out = 0; i < nk && rc == 0; i++)
        if (i == 0 || !vkey_same(&k[i - 1], &k[i]))
            rc = key_add(kinds, keys, k[i].kind, k[i].key, k[i].len, out++ == 0);
    if (rc == 0 && (rc = pgw_arr_close(kinds)) == 0)
        rc = pgw_arr_close(keys);
    free(k);
    free(mi);
    return rc;
}

/* Fill vrev[4 * total] (-1: none) for the batch's events, described by
 * cat/type/corr/rev0 per event, from the counters in `seq`, and the
 * counters' new values into the arrays kinds, keys, nexts. */
static int view_revs(const PGresult *seq, size_t total, char (*cat)[256], const char **type,
                     const meta_ids *mi, const uint8_t *rev0, int64_t *vrev, buf *kinds,
                     buf *keys, buf *nexts)
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
    int rc = pgw_arr_open(kinds);
    if (rc == 0)
        rc = pgw_arr_open(keys);
    if (rc == 0)
        rc = pgw_arr_open(nexts);
    size_t ngroups = 0;
    for (size_t i = 0; i < nk && rc == 0;) {
        int64_t base = seq_base(seq, k[i].kind, k[i].key, k[i].len);
        size_t j = i;
        while (j < nk && vkey_same(&k[i], &k[j])) {
            int slot = k[j].kind == 'c' ? 0 : k[j].kind == 't' ? 1 : k[j].kind == 'b' ? 2 : 3;
            vrev[4 * k[j].ev + slot] = base + (int64_t)(j - i);
            j++;
        }
        pg_num nb;
        const char *nx = pg_numtxt(&nb, base + (int64_t)(j - i));
        rc = key_add(kinds, keys, k[i].kind, k[i].key, k[i].len, ngroups == 0);
        if (rc == 0)
            rc = pgw_arr_add(nexts, nx, strlen(nx), ngroups == 0);
        ngroups++;
        i = j;
    }
    if (rc == 0 && (rc = pgw_arr_close(kinds)) == 0 && (rc = pgw_arr_close(keys)) == 0)
        rc = pgw_arr_close(nexts);
    free(k);
    return rc;
}

/*
 * Binary array parameters. The batch's events go to PostgreSQL as one
 * INSERT ... SELECT FROM unnest($1, ..., $20): one array per column, in
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


const char pgw_seq_write_sql[] =
    "INSERT INTO stele_seq (kind, key, next) SELECT * FROM unnest($1::text[], $2::text[], "
    "$3::bigint[]) AS u(kind, key, next) ORDER BY 1, 2 ON CONFLICT (kind, key) DO UPDATE SET "
    "next = EXCLUDED.next";

const char pgw_insert_sql[] =
    "INSERT INTO events (global_position, stream_id, stream_type, revision, event_id, id_made, "
    "commit_index, commit_count, event_type, data, meta, flags, tags, correlation_id, actor, "
    "ce_rev, et_rev, bc_rev, stream_no, causation_id, created_us, created_at) SELECT p, sid, st, "
    "rv, eid, im, ci, cc, et, d, m, f, tg::text[], co, ac, ce, er, bc, sn, cu, $21::bigint, "
    "to_timestamp($21::bigint / 1000000.0) FROM unnest($1::bigint[], $2::text[], $3::text[], "
    "$4::bigint[], $5::uuid[], $6::bool[], $7::int[], $8::int[], $9::text[], $10::bytea[], "
    "$11::bytea[], $12::int2[], $13::text[], $14::text[], $15::text[], $16::bigint[], "
    "$17::bigint[], $18::bigint[], $19::bigint[], $20::text[]) AS u(p, sid, st, rv, eid, im, ci, "
    "cc, et, d, m, f, tg, co, ac, ce, er, bc, sn, cu)";

void pgw_ins_free(pgw_ins *x)
{
    for (int j = 0; j < PGW_EV_COLS; j++)
        buf_free(&x->col[j]);
    buf_free(&x->kinds);
    buf_free(&x->keys);
    buf_free(&x->nexts);
    memset(x, 0, sizeof *x);
}

int pgw_ins_build(pgw_ins *x, pg_req **reqs, size_t n, const bstream *bs, const PGresult *seq,
                  int64_t now)
{
    static const uint32_t oids[PGW_EV_COLS] = {
        OID_INT8, OID_TEXT, OID_TEXT, OID_INT8, OID_UUID, OID_BOOL, OID_INT4, OID_INT4,
        OID_TEXT, OID_BYTEA, OID_BYTEA, OID_INT2, OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8,
        OID_INT8, OID_INT8, OID_INT8, OID_TEXT};
    memset(x, 0, sizeof *x);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (reqs[i]->accepted && !reqs[i]->res.idempotent)
            total += reqs[i]->a->n;
    x->total = total;
    if (total == 0)
        return 0;
    /* Per event of the batch, in position order: what view_revs needs. */
    char(*cat)[256] = calloc(total, sizeof *cat);
    const char **type = calloc(total, sizeof *type);
    meta_ids *mi = calloc(total, sizeof *mi);
    uint8_t *rev0 = calloc(total, 1);
    int64_t *vrev = calloc(4 * total, sizeof *vrev);
    barr col[PGW_EV_COLS];
    memset(col, 0, sizeof col);
    buf tb = {0};
    int rc = (!cat || !type || !mi || !rev0 || !vrev) ? err_set(STELE_ENOMEM, "out of memory") : 0;
    for (size_t i = 0, e = 0; rc == 0 && i < n; i++) {
        pg_req *q = reqs[i];
        if (!q->accepted || q->res.idempotent)
            continue;
        const bstream *s = &bs[q->sidx];
        for (size_t k = 0; k < q->a->n; k++, e++) {
            const stele_event_in *ev = &q->a->events[k];
            snprintf(cat[e], sizeof cat[e], "%.*s", (int)stream_category_len(s->name, s->len),
                     s->name);
            type[e] = ev->type;
            if ((ev->flags & STELE_META_JSON) && ev->metadata_len)
                meta_ids_extract(ev->metadata, ev->metadata_len, &mi[e]);
            rev0[e] = q->res.first_revision + k == 0;
        }
    }
    if (rc == 0)
        rc = view_revs(seq, total, cat, type, mi, rev0, vrev, &x->kinds, &x->keys, &x->nexts);
    for (int j = 0; j < PGW_EV_COLS && rc == 0; j++)
        rc = barr_init(&col[j], oids[j]);
    for (size_t i = 0, e = 0; rc == 0 && i < n; i++) {
        pg_req *q = reqs[i];
        if (!q->accepted || q->res.idempotent)
            continue;
        const append_args *a = q->a;
        const bstream *s = &bs[q->sidx];
        for (size_t k = 0; k < a->n && rc == 0; k++, e++) {
            const stele_event_in *ev = &a->events[k];
            uint8_t made = a->made[k] ? 1 : 0;
            uint8_t fl[2] = {
                0, (uint8_t)(ev->flags & (STELE_EVENT_JSON | STELE_META_JSON | STELE_EVENT_ID_ULID))};
            if ((rc = pgw_arr_open(&tb)))
                break;
            for (size_t t = 0; t < ev->ntags && rc == 0; t++)
                rc = pgw_arr_add(&tb, ev->tags[t], strlen(ev->tags[t]), t == 0);
            if (rc == 0)
                rc = buf_append(&tb, "}", 1);
            if (rc || (rc = barr_i64(&col[0], (int64_t)(q->res.first_position + k))) ||
                (rc = barr_add(&col[1], s->name, s->len)) ||
                (rc = barr_add(&col[2], cat[e], strlen(cat[e]))) ||
                (rc = barr_i64(&col[3], (int64_t)(q->res.first_revision + k))) ||
                (rc = barr_add(&col[4], a->ids[k], 16)) || (rc = barr_add(&col[5], &made, 1)) ||
                (rc = barr_i32(&col[6], (int32_t)(q->ci0 + k))) ||
                (rc = barr_i32(&col[7], (int32_t)(q->cc ? q->cc : a->n))) ||
                (rc = barr_add(&col[8], ev->type, strlen(ev->type))) ||
                (rc = barr_add(&col[9], ev->data_len ? ev->data : "", ev->data_len)) ||
                (rc = barr_add(&col[10], ev->metadata_len ? ev->metadata : "", ev->metadata_len)) ||
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
            if (rc == 0)
                rc = barr_add(&col[19], mi[e].causation_len ? mi[e].causation : NULL,
                              mi[e].causation_len);
        }
    }
    for (int j = 0; j < PGW_EV_COLS; j++) {
        if (rc == 0) {
            barr_done(&col[j]);
            x->vals[j] = (const char *)col[j].b.p;
            x->lens[j] = (int)col[j].b.len;
            x->fmts[j] = 1;
        }
        x->col[j] = col[j].b; /* freed by pgw_ins_free */
    }
    if (rc == 0) {
        x->vals[PGW_EV_COLS] = pg_numtxt(&x->now, now);
        x->lens[PGW_EV_COLS] = 0;
        x->fmts[PGW_EV_COLS] = 0;
        x->seq_vals[0] = (const char *)x->kinds.p;
        x->seq_vals[1] = (const char *)x->keys.p;
        x->seq_vals[2] = (const char *)x->nexts.p;
    }
    buf_free(&tb);
    free(cat);
    free(type);
    free(mi);
    free(rev0);
    free(vrev);
    if (rc)
        pgw_ins_free(x);
    return rc;
}

/* Both steps, one statement at a time (multi-stream appends). */
int pgw_insert_events(PGconn *c, pg_req **reqs, size_t n, bstream *bs, int64_t now,
                      char state[6])
{
    buf kinds = {0}, keys = {0};
    PGresult *seq = NULL;
    pgw_ins x;
    int rc = pgw_seq_keys(reqs, n, bs, &kinds, &keys);
    if (rc == 0) {
        const char *v[2] = {(const char *)kinds.p, (const char *)keys.p};
        rc = pgw_wexec(c, PGW_SEQ_READ_SQL, 2, v, NULL, NULL, 1, &seq, "reading view counters",
                       state);
    }
    buf_free(&kinds);
    buf_free(&keys);
    if (rc == 0 && (rc = pgw_ins_build(&x, reqs, n, bs, seq, now)) == 0) {
        if (x.total) {
            rc = pgw_wexec(c, pgw_seq_write_sql, 3, x.seq_vals, NULL, NULL, 0, NULL,
                           "numbering view events", state);
            if (rc == 0)
                rc = pgw_wexec(c, pgw_insert_sql, PGW_EV_COLS + 1, x.vals, x.lens, x.fmts, 0,
                               NULL, "inserting events", state);
        }
        pgw_ins_free(&x);
    }
    if (seq)
        PQclear(seq);
    return rc;
}

#endif /* STELE_WITH_POSTGRES */
