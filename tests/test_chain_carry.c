/*
 * test_chain_carry.c - a group's chain records carried into the next
 * group's write (src/backend/local_chain.c, "Carried to the next write";
 * docs/architecture.md, "The hash chain in the writer"), read from the
 * segment files:
 *
 *   carry    after an append its chain record is still pending in the file;
 *            after the next append it is complete (written in front of
 *            that append's records, one range) and the new one pending; an
 *            export writes the carried record first and verifies; close
 *            writes the last one, and `stele check` finds none awaiting;
 *   large    a commit whose range passes the carry's limit (100 KB) is
 *            rewritten in place once acknowledged: complete as soon as the
 *            head covers it, before any later append;
 *   seal     appends over small segments: every sealed segment holds only
 *            complete chain records (carried records are written before
 *            the seal);
 *   backup   a backup right after an append holds that append's chain
 *            record complete; a second backup extends the tail's copy, and
 *            the restore opens and verifies;
 *   threads  4 threads append while another exports the newest event
 *            and backs the store up, over and over: every export verifies,
 *            the backup restores, and check verifies the chain (TSan runs
 *            it: the carry is shared under its mutex);
 *   faults   a write fault in an append's write (which carries the previous
 *            append's records) fails that append, and after reopen the
 *            previous one is there with its record written; a fault in the
 *            in-place rewrite of a large commit fails no append, the next
 *            is read-only naming the hash chain, and reopen writes it.
 *
 * Replay with TEST_SEED=n.
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

static stele_db *open_store(const char *dir, uint32_t seg)
{
    stele_options o = {.segment_size = seg};
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

/* One commit of n events of `size` bytes of data each. */
static void append(stele_db *db, const char *stream, size_t n, size_t size)
{
    stele_event_in *ev = calloc(n, sizeof *ev);
    char *data = malloc(size + 1);
    CHECK(ev && data);
    for (size_t i = 0; i < size; i++)
        data[i] = (char)('a' + t_rand_below(26));
    for (size_t i = 0; i < n; i++)
        ev[i] = (stele_event_in){.type = "Carried", .data = data, .data_len = size};
    CHECK_OK(stele_append(db, stream, STELE_ANY, ev, n, NULL));
    free(ev);
    free(data);
}

/* The chain records of a segment file, in order: their flags (0 complete,
 * REC_CHAIN_PENDING pending; 0xff a record whose checksum fails). */
typedef struct chains {
    uint8_t flags[4096];
    size_t n;
    int sealed;
} chains;

static void read_chains(const char *path, chains *c)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *img = malloc((size_t)len);
    CHECK(img && fread(img, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    uint64_t off = SEG_HEADER_SIZE;
    while (off + REC_HEADER_SIZE <= (uint64_t)len && c->n < 4096) {
        rec r;
        const char *why;
        if (rec_decode_in(img, off, (uint64_t)len - off, &r, &why) != REC_OK) {
            if (ld32(img + off) == CHAIN_REC_SIZE && img[off + 8] == REC_CHAIN) {
                c->flags[c->n++] = 0xff;
                off += CHAIN_REC_SIZE;
                continue;
            }
            break;
        }
        if (r.kind == REC_CHAIN)
            c->flags[c->n++] = r.flags;
        if (r.kind == REC_SEAL) {
            c->sealed = 1;
            break;
        }
        off += r.len;
    }
    free(img);
}

static void seg_file(const char *dir, unsigned seg, char *out, size_t n)
{
    snprintf(out, n, "%s/log/%08u.seg", dir, seg);
}

static void expect_tail(const char *dir, unsigned seg, size_t n, int last_pending,
                        const char *what)
{
    char p[600];
    seg_file(dir, seg, p, sizeof p);
    chains c;
    read_chains(p, &c);
    if (c.n != n)
        fprintf(stderr, "%s: %zu chain records, want %zu\n", what, c.n, n);
    CHECK(c.n == n);
    for (size_t i = 0; i < c.n; i++) {
        int want = i + 1 == c.n && last_pending ? REC_CHAIN_PENDING : 0;
        if (c.flags[i] != want)
            fprintf(stderr, "%s: chain record %zu has flags 0x%x, want 0x%x\n", what, i,
                    c.flags[i], want);
        CHECK(c.flags[i] == want);
    }
}

static void check_store(const char *dir, int awaiting)
{
    char report[2048];
    int rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "check %s: %s\n", dir, stele_errmsg());
    CHECK_OK(rc);
    CHECK(strstr(report, "commits verified") != NULL);
    if ((strstr(report, "await") != NULL) != awaiting)
        fprintf(stderr, "check %s: want %s awaiting record:\n%s", dir, awaiting ? "an" : "no",
                report);
    CHECK((strstr(report, "await") != NULL) == awaiting);
}

static void test_carry(void)
{
    const char *dir = t_tmpdir("carry");
    stele_db *db = open_store(dir, 16u << 20);
    append(db, "C-1", 1, 200);
    expect_tail(dir, 0, 1, 1, "after one append");
    append(db, "C-1", 3, 300);
    expect_tail(dir, 0, 2, 1, "after two appends");
    append(db, "C-2", 1, 50);
    expect_tail(dir, 0, 3, 1, "after three appends");
    /* An export reads the head's records from the file: it writes the
     * carried one first. */
    char *json = NULL;
    size_t len = 0;
    CHECK_OK(stele_chain_export(db, 4, 4, &json, &len));
    stele_chain_verified v;
    CHECK_OK(stele_chain_verify(json, len, NULL, &v));
    CHECK(v.events == 1 && v.commits == 1);
    stele_free(json);
    expect_tail(dir, 0, 3, 0, "after an export");
    append(db, "C-2", 2, 100);
    expect_tail(dir, 0, 4, 1, "after an append after the export");
    stele_close(db);
    expect_tail(dir, 0, 4, 0, "after close");
    check_store(dir, 0);
    /* The chain goes on after a reopen. */
    db = open_store(dir, 16u << 20);
    append(db, "C-3", 1, 10);
    expect_tail(dir, 0, 5, 1, "after a reopen and an append");
    stele_close(db);
    check_store(dir, 0);
    t_rmdir(dir);
    passed++;
}

static void test_large(void)
{
    const char *dir = t_tmpdir("carry-large");
    stele_db *db = open_store(dir, 16u << 20);
    append(db, "L-1", 1, 100);
    append(db, "L-1", 100, 1000); /* ~110 KB: past the carry's 64 KiB */
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h)); /* waits for the group's records */
    CHECK(h.commits == 2 && h.position == 101);
    expect_tail(dir, 0, 2, 0, "after a large append");
    append(db, "L-1", 1, 100);
    expect_tail(dir, 0, 3, 1, "after a small append after it");
    stele_close(db);
    check_store(dir, 0);
    t_rmdir(dir);
    passed++;
}

static void test_seal(void)
{
    const char *dir = t_tmpdir("carry-seal");
    stele_db *db = open_store(dir, 64u << 10);
    stele_stats st;
    do {
        append(db, "S-1", 1 + t_rand_below(3), 100 + t_rand_below(900));
        CHECK_OK(stele_get_stats(db, &st));
    } while (st.segments < 4);
    for (unsigned s = 0; s + 1 < st.segments; s++) {
        char p[600], what[64];
        seg_file(dir, s, p, sizeof p);
        chains c;
        read_chains(p, &c);
        snprintf(what, sizeof what, "sealed segment %u", s);
        CHECK(c.sealed && c.n > 10);
        expect_tail(dir, s, c.n, 0, what);
    }
    stele_close(db);
    check_store(dir, 0);
    t_rmdir(dir);
    passed++;
}

static void test_backup(void)
{
    const char *dir = t_tmpdir("carry-bk");
    char bk[600], rs[600];
    snprintf(bk, sizeof bk, "%s", t_tmpdir("carry-bk-dest"));
    snprintf(rs, sizeof rs, "%s", t_tmpdir("carry-bk-restored"));
    t_rmdir(rs);
    stele_db *db = open_store(dir, 16u << 20);
    for (int i = 0; i < 5; i++)
        append(db, "B-1", 1, 300);
    stele_backup_result r;
    CHECK_OK(stele_backup(db, bk, NULL, &r));
    char p[700];
    snprintf(p, sizeof p, "%s/segments/00000000.seg", bk);
    chains c;
    read_chains(p, &c);
    CHECK(c.n == 5);
    for (size_t i = 0; i < c.n; i++)
        CHECK(c.flags[i] == 0);
    /* A second backup extends the tail's copy in place. */
    for (int i = 0; i < 5; i++)
        append(db, "B-1", 2, 300);
    CHECK_OK(stele_backup(db, bk, NULL, &r));
    stele_close(db);
    read_chains(p, &c);
    CHECK(c.n == 10);
    for (size_t i = 0; i < c.n; i++)
        CHECK(c.flags[i] == 0);
    CHECK_OK(stele_restore(bk, rs, NULL, NULL));
    db = open_store(rs, 16u << 20);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == 10 && h.position == 15);
    stele_close(db);
    check_store(rs, 0);
    t_rmdir(rs);
    t_rmdir(bk);
    t_rmdir(dir);
    passed++;
}

typedef struct carry_th {
    stele_db *db;
    int id;
} carry_th;

static void *appender(void *p)
{
    carry_th *a = p;
    char stream[32];
    snprintf(stream, sizeof stream, "T-%d", a->id);
    for (int i = 0; i < 150; i++)
        append(a->db, stream, 1 + (size_t)(i % 3), 100);
    return NULL;
}

static void test_threads(void)
{
    const char *dir = t_tmpdir("carry-threads");
    char bk[600], rs[600];
    snprintf(bk, sizeof bk, "%s", t_tmpdir("carry-threads-bk"));
    snprintf(rs, sizeof rs, "%s", t_tmpdir("carry-threads-rs"));
    t_rmdir(rs);
    stele_db *db = open_store(dir, 256u << 10);
    append(db, "T-0", 1, 100);
    pthread_t th[4];
    carry_th args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (carry_th){.db = db, .id = i};
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
    check_store(dir, 0);
    CHECK_OK(stele_restore(bk, rs, NULL, NULL));
    check_store(rs, 0);
    printf("  threads: %d exports and %d backups while 4 threads appended\n", exports,
           backups + 1);
    t_rmdir(rs);
    t_rmdir(bk);
    t_rmdir(dir);
    passed++;
}

/* A write fault in the second append's write, which carries the first
 * append's chain record. */
static void test_fault_carried(void)
{
    const char *dir = t_tmpdir("carry-fault");
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    stele_db *db = open_store(dir, 16u << 20);
    append(db, "F-1", 2, 300);
    os_fault_arm(OS_FAULT_EIO_WRITE, ".seg", 0, 0);
    stele_event_in ev = {.type = "Carried", .data = "x", .data_len = 1};
    CHECK_RC(stele_append(db, "F-1", STELE_ANY, &ev, 1, NULL), STELE_EIO);
    CHECK(os_fault_fired() == 1);
    os_fault_reset();
    stele_close(db);
    expect_tail(dir, 0, 1, 1, "after the fault");
    check_store(dir, 1);
    db = open_store(dir, 16u << 20); /* writes the pending record */
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == 1 && h.position == 2);
    expect_tail(dir, 0, 1, 0, "after the reopen");
    append(db, "F-1", 1, 10);
    stele_close(db);
    check_store(dir, 0);
    t_rmdir(dir);
    passed++;
}

/* A write fault in a large commit's in-place rewrite, after its
 * acknowledgement. */
static void test_fault_inplace(void)
{
    const char *dir = t_tmpdir("carry-fault-big");
    os_fault_arm(OS_FAULT_NONE, NULL, 0, 0);
    stele_db *db = open_store(dir, 16u << 20);
    append(db, "F-2", 1, 100);
    /* Call 0: the large commit's write (with the first one's record);
     * call 1: its records' rewrite in place. */
    os_fault_arm(OS_FAULT_EIO_WRITE, ".seg", 1, 0);
    append(db, "F-2", 100, 1000);
    stele_event_in ev = {.type = "Carried", .data = "x", .data_len = 1};
    int rc = stele_append(db, "F-2", STELE_ANY, &ev, 1, NULL);
    CHECK_RC(rc, STELE_EREADONLY);
    CHECK(strstr(stele_errmsg(), "hash chain") != NULL);
    os_fault_reset();
    stele_close(db);
    expect_tail(dir, 0, 2, 1, "after the rewrite's fault");
    db = open_store(dir, 16u << 20);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == 2 && h.position == 101);
    expect_tail(dir, 0, 2, 0, "after the reopen");
    stele_close(db);
    check_store(dir, 0);
    t_rmdir(dir);
    passed++;
}

int main(void)
{
    t_seed();
    unsetenv("STELE_CHAIN_CARRY_MAX"); /* the default carry is under test */
    test_carry();
    test_large();
    test_seal();
    test_backup();
    test_threads();
    test_fault_carried();
    test_fault_inplace();
    return t_done("test_chain_carry", passed);
}
