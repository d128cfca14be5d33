/*
 * stele.h - the public interface of libstele, the Stele event store library.
 *
 * This is the only header an embedder includes. Every handle is an opaque
 * type. Every fallible call returns an int: 0 on success, a negative
 * STELE_E* code on failure; stele_strerror() names the code and
 * stele_errmsg() gives the precise message of the calling thread's last
 * failure ("stream name has a control character at byte 3").
 *
 * Words (see docs/architecture.md):
 *   stream    a named, ordered sequence of events ("Order-123").
 *   revision  an event's 0-based number inside its stream.
 *   position  an event's number in the global log ($all): starts at 0,
 *             gapless and in commit order.
 *   append    one atomic, durable write of 1..N events to one stream. When
 *             stele_append() returns 0 the events are on disk (fdatasync).
 *
 * Threads: a stele_db may be used from any number of threads at once.
 * Appends from all threads are funnelled to one writer thread that commits
 * them in groups; reads run in the calling thread and never wait for the
 * writer.
 */
#ifndef STELE_H
#define STELE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STELE_VERSION "0.1.0"

/*
 * Error codes. One table (X-macro) generates the enum, stele_strerror()
 * and stele_errname(), which the server uses as the stable code in HTTP and
 * gRPC error bodies.
 */
#define STELE_ERRORS(X)                                                          \
    X(EINVAL, -1, "invalid argument")                                            \
    X(ENOTFOUND, -2, "stream not found")                                         \
    X(EWRONGREV, -3, "wrong expected revision")                                  \
    X(EDELETED, -4, "stream is deleted")                                         \
    X(ETOOBIG, -5, "too large")                                                  \
    X(EIDCONFLICT, -6, "event id already used at another position")              \
    X(EREADONLY, -7, "store is read-only after a storage fault")                 \
    X(EIO, -8, "I/O error")                                                      \
    X(ENOSPC, -9, "no space left on device")                                     \
    X(ECORRUPT, -10, "store is damaged")                                         \
    X(ENOMEM, -11, "out of memory")                                              \
    X(ELOCKED, -12, "store is in use by another process")                        \
    X(ECLOSED, -13, "store is closing")                                          \
    X(EVERSION, -14, "unsupported store format version")                         \
    X(EINTERNAL, -15, "internal error")

enum {
#define STELE_ERRENUM_(name, code, text) STELE_##name = (code),
    STELE_ERRORS(STELE_ERRENUM_)
#undef STELE_ERRENUM_
};

/** Text for an error code: "wrong expected revision". Static storage. */
const char *stele_strerror(int code);

/** Stable name of an error code without the E: "WRONGREV", "OK". Static. */
const char *stele_errname(int code);

/**
 * The message of the calling thread's most recent failed call, with
 * details ("event 3: type is empty"). Valid until the thread's next call
 * into libstele. Never NULL ("" if nothing failed yet).
 */
const char *stele_errmsg(void);

/* ---------------------------------------------------------------- opening */

typedef struct stele_db stele_db;

/** Options for stele_open(). Zero means "the default" for every field. */
typedef struct stele_options {
    /** Bytes per log segment file. Default 64 MiB, minimum 64 KiB. */
    uint64_t segment_size;
    /** Largest event (type + data + metadata + tags). Default 16 MiB. */
    uint64_t max_event_size;
    /** Largest append (all its events). Default 64 MiB. */
    uint64_t max_append_size;
    /** STELE_OPEN_* flags. */
    uint32_t flags;
} stele_options;

/** Verify every record checksum of the log at open (slow on big stores). */
#define STELE_OPEN_VERIFY 0x1u
/** Do not create the directory or a new store: fail with ENOTFOUND. */
#define STELE_OPEN_NOCREATE 0x2u
/**
 * Do not maintain the secondary indexes (category, event type, tag,
 * correlation id, actor, time): appends write less, and stele_read_query()
 * and stele_read_stream_as_of() fail with EINVAL. Opening the store later
 * without this flag rebuilds every index from the log once.
 */
#define STELE_OPEN_NO_INDEXES 0x4u

/**
 * Open (creating if needed) the store in directory `dir`.
 * Recovers after a crash: a torn or partial commit at the end of the log is
 * cut off; damage anywhere else fails with STELE_ECORRUPT and a message that
 * names the segment file and byte offset. Only one process may have a store
 * open (STELE_ELOCKED). `opts` may be NULL; it is not kept.
 * On success *out is a handle the caller closes with stele_close().
 */
int stele_open(const char *dir, const stele_options *opts, stele_db **out);

/**
 * Close the store: waits for appends already queued, syncs the indexes,
 * marks the store cleanly closed and frees the handle. NULL is a no-op.
 * The caller must ensure no other thread is still using `db`.
 */
void stele_close(stele_db *db);

/* --------------------------------------------------------------- events */

/** Event data flag: `data` is JSON (the server returns it as JSON). */
#define STELE_EVENT_JSON 0x1u
/** Event flag: `metadata` is JSON. */
#define STELE_META_JSON 0x2u

/** An event to append. All pointers are borrowed for the call only. */
typedef struct stele_event_in {
    /** 16-byte UUID, or NULL: the store makes a UUIDv7. Not the nil UUID. */
    const uint8_t *id;
    /** Event type, NUL-terminated UTF-8, 1..255 bytes, no control chars. */
    const char *type;
    const void *data;
    size_t data_len;
    const void *metadata;
    size_t metadata_len;
    /** Tags: `ntags` (<= 64) NUL-terminated UTF-8 strings of 1..255 bytes. */
    const char *const *tags;
    size_t ntags;
    /** STELE_EVENT_JSON | STELE_META_JSON. */
    uint32_t flags;
} stele_event_in;

/**
 * A stored event. All pointers point into the page that returned it and
 * stay valid until stele_page_free() on that page. `stream`, `type` and
 * each tag are NUL-terminated.
 */
typedef struct stele_event {
    uint8_t id[16];
    const char *stream;
    size_t stream_len;
    const char *type;
    size_t type_len;
    const void *data;
    size_t data_len;
    const void *metadata;
    size_t metadata_len;
    const char *const *tags;
    size_t ntags;
    uint32_t flags;
    /** Server time of the commit, microseconds since the Unix epoch. */
    int64_t created_us;
    uint64_t revision;
    uint64_t position;
} stele_event;

/* --------------------------------------------------------------- append */

/* Expected revision of an append or delete: one of these, or an exact
 * revision >= 0. */
#define STELE_ANY (-2)           /* no check */
#define STELE_NO_STREAM (-1)     /* the stream must not exist */
#define STELE_STREAM_EXISTS (-4) /* the stream must exist */

/** Revision/position value meaning "none" (no stream) or "the end". */
#define STELE_NONE UINT64_MAX
#define STELE_END UINT64_MAX

typedef struct stele_append_result {
    uint64_t first_revision;
    uint64_t last_revision;
    uint64_t first_position;
    uint64_t last_position;
    /** 1 if this append was a retry of one already written: nothing new
     *  was written and the fields above describe the original append. */
    int idempotent;
    /** On STELE_EWRONGREV: the stream's current last revision, or
     *  STELE_NONE if it has no events (never written or deleted). */
    uint64_t current_revision;
} stele_append_result;

/**
 * Append `n` (>= 1) events atomically to `stream` if its revision matches
 * `expected` (STELE_ANY, STELE_NO_STREAM, STELE_STREAM_EXISTS or an exact
 * last revision). Returns only once the events are durable on disk.
 *
 * Idempotent retries (KurrentDB's rule): if the events' ids were already
 * written by an append to the same stream at the place `expected` names
 * (any place in the stream for STELE_ANY / STELE_STREAM_EXISTS), the call
 * returns 0 with res->idempotent = 1 and the original result, writing
 * nothing. The same ids anywhere else give STELE_EIDCONFLICT.
 *
 * Errors: EINVAL (bad name, type, tag, id; empty append; duplicate id in the
 * append), ETOOBIG (event or append over the limits), EWRONGREV (with
 * res->current_revision), EDELETED (tombstoned stream), EIDCONFLICT,
 * EREADONLY (a storage fault happened earlier; reopen the store), EIO /
 * ENOSPC (writing or syncing this append's group failed: it was not
 * acknowledged, and after reopening it may be wholly present or wholly
 * absent, never in part; retry it with the same event ids to make the retry
 * idempotent; the store is now read-only), ECLOSED. `res` may be NULL.
 *
 * Stream names: 1..255 bytes of UTF-8 without control characters, not
 * starting with '$' (reserved for system streams).
 */
int stele_append(stele_db *db, const char *stream, int64_t expected,
                 const stele_event_in *events, size_t n,
                 stele_append_result *res);

/**
 * Completion of stele_append_async(): `rc` and `res` as stele_append would
 * return them; `errmsg` is the message ("" on success), valid during the
 * call only. Runs on the store's writer thread: it must be quick, must not
 * block, and must not call into libstele (hand the result to your own
 * thread, e.g. through a pipe or eventfd).
 */
typedef void (*stele_append_cb)(void *ctx, int rc, const stele_append_result *res,
                                const char *errmsg);

/**
 * Queue an append without waiting for it (for event loops). Validates
 * everything stele_append validates first: on a bad argument it returns the
 * error at once and never calls `cb`. Otherwise returns 0 and calls `cb`
 * exactly once, after the events are durable or the append failed. The
 * store copies what it needs: `stream` and `events` may be freed as soon as
 * this returns. Close the store only after every callback has run (close
 * waits for queued appends, which then complete normally).
 */
int stele_append_async(stele_db *db, const char *stream, int64_t expected,
                       const stele_event_in *events, size_t n, stele_append_cb cb,
                       void *ctx);

/* ----------------------------------------------------------------- reads */

/** A page of events returned by a read. Opaque; free with stele_page_free. */
typedef struct stele_page stele_page;

#define STELE_FORWARDS 0
#define STELE_BACKWARDS 1

/**
 * Read up to `limit` events of `stream` starting at revision `from`
 * (inclusive) in `direction`. Backwards, `from` = STELE_END starts at the
 * last event. A page also stops early at about 32 MiB of events (but holds
 * at least one). Events hidden by a soft delete are not returned.
 * Errors: ENOTFOUND (never written, or soft-deleted and not written since),
 * EDELETED (tombstoned), EINVAL, ECORRUPT (a record failed its checksum; the
 * message names segment and offset).
 * On success *out is a page the caller frees with stele_page_free().
 */
int stele_read_stream(stele_db *db, const char *stream, uint64_t from,
                      int direction, size_t limit, stele_page **out);

/**
 * Read up to `limit` events of $all (every stream, in position order)
 * starting at position `from` (inclusive). Backwards, STELE_END starts at
 * the last event. Only committed events are seen.
 */
int stele_read_all(stele_db *db, uint64_t from, int direction, size_t limit,
                   stele_page **out);

/** Number of events in the page. */
size_t stele_page_count(const stele_page *page);

/** Event i (0 <= i < count). Valid until stele_page_free(page). */
const stele_event *stele_page_event(const stele_page *page, size_t i);

/**
 * Where the next page starts: the revision (stream reads) or position
 * ($all reads) to pass as `from`. Returns 1 and sets *next if more events
 * may follow in this direction, 0 at the end (*next untouched).
 */
int stele_page_next(const stele_page *page, uint64_t *next);

/** Free a page and every event in it. NULL is a no-op. */
void stele_page_free(stele_page *page);

/* --------------------------------------------------------------- queries */

/*
 * Queries read events across streams through the secondary indexes, which
 * the store updates in the same transaction as every append: an event is
 * in every index as soon as its append returns. Results are in position
 * order (forwards or backwards) and paged by position like $all reads:
 * stele_page_next() gives the position to pass as `from` for the next page.
 * Events hidden from stream reads (soft delete, tombstone, retention) are
 * hidden from queries too, except for STELE_QUERY_ALL, which is $all.
 * docs/queries.md describes every kind.
 */

/** Kinds of query (stele_query.kind). */
#define STELE_QUERY_CATEGORY 1    /* streams "<key>-..." (KurrentDB's $ce-<key>) */
#define STELE_QUERY_TYPE 2        /* events of type <key> */
#define STELE_QUERY_TAG 3         /* events tagged <key> */
#define STELE_QUERY_CORRELATION 4 /* metadata $correlationId / correlationId = <key> */
#define STELE_QUERY_ACTOR 5       /* metadata $actor / userId / actorId = <key> */
#define STELE_QUERY_ALL 6         /* $all (no key), usually with a time range */

/**
 * A query. Zero-initialise, then set what you need. All pointers are
 * borrowed for the call only.
 *
 * The category of a stream is its name up to the first '-' ("Order" for
 * "Order-1", "Order" for "Order-1-2"), or the whole name when it has no
 * '-' or starts with one. The correlation id and the actor are read from
 * JSON metadata (STELE_META_JSON): the first usable top-level string of
 * "$correlationId", "correlationId", and of "$actor", "userId", "actorId".
 */
typedef struct stele_query {
    /** STELE_QUERY_*. */
    int kind;
    /** The category, type, tag, correlation id or actor: NUL-terminated
     *  UTF-8, 1..255 bytes, no control characters. NULL for ALL. */
    const char *key;
    /** Optional (NULL: none): only events of this type. Not with TYPE or
     *  ALL. With CATEGORY this is seed 003's "aggregate type" index. */
    const char *type;
    /** Time range on the events' created time (microseconds since the Unix
     *  epoch): created >= after_us if has_after, created < before_us if
     *  has_before. after_us > before_us is EINVAL; equal is empty. */
    int has_after, has_before;
    int64_t after_us, before_us;
    /** Position to start at, inclusive. Backwards, STELE_END starts at the
     *  newest event. */
    uint64_t from;
    /** STELE_FORWARDS or STELE_BACKWARDS. */
    int direction;
    /** At most this many events in the page (it also stops at ~32 MiB). */
    size_t limit;
} stele_query;

/**
 * Run a query: one page of matching events in position order.
 * Errors: EINVAL (unknown kind, empty or invalid key or type, a category
 * key containing '-', a type restriction on TYPE or ALL, after > before,
 * bad direction, or a store opened with STELE_OPEN_NO_INDEXES), ECORRUPT.
 * On success *out is a page the caller frees with stele_page_free();
 * stele_page_next() gives the next `from` (a position). A page may end
 * with a next position even when every later match turns out hidden; the
 * next page is then empty and has no next.
 */
int stele_read_query(stele_db *db, const stele_query *q, stele_page **out);

/**
 * Temporal stream read: stele_read_stream() limited to the stream's prefix
 * up to revision `to` (inclusive), "the stream as it was at revision to".
 * Forwards it stops after `to`; backwards it starts at min(from, to).
 * Errors as stele_read_stream().
 */
int stele_read_stream_to(stele_db *db, const char *stream, uint64_t from, int direction,
                         size_t limit, uint64_t to, stele_page **out);

/**
 * Temporal stream read by time: the prefix of the stream committed at or
 * before `as_of_us` (microseconds since the Unix epoch), "the stream as it
 * was at that moment". An empty page if it had no events then (the stream
 * must exist now: errors as stele_read_stream()). EINVAL on a store opened
 * with STELE_OPEN_NO_INDEXES (it needs the time index).
 */
int stele_read_stream_as_of(stele_db *db, const char *stream, int64_t as_of_us, uint64_t from,
                            int direction, size_t limit, stele_page **out);

/* -------------------------------------------------------------- streams */

typedef struct stele_stream_info {
    /** Last revision ever written, STELE_NONE if never written. */
    uint64_t last_revision;
    /** Position of the last event, STELE_NONE if never written. */
    uint64_t last_position;
    /** Revisions below this are hidden (soft delete). 0 if none. */
    uint64_t truncate_before;
    /** 1 if soft-deleted and not written since. */
    int deleted;
    /** 1 if tombstoned (permanently deleted). */
    int tombstoned;
} stele_stream_info;

/**
 * The head of a stream. Returns 0 for any stream that was ever written,
 * deleted or not (check info->deleted / tombstoned); ENOTFOUND if never.
 */
int stele_stream_head(stele_db *db, const char *stream, stele_stream_info *info);

/**
 * Soft-delete a stream: its events are hidden from reads of the stream
 * (they stay in $all until scavenged). Appending again recreates the
 * stream and continues its revisions. `expected` as for stele_append.
 * Errors: ENOTFOUND, EDELETED, EWRONGREV (*current set if not NULL).
 * Durable before it returns.
 */
int stele_delete_stream(stele_db *db, const char *stream, int64_t expected,
                        uint64_t *current);

/**
 * Tombstone a stream: deleted forever; reads, appends and deletes of it fail
 * with EDELETED. Works on a stream that was never written, too (reserving
 * the name). Durable before it returns.
 */
int stele_tombstone_stream(stele_db *db, const char *stream, int64_t expected,
                           uint64_t *current);

/* ----------------------------------------------------------------- stats */

typedef struct stele_stats {
    uint64_t events;        /* events in the log (= next position) */
    uint64_t streams;       /* streams ever written or tombstoned */
    uint64_t log_bytes;     /* bytes of log records */
    uint64_t segments;      /* segment files */
    uint64_t appends;       /* appends committed since open */
    uint64_t groups;        /* group commits (fdatasyncs) since open */
    int readonly;           /* 1 after a storage fault */
} stele_stats;

int stele_get_stats(stele_db *db, stele_stats *out);

/* ----------------------------------------------------------------- check */

/**
 * Verify a closed store in `dir` without changing it: every record's
 * checksum and framing, commit completeness, gapless positions, and every
 * index entry against the log. Returns 0 if sound; ECORRUPT with the first
 * damage in stele_errmsg() ("segment 00000003.seg offset 81920: checksum
 * mismatch"); ELOCKED if a process has the store open. If `report` is not
 * NULL it receives a NUL-terminated summary (at most `report_len` bytes).
 */
int stele_check(const char *dir, char *report, size_t report_len);

/* ----------------------------------------------------------------- utils */

/** Format a UUID as 36 chars + NUL into `out` (37 bytes). */
void stele_uuid_format(const uint8_t id[16], char out[37]);

/** Parse "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (any case). 0 or EINVAL. */
int stele_uuid_parse(const char *text, uint8_t id[16]);

/**
 * Parse an RFC 3339 date-time ("2026-11-23T16:30:00.5Z",
 * "2026-11-23T18:30:00+02:00") into microseconds since the Unix epoch.
 * Digits below a microsecond round down, or up with `round_up` (a lower
 * bound "created >= t" or an exclusive upper bound "created < t" then
 * stays exact). 0, or EINVAL with the reason in stele_errmsg().
 */
int stele_time_parse(const char *text, int round_up, int64_t *us);

/** Format microseconds since the epoch as RFC 3339 in UTC with six
 *  fractional digits: "2026-11-23T16:30:00.000000Z" (27 chars + NUL). */
void stele_time_format(int64_t us, char out[32]);

#ifdef __cplusplus
}
#endif

#endif /* STELE_H */
