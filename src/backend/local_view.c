/*
 * local_view.c - the system view streams of the local engine: $ce-{category},
 * $et-{type}, $bc-{correlationId} and $streams, read as streams without a
 * single stored link event.
 *
 * KurrentDB keeps these views as streams of link events that its
 * projections write, so every event is stored two to four times more. Here
 * a view is a reading of an index the engine keeps anyway:
 *
 *   $ce-, $et-, $bc-   the secondary index of the category, type or
 *                      correlation id (src/index/index_sec.c). A view
 *                      revision is the event's ordinal under its key, which
 *                      every run of the index carries: the n-th event ever
 *                      indexed under "Order" is revision n - 1 of $ce-Order.
 *   $streams           the commits table: a view revision is the stream's
 *                      internal number (sid, given in order of creation,
 *                      from 1) minus 1, and its event is the stream's first
 *                      visible event.
 *
 * A read at view revision r finds the run holding ordinal r (a bisection
 * over positions, idx_sec_seek_ord), turns it into a position and runs the
 * query machinery of local_query.c from there, in the same LMDB snapshot;
 * then each event of the page gets its ordinal back from its run. Events
 * hidden from stream reads (deletes, retention) are skipped as in queries,
 * so a view may have gaps in its revisions, never a change of them.
 *
 * Everything in one snapshot is bounded by its `visible` position: index
 * entries of commits not yet published to readers are ignored.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/local_int.h"
#include "log/record.h"

static int view_name_err(int kind, const char *key, size_t len)
{
    const char *pre = kind == STELE_QUERY_CATEGORY ? "$ce-"
                      : kind == STELE_QUERY_TYPE   ? "$et-"
                                                   : "$bc-";
    return err_set(STELE_ENOTFOUND, "stream '%s%.*s' not found", pre, (int)len, key);
}

/* The view revision of the event at `pos`, using and refreshing run *r. */
static int ord_of(idx_sec_cursor *sc, idx_run *r, int *have, uint64_t pos, int backwards,
                  uint64_t *ord)
{
    /* The page's events follow each other under the key: the next run
     * (in the page's direction) usually holds the next one. The cursor
     * stays on *r. */
    for (int step = 0; *have && step < 4; step++) {
        if (pos >= r->start && pos < r->start + r->count)
            break;
        if (backwards ? pos >= r->start : pos < r->start + r->count)
            break; /* between runs or behind: seek */
        idx_run nx;
        if (idx_sec_step(sc, backwards, &nx)) {
            *have = 0;
            err_clear();
            break;
        }
        *r = nx;
    }
    if (!*have || pos < r->start || pos >= r->start + r->count) {
        int rc = idx_sec_seek(sc, pos, backwards, r);
        if (rc)
            return rc == STELE_ENOTFOUND
                       ? err_set(STELE_ECORRUPT, "index: position %llu is in no run of its key",
                                 (unsigned long long)pos)
                       : rc;
        *have = 1;
    }
    if (pos >= r->start && pos < r->start + r->count)
        *ord = r->ord + (pos - r->start);
    else /* between runs (a next position): the nearest in the direction */
        *ord = backwards ? r->ord + r->count - 1 : r->ord;
    return 0;
}

static int read_sec_view(local *L, MDB_txn *txn, uint64_t visible, int kind, const char *key,
                         size_t klen, uint64_t from, int backwards, size_t limit,
                         stele_page *pg)
{
    static const int sec_kind[] = {
        [STELE_QUERY_CATEGORY] = SEC_CATEGORY,
        [STELE_QUERY_TYPE] = SEC_TYPE,
        [STELE_QUERY_CORRELATION] = SEC_CORRELATION,
    };
    idx_sec_cursor sc;
    int rc = idx_sec_open(L->ix, txn, sec_kind[kind], key, klen, &sc);
    idx_run last, r;
    if (rc == 0 && (rc = idx_sec_last(&sc, visible, &last)) == STELE_ENOTFOUND)
        rc = view_name_err(kind, key, klen);
    uint64_t end = rc == 0 ? last.ord + last.count : 0; /* the next ordinal */
    if (rc || limit == 0 || (!backwards && from >= end))
        goto done;
    uint64_t o = backwards && from >= end ? end - 1 : from;
    if ((rc = idx_sec_seek_ord(&sc, o, &r))) {
        if (rc == STELE_ENOTFOUND)
            rc = err_set(STELE_ECORRUPT, "index: ordinal %llu below the end of its key is in "
                         "no run", (unsigned long long)o);
        goto done;
    }
    query_args q;
    memset(&q, 0, sizeof q);
    q.kind = kind;
    q.key = key;
    q.key_len = klen;
    q.from = r.start + (o - r.ord);
    q.backwards = backwards;
    q.limit = limit;
    if ((rc = local_query_sec(L, txn, &q, 0, visible, pg)))
        goto done;
    int have = 0;
    for (size_t i = 0; i < pg->count && rc == 0; i++) {
        uint64_t ord;
        rc = ord_of(&sc, &r, &have, page_ev(pg, i)->position, backwards, &ord);
        if (rc == 0)
            rc = page_set_link(pg, i, ord);
    }
    if (rc == 0 && pg->has_next)
        rc = ord_of(&sc, &r, &have, pg->next, backwards, &pg->next);
done:
    idx_sec_close(&sc);
    return rc;
}

/* The name of the stream whose commit is `c`, from its first record. */
static int commit_stream(local *L, const idx_commit *c, buf *b, char *name, size_t *len)
{
    uint8_t head[4];
    int rc = log_read(L->lg, c->loc, head, sizeof head);
    uint32_t n = rc == 0 ? ld32(head) : 0;
    if (rc == 0 && (n < REC_MIN_SIZE || n > c->bytes))
        rc = err_set(STELE_ECORRUPT, "index: the commit of stream %llu has a bad first record",
                     (unsigned long long)c->sid);
    if (rc == 0 && (rc = buf_reserve(b, n)) == 0)
        rc = log_read(L->lg, c->loc, b->p, n);
    if (rc)
        return rc;
    rec r;
    const char *why = "not an event";
    rec_status st = rec_decode(b->p, n, &r, &why);
    /* A stream's run inside a multi-stream commit may name its stream by
     * an earlier record (kind 9): read that one. */
    log_holders hold = {0};
    if (st == REC_FAR) {
        if ((rc = log_share_fetch(L->lg, c->loc, &r, &hold))) {
            log_holders_free(&hold);
            return rc;
        }
        st = REC_OK;
    }
    if (st != REC_OK || r.kind != REC_EVENT || r.stream_len > 255) {
        log_holders_free(&hold);
        return err_set(STELE_ECORRUPT, "index: the commit of stream %llu: %s",
                       (unsigned long long)c->sid, st == REC_OK ? "not an event" : why);
    }
    memcpy(name, r.stream, r.stream_len);
    name[r.stream_len] = 0;
    *len = r.stream_len;
    log_holders_free(&hold);
    return 0;
}

static int read_streams_view(local *L, MDB_txn *txn, uint64_t visible, uint64_t from,
                             int backwards, size_t limit, stele_page *pg)
{
    idx_commit c;
    int rc = idx_rev_stream_at(L->ix, txn, 0, 0, &c);
    if (rc == STELE_ENOTFOUND)
        return err_set(STELE_ENOTFOUND, "stream '$streams' not found");
    if (rc || limit == 0)
        return rc;
    buf b;
    scratch_init(L, &b);
    /* Stream numbers start at 1; view revisions at 0. */
    uint64_t sid = from == UINT64_MAX ? UINT64_MAX : from + 1;
    int more = 1;
    while (rc == 0 && more) {
        if (page_full(pg, limit)) {
            pg->has_next = 1;
            pg->next = sid - 1;
            break;
        }
        rc = idx_rev_stream_at(L->ix, txn, sid, backwards, &c);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            rc = 0;
            break;
        }
        if (rc)
            break;
        more = backwards ? c.sid > 1 : c.sid < UINT64_MAX;
        sid = backwards ? c.sid - 1 : c.sid + 1;
        char name[256];
        size_t len = 0;
        rc = commit_stream(L, &c, &b, name, &len);
        if (rc == LOG_REMOVED) { /* cannot be (a stream's last commit stays); skip it */
            err_clear();
            rc = 0;
            continue;
        }
        stele_page *one = NULL;
        if (rc == 0)
            rc = local_read_stream(&L->base, name, len, 0, 0, 1, &one);
        if (rc == STELE_ENOTFOUND || rc == STELE_EDELETED) {
            err_clear(); /* deleted: no first event to show */
            rc = 0;
            continue;
        }
        if (rc)
            break;
        if (one->count == 0 || page_ev(one, 0)->position >= visible) {
            stele_page_free(one);
            continue;
        }
        size_t at = pg->count;
        if ((rc = page_take_reversed(pg, one, 1)) == 0)
            rc = page_set_link(pg, at, c.sid - 1);
    }
    scratch_free(L, &b);
    return rc;
}

int local_read_view(backend *b, int kind, const char *key, size_t key_len, uint64_t from,
                    int backwards, size_t limit, stele_page **out)
{
    local *L = (local *)b;
    if (kind != VIEW_STREAMS && !L->ix->sec_on)
        return err_set(STELE_EINVAL, "the store was opened with STELE_OPEN_NO_INDEXES: the "
                                     "view streams $ce-, $et- and $bc- need its indexes");
    MDB_txn *txn;
    uint64_t visible, end;
    int rc = snapshot(L, &txn, &visible, &end);
    if (rc)
        return rc;
    stele_page *pg = NULL;
    rc = page_new(L->pl, &pg);
    if (rc == 0)
        rc = kind == VIEW_STREAMS
                 ? read_streams_view(L, txn, visible, from, backwards, limit, pg)
                 : read_sec_view(L, txn, visible, kind, key, key_len, from, backwards, limit, pg);
    mdb_txn_abort(txn);
    if (rc) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}
