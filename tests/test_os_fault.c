/*
 * test_os_fault.c - the os/ layer: the POSIX table and its helpers, then
 * each fault of the injecting table on real temporary files, checking both
 * what the call returns and what ends up in the file. TORN_EXIT runs in a
 * forked child, which must die with status 99 leaving exactly the prefix.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "os/os.h"
#include "testutil.h"

static const char *dir;
static uint8_t pattern[4096];

static const char *path_in(const char *name)
{
    static char slots[4][600];
    static int next;
    char *p = slots[next++ % 4];
    snprintf(p, 600, "%s/%s", dir, name);
    return p;
}

static int open_rw(const char *name)
{
    int fd = os_io->open(path_in(name), O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    return fd;
}

/* The file behind `fd` holds exactly pattern[0 .. n). */
static void check_content(int fd, size_t n)
{
    uint8_t got[4096];
    CHECK(os_file_size(fd) == (int64_t)n);
    CHECK(n <= sizeof got);
    CHECK(os_read_full(fd, got, n, 0) == 0);
    CHECK(memcmp(got, pattern, n) == 0);
}

/* ------------------------------------------------------------ os_posix */

static void test_posix(void)
{
    CHECK(os_io == &os_posix);
    int fd = open_rw("plain.dat");
    CHECK(os_write_full(fd, pattern, 1000, 0) == 0);
    CHECK(os_write_full(fd, pattern + 1000, 24, 1000) == 0);
    check_content(fd, 1024);
    CHECK(os_write_full(fd, pattern, 0, 0) == 0);

    uint8_t b[16];
    CHECK(os_read_full(fd, b, 16, 1008) == 0);
    CHECK(memcmp(b, pattern + 1008, 16) == 0);
    CHECK(os_read_full(fd, b, 16, 1016) == -ENODATA); /* only 8 left */
    CHECK(os_read_full(fd, b, 1, 5000) == -ENODATA);
    CHECK(os_io->pread(fd, b, 16, 1016) == 8);

    CHECK(os_io->fdatasync(fd) == 0);
    CHECK(os_io->fsync(fd) == 0);
    CHECK(os_io->ftruncate(fd, 100) == 0);
    check_content(fd, 100);
    CHECK(os_io->close(fd) == 0);

    /* Failures are -errno, never -1. */
    CHECK(os_io->open(path_in("missing/x"), O_RDONLY, 0) == -ENOENT);
    CHECK(os_io->pwrite(-1, b, 1, 0) == -EBADF);
    CHECK(os_io->pread(12345, b, 1, 0) == -EBADF);
    CHECK(os_io->fdatasync(-1) == -EBADF);
    CHECK(os_io->close(-1) == -EBADF);
    CHECK(os_file_size(-1) == -EBADF);
    CHECK(os_io->unlink(path_in("missing")) == -ENOENT);
    CHECK(os_io->rename(path_in("missing"), path_in("other")) == -ENOENT);

    CHECK(os_io->rename(path_in("plain.dat"), path_in("moved.dat")) == 0);
    CHECK(access(path_in("moved.dat"), F_OK) == 0);
    CHECK(os_fsync_dir(dir) == 0);
    CHECK(os_fsync_dir(path_in("missing")) == -ENOENT);
    CHECK(os_fsync_dir(path_in("moved.dat")) == -ENOTDIR);
    CHECK(os_io->unlink(path_in("moved.dat")) == 0);
    CHECK(access(path_in("moved.dat"), F_OK) != 0);

    /* O_CLOEXEC so log fds do not leak into exec'd programs. */
    fd = open_rw("cloexec.dat");
    CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(os_io->close(fd) == 0);
}

/* --------------------------------------------------------------- faults */

static void test_short_write(void)
{
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    CHECK(os_io != &os_posix);
    int seg = open_rw("short.seg");
    int idx = open_rw("short.idx");
    os_fault_arm(OS_FAULT_SHORT_WRITE, ".seg", 1, 0);

    CHECK(os_io->pwrite(seg, pattern, 100, 0) == 100); /* call 0 passes */
    CHECK(os_fault_fired() == 0);
    CHECK(os_io->pwrite(seg, pattern + 100, 10, 100) == 5); /* call 1 fires */
    CHECK(os_fault_fired() == 1);
    check_content(seg, 105);
    CHECK(os_io->pwrite(seg, pattern + 105, 5, 105) == -EIO); /* the retry */
    CHECK(os_write_full(seg, pattern + 105, 5, 105) == -EIO);
    CHECK(os_fault_fired() == 3);
    check_content(seg, 105);

    /* Other files, reads and syncs are untouched. */
    CHECK(os_write_full(idx, pattern, 300, 0) == 0);
    check_content(idx, 300);
    CHECK(os_io->fdatasync(seg) == 0);

    os_fault_reset();
    CHECK(os_io == &os_posix);
    CHECK(os_fault_fired() == 3); /* kept for the test to read */
    CHECK(os_write_full(seg, pattern + 105, 5, 105) == 0);
    check_content(seg, 110);
    CHECK(os_io->close(seg) == 0);
    CHECK(os_io->close(idx) == 0);
}

static void test_short_write_via_write_full(void)
{
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    int seg = open_rw("full.seg");
    os_fault_arm(OS_FAULT_SHORT_WRITE, ".seg", 0, 0);
    /* os_write_full takes the short count and retries the rest, which
     * fails: the caller sees -EIO and half the bytes are in the file. */
    CHECK(os_write_full(seg, pattern, 64, 0) == -EIO);
    CHECK(os_fault_fired() == 2);
    os_fault_reset();
    check_content(seg, 32);
    CHECK(os_io->close(seg) == 0);
}

static void test_eio_write(void)
{
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    int seg = open_rw("eio.seg");
    os_fault_arm(OS_FAULT_EIO_WRITE, ".seg", 0, 0);
    CHECK(os_io->pwrite(seg, pattern, 100, 0) == -EIO);
    CHECK(os_io->pwrite(seg, pattern, 1, 0) == -EIO);
    CHECK(os_fault_fired() == 2);
    check_content(seg, 0);
    CHECK(os_io->fsync(seg) == 0);
    os_fault_reset();
    CHECK(os_io->close(seg) == 0);
}

static void test_enospc(void)
{
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    int seg = open_rw("nospc.seg");
    os_fault_arm(OS_FAULT_ENOSPC, ".seg", 2, 0);
    CHECK(os_write_full(seg, pattern, 10, 0) == 0);
    CHECK(os_write_full(seg, pattern + 10, 10, 10) == 0);
    CHECK(os_fault_fired() == 0);
    CHECK(os_io->pwrite(seg, pattern + 20, 30, 20) == -ENOSPC);
    check_content(seg, 35); /* half of the failing write landed */
    CHECK(os_io->pwrite(seg, pattern + 35, 30, 35) == -ENOSPC);
    check_content(seg, 35); /* later ones write nothing */
    CHECK(os_fault_fired() == 2);
    os_fault_reset();
    CHECK(os_io->close(seg) == 0);
}

static void test_eio_sync(void)
{
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    int seg = open_rw("sync.seg");
    int idx = open_rw("sync.idx");
    os_fault_arm(OS_FAULT_EIO_SYNC, ".seg", 1, 0);
    CHECK(os_write_full(seg, pattern, 200, 0) == 0); /* writes do not count */
    CHECK(os_io->fdatasync(seg) == 0);               /* sync 0 passes */
    CHECK(os_write_full(seg, pattern + 200, 200, 200) == 0);
    CHECK(os_io->fsync(seg) == -EIO);                /* sync 1 fires */
    CHECK(os_io->fdatasync(seg) == -EIO);            /* and stays fired */
    CHECK(os_fault_fired() == 2);
    check_content(seg, 400); /* the data was written */
    CHECK(os_io->fdatasync(idx) == 0);
    CHECK(os_io->fsync(idx) == 0);
    os_fault_reset();
    CHECK(os_io->fdatasync(seg) == 0);
    CHECK(os_io->close(seg) == 0);
    CHECK(os_io->close(idx) == 0);
}

/* The table only knows descriptors it opened itself, follows renames, and
 * ignores a stale record when the number is reused for another file. */
static void test_fd_tracking(void)
{
    int early = open_rw("early.seg"); /* opened under os_posix */
    os_fault_arm(OS_FAULT_EIO_WRITE, ".seg", 0, 0);
    CHECK(os_io->pwrite(early, pattern, 10, 0) == 10);
    CHECK(os_fault_fired() == 0);
    os_fault_reset();
    CHECK(os_io->close(early) == 0);

    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    int tmp = open_rw("renamed.seg.tmp");
    CHECK(os_io->rename(path_in("renamed.seg.tmp"), path_in("renamed.log")) == 0);
    os_fault_arm(OS_FAULT_EIO_WRITE, ".seg", 0, 0);
    CHECK(os_io->pwrite(tmp, pattern, 10, 0) == 10); /* now "renamed.log" */
    os_fault_arm(OS_FAULT_EIO_WRITE, "renamed.log", 0, 0);
    CHECK(os_io->pwrite(tmp, pattern, 10, 0) == -EIO);
    /* NULL matches every descriptor the table opened. */
    os_fault_arm(OS_FAULT_EIO_WRITE, NULL, 0, 0);
    CHECK(os_io->pwrite(tmp, pattern, 10, 0) == -EIO);
    os_fault_reset();

    /* Stale record: opened (and recorded) as .seg, closed while os_posix
     * was installed, then the same number is reused for another file. */
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    int seg = open_rw("stale.seg");
    os_fault_reset();
    CHECK(os_io->close(seg) == 0);
    int other = open_rw("stale.dat");
    CHECK(other == seg);
    os_fault_arm(OS_FAULT_EIO_WRITE, ".seg", 0, 0);
    CHECK(os_io->pwrite(other, pattern, 10, 0) == 10);
    CHECK(os_fault_fired() == 0);
    os_fault_reset();
    CHECK(os_io->close(other) == 0);
    CHECK(os_io->close(tmp) == 0);
}

/* Fork a child that writes `first` bytes (which pass), then `second` bytes
 * that hit TORN_EXIT with `torn` bytes; the child must _exit(99). Returns
 * the file size afterwards. */
static int64_t torn_child(const char *name, size_t first, size_t second, size_t torn)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
        int fd = os_io->open(path_in(name), O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            _exit(2);
        os_fault_arm(OS_FAULT_TORN_EXIT, ".seg", 1, torn);
        if (os_write_full(fd, pattern, first, 0) != 0)
            _exit(3);
        os_write_full(fd, pattern + first, second, first);
        _exit(4); /* the torn write returned: wrong */
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    if (WIFEXITED(status) && WEXITSTATUS(status) != 99)
        fprintf(stderr, "torn child exited with %d\n", WEXITSTATUS(status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 99);

    int fd = os_io->open(path_in(name), O_RDONLY, 0);
    CHECK(fd >= 0);
    int64_t size = os_file_size(fd);
    uint8_t got[4096];
    CHECK(size >= 0 && (size_t)size <= sizeof got);
    CHECK(os_read_full(fd, got, (size_t)size, 0) == 0);
    CHECK(memcmp(got, pattern, (size_t)size) == 0); /* exactly a prefix */
    CHECK(os_io->close(fd) == 0);
    return size;
}

static void test_torn_exit(void)
{
    CHECK(torn_child("torn1.seg", 50, 100, 37) == 87);
    CHECK(torn_child("torn2.seg", 50, 100, 0) == 50);
    CHECK(torn_child("torn3.seg", 50, 100, 1000) == 150); /* torn > n */
    CHECK(os_io == &os_posix); /* the parent never installed anything */
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"posix", test_posix},
        {"short_write", test_short_write},
        {"short_write_via_write_full", test_short_write_via_write_full},
        {"eio_write", test_eio_write},
        {"enospc", test_enospc},
        {"eio_sync", test_eio_sync},
        {"fd_tracking", test_fd_tracking},
        {"torn_exit", test_torn_exit},
    };
    t_seed();
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (uint8_t)t_rand();
    dir = t_tmpdir("osfault");
    int passed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = t_failures;
        tests[i].fn();
        if (t_failures == before)
            passed++;
        else
            fprintf(stderr, "FAILED: %s\n", tests[i].name);
    }
    t_rmdir(dir);
    return t_done("test_os_fault", passed);
}
