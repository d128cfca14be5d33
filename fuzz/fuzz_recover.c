/*
 * fuzz_recover.c - recovery of a damaged tail (src/backend/local_recover.c,
 * through stele_open): a small store is built once (three commits, one of
 * two events, 64 KiB segments) and closed cleanly; for each input a fresh
 * copy of it gets the input written just after its last record, in the
 * last segment (where a torn or half-written commit would be), and is
 * opened. When the first input byte is odd, the driver first writes the
 * right crc32c into every record it can frame in those bytes, so whole
 * commits (valid or lying about their counts, positions and revisions)
 * get past the checksum and into the replay.
 *
 * What must hold: open succeeds, or fails with a negative code and a
 * message; after a successful open every event of the template is still
 * there, $all reads to the end without error, and once closed, the store
 * passes stele_check (what recovery leaves behind is sound). The first and
 * last hold only when no record in the written bytes has a valid checksum
 * (else a crafted delete may hide events; see below for the checker).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "log/record.h"
#include "util/util.h"

#define TEMPLATE_EVENTS 4

static char template_dir[512], work_dir[600];
static int ready;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_recover: %s: %s\n", what, stele_errmsg());
    abort();
}

static void build_template(void)
{
    snprintf(template_dir, sizeof template_dir, "%s/t", fz_tmpdir("recover"));
    snprintf(work_dir, sizeof work_dir, "%.500s-work", template_dir);
    stele_options o = {0};
    o.segment_size = 64 << 10;
    stele_db *db;
    if (stele_open(template_dir, &o, &db))
        die("open the template");
    static const char *const tags[] = {"vip"};
    stele_event_in ev[2] = {{.type = "OrderPlaced", .data = "{\"n\":1}", .data_len = 7,
                             .flags = STELE_EVENT_JSON, .tags = tags, .ntags = 1},
                            {.type = "OrderPaid", .data = "xy", .data_len = 2,
                             .metadata = "{\"$correlationId\":\"c\"}", .metadata_len = 22,
                             .flags = STELE_META_JSON}};
    stele_append_result r;
    if (stele_append(db, "order-1", STELE_ANY, ev, 1, &r) ||
        stele_append(db, "order-2", STELE_ANY, ev, 2, &r) ||
        stele_append(db, "order-1", STELE_ANY, ev + 1, 1, &r))
        die("append to the template");
    stele_close(db);
}

/* Copy a file keeping its holes (the index is a sparse file). */
static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0)
        abort();
    struct stat st;
    fstat(in, &st);
    off_t off = 0;
    char b[65536];
    while (off < st.st_size) {
        off_t data = lseek(in, off, SEEK_DATA);
        if (data < 0)
            break;
        off_t hole = lseek(in, data, SEEK_HOLE);
        for (off_t at = data; at < hole;) {
            size_t want = (size_t)(hole - at) < sizeof b ? (size_t)(hole - at) : sizeof b;
            ssize_t k = pread(in, b, want, at);
            if (k <= 0 || pwrite(out, b, (size_t)k, at) != k)
                abort();
            at += k;
        }
        off = hole;
    }
    if (ftruncate(out, st.st_size) != 0)
        abort();
    close(in);
    close(out);
}

static void copy_tree(const char *from, const char *to)
{
    mkdir(to, 0755);
    DIR *d = opendir(from);
    if (!d)
        abort();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        struct stat st;
        if (lstat(a, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            copy_tree(a, b);
        else if (S_ISREG(st.st_mode))
            copy_file(a, b);
    }
    closedir(d);
}

/* The highest-numbered segment file of the copy. */
static int last_segment(char *path, size_t cap)
{
    char logdir[700];
    snprintf(logdir, sizeof logdir, "%s/log", work_dir);
    DIR *d = opendir(logdir);
    if (!d)
        return -1;
    char best[64] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strlen(e->d_name) == 12 && !strcmp(e->d_name + 8, ".seg") &&
            strcmp(e->d_name, best) > 0)
            memcpy(best, e->d_name, 13); /* NNNNNNNN.seg and its NUL */
    closedir(d);
    if (!best[0])
        return -1;
    snprintf(path, cap, "%s/%s", logdir, best);
    return 0;
}

/* Write the input after the last record; returns 1 if the bytes written
 * hold a record with a valid checksum (a commit recovery may apply). */
static int damage_tail(const uint8_t *data, size_t size)
{
    char seg[800];
    if (last_segment(seg, sizeof seg))
        abort();
    int fd = open(seg, O_RDWR);
    if (fd < 0)
        abort();
    struct stat st;
    fstat(fd, &st);
    uint8_t *file = calloc(1, (size_t)st.st_size + size + REC_HEADER_SIZE);
    if (!file || pread(fd, file, (size_t)st.st_size, 0) != st.st_size)
        abort();
    /* The end of the written records. */
    uint64_t end = SEG_HEADER_SIZE;
    for (;;) {
        rec r;
        const char *why;
        if (rec_decode_in(file, end, (uint64_t)st.st_size - end, &r, &why) != REC_OK)
            break;
        end += r.len;
    }
    memcpy(file + end, data + 1, size - 1);
    if (data[0] & 1) {
        uint64_t off = end, stop = end + size - 1;
        while (off + REC_MIN_SIZE <= stop) {
            uint32_t len = ld32(file + off);
            if (len < REC_MIN_SIZE || len % REC_ALIGN || len > stop - off)
                break;
            st32(file + off + 4, crc32c(0, file + off + 8, len - 8));
            off += len;
        }
    }
    if (pwrite(fd, file + end, size - 1, (off_t)end) != (ssize_t)(size - 1))
        abort();
    int valid = 0;
    for (uint64_t off = end; off + 8 <= end + size - 1; off += REC_ALIGN) {
        rec r;
        const char *why;
        rec_status rs = rec_decode(file + off, end + size - 1 - off, &r, &why);
        if (rs == REC_OK || rs == REC_FAR) { /* as log_valid_record_after */
            valid = 1;
            break;
        }
    }
    free(file);
    close(fd);
    return valid;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 60000)
        return 0;
    if (!ready) {
        build_template();
        ready = 1;
    }
    fz_rmtree(work_dir);
    copy_tree(template_dir, work_dir);
    int crafted = damage_tail(data, size);

    stele_db *db;
    int rc = stele_open(work_dir, NULL, &db);
    if (rc) {
        if (rc > 0 || !stele_errmsg()[0])
            abort(); /* a failure is a STELE_E* code with a reason */
        fz_rmtree(work_dir);
        return 0;
    }
    size_t seen = 0;
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        rc = stele_read_all(db, from, STELE_FORWARDS, 100, &pg);
        if (rc)
            die("read $all after recovery");
        seen += stele_page_count(pg);
        int more = stele_page_next(pg, &from);
        stele_page_free(pg);
        if (!more)
            break;
    }
    /* Without a valid record in the tail no new commit can be applied, so
     * nothing can delete a template event: all of them must be there. */
    if (!crafted && seen < TEMPLATE_EVENTS)
        die("an acknowledged event is gone after recovery");
    stele_close(db);
    /* The checker reads the recovered store too. Without a valid record
     * in the tail recovery can only have cut it, so the store must be
     * sound. A crafted commit with valid checksums may hold what no writer makes
     * (docs/testing.md names the known case: an event id twice in one
     * commit), which recovery applies and the checker then reports. */
    char report[512];
    if (stele_check(work_dir, report, sizeof report) != 0 && !crafted)
        die("stele_check after a successful recovery");
    fz_rmtree(work_dir);
    return 0;
}
