/*
 * test_rules.c - rules through the public API (include/stele.h, "rules"),
 * in process, no network: definitions and bad input (nothing stored),
 * delivery to a stream target (copy and link) in order, exactly one copy
 * per event across a close and reopen, a webhook to a closed port going to
 * the dead-letter stream after its attempts, redrive, replays of a
 * position window, pause/resume, group rewind, and the rule surviving a
 * reopen. Runs under ASan and valgrind (label unit). No timing assertion:
 * waits poll with a generous deadline.
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static void append_n(stele_db *db, const char *stream, int n, const char *type, int from)
{
    char data[64];
    for (int i = 0; i < n; i++) {
        stele_event_in e = {.type = type, .data = data, .flags = STELE_EVENT_JSON,
                            .data_len = (size_t)snprintf(data, sizeof data, "{\"n\":%d}", from + i)};
        CHECK_OK(stele_append(db, stream, STELE_ANY, &e, 1, NULL));
    }
}

static size_t stream_count(stele_db *db, const char *stream)
{
    stele_page *pg = NULL;
    int rc = stele_read_stream(db, stream, 0, STELE_FORWARDS, 100000, &pg);
    size_t n = rc == 0 ? stele_page_count(pg) : 0;
    stele_page_free(pg);
    return n;
}

/* Wait until cond() holds, 60 s at most (generous: valgrind is slow). */
#define WAIT_FOR(cond)                                                           \
    do {                                                                         \
        for (int w_ = 0; w_ < 6000 && !(cond); w_++)                             \
            usleep(10000);                                                       \
        CHECK(cond);                                                             \
    } while (0)

static uint64_t info_field(stele_db *db, const char *name, int which)
{
    stele_rule_info *in = NULL;
    if (stele_rule_get(db, name, &in))
        return UINT64_MAX;
    uint64_t v = which == 0 ? in->delivered : which == 1 ? in->dead_letters
               : which == 2 ? in->matched : in->dead_lettered;
    stele_rule_info_free(in);
    return v;
}

static uint64_t parked_total(stele_db *db, const char *group)
{
    stele_group_info *gi = NULL;
    if (stele_group_get(db, "$all", group, &gi))
        return UINT64_MAX;
    uint64_t v = gi->parked_total;
    stele_group_info_free(gi);
    return v;
}

static void test_bad_input(stele_db *db)
{
    static const char *const bad[] = {
        "{",
        "{}",
        "{\"pattern\":{\"type\":[\"A\"]}}",
        "{\"pattern\":{\"type\":[{\"nope\":1}]},\"target\":{\"type\":\"stream\",\"stream\":\"X\"}}",
        "{\"pattern\":{\"type\":[\"A\"]},\"target\":{\"type\":\"webhook\",\"url\":\"ftp://x\"}}",
        "{\"pattern\":{\"type\":[\"A\"]},\"target\":{\"type\":\"stream\",\"stream\":\"$sys\"}}",
        "{\"pattern\":{\"type\":[\"A\"]},\"target\":{\"type\":\"stream\",\"stream\":\"X\"},\"x\":1}",
        ("{\"pattern\":{\"type\":[\"A\"]},\"target\":{\"type\":\"stream\",\"stream\":\"X\"},"
         "\"retry\":{\"maxAttempts\":1000}}"),
        "{\"pattern\":{\"type\":[\"A\"]},\"pattern\":{},\"target\":{\"type\":\"stream\",\"stream\":\"X\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(stele_rule_put(db, "bad", bad[i], strlen(bad[i]), NULL), STELE_EINVAL);
        CHECK(stele_errmsg()[0] != 0);
    }
    const char *ok = "{\"pattern\":{},\"target\":{\"type\":\"stream\",\"stream\":\"X\"}}";
    CHECK_RC(stele_rule_put(db, "a b", ok, strlen(ok), NULL), STELE_EINVAL);
    CHECK_RC(stele_rule_put(db, "", ok, strlen(ok), NULL), STELE_EINVAL);
    CHECK_RC(stele_rule_delete(db, "none"), STELE_ENOTFOUND);
    stele_rule_info *v = NULL;
    size_t n = 9;
    CHECK_OK(stele_rule_list(db, &v, &n));
    CHECK(n == 0);
    stele_rule_info_free(v);
    stele_stream_info si;
    CHECK_RC(stele_stream_head(db, "$rules", &si), STELE_ENOTFOUND);
    stele_replay_window w = {.from_pos = 10, .to_pos = 5, .has_to = 1};
    CHECK_RC(stele_rule_replay_start(db, "none", &w, NULL), STELE_EINVAL);
}

static void test_stream_targets(stele_db *db)
{
    const char *copy = "{\"pattern\":{\"type\":[{\"prefix\":\"Order\"}]},\"start\":\"beginning\","
                       "\"target\":{\"type\":\"stream\",\"stream\":\"Audit\"}}";
    const char *link = "{\"pattern\":{\"type\":[\"OrderPlaced\"]},\"source\":{\"categories\":[\"Order\"]},"
                       "\"target\":{\"type\":\"stream\",\"stream\":\"Links\",\"mode\":\"link\"}}";
    int created = 0;
    CHECK_OK(stele_rule_put(db, "copy", copy, strlen(copy), &created));
    CHECK(created == 1);
    CHECK_OK(stele_rule_put(db, "link", link, strlen(link), &created));
    append_n(db, "Order-1", 20, "OrderPlaced", 0);
    append_n(db, "Order-1", 5, "Other", 0);
    append_n(db, "Order-2", 10, "OrderShipped", 0);
    WAIT_FOR(stream_count(db, "Audit") == 30);
    WAIT_FOR(stream_count(db, "Links") == 20);
    /* Copies keep each stream's order. */
    stele_page *pg = NULL;
    CHECK_OK(stele_read_stream(db, "Audit", 0, STELE_FORWARDS, 100, &pg));
    int last1 = -1, last2 = -1, ordered = 1;
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        int n = atoi((const char *)e->data + 5);
        int *last = e->type[5] == 'P' ? &last1 : &last2;
        ordered &= n > *last;
        *last = n;
    }
    CHECK(ordered);
    stele_page_free(pg);
    CHECK(info_field(db, "copy", 0) == 30);
    CHECK(info_field(db, "copy", 2) == 30);
    /* Pause: nothing delivered; resume: delivered. */
    CHECK_OK(stele_rule_set_enabled(db, "copy", 0));
    append_n(db, "Order-3", 3, "OrderPlaced", 0);
    WAIT_FOR(stream_count(db, "Links") == 23);
    CHECK(stream_count(db, "Audit") == 30);
    CHECK_OK(stele_rule_set_enabled(db, "copy", 1));
    WAIT_FOR(stream_count(db, "Audit") == 33);
    /* A replay of every position copies nothing twice: copy ids are
     * derived from the source event, so the appends are idempotent. */
    stele_replay_window w = {.from_pos = 0};
    uint64_t id = 0;
    CHECK_OK(stele_rule_replay_start(db, "copy", &w, &id));
    CHECK(id > 0);
    stele_replay_info *ri = NULL;
    size_t n = 0;
    int done = 0;
    for (int k = 0; k < 6000 && !done; k++) {
        CHECK_OK(stele_rule_replays(db, "copy", &ri, &n));
        done = n == 1 && strcmp(ri[0].state, "running") != 0;
        if (done) {
            CHECK(!strcmp(ri[0].state, "done"));
            CHECK(ri[0].matched == 33 && ri[0].delivered == 33);
        }
        stele_replay_info_free(ri);
        if (!done)
            usleep(10000);
    }
    CHECK(done);
    CHECK(stream_count(db, "Audit") == 33);
    CHECK_RC(stele_rule_replay_cancel(db, "copy", 999), STELE_ENOTFOUND);
    /* Several replays at once, beside live delivery: each sees its own
     * window. */
    /* What [0, 10) holds that the rule matches (system events are there too). */
    uint64_t want10 = 0;
    CHECK_OK(stele_read_all(db, 0, STELE_FORWARDS, 10, &pg));
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        want10 += e->stream[0] != '$' && strcmp(e->stream, "Audit") && !strncmp(e->type, "Order", 5);
    }
    stele_page_free(pg);
    CHECK(want10 > 0);
    uint64_t ids[3];
    stele_replay_window ws[3] = {{.from_pos = 0}, {.from_pos = 0, .to_pos = 10, .has_to = 1},
                                 {.from_pos = 5, .to_pos = 5, .has_to = 1}};
    for (int k = 0; k < 3; k++)
        CHECK_OK(stele_rule_replay_start(db, "copy", &ws[k], &ids[k]));
    append_n(db, "Order-4", 2, "OrderPlaced", 0);
    done = 0;
    for (int k = 0; k < 6000 && !done; k++) {
        CHECK_OK(stele_rule_replays(db, "copy", &ri, &n));
        done = 1;
        for (size_t i = 0; i < n; i++)
            done &= strcmp(ri[i].state, "running") != 0;
        if (done) {
            CHECK(n == 4);
            for (size_t i = 0; i < n; i++) {
                if (ri[i].id == ids[0])
                    CHECK(ri[i].matched == 33); /* up to the head when it started */
                if (ri[i].id == ids[1])
                    CHECK(ri[i].matched == want10 && ri[i].scanned == 10);
                if (ri[i].id == ids[2])
                    CHECK(ri[i].matched == 0 && !strcmp(ri[i].state, "done"));
            }
        }
        stele_replay_info_free(ri);
        if (!done)
            usleep(10000);
    }
    CHECK(done);
    WAIT_FOR(stream_count(db, "Audit") == 35);
}

static void test_dead_letters(stele_db *db)
{
    /* Port 1 on localhost: connections are refused at once. */
    const char *hook = "{\"pattern\":{\"type\":[\"Ping\"]},\"start\":\"end\","
                       "\"retry\":{\"maxAttempts\":2,\"backoffMs\":1,\"maxBackoffMs\":2},"
                       "\"target\":{\"type\":\"webhook\",\"url\":\"http://127.0.0.1:1/x\","
                       "\"secret\":\"k\",\"timeoutMs\":1000}}";
    CHECK_OK(stele_rule_put(db, "hook", hook, strlen(hook), NULL));
    append_n(db, "Ping-1", 3, "Ping", 0);
    WAIT_FOR(info_field(db, "hook", 1) == 3);
    stele_page *pg = NULL;
    CHECK_OK(stele_rule_read_dead(db, "hook", 0, 10, &pg));
    CHECK(stele_page_count(pg) == 3);
    if (stele_page_count(pg)) {
        const stele_event *l = stele_page_event(pg, 0);
        CHECK(memmem(l->metadata, l->metadata_len, "2 attempts", 10) != NULL);
    }
    stele_page_free(pg);
    stele_rule_info *in = NULL;
    CHECK_OK(stele_rule_get(db, "hook", &in));
    CHECK(in->failures[STELE_FAIL_CONNECT] == 6);
    CHECK(in->retries == 3);
    CHECK(!strcmp(in->dead_letter_stream, "$persistentsubscription-$all::$rule-hook-parked"));
    stele_rule_info_free(in);
    /* Redrive: they fail again and come back as dead letters. */
    uint64_t cnt = 0;
    CHECK_OK(stele_rule_redrive(db, "hook", 0, &cnt));
    CHECK(cnt == 3);
    /* Both rounds dead-lettered and their links durable (the redriven
     * originals leave the stream as their new links land). */
    WAIT_FOR(info_field(db, "hook", 3) == 6);
    WAIT_FOR(parked_total(db, "$rule-hook") == 6);
    WAIT_FOR(info_field(db, "hook", 1) == 3);
    CHECK_OK(stele_rule_truncate_dead(db, "hook", STELE_END));
    WAIT_FOR(info_field(db, "hook", 1) == 0);
    CHECK_OK(stele_rule_delete(db, "hook"));
    CHECK_RC(stele_rule_get(db, "hook", &in), STELE_ENOTFOUND);
}

static void test_rewind(stele_db *db)
{
    stele_group_settings s;
    stele_group_settings_init(&s);
    CHECK_OK(stele_group_create(db, "Rw-1", "g", &s));
    append_n(db, "Rw-1", 10, "E", 0);
    stele_consumer *c = NULL;
    CHECK_OK(stele_group_connect(db, "Rw-1", "g", "c1", &c));
    for (int pass = 0; pass < 2; pass++) {
        uint64_t want = pass == 0 ? 0 : 7, got = want;
        for (;;) {
            stele_batch *b = NULL;
            CHECK_OK(stele_consumer_read(c, 5, 200, &b));
            size_t n = stele_batch_count(b);
            for (size_t i = 0; i < n; i++) {
                const stele_event *e = stele_batch_event(b, i);
                CHECK(e->revision == got);
                got++;
                CHECK_OK(stele_consumer_ack(c, (const uint8_t(*)[16])e->id, 1));
            }
            stele_batch_free(b);
            if (n == 0)
                break;
        }
        CHECK(got == 10);
        if (pass == 0)
            CHECK_OK(stele_group_rewind(db, "Rw-1", "g", 7));
    }
    uint64_t to = 0;
    CHECK_OK(stele_group_rewind_time(db, "Rw-1", "g", 0, &to));
    CHECK(to == 0);
    CHECK_RC(stele_group_rewind(db, "Rw-1", "nope", 0), STELE_ENOTFOUND);
    stele_consumer_close(c);
    CHECK_OK(stele_group_delete(db, "Rw-1", "g"));
}

int main(void)
{
    t_seed();
    const char *dir = t_tmpdir("rules");
    stele_options o = {.segment_size = 4 << 20};
    stele_db *db;
    CHECK_OK(stele_open(dir, &o, &db));
    int passed = 0;
    test_bad_input(db);
    passed++;
    CHECK_OK(stele_rules_start(db));
    test_stream_targets(db);
    passed++;
    test_dead_letters(db);
    passed++;
    test_rewind(db);
    passed++;
    stele_close(db);
    /* Reopen: the rules are still there, paused state and all; nothing is
     * copied twice. */
    CHECK_OK(stele_open(dir, &o, &db));
    CHECK_OK(stele_rules_start(db));
    stele_rule_info *v = NULL;
    size_t n = 0;
    CHECK_OK(stele_rule_list(db, &v, &n));
    CHECK(n == 2 && !strcmp(v[0].name, "copy") && !strcmp(v[1].name, "link"));
    stele_rule_info_free(v);
    append_n(db, "Order-9", 2, "OrderPlaced", 0);
    WAIT_FOR(stream_count(db, "Audit") == 37);
    usleep(200000);
    CHECK(stream_count(db, "Audit") == 37);
    CHECK_OK(stele_rule_delete(db, "copy"));
    CHECK_OK(stele_rule_delete(db, "link"));
    stele_close(db);
    t_rmdir(dir);
    passed++;
    return t_done("test_rules", passed);
}
