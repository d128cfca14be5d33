/*
 * test_proj_deleted_crash.c - a foreachStream() projection's $deleted
 * handler runs exactly once per stream delete across SIGKILLs (slow test;
 * docs/projections.md "$deleted").
 *
 * The parent creates the projection
 *   fromCategory('Cart').foreachStream(): $any counts the stream's events,
 *   $deleted counts its own calls and notes the delete's position; for the
 *   streams Cart-K with K % 3 == 0 it returns null (drops the partition).
 * Each round forks a child that opens the store (the projection runs in it)
 * and, from one thread, appends 1-3 events to new streams Cart-K and
 * soft-deletes or tombstones older ones, writing "D K" to a pipe after each
 * acknowledged delete. The parent kills it after a random 0-400 ms, reopens
 * the store (recovery), waits for the projection to reach the end and
 * checks, from the log's own record of the deletes (`$deletes`):
 *   - every acknowledged delete is in `$deletes`, and each stream there once;
 *   - a deleted stream's partition: gone when K % 3 == 0, else its count
 *     equals the stream's events and $deleted ran exactly once, at the
 *     position of the stream's `$streamDeleted` event;
 *   - every other stream's partition counts its events and saw no $deleted.
 * A crash at any moment, also between a handler call and its commit, must
 * leave each of these true. A contract test: it runs on PostgreSQL and
 * DynamoDB too (the child's transactions die with it). Replay with
 * TEST_SEED=n (the timing varies). TEST_ROUNDS=n runs n rounds (default
 * 30) and TEST_KILL_AFTER_MS=m adds m ms to each round's kill delay, for a
 * backend whose open takes longer than the window (DynamoDB Local).
 */
#include "testutil.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 30
#define MAXK 100000

static const char query[] =
    "fromCategory('Cart').foreachStream().when({\n"
    "  $init: function(){ return {n: 0}; },\n"
    "  $any: function(s, e){ s.n++; },\n"
    "  $deleted: function(s, e){\n"
    "    if (Number(e.streamId.substring(5)) % 3 === 0) return null;\n"
    "    s.calls = (s.calls || 0) + 1; s.at = e.position; }});";

static uint8_t acked_del[MAXK];

static void child(const char *dir, int fd, int round)
{
    stele_db *db;
    if (stele_open(dir, NULL, &db))
        _exit(3);
    uint64_t rng = (uint64_t)getpid() * 2654435761u + 7;
    int next = round * 1000; /* each round its own new streams */
    static uint8_t gone[1000];
    for (;;) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        char name[32];
        if (rng % 4 == 0 && next > round * 1000 + 2) {
            /* delete a stream of this round appended to before */
            int k = round * 1000 + (int)((rng >> 8) % (uint64_t)(next - round * 1000 - 1));
            if (gone[k - round * 1000])
                continue; /* each stream is deleted once (the test's rule) */
            gone[k - round * 1000] = 1;
            snprintf(name, sizeof name, "Cart-%d", k);
            int rc = (rng >> 40) % 4 == 0 ? stele_tombstone_stream(db, name, STELE_ANY, NULL)
                                          : stele_delete_stream(db, name, STELE_ANY, NULL);
            if (rc == 0) {
                char line[32];
                int n = snprintf(line, sizeof line, "D %d\n", k);
                if (write(fd, line, (size_t)n) != n)
                    _exit(5);
            } else if (rc != STELE_ENOTFOUND && rc != STELE_EDELETED) {
                _exit(4);
            }
        } else if (next < round * 1000 + 999) {
            snprintf(name, sizeof name, "Cart-%d", next++);
            stele_event_in ev[3];
            int n = 1 + (int)((rng >> 16) % 3);
            for (int i = 0; i < n; i++)
                ev[i] = (stele_event_in){.type = "ItemAdded", .data = "{}", .data_len = 2,
                                         .flags = STELE_EVENT_JSON};
            if (stele_append(db, name, STELE_ANY, ev, (size_t)n, NULL))
                _exit(4);
        }
    }
}

static void read_acks(int fd)
{
    FILE *f = fdopen(fd, "r");
    int k;
    while (f && fscanf(f, "D %d\n", &k) == 1)
        if (k >= 0 && k < MAXK)
            acked_del[k] = 1;
    if (f)
        fclose(f);
}

/* A number member of a flat JSON object, or -1. */
static long long member(const char *json, const char *key)
{
    char pat[40];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* A stream whose partition lags its head: on a shared database the killed
 * child's last transaction may commit after the reopened store's first
 * wait (its backend finishes a COMMIT it had already received), and the
 * head read that found it moved the store's end past it. Wait for the
 * projection to reach the new end, then re-read head and state. */
static void late_commit(stele_db *db, const char *name, stele_stream_info *info, char **j)
{
    CHECK_OK(stele_projection_wait(db, "cartdel", STELE_END, 120000));
    CHECK_OK(stele_stream_head(db, name, info));
    stele_free(*j);
    *j = NULL;
    CHECK_OK(stele_projection_state(db, "cartdel", name, 0, j, NULL));
}

static void verify(const char *dir, int rounds, size_t *ndeleted, size_t *nstreams)
{
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK_OK(stele_projection_wait(db, "cartdel", STELE_END, 120000));
    stele_projection_info *in;
    CHECK_OK(stele_projection_get(db, "cartdel", &in));
    if (strcmp(in->status, "Running"))
        fprintf(stderr, "projection: %s %s\n", in->status, in->fault);
    CHECK(!strcmp(in->status, "Running"));
    stele_projection_info_free(in);
    /* The log's record of the deletes: stream K -> position, last revision. */
    static uint64_t del_pos[MAXK], del_rev[MAXK];
    static uint8_t deleted[MAXK];
    memset(deleted, 0, sizeof deleted);
    stele_page *pg;
    int rc = stele_read_stream(db, "$deletes", 0, STELE_FORWARDS, 1000000, &pg);
    CHECK(rc == 0 || rc == STELE_ENOTFOUND);
    for (size_t i = 0; rc == 0 && i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        int k;
        long long rev;
        char d[256];
        snprintf(d, sizeof d, "%.*s", (int)e->data_len, (const char *)e->data);
        int got = sscanf(d, "{\"streamId\":\"Cart-%d\",\"revision\":%lld", &k, &rev);
        if (got < 1)
            continue; /* not a Cart stream */
        CHECK(got == 2); /* each was live when deleted */
        CHECK(k >= 0 && k < MAXK && !deleted[k]); /* each stream deleted once */
        deleted[k] = 1;
        del_pos[k] = e->position;
        del_rev[k] = (uint64_t)rev;
    }
    if (rc == 0)
        stele_page_free(pg);
    *ndeleted = *nstreams = 0;
    for (int k = 0; k < rounds * 1000 && k < MAXK; k++) {
        if (acked_del[k] && !deleted[k]) {
            fprintf(stderr, "Cart-%d: the acknowledged delete is not in $deletes\n", k);
            CHECK(0);
        }
        char name[32];
        snprintf(name, sizeof name, "Cart-%d", k);
        stele_stream_info info;
        int hrc = stele_stream_head(db, name, &info);
        if (hrc != 0) {
            if (deleted[k] || hrc != STELE_ENOTFOUND)
                fprintf(stderr, "%s: head: %s (%s)%s\n", name, stele_errname(hrc),
                        stele_errmsg(), deleted[k] ? ", but it is in $deletes" : "");
            CHECK(hrc == STELE_ENOTFOUND && !deleted[k]);
            /* One thread makes a round's streams in order: none after the
             * first missing one (only the rest's deletes are checked, so a
             * slow backend reads ~the streams that exist). */
            for (int r = k + 1; r % 1000; r++)
                if (r < MAXK && (deleted[r] || acked_del[r])) {
                    fprintf(stderr, "Cart-%d was deleted, but Cart-%d was never made\n", r, k);
                    CHECK(0);
                }
            k = (k / 1000 + 1) * 1000 - 1;
            continue;
        }
        (*nstreams)++;
        char *j = NULL;
        CHECK_OK(stele_projection_state(db, "cartdel", name, 0, &j, NULL));
        if (!deleted[k] && (!j || member(j, "n") != (long long)info.last_revision + 1))
            late_commit(db, name, &info, &j);
        if (deleted[k]) {
            (*ndeleted)++;
            if (k % 3 == 0) {
                if (j)
                    fprintf(stderr, "%s: dropped partition has state %s\n", name, j);
                CHECK(j == NULL);
            } else if (!j || member(j, "n") != (long long)del_rev[k] + 1 ||
                       member(j, "calls") != 1 || member(j, "at") != (long long)del_pos[k]) {
                fprintf(stderr, "%s: state %s, want n %llu, calls 1, at %llu\n", name,
                        j ? j : "(none)", (unsigned long long)del_rev[k] + 1,
                        (unsigned long long)del_pos[k]);
                CHECK(0);
            }
        } else if (!j || member(j, "n") != (long long)info.last_revision + 1 ||
                   member(j, "calls") != -1) {
            fprintf(stderr, "%s: state %s, want n %llu and no $deleted call\n", name,
                    j ? j : "(none)", (unsigned long long)info.last_revision + 1);
            CHECK(0);
        }
        stele_free(j);
    }
    stele_close(db);
    char report[512] = "";
    rc = t_store_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "stele check: %s %s\n", stele_errmsg(), report);
    CHECK_OK(rc);
}

int main(void)
{
    t_seed();
    /* a contract test: on PostgreSQL too (tests/contract/pg.sh) */
    const char *dir = t_store("proj_deleted_crash");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    stele_projection_settings s = {.query = query, .query_len = strlen(query), .enabled = 1};
    CHECK_OK(stele_projection_create(db, "cartdel", &s));
    stele_close(db);
    size_t ndel = 0, nst = 0, acked = 0;
    int rounds = getenv("TEST_ROUNDS") ? atoi(getenv("TEST_ROUNDS")) : ROUNDS;
    long kill_after = getenv("TEST_KILL_AFTER_MS") ? atol(getenv("TEST_KILL_AFTER_MS")) : 0;
    if (rounds < 1 || rounds > MAXK / 1000)
        rounds = ROUNDS;
    for (int round = 0; round < rounds && !t_failures; round++) {
        int fds[2];
        if (pipe(fds))
            return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            child(dir, fds[1], round);
        }
        close(fds[1]);
        long ms = 20 + (long)t_rand_below(380) + (kill_after > 0 ? kill_after : 0);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        read_acks(fds[0]);
        if (WIFEXITED(status)) {
            fprintf(stderr, "round %d: the child exited with %d\n", round, WEXITSTATUS(status));
            CHECK(0);
        }
        verify(dir, round + 1, &ndel, &nst);
    }
    for (int k = 0; k < MAXK; k++)
        acked += acked_del[k];
    printf("%zu streams, %zu deleted (%zu deletes acknowledged before a kill) over %d SIGKILL "
           "rounds\n",
           nst, ndel, acked, rounds);
    CHECK(acked > 0);
    t_store_drop(dir);
    return t_done("test_proj_deleted_crash", rounds);
}
