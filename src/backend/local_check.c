/*
 * local_check.c - `stele check`: verify a closed local store without
 * changing it. It walks the whole log once, checking every record's
 * checksum and framing, commit completeness, gapless positions, segment
 * headers and seals, and each stream's revisions; and it checks the index
 * against the log in both directions: every indexed commit, id and sparse
 * position entry points at the right record, and every commit, client id
 * and stream of the log is indexed; with secondary indexes, every item a
 * commit makes (idx_sec_check) and its time entry are there, and there are
 * no others. The first damage found is reported
 * with its segment and offset.
 *
 * Records after the index checkpoint are not damage: they are replayed at
 * the next open (an incomplete commit there, a torn write, is cut then).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "backend/backend.h"
#include "index/index.h"
#include "log/log.h"
#include "util/util.h"

/* Per-stream expectations, in a small open-addressing table. */
typedef struct sslot {
    char *name;
    uint16_t len;
    uint64_t next_rev;  /* revision the next commit must start at */
    uint64_t last_pos;
    uint64_t truncate_before;
    uint32_t flags;
} sslot;

typedef struct stable {
    sslot *s;
    size_t cap, n;
} stable;

static uint64_t hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static sslot *st_get(stable *t, const char *name, size_t len)
{
    if (t->n * 2 >= t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        sslot *ns = calloc(cap, sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t i = 0; i < t->cap; i++)
            if (t->s[i].name) {
                size_t j = hash(t->s[i].name, t->s[i].len) & (cap - 1);
                while (ns[j].name)
                    j = (j + 1) & (cap - 1);
                ns[j] = t->s[i];
            }
        free(t->s);
        t->s = ns;
        t->cap = cap;
    }
    size_t j = hash(name, len) & (t->cap - 1);
    while (t->s[j].name) {
        if (t->s[j].len == len && !memcmp(t->s[j].name, name, len))
            return &t->s[j];
        j = (j + 1) & (t->cap - 1);
    }
    t->s[j].name = malloc(len + 1);
    if (!t->s[j].name)
        return NULL;
    memcpy(t->s[j].name, name, len);
    t->s[j].name[len] = 0;
    t->s[j].len = (uint16_t)len;
    t->s[j].last_pos = UINT64_MAX;
    t->n++;
    return &t->s[j];
}

static void st_free(stable *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->s[i].name);
    free(t->s);
}

static int damage(uint64_t at, const char *fmt, const char *detail)
{
    char name[32];
    log_seg_name(loc_seg(at), name);
    return err_set(STELE_ECORRUPT, "segment %s offset %u: %s%s", name, loc_off(at), fmt,
                   detail ? detail : "");
}

typedef struct checker {
    logf *lg;
    idx *ix;
    MDB_txn *txn;
    idx_ckpt ck;
    int have_index;
    stable streams;
    uint64_t commits, client_ids, events, markers, pos_entries;
    int unindexed; /* records past the checkpoint (replayed at next open) */
    /* secondary indexes: items and time entries the indexed commits need */
    uint64_t sec_items, time_entries;
    int64_t last_created;
    int have_created;
    buf cbuf;
} checker;

/* Check one complete event commit against the index. */
static int check_commit(checker *k, uint64_t start, uint64_t end, const rec *first,
                        uint32_t count, const uint8_t (*ids)[16], const uint8_t *made)
{
    char what[512];
    idx_stream st;
    int rc = idx_stream_get(k->ix, k->txn, first->stream, first->stream_len, &st);
    if (rc) {
        snprintf(what, sizeof what, "stream '%.*s' is not in the index", first->stream_len,
                 first->stream);
        return damage(start, "index: ", what);
    }
    idx_rev_cursor cur = {0};
    idx_commit c;
    rc = idx_rev_open(k->ix, k->txn, st.sid, &cur);
    if (rc == 0)
        rc = idx_rev_seek(&cur, first->revision, 0, &c);
    idx_rev_close(&cur);
    if (rc || c.first_rev != first->revision || c.loc != start || c.count != count ||
        c.first_pos != first->position || c.bytes != end - start) {
        snprintf(what, sizeof what, "commit of '%.*s' at revision %llu is missing or wrong",
                 first->stream_len, first->stream, (unsigned long long)first->revision);
        return damage(start, "index: ", what);
    }
    for (uint32_t i = 0; i < count; i++) {
        if (made[i])
            continue;
        uint64_t sid, rev, pos;
        rc = idx_id_get(k->ix, k->txn, ids[i], &sid, &rev, &pos);
        if (rc || sid != st.sid || rev != first->revision + i || pos != first->position + i) {
            char t[37];
            stele_uuid_format(ids[i], t);
            snprintf(what, sizeof what, "event id %s is missing or wrong", t);
            return damage(start, "index: ", what);
        }
        k->client_ids++;
    }
    k->commits++;
    if (k->ix->sec_on) {
        /* The secondary index items and time entry of this commit. */
        int first_time = !k->have_created || first->created_us != k->last_created;
        k->cbuf.len = 0;
        rc = buf_reserve(&k->cbuf, (size_t)(end - start));
        if (rc == 0)
            rc = log_read(k->lg, start, k->cbuf.p, (size_t)(end - start));
        if (rc == 0)
            rc = idx_sec_check(k->ix, k->txn, k->cbuf.p, (size_t)(end - start), start, first_time,
                               &k->sec_items);
        if (rc == STELE_ECORRUPT) {
            char why[400];
            snprintf(why, sizeof why, "%s", stele_errmsg());
            return damage(start, "", why);
        }
        if (rc)
            return rc;
        k->time_entries += first_time;
        k->last_created = first->created_us;
        k->have_created = 1;
    }
    return 0;
}

static int check_log(checker *k, char *summary, size_t summary_len)
{
    logf *lg = k->lg;
    uint32_t nsegs = atomic_load(&lg->nsegs);
    if (nsegs == lg->first_seg)
        return err_set(STELE_ECORRUPT, "log: no segment files");
    log_iter it;
    log_iter_init(&it, lg, loc_make(lg->first_seg, 0), UINT64_MAX);
    uint64_t next_pos = lg->segs[lg->first_seg]->first_position;
    uint64_t commit_start = 0, tail_note = 0;
    uint32_t count = 0, seen = 0, cap = 0, seg_checked = lg->first_seg;
    uint8_t(*ids)[16] = NULL;
    uint8_t *made = NULL;
    rec first = {0};
    char first_stream[256];
    int rc = 0;
    for (;;) {
        rec r;
        uint64_t at = 0;
        int short_tail = 0;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st == LOG_ITER_REC && loc_seg(at) != seg_checked) {
            seg_checked = loc_seg(at);
            if (lg->segs[seg_checked]->first_position != next_pos) {
                rc = damage(loc_make(seg_checked, 0), "segment header's first position is wrong",
                            NULL);
                break;
            }
        }
        if (st < 0 || (st == LOG_ITER_END && seen < count)) {
            uint64_t bad = st < 0 ? at : it.loc;
            uint64_t cstart = seen < count ? commit_start : bad;
            /* Past the checkpoint in the last segment: a torn write that the
             * next open cuts. Anywhere else: damage. */
            uint64_t from_pos = seen < count ? first.position : next_pos;
            if (loc_seg(bad) == nsegs - 1 && (!k->have_index || cstart >= k->ck.loc) &&
                !(st < 0 && log_valid_record_after(lg, bad, from_pos))) {
                tail_note = cstart;
                rc = 0;
                err_clear();
                break;
            }
            rc = st < 0 ? st : damage(bad, "incomplete commit", NULL);
            break;
        }
        if (st == LOG_ITER_END) {
            if (loc_seg(it.loc) < nsegs - 1) {
                rc = damage(it.loc, "data ends without a seal, but later segments exist", NULL);
            }
            break;
        }
        if (k->have_index && seen == count && r.kind != REC_SEAL && at >= k->ck.loc)
            k->unindexed = 1;
        if (r.kind == REC_SEAL) {
            if (seen < count || r.position != next_pos) {
                rc = damage(at, "seal record does not match the segment's events", NULL);
                break;
            }
            continue;
        }
        if (seen < count) {
            if (r.kind != REC_EVENT || r.commit_index != seen || r.commit_count != count ||
                r.position != next_pos || r.revision != first.revision + seen ||
                r.stream_len != first.stream_len || memcmp(r.stream, first_stream, r.stream_len)) {
                rc = damage(at, "record out of sequence in its commit", NULL);
                break;
            }
        } else if (r.kind == REC_EVENT) {
            if (r.commit_index != 0 || r.position != next_pos) {
                rc = damage(at, r.position != next_pos ? "position is not the next one (gap)"
                                                       : "commit does not start at index 0",
                            NULL);
                break;
            }
            commit_start = at;
            count = r.commit_count;
            seen = 0;
            first = r;
            memcpy(first_stream, r.stream, r.stream_len);
            first.stream = first_stream;
            if (cap < count) {
                free(ids);
                free(made);
                ids = malloc((size_t)count * 16);
                made = malloc(count);
                cap = ids && made ? count : 0;
                if (!cap) {
                    rc = err_set(STELE_ENOMEM, "out of memory");
                    break;
                }
            }
            sslot *s = st_get(&k->streams, r.stream, r.stream_len);
            if (!s) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            if (s->flags & IDX_TOMBSTONED) {
                rc = damage(at, "event in a tombstoned stream", NULL);
                break;
            }
            if (r.revision != s->next_rev) {
                char what[64];
                snprintf(what, sizeof what, " (revision %llu, expected %llu)",
                         (unsigned long long)r.revision, (unsigned long long)s->next_rev);
                rc = damage(at, "stream revisions are not contiguous", what);
                break;
            }
        } else {
            /* delete / tombstone */
            sslot *s = st_get(&k->streams, r.stream, r.stream_len);
            if (!s) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            if (r.kind == REC_DELETE) {
                s->truncate_before = r.position;
                s->flags |= IDX_DELETED;
            } else {
                s->flags |= IDX_TOMBSTONED;
            }
            k->markers++;
            continue;
        }
        memcpy(ids[seen], r.id, 16);
        made[seen] = (r.flags & REC_ID_MADE) != 0;
        next_pos++;
        k->events++;
        if (++seen == count) {
            sslot *s = st_get(&k->streams, first.stream, first.stream_len);
            s->next_rev = first.revision + count;
            s->last_pos = r.position;
            s->flags &= ~IDX_DELETED;
            if (k->have_index && commit_start < k->ck.loc &&
                (rc = check_commit(k, commit_start, it.loc, &first, count,
                                   (const uint8_t(*)[16])ids, made)))
                break;
        }
    }
    log_iter_free(&it);
    free(ids);
    free(made);
    if (rc)
        return rc;
    if (tail_note) {
        char name[32];
        log_seg_name(loc_seg(tail_note), name);
        snprintf(summary, summary_len,
                 "note: an incomplete commit at segment %s offset %u (a torn write) is cut at the "
                 "next open\n",
                 name, loc_off(tail_note));
    }
    return 0;
}

/* The index's own tables against what the log walk counted. */
static int check_index(checker *k)
{
    uint64_t n;
    int rc = idx_count(k->ix, k->txn, k->ix->revs, &n);
    if (rc == 0 && n != k->commits)
        rc = err_set(STELE_ECORRUPT, "index: %llu commit entries, but the log has %llu commits",
                     (unsigned long long)n, (unsigned long long)k->commits);
    if (rc == 0)
        rc = idx_count(k->ix, k->txn, k->ix->ids, &n);
    if (rc == 0 && n != k->client_ids)
        rc = err_set(STELE_ECORRUPT, "index: %llu id entries, but the log has %llu client ids",
                     (unsigned long long)n, (unsigned long long)k->client_ids);
    if (rc == 0 && k->ix->sec_on) {
        rc = idx_count(k->ix, k->txn, k->ix->sec, &n);
        if (rc == 0 && n != k->sec_items)
            rc = err_set(STELE_ECORRUPT,
                         "index: %llu secondary index items, but the log's events make %llu",
                         (unsigned long long)n, (unsigned long long)k->sec_items);
        if (rc == 0)
            rc = idx_count(k->ix, k->txn, k->ix->time, &n);
        if (rc == 0 && n != k->time_entries)
            rc = err_set(STELE_ECORRUPT,
                         "index: %llu time entries, but the log's commits make %llu",
                         (unsigned long long)n, (unsigned long long)k->time_entries);
    }
    if (k->unindexed)
        return rc; /* stream states include commits the index has not seen yet */
    if (rc == 0)
        rc = idx_count(k->ix, k->txn, k->ix->streams, &n);
    if (rc == 0 && n != k->streams.n)
        rc = err_set(STELE_ECORRUPT, "index: %llu streams, but the log has %zu",
                     (unsigned long long)n, k->streams.n);
    for (size_t i = 0; rc == 0 && i < k->streams.cap; i++) {
        sslot *s = &k->streams.s[i];
        if (!s->name)
            continue;
        idx_stream st;
        rc = idx_stream_get(k->ix, k->txn, s->name, s->len, &st);
        uint64_t last = s->next_rev ? s->next_rev - 1 : UINT64_MAX;
        if (rc == 0 && (st.last_rev != last || st.flags != s->flags ||
                        st.truncate_before != s->truncate_before || st.last_pos != s->last_pos))
            rc = err_set(STELE_ECORRUPT, "index: state of stream '%s' does not match the log",
                         s->name);
        else if (rc)
            rc = err_set(STELE_ECORRUPT, "index: stream '%s' is missing", s->name);
    }
    if (rc == 0 && k->ck.next_pos != k->events)
        rc = err_set(STELE_ECORRUPT, "index: checkpoint says %llu events, the log has %llu",
                     (unsigned long long)k->ck.next_pos, (unsigned long long)k->events);
    /* Every sparse position entry points at its event. */
    MDB_cursor *cur;
    if (rc == 0 && (rc = idx_err(mdb_cursor_open(k->txn, k->ix->pos, &cur), "cursor")) == 0) {
        MDB_val key, val;
        int g = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
        uint8_t hdr[REC_HEADER_SIZE];
        while (g == 0 && rc == 0) {
            uint64_t pos = ldbe64(key.mv_data), loc = ld64(val.mv_data);
            if (log_read(k->lg, loc, hdr, sizeof hdr) || hdr[8] != REC_EVENT ||
                ld64(hdr + 24) != pos) {
                err_clear();
                rc = err_set(STELE_ECORRUPT, "index: position entry %llu points to the wrong place",
                             (unsigned long long)pos);
            }
            k->pos_entries++;
            g = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
        }
        mdb_cursor_close(cur);
    }
    return rc;
}

int local_check(const char *dir, char *report, size_t report_len)
{
    char path[4200], note[512] = "";
    snprintf(path, sizeof path, "%s/stele.lock", dir);
    int lockfd = open(path, O_RDONLY | O_CLOEXEC);
    if (lockfd < 0)
        return err_set(STELE_ENOTFOUND, "%s is not a Stele store (no stele.lock)", dir);
    if (flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
        close(lockfd);
        return err_set(STELE_ELOCKED, "store %s is open in another process", dir);
    }
    checker k;
    memset(&k, 0, sizeof k);
    int rc = log_open(dir, 64u << 20, 0, &k.lg);
    if (rc == 0) {
        if (idx_open_readonly(dir, &k.ix) == 0 && idx_begin(k.ix, 1, &k.txn) == 0 &&
            idx_ckpt_get(k.ix, k.txn, &k.ck) == 0)
            k.have_index = 1;
        err_clear(); /* no index is not damage: it is rebuilt at open */
    }
    /* A last segment without a valid header is a torn creation if nothing
     * follows the header (the next open drops it), else damage. */
    uint32_t last = rc == 0 ? atomic_load(&k.lg->nsegs) : 0;
    if (rc == 0 && last > k.lg->first_seg && k.lg->segs[last - 1]->first_position == UINT64_MAX) {
        uint8_t w[8] = {0};
        static const uint8_t zero[8];
        char name[32];
        log_seg_name(last - 1, name);
        if (k.lg->segs[last - 1]->size >= SEG_HEADER_SIZE + 8 &&
            (log_read(k.lg, loc_make(last - 1, SEG_HEADER_SIZE), w, 8) || memcmp(w, zero, 8))) {
            err_clear();
            rc = err_set(STELE_ECORRUPT, "segment %s offset 0: segment header is damaged", name);
        } else {
            snprintf(note, sizeof note,
                     "note: segment %s was torn at creation (empty); the next open removes it\n",
                     name);
            atomic_store(&k.lg->nsegs, last - 1);
        }
    }
    if (rc == 0)
        rc = check_log(&k, note, sizeof note);
    if (rc == 0 && k.have_index)
        rc = check_index(&k);
    if (rc == 0 && report) {
        snprintf(report, report_len,
                 "%s%u segments, %llu events, %zu streams, %llu commits indexed, %llu deletes, "
                 "%llu position entries: %s\n",
                 note, atomic_load(&k.lg->nsegs) - k.lg->first_seg,
                 (unsigned long long)k.events, k.streams.n, (unsigned long long)k.commits,
                 (unsigned long long)k.markers, (unsigned long long)k.pos_entries,
                 k.have_index ? "ok" : "ok (no index: rebuilt at the next open)");
    }
    if (k.txn)
        mdb_txn_abort(k.txn);
    idx_close(k.ix);
    log_close(k.lg);
    st_free(&k.streams);
    buf_free(&k.cbuf);
    flock(lockfd, LOCK_UN);
    close(lockfd);
    return rc;
}
