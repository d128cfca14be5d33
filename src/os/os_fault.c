/*
 * os_fault.c - a fault-injecting os_ops table for tests, in the spirit of
 * SQLite's test6.c crash VFS: it wraps os_posix and makes one chosen kind of
 * call fail on files whose path contains a given fragment.
 *
 * Usage. os_fault_arm() installs the table in os_io. The table can only
 * recognise descriptors it opened itself (its `open` records fd -> path), so
 * a test installs it BEFORE opening the files it wants to break, by arming
 * OS_FAULT_NONE, and arms the real fault later:
 *
 *     os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);       install, fault nothing
 *     stele_open(dir, NULL, &db);                    segment fds are recorded
 *     os_fault_arm(OS_FAULT_EIO_SYNC, ".seg", 2, 0); the 3rd sync fails
 *     ...
 *     os_fault_reset();                              back to os_posix
 *
 * Descriptors opened while os_posix was installed, or numbered >= 4096, are
 * never faulted. os_posix itself stays a plain wrapper with no bookkeeping.
 *
 * Which calls count. A write fault (SHORT_WRITE, EIO_WRITE, ENOSPC,
 * TORN_EXIT) counts only pwrite calls on matching descriptors; EIO_SYNC
 * counts only fdatasync/fsync calls on them; EIO_RENAME counts renames
 * whose source or target path matches; CRASH counts all of these (and
 * unlinks of matching paths) and exits the process before the call it
 * fires on, so a test can crash at each step of a sequence in turn. Calls numbered 0 .. after-1 go
 * through untouched, call number `after` fires the fault, and every later
 * counted call fails the same way until the next arm or reset. A NULL or
 * empty path_part matches every recorded descriptor.
 *
 * Recording. A table of 4096 entries indexed by fd holds the path each fd
 * was opened with plus its device and inode. Entries are cleared by this
 * table's close, renamed along with the file by its rename, and overwritten
 * by its open. A descriptor closed while os_posix was installed leaves a
 * stale entry behind; the device/inode pair, compared with fstat() before a
 * fault is charged to an fd, keeps a reused descriptor number from
 * inheriting another file's path. One mutex guards the whole state; the
 * real I/O runs outside it.
 *
 * os_fault_fired() counts every call the fault made fail (the first one and
 * each repeat) since the last os_fault_arm(); os_fault_reset() disarms but
 * keeps the count so a test can read it after restoring os_posix.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "os/os.h"

#define FAULT_MAX_FD 4096

typedef struct fd_entry {
    char *path; /* NULL: descriptor unknown */
    dev_t dev;
    ino_t ino;
} fd_entry;

static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static fd_entry fault_fds[FAULT_MAX_FD];
static os_fault_kind fault_kind;
static char *fault_part;    /* NULL: every recorded descriptor matches */
static unsigned fault_after;
static unsigned fault_seen; /* counted calls that went through so far */
static int fault_tripped;   /* the fault has fired; every later call fails */
static unsigned fault_count;
static size_t fault_torn;

static int is_write_fault(os_fault_kind k)
{
    return k == OS_FAULT_SHORT_WRITE || k == OS_FAULT_EIO_WRITE ||
           k == OS_FAULT_ENOSPC || k == OS_FAULT_TORN_EXIT;
}

/* Caller holds fault_lock. */
static int fd_matches(int fd)
{
    if (fd < 0 || fd >= FAULT_MAX_FD || !fault_fds[fd].path)
        return 0;
    if (fault_part && !strstr(fault_fds[fd].path, fault_part))
        return 0;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    return st.st_dev == fault_fds[fd].dev && st.st_ino == fault_fds[fd].ino;
}

/* Decide whether this counted call fails. Returns 0 to let it through,
 * 1 if it is the call that fires the fault, 2 if the fault fired earlier.
 * Caller holds fault_lock and has checked the kind and the fd. */
static int charge(void)
{
    if (!fault_tripped) {
        if (fault_seen < fault_after) {
            fault_seen++;
            return 0;
        }
        fault_tripped = 1;
        fault_count++;
        return 1;
    }
    fault_count++;
    return 2;
}

/* Really write the first `n` bytes, looping over short writes, so the file
 * holds exactly the prefix the fault promises. */
static ssize_t write_prefix(int fd, const void *buf, size_t n, uint64_t off)
{
    const char *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t r = os_posix.pwrite(fd, p + done, n - done, off + done);
        if (r < 0)
            return r;
        if (r == 0)
            return -EIO;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

static int fault_open(const char *path, int flags, int mode)
{
    int fd = os_posix.open(path, flags, mode);
    if (fd < 0 || fd >= FAULT_MAX_FD)
        return fd;
    struct stat st;
    char *copy = fstat(fd, &st) == 0 ? strdup(path) : NULL;
    pthread_mutex_lock(&fault_lock);
    free(fault_fds[fd].path);
    fault_fds[fd].path = copy;
    if (copy) {
        fault_fds[fd].dev = st.st_dev;
        fault_fds[fd].ino = st.st_ino;
    }
    pthread_mutex_unlock(&fault_lock);
    return fd;
}

/* Caller holds fault_lock. */
static int path_matches(const char *path)
{
    return !fault_part || strstr(path, fault_part) != NULL;
}

/* OS_FAULT_CRASH: exit before this call if it is the one. */
static void crash_point(int fd, const char *path1, const char *path2)
{
    pthread_mutex_lock(&fault_lock);
    int fire = 0;
    if (fault_kind == OS_FAULT_CRASH &&
        (path1 ? path_matches(path1) || (path2 && path_matches(path2)) : fd_matches(fd)))
        fire = charge();
    pthread_mutex_unlock(&fault_lock);
    if (fire)
        _exit(99);
}

static ssize_t fault_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
    crash_point(fd, NULL, NULL);
    pthread_mutex_lock(&fault_lock);
    os_fault_kind kind = fault_kind;
    int fire = is_write_fault(kind) && fd_matches(fd) ? charge() : 0;
    size_t torn = fault_torn;
    pthread_mutex_unlock(&fault_lock);
    if (!fire)
        return os_posix.pwrite(fd, buf, n, off);

    ssize_t r;
    switch (kind) {
    case OS_FAULT_SHORT_WRITE:
        if (fire == 2)
            return -EIO;
        return write_prefix(fd, buf, n / 2, off);
    case OS_FAULT_ENOSPC:
        if (fire == 1 && (r = write_prefix(fd, buf, n / 2, off)) < 0)
            return r;
        return -ENOSPC;
    case OS_FAULT_TORN_EXIT:
        write_prefix(fd, buf, n < torn ? n : torn, off);
        _exit(99);
    default: /* OS_FAULT_EIO_WRITE */
        return -EIO;
    }
}

static int sync_fault(int fd)
{
    crash_point(fd, NULL, NULL);
    pthread_mutex_lock(&fault_lock);
    int fire = fault_kind == OS_FAULT_EIO_SYNC && fd_matches(fd) ? charge() : 0;
    pthread_mutex_unlock(&fault_lock);
    return fire;
}

static int fault_fdatasync(int fd)
{
    return sync_fault(fd) ? -EIO : os_posix.fdatasync(fd);
}

static int fault_fsync(int fd) { return sync_fault(fd) ? -EIO : os_posix.fsync(fd); }

static int fault_close(int fd)
{
    /* Forget the fd before closing it: once closed, its number may be
     * handed to another thread's open, whose record we must not erase. */
    if (fd >= 0 && fd < FAULT_MAX_FD) {
        pthread_mutex_lock(&fault_lock);
        free(fault_fds[fd].path);
        fault_fds[fd].path = NULL;
        pthread_mutex_unlock(&fault_lock);
    }
    return os_posix.close(fd);
}

static int fault_rename(const char *from, const char *to)
{
    crash_point(-1, from, to);
    pthread_mutex_lock(&fault_lock);
    int fire = fault_kind == OS_FAULT_EIO_RENAME && (path_matches(from) || path_matches(to))
                   ? charge()
                   : 0;
    pthread_mutex_unlock(&fault_lock);
    if (fire)
        return -EIO;
    int rc = os_posix.rename(from, to);
    if (rc < 0)
        return rc;
    /* A descriptor follows its file, so "x.seg.tmp" renamed to "x.seg" is
     * a ".seg" file from now on. */
    pthread_mutex_lock(&fault_lock);
    for (int fd = 0; fd < FAULT_MAX_FD; fd++) {
        if (fault_fds[fd].path && strcmp(fault_fds[fd].path, from) == 0) {
            char *copy = strdup(to);
            free(fault_fds[fd].path);
            fault_fds[fd].path = copy;
        }
    }
    pthread_mutex_unlock(&fault_lock);
    return 0;
}

/* The calls no fault touches go straight to os_posix. (Its members are not
 * constant expressions, so the table below cannot name them directly.) */
static ssize_t fault_pread(int fd, void *buf, size_t n, uint64_t off)
{
    return os_posix.pread(fd, buf, n, off);
}

static int fault_ftruncate(int fd, uint64_t len) { return os_posix.ftruncate(fd, len); }
static int fault_unlink(const char *path)
{
    crash_point(-1, path, NULL);
    return os_posix.unlink(path);
}

static const os_ops os_faulty = {
    .open = fault_open,
    .pwrite = fault_pwrite,
    .pread = fault_pread,
    .fdatasync = fault_fdatasync,
    .fsync = fault_fsync,
    .ftruncate = fault_ftruncate,
    .close = fault_close,
    .rename = fault_rename,
    .unlink = fault_unlink,
};

/* os_io is a plain pointer read without locks by the engine's threads; the
 * atomic store keeps the switch itself from tearing or being reordered
 * before the state it publishes. Tests switch tables while no I/O is in
 * flight, or accept that a call already under way uses the old table. */
static void install(const os_ops *ops)
{
    __atomic_store_n(&os_io, ops, __ATOMIC_RELEASE);
}

void os_fault_arm(os_fault_kind kind, const char *path_part, unsigned after,
                  size_t torn_bytes)
{
    char *part = path_part && *path_part ? strdup(path_part) : NULL;
    if (path_part && *path_part && !part)
        abort(); /* test-only code: out of memory here is not worth a path */
    pthread_mutex_lock(&fault_lock);
    free(fault_part);
    fault_part = part;
    fault_kind = kind;
    fault_after = after;
    fault_torn = torn_bytes;
    fault_seen = 0;
    fault_tripped = 0;
    fault_count = 0;
    pthread_mutex_unlock(&fault_lock);
    install(&os_faulty);
}

void os_fault_reset(void)
{
    pthread_mutex_lock(&fault_lock);
    fault_kind = OS_FAULT_NONE;
    fault_tripped = 0;
    fault_seen = 0;
    free(fault_part);
    fault_part = NULL;
    pthread_mutex_unlock(&fault_lock);
    install(&os_posix);
}

unsigned os_fault_fired(void)
{
    pthread_mutex_lock(&fault_lock);
    unsigned n = fault_count;
    pthread_mutex_unlock(&fault_lock);
    return n;
}
