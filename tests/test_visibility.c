/*
 * test_visibility.c - the shared visibility rule (src/backend/
 * visibility.c) on its own: tombstone, soft delete, truncateBefore,
 * maxCount, maxAge, their combinations, and a stream never written; then
 * a randomized comparison with a direct restatement of docs/streams.md.
 */
#include <stdint.h>

#include "backend/visibility.h"
#include "testutil.h"

static int passed;

static void test_cases(void)
{
    stream_vis none = {.last_rev = UINT64_MAX};
    CHECK(!vis_event_visible(&none, 0, 0, 0));

    stream_vis v = {.last_rev = 9};
    CHECK(vis_stream_start(&v) == 0);
    CHECK(vis_event_visible(&v, 0, 0, 0) && vis_event_visible(&v, 9, 0, 0));
    CHECK(!vis_event_visible(&v, 10, 0, 0)); /* not written yet */

    v.tombstoned = 1;
    CHECK(!vis_event_visible(&v, 9, 0, 0));
    v.tombstoned = 0;

    v.truncate_before = 5; /* soft delete at revision 4 */
    CHECK(vis_stream_start(&v) == 5);
    CHECK(!vis_event_visible(&v, 4, 0, 0) && vis_event_visible(&v, 5, 0, 0));

    v.meta_tb = 7; /* truncateBefore above the soft delete wins */
    CHECK(vis_stream_start(&v) == 7);
    v.meta_tb = 3; /* ... and below it does not */
    CHECK(vis_stream_start(&v) == 5);

    v.max_count = 2; /* revisions 8 and 9 */
    CHECK(vis_stream_start(&v) == 8);
    CHECK(!vis_event_visible(&v, 7, 0, 0) && vis_event_visible(&v, 8, 0, 0));
    v.max_count = 100; /* more than written: the deletes decide */
    CHECK(vis_stream_start(&v) == 5);

    stream_vis a = {.last_rev = 3, .max_age_us = 1000};
    CHECK(vis_event_visible(&a, 1, 5000, 6000));  /* exactly maxAge old */
    CHECK(!vis_event_visible(&a, 1, 4999, 6000)); /* one µs older */
    CHECK(vis_event_visible(&a, 1, 4999, 5999));
    passed++;
}

/* docs/streams.md, restated without sharing code. */
static int model(const stream_vis *v, uint64_t rev, int64_t created, int64_t now)
{
    if (v->tombstoned || v->last_rev == UINT64_MAX || rev > v->last_rev)
        return 0;
    if (rev < v->truncate_before || rev < v->meta_tb)
        return 0;
    if (v->max_count && v->last_rev - rev >= v->max_count)
        return 0;
    if (v->max_age_us && now - created > (int64_t)v->max_age_us)
        return 0;
    return 1;
}

static void test_random(void)
{
    t_seed();
    for (int i = 0; i < 200000; i++) {
        stream_vis v = {.last_rev = t_rand_below(4) ? t_rand_below(50) : UINT64_MAX,
                        .truncate_before = t_rand_below(3) ? 0 : t_rand_below(60),
                        .tombstoned = t_rand_below(20) == 0,
                        .max_age_us = t_rand_below(3) ? 0 : 1 + t_rand_below(100),
                        .max_count = t_rand_below(3) ? 0 : 1 + t_rand_below(60),
                        .meta_tb = t_rand_below(3) ? 0 : t_rand_below(60)};
        uint64_t rev = t_rand_below(60);
        int64_t now = 1000, created = now - (int64_t)t_rand_below(200);
        int got = vis_event_visible(&v, rev, created, now), want = model(&v, rev, created, now);
        if (got != want)
            fprintf(stderr, "rev %llu last %llu tb %llu tomb %d age %llu count %llu mtb %llu "
                            "created %lld: got %d want %d\n",
                    (unsigned long long)rev, (unsigned long long)v.last_rev,
                    (unsigned long long)v.truncate_before, v.tombstoned,
                    (unsigned long long)v.max_age_us, (unsigned long long)v.max_count,
                    (unsigned long long)v.meta_tb, (long long)created, got, want);
        CHECK(got == want);
        if (got != want)
            break;
    }
    passed++;
}

int main(void)
{
    test_cases();
    test_random();
    return t_done("test_visibility", passed);
}
