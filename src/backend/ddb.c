/*
 * ddb.c - the DynamoDB backend: Stele's streams, $all and snapshots in
 * DynamoDB tables, so any number of Stele servers can share one store
 * (`--store dynamodb://PREFIX?endpoint=URL&region=R`, docs/backends.md).
 *
 * Tables (PREFIX-NAME, created by the first open or `stele migrate`,
 * on-demand capacity):
 *   events     key (stream S, revision N): one item per event, seed 000's
 *              layout: position, eventId, eventType, data (B), metadata (B),
 *              tags, flags, created (µs), category, actor, correlationId,
 *              causationId, and timePos = created * 10^20 + position, the
 *              sort key of five GSIs: byType (eventType), byCategory
 *              (category, seed 003's aggregateType), byActor (actor, seed
 *              003's userId), byCorrelation and byCausation; view ordinals
 *              (ceRev, etRev, bcRev, streamNo) keyed by four KEYS_ONLY view
 *              GSIs (ddb_view.c). A scavenged event is a stub (ddb_scavenge.c).
 *   streams    key stream: each stream's state (lastRevision, lastPosition,
 *              deleted, tombstoned, truncateBefore, its metadata) with a
 *              version `ver` bumped by every write to it; the sequencer
 *              (key "\x01seq"): next (the next position), t (the last
 *              commit's created time), streamNo (streams numbered); the
 *              view counters (keys "\x02" kind name); GSI byName (nk,
 *              stream) lists streams, categories and types.
 *   ids        key eventId: where each client-given event id was written
 *              and the size of its append, for idempotent retries.
 *   feed       key (bucket N, position N): one item per commit, at its
 *              first position (bucket = position >> 12): the streams and
 *              revisions of its events in position order. $all reads go
 *              through it.
 *   snapshots  key (stream S, revision N): saved states (seed 003's table).
 *
 * The global feed. Every commit is one TransactWriteItems that also moves
 * the sequencer from N to N+k under the condition next = N; its k events
 * take positions N..N+k-1. DynamoDB serialises transactions on an item, so
 * commits on any number of servers are totally ordered by the sequencer;
 * positions are gapless and in commit order, and a reader that read
 * next = H (a consistent read) and then reads positions below H sees
 * committed events only, all of them. Created times are made monotonic
 * along positions (max(now, t)), so time ranges are position ranges.
 * The price: one hot item. Every commit writes it (2 WCU, as every item in a
 * transaction), so a store commits at most ~1,000/2 transactions a second
 * on real DynamoDB (the per-item limit); each server therefore batches the
 * appends queued while its previous transaction was in flight into one
 * transaction (group commit), so events/s grows with concurrency.
 *
 * The writer (group commit in one TransactWriteItems) is described in
 * ddb_write.c and ddb_plan.c; deletes (each with its `$streamDeleted`
 * event in `$deletes`) in ddb_deletes.c; metadata and snapshots in
 * ddb_stream.c; reads, $all and queries in ddb_read.c; calls, attribute
 * values and tables in ddb_api.c. This file opens and closes a store and
 * runs commit notification.
 *
 * Commit notification. A poller thread reads the sequencer (10 ms after a
 * change, backing off to 100 ms when idle) and bumps the commit generation
 * when it moves, so subscribers on every server wake within ~100 ms of a
 * commit elsewhere; the server's own commits wake them at once. A view
 * read that stopped at an ordinal whose index entry has not arrived
 * (ddb_view.c) sets view_hole, and the next poll wakes subscribers too,
 * so a view subscriber reads again within ~100 ms without a new commit.
 */
#include <errno.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backend/ddb_int.h"
#include "util/util.h"

/* ---------------------------------------------------- notification, stats */

void ddb_notify(ddb *D)
{
    atomic_fetch_add(&D->gen, 1);
    syscall(SYS_futex, &D->gen, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    pthread_mutex_lock(&D->gmu);
    uint64_t one = 1;
    for (ddb_watch *w = D->watches; w; w = w->next)
        if (write(w->fd, &one, sizeof one) < 0) {
            /* a full counter still reads as readable */
        }
    pthread_mutex_unlock(&D->gmu);
}

static uint32_t ddb_commit_gen(backend *b)
{
    return atomic_load(&((ddb *)b)->gen);
}

static void ddb_wait_commit(backend *b, uint32_t gen, int timeout_ms)
{
    ddb *D = (ddb *)b;
    struct timespec ts, *tsp = NULL;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    if (atomic_load(&D->gen) == gen)
        syscall(SYS_futex, &D->gen, FUTEX_WAIT_PRIVATE, gen, tsp, NULL, 0);
}

static int ddb_watch_fd(backend *b, int *fd)
{
    ddb *D = (ddb *)b;
    ddb_watch *w = malloc(sizeof *w);
    if (!w)
        return err_set(STELE_ENOMEM, "out of memory");
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->fd < 0) {
        free(w);
        return err_set(STELE_EIO, "eventfd: %s", strerror(errno));
    }
    pthread_mutex_lock(&D->gmu);
    w->next = D->watches;
    D->watches = w;
    pthread_mutex_unlock(&D->gmu);
    *fd = w->fd;
    return 0;
}

static void ddb_unwatch(backend *b, int fd)
{
    ddb *D = (ddb *)b;
    pthread_mutex_lock(&D->gmu);
    for (ddb_watch **p = &D->watches; *p; p = &(*p)->next)
        if ((*p)->fd == fd) {
            ddb_watch *w = *p;
            *p = w->next;
            close(w->fd);
            free(w);
            break;
        }
    pthread_mutex_unlock(&D->gmu);
}

static void *poller_main(void *arg)
{
    ddb *D = arg;
    unsigned delay_ms = 10;
    for (;;) {
        pthread_mutex_lock(&D->qmu);
        int stop = D->stop;
        if (!stop) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += (long)delay_ms * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&D->pcv, &D->qmu, &ts);
            stop = D->stop;
        }
        pthread_mutex_unlock(&D->qmu);
        if (stop)
            break;
        uint64_t next;
        if (ddb_seq_get(D, &next)) {
            err_clear();
            delay_ms = 100;
            continue;
        }
        if (next != atomic_load(&D->head)) {
            atomic_store(&D->head, next);
            ddb_notify(D);
            delay_ms = 10;
        } else {
            if (atomic_exchange(&D->view_hole, 0))
                ddb_notify(D); /* a view reader waits for an index entry: read again */
            if (delay_ms < 100)
                delay_ms = delay_ms * 2 > 100 ? 100 : delay_ms * 2;
        }
    }
    return NULL;
}

static int ddb_stats(backend *b, stele_stats *out)
{
    ddb *D = (ddb *)b;
    memset(out, 0, sizeof *out);
    json_t *resp;
    int rc = ddb_call(D, "GetItem",
                      json_pack("{s:s, s:{s:o}, s:b}", "TableName", D->t_streams, "Key", "stream",
                                ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)), "ConsistentRead", 1),
                      &resp, NULL);
    if (rc)
        return rc;
    json_t *it = json_object_get(resp, "Item");
    int64_t v = 0;
    out->events = it && ddb_get_n(it, "next", &v) == 0 ? (uint64_t)v : 0;
    out->streams = it && ddb_get_n(it, "streams", &v) == 0 ? (uint64_t)v : 0;
    json_decref(resp);
    out->appends = atomic_load(&D->appends);
    out->groups = atomic_load(&D->groups);
    return 0;
}

/* Positions are gapless: the next cursor is the next number. */
static uint64_t ddb_pos_after(backend *b, uint64_t pos)
{
    (void)b;
    return pos == STELE_NONE ? 0 : pos + 1;
}

static uint64_t ddb_pos_before(backend *b, uint64_t pos)
{
    (void)b;
    return pos == 0 || pos == STELE_NONE ? STELE_NONE : pos - 1;
}

static int ddb_pos_head(backend *b, uint64_t *next)
{
    return ddb_seq_get((ddb *)b, next);
}

static void ddb_close(backend *b)
{
    ddb *D = (ddb *)b;
    /* For benchmarks: what the writer consumed (docs/backends.md). */
    const char *cf = getenv("STELE_DDB_CAPACITY_FILE");
    FILE *f = cf ? fopen(cf, "a") : NULL;
    if (f) {
        fprintf(f, "ddb appends=%llu groups=%llu retries=%llu events=%llu write_cu=%.1f read_cu=%.1f\n",
                (unsigned long long)atomic_load(&D->appends), (unsigned long long)atomic_load(&D->groups),
                (unsigned long long)atomic_load(&D->retries), (unsigned long long)atomic_load(&D->events),
                atomic_load(&D->wcu_milli) / 1000.0, atomic_load(&D->rcu_milli) / 1000.0);
        fclose(f);
    }
    pthread_mutex_lock(&D->qmu);
    D->stop = 1;
    pthread_cond_broadcast(&D->qcv);
    pthread_cond_broadcast(&D->pcv);
    pthread_mutex_unlock(&D->qmu);
    pthread_join(D->writer, NULL);
    pthread_join(D->poller, NULL);
    while (D->watches)
        ddb_unwatch(b, D->watches->fd);
    for (int i = 0; i < D->nfree; i++)
        aws_client_free(D->clients[i]);
    aws_creds_clear(&D->creds);
    pool_unref(D->pl);
    ddb_writer_free(D);
    free(D->endpoint);
    free(D->region);
    free(D->prefix);
    free(D);
}

static const backend_ops ddb_ops = {
    .version = BACKEND_OPS_VERSION,
    .name = "dynamodb",
    .append = ddb_append,
    .append_async = ddb_append_async,
    .remove = ddb_remove,
    .read_stream = ddb_read_stream,
    .read_all = ddb_read_all,
    .head = ddb_head,
    .query = ddb_query,
    .read_stream_to = ddb_read_stream_to,
    .read_view = ddb_read_view,
    .stats = ddb_stats,
    .append_multi = ddb_append_multi,
    .append_multi_async = ddb_append_multi_async,
    .read_matching = ddb_read_matching,
    .set_metadata = ddb_set_metadata,
    .get_metadata = ddb_get_metadata,
    .put_snapshot = ddb_put_snapshot,
    .get_snapshot = ddb_get_snapshot,
    .load = ddb_load,
    .pos_after = ddb_pos_after,
    .pos_before = ddb_pos_before,
    .pos_head = ddb_pos_head,
    .commit_gen = ddb_commit_gen,
    .wait_commit = ddb_wait_commit,
    .watch = ddb_watch_fd,
    .unwatch = ddb_unwatch,
    .scavenge = ddb_scavenge,
    .list_names = ddb_list_names,
    .groups = &ddb_group_ops,
    .close = ddb_close,
};

/* ------------------------------------------------------------------ open */

/* Percent-decode a URI query value into a malloc'd string. */
static char *pct_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
            o[k++] = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
            i += 2;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = 0;
    return o;
}

/* dynamodb://PREFIX?endpoint=URL&region=R */
static int parse_uri(ddb *D, const char *uri)
{
    const char *p = uri + strlen("dynamodb://");
    size_t n = strcspn(p, "?");
    if (n == 0 || n > 200)
        return err_set(STELE_EINVAL, "store URI %s: the table prefix must be 1..200 characters", uri);
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') ||
              p[i] == '_' || p[i] == '-' || p[i] == '.'))
            return err_set(STELE_EINVAL,
                           "store URI: table prefix '%.*s': only letters, digits, '_', '-' and '.'",
                           (int)n, p);
    D->prefix = strndup(p, n);
    p += n;
    if (*p == '?')
        p++;
    while (*p) {
        size_t l = strcspn(p, "&");
        const char *eq = memchr(p, '=', l);
        if (!eq)
            return err_set(STELE_EINVAL, "store URI: '%.*s' is not NAME=VALUE", (int)l, p);
        size_t kl = (size_t)(eq - p);
        char *v = pct_decode(eq + 1, l - kl - 1);
        if (!v)
            return err_set(STELE_ENOMEM, "out of memory");
        if (kl == 8 && !memcmp(p, "endpoint", 8)) {
            free(D->endpoint);
            D->endpoint = v;
            if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8))
                return err_set(STELE_EINVAL, "store URI: endpoint must start with http:// or https://");
        } else if (kl == 6 && !memcmp(p, "region", 6)) {
            free(D->region);
            D->region = v;
        } else {
            free(v);
            return err_set(STELE_EINVAL, "store URI: unknown parameter '%.*s' (endpoint, region)", (int)kl, p);
        }
        p += l;
        if (*p == '&')
            p++;
    }
    if (!D->region) {
        const char *r = getenv("AWS_REGION");
        if (!r || !*r)
            r = getenv("AWS_DEFAULT_REGION");
        D->region = strdup(r && *r ? r : "us-east-1");
    }
    return 0;
}

int ddb_backend_open(const char *uri, const stele_options *opts, backend **out)
{
    ddb *D = calloc(1, sizeof *D);
    if (!D)
        return err_set(STELE_ENOMEM, "out of memory");
    D->base.ops = &ddb_ops;
    D->opts = *opts;
    pthread_mutex_init(&D->cmu, NULL);
    pthread_cond_init(&D->ccv, NULL);
    pthread_mutex_init(&D->qmu, NULL);
    pthread_cond_init(&D->qcv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&D->pcv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&D->gmu, NULL);
    int rc = parse_uri(D, uri);
    if (rc == 0) {
        rc = aws_creds_load(NULL, NULL, &D->creds);
        if (rc) {
            const char *f = getenv("AWS_SHARED_CREDENTIALS_FILE");
            char path[4096];
            if (!f && getenv("HOME")) {
                snprintf(path, sizeof path, "%s/.aws/credentials", getenv("HOME"));
                f = path;
            }
            if (f && access(f, R_OK) == 0) {
                err_clear();
                rc = aws_creds_load(f, getenv("AWS_PROFILE"), &D->creds);
            }
        }
    }
    for (int i = 0; rc == 0 && i < DDB_CLIENTS; i++) {
        rc = aws_client_new(D->endpoint, D->region, "dynamodb", "application/x-amz-json-1.0", &D->creds,
                            10000, &D->clients[i]);
        if (rc == 0)
            D->nfree++;
    }
    snprintf(D->t_events, sizeof D->t_events, "%s-events", D->prefix ? D->prefix : "");
    snprintf(D->t_streams, sizeof D->t_streams, "%s-streams", D->prefix ? D->prefix : "");
    snprintf(D->t_ids, sizeof D->t_ids, "%s-ids", D->prefix ? D->prefix : "");
    snprintf(D->t_feed, sizeof D->t_feed, "%s-feed", D->prefix ? D->prefix : "");
    snprintf(D->t_snaps, sizeof D->t_snaps, "%s-snapshots", D->prefix ? D->prefix : "");
    if (rc == 0 && !(D->pl = pool_new()))
        rc = err_set(STELE_ENOMEM, "out of memory");
    if (rc == 0)
        rc = ddb_writer_new(D);
    if (rc == 0 && !(opts->flags & STELE_OPEN_NOCREATE))
        rc = ddb_migrate(D);
    uint64_t next = 0;
    if (rc == 0)
        rc = ddb_seq_get(D, &next);
    if (rc) {
        for (int i = 0; i < D->nfree; i++)
            aws_client_free(D->clients[i]);
        aws_creds_clear(&D->creds);
        if (D->pl)
            pool_unref(D->pl);
        ddb_writer_free(D);
        free(D->endpoint);
        free(D->region);
        free(D->prefix);
        free(D);
        return rc;
    }
    atomic_store(&D->head, next);
    pthread_create(&D->writer, NULL, ddb_writer_main, D);
    pthread_create(&D->poller, NULL, poller_main, D);
    *out = &D->base;
    return 0;
}

