/*
 * pattern_input.c - one event seen by any number of patterns: its fields
 * as leaf values, made on first need and kept for every later pattern.
 *
 * The event's own fields (id, stream, category, type, revision, position,
 * created, tags) become values cheaply on first use: the id and created
 * are formatted as reads render them (stele_uuid_format, stele_time_format,
 * the same text as the HTTP API's), revision and position are numbers.
 *
 * data and metadata (when flagged as JSON and not empty; otherwise absent)
 * are tokenized by jsmn on first use and flattened in one walk into:
 *
 *   path nodes   one per distinct path of object keys below the root
 *                (interned: "a.b" inside two array elements is one node),
 *                found by (parent node, key) in an open-addressing table;
 *   values       one per leaf (string, number, true, false, null), chained
 *                per path node in document order;
 *   contexts     one per element of an array that is an object or an array:
 *                (enclosing context, array, depth). Each value records the
 *                innermost one it sits in, so the matcher can tell whether
 *                two values lie in different elements of the same array
 *                (pat_ctx_compatible), which EventBridge's array-consistent
 *                matching forbids for the fields of one match.
 *
 * Arrays add no path step: each element's values join the path of the
 * array itself, so a pattern on "tags" or "data.items.sku" sees every
 * element (EventBridge's "arrays match when they intersect"). Objects are
 * not leaves: a path ending at an object has no value, which is what
 * EventBridge's exists matching says ("exists" works on leaf nodes only).
 * An empty array has no value either. Data that jsmn cannot tokenize is
 * treated as absent, as is anything nested deeper than
 * PATTERN_EVENT_MAX_DEPTH (no pattern path can reach it anyway).
 *
 * A pattern looks a path up key by key: root node, then (node, key) for
 * each key; a key that was never seen ends the lookup with no values.
 * Strings with escapes are decoded into the input's arena, numbers are
 * parsed and strings lower-cased (for equals-ignore-case) on first use
 * only. pattern_input_reset keeps every buffer, so a loop over many events
 * allocates nothing once warm.
 */
#include <arpa/inet.h>
#include <float.h>
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

typedef struct pi_chunk {
    struct pi_chunk *next;
    size_t cap, used;
    max_align_t data[];
} pi_chunk;

typedef struct pi_arena {
    pi_chunk *head;
} pi_arena;

static void *pi_alloc(pi_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    pi_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

/* Keep the newest chunk, free the rest. */
static void pi_arena_reset(pi_arena *a)
{
    if (!a->head)
        return;
    pi_chunk *keep = a->head;
    for (pi_chunk *c = keep->next, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    keep->next = NULL;
    keep->used = 0;
}

static void pi_arena_free(pi_arena *a)
{
    for (pi_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
}

/* --------------------------------------------------------------- documents */

typedef struct pi_pnode {
    uint64_t h;
    int32_t parent;
    uint32_t kn;
    const char *k;
    int32_t first, last; /* values at this path */
} pi_pnode;

/* An element of an array: its enclosing context, the array (its token)
 * and how many contexts lie above it. Context 0 is "in no array". */
typedef struct pi_ctx {
    int32_t parent;
    int32_t array;
    int32_t depth;
} pi_ctx;

typedef struct pi_doc {
    int state; /* 0 not parsed, 1 parsed, 2 absent */
    pi_ctx *ctx;
    int32_t nctx, ctxcap;
    jsmntok_t *t;
    unsigned tcap;
    int nt;
    pat_val *v;
    int32_t nv, vcap;
    pi_pnode *node;
    int32_t nnode, nodecap;
    int32_t *slot; /* node index + 1, 0 = empty */
    uint32_t nslot;
} pi_doc;

enum { PI_ID, PI_STREAM, PI_CATEGORY, PI_TYPE, PI_REVISION, PI_POSITION, PI_CREATED, PI_NSCALAR };

struct pattern_input {
    const stele_event *ev;
    pi_arena arena;
    uint32_t have; /* bit per PI_* scalar made, plus bit 31 for tags */
    pat_val scalar[PI_NSCALAR];
    char id[37];
    char created[32];
    pat_val *tags;
    size_t tagcap;
    pi_doc doc[2]; /* data, metadata */
};

uint64_t pat_key_hash(const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t pi_mix(uint64_t keyh, int32_t parent)
{
    uint64_t h = keyh ^ ((uint64_t)(uint32_t)parent * 0x9e3779b97f4a7c15ull);
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static int32_t pi_find(const pi_doc *d, int32_t parent, const char *k, size_t kn, uint64_t keyh)
{
    if (!d->nslot)
        return -1;
    uint64_t h = pi_mix(keyh, parent);
    for (uint32_t i = (uint32_t)h & (d->nslot - 1);; i = (i + 1) & (d->nslot - 1)) {
        int32_t s = d->slot[i];
        if (!s)
            return -1;
        const pi_pnode *nd = &d->node[s - 1];
        if (nd->h == h && nd->parent == parent && nd->kn == kn && pat_same(nd->k, k, kn))
            return s - 1;
    }
}

static int pi_rehash(pi_doc *d, uint32_t nslot)
{
    int32_t *slot = calloc(nslot, sizeof *slot);
    if (!slot)
        return STELE_ENOMEM;
    for (int32_t n = 1; n < d->nnode; n++) {
        uint32_t i = (uint32_t)d->node[n].h & (nslot - 1);
        while (slot[i])
            i = (i + 1) & (nslot - 1);
        slot[i] = n + 1;
    }
    free(d->slot);
    d->slot = slot;
    d->nslot = nslot;
    return 0;
}

static void pi_doc_clear(pi_doc *d)
{
    d->state = 0;
    d->nv = 0;
    d->nnode = 0;
    d->nctx = 0;
    if (d->nslot)
        memset(d->slot, 0, d->nslot * sizeof *d->slot);
}

static void pi_doc_free(pi_doc *d)
{
    free(d->t);
    free(d->v);
    free(d->node);
    free(d->slot);
    free(d->ctx);
    memset(d, 0, sizeof *d);
}

/* The node for (parent, key), made if new; -1 on ENOMEM. */
static int32_t pi_intern(pi_doc *d, int32_t parent, const char *k, size_t kn)
{
    uint64_t keyh = pat_key_hash(k, kn);
    int32_t f = pi_find(d, parent, k, kn, keyh);
    if (f >= 0)
        return f;
    if (d->nnode == d->nodecap) {
        int32_t cap = d->nodecap ? d->nodecap * 2 : 64;
        pi_pnode *nn = realloc(d->node, (size_t)cap * sizeof *nn);
        if (!nn)
            return -1;
        d->node = nn;
        d->nodecap = cap;
    }
    if ((uint32_t)(d->nnode + 1) * 2 > d->nslot &&
        pi_rehash(d, d->nslot ? d->nslot * 2 : 128))
        return -1;
    int32_t id = d->nnode++;
    pi_pnode *nd = &d->node[id];
    nd->h = pi_mix(keyh, parent);
    nd->parent = parent;
    nd->k = k;
    nd->kn = (uint32_t)kn;
    nd->first = nd->last = -1;
    uint32_t i = (uint32_t)nd->h & (d->nslot - 1);
    while (d->slot[i])
        i = (i + 1) & (d->nslot - 1);
    d->slot[i] = id + 1;
    return id;
}

/* Decode a JSON string body that has escapes into the arena. Malformed
 * escapes are kept as they are (the bytes were accepted as JSON on append;
 * this is only a fallback for library users who flagged non-JSON). */
static const char *pi_unescape(pi_arena *a, const char *s, size_t n, size_t *outn)
{
    char *o = pi_alloc(a, n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\' || i + 1 >= n) {
            o[k++] = s[i++];
            continue;
        }
        char e = s[i + 1];
        const char *simple = e ? strchr("\"\\/bfnrt", e) : NULL;
        if (simple) {
            o[k++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            i += 2;
            continue;
        }
        long hi = e == 'u' && i + 6 <= n ? jtext_hex4(s + i + 2) : -1;
        if (hi < 0) {
            o[k++] = s[i++];
            continue;
        }
        uint32_t cp;
        int used = jtext_u_escape(s + i, n - i, &cp);
        if (used < 0) /* a lone surrogate */
            cp = 0xfffd;
        i += used < 0 ? 6 : (size_t)used;
        k += jtext_utf8_put(cp, (uint8_t *)o + k);
    }
    o[k] = 0;
    *outn = k;
    return o;
}

/* A token's text as a string (decoded if it has escapes). */
static const char *pi_tok_str(pattern_input *in, const char *js, const jsmntok_t *t, size_t *n)
{
    const char *s = js + t->start;
    size_t len = (size_t)(t->end - t->start);
    if (!memchr(s, '\\', len)) {
        *n = len;
        return s;
    }
    return pi_unescape(&in->arena, s, len, n);
}

static int pi_add_value(pi_doc *d, int32_t node, const pat_val *v)
{
    if (d->nv == d->vcap) {
        int32_t cap = d->vcap ? d->vcap * 2 : 64;
        pat_val *nv = realloc(d->v, (size_t)cap * sizeof *nv);
        if (!nv)
            return STELE_ENOMEM;
        d->v = nv;
        d->vcap = cap;
    }
    int32_t id = d->nv++;
    d->v[id] = *v;
    d->v[id].next = -1;
    pi_pnode *nd = &d->node[node];
    if (nd->last >= 0)
        d->v[nd->last].next = id;
    else
        nd->first = id;
    nd->last = id;
    return 0;
}

/* Skip token i and everything inside it. */
static int pi_skip(const pi_doc *d, int i)
{
    int end = d->t[i].end, j = i + 1;
    while (j < d->nt && d->t[j].start < end)
        j++;
    return j;
}

/* A new context: element of array token `array` inside context `parent`. */
static int32_t pi_new_ctx(pi_doc *d, int32_t parent, int32_t array)
{
    if (d->nctx == d->ctxcap) {
        int32_t cap = d->ctxcap ? d->ctxcap * 2 : 64;
        pi_ctx *nc = realloc(d->ctx, (size_t)cap * sizeof *nc);
        if (!nc)
            return -1;
        d->ctx = nc;
        d->ctxcap = cap;
    }
    int32_t id = d->nctx++;
    d->ctx[id] = (pi_ctx){parent, array, id ? d->ctx[parent].depth + 1 : 0};
    return id;
}

int pat_ctx_compatible(const pattern_input *in, int doc, int32_t a, int32_t b)
{
    if (a == b || !a || !b || doc < 1)
        return 1;
    const pi_ctx *c = in->doc[doc - 1].ctx;
    /* Climb to the common ancestor, remembering the last step of each. */
    int32_t pa = -1, pb = -1;
    while (c[a].depth > c[b].depth)
        pa = a, a = c[a].parent;
    while (c[b].depth > c[a].depth)
        pb = b, b = c[b].parent;
    while (a != b) {
        pa = a, a = c[a].parent;
        pb = b, b = c[b].parent;
    }
    /* One lies inside the other's element, or they went into different
     * arrays of the same element: fine. Two elements of one array: not. */
    return pa < 0 || pb < 0 || c[pa].array != c[pb].array;
}

/* Flatten token i (at path node `node`, array context `ctx`); returns the
 * next token or -1. */
static int pi_walk(pattern_input *in, pi_doc *d, const char *js, int i, int32_t node, int32_t ctx,
                   int depth)
{
    const jsmntok_t *t = &d->t[i];
    if (t->type == JSMN_OBJECT || t->type == JSMN_ARRAY) {
        if (depth >= PATTERN_EVENT_MAX_DEPTH)
            return pi_skip(d, i);
        int j = i + 1;
        for (int k = 0; k < t->size; k++) {
            if (j >= d->nt)
                return -1;
            int32_t child = node, cctx = ctx;
            /* Only elements that are objects or arrays make a context: the
             * rule is about fields inside different elements, and a
             * scalar element holds no fields. */
            if (t->type == JSMN_ARRAY &&
                (d->t[j].type == JSMN_OBJECT || d->t[j].type == JSMN_ARRAY) &&
                (cctx = pi_new_ctx(d, ctx, i)) < 0)
                return -1;
            if (t->type == JSMN_OBJECT) {
                size_t kn;
                const char *ks = pi_tok_str(in, js, &d->t[j], &kn);
                if (!ks || (child = pi_intern(d, node, ks, kn)) < 0)
                    return -1;
                j++;
                if (j >= d->nt)
                    return -1;
            }
            j = pi_walk(in, d, js, j, child, cctx, depth + 1);
            if (j < 0)
                return -1;
        }
        return j;
    }
    pat_val v;
    memset(&v, 0, sizeof v);
    v.ctx = ctx;
    if (t->type == JSMN_STRING) {
        v.kind = PV_STR;
        v.s = pi_tok_str(in, js, t, &v.n);
        if (!v.s)
            return -1;
    } else {
        const char *s = js + t->start;
        size_t n = (size_t)(t->end - t->start);
        if (n == 4 && !memcmp(s, "true", 4)) {
            v.kind = PV_TRUE;
        } else if (n == 5 && !memcmp(s, "false", 5)) {
            v.kind = PV_FALSE;
        } else if (n == 4 && !memcmp(s, "null", 4)) {
            v.kind = PV_NULL;
        } else {
            v.kind = PV_NUM;
            v.s = s;
            v.n = n;
        }
    }
    return pi_add_value(d, node, &v) ? -1 : i + 1;
}

/* Parse and flatten data (which = 0) or metadata (1) on first use. */
static void pi_doc_load(pattern_input *in, int which)
{
    pi_doc *d = &in->doc[which];
    const stele_event *ev = in->ev;
    const char *js = which ? ev->metadata : ev->data;
    size_t len = which ? ev->metadata_len : ev->data_len;
    uint32_t flag = which ? STELE_META_JSON : STELE_EVENT_JSON;
    d->state = 2;
    if (!len || !(ev->flags & flag))
        return;
    if (!d->tcap) {
        /* jsmn counts instead of parsing when given no token array. */
        d->t = malloc(256 * sizeof *d->t);
        if (!d->t)
            return;
        d->tcap = 256;
    }
    jsmn_parser p;
    for (;;) {
        jsmn_init(&p);
        int n = jsmn_parse(&p, js, len, d->t, d->tcap);
        if (n == JSMN_ERROR_NOMEM) {
            unsigned cap = d->tcap ? d->tcap * 4 : 256;
            jsmntok_t *nt = realloc(d->t, cap * sizeof *nt);
            if (!nt)
                return;
            d->t = nt;
            d->tcap = cap;
            continue;
        }
        if (n == JSMN_ERROR_PART) {
            /* Strict jsmn wants a delimiter after a primitive, so data that
             * is one bare number, true, false or null ends "too early". */
            size_t a = 0, b = len;
            while (a < b && strchr(" \t\r\n", js[a]))
                a++;
            while (b > a && strchr(" \t\r\n", js[b - 1]))
                b--;
            if (a < b && !strchr("{[\"", js[a]) && !memchr(js + a, ' ', b - a)) {
                d->t[0] = (jsmntok_t){.type = JSMN_PRIMITIVE, .start = (int)a, .end = (int)b,
                                      .size = 0, .parent = -1};
                n = 1;
            }
        }
        if (n <= 0)
            return;
        d->nt = n;
        break;
    }
    /* Node 0 is the root (data or metadata itself). */
    if (d->nodecap == 0) {
        d->node = malloc(64 * sizeof *d->node);
        if (!d->node)
            return;
        d->nodecap = 64;
    }
    d->nnode = 1;
    d->node[0] = (pi_pnode){0, -1, 0, "", -1, -1};
    d->nctx = 0;
    if (pi_new_ctx(d, 0, -1) < 0)
        return;
    /* One JSON value, nothing after it (jsmn accepts several roots). */
    int next = pi_walk(in, d, js, 0, 0, 0, 0);
    if (next != d->nt) {
        d->nv = 0;
        d->nnode = 1;
        d->node[0].first = d->node[0].last = -1;
        return;
    }
    d->state = 1;
}

/* ------------------------------------------------------------------ values */

static void pi_str(pat_val *v, const char *s, size_t n)
{
    memset(v, 0, sizeof *v);
    v->kind = PV_STR;
    v->s = s;
    v->n = n;
    v->next = -1;
}

static void pi_num(pat_val *v, uint64_t x)
{
    memset(v, 0, sizeof *v);
    v->kind = PV_NUM;
    v->num_state = 1;
    v->num.v = (long double)x;
    v->num.is_int = 1;
    v->num.i = (__int128)x;
    v->next = -1;
}

void pat_input_values(pattern_input *in, int root, char *const *keys, const size_t *klens,
                      const uint64_t *khash, size_t nkeys, pat_val **base, int32_t *first,
                      int *doc)
{
    const stele_event *ev = in->ev;
    *base = NULL;
    *first = -1;
    *doc = 0;
    if (root == PAT_ROOT_DATA || root == PAT_ROOT_METADATA) {
        int which = root == PAT_ROOT_METADATA;
        *doc = which + 1;
        pi_doc *d = &in->doc[which];
        if (d->state == 0)
            pi_doc_load(in, which);
        if (d->state != 1)
            return;
        int32_t node = 0;
        for (size_t k = 0; k < nkeys && node >= 0; k++)
            node = pi_find(d, node, keys[k], klens[k], khash[k]);
        if (node >= 0) {
            *base = d->v;
            *first = d->node[node].first;
        }
        return;
    }
    if (nkeys)
        return; /* the compiler refuses paths below the event's own fields */
    if (root == PAT_ROOT_TAGS) {
        if (!ev->ntags)
            return;
        if (!(in->have & (1u << 31))) {
            if (in->tagcap < ev->ntags) {
                pat_val *t = realloc(in->tags, ev->ntags * sizeof *t);
                if (!t)
                    return;
                in->tags = t;
                in->tagcap = ev->ntags;
            }
            for (size_t i = 0; i < ev->ntags; i++) {
                pi_str(&in->tags[i], ev->tags[i], strlen(ev->tags[i]));
                in->tags[i].next = i + 1 < ev->ntags ? (int32_t)i + 1 : -1;
            }
            in->have |= 1u << 31;
        }
        *base = in->tags;
        *first = 0;
        return;
    }
    static const int map[] = {[PAT_ROOT_ID] = PI_ID,
                              [PAT_ROOT_STREAM] = PI_STREAM,
                              [PAT_ROOT_CATEGORY] = PI_CATEGORY,
                              [PAT_ROOT_TYPE] = PI_TYPE,
                              [PAT_ROOT_REVISION] = PI_REVISION,
                              [PAT_ROOT_POSITION] = PI_POSITION,
                              [PAT_ROOT_CREATED] = PI_CREATED};
    int s = map[root];
    pat_val *v = &in->scalar[s];
    if (!(in->have & (1u << s))) {
        switch (s) {
        case PI_ID:
            stele_uuid_format(ev->id, in->id);
            pi_str(v, in->id, 36);
            break;
        case PI_STREAM:
            pi_str(v, ev->stream, ev->stream_len);
            break;
        case PI_CATEGORY:
            pi_str(v, ev->stream, stream_category_len(ev->stream, ev->stream_len));
            break;
        case PI_TYPE:
            pi_str(v, ev->type, ev->type_len);
            break;
        case PI_REVISION:
            pi_num(v, ev->revision);
            break;
        case PI_POSITION:
            pi_num(v, ev->position);
            break;
        default:
            stele_time_format(ev->created_us, in->created);
            pi_str(v, in->created, strlen(in->created));
            break;
        }
        in->have |= 1u << s;
    }
    *base = v;
    *first = 0;
}

int pat_val_num(pattern_input *in, pat_val *v)
{
    (void)in;
    if (v->kind != PV_NUM)
        return 0;
    if (v->num_state == 0)
        v->num_state = pat_parse_num(v->s, v->n, &v->num) ? 2 : 1;
    return v->num_state == 1;
}

int pat_val_lower(pattern_input *in, pat_val *v)
{
    if (v->low_state)
        return 0;
    char *o = pi_alloc(&in->arena, v->n * 3 + 1);
    if (!o)
        return STELE_ENOMEM;
    v->lown = pat_lower(v->s, v->n, o);
    v->low = o;
    v->low_state = 1;
    return 0;
}

/* --------------------------------------------------------------- lifecycle */

int pattern_input_new(const stele_event *ev, pattern_input **out)
{
    if (!ev || !out)
        return STELE_EINVAL;
    pattern_input *in = calloc(1, sizeof *in);
    if (!in)
        return STELE_ENOMEM;
    in->ev = ev;
    *out = in;
    return 0;
}

void pattern_input_reset(pattern_input *in, const stele_event *ev)
{
    in->ev = ev;
    in->have = 0;
    pi_arena_reset(&in->arena);
    pi_doc_clear(&in->doc[0]);
    pi_doc_clear(&in->doc[1]);
}

void pattern_input_free(pattern_input *in)
{
    if (!in)
        return;
    pi_arena_free(&in->arena);
    pi_doc_free(&in->doc[0]);
    pi_doc_free(&in->doc[1]);
    free(in->tags);
    free(in);
}

/* ------------------------------------------------------------ shared helpers */

int pat_num_cmp(const pat_num *a, const pat_num *b)
{
    if (a->is_int && b->is_int)
        return a->i < b->i ? -1 : a->i > b->i;
    return a->v < b->v ? -1 : a->v > b->v;
}

int pat_parse_num(const char *s, size_t n, pat_num *out)
{
    char small[64], *text = small;
    if (n == 0)
        return -1;
    if (n >= sizeof small) {
        text = malloc(n + 1);
        if (!text)
            return -1;
    }
    memcpy(text, s, n);
    text[n] = 0;
    char *end;
    long double x = strtold(text, &end);
    /* The range of a double, as EventBridge's (IEEE 754 binary64). */
    double d = strtod(text, NULL);
    int ok = end == text + n && n > 0 && (text[0] == '-' || (text[0] >= '0' && text[0] <= '9')) &&
             d == d && d <= DBL_MAX && d >= -DBL_MAX;
    if (text != small)
        free(text);
    if (!ok)
        return -1;
    out->v = x == 0 ? 0.0L : x; /* -0 equals 0 */
    /* Plain integers also exactly. */
    size_t k = s[0] == '-';
    out->is_int = n - k >= 1 && n - k <= 38;
    __int128 i = 0;
    for (size_t q = k; q < n && out->is_int; q++) {
        if (s[q] < '0' || s[q] > '9')
            out->is_int = 0;
        else
            i = i * 10 + (s[q] - '0');
    }
    out->i = k ? -i : i;
    return 0;
}

int pat_parse_ip(const char *s, size_t n, uint8_t ip[16])
{
    char text[64];
    if (n == 0 || n >= sizeof text)
        return 0;
    memcpy(text, s, n);
    text[n] = 0;
    if (memchr(text, ':', n))
        return inet_pton(AF_INET6, text, ip) == 1 ? 16 : 0;
    return inet_pton(AF_INET, text, ip) == 1 ? 4 : 0;
}
