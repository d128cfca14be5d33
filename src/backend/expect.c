/*
 * expect.c - expected revisions (expect.h): the check and its messages,
 * shared by every backend. The store's API edge has validated `expected`
 * already; a revision is compared with the stream's last visible one.
 */
#include "backend/expect.h"

#include <stdio.h>

#include "stele.h"
#include "util/util.h"

int expect_ok(int64_t expected, uint64_t cur)
{
    switch (expected) {
    case STELE_ANY: return 1;
    case STELE_NO_STREAM: return cur == STELE_NONE;
    case STELE_STREAM_EXISTS: return cur != STELE_NONE;
    default: return cur != STELE_NONE && cur == (uint64_t)expected;
    }
}

const char *expect_text(int64_t expected, char *b, size_t n)
{
    if (expected == STELE_ANY) return "any";
    if (expected == STELE_NO_STREAM) return "no_stream";
    if (expected == STELE_STREAM_EXISTS) return "stream_exists";
    snprintf(b, n, "%lld", (long long)expected);
    return b;
}

int expect_wrong_rev(const char *stream, size_t len, int64_t expected, uint64_t cur)
{
    char eb[32];
    if (cur == STELE_NONE)
        return err_set(STELE_EWRONGREV,
                       "stream '%.*s': expected revision %s, but the stream has no events",
                       (int)len, stream, expect_text(expected, eb, sizeof eb));
    return err_set(STELE_EWRONGREV, "stream '%.*s': expected revision %s, but its revision is %llu",
                   (int)len, stream, expect_text(expected, eb, sizeof eb),
                   (unsigned long long)cur);
}
