/*
 * test_views.c - the system view streams $ce-{category}, $et-{type},
 * $bc-{correlationId} and $streams, read with stele_read_stream() and
 * followed with stele_subscribe_stream().
 *
 *   equal        every view, read forwards and backwards with random page
 *                sizes and from random revisions, holds exactly the events
 *                of the matching query (category, type, correlation id), in
 *                position order, with view revisions 0, 1, 2 ... (gaps only
 *                where deletes hide events).
 *   stable       the (position, view revision) pairs are the same after a
 *                soft delete of another stream, after a clean reopen, after
 *                a rebuild of the index from the log, and after a scavenge
 *                that removed the deleted stream's events.
 *   $streams     one entry per stream with events, in creation order: its
 *                first visible event; deleted streams are left out.
 *   subscribe    catch-up then live, from the start, from a revision and
 *                from the end: the events and revisions of the view, each
 *                once, including events appended while it is live.
 *   bad input    "$ce-" (no key), an unknown category (ENOTFOUND), appends
 *                to a view (EINVAL), a store without indexes (EINVAL).
 *
 * Replay with TEST_SEED=n.
 */
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int g_passed;

/* One event of a view: its position and its revision in the view. */
typedef struct vev {
    uint64_t pos, rev;
} vev;

typedef struct vlist {
    vev *v;
    size_t n, cap;
} vlist;

static void vl_add(vlist *l, uint64_t pos, uint64_t rev)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (vev){pos, rev};
}

static const char *const cats[] = {"Order", "Invoice", "Cart"};
static const char *const types[] = {"Placed", "Paid", "Shipped"};
static const char *const corrs[] = {"c-1", "c-2"};

static stele_db *open_db(const char *dir, uint32_t flags)
{
    stele_options o = {0};
    o.segment_size = getenv("SEG") ? 1u << 20 : 64u << 10;
    o.flags = flags;
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

static int nstreams;

static void random_append(stele_db *db)
{
    char stream[64];
    int s = (int)t_rand_below(12);
    snprintf(stream, sizeof stream, "%s-%d", cats[s % 3], s);
    if (s >= nstreams)
        nstreams = s + 1;
    size_t n = 1 + (size_t)t_rand_below(4);
    stele_event_in ev[4];
    char meta[4][64], data[4][600];
    memset(ev, 0, sizeof ev);
    for (size_t i = 0; i < n; i++) {
        ev[i].type = types[t_rand_below(3)];
        int dl = snprintf(data[i], sizeof data[i], "{\"i\":%d,\"pad\":\"", (int)i);
        while (dl < 500)
            data[i][dl++] = 'x';
        dl += snprintf(data[i] + dl, sizeof data[i] - (size_t)dl, "\"}");
        ev[i].data = data[i];
        ev[i].data_len = (size_t)dl;
        ev[i].flags = STELE_EVENT_JSON;
        if (t_rand_below(3)) {
            int ml = snprintf(meta[i], sizeof meta[i], "{\"$correlationId\":\"%s\"}",
                              corrs[t_rand_below(2)]);
            ev[i].metadata = meta[i];
            ev[i].metadata_len = (size_t)ml;
            ev[i].flags |= STELE_META_JSON;
        }
    }
    if (t_rand_below(5)) {
        CHECK_OK(stele_append(db, stream, STELE_ANY, ev, n, NULL));
        return;
    }
    /* One commit over two streams (of two categories), with a state. */
    char other[64];
    int o = (int)t_rand_below(12);
    snprintf(other, sizeof other, "%s-%d", cats[o % 3], o);
    if (o >= nstreams)
        nstreams = o + 1;
    if (!strcmp(other, stream)) {
        CHECK_OK(stele_append(db, stream, STELE_ANY, ev, n, NULL));
        return;
    }
    stele_snapshot_in st = {0, 0, STELE_EVENT_JSON, "{}", 2};
    stele_append_stream as[2] = {{stream, STELE_ANY, &st}, {other, STELE_ANY, NULL}};
    stele_append_record rec[4];
    for (size_t i = 0; i < n; i++) {
        rec[i].stream = i % 2;
        rec[i].event = ev[i];
    }
    rec[0].stream = 0; /* the state needs an event of its stream */
    /* (With one event the other stream is a check-only one.) */
    CHECK_OK(stele_append_multi(db, as, 2, rec, n, NULL, NULL, NULL));
}

/* The view read whole, forwards with random page sizes. */
static void read_view(stele_db *db, const char *view, uint64_t from, vlist *out)
{
    out->n = 0;
    for (int guard = 0; guard < 100000; guard++) {
        stele_page *pg;
        size_t lim = 1 + (size_t)t_rand_below(17);
        int rc = stele_read_stream(db, view, from, STELE_FORWARDS, lim, &pg);
        if (rc == STELE_ENOTFOUND)
            return;
        CHECK_OK(rc);
        if (rc)
            return;
        size_t n = stele_page_count(pg);
        CHECK(n <= lim);
        for (size_t i = 0; i < n; i++) {
            const char *name = NULL;
            uint64_t rev = 0;
            CHECK(stele_page_link(pg, i, &name, &rev) == 1);
            CHECK(name && !strcmp(name, view));
            CHECK(rev >= from);
            vl_add(out, stele_page_event(pg, i)->position, rev);
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more)
            return;
        CHECK(next >= from);
        from = next;
    }
    CHECK(!"view read did not end");
}

/* The same view backwards from the end: the reverse of `fw`. */
static void check_backwards(stele_db *db, const char *view, const vlist *fw)
{
    uint64_t from = STELE_END;
    size_t at = fw->n;
    for (int guard = 0; guard < 100000; guard++) {
        stele_page *pg;
        size_t lim = 1 + (size_t)t_rand_below(17);
        int rc = stele_read_stream(db, view, from, STELE_BACKWARDS, lim, &pg);
        if (rc == STELE_ENOTFOUND) {
            CHECK(fw->n == 0);
            return;
        }
        CHECK_OK(rc);
        if (rc)
            return;
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            uint64_t rev = 0;
            stele_page_link(pg, i, NULL, &rev);
            CHECK(at > 0);
            if (at == 0)
                break;
            at--;
            CHECK(fw->v[at].pos == stele_page_event(pg, i)->position);
            CHECK(fw->v[at].rev == rev);
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more)
            break;
        from = next;
    }
    CHECK(at == 0);
}

/* The matching query's positions. */
static void query_positions(stele_db *db, int kind, const char *key, vlist *out)
{
    out->n = 0;
    stele_query q = {0};
    q.kind = kind;
    q.key = key;
    q.limit = 100;
    for (;;) {
        stele_page *pg;
        CHECK_OK(stele_read_query(db, &q, &pg));
        for (size_t i = 0; i < stele_page_count(pg); i++)
            vl_add(out, stele_page_event(pg, i)->position, 0);
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more)
            break;
        q.from = next;
    }
}

typedef struct view_case {
    char name[64];
    int kind;
    const char *key;
    vlist seen; /* the view as first read: revisions must never change */
} view_case;

static view_case cases[8];
static size_t ncases;

static void make_cases(void)
{
    for (int i = 0; i < 3; i++) {
        view_case *c = &cases[ncases++];
        snprintf(c->name, sizeof c->name, "$ce-%s", cats[i]);
        c->kind = STELE_QUERY_CATEGORY;
        c->key = cats[i];
    }
    for (int i = 0; i < 3; i++) {
        view_case *c = &cases[ncases++];
        snprintf(c->name, sizeof c->name, "$et-%s", types[i]);
        c->kind = STELE_QUERY_TYPE;
        c->key = types[i];
    }
    for (int i = 0; i < 2; i++) {
        view_case *c = &cases[ncases++];
        snprintf(c->name, sizeof c->name, "$bc-%s", corrs[i]);
        c->kind = STELE_QUERY_CORRELATION;
        c->key = corrs[i];
    }
}

/*
 * Every view against its query: the same positions in order; revisions
 * ascending, and equal to the first reading's for every event still
 * there. `gapless`: no event was hidden, so revisions are 0..n-1.
 */
static void check_views(stele_db *db, int gapless, const char *when)
{
    vlist got = {0}, want = {0}, part = {0};
    for (size_t k = 0; k < ncases; k++) {
        view_case *c = &cases[k];
        read_view(db, c->name, 0, &got);
        query_positions(db, c->kind, c->key, &want);
        CHECK(got.n == want.n);
        if (got.n != want.n)
            fprintf(stderr, "%s: %s has %zu events, the query %zu\n", when, c->name, got.n,
                    want.n);
        for (size_t i = 0; i < got.n && i < want.n; i++) {
            CHECK(got.v[i].pos == want.v[i].pos);
            if (gapless)
                CHECK(got.v[i].rev == i);
            if (i)
                CHECK(got.v[i].rev > got.v[i - 1].rev);
        }
        if (!c->seen.n) {
            for (size_t i = 0; i < got.n; i++)
                vl_add(&c->seen, got.v[i].pos, got.v[i].rev);
        } else {
            /* Every event still there keeps its revision. */
            size_t j = 0;
            for (size_t i = 0; i < got.n; i++) {
                while (j < c->seen.n && c->seen.v[j].pos < got.v[i].pos)
                    j++;
                if (j < c->seen.n && c->seen.v[j].pos == got.v[i].pos)
                    CHECK(c->seen.v[j].rev == got.v[i].rev);
            }
        }
        check_backwards(db, c->name, &got);
        /* From a random revision: the suffix of the view. */
        if (got.n) {
            size_t at = (size_t)t_rand_below(got.n);
            read_view(db, c->name, got.v[at].rev, &part);
            CHECK(part.n == got.n - at);
            for (size_t i = 0; i < part.n && at + i < got.n; i++)
                CHECK(part.v[i].pos == got.v[at + i].pos && part.v[i].rev == got.v[at + i].rev);
        }
    }
    free(got.v);
    free(want.v);
    free(part.v);
    g_passed++;
}

/* $streams: the first visible event of each stream with events, by the
 * order the streams were created in (their first event's position here:
 * no stream had metadata or a delete before its first event). */
static void check_streams_view(stele_db *db, const char *deleted)
{
    vlist got = {0};
    read_view(db, "$streams", 0, &got);
    int want = 0;
    for (int s = 0; s < 12; s++) {
        char stream[64];
        snprintf(stream, sizeof stream, "%s-%d", cats[s % 3], s);
        stele_page *pg;
        int rc = stele_read_stream(db, stream, 0, STELE_FORWARDS, 1, &pg);
        if (rc == STELE_ENOTFOUND) {
            CHECK(deleted && !strcmp(stream, deleted));
            continue;
        }
        CHECK_OK(rc);
        uint64_t first = stele_page_event(pg, 0)->position;
        stele_page_free(pg);
        int found = 0;
        for (size_t i = 0; i < got.n; i++)
            found += got.v[i].pos == first;
        CHECK(found == 1);
        want++;
    }
    for (size_t i = 1; i < got.n; i++)
        CHECK(got.v[i].rev > got.v[i - 1].rev);
    /* Each entry is its stream's first event (system streams, such as a
     * consumer group's, are streams too), and the same backwards. */
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "$streams", STELE_END, STELE_BACKWARDS, 1000, &pg));
    CHECK(stele_page_count(pg) == got.n);
    int user = 0;
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        CHECK(e->position == got.v[got.n - 1 - i].pos);
        user += e->stream[0] != '$';
        stele_page *first;
        CHECK_OK(stele_read_stream(db, e->stream, 0, STELE_FORWARDS, 1, &first));
        CHECK(stele_page_event(first, 0)->revision == e->revision);
        CHECK(stele_page_event(first, 0)->position == e->position);
        stele_page_free(first);
    }
    CHECK(user == want);
    stele_page_free(pg);
    free(got.v);
    g_passed++;
}

/* A subscription to a view from `from` gives `want` (a reading of the view
 * from revision 0) from the first revision >= from, then events appended
 * while it is live. */
static void check_subscription(stele_db *db, const char *view)
{
    vlist all = {0};
    read_view(db, view, 0, &all);
    CHECK(all.n > 2);
    uint64_t from = all.v[all.n / 2].rev;
    stele_sub *sub, *tail;
    CHECK_OK(stele_subscribe_stream(db, view, from, &sub));
    CHECK_OK(stele_subscribe_stream(db, view, STELE_END, &tail));
    size_t at = all.n / 2;
    int caught_up = 0;
    for (int guard = 0; guard < 1000 && !caught_up; guard++) {
        stele_page *pg;
        CHECK_OK(stele_sub_next(sub, 1 + (size_t)t_rand_below(7), 0, &pg));
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            uint64_t rev = 0;
            CHECK(stele_page_link(pg, i, NULL, &rev));
            CHECK(at < all.n);
            if (at < all.n)
                CHECK(all.v[at].pos == stele_page_event(pg, i)->position && all.v[at].rev == rev);
            at++;
        }
        caught_up = stele_sub_caught_up(sub) && stele_page_count(pg) == 0;
        stele_page_free(pg);
    }
    CHECK(at == all.n);
    /* Live: new events of the view, in both subscriptions, each once. */
    for (int i = 0; i < 30; i++)
        random_append(db);
    vlist after = {0};
    read_view(db, view, 0, &after);
    CHECK(after.n > all.n);
    for (int which = 0; which < 2; which++) {
        stele_sub *s = which ? tail : sub;
        size_t k = all.n;
        for (int guard = 0; guard < 1000 && k < after.n; guard++) {
            stele_page *pg;
            CHECK_OK(stele_sub_next(s, 5, 1000, &pg));
            for (size_t i = 0; i < stele_page_count(pg) && k < after.n; i++, k++) {
                uint64_t rev = 0;
                stele_page_link(pg, i, NULL, &rev);
                CHECK(after.v[k].pos == stele_page_event(pg, i)->position);
                CHECK(after.v[k].rev == rev);
            }
            stele_page_free(pg);
        }
        CHECK(k == after.n);
        stele_page *pg;
        CHECK_OK(stele_sub_next(s, 5, 0, &pg));
        CHECK(stele_page_count(pg) == 0);
        stele_page_free(pg);
    }
    stele_sub_close(sub);
    stele_sub_close(tail);
    free(all.v);
    free(after.v);
    g_passed++;
}

/* A consumer group on a view gets the view's events in order, and acking
 * them moves its checkpoint to the view revision. */
static void check_group(stele_db *db, const char *view)
{
    vlist all = {0};
    read_view(db, view, 0, &all);
    stele_group_settings gs;
    stele_group_settings_init(&gs);
    gs.max_in_flight = 10000;
    gs.buffer_size = 10000;
    CHECK_OK(stele_group_create(db, view, "g1", &gs));
    stele_consumer *c;
    CHECK_OK(stele_group_connect(db, view, "g1", "c1", &c));
    size_t got = 0;
    for (int guard = 0; guard < 1000 && got < all.n; guard++) {
        stele_batch *b;
        CHECK_OK(stele_consumer_read(c, 50, 1000, &b));
        for (size_t i = 0; i < stele_batch_count(b); i++, got++) {
            const stele_event *e = stele_batch_event(b, i);
            CHECK(got < all.n && e->position == all.v[got].pos);
            CHECK_OK(stele_consumer_ack(c, &e->id, 1));
        }
        stele_batch_free(b);
    }
    CHECK(got == all.n);
    stele_group_info *gi;
    CHECK_OK(stele_group_get(db, view, "g1", &gi));
    CHECK(gi->checkpoint == all.v[all.n - 1].rev + 1 || gi->checkpoint == all.v[all.n - 1].rev);
    stele_group_info_free(gi);
    stele_consumer_close(c);
    CHECK_OK(stele_group_delete(db, view, "g1"));
    free(all.v);
    g_passed++;
}

static void check_bad_input(stele_db *db, const char *dir)
{
    stele_page *pg = NULL;
    CHECK_RC(stele_read_stream(db, "$ce-", 0, STELE_FORWARDS, 10, &pg), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "category") != NULL);
    CHECK_RC(stele_read_stream(db, "$et-", 0, STELE_FORWARDS, 10, &pg), STELE_EINVAL);
    CHECK_RC(stele_read_stream(db, "$ce-Nothing", 0, STELE_FORWARDS, 10, &pg), STELE_ENOTFOUND);
    CHECK(strstr(stele_errmsg(), "$ce-Nothing") != NULL);
    CHECK_RC(stele_read_stream(db, "$ce-Order-1", 0, STELE_FORWARDS, 10, &pg), STELE_ENOTFOUND);
    CHECK_RC(stele_read_stream(db, "$ce-Order", 0, 7, 10, &pg), STELE_EINVAL);
    stele_event_in ev = {0};
    ev.type = "X";
    CHECK_RC(stele_append(db, "$ce-Order", STELE_ANY, &ev, 1, NULL), STELE_EINVAL);
    stele_sub *s = NULL;
    CHECK_RC(stele_subscribe_stream(db, "$bc-", 0, &s), STELE_EINVAL);
    /* An ordinary page has no links. */
    CHECK_OK(stele_read_stream(db, "Order-0", 0, STELE_FORWARDS, 1, &pg));
    uint64_t rev = 42;
    CHECK(stele_page_link(pg, 0, NULL, &rev) == 0 && rev == 42);
    stele_page_free(pg);
    CHECK(stele_page_link(NULL, 0, NULL, NULL) == 0);
    /* Without indexes: the index views fail clearly, $streams works. */
    stele_close(db);
    db = open_db(dir, STELE_OPEN_NO_INDEXES);
    CHECK_RC(stele_read_stream(db, "$ce-Order", 0, STELE_FORWARDS, 10, &pg), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "NO_INDEXES") != NULL);
    CHECK_OK(stele_read_stream(db, "$streams", 0, STELE_FORWARDS, 10, &pg));
    CHECK(stele_page_count(pg) > 0);
    stele_page_free(pg);
    stele_close(db);
    g_passed++;
}

static stele_db *rebuild(const char *dir, stele_db *db)
{
    stele_close(db);
    char path[600];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    CHECK(unlink(path) == 0);
    return open_db(dir, 0);
}

int main(void)
{
    t_seed();
    const char *dir = t_tmpdir("views");
    stele_db *db = open_db(dir, 0);
    make_cases();
    for (int i = 0; i < 400; i++)
        random_append(db);
    check_views(db, 1, "fresh");
    check_streams_view(db, NULL);
    check_subscription(db, "$ce-Order");
    check_subscription(db, "$et-Paid");
    check_subscription(db, "$bc-c-1");
    check_views(db, 1, "after live appends");
    check_group(db, "$ce-Invoice");

    /* A soft delete hides a stream's events: gaps, no renumbering. */
    CHECK_OK(stele_delete_stream(db, "Invoice-1", STELE_ANY, NULL));
    check_views(db, 0, "after a delete");
    check_streams_view(db, "Invoice-1");

    /* A clean reopen, then a rebuild of the index from the log: the same
     * numbers (the log holds every event they counted). */
    stele_close(db);
    db = open_db(dir, 0);
    check_views(db, 0, "after a reopen");
    db = rebuild(dir, db);
    check_views(db, 0, "after a rebuild");

    /* Scavenging removes the deleted events; the index keeps its numbers. */
    for (int i = 0; i < 200; i++)
        random_append(db);
    check_views(db, 0, "before a scavenge");
    stele_scavenge_result sr;
    CHECK_OK(stele_scavenge(db, NULL, &sr));
    CHECK(sr.events_removed > 0);
    check_views(db, 0, "after a scavenge");
    check_streams_view(db, "Invoice-1");

    /* A rebuild after that scavenge renumbers the views that lost events
     * (documented); the others keep their numbers, and all stay equal to
     * their queries with ascending revisions. */
    db = rebuild(dir, db);
    {
        vlist got = {0}, want = {0};
        for (size_t k = 0; k < ncases; k++) {
            view_case *c = &cases[k];
            read_view(db, c->name, 0, &got);
            query_positions(db, c->kind, c->key, &want);
            CHECK(got.n == want.n);
            for (size_t i = 0; i < got.n && i < want.n; i++) {
                CHECK(got.v[i].pos == want.v[i].pos);
                if (i)
                    CHECK(got.v[i].rev > got.v[i - 1].rev);
            }
        }
        free(got.v);
        free(want.v);
    }
    g_passed++;
    check_bad_input(db, dir);
    for (size_t k = 0; k < ncases; k++)
        free(cases[k].seen.v);
    char report[512];
    CHECK_OK(stele_check(dir, report, sizeof report));
    t_rmdir(dir);
    return t_done("test_views", g_passed);
}
