#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int t_failures;
static uint64_t rng_state = 88172645463325252ull;

void t_fail_hook(void)
{
    if (!getenv("TEST_KEEP_GOING"))
        abort();
}

const char *t_tmpdir(const char *tag)
{
    static char slots[8][512];
    static int next;
    char *p = slots[next++ % 8];
    const char *base = getenv("TMPDIR");
    snprintf(p, 512, "%s/stele-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        abort();
    }
    return p;
}

void t_rmdir(const char *path)
{
    char cmd[600];
    if (getenv("TEST_KEEP_DIRS"))
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", path);
}

uint64_t t_seed(void)
{
    const char *s = getenv("TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    if (seed == 0)
        seed = 1;
    rng_state = seed;
    printf("TEST_SEED=%llu\n", (unsigned long long)seed);
    fflush(stdout);
    return seed;
}

uint64_t t_rand(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

uint64_t t_rand_below(uint64_t n) { return n ? t_rand() % n : 0; }

int t_done(const char *name, int passed)
{
    printf("%s: %d passed, %d failed\n", name, passed, t_failures);
    return t_failures ? 1 : 0;
}
