/*
 * query.c - the API edge of queries and temporal stream reads
 * (include/stele.h, "queries"): every argument is checked here with a
 * precise message before the backend runs the query.
 */
#include <stdio.h>
#include <string.h>

#include "backend/page.h"
#include "store/store_int.h"
#include "util/util.h"

#define MAX_NAME 255u

static const char *kind_name(int kind)
{
    switch (kind) {
    case STELE_QUERY_CATEGORY: return "category";
    case STELE_QUERY_TYPE: return "type";
    case STELE_QUERY_TAG: return "tag";
    case STELE_QUERY_CORRELATION: return "correlation id";
    case STELE_QUERY_ACTOR: return "actor";
    case STELE_QUERY_CAUSATION: return "causation id";
    default: return "all";
    }
}

/* A query key or type: 1..255 bytes of UTF-8, no control characters. */
static int check_key(const char *what, const char *s, size_t *len)
{
    if (!s)
        return err_set(STELE_EINVAL, "query: %s is NULL", what);
    size_t n = strnlen(s, MAX_NAME + 1);
    if (n == 0)
        return err_set(STELE_EINVAL, "query: %s is empty", what);
    if (n > MAX_NAME)
        return err_set(STELE_EINVAL, "query: %s is longer than %u bytes", what, MAX_NAME);
    size_t at;
    const char *why = utf8_check_name(s, n, &at);
    if (why)
        return err_set(STELE_EINVAL, "query: %s: %s at byte %zu", what, why, at);
    *len = n;
    return 0;
}

static int check_direction(int direction)
{
    if (direction != STELE_FORWARDS && direction != STELE_BACKWARDS)
        return err_set(STELE_EINVAL, "direction %d is neither STELE_FORWARDS nor STELE_BACKWARDS",
                       direction);
    return 0;
}

int stele_read_query(stele_db *db, const stele_query *q, stele_page **out)
{
    err_clear();
    if (!db || !q || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : !q ? "query" : "out");
    *out = NULL;
    query_args a;
    memset(&a, 0, sizeof a);
    int rc;
    if (q->kind < STELE_QUERY_CATEGORY || q->kind > STELE_QUERY_CAUSATION)
        return err_set(STELE_EINVAL, "query: unknown kind %d", q->kind);
    a.kind = q->kind;
    if (q->kind == STELE_QUERY_ALL) {
        if (q->key)
            return err_set(STELE_EINVAL, "query: a query of all events takes no key");
    } else {
        char what[32];
        snprintf(what, sizeof what, "%s key", kind_name(q->kind));
        if ((rc = check_key(what, q->key, &a.key_len)))
            return rc;
        a.key = q->key;
        if (q->kind == STELE_QUERY_CATEGORY && memchr(q->key, '-', a.key_len) && q->key[0] != '-')
            return err_set(STELE_EINVAL,
                           "query: category '%s' contains '-': a category is the part of a "
                           "stream name before its first '-'",
                           q->key);
    }
    if (q->type) {
        if (q->kind == STELE_QUERY_TYPE || q->kind == STELE_QUERY_ALL)
            return err_set(STELE_EINVAL,
                           "query: a type restriction applies to category, tag, correlation "
                           "and actor queries only (use a type query)");
        if ((rc = check_key("type", q->type, &a.type_len)))
            return rc;
        a.type = q->type;
    }
    if (q->has_after && q->has_before && q->after_us > q->before_us)
        return err_set(STELE_EINVAL, "query: after (%lld us) is later than before (%lld us)",
                       (long long)q->after_us, (long long)q->before_us);
    if ((rc = check_direction(q->direction)))
        return rc;
    a.has_after = q->has_after != 0;
    a.has_before = q->has_before != 0;
    a.after_us = q->after_us;
    a.before_us = q->before_us;
    a.from = q->from;
    a.backwards = q->direction == STELE_BACKWARDS;
    a.limit = q->limit;
    return db->be->ops->query(db->be, &a, out);
}

/* The checks of a stream read (the same messages as stele_read_stream). */
static int check_stream_read(stele_db *db, const char *stream, int direction, stele_page **out,
                             size_t *slen)
{
    if (!db || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "out");
    *out = NULL;
    int rc = check_direction(direction);
    if (rc)
        return rc;
    if (!stream)
        return err_set(STELE_EINVAL, "stream name is NULL");
    size_t n = strnlen(stream, MAX_NAME + 1);
    if (n == 0)
        return err_set(STELE_EINVAL, "stream name is empty");
    if (n > MAX_NAME)
        return err_set(STELE_EINVAL, "stream name is longer than %u bytes", MAX_NAME);
    size_t at;
    const char *why = utf8_check_name(stream, n, &at);
    if (why)
        return err_set(STELE_EINVAL, "stream name: %s at byte %zu", why, at);
    int kind;
    const char *key;
    size_t klen;
    if (store_view_parse(stream, n, &kind, &key, &klen))
        return err_set(STELE_EINVAL, "'%s' is a view stream: reads up to a revision or a time "
                       "are for ordinary streams", stream);
    if (stream[0] == '$')
        return err_set(STELE_EINVAL, "stream name '%s': names starting with '$' are reserved",
                       stream);
    *slen = n;
    return 0;
}

int stele_read_stream_to(stele_db *db, const char *stream, uint64_t from, int direction,
                         size_t limit, uint64_t to, stele_page **out)
{
    err_clear();
    size_t slen = 0;
    int rc = check_stream_read(db, stream, direction, out, &slen);
    if (rc)
        return rc;
    return db->be->ops->read_stream_to(db->be, stream, slen, from, direction == STELE_BACKWARDS,
                                       limit, to, 0, 0, out);
}

int stele_read_stream_as_of(stele_db *db, const char *stream, int64_t as_of_us, uint64_t from,
                            int direction, size_t limit, stele_page **out)
{
    err_clear();
    size_t slen = 0;
    int rc = check_stream_read(db, stream, direction, out, &slen);
    if (rc)
        return rc;
    return db->be->ops->read_stream_to(db->be, stream, slen, from, direction == STELE_BACKWARDS,
                                       limit, STELE_END, 1, as_of_us, out);
}

/*
 * A stream read bounded by time (seed 000's by-timestamp reads): the
 * events created at or after `after_us` and before `before_us`. Commit
 * times never go down along the log (the writer keeps them monotonic), so
 * along a stream too: the upper bound is the as-of read's ("created at or
 * before before_us - 1"), and the lower bound is the lowest revision whose
 * first visible event is recent enough, found by bisecting the stream with
 * one-event reads (O(log n) of them, on any backend). Forwards the read
 * starts there; backwards it stops there.
 */
static int first_rev_after(stele_db *db, const char *stream, size_t slen, int64_t after_us,
                           uint64_t last, uint64_t *out)
{
    uint64_t lo = 0, hi = last + 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        stele_page *pg;
        int rc = db->be->ops->read_stream_to(db->be, stream, slen, mid, 0, 1, STELE_END, 0, 0,
                                             &pg);
        if (rc)
            return rc;
        const stele_event *e = pg->count ? stele_page_event(pg, 0) : NULL;
        if (!e || e->created_us >= after_us) {
            hi = mid;
        } else {
            lo = e->revision + 1;
            if (lo > hi)
                lo = hi;
        }
        stele_page_free(pg);
    }
    *out = lo;
    return 0;
}

int stele_read_stream_between(stele_db *db, const char *stream, int64_t after_us,
                              int64_t before_us, uint64_t from, int direction, size_t limit,
                              stele_page **out)
{
    err_clear();
    size_t slen = 0;
    int rc = check_stream_read(db, stream, direction, out, &slen);
    if (rc)
        return rc;
    if (after_us > before_us)
        return err_set(STELE_EINVAL, "after is later than before");
    int backwards = direction == STELE_BACKWARDS;
    uint64_t lo = 0;
    if (after_us != INT64_MIN) {
        stele_stream_info info;
        if ((rc = stele_stream_head(db, stream, &info)))
            return rc;
        if (info.last_revision != STELE_NONE &&
            (rc = first_rev_after(db, stream, slen, after_us, info.last_revision, &lo)))
            return rc;
        if (info.last_revision == STELE_NONE)
            lo = 0;
        if (!backwards && from < lo)
            from = lo;
        if (backwards && from < lo)
            from = lo > 0 ? lo - 1 : 0; /* nothing at or below `from` qualifies */
    }
    int bounded = before_us != INT64_MAX;
    rc = db->be->ops->read_stream_to(db->be, stream, slen, from, backwards, limit, STELE_END,
                                     bounded, bounded ? before_us - 1 : 0, out);
    if (rc || !backwards || lo == 0)
        return rc;
    /* Backwards: cut the page where the events get older than `after`. */
    stele_page *pg = *out;
    size_t keep = 0;
    while (keep < pg->count && stele_page_event(pg, keep)->revision >= lo)
        keep++;
    if (keep < pg->count || (pg->has_next && pg->next < lo)) {
        pg->count = keep;
        pg->has_next = 0;
    }
    return 0;
}
