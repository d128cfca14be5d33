/*
 * test_ddb.c - the DynamoDB backend through the public API, against the
 * DynamoDB Local that tests/ddb/run.sh starts ($STELE_DDB_URI names the
 * store; each run uses a fresh table prefix). Covers: expected revisions,
 * idempotent retries and id conflicts, the transaction limits, a gapless
 * $all with concurrent writers (two handles = two servers), deletes,
 * metadata, snapshots, seed 004 (state + event in one transaction; a
 * version conflict and a duplicate each with their own error), seed 003's
 * queries through the GSIs, and a subscription woken by another handle's
 * commit.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static int passed;
static char uri[512];

static stele_event_in ev(const char *type, const char *data, const uint8_t *id)
{
    return (stele_event_in){.id = id, .type = type, .data = data, .data_len = strlen(data),
                            .flags = STELE_EVENT_JSON};
}

static size_t count(stele_page *pg)
{
    return stele_page_count(pg);
}

static void test_expected(stele_db *db)
{
    stele_append_result r;
    stele_event_in e[3] = {ev("A", "{\"n\":0}", NULL), ev("B", "{\"n\":1}", NULL), ev("C", "{}", NULL)};
    CHECK_OK(stele_append(db, "acct-1", STELE_NO_STREAM, e, 2, &r));
    CHECK(r.first_revision == 0 && r.last_revision == 1);
    CHECK_RC(stele_append(db, "acct-1", STELE_NO_STREAM, e, 1, &r), STELE_EWRONGREV);
    CHECK(r.current_revision == 1);
    CHECK_RC(stele_append(db, "acct-1", 0, e, 1, &r), STELE_EWRONGREV);
    CHECK(strstr(stele_errmsg(), "its revision is 1") != NULL);
    CHECK_OK(stele_append(db, "acct-1", 1, e + 2, 1, &r));
    CHECK(r.first_revision == 2);
    CHECK_RC(stele_append(db, "acct-none", STELE_STREAM_EXISTS, e, 1, &r), STELE_EWRONGREV);
    CHECK_OK(stele_append(db, "acct-1", STELE_ANY, e, 1, &r));
    CHECK(r.first_revision == 3);
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "acct-1", 0, STELE_FORWARDS, 2, &pg));
    CHECK(count(pg) == 2);
    uint64_t next;
    CHECK(stele_page_next(pg, &next) == 1 && next == 2);
    CHECK(!strcmp(stele_page_event(pg, 1)->type, "B"));
    CHECK(stele_page_event(pg, 1)->data_len == 7 && !memcmp(stele_page_event(pg, 1)->data, "{\"n\":1}", 7));
    stele_page_free(pg);
    CHECK_OK(stele_read_stream(db, "acct-1", STELE_END, STELE_BACKWARDS, 10, &pg));
    CHECK(count(pg) == 4 && stele_page_event(pg, 0)->revision == 3 && stele_page_event(pg, 3)->revision == 0);
    stele_page_free(pg);
    CHECK_RC(stele_read_stream(db, "never-written", 0, STELE_FORWARDS, 10, &pg), STELE_ENOTFOUND);
    passed++;
}

static void test_idempotent(stele_db *db, stele_db *db2)
{
    uint8_t id1[16], id2[16], id3[16];
    stele_uuid_parse("11111111-1111-4111-8111-111111111111", id1);
    stele_uuid_parse("22222222-2222-4222-8222-222222222222", id2);
    stele_uuid_parse("33333333-3333-4333-8333-333333333333", id3);
    stele_event_in e[2] = {ev("Paid", "{}", id1), ev("Shipped", "{}", id2)};
    stele_append_result r, r2;
    CHECK_OK(stele_append(db, "order-9", STELE_NO_STREAM, e, 2, &r));
    CHECK(!r.idempotent);
    /* The same append again, through the other handle (another server). */
    CHECK_OK(stele_append(db2, "order-9", STELE_NO_STREAM, e, 2, &r2));
    CHECK(r2.idempotent && r2.first_revision == 0 && r2.last_revision == 1);
    CHECK(r2.first_position == r.first_position && r2.last_position == r.last_position);
    CHECK_OK(stele_append(db2, "order-9", STELE_ANY, e, 2, &r2));
    CHECK(r2.idempotent);
    /* An id reused elsewhere is a conflict, not a retry. */
    stele_event_in f[1] = {ev("Paid", "{}", id1)};
    CHECK_RC(stele_append(db, "order-10", STELE_ANY, f, 1, &r2), STELE_EIDCONFLICT);
    CHECK(strstr(stele_errmsg(), "another stream") != NULL);
    stele_event_in g[2] = {ev("Paid", "{}", id1), ev("X", "{}", id3)};
    CHECK_RC(stele_append(db, "order-9", STELE_NO_STREAM, g, 2, &r2), STELE_EIDCONFLICT);
    /* A part of the original append is not a retry of it. */
    CHECK_RC(stele_append(db2, "order-9", STELE_NO_STREAM, e, 1, &r2), STELE_EIDCONFLICT);
    CHECK(strstr(stele_errmsg(), "earlier append of 2 events") != NULL);
    /* The same ids with other data (issue 19): a conflict naming the part,
     * through either handle; the stored events stay. */
    stele_event_in h[2] = {ev("Paid", "{}", id1), ev("Shipped", "{\"late\":true}", id2)};
    CHECK_RC(stele_append(db2, "order-9", STELE_NO_STREAM, h, 2, &r2), STELE_EIDCONFLICT);
    CHECK(strstr(stele_errmsg(), "different data") != NULL);
    h[1] = ev("Returned", "{}", id2);
    CHECK_RC(stele_append(db, "order-9", STELE_NO_STREAM, h, 2, &r2), STELE_EIDCONFLICT);
    CHECK(strstr(stele_errmsg(), "different type") != NULL);
    h[1] = ev("Shipped", "{}", id2);
    h[1].flags = 0;
    CHECK_RC(stele_append(db, "order-9", STELE_NO_STREAM, h, 2, &r2), STELE_EIDCONFLICT);
    CHECK(strstr(stele_errmsg(), "different content type") != NULL);
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "order-9", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 2);
    CHECK(count(pg) == 2 && stele_page_event(pg, 1)->data_len == 2);
    stele_page_free(pg);
    /* A ULID-given id keeps its form (STELE_EVENT_ID_ULID), on reads and
     * on $all; a retry in the other form is the same event. */
    uint8_t u[16];
    CHECK_OK(stele_ulid_parse("01JEZ8Q5R1XW3K9V7T2M4N6P8B", u));
    stele_event_in ue = ev("Ul", "{}", u);
    ue.flags |= STELE_EVENT_ID_ULID;
    CHECK_OK(stele_append(db, "ulid-1", STELE_NO_STREAM, &ue, 1, &r));
    CHECK_OK(stele_read_stream(db2, "ulid-1", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 1 && (stele_page_event(pg, 0)->flags & STELE_EVENT_ID_ULID));
    CHECK(count(pg) == 1 && !memcmp(stele_page_event(pg, 0)->id, u, 16));
    stele_page_free(pg);
    CHECK_OK(stele_read_all(db, r.first_position, STELE_FORWARDS, 1, &pg));
    CHECK(count(pg) == 1 && (stele_page_event(pg, 0)->flags & STELE_EVENT_ID_ULID));
    stele_page_free(pg);
    ue.flags &= ~STELE_EVENT_ID_ULID;
    CHECK_OK(stele_append(db2, "ulid-1", STELE_NO_STREAM, &ue, 1, &r2));
    CHECK(r2.idempotent && r2.first_position == r.first_position);
    passed++;
}

static void test_limits(stele_db *db)
{
    /* Events of one type with store-made ids: n + stream + category and
     * type counters + sequencer + feed <= 100 -> 95 fit. */
    stele_event_in e[100];
    for (int i = 0; i < 100; i++)
        e[i] = ev("Bulk", "{}", NULL);
    stele_append_result r;
    CHECK_RC(stele_append(db, "bulk-1", STELE_ANY, e, 96, &r), STELE_ETOOBIG);
    CHECK(strstr(stele_errmsg(), "at most 95 events") != NULL);
    CHECK_OK(stele_append(db, "bulk-1", STELE_NO_STREAM, e, 95, &r));
    CHECK(r.last_revision == 94 && r.last_position - r.first_position == 94);
    /* Each distinct type costs its counter item. */
    char tn[50][8];
    for (int i = 0; i < 50; i++) {
        snprintf(tn[i], sizeof tn[i], "T%d", i);
        e[i].type = tn[i];
    }
    CHECK_RC(stele_append(db, "bulk-3", STELE_ANY, e, 50, &r), STELE_ETOOBIG);
    CHECK(strstr(stele_errmsg(), "51 view counters") != NULL);
    CHECK_OK(stele_append(db, "bulk-3", STELE_ANY, e, 48, &r));
    /* An item over 400 KB. */
    size_t big = 420 * 1024;
    char *data = malloc(big + 1);
    memset(data, 'x', big);
    data[big] = 0;
    stele_event_in b = {.type = "Big", .data = data, .data_len = big};
    CHECK_RC(stele_append(db, "bulk-2", STELE_ANY, &b, 1, &r), STELE_ETOOBIG);
    CHECK(strstr(stele_errmsg(), "400 KB") != NULL);
    b.data_len = 300 * 1024;
    CHECK_OK(stele_append(db, "bulk-2", STELE_ANY, &b, 1, &r));
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "bulk-2", 0, STELE_FORWARDS, 1, &pg));
    CHECK(count(pg) == 1 && stele_page_event(pg, 0)->data_len == 300 * 1024);
    stele_page_free(pg);
    free(data);
    passed++;
}

typedef struct writer_arg {
    stele_db *db;
    int id;
    int n;
    int fails;
} writer_arg;

static void *writer(void *p)
{
    writer_arg *w = p;
    char name[32], data[64];
    snprintf(name, sizeof name, "w-%d", w->id);
    for (int i = 0; i < w->n; i++) {
        snprintf(data, sizeof data, "{\"w\":%d,\"i\":%d}", w->id, i);
        stele_event_in e = ev("W", data, NULL);
        stele_append_result r;
        if (stele_append(w->db, name, i == 0 ? STELE_NO_STREAM : i - 1, &e, 1, &r))
            w->fails++;
    }
    return NULL;
}

/* Eight writers over two handles: $all is gapless, every event once, each
 * stream in order. */
static void test_feed(stele_db *db, stele_db *db2)
{
    uint64_t start;
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    start = st.events;
    pthread_t t[8];
    writer_arg w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (writer_arg){i % 2 ? db2 : db, i, 25, 0};
        pthread_create(&t[i], NULL, writer, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        CHECK(w[i].fails == 0);
    }
    int seen[8] = {0};
    uint64_t pos = start, n = 0;
    for (;;) {
        stele_page *pg;
        CHECK_OK(stele_read_all(db2, pos, STELE_FORWARDS, 37, &pg));
        for (size_t i = 0; i < count(pg); i++) {
            const stele_event *e = stele_page_event(pg, i);
            CHECK(e->position == pos);
            pos++;
            n++;
            int wi, ii;
            CHECK(sscanf(e->data, "{\"w\":%d,\"i\":%d}", &wi, &ii) == 2);
            CHECK(ii == seen[wi]);
            CHECK(e->revision == (uint64_t)ii);
            seen[wi]++;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next) == 1;
        stele_page_free(pg);
        if (!more)
            break;
        CHECK(next == pos);
    }
    CHECK(n == 200);
    for (int i = 0; i < 8; i++)
        CHECK(seen[i] == 25);
    /* Backwards from the end, across feed items. */
    stele_page *pg;
    CHECK_OK(stele_read_all(db, STELE_END, STELE_BACKWARDS, 10, &pg));
    CHECK(count(pg) == 10 && stele_page_event(pg, 0)->position == pos - 1 &&
          stele_page_event(pg, 9)->position == pos - 10);
    stele_page_free(pg);
    passed++;
}

static void test_delete_meta_snap(stele_db *db)
{
    stele_event_in e[5];
    for (int i = 0; i < 5; i++)
        e[i] = ev("E", "{}", NULL);
    stele_append_result r;
    CHECK_OK(stele_append(db, "del-1", STELE_NO_STREAM, e, 3, &r));
    uint64_t cur;
    CHECK_RC(stele_delete_stream(db, "del-1", 0, &cur), STELE_EWRONGREV);
    CHECK_OK(stele_delete_stream(db, "del-1", 2, &cur));
    stele_page *pg;
    CHECK_RC(stele_read_stream(db, "del-1", 0, STELE_FORWARDS, 10, &pg), STELE_ENOTFOUND);
    /* Appending again recreates it and continues the revisions. */
    CHECK_OK(stele_append(db, "del-1", STELE_ANY, e, 1, &r));
    CHECK(r.first_revision == 3);
    CHECK_OK(stele_read_stream(db, "del-1", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 1 && stele_page_event(pg, 0)->revision == 3);
    stele_page_free(pg);
    CHECK_OK(stele_tombstone_stream(db, "del-1", STELE_ANY, &cur));
    CHECK_RC(stele_append(db, "del-1", STELE_ANY, e, 1, &r), STELE_EDELETED);
    CHECK_RC(stele_read_stream(db, "del-1", 0, STELE_FORWARDS, 10, &pg), STELE_EDELETED);

    /* Metadata: maxCount hides older events; versions are checked. */
    CHECK_OK(stele_append(db, "meta-1", STELE_NO_STREAM, e, 5, &r));
    stele_stream_metadata md = {.max_count = 2, .custom = "{\"owner\":\"ops\"}", .custom_len = 15};
    uint64_t v;
    CHECK_OK(stele_set_stream_metadata(db, "meta-1", &md, STELE_NO_STREAM, &v));
    CHECK(v == 0);
    CHECK_RC(stele_set_stream_metadata(db, "meta-1", &md, STELE_NO_STREAM, &v), STELE_EWRONGREV);
    stele_stream_metadata *got;
    CHECK_OK(stele_get_stream_metadata(db, "meta-1", &got));
    CHECK(got->max_count == 2 && got->version == 0 && got->custom_len == 15 &&
          !memcmp(got->custom, "{\"owner\":\"ops\"}", 15));
    stele_free(got);
    CHECK_OK(stele_read_stream(db, "meta-1", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 2 && stele_page_event(pg, 0)->revision == 3);
    stele_page_free(pg);

    /* Snapshots and load. */
    stele_snapshot_in s = {.revision = 3, .schema_version = 2, .flags = STELE_EVENT_JSON,
                           .state = "{\"total\":3}", .state_len = 11};
    CHECK_OK(stele_put_snapshot(db, "meta-1", &s));
    s.revision = 9;
    CHECK_RC(stele_put_snapshot(db, "meta-1", &s), STELE_EINVAL);
    stele_snapshot *sn;
    CHECK_OK(stele_get_snapshot(db, "meta-1", STELE_END, &sn));
    CHECK(sn && sn->revision == 3 && sn->schema_version == 2 && sn->state_len == 11);
    stele_free(sn);
    CHECK_OK(stele_load_stream(db, "meta-1", 100, &sn, &pg));
    CHECK(sn && sn->revision == 3 && count(pg) == 1 && stele_page_event(pg, 0)->revision == 4);
    stele_free(sn);
    stele_page_free(pg);
    passed++;
}

/* The newest event of `$deletes` (its data into d) and its position. */
static uint64_t last_delete(stele_db *db, char *d, size_t dlen)
{
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "$deletes", STELE_END, STELE_BACKWARDS, 1, &pg));
    CHECK(count(pg) == 1);
    const stele_event *e = stele_page_event(pg, 0);
    CHECK(!strcmp(e->type, "$streamDeleted") && (e->flags & STELE_EVENT_JSON));
    snprintf(d, dlen, "%.*s", (int)e->data_len, (const char *)e->data);
    uint64_t p = e->position;
    stele_page_free(pg);
    return p;
}

typedef struct racer {
    stele_db *db;
    int n;
} racer;

static void *race_appends(void *arg)
{
    racer *a = arg;
    stele_event_in e = ev("R", "{}", NULL);
    for (int i = 0; i < 120; i++)
        if (stele_append(a->db, "dx-race", STELE_ANY, &e, 1, NULL) == 0)
            a->n++;
    return NULL;
}

/* Deletes are events of `$deletes` (issue 16, docs/projections.md
 * "$deleted"): written with the delete in one transaction, at the next
 * `$all` position, the same data as on the local engine; a refused delete
 * writes nothing; a subscriber on the other handle gets it; deletes racing
 * appends through another handle are each ordered with them exactly as
 * their event says. */
static void test_deletes_feed(stele_db *db, stele_db *db2)
{
    stele_event_in e[2] = {ev("E", "{}", NULL), ev("E", "{}", NULL)};
    stele_append_result r;
    char d[256];
    uint64_t head, head2, cur;
    CHECK_OK(stele_append(db, "dx-1", STELE_NO_STREAM, e, 2, &r));
    CHECK_OK(stele_position_head(db, &head));
    stele_sub *sub;
    CHECK_OK(stele_subscribe_all(db, head, NULL, &sub));
    /* Refused: nothing written. */
    CHECK_RC(stele_delete_stream(db2, "dx-1", 0, &cur), STELE_EWRONGREV);
    CHECK(cur == 1);
    CHECK_RC(stele_delete_stream(db2, "dx-none", STELE_ANY, &cur), STELE_ENOTFOUND);
    CHECK_OK(stele_position_head(db2, &head2));
    CHECK(head2 == head);
    /* Soft delete through the other handle. */
    CHECK_OK(stele_delete_stream(db2, "dx-1", 1, &cur));
    CHECK(cur == 1);
    CHECK(last_delete(db, d, sizeof d) == head);
    CHECK(!strcmp(d, "{\"streamId\":\"dx-1\",\"revision\":1,\"truncateBefore\":2,\"tombstone\":false}"));
    CHECK_OK(stele_position_head(db, &head2));
    CHECK(head2 == head + 1);
    /* The subscriber on the first handle sees it. */
    int seen = 0;
    for (int tries = 0; !seen && tries < 100; tries++) {
        stele_page *pg = NULL;
        CHECK_OK(stele_sub_next(sub, 10, 1000, &pg));
        for (size_t i = 0; pg && i < count(pg); i++) {
            const stele_event *ev1 = stele_page_event(pg, i);
            CHECK(ev1->position == head && !strcmp(ev1->stream, "$deletes"));
            seen = 1;
        }
        stele_page_free(pg);
    }
    CHECK(seen);
    stele_sub_close(sub);
    /* A tombstone after it is a second event; so is one of a stream never
     * written. */
    CHECK_OK(stele_tombstone_stream(db, "dx-1", STELE_ANY, &cur));
    CHECK(last_delete(db2, d, sizeof d) == head + 1);
    CHECK(!strcmp(d, "{\"streamId\":\"dx-1\",\"revision\":null,\"truncateBefore\":null,\"tombstone\":true}"));
    CHECK_OK(stele_tombstone_stream(db2, "dx-none", STELE_ANY, &cur));
    CHECK(cur == STELE_NONE);
    CHECK(last_delete(db, d, sizeof d) == head + 2);
    CHECK(strstr(d, "\"dx-none\"") && strstr(d, "\"tombstone\":true"));
    CHECK_RC(stele_tombstone_stream(db2, "dx-none", STELE_ANY, &cur), STELE_EDELETED);
    CHECK_RC(stele_append(db, "dx-none", STELE_ANY, e, 1, &r), STELE_EDELETED);
    /* The view of the type numbers them too. */
    stele_page *pg;
    CHECK_OK(stele_read_stream(db, "$et-$streamDeleted", STELE_END, STELE_BACKWARDS, 1, &pg));
    CHECK(count(pg) == 1 && stele_page_event(pg, 0)->position == head + 2);
    stele_page_free(pg);

    /* Deletes racing appends through the other handle. */
    CHECK_OK(stele_position_head(db, &head));
    racer a = {db, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, race_appends, &a) == 0);
    int deletes = 0;
    for (int i = 0; i < 15; i++) {
        int rc = stele_delete_stream(db2, "dx-race", STELE_ANY, NULL);
        CHECK(rc == 0 || rc == STELE_ENOTFOUND);
        deletes += rc == 0;
        usleep(20000);
    }
    pthread_join(t, NULL);
    if (deletes == 0) { /* every delete came before the first append */
        CHECK_OK(stele_delete_stream(db2, "dx-race", STELE_ANY, NULL));
        deletes++;
    }
    CHECK(a.n == 120);
    /* $all from before the race: the appends' positions by revision, then
     * each delete's event against them. */
    static uint64_t pos_of[200];
    int nrev = 0, ndel = 0;
    uint64_t from = head;
    for (;;) {
        CHECK_OK(stele_read_all(db2, from, STELE_FORWARDS, 100, &pg));
        for (size_t i = 0; i < count(pg); i++) {
            const stele_event *x = stele_page_event(pg, i);
            if (!strcmp(x->stream, "dx-race")) {
                CHECK(x->revision == (uint64_t)nrev && nrev < 200);
                pos_of[nrev++] = x->position;
            } else if (!strcmp(x->stream, "$deletes")) {
                long long rev = -1, tb = -1;
                char dd[256];
                snprintf(dd, sizeof dd, "%.*s", (int)x->data_len, (const char *)x->data);
                CHECK(sscanf(dd, "{\"streamId\":\"dx-race\",\"revision\":%lld,\"truncateBefore\":%lld", &rev,
                             &tb) == 2);
                /* deleted at its last revision: that one before it, the next after */
                CHECK(tb == rev + 1 && rev + 1 == nrev && pos_of[rev] < x->position);
                ndel++;
            }
        }
        uint64_t next;
        int more = stele_page_next(pg, &next) == 1;
        stele_page_free(pg);
        if (!more)
            break;
        from = next;
    }
    printf("deletes racing appends: %d deletes, %d appends\n", deletes, a.n);
    CHECK(nrev == 120 && ndel == deletes);
    passed++;
}

/* Seed 004: the aggregate's state and its event in one transaction; a
 * version conflict and a duplicate event each surface as their own error,
 * and neither writes anything. */
static void test_seed004(stele_db *db, stele_db *db2)
{
    uint8_t id1[16], id2[16];
    stele_uuid_parse("44444444-4444-4444-8444-444444444441", id1);
    stele_uuid_parse("44444444-4444-4444-8444-444444444442", id2);
    stele_snapshot_in state = {.revision = 0, .flags = STELE_EVENT_JSON,
                               .state = "{\"title\":\"Hi\",\"isPublic\":false}", .state_len = 31};
    stele_append_stream s = {.stream = "BlogPost-1", .expected = STELE_NO_STREAM, .state = &state};
    stele_append_record rec = {0, ev("BlogPostCreated", "{\"title\":\"Hi\"}", id1)};
    stele_append_result per;
    stele_multi_result mr;
    CHECK_OK(stele_append_multi(db, &s, 1, &rec, 1, NULL, &per, &mr));
    CHECK(per.first_revision == 0 && !mr.idempotent);
    stele_snapshot *sn;
    CHECK_OK(stele_get_snapshot(db2, "BlogPost-1", STELE_END, &sn));
    CHECK(sn && sn->revision == 0 && sn->state_len == 31);
    stele_free(sn);
    /* Version conflict: another writer's expectation is stale. */
    stele_snapshot_in state2 = {.revision = 1, .flags = STELE_EVENT_JSON,
                                .state = "{\"title\":\"Hi\",\"isPublic\":true}", .state_len = 30};
    stele_append_stream s2 = {.stream = "BlogPost-1", .expected = STELE_NO_STREAM, .state = &state2};
    stele_append_record rec2 = {0, ev("BlogPostPublished", "{}", id2)};
    CHECK_RC(stele_append_multi(db2, &s2, 1, &rec2, 1, NULL, &per, &mr), STELE_EWRONGREV);
    CHECK(mr.failed_stream == 0 && mr.current_revision == 0);
    /* Duplicate: the created event's id again, under a fresh expectation. */
    s2.expected = 0;
    stele_append_record dup = {0, ev("BlogPostPublished", "{}", id1)};
    CHECK_RC(stele_append_multi(db2, &s2, 1, &dup, 1, NULL, &per, &mr), STELE_EIDCONFLICT);
    CHECK_OK(stele_get_snapshot(db, "BlogPost-1", STELE_END, &sn));
    CHECK(sn && sn->revision == 0);
    stele_free(sn);
    /* The real publish. */
    CHECK_OK(stele_append_multi(db2, &s2, 1, &rec2, 1, NULL, &per, &mr));
    CHECK(per.first_revision == 1);
    CHECK_OK(stele_get_snapshot(db, "BlogPost-1", STELE_END, &sn));
    CHECK(sn && sn->revision == 1 && sn->state_len == 30 && !memcmp(sn->state, state2.state, 30));
    stele_free(sn);
    /* The same request again: idempotent. */
    CHECK_OK(stele_append_multi(db, &s2, 1, &rec2, 1, NULL, &per, &mr));
    CHECK(mr.idempotent);
    passed++;
}

/* Seed 003: events of an entity between two sequence numbers; by
 * aggregate type and type in a time range; a user's events over time. */
static void test_seed003(stele_db *db)
{
    const char *meta_a = "{\"userId\":\"alice\",\"correlationId\":\"req-1\"}";
    const char *meta_b = "{\"userId\":\"bob\"}";
    stele_append_result r;
    int64_t t0 = 0;
    for (int i = 0; i < 6; i++) {
        stele_event_in e = ev(i % 2 ? "PriceChanged" : "ProductUpdated", "{}", NULL);
        e.metadata = i % 3 ? meta_b : meta_a;
        e.metadata_len = strlen(e.metadata);
        e.flags |= STELE_META_JSON;
        CHECK_OK(stele_append(db, i < 4 ? "Product-1" : "Product-2", STELE_ANY, &e, 1, &r));
        if (i == 2) {
            stele_page *pg;
            CHECK_OK(stele_read_stream(db, "Product-1", 2, STELE_FORWARDS, 1, &pg));
            t0 = stele_page_event(pg, 0)->created_us;
            stele_page_free(pg);
        }
    }
    stele_event_in other = ev("PriceChanged", "{}", NULL);
    CHECK_OK(stele_append(db, "Order-77", STELE_ANY, &other, 1, &r));
    /* Between sequence numbers 2 and 3 (revisions 1..2). */
    stele_page *pg;
    CHECK_OK(stele_read_stream_to(db, "Product-1", 1, STELE_FORWARDS, 100, 2, &pg));
    CHECK(count(pg) == 2 && stele_page_event(pg, 0)->revision == 1 && stele_page_event(pg, 1)->revision == 2);
    stele_page_free(pg);
    /* Aggregate type Product, type PriceChanged: 3 events (i = 1, 3, 5). */
    stele_query q = {.kind = STELE_QUERY_CATEGORY, .key = "Product", .type = "PriceChanged", .limit = 100};
    CHECK_OK(stele_read_query(db, &q, &pg));
    CHECK(count(pg) == 3);
    for (size_t i = 0; i + 1 < count(pg); i++)
        CHECK(stele_page_event(pg, i)->position < stele_page_event(pg, i + 1)->position);
    stele_page_free(pg);
    /* ... in a time range from the third event on: i = 3, 5. */
    q.has_after = 1;
    q.after_us = t0;
    CHECK_OK(stele_read_query(db, &q, &pg));
    CHECK(count(pg) == 2);
    stele_page_free(pg);
    /* Events of type PriceChanged across aggregates: 4 (Order-77 too). */
    stele_query qt = {.kind = STELE_QUERY_TYPE, .key = "PriceChanged", .limit = 100};
    CHECK_OK(stele_read_query(db, &qt, &pg));
    CHECK(count(pg) == 4);
    stele_page_free(pg);
    /* Paging by position. */
    qt.limit = 3;
    CHECK_OK(stele_read_query(db, &qt, &pg));
    uint64_t next = 0;
    CHECK(count(pg) == 3 && stele_page_next(pg, &next) == 1);
    stele_page_free(pg);
    qt.from = next;
    CHECK_OK(stele_read_query(db, &qt, &pg));
    CHECK(count(pg) == 1);
    stele_page_free(pg);
    /* A user's events over time: alice wrote i = 0, 3 (i % 3 == 0). */
    stele_query qa = {.kind = STELE_QUERY_ACTOR, .key = "alice", .limit = 100};
    CHECK_OK(stele_read_query(db, &qa, &pg));
    CHECK(count(pg) == 2);
    stele_page_free(pg);
    qa.direction = STELE_BACKWARDS;
    qa.from = STELE_END;
    CHECK_OK(stele_read_query(db, &qa, &pg));
    CHECK(count(pg) == 2 && stele_page_event(pg, 0)->position > stele_page_event(pg, 1)->position);
    stele_page_free(pg);
    stele_query qc = {.kind = STELE_QUERY_CORRELATION, .key = "req-1", .limit = 100};
    CHECK_OK(stele_read_query(db, &qc, &pg));
    CHECK(count(pg) == 2);
    stele_page_free(pg);
    /* Tags: matched while $all is read (no index keys a list). */
    const char *tg[2] = {"tag:seed003", "x"};
    stele_event_in te = ev("Tagged", "{}", NULL);
    te.tags = tg;
    te.ntags = 2;
    stele_append_result tr;
    CHECK_OK(stele_append(db, "tagged-1", STELE_ANY, &te, 1, &tr));
    te.ntags = 1;
    CHECK_OK(stele_append(db, "tagged-2", STELE_ANY, &te, 1, &tr));
    stele_query qg = {.kind = STELE_QUERY_TAG, .key = "x", .limit = 100};
    CHECK_OK(stele_read_query(db, &qg, &pg));
    CHECK(count(pg) == 1 && !strcmp(stele_page_event(pg, 0)->stream, "tagged-1"));
    stele_page_free(pg);
    qg.key = "tag:seed003";
    qg.limit = 1;
    CHECK_OK(stele_read_query(db, &qg, &pg));
    uint64_t nx = 0;
    CHECK(count(pg) == 1 && stele_page_next(pg, &nx) == 1);
    stele_page_free(pg);
    qg.from = nx;
    CHECK_OK(stele_read_query(db, &qg, &pg));
    CHECK(count(pg) == 1 && stele_page_event(pg, 0)->position == tr.first_position);
    CHECK(stele_page_next(pg, &nx) == 0);
    stele_page_free(pg);
    passed++;
}

/* A subscriber on one handle sees a commit made through the other (the
 * poller), every event once, in order. */
static void test_subscribe(stele_db *db, stele_db *db2)
{
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    stele_sub *sub;
    CHECK_OK(stele_subscribe_all(db, st.events, NULL, &sub));
    stele_event_in e[3] = {ev("S", "{\"k\":0}", NULL), ev("S", "{\"k\":1}", NULL), ev("S", "{\"k\":2}", NULL)};
    stele_append_result r;
    CHECK_OK(stele_append(db2, "sub-1", STELE_ANY, e, 3, &r));
    size_t got = 0;
    for (int tries = 0; got < 3 && tries < 100; tries++) {
        stele_page *pg = NULL;
        int rc = stele_sub_next(sub, 100, 1000, &pg);
        CHECK(rc == 0);
        for (size_t i = 0; pg && i < count(pg); i++) {
            CHECK(stele_page_event(pg, i)->position == st.events + got);
            got++;
        }
        stele_page_free(pg);
    }
    CHECK(got == 3);
    stele_sub_close(sub);
    passed++;
}

/* Each handle's writer caches what its own commits left; a commit through
 * the other handle makes that stale, and neither a success nor an error
 * may come from the stale copy. */
/* The view streams ($ce-, $et-, $bc-, $streams) numbered by the writer,
 * across two handles (two servers); deletes leave gaps, never renumber;
 * name listing (streams, categories, types) with prefixes and paging
 * (system names: test_names_ddb). */
static uint64_t link_rev(stele_page *pg, size_t i)
{
    const char *view;
    uint64_t rev = STELE_NONE;
    CHECK(stele_page_link(pg, i, &view, &rev) == 1);
    return rev;
}

static void test_views(stele_db *db, stele_db *db2)
{
    stele_page *pg;
    CHECK_RC(stele_read_stream(db, "$ce-vw", 0, STELE_FORWARDS, 10, &pg), STELE_ENOTFOUND);
    stele_event_in a = ev("VwA", "{}", NULL), b = ev("VwB", "{}", NULL);
    const char *m = "{\"$correlationId\":\"corr-vw\"}";
    a.metadata = b.metadata = m;
    a.metadata_len = b.metadata_len = strlen(m);
    a.flags = b.flags = STELE_EVENT_JSON | STELE_META_JSON;
    stele_event_in ab[2] = {a, b};
    stele_append_result r1, r2, r3;
    CHECK_OK(stele_append(db, "vw-1", STELE_NO_STREAM, ab, 2, &r1));
    CHECK_OK(stele_append(db2, "vw-2", STELE_NO_STREAM, &a, 1, &r2));
    CHECK_OK(stele_append(db, "vw-1", STELE_ANY, &b, 1, &r3));
    /* $ce-vw: four events, ordinals 0..3 in position order, through either handle. */
    CHECK_OK(stele_read_stream(db2, "$ce-vw", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 4);
    for (size_t i = 0; i < count(pg) && i < 4; i++)
        CHECK(link_rev(pg, i) == i);
    CHECK(count(pg) == 4 && stele_page_event(pg, 2)->position == r2.first_position);
    CHECK(count(pg) == 4 && !strcmp(stele_page_event(pg, 3)->stream, "vw-1"));
    uint64_t next;
    CHECK(stele_page_next(pg, &next) == 0);
    stele_page_free(pg);
    /* Paging: two at a time, then backwards from the end. */
    CHECK_OK(stele_read_stream(db, "$ce-vw", 1, STELE_FORWARDS, 2, &pg));
    CHECK(count(pg) == 2 && link_rev(pg, 0) == 1 && link_rev(pg, 1) == 2);
    CHECK(stele_page_next(pg, &next) == 1 && next == 3);
    stele_page_free(pg);
    CHECK_OK(stele_read_stream(db, "$ce-vw", STELE_END, STELE_BACKWARDS, 3, &pg));
    CHECK(count(pg) == 3 && link_rev(pg, 0) == 3 && link_rev(pg, 2) == 1);
    CHECK(stele_page_next(pg, &next) == 1 && next == 0);
    stele_page_free(pg);
    /* $et-VwA: revisions 0 (vw-1), 1 (vw-2); $bc-corr-vw: all four. */
    CHECK_OK(stele_read_stream(db, "$et-VwA", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 2 && !strcmp(stele_page_event(pg, 1)->stream, "vw-2") && link_rev(pg, 1) == 1);
    stele_page_free(pg);
    CHECK_OK(stele_read_stream(db, "$bc-corr-vw", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 4);
    stele_page_free(pg);
    /* A soft delete of vw-2 leaves a gap in $ce-vw; the numbers stay. */
    uint64_t cur;
    CHECK_OK(stele_delete_stream(db, "vw-2", STELE_ANY, &cur));
    CHECK_OK(stele_read_stream(db2, "$ce-vw", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 3 && link_rev(pg, 1) == 1 && link_rev(pg, 2) == 3);
    stele_page_free(pg);
    /* $streams: each stream once, under its ordinal, with its first event. */
    CHECK_OK(stele_read_stream(db, "$streams", 0, STELE_FORWARDS, 10000, &pg));
    int seen1 = 0;
    uint64_t prev = 0;
    for (size_t i = 0; i < count(pg); i++) {
        uint64_t o = link_rev(pg, i);
        CHECK(i == 0 || o > prev);
        prev = o;
        if (!strcmp(stele_page_event(pg, i)->stream, "vw-1")) {
            seen1++;
            CHECK(stele_page_event(pg, i)->revision == 0);
        }
        CHECK(strcmp(stele_page_event(pg, i)->stream, "vw-2") != 0); /* deleted */
    }
    CHECK(seen1 == 1);
    stele_page_free(pg);
    /* Names. */
    stele_name_info *nl;
    size_t n;
    CHECK_OK(stele_list_names(db2, STELE_NAMES_STREAMS, "vw-", NULL, 100, 0, &nl, &n));
    CHECK(n == 2 && !strcmp(nl[0].name, "vw-1") && nl[0].count == 3 && !nl[0].deleted);
    CHECK(n == 2 && !strcmp(nl[1].name, "vw-2") && nl[1].deleted && nl[1].last_position == r2.first_position);
    stele_names_free(nl);
    CHECK_OK(stele_list_names(db, STELE_NAMES_STREAMS, "vw-", "vw-1", 100, 0, &nl, &n));
    CHECK(n == 1 && !strcmp(nl[0].name, "vw-2"));
    stele_names_free(nl);
    CHECK_OK(stele_list_names(db, STELE_NAMES_CATEGORIES, "vw", NULL, 100, 0, &nl, &n));
    CHECK(n == 1 && !strcmp(nl[0].name, "vw") && nl[0].count == 4);
    stele_names_free(nl);
    CHECK_OK(stele_list_names(db, STELE_NAMES_TYPES, "Vw", NULL, 1, 0, &nl, &n));
    CHECK(n == 1 && !strcmp(nl[0].name, "VwA") && nl[0].count == 2);
    stele_names_free(nl);
    CHECK_OK(stele_list_names(db, STELE_NAMES_TYPES, "Vw", "VwA", 10, 0, &nl, &n));
    CHECK(n == 1 && !strcmp(nl[0].name, "VwB") && nl[0].count == 2);
    stele_names_free(nl);
    /* The causation index (issue 19): causation_id in metadata. */
    stele_event_in c = ev("Caused", "{}", NULL);
    const char *cm = "{\"causation_id\":\"cause-vw\"}";
    c.metadata = cm;
    c.metadata_len = strlen(cm);
    c.flags |= STELE_META_JSON;
    CHECK_OK(stele_append(db2, "vw-3", STELE_NO_STREAM, &c, 1, &r1));
    stele_query q = {.kind = STELE_QUERY_CAUSATION, .key = "cause-vw", .direction = STELE_FORWARDS, .limit = 10};
    CHECK_OK(stele_read_query(db, &q, &pg));
    CHECK(count(pg) == 1 && stele_page_event(pg, 0)->position == r1.first_position);
    stele_page_free(pg);
    passed++;
}

/* Scavenging: hidden appends become stubs, whole appends only and never
 * a stream's last; stream reads are unchanged, $all skips them (never an
 * error), queries and views lose them, a retry of a scavenged append stays
 * idempotent, loosening retention does not bring them back. A partly
 * hidden append stays; a multi-stream append goes when its events in both
 * streams are hidden. */
static void test_scavenge(stele_db *db, stele_db *db2)
{
    uint8_t ids[3][16];
    for (int i = 0; i < 3; i++)
        CHECK_OK(stele_uuid_parse(i == 0 ? "44444444-4444-4444-8444-444444444401"
                                  : i == 1 ? "44444444-4444-4444-8444-444444444402"
                                           : "44444444-4444-4444-8444-444444444403", ids[i]));
    stele_event_in e[5];
    for (int i = 0; i < 5; i++)
        e[i] = ev("Scv", "{\"x\":1}", i < 3 ? ids[i] : NULL);
    stele_append_result r1, r2, r;
    CHECK_OK(stele_append(db, "scv-1", STELE_NO_STREAM, e, 3, &r1));
    CHECK_OK(stele_append(db, "scv-1", 2, e + 3, 2, &r2));
    CHECK_OK(stele_append(db2, "scv-2", STELE_NO_STREAM, e + 3, 2, &r));
    uint64_t cur;
    CHECK_OK(stele_tombstone_stream(db2, "scv-2", STELE_ANY, &cur));
    stele_stream_metadata md = {.max_count = 2};
    uint64_t ver;
    CHECK_OK(stele_set_stream_metadata(db, "scv-1", &md, STELE_ANY, &ver));
    stele_scavenge_result res;
    CHECK_OK(stele_scavenge(db, NULL, &res));
    /* scv-1's first append (3 events); scv-2's only append is its last */
    CHECK(res.events_removed >= 3 && res.segments_rewritten >= 1);
    CHECK(res.bytes_removed >= 3 * 7);
    /* Again: nothing more to do for these two. */
    stele_scavenge_result res2;
    CHECK_OK(stele_scavenge(db2, NULL, &res2));
    CHECK(res2.events_removed == 0);
    stele_page *pg;
    CHECK_OK(stele_read_stream(db2, "scv-1", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 2 && stele_page_event(pg, 0)->revision == 3);
    stele_page_free(pg);
    /* $all over the range: scv-1's two visible events and scv-2's kept
     * last append (as on the local engine), no error. */
    CHECK_OK(stele_read_all(db, r1.first_position, STELE_FORWARDS, 7, &pg));
    size_t n1 = 0, n2 = 0;
    for (size_t i = 0; i < count(pg); i++) {
        n1 += !strcmp(stele_page_event(pg, i)->stream, "scv-1");
        n2 += !strcmp(stele_page_event(pg, i)->stream, "scv-2");
    }
    CHECK(n1 == 2 && n2 == 2);
    CHECK(stele_page_event(pg, 0)->position == r2.first_position);
    stele_page_free(pg);
    CHECK_OK(stele_read_stream(db, "$ce-scv", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 2 && link_rev(pg, 0) == 3 && link_rev(pg, 1) == 4);
    stele_page_free(pg);
    /* The first append again: still its idempotent success. */
    CHECK_OK(stele_append(db2, "scv-1", STELE_NO_STREAM, e, 3, &r));
    CHECK(r.idempotent && r.first_position == r1.first_position);
    /* Retention loosened: the stubs stay hidden. */
    md.max_count = 0;
    CHECK_OK(stele_set_stream_metadata(db, "scv-1", &md, STELE_ANY, &ver));
    CHECK_OK(stele_read_stream(db, "scv-1", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 2 && stele_page_event(pg, 0)->revision == 3);
    stele_page_free(pg);
    CHECK_OK(stele_read_stream(db, "scv-1", STELE_END, STELE_BACKWARDS, 10, &pg));
    CHECK(count(pg) == 2 && stele_page_event(pg, 1)->revision == 3);
    stele_page_free(pg);
    /* A partly hidden append stays whole: revisions 0..2 then 3..4 with
     * maxCount 4 hide revision 0 only. */
    CHECK_OK(stele_append(db, "scv-3", STELE_NO_STREAM, e + 3, 2, &r));
    CHECK_OK(stele_append(db, "scv-3", 1, e + 3, 2, &r));
    CHECK_OK(stele_append(db, "scv-3", 3, e + 3, 1, &r));
    md.max_count = 4;
    CHECK_OK(stele_set_stream_metadata(db, "scv-3", &md, STELE_ANY, &ver));
    CHECK_OK(stele_scavenge(db, NULL, &res));
    CHECK(res.events_removed == 0);
    md.max_count = 3; /* now revisions 0 and 1: the first append */
    CHECK_OK(stele_set_stream_metadata(db, "scv-3", &md, STELE_ANY, &ver));
    CHECK_OK(stele_scavenge(db2, NULL, &res));
    CHECK(res.events_removed == 2);
    /* A multi-stream append (2 + 1 events), then one more event each. */
    stele_append_stream ms[2] = {{.stream = "scvm-a", .expected = STELE_NO_STREAM},
                                 {.stream = "scvm-b", .expected = STELE_NO_STREAM}};
    stele_append_record mrec[3] = {{0, e[3]}, {1, e[4]}, {0, e[4]}};
    stele_append_result per[2];
    stele_multi_result mr;
    CHECK_OK(stele_append_multi(db, ms, 2, mrec, 3, NULL, per, &mr));
    CHECK_OK(stele_append(db, "scvm-a", STELE_ANY, e + 3, 1, &r));
    CHECK_OK(stele_append(db2, "scvm-b", STELE_ANY, e + 3, 1, &r));
    CHECK_OK(stele_delete_stream(db, "scvm-a", STELE_ANY, NULL));
    CHECK_OK(stele_scavenge(db, NULL, &res));
    CHECK(res.events_removed == 0); /* scvm-b's part is visible */
    CHECK_OK(stele_delete_stream(db2, "scvm-b", STELE_ANY, NULL));
    CHECK_OK(stele_scavenge(db, NULL, &res));
    CHECK(res.events_removed == 3); /* the whole multi-stream append */
    CHECK_OK(stele_read_all(db, mr.first_position, STELE_FORWARDS, 3, &pg));
    CHECK(count(pg) >= 1 && stele_page_event(pg, 0)->position > mr.last_position);
    stele_page_free(pg);
    CHECK_OK(stele_scavenge(db, NULL, &res));
    CHECK(res.events_removed == 0);
    passed++;
}

static void test_stale_cache(stele_db *db, stele_db *db2)
{
    stele_event_in e = ev("C", "{}", NULL);
    stele_append_result r;
    CHECK_OK(stele_append(db, "cache-1", STELE_NO_STREAM, &e, 1, &r));  /* db caches rev 0 */
    CHECK_OK(stele_append(db2, "cache-1", 0, &e, 1, &r));               /* now rev 1 */
    CHECK_OK(stele_append(db, "cache-1", 1, &e, 1, &r));                /* db must not say 0 */
    CHECK(r.first_revision == 2);
    CHECK_OK(stele_append(db2, "cache-1", STELE_ANY, &e, 1, &r));       /* rev 3 */
    CHECK_RC(stele_append(db, "cache-1", 2, &e, 1, &r), STELE_EWRONGREV);
    CHECK(r.current_revision == 3);
    uint64_t cur;
    CHECK_OK(stele_tombstone_stream(db2, "cache-1", STELE_ANY, &cur));
    CHECK_RC(stele_append(db, "cache-1", STELE_ANY, &e, 1, &r), STELE_EDELETED);
    passed++;
}

/* Credentials from the shared credentials file (AWS_SHARED_CREDENTIALS_FILE
 * and AWS_PROFILE) when the environment has none: the handle reaches the
 * same tables (DynamoDB Local keeps one database per access key); with
 * neither, the open fails with a message naming what is missing. */
static void test_creds_file(void)
{
    /* No other handle is open: their threads must not read the
     * environment while it changes. */
    stele_db *db;
    CHECK_OK(stele_open(uri, NULL, &db));
    stele_event_in e = ev("Cred", "{}", NULL);
    stele_append_result r;
    CHECK_OK(stele_append(db, "creds-1", STELE_NO_STREAM, &e, 1, &r));
    stele_close(db);
    char *key = strdup(getenv("AWS_ACCESS_KEY_ID")), *secret = strdup(getenv("AWS_SECRET_ACCESS_KEY"));
    char path[] = "/tmp/stele-creds-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "[default]\naws_access_key_id = AKIDNOTTHISONE\naws_secret_access_key = x\n\n"
               "[stele-test]\naws_access_key_id = %s\naws_secret_access_key = %s\n", key, secret);
    fclose(f);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    setenv("AWS_PROFILE", "stele-test", 1);
    stele_db *db3;
    CHECK_OK(stele_open(uri, NULL, &db3));
    stele_page *pg;
    CHECK_OK(stele_read_stream(db3, "creds-1", 0, STELE_FORWARDS, 10, &pg));
    CHECK(count(pg) == 1 && stele_page_event(pg, 0)->position == r.first_position);
    stele_page_free(pg);
    stele_close(db3);
    /* Neither in the environment nor in a file. */
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/stele-creds", 1);
    int rc = stele_open(uri, NULL, &db3);
    CHECK(rc == STELE_EINVAL && strstr(stele_errmsg(), "access key") != NULL);
    if (rc == 0)
        stele_close(db3);
    unlink(path);
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    unsetenv("AWS_PROFILE");
    setenv("AWS_ACCESS_KEY_ID", key, 1);
    setenv("AWS_SECRET_ACCESS_KEY", secret, 1);
    free(key);
    free(secret);
    passed++;
}

static void test_bad_uri(void)
{
    stele_db *db = NULL;
    CHECK_RC(stele_open("dynamodb://bad prefix?endpoint=http://127.0.0.1:1", NULL, &db), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "prefix") != NULL);
    CHECK_RC(stele_open("dynamodb://p?endpoint=ftp://x", NULL, &db), STELE_EINVAL);
    CHECK_RC(stele_open("dynamodb://p?endpoint=http://127.0.0.1:1&bogus=1", NULL, &db), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "bogus") != NULL);
    /* Nothing listens: a clear I/O error naming the endpoint. */
    CHECK_RC(stele_open("dynamodb://p?endpoint=http://127.0.0.1:1", NULL, &db), STELE_EIO);
    CHECK(strstr(stele_errmsg(), "127.0.0.1:1") != NULL);
    CHECK(db == NULL);
    passed++;
}

int main(void)
{
    const char *endpoint = getenv("STELE_DDB_ENDPOINT");
    if (!endpoint) {
        fprintf(stderr, "test_ddb: STELE_DDB_ENDPOINT not set (tests/ddb/run.sh sets it)\n");
        return 1;
    }
    snprintf(uri, sizeof uri, "dynamodb://t%llu?endpoint=%s&region=us-east-1",
             (unsigned long long)(t_seed() % 1000000000ull), endpoint);
    stele_db *db, *db2;
    CHECK_OK(stele_open(uri, NULL, &db));
    CHECK_OK(stele_open(uri, NULL, &db2));
    test_bad_uri();
    test_expected(db);
    test_idempotent(db, db2);
    test_limits(db);
    test_feed(db, db2);
    test_delete_meta_snap(db);
    test_deletes_feed(db, db2);
    test_seed004(db, db2);
    test_seed003(db);
    test_subscribe(db, db2);
    test_stale_cache(db, db2);
    test_views(db, db2);
    test_scavenge(db, db2);
    stele_close(db2);
    stele_close(db);
    test_creds_file();
    return t_done("test_ddb", passed);
}
