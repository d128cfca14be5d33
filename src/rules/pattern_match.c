/*
 * pattern_match.c - running a compiled pattern over one event.
 *
 * A conjunction (pat_node) matches when each of its fields and each of its
 * $or's matches; a $or when one of its alternatives does; a field when one
 * of its matchers does. Everything stops at the first answer: a field that
 * fails ends its conjunction, a matcher that succeeds ends its field.
 * Fields on the event's own fields come first (the compiler orders them),
 * so a pattern whose type or stream does not match never parses data.
 *
 * A matcher sees the leaf values at its field's path (several if the event
 * has an array there, none if the path is absent or ends at an object):
 *
 *   exists: true / false      some value / no value at all
 *   anything-but (any form)   some value that the listed values or tests
 *                             do not match: a value of another type (a
 *                             number for a string list, a string for a
 *                             number list, true/false/null) is "anything
 *                             but" them; an absent field matches nothing
 *   every other operator      some value it accepts
 *
 * Exact strings and the string tests work on strings only, exact numbers
 * and numeric ranges on numbers only, compared as long doubles, or exactly
 * when both sides are integers written as such (pat_num_cmp), and
 * cidr on strings that are IPv4 or IPv6 addresses of the block's family.
 * Case-insensitive tests compare lower-cased text: each code point mapped
 * by towlower in the C.UTF-8 locale (simple case mapping, no expansions
 * such as German sharp s to "ss"), the pattern side once at compile time,
 * each event string once per input.
 */
#include <locale.h>
#include <pthread.h>
#include <string.h>
#include <wctype.h>

#include "rules/pattern_int.h"
#include "util/json_text.h"
#include "util/util.h"

/* ------------------------------------------------------------- lower case */

static locale_t pm_utf8;
static pthread_once_t pm_once = PTHREAD_ONCE_INIT;

static void pm_locale_init(void)
{
    pm_utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

size_t pat_lower(const char *s, size_t n, char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        if (c < 0x80) {
            out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            i++;
            continue;
        }
        /* Decode one well-formed sequence; anything else is copied. */
        int len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
        uint32_t cp = len == 4 ? (c & 7) : len == 3 ? (c & 15) : (c & 31);
        int ok = len && i + (size_t)len <= n;
        for (int k = 1; ok && k < len; k++) {
            ok = (p[i + (size_t)k] & 0xc0) == 0x80;
            cp = cp << 6 | (p[i + (size_t)k] & 0x3f);
        }
        if (ok && (cp < (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u) || cp > 0x10ffff ||
                   (cp >= 0xd800 && cp <= 0xdfff)))
            ok = 0;
        if (!ok) {
            out[o++] = (char)c;
            i++;
            continue;
        }
        pthread_once(&pm_once, pm_locale_init);
        uint32_t lc = cp;
        if (pm_utf8) {
            wint_t w = towlower_l((wint_t)cp, pm_utf8);
            if (w <= 0x10ffff && !(w >= 0xd800 && w <= 0xdfff))
                lc = (uint32_t)w;
        }
        o += jtext_utf8_put(lc, (uint8_t *)out + o);
        i += (size_t)len;
    }
    return o;
}

/* --------------------------------------------------------------- leaves */

static int pm_prefix(const char *s, size_t n, const char *x, size_t xn)
{
    return n >= xn && pat_same(s, x, xn);
}

static int pm_suffix(const char *s, size_t n, const char *x, size_t xn)
{
    return n >= xn && pat_same(s + n - xn, x, xn);
}

/* Find x in s[from..n); the index or -1. */
static long pm_find(const char *s, size_t n, size_t from, const char *x, size_t xn)
{
    if (xn == 0)
        return (long)from;
    if (n < from + xn)
        return -1;
    const char *p = memmem(s + from, n - from, x, xn);
    return p ? (long)(p - s) : -1;
}

/* Glob with '*' only: the first segment is a prefix (unless the pattern
 * starts with '*'), the last a suffix (unless it ends with '*'), and the
 * middle ones are found left to right, each as early as possible, which
 * is enough when '*' is the only wildcard. */
static int pm_wild(const pat_wild *w, const char *s, size_t n)
{
    if (w->nseg == 1)
        return n == w->segn[0] && !memcmp(s, w->seg[0], n);
    size_t lo = 0, hi = n;
    size_t a = 0, b = w->nseg;
    if (!w->lead) {
        if (!pm_prefix(s, n, w->seg[0], w->segn[0]))
            return 0;
        lo = w->segn[0];
        a = 1;
    }
    if (!w->trail) {
        size_t ln = w->segn[w->nseg - 1];
        if (n < lo + ln || memcmp(s + n - ln, w->seg[w->nseg - 1], ln))
            return 0;
        hi = n - ln;
        b = w->nseg - 1;
    }
    for (size_t k = a; k < b; k++) {
        long at = pm_find(s, hi, lo, w->seg[k], w->segn[k]);
        if (at < 0)
            return 0;
        lo = (size_t)at + w->segn[k];
    }
    return 1;
}

static int pm_in_range(const pat_matcher *m, const pat_num *x)
{
    if (m->has_lo) {
        int c = pat_num_cmp(x, &m->lo);
        if (c < 0 || (c == 0 && !m->lo_incl))
            return 0;
    }
    if (m->has_hi) {
        int c = pat_num_cmp(x, &m->hi);
        if (c > 0 || (c == 0 && !m->hi_incl))
            return 0;
    }
    return 1;
}

static int pm_cidr(const pat_matcher *m, const pat_val *v)
{
    uint8_t ip[16];
    if (pat_parse_ip(v->s, v->n, ip) != m->iplen)
        return 0;
    int bits = m->bits;
    for (int k = 0; k < m->iplen && bits > 0; k++, bits -= 8) {
        uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
        if ((ip[k] & mask) != m->ip[k])
            return 0;
    }
    return 1;
}

static int pm_any_str(const pat_matcher *m, const char *s, size_t n, int how)
{
    for (size_t k = 0; k < m->count; k++) {
        const char *x = m->str[k];
        size_t xn = m->strn[k];
        int hit = how == 0   ? n == xn && pat_same(s, x, xn)
                  : how == 1 ? pm_prefix(s, n, x, xn)
                  : how == 2 ? pm_suffix(s, n, x, xn)
                             : pm_wild(&m->wild[k], s, n);
        if (hit)
            return 1;
    }
    return 0;
}

/* Does value v satisfy matcher m (other than exists)? */
static int pm_leaf(const pat_matcher *m, pattern_input *in, pat_val *v)
{
    int is_str = v->kind == PV_STR;
    switch (m->op) {
    case PM_STR:
        return is_str && pm_any_str(m, v->s, v->n, 0);
    case PM_NUM:
        return pat_val_num(in, v) && !pat_num_cmp(&v->num, &m->num[0]);
    case PM_TRUE:
        return v->kind == PV_TRUE;
    case PM_FALSE:
        return v->kind == PV_FALSE;
    case PM_NULL:
        return v->kind == PV_NULL;
    case PM_PREFIX:
        return is_str && pm_any_str(m, v->s, v->n, 1);
    case PM_SUFFIX:
        return is_str && pm_any_str(m, v->s, v->n, 2);
    case PM_EQ_IC:
    case PM_PREFIX_IC:
    case PM_SUFFIX_IC:
        if (!is_str || pat_val_lower(in, v))
            return 0;
        return pm_any_str(m, v->low, v->lown, m->op == PM_EQ_IC ? 0 : m->op == PM_PREFIX_IC ? 1 : 2);
    case PM_WILDCARD:
        return is_str && pm_any_str(m, v->s, v->n, 3);
    case PM_NUMERIC:
        return pat_val_num(in, v) && pm_in_range(m, &v->num);
    case PM_CIDR:
        return is_str && pm_cidr(m, v);
    case PM_BUT_STR:
        return !(is_str && pm_any_str(m, v->s, v->n, 0));
    case PM_BUT_NUM:
        if (!pat_val_num(in, v))
            return 1;
        for (size_t k = 0; k < m->count; k++)
            if (!pat_num_cmp(&v->num, &m->num[k]))
                return 0;
        return 1;
    case PM_BUT_PREFIX:
        return !(is_str && pm_any_str(m, v->s, v->n, 1));
    case PM_BUT_SUFFIX:
        return !(is_str && pm_any_str(m, v->s, v->n, 2));
    case PM_BUT_WILDCARD:
        return !(is_str && pm_any_str(m, v->s, v->n, 3));
    case PM_BUT_IC:
        if (!is_str)
            return 1;
        if (pat_val_lower(in, v))
            return 0;
        return !pm_any_str(m, v->low, v->lown, 0);
    }
    return 0;
}

/*
 * The search. Without arrays a pattern is a plain boolean formula; with
 * them EventBridge adds one rule: two fields cannot match through values
 * that sit in different elements of the same array ({"sku": "A", "qty": 1}
 * and {"sku": "B", "qty": 5} do not together satisfy sku = A and qty > 3).
 * So each field picks one of its accepted values, and the picks must be
 * pairwise compatible (pat_ctx_compatible). The search tries fields in
 * order, backtracking over a field's accepted values and over $or
 * alternatives; goals are (conjunction, next field, next $or) frames, the
 * innermost on top. A value outside any array constrains nothing, so once
 * a field is satisfied by one, its other values are never tried: an event
 * without arrays costs one pass, as a plain evaluation would.
 */
#define PM_MAX_GOALS (PATTERN_MAX_DEPTH + 2)
#define PM_MAX_PICKS (PATTERN_MAX_BYTES / 4)

typedef struct pm_goal {
    const pat_node *n;
    size_t fi, oi;
} pm_goal;

typedef struct pm_pick {
    int doc;
    int32_t ctx;
} pm_pick;

typedef struct pm_state {
    pattern_input *in;
    pm_goal goal[PM_MAX_GOALS];
    int ngoal;
    pm_pick pick[PM_MAX_PICKS];
    int npick;
} pm_state;

static int pm_solve(pm_state *st);

/* Does some matcher of f (other than exists: false) accept v? */
static int pm_accepts(const pat_field *f, pattern_input *in, pat_val *v)
{
    for (size_t k = 0; k < f->nm; k++) {
        const pat_matcher *m = &f->m[k];
        if (m->op == PM_EXISTS)
            return 1;
        if (m->op != PM_NOT_EXISTS && pm_leaf(m, in, v))
            return 1;
    }
    return 0;
}

static int pm_compatible(const pm_state *st, int doc, int32_t ctx)
{
    for (int k = 0; k < st->npick; k++)
        if (st->pick[k].doc == doc && !pat_ctx_compatible(st->in, doc, st->pick[k].ctx, ctx))
            return 0;
    return 1;
}

static int pm_field(pm_state *st, const pat_field *f)
{
    pat_val *base;
    int32_t first;
    int doc;
    pat_input_values(st->in, f->root, f->keys, f->klens, f->khash, f->nkeys, &base, &first, &doc);
    if (first < 0) {
        /* Absent: only exists: false matches, and it picks no value. */
        for (size_t k = 0; k < f->nm; k++)
            if (f->m[k].op == PM_NOT_EXISTS)
                return pm_solve(st);
        return 0;
    }
    for (int32_t i = first; i >= 0; i = base[i].next) {
        pat_val *v = &base[i];
        if (!pm_accepts(f, st->in, v))
            continue;
        if (!doc || !v->ctx)
            return pm_solve(st); /* constrains nothing: no other value can do better */
        if (!pm_compatible(st, doc, v->ctx) || st->npick == PM_MAX_PICKS)
            continue;
        st->pick[st->npick++] = (pm_pick){doc, v->ctx};
        int r = pm_solve(st);
        st->npick--;
        if (r)
            return 1;
    }
    return 0;
}

static int pm_solve(pm_state *st)
{
    if (st->ngoal == 0)
        return 1;
    pm_goal *g = &st->goal[st->ngoal - 1];
    int r = 0;
    if (g->fi < g->n->nf) {
        const pat_field *f = &g->n->f[g->fi++];
        r = pm_field(st, f);
        g->fi--;
        return r;
    }
    if (g->oi < g->n->no) {
        const pat_or *o = &g->n->o[g->oi++];
        for (size_t a = 0; a < o->nalt && !r && st->ngoal < PM_MAX_GOALS; a++) {
            st->goal[st->ngoal++] = (pm_goal){&o->alt[a], 0, 0};
            r = pm_solve(st);
            st->ngoal--;
        }
        g->oi--;
        return r;
    }
    /* This conjunction is done: carry on with the one around it. */
    pm_goal done = *g;
    st->ngoal--;
    r = pm_solve(st);
    st->goal[st->ngoal++] = done;
    return r;
}

int pattern_match(const pattern *p, pattern_input *in)
{
    if (!p || !in)
        return 0;
    pm_state st; /* not zeroed: only the counts need a value */
    st.in = in;
    st.npick = 0;
    st.goal[0] = (pm_goal){&p->root, 0, 0};
    st.ngoal = 1;
    return pm_solve(&st);
}
