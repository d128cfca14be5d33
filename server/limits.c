/*
 * limits.c - the server's memory budget, the allocator's settings, and the
 * sizing of pages by bytes (docs/limits.md).
 *
 * Budget. The server's own memory is its anonymous resident memory: the
 * heap and anonymous mappings (buffers, pages, decoded messages). The
 * store's LMDB indexes are file mappings: the kernel can drop those pages
 * at any time, so they do not count. limits_over() reads
 * /proc/self/statm (resident minus shared) at most every SAMPLE_MS and says
 * whether it is above cfg.memory_budget; new work (HTTP requests, gRPC
 * calls, subscriptions) is then refused with 503 BUSY / RESOURCE_EXHAUSTED
 * until it is back under. Work already running keeps going: each
 * connection, call and subscriber is bounded by itself (back-pressure), so
 * what it holds drains as its client reads or goes away.
 *
 * The allocator (glibc). Two behaviours keep memory from going back to the
 * system after load: glibc raises its mmap threshold each time a large
 * mmapped block is freed (up to 32 MiB), after which large buffers come
 * from the heap, whose free middle parts free() never returns (it only
 * trims the top); and each thread may get its own arena. Fixing the
 * thresholds with mallopt() would turn the adjustment off, but it costs
 * every request that builds a large temporary buffer an mmap, page faults
 * and a munmap (measured: NDJSON and JSON reads 20-30% more CPU per event).
 * So the allocator is left as it is, and limits_tick() calls malloc_trim(0)
 * once the anonymous memory has grown TRIM_STEP beyond what it was after
 * the last trim and load went down (fewer connections), or while over the
 * budget: that walks every arena and gives back the free pages in the
 * middle of the heaps too (madvise(MADV_DONTNEED)). Measured: three rounds
 * of 1,024 gRPC subscriptions that do not read each leave the server at
 * its baseline.
 *
 * Pages by bytes. A page of events is read with a count limit (libstele
 * pages also stop at about 32 MiB). A reader that must hold its page until
 * its client takes it (SSE, gRPC, NDJSON, JSON pages) sizes its next count
 * from the largest event it has seen: count = target bytes / that size,
 * between 1 and the reader's maximum, starting small, so 512 KiB events
 * are read one or two at a time and 100-byte events a thousand at a time.
 */
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server_int.h"

#define SAMPLE_MS 20
#define TRIM_STEP (16u << 20)
#define PAGE_START_EVENTS 4

/* Anonymous resident bytes of this process (resident - shared), or 0. */
static size_t anon_rss(server *s)
{
    char text[128];
    if (s->statm_fd < 0)
        return 0;
    ssize_t n = pread(s->statm_fd, text, sizeof text - 1, 0);
    if (n <= 0)
        return 0;
    text[n] = 0;
    unsigned long size, resident, shared;
    if (sscanf(text, "%lu %lu %lu", &size, &resident, &shared) != 3 || resident < shared)
        return 0;
    return (size_t)(resident - shared) * (size_t)sysconf(_SC_PAGESIZE);
}

void limits_init(server *s)
{
    s->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    s->mem_anon = anon_rss(s);
    s->mem_trimmed = s->mem_anon;
    s->mem_sampled_ms = now_ms();
}

void limits_free(server *s)
{
    if (s->statm_fd >= 0)
        close(s->statm_fd);
    s->statm_fd = -1;
}

int limits_over(server *s)
{
    if (!s->cfg.memory_budget)
        return 0;
    int64_t now = now_ms();
    if (now - s->mem_sampled_ms >= SAMPLE_MS) {
        s->mem_anon = anon_rss(s);
        s->mem_sampled_ms = now;
    }
    if (s->mem_anon <= s->cfg.memory_budget)
        return 0;
    s->m.busy_refusals++;
    return 1;
}

void limits_tick(server *s)
{
    s->mem_anon = anon_rss(s);
    s->mem_sampled_ms = now_ms();
    /* Trim when memory grew well past the last trim and the load dropped
     * (fewer connections than at the last tick), or when over budget. */
    int over = s->cfg.memory_budget && s->mem_anon > s->cfg.memory_budget;
    if ((s->mem_anon > s->mem_trimmed + TRIM_STEP && s->nconns < s->mem_last_conns) || over ||
        (s->mem_anon > s->mem_trimmed + TRIM_STEP && s->nconns == 0)) {
        malloc_trim(0);
        s->mem_anon = anon_rss(s);
        s->mem_trimmed = s->mem_anon;
        s->m.mem_trims++;
    } else if (s->mem_anon < s->mem_trimmed) {
        s->mem_trimmed = s->mem_anon;
    }
    s->mem_last_conns = s->nconns;
}

int limits_subscriptions_full(server *s, char *msg, size_t len)
{
    size_t n = sse_count(s) + s->subscriptions;
    if (n < s->cfg.max_subscriptions)
        return 0;
    s->m.limit_refusals++;
    snprintf(msg, len,
             "the server has %zu subscriptions open, its limit (--max-subscriptions %zu): "
             "close one or retry later",
             n, s->cfg.max_subscriptions);
    return 1;
}

/* ------------------------------------------------------------ pages */

size_t pager_limit(const pager *p, size_t target_bytes, size_t max_events)
{
    size_t n;
    if (!p->seen)
        n = PAGE_START_EVENTS;
    else
        n = target_bytes / (p->event_bytes ? p->event_bytes : 1);
    if (n < 1)
        n = 1;
    return n < max_events ? n : max_events;
}

/* What an event costs in memory and on the wire, about: its bytes plus
 * the JSON or protobuf around them (base64 for binary data: 4/3). */
static size_t event_cost(const stele_event *e)
{
    size_t data = e->flags & STELE_EVENT_JSON ? e->data_len : e->data_len / 3 * 4 + 4;
    return data + e->metadata_len / 3 * 4 + e->type_len + e->stream_len + 256;
}

void pager_observe(pager *p, const stele_page *pg)
{
    size_t n = stele_page_count(pg), big = 0;
    for (size_t i = 0; i < n; i++) {
        size_t b = event_cost(stele_page_event(pg, i));
        if (b > big)
            big = b;
    }
    if (n) {
        p->event_bytes = big;
        p->seen = 1;
    }
}
