/*
 * local_wake.c - how a finished group's waiting appenders are woken.
 *
 * Why. A caller of stele_append (and of the other synchronous writes)
 * sleeps on a futex until the writer has made its group durable and
 * published it. Waking a sleeping thread is a scheduler operation (1-3 us
 * of kernel CPU each on this VM: try_to_wake_up), and the writer used to
 * wake a 64-thread group's 40-60 sleepers itself: perf put 59 % of the
 * writer's CPU at 64 x 1 in that one FUTEX_WAKE (docs/benchmarks.md,
 * "Waking the appenders"). The writer's CPU is serial, and it bounds the
 * group rate. Three ways are here (STELE_WAKE; wake_config):
 *
 *   relay            the writer marks every waiter done and wakes one
 *                    sleeper (STELE_WAKE_RELAY_N: that many, the first
 *                    to run relays); that one wakes all the others
 *                    with one FUTEX_WAKE, on its own CPU. The writer's
 *                    wake-up cost is one thread's; the batched wake-up
 *                    keeps the kernel's cost per thread as low as bulk's.
 *                    Groups of WAKE_RELAY_MIN waiters or fewer (one
 *                    client) are woken directly.
 *   bulk (default)   the writer wakes every sleeper with one FUTEX_WAKE
 *                    (the engine before issue 21's wake work). Relay
 *                    halves the writer's wake-up CPU, but on this loaded
 *                    2-vCPU machine it lost wall-clock throughput in
 *                    every run (the relaying thread waits for a CPU
 *                    before anyone else is woken): docs/benchmarks.md,
 *                    "Waking the appenders". Bulk stays the default until
 *                    a quiet machine says otherwise.
 *   tree             each waiter has its own futex word; the writer
 *                    releases STELE_WAKE_ROOTS waiters, each released
 *                    waiter releases STELE_WAKE_FANOUT more before it
 *                    returns (a complete tree over the group in queue
 *                    order), and with STELE_WAKE_GATHER the writer waits
 *                    for the whole tree before its next group. Measured
 *                    slower than bulk here (every hop waits for a CPU,
 *                    separate wake-ups cost more than one batched one);
 *                    kept to compare on other machines.
 *
 * Bulk and relay: the word. Waiters sleep on one store-wide word,
 * done_gen, and each checks its own request's `done` flag. The writer
 * stores every waiter's `done` (reading its `next` first: a waiter whose
 * flag is set may return and its request, on its stack, is gone), then
 * bumps done_gen, then wakes. A waiter reads done_gen before its flag, so
 * if it saw the old generation it either sees the flag or sleeps with the
 * old value, which FUTEX_WAIT refuses once the generation moved: a waiter
 * that misses the flag is asleep on the old generation before the bump, or
 * does not sleep at all.
 *
 * Relay: no wake-up is lost. After the bump the writer sets wake_relay
 * and wakes one sleeper. Every thread that returns from its FUTEX_WAIT and
 * finds wake_relay set takes it (an atomic exchange: exactly one thread
 * takes each offer) and wakes every sleeper of done_gen. Take a waiter W
 * of the group that sleeps (on the old generation, before the bump). If
 * the writer's wake finds a sleeper, that thread takes the offer unless
 * another took it first; either way a taker's wake-all comes after the
 * offer, so after the bump, and W is still asleep on the old generation
 * (nothing else wakes it but a spurious wake-up, after which it sees its
 * flag): the wake-all wakes W. If the writer's wake found no sleeper, W
 * was not asleep at that moment, so it never slept on the old generation
 * (it cannot start after the bump): it sees its flag. A sleeper of the
 * next group woken this way checks its flag, offers nothing, sleeps again.
 * An offer nobody takes stays set; the next taker's wake-all is then
 * spurious, which every waiter tolerates.
 *
 * The tree: the word. Each waiting request has its own futex word,
 * wreq.done: WAKE_PENDING (not finished, thread awake), WAKE_SLEEPING
 * (not finished, thread in or entering FUTEX_WAIT: whoever finishes it
 * must FUTEX_WAKE it), WAKE_DONE (finished: rc, msg, results final). The
 * waiter moves PENDING -> SLEEPING by compare-and-swap before it sleeps;
 * the releaser moves the word to DONE by an atomic exchange and makes the
 * system call only if it took SLEEPING off it.
 *
 * The tree: who may touch what. A waiter's wreq is gone as soon as its
 * caller sees DONE. So the writer fills in every waiter's results and
 * `kids` before it releases the roots, and touches no waiter after
 * releasing it; a released waiter reads its own `kids` (the writer's
 * stores happen before: each release is an acquire-release exchange, each
 * wait ends with an acquire load) and releases them, then returns. Until
 * it releases a kid, the kid cannot return, so the exchange is on live
 * memory; afterwards only the word's address goes to FUTEX_WAKE, which for
 * a private futex never reads memory; if the kid already returned, the
 * wake reaches at most a later futex waiter at that address, and every
 * futex waiter (here and in glibc) loops on its condition.
 *
 * The tree: no wake-up is lost, by induction over it: a released waiter
 * is woken if it was sleeping (the exchange took SLEEPING, so the
 * FUTEX_WAKE follows; between its CAS and FUTEX_WAIT, the kernel's
 * compare sees DONE), or sees DONE at its next check; and every waiter
 * that sees DONE releases all its kids before returning. Gathering: each
 * waiter counts down wake_left after its releases (before its own call
 * returns, so a store closed after every call returned is never touched);
 * the writer sleeps on that word until it reaches zero.
 *
 * In every mode no appender returns before its group is durable and
 * published: a request is marked done only in wake_group(), which the
 * writer calls after write_group() returned, with every result final.
 * Asynchronous requests (done_fn, mdone_fn: the HTTP server's appends)
 * have no waiting thread: the writer calls their callbacks, as before.
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
#define WAKE_MODE_DEFAULT WAKE_BULK
/* Relay: groups of at most this many waiters are woken by the writer. */
#define WAKE_RELAY_MIN 2
/* Relay: how many sleepers the writer wakes (the first to run takes the
 * relay; the others only check their flags). */
#define WAKE_RELAY_N_DEFAULT 1
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
    uint32_t waiters = 0;
    for (wreq *r = group, *nx; r; r = nx) {
        nx = r->next;
        if (r->rc && !r->msg[0])
            snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
        if (r->mdone_fn || r->done_fn) {
            finish_async(r); /* r is gone */
            continue;
        }
        waiters++;
        atomic_store_explicit(&r->done, WAKE_DONE, memory_order_release); /* r may be gone */
    }
    /* The generation moves before the relay is offered: whoever takes the
     * relay wakes every sleeper of the old generation. */
    atomic_fetch_add_explicit(&L->done_gen, 1, memory_order_release);
    if (!waiters)
        return;
    /* A group of one or two waiters (one client, a few) is woken directly:
     * a relay would cost its one waiter a system call for nothing. */
    if (L->wake_mode == WAKE_BULK || waiters <= WAKE_RELAY_MIN) {
        syscall(SYS_futex, &L->done_gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
        return;
    }
    atomic_store(&L->wake_relay, 1);
    syscall(SYS_futex, &L->done_gen, FUTEX_WAKE_PRIVATE, (int)L->wake_relay_n, NULL, NULL, 0);
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
    L->wake_relay_n = WAKE_RELAY_N_DEFAULT;
    if ((v = getenv("STELE_WAKE_RELAY_N")) && *v) {
        long n = strtol(v, NULL, 10);
        L->wake_relay_n = n < 1 ? 1 : n > 64 ? 64 : (uint32_t)n;
    }
    if ((v = getenv("STELE_WAKE_GATHER")) && *v)
        L->wake_gather = strtol(v, NULL, 10) != 0;
}
