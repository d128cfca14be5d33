/*
 * test_backend.c - choosing a backend by the store URI (src/backend/
 * backend.c): a plain directory, file:DIR and file:///DIR open the local
 * engine on the same store; unknown schemes, malformed file: URIs and
 * backends this build lacks fail with EINVAL and a message that says why;
 * a backend whose ops implement another contract version is refused and
 * closed.
 */
#include <string.h>

#include "backend/backend.h"
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

int main(void)
{
    test_local_forms();
    test_bad_uris();
    test_other_backends();
    test_version();
    return t_done("test_backend", passed);
}
