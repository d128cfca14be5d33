/*
 * index.h - the local engine's indexes, kept in LMDB (index/data.mdb):
 *
 *   streams  stream name            -> stream state (idx_stream)
 *   revs     sid:be64 first_rev:be64 -> one commit of that stream: where its
 *                                       records are and how many
 *   ids      event id (16 bytes)    -> sid, revision, position (client-given
 *                                       ids only: for idempotent retries)
 *   pos      position:be64          -> loc of that event's record; sparse:
 *                                       the first event of every segment and
 *                                       then one every IDX_POS_STRIDE bytes
 *   meta     "ckpt"                 -> how far the log has been indexed
 *   snaps    sid:be64 revision:be64 -> a retained snapshot of that stream:
 *                                       where its record is (index_snap.c)
 *
 * The log is the truth and the index is derived from it: every group commit
 * updates the index in one LMDB write transaction together with the
 * checkpoint, so the index is always consistent with a prefix of the log
 * and opening catches it up from the checkpoint. Transactions are not
 * fsynced (MDB_NOSYNC): after a process crash LMDB is intact (its pages are
 * in the page cache) and the lost suffix is replayed from the log; after a
 * machine crash the store rebuilds the index from the log (see local.c).
 */
#ifndef STELE_INDEX_H
#define STELE_INDEX_H

#include <lmdb.h>
#include <stdint.h>

#define IDX_POS_STRIDE (64u * 1024u)

/* stream flags */
#define IDX_DELETED 0x1u
#define IDX_TOMBSTONED 0x2u

/*
 * A stream's state. The fields after `flags` come from the stream's latest
 * metadata record (docs/streams.md); all zero means "no metadata ever", and
 * such a stream's entry keeps the shorter 40-byte layout.
 */
typedef struct idx_stream {
    uint64_t sid;             /* internal stream number */
    uint64_t last_rev;        /* UINT64_MAX if no event ever */
    uint64_t last_pos;        /* UINT64_MAX if no event ever */
    uint64_t truncate_before; /* soft delete: revisions below are hidden */
    uint32_t flags;
    /* stream metadata */
    uint64_t max_age_us;      /* 0: none */
    uint64_t max_count;       /* 0: none */
    uint64_t meta_tb;         /* metadata truncate-before, 0: none */
    uint32_t max_snapshots;   /* 0: the default */
    uint64_t meta_seq;        /* metadata records written (version + 1), 0: none */
    uint64_t meta_loc;        /* loc of the latest metadata record, 0: none */
} idx_stream;

typedef struct idx_commit {
    uint64_t sid;
    uint64_t first_rev;
    uint64_t loc;
    uint64_t first_pos;
    uint32_t count;
    uint32_t bytes;
} idx_commit;

typedef struct idx_ckpt {
    uint64_t loc;          /* log indexed up to here (next record) */
    uint64_t next_pos;     /* next position to assign */
    uint64_t next_sid;     /* next stream number */
    uint64_t last_pos_loc; /* loc of the newest sparse pos entry */
    uint64_t streams;      /* number of streams */
    uint64_t log_bytes;    /* bytes of records in the log */
    uint64_t last_commit;  /* loc of the newest commit, UINT64_MAX if none */
} idx_ckpt;

typedef struct idx {
    MDB_env *env;
    MDB_dbi streams, revs, ids, pos, meta, snaps;
    int has_snaps; /* 0 only in a read-only open of an index made before snapshots */
    uint64_t reserved; /* bytes of data.mdb allocated on disk */
} idx;

/* Open (creating) the index in `dir`/index. `fresh` drops everything first
 * (a rebuild). */
int idx_open(const char *dir, int fresh, idx **out);
void idx_close(idx *ix);
int idx_sync(idx *ix);

int idx_begin(idx *ix, int rdonly, MDB_txn **txn);
/* Before a write transaction: make sure the disk blocks under the next
 * bytes of the map (up to IDX_HEADROOM) are allocated (see index.c). 0 or
 * STELE_ENOSPC / STELE_EIO. */
int idx_reserve(idx *ix);
#define IDX_HEADROOM (64ull << 20)
/* Commit; on failure the txn is gone. 0 or a STELE_E* code. */
int idx_commit_txn(MDB_txn *txn);

/* 0, STELE_ENOTFOUND or another error. */
int idx_stream_get(idx *ix, MDB_txn *txn, const char *name, size_t len, idx_stream *out);
int idx_stream_put(idx *ix, MDB_txn *txn, const char *name, size_t len, const idx_stream *st);

int idx_id_get(idx *ix, MDB_txn *txn, const uint8_t id[16], uint64_t *sid, uint64_t *rev,
               uint64_t *pos);
int idx_id_put(idx *ix, MDB_txn *txn, const uint8_t id[16], uint64_t sid, uint64_t rev,
               uint64_t pos);

int idx_commit_put(idx *ix, MDB_txn *txn, const idx_commit *c);

/* A cursor over one stream's commits. */
typedef struct idx_rev_cursor {
    MDB_cursor *cur;
    uint64_t sid;
} idx_rev_cursor;

int idx_rev_open(idx *ix, MDB_txn *txn, uint64_t sid, idx_rev_cursor *rc);
void idx_rev_close(idx_rev_cursor *rc);
/* The commit holding revision `rev`, or the nearest one after it
 * (forwards) / before it (backwards). 0, or STELE_ENOTFOUND. */
int idx_rev_seek(idx_rev_cursor *rc, uint64_t rev, int backwards, idx_commit *out);
/* Step to the next (or previous) commit of the stream. */
int idx_rev_step(idx_rev_cursor *rc, int backwards, idx_commit *out);

int idx_pos_put(idx *ix, MDB_txn *txn, uint64_t pos, uint64_t loc);
/* The sparse entry with the greatest position <= pos. 0 or ENOTFOUND. */
int idx_pos_floor(idx *ix, MDB_txn *txn, uint64_t pos, uint64_t *found, uint64_t *loc);

int idx_ckpt_get(idx *ix, MDB_txn *txn, idx_ckpt *out);
int idx_ckpt_put(idx *ix, MDB_txn *txn, const idx_ckpt *c);

/* Snapshots (index_snap.c): one entry per retained snapshot. */
typedef struct idx_snap {
    uint64_t revision;
    uint64_t loc;             /* its REC_SNAPSHOT record */
    uint32_t bytes;           /* the record's length */
    uint32_t schema;          /* schema version */
} idx_snap;

int idx_snap_put(idx *ix, MDB_txn *txn, uint64_t sid, const idx_snap *s);
int idx_snap_del(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t revision);
/* The entry at revision `rev` exactly. 0 or STELE_ENOTFOUND. */
int idx_snap_get(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t rev, idx_snap *out);
/* The entry with the greatest revision <= rev. 0 or STELE_ENOTFOUND. */
int idx_snap_floor(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t rev, idx_snap *out);
/* How many entries the stream has, and the lowest one (if any). */
int idx_snap_count(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t *n, idx_snap *lowest);
/* Visit every entry of the stream (all streams if `all`), in key order;
 * stops at the first non-zero return of `fn` and returns it. */
typedef int (*idx_snap_fn)(void *ctx, uint64_t sid, const idx_snap *s);
int idx_snap_each(idx *ix, MDB_txn *txn, uint64_t sid, int all, idx_snap_fn fn, void *ctx);

/* Open an existing index read-only (stele check). */
int idx_open_readonly(const char *dir, idx **out);
/* Entries in one table. */
int idx_count(idx *ix, MDB_txn *txn, MDB_dbi dbi, uint64_t *n);

/* Empty every table (before a rebuild). */
int idx_drop_all(idx *ix, MDB_txn *txn);

/* Map an LMDB return code to a STELE_E* code, setting the message. */
int idx_err(int mdb_rc, const char *what);

#endif
