/*
 * local_query.c - queries of the local engine through the secondary
 * indexes (src/index/index_sec.c), and temporal stream reads.
 *
 * A query by category, type, tag, correlation id or actor walks the runs
 * indexed under its key (stretches of one commit's events at consecutive
 * positions, in adjacent records), from `from` in its direction, inside the
 * position range its time bounds map to (the time table turns [after,
 * before) into [first(after), first(before))). What it yields are
 * *stretches*: a run cut to the positions still wanted. A type restriction
 * intersects two keys' runs by leapfrogging: each cursor seeks the other's
 * position, so the work follows the shorter list. Stretches are fetched in
 * batches: runs close to each other in one segment are read with one pread
 * (each run knows its bytes), every record is checked (it must be the event
 * the index names, with a valid checksum, else ECORRUPT naming the place),
 * filtered by event_visible() against its stream's current state (deletes,
 * retention) and copied into the page; backwards, a stretch's records are
 * walked forwards and added in reverse.
 *
 * A query over $all by time (STELE_QUERY_ALL) is a $all read limited to the
 * position range: the sparse position index and a forward log scan, as
 * local_read_all, and like $all it hides nothing.
 *
 * Temporal stream reads: `to` bounds a stream read by revision; `as of` a
 * time first finds, in the same way, the first position created after that
 * time, then by binary search over the stream's commits the last revision
 * before that position, and reads up to it.
 *
 * Everything runs in one LMDB read snapshot (snapshot()), so a page is
 * consistent with one committed state: an acknowledged append is visible to
 * every query that starts after it returned.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/local_int.h"
#include "log/record.h"

#define BATCH 256           /* stretches fetched at once */
#define RUN_GAP (16u << 10) /* runs closer than this are read together */
#define RUN_MAX (2u << 20)  /* bytes in one read at most (a bigger run alone) */

static int no_indexes(void)
{
    return err_set(STELE_EINVAL, "the store was opened with STELE_OPEN_NO_INDEXES: queries and "
                                 "reads by time need its secondary indexes");
}

/* ------------------------------------------------------------- recovery */

int sec_recover_commit(local *L, MDB_txn *txn, uint64_t start, uint64_t end)
{
    if (!L->ix->sec_on)
        return 0;
    size_t n = (size_t)(end - start);
    uint8_t *p = malloc(n ? n : 1);
    if (!p)
        return err_set(STELE_ENOMEM, "out of memory");
    int rc = log_read(L->lg, start, p, n);
    if (rc == 0)
        rc = idx_sec_commit(L->ix, txn, p, n, start);
    free(p);
    return rc;
}

/* ------------------------------------------------------------ positions */

/* The position range [*lo, *hi) of events created in the query's time
 * range, within the snapshot's `visible` events. */
static int time_range(local *L, MDB_txn *txn, const query_args *q, uint64_t visible,
                      uint64_t *lo, uint64_t *hi)
{
    *lo = 0;
    *hi = visible;
    int rc = 0;
    uint64_t p;
    if (q->has_after) {
        rc = idx_time_first(L->ix, txn, q->after_us, &p);
        *lo = rc == 0 && p < visible ? p : visible;
    }
    if ((rc == 0 || rc == STELE_ENOTFOUND) && q->has_before) {
        rc = idx_time_first(L->ix, txn, q->before_us, &p);
        *hi = rc == 0 && p < visible ? p : visible;
    }
    return rc == STELE_ENOTFOUND ? 0 : rc;
}

/* ----------------------------------------------------------- candidates */

/* A stretch of a run to return: positions [lo, hi) of `run`. */
typedef struct cand {
    idx_run run;
    uint64_t lo, hi;
} cand;

/* The runs matching the query, stretch by stretch in its direction. */
typedef struct cands {
    idx_sec_cursor a, b; /* the key; the type restriction (b.cur NULL: none) */
    uint64_t lo, hi;     /* the query's position range [lo, hi) */
    uint64_t p;          /* forwards: next position >= p; backwards: <= p */
    int backwards, ended;
    idx_run cur;         /* a's current run, if have_cur */
    int have_cur;
} cands;

static uint64_t run_end(const idx_run *r) { return r->start + r->count; }

/* a's run holding p or the next one in the direction: by stepping when
 * the previous run was used up exactly, else by seeking. */
static int run_at(cands *cs, idx_run *out)
{
    int rc;
    if (cs->have_cur && !cs->backwards && cs->p == run_end(&cs->cur))
        rc = idx_sec_step(&cs->a, 0, out);
    else if (cs->have_cur && cs->backwards && cs->p + 1 == cs->cur.start)
        rc = idx_sec_step(&cs->a, 1, out);
    else if (cs->have_cur && cs->p >= cs->cur.start && cs->p < run_end(&cs->cur))
        return *out = cs->cur, 0;
    else
        rc = idx_sec_seek(&cs->a, cs->p, cs->backwards, out);
    cs->have_cur = rc == 0;
    if (rc == 0)
        cs->cur = *out;
    return rc;
}

/* The next stretch: 1 (with *c), 0 at the end, or an error. */
static int cand_next(cands *cs, cand *c)
{
    int fw = !cs->backwards;
    while (!cs->ended) {
        if (fw ? cs->p >= cs->hi : cs->p < cs->lo)
            break;
        idx_run a;
        int rc = run_at(cs, &a);
        if (rc)
            return rc == STELE_ENOTFOUND ? (cs->ended = 1, 0) : rc;
        /* The part of a still to go, within the query's range. */
        uint64_t a0 = a.start, a1 = run_end(&a);
        if (fw && a0 < cs->p)
            a0 = cs->p;
        if (!fw && a1 > cs->p + 1)
            a1 = cs->p + 1;
        if (a0 < cs->lo)
            a0 = cs->lo;
        if (a1 > cs->hi)
            a1 = cs->hi;
        if (a0 >= a1)
            break; /* the run lies outside the range: nothing further */
        if (cs->b.cur) {
            /* Leapfrog: the type's run at (or next to) a's part. */
            idx_run b;
            rc = idx_sec_seek(&cs->b, fw ? a0 : a1 - 1, cs->backwards, &b);
            if (rc)
                return rc == STELE_ENOTFOUND ? (cs->ended = 1, 0) : rc;
            uint64_t o0 = a0 > b.start ? a0 : b.start;
            uint64_t o1 = a1 < run_end(&b) ? a1 : run_end(&b);
            if (o0 >= o1) {
                /* No overlap: go on from where b is. */
                if (fw)
                    cs->p = b.start;
                else if (run_end(&b) == 0)
                    break;
                else
                    cs->p = run_end(&b) - 1;
                continue;
            }
            a0 = o0;
            a1 = o1;
        }
        c->run = a;
        c->lo = a0;
        c->hi = a1;
        if (fw)
            cs->p = a1;
        else if (a0 == 0)
            cs->ended = 1;
        else
            cs->p = a0 - 1;
        return 1;
    }
    cs->ended = 1;
    return 0;
}

/* -------------------------------------------------------------- fetching */

/* The state of the stream an event belongs to, cached for runs of events
 * of one stream. */
typedef struct st_cache {
    char name[256];
    size_t len;
    int valid;
    idx_stream st;
} st_cache;

static int stream_of(local *L, MDB_txn *txn, st_cache *sc, const rec *r)
{
    if (sc->valid && sc->len == r->stream_len && !memcmp(sc->name, r->stream, r->stream_len))
        return 0;
    sc->valid = 0;
    int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &sc->st);
    if (rc == STELE_ENOTFOUND)
        return err_set(STELE_ECORRUPT,
                       "index: the event at position %llu is in stream '%.*s', which the index "
                       "does not know",
                       (unsigned long long)r->position, (int)r->stream_len, r->stream);
    if (rc)
        return rc;
    memcpy(sc->name, r->stream, r->stream_len);
    sc->len = r->stream_len;
    sc->valid = 1;
    return 0;
}

static int bad_entry(uint64_t pos, uint64_t loc, const char *why)
{
    char name[32];
    log_seg_name(loc_seg(loc), name);
    return err_set(STELE_ECORRUPT,
                   "segment %s offset %u: the index entry of position %llu points here, but %s",
                   name, loc_off(loc), (unsigned long long)pos, why);
}

/* One query's page being filled. */
typedef struct filler {
    local *L;
    MDB_txn *txn;
    stele_page *pg;
    size_t limit;
    int backwards;
    int64_t now_us;
    st_cache sc;
    buf chunk;
    size_t *offs; /* backwards: record offsets of one stretch */
    size_t offcap;
    log_holders hold; /* kind 9 holders before a stretch (record.h) */
} filler;

static int add_visible(filler *f, const rec *r)
{
    int rc = stream_of(f->L, f->txn, &f->sc, r);
    if (rc == 0 && event_visible(&f->sc.st, r->revision, r->created_us, f->now_us))
        rc = local_page_add(f->pg, r);
    return rc;
}

/*
 * Add the events of stretch c, whose run's records are in f->chunk from
 * byte `base` (the run's `bytes`, checked), in the query's direction.
 */
static int add_stretch(filler *f, const cand *c, size_t base)
{
    const idx_run *run = &c->run;
    size_t off = base;
    size_t need = (size_t)(c->hi - run->start); /* records to walk */
    if (f->backwards && f->offcap < need) {
        size_t *no = realloc(f->offs, need * sizeof *no);
        if (!no)
            return err_set(STELE_ENOMEM, "out of memory");
        f->offs = no;
        f->offcap = need;
    }
    int rc = 0;
    for (size_t i = 0; i < need && rc == 0; i++) {
        rec r;
        uint64_t pos = run->start + i, loc = run->loc + (off - base);
        const char *why = "the record runs past the indexed run";
        size_t avail = base + run->bytes - off;
        rec_status st = rec_decode_in(f->chunk.p, off, avail, &r, &why);
        if (st == REC_FAR) { /* a holder before the run: read it */
            if ((rc = log_share_fetch(f->L->lg, loc, &r, &f->hold)))
                return rc;
            st = REC_OK;
        }
        if (st != REC_OK)
            return bad_entry(pos, loc, st == REC_ZERO ? "there is no record" : why);
        if (r.kind != REC_EVENT || r.position != pos)
            return bad_entry(pos, loc, "the record there is another event");
        if (pos >= c->lo) {
            if (!f->backwards) {
                if (page_full(f->pg, f->limit))
                    break;
                rc = add_visible(f, &r);
            } else {
                f->offs[i] = off;
            }
        }
        off += r.len;
    }
    for (size_t i = need; f->backwards && rc == 0 && i-- > (size_t)(c->lo - run->start);) {
        if (page_full(f->pg, f->limit))
            break;
        rec r;
        const char *why;
        if (rec_decode_in(f->chunk.p, f->offs[i], base + run->bytes - f->offs[i], &r, &why) ==
            REC_FAR)
            rc = log_share_fetch(f->L->lg, run->loc + (f->offs[i] - base), &r, &f->hold);
        if (rc == 0)
            rc = add_visible(f, &r);
    }
    return rc;
}

/*
 * Fetch stretches c[0..n) and add their visible events to the page until
 * it is full. Nearby runs of one segment are read with one pread. Returns
 * 0 with *used = the stretches consumed whole, or an error; when the page
 * filled up inside a stretch, *stop_at is the first position left out.
 */
static int fetch(filler *f, const cand *c, size_t n, size_t *used, uint64_t *stop_at,
                 int *stopped)
{
    local *L = f->L;
    size_t i = 0;
    int rc = 0;
    *stopped = 0;
    while (i < n && rc == 0 && !page_full(f->pg, f->limit)) {
        size_t j = i;
        uint64_t first = c[i].run.loc, last = c[i].run.loc + c[i].run.bytes;
        /* A scavenged segment is compacted: runs that were near each other
         * may not be any more, so each is read on its own there. */
        int scavenged = log_seg_scavenged(L->lg, loc_seg(first));
        while (!scavenged && j + 1 < n && loc_seg(c[j + 1].run.loc) == loc_seg(c[i].run.loc)) {
            uint64_t s = c[j + 1].run.loc, e = s + c[j + 1].run.bytes;
            uint64_t lo2 = s < first ? s : first, hi2 = e > last ? e : last;
            uint64_t gap = s >= last ? s - last : first >= e ? first - e : 0;
            if (gap > RUN_GAP || hi2 - lo2 > RUN_MAX)
                break;
            first = lo2;
            last = hi2;
            j++;
        }
        log_seg *s = L->lg->segs[loc_seg(first)];
        /* (In a scavenged segment the index's offsets are the old file's,
         * which may lie past the compacted file: log_read translates.) */
        if ((!scavenged && loc_off(last) > s->size) || last < first)
            return bad_entry(c[i].run.start, c[i].run.loc, "the run runs past its segment");
        f->chunk.len = 0;
        if ((rc = buf_reserve(&f->chunk, (size_t)(last - first))))
            break;
        rc = log_read(L->lg, first, f->chunk.p, (size_t)(last - first));
        if (rc == LOG_REMOVED && scavenged) {
            /* Scavenging removed this run's commit: its events were
             * hidden already (the index keeps such entries). */
            err_clear();
            rc = 0;
            i++;
            continue;
        }
        if (rc)
            break;
        f->chunk.len = (size_t)(last - first);
        for (; i <= j && rc == 0; i++) {
            size_t before = f->pg->count;
            rc = add_stretch(f, &c[i], (size_t)(c[i].run.loc - first));
            if (rc == 0 && page_full(f->pg, f->limit)) {
                /* Did the page fill before the end of this stretch? */
                size_t added = f->pg->count - before;
                uint64_t last_pos = added ? page_ev(f->pg, f->pg->count - 1)->position : 0;
                uint64_t rest = !f->backwards ? last_pos + 1 : last_pos - 1;
                if (added && (!f->backwards ? rest < c[i].hi : last_pos > c[i].lo)) {
                    *stop_at = rest;
                    *stopped = 1;
                }
                if (!*stopped)
                    i++;
                break;
            }
        }
        if (rc || page_full(f->pg, f->limit))
            break;
    }
    *used = i;
    return rc;
}

int local_query_sec(local *L, MDB_txn *txn, const query_args *q, uint64_t lo, uint64_t hi,
                     stele_page *pg)
{
    static const int sec_kind[] = {
        [STELE_QUERY_CATEGORY] = SEC_CATEGORY, [STELE_QUERY_TYPE] = SEC_TYPE,
        [STELE_QUERY_TAG] = SEC_TAG, [STELE_QUERY_CORRELATION] = SEC_CORRELATION,
        [STELE_QUERY_ACTOR] = SEC_ACTOR, [STELE_QUERY_CAUSATION] = SEC_CAUSATION,
    };
    cands cs;
    memset(&cs, 0, sizeof cs);
    cs.lo = lo;
    cs.hi = hi;
    cs.backwards = q->backwards;
    if (lo >= hi || q->limit == 0 || (!q->backwards && q->from >= hi) ||
        (q->backwards && q->from < lo))
        return 0;
    cs.p = q->backwards ? (q->from < hi - 1 ? q->from : hi - 1) : (q->from > lo ? q->from : lo);
    int rc = idx_sec_open(L->ix, txn, sec_kind[q->kind], q->key, q->key_len, &cs.a);
    if (rc == 0 && q->type)
        rc = idx_sec_open(L->ix, txn, SEC_TYPE, q->type, q->type_len, &cs.b);
    filler f;
    memset(&f, 0, sizeof f);
    f.L = L;
    f.txn = txn;
    f.pg = pg;
    f.limit = q->limit;
    f.backwards = q->backwards;
    f.now_us = time_now_us();
    scratch_init(L, &f.chunk);
    cand *c = malloc(BATCH * sizeof *c);
    if (rc == 0 && !c)
        rc = err_set(STELE_ENOMEM, "out of memory");
    while (rc == 0) {
        /* Stretches covering a little more than the page can still take,
         * to know where the next page starts. */
        size_t room = q->limit - pg->count, n = 0, used = 0;
        uint64_t want_events = room + 1, have = 0;
        int got = 1;
        while (n < BATCH && have < want_events && (got = cand_next(&cs, &c[n])) == 1) {
            have += c[n].hi - c[n].lo;
            n++;
        }
        if (got < 0) {
            rc = got;
            break;
        }
        uint64_t stop_at = 0;
        int stopped = 0;
        if (n && (rc = fetch(&f, c, n, &used, &stop_at, &stopped)))
            break;
        if (page_full(pg, q->limit)) {
            cand nx = {0};
            if (stopped) {
                pg->has_next = 1;
                pg->next = stop_at;
            } else if (used < n) {
                pg->has_next = 1;
                pg->next = q->backwards ? c[used].hi - 1 : c[used].lo;
            } else if ((got = cand_next(&cs, &nx)) == 1) {
                pg->has_next = 1;
                pg->next = q->backwards ? nx.hi - 1 : nx.lo;
            } else {
                rc = got;
            }
            break;
        }
        if (cs.ended)
            break;
    }
    free(c);
    free(f.offs);
    scratch_free(L, &f.chunk);
    log_holders_free(&f.hold);
    idx_sec_close(&cs.a);
    idx_sec_close(&cs.b);
    return rc;
}

/* $all limited to positions [lo, hi). */
static int query_all(local *L, MDB_txn *txn, uint64_t end, const query_args *q, uint64_t lo,
                     uint64_t hi, stele_page *pg)
{
    if (lo >= hi || q->limit == 0 || (!q->backwards && q->from >= hi) ||
        (q->backwards && q->from < lo))
        return 0;
    uint64_t found, loc;
    int rc = 0;
    if (!q->backwards) {
        uint64_t from = q->from > lo ? q->from : lo;
        rc = idx_pos_floor(L->ix, txn, from, &found, &loc);
        if (rc == 0)
            rc = scan_all(L, loc, end, from, hi - 1, q->limit, pg);
        if (rc == 0 && pg->count) {
            uint64_t last = page_ev(pg, pg->count - 1)->position;
            if (last + 1 < hi) {
                pg->has_next = 1;
                pg->next = last + 1;
            }
        }
    } else {
        uint64_t target = q->from < hi - 1 ? q->from : hi - 1;
        while (rc == 0 && !page_full(pg, q->limit)) {
            rc = idx_pos_floor(L->ix, txn, target, &found, &loc);
            stele_page *part = NULL;
            if (rc == 0)
                rc = page_new(L->pl, &part);
            if (rc == 0)
                rc = scan_all(L, loc, end, found > lo ? found : lo, target, SIZE_MAX, part);
            if (rc == 0)
                rc = page_take_reversed(pg, part, q->limit - pg->count);
            else
                stele_page_free(part);
            if (rc || found <= lo)
                break;
            target = found - 1;
        }
        if (rc == 0 && pg->count) {
            uint64_t last = page_ev(pg, pg->count - 1)->position;
            if (last > lo) {
                pg->has_next = 1;
                pg->next = last - 1;
            }
        }
    }
    if (rc == STELE_ENOTFOUND)
        rc = err_set(STELE_ECORRUPT, "index: no position entry at or before %llu",
                     (unsigned long long)q->from);
    return rc;
}

int local_query(backend *b, const query_args *q, stele_page **out)
{
    local *L = (local *)b;
    if (!L->ix->sec_on)
        return no_indexes();
    MDB_txn *txn;
    uint64_t visible, end, lo, hi;
    int rc = snapshot(L, &txn, &visible, &end);
    if (rc)
        return rc;
    stele_page *pg = NULL;
    rc = page_new(L->pl, &pg);
    if (rc == 0)
        page_expect(pg, q->limit);
    if (rc == 0)
        rc = time_range(L, txn, q, visible, &lo, &hi);
    if (rc == 0)
        rc = q->kind == STELE_QUERY_ALL ? query_all(L, txn, end, q, lo, hi, pg)
                                        : local_query_sec(L, txn, q, lo, hi, pg);
    mdb_txn_abort(txn);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}

/* ------------------------------------------------------- temporal reads */

/* The position of revision `rev` of the stream under `cur`, or of the
 * first revision after it that the index holds. */
static int rev_pos(idx_rev_cursor *cur, uint64_t rev, uint64_t *pos)
{
    idx_commit c;
    int rc = idx_rev_seek(cur, rev, 0, &c);
    if (rc)
        return rc;
    *pos = c.first_rev <= rev ? c.first_pos + (rev - c.first_rev) : c.first_pos;
    return 0;
}

/*
 * The last revision of the stream created at or before `as_of`: *to, or
 * STELE_NONE when it had no events then. Positions grow with revisions, so
 * this is a binary search over revisions for the last one before the first
 * position created after `as_of`.
 */
static int revision_as_of(local *L, const char *stream, size_t len, int64_t as_of,
                          uint64_t *to)
{
    MDB_txn *txn;
    uint64_t visible, end;
    int rc = snapshot(L, &txn, &visible, &end);
    if (rc)
        return rc;
    idx_stream st;
    idx_rev_cursor cur = {0};
    uint64_t bound = visible; /* first position created after as_of */
    if ((rc = stream_state(L, txn, stream, len, &st)))
        goto done;
    if (as_of < INT64_MAX) {
        rc = idx_time_first(L->ix, txn, as_of + 1, &bound);
        if (rc == STELE_ENOTFOUND) {
            bound = visible;
            rc = 0;
        }
        if (rc)
            goto done;
    }
    *to = STELE_NONE;
    if (st.last_pos < bound) {
        *to = st.last_rev;
        goto done;
    }
    if ((rc = idx_rev_open(L->ix, txn, st.sid, &cur)))
        goto done;
    uint64_t lo = 0, hi = st.last_rev, p;
    if ((rc = rev_pos(&cur, lo, &p)) == 0 && p < bound) {
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo + 1) / 2;
            if ((rc = rev_pos(&cur, mid, &p)))
                break;
            if (p < bound)
                lo = mid;
            else
                hi = mid - 1;
        }
        if (rc == 0)
            *to = lo;
    }
    if (rc == STELE_ENOTFOUND)
        rc = err_set(STELE_ECORRUPT, "index: stream '%.*s' has no commit at or after a revision "
                     "below its last", (int)len, stream);
done:
    idx_rev_close(&cur);
    mdb_txn_abort(txn);
    return rc;
}

int local_read_stream_to(backend *b, const char *stream, size_t len, uint64_t from,
                         int backwards, size_t limit, uint64_t to, int has_as_of,
                         int64_t as_of_us, stele_page **out)
{
    local *L = (local *)b;
    int rc;
    if (has_as_of) {
        if (!L->ix->sec_on)
            return no_indexes();
        if ((rc = revision_as_of(L, stream, len, as_of_us, &to)))
            return rc;
        if (to == STELE_NONE) /* no events then: an empty page */
            return local_read_stream(b, stream, len, 0, 0, 0, out);
    }
    if (backwards)
        return local_read_stream(b, stream, len, from < to ? from : to, 1, limit, out);
    if (from > to)
        return local_read_stream(b, stream, len, from, 0, 0, out);
    /* Revisions that a read returns are consecutive: asking for at most
     * to - from + 1 of them stops at `to` unless the read starts later
     * (hidden revisions); the page is then cut at `to`. */
    uint64_t span = to - from;
    size_t lim = span < (uint64_t)limit ? (size_t)span + 1 : limit;
    stele_page *pg;
    if ((rc = local_read_stream(b, stream, len, from, 0, lim, &pg)))
        return rc;
    while (pg->count && page_ev(pg, pg->count - 1)->revision > to)
        pg->count--;
    if (pg->count == 0 || page_ev(pg, pg->count - 1)->revision >= to)
        pg->has_next = 0;
    *out = pg;
    return 0;
}
