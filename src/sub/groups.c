/*
 * groups.c - persistent subscriptions (consumer groups): the public calls
 * of include/stele.h's "consumer groups" section, the registry of a
 * store's groups and the timer thread.
 *
 * The registry is made on the first group call of a store handle: it
 * folds $persistent-config into the live groups and reads each group's
 * last checkpoint (group_store.c), then starts one thread. The thread
 * sleeps in poll() on its own wake-up eventfd and, while any consumer is
 * connected, on the store's commit eventfd, at most 100 ms (less when a
 * message deadline is nearer), and on each wake-up, for every group:
 * expires timed-out messages, saves a checkpoint when the rules say so,
 * wakes consumers waiting in stele_consumer_read() after a commit, and
 * signals the event-loop watch fds. With no consumer connected a commit
 * costs the thread nothing. Calls into a group do the same work for that group on the way, so
 * the thread only matters for groups nobody is calling.
 *
 * Administrative calls (create, update, delete, truncate parked) are
 * serialised by `admin` and wait for their system-stream append to be
 * durable; consumer calls never wait for the writer.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "backend/page.h"
#include "sub/group_int.h"

#define TICK_MS 100

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t mono_ms(void) { return (int64_t)(time_mono_ns() / 1000000u); }

/* ------------------------------------------------------------ notify */

void groups_notify(sub_groups *gs)
{
    pthread_mutex_lock(&gs->watch_mu);
    for (unsigned i = 0; i < gs->nwatch; i++) {
        uint64_t one = 1;
        ssize_t n = write(gs->watch_fds[i], &one, sizeof one);
        (void)n; /* EAGAIN: already pending */
    }
    pthread_mutex_unlock(&gs->watch_mu);
}

/* ------------------------------------------------------------ groups */

void group_unref(group *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    group_runtime_free(g);
    gstore_filter_free(g->filter_in);
    group_def_free(&g->def);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

/* The next revision of a stream (0 if never written). */
static int next_revision(stele_db *db, const char *stream, uint64_t *out)
{
    stele_stream_info info;
    int rc = db->be->ops->head(db->be, stream, strlen(stream), &info);
    *out = 0;
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        return 0;
    }
    if (rc)
        return rc;
    *out = info.last_revision == STELE_NONE ? 0 : info.last_revision + 1;
    return 0;
}

/* Give a group's checkpoint stream maxCount = 1 (only its last event
 * matters), so reads see one event and scavenging reclaims the others. */
static int ckpt_meta_set(stele_db *db, const char *ckpt_stream)
{
    stele_stream_metadata md = {.max_count = 1};
    return store_set_metadata_system(db, ckpt_stream, &md, STELE_ANY, NULL);
}

/* Groups made before stream metadata existed: give the checkpoint stream
 * its maxCount if it has none, and return the parked stream's
 * truncateBefore (0 if none). Best effort: a read-only store, say, keeps
 * working without them. */
static uint64_t meta_on_load(stele_db *db, const group *g)
{
    stele_stream_metadata *md = NULL;
    int rc = store_get_metadata_system(db, g->ckpt_stream, &md);
    if (rc == STELE_ENOTFOUND || (rc == 0 && md->max_count == 0))
        ckpt_meta_set(db, g->ckpt_stream);
    stele_free(md);
    md = NULL;
    uint64_t tb = 0;
    if (store_get_metadata_system(db, g->parked_stream, &md) == 0)
        tb = md->truncate_before;
    stele_free(md);
    err_clear();
    return tb;
}

/* Hide the parked revisions below `t` in the parked stream itself (its
 * truncateBefore), for plain reads and the scavenger. Called without
 * g->mu: the write waits for the writer, whose callbacks take g->mu. */
static int parked_meta_set(group *g, uint64_t t)
{
    pthread_mutex_lock(&g->mu);
    int skip = t <= g->meta_trunc;
    pthread_mutex_unlock(&g->mu);
    if (skip)
        return 0;
    stele_stream_metadata md = {.truncate_before = t};
    int rc = store_set_metadata_system(g->gs->db, g->parked_stream, &md, STELE_ANY, NULL);
    if (rc == 0) {
        pthread_mutex_lock(&g->mu);
        if (t > g->meta_trunc)
            g->meta_trunc = t;
        pthread_mutex_unlock(&g->mu);
    }
    return rc;
}

/* The consumer group thread: carry the parked streams' truncateBefore up to
 * the truncation the groups saved (finished replays move it). Skipped
 * while an administrative call runs; retried at the next tick on error. */
static void sync_parked_meta(sub_groups *gs)
{
    if (pthread_mutex_trylock(&gs->admin) != 0)
        return;
    for (;;) {
        group *g = NULL;
        uint64_t t = 0;
        pthread_mutex_lock(&gs->mu);
        for (group *x = gs->list; x && !g; x = x->next) {
            pthread_mutex_lock(&x->mu);
            if (!x->deleted && x->trunc_saved > x->meta_trunc && !x->meta_failed) {
                g = x;
                t = x->trunc_saved;
                atomic_fetch_add(&g->refs, 1);
            }
            pthread_mutex_unlock(&x->mu);
        }
        pthread_mutex_unlock(&gs->mu);
        if (!g)
            break;
        int rc = parked_meta_set(g, t);
        if (rc) {
            pthread_mutex_lock(&g->mu);
            g->meta_failed = 1;
            pthread_mutex_unlock(&g->mu);
        }
        group_unref(g);
    }
    /* Failures are retried at the next tick. */
    pthread_mutex_lock(&gs->mu);
    for (group *x = gs->list; x; x = x->next) {
        pthread_mutex_lock(&x->mu);
        x->meta_failed = 0;
        pthread_mutex_unlock(&x->mu);
    }
    pthread_mutex_unlock(&gs->mu);
    err_clear();
    pthread_mutex_unlock(&gs->admin);
}

/* A group from its definition (moved into the group). `fresh`: just
 * created, nothing to read back. */
static int group_new(sub_groups *gs, group_def *def, int fresh, group **out)
{
    group *g = calloc(1, sizeof *g);
    if (!g) {
        group_def_free(def);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    g->gs = gs;
    atomic_store(&g->refs, 1);
    g->def = *def;
    memset(def, 0, sizeof *def);
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->ckpt_saved = STELE_NONE;
    int rc = group_sys_names(g->def.stream, g->def.name, g->ckpt_stream, g->parked_stream);
    if (rc == 0)
        rc = gstore_filter_from_json(g->def.filter_json, &g->filter_in);
    if (rc == 0)
        rc = group_runtime_init(g);
    uint64_t ck = STELE_NONE, trunc = 0;
    if (rc == 0 && !fresh)
        rc = gstore_read_checkpoint(gs->db, g, &ck, &trunc);
    if (rc == 0 && !fresh)
        rc = next_revision(gs->db, g->parked_stream, &g->parked_next);
    if (rc) {
        group_unref(g);
        return rc;
    }
    uint64_t tb = fresh ? 0 : meta_on_load(gs->db, g);
    g->meta_trunc = tb;
    g->ckpt_saved = ck;
    g->trunc_saved = trunc;
    g->read_pos = ck != STELE_NONE ? ck : g->def.set.start;
    g->parked_trunc = trunc > g->def.parked_base ? trunc : g->def.parked_base;
    if (g->parked_trunc < tb)
        g->parked_trunc = tb;
    if (g->parked_next < g->parked_trunc)
        g->parked_next = g->parked_trunc;
    g->replay_next = g->replay_stop = g->parked_trunc;
    if (fresh)
        g->trunc_saved = g->parked_trunc;
    g->last_save_ms = mono_ms();
    *out = g;
    return 0;
}

static int same(const group *g, const char *stream, const char *name)
{
    if ((g->def.stream == NULL) != (stream == NULL))
        return 0;
    return (!stream || !strcmp(g->def.stream, stream)) && !strcmp(g->def.name, name);
}

/* The group, with a reference for the caller; NULL if none. */
static group *find(sub_groups *gs, const char *stream, const char *name)
{
    pthread_mutex_lock(&gs->mu);
    group *g = gs->list;
    while (g && !same(g, stream, name))
        g = g->next;
    if (g)
        atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&gs->mu);
    return g;
}

/*
 * Groups made, changed or deleted by another server of a shared store
 * (PostgreSQL, DynamoDB): fold $persistent-config again; add the groups
 * this handle lacks, apply new settings, and drop the groups that are gone
 * (their consumers then get ENOTFOUND, as after a delete here). With
 * gs->admin held. The local engine has one process: nothing to learn.
 */
#define REFRESH_MS 5000
static void refresh(sub_groups *gs)
{
    if (!strcmp(gs->db->be->ops->name, "local"))
        return;
    group_def *defs;
    size_t n;
    if (gstore_load_defs(gs->db, &defs, &n)) {
        err_clear(); /* keep what is known; the caller reports a miss */
        return;
    }
    pthread_mutex_lock(&gs->mu);
    for (group *g = gs->list; g; g = g->next) {
        size_t i = 0;
        while (i < n && !(same(g, defs[i].stream, defs[i].name) &&
                          defs[i].ckpt_base == g->def.ckpt_base))
            i++;
        pthread_mutex_lock(&g->mu);
        if (i == n)
            g->deleted = 1;
        else if (!g->deleted)
            group_apply_settings(g, &defs[i].set);
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
    }
    for (group **pp = &gs->list; *pp;) {
        group *g = *pp;
        if (g->deleted) {
            *pp = g->next;
            group_unref(g);
        } else {
            pp = &g->next;
        }
    }
    pthread_mutex_unlock(&gs->mu);
    for (size_t i = 0; i < n; i++) {
        group *g = NULL;
        pthread_mutex_lock(&gs->mu);
        for (g = gs->list; g && !same(g, defs[i].stream, defs[i].name); g = g->next)
            ;
        pthread_mutex_unlock(&gs->mu);
        if (g || group_new(gs, &defs[i], 0, &g)) {
            group_def_free(&defs[i]);
            err_clear();
            continue;
        }
        pthread_mutex_lock(&gs->mu);
        g->next = gs->list;
        gs->list = g;
        pthread_mutex_unlock(&gs->mu);
    }
    free(defs);
}

/* find(), learning first what other servers did if the group is unknown;
 * `admin`: gs->admin is held. */
static group *find_shared(sub_groups *gs, const char *stream, const char *name, int admin)
{
    group *g = find(gs, stream, name);
    if (g)
        return g;
    if (!admin)
        pthread_mutex_lock(&gs->admin);
    refresh(gs);
    if (!admin)
        pthread_mutex_unlock(&gs->admin);
    return find(gs, stream, name);
}

static int not_found(const char *stream, const char *name)
{
    return err_set(STELE_ENOTFOUND, "consumer group '%s' on %s%s%s does not exist", name,
                   stream ? "stream '" : "$all", stream ? stream : "", stream ? "'" : "");
}

/* ------------------------------------------------------------ the thread */

static void *thread_main(void *arg)
{
    sub_groups *gs = arg;
    int64_t last_refresh = mono_ms();
    for (;;) {
        int64_t now = mono_ms(), wait = TICK_MS;
        size_t listeners = 0;
        pthread_mutex_lock(&gs->mu);
        for (group *g = gs->list; g; g = g->next) {
            pthread_mutex_lock(&g->mu);
            if (g->next_deadline_ms - now < wait)
                wait = g->next_deadline_ms - now;
            listeners += g->n_consumers;
            pthread_mutex_unlock(&g->mu);
        }
        pthread_mutex_unlock(&gs->mu);
        /* Commits matter only while consumers are connected: without
         * them the thread just ticks (a connect kicks it). */
        struct pollfd pf[2] = {{.fd = gs->wake_fd, .events = POLLIN},
                               {.fd = gs->watch_fd, .events = POLLIN}};
        int n = poll(pf, listeners ? 2 : 1, wait < 0 ? 0 : (int)wait);
        if (atomic_load(&gs->stopping))
            break;
        uint64_t v;
        int commit = 0;
        if (n > 0 && listeners && (pf[1].revents & POLLIN))
            commit = read(gs->watch_fd, &v, sizeof v) == sizeof v;
        if (n > 0 && (pf[0].revents & POLLIN)) {
            ssize_t r = read(gs->wake_fd, &v, sizeof v);
            (void)r;
        }
        now = mono_ms();
        size_t consumers = 0;
        pthread_mutex_lock(&gs->mu);
        for (group *g = gs->list; g; g = g->next) {
            pthread_mutex_lock(&g->mu);
            if (!g->deleted) {
                group_expire(g, now);
                group_maybe_save(g, now, 0);
                gshare_tick(g, now);
                if (commit && g->waiters)
                    pthread_cond_broadcast(&g->cv);
                consumers += g->n_consumers;
            }
            pthread_mutex_unlock(&g->mu);
        }
        pthread_mutex_unlock(&gs->mu);
        sync_parked_meta(gs);
        /* What other servers of a shared store did to the groups. */
        if (now - last_refresh >= REFRESH_MS && pthread_mutex_trylock(&gs->admin) == 0) {
            refresh(gs);
            pthread_mutex_unlock(&gs->admin);
            last_refresh = now;
        }
        /* Event loops only care when someone could read what came. */
        if (commit && consumers)
            groups_notify(gs);
    }
    return NULL;
}

/* ------------------------------------------------------------ registry */

static void registry_free(sub_groups *gs)
{
    while (gs->list) {
        group *g = gs->list;
        gs->list = g->next;
        group_unref(g);
    }
    if (gs->watch_fd >= 0)
        gs->db->be->ops->unwatch(gs->db->be, gs->watch_fd);
    if (gs->wake_fd >= 0)
        close(gs->wake_fd);
    for (unsigned i = 0; i < gs->nwatch; i++)
        close(gs->watch_fds[i]);
    pthread_mutex_destroy(&gs->admin);
    pthread_mutex_destroy(&gs->mu);
    pthread_mutex_destroy(&gs->watch_mu);
    free(gs);
}

static int registry_open(stele_db *db, sub_groups **out)
{
    sub_groups *gs = calloc(1, sizeof *gs);
    if (!gs)
        return err_set(STELE_ENOMEM, "out of memory");
    gs->db = db;
    gs->watch_fd = gs->wake_fd = -1;
    gs->lease_ms = db->opts.group_lease_ms ? db->opts.group_lease_ms : GROUP_LEASE_MS;
    if (db->opts.node_name[0]) {
        snprintf(gs->node, sizeof gs->node, "%s", db->opts.node_name);
    } else {
        uint8_t id[16];
        uuid_v7(id);
        char t[37];
        stele_uuid_format(id, t);
        snprintf(gs->node, sizeof gs->node, "node-%s", t);
    }
    pthread_mutex_init(&gs->admin, NULL);
    pthread_mutex_init(&gs->mu, NULL);
    pthread_mutex_init(&gs->watch_mu, NULL);
    group_def *defs;
    size_t n;
    int rc = gstore_load_defs(db, &defs, &n);
    if (rc) {
        registry_free(gs);
        return rc;
    }
    size_t i = 0;
    for (; i < n && rc == 0; i++) {
        group *g;
        if ((rc = group_new(gs, &defs[i], 0, &g)) == 0) {
            g->next = gs->list;
            gs->list = g;
        }
    }
    for (; i < n; i++)
        group_def_free(&defs[i]);
    free(defs);
    if (rc == 0)
        rc = db->be->ops->watch(db->be, &gs->watch_fd);
    if (rc == 0 && (gs->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        rc = err_set(STELE_EIO, "eventfd: %s", strerror(errno));
    if (rc == 0 && pthread_create(&gs->thread, NULL, thread_main, gs) != 0)
        rc = err_set(STELE_ENOMEM, "cannot start the consumer group thread");
    if (rc) {
        registry_free(gs);
        return rc;
    }
    gs->thread_started = 1;
    *out = gs;
    return 0;
}

static int groups_get(stele_db *db, sub_groups **out)
{
    sub_groups *gs = __atomic_load_n(&db->groups, __ATOMIC_ACQUIRE);
    if (gs) {
        *out = gs;
        return 0;
    }
    int rc = 0;
    pthread_mutex_lock(&init_mu);
    if (!(gs = db->groups) && (rc = registry_open(db, &gs)) == 0) {
        db->close_up[STORE_UP_GROUPS] = sub_groups_close;
        __atomic_store_n(&db->groups, gs, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&init_mu);
    *out = gs;
    return rc;
}

void sub_groups_close(stele_db *db)
{
    sub_groups *gs = db->groups;
    if (!gs)
        return;
    atomic_store(&gs->stopping, 1);
    uint64_t one = 1;
    ssize_t w = write(gs->wake_fd, &one, sizeof one);
    (void)w;
    if (gs->thread_started)
        pthread_join(gs->thread, NULL);
    /* Save where every group is, so a clean restart redelivers nothing. */
    for (group *g = gs->list; g; g = g->next) {
        pthread_mutex_lock(&g->mu);
        group_maybe_save(g, mono_ms(), 1);
        group_wait_pending(g);
        /* Hand what this server claimed to the others at once. */
        gshare_sync(g, mono_ms(), GSHARE_RELEASE);
        pthread_mutex_unlock(&g->mu);
    }
    registry_free(gs);
    db->groups = NULL;
}

/* ------------------------------------------------------------ checks */

/* stream NULL or "$all": *all = 1. */
static int check_group_stream(const char *stream, const char **norm)
{
    size_t len;
    if (!stream || !strcmp(stream, "$all")) {
        *norm = NULL;
        return 0;
    }
    int rc = store_check_read_stream(stream, &len);
    if (rc)
        return rc;
    if (!strcmp(stream, CONFIG_STREAM) || !strncmp(stream, SYS_PREFIX, sizeof SYS_PREFIX - 1))
        return err_set(STELE_EINVAL,
                       "stream '%s' belongs to the consumer groups themselves: no group on it",
                       stream);
    *norm = stream;
    return 0;
}

static int check_name(const char *what, const char *name, size_t max, int no_colon)
{
    if (!name)
        return err_set(STELE_EINVAL, "%s name is NULL", what);
    size_t n = strnlen(name, max + 1), at;
    if (n == 0)
        return err_set(STELE_EINVAL, "%s name is empty", what);
    if (n > max)
        return err_set(STELE_EINVAL, "%s name is longer than %zu bytes", what, max);
    const char *why = utf8_check_name(name, n, &at);
    if (why)
        return err_set(STELE_EINVAL, "%s name: %s at byte %zu", what, why, at);
    const char *colon = no_colon ? strchr(name, ':') : NULL;
    if (colon)
        return err_set(STELE_EINVAL, "%s name '%s': ':' is not allowed (at byte %zu)", what,
                       name, (size_t)(colon - name));
    return 0;
}

/* Check db, stream and group; *norm is the stream (NULL for $all). */
static int check_target(stele_db *db, const char *stream, const char *group_name,
                        const char **norm)
{
    *norm = NULL;
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    int rc = check_group_stream(stream, norm);
    if (rc == 0)
        rc = check_name("group", group_name, GROUP_NAME_MAX, 1);
    if (rc == 0 && (*norm ? strlen(*norm) : 4) + strlen(group_name) > GROUP_NAMES_MAX)
        rc = err_set(STELE_EINVAL,
                     "stream and group names are too long together (%zu bytes, at most %u)",
                     (*norm ? strlen(*norm) : 4) + strlen(group_name), GROUP_NAMES_MAX);
    return rc;
}

static int outside(uint64_t v, uint64_t lo, uint64_t hi) { return v < lo || v > hi; }

#define RANGE(field, lo, hi)                                                                 \
    do {                                                                                     \
        if (outside(s->field, (lo), (hi)))                                                   \
            return err_set(STELE_EINVAL, "settings: " #field " is %llu (%llu..%llu)",        \
                           (unsigned long long)s->field, (unsigned long long)(lo),           \
                           (unsigned long long)(hi));                                        \
    } while (0)

static int check_settings(const stele_group_settings *s, int all)
{
    if (!s)
        return err_set(STELE_EINVAL, "settings is NULL");
    if (s->strategy != STELE_ROUND_ROBIN && s->strategy != STELE_PINNED)
        return err_set(STELE_EINVAL,
                       "settings: strategy %d is neither STELE_ROUND_ROBIN nor STELE_PINNED",
                       s->strategy);
    RANGE(max_in_flight, 1u, 10000u);
    RANGE(message_timeout_ms, 100u, 86400000u);
    RANGE(max_retries, 0u, 1000u);
    RANGE(buffer_size, 1u, 100000u);
    RANGE(checkpoint_after_ms, 0u, 3600000u);
    RANGE(checkpoint_min_count, 0u, 100000u);
    RANGE(checkpoint_max_count, 1u, 1000000u);
    if (s->checkpoint_max_count < s->checkpoint_min_count)
        return err_set(STELE_EINVAL,
                       "settings: checkpoint_max_count %u is below checkpoint_min_count %u",
                       s->checkpoint_max_count, s->checkpoint_min_count);
    if (s->filter && !all)
        return err_set(STELE_EINVAL, "settings: a filter needs a group on $all");
    sub_filter *f;
    int rc = sub_filter_new(s->filter, &f);
    sub_filter_free(f);
    return rc;
}

void stele_group_settings_init(stele_group_settings *s)
{
    if (!s)
        return;
    memset(s, 0, sizeof *s);
    s->strategy = STELE_ROUND_ROBIN;
    s->max_in_flight = 10;
    s->message_timeout_ms = 30000;
    s->max_retries = 10;
    s->buffer_size = 500;
    s->checkpoint_after_ms = 2000;
    s->checkpoint_min_count = 10;
    s->checkpoint_max_count = 1000;
}

/* Settings to store: `start` = STELE_END resolved to a number. */
static int resolve_start(stele_db *db, const char *stream, stele_group_settings *s)
{
    if (s->start != STELE_END)
        return 0;
    if (!stream) {
        return db->be->ops->pos_head(db->be, &s->start);
    }
    return next_revision(db, stream, &s->start);
}

/* ------------------------------------------------------------ admin */

int stele_group_create(stele_db *db, const char *stream, const char *group_name,
                       const stele_group_settings *settings)
{
    err_clear();
    const char *st;
    sub_groups *gs;
    int rc = check_target(db, stream, group_name, &st);
    if (rc == 0)
        rc = check_settings(settings, st == NULL);
    if (rc == 0)
        rc = groups_get(db, &gs);
    if (rc)
        return rc;
    pthread_mutex_lock(&gs->admin);
    group *g = find_shared(gs, st, group_name, 1);
    if (g) {
        group_unref(g);
        pthread_mutex_unlock(&gs->admin);
        return err_set(STELE_EEXISTS, "consumer group '%s' on %s%s%s exists already", group_name,
                       st ? "stream '" : "$all", st ? st : "", st ? "'" : "");
    }
    /* The limit on groups (stele_options.max_groups): each one holds a
     * subscription, its buffers and a thread's attention. */
    size_t ngroups = 0;
    pthread_mutex_lock(&gs->mu);
    for (group *o = gs->list; o; o = o->next)
        ngroups++;
    pthread_mutex_unlock(&gs->mu);
    if (ngroups >= db->opts.max_groups) {
        pthread_mutex_unlock(&gs->admin);
        return err_set(STELE_EBUSY,
                       "%zu consumer groups exist, the store's limit (max_groups %u): delete one "
                       "first",
                       ngroups, db->opts.max_groups);
    }
    group_def def = {0};
    char ck[256], pk[256];
    def.set = *settings;
    def.set.filter = NULL;
    if (!(def.name = strdup(group_name)) || (st && !(def.stream = strdup(st))))
        rc = err_set(STELE_ENOMEM, "out of memory");
    if (rc == 0)
        rc = gstore_filter_to_json(settings->filter, &def.filter_json);
    if (rc == 0)
        rc = resolve_start(db, st, &def.set);
    if (rc == 0)
        rc = group_sys_names(st, group_name, ck, pk);
    if (rc == 0)
        rc = next_revision(db, ck, &def.ckpt_base);
    if (rc == 0)
        rc = next_revision(db, pk, &def.parked_base);
    if (rc == 0)
        rc = ckpt_meta_set(db, ck);
    if (rc == 0)
        rc = gstore_write_def(db, EV_CREATED, &def);
    if (rc) {
        group_def_free(&def);
        pthread_mutex_unlock(&gs->admin);
        return rc;
    }
    /* The group is durable; if memory runs out now it appears at the next
     * open. */
    uint64_t parked_base = def.parked_base;
    if ((rc = group_new(gs, &def, 1, &g)) == 0) {
        g->parked_next = parked_base;
        pthread_mutex_lock(&gs->mu);
        g->next = gs->list;
        gs->list = g;
        pthread_mutex_unlock(&gs->mu);
    }
    pthread_mutex_unlock(&gs->admin);
    return rc;
}

static int same_filter(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

int stele_group_update(stele_db *db, const char *stream, const char *group_name,
                       const stele_group_settings *settings)
{
    err_clear();
    const char *st;
    sub_groups *gs;
    int rc = check_target(db, stream, group_name, &st);
    if (rc == 0)
        rc = check_settings(settings, st == NULL);
    if (rc == 0)
        rc = groups_get(db, &gs);
    if (rc)
        return rc;
    pthread_mutex_lock(&gs->admin);
    group *g = find_shared(gs, st, group_name, 1);
    if (!g) {
        pthread_mutex_unlock(&gs->admin);
        return not_found(st, group_name);
    }
    group_def def = g->def; /* borrowed strings: only written, not freed */
    char *fj = NULL;
    def.set = *settings;
    def.set.filter = NULL;
    rc = gstore_filter_to_json(settings->filter, &fj);
    if (rc == 0 && !same_filter(fj, g->def.filter_json))
        rc = err_set(STELE_EINVAL,
                     "settings: the filter of a group cannot change (delete the group and "
                     "create it again)");
    if (rc == 0)
        rc = resolve_start(db, st, &def.set);
    if (rc == 0)
        rc = gstore_write_def(db, EV_UPDATED, &def);
    free(fj);
    if (rc == 0) {
        pthread_mutex_lock(&g->mu);
        rc = group_apply_settings(g, &def.set);
        group_wake(g);
        pthread_mutex_unlock(&g->mu);
    }
    group_unref(g);
    pthread_mutex_unlock(&gs->admin);
    return rc;
}

int stele_group_delete(stele_db *db, const char *stream, const char *group_name)
{
    err_clear();
    const char *st;
    sub_groups *gs;
    int rc = check_target(db, stream, group_name, &st);
    if (rc == 0)
        rc = groups_get(db, &gs);
    if (rc)
        return rc;
    pthread_mutex_lock(&gs->admin);
    group *g = find_shared(gs, st, group_name, 1);
    if (!g) {
        pthread_mutex_unlock(&gs->admin);
        return not_found(st, group_name);
    }
    /* No more writes of its own, and none still on the way: they would
     * bring its streams back after the delete. */
    pthread_mutex_lock(&g->mu);
    g->deleted = 1;
    group_wait_pending(g);
    pthread_mutex_unlock(&g->mu);
    backend *be = db->be;
    const char *sys[2] = {g->ckpt_stream, g->parked_stream};
    for (int i = 0; i < 2 && rc == 0; i++) {
        rc = be->ops->remove(be, sys[i], strlen(sys[i]), STELE_ANY, 0, NULL);
        if (rc == STELE_ENOTFOUND)
            rc = 0;
    }
    if (rc == 0)
        rc = gstore_write_def(db, EV_DELETED, &g->def);
    pthread_mutex_lock(&g->mu);
    if (rc == 0 && gshare_reset(g, STELE_NONE))
        err_clear(); /* the claims only hold a key no group uses any more */
    if (rc) {
        g->deleted = 0; /* still there: it goes on */
    } else {
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    if (rc == 0) {
        pthread_mutex_lock(&gs->mu);
        group **pp = &gs->list;
        while (*pp != g)
            pp = &(*pp)->next;
        *pp = g->next;
        pthread_mutex_unlock(&gs->mu);
        group_unref(g); /* the registry's reference */
        groups_notify(gs);
    }
    group_unref(g);
    pthread_mutex_unlock(&gs->admin);
    return rc;
}

/* ------------------------------------------------------------ info */

/* The memory behind a list of infos: one block, plus allocations. */
typedef struct info_block {
    size_t n;
    void **allocs;
    stele_filter **filters;
    size_t nallocs, capallocs, nfilters;
    int oom;
    stele_group_info infos[];
} info_block;

/* Keep p (malloc'd) to free with the block; NULL and oom if p is NULL or
 * cannot be kept. */
static void *keep(info_block *ib, void *p)
{
    if (p && ib->nallocs == ib->capallocs) {
        size_t cap = ib->capallocs ? ib->capallocs * 2 : 32;
        void **v = realloc(ib->allocs, cap * sizeof *v);
        if (!v) {
            free(p);
            p = NULL;
        } else {
            ib->allocs = v;
            ib->capallocs = cap;
        }
    }
    if (!p) {
        ib->oom = 1;
        return NULL;
    }
    ib->allocs[ib->nallocs++] = p;
    return p;
}

void stele_group_info_free(stele_group_info *infos)
{
    if (!infos)
        return;
    info_block *ib = (info_block *)(void *)((char *)infos - offsetof(info_block, infos));
    for (size_t i = 0; i < ib->nallocs; i++)
        free(ib->allocs[i]);
    for (size_t i = 0; i < ib->nfilters; i++)
        gstore_filter_free(ib->filters[i]);
    free(ib->allocs);
    free(ib->filters);
    free(ib);
}

/* Fill one info from g (g->mu held). */
static void fill_info(info_block *ib, stele_group_info *in, group *g)
{
    in->stream = keep(ib, strdup(g->def.stream ? g->def.stream : "$all"));
    in->group = keep(ib, strdup(g->def.name));
    in->last_error = keep(ib, strdup(g->last_error));
    in->settings = g->def.set;
    in->settings.filter = NULL;
    if (g->def.filter_json) {
        stele_filter *f;
        if (gstore_filter_from_json(g->def.filter_json, &f) == 0 && f) {
            ib->filters[ib->nfilters++] = f;
            in->settings.filter = f;
        } else {
            ib->oom = 1;
        }
    }
    in->checkpoint_saved = g->ckpt_saved;
    in->checkpoint = group_checkpoint(g);
    in->read_position = g->read_pos;
    for (int r = 0; r < 2; r++) {
        const mqueue *q = r ? &g->main : &g->replay;
        for (size_t i = 0; i < q->n; i++) {
            uint8_t s = mq_at(q, i)->state;
            if (s == M_INFLIGHT)
                in->in_flight++;
            else if (s == M_AVAIL)
                in->waiting++;
            if (!r && s != M_DONE)
                in->replaying++;
        }
    }
    in->replaying += g->replay_stop > g->replay_next ? g->replay_stop - g->replay_next : 0;
    in->parked = g->parked_next - g->parked_trunc;
    in->delivered = g->delivered;
    in->acked = g->acked;
    in->nacked = g->nacked;
    in->timed_out = g->timed_out;
    in->parked_total = g->parked_total;
    stele_consumer_info *ci = keep(ib, calloc(g->n_consumers ? g->n_consumers : 1, sizeof *ci));
    in->consumers = ci;
    size_t k = 0;
    for (gconsumer *c = g->consumers; c && ci; c = c->next, k++) {
        ci[k].name = keep(ib, strdup(c->name));
        ci[k].in_flight = c->in_flight;
        ci[k].delivered = c->delivered;
    }
    in->n_consumers = ci ? k : 0;
}

static int build_infos(group **gv, size_t n, stele_group_info **out)
{
    info_block *ib = calloc(1, sizeof *ib + (n ? n : 1) * sizeof(stele_group_info));
    if (ib)
        ib->filters = calloc(n + 1, sizeof *ib->filters);
    if (!ib || !ib->filters) {
        free(ib);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    ib->n = n;
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&gv[i]->mu);
        fill_info(ib, &ib->infos[i], gv[i]);
        pthread_mutex_unlock(&gv[i]->mu);
    }
    if (ib->oom) {
        stele_group_info_free(ib->infos);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    *out = ib->infos;
    return 0;
}

int stele_group_list(stele_db *db, stele_group_info **out, size_t *n)
{
    err_clear();
    if (!db || !out || !n)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : !out ? "out" : "n");
    *out = NULL;
    *n = 0;
    sub_groups *gs;
    int rc = groups_get(db, &gs);
    if (rc)
        return rc;
    pthread_mutex_lock(&gs->admin);
    refresh(gs);
    pthread_mutex_unlock(&gs->admin);
    pthread_mutex_lock(&gs->mu);
    size_t cnt = 0;
    for (group *g = gs->list; g; g = g->next)
        cnt++;
    group **gv = calloc(cnt ? cnt : 1, sizeof *gv);
    if (!gv) {
        pthread_mutex_unlock(&gs->mu);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    /* Oldest first: the list has the newest at its head. */
    size_t i = cnt;
    for (group *g = gs->list; g; g = g->next) {
        gv[--i] = g;
        atomic_fetch_add(&g->refs, 1);
    }
    pthread_mutex_unlock(&gs->mu);
    if (cnt)
        rc = build_infos(gv, cnt, out);
    for (i = 0; i < cnt; i++)
        group_unref(gv[i]);
    free(gv);
    if (rc == 0)
        *n = cnt;
    return rc;
}

int stele_group_get(stele_db *db, const char *stream, const char *group_name,
                    stele_group_info **out)
{
    err_clear();
    const char *st;
    sub_groups *gs;
    if (!out)
        return err_set(STELE_EINVAL, "out is NULL");
    *out = NULL;
    int rc = check_target(db, stream, group_name, &st);
    if (rc == 0)
        rc = groups_get(db, &gs);
    if (rc)
        return rc;
    group *g = find_shared(gs, st, group_name, 0);
    if (!g)
        return not_found(st, group_name);
    rc = build_infos(&g, 1, out);
    group_unref(g);
    return rc;
}

/* ------------------------------------------------------------ consumers */

int stele_group_connect(stele_db *db, const char *stream, const char *group_name,
                        const char *name, stele_consumer **out)
{
    err_clear();
    const char *st;
    sub_groups *gs;
    if (!out)
        return err_set(STELE_EINVAL, "out is NULL");
    *out = NULL;
    int rc = check_target(db, stream, group_name, &st);
    if (rc == 0)
        rc = check_name("consumer", name, CONSUMER_NAME_MAX, 0);
    if (rc == 0)
        rc = groups_get(db, &gs);
    if (rc)
        return rc;
    group *g = find_shared(gs, st, group_name, 0);
    if (!g)
        return not_found(st, group_name);
    gconsumer *c = calloc(1, sizeof *c);
    if (!c) {
        group_unref(g);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->g = g;
    pthread_mutex_lock(&g->mu);
    gconsumer *o = g->consumers;
    while (o && strcmp(o->name, name))
        o = o->next;
    if (g->deleted)
        rc = not_found(st, group_name);
    else if (o)
        rc = err_set(STELE_EEXISTS, "consumer '%s' is connected to group '%s' already", name,
                     group_name);
    else if (g->n_consumers >= db->opts.max_consumers_per_group)
        rc = err_set(STELE_EBUSY,
                     "group '%s' has %zu consumers connected, the store's limit "
                     "(max_consumers_per_group %u)",
                     group_name, (size_t)g->n_consumers, db->opts.max_consumers_per_group);
    if (rc == 0) {
        /* At the end: the info lists consumers in the order they came. */
        gconsumer **pp = &g->consumers;
        while (*pp)
            pp = &(*pp)->next;
        *pp = c;
        g->n_consumers++;
    }
    pthread_mutex_unlock(&g->mu);
    if (rc == 0) {
        uint64_t one = 1; /* the thread watches commits from now on */
        ssize_t w = write(gs->wake_fd, &one, sizeof one);
        (void)w;
    }
    if (rc) {
        free(c);
        group_unref(g);
        return rc;
    }
    *out = c;
    return 0;
}

static int gone(group *g)
{
    return err_set(STELE_ENOTFOUND, "consumer group '%s' was deleted", g->def.name);
}

int stele_consumer_read(stele_consumer *c, size_t max, int timeout_ms, stele_batch **out)
{
    err_clear();
    if (!c || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !c ? "consumer" : "out");
    *out = NULL;
    if (max == 0)
        return err_set(STELE_EINVAL, "max must be at least 1");
    if (timeout_ms < -1)
        return err_set(STELE_EINVAL, "timeout_ms %d (>= 0, or -1 for no limit)", timeout_ms);
    stele_batch *b = calloc(1, sizeof *b);
    if (!b)
        return err_set(STELE_ENOMEM, "out of memory");
    group *g = c->g;
    int rc = 0;
    int64_t deadline = timeout_ms >= 0 ? mono_ms() + timeout_ms : INT64_MAX;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        if (g->deleted) {
            rc = gone(g);
            break;
        }
        int64_t now = mono_ms();
        group_expire(g, now);
        uint32_t lim = g->def.set.max_in_flight;
        size_t room = c->in_flight < lim ? lim - c->in_flight : 0;
        size_t want = max < room ? max : room;
        if (want && ((rc = group_dispatch(g, c, want, b, now)) || b->n))
            break;
        group_maybe_save(g, now, 0);
        if (now >= deadline)
            break;
        int64_t until = deadline < g->next_deadline_ms ? deadline : g->next_deadline_ms;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = until - now;
        if (wait > 3600000)
            wait = 3600000;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        g->waiters++;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        g->waiters--;
    }
    pthread_mutex_unlock(&g->mu);
    if (rc) {
        stele_batch_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

size_t stele_batch_count(const stele_batch *b) { return b ? b->n : 0; }

const stele_event *stele_batch_event(const stele_batch *b, size_t i)
{
    return b && i < b->n ? &b->v[i].ev->e : NULL;
}

uint32_t stele_batch_retry_count(const stele_batch *b, size_t i)
{
    return b && i < b->n ? b->v[i].retries : 0;
}

void stele_batch_free(stele_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        ev_blob_unref(b->v[i].ev);
    free(b->v);
    free(b);
}

static int check_settle(const uint8_t (*ids)[16], size_t n, int action, const char *reason)
{
    if (n == 0 || !ids)
        return err_set(STELE_EINVAL, "no event ids");
    if (action != -1 && action != STELE_NACK_RETRY && action != STELE_NACK_SKIP &&
        action != STELE_NACK_PARK)
        return err_set(STELE_EINVAL,
                       "nack action %d is not STELE_NACK_RETRY, STELE_NACK_SKIP or STELE_NACK_PARK",
                       action);
    if (reason && strnlen(reason, REASON_MAX + 1) > REASON_MAX)
        return err_set(STELE_EINVAL, "reason is longer than %u bytes", REASON_MAX);
    return 0;
}

static int settle(group *g, gconsumer *c, const uint8_t (*ids)[16], size_t n, int action,
                  const char *reason)
{
    int rc = check_settle(ids, n, action, reason);
    if (rc)
        return rc;
    pthread_mutex_lock(&g->mu);
    if (g->deleted) {
        rc = gone(g);
    } else {
        int64_t now = mono_ms();
        group_expire(g, now);
        rc = group_settle(g, c, ids, n, action, reason);
        group_maybe_save(g, now, 0);
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

int stele_consumer_ack(stele_consumer *c, const uint8_t (*ids)[16], size_t n)
{
    err_clear();
    if (!c)
        return err_set(STELE_EINVAL, "consumer is NULL");
    return settle(c->g, c, ids, n, -1, NULL);
}

int stele_consumer_nack(stele_consumer *c, const uint8_t (*ids)[16], size_t n, int action,
                        const char *reason)
{
    err_clear();
    if (!c)
        return err_set(STELE_EINVAL, "consumer is NULL");
    if (action == -1)
        return err_set(STELE_EINVAL, "nack action -1 is not a nack action");
    return settle(c->g, c, ids, n, action, reason);
}

/* Find a group for a call by name; *g holds a reference. */
static int lookup(stele_db *db, const char *stream, const char *group_name, group **g)
{
    const char *st;
    sub_groups *gs;
    int rc = check_target(db, stream, group_name, &st);
    if (rc == 0)
        rc = groups_get(db, &gs);
    if (rc)
        return rc;
    if (!(*g = find_shared(gs, st, group_name, 0)))
        return not_found(st, group_name);
    return 0;
}

static int group_settle_by_name(stele_db *db, const char *stream, const char *group_name,
                                const uint8_t (*ids)[16], size_t n, int action,
                                const char *reason)
{
    group *g;
    int rc = lookup(db, stream, group_name, &g);
    if (rc)
        return rc;
    rc = settle(g, NULL, ids, n, action, reason);
    group_unref(g);
    return rc;
}

int stele_group_ack(stele_db *db, const char *stream, const char *group_name,
                    const uint8_t (*ids)[16], size_t n)
{
    err_clear();
    return group_settle_by_name(db, stream, group_name, ids, n, -1, NULL);
}

int stele_group_nack(stele_db *db, const char *stream, const char *group_name,
                     const uint8_t (*ids)[16], size_t n, int action, const char *reason)
{
    err_clear();
    if (action == -1)
        return err_set(STELE_EINVAL, "nack action -1 is not a nack action");
    return group_settle_by_name(db, stream, group_name, ids, n, action, reason);
}

void stele_consumer_close(stele_consumer *c)
{
    if (!c)
        return;
    group *g = c->g;
    pthread_mutex_lock(&g->mu);
    group_release_consumer(g, c);
    gconsumer **pp = &g->consumers;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = c->next;
        g->n_consumers--;
    }
    pthread_mutex_unlock(&g->mu);
    free(c);
    group_unref(g);
}

/* ------------------------------------------------------------ parked */

int stele_group_replay_parked(stele_db *db, const char *stream, const char *group_name,
                              uint64_t max, uint64_t *count)
{
    err_clear();
    if (count)
        *count = 0;
    group *g;
    int rc = lookup(db, stream, group_name, &g);
    if (rc)
        return rc;
    /* Other servers of a shared store park into the same stream and
     * truncate it too: replay what is there now. */
    uint64_t next = 0, tb = 0;
    stele_stream_metadata *md = NULL;
    if (store_get_metadata_system(db, g->parked_stream, &md) == 0)
        tb = md->truncate_before;
    stele_free(md);
    if (next_revision(db, g->parked_stream, &next))
        next = 0;
    err_clear();
    pthread_mutex_lock(&g->mu);
    if (next > g->parked_next)
        g->parked_next = next;
    if (tb > g->parked_trunc)
        g->parked_trunc = tb;
    if (tb > g->meta_trunc)
        g->meta_trunc = tb;
    rc = g->deleted ? gone(g) : group_start_replay(g, max, count);
    pthread_mutex_unlock(&g->mu);
    group_unref(g);
    return rc;
}

int stele_group_read_parked(stele_db *db, const char *stream, const char *group_name,
                            uint64_t from, size_t limit, stele_page **out)
{
    err_clear();
    if (!out)
        return err_set(STELE_EINVAL, "out is NULL");
    *out = NULL;
    if (limit == 0)
        return err_set(STELE_EINVAL, "limit must be at least 1");
    group *g;
    int rc = lookup(db, stream, group_name, &g);
    if (rc)
        return rc;
    pthread_mutex_lock(&g->mu);
    if (from < g->parked_trunc)
        from = g->parked_trunc;
    uint64_t end = g->parked_next;
    pthread_mutex_unlock(&g->mu);
    backend *be = db->be;
    if (from >= end) {
        rc = page_new(NULL, out);
    } else {
        if (limit > end - from)
            limit = (size_t)(end - from);
        rc = be->ops->read_stream(be, g->parked_stream, strlen(g->parked_stream), from, 0, limit,
                                  out);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            rc = page_new(NULL, out);
        }
    }
    group_unref(g);
    return rc;
}

int stele_group_truncate_parked(stele_db *db, const char *stream, const char *group_name,
                                uint64_t before)
{
    err_clear();
    group *g;
    int rc = lookup(db, stream, group_name, &g);
    if (rc)
        return rc;
    sub_groups *gs = g->gs;
    pthread_mutex_lock(&gs->admin);
    pthread_mutex_lock(&g->mu);
    if (g->deleted) {
        rc = gone(g);
    } else {
        uint64_t t = before == STELE_END || before > g->parked_next ? g->parked_next : before;
        if (t > g->parked_trunc)
            g->parked_trunc = t;
        if (g->replay_next < g->parked_trunc)
            g->replay_next = g->parked_trunc;
        if (g->replay_stop < g->replay_next)
            g->replay_stop = g->replay_next;
        /* Durable before returning: wait for a save under way, then save. */
        while (g->saving)
            pthread_cond_wait(&g->cv, &g->mu);
        group_maybe_save(g, mono_ms(), 1);
        uint64_t seq = g->save_seq;
        while (g->saved_seq < seq)
            pthread_cond_wait(&g->cv, &g->mu);
        if (g->trunc_saved < g->parked_trunc && g->save_rc)
            rc = err_set(g->save_rc, "%s", g->last_error);
    }
    uint64_t t = g->parked_trunc;
    pthread_mutex_unlock(&g->mu);
    /* Then the parked stream itself hides them (plain reads, scavenging). */
    if (rc == 0)
        rc = parked_meta_set(g, t);
    pthread_mutex_unlock(&gs->admin);
    group_unref(g);
    return rc;
}

/* ------------------------------------------------------------ watches */

int stele_group_watch(stele_db *db, int *fd)
{
    err_clear();
    if (!db || !fd)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "fd");
    sub_groups *gs;
    int rc = groups_get(db, &gs);
    if (rc)
        return rc;
    int e = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e < 0)
        return err_set(STELE_EIO, "eventfd: %s", strerror(errno));
    pthread_mutex_lock(&gs->watch_mu);
    int full = gs->nwatch == GROUP_WATCH_MAX;
    if (!full)
        gs->watch_fds[gs->nwatch++] = e;
    pthread_mutex_unlock(&gs->watch_mu);
    if (full) {
        close(e);
        return err_set(STELE_EINVAL, "too many group watches (at most %u per store)",
                       GROUP_WATCH_MAX);
    }
    *fd = e;
    return 0;
}

void stele_group_unwatch(stele_db *db, int fd)
{
    sub_groups *gs = db ? __atomic_load_n(&db->groups, __ATOMIC_ACQUIRE) : NULL;
    if (!gs)
        return;
    int found = 0;
    pthread_mutex_lock(&gs->watch_mu);
    for (unsigned i = 0; i < gs->nwatch; i++)
        if (gs->watch_fds[i] == fd) {
            gs->watch_fds[i] = gs->watch_fds[--gs->nwatch];
            found = 1;
            break;
        }
    pthread_mutex_unlock(&gs->watch_mu);
    if (found)
        close(fd);
}

/* ------------------------------------------------------------ rewind */

int stele_group_rewind(stele_db *db, const char *stream, const char *group_name, uint64_t to)
{
    err_clear();
    group *g;
    int rc = lookup(db, stream, group_name, &g);
    if (rc)
        return rc;
    if (to == STELE_END) {
        if (g->def.stream) {
            rc = next_revision(db, g->def.stream, &to);
        } else {
            rc = stele_position_head(db, &to);
        }
    }
    if (rc == 0) {
        pthread_mutex_lock(&g->gs->admin);
        pthread_mutex_lock(&g->mu);
        rc = g->deleted ? not_found(g->def.stream, group_name) : group_rewind(g, to, mono_ms());
        pthread_mutex_unlock(&g->mu);
        pthread_mutex_unlock(&g->gs->admin);
    }
    group_unref(g);
    return rc;
}

int stele_group_rewind_time(stele_db *db, const char *stream, const char *group_name, int64_t us,
                            uint64_t *to)
{
    err_clear();
    group *g;
    int rc = lookup(db, stream, group_name, &g);
    if (rc)
        return rc;
    uint64_t target = STELE_END;
    stele_page *pg = NULL;
    if (g->def.stream) {
        /* The stream as it was just before `us`: its next revision then. */
        rc = stele_read_stream_as_of(db, g->def.stream, us - 1, STELE_END, STELE_BACKWARDS, 1,
                                     &pg);
        if (rc == 0)
            target = stele_page_count(pg) ? stele_page_event(pg, 0)->revision + 1 : 0;
        else if (rc == STELE_ENOTFOUND)
            rc = 0, target = 0;
    } else {
        stele_query q = {.kind = STELE_QUERY_ALL, .has_after = 1, .after_us = us,
                         .direction = STELE_FORWARDS, .limit = 1};
        rc = stele_read_query(db, &q, &pg);
        if (rc == 0 && stele_page_count(pg))
            target = stele_page_event(pg, 0)->position;
    }
    stele_page_free(pg);
    group_unref(g);
    if (rc)
        return rc;
    rc = stele_group_rewind(db, stream, group_name, target);
    if (rc == 0 && to)
        *to = target;
    return rc;
}
