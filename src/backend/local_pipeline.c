/*
 * local_pipeline.c - the local engine's write pipeline: the syncer thread
 * that makes the writer's groups durable and publishes them, the completer
 * thread that runs async callbacks, and the durable read transaction
 * (local_rtxn). The writer (local.c) plans, encodes, hashes, writes and
 * indexes each group and hands it over here.
 *
 * The pipeline. The writer thread plans, encodes, hashes, writes (pwrite,
 * into the page cache) and indexes (an LMDB commit, not fsynced) group N,
 * then hands it to the syncer thread, which fdatasyncs it and only then
 * publishes it and completes its requests. While N's fdatasync is in
 * flight the writer takes the requests queued meanwhile as group N+1 and
 * does all of its work up to its own hand-over; it then waits until the
 * syncer has taken N+1 (that is, until N is durable) before it takes more.
 * So at most one group is being synced, one waits for the syncer, and the
 * CPU work of a group overlaps the previous group's disk flush.
 *
 * Invariants.
 *   - Acknowledgement, publication (pub_next_pos, pub_loc, the chain head,
 *     the tail ring, commit notifications) and completion of every request,
 *     rejected ones included, happen in the syncer in group order, after
 *     the fdatasync that covers the group. A rejection decided against a
 *     group that then fails to sync becomes a failure (EREADONLY).
 *   - Positions are assigned by the writer in group order, as before; the
 *     log file holds group N before the index names it (write before
 *     commit), so after a crash of the process the index is still a prefix
 *     of the log (recovery unchanged). A machine crash rebuilds the index
 *     from the log, as before.
 *   - The index may thus be ahead of what is durable by one or two groups.
 *     Readers take durable snapshots only: local_rtxn waits until the
 *     snapshot's checkpoint location is published (at most the fdatasync
 *     in flight). The writer and syncer threads themselves (and callbacks
 *     they run) never wait there; they bound event reads by the published
 *     position instead.
 *   - A failed fdatasync is a sticky fault, and since the index may then
 *     hold groups the log lost, the lock file says "open fault": the next
 *     open rebuilds the index from the log (local_recover.c), and close
 *     does not mark the store clean.
 *   - Readers may wait for the syncer, so the syncer must never wait for
 *     a reader: async requests' callbacks (which may take locks a reader
 *     holds, e.g. a consumer group's) run in a third thread, the
 *     completer, in group order after their group is published; waiting
 *     callers are woken by the syncer itself.
 *   - Only the syncer fdatasyncs a segment that holds groups in flight: the
 *     writer drains the pipeline before it seals a segment, so no fsync
 *     error can be consumed by one thread while another acknowledges.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backend/local_int.h"
#include "os/os.h"
#include "util/assert.h"

static _Thread_local int pipeline_thread;

void local_pipeline_thread(void) { pipeline_thread = 1; }

int local_rtxn(local *L, MDB_txn **txn, idx_ckpt *ck)
{
    int rc = idx_begin(L->ix, 1, txn);
    if (rc)
        return rc;
    rc = idx_ckpt_get(L->ix, *txn, ck);
    if (rc) {
        mdb_txn_abort(*txn);
        return rc == STELE_ENOTFOUND ? err_set(STELE_ECORRUPT, "index: no checkpoint") : rc;
    }
    for (;;) {
        uint32_t gen = atomic_load(&L->commit_gen);
        if (ck->loc <= atomic_load_explicit(&L->pub_loc, memory_order_acquire))
            return 0;
        if (pipeline_thread || atomic_load(&L->fault)) {
            pthread_mutex_lock(&L->pub_mu);
            ck->next_pos = atomic_load(&L->pub_next_pos);
            ck->loc = atomic_load(&L->pub_loc);
            pthread_mutex_unlock(&L->pub_mu);
            return 0;
        }
        L->base.ops->wait_commit(&L->base, gen, 100);
    }
}

/* A durable group: show it to readers and subscribers. */
static void sync_publish(local *L, const gsync *b)
{
    pthread_mutex_lock(&L->pub_mu);
    atomic_store_explicit(&L->pub_next_pos, b->next_pos, memory_order_release);
    atomic_store_explicit(&L->pub_loc, b->loc, memory_order_release);
    pthread_mutex_unlock(&L->pub_mu);
    chain_publish(L, &b->chain);
    if (b->next_pos > b->before_pos)
        local_tail_push(L, b->before_pos, loc_make(b->seg, (uint32_t)b->write_off));
    local_notify_commit(L);
    atomic_fetch_add(&L->n_groups, 1);
    for (wreq *r = b->group; r; r = r->next)
        if (r->accepted)
            atomic_fetch_add(&L->n_appends, 1);
}

/* fdatasync every segment the groups wrote to (each once). 0 or an error. */
static int sync_segments(gsync *list)
{
    for (gsync *b = list; b; b = b->next) {
        if (!b->s)
            continue;
        int seen = 0;
        for (gsync *a = list; a != b && !seen; a = a->next)
            seen = a->s == b->s;
        if (seen)
            continue;
        int rc = os_io->fdatasync(b->s->fd);
        if (rc) {
            char name[32];
            log_seg_name(b->seg, name);
            return err_set(rc == -ENOSPC ? STELE_ENOSPC : STELE_EIO,
                           "fdatasync of segment %s: %s", name, strerror(-rc));
        }
    }
    return 0;
}

/* The requests of a group decided against a state that did not become
 * durable: every one that would have succeeded fails with rc (message
 * set). */
static void sync_fail(gsync *b, int rc)
{
    for (wreq *r = b->group; r; r = r->next)
        if (r->rc == 0) {
            r->accepted = 0;
            r->res.idempotent = 0;
            r->mres.idempotent = 0;
            r->msg[0] = 0;
            local_req_fail(r, rc);
        }
}

void *local_syncer_main(void *arg)
{
    local *L = arg;
    pipeline_thread = 1;
    int failed = 0;
    for (;;) {
        pthread_mutex_lock(&L->smu);
        while (!L->shead && !L->sstop)
            pthread_cond_wait(&L->scv, &L->smu);
        gsync *list = L->shead;
        L->shead = L->stail = NULL;
        L->sbusy = list != NULL;
        pthread_cond_broadcast(&L->scv); /* the hand-over slot is free */
        pthread_mutex_unlock(&L->smu);
        if (!list)
            break;
        int rc = failed ? 0 : sync_segments(list), now_failed = 0;
        if (rc) {
            /* Sticky, and the index may name what the log lost: the next
             * open rebuilds it. */
            local_set_fault(L, rc);
            atomic_store(&L->sync_fault, 1);
            char msg[600];
            snprintf(msg, sizeof msg, "%s", stele_errmsg());
            write_marker(L, "open fault\n");
            err_set(rc, "%s", msg);
            failed = now_failed = 1;
        }
        wreq *ahead = NULL, *atail = NULL; /* async requests, for the completer */
        for (gsync *b = list, *nb; b; b = nb) {
            nb = b->next;
            if (now_failed) {
                sync_fail(b, rc);
            } else if (failed) {
                err_set(STELE_EREADONLY, "store is read-only after a storage fault (%.160s); "
                        "reopen it", L->fault_msg);
                sync_fail(b, STELE_EREADONLY);
            } else if (b->s) {
                sync_publish(L, b);
            }
            for (wreq *r = b->group, *nx; r; r = nx) {
                nx = r->next;
                if (r->done_fn || r->mdone_fn) {
                    r->next = NULL; /* to the completer, in order */
                    if (atail)
                        atail->next = r;
                    else
                        ahead = r;
                    atail = r;
                    continue;
                }
                local_req_finish(r); /* r may be gone after this */
            }
            atomic_store_explicit(&b->busy, 0, memory_order_release);
        }
        if (ahead) {
            pthread_mutex_lock(&L->cmu);
            if (L->ctail)
                L->ctail->next = ahead;
            else
                L->chead = ahead;
            L->ctail = atail;
            pthread_cond_signal(&L->ccv);
            pthread_mutex_unlock(&L->cmu);
        }
        if (now_failed)
            local_notify_commit(L); /* readers waiting in local_rtxn see the fault */
        pthread_mutex_lock(&L->smu);
        L->sbusy = 0;
        pthread_cond_broadcast(&L->scv);
        pthread_mutex_unlock(&L->smu);
    }
    pthread_mutex_lock(&L->cmu);
    L->cstop = 1;
    pthread_cond_signal(&L->ccv);
    pthread_mutex_unlock(&L->cmu);
    return NULL;
}

/* Completes async requests of durable groups in group order (their
 * callbacks may take locks that readers waiting in local_rtxn hold). */
void *local_completer_main(void *arg)
{
    local *L = arg;
    pipeline_thread = 1;
    for (;;) {
        pthread_mutex_lock(&L->cmu);
        while (!L->chead && !L->cstop)
            pthread_cond_wait(&L->ccv, &L->cmu);
        wreq *list = L->chead;
        L->chead = L->ctail = NULL;
        pthread_mutex_unlock(&L->cmu);
        if (!list)
            break;
        for (wreq *r = list, *nx; r; r = nx) {
            nx = r->next;
            local_req_finish(r); /* r is gone after this */
        }
    }
    return NULL;
}

/* Hand a decided group to the syncer, then wait until the syncer has taken
 * it (the group before it is durable): the next group is prepared while
 * this one is synced. */
void local_sync_handover(local *L, gsync *b)
{
    pthread_mutex_lock(&L->smu);
    if (L->stail)
        L->stail->next = b;
    else
        L->shead = b;
    L->stail = b;
    pthread_cond_broadcast(&L->scv);
    while (L->shead)
        pthread_cond_wait(&L->scv, &L->smu);
    pthread_mutex_unlock(&L->smu);
}

/* Wait until every group handed over is durable and completed. */
void local_sync_drain(local *L)
{
    pthread_mutex_lock(&L->smu);
    while (L->shead || L->sbusy)
        pthread_cond_wait(&L->scv, &L->smu);
    pthread_mutex_unlock(&L->smu);
}

