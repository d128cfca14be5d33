/*
 * test_pipeline.c - the local writer's pipeline (src/backend/local.c, "The
 * pipeline"; docs/architecture.md): group N+1 is planned, encoded, written
 * and indexed while group N's fdatasync is in flight, and nothing of a
 * group is acknowledged or shown to readers before that fdatasync returns.
 *
 * An os_io table of the test's own holds the fdatasync of the first log
 * segment at a gate (no timing: the test opens the gate itself):
 *
 *   overlap   with B's fdatasync held, an append C is written to the segment
 *             (its pwrite happens; the old writer could not do that before
 *             B's fdatasync returned), while neither B nor C is acknowledged,
 *             stats count only the durable events and a reader waits; once
 *             the gate opens, both succeed and the reader sees B;
 *   failure   the held fdatasync returns EIO: D fails with EIO, E (written
 *             behind it) does not succeed, reads show exactly the events
 *             acknowledged before (D's stream has no head), stele.lock says
 *             "open fault" after close, and the reopened store (its index
 *             rebuilt from the log) has every acknowledged event, gapless.
 *
 * A wait for something that must happen (a pwrite, the gate being reached)
 * polls without a deadline: if it never happens, ctest's timeout fails the
 * test. A check that something has not happened yet cannot fail a correct
 * engine on a slow machine.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "os/os.h"

/* ------------------------------------------------------------ the gate */

#define MAXFD 4096
static _Atomic int gated_fd = -1;     /* the first segment's descriptor */
static _Atomic int gate_armed;        /* hold the next fdatasync of gated_fd */
static _Atomic int gate_entered;      /* fdatasyncs that reached the gate */
static _Atomic int gate_result;       /* what the held fdatasync returns */
static _Atomic int seg_writes;        /* pwrites to gated_fd */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open_now;

static int g_open(const char *path, int flags, int mode)
{
    int fd = os_posix.open(path, flags, mode);
    const char *base = strrchr(path, '/');
    if (fd >= 0 && base && strcmp(base + 1, "00000000.seg") == 0)
        atomic_store(&gated_fd, fd);
    return fd;
}

static ssize_t g_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
    if (fd == atomic_load(&gated_fd))
        atomic_fetch_add(&seg_writes, 1);
    return os_posix.pwrite(fd, buf, n, off);
}

static int g_fdatasync(int fd)
{
    if (fd == atomic_load(&gated_fd) && atomic_exchange(&gate_armed, 0)) {
        pthread_mutex_lock(&gate_mu);
        atomic_fetch_add(&gate_entered, 1);
        while (!gate_open_now)
            pthread_cond_wait(&gate_cv, &gate_mu);
        gate_open_now = 0;
        pthread_mutex_unlock(&gate_mu);
        int r = atomic_load(&gate_result);
        return r ? r : os_posix.fdatasync(fd);
    }
    return os_posix.fdatasync(fd);
}

static int g_close(int fd)
{
    int expected = fd;
    atomic_compare_exchange_strong(&gated_fd, &expected, -1);
    return os_posix.close(fd);
}

static os_ops gate_ops;

static void gate_arm(int result)
{
    atomic_store(&gate_result, result);
    atomic_store(&gate_entered, 0);
    atomic_store(&gate_armed, 1);
}

static void gate_release(void)
{
    pthread_mutex_lock(&gate_mu);
    gate_open_now = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static void wait_for(_Atomic int *v, int at_least)
{
    while (atomic_load(v) < at_least)
        usleep(1000);
}

/* ------------------------------------------------------------ helpers */

typedef struct job {
    stele_db *db;
    const char *stream;
    int64_t expected;
    int rc;
    _Atomic int done;
    size_t events; /* a reader: events of $all */
    int head_rc;   /* a reader: stele_stream_head of `stream` */
} job;

static void *append_job(void *arg)
{
    job *j = arg;
    char data[64];
    snprintf(data, sizeof data, "{\"stream\":\"%s\"}", j->stream);
    stele_event_in e = {.type = "Pipelined", .data = data, .data_len = strlen(data),
                        .flags = STELE_EVENT_JSON};
    j->rc = stele_append(j->db, j->stream, j->expected, &e, 1, NULL);
    atomic_store(&j->done, 1);
    return NULL;
}

static size_t count_all(stele_db *db)
{
    stele_page *pg = NULL;
    size_t n = 0;
    if (stele_read_all(db, 0, STELE_FORWARDS, 1000, &pg) == 0) {
        n = stele_page_count(pg);
        for (size_t i = 0; i < n; i++)
            CHECK(stele_page_event(pg, i)->position == i); /* gapless */
    }
    stele_page_free(pg);
    return n;
}

static void *read_job(void *arg)
{
    job *j = arg;
    j->events = count_all(j->db);
    stele_stream_info info;
    j->head_rc = stele_stream_head(j->db, j->stream, &info);
    atomic_store(&j->done, 1);
    return NULL;
}

static void start(pthread_t *t, void *(*fn)(void *), job *j)
{
    CHECK(pthread_create(t, NULL, fn, j) == 0);
}

/* ------------------------------------------------------------ the cases */

static void overlap_and_failure(void)
{
    const char *dir = t_tmpdir("pipeline");
    stele_db *db = NULL;
    stele_options o = {0};
    CHECK_OK(stele_open(dir, &o, &db));
    if (!db)
        return;
    CHECK(atomic_load(&gated_fd) >= 0);
    job a = {.db = db, .stream = "s-a", .expected = STELE_NO_STREAM};
    append_job(&a);
    CHECK_OK(a.rc);

    /* overlap: B's fdatasync held, C written behind it. */
    gate_arm(0);
    int writes = atomic_load(&seg_writes);
    job b = {.db = db, .stream = "s-b", .expected = STELE_NO_STREAM};
    job c = {.db = db, .stream = "s-c", .expected = STELE_NO_STREAM};
    job r = {.db = db, .stream = "s-b"};
    pthread_t tb, tc, tr;
    start(&tb, append_job, &b);
    wait_for(&gate_entered, 1);
    start(&tc, append_job, &c);
    wait_for(&seg_writes, writes + 2); /* B's write and C's */
    CHECK(!atomic_load(&b.done));
    CHECK(!atomic_load(&c.done));
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(st.events == 1);
    start(&tr, read_job, &r);
    usleep(20000);
    CHECK(!atomic_load(&r.done)); /* its snapshot holds B: it waits */
    gate_release();
    pthread_join(tb, NULL);
    pthread_join(tc, NULL);
    pthread_join(tr, NULL);
    CHECK_OK(b.rc);
    CHECK_OK(c.rc);
    CHECK(r.events >= 2);
    CHECK_OK(r.head_rc);
    CHECK(count_all(db) == 3);

    /* failure: D's fdatasync fails; E was written behind it. */
    gate_arm(-EIO);
    writes = atomic_load(&seg_writes);
    job d = {.db = db, .stream = "s-d", .expected = STELE_NO_STREAM};
    job e = {.db = db, .stream = "s-e", .expected = STELE_NO_STREAM};
    pthread_t td, te;
    start(&td, append_job, &d);
    wait_for(&gate_entered, 1);
    start(&te, append_job, &e);
    wait_for(&seg_writes, writes + 2);
    gate_release();
    pthread_join(td, NULL);
    pthread_join(te, NULL);
    CHECK_RC(d.rc, STELE_EIO);
    CHECK(e.rc == STELE_EIO || e.rc == STELE_EREADONLY);
    /* Reads show exactly what was acknowledged. */
    CHECK(count_all(db) == 3);
    stele_stream_info info;
    CHECK_RC(stele_stream_head(db, "s-d", &info), STELE_ENOTFOUND);
    CHECK_RC(stele_stream_head(db, "s-e", &info), STELE_ENOTFOUND);
    CHECK_OK(stele_stream_head(db, "s-c", &info));
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(st.events == 3 && st.readonly);
    stele_close(db);

    /* The next open rebuilds the index from the log. */
    char path[4200], marker[64] = "";
    snprintf(path, sizeof path, "%s/stele.lock", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (f) {
        CHECK(fgets(marker, sizeof marker, f) != NULL);
        fclose(f);
    }
    CHECK(strncmp(marker, "open fault", 10) == 0);
    os_io = &os_posix;
    db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    if (db) {
        size_t n = count_all(db); /* D and E may survive whole: not acknowledged */
        CHECK(n >= 3 && n <= 5);
        CHECK_OK(stele_stream_head(db, "s-a", &info));
        CHECK_OK(stele_stream_head(db, "s-b", &info));
        CHECK_OK(stele_stream_head(db, "s-c", &info));
        job g = {.db = db, .stream = "s-g", .expected = STELE_NO_STREAM};
        append_job(&g);
        CHECK_OK(g.rc);
        CHECK(count_all(db) == n + 1);
        stele_close(db);
    }
    t_rmdir(dir);
}

int main(void)
{
    gate_ops = os_posix;
    gate_ops.open = g_open;
    gate_ops.pwrite = g_pwrite;
    gate_ops.fdatasync = g_fdatasync;
    gate_ops.close = g_close;
    os_io = &gate_ops;
    overlap_and_failure();
    return t_done("test_pipeline", t_failures == 0);
}
