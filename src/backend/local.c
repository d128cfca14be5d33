/*
 * local.c - the local storage engine: a segmented log (src/log) plus LMDB
 * indexes (src/index), with one writer thread doing group commit.
 *
 * Appends. A caller thread validates its append (src/store), puts a request
 * on the queue and sleeps on a futex. The writer thread takes every queued
 * request at once (a group), and in one LMDB write transaction:
 *   1. plans each request in order: checks the tombstone, idempotency and
 *      expected revision against the index (which already holds the effect
 *      of the requests before it in the group), assigns revisions and
 *      positions, records the new stream state and event ids;
 *   2. encodes the accepted requests' records into one buffer (rolling to a
 *      new segment first if they do not fit), records where each commit
 *      landed and the checkpoint;
 *   3. writes the buffer with one pwrite and one fdatasync (a large
 *      group's fdatasync runs on the syncer thread while the writer puts
 *      the group's secondary index entries and folds its hash chain:
 *      "Overlap" below);
 *   4. commits the LMDB transaction (not fsynced: the log is the truth),
 *      always after the fdatasync returned: readers take visibility from
 *      the index, so it never shows a group that is not durable;
 *   5. publishes the new end of the log (store-release) and completes
 *      every request of the group (local_wake.c: by default one
 *      FUTEX_WAKE for all its waiting appenders; STELE_WAKE=relay
 *      hands the wake-ups on to the first woken);
 *   6. then signals the commit to subscribers (watch fds, wait_commit):
 *      after the acknowledgements, so that an acknowledgement (an HTTP
 *      answer sent from the callback) does not wait behind those wake-ups.
 * Checks and writes are therefore serialised without locks, and one fsync
 * covers the whole group.
 *
 * Faults are sticky: if a write, an fdatasync or an index commit fails, the
 * group's requests fail, nothing of it is acknowledged, and every later
 * append fails with STELE_EREADONLY until the store is reopened (and
 * recovered). An fsync is never retried.
 *
 * Running out of space is not a fault. Space is taken ahead of the data:
 * a whole zero-filled segment (log.c) and the index's headroom
 * (idx_reserve). When either cannot be had (STELE_ENOSPC), nothing of the
 * group was written: its requests fail with STELE_ENOSPC, the store reports
 * itself read-only for lack of space (`nospace`, with the reason), and the
 * next group tries again, so appends resume by themselves once space is
 * freed. A failed preallocation leaves no partial file (log.c), zeros are
 * written only when statvfs shows room for them, and while the store is
 * out of space a new attempt is made at most once a second
 * (NOSPACE_RETRY_MS). The segment to write into may thus be missing: after
 * a roll whose seal was written but whose next segment could not be made,
 * or when open found a sealed log and no room (local_recover.c), ck.loc is
 * offset 0 of a segment that does not exist yet, and the next group makes
 * it and writes its header with the group's records. A write or fsync
 * failing with ENOSPC inside an already preallocated segment is a fault
 * like any other (sticky).
 *
 * Reads run in the caller's thread with an LMDB read transaction (MVCC: the
 * writer never waits for them) and pread(2) of the segments; they ignore
 * anything at or past the published position, so a reader never sees part
 * of a group.
 *
 * Recovery (open). The file stele.lock is flocked while the store is open
 * and says "open <boot id>" until a clean close writes "closed". LMDB
 * transactions are not fsynced, so:
 *   - clean close, or a crash of the process (same boot id): the index is
 *     consistent with a prefix of the log; replay the log from its
 *     checkpoint;
 *   - the machine crashed while the store was open (other boot id): the
 *     index may have lost writes in any order; go back to its last durable
 *     checkpoint and replay the log after it, or rebuild it from the log
 *     (local_ckpt.c, index_durable.c).
 * Replaying stops at the end of the written data. An incomplete commit
 * there (a torn write) is cut off; a damaged record with valid records after
 * it is damage and open fails with its segment and offset.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "backend/expect.h"
#include "backend/local_int.h"
#include "log/record.h"
#include "os/os.h"
#include "util/assert.h"

/* Waiting callers and how the writer wakes them: local_wake.c (by default
 * one FUTEX_WAKE per group; relay hands the wake-ups on). */

static int req_fail(wreq *r, int rc)
{
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
    return rc;
}

/* ------------------------------------------------------------ stream state */

static uint64_t visible_rev(const idx_stream *st, int found)
{
    if (!found || (st->flags & IDX_DELETED) || st->last_rev == UINT64_MAX)
        return STELE_NONE;
    return st->last_rev;
}

static int wrong_rev(wreq *r, uint64_t cur)
{
    r->current = cur;
    r->res.current_revision = cur;
    return req_fail(r, expect_wrong_rev(r->stream, r->stream_len, r->expected, cur));
}

/* -------------------------------------------------------------- planning */

/* Is this append a retry of one already written? Returns 1 (r filled with
 * the original result), 0 (not a retry), or < 0 (error set in r). */
/* Is this append a retry of one already written? Returns 1 when it is
 * settled (r holds the original result, or an id conflict), 0 when it is
 * not a retry, or a negative code when the index itself failed. */
static int check_retry(local *L, MDB_txn *txn, wreq *r, int found)
{
    const append_args *a = r->a;
    char idt[37];
    uint64_t sid, rev, pos;
    if (a->made[0])
        goto others;
    int rc = idx_id_get(L->ix, txn, a->ids[0], &sid, &rev, &pos);
    if (rc == STELE_ENOTFOUND)
        goto others;
    if (rc)
        return rc; /* the index failed: a storage fault */
    stele_uuid_format(a->ids[0], idt);
    if (!found || sid != r->st.sid) {
        err_set(STELE_EIDCONFLICT, "event id %s was already written to another stream", idt);
        req_fail(r, STELE_EIDCONFLICT);
        return 1;
    }
    /* Only an exact expected revision pins where the retry must sit; for
     * any / no_stream / stream_exists the original may be anywhere in the
     * stream (it was written under the same condition, now no longer true). */
    uint64_t want = r->expected >= 0 ? (uint64_t)r->expected + 1 : rev;
    if (rev != want) {
        err_set(STELE_EIDCONFLICT,
                "event id %s was already written at revision %llu of '%.*s', not where this "
                "append's expected revision puts it",
                idt, (unsigned long long)rev, (int)r->stream_len, r->stream);
        req_fail(r, STELE_EIDCONFLICT);
        return 1;
    }
    /* The original append must have been exactly these events. */
    idx_rev_cursor cur = {0};
    idx_commit orig;
    int g0 = idx_rev_open(L->ix, txn, sid, &cur);
    if (g0 == 0)
        g0 = idx_rev_seek(&cur, rev, 0, &orig);
    idx_rev_close(&cur);
    if (g0 && g0 != STELE_ENOTFOUND)
        return g0;
    if (g0 || orig.first_rev != rev || orig.count != a->n) {
        err_set(STELE_EIDCONFLICT,
                "event id %s was already written at revision %llu of '%.*s' by an append that "
                "this one does not repeat exactly",
                idt, (unsigned long long)rev, (int)r->stream_len, r->stream);
        req_fail(r, STELE_EIDCONFLICT);
        return 1;
    }
    uint64_t last_pos = pos;
    uint64_t *poss = malloc(a->n * sizeof *poss);
    if (!poss)
        return err_set(STELE_ENOMEM, "out of memory");
    poss[0] = pos;
    for (size_t i = 1; i < a->n; i++) {
        uint64_t s2, r2, p2;
        int g = a->made[i] ? STELE_ENOTFOUND : idx_id_get(L->ix, txn, a->ids[i], &s2, &r2, &p2);
        if (g && g != STELE_ENOTFOUND) {
            free(poss);
            return g;
        }
        if (g || s2 != sid || r2 != rev + i) {
            free(poss);
            err_set(STELE_EIDCONFLICT,
                    "event id %s was already written at revision %llu of '%.*s', but event %zu "
                    "of this append does not repeat that append",
                    idt, (unsigned long long)rev, (int)r->stream_len, r->stream, i);
            req_fail(r, STELE_EIDCONFLICT);
        return 1;
        }
        last_pos = poss[i] = p2;
    }
    /* The ids say retry; the events must say so too (local_retry.c). */
    int same = retry_compare(L, r, sid, &orig, poss);
    free(poss);
    if (same)
        return same;
    r->res.first_revision = rev;
    r->res.last_revision = rev + a->n - 1;
    r->res.first_position = pos;
    r->res.last_position = last_pos;
    r->res.idempotent = 1;
    r->rc = 0;
    return 1;
others:
    for (size_t i = a->made[0] ? 0 : 1; i < a->n; i++) {
        if (a->made[i])
            continue;
        int g = idx_id_get(L->ix, txn, a->ids[i], &sid, &rev, &pos);
        if (g == STELE_ENOTFOUND)
            continue;
        if (g)
            return g;
        stele_uuid_format(a->ids[i], idt);
        err_set(STELE_EIDCONFLICT, "event %zu: id %s was already written (position %llu)", i, idt,
                (unsigned long long)pos);
        req_fail(r, STELE_EIDCONFLICT);
        return 1;
    }
    return 0;
}

/* The exact bytes of an append's records once its first position and
 * revision are known (a compact record's varints depend on them; the API
 * edge's append_rec_bytes is the budget). */
static uint64_t append_rec_bytes_at(const append_args *a, uint64_t pos, uint64_t rev)
{
    uint64_t n = 0;
    rec_share sh; /* stream and types shared within the commit (record.h) */
    rec_share_init(&sh);
    uint32_t sb, tb;
    for (size_t i = 0; i < a->n; i++) {
        const stele_event_in *e = &a->events[i];
        n += rec_share_next(&sh, a->stream, a->stream_len, e->type, e->tags, e->ntags,
                            e->data_len, e->metadata_len, (uint32_t)a->n, (uint32_t)i, pos + i,
                            rev + i, &sb, &tb);
    }
    return n;
}

/* Plan one request inside the group's transaction. A request that fails
 * its checks gets its error and 0 is returned; on acceptance it records the
 * new stream state, ids and commit and advances the next position. A
 * negative return is a failure of the index itself: the group's
 * transaction is then unusable and the whole group fails (a storage
 * fault), so no position is ever skipped. */
static int plan(local *L, MDB_txn *txn, wreq *r)
{
    if (r->op == OP_METADATA || r->op == OP_SNAPSHOT)
        return sm_plan(L, txn, r); /* local_streams.c */
    if (r->op == OP_MULTI)
        return multi_plan(L, txn, r); /* local_multi.c */
    int rc = idx_stream_get(L->ix, txn, r->stream, r->stream_len, &r->st);
    if (rc && rc != STELE_ENOTFOUND)
        return rc;
    int found = rc == 0;
    rc = 0;
    if (found && (r->st.flags & IDX_TOMBSTONED)) {
        err_set(STELE_EDELETED, "stream '%.*s' is tombstoned", (int)r->stream_len, r->stream);
        req_fail(r, STELE_EDELETED);
        return 0;
    }
    uint64_t cur = visible_rev(&r->st, found);
    if (!found) {
        memset(&r->st, 0, sizeof r->st);
        r->st.last_rev = r->st.last_pos = UINT64_MAX;
    }
    if (r->op == OP_APPEND) {
        int retry = check_retry(L, txn, r, found);
        if (retry)
            return retry < 0 ? retry : 0;
        /* Recreating a soft-deleted stream also accepts its last revision
         * as the exact expected one (KurrentDB's rule). */
        int recreate = found && (r->st.flags & IDX_DELETED) && r->expected >= 0 &&
                       r->st.last_rev != UINT64_MAX && (uint64_t)r->expected == r->st.last_rev;
        if (!recreate && !expect_ok(r->expected, cur)) {
            wrong_rev(r, cur);
            return 0;
        }
        const append_args *a = r->a;
        uint64_t first_rev = r->st.last_rev == UINT64_MAX ? 0 : r->st.last_rev + 1;
        r->res.first_revision = first_rev;
        r->res.last_revision = first_rev + a->n - 1;
        r->res.first_position = L->ck.next_pos;
        r->res.last_position = L->ck.next_pos + a->n - 1;
        L->ck.next_pos += a->n;
        r->bytes = append_rec_bytes_at(a, r->res.first_position, first_rev);
        r->st.last_rev = r->res.last_revision;
        r->st.last_pos = r->res.last_position;
        r->st.flags &= ~IDX_DELETED;
    } else {
        if (r->op == OP_DELETE && cur == STELE_NONE) {
            err_set(STELE_ENOTFOUND, "stream '%.*s' %s", (int)r->stream_len, r->stream,
                    found ? "is already deleted" : "does not exist");
            req_fail(r, STELE_ENOTFOUND);
            return 0;
        }
        int was_last = found && (r->st.flags & IDX_DELETED) && r->expected >= 0 &&
                       r->st.last_rev != UINT64_MAX && (uint64_t)r->expected == r->st.last_rev;
        if (!was_last && !expect_ok(r->expected, cur)) {
            wrong_rev(r, cur);
            return 0;
        }
        if (r->op == OP_DELETE) {
            r->st.truncate_before = r->st.last_rev + 1;
            r->st.flags |= IDX_DELETED;
        } else {
            r->st.flags |= IDX_TOMBSTONED;
        }
        r->current = cur;
    }
    if (!found) {
        r->st.sid = L->ck.next_sid++;
        L->ck.streams++;
        r->new_stream = 1;
    }
    int client_ids = 0;
    if (r->op == OP_APPEND) {
        /* Index the client-given ids (later requests of the group see them). */
        const append_args *a = r->a;
        for (size_t i = 0; i < a->n && rc == 0; i++)
            if (!a->made[i]) {
                client_ids = 1;
                rc = idx_id_put(L->ix, txn, a->ids[i], r->st.sid, r->res.first_revision + i,
                                r->res.first_position + i);
            }
    }
    if (rc == 0)
        rc = idx_stream_put(L->ix, txn, r->stream, r->stream_len, &r->st);
    if (rc == 0 && r->op != OP_APPEND)
        rc = sm_on_remove(L, txn, &r->st); /* the snapshots it hides */
    if (rc == 0 && r->op != OP_APPEND)
        rc = rm_plan(L, txn, r); /* its `$deletes` event (local_removes.c) */
    if (rc == 0 && r->op == OP_APPEND && client_ids) {
        /* The commit's entry, so a retry later in this same group is
         * recognised; write_group() fills in where it lands. A retry is
         * found only through a client-given id (the ids table holds no
         * other), so an append without one gets its entry only there: one
         * LMDB put per append less. */
        idx_commit c = {r->st.sid, r->res.first_revision, 0, r->res.first_position,
                        (uint32_t)r->a->n, 0};
        rc = idx_commit_put(L->ix, txn, &c);
    }
    if (rc)
        return rc;
    r->accepted = 1;
    return 0;
}

/* ------------------------------------------------------------ the writer */

static void set_fault(local *L, int rc)
{
    if (atomic_load(&L->fault))
        return;
    snprintf(L->fault_msg, sizeof L->fault_msg, "%s", stele_errmsg());
    atomic_store(&L->fault, rc ? rc : STELE_EIO);
}

static uint64_t seal_size(void) { return rec_marker_size(0); }

/* ------------------------------------------------------------ the syncer */

/*
 * Overlap (issue 21 item 2). A group's fdatasync is the longest step of the
 * writer's turn, and the CPU work that needs only the group's bytes (the
 * secondary index entries, idx_sec_commit; the hash chain's digests and
 * fold, chain_group_fold) does not have to precede it. So for a group of
 * overlap_min bytes or more the writer hands the fdatasync to the syncer
 * thread right after the group's pwrite, does that work meanwhile (the
 * chain's fold only if the fdatasync is still running by then: otherwise
 * it stays after the acknowledgement, where it overlaps the appenders'
 * next requests), and then waits for the syncer: a lone appender of a
 * large commit waits max(fdatasync, index + hash) instead of their sum. Everything else keeps
 * its order: the LMDB transaction is committed only after the fdatasync
 * returned (so readers, durable index checkpoints and recovery never see a
 * group that is not durable), the group is acknowledged after that, and the
 * chain records' rewrite still goes out after the acknowledgement (the
 * group's I/O is the same sequence of calls either way: the fault and crash
 * tests count them). A smaller group does all of it on the writer, as
 * before: handing over costs two futex wake-ups and a thread switch each
 * way (measured in docs/benchmarks.md, "Overlap"), more than a few events'
 * index entries and hashes. A failed fdatasync is reported by the writer
 * like its own (a sticky fault; the transaction is aborted).
 */
_Atomic uint64_t local_overlap_groups;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The writer's moving average of fdatasync times (1/8 weight per group). */
static void fsync_took(local *L, uint64_t ns)
{
    L->fsync_avg_ns = L->fsync_avg_ns - L->fsync_avg_ns / 8 + ns / 8;
}

static void *syncer_main(void *arg)
{
    local *L = arg;
    pthread_mutex_lock(&L->smu);
    for (;;) {
        while (!L->sync_busy && !L->sync_stop)
            pthread_cond_wait(&L->scv_go, &L->smu);
        if (!L->sync_busy)
            break;
        int fd = L->sync_fd;
        pthread_mutex_unlock(&L->smu);
        uint64_t t0 = mono_ns();
        int rc = os_io->fdatasync(fd);
        uint64_t ns = mono_ns() - t0;
        pthread_mutex_lock(&L->smu);
        L->sync_rc = rc;
        L->sync_ns = ns;
        L->sync_busy = 0;
        pthread_cond_signal(&L->scv_done);
    }
    pthread_mutex_unlock(&L->smu);
    return NULL;
}

static void sync_start(local *L, int fd)
{
    pthread_mutex_lock(&L->smu);
    STELE_ASSERT(!L->sync_busy);
    L->sync_fd = fd;
    L->sync_rc = 0;
    L->sync_busy = 1;
    pthread_cond_signal(&L->scv_go);
    pthread_mutex_unlock(&L->smu);
}

/* 1 while the syncer's fdatasync has not returned. */
static int sync_running(local *L)
{
    pthread_mutex_lock(&L->smu);
    int busy = L->sync_busy;
    pthread_mutex_unlock(&L->smu);
    return busy;
}

/* The fdatasync's result (0 or -errno). */
static int sync_wait(local *L)
{
    pthread_mutex_lock(&L->smu);
    while (L->sync_busy)
        pthread_cond_wait(&L->scv_done, &L->smu);
    int rc = L->sync_rc;
    uint64_t ns = L->sync_ns;
    pthread_mutex_unlock(&L->smu);
    fsync_took(L, ns);
    atomic_fetch_add_explicit(&local_overlap_groups, 1, memory_order_relaxed);
    return rc;
}

#define OVERLAP_MIN_DEFAULT 8192u
/* Below this average fdatasync time (a tmpfs, a disk with a
 * power-protected cache) there is nothing to hide behind: a hand-off costs
 * about 7 us of wall time here (docs/benchmarks.md, "Overlap"). */
#define OVERLAP_SYNC_MIN_NS 25000u

/* STELE_OVERLAP_MIN: group bytes from which the fdatasync is overlapped
 * (default OVERLAP_MIN_DEFAULT, and only while fdatasyncs take
 * OVERLAP_SYNC_MIN_NS or more on average; a number: that size, whatever
 * the fdatasyncs take; 0 every group; "off" none). */
static int syncer_start(local *L)
{
    const char *v = getenv("STELE_OVERLAP_MIN");
    L->overlap_min = OVERLAP_MIN_DEFAULT;
    L->overlap_timed = !(v && *v);
    L->fsync_avg_ns = 1000000; /* assume a disk until measured */
    if (v && *v) {
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        if (!strcmp(v, "off"))
            L->overlap_min = UINT64_MAX;
        else if (!*end)
            L->overlap_min = n;
    }
    if (L->overlap_min == UINT64_MAX)
        return 0;
    if (pthread_create(&L->syncer, NULL, syncer_main, L) != 0)
        return err_set(STELE_EINTERNAL, "cannot start the syncer thread");
    L->syncer_started = 1;
    pthread_setname_np(L->syncer, "stele-syncer");
    return 0;
}

static void syncer_stop(local *L)
{
    if (!L->syncer_started)
        return;
    pthread_mutex_lock(&L->smu);
    L->sync_stop = 1;
    pthread_cond_signal(&L->scv_go);
    pthread_mutex_unlock(&L->smu);
    pthread_join(L->syncer, NULL);
    L->syncer_started = 0;
}

/* ------------------------------------------------------------ no space */

#define NOSPACE_RETRY_MS 1000

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void local_set_nospace(local *L, const char *why)
{
    pthread_mutex_lock(&L->nospace_mu);
    snprintf(L->nospace_msg, sizeof L->nospace_msg,
             "no space for the log: %s; the store is read-only until space is freed (appends "
             "are tried again as they arrive)",
             why);
    atomic_store(&L->nospace, 1);
    pthread_mutex_unlock(&L->nospace_mu);
}

static void clear_nospace(local *L)
{
    if (atomic_load(&L->nospace))
        atomic_store(&L->nospace, 0);
}

/* STELE_ENOSPC with the store's no-space message. */
static int nospace_err(local *L)
{
    char msg[sizeof L->nospace_msg];
    pthread_mutex_lock(&L->nospace_mu);
    snprintf(msg, sizeof msg, "%s", L->nospace_msg);
    pthread_mutex_unlock(&L->nospace_mu);
    return err_set(STELE_ENOSPC, "%s", msg);
}

/* Make segment `segno` (missing: see "Running out of space") big enough for
 * `bytes` of records. 0, STELE_ENOSPC (nothing left behind; the store is
 * marked nospace), or another error (a fault). */
static int make_tail_segment(local *L, uint32_t segno, uint64_t bytes)
{
    uint64_t need = SEG_HEADER_SIZE + bytes + seal_size();
    char why[400];
    int64_t now = mono_ms();
    if (atomic_load(&L->nospace) && now - L->nospace_tried_ms < NOSPACE_RETRY_MS)
        return nospace_err(L);
    L->nospace_tried_ms = now;
    int rc = log_add_segment(L->lg, segno, need);
    if (rc == STELE_ENOSPC) {
        snprintf(why, sizeof why, "%.380s", stele_errmsg());
        local_set_nospace(L, why);
        return nospace_err(L);
    }
    if (rc == 0)
        clear_nospace(L);
    return rc;
}

/* Seal the current segment: the log continues at offset 0 of the next one
 * (made by make_tail_segment). */
static int seal(local *L, uint64_t seal_pos)
{
    uint32_t seg = loc_seg(L->ck.loc);
    log_seg *s = L->lg->segs[seg];
    uint8_t m[128];
    size_t n = rec_encode_marker(m, REC_SEAL, "", 0, seal_pos, UINT64_MAX, L->last_created);
    /* The seal goes at the end of the written data, inside the segment.
     * (Every group leaves room for it, but a segment file cut short by
     * hand or by a torn tail may end right there: the write extends it.) */
    STELE_ASSERT(n == seal_size() && loc_off(L->ck.loc) >= SEG_HEADER_SIZE &&
                 loc_off(L->ck.loc) <= s->size);
    int rc = os_write_full(s->fd, m, n, loc_off(L->ck.loc));
    if (rc == 0)
        rc = os_io->fdatasync(s->fd);
    if (rc) {
        char name[32];
        log_seg_name(seg, name);
        return err_set(rc == -ENOSPC ? STELE_ENOSPC : STELE_EIO, "seal segment %s: %s", name,
                       strerror(-rc));
    }
    L->ck.log_bytes += n;
    L->ck.loc = loc_make(seg + 1, 0);
    return 0;
}

/* ------------------------------------------------------- tail ring */

/* Note where a committed group starts (see local_int.h). A group in a new
 * segment empties the ring first, so every entry points into the segment
 * being written (never into one a scavenger may rewrite). */
static void tail_push(local *L, uint64_t position, uint64_t loc)
{
    pthread_mutex_lock(&L->tail_mu);
    if (L->tail_n && loc_seg(L->tail[(L->tail_first + L->tail_n - 1) % TAIL_GROUPS].loc) !=
                         loc_seg(loc))
        L->tail_n = 0;
    if (L->tail_n == TAIL_GROUPS) {
        L->tail_first = (L->tail_first + 1) % TAIL_GROUPS;
        L->tail_n--;
    }
    L->tail[(L->tail_first + L->tail_n) % TAIL_GROUPS] = (struct tail_group){position, loc};
    L->tail_n++;
    pthread_mutex_unlock(&L->tail_mu);
}

int tail_hint(local *L, uint64_t from, uint64_t *loc)
{
    int found = 0;
    pthread_mutex_lock(&L->tail_mu);
    if (L->tail_n && L->tail[L->tail_first].position <= from) {
        /* The last entry at or before `from` (positions increase). */
        unsigned lo = 0, hi = L->tail_n - 1;
        while (lo < hi) {
            unsigned mid = (lo + hi + 1) / 2;
            if (L->tail[(L->tail_first + mid) % TAIL_GROUPS].position <= from)
                lo = mid;
            else
                hi = mid - 1;
        }
        *loc = L->tail[(L->tail_first + lo) % TAIL_GROUPS].loc;
        found = 1;
    }
    pthread_mutex_unlock(&L->tail_mu);
    return found;
}

/* ------------------------------------------------------- notification */

/* After a group's index transaction committed (its events are readable):
 * wake subscribers sleeping in wait_commit() and signal every watch fd. */
static void notify_commit(local *L)
{
    atomic_fetch_add(&L->commit_gen, 1);
    if (atomic_load(&L->commit_sleepers))
        syscall(SYS_futex, &L->commit_gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    pthread_mutex_lock(&L->watch_mu);
    for (unsigned i = 0; i < L->nwatch; i++) {
        uint64_t one = 1;
        /* EAGAIN means the counter is already pending: nothing to add. */
        ssize_t n = write(L->watch_fds[i], &one, sizeof one);
        (void)n;
    }
    pthread_mutex_unlock(&L->watch_mu);
}

static uint32_t local_commit_gen(backend *b)
{
    return atomic_load(&((local *)b)->commit_gen);
}

static void local_wait_commit(backend *b, uint32_t gen, int timeout_ms)
{
    local *L = (local *)b;
    struct timespec ts, *tsp = NULL;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    /* The writer bumps the word before it looks for sleepers, and
     * FUTEX_WAIT returns at once if the word already moved on: no lost
     * wake-up. */
    atomic_fetch_add(&L->commit_sleepers, 1);
    if (atomic_load(&L->commit_gen) == gen)
        syscall(SYS_futex, &L->commit_gen, FUTEX_WAIT_PRIVATE, gen, tsp, NULL, 0);
    atomic_fetch_sub(&L->commit_sleepers, 1);
}

static int local_watch(backend *b, int *fd)
{
    local *L = (local *)b;
    int e = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e < 0)
        return err_set(STELE_EIO, "eventfd: %s", strerror(errno));
    pthread_mutex_lock(&L->watch_mu);
    int full = L->nwatch == sizeof L->watch_fds / sizeof L->watch_fds[0];
    if (!full)
        L->watch_fds[L->nwatch++] = e;
    pthread_mutex_unlock(&L->watch_mu);
    if (full) {
        close(e);
        return err_set(STELE_EINVAL, "too many watches (at most %zu per store)",
                       sizeof L->watch_fds / sizeof L->watch_fds[0]);
    }
    *fd = e;
    return 0;
}

static void local_unwatch(backend *b, int fd)
{
    local *L = (local *)b;
    int found = 0;
    pthread_mutex_lock(&L->watch_mu);
    for (unsigned i = 0; i < L->nwatch; i++)
        if (L->watch_fds[i] == fd) {
            L->watch_fds[i] = L->watch_fds[--L->nwatch];
            found = 1;
            break;
        }
    pthread_mutex_unlock(&L->watch_mu);
    if (found)
        close(fd);
}

/* ------------------------------------------------------------ group commit */

/* Nothing of the group was written for lack of space (not a fault): fail
 * with `rc` (STELE_ENOSPC, message set) its accepted requests, or all of
 * them before planning (`all`); idempotent retries planned as such keep
 * their original result. */
static void fail_nospace(wreq *group, int rc, int all)
{
    for (wreq *r = group; r; r = r->next)
        if (r->accepted || all) {
            r->accepted = 0;
            r->res.idempotent = 0;
            r->msg[0] = 0;
            req_fail(r, rc);
        }
}

/* The positions accepted request r was planned at continue the ones before
 * it in the group (*next, which starts at the checkpoint's next position):
 * no gap, no overlap. Advances *next past them. */
static void assert_positions(const wreq *r, uint64_t *next)
{
    uint64_t first = 0, n = 0;
    if (r->op == OP_APPEND)
        first = r->res.first_position, n = r->a->n;
    else if (r->op == OP_MULTI)
        first = r->mres.first_position, n = r->m->nrecords;
    else if (r->op == OP_DELETE || r->op == OP_TOMBSTONE)
        first = r->rm_pos, n = 1; /* its `$deletes` event */
    STELE_ASSERT(n == 0 || first == *next);
    *next += n;
}

/*
 * write_group() in steps, sharing one gwrite:
 *   group_begin    the index's headroom and the write transaction;
 *   group_plan     plan every request (plan()), sum the accepted bytes;
 *   group_place    the segment and offset the group goes to (sealing a
 *                  full segment, making the next one);
 *   group_encode   the records into L->gbuf and their index entries;
 *   group_durable  the checkpoint, one write, one fdatasync, the index
 *                  commit;
 *   group_publish  the new end of the log for readers and subscribers.
 * A step that ends the group early completes its requests itself
 * (group_begin, group_plan, group_place when there is no space: not
 * sticky); any other error goes back to write_group, which fails the
 * group as a storage fault (sticky).
 */
typedef struct gwrite {
    local *L;
    wreq *group;
    MDB_txn *txn;      /* NULL once committed */
    idx_ckpt before;   /* the checkpoint before the group (past a new seal) */
    int64_t now;       /* the group's created time */
    uint64_t bytes;    /* the accepted requests' records */
    log_seg *s;        /* where the group goes: segment, its number, offset */
    uint32_t seg;
    uint64_t write_off;
    int overlap;       /* the fdatasync goes to the syncer ("Overlap") */
} gwrite;

/* 1 to go on, or 0 when the group is over (every request failed). */
static int group_begin(gwrite *g)
{
    local *L = g->L;
    int rc = idx_reserve(L->ix);
    if (rc == STELE_ENOSPC) {
        char why[400];
        snprintf(why, sizeof why, "%.380s", stele_errmsg());
        local_set_nospace(L, why);
        fail_nospace(g->group, nospace_err(L), 1);
        return 0;
    }
    if (rc == 0)
        rc = idx_begin(L->ix, 0, &g->txn);
    if (rc) {
        set_fault(L, rc);
        for (wreq *r = g->group; r; r = r->next)
            req_fail(r, rc);
        return 0;
    }
    g->before = L->ck;
    /* No group is in flight: the checkpoint continues what readers saw. */
    STELE_ASSERT(g->before.next_pos ==
                 atomic_load_explicit(&L->pub_next_pos, memory_order_relaxed));
    g->now = time_now_us();
    if (g->now < L->last_created)
        g->now = L->last_created;
    return 1;
}

/* Plan the requests in order. 1 to go on; 0 when the group is over: the
 * index failed (every request fails, a fault) or nothing was accepted. */
static int group_plan(gwrite *g)
{
    local *L = g->L;
    int rc = 0;
    for (wreq *r = g->group; r; r = r->next)
        r->group = g->group;
    for (wreq *r = g->group; r && rc == 0; r = r->next) {
        rc = plan(L, g->txn, r);
        if (r->accepted)
            g->bytes += r->bytes + chain_rec_bytes(L);
    }
    if (rc == 0 && g->bytes)
        return 1;
    mdb_txn_abort(g->txn);
    L->ck = g->before;
    if (rc) {
        /* Fail every request of the group, decided or not: nothing of it
         * is written. */
        set_fault(L, rc);
        for (wreq *r = g->group; r; r = r->next) {
            r->accepted = 0;
            r->res.idempotent = 0;
            r->mres.idempotent = 0;
            r->msg[0] = 0;
            req_fail(r, rc);
        }
    }
    return 0;
}

/* Place the group: it must leave room for the seal record; when it does
 * not, seal the segment and continue in a new one. 0 to go on, 1 when the
 * group is over (no space for the next segment: nothing of it written, its
 * requests failed, not a fault), or an error (a fault, a failed seal
 * included). */
static int group_place(gwrite *g)
{
    local *L = g->L;
    log_seg *s = loc_seg(L->ck.loc) < atomic_load(&L->lg->nsegs) ? L->lg->segs[loc_seg(L->ck.loc)]
                                                                  : NULL;
    int rc;
    if (s && loc_off(L->ck.loc) + g->bytes + seal_size() > s->size) {
        uint64_t log_bytes = L->ck.log_bytes;
        if ((rc = seal(L, g->before.next_pos)))
            return rc;
        /* The seal is durable: whatever becomes of this group, the log
         * now continues at the start of the next segment. */
        g->before.loc = L->ck.loc;
        g->before.log_bytes += L->ck.log_bytes - log_bytes;
        s = NULL;
    }
    if (!s) {
        rc = make_tail_segment(L, loc_seg(L->ck.loc), g->bytes);
        if (rc == STELE_ENOSPC) {
            mdb_txn_abort(g->txn);
            L->ck = g->before;
            fail_nospace(g->group, rc, 0);
            return 1;
        }
        if (rc)
            return rc;
        s = L->lg->segs[loc_seg(L->ck.loc)];
    }
    g->s = s;
    g->seg = loc_seg(L->ck.loc);
    g->write_off = loc_off(L->ck.loc);
    return 0;
}

/* An append's event records at the end of L->gbuf, its sparse position
 * entries and its commit entry. */
static int encode_append(gwrite *g, wreq *r, uint64_t start)
{
    local *L = g->L;
    const append_args *a = r->a;
    int rc = 0;
    rec_share sh; /* laid out as append_rec_bytes_at planned */
    rec_share_init(&sh);
    for (size_t i = 0; i < a->n && rc == 0; i++) {
        uint64_t pos = r->res.first_position + i;
        uint64_t loc = loc_make(g->seg, (uint32_t)(g->write_off + L->gbuf.len));
        if (L->ck.last_pos_loc == UINT64_MAX || loc_seg(L->ck.last_pos_loc) != g->seg ||
            loc - L->ck.last_pos_loc >= IDX_POS_STRIDE) {
            rc = idx_pos_put(L->ix, g->txn, pos, loc);
            L->ck.last_pos_loc = loc;
        }
        const stele_event_in *e = &a->events[i];
        size_t tl = strlen(e->type);
        uint32_t sb, tb;
        rec_share_refs(&sh, a->stream, a->stream_len, e->type, tl, (uint32_t)i, &sb, &tb);
        size_t n = rec_encode_event_shared(
            L->gbuf.p + L->gbuf.len, a->stream, a->stream_len, e, a->ids[i],
            (uint8_t)((e->flags & REC_EVENT_FLAGS) | (a->made[i] ? REC_ID_MADE : 0)),
            (uint32_t)a->n, (uint32_t)i, pos, r->res.first_revision + i, g->now, sb, tb);
        rec_share_add(&sh, a->stream, a->stream_len, e->type, tl, sb, tb, n);
        L->gbuf.len += n;
    }
    idx_commit c = {r->st.sid, r->res.first_revision, loc_make(g->seg, (uint32_t)start),
                    r->res.first_position, (uint32_t)a->n,
                    (uint32_t)(g->write_off + L->gbuf.len - start)};
    STELE_ASSERT(rc || (c.count >= 1 && c.bytes == r->bytes)); /* read_stream_try */
    if (rc == 0)
        rc = idx_commit_put(L->ix, g->txn, &c);
    return rc;
}

/* The secondary index entries of the whole group (after the segment
 * header), from its encoded records. */
static int group_index_sec(gwrite *g)
{
    local *L = g->L;
    size_t hdr = g->write_off == 0 ? SEG_HEADER_SIZE : 0;
    return idx_sec_commit(L->ix, g->txn, L->gbuf.p + hdr, L->gbuf.len - hdr,
                          loc_make(g->seg, (uint32_t)(g->write_off + hdr)));
}

/* Encode the accepted requests' records into L->gbuf (after a segment
 * header when the group starts a segment) and index them (the secondary
 * indexes later, in the overlap window, when the group is overlapped). */
static int group_encode(gwrite *g)
{
    local *L = g->L;
    int rc;
    L->gbuf.len = 0;
    if (g->write_off == 0) {
        if ((rc = buf_reserve(&L->gbuf, SEG_HEADER_SIZE + g->bytes)))
            return rc;
        seg_header_encode(L->gbuf.p, g->seg, g->before.next_pos, g->now);
        g->s->first_position = g->before.next_pos;
        L->gbuf.len = SEG_HEADER_SIZE;
    } else if ((rc = buf_reserve(&L->gbuf, g->bytes))) {
        return rc;
    }
    uint64_t next_pos = g->before.next_pos;
    for (wreq *r = g->group; r && rc == 0; r = r->next) {
        if (!r->accepted)
            continue;
        STELE_ASSERT(L->gbuf.len + chain_rec_bytes(L) + r->bytes <= L->gbuf.cap);
        uint8_t *chain_rec = chain_reserve(L); /* local_chain.c */
        uint64_t start = g->write_off + L->gbuf.len;
        uint8_t *p = L->gbuf.p + L->gbuf.len;
        assert_positions(r, &next_pos);
        L->ck.last_commit = loc_make(g->seg, (uint32_t)start);
        if (r->op == OP_APPEND) {
            rc = encode_append(g, r, start);
        } else if (r->op == OP_MULTI) {
            rc = multi_encode(L, g->txn, r, g->seg, g->write_off, g->now);
        } else if (r->op == OP_METADATA || r->op == OP_SNAPSHOT) {
            rc = sm_encode(L, g->txn, r, p, loc_make(g->seg, (uint32_t)start), g->now);
            L->gbuf.len += r->bytes;
        } else {
            rc = rm_encode(L, g->txn, r, g->seg, g->write_off, g->now); /* local_removes.c */
        }
        /* The records take exactly the bytes planned for them. */
        STELE_ASSERT(rc || g->write_off + L->gbuf.len - start == r->bytes);
        if (rc == 0)
            rc = chain_seal_commit(L, g->txn, chain_rec, g->now);
    }
    size_t hdr = g->write_off == 0 ? SEG_HEADER_SIZE : 0;
    /* The group is the sum of its planned records, its positions end where
     * planning left the checkpoint, and the segment keeps room for a seal.
     * (Each accepted request's records follow its chain record, if any.) */
    STELE_ASSERT(rc || (L->gbuf.len - hdr == g->bytes && next_pos == L->ck.next_pos));
    STELE_ASSERT(g->write_off + L->gbuf.len + seal_size() <= g->s->size);
    /* The commits' chain records are written pending, their digests
     * taken while the group is written (local_chain.c). */
    if (rc == 0)
        chain_hash_start(L, g->s->fd, g->write_off, !g->overlap);
    if (rc == 0 && !g->overlap)
        rc = group_index_sec(g);
    return rc;
}

/* The checkpoint into the transaction, the group's bytes with one write
 * and one fdatasync, then the index commit (not fsynced: the log is the
 * truth). An overlapped group's fdatasync runs on the syncer while the
 * writer puts its secondary index entries and folds its chain records
 * ("Overlap"); the commit waits for both. */
static int group_durable(gwrite *g)
{
    local *L = g->L;
    L->ck.log_bytes += L->gbuf.len - (g->write_off == 0 ? SEG_HEADER_SIZE : 0);
    L->ck.loc = loc_make(g->seg, (uint32_t)(g->write_off + L->gbuf.len));
    L->ck.log_bytes -= atomic_exchange(&L->scav_unaccounted, 0); /* scavenged away */
    int rc = idx_ckpt_put(L->ix, g->txn, &L->ck);
    if (rc)
        return rc;
    rc = os_write_full(g->s->fd, L->gbuf.p, L->gbuf.len, g->write_off);
    int work = 0; /* the overlap window's own error (its message set) */
    if (rc == 0 && g->overlap) {
        sync_start(L, g->s->fd);
        work = group_index_sec(g);
        /* The chain's digests and fold (by the writer: the group was not
         * given to the hasher) only while the fdatasync still runs: once
         * it has returned, folding here would only delay the
         * acknowledgement, and after it (chain_group_done) the fold
         * overlaps the appenders' next requests instead. */
        if (work == 0 && sync_running(L))
            work = chain_group_fold(L, 1);
        rc = sync_wait(L);
    } else if (rc == 0) {
        uint64_t t0 = mono_ns();
        rc = os_io->fdatasync(g->s->fd);
        fsync_took(L, mono_ns() - t0);
    }
    if (rc) {
        char name[32];
        log_seg_name(g->seg, name);
        return err_set(rc == -ENOSPC ? STELE_ENOSPC : STELE_EIO,
                       "write to segment %s offset %llu: %s", name,
                       (unsigned long long)g->write_off, strerror(-rc));
    }
    if (work)
        return work;
    rc = idx_commit_txn(g->txn);
    g->txn = NULL;
    return rc;
}

/* The group is durable and indexed: show it to readers and subscribers. */
static void group_publish(gwrite *g)
{
    local *L = g->L;
    L->last_created = g->now;
    clear_nospace(L); /* e.g. the index's headroom could be had again */
    atomic_store_explicit(&L->pub_next_pos, L->ck.next_pos, memory_order_release);
    if (L->ck.next_pos > g->before.next_pos)
        tail_push(L, g->before.next_pos, loc_make(g->seg, (uint32_t)g->write_off));
    atomic_fetch_add(&L->n_groups, 1);
    for (wreq *r = g->group; r; r = r->next)
        if (r->accepted)
            atomic_fetch_add(&L->n_appends, 1);
}

/* 1 when the group was written and published. */
static int write_group(local *L, wreq *group)
{
    gwrite g = {.L = L, .group = group};
    if (!group_begin(&g) || !group_plan(&g))
        return 0;
    int rc = group_place(&g);
    if (rc > 0)
        return 0;
    g.overlap = L->syncer_started && g.bytes >= L->overlap_min &&
                (!L->overlap_timed || L->fsync_avg_ns >= OVERLAP_SYNC_MIN_NS);
    if (rc == 0)
        rc = group_encode(&g);
    if (rc == 0)
        rc = group_durable(&g);
    if (rc == 0) {
        group_publish(&g);
        return 1;
    }
    /* A storage fault: the group fails, and so does every later append. */
    if (g.txn)
        mdb_txn_abort(g.txn);
    set_fault(L, rc);
    for (wreq *r = group; r; r = r->next)
        if (r->accepted) {
            r->accepted = 0;
            req_fail(r, rc);
        }
    return 0;
}

static void *writer_main(void *arg)
{
    local *L = arg;
    for (;;) {
        pthread_mutex_lock(&L->qmu);
        while (!L->qhead && !L->stopping)
            pthread_cond_wait(&L->qcv, &L->qmu);
        if (!L->qhead) {
            pthread_mutex_unlock(&L->qmu);
            break;
        }
        /* Take requests up to the group's byte budget (at least one). */
        wreq *group = L->qhead, *last = group;
        uint64_t bytes = group->bytes;
        while (last->next && bytes + last->next->bytes <= GROUP_MAX_BYTES) {
            last = last->next;
            bytes += last->bytes;
        }
        L->qhead = last->next;
        if (!L->qhead)
            L->qtail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&L->qmu);

        int fault = atomic_load(&L->fault), written = 0;
        if (fault) {
            for (wreq *r = group; r; r = r->next) {
                r->rc = STELE_EREADONLY;
                snprintf(r->msg, sizeof r->msg,
                         "store is read-only after a storage fault (%.160s); reopen it",
                         L->fault_msg);
            }
        } else {
            written = write_group(L, group);
        }
        wake_group(L, group); /* no request of it is touched after this */
        if (written)
            notify_commit(L);
        /* The group's chain records, now that its appenders and the
         * subscribers are on their way (local_chain.c, "Hashing after the
         * fsync"). */
        int rc = chain_group_done(L, written);
        if (rc)
            set_fault(L, rc);
    }
    return NULL;
}

/* Queue a request; 0 or an error (then it was not queued). */
static int enqueue(local *L, wreq *r)
{
    if (atomic_load(&L->fault))
        return err_set(STELE_EREADONLY, "store is read-only after a storage fault (%s); reopen it",
                       L->fault_msg);
    pthread_mutex_lock(&L->qmu);
    if (L->stopping) {
        pthread_mutex_unlock(&L->qmu);
        return err_set(STELE_ECLOSED, "store is closing");
    }
    if (L->qtail)
        L->qtail->next = r;
    else
        L->qhead = r;
    L->qtail = r;
    pthread_cond_signal(&L->qcv);
    pthread_mutex_unlock(&L->qmu);
    return 0;
}

/* Queue a request and wait for the writer. */
static int submit(local *L, wreq *r)
{
    int rc = enqueue(L, r);
    if (rc)
        return rc;
    wake_wait(L, r);
    if (r->rc)
        return err_set(r->rc, "%s", r->msg);
    return 0;
}

int local_submit(local *L, wreq *r) { return submit(L, r); }

int local_enqueue(local *L, wreq *r) { return enqueue(L, r); }

/* The append's weight in the queue's group budget (GROUP_MAX_BYTES): the
 * API edge's measure of it (store_int.h, STORE_EVENT_FIXED per event plus
 * its names and payloads), which the edge has computed already. The
 * budget only caps a group's size; the writer sizes the exact records once
 * positions are known (plan, append_rec_bytes_at), so measuring the
 * encoding here too (a second pass over every event on the caller's path)
 * is not needed. The encoding's size stands in when the edge gave none. */
static uint64_t append_rec_bytes(const append_args *a)
{
    if (a->bytes)
        return a->bytes;
    uint64_t n = 0;
    for (size_t i = 0; i < a->n; i++) {
        const stele_event_in *e = &a->events[i];
        n += rec_event_size(a->stream_len, strlen(e->type), e->tags, e->ntags, e->data_len,
                            e->metadata_len);
    }
    return n;
}

static int local_append(backend *b, const append_args *a, stele_append_result *res)
{
    backend_assert_append(a);
    local *L = (local *)b;
    wreq r;
    memset(&r, 0, sizeof r);
    r.op = OP_APPEND;
    r.a = a;
    r.stream = a->stream;
    r.stream_len = a->stream_len;
    r.expected = a->expected;
    r.bytes = append_rec_bytes(a);
    int rc = submit(L, &r);
    if (res)
        *res = r.res;
    if (rc == STELE_EWRONGREV && res)
        res->current_revision = r.current;
    return rc;
}

static int local_append_async(backend *b, const append_args *a, append_done_fn done, void *ctx)
{
    backend_assert_append(a);
    local *L = (local *)b;
    wreq *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    r->op = OP_APPEND;
    r->a = a;
    r->stream = a->stream;
    r->stream_len = a->stream_len;
    r->expected = a->expected;
    r->bytes = append_rec_bytes(a);
    r->done_fn = done;
    r->done_ctx = ctx;
    int rc = enqueue(L, r);
    if (rc)
        free(r);
    return rc;
}

static int local_remove(backend *b, const char *stream, size_t len, int64_t expected,
                        int tombstone, uint64_t *current)
{
    backend_assert_remove(stream, len, expected);
    local *L = (local *)b;
    wreq r;
    memset(&r, 0, sizeof r);
    r.op = tombstone ? OP_TOMBSTONE : OP_DELETE;
    r.stream = stream;
    r.stream_len = len;
    r.expected = expected;
    r.bytes = rm_bytes_bound(len);
    int rc = submit(L, &r);
    free(r.rm_buf);
    if (current)
        *current = r.current;
    return rc;
}

/* ------------------------------------------------------------ open/close */

static void local_close(backend *b)
{
    local *L = (local *)b;
    if (!L)
        return;
    group_mem_free(b);
    if (L->writer_started) {
        pthread_mutex_lock(&L->qmu);
        L->stopping = 1;
        pthread_cond_signal(&L->qcv);
        pthread_mutex_unlock(&L->qmu);
        pthread_join(L->writer, NULL);
    }
    syncer_stop(L);
    ckpt_stop(L); /* local_ckpt.c */
    int clean = L->writer_started && L->ix && idx_sync(L->ix) == 0;
    idx_close(L->ix);
    log_close(L->lg);
    if (L->lockfd >= 0) {
        if (clean)
            write_marker(L, "closed\n");
        flock(L->lockfd, LOCK_UN);
        os_io->close(L->lockfd);
    }
    buf_free(&L->gbuf);
    chain_close(L); /* local_chain.c */
    pool_unref(L->pl);
    pthread_mutex_destroy(&L->qmu);
    pthread_cond_destroy(&L->qcv);
    for (unsigned i = 0; i < L->nwatch; i++)
        close(L->watch_fds[i]);
    pthread_mutex_destroy(&L->watch_mu);
    pthread_mutex_destroy(&L->tail_mu);
    pthread_mutex_destroy(&L->scav_mu);
    pthread_mutex_destroy(&L->nospace_mu);
    pthread_mutex_destroy(&L->smu);
    pthread_cond_destroy(&L->scv_go);
    pthread_cond_destroy(&L->scv_done);
    free(L);
}

/* Positions: gapless integers in commit order (docs/architecture.md). */
static uint64_t local_pos_after(backend *b, uint64_t pos)
{
    (void)b;
    return pos == STELE_NONE ? 0 : pos + 1;
}

static uint64_t local_pos_before(backend *b, uint64_t pos)
{
    (void)b;
    return pos == 0 || pos == STELE_NONE ? STELE_NONE : pos - 1;
}

static int local_pos_head(backend *b, uint64_t *next)
{
    *next = atomic_load_explicit(&((local *)b)->pub_next_pos, memory_order_acquire);
    return 0;
}

static const backend_ops local_ops = {
    .version = BACKEND_OPS_VERSION,
    .name = "local",
    .pos_after = local_pos_after,
    .pos_before = local_pos_before,
    .pos_head = local_pos_head,
    .append = local_append,
    .append_async = local_append_async,
    .remove = local_remove,
    .read_stream = local_read_stream,
    .read_all = local_read_all,
    .head = local_head,
    .query = local_query,
    .read_stream_to = local_read_stream_to,
    .read_view = local_read_view,
    .stats = local_stats,
    .append_multi = local_append_multi,
    .append_multi_async = local_append_multi_async,
    .read_matching = local_read_matching,
    .set_metadata = local_set_metadata,
    .get_metadata = local_get_metadata,
    .put_snapshot = local_put_snapshot,
    .get_snapshot = local_get_snapshot,
    .load = local_load,
    .commit_gen = local_commit_gen,
    .wait_commit = local_wait_commit,
    .watch = local_watch,
    .unwatch = local_unwatch,
    .backup = local_backup,
    .scavenge = local_scavenge,
    .list_names = local_list_names,
    .chain_head = local_chain_head,
    .chain_export = local_chain_export,
    .groups = &group_mem_ops,
    .close = local_close,
};

int local_open(const char *dir, const stele_options *opts, backend **out)
{
    local *L = calloc(1, sizeof *L);
    if (!L)
        return err_set(STELE_ENOMEM, "out of memory");
    L->base.ops = &local_ops;
    L->opts = *opts;
    L->pl = pool_new();
    if (!L->pl) {
        free(L);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    L->lockfd = -1;
    wake_config(L); /* local_wake.c */
    pthread_mutex_init(&L->qmu, NULL);
    pthread_cond_init(&L->qcv, NULL);
    pthread_mutex_init(&L->watch_mu, NULL);
    pthread_mutex_init(&L->tail_mu, NULL);
    pthread_mutex_init(&L->scav_mu, NULL);
    pthread_mutex_init(&L->nospace_mu, NULL);
    pthread_mutex_init(&L->smu, NULL);
    pthread_cond_init(&L->scv_go, NULL);
    pthread_cond_init(&L->scv_done, NULL);
    snprintf(L->dir, sizeof L->dir, "%s", dir);
    int rc = 0;
    int create = !(opts->flags & STELE_OPEN_NOCREATE);
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        if (errno != ENOENT || !create)
            rc = err_set(errno == ENOENT ? STELE_ENOTFOUND : STELE_EIO, "store %s: %s", dir,
                         strerror(errno));
        else if (mkdir(dir, 0755) != 0)
            rc = err_set(STELE_EIO, "create store directory %s: %s", dir, strerror(errno));
    } else if (!S_ISDIR(sb.st_mode)) {
        rc = err_set(STELE_EINVAL, "store %s: not a directory", dir);
    }
    char path[4200], marker[128] = "";
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/stele.lock", dir);
        L->lockfd = os_io->open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (L->lockfd < 0)
            rc = err_set(STELE_EIO, "open %s: %s", path, strerror(-L->lockfd));
        else if (flock(L->lockfd, LOCK_EX | LOCK_NB) != 0)
            rc = err_set(STELE_ELOCKED, "store %s is open in another process", dir);
        else {
            ssize_t n = os_io->pread(L->lockfd, marker, sizeof marker - 1, 0);
            marker[n > 0 ? n : 0] = 0;
        }
    }
    if (rc == 0)
        rc = log_open(dir, opts->segment_size, create, &L->lg);
    /* A machine crash while the store was open: the index goes back to its
     * durable checkpoint, or is rebuilt (local_ckpt.c). Settled before the
     * marker names this boot, so a crash in between comes back here. */
    char boot[64], text[128];
    boot_id(boot);
    int rebuild = 0;
    if (strncmp(marker, "open ", 5) == 0) {
        marker[strcspn(marker, "\n")] = 0;
        rebuild = strcmp(marker + 5, boot) != 0;
    }
    snprintf(text, sizeof text, "open %s\n", boot);
    if (rc == 0)
        rc = ckpt_prepare(L, rebuild);
    if (rc == 0)
        rc = write_marker(L, text);
    if (rc == 0)
        rc = ckpt_open_index(L, rebuild, !(opts->flags & STELE_OPEN_NO_INDEXES));
    if (rc == 0)
        rc = chain_open(L); /* local_chain.c */
    if (rc == 0 && (opts->flags & STELE_OPEN_VERIFY))
        rc = verify_all(L);
    if (rc == 0) {
        atomic_store(&L->pub_next_pos, L->ck.next_pos);
        rc = log_start_prealloc(L->lg);
    }
    if (rc == 0)
        rc = ckpt_start(L);
    if (rc == 0)
        rc = syncer_start(L);
    if (rc == 0) {
        if (pthread_create(&L->writer, NULL, writer_main, L) != 0) {
            rc = err_set(STELE_EINTERNAL, "cannot start the writer thread");
        } else {
            L->writer_started = 1;
            pthread_setname_np(L->writer, "stele-writer"); /* top -H, bench_chain */
        }
    }
    if (rc) {
        int keep = L->writer_started;
        L->writer_started = keep;
        local_close(&L->base);
        return rc;
    }
    *out = &L->base;
    if (atomic_load(&L->nospace)) {
        /* Open, but read-only for lack of space: stele_open returns 0 and
         * says so in stele_errmsg(). */
        char msg[sizeof L->nospace_msg];
        snprintf(msg, sizeof msg, "%s", L->nospace_msg);
        err_set(STELE_ENOSPC, "store %s opened read-only: %s", dir, msg);
    }
    return 0;
}
