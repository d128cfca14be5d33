/*
 * json_text.h - the text level of JSON (RFC 8259), written once for every
 * JSON reader and writer of Stele: \u escapes with surrogate pairs, UTF-8
 * well-formedness (Unicode table 3-7), string unescaping, string escaping
 * and a strict validator of whole values.
 *
 * The parsers above it (server/json.c for appends, server/json_doc.c for
 * other request bodies, src/store/meta_json.c for custom stream metadata,
 * src/util/meta.c for correlation ids, src/sub/group_store.c for consumer
 * group records, cli/client.c for server answers) keep their own shapes and
 * messages about fields; the bytes-level decisions are made here, so they
 * agree on what a valid string is.
 *
 * Like util/shared.h, this holds no library state (no thread error message,
 * no store), so server/ and cli/ may include it (docs/architecture.md,
 * "Layer rules").
 */
#ifndef STELE_UTIL_JSON_TEXT_H
#define STELE_UTIL_JSON_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "util/shared.h"

/** Nesting limit of jtext_validate and the server's bodies. */
#define JTEXT_MAX_DEPTH 64

/** The value of the 4 hex digits at p (all 4 must be readable), or -1 if
 *  one of them is not a hex digit. */
long jtext_hex4(const char *p);

/**
 * Length (2..4) of the well-formed UTF-8 sequence at s[0..n), s[0] >= 0x80:
 * the shortest form, no UTF-16 surrogates, nothing above U+10FFFF; 0 if the
 * bytes there are not one.
 */
size_t jtext_utf8_seq(const uint8_t *s, size_t n);

/** Encode code point cp (<= 0x10FFFF) as UTF-8 into out; returns 1..4. */
size_t jtext_utf8_put(uint32_t cp, uint8_t out[4]);

/**
 * Decode the \u escape at s[0..n) (s[0] == '\\', s[1] == 'u'), joining a
 * high surrogate with the \u low surrogate that must follow it. Returns the
 * bytes read (6 or 12) with *cp set, or a negative JTEXT_U_* reason.
 */
enum {
    JTEXT_U_SHORT = -1,  /* the input ends inside the escape */
    JTEXT_U_HEX = -2,    /* not 4 hex digits */
    JTEXT_U_LONE = -3,   /* a lone surrogate (low first, or high without low) */
};
int jtext_u_escape(const char *s, size_t n, uint32_t *cp);

/**
 * Unescape the text of a JSON string (between its quotes) raw[0..n) into
 * out (cap bytes; cap >= n always suffices, escapes only shrink). Strict:
 * an unknown escape, a bad or cut \u escape or a lone surrogate fails. Raw
 * bytes are copied as they are (their UTF-8 is the caller's to check, or
 * was validated before). \u0000 decodes to a 0 byte: callers that need
 * C strings check for it. Returns the length, or -1 (malformed, or it does
 * not fit in cap).
 */
long jtext_unescape(const char *raw, size_t n, char *out, size_t cap);

/**
 * Append s[0..len) to b as a JSON string: quotes, \" \\ \b \f \n \r \t,
 * other control characters as \u00XX; valid UTF-8 passes through, a byte
 * that is not part of valid UTF-8 becomes \ufffd, so the output is always
 * valid JSON. 0 or STELE_ENOMEM.
 */
int jtext_escape(buf *b, const char *s, size_t len);

/**
 * The validator's state: a recursive descent over RFC 8259 (structure,
 * strings with their escapes and UTF-8, the number grammar, the three
 * literals, nesting depth). Zero it with jtext_scan_init, then call the
 * step that fits: a parser that walks some levels itself (custom metadata
 * walks its top-level object) calls jtext_scan_string and jtext_scan_value
 * for the parts below.
 */
/* A token recorded during the scan (jtext_scan.tok_max > 0): one per
 * value, in document order, tokens[k] being the k-th value counted. A
 * string's span excludes its quotes (object keys are string tokens too); a
 * container's span runs from its bracket to just past its closing one and
 * `size` is its number of elements (array) or keys (object); each key is
 * followed by its value's tokens. So a token's subtree is every following
 * token that starts before it ends. */
enum { JTEXT_T_PRIMITIVE = 1, JTEXT_T_STRING, JTEXT_T_OBJECT, JTEXT_T_ARRAY };
typedef struct jtext_tok {
    int type, start, end, size;
} jtext_tok;

typedef struct jtext_scan {
    const uint8_t *s;
    size_t len, pos;
    int depth, max_depth;
    size_t nvalues;  /* values seen (containers, strings, numbers, literals) */
    size_t err_at;   /* after a failure: byte offset */
    const char *why; /* after a failure: static text ("trailing comma") */
    int show_char;   /* the failure is about the character at err_at */
    /* Optional tokens, so one pass both validates and tokenizes: set
     * tok_max to record the first tok_max values into `toks` (grown with
     * realloc from toks/tok_cap, which may start NULL/0; the caller frees
     * toks). A failed realloc stops recording and sets tok_oom; values past
     * tok_max are counted, not recorded. Bodies must be shorter than
     * INT32_MAX bytes. */
    jtext_tok *toks;
    size_t tok_cap, tok_max;
    int tok_oom;
    /* toks is the caller's own array (on its stack, say), never to be
     * realloc'd or freed: growing past tok_cap copies the tokens into a
     * malloc'd array (the caller's to free) and clears this. */
    int toks_borrowed;
} jtext_scan;

/* max_depth is at most JTEXT_MAX_DEPTH (0: that), so the depth message
 * "nesting deeper than 64" is always true. */
void jtext_scan_init(jtext_scan *v, const char *s, size_t len, int max_depth);
/** Skip JSON whitespace. */
void jtext_scan_ws(jtext_scan *v);
/** The string whose opening quote is at v->pos: 0 and v->pos past its
 *  closing quote, or -1 with err_at / why. */
int jtext_scan_string(jtext_scan *v);
/** One value after optional whitespace: 0 or -1. */
int jtext_scan_value(jtext_scan *v);
/** The whole text: one value with only whitespace around it: 0 or -1. */
int jtext_scan_text(jtext_scan *v);

/**
 * Check that s[0..len) is exactly one JSON value, optionally surrounded by
 * whitespace, nesting at most JTEXT_MAX_DEPTH deep. 0, or -1 with *err_at
 * and *why set (either may be NULL).
 */
int jtext_validate(const char *s, size_t len, size_t *err_at, const char **why);

#endif
