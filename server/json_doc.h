/*
 * json_doc.h - reading small JSON request bodies that are not appends
 * (consumer group settings, lists of event ids): the body is validated
 * against RFC 8259 first (json_validate), then tokenized into byte spans;
 * callers walk the tokens by index.
 */
#ifndef STELE_SERVER_JSON_DOC_H
#define STELE_SERVER_JSON_DOC_H

#include <stddef.h>
#include <stdint.h>

typedef struct json_doc json_doc;

/* Token types. */
enum { JD_OBJECT = 'o', JD_ARRAY = 'a', JD_STRING = 's', JD_NUMBER = 'n', JD_TRUE = 't',
       JD_FALSE = 'f', JD_NULL = 'z' };

/**
 * Parse s[0..len) (at most 1 MiB, nesting at most JSON_MAX_DEPTH). Returns
 * 0 with *out (free with json_doc_free), or STELE_EINVAL / STELE_ETOOBIG /
 * STELE_ENOMEM with a message in err ("invalid JSON at byte 3: ...").
 * The document points into `s`, which must outlive it.
 */
int json_doc_parse(const char *s, size_t len, json_doc **out, char *err, size_t errlen);
void json_doc_free(json_doc *d);
/** json_doc_parse() with another size limit (multi-stream appends). */
int json_doc_parse_max(const char *s, size_t len, size_t max, json_doc **out, char *err,
                       size_t errlen);
/** Where token i's text lies in the document: byte offset and length. */
void json_doc_span(const json_doc *d, int i, size_t *off, size_t *len);

/** The type (JD_*) of token i; the root is token 0. */
int json_doc_type(const json_doc *d, int i);
/** Members of an object / elements of an array. */
int json_doc_size(const json_doc *d, int i);
/** The token after token i and everything inside it. */
int json_doc_next(const json_doc *d, int i);
/** Member k (0-based) of object `obj`: its key token and value token. */
void json_doc_member(const json_doc *d, int obj, int k, int *key, int *value);
/** 1 if string token i is exactly `s`. */
int json_doc_eq(const json_doc *d, int i, const char *s);
/** The value of `key` in object `obj`, or -1. */
int json_doc_get(const json_doc *d, int obj, const char *key);
/** The unescaped text of string token i (malloc'd), or NULL if it is not a
 *  string or holds U+0000. */
char *json_doc_str(const json_doc *d, int i);
/** A non-negative integer token: 0 and *v, or -1. */
int json_doc_u64(const json_doc *d, int i, uint64_t *v);

#endif
