/*
 * replay.c - replays: a window of the log ($all positions [from, to), or
 * events created in [from, to)) read again and its matching events
 * delivered to the rule's target once more, each marked as a replay (the
 * body's "replay": true and the Stele-Replay header). The log is the
 * archive: nothing is copied to replay it.
 *
 * Each replay runs on its own thread with its own delivery engine, so it
 * goes beside live delivery and other replays, with the rule's ordering,
 * bounds and retry policy; an event whose retries run out is counted as
 * failed (live delivery's dead letters are for live events). The window's
 * open end is fixed when the replay starts: a replay always finishes.
 * Replays are kept in memory (the last REPLAYS_KEPT finished ones per
 * rule): a restart ends them, which is reported nowhere but in the log of
 * the process; start them again with the same window.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rules/rules_int.h"

#define PAGE_MAX 256

struct replay {
    uint64_t id;
    rule *r;
    stele_replay_window w;
    _Atomic int stop;
    pthread_t thread;
    int joined;
    const char *state;          /* r->mu */
    _Atomic uint64_t next_position, scanned;
    rule_stats st;              /* matched, delivered, dead = failed */
    int64_t started_us, finished_us;
    char last_error[256];       /* r->mu */
    replay *next;
};

static void finish_state(replay *p, const char *state)
{
    pthread_mutex_lock(&p->r->mu);
    p->state = state;
    p->finished_us = time_now_us();
    pthread_mutex_unlock(&p->r->mu);
}

static void set_error(replay *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(replay *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&p->r->mu);
    vsnprintf(p->last_error, sizeof p->last_error, fmt, ap);
    pthread_mutex_unlock(&p->r->mu);
    va_end(ap);
}

static void on_done(void *ctx, const stele_event *e, int outcome, const char *reason)
{
    replay *p = ctx;
    if (outcome == DLV_DEAD)
        set_error(p, "event %llu@%s: %s", (unsigned long long)e->revision, e->stream, reason);
}

/* Read the next page of the window from `from`. */
static int read_page(replay *p, stele_db *db, uint64_t from, size_t limit, stele_page **pg)
{
    if (p->w.by_time) {
        stele_query q = {.kind = STELE_QUERY_ALL, .has_after = 1, .after_us = p->w.from_us,
                         .has_before = 1, .before_us = p->w.to_us, .from = from,
                         .direction = STELE_FORWARDS, .limit = limit};
        return stele_read_query(db, &q, pg);
    }
    return stele_read_all(db, from, STELE_FORWARDS, limit, pg);
}

static void *replay_main(void *arg)
{
    replay *p = arg;
    rule *r = p->r;
    stele_db *db = r->reg->db;
    uint64_t gen;
    rule_def *def = rule_current_def(r, &gen);
    dlv *d = NULL;
    pattern_input *pinput = NULL;
    if (!def || dlv_new(db, r->name, def, p->id, &p->st, on_done, p, &d)) {
        set_error(p, "could not start: %s", def ? stele_errmsg() : "the rule has no definition");
        finish_state(p, "failed");
        rule_def_unref(def);
        return NULL;
    }
    uint64_t next = p->w.by_time ? 0 : p->w.from_pos;
    int eof = 0;
    const char *state = "done";
    while (!atomic_load(&p->stop)) {
        size_t held = dlv_held(d), room = def->max_buffered > held ? def->max_buffered - held : 0;
        if (!eof && room) {
            stele_page *pg = NULL;
            int rc = read_page(p, db, next, room < PAGE_MAX ? room : PAGE_MAX, &pg);
            if (rc) {
                set_error(p, "reading: %s: %s", stele_errname(rc), stele_errmsg());
                state = "failed";
                break;
            }
            size_t n = stele_page_count(pg);
            for (size_t i = 0; i < n && !eof; i++) {
                const stele_event *e = stele_page_event(pg, i);
                if (!p->w.by_time && e->position >= p->w.to_pos) {
                    eof = 1;
                    break;
                }
                atomic_fetch_add(&p->scanned, 1);
                atomic_store(&p->next_position, stele_position_after(db, e->position));
                int m = rule_def_matches(def, e, &pinput);
                if (m < 0) {
                    set_error(p, "out of memory matching events");
                    state = "failed";
                    eof = 2;
                } else if (m == 1) {
                    atomic_fetch_add(&p->st.matched, 1);
                    if (dlv_add(d, e)) {
                        set_error(p, "out of memory");
                        state = "failed";
                        eof = 2;
                    }
                }
            }
            if (!eof && !stele_page_next(pg, &next))
                eof = 1;
            stele_page_free(pg);
            if (eof == 2)
                break;
        }
        if (eof && dlv_held(d) == 0)
            break;
        dlv_step(d, !eof && room ? 0 : 50, -1);
    }
    if (atomic_load(&p->stop))
        state = "cancelled";
    dlv_free(d);
    pattern_input_free(pinput);
    rule_def_unref(def);
    finish_state(p, state);
    return NULL;
}

/* Join and free finished replays beyond the kept number (r->mu held). */
static replay *prune(rule *r)
{
    replay *gone = NULL;
    size_t kept = 0;
    for (replay **s = &r->replays; *s;) {
        replay *p = *s;
        if (p->finished_us && ++kept > REPLAYS_KEPT) {
            *s = p->next;
            p->next = gone;
            gone = p;
        } else {
            s = &p->next;
        }
    }
    return gone;
}

static void free_list(replay *gone)
{
    while (gone) {
        replay *p = gone;
        gone = p->next;
        if (!p->joined)
            pthread_join(p->thread, NULL);
        rule_unref(p->r);
        free(p);
    }
}

int replay_start(rule *r, const stele_replay_window *w, uint64_t id)
{
    stele_db *db = r->reg->db;
    replay *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(STELE_ENOMEM, "out of memory");
    p->id = id;
    p->r = r;
    p->w = *w;
    if (!p->w.has_to) {
        p->w.has_to = 1;
        p->w.to_us = time_now_us() + 1;
        p->w.to_pos = STELE_END;
    }
    if (!p->w.by_time && p->w.to_pos == STELE_END) {
        int rc = stele_position_head(db, &p->w.to_pos);
        if (rc) {
            free(p);
            return rc;
        }
    }
    if (p->w.by_time) {
        /* Check the window against the time index now (EINVAL without it). */
        stele_query q = {.kind = STELE_QUERY_ALL, .has_after = 1, .after_us = p->w.from_us,
                         .has_before = 1, .before_us = p->w.to_us, .limit = 1};
        stele_page *pg = NULL;
        int rc = stele_read_query(db, &q, &pg);
        stele_page_free(pg);
        if (rc) {
            free(p);
            return rc;
        }
    }
    p->next_position = p->w.by_time ? 0 : p->w.from_pos;
    p->started_us = time_now_us();
    p->state = "running";
    pthread_mutex_lock(&r->mu);
    size_t running = 0;
    for (replay *q = r->replays; q; q = q->next)
        running += !q->finished_us;
    int rc = 0;
    if (running >= REPLAYS_MAX)
        rc = err_set(STELE_EBUSY, "rule '%s' has %zu replays running (at most %u)", r->name,
                     running, REPLAYS_MAX);
    else if (pthread_create(&p->thread, NULL, replay_main, p))
        rc = err_set(STELE_ENOMEM, "could not start a replay thread");
    if (rc == 0) {
        atomic_fetch_add(&r->refs, 1);
        p->next = r->replays;
        r->replays = p;
    }
    replay *gone = rc ? NULL : prune(r);
    pthread_mutex_unlock(&r->mu);
    if (rc)
        free(p);
    free_list(gone);
    return rc;
}

void replays_stop_all(rule *r)
{
    pthread_mutex_lock(&r->mu);
    replay *all = r->replays;
    r->replays = NULL;
    for (replay *p = all; p; p = p->next)
        atomic_store(&p->stop, 1);
    pthread_mutex_unlock(&r->mu);
    free_list(all);
}

int replay_cancel(rule *r, uint64_t id)
{
    pthread_mutex_lock(&r->mu);
    replay *p = r->replays;
    while (p && p->id != id)
        p = p->next;
    if (p)
        atomic_store(&p->stop, 1);
    pthread_mutex_unlock(&r->mu);
    if (!p)
        return err_set(STELE_ENOTFOUND, "rule '%s' has no replay %llu", r->name,
                       (unsigned long long)id);
    return 0;
}

/* One allocation: the array, then the strings (state strings are static). */
typedef struct rinfo_hdr {
    size_t n;
    char (*errors)[256];
} rinfo_hdr;

int replay_infos(rule *r, stele_replay_info **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&r->mu);
    size_t cnt = 0;
    for (replay *p = r->replays; p; p = p->next)
        cnt++;
    rinfo_hdr *h = calloc(1, sizeof *h + (cnt ? cnt : 1) * (sizeof(stele_replay_info) + 256));
    if (!h) {
        pthread_mutex_unlock(&r->mu);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    h->n = cnt;
    stele_replay_info *v = (stele_replay_info *)(h + 1);
    h->errors = (char(*)[256])(v + (cnt ? cnt : 1));
    size_t i = cnt; /* the list is newest first: fill from the back */
    for (replay *p = r->replays; p; p = p->next) {
        stele_replay_info *in = &v[--i];
        in->id = p->id;
        in->state = p->state;
        in->window = p->w;
        in->next_position = atomic_load(&p->next_position);
        in->scanned = atomic_load(&p->scanned);
        in->matched = atomic_load(&p->st.matched);
        in->delivered = atomic_load(&p->st.delivered);
        in->failed = atomic_load(&p->st.dead);
        in->started_us = p->started_us;
        in->finished_us = p->finished_us;
        memcpy(h->errors[i], p->last_error, 256);
        in->last_error = h->errors[i];
    }
    pthread_mutex_unlock(&r->mu);
    *out = v;
    *n = cnt;
    return 0;
}

void stele_replay_info_free(stele_replay_info *infos)
{
    if (infos)
        free((rinfo_hdr *)infos - 1);
}
