/*
 * jsjson.c - an event's JSON data straight into duktape values, for the
 * `body`/`data` of the event object handlers receive (prelude.js).
 *
 * Why: JSON.parse is the largest single cost of a handler that reads its
 * event's data (callgrind, bench_proj perstream: ~10,000 instructions for
 * an 80-byte object, most of it duktape's byte-at-a-time decoder). Here the
 * text is validated and tokenised in one pass by util/json_text.c's strict
 * RFC 8259 scanner, then the values are pushed from the tokens.
 *
 * The result must be exactly what JSON.parse gives, so this only takes the
 * documents it can build identically and answers "not handled" for the
 * rest, which the caller then gives to JSON.parse:
 *
 *   - the top level is an object or an array (a bare scalar is cheap for
 *     JSON.parse anyway);
 *   - no string contains a backslash (escapes, \u surrogate pairs in
 *     particular, are decoded by duktape its own way: a pair becomes two
 *     UTF-16 code units); raw UTF-8 bytes are copied as JSON.parse copies
 *     them;
 *   - no key is "__proto__" (JSON.parse defines it as an own property,
 *     while a put would set the prototype);
 *   - every number is read exactly: at most 15 significant digits and a
 *     decimal exponent within +-22, so m * 10^e or m / 10^-e is one
 *     correctly rounded operation on exact doubles (the classic fast path
 *     of decimal-to-binary conversion); others go to JSON.parse;
 *   - at most JSJSON_MAX_TOKENS values.
 *
 * Text that is not valid JSON here is also "not handled": JSON.parse then
 * decides (duktape accepts a few things RFC 8259 does not, such as a lone
 * surrogate escape, and its error is what handlers see).
 */
#include <string.h>

#include "duktape.h"
#include "proj/jsjson.h"
#include "util/json_text.h"

#define JSJSON_MAX_TOKENS 512

static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The number s[0..n) (already checked against the JSON grammar), if it can
 * be converted exactly here: 0 with *out, else -1. */
static int number(const char *s, size_t n, double *out)
{
    size_t i = 0;
    int neg = 0, digits = 0, frac = 0, seen_nonzero = 0;
    uint64_t m = 0;
    if (s[i] == '-') {
        neg = 1;
        i++;
    }
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        if (m || s[i] != '0' || seen_nonzero) {
            seen_nonzero = 1;
            if (++digits > 15)
                return -1;
        }
        m = m * 10 + (uint64_t)(s[i] - '0');
    }
    if (i < n && s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (m || s[i] != '0')
                if (++digits > 15)
                    return -1;
            m = m * 10 + (uint64_t)(s[i] - '0');
            frac++;
        }
    }
    long e = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0;
        i++;
        if (s[i] == '+' || s[i] == '-')
            eneg = s[i++] == '-';
        for (; i < n; i++) {
            e = e * 10 + (s[i] - '0');
            if (e > 1000)
                return -1;
        }
        if (eneg)
            e = -e;
    }
    e -= frac;
    double v = (double)m; /* exact: m < 10^15 < 2^53 */
    if (m == 0)
        v = 0;
    else if (e >= 0 && e <= 22)
        v *= pow10[e];
    else if (e < 0 && e >= -22)
        v /= pow10[-e];
    else
        return -1;
    *out = neg ? -v : v;
    return 0;
}

/* Push token *k's value (and its subtree), moving *k past it. 0, or -1
 * when it is not one this file builds (the stack is then left for the
 * caller to reset). */
static int push_value(duk_context *ctx, const char *s, const jtext_tok *t, size_t nt, size_t *k)
{
    if (*k >= nt)
        return -1;
    const jtext_tok *x = &t[(*k)++];
    const char *p = s + x->start;
    size_t n = (size_t)(x->end - x->start);
    switch (x->type) {
    case JTEXT_T_STRING:
        if (memchr(p, '\\', n))
            return -1;
        duk_push_lstring(ctx, p, n);
        return 0;
    case JTEXT_T_PRIMITIVE:
        if (p[0] == 't')
            duk_push_true(ctx);
        else if (p[0] == 'f')
            duk_push_false(ctx);
        else if (p[0] == 'n')
            duk_push_null(ctx);
        else {
            double v;
            if (number(p, n, &v))
                return -1;
            duk_push_number(ctx, v);
        }
        return 0;
    case JTEXT_T_ARRAY:
        if (!duk_check_stack(ctx, 4))
            return -1;
        duk_push_array(ctx);
        for (int i = 0; i < x->size; i++) {
            if (push_value(ctx, s, t, nt, k))
                return -1;
            duk_put_prop_index(ctx, -2, (duk_uarridx_t)i);
        }
        return 0;
    case JTEXT_T_OBJECT:
        if (!duk_check_stack(ctx, 4))
            return -1;
        duk_push_object(ctx);
        for (int i = 0; i < x->size; i++) {
            if (*k >= nt)
                return -1;
            const jtext_tok *key = &t[(*k)++];
            const char *kp = s + key->start;
            size_t kn = (size_t)(key->end - key->start);
            if (memchr(kp, '\\', kn) || (kn == 9 && !memcmp(kp, "__proto__", 9)))
                return -1;
            duk_push_lstring(ctx, kp, kn);
            if (push_value(ctx, s, t, nt, k))
                return -1;
            duk_put_prop(ctx, -3);
        }
        return 0;
    }
    return -1;
}

int proj_json_push(duk_context *ctx, const char *s, size_t n, proj_json_toks *tk)
{
    /* a scalar at the top: JSON.parse */
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    if (i == n || (s[i] != '{' && s[i] != '['))
        return 1;
    jtext_scan v;
    jtext_scan_init(&v, s, n, 0);
    v.toks = tk->toks;
    v.tok_cap = tk->cap;
    v.tok_max = JSJSON_MAX_TOKENS;
    int rc = jtext_scan_text(&v);
    tk->toks = v.toks; /* grown (or kept) for the next event */
    tk->cap = v.tok_cap;
    if (rc || v.tok_oom || v.nvalues > JSJSON_MAX_TOKENS)
        return 1;
    duk_idx_t top = duk_get_top(ctx);
    size_t k = 0;
    if (push_value(ctx, s, v.toks, v.nvalues, &k) || k != v.nvalues) {
        duk_set_top(ctx, top);
        return 1;
    }
    return 0;
}

void proj_json_toks_free(proj_json_toks *tk)
{
    free(tk->toks);
    tk->toks = NULL;
    tk->cap = 0;
}
