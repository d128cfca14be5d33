/*
 * test_util.c - unit tests of src/util: CRC32C (known vectors, hardware
 * against table on random buffers), UUIDv7 (layout and strict monotonicity
 * across threads), UUID text form, name validation, the error table and the
 * thread-local message, the growable buffer and the clocks.
 *
 * crc32c.c is included (as h2o's tests do) to reach its static hardware and
 * table implementations; its public function is renamed on the way in so it
 * does not clash with the library's crc32c when both are linked.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "testutil.h"
#include "util/util.h"

#define crc32c crc32c_included
#include "util/crc32c.c"
#undef crc32c

/* ------------------------------------------------------------------ crc */

static int have_sse42(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}

/* The three ways to compute a checksum from scratch, which must agree. */
static void check_crc(const void *p, size_t n, uint32_t want)
{
    CHECK(crc32c(0, p, n) == want);
    CHECK(crc32c_included(0, p, n) == want);
    CHECK(~crc32c_sw(~0u, p, n) == want);
    if (have_sse42())
        CHECK(~crc32c_hw(~0u, p, n) == want);
}

static void test_crc_vectors(void)
{
    uint8_t b[32];
    check_crc("123456789", 9, 0xE3069283u);
    memset(b, 0, sizeof b);
    check_crc(b, 32, 0x8A9136AAu);
    memset(b, 0xff, sizeof b);
    check_crc(b, 32, 0x62A8AB43u);
    /* RFC 3720 (iSCSI) appendix B.4: ascending and descending bytes. */
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    check_crc(b, 32, 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    check_crc(b, 32, 0x113FDB5Cu);
    CHECK(crc32c(0, NULL, 0) == 0);
    CHECK(crc32c(0x12345678u, "", 0) == 0x12345678u);

    /* Continuing a checksum over a split gives the checksum of the whole. */
    const char *s = "123456789";
    for (size_t k = 0; k <= 9; k++)
        CHECK(crc32c(crc32c(0, s, k), s + k, 9 - k) == 0xE3069283u);
}

static void test_crc_hw_vs_table(void)
{
    if (!have_sse42()) {
        printf("no SSE4.2 on this CPU: hardware CRC not compared\n");
        return;
    }
    static uint8_t mem[4096 + 64];
    for (size_t i = 0; i < sizeof mem; i++)
        mem[i] = (uint8_t)t_rand();
    for (int iter = 0; iter < 20000; iter++) {
        size_t off = t_rand_below(64);
        /* Mostly short lengths, where the head/tail handling lives. */
        size_t len = iter % 2 ? t_rand_below(40) : t_rand_below(4097);
        uint32_t seed = (uint32_t)t_rand();
        uint32_t sw = crc32c_sw(seed, mem + off, len);
        uint32_t hw = crc32c_hw(seed, mem + off, len);
        if (sw != hw) {
            fprintf(stderr, "crc mismatch off=%zu len=%zu seed=%08x\n", off, len, seed);
            CHECK(sw == hw);
        }
        size_t cut = t_rand_below(len + 1);
        CHECK(crc32c(crc32c(0, mem + off, cut), mem + off + cut, len - cut) ==
              crc32c(0, mem + off, len));
    }
    /* Around the hardware path's lane rounds (3 x 64 and 3 x 1,024 bytes),
     * at every alignment. */
    static const size_t edges[] = {191, 192, 193, 199, 200, 383, 384, 385, 3071, 3072, 3073,
                                   3263, 3264, 3265, 4096};
    for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++)
        for (size_t off = 0; off < 8; off++) {
            uint32_t seed = (uint32_t)t_rand();
            if (crc32c_sw(seed, mem + off, edges[e]) != crc32c_hw(seed, mem + off, edges[e])) {
                fprintf(stderr, "crc mismatch off=%zu len=%zu seed=%08x\n", off, edges[e], seed);
                CHECK(!"hardware and table CRC agree at a lane edge");
            }
        }
}

/* ----------------------------------------------------------------- uuid */

#define UUID_THREADS 4
#define UUID_PER_THREAD 25000
#define UUID_TOTAL (UUID_THREADS * UUID_PER_THREAD)

static uint8_t (*uuid_ids)[16];
static size_t uuid_shared_n;
static pthread_mutex_t uuid_test_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t uuid_ms(const uint8_t id[16])
{
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | id[i];
    return ms;
}

/* Phase one: every thread writes its own slice as fast as it can. */
static void *uuid_worker(void *arg)
{
    size_t t = (size_t)arg;
    for (size_t i = 0; i < UUID_PER_THREAD; i++)
        uuid_v7(uuid_ids[t * UUID_PER_THREAD + i]);
    return NULL;
}

/* Phase two: threads take turns on one shared sequence, so the order of
 * the array is the order of generation across threads. */
static void *uuid_worker_shared(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < UUID_PER_THREAD; i++) {
        pthread_mutex_lock(&uuid_test_lock);
        uuid_v7(uuid_ids[uuid_shared_n++]);
        pthread_mutex_unlock(&uuid_test_lock);
    }
    return NULL;
}

static int cmp16(const void *a, const void *b) { return memcmp(a, b, 16); }

static void run_uuid_threads(void *(*fn)(void *))
{
    pthread_t th[UUID_THREADS];
    for (size_t t = 0; t < UUID_THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, fn, (void *)t) == 0);
    for (size_t t = 0; t < UUID_THREADS; t++)
        pthread_join(th[t], NULL);
}

static void test_uuid_v7(void)
{
    uuid_ids = calloc(UUID_TOTAL, 16);
    CHECK(uuid_ids != NULL);
    uint64_t before_ms = (uint64_t)time_now_us() / 1000;

    run_uuid_threads(uuid_worker);
    for (size_t t = 0; t < UUID_THREADS; t++)
        for (size_t i = 1; i < UUID_PER_THREAD; i++) {
            size_t k = t * UUID_PER_THREAD + i;
            CHECK(memcmp(uuid_ids[k - 1], uuid_ids[k], 16) < 0);
        }
    for (size_t k = 0; k < UUID_TOTAL; k++) {
        CHECK((uuid_ids[k][6] >> 4) == 7);
        CHECK((uuid_ids[k][8] >> 6) == 2);
        CHECK(!uuid_is_nil(uuid_ids[k]));
    }
    qsort(uuid_ids, UUID_TOTAL, 16, cmp16);
    for (size_t k = 1; k < UUID_TOTAL; k++)
        CHECK(memcmp(uuid_ids[k - 1], uuid_ids[k], 16) != 0);

    uuid_shared_n = 0;
    run_uuid_threads(uuid_worker_shared);
    CHECK(uuid_shared_n == UUID_TOTAL);
    for (size_t k = 1; k < UUID_TOTAL; k++)
        CHECK(memcmp(uuid_ids[k - 1], uuid_ids[k], 16) < 0);

    /* The timestamp is the wall clock, give or take the milliseconds the
     * counter may have borrowed when ids came faster than 2048 per ms. */
    uint64_t after_ms = (uint64_t)time_now_us() / 1000;
    CHECK(uuid_ms(uuid_ids[0]) >= before_ms);
    CHECK(uuid_ms(uuid_ids[UUID_TOTAL - 1]) <= after_ms + 1000);
    free(uuid_ids);

    uint8_t nil[16] = {0};
    CHECK(uuid_is_nil(nil));
    nil[15] = 1;
    CHECK(!uuid_is_nil(nil));
}

static void test_uuid_text(void)
{
    static const uint8_t known[16] = {0x01, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x7a, 0xbc,
                                      0x8d, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab};
    char text[37];
    uint8_t id[16];
    stele_uuid_format(known, text);
    CHECK(strcmp(text, "0189abcd-ef01-7abc-8def-0123456789ab") == 0);
    CHECK_OK(stele_uuid_parse(text, id));
    CHECK(memcmp(id, known, 16) == 0);
    CHECK_OK(stele_uuid_parse("0189ABCD-EF01-7ABC-8DEF-0123456789AB", id));
    CHECK(memcmp(id, known, 16) == 0);

    for (int i = 0; i < 1000; i++) {
        uint8_t a[16], b[16];
        for (int k = 0; k < 16; k++)
            a[k] = (uint8_t)t_rand();
        stele_uuid_format(a, text);
        CHECK(strlen(text) == 36);
        CHECK_OK(stele_uuid_parse(text, b));
        CHECK(memcmp(a, b, 16) == 0);
    }

    static const char *bad[] = {
        "",
        "0189abcd-ef01-7abc-8def-0123456789a",   /* 35 chars */
        "0189abcd-ef01-7abc-8def-0123456789abc", /* 37 chars */
        "0189abcd-ef01-7abc-8def-0123456789ab ", /* trailing space */
        "0189abcdef01-7abc-8def-0123456789ab0",  /* dash missing */
        "0189abc-def01-7abc-8def-0123456789ab",  /* dash misplaced */
        "0189abcd-ef01-7abc-8def_0123456789ab",  /* not a dash */
        "0189abcg-ef01-7abc-8def-0123456789ab",  /* not hex */
        " 189abcd-ef01-7abc-8def-0123456789ab",
        "0189abcd-ef01-7abc-8def-0123456789a\xc3",
        "{0189abcd-ef01-7abc-8def-0123456789ab}",
        "0189abcdef017abc8def0123456789ab",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(id, 0x5a, 16);
        err_clear();
        CHECK_RC(stele_uuid_parse(bad[i], id), STELE_EINVAL);
        CHECK(stele_errmsg()[0] != '\0');
        CHECK(id[0] == 0x5a && id[15] == 0x5a); /* untouched on failure */
    }
    CHECK_RC(stele_uuid_parse(NULL, id), STELE_EINVAL);
}

/* ----------------------------------------------------------------- utf8 */

static void check_name_ok(const char *s, size_t len)
{
    size_t at = 12345;
    const char *why = utf8_check_name(s, len, &at);
    if (why)
        fprintf(stderr, "rejected valid name (len %zu): %s at %zu\n", len, why, at);
    CHECK(why == NULL);
}

static void check_name_bad(const char *s, size_t len, const char *want, size_t want_at)
{
    size_t at = 12345;
    const char *why = utf8_check_name(s, len, &at);
    if (!why || strcmp(why, want) != 0 || at != want_at)
        fprintf(stderr, "name of len %zu: got %s at %zu, want %s at %zu\n", len,
                why ? why : "(valid)", at, want, want_at);
    CHECK(why && strcmp(why, want) == 0);
    CHECK(at == want_at);
}

#define NAME_OK(lit) check_name_ok(lit, sizeof(lit) - 1)
#define NAME_BAD(lit, why, at) check_name_bad(lit, sizeof(lit) - 1, why, at)

static void test_utf8(void)
{
    NAME_OK("");
    NAME_OK("Order-123");
    NAME_OK("caf\xc3\xa9");                  /* café */
    NAME_OK("\xe6\x97\xa5\xe6\x9c\xac");     /* 日本 */
    NAME_OK("\xf0\x9f\x98\x80 party");       /* U+1F600 */
    NAME_OK("\xc2\xa0");                     /* U+00A0, just past C1 */
    NAME_OK("\xed\x9f\xbf");                 /* U+D7FF, just below surrogates */
    NAME_OK("\xee\x80\x80");                 /* U+E000, just above */
    NAME_OK("\xef\xbf\xbf");                 /* U+FFFF */
    NAME_OK("\xf4\x8f\xbf\xbf");             /* U+10FFFF, the last one */
    NAME_OK("~ $all: a/b?c=d#e");

    NAME_BAD("ab\x01" "c", "control character", 2);
    NAME_BAD("\x1f", "control character", 0);
    NAME_BAD("a\x7f", "control character", 1);
    NAME_BAD("ab\0cd", "control character", 2);
    NAME_BAD("tab\there", "control character", 3);
    NAME_BAD("x\xc2\x80", "control character", 1);  /* U+0080 */
    NAME_BAD("\xc2\x9f", "control character", 0);   /* U+009F */

    NAME_BAD("a\xc0\xaf", "overlong UTF-8 encoding", 1);
    NAME_BAD("\xc1\xbf", "overlong UTF-8 encoding", 0);
    NAME_BAD("ab\xe0\x80\xaf", "overlong UTF-8 encoding", 2);
    NAME_BAD("\xe0\x9f\xbf", "overlong UTF-8 encoding", 0);
    NAME_BAD("\xf0\x80\x80\xaf", "overlong UTF-8 encoding", 0);
    NAME_BAD("\xf0\x8f\xbf\xbf", "overlong UTF-8 encoding", 0);

    NAME_BAD("ab\xed\xa0\x80", "UTF-16 surrogate in UTF-8", 2);
    NAME_BAD("\xed\xbf\xbf", "UTF-16 surrogate in UTF-8", 0);

    NAME_BAD("\xf4\x90\x80\x80", "code point above U+10FFFF", 0);
    NAME_BAD("z\xf7\xbf\xbf\xbf", "code point above U+10FFFF", 1);

    NAME_BAD("abc\xe6\x97", "truncated UTF-8 sequence", 3);
    NAME_BAD("\xf0\x9f\x98", "truncated UTF-8 sequence", 0);
    NAME_BAD("\xc3", "truncated UTF-8 sequence", 0);

    NAME_BAD("a\x80", "invalid UTF-8", 1);
    NAME_BAD("\xbf", "invalid UTF-8", 0);
    NAME_BAD("ok\xff", "invalid UTF-8", 2);
    NAME_BAD("\xf8\x88\x80\x80\x80", "invalid UTF-8", 0);
    NAME_BAD("\xe6\x41\x41", "invalid UTF-8", 0);
    NAME_BAD("\xc3\xa9\xc3(", "invalid UTF-8", 2);

    /* Only `len` bytes are looked at: a bad byte beyond it is not seen. */
    check_name_ok("ab\x01", 2);
    check_name_bad("\xc3\xa9", 1, "truncated UTF-8 sequence", 0);
}

/* ---------------------------------------------------------------- errors */

static char other_thread_msg[64];

static void *errmsg_thread(void *arg)
{
    (void)arg;
    snprintf(other_thread_msg, sizeof other_thread_msg, "[%s]", stele_errmsg());
    err_set(STELE_EIO, "set by the other thread");
    return NULL;
}

static void test_errors(void)
{
    CHECK(strcmp(stele_strerror(0), "ok") == 0);
    CHECK(strcmp(stele_strerror(STELE_EWRONGREV), "wrong expected revision") == 0);
    CHECK(strcmp(stele_strerror(STELE_EINTERNAL), "internal error") == 0);
    CHECK(strcmp(stele_strerror(-999), "unknown error") == 0);
    CHECK(strcmp(stele_strerror(1), "unknown error") == 0);
    CHECK(strcmp(stele_errname(0), "OK") == 0);
    CHECK(strcmp(stele_errname(STELE_EINVAL), "INVAL") == 0);
    CHECK(strcmp(stele_errname(STELE_EWRONGREV), "WRONGREV") == 0);
    CHECK(strcmp(stele_errname(STELE_EIDCONFLICT), "IDCONFLICT") == 0);
    CHECK(strcmp(stele_errname(STELE_EINTERNAL), "INTERNAL") == 0);
    CHECK(strcmp(stele_errname(-99), "UNKNOWN") == 0);
    CHECK(strcmp(stele_errname(5), "UNKNOWN") == 0);
    /* Every code in the table has its own name and text. */
    for (int a = -1; a >= STELE_EEXISTS; a--) {
        CHECK(strcmp(stele_errname(a), "UNKNOWN") != 0);
        CHECK(strcmp(stele_strerror(a), "unknown error") != 0);
        for (int b = a - 1; b >= STELE_EEXISTS; b--)
            CHECK(strcmp(stele_errname(a), stele_errname(b)) != 0);
    }

    err_clear();
    CHECK(stele_errmsg() != NULL && stele_errmsg()[0] == '\0');
    CHECK(err_set(STELE_ETOOBIG, "event %d: %s", 3, "data too large") == STELE_ETOOBIG);
    CHECK(strcmp(stele_errmsg(), "event 3: data too large") == 0);
    /* Adding context to the message already there. */
    err_set(STELE_EIO, "segment %s: %s", "00000001.seg", stele_errmsg());
    CHECK(strcmp(stele_errmsg(), "segment 00000001.seg: event 3: data too large") == 0);

    /* The message is per thread. */
    pthread_t th;
    CHECK(pthread_create(&th, NULL, errmsg_thread, NULL) == 0);
    pthread_join(th, NULL);
    CHECK(strcmp(other_thread_msg, "[]") == 0);
    CHECK(strcmp(stele_errmsg(), "segment 00000001.seg: event 3: data too large") == 0);

    /* Long messages are cut to the buffer, still NUL-terminated. */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    err_set(STELE_EINVAL, "%s", big);
    CHECK(strlen(stele_errmsg()) == 1023);
    err_clear();
    CHECK(stele_errmsg()[0] == '\0');
}

/* ------------------------------------------------------------------ buf */

static void test_buf(void)
{
    buf b = {0};
    size_t grows = 0, last_cap = 0;
    for (size_t i = 0; i < 100000; i++) {
        uint8_t c = (uint8_t)(i * 7);
        CHECK_OK(buf_append(&b, &c, 1));
        CHECK(b.len == i + 1 && b.cap >= b.len);
        if (b.cap != last_cap) {
            grows++;
            last_cap = b.cap;
        }
    }
    CHECK(grows <= 20); /* geometric, not one realloc per append */
    for (size_t i = 0; i < 100000; i++)
        CHECK(b.p[i] == (uint8_t)(i * 7));

    CHECK_OK(buf_append(&b, NULL, 0));
    CHECK(b.len == 100000);
    size_t cap = b.cap;
    uint8_t *p = b.p;
    CHECK_OK(buf_reserve(&b, cap - b.len));
    CHECK(b.cap == cap && b.p == p); /* enough room: no realloc */
    CHECK_OK(buf_reserve(&b, cap - b.len + 1));
    CHECK(b.cap > cap);

    cap = b.cap;
    CHECK_RC(buf_reserve(&b, SIZE_MAX), STELE_ENOMEM);
    CHECK_RC(buf_reserve(&b, SIZE_MAX - b.len + 1), STELE_ENOMEM);
    CHECK(b.cap == cap && b.len == 100000 && b.p[99999] == (uint8_t)(99999 * 7));

    buf_free(&b);
    CHECK(b.p == NULL && b.len == 0 && b.cap == 0);
    buf_free(&b); /* freeing an empty buffer is fine */

    CHECK_OK(buf_append(&b, "hello", 5));
    CHECK_OK(buf_append(&b, " world", 6));
    CHECK(b.len == 11 && memcmp(b.p, "hello world", 11) == 0);
    buf_free(&b);
}

/* ----------------------------------------------------------------- time */

static void test_time(void)
{
    CHECK(time_now_us() > 1577836800LL * 1000000); /* after 2020-01-01 */
    uint64_t prev = time_mono_ns();
    for (int i = 0; i < 1000; i++) {
        uint64_t now = time_mono_ns();
        CHECK(now >= prev);
        prev = now;
    }
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"crc_vectors", test_crc_vectors}, {"crc_hw_vs_table", test_crc_hw_vs_table},
        {"uuid_v7", test_uuid_v7},         {"uuid_text", test_uuid_text},
        {"utf8", test_utf8},               {"errors", test_errors},
        {"buf", test_buf},                 {"time", test_time},
    };
    t_seed();
    int passed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = t_failures;
        tests[i].fn();
        if (t_failures == before)
            passed++;
        else
            fprintf(stderr, "FAILED: %s\n", tests[i].name);
    }
    return t_done("test_util", passed);
}
