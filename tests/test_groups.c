/*
 * test_groups.c - consumer groups (persistent subscriptions) in libstele:
 *
 *  - two and three consumers share a group while writers append: every
 *    event is delivered and acked exactly once when nothing fails;
 *  - a consumer that closes has its in-flight events redelivered to
 *    another; an event not acked in time is delivered again;
 *  - nacked events are retried, then parked after max retries; the parked
 *    stream holds links with the reason; replaying delivers them again and
 *    they leave the parked stream once acked; truncating hides them;
 *  - pinned: no two consumers ever hold events of the same stream at the
 *    same time, and each stream's events arrive in order;
 *  - restart (close/open, and SIGKILL of a child) resumes from the last
 *    checkpoint: nothing is missed;
 *  - a filter that matches little still moves the checkpoint;
 *  - bad inputs fail with precise errors and write nothing;
 *  - stream metadata: the checkpoint stream reads as its last event only
 *    (maxCount 1); truncating parked messages (and finishing a replay)
 *    hides them from plain reads of the parked stream (truncateBefore); a
 *    scavenge then reclaims them and the group works on after a reopen.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static int quick;

static void append_n(stele_db *db, const char *stream, int n, const char *type)
{
    char data[32];
    for (int i = 0; i < n; i++) {
        stele_event_in e = {.type = type, .data = data,
                            .data_len = (size_t)snprintf(data, sizeof data, "%d", i)};
        CHECK_OK(stele_append(db, stream, STELE_ANY, &e, 1, NULL));
    }
}

/* Append n events in batches (fast), to `streams` streams named
 * Prefix-0..k. */
static void append_batches(stele_db *db, const char *prefix, int streams, int n, const char *type)
{
    stele_event_in ev[100];
    for (int i = 0; i < 100; i++)
        ev[i] = (stele_event_in){.type = type};
    char name[64];
    for (int done = 0, s = 0; done < n; s = (s + 1) % streams) {
        int k = n - done < 100 ? n - done : 100;
        snprintf(name, sizeof name, "%s-%d", prefix, s);
        CHECK_OK(stele_append(db, name, STELE_ANY, ev, (size_t)k, NULL));
        done += k;
    }
}

static stele_group_info *info_of(stele_db *db, const char *stream, const char *group)
{
    stele_group_info *in = NULL;
    CHECK_OK(stele_group_get(db, stream, group, &in));
    return in;
}

static void ack_batch(stele_consumer *c, stele_batch *b)
{
    size_t n = stele_batch_count(b);
    if (!n)
        return;
    uint8_t(*ids)[16] = malloc(n * 16);
    for (size_t i = 0; i < n; i++)
        memcpy(ids[i], stele_batch_event(b, i)->id, 16);
    CHECK_OK(stele_consumer_ack(c, (const uint8_t(*)[16])ids, n));
    free(ids);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ sharing */

typedef struct share {
    stele_db *db;
    const char *stream, *group;
    _Atomic uint32_t *count; /* deliveries per position */
    uint64_t total;          /* events to expect */
    uint64_t end;            /* positions below this are counted */
    _Atomic uint64_t *acked;
    int id;
    uint64_t got;
} share;

static void *share_consumer(void *arg)
{
    share *s = arg;
    char name[16];
    snprintf(name, sizeof name, "c%d", s->id);
    stele_consumer *c;
    CHECK_OK(stele_group_connect(s->db, s->stream, s->group, name, &c));
    while (atomic_load(s->acked) < s->total) {
        stele_batch *b;
        int rc = stele_consumer_read(c, 1 + t_rand_below(20), 100, &b);
        CHECK_OK(rc);
        if (rc)
            break;
        for (size_t i = 0; i < stele_batch_count(b); i++) {
            const stele_event *e = stele_batch_event(b, i);
            CHECK(stele_batch_retry_count(b, i) == 0);
            if (e->position < s->end)
                atomic_fetch_add(&s->count[e->position], 1);
        }
        s->got += stele_batch_count(b);
        ack_batch(c, b);
        atomic_fetch_add(s->acked, stele_batch_count(b));
        stele_batch_free(b);
    }
    stele_consumer_close(c);
    return NULL;
}

typedef struct writer_arg {
    stele_db *db;
    int n, id;
} writer_arg;

static void *share_writer(void *arg)
{
    writer_arg *w = arg;
    char name[32];
    for (int i = 0; i < w->n;) {
        int k = 1 + (int)t_rand_below(5);
        if (k > w->n - i)
            k = w->n - i;
        stele_event_in ev[5];
        for (int j = 0; j < k; j++)
            ev[j] = (stele_event_in){.type = "Work"};
        snprintf(name, sizeof name, "Job-%d", (w->id * 7 + i) % 13);
        CHECK_OK(stele_append(w->db, name, STELE_ANY, ev, (size_t)k, NULL));
        i += k;
    }
    return NULL;
}

/* `nc` consumers on a $all group while 4 writers append. */
static void test_share(stele_db *db, int nc, const char *group)
{
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.start = st.events;
    gs.max_in_flight = 16;
    gs.buffer_size = 64;
    const char *cats[] = {"Job"};
    stele_filter f = {.categories = cats, .n_categories = 1};
    gs.filter = &f;
    CHECK_OK(stele_group_create(db, NULL, group, &gs));
    int per = quick ? 300 : 2000;
    uint64_t total = 4u * (uint64_t)per;
    uint64_t start = st.events;
    uint64_t end = st.events + total * 2 + 1000; /* room for checkpoints */
    _Atomic uint32_t *count = calloc(end, sizeof *count);
    _Atomic uint64_t acked = 0;
    share s[3];
    pthread_t ct[3], wt[4];
    writer_arg wa[4];
    for (int i = 0; i < nc; i++)
        s[i] = (share){.db = db, .group = group, .count = count, .total = total, .end = end,
                       .acked = &acked, .id = i};
    for (int i = 0; i < nc; i++)
        pthread_create(&ct[i], NULL, share_consumer, &s[i]);
    for (int i = 0; i < 4; i++) {
        wa[i] = (writer_arg){db, per, i};
        pthread_create(&wt[i], NULL, share_writer, &wa[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(wt[i], NULL);
    for (int i = 0; i < nc; i++)
        pthread_join(ct[i], NULL);
    /* The group's own events (its creation, checkpoints) sit between the
     * Job events in $all: check each position by its stream. */
    CHECK_OK(stele_get_stats(db, &st));
    uint64_t sum = 0, from = start, last_job = 0;
    while (from < st.events && from < end) {
        stele_page *pg;
        CHECK_OK(stele_read_all(db, from, STELE_FORWARDS, 1000, &pg));
        size_t k = stele_page_count(pg);
        for (size_t i = 0; i < k; i++) {
            const stele_event *e = stele_page_event(pg, i);
            uint32_t want = strncmp(e->stream, "Job-", 4) == 0;
            uint32_t got = e->position < end ? atomic_load(&count[e->position]) : 0;
            if (got != want) {
                fprintf(stderr, "group %s: %s@%llu (position %llu) delivered %u times\n", group,
                        e->stream, (unsigned long long)e->revision,
                        (unsigned long long)e->position, got);
                CHECK(0);
            }
            sum += want;
            if (want)
                last_job = e->position;
        }
        from = k ? stele_page_event(pg, k - 1)->position + 1 : st.events;
        stele_page_free(pg);
    }
    CHECK(sum == total);
    CHECK(atomic_load(&acked) == total);
    for (int i = 0; i < nc; i++)
        CHECK(s[i].got > 0); /* every consumer took part */
    stele_group_info *in = info_of(db, NULL, group);
    if (in) {
        CHECK(in->acked == total);
        CHECK(in->delivered == total);
        CHECK(in->in_flight == 0);
        CHECK(in->checkpoint > last_job);
        CHECK(in->n_consumers == 0);
        stele_group_info_free(in);
    }
    free(count);
    CHECK_OK(stele_group_delete(db, NULL, group));
}

/* ------------------------------------------------------------ failures */

static void test_redelivery(stele_db *db)
{
    append_n(db, "Redo-1", 10, "Thing");
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.max_in_flight = 4;
    gs.message_timeout_ms = 200;
    CHECK_OK(stele_group_create(db, "Redo-1", "g", &gs));
    stele_consumer *a, *b;
    CHECK_OK(stele_group_connect(db, "Redo-1", "g", "a", &a));
    CHECK_OK(stele_group_connect(db, "Redo-1", "g", "b", &b));

    /* a takes 4 (its limit) and dies. */
    stele_batch *ba;
    CHECK_OK(stele_consumer_read(a, 100, 0, &ba));
    CHECK(stele_batch_count(ba) == 4);
    for (size_t i = 0; i < stele_batch_count(ba); i++)
        CHECK(stele_batch_event(ba, i)->revision == i);
    stele_group_info *in = info_of(db, "Redo-1", "g");
    if (in) {
        CHECK(in->in_flight == 4);
        CHECK(in->n_consumers == 2);
        CHECK(in->consumers[0].in_flight == 4 && !strcmp(in->consumers[0].name, "a"));
        stele_group_info_free(in);
    }
    stele_consumer_close(a);
    stele_batch_free(ba);

    /* b gets them again first, marked as redelivered. */
    stele_batch *bb;
    CHECK_OK(stele_consumer_read(b, 4, 0, &bb));
    CHECK(stele_batch_count(bb) == 4);
    for (size_t i = 0; i < stele_batch_count(bb); i++) {
        CHECK(stele_batch_event(bb, i)->revision == i);
        CHECK(stele_batch_retry_count(bb, i) == 1);
    }
    /* A consumer cannot ack what it does not hold... */
    stele_consumer *c;
    CHECK_OK(stele_group_connect(db, "Redo-1", "g", "c", &c));
    CHECK_RC(stele_consumer_ack(c, (const uint8_t(*)[16])stele_batch_event(bb, 0)->id, 1),
             STELE_ENOTFOUND);
    CHECK(strstr(stele_errmsg(), "not in flight to consumer 'c'") != NULL);
    /* ...and its ack of them all or nothing. */
    uint8_t two[2][16];
    memcpy(two[0], stele_batch_event(bb, 0)->id, 16);
    memset(two[1], 0x42, 16);
    CHECK_RC(stele_consumer_ack(b, (const uint8_t(*)[16])two, 2), STELE_ENOTFOUND);
    in = info_of(db, "Redo-1", "g");
    if (in) {
        CHECK(in->in_flight == 4);
        CHECK(in->acked == 0);
        stele_group_info_free(in);
    }
    /* b does not ack: after the timeout its events go out again. c acks
     * everything: 4..9 fresh, then 0..3 on their third delivery. */
    stele_batch_free(bb);
    int seen[10] = {0}, acked = 0;
    int64_t t0 = mono_ms();
    while (acked < 10 && mono_ms() - t0 < 20000) {
        stele_batch *bc;
        CHECK_OK(stele_consumer_read(c, 4, 5000, &bc));
        for (size_t i = 0; i < stele_batch_count(bc); i++) {
            uint64_t r = stele_batch_event(bc, i)->revision;
            CHECK(r < 10 && !seen[r]);
            CHECK(stele_batch_retry_count(bc, i) == (r < 4 ? 2u : 0u));
            seen[r < 10 ? r : 0] = 1;
        }
        acked += (int)stele_batch_count(bc);
        ack_batch(c, bc);
        stele_batch_free(bc);
    }
    CHECK(acked == 10);
    in = info_of(db, "Redo-1", "g");
    if (in) {
        CHECK(in->timed_out == 4);
        CHECK(in->acked == 10);
        CHECK(in->checkpoint == 10);
        stele_group_info_free(in);
    }
    stele_consumer_close(b);
    stele_consumer_close(c);
    CHECK_OK(stele_group_delete(db, "Redo-1", "g"));
}

static void test_park_replay(stele_db *db)
{
    append_n(db, "Pay-1", 6, "Charged");
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.max_retries = 2;
    gs.checkpoint_after_ms = 0;
    CHECK_OK(stele_group_create(db, "Pay-1", "billing", &gs));
    stele_consumer *c;
    CHECK_OK(stele_group_connect(db, "Pay-1", "billing", "worker", &c));
    /* Events 1 and 3 always fail; 5 is parked by the consumer at once; 4
     * is skipped; the others are acked. */
    int parked_seen = 0, rounds = 0;
    uint32_t max_retry_seen = 0;
    for (;;) {
        stele_batch *b;
        CHECK_OK(stele_consumer_read(c, 10, 200, &b));
        size_t n = stele_batch_count(b);
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_batch_event(b, i);
            const uint8_t(*id)[16] = (const uint8_t(*)[16])e->id;
            if (stele_batch_retry_count(b, i) > max_retry_seen)
                max_retry_seen = stele_batch_retry_count(b, i);
            if (e->revision == 1 || e->revision == 3)
                CHECK_OK(stele_consumer_nack(c, id, 1, STELE_NACK_RETRY, "card declined"));
            else if (e->revision == 5)
                CHECK_OK(stele_consumer_nack(c, id, 1, STELE_NACK_PARK, "bad data"));
            else if (e->revision == 4)
                CHECK_OK(stele_consumer_nack(c, id, 1, STELE_NACK_SKIP, NULL));
            else
                CHECK_OK(stele_consumer_ack(c, id, 1));
        }
        stele_batch_free(b);
        stele_group_info *in = info_of(db, "Pay-1", "billing");
        parked_seen = in ? (int)in->parked : 0;
        int idle = in && in->in_flight == 0 && in->waiting == 0;
        stele_group_info_free(in);
        if ((n == 0 && idle && parked_seen == 3) || ++rounds > 200)
            break;
    }
    CHECK(parked_seen == 3);
    CHECK(max_retry_seen == 2); /* delivered 1 + max_retries times */

    /* The parked stream: links with the reason and the retry count. */
    stele_page *pg;
    CHECK_OK(stele_group_read_parked(db, "Pay-1", "billing", 0, 100, &pg));
    CHECK(stele_page_count(pg) == 3);
    int reasons = 0;
    uint64_t order[3] = {9, 9, 9}; /* original revisions, oldest parked first */
    for (size_t i = 0; i < stele_page_count(pg) && i < 3; i++) {
        const stele_event *l = stele_page_event(pg, i);
        CHECK(!strcmp(l->type, "$>"));
        CHECK(!strcmp(l->stream, "$persistentsubscription-Pay-1::billing-parked"));
        /* metadata is bytes with a length, not a C string */
        char m[1024];
        CHECK(l->metadata_len < sizeof m);
        memcpy(m, l->metadata, l->metadata_len);
        m[l->metadata_len] = 0;
        if (strstr(m, "\"revision\":5"))
            reasons += strstr(m, "\"reason\":\"bad data\"") != NULL &&
                       strstr(m, "\"retryCount\":0") != NULL;
        else
            reasons += strstr(m, "\"reason\":\"card declined\"") != NULL &&
                       strstr(m, "\"retryCount\":3") != NULL;
        /* data: "{revision}@{stream}" */
        CHECK(l->data_len == 7 &&
              memcmp((const char *)l->data + 1, "@Pay-1", 6) == 0);
        order[i] = (uint64_t)(((const char *)l->data)[0] - '0');
    }
    CHECK(reasons == 3);
    CHECK(order[0] == 5); /* parked at once, before the others ran out */
    stele_page_free(pg);
    stele_group_info *in = info_of(db, "Pay-1", "billing");
    if (in) {
        CHECK(in->checkpoint == 6); /* parked counts as done */
        CHECK(in->parked_total == 3);
        stele_group_info_free(in);
    }

    /* Replay the two oldest: they come again, in parking order, with a
     * fresh retry count; acked, they leave the parked stream. */
    uint64_t queued;
    CHECK_OK(stele_group_replay_parked(db, "Pay-1", "billing", 2, &queued));
    CHECK(queued == 2);
    stele_batch *b;
    CHECK_OK(stele_consumer_read(c, 10, 1000, &b));
    CHECK(stele_batch_count(b) == 2);
    for (size_t i = 0; i < stele_batch_count(b) && i < 2; i++) {
        CHECK(stele_batch_retry_count(b, i) == 0);
        CHECK(!strcmp(stele_batch_event(b, i)->stream, "Pay-1"));
        CHECK(!strcmp(stele_batch_event(b, i)->type, "Charged"));
        CHECK(stele_batch_event(b, i)->revision == order[i]);
    }
    ack_batch(c, b);
    stele_batch_free(b);
    in = info_of(db, "Pay-1", "billing");
    if (in) {
        CHECK(in->parked == 1);
        stele_group_info_free(in);
    }
    CHECK_OK(stele_group_read_parked(db, "Pay-1", "billing", 0, 100, &pg));
    CHECK(stele_page_count(pg) == 1);
    CHECK(stele_page_count(pg) == 1 &&
          ((const char *)stele_page_event(pg, 0)->data)[0] == (char)('0' + order[2]));
    stele_page_free(pg);

    /* Truncate: gone from reads and replays. */
    CHECK_OK(stele_group_truncate_parked(db, "Pay-1", "billing", STELE_END));
    CHECK_OK(stele_group_read_parked(db, "Pay-1", "billing", 0, 100, &pg));
    CHECK(stele_page_count(pg) == 0);
    stele_page_free(pg);
    CHECK_OK(stele_group_replay_parked(db, "Pay-1", "billing", 0, &queued));
    CHECK(queued == 0);
    in = info_of(db, "Pay-1", "billing");
    if (in) {
        CHECK(in->parked == 0);
        stele_group_info_free(in);
    }
    stele_consumer_close(c);
}

/* ------------------------------------------------------------ pinned */

#define PIN_STREAMS 12
#define PIN_CONSUMERS 4

static _Atomic int holder[PIN_STREAMS]; /* -1 or the consumer holding the stream */
static _Atomic int pin_violations;
static _Atomic uint64_t pin_acked;

typedef struct pin_arg {
    stele_db *db;
    int id;
    uint64_t total;
    uint64_t last_rev[PIN_STREAMS];
} pin_arg;

static void *pin_consumer(void *arg)
{
    pin_arg *p = arg;
    char name[16];
    snprintf(name, sizeof name, "p%d", p->id);
    stele_consumer *c;
    CHECK_OK(stele_group_connect(p->db, NULL, "pinned", name, &c));
    while (atomic_load(&pin_acked) < p->total) {
        stele_batch *b;
        if (stele_consumer_read(c, 8, 50, &b)) {
            CHECK(0);
            break;
        }
        size_t n = stele_batch_count(b);
        int mine[PIN_STREAMS] = {0};
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_batch_event(b, i);
            int s = atoi(e->stream + 4);
            int expect = -1;
            if (!atomic_compare_exchange_strong(&holder[s], &expect, p->id) && expect != p->id) {
                fprintf(stderr, "pinned: %s went to p%d while p%d holds it\n", e->stream, p->id,
                        expect);
                atomic_fetch_add(&pin_violations, 1);
            }
            if (p->last_rev[s] != UINT64_MAX && e->revision != p->last_rev[s] + 1 &&
                p->last_rev[s] >= e->revision) {
                fprintf(stderr, "pinned: %s revision %llu after %llu\n", e->stream,
                        (unsigned long long)e->revision, (unsigned long long)p->last_rev[s]);
                atomic_fetch_add(&pin_violations, 1);
            }
            p->last_rev[s] = e->revision;
            mine[s]++;
        }
        if (n)
            usleep((useconds_t)t_rand_below(1000));
        /* Release the claim on a stream before acking its last event. */
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_batch_event(b, i);
            int s = atoi(e->stream + 4);
            if (--mine[s] == 0)
                atomic_store(&holder[s], -1);
            CHECK_OK(stele_consumer_ack(c, (const uint8_t(*)[16])e->id, 1));
        }
        atomic_fetch_add(&pin_acked, n);
        stele_batch_free(b);
    }
    stele_consumer_close(c);
    return NULL;
}

static void *pin_writer(void *arg)
{
    writer_arg *w = arg;
    char name[16];
    for (int i = 0; i < w->n;) {
        int k = 1 + (int)t_rand_below(8);
        if (k > w->n - i)
            k = w->n - i;
        stele_event_in ev[8];
        for (int j = 0; j < k; j++)
            ev[j] = (stele_event_in){.type = "Step"};
        snprintf(name, sizeof name, "Pin-%d", (int)t_rand_below(PIN_STREAMS));
        CHECK_OK(stele_append(w->db, name, STELE_ANY, ev, (size_t)k, NULL));
        i += k;
    }
    return NULL;
}

static void test_pinned(stele_db *db)
{
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.strategy = STELE_PINNED;
    gs.start = st.events;
    gs.max_in_flight = 8;
    const char *pre[] = {"Pin-"};
    stele_filter f = {.stream_prefixes = pre, .n_stream_prefixes = 1};
    gs.filter = &f;
    CHECK_OK(stele_group_create(db, NULL, "pinned", &gs));
    for (int i = 0; i < PIN_STREAMS; i++)
        atomic_store(&holder[i], -1);
    /* Streams Pin-0..11, written by two threads while the consumers run. */
    int n = quick ? 600 : 1600;
    pin_arg pa[PIN_CONSUMERS];
    pthread_t t[PIN_CONSUMERS];
    for (int i = 0; i < PIN_CONSUMERS; i++) {
        pa[i] = (pin_arg){.db = db, .id = i, .total = (uint64_t)n};
        for (int s = 0; s < PIN_STREAMS; s++)
            pa[i].last_rev[s] = UINT64_MAX;
        pthread_create(&t[i], NULL, pin_consumer, &pa[i]);
    }
    pthread_t wt[2];
    writer_arg wa[2];
    for (int i = 0; i < 2; i++) {
        wa[i] = (writer_arg){db, n / 2, i};
        pthread_create(&wt[i], NULL, pin_writer, &wa[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(wt[i], NULL);
    for (int i = 0; i < PIN_CONSUMERS; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&pin_violations) == 0);
    CHECK(atomic_load(&pin_acked) == (uint64_t)n);
    stele_group_info *in = info_of(db, NULL, "pinned");
    if (in) {
        CHECK(in->acked == (uint64_t)n && in->delivered == (uint64_t)n);
        stele_group_info_free(in);
    }
    CHECK_OK(stele_group_delete(db, NULL, "pinned"));
}

/* ------------------------------------------------------------ filters */

/* The saved checkpoint, once it is at least `want` (or after 20 s). */
static uint64_t saved_at_least(stele_db *db, const char *group, uint64_t want)
{
    int64_t until = mono_ms() + 20000;
    uint64_t saved = STELE_NONE;
    while (mono_ms() < until) {
        stele_group_info *in = info_of(db, NULL, group);
        saved = in ? in->checkpoint_saved : STELE_NONE;
        stele_group_info_free(in);
        if (saved != STELE_NONE && saved >= want)
            break;
        usleep(20000);
    }
    return saved;
}

/* Read (and ack) until the group's checkpoint reaches `end`. */
static int drain(stele_db *db, stele_consumer *c, const char *group, uint64_t end)
{
    int found = 0;
    for (int i = 0; i < 200; i++) {
        stele_batch *b;
        CHECK_OK(stele_consumer_read(c, 10, 0, &b));
        for (size_t k = 0; k < stele_batch_count(b); k++)
            found += !strcmp(stele_batch_event(b, k)->stream, "Rare-1");
        ack_batch(c, b);
        stele_batch_free(b);
        stele_group_info *in = info_of(db, NULL, group);
        int done = in && in->checkpoint >= end;
        stele_group_info_free(in);
        if (done)
            break;
    }
    return found;
}

static void test_sparse_filter(stele_db *db)
{
    const char *rare[] = {"Rare"};
    stele_filter f = {.categories = rare, .n_categories = 1};
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.filter = &f;
    gs.checkpoint_after_ms = 0;
    CHECK_OK(stele_group_create(db, "$all", "sparse", &gs));
    stele_consumer *c;
    CHECK_OK(stele_group_connect(db, NULL, "sparse", "only", &c));

    /* Nothing matches: no event is delivered or acked, yet the timer
     * saves a checkpoint past the events the filter skipped (all but the
     * last few hundred, which are not worth a write: docs). */
    append_batches(db, "Common", 5, quick ? 20000 : 80000, "Noise");
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(drain(db, c, "sparse", st.events) == 0);
    uint64_t saved = saved_at_least(db, "sparse", st.events - 1000);
    CHECK(saved != STELE_NONE && saved >= st.events - 1000);

    /* One match among more noise: delivered once; once acked, the saved
     * checkpoint passes it (a restart would not deliver it again). */
    append_batches(db, "Common", 5, 3000, "Noise");
    append_n(db, "Rare-1", 1, "Found");
    stele_stream_info si;
    CHECK_OK(stele_stream_head(db, "Rare-1", &si));
    append_batches(db, "Common", 5, 3000, "Noise");
    CHECK_OK(stele_get_stats(db, &st));
    CHECK(drain(db, c, "sparse", st.events) == 1);
    saved = saved_at_least(db, "sparse", si.last_position + 1);
    CHECK(saved != STELE_NONE && saved > si.last_position);
    stele_consumer_close(c);
    CHECK_OK(stele_group_delete(db, NULL, "sparse"));
}

/* Idle groups on $all, each reading past the others' (and its own)
 * checkpoint events, must not keep writing checkpoints. */
static uint64_t ckpt_events(stele_db *db, const char *group)
{
    char name[256];
    snprintf(name, sizeof name, "$persistentsubscription-$all::%s-checkpoint", group);
    stele_stream_info si;
    if (stele_stream_head(db, name, &si) || si.last_revision == STELE_NONE)
        return 0;
    return si.last_revision + 1;
}

static void test_idle_all(stele_db *db)
{
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.checkpoint_after_ms = 0;
    gs.checkpoint_min_count = 0;
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    gs.start = st.events;
    CHECK_OK(stele_group_create(db, NULL, "idle-a", &gs));
    CHECK_OK(stele_group_create(db, NULL, "idle-b", &gs));
    append_n(db, "Idle-1", 5, "E");
    stele_consumer *a, *b;
    CHECK_OK(stele_group_connect(db, NULL, "idle-a", "a", &a));
    CHECK_OK(stele_group_connect(db, NULL, "idle-b", "b", &b));
    uint64_t before_a = 0, before_b = 0;
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            before_a = ckpt_events(db, "idle-a");
            before_b = ckpt_events(db, "idle-b");
        }
        for (int i = 0; i < 6; i++) {
            stele_batch *ba, *bb;
            CHECK_OK(stele_consumer_read(a, 10, 100, &ba));
            ack_batch(a, ba);
            stele_batch_free(ba);
            CHECK_OK(stele_consumer_read(b, 10, 100, &bb));
            ack_batch(b, bb);
            stele_batch_free(bb);
        }
    }
    uint64_t after_a = ckpt_events(db, "idle-a"), after_b = ckpt_events(db, "idle-b");
    CHECK(before_a >= 1 && before_b >= 1); /* the acks were saved */
    if (after_a > before_a + 1 || after_b > before_b + 1)
        fprintf(stderr, "idle groups wrote checkpoints: a %llu -> %llu, b %llu -> %llu\n",
                (unsigned long long)before_a, (unsigned long long)after_a,
                (unsigned long long)before_b, (unsigned long long)after_b);
    CHECK(after_a <= before_a + 1 && after_b <= before_b + 1);
    stele_consumer_close(a);
    stele_consumer_close(b);
    CHECK_OK(stele_group_delete(db, NULL, "idle-a"));
    CHECK_OK(stele_group_delete(db, NULL, "idle-b"));
}

/* ------------------------------------------------------------ restart */

static void test_restart(const char *dir, stele_db **dbp)
{
    stele_db *db = *dbp;
    append_n(db, "Ship-1", 30, "Shipped");
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.checkpoint_max_count = 5;
    gs.checkpoint_min_count = 5;
    gs.checkpoint_after_ms = 3600000;
    CHECK_OK(stele_group_create(db, "Ship-1", "g", &gs));
    stele_consumer *c;
    CHECK_OK(stele_group_connect(db, "Ship-1", "g", "w", &c));
    stele_batch *b;
    CHECK_OK(stele_consumer_read(c, 10, 0, &b));
    CHECK(stele_batch_count(b) == 10);
    ack_batch(c, b);
    stele_batch_free(b);
    CHECK_OK(stele_consumer_read(c, 10, 0, &b)); /* 10..19 in flight, not acked */
    CHECK(stele_batch_count(b) == 10);
    stele_batch_free(b);
    stele_consumer_close(c);
    stele_close(db);

    CHECK_OK(stele_open(dir, NULL, &db));
    *dbp = db;
    stele_group_info *in = info_of(db, "Ship-1", "g");
    if (in) {
        CHECK(in->checkpoint_saved == 10); /* saved at close */
        CHECK(in->checkpoint == 10);
        CHECK(in->settings.checkpoint_max_count == 5);
        stele_group_info_free(in);
    }
    CHECK_OK(stele_group_connect(db, "Ship-1", "g", "w", &c));
    uint64_t next = 10;
    for (;;) {
        CHECK_OK(stele_consumer_read(c, 7, 0, &b));
        if (!stele_batch_count(b)) {
            stele_batch_free(b);
            break;
        }
        for (size_t i = 0; i < stele_batch_count(b); i++)
            CHECK(stele_batch_event(b, i)->revision == next++);
        ack_batch(c, b);
        stele_batch_free(b);
    }
    CHECK(next == 30);
    stele_consumer_close(c);
}

/* A child acks events and is killed; the parent resumes the group. */
static void test_kill(const char *dir, stele_db **dbp)
{
    stele_db *db = *dbp;
    int n = 400;
    append_n(db, "Kill-1", n, "Step");
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.checkpoint_max_count = 7;
    gs.checkpoint_min_count = 1;
    gs.checkpoint_after_ms = 10;
    CHECK_OK(stele_group_create(db, "Kill-1", "k", &gs));
    stele_close(db);
    *dbp = NULL;
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        stele_db *cdb;
        if (stele_open(dir, NULL, &cdb))
            _exit(2);
        stele_consumer *c;
        if (stele_group_connect(cdb, "Kill-1", "k", "child", &c))
            _exit(3);
        int told_ck = 0;
        for (;;) {
            stele_batch *b;
            if (stele_consumer_read(c, 3, 100, &b))
                _exit(4);
            for (size_t i = 0; i < stele_batch_count(b); i++) {
                /* Tell the parent before the ack, so it knows a superset
                 * of what was acked when the kill comes. */
                const stele_event *e = stele_batch_event(b, i);
                uint32_t r = (uint32_t)e->revision;
                if (write(fds[1], &r, sizeof r) != sizeof r)
                    _exit(6);
                if (stele_consumer_ack(c, (const uint8_t(*)[16])e->id, 1))
                    _exit(5);
            }
            stele_batch_free(b);
            /* Tell the parent once a checkpoint is durable, so the kill
             * never comes before the first one however slow the machine. */
            if (!told_ck) {
                stele_group_info *ci;
                if (stele_group_get(cdb, "Kill-1", "k", &ci) == 0) {
                    if (ci->checkpoint_saved != STELE_NONE && ci->checkpoint_saved > 0) {
                        uint32_t mark = UINT32_MAX;
                        if (write(fds[1], &mark, sizeof mark) != sizeof mark)
                            _exit(6);
                        told_ck = 1;
                    }
                    stele_group_info_free(ci);
                }
            }
            usleep(300);
        }
    }
    close(fds[1]);
    /* Let it ack some, then kill it. */
    uint32_t r;
    uint8_t *acked = calloc((size_t)n, 1);
    int got = 0, saw_ck = 0;
    while ((got < 150 || !saw_ck) && read(fds[0], &r, sizeof r) == sizeof r) {
        if (r == UINT32_MAX) {
            saw_ck = 1;
            continue;
        }
        if (r < (uint32_t)n)
            acked[r] = 1;
        got++;
    }
    kill(pid, SIGKILL);
    while (read(fds[0], &r, sizeof r) == sizeof r)
        if (r < (uint32_t)n)
            acked[r] = 1;
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    CHECK(WIFSIGNALED(status));

    CHECK_OK(stele_open(dir, NULL, &db));
    *dbp = db;
    stele_group_info *in = info_of(db, "Kill-1", "k");
    uint64_t ck = in ? in->checkpoint_saved : 0;
    stele_group_info_free(in);
    CHECK(ck != STELE_NONE && ck > 0);
    for (uint64_t i = 0; i < ck && i < (uint64_t)n; i++)
        CHECK(acked[i]); /* the checkpoint never passes an unacked event */
    stele_consumer *c;
    CHECK_OK(stele_group_connect(db, "Kill-1", "k", "parent", &c));
    uint64_t next = ck;
    for (;;) {
        stele_batch *b;
        CHECK_OK(stele_consumer_read(c, 50, 0, &b));
        if (!stele_batch_count(b)) {
            stele_batch_free(b);
            break;
        }
        for (size_t i = 0; i < stele_batch_count(b); i++) {
            CHECK(stele_batch_event(b, i)->revision == next);
            acked[next++] = 1;
        }
        ack_batch(c, b);
        stele_batch_free(b);
    }
    CHECK(next == (uint64_t)n);
    for (int i = 0; i < n; i++)
        CHECK(acked[i]);
    free(acked);
    stele_consumer_close(c);
}

/* ------------------------------------------------------------ bad input */

static uint64_t config_revision(stele_db *db)
{
    stele_stream_info si;
    int rc = stele_stream_head(db, "$persistent-config", &si);
    return rc ? STELE_NONE : si.last_revision;
}

static void test_bad_input(stele_db *db)
{
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    CHECK_OK(stele_group_create(db, "Bad-1", "g", &gs));
    uint64_t rev = config_revision(db);

    CHECK_RC(stele_group_create(db, "Bad-1", "g", &gs), STELE_EEXISTS);
    CHECK(strstr(stele_errmsg(), "exists already") != NULL);
    CHECK_RC(stele_group_create(NULL, "Bad-1", "h", &gs), STELE_EINVAL);
    CHECK_RC(stele_group_create(db, "Bad-1", NULL, &gs), STELE_EINVAL);
    CHECK_RC(stele_group_create(db, "Bad-1", "", &gs), STELE_EINVAL);
    CHECK_RC(stele_group_create(db, "Bad-1", "a:b", &gs), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "':'") != NULL);
    CHECK_RC(stele_group_create(db, "Bad-1", "tab\there", &gs), STELE_EINVAL);
    CHECK_RC(stele_group_create(db, "", "h", &gs), STELE_EINVAL);
    CHECK_RC(stele_group_create(db, "$persistent-config", "h", &gs), STELE_EINVAL);
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    char longgroup[100];
    memset(longgroup, 'y', sizeof longgroup - 1);
    longgroup[sizeof longgroup - 1] = 0;
    CHECK_RC(stele_group_create(db, longname, longgroup, &gs), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "too long together") != NULL);
    CHECK_RC(stele_group_create(db, "Bad-1", "h", NULL), STELE_EINVAL);

    stele_group_settings bad = gs;
    bad.max_in_flight = 0;
    CHECK_RC(stele_group_create(db, "Bad-1", "h", &bad), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "max_in_flight is 0") != NULL);
    bad = gs;
    bad.strategy = 7;
    CHECK_RC(stele_group_create(db, "Bad-1", "h", &bad), STELE_EINVAL);
    bad = gs;
    bad.buffer_size = 1000000;
    CHECK_RC(stele_group_create(db, "Bad-1", "h", &bad), STELE_EINVAL);
    bad = gs;
    bad.message_timeout_ms = 5;
    CHECK_RC(stele_group_create(db, "Bad-1", "h", &bad), STELE_EINVAL);
    bad = gs;
    bad.checkpoint_min_count = 50;
    bad.checkpoint_max_count = 10;
    CHECK_RC(stele_group_create(db, "Bad-1", "h", &bad), STELE_EINVAL);
    const char *cats[] = {"X"};
    stele_filter f = {.categories = cats, .n_categories = 1};
    bad = gs;
    bad.filter = &f;
    CHECK_RC(stele_group_create(db, "Bad-1", "h", &bad), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "needs a group on $all") != NULL);
    stele_filter badf = {.stream_regex = "("};
    bad.filter = &badf;
    CHECK_RC(stele_group_create(db, NULL, "h", &bad), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "stream regex") != NULL);

    CHECK_RC(stele_group_update(db, "Bad-1", "nope", &gs), STELE_ENOTFOUND);
    CHECK_RC(stele_group_delete(db, "Bad-1", "nope"), STELE_ENOTFOUND);
    CHECK_RC(stele_group_delete(db, "Other-1", "g"), STELE_ENOTFOUND);
    stele_group_info *in;
    CHECK_RC(stele_group_get(db, NULL, "g", &in), STELE_ENOTFOUND);
    stele_consumer *c;
    CHECK_RC(stele_group_connect(db, "Bad-1", "nope", "x", &c), STELE_ENOTFOUND);
    CHECK(strstr(stele_errmsg(), "does not exist") != NULL);
    CHECK_RC(stele_group_connect(db, "Bad-1", "g", "", &c), STELE_EINVAL);
    CHECK_OK(stele_group_connect(db, "Bad-1", "g", "x", &c));
    stele_consumer *c2;
    CHECK_RC(stele_group_connect(db, "Bad-1", "g", "x", &c2), STELE_EEXISTS);
    stele_batch *b;
    CHECK_RC(stele_consumer_read(c, 0, 0, &b), STELE_EINVAL);
    CHECK_RC(stele_consumer_read(c, 1, -5, &b), STELE_EINVAL);
    CHECK_RC(stele_consumer_read(NULL, 1, 0, &b), STELE_EINVAL);
    uint8_t id[1][16];
    memset(id, 7, sizeof id);
    CHECK_RC(stele_consumer_ack(c, (const uint8_t(*)[16])id, 1), STELE_ENOTFOUND);
    CHECK_RC(stele_consumer_ack(c, (const uint8_t(*)[16])id, 0), STELE_EINVAL);
    CHECK_RC(stele_consumer_nack(c, (const uint8_t(*)[16])id, 1, 9, NULL), STELE_EINVAL);
    char reason[1100];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = 0;
    CHECK_RC(stele_consumer_nack(c, (const uint8_t(*)[16])id, 1, STELE_NACK_PARK, reason),
             STELE_EINVAL);
    CHECK_RC(stele_group_ack(db, "Bad-1", "g", (const uint8_t(*)[16])id, 1), STELE_ENOTFOUND);
    stele_page *pg;
    CHECK_RC(stele_group_read_parked(db, "Bad-1", "g", 0, 0, &pg), STELE_EINVAL);

    /* Update: the filter cannot change; other settings do at once. */
    stele_group_settings up = gs;
    up.filter = &f;
    CHECK_RC(stele_group_update(db, "Bad-1", "g", &up), STELE_EINVAL);
    CHECK(config_revision(db) == rev); /* nothing written by any of these */

    append_n(db, "Bad-1", 5, "E");
    up = gs;
    up.max_in_flight = 2;
    CHECK_OK(stele_group_update(db, "Bad-1", "g", &up));
    CHECK_OK(stele_consumer_read(c, 10, 0, &b));
    CHECK(stele_batch_count(b) == 2);
    stele_batch_free(b);

    /* Delete: the consumer learns it; a new group of that name starts
     * afresh. */
    CHECK_OK(stele_group_delete(db, "Bad-1", "g"));
    CHECK_RC(stele_consumer_read(c, 1, 0, &b), STELE_ENOTFOUND);
    CHECK(strstr(stele_errmsg(), "was deleted") != NULL);
    stele_consumer_close(c);
    CHECK_RC(stele_group_get(db, "Bad-1", "g", &in), STELE_ENOTFOUND);
    CHECK_OK(stele_group_create(db, "Bad-1", "g", &gs));
    in = info_of(db, "Bad-1", "g");
    if (in) {
        CHECK(in->checkpoint_saved == STELE_NONE);
        CHECK(in->checkpoint == 0);
        CHECK(in->parked == 0);
        stele_group_info_free(in);
    }
    CHECK_OK(stele_group_delete(db, "Bad-1", "g"));
}

static void section(const char *name)
{
    static int64_t t0;
    int64_t now = mono_ms();
    if (t0)
        fprintf(stderr, "  %lld ms\n", (long long)(now - t0));
    if (name)
        fprintf(stderr, "%s...", name);
    t0 = now;
}

/* Events a plain stream read returns from revision 0 (0 if none). */
static size_t plain_count(stele_db *db, const char *stream, uint64_t *first)
{
    stele_page *pg = NULL;
    int rc = stele_read_stream(db, stream, 0, STELE_FORWARDS, 1000, &pg);
    if (rc == STELE_ENOTFOUND)
        return 0;
    CHECK_OK(rc);
    size_t n = pg ? stele_page_count(pg) : 0;
    if (n && first)
        *first = stele_page_event(pg, 0)->revision;
    stele_page_free(pg);
    return n;
}

static uint64_t last_revision(stele_db *db, const char *stream)
{
    stele_page *pg = NULL;
    CHECK_OK(stele_read_stream(db, stream, STELE_END, STELE_BACKWARDS, 1, &pg));
    uint64_t r = pg && stele_page_count(pg) ? stele_page_event(pg, 0)->revision : STELE_NONE;
    stele_page_free(pg);
    return r;
}

static void test_metadata(void)
{
    const char *dir = t_tmpdir("groups-meta");
    stele_options o = {.segment_size = 64 << 10};
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    const char *ck = "$persistentsubscription-Meta-1::m-checkpoint";
    const char *pk = "$persistentsubscription-Meta-1::m-parked";
    append_n(db, "Meta-1", 40, "Happened");
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.checkpoint_max_count = 1;
    gs.checkpoint_min_count = 1;
    gs.checkpoint_after_ms = 0;
    CHECK_OK(stele_group_create(db, "Meta-1", "m", &gs));
    stele_consumer *c;
    CHECK_OK(stele_group_connect(db, "Meta-1", "m", "w", &c));
    /* Ack one at a time, waiting for each checkpoint: many checkpoint
     * events; park 5 of them. */
    int parked = 0;
    for (int got = 0, rounds = 0; got < 40 && rounds < 400; rounds++) {
        stele_batch *b;
        CHECK_OK(stele_consumer_read(c, 1, 1000, &b));
        if (stele_batch_count(b) == 1) {
            const stele_event *e = stele_batch_event(b, 0);
            const uint8_t(*id)[16] = (const uint8_t(*)[16])e->id;
            if (e->revision % 8 == 3) {
                CHECK_OK(stele_consumer_nack(c, id, 1, STELE_NACK_PARK, "bad"));
                parked++;
            } else {
                CHECK_OK(stele_consumer_ack(c, id, 1));
            }
            got++;
            for (int w = 0; w < 500; w++) {
                stele_group_info *in = info_of(db, "Meta-1", "m");
                int saved = in && in->checkpoint_saved == e->revision + 1;
                stele_group_info_free(in);
                if (saved)
                    break;
                usleep(2000);
            }
        }
        stele_batch_free(b);
    }
    CHECK(parked == 5);
    uint64_t first = 99;
    CHECK(last_revision(db, ck) >= 10);   /* many checkpoints written... */
    CHECK(plain_count(db, ck, &first) == 1); /* ...one visible */
    CHECK(first == last_revision(db, ck));
    CHECK(plain_count(db, pk, &first) == 5 && first == 0);

    /* Truncate below parked revision 2: hidden in a plain read too. */
    CHECK_OK(stele_group_truncate_parked(db, "Meta-1", "m", 2));
    CHECK(plain_count(db, pk, &first) == 3 && first == 2);
    /* A finished replay moves the truncation (the group thread carries it
     * to the stream's metadata after the checkpoint). */
    uint64_t queued;
    CHECK_OK(stele_group_replay_parked(db, "Meta-1", "m", 1, &queued));
    CHECK(queued == 1);
    stele_batch *b;
    CHECK_OK(stele_consumer_read(c, 10, 1000, &b));
    CHECK(stele_batch_count(b) == 1);
    CHECK(stele_batch_count(b) == 1 && stele_batch_event(b, 0)->revision == 19);
    ack_batch(c, b);
    stele_batch_free(b);
    size_t left = 0;
    for (int w = 0; w < 2500; w++) {
        if ((left = plain_count(db, pk, &first)) == 2)
            break;
        usleep(2000);
    }
    CHECK(left == 2 && first == 3);
    stele_page *pg;
    CHECK_OK(stele_group_read_parked(db, "Meta-1", "m", 0, 100, &pg));
    CHECK(stele_page_count(pg) == 2);
    stele_page_free(pg);
    /* Truncate all. */
    CHECK_OK(stele_group_truncate_parked(db, "Meta-1", "m", STELE_END));
    CHECK(plain_count(db, pk, NULL) == 0);
    stele_consumer_close(c);

    /* Seal the segment, scavenge: the hidden checkpoints and parked links
     * go; the group goes on after a reopen. */
    static char fill[1000];
    stele_event_in fe = {.type = "Fill", .data = fill, .data_len = sizeof fill};
    for (int i = 0; i < 140; i++)
        CHECK_OK(stele_append(db, "Fill-1", STELE_ANY, &fe, 1, NULL));
    stele_scavenge_result sr;
    CHECK_OK(stele_scavenge(db, NULL, &sr));
    CHECK(sr.events_removed >= 10);
    stele_close(db);
    CHECK_OK(stele_open(dir, &o, &db));
    stele_group_info *in = info_of(db, "Meta-1", "m");
    if (in) {
        CHECK(in->checkpoint_saved == 40);
        CHECK(in->parked == 0);
        stele_group_info_free(in);
    }
    CHECK(plain_count(db, ck, NULL) == 1);
    CHECK(plain_count(db, pk, NULL) == 0);
    CHECK_OK(stele_group_read_parked(db, "Meta-1", "m", 0, 100, &pg));
    CHECK(stele_page_count(pg) == 0);
    stele_page_free(pg);
    append_n(db, "Meta-1", 3, "Happened");
    CHECK_OK(stele_group_connect(db, "Meta-1", "m", "w", &c));
    CHECK_OK(stele_consumer_read(c, 10, 1000, &b));
    CHECK(stele_batch_count(b) == 3);
    CHECK(stele_batch_count(b) >= 1 && stele_batch_event(b, 0)->revision == 40);
    ack_batch(c, b);
    stele_batch_free(b);
    /* A new park after the truncation is visible. */
    append_n(db, "Meta-1", 1, "Happened");
    CHECK_OK(stele_consumer_read(c, 10, 1000, &b));
    CHECK(stele_batch_count(b) == 1);
    if (stele_batch_count(b) == 1)
        CHECK_OK(stele_consumer_nack(c, (const uint8_t(*)[16])stele_batch_event(b, 0)->id, 1,
                                     STELE_NACK_PARK, "again"));
    stele_batch_free(b);
    size_t np = 0;
    for (int w = 0; w < 2500 && np == 0; w++) {
        stele_group_info *i2 = info_of(db, "Meta-1", "m");
        np = i2 ? (size_t)i2->parked : 0;
        stele_group_info_free(i2);
        if (!np)
            usleep(2000);
    }
    CHECK(np == 1);
    CHECK(plain_count(db, pk, &first) == 1 && first == 5);
    stele_consumer_close(c);
    stele_close(db);
    CHECK_OK(stele_check(dir, NULL, 0));
    t_rmdir(dir);
}

/* The store's limits on groups and on the consumers of one group
 * (docs/limits.md): EBUSY with a message naming the limit; deleting a
 * group or closing a consumer makes room again. */
static void test_limits(void)
{
    const char *dir = t_tmpdir("groups-limits");
    stele_options o = {.segment_size = 64 << 10, .max_groups = 2, .max_consumers_per_group = 2};
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    CHECK_OK(stele_group_create(db, NULL, "a", &gs));
    CHECK_OK(stele_group_create(db, "Lim-1", "b", &gs));
    CHECK_RC(stele_group_create(db, NULL, "c", &gs), STELE_EBUSY);
    CHECK(strstr(stele_errmsg(), "max_groups 2") != NULL);
    CHECK_RC(stele_group_create(db, NULL, "a", &gs), STELE_EEXISTS); /* exists comes first */
    CHECK_OK(stele_group_delete(db, "Lim-1", "b"));
    CHECK_OK(stele_group_create(db, NULL, "c", &gs));
    stele_consumer *c1, *c2, *c3;
    CHECK_OK(stele_group_connect(db, NULL, "a", "w1", &c1));
    CHECK_OK(stele_group_connect(db, NULL, "a", "w2", &c2));
    CHECK_RC(stele_group_connect(db, NULL, "a", "w3", &c3), STELE_EBUSY);
    CHECK(strstr(stele_errmsg(), "max_consumers_per_group 2") != NULL);
    CHECK_OK(stele_group_connect(db, NULL, "c", "w3", &c3)); /* per group */
    stele_consumer_close(c3);
    stele_consumer_close(c2);
    CHECK_OK(stele_group_connect(db, NULL, "a", "w3", &c3));
    stele_consumer_close(c3);
    stele_consumer_close(c1);
    stele_close(db);
    /* Reopened with the defaults (1000 groups): more may be created. */
    stele_options dflt = {.segment_size = 64 << 10};
    CHECK_OK(stele_open(dir, &dflt, &db));
    CHECK_OK(stele_group_create(db, NULL, "d", &gs));
    stele_close(db);
    t_rmdir(dir);
}

int main(void)
{
    t_seed();
    quick = getenv("TEST_QUICK") != NULL;
    const char *dir = t_tmpdir("groups");
    stele_options o = {.segment_size = 4 << 20};
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    int passed = 0;

    section("bad_input");
    test_bad_input(db);
    passed++;
    section("redelivery");
    test_redelivery(db);
    passed++;
    section("park_replay");
    test_park_replay(db);
    passed++;
    section("share 2");
    test_share(db, 2, "two");
    passed++;
    section("share 3");
    test_share(db, 3, "three");
    passed++;
    section("pinned");
    test_pinned(db);
    passed++;
    section("sparse_filter");
    test_sparse_filter(db);
    passed++;
    section("idle_all");
    test_idle_all(db);
    passed++;
    section("restart");
    test_restart(dir, &db);
    passed++;
    section("kill");
    test_kill(dir, &db);
    passed++;
    section("metadata");
    test_metadata();
    passed++;
    section("limits");
    test_limits();
    passed++;

    section(NULL);
    /* Groups listed after all of that: Pay-1/billing, Ship-1/g, Kill-1/k. */
    stele_group_info *list;
    size_t n;
    CHECK_OK(stele_group_list(db, &list, &n));
    CHECK(n == 3);
    for (size_t i = 0; i < n; i++)
        CHECK(!strcmp(list[i].stream, "Pay-1") || !strcmp(list[i].stream, "Ship-1") ||
              !strcmp(list[i].stream, "Kill-1"));
    stele_group_info_free(list);
    passed++;

    stele_close(db);
    CHECK_OK(stele_check(dir, NULL, 0));
    t_rmdir(dir);
    return t_done("test_groups", passed);
}
