/*
 * fuzz_json_append.c - the append body parser of the HTTP API
 * (server/json.c: json_parse_append, which validates the whole body with
 * json_validate first), as POST /streams/NAME receives it. On success
 * every event must point into the body or the parser's arena and every
 * JSON span must itself be valid JSON; on failure a message is given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_append a;
    char err[256];
    err[0] = 0;
    int rc = json_parse_append((const char *)data, size, &a, err, sizeof err);
    if (rc == 0) {
        if (a.n < 1)
            abort();
        for (size_t i = 0; i < a.n; i++) {
            const stele_event_in *e = &a.events[i];
            if (!e->type)
                abort();
            if ((e->flags & STELE_EVENT_JSON) && e->data_len &&
                json_validate(e->data, e->data_len, NULL, NULL) != 0)
                abort();
            if ((e->flags & STELE_META_JSON) && e->metadata_len &&
                json_validate(e->metadata, e->metadata_len, NULL, NULL) != 0)
                abort();
        }
    } else if (!err[0]) {
        abort(); /* every refusal says why */
    }
    json_append_free(&a);
    /* The validator alone, and the base64 decoder on the same bytes. */
    size_t at;
    const char *why;
    (void)json_validate((const char *)data, size, &at, &why);
    uint8_t *out = malloc(json_b64_decoded_max(size) + 1);
    size_t outn;
    if (out)
        (void)json_b64_decode((const char *)data, size, out, &outn, &at, &why);
    free(out);
    return 0;
}
