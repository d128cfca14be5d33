/*
 * page.c - stele_page: events in fixed segments plus an arena holding the
 * event bodies they point into, all in blocks recycled through the store's
 * pool. page_add copies an event's parts from neutral fields (page_event)
 * into one arena allocation laid out as
 *
 *   tag pointers | stream NUL | type NUL | tag NUL ... | data NUL | metadata NUL
 *
 * so an event costs one allocation and a few memcpys, and its strings are
 * C strings for callers that want them.
 */
#include "backend/page.h"

#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* ------------------------------------------------------------------ pool */

pool *pool_new(void)
{
    pool *pl = calloc(1, sizeof *pl);
    if (!pl)
        return NULL;
    pthread_mutex_init(&pl->mu, NULL);
    atomic_store(&pl->refs, 1);
    return pl;
}

void pool_ref(pool *pl)
{
    if (pl) /* NULL: an empty page made without a store's pool */
        atomic_fetch_add(&pl->refs, 1);
}

void pool_unref(pool *pl)
{
    if (!pl || atomic_fetch_sub(&pl->refs, 1) != 1)
        return;
    for (unsigned i = 0; i < pl->nfree; i++)
        free(pl->free[i]);
    pthread_mutex_destroy(&pl->mu);
    free(pl);
}

void *pool_get(pool *pl)
{
    void *b = NULL;
    pthread_mutex_lock(&pl->mu);
    if (pl->nfree)
        b = pl->free[--pl->nfree];
    pthread_mutex_unlock(&pl->mu);
    return b ? b : malloc(POOL_BLOCK);
}

void pool_put(pool *pl, void *block)
{
    if (!block)
        return;
    pthread_mutex_lock(&pl->mu);
    if (pl->nfree < POOL_KEEP) {
        pl->free[pl->nfree++] = block;
        block = NULL;
    }
    pthread_mutex_unlock(&pl->mu);
    free(block);
}

/* ------------------------------------------------------------------ page */

void page_expect(stele_page *pg, size_t limit) { pg->expect = limit; }

int page_new(pool *pl, stele_page **out)
{
    stele_page *pg = calloc(1, sizeof *pg);
    if (!pg)
        return err_set(STELE_ENOMEM, "out of memory");
    pg->pl = pl;
    pool_ref(pl);
    *out = pg;
    return 0;
}

static int track_block(stele_page *pg, void *b, int big)
{
    if (pg->nblocks == pg->blockcap) {
        size_t cap = pg->blockcap ? pg->blockcap * 2 : 16;
        void **nb = realloc(pg->blocks, cap * sizeof *nb);
        unsigned char *ng = nb ? realloc(pg->big, cap) : NULL;
        if (nb)
            pg->blocks = nb;
        if (!ng)
            return -1;
        pg->big = ng;
        pg->blockcap = cap;
    }
    pg->blocks[pg->nblocks] = b;
    pg->big[pg->nblocks] = (unsigned char)big;
    pg->nblocks++;
    return 0;
}

/* The first arena blocks of a page: malloc'd, from SMALL_FIRST doubling
 * to SMALL_LAST; then pool blocks. */
#define SMALL_FIRST (16u << 10)
#define SMALL_LAST (128u << 10)

static void *arena_alloc(stele_page *pg, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if (n > POOL_BLOCK / 4) {
        /* A large record gets a block of its own. */
        void *b = malloc(n);
        if (!b || track_block(pg, b, 1)) {
            free(b);
            return NULL;
        }
        return b;
    }
    if (!pg->cur || pg->cur_size - pg->block_used < n) {
        size_t size = pg->cur && pg->cur_size < POOL_BLOCK ? pg->cur_size * 2 : SMALL_FIRST;
        void *b;
        if ((!pg->expect || pg->expect < PAGE_SMALL_EVENTS) &&
            pg->small_bytes < 2 * SMALL_LAST - SMALL_FIRST && size <= SMALL_LAST && n <= size) {
            b = malloc(size);
            if (!b || track_block(pg, b, 1)) {
                free(b);
                return NULL;
            }
            pg->small_bytes += size;
        } else {
            size = POOL_BLOCK;
            b = pool_get(pg->pl);
            if (!b || track_block(pg, b, 0)) {
                pool_put(pg->pl, b);
                return NULL;
            }
        }
        pg->cur = b;
        pg->cur_size = size;
        pg->block_used = 0;
    }
    void *p = (char *)pg->cur + pg->block_used;
    pg->block_used += n;
    return p;
}

/* Room for one more event; NULL if out of memory. */
static stele_event *next_ev(stele_page *pg)
{
    size_t seg = pg->count / PAGE_EV_PER_SEG;
    if (seg == 0 && pg->count == pg->ev0cap) {
        /* The first segment grows by doubling (realloc: the page is being
         * built, nobody holds its events yet). */
        if (!pg->evseg) {
            pg->evseg = malloc(4 * sizeof *pg->evseg);
            if (!pg->evseg)
                return NULL;
            pg->evsegcap = 4;
            pg->evseg[0] = NULL;
            pg->nevseg = 1;
        }
        if (pg->expect >= PAGE_SMALL_EVENTS) {
            /* A large read: a whole pooled segment, as for the others. */
            stele_event *b = pool_get(pg->pl);
            if (!b)
                return NULL;
            pg->evseg[0] = b;
            pg->ev0cap = PAGE_EV_PER_SEG;
            pg->ev0_pooled = 1;
        } else {
            size_t cap = pg->ev0cap ? pg->ev0cap * 2 : pg->expect ? pg->expect : 16;
            if (cap > PAGE_EV_PER_SEG)
                cap = PAGE_EV_PER_SEG;
            stele_event *ns = realloc(pg->evseg[0], cap * sizeof *ns);
            if (!ns)
                return NULL;
            pg->evseg[0] = ns;
            pg->ev0cap = cap;
        }
    } else if (seg == pg->nevseg) {
        if (pg->nevseg == pg->evsegcap) {
            size_t cap = pg->evsegcap ? pg->evsegcap * 2 : 4;
            stele_event **ns = realloc(pg->evseg, cap * sizeof *ns);
            if (!ns)
                return NULL;
            pg->evseg = ns;
            pg->evsegcap = cap;
        }
        stele_event *b = pool_get(pg->pl);
        if (!b)
            return NULL;
        pg->evseg[pg->nevseg++] = b;
    }
    return &pg->evseg[seg][pg->count % PAGE_EV_PER_SEG];
}

int page_add(stele_page *pg, const page_event *in)
{
    stele_event *e = next_ev(pg);
    size_t tags_sz = in->ntags * sizeof(char *);
    size_t body_len = in->stream_len + 1 + in->type_len + 1 + in->data_len + 1 +
                      in->metadata_len + 1;
    uint64_t counted = PAGE_EVENT_FIXED + in->stream_len + in->type_len + in->data_len +
                       in->metadata_len;
    for (size_t i = 0; i < in->ntags; i++) {
        size_t tl = strlen(in->tags[i]);
        body_len += tl + 1;
        counted += tl;
    }
    uint8_t *mem = e ? arena_alloc(pg, tags_sz + body_len) : NULL;
    if (!mem)
        return err_set(STELE_ENOMEM, "out of memory");
    const char **tags = (const char **)(void *)mem;
    char *p = (char *)mem + tags_sz;
#define PAGE_PUT(dst, src, n)                                                                   \
    do {                                                                                       \
        dst = p;                                                                               \
        if (n)                                                                                 \
            memcpy(p, src, n);                                                                 \
        p[n] = 0;                                                                              \
        p += (n) + 1;                                                                          \
    } while (0)
    const char *s;
    PAGE_PUT(s, in->stream, in->stream_len);
    e->stream = s;
    PAGE_PUT(s, in->type, in->type_len);
    e->type = s;
    for (size_t i = 0; i < in->ntags; i++) {
        size_t tl = strlen(in->tags[i]);
        PAGE_PUT(tags[i], in->tags[i], tl);
    }
    PAGE_PUT(s, in->data, in->data_len);
    e->data = (const uint8_t *)s;
    PAGE_PUT(s, in->metadata, in->metadata_len);
    e->metadata = (const uint8_t *)s;
#undef PAGE_PUT
    memcpy(e->id, in->id, 16);
    e->stream_len = in->stream_len;
    e->type_len = in->type_len;
    e->tags = tags;
    e->ntags = in->ntags;
    e->data_len = in->data_len;
    e->metadata_len = in->metadata_len;
    e->flags = in->flags & (STELE_EVENT_JSON | STELE_META_JSON);
    e->created_us = in->created_us;
    e->revision = in->revision;
    e->position = in->position;
    pg->count++;
    pg->bytes += counted;
    return 0;
}

int page_take_reversed(stele_page *dst, stele_page *src, size_t max)
{
    int rc = 0;
    size_t take = src->count < max ? src->count : max;
    for (size_t i = 0; i < take && rc == 0; i++) {
        stele_event *e = next_ev(dst);
        if (!e) {
            rc = err_set(STELE_ENOMEM, "out of memory");
            break;
        }
        *e = *page_ev(src, src->count - 1 - i);
        dst->count++;
    }
    /* The events point into src's arena: hand its blocks over (before
     * dst's current block, which stays the one being filled). */
    for (size_t i = 0; i < src->nblocks && rc == 0; i++) {
        if (track_block(dst, src->blocks[i], src->big[i]))
            rc = err_set(STELE_ENOMEM, "out of memory");
    }
    if (rc == 0) {
        dst->bytes += src->bytes;
        src->nblocks = 0;
    }
    stele_page_free(src);
    return rc;
}

size_t stele_page_count(const stele_page *pg) { return pg ? pg->count : 0; }

const stele_event *stele_page_event(const stele_page *pg, size_t i)
{
    return pg && i < pg->count ? page_ev(pg, i) : NULL;
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
    for (size_t i = 0; i < pg->nblocks; i++) {
        if (pg->big[i])
            free(pg->blocks[i]);
        else
            pool_put(pg->pl, pg->blocks[i]);
    }
    if (pg->nevseg && pg->ev0_pooled)
        pool_put(pg->pl, pg->evseg[0]);
    else if (pg->nevseg)
        free(pg->evseg[0]);
    for (size_t i = 1; i < pg->nevseg; i++)
        pool_put(pg->pl, pg->evseg[i]);
    free(pg->blocks);
    free(pg->big);
    free(pg->evseg);
    free(pg->view);
    free(pg->links);
    pool_unref(pg->pl);
    free(pg);
}

void page_filter(stele_page *pg, int (*keep)(const void *ctx, const stele_event *e),
                 const void *ctx, size_t max)
{
    size_t w = 0;
    for (size_t i = 0; i < pg->count && w < max; i++) {
        stele_event *e = page_ev(pg, i);
        if (keep && !keep(ctx, e))
            continue;
        if (w != i) {
            *page_ev(pg, w) = *e;
            if (pg->links)
                pg->links[w] = pg->links[i];
        }
        w++;
    }
    pg->count = w;
}

int page_set_view(stele_page *pg, const char *name, size_t len)
{
    char *v = malloc(len + 1);
    if (!v)
        return err_set(STELE_ENOMEM, "out of memory");
    memcpy(v, name, len);
    v[len] = 0;
    free(pg->view);
    pg->view = v;
    return 0;
}

int page_set_link(stele_page *pg, size_t i, uint64_t revision)
{
    if (i >= pg->linkcap) {
        size_t cap = pg->linkcap ? pg->linkcap * 2 : 64;
        while (cap <= i)
            cap *= 2;
        uint64_t *nl = realloc(pg->links, cap * sizeof *nl);
        if (!nl)
            return err_set(STELE_ENOMEM, "out of memory");
        pg->links = nl;
        pg->linkcap = cap;
    }
    pg->links[i] = revision;
    return 0;
}

int stele_page_link(const stele_page *pg, size_t i, const char **view, uint64_t *revision)
{
    if (!pg || !pg->view || !pg->links || i >= pg->count)
        return 0;
    if (view)
        *view = pg->view;
    if (revision)
        *revision = pg->links[i];
    return 1;
}
