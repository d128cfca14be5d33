/*
 * fuzz_urlcode.c - request targets (server/urlcode.c): a path split into
 * segments and each segment percent-decoded as a name, and the query
 * string read by name (query_get, as routes read ?from=, ?limit=,
 * ?direction=) and by iteration (query_next, repeated ?type=). The input
 * is a request target; it splits at the first '?'. Decoded results must be
 * NUL-terminated and free of NUL bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "urlcode.h"

static const char *const params[] = {"from", "limit", "direction", "type", "resolveLinks",
                                     "embed", "tombstone", "expected", "position", ""};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *q = memchr(s, '?', size);
    size_t plen = q ? (size_t)(q - s) : size;
    size_t qlen = q ? size - plen - 1 : 0;
    const char *query = q ? q + 1 : "";

    const char *seg[16];
    size_t seglen[16];
    int nseg = url_path_split(s, plen, seg, seglen, 16);
    char out[300];
    for (int i = 0; i < nseg; i++) {
        size_t n = 0;
        if (url_decode(seg[i], seglen[i], out, sizeof out, &n) == 0 &&
            (strlen(out) != n || n >= sizeof out))
            abort();
        if (url_decode_name(seg[i], seglen[i], out, sizeof out) == 0 && !out[0])
            abort(); /* names are never empty */
        char enc[1000];
        (void)url_encode(seg[i], seglen[i], enc, sizeof enc);
    }
    for (size_t i = 0; i < sizeof params / sizeof *params; i++) {
        int rc = query_get(query, qlen, params[i], out, sizeof out);
        if (rc == 1 && strlen(out) >= sizeof out)
            abort();
    }
    size_t off = 0;
    char key[64], val[300];
    for (int guard = 0; guard < 10000; guard++) {
        int rc = query_next(query, qlen, &off, key, sizeof key, val, sizeof val);
        if (rc == 0)
            break;
        if (off > qlen)
            abort();
    }
    /* A small output buffer: every decoder must stop at its end. */
    char tiny[4];
    (void)url_decode(s, plen, tiny, sizeof tiny, NULL);
    (void)query_get(query, qlen, "from", tiny, sizeof tiny);
    return 0;
}
