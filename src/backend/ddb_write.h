/*
 * ddb_write.h - the DynamoDB writer's shared types (ddb_write.c: requests,
 * the transaction and the writer thread; ddb_plan.c: reading the group's
 * states, planning each append against them, the idempotency path and the
 * writer's cache). The design is at the top of ddb_write.c.
 */
#ifndef STELE_DDB_WRITE_H
#define STELE_DDB_WRITE_H

#include <stdio.h>
#include <string.h>

#include "backend/ddb_int.h"

typedef struct dstr {
    const char *name;
    size_t len;
    int64_t expected;
    const stele_snapshot_in *state;
    uint64_t first_rev; /* planned */
    size_t nev;
} dstr;

typedef struct drec {
    size_t s;
    const stele_event_in *ev;
    const uint8_t *id;
    int made;
    uint64_t rev, pos; /* planned */
    /* planned view ordinals (UINT64_MAX: none): under the stream's
     * category, the event's type and correlation id, and the stream's own
     * among streams (on revision 0 only) */
    uint64_t ce, et, bc, sno;
} drec;

/* DR_REMOVE: a soft delete or tombstone (ddb_deletes.c): streams[0] is
 * `$deletes` with the one `$streamDeleted` event, streams[1] the stream
 * removed (nev 0); it is always alone in its group. */
enum { DR_APPEND, DR_MULTI, DR_REMOVE };

struct dreq {
    int kind;
    dstr *streams;
    size_t nstreams;
    const stele_condition *cond; /* DR_MULTI: NULL or the DCB condition */
    drec *recs;
    size_t nrecs;
    meta_ids *meta;  /* nrecs: the ids in each event's JSON metadata */
    size_t nkeys;    /* distinct view counters the request moves */
    size_t actions;
    uint64_t bytes;
    int rc;
    char msg[512];
    int dup;         /* a duplicate id was reported: take the idempotency path */
    int idempotent;  /* settled as a retry of an earlier append */
    int planned;     /* part of the transaction being built */
    int deferred;    /* shares a client id with an earlier append of the group: next group */
    /* results */
    stele_append_result res;        /* DR_APPEND, DR_REMOVE ($deletes' event) */
    stele_append_result *per;       /* DR_MULTI: nstreams */
    stele_multi_result mres;
    /* completion */
    append_done_fn done;
    stele_append_multi_cb mdone;
    void *ctx;
    _Atomic uint32_t finished;
    dreq *next;
    /* DR_REMOVE: tombstone or soft delete, the removed stream's visible
     * revision before it (the caller's `current`), its event's id and
     * its data and metadata (removes_build(), made when planned) */
    int rm_tomb;
    uint64_t rm_current;
    uint8_t rm_id[16];
    stele_event_in rm_ev;
    uint8_t *rm_buf;
};

static inline void ddb_req_fail(dreq *r, int rc)
{
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", stele_errmsg());
}

/* A stream as the group sees it. */
typedef struct gstream {
    const char *name;
    size_t len;
    dstate st;     /* as read */
    uint64_t last, last_pos; /* after the group's planned appends */
    int deleted;
    int touched;
    int rm;        /* planned removal: 0 none, 1 soft delete, 2 tombstone */
    uint64_t rm_tb; /* a soft delete's truncate-before */
} gstream;

/*
 * A view counter as the group sees it: an item of the streams table keyed
 * "\x02" + kind + name (kind 'c' category, 't' event type, 'b' correlation
 * id) whose `next` is the number of events ever written under the name;
 * the n-th such event has view ordinal n - 1 ($ce-, $et-, $bc-).
 */
typedef struct gkey {
    char kind;
    const char *name;
    size_t len;
    int found;
    uint64_t read, next; /* as read; after the group's planned appends */
} gkey;

struct group {
    dreq *reqs[DDB_MAX_ACTIONS];
    size_t nreqs;
    gstream gs[DDB_MAX_ACTIONS];
    size_t ngs;
    gkey keys[DDB_MAX_ACTIONS];
    size_t nkeys;
    uint64_t seq;
    int64_t seq_t;
    uint64_t sno, sno_next; /* streams numbered ($streams), as read; planned */
    int seq_found;
};

static inline gkey *gk_find(group *g, char kind, const char *name, size_t len)
{
    for (size_t i = 0; i < g->nkeys; i++)
        if (g->keys[i].kind == kind && g->keys[i].len == len && !memcmp(g->keys[i].name, name, len))
            return &g->keys[i];
    return NULL;
}

/* The k-th view counter (k < 3) that record i of r moves: 1 with its
 * kind and name, 0 when the event has none of that kind (no correlation
 * id). */
static inline int ddb_rec_key(const dreq *r, size_t i, int k, char *kind, const char **name, size_t *len)
{
    const dstr *s = &r->streams[r->recs[i].s];
    if (k == 0) {
        *kind = 'c';
        *name = s->name;
        *len = ddb_category_len(s->name, s->len);
    } else if (k == 1) {
        *kind = 't';
        *name = r->recs[i].ev->type;
        *len = strlen(*name);
    } else {
        *kind = 'b';
        *name = r->meta[i].correlation;
        *len = r->meta[i].correlation_len;
    }
    return *len != 0;
}

static inline gstream *gs_find(group *g, const char *name, size_t len)
{
    for (size_t i = 0; i < g->ngs; i++)
        if (g->gs[i].len == len && !memcmp(g->gs[i].name, name, len))
            return &g->gs[i];
    return NULL;
}

/*
 * The writer's cache: the sequencer and the streams as its own last
 * transactions left them. Planning from it saves the BatchGetItem of the
 * next group; it is safe because every input of a plan is a condition of
 * the transaction (the sequencer's value, each stream's ver), so a stale
 * entry only costs a cancelled transaction and a fresh read. A request that
 * fails its checks against cached states is planned again after a fresh
 * read before its error is reported. Only the writer thread uses it.
 */
typedef struct centry {
    char *name;
    size_t len;
    uint64_t ver, last, last_pos;
    int deleted;
} centry;

#define DDB_CACHE 4096u

typedef struct dcache {
    int seq_known;
    uint64_t seq;
    int64_t seq_t;
    uint64_t sno;
    centry e[DDB_CACHE];
} dcache;

/* ddb_plan.c */
void ddb_cache_put(dcache *c, const gstream *gs);
void ddb_cache_drop(dcache *c, const char *name, size_t len);
void ddb_cache_put_key(dcache *c, const gkey *k);
void ddb_cache_drop_key(dcache *c, const gkey *k);
/* The group's streams and the sequencer from the cache where it has them
 * (fresh = 0), the rest in consistent BatchGetItems; *cached: something
 * came from the cache. */
int ddb_group_read(ddb *D, group *g, int fresh, int *cached);
/* Plan r against the group's states (see ddb_plan.c). */
int ddb_plan(ddb *D, group *g, dreq *r, uint64_t *next);
/* r accepted: its revisions, positions and view ordinals from the group's
 * states and *next, and its result. */
void ddb_plan_accept(group *g, dreq *r, uint64_t *next);

/* ddb_write.c: requests (the writer completes each exactly once). */
void ddb_req_free(dreq *r);
/* Check r against the transaction limits, queue it and wait for the
 * writer (the synchronous calls): r's result code, with its message set as
 * the error (ETOOBIG or ECLOSED before queueing). The caller reads r's
 * results, then frees it. */
int ddb_req_run(ddb *D, dreq *r);

/* ddb_deletes.c: a removal's plan and its stream's item. */
int ddb_plan_remove(group *g, dreq *r, uint64_t *next);
json_t *ddb_remove_item(ddb *D, const gstream *gs);

#endif
