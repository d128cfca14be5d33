/*
 * test_scavenge_shared.c - scavenging commits whose records share names.
 *
 * A compact event record (kind 9, docs/file-format.md) names its stream and
 * type by a reference to an earlier record of the same commit, the one that
 * holds them. Scavenging keeps whole commits, so a commit whose holder is
 * hidden (truncate-before, a deleted stream in a multi-stream commit) keeps
 * that record, and its other records still decode. Checked here: every read
 * path (stream forwards and backwards, one event at a time by revision and
 * by position, by type, $all) sees the right stream and type for each event,
 * before and after a scavenge, after reopening, after an index rebuild from
 * the scavenged log, and `stele check` passes. Event data is
 * "stream|type|revision", so each event carries its own expected names.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEG (64u * 1024u)

static stele_db *open_db(const char *dir)
{
    stele_options o = {.segment_size = SEG};
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

static void check_store(const char *dir)
{
    char report[1024];
    CHECK_OK(stele_check(dir, report, sizeof report));
}

/* Filler in "fill-1", so the commits above end up in sealed segments the
 * scavenger may rewrite. */
static void fill(stele_db *db, int n)
{
    static uint8_t data[1000];
    memset(data, 'f', sizeof data);
    stele_event_in ev = {.type = "Filler", .data = data, .data_len = sizeof data};
    for (int i = 0; i < n; i++)
        CHECK_OK(stele_append(db, "fill-1", STELE_ANY, &ev, 1, NULL));
}

/* Every event of a page names the stream and type its data says
 * ("stream|type|revision"); returns how many there were. */
static size_t shared_page_ok(stele_page *pg)
{
    size_t n = stele_page_count(pg);
    for (size_t i = 0; i < n; i++) {
        const stele_event *e = stele_page_event(pg, i);
        char want[128];
        int k = snprintf(want, sizeof want, "%.*s|%.*s|%llu", (int)e->stream_len, e->stream,
                         (int)e->type_len, e->type, (unsigned long long)e->revision);
        if ((e->stream_len >= 5 && !memcmp(e->stream, "fill-", 5)) || e->stream[0] == '$')
            continue; /* filler and the deletes' events */
        if ((size_t)k != e->data_len || memcmp(want, e->data, e->data_len)) {
            fprintf(stderr, "event at %llu: data %.*s, read as %s\n",
                    (unsigned long long)e->position, (int)e->data_len, (const char *)e->data,
                    want);
            CHECK(0);
        }
    }
    return n;
}

static void shared_batch(stele_db *db, const char *stream, uint64_t first, size_t n)
{
    stele_event_in ev[16];
    char data[16][128];
    static const char *types[] = {"Shared-A", "Shared-B"};
    for (size_t i = 0; i < n; i++) {
        const char *t = types[(i / 2) % 2];
        int k = snprintf(data[i], sizeof data[i], "%s|%s|%llu", stream, t,
                         (unsigned long long)(first + i));
        ev[i] = (stele_event_in){.type = t, .data = data[i], .data_len = (size_t)k};
    }
    CHECK_OK(stele_append(db, stream, STELE_ANY, ev, n, NULL));
}

/* Reads of every path see the right stream and type for each event. */
static void shared_verify(stele_db *db)
{
    stele_page *pg;
    /* keep-1: revisions 5..9 left (truncate-before 5); its commit's first
     * record, which holds the names, is hidden but kept. */
    for (int bw = 0; bw < 2; bw++) {
        CHECK_OK(stele_read_stream(db, "keep-1", bw ? 9 : 0, bw, 100, &pg));
        CHECK(shared_page_ok(pg) == 5);
        CHECK(stele_page_count(pg) == 5 && stele_page_event(pg, 0)->revision == (bw ? 9u : 5u));
        stele_page_free(pg);
    }
    /* mk-b: its records name their type by mk-a's (deleted) records. */
    CHECK_OK(stele_read_stream(db, "mk-b", 0, 0, 100, &pg));
    CHECK(shared_page_ok(pg) == 2);
    stele_page_free(pg);
    CHECK_RC(stele_read_stream(db, "mk-a", 0, 0, 100, &pg), STELE_ENOTFOUND);
    /* One at a time: each read starts inside the commit, by revision and
     * by position ($all, forwards and backwards). */
    for (uint64_t rev = 5; rev < 10; rev++) {
        CHECK_OK(stele_read_stream(db, "keep-1", rev, 0, 1, &pg));
        CHECK(shared_page_ok(pg) == 1);
        uint64_t pos = stele_page_count(pg) ? stele_page_event(pg, 0)->position : 0;
        stele_page_free(pg);
        for (int bw = 0; bw < 2; bw++) {
            CHECK_OK(stele_read_all(db, pos, bw, 1, &pg));
            CHECK(shared_page_ok(pg) == 1 && stele_page_event(pg, 0)->position == pos);
            stele_page_free(pg);
        }
    }
    /* By type (runs that start inside commits) and $all. */
    stele_query q;
    memset(&q, 0, sizeof q);
    q.kind = STELE_QUERY_TYPE;
    q.key = "Shared-B";
    q.limit = 1000;
    CHECK_OK(stele_read_query(db, &q, &pg));
    CHECK(shared_page_ok(pg) == 2); /* keep-1 6 and 7 (gone-1 is deleted) */
    stele_page_free(pg);
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 100000, &pg));
    shared_page_ok(pg);
    stele_page_free(pg);
}

/* Scavenging keeps whole commits, so a commit whose first record (the one
 * holding the stream name and type its other records share) is hidden
 * keeps that record: the rest still decode, read, check and rebuild. */
static void test_shared_holder(void)
{
    const char *dir = t_tmpdir("scav-shared");
    stele_db *db = open_db(dir);
    shared_batch(db, "gone-1", 0, 10);
    shared_batch(db, "keep-1", 0, 10);
    shared_batch(db, "gone-1", 10, 10);
    /* A multi-stream commit: A, B, A, B (mk-b's records take the type
     * from mk-a's first one). */
    stele_append_stream ms[2] = {{"mk-a", STELE_ANY, NULL}, {"mk-b", STELE_ANY, NULL}};
    stele_append_record mr[4];
    char data[4][64];
    for (int j = 0; j < 4; j++) {
        const char *s = j % 2 ? "mk-b" : "mk-a";
        int k = snprintf(data[j], sizeof data[j], "%s|Moved|%d", s, j / 2);
        mr[j] = (stele_append_record){(size_t)(j % 2), {.type = "Moved", .data = data[j],
                                                         .data_len = (size_t)k}};
    }
    stele_multi_result mres;
    CHECK_OK(stele_append_multi(db, ms, 2, mr, 4, NULL, NULL, &mres));
    stele_stream_metadata md;
    memset(&md, 0, sizeof md);
    md.truncate_before = 5;
    CHECK_OK(stele_set_stream_metadata(db, "keep-1", &md, STELE_ANY, NULL));
    CHECK_OK(stele_delete_stream(db, "gone-1", STELE_ANY, NULL));
    CHECK_OK(stele_delete_stream(db, "mk-a", STELE_ANY, NULL));
    fill(db, 800);
    shared_verify(db);
    stele_scavenge_result res;
    CHECK_OK(stele_scavenge(db, NULL, &res));
    /* gone-1's first commit (its last stays); keep-1's and the multi
     * commit stay whole. */
    CHECK(res.events_removed == 10 && res.segments_rewritten >= 1);
    shared_verify(db);
    stele_close(db);
    check_store(dir);
    db = open_db(dir);
    shared_verify(db);
    stele_close(db);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/index'", dir);
    CHECK(system(cmd) == 0);
    db = open_db(dir);
    shared_verify(db);
    stele_close(db);
    check_store(dir);
    t_rmdir(dir);
}

int main(void)
{
    setenv("STELE_INDEX_MAP_MB", "256", 0);
    t_seed();
    test_shared_holder();
    return t_done("test_scavenge_shared", 1);
}
