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

int meta_json_check_custom(const char *s, size_t len, size_t max_fields)
{
    jtext_scan v;
    jtext_scan_init(&v, s, len, META_JSON_DEPTH);
    jtext_scan_ws(&v);
    if (v.pos >= len || v.s[v.pos] != '{')
        return err_set(STELE_EINVAL, "custom metadata must be a JSON object (at byte %zu)", v.pos);
    /* Walk the top-level object here to see its member names. */
    buf names = {0};
    mname *ms = NULL;
    size_t nm = 0, cap = 0;
    int rc = 0;
    /* Decoded names are never longer than their JSON text. */
    if (buf_reserve(&names, len + 1))
        return err_set(STELE_ENOMEM, "out of memory");
    v.depth = 1;
    v.pos++;
    jtext_scan_ws(&v);
    if (v.pos < len && v.s[v.pos] == '}') {
        v.pos++;
    } else {
        for (;;) {
            if (v.pos >= len) {
                bad(&v, len, "unexpected end of input");
                break;
            }
            if (v.s[v.pos] != '"') {
                bad(&v, v.pos, "expected a string key");
                break;
            }
            size_t at = v.pos, off = names.len;
            if (member_name(&v, &names))
                break;
            if (nm == max_fields) {
                rc = err_set(STELE_EINVAL, "custom metadata has more than %zu members", max_fields);
                break;
            }
            if (is_reserved(names.p + off, names.len - off)) {
                rc = err_set(STELE_EINVAL,
                             "custom metadata: member name '%.*s' is reserved (maxAge, "
                             "maxCount, truncateBefore, maxSnapshots and names starting with "
                             "'$')",
                             (int)(names.len - off > 64 ? 64 : names.len - off),
                             (const char *)names.p + off);
                break;
            }
            if (nm == cap) {
                cap = cap ? cap * 2 : 16;
                mname *nms = realloc(ms, cap * sizeof *ms);
                if (!nms) {
                    rc = err_set(STELE_ENOMEM, "out of memory");
                    break;
                }
                ms = nms;
            }
            ms[nm++] = (mname){off, names.len - off, at};
            jtext_scan_ws(&v);
            if (v.pos >= len || v.s[v.pos] != ':') {
                bad(&v, v.pos, v.pos >= len ? "unexpected end of input" : "expected ':'");
                break;
            }
            v.pos++;
            if (jtext_scan_value(&v))
                break;
            jtext_scan_ws(&v);
            if (v.pos < len && v.s[v.pos] == ',') {
                v.pos++;
                jtext_scan_ws(&v);
                if (v.pos < len && v.s[v.pos] == '}') {
                    bad(&v, v.pos - 1, "trailing comma");
                    break;
                }
                continue;
            }
            if (v.pos < len && v.s[v.pos] == '}') {
                v.pos++;
                break;
            }
            bad(&v, v.pos, v.pos >= len ? "unexpected end of input" : "expected ',' or '}'");
            break;
        }
    }
    if (rc == 0 && !v.why) {
        jtext_scan_ws(&v);
        if (v.pos < len)
            bad(&v, v.pos, "data after the JSON value");
    }
    if (rc == 0 && v.why)
        rc = err_set(STELE_EINVAL, "custom metadata is not valid JSON: %s at byte %zu", v.why,
                     v.err_at);
    if (rc == 0 && nm > 1) {
        cmp_names_buf = &names; /* qsort has no context argument in C11 */
        qsort(ms, nm, sizeof *ms, cmp_names);
        for (size_t k = 1; k < nm; k++)
            if (ms[k].len == ms[k - 1].len &&
                !memcmp(names.p + ms[k].off, names.p + ms[k - 1].off, ms[k].len)) {
                rc = err_set(STELE_EINVAL,
                             "custom metadata: member name '%.*s' appears twice",
                             (int)(ms[k].len > 64 ? 64 : ms[k].len),
                             (const char *)names.p + ms[k].off);
                break;
            }
    }
    free(ms);
    buf_free(&names);
    return rc;
}
