/*
 * bench_chain_extent.c - what the hash chain's rewrite of a group's chain
 * records costs the next group's fdatasync on this disk, without the
 * engine: groups of `size` bytes appended to a pre-zeroed file, each
 * followed by fdatasync, in three write patterns (docs/benchmarks.md,
 * "The chain's rewrite in one range with the next group"):
 *
 *   alone    pwrite(group), fdatasync                 (no chain: the floor)
 *   inplace  pwrite(group), fdatasync, then pwrite of 144 bytes at the
 *            group's start (the chain records' rewrite in place after the
 *            acknowledgement, main until 2026-12-07): the next fdatasync
 *            writes that page, a whole group behind, and the new group
 *   carried  pwritev(the previous group from its first byte, group),
 *            fdatasync (branch chain21c's first version: the previous
 *            group's folded records carried in front of the next group,
 *            one range, the copy on the group's path)
 *   trailing pwrite(group), fdatasync, then pwrite of the group's last 144
 *            bytes (not built: a chain record after its commit instead of
 *            before, rewritten in place; its page is the next group's
 *            first, which that group's write dirties anyway)
 *   whole    pwrite(group), fdatasync, then pwrite of the whole group again
 *            (branch chain21c: its records rewritten in place after the
 *            acknowledgement from the first chain record to the group's
 *            end: one range with the next group, the copy off the path)
 *
 * The patterns take turns in blocks of 50 groups within each run (a fresh
 * pre-zeroed file of `groups` groups per run, `reps` runs); per pattern it
 * prints the p10 / p50 of the fdatasyncs and of the whole group (writes +
 * fdatasync), in µs, over all counted groups.
 *
 *   bench_chain_extent [--dir DIR] [--groups N] [--size BYTES] [--block N] [--reps R]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { ALONE, INPLACE, CARRIED, TRAILING, WHOLE, NPAT };
static const char *pat_name[NPAT] = {"alone", "inplace", "carried", "trailing", "whole"};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_d);
    size_t i = (size_t)(p * (double)(n - 1));
    return v[i];
}

static void die(const char *what)
{
    fprintf(stderr, "bench_chain_extent: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void full_pwrite(int fd, const void *p, size_t n, off_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w <= 0)
            die("pwrite");
        p = (const char *)p + w;
        n -= (size_t)w;
        off += w;
    }
}

/* Append groups to a fresh pre-zeroed file, the patterns taking turns in
 * blocks of `block` groups (so that a machine whose load drifts over
 * seconds weighs on them alike); the first 2 groups of a block, which see
 * the previous pattern's leftovers, are not counted. sync[p] and whole[p]
 * get each counted group's fdatasync and writes + fdatasync, µs. */
static size_t run(const char *dir, size_t groups, size_t size, size_t block, double *sync[NPAT],
                  double *whole[NPAT], size_t cnt[NPAT])
{
    char path[4096];
    snprintf(path, sizeof path, "%s/extent-%d.dat", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die(path);
    /* Pre-zeroed like a log segment, so the groups overwrite allocated
     * blocks and fdatasync has no metadata to write. */
    size_t total = (groups + 2) * size;
    char *zeros = calloc(1, 1 << 20);
    if (!zeros)
        die("calloc");
    for (size_t off = 0; off < total; off += 1 << 20)
        full_pwrite(fd, zeros, total - off < (1u << 20) ? total - off : 1u << 20, (off_t)off);
    if (fsync(fd))
        die("fsync");
    free(zeros);
    char *g = malloc(size);
    if (!g)
        die("malloc");
    for (size_t i = 0; i < size; i++)
        g[i] = (char)(i * 31 + 7);
    for (size_t k = 0; k < groups; k++) {
        int pat = (int)((k / block) % NPAT);
        off_t off = (off_t)(k * size);
        double t0 = now_us();
        if (pat == CARRIED && k > 0) {
            struct iovec v[2] = {{g, size}, {g, size}};
            ssize_t w = pwritev(fd, v, 2, off - (off_t)size);
            if (w != (ssize_t)(2 * size))
                die("pwritev");
        } else {
            full_pwrite(fd, g, size, off);
        }
        double t1 = now_us();
        if (fdatasync(fd))
            die("fdatasync");
        double t2 = now_us();
        /* The chain records' rewrite after the acknowledgement: not timed
         * (the appender is already on its way), paid by the next sync. */
        if (pat == INPLACE)
            full_pwrite(fd, g, 144, off);
        else if (pat == TRAILING)
            full_pwrite(fd, g, 144, off + (off_t)size - 144);
        else if (pat == WHOLE)
            full_pwrite(fd, g, size, off);
        if (k % block >= 2) {
            sync[pat][cnt[pat]] = t2 - t1;
            whole[pat][cnt[pat]++] = t2 - t0;
        }
    }
    free(g);
    close(fd);
    unlink(path);
    return groups;
}

int main(int argc, char **argv)
{
    const char *dir = "/tmp";
    size_t groups = 3000, size = 30000, block = 50;
    int reps = 4;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir"))
            dir = argv[i + 1];
        else if (!strcmp(argv[i], "--groups"))
            groups = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--size"))
            size = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--block"))
            block = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_chain_extent [--dir DIR] [--groups N] [--size BYTES] "
                            "[--block N] [--reps R]\n");
            return 2;
        }
    }
    if (groups < 30 || size < 256 || block < 5 || reps < 1 || reps > 100) {
        fprintf(stderr, "bench_chain_extent: groups >= 30, size >= 256, block >= 5, "
                        "1 <= reps <= 100\n");
        return 2;
    }
    double *sync[NPAT], *whole[NPAT];
    size_t cnt[NPAT] = {0};
    for (int p = 0; p < NPAT; p++) {
        sync[p] = malloc(groups * (size_t)reps * sizeof(double));
        whole[p] = malloc(groups * (size_t)reps * sizeof(double));
        if (!sync[p] || !whole[p])
            die("malloc");
    }
    for (int r = 0; r < reps; r++)
        run(dir, groups, size, block, sync, whole, cnt);
    for (int p = 0; p < NPAT; p++)
        printf("extent pattern=%s groups=%zu size=%zu block=%zu reps=%d counted=%zu "
               "fdatasync_p10_us=%.1f fdatasync_p50_us=%.1f group_p10_us=%.1f "
               "group_p50_us=%.1f\n",
               pat_name[p], groups, size, block, reps, cnt[p], pct(sync[p], cnt[p], 0.10),
               pct(sync[p], cnt[p], 0.50), pct(whole[p], cnt[p], 0.10),
               pct(whole[p], cnt[p], 0.50));
    return 0;
}
