/*
 * util.h - small helpers shared by every layer of libstele: CRC32C, UUIDs,
 * UTF-8 name validation, event metadata ids and the thread-local error
 * message; and, through util/shared.h, the clocks, byte buffers and byte
 * orders that server/ shares too. No I/O here (that is os/).
 */
#ifndef STELE_UTIL_H
#define STELE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "util/shared.h"

/* ---- CRC32C (Castagnoli). Hardware (SSE4.2) when the CPU has it, else a
 * table. crc32c(0, buf, len) starts a checksum; pass the previous result to
 * continue it over more bytes. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* ---- UUIDs */
/* A fresh RFC 9562 UUIDv7: 48-bit Unix ms, then a counter that keeps ids
 * made by this process strictly increasing, then random bits. Thread-safe. */
void uuid_v7(uint8_t out[16]);
/* uuid_v7 with the time already read (time_now_us()): a batch of ids reads
 * the clock once; ids stay unique and ordered (a time behind the last id's
 * continues its counter). */
void uuid_v7_at(uint8_t out[16], int64_t now_us);
int uuid_is_nil(const uint8_t id[16]);
/* The first id that appears twice among the n ids whose skip[i] is 0
 * (skip may be NULL): its index into ids, -1 if none, or -2 when out of
 * memory. Used by the append edge and by recovery, which must refuse the
 * same commits (a writer never makes one with an id twice). */
long uuid_find_dup(const uint8_t (*ids)[16], const uint8_t *skip, size_t n);

/* ---- names: UTF-8 validation for stream names, event types and tags.
 * Returns NULL if `s` (len bytes) is valid UTF-8 (no overlongs, no
 * surrogates, nothing above U+10FFFF) with no control character (C0, DEL,
 * C1); otherwise a static reason and *bad_at = the byte offset. */
const char *utf8_check_name(const char *s, size_t len, size_t *bad_at);
/* The category of a stream name: the bytes before the first '-'; a name
 * without '-', or starting with one, is its own category (Message DB's
 * rule), so categories partition $all. Used by the secondary index and by
 * subscription filters alike. */
size_t stream_category_len(const char *stream, size_t len);
/* Encoding a code point as UTF-8 and the other JSON text helpers:
 * util/json_text.h. */

/* ---- event metadata (meta.c): the correlation id and the actor of an
 * event, from top-level string members of its JSON metadata, for the
 * secondary indexes. Field names and precedence are documented in meta.c
 * and docs/queries.md. A value is used only if it is a valid name (1..255
 * bytes of UTF-8, no control characters); *_len = 0 when there is none. */
#define META_NAME_MAX 255
typedef struct meta_ids {
    char correlation[META_NAME_MAX + 1];
    size_t correlation_len;
    char actor[META_NAME_MAX + 1];
    size_t actor_len;
    char causation[META_NAME_MAX + 1];
    size_t causation_len;
} meta_ids;
/* 0, or STELE_ENOMEM. Metadata that is not a JSON object yields nothing. */
int meta_ids_extract(const void *json, size_t len, meta_ids *out);

/* ---- errors: set the calling thread's message (printf format) and return
 * `code`, so a failing path reads `return err_set(STELE_EINVAL, "...")`.
 * stele_errmsg() returns the message. */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clear the thread's message (start of a public call). */
void err_clear(void);

#endif
