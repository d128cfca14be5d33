/*
 * soak.c - the crash loop behind `make soak ROUNDS=N` (docs/testing.md).
 *
 * Each round forks a writer process that opens the store (recovering it)
 * and appends from 8 threads until the parent kills it with SIGKILL at a
 * random moment; the parent then reopens the store and checks that every
 * append the writer had acknowledged is there, in order, byte for byte, and
 * that `stele check` passes on the closed store. One round in ten kills
 * the writer while it is still opening, so recovery itself is interrupted.
 *
 * The writer. Thread t owns streams Soak-(2t) and Soak-(2t+1) and appends
 * with exact expected revisions, so the content of every event is a
 * function of (stream, revision) plus its place in its append: the data
 * starts with a header "s=.. r=.. i=.. n=.. m=." (stream, revision, index
 * in the append, events in the append, multi-stream or not) followed by
 * bytes derived from it; the id is derived from (stream, revision). One
 * append in six is a multi-stream append of both its streams; now and then
 * an event is larger than a 64 KiB segment. After each successful append
 * the thread writes one acknowledgement line to a pipe (atomic: shorter
 * than PIPE_BUF).
 *
 * The checks after each round, on the reopened store:
 *   - $all from the first position not yet verified to its end: gapless
 *     positions, each event's content, id, stream and revision as the
 *     header says, each stream's revisions contiguous, every append whole
 *     and consecutive (the log never ends inside one);
 *   - every acknowledged append at the positions and revisions its result
 *     gave (a multi-stream append: its records in order from its first
 *     position);
 *   - each stream's head, and a forward read of each stream over what this
 *     round added (the per-stream index);
 *   - 256 events verified in earlier rounds, at random, unchanged (all of
 *     them before the store is replaced);
 *   - `stele check DIR` exits 0.
 * A store holds --store-rounds rounds (default 100), then a fresh one
 * starts, so a round's work stays bounded however many rounds run.
 *
 * The first failure stops the run with exit status 1, keeping the store
 * and printing the seed (replay with --seed; the kill timing varies).
 *
 * --lose-tail tests the checker itself: after each kill it zeroes the last
 * 64 bytes of the log's last event record (what a writer that acknowledged before its
 * data was durable could lose in a machine crash), so recovery cuts the
 * last commit off and the run must fail (CTest soak_detects_loss).
 *
 *   stele_soak --rounds N [--stele PATH] [--store-rounds K] [--seed S] [--dir D]
 *              [--lose-tail]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stele.h"

#define WRITERS 8
#define NSTREAMS (2 * WRITERS)
#define MAX_N 20
#define HDR_LEN 48
#define SEG_SIZE (128u * 1024u)

/* ------------------------------------------------------------ content */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void stream_name(int s, char out[32]) { snprintf(out, 32, "Soak-%d", s); }

static size_t body_len(int s, uint64_t rev)
{
    uint64_t h = mix(((uint64_t)s << 48) ^ rev ^ 0x50a4);
    if (h % 200 == 0)
        return 66000 + h % 20000; /* bigger than a 64 KiB segment */
    return h % 800;
}

static void make_id(int s, uint64_t rev, uint8_t id[16])
{
    uint64_t a = mix(((uint64_t)s << 40) ^ rev ^ 0x1d), b = mix(a ^ 0x77);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* never the nil UUID */
}

/* The event's data: header, then bytes derived from (s, rev). */
static size_t make_data(int s, uint64_t rev, unsigned i, unsigned n, int multi, uint8_t **out)
{
    size_t len = HDR_LEN + body_len(s, rev);
    uint8_t *p = malloc(len);
    if (!p)
        abort();
    char hdr[HDR_LEN + 1];
    snprintf(hdr, sizeof hdr, "s=%02d r=%010" PRIu64 " i=%02u n=%02u m=%d;", s, rev, i, n, multi);
    memset(p, ' ', HDR_LEN);
    memcpy(p, hdr, strlen(hdr));
    uint64_t x = mix(((uint64_t)s << 32) ^ rev);
    for (size_t k = HDR_LEN; k < len; k++) {
        if ((k & 7) == 0)
            x = mix(x + k);
        p[k] = (uint8_t)(x >> ((k & 7) * 8));
    }
    *out = p;
    return len;
}

typedef struct hdr {
    int s;
    uint64_t rev;
    unsigned i, n;
    int multi;
} hdr;

static int parse_hdr(const stele_event *e, hdr *h)
{
    if (e->data_len < HDR_LEN)
        return 0;
    char buf[HDR_LEN + 1];
    memcpy(buf, e->data, HDR_LEN);
    buf[HDR_LEN] = 0;
    unsigned long long rev;
    if (sscanf(buf, "s=%d r=%llu i=%u n=%u m=%d;", &h->s, &rev, &h->i, &h->n, &h->multi) != 5)
        return 0;
    h->rev = rev;
    return h->s >= 0 && h->s < NSTREAMS && h->n >= 1 && h->n <= 2 * MAX_N && h->i < h->n;
}

/* ------------------------------------------------------------ the writer */

static stele_db *cdb;
static int ack_fd;

static void child_die(const char *what, int rc)
{
    char buf[700];
    int k = snprintf(buf, sizeof buf, "soak writer: %s: %s (%s)\n", what, stele_errname(rc),
                     stele_errmsg());
    if (write(2, buf, (size_t)k) < 0) {
    }
    _exit(3);
}

static void ack(const char *line, size_t len)
{
    if (write(ack_fd, line, len) != (ssize_t)len) /* < PIPE_BUF: atomic */
        _exit(4);
}

static uint64_t xorshift(uint64_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    return *r;
}

static void fill_events(stele_event_in *ev, uint8_t (*ids)[16], uint8_t **data, int s,
                        uint64_t rev0, unsigned first_i, unsigned count, unsigned n, int multi)
{
    for (unsigned k = 0; k < count; k++) {
        uint64_t rev = rev0 + k;
        memset(&ev[k], 0, sizeof ev[k]);
        make_id(s, rev, ids[k]);
        ev[k].id = ids[k];
        ev[k].type = rev % 3 ? "Soaked" : "Soak\xc3\xa9";
        ev[k].data_len = make_data(s, rev, first_i + k, n, multi, &data[k]);
        ev[k].data = data[k];
    }
}

static void *writer_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    int sa = 2 * t, sb = 2 * t + 1;
    char names[2][32];
    stream_name(sa, names[0]);
    stream_name(sb, names[1]);
    uint64_t next[2];
    for (int k = 0; k < 2; k++) {
        stele_stream_info info;
        int rc = stele_stream_head(cdb, names[k], &info);
        if (rc == STELE_ENOTFOUND)
            next[k] = 0;
        else if (rc == 0)
            next[k] = info.last_revision + 1;
        else
            child_die("stream_head", rc);
    }
    uint64_t rng = mix((uint64_t)getpid() * 131 + (uint64_t)t) | 1;
    stele_event_in ev[2 * MAX_N];
    uint8_t ids[2 * MAX_N][16];
    uint8_t *data[2 * MAX_N];
    char line[200];
    for (;;) {
        uint64_t r = xorshift(&rng);
        if (r % 6 == 0) {
            /* Both streams in one multi-stream append: A's events, then B's. */
            unsigned na = 1 + (unsigned)((r >> 8) % 4), nb = 1 + (unsigned)((r >> 12) % 4);
            unsigned n = na + nb;
            stele_append_record rec[2 * MAX_N];
            fill_events(ev, ids, data, sa, next[0], 0, na, n, 1);
            fill_events(ev + na, ids + na, data + na, sb, next[1], na, nb, n, 1);
            for (unsigned k = 0; k < n; k++)
                rec[k] = (stele_append_record){k < na ? 0 : 1, ev[k]};
            stele_append_stream st[2] = {
                {names[0], next[0] ? (int64_t)next[0] - 1 : STELE_NO_STREAM, NULL},
                {names[1], next[1] ? (int64_t)next[1] - 1 : STELE_NO_STREAM, NULL}};
            stele_append_result per[2];
            stele_multi_result res;
            int rc = stele_append_multi(cdb, st, 2, rec, n, NULL, per, &res);
            for (unsigned k = 0; k < n; k++)
                free(data[k]);
            if (rc)
                child_die("append_multi", rc);
            if (per[0].first_revision != next[0] || per[1].first_revision != next[1] ||
                res.last_position - res.first_position + 1 != n)
                child_die("append_multi result differs from the plan", STELE_EINTERNAL);
            int len = snprintf(line, sizeof line,
                               "M %" PRIu64 " %d %" PRIu64 " %u %d %" PRIu64 " %u\n",
                               res.first_position, sa, next[0], na, sb, next[1], nb);
            ack(line, (size_t)len);
            next[0] += na;
            next[1] += nb;
        } else {
            int k = (int)((r >> 4) & 1);
            int s = k ? sb : sa;
            unsigned n = (r >> 8) % 3 ? 1 + (unsigned)((r >> 16) % 4)
                                      : 1 + (unsigned)((r >> 16) % MAX_N);
            fill_events(ev, ids, data, s, next[k], 0, n, n, 0);
            int64_t expected = next[k] ? (int64_t)next[k] - 1 : STELE_NO_STREAM;
            stele_append_result res;
            int rc = stele_append(cdb, names[k], expected, ev, n, &res);
            for (unsigned i = 0; i < n; i++)
                free(data[i]);
            if (rc)
                child_die("append", rc);
            if (res.first_revision != next[k] || res.last_revision != next[k] + n - 1)
                child_die("append result differs from the plan", STELE_EINTERNAL);
            int len = snprintf(line, sizeof line, "S %" PRIu64 " %d %" PRIu64 " %u\n",
                               res.first_position, s, next[k], n);
            ack(line, (size_t)len);
            next[k] += n;
        }
    }
    return NULL;
}

static void run_writer(const char *dir, int fd)
{
    ack_fd = fd;
    stele_options o;
    memset(&o, 0, sizeof o);
    o.segment_size = SEG_SIZE;
    int rc = stele_open(dir, &o, &cdb);
    if (rc)
        child_die("open", rc);
    ack("R\n", 2);
    pthread_t th[WRITERS];
    for (int t = 0; t < WRITERS; t++)
        if (pthread_create(&th[t], NULL, writer_thread, (void *)(intptr_t)t) != 0)
            _exit(5);
    for (int t = 0; t < WRITERS; t++)
        pthread_join(th[t], NULL);
    _exit(6);
}

/* ------------------------------------------------------------ the model */

/* What the parent has verified: each stream's events by revision (their
 * positions), and each position's (stream, revision). */
typedef struct vec {
    uint64_t *v;
    size_t n, cap;
} vec;

static void vec_push(vec *a, uint64_t x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 1024;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        if (!a->v)
            abort();
    }
    a->v[a->n++] = x;
}

typedef struct model {
    vec pos_of[NSTREAMS]; /* revision -> position */
    vec at;               /* position -> s << 48 | revision */
} model;

static void model_reset(model *m)
{
    for (int s = 0; s < NSTREAMS; s++)
        m->pos_of[s].n = 0;
    m->at.n = 0;
}

typedef struct ackrec {
    int multi;
    uint64_t pos;
    int s[2];
    uint64_t rev[2];
    unsigned n[2];
} ackrec;

/* ------------------------------------------------------------ checking */

static const char *g_dir;
static uint64_t g_seed;
static int g_round;
static int g_sabotage;           /* --lose-tail */
static char g_tmpl[4096];        /* the run's directory */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "soak: FAILED in round %d (seed %" PRIu64 ", store %s): ", g_round, g_seed,
            g_dir);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (g_sabotage) {
        /* The expected failure: nothing to keep. */
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpl);
        if (system(cmd) != 0)
            fprintf(stderr, "soak: could not remove %s\n", g_tmpl);
    }
    exit(1);
}

/* The event at position `pos` is what its header says and what the model
 * holds for that position. */
static void check_event(const stele_event *e, const hdr *h)
{
    char name[32];
    stream_name(h->s, name);
    if (e->stream_len != strlen(name) || memcmp(e->stream, name, e->stream_len))
        die("position %" PRIu64 ": stream '%.*s', the data says %s", e->position,
            (int)e->stream_len, e->stream, name);
    if (e->revision != h->rev)
        die("position %" PRIu64 ": revision %" PRIu64 ", the data says %" PRIu64, e->position,
            e->revision, h->rev);
    uint8_t *want;
    size_t len = make_data(h->s, h->rev, h->i, h->n, h->multi, &want);
    int same = e->data_len == len && !memcmp(e->data, want, len);
    free(want);
    if (!same)
        die("position %" PRIu64 " (%s revision %" PRIu64 "): data differs", e->position, name,
            h->rev);
    uint8_t id[16];
    make_id(h->s, h->rev, id);
    if (memcmp(e->id, id, 16))
        die("position %" PRIu64 ": id differs", e->position);
}

static void read_all(stele_db *db, uint64_t from, size_t limit, stele_page **pg)
{
    int rc = stele_read_all(db, from, STELE_FORWARDS, limit, pg);
    if (rc)
        die("read $all from %" PRIu64 ": %s (%s)", from, stele_errname(rc), stele_errmsg());
}

/* $all from the model's end to the log's end: gapless, whole appends,
 * contiguous revisions per stream; the model grows with what is read. */
static void check_new(stele_db *db, model *m)
{
    uint64_t pos = m->at.n;
    hdr open = {0};
    int in_append = 0;
    for (;;) {
        stele_page *pg;
        read_all(db, pos, 512, &pg);
        size_t n = stele_page_count(pg);
        for (size_t k = 0; k < n; k++) {
            const stele_event *e = stele_page_event(pg, k);
            hdr h;
            if (e->position != pos)
                die("$all has position %" PRIu64 " where %" PRIu64 " was due (a gap)",
                    e->position, pos);
            if (!parse_hdr(e, &h))
                die("position %" PRIu64 ": no soak header in the data", pos);
            check_event(e, &h);
            if (h.rev != m->pos_of[h.s].n)
                die("position %" PRIu64 ": stream %d revision %" PRIu64 ", but %zu was next",
                    pos, h.s, h.rev, m->pos_of[h.s].n);
            /* Appends are whole and consecutive. */
            if (in_append ? (h.i != open.i + 1 || h.n != open.n || h.multi != open.multi)
                          : h.i != 0)
                die("position %" PRIu64 ": event %u of %u of an append follows %s", pos, h.i,
                    h.n, in_append ? "another append's event" : "a complete append");
            open = h;
            in_append = h.i + 1 < h.n;
            vec_push(&m->pos_of[h.s], pos);
            vec_push(&m->at, (uint64_t)h.s << 48 | h.rev);
            pos++;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || n == 0)
            break;
    }
    if (in_append)
        die("the log ends inside an append (event %u of %u at position %" PRIu64 ")", open.i,
            open.n, pos - 1);
}

/* Every acknowledged append is where its result said. */
static uint64_t check_acks(const model *m, const ackrec *acks, size_t nacks)
{
    uint64_t events = 0;
    for (size_t a = 0; a < nacks; a++) {
        const ackrec *k = &acks[a];
        uint64_t pos = k->pos;
        for (int j = 0; j < (k->multi ? 2 : 1); j++)
            for (unsigned i = 0; i < k->n[j]; i++, pos++) {
                uint64_t rev = k->rev[j] + i;
                if (rev >= m->pos_of[k->s[j]].n)
                    die("acknowledged event lost: stream %d revision %" PRIu64
                        " (stream ends at %zu)",
                        k->s[j], rev, m->pos_of[k->s[j]].n);
                if (m->pos_of[k->s[j]].v[rev] != pos)
                    die("acknowledged event moved: stream %d revision %" PRIu64
                        " at position %" PRIu64 ", acknowledged at %" PRIu64,
                        k->s[j], rev, m->pos_of[k->s[j]].v[rev], pos);
                events++;
            }
    }
    return events;
}

/* Heads, and each stream read forwards over what this round added. */
static void check_streams(stele_db *db, const model *m, const size_t *before)
{
    for (int s = 0; s < NSTREAMS; s++) {
        char name[32];
        stream_name(s, name);
        const vec *p = &m->pos_of[s];
        stele_stream_info info;
        int rc = stele_stream_head(db, name, &info);
        if (p->n == 0) {
            if (rc != STELE_ENOTFOUND)
                die("%s: head says %s, but $all has none of its events", name,
                    stele_errname(rc));
            continue;
        }
        if (rc || info.last_revision != p->n - 1 || info.last_position != p->v[p->n - 1])
            die("%s: head %s revision %" PRIu64 " position %" PRIu64 ", $all says %zu at %" PRIu64,
                name, stele_errname(rc), info.last_revision, info.last_position, p->n - 1,
                p->v[p->n - 1]);
        uint64_t rev = before[s] > 2 ? before[s] - 2 : 0;
        while (rev < p->n) {
            stele_page *pg;
            rc = stele_read_stream(db, name, rev, STELE_FORWARDS, 256, &pg);
            if (rc)
                die("%s: read from %" PRIu64 ": %s (%s)", name, rev, stele_errname(rc),
                    stele_errmsg());
            size_t n = stele_page_count(pg);
            for (size_t k = 0; k < n; k++, rev++) {
                const stele_event *e = stele_page_event(pg, k);
                if (e->revision != rev || e->position != p->v[rev])
                    die("%s: stream read gives revision %" PRIu64 " at %" PRIu64
                        ", $all has %" PRIu64 " at %" PRIu64,
                        name, e->revision, e->position, rev, p->v[rev]);
            }
            stele_page_free(pg);
            if (n == 0)
                die("%s: stream read from %" PRIu64 " is empty, $all has %zu events", name, rev,
                    p->n);
        }
    }
}

/* Events verified in earlier rounds are unchanged: `count` at random, or
 * all of them (count 0). */
static void check_old(stele_db *db, const model *m, uint64_t upto, size_t count, uint64_t *rng)
{
    if (upto == 0)
        return;
    size_t runs = count ? (count + 15) / 16 : 1;
    for (size_t r = 0; r < runs; r++) {
        uint64_t from = count ? xorshift(rng) % upto : 0;
        uint64_t end = count ? (from + 16 < upto ? from + 16 : upto) : upto;
        while (from < end) {
            stele_page *pg;
            read_all(db, from, end - from < 512 ? end - from : 512, &pg);
            size_t n = stele_page_count(pg);
            if (n == 0)
                die("$all from %" PRIu64 " is empty; it held events before", from);
            for (size_t k = 0; k < n && from < end; k++, from++) {
                const stele_event *e = stele_page_event(pg, k);
                hdr h;
                uint64_t want = m->at.v[from];
                if (e->position != from || !parse_hdr(e, &h) || h.s != (int)(want >> 48) ||
                    h.rev != (want & 0xffffffffffffull))
                    die("position %" PRIu64 " changed since it was verified", from);
                check_event(e, &h);
            }
            stele_page_free(pg);
        }
    }
}

static int run_check(const char *stele_bin, const char *dir)
{
    char report[8192];
    if (!stele_bin) {
        int rc = stele_check(dir, report, sizeof report);
        if (rc)
            fprintf(stderr, "soak: stele_check: %s\n%s\n", stele_errname(rc), report);
        return rc == 0;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        execl(stele_bin, stele_bin, "check", dir, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        fprintf(stderr, "soak: `%s check %s` failed (status 0x%x)\n", stele_bin, dir, status);
        return 0;
    }
    return 1;
}

/* Where the last event-carrying record of a segment's bytes p[0..n) ends:
 * records from the 64-byte segment header on, each `len` bytes (its first
 * four, little-endian, a multiple of 8 and at least the 72-byte header),
 * stepping over chain records (kind 7: since 2026-12-08 a commit's chain
 * record follows it, and zeroing one only makes it look torn, which open
 * repairs) and seals (kind 4); docs/file-format.md. 0: none. */
static size_t last_data_end(const uint8_t *p, size_t n)
{
    size_t off = 64, end = 0;
    while (off + 72 <= n) {
        uint32_t len = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 |
                       (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 24;
        if (len < 72 || len % 8 || off + len > n)
            break;
        if (p[off + 8] != 7 && p[off + 8] != 4)
            end = off + len;
        off += len;
    }
    return end;
}

/* --lose-tail: zero the last 64 bytes of the last event-carrying record in
 * the newest segment that holds one. */
static void lose_tail(const char *store)
{
    char dir[8300];
    snprintf(dir, sizeof dir, "%.4200s/log", store);
    DIR *d = opendir(dir);
    if (!d && errno == ENOENT)
        return; /* killed before it made its log */
    if (!d)
        die("opendir %s: %s", dir, strerror(errno));
    struct dirent *de;
    unsigned best = 0;
    int any = 0;
    while ((de = readdir(d)) != NULL) {
        unsigned no;
        char tail[8];
        if (sscanf(de->d_name, "%8u.se%1s", &no, tail) == 2 && strlen(de->d_name) == 12 &&
            (!any || no > best))
            best = no, any = 1;
    }
    closedir(d);
    for (long no = any ? (long)best : -1; no >= 0; no--) {
        char path[8400];
        snprintf(path, sizeof path, "%s/%08ld.seg", dir, no);
        int fd = open(path, O_RDWR);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0)
            die("open %s: %s", path, strerror(errno));
        uint8_t *p = malloc((size_t)sb.st_size + 1);
        if (!p)
            abort();
        ssize_t n = pread(fd, p, (size_t)sb.st_size, 0);
        size_t end = last_data_end(p, n > 0 ? (size_t)n : 0);
        int done = 0;
        if (end >= 64 + 64) {
            static const uint8_t zeros[64];
            if (pwrite(fd, zeros, 64, (off_t)(end - 64)) != 64)
                die("pwrite %s: %s", path, strerror(errno));
            done = 1;
            if (getenv("SOAK_DEBUG"))
                fprintf(stderr, "lose-tail: zeroed %s [%zu, %zu)\n", path, end - 64, end);
        }
        free(p);
        close(fd);
        if (done)
            return;
    }
}

/* ------------------------------------------------------------ one round */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void parse_ack(const char *line, ackrec *a)
{
    memset(a, 0, sizeof *a);
    int ok;
    if (line[0] == 'M') {
        a->multi = 1;
        ok = sscanf(line, "M %" SCNu64 " %d %" SCNu64 " %u %d %" SCNu64 " %u", &a->pos, &a->s[0],
                    &a->rev[0], &a->n[0], &a->s[1], &a->rev[1], &a->n[1]) == 7;
    } else {
        ok = sscanf(line, "S %" SCNu64 " %d %" SCNu64 " %u", &a->pos, &a->s[0], &a->rev[0],
                    &a->n[0]) == 4;
    }
    if (!ok || a->s[0] < 0 || a->s[0] >= NSTREAMS || a->s[1] < 0 || a->s[1] >= NSTREAMS)
        die("bad acknowledgement line \"%s\"", line);
}

/* Run the writer, kill it, and return its acknowledgements. `in_open`:
 * kill it `delay_ms` after the fork, whether it finished opening or not;
 * else `delay_ms` after it said it had opened the store. */
static ackrec *writer_round(const char *dir, int64_t delay_ms, int in_open, size_t *nacks)
{
    int p[2];
    if (pipe(p) != 0)
        die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(p[0]);
        run_writer(dir, p[1]);
        _exit(7);
    }
    close(p[1]);
    size_t cap = 1024, n = 0;
    ackrec *acks = malloc(cap * sizeof *acks);
    char buf[65536];
    size_t have = 0;
    int64_t deadline = in_open ? now_ms() + delay_ms : INT64_MAX;
    int killed = 0;
    for (;;) {
        int timeout = -1;
        if (!killed && deadline != INT64_MAX) {
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
        if (pr <= 0)
            continue;
        ssize_t r = read(p[0], buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', (size_t)(buf + have - start))) != NULL) {
            *nl = 0;
            if (start[0] == 'R') {
                if (deadline == INT64_MAX)
                    deadline = now_ms() + delay_ms;
            } else {
                if (n == cap) {
                    cap *= 2;
                    acks = realloc(acks, cap * sizeof *acks);
                    if (!acks)
                        abort();
                }
                parse_ack(start, &acks[n++]);
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
        die("the writer ended by itself (status 0x%x) before the kill: see its message above",
            status);
    *nacks = n;
    return acks;
}

static void usage(void)
{
    fprintf(stderr, "usage: stele_soak --rounds N [--stele PATH] [--store-rounds K] "
                    "[--seed S] [--dir DIR] [--lose-tail]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long rounds = 0, store_rounds = 100;
    const char *stele_bin = getenv("STELE_CLI"), *base = NULL;
    g_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lose-tail")) {
            g_sabotage = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--rounds"))
            rounds = atol(argv[++i]);
        else if (!strcmp(argv[i], "--store-rounds"))
            store_rounds = atol(argv[++i]);
        else if (!strcmp(argv[i], "--stele"))
            stele_bin = argv[++i];
        else if (!strcmp(argv[i], "--seed"))
            g_seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--dir"))
            base = argv[++i];
        else
            usage();
    }
    if (rounds <= 0 || store_rounds <= 0)
        usage();
    if (stele_bin && !*stele_bin)
        stele_bin = NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    char *tmpl = g_tmpl;
    snprintf(g_tmpl, sizeof g_tmpl, "%s/stele-soak-XXXXXX",
             base ? base : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "soak: mkdtemp %s: %s\n", tmpl, strerror(errno));
        return 2;
    }
    char dir[4200];
    uint64_t rng = g_seed | 1;
    printf("soak: %ld rounds, %d writers, a new store every %ld rounds, seed %" PRIu64
           ", stele check by %s, in %s\n",
           rounds, WRITERS, store_rounds, g_seed, stele_bin ? stele_bin : "stele_check()", tmpl);
    model m;
    memset(&m, 0, sizeof m);
    uint64_t acked_events = 0, acked_appends = 0, open_kills = 0, checks = 0;
    int64_t t0 = now_ms();
    int store_no = -1;
    for (g_round = 1; g_round <= rounds; g_round++) {
        if ((g_round - 1) % store_rounds == 0) {
            store_no++;
            snprintf(dir, sizeof dir, "%s/store-%d", tmpl, store_no);
            g_dir = dir;
            model_reset(&m);
        }
        int in_open = xorshift(&rng) % 10 == 0;
        int64_t delay = in_open ? (int64_t)(xorshift(&rng) % 40) : (int64_t)(xorshift(&rng) % 400);
        open_kills += in_open;
        size_t nacks;
        ackrec *acks = writer_round(dir, delay, in_open, &nacks);
        if (g_sabotage)
            lose_tail(dir);

        stele_db *db;
        stele_options o;
        memset(&o, 0, sizeof o);
        o.segment_size = SEG_SIZE;
        int rc = stele_open(dir, &o, &db);
        if (rc)
            die("reopen: %s (%s)", stele_errname(rc), stele_errmsg());
        size_t before[NSTREAMS];
        for (int s = 0; s < NSTREAMS; s++)
            before[s] = m.pos_of[s].n;
        uint64_t verified = m.at.n;
        check_new(db, &m);
        acked_events += check_acks(&m, acks, nacks);
        acked_appends += nacks;
        check_streams(db, &m, before);
        int last_of_store = g_round % store_rounds == 0 || g_round == rounds;
        check_old(db, &m, verified, last_of_store ? 0 : 256, &rng);
        stele_close(db);
        free(acks);
        if (!run_check(stele_bin, dir))
            die("stele check failed on the reopened and closed store");
        checks++;
        if (last_of_store) {
            char cmd[4400];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
            if (system(cmd) != 0)
                fprintf(stderr, "soak: could not remove %s\n", dir);
        }
        if (rounds >= 10 && g_round % (rounds / 10) == 0)
            printf("soak: round %d: %" PRIu64 " acknowledged events so far, %zu in this store, "
                   "%.0f s\n",
                   g_round, acked_events, (size_t)m.at.n, (double)(now_ms() - t0) / 1000);
    }
    rmdir(tmpl);
    printf("soak: PASSED: %ld rounds, %" PRIu64 " acknowledged appends, %" PRIu64
           " acknowledged events, 0 lost, %" PRIu64 " stele checks passed (0 failed), %" PRIu64
           " kills during open, %.1f s\n",
           rounds, acked_appends, acked_events, checks, open_kills,
           (double)(now_ms() - t0) / 1000);
    return 0;
}
