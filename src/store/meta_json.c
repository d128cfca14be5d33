/*
 * meta_json.c - the one piece of JSON the library itself checks: the custom
 * fields of stream metadata. They are stored byte for byte and the server
 * splices their members into the metadata object it returns, so the library
 * must know they are one valid JSON object whose member names cannot clash
 * with the reserved ones (docs/streams.md). Event data is not checked here:
 * the store keeps it as bytes and only the server parses it.
 *
 * A recursive descent over RFC 8259: whitespace, objects, arrays, strings
 * (escapes, surrogate pairs, well-formed UTF-8 per Unicode table 3-7, no
 * raw control characters), numbers (the grammar: no leading zeros, digits
 * after '.' and 'e'), the three literals, at most META_JSON_DEPTH levels of
 * nesting and nothing after the value. The top level must be an object;
 * its member names are decoded to compare them (duplicates, reserved names).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"
#include "util/util.h"

#define META_JSON_DEPTH 64

typedef struct jv {
    const uint8_t *s;
    size_t len, i;
    int depth;
    size_t err_at;
    const char *why;
} jv;

static int bad(jv *v, size_t at, const char *why)
{
    v->err_at = at;
    v->why = why;
    return -1;
}

static void ws(jv *v)
{
    while (v->i < v->len &&
           (v->s[v->i] == ' ' || v->s[v->i] == '\t' || v->s[v->i] == '\n' || v->s[v->i] == '\r'))
        v->i++;
}

static long hex4(jv *v, size_t at)
{
    if (at + 4 > v->len)
        return -1;
    long x = 0;
    for (int k = 0; k < 4; k++) {
        int h = hex_digit(v->s[at + k]);
        if (h < 0)
            return -1;
        x = x * 16 + h;
    }
    return x;
}

/* Length of the well-formed UTF-8 sequence at s[i] (>= 0x80), 0 if none. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xbf)
            return 0;
    return len;
}

static void put_utf8(buf *out, uint32_t c)
{
    uint8_t b[4];
    size_t n = utf8_encode(c, b);
    buf_append(out, b, n);
}

/* A string at v->i (the opening quote). With `out`, its decoded text is
 * appended there. */
static int string(jv *v, buf *out)
{
    v->i++;
    for (;;) {
        if (v->i >= v->len)
            return bad(v, v->len, "unterminated string");
        uint8_t c = v->s[v->i];
        if (c == '"') {
            v->i++;
            return 0;
        }
        if (c < 0x20)
            return bad(v, v->i, "control character in a string");
        if (c >= 0x80) {
            size_t n = utf8_len(v->s + v->i, v->len - v->i);
            if (!n)
                return bad(v, v->i, "invalid UTF-8");
            if (out)
                buf_append(out, v->s + v->i, n);
            v->i += n;
            continue;
        }
        if (c != '\\') {
            if (out)
                buf_append(out, &c, 1);
            v->i++;
            continue;
        }
        size_t at = v->i;
        if (at + 1 >= v->len)
            return bad(v, at, "unterminated string");
        uint8_t e = v->s[at + 1];
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *k = e ? strchr(from, e) : NULL;
        if (k) {
            if (out)
                buf_append(out, &to[k - from], 1);
            v->i += 2;
            continue;
        }
        if (e != 'u')
            return bad(v, at, "invalid escape");
        long u = hex4(v, at + 2);
        if (u < 0)
            return bad(v, at, "invalid \\u escape");
        v->i = at + 6;
        uint32_t cp = (uint32_t)u;
        if (u >= 0xdc00 && u <= 0xdfff)
            return bad(v, at, "lone low surrogate");
        if (u >= 0xd800 && u <= 0xdbff) {
            long lo = v->i + 1 < v->len && v->s[v->i] == '\\' && v->s[v->i + 1] == 'u'
                          ? hex4(v, v->i + 2)
                          : -1;
            if (lo < 0xdc00 || lo > 0xdfff)
                return bad(v, at, "high surrogate without a low one");
            cp = 0x10000 + (((uint32_t)u - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
            v->i += 6;
        }
        if (out)
            put_utf8(out, cp);
    }
}

static int digits(jv *v)
{
    size_t st = v->i;
    while (v->i < v->len && v->s[v->i] >= '0' && v->s[v->i] <= '9')
        v->i++;
    return v->i > st ? 0 : bad(v, v->i, "digit expected");
}

static int number(jv *v)
{
    if (v->s[v->i] == '-')
        v->i++;
    if (v->i < v->len && v->s[v->i] == '0') {
        v->i++;
        if (v->i < v->len && v->s[v->i] >= '0' && v->s[v->i] <= '9')
            return bad(v, v->i, "leading zero in a number");
    } else if (digits(v)) {
        return -1;
    }
    if (v->i < v->len && v->s[v->i] == '.') {
        v->i++;
        if (digits(v))
            return -1;
    }
    if (v->i < v->len && (v->s[v->i] == 'e' || v->s[v->i] == 'E')) {
        v->i++;
        if (v->i < v->len && (v->s[v->i] == '+' || v->s[v->i] == '-'))
            v->i++;
        if (digits(v))
            return -1;
    }
    return 0;
}

static int value(jv *v);

static int container(jv *v)
{
    uint8_t close = v->s[v->i] == '{' ? '}' : ']';
    if (++v->depth > META_JSON_DEPTH)
        return bad(v, v->i, "nested too deeply");
    v->i++;
    ws(v);
    if (v->i < v->len && v->s[v->i] == close) {
        v->i++;
        v->depth--;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            if (v->i >= v->len || v->s[v->i] != '"')
                return bad(v, v->i, "member name expected");
            if (string(v, NULL))
                return -1;
            ws(v);
            if (v->i >= v->len || v->s[v->i] != ':')
                return bad(v, v->i, "':' expected");
            v->i++;
        }
        if (value(v))
            return -1;
        ws(v);
        if (v->i < v->len && v->s[v->i] == ',') {
            v->i++;
            ws(v);
            continue;
        }
        if (v->i < v->len && v->s[v->i] == close) {
            v->i++;
            v->depth--;
            return 0;
        }
        return bad(v, v->i, close == '}' ? "',' or '}' expected" : "',' or ']' expected");
    }
}

static int value(jv *v)
{
    ws(v);
    if (v->i >= v->len)
        return bad(v, v->len, "unexpected end");
    uint8_t c = v->s[v->i];
    if (c == '{' || c == '[')
        return container(v);
    if (c == '"')
        return string(v, NULL);
    if (c == '-' || (c >= '0' && c <= '9'))
        return number(v);
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(lits[k]);
        if (v->len - v->i >= n && !memcmp(v->s + v->i, lits[k], n)) {
            v->i += n;
            return 0;
        }
    }
    return bad(v, v->i, "unexpected character");
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
    jv v = {(const uint8_t *)s, len, 0, 0, 0, NULL};
    ws(&v);
    if (v.i >= len || v.s[v.i] != '{')
        return err_set(STELE_EINVAL, "custom metadata must be a JSON object (at byte %zu)", v.i);
    /* Walk the top-level object here to see its member names. */
    buf names = {0};
    mname *ms = NULL;
    size_t nm = 0, cap = 0;
    int rc = 0;
    /* Decoded names are never longer than their JSON text. */
    if (buf_reserve(&names, len + 1))
        return err_set(STELE_ENOMEM, "out of memory");
    v.depth = 1;
    v.i++;
    ws(&v);
    if (v.i < len && v.s[v.i] == '}') {
        v.i++;
    } else {
        for (;;) {
            if (v.i >= len || v.s[v.i] != '"') {
                bad(&v, v.i, "member name expected");
                break;
            }
            size_t at = v.i, off = names.len;
            if (string(&v, &names))
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
            ws(&v);
            if (v.i >= len || v.s[v.i] != ':') {
                bad(&v, v.i, "':' expected");
                break;
            }
            v.i++;
            if (value(&v))
                break;
            ws(&v);
            if (v.i < len && v.s[v.i] == ',') {
                v.i++;
                ws(&v);
                continue;
            }
            if (v.i < len && v.s[v.i] == '}') {
                v.i++;
                break;
            }
            bad(&v, v.i, "',' or '}' expected");
            break;
        }
    }
    if (rc == 0 && !v.why) {
        ws(&v);
        if (v.i < len)
            bad(&v, v.i, "something follows the object");
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
