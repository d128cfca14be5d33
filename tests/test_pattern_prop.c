/*
 * test_pattern_prop.c - the compiled pattern matcher (src/rules) against a
 * simple reference interpreter, on random events and random patterns: the
 * two must agree on every pair.
 *
 * The reference works the naive way, sharing nothing with the compiled
 * side but the jsmn tokenizer: it renders the event as one JSON object
 * (the way reads render it, plus "category"), expands the pattern's $or's
 * into plain conjunctions (EventBridge's "rule combinations"), collects
 * each field's values by walking the event's tokens along the path with
 * the trail of array elements each value sits in, and tries every choice
 * of one accepted value per field, keeping the choices whose trails agree
 * on every array they share (EventBridge's array-consistent matching).
 * Leaf tests are written again here, plainly (a backtracking wildcard,
 * doubles, byte-wise prefixes, a table for the few non-ASCII letters the
 * generator uses).
 *
 * Random values come from small pools so that patterns hit events often:
 * the test also fails if fewer than 10% or more than 90% of the pairs
 * match, which would mean the generator tests nothing. TEST_SEED=n replays
 * a run; TEST_QUICK=1 runs fewer pairs (sanitizers, valgrind).
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/pattern.h"
#include "testutil.h"

#define JSMN_STATIC
#include <jsmn.h>

/* ------------------------------------------------------------ text buffers */

typedef struct sb {
    char *p;
    size_t n, cap;
} sb;

static void sb_add(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_add(sb *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int w = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (b->p && (size_t)w < b->cap - b->n) {
            b->n += (size_t)w;
            return;
        }
        b->cap = b->cap * 2 + (size_t)w + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
}

static int pick(int n) { return (int)t_rand_below((uint64_t)n); }
static int chance(int pct) { return pick(100) < pct; }

/* --------------------------------------------------------------- the pools */

/* Strings as JSON text (some with escapes, some non-ASCII). */
static const char *const STRS[] = {
    "\"\"",       "\"x\"",      "\"xy\"",          "\"abc\"",       "\"ABC\"",
    "\"abcabc\"", "\"\xc3\x89" "a\"", "\"\xc3\xa9" "a\"", "\"10.0.0.1\"", "\"10.1.2.3\"",
    "\"::1\"",    "\"2001:db8::5\"", "\"a*b\"",   "\"q\\\"q\"",    "\"b\\u00e9\"",
};
static const char *const NUMS[] = {"0", "1", "2.5", "-3", "100", "1e2", "2.50", "7"};
static const char *const KEYS[] = {"a", "b", "c", "d"};

/* Structured mode: data is arrays of objects holding small integers, and
 * patterns ask for several of them at once, so that array-consistent
 * matching decides most answers. */
static int g_structured;

static void gen_scalar(sb *b)
{
    if (g_structured) {
        sb_add(b, "%d", pick(2));
        return;
    }
    int k = pick(10);
    if (k < 5)
        sb_add(b, "%s", STRS[pick(sizeof STRS / sizeof STRS[0])]);
    else if (k < 8)
        sb_add(b, "%s", NUMS[pick(sizeof NUMS / sizeof NUMS[0])]);
    else
        sb_add(b, "%s", k == 8 ? (chance(50) ? "true" : "false") : "null");
}

static void gen_value(sb *b, int depth);

static void gen_doc_object(sb *b, int depth)
{
    sb_add(b, "{");
    int n = g_structured ? 2 + pick(3) : pick(4) + (depth == 0);
    int used = 0;
    for (int k = 0, first = 1; k < n; k++) {
        int key = pick(4);
        if (used & (1 << key))
            continue;
        used |= 1 << key;
        sb_add(b, "%s\"%s\": ", first ? "" : ", ", KEYS[key]);
        first = 0;
        gen_value(b, depth + 1);
    }
    sb_add(b, "}");
}

static void gen_value(sb *b, int depth)
{
    int k = pick(10);
    if (g_structured && depth < 3 && k < 7) {
        sb_add(b, "[");
        int n = 1 + pick(3);
        for (int i = 0; i < n; i++) {
            if (i)
                sb_add(b, ", ");
            gen_doc_object(b, depth + 1);
        }
        sb_add(b, "]");
        return;
    }
    if (depth < 3 && k < 3) {
        gen_doc_object(b, depth);
    } else if (depth < 3 && k < 6) {
        /* Arrays, often of objects: what array-consistent matching is about. */
        sb_add(b, "[");
        int n = pick(4), objects = chance(50);
        for (int i = 0; i < n; i++) {
            if (i)
                sb_add(b, ", ");
            if (objects)
                gen_doc_object(b, depth + 1);
            else
                gen_value(b, depth + 1);
        }
        sb_add(b, "]");
    } else {
        gen_scalar(b);
    }
}

/* ---- patterns */

static const char *const PSTR[] = {"\"\"", "\"x\"", "\"a\"", "\"A\"", "\"abc\"", "\"\xc3\x89\"",
                                   "\"b\"", "\"c\"", "\"y\"", "\"q\\\"q\"", "\"10.\"", ("\"\xc3\xa9" "a\"")};
static const char *const PWILD[] = {"\"*\"", "\"a*\"", "\"*b*\"", "\"x*y\"", "\"a\\\\*b\"",
                                    "\"*c\"", "\"abc*abc\"", "\"*.*\"", "\"\xc3\xa9*\""};
static const char *const PCIDR[] = {"\"10.0.0.0/8\"", "\"10.1.0.0/16\"", "\"::/0\"",
                                    "\"2001:db8::/32\"", "\"10.0.0.1/32\"", "\"0.0.0.0/0\""};

static void gen_strlist(sb *b, const char *const *pool, int npool)
{
    if (chance(60)) {
        sb_add(b, "%s", pool[pick(npool)]);
        return;
    }
    int n = 1 + pick(3);
    sb_add(b, "[");
    for (int i = 0; i < n; i++)
        sb_add(b, "%s%s", i ? ", " : "", pool[pick(npool)]);
    sb_add(b, "]");
}

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void gen_matcher(sb *b)
{
    if (g_structured && chance(70)) {
        if (chance(80))
            sb_add(b, "%d", pick(2));
        else
            sb_add(b, "{\"anything-but\": %d}", pick(2));
        return;
    }
    switch (pick(17)) {
    case 0:
    case 1:
        sb_add(b, "%s", STRS[pick(N(STRS))]);
        break;
    case 2:
        sb_add(b, "%s", NUMS[pick(N(NUMS))]);
        break;
    case 3:
        sb_add(b, "%s", (const char *[]){"true", "false", "null"}[pick(3)]);
        break;
    case 4:
        if (chance(50))
            sb_add(b, "{\"prefix\": %s}", PSTR[pick(N(PSTR))]);
        else
            sb_add(b, "{\"prefix\": {\"equals-ignore-case\": %s}}", PSTR[pick(N(PSTR))]);
        break;
    case 5:
        if (chance(50))
            sb_add(b, "{\"suffix\": %s}", PSTR[pick(N(PSTR))]);
        else
            sb_add(b, "{\"suffix\": {\"equals-ignore-case\": %s}}", PSTR[pick(N(PSTR))]);
        break;
    case 6:
        sb_add(b, "{\"equals-ignore-case\": %s}", STRS[pick(N(STRS))]);
        break;
    case 7:
        sb_add(b, "{\"wildcard\": %s}", PWILD[pick(N(PWILD))]);
        break;
    case 8:
        sb_add(b, "{\"anything-but\": ");
        gen_strlist(b, STRS, N(STRS));
        sb_add(b, "}");
        break;
    case 9:
        sb_add(b, "{\"anything-but\": ");
        gen_strlist(b, NUMS, N(NUMS));
        sb_add(b, "}");
        break;
    case 10: {
        static const char *const forms[] = {"prefix", "suffix", "equals-ignore-case", "wildcard"};
        int f = pick(4);
        sb_add(b, "{\"anything-but\": {\"%s\": ", forms[f]);
        if (f == 3)
            gen_strlist(b, PWILD, N(PWILD));
        else
            gen_strlist(b, PSTR, N(PSTR));
        sb_add(b, "}}");
        break;
    }
    case 11:
    case 12: {
        static const char *const bounds[] = {"-5", "0", "1", "2.5", "3", "100", "1e3"};
        int lo = pick(N(bounds) - 1), hi = lo + 1 + pick(N(bounds) - 1 - lo);
        int form = pick(4);
        if (form == 0)
            sb_add(b, "{\"numeric\": [\"=\", %s]}", NUMS[pick(N(NUMS))]);
        else if (form == 1)
            sb_add(b, "{\"numeric\": [\"%s\", %s]}", chance(50) ? ">" : ">=", bounds[lo]);
        else if (form == 2)
            sb_add(b, "{\"numeric\": [\"%s\", %s]}", chance(50) ? "<" : "<=", bounds[hi]);
        else
            sb_add(b, "{\"numeric\": [\"%s\", %s, \"%s\", %s]}", chance(50) ? ">" : ">=", bounds[lo],
                   chance(50) ? "<" : "<=", bounds[hi]);
        break;
    }
    case 13:
    case 14:
        sb_add(b, "{\"exists\": %s}", chance(70) ? "true" : "false");
        break;
    default:
        sb_add(b, "{\"cidr\": %s}", PCIDR[pick(N(PCIDR))]);
        break;
    }
}

static void gen_list(sb *b)
{
    int n = 1 + pick(3) - (chance(40) ? 0 : pick(2));
    if (n < 1)
        n = 1;
    sb_add(b, "[");
    for (int i = 0; i < n; i++) {
        if (i)
            sb_add(b, ", ");
        gen_matcher(b);
    }
    sb_add(b, "]");
}

/* An object of the pattern: at the root (level 0) the event's fields, in
 * data/metadata (level >= 1) the pool's keys. */
static void gen_pobject(sb *b, int level, int depth)
{
    static const char *const roots[] = {"type", "stream", "category", "tags", "revision",
                                        "position", "id", "data", "data", "data", "metadata"};
    if (g_structured && level == 0 && chance(85)) {
        sb_add(b, "{\"data\": ");
        gen_pobject(b, 1, depth + 1);
        sb_add(b, "}");
        return;
    }
    sb_add(b, "{");
    int n = 1 + pick(level && !g_structured ? 3 : 2), used = 0, first = 1;
    for (int k = 0; k < n; k++) {
        int key = level ? pick(4) : pick(N(roots));
        const char *name = level ? KEYS[key] : roots[key];
        if (!level && key >= 7 && key <= 9)
            key = 7; /* "data" three times in the pool: more weight, one key */
        if (used & (1 << key))
            continue;
        used |= 1 << key;
        sb_add(b, "%s\"%s\": ", first ? "" : ", ", name);
        first = 0;
        int container = level ? (depth < 4 && chance(g_structured ? 45 : 35))
                              : (key >= 7 && chance(90));
        if (container)
            gen_pobject(b, level + 1, depth + 1);
        else
            gen_list(b);
    }
    if (depth < 3 && chance(level ? 15 : 20)) {
        int nalt = 2 + pick(2);
        sb_add(b, "%s\"$or\": [", first ? "" : ", ");
        for (int a = 0; a < nalt; a++) {
            if (a)
                sb_add(b, ", ");
            gen_pobject(b, level, depth + 1);
        }
        sb_add(b, "]");
    }
    sb_add(b, "}");
}

/* --------------------------------------------------- the reference interpreter */

typedef struct rdoc {
    const char *js;
    jsmntok_t *t;
    int n;
} rdoc;

static void rparse(rdoc *d, const char *js, size_t len)
{
    jsmn_parser p;
    jsmn_init(&p);
    int need = jsmn_parse(&p, js, len, NULL, 0);
    if (need <= 0) {
        fprintf(stderr, "reference: bad JSON: %.*s\n", (int)len, js);
        abort();
    }
    d->js = js;
    d->t = calloc((size_t)need, sizeof *d->t);
    jsmn_init(&p);
    d->n = jsmn_parse(&p, js, len, d->t, (unsigned)need);
}

static int rskip(const rdoc *d, int i)
{
    int j = i + 1;
    for (int k = 0; k < d->t[i].size; k++)
        j = rskip(d, j);
    return j;
}

/* A decoded string (the escapes the generators write: \" \\ \uXXXX < 0x800). */
static size_t runesc(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            out[o++] = s[i];
        } else if (s[i + 1] == 'u') {
            unsigned cp;
            sscanf(s + i + 2, "%4x", &cp);
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else {
                out[o++] = (char)(0xc0 | cp >> 6);
                out[o++] = (char)(0x80 | (cp & 0x3f));
            }
            i += 5;
        } else {
            out[o++] = s[++i];
        }
    }
    return o;
}

typedef struct rval {
    int tok;
    int trail[8][2]; /* (array token, element index) for container elements */
    int ntrail;
} rval;

typedef struct rvals {
    rval v[512];
    int n;
} rvals;

static void rcollect(const rdoc *d, int i, char **path, size_t *plen, int np, int at, rval *cur,
                     rvals *out)
{
    const jsmntok_t *t = &d->t[i];
    if (t->type == JSMN_ARRAY) {
        int j = i + 1;
        for (int k = 0; k < t->size; k++) {
            rval next = *cur;
            if (d->t[j].type == JSMN_OBJECT || d->t[j].type == JSMN_ARRAY) {
                next.trail[next.ntrail][0] = i;
                next.trail[next.ntrail][1] = k;
                next.ntrail++;
            }
            rcollect(d, j, path, plen, np, at, &next, out);
            j = rskip(d, j);
        }
        return;
    }
    if (at == np) {
        if (t->type != JSMN_OBJECT && out->n < 512) {
            out->v[out->n] = *cur;
            out->v[out->n].tok = i;
            out->n++;
        }
        return;
    }
    if (t->type != JSMN_OBJECT)
        return;
    int j = i + 1;
    for (int k = 0; k < t->size; k++) {
        char key[256];
        size_t kn = runesc(d->js + d->t[j].start, (size_t)(d->t[j].end - d->t[j].start), key);
        if (kn == plen[at] && !memcmp(key, path[at], kn))
            rcollect(d, j + 1, path, plen, np, at + 1, cur, out);
        j = rskip(d, j + 1);
    }
}

/* ---- leaf tests, written plainly */

static size_t rlower(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0xc3 && i + 1 < n && (unsigned char)s[i + 1] == 0x89) { /* É -> é */
            out[o++] = (char)0xc3;
            out[o++] = (char)0xa9;
            i++;
        } else {
            out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
    }
    return o;
}

static int rwild(const char *p, size_t pn, const char *s, size_t sn)
{
    if (pn == 0)
        return sn == 0;
    if (p[0] == '*') {
        for (size_t k = 0; k <= sn; k++)
            if (rwild(p + 1, pn - 1, s + k, sn - k))
                return 1;
        return 0;
    }
    char c = p[0];
    size_t adv = 1;
    if (c == '\\') {
        c = p[1];
        adv = 2;
    }
    return sn > 0 && s[0] == c && rwild(p + adv, pn - adv, s + 1, sn - 1);
}

static int rip(const char *s, size_t n, unsigned char ip[16])
{
    char text[64];
    if (n >= sizeof text)
        return 0;
    memcpy(text, s, n);
    text[n] = 0;
    unsigned a, b, c, d;
    char tail;
    if (sscanf(text, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4) {
        if (a > 255 || b > 255 || c > 255 || d > 255)
            return 0;
        ip[0] = (unsigned char)a, ip[1] = (unsigned char)b, ip[2] = (unsigned char)c,
        ip[3] = (unsigned char)d;
        return 4;
    }
    return strchr(text, ':') && inet_pton(AF_INET6, text, ip) == 1 ? 16 : 0;
}

typedef struct rleaf { /* the event value under test */
    int kind;          /* 's', 'n', 't', 'f', 'z' */
    char s[512];
    size_t n;
    double num;
} rleaf;

static void rleaf_of(const rdoc *d, int i, rleaf *v)
{
    const jsmntok_t *t = &d->t[i];
    const char *s = d->js + t->start;
    size_t n = (size_t)(t->end - t->start);
    if (t->type == JSMN_STRING) {
        v->kind = 's';
        v->n = runesc(s, n, v->s);
    } else if (s[0] == 't' || s[0] == 'f' || s[0] == 'n') {
        v->kind = s[0] == 'n' ? 'z' : s[0];
    } else {
        v->kind = 'n';
        char text[64];
        memcpy(text, s, n);
        text[n] = 0;
        v->num = strtod(text, NULL);
    }
}

/* Decoded string token i of the pattern. */
static size_t rpstr(const rdoc *p, int i, char *out)
{
    return runesc(p->js + p->t[i].start, (size_t)(p->t[i].end - p->t[i].start), out);
}

static double rpnum(const rdoc *p, int i)
{
    char text[64];
    size_t n = (size_t)(p->t[i].end - p->t[i].start);
    memcpy(text, p->js + p->t[i].start, n);
    text[n] = 0;
    return strtod(text, NULL);
}

static int rtok_is(const rdoc *p, int i, const char *s)
{
    return (size_t)(p->t[i].end - p->t[i].start) == strlen(s) &&
           !memcmp(p->js + p->t[i].start, s, strlen(s));
}

/* Each element (or the one value) of token i: string/number tests. */
static int rany_str(const rdoc *p, int i, const rleaf *v, int how, int icase)
{
    int n = p->t[i].type == JSMN_ARRAY ? p->t[i].size : 1;
    int first = p->t[i].type == JSMN_ARRAY ? i + 1 : i;
    if (v->kind != 's')
        return 0;
    char vs[1024];
    size_t vn = icase ? rlower(v->s, v->n, vs) : (memcpy(vs, v->s, v->n), v->n);
    for (int k = 0; k < n; k++) {
        char raw[512], x[1024];
        size_t rn = rpstr(p, first + k, raw);
        size_t xn = icase ? rlower(raw, rn, x) : (memcpy(x, raw, rn), rn);
        int hit = how == 0   ? vn == xn && !memcmp(vs, x, xn)
                  : how == 1 ? vn >= xn && !memcmp(vs, x, xn)
                  : how == 2 ? vn >= xn && !memcmp(vs + vn - xn, x, xn)
                             : rwild(raw, rn, v->s, v->n);
        if (hit)
            return 1;
    }
    return 0;
}

/* Does matcher token m accept the value? (exists handled by the caller) */
static int rmatch(const rdoc *p, int m, const rleaf *v)
{
    const jsmntok_t *t = &p->t[m];
    if (t->type == JSMN_STRING)
        return rany_str(p, m, v, 0, 0);
    if (t->type == JSMN_PRIMITIVE) {
        char c = p->js[t->start];
        if (c == 't' || c == 'f')
            return v->kind == c;
        if (c == 'n')
            return v->kind == 'z';
        return v->kind == 'n' && v->num == rpnum(p, m);
    }
    int op = m + 1, arg = m + 2;
    if (rtok_is(p, op, "prefix") || rtok_is(p, op, "suffix")) {
        int how = rtok_is(p, op, "prefix") ? 1 : 2;
        if (p->t[arg].type == JSMN_OBJECT)
            return rany_str(p, arg + 2, v, how, 1);
        return rany_str(p, arg, v, how, 0);
    }
    if (rtok_is(p, op, "equals-ignore-case"))
        return rany_str(p, arg, v, 0, 1);
    if (rtok_is(p, op, "wildcard"))
        return rany_str(p, arg, v, 3, 0);
    if (rtok_is(p, op, "numeric")) {
        if (v->kind != 'n')
            return 0;
        for (int k = 0; k < p->t[arg].size; k += 2) {
            int o = arg + 1 + k;
            double x = rpnum(p, o + 1);
            if ((rtok_is(p, o, "=") && !(v->num == x)) || (rtok_is(p, o, ">") && !(v->num > x)) ||
                (rtok_is(p, o, ">=") && !(v->num >= x)) || (rtok_is(p, o, "<") && !(v->num < x)) ||
                (rtok_is(p, o, "<=") && !(v->num <= x)))
                return 0;
        }
        return 1;
    }
    if (rtok_is(p, op, "cidr")) {
        char spec[128];
        size_t sn = rpstr(p, arg, spec);
        spec[sn] = 0;
        char *slash = strchr(spec, '/');
        unsigned char net[16], ip[16];
        int fam = rip(spec, (size_t)(slash - spec), net), bits = atoi(slash + 1);
        if (v->kind != 's' || rip(v->s, v->n, ip) != fam)
            return 0;
        for (int b = 0; b < bits; b++)
            if (((net[b / 8] ^ ip[b / 8]) >> (7 - b % 8)) & 1)
                return 0;
        return 1;
    }
    /* anything-but */
    if (p->t[arg].type == JSMN_OBJECT) {
        int f = arg + 1, fa = arg + 2;
        if (rtok_is(p, f, "prefix"))
            return !rany_str(p, fa, v, 1, 0);
        if (rtok_is(p, f, "suffix"))
            return !rany_str(p, fa, v, 2, 0);
        if (rtok_is(p, f, "wildcard"))
            return !rany_str(p, fa, v, 3, 0);
        return !rany_str(p, fa, v, 0, 1);
    }
    int first = p->t[arg].type == JSMN_ARRAY ? arg + 1 : arg;
    if (p->t[first].type == JSMN_STRING)
        return !rany_str(p, arg, v, 0, 0);
    int n = p->t[arg].type == JSMN_ARRAY ? p->t[arg].size : 1;
    for (int k = 0; k < n; k++)
        if (v->kind == 'n' && v->num == rpnum(p, first + k))
            return 0;
    return 1;
}

/* ---- $or expansion into conjunctions of (path, list) fields */

typedef struct rfield {
    char *path[40];
    size_t plen[40];
    int np;
    int list; /* pattern token of the match list */
} rfield;

typedef struct rconj {
    rfield f[128];
    int n;
} rconj;

typedef struct rdnf {
    rconj *c;
    int n;
} rdnf;

static char rkeys[4096][64]; /* decoded pattern keys */
static int nrkeys;

static void rdnf_product(rdnf *acc, const rdnf *alts)
{
    rdnf out = {calloc((size_t)(acc->n * alts->n + 1), sizeof(rconj)), 0};
    for (int a = 0; a < acc->n; a++)
        for (int b = 0; b < alts->n; b++) {
            rconj *c = &out.c[out.n++];
            *c = acc->c[a];
            for (int k = 0; k < alts->c[b].n; k++)
                c->f[c->n++] = alts->c[b].f[k];
        }
    free(acc->c);
    *acc = out;
}

/* Conjunctions of pattern object i at path prefix (path, np). */
static rdnf rexpand(const rdoc *p, int i, char **path, size_t *plen, int np)
{
    rdnf acc = {calloc(1, sizeof(rconj)), 1};
    int j = i + 1;
    for (int k = 0; k < p->t[i].size; k++) {
        int key = j, val = j + 1;
        char *name = rkeys[nrkeys++];
        size_t nn = rpstr(p, key, name);
        name[nn] = 0;
        if (!strcmp(name, "$or")) {
            rdnf alts = {NULL, 0};
            int a = val + 1;
            for (int x = 0; x < p->t[val].size; x++) {
                rdnf one = rexpand(p, a, path, plen, np);
                alts.c = realloc(alts.c, (size_t)(alts.n + one.n) * sizeof(rconj));
                memcpy(alts.c + alts.n, one.c, (size_t)one.n * sizeof(rconj));
                alts.n += one.n;
                free(one.c);
                a = rskip(p, a);
            }
            rdnf_product(&acc, &alts);
            free(alts.c);
        } else {
            path[np] = name;
            plen[np] = nn;
            if (p->t[val].type == JSMN_OBJECT) {
                rdnf sub = rexpand(p, val, path, plen, np + 1);
                rdnf_product(&acc, &sub);
                free(sub.c);
            } else {
                rfield f;
                memset(&f, 0, sizeof f);
                f.np = np + 1;
                for (int q = 0; q <= np; q++) {
                    f.path[q] = path[q];
                    f.plen[q] = plen[q];
                }
                f.list = val;
                for (int c = 0; c < acc.n; c++)
                    acc.c[c].f[acc.c[c].n++] = f;
            }
        }
        j = rskip(p, val);
    }
    return acc;
}

/* ---- choices */

typedef struct rcand {
    rvals vals;      /* every value at the path */
    int ok[512];     /* accepted by the list */
    int absent_ok;   /* no value and an exists:false in the list */
} rcand;

static int rtrails_agree(const rval *a, const rval *b)
{
    for (int x = 0; x < a->ntrail; x++)
        for (int y = 0; y < b->ntrail; y++)
            if (a->trail[x][0] == b->trail[y][0] && a->trail[x][1] != b->trail[y][1])
                return 0;
    return 1;
}

static int rchoose(rcand *c, int nf, int k, const rval **chosen, int nchosen)
{
    if (k == nf)
        return 1;
    if (c[k].absent_ok)
        return rchoose(c, nf, k + 1, chosen, nchosen);
    for (int i = 0; i < c[k].vals.n; i++) {
        if (!c[k].ok[i])
            continue;
        int agree = 1;
        for (int q = 0; q < nchosen && agree; q++)
            agree = rtrails_agree(chosen[q], &c[k].vals.v[i]);
        if (!agree)
            continue;
        chosen[nchosen] = &c[k].vals.v[i];
        if (rchoose(c, nf, k + 1, chosen, nchosen + 1))
            return 1;
    }
    return 0;
}

static int ref_match(const char *pat, const char *event)
{
    rdoc p, e;
    rparse(&p, pat, strlen(pat));
    rparse(&e, event, strlen(event));
    char *path[40];
    size_t plen[40];
    nrkeys = 0;
    rdnf dnf = rexpand(&p, 0, path, plen, 0);
    int result = 0;
    static rcand cand[128];
    for (int c = 0; c < dnf.n && !result; c++) {
        rconj *cj = &dnf.c[c];
        int possible = 1;
        for (int k = 0; k < cj->n && possible; k++) {
            rfield *f = &cj->f[k];
            rcand *cd = &cand[k];
            memset(&cd->vals, 0, sizeof cd->vals);
            rval start;
            memset(&start, 0, sizeof start);
            rcollect(&e, 0, f->path, f->plen, f->np, 0, &start, &cd->vals);
            cd->absent_ok = 0;
            int any = 0;
            int list = f->list, m = list + 1;
            for (int x = 0; x < p.t[list].size; x++) {
                int is_exists = p.t[m].type == JSMN_OBJECT && rtok_is(&p, m + 1, "exists");
                if (is_exists && p.js[p.t[m + 2].start] == 'f' && cd->vals.n == 0)
                    cd->absent_ok = 1;
                m = rskip(&p, m);
            }
            for (int i = 0; i < cd->vals.n; i++) {
                rleaf v;
                rleaf_of(&e, cd->vals.v[i].tok, &v);
                cd->ok[i] = 0;
                m = list + 1;
                for (int x = 0; x < p.t[list].size && !cd->ok[i]; x++) {
                    int is_exists = p.t[m].type == JSMN_OBJECT && rtok_is(&p, m + 1, "exists");
                    if (is_exists)
                        cd->ok[i] = p.js[p.t[m + 2].start] == 't';
                    else
                        cd->ok[i] = rmatch(&p, m, &v);
                    m = rskip(&p, m);
                }
                any |= cd->ok[i];
            }
            possible = any || cd->absent_ok;
        }
        const rval *chosen[128];
        if (possible && rchoose(cand, cj->n, 0, chosen, 0))
            result = 1;
    }
    free(dnf.c);
    free(p.t);
    free(e.t);
    return result;
}

/* ------------------------------------------------------------------ the test */

typedef struct gen_event {
    stele_event e;
    sb data, meta, render;
    const char *tags[3];
    char stream[32], type[16];
} gen_event;

static void gen_event_make(gen_event *g)
{
    static const char *const streams[] = {"Order-1", "Order-2", "User-7", "x", "abc-abc"};
    static const char *const types[] = {"A", "B", "Placed", "abc"};
    static const char *const alltags[] = {"t1", "t2", "abc"};
    memset(&g->e, 0, sizeof g->e);
    g->data.n = g->meta.n = g->render.n = 0;
    for (int k = 0; k < 16; k++)
        g->e.id[k] = (uint8_t)t_rand();
    snprintf(g->stream, sizeof g->stream, "%s", streams[pick(N(streams))]);
    snprintf(g->type, sizeof g->type, "%s", types[pick(N(types))]);
    g->e.stream = g->stream;
    g->e.stream_len = strlen(g->stream);
    g->e.type = g->type;
    g->e.type_len = strlen(g->type);
    g->e.revision = (uint64_t)pick(6);
    g->e.position = (uint64_t)pick(120);
    g->e.created_us = 1765000000000000LL + (int64_t)pick(1000000);
    size_t nt = 0;
    for (int k = 0; k < 3; k++)
        if (chance(40))
            g->tags[nt++] = alltags[k];
    g->e.tags = g->tags;
    g->e.ntags = nt;
    int dk = pick(10);
    if (dk < 8) {
        if (dk < 7)
            gen_doc_object(&g->data, 0);
        else
            gen_value(&g->data, 1);
        g->e.flags |= STELE_EVENT_JSON;
    } else if (dk == 8) {
        sb_add(&g->data, "not json");
    }
    g->e.data = g->data.p;
    g->e.data_len = g->data.n;
    if (chance(60)) {
        gen_doc_object(&g->meta, 1);
        g->e.metadata = g->meta.p;
        g->e.metadata_len = g->meta.n;
        g->e.flags |= STELE_META_JSON;
    }
    /* The reference's view: the event as reads render it, plus category. */
    char id[37], created[32];
    stele_uuid_format(g->e.id, id);
    stele_time_format(g->e.created_us, created);
    const char *dash = strchr(g->stream, '-');
    int catlen = dash && dash != g->stream ? (int)(dash - g->stream) : (int)strlen(g->stream);
    sb_add(&g->render,
           "{\"id\": \"%s\", \"stream\": \"%s\", \"category\": \"%.*s\", \"type\": \"%s\", "
           "\"revision\": %llu, \"position\": %llu, \"created\": \"%s\"",
           id, g->stream, catlen, g->stream, g->type, (unsigned long long)g->e.revision,
           (unsigned long long)g->e.position, created);
    if (nt) {
        sb_add(&g->render, ", \"tags\": [");
        for (size_t k = 0; k < nt; k++)
            sb_add(&g->render, "%s\"%s\"", k ? ", " : "", g->tags[k]);
        sb_add(&g->render, "]");
    }
    if (g->e.data_len && (g->e.flags & STELE_EVENT_JSON))
        sb_add(&g->render, ", \"data\": %.*s", (int)g->data.n, g->data.p);
    if (g->e.metadata_len)
        sb_add(&g->render, ", \"metadata\": %.*s", (int)g->meta.n, g->meta.p);
    sb_add(&g->render, "}");
}

/*
 * Robustness: generated patterns and event data with random bytes changed,
 * cut or inserted. A pattern must compile or be refused with a message of
 * the form "path: reason"; matching mangled data must not fail (it is
 * absent or partly readable). ASan and valgrind watch the memory.
 */
static int test_mangled(int rounds)
{
    static const char noise[] = "{}[]\",:*\\ 0123456789-.eEtrufalsn$/\x01\xc3\xa9\xff";
    sb pat = {0}, data = {0};
    gen_event g;
    memset(&g, 0, sizeof g);
    pattern_input *in = NULL;
    int refused = 0, compiled = 0;
    for (int r = 0; r < rounds; r++) {
        pat.n = 0;
        gen_pobject(&pat, 0, 0);
        int edits = 1 + pick(4);
        for (int k = 0; k < edits && pat.n; k++) {
            size_t at = (size_t)pick((int)pat.n);
            int how = pick(3);
            if (how == 0) {
                pat.p[at] = noise[pick((int)sizeof noise - 1)];
            } else if (how == 1) {
                memmove(pat.p + at, pat.p + at + 1, pat.n - at);
                pat.n--;
            } else {
                sb_add(&pat, " ");
                memmove(pat.p + at + 1, pat.p + at, pat.n - at - 1);
                pat.p[at] = noise[pick((int)sizeof noise - 1)];
            }
        }
        char err[512];
        err[0] = 0;
        pattern *p = NULL;
        int rc = pattern_compile(pat.p, pat.n, &p, err, sizeof err);
        if (rc == 0) {
            compiled++;
        } else {
            refused++;
            if ((rc != STELE_EINVAL && rc != STELE_ETOOBIG) || p || !strstr(err, ": ")) {
                fprintf(stderr, "mangled pattern: rc %d, message \"%s\"\n  %.*s\n", rc, err,
                        (int)pat.n, pat.p);
                CHECK(0);
            }
        }
        /* An event whose data is mangled JSON, flagged as JSON. */
        gen_event_make(&g);
        data.n = 0;
        sb_add(&data, "%.*s", (int)g.data.n, g.data.p ? g.data.p : "");
        for (int k = 0; k < 3 && data.n; k++)
            data.p[pick((int)data.n)] = noise[pick((int)sizeof noise - 1)];
        if (data.n && chance(50))
            data.n = (size_t)pick((int)data.n);
        g.e.data = data.p;
        g.e.data_len = data.n;
        g.e.flags |= STELE_EVENT_JSON;
        if (!in)
            CHECK_OK(pattern_input_new(&g.e, &in));
        else
            pattern_input_reset(in, &g.e);
        if (p) {
            int m = pattern_match(p, in);
            CHECK(m == 0 || m == 1);
            pattern_free(p);
        }
        const char *probe = "{\"data\": {\"a\": [{\"exists\": true}], \"b\": [{\"anything-but\": 1}]}}";
        CHECK_OK(pattern_compile(probe, strlen(probe), &p, err, sizeof err));
        int m = pattern_match(p, in);
        CHECK(m == 0 || m == 1);
        pattern_free(p);
    }
    printf("test_pattern_prop: mangled patterns: %d refused, %d still valid\n", refused, compiled);
    CHECK(refused > rounds / 2);
    pattern_input_free(in);
    free(pat.p);
    free(data.p);
    free(g.data.p);
    free(g.meta.p);
    free(g.render.p);
    return rounds;
}

int main(void)
{
    t_seed();
    int quick = getenv("TEST_QUICK") != NULL;
    int events = quick ? 300 : 4000, per_event = 25;
    int matched = 0, total = 0, passed = 0, smatched = 0, stotal = 0;
    gen_event g;
    memset(&g, 0, sizeof g);
    sb pat = {0};
    pattern_input *in = NULL;
    for (int ev = 0; ev < events; ev++) {
        g_structured = ev % 3 == 2;
        gen_event_make(&g);
        if (!in)
            CHECK_OK(pattern_input_new(&g.e, &in));
        else
            pattern_input_reset(in, &g.e);
        for (int k = 0; k < per_event; k++) {
            pat.n = 0;
            gen_pobject(&pat, 0, 0);
            char err[512];
            pattern *p;
            int rc = pattern_compile(pat.p, pat.n, &p, err, sizeof err);
            if (rc) {
                fprintf(stderr, "generated pattern refused: %s\n  %s\n", err, pat.p);
                CHECK(rc == 0);
                continue;
            }
            int got = pattern_match(p, in);
            int want = ref_match(pat.p, g.render.p);
            if (got != want) {
                fprintf(stderr, "disagree: compiled %d, reference %d\n  pattern %s\n  event %s\n",
                        got, want, pat.p, g.render.p);
                CHECK(got == want);
            }
            matched += got;
            smatched += g_structured && got;
            stotal += g_structured;
            total++;
            passed++;
            pattern_free(p);
        }
    }
    passed += test_mangled(quick ? 2000 : 20000);
    printf("test_pattern_prop: %d of %d pairs matched (structured: %d of %d)\n", matched, total,
           smatched, stotal);
    CHECK(matched * 10 >= total && matched * 10 <= total * 9);
    pattern_input_free(in);
    free(pat.p);
    free(g.data.p);
    free(g.meta.p);
    free(g.render.p);
    return t_done("test_pattern_prop", passed);
}
