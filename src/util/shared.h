/*
 * shared.h - the few helpers of src/util that code outside libstele
 * (server/, cli/) may use besides include/stele.h: a growable byte buffer,
 * clocks, hex digits and byte-order loads and stores. They hold no library
 * state (no thread error message, no store), so using them does not reach
 * into libstele's internals; everything else in src/ stays private to the
 * library (docs/architecture.md, "The backend contract": layer rules).
 */
#ifndef STELE_UTIL_SHARED_H
#define STELE_UTIL_SHARED_H

#include <stddef.h>
#include <stdint.h>

/* The value of a hex digit, or -1. */
int hex_digit(int c);

/* ---- clocks */
int64_t time_now_us(void);   /* CLOCK_REALTIME, microseconds since epoch */
uint64_t time_mono_ns(void); /* CLOCK_MONOTONIC, nanoseconds */

/* ---- buffers: a growable byte array. Zero-initialise, then use. */
typedef struct buf {
    uint8_t *p;
    size_t len;
    size_t cap;
} buf;

/* Ensure room for `extra` more bytes; 0 or STELE_ENOMEM. */
int buf_reserve(buf *b, size_t extra);
int buf_append(buf *b, const void *data, size_t n);
void buf_free(buf *b);

/* Little-endian loads/stores (the log format is little-endian). On a
 * little-endian host they compile to single unaligned moves. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#include <string.h>
static inline void st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
#else
static inline void st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void st32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void st64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static inline uint64_t ld64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }
#endif
/* Big-endian 64-bit, for index keys that must sort numerically. */
static inline void stbe64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i)); }
static inline uint64_t ldbe64(const uint8_t *p) { uint64_t v = 0; for (int i = 0; i < 8; i++) v = (v << 8) | p[i]; return v; }

#endif
