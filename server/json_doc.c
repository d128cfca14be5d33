/*
 * json_doc.c - small JSON documents for requests other than appends (see
 * json_doc.h). json_validate (json.c) checks the body against RFC 8259
 * first, so jsmn, which is a tokenizer and not a validator, only ever sees
 * valid JSON; strings are unescaped on demand.
 */
#include "json_doc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "json.h"

#define DOC_MAX_BYTES (1u << 20)

struct json_doc {
    const char *s;
    jsmntok_t *t;
    int n;
};

int json_doc_parse(const char *s, size_t len, json_doc **out, char *err, size_t errlen)
{
    return json_doc_parse_max(s, len, DOC_MAX_BYTES, out, err, errlen);
}

void json_doc_span(const json_doc *d, int i, size_t *off, size_t *len)
{
    /* jsmn's string tokens exclude the quotes: include them. */
    int q = d->t[i].type == JSMN_STRING;
    *off = (size_t)d->t[i].start - (size_t)q;
    *len = (size_t)(d->t[i].end - d->t[i].start) + 2 * (size_t)q;
}

int json_doc_parse_max(const char *s, size_t len, size_t max, json_doc **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    if (len > max) {
        snprintf(err, errlen, "body is larger than %zu bytes", max);
        return STELE_ETOOBIG;
    }
    size_t at;
    const char *why;
    if (json_validate(s, len, &at, &why)) {
        snprintf(err, errlen, "invalid JSON at byte %zu: %s", at, why);
        return STELE_EINVAL;
    }
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, s, len, NULL, 0);
    if (n > (int)JSON_MAX_VALUES) {
        snprintf(err, errlen, "the body has %d JSON values, more than %u", n, JSON_MAX_VALUES);
        return STELE_ETOOBIG;
    }
    json_doc *d = calloc(1, sizeof *d);
    if (d && n > 0)
        d->t = calloc((size_t)n, sizeof *d->t);
    if (!d || n <= 0 || !d->t) {
        free(d);
        snprintf(err, errlen, n <= 0 ? "invalid JSON" : "out of memory");
        return n <= 0 ? STELE_EINVAL : STELE_ENOMEM;
    }
    jsmn_init(&p);
    d->n = jsmn_parse(&p, s, len, d->t, (unsigned)n);
    d->s = s;
    if (d->n <= 0) {
        json_doc_free(d);
        snprintf(err, errlen, "invalid JSON");
        return STELE_EINVAL;
    }
    *out = d;
    return 0;
}

void json_doc_free(json_doc *d)
{
    if (!d)
        return;
    free(d->t);
    free(d);
}

int json_doc_type(const json_doc *d, int i)
{
    if (i < 0 || i >= d->n)
        return 0;
    const jsmntok_t *t = &d->t[i];
    switch (t->type) {
    case JSMN_OBJECT: return JD_OBJECT;
    case JSMN_ARRAY: return JD_ARRAY;
    case JSMN_STRING: return JD_STRING;
    default: break;
    }
    char c = d->s[t->start];
    return c == 't' ? JD_TRUE : c == 'f' ? JD_FALSE : c == 'n' ? JD_NULL : JD_NUMBER;
}

int json_doc_size(const json_doc *d, int i) { return i >= 0 && i < d->n ? d->t[i].size : 0; }

int json_doc_next(const json_doc *d, int i)
{
    int end = d->t[i].end, j = i + 1;
    while (j < d->n && d->t[j].start < end)
        j++;
    return j;
}

void json_doc_member(const json_doc *d, int obj, int k, int *key, int *value)
{
    int j = obj + 1;
    for (int m = 0; m < k; m++)
        j = json_doc_next(d, j + 1);
    *key = j;
    *value = j + 1;
}

int json_doc_eq(const json_doc *d, int i, const char *s)
{
    if (i < 0 || i >= d->n || d->t[i].type != JSMN_STRING)
        return 0;
    size_t n = strlen(s);
    return (size_t)(d->t[i].end - d->t[i].start) == n && !memcmp(d->s + d->t[i].start, s, n);
}

int json_doc_get(const json_doc *d, int obj, const char *key)
{
    if (json_doc_type(d, obj) != JD_OBJECT)
        return -1;
    for (int k = 0; k < d->t[obj].size; k++) {
        int kt, vt;
        json_doc_member(d, obj, k, &kt, &vt);
        if (json_doc_eq(d, kt, key))
            return vt;
    }
    return -1;
}

char *json_doc_str(const json_doc *d, int i)
{
    if (i < 0 || i >= d->n || d->t[i].type != JSMN_STRING)
        return NULL;
    const char *p = d->s + d->t[i].start;
    size_t len = (size_t)(d->t[i].end - d->t[i].start);
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    /* The body is valid JSON, so the decode succeeds; U+0000 cannot be
     * part of a C string. */
    long n = jtext_unescape(p, len, out, len);
    if (n < 0 || memchr(out, 0, (size_t)n)) {
        free(out);
        return NULL;
    }
    out[n] = 0;
    return out;
}

int json_doc_u64(const json_doc *d, int i, uint64_t *v)
{
    if (json_doc_type(d, i) != JD_NUMBER)
        return -1;
    const char *p = d->s + d->t[i].start;
    int len = d->t[i].end - d->t[i].start;
    if (len < 1 || len > 20)
        return -1;
    uint64_t x = 0;
    for (int k = 0; k < len; k++) {
        if (p[k] < '0' || p[k] > '9')
            return -1;
        uint64_t nx = x * 10 + (uint64_t)(p[k] - '0');
        if (nx / 10 != x)
            return -1;
        x = nx;
    }
    *v = x;
    return 0;
}
