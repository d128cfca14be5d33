/*
 * test_chain_rewrite.c - the range of a group's chain-record rewrite
 * (src/backend/local_chain.c, "The rewrite's range"; docs/architecture.md,
 * "The chain's rewrite in one range with the next group"), seen through an
 * os_ops table that records every pwrite, and the waits that depend on the
 * rewrite:
 *
 *   whole    one append: after its group's write, its rewrite starts at
 *            the same offset and has the same length (the whole group,
 *            from its chain record on); the file's bytes after the record
 *            are the group's as first written; the head covers it;
 *   many     appends from 6 threads (groups of several commits): every
 *            rewrite runs to the end of the group write it follows;
 *   large    a commit of ~110 KB (past the 64 KiB limit): its rewrite is
 *            the chain record alone (144 bytes);
 *            (these run with STELE_CHAIN_REWRITE_MAX=65536: the "auto"
 *            size whatever the fdatasyncs take, $TMPDIR may be a tmpfs)
 *   off      STELE_CHAIN_REWRITE_MAX=off: the chain record alone, the
 *            default;
 *   backup   a backup right after each of several appends: the copy's
 *            chain records are all complete (a backup waits for the
 *            rewrite of the groups before its point; later backups only
 *            extend the tail's copy), and the restore opens and verifies;
 *   threads  4 threads append while another reads the head, exports the
 *            newest event and backs up, over and over: every export
 *            verifies, the restore verifies (TSan runs it).
 *   trailing (the default layout since 2026-12-08, local_chain.c "Trailing
 *            records") one-commit groups: each rewrite is the 144-byte
 *            record that ends its group write, so it adjoins the next
 *            group's; backup and threads again in this layout.
 *
 * whole, many, large and off run with STELE_CHAIN_LAYOUT=leading (chain
 * records before their commits), the layout whose rewrite range they test.
 *
 * `stele check` verifies every store at the end. Replay with TEST_SEED=n.
 */
#include "testutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/record.h"
#include "os/os.h"
#include "util/util.h"

static int passed;

/* ------------------------------------------------ the recording table */

typedef struct wrec {
    int fd;
    uint64_t off;
    size_t n;
    uint8_t head[16]; /* the first bytes written */
} wrec;

#define WMAX 65536
static wrec g_w[WMAX];
static size_t g_nw;
static pthread_mutex_t g_wmu = PTHREAD_MUTEX_INITIALIZER;

static ssize_t rec_pwrite(int fd, const void *p, size_t n, uint64_t off)
{
    pthread_mutex_lock(&g_wmu);
    if (g_nw < WMAX) {
        wrec *w = &g_w[g_nw++];
        w->fd = fd;
        w->off = off;
        w->n = n;
        memcpy(w->head, p, n < 16 ? n : 16);
    }
    pthread_mutex_unlock(&g_wmu);
    return os_posix.pwrite(fd, p, n, off);
}

static os_ops g_rec_ops;

static void rec_install(void)
{
    g_rec_ops = os_posix;
    g_rec_ops.pwrite = rec_pwrite;
    __atomic_store_n(&os_io, &g_rec_ops, __ATOMIC_RELEASE);
}

static void rec_uninstall(void) { __atomic_store_n(&os_io, &os_posix, __ATOMIC_RELEASE); }

static void rec_clear(void)
{
    pthread_mutex_lock(&g_wmu);
    g_nw = 0;
    pthread_mutex_unlock(&g_wmu);
}

/* A write that starts with a record of kind `kind` (the group writes and
 * the rewrites start with a chain record; zero fills and headers do not). */
static int starts_with(const wrec *w, uint8_t kind) { return w->n >= 16 && w->head[8] == kind; }

/* ------------------------------------------------------------ helpers */

static stele_db *open_store(const char *dir, uint32_t seg)
{
    stele_options o = {.segment_size = seg};
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

static void append(stele_db *db, const char *stream, size_t n, size_t size)
{
    stele_event_in *ev = calloc(n, sizeof *ev);
    char *data = malloc(size + 1);
    CHECK(ev && data);
    for (size_t i = 0; i < size; i++)
        data[i] = (char)('a' + t_rand_below(26));
    for (size_t i = 0; i < n; i++)
        ev[i] = (stele_event_in){.type = "Rewritten", .data = data, .data_len = size};
    CHECK_OK(stele_append(db, stream, STELE_ANY, ev, n, NULL));
    free(ev);
    free(data);
}

static void check_store(const char *dir)
{
    char report[2048];
    int rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "check %s: %s\n", dir, stele_errmsg());
    CHECK_OK(rc);
    CHECK(strstr(report, "commits verified") != NULL);
    if (strstr(report, "await"))
        fprintf(stderr, "check %s: a record awaits:\n%s", dir, report);
    CHECK(strstr(report, "await") == NULL);
}

/* The flags of every chain record in a segment file, in order. */
static size_t chain_flags(const char *path, uint8_t *flags, size_t max)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f)
        return 0;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *img = malloc((size_t)len);
    CHECK(img && fread(img, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    size_t n = 0;
    uint64_t off = SEG_HEADER_SIZE;
    while (off + REC_HEADER_SIZE <= (uint64_t)len && n < max) {
        rec r;
        const char *why;
        if (rec_decode_in(img, off, (uint64_t)len - off, &r, &why) != REC_OK)
            break;
        if (r.kind == REC_CHAIN)
            flags[n++] = r.flags;
        if (r.kind == REC_SEAL)
            break;
        off += r.len;
    }
    free(img);
    return n;
}

/* After the appends: every rewrite (a write starting with a chain record at
 * an offset a group write started at) covers `want`: 1 the whole group
 * write it follows, 0 only the records (`rec_len` bytes: a one-commit
 * group's). Returns the number of rewrites seen. */
static size_t check_rewrites(int whole, size_t rec_len, const char *what)
{
    size_t rewrites = 0;
    pthread_mutex_lock(&g_wmu);
    for (size_t i = 1; i < g_nw; i++) {
        wrec *w = &g_w[i];
        if (!starts_with(w, REC_CHAIN))
            continue;
        /* The group write it rewrites: the latest earlier write at that
         * offset of that file. */
        wrec *g = NULL;
        for (size_t j = i; j-- > 0;)
            if (g_w[j].fd == w->fd && g_w[j].off == w->off && starts_with(&g_w[j], REC_CHAIN)) {
                g = &g_w[j];
                break;
            }
        if (!g)
            continue; /* a group write, not a rewrite */
        rewrites++;
        size_t want = whole ? g->n : rec_len;
        if (w->n != want)
            fprintf(stderr, "%s: rewrite at %" PRIu64 " wrote %zu bytes, want %zu (group %zu)\n",
                    what, w->off, w->n, want, g->n);
        CHECK(w->n == want);
    }
    pthread_mutex_unlock(&g_wmu);
    return rewrites;
}

/* Trailing records: every rewrite is one record (CHAIN_REC_SIZE bytes)
 * that ends exactly where a group write of that file ended. Returns the
 * number of rewrites seen. */
static size_t check_trailing_rewrites(void)
{
    size_t rewrites = 0;
    pthread_mutex_lock(&g_wmu);
    for (size_t i = 1; i < g_nw; i++) {
        wrec *w = &g_w[i];
        if (w->n != CHAIN_REC_SIZE || !starts_with(w, REC_CHAIN))
            continue;
        wrec *g = NULL;
        for (size_t j = i; j-- > 0;)
            if (g_w[j].fd == w->fd && g_w[j].n > CHAIN_REC_SIZE &&
                g_w[j].off + g_w[j].n == w->off + w->n) {
                g = &g_w[j];
                break;
            }
        if (!g)
            fprintf(stderr, "trailing: rewrite at %" PRIu64 " ends no group write\n", w->off);
        CHECK(g != NULL);
        rewrites++;
    }
    pthread_mutex_unlock(&g_wmu);
    return rewrites;
}

/* -------------------------------------------------------------- cases */

static void test_trailing(void)
{
    const char *dir = t_tmpdir("rw-trail");
    rec_install();
    stele_db *db = open_store(dir, 16u << 20);
    rec_clear();
    for (int i = 0; i < 20; i++) {
        append(db, "T-1", 1 + (size_t)(i % 4), 50 + t_rand_below(2000));
        stele_chain_head h;
        CHECK_OK(stele_chain_get_head(db, &h)); /* waits for the rewrite */
        CHECK(h.commits == (uint64_t)i + 1);
    }
    CHECK(check_trailing_rewrites() == 20);
    stele_close(db);
    rec_uninstall();
    check_store(dir);
    t_rmdir(dir);
    passed++;
}

static void test_whole(void)
{
    const char *dir = t_tmpdir("rw-whole");
    rec_install();
    stele_db *db = open_store(dir, 16u << 20);
    rec_clear();
    for (int i = 0; i < 20; i++) {
        append(db, "W-1", 1 + (size_t)(i % 4), 50 + t_rand_below(2000));
        stele_chain_head h;
        CHECK_OK(stele_chain_get_head(db, &h)); /* waits for the rewrite */
        CHECK(h.commits == (uint64_t)i + 1);
    }
    CHECK(check_rewrites(1, 0, "whole") == 20);
    stele_close(db);
    rec_uninstall();
    check_store(dir);
    t_rmdir(dir);
    passed++;
}

typedef struct th_arg {
    stele_db *db;
    int id;
    int n;
} th_arg;

static void *appender(void *p)
{
    th_arg *a = p;
    char stream[32];
    snprintf(stream, sizeof stream, "T-%d", a->id);
    for (int i = 0; i < a->n; i++)
        append(a->db, stream, 1 + (size_t)(i % 3), 100);
    return NULL;
}

static void test_many(void)
{
    const char *dir = t_tmpdir("rw-many");
    rec_install();
    stele_db *db = open_store(dir, 16u << 20);
    rec_clear();
    pthread_t th[6];
    th_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (th_arg){.db = db, .id = i, .n = 60};
        CHECK(pthread_create(&th[i], NULL, appender, &args[i]) == 0);
    }
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == 360);
    size_t n = check_rewrites(1, 0, "many");
    CHECK(n >= 1 && n <= 360);
    printf("  many: 360 commits in %zu groups, every rewrite to its group's end\n", n);
    stele_close(db);
    rec_uninstall();
    check_store(dir);
    t_rmdir(dir);
    passed++;
}

static void test_large_and_off(void)
{
    /* Past the limit: the record alone. */
    const char *dir = t_tmpdir("rw-large");
    rec_install();
    stele_db *db = open_store(dir, 16u << 20);
    append(db, "L-1", 1, 100);
    rec_clear();
    append(db, "L-1", 100, 1000);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(check_rewrites(0, CHAIN_REC_SIZE, "large") == 1);
    stele_close(db);
    check_store(dir);
    t_rmdir(dir);

    /* Switched off: the record alone at every size. */
    dir = t_tmpdir("rw-off");
    setenv("STELE_CHAIN_REWRITE_MAX", "off", 1);
    db = open_store(dir, 16u << 20);
    setenv("STELE_CHAIN_REWRITE_MAX", "65536", 1);
    rec_clear();
    for (int i = 0; i < 5; i++) {
        append(db, "O-1", 1, 500);
        CHECK_OK(stele_chain_get_head(db, &h));
    }
    CHECK(check_rewrites(0, CHAIN_REC_SIZE, "off") == 5);
    stele_close(db);
    rec_uninstall();
    check_store(dir);
    t_rmdir(dir);
    passed++;
}

static void test_backup(void)
{
    const char *dir = t_tmpdir("rw-bk");
    char bk[600], rs[600], p[700];
    snprintf(bk, sizeof bk, "%s", t_tmpdir("rw-bk-dest"));
    snprintf(rs, sizeof rs, "%s", t_tmpdir("rw-bk-restored"));
    t_rmdir(rs);
    stele_db *db = open_store(dir, 16u << 20);
    snprintf(p, sizeof p, "%s/segments/00000000.seg", bk);
    for (int i = 0; i < 8; i++) {
        append(db, "B-1", 1 + (size_t)(i % 2), 300);
        /* Right after the append: its group may not be rewritten yet. */
        stele_backup_result r;
        CHECK_OK(stele_backup(db, bk, NULL, &r));
        uint8_t flags[64];
        size_t n = chain_flags(p, flags, 64);
        CHECK(n == (size_t)i + 1);
        for (size_t k = 0; k < n; k++) {
            if (flags[k] & REC_CHAIN_PENDING)
                fprintf(stderr, "backup %d: chain record %zu copied pending\n", i, k);
            CHECK(!(flags[k] & REC_CHAIN_PENDING));
            /* The layout the store writes. */
            CHECK(!!(flags[k] & REC_CHAIN_TRAILING) == !getenv("STELE_CHAIN_LAYOUT"));
        }
    }
    stele_close(db);
    CHECK_OK(stele_restore(bk, rs, NULL, NULL));
    db = open_store(rs, 16u << 20);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == 8 && h.position == 12);
    stele_close(db);
    check_store(rs);
    t_rmdir(rs);
    t_rmdir(bk);
    t_rmdir(dir);
    passed++;
}

static void test_threads(void)
{
    const char *dir = t_tmpdir("rw-threads");
    char bk[600], rs[600];
    snprintf(bk, sizeof bk, "%s", t_tmpdir("rw-threads-bk"));
    snprintf(rs, sizeof rs, "%s", t_tmpdir("rw-threads-rs"));
    t_rmdir(rs);
    stele_db *db = open_store(dir, 256u << 10);
    append(db, "T-0", 1, 100);
    pthread_t th[4];
    th_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (th_arg){.db = db, .id = i, .n = 150};
        CHECK(pthread_create(&th[i], NULL, appender, &args[i]) == 0);
    }
    int exports = 0, backups = 0;
    for (int round = 0; round < 40; round++) {
        stele_chain_head h;
        CHECK_OK(stele_chain_get_head(db, &h));
        char *json = NULL;
        size_t len = 0;
        CHECK_OK(stele_chain_export(db, h.position - 1, h.position - 1, &json, &len));
        stele_chain_verified v;
        CHECK_OK(stele_chain_verify(json, len, NULL, &v));
        CHECK(v.events == 1);
        stele_free(json);
        exports++;
        if (round % 8 == 0) {
            stele_backup_result r;
            CHECK_OK(stele_backup(db, bk, NULL, &r));
            backups++;
        }
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    stele_backup_result r;
    CHECK_OK(stele_backup(db, bk, NULL, &r));
    stele_close(db);
    check_store(dir);
    CHECK_OK(stele_restore(bk, rs, NULL, NULL));
    check_store(rs);
    printf("  threads: %d exports and %d backups while 4 threads appended\n", exports,
           backups + 1);
    t_rmdir(rs);
    t_rmdir(bk);
    t_rmdir(dir);
    passed++;
}

int main(void)
{
    t_seed();
    /* The default size, whatever the fdatasyncs take: by default the
     * whole range is rewritten only while they are slow (a disk), and
     * $TMPDIR may be a tmpfs. */
    setenv("STELE_CHAIN_REWRITE_MAX", "65536", 1);
    setenv("STELE_CHAIN_LAYOUT", "leading", 1);
    test_whole();
    test_many();
    test_large_and_off();
    test_backup();
    test_threads();
    unsetenv("STELE_CHAIN_LAYOUT");
    test_trailing();
    test_backup();
    test_threads();
    return t_done("test_chain_rewrite", passed);
}
