/*
 * multi.c - multi-stream appends and DCB reads at the API edge
 * (stele_append_multi, stele_read_matching; docs/consistency.md).
 *
 * Everything a backend may assume is checked here, with a message naming
 * the stream, record or condition item at fault: at least one stream and
 * one record; no stream named twice; every record naming a stream of the
 * request; names, expected revisions, events and state snapshots valid;
 * event ids unique across the whole request (a retry is recognised by
 * them); the whole commit (events and state records) within
 * max_append_size; a condition with 1..STELE_MAX_CONDITION_ITEMS items,
 * each with at least one type or tag. On any error nothing reaches the
 * backend, so nothing is written.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "store/store_int.h"
#include "stele.h"
#include "util/util.h"

#define MAX_ITEM_NAMES 64u

static int check_expected_multi(size_t i, int64_t expected)
{
    if (expected >= 0 || expected == STELE_ANY || expected == STELE_NO_STREAM ||
        expected == STELE_STREAM_EXISTS || expected == STELE_DELETED)
        return 0;
    return err_set(STELE_EINVAL,
                   "stream %zu: expected revision %lld is not a revision, STELE_ANY, "
                   "STELE_NO_STREAM, STELE_STREAM_EXISTS or STELE_DELETED",
                   i, (long long)expected);
}

/* Check a DCB query (the items of a condition). */
static int check_query(const stele_condition *cond)
{
    if (!cond->items || cond->nitems == 0)
        return err_set(STELE_EINVAL, "a condition needs at least one query item");
    if (cond->nitems > STELE_MAX_CONDITION_ITEMS)
        return err_set(STELE_EINVAL, "a condition has %zu query items, more than %u",
                       cond->nitems, STELE_MAX_CONDITION_ITEMS);
    for (size_t i = 0; i < cond->nitems; i++) {
        const stele_query_item *it = &cond->items[i];
        if (it->ntypes == 0 && it->ntags == 0)
            return err_set(STELE_EINVAL,
                           "condition item %zu has neither types nor tags (it would match every "
                           "event)",
                           i);
        if (it->ntypes > MAX_ITEM_NAMES || it->ntags > MAX_ITEM_NAMES)
            return err_set(STELE_EINVAL, "condition item %zu: more than %u %s", i,
                           MAX_ITEM_NAMES, it->ntypes > MAX_ITEM_NAMES ? "types" : "tags");
        if ((it->ntypes && !it->types) || (it->ntags && !it->tags))
            return err_set(STELE_EINVAL, "condition item %zu: %s is NULL", i,
                           it->ntypes && !it->types ? "types" : "tags");
        int rc;
        for (size_t k = 0; k < it->ntypes; k++)
            if ((rc = store_check_item_name("type", i, it->types[k])))
                return rc;
        for (size_t k = 0; k < it->ntags; k++)
            if ((rc = store_check_item_name("tag", i, it->tags[k])))
                return rc;
    }
    return 0;
}

typedef struct name_ix {
    const char *name;
    size_t i;
} name_ix;

static int cmp_name(const void *a, const void *b)
{
    const name_ix *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->i < y->i ? -1 : x->i > y->i);
}

/* What multi() hands the backend, and frees afterwards. */
typedef struct mprep {
    multi_args m;
    multi_stream_args *ms;
    uint8_t (*ids)[16];
    uint8_t *made;
} mprep;

static void mprep_free(mprep *p)
{
    free(p->ms);
    free(p->ids);
    free(p->made);
}

static int prepare_multi(stele_db *db, const stele_append_stream *streams, size_t nstreams,
                         const stele_append_record *records, size_t nrecords,
                         const stele_condition *cond, int system, mprep *p)
{
    int rc;
    memset(p, 0, sizeof *p);
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    if (nstreams == 0 || !streams)
        return err_set(STELE_EINVAL, "a multi-stream append needs at least one stream");
    if (nstreams > STELE_MAX_APPEND_STREAMS)
        return err_set(STELE_ETOOBIG, "a multi-stream append names %zu streams, more than %u",
                       nstreams, STELE_MAX_APPEND_STREAMS);
    if (nrecords == 0 || !records)
        return err_set(STELE_EINVAL, "a multi-stream append needs at least one event");
    if (nrecords > db->opts.max_append_size / STORE_EVENT_FIXED)
        return err_set(STELE_ETOOBIG, "append of %zu events is larger than the %llu-byte limit",
                       nrecords, (unsigned long long)db->opts.max_append_size);
    if (cond && (rc = check_query(cond)))
        return rc;
    p->ms = calloc(nstreams, sizeof *p->ms);
    p->ids = malloc(nrecords * 16);
    p->made = malloc(nrecords);
    name_ix *names = malloc(nstreams * sizeof *names);
    if (!p->ms || !p->ids || !p->made || !names) {
        free(names);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    uint64_t total = 0;
    rc = 0;
    for (size_t i = 0; i < nstreams && rc == 0; i++) {
        const stele_append_stream *s = &streams[i];
        size_t len;
        if ((rc = check_name_of(s->stream, &len, system))) {
            err_set(rc, "stream %zu: %s", i, stele_errmsg());
            break;
        }
        if ((rc = check_expected_multi(i, s->expected)))
            break;
        if (s->state) {
            const stele_snapshot_in *st = s->state;
            if (st->state_len && !st->state)
                rc = err_set(STELE_EINVAL, "stream %zu: state is NULL with a non-zero length", i);
            else if (st->flags & ~(uint32_t)STELE_EVENT_JSON)
                rc = err_set(STELE_EINVAL, "stream %zu: unknown state flags 0x%x", i, st->flags);
            else if (st->state_len > db->opts.max_event_size)
                rc = err_set(STELE_ETOOBIG, "stream %zu: state of %zu bytes is larger than the "
                             "%llu-byte limit", i, st->state_len,
                             (unsigned long long)db->opts.max_event_size);
            if (rc)
                break;
            total += STORE_EVENT_FIXED + len + st->state_len;
        }
        p->ms[i] = (multi_stream_args){s->stream, len, s->expected, s->state, 0};
        names[i] = (name_ix){s->stream, i};
    }
    if (rc == 0) {
        qsort(names, nstreams, sizeof *names, cmp_name);
        for (size_t i = 1; i < nstreams && rc == 0; i++)
            if (!strcmp(names[i - 1].name, names[i].name))
                rc = err_set(STELE_EINVAL, "stream '%s' is named twice (streams %zu and %zu)",
                             names[i].name, names[i - 1].i, names[i].i);
    }
    free(names);
    if (rc)
        return rc;
    size_t nclient = 0;
    int64_t now_us = time_now_us();
    for (size_t i = 0; i < nrecords; i++) {
        const stele_append_record *r = &records[i];
        if (r->stream >= nstreams)
            return err_set(STELE_EINVAL, "event %zu names stream %zu, but the append has %zu", i,
                           r->stream, nstreams);
        if ((rc = store_take_event(&db->opts, i, &r->event, p->ms[r->stream].len,
                                   i ? records[i - 1].event.type : NULL, now_us, &total,
                                   p->ids[i], &p->made[i], &nclient)))
            return rc;
        p->ms[r->stream].nevents++;
    }
    if (total > db->opts.max_append_size)
        return err_set(STELE_ETOOBIG, "append is larger than the %llu-byte append limit",
                       (unsigned long long)db->opts.max_append_size);
    if ((rc = store_check_ids((const uint8_t(*)[16])p->ids, p->made, nrecords, nclient)))
        return rc;
    p->m = (multi_args){p->ms, nstreams, records, nrecords, (const uint8_t(*)[16])p->ids,
                        p->made, cond, total};
    return 0;
}

static int append_multi(stele_db *db, const stele_append_stream *streams, size_t nstreams,
                        const stele_append_record *records, size_t nrecords,
                        const stele_condition *cond, stele_append_result *per_stream,
                        stele_multi_result *res, int system)
{
    err_clear();
    stele_multi_result tmp;
    if (!res)
        res = &tmp;
    memset(res, 0, sizeof *res);
    res->first_position = res->last_position = STELE_NONE;
    res->failed_stream = SIZE_MAX;
    res->current_revision = STELE_NONE;
    res->condition_position = STELE_NONE;
    if (per_stream)
        for (size_t i = 0; i < nstreams; i++)
            per_stream[i] = append_result_none();
    mprep p;
    int rc = prepare_multi(db, streams, nstreams, records, nrecords, cond, system, &p);
    if (rc == 0 && !db->be->ops->append_multi)
        rc = err_set(STELE_EINVAL, "the %s backend has no multi-stream appends",
                     db->be->ops->name);
    if (rc == 0) {
        stele_append_result *ps = per_stream;
        if (!ps && !(ps = malloc(nstreams * sizeof *ps)))
            rc = err_set(STELE_ENOMEM, "out of memory");
        if (rc == 0) {
            for (size_t i = 0; !per_stream && i < nstreams; i++)
                ps[i] = append_result_none();
            rc = db->be->ops->append_multi(db->be, &p.m, ps, res);
            if (ps != per_stream)
                free(ps);
        }
    }
    mprep_free(&p);
    return rc;
}

int stele_append_multi(stele_db *db, const stele_append_stream *streams, size_t nstreams,
                       const stele_append_record *records, size_t nrecords,
                       const stele_condition *cond, stele_append_result *per_stream,
                       stele_multi_result *res)
{
    return append_multi(db, streams, nstreams, records, nrecords, cond, per_stream, res, 0);
}

int store_append_multi_system(stele_db *db, const stele_append_stream *streams, size_t nstreams,
                              const stele_append_record *records, size_t nrecords,
                              const stele_condition *cond, stele_append_result *per_stream,
                              stele_multi_result *res)
{
    return append_multi(db, streams, nstreams, records, nrecords, cond, per_stream, res, 1);
}

/*
 * An async multi-stream append owns a deep copy of its request (names,
 * states, events, the condition) in one allocation, so the caller may free
 * its own as soon as the call returns.
 */
typedef struct amulti {
    mprep p;
    stele_append_stream *streams;
    stele_snapshot_in *states;
    stele_append_record *records;
    stele_query_item *items;
    stele_condition cond;
    stele_append_result *ps;
    char *mem;
    size_t used, cap;
    stele_append_multi_cb cb;
    void *ctx;
} amulti;

static void amulti_free(amulti *a)
{
    mprep_free(&a->p);
    free(a->streams);
    free(a->states);
    free(a->records);
    free(a->items);
    free(a->ps);
    free(a->mem);
    free(a);
}

static size_t al8(size_t n) { return (n + 7) & ~(size_t)7; }

static void *bump(amulti *a, const void *src, size_t n)
{
    char *p = a->mem + a->used;
    if (n)
        memcpy(p, src, n);
    a->used += al8(n);
    return p;
}

static const char *bump_str(amulti *a, const char *s) { return bump(a, s, strlen(s) + 1); }

static const char *const *bump_strs(amulti *a, const char *const *v, size_t n)
{
    if (!n)
        return NULL;
    const char **out = (const char **)(void *)(a->mem + a->used);
    a->used += al8(n * sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i] = bump_str(a, v[i]);
    return out;
}

static size_t strs_size(const char *const *v, size_t n)
{
    size_t need = al8(n * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        need += al8(strlen(v[i]) + 1);
    return need;
}

static int amulti_copy(amulti *a, const stele_append_stream *streams, size_t nstreams,
                       const stele_append_record *records, size_t nrecords,
                       const stele_condition *cond)
{
    size_t need = 0;
    for (size_t i = 0; i < nstreams; i++) {
        need += al8(strlen(streams[i].stream) + 1);
        if (streams[i].state)
            need += al8(streams[i].state->state_len);
    }
    for (size_t i = 0; i < nrecords; i++) {
        const stele_event_in *e = &records[i].event;
        need += al8(strlen(e->type) + 1) + al8(e->data_len) + al8(e->metadata_len) + 16 +
                strs_size(e->tags, e->ntags);
    }
    for (size_t i = 0; cond && i < cond->nitems; i++)
        need += strs_size(cond->items[i].types, cond->items[i].ntypes) +
                strs_size(cond->items[i].tags, cond->items[i].ntags);
    a->streams = calloc(nstreams, sizeof *a->streams);
    a->states = calloc(nstreams, sizeof *a->states);
    a->records = calloc(nrecords, sizeof *a->records);
    a->items = cond ? calloc(cond->nitems, sizeof *a->items) : NULL;
    a->ps = calloc(nstreams, sizeof *a->ps);
    a->mem = malloc(need ? need : 8);
    if (!a->streams || !a->states || !a->records || (cond && !a->items) || !a->ps || !a->mem)
        return err_set(STELE_ENOMEM, "out of memory");
    for (size_t i = 0; i < nstreams; i++) {
        a->streams[i] = streams[i];
        a->streams[i].stream = bump_str(a, streams[i].stream);
        if (streams[i].state) {
            a->states[i] = *streams[i].state;
            a->states[i].state = bump(a, streams[i].state->state, streams[i].state->state_len);
            a->streams[i].state = &a->states[i];
        }
    }
    for (size_t i = 0; i < nrecords; i++) {
        const stele_event_in *e = &records[i].event;
        stele_event_in *c = &a->records[i].event;
        a->records[i].stream = records[i].stream;
        *c = *e;
        c->type = bump_str(a, e->type);
        c->data = bump(a, e->data, e->data_len);
        c->metadata = bump(a, e->metadata, e->metadata_len);
        c->id = e->id ? bump(a, e->id, 16) : NULL;
        c->tags = bump_strs(a, e->tags, e->ntags);
    }
    if (cond) {
        a->cond = *cond;
        for (size_t i = 0; i < cond->nitems; i++) {
            const stele_query_item *it = &cond->items[i];
            a->items[i] = (stele_query_item){bump_strs(a, it->types, it->ntypes), it->ntypes,
                                             bump_strs(a, it->tags, it->ntags), it->ntags};
        }
        a->cond.items = a->items;
    }
    return 0;
}

static void amulti_done(void *ctx, int rc, const stele_append_result *ps, size_t n,
                        const stele_multi_result *res, const char *msg)
{
    amulti *a = ctx;
    a->cb(a->ctx, rc, ps, n, res, msg);
    amulti_free(a);
}

int stele_append_multi_async(stele_db *db, const stele_append_stream *streams, size_t nstreams,
                             const stele_append_record *records, size_t nrecords,
                             const stele_condition *cond, stele_append_multi_cb cb, void *ctx)
{
    err_clear();
    if (!cb)
        return err_set(STELE_EINVAL, "callback is NULL");
    /* Validate the caller's request, then copy it and prepare the copy. */
    mprep p;
    int rc = prepare_multi(db, streams, nstreams, records, nrecords, cond, 0, &p);
    mprep_free(&p);
    if (rc)
        return rc;
    if (!db->be->ops->append_multi_async)
        return err_set(STELE_EINVAL, "the %s backend has no multi-stream appends",
                       db->be->ops->name);
    amulti *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(STELE_ENOMEM, "out of memory");
    a->cb = cb;
    a->ctx = ctx;
    rc = amulti_copy(a, streams, nstreams, records, nrecords, cond);
    if (rc == 0)
        rc = prepare_multi(db, a->streams, nstreams, a->records, nrecords, cond ? &a->cond : NULL,
                           0, &a->p);
    if (rc == 0) {
        stele_multi_result init = {STELE_NONE, STELE_NONE, 0, SIZE_MAX, STELE_NONE, STELE_NONE};
        for (size_t i = 0; i < nstreams; i++)
            a->ps[i] = append_result_none();
        rc = db->be->ops->append_multi_async(db->be, &a->p.m, a->ps, &init, amulti_done, a,
                                             nstreams);
    }
    if (rc)
        amulti_free(a);
    return rc;
}

int stele_read_matching(stele_db *db, const stele_condition *cond, uint64_t from, int direction,
                        size_t limit, stele_page **out)
{
    err_clear();
    if (!db || !out || !cond)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : !out ? "out" : "cond");
    *out = NULL;
    if (direction != STELE_FORWARDS && direction != STELE_BACKWARDS)
        return err_set(STELE_EINVAL, "direction %d is neither STELE_FORWARDS nor STELE_BACKWARDS",
                       direction);
    int rc = check_query(cond);
    if (rc)
        return rc;
    if (!db->be->ops->read_matching)
        return err_set(STELE_EINVAL, "the %s backend has no DCB queries", db->be->ops->name);
    return db->be->ops->read_matching(db->be, cond, from, direction == STELE_BACKWARDS, limit,
                                      out);
}
