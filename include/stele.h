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
 *             gapless and in commit order. Scavenging (stele_scavenge)
 *             removes deleted events for good; $all then skips their
 *             positions, and no other position ever changes.
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
 * STELE_API, on the line before each public function, marks what
 * libstele.so exports: it is built with -fvisibility=hidden, so the
 * engine's internal symbols never leak into an embedder's namespace (the
 * test install_package fails on a declaration here without the mark).
 */
#if defined(__GNUC__) || defined(__clang__)
#define STELE_API __attribute__((visibility("default")))
#else
#define STELE_API
#endif

/*
 * Error codes. One table (X-macro) generates the enum, stele_strerror()
 * and stele_errname() (the C name without its 'E', also the label of the
 * stele_errors_total metric). What each code is called on the wire is
 * stele_error_info() below.
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
    X(EINTERNAL, -15, "internal error")                                          \
    X(EEXISTS, -16, "already exists")                                           \
    X(ECONDITION, -17, "append condition failed: a matching event exists")      \
    X(EBUSY, -18, "server or store is at a resource limit, retry later")

enum {
#define STELE_ERRENUM_(name, code, text) STELE_##name = (code),
    STELE_ERRORS(STELE_ERRENUM_)
#undef STELE_ERRENUM_
};

/** Text for an error code: "wrong expected revision". Static storage. */
STELE_API
const char *stele_strerror(int code);

/** Stable name of an error code without the E: "WRONGREV", "OK". Static. */
STELE_API
const char *stele_errname(int code);

/**
 * The error vocabulary (docs/errors.md): how an error is named on every
 * door. `code` is the stable code HTTP error bodies carry, gRPC status
 * messages start with and the CLI and the server's log print
 * ("WRONG_EXPECTED_REVISION"); `http_status` and `grpc_status` are the
 * statuses it leaves the server with; `exception` is the KurrentDB
 * `exception` trailer the official gRPC clients turn into typed errors
 * (NULL when there is none); `rc` is the STELE_E* code it stands for (0 for
 * errors of the protocol itself, such as METHOD_NOT_ALLOWED). Several codes
 * may share an rc when the server names the thing involved
 * (GROUP_NOT_FOUND and STREAM_NOT_FOUND are both STELE_ENOTFOUND).
 */
typedef struct stele_error_info {
    const char *code;
    int rc;
    int http_status;
    int grpc_status;
    const char *exception;
    const char *when; /* one line for humans and docs */
} stele_error_info;

/** The vocabulary entry of an rc (0 or STELE_E*): never NULL; an unknown
 *  code gets INTERNAL's entry. Static storage. */
STELE_API
const stele_error_info *stele_error_info_of(int rc);

/** The entry with this stable code ("GROUP_NOT_FOUND"), or NULL. Static. */
STELE_API
const stele_error_info *stele_error_lookup(const char *code);

/** The whole vocabulary, *n entries (the first one per rc is that rc's
 *  own). Static storage. */
STELE_API
const stele_error_info *stele_error_table(size_t *n);

/**
 * The message of the calling thread's most recent failed call, with
 * details ("event 3: type is empty"). Valid until the thread's next call
 * into libstele. Never NULL ("" if nothing failed yet).
 */
STELE_API
const char *stele_errmsg(void);

/* ---------------------------------------------------------------- opening */

typedef struct stele_db stele_db;

/** Options for stele_open(). Zero means "the default" for every field. */
/** Bytes of stele_options.node_name, with its NUL. */
#define STELE_NODE_NAME_MAX 64

typedef struct stele_options {
    /** Bytes per log segment file (local engine). Default 64 MiB, minimum 64 KiB. */
    uint64_t segment_size;
    /** Largest event (type + data + metadata + tags). Default 16 MiB. */
    uint64_t max_event_size;
    /** Largest append (all its events). Default 64 MiB. */
    uint64_t max_append_size;
    /** STELE_OPEN_* flags. */
    uint32_t flags;
    /** Consumer groups that may exist at once: stele_group_create() fails
     *  with STELE_EBUSY beyond it. 0: the default, 1000. */
    uint32_t max_groups;
    /** Consumers connected to one group at once: stele_group_connect()
     *  fails with STELE_EBUSY beyond it. 0: the default, 100. */
    uint32_t max_consumers_per_group;
    /** This process's name among the servers that share the store's
     *  consumer groups (docs/consumer-groups.md, "Several servers"): the
     *  owner of the event ranges it claims. A process restarted under the
     *  same name takes its own claims back at once; others wait for them to
     *  expire. Empty: a random name per handle. */
    char node_name[STELE_NODE_NAME_MAX];
    /** How long a consumer group's claimed events stay with a server that
     *  stopped renewing its claims (it died) before another server takes
     *  them over, in ms. Renewed every third of it. 0: the default, 10,000. */
    uint32_t group_lease_ms;
} stele_options;

/** Verify every record checksum of the log at open (slow on big stores;
 *  local engine). */
#define STELE_OPEN_VERIFY 0x1u
/** Do not create the directory or a new store: fail with ENOTFOUND. */
#define STELE_OPEN_NOCREATE 0x2u
/**
 * Do not maintain the secondary indexes (category, event type, tag,
 * correlation id, causation id, actor, time): appends write less, and
 * stele_read_query() and stele_read_stream_as_of() fail with EINVAL. Opening the store later
 * without this flag rebuilds every index from the log once.
 */
#define STELE_OPEN_NO_INDEXES 0x4u
/**
 * Write no hash-chain records (local engine; docs/security.md, "The hash
 * chain"): only for a store that has none yet (measuring the chain's cost,
 * or a store that must stay readable by builds before the chain). Opening a
 * store whose chain has begun with this flag fails with STELE_EINVAL.
 */
#define STELE_OPEN_NO_CHAIN 0x100u

/**
 * Open (creating if needed) the store named by `uri`: a directory path or
 * `file:DIR` (the local engine), `postgres://...` / `postgresql://...` (a
 * libpq connection URI) or `dynamodb://TABLE_PREFIX?endpoint=URL&region=R`
 * (docs/architecture.md, "The backend contract"). A backend this build lacks fails with STELE_EINVAL
 * naming it. The options marked "local engine" below are ignored by the
 * other backends. For the local engine:
 * Recovers after a crash: a torn or partial commit at the end of the log is
 * cut off; damage anywhere else fails with STELE_ECORRUPT and a message that
 * names the segment file and byte offset. Only one process may have a store
 * open (STELE_ELOCKED). `opts` may be NULL; it is not kept.
 * On success *out is a handle the caller closes with stele_close().
 * A disk without room for the next log segment does not stop the open: the
 * store opens read-only (reads work; appends fail with STELE_ENOSPC until
 * space is freed, then succeed again), stele_errmsg() then says so after
 * the 0 return, and stele_get_stats() reports readonly with the reason.
 */
STELE_API
int stele_open(const char *uri, const stele_options *opts, stele_db **out);

/**
 * Close the store: waits for appends already queued, syncs the indexes,
 * marks the store cleanly closed and frees the handle. NULL is a no-op.
 * The caller must ensure no other thread is still using `db`.
 */
STELE_API
void stele_close(stele_db *db);

/* --------------------------------------------------------------- events */

/** Event data flag: `data` is JSON (the server returns it as JSON). */
#define STELE_EVENT_JSON 0x1u
/** Event flag: `metadata` is JSON. */
#define STELE_META_JSON 0x2u
/**
 * Event flag: the id's text form is a ULID (seed 004's ids). The id is the
 * same 16 bytes either way (a ULID and the UUID of the same bits are the
 * same event id); the flag is stored with the event so it is returned in
 * the form it was given (stele_id_format). With `id` NULL the store makes
 * a UUIDv7, whose 48-bit millisecond prefix also makes it a valid ULID.
 */
#define STELE_EVENT_ID_ULID 0x4u

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
    /** STELE_EVENT_JSON | STELE_META_JSON | STELE_EVENT_ID_ULID. */
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
    /** stele_append_multi's per-stream results after EWRONGREV / EDELETED:
     *  the code of this stream's failed check (STELE_EWRONGREV or
     *  STELE_EDELETED; current_revision is then its last revision), 0 if
     *  it passed. Every failing stream is marked, as KurrentDB lists each
     *  consistency check failure. 0 elsewhere. */
    int failed;
    /** stele_append / stele_append_async on success: the events' ids in
     *  order (n x 16 bytes), the given ones and those the store made, so a
     *  caller can report every event's id; event i has revision
     *  first_revision + i and position first_position + i. Owned by the
     *  library: valid during the stele_append_async callback, and after
     *  stele_append until the calling thread's next stele_append. NULL on
     *  failure, from other calls, and for appends to a category with an
     *  inline projection (its worker appends them). */
    const uint8_t (*ids)[16];
} stele_append_result;

/**
 * Append `n` (>= 1) events atomically to `stream` if its revision matches
 * `expected` (STELE_ANY, STELE_NO_STREAM, STELE_STREAM_EXISTS or an exact
 * last revision). Returns only once the events are durable on disk.
 *
 * Idempotent retries (KurrentDB's rule): if the events' ids were already
 * written by an append to the same stream at the place `expected` names
 * (any place in the stream for STELE_ANY / STELE_STREAM_EXISTS), and the
 * stored events are the same (type, data, metadata, tags, the JSON flags),
 * the call returns 0 with res->idempotent = 1 and the original result,
 * writing nothing. The same ids anywhere else, or with a different event,
 * give STELE_EIDCONFLICT (the message names the part that differs).
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
STELE_API
int stele_append(stele_db *db, const char *stream, int64_t expected,
                 const stele_event_in *events, size_t n,
                 stele_append_result *res);

/**
 * Append to `$users`, the system stream where the server keeps its users
 * and API keys (server/auth.c, docs/security.md): like stele_append, but
 * only for that one stream, which stele_append refuses as a system stream.
 */
STELE_API
int stele_append_users(stele_db *db, int64_t expected, const stele_event_in *events, size_t n,
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
STELE_API
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
STELE_API
int stele_read_stream(stele_db *db, const char *stream, uint64_t from,
                      int direction, size_t limit, stele_page **out);

/**
 * Read up to `limit` events of $all (every stream, in position order)
 * starting at position `from` (inclusive). Backwards, STELE_END starts at
 * the last event. Only committed events are seen.
 */
STELE_API
int stele_read_all(stele_db *db, uint64_t from, int direction, size_t limit,
                   stele_page **out);

/** Number of events in the page. */
STELE_API
size_t stele_page_count(const stele_page *page);

/** Event i (0 <= i < count). Valid until stele_page_free(page). */
STELE_API
const stele_event *stele_page_event(const stele_page *page, size_t i);

/**
 * Where the next page starts: the revision (stream reads) or position
 * ($all reads) to pass as `from`. Returns 1 and sets *next if more events
 * may follow in this direction, 0 at the end (*next untouched).
 */
STELE_API
int stele_page_next(const stele_page *page, uint64_t *next);

/**
 * System view streams. stele_read_stream() and stele_subscribe_stream()
 * also accept these names, served from the secondary indexes (no link
 * events are stored; docs/kurrentdb-compatibility.md):
 *   $ce-{category}       the events of the category's streams
 *   $et-{type}           the events of that type
 *   $bc-{correlationId}  the events with that correlation id
 *   $streams             the first visible event of every stream
 * Their pages hold the original events (own stream, revision, position);
 * an event's revision in the view is its link's revision, given by
 * stele_page_link(), and the page's next (stele_page_next) is a view
 * revision. A view revision is the event's ordinal in its index (in
 * $streams, the stream's internal number): it grows with the position and
 * never changes while the store's index lives; events hidden by deletes
 * or retention are skipped, leaving gaps. A view with no event yet is
 * ENOTFOUND; a store opened with STELE_OPEN_NO_INDEXES gives EINVAL
 * (except for $streams). stele_stream_head() of a view gives the view
 * revision and position of its newest visible event.
 */

/**
 * For a page read from a view stream: the view's name ("$ce-Order",
 * valid until stele_page_free) and event i's revision in it. Returns 1,
 * or 0 for any other page (outputs untouched).
 */
STELE_API
int stele_page_link(const stele_page *page, size_t i, const char **view, uint64_t *revision);

/** Free a page and every event in it. NULL is a no-op. */
STELE_API
void stele_page_free(stele_page *page);

/* ------------------------------------------------- multi-stream appends */

/*
 * One commit may hold events of several streams (docs/consistency.md):
 * all of them are written, in one durable commit with gapless positions in
 * the order the request lists its events, or none is. Each stream named in
 * the request carries its own expected revision; a stream may be named
 * with no events, as a check only. An append may also carry a condition
 * in the style of Dynamic Consistency Boundaries: "fail if any event
 * matching this query was committed after position `after`". Checks and
 * writes are serialised by the writer, so two racing appends whose
 * conditions overlap cannot both succeed.
 */

/** Expected revision: the stream must be soft-deleted (deleted and not
 *  written since), as KurrentDB's v2 protocol defines it. */
#define STELE_DELETED (-5)

/** At most this many streams in one multi-stream append. */
#define STELE_MAX_APPEND_STREAMS 1000u
/** At most this many items in a condition query; each item holds at most
 *  64 types and 64 tags. */
#define STELE_MAX_CONDITION_ITEMS 64u

/**
 * One stream of a multi-stream append. Pointers are borrowed for the call.
 * `state`, if not NULL, is the stream's new folded state: it is saved as a
 * snapshot at the stream's new last revision in the same commit (its
 * `revision` field is ignored); a failed append saves nothing.
 */
typedef struct stele_append_stream {
    const char *stream;
    /** STELE_ANY, STELE_NO_STREAM, STELE_STREAM_EXISTS, STELE_DELETED or an
     *  exact last revision. */
    int64_t expected;
    const struct stele_snapshot_in *state;
} stele_append_stream;

/** One event of a multi-stream append: `stream` indexes the request's
 *  stele_append_stream array. */
typedef struct stele_append_record {
    size_t stream;
    stele_event_in event;
} stele_append_record;

/**
 * A query over event types and tags (a DCB query). An event matches an
 * item when its type is one of the item's types (any type if ntypes is 0)
 * and it carries every one of the item's tags; it matches the query when
 * it matches any item. An item must give at least one type or tag.
 */
typedef struct stele_query_item {
    const char *const *types;
    size_t ntypes;
    const char *const *tags;
    size_t ntags;
} stele_query_item;

typedef struct stele_condition {
    const stele_query_item *items;
    size_t nitems; /* >= 1 */
    /** Only events at positions > after count; STELE_NONE: every event. */
    uint64_t after;
} stele_condition;

/** What a multi-stream append did, or why it failed. */
typedef struct stele_multi_result {
    /** Positions of the commit's first and last event (success). */
    uint64_t first_position, last_position;
    /** 1 if the request was a retry of one already written (same event ids,
     *  same streams): nothing new was written, the fields describe it. */
    int idempotent;
    /** On EWRONGREV / EDELETED (and ENOTFOUND for a state on a stream
     *  without events): the index of the first stream whose check failed,
     *  and its last revision (STELE_NONE: never written; for a soft-deleted
     *  stream the revision it was deleted at, as KurrentDB reports it).
     *  SIZE_MAX when no stream is at fault. */
    size_t failed_stream;
    uint64_t current_revision;
    /** On ECONDITION: the position of the first matching event after
     *  condition->after. */
    uint64_t condition_position;
} stele_multi_result;

/**
 * Append `nrecords` events across `nstreams` streams in one atomic,
 * durable commit. Every stream written must be named exactly once in
 * `streams`; `cond` may be NULL. `per_stream` (may be NULL) is an array of
 * `nstreams` results that receives each stream's first/last revision and
 * positions (STELE_NONE for a check-only stream). `res` may be NULL.
 * Idempotent retries apply to the whole request: when every event id was
 * already written by the same request, the call returns 0 with
 * res->idempotent = 1.
 * Expectations follow KurrentDB 26.1 (docs/consistency.md has the table):
 * a tombstoned stream is EDELETED when written (and for every expectation
 * but any / no_stream when only checked); stream_exists on a soft-deleted
 * stream is EDELETED; STELE_DELETED needs a soft-deleted stream; an exact
 * revision matches a soft-deleted stream's last revision too.
 * A stream's `state` needs the stream to have events after the commit
 * (else ENOTFOUND). A condition needs the secondary indexes (EINVAL on a
 * store opened with STELE_OPEN_NO_INDEXES).
 * Errors: EINVAL (empty request, a stream named twice, a record naming no
 * stream, bad names or events, an empty condition or item, with the
 * reason), ETOOBIG (more than STELE_MAX_APPEND_STREAMS streams, or over
 * max_append_size), EWRONGREV / EDELETED (res->failed_stream,
 * res->current_revision), ECONDITION (res->condition_position),
 * EIDCONFLICT, ENOTFOUND, EREADONLY, EIO, ENOSPC, ECLOSED. On any error
 * nothing was written.
 */
STELE_API
int stele_append_multi(stele_db *db, const stele_append_stream *streams, size_t nstreams,
                       const stele_append_record *records, size_t nrecords,
                       const stele_condition *cond, stele_append_result *per_stream,
                       stele_multi_result *res);

/**
 * Completion of stele_append_multi_async(): `rc`, `per_stream` (nstreams
 * results) and `res` as stele_append_multi would return them; `errmsg` is
 * the message ("" on success). All are valid during the call only. Runs on
 * the store's writer thread, with the same rules as stele_append_cb.
 */
typedef void (*stele_append_multi_cb)(void *ctx, int rc, const stele_append_result *per_stream,
                                      size_t nstreams, const stele_multi_result *res,
                                      const char *errmsg);

/**
 * Queue a multi-stream append without waiting for it (for event loops).
 * Validates everything stele_append_multi validates first: on a bad
 * argument it returns the error at once and never calls `cb`. Otherwise
 * returns 0 and calls `cb` exactly once, after the commit is durable or
 * failed. The store copies the request: the caller may free it at once.
 */
STELE_API
int stele_append_multi_async(stele_db *db, const stele_append_stream *streams, size_t nstreams,
                             const stele_append_record *records, size_t nrecords,
                             const stele_condition *cond, stele_append_multi_cb cb, void *ctx);

/**
 * Read the events matching a DCB query (`cond->items`), from position
 * `from` (inclusive; backwards STELE_END starts at the newest) in
 * `direction`, up to `limit`. `cond->after` is ignored. Every event of the
 * log counts, as in $all (the same set a condition checks). The page's
 * stele_page_next() gives the next `from`; the position of the last event
 * a decision was based on is the `after` of the condition to append with.
 * Errors: EINVAL (as for conditions), ECORRUPT.
 */
STELE_API
int stele_read_matching(stele_db *db, const stele_condition *cond, uint64_t from, int direction,
                        size_t limit, stele_page **out);

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
#define STELE_QUERY_CORRELATION 4 /* metadata $correlationId / correlationId / correlation_id = <key> */
#define STELE_QUERY_ACTOR 5       /* metadata $actor / userId / actorId / user_id = <key> */
#define STELE_QUERY_ALL 6         /* $all (no key), usually with a time range */
#define STELE_QUERY_CAUSATION 7   /* metadata $causationId / causationId / causation_id = <key> */

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
STELE_API
int stele_read_query(stele_db *db, const stele_query *q, stele_page **out);

/**
 * Temporal stream read: stele_read_stream() limited to the stream's prefix
 * up to revision `to` (inclusive), "the stream as it was at revision to".
 * Forwards it stops after `to`; backwards it starts at min(from, to).
 * Errors as stele_read_stream().
 */
STELE_API
int stele_read_stream_to(stele_db *db, const char *stream, uint64_t from, int direction,
                         size_t limit, uint64_t to, stele_page **out);

/**
 * Temporal stream read by time: the prefix of the stream committed at or
 * before `as_of_us` (microseconds since the Unix epoch), "the stream as it
 * was at that moment". An empty page if it had no events then (the stream
 * must exist now: errors as stele_read_stream()). EINVAL on a store opened
 * with STELE_OPEN_NO_INDEXES (it needs the time index).
 */
STELE_API
int stele_read_stream_as_of(stele_db *db, const char *stream, int64_t as_of_us, uint64_t from,
                            int direction, size_t limit, stele_page **out);

/**
 * Stream read bounded by time (seed 000's by-timestamp reads): the events
 * of `stream` created at or after `after_us` and before `before_us`
 * (microseconds since the Unix epoch; INT64_MIN / INT64_MAX for no bound),
 * read from revision `from` in `direction` as stele_read_stream() does.
 * Forwards a `from` below the first event in range starts there;
 * backwards the read starts at the last event before `before_us` and
 * stops at the first one at or after `after_us`. Finding the lower bound
 * costs O(log n) one-event reads of the stream, on any backend. Errors as
 * stele_read_stream(); EINVAL if after_us > before_us, and with a
 * `before_us` on a store opened with STELE_OPEN_NO_INDEXES (the upper bound
 * is stele_read_stream_as_of's, which needs the time index).
 */
STELE_API
int stele_read_stream_between(stele_db *db, const char *stream, int64_t after_us,
                              int64_t before_us, uint64_t from, int direction,
                              size_t limit, stele_page **out);

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
 * deleted or not (check info->deleted / tombstoned), or given metadata
 * (then last_revision is STELE_NONE); ENOTFOUND if never. The head is the
 * last revision written even when stream metadata (maxAge, maxCount,
 * truncateBefore) hides it from reads: appends go on from there.
 */
STELE_API
int stele_stream_head(stele_db *db, const char *stream, stele_stream_info *info);

/**
 * Soft-delete a stream: its events are hidden from reads of the stream
 * (they stay in $all until scavenged). Appending again recreates the
 * stream and continues its revisions. `expected` as for stele_append.
 * Errors: ENOTFOUND, EDELETED, EWRONGREV (*current set if not NULL).
 * Durable before it returns.
 */
STELE_API
int stele_delete_stream(stele_db *db, const char *stream, int64_t expected,
                        uint64_t *current);

/**
 * Tombstone a stream: deleted forever; reads, appends and deletes of it fail
 * with EDELETED. Works on a stream that was never written, too (reserving
 * the name). Durable before it returns.
 */
STELE_API
int stele_tombstone_stream(stele_db *db, const char *stream, int64_t expected,
                           uint64_t *current);

/* ------------------------------------------------------------ names */

/** What stele_list_names lists. */
enum {
    STELE_NAMES_STREAMS = 1,    /* streams (system streams too: names with '$') */
    STELE_NAMES_CATEGORIES = 2, /* categories (a name's part before its first '-') */
    STELE_NAMES_TYPES = 3,      /* event types */
};

/** stele_list_names flags: leave out names starting with '$' (system
 *  streams, their categories and event types). */
#define STELE_NAMES_NO_SYSTEM 0x1u

/** One listed name. Pointers stay valid until stele_names_free(). */
typedef struct stele_name_info {
    const char *name;  /* NUL-terminated (names contain no NUL) */
    /** Streams: the last revision + 1 (events written, hidden ones too;
     *  0 for a stream with only metadata). Categories and types: events
     *  indexed under the name (ever: deleted ones count until a rebuild). */
    uint64_t count;
    /** Streams: the last position (STELE_END if no event); else 0. */
    uint64_t last_position;
    int deleted;       /* streams: soft-deleted */
    int tombstoned;    /* streams: tombstoned */
} stele_name_info;

/**
 * The names of `kind` (STELE_NAMES_*) in byte order: those starting with
 * `prefix` (NULL or "": all) and after `after` (exclusive; NULL or "":
 * from the first), at most `limit` (1..10000); `flags`: 0 or
 * STELE_NAMES_NO_SYSTEM. *out is an array of *n (NULL and 0 when none),
 * freed with stele_names_free(). To page, pass the
 * last name of a page as the next call's `after`. Reads a consistent
 * snapshot of the index. Errors: EINVAL (bad kind or limit; categories and
 * types with the secondary indexes off), ENOMEM; a backend that cannot
 * list fails with EINVAL and says so.
 */
STELE_API
int stele_list_names(stele_db *db, int kind, const char *prefix, const char *after,
                     size_t limit, unsigned flags, stele_name_info **out, size_t *n);

/** Free what stele_list_names returned. NULL is a no-op. */
STELE_API
void stele_names_free(stele_name_info *list);

/* ------------------------------------------- stream metadata and snapshots */

/*
 * Stream metadata (docs/streams.md): retention rules that stream reads
 * enforce at once, plus free-form custom fields. Setting metadata replaces
 * the stream's whole metadata (a field left at 0 / NULL is unset) and
 * bumps its version (0 for the first). It is written to the log like an
 * append: durable before the call returns, kept across crashes and index
 * rebuilds. Events hidden by retention stay in $all until scavenged.
 */

/** maxSnapshots when the metadata does not set one. */
#define STELE_DEFAULT_MAX_SNAPSHOTS 5u
/** Largest maxSnapshots. */
#define STELE_MAX_SNAPSHOTS_LIMIT 1000u
/** Largest custom metadata (the JSON object's text), in bytes. */
#define STELE_MAX_CUSTOM_METADATA (64u << 10)
/** Most members in the custom metadata object. */
#define STELE_MAX_CUSTOM_FIELDS 1000u

typedef struct stele_stream_metadata {
    /** Hide events older than this many microseconds (by `created`);
     *  0: none, else 1 .. INT64_MAX. */
    uint64_t max_age_us;
    /** Show only the last `max_count` events; 0: none, else 1 .. INT64_MAX. */
    uint64_t max_count;
    /** Hide revisions below this one; 0: none, else <= INT64_MAX. */
    uint64_t truncate_before;
    /** Snapshots kept for the stream; 0: STELE_DEFAULT_MAX_SNAPSHOTS, else
     *  1 .. STELE_MAX_SNAPSHOTS_LIMIT. */
    uint32_t max_snapshots;
    /** Custom fields: the text of one JSON object (RFC 8259, UTF-8), stored
     *  byte for byte, or NULL / custom_len 0 for none. Its member names
     *  must not be maxAge, maxCount, truncateBefore, maxSnapshots or start
     *  with '$' (reserved), except `$acl` (access control, docs/security.md); at most STELE_MAX_CUSTOM_FIELDS members and
     *  STELE_MAX_CUSTOM_METADATA bytes. In stele_set_stream_metadata it is
     *  borrowed for the call; from stele_get_stream_metadata it points into
     *  the same allocation as the struct. */
    const char *custom;
    size_t custom_len;
    /** Set by stele_get_stream_metadata: the metadata's version (0-based),
     *  STELE_NONE if the stream never had metadata. Ignored when setting. */
    uint64_t version;
} stele_stream_metadata;

/**
 * Replace the metadata of `stream`. `expected_version` is STELE_ANY,
 * STELE_NO_STREAM (the stream must have no metadata yet),
 * STELE_STREAM_EXISTS (it must have some) or the exact current version.
 * Allowed on a stream that has no events yet (its metadata is ready when
 * the first append comes) and on a soft-deleted one (metadata outlives the
 * delete). On success *version (if not NULL) is the new version; on
 * EWRONGREV it is the current one (STELE_NONE: none). Durable on return.
 * Errors: EINVAL (name, values, custom JSON, with the reason), ETOOBIG
 * (custom over STELE_MAX_CUSTOM_METADATA), EDELETED (tombstoned),
 * EWRONGREV, EREADONLY, EIO, ENOSPC, ECLOSED.
 */
STELE_API
int stele_set_stream_metadata(stele_db *db, const char *stream, const stele_stream_metadata *md,
                              int64_t expected_version, uint64_t *version);

/**
 * The metadata of `stream`. On success *out is one allocation (the struct
 * and the custom text) that the caller frees with stele_free(). A stream
 * that exists (events, a delete, or metadata) but has no metadata gives all
 * zero fields and version STELE_NONE. Errors: ENOTFOUND (no such stream),
 * EDELETED (tombstoned), EINVAL, ECORRUPT.
 */
STELE_API
int stele_get_stream_metadata(stele_db *db, const char *stream, stele_stream_metadata **out);

/** A snapshot to save. Pointers are borrowed for the call only. */
typedef struct stele_snapshot_in {
    /** The revision the state was folded up to (inclusive). */
    uint64_t revision;
    /** The application's schema version of `state`. */
    uint32_t schema_version;
    /** STELE_EVENT_JSON if `state` is JSON, else 0 (bytes). */
    uint32_t flags;
    const void *state;
    /** At most max_event_size bytes. */
    size_t state_len;
} stele_snapshot_in;

/** A stored snapshot: one allocation, freed with stele_free(). `stream`
 *  is NUL-terminated; `state` points into the same allocation. */
typedef struct stele_snapshot {
    const char *stream;
    size_t stream_len;
    uint64_t revision;
    uint32_t schema_version;
    uint32_t flags;
    /** When it was saved, microseconds since the Unix epoch. */
    int64_t created_us;
    const void *state;
    size_t state_len;
} stele_snapshot;

/**
 * Save a snapshot of `stream` at snap->revision. Snapshots are not events:
 * they take no position and never appear in $all. The stream keeps its
 * latest max_snapshots of them (by revision; see stele_stream_metadata); a
 * snapshot at a revision that already has one replaces it. Durable on
 * return.
 * Errors: EINVAL (revision beyond the stream's last revision, below its
 * start after a soft delete, or older than every kept snapshot when the
 * stream already keeps max_snapshots; bad flags), ETOOBIG (state over
 * max_event_size), ENOTFOUND (no events: never written or soft-deleted),
 * EDELETED (tombstoned), EREADONLY, EIO, ENOSPC, ECLOSED.
 */
STELE_API
int stele_put_snapshot(stele_db *db, const char *stream, const stele_snapshot_in *snap);

/**
 * The latest snapshot of `stream` at or before revision `at_or_before`
 * (STELE_END: the latest). *out is NULL (and 0 returned) when there is
 * none; else free it with stele_free(). Snapshots taken before a soft
 * delete are gone with the deleted events. Errors: ENOTFOUND (no such
 * stream, or soft-deleted), EDELETED, EINVAL, ECORRUPT.
 */
STELE_API
int stele_get_snapshot(stele_db *db, const char *stream, uint64_t at_or_before,
                       stele_snapshot **out);

/**
 * Load a stream for folding, in one consistent read: its latest snapshot
 * (*snap, NULL if none) and up to `limit` of the visible events after it
 * (*events; from the first visible event when there is no snapshot). The
 * events obey the same rules as stele_read_stream (soft delete, maxAge,
 * maxCount, truncateBefore): if retention hid some right after the
 * snapshot, the first event's revision is above snapshot revision + 1.
 * stele_page_next() on *events tells where stele_read_stream continues.
 * Free *snap with stele_free() and *events with stele_page_free().
 * Errors: those of stele_read_stream.
 */
STELE_API
int stele_load_stream(stele_db *db, const char *stream, size_t limit, stele_snapshot **snap,
                      stele_page **events);

/** Free memory that libstele handed over (metadata, snapshots). NULL is a no-op. */
STELE_API
void stele_free(void *p);

/* --------------------------------------------------------- subscriptions */

/**
 * A filter on events of $all. Every criterion that is given (a non-empty
 * list or a non-NULL regex) must match; inside a list any entry may match.
 * All pointers are borrowed for the call that takes the filter (it copies
 * and compiles what it needs). Lists hold at most 64 entries of 1..255
 * bytes; regular expressions are POSIX extended, at most 1,024 bytes.
 */
typedef struct stele_filter {
    /** The stream name starts with one of these. */
    const char *const *stream_prefixes;
    size_t n_stream_prefixes;
    /** The stream's category is one of these: the part of its name before
     *  the first '-'; a name without '-' (or starting with it) is its own
     *  category, as in queries. */
    const char *const *categories;
    size_t n_categories;
    /** The event type is exactly one of these. */
    const char *const *types;
    size_t n_types;
    /** The event type starts with one of these. */
    const char *const *type_prefixes;
    size_t n_type_prefixes;
    /** The stream name / event type matches this regex (unanchored: use ^$). */
    const char *stream_regex;
    const char *type_regex;
    /** The event has at least one of these tags. */
    const char *const *tags;
    size_t n_tags;
    /** 1: skip events of system streams (names starting with '$'). */
    int exclude_system;
} stele_filter;

/** A subscription: reads history, then follows new events. Opaque. */
typedef struct stele_sub stele_sub;

/**
 * Subscribe to $all from position `from` (inclusive; STELE_END = only
 * events committed after this call), optionally filtered (`filter` may be
 * NULL). Events arrive in position order, each exactly once: history and
 * live events come from the same log, so there is no gap and no duplicate
 * at the switch. Errors: EINVAL (bad filter, with the reason).
 * On success *out is a subscription closed with stele_sub_close().
 */
STELE_API
int stele_subscribe_all(stele_db *db, uint64_t from, const stele_filter *filter,
                        stele_sub **out);

/**
 * Subscribe to one stream from revision `from` (inclusive; STELE_END = only
 * events appended after this call). The stream need not exist yet. Reading
 * follows the stream's visibility rules (a soft delete hides what it hid).
 */
STELE_API
int stele_subscribe_stream(stele_db *db, const char *stream, uint64_t from, stele_sub **out);

/**
 * The next events, at most `limit` (>= 1). If none are available it waits
 * up to `timeout_ms` for new commits (0: do not wait; -1: wait for ever)
 * and may then return an empty page: also when a filter skipped a long run
 * of events, so the caller can save stele_sub_position() as a checkpoint.
 * A page costs disk reads, not memory held for the subscriber: a slow
 * consumer simply reads further behind the tail. On success *out is a page
 * for stele_page_free(). Errors: EDELETED (the stream was tombstoned; the
 * subscription is over), ECORRUPT, EIO.
 */
STELE_API
int stele_sub_next(stele_sub *sub, size_t limit, int timeout_ms, stele_page **out);

/**
 * Where the subscription will continue: for $all the next position to scan
 * (every event before it was delivered or filtered out: a checkpoint to
 * resume from), for a stream the next revision.
 */
STELE_API
uint64_t stele_sub_position(const stele_sub *sub);

/**
 * 1 if the last stele_sub_next() reached the end of the log (the
 * subscription is live), 0 while it is reading history or has fallen
 * behind the tail again.
 */
STELE_API
int stele_sub_caught_up(const stele_sub *sub);

/**
 * Move the cursor to `next` (a position for $all, a revision for a stream)
 * as if every event before it had been delivered: for a caller that got
 * those events another way, e.g. a server that reads the newest events
 * once and hands the same bytes to many subscribers. The next
 * stele_sub_next() reads from there. NULL is a no-op.
 */
STELE_API
void stele_sub_seek(stele_sub *sub, uint64_t next);

/** Close a subscription. NULL is a no-op. */
STELE_API
void stele_sub_close(stele_sub *sub);

/**
 * For event loops: a new non-blocking eventfd that becomes readable after
 * every commit (read it to reset it, then call stele_sub_next() with
 * timeout 0). The writer signals it once it has answered the commit's
 * appends, so it may become readable just after stele_append() returned. Release it with stele_unwatch() before stele_close().
 * At most 64 watches per store.
 */
STELE_API
int stele_watch(stele_db *db, int *fd);
STELE_API
void stele_unwatch(stele_db *db, int fd);

/* ------------------------------------------------------- consumer groups */

/*
 * Persistent subscriptions (consumer groups; docs/consumer-groups.md). A
 * group is named by (stream, group): `stream` is a stream name, or NULL or
 * "$all" for a group on $all. Several consumers connect to a group and
 * share its events: each event goes to one consumer at a time, which acks
 * it (done) or nacks it (retry, skip or park). An event that is not acked
 * within the message timeout, or whose consumer goes away, is delivered
 * again; after `max_retries` redeliveries it is parked: a link to it is
 * appended to the group's parked stream (the dead-letter queue)
 * "$persistentsubscription-{stream}::{group}-parked", from where it can be
 * read, replayed into the group and truncated.
 *
 * The group's definition, checkpoints and parked messages are events in
 * system streams of the store itself, so they survive restarts and crashes
 * on every backend. The checkpoint is the point below which every event was
 * acked, skipped or parked; after a restart the group resumes there, so
 * events after it may be delivered again: delivery is at least once.
 *
 * Threads: every call may be made from any thread. A consumer handle may be
 * used by one thread at a time. Close every consumer before stele_close().
 * Time-based work (message timeouts, timed checkpoints, waking waiting
 * consumers) runs on a small library thread started with the first use of
 * a group.
 */

/** Strategies: how a group shares events among its consumers. */
#define STELE_ROUND_ROBIN 0 /* any consumer with room gets the next event */
#define STELE_PINNED 1      /* a stream's events go to one consumer at a time */

typedef struct stele_group_settings {
    /** $all groups only: which events the group receives (NULL: all).
     *  Borrowed for the call; it cannot change on update. Events of the
     *  groups' own system streams ($persistent-config,
     *  $persistentsubscription-...) are never delivered. */
    const stele_filter *filter;
    /** The first position ($all) or revision (stream) the group delivers;
     *  STELE_END: only events written after the group is created (resolved
     *  to a number at creation). Used until the first checkpoint. */
    uint64_t start;
    /** STELE_ROUND_ROBIN or STELE_PINNED. */
    int strategy;
    /** Events in flight to one consumer at most: 1..10000 (default 10). */
    uint32_t max_in_flight;
    /** Time a consumer has to ack an event before it is delivered again:
     *  100..86400000 ms (default 30000). */
    uint32_t message_timeout_ms;
    /** Redeliveries before an event is parked: 0..1000 (default 10; 0
     *  parks an event at its first failure). */
    uint32_t max_retries;
    /** Events held in memory by the group (in flight, waiting or done but
     *  above the checkpoint): 1..100000 (default 500). Reading stops when
     *  it is full, so memory stays bounded whatever consumers do. */
    uint32_t buffer_size;
    /** Timed checkpoint: after this long, 0..3600000 ms (default 2000)... */
    uint32_t checkpoint_after_ms;
    /** ...if at least this many events were completed (or none is
     *  outstanding), 0..100000 (default 10)... */
    uint32_t checkpoint_min_count;
    /** ...and at once after this many completed events, 1..1000000
     *  (default 1000; at least checkpoint_min_count). */
    uint32_t checkpoint_max_count;
} stele_group_settings;

/** Fill `s` with the defaults (start 0, round robin, the values above). */
STELE_API
void stele_group_settings_init(stele_group_settings *s);

/**
 * Create group `group` on `stream` (NULL or "$all": on $all). Durable
 * before it returns. Group names: 1..128 bytes of UTF-8, no control
 * characters, no ':'. The stream and group names together may take at most
 * 210 bytes (they name the group's system streams). A filter needs a group
 * on $all. Errors: EINVAL (bad name or setting, with the reason), EEXISTS
 * (the group exists), EREADONLY, EIO, ECLOSED.
 */
STELE_API
int stele_group_create(stele_db *db, const char *stream, const char *group,
                       const stele_group_settings *settings);

/**
 * Change a group's settings (all but the filter, which must be the same;
 * `start` matters only while the group has no checkpoint). Connected
 * consumers stay connected and work under the new settings at once.
 * Errors: ENOTFOUND (no such group), EINVAL, and as for create.
 */
STELE_API
int stele_group_update(stele_db *db, const char *stream, const char *group,
                       const stele_group_settings *settings);

/**
 * Delete a group: its consumers get ENOTFOUND from their next call (close
 * them as usual), its checkpoint and parked streams are deleted. Durable
 * before it returns. Errors: ENOTFOUND.
 */
STELE_API
int stele_group_delete(stele_db *db, const char *stream, const char *group);

/** A connected consumer, in stele_group_info. */
typedef struct stele_consumer_info {
    const char *name;
    uint32_t in_flight;
    uint64_t delivered; /* events delivered to it since it connected */
} stele_consumer_info;

/** What a group is doing. All pointers point into the memory returned by
 *  stele_group_list / stele_group_get and stay valid until
 *  stele_group_info_free(). */
typedef struct stele_group_info {
    const char *stream; /* "$all" for a group on $all */
    const char *group;
    /** The settings (settings.filter is NULL or points into this info). */
    stele_group_settings settings;
    /** The last checkpoint written to the store (STELE_NONE: none yet) and
     *  the current one (not saved yet): the position ($all) or revision
     *  (stream) below which every event is done. */
    uint64_t checkpoint_saved;
    uint64_t checkpoint;
    /** Where the group reads next: events before it were read (or filtered
     *  out). */
    uint64_t read_position;
    /** Events in memory: in flight to consumers, waiting for a consumer
     *  (new, or to be retried). */
    uint64_t in_flight;
    uint64_t waiting;
    /** Parked events (in the parked stream, not truncated), and those of
     *  them being replayed. */
    uint64_t parked;
    uint64_t replaying;
    /** Counters since the store was opened. */
    uint64_t delivered, acked, nacked, timed_out, parked_total;
    /** The last error of the group's own work (reading, writing a
     *  checkpoint or a parked link), "" if none. */
    const char *last_error;
    size_t n_consumers;
    const stele_consumer_info *consumers;
} stele_group_info;

/** Every group: *out is an array of *n infos (NULL and 0 when there are
 *  none), freed with stele_group_info_free(*out). */
STELE_API
int stele_group_list(stele_db *db, stele_group_info **out, size_t *n);

/** One group: *out is one info, freed with stele_group_info_free().
 *  Errors: ENOTFOUND, EINVAL. */
STELE_API
int stele_group_get(stele_db *db, const char *stream, const char *group,
                    stele_group_info **out);

/** Free what stele_group_list / stele_group_get returned. NULL is a no-op. */
STELE_API
void stele_group_info_free(stele_group_info *infos);

/** A consumer connected to a group. Opaque. */
typedef struct stele_consumer stele_consumer;

/**
 * Connect consumer `name` (1..128 bytes of UTF-8, no control characters)
 * to a group. Errors: ENOTFOUND (no such group), EEXISTS (a consumer of
 * that name is connected), EINVAL. Close it with stele_consumer_close().
 */
STELE_API
int stele_group_connect(stele_db *db, const char *stream, const char *group,
                        const char *name, stele_consumer **out);

/** Events delivered by stele_consumer_read(). Opaque. */
typedef struct stele_batch stele_batch;

/**
 * Take up to `max` (>= 1) events for this consumer, no more than its free
 * in-flight slots. If none is available, waits up to `timeout_ms` (0: do
 * not wait, -1: no limit) and may return an empty batch. Each event is in
 * flight to this consumer until it is acked or nacked, its message timeout
 * passes, or the consumer closes. Events of a stream come in revision
 * order; events of $all in position order, except redeliveries, which come
 * first. On success *out is a batch freed with stele_batch_free().
 * Errors: ENOTFOUND (the group was deleted), EDELETED (the group's stream
 * was tombstoned and every event before was delivered), ECORRUPT, EIO.
 */
STELE_API
int stele_consumer_read(stele_consumer *c, size_t max, int timeout_ms, stele_batch **out);

STELE_API
size_t stele_batch_count(const stele_batch *b);
/** Event i; valid until stele_batch_free(b). */
STELE_API
const stele_event *stele_batch_event(const stele_batch *b, size_t i);
/** How many times event i was delivered before (0 the first time). */
STELE_API
uint32_t stele_batch_retry_count(const stele_batch *b, size_t i);
STELE_API
void stele_batch_free(stele_batch *b);

/**
 * Ack events by id: done. Every id must be in flight to this consumer, or
 * nothing is acked and the call fails with ENOTFOUND naming the first one
 * that is not (it may have timed out and gone to another consumer).
 */
STELE_API
int stele_consumer_ack(stele_consumer *c, const uint8_t (*ids)[16], size_t n);

/** What a nack asks for. */
#define STELE_NACK_RETRY 0 /* deliver again (counts as a retry) */
#define STELE_NACK_SKIP 1  /* drop it: done, not parked */
#define STELE_NACK_PARK 2  /* park it now */

/**
 * Nack events by id with `action` and an optional `reason` (<= 1024 bytes,
 * kept in the parked link's metadata). The same rule as ack for the ids.
 */
STELE_API
int stele_consumer_nack(stele_consumer *c, const uint8_t (*ids)[16], size_t n, int action,
                        const char *reason);

/** Ack / nack events of a group by id whichever consumer has them in
 *  flight (for clients that do not name a consumer, e.g. over HTTP). */
STELE_API
int stele_group_ack(stele_db *db, const char *stream, const char *group,
                    const uint8_t (*ids)[16], size_t n);
STELE_API
int stele_group_nack(stele_db *db, const char *stream, const char *group,
                     const uint8_t (*ids)[16], size_t n, int action, const char *reason);

/**
 * Disconnect: the consumer's in-flight events go back to the group at once
 * (each counts as a retry) for another consumer. NULL is a no-op.
 */
STELE_API
void stele_consumer_close(stele_consumer *c);

/**
 * Replay parked events into the group: the oldest `max` of them (0: all
 * parked now) are delivered again, before new events, each with a fresh
 * retry count. A replayed event leaves the parked stream once it is done
 * (if it fails again it is parked again, as a new parked message).
 * *count (may be NULL) gets the number of events queued for replay.
 */
STELE_API
int stele_group_replay_parked(stele_db *db, const char *stream, const char *group,
                              uint64_t max, uint64_t *count);

/**
 * Read the group's parked messages from parked revision `from` (0 or any
 * revision below the truncation point: the oldest), up to `limit`: link
 * events of type "$>" whose data is "{revision}@{stream}" and whose JSON
 * metadata holds the original event's position, revision, stream, id and
 * type, the reason and the retry count. *out is a page for
 * stele_page_free(); the links' revisions are the `from` of later reads.
 */
STELE_API
int stele_group_read_parked(stele_db *db, const char *stream, const char *group,
                            uint64_t from, size_t limit, stele_page **out);

/**
 * Drop the parked messages below parked revision `before` (STELE_END: all
 * of them). They are hidden from reads and replays. Durable before it
 * returns.
 */
STELE_API
int stele_group_truncate_parked(stele_db *db, const char *stream, const char *group,
                                uint64_t before);

/**
 * For event loops: a new non-blocking eventfd that becomes readable when a
 * consumer may find something new to read (a commit, an event to retry, a
 * consumer closed). Read it to reset it, then call stele_consumer_read()
 * with timeout 0. Release it with stele_group_unwatch() before
 * stele_close(). At most 16 per store.
 */
STELE_API
int stele_group_watch(stele_db *db, int *fd);
STELE_API
void stele_group_unwatch(stele_db *db, int fd);

/**
 * Rewind a group: every event from `to` (a position for a group on $all, a
 * revision for a stream group; STELE_END: the end) is delivered again. The
 * group's buffer is dropped (acks of events in flight then fail with
 * ENOTFOUND), and the new checkpoint is durable before the call returns.
 * Errors: ENOTFOUND (no such group), EINVAL, EREADONLY, EIO.
 */
STELE_API
int stele_group_rewind(stele_db *db, const char *stream, const char *group, uint64_t to);

/**
 * Rewind a group to a time: to the first event committed at or after
 * `us` (microseconds since the Unix epoch), or to the end if there is none.
 * *to (may be NULL) gets the position or revision chosen. EINVAL on a store
 * opened with STELE_OPEN_NO_INDEXES (it needs the time index).
 */
STELE_API
int stele_group_rewind_time(stele_db *db, const char *stream, const char *group, int64_t us,
                            uint64_t *to);

/* ----------------------------------------------------------------- rules */

/*
 * Rules (docs/rules.md) route events to targets: each rule has an optional
 * source filter (stele_filter's criteria), an event pattern in
 * EventBridge's syntax, a target (an HTTP webhook or another stream), a
 * retry policy and a partition key for ordering. A rule is defined by a
 * JSON document (the same one PUT /rules/{name} takes), kept in the system
 * stream "$rules"; its delivery state is a consumer group on $all named
 * "$rule-{name}", so its checkpoint and dead letters (the group's parked
 * stream) live in the store. Delivery is at least once, ordered per
 * partition, and runs on library threads once stele_rules_start() is
 * called (definitions can be managed without it). Events of system streams
 * ('$...') never reach a rule.
 */

/** Rule names: 1..100 bytes of [A-Za-z0-9._-]. */
#define STELE_RULE_NAME_MAX 100u

/** Kinds of delivery failure (stele_rule_info.failures). */
#define STELE_RULE_FAILURES(X)                                                   \
    X(TIMEOUT, 0, "timeout")                                                     \
    X(CONNECT, 1, "connection")                                                  \
    X(HTTP_408, 2, "http_408")                                                   \
    X(HTTP_429, 3, "http_429")                                                   \
    X(HTTP_5XX, 4, "http_5xx")                                                   \
    X(HTTP_4XX, 5, "http_4xx")                                                   \
    X(OTHER, 6, "other")
enum {
#define STELE_RULEFAIL_(name, code, text) STELE_FAIL_##name = (code),
    STELE_RULE_FAILURES(STELE_RULEFAIL_)
#undef STELE_RULEFAIL_
    STELE_FAIL_KINDS = 7
};

/** Name of a failure kind ("timeout"); static. */
STELE_API
const char *stele_rule_failure_name(int kind);

/** Buckets of the delivery latency histogram (commit to delivered). */
#define STELE_RULE_LAT_BUCKETS 14
/** Upper bound of latency bucket i (seconds), 0 <= i < STELE_RULE_LAT_BUCKETS. */
STELE_API
double stele_rule_latency_bound(int i);

/**
 * Create or replace rule `name` from the JSON definition `json` (`len`
 * bytes). The definition is checked whole (pattern compiled, target and
 * policies checked) before anything is stored; on EINVAL stele_errmsg()
 * gives the path of the error ("pattern.detail.amount[0]: unknown operator
 * 'numbr'"). Replacing keeps the rule's checkpoint and dead letters; the
 * new definition applies to events delivered from then on. *created (may
 * be NULL) is 1 for a new rule. Durable before it returns.
 * Errors: EINVAL, EREADONLY, EIO, ECLOSED.
 */
STELE_API
int stele_rule_put(stele_db *db, const char *name, const char *json, size_t len, int *created);

/** Delete a rule, its checkpoint and dead letters. Errors: ENOTFOUND. */
STELE_API
int stele_rule_delete(stele_db *db, const char *name);

/** Pause (enabled 0) or resume (1) a rule; durable. Events that come
 *  while it is paused are delivered after it resumes. Errors: ENOTFOUND. */
STELE_API
int stele_rule_set_enabled(stele_db *db, const char *name, int enabled);

/** A rule and its live counters (since the store was opened). Pointers
 *  stay valid until stele_rule_info_free(). */
typedef struct stele_rule_info {
    const char *name;
    /** The definition as normalized JSON (defaults filled in, secrets
     *  shown as "***"). */
    const char *definition;
    int enabled;
    /** The dead-letter stream (the group's parked stream). */
    const char *dead_letter_stream;
    /** Events that passed the source filter and the pattern. */
    uint64_t matched;
    /** Deliveries that succeeded, attempts that failed, by kind, and
     *  attempts scheduled again (retries). */
    uint64_t delivered;
    uint64_t failures[STELE_FAIL_KINDS];
    uint64_t retries;
    /** Events sent to the dead-letter stream, and those in it now. */
    uint64_t dead_lettered;
    uint64_t dead_letters;
    /** Deliveries on the wire now, and matched events held (waiting,
     *  backing off or on the wire). */
    uint64_t in_flight;
    uint64_t pending;
    /** The group's checkpoint; events in the store after it (lag), and
     *  the age of the oldest event not yet delivered (0 when none). */
    uint64_t checkpoint;
    uint64_t lag_events;
    double lag_seconds;
    /** Delivery latency (commit to 2xx or stream append) histogram:
     *  latency[i] counts deliveries at most stele_rule_latency_bound(i),
     *  latency[STELE_RULE_LAT_BUCKETS] the rest; the sum in seconds. */
    uint64_t latency[STELE_RULE_LAT_BUCKETS + 1];
    double latency_sum;
    /** The last delivery error ("" if none). */
    const char *last_error;
} stele_rule_info;

/** Every rule (*n of them, sorted by name), freed with stele_rule_info_free(*out). */
STELE_API
int stele_rule_list(stele_db *db, stele_rule_info **out, size_t *n);
/** One rule. Errors: ENOTFOUND, EINVAL. */
STELE_API
int stele_rule_get(stele_db *db, const char *name, stele_rule_info **out);
STELE_API
void stele_rule_info_free(stele_rule_info *infos);

/** Dead letters: read (links as stele_group_read_parked gives them, the
 *  reason holding the last error), redrive to the target (`max` 0: all;
 *  *count may be NULL) and truncate below dead-letter revision `before`. */
STELE_API
int stele_rule_read_dead(stele_db *db, const char *name, uint64_t from, size_t limit,
                         stele_page **out);
STELE_API
int stele_rule_redrive(stele_db *db, const char *name, uint64_t max, uint64_t *count);
STELE_API
int stele_rule_truncate_dead(stele_db *db, const char *name, uint64_t before);

/**
 * Start delivering: one library thread per enabled rule (and per replay),
 * now and for rules made later. Stopped by stele_close(). Idempotent.
 */
STELE_API
int stele_rules_start(stele_db *db);

/** A replay window: positions [from_pos, to_pos) or, with by_time, events
 *  created in [from_us, to_us). to_pos STELE_END / no to: up to the events
 *  committed when the replay starts. */
typedef struct stele_replay_window {
    int by_time;
    uint64_t from_pos, to_pos;
    int64_t from_us, to_us;
    int has_to;
} stele_replay_window;

/**
 * Deliver the window's matching events to the rule's target again, marked
 * as a replay, beside live delivery. Failed replay deliveries are retried
 * like live ones, then counted as failed (not dead-lettered). *id gets the
 * replay's number. Errors: ENOTFOUND, EINVAL (from after to, a time window
 * on a store without indexes), EBUSY (16 replays running on the rule).
 */
STELE_API
int stele_rule_replay_start(stele_db *db, const char *name, const stele_replay_window *w,
                            uint64_t *id);

typedef struct stele_replay_info {
    uint64_t id;
    /** "running", "done", "cancelled" or "failed". */
    const char *state;
    stele_replay_window window;
    /** The position reached, events read, matching, delivered, failed. */
    uint64_t next_position, scanned, matched, delivered, failed;
    int64_t started_us, finished_us; /* finished 0 while running */
    const char *last_error;
} stele_replay_info;

/** The replays of a rule (running and the last finished ones), oldest
 *  first; free with stele_replay_info_free(*out). */
STELE_API
int stele_rule_replays(stele_db *db, const char *name, stele_replay_info **out, size_t *n);
/** Cancel a running replay (ENOTFOUND if there is no such replay; a
 *  finished one is left as it is). */
STELE_API
int stele_rule_replay_cancel(stele_db *db, const char *name, uint64_t id);
STELE_API
void stele_replay_info_free(stele_replay_info *infos);

/* ----------------------------------------------------------- projections */

/*
 * Projections (docs/projections.md) run JavaScript written against
 * KurrentDB's projection API (fromAll, fromCategory, when, partitionBy,
 * emit ...; ES5.1) on events of the store, each in its own thread and its
 * own duktape heap with a memory and a time limit. A continuous projection
 * follows new events for ever; a one-time projection stops at the end of
 * the store as it was when it started (status "Completed").
 *
 * Exactly once: each batch of events a projection processes is committed
 * with the states of the partitions it changed, its emitted events and its
 * checkpoint, so after a crash it neither loses an update nor emits an
 * event twice. States live in the store (system streams
 * "$projections-NAME:..."); the projection keeps a bounded cache of them.
 *
 * Names: 1..100 bytes of UTF-8, no control characters, no '/' or ':', not
 * starting with '$'. A query is at most 1 MiB of text.
 *
 * The subsystem starts with stele_projections_start() (the server calls it
 * at startup), the first projection call or the first append of a store
 * handle (which must know the inline projections); enabled continuous
 * projections then resume from their checkpoints. stele_close() stops them
 * after their current batch.
 */

/** Projection modes. */
#define STELE_PROJ_CONTINUOUS 0
#define STELE_PROJ_ONE_TIME 1
/**
 * Inline: the query must be fromCategory('C').foreachStream().when({...}).
 * Every append to a stream of category C runs the handlers on the new
 * events before it commits (in the appending thread; for
 * stele_append_async on the projection's own thread) and stores the
 * stream's new state with the events in the same commit, as a snapshot at
 * the new last revision (stele_get_snapshot, schema_version = a hash of
 * the query); a handler that throws fails the append with EINVAL and the
 * message, writing nothing. Handlers of one category run one at a time. One
 * inline projection per category; no emit.
 */
#define STELE_PROJ_INLINE 2

/** Settings of a projection. Zero means "the default" for every limit. */
typedef struct stele_projection_settings {
    /** The query (JavaScript source), borrowed for the call. */
    const char *query;
    size_t query_len;
    /** STELE_PROJ_CONTINUOUS, STELE_PROJ_ONE_TIME or STELE_PROJ_INLINE. */
    int mode;
    /** 1: run at once; 0: created disabled (stele_projection_enable). */
    int enabled;
    /** 1: emit(), linkTo() and copyTo() are allowed (KurrentDB's
     *  emitEnabled); a projection that emits without it faults. */
    int emit_enabled;
    /** Heap limit of the projection's JavaScript, bytes: default 64 MiB,
     *  1 MiB .. 4 GiB. */
    uint64_t memory_limit;
    /** CPU time one handler call may use (the thread's CPU clock, not the
     *  wall clock), ms: default 1000, 1 .. 600000. */
    uint32_t timeout_ms;
    /** Partition states kept in memory: default 10000, 1 .. 10000000. */
    uint32_t cache_partitions;
    /** Largest state of one partition, bytes (JSON text): default 4 MiB,
     *  at most the store's max_event_size. A larger state faults. */
    uint64_t max_state_size;
    /** For a foreachStream() projection: keep a snapshot of a stream's
     *  state every this many events of the stream (0: none), committed
     *  with the batch in the projection's own system stream
     *  ($projections-NAME:snap-STREAM), used by stele_projection_fold(). */
    uint32_t snapshot_every;
} stele_projection_settings;

/**
 * Create projection `name` and (if settings->enabled) start it. Durable
 * before it returns. The query is compiled and run first: a syntax error,
 * a query that throws or selects no source fails with EINVAL and the
 * message, and nothing is created.
 * Errors: EINVAL (name, settings, query), EEXISTS, EREADONLY, EIO, ECLOSED.
 */
STELE_API
int stele_projection_create(stele_db *db, const char *name,
                            const stele_projection_settings *settings);

/**
 * Replace a projection's query (and emit_enabled if `emit_enabled` is 0 or
 * 1; -1 keeps it). A running projection stops after its current batch and
 * restarts from its checkpoint with the new query, its states kept (reset
 * it to rebuild them). Errors: ENOTFOUND, EINVAL (query), as for create.
 */
STELE_API
int stele_projection_update(stele_db *db, const char *name, const char *query,
                            size_t query_len, int emit_enabled);

/** Start / stop a projection (stopping waits for its current batch to
 *  commit). Enabling a faulted projection retries from its checkpoint.
 *  Errors: ENOTFOUND. */
STELE_API
int stele_projection_enable(stele_db *db, const char *name);
STELE_API
int stele_projection_disable(stele_db *db, const char *name);

/**
 * Reset: forget the checkpoint and every state, soft-delete the streams
 * the projection emitted to, and run again from the first event (if
 * enabled). Errors: ENOTFOUND.
 */
STELE_API
int stele_projection_reset(stele_db *db, const char *name);

/** Delete flags. */
#define STELE_PROJ_DELETE_STATE 0x1u   /* soft-delete its state and checkpoint streams */
#define STELE_PROJ_DELETE_EMITTED 0x2u /* soft-delete the streams it emitted to */

/** Stop and delete a projection. Errors: ENOTFOUND. */
STELE_API
int stele_projection_delete(stele_db *db, const char *name, unsigned flags);

/** What a projection is doing. Pointers point into the same allocation. */
typedef struct stele_projection_info {
    const char *name;
    const char *query;
    int mode;
    int enabled;
    int emit_enabled;
    /** "Running", "Stopped", "Faulted", "Completed". */
    const char *status;
    /** Faulted: the handler's message and the event's position. */
    const char *fault;
    uint64_t fault_position;
    /** Next position to process (every event before it is committed), the
     *  store's next position, and the lag between them. */
    uint64_t position;
    uint64_t head;
    uint64_t lag;
    /** Since the store was opened: events read, events a handler ran on,
     *  batches committed, handler time (ns), bytes of state written. */
    uint64_t events_read, events_processed, commits, handler_ns, state_bytes;
    /** Partitions in memory now and the JavaScript heap's bytes. */
    uint64_t partitions_cached, heap_bytes;
    /** How many times it was reset. */
    uint64_t epoch;
    /** What the query declared (JSON: source, handlers, options). */
    const char *definition;
    stele_projection_settings settings; /* query points into this info */
} stele_projection_info;

/** Every projection: *out is an array of *n infos freed with
 *  stele_projection_info_free(*out). */
STELE_API
int stele_projection_list(stele_db *db, stele_projection_info **out, size_t *n);

/** One projection, freed with stele_projection_info_free(). ENOTFOUND. */
STELE_API
int stele_projection_get(stele_db *db, const char *name, stele_projection_info **out);
STELE_API
void stele_projection_info_free(stele_projection_info *infos);

/**
 * The committed state of one partition ("" for a projection without
 * partitions) as JSON text: *json is a NUL-terminated allocation freed with
 * stele_free(), or NULL (and 0 returned) if that partition has no state
 * yet. `result` = 1 gives the result (after transformBy / filterBy)
 * instead. Errors: ENOTFOUND (no such projection), EINVAL.
 */
STELE_API
int stele_projection_state(stele_db *db, const char *name, const char *partition, int result,
                           char **json, size_t *len);

/** One partition of a read model (stele_projection_partitions). */
typedef struct stele_partition {
    const char *key;
    size_t key_len;
    const char *state; /* JSON text */
    size_t state_len;
} stele_partition;

/**
 * A projection's partitions as a read model, in key order (bytewise),
 * with their committed states: those with keys after `after` (NULL or "":
 * from the first), at most `limit` (1..10000) of them, and if `field` is
 * not NULL only those whose state is an object with a top-level member
 * `field` equal to the JSON value `value` ("\"c-1\"", "42", "true").
 * *out is one allocation of *n entries (keys and states inside it) freed
 * with stele_free(); *more = 1 if more may follow (pass the last key as
 * `after`). Cost: every call reads the projection's partition list and,
 * from `after` on, each partition's state until `limit` match; see
 * docs/projections.md. Errors: ENOTFOUND, EINVAL.
 */
STELE_API
int stele_projection_partitions(stele_db *db, const char *name, const char *after, size_t limit,
                                const char *field, const char *value, stele_partition **out,
                                size_t *n, int *more);

/**
 * Reconstruct the state of `stream` with projection `name`'s handlers (the
 * stream is one partition, as with foreachStream()): fold its events up to
 * revision `to` (STELE_END: all), or if `as_of_us` is not NULL those
 * committed at or before that time, starting from the newest snapshot the
 * projection saved at or before that revision (snapshot_every). Emits are
 * ignored. *json (freed with stele_free) is the state; *revision the last
 * revision folded (STELE_NONE: no event), *snapshot the revision of the
 * snapshot it started from (STELE_NONE: none); both may be NULL. Errors:
 * ENOTFOUND (projection or stream), EDELETED, EINVAL (a handler threw:
 * the message names the event).
 */
STELE_API
int stele_projection_fold(stele_db *db, const char *name, const char *stream, uint64_t to,
                          const int64_t *as_of_us, char **json, size_t *len, uint64_t *revision,
                          uint64_t *snapshot);

/**
 * A transient query: run `query` over every event the store holds when the
 * call starts, in the calling thread, in a fresh runtime, keeping nothing.
 * `limits` (may be NULL) gives memory_limit and timeout_ms; its other
 * fields are ignored. *json (freed with stele_free) is the answer: for a
 * query without partitions its state (its result with transformBy /
 * filterBy, null if filtered out); with partitions an object of every
 * partition's. Emitting fails the query. All partitions stay in the heap,
 * so the memory limit bounds the query. Errors: EINVAL (the query, or a
 * handler's fault with the event's position), ENOMEM, ECORRUPT.
 */
STELE_API
int stele_projection_query(stele_db *db, const char *query, size_t query_len,
                           const stele_projection_settings *limits, char **json, size_t *len);

/** Start the projection subsystem: load the definitions and start every
 *  enabled projection. Idempotent. */
STELE_API
int stele_projections_start(stele_db *db);

/**
 * Wait until projection `name` has committed every event before position
 * `position` (STELE_END: the store's end now), it faulted, stopped or
 * completed, or `timeout_ms` passed (-1: no limit). 0 if reached, EBUSY on
 * timeout, ENOTFOUND. For tests and read-your-writes.
 */
STELE_API
int stele_projection_wait(stele_db *db, const char *name, uint64_t position, int timeout_ms);

/* ----------------------------------------------------------------- stats */

typedef struct stele_stats {
    uint64_t events;        /* events in the log (on the local engine also the
                               next position; stele_position_head() gives the
                               end of $all on every backend) */
    uint64_t streams;       /* streams ever written, tombstoned or given metadata */
    uint64_t log_bytes;     /* bytes of log records */
    uint64_t segments;      /* segment files */
    uint64_t appends;       /* appends committed since open */
    uint64_t groups;        /* group commits (fdatasyncs) since open */
    int readonly;           /* 1 after a storage fault, or while there is no
                               space for the log */
    /* Why, when readonly: STELE_EREADONLY (a storage fault: sticky until the
     * store is reopened) or STELE_ENOSPC (no room for the next log segment
     * or the index: appends fail with STELE_ENOSPC and succeed again by
     * themselves once space is freed); readonly_reason says it in words. */
    int readonly_code;
    char readonly_reason[512];
} stele_stats;

STELE_API
int stele_get_stats(stele_db *db, stele_stats *out);

/* ------------------------------------------------------------- positions */

/*
 * $all positions are cursors owned by the store's backend: compare them as
 * unsigned integers (a later commit has a larger position), but do no
 * arithmetic on them; ask these instead. (The local engine's positions are
 * gapless, but another backend's need not be.)
 */

/**
 * The cursor from which a $all read returns the events after `position`
 * (the cursor that follows an event you have handled). STELE_NONE ("no
 * event yet") gives the first cursor.
 */
STELE_API
uint64_t stele_position_after(stele_db *db, uint64_t position);

/**
 * The last position that can precede cursor `next` (no event lies
 * strictly between them): "everything up to here was handled", the form
 * KurrentDB's checkpoints and SSE ids use. STELE_NONE for the first cursor.
 */
STELE_API
uint64_t stele_position_before(stele_db *db, uint64_t next);

/** The end of $all now: the cursor after the last visible commit (0 for an
 *  empty store). 0 or an error. */
STELE_API
int stele_position_head(stele_db *db, uint64_t *next);

/* ------------------------------------------------------------ scavenging */

/** What a scavenge did (stele_scavenge). Sizes in bytes. */
typedef struct stele_scavenge_result {
    /** Sealed segments examined (every segment but the one being written). */
    uint64_t segments_scanned;
    /** Segments rewritten without removed records. */
    uint64_t segments_rewritten;
    /** Events removed (hidden by a delete, tombstone or retention). */
    uint64_t events_removed;
    /** Bytes of the removed records. */
    uint64_t bytes_removed;
    /** Disk space given back: the size of the rewritten segment files
     *  before, minus after (a rewritten file is also compacted: the zero
     *  padding after the seal of a full segment goes too). */
    uint64_t bytes_reclaimed;
    /** Bytes of segment files read while scavenging. */
    uint64_t bytes_scanned;
    /** Wall-clock time of the scavenge, microseconds. */
    uint64_t duration_us;
    /** 1 if the progress callback stopped the scavenge early. */
    int stopped;
} stele_scavenge_result;

/**
 * Called after each segment with the totals so far. Return 0 to go on, non
 * zero to stop after this segment (what was rewritten stays rewritten). Runs
 * in the thread that called stele_scavenge(); it may call into libstele.
 */
typedef int (*stele_scavenge_progress)(void *ctx, const stele_scavenge_result *so_far);

/** Options of stele_scavenge(); NULL means none. */
typedef struct stele_scavenge_options {
    stele_scavenge_progress progress; /* may be NULL */
    void *ctx;                        /* passed to progress */
} stele_scavenge_options;

/**
 * Reclaim the space of events that no read can return any more: events
 * before a soft delete's truncate-before revision, events of tombstoned
 * streams, and (later) events past their stream's retention. Every sealed
 * segment (not the one being appended to) that holds such events is
 * rewritten without them. Positions and revisions of the remaining events
 * never change; stream reads return exactly what they returned before, and
 * $all no longer returns the removed events (it skips their positions).
 *
 * Kept always: an append's events stay together (an append is removed only
 * if every one of its events is hidden), the last append of every stream
 * (so the stream's last revision survives an index rebuild), and every
 * delete and tombstone record.
 *
 * Online: runs in the calling thread while other threads append and read;
 * it never holds up the writer. One scavenge runs at a time (a second call
 * waits for the first). Crash-safe: a segment is written under a temporary
 * name, synced, and renamed over the original, so after a crash at any
 * moment each segment is either the old or the new file, both complete.
 * Removed events are gone for good: loosening retention later does not
 * bring them back.
 *
 * `res` (may be NULL) receives what was done, also on failure (then up to
 * the failure). Errors: EREADONLY (after a storage fault), ECORRUPT (a
 * record failed its checksum; the message names segment and offset; nothing
 * of that segment was changed), EIO / ENOSPC (writing the new segment
 * failed; the original stays, the store is unaffected).
 */
STELE_API
int stele_scavenge(stele_db *db, const stele_scavenge_options *opts,
                   stele_scavenge_result *res);

/* ----------------------------------------------------------------- check */

/**
 * Verify a closed store in `dir` without changing it: every record's
 * checksum and framing, commit completeness, gapless positions (gaps only
 * inside scavenged segments, each accounted for by removed events), and
 * every index entry against the log. Returns 0 if sound; ECORRUPT with the first
 * damage in stele_errmsg() ("segment 00000003.seg offset 81920: checksum
 * mismatch"); ELOCKED if a process has the store open. If `report` is not
 * NULL it receives a NUL-terminated summary (at most `report_len` bytes).
 */
STELE_API
int stele_check(const char *dir, char *report, size_t report_len);

/* -------------------------------------------------------------- hash chain */

/**
 * The head of the store's hash chain (local engine; docs/security.md, "The
 * hash chain"). Every commit since the chain began carries
 * h = SHA-256(h_prev || SHA-256(the commit's records)); the head is the
 * newest durable one.
 */
typedef struct stele_chain_head {
    /** Chained commits so far (the next commit's number). 0: no chain yet. */
    uint64_t commits;
    /** Every event below this position written since the chain began is
     *  covered by `hash`. */
    uint64_t position;
    /** The newest commit's chain hash (zeros when commits is 0). */
    uint8_t hash[32];
    /** 1 when `signature` holds the Ed25519 signature of the head by the
     *  key set with stele_chain_set_signing_key() (over the bytes
     *  "stele-chain-head/1", commits and position as little-endian u64,
     *  hash), and `public_key` its public key. */
    int is_signed;
    uint8_t signature[64];
    uint8_t public_key[32];
} stele_chain_head;

/**
 * Sign chain heads (stele_chain_get_head, stele_chain_export) from now on with
 * the Ed25519 key in `key_file` (a file holding the 32-byte seed as 64 hex
 * digits, as `stele keygen` writes it); NULL stops signing. EINVAL (message
 * says why) for a missing or malformed file. The key is kept in memory
 * until stele_close().
 */
STELE_API
int stele_chain_set_signing_key(stele_db *db, const char *key_file);

/**
 * Make a new Ed25519 signing key: its 32-byte seed is written as 64 hex
 * digits to `key_file` (created, mode 0600; EEXISTS if it exists) and its
 * public key, as 64 hex digits and a NUL, to public_hex.
 */
STELE_API
int stele_chain_keygen(const char *key_file, char public_hex[65]);

/** Fill *out with the chain head. EINVAL on a backend without a chain
 *  (PostgreSQL, DynamoDB: the chain is a local-engine feature). */
STELE_API
int stele_chain_get_head(stele_db *db, stele_chain_head *out);

/**
 * Export the events at positions `from`..`to` (inclusive) with what links
 * them to the current chain head, as a JSON document (format
 * "stele-chain-export/1", docs/security.md): the chain hash before their
 * first commit, the records of every commit holding them, the digest of
 * every later commit up to the head, and the head with its signature when a
 * signing key is set. stele_chain_verify() checks it offline. The proof of
 * one event is the export of `from` = `to` = its position. *json (NUL
 * terminated, *len bytes) is freed with stele_free(). EINVAL: bad range or
 * no chain on this backend; ENOTFOUND: `from` is not a stored event, or it
 * was written before the chain began; ETOOBIG: the export would pass
 * 256 MiB.
 */
STELE_API
int stele_chain_export(stele_db *db, uint64_t from, uint64_t to, char **json, size_t *len);

/** What stele_chain_verify() found in a sound export. */
typedef struct stele_chain_verified {
    uint64_t events;       /**< events of the range in the export */
    uint64_t first, last;  /**< their first and last positions */
    uint64_t commits;      /**< commits from the first one to the head */
    int is_signed;         /**< the head's signature was checked */
    stele_chain_head head; /**< the head the export links to */
} stele_chain_verified;

/**
 * Verify an export made by stele_chain_export() without the store: every
 * record's checksum, the chain from its first commit to its head, and, when
 * `public_key` (32 bytes) is given, the head's Ed25519 signature by that key
 * (an unsigned export then fails). 0 if sound (*out filled, may be NULL);
 * ECORRUPT with the first mismatch in stele_errmsg(); EINVAL for text that
 * is not an export. Needs no open store.
 */
STELE_API
int stele_chain_verify(const char *json, size_t len, const uint8_t *public_key,
                       stele_chain_verified *out);

/* ------------------------------------------------------ backup and restore */

/** What a backup did (stele_backup). Sizes in bytes. */
typedef struct stele_backup_result {
    /** Segment files the backup holds (copied now or kept from before). */
    uint64_t segments;
    /** Segment files copied by this run (new, grown or rewritten ones). */
    uint64_t segments_copied;
    /** Segment files already in DEST unchanged, not copied again. */
    uint64_t segments_kept;
    /** Bytes copied by this run, and bytes the whole backup holds. */
    uint64_t bytes_copied;
    uint64_t bytes_total;
    /** Segments to look at and how many have been (for progress). */
    uint64_t segments_todo;
    uint64_t segments_done;
    /** The backup's point: events before end_position are in it; the
     *  created time (µs) of its last commit (0 for an empty store). */
    uint64_t end_position;
    int64_t end_time_us;
    /** Wall-clock time of the backup, microseconds. */
    uint64_t duration_us;
} stele_backup_result;

/** Called after each segment; return non-zero to stop (the previous
 *  backup in DEST then stays as it was). May call into libstele. */
typedef int (*stele_backup_progress)(void *ctx, const stele_backup_result *so_far);

/** Archive mode (the continuous archive): a sealed segment already in DEST
 *  is never replaced, also when scavenging has rewritten it in the store
 *  since, so the archive keeps every event ever committed and a restore
 *  can go back to any moment. */
#define STELE_BACKUP_ARCHIVE 0x1u

/** Options of stele_backup(); NULL means none. */
typedef struct stele_backup_options {
    uint32_t flags;                  /* STELE_BACKUP_* */
    stele_backup_progress progress;  /* may be NULL */
    void *ctx;                       /* passed to progress */
} stele_backup_options;

/**
 * Copy the open store into directory `dest` (created if missing) while
 * appends and reads go on: every sealed log segment, and the segment being
 * written up to the last commit acknowledged when the backup starts. Events,
 * stream metadata, snapshots, consumer-group checkpoints and projection
 * state are all records of the log, so the copy holds all of them as of
 * that commit; the indexes are rebuilt from it at restore. Incremental: a
 * segment that `dest` already holds unchanged (same header and length) is
 * not copied again. `dest` gets a manifest with every copy's CRC32C, written
 * last, atomically (docs/operations.md). Each copy is read back and its
 * checksum compared before the manifest names it.
 *
 * Errors: EINVAL (dest holds a backup of another store, or is not a
 * directory), EBUSY (another backup is writing into dest; a lock file
 * dest/stele-backup.lock says so), EIO / ENOSPC writing dest, ECORRUPT (a record's framing in
 * the store is damaged: the message names segment and offset). Only the
 * local engine has a backup; other backends return EINVAL (back them up
 * with their database's own tools). A backup and stele_scavenge() do not
 * run at the same time: each waits for the other to finish. `res` may be
 * NULL.
 */
STELE_API
int stele_backup(stele_db *db, const char *dest, const stele_backup_options *opts,
                 stele_backup_result *res);

/** Verify a backup or archive directory without changing it: the manifest,
 *  every file it names (present, its length and CRC32C), and every record's
 *  checksum and framing. 0, or ECORRUPT / ENOTFOUND naming the file. */
STELE_API
int stele_backup_verify(const char *src, char *report, size_t report_len);

/** Restore up to (and including) the commit that holds event position
 *  `to_position`. */
#define STELE_RESTORE_TO_POSITION 0x1u
/** Restore every commit made at or before `to_time_us`. */
#define STELE_RESTORE_TO_TIME 0x2u

typedef struct stele_restore_options {
    uint32_t flags;        /* at most one STELE_RESTORE_TO_*; 0: everything */
    uint64_t to_position;
    int64_t to_time_us;    /* µs since the Unix epoch */
} stele_restore_options;

typedef struct stele_restore_result {
    uint64_t segments;      /* segment files written */
    uint64_t bytes;         /* log bytes restored (records) */
    uint64_t end_position;  /* next position: events restored are below it */
    int64_t end_time_us;    /* created time of the last restored commit */
    uint64_t duration_us;   /* copying, rebuilding the indexes and checking */
} stele_restore_result;

/**
 * Build a new store in `dir` (missing or empty) from the backup or archive
 * in `src`, as it was right after one commit: the last one at or before the
 * option's point, or the backup's last. Records after that commit are left
 * out; everything before it is copied byte for byte, so positions, ids,
 * times, metadata, snapshots, group checkpoints and projection state are
 * those of that moment. The indexes are rebuilt from the log and the result
 * passes stele_check() before this returns.
 *
 * Errors: ECORRUPT or ENOTFOUND when the source is damaged (a missing file,
 * a checksum mismatch: the message names the file and offset); EINVAL for a
 * point outside the backup, a `dir` that holds files, or a point inside a
 * segment that scavenging rewrote (restore from an archive for those);
 * EIO / ENOSPC writing `dir`. `opts` and `res` may be NULL.
 */
STELE_API
int stele_restore(const char *src, const char *dir, const stele_restore_options *opts,
                  stele_restore_result *res);

/* ----------------------------------------------------------------- utils */

/** Format a UUID as 36 chars + NUL into `out` (37 bytes). */
STELE_API
void stele_uuid_format(const uint8_t id[16], char out[37]);

/** Parse "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (any case). 0 or EINVAL. */
STELE_API
int stele_uuid_parse(const char *text, uint8_t id[16]);

/** Format 16 bytes as a ULID: 26 chars of Crockford base32 (upper case) +
 *  NUL into `out` (27 bytes). */
STELE_API
void stele_ulid_format(const uint8_t id[16], char out[27]);

/** Parse a ULID (26 chars of Crockford base32, any case, the first 0-7)
 *  into its 16 bytes. 0 or EINVAL (`id` untouched). */
STELE_API
int stele_ulid_parse(const char *text, uint8_t id[16]);

/**
 * Parse an event id in either text form: a UUID (36 chars) or a ULID (26
 * chars; then STELE_EVENT_ID_ULID is or-ed into *flags if `flags` is not
 * NULL, to put in stele_event_in.flags). 0 or EINVAL.
 */
STELE_API
int stele_id_parse(const char *text, uint8_t id[16], uint32_t *flags);

/** Format an event id in the form its flags name (stele_event.flags):
 *  a ULID with STELE_EVENT_ID_ULID, else a UUID. `out` holds 37 bytes. */
STELE_API
void stele_id_format(const uint8_t id[16], uint32_t flags, char out[37]);

/**
 * Parse an RFC 3339 date-time ("2026-11-23T16:30:00.5Z",
 * "2026-11-23T18:30:00+02:00") into microseconds since the Unix epoch.
 * Digits below a microsecond round down, or up with `round_up` (a lower
 * bound "created >= t" or an exclusive upper bound "created < t" then
 * stays exact). 0, or EINVAL with the reason in stele_errmsg().
 */
STELE_API
int stele_time_parse(const char *text, int round_up, int64_t *us);

/** Format microseconds since the epoch as RFC 3339 in UTC with six
 *  fractional digits: "2026-11-23T16:30:00.000000Z" (27 chars + NUL). */
STELE_API
void stele_time_format(int64_t us, char out[32]);

#ifdef __cplusplus
}
#endif

#endif /* STELE_H */
