/*
 * json.c - append bodies in, events and errors out (see json.h).
 *
 * Parsing an append body takes one pass over its bytes:
 *
 *  Validation and tokenizing together (util/json_text.c, the validator
 *  shared with every JSON reader of Stele, asked to record tokens): a
 *  recursive descent over the whole body checks it against RFC 8259
 *  (structure, string escapes including surrogate pairs, UTF-8 per Unicode
 *  table 3-7, the number grammar, the three literals, nesting depth,
 *  nothing but whitespace after the value) and records each value as a
 *  token, a type and a byte span; the first error is reported with its
 *  byte offset. (Until issue 21 the validator ran first and jsmn then
 *  tokenized the same bytes again: two passes.) The envelope walk reads
 *  the spans: `data` / `metadata` values become
 *  spans of the body (byte-exact, never re-serialised), strings the store
 *  needs NUL-terminated (type, tags) are unescaped into an arena, base64
 *  is decoded into the arena.
 *
 * Token layout (jsmn's, see json_text.h), relied on below: tokens are in
 * document order; a string token's span excludes its quotes; an object's `size` is its
 * number of keys and each key token is followed by its value's tokens; a
 * token's subtree is every following token that starts before it ends.
 *
 * Memory: the tokens (16 bytes per JSON value, at most JSON_MAX_VALUES) live
 * only during the parse; what the events point to (arena) lives until
 * json_append_free.
 */
#include "json.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "util/json_text.h"

/* ------------------------------------------------------------------ arena */

/* A chain of blocks; allocations are aligned for any type and freed all at
 * once. A large allocation gets a block of its own, linked behind the
 * current one so the current block's free space is not wasted. */
struct json_arena {
    json_arena *next;
    size_t used, cap;
};

#define ARENA_ALIGN _Alignof(max_align_t)
#define ARENA_HDR ((sizeof(json_arena) + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1))
#define ARENA_BLOCK 8192
/* Tokens of a small body live on json_parse_append's stack (16 bytes each). */
#define JSON_STACK_TOKENS 128

static void *arena_alloc(json_append *a, size_t n)
{
    if (n > SIZE_MAX - ARENA_HDR - ARENA_ALIGN)
        return NULL;
    n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    json_arena *h = a->arena;
    if (h && h->cap - h->used >= n) {
        void *p = (char *)h + ARENA_HDR + h->used;
        h->used += n;
        return p;
    }
    /* The first block is sized for the body (json_parse_append's hint):
     * a one-event append needs a few hundred bytes, which malloc serves
     * from its per-thread cache, where 8 KiB would take its slow path. */
    size_t block = !h && a->arena_first ? a->arena_first : ARENA_BLOCK;
    size_t cap = n > block / 4 ? n : block;
    json_arena *blk = malloc(ARENA_HDR + cap);
    if (!blk)
        return NULL;
    blk->used = n;
    blk->cap = cap;
    if (h && cap == n) {
        blk->next = h->next;
        h->next = blk;
    } else {
        blk->next = h;
        a->arena = blk;
    }
    return (char *)blk + ARENA_HDR;
}

void json_append_free(json_append *a)
{
    if (!a)
        return;
    json_arena *b = a->arena;
    while (b) {
        json_arena *next = b->next;
        free(b);
        b = next;
    }
    memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------- validation */

/* The validator lives in util/json_text.c, shared by every JSON reader. */
int json_validate(const char *s, size_t len, size_t *err_at, const char **why)
{
    return jtext_validate(s, len, err_at, why) ? STELE_EINVAL : 0;
}

/* ----------------------------------------------------------------- base64 */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* A base64 character's 6-bit value, 64 for '=', -1 for anything else. */
static int b64_val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return c == '=' ? 64 : -1;
}

int json_b64_decode(const char *in, size_t n, uint8_t *out, size_t *outn, size_t *bad_at,
                    const char **why)
{
    const uint8_t *s = (const uint8_t *)in;
    size_t o = 0;
    if (n % 4) {
        *bad_at = n;
        *why = "length is not a multiple of 4";
        return STELE_EINVAL;
    }
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = b64_val(s[i + k]);
            if (v[k] < 0) {
                *bad_at = i + k;
                *why = "invalid character";
                return STELE_EINVAL;
            }
        }
        /* '=' only in the last group: "xx==" or "xxx=". */
        int pad = 0;
        if (v[0] == 64 || v[1] == 64)
            pad = -1;
        else if (v[2] == 64)
            pad = v[3] == 64 ? 2 : -1;
        else if (v[3] == 64)
            pad = 1;
        if (pad < 0 || (pad > 0 && i + 4 != n)) {
            size_t k = 0;
            while (v[k] != 64)
                k++;
            *bad_at = i + k;
            *why = "misplaced '='";
            return STELE_EINVAL;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12;
        if (pad < 2)
            w |= (uint32_t)v[2] << 6;
        if (pad < 1)
            w |= (uint32_t)v[3];
        if ((pad == 2 && (v[1] & 0xf)) || (pad == 1 && (v[2] & 0x3))) {
            *bad_at = i + 3 - (size_t)pad;
            *why = "non-zero bits before the padding";
            return STELE_EINVAL;
        }
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(w >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)w;
    }
    *outn = o;
    return 0;
}

/* ---------------------------------------------------------- envelope walk */

typedef struct pctx {
    const char *body;
    const jtext_tok *t;
    int nt;
    json_append *out;
    char *err;
    size_t errlen;
} pctx;

static int fail(pctx *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(pctx *p, int code, const char *fmt, ...)
{
    if (p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err, p->errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* The index of the token after token i and all its descendants. */
static int tok_skip(const pctx *p, int i)
{
    int end = p->t[i].end, j = i + 1;
    while (j < p->nt && p->t[j].start < end)
        j++;
    return j;
}

/* What a token is, for messages: "must be a string, not a number". */
static const char *tok_kind(const pctx *p, int i)
{
    switch (p->t[i].type) {
    case JTEXT_T_OBJECT:
        return "an object";
    case JTEXT_T_ARRAY:
        return "an array";
    case JTEXT_T_STRING:
        return "a string";
    default:
        switch (p->body[p->t[i].start]) {
        case 't': case 'f':
            return "a boolean";
        case 'n':
            return "null";
        default:
            return "a number";
        }
    }
}

/* Unescape a (validated) JSON string's content raw[0..n) into out, which
 * has room for n bytes: escapes only ever shrink. Returns the length. */
static size_t str_unescape(const char *raw, size_t n, char *out)
{
    long len = jtext_unescape(raw, n, out, n);
    return len < 0 ? 0 : (size_t)len; /* never: the body was validated */
}

static const char *tok_raw(const pctx *p, int i, size_t *n)
{
    *n = (size_t)(p->t[i].end - p->t[i].start);
    return p->body + p->t[i].start;
}

/* Unescape string token i into the arena, NUL-terminated. NULL on ENOMEM. */
static char *tok_strdup(pctx *p, int i, size_t *outn)
{
    size_t n;
    const char *raw = tok_raw(p, i, &n);
    char *s = arena_alloc(p->out, n + 1);
    if (!s)
        return NULL;
    size_t len = str_unescape(raw, n, s);
    s[len] = '\0';
    *outn = len;
    return s;
}

/* Unescape a short string token into out (cap bytes, NUL-terminated).
 * Returns the length, or -1 if the raw text is cap bytes or longer
 * (unescaping never lengthens a string, so anything shorter fits). */
static long tok_short(const pctx *p, int i, char *out, size_t cap)
{
    size_t n;
    const char *raw = tok_raw(p, i, &n);
    if (n >= cap)
        return -1;
    size_t len = str_unescape(raw, n, out);
    out[len] = '\0';
    return (long)len;
}

/* A token's text for a message: at most 64 bytes of its raw JSON, cut at a
 * UTF-8 character boundary, with "..." when cut. */
static const char *tok_quote(const pctx *p, int i, char out[72])
{
    size_t n;
    const char *raw = tok_raw(p, i, &n);
    if (n <= 64) {
        memcpy(out, raw, n);
        out[n] = '\0';
        return out;
    }
    n = 64;
    while (n > 0 && ((uint8_t)raw[n] & 0xc0) == 0x80)
        n--;
    memcpy(out, raw, n);
    memcpy(out + n, "...", 4);
    return out;
}

/* Which of names[0..count) key token i spells (after unescaping), or -1. */
static int field_index(const pctx *p, int i, const char *const *names, int count)
{
    char key[256];
    long n = tok_short(p, i, key, sizeof key);
    if (n < 0)
        return -1;
    for (int f = 0; f < count; f++)
        if (strlen(names[f]) == (size_t)n && memcmp(names[f], key, (size_t)n) == 0)
            return f;
    return -1;
}

enum { F_ID, F_TYPE, F_DATA, F_DATA64, F_META, F_META64, F_TAGS, F_CTYPE, F_COUNT };
static const char *const event_fields[F_COUNT] = {
    "id", "type", "data", "dataBase64", "metadata", "metadataBase64", "tags", "contentType",
};

static int oom(pctx *p) { return fail(p, STELE_ENOMEM, "out of memory parsing the body"); }

/* A string token that must be base64, decoded into the arena: 0 with
 * *out and *len, or an error naming `what` (the member, as the message
 * quotes it). */
static int tok_base64(pctx *p, int v, const char *what, uint8_t **out, size_t *len)
{
    if (p->t[v].type != JTEXT_T_STRING)
        return fail(p, STELE_EINVAL, "%s must be a string, not %s", what, tok_kind(p, v));
    size_t n;
    const char *text = tok_raw(p, v, &n);
    if (memchr(text, '\\', n)) { /* e.g. "\/" from encoders that escape '/' */
        char *u = tok_strdup(p, v, &n);
        if (!u)
            return oom(p);
        text = u;
    }
    *out = arena_alloc(p->out, json_b64_decoded_max(n) + 1);
    if (!*out)
        return oom(p);
    size_t at;
    const char *why;
    if (json_b64_decode(text, n, *out, len, &at, &why))
        return fail(p, STELE_EINVAL, "%s is not valid base64: %s at character %zu", what, why, at);
    return 0;
}

/* An event's "dataBase64" or "metadataBase64" (`name`). */
static int event_base64(pctx *p, size_t ei, int v, const char *name, const void **data,
                        size_t *len)
{
    char what[128];
    snprintf(what, sizeof what, "event %zu: \"%s\"", ei, name);
    uint8_t *out;
    int rc = tok_base64(p, v, what, &out, len);
    if (rc)
        return rc;
    *data = *len ? out : NULL;
    return 0;
}

static int event_tags(pctx *p, size_t ei, int v, stele_event_in *ev)
{
    const jtext_tok *a = &p->t[v];
    if (a->type != JTEXT_T_ARRAY)
        return fail(p, STELE_EINVAL, "event %zu: \"tags\" must be an array of strings, not %s",
                    ei, tok_kind(p, v));
    if (a->size > JSON_MAX_TAGS)
        return fail(p, STELE_EINVAL, "event %zu: %d tags, more than %d", ei, a->size,
                    JSON_MAX_TAGS);
    if (a->size == 0)
        return 0;
    const char **tags = arena_alloc(p->out, (size_t)a->size * sizeof *tags);
    if (!tags)
        return oom(p);
    int j = v + 1;
    for (int k = 0; k < a->size; k++) {
        if (p->t[j].type != JTEXT_T_STRING)
            return fail(p, STELE_EINVAL, "event %zu: tag %d must be a string, not %s", ei, k,
                        tok_kind(p, j));
        size_t n;
        char *s = tok_strdup(p, j, &n);
        if (!s)
            return oom(p);
        if (strlen(s) != n)
            return fail(p, STELE_EINVAL, "event %zu: tag %d contains U+0000", ei, k);
        tags[k] = s;
        j++; /* a string has no subtree */
    }
    ev->tags = tags;
    ev->ntags = (size_t)a->size;
    return 0;
}

/* Event object at token i (event index ei) into *ev. */
static int parse_event(pctx *p, int i, size_t ei, stele_event_in *ev)
{
    if (p->t[i].type != JTEXT_T_OBJECT)
        return fail(p, STELE_EINVAL, "event %zu: must be an object, not %s", ei, tok_kind(p, i));
    unsigned seen = 0;
    int j = i + 1;
    char q[72];
    for (int k = 0; k < p->t[i].size; k++) {
        int key = j, v = j + 1;
        int f = field_index(p, key, event_fields, F_COUNT);
        if (f < 0)
            return fail(p, STELE_EINVAL, "event %zu: unknown field \"%s\"", ei,
                        tok_quote(p, key, q));
        if (seen & (1u << f))
            return fail(p, STELE_EINVAL, "event %zu: duplicate field \"%s\"", ei, event_fields[f]);
        seen |= 1u << f;
        const jtext_tok *t = &p->t[v];
        int rc = 0;
        switch (f) {
        case F_ID: {
            if (t->type != JTEXT_T_STRING)
                return fail(p, STELE_EINVAL, "event %zu: \"id\" must be a string, not %s", ei,
                            tok_kind(p, v));
            char text[64];
            long n = tok_short(p, v, text, sizeof text);
            uint8_t *id = arena_alloc(p->out, 16);
            if (!id)
                return oom(p);
            if ((n != 36 && n != 26) || strlen(text) != (size_t)n ||
                stele_id_parse(text, id, &ev->flags) != 0)
                return fail(p, STELE_EINVAL, "event %zu: \"id\" is not a UUID or a ULID: \"%s\"",
                            ei, tok_quote(p, v, q));
            ev->id = id;
            break;
        }
        case F_TYPE: {
            if (t->type != JTEXT_T_STRING)
                return fail(p, STELE_EINVAL, "event %zu: \"type\" must be a string, not %s", ei,
                            tok_kind(p, v));
            size_t n;
            char *s = tok_strdup(p, v, &n);
            if (!s)
                return oom(p);
            if (strlen(s) != n)
                return fail(p, STELE_EINVAL, "event %zu: \"type\" contains U+0000", ei);
            ev->type = s;
            break;
        }
        case F_DATA:
        case F_META: {
            /* The value's exact bytes; a string token's span excludes its
             * quotes. */
            int quote = t->type == JTEXT_T_STRING;
            const char *span = p->body + t->start - quote;
            size_t n = (size_t)(t->end - t->start) + 2 * (size_t)quote;
            if (f == F_DATA) {
                ev->data = span;
                ev->data_len = n;
                ev->flags |= STELE_EVENT_JSON;
            } else {
                ev->metadata = span;
                ev->metadata_len = n;
                ev->flags |= STELE_META_JSON;
            }
            break;
        }
        case F_DATA64:
            rc = event_base64(p, ei, v, "dataBase64", &ev->data, &ev->data_len);
            break;
        case F_META64:
            rc = event_base64(p, ei, v, "metadataBase64", &ev->metadata, &ev->metadata_len);
            break;
        case F_TAGS:
            rc = event_tags(p, ei, v, ev);
            break;
        case F_CTYPE:
            if (t->type != JTEXT_T_STRING)
                return fail(p, STELE_EINVAL, "event %zu: \"contentType\" must be a string, not %s",
                            ei, tok_kind(p, v));
            break;
        }
        if (rc)
            return rc;
        if ((f == F_DATA || f == F_DATA64) && (seen & (1u << F_DATA)) && (seen & (1u << F_DATA64)))
            return fail(p, STELE_EINVAL, "event %zu: both \"data\" and \"dataBase64\"", ei);
        if ((f == F_META || f == F_META64) && (seen & (1u << F_META)) &&
            (seen & (1u << F_META64)))
            return fail(p, STELE_EINVAL, "event %zu: both \"metadata\" and \"metadataBase64\"", ei);
        j = tok_skip(p, v);
    }
    if (!(seen & (1u << F_TYPE)))
        return fail(p, STELE_EINVAL, "event %zu: missing \"type\"", ei);
    return 0;
}

#define EXPECTED_MSG                                                                       \
    "\"expectedRevision\" must be \"any\", \"no_stream\", \"stream_exists\" or a revision "  \
    "number >= 0"

static int parse_expected(pctx *p, int v)
{
    const jtext_tok *t = &p->t[v];
    char q[72];
    if (t->type == JTEXT_T_STRING) {
        static const char *const names[] = {"any", "no_stream", "stream_exists"};
        static const int64_t values[] = {STELE_ANY, STELE_NO_STREAM, STELE_STREAM_EXISTS};
        int f = field_index(p, v, names, 3);
        if (f >= 0)
            p->out->expected = values[f];
        else
            return fail(p, STELE_EINVAL, EXPECTED_MSG ", not \"%s\"", tok_quote(p, v, q));
        return 0;
    }
    if (t->type != JTEXT_T_PRIMITIVE)
        return fail(p, STELE_EINVAL, EXPECTED_MSG ", not %s", tok_kind(p, v));
    /* A number that is a plain non-negative integer (no sign, fraction or
     * exponent) within int64_t. */
    size_t n;
    const char *raw = tok_raw(p, v, &n);
    uint64_t r = 0;
    for (size_t k = 0; k < n; k++) {
        if (raw[k] < '0' || raw[k] > '9')
            return fail(p, STELE_EINVAL, EXPECTED_MSG ", not %s", tok_quote(p, v, q));
        unsigned d = (unsigned)(raw[k] - '0');
        if (r > ((uint64_t)INT64_MAX - d) / 10)
            return fail(p, STELE_EINVAL, "\"expectedRevision\" %s is too large",
                        tok_quote(p, v, q));
        r = r * 10 + d;
    }
    p->out->expected = (int64_t)r;
    return 0;
}

/* The body's root token is 0; find the events array and the expected
 * revision, then parse each event. */
/* "stateBase64" (a string of base64): decode into the arena. */
static int state_base64(pctx *p, int v)
{
    uint8_t *out;
    int rc = tok_base64(p, v, "\"stateBase64\"", &out, &p->out->state_len);
    if (rc)
        return rc;
    p->out->state = out;
    return 0;
}

/* "stateSchemaVersion": an integer 0..UINT32_MAX. */
static int state_schema(pctx *p, int v)
{
    char q[72];
    size_t n;
    const char *raw = tok_raw(p, v, &n);
    uint64_t r = 0;
    int ok = p->t[v].type == JTEXT_T_PRIMITIVE && n > 0;
    for (size_t k = 0; ok && k < n; k++) {
        ok = raw[k] >= '0' && raw[k] <= '9';
        r = r * 10 + (uint64_t)(raw[k] - '0');
        ok = ok && r <= UINT32_MAX;
    }
    if (!ok)
        return fail(p, STELE_EINVAL, "\"stateSchemaVersion\" must be an integer from 0 to "
                    "4294967295, not %s", tok_quote(p, v, q));
    p->out->state_schema = (uint32_t)r;
    return 0;
}

static int parse_root(pctx *p)
{
    int events = -1;
    char q[72];
    if (p->t[0].type == JTEXT_T_OBJECT) {
        static const char *const root_fields[] = {"expectedRevision", "events", "state",
                                                  "stateBase64", "stateSchemaVersion"};
        unsigned seen = 0;
        int j = 1;
        for (int k = 0; k < p->t[0].size; k++) {
            int key = j, v = j + 1;
            int f = field_index(p, key, root_fields, 5);
            if (f < 0)
                return fail(p, STELE_EINVAL, "unknown field \"%s\" (expected \"events\", "
                            "\"expectedRevision\", \"state\", \"stateBase64\" and "
                            "\"stateSchemaVersion\")", tok_quote(p, key, q));
            if (seen & (1u << f))
                return fail(p, STELE_EINVAL, "duplicate field \"%s\"", root_fields[f]);
            seen |= 1u << f;
            int rc = 0;
            if (f == 0) {
                rc = parse_expected(p, v);
                p->out->has_expected = 1;
            } else if (f == 1) {
                events = v;
            } else if (f == 2) {
                /* The value's exact bytes (a string keeps its quotes). */
                const jtext_tok *t = &p->t[v];
                int quote = t->type == JTEXT_T_STRING;
                p->out->state = p->body + t->start - quote;
                p->out->state_len = (size_t)(t->end - t->start) + 2 * (size_t)quote;
                p->out->state_flags = STELE_EVENT_JSON;
            } else if (f == 3) {
                rc = state_base64(p, v);
            } else {
                rc = state_schema(p, v);
            }
            if (rc)
                return rc;
            j = tok_skip(p, v);
        }
        if ((seen & (1u << 2)) && (seen & (1u << 3)))
            return fail(p, STELE_EINVAL, "both \"state\" and \"stateBase64\": give one");
        p->out->has_state = (seen & (3u << 2)) != 0;
        if ((seen & (1u << 4)) && !p->out->has_state)
            return fail(p, STELE_EINVAL, "\"stateSchemaVersion\" without \"state\" or "
                        "\"stateBase64\"");
        if (events < 0)
            return fail(p, STELE_EINVAL, "missing \"events\"");
        if (p->t[events].type != JTEXT_T_ARRAY)
            return fail(p, STELE_EINVAL, "\"events\" must be an array, not %s",
                        tok_kind(p, events));
    } else {
        events = 0; /* an array: json_parse_append checked */
    }

    int n = p->t[events].size;
    if (n == 0)
        return fail(p, STELE_EINVAL, "no events");
    if (n > JSON_MAX_EVENTS)
        return fail(p, STELE_ETOOBIG, "%d events, more than %d in one append", n,
                    JSON_MAX_EVENTS);
    stele_event_in *ev = arena_alloc(p->out, (size_t)n * sizeof *ev);
    if (!ev)
        return oom(p);
    memset(ev, 0, (size_t)n * sizeof *ev);
    int j = events + 1;
    for (int k = 0; k < n; k++) {
        int rc = parse_event(p, j, (size_t)k, &ev[k]);
        if (rc)
            return rc;
        j = tok_skip(p, j);
    }
    p->out->events = ev;
    p->out->n = (size_t)n;
    return 0;
}

int json_parse_append(const char *body, size_t len, json_append *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->expected = STELE_ANY;
    pctx p = {.body = body, .out = out, .err = err, .errlen = errlen};
    /* What a body of len bytes usually needs from the arena: its events
     * (about one per 100 bytes, so twice the body is generous) and their
     * unescaped types and ids; more gets further blocks. */
    out->arena_first = len < (ARENA_BLOCK - 256) / 2 ? 2 * len + 256 : ARENA_BLOCK;
    if (errlen)
        err[0] = '\0';
    if (len > (size_t)INT32_MAX - 1)
        return fail(&p, STELE_ETOOBIG, "body of %zu bytes is too large to parse", len);
    if (!body)
        len = 0;

    jtext_scan v;
    jtext_scan_init(&v, body, len, JSON_MAX_DEPTH);
    /* A first guess at the token count (about one value per 24 bytes of a
     * typical event); the scanner grows it. A small body (a few events)
     * tokenizes into an array on the stack: no allocation at all unless
     * it holds more values than that array. */
    jtext_tok stack_toks[JSON_STACK_TOKENS];
    v.tok_max = JSON_MAX_VALUES;
    v.tok_cap = len / 24 + 16;
    if (v.tok_cap > v.tok_max)
        v.tok_cap = v.tok_max;
    if (v.tok_cap <= JSON_STACK_TOKENS) {
        v.toks = stack_toks;
        v.tok_cap = JSON_STACK_TOKENS;
        v.toks_borrowed = 1;
    } else {
        v.toks = malloc(v.tok_cap * sizeof *v.toks);
        if (!v.toks)
            return oom(&p);
    }
    int scanned = jtext_scan_text(&v);
    jtext_tok *toks = v.toks_borrowed ? NULL : v.toks; /* what to free */
    if (!scanned && v.tok_oom) {
        free(toks);
        return oom(&p);
    }
    if (scanned) {
        free(toks);
        out->bad_json = 1;
        uint8_t c = v.err_at < len ? (uint8_t)body[v.err_at] : 0;
        if (v.err_at >= len && len == 0)
            return fail(&p, STELE_EINVAL, "invalid JSON: the body is empty");
        if (v.show_char && c >= 0x20 && c < 0x7f)
            return fail(&p, STELE_EINVAL, "invalid JSON at byte %zu: %s ('%c')", v.err_at, v.why,
                        c);
        if (v.show_char)
            return fail(&p, STELE_EINVAL, "invalid JSON at byte %zu: %s (byte 0x%02X)", v.err_at,
                        v.why, c);
        return fail(&p, STELE_EINVAL, "invalid JSON at byte %zu: %s", v.err_at, v.why);
    }
    if (v.nvalues > JSON_MAX_VALUES) {
        free(toks);
        return fail(&p, STELE_ETOOBIG, "the body has %zu JSON values, more than %u", v.nvalues,
                    JSON_MAX_VALUES);
    }

    /* The envelope is an array or an object (the envelope walk reads
     * nothing else). */
    size_t first = 0;
    while (body[first] == ' ' || body[first] == '\t' || body[first] == '\n' ||
           body[first] == '\r')
        first++;
    if (body[first] != '[' && body[first] != '{') {
        free(toks);
        return fail(&p, STELE_EINVAL, "the body must be an array of events or an object with "
                    "\"events\", not %s", body[first] == '"' ? "a string"
                    : body[first] == 't' || body[first] == 'f' ? "a boolean"
                    : body[first] == 'n' ? "null" : "a number");
    }

    p.t = v.toks;
    p.nt = (int)v.nvalues;
    int rc = parse_root(&p);
    free(toks);
    if (rc) {
        int bad = out->bad_json;
        json_append_free(out);
        out->bad_json = bad;
        out->expected = STELE_ANY;
    }
    return rc;
}

/* ---------------------------------------------------------------- writers */

int json_w_raw(buf *b, const void *p, size_t len) { return buf_append(b, p, len); }

#define W(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

int json_w_str(buf *b, const char *s, size_t len) { return jtext_escape(b, s, len); }

int json_w_u64(buf *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(b, tmp + i, sizeof tmp - i);
}

int json_w_base64(buf *b, const void *p, size_t len)
{
    const uint8_t *s = p;
    if (len > (SIZE_MAX - 2) / 4 * 3 - 3)
        return STELE_ENOMEM; /* base64 of len bytes would not fit in a size_t */
    size_t need = (len + 2) / 3 * 4 + 2;
    int rc = buf_reserve(b, need);
    if (rc)
        return rc;
    char *o = (char *)b->p + b->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t w = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = b64_alphabet[w >> 18];
        *o++ = b64_alphabet[w >> 12 & 63];
        *o++ = b64_alphabet[w >> 6 & 63];
        *o++ = b64_alphabet[w & 63];
    }
    if (i < len) {
        uint32_t w = (uint32_t)s[i] << 16;
        if (i + 1 < len)
            w |= (uint32_t)s[i + 1] << 8;
        *o++ = b64_alphabet[w >> 18];
        *o++ = b64_alphabet[w >> 12 & 63];
        *o++ = i + 1 < len ? b64_alphabet[w >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    b->len += need;
    return 0;
}

/* Civil date from days since 1970-01-01 (Howard Hinnant's algorithm,
 * proleptic Gregorian, exact for every int64 day count used here). */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t year = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(year + (*m <= 2));
}

int json_w_time_rfc3339(buf *b, int64_t us)
{
    /* 0000-01-01T00:00:00.000000Z .. 9999-12-31T23:59:59.999999Z */
    const int64_t min_us = -62167219200LL * 1000000;
    const int64_t max_us = 253402300799LL * 1000000 + 999999;
    if (us < min_us)
        us = min_us;
    if (us > max_us)
        us = max_us;
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    /* By hand: snprintf here was a fifth of the CPU of a catch-up
     * subscription (a million events a second). */
    char tmp[32]; /* "YYYY-MM-DDTHH:MM:SS.ffffffZ" and quotes: 29 */
    unsigned fields[7] = {(unsigned)y, m, d, (unsigned)(sod / 3600), (unsigned)(sod / 60 % 60),
                          (unsigned)(sod % 60), (unsigned)frac};
    static const int widths[7] = {4, 2, 2, 2, 2, 2, 6};
    static const char seps[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    char *o = tmp;
    *o++ = '"';
    for (int i = 0; i < 7; i++) {
        unsigned v = fields[i];
        for (int k = widths[i] - 1; k >= 0; k--) {
            o[k] = (char)('0' + v % 10);
            v /= 10;
        }
        o += widths[i];
        *o++ = seps[i];
    }
    *o++ = '"';
    return buf_append(b, tmp, (size_t)(o - tmp));
}

int json_w_id(buf *b, const uint8_t id[16], uint32_t flags)
{
    char text[40];
    text[0] = '"';
    stele_id_format(id, flags, text + 1);
    size_t n = strlen(text);
    text[n] = '"';
    return buf_append(b, text, n + 1);
}

int json_w_uuid(buf *b, const uint8_t id[16])
{
    char text[40];
    text[0] = '"';
    stele_uuid_format(id, text + 1);
    text[37] = '"';
    return buf_append(b, text, 38);
}

int json_w_event(buf *b, const stele_event *e)
{
    int rc;
    if ((rc = W(b, "{\"id\":")) || (rc = json_w_id(b, e->id, e->flags)) ||
        (rc = W(b, ",\"stream\":")) || (rc = json_w_str(b, e->stream, e->stream_len)) ||
        (rc = W(b, ",\"type\":")) || (rc = json_w_str(b, e->type, e->type_len)) ||
        (rc = W(b, ",\"revision\":")) || (rc = json_w_u64(b, e->revision)) ||
        (rc = W(b, ",\"position\":")) || (rc = json_w_u64(b, e->position)) ||
        (rc = W(b, ",\"created\":")) || (rc = json_w_time_rfc3339(b, e->created_us)))
        return rc;
    if (e->data_len) {
        if (e->flags & STELE_EVENT_JSON)
            rc = W(b, ",\"data\":") || json_w_raw(b, e->data, e->data_len);
        else
            rc = W(b, ",\"dataBase64\":") || json_w_base64(b, e->data, e->data_len);
        if (rc)
            return STELE_ENOMEM;
    }
    if (e->metadata_len) {
        if (e->flags & STELE_META_JSON)
            rc = W(b, ",\"metadata\":") || json_w_raw(b, e->metadata, e->metadata_len);
        else
            rc = W(b, ",\"metadataBase64\":") || json_w_base64(b, e->metadata, e->metadata_len);
        if (rc)
            return STELE_ENOMEM;
    }
    if (e->ntags) {
        if ((rc = W(b, ",\"tags\":[")))
            return rc;
        for (size_t i = 0; i < e->ntags; i++)
            if ((i && (rc = W(b, ","))) || (rc = json_w_str(b, e->tags[i], strlen(e->tags[i]))))
                return rc;
        if ((rc = W(b, "]")))
            return rc;
    }
    return W(b, "}");
}

static int w_error_head(buf *b, const char *code, const char *message)
{
    int rc;
    if ((rc = W(b, "{\"error\":{\"code\":")) || (rc = json_w_str(b, code, strlen(code))) ||
        (rc = W(b, ",\"message\":")) || (rc = json_w_str(b, message, strlen(message))))
        return rc;
    return 0;
}

int json_w_error(buf *b, const char *code, const char *message)
{
    int rc = w_error_head(b, code, message);
    return rc ? rc : W(b, "}}");
}

int json_w_error_rev(buf *b, const char *code, const char *message, uint64_t current)
{
    int rc;
    if ((rc = w_error_head(b, code, message)) || (rc = W(b, ",\"currentRevision\":")))
        return rc;
    rc = current == STELE_NONE ? W(b, "null") : json_w_u64(b, current);
    return rc ? rc : W(b, "}}");
}
