/*
 * test_proj_gaps.c - the projection features that closed issue 12's gaps:
 * the handler time limit counts CPU time, not time spent waiting;
 * fromStreamsMatching; options() that act or are refused; $deleted;
 * scavenging of superseded state events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proj/js.h"
#include "testutil.h"

static int passed;

/* ------------------------------------------------------------ CPU time */

static int sleeps;

static void sleepy_log(void *ctx, const char *msg, size_t len)
{
    (void)ctx;
    (void)msg;
    (void)len;
    struct timespec ts = {0, 400 * 1000000L};
    nanosleep(&ts, NULL);
    sleeps++;
}

static int no_load(void *ctx, const char *key, size_t klen, int shared, buf *out, uint64_t *pos,
                   int *found)
{
    (void)ctx, (void)key, (void)klen, (void)shared, (void)out, (void)pos;
    *found = 0;
    return 0;
}

static int no_emit(void *ctx, const proj_emit *e)
{
    (void)ctx, (void)e;
    return err_set(STELE_EINVAL, "no emit here");
}

/* A handler that waits 1.2 s in total (three log() calls whose callback
 * sleeps: no CPU used) between stretches of work long enough to reach the
 * engine's time checks, under a 300 ms limit: it completes, because the
 * limit counts CPU time. The same runtime then faults an endless loop. */
static void test_cpu_time_limit(void)
{
    static const char q[] =
        "fromAll().when({$init: function(){ return {n: 0}; },\n"
        "  Slow: function(s, e){ var x = 0;\n"
        "    for (var r = 0; r < 3; r++) { for (var i = 0; i < 150000; i++) x += i; log('w'); }\n"
        "    for (var j = 0; j < 150000; j++) x += j; s.n++; },\n"
        "  Loop: function(s, e){ for (;;) {} }});";
    proj_js_cb cb = {.load = no_load, .emit = no_emit, .log = sleepy_log};
    proj_js *js;
    char err[1024];
    /* Under valgrind (TEST_QUICK) the loops run ~50x slower: give the
     * CPU limit room for them; the 1.2 s of sleep still exceeds the
     * wall-clock time a wall-clock limit of 300 ms would allow. */
    uint32_t limit = getenv("TEST_QUICK") ? 1000 : 300;
    CHECK_OK(proj_js_new(q, strlen(q), 16u << 20, limit, &cb, &js, err, sizeof err));
    stele_event e;
    memset(&e, 0, sizeof e);
    e.stream = "S-1";
    e.stream_len = 3;
    e.type = "Slow";
    e.type_len = 4;
    e.data = "{}";
    e.data_len = 2;
    e.flags = STELE_EVENT_JSON;
    int handled;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = proj_js_event(js, &e, &handled, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (rc)
        fprintf(stderr, "slow handler faulted after %.0f ms: %s\n", wall_ms, err);
    CHECK(rc == 0);
    CHECK(handled);
    CHECK(sleeps == 3);
    CHECK(wall_ms > limit); /* it did outlast the limit on the wall clock */
    buf b = {0};
    CHECK_OK(proj_js_state(js, "", 0, 0, &b, err, sizeof err));
    CHECK(b.len == 7 && !memcmp(b.p, "{\"n\":1}", 7));
    buf_free(&b);
    e.type = "Loop";
    e.type_len = 4;
    CHECK_RC(proj_js_event(js, &e, &handled, err, sizeof err), STELE_EINVAL);
    CHECK(strstr(err, "execution timeout") != NULL);
    CHECK(strstr(err, "CPU time") != NULL);
    proj_js_free(js);
    passed++;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    t_seed();
    test_cpu_time_limit();
    return t_done("test_proj_gaps", passed);
}
