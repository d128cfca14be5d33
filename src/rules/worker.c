/*
 * worker.c - a rule's live delivery: one thread that is the only consumer
 * of the rule's consumer group ("$rule-{name}" on $all).
 *
 * The group does the durable part: it reads $all from its checkpoint into
 * a bounded buffer, keeps the checkpoint (every event below it acked or
 * parked) in the store, and parks events in its parked stream, which is
 * the rule's dead-letter stream. The worker does the rest:
 *
 *   read    take events from the group, up to maxBuffered held at once;
 *   match   events that fail the source filter or the pattern are acked
 *           at once; matching ones go to the delivery engine (deliver.c);
 *   settle  delivered events are acked; dead ones are nacked with "park"
 *           and the last error as the reason.
 *
 * At least once: an event is acked only after its delivery succeeded, so
 * after a crash the group redelivers from its checkpoint and nothing
 * matched is lost (some may be delivered twice; receivers deduplicate on
 * Stele-Event-Id). The group's message timeout is set above the longest
 * maxAgeSeconds, so the group never takes an event back while the worker
 * holds it. Pausing or stopping closes the consumer: what it held goes back
 * to the group and comes again on resume.
 *
 * A slow target only fills this rule's buffer: the group stops reading
 * $all for this rule, appends and other rules never wait for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rules/rules_int.h"

#define READ_MAX 256
#define SETTLE_MAX 256

typedef struct wctx {
    rule *r;
    stele_consumer *c;
    uint8_t (*acks)[16];
    size_t nacks;
} wctx;

static void flush_acks(wctx *w)
{
    if (!w->nacks)
        return;
    int rc = stele_consumer_ack(w->c, (const uint8_t(*)[16])w->acks, w->nacks);
    if (rc)
        rule_set_error(w->r, "ack: %s: %s", stele_errname(rc), stele_errmsg());
    w->nacks = 0;
}

static void ack_later(wctx *w, const uint8_t id[16])
{
    memcpy(w->acks[w->nacks++], id, 16);
    if (w->nacks == SETTLE_MAX)
        flush_acks(w);
}

static void on_done(void *ctx, const stele_event *e, int outcome, const char *reason)
{
    wctx *w = ctx;
    if (outcome == DLV_DELIVERED) {
        ack_later(w, e->id);
        return;
    }
    rule_set_error(w->r, "event %llu@%s: %s", (unsigned long long)e->revision, e->stream, reason);
    flush_acks(w); /* keep acks and parks in the order they happened */
    const uint8_t(*id)[16] = (const uint8_t(*)[16])e->id;
    int rc = stele_consumer_nack(w->c, id, 1, STELE_NACK_PARK, reason);
    if (rc)
        rule_set_error(w->r, "dead-lettering: %s: %s", stele_errname(rc), stele_errmsg());
}

static int stopping(rule *r) { return atomic_load(&r->stop); }

/* Sleep up to ms, waking early when asked to stop. */
static void nap(rule *r, int ms)
{
    for (int i = 0; i < ms / 10 && !stopping(r); i++)
        usleep(10000);
}

void *rule_worker_main(void *arg)
{
    rule *r = arg;
    stele_db *db = r->reg->db;
    wctx w = {.r = r};
    w.acks = malloc(SETTLE_MAX * sizeof *w.acks);
    uint64_t gen = 0;
    rule_def *def = rule_current_def(r, &gen);
    dlv *d = NULL;
    pattern_input *pinput = NULL;
    int wfd = -1;
    if (!w.acks || !def || dlv_new(db, r->name, def, 0, &r->st, on_done, &w, &d))
        goto out;
    while (!stopping(r)) {
        int rc = stele_group_connect(db, "$all", r->group, RULE_CONSUMER, &w.c);
        if (rc == 0)
            break;
        rule_set_error(r, "connecting to group '%s': %s: %s", r->group, stele_errname(rc),
                       stele_errmsg());
        nap(r, 1000);
    }
    if (!w.c)
        goto out;
    if (stele_group_watch(db, &wfd))
        wfd = -1;
    while (!stopping(r)) {
        uint64_t g2;
        rule_def *nd = rule_current_def(r, &g2);
        if (nd && g2 != gen) {
            dlv_set_def(d, nd);
            rule_def_unref(def);
            def = rule_def_ref(nd);
            gen = g2;
        }
        rule_def_unref(nd);
        size_t held = dlv_held(d), room = def->max_buffered > held ? def->max_buffered - held : 0;
        size_t got = 0;
        /* Take events in batches (a quarter of the buffer, or READ_MAX), not
         * one by one as deliveries finish. */
        size_t batch = def->max_buffered / 4 < READ_MAX ? def->max_buffered / 4 : READ_MAX;
        if (room && (held == 0 || room >= (batch ? batch : 1))) {
            stele_batch *b = NULL;
            int idle = held == 0;
            int rc = stele_consumer_read(w.c, room < READ_MAX ? room : READ_MAX, idle ? 200 : 0, &b);
            if (rc == STELE_ENOTFOUND) {
                rule_set_error(r, "group '%s' is gone", r->group);
                break;
            }
            if (rc) {
                rule_set_error(r, "reading: %s: %s", stele_errname(rc), stele_errmsg());
                nap(r, 200);
            }
            got = stele_batch_count(b);
            for (size_t i = 0; i < got; i++) {
                const stele_event *e = stele_batch_event(b, i);
                int m = rule_def_matches(def, e, &pinput);
                if (m < 0) {
                    rule_set_error(r, "out of memory matching: event left to the group");
                    continue; /* not acked: redelivered after a restart */
                }
                if (m == 1) {
                    atomic_fetch_add(&r->st.matched, 1);
                    if (dlv_add(d, e) == 0)
                        continue;
                    rule_set_error(r, "out of memory: event left to the group");
                    continue; /* not acked: redelivered after a restart */
                }
                ack_later(&w, e->id);
            }
            stele_batch_free(b);
            flush_acks(&w);
            if (idle && got == 0)
                continue;
        }
        dlv_step(d, got ? 0 : 50, wfd);
        flush_acks(&w);
    }
out:
    if (wfd >= 0)
        stele_group_unwatch(db, wfd);
    flush_acks(&w);
    dlv_free(d); /* what it held goes back to the group on close */
    stele_consumer_close(w.c);
    pattern_input_free(pinput);
    rule_def_unref(def);
    free(w.acks);
    return NULL;
}
