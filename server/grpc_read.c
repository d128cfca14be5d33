/*
 * grpc_read.c - event_store.client.streams.Streams/Read: reads of a stream
 * or of $all (both directions, a count, filters on $all), and
 * subscriptions (the same request with `subscription` instead of `count`):
 * catch-up from a revision or position, then live.
 *
 * A read is produced a page at a time, and only while the call's queued
 * output is short (grpc.h: on_more), so reading a large stream or $all
 * never holds more than one page plus grpc_out_high() bytes for a client,
 * however slowly it reads. A page is kept and sent an event at a time; its
 * count is sized by bytes (limits.c: pager), about half the queue's
 * high-water mark, so large events are read one or a few at a time.
 *
 * Reads: a stream that does not exist (or is soft-deleted) is answered
 * with a `stream_not_found` message and status OK, as KurrentDB does; a
 * tombstoned one with FAILED_PRECONDITION and exception=stream-deleted.
 * Filters on $all reads (stream name or event type, by prefixes or a POSIX
 * extended regular expression) are applied here to each page, and `count`
 * counts the events sent. Backwards from an explicit $all position returns
 * the events before it (a KurrentDB position points before its event).
 *
 * The view streams ($ce-, $et-, $bc-, $streams) are read and subscribed
 * like any stream through libstele; their events carry a link
 * (stele_page_link), sent as KurrentDB sends links: with resolve_links the
 * original as `event` and a synthetic `$>` link event as `link`, without
 * it the link event alone (docs/kurrentdb-compatibility.md).
 *
 * A $all read or subscription by a user without $ops, or a view's by one
 * who may not read the view itself, skips the events of streams the user
 * may not read (visible(); docs/security.md): `count`
 * counts what is sent, so such a read may scan far to fill it.
 *
 * Subscriptions use libstele's (stele_subscribe_all/stream with the same
 * filter), woken by grpc_on_commit() through one stele_watch eventfd for
 * the whole server. The first message is the confirmation; then events,
 * and `caught_up` when the subscription reaches the end of the log
 * (`fell_behind` if it later drops behind). Filtered $all subscriptions
 * send a `checkpoint` each time (window max, default 32) x
 * checkpointIntervalMultiplier positions have been scanned: its position is
 * the last one scanned, so resuming from it (subscriptions start after the
 * given position) misses nothing and repeats nothing. Subscription start
 * points are exclusive, as in KurrentDB: from revision r means r+1.
 */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "grpc.h"
#include "streams.pb-c.h"

typedef EventStore__Client__Streams__ReadReq ReadReq;
typedef EventStore__Client__Streams__ReadReq__Options ReadOptions;
typedef EventStore__Client__Streams__ReadReq__Options__FilterOptions FilterOptions;
typedef EventStore__Client__Streams__ReadResp ReadResp;
typedef EventStore__Client__Streams__ReadResp__ReadEvent ReadEvent;
typedef EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent RecordedEvent;
typedef EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent__MetadataEntry MetaEntry;

#define PAGE_EVENTS 128
#define DEFAULT_WINDOW 32

typedef struct read_st {
    int all, backwards, uuid_string;
    int resolve;        /* resolve_links: view events as event + link */
    char stream[1024];
    uint64_t next;      /* reads: where the next page starts */
    uint64_t remaining; /* reads: events still to send */
    int end;            /* reads: no page after the current one */
    int fetched;        /* reads: a page was read (stream_not_found only before) */
    stele_page *page;
    size_t idx;
    /* Filter of a $all read (server side). */
    int filter_on_type; /* 0 none, 1 stream name, 2 event type */
    /* $all or a view read by a user without $ops: only the streams it
     * may read (access.c), with the last stream's answer remembered. */
    int acl_filter, vis_ok;
    char vis_stream[256];
    char **prefixes;
    size_t nprefixes;
    regex_t re;
    int has_re;
    /* Subscription. */
    stele_sub *sub;
    int caught_up;      /* as last reported to the client */
    int page_caught_up; /* stele_sub_caught_up() after the current page */
    int filtered;
    uint64_t last_cp, cp_interval;
    pager pg;           /* events per page, by their size */
} read_st;

/* ------------------------------------------------------------ messages */

/* One RecordedEvent and what it points into (filled by record_fill). */
typedef struct rec_msg {
    RecordedEvent rec;
    EventStore__Client__UUID uuid;
    EventStore__Client__UUID__Structured su;
    EventStore__Client__StreamIdentifier sid;
    MetaEntry m_type, m_ct, m_created;
    MetaEntry *meta[3];
    char idtext[37];
    char created[24];
} rec_msg;

static void record_fill(rec_msg *m, const stele_event *e, int uuid_string)
{
    EventStore__Client__UUID uuid = EVENT_STORE__CLIENT__UUID__INIT;
    EventStore__Client__UUID__Structured su = EVENT_STORE__CLIENT__UUID__STRUCTURED__INIT;
    m->uuid = uuid;
    m->su = su;
    if (uuid_string) {
        /* Always the UUID text, even for an id given as a ULID (the same
         * 128 bits): KurrentDB's clients parse this field as a UUID, and
         * the Rust-based @kurrent client aborts the read on anything else
         * (docs/kurrentdb-compatibility.md). HTTP returns the ULID form. */
        stele_uuid_format(e->id, m->idtext);
        m->uuid.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRING;
        m->uuid.string = m->idtext;
    } else {
        m->su.most_significant_bits = (int64_t)ldbe64(e->id);
        m->su.least_significant_bits = (int64_t)ldbe64(e->id + 8);
        m->uuid.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRUCTURED;
        m->uuid.structured = &m->su;
    }
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    m->sid = sid;
    m->sid.stream_name.data = (uint8_t *)e->stream;
    m->sid.stream_name.len = e->stream_len;
    snprintf(m->created, sizeof m->created, "%lld", (long long)grpc_ticks(e->created_us));
    MetaEntry me = EVENT_STORE__CLIENT__STREAMS__READ_RESP__READ_EVENT__RECORDED_EVENT__METADATA_ENTRY__INIT;
    m->m_type = m->m_ct = m->m_created = me;
    m->m_type.key = "type";
    m->m_type.value = (char *)e->type;
    m->m_ct.key = "content-type";
    m->m_ct.value = (e->flags & STELE_EVENT_JSON) ? "application/json" : "application/octet-stream";
    m->m_created.key = "created";
    m->m_created.value = m->created;
    m->meta[0] = &m->m_type;
    m->meta[1] = &m->m_ct;
    m->meta[2] = &m->m_created;
    RecordedEvent rec = EVENT_STORE__CLIENT__STREAMS__READ_RESP__READ_EVENT__RECORDED_EVENT__INIT;
    m->rec = rec;
    m->rec.id = &m->uuid;
    m->rec.stream_identifier = &m->sid;
    m->rec.stream_revision = e->revision;
    m->rec.prepare_position = m->rec.commit_position = e->position == STELE_NONE ? 0 : e->position;
    m->rec.n_metadata = 3;
    m->rec.metadata = m->meta;
    m->rec.custom_metadata.data = (uint8_t *)e->metadata;
    m->rec.custom_metadata.len = e->metadata_len;
    m->rec.data.data = (uint8_t *)e->data;
    m->rec.data.len = e->data_len;
}

/*
 * The link event KurrentDB would have stored for event `e` at revision
 * `rev` of view stream `view` ($ce-Order ...): type "$>", data
 * "{revision}@{stream}" (bytes), in the view at `rev`, created with the
 * event. Its id is stable, made from the view's name and the revision
 * (FNV-1a; a version-4-shaped UUID). Not in $all: it carries the
 * original's position.
 */
static void link_event(stele_event *l, char *data, size_t cap, const char *view, uint64_t rev,
                       const stele_event *e)
{
    memset(l, 0, sizeof *l);
    uint64_t h = 1469598103934665603ull;
    for (const char *p = view; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    stbe64(l->id, h);
    stbe64(l->id + 8, rev ^ 0x5a5a5a5a5a5a5a5aull);
    l->id[6] = (uint8_t)((l->id[6] & 0x0f) | 0x40);
    l->id[8] = (uint8_t)((l->id[8] & 0x3f) | 0x80);
    l->stream = view;
    l->stream_len = strlen(view);
    l->type = "$>";
    l->type_len = 2;
    int n = snprintf(data, cap, "%llu@%.*s", (unsigned long long)e->revision, (int)e->stream_len,
                     e->stream);
    l->data = data;
    l->data_len = n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
    l->created_us = e->created_us;
    l->revision = rev;
    l->position = e->position;
}

/*
 * Send event i of `pg` (or `e` alone when pg is NULL). An event read from a
 * view stream is sent as KurrentDB sends a link: with resolve_links, the
 * original as `event` and the link as `link`; without, the link alone.
 */
static void send_event(gcall *call, const stele_page *pg, size_t i, const stele_event *e,
                       int uuid_string, int resolve)
{
    if (pg)
        e = stele_page_event(pg, i);
    const char *view;
    uint64_t vrev;
    int linked = pg && stele_page_link(pg, i, &view, &vrev);
    rec_msg orig, link;
    stele_event l;
    char ldata[300];
    ReadEvent re = EVENT_STORE__CLIENT__STREAMS__READ_RESP__READ_EVENT__INIT;
    if (linked) {
        link_event(&l, ldata, sizeof ldata, view, vrev, e);
        record_fill(&link, &l, uuid_string);
    }
    if (!linked || resolve) {
        record_fill(&orig, e, uuid_string);
        re.event = &orig.rec;
        if (linked)
            re.link = &link.rec;
    } else {
        re.event = &link.rec;
    }
    EventStore__Client__Empty none = EVENT_STORE__CLIENT__EMPTY__INIT;
    if (e->position == STELE_NONE) { /* not in $all (a metastream's event) */
        re.position_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__READ_EVENT__POSITION_NO_POSITION;
        re.no_position = &none;
    } else {
        re.position_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__READ_EVENT__POSITION_COMMIT_POSITION;
        re.commit_position = e->position;
    }
    ReadResp r = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    r.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_EVENT;
    r.event = &re;
    grpc_send(call, &r.base);
}

static void send_stream_not_found(gcall *call, const char *stream)
{
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)stream;
    sid.stream_name.len = strlen(stream);
    EventStore__Client__Streams__ReadResp__StreamNotFound nf =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__STREAM_NOT_FOUND__INIT;
    nf.stream_identifier = &sid;
    ReadResp r = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    r.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_STREAM_NOT_FOUND;
    r.stream_not_found = &nf;
    grpc_send(call, &r.base);
}

static void now_timestamp(Google__Protobuf__Timestamp *ts)
{
    int64_t us = time_now_us();
    ts->seconds = us / 1000000;
    ts->nanos = (int32_t)(us % 1000000) * 1000;
}

/* caught_up (live = 1) or fell_behind (0), with where the subscription is. */
static void send_liveness(gcall *call, read_st *st, int live)
{
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    now_timestamp(&ts);
    EventStore__Client__Streams__ReadResp__Position pos =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__POSITION__INIT;
    uint64_t at = stele_sub_position(st->sub);
    stele_db *db = call->c->srv->db;
    ReadResp r = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    EventStore__Client__Streams__ReadResp__CaughtUp cu =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__CAUGHT_UP__INIT;
    EventStore__Client__Streams__ReadResp__FellBehind fb =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__FELL_BEHIND__INIT;
    /* The last revision / position passed, when there is one. */
    int have = at > 0 && at != STELE_END;
    if (live) {
        cu.timestamp = &ts;
        if (st->all && have) {
            pos.commit_position = pos.prepare_position = stele_position_before(db, at);
            cu.position = &pos;
        } else if (!st->all && have) {
            cu.stream_revision_option_case =
                EVENT_STORE__CLIENT__STREAMS__READ_RESP__CAUGHT_UP__STREAM_REVISION_OPTION_STREAM_REVISION;
            cu.stream_revision = (int64_t)(at - 1);
        }
        r.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CAUGHT_UP;
        r.caught_up = &cu;
    } else {
        fb.timestamp = &ts;
        if (st->all && have) {
            pos.commit_position = pos.prepare_position = stele_position_before(db, at);
            fb.position = &pos;
        } else if (!st->all && have) {
            fb.stream_revision_option_case =
                EVENT_STORE__CLIENT__STREAMS__READ_RESP__FELL_BEHIND__STREAM_REVISION_OPTION_STREAM_REVISION;
            fb.stream_revision = (int64_t)(at - 1);
        }
        r.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_FELL_BEHIND;
        r.fell_behind = &fb;
    }
    grpc_send(call, &r.base);
}

static void send_checkpoint(gcall *call, uint64_t position)
{
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    now_timestamp(&ts);
    EventStore__Client__Streams__ReadResp__Checkpoint cp =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__CHECKPOINT__INIT;
    cp.commit_position = cp.prepare_position = position;
    cp.timestamp = &ts;
    ReadResp r = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    r.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CHECKPOINT;
    r.checkpoint = &cp;
    grpc_send(call, &r.base);
}

/* ------------------------------------------------------------ filters */

static int has_prefix(const char *s, size_t len, char **prefixes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t pl = strlen(prefixes[i]);
        if (pl <= len && !memcmp(s, prefixes[i], pl))
            return 1;
    }
    return 0;
}

/* Whether the caller may see e (always, unless acl_filter). */
static int visible(gcall *call, read_st *st, const stele_event *e)
{
    if (!st->acl_filter)
        return 1;
    if (st->vis_stream[0] && !strcmp(st->vis_stream, e->stream))
        return st->vis_ok;
    st->vis_ok = access_stream(call->c->srv, &call->who, e->stream, ACL_R);
    snprintf(st->vis_stream, sizeof st->vis_stream, "%s", e->stream);
    return st->vis_ok;
}

static int matches(const read_st *st, const stele_event *e)
{
    if (!st->filter_on_type)
        return 1;
    const char *s = st->filter_on_type == 1 ? e->stream : e->type;
    size_t len = st->filter_on_type == 1 ? e->stream_len : e->type_len;
    if (st->nprefixes)
        return has_prefix(s, len, st->prefixes, st->nprefixes);
    return !st->has_re || regexec(&st->re, s, 0, NULL, 0) == 0;
}

/* The request's filter, as libstele's (subscriptions) and as our own
 * matcher (reads). 0, or -1 with a status sent. */
static int take_filter(gcall *call, read_st *st, const FilterOptions *f, stele_filter *sf)
{
    memset(sf, 0, sizeof *sf);
    const EventStore__Client__Streams__ReadReq__Options__FilterOptions__Expression *x = NULL;
    if (f->filter_case == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTIONS__FILTER_STREAM_IDENTIFIER) {
        st->filter_on_type = 1;
        x = f->stream_identifier;
    } else if (f->filter_case == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTIONS__FILTER_EVENT_TYPE) {
        st->filter_on_type = 2;
        x = f->event_type;
    }
    if (!x) {
        grpc_fail_code(call, "INVALID_ARGUMENT",
                       "a filter needs a stream name or event type expression");
        return -1;
    }
    if (x->n_prefix) {
        st->prefixes = calloc(x->n_prefix, sizeof *st->prefixes);
        if (!st->prefixes) {
            grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < x->n_prefix; i++) {
            st->prefixes[i] = strdup(x->prefix[i] ? x->prefix[i] : "");
            if (!st->prefixes[i]) {
                grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
                return -1;
            }
            st->nprefixes++;
        }
        if (st->filter_on_type == 1) {
            sf->stream_prefixes = (const char *const *)st->prefixes;
            sf->n_stream_prefixes = st->nprefixes;
        } else {
            sf->type_prefixes = (const char *const *)st->prefixes;
            sf->n_type_prefixes = st->nprefixes;
        }
    } else if (x->regex && *x->regex) {
        int rc = regcomp(&st->re, x->regex, REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char why[128], msg[300];
            regerror(rc, &st->re, why, sizeof why);
            snprintf(msg, sizeof msg, "invalid filter regex (POSIX extended): %s", why);
            grpc_fail_code(call, "INVALID_ARGUMENT", msg);
            return -1;
        }
        st->has_re = 1;
        if (st->filter_on_type == 1)
            sf->stream_regex = x->regex;
        else
            sf->type_regex = x->regex;
    } else {
        st->filter_on_type = 0; /* an empty expression matches everything */
    }
    uint64_t window = f->window_case == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTIONS__WINDOW_MAX && f->max
                          ? f->max
                          : DEFAULT_WINDOW;
    st->cp_interval = window * (f->checkpointintervalmultiplier ? f->checkpointintervalmultiplier : 1);
    st->filtered = 1;
    return 0;
}

/* ------------------------------------------------------------ production */

static int read_page(server *s, read_st *st, size_t limit, stele_page **pg)
{
    int dir = st->backwards ? STELE_BACKWARDS : STELE_FORWARDS;
    return st->all ? stele_read_all(s->db, st->next, dir, limit, pg)
                   : stele_read_stream(s->db, st->stream, st->next, dir, limit, pg);
}

/* A read of KurrentDB's metastream `$$S`: S's stream metadata as its one
 * event, type `$metadata`, JSON with KurrentDB's names, revision = the
 * metadata's version (earlier versions are not kept; KurrentDB's
 * metastreams keep one event by default too). Not in $all: no position. */
static void read_metastream(gcall *call, read_st *st, uint64_t from, int from_end)
{
    stele_stream_metadata *md;
    int rc = stele_get_stream_metadata(call->c->srv->db, st->stream + 2, &md);
    if (rc == STELE_ENOTFOUND || (!rc && md->version == STELE_NONE)) {
        if (!rc)
            stele_free(md);
        send_stream_not_found(call, st->stream);
        grpc_finish(call, GRPC_OK, NULL);
        return;
    }
    if (rc) {
        grpc_fail_stele(call, rc, stele_errmsg(), st->stream);
        return;
    }
    uint64_t v = md->version;
    if (st->backwards ? from_end || from >= v : from <= v) {
        buf data = {0};
        stream_metadata_write(&data, md, 1);
        stele_event e = {0};
        /* A stable id per (stream, version): FNV-1a of the name, then the version. */
        uint64_t h = 1469598103934665603ull;
        for (const char *p = st->stream; *p; p++)
            h = (h ^ (uint8_t)*p) * 1099511628211ull;
        stbe64(e.id, h);
        stbe64(e.id + 8, v);
        e.id[6] = (uint8_t)((e.id[6] & 0x0f) | 0x40);
        e.id[8] = (uint8_t)((e.id[8] & 0x3f) | 0x80);
        e.stream = st->stream;
        e.stream_len = strlen(st->stream);
        e.type = "$metadata";
        e.type_len = 9;
        e.data = data.p;
        e.data_len = data.len;
        e.flags = STELE_EVENT_JSON;
        e.created_us = time_now_us();
        e.revision = v;
        e.position = STELE_NONE;
        send_event(call, NULL, 0, &e, st->uuid_string, 0);
        buf_free(&data);
        call->c->srv->m.read_events++;
    }
    stele_free(md);
    grpc_finish(call, GRPC_OK, NULL);
}

/* Reads: send events while the queue is short; fetch pages as needed. */
static void produce_read(gcall *call, read_st *st)
{
    server *s = call->c->srv;
    while (!call->done && grpc_out_pending(call) < grpc_out_high(call)) {
        if (st->remaining == 0) {
            grpc_finish(call, GRPC_OK, NULL);
            return;
        }
        if (st->page && st->idx < stele_page_count(st->page)) {
            size_t i = st->idx++;
            const stele_event *e = stele_page_event(st->page, i);
            if (matches(st, e) && visible(call, st, e)) {
                send_event(call, st->page, i, e, st->uuid_string, st->resolve);
                st->remaining--;
                s->m.read_events++;
            }
            continue;
        }
        stele_page_free(st->page);
        st->page = NULL;
        if (st->end) {
            grpc_finish(call, GRPC_OK, NULL);
            return;
        }
        size_t limit = st->filter_on_type || st->acl_filter || st->remaining > PAGE_EVENTS
                           ? PAGE_EVENTS
                           : (size_t)st->remaining;
        limit = pager_limit(&st->pg, grpc_out_high(call) / 2, limit);
        int rc = read_page(s, st, limit, &st->page);
        if (rc) {
            if (rc == STELE_ENOTFOUND && !st->all && !st->fetched) {
                send_stream_not_found(call, st->stream);
                grpc_finish(call, GRPC_OK, NULL);
            } else if (rc == STELE_ENOTFOUND) {
                grpc_finish(call, GRPC_OK, NULL); /* deleted while being read */
            } else {
                grpc_fail_stele(call, rc, stele_errmsg(), st->all ? NULL : st->stream);
            }
            return;
        }
        pager_observe(&st->pg, st->page);
        st->idx = 0;
        st->fetched = 1;
        st->end = !stele_page_next(st->page, &st->next) || stele_page_count(st->page) == 0;
    }
}

/* After each page of a subscription (empty or not, once its events are
 * queued): a checkpoint if a filter has scanned a window's worth since the
 * last one (or the subscription just caught up), and caught-up /
 * fell-behind when that changed. */
static void sub_news(gcall *call, read_st *st)
{
    uint64_t at = stele_sub_position(st->sub);
    if (st->filtered && st->all && at != STELE_END && at > st->last_cp &&
        (at - st->last_cp >= st->cp_interval || (st->page_caught_up && !st->caught_up))) {
        send_checkpoint(call, stele_position_before(call->c->srv->db, at));
        st->last_cp = at;
    }
    if (st->page_caught_up != st->caught_up) {
        st->caught_up = st->page_caught_up;
        send_liveness(call, st, st->caught_up);
    }
}

/* Subscriptions: events and news; stops when nothing is new (a commit
 * wakes it through grpc_on_commit). */
static void produce_sub(gcall *call, read_st *st)
{
    server *s = call->c->srv;
    while (!call->done && grpc_out_pending(call) < grpc_out_high(call)) {
        if (st->page && st->idx < stele_page_count(st->page)) {
            if (visible(call, st, stele_page_event(st->page, st->idx))) {
                send_event(call, st->page, st->idx, NULL, st->uuid_string, st->resolve);
                s->m.read_events++;
            }
            st->idx++;
            continue;
        }
        if (st->page) {
            stele_page_free(st->page);
            st->page = NULL;
            sub_news(call, st);
            continue;
        }
        int rc = stele_sub_next(st->sub, pager_limit(&st->pg, grpc_out_high(call) / 2, PAGE_EVENTS),
                                0, &st->page);
        if (rc) {
            st->page = NULL;
            grpc_fail_stele(call, rc, stele_errmsg(), st->all ? NULL : st->stream);
            return;
        }
        pager_observe(&st->pg, st->page);
        st->idx = 0;
        st->page_caught_up = stele_sub_caught_up(st->sub);
        if (stele_page_count(st->page) == 0) {
            stele_page_free(st->page);
            st->page = NULL;
            sub_news(call, st);
            if (st->page_caught_up)
                return; /* live and nothing new: wait for a commit */
        }
    }
}

void grpc_read_more(gcall *call)
{
    read_st *st = call->st;
    if (!st)
        return;
    if (st->sub)
        produce_sub(call, st);
    else
        produce_read(call, st);
}

void grpc_read_close(gcall *call)
{
    read_st *st = call->st;
    if (!st)
        return;
    grpc_sub_unregister(call);
    stele_page_free(st->page);
    stele_sub_close(st->sub);
    for (size_t i = 0; i < st->nprefixes; i++)
        free(st->prefixes[i]);
    free(st->prefixes);
    if (st->has_re)
        regfree(&st->re);
    free(st);
    call->st = NULL;
}

/* ------------------------------------------------------------ the request */

/* Where a read or subscription starts: a revision of st->stream or a
 * position of $all (st->all), or the start or end. 0, or 1 when the call
 * was failed. */
typedef struct read_from {
    uint64_t at;
    int start, end;
} read_from;

static int take_from(gcall *call, read_st *st, const ReadOptions *o, read_from *f)
{
    server *s = call->c->srv;
    *f = (read_from){0, 0, 0};
    if (o->stream_option_case == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_STREAM) {
        if (grpc_stream_name(call, o->stream->stream_identifier, st->stream, sizeof st->stream))
            return 1;
        st->acl_filter = access_filter_read(s, &call->who, st->stream); /* a view */
        switch (o->stream->revision_option_case) {
        case EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_REVISION:
            f->at = o->stream->revision;
            break;
        case EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_END:
            f->end = 1;
            f->at = STELE_END;
            break;
        default:
            f->start = 1;
            break;
        }
        return 0;
    }
    if (o->stream_option_case == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_ALL) {
        st->all = 1;
        st->acl_filter = access_filter_read(s, &call->who, NULL);
        switch (o->all->all_option_case) {
        case EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_POSITION:
            f->at = o->all->position ? o->all->position->commit_position : 0;
            break;
        case EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_END:
            f->end = 1;
            f->at = STELE_END;
            break;
        default:
            f->start = 1;
            break;
        }
        return 0;
    }
    grpc_fail_code(call, "INVALID_ARGUMENT", "Read: a stream or $all is required");
    return 1;
}

/* A random (version 4) id for a subscription's confirmation. */
static void subscription_id(char id[37])
{
    uint8_t raw[16];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(raw, 1, 16, f) != 16)
        memset(raw, 0x33, 16);
    if (f)
        fclose(f);
    raw[6] = (uint8_t)((raw[6] & 0x0f) | 0x40);
    raw[8] = (uint8_t)((raw[8] & 0x3f) | 0x80);
    stele_uuid_format(raw, id);
}

/* A subscription: it starts after the given revision or position,
 * confirms, then catches up and goes live (produce_sub). */
static void start_subscription(gcall *call, read_st *st, const read_from *f, const stele_filter *filter)
{
    server *s = call->c->srv;
    uint64_t start = f->start                       ? 0
                     : f->end || f->at == STELE_END ? STELE_END
                     : st->all                      ? stele_position_after(s->db, f->at)
                                                    : f->at + 1;
    char full[200];
    if (limits_subscriptions_full(s, full, sizeof full)) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, full);
        return;
    }
    int rc = st->all ? stele_subscribe_all(s->db, start, filter, &st->sub)
                     : stele_subscribe_stream(s->db, st->stream, start, &st->sub);
    if (rc) {
        grpc_fail_stele(call, rc, stele_errmsg(), st->all ? NULL : st->stream);
        return;
    }
    st->last_cp = start == STELE_END ? stele_sub_position(st->sub) : start;
    char id[37];
    subscription_id(id);
    EventStore__Client__Streams__ReadResp__SubscriptionConfirmation conf =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__SUBSCRIPTION_CONFIRMATION__INIT;
    conf.subscription_id = id;
    ReadResp r = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    r.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CONFIRMATION;
    r.confirmation = &conf;
    grpc_send(call, &r.base);
    grpc_sub_register(call);
    produce_sub(call, st);
}

/* A read of `count` events from f (produce_read, or the metastream). */
static void start_read(gcall *call, read_st *st, const read_from *f)
{
    uint64_t from = f->at;
    /* Backwards from an explicit $all position: the events before it. */
    if (st->all && st->backwards && !f->end && !f->start) {
        from = stele_position_before(call->c->srv->db, from);
        if (from == STELE_NONE) {
            grpc_finish(call, GRPC_OK, NULL);
            return;
        }
    }
    if (!st->backwards && f->end) {
        grpc_finish(call, GRPC_OK, NULL); /* nothing lies after the end */
        return;
    }
    st->next = from;
    if (st->remaining == 0) {
        grpc_finish(call, GRPC_OK, NULL);
        return;
    }
    if (!st->all && !strncmp(st->stream, "$$", 2)) {
        read_metastream(call, st, from, f->end);
        return;
    }
    produce_read(call, st);
}

void grpc_read_msg(gcall *call, ProtobufCMessage *msg)
{
    ReadReq *req = (ReadReq *)msg;
    ReadOptions *o = req->options;
    server *s = call->c->srv;
    if (!o) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Read: options are required");
        return;
    }
    read_st *st = calloc(1, sizeof *st);
    if (!st) {
        grpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    call->st = st;
    s->m.reads++;
    st->resolve = o->resolve_links;
    st->backwards = o->read_direction == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__READ_DIRECTION__Backwards;
    st->uuid_string = !(o->uuid_option && o->uuid_option->content_case ==
                                              EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__UUIDOPTION__CONTENT_STRUCTURED);
    int subscribe = o->count_option_case == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_SUBSCRIPTION;
    if (!subscribe && o->count_option_case != EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_COUNT) {
        grpc_fail_code(call, "INVALID_ARGUMENT", "Read: either count or subscription is required");
        return;
    }
    st->remaining = subscribe ? UINT64_MAX : o->count;
    read_from f;
    if (take_from(call, st, o, &f))
        return;
    stele_filter sf, *filter = NULL;
    if (o->filter_option_case == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTION_FILTER) {
        if (!st->all) {
            grpc_fail_code(call, "INVALID_ARGUMENT", "Read: filters apply to $all only");
            return;
        }
        if (take_filter(call, st, o->filter, &sf))
            return;
        filter = &sf;
    }
    if (subscribe)
        start_subscription(call, st, &f, filter);
    else
        start_read(call, st, &f);
}
