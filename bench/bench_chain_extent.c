/*
 * bench_chain_extent.c - what the hash chain's rewrite of a group's chain
 * records costs the next group's fdatasync on this disk, without the
 * engine: groups of `size` bytes appended to a pre-zeroed file, each
 * followed by fdatasync, in three write patterns (docs/benchmarks.md,
 * "Carrying the chain records into the next write"):
 *
 *   alone    pwrite(group), fdatasync                 (no chain: the floor)
 *   inplace  pwrite(group), fdatasync, then pwrite of 128 bytes at the
 *            group's start (the chain records' rewrite in place after the
 *            acknowledgement, main until 2026-12-07): the next fdatasync
 *            writes that page, a whole group behind, and the new group
 *   carried  pwritev(the previous group from its first byte, group),
 *            fdatasync (branch chain21c: the previous group's folded
 *            records carried in front of the next group, one range)
 *
 * The patterns alternate, `reps` times each, a fresh pre-zeroed file per
 * run; per pattern it prints the median over runs of each run's fdatasync
 * p10 / p50 and of the whole group's (writes + fdatasync) p50, in µs.
 *
 *   bench_chain_extent [--dir DIR] [--groups N] [--size BYTES] [--reps R]
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

enum { ALONE, INPLACE, CARRIED, NPAT };
static const char *pat_name[NPAT] = {"alone", "inplace", "carried"};

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

/* One run of `pat`: p10 and p50 of the fdatasyncs and p50 of the groups. */
static void run(const char *dir, int pat, size_t groups, size_t size, double out[3])
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
    double *sync = malloc(groups * sizeof *sync), *whole = malloc(groups * sizeof *whole);
    if (!sync || !whole)
        die("malloc");
    for (size_t k = 0; k < groups; k++) {
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
            full_pwrite(fd, g, 128, off);
        sync[k] = t2 - t1;
        whole[k] = t2 - t0;
    }
    out[0] = pct(sync, groups, 0.10);
    out[1] = pct(sync, groups, 0.50);
    out[2] = pct(whole, groups, 0.50);
    free(sync);
    free(whole);
    free(g);
    close(fd);
    unlink(path);
}

int main(int argc, char **argv)
{
    const char *dir = "/tmp";
    size_t groups = 3000, size = 30000;
    int reps = 4;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir"))
            dir = argv[i + 1];
        else if (!strcmp(argv[i], "--groups"))
            groups = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--size"))
            size = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_chain_extent [--dir DIR] [--groups N] [--size BYTES] "
                            "[--reps R]\n");
            return 2;
        }
    }
    if (groups < 10 || size < 256 || reps < 1 || reps > 100) {
        fprintf(stderr, "bench_chain_extent: groups >= 10, size >= 256, 1 <= reps <= 100\n");
        return 2;
    }
    double res[NPAT][100][3];
    for (int r = 0; r < reps; r++)
        for (int p = 0; p < NPAT; p++) {
            run(dir, p, groups, size, res[p][r]);
            printf("  rep %d %-8s fdatasync p10 %6.1f p50 %6.1f us, group p50 %6.1f us\n", r + 1,
                   pat_name[p], res[p][r][0], res[p][r][1], res[p][r][2]);
            fflush(stdout);
        }
    for (int p = 0; p < NPAT; p++) {
        double m[3][100];
        for (int j = 0; j < 3; j++)
            for (int r = 0; r < reps; r++)
                m[j][r] = res[p][r][j];
        printf("extent pattern=%s groups=%zu size=%zu reps=%d fdatasync_p10_us=%.1f "
               "fdatasync_p50_us=%.1f group_p50_us=%.1f\n",
               pat_name[p], groups, size, reps, pct(m[0], (size_t)reps, 0.5),
               pct(m[1], (size_t)reps, 0.5), pct(m[2], (size_t)reps, 0.5));
    }
    return 0;
}
