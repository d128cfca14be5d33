/*
 * store_int.h - what the files of the API edge (src/store) share: the
 * store handle and the argument checks every public call uses.
 */
#ifndef STELE_STORE_INT_H
#define STELE_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "stele.h"

struct stele_db {
    backend *be;
    stele_options opts;
};

/* store.c: a stream name (sets *len), an expected revision; 0 or EINVAL
 * with the reason. */
int check_stream(const char *stream, size_t *len);
int check_expected(int64_t expected);

/* meta_json.c: check that s[0..len) is one JSON object (RFC 8259) usable
 * as custom stream metadata: at most `max_fields` members, no duplicate
 * member names, none reserved (maxAge, maxCount, truncateBefore,
 * maxSnapshots, or starting with '$'). 0 or EINVAL with the reason and
 * byte offset. */
int meta_json_check_custom(const char *s, size_t len, size_t max_fields);

#endif
