/*
 * os.c - the POSIX implementation of the os_ops table and the helpers built
 * on top of whatever table is installed in os_io.
 *
 * Every os_posix entry is a thin wrapper over one system call with the
 * convention of os.h: a result >= 0, or -errno (never -1 with errno set).
 * Calls interrupted by a signal before doing anything (EINTR) are retried,
 * so callers never see EINTR. Nothing else is retried here: a short write or
 * read is returned as is (os_write_full / os_read_full loop), and a failed
 * fsync is reported, never repeated, because after a failed fsync the kernel
 * may already have dropped the dirty pages (the store goes read-only).
 *
 * Files are opened with O_CLOEXEC so that a process embedding the library
 * does not leak log file descriptors into programs it executes.
 *
 * The helpers (os_write_full, os_read_full, os_fsync_dir) call through os_io,
 * so a fault-injecting table installed by a test sees their I/O too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "os/os.h"

static int posix_open(const char *path, int flags, int mode)
{
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static ssize_t posix_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
    if (off > INT64_MAX)
        return -EINVAL;
    ssize_t r;
    do
        r = pwrite(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static ssize_t posix_pread(int fd, void *buf, size_t n, uint64_t off)
{
    if (off > INT64_MAX)
        return -EINVAL;
    ssize_t r;
    do
        r = pread(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static int posix_fdatasync(int fd)
{
    int r;
    do
        r = fdatasync(fd);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int posix_fsync(int fd)
{
    int r;
    do
        r = fsync(fd);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int posix_ftruncate(int fd, uint64_t len)
{
    if (len > INT64_MAX)
        return -EFBIG;
    int r;
    do
        r = ftruncate(fd, (off_t)len);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int posix_close(int fd)
{
    /* Never retry close: on Linux the descriptor is released even when
     * close reports EINTR, and a retry could close a descriptor another
     * thread has just been given. EINTR therefore means "closed". */
    if (close(fd) < 0 && errno != EINTR)
        return -errno;
    return 0;
}

static int posix_rename(const char *from, const char *to)
{
    int r;
    do
        r = rename(from, to);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int posix_unlink(const char *path)
{
    int r;
    do
        r = unlink(path);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

const os_ops os_posix = {
    .open = posix_open,
    .pwrite = posix_pwrite,
    .pread = posix_pread,
    .fdatasync = posix_fdatasync,
    .fsync = posix_fsync,
    .ftruncate = posix_ftruncate,
    .close = posix_close,
    .rename = posix_rename,
    .unlink = posix_unlink,
};

const os_ops *os_io = &os_posix;

int os_write_full(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = os_io->pwrite(fd, p, n, off);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EIO; /* no progress and no error: would loop forever */
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int os_read_full(int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = os_io->pread(fd, p, n, off);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -ENODATA;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int os_fsync_dir(const char *dir)
{
    int fd = os_io->open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    int rc = os_io->fsync(fd);
    int rc_close = os_io->close(fd);
    return rc < 0 ? rc : rc_close;
}

int64_t os_file_size(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    return (int64_t)st.st_size;
}
