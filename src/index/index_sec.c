/*
 * index_sec.c - the secondary indexes of the local engine: which events
 * belong to a category, an event type, a tag, a correlation id or an
 * actor, and which position was committed at which time. Queries
 * (src/backend/local_query.c) read them; layout:
 *
 *   sec   key  kind:u8 | name bytes                (1 + 1..255 bytes)
 *         data one run of events per item, 28 bytes, sorted duplicates
 *              (MDB_DUPSORT | MDB_DUPFIXED):
 *                position:be64   the run's first event
 *                loc:be48        where its first record starts in the log
 *                count:be16      events in the run (1..SEC_RUN_MAX)
 *                bytes:be32      bytes of its records (the first record's
 *                                start to the last one's end)
 *                ordinal:be64    how many events the key held before the
 *                                run's first one (its number in the key)
 *   time  key  created:be64 (sign bit flipped) | position:be64
 *         data (none)
 *
 * kind is one of SEC_* (index.h): 'c' category (the stream name before its
 * first '-', sec_category_len), 't' event type, 'g' each tag, 'r'
 * correlation id, 'a' actor, 'u' causation id (the last three from JSON
 * metadata, src/util/meta.c).
 * Names are validated names (no NUL, no control characters). Every event
 * is under exactly one category and one type; tags, correlation id and
 * actor add one key each when present.
 *
 * A run is a stretch of one commit's events with the same key, at
 * consecutive positions and in adjacent records: an append to one stream
 * is one run in its category, and one run per stretch of equal types. So a
 * 1,000-event append usually adds two items, and a query reads a run with
 * one pread of `bytes`. Runs are cut at SEC_RUN_MAX events or
 * SEC_RUN_BYTES bytes, so reading one stays bounded. Items of one key are
 * sorted by position; positions only grow, so new items are appended
 * (MDB_APPENDDUP fills the key's pages completely). Runs never span
 * commits: the writer and recovery (which replays commit by commit) make
 * the same items, and idx_sec_uncommit removes exactly a commit's items.
 *
 * Ordinals. The n-th event ever indexed under a key has ordinal n - 1:
 * the revision of the event in the system view streams ($ce-, $et-, $bc-,
 * src/backend/local_view.c). A new run's ordinal is the key's last run's
 * ordinal plus its count, so ordinals grow with positions, without gaps,
 * and never change while the index lives: scavenging leaves the index
 * alone (entries of removed commits stay, pointing at nothing), and
 * catching up from the checkpoint replays commits in the same order. Only
 * a rebuild from the log (docs/kurrentdb-compatibility.md) renumbers, and
 * only after events removed by scavenging. Items stay sorted by position
 * (the item's first bytes); a seek by ordinal is a binary search over
 * positions (idx_sec_seek_ord).
 *
 * The time table has one entry per distinct commit time: the first
 * position created at that microsecond. Commit times never go backwards
 * (the writer keeps them monotonic), so the first entry at or after a time
 * T names the first position created at or after T, and the events created
 * in [A, B) are exactly the positions [first(A), first(B)).
 *
 * Consistency: the writer calls idx_sec_commit with the records of its
 * whole group inside the group's LMDB write transaction (with the
 * checkpoint), and recovery calls it for each complete commit it replays,
 * with the same record bytes. Items are made per commit either way (runs
 * never span commits; the time table keeps one entry per time), so a
 * rebuilt index holds exactly what the writer wrote, and an acknowledged
 * append is always indexed. Passing the whole group lets one put carry a
 * key's items of every commit in it.
 */
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "log/log.h"
#include "log/record.h"
#include "stele.h"
#include "util/util.h"

size_t sec_category_len(const char *stream, size_t len)
{
    return stream_category_len(stream, len);
}

static void key_make(uint8_t *key, size_t *klen, int kind, const char *name, size_t len)
{
    key[0] = (uint8_t)kind;
    memcpy(key + 1, name, len);
    *klen = 1 + len;
}

/* One event under one key, before runs are formed and written. */
typedef struct sec_ent {
    const char *name;
    uint16_t len;
    uint8_t kind;
    uint32_t seq;   /* order of appearance: positions ascend with it */
    uint32_t commit; /* which commit of the buffer: runs never span two */
    uint64_t pos, loc;
    uint32_t bytes; /* the record's length */
} sec_ent;

/* A commit's entries of one kind, in order of appearance. */
typedef struct sec_list {
    sec_ent *e;
    size_t n, cap;
} sec_list;

#define NKINDS 6

typedef struct sec_batch {
    sec_list k[NKINDS]; /* category, type, tag, correlation, actor, causation */
    uint8_t *vals;      /* one key's items */
    size_t vcap;
    meta_ids *metas;    /* one per event with JSON metadata */
    size_t nmetas;
    uint64_t checked;   /* WALK_CHECK: items found */
} sec_batch;

/* walk_commit's modes */
#define WALK_ADD 0
#define WALK_DEL 1
#define WALK_CHECK 2

static const char *kind_text(int kind)
{
    switch (kind) {
    case SEC_CATEGORY: return "category";
    case SEC_TYPE: return "type";
    case SEC_TAG: return "tag";
    case SEC_CORRELATION: return "correlation id";
    case SEC_CAUSATION: return "causation id";
    default: return "actor";
    }
}

static int kind_slot(int kind)
{
    switch (kind) {
    case SEC_CATEGORY: return 0;
    case SEC_TYPE: return 1;
    case SEC_TAG: return 2;
    case SEC_CORRELATION: return 3;
    case SEC_CAUSATION: return 5;
    default: return 4;
    }
}

static int batch_add(sec_batch *bt, int kind, const char *name, size_t len, uint32_t commit,
                     uint64_t pos, uint64_t loc, uint32_t bytes)
{
    if (len == 0 || len > 255)
        return 0; /* never a valid name: cannot be queried */
    sec_list *b = &bt->k[kind_slot(kind)];
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        sec_ent *ne = realloc(b->e, cap * sizeof *ne);
        if (!ne)
            return err_set(STELE_ENOMEM, "out of memory");
        b->e = ne;
        b->cap = cap;
    }
    sec_ent *e = &b->e[b->n];
    e->name = name;
    e->len = (uint16_t)len;
    e->kind = (uint8_t)kind;
    e->seq = (uint32_t)b->n;
    e->commit = commit;
    e->pos = pos;
    e->loc = loc;
    e->bytes = bytes;
    b->n++;
    return 0;
}

static int ent_cmp(const void *pa, const void *pb)
{
    const sec_ent *a = pa, *b = pb;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->name, b->name, n);
    if (c)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int same_key(const sec_ent *a, const sec_ent *b)
{
    return a->kind == b->kind && a->len == b->len && !memcmp(a->name, b->name, a->len);
}

static void item_put(uint8_t *p, const idx_run *r)
{
    stbe64(p, r->start);
    for (int i = 0; i < 6; i++)
        p[8 + i] = (uint8_t)(r->loc >> (40 - 8 * i));
    p[14] = (uint8_t)(r->count >> 8);
    p[15] = (uint8_t)r->count;
    p[16] = (uint8_t)(r->bytes >> 24);
    p[17] = (uint8_t)(r->bytes >> 16);
    p[18] = (uint8_t)(r->bytes >> 8);
    p[19] = (uint8_t)r->bytes;
    stbe64(p + 20, r->ord);
}

static void item_get(const uint8_t *p, idx_run *r)
{
    r->start = ldbe64(p);
    r->loc = 0;
    for (int i = 0; i < 6; i++)
        r->loc = (r->loc << 8) | p[8 + i];
    r->count = (uint32_t)p[14] << 8 | p[15];
    r->bytes = (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19];
    r->ord = ldbe64(p + 20);
}

/*
 * The runs of one key's entries e[0..n) (in position order) into vals
 * (SEC_ITEM bytes each), numbered from ordinal `ord`; returns how many. A
 * repeated event (the same tag twice) is skipped.
 */
static size_t make_runs(const sec_ent *e, size_t n, uint8_t *vals, uint64_t ord)
{
    size_t items = 0;
    idx_run r = {e[0].pos, e[0].loc, 1, e[0].bytes, ord};
    for (size_t i = 1; i <= n; i++) {
        if (i < n && e[i].pos == r.start + r.count - 1)
            continue; /* the same event again */
        if (i < n && e[i].commit == e[i - 1].commit && e[i].pos == r.start + r.count &&
            e[i].loc == r.loc + r.bytes && r.count < SEC_RUN_MAX &&
            (uint64_t)r.bytes + e[i].bytes <= SEC_RUN_BYTES) {
            r.count++;
            r.bytes += e[i].bytes;
            continue;
        }
        item_put(vals + items++ * SEC_ITEM, &r);
        if (i < n)
            r = (idx_run){e[i].pos, e[i].loc, 1, e[i].bytes, r.ord + r.count};
    }
    return items;
}

static int sec_decode(int rc, const MDB_val *v, idx_run *out);

/* Put the cursor on the item of key k whose run starts at position `pos`
 * (setting *out if not NULL): 0, STELE_ENOTFOUND, or an error. */
static int item_find(MDB_cursor *cur, const MDB_val *k, uint64_t pos, idx_run *out)
{
    uint8_t probe[SEC_ITEM];
    memset(probe, 0, sizeof probe);
    stbe64(probe, pos);
    MDB_val kk = *k, v = {SEC_ITEM, probe};
    int rc = mdb_cursor_get(cur, &kk, &v, MDB_GET_BOTH_RANGE);
    idx_run r;
    if ((rc = sec_decode(rc, &v, &r)))
        return rc;
    if (r.start != pos)
        return STELE_ENOTFOUND;
    if (out)
        *out = r;
    return 0;
}

/* `stele check` of the run the log makes, `want`, among the items of key
 * k: 0 if an item matches it and its ordinal follows the previous item's
 * (or is 0 for the first), STELE_ENOTFOUND if none matches, 2 if the
 * ordinal does not follow, or an error. Items at the same position that do
 * not match are extra ones, which the count of `stele check` reports. */
static int item_check(MDB_cursor *cur, const MDB_val *k, const idx_run *want)
{
    idx_run have, prev;
    int rc = item_find(cur, k, want->start, &have);
    while (rc == 0 && (have.loc != want->loc || have.count != want->count ||
                       have.bytes != want->bytes)) {
        MDB_val kk = *k, v;
        rc = sec_decode(mdb_cursor_get(cur, &kk, &v, MDB_NEXT_DUP), &v, &have);
        if (rc == 0 && have.start != want->start)
            rc = STELE_ENOTFOUND;
    }
    if (rc)
        return rc;
    for (;;) {
        MDB_val kk = *k, v;
        rc = mdb_cursor_get(cur, &kk, &v, MDB_PREV_DUP);
        if (rc == MDB_NOTFOUND)
            return have.ord == 0 ? 0 : 2;
        if ((rc = sec_decode(rc, &v, &prev)))
            return rc;
        if (prev.start < want->start)
            return prev.ord + prev.count == have.ord ? 0 : 2;
    }
}

/* Write (or delete) one kind's entries: each key's runs with one put. A
 * commit's entries mostly share their keys (one stream, so one category;
 * often one type), so the sort is skipped when they are in order. */
static int list_apply(MDB_cursor *cur, sec_list *b, sec_batch *bt, int del)
{
    for (size_t i = 1; i < b->n; i++)
        if (ent_cmp(&b->e[i - 1], &b->e[i]) > 0) {
            qsort(b->e, b->n, sizeof *b->e, ent_cmp);
            break;
        }
    int rc = 0;
    for (size_t i = 0; i < b->n && rc == 0;) {
        size_t j = i + 1;
        while (j < b->n && same_key(&b->e[i], &b->e[j]))
            j++;
        if (bt->vcap < (j - i) * SEC_ITEM) {
            uint8_t *nv = realloc(bt->vals, (j - i) * SEC_ITEM);
            if (!nv)
                return err_set(STELE_ENOMEM, "out of memory");
            bt->vals = nv;
            bt->vcap = (j - i) * SEC_ITEM;
        }
        uint8_t key[1 + 255];
        size_t klen;
        key_make(key, &klen, b->e[i].kind, b->e[i].name, b->e[i].len);
        MDB_val k = {klen, key};
        uint64_t ord = 0;
        if (del == WALK_ADD) {
            /* Number on from the key's last run. */
            MDB_val kk = k, v;
            rc = mdb_cursor_get(cur, &kk, &v, MDB_SET);
            if (rc == 0)
                rc = mdb_cursor_get(cur, &kk, &v, MDB_LAST_DUP);
            if (rc == 0) {
                idx_run last;
                if ((rc = sec_decode(0, &v, &last)))
                    return rc;
                ord = last.ord + last.count;
            } else if (rc == MDB_NOTFOUND) {
                rc = 0;
            } else {
                return idx_err(rc, "read secondary index entry");
            }
        }
        size_t items = make_runs(b->e + i, j - i, bt->vals, ord);
        if (del == WALK_CHECK) {
            for (size_t x = 0; x < items && rc == 0; x++) {
                idx_run want;
                item_get(bt->vals + x * SEC_ITEM, &want);
                rc = item_check(cur, &k, &want);
                if (rc == STELE_ENOTFOUND)
                    rc = err_set(STELE_ECORRUPT,
                                 "index: the %s '%.*s' lacks the run of %u events at position %llu",
                                 kind_text(b->e[i].kind), (int)b->e[i].len, b->e[i].name,
                                 want.count, (unsigned long long)want.start);
                else if (rc > 0)
                    rc = err_set(STELE_ECORRUPT,
                                 "index: the %s '%.*s' has a wrong run at position %llu (%s)",
                                 kind_text(b->e[i].kind), (int)b->e[i].len, b->e[i].name,
                                 (unsigned long long)want.start,
                                 "its ordinal does not follow the previous run's");
            }
            bt->checked += items;
        } else if (del) {
            for (size_t x = 0; x < items && rc == 0; x++) {
                idx_run want;
                item_get(bt->vals + x * SEC_ITEM, &want);
                rc = item_find(cur, &k, want.start, NULL);
                if (rc == 0)
                    rc = idx_err(mdb_cursor_del(cur, 0), "delete secondary index entry");
                else if (rc == STELE_ENOTFOUND)
                    rc = 0;
            }
        } else if (items == 1) {
            MDB_val v = {SEC_ITEM, bt->vals};
            rc = idx_err(mdb_cursor_put(cur, &k, &v, MDB_APPENDDUP), "put secondary index entry");
        } else {
            MDB_val v[2] = {{SEC_ITEM, bt->vals}, {items, NULL}};
            rc = idx_err(mdb_cursor_put(cur, &k, v, MDB_MULTIPLE | MDB_APPENDDUP),
                         "put secondary index entries");
        }
        i = j;
    }
    return rc;
}

static uint64_t time_key_u(int64_t t) { return (uint64_t)t ^ (1ull << 63); }

/* A time entry for the commit created at `created` starting at `pos`,
 * unless that time already has one (commits of one group share a time). */
static int time_add(idx *ix, MDB_txn *txn, int64_t created, uint64_t pos)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->time, &cur);
    if (rc)
        return idx_err(rc, "open cursor");
    MDB_val k, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 16 && ldbe64(k.mv_data) >= time_key_u(created)) {
        mdb_cursor_close(cur);
        return 0;
    }
    if (rc == 0 || rc == MDB_NOTFOUND) {
        uint8_t key[16];
        stbe64(key, time_key_u(created));
        stbe64(key + 8, pos);
        k = (MDB_val){16, key};
        v = (MDB_val){0, key};
        rc = mdb_cursor_put(cur, &k, &v, MDB_APPEND);
    }
    mdb_cursor_close(cur);
    return idx_err(rc, "put time entry");
}

/* Event record r, at `at`, of commit number `commit` in the batch: its
 * category, type, tags, and the correlation id, actor and causation id of
 * its JSON metadata. */
static int batch_add_event(sec_batch *b, const rec *r, uint32_t commit, uint64_t at)
{
    uint64_t pos = r->position;
    int rc = batch_add(b, SEC_CATEGORY, r->stream, sec_category_len(r->stream, r->stream_len),
                       commit, pos, at, r->len);
    if (rc == 0)
        rc = batch_add(b, SEC_TYPE, r->type, r->type_len, commit, pos, at, r->len);
    const uint8_t *t = r->tags;
    for (unsigned k = 0; k < r->ntags && rc == 0; k++) {
        uint16_t tl = ld16(t);
        rc = batch_add(b, SEC_TAG, (const char *)t + 2, tl, commit, pos, at, r->len);
        t += 3 + tl;
    }
    if (rc == 0 && (r->flags & STELE_META_JSON) && r->meta_len) {
        meta_ids *m = &b->metas[b->nmetas++];
        rc = meta_ids_extract(r->meta, r->meta_len, m);
        if (rc == 0)
            rc = batch_add(b, SEC_CORRELATION, m->correlation, m->correlation_len, commit, pos,
                           at, r->len);
        if (rc == 0)
            rc = batch_add(b, SEC_ACTOR, m->actor, m->actor_len, commit, pos, at, r->len);
        if (rc == 0)
            rc = batch_add(b, SEC_CAUSATION, m->causation, m->causation_len, commit, pos, at,
                           r->len);
    }
    return rc;
}

/* WALK_CHECK: the time index's first position for `created` is the
 * commit's first event (first_time 2: scavenging removed events before
 * this commit, so the entry may name a removed commit of the same time). */
static int check_time(idx *ix, MDB_txn *txn, int64_t created, uint64_t first_pos,
                      int first_time)
{
    uint64_t p;
    int r = idx_time_first(ix, txn, created, &p);
    if (r == 0 && p != first_pos && !(first_time == 2 && p < first_pos))
        r = STELE_ENOTFOUND;
    if (r == STELE_ENOTFOUND)
        return err_set(STELE_ECORRUPT, "index: no time entry for position %llu (created %lld us)",
                       (unsigned long long)first_pos, (long long)created);
    return r;
}

static int walk_commit(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc,
                       int del, int first_time, uint64_t *items)
{
    if (!ix->sec_on)
        return 0;
    sec_batch b;
    memset(&b, 0, sizeof b);
    int rc = 0, have_event = 0;
    int64_t created = 0;
    uint64_t first_pos = 0;
    /* Metadata names need storage until the batch is written: count the
     * records first (they are self-describing). */
    size_t nrec = 0;
    for (size_t off = 0; off + 4 <= len && ld32(recs + off) >= REC_MIN_SIZE;
         off += ld32(recs + off))
        nrec++;
    b.metas = malloc((nrec ? nrec : 1) * sizeof *b.metas);
    if (!b.metas)
        return err_set(STELE_ENOMEM, "out of memory");
    size_t off = 0;
    uint32_t commit = 0;
    for (size_t i = 0; rc == 0 && off < len; i++) {
        rec r;
        const char *why = "not an event record";
        /* A kind 9 record's holders are earlier in its commit: in recs. */
        rec_status st = rec_decode_trusted_in(recs, off, len - off, &r, &why);
        if (st == REC_OK && r.kind == REC_CHAIN) { /* the hash chain's: not indexed */
            off += r.len;
            continue;
        }
        int marker = st == REC_OK && (r.kind == REC_DELETE || r.kind == REC_TOMBSTONE ||
                                      r.kind == REC_METADATA || r.kind == REC_SNAPSHOT);
        if (st != REC_OK || (r.kind != REC_EVENT && !marker) || i >= nrec) {
            char name[32];
            log_seg_name(loc_seg(loc), name);
            rc = err_set(STELE_ECORRUPT, "segment %s offset %llu: indexing a commit: %s", name,
                         (unsigned long long)(loc_off(loc) + off),
                         st == REC_OK ? "not an event record" : why);
            break;
        }
        if (r.commit_index == 0)
            commit++;
        if (marker) { /* a delete, tombstone, stream metadata or snapshot: not indexed */
            off += r.len;
            continue;
        }
        if (!have_event) {
            have_event = 1;
            created = r.created_us;
            first_pos = r.position;
        }
        rc = batch_add_event(&b, &r, commit, loc + off);
        off += r.len;
    }
    MDB_cursor *cur = NULL;
    if (rc == 0)
        rc = idx_err(mdb_cursor_open(txn, ix->sec, &cur), "open cursor");
    for (int k = 0; k < NKINDS && rc == 0; k++)
        rc = list_apply(cur, &b.k[k], &b, del);
    if (cur)
        mdb_cursor_close(cur);
    /* One time entry per distinct time: the writer passes a whole group
     * (one time), recovery one commit at a time (time_add skips a time it
     * already has), so both make the same entries. */
    if (rc == 0 && del == WALK_ADD && have_event)
        rc = time_add(ix, txn, created, first_pos);
    if (items)
        *items += b.checked;
    if (rc == 0 && del == WALK_CHECK && have_event && first_time)
        rc = check_time(ix, txn, created, first_pos, first_time);
    for (int k = 0; k < NKINDS; k++)
        free(b.k[k].e);
    free(b.vals);
    free(b.metas);
    return rc;
}

int idx_sec_commit(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc)
{
    return walk_commit(ix, txn, recs, len, loc, WALK_ADD, 0, NULL);
}

int idx_sec_uncommit(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc)
{
    return walk_commit(ix, txn, recs, len, loc, WALK_DEL, 0, NULL);
}

int idx_sec_check(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc,
                  int first_time, uint64_t *items)
{
    return walk_commit(ix, txn, recs, len, loc, WALK_CHECK, first_time, items);
}

int idx_time_first(idx *ix, MDB_txn *txn, int64_t t_us, uint64_t *pos)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->time, &cur);
    if (rc)
        return idx_err(rc, "open cursor");
    uint8_t key[16];
    stbe64(key, time_key_u(t_us));
    stbe64(key + 8, 0);
    MDB_val k = {16, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int r = 0;
    if (rc == MDB_NOTFOUND)
        r = STELE_ENOTFOUND;
    else if (rc)
        r = idx_err(rc, "time cursor");
    else if (k.mv_size != 16)
        r = err_set(STELE_ECORRUPT, "index: malformed time entry");
    else
        *pos = ldbe64((uint8_t *)k.mv_data + 8);
    mdb_cursor_close(cur);
    return r;
}

/* ------------------------------------------------------------- cursors */

int idx_sec_open(idx *ix, MDB_txn *txn, int kind, const char *name, size_t len,
                 idx_sec_cursor *sc)
{
    key_make(sc->key, &sc->klen, kind, name, len);
    sc->cur = NULL;
    return idx_err(mdb_cursor_open(txn, ix->sec, &sc->cur), "open cursor");
}

void idx_sec_close(idx_sec_cursor *sc)
{
    if (sc->cur)
        mdb_cursor_close(sc->cur);
    sc->cur = NULL;
}

static int sec_decode(int rc, const MDB_val *v, idx_run *out)
{
    if (rc == MDB_NOTFOUND)
        return STELE_ENOTFOUND;
    if (rc)
        return idx_err(rc, "secondary index cursor");
    if (v->mv_size != SEC_ITEM)
        return err_set(STELE_ECORRUPT, "index: malformed secondary index entry");
    item_get(v->mv_data, out);
    if (out->count == 0)
        return err_set(STELE_ECORRUPT, "index: empty run in the secondary index");
    return 0;
}

int idx_sec_seek(idx_sec_cursor *sc, uint64_t pos, int backwards, idx_run *out)
{
    /* The first item starting after pos: the one before it starts at or
     * before pos and holds it if it is long enough. */
    uint8_t val[SEC_ITEM];
    memset(val, 0xff, sizeof val);
    stbe64(val, pos);
    MDB_val k = {sc->klen, sc->key}, v = {SEC_ITEM, val};
    int rc = mdb_cursor_get(sc->cur, &k, &v, MDB_GET_BOTH_RANGE);
    if (rc == MDB_NOTFOUND) {
        /* Every item starts at or before pos (or the key is absent). */
        k = (MDB_val){sc->klen, sc->key};
        rc = mdb_cursor_get(sc->cur, &k, &v, MDB_SET);
        if (rc == 0)
            rc = mdb_cursor_get(sc->cur, &k, &v, MDB_LAST_DUP);
        if (rc)
            return sec_decode(rc, &v, out);
        rc = sec_decode(0, &v, out);
        if (rc || backwards || out->start + out->count > pos)
            return rc;
        return STELE_ENOTFOUND; /* forwards: nothing holds pos or follows it */
    }
    if (rc)
        return sec_decode(rc, &v, out);
    idx_run after;
    if ((rc = sec_decode(0, &v, &after)))
        return rc;
    /* Now on the first item starting after pos; look at the one before. */
    rc = mdb_cursor_get(sc->cur, &k, &v, MDB_PREV_DUP);
    if (rc == MDB_NOTFOUND) {
        if (backwards)
            return STELE_ENOTFOUND;
        /* Put the cursor back on `after`. */
        k = (MDB_val){sc->klen, sc->key};
        v = (MDB_val){SEC_ITEM, val};
        rc = mdb_cursor_get(sc->cur, &k, &v, MDB_GET_BOTH_RANGE);
        if (rc == 0)
            *out = after;
        return rc ? sec_decode(rc, &v, out) : 0;
    }
    if ((rc = sec_decode(rc, &v, out)))
        return rc;
    if (backwards || out->start + out->count > pos)
        return 0;
    /* Forwards and the one before ends before pos: `after` it is. */
    rc = mdb_cursor_get(sc->cur, &k, &v, MDB_NEXT_DUP);
    return sec_decode(rc, &v, out);
}

int idx_sec_step(idx_sec_cursor *sc, int backwards, idx_run *out)
{
    MDB_val k, v;
    int rc = mdb_cursor_get(sc->cur, &k, &v, backwards ? MDB_PREV_DUP : MDB_NEXT_DUP);
    return sec_decode(rc, &v, out);
}

int idx_sec_last(idx_sec_cursor *sc, uint64_t below, idx_run *out)
{
    if (below == 0)
        return STELE_ENOTFOUND;
    return idx_sec_seek(sc, below - 1, 1, out);
}

int idx_sec_seek_ord(idx_sec_cursor *sc, uint64_t ord, idx_run *out)
{
    /* Ordinals grow with positions: bisect the positions [lo, hi] for the
     * run holding ord. Each probe lands on a run R (the one holding the
     * probe or the next); if R starts past ord the run wanted lies wholly
     * before the probe, if R ends before ord wholly after R. */
    MDB_val k = {sc->klen, sc->key}, v;
    int rc = mdb_cursor_get(sc->cur, &k, &v, MDB_SET);
    idx_run first, last;
    if (rc == 0)
        rc = sec_decode(mdb_cursor_get(sc->cur, &k, &v, MDB_FIRST_DUP), &v, &first);
    else
        return sec_decode(rc, &v, &first);
    if (rc == 0)
        rc = sec_decode(mdb_cursor_get(sc->cur, &k, &v, MDB_LAST_DUP), &v, &last);
    if (rc)
        return rc;
    if (ord < first.ord || ord >= last.ord + last.count)
        return STELE_ENOTFOUND;
    uint64_t lo = first.start, hi = last.start;
    for (int guard = 0; guard < 130 && lo <= hi; guard++) {
        uint64_t mid = lo + (hi - lo) / 2;
        idx_run r;
        if ((rc = idx_sec_seek(sc, mid, 0, &r)))
            return rc == STELE_ENOTFOUND ? err_set(STELE_ECORRUPT, "index: ordinal %llu "
                                                   "lies in no run", (unsigned long long)ord)
                                         : rc;
        if (r.ord > ord) {
            if (mid == 0)
                break;
            hi = mid - 1;
        } else if (r.ord + r.count <= ord) {
            lo = r.start + r.count;
        } else {
            *out = r;
            return 0;
        }
    }
    return err_set(STELE_ECORRUPT, "index: ordinal %llu lies in no run of its key",
                   (unsigned long long)ord);
}

/* ------------------------------------------------------------ key listing */

int idx_sec_keys(idx *ix, MDB_txn *txn, int kind, const char *prefix, size_t plen,
                 const char *after, size_t alen, size_t limit, int no_system, idx_key_fn fn,
                 void *ctx)
{
    if (!ix->sec_on)
        return err_set(STELE_EINVAL, "the secondary indexes are off in this store");
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, ix->sec, &cur);
    if (rc)
        return idx_err(rc, "secondary index cursor");
    /* Keys are kind | name, sorted by bytes: start at kind | max(prefix,
     * after) and walk the distinct keys while they keep the kind and the
     * prefix. A key's count is its last run's ordinal plus its count. */
    uint8_t start[1 + 256];
    size_t slen;
    int skip_equal = 0;
    if (after && alen && (alen > plen || memcmp(after, prefix, alen) >= 0)) {
        key_make(start, &slen, kind, after, alen > 255 ? 255 : alen);
        skip_equal = 1;
    } else {
        key_make(start, &slen, kind, prefix, plen);
    }
    MDB_val k = {slen, start}, v;
    size_t n = 0;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && n < limit) {
        const uint8_t *kb = k.mv_data;
        if (k.mv_size < 1 || kb[0] != (uint8_t)kind)
            break;
        const char *name = (const char *)kb + 1;
        size_t nlen = k.mv_size - 1;
        if (nlen < plen || memcmp(name, prefix, plen))
            break;
        if (skip_equal && nlen == alen && !memcmp(name, after, alen)) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP);
            continue;
        }
        if (no_system && nlen && name[0] == '$') {
            /* every kind|'$' key sorts before kind|'%': jump past them */
            uint8_t past[2] = {(uint8_t)kind, '%'};
            memcpy(start, past, 2);
            k = (MDB_val){2, start};
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
            continue;
        }
        idx_run last;
        if ((rc = sec_decode(mdb_cursor_get(cur, &k, &v, MDB_LAST_DUP), &v, &last)))
            break;
        if ((rc = fn(ctx, name, nlen, last.ord + last.count)))
            break;
        n++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP);
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    else if (rc > 0)
        rc = idx_err(rc, "secondary index cursor");
    return rc;
}
