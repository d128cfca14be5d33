/*
 * assert.c - the one place a failed STELE_ASSERT goes (util/assert.h).
 *
 * The message is formatted into one buffer and written with a single
 * write(2), so lines from several failing threads never interleave and no
 * stdio lock (which the failing thread may hold) is taken; then abort()
 * raises SIGABRT, which leaves a core dump where the system keeps them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "util/assert.h"

void assert_fail(const char *expr, const char *file, int line, const char *func)
{
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "stele: assertion failed: %s:%d: %s: %s\n", file, line,
                     func, expr);
    if (n > (int)sizeof msg - 1)
        n = (int)sizeof msg - 1;
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, msg, (size_t)n);
        (void)w;
    }
    abort();
}
