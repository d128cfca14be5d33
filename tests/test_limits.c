/*
 * test_limits.c - bad input at the public API.
 *
 * Every limit and every malformed argument must return its error code, set
 * a specific stele_errmsg(), and leave the store exactly as it was ($all,
 * stream heads and stats compared before and after). Positive controls sit
 * right at each limit (255-byte names, types and tags, 64 tags, events and
 * appends just under the size limits). Also: stele_open on a file, twice on
 * one store (ELOCKED, in this process and from another one), NOCREATE, the
 * error-name table, and UUID parse/format.
 */
#include "testutil.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024u * 1024u)
#define MAX_EVENT (1 * MiB)
#define MAX_APPEND (2 * MiB)
/* a size error names the size or the limit */
#define SIZE_WORDS "limit|size|large|big|bytes"

static stele_db *db;
static const char *dir;
static stele_options opts;
static int cases;
static int quick; /* TEST_QUICK: under valgrind */

/* ------------------------------------------------------------ snapshots */

typedef struct snap {
    stele_stats stats;
    size_t n;
    struct {
        uint8_t id[16];
        char stream[300];
        uint64_t revision, position;
        size_t data_len;
    } ev[64];
    stele_stream_info heads[8];
    int head_rc[8];
} snap;

static const char *head_names[8] = {"existing", "ok-255", "ok-type", "ok-tags", "ok-big", "ok-append",
                                    "fresh", "tomb-target"};

static void take(snap *s)
{
    memset(s, 0, sizeof *s);
    CHECK_OK(stele_get_stats(db, &s->stats));
    stele_page *page = NULL;
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 64, &page));
    s->n = stele_page_count(page);
    CHECK(s->n < 64);
    for (size_t i = 0; i < s->n && i < 64; i++) {
        const stele_event *e = stele_page_event(page, i);
        memcpy(s->ev[i].id, e->id, 16);
        snprintf(s->ev[i].stream, sizeof s->ev[i].stream, "%s", e->stream);
        s->ev[i].revision = e->revision;
        s->ev[i].position = e->position;
        s->ev[i].data_len = e->data_len;
    }
    stele_page_free(page);
    for (int i = 0; i < 8; i++)
        s->head_rc[i] = stele_stream_head(db, head_names[i], &s->heads[i]);
}

static void same(const snap *a, const snap *b, const char *what)
{
    int ok = 1;
    if (a->stats.events != b->stats.events || a->stats.streams != b->stats.streams ||
        a->stats.readonly != b->stats.readonly) {
        fprintf(stderr, "%s: stats changed: events %" PRIu64 " -> %" PRIu64 ", streams %" PRIu64
                        " -> %" PRIu64 ", readonly %d -> %d\n",
                what, a->stats.events, b->stats.events, a->stats.streams, b->stats.streams,
                a->stats.readonly, b->stats.readonly);
        ok = 0;
    }
    if (a->n != b->n) {
        fprintf(stderr, "%s: $all had %zu events, now %zu\n", what, a->n, b->n);
        ok = 0;
    } else {
        for (size_t i = 0; i < a->n; i++)
            if (memcmp(a->ev[i].id, b->ev[i].id, 16) || strcmp(a->ev[i].stream, b->ev[i].stream) ||
                a->ev[i].revision != b->ev[i].revision || a->ev[i].position != b->ev[i].position ||
                a->ev[i].data_len != b->ev[i].data_len) {
                fprintf(stderr, "%s: $all event %zu changed\n", what, i);
                ok = 0;
            }
    }
    for (int i = 0; i < 8; i++) {
        const stele_stream_info *x = &a->heads[i], *y = &b->heads[i];
        if (a->head_rc[i] != b->head_rc[i] ||
            (a->head_rc[i] == 0 &&
             (x->last_revision != y->last_revision || x->last_position != y->last_position ||
              x->truncate_before != y->truncate_before || x->deleted != y->deleted ||
              x->tombstoned != y->tombstoned))) {
            fprintf(stderr, "%s: head of \"%s\" changed (rc %d -> %d)\n", what, head_names[i],
                    a->head_rc[i], b->head_rc[i]);
            ok = 0;
        }
    }
    if (!ok) {
        fprintf(stderr, "%s: the store changed after a rejected call\n", what);
        t_failures++;
        t_fail_hook();
    }
}

/* errmsg: non-empty and, if `kw` is given, mentions it (any case; "a|b"
 * means either) */
static void check_msg(const char *what, const char *kw)
{
    const char *m = stele_errmsg();
    if (!m || !*m) {
        fprintf(stderr, "%s: stele_errmsg() is empty after a failure\n", what);
        t_failures++;
        t_fail_hook();
        return;
    }
    int found = kw == NULL;
    for (const char *k = kw; k && *k && !found;) {
        const char *bar = strchr(k, '|');
        size_t len = bar ? (size_t)(bar - k) : strlen(k);
        char one[64];
        snprintf(one, sizeof one, "%.*s", (int)len, k);
        found = strcasestr(m, one) != NULL;
        k = bar ? bar + 1 : k + len;
    }
    if (!found) {
        fprintf(stderr, "%s: stele_errmsg() \"%s\" does not mention \"%s\"\n", what, m, kw);
        t_failures++;
        t_fail_hook();
    }
}

static void expect_rc(int rc, int want, const char *what)
{
    if (rc != want) {
        fprintf(stderr, "%s: returned %d (%s: %s), want %d (%s)\n", what, rc, stele_errname(rc),
                stele_errmsg(), want, stele_errname(want));
        t_failures++;
        t_fail_hook();
    }
}

/* ---------------------------------------------------------- event helper */

static uint8_t idpool[256][16];
static int idnext;

static const uint8_t *fresh_id(void)
{
    uint8_t *id = idpool[idnext++ % 256];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)t_rand();
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40);
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
    return id;
}

static stele_event_in good_event(void)
{
    stele_event_in e;
    memset(&e, 0, sizeof e);
    e.id = fresh_id();
    e.type = "Good";
    e.data = "{\"a\":1}";
    e.data_len = 7;
    e.metadata = "{}";
    e.metadata_len = 2;
    e.flags = STELE_EVENT_JSON | STELE_META_JSON;
    return e;
}

/* Append [good, bad, good] (or just `bad` when alone) and expect `want`. */
static void bad_append(const char *what, const char *stream, int64_t expected, stele_event_in bad,
                       int want, const char *kw)
{
    snap a, b;
    take(&a);
    stele_event_in ev[3] = {good_event(), bad, good_event()};
    stele_append_result res;
    int rc = stele_append(db, stream, expected, ev, 3, &res);
    expect_rc(rc, want, what);
    if (rc != 0)
        check_msg(what, kw);
    take(&b);
    same(&a, &b, what);
    /* the bad event alone, too */
    ev[0] = bad;
    rc = stele_append(db, stream, expected, ev, 1, &res);
    expect_rc(rc, want, what);
    if (rc != 0)
        check_msg(what, kw);
    take(&b);
    same(&a, &b, what);
    cases++;
}

static void good_append(const char *what, const char *stream, stele_event_in *ev, size_t n)
{
    stele_append_result res;
    int rc = stele_append(db, stream, STELE_ANY, ev, n, &res);
    expect_rc(rc, 0, what);
    cases++;
}

static stele_event_in with_type(const char *type)
{
    stele_event_in e = good_event();
    e.type = type;
    return e;
}

/* ----------------------------------------------------------------- tests */

static void test_empty_and_null(void)
{
    snap a, b;
    take(&a);
    stele_event_in ev = good_event();
    stele_append_result res;
    expect_rc(stele_append(db, "existing", STELE_ANY, &ev, 0, &res), STELE_EINVAL, "append n=0");
    check_msg("append n=0", NULL);
    expect_rc(stele_append(db, "existing", STELE_ANY, NULL, 1, &res), STELE_EINVAL, "append events=NULL");
    check_msg("append events=NULL", NULL);
    expect_rc(stele_append(db, "existing", STELE_ANY, NULL, 0, &res), STELE_EINVAL, "append NULL, 0");
    check_msg("append NULL, 0", NULL);
    expect_rc(stele_append(db, NULL, STELE_ANY, &ev, 1, &res), STELE_EINVAL, "append stream=NULL");
    check_msg("append stream=NULL", "stream");
    take(&b);
    same(&a, &b, "empty/NULL appends");

    stele_event_in e = good_event();
    e.data = NULL;
    e.data_len = 10;
    bad_append("data NULL with data_len 10", "existing", STELE_ANY, e, STELE_EINVAL, "data");
    e = good_event();
    e.metadata = NULL;
    e.metadata_len = 10;
    bad_append("metadata NULL with metadata_len 10", "existing", STELE_ANY, e, STELE_EINVAL, "metadata");
    cases += 4;
}

static void test_stream_names(void)
{
    char n256[257], n255[256];
    memset(n256, 'a', 256);
    n256[256] = 0;
    memset(n255, 'b', 255);
    n255[255] = 0;
    static const struct {
        const char *name, *what;
    } bad[] = {
        {"", "empty stream name"},
        {"a\x01" "b", "stream name with \\x01"},
        {"a\x7f" "b", "stream name with DEL \\x7f"},
        {"a\xc2\x85" "b", "stream name with C1 control U+0085"},
        {"tab\there", "stream name with a tab"},
        {"nl\n", "stream name with a newline"},
        {"a\x80" "b", "stream name with a lone continuation byte"},
        {"a\xc0\x80" "b", "stream name with overlong C0 80"},
        {"a\xed\xa0\x80" "b", "stream name with surrogate ED A0 80"},
        {"trunc\xe2\x82", "stream name with truncated UTF-8"},
        {"a\xf4\x90\x80\x80", "stream name above U+10FFFF"},
        {"a\xff", "stream name with byte FF"},
        {"$all", "stream name $all"},
        {"$x", "stream name starting with $"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bad_append(bad[i].what, bad[i].name, STELE_ANY, good_event(), STELE_EINVAL, "stream");
        /* delete and tombstone validate the name too (tombstone works on
         * never-written names, so only validation can refuse it) */
        snap a, b;
        take(&a);
        uint64_t cur;
        char what[200];
        snprintf(what, sizeof what, "tombstone: %s", bad[i].what);
        expect_rc(stele_tombstone_stream(db, bad[i].name, STELE_ANY, &cur), STELE_EINVAL, what);
        check_msg(what, "stream");
        snprintf(what, sizeof what, "soft delete: %s", bad[i].what);
        expect_rc(stele_delete_stream(db, bad[i].name, STELE_ANY, &cur), STELE_EINVAL, what);
        check_msg(what, "stream");
        take(&b);
        same(&a, &b, bad[i].what);
    }
    bad_append("256-byte stream name", n256, STELE_ANY, good_event(), STELE_EINVAL, "stream");
    {
        snap a, b;
        take(&a);
        uint64_t cur;
        expect_rc(stele_tombstone_stream(db, n256, STELE_ANY, &cur), STELE_EINVAL, "tombstone 256-byte name");
        take(&b);
        same(&a, &b, "tombstone 256-byte name");
    }
    /* reads with an empty or NULL name */
    stele_page *page = NULL;
    expect_rc(stele_read_stream(db, "", 0, STELE_FORWARDS, 10, &page), STELE_EINVAL, "read empty name");
    check_msg("read empty name", NULL);
    expect_rc(stele_read_stream(db, NULL, 0, STELE_FORWARDS, 10, &page), STELE_EINVAL, "read NULL name");
    check_msg("read NULL name", NULL);
    stele_stream_info info;
    expect_rc(stele_stream_head(db, NULL, &info), STELE_EINVAL, "head NULL name");
    check_msg("head NULL name", NULL);
    expect_rc(stele_stream_head(db, "", &info), STELE_EINVAL, "head empty name");
    check_msg("head empty name", NULL);

    /* 255 bytes is allowed, multibyte at the very end too */
    stele_event_in ev = good_event();
    good_append("255-byte stream name", n255, &ev, 1);
    char mb[256];
    memset(mb, 'c', 253);
    memcpy(mb + 253, "\xc3\xa9", 3); /* 253 + 2 bytes = 255, NUL */
    ev = good_event();
    good_append("255-byte stream name ending in a 2-byte char", mb, &ev, 1);
    expect_rc(stele_read_stream(db, n255, 0, STELE_FORWARDS, 10, &page), 0, "read 255-byte name");
    if (page) {
        CHECK(stele_page_count(page) == 1);
        if (stele_page_count(page) == 1) {
            const stele_event *e = stele_page_event(page, 0);
            CHECK(e->stream_len == 255 && strcmp(e->stream, n255) == 0);
        }
        stele_page_free(page);
    }
    cases += 6;
}

static void test_types(void)
{
    char t256[257], t255[256];
    memset(t256, 'T', 256);
    t256[256] = 0;
    memset(t255, 'U', 255);
    t255[255] = 0;
    bad_append("type NULL", "existing", STELE_ANY, with_type(NULL), STELE_EINVAL, "type");
    bad_append("type empty", "existing", STELE_ANY, with_type(""), STELE_EINVAL, "type");
    bad_append("type 256 bytes", "existing", STELE_ANY, with_type(t256), STELE_EINVAL, "type");
    bad_append("type bad UTF-8", "existing", STELE_ANY, with_type("Bad\xc3"), STELE_EINVAL, "type");
    bad_append("type overlong UTF-8", "existing", STELE_ANY, with_type("Bad\xc0\xaf"), STELE_EINVAL, "type");
    bad_append("type with \\x01", "existing", STELE_ANY, with_type("Ctl\x01x"), STELE_EINVAL, "type");
    bad_append("type with newline", "existing", STELE_ANY, with_type("Ctl\n"), STELE_EINVAL, "type");
    bad_append("type with U+0085", "existing", STELE_ANY, with_type("Ctl\xc2\x85"), STELE_EINVAL, "type");
    stele_event_in ev = with_type(t255);
    good_append("type 255 bytes", "ok-type", &ev, 1);
    ev = with_type("\xe4\xba\x8b\xe4\xbb\xb6"); /* 事件 */
    good_append("type multibyte", "ok-type", &ev, 1);
}

static void test_tags(void)
{
    static char tagbuf[65][8];
    const char *tags[66];
    for (int i = 0; i < 65; i++) {
        snprintf(tagbuf[i], sizeof tagbuf[i], "t%d", i);
        tags[i] = tagbuf[i];
    }
    stele_event_in e = good_event();
    e.tags = tags;
    e.ntags = 65;
    bad_append("65 tags", "existing", STELE_ANY, e, STELE_EINVAL, "tag");

    const char *empty_tag[] = {"fine", ""};
    e = good_event();
    e.tags = empty_tag;
    e.ntags = 2;
    bad_append("empty tag", "existing", STELE_ANY, e, STELE_EINVAL, "tag");

    const char *bad_utf8[] = {"x\xc3"};
    e = good_event();
    e.tags = bad_utf8;
    e.ntags = 1;
    bad_append("tag with bad UTF-8", "existing", STELE_ANY, e, STELE_EINVAL, "tag");

    const char *surrogate[] = {"ok", "x\xed\xb0\x80"};
    e = good_event();
    e.tags = surrogate;
    e.ntags = 2;
    bad_append("tag with a surrogate", "existing", STELE_ANY, e, STELE_EINVAL, "tag");

    static char t256[257], t255[256];
    memset(t256, 'g', 256);
    memset(t255, 'h', 255);
    const char *long_tag[] = {t256};
    e = good_event();
    e.tags = long_tag;
    e.ntags = 1;
    bad_append("tag of 256 bytes", "existing", STELE_ANY, e, STELE_EINVAL, "tag");

    const char *null_tag[] = {"a", NULL};
    e = good_event();
    e.tags = null_tag;
    e.ntags = 2;
    bad_append("NULL tag", "existing", STELE_ANY, e, STELE_EINVAL, "tag");

    e = good_event();
    e.tags = NULL;
    e.ntags = 2;
    bad_append("tags NULL with ntags 2", "existing", STELE_ANY, e, STELE_EINVAL, "tag");

    /* 64 tags, and a 255-byte tag, are fine */
    e = good_event();
    e.tags = tags;
    e.ntags = 64;
    good_append("64 tags", "ok-tags", &e, 1);
    const char *ok_long[] = {t255};
    e = good_event();
    e.tags = ok_long;
    e.ntags = 1;
    good_append("255-byte tag", "ok-tags", &e, 1);
    stele_page *page = NULL;
    expect_rc(stele_read_stream(db, "ok-tags", 0, STELE_FORWARDS, 10, &page), 0, "read ok-tags");
    if (page) {
        CHECK(stele_page_count(page) == 2);
        if (stele_page_count(page) == 2) {
            const stele_event *x = stele_page_event(page, 0), *y = stele_page_event(page, 1);
            CHECK(x->ntags == 64);
            for (size_t i = 0; i < x->ntags && i < 64; i++)
                CHECK(strcmp(x->tags[i], tags[i]) == 0);
            CHECK(y->ntags == 1 && strcmp(y->tags[0], t255) == 0);
        }
        stele_page_free(page);
    }
}

static void test_ids(void)
{
    static const uint8_t nil[16];
    stele_event_in e = good_event();
    e.id = nil;
    bad_append("nil UUID", "existing", STELE_ANY, e, STELE_EINVAL, "id");

    /* duplicate id inside one append (also with NULL ids around) */
    snap a, b;
    take(&a);
    stele_event_in ev[4] = {good_event(), good_event(), good_event(), good_event()};
    ev[3].id = ev[1].id;
    ev[0].id = NULL;
    stele_append_result res;
    int rc = stele_append(db, "existing", STELE_ANY, ev, 4, &res);
    expect_rc(rc, STELE_EINVAL, "duplicate id in one append");
    if (rc != 0)
        check_msg("duplicate id in one append", "id|twice|duplicate");
    rc = stele_append(db, "fresh", STELE_NO_STREAM, ev + 1, 3, &res);
    expect_rc(rc, STELE_EINVAL, "duplicate id in one append to a new stream");
    if (rc != 0)
        check_msg("duplicate id in one append to a new stream", "id");
    take(&b);
    same(&a, &b, "duplicate id in one append");
    cases += 2;
}

static void test_sizes(void)
{
    size_t big = MAX_EVENT + 1;
    uint8_t *buf = calloc(1, 3 * MiB);
    for (size_t i = 0; i < 3 * MiB; i++)
        buf[i] = (uint8_t)(i * 31 + 7);

    stele_event_in e = good_event();
    e.data = buf;
    e.data_len = big;
    e.flags = 0;
    bad_append("event data over max_event_size", "existing", STELE_ANY, e, STELE_ETOOBIG, SIZE_WORDS);

    e = good_event();
    e.metadata = buf;
    e.metadata_len = big;
    e.flags = 0;
    bad_append("event metadata over max_event_size", "existing", STELE_ANY, e, STELE_ETOOBIG, SIZE_WORDS);

    e = good_event();
    e.data = buf;
    e.data_len = 600 * 1024;
    e.metadata = buf + 1;
    e.metadata_len = 600 * 1024;
    e.flags = 0;
    bad_append("event data + metadata over max_event_size", "existing", STELE_ANY, e, STELE_ETOOBIG,
               SIZE_WORDS);

    /* an append over max_append_size whose events are each fine */
    snap a, b;
    take(&a);
    stele_event_in ev[3];
    for (int i = 0; i < 3; i++) {
        ev[i] = good_event();
        ev[i].data = buf + i;
        ev[i].data_len = 800 * 1024;
        ev[i].flags = 0;
    }
    stele_append_result res;
    int rc = stele_append(db, "existing", STELE_ANY, ev, 3, &res);
    expect_rc(rc, STELE_ETOOBIG, "append of 3 x 800 KiB over max_append_size 2 MiB");
    if (rc != 0)
        check_msg("append over max_append_size", SIZE_WORDS);
    take(&b);
    same(&a, &b, "append over max_append_size");
    cases++;

    /* just under the limits is fine, and the bytes come back */
    e = good_event();
    e.data = buf;
    e.data_len = MAX_EVENT - 64 * 1024;
    e.flags = 0;
    good_append("event of 960 KiB", "ok-big", &e, 1);
    ev[0].id = fresh_id();
    ev[1].id = fresh_id();
    good_append("append of 2 x 800 KiB", "ok-append", ev, 2);
    stele_page *page = NULL;
    expect_rc(stele_read_stream(db, "ok-big", 0, STELE_FORWARDS, 10, &page), 0, "read ok-big");
    if (page) {
        CHECK(stele_page_count(page) == 1);
        if (stele_page_count(page) == 1) {
            const stele_event *x = stele_page_event(page, 0);
            CHECK(x->data_len == MAX_EVENT - 64 * 1024 && memcmp(x->data, buf, x->data_len) == 0);
        }
        stele_page_free(page);
    }
    free(buf);
}

static void test_expected_values(void)
{
    static const int64_t bad[] = {-3, -5, -100, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char what[100];
        snprintf(what, sizeof what, "append with expected revision %" PRId64, bad[i]);
        bad_append(what, "existing", bad[i], good_event(), STELE_EINVAL, "expected");
        snap a, b;
        take(&a);
        uint64_t cur;
        snprintf(what, sizeof what, "delete with expected revision %" PRId64, bad[i]);
        expect_rc(stele_delete_stream(db, "existing", bad[i], &cur), STELE_EINVAL, what);
        check_msg(what, "expected");
        snprintf(what, sizeof what, "tombstone with expected revision %" PRId64, bad[i]);
        expect_rc(stele_tombstone_stream(db, "tomb-target", bad[i], &cur), STELE_EINVAL, what);
        check_msg(what, "expected");
        take(&b);
        same(&a, &b, what);
        cases += 2;
    }
}

static void test_reads_and_outs(void)
{
    stele_page *page = (stele_page *)0;
    snap a, b;
    take(&a);
    expect_rc(stele_read_stream(db, "existing", 0, 2, 10, &page), STELE_EINVAL, "read_stream direction 2");
    check_msg("read_stream direction 2", "direction");
    expect_rc(stele_read_stream(db, "existing", 0, -1, 10, &page), STELE_EINVAL, "read_stream direction -1");
    check_msg("read_stream direction -1", "direction");
    expect_rc(stele_read_all(db, 0, 2, 10, &page), STELE_EINVAL, "read_all direction 2");
    check_msg("read_all direction 2", "direction");
    expect_rc(stele_read_all(db, 0, -7, 10, &page), STELE_EINVAL, "read_all direction -7");
    check_msg("read_all direction -7", "direction");
    expect_rc(stele_read_stream(db, "existing", 0, STELE_FORWARDS, 10, NULL), STELE_EINVAL,
              "read_stream out=NULL");
    check_msg("read_stream out=NULL", NULL);
    expect_rc(stele_read_all(db, 0, STELE_FORWARDS, 10, NULL), STELE_EINVAL, "read_all out=NULL");
    check_msg("read_all out=NULL", NULL);
    expect_rc(stele_stream_head(db, "existing", NULL), STELE_EINVAL, "stream_head info=NULL");
    check_msg("stream_head info=NULL", NULL);
    expect_rc(stele_get_stats(db, NULL), STELE_EINVAL, "get_stats out=NULL");
    check_msg("get_stats out=NULL", NULL);
    stele_db *x = NULL;
    expect_rc(stele_open(NULL, NULL, &x), STELE_EINVAL, "open dir=NULL");
    check_msg("open dir=NULL", NULL);
    expect_rc(stele_open(dir, NULL, NULL), STELE_EINVAL, "open out=NULL");
    check_msg("open out=NULL", NULL);
    take(&b);
    same(&a, &b, "bad reads");
    /* res and current may be NULL on success */
    stele_event_in e = good_event();
    expect_rc(stele_append(db, "existing", STELE_ANY, &e, 1, NULL), 0, "append res=NULL");
    cases += 11;
}

static void test_open(void)
{
    /* a file, not a directory (in a scratch directory of its own) */
    const char *scratch = t_tmpdir("limits-misc");
    char path[600];
    snprintf(path, sizeof path, "%s/plain-file", scratch);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, "not a store\n", 12) == 12);
    close(fd);
    stele_db *x = NULL;
    int rc = stele_open(path, NULL, &x);
    if (rc == 0) {
        fprintf(stderr, "stele_open on a regular file succeeded\n");
        t_failures++;
        stele_close(x);
        t_fail_hook();
    } else {
        check_msg("stele_open on a file", NULL);
    }
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size == 12);

    /* a path below a file */
    snprintf(path, sizeof path, "%s/plain-file/store", scratch);
    rc = stele_open(path, NULL, &x);
    CHECK(rc != 0);
    if (rc == 0)
        stele_close(x);
    else
        check_msg("stele_open below a file", NULL);

    /* NOCREATE on a missing directory */
    snprintf(path, sizeof path, "%s/missing", scratch);
    stele_options o;
    memset(&o, 0, sizeof o);
    o.flags = STELE_OPEN_NOCREATE;
    expect_rc(stele_open(path, &o, &x), STELE_ENOTFOUND, "open NOCREATE missing dir");
    check_msg("open NOCREATE missing dir", NULL);
    CHECK(stat(path, &sb) != 0 && errno == ENOENT);
    t_rmdir(scratch);

    /* the same store twice in this process */
    snap a, b;
    take(&a);
    x = NULL;
    rc = stele_open(dir, &opts, &x);
    expect_rc(rc, STELE_ELOCKED, "second stele_open of an open store (same process)");
    if (rc == 0)
        stele_close(x);
    else
        check_msg("second stele_open", NULL);
    /* ... and from another process (skipped under valgrind, TEST_QUICK:
     * each open there costs about a minute) */
    pid_t pid;
    int status = 0;
    if (!quick) {
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid == 0) {
            stele_db *y = NULL;
            int r = stele_open(dir, &opts, &y);
            _exit(r == STELE_ELOCKED ? 0 : r == 0 ? 100 : 101);
        }
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "stele_open from another process while open: %s\n",
                    WIFEXITED(status) && WEXITSTATUS(status) == 100 ? "succeeded"
                                                                    : "failed, but not with ELOCKED");
            t_failures++;
            t_fail_hook();
        }
    }
    /* the first handle still works */
    stele_event_in e = good_event();
    good_append("append after a refused second open", "existing", &e, 1);
    take(&b);
    CHECK(b.stats.events == a.stats.events + 1);

    /* after close, another process may open it */
    if (quick)
        return;
    stele_close(db);
    db = NULL;
    pid = fork();
    if (pid == 0) {
        stele_db *y = NULL;
        int r = stele_open(dir, &opts, &y);
        if (r == 0)
            stele_close(y);
        _exit(r == 0 ? 0 : 1);
    }
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_OK(stele_open(dir, &opts, &db));
    cases += 6;
}

static void test_errnames(void)
{
    CHECK(strcmp(stele_errname(0), "OK") == 0);
    CHECK(strcmp(stele_errname(STELE_EWRONGREV), "WRONGREV") == 0);
    CHECK(strcmp(stele_errname(STELE_ELOCKED), "LOCKED") == 0);
    CHECK(strcmp(stele_errname(STELE_EINTERNAL), "INTERNAL") == 0);
    CHECK(strcmp(stele_strerror(STELE_EWRONGREV), "wrong expected revision") == 0);
    for (int c = 0; c >= -20; c--) {
        CHECK(stele_strerror(c) != NULL && stele_strerror(c)[0] != 0);
        CHECK(stele_errname(c) != NULL && stele_errname(c)[0] != 0);
    }
    CHECK(stele_strerror(12345) != NULL && stele_errname(12345) != NULL);
    cases++;
}

static void test_uuid(void)
{
    static const uint8_t v[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                  0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    char s[37];
    memset(s, 'X', sizeof s);
    stele_uuid_format(v, s);
    CHECK(strcmp(s, "00112233-4455-6677-8899-aabbccddeeff") == 0);
    uint8_t out[16];
    CHECK_OK(stele_uuid_parse("00112233-4455-6677-8899-AABBCCDDEEFF", out));
    CHECK(memcmp(out, v, 16) == 0);
    CHECK_OK(stele_uuid_parse("00112233-4455-6677-8899-aAbBcCdDeEfF", out));
    CHECK(memcmp(out, v, 16) == 0);
    for (int k = 0; k < 1000; k++) {
        uint8_t id[16], back[16];
        for (int i = 0; i < 16; i++)
            id[i] = (uint8_t)t_rand();
        stele_uuid_format(id, s);
        CHECK(strlen(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-');
        for (int i = 0; i < 36; i++)
            if (i != 8 && i != 13 && i != 18 && i != 23)
                CHECK(isxdigit((unsigned char)s[i]) && !isupper((unsigned char)s[i]));
        CHECK_OK(stele_uuid_parse(s, back));
        CHECK(memcmp(id, back, 16) == 0);
    }
    static const char *bad[] = {
        "",
        "00112233-4455-6677-8899-aabbccddeef",    /* short */
        "00112233-4455-6677-8899-aabbccddeeff0",  /* long */
        "001122334455-6677-8899-aabbccddeeff-",   /* hyphens misplaced */
        "00112233 4455 6677 8899 aabbccddeeff",
        "00112233-4455-6677-8899-aabbccddeefg",   /* not hex */
        "0011223-34455-6677-8899-aabbccddeeff",
        "{00112233-4455-6677-8899-aabbccddeeff}",
        "00112233445566778899aabbccddeeff",
        "00112233-4455-6677-8899-aabbccddee\xc3\xbf",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(out, 0x5a, 16);
        int rc = stele_uuid_parse(bad[i], out);
        if (rc != STELE_EINVAL) {
            fprintf(stderr, "stele_uuid_parse(\"%s\") = %d, want EINVAL\n", bad[i], rc);
            t_failures++;
            t_fail_hook();
        }
    }
    CHECK(stele_uuid_parse(NULL, out) == STELE_EINVAL);
    cases++;
}

int main(void)
{
    t_seed();
    quick = getenv("TEST_QUICK") != NULL && atoi(getenv("TEST_QUICK")) != 0;
    dir = t_tmpdir("limits");
    memset(&opts, 0, sizeof opts);
    opts.max_event_size = MAX_EVENT;
    opts.max_append_size = MAX_APPEND;
    CHECK_OK(stele_open(dir, &opts, &db));

    stele_event_in ev[3] = {good_event(), good_event(), good_event()};
    CHECK_OK(stele_append(db, "existing", STELE_NO_STREAM, ev, 3, NULL));
    ev[0] = good_event();
    CHECK_OK(stele_append(db, "tomb-target", STELE_NO_STREAM, ev, 1, NULL));

    test_errnames();
    test_uuid();
    test_empty_and_null();
    test_stream_names();
    test_types();
    test_tags();
    test_ids();
    test_expected_values();
    test_reads_and_outs();
    test_open();
    test_sizes(); /* last: the big events make every later snapshot slow */

    /* the store is sound after all of that */
    snap a, b;
    take(&a);
    stele_close(db);
    db = NULL;
    char report[512] = "";
    int rc = stele_check(dir, report, sizeof report);
    expect_rc(rc, 0, "stele_check at the end");
    CHECK_OK(stele_open(dir, &opts, &db));
    take(&b);
    same(&a, &b, "reopen at the end");
    stele_close(db);
    t_rmdir(dir);
    return t_done("test_limits", cases);
}
