/*
 * page.h - building the stele_page a read returns. A page owns copies of
 * the record bodies it holds (in an arena of large blocks), so events stay
 * valid after the log moves on, until stele_page_free().
 */
#ifndef STELE_PAGE_H
#define STELE_PAGE_H

#include "log/record.h"
#include "stele.h"

struct stele_page {
    stele_event *ev;
    size_t count, cap;
    uint8_t **blocks; /* arena blocks */
    size_t nblocks, blockcap;
    size_t block_used, block_size; /* of blocks[nblocks-1] */
    uint64_t bytes;   /* record bytes held */
    int has_next;
    uint64_t next;
};

/* Largest page in bytes: a read stops after about this much (but returns
 * at least one event). */
#define PAGE_MAX_BYTES (32u << 20)

int page_new(stele_page **out);
/* Copy the event record `r` into the page. 0 or STELE_ENOMEM. */
int page_add(stele_page *pg, const rec *r);
/* Move src's events into dst in reverse order, at most `max` of them, then
 * free src. */
int page_take_reversed(stele_page *dst, stele_page *src, size_t max);
/* 1 when the page is full by count or bytes. */
static inline int page_full(const stele_page *pg, size_t limit)
{
    return pg->count >= limit || pg->bytes >= PAGE_MAX_BYTES;
}

#endif
