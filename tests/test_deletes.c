/*
 * test_deletes.c - stream deletes and tombstones as `$streamDeleted`
 * events of `$deletes` in the local engine (docs/file-format.md "Stream
 * deletes as events", docs/projections.md "$deleted"):
 *   - a delete takes the next position; `$all`, `$deletes` and the views
 *     show its event with the documented data; stele_check passes;
 *   - an index rebuilt from the log (index directory removed) gives the
 *     same deleted / tombstoned states;
 *   - scavenging keeps the delete events and the deletes stay applied;
 *   - a backup restored (whole, and cut right before a delete) holds the
 *     deletes it should and no other;
 *   - a store written before the change (a kind 2 delete record, made here
 *     by hand) still opens with the stream deleted, and no event for it;
 *   - nobody but the store writes `$deletes`.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/record.h"
#include "os/os.h"
#include "util/shared.h"

static int passed;

static void append(stele_db *db, const char *stream, int n)
{
    stele_event_in ev[4];
    for (int i = 0; i < n; i++)
        ev[i] = (stele_event_in){.type = "Happened", .data = "{}", .data_len = 2,
                                 .flags = STELE_EVENT_JSON};
    CHECK_OK(stele_append(db, stream, STELE_ANY, ev, (size_t)n, NULL));
}

static void check_store(const char *dir)
{
    char report[1024] = "";
    int rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "check %s: %s\n%s\n", dir, stele_errmsg(), report);
    CHECK_OK(rc);
}

/* "deleted" / "tombstoned" / "live" / "none" */
static const char *state_of(stele_db *db, const char *stream)
{
    stele_stream_info info;
    int rc = stele_stream_head(db, stream, &info);
    if (rc == STELE_ENOTFOUND)
        return "none";
    CHECK_OK(rc);
    return info.tombstoned ? "tombstoned" : info.deleted ? "deleted" : "live";
}

/* The data of $deletes' events, joined by '|'. */
static void deletes_of(stele_db *db, char *out, size_t cap)
{
    out[0] = 0;
    stele_page *pg;
    int rc = stele_read_stream(db, "$deletes", 0, STELE_FORWARDS, 1000, &pg);
    if (rc == STELE_ENOTFOUND)
        return;
    CHECK_OK(rc);
    size_t used = 0;
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        CHECK(!strcmp(e->type, "$streamDeleted") && e->revision == i &&
              (e->flags & STELE_EVENT_JSON));
        int n = snprintf(out + used, cap - used, "%s%.*s", i ? "|" : "", (int)e->data_len,
                         (const char *)e->data);
        if (n > 0 && (size_t)n < cap - used)
            used += (size_t)n;
    }
    stele_page_free(pg);
}

static const char want_deletes[] =
    "{\"streamId\":\"Order-1\",\"revision\":2,\"truncateBefore\":3,\"tombstone\":false}|"
    "{\"streamId\":\"Order-2\",\"revision\":0,\"truncateBefore\":null,\"tombstone\":true}|"
    "{\"streamId\":\"Odd \\\"q\\\\-3\",\"revision\":1,\"truncateBefore\":2,\"tombstone\":false}";

static void expect_states(stele_db *db)
{
    CHECK(!strcmp(state_of(db, "Order-1"), "deleted"));
    CHECK(!strcmp(state_of(db, "Order-2"), "tombstoned"));
    CHECK(!strcmp(state_of(db, "Odd \"q\\-3"), "deleted"));
    CHECK(!strcmp(state_of(db, "Order-4"), "live"));
    char got[2048];
    deletes_of(db, got, sizeof got);
    if (strcmp(got, want_deletes)) {
        fprintf(stderr, "$deletes: %s\nwant: %s\n", got, want_deletes);
        CHECK(0);
    }
}

/* The store of the first cases: 3 + 1 + 2 + 1 events, 3 deletes. */
static void fill(stele_db *db)
{
    append(db, "Order-1", 2); /* two commits: scavenging may take the first */
    append(db, "Order-1", 1);
    append(db, "Order-2", 1);
    append(db, "Odd \"q\\-3", 2);
    uint64_t cur;
    CHECK_OK(stele_delete_stream(db, "Order-1", STELE_ANY, &cur));
    CHECK(cur == 2);
    uint64_t head;
    CHECK_OK(stele_position_head(db, &head));
    CHECK(head == 7); /* events 0..5, the delete at 6 */
    CHECK_OK(stele_tombstone_stream(db, "Order-2", 0, &cur));
    CHECK_OK(stele_delete_stream(db, "Odd \"q\\-3", 1, &cur));
    append(db, "Order-4", 1);
}

static void test_basics(void)
{
    const char *dir = t_tmpdir("deletes");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    fill(db);
    expect_states(db);
    /* $all: the deletes in commit order, at their positions */
    stele_page *pg;
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 100, &pg));
    CHECK(stele_page_count(pg) == 10);
    const stele_event *e = stele_page_event(pg, 6);
    CHECK(e->position == 6 && !strcmp(e->stream, "$deletes") && e->revision == 0);
    CHECK(!strcmp(stele_page_event(pg, 7)->stream, "$deletes"));
    CHECK(!strcmp(stele_page_event(pg, 8)->stream, "$deletes"));
    CHECK(!strcmp(stele_page_event(pg, 9)->stream, "Order-4"));
    /* the metadata is the removes block of record.h */
    rec r = {.kind = REC_EVENT, .flags = REC_REMOVES, .meta = e->metadata,
             .meta_len = (uint32_t)e->metadata_len};
    rec_removes rm;
    CHECK(rec_removes_decode(&r, &rm) == 0 && rm.kind == REC_DELETE && rm.truncate_before == 3 &&
          rm.last_rev == 2 && rm.stream_len == 7 && !memcmp(rm.stream, "Order-1", 7));
    stele_page_free(pg);
    /* the views: category $deletes, type $streamDeleted */
    CHECK_OK(stele_read_stream(db, "$et-$streamDeleted", 0, STELE_FORWARDS, 100, &pg));
    CHECK(stele_page_count(pg) == 3);
    stele_page_free(pg);
    /* nobody else writes $deletes */
    stele_event_in ev = {.type = "$streamDeleted", .data = "{}", .data_len = 2};
    CHECK_RC(stele_append(db, "$deletes", STELE_ANY, &ev, 1, NULL), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "reserved") != NULL);
    CHECK_RC(stele_delete_stream(db, "$deletes", STELE_ANY, NULL), STELE_EINVAL);
    stele_append_record rec1 = {.stream = 0, .event = ev};
    stele_append_stream ms = {.stream = "$deletes", .expected = STELE_ANY};
    stele_append_result per;
    stele_multi_result mres;
    CHECK_RC(stele_append_multi(db, &ms, 1, &rec1, 1, NULL, &per, &mres), STELE_EINVAL);
    stele_close(db);
    check_store(dir);

    /* the index rebuilt from the log alone */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/index'", dir);
    CHECK(system(cmd) == 0);
    CHECK_OK(stele_open(dir, NULL, &db));
    expect_states(db);
    /* a stream soft-deleted and recreated, then deleted again */
    append(db, "Order-1", 1);
    CHECK(!strcmp(state_of(db, "Order-1"), "live"));
    stele_close(db);
    check_store(dir);
    t_rmdir(dir);
    passed++;
}

static void test_scavenge_and_restore(void)
{
    const char *dir = t_tmpdir("deletes-scav"), *bk = t_tmpdir("deletes-bk"),
               *rs = t_tmpdir("deletes-rs"), *rs2 = t_tmpdir("deletes-rs2"),
               *bk1 = t_tmpdir("deletes-bk1");
    stele_options o = {.segment_size = 64 * 1024};
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    fill(db);
    /* a backup before scavenging, to restore up to a point inside it */
    stele_backup_result br;
    CHECK_OK(stele_backup(db, bk1, NULL, &br));
    /* seal the segment holding them, then scavenge: the deleted streams'
     * events go, their deletes stay */
    char big[2000];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 120; i++) {
        stele_event_in ev = {.type = "Filler", .data = big, .data_len = sizeof big};
        CHECK_OK(stele_append(db, "Filler", STELE_ANY, &ev, 1, NULL));
    }
    stele_scavenge_result sr;
    CHECK_OK(stele_scavenge(db, NULL, &sr));
    CHECK(sr.events_removed > 0);
    expect_states(db);
    CHECK_OK(stele_backup(db, bk, NULL, &br));
    stele_close(db);
    check_store(dir);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/index'", dir);
    CHECK(system(cmd) == 0);
    CHECK_OK(stele_open(dir, &o, &db));
    expect_states(db);
    stele_close(db);

    /* restored whole: the same deletes */
    stele_restore_result rr;
    CHECK_OK(stele_restore(bk, rs, NULL, &rr));
    CHECK_OK(stele_open(rs, &o, &db));
    expect_states(db);
    stele_close(db);
    check_store(rs);
    /* restored up to position 6 (the first delete): that delete and not
     * the tombstone after it */
    stele_restore_options ro = {.flags = STELE_RESTORE_TO_POSITION, .to_position = 6};
    CHECK_OK(stele_restore(bk1, rs2, &ro, &rr));
    CHECK(rr.end_position == 7);
    CHECK_OK(stele_open(rs2, &o, &db));
    CHECK(!strcmp(state_of(db, "Order-1"), "deleted"));
    CHECK(!strcmp(state_of(db, "Order-2"), "live"));
    char got[2048];
    deletes_of(db, got, sizeof got);
    CHECK(!strcmp(got, "{\"streamId\":\"Order-1\",\"revision\":2,\"truncateBefore\":3,"
                       "\"tombstone\":false}"));
    stele_close(db);
    check_store(rs2);
    t_rmdir(dir);
    t_rmdir(bk);
    t_rmdir(rs);
    t_rmdir(rs2);
    t_rmdir(bk1);
    passed++;
}

/* A store written before deletes were events: a kind 2 (delete) record
 * after the events, as the writer wrote it then. */
static void test_old_store(void)
{
    const char *dir = t_tmpdir("deletes-old");
    stele_db *db;
    /* Written as then: no hash chain either (it begins at the first commit
     * of the reopened store below). */
    stele_options old = {.flags = STELE_OPEN_NO_CHAIN};
    CHECK_OK(stele_open(dir, &old, &db));
    append(db, "Old-1", 2);
    append(db, "Old-2", 1);
    stele_close(db);
    char path[4200];
    snprintf(path, sizeof path, "%s/log/00000000.seg", dir);
    FILE *f = fopen(path, "r+b");
    if (!f) {
        snprintf(path, sizeof path, "%s/00000000.seg", dir);
        f = fopen(path, "r+b");
    }
    CHECK(f != NULL);
    if (!f)
        return;
    static uint8_t seg[1 << 20];
    size_t n = fread(seg, 1, sizeof seg, f);
    uint64_t off = SEG_HEADER_SIZE;
    for (;;) {
        rec r;
        const char *why;
        if (rec_decode_in(seg, off, n - off, &r, &why) != REC_OK)
            break;
        off += r.len;
    }
    uint8_t m[256];
    size_t len = rec_encode_marker(m, REC_DELETE, "Old-1", 5, 2, 1, time_now_us());
    CHECK(fseek(f, (long)off, SEEK_SET) == 0 && fwrite(m, 1, len, f) == len);
    fclose(f);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/index'", dir);
    CHECK(system(cmd) == 0);
    CHECK_OK(stele_open(dir, NULL, &db));
    CHECK(!strcmp(state_of(db, "Old-1"), "deleted"));
    CHECK(!strcmp(state_of(db, "Old-2"), "live"));
    char got[256];
    deletes_of(db, got, sizeof got);
    CHECK(!strcmp(got, "")); /* an old delete has no event */
    /* a new delete after it is an event as usual */
    CHECK_OK(stele_delete_stream(db, "Old-2", STELE_ANY, NULL));
    deletes_of(db, got, sizeof got);
    CHECK(!strcmp(got, "{\"streamId\":\"Old-2\",\"revision\":0,\"truncateBefore\":1,"
                       "\"tombstone\":false}"));
    stele_close(db);
    check_store(dir);
    t_rmdir(dir);
    passed++;
}

int main(void)
{
    t_seed();
    test_basics();
    test_scavenge_and_restore();
    test_old_store();
    return t_done("test_deletes", passed);
}
