/*
 * utf8.c - validation of names (stream names, event types, tags).
 *
 * A name must be well-formed UTF-8 as Unicode defines it (table 3-7 of the
 * standard): the shortest encoding of each code point, no UTF-16 surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF, no sequence cut short. On top of
 * that it must not contain control characters: C0 (U+0000..U+001F, so an
 * embedded NUL is rejected too), DEL (U+007F) and C1 (U+0080..U+009F). Names
 * end up in HTTP paths, JSON, logs and terminal output, where those
 * characters cause trouble and are never what a user meant.
 *
 * On failure the reason is a static string and *bad_at is the byte offset
 * of the first byte of the offending character or sequence, so the caller
 * can say "stream name has a control character at byte 3".
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "util/util.h"

const char *utf8_check_name(const char *s, size_t len, size_t *bad_at)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t c = p[i];
        size_t start = i;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) {
                *bad_at = start;
                return "control character";
            }
            i++;
            continue;
        }

        /* Lead byte: how many continuation bytes follow and the smallest
         * code point that really needs this many bytes (anything below it
         * is an overlong encoding). */
        size_t ncont;
        uint32_t min;
        if (c >= 0xc0 && c < 0xe0) {
            ncont = 1;
            min = 0x80;
            c &= 0x1f;
        } else if (c >= 0xe0 && c < 0xf0) {
            ncont = 2;
            min = 0x800;
            c &= 0x0f;
        } else if (c >= 0xf0 && c < 0xf8) {
            ncont = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            /* A stray continuation byte (0x80..0xBF) or 0xF8..0xFF, which
             * no encoding uses. */
            *bad_at = start;
            return "invalid UTF-8";
        }
        for (size_t k = 1; k <= ncont; k++) {
            if (start + k >= len) {
                *bad_at = start;
                return "truncated UTF-8 sequence";
            }
            uint8_t b = p[start + k];
            if ((b & 0xc0) != 0x80) {
                *bad_at = start;
                return "invalid UTF-8";
            }
            c = (c << 6) | (b & 0x3f);
        }
        if (c < min) {
            *bad_at = start;
            return "overlong UTF-8 encoding";
        }
        if (c >= 0xd800 && c <= 0xdfff) {
            *bad_at = start;
            return "UTF-16 surrogate in UTF-8";
        }
        if (c > 0x10ffff) {
            *bad_at = start;
            return "code point above U+10FFFF";
        }
        if (c <= 0x9f) {
            *bad_at = start;
            return "control character";
        }
        i = start + 1 + ncont;
    }
    return NULL;
}

size_t stream_category_len(const char *stream, size_t len)
{
    const char *dash = memchr(stream, '-', len);
    return dash && dash != stream ? (size_t)(dash - stream) : len;
}

int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
