/*
 * local_retry.c - is an append that repeats written event ids the same
 * append, or a different one reusing them?
 *
 * check_retry() in local.c recognises a retry by its ids alone: the first
 * id is indexed at the revision the append's expected revision names, the
 * original commit holds as many events, and every other id sits at the
 * next revision. That is cheap (index lookups only) and is all the hot
 * path ever does, since an append whose first id is new never gets here.
 *
 * Only on that retry path is the stored event compared with the one
 * offered again: type, data, metadata, tags and the JSON flags, byte for
 * byte (the id's text form, UUID or ULID, is not part of the event). A
 * difference is STELE_EIDCONFLICT naming the event and the part that
 * differs, so a client that reuses an id for new data is told instead of
 * seeing its data silently dropped (seed 004's duplicate error).
 *
 * Where the original is:
 *   - written in an earlier group: its commit is read from the log (the
 *     index entry gives the location) and each event record is matched to
 *     the offered event by position;
 *   - accepted earlier in this same group (two copies of one append raced
 *     into one group commit): it is not on disk yet, so the offered events
 *     are compared with that request's events in memory (retry_in_group,
 *     for single and multi-stream appends alike);
 *   - scavenged away (the stream was deleted): nothing is left to compare,
 *     and the retry stays the idempotent success it was.
 *
 * Multi-stream appends (local_multi.c) walk the original commit's records
 * to check the retry and compare each event with retry_event_diff() on
 * the way; an original in the same group goes through retry_in_group.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/local_int.h"
#include "util/util.h"

/* Which part of two events differs, or NULL if none. */
static const char *diff_in(const stele_event_in *x, const stele_event_in *y)
{
    const uint32_t fm = STELE_EVENT_JSON | STELE_META_JSON;
    if (strcmp(x->type, y->type))
        return "type";
    if (x->data_len != y->data_len || (x->data_len && memcmp(x->data, y->data, x->data_len)))
        return "data";
    if (x->metadata_len != y->metadata_len ||
        (x->metadata_len && memcmp(x->metadata, y->metadata, x->metadata_len)))
        return "metadata";
    if ((x->flags & fm) != (y->flags & fm))
        return "content type";
    if (x->ntags != y->ntags)
        return "tags";
    for (size_t t = 0; t < x->ntags; t++)
        if (strcmp(x->tags[t], y->tags[t]))
            return "tags";
    return NULL;
}

const char *retry_event_diff(const rec *r, const stele_event_in *y)
{
    const uint32_t fm = STELE_EVENT_JSON | STELE_META_JSON;
    size_t tl = strlen(y->type);
    if (r->type_len != tl || memcmp(r->type, y->type, tl))
        return "type";
    if (r->data_len != y->data_len || (y->data_len && memcmp(r->data, y->data, y->data_len)))
        return "data";
    if (r->meta_len != y->metadata_len ||
        (y->metadata_len && memcmp(r->meta, y->metadata, y->metadata_len)))
        return "metadata";
    if ((r->flags & fm) != (y->flags & fm))
        return "content type";
    if (r->ntags != y->ntags)
        return "tags";
    const uint8_t *p = r->tags;
    for (size_t t = 0; t < y->ntags; t++) {
        uint16_t n = (uint16_t)(p[0] | (p[1] << 8));
        size_t yl = strlen(y->tags[t]);
        if (n != yl || memcmp(p + 2, y->tags[t], yl))
            return "tags";
        p += 2 + (size_t)n + 1;
    }
    return NULL;
}

/* As local.c's req_fail: the request fails with the thread's message. */
static void retry_fail(wreq *r, int rc)
{
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
}

static void conflict(wreq *r, size_t i, uint64_t rev, const char *part)
{
    char idt[37];
    stele_uuid_format(r->a->ids[i], idt);
    err_set(STELE_EIDCONFLICT,
            "event id %s was already written at revision %llu of '%.*s' with a different %s; "
            "an event id names one event: use a new id for new data",
            idt, (unsigned long long)(rev + i), (int)r->stream_len, r->stream,
            part);
    retry_fail(r, STELE_EIDCONFLICT);
}

/* Event k of an append or a multi-stream append, in request order (the
 * order of its positions). */
static const stele_event_in *req_event(const wreq *r, size_t k)
{
    return r->op == OP_MULTI ? &r->m->records[k].event : &r->a->events[k];
}

static size_t req_events(const wreq *r)
{
    return r->op == OP_MULTI ? r->m->nrecords : r->a->n;
}

int retry_in_group(const wreq *r, uint64_t pos0, const char **differs, size_t *differs_k)
{
    *differs = NULL;
    for (const wreq *o = r->group; o && o != r; o = o->next) {
        if (!o->accepted || (o->op != OP_APPEND && o->op != OP_MULTI))
            continue;
        uint64_t first = o->op == OP_MULTI ? o->mres.first_position : o->res.first_position;
        if (first != pos0)
            continue;
        size_t n = req_events(r);
        if (req_events(o) != n)
            return 0;
        for (size_t k = 0; k < n && !*differs; k++) {
            *differs = diff_in(req_event(o, k), req_event(r, k));
            *differs_k = k;
        }
        return 1;
    }
    return 0;
}

int retry_compare(local *L, wreq *r, uint64_t sid, const idx_commit *orig, const uint64_t *pos)
{
    const append_args *a = r->a;
    (void)sid;
    if (orig->bytes == 0) {
        /* Accepted earlier in this group: compare in memory. A request of
         * another length there (a multi-stream commit that also wrote other
         * streams) leaves the ids to decide, as check_retry did. */
        const char *d;
        size_t k;
        if (retry_in_group(r, pos[0], &d, &k) && d) {
            conflict(r, k, orig->first_rev, d);
            return 1;
        }
        return 0;
    }
    buf b;
    scratch_init(L, &b);
    log_holders hold = {0};
    int rc = read_commit(L, orig, &b);
    if (rc == LOG_REMOVED) {
        err_clear();
        scratch_free(L, &b);
        return 0;
    }
    for (size_t off = 0; rc == 0 && off < b.len;) {
        rec rr;
        const char *why = "bad record";
        rec_status st = rec_decode_in(b.p, off, b.len - off, &rr, &why);
        /* A holder before the bytes read (a multi-stream commit's run). */
        if (st == REC_FAR) {
            if ((rc = log_share_fetch(L->lg, orig->loc + off, &rr, &hold)))
                break;
            st = REC_OK;
        }
        if (st != REC_OK) {
            rc = err_set(STELE_ECORRUPT, "reading the original of a retried append: %s", why);
            break;
        }
        off += rr.len;
        if (rr.kind != REC_EVENT)
            continue;
        for (size_t i = 0; i < a->n; i++) {
            if (pos[i] != rr.position)
                continue;
            const char *d = retry_event_diff(&rr, &a->events[i]);
            if (d) {
                scratch_free(L, &b);
                log_holders_free(&hold);
                conflict(r, i, orig->first_rev, d);
                return 1;
            }
            break;
        }
    }
    scratch_free(L, &b);
    log_holders_free(&hold);
    /* Events a scavenge removed from the commit are not found: they
     * compare as equal (nothing is left to differ from). A read failure
     * fails this append alone: the group's index transaction is fine. */
    if (rc) {
        retry_fail(r, rc);
        return 1;
    }
    return 0;
}
