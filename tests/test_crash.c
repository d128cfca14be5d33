/*
 * test_crash.c - appends survive SIGKILL, whole or not at all (slow test).
 *
 * Each round forks a child that opens the store and appends in a loop from
 * three threads (1-event and multi-event appends, several streams, now and
 * then an event bigger than a 64 KiB segment), with exact expected
 * revisions, so every event's content is a function of (stream, revision)
 * plus "index i of n in its append". After each successful stele_append the
 * child writes "stream first_rev last_rev first_pos" to a pipe. The parent
 * kills the child with SIGKILL after a random 0-300 ms, reopens the store
 * (recovery) and checks:
 *   - every acknowledged append is there, byte for byte, at its revisions
 *     and positions;
 *   - every append in the log is whole (events 0..n-1 together, in order);
 *     the log never ends inside an append;
 *   - $all is gapless from 0, every stream's revisions are contiguous from 0
 *     and agree with stele_stream_head;
 *   - everything the parent saw in the previous round is still there,
 *     unchanged (SIGKILL loses no written data, only the process);
 *   - before the reopen, `stele check` passes on the killed store (chain
 *     records the kill caught before their rewrite count as awaiting);
 *     after it, the hash chain's head covers every event in $all.
 * Two stores take turns: one with 64 KiB segments, one with the default.
 * Replay with TEST_SEED=n (the kill timing still varies).
 */
#include "testutil.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 60
#define CHILD_THREADS 3
#define STREAMS_PER_THREAD 2
#define NSTREAMS (CHILD_THREADS * STREAMS_PER_THREAD)
#define MAX_N 20
#define HDR_LEN 48

static char snames[NSTREAMS][64];
static int round_no;
static int pending_rounds; /* kills that left chain records pending */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL (round %d): ", round_no);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    t_failures++;
    t_fail_hook();
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* ------------------------------------------------ content of (s, rev) */

static size_t body_len(int s, uint64_t rev)
{
    uint64_t h = mix(((uint64_t)s << 48) ^ rev ^ 0x5151);
    if (h % 150 == 0)
        return 66000 + h % 30000; /* bigger than a 64 KiB segment */
    return h % 1000;
}

static void make_id(int s, uint64_t rev, uint8_t id[16])
{
    uint64_t a = mix(((uint64_t)s << 40) ^ rev ^ 0xabcdef), b = mix(a ^ 0x1234567);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40);
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
}

/* data = header "s=.. r=.. i=.. n=..;" padded to HDR_LEN + body */
static size_t make_data(int s, uint64_t rev, unsigned i, unsigned n, uint8_t **out)
{
    size_t len = HDR_LEN + body_len(s, rev);
    uint8_t *p = malloc(len);
    char hdr[HDR_LEN + 1];
    int k = snprintf(hdr, sizeof hdr, "s=%d r=%" PRIu64 " i=%u n=%u;", s, rev, i, n);
    memset(p, '.', HDR_LEN);
    memcpy(p, hdr, (size_t)k);
    uint64_t x = mix(((uint64_t)s << 52) ^ rev) | 1;
    size_t q = HDR_LEN;
    for (; q + 8 <= len; q += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + q, &x, 8);
    }
    for (; q < len; q++)
        p[q] = (uint8_t)(q * 7);
    *out = p;
    return len;
}

static int make_meta(int s, uint64_t rev, char *buf, size_t len)
{
    return snprintf(buf, len, "{\"s\":%d,\"r\":%" PRIu64 "}", s, rev);
}

/* ---------------------------------------------------------------- child */

static stele_db *cdb;
static int ack_fd;

static void child_die(const char *what, int rc)
{
    char buf[600];
    int k = snprintf(buf, sizeof buf, "child: %s: %s (%s)\n", what, stele_errname(rc), stele_errmsg());
    if (write(2, buf, (size_t)k) < 0) {
    }
    _exit(3);
}

static void *child_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    uint64_t next[STREAMS_PER_THREAD];
    uint64_t rng = mix((uint64_t)getpid() * 77 + (uint64_t)t) | 1;
    for (int k = 0; k < STREAMS_PER_THREAD; k++) {
        stele_stream_info info;
        int s = t * STREAMS_PER_THREAD + k;
        int rc = stele_stream_head(cdb, snames[s], &info);
        if (rc == STELE_ENOTFOUND)
            next[k] = 0;
        else if (rc == 0)
            next[k] = info.last_revision + 1;
        else
            child_die("stream_head", rc);
    }
    static const char *const tags[] = {"crash"};
    for (;;) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        int k = (int)(rng % STREAMS_PER_THREAD);
        int s = t * STREAMS_PER_THREAD + k;
        unsigned n = (rng >> 8) % 2 ? 1 : 2 + (unsigned)((rng >> 16) % (MAX_N - 1));
        stele_event_in ev[MAX_N];
        uint8_t ids[MAX_N][16];
        uint8_t *data[MAX_N];
        char meta[MAX_N][64];
        for (unsigned i = 0; i < n; i++) {
            uint64_t rev = next[k] + i;
            memset(&ev[i], 0, sizeof ev[i]);
            make_id(s, rev, ids[i]);
            ev[i].id = ids[i];
            ev[i].type = rev % 3 ? "CrashTested" : "Crash\xc3\xa9";
            ev[i].data_len = make_data(s, rev, i, n, &data[i]);
            ev[i].data = data[i];
            ev[i].metadata_len = (size_t)make_meta(s, rev, meta[i], sizeof meta[i]);
            ev[i].metadata = meta[i];
            ev[i].tags = tags;
            ev[i].ntags = 1;
            ev[i].flags = STELE_META_JSON;
        }
        int64_t expected = next[k] == 0 ? STELE_NO_STREAM : (int64_t)(next[k] - 1);
        stele_append_result res;
        int rc = stele_append(cdb, snames[s], expected, ev, n, &res);
        for (unsigned i = 0; i < n; i++)
            free(data[i]);
        if (rc != 0)
            child_die("append", rc);
        if (res.first_revision != next[k] || res.last_revision != next[k] + n - 1)
            child_die("append result revisions differ from the expected ones", STELE_EINTERNAL);
        char line[128];
        int len = snprintf(line, sizeof line, "%d %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", s,
                           res.first_revision, res.last_revision, res.first_position);
        if (write(ack_fd, line, (size_t)len) != len) /* < PIPE_BUF: atomic */
            _exit(4);
        next[k] += n;
    }
    return NULL;
}

static void run_child(const char *dir, const stele_options *o, int fd)
{
    ack_fd = fd;
    int rc = stele_open(dir, o, &cdb);
    if (rc != 0)
        child_die("open", rc);
    /* The parent times a store's first kill from here: killed before its
     * first open has finished, a store has no segment yet, and `stele check`
     * rightly finds no log to check. */
    if (write(fd, "opened\n", 7) != 7)
        _exit(8);
    pthread_t th[CHILD_THREADS];
    for (int t = 0; t < CHILD_THREADS; t++)
        if (pthread_create(&th[t], NULL, child_thread, (void *)(intptr_t)t) != 0)
            _exit(5);
    for (int t = 0; t < CHILD_THREADS; t++)
        pthread_join(th[t], NULL);
    _exit(6);
}

/* --------------------------------------------------------------- parent */

typedef struct sig {
    int s;
    uint64_t rev;
    unsigned i, n;
} sig;

typedef struct store {
    const char *dir;
    stele_options opts;
    sig *known; /* what the parent saw, by position */
    size_t nknown, cap;
    uint64_t acked_appends, acked_events;
    int rounds;
} store;

typedef struct ackrec {
    int s;
    uint64_t first, last, pos;
} ackrec;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parse "s=.. r=.. i=.. n=..;" */
static int parse_hdr(const stele_event *e, sig *g)
{
    if (e->data_len < HDR_LEN)
        return 0;
    char buf[HDR_LEN + 1];
    memcpy(buf, e->data, HDR_LEN);
    buf[HDR_LEN] = 0;
    unsigned long long r;
    if (sscanf(buf, "s=%d r=%llu i=%u n=%u;", &g->s, &r, &g->i, &g->n) != 4)
        return 0;
    g->rev = r;
    return g->s >= 0 && g->s < NSTREAMS && g->n >= 1 && g->n <= MAX_N && g->i < g->n;
}

/* Every field of an event against what (s, rev, i, n) says it must be. */
static void check_bytes(const stele_event *e, const sig *g)
{
    uint8_t *want;
    size_t len = make_data(g->s, g->rev, g->i, g->n, &want);
    if (e->data_len != len || memcmp(e->data, want, len) != 0)
        fail("position %" PRIu64 " (%s revision %" PRIu64 "): data differs (len %zu, want %zu)",
             e->position, snames[g->s], g->rev, e->data_len, len);
    free(want);
    char meta[64];
    int ml = make_meta(g->s, g->rev, meta, sizeof meta);
    if (e->metadata_len != (size_t)ml || memcmp(e->metadata, meta, (size_t)ml) != 0)
        fail("position %" PRIu64 ": metadata differs", e->position);
    uint8_t id[16];
    make_id(g->s, g->rev, id);
    if (memcmp(e->id, id, 16) != 0)
        fail("position %" PRIu64 ": id differs", e->position);
    const char *type = g->rev % 3 ? "CrashTested" : "Crash\xc3\xa9";
    if (strcmp(e->type, type) != 0)
        fail("position %" PRIu64 ": type \"%s\", want \"%s\"", e->position, e->type, type);
    if (e->ntags != 1 || strcmp(e->tags[0], "crash") != 0)
        fail("position %" PRIu64 ": tags differ", e->position);
    if (e->flags != STELE_META_JSON)
        fail("position %" PRIu64 ": flags %u", e->position, e->flags);
}

static void verify(store *st, const ackrec *acks, size_t nacks, int last)
{
    stele_db *db = NULL;
    int rc = stele_open(st->dir, &st->opts, &db);
    if (rc != 0) {
        fail("reopen after SIGKILL: %s (%s)", stele_errname(rc), stele_errmsg());
        return;
    }
    size_t prev_known = st->nknown;
    uint64_t next_rev[NSTREAMS] = {0};
    uint64_t last_pos[NSTREAMS] = {0};
    int open = 0;
    sig cur = {0, 0, 0, 0};
    uint64_t pos = 0;
    size_t newcount = 0;
    for (;;) {
        stele_page *page = NULL;
        rc = stele_read_all(db, pos, STELE_FORWARDS, 2000, &page);
        if (rc != 0) {
            fail("read_all from %" PRIu64 ": %s (%s)", pos, stele_errname(rc), stele_errmsg());
            break;
        }
        size_t cnt = stele_page_count(page);
        for (size_t k = 0; k < cnt; k++) {
            const stele_event *e = stele_page_event(page, k);
            sig g;
            if (e->position != pos)
                fail("$all: position %" PRIu64 " where %" PRIu64 " was due", e->position, pos);
            if (!parse_hdr(e, &g)) {
                fail("position %" PRIu64 ": unreadable data header", e->position);
                pos++;
                continue;
            }
            if (e->stream_len != strlen(snames[g.s]) || strcmp(e->stream, snames[g.s]) != 0)
                fail("position %" PRIu64 ": stream \"%s\", its data says \"%s\"", e->position, e->stream,
                     snames[g.s]);
            if (e->revision != g.rev)
                fail("position %" PRIu64 ": revision %" PRIu64 ", its data says %" PRIu64, e->position,
                     e->revision, g.rev);
            if (g.rev != next_rev[g.s])
                fail("position %" PRIu64 ": %s revision %" PRIu64 ", want %" PRIu64 " (contiguous)",
                     e->position, snames[g.s], g.rev, next_rev[g.s]);
            next_rev[g.s] = g.rev + 1;
            last_pos[g.s] = e->position;
            /* appends are whole and not interleaved */
            if (open) {
                if (g.s != cur.s || g.i != cur.i + 1 || g.n != cur.n)
                    fail("position %" PRIu64 ": event %u/%u of %s inside the append of %s revision %" PRIu64
                         " (event %u/%u): a partial append",
                         e->position, g.i, g.n, snames[g.s], snames[cur.s], cur.rev, cur.i, cur.n);
            } else if (g.i != 0) {
                fail("position %" PRIu64 ": event %u/%u of an append whose start is missing", e->position,
                     g.i, g.n);
            }
            cur = g;
            open = g.i + 1 < g.n;
            /* what the previous rounds saw is unchanged */
            if (pos < prev_known) {
                sig *o = &st->known[pos];
                if (o->s != g.s || o->rev != g.rev || o->i != g.i || o->n != g.n)
                    fail("position %" PRIu64 " changed since the last round: was %s rev %" PRIu64
                         " %u/%u, now %s rev %" PRIu64 " %u/%u",
                         pos, snames[o->s], o->rev, o->i, o->n, snames[g.s], g.rev, g.i, g.n);
                if (last || (mix(pos ^ (uint64_t)round_no) % 64) == 0)
                    check_bytes(e, &g);
            } else {
                check_bytes(e, &g);
                if (st->nknown == st->cap) {
                    st->cap = st->cap ? st->cap * 2 : 4096;
                    st->known = realloc(st->known, st->cap * sizeof *st->known);
                }
                st->known[st->nknown++] = g;
                newcount++;
            }
            pos++;
        }
        uint64_t next;
        int more = stele_page_next(page, &next);
        stele_page_free(page);
        if (cnt == 0 || !more)
            break;
    }
    if (open)
        fail("the log ends at position %" PRIu64 " inside an append of %s (event %u of %u)", pos,
             snames[cur.s], cur.i, cur.n);
    if (pos < prev_known)
        fail("$all has %" PRIu64 " events, the previous round saw %zu", pos, prev_known);

    /* every acknowledged append */
    for (size_t a = 0; a < nacks; a++) {
        const ackrec *k = &acks[a];
        uint64_t n = k->last - k->first + 1;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t p = k->pos + i;
            const sig *g = p < st->nknown ? &st->known[p] : NULL;
            if (!g || g->s != k->s || g->rev != k->first + i || g->i != i || g->n != n) {
                fail("acknowledged append %s revisions %" PRIu64 "..%" PRIu64 " at position %" PRIu64
                     ": event %" PRIu64 " missing or different after the crash",
                     snames[k->s], k->first, k->last, k->pos, i);
                break;
            }
        }
    }

    /* heads and stream reads agree with $all */
    for (int s = 0; s < NSTREAMS; s++) {
        stele_stream_info info;
        rc = stele_stream_head(db, snames[s], &info);
        if (next_rev[s] == 0) {
            if (rc != STELE_ENOTFOUND)
                fail("head of empty %s: %s", snames[s], stele_errname(rc));
            continue;
        }
        if (rc != 0 || info.last_revision != next_rev[s] - 1 || info.last_position != last_pos[s])
            fail("head of %s: %s, last_revision %" PRIu64 " position %" PRIu64 ", want %" PRIu64 " / %" PRIu64,
                 snames[s], stele_errname(rc), info.last_revision, info.last_position, next_rev[s] - 1,
                 last_pos[s]);
        if (!last && s % 2 != round_no % 2)
            continue; /* full stream reads: half the streams per round */
        uint64_t from = 0, rev = 0;
        for (;;) {
            stele_page *page = NULL;
            rc = stele_read_stream(db, snames[s], from, STELE_FORWARDS, 1000, &page);
            if (rc != 0) {
                fail("read %s: %s (%s)", snames[s], stele_errname(rc), stele_errmsg());
                break;
            }
            size_t cnt = stele_page_count(page);
            for (size_t k = 0; k < cnt; k++) {
                const stele_event *e = stele_page_event(page, k);
                if (e->revision != rev || e->position >= st->nknown || st->known[e->position].s != s ||
                    st->known[e->position].rev != rev)
                    fail("%s: revision %" PRIu64 " at position %" PRIu64 " disagrees with $all (want rev %" PRIu64 ")",
                         snames[s], e->revision, e->position, rev);
                rev++;
            }
            uint64_t next;
            int more = stele_page_next(page, &next);
            stele_page_free(page);
            if (cnt == 0 || !more)
                break;
            from = next;
        }
        if (rev != next_rev[s])
            fail("%s: a stream read gives %" PRIu64 " events, $all has %" PRIu64, snames[s], rev, next_rev[s]);
    }
    stele_stats stats;
    if (stele_get_stats(db, &stats) != 0 || stats.events != pos)
        fail("stats.events %" PRIu64 ", $all has %" PRIu64, stats.events, pos);
    /* The hash chain covers every event recovery kept (chain records the
     * kill left pending were written at open). */
    stele_chain_head h;
    if (stele_chain_get_head(db, &h) != 0 || h.position != pos || (pos && !h.commits))
        fail("chain head: %" PRIu64 " commits up to position %" PRIu64 ", $all has %" PRIu64,
             h.commits, h.position, pos);
    stele_close(db);
    (void)newcount;
}

static void one_round(store *st, uint64_t delay_ms)
{
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        abort();
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        abort();
    }
    if (pid == 0) {
        close(p[0]);
        run_child(st->dir, &st->opts, p[1]);
        _exit(7);
    }
    close(p[1]);

    /* collect acknowledgements until the deadline, then kill */
    size_t cap = 1024, nacks = 0;
    ackrec *acks = malloc(cap * sizeof *acks);
    char buf[65536];
    size_t have = 0;
    /* A fresh store's round starts its clock when the child has opened it
     * (the line "opened"); later rounds kill opens too. */
    int clock_on = st->rounds > 0;
    int64_t deadline = now_ms() + (int64_t)delay_ms;
    int killed = 0, eof = 0;
    while (!eof) {
        int timeout = -1;
        if (!killed && clock_on) {
            int64_t left = deadline - now_ms();
            if (left <= 0) {
                kill(pid, SIGKILL);
                killed = 1;
            } else {
                timeout = (int)left;
            }
        }
        struct pollfd pfd = {p[0], POLLIN, 0};
        int pr = poll(&pfd, 1, timeout);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        ssize_t r = read(p[0], buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            eof = 1;
            break;
        }
        have += (size_t)r;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', (size_t)(buf + have - start))) != NULL) {
            *nl = 0;
            if (!strcmp(start, "opened")) {
                if (!clock_on) {
                    clock_on = 1;
                    deadline = now_ms() + (int64_t)delay_ms;
                }
                start = nl + 1;
                continue;
            }
            ackrec a;
            unsigned long long f, l, ps;
            if (sscanf(start, "%d %llu %llu %llu", &a.s, &f, &l, &ps) == 4) {
                a.first = f;
                a.last = l;
                a.pos = ps;
                if (nacks == cap) {
                    cap *= 2;
                    acks = realloc(acks, cap * sizeof *acks);
                }
                acks[nacks++] = a;
            } else {
                fail("bad acknowledgement line \"%s\"", start);
            }
            start = nl + 1;
        }
        have = (size_t)(buf + have - start);
        memmove(buf, start, have);
    }
    if (!killed)
        kill(pid, SIGKILL);
    close(p[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
        fail("the child ended by itself (status 0x%x) before the kill: see its message above", status);
    for (size_t a = 0; a < nacks; a++)
        st->acked_events += acks[a].last - acks[a].first + 1;
    st->acked_appends += nacks;
    st->rounds++;
    /* The killed store as it is: `stele check` passes, counting any chain
     * records the kill caught before their rewrite as awaiting. */
    char report[1024] = "";
    int rc = stele_check(st->dir, report, sizeof report);
    if (rc != 0)
        fail("stele_check after SIGKILL, before reopen: %s (%s) %s", stele_errname(rc),
             stele_errmsg(), report);
    pending_rounds += strstr(report, "await their chain record") != NULL;
    verify(st, acks, nacks, 0);
    free(acks);
}

int main(void)
{
    t_seed();
    for (int s = 0; s < NSTREAMS; s++)
        snprintf(snames[s], sizeof snames[s], s % 2 ? "crash-%d" : "crash-\xe2\x9a\xa1-%d", s); /* ⚡ */
    store stores[2];
    memset(stores, 0, sizeof stores);
    stores[0].dir = t_tmpdir("crash-small");
    stores[0].opts.segment_size = 64 * 1024;
    stores[1].dir = t_tmpdir("crash-default");
    int64_t t0 = now_ms();
    for (round_no = 0; round_no < ROUNDS; round_no++) {
        store *st = &stores[round_no % 2];
        uint64_t delay = t_rand_below(301);
        one_round(st, delay);
        if (round_no % 10 == 9) {
            char report[512] = "";
            int rc = stele_check(st->dir, report, sizeof report);
            if (rc != 0)
                fail("stele_check after recovery and close: %s (%s) %s", stele_errname(rc), stele_errmsg(),
                     report);
        }
    }
    for (int i = 0; i < 2; i++) {
        round_no = ROUNDS + i;
        verify(&stores[i], NULL, 0, 1);
        printf("store %d (%s segments): %d rounds, %" PRIu64 " acknowledged appends (%" PRIu64
               " events), %zu events in the log\n",
               i, i == 0 ? "64 KiB" : "default", stores[i].rounds, stores[i].acked_appends,
               stores[i].acked_events, stores[i].nknown);
        free(stores[i].known);
        t_rmdir(stores[i].dir);
    }
    printf("%d of %d kills left chain records pending (stele check before reopen)\n",
           pending_rounds, ROUNDS);
    printf("%.1f s\n", (double)(now_ms() - t0) / 1000.0);
    return t_done("test_crash", ROUNDS);
}
