/*
 * crc32c.c - CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of every log record.
 *
 * Convention: the usual one (iSCSI, ext4, LevelDB): the register starts at
 * ~0 and is inverted at the end, so crc32c(0, "123456789", 9) == 0xE3069283
 * and a checksum can be continued, crc32c(crc32c(0, a, n), b, m) ==
 * crc32c(0, a || b, n + m). Both implementations below work on the
 * un-inverted register; crc32c() does the inversion once around them.
 *
 * Two implementations that must agree bit for bit (tests/test_util.c checks
 * them against each other on random buffers):
 *   - crc32c_hw: the SSE4.2 CRC32 instruction, 8 bytes per step once the
 *     pointer is 8-aligned. Used when the CPU reports SSE4.2. The
 *     instruction takes three cycles but can start one every cycle, so a
 *     single chain of steps runs at a third of the speed the CPU allows:
 *     from 192 bytes on, the buffer is cut into three lanes of equal length
 *     whose chains run side by side, and the lanes' registers are joined
 *     with the shift below ("Lanes").
 *   - crc32c_sw: slicing-by-8 over eight 256-entry tables, built once on
 *     first use under pthread_once, so it is safe from any thread.
 *
 * Lanes. The register (before the final inversion) is linear over GF(2) in
 * its starting value: crc(r, A || B) = shift(crc(r, A), |B|) ^ crc(0, B),
 * where shift(r, n) is what n zero bytes do to register r, that is r times
 * x^(8n) modulo the polynomial. shift is linear too, so for a fixed n it is
 * four lookups, one per byte of r, in tables of 256 entries; those tables
 * are built once (with the instruction itself, over zeros) for the lane
 * lengths LANE_LONG and LANE_MID. A record of ~270 bytes is one round of
 * 3 x 64 bytes and a tail of 80 (a third, shorter lane length measured
 * slower: its shifts cost more than its lanes save).
 *
 * (The slicing-by-8 tables below are the software path's.)
 * The CPU check runs once (pthread_once too) and is cached.
 */
#include <nmmintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "util/util.h"

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc_table[8][256];
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static pthread_once_t crc_detect_once = PTHREAD_ONCE_INIT;
static int crc_have_hw;
static void crc_detect(void);

static void crc_table_build(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
        crc_table[0][n] = c;
    }
    /* Table k advances a byte that sits k positions further from the end of
     * an 8-byte block, which lets one step fold 8 bytes with 8 lookups. */
    for (int k = 1; k < 8; k++)
        for (int n = 0; n < 256; n++) {
            uint32_t c = crc_table[k - 1][n];
            crc_table[k][n] = (c >> 8) ^ crc_table[0][c & 0xff];
        }
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len)
{
    pthread_once(&crc_table_once, crc_table_build);
    while (len >= 8) {
        uint32_t lo = crc ^ ld32(p);
        uint32_t hi = ld32(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return crc;
}

/* ---------------------------------------------------------------- lanes */

#define LANE_LONG 1024u
#define LANE_MID 64u

/* shift_tab[l][k][b]: byte b at byte k of a register, after the zero bytes
 * of lane length l (LANE_LONG, LANE_MID). */
static uint32_t shift_tab[2][4][256];

static uint32_t zeros_raw(uint32_t r, size_t n)
{
    uint64_t c = r;
    for (size_t i = 0; i < n; i += 8)
        c = _mm_crc32_u64(c, 0);
    return (uint32_t)c;
}

static void shift_build(void)
{
    static const size_t lanes[2] = {LANE_LONG, LANE_MID};
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 4; k++)
            for (uint32_t b = 0; b < 256; b++)
                shift_tab[l][k][b] = zeros_raw(b << (8 * k), lanes[l]);
}

static inline uint32_t shift(const uint32_t t[4][256], uint32_t r)
{
    return t[0][r & 0xff] ^ t[1][(r >> 8) & 0xff] ^ t[2][(r >> 16) & 0xff] ^ t[3][r >> 24];
}

/* Rounds of three lanes of `lane` bytes each (p 8-aligned), while at least
 * three lanes are left; the register after them. */
static uint32_t lanes3(uint32_t crc, const uint8_t **pp, size_t *plen, size_t lane,
                       const uint32_t t[4][256])
{
    const uint8_t *p = *pp;
    size_t len = *plen;
    while (len >= 3 * lane) {
        uint64_t a = crc, b = 0, c = 0;
        for (size_t i = 0; i < lane; i += 8) {
            uint64_t wa, wb, wc;
            memcpy(&wa, p + i, 8);
            memcpy(&wb, p + lane + i, 8);
            memcpy(&wc, p + 2 * lane + i, 8);
            a = _mm_crc32_u64(a, wa);
            b = _mm_crc32_u64(b, wb);
            c = _mm_crc32_u64(c, wc);
        }
        crc = shift(t, shift(t, (uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
        p += 3 * lane;
        len -= 3 * lane;
    }
    *pp = p;
    *plen = len;
    return crc;
}

static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    /* Byte steps up to an 8-byte boundary so the 64-bit loads below never
     * straddle a cache line; memcpy keeps them free of alignment UB. */
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = _mm_crc32_u8(crc, *p++);
        len--;
    }
    pthread_once(&crc_detect_once, crc_detect); /* the lanes' tables */
    if (len >= 3 * LANE_MID) {
        crc = lanes3(crc, &p, &len, LANE_LONG, shift_tab[0]);
        crc = lanes3(crc, &p, &len, LANE_MID, shift_tab[1]);
    }
    uint64_t c64 = crc;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
        p += 8;
        len -= 8;
    }
    crc = (uint32_t)c64;
    while (len--)
        crc = _mm_crc32_u8(crc, *p++);
    return crc;
}

static void crc_detect(void)
{
    __builtin_cpu_init();
    crc_have_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    if (crc_have_hw)
        shift_build();
}

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_detect_once, crc_detect);
    crc = ~crc;
    crc = crc_have_hw ? crc32c_hw(crc, data, len) : crc32c_sw(crc, data, len);
    return ~crc;
}
