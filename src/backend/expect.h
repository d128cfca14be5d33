/*
 * expect.h - expected revisions, the one rule every backend applies: whether
 * an expectation holds for a stream's current revision, how it is written in
 * messages, and the STELE_EWRONGREV message itself, so the local engine,
 * PostgreSQL and DynamoDB answer a conflict with the same words.
 */
#ifndef STELE_EXPECT_H
#define STELE_EXPECT_H

#include <stddef.h>
#include <stdint.h>

/* 1 if `expected` (a revision or STELE_ANY, STELE_NO_STREAM,
 * STELE_STREAM_EXISTS) holds for the current revision `cur` (STELE_NONE:
 * the stream has no visible events). */
int expect_ok(int64_t expected, uint64_t cur);

/* `expected` as messages write it ("any", "no_stream", "stream_exists" or
 * the number, formatted into b). */
const char *expect_text(int64_t expected, char *b, size_t n);

/* Sets STELE_EWRONGREV's message for `stream` and returns STELE_EWRONGREV. */
int expect_wrong_rev(const char *stream, size_t len, int64_t expected, uint64_t cur);

/* One stream of a multi-stream append as its backend found it. */
typedef struct expect_stream {
    int tombstoned;
    int soft_deleted; /* and not tombstoned */
    int exists;       /* has visible events */
    uint64_t cur;     /* last revision (a soft-deleted stream's too); STELE_NONE */
} expect_stream;

/* A multi-stream append's expectation `e` for one stream (KurrentDB's
 * table, docs/consistency.md; STELE_DELETED allowed), `writes` if the append
 * writes events to it: 0, STELE_EWRONGREV or STELE_EDELETED. */
int expect_multi_check(int64_t e, const expect_stream *st, int writes);

/* Sets the message of a failed expectation (rc from expect_multi_check) of
 * stream i of the append; returns rc. */
int expect_multi_fail(int rc, size_t i, const char *stream, size_t len, int64_t e,
                      const expect_stream *st);

#endif
