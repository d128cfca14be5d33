/*
 * fuzz_json_doc.c - the small-document JSON reader of the server
 * (server/json_doc.c: json_doc_parse, then the accessors every route uses
 * to walk a body: consumer group settings, id lists, multi-stream
 * appends). Every token of a parsed document is visited with each
 * accessor, the way a route looks up members and reads strings and
 * numbers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_doc.h"

static void visit(const json_doc *d, int i, int depth, size_t len)
{
    size_t off, n;
    json_doc_span(d, i, &off, &n);
    if (off > len || n > len - off)
        abort(); /* a span outside the document */
    int t = json_doc_type(d, i);
    if (t == JD_STRING) {
        free(json_doc_str(d, i));
        (void)json_doc_eq(d, i, "events");
    } else if (t == JD_NUMBER) {
        uint64_t v;
        (void)json_doc_u64(d, i, &v);
    } else if (t == JD_OBJECT) {
        (void)json_doc_get(d, i, "settings");
        int size = json_doc_size(d, i);
        for (int k = 0; k < size; k++) {
            int key, value;
            json_doc_member(d, i, k, &key, &value);
            visit(d, key, depth + 1, len);
            visit(d, value, depth + 1, len);
        }
    } else if (t == JD_ARRAY) {
        int size = json_doc_size(d, i), at = i + 1;
        for (int k = 0; k < size; k++) {
            visit(d, at, depth + 1, len);
            at = json_doc_next(d, at);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_doc *d = NULL;
    char err[256];
    err[0] = 0;
    int rc = json_doc_parse((const char *)data, size, &d, err, sizeof err);
    if (rc == 0) {
        visit(d, 0, 0, size);
        json_doc_free(d);
    } else if (!err[0]) {
        abort(); /* every refusal says why */
    }
    return 0;
}
