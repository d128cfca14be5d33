#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Atomic int t_failures;
static _Atomic uint64_t rng_state = 88172645463325252ull;

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

static const char *store_template(void)
{
    const char *t = getenv("STELE_TEST_STORE");
    return t && *t ? t : NULL;
}

int t_store_is_local(void)
{
    const char *t = store_template();
    /* A plain directory template: the local engine's files are at hand. A
     * file: URI is the local engine too, but is treated as any backend's
     * URI (tests/contract/local.sh runs the suite that way). */
    return !t || (!strstr(t, "://") && strncmp(t, "file:", 5) != 0);
}

int t_store_check(const char *uri, char *report, size_t report_len)
{
    if (t_store_is_local())
        return stele_check(uri, report, report_len);
    if (report && report_len)
        report[0] = 0;
    return 0;
}

const char *t_store(const char *tag)
{
    const char *t = store_template();
    if (!t)
        return t_tmpdir(tag);
    static char slots[8][1024];
    static int next, serial;
    char *p = slots[next++ % 8];
    char name[96];
    int n = snprintf(name, sizeof name, "%s_%ld_%d", tag, (long)getpid(), serial++);
    for (int i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9')))
            name[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] + 32) : '_';
    size_t o = 0;
    for (const char *q = t; *q && o + sizeof name < 1024;) {
        if (q[0] == '{' && q[1] == '}') {
            o += (size_t)snprintf(p + o, 1024 - o, "%s", name);
            q += 2;
        } else {
            p[o++] = *q++;
        }
    }
    p[o] = 0;
    if (!strstr(t, "{}")) {
        fprintf(stderr, "STELE_TEST_STORE must contain {} (a fresh store per case): %s\n", t);
        abort();
    }
    return p;
}

void t_store_drop(const char *uri)
{
    const char *drop = getenv("STELE_TEST_STORE_DROP");
    if (!drop && t_store_is_local()) {
        t_rmdir(uri);
        return;
    }
    if (!drop || getenv("TEST_KEEP_DIRS"))
        return;
    /* The command sees the URI as $1; neither goes through quoting. */
    setenv("STELE_TEST_DROP_URI", uri, 1);
    if (system("sh -c \"$STELE_TEST_STORE_DROP\" drop \"$STELE_TEST_DROP_URI\"") != 0)
        fprintf(stderr, "warning: STELE_TEST_STORE_DROP failed for %s\n", uri);
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
    uint64_t old = atomic_load_explicit(&rng_state, memory_order_relaxed), x;
    do {
        x = old;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    } while (!atomic_compare_exchange_weak_explicit(&rng_state, &old, x, memory_order_relaxed,
                                                    memory_order_relaxed));
    return x;
}

uint64_t t_rand_below(uint64_t n) { return n ? t_rand() % n : 0; }

int t_done(const char *name, int passed)
{
    printf("%s: %d passed, %d failed\n", name, passed, t_failures);
    return t_failures ? 1 : 0;
}
