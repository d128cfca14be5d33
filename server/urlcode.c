/*
 * urlcode.c - percent-decoding of path segments and query parameters (see
 * urlcode.h). The only difference between the two is '+': a literal plus
 * in a path, a space in a query (HTML forms and `curl --data-urlencode`
 * encode spaces that way).
 */
#include "urlcode.h"

#include <string.h>

#include "stele.h"
#include "util/shared.h" /* hex_digit */

static int pct_decode(const char *in, size_t len, int plus_is_space, char *out, size_t outlen,
                  size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            int hi = i + 2 < len ? hex_digit(in[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(in[i + 2]) : -1;
            if (lo < 0 || (hi == 0 && lo == 0))
                return STELE_EINVAL;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == '\0') {
            return STELE_EINVAL;
        }
        if (o + 1 >= outlen)
            return STELE_ETOOBIG;
        out[o++] = c;
    }
    if (o >= outlen)
        return STELE_ETOOBIG;
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return 0;
}

int url_decode(const char *in, size_t len, char *out, size_t outlen, size_t *out_len)
{
    return pct_decode(in, len, 0, out, outlen, out_len);
}

/* Whether the encoded key k[0..n) decodes to `name`. */
static int query_key_is(const char *k, size_t n, const char *name)
{
    char tmp[128];
    size_t tn;
    if (pct_decode(k, n, 1, tmp, sizeof tmp, &tn) != 0)
        return 0;
    return tn == strlen(name) && memcmp(tmp, name, tn) == 0;
}

int query_get(const char *query, size_t len, const char *name, char *out, size_t outlen)
{
    if (outlen)
        out[0] = '\0';
    size_t i = 0;
    while (i < len) {
        const char *amp = memchr(query + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - query) : len;
        const char *eq = memchr(query + i, '=', end - i);
        size_t kend = eq ? (size_t)(eq - query) : end;
        if (end > i && query_key_is(query + i, kend - i, name)) {
            size_t v = eq ? kend + 1 : end;
            int rc = pct_decode(query + v, end - v, 1, out, outlen, NULL);
            if (rc) {
                if (outlen)
                    out[0] = '\0';
                return rc;
            }
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

int query_next(const char *query, size_t len, size_t *off, char *key, size_t keylen, char *val,
               size_t vallen)
{
    size_t i = *off;
    if (keylen)
        key[0] = '\0';
    if (vallen)
        val[0] = '\0';
    while (i < len && query[i] == '&')
        i++;
    if (i >= len) {
        *off = len;
        return 0;
    }
    const char *amp = memchr(query + i, '&', len - i);
    size_t end = amp ? (size_t)(amp - query) : len;
    const char *eq = memchr(query + i, '=', end - i);
    size_t kend = eq ? (size_t)(eq - query) : end;
    *off = end;
    int rc = pct_decode(query + i, kend - i, 1, key, keylen, NULL);
    if (rc) {
        if (keylen)
            key[0] = '\0';
        return rc;
    }
    size_t v = eq ? kend + 1 : end;
    rc = pct_decode(query + v, end - v, 1, val, vallen, NULL);
    if (rc) {
        if (vallen)
            val[0] = '\0';
        return rc;
    }
    return 1;
}

size_t url_encode(const char *in, size_t len, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (!outlen)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        int keep = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                   (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        size_t need = keep ? 1 : 3;
        if (o + need >= outlen)
            break;
        if (keep) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = 0;
    return o;
}

int url_path_split(const char *path, size_t len, const char **seg, size_t *seglen, size_t max)
{
    const char *p = path, *end = path + len;
    size_t n = 0;
    while (p <= end && n < max) {
        const char *sl = memchr(p, '/', (size_t)(end - p));
        if (!sl)
            sl = end;
        seg[n] = p;
        seglen[n++] = (size_t)(sl - p);
        p = sl + 1;
    }
    return p <= end ? -1 : (int)n;
}

int url_decode_name(const char *in, size_t len, char *out, size_t outlen)
{
    size_t n;
    return len == 0 || url_decode(in, len, out, outlen, &n) || memchr(out, 0, n) ? -1 : 0;
}
