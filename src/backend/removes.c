/*
 * removes.c - the data and metadata of a delete's `$streamDeleted` event,
 * built the same way for every backend (removes.h).
 */
#include <stdio.h>
#include <string.h>

#include "backend/removes.h"
#include "log/record.h"
#include "stele.h"

size_t removes_cap(size_t len) { return 6 * len + 128 + REC_REMOVES_FIXED + len; }

void removes_build(uint8_t *out, const char *stream, size_t len, int tombstone, uint64_t cur,
                   uint64_t tb, size_t *data_len, size_t *meta_len)
{
    char *p = (char *)out;
    p += sprintf(p, "{\"streamId\":\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)stream[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20) {
            p += sprintf(p, "\\u%04x", c);
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    if (cur == STELE_NONE)
        p += sprintf(p, ",\"revision\":null");
    else
        p += sprintf(p, ",\"revision\":%llu", (unsigned long long)cur);
    if (tombstone)
        p += sprintf(p, ",\"truncateBefore\":null,\"tombstone\":true}");
    else
        p += sprintf(p, ",\"truncateBefore\":%llu,\"tombstone\":false}", (unsigned long long)tb);
    *data_len = (size_t)(p - (char *)out);
    rec_removes_encode((uint8_t *)p, tombstone ? REC_TOMBSTONE : REC_DELETE, tombstone ? 0 : tb,
                       cur, stream, len);
    *meta_len = REC_REMOVES_FIXED + len;
}
