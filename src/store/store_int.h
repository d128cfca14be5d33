/*
 * store_int.h - what the library's own modules above the backend (src/sub,
 * later src/proj) share with src/store (store.c, query.c, streams.c): the store handle and the internal
 * calls that bypass the public API's rules for users, such as writing
 * system streams; and the argument checks the files of src/store share.
 */
#ifndef STELE_STORE_INT_H
#define STELE_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "stele.h"

struct sub_groups;
struct proj_sys;
struct rules_reg;

/* Slots of stele_db.close_up, in the order stele_close stops them. */
enum { STORE_UP_PROJ, STORE_UP_RULES, STORE_UP_GROUPS, STORE_UP_N };

struct stele_db {
    backend *be;
    stele_options opts;
    /* Persistent subscriptions (src/sub/groups.c); NULL until used. */
    struct sub_groups *groups;
    /* Projections (src/proj/run.c); NULL until used. */
    struct proj_sys *projs;
    /* Rules (src/rules/rules.c); NULL until used. */
    struct rules_reg *rules;
    /* How to stop each module above the store that keeps state here: set
     * by the module when it starts, called by stele_close in slot order
     * (projections, then rules, then consumer groups) before the backend
     * closes. The store never names those modules. */
    void (*close_up[STORE_UP_N])(stele_db *db);
    /* The hash chain's signing key (chain.c); NULL: heads are unsigned. */
    struct store_chain_key *chain_key;
};

/* Forget the signing key (stele_close; chain.c). */
void store_chain_close(stele_db *db);

/* Append to any stream, system streams ('$...') included; otherwise the
 * same checks and results as stele_append(). */
int store_append_system(stele_db *db, const char *stream, int64_t expected,
                        const stele_event_in *events, size_t n, stele_append_result *res);

/* The same, queued: stele_append_async() for system streams. */
int store_append_system_async(stele_db *db, const char *stream, int64_t expected,
                              const stele_event_in *events, size_t n, stele_append_cb cb,
                              void *ctx);

/* stele_set_stream_metadata() / stele_get_stream_metadata() for any
 * stream, system streams ('$...') included (streams.c); the same checks
 * and results otherwise. */
int store_set_metadata_system(stele_db *db, const char *stream, const stele_stream_metadata *md,
                              int64_t expected_version, uint64_t *version);
int store_get_metadata_system(stele_db *db, const char *stream, stele_stream_metadata **out);

/* Inline projections (src/proj/inline.c): the one covering the category
 * of user stream `stream` (NULL if none; starts the projection subsystem
 * on first use), and the append done through it: in the calling thread,
 * or queued to its worker thread, which calls cb once. The events given
 * to proj_inline_queue must stay valid until cb runs. */
struct proj_inline;
struct proj_inline *proj_inline_for(stele_db *db, const char *stream, size_t len);
int proj_inline_append(stele_db *db, struct proj_inline *pi, const char *stream,
                       int64_t expected, const stele_event_in *events, size_t n,
                       stele_append_result *res);
int proj_inline_queue(stele_db *db, struct proj_inline *pi, const char *stream, int64_t expected,
                      const stele_event_in *events, size_t n, stele_append_cb cb, void *ctx);


/* views.c: 1 if the stream name is a system view stream ($ce-{key},
 * $et-{key}, $bc-{key}, $streams) with its read_view kind and key (a
 * pointer into `stream`, possibly empty), else 0. */
int store_view_parse(const char *stream, size_t len, int *kind, const char **key,
                     size_t *key_len);
/* As store_view_parse, but 0 only for a usable view (a key where one is
 * needed), else EINVAL with the reason. */
int store_view_check(const char *stream, size_t len, int *kind, const char **key,
                     size_t *key_len);
/* Read a view stream (the name was checked by store_check_read_stream):
 * as stele_read_stream. */
int store_read_view(stele_db *db, const char *stream, size_t len, uint64_t from, int backwards,
                    size_t limit, stele_page **out);

/* Check a stream name for reading: system names allowed. 0 or EINVAL. */
int store_check_read_stream(const char *stream, size_t *len);

/* store.c: a stream name to write (no system names; sets *len), an
 * expected revision; 0 or EINVAL with the reason. */
int check_stream(const char *stream, size_t *len);
int check_expected(int64_t expected);
/* A stream name; `system` = 1 allows '$' names. 0 or EINVAL. */
/* The system stream of stream deletes (docs/projections.md "$deleted"). */
#define STORE_DELETES "$deletes"
int check_name_of(const char *stream, size_t *len, int system);
/* The size of an append as the API edge measures it, the same for every
 * backend: each event counts STORE_EVENT_FIXED bytes plus its stream name,
 * type, tags, data and metadata; a multi-stream append's state snapshot
 * counts STORE_EVENT_FIXED plus its stream name and state. The public
 * limits (max_append_size) apply to this measure; each backend enforces
 * its own storage limits beyond it. */
#define STORE_EVENT_FIXED 72u
/* One event of an append (store.c): 0 with its size (as above), or EINVAL /
 * ETOOBIG naming event i. `checked_type` is a type string this append
 * already checked (the previous event's, or NULL): an event whose type is
 * that same pointer skips the name check (a batch usually repeats one
 * type; the caller's strings do not change during the call). */
int store_check_event(const stele_options *o, size_t i, const stele_event_in *e, size_t slen,
                      const char *checked_type, uint64_t *size);
/* Event i of an append, checked (store_check_event) and taken: its size
 * added to *total (ETOOBIG once that passes the append limit), its id the
 * client's (never the nil UUID; *nclient counted) or a new UUIDv7 (*made
 * set) made at `now_us` (the append reads the clock once). 0 or the
 * error. */
int store_take_event(const stele_options *o, size_t i, const stele_event_in *e, size_t slen,
                     const char *checked_type, int64_t now_us, uint64_t *total, uint8_t id[16],
                     uint8_t *made, size_t *nclient);
/* The nclient client-given ids among ids[0..n) (made[i] == 0) are unique,
 * so that a retry is recognisable: 0, EINVAL naming a repeated one, or
 * ENOMEM. */
int store_check_ids(const uint8_t (*ids)[16], const uint8_t *made, size_t n, size_t nclient);
/* A type or tag of condition item i: 0 or EINVAL. */
int store_check_item_name(const char *what, size_t i, const char *s);

/* stele_append_multi() that may write system streams ('$...'), for the
 * library's own modules (projections, system streams). */
int store_append_multi_system(stele_db *db, const stele_append_stream *streams, size_t nstreams,
                              const stele_append_record *records, size_t nrecords,
                              const stele_condition *cond, stele_append_result *per_stream,
                              stele_multi_result *res);

/* meta_json.c: check that s[0..len) is one JSON object (RFC 8259) usable
 * as custom stream metadata: at most `max_fields` members, no duplicate
 * member names, none reserved (maxAge, maxCount, truncateBefore,
 * maxSnapshots, or starting with '$'). 0 or EINVAL with the reason. */
int meta_json_check_custom(const char *s, size_t len, size_t max_fields);

#endif
