/*
 * local_wake.c - how a finished group's waiting appenders are woken: a
 * wake tree, so that the writer wakes one thread and the woken threads
 * wake the rest.
 *
 * Why. A caller of stele_append (and of the other synchronous writes)
 * sleeps on a futex until the writer has made its group durable and
 * published it. Waking a sleeping thread is a scheduler operation (about
 * 1-3 us of kernel CPU on this VM, try_to_wake_up); waking the 40-60
 * appenders of a 64-thread group from the writer made it the largest item
 * of the writer's CPU per append (perf: 59 % of the writer's samples at
 * 64 x 1, docs/benchmarks.md "Wake tree"), and the writer's CPU is serial:
 * it bounds the group rate. So the writer wakes only the group's first
 * waiter; every woken waiter, before it returns to its caller, wakes up to
 * WAKE_FANOUT waiters after it (a complete WAKE_FANOUT-ary tree over the
 * group's waiters in queue order: the children of waiter i are
 * F*i+1 .. F*i+F). The wake-ups then run on the appenders' threads, in
 * parallel with the writer's next group.
 *
 * The word. Each waiting request has its own futex word, wreq.done:
 *   WAKE_PENDING   the request is not finished; its thread is awake;
 *   WAKE_SLEEPING  not finished, and its thread is in (or entering)
 *                  FUTEX_WAIT: whoever finishes it must FUTEX_WAKE it;
 *   WAKE_DONE      finished: rc, msg and the results are final.
 * The waiter moves PENDING -> SLEEPING by compare-and-swap before it
 * sleeps; the releaser moves the word to DONE by an atomic exchange and
 * makes the system call only if it took SLEEPING off it. An appender that
 * has not gone to sleep yet costs no system call.
 *
 * Who may touch what. A waiter's wreq lives on its caller's stack and is
 * gone as soon as the caller sees DONE. So:
 *   - the writer fills in every waiter's results and its `kids` (the
 *     waiters it must release), then releases the root(s) only: the writer
 *     never touches a request after releasing it, and it does not release
 *     any other (so none of them can return while the writer still reads
 *     or writes it);
 *   - a released waiter reads its own `kids` (written by the writer before
 *     the release chain that reached it: each release is an exchange with
 *     acquire-release order, each wait ends with an acquire load, so the
 *     writer's stores happen before the kid's reads) and releases each of
 *     them, then returns. Until it releases a kid, that kid cannot return
 *     (its word is not DONE), so the parent's exchange on the kid's word
 *     is on live memory. After the exchange the parent only passes the
 *     word's address to FUTEX_WAKE, which for a private futex never reads
 *     the memory; if the kid meanwhile returned (a spurious wake-up showed
 *     it DONE), the wake reaches at most some later futex waiter at that
 *     address, and every futex waiter in this process (and in glibc) loops
 *     on its own condition, so an extra wake-up is harmless.
 *
 * No wake-up is lost. By induction over the tree: the root is released by
 * the writer. A released waiter is woken if it was sleeping (the exchange
 * took SLEEPING, so the FUTEX_WAKE follows; if it was between its CAS and
 * its FUTEX_WAIT, the kernel's wait compares the word, sees DONE and
 * returns at once), or sees DONE at its next check if it was awake. Every
 * waiter that sees DONE releases all its kids before it returns, whether
 * or not it slept. So every waiter of the group is released, after the
 * writer published the group.
 *
 * No appender returns before its group is durable and published: a
 * request's word becomes DONE only through this tree, which the writer
 * starts after write_group() returned (the fdatasync, the index commit and
 * the new end all came first), and only for requests whose results are
 * final.
 *
 * Gathering. Released from waking, the writer would take its next group
 * at once, when only the first few woken appenders have queued again: a
 * closed loop of T appenders then splits into two half-size groups per
 * round, each with its own fdatasync and fixed costs (measured: 64 x 1
 * went from 57-64 appends per group to 29, and from 8.2 to 9.3 us of
 * CPU per event). So after a group of WAKE_GATHER_MIN waiters or more, the
 * writer, once its own after-acknowledgement work is done, waits until
 * every waiter of the group has released its kids (wake_left, counted
 * down by each waiter after its releases), and only then takes the queue:
 * the wake-ups run on the appenders' CPUs, in parallel, while the writer
 * sleeps instead of spending that CPU itself. Smaller groups (one client,
 * a few) are not waited for: there the writer would only sleep twice
 * instead of once. A waiter touches wake_left (the store's memory) before
 * its own call returns, so a store closed after every call returned is
 * never touched.
 *
 * Asynchronous requests (done_fn, mdone_fn: the HTTP server's appends)
 * have no waiting thread: the writer calls their callbacks itself, as
 * before, and they take no place in the tree.
 */
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backend/local_int.h"

enum { WAKE_PENDING = 0, WAKE_DONE = 1, WAKE_SLEEPING = 2 };

/* The defaults of wake_config(). */
#define WAKE_MODE_DEFAULT WAKE_TREE
#define WAKE_ROOTS_DEFAULT 1
#define WAKE_FANOUT_DEFAULT 2
#define WAKE_GATHER_DEFAULT 1
/* Groups with this many waiters or more are gathered for. */
#define WAKE_GATHER_MIN 4
/* In wake_left: the writer sleeps on the word (the count is below it). */
#define WAKE_LEFT_SLEEPING 0x80000000u

/* Finish waiter `r`: its results are final. After this call `r` may be
 * gone; only its address is used, by the kernel, which does not read it. */
static void wake_release(wreq *r)
{
    _Atomic uint32_t *w = &r->done;
    if (atomic_exchange_explicit(w, WAKE_DONE, memory_order_acq_rel) == WAKE_SLEEPING)
        syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Bulk and relay: every waiter sleeps on the store's one word, done_gen
 * ("Bulk and relay" above). */
static void wait_shared(local *L, wreq *r)
{
    for (;;) {
        uint32_t gen = atomic_load_explicit(&L->done_gen, memory_order_acquire);
        if (atomic_load_explicit(&r->done, memory_order_acquire) == WAKE_DONE)
            return;
        syscall(SYS_futex, &L->done_gen, FUTEX_WAIT_PRIVATE, gen, NULL, NULL, 0);
        if (L->wake_mode == WAKE_RELAY && atomic_load_explicit(&L->wake_relay, memory_order_relaxed) &&
            atomic_exchange(&L->wake_relay, 0))
            syscall(SYS_futex, &L->done_gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
}

void wake_wait(local *L, wreq *r)
{
    if (L->wake_mode != WAKE_TREE) {
        wait_shared(L, r);
        return;
    }
    uint32_t v = atomic_load_explicit(&r->done, memory_order_acquire);
    while (v != WAKE_DONE) {
        if (v == WAKE_PENDING &&
            !atomic_compare_exchange_weak_explicit(&r->done, &v, WAKE_SLEEPING,
                                                   memory_order_acquire, memory_order_acquire))
            continue; /* v now holds the word */
        syscall(SYS_futex, &r->done, FUTEX_WAIT_PRIVATE, WAKE_SLEEPING, NULL, NULL, 0);
        v = atomic_load_explicit(&r->done, memory_order_acquire);
    }
    /* Released: release the waiters below this one, then return. */
    for (int i = 0; i < WAKE_FANOUT_MAX && r->kids[i]; i++)
        wake_release(r->kids[i]);
    /* The last waiter of a gathered group wakes the writer if it sleeps. */
    if (r->wake_left && atomic_fetch_sub_explicit(r->wake_left, 1, memory_order_acq_rel) ==
                            (WAKE_LEFT_SLEEPING | 1u))
        syscall(SYS_futex, r->wake_left, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void wake_gather(local *L)
{
    uint32_t v = atomic_load_explicit(&L->wake_left, memory_order_acquire);
    while (v & ~WAKE_LEFT_SLEEPING) {
        if (!(v & WAKE_LEFT_SLEEPING) &&
            !atomic_compare_exchange_weak_explicit(&L->wake_left, &v, v | WAKE_LEFT_SLEEPING,
                                                   memory_order_acquire, memory_order_acquire))
            continue; /* v now holds the word */
        syscall(SYS_futex, &L->wake_left, FUTEX_WAIT_PRIVATE, v | WAKE_LEFT_SLEEPING, NULL,
                NULL, 0);
        v = atomic_load_explicit(&L->wake_left, memory_order_acquire);
    }
    atomic_store_explicit(&L->wake_left, 0, memory_order_relaxed);
}

/* Complete an asynchronous request: its callback (which frees it). */
static void finish_async(wreq *r)
{
    if (r->mdone_fn) {
        multi_finish_async(r); /* local_multi.c */
        return;
    }
    if (r->rc == STELE_EWRONGREV)
        r->res.current_revision = r->current;
    r->done_fn(r->done_ctx, r->rc, &r->res, r->rc ? r->msg : "");
    free(r);
}

/* Bulk and relay: mark every waiter done, then wake them all (bulk) or
 * one of them, which wakes them all (relay). */
static void group_shared(local *L, wreq *group)
{
    int waiters = 0;
    for (wreq *r = group, *nx; r; r = nx) {
        nx = r->next;
        if (r->rc && !r->msg[0])
            snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
        if (r->mdone_fn || r->done_fn) {
            finish_async(r); /* r is gone */
            continue;
        }
        waiters = 1;
        atomic_store_explicit(&r->done, WAKE_DONE, memory_order_release); /* r may be gone */
    }
    /* The generation moves before the relay is offered: whoever takes the
     * relay wakes every sleeper of the old generation. */
    atomic_fetch_add_explicit(&L->done_gen, 1, memory_order_release);
    if (!waiters)
        return;
    if (L->wake_mode == WAKE_BULK) {
        syscall(SYS_futex, &L->done_gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
        return;
    }
    atomic_store(&L->wake_relay, 1);
    syscall(SYS_futex, &L->done_gen, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void wake_group(local *L, wreq *group)
{
    if (L->wake_mode != WAKE_TREE) {
        group_shared(L, group);
        return;
    }
    /* One pass in queue order: asynchronous requests complete now; the
     * waiters are linked (wnext). Waiters 0 .. roots-1 are the writer's to
     * release; waiter i >= roots is a kid of waiter (i - roots) / fanout:
     * `parent` walks the waiters fanout kids at a time, always behind
     * `tail`. */
    const uint32_t roots = L->wake_roots, fanout = L->wake_fanout;
    wreq *root = NULL, *tail = NULL, *parent = NULL;
    uint32_t slot = 0, n = 0;
    for (wreq *r = group, *nx; r; r = nx) {
        nx = r->next;
        if (r->rc && !r->msg[0])
            snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
        if (r->mdone_fn || r->done_fn) {
            finish_async(r); /* r is gone */
            continue;
        }
        for (int i = 0; i < WAKE_FANOUT_MAX; i++)
            r->kids[i] = NULL;
        r->wnext = NULL;
        r->wake_left = NULL;
        if (!root)
            root = parent = r;
        else
            tail->wnext = r;
        tail = r;
        if (n++ < roots)
            continue;
        parent->kids[slot] = r;
        if (++slot == fanout) {
            slot = 0;
            parent = parent->wnext;
        }
    }
    if (!root)
        return;
    if (L->wake_gather && n >= WAKE_GATHER_MIN && n > roots) {
        /* No waiter is released yet: the writer may still write them. */
        atomic_store_explicit(&L->wake_left, n, memory_order_relaxed);
        for (wreq *w = root; w; w = w->wnext)
            w->wake_left = &L->wake_left;
    }
    /* The roots; the writer touches no waiter after releasing it. */
    wreq *w = root;
    for (uint32_t i = 0; i < roots && w; i++) {
        wreq *next = w->wnext;
        wake_release(w);
        w = next;
    }
}

/* STELE_WAKE_ROOTS (waiters the writer wakes itself; 0: all of them, the
 * tree off), STELE_WAKE_FANOUT (1..WAKE_FANOUT_MAX), STELE_WAKE_GATHER
 * (0 or 1): docs/architecture.md, "Waking the appenders". */
void wake_config(local *L)
{
    const char *v;
    L->wake_mode = WAKE_MODE_DEFAULT;
    if ((v = getenv("STELE_WAKE")) && *v)
        L->wake_mode = !strcmp(v, "bulk") ? WAKE_BULK : !strcmp(v, "relay") ? WAKE_RELAY
                       : !strcmp(v, "tree") ? WAKE_TREE : L->wake_mode;
    L->wake_roots = WAKE_ROOTS_DEFAULT;
    L->wake_fanout = WAKE_FANOUT_DEFAULT;
    L->wake_gather = WAKE_GATHER_DEFAULT;
    if ((v = getenv("STELE_WAKE_ROOTS")) && *v) {
        long n = strtol(v, NULL, 10);
        L->wake_roots = n <= 0 ? UINT32_MAX : (uint32_t)n;
    }
    if ((v = getenv("STELE_WAKE_FANOUT")) && *v) {
        long n = strtol(v, NULL, 10);
        L->wake_fanout = n < 1 ? 1 : n > WAKE_FANOUT_MAX ? WAKE_FANOUT_MAX : (uint32_t)n;
    }
    if ((v = getenv("STELE_WAKE_GATHER")) && *v)
        L->wake_gather = strtol(v, NULL, 10) != 0;
}
