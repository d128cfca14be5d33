/*
 * pg_read.c - reads of the PostgreSQL backend: streams, $all, queries,
 * views, DCB reads, metadata, snapshots, stats. Each read runs on a pooled
 * connection in the caller's thread.
 *
 * Visibility. A stream's rules (soft delete, tombstone, truncateBefore,
 * maxCount, maxAge) are the local engine's (docs/streams.md), written once
 * as an SQL condition over the event and its stream row (pg_visible_sql),
 * so stream reads, views and queries filter in the database. $all and DCB
 * reads show every event, as on the local engine.
 *
 * $all never skips: positions become visible in commit order (pg.c), so
 * "global_position >= from ORDER BY global_position" returns a gapless run
 * after `from` at any moment; a reader that stopped at p resumes at p + 1
 * and finds every later event there, including ones another server is
 * committing right now (they appear only after every smaller position).
 *
 * Nothing a crash can lose is shown: every read of events stops below the
 * durable position (PG_DURABLE, pg.c "Durability"), a gapless prefix of
 * the visible positions; a stream's row is made durable before it is used
 * (pg_stream_get); a view exists once its first event is durable.
 *
 * Pages: rows come back in binary and are turned into the local engine's
 * record encoding, which the shared page code copies (page_add); reads
 * fetch at most PG_CHUNK rows a statement and stop when the page is full.
 */
#ifdef STELE_WITH_POSTGRES
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_int.h"
#include "util/util.h"

#define PG_CHUNK 1000

void pg_visible_sql(char *out, size_t n, const char *nowp)
{
    snprintf(out, n,
             "(NOT s.tombstoned AND e.revision <= s.last_revision AND e.revision >= "
             "GREATEST(s.truncate_before, s.meta_truncate_before, CASE WHEN s.max_count > 0 AND "
             "s.last_revision + 1 > s.max_count THEN s.last_revision + 1 - s.max_count ELSE 0 "
             "END) AND (s.max_age_us = 0 OR e.created_us >= %s::bigint - s.max_age_us))",
             nowp);
}

static uint32_t ldbe32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One row into the page (page_add copies what the fields point to). */
static int add_row(stele_page *pg, const PGresult *r, int i, buf *scratch)
{
    (void)scratch;
    /* tags: binary array: ndim, hasnull, elemtype, [dim, lbound], then
     * (len, bytes) per element; page_add wants NUL-terminated strings. */
    const uint8_t *a = (const uint8_t *)PQgetvalue(r, i, 8);
    int alen = PQgetlength(r, i, 8);
    char tagbuf[64][256];
    const char *tags[64];
    size_t ntags = 0;
    if (alen >= 20 && ldbe32(a) == 1) {
        uint32_t cnt = ldbe32(a + 12);
        const uint8_t *p = a + 20, *end = a + alen;
        for (uint32_t k = 0; k < cnt && ntags < 64 && p + 4 <= end; k++) {
            uint32_t l = ldbe32(p);
            p += 4;
            if (l > 255 || p + l > end)
                break;
            memcpy(tagbuf[ntags], p, l);
            tagbuf[ntags][l] = 0;
            tags[ntags] = tagbuf[ntags];
            ntags++;
            p += l;
        }
    }
    page_event e = {
        .stream = PQgetvalue(r, i, 3),
        .stream_len = (size_t)PQgetlength(r, i, 3),
        .type = PQgetvalue(r, i, 4),
        .type_len = (size_t)PQgetlength(r, i, 4),
        .tags = tags,
        .ntags = ntags,
        .data = PQgetvalue(r, i, 5),
        .data_len = (size_t)PQgetlength(r, i, 5),
        .metadata = PQgetvalue(r, i, 6),
        .metadata_len = (size_t)PQgetlength(r, i, 6),
        .id = (const uint8_t *)PQgetvalue(r, i, 2),
        .flags = (uint32_t)(PQgetvalue(r, i, 7)[1] &
                            (STELE_EVENT_JSON | STELE_META_JSON | STELE_EVENT_ID_ULID)),
        .created_us = pg_i64(r, i, 9),
        .revision = pg_u64(r, i, 1),
        .position = pg_u64(r, i, 0),
    };
    return page_add(pg, &e);
}

int pg_page_add_rows(stele_page *pg, const PGresult *r)
{
    buf scratch = {0};
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++)
        rc = add_row(pg, r, i, &scratch);
    buf_free(&scratch);
    return rc;
}

/*
 * Fill `pg` with the rows of `sql`, whose last two parameters ($n-1, $n)
 * are given here: the cursor to start at and how many rows to fetch.
 * vals[n-2], vals[n-1] are overwritten. Forwards the SQL must say
 * "cursor >= $n-1" and order ascending, backwards "<= $n-1" descending;
 * the cursor is column `curcol` (the position, a revision, or a view
 * revision). With `link` each event's cursor is its view revision
 * (page_set_link). One row more than needed is fetched, so *has_next says
 * whether another row follows and *next is its cursor; *last is the last
 * event's cursor.
 */
static int fill(PGconn *c, stele_page *pg, const char *sql, int n, const char **vals,
                const int *lens, const int *fmts, uint64_t from, int backwards, size_t limit,
                int curcol, int link, uint64_t *last, int *has_next, uint64_t *next)
{
    pg_num b1, b2;
    buf scratch = {0};
    int rc = 0;
    *has_next = 0;
    uint64_t cur = from;
    while (rc == 0 && !page_full(pg, limit)) {
        size_t want = limit - pg->count;
        if (want > PG_CHUNK)
            want = PG_CHUNK;
        if (cur > (uint64_t)INT64_MAX) {
            if (!backwards)
                break;
            cur = (uint64_t)INT64_MAX;
        }
        vals[n - 2] = pg_numtxt(&b1, (int64_t)cur);
        vals[n - 1] = pg_numtxt(&b2, (int64_t)want + 1);
        PGresult *r = NULL;
        if ((rc = pg_exec(c, sql, n, vals, lens, fmts, 1, &r, "reading events")))
            break;
        int rows = PQntuples(r), i = 0;
        for (; i < rows && rc == 0 && !page_full(pg, limit); i++) {
            rc = add_row(pg, r, i, &scratch);
            if (rc == 0 && link)
                rc = page_set_link(pg, pg->count - 1, pg_u64(r, i, curcol));
            if (rc == 0)
                *last = pg_u64(r, i, curcol);
        }
        if (rc == 0 && i < rows) {
            *has_next = 1;
            *next = pg_u64(r, i, curcol);
        }
        PQclear(r);
        if (rc || i < rows || (size_t)rows <= want)
            break;
        if (backwards && *last == 0)
            break;
        cur = backwards ? *last - 1 : *last + 1;
    }
    buf_free(&scratch);
    return rc;
}

static int new_page(pg_backend *P, size_t limit, stele_page **out)
{
    int rc = page_new(P->pl, out);
    if (rc == 0)
        page_expect(*out, limit);
    return rc;
}

/* The stream's row with the read errors of the local engine. */
static int stream_state_x(PGconn *c, const char *stream, size_t len, pg_stream *st, int cover)
{
    int rc = pg_stream_get_x(c, stream, len, st, cover);
    if (rc)
        return rc;
    if (!st->exists)
        return err_set(STELE_ENOTFOUND, "stream '%.*s' not found", (int)len, stream);
    if (st->tombstoned)
        return err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)len, stream);
    if (st->deleted || st->last_rev == STELE_NONE)
        return err_set(STELE_ENOTFOUND, "stream '%.*s' not found (deleted)", (int)len, stream);
    return 0;
}

static int stream_state(PGconn *c, const char *stream, size_t len, pg_stream *st)
{
    return stream_state_x(c, stream, len, st, 1);
}

/* A stream read between revisions lo..hi (inclusive) of a stream whose
 * state is `st`; optionally only events created <= as_of. */
static int read_range(PGconn *c, stele_page *pg, const char *name, uint64_t from, int backwards,
                      size_t limit, uint64_t lo, uint64_t hi, int has_as_of, int64_t as_of)
{
    if (!backwards && from < lo)
        from = lo;
    if (backwards && from > hi)
        from = hi;
    if (from < lo || from > hi || limit == 0)
        return 0;
    char vis[700], sql[1400];
    pg_visible_sql(vis, sizeof vis, "$2");
    snprintf(sql, sizeof sql,
             "SELECT " PG_EVENT_COLS " FROM events e JOIN streams s ON s.stream_id = e.stream_id "
             "WHERE e.stream_id = $1 AND %s AND e.revision BETWEEN $3::bigint AND $4::bigint "
             "AND e.created_us <= $5::bigint AND e.global_position < " PG_DURABLE " AND "
             "e.revision %s $6::bigint ORDER BY e.revision %s LIMIT $7::bigint",
             vis, backwards ? "<=" : ">=", backwards ? "DESC" : "ASC");
    pg_num b2, b3, b4, b5;
    const char *vals[7] = {name,
                           pg_numtxt(&b2, time_now_us()),
                           pg_numtxt(&b3, (int64_t)lo),
                           pg_numtxt(&b4, (int64_t)hi),
                           pg_numtxt(&b5, has_as_of ? as_of : INT64_MAX),
                           NULL,
                           NULL};
    uint64_t last = 0, nx;
    int more;
    int rc = fill(c, pg, sql, 7, vals, NULL, NULL, from, backwards, limit, 1, 0, &last, &more,
                  &nx);
    if (rc == 0 && pg->count) {
        if (!backwards && last < hi) {
            pg->has_next = 1;
            pg->next = last + 1;
        } else if (backwards && last > lo && last > 0) {
            pg->has_next = 1;
            pg->next = last - 1;
        }
    }
    return rc;
}

int pg_read_stream_to(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                      size_t limit, uint64_t to, int has_as_of, int64_t as_of_us,
                      stele_page **out)
{
    pg_backend *P = (pg_backend *)b;
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    pg_stream st;
    stele_page *pg = NULL;
    int rc = stream_state(c, stream, len, &st);
    if (rc == 0)
        rc = new_page(P, limit, &pg);
    if (rc == 0) {
        uint64_t hi = st.last_rev;
        if (!has_as_of && to < hi)
            hi = to;
        rc = read_range(c, pg, name, from, backwards, limit, pg_stream_start(&st), hi, has_as_of,
                        as_of_us);
    }
    pg_conn_put(P, c);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

int pg_read_stream(backend *b, const char *stream, size_t len, uint64_t from, int backwards,
                   size_t limit, stele_page **out)
{
    return pg_read_stream_to(b, stream, len, from, backwards, limit, STELE_END, 0, 0, out);
}

int pg_read_all(backend *b, uint64_t from, int backwards, size_t limit, stele_page **out)
{
    pg_backend *P = (pg_backend *)b;
    stele_page *pg;
    int rc = new_page(P, limit, &pg);
    if (rc)
        return rc;
    if (limit == 0 || (!backwards && from > (uint64_t)INT64_MAX)) {
        *out = pg;
        return 0;
    }
    PGconn *c = pg_conn_get(P);
    if (!c) {
        stele_page_free(pg);
        return STELE_EIO;
    }
    const char *sql = backwards ? "SELECT " PG_EVENT_COLS " FROM events e WHERE "
                                  "e.global_position <= $1::bigint AND e.global_position < "
                                  PG_DURABLE " ORDER BY e.global_position DESC LIMIT $2::bigint"
                                : "SELECT " PG_EVENT_COLS " FROM events e WHERE "
                                  "e.global_position >= $1::bigint AND e.global_position < "
                                  PG_DURABLE " ORDER BY e.global_position LIMIT $2::bigint";
    const char *vals[2];
    uint64_t last = 0;
    rc = fill(c, pg, sql, 2, vals, NULL, NULL, from, backwards, limit, 0, 0, &last,
              &pg->has_next, &pg->next);
    pg_conn_put(P, c);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

int pg_head(backend *b, const char *stream, size_t len, stele_stream_info *out)
{
    pg_backend *P = (pg_backend *)b;
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    pg_stream st;
    int rc = pg_stream_get(c, stream, len, &st);
    pg_conn_put(P, c);
    if (rc)
        return rc;
    if (!st.exists)
        return err_set(STELE_ENOTFOUND, "stream '%.*s' not found", (int)len, stream);
    out->last_revision = st.last_rev;
    out->last_position = st.last_pos;
    out->truncate_before = st.truncate_before;
    out->deleted = st.deleted;
    out->tombstoned = st.tombstoned;
    return 0;
}

/* ------------------------------------------------------------ queries */

/*
 * The smallest view number `rcol` under `col` = `key` whose event's
 * position is `cmp` `pos` (">=" or ">"), or one past the largest number
 * when there is none: a binary search over the view's unique index
 * (col, rcol), about log2(n) probes, each the first event numbered at or
 * after the middle. Numbers may have holes (a scavenge removes events), so
 * the search keeps the best event found so far (`cand`) beside its range
 * [lo, hi). Invariant: the answer is cand or lies in [lo, hi); every
 * probe either finds an event that qualifies (answer <= its number: hi
 * moves down to the middle, the numbers between the middle and it having
 * no event) or one that does not (every event numbered up to it is
 * before `pos`, by the order numbers and positions share: lo moves past
 * it).
 */
void pg_rank_bound_sql(char *out, size_t n, const char *col, const char *rcol, const char *key,
                       const char *pos, const char *cmp)
{
    snprintf(out, n,
             "(WITH RECURSIVE b(lo, hi, cand) AS (SELECT 0::bigint, m.h, m.h FROM (SELECT "
             "coalesce(max(x.%2$s) + 1, 0) AS h FROM events x WHERE x.%1$s = %3$s) m UNION ALL "
             "SELECT CASE WHEN f.p IS NULL OR f.p %5$s %4$s::bigint THEN b.lo ELSE f.r + 1 END, "
             "CASE WHEN f.p IS NULL OR f.p %5$s %4$s::bigint THEN (b.lo + b.hi) / 2 ELSE b.hi "
             "END, CASE WHEN f.p %5$s %4$s::bigint THEN LEAST(b.cand, f.r) ELSE b.cand END FROM "
             "b LEFT JOIN LATERAL (SELECT x.%2$s AS r, x.global_position AS p FROM events x "
             "WHERE x.%1$s = %3$s AND x.%2$s >= (b.lo + b.hi) / 2 ORDER BY x.%2$s LIMIT 1) f ON "
             "true WHERE b.lo < b.hi) SELECT min(cand) FROM b)",
             col, rcol, key, pos, cmp);
}

int pg_query(backend *b, const query_args *q, stele_page **out)
{
    pg_backend *P = (pg_backend *)b;
    char key[256] = "", type[256] = "";
    if (q->key)
        snprintf(key, sizeof key, "%.*s", (int)q->key_len, q->key);
    if (q->type)
        snprintf(type, sizeof type, "%.*s", (int)q->type_len, q->type);
    const char *keycond = "TRUE";
    const char *order = "e.global_position";
    char ranked[1400];
    switch (q->kind) {
    case STELE_QUERY_CATEGORY:
    case STELE_QUERY_TYPE: {
        /* No (category, position) or (type, position) index since schema
         * version 4: the view numbers' indexes serve these queries. Within
         * one category (type) the view numbers follow position order, so
         * the events at or after position $6 are those numbered at or
         * after the first such event's number (pg_rank_bound_sql), and
         * ordering by number is ordering by position. */
        int cat = q->kind == STELE_QUERY_CATEGORY;
        const char *col = cat ? "stream_type" : "event_type", *rcol = cat ? "ce_rev" : "et_rev";
        char bound[1100];
        pg_rank_bound_sql(bound, sizeof bound, col, rcol, "$1", "$6", q->backwards ? ">" : ">=");
        snprintf(ranked, sizeof ranked, "e.%s = $1 AND e.%s %s %s", col, rcol,
                 q->backwards ? "<" : ">=", bound);
        keycond = ranked;
        order = cat ? "e.ce_rev" : "e.et_rev";
        break;
    }
    case STELE_QUERY_TAG: keycond = "cardinality(e.tags) > 0 AND e.tags @> ARRAY[$1::text]"; break;
    case STELE_QUERY_CORRELATION: keycond = "e.correlation_id = $1"; break;
    case STELE_QUERY_ACTOR: keycond = "e.actor = $1"; break;
    case STELE_QUERY_CAUSATION: keycond = "e.causation_id = $1"; break;
    default: keycond = "$1::text IS NULL OR TRUE"; break;
    }
    char vis[700], sql[3600];
    if (q->kind == STELE_QUERY_ALL)
        snprintf(vis, sizeof vis, "TRUE AND $2::bigint IS NOT NULL");
    else
        pg_visible_sql(vis, sizeof vis, "$2");
    snprintf(sql, sizeof sql,
             "SELECT " PG_EVENT_COLS " FROM events e JOIN streams s ON s.stream_id = e.stream_id "
             "WHERE (%s) AND %s AND ($3::text IS NULL OR e.event_type = $3) AND e.created_us >= "
             "$4::bigint AND e.created_us < $5::bigint AND e.global_position < " PG_DURABLE " AND "
             "e.global_position %s $6::bigint ORDER BY %s %s LIMIT $7::bigint",
             keycond, vis, q->backwards ? "<=" : ">=", order, q->backwards ? "DESC" : "ASC");
    pg_num b2, b4, b5;
    const char *vals[7] = {q->key ? key : NULL,
                           pg_numtxt(&b2, time_now_us()),
                           q->type ? type : NULL,
                           pg_numtxt(&b4, q->has_after ? q->after_us : INT64_MIN),
                           pg_numtxt(&b5, q->has_before ? q->before_us : INT64_MAX),
                           NULL,
                           NULL};
    stele_page *pg;
    int rc = new_page(P, q->limit, &pg);
    if (rc)
        return rc;
    PGconn *c = pg_conn_get(P);
    if (!c) {
        stele_page_free(pg);
        return STELE_EIO;
    }
    uint64_t last = 0;
    if (q->limit)
        rc = fill(c, pg, sql, 7, vals, NULL, NULL, q->from, q->backwards, q->limit, 0, 0, &last,
                  &pg->has_next, &pg->next);
    pg_conn_put(P, c);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

/* ------------------------------------------------------------ views */

/*
 * A view's revisions are the ordinals pg_write.c gives events under their
 * category (ce_rev), type (et_rev) and correlation id (bc_rev), and
 * streams (stream_no, on their revision 0): 0, 1, 2 ... in commit order,
 * as the local engine numbers them. $streams shows each stream's first
 * visible event under its stream's ordinal.
 */
int pg_read_view(backend *b, int kind, const char *key, size_t key_len, uint64_t from,
                 int backwards, size_t limit, stele_page **out)
{
    pg_backend *P = (pg_backend *)b;
    char k[256] = "";
    if (key)
        snprintf(k, sizeof k, "%.*s", (int)key_len, key);
    const char *col = kind == STELE_QUERY_CATEGORY ? "stream_type"
                      : kind == STELE_QUERY_TYPE   ? "event_type"
                                                   : "correlation_id";
    const char *rcol = kind == STELE_QUERY_CATEGORY ? "ce_rev"
                       : kind == STELE_QUERY_TYPE   ? "et_rev"
                                                    : "bc_rev";
    const char *skind = kind == VIEW_STREAMS           ? "s"
                        : kind == STELE_QUERY_CATEGORY ? "c"
                        : kind == STELE_QUERY_TYPE     ? "t"
                                                       : "b";
    char vis[700], sql[2400];
    pg_visible_sql(vis, sizeof vis, "$2");
    if (kind == VIEW_STREAMS)
        snprintf(sql, sizeof sql,
                 "SELECT " PG_EVENT_COLS ", z.stream_no FROM events z CROSS JOIN LATERAL "
                 "(SELECT e.* FROM events e JOIN streams s ON s.stream_id = e.stream_id WHERE "
                 "e.stream_id = z.stream_id AND %s AND e.global_position < " PG_DURABLE " ORDER "
                 "BY e.revision LIMIT 1) e WHERE $1::text IS NULL AND z.stream_no IS NOT NULL AND "
                 "z.global_position < " PG_DURABLE " AND z.stream_no %s $3::bigint ORDER BY "
                 "z.stream_no %s LIMIT $4::bigint",
                 vis, backwards ? "<=" : ">=", backwards ? "DESC" : "ASC");
    else
        snprintf(sql, sizeof sql,
                 "SELECT " PG_EVENT_COLS ", e.%s FROM events e JOIN streams s ON "
                 "s.stream_id = e.stream_id WHERE e.%s = $1 AND %s AND e.global_position < "
                 PG_DURABLE " AND e.%s %s $3::bigint ORDER BY e.%s %s LIMIT $4::bigint",
                 rcol, col, vis, rcol, backwards ? "<=" : ">=", rcol,
                 backwards ? "DESC" : "ASC");
    char vname[300];
    if (kind == VIEW_STREAMS)
        snprintf(vname, sizeof vname, "$streams");
    else
        snprintf(vname, sizeof vname, "%s%s",
                 kind == STELE_QUERY_CATEGORY ? "$ce-"
                 : kind == STELE_QUERY_TYPE   ? "$et-"
                                              : "$bc-",
                 k);
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    PGresult *r = NULL;
    const char *ev[2] = {skind, k};
    /* The view exists once its first event (number 0) is durable; one
     * removed by a scavenge no longer holds it back. */
    char xsql[600];
    snprintf(xsql, sizeof xsql,
             "SELECT 1 FROM stele_seq WHERE kind = $1 AND key = $2 AND NOT EXISTS (SELECT 1 FROM "
             "events e WHERE %s AND e.%s = 0 AND e.global_position >= " PG_DURABLE ")",
             kind == VIEW_STREAMS ? "$2 = $2" : kind == STELE_QUERY_CATEGORY ? "e.stream_type = $2"
             : kind == STELE_QUERY_TYPE ? "e.event_type = $2" : "e.correlation_id = $2",
             kind == VIEW_STREAMS ? "stream_no" : rcol);
    int rc = pg_exec(c, xsql, 2, ev, NULL, NULL, 0, &r, "reading a view");
    if (rc == 0) {
        int none = PQntuples(r) == 0;
        PQclear(r);
        if (none)
            rc = err_set(STELE_ENOTFOUND, "stream '%s' not found", vname);
    }
    stele_page *pg = NULL;
    if (rc == 0)
        rc = new_page(P, limit, &pg);
    if (rc == 0)
        rc = page_set_view(pg, vname, strlen(vname));
    pg_num b2;
    const char *vals[4] = {kind == VIEW_STREAMS ? NULL : k, pg_numtxt(&b2, time_now_us()), NULL,
                           NULL};
    uint64_t last = 0;
    if (rc == 0 && limit)
        rc = fill(c, pg, sql, 4, vals, NULL, NULL, from, backwards, limit, 10, 1, &last,
                  &pg->has_next, &pg->next);
    pg_conn_put(P, c);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

/* ------------------------------------------------------------ DCB reads */

int pg_dcb_sql(const stele_condition *cond, char *sql, size_t n, int *np, const char **vals,
               char **owned)
{
    size_t used = strlen(sql);
    int rc = 0;
    buf arr = {0};
    used += (size_t)snprintf(sql + used, n - used, "(");
    for (size_t i = 0; i < cond->nitems && rc == 0; i++) {
        const stele_query_item *it = &cond->items[i];
        used += (size_t)snprintf(sql + used, n - used, "%s(", i ? " OR " : "");
        int and = 0;
        for (int part = 0; part < 2 && rc == 0; part++) {
            size_t cnt = part ? it->ntags : it->ntypes;
            const char *const *v = part ? it->tags : it->types;
            if (!cnt)
                continue;
            arr.len = 0;
            rc = buf_append(&arr, "{", 1);
            for (size_t k = 0; k < cnt && rc == 0; k++) {
                if (k)
                    rc = buf_append(&arr, ",", 1);
                rc = rc ? rc : buf_append(&arr, "\"", 1);
                for (const char *p = v[k]; *p && rc == 0; p++) {
                    if (*p == '"' || *p == '\\')
                        rc = buf_append(&arr, "\\", 1);
                    if (rc == 0)
                        rc = buf_append(&arr, p, 1);
                }
                rc = rc ? rc : buf_append(&arr, "\"", 1);
            }
            rc = rc ? rc : buf_append(&arr, "}", 2);
            if (rc)
                break;
            char *copy = strdup((const char *)arr.p);
            if (!copy) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            owned[*np] = copy;
            vals[*np] = copy;
            (*np)++;
            used += (size_t)snprintf(sql + used, n - used,
                                     part ? "%scardinality(e.tags) > 0 AND e.tags @> $%d::text[]"
                                          : "%se.event_type = ANY($%d::text[])",
                                     and ? " AND " : "", *np);
            and = 1;
        }
        used += (size_t)snprintf(sql + used, n - used, ")");
    }
    snprintf(sql + used, n - used, ")");
    buf_free(&arr);
    if (used >= n - 2)
        return err_set(STELE_EINVAL, "condition too large");
    return rc;
}

int pg_read_matching(backend *b, const stele_condition *cond, uint64_t from, int backwards,
                     size_t limit, stele_page **out)
{
    pg_backend *P = (pg_backend *)b;
    char *sql = malloc(65536);
    const char *vals[PG_DCB_PARAMS + 2];
    char *owned[PG_DCB_PARAMS] = {0};
    int np = 0;
    int rc = sql ? 0 : err_set(STELE_ENOMEM, "out of memory");
    if (rc == 0) {
        snprintf(sql, 65536, "SELECT " PG_EVENT_COLS " FROM events e WHERE ");
        rc = pg_dcb_sql(cond, sql, 65536, &np, vals, owned);
    }
    if (rc == 0) {
        size_t used = strlen(sql);
        snprintf(sql + used, 65536 - used,
                 " AND e.global_position < " PG_DURABLE " AND e.global_position %s $%d::bigint "
                 "ORDER BY e.global_position %s LIMIT $%d::bigint",
                 backwards ? "<=" : ">=", np + 1, backwards ? "DESC" : "ASC", np + 2);
    }
    stele_page *pg = NULL;
    if (rc == 0)
        rc = new_page(P, limit, &pg);
    PGconn *c = rc == 0 ? pg_conn_get(P) : NULL;
    if (rc == 0 && !c)
        rc = STELE_EIO;
    uint64_t last = 0;
    if (rc == 0 && limit)
        rc = fill(c, pg, sql, np + 2, vals, NULL, NULL, from, backwards, limit, 0, 0, &last,
                  &pg->has_next, &pg->next);
    if (c)
        pg_conn_put(P, c);
    for (int i = 0; i < np; i++)
        free(owned[i]);
    free(sql);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

/* ------------------------------------------------------------ stats */

int pg_stats(backend *b, stele_stats *out)
{
    pg_backend *P = (pg_backend *)b;
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    PGresult *r = NULL;
    int rc = pg_exec(c,
                     "SELECT " PG_DURABLE ", (SELECT count(*) FROM streams "
                     "WHERE last_revision >= 0 OR deleted OR tombstoned OR meta_version >= 0), "
                     "pg_total_relation_size('events')",
                     0, NULL, NULL, NULL, 0, &r, "reading stats");
    pg_conn_put(P, c);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    out->events = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    out->streams = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    out->log_bytes = strtoull(PQgetvalue(r, 0, 2), NULL, 10);
    out->appends = atomic_load(&P->appends);
    out->groups = atomic_load(&P->groups);
    PQclear(r);
    return 0;
}

/* ------------------------------------------------------------ metadata */

int pg_get_metadata(backend *b, const char *stream, size_t len, stele_stream_metadata **out)
{
    pg_backend *P = (pg_backend *)b;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    const char *v[1] = {name};
    PGresult *r = NULL;
    int rc = pg_exec(c,
                     "SELECT " PG_STREAM_COLS ", meta_custom, " PG_DURABLE " FROM streams WHERE "
                     "stream_id = $1",
                     1, v, NULL, NULL, 1, &r, "reading metadata");
    pg_stream st = {0};
    if (rc == 0 && PQntuples(r)) {
        pg_stream_from(r, 0, 0, &st);
        /* A row last changed by a batch not durable yet: made durable
         * before it is reported (pg_stream_get). */
        if (st.last_pos != STELE_NONE && st.last_pos >= pg_u64(r, 0, 12) &&
            (rc = pg_durable_cover(c)))
            PQclear(r);
    }
    pg_conn_put(P, c);
    if (rc)
        return rc;
    if (!st.exists) {
        PQclear(r);
        return err_set(STELE_ENOTFOUND, "stream '%s' not found", name);
    }
    if (st.tombstoned) {
        PQclear(r);
        return err_set(STELE_EDELETED, "stream '%s' is tombstoned", name);
    }
    size_t cl = PQgetisnull(r, 0, 11) ? 0 : (size_t)PQgetlength(r, 0, 11);
    stele_stream_metadata *md = malloc(sizeof *md + cl + 1);
    if (!md) {
        PQclear(r);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    memset(md, 0, sizeof *md);
    char *custom = (char *)(md + 1);
    if (cl)
        memcpy(custom, PQgetvalue(r, 0, 11), cl);
    custom[cl] = 0;
    md->max_age_us = st.max_age_us;
    md->max_count = st.max_count;
    md->truncate_before = st.meta_tb;
    md->max_snapshots = st.max_snapshots;
    md->custom = cl ? custom : NULL;
    md->custom_len = cl;
    md->version = st.meta_version;
    PQclear(r);
    *out = md;
    return 0;
}

/* ------------------------------------------------------------ snapshots */

static int snap_at(PGconn *c, const pg_stream *st, const char *name, uint64_t rev,
                   stele_snapshot **out)
{
    *out = NULL;
    pg_num b1, b2;
    const char *v[3] = {name, pg_numtxt(&b1, rev > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)rev),
                        pg_numtxt(&b2, (int64_t)st->truncate_before)};
    PGresult *r = NULL;
    int rc = pg_exec(c,
                     "SELECT revision, schema_version, flags, state, created_us FROM snapshots "
                     "WHERE stream_id = $1 AND revision <= $2::bigint AND revision >= $3::bigint "
                     "ORDER BY revision DESC LIMIT 1",
                     3, v, NULL, NULL, 1, &r, "reading a snapshot");
    if (rc)
        return rc;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    size_t len = strlen(name), sl = (size_t)PQgetlength(r, 0, 3);
    stele_snapshot *s = malloc(sizeof *s + len + 1 + sl);
    if (!s) {
        PQclear(r);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    char *nm = (char *)(s + 1);
    memcpy(nm, name, len + 1);
    if (sl)
        memcpy(nm + len + 1, PQgetvalue(r, 0, 3), sl);
    s->stream = nm;
    s->stream_len = len;
    s->revision = pg_u64(r, 0, 0);
    s->schema_version = (uint32_t)pg_u64(r, 0, 1);
    s->flags = (uint32_t)pg_i32(r, 0, 2) & STELE_EVENT_JSON;
    s->created_us = pg_i64(r, 0, 4);
    s->state = nm + len + 1;
    s->state_len = sl;
    PQclear(r);
    *out = s;
    return 0;
}

int pg_get_snapshot(backend *b, const char *stream, size_t len, uint64_t at_or_before,
                    stele_snapshot **out)
{
    pg_backend *P = (pg_backend *)b;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    pg_stream st;
    int rc = stream_state(c, stream, len, &st);
    if (rc == 0)
        rc = snap_at(c, &st, name, at_or_before, out);
    pg_conn_put(P, c);
    return rc;
}

int pg_load(backend *b, const char *stream, size_t len, size_t limit, stele_snapshot **snap,
            stele_page **events)
{
    pg_backend *P = (pg_backend *)b;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)len, stream);
    PGconn *c = pg_conn_get(P);
    if (!c)
        return STELE_EIO;
    /* One consistent read: the snapshot and the events in one snapshot of
     * the database. */
    pg_stream st;
    stele_snapshot *s = NULL;
    stele_page *pg = NULL;
    /* First outside the snapshot, where a stream row newer than the durable
     * position can be made durable (a read-only transaction cannot); the
     * read inside then only sees more, and its events stop below D. */
    int rc = stream_state(c, stream, len, &st);
    if (rc == 0)
        rc = pg_cmd(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    int tx = rc == 0;
    if (rc == 0)
        rc = stream_state_x(c, stream, len, &st, 0);
    if (rc == 0)
        rc = snap_at(c, &st, name, STELE_END, &s);
    if (rc == 0)
        rc = new_page(P, limit, &pg);
    if (rc == 0)
        rc = read_range(c, pg, name, s ? s->revision + 1 : 0, 0, limit, pg_stream_start(&st),
                        st.last_rev, 0, 0);
    if (tx && PQstatus(c) == CONNECTION_OK) {
        PGresult *x = PQexec(c, "COMMIT");
        PQclear(x);
    }
    pg_conn_put(P, c);
    if (rc) {
        free(s);
        stele_page_free(pg);
        return rc;
    }
    *snap = s;
    *events = pg;
    return 0;
}

#endif /* STELE_WITH_POSTGRES */
