/*
 * fuzz_proj.c - projection definitions (src/proj/): the stored
 * definition record ($ProjectionDefinition events of $projections-$all,
 * read back at every start by pstore.c's parse_def through
 * proj_json_fields), then the definition's query compiled and described
 * the way stele_projection_create checks it (proj_js_new: the prelude's
 * fromAll / fromStream / fromCategory / when / partitionBy / options, the
 * source it declares), with a small memory limit and timeout.
 *
 * Input: the event's JSON data, as pstore_write_def writes it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proj/pstore_int.h"

static int no_load(void *ctx, const char *k, size_t kl, int sh, buf *o, uint64_t *p, int *f)
{
    (void)ctx, (void)k, (void)kl, (void)sh, (void)o, (void)p;
    *f = 0;
    return 0;
}

static int no_emit(void *ctx, const proj_emit *e)
{
    (void)ctx, (void)e;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = malloc(size ? size : 1);
    if (!json)
        return 0;
    memcpy(json, data, size);
    stele_event e = {0};
    e.stream = PROJ_REGISTRY;
    e.stream_len = sizeof PROJ_REGISTRY - 1;
    e.type = "$ProjectionDefinition";
    e.type_len = strlen(e.type);
    e.data = json;
    e.data_len = size;
    e.flags = STELE_EVENT_JSON;
    proj_def d;
    if (pstore_parse_def_int(&e, &d) == 0) {
        if (strlen(d.name) > PROJ_NAME_MAX || !d.query || strlen(d.query) != d.query_len)
            abort();
        proj_js_cb cb = {.load = no_load, .emit = no_emit};
        proj_js *js = NULL;
        char err[512];
        err[0] = 0;
        int rc = proj_js_new(d.query, d.query_len, 8u << 20, 200, &cb, &js, err, sizeof err);
        if (rc == 0) {
            if (!proj_js_source(js))
                abort(); /* a compiled query declares its source */
            proj_js_free(js);
        } else if (!err[0]) {
            abort(); /* a refusal says why */
        }
        proj_def_free(&d);
    }
    free(json);
    return 0;
}
