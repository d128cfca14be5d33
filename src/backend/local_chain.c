/*
 * local_chain.c - the local engine's hash chain: every commit written since
 * the chain began is preceded in the log by a chain record (record.h, kind
 * 7) holding
 *
 *   prev    the chain hash of the commit before it (zeros for the first)
 *   digest  SHA-256 of the commit's records, byte for byte as written
 *
 * and the commit's chain hash is h = SHA-256(prev || digest). So each hash
 * covers every chained commit up to it; changing one byte of an event (even
 * with its CRC fixed) changes its commit's digest, and rewriting the digest
 * breaks the next record's `prev`. Only a signed head (store layer,
 * src/store/chain.c) stops someone who rewrites every later chain record.
 *
 * Why a record of its own, before the commit: the commit's framing
 * (commit_count, recovery's rules, the index's byte ranges) stays exactly
 * as it was, iterators skip chain records unless asked (log_iter.chain), and
 * scavenging keeps them when it removes their commit, so the chain still
 * verifies end to end across a scavenge: a removed commit is represented by
 * its digest (docs/security.md says what that does and does not prove).
 *
 * Invariants.
 *   - A chain record is immediately followed by all the records of its
 *     commit (same group write, same segment), or by nothing in a scavenged
 *     segment (its commit removed), or by nothing at the tail (its commit
 *     was torn: chain_open cuts it).
 *   - Once the chain has begun, every commit has one; their numbers
 *     (revision field) count up by one from 0.
 *   - A store written before the chain (or with STELE_OPEN_NO_CHAIN) has
 *     no chain records; its chain begins with the first commit written
 *     after, with prev = zeros.
 *
 * Where the head is found at open. The writer records in the index (meta
 * "chain") the location of a recent chain record (at most ANCHOR_EVERY
 * bytes behind the newest, in the same segment); chain_open reads the log
 * from there to the end of the recovered log. Without that entry (a
 * rebuilt index, an older store) it reads from the start once and records
 * where it got to.
 */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/local_int.h"
#include "log/record.h"
#include "os/os.h"

#define CHAIN_KEY "chain"
#define CHAIN_EXPORT_MAX (256ull << 20)
#define ANCHOR_EVERY (1u << 20)

static const uint8_t zero32[32];

static void chain_hash(const uint8_t data[CHAIN_DATA_SIZE], uint8_t out[32])
{
    SHA256(data, CHAIN_DATA_SIZE, out);
}

static int anchor_put(local *L, MDB_txn *txn, uint64_t loc)
{
    uint8_t v[8];
    st64(v, loc);
    MDB_val k = {sizeof CHAIN_KEY - 1, (void *)CHAIN_KEY}, val = {8, v};
    return idx_err(mdb_put(txn, L->ix->meta, &k, &val, 0), "put chain anchor");
}

uint64_t chain_rec_bytes(local *L) { return L->chain.on ? CHAIN_REC_SIZE : 0; }

uint8_t *chain_reserve(local *L)
{
    if (!L->chain.on)
        return NULL;
    uint8_t *cr = L->gbuf.p + L->gbuf.len;
    L->gbuf.len += CHAIN_REC_SIZE;
    return cr;
}

/* SHA-256 of p[0..n) with the writer's fetched digest. */
static int writer_sha256(local *L, const void *p, size_t n, uint8_t out[32])
{
    unsigned len = 0;
    if (!EVP_DigestInit_ex2(L->chain.ctx, L->chain.md, NULL) ||
        !EVP_DigestUpdate(L->chain.ctx, p, n) || !EVP_DigestFinal_ex(L->chain.ctx, out, &len) ||
        len != 32)
        return err_set(STELE_EINTERNAL, "SHA-256 failed (libcrypto)");
    return 0;
}

int chain_seal_commit(local *L, MDB_txn *txn, uint8_t *cr, int64_t now)
{
    if (!cr)
        return 0;
    const uint8_t *c = cr + CHAIN_REC_SIZE, *end = L->gbuf.p + L->gbuf.len;
    uint8_t data[CHAIN_DATA_SIZE];
    memcpy(data, L->chain.hash, 32);
    int rc = writer_sha256(L, c, (size_t)(end - c), data + 32);
    if (rc)
        return rc;
    uint8_t kind;
    uint64_t pos;
    int64_t t;
    for (const uint8_t *q = c; q < end; q += ld32(q))
        if (!rec_peek(q, (uint64_t)(end - q), &kind, &pos, &t) && kind == REC_EVENT &&
            pos + 1 > L->chain.next_pos)
            L->chain.next_pos = pos + 1;
    rec_encode_body(cr, REC_CHAIN, 0, "", 0, data, sizeof data, NULL, 0, L->chain.next_pos,
                    L->chain.seq, now);
    if ((rc = writer_sha256(L, data, sizeof data, L->chain.hash)))
        return rc;
    L->chain.seq++;
    /* Group failures after this are sticky faults (local.c): the store is
     * reopened, and chain_open resumes from the log. The anchor needs only
     * to be a chain record at most ANCHOR_EVERY bytes behind the head (open
     * reads from it): one index write per that many bytes, not per commit. */
    uint64_t loc = L->ck.loc + (uint64_t)(cr - L->gbuf.p);
    if (L->chain.anchor != UINT64_MAX && loc_seg(loc) == loc_seg(L->chain.anchor) &&
        loc - L->chain.anchor < ANCHOR_EVERY)
        return 0;
    L->chain.anchor = loc;
    return anchor_put(L, txn, loc);
}

void chain_publish(local *L)
{
    pthread_mutex_lock(&L->chain.mu);
    L->chain.pub_seq = L->chain.seq;
    L->chain.pub_pos = L->chain.next_pos;
    L->chain.pub_end = L->ck.loc;
    memcpy(L->chain.pub_hash, L->chain.hash, 32);
    pthread_mutex_unlock(&L->chain.mu);
}

/* The newest chain record in [from, end), and whether any record follows it. */
typedef struct chain_scan {
    int found, followed;
    uint64_t loc, seq, position;
    uint8_t data[CHAIN_DATA_SIZE];
} chain_scan;

static int scan_head(logf *lg, uint64_t from, uint64_t end, chain_scan *sc)
{
    memset(sc, 0, sizeof *sc);
    log_iter it;
    log_iter_init(&it, lg, from, end);
    it.chain = 1;
    int rc = 0;
    for (;;) {
        rec r;
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st <= 0) {
            rc = st;
            break;
        }
        if (r.kind == REC_CHAIN) {
            sc->found = 1;
            sc->followed = 0;
            sc->loc = at;
            sc->seq = r.revision;
            sc->position = r.position;
            memcpy(sc->data, r.data, CHAIN_DATA_SIZE);
        } else if (r.kind != REC_SEAL) {
            sc->followed = 1;
        }
    }
    log_iter_free(&it);
    return rc;
}

void chain_close(local *L)
{
    EVP_MD_CTX_free(L->chain.ctx);
    EVP_MD_free(L->chain.md);
    L->chain.ctx = NULL;
    L->chain.md = NULL;
}

int chain_open(local *L)
{
    pthread_mutex_init(&L->chain.mu, NULL);
    L->chain.md = EVP_MD_fetch(NULL, "SHA256", NULL);
    L->chain.ctx = EVP_MD_CTX_new();
    if (!L->chain.md || !L->chain.ctx)
        return err_set(STELE_EINTERNAL, "SHA-256 is not available (libcrypto)");
    MDB_txn *txn;
    int rc = idx_begin(L->ix, 1, &txn);
    if (rc)
        return rc;
    uint64_t from = loc_make(L->lg->first_seg, 0);
    MDB_val k = {sizeof CHAIN_KEY - 1, (void *)CHAIN_KEY}, v;
    if (mdb_get(txn, L->ix->meta, &k, &v) == 0 && v.mv_size == 8 && ld64(v.mv_data) <= L->ck.loc &&
        loc_seg(ld64(v.mv_data)) >= L->lg->first_seg)
        from = ld64(v.mv_data);
    mdb_txn_abort(txn);
    chain_scan sc;
    for (;;) {
        if ((rc = scan_head(L->lg, from, L->ck.loc, &sc)))
            return rc;
        /* A chain record whose commit was torn away: recovery cut the
         * commit but not the record before it. Cut it too, and look again
         * from the start (the head is an earlier record). */
        if (!sc.found || sc.followed || sc.loc + CHAIN_REC_SIZE != L->ck.loc)
            break;
        log_seg *s = L->lg->segs[loc_seg(sc.loc)];
        static const uint8_t zeros[CHAIN_REC_SIZE];
        int w = os_write_full(s->fd, zeros, sizeof zeros, loc_off(sc.loc));
        if (w == 0)
            w = os_io->fdatasync(s->fd);
        if (w)
            return err_set(STELE_EIO, "cut a torn commit's chain record: %s", strerror(-w));
        L->ck.loc = sc.loc;
        from = loc_make(L->lg->first_seg, 0);
    }
    if (sc.found && (L->opts.flags & STELE_OPEN_NO_CHAIN))
        return err_set(STELE_EINVAL,
                       "store %s has a hash chain (%llu commits): it cannot be opened with "
                       "STELE_OPEN_NO_CHAIN",
                       L->dir, (unsigned long long)sc.seq + 1);
    L->chain.on = !(L->opts.flags & STELE_OPEN_NO_CHAIN);
    if (sc.found) {
        L->chain.seq = sc.seq + 1;
        chain_hash(sc.data, L->chain.hash);
        L->chain.next_pos = sc.position;
    } else {
        L->chain.seq = 0;
        memset(L->chain.hash, 0, 32);
        L->chain.next_pos = L->ck.next_pos;
    }
    /* Where the next open starts looking, and the (possibly cut) end. */
    if ((rc = idx_reserve(L->ix)) || (rc = idx_begin(L->ix, 0, &txn)))
        return rc;
    L->chain.anchor = sc.found ? sc.loc : UINT64_MAX;
    rc = anchor_put(L, txn, sc.found ? sc.loc : L->ck.loc);
    if (rc == 0)
        rc = idx_ckpt_put(L->ix, txn, &L->ck);
    if (rc == 0)
        rc = idx_commit_txn(txn);
    else
        mdb_txn_abort(txn);
    if (rc == 0)
        chain_publish(L);
    return rc;
}

/* ------------------------------------------------------------------ check */

static int broken(uint64_t seq, uint64_t at, const char *why)
{
    char name[32];
    log_seg_name(loc_seg(at), name);
    return err_set(STELE_ECORRUPT, "hash chain broken at commit %llu (segment %s offset %u): %s",
                   (unsigned long long)seq, name, loc_off(at), why);
}

typedef struct chain_walk {
    int have, open;       /* the chain has begun; a chain record awaits its commit */
    uint64_t seq, at;     /* that record's number and location */
    uint8_t data[CHAIN_DATA_SIZE];
    uint8_t prev[32];     /* the hash the next record must name */
    uint32_t left, nrec;  /* records of its commit still to come, seen */
    buf bytes;            /* the commit's records so far */
    uint64_t commits, unchained, removed;
} chain_walk;

/* The commit of the open chain record is complete (or absent). */
static int close_commit(chain_walk *w, logf *lg)
{
    if (!w->open)
        return 0;
    w->open = 0;
    if (w->nrec == 0) {
        if (!log_seg_scavenged(lg, loc_seg(w->at)))
            return broken(w->seq, w->at, "its chain record is not followed by its commit");
        w->removed++;
        return 0;
    }
    uint8_t d[32];
    SHA256(w->bytes.p, w->bytes.len, d);
    if (memcmp(d, w->data + 32, 32) != 0)
        return broken(w->seq, w->at + CHAIN_REC_SIZE,
                      "the commit's records do not match the digest in its chain record");
    return 0;
}

int chain_check(logf *lg, char *note, size_t note_len)
{
    chain_walk w;
    memset(&w, 0, sizeof w);
    log_iter it;
    log_iter_init(&it, lg, loc_make(lg->first_seg, 0), UINT64_MAX);
    it.chain = 1;
    int rc = 0, torn = 0;
    for (;;) {
        rec r;
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st < 0) {
            /* The log walk before this one judged the store sound: a bad
             * record now can only be the torn tail the next open cuts. */
            err_clear();
            torn = 1;
            break;
        }
        if (st == LOG_ITER_END)
            break;
        if (r.kind == REC_SEAL)
            continue;
        if (r.kind == REC_CHAIN) {
            if (w.open && w.left) {
                rc = broken(w.seq, at, "a chain record inside a commit");
                break;
            }
            if ((rc = close_commit(&w, lg)))
                break;
            if (!w.have && (r.revision != 0 || memcmp(r.data, zero32, 32) != 0)) {
                rc = broken(r.revision, at, "the first chain record does not start the chain");
                break;
            }
            if (w.have && r.revision != w.seq + 1) {
                rc = broken(r.revision, at, "commit numbers skip");
                break;
            }
            if (w.have && memcmp(r.data, w.prev, 32) != 0) {
                rc = broken(r.revision, at,
                            "its previous hash is not the hash of the commit before it");
                break;
            }
            w.have = w.open = 1;
            w.seq = r.revision;
            w.at = at;
            memcpy(w.data, r.data, CHAIN_DATA_SIZE);
            chain_hash(r.data, w.prev);
            w.left = 0;
            w.nrec = 0;
            w.bytes.len = 0;
            w.commits++;
            continue;
        }
        if (!w.have) {
            w.unchained += r.commit_index == 0;
            continue;
        }
        if (!w.open) {
            rc = broken(w.seq + 1, at, "a commit without a chain record after the chain began");
            break;
        }
        if (w.nrec == 0)
            w.left = r.commit_count;
        if ((rc = buf_append(&w.bytes, it.raw, r.len)))
            break;
        w.nrec++;
        if (--w.left == 0 && (rc = close_commit(&w, lg)))
            break;
    }
    log_iter_free(&it);
    /* An open record at the end lost its commit to a torn write (cut at
     * the next open): not damage. */
    if (rc == 0 && w.open && w.nrec == 0 && !torn && !log_seg_scavenged(lg, loc_seg(w.at)))
        w.commits--;
    buf_free(&w.bytes);
    if (rc == 0 && note_len) {
        size_t n = strlen(note);
        if (w.have)
            snprintf(note + n, note_len - n,
                     "hash chain: %llu commits verified (%llu removed by scavenging, checked by "
                     "digest), %llu older commits before the chain began\n",
                     (unsigned long long)w.commits, (unsigned long long)w.removed,
                     (unsigned long long)w.unchained);
        else
            snprintf(note + n, note_len - n, "hash chain: none yet (%llu commits before it)\n",
                     (unsigned long long)w.unchained);
    }
    return rc;
}

/* ------------------------------------------------------------ head, export */

int local_chain_head(backend *b, stele_chain_head *out)
{
    local *L = (local *)b;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&L->chain.mu);
    out->commits = L->chain.pub_seq;
    out->position = L->chain.pub_pos;
    memcpy(out->hash, L->chain.pub_hash, 32);
    pthread_mutex_unlock(&L->chain.mu);
    return 0;
}

/* The location of the first record of the event at `pos`; ENOTFOUND if no
 * event is stored there (never written, or removed by scavenging). */
static int event_loc(local *L, MDB_txn *txn, uint64_t pos, uint64_t end, rec *r, uint64_t *loc)
{
    uint64_t fpos, floc;
    int rc = idx_pos_floor(L->ix, txn, pos, &fpos, &floc);
    if (rc)
        return rc == STELE_ENOTFOUND
                   ? err_set(STELE_ENOTFOUND, "no event at position %llu", (unsigned long long)pos)
                   : rc;
    log_iter it;
    log_iter_init(&it, L->lg, floc, end);
    rc = STELE_ENOTFOUND;
    for (;;) {
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, r, &at, &short_tail);
        if (st < 0) {
            rc = st;
            break;
        }
        if (st == LOG_ITER_END || (r->kind == REC_EVENT && r->position > pos))
            break;
        if (r->kind == REC_EVENT && r->position == pos) {
            *loc = at;
            rc = 0;
            break;
        }
    }
    log_iter_free(&it);
    if (rc == STELE_ENOTFOUND)
        rc = err_set(STELE_ENOTFOUND, "no event at position %llu (never written, or removed by "
                     "scavenging)", (unsigned long long)pos);
    return rc;
}

int local_chain_export(backend *b, uint64_t from, uint64_t to,
                       int (*fn)(void *ctx, uint64_t seq, const uint8_t *bytes, size_t n,
                                 const uint8_t digest[32]),
                       void *ctx, uint64_t *first_seq, uint8_t prev[32], stele_chain_head *head)
{
    local *L = (local *)b;
    uint64_t end;
    local_chain_head(b, head);
    pthread_mutex_lock(&L->chain.mu);
    end = L->chain.pub_end;
    pthread_mutex_unlock(&L->chain.mu);
    if (from > to)
        return err_set(STELE_EINVAL, "from (%llu) is after to (%llu)", (unsigned long long)from,
                       (unsigned long long)to);
    if (head->commits == 0 || to >= head->position)
        return err_set(STELE_EINVAL, "position %llu is not covered by the hash chain's head "
                       "(it covers positions below %llu)",
                       (unsigned long long)to, (unsigned long long)head->position);
    MDB_txn *txn;
    int rc = idx_begin(L->ix, 1, &txn);
    if (rc)
        return rc;
    rec r;
    uint64_t loc = 0;
    rc = event_loc(L, txn, from, end, &r, &loc);
    /* Its commit starts at the commit's first event (events come first). */
    if (rc == 0 && r.commit_index)
        rc = event_loc(L, txn, r.position - r.commit_index, end, &r, &loc);
    mdb_txn_abort(txn);
    if (rc)
        return rc;
    uint8_t hdr[REC_HEADER_SIZE];
    if (loc_off(loc) < SEG_HEADER_SIZE + CHAIN_REC_SIZE ||
        log_read(L->lg, loc - CHAIN_REC_SIZE, hdr, sizeof hdr) || hdr[8] != REC_CHAIN) {
        err_clear();
        return err_set(STELE_ENOTFOUND, "the event at position %llu was written before the hash "
                       "chain began", (unsigned long long)from);
    }
    log_iter it;
    log_iter_init(&it, L->lg, loc - CHAIN_REC_SIZE, end);
    it.chain = 1;
    buf bytes = {0};
    int open = 0, past = 0;
    uint64_t seq = 0, cpos = 0, total = 0, next_seq = 0;
    uint8_t digest[32];
    for (;;) {
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st < 0) {
            rc = st;
            break;
        }
        if (st == LOG_ITER_END || r.kind == REC_CHAIN) {
            if (open) {
                int with = !past && bytes.len;
                total += with ? bytes.len * 4 / 3 + 16 : 80;
                if (total > CHAIN_EXPORT_MAX) {
                    rc = err_set(STELE_ETOOBIG, "the export would pass %llu MiB: export a "
                                 "smaller range, or later events",
                                 (unsigned long long)(CHAIN_EXPORT_MAX >> 20));
                    break;
                }
                if ((rc = fn(ctx, seq, with ? bytes.p : NULL, with ? bytes.len : 0, digest)))
                    break;
                past |= cpos > to;
                next_seq = seq + 1;
            }
            if (st == LOG_ITER_END)
                break;
            if (!open) {
                *first_seq = r.revision;
                memcpy(prev, r.data, 32);
            } else if (r.revision != next_seq) {
                rc = err_set(STELE_ECORRUPT, "hash chain: commit %llu follows commit %llu",
                             (unsigned long long)r.revision, (unsigned long long)seq);
                break;
            }
            open = 1;
            seq = r.revision;
            cpos = r.position;
            memcpy(digest, r.data + 32, 32);
            bytes.len = 0;
        } else if (r.kind != REC_SEAL && (rc = buf_append(&bytes, it.raw, r.len))) {
            break;
        }
    }
    log_iter_free(&it);
    buf_free(&bytes);
    if (rc == 0 && next_seq != head->commits)
        rc = err_set(STELE_ECORRUPT, "hash chain: the log holds %llu commits up to the head, "
                     "which names %llu", (unsigned long long)next_seq,
                     (unsigned long long)head->commits);
    return rc;
}
