/*
 * test_overlap.c - the writer's overlap (src/backend/local.c, "Overlap";
 * docs/architecture.md, "Overlapping the fdatasync"): a large group's
 * fdatasync runs on the syncer thread while the writer puts the group's
 * secondary index entries and folds its hash chain; the index commit, the
 * acknowledgement and the chain records' rewrite wait for the fdatasync.
 *
 *   adaptive     small groups are not overlapped, a group of
 *                STELE_OVERLAP_MIN bytes or more is, and "off" turns it off
 *                (local_overlap_groups counts the syncer's fdatasyncs; the
 *                default's second rule, fdatasyncs slower than a hand-off
 *                on average, is timing and not tested here);
 *                what was overlapped reads back and checks clean;
 *   sync fails   the fdatasync of an overlapped group fails (injected EIO,
 *                after the writer indexed and hashed the group in the
 *                window): the append fails with EIO, later ones are
 *                read-only, readers (stream, $all, the type index, ids) and
 *                the chain head show nothing of the group; after reopening
 *                the group is wholly present or wholly absent, and with its
 *                bytes taken away (what a kernel that dropped the unsynced
 *                pages would leave) exactly the acknowledged appends are
 *                there and the chain head is the one published before;
 *                `stele check` is clean either way and appends resume.
 *
 * The other tests run with every group overlapped too (tests/CMakeLists.txt
 * registers test_faults, test_crash, test_chain, test_recovery and
 * test_idx_ckpt again with STELE_OVERLAP_MIN=0).
 */
#include "testutil.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/local_int.h"
#include "os/os.h"

#define SEG (4u * 1024u * 1024u)
#define BIG 100 /* events of a large commit: about 30 KB, overlapped */

static int passed;

static stele_db *open_store(const char *dir)
{
    stele_options o = {0};
    o.segment_size = SEG;
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

/* Append n events of about 300 bytes of JSON (type "Big" or "Small") to
 * stream; ids made from (tag, i) so a test can look them up. */
static int append_n(stele_db *db, const char *stream, size_t n, uint32_t tag)
{
    static stele_event_in ev[BIG];
    static char data[BIG][320];
    static uint8_t ids[BIG][16];
    for (size_t i = 0; i < n; i++) {
        int l = snprintf(data[i], sizeof data[i], "{\"tag\":%u,\"i\":%zu,\"pad\":\"", tag, i);
        for (; l < 290; l++)
            data[i][l] = (char)('a' + (i + (size_t)l) % 26);
        data[i][l++] = '"';
        data[i][l++] = '}';
        data[i][l] = 0;
        memset(ids[i], 0, 16);
        memcpy(ids[i], &tag, sizeof tag);
        memcpy(ids[i] + 4, &i, sizeof i);
        ids[i][6] = 0x40; /* version 4 */
        ids[i][8] = 0x80; /* variant */
        ev[i] = (stele_event_in){.type = n >= BIG ? "Big" : "Small", .data = data[i],
                                 .data_len = (size_t)l, .flags = STELE_EVENT_JSON,
                                 .id = ids[i]};
    }
    return stele_append(db, stream, STELE_ANY, ev, n, NULL);
}

static uint64_t count_all(stele_db *db)
{
    uint64_t n = 0, from = 0;
    for (;;) {
        stele_page *pg = NULL;
        CHECK_OK(stele_read_all(db, from, STELE_FORWARDS, 1000, &pg));
        if (!pg)
            return n;
        size_t k = stele_page_count(pg);
        n += k;
        if (k)
            from = stele_page_event(pg, k - 1)->position + 1;
        stele_page_free(pg);
        if (k < 1000)
            return n;
    }
}

static uint64_t count_stream(stele_db *db, const char *stream)
{
    stele_page *pg = NULL;
    int rc = stele_read_stream(db, stream, 0, STELE_FORWARDS, 100000, &pg);
    if (rc == STELE_ENOTFOUND)
        return 0;
    CHECK_OK(rc);
    uint64_t n = pg ? stele_page_count(pg) : 0;
    stele_page_free(pg);
    return n;
}

static void check_clean(const char *dir)
{
    char report[4096];
    int rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "check %s: %s\n%s", dir, stele_errmsg(), report);
    CHECK_OK(rc);
}

static void test_adaptive(void)
{
    const char *dir = t_tmpdir("overlap");
    /* The default size, without the default's rule on fdatasync times
     * (which a tmpfs TMPDIR would trip: a performance choice, not
     * something a test may time). */
    setenv("STELE_OVERLAP_MIN", "8192", 1);
    stele_db *db = open_store(dir);
    if (!db)
        return;
    uint64_t before = atomic_load(&local_overlap_groups);
    for (int i = 0; i < 20; i++)
        CHECK_OK(append_n(db, "Small-1", 1, 1000 + (uint32_t)i));
    CHECK(atomic_load(&local_overlap_groups) == before); /* one event: not overlapped */
    for (int i = 0; i < 5; i++)
        CHECK_OK(append_n(db, "Big-1", BIG, 2000 + (uint32_t)i));
    uint64_t got = atomic_load(&local_overlap_groups) - before;
    if (got != 5)
        fprintf(stderr, "adaptive: %" PRIu64 " overlapped groups, want 5\n", got);
    CHECK(got == 5);
    CHECK(count_stream(db, "Big-1") == 5 * BIG);
    CHECK(count_stream(db, "$et-Big") == 5 * BIG); /* the overlapped secondary index */
    CHECK(count_all(db) == 20 + 5 * BIG);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == 25 && h.position == 20 + 5 * BIG);
    stele_close(db);
    check_clean(dir);

    /* Off: nothing goes to the syncer. */
    setenv("STELE_OVERLAP_MIN", "off", 1);
    db = open_store(dir);
    before = atomic_load(&local_overlap_groups);
    CHECK_OK(append_n(db, "Big-1", BIG, 3000));
    CHECK(atomic_load(&local_overlap_groups) == before);
    stele_close(db);
    /* 0: every group, one event too. */
    setenv("STELE_OVERLAP_MIN", "0", 1);
    db = open_store(dir);
    before = atomic_load(&local_overlap_groups);
    CHECK_OK(append_n(db, "Small-1", 1, 3001));
    CHECK(atomic_load(&local_overlap_groups) == before + 1);
    CHECK(count_stream(db, "Small-1") == 21);
    stele_close(db);
    unsetenv("STELE_OVERLAP_MIN");
    check_clean(dir);
    t_rmdir(dir);
    passed++;
    printf("  adaptive: small groups on the writer, large ones overlapped; off and 0 obeyed\n");
}

static int read_file(const char *path, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    struct stat sb;
    fstat(fd, &sb);
    *len = (size_t)sb.st_size;
    *out = malloc(*len ? *len : 1);
    ssize_t n = pread(fd, *out, *len, 0);
    close(fd);
    return n == (ssize_t)*len ? 0 : -1;
}

static int write_file(const char *path, const char *p, size_t len)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return -1;
    ssize_t n = pwrite(fd, p, len, 0);
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

/* drop: put the segment back as it was before the failed group (its pages
 * lost), else leave the failed group's bytes where they are. */
static void test_sync_fails(int drop)
{
    const char *what = drop ? "sync fails, group's pages dropped" : "sync fails, group's bytes kept";
    const char *dir = t_tmpdir("overlap");
    /* The default size, without the default's rule on fdatasync times
     * (which a tmpfs TMPDIR would trip: a performance choice, not
     * something a test may time). */
    setenv("STELE_OVERLAP_MIN", "8192", 1);
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    stele_db *db = open_store(dir);
    if (!db) {
        os_fault_reset();
        return;
    }
    for (int i = 0; i < 3; i++) {
        CHECK_OK(append_n(db, "Big-1", BIG, 100 + (uint32_t)i));
        CHECK_OK(append_n(db, "Small-1", 1, 200 + (uint32_t)i));
    }
    uint64_t acked = 3 * BIG + 3;
    /* The head waits for the groups acknowledged: their chain records are
     * rewritten, so the copy below is what a crash-free log holds. */
    stele_chain_head h1;
    CHECK_OK(stele_chain_get_head(db, &h1));
    CHECK(h1.commits == 6 && h1.position == acked);
    char seg[4200], *saved = NULL;
    size_t saved_len = 0;
    snprintf(seg, sizeof seg, "%s/log/00000000.seg", dir);
    CHECK(read_file(seg, &saved, &saved_len) == 0);

    uint64_t before = atomic_load(&local_overlap_groups);
    os_fault_arm(OS_FAULT_EIO_SYNC, ".seg", 0, 0);
    int rc = append_n(db, "Big-2", BIG, 300);
    CHECK_RC(rc, STELE_EIO);
    CHECK(os_fault_fired() == 1);
    CHECK(atomic_load(&local_overlap_groups) == before + 1); /* it was overlapped */
    CHECK_RC(append_n(db, "Small-1", 1, 301), STELE_EREADONLY);
    /* Nothing of the failed group is visible: not in its stream, $all, the
     * type index or the ids. */
    CHECK(count_stream(db, "Big-2") == 0);
    CHECK(count_stream(db, "$et-Big") == 3 * BIG);
    CHECK(count_all(db) == acked);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == h1.commits && h.position == h1.position &&
          memcmp(h.hash, h1.hash, 32) == 0);
    os_fault_reset();
    stele_close(db);

    if (drop)
        CHECK(write_file(seg, saved, saved_len) == 0);
    free(saved);
    db = open_store(dir);
    if (!db)
        return;
    uint64_t n = count_all(db), big2 = count_stream(db, "Big-2");
    if (drop)
        CHECK(n == acked && big2 == 0);
    else
        CHECK((n == acked && big2 == 0) || (n == acked + BIG && big2 == BIG));
    CHECK(count_stream(db, "$et-Big") == 3 * BIG + big2);
    CHECK_OK(stele_chain_get_head(db, &h));
    if (big2 == 0)
        CHECK(h.commits == h1.commits && memcmp(h.hash, h1.hash, 32) == 0);
    else
        CHECK(h.commits == h1.commits + 1);
    /* Appends resume, overlapped or not. */
    CHECK_OK(append_n(db, "Big-3", BIG, 400));
    CHECK_OK(append_n(db, "Small-1", 1, 401));
    CHECK(count_all(db) == n + BIG + 1);
    stele_close(db);
    check_clean(dir);
    t_rmdir(dir);
    passed++;
    printf("  %s: EIO, then read-only, nothing visible; reopened with %s\n", what,
           big2 ? "the group wholly present" : "exactly the acknowledged appends");
}

int main(void)
{
    t_seed();
    test_adaptive();
    test_sync_fails(0);
    test_sync_fails(1);
    printf("test_overlap: %d cases passed, %d failures\n", passed, t_failures);
    return t_failures ? 1 : 0;
}
