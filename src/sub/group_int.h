/*
 * group_int.h - what the consumer-group modules share (groups.c: the
 * registry, the public calls and the timer thread; group_run.c: a group's
 * runtime; group_store.c: the system streams that make groups durable).
 *
 * Locks, always taken in this order:
 *   sub_groups.admin   serialises create / update / delete / truncate: held
 *                      while waiting for the store's writer
 *   sub_groups.mu      the list of groups and the watch fds
 *   group.mu           one group's runtime
 * Append completions run on the store's writer thread and take group.mu
 * only; so nobody may wait for the writer while holding group.mu or
 * sub_groups.mu (every append made under them is asynchronous).
 */
#ifndef STELE_GROUP_INT_H
#define STELE_GROUP_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "store/store_int.h"
#include "sub/sub_int.h"
#include "util/util.h"

#define GROUP_NAME_MAX 128u
#define CONSUMER_NAME_MAX 128u
#define GROUP_NAMES_MAX 218u /* stream + group, so the system names fit */
#define REASON_MAX 1024u
#define GROUP_WATCH_MAX 16u
#define GROUP_LEASE_MS 10000u /* stele_options.group_lease_ms's default */

#define CONFIG_STREAM "$persistent-config"
#define SYS_PREFIX "$persistentsubscription-"

/* Event types of the system streams. */
#define EV_CREATED "GroupCreated"
#define EV_UPDATED "GroupUpdated"
#define EV_DELETED "GroupDeleted"
#define EV_CHECKPOINT "$GroupCheckpoint"
#define EV_LINK "$>"

/* ------------------------------------------------------------ events */

/* A reference-counted copy of one event, shared by the group's buffer and
 * the batches handed to consumers. */
typedef struct ev_blob {
    _Atomic int refs;
    stele_event e;
} ev_blob;

ev_blob *ev_blob_copy(const stele_event *e);
void ev_blob_unref(ev_blob *b);

/* ------------------------------------------------------------ messages */

enum msg_state { M_AVAIL, M_INFLIGHT, M_PARKING, M_DONE };

typedef struct stele_consumer gconsumer;

typedef struct gmsg {
    ev_blob *ev;
    /* Main queue: the event's position ($all) or revision (stream).
     * Replay queue: the revision of its link in the parked stream. */
    uint64_t key;
    int64_t deadline_ms; /* M_INFLIGHT */
    gconsumer *owner;
    uint32_t retries;
    uint8_t state;
} gmsg;

/* A ring of messages in key order. */
typedef struct mqueue {
    gmsg *v;
    size_t cap; /* a power of two, or 0 */
    size_t head, n;
} mqueue;

static inline gmsg *mq_at(const mqueue *q, size_t i) { return &q->v[(q->head + i) & (q->cap - 1)]; }

/* ------------------------------------------------------------ pinning */

/* Streams with events in flight: stream -> (consumer, count). */
typedef struct pin {
    struct pin *next;
    gconsumer *owner;
    uint32_t count;
    uint32_t hash;
    size_t len;
    char name[];
} pin;

typedef struct pin_map {
    pin **b;
    size_t nb; /* a power of two */
} pin_map;

/* ------------------------------------------------------------ groups */

typedef struct group group;

/* A range of the group's keys this server claimed (group_share.c). */
typedef struct grange {
    uint64_t from, to; /* the claim as last synced; events in [from, to) */
    uint64_t next;     /* the next key to read into the queue (to: all read) */
} grange;

struct stele_consumer {
    group *g;
    char name[CONSUMER_NAME_MAX + 1];
    uint32_t in_flight;
    uint64_t delivered;
    gconsumer *next;
};

/* What stele_consumer_read hands out. */
typedef struct batch_item {
    ev_blob *ev;
    uint32_t retries;
} batch_item;

struct stele_batch {
    size_t n, cap;
    batch_item *v;
};

/* The persisted definition of a group. */
typedef struct group_def {
    char *stream; /* NULL for $all */
    char *name;
    stele_group_settings set; /* set.filter unused: see filter_json */
    char *filter_json;        /* canonical JSON of the filter, or NULL */
    uint64_t ckpt_base;       /* revisions of the checkpoint and parked */
    uint64_t parked_base;     /* streams below these belong to an earlier group */
} group_def;

struct sub_groups;

struct group {
    struct sub_groups *gs;
    _Atomic int refs;
    group_def def;
    char ckpt_stream[256], parked_stream[256];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int deleted;

    /* Reading: a subscription from the checkpoint, made on first use. */
    stele_filter *filter_in; /* decoded filter (for the subscription and info) */
    stele_sub *sub;
    uint64_t read_pos;   /* next position/revision to read */
    int read_err;        /* last error of a fill (returned when nothing else) */
    char last_error[256];

    mqueue main, replay;
    size_t main_avail, replay_avail; /* M_AVAIL counts */
    uint64_t replay_next, replay_stop; /* parked revisions still to load */
    uint64_t parked_next;              /* next revision of the parked stream */
    uint64_t parked_trunc;             /* parked revisions below are gone */
    uint64_t meta_trunc;               /* the parked stream's truncateBefore */
    int meta_failed;                   /* setting it failed this tick */

    /* Checkpoints. */
    uint64_t ckpt_saved;       /* STELE_NONE: never saved */
    uint64_t trunc_saved;
    uint64_t done_since_save;
    int64_t last_save_ms;
    int saving;                /* a checkpoint append is in flight */
    unsigned pending;          /* appends in flight (checkpoints, parks) */
    uint64_t save_seq, saved_seq;
    int save_rc;               /* result of the last finished save */

    gconsumer *consumers;
    size_t n_consumers;
    unsigned waiters;
    pin_map pins;
    int64_t next_deadline_ms; /* earliest in-flight deadline, INT64_MAX if none */

    uint64_t delivered, acked, nacked, timed_out, parked_total;

    /* Sharing with other servers (group_share.c): the claims this server
     * holds, the frontier and other owners' lowest claim at the last sync. */
    char share_key[300];
    int share_ready;
    int unordered;  /* the main queue's keys do not ascend (a taken-over range) */
    grange *ranges;
    size_t nranges, cap_ranges;
    uint64_t frontier_seen, others_min;
    int64_t last_sync_ms, last_steal_ms;
    uint64_t ranges_claimed, ranges_taken, claim_conflicts;

    group *next;
};

typedef struct sub_groups {
    stele_db *db;
    pthread_mutex_t admin;
    pthread_mutex_t mu;
    group *list;
    pthread_mutex_t watch_mu; /* a leaf: guards watch_fds only */
    int watch_fd;  /* the store's commit eventfd, for the thread */
    int wake_fd;   /* eventfd to wake the thread */
    pthread_t thread;
    int thread_started;
    _Atomic int stopping;
    int watch_fds[GROUP_WATCH_MAX];
    unsigned nwatch;
    char node[STELE_NODE_NAME_MAX]; /* the owner name of this handle's claims */
    uint32_t lease_ms;
} sub_groups;

/* groups.c */
void groups_notify(sub_groups *gs);
void group_unref(group *g);

/* group_run.c: a group's runtime. All with g->mu held. */
int group_runtime_init(group *g);
void group_runtime_free(group *g);
/* Apply new settings (buffer size may grow). */
int group_apply_settings(group *g, const stele_group_settings *s);
/* Expire timed-out messages; 1 if some became available. */
int group_expire(group *g, int64_t now);
/* Save a checkpoint if the rules say so (force: if it moved at all). */
void group_maybe_save(group *g, int64_t now, int force);
/* Wait (g->mu held) until appends in flight are done. */
void group_wait_pending(group *g);
/* Release a consumer's in-flight messages (close). */
void group_release_consumer(group *g, gconsumer *c);
/* Hand up to `want` events to consumer c (want <= its free slots). */
int group_dispatch(group *g, gconsumer *c, size_t want, stele_batch *b, int64_t now);
/* Ack (action -1) or nack events by id; c NULL: whoever has them. */
int group_settle(group *g, gconsumer *c, const uint8_t (*ids)[16], size_t n, int action,
                 const char *reason);
/* Queue parked messages for replay: up to `max` (0: all). */
int group_start_replay(group *g, uint64_t max, uint64_t *count);
/* Drop the buffer and deliver again from `key`; durable on return. */
int group_rewind(group *g, uint64_t key, int64_t now);
/* The current checkpoint. */
uint64_t group_checkpoint(const group *g);
/* Wake waiting consumers and event-loop watchers. */
void group_wake(group *g);

/* group_share.c: claims shared with other servers. All with g->mu held. */
/* What to read next: [*from, *to) of a taken-over range (*to a key), or
 * new events from *from (*to STELE_NONE). */
int gshare_next(group *g, int64_t now, uint64_t *from, uint64_t *to);
/* Claim [from, to) of new events. 0, or STELE_EWRONGREV when another
 * server claimed from `from` first (g->read_pos is then the new frontier). */
int gshare_claim(group *g, uint64_t from, uint64_t to);
/* The range ending at `to` was read up to `next` (`to`: all of it). */
void gshare_read_to(group *g, uint64_t to, uint64_t next);
/* The checkpoint: every event of the group below it is done. */
uint64_t gshare_checkpoint(const group *g);
/* Report progress and renew the claims (GSHARE_PROGRESS), give them up
 * (GSHARE_RELEASE), or only renew them (GSHARE_RENEW). */
enum { GSHARE_PROGRESS, GSHARE_RELEASE, GSHARE_RENEW };
int gshare_sync(group *g, int64_t now, int mode);
/* Renew the claims if a third of the lease passed. */
void gshare_tick(group *g, int64_t now);
/* Forget every claim; the group starts again at `pos` (STELE_NONE: it is
 * deleted). */
int gshare_reset(group *g, uint64_t pos);
void gshare_free(group *g);

/* group_store.c: the system streams. */
/* Fold $persistent-config into the live definitions: *defs (n of them),
 * freed with group_def_free on each and free(). */
int gstore_load_defs(stele_db *db, group_def **defs, size_t *n);
void group_def_free(group_def *d);
int gstore_write_def(stele_db *db, const char *type, const group_def *d);
/* Read the last checkpoint of a group: ckpt (STELE_NONE if none), trunc. */
int gstore_read_checkpoint(stele_db *db, const group *g, uint64_t *ckpt, uint64_t *trunc);
/* JSON bodies of a checkpoint and of a parked link's metadata. */
int gstore_checkpoint_json(buf *b, uint64_t ckpt, uint64_t trunc);
int gstore_link_meta_json(buf *b, const stele_event *e, const char *reason, uint32_t retries);
/* Resolve a parked link to its event. 0 with *out (NULL if it is gone). */
int gstore_resolve_link(stele_db *db, const stele_event *link, ev_blob **out);
/* Filter <-> canonical JSON. */
int gstore_filter_to_json(const stele_filter *f, char **out);
int gstore_filter_from_json(const char *json, stele_filter **out);
void gstore_filter_free(stele_filter *f);
/* System stream names of a group; EINVAL if they do not fit. */
int group_sys_names(const char *stream, const char *name, char ckpt[256], char parked[256]);

/* Stop the consumer groups (groups.c): save their checkpoints and free
 * them. stele_close calls it through db->close_up[STORE_UP_GROUPS]. */
void sub_groups_close(stele_db *db);

#endif
