/*
 * local_chain.h - the local engine's hash chain (local_chain.c): the state
 * the writer keeps in struct local, and the calls local.c, local_recover.c
 * and local_check.c make, one line each.
 */
#ifndef STELE_LOCAL_CHAIN_H
#define STELE_LOCAL_CHAIN_H

#include <lmdb.h>
#include <pthread.h>
#include <stdint.h>

#include "stele.h"

struct local;
struct logf;

typedef struct chain_state {
    /* writer-owned */
    int on;                /* writing chain records (not STELE_OPEN_NO_CHAIN) */
    uint64_t seq;          /* the next commit's number */
    uint8_t hash[32];      /* the last chained commit's hash (zeros: none) */
    uint64_t next_pos;     /* the log's next position after that commit */
    /* SHA-256 fetched once (an implicit fetch per call costs about as much
     * as hashing a small commit); writer's, freed by chain_close */
    struct evp_md_st *md;
    struct evp_md_ctx_st *ctx;
    uint64_t anchor;       /* the chain record the index names (UINT64_MAX: none) */
    /* the durable head, published after each group (under mu) */
    pthread_mutex_t mu;
    uint64_t pub_seq, pub_pos, pub_end;
    uint8_t pub_hash[32];
} chain_state;

/* Bytes of chain record each commit adds (0 when the chain is off). */
uint64_t chain_rec_bytes(struct local *L);
/* Reserve the chain record of the commit about to be encoded at the end of
 * L->gbuf; NULL when the chain is off. */
uint8_t *chain_reserve(struct local *L);
/* The commit's records are encoded after `rec` up to the end of L->gbuf:
 * fill in its chain record `cr` and advance the chain; records where the chain
 * stands in the index (meta "chain"). No-op for rec NULL. */
int chain_seal_commit(struct local *L, MDB_txn *txn, uint8_t *cr, int64_t now);
/* After a group is durable: publish the head (end = L->ck.loc). */
void chain_publish(struct local *L);
/* After recovery: find the chain's head, cut a chain record whose commit
 * was torn away, refuse STELE_OPEN_NO_CHAIN on a chained store. */
int chain_open(struct local *L);
/* Free what chain_open made (local_close). */
void chain_close(struct local *L);
/* `stele check`: verify the chain of a closed store; on success append a
 * line to note (the chain's length). ECORRUPT names the first broken
 * commit. */
int chain_check(struct logf *lg, char *note, size_t note_len);

#endif
