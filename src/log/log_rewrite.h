/*
 * log_rewrite.h - writing a scavenged copy of a sealed segment and swapping
 * it in place of the original (log_rewrite.c has the format and the crash
 * argument). The scavenger (src/backend/local_scavenge.c) decides which
 * records stay; this layer only packs them and keeps their locations.
 */
#ifndef STELE_LOG_REWRITE_H
#define STELE_LOG_REWRITE_H

#include <stdint.h>

#include "log/log.h"

typedef struct log_rewrite log_rewrite;

/* Start rewriting sealed segment `segno`: creates NNNNNNNN.seg.scav. */
int log_rewrite_begin(logf *lg, uint32_t segno, log_rewrite **out);

/* Keep the record `raw` (`len` bytes) found at original location `loc`.
 * Records must come in log order and include the seal. */
int log_rewrite_add(log_rewrite *w, uint64_t loc, const uint8_t *raw, uint32_t len);

/* Write the table and header, fdatasync, rename over the segment, swap it
 * in for readers, fsync the directory. Frees w in every case. On an error
 * before the rename the original stays and the temporary file is removed;
 * an error after it (directory fsync) leaves the new file in place. Sizes
 * of the old and new files in *old_size / *new_size once swapped. */
int log_rewrite_commit(log_rewrite *w, uint64_t *old_size, uint64_t *new_size);

/* Give up: remove the temporary file and free w (NULL is a no-op). */
void log_rewrite_abort(log_rewrite *w);

#endif
