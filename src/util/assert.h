/*
 * assert.h - executable invariants (STYLE.md, "Assertions as executable
 * invariants"; the habits of SQLite's pager and TigerBeetle).
 *
 *   STELE_ASSERT(cond)        always compiled in, in every build type: for
 *                             cheap invariants (a comparison or two) on
 *                             paths where a broken invariant would write
 *                             wrong data or acknowledge what is not there.
 *   STELE_DEBUG_ASSERT(cond)  compiled in Debug builds (and so in the CI's
 *                             ASan+UBSan build) or with -DSTELE_DEBUG_ASSERTS;
 *                             for expensive checks (a walk over a group, a
 *                             page, a buffer). Otherwise the expression is
 *                             type-checked but never evaluated.
 *
 * A failed assertion prints "stele: assertion failed: FILE:LINE: FUNC:
 * EXPR" on stderr and calls abort(): the process stops before a broken
 * invariant reaches the log, the index or a client, and the store recovers
 * at the next open as after any crash.
 *
 * An assertion states what the code itself guarantees: a writer's plan,
 * an index entry this engine wrote, a backend's precondition that the API
 * edge (src/store) has already checked. Anything input can reach (a
 * request, a record read back from disk, a file someone else wrote) is an
 * error with a message, never an assertion. Where possible assert in pairs:
 * before writing a structure and after reading it back.
 */
#ifndef STELE_ASSERT_H
#define STELE_ASSERT_H

/* Print where and what failed, then abort(). Not for direct use. */
__attribute__((noreturn, cold)) void assert_fail(const char *expr, const char *file, int line,
                                                 const char *func);

#define STELE_ASSERT(cond)                                                                      \
    (__builtin_expect(!!(cond), 1) ? (void)0 : assert_fail(#cond, __FILE__, __LINE__, __func__))

#if defined(STELE_DEBUG_ASSERTS) || !defined(NDEBUG)
#define STELE_DEBUG_ASSERTS_ON 1
#define STELE_DEBUG_ASSERT(cond) STELE_ASSERT(cond)
#else
#define STELE_DEBUG_ASSERTS_ON 0
#define STELE_DEBUG_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

#endif
