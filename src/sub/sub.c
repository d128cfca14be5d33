/*
 * sub.c - catch-up subscriptions: read history from the log, then follow
 * new commits.
 *
 * A subscription is only a cursor (the next position of $all, or the next
 * revision of a stream) and a filter. Every call reads from the store at
 * the cursor, whether the events are old or were committed a microsecond
 * ago, so history and live events come from one source in one order: there
 * is nothing to switch between, hence no gap and no duplicate at the
 * switch. Waiting for new events sleeps on the backend's commit
 * generation. A slow consumer costs disk reads, never a buffer that grows
 * in memory, and never slows the writer.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/page.h"
#include "store/store_int.h"
#include "sub/sub_int.h"
#include "util/assert.h"
#include "util/util.h"

/* A filtered read scans at most this many events per page... */
#define SCAN_PAGE 4096u
/* ...and returns (possibly empty, for a checkpoint) after this many. */
#define SCAN_BUDGET 65536u

struct stele_sub {
    stele_db *db;
    int on_stream;
    int view; /* the stream is a view ($ce-...): revisions are its links' */
    char stream[256];
    size_t stream_len;
    uint64_t next; /* position ($all) or revision (stream) */
    sub_filter *filter;
    int caught_up;
};

static int new_sub(stele_db *db, stele_sub **out, stele_sub **s)
{
    if (!db || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "out");
    *out = NULL;
    *s = calloc(1, sizeof **s);
    if (!*s)
        return err_set(STELE_ENOMEM, "out of memory");
    (*s)->db = db;
    return 0;
}

int stele_subscribe_all(stele_db *db, uint64_t from, const stele_filter *filter,
                        stele_sub **out)
{
    err_clear();
    stele_sub *s;
    int rc = new_sub(db, out, &s);
    if (rc)
        return rc;
    if ((rc = sub_filter_new(filter, &s->filter))) {
        free(s);
        return rc;
    }
    if (from == STELE_END) {
        if ((rc = db->be->ops->pos_head(db->be, &from))) {
            stele_sub_close(s);
            return rc;
        }
    }
    s->next = from;
    *out = s;
    return 0;
}

int stele_subscribe_stream(stele_db *db, const char *stream, uint64_t from, stele_sub **out)
{
    err_clear();
    size_t len;
    stele_sub *s;
    int rc = store_check_read_stream(stream, &len);
    int kind, view = 0;
    const char *key;
    size_t klen;
    if (rc == 0 && store_view_parse(stream, len, &kind, &key, &klen))
        view = 1, rc = store_view_check(stream, len, &kind, &key, &klen);
    if (rc)
        return rc;
    if ((rc = new_sub(db, out, &s)))
        return rc;
    s->on_stream = 1;
    memcpy(s->stream, stream, len);
    s->stream_len = len;
    s->view = view;
    if (s->view && from == STELE_END) {
        /* After the view's newest event. */
        stele_page *pg;
        uint64_t rev;
        rc = store_read_view(db, stream, len, STELE_END, 1, 1, &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            from = 0;
            rc = 0;
        } else if (rc == 0) {
            /* Nothing shown but a next: every ordinal above it is hidden
             * and it is not readable yet (a DynamoDB index still on its
             * way): the view's newest event is at or above it. */
            uint64_t at;
            from = stele_page_link(pg, 0, NULL, &rev) ? rev + 1 : stele_page_next(pg, &at) ? at + 1 : 0;
            stele_page_free(pg);
        }
        if (rc) {
            free(s);
            return rc;
        }
    } else if (from == STELE_END) {
        stele_stream_info info;
        rc = db->be->ops->head(db->be, stream, len, &info);
        if (rc == STELE_ENOTFOUND) {
            from = 0;
            rc = 0;
        } else if (rc == 0 && info.tombstoned) {
            rc = err_set(STELE_EDELETED, "stream '%s' is tombstoned", s->stream);
        } else if (rc == 0) {
            from = info.last_revision == STELE_NONE ? 0 : info.last_revision + 1;
        }
        if (rc) {
            free(s);
            return rc;
        }
    }
    s->next = from;
    *out = s;
    return 0;
}

#if STELE_DEBUG_ASSERTS_ON
/* Debug builds: a forward read from `from` returned events at or after it,
 * each after the one before (revisions of a stream or its view's links,
 * positions of $all), in backend order (the backends' positions and
 * revisions are increasing integers). */
static int page_in_order(const stele_sub *s, stele_page *pg, uint64_t from)
{
    uint64_t prev = from;
    for (size_t i = 0; i < stele_page_count(pg); i++) {
        const stele_event *e = stele_page_event(pg, i);
        uint64_t at = s->on_stream ? e->revision : e->position;
        if (s->view)
            stele_page_link(pg, i, NULL, &at);
        if (at < prev || (i && at == prev))
            return 0;
        prev = at;
    }
    return 1;
}
#endif

static int keep_event(const void *ctx, const stele_event *e)
{
    return sub_filter_match(ctx, e);
}

/*
 * One read at the cursor. Sets *end when it reached the end of what is
 * committed, and *scanned to the number of events it moved past.
 */
static int read_once(stele_sub *s, size_t limit, stele_page **out, int *end, uint64_t *scanned)
{
    backend *be = s->db->be;
    stele_page *pg = NULL;
    int rc;
    *end = 0;
    *scanned = 0;
    if (s->on_stream) {
        rc = s->view ? store_read_view(s->db, s->stream, s->stream_len, s->next, 0, limit, &pg)
                     : be->ops->read_stream(be, s->stream, s->stream_len, s->next, 0, limit, &pg);
        if (rc == STELE_ENOTFOUND) {
            /* Not written yet, or soft-deleted: wait for it. */
            err_clear();
            *end = 1;
            return page_new(NULL, out);
        }
        if (rc)
            return rc;
    } else {
        size_t want = s->filter ? (limit > SCAN_PAGE ? limit : SCAN_PAGE) : limit;
        if ((rc = be->ops->read_all(be, s->next, 0, want, &pg)))
            return rc;
    }
    size_t n = stele_page_count(pg);
    uint64_t next;
    int more = stele_page_next(pg, &next);
#if STELE_DEBUG_ASSERTS_ON
    STELE_DEBUG_ASSERT(page_in_order(s, pg, s->next));
#endif
    if (n) {
        const stele_event *last = stele_page_event(pg, n - 1);
        uint64_t rev = last->revision;
        if (s->view)
            stele_page_link(pg, n - 1, NULL, &rev);
        if (s->on_stream) {
            next = rev + 1;
            *scanned = next - s->next;
        } else {
            /* Positions are the backend's: no arithmetic here. A $all read
             * returns every event from s->next on, so it scanned n. */
            next = be->ops->pos_after(be, last->position);
            *scanned = n;
        }
    } else if (s->view && more && next > s->next) {
        /* Every event of the page was hidden: step over them. */
        *scanned = next - s->next;
        s->next = next;
    }
    *end = !more;
    if (s->view && !n && more && next <= s->next)
        *end = 1; /* the view's next ordinal is not readable yet (a
                     DynamoDB index on its way): wait, never step over it */
    if (s->filter) {
        page_filter(pg, keep_event, s->filter, limit);
        size_t kept = stele_page_count(pg);
        if (kept == limit && kept < n) {
            /* More matches may follow the last one kept: resume after it. */
            const stele_event *k = stele_page_event(pg, kept - 1);
            next = be->ops->pos_after(be, k->position); /* filters are on $all only */
            *end = 0;
        }
    }
    if (n) {
        /* The cursor only moves forwards (stele_sub_seek aside). */
        STELE_ASSERT(next > s->next);
        s->next = next;
    }
    *out = pg;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int stele_sub_next(stele_sub *sub, size_t limit, int timeout_ms, stele_page **out)
{
    err_clear();
    if (!sub || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !sub ? "sub" : "out");
    *out = NULL;
    if (limit == 0)
        return err_set(STELE_EINVAL, "limit must be at least 1");
    if (timeout_ms < -1)
        return err_set(STELE_EINVAL, "timeout_ms %d (>= 0, or -1 for no limit)", timeout_ms);
    backend *be = sub->db->be;
    int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    uint64_t budget = 0;
    for (;;) {
        /* Take the generation before reading: a commit after the read
         * changes it, so the wait below cannot miss it. */
        uint32_t gen = be->ops->commit_gen(be);
        stele_page *pg;
        int end;
        uint64_t scanned;
        int rc = read_once(sub, limit, &pg, &end, &scanned);
        if (rc)
            return rc;
        sub->caught_up = end;
        budget += scanned;
        if (stele_page_count(pg) || budget >= SCAN_BUDGET) {
            *out = pg;
            return 0;
        }
        if (!end) {
            stele_page_free(pg);
            continue;
        }
        int wait_ms = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0) {
                *out = pg;
                return 0;
            }
            wait_ms = left > 1000000 ? 1000000 : (int)left;
        }
        stele_page_free(pg);
        be->ops->wait_commit(be, gen, wait_ms);
    }
}

uint64_t stele_sub_position(const stele_sub *sub) { return sub ? sub->next : 0; }

int stele_sub_caught_up(const stele_sub *sub) { return sub ? sub->caught_up : 0; }

void stele_sub_seek(stele_sub *sub, uint64_t next)
{
    if (!sub)
        return;
    sub->next = next;
    sub->caught_up = 0;
}

void stele_sub_close(stele_sub *sub)
{
    if (!sub)
        return;
    sub_filter_free(sub->filter);
    free(sub);
}

int stele_watch(stele_db *db, int *fd)
{
    err_clear();
    if (!db || !fd)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "fd");
    return db->be->ops->watch(db->be, fd);
}

void stele_unwatch(stele_db *db, int fd)
{
    if (db)
        db->be->ops->unwatch(db->be, fd);
}
