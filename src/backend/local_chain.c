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
 *     was torn: chain_open cuts it). A trailing record (below, "Trailing
 *     records") mirrors this: it immediately follows its commit, or no
 *     commit in a scavenged segment; a commit at the tail may lack it.
 *   - Once the chain has begun, every commit has one; their numbers
 *     (revision field) count up by one from 0.
 *   - A store written before the chain (or with STELE_OPEN_NO_CHAIN) has
 *     no chain records; its chain begins with the first commit written
 *     after, with prev = zeros.
 *
 * Where the head is found at open. The writer records in the index (meta
 * "chain") the location of a recent chain record (the last of an earlier
 * group, about ANCHOR_EVERY bytes behind the newest at most); chain_open
 * reads the log from there to the end of the recovered log. Without that
 * entry (a rebuilt index, an older store) it reads from the start once and
 * records where it got to.
 *
 * Chain records are written pending and filled in after the group's
 * fsync ("Hashing after the fsync" below); a crash can leave the last
 * group's pending or torn, and open writes them ("Open after a crash").
 *
 * Trailing records (since 2026-12-08). A chain record may instead follow
 * its commit (flag REC_CHAIN_TRAILING): the writer puts it after the
 * commit's records in the group write, so the record rewritten after the
 * acknowledgement lies in the group's last page(s), which the next group's
 * write starts in anyway. With leading records that rewrite dirtied the
 * group's first page again, a second range a whole group behind in the
 * next fdatasync (docs/benchmarks.md, "Where the chain's cost on disk
 * goes"). The writer uses one layout per open (STELE_CHAIN_LAYOUT,
 * layout_setting: trailing unless "leading"), so a store written before
 * switches where the new build first appends, anywhere in a segment. The
 * walks (open's scan, stele check, exports) take each record as its flag
 * says: a leading record owns the first whole commit after it, a trailing
 * one the whole commit just before it (commits found by their records'
 * commit_count); a commit no record owns is one from before the chain
 * began, damage after it, or, at the end of the log only, a commit whose
 * trailing record a crash tore away (its group's write never completed, so
 * it was never acknowledged): open writes that record after it, as the
 * writer would have. Everything else about pending records holds for
 * both layouts (the flag is kept when a record is completed).
 */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/local_int.h"
#include "log/record.h"
#include "os/os.h"
#include "util/assert.h"

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
    uint8_t *mark = L->gbuf.p + L->gbuf.len;
    if (!L->chain.trailing)
        L->gbuf.len += CHAIN_REC_SIZE;
    return mark;
}

/* The flags of a chain record this writer writes. */
static unsigned rec_flags(const chain_state *cs, int pending)
{
    return (pending ? REC_CHAIN_PENDING : 0) | (cs->trailing ? REC_CHAIN_TRAILING : 0);
}

/* SHA-256 of p[0..n) with a fetched digest and the caller's context. */
static int sha256_with(EVP_MD *md, EVP_MD_CTX *ctx, const void *p, size_t n, uint8_t out[32])
{
    unsigned len = 0;
    return EVP_DigestInit_ex2(ctx, md, NULL) && EVP_DigestUpdate(ctx, p, n) &&
                   EVP_DigestFinal_ex(ctx, out, &len) && len == 32
               ? 0
               : -1;
}

int chain_seal_commit(local *L, MDB_txn *txn, uint8_t *mark, int64_t now)
{
    if (!mark)
        return 0;
    /* The commit's records, and its chain record before or after them. */
    const uint8_t *c = L->chain.trailing ? mark : mark + CHAIN_REC_SIZE;
    const uint8_t *end = L->gbuf.p + L->gbuf.len;
    uint8_t *cr = mark;
    if (L->chain.trailing) {
        STELE_ASSERT(L->gbuf.len + CHAIN_REC_SIZE <= L->gbuf.cap);
        cr = L->gbuf.p + L->gbuf.len;
        L->gbuf.len += CHAIN_REC_SIZE;
    }
    uint8_t kind;
    uint64_t pos;
    int64_t t;
    for (const uint8_t *q = c; q < end; q += ld32(q))
        if (!rec_peek(q, (uint64_t)(end - q), &kind, &pos, &t) && kind == REC_EVENT &&
            pos + 1 > L->chain.next_pos)
            L->chain.next_pos = pos + 1;
    if (L->chain.njobs == L->chain.jobs_cap) {
        size_t cap = L->chain.jobs_cap ? L->chain.jobs_cap * 2 : 64;
        chain_job *nj = realloc(L->chain.jobs, cap * sizeof *nj);
        if (!nj)
            return err_set(STELE_ENOMEM, "out of memory");
        L->chain.jobs = nj;
        L->chain.jobs_cap = cap;
    }
    chain_job *j = &L->chain.jobs[L->chain.njobs++];
    j->cr_off = (size_t)(cr - L->gbuf.p);
    j->from_off = (size_t)(c - L->gbuf.p);
    j->to_off = (size_t)(end - L->gbuf.p);
    j->seq = L->chain.seq++;
    j->next_pos = L->chain.next_pos;
    j->failed = 0;
    L->chain.now = now;
    L->chain.job_bytes += j->to_off - j->from_off;
    /* Written pending (record.h): its digest is filled in by
     * chain_group_done once the group is durable (the hasher reads the
     * commits meanwhile). */
    static const uint8_t zeros[CHAIN_DATA_SIZE];
    rec_encode_body(cr, REC_CHAIN, rec_flags(&L->chain, 1), "", 0, zeros, sizeof zeros, NULL, 0,
                    j->next_pos, j->seq, now);
    /* Group failures after this are sticky faults (local.c): the store is
     * reopened, and chain_open resumes from the log. The anchor is where
     * open starts reading the chain: one index write per ANCHOR_EVERY bytes,
     * not per commit. It names the last chain record of an earlier group
     * (written at a group's first commit), never one of this group: that
     * record is complete on disk whenever this group's index transaction
     * is (its rewrite went out before this group's fdatasync), so open
     * finds the hash before any record a crash left pending or torn
     * (chain_open). With no earlier record, this one: number 0, prev zeros
     * (a trailing one's commit, so that open reads the commit before it). */
    uint64_t loc = L->ck.loc + (uint64_t)(cr - L->gbuf.p);
    j->loc = loc;
    if (L->chain.njobs != 1 ||
        (L->chain.anchor != UINT64_MAX && loc_seg(loc) == loc_seg(L->chain.anchor) &&
         loc - L->chain.anchor < ANCHOR_EVERY))
        return 0;
    uint64_t first = L->chain.trailing ? L->ck.loc + (uint64_t)(c - L->gbuf.p) : loc;
    L->chain.anchor = L->chain.last_loc != UINT64_MAX ? L->chain.last_loc : first;
    return anchor_put(L, txn, L->chain.anchor);
}

/* ------------------------------------------------------------- the hasher */

/*
 * Hashing after the fsync. Hashing a commit's records is the chain's whole
 * cost (docs/benchmarks.md: SHA-256 at ~2 GB/s here, 14 us for a 30 KB
 * commit of 100 events, 0.3 us for a one-event commit; nothing else above
 * noise), and done before the group's write it lengthens every append's
 * latency and the writer's every turn. So a group is written with its
 * chain records pending (REC_CHAIN_PENDING, zero data) and:
 *
 *   1. chain_hash_start, once the group is encoded: a large group's commits
 *      (CHAIN_HASHER_MIN bytes or more) go to the hasher thread, which
 *      digests them while the writer writes, fsyncs and indexes the group;
 *   2. the group is acknowledged (local.c writer_main);
 *   3. chain_group_done, before the writer takes the next group: the writer
 *      digests what the hasher has not claimed (all of a small group: waking
 *      a thread costs more than hashing a few KB, the reverted pipeline's
 *      lesson), waits for the commit in progress, folds the hashes in commit
 *      order (h = SHA-256(prev || digest)), rewrites the group's chain
 *      records in place with one pwrite (no fsync), and publishes the head.
 *      For a group the writer overlaps with its fdatasync (local.c,
 *      "Overlap") the CPU part of this step (chain_group_fold: the
 *      digests, the wait for the hasher, the fold into L->gbuf) already ran
 *      during the fdatasync, and only the rewrite and the head are left.
 *
 * A single appender thus prepares its next append while its last commit is
 * hashed, and a busy writer leaves the hashing to the hasher during its
 * fsync. The rewritten records become durable with the next group's
 * fdatasync (same file) or the segment's seal (a new file); only the last
 * group before a crash can be left pending, and chain_open fills it in from
 * its commits' bytes, which are durable: every acknowledged commit is
 * covered by the chain after recovery, with the hash the writer would have
 * written. The head (local_chain_head) is published only after step 3, and
 * a caller asking for it waits for the groups already acknowledged, so it
 * always covers every acknowledged commit.
 *
 * Sharing: the jobs and the group's bytes are written by the writer before
 * chain_hash_start and only read by the hasher, which writes only the
 * digests of the jobs it claimed (under hmu); chain_group_done returns once
 * every handed-over job is done, after which the writer owns all again.
 */
#define CHAIN_HASHER_MIN 8192u

static void digest_job(EVP_MD *md, EVP_MD_CTX *ctx, const uint8_t *base, chain_job *j)
{
    j->failed = sha256_with(md, ctx, base + j->from_off, j->to_off - j->from_off, j->digest) != 0;
}

static void *hasher_main(void *arg)
{
    local *L = arg;
    chain_state *cs = &L->chain;
    pthread_mutex_lock(&cs->hmu);
    for (;;) {
        while (!cs->hstop && cs->hnext >= cs->hjobs)
            pthread_cond_wait(&cs->hcv, &cs->hmu);
        if (cs->hstop)
            break;
        chain_job *j = &cs->jobs[cs->hnext++];
        const uint8_t *base = cs->hbase;
        pthread_mutex_unlock(&cs->hmu);
        digest_job(cs->md, cs->hctx, base, j);
        pthread_mutex_lock(&cs->hmu);
        size_t done = atomic_fetch_add(&cs->hdone, 1) + 1;
        if (cs->writer_waiting && done == cs->hjobs)
            pthread_cond_signal(&cs->wcv);
    }
    pthread_mutex_unlock(&cs->hmu);
    return NULL;
}

void chain_hash_start(local *L, int fd, uint64_t write_off, int hasher)
{
    chain_state *cs = &L->chain;
    cs->fd = fd;
    cs->write_off = write_off;
    if (!hasher || !cs->hasher_started || cs->njobs == 0 || cs->job_bytes < CHAIN_HASHER_MIN)
        return;
    pthread_mutex_lock(&cs->hmu);
    cs->hbase = L->gbuf.p;
    atomic_store(&cs->hdone, 0);
    cs->hnext = 0;
    cs->hjobs = cs->njobs;
    pthread_cond_signal(&cs->hcv);
    pthread_mutex_unlock(&cs->hmu);
}

/* The head is as far as the writer's acknowledged groups: wake whoever
 * waits for it in local_chain_head. */
static void caught_up(local *L)
{
    pthread_mutex_lock(&L->chain.mu);
    L->chain.pub_groups = atomic_load(&L->n_groups);
    pthread_cond_broadcast(&L->chain.pubcv);
    pthread_mutex_unlock(&L->chain.mu);
}

/* Digest what the hasher has not claimed, wait for the rest, and fold the
 * hashes into the group's chain records in L->gbuf (CPU only, no I/O).
 * ok 0 (the group failed): only wait for the hasher. Runs once per group,
 * either in the overlap window (local.c, "Overlap": while the syncer runs
 * the group's fdatasync) or in chain_group_done. */
int chain_group_fold(local *L, int ok)
{
    chain_state *cs = &L->chain;
    STELE_ASSERT(!cs->folded);
    cs->folded = 1;
    if (cs->hjobs) {
        /* Take what the hasher has not claimed, then wait for the rest. */
        pthread_mutex_lock(&cs->hmu);
        while (cs->hnext < cs->hjobs) {
            chain_job *j = &cs->jobs[cs->hnext++];
            pthread_mutex_unlock(&cs->hmu);
            if (ok)
                digest_job(cs->md, cs->ctx, L->gbuf.p, j);
            pthread_mutex_lock(&cs->hmu);
            atomic_fetch_add(&cs->hdone, 1);
        }
        while (atomic_load(&cs->hdone) < cs->hjobs) {
            cs->writer_waiting = 1;
            pthread_cond_wait(&cs->wcv, &cs->hmu);
        }
        cs->writer_waiting = 0;
        cs->hjobs = cs->hnext = 0;
        pthread_mutex_unlock(&cs->hmu);
    } else if (ok) {
        for (size_t i = 0; i < cs->njobs; i++)
            digest_job(cs->md, cs->ctx, L->gbuf.p, &cs->jobs[i]);
    }
    cs->folded_ok = 0;
    if (!ok || !cs->njobs)
        return 0;
    /* The fold, in commit order, and the chain records in L->gbuf. */
    for (size_t i = 0; i < cs->njobs; i++) {
        chain_job *j = &cs->jobs[i];
        uint8_t data[CHAIN_DATA_SIZE];
        memcpy(data, cs->hash, 32);
        memcpy(data + 32, j->digest, 32);
        if (j->failed || sha256_with(cs->md, cs->ctx, data, sizeof data, cs->hash))
            return err_set(STELE_EINTERNAL, "SHA-256 failed (libcrypto)");
        rec_encode_body(L->gbuf.p + j->cr_off, REC_CHAIN, rec_flags(cs, 0), "", 0, data,
                        sizeof data, NULL, 0, j->next_pos, j->seq, cs->now);
    }
    cs->folded_ok = 1;
    return 0;
}

/*
 * The rewrite's range. A group's chain record is its first bytes (one
 * commit) or spread over it (many). Rewriting only the records dirties
 * the page of the first one again after the group's fdatasync cleaned it;
 * the next group's fdatasync then writes two separate ranges of the file,
 * that page, a whole group behind, and the new group: +8 us per group on
 * this project's disk, what was left of the chain's cost at 1 x 100
 * (docs/benchmarks.md, "Where the chain's cost on disk goes"). So when the
 * range from the group's first chain record to its end is at most
 * rewrite_max bytes, the rewrite runs on to the group's end: every page
 * from the first record on is dirty, the last one adjoins the next group,
 * and the next fdatasync writes one range. The bytes after the records are
 * the group's own, unchanged (a reader or a crash sees the same events),
 * and the pwrite still comes after the acknowledgement, so copying them
 * again is off the appenders' path. Measured against carrying the range
 * into the next group's write (one pwritev; branch chain21c's first
 * version), which put that copy on the path and gained nothing at 1 x 100:
 * docs/benchmarks.md, "The chain's rewrite in one range with the next
 * group". Above rewrite_max (1 x 1,000 events: writing 300 KB again costs
 * more than the second range), and while the store's fdatasyncs are fast
 * (a tmpfs: no second range to save, only the copy), only the records are
 * rewritten, as before. This whole-range rewrite is off by default (below:
 * measured on a quiet machine, it did not pay on this project's disk).
 */
#define CHAIN_REWRITE_MAX (64u << 10)
/* ... and with "auto" only while the store's fdatasyncs take this long on
 * average (the writer's moving average, local.c): on a tmpfs there is no
 * second range to save, only the copy (the overlap's threshold). */
#define CHAIN_REWRITE_SYNC_MIN_NS 25000u

/* STELE_CHAIN_REWRITE_MAX: the largest range rewritten whole, in bytes.
 * Unset, 0 or "off" (the default): only the records, as before 2026-12-07:
 * on the quiet machine of 20:10 UTC that day the whole range lost to the
 * records alone at 1 x 100 (482,892 against 491,046 events/s, p50 178
 * against 170 us; docs/benchmarks.md, "Quiet-machine runs of 2026-12-07,
 * 20:07"). "auto": CHAIN_REWRITE_MAX while the fdatasyncs are slow; a
 * number: that size whatever they take. Kept to compare both in one
 * binary on other disks (docs/operations.md). */
static uint64_t rewrite_max_setting(int *timed)
{
    const char *v = getenv("STELE_CHAIN_REWRITE_MAX");
    *timed = v && !strcmp(v, "auto");
    if (!v || !*v || !strcmp(v, "off"))
        return 0;
    if (*timed)
        return CHAIN_REWRITE_MAX;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    return *end ? 0 : n;
}

/* STELE_CHAIN_LAYOUT: "leading" writes each chain record before its
 * commit (the layout before 2026-12-08, readable by older builds, kept to
 * compare in one binary); unset or "trailing" (the default) after it
 * ("Trailing records"). */
static int layout_setting(void)
{
    const char *v = getenv("STELE_CHAIN_LAYOUT");
    return !(v && !strcmp(v, "leading"));
}

int chain_group_done(local *L, int ok)
{
    chain_state *cs = &L->chain;
    int rc = 0;
    if (!cs->folded)
        rc = chain_group_fold(L, ok);
    cs->folded = 0;
    size_t n = cs->njobs;
    cs->njobs = 0;
    cs->job_bytes = 0;
    if (ok && rc == 0 && n && cs->folded_ok) {
        /* The group's chain records in place, with one pwrite (no fsync):
         * after the acknowledgement, so the group's I/O is the same
         * sequence whether or not its fold ran in the overlap window. The
         * range runs on to the group's end when that is short ("The
         * rewrite's range"). */
        size_t from = cs->jobs[0].cr_off, to = cs->jobs[n - 1].cr_off + CHAIN_REC_SIZE;
        if (L->gbuf.len - from <= cs->rewrite_max &&
            (!cs->rewrite_timed || L->fsync_avg_ns >= CHAIN_REWRITE_SYNC_MIN_NS))
            to = L->gbuf.len;
        int w = os_write_full(cs->fd, L->gbuf.p + from, to - from, cs->write_off + from);
        if (w)
            rc = err_set(STELE_EIO, "write the hash chain's records: %s", strerror(-w));
        else
            cs->last_loc = cs->jobs[n - 1].loc;
    } else if (ok && n && rc == 0) {
        rc = err_set(STELE_EINTERNAL, "hash chain: the group's records were not folded");
    }
    cs->folded_ok = 0;
    if (ok && rc == 0)
        chain_publish(L);
    else
        caught_up(L);
    return rc;
}

void chain_publish(local *L)
{
    pthread_mutex_lock(&L->chain.mu);
    L->chain.pub_seq = L->chain.seq;
    L->chain.pub_pos = L->chain.next_pos;
    L->chain.pub_end = L->ck.loc;
    memcpy(L->chain.pub_hash, L->chain.hash, 32);
    L->chain.pub_groups = atomic_load(&L->n_groups);
    pthread_cond_broadcast(&L->chain.pubcv);
    pthread_mutex_unlock(&L->chain.mu);
}

/*
 * Open after a crash. Only chain records a crash caught before their
 * rewrite was durable can be anything but complete: those of the last
 * group rewritten (chain_group_done's pwrite is not synced) and of a later
 * group written but never acknowledged (a crash in its fdatasync, its bytes
 * on disk anyway). Each of them is
 *
 *   pending   never rewritten (flags REC_CHAIN_PENDING, data zeros);
 *   torn      partly rewritten: a sector or page boundary fell inside it,
 *             so its checksum fails while every byte a pending record and
 *             its complete form share is intact (rec_chain_torn); only in
 *             the last segment, which the rewrite cannot have left sealed;
 *   complete  its rewrite reached the disk, perhaps after a pending or
 *             torn record of its own group (pages go out in any order).
 *
 * So the rules: after the first pending or torn record, a complete one
 * must belong to the same group (the group's time, the `created` every
 * chain record of a group shares) and must hold exactly what open computes
 * for it; anything else, such as a complete record of a later group after a
 * pending one, or a torn record before a sealed segment, is damage. Open
 * computes each pending or torn record from its commit's bytes (durable
 * before the group was acknowledged) and the hash before it, and writes
 * it: the hash the writer computed, so a head once published is reproduced
 * exactly.
 */

/* A pending, torn or (after those) complete chain record found at open,
 * and the digest of its commit's records. */
typedef struct chain_pend {
    uint64_t loc, seq, position;
    int64_t created;
    uint8_t digest[32];
    int empty;                     /* no commit of its own (yet) */
    int complete;                  /* a complete record after a pending one */
    int trailing;                  /* REC_CHAIN_TRAILING */
    int append;                    /* not in the log: a trailing record torn
                                    * away after its commit, written at loc
                                    * (the log's end) */
    uint8_t data[CHAIN_DATA_SIZE]; /* what it holds */
} chain_pend;

/* The newest chain record in [from, end), whether any record follows it,
 * and the records after the first pending or torn one (their commits
 * digested). first_pending: the first chain record in the range was not
 * complete and not the chain's first, so the hash before it is not known
 * from the range. */
typedef struct chain_scan {
    int found, followed, complete, first_pending, trailing;
    uint64_t loc, seq, position;
    uint8_t data[CHAIN_DATA_SIZE]; /* the newest complete record's before them */
    chain_pend *pend;
    size_t npend, cap;
} chain_scan;

/* Which chain record a commit belongs to (both layouts; "Trailing
 * records"): a leading record owns the first commit after it, a trailing
 * one the commit just before it. The walks count each commit's records
 * (commit_count) to find where it ends. */
typedef struct commit_track {
    buf bytes;          /* the current (or last) commit's records */
    uint32_t left;      /* its records still to come */
    int lead_wait;      /* the newest chain record is leading and awaits its commit */
    int unclaimed;      /* `bytes` is a whole commit no record owns yet */
    uint64_t at;        /* its first record */
    uint64_t next_pos;  /* the log's next position after it (its events, or as before) */
    int64_t created;
} commit_track;

static int pend_digest(local *L, chain_pend *p, const buf *bytes)
{
    p->empty = 0;
    if (sha256_with(L->chain.md, L->chain.ctx, bytes->p, bytes->len, p->digest))
        return err_set(STELE_EINTERNAL, "SHA-256 failed (libcrypto)");
    return 0;
}

/* The bad record at `at` is a chain record torn in its rewrite, where one
 * can be (the last segment, never scavenged): its header fields in *r. */
static int torn_at(logf *lg, uint64_t at, rec *r)
{
    uint8_t p[CHAIN_REC_SIZE];
    if (loc_seg(at) + 1 != atomic_load(&lg->nsegs) || log_seg_scavenged(lg, loc_seg(at)) ||
        log_read(lg, at, p, sizeof p) || !rec_chain_torn(p, sizeof p))
        return 0;
    memset(r, 0, sizeof *r);
    r->len = CHAIN_REC_SIZE;
    r->kind = REC_CHAIN;
    r->flags = REC_CHAIN_PENDING | (p[9] & REC_CHAIN_TRAILING);
    r->commit_count = 1;
    r->position = ld64(p + 24);
    r->revision = ld64(p + 32);
    r->created_us = (int64_t)ld64(p + 40);
    return 1;
}

/* The log iterator met a bad record at `at` (st, its error): 1 when it is
 * a torn chain record (*r set, the iterator moved past it), else st with
 * its message kept. */
static int step_torn(log_iter *it, int st, uint64_t at, uint64_t end, rec *r)
{
    char why[512];
    snprintf(why, sizeof why, "%s", stele_errmsg());
    if (st == STELE_ECORRUPT && torn_at(it->lg, at, r)) {
        err_clear();
        logf *lg = it->lg;
        log_iter_free(it);
        log_iter_init(it, lg, at + CHAIN_REC_SIZE, end);
        it->chain = 1;
        return 1;
    }
    return err_set(st, "%s", why);
}

static int damaged_after(uint64_t at, const char *what)
{
    char name[32];
    log_seg_name(loc_seg(at), name);
    return err_set(STELE_ECORRUPT, "hash chain: %s (segment %s offset %u)", what, name,
                   loc_off(at));
}

static chain_pend *pend_add(chain_scan *sc)
{
    if (sc->npend == sc->cap) {
        size_t nc = sc->cap ? sc->cap * 2 : 16;
        chain_pend *np = realloc(sc->pend, nc * sizeof *np);
        if (!np)
            return NULL;
        sc->pend = np;
        sc->cap = nc;
    }
    chain_pend *p = &sc->pend[sc->npend++];
    memset(p, 0, sizeof *p);
    return p;
}

static int scan_chain_rec(local *L, chain_scan *sc, commit_track *ct, const rec *r, uint64_t at)
{
    int pending = (r->flags & REC_CHAIN_PENDING) != 0;
    int trailing = (r->flags & REC_CHAIN_TRAILING) != 0;
    if (ct->left)
        return damaged_after(at, "a chain record inside a commit");
    if (sc->npend && sc->pend[sc->npend - 1].empty)
        return damaged_after(sc->pend[sc->npend - 1].loc,
                             "a pending chain record has no commit of its own");
    /* A commit no record owns: before the chain began, or this trailing
     * record's own. */
    int own = trailing && ct->unclaimed;
    if (ct->unclaimed && !own && sc->found)
        return damaged_after(ct->at, "a commit without its chain record after the chain began");
    ct->unclaimed = 0;
    ct->lead_wait = !trailing;
    if (!pending && sc->npend && r->created_us != sc->pend[sc->npend - 1].created)
        return damaged_after(at, "a complete chain record of a later group after a pending one");
    if (pending || sc->npend) {
        sc->first_pending |= !sc->found && r->revision != 0;
        chain_pend *p = pend_add(sc);
        if (!p)
            return err_set(STELE_ENOMEM, "out of memory");
        *p = (chain_pend){.loc = at, .seq = r->revision, .position = r->position,
                          .created = r->created_us, .complete = !pending, .trailing = trailing,
                          .empty = 1};
        if (!pending)
            memcpy(p->data, r->data, CHAIN_DATA_SIZE);
        int rc;
        if (own && (rc = pend_digest(L, p, &ct->bytes)))
            return rc;
    } else {
        sc->complete = 1;
        memcpy(sc->data, r->data, CHAIN_DATA_SIZE);
    }
    sc->found = 1;
    sc->followed = 0;
    sc->trailing = trailing;
    sc->loc = at;
    sc->seq = r->revision;
    sc->position = r->position;
    return 0;
}

/* A record of a commit (not a chain record or a seal). */
static int scan_commit_rec(local *L, chain_scan *sc, commit_track *ct, const rec *r, uint64_t at,
                           const uint8_t *raw)
{
    sc->followed = 1;
    int rc;
    if (ct->left == 0) {
        if (ct->unclaimed && sc->found)
            return damaged_after(ct->at, "a commit without its chain record after the chain "
                                         "began");
        ct->unclaimed = 0;
        ct->left = r->commit_count;
        ct->bytes.len = 0;
        ct->at = at;
        ct->created = r->created_us;
        ct->next_pos = sc->found ? sc->position : 0;
    }
    if ((rc = buf_append(&ct->bytes, raw, r->len)))
        return rc;
    if (r->kind == REC_EVENT && r->position + 1 > ct->next_pos)
        ct->next_pos = r->position + 1;
    if (--ct->left)
        return 0;
    if (!ct->lead_wait) {
        ct->unclaimed = 1;
        return 0;
    }
    ct->lead_wait = 0;
    chain_pend *p = sc->npend ? &sc->pend[sc->npend - 1] : NULL;
    return p && p->loc == sc->loc && !p->trailing ? pend_digest(L, p, &ct->bytes) : 0;
}

static int scan_head(local *L, uint64_t from, uint64_t end, chain_scan *sc)
{
    chain_pend *keep = sc->pend;
    size_t cap = sc->cap;
    memset(sc, 0, sizeof *sc);
    sc->pend = keep;
    sc->cap = cap;
    log_iter it;
    log_iter_init(&it, L->lg, from, end);
    it.chain = 1;
    commit_track ct;
    memset(&ct, 0, sizeof ct);
    int rc = 0;
    for (;;) {
        rec r;
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st < 0 && (st = step_torn(&it, st, at, end, &r)) < 0) {
            rc = st;
            break;
        }
        if (st == LOG_ITER_END)
            break;
        if (r.kind == REC_CHAIN) {
            if ((rc = scan_chain_rec(L, sc, &ct, &r, at)))
                break;
        } else if (r.kind != REC_SEAL) {
            if ((rc = scan_commit_rec(L, sc, &ct, &r, at, it.raw)))
                break;
        } else if (sc->npend) {
            /* A segment is sealed only after its last group's rewrite. */
            rc = damaged_after(at, "a sealed segment ends in a pending chain record's group");
            break;
        } else if (ct.unclaimed && sc->found) {
            rc = damaged_after(ct.at, "a commit without its chain record after the chain began");
            break;
        } else {
            ct.unclaimed = ct.lead_wait = 0;
        }
    }
    /* A commit at the end whose trailing record a crash tore away (the
     * group's write never completed, so it was never acknowledged; recovery
     * kept it whole): its record is written at the end. Before the chain
     * began, such a commit is one of the unchained ones. */
    if (rc == 0 && ct.unclaimed && sc->found) {
        chain_pend *p = pend_add(sc);
        if (!p) {
            rc = err_set(STELE_ENOMEM, "out of memory");
        } else {
            *p = (chain_pend){.loc = end, .seq = sc->seq + 1, .position = ct.next_pos,
                              .created = ct.created, .trailing = 1, .append = 1};
            rc = pend_digest(L, p, &ct.bytes);
        }
    }
    log_iter_free(&it);
    buf_free(&ct.bytes);
    return rc;
}

/* Write the records scan_head found pending or torn (a crash came before
 * a group's rewrite reached the disk): each one's hash links to the one
 * before, as the writer computed them; a complete one among them must
 * already hold exactly that. */
static int fill_pending(local *L, chain_scan *sc)
{
    uint8_t h[32], data[CHAIN_DATA_SIZE], rec_bytes[CHAIN_REC_SIZE];
    if (sc->complete)
        chain_hash(sc->data, h);
    else
        memset(h, 0, 32);
    /* All computed and judged first: damage leaves the log untouched. */
    for (size_t i = 0; i < sc->npend; i++) {
        chain_pend *p = &sc->pend[i];
        if (p->empty)
            return damaged_after(p->loc, "a pending chain record has no commit of its own");
        memcpy(data, h, 32);
        memcpy(data + 32, p->digest, 32);
        if (p->complete && memcmp(data, p->data, sizeof data) != 0) {
            char what[160];
            snprintf(what, sizeof what, "commit %llu's chain record (complete, after a pending "
                     "one) does not match its commit and the hash before it",
                     (unsigned long long)p->seq);
            return damaged_after(p->loc, what);
        }
        memcpy(p->data, data, sizeof data);
        chain_hash(data, h);
    }
    for (size_t i = 0; i < sc->npend; i++) {
        chain_pend *p = &sc->pend[i];
        if (!p->complete) {
            rec_encode_body(rec_bytes, REC_CHAIN, p->trailing ? REC_CHAIN_TRAILING : 0, "", 0,
                            p->data, sizeof p->data, NULL, 0, p->position, p->seq, p->created);
            log_seg *s = L->lg->segs[loc_seg(p->loc)];
            /* An appended record takes the room its group's write had
             * planned for it; in a segment file cut short (by hand, or a
             * file system that lost its end) the write extends the file,
             * as the seal after it will (local.c, seal). */
            int w = os_write_full(s->fd, rec_bytes, sizeof rec_bytes, loc_off(p->loc));
            if (w)
                return err_set(STELE_EIO, "write a pending chain record: %s", strerror(-w));
            if (p->append && loc_off(p->loc) + CHAIN_REC_SIZE > s->size)
                s->size = loc_off(p->loc) + CHAIN_REC_SIZE; /* no reader yet: open */
            if (p->append) {
                STELE_ASSERT(p->loc == L->ck.loc);
                L->ck.loc = p->loc + CHAIN_REC_SIZE;
                L->ck.log_bytes += CHAIN_REC_SIZE;
                sc->found = sc->trailing = 1;
                sc->followed = 0;
                sc->loc = p->loc;
                sc->seq = p->seq;
                sc->position = p->position;
            }
        }
        memcpy(sc->data, p->data, sizeof p->data);
        sc->complete = 1;
    }
    if (sc->npend) {
        log_seg *s = L->lg->segs[loc_seg(sc->pend[0].loc)];
        int w = os_io->fdatasync(s->fd);
        if (w)
            return err_set(STELE_EIO, "write a pending chain record: %s", strerror(-w));
    }
    return 0;
}

void chain_close(local *L)
{
    chain_state *cs = &L->chain;
    if (cs->hasher_started) {
        pthread_mutex_lock(&cs->hmu);
        cs->hstop = 1;
        pthread_cond_signal(&cs->hcv);
        pthread_mutex_unlock(&cs->hmu);
        pthread_join(cs->hasher, NULL);
        cs->hasher_started = 0;
        pthread_mutex_destroy(&cs->hmu);
        pthread_cond_destroy(&cs->hcv);
        pthread_cond_destroy(&cs->wcv);
    }
    EVP_MD_CTX_free(cs->hctx);
    EVP_MD_CTX_free(cs->ctx);
    EVP_MD_free(cs->md);
    free(cs->jobs);
    cs->jobs = NULL;
    cs->hctx = cs->ctx = NULL;
    cs->md = NULL;
}

int chain_open(local *L)
{
    pthread_mutex_init(&L->chain.mu, NULL);
    L->chain.rewrite_max = rewrite_max_setting(&L->chain.rewrite_timed);
    L->chain.trailing = layout_setting();
    pthread_cond_init(&L->chain.pubcv, NULL);
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
    chain_scan sc = {0};
    for (;;) {
        if ((rc = scan_head(L, from, L->ck.loc, &sc))) {
            free(sc.pend);
            return rc;
        }
        /* The range starts with a pending or torn record (an anchor an
         * older writer put in its own group): the hash before it is
         * further back. */
        if (sc.first_pending && from != loc_make(L->lg->first_seg, 0)) {
            from = loc_make(L->lg->first_seg, 0);
            continue;
        }
        /* A chain record whose commit was torn away: recovery cut the
         * commit but not the record before it. Cut it too, and look again
         * (from the start if the range began with it: the head is an
         * earlier record). */
        if (!sc.found || sc.followed || sc.trailing || sc.loc + CHAIN_REC_SIZE != L->ck.loc)
            break;
        log_seg *s = L->lg->segs[loc_seg(sc.loc)];
        static const uint8_t zeros[CHAIN_REC_SIZE];
        int w = os_write_full(s->fd, zeros, sizeof zeros, loc_off(sc.loc));
        if (w == 0)
            w = os_io->fdatasync(s->fd);
        if (w) {
            free(sc.pend);
            return err_set(STELE_EIO, "cut a torn commit's chain record: %s", strerror(-w));
        }
        L->ck.loc = sc.loc;
        if (from >= sc.loc)
            from = loc_make(L->lg->first_seg, 0);
    }
    if (sc.found && (L->opts.flags & STELE_OPEN_NO_CHAIN)) {
        free(sc.pend);
        return err_set(STELE_EINVAL,
                       "store %s has a hash chain (%llu commits): it cannot be opened with "
                       "STELE_OPEN_NO_CHAIN",
                       L->dir, (unsigned long long)sc.seq + 1);
    }
    /* Chain records the crash left pending or torn: written now, so every
     * acknowledged commit is covered before the store takes appends. */
    rc = fill_pending(L, &sc);
    free(sc.pend);
    if (rc)
        return rc;
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
    L->chain.last_loc = sc.found ? sc.loc : UINT64_MAX;
    rc = anchor_put(L, txn, sc.found ? sc.loc : L->ck.loc);
    if (rc == 0)
        rc = idx_ckpt_put(L->ix, txn, &L->ck);
    if (rc == 0)
        rc = idx_commit_txn(txn);
    else
        mdb_txn_abort(txn);
    if (rc == 0)
        chain_publish(L);
    /* The hasher, when there is a chain to write. */
    if (rc == 0 && L->chain.on) {
        chain_state *cs = &L->chain;
        if (!(cs->hctx = EVP_MD_CTX_new()))
            return err_set(STELE_ENOMEM, "out of memory");
        pthread_mutex_init(&cs->hmu, NULL);
        pthread_cond_init(&cs->hcv, NULL);
        pthread_cond_init(&cs->wcv, NULL);
        if (pthread_create(&cs->hasher, NULL, hasher_main, L) != 0) {
            pthread_mutex_destroy(&cs->hmu);
            pthread_cond_destroy(&cs->hcv);
            pthread_cond_destroy(&cs->wcv);
            return err_set(STELE_EINTERNAL, "cannot start the hash chain's hasher thread");
        }
        cs->hasher_started = 1;
        pthread_setname_np(cs->hasher, "stele-hasher");
    }
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
    int have, open;       /* the chain has begun; a leading record awaits its commit */
    uint64_t seq, at;     /* the newest record's number and location */
    uint8_t data[CHAIN_DATA_SIZE];
    uint8_t prev[32];     /* the hash the next record must name */
    int prev_known;       /* 0 after a pending record whose commit is gone */
    uint32_t left;        /* records of the current commit still to come */
    int unclaimed;        /* `bytes` is a whole commit no record owns yet */
    uint64_t commit_at;   /* the current commit's first record */
    buf bytes;            /* the current commit's records */
    uint64_t commits, unchained, removed;
    int pending;          /* the newest record is pending or torn */
    uint64_t npending;    /* pending or torn records so far (and commits
                           * awaiting a trailing record torn away) */
    int64_t pend_created; /* the last one's group time */
} chain_walk;

/* The newest chain record's commit is `bytes` (have 1) or absent. */
static int close_commit(chain_walk *w, logf *lg, int have, int trailing)
{
    w->open = 0;
    if (!have) {
        if (!log_seg_scavenged(lg, loc_seg(w->at)))
            return broken(w->seq, w->at, trailing ? "its chain record does not follow its commit"
                                                  : "its chain record is not followed by its "
                                                    "commit");
        w->removed++;
        return 0;
    }
    uint8_t d[32];
    SHA256(w->bytes.p, w->bytes.len, d);
    if (w->pending) {
        /* Nothing to compare with until open writes its record; the chain
         * goes on with the hash open will write (w->data holds its prev),
         * so a complete record after it still proves it. */
        memcpy(w->data + 32, d, 32);
        chain_hash(w->data, w->prev);
        w->prev_known = 1;
        return 0;
    }
    if (memcmp(d, w->data + 32, 32) != 0)
        return broken(w->seq, w->commit_at,
                      "the commit's records do not match the digest in its chain record");
    return 0;
}

/* A commit no record owned, now that something else comes: before the
 * chain began it is one of the unchained commits; after, damage. */
static int drop_unclaimed(chain_walk *w)
{
    if (!w->unclaimed)
        return 0;
    w->unclaimed = 0;
    if (w->have)
        return broken(w->seq + 1, w->commit_at,
                      "a commit without a chain record after the chain began");
    w->unchained++;
    return 0;
}

/* The chain record r at `at` (pending or torn: flags REC_CHAIN_PENDING;
 * before or after its commit: REC_CHAIN_TRAILING). */
static int walk_chain_rec(chain_walk *w, logf *lg, const rec *r, uint64_t at)
{
    int rc;
    int trailing = (r->flags & REC_CHAIN_TRAILING) != 0;
    if (w->left)
        return broken(w->seq, at, "a chain record inside a commit");
    /* A leading record before this one that never got its commit. */
    if (w->open && (rc = close_commit(w, lg, 0, 0)))
        return rc;
    int own = trailing && w->unclaimed;
    if (own)
        w->unclaimed = 0;
    else if ((rc = drop_unclaimed(w)))
        return rc;
    int pending = (r->flags & REC_CHAIN_PENDING) != 0;
    if (!w->have && (r->revision != 0 || (!pending && memcmp(r->data, zero32, 32) != 0)))
        return broken(r->revision, at, "the first chain record does not start the chain");
    if (w->have && r->revision != w->seq + 1)
        return broken(r->revision, at, "commit numbers skip");
    /* After a pending or torn record only its own group's records can be
     * complete (local_chain.c, "Open after a crash"). */
    if (!pending && w->npending && r->created_us != w->pend_created)
        return broken(r->revision, at, "a complete chain record of a later group after a "
                                       "pending one");
    if (pending) {
        /* Left by a crash before the group's rewrite reached the disk: the
         * next open writes it from the commit's bytes. */
        if (w->have)
            memcpy(w->data, w->prev, 32);
        else
            memset(w->data, 0, 32);
        w->prev_known = 0;
        w->npending++;
        w->pend_created = r->created_us;
    } else {
        if (w->have && (!w->prev_known || memcmp(r->data, w->prev, 32) != 0))
            return broken(r->revision, at,
                          "its previous hash is not the hash of the commit before it");
        memcpy(w->data, r->data, CHAIN_DATA_SIZE);
        chain_hash(r->data, w->prev);
        w->prev_known = 1;
        w->commits++;
    }
    w->pending = pending;
    w->have = 1;
    w->seq = r->revision;
    w->at = at;
    if (trailing)
        return close_commit(w, lg, own, 1);
    w->open = 1;
    return 0;
}

/* A record of a commit (not a chain record or a seal). */
static int walk_commit_rec(chain_walk *w, logf *lg, const rec *r, uint64_t at, const uint8_t *raw)
{
    int rc;
    if (w->left == 0) {
        if ((rc = drop_unclaimed(w)))
            return rc;
        w->left = r->commit_count;
        w->bytes.len = 0;
        w->commit_at = at;
    }
    if ((rc = buf_append(&w->bytes, raw, r->len)))
        return rc;
    if (--w->left)
        return 0;
    if (w->open)
        return close_commit(w, lg, 1, 0);
    w->unclaimed = 1; /* a trailing record's, or before the chain */
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
        if (st < 0 && step_torn(&it, st, at, UINT64_MAX, &r) < 0) {
            /* The log walk before this one judged the store sound, stepping
             * over any chain record with a bad checksum (event readers do):
             * a torn one outside the last segment is damage; anything else
             * is the torn tail the next open cuts. */
            uint8_t p[CHAIN_REC_SIZE];
            int chainlike = log_read(lg, at, p, sizeof p) == 0 && rec_chain_torn(p, sizeof p);
            err_clear();
            if (chainlike) {
                rc = broken(ld64(p + 32), at, "its chain record's checksum fails where no "
                                              "rewrite can have been torn");
                break;
            }
            torn = 1;
            break;
        }
        if (st == LOG_ITER_END)
            break;
        if (r.kind == REC_SEAL) {
            if (w.npending) {
                rc = broken(w.seq, at, "a sealed segment ends in a pending chain record's group");
                break;
            }
            if (w.open && (rc = close_commit(&w, lg, 0, 0)))
                break;
            if ((rc = drop_unclaimed(&w)))
                break;
            continue;
        }
        if (r.kind == REC_CHAIN) {
            if ((rc = walk_chain_rec(&w, lg, &r, at)))
                break;
            continue;
        }
        if ((rc = walk_commit_rec(&w, lg, &r, at, it.raw)))
            break;
    }
    log_iter_free(&it);
    /* An open leading record at the end lost its commit to a torn write
     * (cut at the next open): not damage. A commit at the end without its
     * trailing record lost that record to a torn write: the next open
     * writes it. */
    if (rc == 0 && w.open && !w.left && !torn && !log_seg_scavenged(lg, loc_seg(w.at))) {
        if (w.pending)
            w.npending--;
        else
            w.commits--;
    }
    if (rc == 0 && w.unclaimed) {
        if (w.have)
            w.npending++;
        else
            w.unchained++;
    }
    buf_free(&w.bytes);
    if (rc == 0 && note_len) {
        size_t n = strlen(note);
        if (!w.have)
            snprintf(note + n, note_len - n, "hash chain: none yet (%llu commits before it)\n",
                     (unsigned long long)w.unchained);
        else if (!w.npending)
            snprintf(note + n, note_len - n,
                     "hash chain: %llu commits verified (%llu removed by scavenging, checked by "
                     "digest), %llu older commits before the chain began\n",
                     (unsigned long long)w.commits, (unsigned long long)w.removed,
                     (unsigned long long)w.unchained);
        else
            snprintf(note + n, note_len - n,
                     "hash chain: %llu commits verified (%llu removed by scavenging, checked by "
                     "digest), %llu older commits before the chain began; %llu commits await "
                     "their chain record (a crash came before it was written; the next open "
                     "writes it)\n",
                     (unsigned long long)w.commits, (unsigned long long)w.removed,
                     (unsigned long long)w.unchained, (unsigned long long)w.npending);
    }
    return rc;
}

/* ------------------------------------------------------------ head, export */

/* The head and the end of the log it covers, read together (an export
 * reading the end apart could take in a group published in between and
 * count more commits than its head). */
static void head_get(local *L, stele_chain_head *out, uint64_t *end)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&L->chain.mu);
    /* Every acknowledged group's chain records (chain_group_done). */
    while (L->chain.on && L->chain.pub_groups < atomic_load(&L->n_groups))
        pthread_cond_wait(&L->chain.pubcv, &L->chain.mu);
    out->commits = L->chain.pub_seq;
    out->position = L->chain.pub_pos;
    memcpy(out->hash, L->chain.pub_hash, 32);
    *end = L->chain.pub_end;
    pthread_mutex_unlock(&L->chain.mu);
}

int local_chain_head(backend *b, stele_chain_head *out)
{
    uint64_t end;
    head_get((local *)b, out, &end);
    return 0;
}

void chain_wait_rewritten(local *L, uint64_t end)
{
    /* pub_end passes a group's end when its records are rewritten and its
     * head published; an appender, and the index checkpoint, see the group
     * before that. After a storage fault nothing more is published: the
     * wait is rechecked every 50 ms and ends. */
    pthread_mutex_lock(&L->chain.mu);
    while (L->chain.on && L->chain.pub_end < end && !atomic_load(&L->fault)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&L->chain.pubcv, &L->chain.mu, &ts);
    }
    pthread_mutex_unlock(&L->chain.mu);
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

/* One commit of an export, in chain order: its records while the export
 * has not passed `to` (NULL when removed by scavenging or past it), its
 * digest, and for the first the hash before it. */
static int export_one(int (*fn)(void *ctx, uint64_t seq, const uint8_t *bytes, size_t n,
                                const uint8_t digest[32]),
                      void *ctx, uint64_t seq, const uint8_t *bytes, size_t n,
                      const uint8_t digest[32], const uint8_t rprev[32], uint64_t cpos,
                      uint64_t to, int *past, int *any, uint64_t *first_seq, uint8_t prev[32],
                      uint64_t *next_seq, uint64_t *total)
{
    if (!*any) {
        *first_seq = seq;
        memcpy(prev, rprev, 32);
        *any = 1;
    } else if (seq != *next_seq) {
        return err_set(STELE_ECORRUPT, "hash chain: commit %llu follows commit %llu",
                       (unsigned long long)seq, (unsigned long long)(*next_seq - 1));
    }
    int with = !*past && n;
    *total += with ? n * 4 / 3 + 16 : 80;
    if (*total > CHAIN_EXPORT_MAX)
        return err_set(STELE_ETOOBIG, "the export would pass %llu MiB: export a smaller range, "
                       "or later events", (unsigned long long)(CHAIN_EXPORT_MAX >> 20));
    int rc = fn(ctx, seq, with ? bytes : NULL, with ? n : 0, digest);
    if (rc)
        return rc;
    *past |= cpos > to;
    *next_seq = seq + 1;
    return 0;
}

int local_chain_export(backend *b, uint64_t from, uint64_t to,
                       int (*fn)(void *ctx, uint64_t seq, const uint8_t *bytes, size_t n,
                                 const uint8_t digest[32]),
                       void *ctx, uint64_t *first_seq, uint8_t prev[32], stele_chain_head *head)
{
    local *L = (local *)b;
    uint64_t end;
    head_get(L, head, &end);
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
    /* Where the walk starts: the commit's leading chain record, or the
     * commit itself when a trailing record follows it ("Trailing records"). */
    uint64_t start = loc;
    if (loc_off(loc) >= SEG_HEADER_SIZE + CHAIN_REC_SIZE &&
        log_read(L->lg, loc - CHAIN_REC_SIZE, hdr, sizeof hdr) == 0 && hdr[8] == REC_CHAIN &&
        !(hdr[9] & REC_CHAIN_TRAILING))
        start = loc - CHAIN_REC_SIZE;
    err_clear();
    log_iter it;
    log_iter_init(&it, L->lg, start, end);
    it.chain = 1;
    buf bytes = {0};
    /* lead: a leading record awaiting its commit; have: `bytes` is a whole
     * commit no record owns yet (a trailing record's); left: records of the
     * current commit still to come. */
    int lead = 0, have = 0, any = 0, past = 0;
    uint32_t left = 0;
    uint64_t lseq = 0, lpos = 0, total = 0, next_seq = 0;
    uint8_t ldigest[32], lprev[32];
    for (;;) {
        uint64_t at;
        int short_tail;
        int st = log_iter_next(&it, &r, &at, &short_tail);
        if (st < 0) {
            rc = st;
            break;
        }
        if (st == LOG_ITER_END) {
            if (lead)
                rc = export_one(fn, ctx, lseq, NULL, 0, ldigest, lprev, lpos, to, &past, &any,
                                first_seq, prev, &next_seq, &total);
            lead = 0;
            break;
        }
        if (r.kind == REC_CHAIN && (r.flags & REC_CHAIN_PENDING)) {
            /* Cannot be: the head is published after the records it covers
             * are written (chain_group_done). */
            rc = err_set(STELE_ECORRUPT, "hash chain: commit %llu's chain record is pending "
                         "below the head", (unsigned long long)r.revision);
            break;
        }
        if (r.kind == REC_CHAIN) {
            if (left) {
                rc = err_set(STELE_ECORRUPT, "hash chain: commit %llu's chain record is inside "
                             "a commit", (unsigned long long)r.revision);
                break;
            }
            /* A leading record before this one whose commit was removed. */
            if (lead && (rc = export_one(fn, ctx, lseq, NULL, 0, ldigest, lprev, lpos, to, &past,
                                         &any, first_seq, prev, &next_seq, &total)))
                break;
            lead = 0;
            if (r.flags & REC_CHAIN_TRAILING) {
                int with = have;
                have = 0;
                if (!any && !with) /* the walk starts at its commit */
                    continue;
                if ((rc = export_one(fn, ctx, r.revision, with ? bytes.p : NULL,
                                     with ? bytes.len : 0, r.data + 32, r.data, r.position, to,
                                     &past, &any, first_seq, prev, &next_seq, &total)))
                    break;
                continue;
            }
            if (!any && have) /* the commit before the chain began */
                break;
            have = 0;
            lead = 1;
            lseq = r.revision;
            lpos = r.position;
            memcpy(lprev, r.data, 32);
            memcpy(ldigest, r.data + 32, 32);
            continue;
        }
        if (!any && have) /* the commit of `from` has no chain record */
            break;
        if (r.kind == REC_SEAL) {
            have = 0;
            continue;
        }
        if (left == 0) {
            left = r.commit_count;
            bytes.len = 0;
            have = 0;
        }
        if ((rc = buf_append(&bytes, it.raw, r.len)))
            break;
        if (--left)
            continue;
        if (lead) {
            lead = 0;
            if ((rc = export_one(fn, ctx, lseq, bytes.p, bytes.len, ldigest, lprev, lpos, to,
                                 &past, &any, first_seq, prev, &next_seq, &total)))
                break;
        } else {
            have = 1;
        }
    }
    log_iter_free(&it);
    buf_free(&bytes);
    if (rc == 0 && !any)
        rc = err_set(STELE_ENOTFOUND, "the event at position %llu was written before the hash "
                     "chain began", (unsigned long long)from);
    if (rc == 0 && next_seq != head->commits)
        rc = err_set(STELE_ECORRUPT, "hash chain: the log holds %llu commits up to the head, "
                     "which names %llu", (unsigned long long)next_seq,
                     (unsigned long long)head->commits);
    return rc;
}
