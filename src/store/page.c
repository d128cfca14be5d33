/*
 * page.c - stele_page: an array of stele_event plus an arena holding the
 * record bodies they point into. Bodies are copied whole (stream, type,
 * tags, data and metadata are contiguous in a record), so adding an event is
 * one memcpy and a few pointer fix-ups.
 */
#include "store/page.h"

#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define BLOCK_SIZE (256u << 10)

int page_new(stele_page **out)
{
    stele_page *pg = calloc(1, sizeof *pg);
    if (!pg)
        return err_set(STELE_ENOMEM, "out of memory");
    *out = pg;
    return 0;
}

static void *arena_alloc(stele_page *pg, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if (pg->nblocks == 0 || pg->block_size - pg->block_used < n) {
        if (pg->nblocks == pg->blockcap) {
            size_t cap = pg->blockcap ? pg->blockcap * 2 : 8;
            uint8_t **nb = realloc(pg->blocks, cap * sizeof *nb);
            if (!nb)
                return NULL;
            pg->blocks = nb;
            pg->blockcap = cap;
        }
        size_t size = n > BLOCK_SIZE ? n : BLOCK_SIZE;
        uint8_t *b = malloc(size);
        if (!b)
            return NULL;
        /* A block bigger than the standard holds one record; keep filling
         * the previous standard block after it by swapping them. */
        pg->blocks[pg->nblocks++] = b;
        if (size > BLOCK_SIZE && pg->nblocks > 1) {
            uint8_t *t = pg->blocks[pg->nblocks - 2];
            pg->blocks[pg->nblocks - 2] = b;
            pg->blocks[pg->nblocks - 1] = t;
            return b;
        }
        pg->block_size = size;
        pg->block_used = 0;
    }
    void *p = pg->blocks[pg->nblocks - 1] + pg->block_used;
    pg->block_used += n;
    return p;
}

int page_add(stele_page *pg, const rec *r)
{
    if (pg->count == pg->cap) {
        size_t cap = pg->cap ? pg->cap * 2 : 64;
        stele_event *ne = realloc(pg->ev, cap * sizeof *ne);
        if (!ne)
            return err_set(STELE_ENOMEM, "out of memory");
        pg->ev = ne;
        pg->cap = cap;
    }
    const uint8_t *body = (const uint8_t *)r->stream;
    size_t body_len = (size_t)(r->meta + r->meta_len - body);
    size_t tags_sz = r->ntags * sizeof(char *);
    uint8_t *mem = arena_alloc(pg, tags_sz + body_len);
    if (!mem)
        return err_set(STELE_ENOMEM, "out of memory");
    const char **tags = (const char **)(void *)mem;
    uint8_t *copy = mem + tags_sz;
    memcpy(copy, body, body_len);
    stele_event *e = &pg->ev[pg->count++];
    memcpy(e->id, r->id, 16);
    e->stream = (const char *)copy;
    e->stream_len = r->stream_len;
    e->type = (const char *)copy + ((const uint8_t *)r->type - body);
    e->type_len = r->type_len;
    const uint8_t *t = copy + (r->tags - body);
    for (unsigned i = 0; i < r->ntags; i++) {
        uint16_t tl = ld16(t);
        tags[i] = (const char *)t + 2;
        t += 3 + tl;
    }
    e->tags = tags;
    e->ntags = r->ntags;
    e->data = copy + (r->data - body);
    e->data_len = r->data_len;
    e->metadata = copy + (r->meta - body);
    e->metadata_len = r->meta_len;
    e->flags = r->flags & (STELE_EVENT_JSON | STELE_META_JSON);
    e->created_us = r->created_us;
    e->revision = r->revision;
    e->position = r->position;
    pg->bytes += r->len;
    return 0;
}

int page_take_reversed(stele_page *dst, stele_page *src, size_t max)
{
    int rc = 0;
    size_t take = src->count < max ? src->count : max;
    if (dst->cap - dst->count < take) {
        size_t cap = dst->count + take + 64;
        stele_event *ne = realloc(dst->ev, cap * sizeof *ne);
        if (!ne)
            rc = err_set(STELE_ENOMEM, "out of memory");
        else {
            dst->ev = ne;
            dst->cap = cap;
        }
    }
    if (rc == 0 && dst->blockcap - dst->nblocks < src->nblocks) {
        size_t cap = dst->nblocks + src->nblocks + 8;
        uint8_t **nb = realloc(dst->blocks, cap * sizeof *nb);
        if (!nb)
            rc = err_set(STELE_ENOMEM, "out of memory");
        else {
            dst->blocks = nb;
            dst->blockcap = cap;
        }
    }
    if (rc == 0) {
        for (size_t i = 0; i < take; i++)
            dst->ev[dst->count++] = src->ev[src->count - 1 - i];
        dst->bytes += src->bytes;
        /* src's blocks go before dst's current block, which stays last so
         * dst keeps filling it. */
        if (dst->nblocks) {
            uint8_t *cur = dst->blocks[dst->nblocks - 1];
            for (size_t i = 0; i < src->nblocks; i++)
                dst->blocks[dst->nblocks - 1 + i] = src->blocks[i];
            dst->nblocks += src->nblocks;
            dst->blocks[dst->nblocks - 1] = cur;
        } else if (src->nblocks) {
            for (size_t i = 0; i < src->nblocks; i++)
                dst->blocks[i] = src->blocks[i];
            dst->nblocks = src->nblocks;
            dst->block_size = dst->block_used = 0; /* full: next add starts a block */
        }
        src->nblocks = 0;
    }
    stele_page_free(src);
    return rc;
}

size_t stele_page_count(const stele_page *pg) { return pg ? pg->count : 0; }

const stele_event *stele_page_event(const stele_page *pg, size_t i)
{
    return pg && i < pg->count ? &pg->ev[i] : NULL;
}

int stele_page_next(const stele_page *pg, uint64_t *next)
{
    if (!pg || !pg->has_next)
        return 0;
    if (next)
        *next = pg->next;
    return 1;
}

void stele_page_free(stele_page *pg)
{
    if (!pg)
        return;
    for (size_t i = 0; i < pg->nblocks; i++)
        free(pg->blocks[i]);
    free(pg->blocks);
    free(pg->ev);
    free(pg);
}
