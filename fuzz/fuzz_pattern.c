/*
 * fuzz_pattern.c - EventBridge event patterns (src/rules/pattern_*.c):
 * pattern_compile on the pattern text, then pattern_match against an
 * event whose JSON data and metadata come from the input too, so the lazy
 * event parser (pattern_input.c) is fuzzed with the matcher.
 *
 * Input: pattern, 0xFF, event data, 0xFF, event metadata (missing parts
 * are empty). The event's stream, type and tags are fixed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rules/pattern.h"

static size_t part(const uint8_t *p, size_t n, size_t *next)
{
    const uint8_t *end = memchr(p, 0xFF, n);
    size_t len = end ? (size_t)(end - p) : n;
    *next = end ? len + 1 : n;
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t next, off = 0;
    size_t plen = part(data, size, &next);
    off += next;
    size_t dlen = part(data + off, size - off, &next);
    const uint8_t *d = data + off;
    off += next;
    size_t mlen = part(data + off, size - off, &next);
    const uint8_t *m = data + off;

    char *ptext = malloc(plen ? plen : 1);
    char *dcopy = malloc(dlen ? dlen : 1);
    char *mcopy = malloc(mlen ? mlen : 1);
    if (!ptext || !dcopy || !mcopy)
        goto out;
    memcpy(ptext, data, plen);
    memcpy(dcopy, d, dlen);
    memcpy(mcopy, m, mlen);

    pattern *p = NULL;
    char err[256];
    err[0] = 0;
    int rc = pattern_compile(ptext, plen, &p, err, sizeof err);
    if (rc != 0) {
        if (!err[0])
            abort(); /* a refusal says why */
        goto out;
    }
    static const char *const tags[] = {"tenant:acme", "region:eu"};
    stele_event e = {0};
    memcpy(e.id, "0123456789abcdef", 16);
    e.stream = "order-1";
    e.stream_len = 7;
    e.type = "OrderPlaced";
    e.type_len = 11;
    e.data = dcopy;
    e.data_len = dlen;
    e.metadata = mcopy;
    e.metadata_len = mlen;
    e.tags = tags;
    e.ntags = 2;
    e.flags = STELE_EVENT_JSON | STELE_META_JSON;
    e.created_us = 1796000000000000;
    e.revision = 3;
    e.position = 42;
    pattern_input *in = NULL;
    if (pattern_input_new(&e, &in) == 0) {
        int r1 = pattern_match(p, in);
        int r2 = pattern_match(p, in); /* from the cached parse: the same */
        if (r1 != r2 || (r1 != 0 && r1 != 1))
            abort();
        e.flags = 0; /* not JSON: data and metadata are opaque */
        pattern_input_reset(in, &e);
        (void)pattern_match(p, in);
        pattern_input_free(in);
    }
    pattern_free(p);
out:
    free(ptext);
    free(dcopy);
    free(mcopy);
    return 0;
}
