/*
 * test_idx_ckpt.c - durable index checkpoints (src/index/index_durable.c,
 * src/backend/local_ckpt.c): after a machine crash the index goes back to
 * the last durable checkpoint and only the log after it is replayed.
 *
 * A machine crash is simulated on the index file itself. A child process
 * opens the store (the open takes a durable checkpoint), copies
 * index/data.mdb as it is right after that checkpoint, appends more
 * events (each acknowledged, so fsynced in the log) and dies without
 * closing. The parent then makes the data.mdb a crashed machine could have
 * left: every page that differs between the copy and the final file (the
 * pages written after the checkpoint, both meta pages among them) becomes,
 * at random, the final version, the copy's version, garbage or zeros:
 * unsynced writes reached the disk in any subset and order, or tore. Pages
 * of the checkpoint's snapshot are the same in both, as the scheme
 * promises. stele.lock then names another boot.
 *
 * Cases:
 *   open        the checkpoint taken at open; reopen after the crash:
 *               recovery says RECOVER_DURABLE and replayed exactly the
 *               events appended after it; every acknowledged event is
 *               readable through $all, its stream, its id (an idempotent
 *               retry answers with its position) and the type, tag and
 *               category indexes; appends go on; stele_check passes.
 *               Several rounds with different random pages.
 *   thread      the same with the checkpoint taken by the checkpointer
 *               thread (STELE_INDEX_CKPT_EVENTS) after one big append.
 *   failed      the checkpointer's next checkpoint fails (EIO on the
 *               fdatasync of index/durable.tmp): the one taken at open stays
 *               valid, and the crash recovers from it.
 *   bad file    index/durable with a flipped byte: full rebuild, same data.
 *   mismatch    index/durable valid (checksum recomputed) but naming
 *               another index checkpoint: the check refuses it, full
 *               rebuild, same data.
 *   off         STELE_INDEX_CKPT_MS=0: full rebuild, same data.
 *   same boot   a process crash: RECOVER_FAST, and the open writes a new
 *               index/durable; a clean close removes it.
 *
 * Replay with TEST_SEED=n; TEST_KEEP_DIRS=1 keeps the directories.
 */
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/local_int.h"
#include "os/os.h"
#include "util/util.h"

#define MAXEV 8192
#define NSTREAMS 7
#define NTYPES 3
#define NTAGS 2

typedef struct mev {
    int stream, type, tag;
    size_t batch, batch_len; /* its append: first event, events */
    uint8_t id[16];
    uint64_t pos, rev;
} mev;

/* The model, shared with the children (their acknowledged appends). */
typedef struct model {
    size_t n;
    mev ev[MAXEV];
    uint64_t next_rev[NSTREAMS];
} model;

static model *M;

static void stream_name(int s, char *out) { snprintf(out, 32, "Ord-%d", s); }

static void ev_data(size_t i, char *out) { snprintf(out, 64, "{\"i\":%zu}", i); }

static const char *type_name(int t)
{
    static const char *n[NTYPES] = {"Placed", "Paid", "Shipped"};
    return n[t];
}

static const char *tag_name(int t)
{
    static const char *n[NTAGS] = {"region:eu", "region:us"};
    return n[t];
}

static void fill_in(const mev *e, size_t i, char *data, const char **tag, stele_event_in *in)
{
    ev_data(i, data);
    *tag = tag_name(e->tag);
    memset(in, 0, sizeof *in);
    in->id = e->id;
    in->type = type_name(e->type);
    in->data = data;
    in->data_len = strlen(data);
    in->tags = tag;
    in->ntags = 1;
    in->flags = STELE_EVENT_JSON;
}

/* Append `count` events to one random stream in one append. */
static void append_batch(stele_db *db, size_t count)
{
    CHECK(M->n + count <= MAXEV);
    int s = (int)(t_rand() % NSTREAMS);
    char name[32], data[64][64];
    const char *tags[64];
    stele_event_in in[64];
    stele_event_in *big = count > 64 ? calloc(count, sizeof *big) : in;
    char(*bigdata)[64] = count > 64 ? calloc(count, 64) : data;
    const char **bigtags = count > 64 ? calloc(count, sizeof *bigtags) : tags;
    for (size_t k = 0; k < count; k++) {
        mev *e = &M->ev[M->n + k];
        e->stream = s;
        e->batch = M->n;
        e->batch_len = count;
        e->type = (int)(t_rand() % NTYPES);
        e->tag = (int)(t_rand() % NTAGS);
        for (int b = 0; b < 16; b++)
            e->id[b] = (uint8_t)t_rand();
        /* Unique even though each child starts from the parent's PRNG. */
        st64(e->id, 0x1000 + M->n + k);
        e->id[6] = (uint8_t)((e->id[6] & 0x0f) | 0x40);
        e->id[8] = (uint8_t)((e->id[8] & 0x3f) | 0x80);
        fill_in(e, M->n + k, bigdata[k], &bigtags[k], &big[k]);
    }
    stream_name(s, name);
    stele_append_result res;
    CHECK_OK(stele_append(db, name, STELE_ANY, big, count, &res));
    for (size_t k = 0; k < count; k++) {
        M->ev[M->n + k].pos = res.first_position + k;
        M->ev[M->n + k].rev = res.first_revision + k;
    }
    CHECK(res.first_revision == M->next_rev[s]);
    M->next_rev[s] += count;
    M->n += count; /* acknowledged */
    if (big != in) {
        free(big);
        free(bigdata);
        free(bigtags);
    }
}

static void append_some(stele_db *db, size_t total)
{
    size_t done = 0;
    while (done < total) {
        size_t k = 1 + t_rand() % 5;
        if (k > total - done)
            k = total - done;
        append_batch(db, k);
        done += k;
    }
}

static stele_db *open_db(const char *dir)
{
    stele_db *db = NULL;
    stele_options o = {0};
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

/* ------------------------------------------------------------ checking */

static void verify(stele_db *db)
{
    /* $all, forwards, in pages. */
    size_t seen = 0;
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        CHECK_OK(stele_read_all(db, from, STELE_FORWARDS, 500, &pg));
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n; i++, seen++) {
            const stele_event *e = stele_page_event(pg, i);
            CHECK(seen < M->n && e->position == seen);
            if (seen < M->n) {
                const mev *m = &M->ev[seen];
                char name[32];
                stream_name(m->stream, name);
                CHECK(!memcmp(e->id, m->id, 16) && e->revision == m->rev &&
                      !strcmp(e->stream, name) && !strcmp(e->type, type_name(m->type)));
            }
        }
        uint64_t next;
        int more = stele_page_next(pg, &next) == 1 && n > 0;
        stele_page_free(pg);
        if (!more)
            break;
        from = next;
    }
    CHECK(seen == M->n);
    /* Each stream, and its head. */
    for (int s = 0; s < NSTREAMS; s++) {
        char name[32];
        stream_name(s, name);
        stele_page *pg;
        CHECK_OK(stele_read_stream(db, name, 0, STELE_FORWARDS, MAXEV, &pg));
        size_t n = stele_page_count(pg), k = 0;
        for (size_t i = 0; i < M->n; i++) {
            if (M->ev[i].stream != s)
                continue;
            CHECK(k < n);
            if (k < n) {
                const stele_event *e = stele_page_event(pg, k);
                CHECK(e->position == M->ev[i].pos && e->revision == k &&
                      !memcmp(e->id, M->ev[i].id, 16));
            }
            k++;
        }
        CHECK(k == n && k == M->next_rev[s]);
        stele_page_free(pg);
        stele_stream_info info;
        if (k) {
            CHECK_OK(stele_stream_head(db, name, &info));
            CHECK(info.last_revision == k - 1);
        }
    }
    /* The type, tag and category indexes. */
    for (int kind = 0; kind < 3; kind++) {
        int nkeys = kind == 0 ? NTYPES : kind == 1 ? NTAGS : 1;
        for (int key = 0; key < nkeys; key++) {
            stele_query q = {0};
            q.kind = kind == 0 ? STELE_QUERY_TYPE : kind == 1 ? STELE_QUERY_TAG
                                                               : STELE_QUERY_CATEGORY;
            q.key = kind == 0 ? type_name(key) : kind == 1 ? tag_name(key) : "Ord";
            q.direction = STELE_FORWARDS;
            q.limit = MAXEV;
            stele_page *pg;
            CHECK_OK(stele_read_query(db, &q, &pg));
            size_t n = stele_page_count(pg), k = 0;
            for (size_t i = 0; i < M->n; i++) {
                int match = kind == 0 ? M->ev[i].type == key
                                      : kind == 1 ? M->ev[i].tag == key : 1;
                if (!match)
                    continue;
                CHECK(k < n && stele_page_event(pg, k)->position == M->ev[i].pos);
                k++;
            }
            CHECK(k == n);
            stele_page_free(pg);
        }
    }
    /* By id: a retry of each append is recognised with its positions. */
    for (size_t i = 0; i < M->n; i += M->ev[i].batch_len) {
        const mev *m = &M->ev[i];
        size_t k = m->batch_len;
        CHECK(m->batch == i && k >= 1);
        char name[32], (*data)[64] = calloc(k, 64);
        const char **tags = calloc(k, sizeof *tags);
        stele_event_in *in = calloc(k, sizeof *in);
        stream_name(m->stream, name);
        for (size_t j = 0; j < k; j++)
            fill_in(&M->ev[i + j], i + j, data[j], &tags[j], &in[j]);
        stele_append_result res;
        CHECK_OK(stele_append(db, name, STELE_ANY, in, k, &res));
        CHECK(res.idempotent == 1 && res.first_position == m->pos);
        free(data);
        free(tags);
        free(in);
        if (!k)
            break;
    }
}

static void check_store(const char *dir)
{
    char report[4096];
    int rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "stele_check: %s\n", report);
    CHECK_OK(rc);
}

/* ---------------------------------------------------- the simulated crash */

static uint8_t *read_all(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    struct stat sb;
    CHECK(fstat(fd, &sb) == 0);
    uint8_t *p = calloc(1, (size_t)sb.st_size + 1);
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, p + got, (size_t)sb.st_size - got);
        CHECK(r > 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *n = got;
    return p;
}

static void write_all(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    size_t put = 0;
    while (put < n) {
        ssize_t w = write(fd, p + put, n - put);
        CHECK(w > 0);
        if (w <= 0)
            break;
        put += (size_t)w;
    }
    close(fd);
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    uint8_t *p = read_all(from, &n);
    write_all(to, p, n);
    free(p);
}

/* Make dir/index/data.mdb what a machine crash could leave after the
 * checkpoint whose file image is `img`. Returns the pages changed. */
static size_t crash_index(const char *dir, const char *img)
{
    char path[600];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    size_t na, nb;
    uint8_t *a = read_all(img, &na), *b = read_all(path, &nb);
    size_t ps = (size_t)sysconf(_SC_PAGESIZE), n = na > nb ? na : nb, changed = 0;
    uint8_t *out = calloc(1, n);
    for (size_t off = 0; off < n; off += ps) {
        size_t len = n - off < ps ? n - off : ps;
        const uint8_t *pa = off + len <= na ? a + off : NULL;
        const uint8_t *pb = off + len <= nb ? b + off : NULL;
        if (pb)
            memcpy(out + off, pb, len);
        if (pa && pb && !memcmp(pa, pb, len))
            continue;
        changed++;
        switch (t_rand() % 4) {
        case 0: /* the newest write reached the disk */
            break;
        case 1: /* it did not: the old bytes */
            if (pa)
                memcpy(out + off, pa, len);
            break;
        case 2: /* torn: garbage */
            for (size_t i = 0; i < len; i++)
                out[off + i] = (uint8_t)t_rand();
            break;
        default:
            memset(out + off, 0, len);
        }
    }
    write_all(path, out, n);
    free(a);
    free(b);
    free(out);
    return changed;
}

static void other_boot(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/stele.lock", dir);
    const char *t = "open 00000000-dead-beef-0000-000000000001\n";
    write_all(path, (const uint8_t *)t, strlen(t));
}

static int durable_exists(const char *dir)
{
    char path[600];
    struct stat sb;
    snprintf(path, sizeof path, "%s/index/durable", dir);
    return stat(path, &sb) == 0;
}

/* Run fn in a child process that dies without closing anything. */
static void in_child(void (*fn)(const char *, const char *), const char *dir, const char *img)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int before = t_failures;
        fn(dir, img);
        _exit(t_failures != before ? 1 : 0);
    }
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static size_t g_na, g_nb;
/* The store a crashing child leaves open (reachable: no leak report from
 * valgrind for what a crash leaves behind). */
static stele_db *volatile g_left_open;

/* The first part, closed cleanly. */
static void child_first(const char *dir, const char *img)
{
    (void)img;
    stele_db *db = open_db(dir);
    append_some(db, g_na);
    stele_close(db);
}

/* Open (a durable checkpoint at open), copy the index, append, crash. */
static void child_crash_after_open(const char *dir, const char *img)
{
    stele_db *db = open_db(dir);
    CHECK(durable_exists(dir));
    char path[600];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    copy_file(path, img);
    append_some(db, g_nb);
    g_left_open = db; /* dies here, the store open */
}

/* One big append crosses STELE_INDEX_CKPT_EVENTS: the thread takes a
 * checkpoint of it; copy the index, append less than the threshold,
 * crash. */
static void child_crash_after_thread(const char *dir, const char *img)
{
    setenv("STELE_INDEX_CKPT_EVENTS", "500", 1);
    stele_db *db = open_db(dir);
    uint64_t before = ckpt_taken_total;
    append_batch(db, 600);
    /* Wait for the checkpointer (generous bound: a loaded machine). */
    for (int i = 0; i < 6000 && ckpt_taken_total == before; i++)
        usleep(10000);
    CHECK(ckpt_taken_total == before + 1);
    char path[600];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    copy_file(path, img);
    append_some(db, g_nb);
    g_left_open = db;
}

/* The checkpoint at open succeeds (copy the index then); the thread's
 * next one fails writing index/durable (EIO on its fdatasync); more
 * appends; crash. The checkpoint at open must still be good. */
static void child_crash_after_failed(const char *dir, const char *img)
{
    setenv("STELE_INDEX_CKPT_EVENTS", "100", 1);
    stele_db *db = open_db(dir);
    char path[600];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    copy_file(path, img);
    uint64_t failed = ckpt_failed_total, taken = ckpt_taken_total;
    os_fault_arm(OS_FAULT_EIO_SYNC, "durable.tmp", 0, 0);
    append_batch(db, 150);
    for (int i = 0; i < 6000 && ckpt_failed_total == failed; i++)
        usleep(10000);
    CHECK(ckpt_failed_total == failed + 1 && ckpt_taken_total == taken);
    os_fault_reset();
    append_some(db, g_nb);
    g_left_open = db;
}

static void reset_model(void) { memset(M, 0, sizeof *M); }

/* Build a store whose last durable checkpoint covers `covered` events and
 * which then crashed with more events acknowledged. */
enum { VIA_OPEN, VIA_THREAD, VIA_FAILED };

static void crashed_store(const char *dir, const char *img, int via)
{
    reset_model();
    in_child(child_first, dir, img);
    CHECK(M->n == g_na);
    in_child(via == VIA_THREAD   ? child_crash_after_thread
             : via == VIA_FAILED ? child_crash_after_failed
                                 : child_crash_after_open,
             dir, img);
    CHECK(M->n == g_na + g_nb + (via == VIA_THREAD ? 600 : via == VIA_FAILED ? 150 : 0));
    size_t changed = crash_index(dir, img);
    CHECK(changed >= 2); /* at least the meta pages */
    other_boot(dir);
}

static char g_why[256]; /* the crash recovery's reason for a rebuild */

static void reopen_expect(const char *dir, int mode, uint64_t from)
{
    stele_db *db = open_db(dir);
    if (!db)
        return;
    snprintf(g_why, sizeof g_why, "%s", recover_last.why);
    if (recover_last.mode != mode || recover_last.from_pos != from ||
        recover_last.to_pos != M->n)
        fprintf(stderr, "recovery: mode %d from %llu to %llu (%s); want mode %d from %llu to %zu\n",
                recover_last.mode, (unsigned long long)recover_last.from_pos,
                (unsigned long long)recover_last.to_pos, recover_last.why, mode,
                (unsigned long long)from, M->n);
    CHECK(recover_last.mode == mode);
    CHECK(recover_last.from_pos == from);
    printf("  recovery: mode %d, replayed positions %llu..%llu%s%s\n", recover_last.mode,
           (unsigned long long)recover_last.from_pos, (unsigned long long)recover_last.to_pos,
           recover_last.why[0] ? ": " : "", recover_last.why);
    CHECK(recover_last.to_pos == M->n);
    verify(db);
    append_some(db, 50); /* the store goes on */
    verify(db);
    stele_close(db);
    check_store(dir);
    /* And opens again the ordinary way. */
    db = open_db(dir);
    CHECK(recover_last.mode == RECOVER_FAST && recover_last.from_pos == M->n);
    stele_close(db);
}

/* A store left by crashed_store in a fresh directory (its image in img,
 * 600 bytes), after g_na events before the checkpoint and g_nb after. */
static const char *crashed_case(const char *tag, size_t na, size_t nb, int via, char *img)
{
    const char *dir = t_tmpdir(tag);
    snprintf(img, 600, "%s.img", dir);
    g_na = na;
    g_nb = nb;
    crashed_store(dir, img, via);
    return dir;
}

static void case_done(const char *dir, const char *img)
{
    unlink(img);
    t_rmdir(dir);
}

static void case_open(int round)
{
    char img[600];
    const char *dir = crashed_case("idxckpt-open", 400 + (size_t)round * 100, 200, VIA_OPEN, img);
    reopen_expect(dir, RECOVER_DURABLE, g_na);
    case_done(dir, img);
}

static void case_thread(void)
{
    char img[600];
    const char *dir = crashed_case("idxckpt-thread", 300, 150, VIA_THREAD, img);
    reopen_expect(dir, RECOVER_DURABLE, g_na + 600);
    case_done(dir, img);
}

static void case_failed(void)
{
    char img[600];
    const char *dir = crashed_case("idxckpt-failed", 300, 100, VIA_FAILED, img);
    reopen_expect(dir, RECOVER_DURABLE, g_na);
    case_done(dir, img);
}

static void case_bad_file(void)
{
    char img[600];
    char path[600];
    const char *dir = crashed_case("idxckpt-bad", 300, 120, VIA_OPEN, img);
    snprintf(path, sizeof path, "%s/index/durable", dir);
    size_t n;
    uint8_t *p = read_all(path, &n);
    CHECK(n > 100);
    p[40] ^= 0x10; /* inside the checkpoint copy */
    write_all(path, p, n);
    free(p);
    reopen_expect(dir, RECOVER_REBUILD, 0);
    CHECK(strstr(g_why, "checksum") != NULL);
    case_done(dir, img);
}

static void case_mismatch(void)
{
    char img[600];
    char path[600];
    const char *dir = crashed_case("idxckpt-mismatch", 300, 120, VIA_OPEN, img);
    snprintf(path, sizeof path, "%s/index/durable", dir);
    size_t n;
    uint8_t *p = read_all(path, &n);
    CHECK(n > 100);
    /* next_pos of the stored checkpoint (bytes 24+8), checksum redone. */
    st64(p + 32, ld64(p + 32) + 1);
    st32(p + n - 4, crc32c(0, p, n - 4));
    write_all(path, p, n);
    free(p);
    reopen_expect(dir, RECOVER_REBUILD, 0);
    CHECK(strstr(g_why, "differs") != NULL);
    case_done(dir, img);
}

static void case_off(void)
{
    char img[600];
    const char *dir = crashed_case("idxckpt-off", 300, 120, VIA_OPEN, img);
    setenv("STELE_INDEX_CKPT_MS", "0", 1);
    reopen_expect(dir, RECOVER_REBUILD, 0);
    CHECK(strstr(g_why, "off") != NULL);
    CHECK(!durable_exists(dir));
    setenv("STELE_INDEX_CKPT_MS", "3600000", 1);
    case_done(dir, img);
}

static void child_crash(const char *dir, const char *img)
{
    (void)img;
    stele_db *db = open_db(dir);
    append_some(db, g_nb);
    g_left_open = db;
}

static void case_same_boot(void)
{
    const char *dir = t_tmpdir("idxckpt-same");
    reset_model();
    g_na = 200;
    g_nb = 100;
    in_child(child_first, dir, NULL);
    in_child(child_crash, dir, NULL);
    CHECK(durable_exists(dir));
    stele_db *db = open_db(dir);
    CHECK(recover_last.mode == RECOVER_FAST && recover_last.to_pos == M->n);
    CHECK(durable_exists(dir)); /* a new one, for this open */
    verify(db);
    stele_close(db);
    CHECK(!durable_exists(dir)); /* nothing holds its snapshot after close */
    check_store(dir);
    t_rmdir(dir);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    t_seed();
    /* A small map keeps the index file (and the page compare) small; no
     * checkpoint by time, so each case decides when one is taken. */
    setenv("STELE_INDEX_MAP_MB", "32", 1);
    setenv("STELE_INDEX_CKPT_MS", "3600000", 1);
    setenv("STELE_INDEX_CKPT_EVENTS", "1000000", 1);
    M = mmap(NULL, sizeof *M, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(M != MAP_FAILED);
    for (int round = 0; round < 3; round++) {
        printf("open, round %d\n", round);
        case_open(round);
    }
    printf("thread\n");
    case_thread();
    printf("failed checkpoint\n");
    case_failed();
    printf("bad file\n");
    case_bad_file();
    printf("mismatch\n");
    case_mismatch();
    printf("off\n");
    case_off();
    printf("same boot\n");
    case_same_boot();
    printf("%s\n", t_failures ? "FAILED" : "ok");
    return t_failures != 0;
}
