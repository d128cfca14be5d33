/*
 * visibility.c - the visibility rule of docs/streams.md, in one place for
 * every backend (visibility.h). Pure functions of a stream's state and the
 * clock, so reads, queries and scavenging can never disagree, and a new
 * backend only has to fill in a stream_vis.
 *
 * Invariants: a tombstone hides everything; nothing above last_rev exists;
 * the start never decreases when maxCount's window moves forward; maxAge
 * hides by creation time only (an event exactly max_age_us old is still
 * visible; one microsecond older is not).
 */
#include "backend/visibility.h"

#include <stdint.h>

uint64_t vis_stream_start(const stream_vis *v)
{
    uint64_t lo = v->truncate_before > v->meta_tb ? v->truncate_before : v->meta_tb;
    if (v->max_count && v->last_rev != UINT64_MAX && v->last_rev + 1 > v->max_count &&
        v->last_rev + 1 - v->max_count > lo)
        lo = v->last_rev + 1 - v->max_count;
    return lo;
}

int vis_event_visible(const stream_vis *v, uint64_t revision, int64_t created_us,
                      int64_t now_us)
{
    if (v->tombstoned)
        return 0;
    if (v->last_rev == UINT64_MAX || revision > v->last_rev)
        return 0;
    if (revision < vis_stream_start(v))
        return 0;
    if (v->max_age_us && v->max_age_us <= INT64_MAX &&
        created_us < now_us - (int64_t)v->max_age_us)
        return 0;
    return 1;
}
