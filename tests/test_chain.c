/*
 * test_chain.c - the hash chain over commits (src/backend/local_chain.c,
 * src/store/chain.c; docs/security.md, "The hash chain").
 *
 *   build     appends of 1..5 events to several streams, stream metadata,
 *             a delete, over 64 KiB segments: the head counts every commit
 *             and covers every position; `stele check` verifies the chain;
 *             a reopen resumes it (same head, appends continue, check);
 *   flip      an event's data byte flipped and its CRC fixed: the store
 *             still opens, but `stele check` reports the broken chain at
 *             that event's commit; with the chain record's digest forged
 *             to match (CRC fixed too), at the next commit;
 *   export    a signed export of a range verifies offline with the public
 *             key and counts its events; every one-character change to its
 *             evidence (records, digests, hashes, counts, signature, key)
 *             fails; a wrong key fails; an unsigned export fails with a
 *             key and passes without; the proof of one event verifies;
 *   torn      a commit torn away after its chain record: reopen cuts the
 *             record, the head is the commit before, the chain goes on;
 *   old       a store written without chain records (as before the chain:
 *             no kind-7 record in its files) opens; its chain begins with
 *             the next commit; events before it have no proof (ENOTFOUND);
 *             STELE_OPEN_NO_CHAIN is refused once the chain has begun;
 *   scavenge  commits removed by scavenging keep their chain records: the
 *             check still verifies the chain, and an export across them
 *             verifies (their digests stand in for their bytes).
 *   groups    8 threads appending large (12 KB) and one-event commits at
 *             once, so the writer's groups hold many commits of mixed
 *             sizes: the head counts every commit, `stele check` verifies
 *             them all, a reopen finds the same head, and a byte flipped in
 *             a large commit (CRC fixed) breaks the chain at that commit.
 *   pending   (local_chain.c, "Open after a crash"; the log cut after a
 *             group of 3 or more commits so that it is the last) its chain
 *             records all pending, as a crash before their rewrite leaves
 *             them: `stele check` counts them as awaiting, open writes them
 *             byte for byte as the writer did and the head is the one it
 *             published; a changed byte in a pending commit (CRC fixed)
 *             gives another head;
 *   tornrw    the group's records torn (inside the header, inside the data),
 *             pending and complete at once: check counts them as awaiting,
 *             events still read, open writes them exactly; complete records
 *             after a pending one of their group are accepted;
 *   damage    a complete record of a later group after a pending or torn
 *             one, and a complete record after a pending one that does not
 *             link to it: check and open refuse (ECORRUPT), the log
 *             untouched;
 *   sealed    a chain record with a bad checksum in a sealed segment (no
 *             rewrite can be torn there): check reports it;
 *   mixed     a store written in the other layout, then appended to in this
 *             one (the switch inside a segment, as when a store written
 *             before 2026-12-08 is opened): check verifies every commit, a
 *             reopen finds the same head, an export across the switch
 *             verifies, a byte flipped on either side breaks the chain at
 *             its commit; and (pending) a crash's pending group of one
 *             layout opened in the other: written exactly, the chain goes
 *             on.
 *
 * The cases run in the layout STELE_CHAIN_LAYOUT names (CTest: test_chain
 * trailing, the default; test_chain_leading); in trailing, torn also cuts
 * a commit's trailing record alone (open writes it back exactly).
 *
 * Replay with TEST_SEED=n.
 */
#include "testutil.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log/record.h"
#include "util/util.h"

#define SEG (64u * 1024u)

static int passed;
/* TEST_QUICK (ASan, valgrind): smaller workloads, the same checks. */
static int quick;
/* The layout the stores are written in (STELE_CHAIN_LAYOUT, as the engine
 * reads it): chain records after their commits (the default), or before
 * them ("leading", the layout before 2026-12-08; CTest runs both). */
static int trailing;

static stele_db *open_store(const char *dir, uint32_t flags)
{
    stele_options o = {0};
    o.segment_size = SEG;
    o.flags = flags;
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

/* Append `n` events of random size to `stream`; returns the commits made. */
static void append_n(stele_db *db, const char *stream, size_t n)
{
    stele_event_in ev[5];
    char data[5][700];
    for (size_t i = 0; i < n; i++) {
        size_t len = 20 + t_rand_below(600);
        snprintf(data[i], sizeof data[i], "{\"n\":%" PRIu64 ",\"pad\":\"", t_rand());
        size_t l = strlen(data[i]);
        while (l < len)
            data[i][l++] = (char)('a' + t_rand_below(26));
        data[i][l++] = '"';
        data[i][l++] = '}';
        data[i][l] = 0;
        ev[i] = (stele_event_in){.type = "Thing", .data = data[i], .data_len = l,
                                 .flags = STELE_EVENT_JSON};
    }
    CHECK_OK(stele_append(db, stream, STELE_ANY, ev, n, NULL));
}

/* Fill a store; returns the number of commits it made. */
static uint64_t fill(stele_db *db, int rounds)
{
    uint64_t commits = 0;
    char stream[32];
    for (int i = 0; i < rounds; i++) {
        snprintf(stream, sizeof stream, "S-%d", (int)t_rand_below(6));
        append_n(db, stream, 1 + t_rand_below(5));
        commits++;
        if (i % 37 == 36) {
            stele_stream_metadata md = {0};
            md.max_count = 1000;
            CHECK_OK(stele_set_stream_metadata(db, stream, &md, -2, NULL));
            commits++;
        }
    }
    return commits;
}

static uint64_t next_position(stele_db *db)
{
    stele_page *pg = NULL;
    CHECK_OK(stele_read_all(db, STELE_END, STELE_BACKWARDS, 1, &pg));
    uint64_t n = stele_page_count(pg) ? stele_page_event(pg, 0)->position + 1 : 0;
    stele_page_free(pg);
    return n;
}

static void check_ok(const char *dir, const char *want)
{
    char report[2048];
    int rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "check %s: %s\n", dir, stele_errmsg());
    CHECK_OK(rc);
    if (want && !strstr(report, want))
        fprintf(stderr, "report lacks \"%s\":\n%s", want, report);
    CHECK(!want || strstr(report, want));
}

/* --------------------------------------------------------- file surgery */

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)n + 1);
    CHECK(fread(p, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void put_file(const char *path, const uint8_t *p, size_t len)
{
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    CHECK(fwrite(p, 1, len, f) == len);
    fclose(f);
}

static void seg_path(const char *dir, uint32_t seg, char *out, size_t n)
{
    snprintf(out, n, "%s/log/%08u.seg", dir, seg);
}

static int seg_count(const char *dir)
{
    char p[600];
    int n = 0;
    for (;; n++) {
        seg_path(dir, (uint32_t)n, p, sizeof p);
        if (access(p, F_OK) != 0)
            return n;
    }
}

static void copy_dir(const char *from, const char *to)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", to, from, to);
    CHECK(system(cmd) == 0);
}

/* Walk segment `seg` of the file image: calls fn for each record with the
 * number and offset of the chain record of its commit (UINT64_MAX if none):
 * the last one before it, or with trailing records the first one after it;
 * for a chain record, its own. */
typedef int (*walk_fn)(void *ctx, uint8_t *p, const rec *r, uint64_t off, uint64_t chain_seq,
                       uint64_t chain_off);

/* The chain record after `off` in the image (its offset, or 0). */
static uint64_t next_chain(const uint8_t *img, size_t len, uint64_t off, uint64_t *seq)
{
    while (off < len) {
        rec r;
        const char *why;
        if (rec_decode_in(img, off, len - off, &r, &why) != REC_OK || r.kind == REC_SEAL)
            return 0;
        if (r.kind == REC_CHAIN) {
            *seq = r.revision;
            return off;
        }
        off += r.len;
    }
    return 0;
}

static void walk(uint8_t *img, size_t len, walk_fn fn, void *ctx)
{
    uint64_t off = SEG_HEADER_SIZE, cseq = UINT64_MAX, coff = 0;
    while (off < len) {
        rec r;
        const char *why;
        if (rec_decode_in(img, off, len - off, &r, &why) != REC_OK)
            break;
        if (r.kind == REC_CHAIN) {
            cseq = r.revision;
            coff = off;
        } else if (trailing && !(coff = next_chain(img, len, off, &cseq))) {
            cseq = UINT64_MAX;
        }
        if (fn(ctx, img, &r, off, cseq, coff))
            break;
        if (r.kind == REC_SEAL)
            break;
        off += r.len;
    }
}

/* The bytes [*start, *end) of the commit holding the record at `off`. */
static void commit_bounds(const uint8_t *img, size_t len, uint64_t off, uint64_t *start,
                          uint64_t *end)
{
    uint64_t q = SEG_HEADER_SIZE;
    *start = *end = 0;
    while (q < len) {
        rec r;
        const char *why;
        CHECK(rec_decode_in(img, q, len - q, &r, &why) == REC_OK);
        if (r.kind != REC_CHAIN && r.kind != REC_SEAL && r.commit_index == 0)
            *start = q;
        q += r.len;
        if (q > off && r.kind != REC_CHAIN && r.commit_index + 1 == r.commit_count) {
            *end = q;
            return;
        }
    }
}

typedef struct pick {
    int want;            /* the how-many-th event record with a chain record before it */
    int seen;
    uint64_t off, chain_seq, chain_off, position;
    uint32_t len;
    int count_chain;     /* counted chain records (kind 7) */
} pick;

static int pick_event(void *ctx, uint8_t *img, const rec *r, uint64_t off, uint64_t cseq,
                      uint64_t coff)
{
    (void)img;
    pick *k = ctx;
    k->count_chain += r->kind == REC_CHAIN;
    if (r->kind == REC_EVENT && cseq != UINT64_MAX && r->data_len > 8 && k->seen++ == k->want) {
        k->off = off;
        k->len = r->len;
        k->chain_seq = cseq;
        k->chain_off = coff;
        k->position = r->position;
        return 1;
    }
    return 0;
}

static void fix_crc(uint8_t *p)
{
    st32(p + 4, crc32c(0, p + 8, ld32(p) - 8));
}

/* ---------------------------------------------------------------- cases */

static void crashed_marker(const char *dir);

/* The layout stores opened from now on write (1 trailing). */
static void set_layout(int trail)
{
    if (trail)
        unsetenv("STELE_CHAIN_LAYOUT");
    else
        setenv("STELE_CHAIN_LAYOUT", "leading", 1);
}

static void test_build_and_resume(const char *dir, uint64_t *commits)
{
    stele_db *db = open_store(dir, 0);
    stele_chain_head h0;
    CHECK_OK(stele_chain_get_head(db, &h0));
    CHECK(h0.commits == 0 && h0.position == 0 && !h0.is_signed);
    uint64_t c = fill(db, quick ? 250 : 400);
    CHECK_OK(stele_delete_stream(db, "S-0", STELE_ANY, NULL));
    c++;
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == c);
    CHECK(h.position == next_position(db));
    CHECK(memcmp(h.hash, (uint8_t[32]){0}, 32) != 0);
    stele_close(db);
    CHECK(seg_count(dir) >= 4);
    char want[64];
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified", c);
    check_ok(dir, want);

    db = open_store(dir, 0);
    stele_chain_head h2;
    CHECK_OK(stele_chain_get_head(db, &h2));
    CHECK(h2.commits == h.commits && h2.position == h.position &&
          memcmp(h2.hash, h.hash, 32) == 0);
    c += fill(db, 50);
    CHECK_OK(stele_chain_get_head(db, &h2));
    CHECK(h2.commits == c);
    stele_close(db);
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified", c);
    check_ok(dir, want);
    *commits = c;
    passed++;
}

static void test_flip(const char *dir)
{
    const char *copy = t_tmpdir("chain-flip");
    copy_dir(dir, copy);
    char seg[600];
    seg_path(copy, 1, seg, sizeof seg);
    size_t len;
    uint8_t *img = slurp(seg, &len);
    pick k = {.want = (int)t_rand_below(20)};
    walk(img, len, pick_event, &k);
    CHECK(k.off != 0);
    /* A byte of the event's data, then its CRC made right again. */
    rec r;
    const char *why;
    CHECK(rec_decode_in(img, k.off, len - k.off, &r, &why) == REC_OK);
    size_t at = (size_t)(r.data - img) + 3;
    img[at] ^= 0x01;
    fix_crc(img + k.off);
    put_file(seg, img, len);

    /* The store opens (CRCs are right)... */
    stele_db *db = open_store(copy, 0);
    stele_close(db);
    /* ...but the check names the commit. */
    char report[2048], want[96];
    CHECK_RC(stele_check(copy, report, sizeof report), STELE_ECORRUPT);
    snprintf(want, sizeof want, "hash chain broken at commit %" PRIu64 " ", k.chain_seq);
    if (!strstr(stele_errmsg(), want))
        fprintf(stderr, "want \"%s\" in: %s\n", want, stele_errmsg());
    CHECK(strstr(stele_errmsg(), want) != NULL);
    CHECK(strstr(stele_errmsg(), "00000001.seg") != NULL);
    CHECK(strstr(stele_errmsg(), "do not match the digest") != NULL);

    /* Forge the digest in the chain record too: the next commit's link
     * breaks instead. */
    uint8_t *cr = img + k.chain_off;
    CHECK(cr[8] == REC_CHAIN);
    CHECK(!(cr[9] & REC_CHAIN_TRAILING) == !trailing);
    uint64_t commit_start, commit_end;
    commit_bounds(img, len, k.off, &commit_start, &commit_end);
    CHECK(trailing ? commit_end == k.chain_off : commit_start == k.chain_off + CHAIN_REC_SIZE);
    SHA256(img + commit_start, commit_end - commit_start, cr + REC_HEADER_SIZE + 2 + 32);
    fix_crc(cr);
    put_file(seg, img, len);
    CHECK_RC(stele_check(copy, report, sizeof report), STELE_ECORRUPT);
    snprintf(want, sizeof want, "hash chain broken at commit %" PRIu64 " ", k.chain_seq + 1);
    if (!strstr(stele_errmsg(), want))
        fprintf(stderr, "want \"%s\" in: %s\n", want, stele_errmsg());
    CHECK(strstr(stele_errmsg(), want) != NULL);
    CHECK(strstr(stele_errmsg(), "previous hash") != NULL);
    free(img);
    t_rmdir(copy);
    passed++;
}

/* Position in `text` of the value after "key": (searching from `from`). */
static const char *after_key(const char *text, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(text, k);
    return p ? p + strlen(k) : NULL;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Change character i of an export into another that still parses, so the
 * change reaches the verifier's checks. */
static char mutate(char c)
{
    const char *p = strchr(b64, c);
    if (c && p)
        return b64[(p - b64) ^ 32]; /* flips a used bit of its 6 */
    if (c >= '0' && c <= '9')
        return c == '9' ? '1' : (char)(c + 1);
    return 0;
}

static void test_export(const char *dir, uint64_t commits)
{
    (void)commits;
    const char *kd = t_tmpdir("chain-key");
    char key[600], pub_hex[65];
    snprintf(key, sizeof key, "%s/signing.key", kd);
    CHECK_OK(stele_chain_keygen(key, pub_hex));
    CHECK_RC(stele_chain_keygen(key, pub_hex), STELE_EEXISTS);
    struct stat sb;
    CHECK(stat(key, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    uint8_t pub[32];
    for (int i = 0; i < 32; i++) {
        unsigned v;
        sscanf(pub_hex + 2 * i, "%2x", &v);
        pub[i] = (uint8_t)v;
    }
    uint8_t other[32];
    memcpy(other, pub, 32);
    other[5] ^= 1;

    stele_db *db = open_store(dir, 0);
    uint64_t n = next_position(db);
    char *json = NULL;
    size_t len = 0;
    /* Unsigned first. */
    uint64_t from = 100 + t_rand_below(n / 2), to = from + 30;
    CHECK_OK(stele_chain_export(db, from, to, &json, &len));
    stele_chain_verified v;
    CHECK_OK(stele_chain_verify(json, len, NULL, &v));
    CHECK(v.events == to - from + 1 && v.first == from && v.last == to && !v.is_signed);
    CHECK_RC(stele_chain_verify(json, len, pub, &v), STELE_ECORRUPT);
    CHECK(strstr(stele_errmsg(), "not signed") != NULL);
    stele_free(json);

    /* Bad arguments. */
    CHECK_RC(stele_chain_export(db, to, from, &json, &len), STELE_EINVAL);
    CHECK_RC(stele_chain_export(db, 0, n + 5, &json, &len), STELE_EINVAL);
    CHECK_RC(stele_chain_set_signing_key(db, "/nonexistent/key"), STELE_EINVAL);
    CHECK_RC(stele_chain_verify("{}", 2, NULL, &v), STELE_EINVAL);
    CHECK_RC(stele_chain_verify("not json", 8, NULL, &v), STELE_EINVAL);

    /* Signed. */
    CHECK_OK(stele_chain_set_signing_key(db, key));
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.is_signed && memcmp(h.public_key, pub, 32) == 0);
    CHECK_OK(stele_chain_export(db, from, to, &json, &len));
    CHECK_OK(stele_chain_verify(json, len, pub, &v));
    CHECK(v.is_signed && v.events == to - from + 1 && v.head.commits == h.commits &&
          memcmp(v.head.hash, h.hash, 32) == 0);
    CHECK_RC(stele_chain_verify(json, len, other, &v), STELE_ECORRUPT);

    /* Every change to the evidence fails: each character from "firstCommit"
     * on that can be changed into another (base64, hex, digits). */
    const char *ev = after_key(json, "firstCommit");
    CHECK(ev != NULL);
    size_t start = (size_t)(ev - json), tried = 0;
    char *m = malloc(len + 1);
    for (size_t i = start; i < len; i++) {
        char c = mutate(json[i]);
        if (!c || (t_rand_below(quick ? 64 : 8) && i > start + 64 && i + 400 < len))
            continue; /* a sample of the long middle, every one near the ends */
        memcpy(m, json, len + 1);
        m[i] = c;
        int rc = stele_chain_verify(m, len, pub, &v);
        if (rc == 0)
            fprintf(stderr, "a change at byte %zu (%c -> %c) verified: ...%.40s...\n", i, json[i],
                    c, json + (i > 20 ? i - 20 : 0));
        CHECK(rc != 0);
        tried++;
    }
    CHECK(tried > (quick ? 100u : 200u));
    free(m);
    stele_free(json);

    /* The proof of one event. */
    uint64_t p = t_rand_below(n);
    CHECK_OK(stele_chain_export(db, p, p, &json, &len));
    CHECK_OK(stele_chain_verify(json, len, pub, &v));
    CHECK(v.events == 1 && v.first == p);
    stele_free(json);
    stele_close(db);
    t_rmdir(kd);
    passed++;
}

typedef struct last_chain {
    uint64_t off, seq;
} last_chain;

static int find_last_chain(void *ctx, uint8_t *img, const rec *r, uint64_t off, uint64_t cseq,
                           uint64_t coff)
{
    (void)img;
    (void)cseq;
    (void)coff;
    last_chain *lc = ctx;
    if (r->kind == REC_CHAIN) {
        lc->off = off;
        lc->seq = r->revision;
    }
    return 0;
}

/* Trailing records: the last commit's record torn away, the commit whole
 * (pages reach the disk in any order): check counts the commit as
 * awaiting its record; open writes it after the commit, byte for byte the
 * record the writer wrote, and the head is the one published before; the
 * chain goes on. Then the commit torn too: cut, the head one commit back. */
static void torn_trailing(const char *copy, const char *seg, uint8_t *img, size_t len,
                          uint64_t off, const stele_chain_head *before)
{
    uint8_t full[CHAIN_REC_SIZE];
    memcpy(full, img + off, sizeof full);
    CHECK(full[9] == REC_CHAIN_TRAILING);
    memset(img + off, 0, CHAIN_REC_SIZE);
    put_file(seg, img, len);
    crashed_marker(copy);
    char want[96];
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified",
             before->commits - 1);
    check_ok(copy, want);
    check_ok(copy, "1 commits await their chain record");
    stele_db *db = open_store(copy, 0);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == before->commits && h.position == before->position);
    CHECK(memcmp(h.hash, before->hash, 32) == 0);
    stele_close(db);
    free(img);
    img = slurp(seg, &len);
    CHECK(memcmp(img + off, full, sizeof full) == 0);
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified", before->commits);
    check_ok(copy, want);

    /* The commit torn as well (its last record and the chain record gone):
     * recovery cuts the commit, the head is the one before. */
    uint64_t start, end;
    commit_bounds(img, len, off - 8, &start, &end);
    CHECK(end == off);
    memset(img + end - 8, 0xA5, 8); /* the commit's last record's padding */
    memset(img + off, 0, CHAIN_REC_SIZE);
    put_file(seg, img, len);
    free(img);
    crashed_marker(copy);
    db = open_store(copy, 0);
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == before->commits - 1);
    append_n(db, "Torn", 1);
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == before->commits && memcmp(h.hash, before->hash, 32) != 0);
    stele_close(db);
    check_ok(copy, "hash chain: ");
    t_rmdir(copy);
    passed++;
}

static void test_torn(const char *dir)
{
    const char *copy = t_tmpdir("chain-torn");
    copy_dir(dir, copy);
    stele_db *db = open_store(copy, 0);
    stele_chain_head before;
    append_n(db, "Torn", 2);
    CHECK_OK(stele_chain_get_head(db, &before));
    stele_close(db);
    /* Zero the last commit's records, keep its chain record: as if the
     * write was torn after the record (and the store crashed). */
    char seg[600], lock[600];
    seg_path(copy, (uint32_t)seg_count(copy) - 1, seg, sizeof seg);
    size_t len;
    uint8_t *img = slurp(seg, &len);
    last_chain lc = {0};
    walk(img, len, find_last_chain, &lc);
    CHECK(lc.off && lc.seq + 1 == before.commits);
    if (trailing) {
        torn_trailing(copy, seg, img, len, lc.off, &before);
        return;
    }
    uint64_t end = lc.off + CHAIN_REC_SIZE;
    while (end < len && ld32(img + end))
        end += ld32(img + end);
    memset(img + lc.off + CHAIN_REC_SIZE, 0, end - lc.off - CHAIN_REC_SIZE);
    put_file(seg, img, len);
    free(img);
    snprintf(lock, sizeof lock, "%s/stele.lock", copy);
    FILE *f = fopen(lock, "w");
    fputs("open crashed-boot\n", f); /* another boot: the index is rebuilt */
    fclose(f);

    db = open_store(copy, 0);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == before.commits - 1);
    append_n(db, "Torn", 1);
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == before.commits);
    CHECK(memcmp(h.hash, before.hash, 32) != 0);
    stele_close(db);
    check_ok(copy, "hash chain: ");
    t_rmdir(copy);
    passed++;
}

static void test_old_store(void)
{
    const char *dir = t_tmpdir("chain-old");
    stele_db *db = open_store(dir, STELE_OPEN_NO_CHAIN);
    fill(db, 150);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == 0);
    uint64_t old_n = next_position(db);
    stele_close(db);
    /* No chain record in its files: the format of a store from before. */
    for (int s = 0; s < seg_count(dir); s++) {
        char seg[600];
        seg_path(dir, (uint32_t)s, seg, sizeof seg);
        size_t len;
        uint8_t *img = slurp(seg, &len);
        pick k = {.want = 1 << 30};
        walk(img, len, pick_event, &k);
        CHECK(k.count_chain == 0);
        free(img);
    }
    check_ok(dir, "hash chain: none yet");

    db = open_store(dir, 0);
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == 0 && h.position == old_n);
    fill(db, 20);
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits >= 20 && h.position == next_position(db));
    char *json = NULL;
    size_t len;
    CHECK_RC(stele_chain_export(db, 3, 3, &json, &len), STELE_ENOTFOUND);
    CHECK(strstr(stele_errmsg(), "before the hash chain began") != NULL);
    CHECK_OK(stele_chain_export(db, old_n, old_n + 2, &json, &len));
    stele_chain_verified v;
    CHECK_OK(stele_chain_verify(json, len, NULL, &v));
    CHECK(v.events == 3 && v.first == old_n);
    stele_free(json);
    stele_close(db);
    check_ok(dir, "older commits before the chain began");
    /* The chain has begun: no going back. */
    stele_options o = {.segment_size = SEG, .flags = STELE_OPEN_NO_CHAIN};
    CHECK_RC(stele_open(dir, &o, &db), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "has a hash chain") != NULL);
    t_rmdir(dir);
    passed++;
}

static void test_scavenge(void)
{
    const char *dir = t_tmpdir("chain-scav");
    stele_db *db = open_store(dir, 0);
    for (int i = 0; i < 300; i++)
        append_n(db, i % 3 ? "Keep" : "Gone", 1 + t_rand_below(3));
    uint64_t n = next_position(db);
    CHECK_OK(stele_delete_stream(db, "Gone", STELE_ANY, NULL));
    append_n(db, "Keep", 1);
    stele_scavenge_options so = {0};
    stele_scavenge_result sr;
    CHECK_OK(stele_scavenge(db, &so, &sr));
    CHECK(sr.events_removed > 50);
    /* An export across removed commits. */
    char *json = NULL;
    size_t len;
    stele_page *pg = NULL;
    CHECK_OK(stele_read_stream(db, "Keep", 0, STELE_FORWARDS, 1, &pg));
    uint64_t from = stele_page_event(pg, 0)->position;
    stele_page_free(pg);
    CHECK_OK(stele_chain_export(db, from, from, &json, &len));
    stele_chain_verified v;
    CHECK_OK(stele_chain_verify(json, len, NULL, &v));
    CHECK(v.events == 1);
    CHECK(strstr(json, "\"digest\"") != NULL);
    stele_free(json);
    CHECK(n > 0);
    stele_close(db);
    check_ok(dir, "removed by scavenging");
    char report[2048];
    CHECK_OK(stele_check(dir, report, sizeof report));
    CHECK(strstr(report, "(0 removed by scavenging") == NULL);
    t_rmdir(dir);
    passed++;
}

/* ------------------------------------------------------------- groups */

#define GROUP_THREADS 8

typedef struct group_arg {
    stele_db *db;
    int id, rounds;
    uint64_t commits;
} group_arg;

static void *group_writer(void *p)
{
    group_arg *a = p;
    static _Thread_local char data[8][1600];
    stele_event_in ev[8];
    char stream[32];
    for (int r = 0; r < a->rounds; r++) {
        /* Every other append a 12 KB commit (8 events of ~1.5 KB). */
        size_t n = r % 2 ? 1 : 8;
        for (size_t i = 0; i < n; i++) {
            size_t len = (n == 1 ? 100 : 1400) + (size_t)((r * 7 + a->id * 13 + (int)i) % 100);
            int l = snprintf(data[i], sizeof data[i], "{\"t\":%d,\"r\":%d,\"pad\":\"", a->id, r);
            for (; (size_t)l < len; l++)
                data[i][l] = (char)('a' + (r + l) % 26);
            data[i][l++] = '"';
            data[i][l++] = '}';
            data[i][l] = 0;
            ev[i] = (stele_event_in){.type = "Big", .data = data[i], .data_len = (size_t)l,
                                     .flags = STELE_EVENT_JSON};
        }
        snprintf(stream, sizeof stream, "H-%d-%d", a->id, r % 3);
        CHECK_OK(stele_append(a->db, stream, STELE_ANY, ev, n, NULL));
        a->commits++;
    }
    return NULL;
}

static int pick_big(void *ctx, uint8_t *img, const rec *r, uint64_t off, uint64_t cseq,
                    uint64_t coff)
{
    (void)img;
    pick *k = ctx;
    if (r->kind == REC_EVENT && cseq != UINT64_MAX && r->data_len > 1000 && k->seen++ == k->want) {
        k->off = off;
        k->chain_seq = cseq;
        k->chain_off = coff;
        return 1;
    }
    return 0;
}

static void test_groups(void)
{
    const char *dir = t_tmpdir("chain-groups");
    stele_options o = {0};
    o.segment_size = 4u << 20;
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    pthread_t th[GROUP_THREADS];
    group_arg args[GROUP_THREADS];
    for (int i = 0; i < GROUP_THREADS; i++) {
        args[i] = (group_arg){db, i, quick ? 40 : 150, 0};
        CHECK(pthread_create(&th[i], NULL, group_writer, &args[i]) == 0);
    }
    uint64_t c = 0;
    for (int i = 0; i < GROUP_THREADS; i++) {
        pthread_join(th[i], NULL);
        c += args[i].commits;
    }
    stele_chain_head h, h2;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == c);
    CHECK(h.position == next_position(db));
    stele_close(db);
    char want[64];
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified", c);
    check_ok(dir, want);
    CHECK_OK(stele_open(dir, &o, &db));
    CHECK_OK(stele_chain_get_head(db, &h2));
    CHECK(h2.commits == h.commits && h2.position == h.position &&
          memcmp(h2.hash, h.hash, 32) == 0);
    stele_close(db);

    /* A byte of a large event (CRC fixed): the chain breaks at its commit. */
    char seg[600];
    seg_path(dir, 0, seg, sizeof seg);
    size_t len;
    uint8_t *img = slurp(seg, &len);
    pick k = {.want = (int)t_rand_below(50)};
    walk(img, len, pick_big, &k);
    CHECK(k.off != 0);
    rec r;
    const char *why;
    CHECK(rec_decode_in(img, k.off, len - k.off, &r, &why) == REC_OK);
    img[(size_t)(r.data - img) + 500] ^= 0x20;
    fix_crc(img + k.off);
    put_file(seg, img, len);
    free(img);
    char report[2048];
    CHECK_RC(stele_check(dir, report, sizeof report), STELE_ECORRUPT);
    snprintf(want, sizeof want, "hash chain broken at commit %" PRIu64 " ", k.chain_seq);
    if (!strstr(stele_errmsg(), want))
        fprintf(stderr, "want \"%s\" in: %s\n", want, stele_errmsg());
    CHECK(strstr(stele_errmsg(), want) != NULL);
    CHECK(strstr(stele_errmsg(), "do not match the digest") != NULL);
    t_rmdir(dir);
    passed++;
}

/* ------------------------------------------------------------ pending */

/* The chain records of a segment image, in order. */
typedef struct crlist {
    uint64_t off[8192];
    int64_t created[8192];
    size_t n;
    uint64_t end; /* the end of the written data */
} crlist;

static int list_chain(void *ctx, uint8_t *img, const rec *r, uint64_t off, uint64_t cseq,
                      uint64_t coff)
{
    (void)img;
    (void)cseq;
    (void)coff;
    crlist *l = ctx;
    if (r->kind == REC_CHAIN && l->n < 8192) {
        l->off[l->n] = off;
        l->created[l->n++] = r->created_us;
    }
    l->end = off + r->len;
    return 0;
}

/* What a crash before the rewrite leaves: the record as the writer first
 * wrote it (flags REC_CHAIN_PENDING, data zeros), from its complete form. */
static void make_pending(uint8_t *cr)
{
    cr[9] = REC_CHAIN_PENDING | (cr[9] & REC_CHAIN_TRAILING);
    memset(cr + REC_CHAIN_DATA_OFF, 0, CHAIN_DATA_SIZE);
    fix_crc(cr);
}

/* A rewrite torn at byte `cut`: the first `cut` bytes of the complete form
 * `full`, the rest of the pending one. */
static void make_torn(uint8_t *cr, const uint8_t *full, size_t cut)
{
    uint8_t pend[CHAIN_REC_SIZE];
    memcpy(pend, full, CHAIN_REC_SIZE);
    make_pending(pend);
    memcpy(cr, full, cut);
    memcpy(cr + cut, pend + cut, CHAIN_REC_SIZE - cut);
}

#define PEND_SEG (16u << 20)

static stele_db *open_pend(const char *dir)
{
    stele_options o = {.segment_size = PEND_SEG};
    stele_db *db = NULL;
    CHECK_OK(stele_open(dir, &o, &db));
    return db;
}

static void crashed_marker(const char *dir)
{
    char lock[600];
    snprintf(lock, sizeof lock, "%s/stele.lock", dir);
    FILE *f = fopen(lock, "w");
    CHECK(f != NULL);
    fputs("open crashed-boot\n", f); /* a machine crash: the index is rebuilt */
    fclose(f);
}

typedef struct pend_fx {
    char base[512];           /* the store, cut after its chosen group */
    char seg[600];
    uint8_t *img;             /* its segment image */
    size_t len;
    crlist l;
    size_t g0, g1;            /* the group's chain records: l.off[g0..g1] */
    stele_chain_head want;    /* the head after that group */
} pend_fx;

/* A store of mixed groups (8 threads); the log is cut after its largest
 * group of at least 3 commits, which so becomes the last group a crash can
 * leave pending. */
static void pend_setup(pend_fx *fx)
{
    snprintf(fx->base, sizeof fx->base, "%s", t_tmpdir("chain-pend")); /* (slots rotate) */
    stele_options o = {0};
    o.segment_size = PEND_SEG;
    stele_db *db = NULL;
    CHECK_OK(stele_open(fx->base, &o, &db));
    pthread_t th[GROUP_THREADS];
    group_arg args[GROUP_THREADS];
    for (int i = 0; i < GROUP_THREADS; i++) {
        args[i] = (group_arg){db, i, quick ? 20 : 40, 0};
        CHECK(pthread_create(&th[i], NULL, group_writer, &args[i]) == 0);
    }
    for (int i = 0; i < GROUP_THREADS; i++)
        pthread_join(th[i], NULL);
    stele_close(db);
    CHECK(seg_count(fx->base) == 1);
    seg_path(fx->base, 0, fx->seg, sizeof fx->seg);
    fx->img = slurp(fx->seg, &fx->len);
    memset(&fx->l, 0, sizeof fx->l);
    walk(fx->img, fx->len, list_chain, &fx->l);
    /* The largest run of chain records with one group time, not the first. */
    size_t best = 0, best_n = 0;
    for (size_t i = 1; i < fx->l.n;) {
        size_t j = i;
        while (j + 1 < fx->l.n && fx->l.created[j + 1] == fx->l.created[i])
            j++;
        if (j - i + 1 > best_n && fx->l.created[i - 1] != fx->l.created[i]) {
            best = i;
            best_n = j - i + 1;
        }
        i = j + 1;
    }
    CHECK(best_n >= 3);
    fx->g0 = best;
    fx->g1 = best + best_n - 1;
    /* Cut the log after the group's last commit (and its record). */
    uint64_t cut = trailing ? fx->l.off[fx->g1] + CHAIN_REC_SIZE
                   : fx->g1 + 1 < fx->l.n ? fx->l.off[fx->g1 + 1] : fx->l.end;
    memset(fx->img + cut, 0, fx->len - cut);
    put_file(fx->seg, fx->img, fx->len);
    /* Open it once (the index rebuilt from the cut log) and close it: the
     * base every case changes. */
    crashed_marker(fx->base);
    stele_close(open_pend(fx->base));
    free(fx->img);
    fx->img = slurp(fx->seg, &fx->len);
    CHECK(memcmp(fx->img + cut, (uint8_t[CHAIN_REC_SIZE]){0}, CHAIN_REC_SIZE) == 0);
    rec r;
    const char *why;
    CHECK(rec_decode(fx->img + fx->l.off[fx->g1], CHAIN_REC_SIZE, &r, &why) == REC_OK);
    fx->want.commits = r.revision + 1;
    fx->want.position = r.position;
    SHA256(r.data, CHAIN_DATA_SIZE, fx->want.hash);
}

/* A copy of the fixture's store with its segment image replaced by img. */
static const char *pend_variant(pend_fx *fx, const char *name, const uint8_t *img)
{
    const char *d = t_tmpdir(name);
    copy_dir(fx->base, d);
    char seg[600];
    seg_path(d, 0, seg, sizeof seg);
    put_file(seg, img, fx->len);
    crashed_marker(d); /* a machine crash: open rebuilds the index */
    return d;
}

/* Open d: the head must be the fixture's, and the log byte for byte the
 * one the writer wrote; then `stele check` verifies every commit. */
static void pend_reopen_exact(pend_fx *fx, const char *d)
{
    stele_db *db = open_pend(d);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == fx->want.commits && h.position == fx->want.position);
    CHECK(memcmp(h.hash, fx->want.hash, 32) == 0);
    stele_close(db);
    char seg[600];
    seg_path(d, 0, seg, sizeof seg);
    size_t len;
    uint8_t *img = slurp(seg, &len);
    uint64_t cut = fx->l.off[fx->g1] + CHAIN_REC_SIZE;
    CHECK(len == fx->len && memcmp(img, fx->img, cut) == 0);
    free(img);
    char want[64];
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified", fx->want.commits);
    check_ok(d, want);
}

/* The last group's chain records all pending (a crash after its fsync,
 * before its rewrite): check counts them as awaiting, open writes them
 * exactly as the writer would have. */
static void test_pending(pend_fx *fx)
{
    uint8_t *img = malloc(fx->len);
    memcpy(img, fx->img, fx->len);
    for (size_t i = fx->g0; i <= fx->g1; i++)
        make_pending(img + fx->l.off[i]);
    const char *d = pend_variant(fx, "chain-pend-all", img);
    char want[96];
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified",
             fx->want.commits - (fx->g1 - fx->g0 + 1));
    check_ok(d, want);
    snprintf(want, sizeof want, "%zu commits await their chain record", fx->g1 - fx->g0 + 1);
    check_ok(d, want);
    pend_reopen_exact(fx, d);
    t_rmdir(d);

    /* The same pending group opened in the other layout: its records are
     * written as they were, and the chain goes on in the other one. */
    memcpy(img, fx->img, fx->len);
    for (size_t i = fx->g0; i <= fx->g1; i++)
        make_pending(img + fx->l.off[i]);
    d = pend_variant(fx, "chain-pend-switch", img);
    set_layout(!trailing);
    pend_reopen_exact(fx, d);
    stele_db *sw = open_pend(d);
    append_n(sw, "Switch", 2);
    append_n(sw, "Switch", 1);
    stele_close(sw);
    set_layout(trailing);
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified", fx->want.commits + 2);
    check_ok(d, want);
    t_rmdir(d);

    /* A byte of a pending commit's event changed (CRC fixed): the store
     * opens and fills the record from what it finds, so the head differs
     * from the one published before (which a signed head exposes). */
    rec r;
    const char *why;
    memcpy(img, fx->img, fx->len);
    make_pending(img + fx->l.off[fx->g1]);
    uint8_t *ev = img + (trailing ? fx->l.off[fx->g1 - 1] : fx->l.off[fx->g1]) + CHAIN_REC_SIZE;
    CHECK(rec_decode_in(img, (size_t)(ev - img), fx->len - (size_t)(ev - img), &r, &why) == REC_OK &&
          r.kind == REC_EVENT && r.data_len > 10);
    ((uint8_t *)r.data)[5] ^= 0x04;
    fix_crc(ev);
    d = pend_variant(fx, "chain-pend-tamper", img);
    stele_db *db = open_pend(d);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == fx->want.commits && memcmp(h.hash, fx->want.hash, 32) != 0);
    stele_close(db);
    t_rmdir(d);
    free(img);
    passed++;
}

/* A torn rewrite: the group's records a mix of torn (at a byte inside the
 * header, or inside the data), pending and complete ones, as pages and
 * sectors of an unsynced rewrite reach the disk in any order. */
static void test_torn_rewrite(pend_fx *fx)
{
    uint8_t *img = malloc(fx->len);
    memcpy(img, fx->img, fx->len);
    size_t n = fx->g1 - fx->g0 + 1;
    for (size_t k = 0; k < n; k++) {
        uint8_t *cr = img + fx->l.off[fx->g0 + k];
        const uint8_t *full = fx->img + fx->l.off[fx->g0 + k];
        if (k == 0)
            make_torn(cr, full, 8 + 8 * t_rand_below(8)); /* new CRC and flags, old data */
        else if (k == n - 1)
            make_torn(cr, full, REC_CHAIN_DATA_OFF + 8 + 8 * t_rand_below(6)); /* half */
        else if (k % 2)
            make_pending(cr);
        /* else: complete (its page reached the disk) */
    }
    /* Each torn record's checksum fails. */
    rec r;
    const char *why;
    CHECK(rec_decode(img + fx->l.off[fx->g0], CHAIN_REC_SIZE, &r, &why) == REC_BAD);
    CHECK(rec_decode(img + fx->l.off[fx->g1], CHAIN_REC_SIZE, &r, &why) == REC_BAD);
    const char *d = pend_variant(fx, "chain-torn-rw", img);
    check_ok(d, "commits await their chain record");
    /* Events still read (readers step over the torn records). */
    stele_db *db = open_pend(d);
    CHECK(next_position(db) == fx->want.position);
    stele_close(db);
    t_rmdir(d);
    /* And the same opened without a check first. */
    d = pend_variant(fx, "chain-torn-rw2", img);
    pend_reopen_exact(fx, d);
    t_rmdir(d);

    /* Complete records after a pending one of their own group. */
    memcpy(img, fx->img, fx->len);
    make_pending(img + fx->l.off[fx->g0]);
    d = pend_variant(fx, "chain-pend-first", img);
    pend_reopen_exact(fx, d);
    t_rmdir(d);
    free(img);
    passed++;
}

/* Damage, refused by open and by check, with the log left as it was. */
static void expect_damage(pend_fx *fx, const char *name, const uint8_t *img, const char *what)
{
    const char *d = pend_variant(fx, name, img);
    char report[2048];
    CHECK_RC(stele_check(d, report, sizeof report), STELE_ECORRUPT);
    if (!strstr(stele_errmsg(), "hash chain"))
        fprintf(stderr, "%s: check said: %s\n", name, stele_errmsg());
    CHECK(strstr(stele_errmsg(), "hash chain") != NULL);
    stele_options o = {.segment_size = PEND_SEG};
    stele_db *db = NULL;
    CHECK_RC(stele_open(d, &o, &db), STELE_ECORRUPT);
    if (!strstr(stele_errmsg(), what))
        fprintf(stderr, "%s: want \"%s\" in: %s\n", name, what, stele_errmsg());
    CHECK(strstr(stele_errmsg(), what) != NULL);
    char seg[600];
    seg_path(d, 0, seg, sizeof seg);
    size_t len;
    uint8_t *now = slurp(seg, &len);
    if (len != fx->len || memcmp(now, img, len) != 0) {
        size_t i = 0;
        while (i < len && i < fx->len && now[i] == img[i])
            i++;
        fprintf(stderr, "%s: the log changed (length %zu, was %zu; first difference at %zu)\n",
                name, len, fx->len, i);
    }
    CHECK(len == fx->len && memcmp(now, img, len) == 0);
    free(now);
    t_rmdir(d);
}

static void test_pending_damage(pend_fx *fx)
{
    uint8_t *img = malloc(fx->len);
    /* The group before's last record pending, this group's complete: a
     * complete record of a later group after a pending one. */
    memcpy(img, fx->img, fx->len);
    make_pending(img + fx->l.off[fx->g0 - 1]);
    expect_damage(fx, "chain-dmg-later", img, "of a later group after a pending one");
    /* The same with the earlier record torn instead. */
    memcpy(img, fx->img, fx->len);
    make_torn(img + fx->l.off[fx->g0 - 1], fx->img + fx->l.off[fx->g0 - 1], 16);
    expect_damage(fx, "chain-dmg-torn", img, "of a later group after a pending one");
    /* A complete record after a pending one of its group, its prev
     * changed (CRC fixed): it does not link. */
    memcpy(img, fx->img, fx->len);
    make_pending(img + fx->l.off[fx->g0]);
    uint8_t *cr = img + fx->l.off[fx->g0 + 1];
    cr[REC_CHAIN_DATA_OFF + 3] ^= 0x10;
    fix_crc(cr);
    expect_damage(fx, "chain-dmg-link", img, "does not match its commit");
    free(img);
    passed++;
}

/* A chain record with a bad checksum where no rewrite can be torn (a
 * sealed segment): check reports it; events still read. */
static void test_torn_sealed(const char *dir)
{
    const char *copy = t_tmpdir("chain-torn-sealed");
    copy_dir(dir, copy);
    char seg[600];
    seg_path(copy, 1, seg, sizeof seg);
    size_t len;
    uint8_t *img = slurp(seg, &len);
    crlist *l = calloc(1, sizeof *l);
    walk(img, len, list_chain, l);
    CHECK(l->n > 3);
    uint8_t *cr = img + l->off[l->n / 2];
    uint8_t full[CHAIN_REC_SIZE];
    memcpy(full, cr, sizeof full);
    make_torn(cr, full, REC_CHAIN_DATA_OFF + 40);
    put_file(seg, img, len);
    char report[2048];
    CHECK_RC(stele_check(copy, report, sizeof report), STELE_ECORRUPT);
    if (!strstr(stele_errmsg(), "no rewrite can have been torn"))
        fprintf(stderr, "check said: %s\n", stele_errmsg());
    CHECK(strstr(stele_errmsg(), "no rewrite can have been torn") != NULL);
    CHECK(strstr(stele_errmsg(), "00000001.seg") != NULL);
    free(l);
    free(img);
    t_rmdir(copy);
    passed++;
}

/* Flip an event's data byte (CRC fixed) in segment `seg`, written wholly in
 * layout `trail`: check reports the chain broken at that event's commit. */
static void flip_in(const char *dir, uint32_t seg_no, int trail)
{
    const char *copy = t_tmpdir("chain-mixed-flip");
    copy_dir(dir, copy);
    char seg[600];
    seg_path(copy, seg_no, seg, sizeof seg);
    size_t len;
    uint8_t *img = slurp(seg, &len);
    int was = trailing;
    trailing = trail;
    /* One of its first ten events (a segment may hold fewer: TEST_QUICK's
     * last segment). */
    pick all = {.want = INT_MAX};
    walk(img, len, pick_event, &all);
    CHECK(all.seen > 0);
    pick k = {.want = (int)t_rand_below(all.seen < 10 ? (uint64_t)all.seen : 10)};
    walk(img, len, pick_event, &k);
    trailing = was;
    CHECK(k.off != 0);
    rec r;
    const char *why;
    CHECK(rec_decode_in(img, k.off, len - k.off, &r, &why) == REC_OK);
    ((uint8_t *)r.data)[2] ^= 0x01;
    fix_crc(img + k.off);
    put_file(seg, img, len);
    char report[2048], want[96];
    CHECK_RC(stele_check(copy, report, sizeof report), STELE_ECORRUPT);
    snprintf(want, sizeof want, "hash chain broken at commit %" PRIu64 " ", k.chain_seq);
    if (!strstr(stele_errmsg(), want) || !strstr(stele_errmsg(), "do not match the digest"))
        fprintf(stderr, "want \"%s\" in: %s\n", want, stele_errmsg());
    CHECK(strstr(stele_errmsg(), want) != NULL);
    CHECK(strstr(stele_errmsg(), "do not match the digest") != NULL);
    free(img);
    t_rmdir(copy);
}

static void test_mixed(void)
{
    const char *dir = t_tmpdir("chain-mixed");
    set_layout(!trailing);
    stele_db *db = open_store(dir, 0);
    uint64_t c = fill(db, quick ? 100 : 160);
    stele_close(db);
    int first_segs = seg_count(dir);
    set_layout(trailing);
    db = open_store(dir, 0);
    uint64_t mid = next_position(db);
    c += fill(db, quick ? 100 : 160);
    stele_chain_head h;
    CHECK_OK(stele_chain_get_head(db, &h));
    CHECK(h.commits == c && h.position == next_position(db));
    /* An export across the switch. */
    char *json = NULL;
    size_t len = 0;
    stele_chain_verified v;
    CHECK_OK(stele_chain_export(db, mid - 25, mid + 25, &json, &len));
    CHECK_OK(stele_chain_verify(json, len, NULL, &v));
    CHECK(v.events == 51 && v.first == mid - 25 && v.last == mid + 25);
    stele_free(json);
    stele_close(db);
    char want[64];
    snprintf(want, sizeof want, "hash chain: %" PRIu64 " commits verified", c);
    check_ok(dir, want);
    db = open_store(dir, 0);
    stele_chain_head h2;
    CHECK_OK(stele_chain_get_head(db, &h2));
    CHECK(h2.commits == h.commits && memcmp(h2.hash, h.hash, 32) == 0);
    stele_close(db);
    /* Both layouts in the store, and a flip found on either side. */
    CHECK(first_segs >= 2 && seg_count(dir) > first_segs);
    flip_in(dir, 0, !trailing);
    flip_in(dir, (uint32_t)seg_count(dir) - 1, trailing);
    t_rmdir(dir);
    passed++;
}

int main(void)
{
    t_seed();
    quick = getenv("TEST_QUICK") != NULL;
    const char *layout = getenv("STELE_CHAIN_LAYOUT");
    trailing = !(layout && !strcmp(layout, "leading"));
    printf("  layout: chain records %s their commits\n", trailing ? "after" : "before");
    char dir[512];
    snprintf(dir, sizeof dir, "%s", t_tmpdir("chain")); /* (t_tmpdir's slots rotate) */
    uint64_t commits = 0;
    test_build_and_resume(dir, &commits);
    test_flip(dir);
    test_export(dir, commits);
    test_torn(dir);
    test_old_store();
    test_scavenge();
    test_groups();
    pend_fx *fx = calloc(1, sizeof *fx);
    pend_setup(fx);
    test_pending(fx);
    test_torn_rewrite(fx);
    test_pending_damage(fx);
    free(fx->img);
    t_rmdir(fx->base);
    free(fx);
    test_torn_sealed(dir);
    test_mixed();
    t_rmdir(dir);
    return t_done("test_chain", passed);
}
