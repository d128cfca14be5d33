/*
 * os.h - the file I/O of the local engine, behind one table of function
 * pointers so tests can swap in a faulty one (short and torn writes, EIO on
 * write or fdatasync, ENOSPC). Every log file operation of the engine goes
 * through `os_io`; nothing in src/log or src/index calls write(2) directly.
 * (LMDB does its own I/O; its failures are handled as storage faults too.)
 *
 * All functions return >= 0 on success and -errno on failure (never set
 * errno-and-return -1), so callers can map the code directly.
 */
#ifndef STELE_OS_H
#define STELE_OS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct os_ops {
    int (*open)(const char *path, int flags, int mode);  /* fd or -errno */
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, uint64_t off);
    ssize_t (*pread)(int fd, void *buf, size_t n, uint64_t off);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd);
    int (*ftruncate)(int fd, uint64_t len);
    int (*close)(int fd);
    int (*rename)(const char *from, const char *to);
    int (*unlink)(const char *path);
} os_ops;

/* The table in use: &os_posix unless a test installed another. */
extern const os_ops *os_io;
extern const os_ops os_posix;

/* Write all `n` bytes at `off` (looping over short writes that made
 * progress). 0, or -errno; a write that made no progress and reported no
 * error is -EIO. */
int os_write_full(int fd, const void *buf, size_t n, uint64_t off);
/* Read exactly `n` bytes at `off`. 0, -errno, or -ENODATA at end of file. */
int os_read_full(int fd, void *buf, size_t n, uint64_t off);
/* fsync a directory so a create/rename/unlink in it is durable. */
int os_fsync_dir(const char *dir);
/* Size of an open file, or -errno. */
int64_t os_file_size(int fd);

/*
 * Fault injection (tests only; os_fault.c). Arm one fault that fires on the
 * `after`-th matching call (0 = the next one) to a file whose path contains
 * `path_part` (e.g. ".seg"), then stays fired (every later matching call
 * fails the same way) until os_fault_reset(). Installs the faulty table.
 */
typedef enum os_fault_kind {
    OS_FAULT_NONE = 0,
    OS_FAULT_SHORT_WRITE, /* pwrite writes half and returns the short count,
                             then -EIO on the retry */
    OS_FAULT_EIO_WRITE,   /* pwrite writes nothing, -EIO */
    OS_FAULT_ENOSPC,      /* pwrite writes half, then -ENOSPC */
    OS_FAULT_EIO_SYNC,    /* fdatasync/fsync -EIO (data was written) */
    OS_FAULT_TORN_EXIT,   /* pwrite writes a prefix of `torn_bytes` bytes,
                             then the process _exit(99)s: a crash mid-write */
    OS_FAULT_EIO_RENAME,  /* rename (from or to a matching path) renames
                             nothing, -EIO */
    OS_FAULT_CRASH,       /* the process _exit(99)s just before the call:
                             counts pwrite, fdatasync, fsync (matching fd)
                             and rename, unlink (matching path) */
} os_fault_kind;

void os_fault_arm(os_fault_kind kind, const char *path_part, unsigned after,
                  size_t torn_bytes);
void os_fault_reset(void);
/* Number of times the armed fault has fired. */
unsigned os_fault_fired(void);

#endif
