/*
 * group_mem.c - the claims of shared consumer groups (backend.h,
 * backend_group_ops) kept in this process's memory: the local engine's
 * implementation. Only one process can have a local store open, so every
 * claim belongs to that process; the table still follows the contract to
 * the letter (frontier, claims with owners and expiries, steal, sync,
 * reset), so the group runtime runs the same code on every backend and the
 * local tests exercise it.
 *
 * State: a list of keys per backend handle, each with its frontier and an
 * array of claims; one mutex for all (the calls are rare and short: one per
 * group read of new events, per checkpoint and per lease renewal).
 * Expiries are on the monotonic clock. group_mem_free() drops a handle's
 * keys when the local engine closes, so a handle opened later at the same
 * address starts empty: a reopened store's groups start from their saved
 * checkpoints, as they always did.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "util/util.h"

typedef struct mclaim {
    uint64_t from, to;
    int64_t expires_ms;
    char owner[STELE_NODE_NAME_MAX];
} mclaim;

typedef struct mkey {
    struct mkey *next;
    backend *b;
    uint64_t frontier;
    mclaim *v;
    size_t n, cap;
    char key[];
} mkey;

static pthread_mutex_t mem_mu = PTHREAD_MUTEX_INITIALIZER;
static mkey *mem_keys;

static int64_t now_ms(void) { return (int64_t)(time_mono_ns() / 1000000u); }

static mkey *key_find(backend *b, const char *key)
{
    for (mkey *k = mem_keys; k; k = k->next)
        if (k->b == b && !strcmp(k->key, key))
            return k;
    return NULL;
}

static int mem_frontier(backend *b, const char *key, uint64_t start, uint64_t *frontier)
{
    pthread_mutex_lock(&mem_mu);
    mkey *k = key_find(b, key);
    if (!k) {
        size_t len = strlen(key);
        if (!(k = calloc(1, sizeof *k + len + 1))) {
            pthread_mutex_unlock(&mem_mu);
            return err_set(STELE_ENOMEM, "out of memory");
        }
        k->b = b;
        k->frontier = start;
        memcpy(k->key, key, len + 1);
        k->next = mem_keys;
        mem_keys = k;
    }
    *frontier = k->frontier;
    pthread_mutex_unlock(&mem_mu);
    return 0;
}

static int mem_claim(backend *b, const char *key, const char *owner, uint64_t from, uint64_t to,
                     uint32_t ttl_ms, uint64_t *frontier)
{
    pthread_mutex_lock(&mem_mu);
    int rc = 0;
    mkey *k = key_find(b, key);
    if (!k) {
        rc = err_set(STELE_ENOTFOUND, "group claims: no state for '%s'", key);
    } else if (k->frontier != from) {
        *frontier = k->frontier;
        rc = err_set(STELE_EWRONGREV, "group claims: the frontier moved");
    } else if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 8;
        mclaim *v = realloc(k->v, cap * sizeof *v);
        if (!v)
            rc = err_set(STELE_ENOMEM, "out of memory");
        else {
            k->v = v;
            k->cap = cap;
        }
    }
    if (rc == 0) {
        mclaim *c = &k->v[k->n++];
        c->from = from;
        c->to = to;
        c->expires_ms = now_ms() + ttl_ms;
        snprintf(c->owner, sizeof c->owner, "%s", owner);
        k->frontier = to;
        *frontier = to;
    }
    pthread_mutex_unlock(&mem_mu);
    return rc;
}

static int mem_steal(backend *b, const char *key, const char *owner, uint32_t ttl_ms,
                     group_claim *out)
{
    pthread_mutex_lock(&mem_mu);
    mkey *k = key_find(b, key);
    int64_t now = now_ms();
    mclaim *best = NULL;
    for (size_t i = 0; k && i < k->n; i++)
        if (k->v[i].expires_ms <= now && strcmp(k->v[i].owner, owner) && (!best || k->v[i].from < best->from))
            best = &k->v[i];
    int rc;
    if (best) {
        best->expires_ms = now + ttl_ms;
        snprintf(best->owner, sizeof best->owner, "%s", owner);
        *out = (group_claim){best->from, best->to};
        rc = 0;
    } else {
        rc = STELE_ENOTFOUND;
    }
    pthread_mutex_unlock(&mem_mu);
    return rc;
}

static int mem_sync(backend *b, const char *key, const char *owner, const group_claim *v,
                    size_t n, uint32_t ttl_ms, uint64_t *frontier, uint64_t *others)
{
    pthread_mutex_lock(&mem_mu);
    mkey *k = key_find(b, key);
    if (!k) {
        pthread_mutex_unlock(&mem_mu);
        return err_set(STELE_ENOTFOUND, "group claims: no state for '%s'", key);
    }
    int64_t exp = ttl_ms ? now_ms() + ttl_ms : 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < k->n; j++)
            if (k->v[j].to == v[i].to && !strcmp(k->v[j].owner, owner)) {
                if (v[i].from >= v[i].to)
                    k->v[j--] = k->v[--k->n];
                else if (v[i].from > k->v[j].from)
                    k->v[j].from = v[i].from;
                break;
            }
    uint64_t low = STELE_NONE;
    for (size_t j = 0; j < k->n; j++) {
        if (!strcmp(k->v[j].owner, owner)) {
            k->v[j].expires_ms = exp;
            if (!ttl_ms)
                k->v[j].owner[0] = '\0'; /* released: anyone's, this owner's too */
        } else if (low == STELE_NONE || k->v[j].from < low)
            low = k->v[j].from;
    }
    *frontier = k->frontier;
    *others = low;
    pthread_mutex_unlock(&mem_mu);
    return 0;
}

static int mem_reset(backend *b, const char *key, uint64_t pos)
{
    pthread_mutex_lock(&mem_mu);
    for (mkey **pp = &mem_keys; *pp; pp = &(*pp)->next) {
        mkey *k = *pp;
        if (k->b != b || strcmp(k->key, key))
            continue;
        k->n = 0;
        if (pos == STELE_NONE) {
            *pp = k->next;
            free(k->v);
            free(k);
        } else {
            k->frontier = pos;
        }
        break;
    }
    pthread_mutex_unlock(&mem_mu);
    return 0;
}

void group_mem_free(backend *b)
{
    pthread_mutex_lock(&mem_mu);
    for (mkey **pp = &mem_keys; *pp;) {
        mkey *k = *pp;
        if (k->b == b) {
            *pp = k->next;
            free(k->v);
            free(k);
        } else {
            pp = &k->next;
        }
    }
    pthread_mutex_unlock(&mem_mu);
}

const backend_group_ops group_mem_ops = {
    .frontier = mem_frontier,
    .claim = mem_claim,
    .steal = mem_steal,
    .sync = mem_sync,
    .reset = mem_reset,
};
