/*
 * visibility.h - which events of a stream reads may see: the one rule for
 * deletes and retention (docs/streams.md), shared by every backend so that
 * the local engine, PostgreSQL and DynamoDB hide exactly the same events.
 *
 * A backend describes a stream's state in a stream_vis and asks
 * vis_event_visible() for each event a stream-shaped read (stream reads,
 * queries, views, snapshot loads) would return; vis_stream_start() gives the
 * lowest revision worth reading. $all shows every event until it is
 * reclaimed (scavenged); what this rule hides is also what a scavenger may
 * remove.
 */
#ifndef STELE_VISIBILITY_H
#define STELE_VISIBILITY_H

#include <stdint.h>

typedef struct stream_vis {
    uint64_t last_rev;        /* last revision written; STELE_NONE (UINT64_MAX) if none */
    uint64_t truncate_before; /* soft delete: revisions below are hidden; 0: none */
    int tombstoned;           /* 1: everything is hidden */
    uint64_t max_age_us;      /* metadata maxAge in µs; 0: none */
    uint64_t max_count;       /* metadata maxCount; 0: none */
    uint64_t meta_tb;         /* metadata truncateBefore; 0: none */
} stream_vis;

/* The lowest revision vis_event_visible() can accept, maxAge aside: the
 * soft delete's truncate-before, the metadata's truncateBefore and maxCount
 * counted back from the last revision, whichever is highest. */
uint64_t vis_stream_start(const stream_vis *v);

/* 1 if the event at `revision`, committed at `created_us`, is visible at
 * time `now_us`: not tombstoned, written (revision <= last_rev), at or
 * above vis_stream_start(), and not older than maxAge. Else 0. */
int vis_event_visible(const stream_vis *v, uint64_t revision, int64_t created_us,
                      int64_t now_us);

#endif
