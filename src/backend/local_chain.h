/*
 * local_chain.h - the local engine's hash chain (local_chain.c): the state
 * the writer keeps in struct local, and the calls local.c, local_recover.c
 * and local_check.c make, one line each.
 */
#ifndef STELE_LOCAL_CHAIN_H
#define STELE_LOCAL_CHAIN_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "stele.h"

struct local;
struct logf;

/* One commit of the group being written, between chain_seal_commit and
 * chain_group_done: where its chain record and records are in L->gbuf,
 * what its chain record will say, and its digest once hashed. */
typedef struct chain_job {
    size_t cr_off;            /* its chain record, before or after the commit */
    size_t from_off, to_off;  /* the commit's records */
    uint64_t loc;             /* the chain record's location in the log */
    uint64_t seq, next_pos;
    uint8_t digest[32];
    int failed;               /* libcrypto failed on it */
} chain_job;

typedef struct chain_state {
    /* writer-owned */
    int on;                /* writing chain records (not STELE_OPEN_NO_CHAIN) */
    int trailing;          /* each record after its commit (REC_CHAIN_TRAILING,
                            * local_chain.c "Trailing records"), else before */
    uint64_t seq;          /* the next commit's number */
    uint8_t hash[32];      /* the last chained commit's hash (zeros: none) */
    uint64_t next_pos;     /* the log's next position after that commit */
    /* SHA-256 fetched once (an implicit fetch per call costs about as much
     * as hashing a small commit); writer's, freed by chain_close */
    struct evp_md_st *md;
    struct evp_md_ctx_st *ctx;
    uint64_t anchor;       /* the chain record the index names (UINT64_MAX: none) */
    uint64_t last_loc;     /* the last chain record of the last group written
                            * (UINT64_MAX: none) */
    /* the group's commits awaiting their digests (writer-owned, read by the
     * hasher between chain_hash_start and chain_group_done) */
    chain_job *jobs;
    size_t njobs, jobs_cap;
    uint64_t job_bytes;
    int folded, folded_ok; /* chain_group_fold ran for the group (and folded it) */
    int fd;                /* the group's segment and where L->gbuf goes in it */
    uint64_t write_off;
    int64_t now;           /* the group's created time */
    /* The hasher thread: digests a large group's commits while the writer
     * indexes it (local_chain.c, "The hasher"). Under hmu: */
    pthread_t hasher;
    int hasher_started, hstop, writer_waiting;
    pthread_mutex_t hmu;
    pthread_cond_t hcv, wcv;
    size_t hjobs, hnext;   /* jobs handed to the hasher, the next unclaimed */
    _Atomic size_t hdone;  /* jobs digested (the writer spins on it briefly) */
    const uint8_t *hbase;  /* L->gbuf.p of the handed-over group */
    struct evp_md_ctx_st *hctx; /* the hasher's */
    /* the durable head, published after each group (under mu) */
    pthread_mutex_t mu;
    uint64_t pub_seq, pub_pos, pub_end;
    uint64_t pub_groups;   /* L->n_groups when the head was last published */
    pthread_cond_t pubcv;  /* broadcast then */
    uint8_t pub_hash[32];
    uint64_t rewrite_max;  /* STELE_CHAIN_REWRITE_MAX (local_chain.c, "The
                            * rewrite's range") */
    int rewrite_timed;     /* ... only while fdatasyncs are slow (not set) */
} chain_state;

/* Bytes of chain record each commit adds (0 when the chain is off). */
uint64_t chain_rec_bytes(struct local *L);
/* Mark the start of the commit about to be encoded at the end of L->gbuf:
 * with leading records, reserve its chain record there (the commit follows
 * it); with trailing ones, only note where the commit starts (its record
 * goes after it, in chain_seal_commit; the caller has planned room for
 * both). NULL when the chain is off. */
uint8_t *chain_reserve(struct local *L);
/* The commit's records are encoded from `mark` (after its leading record)
 * up to the end of L->gbuf: give it the chain's next number, write its
 * chain record pending (a trailing one appended to L->gbuf; prev and digest
 * come in chain_group_done) and, at a group's first commit, record where
 * the chain stands in the index (meta "chain"). No-op for mark NULL. */
int chain_seal_commit(struct local *L, MDB_txn *txn, uint8_t *mark, int64_t now);
/* The group's commits are all encoded and go to segment file fd at
 * write_off: a large group's are handed to the hasher thread (hasher 1),
 * to be digested while the writer writes and fsyncs the group. hasher 0:
 * the writer digests them itself (an overlapped group: local.c, "Overlap",
 * where waiting for a third thread before the acknowledgement did not pay). */
void chain_hash_start(struct local *L, int fd, uint64_t write_off, int hasher);
/* Digest what the hasher has not, wait for it and fold the hashes into the
 * group's chain records in L->gbuf: CPU only, so the writer may run it while
 * the syncer runs the group's fdatasync (local.c, "Overlap"). At most once
 * per group; chain_group_done runs it when nobody did. ok 0: only wait for
 * the hasher. An error fails the group. */
int chain_group_fold(struct local *L, int ok);
/* After the group is acknowledged, before the next: digest what the hasher
 * has not, fold the hashes, rewrite the group's chain records in place and
 * publish the head. ok 0 (the group failed): only wait for the hasher, so
 * L->gbuf is the writer's again. An error is a storage fault. */
int chain_group_done(struct local *L, int ok);
/* Another thread than the writer (a backup): wait until the chain records
 * of every group before log location `end` (an index checkpoint's) are
 * rewritten, i.e. their head published, or a storage fault stopped the
 * writer. */
void chain_wait_rewritten(struct local *L, uint64_t end);
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
