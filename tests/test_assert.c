/*
 * test_assert.c - the assertion macros (src/util/assert.h) and one of the
 * engine's invariants firing.
 *
 *   - STELE_ASSERT of a true expression does nothing and evaluates it once;
 *     of a false one it prints "stele: assertion failed: FILE:LINE: FUNC:
 *     EXPR" and the process dies of SIGABRT (run in a forked child, stderr
 *     caught through a pipe);
 *   - STELE_DEBUG_ASSERT does the same in a debug build (NDEBUG unset, as
 *     in the ASan build) and never evaluates its expression otherwise;
 *   - the writer's "positions continue the checkpoint" assertion: a child
 *     opens a store, moves the writer's next position behind its back (as a
 *     bug in planning would), appends, and must die of SIGABRT naming that
 *     assertion, with nothing written: the store reopens with its events
 *     intact and `stele check` passes.
 */
#include "testutil.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/local_int.h"
#include "store/store_int.h"
#include "util/assert.h"

static int evaluations;

static int count(int v)
{
    evaluations++;
    return v;
}

/* Run fn in a child with stderr into a pipe: its wait status, and up to
 * `cap` bytes of what it wrote to stderr. */
static int in_child(void (*fn)(void *), void *arg, char *err, size_t cap)
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], STDERR_FILENO);
        fn(arg);
        _exit(0);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(p[0], err + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    err[n] = 0;
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

static int died_of_abort(int status)
{
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static const int fail_always_line = __LINE__ + 4; /* the STELE_ASSERT below */
static void fail_always(void *arg)
{
    int x = *(int *)arg;
    STELE_ASSERT(x == 2);
}

static void fail_debug(void *arg)
{
    int x = *(int *)arg;
    STELE_DEBUG_ASSERT(x == 2 && count(1));
}

static void test_macros(void)
{
    evaluations = 0;
    STELE_ASSERT(count(1));
    CHECK(evaluations == 1);

    int one = 1;
    char err[2048], want[256];
    int st = in_child(fail_always, &one, err, sizeof err);
    CHECK(died_of_abort(st));
    snprintf(want, sizeof want, "test_assert.c:%d: fail_always: x == 2\n", fail_always_line);
    CHECK(strstr(err, "stele: assertion failed: ") == err);
    CHECK(strstr(err, want) != NULL);

    evaluations = 0;
    STELE_DEBUG_ASSERT(count(1));
    st = in_child(fail_debug, &one, err, sizeof err);
#if STELE_DEBUG_ASSERTS_ON
    CHECK(evaluations == 1);
    CHECK(died_of_abort(st));
    CHECK(strstr(err, ": fail_debug: x == 2 && count(1)\n") != NULL);
#else
    CHECK(evaluations == 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && err[0] == 0);
#endif
}

/* ------------------------------------------------ an engine invariant */

static const char *g_dir;

static int append_one(stele_db *db, int64_t expected)
{
    stele_event_in ev = {.type = "Tick", .data = "{}", .data_len = 2};
    return stele_append(db, "Clock-1", expected, &ev, 1, NULL);
}

static void break_the_writer(void *arg)
{
    (void)arg;
    stele_db *db;
    if (stele_open(g_dir, NULL, &db) != 0)
        _exit(3);
    /* A planning bug: the writer's next position no longer continues what
     * was published. The writer is idle, waiting for the queue's lock,
     * which this append takes after the change. */
    local *L = (local *)db->be;
    L->ck.next_pos -= 1;
    append_one(db, 2);
    _exit(4); /* not reached: the writer aborts the process */
}

static void test_writer_invariant(void)
{
    g_dir = t_tmpdir("assert");
    stele_db *db;
    CHECK_OK(stele_open(g_dir, NULL, &db));
    CHECK_OK(append_one(db, STELE_NO_STREAM));
    CHECK_OK(append_one(db, 0));
    CHECK_OK(append_one(db, 1));
    stele_close(db);

    char err[2048];
    int st = in_child(break_the_writer, NULL, err, sizeof err);
    CHECK(died_of_abort(st));
    CHECK(strstr(err, "stele: assertion failed: ") != NULL);
    CHECK(strstr(err, "before.next_pos ==") != NULL && strstr(err, "pub_next_pos") != NULL);

    /* Nothing of the bad group reached the log: the store is as before. */
    CHECK_OK(stele_open(g_dir, NULL, &db));
    stele_page *pg = NULL;
    CHECK_OK(stele_read_all(db, 0, 0, 100, &pg));
    CHECK(pg && stele_page_count(pg) == 3);
    for (size_t i = 0; pg && i < stele_page_count(pg); i++)
        CHECK(stele_page_event(pg, i)->position == i);
    stele_page_free(pg);
    CHECK_OK(append_one(db, 2));
    stele_close(db);
    char report[4096];
    CHECK_OK(stele_check(g_dir, report, sizeof report));
    t_rmdir(g_dir);
}

int main(void)
{
    t_seed();
    int passed = 0;
    test_macros();
    passed++;
    test_writer_invariant();
    passed++;
    return t_done("test_assert", passed);
}
