/*
 * fuzz_meta_json.c - the check of custom stream metadata
 * (src/store/meta_json.c: meta_json_check_custom), the JSON object a
 * client stores beside maxAge / maxCount / truncateBefore: one object, at
 * most N members, no duplicate or reserved names. The first input byte
 * sets N (0..255), the rest is the document.
 */
#include <stdint.h>
#include <stdlib.h>

#include "store/store_int.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int rc = meta_json_check_custom((const char *)data + 1, size - 1, data[0]);
    if (rc != 0 && rc != STELE_EINVAL && rc != STELE_ENOMEM)
        abort();
    if (rc == STELE_EINVAL && !stele_errmsg()[0])
        abort(); /* a refusal says why */
    return 0;
}
