/*
 * names.c - stele_list_names: the API edge of listing stream, category
 * and type names (arguments checked here, the walk is the backend's).
 * The answer is one allocation: a header, the infos, then the names they
 * point to, so stele_names_free frees it at once.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "store/store_int.h"
#include "stele.h"
#include "util/util.h"

#define NAMES_MAX 10000

typedef struct names_acc {
    stele_name_info *infos; /* names as offsets into buf until the end */
    size_t n, cap;
    char *buf;
    size_t len, bcap;
} names_acc;

typedef struct names_block {
    size_t n;
    stele_name_info infos[];
} names_block;

static int names_add(void *ctx, const stele_name_info *in)
{
    names_acc *a = ctx;
    size_t l = strlen(in->name) + 1;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        stele_name_info *p = realloc(a->infos, cap * sizeof *p);
        if (!p)
            return err_set(STELE_ENOMEM, "out of memory listing names");
        a->infos = p;
        a->cap = cap;
    }
    if (a->len + l > a->bcap) {
        size_t cap = a->bcap ? a->bcap * 2 : 4096;
        while (cap < a->len + l)
            cap *= 2;
        char *p = realloc(a->buf, cap);
        if (!p)
            return err_set(STELE_ENOMEM, "out of memory listing names");
        a->buf = p;
        a->bcap = cap;
    }
    memcpy(a->buf + a->len, in->name, l);
    a->infos[a->n] = *in;
    a->infos[a->n].name = (const char *)(uintptr_t)a->len;
    a->n++;
    a->len += l;
    return 0;
}

int stele_list_names(stele_db *db, int kind, const char *prefix, const char *after,
                     size_t limit, unsigned flags, stele_name_info **out, size_t *n)
{
    err_clear();
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!db || !out || !n)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : !out ? "out" : "n");
    if (kind != STELE_NAMES_STREAMS && kind != STELE_NAMES_CATEGORIES && kind != STELE_NAMES_TYPES)
        return err_set(STELE_EINVAL, "kind %d is not STELE_NAMES_STREAMS, _CATEGORIES or _TYPES",
                       kind);
    if (limit < 1 || limit > NAMES_MAX)
        return err_set(STELE_EINVAL, "limit must be from 1 to %d", NAMES_MAX);
    if ((prefix && strlen(prefix) > 255) || (after && strlen(after) > 255))
        return err_set(STELE_EINVAL, "%s is longer than a name (255 bytes)",
                       prefix && strlen(prefix) > 255 ? "prefix" : "after");
    if (flags & ~STELE_NAMES_NO_SYSTEM)
        return err_set(STELE_EINVAL, "unknown flags 0x%x", flags & ~STELE_NAMES_NO_SYSTEM);
    if (!db->be->ops->list_names)
        return err_set(STELE_EINVAL, "this store's backend cannot list names");
    names_acc a = {0};
    int rc = db->be->ops->list_names(db->be, kind, prefix, after, limit, flags, names_add, &a);
    if (rc == 0 && a.n) {
        names_block *blk = malloc(sizeof *blk + a.n * sizeof(stele_name_info) + a.len);
        if (!blk) {
            rc = err_set(STELE_ENOMEM, "out of memory listing names");
        } else {
            char *names = (char *)&blk->infos[a.n];
            memcpy(names, a.buf, a.len);
            blk->n = a.n;
            for (size_t i = 0; i < a.n; i++) {
                blk->infos[i] = a.infos[i];
                blk->infos[i].name = names + (uintptr_t)a.infos[i].name;
            }
            *out = blk->infos;
            *n = a.n;
        }
    }
    free(a.infos);
    free(a.buf);
    return rc;
}

void stele_names_free(stele_name_info *list)
{
    if (list)
        free((char *)list - offsetof(names_block, infos));
}
