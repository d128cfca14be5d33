/*
 * test_record.c - the two event record kinds (src/log/record.c): every
 * event encodes and decodes to the same fields as a kind 1 record and as a
 * compact (kind 8) one; sizes are exact and within the planning budget;
 * the other kinds are untouched by the choice; damaged or non-canonical
 * compact records are refused; rec_peek reads both headers. Shared names
 * (kind 9): a commit laid out with rec_share_next decodes to the same
 * fields, alone (REC_FAR, then rec_share_apply) or with the bytes before
 * it (rec_decode_in); wrong holders and non-canonical records are refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/record.h"
#include "testutil.h"
#include "util/util.h"

/* One event and the numbers a writer gives it. */
typedef struct ev_case {
    const char *stream;
    size_t stream_len;
    stele_event_in ev;
    uint8_t id[16];
    uint8_t flags;
    uint32_t count, index;
    uint64_t position, revision;
    int64_t created;
} ev_case;

/* Encode c in `kind`, check the size functions against it, decode it
 * (with and without the CRC) and compare every field with c. Returns the
 * record's length; *out (malloc'd) holds its bytes. */
static uint32_t round_trip(const ev_case *c, uint8_t kind, uint8_t **out)
{
    rec_set_event_kind(kind);
    size_t type_len = strlen(c->ev.type);
    uint64_t exact = rec_event_size_at(c->stream_len, type_len, c->ev.tags, c->ev.ntags,
                                       c->ev.data_len, c->ev.metadata_len, c->count, c->index,
                                       c->position, c->revision);
    uint64_t budget = rec_event_size(c->stream_len, type_len, c->ev.tags, c->ev.ntags,
                                     c->ev.data_len, c->ev.metadata_len);
    CHECK(exact <= budget);
    CHECK(exact % REC_ALIGN == 0 && exact >= REC_MIN_SIZE);
    uint8_t *p = malloc(exact + 16);
    CHECK(p != NULL);
    memset(p, 0xAA, exact + 16);
    size_t n = rec_encode_event(p, c->stream, c->stream_len, &c->ev, c->id, c->flags, c->count,
                                c->index, c->position, c->revision, c->created);
    CHECK(n == exact);
    CHECK(p[8] == kind);
    for (int trusted = 0; trusted < 2; trusted++) {
        rec r;
        const char *why = NULL;
        /* Extra bytes after the record do not matter. */
        rec_status st = trusted ? rec_decode_trusted(p, exact + 16, &r, &why)
                                : rec_decode(p, exact + 16, &r, &why);
        CHECK(st == REC_OK);
        if (st != REC_OK) {
            fprintf(stderr, "decode: %s\n", why ? why : "?");
            continue;
        }
        CHECK(r.len == exact);
        CHECK(r.at == p);
        CHECK(r.kind == REC_EVENT);
        CHECK(r.compact == (kind == REC_COMPACT));
        CHECK(r.flags == c->flags);
        CHECK(r.commit_count == c->count && r.commit_index == c->index);
        CHECK(r.position == c->position && r.revision == c->revision);
        CHECK(r.created_us == c->created);
        CHECK(memcmp(r.id, c->id, 16) == 0);
        CHECK(r.stream_len == c->stream_len && !memcmp(r.stream, c->stream, c->stream_len) &&
              r.stream[r.stream_len] == 0);
        CHECK(r.type_len == type_len && !memcmp(r.type, c->ev.type, type_len));
        CHECK(r.ntags == c->ev.ntags);
        const uint8_t *t = r.tags;
        for (size_t i = 0; i < c->ev.ntags; i++) {
            size_t tl = strlen(c->ev.tags[i]);
            CHECK(ld16(t) == tl && !memcmp(t + 2, c->ev.tags[i], tl) && t[2 + tl] == 0);
            t += 3 + tl;
        }
        CHECK(r.data_len == c->ev.data_len &&
              (!c->ev.data_len || !memcmp(r.data, c->ev.data, c->ev.data_len)));
        CHECK(r.meta_len == c->ev.metadata_len &&
              (!c->ev.metadata_len || !memcmp(r.meta, c->ev.metadata, c->ev.metadata_len)));
        CHECK(r.meta + r.meta_len <= p + r.len);
    }
    uint8_t k;
    uint64_t pos;
    int64_t created;
    CHECK(rec_peek(p, exact, &k, &pos, &created) == 0);
    CHECK(k == REC_EVENT && pos == c->position && created == c->created);
    *out = p;
    return (uint32_t)exact;
}

/* Both kinds of c decode to the same event; the compact one is no bigger. */
static void both(const ev_case *c)
{
    uint8_t *a, *b;
    uint32_t la = round_trip(c, REC_EVENT, &a);
    uint32_t lb = round_trip(c, REC_COMPACT, &b);
    CHECK(lb <= la);
    /* A truncated record is short, never bad or read past its end. */
    for (uint32_t cut = 4; cut < lb; cut += 4) {
        uint8_t *q = malloc(cut);
        memcpy(q, b, cut);
        rec r;
        const char *why;
        CHECK(rec_decode(q, cut, &r, &why) == REC_SHORT);
        free(q);
    }
    free(a);
    free(b);
}

static ev_case base_case(void)
{
    ev_case c;
    memset(&c, 0, sizeof c);
    c.stream = "Order-123";
    c.stream_len = 9;
    c.ev.type = "OrderPlaced";
    c.ev.data = "{\"total\":42,\"items\":[1,2,3]}";
    c.ev.data_len = strlen(c.ev.data);
    c.ev.flags = STELE_EVENT_JSON;
    for (int i = 0; i < 16; i++)
        c.id[i] = (uint8_t)(0x10 + i);
    c.flags = STELE_EVENT_JSON;
    c.count = 1;
    c.position = 1234567;
    c.revision = 3;
    c.created = 1796000000123456;
    return c;
}

static void test_round_trips(void)
{
    ev_case c = base_case();
    both(&c);

    /* Empty data and metadata, a one-byte stream and type. */
    c.stream = "s";
    c.stream_len = 1;
    c.ev.type = "T";
    c.ev.data = NULL;
    c.ev.data_len = 0;
    c.flags = 0;
    c.position = c.revision = 0;
    both(&c);

    /* Metadata, tags, a ULID id made by the store, a multi-stream commit. */
    c = base_case();
    static const char *tags[] = {"vip", "tenant:acme", "x"};
    c.ev.tags = tags;
    c.ev.ntags = 3;
    c.ev.metadata = "{\"$correlationId\":\"c-1\"}";
    c.ev.metadata_len = strlen(c.ev.metadata);
    c.flags = STELE_EVENT_JSON | STELE_META_JSON | STELE_EVENT_ID_ULID | REC_ID_MADE | REC_MULTI;
    c.count = 1000;
    c.index = 999;
    both(&c);

    /* The widest numbers, a created time before the epoch. */
    c = base_case();
    c.count = UINT32_MAX;
    c.index = UINT32_MAX - 1;
    c.position = UINT64_MAX - 1;
    c.revision = UINT64_MAX;
    c.created = INT64_MIN;
    both(&c);
    c.created = -1;
    c.position = (uint64_t)1 << 63;
    both(&c);

    /* Every varint boundary of the position (1..10 bytes). */
    c = base_case();
    for (int bits = 0; bits < 64; bits += 7) {
        c.position = ((uint64_t)1 << bits) - 1;
        both(&c);
        c.position = (uint64_t)1 << bits;
        both(&c);
    }

    /* The largest stream name, type and tags a record holds, big data. */
    c = base_case();
    char *big = malloc(65535 + 1);
    memset(big, 's', 65535);
    big[65535] = 0;
    c.stream = big;
    c.stream_len = 65535;
    c.ev.type = big;
    const char *many[64];
    char tag255[256];
    memset(tag255, 't', 255);
    tag255[255] = 0;
    for (int i = 0; i < 64; i++)
        many[i] = tag255;
    c.ev.tags = many;
    c.ev.ntags = 64;
    size_t dl = 1u << 20;
    char *data = malloc(dl);
    for (size_t i = 0; i < dl; i++)
        data[i] = (char)(i * 7);
    c.ev.data = data;
    c.ev.data_len = dl;
    c.ev.metadata = data;
    c.ev.metadata_len = 300;
    uint8_t *a, *b;
    round_trip(&c, REC_EVENT, &a);
    round_trip(&c, REC_COMPACT, &b);
    free(a);
    free(b);
    free(data);
    free(big);

    /* A stream delete as an event (REC_REMOVES) in either kind. */
    c = base_case();
    uint8_t block[REC_REMOVES_FIXED + 7];
    rec_removes_encode(block, REC_DELETE, 5, 4, "Order-1", 7);
    c.stream = REC_REMOVES_STREAM;
    c.stream_len = strlen(REC_REMOVES_STREAM);
    c.ev.type = REC_REMOVES_TYPE;
    c.ev.metadata = block;
    c.ev.metadata_len = sizeof block;
    c.flags = STELE_EVENT_JSON | REC_ID_MADE | REC_REMOVES;
    for (int k = 0; k < 2; k++) {
        uint8_t *p;
        uint32_t len = round_trip(&c, k ? REC_COMPACT : REC_EVENT, &p);
        rec r;
        const char *why;
        CHECK(rec_decode(p, len, &r, &why) == REC_OK);
        rec_removes rm;
        CHECK(rec_removes_decode(&r, &rm) == 0);
        CHECK(rm.kind == REC_DELETE && rm.truncate_before == 5 && rm.last_rev == 4 &&
              rm.stream_len == 7 && !memcmp(rm.stream, "Order-1", 7));
        free(p);
    }
}

/* A ~100-byte event (the benchmark's) takes fewer bytes as kind 8. */
static void test_smaller(void)
{
    ev_case c = base_case();
    char data[100];
    memset(data, 'x', sizeof data);
    c.ev.data = data;
    c.ev.data_len = sizeof data;
    uint8_t *a, *b;
    uint32_t la = round_trip(&c, REC_EVENT, &a);
    uint32_t lb = round_trip(&c, REC_COMPACT, &b);
    printf("a 100-byte event: kind 1 %u bytes, kind 8 %u bytes\n", la, lb);
    CHECK(lb + 16 <= la);
    free(a);
    free(b);
}

/* Metadata, snapshot, chain and marker records keep their kinds and bytes
 * whichever kind events are written in. */
static void test_other_kinds(void)
{
    uint8_t x[2][512], block[REC_META_DATA_SIZE] = {0};
    size_t n[2];
    for (int k = 0; k < 2; k++) {
        rec_set_event_kind(k ? REC_COMPACT : REC_EVENT);
        uint8_t *p = x[k];
        size_t off = 0;
        off += rec_encode_body(p + off, REC_METADATA, 0, "s-1", 3, block, sizeof block, "{}", 2,
                               0, 7, 1000);
        off += rec_encode_body(p + off, REC_SNAPSHOT, STELE_EVENT_JSON, "s-1", 3, "{\"n\":1}", 7,
                               NULL, 0, 1, 7, 1000);
        off += rec_encode_body_in(p + off, REC_SNAPSHOT, 0, "s-1", 3, "z", 1, 2, 1, 1, 7, 1000);
        uint8_t chain[CHAIN_DATA_SIZE] = {1};
        off += rec_encode_body(p + off, REC_CHAIN, 0, "", 0, chain, sizeof chain, NULL, 0, 9, 0,
                               1000);
        off += rec_encode_marker(p + off, REC_SEAL, "", 0, 9, UINT64_MAX, 1000);
        n[k] = off;
        static const uint8_t kinds[] = {REC_METADATA, REC_SNAPSHOT, REC_SNAPSHOT, REC_CHAIN,
                                        REC_SEAL};
        size_t at = 0;
        for (int i = 0; i < 5; i++) {
            rec r;
            const char *why;
            CHECK(rec_decode(p + at, off - at, &r, &why) == REC_OK);
            CHECK(r.kind == kinds[i] && !r.compact && p[at + 8] == kinds[i]);
            at += r.len;
        }
        CHECK(at == off);
    }
    CHECK(n[0] == n[1] && memcmp(x[0], x[1], n[0]) == 0);
}

/* Fix the CRC of the record at p after an edit. */
static void fix_crc(uint8_t *p) { st32(p + 4, crc32c(0, p + 8, ld32(p) - 8)); }

static rec_status dec(const uint8_t *p, uint64_t n)
{
    rec r;
    const char *why = NULL;
    rec_status st = rec_decode(p, n, &r, &why);
    if (st == REC_BAD)
        CHECK(why != NULL);
    return st;
}

/* Damage and non-canonical forms are refused (with a right CRC too). */
static void test_refused(void)
{
    ev_case c = base_case();
    c.ev.data = "xyz"; /* 3 bytes: the record has padding */
    c.ev.data_len = 3;
    uint8_t *p;
    uint32_t len = round_trip(&c, REC_COMPACT, &p);
    uint8_t *q = malloc(len + 64);

    /* A flipped bit anywhere after the CRC: checksum mismatch. */
    for (uint32_t i = 8; i < len; i++) {
        memcpy(q, p, len);
        q[i] ^= 0x04;
        CHECK(dec(q, len) == REC_BAD);
    }
    /* Padding that is not zero. */
    memcpy(q, p, len);
    q[len - 1] = 1;
    fix_crc(q);
    CHECK(dec(q, len) == REC_BAD);
    /* Eight more bytes of padding (a length past the body's padding). */
    memcpy(q, p, len);
    memset(q + len, 0, 8);
    st32(q, len + 8);
    fix_crc(q);
    CHECK(dec(q, len + 8) == REC_BAD);
    /* An overlong varint: commit_count 1 as 0x81 0x00, the body moved up. */
    memset(q, 0, len + 64);
    memcpy(q, p, REC_COMPACT_FIXED);
    q[REC_COMPACT_FIXED] = 0x81;
    q[REC_COMPACT_FIXED + 1] = 0x00;
    memcpy(q + REC_COMPACT_FIXED + 2, p + REC_COMPACT_FIXED + 1, len - REC_COMPACT_FIXED - 1);
    fix_crc(q);
    CHECK(dec(q, len) == REC_BAD);
    /* A stream length past the record; a commit_index past the count. */
    memcpy(q, p, len);
    rec r;
    const char *why;
    CHECK(rec_decode(p, len, &r, &why) == REC_OK);
    /* The last five varints (one byte each here) are stream_len, type_len,
     * ntags, data_len and meta_len. */
    size_t sl_at = (size_t)((const uint8_t *)r.stream - p) - 5;
    CHECK(q[sl_at] == 9);
    q[sl_at] = 0x7f;
    fix_crc(q);
    CHECK(dec(q, len) == REC_BAD);
    memcpy(q, p, len);
    q[REC_COMPACT_FIXED + 1] = 1; /* index 1 of a commit of 1 */
    fix_crc(q);
    CHECK(dec(q, len) == REC_BAD);
    /* A compact record shorter than the smallest record. */
    memcpy(q, p, len);
    st32(q, REC_MIN_SIZE - 8);
    CHECK(dec(q, len) == REC_BAD);
    /* REC_REMOVES in a multi-stream commit: refused like kind 1's. */
    memcpy(q, p, len);
    q[9] |= REC_REMOVES | REC_MULTI;
    fix_crc(q);
    CHECK(dec(q, len) == REC_BAD);
    /* An unknown flag. */
    memcpy(q, p, len);
    q[9] |= 0x08;
    fix_crc(q);
    CHECK(dec(q, len) == REC_BAD);
    /* A length below a kind 1 header for another kind: the smallest
     * compact record, relabelled. */
    ev_case s = base_case();
    s.stream = "s";
    s.stream_len = 1;
    s.ev.type = "T";
    s.ev.data_len = 0;
    s.position = s.revision = 0;
    uint8_t *small;
    CHECK(round_trip(&s, REC_COMPACT, &small) == REC_MIN_SIZE);
    small[8] = REC_EVENT;
    fix_crc(small);
    CHECK(dec(small, REC_MIN_SIZE) == REC_BAD);
    free(small);
    /* A kind past 9 (what a build of the next format would write). */
    memcpy(q, p, len);
    q[8] = 10;
    fix_crc(q);
    CHECK(dec(q, len) == REC_BAD);
    uint8_t k;
    uint64_t pos;
    int64_t t;
    CHECK(rec_peek(q, len, &k, &pos, &t) == -1);
    free(q);
    free(p);
}

/* The bytes of one event in each kind, pinned: kind 1's as the build
 * before kind 8 wrote them (its record.c produced this hex), kind 8's as
 * docs/file-format.md lays them out. A change of either is a format change. */
static void test_golden(void)
{
    static const char k1[] =
        "8800000010dcdc8b018309000b000200030000000100000087d61200000000002a000000000000004022"
        "06d673610600a0a1a2a3a4a5a6a7a8a9aaabacadaeaf0c000000070000004f726465722d313233004f"
        "72646572506c61636564000300766970000b0074656e616e743a61636d65007b22746f74616c223a34"
        "327d7b226d223a317d000000";
    static const char k8[] =
        "70000000c42126d50883a0a1a2a3a4a5a6a7a8a9aaabacadaeaf402206d673610600030187ad4b2a09"
        "0b020c074f726465722d313233004f72646572506c61636564000300766970000b0074656e616e743a"
        "61636d65007b22746f74616c223a34327d7b226d223a317d000000000000";
    static const char *tags[] = {"vip", "tenant:acme"};
    stele_event_in ev;
    memset(&ev, 0, sizeof ev);
    ev.type = "OrderPlaced";
    ev.data = "{\"total\":42}";
    ev.data_len = 12;
    ev.metadata = "{\"m\":1}";
    ev.metadata_len = 7;
    ev.tags = tags;
    ev.ntags = 2;
    uint8_t id[16];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(0xa0 + i);
    for (int k = 0; k < 2; k++) {
        const char *want = k ? k8 : k1;
        rec_set_event_kind(k ? REC_COMPACT : REC_EVENT);
        uint8_t out[512];
        size_t n = rec_encode_event(out, "Order-123", 9, &ev, id, 0x03 | REC_ID_MADE, 3, 1,
                                    1234567, 42, 1796000000123456LL);
        char hex[1025];
        for (size_t i = 0; i < n && i < 512; i++)
            snprintf(hex + 2 * i, 3, "%02x", out[i]);
        CHECK(strlen(want) == 2 * n && !memcmp(hex, want, 2 * n));
    }
}

/* The writer's kind: STELE_RECORD_KIND=1 chooses kind 1 before any write;
 * rec_set_event_kind overrides. */
static void test_kind_choice(void)
{
    rec_set_event_kind(REC_EVENT);
    CHECK(rec_event_kind() == REC_EVENT);
    rec_set_event_kind(REC_COMPACT);
    CHECK(rec_event_kind() == REC_COMPACT);
    rec_set_event_kind(REC_SHARED);
    CHECK(rec_event_kind() == REC_SHARED);
    rec_set_event_kind(0); /* anything else: the newest, shared names */
    CHECK(rec_event_kind() == REC_SHARED);
}


/* ------------------------------------------------------- shared names */

/* Lay out and encode a commit of n events (streams[i], types[i]) in the
 * current event kind; offs[i] gets each record's offset. Returns bytes. */
static size_t lay_commit(uint8_t *out, size_t n, const char *const *streams,
                         const char *const *types, size_t *offs, int64_t created)
{
    static const char *tags[] = {"vip"};
    rec_share sh;
    rec_share_init(&sh);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        stele_event_in ev = {.type = types[i], .data = "{\"x\":1}", .data_len = 7,
                             .tags = i % 2 ? tags : NULL, .ntags = i % 2,
                             .flags = STELE_EVENT_JSON};
        uint8_t id[16];
        memset(id, (int)i + 1, sizeof id);
        uint32_t sb, tb;
        uint64_t size = rec_share_next(&sh, streams[i], strlen(streams[i]), types[i], ev.tags,
                                       ev.ntags, ev.data_len, 0, (uint32_t)n, (uint32_t)i,
                                       1000 + i, 50 + i, &sb, &tb);
        size_t w = rec_encode_event_shared(out + off, streams[i], strlen(streams[i]), &ev, id,
                                           STELE_EVENT_JSON, (uint32_t)n, (uint32_t)i, 1000 + i,
                                           50 + i, created, sb, tb);
        CHECK(w == size);
        offs[i] = off;
        off += w;
    }
    return off;
}

static void test_shared(void)
{
    const char *st[4] = {"Order-123", "Order-123", "Order-123", "Order-123"};
    const char *ty[4] = {"ItemAdded", "ItemAdded", "OrderPlaced", "ItemAdded"};
    uint8_t *b = calloc(1, 4096), *b8 = calloc(1, 4096);
    size_t offs[4], offs8[4];
    rec_set_event_kind(REC_COMPACT);
    size_t n8 = lay_commit(b8, 4, st, ty, offs8, 77);
    rec_set_event_kind(REC_SHARED);
    size_t n9 = lay_commit(b, 4, st, ty, offs, 77);
    printf("4 events in one commit: %zu bytes as kind 8, %zu with shared names\n", n8, n9);
    CHECK(n9 < n8);
    /* The first record holds both (kind 8); the others share. */
    CHECK(b[8] == REC_COMPACT && b[offs[1] + 8] == REC_SHARED && b[offs[3] + 8] == REC_SHARED);
    for (int i = 0; i < 4; i++) {
        for (int trusted = 0; trusted < 2; trusted++) {
            rec r, r8;
            const char *why = NULL;
            rec_status st9 = trusted ? rec_decode_trusted_in(b, offs[i], n9 - offs[i], &r, &why)
                                     : rec_decode_in(b, offs[i], n9 - offs[i], &r, &why);
            CHECK(st9 == REC_OK);
            CHECK(rec_decode_in(b8, offs8[i], n8 - offs8[i], &r8, &why) == REC_OK);
            CHECK(r.kind == REC_EVENT && r.compact == (i ? 2 : 1) && !r.far);
            CHECK(r.stream_len == r8.stream_len && !memcmp(r.stream, r8.stream, r.stream_len));
            CHECK(r.type_len == r8.type_len && !memcmp(r.type, r8.type, r.type_len));
            CHECK(r.type[r.type_len] == 0 && r.stream[r.stream_len] == 0);
            CHECK(r.position == r8.position && r.revision == r8.revision &&
                  r.commit_index == r8.commit_index && r.ntags == r8.ntags &&
                  r.data_len == r8.data_len && !memcmp(r.data, r8.data, r.data_len) &&
                  !memcmp(r.id, r8.id, 16) && r.flags == r8.flags);
        }
    }
    /* Alone, record 2 (its own type, the stream shared) is REC_FAR: the
     * holder is record 0, which then resolves it. */
    rec r, h;
    const char *why = NULL;
    CHECK(rec_decode(b + offs[2], n9 - offs[2], &r, &why) == REC_FAR);
    CHECK(r.far == REC_FAR_STREAM && r.stream_back == offs[2] - offs[0]);
    CHECK(r.type_len == 11 && !memcmp(r.type, "OrderPlaced", 11));
    CHECK(rec_decode(b, n9, &h, &why) == REC_OK);
    CHECK(rec_share_apply(&r, REC_FAR_STREAM, &h, &why) == 0 && !r.far);
    CHECK(r.stream_len == 9 && !memcmp(r.stream, "Order-123", 9));
    /* A record of the commit that does not hold the field cannot give it
     * (refs never chain), nor a later record. */
    rec r1, r3;
    CHECK(rec_decode(b + offs[1], n9 - offs[1], &r1, &why) == REC_FAR);
    CHECK(rec_decode(b + offs[3], n9 - offs[3], &r3, &why) == REC_FAR);
    CHECK(rec_share_apply(&r3, REC_FAR_STREAM, &r1, &why) == -1);
    CHECK(rec_decode(b + offs[2], n9 - offs[2], &r, &why) == REC_FAR);
    rec r2 = r;
    CHECK(rec_share_apply(&r1, REC_FAR_STREAM, &r2, &why) == -1);
    /* Holders are looked for only in the bytes given: starting the buffer
     * after record 0 leaves the stream far. */
    CHECK(rec_decode_in(b + offs[1], offs[3] - offs[1], n9 - offs[3], &r, &why) == REC_FAR);
    /* Multi-stream: A, B, A, B with one type: each record shares what an
     * earlier one holds. */
    const char *ms[4] = {"Multi-a", "Multi-b", "Multi-a", "Multi-b"};
    const char *mt[4] = {"Moved", "Moved", "Moved", "Moved"};
    size_t moffs[4];
    size_t mn = lay_commit(b, 4, ms, mt, moffs, 77);
    CHECK(b[moffs[1] + 8] == REC_SHARED); /* the type */
    for (int i = 0; i < 4; i++) {
        CHECK(rec_decode_in(b, moffs[i], mn - moffs[i], &r, &why) == REC_OK);
        CHECK(r.stream_len == 7 && !memcmp(r.stream, ms[i], 7) && r.type_len == 5);
    }
    /* The writer's other kinds share nothing. */
    rec_set_event_kind(REC_EVENT);
    size_t n1 = lay_commit(b, 4, st, ty, offs, 77);
    CHECK(n1 > n8 && b[offs[3] + 8] == REC_EVENT);
    rec_set_event_kind(REC_SHARED);
    free(b8);
    free(b);
}

/* A holder of another commit (another time, or index), a kind 9 record at
 * index 0, one with no ref, and a ref past the segment's start are
 * refused; CRCs are checked on holders too. */
static void test_shared_refused(void)
{
    const char *st[2] = {"Order-1", "Order-1"};
    const char *ty[2] = {"T", "T"};
    uint8_t *b = calloc(1, 1024);
    size_t offs[2];
    rec_set_event_kind(REC_SHARED);
    size_t n = lay_commit(b, 2, st, ty, offs, 5);
    rec r;
    const char *why = NULL;
    CHECK(b[offs[1] + 8] == REC_SHARED);
    CHECK(rec_decode_in(b, offs[1], n - offs[1], &r, &why) == REC_OK);
    /* The holder's time changed: not of this commit. */
    uint8_t *q = malloc(n);
    memcpy(q, b, n);
    st64(q + 26, 6);
    fix_crc(q);
    CHECK(rec_decode_in(q, offs[1], n - offs[1], &r, &why) == REC_BAD);
    /* The holder's CRC broken: bad (trusted decoding does not look). */
    memcpy(q, b, n);
    q[40] ^= 1;
    CHECK(rec_decode_in(q, offs[1], n - offs[1], &r, &why) == REC_BAD);
    /* A ref to no record (one unit short). */
    memcpy(q, b, n);
    /* varints at +34: count, index, position (2 bytes), revision, then
     * the stream ref. */
    uint8_t *ref = q + offs[1] + 34 + 1 + 1 + 2 + 1;
    CHECK(*ref == offs[1] / REC_ALIGN);
    *ref = (uint8_t)(*ref - 1);
    fix_crc(q + offs[1]);
    CHECK(rec_decode_in(q, offs[1], n - offs[1], &r, &why) == REC_BAD);
    /* Both refs zero: kind 8 would say it; refused. */
    memcpy(q, b, n);
    ref = q + offs[1] + 34 + 5;
    ref[0] = 0;
    ref[1] = 0;
    fix_crc(q + offs[1]);
    CHECK(rec_decode(q + offs[1], n - offs[1], &r, &why) == REC_BAD);
    /* Kind 9 as the first record of a commit. */
    memcpy(q, b, n);
    q[8] = REC_SHARED;
    fix_crc(q);
    CHECK(rec_decode(q, n, &r, &why) == REC_BAD);
    /* rec_peek reads a kind 9 header as an event. */
    uint8_t k;
    uint64_t pos;
    int64_t t;
    CHECK(rec_peek(b + offs[1], n - offs[1], &k, &pos, &t) == 0 && k == REC_EVENT &&
          pos == 1001 && t == 5);
    free(q);
    free(b);
}

int main(void)
{
    test_round_trips();
    test_smaller();
    test_other_kinds();
    test_refused();
    test_golden();
    test_kind_choice();
    test_shared();
    test_shared_refused();
    if (t_failures)
        fprintf(stderr, "%d failures\n", t_failures);
    return t_failures ? 1 : 0;
}
