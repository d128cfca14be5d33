/*
 * test_query.c - queries through the secondary indexes and temporal stream
 * reads, against an in-memory model built from the same random appends.
 *
 *   model        random appends (1-4 events) to streams of several
 *                categories (and names without '-', and one starting with
 *                '-'), random types and tags (sometimes the same tag twice),
 *                metadata in every shape the extraction rules cover (the
 *                $-names and their aliases, precedence, unusable values,
 *                escapes, nested and top-level-array JSON, broken JSON, and
 *                metadata not flagged as JSON), soft deletes and recreation,
 *                tombstones. The model knows each event's category, type,
 *                tags, correlation id, actor, created time and visibility.
 *   queries      every kind and key (and keys that match nothing), type
 *                restrictions, time ranges (after/before from real created
 *                times, empty and inverted), both directions, page sizes
 *                1..100, a random start: the pages, followed through their
 *                next positions, must give exactly the model's events in
 *                order, with the right contents.
 *   read-your-writes  after every acknowledged append, the append's events
 *                are the newest of its category, type and tag queries.
 *   temporal     stele_read_stream_to and _as_of return exactly the prefix
 *                of the stream at that revision / time, paged both ways.
 *   crash        a forked child appends until SIGKILLed; after reopening,
 *                every acknowledged event is found and every query agrees
 *                with the model rebuilt from $all (the log).
 *   rebuilds     the index is rebuilt (another boot id in stele.lock, a
 *                deleted index, an index of the old format, a store reopened
 *                with indexes after STELE_OPEN_NO_INDEXES) each time after
 *                the secondary table was damaged, so only a real rebuild
 *                passes.
 *   bad input    unknown kind, NULL/empty/invalid/too long keys, a category
 *                with '-', misplaced type restrictions, after > before, bad
 *                direction, queries on a store without indexes: precise
 *                EINVAL, store unchanged.
 *
 * TEST_QUICK=1 uses fewer appends. Replay with TEST_SEED=n.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "index/index.h"

static int g_passed;
static int quick;

/* ------------------------------------------------------------- pools */

static const char *const stream_names[] = {
    "Order-1", "Order-2", "Order-3", "Order-9-9", "Order", "Orderly-1", "Cart-1",
    "Cart-2",  "Plain",   "-lead-1", "Ship-x",    "Ship-y", "Tomb-1",   "Tomb-2",
};
#define NSTREAMS (int)(sizeof stream_names / sizeof stream_names[0])

static const char *const categories[] = {"Order", "Orderly", "Cart", "Plain", "-lead-1",
                                         "Ship",  "Tomb",    "None", "Orde"};
#define NCATS (int)(sizeof categories / sizeof categories[0])

static const char *const types[] = {"Placed", "Paid", "Shipped", "Order", "\xc3\xa9-type", "Gone"};
#define NTYPES 5 /* "Gone" is never written */
#define NTYPES_Q 6

static const char *const tags[] = {"t1", "t2", "tenant:acme", "Order", "x y", "never"};
#define NTAGS 5
#define NTAGS_Q 6

static const char *const corrs[] = {"c1", "c2", "c3", "Order", "never-c"};
#define NCORRS 4
#define NCORRS_Q 5

static const char *const actors[] = {"alice", "bob", "carol", "\xc3\xa9mile", "zzz-not", "crasher",
                                     "never-a"};
#define ACTOR_EMILE 3
#define ACTOR_ZZZ 4 /* written only where it must lose to a better field */
#define ACTOR_CRASHER 5
#define NACTORS 3   /* drawn at random */
#define NACTORS_Q 7

/* ------------------------------------------------------------- model */

typedef struct mev {
    int stream; /* index in stream_names, or -1 for a crash-test stream */
    char sname[64];
    int type;
    int ntags;
    int tags[4];
    int corr, actor; /* -1: none */
    uint64_t rev, pos;
    int64_t created; /* INT64_MIN until synced from $all */
    char data[192];
    uint32_t pad; /* data is `data` with a "p" member of pad 'x's added */
} mev;

typedef struct mstream {
    uint64_t next_rev;
    uint64_t truncate_before;
    int tombstoned;
} mstream;

static mev *evs;
static size_t nev, evcap;
static mstream ms[NSTREAMS + 64];

static mev *ev_add(void)
{
    if (nev == evcap) {
        evcap = evcap ? evcap * 2 : 1024;
        evs = realloc(evs, evcap * sizeof *evs);
        if (!evs)
            abort();
    }
    mev *e = &evs[nev++];
    memset(e, 0, sizeof *e);
    e->corr = e->actor = -1;
    e->created = INT64_MIN;
    return e;
}

/* Crash-test stream K is stream -(K+1), slot NSTREAMS + K. */
static int stream_slot(const mev *e)
{
    return e->stream >= 0 ? e->stream : NSTREAMS + (-e->stream - 1);
}

static int visible(const mev *e)
{
    const mstream *s = &ms[stream_slot(e)];
    return !s->tombstoned && e->rev >= s->truncate_before;
}

static const char *category_of(const char *name, char *out)
{
    const char *dash = strchr(name, '-');
    size_t n = dash && dash != name ? (size_t)(dash - name) : strlen(name);
    memcpy(out, name, n);
    out[n] = 0;
    return out;
}

/* An event's data (caller frees). */
static char *data_of(const mev *e, size_t *len)
{
    size_t base = strlen(e->data);
    char *d = malloc(base + e->pad + 16);
    if (!d)
        abort();
    if (!e->pad) {
        memcpy(d, e->data, base);
        *len = base;
        return d;
    }
    memcpy(d, e->data, base - 1);
    size_t n = base - 1;
    memcpy(d + n, ",\"p\":\"", 6);
    n += 6;
    memset(d + n, 'x', e->pad);
    n += e->pad;
    memcpy(d + n, "\"}", 2);
    *len = n + 2;
    return d;
}

/* Fill `created` of every event from $all. */
static void sync_created(stele_db *db)
{
    size_t i = 0;
    while (i < nev && evs[i].created != INT64_MIN)
        i++;
    while (i < nev) {
        stele_page *pg;
        CHECK_OK(stele_read_all(db, evs[i].pos, STELE_FORWARDS, 1000, &pg));
        size_t n = stele_page_count(pg);
        CHECK(n > 0);
        for (size_t k = 0; k < n && i < nev; k++, i++) {
            const stele_event *e = stele_page_event(pg, k);
            CHECK(e->position == evs[i].pos);
            evs[i].created = e->created_us;
        }
        stele_page_free(pg);
    }
}

/* ------------------------------------------------------------ metadata */

/* Metadata for an event: sets *json, the expected correlation id and
 * actor in the model event. Returns the bytes (static buffer). */
static const char *make_meta(mev *e, size_t *len, uint32_t *flags)
{
    static char m[1024];
    int c = (int)t_rand_below(NCORRS), a = (int)t_rand_below(NACTORS);
    int v = (int)t_rand_below(16);
    *flags = STELE_META_JSON;
    switch (v) {
    case 0:
        *len = 0;
        *flags = 0;
        return "";
    case 1: /* not flagged as JSON: never read */
        snprintf(m, sizeof m, "{\"$actor\":\"%s\",\"$correlationId\":\"%s\"}", actors[a], corrs[c]);
        *flags = 0;
        break;
    case 2:
        snprintf(m, sizeof m, "{\"$correlationId\":\"%s\",\"$actor\":\"%s\"}", corrs[c], actors[a]);
        e->corr = c, e->actor = a;
        break;
    case 3:
        snprintf(m, sizeof m, "{\"correlationId\":\"%s\",\"userId\":\"%s\"}", corrs[c], actors[a]);
        e->corr = c, e->actor = a;
        break;
    case 4:
        snprintf(m, sizeof m, "{\"actorId\":\"%s\",\"x\":1,\"correlationId\":\"%s\"}", actors[a],
                 corrs[c]);
        e->corr = c, e->actor = a;
        break;
    case 5: /* unusable first choices fall through to the aliases */
        snprintf(m, sizeof m,
                 "{\"$correlationId\":123,\"correlationId\":\"%s\",\"$actor\":\"\",\"userId\":\"%s\"}",
                 corrs[c], actors[a]);
        e->corr = c, e->actor = a;
        break;
    case 6: /* precedence: userId beats actorId, whatever the order */
        snprintf(m, sizeof m, "{\"actorId\":\"%s\",\"userId\":\"%s\"}", actors[ACTOR_ZZZ], actors[a]);
        e->actor = a;
        break;
    case 7: /* nested members do not count */
        snprintf(m, sizeof m, "{\"nested\":{\"$actor\":\"%s\",\"$correlationId\":\"%s\"},\"l\":[\"%s\"]}",
                 actors[a], corrs[c], actors[a]);
        break;
    case 8: /* escapes in names and values */
        snprintf(m, sizeof m, "{\"\\u0024correlationId\":\"%s\",\"$actor\":\"\\u00e9mile\"}",
                 corrs[c]);
        e->corr = c, e->actor = ACTOR_EMILE;
        break;
    case 9: /* broken JSON flagged as JSON */
        snprintf(m, sizeof m, "{\"$actor\":\"%s\",\"$correlationId\":", actors[a]);
        break;
    case 10: /* not an object */
        snprintf(m, sizeof m, "[{\"$actor\":\"%s\"}]", actors[a]);
        break;
    case 11: /* control character: unusable */
        snprintf(m, sizeof m, "{\"$actor\":\"a\\nb\",\"userId\":\"%s\"}", actors[a]);
        e->actor = a;
        break;
    case 12: { /* too long: unusable */
        char lng[300];
        memset(lng, 'L', 299);
        lng[299] = 0;
        snprintf(m, sizeof m, "{\"$actor\":\"%s\",\"actorId\":\"%s\"}", lng, actors[a]);
        e->actor = a;
        break;
    }
    case 13: /* a repeated name: the first counts */
        snprintf(m, sizeof m, "{\"$actor\":\"%s\",\"$actor\":\"%s\"}", actors[a], actors[ACTOR_ZZZ]);
        e->actor = a;
        break;
    case 14: /* whitespace, and a correlation id only */
        snprintf(m, sizeof m, "  \n{ \"$correlationId\" : \"%s\" ,\"deep\":{\"a\":[1,{\"b\":2}]}}\n",
                 corrs[c]);
        e->corr = c;
        break;
    default: /* many members (more tokens than the extractor's stack array) */ {
        int n = snprintf(m, sizeof m, "{");
        for (int i = 0; i < 40; i++)
            n += snprintf(m + n, sizeof m - (size_t)n, "\"k%d\":[%d,%d],", i, i, i);
        snprintf(m + n, sizeof m - (size_t)n, "\"userId\":\"%s\"}", actors[a]);
        e->actor = a;
        break;
    }
    }
    *len = strlen(m);
    return m;
}

/* ------------------------------------------------------------- appends */

/* The newest event of a query (backwards, limit 1). */
static uint64_t newest(stele_db *db, int kind, const char *key)
{
    stele_query q = {.kind = kind, .key = key, .from = STELE_END,
                     .direction = STELE_BACKWARDS, .limit = 1};
    stele_page *pg;
    CHECK_OK(stele_read_query(db, &q, &pg));
    uint64_t p = stele_page_count(pg) ? stele_page_event(pg, 0)->position : UINT64_MAX;
    stele_page_free(pg);
    return p;
}

/* Append 1-4 random events to a random live stream; with `ryw`, check
 * that the queries see them at once. */
static void random_append(stele_db *db, int ryw)
{
    int s;
    do
        s = (int)t_rand_below(NSTREAMS);
    while (ms[s].tombstoned);
    /* Mostly 1-4 events; now and then a big append of one type (long runs
     * in the indexes), sometimes of big events (runs cut at 1 MiB). */
    int big = t_rand_below(60) == 0, n = big ? 50 + (int)t_rand_below(400) : 1 + (int)t_rand_below(4);
    uint32_t pad = big && t_rand_below(3) == 0 ? 20000 + (uint32_t)t_rand_below(20000) : 0;
    int big_type = (int)t_rand_below(NTYPES);
    /* DynamoDB holds an append in one transaction of at most 100 items
     * (events, the stream, one view counter per category, type and
     * correlation id, the sequencer and the feed) and 4 MB
     * (docs/backends.md, "Limits"); big appends stay within that: at most
     * 80 events leave room for 17 counters. */
    const char *store = getenv("STELE_TEST_STORE");
    if (store && !strncmp(store, "dynamodb:", 9) && n > 80)
        n = (pad ? 50 : 60) + n % 21;
    stele_event_in *in = calloc((size_t)n, sizeof *in);
    const char *(*tagp)[4] = calloc((size_t)n, sizeof *tagp);
    char (*meta)[1024] = calloc((size_t)n, sizeof *meta);
    char **data = calloc((size_t)n, sizeof *data);
    if (!in || !tagp || !meta || !data)
        abort();
    size_t first = nev;
    /* Reserve first: the model's array must not move under in[]. */
    if (evcap < nev + (size_t)n) {
        evcap = (nev + (size_t)n) * 2;
        evs = realloc(evs, evcap * sizeof *evs);
        if (!evs)
            abort();
    }
    for (int i = 0; i < n; i++) {
        mev *e = ev_add();
        e->stream = s;
        snprintf(e->sname, sizeof e->sname, "%s", stream_names[s]);
        e->type = big && t_rand_below(10) ? big_type : (int)t_rand_below(NTYPES);
        e->ntags = big ? 1 : (int)t_rand_below(4);
        for (int k = 0; k < e->ntags; k++) {
            e->tags[k] = big ? 0 : (int)t_rand_below(NTAGS);
            tagp[i][k] = tags[e->tags[k]];
        }
        e->rev = ms[s].next_rev + (uint64_t)i;
        snprintf(e->data, sizeof e->data, "{\"n\":%zu}", nev);
        e->pad = pad;
        size_t mlen;
        uint32_t mflags;
        const char *m = make_meta(e, &mlen, &mflags);
        memcpy(meta[i], m, mlen);
        size_t dlen;
        data[i] = data_of(e, &dlen);
        in[i] = (stele_event_in){.type = types[e->type], .data = data[i],
                                 .data_len = dlen, .metadata = meta[i],
                                 .metadata_len = mlen, .tags = tagp[i],
                                 .ntags = (size_t)e->ntags, .flags = STELE_EVENT_JSON | mflags};
    }
    stele_append_result res;
    CHECK_OK(stele_append(db, stream_names[s], STELE_ANY, in, (size_t)n, &res));
    for (int i = 0; i < n; i++)
        free(data[i]);
    free(in);
    free(tagp);
    free(meta);
    free(data);
    CHECK(res.first_revision == ms[s].next_rev);
    ms[s].next_rev += (uint64_t)n;
    for (int i = 0; i < n; i++)
        evs[first + (size_t)i].pos = res.first_position + (uint64_t)i;
    if (!ryw)
        return;
    /* Read your writes: the append is the newest in its indexes at once. */
    char cat[64];
    CHECK(newest(db, STELE_QUERY_CATEGORY, category_of(stream_names[s], cat)) ==
          res.last_position);
    mev *last = &evs[nev - 1];
    CHECK(newest(db, STELE_QUERY_TYPE, types[last->type]) == res.last_position);
    if (last->ntags)
        CHECK(newest(db, STELE_QUERY_TAG, tags[last->tags[0]]) == res.last_position);
    if (last->actor >= 0)
        CHECK(newest(db, STELE_QUERY_ACTOR, actors[last->actor]) == res.last_position);
    if (last->corr >= 0)
        CHECK(newest(db, STELE_QUERY_CORRELATION, corrs[last->corr]) == res.last_position);
}

static void random_delete(stele_db *db)
{
    int s = (int)t_rand_below(NSTREAMS);
    if (ms[s].tombstoned || ms[s].next_rev == 0 || ms[s].truncate_before == ms[s].next_rev)
        return;
    if (!strncmp(stream_names[s], "Tomb", 4)) {
        CHECK_OK(stele_tombstone_stream(db, stream_names[s], STELE_ANY, NULL));
        ms[s].tombstoned = 1;
    } else {
        CHECK_OK(stele_delete_stream(db, stream_names[s], STELE_ANY, NULL));
        ms[s].truncate_before = ms[s].next_rev;
    }
    /* Each delete is an event of $deletes at the next position
     * (docs/projections.md "$deleted"): stream -64 in the model. */
    mev *e = ev_add();
    mstream *d = &ms[NSTREAMS + 63];
    e->stream = -64;
    e->type = -1;
    snprintf(e->sname, sizeof e->sname, "$deletes");
    uint64_t next;
    CHECK_OK(stele_position_head(db, &next));
    e->pos = next - 1;
    e->rev = d->next_rev++;
    int tomb = ms[s].tombstoned;
    char tb[32] = "null";
    if (!tomb)
        snprintf(tb, sizeof tb, "%llu", (unsigned long long)ms[s].next_rev);
    snprintf(e->data, sizeof e->data,
             "{\"streamId\":\"%s\",\"revision\":%llu,\"truncateBefore\":%s,\"tombstone\":%s}",
             stream_names[s], (unsigned long long)ms[s].next_rev - 1, tb, tomb ? "true" : "false");
}

/* ------------------------------------------------------------- checking */

static int has_tag(const mev *e, int t)
{
    for (int i = 0; i < e->ntags; i++)
        if (e->tags[i] == t)
            return 1;
    return 0;
}

static int matches(const mev *e, const stele_query *q)
{
    char cat[64];
    if (q->kind != STELE_QUERY_ALL && !visible(e))
        return 0;
    if (q->has_after && e->created < q->after_us)
        return 0;
    if (q->has_before && e->created >= q->before_us)
        return 0;
    if (q->type && (e->type < 0 || strcmp(types[e->type], q->type)))
        return 0;
    switch (q->kind) {
    case STELE_QUERY_CATEGORY: return !strcmp(category_of(e->sname, cat), q->key);
    case STELE_QUERY_TYPE: return e->type >= 0 && !strcmp(types[e->type], q->key);
    case STELE_QUERY_TAG:
        for (int t = 0; t < NTAGS_Q; t++)
            if (!strcmp(tags[t], q->key))
                return has_tag(e, t);
        return 0;
    case STELE_QUERY_CORRELATION: return e->corr >= 0 && !strcmp(corrs[e->corr], q->key);
    case STELE_QUERY_ACTOR: return e->actor >= 0 && !strcmp(actors[e->actor], q->key);
    default: return 1;
    }
}

static void check_event(const stele_event *got, const mev *want)
{
    CHECK(got->position == want->pos);
    CHECK(got->revision == want->rev);
    CHECK(got->created_us == want->created);
    CHECK(got->stream_len == strlen(want->sname) && !strcmp(got->stream, want->sname));
    size_t dlen;
    char *d = data_of(want, &dlen);
    CHECK(got->data_len == dlen && !memcmp(got->data, d, dlen));
    free(d);
    if (want->type >= 0) {
        CHECK(!strcmp(got->type, types[want->type]));
        CHECK(got->ntags == (size_t)want->ntags);
        for (int i = 0; i < want->ntags && i < (int)got->ntags; i++)
            CHECK(!strcmp(got->tags[i], tags[want->tags[i]]));
    }
}

static size_t model_index(uint64_t pos)
{
    /* Events are in position order; positions are gapless. */
    size_t lo = 0, hi = nev;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (evs[mid].pos < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Run q page by page (page size `page`) and compare with the model. */
static void check_query(stele_db *db, stele_query q, size_t page)
{
    int back = q.direction == STELE_BACKWARDS;
    /* Expected positions, in order. */
    size_t *want = malloc((nev + 1) * sizeof *want), nwant = 0;
    if (!back) {
        for (size_t i = model_index(q.from); i < nev; i++)
            if (matches(&evs[i], &q))
                want[nwant++] = i;
    } else {
        size_t end = q.from == STELE_END ? nev : model_index(q.from + 1);
        if (end > nev)
            end = nev;
        for (size_t i = end; i-- > 0;)
            if (matches(&evs[i], &q))
                want[nwant++] = i;
    }
    q.limit = page;
    size_t got = 0;
    for (int pages = 0;; pages++) {
        stele_page *pg;
        int rc = stele_read_query(db, &q, &pg);
        CHECK_OK(rc);
        if (rc)
            break;
        size_t n = stele_page_count(pg);
        CHECK(n <= page);
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_page_event(pg, i);
            CHECK(got < nwant);
            if (got < nwant)
                check_event(e, &evs[want[got]]);
            got++;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more)
            break;
        /* The next position lies beyond what this page returned. */
        CHECK(back ? next < q.from || q.from == STELE_END : next > q.from || pages == 0);
        q.from = next;
        CHECK(pages < 100000);
    }
    if (got != nwant)
        fprintf(stderr, "query kind %d key %s type %s: got %zu events, want %zu\n", q.kind,
                q.key ? q.key : "-", q.type ? q.type : "-", got, nwant);
    CHECK(got == nwant);
    free(want);
}

/* A random created time of the model, or a bound around it. */
static int64_t some_time(void)
{
    if (!nev)
        return 0;
    int64_t t = evs[t_rand_below(nev)].created;
    switch (t_rand_below(4)) {
    case 0: return t - 1;
    case 1: return t + 1;
    default: return t;
    }
}

static void random_bounds(stele_query *q)
{
    q->has_after = q->has_before = 0;
    switch (t_rand_below(6)) {
    case 0:
    case 1: break;
    case 2:
        q->has_after = 1;
        q->after_us = some_time();
        break;
    case 3:
        q->has_before = 1;
        q->before_us = some_time();
        break;
    default: {
        int64_t a = some_time(), b = some_time();
        q->has_after = q->has_before = 1;
        q->after_us = a < b ? a : b;
        q->before_us = a < b ? b : a;
        break;
    }
    }
}

static void random_start(stele_query *q)
{
    int back = q->direction == STELE_BACKWARDS;
    uint64_t r = t_rand_below(4);
    if (r < 2 || !nev)
        q->from = back ? STELE_END : 0;
    else
        q->from = evs[t_rand_below(nev)].pos + (r == 3 ? 1 : 0);
}

static const size_t page_sizes[] = {1, 2, 3, 7, 100};

static void check_all_queries(stele_db *db, int rounds)
{
    sync_created(db);
    for (int r = 0; r < rounds; r++) {
        for (int kind = STELE_QUERY_CATEGORY; kind <= STELE_QUERY_ALL; kind++) {
            const char *const *keys = kind == STELE_QUERY_CATEGORY ? categories
                                    : kind == STELE_QUERY_TYPE ? types
                                    : kind == STELE_QUERY_TAG ? tags
                                    : kind == STELE_QUERY_CORRELATION ? corrs
                                    : actors;
            int nkeys = kind == STELE_QUERY_CATEGORY ? NCATS
                      : kind == STELE_QUERY_TYPE ? NTYPES_Q
                      : kind == STELE_QUERY_TAG ? NTAGS_Q
                      : kind == STELE_QUERY_CORRELATION ? NCORRS_Q
                      : kind == STELE_QUERY_ACTOR ? NACTORS_Q
                                                  : 1;
            for (int k = 0; k < nkeys; k++) {
                stele_query q = {.kind = kind,
                                 .key = kind == STELE_QUERY_ALL ? NULL : keys[k],
                                 .direction = t_rand_below(2) ? STELE_BACKWARDS : STELE_FORWARDS};
                if (kind != STELE_QUERY_TYPE && kind != STELE_QUERY_ALL && t_rand_below(3) == 0)
                    q.type = types[t_rand_below(NTYPES_Q)];
                random_bounds(&q);
                random_start(&q);
                check_query(db, q, page_sizes[t_rand_below(5)]);
            }
        }
    }
}

/* ------------------------------------------------------------ temporal */

static void check_prefix(stele_db *db, int s, int use_time, uint64_t to, int64_t as_of,
                         int back, size_t page)
{
    const mstream *st = &ms[s];
    /* Expected revisions: the stream's visible events up to the bound. */
    size_t *want = malloc((nev + 1) * sizeof *want), nwant = 0;
    for (size_t i = 0; i < nev; i++) {
        const mev *e = &evs[i];
        if (e->stream != s || !visible(e))
            continue;
        if (use_time ? e->created <= as_of : e->rev <= to)
            want[nwant++] = i;
    }
    if (back)
        for (size_t i = 0; i < nwant / 2; i++) {
            size_t t = want[i];
            want[i] = want[nwant - 1 - i];
            want[nwant - 1 - i] = t;
        }
    uint64_t from = back ? STELE_END : 0;
    size_t got = 0;
    for (int pages = 0; pages < 100000; pages++) {
        stele_page *pg;
        int dir = back ? STELE_BACKWARDS : STELE_FORWARDS;
        int rc = use_time ? stele_read_stream_as_of(db, stream_names[s], as_of, from, dir, page, &pg)
                          : stele_read_stream_to(db, stream_names[s], from, dir, page, to, &pg);
        if (st->tombstoned) {
            CHECK_RC(rc, STELE_EDELETED);
            break;
        }
        if (st->next_rev == 0 || st->truncate_before == st->next_rev) {
            CHECK_RC(rc, STELE_ENOTFOUND);
            break;
        }
        CHECK_OK(rc);
        if (rc)
            break;
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            CHECK(got < nwant);
            if (got < nwant)
                check_event(stele_page_event(pg, i), &evs[want[got]]);
            got++;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more)
            break;
        from = next;
    }
    if (!st->tombstoned && st->next_rev && st->truncate_before < st->next_rev) {
        if (got != nwant)
            fprintf(stderr, "temporal read of %s (%s %lld): got %zu, want %zu\n", stream_names[s],
                    use_time ? "as of" : "to", use_time ? (long long)as_of : (long long)to, got,
                    nwant);
        CHECK(got == nwant);
    }
    free(want);
}

static void check_temporal(stele_db *db)
{
    sync_created(db);
    for (int s = 0; s < NSTREAMS; s++) {
        for (int k = 0; k < 6; k++) {
            int back = (int)t_rand_below(2);
            size_t page = page_sizes[t_rand_below(5)];
            uint64_t to = ms[s].next_rev ? t_rand_below(ms[s].next_rev + 2) : 0;
            if (k == 0)
                to = STELE_END - 1;
            check_prefix(db, s, 0, to, 0, back, page);
            int64_t t = some_time();
            if (k == 1)
                t = nev ? evs[0].created - 1 : 0; /* before everything */
            if (k == 2)
                t = INT64_MAX;
            check_prefix(db, s, 1, 0, t, back, page);
        }
    }
}

/* ------------------------------------------------------------ bad input */

static void check_bad_input(stele_db *db)
{
    stele_page *pg = (stele_page *)1;
    stele_query q = {.kind = STELE_QUERY_TYPE, .key = "Placed", .limit = 10};
    size_t before = nev;
#define BAD(why)                                                                  \
    do {                                                                          \
        CHECK_RC(stele_read_query(db, &q, &pg), STELE_EINVAL);                    \
        CHECK(pg == NULL);                                                        \
        if (!strstr(stele_errmsg(), why))                                         \
            fprintf(stderr, "message '%s' lacks '%s'\n", stele_errmsg(), why);    \
        CHECK(strstr(stele_errmsg(), why) != NULL);                               \
        q = (stele_query){.kind = STELE_QUERY_TYPE, .key = "Placed", .limit = 10}; \
    } while (0)
    q.kind = 0;
    BAD("unknown kind 0");
    q.kind = 8;
    BAD("unknown kind 8");
    q.key = NULL;
    BAD("type key is NULL");
    q.key = "";
    BAD("type key is empty");
    q.kind = STELE_QUERY_ACTOR;
    q.key = "a\x01";
    BAD("actor key: control character at byte 1");
    q.kind = STELE_QUERY_TAG;
    q.key = "\xff";
    BAD("tag key: ");
    char lng[300];
    memset(lng, 'k', 299);
    lng[299] = 0;
    q.kind = STELE_QUERY_CORRELATION;
    q.key = lng;
    BAD("correlation id key is longer than 255 bytes");
    q.kind = STELE_QUERY_CATEGORY;
    q.key = "Order-1";
    BAD("category 'Order-1' contains '-'");
    q.type = "Paid";
    BAD("type restriction applies to category, tag, correlation and actor");
    q.kind = STELE_QUERY_ALL;
    q.key = NULL;
    q.type = "Paid";
    BAD("type restriction");
    q.kind = STELE_QUERY_ALL;
    q.key = "x";
    BAD("takes no key");
    q.kind = STELE_QUERY_CATEGORY;
    q.key = "Order";
    q.type = "";
    BAD("type is empty");
    q.has_after = q.has_before = 1;
    q.after_us = 10;
    q.before_us = 9;
    BAD("after (10 us) is later than before (9 us)");
    q.direction = 5;
    BAD("direction 5");
    CHECK_RC(stele_read_query(db, NULL, &pg), STELE_EINVAL);
    CHECK_RC(stele_read_query(NULL, &q, &pg), STELE_EINVAL);
    CHECK_RC(stele_read_query(db, &q, NULL), STELE_EINVAL);
    /* Equal bounds: an empty range, not an error. */
    q.has_after = q.has_before = 1;
    q.after_us = q.before_us = nev ? evs[0].created : 0;
    CHECK_OK(stele_read_query(db, &q, &pg));
    CHECK(stele_page_count(pg) == 0 && !stele_page_next(pg, NULL));
    stele_page_free(pg);
    /* Temporal reads check like stream reads. */
    CHECK_RC(stele_read_stream_to(db, "", 0, STELE_FORWARDS, 10, 3, &pg), STELE_EINVAL);
    CHECK_RC(stele_read_stream_to(db, "$all", 0, STELE_FORWARDS, 10, 3, &pg), STELE_EINVAL);
    CHECK_RC(stele_read_stream_as_of(db, "Order-1", 0, 0, 9, 10, &pg), STELE_EINVAL);
    CHECK_RC(stele_read_stream_to(db, "Never-1", 0, STELE_FORWARDS, 10, 3, &pg), STELE_ENOTFOUND);
    CHECK_RC(stele_read_stream_as_of(db, "Never-1", 0, 0, STELE_FORWARDS, 10, &pg),
             STELE_ENOTFOUND);
    CHECK(nev == before);
#undef BAD
    g_passed++;
}

/* ------------------------------------------------------------ RFC 3339 */

static void check_times(void)
{
    int64_t us;
    CHECK_OK(stele_time_parse("1970-01-01T00:00:00Z", 0, &us));
    CHECK(us == 0);
    CHECK_OK(stele_time_parse("2024-02-29t12:34:56.789z", 0, &us));
    CHECK(us == 1709210096789000LL);
    CHECK_OK(stele_time_parse("2024-02-29 14:34:56.789+02:00", 0, &us));
    CHECK(us == 1709210096789000LL);
    CHECK_OK(stele_time_parse("2024-02-29T07:04:56.789-05:30", 0, &us));
    CHECK(us == 1709210096789000LL);
    CHECK_OK(stele_time_parse("2024-02-29T14:34:56.789 02:00", 0, &us)); /* '+' as a space */
    CHECK(us == 1709210096789000LL);
    CHECK_OK(stele_time_parse("1969-12-31T23:59:59.999999Z", 0, &us));
    CHECK(us == -1);
    CHECK_OK(stele_time_parse("2000-01-01T00:00:00.000000001Z", 0, &us));
    CHECK(us == 946684800000000LL);
    CHECK_OK(stele_time_parse("2000-01-01T00:00:00.000000001Z", 1, &us));
    CHECK(us == 946684800000001LL);
    CHECK_OK(stele_time_parse("2000-01-01T00:00:00.000001Z", 1, &us));
    CHECK(us == 946684800000001LL);
    char t[32];
    stele_time_format(1709210096789000LL, t);
    CHECK(!strcmp(t, "2024-02-29T12:34:56.789000Z"));
    stele_time_format(-1, t);
    CHECK(!strcmp(t, "1969-12-31T23:59:59.999999Z"));
    static const struct {
        const char *in, *why;
    } bad[] = {
        {"", "expected YYYY-MM-DD"},
        {"2023-02-29T00:00:00Z", "day 29 is out of range for 2023-02"},
        {"2100-02-29T00:00:00Z", "day 29 is out of range for 2100-02"},
        {"2024-00-10T00:00:00Z", "month 00 is out of range"},
        {"2024-01-10T00:61:00Z", "minute 61 is out of range"},
        {"2024-01-10T00:00:60Z", "leap seconds are not supported"},
        {"2024-01-10T00:00:00", "got nothing"},
        {"2024-01-10T00:00:00+0100", "expected 'Z' or a UTC offset"},
        {"2024-01-10T00:00:00+01:60", "UTC offset '+01:60' is out of range"},
        {"2024-01-10T00:00:00.Z", "followed by digits"},
        {"2024-01-10T00:00:00Zjunk", "expected 'Z' or a UTC offset"},
        {"2024-1-10T00:00:00Z", "expected YYYY-MM-DD"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(stele_time_parse(bad[i].in, 0, &us), STELE_EINVAL);
        if (!strstr(stele_errmsg(), bad[i].why))
            fprintf(stderr, "'%s': message '%s' lacks '%s'\n", bad[i].in, stele_errmsg(),
                    bad[i].why);
        CHECK(strstr(stele_errmsg(), bad[i].why) != NULL);
    }
    CHECK_RC(stele_time_parse(NULL, 0, &us), STELE_EINVAL);
    g_passed++;
}

/* ------------------------------------------------------------ reopening */

static stele_db *open_db(const char *dir, uint32_t flags)
{
    stele_db *db = NULL;
    stele_options o = {.segment_size = 256 * 1024, .flags = flags};
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

/* Empty the secondary tables behind the engine's back, so that only a
 * real rebuild makes the queries right again; optionally set the format. */
static void damage_index(const char *dir, int set_format_v1)
{
    idx *ix;
    CHECK_OK(idx_open(dir, 0, 1, &ix));
    MDB_txn *txn;
    CHECK_OK(idx_begin(ix, 0, &txn));
    CHECK(mdb_drop(txn, ix->sec, 0) == 0);
    CHECK(mdb_drop(txn, ix->time, 0) == 0);
    if (set_format_v1) {
        MDB_val k = {6, "format"};
        CHECK(mdb_del(txn, ix->meta, &k, NULL) == 0);
    }
    CHECK_OK(idx_commit_txn(txn));
    CHECK_OK(idx_sync(ix));
    idx_close(ix);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void check_rebuilds(const char *dir, stele_db **dbp)
{
    char path[600];
    int rounds = 1;
    /* stele check sees a missing and an extra secondary index item. */
    stele_close(*dbp);
    CHECK_OK(stele_check(dir, NULL, 0));
    {
        idx *ix;
        CHECK_OK(idx_open(dir, 0, 1, &ix));
        MDB_txn *txn;
        CHECK_OK(idx_begin(ix, 0, &txn));
        uint8_t key[8] = "tPaid", item[SEC_ITEM];
        memset(item, 0, sizeof item);
        item[15] = 1; /* a run of one event at position 0, loc 0 */
        MDB_val k = {5, key}, v = {SEC_ITEM, item};
        CHECK(mdb_put(txn, ix->sec, &k, &v, 0) == 0);
        CHECK_OK(idx_commit_txn(txn));
        idx_close(ix);
        CHECK_RC(stele_check(dir, NULL, 0), STELE_ECORRUPT);
        /* Seen by the count, or first by the ordinals (an extra run before
         * the key's first one breaks their sequence). */
        CHECK(strstr(stele_errmsg(), "secondary index items, but the log's events make") != NULL ||
              strstr(stele_errmsg(), "ordinal does not follow") != NULL);
    }
    damage_index(dir, 0);
    CHECK_RC(stele_check(dir, NULL, 0), STELE_ECORRUPT);
    CHECK(strstr(stele_errmsg(), "lacks the run of") != NULL);
    /* Another boot id in stele.lock (a machine crash while open). */
    snprintf(path, sizeof path, "%s/stele.lock", dir);
    write_text(path, "open 00000000-1111-2222-3333-444444444444\n");
    *dbp = open_db(dir, 0);
    check_all_queries(*dbp, rounds);
    check_temporal(*dbp);
    /* No index at all. */
    stele_close(*dbp);
    snprintf(path, sizeof path, "rm -rf '%s/index'", dir);
    CHECK(system(path) == 0);
    *dbp = open_db(dir, 0);
    check_all_queries(*dbp, rounds);
    /* An index of the previous format (no "format" entry). */
    stele_close(*dbp);
    damage_index(dir, 1);
    *dbp = open_db(dir, 0);
    check_all_queries(*dbp, rounds);
    check_temporal(*dbp);
    g_passed++;
}

/* Without indexes: queries fail, appends still work; reopened with
 * indexes, everything (also what was appended meanwhile) is found. */
static void check_no_indexes(const char *dir, stele_db **dbp)
{
    stele_close(*dbp);
    *dbp = open_db(dir, STELE_OPEN_NO_INDEXES);
    stele_page *pg;
    stele_query q = {.kind = STELE_QUERY_TYPE, .key = "Paid", .limit = 10};
    CHECK_RC(stele_read_query(*dbp, &q, &pg), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "STELE_OPEN_NO_INDEXES") != NULL);
    CHECK_RC(stele_read_stream_as_of(*dbp, "Order-1", 0, 0, STELE_FORWARDS, 10, &pg),
             STELE_EINVAL);
    for (int i = 0; i < 20; i++)
        random_append(*dbp, 0);
    stele_close(*dbp);
    *dbp = open_db(dir, 0);
    check_all_queries(*dbp, 1);
    g_passed++;
}

/* ---------------------------------------------------------------- crash */

#define CRASH_STREAMS 4

/* Crash-test events: data {"c":K,"i":J}; everything else follows from K
 * and J, so the parent can rebuild the model from the log. */
static void crash_attrs(mev *e, int k, int j)
{
    e->stream = -(k + 1);
    snprintf(e->sname, sizeof e->sname, "Crash-%d", k);
    e->type = (k + j) % NTYPES;
    e->ntags = 1;
    e->tags[0] = j % NTAGS;
    e->corr = j % NCORRS;
    e->actor = ACTOR_CRASHER;
    snprintf(e->data, sizeof e->data, "{\"c\":%d,\"i\":%d}", k, j);
}

static void crash_child(const char *dir, int fd, int start_j)
{
    stele_db *db = NULL;
    stele_options o = {.segment_size = 256 * 1024};
    if (stele_open(dir, &o, &db))
        _exit(3);
    for (int j = start_j;;) {
        int k = j % CRASH_STREAMS, n = 1 + j % 3;
        stele_event_in in[3];
        mev m[3];
        const char *tg[3][1];
        char meta[3][128];
        for (int i = 0; i < n; i++, j++) {
            memset(&m[i], 0, sizeof m[i]);
            crash_attrs(&m[i], k, j);
            tg[i][0] = tags[m[i].tags[0]];
            snprintf(meta[i], sizeof meta[i], "{\"$actor\":\"crasher\",\"correlationId\":\"%s\"}",
                     corrs[m[i].corr]);
            in[i] = (stele_event_in){.type = types[m[i].type], .data = m[i].data,
                                     .data_len = strlen(m[i].data), .metadata = meta[i],
                                     .metadata_len = strlen(meta[i]), .tags = tg[i], .ntags = 1,
                                     .flags = STELE_EVENT_JSON | STELE_META_JSON};
        }
        stele_append_result res;
        if (stele_append(db, m[0].sname, STELE_ANY, in, (size_t)n, &res))
            _exit(4);
        uint64_t ack[2] = {res.first_position, res.last_position};
        if (write(fd, ack, sizeof ack) != (ssize_t)sizeof ack)
            _exit(5);
    }
}

/* Add the events of $all past the model's end (all crash-test events). */
static void sync_from_log(stele_db *db, int *next_j)
{
    uint64_t from = nev ? evs[nev - 1].pos + 1 : 0;
    for (;;) {
        stele_page *pg;
        CHECK_OK(stele_read_all(db, from, STELE_FORWARDS, 1000, &pg));
        size_t n = stele_page_count(pg);
        for (size_t i = 0; i < n; i++) {
            const stele_event *e = stele_page_event(pg, i);
            int k = -1, j = -1;
            char d[64];
            snprintf(d, sizeof d, "%.*s", (int)e->data_len, (const char *)e->data);
            CHECK(sscanf(d, "{\"c\":%d,\"i\":%d}", &k, &j) == 2);
            mev *m = ev_add();
            crash_attrs(m, k, j);
            m->rev = e->revision;
            m->pos = e->position;
            m->created = e->created_us;
            mstream *st = &ms[NSTREAMS + k];
            CHECK(e->revision == st->next_rev);
            st->next_rev = e->revision + 1;
            if (j + 1 > *next_j)
                *next_j = j + 1;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || n == 0)
            break;
        from = next;
    }
}

static void check_crash(const char *dir, stele_db **dbp, int rounds)
{
    static int next_j;
    for (int r = 0; r < rounds; r++) {
        stele_close(*dbp);
        int p[2];
        CHECK(pipe(p) == 0);
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            crash_child(dir, p[1], next_j);
        }
        close(p[1]);
        /* Let it append for a while, reading its acknowledgements. */
        uint64_t last_ack = UINT64_MAX, ack[2];
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long wait_ms = 100 + (long)t_rand_below(300);
        for (;;) {
            struct timespec t1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
            if (el >= wait_ms)
                break;
            struct pollfd pf = {p[0], POLLIN, 0};
            if (poll(&pf, 1, (int)(wait_ms - el)) > 0 &&
                read(p[0], ack, sizeof ack) == (ssize_t)sizeof ack)
                last_ack = ack[1];
        }
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status));
        while (read(p[0], ack, sizeof ack) == (ssize_t)sizeof ack)
            last_ack = ack[1];
        close(p[0]);
        *dbp = open_db(dir, 0);
        sync_from_log(*dbp, &next_j);
        /* Every acknowledged event survived and is in its indexes. */
        CHECK(last_ack == UINT64_MAX || (nev && evs[nev - 1].pos >= last_ack));
        if (last_ack != UINT64_MAX)
            CHECK(newest(*dbp, STELE_QUERY_ACTOR, "crasher") >= last_ack);
        check_all_queries(*dbp, 1);
    }
    g_passed++;
}

int main(void)
{
    quick = getenv("TEST_QUICK") != NULL;
    t_seed();
    check_times();
    const char *dir = t_store("query");
    stele_db *db = open_db(dir, 0);
    int appends = quick ? 100 : 1200; /* quick: the ASan pass of CI */
    for (int i = 0; i < appends; i++) {
        random_append(db, 1);
        if (t_rand_below(40) == 0)
            random_delete(db);
        if (i == appends / 3) {
            check_all_queries(db, 1);
            check_temporal(db);
        }
    }
    g_passed++;
    check_all_queries(db, quick ? 1 : 3);
    g_passed++;
    check_temporal(db);
    g_passed++;
    check_bad_input(db);
    check_crash(dir, &db, quick ? 1 : 3);
    if (t_store_is_local()) {
        /* The local engine's own index files and open flags. */
        check_rebuilds(dir, &db);
        check_no_indexes(dir, &db);
    }
    stele_close(db);
    char report[512];
    if (t_store_is_local())
        CHECK_OK(stele_check(dir, report, sizeof report));
    t_store_drop(dir);
    free(evs);
    return t_done("test_query", g_passed);
}
