/*
 * fuzz_group_store.c - the consumer groups' stored records
 * (src/sub/group_store.c): the $persistent-config events that
 * gstore_load_defs folds into group definitions at startup, and the
 * filter JSON a group keeps (gstore_filter_from_json).
 *
 * Input: records separated by the byte 0xFF; a record's first byte picks
 * its event type (GroupCreated, GroupUpdated, GroupDeleted, other) and the
 * rest is its JSON data. The records are folded in order, as a replay of
 * the stream would; each record's data is also read as a filter.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sub/group_store_int.h"

static const char *const types[] = {EV_CREATED, EV_UPDATED, EV_DELETED, "GroupOther"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    group_def *defs = NULL;
    size_t n = 0, cap = 0;
    size_t off = 0;
    while (off < size) {
        const uint8_t *end = memchr(data + off, 0xFF, size - off);
        size_t len = end ? (size_t)(end - (data + off)) : size - off;
        if (len >= 1) {
            const char *type = types[data[off] & 3];
            /* An exact copy, so a read past the data is caught. */
            char *json = malloc(len);
            if (!json)
                break;
            memcpy(json, data + off + 1, len - 1);
            stele_event e = {0};
            e.stream = CONFIG_STREAM;
            e.stream_len = sizeof CONFIG_STREAM - 1;
            e.type = type;
            e.type_len = strlen(type);
            e.data = json;
            e.data_len = len - 1;
            e.flags = STELE_EVENT_JSON;
            (void)gstore_fold_int(&e, &defs, &n, &cap);
            json[len - 1] = 0;
            stele_filter *f = NULL;
            if (gstore_filter_from_json(json, &f) == 0 && f)
                gstore_filter_free(f);
            free(json);
        }
        off += len + 1;
    }
    for (size_t i = 0; i < n; i++)
        group_def_free(&defs[i]);
    free(defs);
    return 0;
}
