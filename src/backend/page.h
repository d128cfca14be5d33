/*
 * page.h - building the stele_page a read returns, and the block pool that
 * feeds it. Every backend builds its pages here from neutral event fields
 * (page_event), whatever its storage looks like; the store above reads
 * them. Nothing here knows the local engine's record format.
 *
 * A page owns copies of the record bodies it holds, so its events stay valid
 * after the log moves on, until stele_page_free(). A page costs about what
 * it holds: its first event segment grows by doubling (from 16 events, or
 * is sized for the read's limit: page_expect) and, unless the read asks for
 * many events, its first arena blocks are small (16 KiB, doubling to
 * 128 KiB), so the many small pages that servers keep per subscriber stay
 * small. Past that,
 * memory comes in 1 MiB blocks from a pool owned by the store: reads that
 * allocate fresh memory pay a page fault per 4 KiB (expensive on these
 * VMs), while recycled blocks are already mapped. The pool is
 * reference-counted by the store and by every live page, so a page freed
 * after stele_close() is still safe.
 */
#ifndef STELE_PAGE_H
#define STELE_PAGE_H

#include <pthread.h>
#include <stdatomic.h>

#include <stddef.h>
#include <stdint.h>

#include "stele.h"

#define POOL_BLOCK (1u << 20)
#define POOL_KEEP 64u /* free blocks kept for reuse (64 MiB) */

typedef struct pool {
    pthread_mutex_t mu;
    void *free[POOL_KEEP];
    unsigned nfree;
    _Atomic int refs;
} pool;

pool *pool_new(void);
void pool_ref(pool *pl);
void pool_unref(pool *pl);
/* A POOL_BLOCK-sized block, or NULL. */
void *pool_get(pool *pl);
void pool_put(pool *pl, void *block);

#define PAGE_EV_PER_SEG (POOL_BLOCK / sizeof(stele_event))

struct stele_page {
    pool *pl;
    stele_event **evseg; /* events in segments of PAGE_EV_PER_SEG */
    size_t nevseg, evsegcap;
    size_t ev0cap;       /* events the first segment (malloc'd) has room for */
    size_t expect;       /* page_expect(): the read's limit, 0 if unknown */
    int ev0_pooled;      /* the first segment is a pool block (a large read) */
    size_t count;
    void **blocks;       /* arena blocks; pool blocks unless in big[] */
    unsigned char *big;  /* big[i] = 1: blocks[i] was malloc'd (oversized) */
    size_t nblocks, blockcap;
    size_t block_used;   /* in the current block */
    size_t cur_size;     /* its size */
    size_t small_bytes;  /* bytes of small (malloc'd, growing) arena blocks so far */
    void *cur;           /* the block being filled, or NULL */
    uint64_t bytes;      /* event bytes held (page_event_bytes) */
    int has_next;
    uint64_t next;
    /* A read of a system view stream ($ce-...): the view's name and each
     * event's revision in it (links[i] for event i); NULL otherwise. */
    char *view;
    uint64_t *links;
    size_t linkcap;
};

/* Largest page in bytes: a read stops after about this much (but returns
 * at least one event). */
#define PAGE_MAX_BYTES (32u << 20)

int page_new(pool *pl, stele_page **out);
/* The read will return at most `limit` events: room for them comes in one
 * allocation, and a page of many events (PAGE_SMALL_EVENTS or more) takes
 * pooled blocks from the start rather than small growing ones. */
#define PAGE_SMALL_EVENTS 256u
void page_expect(stele_page *pg, size_t limit);
/* One event as a backend read it: every pointer valid for the duration of
 * page_add(), which copies what they point to. Strings need not be
 * NUL-terminated (lengths given), except tags, which are NUL-terminated
 * strings. */
typedef struct page_event {
    const char *stream;
    size_t stream_len;
    const char *type;
    size_t type_len;
    const char *const *tags;
    size_t ntags;
    const void *data;
    size_t data_len;
    const void *metadata;
    size_t metadata_len;
    const uint8_t *id; /* 16 bytes */
    uint32_t flags;    /* STELE_EVENT_JSON | STELE_META_JSON; others ignored */
    int64_t created_us;
    uint64_t revision;
    uint64_t position;
} page_event;
/* The bytes an event counts for in a page (pg->bytes, PAGE_MAX_BYTES):
 * PAGE_EVENT_FIXED plus its stream, type, tags, data and metadata. */
#define PAGE_EVENT_FIXED 72u
/* Copy event `e` into the page (stream, type, tags, data and metadata
 * each NUL-terminated in the copy). 0 or STELE_ENOMEM. */
int page_add(stele_page *pg, const page_event *e);
/* Event i of the page. */
static inline stele_event *page_ev(const stele_page *pg, size_t i)
{
    return &pg->evseg[i / PAGE_EV_PER_SEG][i % PAGE_EV_PER_SEG];
}
/* Copy src's events into dst in reverse order, at most `max` of them, then
 * free src. */
int page_take_reversed(stele_page *dst, stele_page *src, size_t max);
/* Keep only the events for which keep() returns 1, in order, and at most
 * `max` of them (their memory stays with the page until it is freed). */
void page_filter(stele_page *pg, int (*keep)(const void *ctx, const stele_event *e),
                 const void *ctx, size_t max);
/* Make pg a page of view `name` (len bytes): 0 or ENOMEM. */
int page_set_view(stele_page *pg, const char *name, size_t len);
/* Event i's revision in the view (i <= count; grows the table). */
int page_set_link(stele_page *pg, size_t i, uint64_t revision);
/* 1 when the page is full by count or bytes. */
static inline int page_full(const stele_page *pg, size_t limit)
{
    return pg->count >= limit || pg->bytes >= PAGE_MAX_BYTES;
}

#endif
