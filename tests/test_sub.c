/*
 * test_sub.c - catch-up subscriptions in libstele: while 8 writers append,
 * subscribers that start at random positions (some at the end, some with
 * filters) see exactly the events of $all from their start, in order, once
 * each; a stream subscription waits for a stream that does not exist yet;
 * a filter that matches nothing still advances the position; bad filters
 * are refused with the reason.
 */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define WRITERS 8
#define SUBS 6

static stele_db *db;
static int per_writer;
static _Atomic int writers_done;
static _Atomic uint64_t final_total = UINT64_MAX; /* set once writers finish */

static void *writer(void *arg)
{
    int w = (int)(intptr_t)arg;
    char stream[32], type[32], data[64];
    for (int i = 0; i < per_writer;) {
        int n = 1 + (int)(t_rand_below(4));
        if (n > per_writer - i)
            n = per_writer - i;
        stele_event_in ev[4];
        for (int k = 0; k < n; k++) {
            snprintf(type, sizeof type, "%s", (i + k) % 3 ? "Moved" : "Created");
            ev[k] = (stele_event_in){.type = (i + k) % 3 ? "Moved" : "Created", .data = data,
                                     .data_len = (size_t)snprintf(data, sizeof data, "%d", i + k)};
        }
        snprintf(stream, sizeof stream, "%s-%d", w % 2 ? "Order" : "Cart", (i / 7) % 5);
        CHECK_OK(stele_append(db, stream, STELE_ANY, ev, (size_t)n, NULL));
        i += n;
    }
    atomic_fetch_add(&writers_done, 1);
    return NULL;
}

typedef struct subr {
    uint64_t from;
    int filtered; /* categories = Order, types = Moved */
    uint64_t *seen;
    size_t nseen, cap;
    int empty_pages;
} subr;

static void *subscriber(void *arg)
{
    subr *r = arg;
    const char *cats[] = {"Order"}, *types[] = {"Moved"};
    stele_filter f = {.categories = cats, .n_categories = 1, .types = types, .n_types = 1};
    stele_sub *s;
    CHECK_OK(stele_subscribe_all(db, r->from, r->filtered ? &f : NULL, &s));
    while (stele_sub_position(s) < atomic_load(&final_total)) {
        stele_page *pg;
        int rc = stele_sub_next(s, 1 + t_rand_below(300), 200, &pg);
        CHECK_OK(rc);
        if (rc)
            break;
        if (stele_page_count(pg) == 0)
            r->empty_pages++;
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            if (r->nseen == r->cap) {
                r->cap = r->cap ? r->cap * 2 : 1024;
                r->seen = realloc(r->seen, r->cap * sizeof *r->seen);
            }
            r->seen[r->nseen++] = stele_page_event(pg, i)->position;
        }
        stele_page_free(pg);
    }
    stele_sub_close(s);
    return NULL;
}

static int matches(const stele_event *e)
{
    return strncmp(e->stream, "Order-", 6) == 0 && strcmp(e->type, "Moved") == 0;
}

int main(void)
{
    t_seed();
    per_writer = getenv("TEST_QUICK") ? 800 : 6250; /* 50,000 events in all */
    const char *dir = t_store("sub");
    stele_options o = {.segment_size = 1 << 20};
    CHECK_OK(stele_open(dir, &o, &db));
    int passed = 0;

    /* Some history first, so subscribers start in it and at its end. */
    stele_event_in e0 = {.type = "Seed"};
    for (int i = 0; i < 50; i++)
        CHECK_OK(stele_append(db, "Seed-1", STELE_ANY, &e0, 1, NULL));

    subr subs[SUBS];
    memset(subs, 0, sizeof subs);
    pthread_t st[SUBS], wt[WRITERS];
    for (int i = 0; i < SUBS; i++) {
        subs[i].from = i == 0 ? 0 : i == 1 ? STELE_END : t_rand_below(50);
        subs[i].filtered = i >= 4;
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&wt[i], NULL, writer, (void *)(intptr_t)i);
    for (int i = 0; i < SUBS; i++)
        pthread_create(&st[i], NULL, subscriber, &subs[i]);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(wt[i], NULL);
    stele_stats stats;
    CHECK_OK(stele_get_stats(db, &stats));
    uint64_t total = stats.events;
    CHECK(total == 50 + (uint64_t)WRITERS * (uint64_t)per_writer);
    atomic_store(&final_total, total);
    for (int i = 0; i < SUBS; i++)
        pthread_join(st[i], NULL);

    /* Each subscriber saw exactly $all (or its filtered part) from its
     * start, in order, once. */
    stele_page *all;
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, (size_t)total, &all));
    CHECK(stele_page_count(all) == total);
    for (int i = 0; i < SUBS; i++) {
        subr *r = &subs[i];
        size_t k = 0;
        uint64_t start = r->nseen ? r->seen[0] : total;
        if (r->from != STELE_END)
            start = r->from;
        for (uint64_t p = start; p < total; p++) {
            const stele_event *e = stele_page_event(all, p);
            if (r->filtered && !matches(e))
                continue;
            if (k >= r->nseen || r->seen[k] != p) {
                fprintf(stderr, "subscriber %d: at %zu expected position %llu, saw %llu\n", i,
                        k, (unsigned long long)p,
                        k < r->nseen ? (unsigned long long)r->seen[k] : 0ull);
                CHECK(0);
                break;
            }
            k++;
        }
        CHECK(k == r->nseen);
        free(r->seen);
    }
    stele_page_free(all);
    passed++;

    /* A filter that matches nothing still moves the position on. */
    {
        const char *none[] = {"NoSuchType"};
        stele_filter f = {.types = none, .n_types = 1};
        stele_sub *s;
        CHECK_OK(stele_subscribe_all(db, 0, &f, &s));
        int pages = 0;
        while (stele_sub_position(s) < total && pages < 1000) {
            stele_page *pg;
            CHECK_OK(stele_sub_next(s, 10, 0, &pg));
            CHECK(stele_page_count(pg) == 0);
            stele_page_free(pg);
            pages++;
        }
        CHECK(stele_sub_position(s) == total);
        CHECK(stele_sub_caught_up(s) == 1);
        stele_sub_close(s);
        passed++;
    }

    /* A stream subscription waits for a stream that does not exist yet,
     * and a watch fd fires on the commit. */
    {
        stele_sub *s;
        int fd;
        CHECK_OK(stele_watch(db, &fd));
        CHECK_OK(stele_subscribe_stream(db, "Later-1", 0, &s));
        stele_page *pg;
        CHECK_OK(stele_sub_next(s, 10, 0, &pg));
        CHECK(stele_page_count(pg) == 0);
        stele_page_free(pg);
        uint64_t junk;
        while (read(fd, &junk, sizeof junk) > 0) {
        }
        stele_event_in e = {.type = "Happened"};
        CHECK_OK(stele_append(db, "Later-1", STELE_NO_STREAM, &e, 1, NULL));
        /* The fd fires after the commit, which may be just after the
         * append returned (the writer signals watchers once it has
         * answered the group's appends). */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        CHECK(poll(&pfd, 1, 10000) == 1);
        CHECK(read(fd, &junk, sizeof junk) == sizeof junk);
        CHECK_OK(stele_sub_next(s, 10, 1000, &pg));
        CHECK(stele_page_count(pg) == 1);
        CHECK(stele_page_count(pg) == 1 && stele_page_event(pg, 0)->revision == 0);
        stele_page_free(pg);
        CHECK(stele_sub_position(s) == 1);
        stele_sub_close(s);
        stele_unwatch(db, fd);
        passed++;
    }

    /* Seeking moves the cursor: the next read starts there, filtered or
     * not, and reads near the tail (the engine's recent-group hints) return
     * exactly the events at the new cursor. */
    {
        stele_sub *s;
        CHECK_OK(stele_get_stats(db, &stats));
        uint64_t head = stats.events;
        CHECK_OK(stele_subscribe_all(db, 0, NULL, &s));
        for (uint64_t at = head - 5; at <= head; at++) {
            stele_sub_seek(s, at);
            CHECK(stele_sub_position(s) == at);
            stele_page *pg;
            CHECK_OK(stele_sub_next(s, 3, 0, &pg));
            uint64_t want = head - at < 3 ? head - at : 3;
            CHECK(stele_page_count(pg) == want);
            for (size_t k = 0; k < stele_page_count(pg); k++)
                CHECK(stele_page_event(pg, k)->position == at + k);
            stele_page_free(pg);
        }
        stele_sub_seek(NULL, 1); /* a no-op */
        stele_sub_close(s);
        const char *moved[] = {"Moved"};
        stele_filter f = {.types = moved, .n_types = 1};
        CHECK_OK(stele_subscribe_all(db, 0, &f, &s));
        stele_sub_seek(s, total / 2);
        stele_page *pg;
        CHECK_OK(stele_sub_next(s, 1, 0, &pg));
        CHECK(stele_page_count(pg) <= 1);
        if (stele_page_count(pg))
            CHECK(stele_page_event(pg, 0)->position >= total / 2);
        stele_page_free(pg);
        stele_sub_close(s);
        passed++;
    }

    /* A stream name without '-' is its own category (as in queries). */
    {
        stele_event_in e = {.type = "Solo"};
        CHECK_OK(stele_append(db, "Solo", STELE_ANY, &e, 1, NULL));
        CHECK_OK(stele_append(db, "Solo-1", STELE_ANY, &e, 1, NULL));
        const char *cats[] = {"Solo"};
        stele_filter f = {.categories = cats, .n_categories = 1};
        stele_sub *s;
        CHECK_OK(stele_subscribe_all(db, 0, &f, &s));
        size_t got = 0;
        for (int i = 0; i < 100 && !stele_sub_caught_up(s); i++) {
            stele_page *pg;
            CHECK_OK(stele_sub_next(s, 100, 0, &pg));
            for (size_t k = 0; k < stele_page_count(pg); k++)
                CHECK(strcmp(stele_page_event(pg, k)->type, "Solo") == 0);
            got += stele_page_count(pg);
            stele_page_free(pg);
        }
        CHECK(got == 2);
        stele_sub_close(s);
        passed++;
    }

    /* Bad filters and arguments. */
    {
        stele_sub *s;
        stele_filter bad_re = {.type_regex = "(unclosed"};
        CHECK_RC(stele_subscribe_all(db, 0, &bad_re, &s), STELE_EINVAL);
        CHECK(strstr(stele_errmsg(), "type regex") != NULL);
        const char *empty[] = {""};
        stele_filter bad_list = {.tags = empty, .n_tags = 1};
        CHECK_RC(stele_subscribe_all(db, 0, &bad_list, &s), STELE_EINVAL);
        CHECK(strstr(stele_errmsg(), "tags entry 0 is empty") != NULL);
        stele_filter null_list = {.types = NULL, .n_types = 2};
        CHECK_RC(stele_subscribe_all(db, 0, &null_list, &s), STELE_EINVAL);
        CHECK_RC(stele_subscribe_stream(db, "bad\x01name", 0, &s), STELE_EINVAL);
        CHECK_OK(stele_subscribe_all(db, 0, NULL, &s));
        stele_page *pg;
        CHECK_RC(stele_sub_next(s, 0, 0, &pg), STELE_EINVAL);
        CHECK_RC(stele_sub_next(s, 1, -5, &pg), STELE_EINVAL);
        stele_sub_close(s);
        passed++;
    }

    stele_close(db);
    t_store_drop(dir);
    return t_done("test_sub", passed);
}
