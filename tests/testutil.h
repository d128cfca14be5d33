/*
 * testutil.h - the little harness every test uses: CHECK macros that print
 * file:line and the failed expression, temporary store directories, and a
 * seeded PRNG so a failing random test can be replayed (TEST_SEED=n).
 */
#ifndef STELE_TESTUTIL_H
#define STELE_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "stele.h"

extern int t_failures;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            t_failures++;                                                        \
            t_fail_hook();                                                       \
        }                                                                        \
    } while (0)

/* Expect a libstele call to return `want`; prints both codes and the
 * thread's error message when it does not. */
#define CHECK_RC(call, want)                                                     \
    do {                                                                         \
        int rc_ = (call);                                                        \
        if (rc_ != (want)) {                                                     \
            fprintf(stderr, "%s:%d: %s returned %d (%s: %s), want %d (%s)\n",    \
                    __FILE__, __LINE__, #call, rc_, stele_errname(rc_),          \
                    stele_errmsg(), (want), stele_errname(want));                \
            t_failures++;                                                        \
            t_fail_hook();                                                       \
        }                                                                        \
    } while (0)

#define CHECK_OK(call) CHECK_RC(call, 0)

/* Called on each failure: aborts unless TEST_KEEP_GOING is set, so the first
 * failure is the one reported. */
void t_fail_hook(void);

/* A fresh empty directory under $TMPDIR (or /tmp); removed by t_rmdir. The
 * returned string is static storage of up to 8 slots. */
const char *t_tmpdir(const char *tag);
void t_rmdir(const char *path);

/* Seeded xorshift PRNG. t_seed() reads TEST_SEED or uses the time, prints
 * the seed, and returns it. */
uint64_t t_seed(void);
uint64_t t_rand(void);
uint64_t t_rand_below(uint64_t n);

/* Print "name: N passed, 0 failed" and return the exit code. */
int t_done(const char *name, int passed);

#endif
