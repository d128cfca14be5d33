/*
 * pattern_compile.c - EventBridge event patterns, from JSON text to the
 * compiled form that pattern_match.c runs (docs/patterns.md).
 *
 * The text is tokenized by jsmn (the project's JSON tokenizer, strict mode).
 * jsmn checks the nesting of brackets but lets a few malformed texts through
 * (missing or doubled commas and colons, bad escapes, bad numbers), so the
 * compiler checks every gap between tokens and every string and number
 * itself: a pattern is accepted only if it is valid RFC 8259 JSON.
 *
 * Shape of a pattern, checked here with the path of the first error:
 *
 *   pattern  := object                      (non-empty at every level)
 *   object   := { key: (object | list), ... , "$or": [object, object, ...] }
 *   list     := [ value-or-operator, ... ]   (non-empty)
 *   value    := string | number | true | false | null
 *   operator := { "prefix" | "suffix" | "equals-ignore-case" | "wildcard" |
 *                 "anything-but" | "numeric" | "exists" | "cidr" : ... }
 *
 * Top-level keys name the event's fields (id, stream, category, type,
 * revision, position, created, tags, data, metadata); only data and
 * metadata have fields below them.
 *
 * The compiled form is a tree of conjunctions (pat_node: every field and
 * every $or must match) and disjunctions (pat_or: one alternative must).
 * Nested objects do not make nodes: their fields join the enclosing
 * conjunction with a longer path. Each field keeps its path (the keys below
 * data/metadata, with their hashes precomputed for the event side's path
 * table) and a list of matchers with their operands decoded: strings
 * unescaped, case-insensitive operands lower-cased once, numbers parsed,
 * wildcards cut into literal segments, CIDR blocks masked. Invariant: a
 * compiled pattern is never modified, so any number of threads may match
 * with it at once.
 *
 * Every allocation of a compiled pattern is linked into one list and freed
 * at once by pattern_free.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/pattern_int.h"
#include "util/json_text.h"
#include "util/util.h"

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

/* ------------------------------------------------------------------ arena */

typedef struct pc_block {
    struct pc_block *next;
    max_align_t data[];
} pc_block;

static void *pc_alloc(void **arena, size_t n)
{
    pc_block *b = calloc(1, sizeof *b + (n ? n : 1));
    if (!b)
        return NULL;
    b->next = *arena;
    *arena = b;
    return b->data;
}

static void pc_arena_free(void *arena)
{
    for (pc_block *b = arena, *next; b; b = next) {
        next = b->next;
        free(b);
    }
}

/* --------------------------------------------------------------- context */

#define PC_MAX_SEGS (PATTERN_MAX_DEPTH * 2 + 4)

typedef struct pc_ctx {
    const char *js;
    size_t len;
    jsmntok_t *t;
    int nt;
    char *err;
    size_t errlen;
    void *arena;
    /* The path being compiled, for error messages: keys and "$or[i]". */
    const char *seg[PC_MAX_SEGS];
    size_t segn[PC_MAX_SEGS];
    int segor[PC_MAX_SEGS]; /* -1 for a key, else the $or alternative */
    int nseg;
    /* The keys of the current field path (no $or entries). */
    const char *key[PC_MAX_SEGS];
    size_t keyn[PC_MAX_SEGS];
    int nkey;
} pc_ctx;

static int pc_fail(pc_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int pc_fail(pc_ctx *c, const char *fmt, ...)
{
    if (!c->err || !c->errlen)
        return STELE_EINVAL;
    char path[512];
    size_t o = 0;
    path[0] = 0;
    for (int i = 0; i < c->nseg && o < sizeof path - 1; i++) {
        int w;
        if (c->segor[i] >= 0)
            w = snprintf(path + o, sizeof path - o, "%s$or[%d]", i ? "." : "", c->segor[i]);
        else
            w = snprintf(path + o, sizeof path - o, "%s%.*s", i ? "." : "", (int)c->segn[i],
                         c->seg[i]);
        if (w < 0)
            break;
        o += (size_t)w;
        if (o >= sizeof path)
            o = sizeof path - 1;
    }
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s: %s", c->nseg ? path : "pattern", msg);
    return STELE_EINVAL;
}

static int pc_nomem(pc_ctx *c)
{
    if (c->err && c->errlen)
        snprintf(c->err, c->errlen, "pattern: out of memory");
    return STELE_ENOMEM;
}

/* ------------------------------------------------- strict JSON checking */

static size_t pc_ws(const pc_ctx *c, size_t p)
{
    while (p < c->len && (c->js[p] == ' ' || c->js[p] == '\t' || c->js[p] == '\n' ||
                          c->js[p] == '\r'))
        p++;
    return p;
}

/* Where token i begins in the text (a string's opening quote). */
static size_t pc_tok_begin(const pc_ctx *c, int i)
{
    return (size_t)c->t[i].start - (c->t[i].type == JSMN_STRING ? 1 : 0);
}

/* Where token i ends in the text (past a string's closing quote). */
static size_t pc_tok_end(const pc_ctx *c, int i)
{
    return (size_t)c->t[i].end + (c->t[i].type == JSMN_STRING ? 1 : 0);
}

/* Decode UTF-8 at s[*i..n): the code point, or -1 if malformed. */
static long pc_utf8(const unsigned char *s, size_t n, size_t *i)
{
    if (s[*i] < 0x80) {
        (*i)++;
        return 0;
    }
    size_t len = jtext_utf8_seq(s + *i, n - *i);
    if (!len)
        return -1;
    *i += len;
    return 0;
}

/* Check the body of string token i and decode it into the arena
 * (NUL-terminated; a decoded U+0000 is refused). */
static int pc_string(pc_ctx *c, int i, char **out, size_t *outn)
{
    const unsigned char *s = (const unsigned char *)c->js + c->t[i].start;
    size_t n = (size_t)(c->t[i].end - c->t[i].start);
    char *o = pc_alloc(&c->arena, n + 1);
    if (!o)
        return pc_nomem(c);
    size_t k = 0;
    for (size_t p = 0; p < n;) {
        if (s[p] < 0x20)
            return pc_fail(c, "invalid JSON: control character in a string at byte %zu",
                           (size_t)c->t[i].start + p);
        if (s[p] != '\\') {
            size_t q = p;
            if (pc_utf8(s, n, &q) < 0)
                return pc_fail(c, "invalid JSON: malformed UTF-8 at byte %zu",
                               (size_t)c->t[i].start + p);
            memcpy(o + k, s + p, q - p);
            k += q - p;
            p = q;
            continue;
        }
        if (p + 1 >= n)
            return pc_fail(c, "invalid JSON: bad escape at byte %zu", (size_t)c->t[i].start + p);
        unsigned char e = s[p + 1];
        const char *simple = e ? strchr("\"\\/bfnrt", e) : NULL;
        if (simple) {
            o[k++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            p += 2;
            continue;
        }
        uint32_t cp;
        int used = e == 'u' ? jtext_u_escape((const char *)s + p, n - p, &cp) : JTEXT_U_SHORT;
        if (used == JTEXT_U_SHORT)
            return pc_fail(c, "invalid JSON: bad escape at byte %zu", (size_t)c->t[i].start + p);
        if (used == JTEXT_U_HEX)
            return pc_fail(c, "invalid JSON: bad \\u escape at byte %zu",
                           (size_t)c->t[i].start + p);
        if (used < 0)
            return pc_fail(c, "invalid JSON: unpaired surrogate at byte %zu",
                           (size_t)c->t[i].start + p);
        p += (size_t)used;
        if (cp == 0)
            return pc_fail(c, "strings may not contain U+0000");
        k += jtext_utf8_put(cp, (uint8_t *)o + k);
    }
    o[k] = 0;
    *out = o;
    *outn = k;
    return 0;
}

/* A JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int pc_is_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return 0;
    if (s[i] == '0') {
        i++;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    } else {
        return 0;
    }
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i == n;
}

/*
 * Check token i and everything inside it against the JSON grammar: the
 * gaps between tokens hold exactly the punctuation JSON requires, strings
 * and primitives are well-formed. *next = the token after it.
 */
static int pc_check(pc_ctx *c, int i, int *next, int depth)
{
    const jsmntok_t *t = &c->t[i];
    if (depth > PATTERN_MAX_DEPTH * 2)
        return pc_fail(c, "nested more than %d levels deep", PATTERN_MAX_DEPTH);
    if (t->type == JSMN_PRIMITIVE) {
        const char *s = c->js + t->start;
        size_t n = (size_t)(t->end - t->start);
        if (!((n == 4 && !memcmp(s, "true", 4)) || (n == 5 && !memcmp(s, "false", 5)) ||
              (n == 4 && !memcmp(s, "null", 4)) || pc_is_number(s, n)))
            return pc_fail(c, "invalid JSON: bad value '%.*s' at byte %d", n > 20 ? 20 : (int)n, s,
                           t->start);
        *next = i + 1;
        return 0;
    }
    if (t->type == JSMN_STRING) {
        char *dummy;
        size_t dn;
        int rc = pc_string(c, i, &dummy, &dn);
        if (rc)
            return rc;
        *next = i + 1;
        return 0;
    }
    int is_obj = t->type == JSMN_OBJECT;
    size_t p = (size_t)t->start + 1;
    int j = i + 1;
    for (int k = 0; k < t->size; k++) {
        p = pc_ws(c, p);
        if (k) {
            if (p >= c->len || c->js[p] != ',')
                return pc_fail(c, "invalid JSON: expected ',' at byte %zu", p);
            p = pc_ws(c, p + 1);
        }
        if (j >= c->nt || pc_tok_begin(c, j) != p)
            return pc_fail(c, "invalid JSON: unexpected text at byte %zu", p);
        int rc;
        if (is_obj) {
            if (c->t[j].type != JSMN_STRING)
                return pc_fail(c, "invalid JSON: expected a key at byte %zu", p);
            if ((rc = pc_check(c, j, &j, depth + 1)))
                return rc;
            p = pc_ws(c, pc_tok_end(c, j - 1));
            if (p >= c->len || c->js[p] != ':')
                return pc_fail(c, "invalid JSON: expected ':' at byte %zu", p);
            p = pc_ws(c, p + 1);
            if (j >= c->nt || pc_tok_begin(c, j) != p)
                return pc_fail(c, "invalid JSON: unexpected text at byte %zu", p);
        }
        int v = j;
        if ((rc = pc_check(c, v, &j, depth + 1)))
            return rc;
        p = pc_tok_end(c, v);
    }
    p = pc_ws(c, p);
    if (p + 1 != (size_t)t->end)
        return pc_fail(c, "invalid JSON: unexpected text at byte %zu", p);
    *next = j;
    return 0;
}

/* ------------------------------------------------------------- compiling */

static const char *const pc_roots[PAT_NROOTS] = {
    [PAT_ROOT_ID] = "id",
    [PAT_ROOT_STREAM] = "stream",
    [PAT_ROOT_CATEGORY] = "category",
    [PAT_ROOT_TYPE] = "type",
    [PAT_ROOT_REVISION] = "revision",
    [PAT_ROOT_POSITION] = "position",
    [PAT_ROOT_CREATED] = "created",
    [PAT_ROOT_TAGS] = "tags",
    [PAT_ROOT_DATA] = "data",
    [PAT_ROOT_METADATA] = "metadata",
};

static int pc_tok_is(const pc_ctx *c, int i, const char *s)
{
    size_t n = strlen(s);
    return c->t[i].type == JSMN_STRING && (size_t)(c->t[i].end - c->t[i].start) == n &&
           !memcmp(c->js + c->t[i].start, s, n);
}

/* The token after token i and everything inside it. */
static int pc_skip(const pc_ctx *c, int i)
{
    int end = c->t[i].end, j = i + 1;
    while (j < c->nt && c->t[j].start < end)
        j++;
    return j;
}

static int pc_push_seg(pc_ctx *c, const char *s, size_t n, int orix)
{
    if (c->nseg >= PC_MAX_SEGS)
        return pc_fail(c, "nested too deeply");
    c->seg[c->nseg] = s;
    c->segn[c->nseg] = n;
    c->segor[c->nseg] = orix;
    c->nseg++;
    return 0;
}

/* Growable arrays inside the arena (doubling; old blocks stay until
 * pattern_free, which is fine for texts of at most 4 KiB). */
static int pc_grow(pc_ctx *c, void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 4;
    void *p = pc_alloc(&c->arena, ncap * size);
    if (!p)
        return pc_nomem(c);
    if (n)
        memcpy(p, *arr, n * size);
    *arr = p;
    *cap = ncap;
    return 0;
}

typedef struct pc_node {
    pat_node *node;
    size_t fcap, ocap;
} pc_node;

static int pc_object(pc_ctx *c, int i, pc_node *into, int depth);

/* ---- operators */

/* A string operand, or a non-empty list of them for anything-but's forms. */
static int pc_strings(pc_ctx *c, int v, int allow_list, const char *what, char ***out,
                      size_t **outn, size_t *count)
{
    int first = v, n = 1;
    if (allow_list && c->t[v].type == JSMN_ARRAY) {
        n = c->t[v].size;
        first = v + 1;
        if (!n)
            return pc_fail(c, "%s: expected a non-empty list of strings", what);
    }
    char **s = pc_alloc(&c->arena, (size_t)n * sizeof *s);
    size_t *sn = pc_alloc(&c->arena, (size_t)n * sizeof *sn);
    if (!s || !sn)
        return pc_nomem(c);
    for (int k = 0; k < n; k++) {
        int j = first + k; /* list elements are scalars, checked here */
        if (c->t[j].type != JSMN_STRING)
            return pc_fail(c, "%s: expected a string%s", what,
                           allow_list ? " or a list of strings" : "");
        int rc = pc_string(c, j, &s[k], &sn[k]);
        if (rc)
            return rc;
    }
    *out = s;
    *outn = sn;
    *count = (size_t)n;
    return 0;
}

static int pc_lower_all(pc_ctx *c, pat_matcher *m)
{
    for (size_t k = 0; k < m->count; k++) {
        char *low = pc_alloc(&c->arena, m->strn[k] * 3 + 1);
        if (!low)
            return pc_nomem(c);
        m->strn[k] = pat_lower(m->str[k], m->strn[k], low);
        low[m->strn[k]] = 0;
        m->str[k] = low;
    }
    return 0;
}

/* Cut a wildcard into literal segments: '*' matches any run of characters,
 * "\*" is a literal star and "\\" a literal backslash; "**" and any other
 * escape are refused (EventBridge's rules). */
static int pc_wildcard(pc_ctx *c, const char *what, const char *s, size_t n, pat_wild *w)
{
    size_t stars = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\') {
            if (i + 1 >= n || (s[i + 1] != '*' && s[i + 1] != '\\'))
                return pc_fail(c, "%s: a backslash may only escape '*' or '\\'", what);
            i++;
        } else if (s[i] == '*') {
            if (i + 1 < n && s[i + 1] == '*')
                return pc_fail(c, "%s: consecutive '*' are not allowed", what);
            stars++;
        }
    }
    w->nseg = stars + 1;
    w->seg = pc_alloc(&c->arena, w->nseg * sizeof *w->seg);
    w->segn = pc_alloc(&c->arena, w->nseg * sizeof *w->segn);
    char *text = pc_alloc(&c->arena, n + 1);
    if (!w->seg || !w->segn || !text)
        return pc_nomem(c);
    w->lead = n > 0 && s[0] == '*';
    w->trail = 0;
    size_t k = 0, o = 0;
    w->seg[0] = text;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\') {
            text[o++] = s[++i];
        } else if (s[i] == '*') {
            w->segn[k] = (size_t)(text + o - w->seg[k]);
            k++;
            w->seg[k] = text + o;
            if (i + 1 == n)
                w->trail = 1;
        } else {
            text[o++] = s[i];
        }
    }
    w->segn[k] = (size_t)(text + o - w->seg[k]);
    return 0;
}

static int pc_wildcards(pc_ctx *c, const char *what, pat_matcher *m)
{
    m->wild = pc_alloc(&c->arena, m->count * sizeof *m->wild);
    if (!m->wild)
        return pc_nomem(c);
    for (size_t k = 0; k < m->count; k++) {
        int rc = pc_wildcard(c, what, m->str[k], m->strn[k], &m->wild[k]);
        if (rc)
            return rc;
    }
    return 0;
}

static int pc_number(pc_ctx *c, int j, pat_num *out)
{
    const char *s = c->js + c->t[j].start;
    size_t n = (size_t)(c->t[j].end - c->t[j].start);
    if (pat_parse_num(s, n, out))
        return pc_fail(c, "number %.*s is out of range", n > 40 ? 40 : (int)n, s);
    return 0;
}

static int pc_is_num_tok(const pc_ctx *c, int j)
{
    return c->t[j].type == JSMN_PRIMITIVE && c->js[c->t[j].start] != 't' &&
           c->js[c->t[j].start] != 'f' && c->js[c->t[j].start] != 'n';
}

static int pc_anything_but(pc_ctx *c, int v, pat_matcher *m)
{
    const jsmntok_t *t = &c->t[v];
    if (t->type == JSMN_STRING || (t->type == JSMN_ARRAY && t->size > 0 &&
                                   c->t[v + 1].type == JSMN_STRING)) {
        m->op = PM_BUT_STR;
        return pc_strings(c, v, 1, "anything-but", &m->str, &m->strn, &m->count);
    }
    if (pc_is_num_tok(c, v) || (t->type == JSMN_ARRAY && t->size > 0 && pc_is_num_tok(c, v + 1))) {
        m->op = PM_BUT_NUM;
        int n = t->type == JSMN_ARRAY ? t->size : 1, first = t->type == JSMN_ARRAY ? v + 1 : v;
        m->num = pc_alloc(&c->arena, (size_t)n * sizeof *m->num);
        if (!m->num)
            return pc_nomem(c);
        for (int k = 0; k < n; k++) {
            if (!pc_is_num_tok(c, first + k))
                return pc_fail(c, "anything-but: a list must hold only strings or only numbers");
            int rc = pc_number(c, first + k, &m->num[k]);
            if (rc)
                return rc;
        }
        m->count = (size_t)n;
        return 0;
    }
    if (t->type == JSMN_OBJECT) {
        if (t->size != 1)
            return pc_fail(c, "anything-but: expected one of prefix, suffix, equals-ignore-case, "
                              "wildcard");
        int k = v + 1, val = v + 2;
        static const struct {
            const char *name;
            int op;
        } forms[] = {{"prefix", PM_BUT_PREFIX},
                     {"suffix", PM_BUT_SUFFIX},
                     {"equals-ignore-case", PM_BUT_IC},
                     {"wildcard", PM_BUT_WILDCARD}};
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
            if (!pc_tok_is(c, k, forms[f].name))
                continue;
            char what[48];
            snprintf(what, sizeof what, "anything-but: %s", forms[f].name);
            m->op = (uint8_t)forms[f].op;
            int rc = pc_strings(c, val, 1, what, &m->str, &m->strn, &m->count);
            if (!rc && m->op == PM_BUT_IC)
                rc = pc_lower_all(c, m);
            if (!rc && m->op == PM_BUT_WILDCARD)
                rc = pc_wildcards(c, what, m);
            return rc;
        }
        return pc_fail(c, "anything-but: unknown operator \"%.*s\" (expected prefix, suffix, "
                          "equals-ignore-case or wildcard)",
                       c->t[k].end - c->t[k].start > 40 ? 40 : c->t[k].end - c->t[k].start,
                       c->js + c->t[k].start);
    }
    if (t->type == JSMN_ARRAY && t->size == 0)
        return pc_fail(c, "anything-but: expected a non-empty list");
    return pc_fail(c, "anything-but: expected a string, a number, a list of strings or of "
                      "numbers, or an object with prefix, suffix, equals-ignore-case or wildcard");
}

static int pc_numeric(pc_ctx *c, int v, pat_matcher *m)
{
    const jsmntok_t *t = &c->t[v];
    m->op = PM_NUMERIC;
    if (t->type != JSMN_ARRAY)
        return pc_fail(c, "numeric: expected a list such as [\">\", 0, \"<=\", 5]");
    if (t->size == 0 || t->size % 2)
        return pc_fail(c, "numeric: expected an operator and a number");
    if (t->size > 4)
        return pc_fail(c, "numeric: at most two comparisons (a lower and an upper bound)");
    for (int k = 0; k < t->size; k += 2) {
        int op = v + 1 + k, num = op + 1;
        if (c->t[op].type != JSMN_STRING)
            return pc_fail(c, "numeric: expected an operator and a number");
        int is_eq = pc_tok_is(c, op, "="), gt = pc_tok_is(c, op, ">"), ge = pc_tok_is(c, op, ">="),
            lt = pc_tok_is(c, op, "<"), le = pc_tok_is(c, op, "<=");
        if (!(is_eq || gt || ge || lt || le))
            return pc_fail(c, "numeric: unknown comparison \"%.*s\" (expected =, <, <=, >, >=)",
                           c->t[op].end - c->t[op].start > 20 ? 20 : c->t[op].end - c->t[op].start,
                           c->js + c->t[op].start);
        if (!pc_is_num_tok(c, num))
            return pc_fail(c, "numeric: expected a number after \"%.*s\"",
                           c->t[op].end - c->t[op].start, c->js + c->t[op].start);
        pat_num x;
        int rc = pc_number(c, num, &x);
        if (rc)
            return rc;
        if (is_eq) {
            if (t->size != 2)
                return pc_fail(c, "numeric: \"=\" cannot be combined with another comparison");
            m->has_lo = m->has_hi = m->lo_incl = m->hi_incl = 1;
            m->lo = m->hi = x;
        } else if (gt || ge) {
            if (m->has_lo || m->has_hi)
                return pc_fail(c, "numeric: expected a lower bound (> or >=) before an upper "
                                  "bound (< or <=)");
            m->has_lo = 1, m->lo_incl = (uint8_t)ge, m->lo = x;
        } else {
            if (m->has_hi)
                return pc_fail(c, "numeric: two upper bounds");
            m->has_hi = 1, m->hi_incl = (uint8_t)le, m->hi = x;
        }
    }
    int order = m->has_lo && m->has_hi ? pat_num_cmp(&m->lo, &m->hi) : -1;
    if (order > 0 || (order == 0 && !(m->lo_incl && m->hi_incl)))
        return pc_fail(c, "numeric: the range is empty (the lower bound must be below the upper "
                          "bound)");
    return 0;
}

static int pc_cidr(pc_ctx *c, int v, pat_matcher *m)
{
    m->op = PM_CIDR;
    if (c->t[v].type != JSMN_STRING)
        return pc_fail(c, "cidr: expected a string such as \"10.0.0.0/24\" or \"2001:db8::/32\"");
    char *s;
    size_t n;
    int rc = pc_string(c, v, &s, &n);
    if (rc)
        return rc;
    char *slash = memchr(s, '/', n);
    if (!slash)
        return pc_fail(c, "cidr: expected an address, '/' and a prefix length");
    m->iplen = pat_parse_ip(s, (size_t)(slash - s), m->ip);
    if (!m->iplen)
        return pc_fail(c, "cidr: \"%.*s\" is not an IPv4 or IPv6 address", (int)(slash - s), s);
    const char *b = slash + 1;
    size_t bn = n - (size_t)(b - s);
    int bits = 0;
    if (bn == 0 || bn > 3)
        return pc_fail(c, "cidr: bad prefix length");
    for (size_t k = 0; k < bn; k++) {
        if (b[k] < '0' || b[k] > '9')
            return pc_fail(c, "cidr: bad prefix length");
        bits = bits * 10 + (b[k] - '0');
    }
    if (bits > m->iplen * 8)
        return pc_fail(c, "cidr: prefix length %d is over %d", bits, m->iplen * 8);
    m->bits = bits;
    for (int k = 0; k < m->iplen; k++) { /* mask the host bits */
        int keep = bits - k * 8;
        m->ip[k] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
    }
    return 0;
}

/* One operator object {"name": operand} of a match list. */
static int pc_operator(pc_ctx *c, int i, pat_matcher *m)
{
    if (c->t[i].size != 1)
        return pc_fail(c, "expected exactly one operator in {...}, found %d", c->t[i].size);
    int k = i + 1, v = i + 2, rc;
    const char *what;
    if (pc_tok_is(c, k, "prefix") || pc_tok_is(c, k, "suffix")) {
        int pre = pc_tok_is(c, k, "prefix");
        what = pre ? "prefix" : "suffix";
        if (c->t[v].type == JSMN_OBJECT) {
            if (c->t[v].size != 1 || !pc_tok_is(c, v + 1, "equals-ignore-case"))
                return pc_fail(c, "%s: expected a string or {\"equals-ignore-case\": string}", what);
            m->op = pre ? PM_PREFIX_IC : PM_SUFFIX_IC;
            char w2[48];
            snprintf(w2, sizeof w2, "%s: equals-ignore-case", what);
            if ((rc = pc_strings(c, v + 2, 0, w2, &m->str, &m->strn, &m->count)))
                return rc;
            return pc_lower_all(c, m);
        }
        m->op = pre ? PM_PREFIX : PM_SUFFIX;
        return pc_strings(c, v, 0, what, &m->str, &m->strn, &m->count);
    }
    if (pc_tok_is(c, k, "equals-ignore-case")) {
        m->op = PM_EQ_IC;
        if ((rc = pc_strings(c, v, 0, "equals-ignore-case", &m->str, &m->strn, &m->count)))
            return rc;
        return pc_lower_all(c, m);
    }
    if (pc_tok_is(c, k, "wildcard")) {
        m->op = PM_WILDCARD;
        if ((rc = pc_strings(c, v, 0, "wildcard", &m->str, &m->strn, &m->count)))
            return rc;
        return pc_wildcards(c, "wildcard", m);
    }
    if (pc_tok_is(c, k, "anything-but"))
        return pc_anything_but(c, v, m);
    if (pc_tok_is(c, k, "numeric"))
        return pc_numeric(c, v, m);
    if (pc_tok_is(c, k, "cidr"))
        return pc_cidr(c, v, m);
    if (pc_tok_is(c, k, "exists")) {
        if (c->t[v].type != JSMN_PRIMITIVE ||
            (c->js[c->t[v].start] != 't' && c->js[c->t[v].start] != 'f'))
            return pc_fail(c, "exists: expected true or false");
        m->op = c->js[c->t[v].start] == 't' ? PM_EXISTS : PM_NOT_EXISTS;
        return 0;
    }
    int kn = c->t[k].end - c->t[k].start;
    return pc_fail(c, "unknown operator \"%.*s\" (expected prefix, suffix, equals-ignore-case, "
                      "wildcard, anything-but, numeric, exists or cidr)",
                   kn > 40 ? 40 : kn, c->js + c->t[k].start);
}

/* A match list: the field at the current key path. */
static int pc_list(pc_ctx *c, int i, pc_node *into)
{
    const jsmntok_t *t = &c->t[i];
    if (t->size == 0)
        return pc_fail(c, "expected at least one value or operator in the list");
    int rc;
    if ((rc = pc_grow(c, (void **)&into->node->f, &into->fcap, into->node->nf, sizeof(pat_field))))
        return rc;
    pat_field *f = &into->node->f[into->node->nf];
    memset(f, 0, sizeof *f);
    f->root = -1;
    for (int r = 0; r < PAT_NROOTS; r++)
        if (c->keyn[0] == strlen(pc_roots[r]) && !memcmp(c->key[0], pc_roots[r], c->keyn[0]))
            f->root = r;
    f->nkeys = (size_t)c->nkey - 1;
    if (f->nkeys) {
        f->keys = pc_alloc(&c->arena, f->nkeys * sizeof *f->keys);
        f->klens = pc_alloc(&c->arena, f->nkeys * sizeof *f->klens);
        f->khash = pc_alloc(&c->arena, f->nkeys * sizeof *f->khash);
        if (!f->keys || !f->klens || !f->khash)
            return pc_nomem(c);
        for (size_t k = 0; k < f->nkeys; k++) {
            f->keys[k] = (char *)c->key[k + 1];
            f->klens[k] = c->keyn[k + 1];
            f->khash[k] = pat_key_hash(c->key[k + 1], c->keyn[k + 1]);
        }
    }
    f->m = pc_alloc(&c->arena, (size_t)t->size * sizeof *f->m);
    if (!f->m)
        return pc_nomem(c);
    int j = i + 1;
    for (int k = 0; k < t->size; k++) {
        pat_matcher *m = &f->m[k];
        const jsmntok_t *e = &c->t[j];
        if (e->type == JSMN_STRING) {
            m->op = PM_STR;
            if ((rc = pc_strings(c, j, 0, "value", &m->str, &m->strn, &m->count)))
                return rc;
        } else if (e->type == JSMN_PRIMITIVE) {
            char ch = c->js[e->start];
            if (ch == 't' || ch == 'f' || ch == 'n') {
                m->op = ch == 't' ? PM_TRUE : ch == 'f' ? PM_FALSE : PM_NULL;
            } else {
                m->op = PM_NUM;
                m->num = pc_alloc(&c->arena, sizeof *m->num);
                if (!m->num)
                    return pc_nomem(c);
                m->count = 1;
                if ((rc = pc_number(c, j, m->num)))
                    return rc;
            }
        } else if (e->type == JSMN_OBJECT) {
            if ((rc = pc_operator(c, j, m)))
                return rc;
        } else {
            return pc_fail(c, "a list of values may not contain a list");
        }
        j = pc_skip(c, j);
    }
    f->nm = (size_t)t->size;
    into->node->nf++;
    return 0;
}

/* "$or": [object, object, ...] at the current key path. */
static int pc_or(pc_ctx *c, int i, pc_node *into, int depth)
{
    const jsmntok_t *t = &c->t[i];
    if (t->type != JSMN_ARRAY || t->size < 2)
        return pc_fail(c, "expected a list of at least two patterns");
    int rc;
    if ((rc = pc_grow(c, (void **)&into->node->o, &into->ocap, into->node->no, sizeof(pat_or))))
        return rc;
    pat_or *o = &into->node->o[into->node->no++];
    o->nalt = (size_t)t->size;
    o->alt = pc_alloc(&c->arena, o->nalt * sizeof *o->alt);
    if (!o->alt)
        return pc_nomem(c);
    int j = i + 1;
    for (int k = 0; k < t->size; k++) {
        c->segor[c->nseg - 1] = k;
        if (c->t[j].type != JSMN_OBJECT)
            return pc_fail(c, "expected a pattern (an object)");
        pc_node alt = {&o->alt[k], 0, 0};
        if ((rc = pc_object(c, j, &alt, depth + 1)))
            return rc;
        j = pc_skip(c, j);
    }
    return 0;
}

/* The members of object token i, at the current key path, into `into`. */
static int pc_object(pc_ctx *c, int i, pc_node *into, int depth)
{
    const jsmntok_t *t = &c->t[i];
    if (depth > PATTERN_MAX_DEPTH)
        return pc_fail(c, "nested more than %d levels deep", PATTERN_MAX_DEPTH);
    if (t->size == 0)
        return pc_fail(c, "expected at least one field (empty objects match nothing)");
    int j = i + 1, rc;
    for (int k = 0; k < t->size; k++) {
        int key = j, val = j + 1;
        const char *ks = c->js + c->t[key].start;
        size_t kn = (size_t)(c->t[key].end - c->t[key].start);
        char *name;
        size_t namen;
        if ((rc = pc_string(c, key, &name, &namen)))
            return rc;
        /* A key given twice: EventBridge silently keeps the last one; a
         * pattern that says two things about one field is refused here. */
        for (int p = i + 1; p < key; p = pc_skip(c, p + 1)) {
            size_t pn = (size_t)(c->t[p].end - c->t[p].start);
            if (pn == kn && !memcmp(c->js + c->t[p].start, ks, kn)) {
                if ((rc = pc_push_seg(c, name, namen, -1)))
                    return rc;
                return pc_fail(c, "the key is given twice");
            }
        }
        if ((rc = pc_push_seg(c, name, namen, -1)))
            return rc;
        if (namen == 3 && !memcmp(name, "$or", 3)) {
            if ((rc = pc_or(c, val, into, depth)))
                return rc;
        } else {
            if (c->nkey == 0) {
                int r = -1;
                for (int q = 0; q < PAT_NROOTS; q++)
                    if (namen == strlen(pc_roots[q]) && !memcmp(name, pc_roots[q], namen))
                        r = q;
                if (r < 0)
                    return pc_fail(c, "unknown event field (expected id, stream, category, type, "
                                      "revision, position, created, tags, data, metadata or $or)");
                if (c->t[val].type == JSMN_OBJECT && r != PAT_ROOT_DATA &&
                    r != PAT_ROOT_METADATA)
                    return pc_fail(c, "has no fields below it: expected a list of values");
            }
            c->key[c->nkey] = name;
            c->keyn[c->nkey] = namen;
            c->nkey++;
            if (c->t[val].type == JSMN_OBJECT)
                rc = pc_object(c, val, into, depth + 1);
            else if (c->t[val].type == JSMN_ARRAY)
                rc = pc_list(c, val, into);
            else
                rc = pc_fail(c, "expected a list of values (such as [\"x\"]) or an object");
            if (rc)
                return rc;
            c->nkey--;
        }
        c->nseg--;
        j = pc_skip(c, val);
    }
    return 0;
}

/* The number of plain patterns the $or's expand to (EventBridge's limit),
 * saturated just above the limit. */
static size_t pc_combinations(const pat_node *n)
{
    size_t total = 1;
    for (size_t k = 0; k < n->no; k++) {
        size_t sum = 0;
        for (size_t a = 0; a < n->o[k].nalt; a++) {
            sum += pc_combinations(&n->o[k].alt[a]);
            if (sum > PATTERN_MAX_COMBINATIONS)
                sum = PATTERN_MAX_COMBINATIONS + 1;
        }
        total *= sum;
        if (total > PATTERN_MAX_COMBINATIONS)
            total = PATTERN_MAX_COMBINATIONS + 1;
    }
    return total;
}

/* Sort each conjunction's fields so the cheap ones (the event's own
 * fields) are tried before those that need data or metadata parsed. */
static void pc_order(pat_node *n)
{
    for (size_t a = 1; a < n->nf; a++) {
        pat_field f = n->f[a];
        int cost = f.root == PAT_ROOT_DATA || f.root == PAT_ROOT_METADATA;
        size_t b = a;
        for (; b > 0; b--) {
            int pc = n->f[b - 1].root == PAT_ROOT_DATA || n->f[b - 1].root == PAT_ROOT_METADATA;
            if (pc <= cost)
                break;
            n->f[b] = n->f[b - 1];
        }
        n->f[b] = f;
    }
    for (size_t k = 0; k < n->no; k++)
        for (size_t a = 0; a < n->o[k].nalt; a++)
            pc_order(&n->o[k].alt[a]);
}

int pattern_compile(const char *json, size_t len, pattern **out, char *err, size_t errlen)
{
    pc_ctx c;
    memset(&c, 0, sizeof c);
    c.js = json;
    c.len = len;
    c.err = err;
    c.errlen = errlen;
    if (err && errlen)
        err[0] = 0;
    if (!out)
        return STELE_EINVAL;
    *out = NULL;
    if (!json)
        return pc_fail(&c, "no pattern text");
    if (len > PATTERN_MAX_BYTES) {
        if (err && errlen)
            snprintf(err, errlen, "pattern: is %zu bytes, over the limit of %d", len,
                     PATTERN_MAX_BYTES);
        return STELE_ETOOBIG;
    }
    /* At most one token per two bytes of text, plus the root. */
    c.t = malloc((len / 2 + 2) * sizeof *c.t);
    if (!c.t)
        return pc_nomem(&c);
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, json, len, c.t, (unsigned)(len / 2 + 2));
    int rc;
    if (n < 0) {
        rc = pc_fail(&c, n == JSMN_ERROR_PART ? "invalid JSON: the text ends too early"
                                              : "invalid JSON at byte %u",
                     p.pos);
        goto done;
    }
    c.nt = n;
    if (n == 0 || c.t[0].type != JSMN_OBJECT || pc_ws(&c, 0) != (size_t)c.t[0].start) {
        rc = pc_fail(&c, "expected a JSON object");
        goto done;
    }
    int next = 0;
    if ((rc = pc_check(&c, 0, &next, 1)))
        goto done;
    if (next != n || pc_ws(&c, (size_t)c.t[0].end) != len) {
        rc = pc_fail(&c, "invalid JSON: text after the object at byte %d", c.t[0].end);
        goto done;
    }
    pattern *pat = pc_alloc(&c.arena, sizeof *pat);
    if (!pat) {
        rc = pc_nomem(&c);
        goto done;
    }
    pc_node root = {&pat->root, 0, 0};
    if ((rc = pc_object(&c, 0, &root, 1)))
        goto done;
    if (pc_combinations(&pat->root) > PATTERN_MAX_COMBINATIONS) {
        rc = pc_fail(&c, "$or expands to more than %d combinations", PATTERN_MAX_COMBINATIONS);
        goto done;
    }
    pc_order(&pat->root);
    pat->arena = c.arena;
    c.arena = NULL;
    *out = pat;
done:
    free(c.t);
    pc_arena_free(c.arena);
    return rc;
}

void pattern_free(pattern *p)
{
    if (p)
        pc_arena_free(p->arena);
}
