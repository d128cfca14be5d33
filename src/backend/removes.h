/*
 * removes.h - the `$streamDeleted` event a stream delete or tombstone
 * writes to `$deletes` on every backend (docs/projections.md "$deleted"):
 * its data (JSON for readers) and metadata (the fixed removes block of
 * src/log/record.h, which the local engine's recovery and check read), the
 * same bytes on the local engine and PostgreSQL.
 */
#ifndef STELE_REMOVES_H
#define STELE_REMOVES_H

#include <stddef.h>
#include <stdint.h>

#define REMOVES_STREAM "$deletes"
#define REMOVES_TYPE "$streamDeleted"

/* The bytes removes_build() needs at most for a stream of `len` bytes. */
size_t removes_cap(size_t len);
/* Write the event's data then its metadata at out (removes_cap(len)
 * bytes): {"streamId", "revision" (cur, or null when STELE_NONE),
 * "truncateBefore" (tb, or null for a tombstone), "tombstone"}, then the
 * removes block. Sets *data_len and *meta_len. */
void removes_build(uint8_t *out, const char *stream, size_t len, int tombstone, uint64_t cur,
                   uint64_t tb, size_t *data_len, size_t *meta_len);

#endif
