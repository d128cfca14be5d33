/*
 * test_concurrency.c - many threads on one stele_db.
 *
 * 1. Writers + readers: 8 writer threads append single events and small
 *    batches to shared streams (exact expected revision from
 *    stele_stream_head or from the last EWRONGREV, retried on EWRONGREV), to
 *    private streams (expected revision tracked locally) and to one stream
 *    with STELE_ANY, while 3 reader threads tail $all, read stream tails and
 *    heads. Every event's data names its append (batch id, index i of n, the
 *    revision it was meant for), so readers can tell a partly visible append.
 *    Afterwards (and again after a reopen): $all is gapless 0..N-1, N equals
 *    the events of all acknowledged appends, every stream's revisions are
 *    contiguous from 0 and every acknowledgement is found byte for byte.
 * 2. Race: in each round 8 threads meet at a barrier and append to one
 *    stream with the same exact expected revision; exactly one must win and
 *    every loser must get EWRONGREV with the winner's last revision. Every
 *    third round is a retry storm instead: all 8 send the same events (same
 *    ids, exact expected revision or ANY) at once; exactly one writes them,
 *    the other 7 must be idempotent retries with the same result.
 *
 * Replay with TEST_SEED=n (thread interleavings still vary).
 */
#include "testutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#define NWRITERS 8
#define NREADERS 3
#define APPENDS_PER_WRITER 600
#define NSHARED 3
#define RACE_THREADS 8
#define RACE_ROUNDS 600
#define MAX_BATCH 6

static stele_db *db;
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;

/* thread-safe failure report (CHECK's counter is not atomic) */
static void tfail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void tfail(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&fail_mu);
    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    t_failures++;
    pthread_mutex_unlock(&fail_mu);
    t_fail_hook();
}

/* per-thread xorshift */
static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
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

/* ------------------------------------------------------------- streams */

/* 0..NSHARED-1 shared (exact), NSHARED..NSHARED+NWRITERS-1 private,
 * last: shared with STELE_ANY */
#define NSTREAMS (NSHARED + NWRITERS + 1)
#define ANY_STREAM (NSHARED + NWRITERS)
static char snames[NSTREAMS][64];

static void init_names(void)
{
    for (int i = 0; i < NSHARED; i++)
        snprintf(snames[i], sizeof snames[i], "shared-%d-\xc3\xa4", i); /* ä */
    for (int i = 0; i < NWRITERS; i++)
        snprintf(snames[NSHARED + i], sizeof snames[0], "private-%d", i);
    snprintf(snames[ANY_STREAM], sizeof snames[0], "shared-any");
}

static int stream_index(const char *name, size_t len)
{
    for (int i = 0; i < NSTREAMS; i++)
        if (strlen(snames[i]) == len && memcmp(snames[i], name, len) == 0)
            return i;
    return -1;
}

/* ----------------------------------------------------------- event data */

/*
 * data = fixed header + filler derived from (batch, i):
 *   "B<batch:16hex> I<i:4> N<n:4> S<stream:4> R<rev:20 or -1>|" filler
 */
#define HDR_LEN 64

typedef struct hdr {
    uint64_t batch;
    unsigned i, n;
    int stream;
    int64_t rev;
} hdr;

static size_t data_len_for(uint64_t batch, unsigned i)
{
    uint64_t h = mix(batch * 131 + i);
    if (h % 97 == 0)
        return HDR_LEN + 20000 + h % 20000; /* a few larger ones cross segments */
    return HDR_LEN + h % 600;
}

static void make_data(uint8_t *out, size_t len, const hdr *h)
{
    char buf[HDR_LEN + 1];
    int k = snprintf(buf, sizeof buf, "B%016" PRIx64 " I%04u N%04u S%04d R%020" PRId64 "|", h->batch,
                     h->i, h->n, h->stream, h->rev);
    memset(out, ' ', HDR_LEN);
    memcpy(out, buf, (size_t)k < HDR_LEN ? (size_t)k : HDR_LEN);
    uint64_t x = mix(h->batch ^ ((uint64_t)h->i << 48)) | 1;
    for (size_t p = HDR_LEN; p < len; p++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[p] = (uint8_t)x;
    }
}

/* Parse and verify the whole payload; 0 if it is not ours or damaged. */
static int parse_data(const stele_event *e, hdr *h)
{
    if (e->data_len < HDR_LEN)
        return 0;
    char buf[HDR_LEN + 1];
    memcpy(buf, e->data, HDR_LEN);
    buf[HDR_LEN] = 0;
    unsigned long long b;
    long long rev;
    if (sscanf(buf, "B%16llx I%4u N%4u S%4d R%20lld|", &b, &h->i, &h->n, &h->stream, &rev) != 5)
        return 0;
    h->batch = b;
    h->rev = rev;
    if (e->data_len != data_len_for(h->batch, h->i))
        return 0;
    uint8_t *tmp = malloc(e->data_len);
    make_data(tmp, e->data_len, h);
    int ok = memcmp(tmp, e->data, e->data_len) == 0;
    free(tmp);
    return ok;
}

/* Check an event from any read: payload intact, stream and revision agree. */
static int check_payload(const stele_event *e, hdr *h, const char *who)
{
    if (!parse_data(e, h)) {
        tfail("%s: event at position %" PRIu64 " (stream %s rev %" PRIu64 ") has damaged data", who,
              e->position, e->stream, e->revision);
        return 0;
    }
    int si = stream_index(e->stream, e->stream_len);
    if (si != h->stream) {
        tfail("%s: event at position %" PRIu64 " is in stream \"%s\" but was appended to \"%s\"",
              who, e->position, e->stream, h->stream >= 0 && h->stream < NSTREAMS ? snames[h->stream] : "?");
        return 0;
    }
    if (h->rev >= 0 && (uint64_t)h->rev != e->revision) {
        tfail("%s: event at position %" PRIu64 " of \"%s\" has revision %" PRIu64
              ", its append expected revision %" PRId64,
              who, e->position, e->stream, e->revision, h->rev);
        return 0;
    }
    if (h->n == 0 || h->i >= h->n) {
        tfail("%s: bad index %u of %u", who, h->i, h->n);
        return 0;
    }
    return 1;
}

/* -------------------------------------------------------------- writers */

typedef struct ack {
    int stream;
    uint64_t batch;
    unsigned n;
    uint64_t first_rev, first_pos;
} ack;

typedef struct wstate {
    int id;
    uint64_t rng;
    ack acks[APPENDS_PER_WRITER];
    size_t nacks;
    uint64_t wrongrev_retries;
} wstate;

static atomic_int writers_done;

/* id_seed != 0: the ids are a function of it (the same events again) */
static int append_batch(wstate *w, int s, int64_t expected, uint64_t batch, unsigned n,
                        stele_append_result *res, uint64_t id_seed)
{
    stele_event_in ev[MAX_BATCH];
    uint8_t ids[MAX_BATCH][16];
    uint8_t *bufs[MAX_BATCH];
    int withids = id_seed || rnd(&w->rng) % 4 != 0;
    for (unsigned i = 0; i < n; i++) {
        hdr h = {batch, i, n, s, expected >= 0 ? expected + 1 + (int64_t)i
                                 : expected == STELE_NO_STREAM ? (int64_t)i : -1};
        size_t len = data_len_for(batch, i);
        bufs[i] = malloc(len);
        make_data(bufs[i], len, &h);
        uint64_t a = id_seed ? mix(id_seed * 64 + i) : rnd(&w->rng);
        uint64_t b = id_seed ? mix(a) : rnd(&w->rng);
        memcpy(ids[i], &a, 8);
        memcpy(ids[i] + 8, &b, 8);
        ids[i][6] = (uint8_t)((ids[i][6] & 0x0f) | 0x40);
        ids[i][8] = (uint8_t)((ids[i][8] & 0x3f) | 0x80);
        memset(&ev[i], 0, sizeof ev[i]);
        ev[i].id = withids ? ids[i] : NULL;
        ev[i].type = i == 0 ? "BatchStarted" : "BatchItem";
        ev[i].data = bufs[i];
        ev[i].data_len = len;
        ev[i].metadata = "{\"conc\":1}";
        ev[i].metadata_len = 10;
        ev[i].flags = STELE_META_JSON;
    }
    memset(res, 0xA5, sizeof *res);
    int rc = stele_append(db, snames[s], expected, ev, n, res);
    for (unsigned i = 0; i < n; i++)
        free(bufs[i]);
    return rc;
}

static void record_ack(wstate *w, int s, uint64_t batch, unsigned n, const stele_append_result *res,
                       int64_t expected)
{
    if (res->idempotent)
        tfail("writer %d: fresh append to %s reported idempotent", w->id, snames[s]);
    if (res->last_revision != res->first_revision + n - 1 ||
        res->last_position != res->first_position + n - 1)
        tfail("writer %d: append of %u to %s: result revisions %" PRIu64 "..%" PRIu64
              " positions %" PRIu64 "..%" PRIu64,
              w->id, n, snames[s], res->first_revision, res->last_revision, res->first_position,
              res->last_position);
    if (expected >= 0 && res->first_revision != (uint64_t)expected + 1)
        tfail("writer %d: append to %s with expected %" PRId64 " got first revision %" PRIu64, w->id,
              snames[s], expected, res->first_revision);
    if (expected == STELE_NO_STREAM && res->first_revision != 0)
        tfail("writer %d: append to %s with NO_STREAM got first revision %" PRIu64, w->id, snames[s],
              res->first_revision);
    ack *a = &w->acks[w->nacks++];
    a->stream = s;
    a->batch = batch;
    a->n = n;
    a->first_rev = res->first_revision;
    a->first_pos = res->first_position;
}

static void *writer_main(void *arg)
{
    wstate *w = arg;
    int priv = NSHARED + w->id;
    int64_t priv_expected = STELE_NO_STREAM;
    for (int k = 0; k < APPENDS_PER_WRITER; k++) {
        uint64_t batch = ((uint64_t)(w->id + 1) << 32) | (uint64_t)k;
        unsigned n = rnd(&w->rng) % 10 < 6 ? 1 : 2 + (unsigned)(rnd(&w->rng) % (MAX_BATCH - 1));
        uint64_t r = rnd(&w->rng) % 10;
        stele_append_result res;
        if (r < 3) {
            int rc = append_batch(w, priv, priv_expected, batch, n, &res, 0);
            if (rc != 0) {
                tfail("writer %d: append to its own stream %s expected %" PRId64 ": %s (%s)", w->id,
                      snames[priv], priv_expected, stele_errname(rc), stele_errmsg());
                continue;
            }
            record_ack(w, priv, batch, n, &res, priv_expected);
            priv_expected = (int64_t)res.last_revision;
        } else if (r < 4) {
            int rc = append_batch(w, ANY_STREAM, STELE_ANY, batch, n, &res, 0);
            if (rc != 0) {
                tfail("writer %d: append with ANY: %s (%s)", w->id, stele_errname(rc), stele_errmsg());
                continue;
            }
            record_ack(w, ANY_STREAM, batch, n, &res, STELE_ANY);
        } else {
            int s = (int)(rnd(&w->rng) % NSHARED);
            int64_t expected = STELE_ANY;
            int use_head = 1;
            for (long attempt = 0;; attempt++) {
                if (use_head) {
                    stele_stream_info info;
                    int rc = stele_stream_head(db, snames[s], &info);
                    if (rc == STELE_ENOTFOUND) {
                        expected = STELE_NO_STREAM;
                    } else if (rc != 0) {
                        tfail("writer %d: stream_head %s: %s (%s)", w->id, snames[s], stele_errname(rc),
                              stele_errmsg());
                        break;
                    } else {
                        expected = (int64_t)info.last_revision;
                    }
                }
                int rc = append_batch(w, s, expected, batch, n, &res, 0);
                if (rc == 0) {
                    record_ack(w, s, batch, n, &res, expected);
                    break;
                }
                if (rc != STELE_EWRONGREV) {
                    tfail("writer %d: append to %s expected %" PRId64 ": %s (%s)", w->id, snames[s],
                          expected, stele_errname(rc), stele_errmsg());
                    break;
                }
                /* the stream moved on: the current revision must be later */
                if (res.current_revision == STELE_NONE ||
                    (expected >= 0 && res.current_revision <= (uint64_t)expected)) {
                    tfail("writer %d: EWRONGREV on %s with expected %" PRId64
                          " reports current revision %" PRIu64 " (streams only grow)",
                          w->id, snames[s], expected, res.current_revision);
                    break;
                }
                w->wrongrev_retries++;
                if (attempt > 100000) {
                    tfail("writer %d: no progress on %s after %ld attempts", w->id, snames[s], attempt);
                    break;
                }
                /* half the time retry with the reported revision, else re-read the head */
                use_head = rnd(&w->rng) % 2;
                if (!use_head)
                    expected = (int64_t)res.current_revision;
            }
        }
    }
    return NULL;
}

/* -------------------------------------------------------------- readers */

typedef struct rstate {
    int id;
    uint64_t rng;
    uint64_t passes, events_seen, tail_checks;
} rstate;

/* Tail $all from `pos`, checking gaplessness and batch integrity. Returns
 * the next position. `open` carries a batch cut by a page boundary. */
typedef struct tailer {
    uint64_t next_pos;
    int open; /* a batch is partly read */
    hdr cur;
    uint64_t cur_rev;
    uint64_t stream_next_rev[NSTREAMS]; /* only valid when started at 0 */
    int from_zero;
} tailer;

static void tail_all(rstate *r, tailer *t, const char *who)
{
    for (int pages = 0; pages < 1000; pages++) {
        stele_page *page = NULL;
        size_t limit = 1 + rnd(&r->rng) % 300;
        int rc = stele_read_all(db, t->next_pos, STELE_FORWARDS, limit, &page);
        if (rc != 0) {
            tfail("%s: read_all from %" PRIu64 ": %s (%s)", who, t->next_pos, stele_errname(rc),
                  stele_errmsg());
            return;
        }
        size_t cnt = stele_page_count(page);
        for (size_t i = 0; i < cnt; i++) {
            const stele_event *e = stele_page_event(page, i);
            hdr h;
            if (e->position != t->next_pos) {
                tfail("%s: $all gap: position %" PRIu64 " where %" PRIu64 " was due", who, e->position,
                      t->next_pos);
                stele_page_free(page);
                return;
            }
            t->next_pos++;
            r->events_seen++;
            if (!check_payload(e, &h, who))
                continue;
            if (t->open) {
                if (h.batch != t->cur.batch || h.i != t->cur.i + 1 || h.n != t->cur.n ||
                    e->revision != t->cur_rev + 1)
                    tfail("%s: position %" PRIu64 ": append %" PRIx64 " (%u of %u) is interleaved with "
                          "append %" PRIx64 " (%u of %u)",
                          who, e->position, h.batch, h.i, h.n, t->cur.batch, t->cur.i, t->cur.n);
            } else if (h.i != 0) {
                tfail("%s: position %" PRIu64 ": event %u of %u of append %" PRIx64
                      " without its start",
                      who, e->position, h.i, h.n, h.batch);
            }
            if (t->from_zero) {
                if (e->revision != t->stream_next_rev[h.stream])
                    tfail("%s: position %" PRIu64 ": %s revision %" PRIu64 ", want %" PRIu64
                          " (revisions in $all order)",
                          who, e->position, e->stream, e->revision, t->stream_next_rev[h.stream]);
                t->stream_next_rev[h.stream] = e->revision + 1;
            }
            t->cur = h;
            t->cur_rev = e->revision;
            t->open = h.i + 1 < h.n;
        }
        uint64_t next;
        int more = stele_page_next(page, &next);
        stele_page_free(page);
        if (cnt == 0 || !more)
            break;
        if (next != t->next_pos)
            tfail("%s: stele_page_next %" PRIu64 ", want %" PRIu64, who, next, t->next_pos);
    }
    /* at the end of what is visible no append may be half there */
    if (t->open)
        tfail("%s: $all ends at position %" PRIu64 " inside append %" PRIx64 " (event %u of %u): "
              "a partly visible append",
              who, t->next_pos, t->cur.batch, t->cur.i, t->cur.n);
}

static void check_stream_tail(rstate *r, const char *who)
{
    int s = (int)(rnd(&r->rng) % NSTREAMS);
    stele_stream_info info;
    int rc = stele_stream_head(db, snames[s], &info);
    if (rc == STELE_ENOTFOUND)
        return;
    if (rc != 0) {
        tfail("%s: stream_head %s: %s (%s)", who, snames[s], stele_errname(rc), stele_errmsg());
        return;
    }
    /* the head's last event must be readable at once, at its position */
    stele_page *page = NULL;
    rc = stele_read_stream(db, snames[s], info.last_revision, STELE_FORWARDS, 1, &page);
    if (rc != 0 || stele_page_count(page) != 1) {
        tfail("%s: head of %s says revision %" PRIu64 " but reading it gives %s, %zu events", who,
              snames[s], info.last_revision, stele_errname(rc), rc == 0 ? stele_page_count(page) : 0);
    } else {
        const stele_event *e = stele_page_event(page, 0);
        hdr h;
        if (e->revision != info.last_revision || e->position != info.last_position)
            tfail("%s: head of %s: revision %" PRIu64 " position %" PRIu64 ", event read has %" PRIu64
                  "/%" PRIu64,
                  who, snames[s], info.last_revision, info.last_position, e->revision, e->position);
        if (check_payload(e, &h, who) && h.i + 1 != h.n)
            tfail("%s: head of %s is event %u of %u of append %" PRIx64 ": a partly visible append",
                  who, snames[s], h.i, h.n, h.batch);
    }
    if (rc == 0)
        stele_page_free(page);

    /* the stream's tail, backwards: starts with the last event of an append,
     * revisions descend by one, appends are whole */
    page = NULL;
    size_t limit = 1 + rnd(&r->rng) % 12;
    rc = stele_read_stream(db, snames[s], STELE_END, STELE_BACKWARDS, limit, &page);
    if (rc != 0) {
        tfail("%s: read %s backwards: %s (%s)", who, snames[s], stele_errname(rc), stele_errmsg());
        return;
    }
    size_t cnt = stele_page_count(page);
    if (cnt == 0) {
        /* say more: does the same read fail again, and what does head say now */
        stele_page *again = NULL;
        stele_stream_info info2;
        int rc2 = stele_read_stream(db, snames[s], STELE_END, STELE_BACKWARDS, limit, &again);
        size_t cnt2 = rc2 == 0 ? stele_page_count(again) : 0;
        stele_page_free(again);
        int rc3 = stele_stream_head(db, snames[s], &info2);
        tfail("%s: %s exists (head: last_revision %" PRIu64 ", position %" PRIu64
              ") but read_stream(from STELE_END, backwards, limit %zu) returned rc 0 with 0 events; "
              "the same read again: rc %d, %zu events; head now: rc %d, last_revision %" PRIu64,
              who, snames[s], info.last_revision, info.last_position, limit, rc2, cnt2, rc3,
              info2.last_revision);
    }
    hdr prev = {0, 0, 0, 0, 0};
    uint64_t prev_rev = 0;
    for (size_t i = 0; i < cnt; i++) {
        const stele_event *e = stele_page_event(page, i);
        hdr h;
        if (!check_payload(e, &h, who))
            break;
        if (i == 0) {
            if (h.i + 1 != h.n)
                tfail("%s: last event of %s (revision %" PRIu64 ") is %u of %u of append %" PRIx64
                      ": a partly visible append",
                      who, snames[s], e->revision, h.i, h.n, h.batch);
            if (e->revision < info.last_revision)
                tfail("%s: %s: backwards read starts at %" PRIu64 " but the head was %" PRIu64, who,
                      snames[s], e->revision, info.last_revision);
        } else {
            if (e->revision + 1 != prev_rev)
                tfail("%s: %s backwards: revision %" PRIu64 " after %" PRIu64, who, snames[s],
                      e->revision, prev_rev);
            if (prev.i == 0 ? h.i + 1 != h.n : (h.batch != prev.batch || h.i + 1 != prev.i))
                tfail("%s: %s backwards: append %" PRIx64 " (%u/%u) follows append %" PRIx64 " (%u/%u)",
                      who, snames[s], h.batch, h.i, h.n, prev.batch, prev.i, prev.n);
        }
        prev = h;
        prev_rev = e->revision;
    }
    stele_page_free(page);
    r->tail_checks++;
}

static void check_all_tail(rstate *r, const char *who)
{
    stele_page *page = NULL;
    size_t limit = 1 + rnd(&r->rng) % 20;
    int rc = stele_read_all(db, STELE_END, STELE_BACKWARDS, limit, &page);
    if (rc != 0) {
        tfail("%s: read_all backwards: %s (%s)", who, stele_errname(rc), stele_errmsg());
        return;
    }
    size_t cnt = stele_page_count(page);
    for (size_t i = 0; i < cnt; i++) {
        const stele_event *e = stele_page_event(page, i);
        hdr h;
        if (!check_payload(e, &h, who))
            break;
        if (i == 0 && h.i + 1 != h.n)
            tfail("%s: last event of $all (position %" PRIu64 ") is %u of %u of append %" PRIx64
                  ": a partly visible append",
                  who, e->position, h.i, h.n, h.batch);
        if (i > 0 && e->position + 1 != stele_page_event(page, i - 1)->position)
            tfail("%s: $all backwards: position %" PRIu64 " after %" PRIu64, who, e->position,
                  stele_page_event(page, i - 1)->position);
    }
    stele_page_free(page);
}

static void *reader_main(void *arg)
{
    rstate *r = arg;
    char who[32];
    snprintf(who, sizeof who, "reader %d", r->id);
    tailer t;
    memset(&t, 0, sizeof t);
    t.from_zero = 1;
    int last_round = 0;
    for (;;) {
        int done = atomic_load(&writers_done);
        uint64_t what = rnd(&r->rng) % 10;
        if (what < 4) {
            tail_all(r, &t, who);
            if (rnd(&r->rng) % 20 == 0) { /* start over from 0 now and then */
                memset(&t, 0, sizeof t);
                t.from_zero = 1;
            }
        } else if (what < 8) {
            check_stream_tail(r, who);
        } else {
            check_all_tail(r, who);
        }
        r->passes++;
        if (last_round)
            break;
        if (done)
            last_round = 1;
    }
    tail_all(r, &t, who);
    return NULL;
}

/* ----------------------------------------------------- final verification */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void verify_store(wstate *ws, const char *when)
{
    uint64_t total = 0, per_stream[NSTREAMS] = {0};
    for (int w = 0; w < NWRITERS; w++)
        for (size_t k = 0; k < ws[w].nacks; k++) {
            total += ws[w].acks[k].n;
            per_stream[ws[w].acks[k].stream] += ws[w].acks[k].n;
        }

    /* $all: gapless 0..N-1, N = acknowledged events; record each event's
     * (batch, i) by position */
    uint64_t *batch_at = calloc(total + 1, sizeof *batch_at);
    unsigned *index_at = calloc(total + 1, sizeof *index_at);
    uint64_t *rev_at = calloc(total + 1, sizeof *rev_at);
    int *stream_at = calloc(total + 1, sizeof *stream_at);
    uint64_t pos = 0;
    uint64_t next_rev[NSTREAMS] = {0};
    for (;;) {
        stele_page *page = NULL;
        int rc = stele_read_all(db, pos, STELE_FORWARDS, 1000, &page);
        if (rc != 0) {
            tfail("%s: read_all from %" PRIu64 ": %s (%s)", when, pos, stele_errname(rc), stele_errmsg());
            break;
        }
        size_t cnt = stele_page_count(page);
        for (size_t i = 0; i < cnt; i++) {
            const stele_event *e = stele_page_event(page, i);
            hdr h;
            if (e->position != pos)
                tfail("%s: $all has position %" PRIu64 " where %" PRIu64 " was due", when, e->position, pos);
            if (pos < total && check_payload(e, &h, when)) {
                batch_at[pos] = h.batch;
                index_at[pos] = h.i;
                rev_at[pos] = e->revision;
                stream_at[pos] = h.stream;
                if (e->revision != next_rev[h.stream])
                    tfail("%s: position %" PRIu64 ": %s revision %" PRIu64 ", want %" PRIu64, when, pos,
                          snames[h.stream], e->revision, next_rev[h.stream]);
                next_rev[h.stream] = e->revision + 1;
            }
            pos++;
        }
        uint64_t next;
        int more = stele_page_next(page, &next);
        stele_page_free(page);
        if (cnt == 0 || !more)
            break;
    }
    if (pos != total)
        tfail("%s: $all has %" PRIu64 " events, the acknowledged appends wrote %" PRIu64, when, pos, total);

    /* each acknowledgement: its events at its positions and revisions */
    uint64_t *starts = malloc((NWRITERS * APPENDS_PER_WRITER + 1) * sizeof *starts);
    size_t nstarts = 0;
    for (int w = 0; w < NWRITERS; w++)
        for (size_t k = 0; k < ws[w].nacks; k++) {
            ack *a = &ws[w].acks[k];
            starts[nstarts++] = a->first_pos;
            for (unsigned i = 0; i < a->n; i++) {
                uint64_t p = a->first_pos + i;
                if (p >= total || batch_at[p] != a->batch || index_at[p] != i ||
                    rev_at[p] != a->first_rev + i || stream_at[p] != a->stream) {
                    tfail("%s: writer %d's append %" PRIx64 " (%u events to %s, revision %" PRIu64
                          ", position %" PRIu64 "): event %u is not at position %" PRIu64,
                          when, w, a->batch, a->n, snames[a->stream], a->first_rev, a->first_pos, i, p);
                    break;
                }
            }
        }
    qsort(starts, nstarts, sizeof *starts, cmp_u64);
    for (size_t i = 1; i < nstarts; i++)
        if (starts[i] == starts[i - 1])
            tfail("%s: two acknowledged appends start at position %" PRIu64, when, starts[i]);

    /* every stream read forwards: contiguous from 0, count = acknowledged */
    for (int s = 0; s < NSTREAMS; s++) {
        uint64_t rev = 0, from = 0;
        for (;;) {
            stele_page *page = NULL;
            int rc = stele_read_stream(db, snames[s], from, STELE_FORWARDS, 700, &page);
            if (rc == STELE_ENOTFOUND && per_stream[s] == 0)
                break;
            if (rc != 0) {
                tfail("%s: read %s: %s (%s)", when, snames[s], stele_errname(rc), stele_errmsg());
                break;
            }
            size_t cnt = stele_page_count(page);
            for (size_t i = 0; i < cnt; i++) {
                const stele_event *e = stele_page_event(page, i);
                if (e->revision != rev)
                    tfail("%s: %s: revision %" PRIu64 ", want %" PRIu64, when, snames[s], e->revision, rev);
                if (e->position >= total || stream_at[e->position] != s || rev_at[e->position] != e->revision)
                    tfail("%s: %s revision %" PRIu64 " at position %" PRIu64 " does not match $all", when,
                          snames[s], e->revision, e->position);
                rev++;
            }
            uint64_t next;
            int more = stele_page_next(page, &next);
            stele_page_free(page);
            if (cnt == 0 || !more)
                break;
            from = next;
        }
        if (rev != per_stream[s])
            tfail("%s: %s has %" PRIu64 " events, acknowledged %" PRIu64, when, snames[s], rev, per_stream[s]);
        stele_stream_info info;
        int rc = stele_stream_head(db, snames[s], &info);
        if (per_stream[s] && (rc != 0 || info.last_revision != per_stream[s] - 1))
            tfail("%s: head of %s: rc %s last_revision %" PRIu64 ", want %" PRIu64, when, snames[s],
                  stele_errname(rc), info.last_revision, per_stream[s] - 1);
    }
    stele_stats stats;
    if (stele_get_stats(db, &stats) != 0 || stats.events != total)
        tfail("%s: stats.events %" PRIu64 ", want %" PRIu64, when, stats.events, total);
    free(batch_at);
    free(index_at);
    free(rev_at);
    free(stream_at);
    free(starts);
}

static void test_writers_readers(void)
{
    const char *dir = t_store("conc");
    stele_options o;
    memset(&o, 0, sizeof o);
    o.segment_size = 64 * 1024;
    CHECK_OK(stele_open(dir, &o, &db));

    static wstate ws[NWRITERS];
    static rstate rs[NREADERS];
    pthread_t wt[NWRITERS], rt[NREADERS];
    atomic_store(&writers_done, 0);
    for (int i = 0; i < NREADERS; i++) {
        memset(&rs[i], 0, sizeof rs[i]);
        rs[i].id = i;
        rs[i].rng = mix(t_rand()) | 1; /* mixed: raw t_rand() states would overlap */
        CHECK(pthread_create(&rt[i], NULL, reader_main, &rs[i]) == 0);
    }
    for (int i = 0; i < NWRITERS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].id = i;
        ws[i].rng = mix(t_rand()) | 1;
        CHECK(pthread_create(&wt[i], NULL, writer_main, &ws[i]) == 0);
    }
    uint64_t retries = 0, acks = 0;
    for (int i = 0; i < NWRITERS; i++) {
        pthread_join(wt[i], NULL);
        retries += ws[i].wrongrev_retries;
        acks += ws[i].nacks;
    }
    atomic_store(&writers_done, 1);
    uint64_t seen = 0, tails = 0;
    for (int i = 0; i < NREADERS; i++) {
        pthread_join(rt[i], NULL);
        seen += rs[i].events_seen;
        tails += rs[i].tail_checks;
    }
    printf("writers: %" PRIu64 " appends acknowledged, %" PRIu64 " EWRONGREV retries; readers: %" PRIu64
           " events tailed, %" PRIu64 " stream tail checks\n",
           acks, retries, seen, tails);
    if (acks != NWRITERS * APPENDS_PER_WRITER)
        tfail("only %" PRIu64 " of %d appends were acknowledged", acks, NWRITERS * APPENDS_PER_WRITER);
    if (retries == 0)
        printf("note: no EWRONGREV happened on the shared streams this time\n");

    verify_store(ws, "after the writers");
    stele_close(db);
    db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    verify_store(ws, "after reopen");
    stele_close(db);
    db = NULL;
    t_store_drop(dir);
}

/* ------------------------------------------------------------------ race */

typedef struct racer {
    int id;
    uint64_t rng;
    int rc;
    unsigned n;
    uint64_t batch;
    stele_append_result res;
    char msg[300];
} racer;

static pthread_barrier_t race_start, race_end;
static int64_t race_expected;
static int race_round;
static atomic_int race_stop;
static racer racers[RACE_THREADS];

static void *racer_main(void *arg)
{
    racer *r = arg;
    wstate w;
    memset(&w, 0, sizeof w);
    w.id = r->id;
    for (;;) {
        pthread_barrier_wait(&race_start);
        if (atomic_load(&race_stop))
            break;
        w.rng = r->rng;
        if (race_round % 3 == 2) {
            /* a retry storm: every thread sends the same events (same ids)
             * at once; one writes them, the others are idempotent retries */
            r->n = 1 + (unsigned)(mix((uint64_t)race_round) % 3);
            r->batch = ((uint64_t)999 << 32) | (uint64_t)race_round;
            int64_t e = race_round % 2 ? race_expected : STELE_ANY;
            r->rc = append_batch(&w, 0, e, r->batch, r->n, &r->res, (uint64_t)race_round + 1);
            snprintf(r->msg, sizeof r->msg, "%s", r->rc ? stele_errmsg() : "");
        } else {
            r->n = 1 + (unsigned)(rnd(&r->rng) % 3);
            r->batch = ((uint64_t)(100 + r->id) << 32) | (uint64_t)race_round;
            r->rc = append_batch(&w, 0, race_expected, r->batch, r->n, &r->res, 0);
            snprintf(r->msg, sizeof r->msg, "%s", r->rc ? stele_errmsg() : "");
        }
        r->rng = w.rng;
        pthread_barrier_wait(&race_end);
    }
    return NULL;
}

static void test_race(void)
{
    const char *dir = t_store("race");
    CHECK_OK(stele_open(dir, NULL, &db));
    pthread_t th[RACE_THREADS];
    CHECK(pthread_barrier_init(&race_start, NULL, RACE_THREADS + 1) == 0);
    CHECK(pthread_barrier_init(&race_end, NULL, RACE_THREADS + 1) == 0);
    atomic_store(&race_stop, 0);
    for (int i = 0; i < RACE_THREADS; i++) {
        racers[i].id = i;
        racers[i].rng = mix(t_rand()) | 1;
        CHECK(pthread_create(&th[i], NULL, racer_main, &racers[i]) == 0);
    }
    race_expected = STELE_NO_STREAM;
    uint64_t total = 0;
    uint64_t *wbatch = calloc(RACE_ROUNDS, sizeof *wbatch);
    uint64_t *wfirst = calloc(RACE_ROUNDS, sizeof *wfirst);
    unsigned *wn = calloc(RACE_ROUNDS, sizeof *wn);
    for (race_round = 0; race_round < RACE_ROUNDS; race_round++) {
        pthread_barrier_wait(&race_start);
        pthread_barrier_wait(&race_end);
        int winners = 0, winner = -1;
        if (race_round % 3 == 2) {
            int idem = 0, writes = 0;
            for (int i = 0; i < RACE_THREADS; i++) {
                if (racers[i].rc == 0 && !racers[i].res.idempotent)
                    writes++;
                if (racers[i].rc != 0) {
                    tfail("retry storm round %d: %d identical appends (ids, %u events) to %s with "
                          "expected %s: thread %d got %s (\"%s\"), want 0 (one writes, the rest are "
                          "idempotent retries)",
                          race_round, RACE_THREADS, racers[i].n, snames[0],
                          race_round % 2 ? "exact" : "ANY", i, stele_errname(racers[i].rc), racers[i].msg);
                    continue;
                }
                if (racers[i].res.idempotent)
                    idem++;
                else
                    winner = i;
            }
            if (idem != RACE_THREADS - 1 || writes != 1)
                tfail("retry storm round %d: %d of %d identical appends wrote, %d were idempotent "
                      "retries; want 1 and %d",
                      race_round, writes, RACE_THREADS, idem, RACE_THREADS - 1);
            if (writes != 1)
                break;
            for (int i = 0; i < RACE_THREADS; i++) {
                if (racers[i].rc != 0)
                    continue;
                const stele_append_result *x = &racers[i].res, *y = &racers[winner].res;
                if (x->first_revision != y->first_revision || x->last_revision != y->last_revision ||
                    x->first_position != y->first_position || x->last_position != y->last_position)
                    tfail("retry storm round %d: thread %d's result (revisions %" PRIu64 "..%" PRIu64
                          ", positions %" PRIu64 "..%" PRIu64 ") differs from the write's",
                          race_round, i, x->first_revision, x->last_revision, x->first_position,
                          x->last_position);
            }
            winners = 1;
        }
        for (int i = 0; i < RACE_THREADS && race_round % 3 != 2; i++) {
            if (racers[i].rc == 0) {
                winners++;
                winner = i;
            } else if (racers[i].rc != STELE_EWRONGREV) {
                tfail("race round %d: thread %d got %s (%s)", race_round, i, stele_errname(racers[i].rc),
                      racers[i].msg);
            }
        }
        if (winners != 1) {
            tfail("race round %d (expected revision %" PRId64 "): %d threads succeeded, want exactly 1",
                  race_round, race_expected, winners);
            break;
        }
        racer *w = &racers[winner];
        uint64_t want_first = race_expected == STELE_NO_STREAM ? 0 : (uint64_t)race_expected + 1;
        if (w->res.first_revision != want_first || w->res.last_revision != want_first + w->n - 1 ||
            w->res.idempotent)
            tfail("race round %d: winner got revisions %" PRIu64 "..%" PRIu64 ", want %" PRIu64
                  "..%" PRIu64,
                  race_round, w->res.first_revision, w->res.last_revision, want_first,
                  want_first + w->n - 1);
        if (w->res.first_position != total)
            tfail("race round %d: winner at position %" PRIu64 ", want %" PRIu64, race_round,
                  w->res.first_position, total);
        for (int i = 0; i < RACE_THREADS && race_round % 3 != 2; i++)
            if (i != winner && racers[i].res.current_revision != w->res.last_revision)
                tfail("race round %d: loser %d: current_revision %" PRIu64 ", want %" PRIu64
                      " (the winner's last)",
                      race_round, i, racers[i].res.current_revision, w->res.last_revision);
        wbatch[race_round] = w->batch;
        wfirst[race_round] = w->res.first_position;
        wn[race_round] = w->n;
        total += w->n;
        race_expected = (int64_t)w->res.last_revision;
    }
    int rounds_done = race_round;
    atomic_store(&race_stop, 1);
    pthread_barrier_wait(&race_start);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&race_start);
    pthread_barrier_destroy(&race_end);

    /* the stream holds exactly the winners' events, in round order */
    uint64_t rev = 0, from = 0;
    int round = 0;
    unsigned idx = 0;
    for (;;) {
        stele_page *page = NULL;
        int rc = stele_read_stream(db, snames[0], from, STELE_FORWARDS, 500, &page);
        if (rc != 0) {
            tfail("race: read %s: %s", snames[0], stele_errname(rc));
            break;
        }
        size_t cnt = stele_page_count(page);
        for (size_t i = 0; i < cnt; i++) {
            const stele_event *e = stele_page_event(page, i);
            hdr h;
            if (!check_payload(e, &h, "race"))
                continue;
            if (e->revision != rev || e->position != rev || round >= rounds_done ||
                h.batch != wbatch[round] || h.i != idx)
                tfail("race: revision %" PRIu64 " (position %" PRIu64 ") holds append %" PRIx64
                      " event %u; want round %d's winner",
                      e->revision, e->position, h.batch, h.i, round);
            rev++;
            if (++idx == wn[round < rounds_done ? round : 0]) {
                idx = 0;
                round++;
            }
        }
        uint64_t next;
        int more = stele_page_next(page, &next);
        stele_page_free(page);
        if (cnt == 0 || !more)
            break;
        from = next;
    }
    if (rev != total)
        tfail("race: stream has %" PRIu64 " events, the winners wrote %" PRIu64, rev, total);
    printf("race: %d rounds, %" PRIu64 " events\n", rounds_done, total);
    (void)wfirst;
    free(wbatch);
    free(wfirst);
    free(wn);
    stele_close(db);
    db = NULL;
    t_store_drop(dir);
}

int main(void)
{
    t_seed();
    init_names();
    test_writers_readers();
    test_race();
    return t_done("test_concurrency", 2);
}
