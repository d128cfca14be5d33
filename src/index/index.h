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
 *            "format"               -> IDX_FORMAT and the IDX_F_* flags the
 *                                       index was built with
 *   sec      kind:u8 name           -> sorted runs of events (position, loc,
 *                                       count, bytes) under each category,
 *                                       type, tag, correlation id and actor
 *                                       (index_sec.c)
 *   time     created:be64 position:be64 -> nothing; the first position of
 *                                       every distinct commit time
 *
 * The log is the truth and the index is derived from it: every group commit
 * updates the index in one LMDB write transaction together with the
 * checkpoint, so the index is always consistent with a prefix of the log
 * and opening catches it up from the checkpoint. Transactions are not
 * fsynced (MDB_NOSYNC): after a process crash LMDB is intact (its pages are
 * in the page cache) and the lost suffix is replayed from the log; after a
 * machine crash the store goes back to the last durable checkpoint (an
 * fsynced snapshot named in index/durable, index_durable.c) and replays
 * the log after it, or rebuilds the index from the log when there is none
 * (see local_ckpt.c).
 */
#ifndef STELE_INDEX_H
#define STELE_INDEX_H

#include <lmdb.h>
#include <stdint.h>

#define IDX_POS_STRIDE (64u * 1024u)

/* The index's format. An index of another format, or without one, is
 * dropped at open and rebuilt from the log (the log is the truth).
 *   1  streams, revs, ids, pos, meta (no "format" entry)
 *   2  + sec and time (secondary indexes), and the "format" entry
 *   3  sec items carry their ordinal under their key (28 bytes)
 *   4  causation ids ('u') and the seeds' metadata names (correlation_id,
 *      causation_id, user_id) are indexed */
#define IDX_FORMAT 4u
/* format flags: the secondary indexes (sec, time) are maintained. */
#define IDX_F_SEC 0x1u

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
    int has_snaps;      /* snaps is open (always, in an index of this format) */
    MDB_dbi sec, time;  /* secondary indexes (index_sec.c) */
    int sec_on;         /* sec and time are maintained (IDX_F_SEC) */
    uint64_t reserved; /* bytes of data.mdb allocated on disk */
    /* The read transaction on the snapshot index/durable names, held until
     * the next durable checkpoint is written (index_durable.c). */
    MDB_txn *durable_held;
    uint64_t durable_txnid;
    uint64_t resident_max; /* IDX_RESIDENT_MAX or its override */
    void *map;             /* where data.mdb is mapped (NULL: unknown) */
    uint64_t trimmed_ns;   /* when idx_reserve last dropped the map's pages */
} idx;

/* Open (creating) the index in `dir`/index. `fresh` drops everything first
 * (a rebuild). `sec_on`: maintain the secondary indexes. Everything is
 * dropped too (and so rebuilt by recovery) when the index has another
 * format, or was kept without secondary indexes and `sec_on` asks for
 * them; with `sec_on` = 0 the secondary tables are emptied. */
int idx_open(const char *dir, int fresh, int sec_on, idx **out);
void idx_close(idx *ix);
int idx_sync(idx *ix);

int idx_begin(idx *ix, int rdonly, MDB_txn **txn);
/* Before a write transaction: make sure the disk blocks under the next
 * bytes of the map (up to IDX_HEADROOM) are allocated (see index.c). 0 or
 * STELE_ENOSPC / STELE_EIO. At most once a second, when the map's used
 * part is over IDX_RESIDENT_MAX, it also drops the map's pages from the
 * process's resident set (they stay in the page cache; index.c). */
int idx_reserve(idx *ix);
#define IDX_HEADROOM (64ull << 20)
/* STELE_INDEX_RESIDENT_MB overrides it; 0 never drops. */
#define IDX_RESIDENT_MAX (64ull << 20)
/* Commit; on failure the txn is gone. 0 or a STELE_E* code. */
int idx_commit_txn(MDB_txn *txn);

/* 0, STELE_ENOTFOUND or another error. */
int idx_stream_get(idx *ix, MDB_txn *txn, const char *name, size_t len, idx_stream *out);
int idx_stream_put(idx *ix, MDB_txn *txn, const char *name, size_t len, const idx_stream *st);
/* The streams in name order (byte order), those starting with `prefix`
 * and after `after` (exclusive; NULL or empty: from the first), at most
 * `limit`, without names starting with '$' if `no_system`: fn(ctx, name,
 * len, entry) for each; a non-zero return stops and is returned. */
typedef int (*idx_stream_fn)(void *ctx, const char *name, size_t len, const idx_stream *st);
int idx_stream_keys(idx *ix, MDB_txn *txn, const char *prefix, size_t plen, const char *after,
                    size_t alen, size_t limit, int no_system, idx_stream_fn fn, void *ctx);

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
/* Keep sid's `keep` (>= 1) highest snapshot entries, delete the others. */
int idx_snap_trim(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t keep);
/* idx_snap_put of an entry the caller knows is sid's highest (a state at
 * the stream's last revision), then idx_snap_trim with the same cursor. */
int idx_snap_put_top(idx *ix, MDB_txn *txn, uint64_t sid, const idx_snap *s, uint64_t keep);
/* Point sid's entry at `rev` to loc `to` if it points at `from`;
 * STELE_ENOTFOUND if there is no such entry or it points elsewhere. */
int idx_snap_repoint(idx *ix, MDB_txn *txn, uint64_t sid, uint64_t rev, uint64_t from,
                     uint64_t to);
/* Visit every entry of the stream (all streams if `all`), in key order;
 * stops at the first non-zero return of `fn` and returns it. */
typedef int (*idx_snap_fn)(void *ctx, uint64_t sid, const idx_snap *s);
int idx_snap_each(idx *ix, MDB_txn *txn, uint64_t sid, int all, idx_snap_fn fn, void *ctx);

/* Open an existing index read-only (stele check). */
int idx_open_readonly(const char *dir, idx **out);
/* Entries in one table. */
int idx_count(idx *ix, MDB_txn *txn, MDB_dbi dbi, uint64_t *n);

/* Empty every table (before a rebuild); the format entry is kept. */
int idx_drop_all(idx *ix, MDB_txn *txn);

/* ------------------------------------------------ secondary (index_sec.c) */

/* Kinds of secondary index entries (the first byte of a sec key). */
enum {
    SEC_CATEGORY = 'c',
    SEC_TYPE = 't',
    SEC_TAG = 'g',
    SEC_CORRELATION = 'r',
    SEC_ACTOR = 'a',
    SEC_CAUSATION = 'u',
};

/* The category of a stream name: the bytes before its first '-', or the
 * whole name when it has none or starts with '-'. Returns its length. */
size_t sec_category_len(const char *stream, size_t len);

/*
 * Index the events of one or more whole commits: `recs` holds their
 * encoded records (len bytes, the first at log location `loc`; delete and
 * tombstone records are skipped). Adds each event's sec items (runs made
 * per commit) and, for the first event's creation time, a time entry if it
 * is new.
 * The writer (for the records it is about to write) and recovery (for the
 * records it replays) both call this, so they cannot index differently.
 * The records' checksums are not checked again (rec_decode_trusted): pass
 * only bytes this process encoded or verified. No-op when the secondary
 * indexes are off.
 */
int idx_sec_commit(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc);
/* The inverse, for scavenging: delete the sec items of the commits in
 * `recs` (as they were indexed, at `loc`). To move or thin out a commit,
 * uncommit its old records, then commit what remains at its new place.
 * Time entries stay (they remain valid bounds when events disappear). */
int idx_sec_uncommit(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc);

/* `stele check`: are the sec items of the commits in `recs` (as
 * idx_sec_commit makes them) in the index, and, if `first_time` (the
 * first commit created at its time), its time entry? Adds the items found
 * to *items. 0, or ECORRUPT naming what is missing. */
int idx_sec_check(idx *ix, MDB_txn *txn, const uint8_t *recs, size_t len, uint64_t loc,
                  int first_time, uint64_t *items);

/* The first position whose event was created at or after `t_us`:
 * 0, or STELE_ENOTFOUND when every event is older. */
int idx_time_first(idx *ix, MDB_txn *txn, int64_t t_us, uint64_t *pos);

/* A run of events under one key: positions start .. start+count-1, whose
 * records are adjacent in the log from `loc`, `bytes` long in all.
 * `ord` is the ordinal of its first event under the key (index_sec.c). */
typedef struct idx_run {
    uint64_t start;
    uint64_t loc;
    uint32_t count;
    uint32_t bytes;
    uint64_t ord;
} idx_run;

#define SEC_ITEM 28               /* bytes of one run item */
#define SEC_RUN_MAX 4096u         /* events in one run at most */
#define SEC_RUN_BYTES (1u << 20)  /* bytes of records in one run at most
                                     (a run of one record may be larger) */

/* A cursor over the runs indexed under one key. */
typedef struct idx_sec_cursor {
    MDB_cursor *cur;
    uint8_t key[1 + 255];
    size_t klen;
} idx_sec_cursor;

int idx_sec_open(idx *ix, MDB_txn *txn, int kind, const char *name, size_t len,
                 idx_sec_cursor *sc);
void idx_sec_close(idx_sec_cursor *sc);
/* Forwards: the run holding `pos`, or else the first after it; backwards:
 * the run holding `pos`, or else the last before it. 0 with *out, or
 * STELE_ENOTFOUND. */
int idx_sec_seek(idx_sec_cursor *sc, uint64_t pos, int backwards, idx_run *out);
/* The next (previous) run after the cursor's. */
int idx_sec_step(idx_sec_cursor *sc, int backwards, idx_run *out);
/* The last run of the key starting before position `below` (the end of
 * what a reader may see). 0 with *out, or STELE_ENOTFOUND. */
int idx_sec_last(idx_sec_cursor *sc, uint64_t below, idx_run *out);
/* The run holding ordinal `ord` (which must be below the end of the
 * key's last run). 0 with *out, STELE_ENOTFOUND, or ECORRUPT if the
 * ordinals do not follow the positions. */
int idx_sec_seek_ord(idx_sec_cursor *sc, uint64_t ord, idx_run *out);

/* The distinct keys of one kind (SEC_CATEGORY, SEC_TYPE, ...) in byte
 * order, those starting with `prefix` and after `after` (exclusive; NULL
 * or empty: from the first), at most `limit`, without names starting
 * with '$' if `no_system`: fn(ctx, name, len, events indexed under the
 * key) for each; a non-zero return stops and is returned. EINVAL when the
 * secondary indexes are off. */
typedef int (*idx_key_fn)(void *ctx, const char *name, size_t len, uint64_t count);
int idx_sec_keys(idx *ix, MDB_txn *txn, int kind, const char *prefix, size_t plen,
                 const char *after, size_t alen, size_t limit, int no_system, idx_key_fn fn,
                 void *ctx);

/* The stream with the least internal number >= sid (forwards) or the
 * greatest <= sid (backwards) that has a commit, and its last commit
 * (index.c). 0, or STELE_ENOTFOUND when there is none. */
int idx_rev_stream_at(idx *ix, MDB_txn *txn, uint64_t sid, int backwards, idx_commit *last);

/* ------------------------------ durable checkpoints (index_durable.c) */

/* What idx_durable_prepare found after a machine crash. */
typedef struct idx_durable_info {
    int restored;        /* data.mdb was set back to snapshot `txnid` */
    uint64_t txnid;
    uint8_t ckpt[56];    /* the index checkpoint stored in that snapshot */
    char why[208];       /* why not restored (no file, bad checksum ...) */
} idx_durable_info;

/* Make the current index snapshot durable and name it in index/durable
 * (`dir` is the store's directory): capture it under LMDB's write lock,
 * sync the map, write the file, then hold a read transaction on it until
 * the next call (or idx_durable_release). 0 with *txnid, STELE_ENOTFOUND
 * when there is nothing to name yet, or an error (the previous durable
 * checkpoint then stays valid and held). Not concurrently with itself. */
int idx_durable_take(idx *ix, const char *dir, uint64_t *txnid);
/* Stop holding the named snapshot (before idx_close). */
void idx_durable_release(idx *ix);
/* Before the index is opened. `crashed` (the machine crashed while the
 * store was open): with `use`, set data.mdb back to the snapshot that
 * index/durable names (info->restored) if that file is valid; otherwise
 * remove data.mdb (the caller rebuilds). In every case index/durable is
 * then removed durably, since nothing protects its snapshot any more.
 * 0 or an error. */
int idx_durable_prepare(const char *dir, int crashed, int use, idx_durable_info *info);
/* Remove index/durable (and a leftover temporary file) durably: 0 or an
 * error. Done at close too, once its snapshot is no longer held. */
int idx_durable_forget(const char *dir);
/* After opening a restored index: is it the snapshot `info` names
 * (transaction id, checkpoint, each table's first and last entries)?
 * 0, or STELE_ECORRUPT saying what differs (the caller rebuilds). */
int idx_durable_check(idx *ix, const idx_durable_info *info);
/* Remove index/data.mdb and lock.mdb (the index is closed). */
int idx_remove_files(const char *dir);

/* Map an LMDB return code to a STELE_E* code, setting the message. */
int idx_err(int mdb_rc, const char *what);

#endif
