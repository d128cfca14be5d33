/*
 * json_text.c - JSON text (RFC 8259) for every reader and writer in Stele:
 * escapes, \u decoding with surrogate pairs, UTF-8 checks, the string
 * scanner and the validator (see json_text.h).
 *
 * The validator is a recursive descent whose depth is bounded by
 * max_depth, so hostile nesting cannot exhaust the stack. It counts values
 * and, when asked (tok_max), records each as a token (type and byte span,
 * jsmn's layout), so server/json.c validates and tokenizes an append body in
 * one pass. Its messages are part of the HTTP API
 * ("invalid JSON at byte 17: leading zero in number") and of
 * stele_set_stream_metadata's errors: tests pin them.
 *
 * Invariants: no function reads outside s[0..len); jtext_unescape never
 * writes more than cap bytes; jtext_escape's output is valid JSON for any
 * input bytes.
 */
#include "util/json_text.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "stele.h"

#define JT_STR_(x) #x
#define JT_STR(x) JT_STR_(x)

/* ------------------------------------------------------------ characters */

long jtext_hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_digit((unsigned char)p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

size_t jtext_utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* no overlong 3-byte form */
        else if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* no overlong 4-byte form */
        else if (c == 0xf4)
            hi = 0x8f; /* nothing above U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return len;
}

size_t jtext_utf8_put(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

int jtext_u_escape(const char *s, size_t n, uint32_t *cp)
{
    if (n < 6)
        return JTEXT_U_SHORT;
    long hi = jtext_hex4(s + 2);
    if (hi < 0)
        return JTEXT_U_HEX;
    if (hi >= 0xdc00 && hi <= 0xdfff)
        return JTEXT_U_LONE;
    if (hi < 0xd800 || hi > 0xdbff) {
        *cp = (uint32_t)hi;
        return 6;
    }
    /* A high surrogate must be followed by an escaped low one. */
    long lo = -1;
    if (n >= 12 && s[6] == '\\' && s[7] == 'u')
        lo = jtext_hex4(s + 8);
    if (lo < 0xdc00 || lo > 0xdfff)
        return JTEXT_U_LONE;
    *cp = 0x10000 + (((uint32_t)hi - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
    return 12;
}

long jtext_unescape(const char *raw, size_t n, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    while (i < n) {
        const char *bs = memchr(raw + i, '\\', n - i);
        size_t run = bs ? (size_t)(bs - (raw + i)) : n - i;
        if (cap - o < run)
            return -1;
        memcpy(out + o, raw + i, run);
        o += run;
        i += run;
        if (i >= n)
            break;
        if (i + 1 >= n)
            return -1;
        char e = raw[i + 1], c;
        switch (e) {
        case '"': case '\\': case '/': c = e; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            uint32_t cp;
            int used = jtext_u_escape(raw + i, n - i, &cp);
            if (used < 0)
                return -1;
            uint8_t u[4];
            size_t k = jtext_utf8_put(cp, u);
            if (cap - o < k)
                return -1;
            memcpy(out + o, u, k);
            o += k;
            i += (size_t)used;
            continue;
        }
        default:
            return -1;
        }
        if (o == cap)
            return -1;
        out[o++] = c;
        i += 2;
    }
    return (long)o;
}

/* Byte classes for the string scanner and the escaper: 0 plain ASCII,
 * 1 needs a look ('"', '\\', control characters), 2 non-ASCII (a UTF-8
 * sequence). */
static const uint8_t str_class[256] = {
    /* 0x00..0x1f: control characters */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1 /* " */, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 /* \ */, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

int jtext_escape(buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *u = (const uint8_t *)s;
    int rc = buf_reserve(b, len + 2);
    if (rc)
        return rc;
    b->p[b->len++] = '"';
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        for (;;) {
            while (run < len && str_class[u[run]] == 0)
                run++;
            if (run < len && u[run] >= 0x80) {
                size_t n = jtext_utf8_seq(u + run, len - run);
                if (n) {
                    run += n;
                    continue;
                }
            }
            break;
        }
        if ((rc = buf_append(b, u + i, run - i)))
            return rc;
        i = run;
        if (i >= len)
            break;
        uint8_t c = u[i++];
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            /* Another control character, or a byte of invalid UTF-8. */
            if (c >= 0x80) {
                memcpy(esc, "\\ufffd", 6);
            } else {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0xf];
            }
            n = 6;
        }
        if ((rc = buf_append(b, esc, n)))
            return rc;
    }
    return buf_append(b, "\"", 1);
}

/* ------------------------------------------------------------- validator */

static int v_fail(jtext_scan *v, size_t at, const char *why, bool show_char)
{
    v->err_at = at;
    v->why = why;
    v->show_char = show_char;
    return -1;
}

static int v_eof(jtext_scan *v) { return v_fail(v, v->len, "unexpected end of input", false); }

/* Record value number v->nvalues (about to be counted) as a token: its
 * index, or -1 when not recording (off, past tok_max, or out of memory). */
static long v_tok_grow(jtext_scan *v, int type, size_t start);

static inline long v_tok(jtext_scan *v, int type, size_t start)
{
    size_t i = v->nvalues;
    if (i < v->tok_cap && i < v->tok_max) {
        v->toks[i] = (jtext_tok){type, (int)start, (int)start, 0};
        return (long)i;
    }
    return v_tok_grow(v, type, start);
}

/* v_tok past the array's capacity (or past tok_max: -1). */
static __attribute__((noinline)) long v_tok_grow(jtext_scan *v, int type, size_t start)
{
    size_t i = v->nvalues;
    if (i >= v->tok_max)
        return -1;
    if (i >= v->tok_cap) {
        size_t cap = v->tok_cap ? v->tok_cap * 2 : 64;
        if (cap > v->tok_max)
            cap = v->tok_max;
        jtext_tok *t = v->toks_borrowed ? malloc(cap * sizeof *t)
                                         : realloc(v->toks, cap * sizeof *t);
        if (t && v->toks_borrowed) {
            if (v->tok_cap)
                memcpy(t, v->toks, v->tok_cap * sizeof *t);
            v->toks_borrowed = 0;
        }
        if (!t) {
            v->tok_oom = 1;
            v->tok_max = 0;
            return -1;
        }
        v->toks = t;
        v->tok_cap = cap;
    }
    v->toks[i] = (jtext_tok){type, (int)start, (int)start, 0};
    return (long)i;
}

static void v_tok_end(jtext_scan *v, long k, size_t end)
{
    if (k >= 0)
        v->toks[k].end = (int)end;
}

void jtext_scan_init(jtext_scan *v, const char *s, size_t len, int max_depth)
{
    if (max_depth <= 0 || max_depth > JTEXT_MAX_DEPTH)
        max_depth = JTEXT_MAX_DEPTH;
    memset(v, 0, sizeof *v);
    v->s = (const uint8_t *)s;
    v->len = len;
    v->max_depth = max_depth;
}

/* jtext_scan_ws inside the scanner: most calls find no whitespace at all
 * (compact JSON), which costs one compare here. */
static inline void ws(jtext_scan *v)
{
    if (v->pos < v->len && v->s[v->pos] > ' ')
        return;
    jtext_scan_ws(v);
}

void jtext_scan_ws(jtext_scan *v)
{
    while (v->pos < v->len) {
        uint8_t c = v->s[v->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        v->pos++;
    }
}

/* The first byte at or after i (below len) that is not plain ASCII in a
 * string (str_class != 0: '"', '\\', a control character or a non-ASCII
 * byte), or len. With SSE2, 16 bytes per step: a byte below 0x20 or from
 * 0x80 up is exactly one below 0x20 as a signed byte. */
static inline size_t str_plain_run(const uint8_t *s, size_t i, size_t len)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (len - i >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)),
                                 _mm_cmplt_epi8(x, space));
        unsigned bits = (unsigned)_mm_movemask_epi8(m);
        if (bits)
            return i + (size_t)__builtin_ctz(bits);
        i += 16;
    }
#endif
    while (i < len && str_class[s[i]] == 0)
        i++;
    return i;
}

int jtext_scan_string(jtext_scan *v)
{
    const uint8_t *s = v->s;
    size_t i = v->pos + 1; /* past the opening quote */
    for (;;) {
        if (i < v->len)
            i = str_plain_run(s, i, v->len);
        if (i >= v->len)
            return v_eof(v);
        uint8_t c = s[i];
        if (c == '"') {
            if (v->tok_max)
                v_tok_end(v, v_tok(v, JTEXT_T_STRING, v->pos + 1), i);
            v->pos = i + 1;
            v->nvalues++;
            return 0;
        }
        if (c >= 0x80) {
            size_t n = jtext_utf8_seq(s + i, v->len - i);
            if (!n)
                return v_fail(v, i, "invalid UTF-8 in string", false);
            i += n;
            continue;
        }
        if (c < 0x20)
            return v_fail(v, i, "unescaped control character in string", false);
        /* A backslash. */
        if (i + 1 >= v->len)
            return v_eof(v);
        switch (s[i + 1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            i += 2;
            continue;
        case 'u':
            break;
        default:
            return v_fail(v, i, "invalid escape in string", false);
        }
        uint32_t cp;
        int used = jtext_u_escape((const char *)s + i, v->len - i, &cp);
        if (used == JTEXT_U_SHORT)
            return v_eof(v);
        if (used == JTEXT_U_HEX)
            return v_fail(v, i, "invalid \\u escape", false);
        if (used < 0)
            return v_fail(v, i, "lone surrogate in \\u escape", false);
        i += (size_t)used;
    }
}

static int v_digits(jtext_scan *v)
{
    if (v->pos >= v->len)
        return v_eof(v);
    if (v->s[v->pos] < '0' || v->s[v->pos] > '9')
        return v_fail(v, v->pos, "digit expected in number", false);
    while (v->pos < v->len && v->s[v->pos] >= '0' && v->s[v->pos] <= '9')
        v->pos++;
    return 0;
}

static int v_number(jtext_scan *v)
{
    const uint8_t *s = v->s;
    size_t start = v->pos;
    if (s[v->pos] == '-')
        v->pos++;
    if (v->pos < v->len && s[v->pos] == '0') {
        v->pos++;
        if (v->pos < v->len && s[v->pos] >= '0' && s[v->pos] <= '9')
            return v_fail(v, v->pos - 1, "leading zero in number", false);
    } else if (v_digits(v)) {
        return -1;
    }
    if (v->pos < v->len && s[v->pos] == '.') {
        v->pos++;
        if (v_digits(v))
            return -1;
    }
    if (v->pos < v->len && (s[v->pos] == 'e' || s[v->pos] == 'E')) {
        v->pos++;
        if (v->pos < v->len && (s[v->pos] == '+' || s[v->pos] == '-'))
            v->pos++;
        if (v_digits(v))
            return -1;
    }
    if (v->tok_max)
        v_tok_end(v, v_tok(v, JTEXT_T_PRIMITIVE, start), v->pos);
    v->nvalues++;
    return 0;
}

static int v_literal(jtext_scan *v, const char *word, size_t n)
{
    if (v->len - v->pos < n) {
        if (memcmp(v->s + v->pos, word, v->len - v->pos) == 0)
            return v_eof(v);
        return v_fail(v, v->pos, "invalid literal", false);
    }
    if (memcmp(v->s + v->pos, word, n) != 0)
        return v_fail(v, v->pos, "invalid literal", false);
    if (v->tok_max)
        v_tok_end(v, v_tok(v, JTEXT_T_PRIMITIVE, v->pos), v->pos + n);
    v->pos += n;
    v->nvalues++;
    return 0;
}

/* An array or object; v->pos is at its opening bracket. */
static int v_container(jtext_scan *v)
{
    bool object = v->s[v->pos] == '{';
    uint8_t close = object ? '}' : ']';
    if (++v->depth > v->max_depth)
        return v_fail(v, v->pos, "nesting deeper than " JT_STR(JTEXT_MAX_DEPTH), false);
    long me = v->tok_max ? v_tok(v, object ? JTEXT_T_OBJECT : JTEXT_T_ARRAY, v->pos) : -1;
    v->nvalues++;
    v->pos++;
    ws(v);
    if (v->pos >= v->len)
        return v_eof(v);
    if (v->s[v->pos] == close) {
        v->pos++;
        v_tok_end(v, me, v->pos);
        v->depth--;
        return 0;
    }
    for (;;) {
        if (me >= 0)
            v->toks[me].size++; /* realloc may move toks: index, never a pointer */
        if (object) {
            if (v->s[v->pos] != '"')
                return v_fail(v, v->pos, "expected a string key", true);
            if (jtext_scan_string(v))
                return -1;
            ws(v);
            if (v->pos >= v->len)
                return v_eof(v);
            if (v->s[v->pos] != ':')
                return v_fail(v, v->pos, "expected ':'", true);
            v->pos++;
        }
        if (jtext_scan_value(v))
            return -1;
        ws(v);
        if (v->pos >= v->len)
            return v_eof(v);
        uint8_t c = v->s[v->pos];
        if (c == close) {
            v->pos++;
            v_tok_end(v, me, v->pos);
            v->depth--;
            return 0;
        }
        if (c != ',')
            return v_fail(v, v->pos, object ? "expected ',' or '}'" : "expected ',' or ']'",
                          true);
        v->pos++;
        ws(v);
        if (v->pos >= v->len)
            return v_eof(v);
        if (v->s[v->pos] == close)
            return v_fail(v, v->pos - 1, "trailing comma", false);
    }
}

int jtext_scan_value(jtext_scan *v)
{
    ws(v);
    if (v->pos >= v->len)
        return v_eof(v);
    switch (v->s[v->pos]) {
    case '{': case '[':
        return v_container(v);
    case '"':
        return jtext_scan_string(v);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return v_number(v);
    case 't':
        return v_literal(v, "true", 4);
    case 'f':
        return v_literal(v, "false", 5);
    case 'n':
        return v_literal(v, "null", 4);
    default:
        return v_fail(v, v->pos, "unexpected character", true);
    }
}

int jtext_scan_text(jtext_scan *v)
{
    if (jtext_scan_value(v))
        return -1;
    ws(v);
    if (v->pos < v->len)
        return v_fail(v, v->pos, "data after the JSON value", true);
    return 0;
}

int jtext_validate(const char *s, size_t len, size_t *err_at, const char **why)
{
    jtext_scan v;
    jtext_scan_init(&v, s, len, JTEXT_MAX_DEPTH);
    if (jtext_scan_text(&v) == 0)
        return 0;
    if (err_at)
        *err_at = v.err_at;
    if (why)
        *why = v.why;
    return -1;
}
