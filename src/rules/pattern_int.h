/*
 * pattern_int.h - what pattern_compile.c, pattern_input.c and
 * pattern_match.c share: the compiled form of a pattern and the leaf values
 * of an event. Nothing here is seen above src/rules/pattern.h.
 */
#ifndef STELE_RULES_PATTERN_INT_H
#define STELE_RULES_PATTERN_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rules/pattern.h"

/*
 * A number: its value as a long double, and for an integer written without
 * fraction or exponent (up to 38 digits) the exact integer as well, so that
 * two such integers compare exactly (64-bit revisions, positions and ids)
 * wherever long double is only a double (valgrind, some platforms).
 */
typedef struct pat_num {
    long double v;
    int is_int;
    __int128 i;
} pat_num;

/* -1, 0 or 1 as a < b, a == b, a > b. */
int pat_num_cmp(const pat_num *a, const pat_num *b);

/* ------------------------------------------------------------ the event side */

/* The fields of an event as reads render it: where a pattern path starts. */
enum {
    PAT_ROOT_ID,
    PAT_ROOT_STREAM,
    PAT_ROOT_CATEGORY,
    PAT_ROOT_TYPE,
    PAT_ROOT_REVISION,
    PAT_ROOT_POSITION,
    PAT_ROOT_CREATED,
    PAT_ROOT_TAGS,
    PAT_ROOT_DATA,
    PAT_ROOT_METADATA,
    PAT_NROOTS
};

/* Kinds of leaf values (JSON scalars). */
enum { PV_STR, PV_NUM, PV_TRUE, PV_FALSE, PV_NULL };

/*
 * One leaf value of an event: a string (its decoded bytes), a number (its
 * text, parsed on first use), true, false or null. Values reached by the
 * same path are chained through `next` (an index into the same array, -1
 * at the end): an array in an event gives one value per element.
 */
typedef struct pat_val {
    uint8_t kind;
    uint8_t num_state; /* 0 not parsed yet, 1 `num` is valid, 2 not a number */
    uint8_t low_state; /* 0 not lowered yet, 1 `low` is valid */
    const char *s;     /* PV_STR: bytes; PV_NUM: the number's text */
    size_t n;
    pat_num num;
    const char *low; /* PV_STR: the string in lower case (equals-ignore-case) */
    size_t lown;
    int32_t next;
    int32_t ctx; /* the array elements it sits in (pat_ctx_compatible); 0: none */
} pat_val;

/* Parse a number value on first use; 1 if it is a number. */
int pat_val_num(pattern_input *in, pat_val *v);
/* The lower-case form of a string value, made on first use; 0 or ENOMEM. */
int pat_val_lower(pattern_input *in, pat_val *v);
/* The values at `root` + keys[0..nkeys): *base and the first index (-1:
 * none); *doc is 1 for data, 2 for metadata, 0 for the event's own fields. */
void pat_input_values(pattern_input *in, int root, char *const *keys, const size_t *klens,
                      const uint64_t *khash, size_t nkeys, pat_val **base, int32_t *first,
                      int *doc);
/* Whether two values of the same document (doc 1 or 2) with array
 * contexts a and b may match together: not when they sit in different
 * elements of the same array (EventBridge's array-consistent matching). */
int pat_ctx_compatible(const pattern_input *in, int doc, int32_t a, int32_t b);

/* ----------------------------------------------------------- shared helpers */

/* Equal bytes? Inline, for the short keys and values compared on every
 * match, where a call to memcmp costs more than the comparison. */
static inline int pat_same(const char *a, const char *b, size_t n)
{
    for (; n >= 8; a += 8, b += 8, n -= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y)
            return 0;
    }
    for (; n; n--)
        if (*a++ != *b++)
            return 0;
    return 1;
}

/* The hash of an object key, the same on both sides. */
uint64_t pat_key_hash(const char *k, size_t n);
/* Lower-case UTF-8 text (simple per-code-point mapping; bytes that are not
 * UTF-8 are copied). Writes at most 3*n bytes (the largest growth of one
 * code point's encoding under lower-casing is 2 -> 3 bytes) into out and
 * returns the length. */
size_t pat_lower(const char *s, size_t n, char *out);
/* A JSON number's text (not NUL-terminated); 0, or -1 if it is not a
 * finite number. */
int pat_parse_num(const char *s, size_t n, pat_num *out);
/* An IPv4 or IPv6 address (not NUL-terminated): 4 or 16 bytes into ip,
 * returns 4 or 16, or 0 if `s` is neither. */
int pat_parse_ip(const char *s, size_t n, uint8_t ip[16]);

/* ----------------------------------------------------------- the pattern side */

enum {
    PM_STR,       /* exact string */
    PM_NUM,       /* exact number (numerically) */
    PM_TRUE,
    PM_FALSE,
    PM_NULL,
    PM_PREFIX,
    PM_PREFIX_IC, /* prefix: {equals-ignore-case} */
    PM_SUFFIX,
    PM_SUFFIX_IC,
    PM_EQ_IC,     /* equals-ignore-case */
    PM_WILDCARD,
    PM_NUMERIC,
    PM_CIDR,
    PM_EXISTS,
    PM_NOT_EXISTS,
    PM_BUT_STR,      /* anything-but: strings */
    PM_BUT_NUM,      /* anything-but: numbers */
    PM_BUT_PREFIX,
    PM_BUT_SUFFIX,
    PM_BUT_IC,
    PM_BUT_WILDCARD
};

/* A wildcard: literal segments between unescaped '*'s. */
typedef struct pat_wild {
    char **seg;
    size_t *segn;
    size_t nseg;  /* >= 1 */
    int lead;     /* starts with '*' */
    int trail;    /* ends with '*' */
} pat_wild;

typedef struct pat_matcher {
    uint8_t op;
    /* PM_NUMERIC */
    uint8_t has_lo, lo_incl, has_hi, hi_incl;
    pat_num lo, hi;
    /* PM_CIDR */
    uint8_t ip[16];
    int iplen, bits;
    /* strings (lowered for the _IC forms), numbers, wildcards: one for the
     * plain forms, a list for anything-but */
    char **str;
    size_t *strn;
    pat_num *num;
    pat_wild *wild;
    size_t count;
} pat_matcher;

/* One field: a path and the values it accepts (any of the matchers). */
typedef struct pat_field {
    int root;
    char **keys; /* path below data/metadata */
    size_t *klens;
    uint64_t *khash;
    size_t nkeys;
    pat_matcher *m;
    size_t nm;
} pat_field;

struct pat_or;
/* A conjunction: every field and every $or must match. */
typedef struct pat_node {
    pat_field *f;
    size_t nf;
    struct pat_or *o;
    size_t no;
} pat_node;

/* A disjunction of conjunctions. */
typedef struct pat_or {
    pat_node *alt;
    size_t nalt;
} pat_or;

struct pattern {
    pat_node root;
    void *arena; /* every allocation of the compiled form */
};

#endif
