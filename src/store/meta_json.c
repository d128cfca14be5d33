/*
 * meta_json.c - the one piece of JSON the library itself checks: the custom
 * fields of stream metadata. They are stored byte for byte and the server
 * splices their members into the metadata object it returns, so the library
 * must know they are one valid JSON object whose member names cannot clash
 * with the reserved ones (docs/streams.md). Event data is not checked here:
 * the store keeps it as bytes and only the server parses it.
 *
 * The JSON itself is checked by the validator every JSON reader of Stele
 * shares (util/json_text.c: RFC 8259 strings, escapes, surrogate pairs,
 * UTF-8 per Unicode table 3-7, the number grammar, the literals, at most
 * META_JSON_DEPTH levels of nesting), with its messages. This file walks
 * only the top level itself, which must be an object: its member names are
 * decoded to compare them (duplicates, reserved names), and each member's
 * value is handed to the shared scanner.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"
#include "util/json_text.h"
#include "util/util.h"

#define META_JSON_DEPTH JTEXT_MAX_DEPTH

static int bad(jtext_scan *v, size_t at, const char *why)
{
    v->err_at = at;
    v->why = why;
    return -1;
}

/* The member name whose opening quote is at v->pos: validated by the
 * shared scanner, then its decoded text appended to `out`. */
static int member_name(jtext_scan *v, buf *out)
{
    size_t start = v->pos;
    if (jtext_scan_string(v))
        return -1;
    size_t n = v->pos - start - 2;
    if (buf_reserve(out, n))
        return bad(v, start, "out of memory");
    long k = jtext_unescape((const char *)v->s + start + 1, n, (char *)out->p + out->len, n);
    if (k < 0) /* never: the scanner accepted it */
        return bad(v, start, "invalid string");
    out->len += (size_t)k;
    return 0;
}

static int is_reserved(const uint8_t *name, size_t n)
{
    static const char *const words[] = {"maxAge", "maxCount", "truncateBefore", "maxSnapshots"};
    /* $acl: KurrentDB's access control list, kept for the server's
     * access checks (docs/security.md); other $ names stay reserved. */
    if (n == 4 && !memcmp(name, "$acl", 4))
        return 0;
    if (n && name[0] == '$')
        return 1;
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
        if (strlen(words[k]) == n && !memcmp(words[k], name, n))
            return 1;
    return 0;
}

typedef struct mname {
    size_t off, len, at;
} mname;

static _Thread_local buf *cmp_names_buf;

static int cmp_names(const void *a, const void *b)
{
    const mname *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(cmp_names_buf->p + x->off, cmp_names_buf->p + y->off, n);
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* The walk of a custom metadata object: the scanner, and the top-level
 * member names seen (decoded into `names`, located by `ms`). */
typedef struct mwalk {
    jtext_scan v;
    size_t len, max_fields;
    buf names;
    mname *ms;
    size_t nm, cap;
} mwalk;

/* A member name was just decoded at names[off..]: within the limit, not
 * reserved; remember it for the duplicate check. */
static int member_take(mwalk *w, size_t at, size_t off)
{
    const uint8_t *name = w->names.p + off;
    size_t n = w->names.len - off;
    if (w->nm == w->max_fields)
        return err_set(STELE_EINVAL, "custom metadata has more than %zu members", w->max_fields);
    if (is_reserved(name, n))
        return err_set(STELE_EINVAL,
                       "custom metadata: member name '%.*s' is reserved (maxAge, maxCount, "
                       "truncateBefore, maxSnapshots and names starting with '$')",
                       (int)(n > 64 ? 64 : n), (const char *)name);
    if (w->nm == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        mname *nms = realloc(w->ms, cap * sizeof *nms);
        if (!nms)
            return err_set(STELE_ENOMEM, "out of memory");
        w->ms = nms;
        w->cap = cap;
    }
    w->ms[w->nm++] = (mname){off, n, at};
    return 0;
}

/* bad(), then 1: the member walk stops. */
static int stop(jtext_scan *v, size_t at, const char *why)
{
    bad(v, at, why);
    return 1;
}

/* One member, "name": value, then ',' or '}'. 0: more members follow;
 * 1: the object ended; an error (rc, or v.why set by the scanner) stops. */
static int member_walk(mwalk *w, int *rc)
{
    jtext_scan *v = &w->v;
    size_t len = w->len;
    if (v->pos >= len)
        return stop(v, len, "unexpected end of input");
    if (v->s[v->pos] != '"')
        return stop(v, v->pos, "expected a string key");
    size_t at = v->pos, off = w->names.len;
    if (member_name(v, &w->names))
        return 1;
    if ((*rc = member_take(w, at, off)))
        return 1;
    jtext_scan_ws(v);
    if (v->pos >= len || v->s[v->pos] != ':')
        return stop(v, v->pos, v->pos >= len ? "unexpected end of input" : "expected ':'");
    v->pos++;
    if (jtext_scan_value(v))
        return 1;
    jtext_scan_ws(v);
    if (v->pos < len && v->s[v->pos] == ',') {
        v->pos++;
        jtext_scan_ws(v);
        if (v->pos < len && v->s[v->pos] == '}')
            return stop(v, v->pos - 1, "trailing comma");
        return 0;
    }
    if (v->pos < len && v->s[v->pos] == '}') {
        v->pos++;
        return 1;
    }
    return stop(v, v->pos, v->pos >= len ? "unexpected end of input" : "expected ',' or '}'");
}

/* No member name twice (sorted, then neighbours compared). */
static int members_unique(mwalk *w)
{
    if (w->nm < 2)
        return 0;
    cmp_names_buf = &w->names; /* qsort has no context argument in C11 */
    qsort(w->ms, w->nm, sizeof *w->ms, cmp_names);
    for (size_t k = 1; k < w->nm; k++) {
        const mname *x = &w->ms[k - 1], *y = &w->ms[k];
        if (y->len == x->len && !memcmp(w->names.p + y->off, w->names.p + x->off, y->len))
            return err_set(STELE_EINVAL, "custom metadata: member name '%.*s' appears twice",
                           (int)(y->len > 64 ? 64 : y->len), (const char *)w->names.p + y->off);
    }
    return 0;
}

int meta_json_check_custom(const char *s, size_t len, size_t max_fields)
{
    mwalk w = {.len = len, .max_fields = max_fields};
    jtext_scan *v = &w.v;
    jtext_scan_init(v, s, len, META_JSON_DEPTH);
    jtext_scan_ws(v);
    if (v->pos >= len || v->s[v->pos] != '{')
        return err_set(STELE_EINVAL, "custom metadata must be a JSON object (at byte %zu)", v->pos);
    /* Walk the top-level object here to see its member names. Decoded
     * names are never longer than their JSON text. */
    if (buf_reserve(&w.names, len + 1))
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = 0;
    v->depth = 1;
    v->pos++;
    jtext_scan_ws(v);
    if (v->pos < len && v->s[v->pos] == '}')
        v->pos++;
    else
        while (!member_walk(&w, &rc))
            ;
    if (rc == 0 && !v->why) {
        jtext_scan_ws(v);
        if (v->pos < len)
            bad(v, v->pos, "data after the JSON value");
    }
    if (rc == 0 && v->why)
        rc = err_set(STELE_EINVAL, "custom metadata is not valid JSON: %s at byte %zu", v->why,
                     v->err_at);
    if (rc == 0)
        rc = members_unique(&w);
    free(w.ms);
    buf_free(&w.names);
    return rc;
}
