/*
 * testutil.h - the little harness every test uses: CHECK macros that print
 * file:line and the failed expression, temporary store directories, and a
 * seeded PRNG so a failing random test can be replayed (TEST_SEED=n).
 */
#ifndef STELE_TESTUTIL_H
#define STELE_TESTUTIL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "stele.h"

/* Atomic: the CHECK macros run in writer and reader threads too (and the
 * ThreadSanitizer build, make test-tsan, would call a plain ++ a race). */
extern _Atomic int t_failures;

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

/*
 * The store a contract test runs on (docs/architecture.md, "The contract
 * test suite"). Without STELE_TEST_STORE: a fresh temporary directory, as
 * t_tmpdir. With STELE_TEST_STORE=TEMPLATE: the template with every "{}"
 * replaced by a name unique to this case (letters, digits and '_': "tag_
 * PID_N"), e.g. postgres://127.0.0.1:5433/stele?options=-csearch_path%3Dt_{}
 * or dynamodb://t_{}_?endpoint=...; a backend makes the store on first
 * open, empty. t_store_drop runs STELE_TEST_STORE_DROP (a shell command
 * that finds the URI in "$1") if set, else removes the directory of a
 * local store. t_store returns static storage of up to 8 slots.
 */
const char *t_store(const char *tag);
void t_store_drop(const char *uri);
/* 1 if the store is a plain directory (STELE_TEST_STORE unset, or a
 * directory template): cases that look at the local engine's files may
 * run. 0 for any URI, file: included. */
int t_store_is_local(void);
/* stele_check() on a local store; 0 (and an empty report) on another
 * backend, which its database checks. */
int t_store_check(const char *uri, char *report, size_t report_len);

/* Seeded xorshift PRNG. t_seed() reads TEST_SEED or uses the time, prints
 * the seed, and returns it. One state shared by every thread, advanced by
 * compare-and-swap so that threads drawing at once never race (the order in
 * which threads draw is not replayable; a single thread's run is). */
uint64_t t_seed(void);
uint64_t t_rand(void);
uint64_t t_rand_below(uint64_t n);

/* Print "name: N passed, 0 failed" and return the exit code. */
int t_done(const char *name, int passed);

#endif
