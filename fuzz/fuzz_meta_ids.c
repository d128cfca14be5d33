/*
 * fuzz_meta_ids.c - the correlation, causation and actor ids taken from
 * an event's metadata for the secondary indexes (src/util/meta.c:
 * meta_ids_extract). The writer and recovery run it on whatever metadata a
 * client stored, JSON or not: it may find nothing, never fail (but for
 * memory), and what it finds is a NUL-terminated name of the stated length.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stele.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    meta_ids ids;
    int rc = meta_ids_extract(data, size, &ids);
    if (rc != 0 && rc != STELE_ENOMEM)
        abort();
    if (rc == 0) {
        if (ids.correlation_len > META_NAME_MAX || ids.actor_len > META_NAME_MAX ||
            ids.causation_len > META_NAME_MAX)
            abort();
        /* A found name is NUL-terminated at its length (an absent one,
         * length 0, leaves the array as it was). */
        if ((ids.correlation_len && strlen(ids.correlation) != ids.correlation_len) ||
            (ids.actor_len && strlen(ids.actor) != ids.actor_len) ||
            (ids.causation_len && strlen(ids.causation) != ids.causation_len))
            abort();
    }
    return 0;
}
