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
 * group rate. Two ways are here (STELE_WAKE; wake_config):
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
 *                    halves the writer's wake-up CPU; on the quiet 2-vCPU
 *                    machine it gave 64 x 1 10 % more events/s but twice
 *                    the p99 and half the group size (the relaying thread
 *                    waits for a CPU before anyone else is woken), and on
 *                    the loaded one it lost: docs/benchmarks.md, "Waking
 *                    the appenders" and the quiet runs of 2026-12-07. So
 *                    bulk is the default; relay is for throughput-bound
 *                    embedders.
 *
 * A third way, a tree (each waiter with its own futex word, every woken
 * waiter waking two more), was built, measured slower than bulk in every
 * run (each hop waits for a CPU; separate wake-ups cost more than one
 * batched one) and removed (docs/benchmarks.md, "Waking the appenders").
 *
 * The word. Waiters sleep on one store-wide word, done_gen, and each
 * checks its own request's `done` flag. The writer stores every waiter's
 * `done` (reading its `next` first: a waiter whose flag is set may return
 * and its request, on its stack, is gone), then bumps done_gen, then
 * wakes. A waiter reads done_gen before its flag, so
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
 * In both modes no appender returns before its group is durable and
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

/* The defaults of wake_config(). */
#define WAKE_MODE_DEFAULT WAKE_BULK
/* Relay: groups of at most this many waiters are woken by the writer. */
#define WAKE_RELAY_MIN 2
/* Relay: how many sleepers the writer wakes (the first to run takes the
 * relay; the others only check their flags). */
#define WAKE_RELAY_N_DEFAULT 1

/* Every waiter sleeps on the store's one word, done_gen ("The word"
 * above), until its own flag is set. */
void wake_wait(local *L, wreq *r)
{
    for (;;) {
        uint32_t gen = atomic_load_explicit(&L->done_gen, memory_order_acquire);
        if (atomic_load_explicit(&r->done, memory_order_acquire))
            return;
        syscall(SYS_futex, &L->done_gen, FUTEX_WAIT_PRIVATE, gen, NULL, NULL, 0);
        if (L->wake_mode == WAKE_RELAY &&
            atomic_load_explicit(&L->wake_relay, memory_order_relaxed) &&
            atomic_exchange(&L->wake_relay, 0))
            syscall(SYS_futex, &L->done_gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
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

/* Mark every waiter done, then wake them all (bulk) or one of them, which
 * wakes them all (relay). */
void wake_group(local *L, wreq *group)
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
        atomic_store_explicit(&r->done, 1, memory_order_release); /* r may be gone */
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

/* STELE_WAKE (bulk or relay), STELE_WAKE_RELAY_N (1..64): docs/operations.md,
 * "Waking the appenders". */
void wake_config(local *L)
{
    const char *v;
    L->wake_mode = WAKE_MODE_DEFAULT;
    if ((v = getenv("STELE_WAKE")) && *v)
        L->wake_mode = !strcmp(v, "bulk") ? WAKE_BULK : !strcmp(v, "relay") ? WAKE_RELAY
                                                                   : L->wake_mode;
    L->wake_relay_n = WAKE_RELAY_N_DEFAULT;
    if ((v = getenv("STELE_WAKE_RELAY_N")) && *v) {
        long n = strtol(v, NULL, 10);
        L->wake_relay_n = n < 1 ? 1 : n > 64 ? 64 : (uint32_t)n;
    }
}
