/*
 * test_scavenge_store.c - stele_scavenge on any backend (a contract test:
 * the local engine here, PostgreSQL as test_scavenge_store_pg).
 *
 * Random appends, soft deletes, recreations, tombstones, maxCount and
 * truncateBefore metadata over a few streams, and one stream whose events
 * are all older than its maxAge; then filler (so the local engine's 64 KiB
 * segments holding them are sealed). The store's own stream reads are the
 * oracle: a commit must go exactly when none of its events is visible in
 * its stream and it is not its stream's last commit. After the scavenge:
 * events_removed is that count; $all (both directions, small pages,
 * starting inside removed ranges) is the earlier $all without exactly
 * those commits, every kept event at its old position with its data;
 * stream reads and heads are unchanged; a second scavenge removes
 * nothing; appends go on at the next position; the progress callback is
 * called and can stop the scavenge. Online: a scavenge runs while a writer
 * appends and a reader tails $all: the reader sees strictly increasing
 * positions and every acknowledged append, which is still there after.
 * Replay with TEST_SEED=n.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#include "stele.h"
#include "testutil.h"

#define NS 8
#define MAXC 4096

static int passed;

typedef struct commit {
    int s;
    uint64_t pos, rev;
    uint32_t n;
    int dead;
} commit;

static commit cs[MAXC];
static int nc;
static char names[NS + 2][32];

static void app(stele_db *db, int s, uint32_t n, size_t len)
{
    stele_event_in ev[8];
    static char data[8][1200];
    for (uint32_t k = 0; k < n; k++) {
        memset(data[k], 'x', len);
        ev[k] = (stele_event_in){.type = "T", .data = data[k], .data_len = len};
    }
    stele_append_result r;
    /* each event's data starts with its stream, commit and index */
    for (uint32_t k = 0; k < n; k++) {
        char mark[40];
        int m = snprintf(mark, sizeof mark, "%s/%u/%u/", names[s], (unsigned)nc, k);
        memcpy(data[k], mark, (size_t)m);
    }
    CHECK_OK(stele_append(db, names[s], STELE_ANY, ev, n, &r));
    CHECK(nc < MAXC);
    cs[nc++] = (commit){s, r.first_position, r.first_revision, n, 0};
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Every event of $all, flattened: position, stream, revision, data. */
typedef struct aev {
    uint64_t pos, rev;
    char stream[32];
    char data[64];
} aev;

static size_t read_all(stele_db *db, int backwards, size_t page, aev *out, size_t max)
{
    size_t n = 0;
    uint64_t from = backwards ? STELE_END : 0;
    for (;;) {
        stele_page *pg;
        CHECK_OK(stele_read_all(db, from, backwards, page, &pg));
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            const stele_event *e = stele_page_event(pg, i);
            CHECK(n < max);
            out[n].pos = e->position;
            out[n].rev = e->revision;
            snprintf(out[n].stream, sizeof out[n].stream, "%.*s", (int)e->stream_len, e->stream);
            snprintf(out[n].data, sizeof out[n].data, "%.*s",
                     (int)(e->data_len < 40 ? e->data_len : 40), (const char *)e->data);
            n++;
        }
        int more = stele_page_next(pg, &from) == 1;
        size_t cnt = stele_page_count(pg);
        stele_page_free(pg);
        if (!more || cnt == 0)
            break;
    }
    if (backwards)
        for (size_t i = 0; i < n / 2; i++) {
            aev t = out[i];
            out[i] = out[n - 1 - i];
            out[n - 1 - i] = t;
        }
    return n;
}

/* The positions a stream read returns (0 if it returns an error). */
static size_t read_stream(stele_db *db, const char *name, uint64_t *pos, size_t max)
{
    stele_page *pg;
    int rc = stele_read_stream(db, name, 0, STELE_FORWARDS, max, &pg);
    if (rc)
        return 0;
    size_t n = stele_page_count(pg);
    for (size_t i = 0; i < n; i++)
        pos[i] = stele_page_event(pg, i)->position;
    stele_page_free(pg);
    return n;
}

static int is_visible(uint64_t p, uint64_t vis[NS + 2][MAXC], const size_t *nvis, int s)
{
    for (size_t i = 0; i < nvis[s]; i++)
        if (vis[s][i] == p)
            return 1;
    return 0;
}

static int stop_calls;
static int stop_now(void *ctx, const stele_scavenge_result *so_far)
{
    (void)ctx;
    (void)so_far;
    stop_calls++;
    return 1;
}

/* ------------------------------------------------------------ online */

#define ONLINE_MAX 3000

typedef struct online {
    stele_db *db;
    _Atomic int stop;
    _Atomic int writer_done; /* set after the writer's last acknowledgement */
    _Atomic int acked;
    uint64_t pos[ONLINE_MAX];
    uint64_t from; /* where the reader starts */
    int bad;       /* reader: a position not above the one before */
    size_t seen;
    uint64_t *seen_pos;
} online;

static void *on_writer(void *arg)
{
    online *o = arg;
    while (!atomic_load(&o->stop) && atomic_load(&o->acked) < ONLINE_MAX) {
        stele_event_in ev = {.type = "Live", .data = "{}", .data_len = 2};
        stele_append_result r;
        if (stele_append(o->db, "live-1", STELE_ANY, &ev, 1, &r) != 0)
            break;
        o->pos[atomic_load(&o->acked)] = r.first_position;
        atomic_fetch_add(&o->acked, 1);
    }
    atomic_store(&o->writer_done, 1);
    return NULL;
}

static void *on_reader(void *arg)
{
    online *o = arg;
    uint64_t from = o->from, last = STELE_NONE;
    for (;;) {
        int stopping = atomic_load(&o->writer_done);
        stele_page *pg;
        if (stele_read_all(o->db, from, STELE_FORWARDS, 50, &pg) != 0) {
            o->bad = 1;
            break;
        }
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (last != STELE_NONE && e->position <= last)
                o->bad = 1;
            last = e->position;
            if (e->stream_len == 6 && !memcmp(e->stream, "live-1", 6) && o->seen < ONLINE_MAX)
                o->seen_pos[o->seen++] = e->position;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next) == 1;
        stele_page_free(pg);
        if (more) {
            from = next;
        } else {
            if (last != STELE_NONE)
                from = last + 1; /* the end of $all: tail from after it */
            if (stopping)
                break; /* caught up after the writer stopped */
        }
    }
    return NULL;
}

static void test_online(stele_db *db)
{
    /* Dead data to remove: a stream written then deleted. */
    for (int k = 0; k < 60; k++)
        app(db, NS + 1, 4, 600);
    static online o;
    memset(&o, 0, sizeof o);
    o.db = db;
    CHECK_OK(stele_position_head(db, &o.from));
    for (int k = 0; k < 40; k++)
        app(db, NS + 1, 4, 600);
    CHECK_OK(stele_delete_stream(db, names[NS + 1], STELE_ANY, NULL));
    static uint64_t seen[ONLINE_MAX];
    o.seen_pos = seen;
    pthread_t w, r;
    CHECK(pthread_create(&w, NULL, on_writer, &o) == 0);
    CHECK(pthread_create(&r, NULL, on_reader, &o) == 0);
    stele_scavenge_result res;
    CHECK_OK(stele_scavenge(db, NULL, &res));
    CHECK(res.events_removed > 0);
    /* Let the writer go on a little after the scavenge. */
    int at = atomic_load(&o.acked);
    while (atomic_load(&o.acked) < at + 20 && !atomic_load(&o.writer_done))
        sched_yield();
    atomic_store(&o.stop, 1);
    pthread_join(w, NULL);
    pthread_join(r, NULL);
    int acked = atomic_load(&o.acked);
    printf("online: %d appends during the scavenge (%llu events removed), reader saw %zu\n",
           acked, (unsigned long long)res.events_removed, o.seen);
    CHECK(!o.bad);
    CHECK(o.seen == (size_t)acked);
    for (int i = 0; i < acked && (size_t)i < o.seen; i++)
        CHECK(seen[i] == o.pos[i]);
    /* Still all there, in a stream read. */
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "live-1", 0, STELE_FORWARDS, ONLINE_MAX + 1, &pg));
    CHECK(stele_page_count(pg) == (size_t)acked);
    for (size_t i = 0; i < stele_page_count(pg) && i < (size_t)acked; i++)
        CHECK(stele_page_event(pg, i)->position == o.pos[i]);
    stele_page_free(pg);
    passed++;
}

static uint64_t vis[NS + 2][MAXC], vis2[MAXC];
static size_t nvis[NS + 2];
static aev before[MAXC * 4], after[MAXC * 4], back[MAXC * 4];

int main(void)
{
    t_seed();
    const char *uri = t_store("scavst");
    stele_options o = {.segment_size = 64u * 1024u};
    stele_db *db;
    CHECK_OK(stele_open(uri, &o, &db));
    for (int s = 0; s < NS; s++)
        snprintf(names[s], sizeof names[s], "sc%d-x", s);
    snprintf(names[NS], sizeof names[NS], "aged-1");
    snprintf(names[NS + 1], sizeof names[NS + 1], "filler-1");

    /* The aged stream: its events will all be older than its maxAge. */
    for (int k = 0; k < 5; k++)
        app(db, NS, 1 + (uint32_t)t_rand_below(3), 300);

    int tomb[NS] = {0};
    for (int op = 0; op < 400; op++) {
        int s = (int)t_rand_below(NS);
        uint64_t r = t_rand_below(100);
        if (tomb[s])
            continue;
        if (r < 70) {
            app(db, s, 1 + (uint32_t)t_rand_below(4), 200 + t_rand_below(800));
        } else if (r < 82) {
            int rc = stele_delete_stream(db, names[s], STELE_ANY, NULL);
            CHECK(rc == 0 || rc == STELE_ENOTFOUND);
        } else if (r < 85) {
            CHECK_OK(stele_tombstone_stream(db, names[s], STELE_ANY, NULL));
            tomb[s] = 1;
        } else {
            stele_stream_info h;
            if (stele_stream_head(db, names[s], &h) || h.last_revision == STELE_NONE)
                continue;
            stele_stream_metadata md = {0};
            if (r < 93)
                md.max_count = 1 + t_rand_below(5);
            else
                md.truncate_before = h.last_revision > 2 ? h.last_revision - 2 : 1;
            CHECK_OK(stele_set_stream_metadata(db, names[s], &md, -2, NULL));
        }
    }
    sleep_ms(1100);
    stele_stream_metadata age = {.max_age_us = 1000000};
    CHECK_OK(stele_set_stream_metadata(db, names[NS], &age, -2, NULL));
    /* Filler: seals every segment above on the local engine. */
    for (int k = 0; k < 240; k++)
        app(db, NS + 1, 1, 1000);

    /* The oracle: what the stream reads show now. */
    for (int s = 0; s < NS + 2; s++)
        nvis[s] = read_stream(db, names[s], vis[s], MAXC);
    CHECK(nvis[NS] == 0); /* all aged */
    uint64_t want = 0;
    int last[NS + 2];
    for (int s = 0; s < NS + 2; s++)
        last[s] = -1;
    for (int i = 0; i < nc; i++)
        last[cs[i].s] = i;
    for (int i = 0; i < nc; i++) {
        int dead = last[cs[i].s] != i;
        for (uint32_t k = 0; k < cs[i].n && dead; k++)
            dead = !is_visible(cs[i].pos + k, vis, nvis, cs[i].s);
        cs[i].dead = dead;
        if (dead)
            want += cs[i].n;
    }
    CHECK(want > 0);
    size_t nb = read_all(db, STELE_FORWARDS, 1000, before, sizeof before / sizeof *before);
    stele_stream_info heads[NS + 2];
    int headrc[NS + 2];
    for (int s = 0; s < NS + 2; s++)
        headrc[s] = stele_stream_head(db, names[s], &heads[s]);

    stele_scavenge_result res;
    CHECK_OK(stele_scavenge(db, NULL, &res));
    printf("scavenge: %llu events removed (want %llu), %llu bytes\n",
           (unsigned long long)res.events_removed, (unsigned long long)want,
           (unsigned long long)res.bytes_removed);
    CHECK(res.events_removed == want);
    CHECK(res.bytes_removed > 0 && !res.stopped);
    passed++;

    /* $all: the earlier one without exactly the dead commits. */
    size_t na = read_all(db, STELE_FORWARDS, 7, after, sizeof after / sizeof *after);
    size_t j = 0;
    for (size_t i = 0; i < nb; i++) {
        int dead = 0;
        for (int c = 0; c < nc && !dead; c++)
            dead = cs[c].dead && before[i].pos >= cs[c].pos && before[i].pos < cs[c].pos + cs[c].n;
        if (dead)
            continue;
        CHECK(j < na);
        CHECK(after[j].pos == before[i].pos && after[j].rev == before[i].rev &&
              !strcmp(after[j].stream, before[i].stream) && !strcmp(after[j].data, before[i].data));
        j++;
    }
    CHECK(j == na && na + want == nb);
    size_t nk = read_all(db, STELE_BACKWARDS, 5, back, sizeof back / sizeof *back);
    CHECK(nk == na);
    for (size_t i = 0; i < nk && i < na; i++)
        CHECK(back[i].pos == after[i].pos && !strcmp(back[i].data, after[i].data));
    /* A read starting inside a removed commit starts at the next kept event. */
    for (int c = 0; c < nc; c++) {
        if (!cs[c].dead)
            continue;
        uint64_t at = cs[c].pos + cs[c].n - 1, next = STELE_NONE;
        for (size_t i = 0; i < na && next == STELE_NONE; i++)
            if (after[i].pos > at)
                next = after[i].pos;
        stele_page *pg;
        CHECK_OK(stele_read_all(db, at, STELE_FORWARDS, 1, &pg));
        CHECK(stele_page_count(pg) == 1 && stele_page_event(pg, 0)->position == next);
        stele_page_free(pg);
    }
    passed++;

    /* Streams and heads unchanged. */
    for (int s = 0; s < NS + 2; s++) {
        size_t n2 = read_stream(db, names[s], vis2, MAXC);
        CHECK(n2 == nvis[s] && (n2 == 0 || !memcmp(vis2, vis[s], n2 * sizeof *vis2)));
        stele_stream_info h;
        CHECK(stele_stream_head(db, names[s], &h) == headrc[s]);
        CHECK(headrc[s] || (h.last_revision == heads[s].last_revision &&
                            h.last_position == heads[s].last_position));
    }
    passed++;

    /* Nothing more to remove; appends go on at the next position. */
    CHECK_OK(stele_scavenge(db, NULL, &res));
    CHECK(res.events_removed == 0);
    uint64_t head;
    CHECK_OK(stele_position_head(db, &head));
    app(db, NS + 1, 2, 100);
    CHECK(cs[nc - 1].pos == before[nb - 1].pos + 1);
    passed++;

    /* The progress callback is called and stops the scavenge. */
    for (int s = 0; s < NS; s++)
        if (!tomb[s])
            stele_delete_stream(db, names[s], STELE_ANY, NULL);
    stele_scavenge_options so = {.progress = stop_now};
    CHECK_OK(stele_scavenge(db, &so, &res));
    CHECK(stop_calls == 1 && res.stopped == 1);
    passed++;

    test_online(db);

    stele_close(db);
    t_store_drop(uri);
    return t_done("test_scavenge_store", passed);
}
