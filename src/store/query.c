/*
 * query.c - the API edge of queries and temporal stream reads
 * (include/stele.h, "queries"): every argument is checked here with a
 * precise message before the backend runs the query.
 */
#include <stdio.h>
#include <string.h>

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
    if (q->kind < STELE_QUERY_CATEGORY || q->kind > STELE_QUERY_ALL)
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
