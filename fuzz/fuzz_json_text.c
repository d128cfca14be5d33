/*
 * fuzz_json_text.c - the text level of JSON every Stele parser shares
 * (src/util/json_text.c): the validator, string unescaping, \u escapes
 * with surrogate pairs, UTF-8 sequences, and string escaping, checked
 * against each other:
 *   - jtext_escape of any bytes is always valid JSON (jtext_validate);
 *   - for bytes that are well-formed UTF-8, unescaping the escaped text
 *     gives the bytes back;
 *   - jtext_unescape never writes more than it read;
 *   - the UTF-8 sequence lengths tile the input, each re-encodable.
 * Input: any bytes, read as a JSON text, as a string's raw content, and as
 * a string value to escape.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/json_text.h"

/* 1 if s[0..n) is well-formed UTF-8 (per jtext_utf8_seq). */
static int utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = jtext_utf8_seq(s + i, n - i);
        if (k < 2 || k > 4 || k > n - i)
            return 0;
        i += k;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t at;
    const char *why;
    (void)jtext_validate(s, size, &at, &why);

    char *out = malloc(size + 1);
    if (!out)
        return 0;
    long n = jtext_unescape(s, size, out, size);
    if (n > (long)size)
        abort();
    if (size >= 2 && data[0] == '\\' && data[1] == 'u') {
        uint32_t cp;
        int k = jtext_u_escape(s, size, &cp);
        if (k > 0 && (cp > 0x10FFFF || (k != 6 && k != 12)))
            abort();
    }
    for (size_t i = 0; i < size;) {
        size_t k = data[i] < 0x80 ? 1 : jtext_utf8_seq(data + i, size - i);
        if (k == 0) {
            i++;
            continue;
        }
        i += k;
    }

    buf b = {0};
    if (jtext_escape(&b, s, size) == 0) {
        if (jtext_validate((const char *)b.p, b.len, &at, &why) != 0)
            abort(); /* the escaped form is always valid JSON */
        if (b.len < 2 || b.p[0] != '"' || b.p[b.len - 1] != '"')
            abort();
        if (utf8_ok(data, size)) {
            char *back = malloc(b.len);
            if (back) {
                long m = jtext_unescape((const char *)b.p + 1, b.len - 2, back, b.len);
                if (m != (long)size || memcmp(back, data, size) != 0)
                    abort(); /* escaping then unescaping gives the bytes back */
                free(back);
            }
        }
    }
    buf_free(&b);
    free(out);
    return 0;
}
