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
    if (expected == STELE_DELETED) return "deleted";
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

int expect_multi_check(int64_t e, const expect_stream *st, int writes)
{
    if (st->tombstoned)
        return writes || (e != STELE_ANY && e != STELE_NO_STREAM) ? STELE_EDELETED : 0;
    if (e == STELE_NO_STREAM)
        return st->exists ? STELE_EWRONGREV : 0;
    if (e == STELE_STREAM_EXISTS)
        return st->soft_deleted ? STELE_EDELETED : !st->exists ? STELE_EWRONGREV : 0;
    if (e == STELE_DELETED)
        return st->soft_deleted ? 0 : STELE_EWRONGREV;
    if (e >= 0)
        return (st->exists || st->soft_deleted) && st->cur == (uint64_t)e ? 0 : STELE_EWRONGREV;
    return 0;
}

int expect_multi_fail(int rc, size_t i, const char *stream, size_t len, int64_t e,
                      const expect_stream *st)
{
    char eb[32], cb[64];
    const char *state = st->tombstoned     ? "is tombstoned"
                        : st->soft_deleted ? "is soft-deleted"
                        : st->exists       ? "is at revision"
                                           : "has no events";
    cb[0] = 0;
    if (st->exists)
        snprintf(cb, sizeof cb, " %llu", (unsigned long long)st->cur);
    else if (st->soft_deleted)
        snprintf(cb, sizeof cb, " (its last revision was %llu)", (unsigned long long)st->cur);
    return err_set(rc, "stream %zu '%.*s': expected %s, but the stream %s%s", i, (int)len, stream,
                   expect_text(e, eb, sizeof eb), state, cb);
}
