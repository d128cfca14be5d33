/*
 * test_multi_crash.c - multi-stream commits survive SIGKILL whole or not
 * at all (slow test).
 *
 * Each round forks a child that opens the store and moves money from three
 * threads: each transfer is one stele_append_multi over two or three of 8
 * accounts (exact expected revisions read from the heads, the payer's new
 * balance saved as its state now and then, a DCB condition on the transfer's
 * own tag now and then), its events' data naming the transfer ("t=<thread>.
 * <seq> k=<index> n=<count> a=<amount>"). After each success the child
 * writes "first_position count" to a pipe. The parent kills the child after
 * a random 0-300 ms, reopens the store (recovery) and checks:
 *   - every acknowledged commit is there, at its positions, whole;
 *   - every commit in $all is whole: the events of one transfer are
 *     contiguous, indexes 0..n-1 in order, nothing of any transfer missing;
 *   - money is conserved: the balances folded from the accounts' events sum
 *     to 0 (every transfer's debits equal its credits);
 *   - a state snapshot, when there is one, is the balance at its revision;
 *   - stele_check accepts the store after a clean close.
 * Replay with TEST_SEED=n (the kill timing still varies).
 */
#include "testutil.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 25
#define THREADS 3
#define ACCOUNTS 8

static stele_db *cdb;
static int ack_fd;

static void child_die(const char *what, int rc)
{
    char buf[600];
    int k = snprintf(buf, sizeof buf, "child: %s: %s (%s)\n", what, stele_errname(rc),
                     stele_errmsg());
    if (write(2, buf, (size_t)k) < 0) {
    }
    _exit(3);
}

static void acct_name(int i, char *out) { snprintf(out, 32, "Acct-%d", i); }

/* The balance of an account folded from its events (child and parent). */
static long fold(stele_db *db, const char *name, uint64_t *last)
{
    long bal = 0;
    *last = STELE_NONE;
    stele_page *pg;
    if (stele_read_stream(db, name, 0, STELE_FORWARDS, 1000000, &pg))
        return 0;
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        const char *a = strstr((const char *)e->data, "a=");
        long v = a ? strtol(a + 2, NULL, 10) : 0;
        bal += e->type[0] == 'C' ? v : -v;
        *last = e->revision;
    }
    stele_page_free(pg);
    return bal;
}

static void *child_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    uint64_t rng = (uint64_t)getpid() * 2654435761u + (uint64_t)t * 97 + 1;
    for (uint64_t seq = 0;; seq++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        int n = 2 + (int)(rng % 2); /* payer + 1 or 2 payees */
        int who[3];
        for (int i = 0; i < n; i++) {
            int dup;
            do {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                who[i] = (int)(rng % ACCOUNTS);
                dup = 0;
                for (int j = 0; j < i; j++)
                    dup |= who[j] == who[i];
            } while (dup);
        }
        char names[3][32], data[3][96], tag[48];
        stele_append_stream s[3];
        stele_append_record r[3];
        long amount = 1 + (long)(rng % 50);
        long payer_bal = 0;
        snprintf(tag, sizeof tag, "transfer:%d.%d.%" PRIu64, (int)getpid(), t, seq);
        static const char *tags[1];
        const char *mytags[1] = {tag};
        (void)tags;
        for (int i = 0; i < n; i++) {
            acct_name(who[i], names[i]);
            uint64_t last;
            long bal = fold(cdb, names[i], &last);
            if (i == 0)
                payer_bal = bal;
            s[i] = (stele_append_stream){names[i], last == STELE_NONE ? STELE_NO_STREAM
                                                                      : (int64_t)last,
                                         NULL};
            long a = i == 0 ? amount * (n - 1) : amount;
            snprintf(data[i], sizeof data[i], "t=%d.%" PRIu64 " k=%d n=%d a=%ld", t, seq, i, n,
                     a);
            stele_event_in e = {0};
            e.type = i == 0 ? "Debited" : "Credited";
            e.data = data[i];
            e.data_len = strlen(data[i]) + 1; /* the NUL too: strstr in fold */
            e.tags = mytags;
            e.ntags = 1;
            r[i] = (stele_append_record){(size_t)i, e};
        }
        char state[64];
        stele_snapshot_in snap = {0, 1, 0, state, 0};
        if (rng % 4 == 0) {
            snap.state_len = (size_t)snprintf(state, sizeof state, "%ld",
                                              payer_bal - amount * (n - 1)) + 1;
            s[0].state = &snap;
        }
        const char *types[] = {"Debited"};
        stele_query_item it = {types, 1, mytags, 1};
        stele_condition c = {&it, 1, STELE_NONE};
        stele_multi_result mr;
        int rc = stele_append_multi(cdb, s, (size_t)n, r, (size_t)n, rng % 3 ? NULL : &c, NULL,
                                    &mr);
        if (rc == STELE_EWRONGREV)
            continue; /* another thread moved one of the accounts */
        if (rc != 0)
            child_die("append_multi", rc);
        char line[64];
        int len = snprintf(line, sizeof line, "%" PRIu64 " %d\n", mr.first_position, n);
        if (write(ack_fd, line, (size_t)len) != len)
            _exit(4);
    }
    return NULL;
}

static void run_child(const char *dir, const stele_options *o, int fd)
{
    ack_fd = fd;
    int rc = stele_open(dir, o, &cdb);
    if (rc != 0)
        child_die("open", rc);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, child_thread, (void *)(intptr_t)t) != 0)
            _exit(5);
    for (;;)
        pause();
}

/* Acknowledged commits: (first position, count). */
static uint64_t (*acks)[2];
static size_t nacks, ackcap;

static void read_acks(int fd)
{
    static char buf[1 << 16];
    static size_t have;
    for (;;) {
        ssize_t k = read(fd, buf + have, sizeof buf - have - 1);
        if (k <= 0)
            break;
        have += (size_t)k;
        char *p = buf, *nl;
        while ((nl = memchr(p, '\n', have - (size_t)(p - buf)))) {
            *nl = 0;
            unsigned long long pos;
            int n;
            if (sscanf(p, "%llu %d", &pos, &n) == 2) {
                if (nacks == ackcap) {
                    ackcap = ackcap ? ackcap * 2 : 1024;
                    acks = realloc(acks, ackcap * sizeof *acks);
                }
                acks[nacks][0] = pos;
                acks[nacks][1] = (uint64_t)n;
                nacks++;
            }
            p = nl + 1;
        }
        have -= (size_t)(p - buf);
        memmove(buf, p, have);
    }
}

static void verify(const char *dir)
{
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    if (!db)
        return;
    stele_page *pg;
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 100000000, &pg));
    size_t n = stele_page_count(pg);
    /* every commit whole: k runs 0..n-1 over contiguous positions */
    for (size_t i = 0; i < n;) {
        const stele_event *e = stele_page_event(pg, i);
        char tid[32];
        int k, cnt;
        long a;
        CHECK(e->position == i);
        if (sscanf((const char *)e->data, "t=%31s k=%d n=%d a=%ld", tid, &k, &cnt, &a) != 4 ||
            k != 0) {
            fprintf(stderr, "position %zu: commit does not start here: %s\n", i,
                    (const char *)e->data);
            CHECK(0);
            break;
        }
        for (int j = 1; j < cnt; j++) {
            char t2[32];
            int k2, c2;
            if (i + (size_t)j >= n) {
                fprintf(stderr, "transfer %s torn at the end of the log\n", tid);
                CHECK(0);
                break;
            }
            const stele_event *f = stele_page_event(pg, i + (size_t)j);
            CHECK(sscanf((const char *)f->data, "t=%31s k=%d n=%d", t2, &k2, &c2) == 3 &&
                  !strcmp(t2, tid) && k2 == j && c2 == cnt);
        }
        i += (size_t)cnt;
    }
    /* every acknowledged commit is there */
    for (size_t i = 0; i < nacks; i++) {
        CHECK(acks[i][0] + acks[i][1] <= n);
        if (acks[i][0] + acks[i][1] > n)
            break;
        const stele_event *e = stele_page_event(pg, (size_t)acks[i][0]);
        int k, cnt;
        char tid[32];
        CHECK(sscanf((const char *)e->data, "t=%31s k=%d n=%d", tid, &k, &cnt) == 3 && k == 0 &&
              (uint64_t)cnt == acks[i][1]);
    }
    stele_page_free(pg);
    /* money is conserved; states match the fold at their revision */
    long total = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        char name[32];
        acct_name(i, name);
        uint64_t last;
        total += fold(db, name, &last);
        stele_snapshot *snap = NULL;
        if (last != STELE_NONE && stele_get_snapshot(db, name, STELE_END, &snap) == 0 && snap) {
            long want = 0;
            stele_page *sp;
            CHECK_OK(stele_read_stream(db, name, 0, STELE_FORWARDS, (size_t)snap->revision + 1,
                                       &sp));
            for (size_t j = 0; j < stele_page_count(sp); j++) {
                const stele_event *e = stele_page_event(sp, j);
                long v = strtol(strstr((const char *)e->data, "a=") + 2, NULL, 10);
                want += e->type[0] == 'C' ? v : -v;
            }
            stele_page_free(sp);
            CHECK(strtol((const char *)snap->state, NULL, 10) == want);
            stele_free(snap);
        }
    }
    CHECK(total == 0);
    stele_close(db);
    char report[512];
    CHECK_OK(stele_check(dir, report, sizeof report));
}

int main(void)
{
    t_seed();
    const char *dir = t_tmpdir("multi-crash");
    stele_options o = {0};
    o.segment_size = 64 << 10;
    for (int round = 0; round < ROUNDS; round++) {
        int fds[2];
        if (pipe(fds))
            return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            run_child(dir, &o, fds[1]);
        }
        close(fds[1]);
        struct timespec ts = {0, (long)t_rand_below(300) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        read_acks(fds[0]);
        close(fds[0]);
        if (WIFEXITED(status)) {
            fprintf(stderr, "round %d: the child exited with %d\n", round, WEXITSTATUS(status));
            CHECK(0);
        }
        verify(dir);
        if (t_failures)
            break;
    }
    printf("%zu acknowledged multi-stream commits over %d SIGKILL rounds\n", nacks, ROUNDS);
    CHECK(nacks > 0);
    t_rmdir(dir);
    return t_done("test_multi_crash", ROUNDS);
}
