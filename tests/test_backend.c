/*
 * test_backend.c - choosing a backend by the store URI (src/backend/
 * backend.c): a plain directory, file:DIR and file:///DIR open the local
 * engine on the same store; unknown schemes, malformed file: URIs and
 * backends this build lacks fail with EINVAL and a message that says why;
 * a backend whose ops implement another contract version is refused and
 * closed. Then the rest of the contract the local engine keeps: position
 * ops agree with $all reads, pages built from neutral fields hold copies
 * (strings NUL-terminated), and the append limit applies to the neutral
 * measure (72 bytes per event plus its parts).
 */
#include <string.h>

#include "backend/backend.h"
#include "backend/page.h"
#include "testutil.h"

static int passed;

static void append_one(stele_db *db, const char *stream, int64_t expected)
{
    stele_event_in ev = {.type = "T", .data = "{}", .data_len = 2, .flags = STELE_EVENT_JSON};
    stele_append_result res;
    CHECK_OK(stele_append(db, stream, expected, &ev, 1, &res));
}

static void test_local_forms(void)
{
    const char *dir = t_tmpdir("backend");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    append_one(db, "s-1", STELE_NO_STREAM);
    stele_close(db);

    /* The same store through file:DIR and file:///DIR (dir is absolute). */
    char uri[4200];
    snprintf(uri, sizeof uri, "file:%s", dir);
    CHECK_OK(stele_open(uri, NULL, &db));
    append_one(db, "s-1", 0);
    stele_close(db);
    CHECK(dir[0] == '/');
    snprintf(uri, sizeof uri, "file://%s", dir);
    CHECK_OK(stele_open(uri, NULL, &db));
    append_one(db, "s-1", 1);
    stele_stream_info info;
    CHECK_OK(stele_stream_head(db, "s-1", &info));
    CHECK(info.last_revision == 2);
    stele_close(db);

    /* A directory named like "a:b" is still a directory. */
    snprintf(uri, sizeof uri, "%s/a:b", dir);
    CHECK_OK(stele_open(uri, NULL, &db));
    stele_close(db);
    CHECK_OK(stele_check(uri, NULL, 0));
    t_rmdir(dir);
    passed++;
}

static void expect_einval(const char *uri, const char *words)
{
    stele_db *db = NULL;
    CHECK_RC(stele_open(uri, NULL, &db), STELE_EINVAL);
    CHECK(db == NULL);
    if (!strstr(stele_errmsg(), words))
        fprintf(stderr, "stele_open(%s): message '%s' lacks '%s'\n", uri, stele_errmsg(), words);
    CHECK(strstr(stele_errmsg(), words) != NULL);
}

static void test_bad_uris(void)
{
    expect_einval("mysql://localhost/db", "unknown scheme");
    expect_einval("file:", "file: URI");
    expect_einval("file://host/dir", "file: URI");
    expect_einval("", "NULL or empty");
    /* stele check refuses what is not a local store. */
    CHECK_RC(stele_check("postgres://localhost/db", NULL, 0), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "local stores") != NULL);
    passed++;
}

/* A backend this build lacks says so; one it has fails to reach a closed
 * port with an error. Either way: no handle, a message. */
static void test_other_backends(void)
{
    const char *uris[] = {"postgres://stele@127.0.0.1:1/none?connect_timeout=2",
                          "postgresql://stele@127.0.0.1:1/none?connect_timeout=2",
                          "dynamodb://t?endpoint=http://127.0.0.1:1&region=us-east-1"};
    for (size_t i = 0; i < sizeof uris / sizeof uris[0]; i++) {
        stele_db *db = NULL;
        int rc = stele_open(uris[i], NULL, &db);
        CHECK(rc != 0);
        CHECK(db == NULL);
        CHECK(stele_errmsg()[0] != 0);
        if (rc == STELE_EINVAL && strstr(stele_errmsg(), "this build has no"))
            CHECK(strstr(stele_errmsg(), i < 2 ? "PostgreSQL" : "DynamoDB") != NULL);
    }
    passed++;
}

static int fake_closed;
static void fake_close(backend *b)
{
    (void)b;
    fake_closed++;
}

static void test_version(void)
{
    backend_ops ops = {.version = BACKEND_OPS_VERSION + 1, .name = "fake", .close = fake_close};
    backend b = {.ops = &ops};
    CHECK_RC(backend_check_version(&b), STELE_EINTERNAL);
    CHECK(fake_closed == 1);
    CHECK(strstr(stele_errmsg(), "fake") != NULL);
    ops.version = BACKEND_OPS_VERSION;
    CHECK_OK(backend_check_version(&b));
    CHECK(fake_closed == 1);
    passed++;
}

/* Position ops against what $all reads return. */
static void test_positions(void)
{
    const char *dir = t_tmpdir("backend-pos");
    stele_db *db;
    CHECK_OK(stele_open(dir, NULL, &db));
    uint64_t head = 99;
    CHECK_OK(stele_position_head(db, &head));
    CHECK(head == 0); /* empty */
    CHECK(stele_position_after(db, STELE_NONE) == 0);
    CHECK(stele_position_before(db, 0) == STELE_NONE);
    for (int i = 0; i < 5; i++)
        append_one(db, i % 2 ? "a-1" : "b-1", STELE_ANY);
    CHECK_OK(stele_position_head(db, &head));
    stele_page *pg;
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 100, &pg));
    CHECK(stele_page_count(pg) == 5);
    for (size_t i = 0; i + 1 < stele_page_count(pg); i++) {
        uint64_t p = stele_page_event(pg, i)->position, q = stele_page_event(pg, i + 1)->position;
        CHECK(p < q);
        CHECK(stele_position_after(db, p) <= q);
        CHECK(stele_position_before(db, stele_position_after(db, p)) == p);
    }
    uint64_t last = stele_page_event(pg, 4)->position;
    stele_page_free(pg);
    CHECK(stele_position_after(db, last) == head);
    CHECK(stele_position_before(db, head) == last);
    /* Reading from the cursor after an event starts after it. */
    CHECK_OK(stele_read_all(db, stele_position_after(db, last), STELE_FORWARDS, 10, &pg));
    CHECK(stele_page_count(pg) == 0);
    stele_page_free(pg);
    CHECK_RC(stele_position_head(db, NULL), STELE_EINVAL);
    stele_close(db);
    t_rmdir(dir);
    passed++;
}

/* page_add copies neutral fields; the copies are C strings. */
static void test_page(void)
{
    pool *pl = pool_new();
    CHECK(pl != NULL);
    stele_page *pg;
    CHECK_OK(page_new(pl, &pg));
    char stream[] = "Order-1xx", type[] = "Placed", data[] = "{\"a\":1}", meta[] = "";
    char t1[] = "tenant:acme", t2[] = "x";
    const char *tags[] = {t1, t2};
    uint8_t id[16] = {1, 2, 3};
    page_event in = {.stream = stream, .stream_len = 7, .type = type, .type_len = 6,
                     .tags = tags, .ntags = 2, .data = data, .data_len = 7,
                     .metadata = meta, .metadata_len = 0, .id = id,
                     .flags = STELE_EVENT_JSON | 0x80u, .created_us = 42, .revision = 3,
                     .position = 17};
    CHECK_OK(page_add(pg, &in));
    memset(stream, 'z', sizeof stream - 1); /* the page holds copies */
    t1[0] = 'Z';
    data[0] = '[';
    const stele_event *e = stele_page_event(pg, 0);
    CHECK(stele_page_count(pg) == 1);
    CHECK(e->stream_len == 7 && strcmp(e->stream, "Order-1") == 0);
    CHECK(e->type_len == 6 && strcmp(e->type, "Placed") == 0);
    CHECK(e->ntags == 2 && strcmp(e->tags[0], "tenant:acme") == 0 && strcmp(e->tags[1], "x") == 0);
    CHECK(e->data_len == 7 && memcmp(e->data, "{\"a\":1}", 7) == 0 &&
          ((const char *)e->data)[7] == 0);
    CHECK(e->metadata_len == 0 && ((const char *)e->metadata)[0] == 0);
    CHECK(e->id[0] == 1 && e->id[2] == 3 && e->id[15] == 0);
    CHECK(e->flags == STELE_EVENT_JSON); /* backend-private bits dropped */
    CHECK(e->created_us == 42 && e->revision == 3 && e->position == 17);
    CHECK(pg->bytes == PAGE_EVENT_FIXED + 7 + 6 + 7 + 0 + 11 + 1);
    stele_page_free(pg);
    pool_unref(pl);
    passed++;
}

/* The public append limit applies to the neutral measure: 72 bytes per
 * event plus its stream name, type, tags, data and metadata. */
static void test_neutral_size(void)
{
    const char *dir = t_tmpdir("backend-size");
    stele_options o = {.max_append_size = 4096};
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    /* Two events of stream "s-1" (3), type "T" (1), tag "g" (1), data n. */
    static char data[4096];
    memset(data, 'x', sizeof data);
    const char *tags[] = {"g"};
    size_t fixed = 72 + 3 + 1 + 1, n = (4096 - 2 * fixed) / 2;
    stele_event_in ev[2] = {{.type = "T", .data = data, .data_len = n, .tags = tags, .ntags = 1},
                            {.type = "T", .data = data, .data_len = n, .tags = tags, .ntags = 1}};
    stele_append_result res;
    CHECK_OK(stele_append(db, "s-1", STELE_ANY, ev, 2, &res)); /* exactly 4096 */
    ev[1].data_len = n + 1;
    CHECK_RC(stele_append(db, "s-1", STELE_ANY, ev, 2, &res), STELE_ETOOBIG);
    CHECK(strstr(stele_errmsg(), "4096-byte append limit") != NULL);
    stele_stream_info info;
    CHECK_OK(stele_stream_head(db, "s-1", &info));
    CHECK(info.last_revision == 1); /* the refused append wrote nothing */
    stele_close(db);
    t_rmdir(dir);
    passed++;
}

int main(void)
{
    test_local_forms();
    test_bad_uris();
    test_other_backends();
    test_version();
    test_positions();
    test_page();
    test_neutral_size();
    return t_done("test_backend", passed);
}
