/*
 * test_property_multi.c - the model-based property test (property_model.h,
 * whose comment states the single-stream semantics A1-A9) with
 * multi-stream appends added to the mix.
 *
 * Multi-stream appends and DCB conditions (docs/consistency.md) run in the
 * same model: stele_append_multi over 1..4 streams with random
 * interleavings, check-only streams, every expectation including
 * STELE_DELETED (KurrentDB 26.1's table, M1), and now and then a DCB
 * condition over the model's types and tags with a random `after`; their
 * idempotent retries; and stele_read_matching compared with the model's
 * matches in both directions. Reopens check that no multi-stream commit is
 * ever half there.
 *  M1 Expectations of a multi-stream append: any; no_stream (never written
 *     or soft-deleted); stream_exists (EDELETED if soft-deleted, EWRONGREV
 *     if never written); STELE_DELETED (soft-deleted only); an exact
 *     revision (the last one, soft-deleted streams too). Tombstoned:
 *     EDELETED when written, and when checked with anything but any and
 *     no_stream. The first failing stream in request order is reported
 *     with its last revision (STELE_NONE if never written).
 */
#include "property_model.h"

/* ------------------------------------------------- multi-stream appends */

/* M1: the outcome of stream s's expectation e in a multi-stream append. */
static int multi_expect(int s, int64_t e, int writes)
{
    int tomb = st[s].tombstoned, soft = !tomb && st[s].deleted, exists = stream_live(s);
    if (tomb)
        return writes || (e != STELE_ANY && e != STELE_NO_STREAM) ? STELE_EDELETED : 0;
    if (e == STELE_ANY)
        return 0;
    if (e == STELE_NO_STREAM)
        return exists ? STELE_EWRONGREV : 0;
    if (e == STELE_STREAM_EXISTS)
        return soft ? STELE_EDELETED : exists ? 0 : STELE_EWRONGREV;
    if (e == STELE_DELETED)
        return soft ? 0 : STELE_EWRONGREV;
    return (exists || soft) && stream_last(s) == (uint64_t)e ? 0 : STELE_EWRONGREV;
}

static int mev_matches(const mev *m, const stele_condition *c)
{
    for (size_t i = 0; i < c->nitems; i++) {
        const stele_query_item *it = &c->items[i];
        int ok = it->ntypes == 0;
        for (size_t t = 0; t < it->ntypes && !ok; t++)
            ok = !strcmp(it->types[t], m->type);
        for (size_t g = 0; g < it->ntags && ok; g++) {
            int has = 0;
            for (size_t k = 0; k < m->ntags && !has; k++)
                has = !strcmp(m->tags[k], it->tags[g]);
            ok = has;
        }
        if (ok)
            return 1;
    }
    return 0;
}

/* A random DCB query over the pools: 1..2 items of 0..2 types, 0..2 tags. */
typedef struct mquery {
    stele_query_item items[2];
    const char *types[2][2], *tags[2][2];
    stele_condition c;
} mquery;

static void pick_query(mquery *q)
{
    memset(q, 0, sizeof *q);
    size_t n = 1 + t_rand_below(2);
    for (size_t i = 0; i < n; i++) {
        size_t nt = t_rand_below(3), ng = t_rand_below(3);
        if (!nt && !ng)
            ng = 1;
        for (size_t k = 0; k < nt; k++)
            q->types[i][k] = type_pool[t_rand_below(8)];
        for (size_t k = 0; k < ng; k++)
            q->tags[i][k] = tag_pool[t_rand_below(12)];
        q->items[i] = (stele_query_item){q->types[i], nt, q->tags[i], ng};
    }
    q->c = (stele_condition){q->items, n, STELE_NONE};
}

static void check_multi_result(const stele_append_result *ps, const stele_multi_result *mr,
                               const int *ss, size_t ns, const size_t *rs, size_t nr,
                               uint64_t first_pos, const uint64_t *first_rev, int idem)
{
    char t1[24], t2[24];
    if (mr->first_position != first_pos || mr->last_position != first_pos + nr - 1 ||
        mr->idempotent != idem)
        fail("multi result: positions %s..%" PRIu64 " idempotent %d, want %s..%" PRIu64 " %d",
             u64s(mr->first_position, t1), mr->last_position, mr->idempotent,
             u64s(first_pos, t2), first_pos + nr - 1, idem);
    for (size_t i = 0; i < ns; i++) {
        uint64_t fp = STELE_NONE, lp = STELE_NONE, cnt = 0;
        for (size_t k = 0; k < nr; k++)
            if (rs[k] == i) {
                if (fp == STELE_NONE)
                    fp = first_pos + k;
                lp = first_pos + k;
                cnt++;
            }
        uint64_t fr = cnt ? first_rev[i] : STELE_NONE, lr = cnt ? first_rev[i] + cnt - 1 : STELE_NONE;
        if (ps[i].first_position != fp || ps[i].last_position != lp ||
            ps[i].first_revision != fr || ps[i].last_revision != lr)
            fail("multi result of stream %zu \"%s\": revisions %s.., positions %s.., want %s.., %s..",
                 i, names[ss[i]], u64s(ps[i].first_revision, t1), u64s(ps[i].first_position, t2),
                 u64s(fr, t1), u64s(fp, t2));
    }
}

static void op_multi(void)
{
    int ss[4];
    size_t ns = 1 + t_rand_below(4);
    for (size_t i = 0; i < ns; i++) {
        int s, dup;
        do {
            s = pick_stream();
            dup = 0;
            for (size_t j = 0; j < i; j++)
                dup |= ss[j] == s;
        } while (dup);
        ss[i] = s;
    }
    stele_append_stream as[4];
    int64_t ex[4];
    int writes[4] = {0};
    for (size_t i = 0; i < ns; i++) {
        int kind;
        int sdx = ss[i];
        if (t_rand_below(2)) /* mostly right, so that commits happen */
            ex[i] = st[sdx].deleted && !st[sdx].tombstoned ? STELE_DELETED
                    : stream_live(sdx)                     ? (int64_t)stream_last(sdx)
                                                           : STELE_NO_STREAM;
        else
            ex[i] = t_rand_below(8) == 0 ? STELE_DELETED : pick_expected(sdx, &kind);
        as[i] = (stele_append_stream){names[ss[i]], ex[i], NULL};
    }
    size_t nr = 1 + t_rand_below(8);
    built b;
    build_events(&b, nr);
    size_t rs[8];
    stele_append_record rec[8];
    size_t check_only = ns > 1 && t_rand_below(3) == 0 ? ns - 1 : SIZE_MAX;
    for (size_t k = 0; k < nr; k++) {
        rs[k] = t_rand_below(ns);
        if (rs[k] == check_only)
            rs[k] = 0;
        writes[rs[k]] = 1;
        rec[k] = (stele_append_record){rs[k], b.in[k]};
    }
    mquery q;
    int with_cond = t_rand_below(3) == 0;
    if (with_cond) {
        pick_query(&q);
        q.c.after = t_rand_below(4) == 0 ? STELE_NONE : t_rand_below(N + 2);
    }
    int want = 0;
    size_t want_stream = SIZE_MAX;
    uint64_t want_at = STELE_NONE;
    for (size_t i = 0; i < ns && !want; i++)
        if (st[ss[i]].tombstoned && writes[i])
            want = multi_expect(ss[i], ex[i], 1), want_stream = i;
    for (size_t i = 0; i < ns && !want; i++)
        if ((want = multi_expect(ss[i], ex[i], writes[i])))
            want_stream = i;
    if (!want && with_cond) {
        uint64_t from = q.c.after == STELE_NONE ? 0 : q.c.after + 1;
        for (uint64_t p = from; p < N && want_at == STELE_NONE; p++)
            if (mev_matches(&evs[p], &q.c))
                want_at = p;
        if (want_at != STELE_NONE)
            want = STELE_ECONDITION;
    }
    char es[32];
    int off = snprintf(opbuf, sizeof opbuf, "append_multi %zu events over", nr);
    for (size_t i = 0; i < ns && off < 400; i++)
        off += snprintf(opbuf + off, sizeof opbuf - (size_t)off, " \"%.40s\"(%s%s)", names[ss[i]],
                        exp_str(ex[i], es, sizeof es), writes[i] ? "" : ", check-only");
    if (with_cond)
        snprintf(opbuf + off, sizeof opbuf - (size_t)off, " condition after %" PRId64,
                 q.c.after == STELE_NONE ? (int64_t)-1 : (int64_t)q.c.after);
    stele_append_result ps[4];
    stele_multi_result mr;
    uint64_t before = N;
    int rc = stele_append_multi(db, as, ns, rec, nr, with_cond ? &q.c : NULL, ps, &mr);
    expect_rc(rc, want, "stele_append_multi");
    if (rc && rc == want) {
        char t1[24], t2[24];
        if ((rc == STELE_EWRONGREV || rc == STELE_EDELETED) &&
            (mr.failed_stream != want_stream || mr.current_revision != stream_last(ss[want_stream])))
            fail("multi failure: stream %zu current %s, want stream %zu current %s",
                 mr.failed_stream, u64s(mr.current_revision, t1), want_stream,
                 u64s(stream_last(ss[want_stream]), t2));
        if (rc == STELE_EWRONGREV || rc == STELE_EDELETED) {
            /* every failing stream marked: the tombstoned ones written to,
             * if any (checked first), else every failing expectation */
            int tomb_pass = st[ss[want_stream]].tombstoned && writes[want_stream];
            for (size_t i = 0; i < ns; i++) {
                int wf = tomb_pass ? (st[ss[i]].tombstoned && writes[i] ? STELE_EDELETED : 0)
                                   : multi_expect(ss[i], ex[i], writes[i]);
                if (ps[i].failed != wf ||
                    (wf && ps[i].current_revision != stream_last(ss[i])))
                    fail("multi failure: stream %zu \"%s\" marked %d (current %s), want %d", i,
                         names[ss[i]], ps[i].failed, u64s(ps[i].current_revision, t1), wf);
            }
        }
        if (rc == STELE_ECONDITION && mr.condition_position != want_at)
            fail("condition position %s, want %s", u64s(mr.condition_position, t1),
                 u64s(want_at, t2));
    }
    tally.multi_ok += rc == 0;
    tally.multi_fail += rc != 0;
    tally.cond_fail += rc == STELE_ECONDITION;
    if (rc == 0 && want == 0) {
        uint64_t first_rev[4];
        for (size_t i = 0; i < ns; i++)
            first_rev[i] = st[ss[i]].nrev;
        /* into the model, record by record, as one append */
        if (naps == apcap) {
            apcap = apcap ? apcap * 2 : 256;
            aps = xrealloc(aps, apcap * sizeof *aps);
        }
        mappend *ap = &aps[naps];
        memset(ap, 0, sizeof *ap);
        ap->stream = ss[rs[0]];
        ap->n = nr;
        ap->first_pos = N;
        ap->all_ids = b.all_ids;
        ap->multi = 1;
        for (size_t k = 0; k < nr; k++) {
            int s = ss[rs[k]];
            if (N == evcap) {
                evcap = evcap ? evcap * 2 : 1024;
                evs = xrealloc(evs, evcap * sizeof *evs);
            }
            mev *m = &evs[N];
            memset(m, 0, sizeof *m);
            m->stream = s;
            m->revision = st[s].nrev;
            if (b.in[k].id) {
                memcpy(m->id, b.in[k].id, 16);
                m->id_known = 1;
            }
            m->type = b.in[k].type;
            m->data = b.data[k];
            m->data_len = b.in[k].data_len;
            m->meta = b.meta[k];
            m->meta_len = b.in[k].metadata_len;
            m->tags = b.tags[k];
            m->ntags = b.in[k].ntags;
            m->flags = b.in[k].flags;
            m->append = naps;
            stream_push(s, N);
            N++;
            st[s].ever = 1;
            st[s].deleted = 0;
        }
        naps++;
        check_multi_result(ps, &mr, ss, ns, rs, nr, before, first_rev, 0);
        built_free(&b, 1);
        do_all_read(STELE_END, STELE_BACKWARDS, nr, 1);
    } else {
        built_free(&b, 0);
    }
    for (size_t i = 0; i < ns; i++)
        check_head(ss[i]);
    check_stats();
}

/* Retry an earlier multi-stream append whole: idempotent, nothing new. */
static void op_multi_retry(void)
{
    long a = -1;
    for (int tries = 0; tries < 30 && naps > 0 && a < 0; tries++) {
        size_t c = t_rand_below(naps);
        if (aps[c].multi && aps[c].all_ids)
            a = (long)c;
    }
    if (a < 0)
        return;
    const mappend *ap = &aps[a];
    int ss[8];
    size_t ns = 0, rs[8];
    stele_append_record rec[8];
    stele_append_stream as[8];
    int tomb = 0;
    for (size_t k = 0; k < ap->n; k++) {
        const mev *m = &evs[ap->first_pos + k];
        size_t i = 0;
        while (i < ns && ss[i] != m->stream)
            i++;
        if (i == ns) {
            ss[ns] = m->stream;
            as[ns] = (stele_append_stream){names[m->stream], STELE_ANY, NULL};
            tomb |= st[m->stream].tombstoned;
            ns++;
        }
        rs[k] = i;
        stele_event_in e = {m->id, m->type, m->data, m->data_len, m->meta, m->meta_len,
                            (const char *const *)m->tags, m->ntags, m->flags};
        rec[k] = (stele_append_record){i, e};
    }
    snprintf(opbuf, sizeof opbuf, "retry of multi-stream append #%ld (%zu events, position %" PRIu64
             ")", a, ap->n, ap->first_pos);
    stele_append_result ps[8];
    stele_multi_result mr;
    int rc = stele_append_multi(db, as, ns, rec, ap->n, NULL, ps, &mr);
    if (tomb) {
        expect_rc(rc, STELE_EDELETED, "stele_append_multi (retry, a stream tombstoned since)");
        return;
    }
    expect_rc(rc, 0, "stele_append_multi (idempotent retry)");
    if (rc == 0) {
        uint64_t first_rev[8];
        for (size_t i = 0; i < ns; i++)
            for (size_t k = 0; k < ap->n; k++)
                if (rs[k] == i) {
                    first_rev[i] = evs[ap->first_pos + k].revision;
                    break;
                }
        check_multi_result(ps, &mr, ss, ns, rs, ap->n, ap->first_pos, first_rev, 1);
    }
    tally.multi_retry += rc == 0;
    check_stats();
}

/* stele_read_matching against the model, paged, both directions. */
static void op_matching(void)
{
    mquery q;
    pick_query(&q);
    int d = (int)t_rand_below(2);
    uint64_t from = d ? (t_rand_below(3) ? STELE_END : t_rand_below(N + 2)) : t_rand_below(N + 2);
    if (!d && t_rand_below(3))
        from = 0;
    size_t lim = 1 + t_rand_below(30);
    snprintf(opbuf, sizeof opbuf, "read_matching (%zu items) from %" PRId64 " %s limit %zu",
             q.c.nitems, from == STELE_END ? (int64_t)-1 : (int64_t)from,
             d ? "backwards" : "forwards", lim);
    uint64_t *want = xmalloc((N + 1) * sizeof *want);
    size_t nw = 0;
    if (!d) {
        for (uint64_t p = from; p < N; p++)
            if (mev_matches(&evs[p], &q.c))
                want[nw++] = p;
    } else if (N) {
        for (uint64_t p = from >= N ? N - 1 : from;; p--) {
            if (mev_matches(&evs[p], &q.c))
                want[nw++] = p;
            if (p == 0)
                break;
        }
    }
    size_t got = 0;
    for (int pages = 0; pages < 10000; pages++) {
        stele_page *pg;
        int rc = stele_read_matching(db, &q.c, from, d, lim, &pg);
        expect_rc(rc, 0, "stele_read_matching");
        if (rc)
            break;
        for (size_t i = 0; i < stele_page_count(pg); i++, got++) {
            const stele_event *e = stele_page_event(pg, i);
            if (got >= nw || e->position != want[got]) {
                fail("read_matching: event %zu at position %" PRIu64 ", want %s", got,
                     e->position, got < nw ? "another" : "none");
                break;
            }
            check_event(e, e->position, "read_matching");
        }
        uint64_t nx;
        int more = stele_page_next(pg, &nx);
        stele_page_free(pg);
        if (!more || got > nw)
            break;
        from = nx;
    }
    if (got != nw)
        fail("read_matching: %zu events, want %zu", got, nw);
    free(want);
    tally.matching++;
}


static void multi_op(uint64_t r)
{
    if (r < 935)
        op_multi();
    else if (r < 942)
        op_multi_retry();
    else
        op_matching();
}

int main(void)
{
    t_seed();
    quick = getenv("TEST_QUICK") != NULL && atoi(getenv("TEST_QUICK")) != 0;
    init_pools();
    prop_tag = "propm";
    for (run = 0; run < NRUNS; run++)
        one_run(run % 2 == 0, multi_op); /* runs 0 and 2 use 64 KiB segments */
    model_reset();
    return t_done("test_property_multi", NRUNS);
}
