/*
 * test_record_compat.c - a store written in the previous record format
 * (kind 1 event records, as every build before the compact record wrote)
 * opens, reads, checks, indexes, backs up, restores and scavenges the same
 * under a build that writes compact records (kind 8), and the two formats
 * live side by side in one log. The old part is written by this build with
 * STELE_RECORD_KIND's switch (rec_set_event_kind): its kind 1 records are
 * byte for byte the previous build's (test_record.c's test_golden pins
 * them against that build's output).
 *
 *   1. kind 1: appends (single and batched, tags, metadata, client and
 *      ULID ids), a multi-stream commit with a state snapshot, stream
 *      metadata, a snapshot, a soft delete, over 64 KiB segments. Every
 *      event record on disk is kind 1. A dump of every read is taken.
 *   2. kind 8: the same store opens and dumps identically; stele_check
 *      passes; the same workload again (continuing the old streams and
 *      new ones). Old segments are byte for byte what they were; the new
 *      event records are kind 8 and fewer bytes per event.
 *  2b. kind 9 (shared names, the default): the store of both opens and
 *      dumps identically, the workload a third time, in fewer bytes than
 *      the kind 8 part; kinds 1, 8 and 9 side by side from here on.
 *   3. the index dropped and rebuilt from the mixed log: the same dump;
 *   4. backup, verify, restore into a new directory: the same dump;
 *   5. deletes of streams written in both formats, filler so they are in
 *      sealed segments, scavenge: events were removed, every read of what
 *      stays visible is the same as before the scavenge, after reopening
 *      and after an index rebuild; stele_check passes.
 */
#include "testutil.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log/record.h"
#include "util/util.h"

#define SEG (64u * 1024u)

/* ---------------------------------------------------------------- dumps */

typedef struct dbuf {
    char *p;
    size_t len, cap;
} dbuf;

static void put(dbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 4096;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    if (n) /* p may be NULL for nothing (an empty field) */
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void putf(dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(dbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put(b, tmp, (size_t)n);
}

static void put_event(dbuf *b, const stele_event *e)
{
    putf(b, "E %" PRIu64 " %.*s %" PRIu64 " %.*s %u %" PRId64 " ", e->position,
         (int)e->stream_len, e->stream, e->revision, (int)e->type_len, e->type, e->flags,
         e->created_us);
    put(b, e->id, 16);
    putf(b, " d%zu:", e->data_len);
    put(b, e->data, e->data_len);
    putf(b, " m%zu:", e->metadata_len);
    put(b, e->metadata, e->metadata_len);
    for (size_t i = 0; i < e->ntags; i++)
        putf(b, " t:%s", e->tags[i]);
    put(b, "\n", 1);
}

/* In the scavenge step, the streams with deleted events (the step's
 * deletes and the workload's soft deletes): $all and queries return those
 * events until a scavenge removes them, so their dumps leave these streams
 * out there (stream reads, which hide them all along, stay in). */
static int skip_deleted;

static int skipped(const stele_event *e)
{
    static const char *const del[] = {"Cart-0", "Cart-9", "Temp-0", "Temp-9"};
    for (size_t i = 0; skip_deleted && i < sizeof del / sizeof del[0]; i++)
        if (e->stream_len == strlen(del[i]) && !memcmp(e->stream, del[i], e->stream_len))
            return 1;
    return 0;
}

/* Every page of $all forwards and backwards. */
static void dump_all(stele_db *db, dbuf *b)
{
    for (int dir = 0; dir < 2; dir++) {
        uint64_t from = dir ? STELE_END : 0;
        for (;;) {
            stele_page *pg;
            CHECK_OK(stele_read_all(db, from, dir ? STELE_BACKWARDS : 0, 97, &pg));
            for (size_t i = 0; i < stele_page_count(pg); i++)
                if (!skipped(stele_page_event(pg, i)))
                    put_event(b, stele_page_event(pg, i));
            int more = stele_page_next(pg, &from) == 1;
            stele_page_free(pg);
            if (!more)
                break;
        }
    }
}

static void dump_stream(stele_db *db, dbuf *b, const char *s)
{
    putf(b, "S %s\n", s);
    stele_stream_info info;
    int rc = stele_stream_head(db, s, &info);
    putf(b, "head %d", rc);
    if (rc == 0)
        putf(b, " %" PRIu64 " %" PRIu64 " %" PRIu64 " %d %d\n", info.last_revision,
             info.last_position, info.truncate_before, info.deleted, info.tombstoned);
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        rc = stele_read_stream(db, s, from, 0, 50, &pg);
        putf(b, "read %d\n", rc);
        if (rc)
            break;
        for (size_t i = 0; i < stele_page_count(pg); i++)
            put_event(b, stele_page_event(pg, i));
        int more = stele_page_next(pg, &from) == 1;
        stele_page_free(pg);
        if (!more)
            break;
    }
    stele_snapshot *snap = NULL;
    rc = stele_get_snapshot(db, s, STELE_END, &snap);
    putf(b, "snap %d", rc);
    if (rc == 0 && snap) {
        putf(b, " %" PRIu64 " %u %u %" PRId64 " ", snap->revision, snap->schema_version,
             snap->flags, snap->created_us);
        put(b, snap->state, snap->state_len);
    }
    stele_free(snap);
    stele_stream_metadata *md = NULL;
    rc = stele_get_stream_metadata(db, s, &md);
    putf(b, "\nmeta %d", rc);
    if (rc == 0 && md) {
        putf(b, " %" PRIu64 " %" PRIu64 " %" PRIu64 " ", md->max_age_us, md->max_count,
             md->truncate_before);
        put(b, md->custom, md->custom_len);
    }
    stele_free(md);
    put(b, "\n", 1);
}

static void dump_query(stele_db *db, dbuf *b, int kind, const char *key)
{
    stele_query q;
    memset(&q, 0, sizeof q);
    q.kind = kind;
    q.key = key;
    q.limit = 64;
    putf(b, "Q %d %s\n", kind, key);
    for (;;) {
        stele_page *pg;
        int rc = stele_read_query(db, &q, &pg);
        putf(b, "query %d\n", rc);
        if (rc)
            break;
        for (size_t i = 0; i < stele_page_count(pg); i++)
            if (!skipped(stele_page_event(pg, i)))
                put_event(b, stele_page_event(pg, i));
        int more = stele_page_next(pg, &q.from) == 1;
        stele_page_free(pg);
        if (!more)
            break;
    }
}

static const char *streams[] = {"Order-0", "Order-1", "Order-2", "Cart-0",  "Cart-1",
                                "Temp-0",  "Multi-a", "Multi-b", "Order-9", "Cart-9",
                                "Temp-9",  "Fill-0",  "Multi-c"};
#define NSTREAMS (sizeof streams / sizeof streams[0])

static dbuf dump(stele_db *db)
{
    dbuf b = {0};
    dump_all(db, &b);
    for (size_t i = 0; i < NSTREAMS; i++)
        dump_stream(db, &b, streams[i]);
    dump_query(db, &b, STELE_QUERY_CATEGORY, "Order");
    dump_query(db, &b, STELE_QUERY_TYPE, "ItemAdded");
    dump_query(db, &b, STELE_QUERY_TAG, "vip");
    dump_query(db, &b, STELE_QUERY_CORRELATION, "corr-7");
    return b;
}

static int same(const dbuf *a, const dbuf *b, const char *what)
{
    int eq = a->len == b->len && !memcmp(a->p, b->p, a->len);
    if (!eq) {
        size_t i = 0;
        while (i < a->len && i < b->len && a->p[i] == b->p[i])
            i++;
        size_t from = i > 120 ? i - 120 : 0;
        fprintf(stderr, "%s: dumps differ at byte %zu (lengths %zu, %zu)\nbefore: %.*s\nafter:  %.*s\n",
                what, i, a->len, b->len, (int)(a->len - from < 240 ? a->len - from : 240),
                a->p + from, (int)(b->len - from < 240 ? b->len - from : 240), b->p + from);
    }
    return eq;
}

/* ------------------------------------------------------------- workload */

/* The workload of one part (0: the old format, 1: the new one). */
static void workload(stele_db *db, int part)
{
    char data[160], meta[96];
    static const char *tags1[] = {"vip"}, *tags2[] = {"vip", "tenant:acme"};
    const char *sfx = part ? "9" : "0";
    char order[32], cart[32], temp[32];
    snprintf(order, sizeof order, "Order-%s", sfx);
    snprintf(cart, sizeof cart, "Cart-%s", sfx);
    snprintf(temp, sizeof temp, "Temp-%s", sfx);
    for (int i = 0; i < 300; i++) {
        /* One-event appends to this part's streams and to Order-1, which
         * both parts write. */
        const char *s = i % 3 == 0 ? order : i % 3 == 1 ? cart : "Order-1";
        int n = snprintf(data, sizeof data, "{\"part\":%d,\"i\":%d,\"pad\":\"%.*s\"}", part, i,
                         60 + i % 23, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        int m = snprintf(meta, sizeof meta, "{\"$correlationId\":\"corr-%d\"}", i % 10);
        uint8_t id[16];
        for (int k = 0; k < 16; k++)
            id[k] = (uint8_t)(k * 17 + 1);
        id[0] = (uint8_t)part;
        id[1] = (uint8_t)i;
        id[2] = (uint8_t)(i >> 8);
        id[6] = (uint8_t)((id[6] & 0x0f) | 0x40);
        id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
        stele_event_in ev = {.type = i % 2 ? "ItemAdded" : "OrderPlaced",
                             .data = data,
                             .data_len = (size_t)n,
                             .metadata = i % 4 ? meta : NULL,
                             .metadata_len = i % 4 ? (size_t)m : 0,
                             .tags = i % 5 == 0 ? tags2 : i % 5 == 1 ? tags1 : NULL,
                             .ntags = i % 5 == 0 ? 2 : i % 5 == 1 ? 1 : 0,
                             .flags = STELE_EVENT_JSON | (i % 4 ? STELE_META_JSON : 0) |
                                      (i % 7 == 0 ? STELE_EVENT_ID_ULID : 0),
                             .id = i % 6 == 0 ? NULL : id};
        CHECK_OK(stele_append(db, s, STELE_ANY, &ev, 1, NULL));
    }
    /* Batched appends (commits of many records), one with empty data. */
    stele_event_in batch[40];
    for (int j = 0; j < 40; j++)
        batch[j] = (stele_event_in){.type = "ItemAdded", .data = "{\"b\":1}", .data_len = 7,
                                    .flags = STELE_EVENT_JSON, .tags = tags1, .ntags = j % 2};
    batch[3].data_len = 0;
    batch[3].flags = 0;
    for (int r = 0; r < 5; r++)
        CHECK_OK(stele_append(db, r % 2 ? order : temp, STELE_ANY, batch, 40, NULL));
    /* A multi-stream commit with a state snapshot. */
    stele_snapshot_in st = {.schema_version = 2, .flags = STELE_EVENT_JSON, .state = "{\"s\":1}",
                            .state_len = 7};
    stele_append_stream ms[3] = {{"Multi-a", STELE_ANY, NULL}, {"Multi-b", STELE_ANY, &st},
                                 {part ? "Multi-c" : "Order-2", STELE_ANY, NULL}};
    stele_append_record mr[6];
    for (int j = 0; j < 6; j++)
        mr[j] = (stele_append_record){(size_t)(j % 3),
                                      {.type = "Moved", .data = "{\"m\":2}", .data_len = 7,
                                       .flags = STELE_EVENT_JSON}};
    stele_multi_result mres;
    CHECK_OK(stele_append_multi(db, ms, 3, mr, 6, NULL, NULL, &mres));
    /* Stream metadata and a snapshot. */
    stele_stream_metadata md;
    memset(&md, 0, sizeof md);
    md.max_snapshots = 3;
    md.custom = "{\"owner\":\"x\"}";
    md.custom_len = strlen(md.custom);
    CHECK_OK(stele_set_stream_metadata(db, cart, &md, STELE_ANY, NULL));
    stele_snapshot_in sn = {.revision = 5, .schema_version = 1, .state = "state", .state_len = 5};
    CHECK_OK(stele_put_snapshot(db, cart, &sn));
    /* A soft delete, then the stream written again. */
    CHECK_OK(stele_delete_stream(db, temp, STELE_ANY, NULL));
    stele_event_in again = {.type = "Again", .data = "1", .data_len = 1};
    CHECK_OK(stele_append(db, temp, STELE_ANY, &again, 1, NULL));
}

/* Count the event records of each kind in the store's segments, and the
 * bytes they take. */
typedef struct kinds {
    uint64_t k1, k8, k9, bytes1, bytes8, bytes9;
} kinds;

static kinds count_kinds(const char *dir)
{
    kinds k = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s/log", dir);
    DIR *d = opendir(path);
    CHECK(d != NULL);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        if (nl != 12 || strcmp(de->d_name + 8, ".seg"))
            continue;
        snprintf(path, sizeof path, "%s/log/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        CHECK(f != NULL);
        struct stat sb;
        stat(path, &sb);
        uint8_t *p = malloc((size_t)sb.st_size);
        CHECK(fread(p, 1, (size_t)sb.st_size, f) == (size_t)sb.st_size);
        fclose(f);
        uint64_t off = SEG_HEADER_SIZE;
        for (;;) {
            rec r;
            const char *why;
            if (rec_decode_in(p, off, (uint64_t)sb.st_size - off, &r, &why) != REC_OK)
                break;
            if (r.kind == REC_EVENT && r.compact == 2) {
                k.k9++;
                k.bytes9 += r.len;
            } else if (r.kind == REC_EVENT && r.compact) {
                k.k8++;
                k.bytes8 += r.len;
            } else if (r.kind == REC_EVENT) {
                k.k1++;
                k.bytes1 += r.len;
            }
            if (r.kind == REC_SEAL)
                break;
            off += r.len;
        }
        free(p);
    }
    if (d)
        closedir(d);
    return k;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat sb;
    stat(path, &sb);
    uint8_t *p = malloc((size_t)sb.st_size + 1);
    *n = fread(p, 1, (size_t)sb.st_size, f);
    fclose(f);
    return p;
}

static void drop_index(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/index", dir);
    t_rmdir(path);
}

static stele_db *open_at(const char *dir)
{
    stele_options o;
    memset(&o, 0, sizeof o);
    o.segment_size = SEG;
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

static void check_store(const char *dir)
{
    char report[2048];
    int rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "check: %s\n%s\n", stele_errmsg(), report);
    CHECK(rc == 0);
}

int main(void)
{
    const char *dir = t_tmpdir("compat");

    /* 1. The previous format. */
    rec_set_event_kind(REC_EVENT);
    stele_db *db = open_at(dir);
    workload(db, 0);
    dbuf old = dump(db);
    stele_close(db);
    kinds k0 = count_kinds(dir);
    printf("kind 1 part: %" PRIu64 " records, %" PRIu64 " bytes\n", k0.k1, k0.bytes1);
    CHECK(k0.k1 > 500 && k0.k8 == 0);
    check_store(dir);
    /* The sealed segments of part 1, to compare byte for byte later. */
    char p0[1024];
    snprintf(p0, sizeof p0, "%s/log/00000000.seg", dir);
    size_t seg0_len;
    uint8_t *seg0 = slurp(p0, &seg0_len);
    CHECK(seg0 != NULL);

    /* 2. The compact format on the same store. */
    rec_set_event_kind(REC_COMPACT);
    db = open_at(dir);
    dbuf reopened = dump(db);
    CHECK(same(&old, &reopened, "the old store under the new build"));
    workload(db, 1);
    dbuf both = dump(db);
    CHECK(both.len > old.len);
    stele_close(db);
    check_store(dir);
    kinds k1 = count_kinds(dir);
    uint64_t new8 = k1.k8;
    printf("kind 8 part: %" PRIu64 " records, %" PRIu64 " bytes\n", k1.k8, k1.bytes8);
    CHECK(k1.k1 == k0.k1 && k1.k8 == k0.k1); /* the same workload, the other kind */
    /* Fewer bytes for the same events (the part's streams' names are the
     * same length in both parts). */
    CHECK(k1.bytes8 * 10 < k0.bytes1 * 9);
    size_t seg0b_len;
    uint8_t *seg0b = slurp(p0, &seg0b_len);
    CHECK(seg0b && seg0b_len == seg0_len && !memcmp(seg0, seg0b, seg0_len));
    free(seg0b);
    free(seg0);

    /* Reopened: the same again. */
    db = open_at(dir);
    dbuf again = dump(db);
    CHECK(same(&both, &again, "reopened"));
    stele_close(db);
    free(again.p);

    /* 2b. Shared names (kind 9, the default) on the same store: what kinds
     * 1 and 8 wrote reads the same, and the same workload takes fewer
     * bytes again (its batches and its multi-stream commit share their
     * stream names and types; one-event commits stay kind 8). */
    rec_set_event_kind(REC_SHARED);
    db = open_at(dir);
    again = dump(db);
    CHECK(same(&both, &again, "the kind 1 and 8 store under the kind 9 writer"));
    free(again.p);
    workload(db, 2);
    dbuf all = dump(db);
    CHECK(all.len > both.len);
    stele_close(db);
    check_store(dir);
    kinds k2 = count_kinds(dir);
    uint64_t part2 = k2.bytes8 - k1.bytes8 + k2.bytes9;
    printf("kind 9 part: %" PRIu64 " kind 9 and %" PRIu64 " kind 8 records, %" PRIu64
           " bytes (the kind 8 part: %" PRIu64 ")\n",
           k2.k9, k2.k8 - k1.k8, part2, k1.bytes8);
    CHECK(k2.k1 == k0.k1 && k2.k8 - k1.k8 + k2.k9 == k0.k1);
    CHECK(k2.k9 >= 5 * 39 + 3); /* all but the first of each batch; the multi commit's repeats */
    CHECK(part2 < k1.bytes8);
    free(both.p);
    both = all;
    db = open_at(dir);
    again = dump(db);
    CHECK(same(&both, &again, "kind 9 part reopened"));
    stele_close(db);
    free(again.p);
    new8 = k2.k8;

    /* 3. The index rebuilt from the mixed log. */
    drop_index(dir);
    db = open_at(dir);
    again = dump(db);
    CHECK(same(&both, &again, "after an index rebuild"));
    free(again.p);

    /* 4. Backup, verify, restore. */
    const char *bdir = t_tmpdir("compat-backup");
    const char *rdir = t_tmpdir("compat-restore");
    CHECK_OK(stele_backup(db, bdir, NULL, NULL));
    stele_close(db);
    char report[2048];
    CHECK_OK(stele_backup_verify(bdir, report, sizeof report));
    t_rmdir(rdir);
    CHECK_OK(stele_restore(bdir, rdir, NULL, NULL));
    stele_db *rdb = open_at(rdir);
    again = dump(rdb);
    CHECK(same(&both, &again, "restored"));
    free(again.p);
    stele_close(rdb);
    kinds kr = count_kinds(rdir);
    CHECK(kr.k1 == k2.k1 && kr.k8 == k2.k8 && kr.k9 == k2.k9);

    /* 5. Scavenging both formats: delete a stream of each part, fill so
     * they are sealed, scavenge. */
    db = open_at(dir);
    CHECK_OK(stele_delete_stream(db, "Cart-0", STELE_ANY, NULL));
    CHECK_OK(stele_tombstone_stream(db, "Cart-9", STELE_ANY, NULL));
    char fill[1000];
    memset(fill, 'f', sizeof fill);
    for (int i = 0; i < 100; i++) {
        stele_event_in ev = {.type = "Fill", .data = fill, .data_len = sizeof fill};
        CHECK_OK(stele_append(db, "Fill-0", STELE_ANY, &ev, 1, NULL));
    }
    skip_deleted = 1;
    dbuf before = dump(db);
    stele_scavenge_result sr;
    CHECK_OK(stele_scavenge(db, NULL, &sr));
    printf("scavenge: %" PRIu64 " events removed, %" PRIu64 " segments rewritten\n",
           sr.events_removed, sr.segments_rewritten);
    CHECK(sr.events_removed > 200 && sr.segments_rewritten > 0);
    dbuf after = dump(db);
    CHECK(same(&before, &after, "scavenged"));
    free(after.p);
    stele_close(db);
    check_store(dir);
    kinds ks = count_kinds(dir);
    /* Cart-0's kind 1 records and Cart-9's kind 8 ones went; the filler
     * and the two removal events are new kind 8 records. */
    CHECK(ks.k1 + 50 < k0.k1 && ks.k8 + 50 < new8 + 102);
    CHECK(ks.k9 > 0 && ks.k9 <= k2.k9); /* batches of streams not deleted stay */
    db = open_at(dir);
    after = dump(db);
    CHECK(same(&before, &after, "scavenged, reopened"));
    free(after.p);
    stele_close(db);
    drop_index(dir);
    db = open_at(dir);
    after = dump(db);
    CHECK(same(&before, &after, "scavenged, index rebuilt"));
    free(after.p);
    stele_close(db);
    check_store(dir);

    free(before.p);
    free(both.p);
    free(reopened.p);
    free(old.p);
    t_rmdir(dir);
    t_rmdir(bdir);
    t_rmdir(rdir);
    if (t_failures)
        fprintf(stderr, "%d failures\n", (int)t_failures);
    return t_failures ? 1 : 0;
}
