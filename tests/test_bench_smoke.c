/*
 * test_bench_smoke.c - keeps bench/bench_engine from rotting: runs every
 * workload once with tiny sizes (`bench_engine all ...`, a few seconds) and
 * checks that each expected result line appears with its numbers > 0.
 * It judges no timing: a slow machine passes, a broken benchmark fails.
 *
 * The binary is $STELE_BENCH if set, else ../bench/bench_engine next to this
 * test's own executable (the CMake build tree: build/tests/ and build/bench/).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static int find_bench(char *out, size_t n)
{
    const char *env = getenv("STELE_BENCH");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return access(out, X_OK) == 0 ? 0 : -1;
    }
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return -1;
    self[len] = 0;
    char *slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = 0;
    snprintf(out, n, "%s/../bench/bench_engine", self);
    return access(out, X_OK) == 0 ? 0 : -1;
}

/* Run the benchmark; its stdout into a malloc'd string. Returns the exit
 * status (or -1). */
static int run_bench(const char *bin, const char *dir, char **out)
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl(bin, bin, "all", "--dir", dir, "--events", "128", "--fsync-events", "100",
              "--store-events", "20000", "--store-streams", "200", "--reps", "5", "--secs",
              "0.5", (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    size_t len = 0, cap = 1 << 16;
    char *b = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            b = realloc(b, cap);
        }
        ssize_t n = read(p[0], b + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(p[0]);
    b[len] = 0;
    *out = b;
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The line starting with `name` and a space (optionally also containing
 * `must`), copied into line; 0 if found. */
static int find_line(const char *text, const char *name, const char *must, char *line, size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == ' ') {
            snprintf(line, n, "%.*s", (int)len, p);
            if (!must || strstr(line, must))
                return 0;
        }
        p = end ? end + 1 : NULL;
    }
    return -1;
}

/* Is `key=` in line followed by a number > 0? */
static int positive(const char *line, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, " %s=", key);
    const char *p = strstr(line, k);
    if (!p)
        return 0;
    char *end;
    double v = strtod(p + strlen(k), &end);
    return end != p + strlen(k) && v > 0;
}

static int expect(const char *out, const char *name, const char *must, const char *const *keys)
{
    char line[1024];
    if (find_line(out, name, must, line, sizeof line)) {
        fprintf(stderr, "no '%s%s%s' line in the benchmark's output\n", name, must ? " ... " : "",
                must ? must : "");
        CHECK(!"expected line present");
        return 0;
    }
    int ok = 1;
    for (const char *const *k = keys; *k; k++)
        if (!positive(line, *k)) {
            fprintf(stderr, "line '%s': %s is missing or not > 0\n", line, *k);
            ok = 0;
        }
    CHECK(ok);
    return ok;
}

int main(void)
{
    char bin[PATH_MAX + 64];
    if (find_bench(bin, sizeof bin)) {
        fprintf(stderr, "bench_engine not found (set STELE_BENCH, or build bench/): %s\n", bin);
        CHECK(!"bench_engine found");
        return t_done("test_bench_smoke", 0);
    }
    const char *dir = t_tmpdir("bench");
    char *out = NULL;
    int st = run_bench(bin, dir, &out);
    printf("%s", out ? out : "");
    CHECK(st == 0);
    int passed = 0;
    if (out) {
        static const char *const fsync_keys[] = {"writes", "prezeroed", "fresh", NULL};
        static const char *const vs_keys[] = {"events", "appends_per_s", "fsync_prezeroed_per_s",
                                              "ratio", "append_p50_us", "fsync_p50_us", NULL};
        static const char *const append_keys[] = {"events", "secs", "events_per_s",
                                                  "p50_us", "p99_us", "groups", NULL};
        static const char *const build_keys[] = {"events", "streams", "events_per_s", NULL};
        static const char *const read_keys[] = {"events_per_read", "events_per_s", "p50_us",
                                                "p99_us", NULL};
        static const char *const all_keys[] = {"events", "secs", "events_per_s", NULL};
        static const char *const open_keys[] = {"events", "streams", "secs", NULL};
        static const char *const kill_keys[] = {"events", "child_killed", "acked_events",
                                                "events_added_by_child", "secs", NULL};
        static const char *const mixed_keys[] = {"reads", "appends", "read_events_per_s",
                                                 "append_events_per_s", NULL};
        static const char *const mem_keys[] = {"vmrss_mib", "vmhwm_mib", "rss_anon_mib",
                                               "rss_file_mib", NULL};
        passed += expect(out, "fsync_raw", NULL, fsync_keys);
        passed += expect(out, "append_1x1_vs_fsync", "ids=server", vs_keys);
        passed += expect(out, "append_1x1_vs_fsync", "ids=client", vs_keys);
        passed += expect(out, "append_1x1", "ids=server", append_keys);
        passed += expect(out, "append_1x1_ids", "ids=client", append_keys);
        passed += expect(out, "append_64x1", "threads=64", append_keys);
        passed += expect(out, "append_64x1_ids", "ids=client", append_keys);
        passed += expect(out, "append_1x1000", "batch=1000", append_keys);
        passed += expect(out, "build_store", NULL, build_keys);
        passed += expect(out, "read_stream_1000x1", NULL, read_keys);
        passed += expect(out, "read_stream_10x100", NULL, read_keys);
        passed += expect(out, "read_all", NULL, all_keys);
        passed += expect(out, "open_clean", NULL, open_keys);
        passed += expect(out, "open_kill", NULL, kill_keys);
        passed += expect(out, "mixed", NULL, mixed_keys);
        passed += expect(out, "mem", "phase=mixed ", mem_keys);
        passed += expect(out, "mem", "phase=open_clean ", mem_keys);
    }
    free(out);
    t_rmdir(dir);
    return t_done("test_bench_smoke", passed);
}
