/*
 * buf.c - a growable byte array. A zeroed `buf` is empty and valid; the
 * capacity grows geometrically (doubling, from 64 bytes) so appending n
 * bytes one piece at a time costs O(n) copies overall. Invariant: len <=
 * cap, and p is NULL exactly when cap is 0. On allocation failure the buffer
 * is left as it was and the thread's error message says how much was asked
 * for.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stele.h"
#include "util/util.h"

#define BUF_MIN_CAP 64

int buf_reserve(buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX - b->len)
        return err_set(STELE_ENOMEM, "buffer of %zu + %zu bytes is too large",
                       b->len, extra);
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return err_set(STELE_ENOMEM, "out of memory growing a buffer to %zu bytes", cap);
    b->p = p;
    b->cap = cap;
    return 0;
}

int buf_append(buf *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

void buf_free(buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}
