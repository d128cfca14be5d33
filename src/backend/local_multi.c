/*
 * local_multi.c - multi-stream commits and DCB conditions in the local
 * engine (docs/consistency.md; the record layout is in src/log/record.h).
 *
 * A multi-stream append is one writer request (OP_MULTI) and becomes one
 * commit: its event records in the request's order at consecutive
 * positions, each naming its stream, then one snapshot record per stream
 * that saves a state, every record flagged REC_MULTI and counted in
 * commit_count. One commit means one framing unit for recovery (a torn
 * commit at the tail is cut off whole), one group write and one fsync.
 *
 * Planning (the writer, inside the group's LMDB transaction, like plan() in
 * local.c), in this order:
 *   1. each stream's state from the index (which already holds the effect
 *      of the requests before it in the group);
 *   2. idempotency (after refusing to write a tombstoned stream, as single
 *      appends do): if the first client-given id is already written, the
 *      request is a retry only if every event carries its id, each id sits
 *      at the position and stream this request would give it (the same
 *      relative order), and the commit there holds exactly these events;
 *      the original result is returned, nothing is written. Any other
 *      reuse of an id is EIDCONFLICT;
 *   3. each stream's expectation, KurrentDB 26.1's table: any; no_stream
 *      (not existing: never written, or soft-deleted); stream_exists
 *      (EDELETED when soft-deleted, EWRONGREV when never written);
 *      STELE_DELETED (soft-deleted and not written since); an exact
 *      revision (the last one written, soft-deleted streams included). A
 *      tombstoned stream cannot be written; as a check only it passes any
 *      and no_stream and fails the rest with EDELETED. The first failing
 *      stream is reported with its last revision;
 *   4. the DCB condition: the first event matching the query at a position
 *      after `after`, among committed events (through the type and tag
 *      indexes) and the events of requests accepted earlier in the same
 *      group (in memory: they are not indexed yet). Checks and writes are
 *      serialised by the single writer, so of two requests with
 *      overlapping conditions the second sees the first;
 *   5. revisions and positions; stream states, ids, one commit entry per
 *      run of consecutive records of one stream (stream reads find their
 *      events through those, as for single appends), state snapshots.
 *
 * DCB matching works on the secondary index alone. An event is under key
 * K exactly when its position lies in one of K's runs, so "the first
 * position >= p matching an item" is a leapfrog over position ranges: the
 * smallest position any of the item's types covers, then each tag's cover
 * of that candidate; whenever one moves the candidate forward, start over
 * from there. Backwards is the mirror image. A query is the earliest
 * (latest) of its items' answers. Nothing is read from the log to decide.
 *
 * Conditions and DCB reads see every event of the log, as $all does
 * (events of deleted streams too, until scavenged): a decision's read and
 * its condition then agree on what exists.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/expect.h"
#include "backend/local_int.h"
#include "log/record.h"

typedef struct mstream {
    idx_stream st;
    int found;
    uint64_t next_rev;
} mstream;

/* ------------------------------------------------------------- matching */

static int has_tag(const stele_event_in *e, const char *tag)
{
    for (size_t k = 0; k < e->ntags; k++)
        if (!strcmp(e->tags[k], tag))
            return 1;
    return 0;
}

/* Does an event about to be written match the query? */
static int event_in_matches(const stele_condition *c, const stele_event_in *e)
{
    for (size_t i = 0; i < c->nitems; i++) {
        const stele_query_item *it = &c->items[i];
        int ok = it->ntypes == 0;
        for (size_t t = 0; t < it->ntypes && !ok; t++)
            ok = !strcmp(it->types[t], e->type);
        for (size_t g = 0; g < it->ntags && ok; g++)
            ok = has_tag(e, it->tags[g]);
        if (ok)
            return 1;
    }
    return 0;
}

/* Cursors over the index keys of a query: per item, its types then its
 * tags, from base[i]. */
typedef struct dcb {
    const stele_condition *c;
    idx_sec_cursor *cur;
    size_t *base;
    size_t n;
} dcb;

static void dcb_close(dcb *d)
{
    for (size_t k = 0; k < d->n; k++)
        idx_sec_close(&d->cur[k]);
    free(d->cur);
    free(d->base);
    memset(d, 0, sizeof *d);
}

static int dcb_open(local *L, MDB_txn *txn, const stele_condition *c, dcb *d)
{
    memset(d, 0, sizeof *d);
    d->c = c;
    size_t total = 0;
    for (size_t i = 0; i < c->nitems; i++)
        total += c->items[i].ntypes + c->items[i].ntags;
    d->cur = calloc(total ? total : 1, sizeof *d->cur);
    d->base = malloc(c->nitems * sizeof *d->base);
    if (!d->cur || !d->base) {
        dcb_close(d);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    int rc = 0;
    for (size_t i = 0; i < c->nitems && rc == 0; i++) {
        const stele_query_item *it = &c->items[i];
        d->base[i] = d->n;
        for (size_t t = 0; t < it->ntypes && rc == 0; t++)
            if ((rc = idx_sec_open(L->ix, txn, SEC_TYPE, it->types[t], strlen(it->types[t]),
                                   &d->cur[d->n])) == 0)
                d->n++;
        for (size_t g = 0; g < it->ntags && rc == 0; g++)
            if ((rc = idx_sec_open(L->ix, txn, SEC_TAG, it->tags[g], strlen(it->tags[g]),
                                   &d->cur[d->n])) == 0)
                d->n++;
    }
    if (rc)
        dcb_close(d);
    return rc;
}

/* Under one key: forwards the first position >= p it holds, backwards the
 * last <= p. 1 with *q and its run, 0 if none, or an error. */
static int cover(idx_sec_cursor *sc, uint64_t p, int bw, uint64_t *q, idx_run *run)
{
    int rc = idx_sec_seek(sc, p, bw, run);
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        return 0;
    }
    if (rc)
        return rc;
    uint64_t last = run->start + run->count - 1;
    if (!bw)
        *q = run->start > p ? run->start : p;
    else
        *q = last < p ? last : p;
    return 1;
}

/* The first (last) position from p matching item i: 1, 0, or an error.
 * *run is a run holding it (for fetching the event). */
static int item_next(dcb *d, size_t i, uint64_t p, int bw, uint64_t *out, idx_run *run)
{
    const stele_query_item *it = &d->c->items[i];
    idx_sec_cursor *types = d->cur + d->base[i], *tags = types + it->ntypes;
    for (;;) {
        uint64_t cand = p;
        int have = 0, moved = 0;
        for (size_t t = 0; t < it->ntypes; t++) {
            uint64_t q = 0;
            idx_run r2;
            int g = cover(&types[t], p, bw, &q, &r2);
            if (g < 0)
                return g;
            if (g && (!have || (bw ? q > cand : q < cand))) {
                cand = q;
                *run = r2;
                have = 1;
            }
        }
        if (it->ntypes && !have)
            return 0;
        for (size_t g = 0; g < it->ntags; g++) {
            uint64_t q = 0;
            idx_run r2;
            int x = cover(&tags[g], cand, bw, &q, &r2);
            if (x <= 0)
                return x;
            if (q != cand) {
                cand = q;
                moved = 1;
                break;
            }
            if (!have) {
                *run = r2;
                have = 1;
            }
        }
        if (!moved) {
            *out = cand;
            return 1;
        }
        p = cand;
    }
}

/* The first (last) position from p matching the query: 1, 0, or error. */
static int dcb_next(dcb *d, uint64_t p, int bw, uint64_t *out, idx_run *run)
{
    int any = 0;
    for (size_t i = 0; i < d->c->nitems; i++) {
        uint64_t q = 0;
        idx_run r;
        int g = item_next(d, i, p, bw, &q, &r);
        if (g < 0)
            return g;
        if (g && (!any || (bw ? q > *out : q < *out))) {
            *out = q;
            *run = r;
            any = 1;
        }
    }
    return any;
}

/* The condition of request r: 1 with *at (the first matching position
 * after `after`), 0 if nothing matches, or an index error. */
static int condition_check(local *L, MDB_txn *txn, wreq *r, uint64_t *at)
{
    const stele_condition *c = r->m->cond;
    uint64_t from = c->after == STELE_NONE ? 0 : c->after + 1;
    dcb d;
    idx_run run;
    int rc = dcb_open(L, txn, c, &d);
    if (rc == 0) {
        rc = dcb_next(&d, from, 0, at, &run);
        dcb_close(&d);
    }
    if (rc)
        return rc;
    /* Requests accepted earlier in this group are not indexed yet. */
    for (wreq *o = r->group; o && o != r; o = o->next) {
        if (!o->accepted)
            continue;
        if (o->op == OP_APPEND) {
            for (size_t i = 0; i < o->a->n; i++) {
                uint64_t pos = o->res.first_position + i;
                if (pos >= from && event_in_matches(c, &o->a->events[i])) {
                    *at = pos;
                    return 1;
                }
            }
        } else if (o->op == OP_MULTI) {
            for (size_t k = 0; k < o->m->nrecords; k++) {
                uint64_t pos = o->mres.first_position + k;
                if (pos >= from && event_in_matches(c, &o->m->records[k].event)) {
                    *at = pos;
                    return 1;
                }
            }
        }
    }
    return 0;
}

/* -------------------------------------------------------------- planning */

static int fail(wreq *r, int rc)
{
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
    return 0;
}

/* Stream i's expectation: 0 passed, or the error (EWRONGREV / EDELETED),
 * recorded in r->ps[i]; the first failing stream also gives the request's
 * message, failed_stream and current_revision. */
static int expectation(wreq *r, size_t i)
{
    const multi_stream_args *s = &r->m->streams[i];
    const mstream *m = &r->ms[i];
    int tomb = m->found && (m->st.flags & IDX_TOMBSTONED);
    int softdel = m->found && !tomb && (m->st.flags & IDX_DELETED);
    int exists = m->found && !tomb && !softdel && m->st.last_rev != UINT64_MAX;
    uint64_t cur = m->found && m->st.last_rev != UINT64_MAX ? m->st.last_rev : STELE_NONE;
    int64_t e = s->expected;
    expect_stream es = {tomb, softdel, exists, cur};
    int rc = expect_multi_check(e, &es, s->nevents != 0);
    if (!rc)
        return 0;
    r->ps[i].failed = rc;
    r->ps[i].current_revision = cur;
    if (r->mres.failed_stream != SIZE_MAX)
        return rc; /* not the first */
    r->mres.failed_stream = i;
    r->mres.current_revision = cur;
    r->current = cur;
    return expect_multi_fail(rc, i, s->stream, s->len, e, &es);
}

/* Check the expectations of every stream (or, with `tomb_writes`, only of
 * the tombstoned streams the request writes): 1 if any failed (r failed
 * with the first failure; every failing stream is marked in r->ps). */
static int expectations(wreq *r, int tomb_writes)
{
    int first = 0;
    for (size_t i = 0; i < r->m->nstreams; i++) {
        if (tomb_writes && !(r->m->streams[i].nevents && r->ms[i].found &&
                             (r->ms[i].st.flags & IDX_TOMBSTONED)))
            continue;
        int rc = expectation(r, i);
        if (rc && !first)
            first = rc;
    }
    if (first)
        fail(r, first);
    return first != 0;
}

static int id_conflict(wreq *r, size_t k, const char *why)
{
    char t[37];
    stele_uuid_format(r->m->ids[k], t);
    err_set(STELE_EIDCONFLICT, "event %zu: id %s was already written%s", k, t, why);
    fail(r, STELE_EIDCONFLICT);
    return 1;
}

/* r's first client-given id (record k0) was never written: neither may
 * any other of its ids be. 0 (not a retry), 1 (a conflict, r failed), or
 * an index error. */
static int retry_none_written(local *L, MDB_txn *txn, wreq *r, size_t k0)
{
    const multi_args *m = r->m;
    uint64_t sid, rev, pos;
    err_clear();
    for (size_t k = k0 + 1; k < m->nrecords; k++) {
        if (m->made[k])
            continue;
        int rc = idx_id_get(L->ix, txn, m->ids[k], &sid, &rev, &pos);
        if (rc == STELE_ENOTFOUND)
            continue;
        if (rc)
            return rc;
        char why[64];
        snprintf(why, sizeof why, " (position %llu)", (unsigned long long)pos);
        return id_conflict(r, k, why);
    }
    err_clear();
    return 0;
}

/* Every record of r must be where a retry's would be: its id written at
 * position pos0 + k, in its stream, at consecutive revisions. Fills the
 * per-stream results. 0 (so far a retry), 1 (a conflict), or an index
 * error. */
static int retry_gather(local *L, MDB_txn *txn, wreq *r, size_t k0, uint64_t pos0)
{
    const multi_args *m = r->m;
    uint64_t sid, rev, pos;
    for (size_t i = 0; i < m->nstreams; i++)
        r->ms[i].next_rev = UINT64_MAX;
    for (size_t k = 0; k < m->nrecords; k++) {
        size_t s = m->records[k].stream;
        mstream *ms = &r->ms[s];
        if (m->made[k])
            return id_conflict(r, k0, ", but this append has events without ids, so it cannot "
                                      "repeat it");
        int rc = idx_id_get(L->ix, txn, m->ids[k], &sid, &rev, &pos);
        if (rc && rc != STELE_ENOTFOUND)
            return rc;
        if (rc || !ms->found || sid != ms->st.sid || pos != pos0 + k ||
            (ms->next_rev != UINT64_MAX && rev != ms->next_rev)) {
            err_clear();
            return id_conflict(r, k0, ", by an append that this one does not repeat exactly");
        }
        stele_append_result *ps = &r->ps[s];
        if (ms->next_rev == UINT64_MAX) {
            ps->first_revision = rev;
            ps->first_position = pos;
        }
        ps->last_revision = rev;
        ps->last_position = pos;
        ps->idempotent = 1;
        ms->next_rev = rev + 1;
    }
    return 0;
}

/* The commit at pos0 must hold exactly r's events: 1 if it does (*differs
 * then names a part of event *differs_k that is not the same, or is NULL),
 * 0 if not, or an error. */
static int retry_commit_same(local *L, MDB_txn *txn, wreq *r, uint64_t pos0,
                             const char **differs, size_t *differs_k)
{
    const multi_args *m = r->m;
    size_t s0 = m->records[0].stream;
    idx_rev_cursor cur = {0};
    idx_commit c;
    int rc = idx_rev_open(L->ix, txn, r->ms[s0].st.sid, &cur);
    if (rc == 0)
        rc = idx_rev_seek(&cur, r->ps[s0].first_revision, 0, &c);
    idx_rev_close(&cur);
    if (rc && rc != STELE_ENOTFOUND)
        return rc;
    if (rc || c.first_pos != pos0)
        return 0;
    if (c.bytes == 0) /* accepted earlier in this group: not on disk yet */
        return retry_in_group(r, pos0, differs, differs_k);
    log_iter it;
    log_iter_init(&it, L->lg, c.loc, UINT64_MAX);
    size_t events = 0;
    uint32_t count = 1;
    int same = 1;
    for (uint32_t i = 0; i < count && same; i++) {
        rec rr;
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, &rr, &at, &short_tail);
        if (st < 0) {
            log_iter_free(&it);
            return st;
        }
        same = st == LOG_ITER_REC && rr.commit_index == i;
        if (same && i == 0)
            count = rr.commit_count;
        events += same && rr.kind == REC_EVENT;
        if (same && rr.kind == REC_EVENT && !*differs && rr.position >= pos0 &&
            rr.position - pos0 < m->nrecords) {
            *differs_k = (size_t)(rr.position - pos0);
            *differs = retry_event_diff(&rr, &m->records[*differs_k].event);
        }
    }
    log_iter_free(&it);
    return same && events == m->nrecords;
}

/* Is r a retry of a multi-stream append already written? 1 settled (the
 * original result, or a conflict), 0 not a retry, or an index error. */
static int multi_retry(local *L, MDB_txn *txn, wreq *r)
{
    const multi_args *m = r->m;
    size_t k0 = 0;
    while (k0 < m->nrecords && m->made[k0])
        k0++;
    if (k0 == m->nrecords)
        return 0;
    uint64_t sid, rev, pos;
    int rc = idx_id_get(L->ix, txn, m->ids[k0], &sid, &rev, &pos);
    if (rc && rc != STELE_ENOTFOUND)
        return rc;
    if (rc == STELE_ENOTFOUND)
        return retry_none_written(L, txn, r, k0);
    if (k0 != 0 || pos < k0)
        return id_conflict(r, k0, ", but not by an append that this one repeats (every event "
                                  "of a retry carries its id)");
    uint64_t pos0 = pos;
    if ((rc = retry_gather(L, txn, r, k0, pos0)))
        return rc;
    const char *differs = NULL; /* the same ids for other events (local_retry.c) */
    size_t differs_k = 0;
    int same = retry_commit_same(L, txn, r, pos0, &differs, &differs_k);
    if (same < 0)
        return same;
    if (!same || differs) {
        err_clear();
        for (size_t i = 0; i < m->nstreams; i++)
            r->ps[i] = append_result_none();
        if (!same)
            return id_conflict(r, k0, ", by an append that this one does not repeat exactly");
        char why[160];
        snprintf(why, sizeof why, " with a different %s; an event id names one event: use a "
                 "new id for new data", differs);
        return id_conflict(r, differs_k, why);
    }
    r->mres.first_position = pos0;
    r->mres.last_position = pos0 + m->nrecords - 1;
    r->mres.idempotent = 1;
    r->rc = 0;
    return 1;
}

static uint64_t state_tag(const wreq *r, size_t i)
{
    return (1ull << 63) | ((((uint64_t)(uintptr_t)r) << 12) | (uint64_t)i);
}

/* Each named stream's state (ms[i].st; found or not). */
static int multi_load_streams(local *L, MDB_txn *txn, wreq *r)
{
    const multi_args *m = r->m;
    mstream *ms = r->ms;
    for (size_t i = 0; i < m->nstreams; i++) {
        int rc = idx_stream_get(L->ix, txn, m->streams[i].stream, m->streams[i].len, &ms[i].st);
        if (rc && rc != STELE_ENOTFOUND)
            return rc;
        ms[i].found = rc == 0;
        if (!ms[i].found) {
            memset(&ms[i].st, 0, sizeof ms[i].st);
            ms[i].st.last_rev = ms[i].st.last_pos = UINT64_MAX;
        }
    }
    err_clear();
    return 0;
}

/* The request's checks in KurrentDB's order: tombstones, a retry,
 * expected revisions, the DCB condition, states without events. 0 to go
 * on, 1 when the request is settled (failed, or a retry), or an index
 * error. */
static int multi_checks(local *L, MDB_txn *txn, wreq *r)
{
    const multi_args *m = r->m;
    const mstream *ms = r->ms;
    int rc;
    /* A tombstoned stream is never written, not even by a retry (as for
     * single appends). */
    if (expectations(r, 1))
        return 1;
    if ((rc = multi_retry(L, txn, r)))
        return rc < 0 ? rc : 1;
    if (expectations(r, 0))
        return 1;
    if (m->cond) {
        uint64_t at = 0;
        if ((rc = condition_check(L, txn, r, &at)) < 0)
            return rc;
        if (rc) {
            char ab[32];
            r->mres.condition_position = at;
            snprintf(ab, sizeof ab, "%llu", (unsigned long long)m->cond->after);
            err_set(STELE_ECONDITION,
                    "append condition failed: the event at position %llu matches the condition's "
                    "query (after %s)",
                    (unsigned long long)at, m->cond->after == STELE_NONE ? "none" : ab);
            fail(r, STELE_ECONDITION);
            return 1;
        }
    }
    for (size_t i = 0; i < m->nstreams; i++) {
        const mstream *s = &ms[i];
        int has_events = m->streams[i].nevents ||
                         (s->found && !(s->st.flags & (IDX_DELETED | IDX_TOMBSTONED)) &&
                          s->st.last_rev != UINT64_MAX);
        if (m->streams[i].state && !has_events) {
            r->mres.failed_stream = i;
            err_set(STELE_ENOTFOUND,
                    "stream %zu '%.*s': a state needs events to be the fold of, and the stream "
                    "has none and gets none in this append",
                    i, (int)m->streams[i].len, m->streams[i].stream);
            fail(r, STELE_ENOTFOUND);
            return 1;
        }
    }
    return 0;
}

/* Revisions and positions (from *pos0, the checkpoint's next position),
 * and each written stream's new state. */
static int multi_assign(local *L, MDB_txn *txn, wreq *r, uint64_t *pos0)
{
    const multi_args *m = r->m;
    mstream *ms = r->ms;
    *pos0 = L->ck.next_pos;
    for (size_t i = 0; i < m->nstreams; i++)
        ms[i].next_rev = ms[i].st.last_rev == UINT64_MAX ? 0 : ms[i].st.last_rev + 1;
    for (size_t k = 0; k < m->nrecords; k++) {
        size_t i = m->records[k].stream;
        stele_append_result *ps = &r->ps[i];
        uint64_t rev = ms[i].next_rev++;
        if (ps->first_revision == STELE_NONE) {
            ps->first_revision = rev;
            ps->first_position = *pos0 + k;
        }
        ps->last_revision = rev;
        ps->last_position = *pos0 + k;
    }
    r->mres.first_position = *pos0;
    r->mres.last_position = *pos0 + m->nrecords - 1;
    L->ck.next_pos += m->nrecords;
    for (size_t i = 0; i < m->nstreams; i++) {
        if (!m->streams[i].nevents)
            continue;
        if (!ms[i].found) {
            ms[i].st.sid = L->ck.next_sid++;
            L->ck.streams++;
            ms[i].found = 1;
        }
        ms[i].st.last_rev = r->ps[i].last_revision;
        ms[i].st.last_pos = r->ps[i].last_position;
        ms[i].st.flags &= ~IDX_DELETED;
        int rc = idx_stream_put(L->ix, txn, m->streams[i].stream, m->streams[i].len, &ms[i].st);
        if (rc)
            return rc;
    }
    return 0;
}

/* Ids, and a provisional commit entry per run (write_group's
 * multi_encode() fills in where it lands), so later requests of the group
 * recognise a retry; then the states' entries. */
static int multi_index(local *L, MDB_txn *txn, wreq *r, uint64_t pos0)
{
    const multi_args *m = r->m;
    mstream *ms = r->ms;
    int rc = 0;
    for (size_t i = 0; i < m->nstreams; i++)
        ms[i].next_rev = r->ps[i].first_revision;
    size_t run_s = SIZE_MAX;
    idx_commit c = {0};
    rec_share sh;
    rec_share_init(&sh);
    for (size_t k = 0; k <= m->nrecords && rc == 0; k++) {
        size_t i = k < m->nrecords ? m->records[k].stream : SIZE_MAX;
        if (i != run_s) {
            if (run_s != SIZE_MAX && (rc = idx_commit_put(L->ix, txn, &c)))
                break;
            if (k == m->nrecords)
                break;
            c = (idx_commit){ms[i].st.sid, ms[i].next_rev, 0, pos0 + k, 0, 0};
            run_s = i;
        }
        c.count++;
        uint64_t rev = ms[i].next_rev++;
        if (!m->made[k])
            rc = idx_id_put(L->ix, txn, m->ids[k], ms[i].st.sid, rev, pos0 + k);
    }
    for (size_t i = 0; i < m->nstreams && rc == 0; i++) {
        const stele_snapshot_in *s = m->streams[i].state;
        if (s)
            rc = sm_plan_state(L, txn, &ms[i].st, ms[i].st.last_rev,
                               (uint32_t)rec_body_size(m->streams[i].len, s->state_len, 0),
                               s->schema_version, state_tag(r, i));
    }
    return rc;
}

/* The exact bytes of the commit's records once positions and revisions
 * are assigned (a compact record's varints depend on them; the API edge's
 * multi_rec_bytes is the budget). */
static uint64_t multi_rec_bytes_at(wreq *r, uint64_t pos0)
{
    const multi_args *m = r->m;
    mstream *ms = r->ms;
    uint32_t count = (uint32_t)m->nrecords;
    uint64_t n = 0;
    for (size_t i = 0; i < m->nstreams; i++) {
        ms[i].next_rev = r->ps[i].first_revision;
        if (m->streams[i].state) {
            n += rec_body_size(m->streams[i].len, m->streams[i].state->state_len, 0);
            count++;
        }
    }
    /* The events come first in the commit: their names are shared from
     * its start (multi_encode lays them out the same way). */
    rec_share sh;
    rec_share_init(&sh);
    uint32_t sb, tb;
    for (size_t k = 0; k < m->nrecords; k++) {
        size_t i = m->records[k].stream;
        const stele_event_in *e = &m->records[k].event;
        n += rec_share_next(&sh, m->streams[i].stream, m->streams[i].len, e->type, e->tags,
                            e->ntags, e->data_len, e->metadata_len, count, (uint32_t)k, pos0 + k,
                            ms[i].next_rev++, &sb, &tb);
    }
    return n;
}

int multi_plan(local *L, MDB_txn *txn, wreq *r)
{
    uint64_t pos0;
    int rc = multi_load_streams(L, txn, r);
    if (rc == 0)
        rc = multi_checks(L, txn, r);
    if (rc)
        return rc < 0 ? rc : 0;
    if ((rc = multi_assign(L, txn, r, &pos0)) || (rc = multi_index(L, txn, r, pos0)))
        return rc;
    r->bytes = multi_rec_bytes_at(r, pos0);
    r->accepted = 1;
    return 0;
}

/* -------------------------------------------------------------- encoding */

int multi_encode(local *L, MDB_txn *txn, wreq *r, uint32_t seg, uint64_t write_off, int64_t now)
{
    const multi_args *m = r->m;
    mstream *ms = r->ms;
    uint32_t nstates = 0;
    for (size_t i = 0; i < m->nstreams; i++)
        nstates += m->streams[i].state != NULL;
    uint32_t count = (uint32_t)m->nrecords + nstates;
    for (size_t i = 0; i < m->nstreams; i++)
        ms[i].next_rev = r->ps[i].first_revision;
    int rc = 0;
    size_t run_s = SIZE_MAX;
    uint64_t run_off = 0;
    idx_commit c = {0};
    rec_share sh;
    rec_share_init(&sh);
    for (size_t k = 0; k <= m->nrecords && rc == 0; k++) {
        size_t i = k < m->nrecords ? m->records[k].stream : SIZE_MAX;
        uint64_t off = write_off + L->gbuf.len;
        if (i != run_s) {
            if (run_s != SIZE_MAX) {
                c.bytes = (uint32_t)(off - run_off);
                if ((rc = idx_commit_put(L->ix, txn, &c)))
                    break;
            }
            if (k == m->nrecords)
                break;
            c = (idx_commit){ms[i].st.sid, ms[i].next_rev, loc_make(seg, (uint32_t)off),
                             r->mres.first_position + k, 0, 0};
            run_s = i;
            run_off = off;
        }
        uint64_t pos = r->mres.first_position + k;
        uint64_t loc = loc_make(seg, (uint32_t)off);
        if (L->ck.last_pos_loc == UINT64_MAX || loc_seg(L->ck.last_pos_loc) != seg ||
            loc - L->ck.last_pos_loc >= IDX_POS_STRIDE) {
            if ((rc = idx_pos_put(L->ix, txn, pos, loc)))
                break;
            L->ck.last_pos_loc = loc;
        }
        const stele_event_in *e = &m->records[k].event;
        uint8_t flags = (uint8_t)((e->flags & REC_EVENT_FLAGS) |
                                  (m->made[k] ? REC_ID_MADE : 0) | REC_MULTI);
        uint32_t sb, tb;
        size_t tl = strlen(e->type);
        rec_share_refs(&sh, m->streams[i].stream, m->streams[i].len, e->type, tl, (uint32_t)k,
                       &sb, &tb);
        size_t n = rec_encode_event_shared(L->gbuf.p + L->gbuf.len, m->streams[i].stream,
                                           m->streams[i].len, e, m->ids[k], flags, count,
                                           (uint32_t)k, pos, ms[i].next_rev++, now, sb, tb);
        rec_share_add(&sh, m->streams[i].stream, m->streams[i].len, e->type, tl, sb, tb, n);
        L->gbuf.len += n;
        c.count++;
    }
    uint32_t index = (uint32_t)m->nrecords;
    for (size_t i = 0; i < m->nstreams && rc == 0; i++) {
        const stele_snapshot_in *s = m->streams[i].state;
        if (!s)
            continue;
        uint64_t loc = loc_make(seg, (uint32_t)(write_off + L->gbuf.len));
        L->gbuf.len += rec_encode_body_in(L->gbuf.p + L->gbuf.len, REC_SNAPSHOT,
                                          (uint8_t)(s->flags & STELE_EVENT_JSON),
                                          m->streams[i].stream, m->streams[i].len, s->state,
                                          s->state_len, count, index++, s->schema_version,
                                          ms[i].st.last_rev, now);
        rc = sm_encode_state(L, txn, ms[i].st.sid, ms[i].st.last_rev, state_tag(r, i), loc);
    }
    return rc;
}

/* -------------------------------------------------------------- recovery */

typedef struct rslot {
    const char *name;
    uint16_t len;
    int touched;
    uint64_t next_rev;
    idx_stream st;
} rslot;

/* The streams a commit being recovered names, in order of first use. */
typedef struct rslots {
    rslot *v;
    size_t n, cap;
    size_t last; /* the slot of the previous event, SIZE_MAX before one */
} rslots;

/* The slot of event r's stream, made on the stream's first event in the
 * commit with its state from the index (or as a new stream). 0 with *out,
 * or an error. */
static int rslot_of(local *L, MDB_txn *txn, rslots *ss, const rec *r, size_t *out)
{
    size_t s = SIZE_MAX;
    if (ss->last != SIZE_MAX && ss->v[ss->last].len == r->stream_len &&
        !memcmp(ss->v[ss->last].name, r->stream, r->stream_len))
        s = ss->last;
    for (size_t j = 0; s == SIZE_MAX && j < ss->n; j++)
        if (ss->v[j].len == r->stream_len && !memcmp(ss->v[j].name, r->stream, r->stream_len))
            s = j;
    if (s == SIZE_MAX) {
        if (ss->n == ss->cap) {
            size_t nc = ss->cap ? ss->cap * 2 : 16;
            rslot *ns = realloc(ss->v, nc * sizeof *ns);
            if (!ns)
                return err_set(STELE_ENOMEM, "out of memory");
            ss->v = ns;
            ss->cap = nc;
        }
        rslot *sl = &ss->v[ss->n];
        memset(sl, 0, sizeof *sl);
        sl->name = r->stream;
        sl->len = r->stream_len;
        int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &sl->st);
        if (rc == STELE_ENOTFOUND) {
            memset(&sl->st, 0, sizeof sl->st);
            sl->st.sid = L->ck.next_sid++;
            sl->st.last_rev = sl->st.last_pos = UINT64_MAX;
            L->ck.streams++;
            rc = 0;
        }
        if (rc)
            return rc;
        s = ss->n++;
    }
    ss->last = s;
    *out = s;
    return 0;
}

/* Event r (at byte `off` of the commit in segment `name`) moves its
 * stream's slot on: revisions follow each other within the commit; its
 * client-given id is indexed. */
static int rslot_event(local *L, MDB_txn *txn, rslot *sl, const rec *r, const char *name,
                       uint64_t off)
{
    if (sl->touched && r->revision != sl->next_rev)
        return err_set(STELE_ECORRUPT,
                       "segment %s offset %llu: revision %llu of stream '%.*s' does not follow "
                       "%llu in its commit",
                       name, (unsigned long long)off, (unsigned long long)r->revision,
                       (int)r->stream_len, r->stream, (unsigned long long)(sl->next_rev - 1));
    sl->touched = 1;
    sl->next_rev = r->revision + 1;
    sl->st.last_rev = r->revision;
    sl->st.last_pos = r->position;
    sl->st.flags &= ~IDX_DELETED;
    if (!(r->flags & REC_ID_MADE))
        return idx_id_put(L->ix, txn, r->id, sl->st.sid, r->revision, r->position);
    return 0;
}

int multi_recover_commit(local *L, MDB_txn *txn, uint64_t start, uint64_t bytes)
{
    uint8_t *p = malloc(bytes ? bytes : 1);
    rslots ss = {.last = SIZE_MAX};
    if (!p)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = log_read(L->lg, start, p, bytes);
    size_t off = 0, run_s = SIZE_MAX;
    uint64_t run_off = 0;
    int states_put = 0;
    idx_commit c = {0};
    char name[32];
    log_seg_name(loc_seg(start), name);
    while (rc == 0 && off <= bytes) {
        rec r;
        const char *why = "record runs past its commit";
        int end = off == bytes;
        if (!end && rec_decode_trusted_in(p, off, bytes - off, &r, &why) != REC_OK) {
            rc = err_set(STELE_ECORRUPT, "segment %s offset %llu: %s", name,
                         (unsigned long long)(loc_off(start) + off), why);
            break;
        }
        size_t s = SIZE_MAX;
        if (!end && r.kind == REC_EVENT &&
            ((rc = rslot_of(L, txn, &ss, &r, &s)) ||
             (rc = rslot_event(L, txn, &ss.v[s], &r, name, loc_off(start) + off))))
            break;
        /* Runs of one stream's records: one commit entry each. */
        if (s != run_s) {
            if (run_s != SIZE_MAX) {
                c.bytes = (uint32_t)(off - run_off);
                if ((rc = idx_commit_put(L->ix, txn, &c)))
                    break;
            }
            run_s = s;
            if (s != SIZE_MAX) {
                c = (idx_commit){ss.v[s].st.sid, r.revision, start + off, r.position, 0, 0};
                run_off = off;
            }
        }
        if (s != SIZE_MAX)
            c.count++;
        if (s == SIZE_MAX && !states_put) {
            /* Past the events: the streams' states, before any snapshot. */
            for (size_t j = 0; j < ss.n && rc == 0; j++)
                rc = idx_stream_put(L->ix, txn, ss.v[j].name, ss.v[j].len, &ss.v[j].st);
            states_put = 1;
        }
        if (rc || end)
            break;
        if (r.kind == REC_SNAPSHOT)
            rc = sm_apply(L, txn, &r, start + off);
        off += r.len;
    }
    if (rc == 0 && L->ix->sec_on)
        rc = idx_sec_commit(L->ix, txn, p, bytes, start);
    free(ss.v);
    free(p);
    return rc;
}

/* ------------------------------------------------------------ scavenging */

int multi_removable(local *L, MDB_txn *txn, uint64_t at, int64_t now)
{
    log_iter it;
    log_iter_init(&it, L->lg, at, UINT64_MAX);
    uint32_t count = 1;
    int rc = 1;
    for (uint32_t i = 0; i < count && rc == 1; i++) {
        rec r;
        uint64_t loc;
        int short_tail;
        int st = log_iter_next(&it, &r, &loc, &short_tail);
        if (st != LOG_ITER_REC) {
            rc = st < 0 ? st : err_set(STELE_ECORRUPT, "multi-stream commit ends early");
            break;
        }
        if (i == 0)
            count = r.commit_count;
        if (r.kind == REC_SNAPSHOT) {
            int live = sm_record_live(L, txn, &r, loc);
            rc = live < 0 ? live : live ? 0 : 1;
            continue;
        }
        idx_stream s;
        int g = idx_stream_get(L->ix, txn, r.stream, r.stream_len, &s);
        if (g == STELE_ENOTFOUND) {
            err_clear();
            rc = 0;
        } else if (g) {
            rc = g;
        } else if (s.last_rev == r.revision || event_visible(&s, r.revision, r.created_us, now)) {
            rc = 0; /* a stream's last event, or a visible one: keep the commit */
        }
    }
    log_iter_free(&it);
    return rc;
}

/* --------------------------------------------------------------- requests */

static void reset_failed(wreq *r);

/* The bytes the commit's records take in the log: its events and state
 * snapshots (the API edge measured the commit neutrally). */
static uint64_t multi_rec_bytes(const multi_args *m)
{
    uint64_t n = 0;
    for (size_t i = 0; i < m->nstreams; i++)
        if (m->streams[i].state)
            n += rec_body_size(m->streams[i].len, m->streams[i].state->state_len, 0);
    for (size_t i = 0; i < m->nrecords; i++) {
        const stele_event_in *e = &m->records[i].event;
        n += rec_event_size(m->streams[m->records[i].stream].len, strlen(e->type), e->tags,
                            e->ntags, e->data_len, e->metadata_len);
    }
    return n;
}

int local_append_multi(backend *b, const multi_args *m, stele_append_result *per_stream,
                       stele_multi_result *res)
{
    backend_assert_multi(m);
    local *L = (local *)b;
    if (m->cond && !L->ix->sec_on)
        return err_set(STELE_EINVAL, "the store was opened with STELE_OPEN_NO_INDEXES: append "
                                     "conditions need its secondary indexes");
    wreq r;
    memset(&r, 0, sizeof r);
    r.op = OP_MULTI;
    r.m = m;
    r.ps = per_stream;
    r.mres = *res;
    r.stream = m->streams[0].stream;
    r.stream_len = m->streams[0].len;
    r.bytes = multi_rec_bytes(m);
    r.ms = calloc(m->nstreams, sizeof *r.ms);
    if (!r.ms)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = local_submit(L, &r);
    if (rc && !r.rc)
        r.rc = rc; /* not queued */
    reset_failed(&r);
    *res = r.mres;
    free(r.ms);
    return rc;
}

static void reset_failed(wreq *r)
{
    const multi_args *m = r->m;
    if (r->rc && r->rc != STELE_EWRONGREV && r->rc != STELE_EDELETED &&
        r->rc != STELE_ENOTFOUND)
        r->mres.failed_stream = SIZE_MAX;
    if (r->rc) {
        /* Keep which streams failed their checks, and their revisions. */
        int checks = r->rc == STELE_EWRONGREV || r->rc == STELE_EDELETED;
        for (size_t i = 0; i < m->nstreams; i++) {
            int f = checks ? r->ps[i].failed : 0;
            uint64_t cur = r->ps[i].current_revision;
            r->ps[i] = append_result_none();
            if (f) {
                r->ps[i].failed = f;
                r->ps[i].current_revision = cur;
            }
        }
        r->mres.first_position = r->mres.last_position = STELE_NONE;
        r->mres.idempotent = 0;
    }
}

void multi_finish_async(wreq *r)
{
    reset_failed(r);
    r->mdone_fn(r->done_ctx, r->rc, r->ps, r->m->nstreams, &r->mres, r->rc ? r->msg : "");
    free(r->ms);
    free(r);
}

int local_append_multi_async(backend *b, const multi_args *m, stele_append_result *per_stream,
                             const stele_multi_result *init, stele_append_multi_cb done,
                             void *ctx, size_t nstreams)
{
    backend_assert_multi(m);
    local *L = (local *)b;
    (void)nstreams;
    if (m->cond && !L->ix->sec_on)
        return err_set(STELE_EINVAL, "the store was opened with STELE_OPEN_NO_INDEXES: append "
                                     "conditions need its secondary indexes");
    wreq *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    r->op = OP_MULTI;
    r->m = m;
    r->ps = per_stream;
    r->mres = *init;
    r->stream = m->streams[0].stream;
    r->stream_len = m->streams[0].len;
    r->bytes = multi_rec_bytes(m);
    r->mdone_fn = done;
    r->done_ctx = ctx;
    r->ms = calloc(m->nstreams, sizeof *r->ms);
    int rc = r->ms ? local_enqueue(L, r) : err_set(STELE_ENOMEM, "out of memory");
    if (rc) {
        free(r->ms);
        free(r);
    }
    return rc;
}

/* ----------------------------------------------------------------- reads */

/* The records of the run a DCB read is in: read whole, with each event's
 * offset. */
typedef struct rchunk {
    buf b;
    uint64_t loc, start; /* the run's loc (UINT64_MAX: none loaded), first position */
    uint32_t count;
    size_t *offs, noffs;
    log_holders hold; /* kind 9 holders before the run (record.h) */
} rchunk;

/* Load `run` into ch and check each of its records is the event the index
 * says. 0, LOG_REMOVED (scavenged away; nothing loaded), or an error. */
static int chunk_load(local *L, rchunk *ch, const idx_run *run)
{
    ch->b.len = 0;
    ch->loc = UINT64_MAX;
    int rc = buf_reserve(&ch->b, run->bytes);
    if (rc)
        return rc;
    if ((rc = log_read(L->lg, run->loc, ch->b.p, run->bytes)))
        return rc;
    ch->b.len = run->bytes;
    if (ch->noffs < run->count) {
        size_t *no = realloc(ch->offs, run->count * sizeof *no);
        if (!no)
            return err_set(STELE_ENOMEM, "out of memory");
        ch->offs = no;
        ch->noffs = run->count;
    }
    size_t off = 0;
    for (uint32_t i = 0; i < run->count; i++) {
        rec r;
        const char *why = "the record runs past the indexed run";
        ch->offs[i] = off;
        rec_status st = off < ch->b.len ? rec_decode_in(ch->b.p, off, ch->b.len - off, &r, &why)
                                        : REC_SHORT;
        if (st == REC_FAR) {
            if ((rc = log_share_fetch(L->lg, run->loc + off, &r, &ch->hold)))
                return rc;
            st = REC_OK;
        }
        if (st != REC_OK || r.kind != REC_EVENT || r.position != run->start + i) {
            char name[32];
            log_seg_name(loc_seg(run->loc), name);
            return err_set(STELE_ECORRUPT,
                           "segment %s offset %llu: the index's run of position %llu does not "
                           "match the log (%s)",
                           name, (unsigned long long)(loc_off(run->loc) + off),
                           (unsigned long long)(run->start + i),
                           st != REC_OK ? why : "another record");
        }
        off += r.len;
    }
    ch->loc = run->loc;
    ch->start = run->start;
    ch->count = run->count;
    return 0;
}

int local_read_matching(backend *b, const stele_condition *cond, uint64_t from, int bw,
                        size_t limit, stele_page **out)
{
    local *L = (local *)b;
    if (!L->ix->sec_on)
        return err_set(STELE_EINVAL, "the store was opened with STELE_OPEN_NO_INDEXES: DCB "
                                     "queries need its secondary indexes");
    MDB_txn *txn;
    uint64_t visible, end;
    int rc = snapshot(L, &txn, &visible, &end);
    if (rc)
        return rc;
    stele_page *pg = NULL;
    dcb d;
    memset(&d, 0, sizeof d);
    rchunk ch = {.loc = UINT64_MAX};
    scratch_init(L, &ch.b);
    if ((rc = page_new(L->pl, &pg)) || (rc = dcb_open(L, txn, cond, &d)))
        goto done;
    page_expect(pg, limit);
    if (visible == 0 || limit == 0 || (!bw && from >= visible))
        goto done;
    uint64_t p = bw && from >= visible ? visible - 1 : from;
    for (;;) {
        uint64_t q = 0;
        idx_run run = {0};
        int g = dcb_next(&d, p, bw, &q, &run);
        if (g < 0) {
            rc = g;
            break;
        }
        if (g == 0 || q >= visible)
            break;
        if (page_full(pg, limit)) {
            pg->has_next = 1;
            pg->next = q;
            break;
        }
        if (run.loc != ch.loc || run.count != ch.count) {
            rc = chunk_load(L, &ch, &run);
            if (rc == LOG_REMOVED) {
                err_clear(); /* scavenged away: skip the run's events */
                rc = 0;
                if (bw ? run.start == 0 : 0)
                    break;
                p = bw ? run.start - 1 : run.start + run.count;
                continue;
            }
            if (rc)
                break;
        }
        rec r;
        const char *why;
        size_t off = ch.offs[q - ch.start];
        if (rec_decode_trusted_in(ch.b.p, off, ch.b.len - off, &r, &why) == REC_FAR &&
            (rc = log_share_fetch(L->lg, ch.loc + off, &r, &ch.hold)))
            break;
        if ((rc = local_page_add(pg, &r)))
            break;
        if (bw && q == 0)
            break;
        p = bw ? q - 1 : q + 1;
    }
done:
    dcb_close(&d);
    mdb_txn_abort(txn);
    scratch_free(L, &ch.b);
    free(ch.offs);
    log_holders_free(&ch.hold);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}
