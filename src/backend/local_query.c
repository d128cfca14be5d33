/*
 * local_query.c - queries of the local engine through the secondary
 * indexes (src/index/index_sec.c), and temporal stream reads.
 *
 * A query by category, type, tag, correlation id or actor walks the sorted
 * positions indexed under its key, from `from` in its direction, inside the
 * position range its time bounds map to (the time table turns [after,
 * before) into [first(after), first(before))). A type restriction
 * intersects two keys' position lists by leapfrogging: each cursor seeks
 * the other's position, so the work follows the smaller list. Candidates
 * are fetched in batches: their records are read with one pread per run of
 * nearby records (`loc` in each entry), checked (the record at loc must be
 * the event at that position, with a valid checksum), filtered by
 * event_visible() against the stream's current state (deletes, retention),
 * and copied into the page.
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

#define BATCH 256          /* candidates fetched at once */
#define RUN_GAP (16u << 10) /* records closer than this are read together */
#define RUN_MAX (1u << 20)  /* at most this many bytes in one read */
#define RUN_TAIL 2048u      /* bytes read past the last record's start */

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

/* The positions matching the query, one after another in its direction. */
typedef struct cand {
    idx_sec_cursor a, b; /* the key; the type restriction (b.cur NULL: none) */
    uint64_t lo, hi;     /* position range [lo, hi) */
    uint64_t start;
    int backwards, started, ended;
} cand;

static int in_range(const cand *cs, uint64_t pos)
{
    return pos >= cs->lo && pos < cs->hi;
}

/* The next candidate: 1 (with *pos, *loc), 0 at the end, or an error. */
static int cand_next(cand *cs, uint64_t *pos, uint64_t *loc)
{
    if (cs->ended)
        return 0;
    uint64_t a, aloc, b, bloc;
    int rc = cs->started ? idx_sec_step(&cs->a, cs->backwards, &a, &aloc)
                         : idx_sec_seek(&cs->a, cs->start, cs->backwards, &a, &aloc);
    cs->started = 1;
    for (;;) {
        if (rc == 0 && !in_range(cs, a))
            rc = STELE_ENOTFOUND;
        if (rc)
            break;
        if (!cs->b.cur) {
            *pos = a;
            *loc = aloc;
            return 1;
        }
        rc = idx_sec_seek(&cs->b, a, cs->backwards, &b, &bloc);
        if (rc)
            break;
        if (b == a) {
            *pos = a;
            *loc = aloc;
            return 1;
        }
        if (!in_range(cs, b)) {
            rc = STELE_ENOTFOUND;
            break;
        }
        rc = idx_sec_seek(&cs->a, b, cs->backwards, &a, &aloc);
    }
    cs->ended = 1;
    return rc == STELE_ENOTFOUND ? 0 : rc;
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

/*
 * Decode the record of candidate (pos, loc) from `chunk` (the log from
 * chunk_loc, chunk->len bytes), reading it on its own into `big` when it
 * runs past the chunk.
 */
static int cand_record(local *L, const buf *chunk, uint64_t chunk_loc, buf *big, uint64_t pos,
                       uint64_t loc, rec *r)
{
    size_t off = (size_t)(loc - chunk_loc);
    const uint8_t *p = chunk->p + off;
    uint64_t avail = chunk->len - off;
    if (avail < REC_HEADER_SIZE || ld32(p) > avail) {
        uint8_t hdr[8];
        int rc = avail >= 8 ? (memcpy(hdr, p, 8), 0) : log_read(L->lg, loc, hdr, 8);
        if (rc)
            return rc;
        uint32_t len = ld32(hdr);
        log_seg *s = L->lg->segs[loc_seg(loc)];
        if (len < REC_HEADER_SIZE || len % REC_ALIGN || loc_off(loc) + (uint64_t)len > s->size)
            return bad_entry(pos, loc, "no record of a valid length starts there");
        big->len = 0;
        if ((rc = buf_reserve(big, len)) || (rc = log_read(L->lg, loc, big->p, len)))
            return rc;
        big->len = len;
        p = big->p;
        avail = len;
    }
    const char *why = "the record is cut short";
    rec_status st = rec_decode(p, avail, r, &why);
    if (st != REC_OK)
        return bad_entry(pos, loc, why);
    if (r->kind != REC_EVENT || r->position != pos)
        return bad_entry(pos, loc, "the record there is another event");
    return 0;
}

/* One query's page being filled. */
typedef struct filler {
    local *L;
    MDB_txn *txn;
    stele_page *pg;
    size_t limit;
    int64_t now_us;
    st_cache sc;
    buf chunk, big;
} filler;

/*
 * Fetch the candidates pos[0..n) / loc[0..n) and add the visible ones to
 * the page until it is full. Returns 0 with *used = how many candidates
 * were consumed (all n unless the page filled up), or an error.
 */
static int fetch(filler *f, const uint64_t *pos, const uint64_t *loc, size_t n, size_t *used)
{
    local *L = f->L;
    size_t i = 0;
    int rc = 0;
    while (i < n && rc == 0 && !page_full(f->pg, f->limit)) {
        /* A run: records in one segment, each near the previous one, read
         * with one pread. Positions only grow with locations, in both
         * directions the run is a contiguous range of the log. */
        size_t j = i;
        uint64_t first = loc[i], last = loc[i];
        while (j + 1 < n && loc_seg(loc[j + 1]) == loc_seg(loc[i])) {
            uint64_t nx = loc[j + 1];
            uint64_t lo2 = nx < first ? nx : first, hi2 = nx > last ? nx : last;
            uint64_t prev = loc[j];
            uint64_t gap = nx > prev ? nx - prev : prev - nx;
            if (gap > RUN_GAP || hi2 - lo2 > RUN_MAX)
                break;
            first = lo2;
            last = hi2;
            j++;
        }
        log_seg *s = L->lg->segs[loc_seg(first)];
        uint64_t want = last - first + RUN_TAIL;
        if (loc_off(first) + want > s->size)
            want = s->size - loc_off(first);
        f->chunk.len = 0;
        if ((rc = buf_reserve(&f->chunk, want)) ||
            (rc = log_read(L->lg, first, f->chunk.p, (size_t)want)))
            break;
        f->chunk.len = (size_t)want;
        for (; i <= j && rc == 0 && !page_full(f->pg, f->limit); i++) {
            rec r;
            if ((rc = cand_record(L, &f->chunk, first, &f->big, pos[i], loc[i], &r)))
                break;
            if ((rc = stream_of(L, f->txn, &f->sc, &r)))
                break;
            if (event_visible(&f->sc.st, r.revision, r.created_us, f->now_us))
                rc = page_add(f->pg, &r);
        }
        if (rc)
            break;
    }
    *used = i;
    return rc;
}

static int query_sec(local *L, MDB_txn *txn, const query_args *q, uint64_t lo, uint64_t hi,
                     stele_page *pg)
{
    static const int sec_kind[] = {
        [STELE_QUERY_CATEGORY] = SEC_CATEGORY, [STELE_QUERY_TYPE] = SEC_TYPE,
        [STELE_QUERY_TAG] = SEC_TAG, [STELE_QUERY_CORRELATION] = SEC_CORRELATION,
        [STELE_QUERY_ACTOR] = SEC_ACTOR,
    };
    cand cs;
    memset(&cs, 0, sizeof cs);
    cs.lo = lo;
    cs.hi = hi;
    cs.backwards = q->backwards;
    if (lo >= hi || q->limit == 0 || (!q->backwards && q->from >= hi) ||
        (q->backwards && q->from < lo))
        return 0;
    cs.start = q->backwards ? (q->from < hi - 1 ? q->from : hi - 1) : (q->from > lo ? q->from : lo);
    int rc = idx_sec_open(L->ix, txn, sec_kind[q->kind], q->key, q->key_len, &cs.a);
    if (rc == 0 && q->type)
        rc = idx_sec_open(L->ix, txn, SEC_TYPE, q->type, q->type_len, &cs.b);
    filler f;
    memset(&f, 0, sizeof f);
    f.L = L;
    f.txn = txn;
    f.pg = pg;
    f.limit = q->limit;
    f.now_us = time_now_us();
    scratch_init(L, &f.chunk);
    uint64_t *pos = malloc(BATCH * sizeof *pos), *loc = malloc(BATCH * sizeof *loc);
    if (rc == 0 && (!pos || !loc))
        rc = err_set(STELE_ENOMEM, "out of memory");
    while (rc == 0) {
        /* One more candidate than the page can still take, to know where
         * the next page starts. */
        size_t room = q->limit - pg->count, n = 0, used = 0;
        size_t want = room < BATCH - 1 ? room + 1 : BATCH;
        int got = 1;
        while (n < want && (got = cand_next(&cs, &pos[n], &loc[n])) == 1)
            n++;
        if (got < 0) {
            rc = got;
            break;
        }
        if (n && (rc = fetch(&f, pos, loc, n, &used)))
            break;
        if (page_full(pg, q->limit)) {
            uint64_t p, l;
            if (used < n) {
                pg->has_next = 1;
                pg->next = pos[used];
            } else if ((got = cand_next(&cs, &p, &l)) == 1) {
                pg->has_next = 1;
                pg->next = p;
            } else {
                rc = got;
            }
            break;
        }
        if (cs.ended)
            break;
    }
    free(pos);
    free(loc);
    scratch_free(L, &f.chunk);
    buf_free(&f.big);
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
        rc = time_range(L, txn, q, visible, &lo, &hi);
    if (rc == 0)
        rc = q->kind == STELE_QUERY_ALL ? query_all(L, txn, end, q, lo, hi, pg)
                                        : query_sec(L, txn, q, lo, hi, pg);
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
