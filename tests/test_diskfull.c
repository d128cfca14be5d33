/*
 * test_diskfull.c - running out of space for a new log segment, through the
 * os/ fault layer (OS_FAULT_ENOSPC on the next segment's file): the
 * preallocation fails, and that is not a storage fault (docs/limits.md,
 * "Disk full"; src/backend/local.c, "Running out of space").
 *
 *   writer   an append that needs a new segment gets STELE_ENOSPC; no file
 *            of the failed segment is left; stats say read-only with
 *            readonly_code ENOSPC; reads return exactly the acknowledged
 *            events; once the fault is lifted ("space is back") appends
 *            succeed again without reopening, and a reopen finds them all;
 *   open     a store whose log ends in a sealed segment (the append that
 *            sealed it could not make the next one), reopened while the
 *            next segment cannot be made (and no spare is there): stele_open
 *            returns 0, stele_errmsg() says read-only, reads work, appends
 *            get STELE_ENOSPC; lifting the fault lets appends resume; a
 *            reopen then finds everything and `stele check` passes.
 *
 * Segments are 64 KiB and the append that rolls is bigger than a segment,
 * so the writer makes that segment itself (a spare is only ever one
 * segment long), at a path the fault can name.
 */
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "os/os.h"

#define SEG (64u * 1024u)
#define SMALL 3000
#define BIG (100u * 1024u)

static uint8_t payload[BIG];

static int append_n(stele_db *db, const char *stream, size_t len)
{
    stele_event_in ev = {.type = "T", .data = payload, .data_len = len};
    return stele_append(db, stream, STELE_ANY, &ev, 1, NULL);
}

static size_t count(stele_db *db, const char *stream)
{
    stele_page *pg;
    if (stele_read_stream(db, stream, 0, STELE_FORWARDS, 100000, &pg))
        return (size_t)-1;
    size_t n = stele_page_count(pg);
    stele_page_free(pg);
    return n;
}

static int exists(const char *dir, const char *name)
{
    char p[512];
    struct stat sb;
    snprintf(p, sizeof p, "%s/log/%s", dir, name);
    return stat(p, &sb) == 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Append until it succeeds (the store tries a new segment at most once a
 * second while out of space); the return code of the last try. */
static int append_until_ok(stele_db *db, const char *stream)
{
    int rc = STELE_ENOSPC;
    for (int i = 0; i < 300 && rc == STELE_ENOSPC; i++) {
        rc = append_n(db, stream, BIG);
        if (rc == STELE_ENOSPC)
            sleep_ms(100);
    }
    return rc;
}

static void readonly_for_space(stele_db *db, int want)
{
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(st.readonly == want);
    if (want) {
        CHECK(st.readonly_code == STELE_ENOSPC);
        CHECK(strstr(st.readonly_reason, "read-only") != NULL);
    }
}

int main(void)
{
    memset(payload, 'x', sizeof payload);
    const char *dir = t_tmpdir("diskfull");
    stele_options o = {.segment_size = SEG};
    stele_db *db;

    /* ---- writer: the roll to segment 1 cannot make it */
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    CHECK_OK(stele_open(dir, &o, &db));
    os_fault_arm(OS_FAULT_ENOSPC, "00000001.seg", 0, 0);
    size_t acked = 0;
    for (int i = 0; i < 10; i++) {
        CHECK_OK(append_n(db, "s", SMALL));
        acked++;
    }
    CHECK_RC(append_n(db, "s", BIG), STELE_ENOSPC);
    CHECK(strstr(stele_errmsg(), "read-only") != NULL);
    CHECK(os_fault_fired() >= 1);
    CHECK(!exists(dir, "00000001.seg")); /* the partial file was removed */
    CHECK(!exists(dir, "spare.tmp"));
    readonly_for_space(db, 1);
    CHECK(count(db, "s") == acked);
    /* Still no space: still ENOSPC (not EREADONLY: not sticky). */
    CHECK_RC(append_n(db, "s", BIG), STELE_ENOSPC);
    os_fault_reset(); /* space is back */
    CHECK_OK(append_until_ok(db, "s"));
    acked++;
    CHECK(exists(dir, "00000001.seg"));
    readonly_for_space(db, 0);
    CHECK_OK(append_n(db, "s", SMALL));
    acked++;
    CHECK(count(db, "s") == acked);
    stele_close(db);
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    CHECK_OK(stele_open(dir, &o, &db));
    CHECK(count(db, "s") == acked);
    readonly_for_space(db, 0);

    /* ---- open: the big append seals the last segment and cannot make
     * the next one; the store is then reopened without room for it. */
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    char next[32];
    snprintf(next, sizeof next, "%08llu.seg", (unsigned long long)st.segments);
    os_fault_arm(OS_FAULT_ENOSPC, next, 0, 0);
    CHECK_RC(append_n(db, "s", BIG), STELE_ENOSPC);
    CHECK(!exists(dir, next));
    CHECK(os_fault_fired() >= 1);
    stele_close(db);
    /* No spare either: the open must make the next segment itself. */
    char spare[512];
    snprintf(spare, sizeof spare, "%s/log/spare.zero", dir);
    unlink(spare);
    os_fault_arm(OS_FAULT_ENOSPC, next, 0, 0);
    CHECK_OK(stele_open(dir, &o, &db));
    CHECK(strstr(stele_errmsg(), "opened read-only") != NULL);
    printf("open without room: %s\n", stele_errmsg());
    CHECK(!exists(dir, next));
    readonly_for_space(db, 1);
    CHECK(count(db, "s") == acked);
    /* BIG again: a spare the helper makes meanwhile cannot hold it, so the
     * writer makes the segment itself, where the fault is. */
    CHECK_RC(append_n(db, "s", BIG), STELE_ENOSPC);
    CHECK(strstr(stele_errmsg(), "read-only") != NULL);
    CHECK_RC(append_n(db, "s", BIG), STELE_ENOSPC); /* not sticky: not EREADONLY */
    CHECK(!exists(dir, next));
    /* Closed while out of space (the checkpoint names the missing
     * segment): `stele check` finds nothing wrong, and it opens read-only
     * again with every event. */
    stele_close(db);
    char report[512];
    CHECK_OK(stele_check(dir, report, sizeof report));
    unlink(spare);
    CHECK_OK(stele_open(dir, &o, &db));
    CHECK(strstr(stele_errmsg(), "opened read-only") != NULL);
    CHECK(count(db, "s") == acked);
    CHECK_RC(append_n(db, "s", BIG), STELE_ENOSPC);
    os_fault_reset();
    CHECK_OK(append_until_ok(db, "s"));
    acked++;
    readonly_for_space(db, 0);
    CHECK(exists(dir, next));
    CHECK_OK(append_n(db, "s", SMALL));
    acked++;
    stele_close(db);

    CHECK_OK(stele_open(dir, &o, &db));
    CHECK(count(db, "s") == acked);
    readonly_for_space(db, 0);
    CHECK_OK(append_n(db, "s", SMALL));
    stele_close(db);
    CHECK_OK(stele_check(dir, report, sizeof report));
    t_rmdir(dir);
    return t_done("test_diskfull", 1);
}
