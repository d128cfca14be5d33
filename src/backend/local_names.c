/*
 * local_names.c - listing names in the local engine (stele_list_names):
 * streams from the index's streams table (keyed by name), categories and
 * event types from the secondary index (keyed by kind | name, each key's
 * count being its last run's ordinal plus the run's count). One read-only
 * LMDB transaction per call, so a page is one consistent snapshot; pages
 * resume by name ("after"), which stays valid across writes since names
 * are never renamed and keys never reorder.
 */
#include <string.h>

#include "backend/local_int.h"

typedef struct names_ctx {
    int (*fn)(void *ctx, const stele_name_info *info);
    void *ctx;
    char name[1024];
} names_ctx;

static int names_stream(void *ctx, const char *name, size_t len, const idx_stream *st)
{
    names_ctx *x = ctx;
    if (len >= sizeof x->name)
        len = sizeof x->name - 1; /* names are at most 255 bytes */
    memcpy(x->name, name, len);
    x->name[len] = 0;
    stele_name_info in = {
        .name = x->name,
        .count = st->last_rev == UINT64_MAX ? 0 : st->last_rev + 1,
        .last_position = st->last_pos,
        .deleted = (st->flags & IDX_DELETED) != 0,
        .tombstoned = (st->flags & IDX_TOMBSTONED) != 0,
    };
    return x->fn(x->ctx, &in);
}

static int names_key(void *ctx, const char *name, size_t len, uint64_t count)
{
    names_ctx *x = ctx;
    if (len >= sizeof x->name)
        len = sizeof x->name - 1;
    memcpy(x->name, name, len);
    x->name[len] = 0;
    stele_name_info in = {.name = x->name, .count = count};
    return x->fn(x->ctx, &in);
}

int local_list_names(backend *b, int kind, const char *prefix, const char *after, size_t limit,
                     unsigned flags, int (*fn)(void *ctx, const stele_name_info *info), void *ctx)
{
    local *L = (local *)b;
    MDB_txn *txn;
    int rc = idx_begin(L->ix, 1, &txn);
    if (rc)
        return rc;
    names_ctx x = {.fn = fn, .ctx = ctx};
    size_t plen = prefix ? strlen(prefix) : 0, alen = after ? strlen(after) : 0;
    int no_system = (flags & STELE_NAMES_NO_SYSTEM) != 0;
    if (kind == STELE_NAMES_STREAMS)
        rc = idx_stream_keys(L->ix, txn, prefix ? prefix : "", plen, after, alen, limit,
                             no_system, names_stream, &x);
    else
        rc = idx_sec_keys(L->ix, txn, kind == STELE_NAMES_CATEGORIES ? SEC_CATEGORY : SEC_TYPE,
                          prefix ? prefix : "", plen, after, alen, limit, no_system, names_key, &x);
    mdb_txn_abort(txn);
    return rc;
}
