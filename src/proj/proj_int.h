/*
 * proj_int.h - what the files of src/proj share: a projection's
 * definition, its runtime record, the registry of a store's projections,
 * and the storage calls (pstore.c) the runner (run.c) and the public calls
 * (api.c) use.
 *
 * System streams of projection NAME (docs/projections.md); the ":" after
 * NAME (which names cannot contain) keeps two projections' streams apart:
 *   $projections-$all                  definitions: one event per change
 *   $projections-NAME:checkpoint       "$ProjectionCheckpoint" {"position","epoch"}
 *   $projections-NAME:state            the state of a projection without partitions
 *   $projections-NAME:state-KEY        the state of partition KEY
 *   $projections-NAME:shared           the bi-state shared state
 *   $projections-NAME:partitions       one event per partition, data = its key
 *   $projections-NAME:emittedstreams   one event per stream it emitted to
 *   $projections-NAME-result, $projections-NAME-KEY-result   results (outputState)
 *   $projections-NAME:snap-STREAM      snapshots of a stream's state (snapshotEvery)
 * A KEY that is not a usable stream name part (control characters, too
 * long, starting with '#') is written as '#' and a 128-bit hash.
 */
#ifndef STELE_PROJ_INT_H
#define STELE_PROJ_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "proj/js.h"
#include "stele.h"
#include "store/store_int.h"
#include "util/util.h"

#define PROJ_NAME_MAX 100
#define PROJ_QUERY_MAX (1u << 20)
#define PROJ_REGISTRY "$projections-$all"

/* A projection's definition, as the registry stream keeps it. */
typedef struct proj_def {
    char name[PROJ_NAME_MAX + 1];
    char *query;
    size_t query_len;
    int mode;
    int enabled;
    int emit_enabled;
    uint64_t memory_limit;
    uint32_t timeout_ms;
    uint32_t cache_partitions;
    uint64_t max_state_size;
    uint32_t snapshot_every;
    uint64_t epoch;       /* bumped by each reset */
    int reset_pending;    /* the reset's deletes are not all done yet */
    int deleted;
} proj_def;

enum { PS_STOPPED, PS_RUNNING, PS_FAULTED, PS_COMPLETED };

typedef struct proj proj;

/* The projections of one store (db->projs). */
typedef struct proj_sys {
    stele_db *db;
    pthread_mutex_t mu;   /* the list, and each proj's fields marked (mu) */
    pthread_mutex_t admin; /* serialises definition changes */
    proj **list;
    size_t n, cap;
    int closing;
    /* deleted projections, freed at close: a stele_projection_wait may
     * still hold one (mu) */
    proj **dead;
    size_t ndead;
    /* inline projections (inline.c), by category; (mu) */
    struct proj_inline **inl;
    size_t ninline;
} proj_sys;

struct proj {
    proj_sys *sys;
    /* (mu) */
    proj_def def;
    int status;
    char fault[1024];
    uint64_t fault_position;
    uint64_t position; /* committed checkpoint: next position to process */
    char *definition;  /* the query's description (JSON) */
    /* Counters (atomics: the runner writes, status readers read). */
    _Atomic uint64_t events_read, events_processed, commits, handler_ns, state_bytes;
    _Atomic uint64_t partitions_cached, heap_bytes;
    /* The runner thread. */
    pthread_t thread;
    int has_thread;
    _Atomic int stop;
    pthread_cond_t cv; /* with sys->mu: progress, for stele_projection_wait */
    int gone; /* deleted (mu) */
};

/* pstore.c: names */
int pstore_stream_name(const proj_def *d, const char *kind, char out[256]);
int pstore_partition_stream(const proj_def *d, const char *key, size_t klen, int shared,
                            char out[256]);
void pstore_event_id(const proj_def *d, const char *kind, uint64_t position, uint64_t seq,
                     const char *key, size_t klen, uint8_t id[16]);

/* A hash of a projection's name and query: its snapshots carry it, so a
 * changed query ignores older ones. */
uint32_t pstore_snapshot_tag(const proj_def *d);
/* Fill `pe` (its data already the state) as the snapshot of `stream` at
 * `revision` (event position `position`). */
struct pcommit_event;
int pstore_snapshot_record(const proj_def *d, const char *stream, size_t slen, uint64_t revision,
                           uint64_t position, struct pcommit_event *pe);
/* The newest snapshot of `stream` at or before `revision` with the
 * projection's current tag: *found = 0 if none; else its state is appended
 * to *state and its revision in *at. */
int pstore_find_snapshot(stele_db *db, const proj_def *d, const char *stream, uint64_t revision,
                         buf *state, uint64_t *at, int *found);

/* pstore.c: definitions */
int pstore_write_def(stele_db *db, const proj_def *d);
int pstore_load_defs(stele_db *db, proj_def **defs, size_t *n);
void proj_def_free(proj_def *d);
int proj_def_copy(proj_def *dst, const proj_def *src);

/* pstore.c: checkpoint, states */
int pstore_read_checkpoint(stele_db *db, const proj_def *d, uint64_t *position);
/* The stored state of a partition: *found = 0 if none (or of an older
 * epoch), 2 if the `$deleted` handler dropped it (then *pos is the
 * position of that drop and *out is unchanged). The JSON goes to *out, the
 * position it covers to *pos. */
int pstore_load_state(stele_db *db, const proj_def *d, const char *key, size_t klen,
                      int shared, buf *out, uint64_t *pos, int *found);
/* Make `stream` keep only its last event (maxCount 1, other metadata
 * kept), unless it does already: superseded states and checkpoints then
 * are hidden and scavenging gives their space back. Idempotent. */
int pstore_keep_last(stele_db *db, const char *stream);

/* Soft-delete what a reset or delete removes: emitted streams (if
 * `emitted`), and state streams, partitions, checkpoint (if `state`). */
int pstore_delete_streams(stele_db *db, const proj_def *d, int emitted, int state);

/* One batch's output, committed by pstore_commit(). */
typedef struct pcommit_event {
    char stream[256];
    char type[256];
    buf data, meta;
    uint32_t flags;
    uint8_t id[16];
    /* A record of the states pass whose id is made only if the batch is
     * committed in steps (one commit needs none: pstore.c): the inputs of
     * pstore_event_id, kept instead of hashing every state's id. */
    const char *lazy_kind; /* NULL: id is set */
    uint64_t lazy_pos;
    buf lazy_key;
} pcommit_event;

typedef struct pcommit {
    pcommit_event *emits; /* events for other streams, in emit order */
    size_t nemits, cap_emits;
    pcommit_event *states; /* state, partition and result records */
    size_t nstates, cap_states;
    uint64_t checkpoint;   /* the next position to process */
} pcommit;

pcommit_event *pcommit_add(pcommit *c, int state);
/* Record pstore_event_id(d, kind, position, 0, key) as pe's id, made
 * when needed. kind is a static string. 0 or STELE_ENOMEM. */
int pcommit_lazy_id(pcommit_event *pe, const char *kind, uint64_t position, const char *key,
                    size_t klen);
void pcommit_clear(pcommit *c);
void pcommit_free(pcommit *c);
/* Commit a batch: emitted events, then states, then the checkpoint
 * (docs/projections.md, "Exactly once"). 0 or the error (message set). */
int pstore_commit(stele_db *db, const proj_def *d, pcommit *c);

/* inline.c: register an inline projection (checks its query's shape and
 * that its category has no other), mark it gone or (in)active, stop the
 * workers at close. */
int proj_inline_add(proj_sys *s, const proj_def *d);
void proj_inline_drop(proj_sys *s, const char *name);
void proj_inline_close(proj_sys *s);

/* run.c */
/* The $all subscription filter of a query's source; *regex (free) holds
 * what the filter points to (its stream regex or its type list) if any. */
int proj_make_filter(const proj_source *src, stele_filter *f, char **regex);
int proj_sys_get(stele_db *db, proj_sys **out);
proj *proj_find(proj_sys *s, const char *name); /* with s->mu held */
int proj_start(proj *p);                         /* with s->admin held */
void proj_stop(proj *p);                         /* with s->admin held */
int proj_check_settings(stele_db *db, const char *name, const stele_projection_settings *st,
                        proj_def *d);

/* Stop the projections (run.c) after their current batch and free them.
 * stele_close calls it through db->close_up[STORE_UP_PROJ]. */
void proj_sys_close(stele_db *db);

#endif
