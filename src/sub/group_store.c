/*
 * group_store.c - consumer groups kept in the store itself, as events of
 * system streams (users can read them, only the store writes them), so
 * they are as durable as any event and work on every backend:
 *
 *   $persistent-config
 *       GroupCreated {"stream":"Order-1"|null,"group":"g","settings":{...},
 *                     "checkpointBase":R1,"parkedBase":R2}
 *       GroupUpdated {"stream":...,"group":"g","settings":{...}}
 *       GroupDeleted {"stream":...,"group":"g"}
 *     Folding the stream from the start gives the live groups.
 *
 *   $persistentsubscription-{stream}::{group}-checkpoint
 *       $GroupCheckpoint {"checkpoint":K,"parkedTruncateBefore":P}
 *     The last event is the group's state: every event below position /
 *     revision K is done, parked messages below parked revision P are gone.
 *
 *   $persistentsubscription-{stream}::{group}-parked
 *       $> "{revision}@{stream}"  (KurrentDB's link format), metadata
 *       {"position":..,"revision":..,"stream":..,"eventId":..,
 *        "eventType":..,"reason":..,"retryCount":..}
 *
 * {stream} is "$all" for a group on $all. checkpointBase and parkedBase are
 * the next revisions of the two streams when the group was created: events
 * below them belong to an earlier group of the same name (deleting a group
 * soft-deletes its streams, and a crash between the two steps must not
 * hand the old state to a new group).
 *
 * The JSON here is written by this file and read back by it (jsmn spans);
 * anything unexpected in a system stream is ECORRUPT, never a guess.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "sub/group_int.h"
#include "sub/group_store_int.h"
#include "util/json_text.h"

/* ------------------------------------------------------------ events */

ev_blob *ev_blob_copy(const stele_event *e)
{
    size_t need = sizeof(ev_blob) + e->ntags * sizeof(char *) + e->stream_len + 1 +
                  e->type_len + 1 + e->data_len + e->metadata_len;
    for (size_t i = 0; i < e->ntags; i++)
        need += strlen(e->tags[i]) + 1;
    ev_blob *b = malloc(need);
    if (!b)
        return NULL;
    atomic_store(&b->refs, 1);
    b->e = *e;
    char *p = (char *)(b + 1);
    const char **tags = (const char **)(void *)p;
    p += e->ntags * sizeof(char *);
    for (size_t i = 0; i < e->ntags; i++) {
        size_t l = strlen(e->tags[i]) + 1;
        memcpy(p, e->tags[i], l);
        tags[i] = p;
        p += l;
    }
    b->e.tags = e->ntags ? tags : NULL;
    memcpy(p, e->stream, e->stream_len);
    p[e->stream_len] = 0;
    b->e.stream = p;
    p += e->stream_len + 1;
    memcpy(p, e->type, e->type_len);
    p[e->type_len] = 0;
    b->e.type = p;
    p += e->type_len + 1;
    if (e->data_len)
        memcpy(p, e->data, e->data_len);
    b->e.data = p;
    p += e->data_len;
    if (e->metadata_len)
        memcpy(p, e->metadata, e->metadata_len);
    b->e.metadata = p;
    return b;
}

void ev_blob_unref(ev_blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

/* ------------------------------------------------------------ names */

int group_sys_names(const char *stream, const char *name, char ckpt[256], char parked[256])
{
    const char *s = stream ? stream : "$all";
    int n1 = snprintf(ckpt, 256, SYS_PREFIX "%s::%s-checkpoint", s, name);
    int n2 = snprintf(parked, 256, SYS_PREFIX "%s::%s-parked", s, name);
    if (n1 < 0 || n1 > 255 || n2 < 0 || n2 > 255)
        return err_set(STELE_EINVAL,
                       "stream and group names are too long together (at most %u bytes)",
                       GROUP_NAMES_MAX);
    return 0;
}

/* ------------------------------------------------------------ writing JSON */

static int w(buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

static int w_u64(buf *b, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    return buf_append(b, t, (size_t)n);
}

/* A JSON string; the bytes are UTF-8 already checked by the API edge
 * (names) or taken as they are (reasons: invalid bytes become U+FFFD). */
static int w_str(buf *b, const char *s, size_t len)
{
    int rc = buf_append(b, "\"", 1);
    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            rc = buf_append(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            rc = buf_append(b, esc, 6);
        } else if (c >= 0x80) {
            size_t at;
            size_t k = i + 1;
            while (k < len && ((unsigned char)s[k] & 0xc0) == 0x80 && k - i < 4)
                k++;
            if (utf8_check_name(s + i, k - i, &at) == NULL) {
                rc = buf_append(b, s + i, k - i);
                i = k - 1;
            } else {
                rc = buf_append(b, "\\ufffd", 6);
            }
        } else {
            rc = buf_append(b, s + i, 1);
        }
    }
    return rc ? rc : buf_append(b, "\"", 1);
}

static int w_list(buf *b, int *first, const char *key, const char *const *v, size_t n)
{
    if (!n)
        return 0;
    int rc = w(b, *first ? "\"" : ",\"");
    *first = 0;
    rc |= w(b, key);
    rc |= w(b, "\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            rc |= w(b, ",");
        rc |= w_str(b, v[i], strlen(v[i]));
    }
    return rc | w(b, "]");
}

int gstore_filter_to_json(const stele_filter *f, char **out)
{
    *out = NULL;
    if (!f)
        return 0;
    buf b = {0};
    int first = 1, rc = w(&b, "{");
    rc |= w_list(&b, &first, "streamPrefixes", f->stream_prefixes, f->n_stream_prefixes);
    rc |= w_list(&b, &first, "categories", f->categories, f->n_categories);
    rc |= w_list(&b, &first, "types", f->types, f->n_types);
    rc |= w_list(&b, &first, "typePrefixes", f->type_prefixes, f->n_type_prefixes);
    const char *res[2] = {f->stream_regex, f->type_regex};
    const char *rkeys[2] = {"streamRegex", "typeRegex"};
    for (int i = 0; i < 2; i++)
        if (res[i]) {
            rc |= w(&b, first ? "\"" : ",\"");
            first = 0;
            rc |= w(&b, rkeys[i]);
            rc |= w(&b, "\":");
            rc |= w_str(&b, res[i], strlen(res[i]));
        }
    rc |= w_list(&b, &first, "tags", f->tags, f->n_tags);
    if (f->exclude_system) {
        rc |= w(&b, first ? "\"excludeSystem\":true" : ",\"excludeSystem\":true");
        first = 0;
    }
    rc |= w(&b, "}");
    rc |= buf_append(&b, "", 1);
    if (rc) {
        buf_free(&b);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    if (first) { /* selects everything: no filter */
        buf_free(&b);
        return 0;
    }
    *out = (char *)b.p;
    return 0;
}

static const char *strategy_name(int s) { return s == STELE_PINNED ? "Pinned" : "RoundRobin"; }

static int w_settings(buf *b, const stele_group_settings *s, const char *filter_json)
{
    int rc = w(b, "{\"startFrom\":");
    rc |= w_u64(b, s->start);
    rc |= w(b, ",\"strategy\":\"");
    rc |= w(b, strategy_name(s->strategy));
    const char *keys[] = {"maxInFlight", "messageTimeoutMs", "maxRetries", "bufferSize",
                          "checkpointAfterMs", "checkpointMinCount", "checkpointMaxCount"};
    uint32_t vals[] = {s->max_in_flight, s->message_timeout_ms, s->max_retries, s->buffer_size,
                       s->checkpoint_after_ms, s->checkpoint_min_count, s->checkpoint_max_count};
    rc |= w(b, "\"");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        rc |= w(b, ",\"");
        rc |= w(b, keys[i]);
        rc |= w(b, "\":");
        rc |= w_u64(b, vals[i]);
    }
    if (filter_json) {
        rc |= w(b, ",\"filter\":");
        rc |= w(b, filter_json);
    }
    return rc | w(b, "}");
}

int gstore_write_def(stele_db *db, const char *type, const group_def *d)
{
    buf b = {0};
    int rc = w(&b, "{\"stream\":");
    rc |= d->stream ? w_str(&b, d->stream, strlen(d->stream)) : w(&b, "null");
    rc |= w(&b, ",\"group\":");
    rc |= w_str(&b, d->name, strlen(d->name));
    if (strcmp(type, EV_DELETED) != 0) {
        rc |= w(&b, ",\"settings\":");
        rc |= w_settings(&b, &d->set, d->filter_json);
    }
    if (!strcmp(type, EV_CREATED)) {
        rc |= w(&b, ",\"checkpointBase\":");
        rc |= w_u64(&b, d->ckpt_base);
        rc |= w(&b, ",\"parkedBase\":");
        rc |= w_u64(&b, d->parked_base);
    }
    rc |= w(&b, "}");
    if (rc) {
        buf_free(&b);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    stele_event_in ev = {.type = type, .data = b.p, .data_len = b.len, .flags = STELE_EVENT_JSON};
    rc = store_append_system(db, CONFIG_STREAM, STELE_ANY, &ev, 1, NULL);
    buf_free(&b);
    return rc;
}

int gstore_checkpoint_json(buf *b, uint64_t ckpt, uint64_t trunc)
{
    int rc = w(b, "{\"checkpoint\":");
    rc |= w_u64(b, ckpt);
    rc |= w(b, ",\"parkedTruncateBefore\":");
    rc |= w_u64(b, trunc);
    return rc | w(b, "}");
}

int gstore_link_meta_json(buf *b, const stele_event *e, const char *reason, uint32_t retries)
{
    char id[37];
    stele_uuid_format(e->id, id);
    int rc = w(b, "{\"position\":");
    rc |= w_u64(b, e->position);
    rc |= w(b, ",\"revision\":");
    rc |= w_u64(b, e->revision);
    rc |= w(b, ",\"stream\":");
    rc |= w_str(b, e->stream, e->stream_len);
    rc |= w(b, ",\"eventId\":\"");
    rc |= w(b, id);
    rc |= w(b, "\",\"eventType\":");
    rc |= w_str(b, e->type, e->type_len);
    rc |= w(b, ",\"reason\":");
    rc |= w_str(b, reason ? reason : "", reason ? strlen(reason) : 0);
    rc |= w(b, ",\"retryCount\":");
    rc |= w_u64(b, retries);
    return rc | w(b, "}");
}

/* ------------------------------------------------------------ reading JSON */

typedef struct jdoc {
    const char *s;
    jsmntok_t *t;
    int n;
} jdoc;

static int jparse(const char *s, size_t len, jdoc *d)
{
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, s, len, NULL, 0);
    if (n <= 0)
        return -1;
    d->t = calloc((size_t)n, sizeof *d->t);
    if (!d->t)
        return -1;
    jsmn_init(&p);
    d->n = jsmn_parse(&p, s, len, d->t, (unsigned)n);
    d->s = s;
    if (d->n <= 0 || d->t[0].type != JSMN_OBJECT) {
        free(d->t);
        d->t = NULL;
        return -1;
    }
    return 0;
}

/* Index of the token after token i's subtree. */
static int jskip(const jdoc *d, int i)
{
    int end = d->t[i].end, j = i + 1;
    while (j < d->n && d->t[j].start < end)
        j++;
    return j;
}

/* The value token of `key` in the object at token `obj`, or -1. */
static int jget(const jdoc *d, int obj, const char *key)
{
    size_t kl = strlen(key);
    int j = obj + 1;
    /* j + 1: a key needs its value token (a cut document may end at a key). */
    for (int k = 0; k < d->t[obj].size && j + 1 < d->n; k++) {
        const jsmntok_t *t = &d->t[j];
        int match = t->type == JSMN_STRING && (size_t)(t->end - t->start) == kl &&
                    !memcmp(d->s + t->start, key, kl);
        if (match)
            return j + 1;
        j = jskip(d, j + 1);
    }
    return -1;
}

static int jnum(const jdoc *d, int i, uint64_t *out)
{
    if (i < 0 || d->t[i].type != JSMN_PRIMITIVE)
        return -1;
    uint64_t v = 0;
    int len = d->t[i].end - d->t[i].start;
    const char *p = d->s + d->t[i].start;
    if (len < 1 || len > 20)
        return -1;
    for (int k = 0; k < len; k++) {
        if (p[k] < '0' || p[k] > '9')
            return -1;
        uint64_t nv = v * 10 + (uint64_t)(p[k] - '0');
        if (nv / 10 != v)
            return -1;
        v = nv;
    }
    *out = v;
    return 0;
}

/* The unescaped text of string token i (malloc'd), or NULL if it is not a
 * string, is malformed (the record is the store's own, but checked all the
 * same) or holds U+0000. */
static char *jstr(const jdoc *d, int i)
{
    if (i < 0 || d->t[i].type != JSMN_STRING)
        return NULL;
    const char *p = d->s + d->t[i].start;
    size_t len = (size_t)(d->t[i].end - d->t[i].start);
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    long n = jtext_unescape(p, len, out, len);
    if (n < 0 || memchr(out, 0, (size_t)n)) {
        free(out);
        return NULL;
    }
    out[n] = 0;
    return out;
}

/* ------------------------------------------------------------ filters */

void gstore_filter_free(stele_filter *f)
{
    if (!f)
        return;
    char **lists[] = {(char **)f->stream_prefixes, (char **)f->categories, (char **)f->types,
                      (char **)f->type_prefixes, (char **)f->tags};
    size_t ns[] = {f->n_stream_prefixes, f->n_categories, f->n_types, f->n_type_prefixes,
                   f->n_tags};
    for (int l = 0; l < 5; l++) {
        for (size_t i = 0; lists[l] && i < ns[l]; i++)
            free(lists[l][i]);
        free(lists[l]);
    }
    free((char *)f->stream_regex);
    free((char *)f->type_regex);
    free(f);
}

static int read_list(const jdoc *d, int obj, const char *key, const char *const **out, size_t *n)
{
    int i = jget(d, obj, key);
    if (i < 0)
        return 0;
    if (d->t[i].type != JSMN_ARRAY)
        return -1;
    size_t cnt = (size_t)d->t[i].size;
    char **v = calloc(cnt ? cnt : 1, sizeof *v);
    if (!v)
        return -1;
    *out = (const char *const *)v;
    int j = i + 1;
    for (size_t k = 0; k < cnt; k++) {
        if (!(v[k] = jstr(d, j)))
            return -1;
        (*n)++;
        j = jskip(d, j);
    }
    return 0;
}

static int filter_from_doc(const jdoc *d, int obj, stele_filter **out)
{
    *out = NULL;
    if (d->t[obj].type != JSMN_OBJECT)
        return -1;
    stele_filter *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    int bad = read_list(d, obj, "streamPrefixes", &f->stream_prefixes, &f->n_stream_prefixes) ||
              read_list(d, obj, "categories", &f->categories, &f->n_categories) ||
              read_list(d, obj, "types", &f->types, &f->n_types) ||
              read_list(d, obj, "typePrefixes", &f->type_prefixes, &f->n_type_prefixes) ||
              read_list(d, obj, "tags", &f->tags, &f->n_tags);
    int i = jget(d, obj, "streamRegex");
    if (!bad && i >= 0 && !(f->stream_regex = jstr(d, i)))
        bad = 1;
    i = jget(d, obj, "typeRegex");
    if (!bad && i >= 0 && !(f->type_regex = jstr(d, i)))
        bad = 1;
    i = jget(d, obj, "excludeSystem");
    if (!bad && i >= 0)
        f->exclude_system = d->t[i].end - d->t[i].start == 4 && !memcmp(d->s + d->t[i].start, "true", 4);
    if (bad) {
        gstore_filter_free(f);
        return -1;
    }
    *out = f;
    return 0;
}

int gstore_filter_from_json(const char *json, stele_filter **out)
{
    *out = NULL;
    if (!json)
        return 0;
    jdoc d;
    if (jparse(json, strlen(json), &d))
        return err_set(STELE_ECORRUPT, "consumer group filter is not valid JSON");
    int rc = filter_from_doc(&d, 0, out);
    free(d.t);
    if (rc)
        return err_set(STELE_ECORRUPT, "consumer group filter has a bad shape");
    return 0;
}

/* ------------------------------------------------------------ definitions */

void group_def_free(group_def *d)
{
    free(d->stream);
    free(d->name);
    free(d->filter_json);
    memset(d, 0, sizeof *d);
}

static int parse_settings(const jdoc *d, int obj, group_def *def)
{
    if (obj < 0 || d->t[obj].type != JSMN_OBJECT)
        return -1;
    stele_group_settings *s = &def->set;
    stele_group_settings_init(s);
    if (jnum(d, jget(d, obj, "startFrom"), &s->start))
        return -1;
    int i = jget(d, obj, "strategy");
    char *st = jstr(d, i);
    if (!st)
        return -1;
    s->strategy = !strcmp(st, "Pinned") ? STELE_PINNED : STELE_ROUND_ROBIN;
    int known = !strcmp(st, "Pinned") || !strcmp(st, "RoundRobin");
    free(st);
    if (!known)
        return -1;
    const char *keys[] = {"maxInFlight", "messageTimeoutMs", "maxRetries", "bufferSize",
                          "checkpointAfterMs", "checkpointMinCount", "checkpointMaxCount"};
    uint32_t *vals[] = {&s->max_in_flight, &s->message_timeout_ms, &s->max_retries,
                        &s->buffer_size, &s->checkpoint_after_ms, &s->checkpoint_min_count,
                        &s->checkpoint_max_count};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        uint64_t v;
        if (jnum(d, jget(d, obj, keys[k]), &v) || v > UINT32_MAX)
            return -1;
        *vals[k] = (uint32_t)v;
    }
    free(def->filter_json);
    def->filter_json = NULL;
    i = jget(d, obj, "filter");
    if (i >= 0) {
        if (d->t[i].type != JSMN_OBJECT)
            return -1;
        def->filter_json = strndup(d->s + d->t[i].start, (size_t)(d->t[i].end - d->t[i].start));
        if (!def->filter_json)
            return -1;
    }
    return 0;
}

static int same_group(const group_def *a, const char *stream, const char *name)
{
    if ((a->stream == NULL) != (stream == NULL))
        return 0;
    return (!stream || !strcmp(a->stream, stream)) && !strcmp(a->name, name);
}

/* Apply one config event to the definitions. */
static int fold(const stele_event *e, group_def **defs, size_t *n, size_t *cap)
{
    jdoc d;
    if (!(e->flags & STELE_EVENT_JSON) || jparse(e->data, e->data_len, &d))
        return -1;
    int rc = -1;
    int si = jget(&d, 0, "stream");
    char *stream = NULL, *name = jstr(&d, jget(&d, 0, "group"));
    if (si < 0 || !name)
        goto out;
    if (d.t[si].type == JSMN_STRING) {
        if (!(stream = jstr(&d, si)))
            goto out;
    } else if (!(d.t[si].type == JSMN_PRIMITIVE && d.s[d.t[si].start] == 'n')) {
        goto out;
    }
    size_t at = 0;
    while (at < *n && !same_group(&(*defs)[at], stream, name))
        at++;
    int is = e->type_len;
    if (is == sizeof EV_CREATED - 1 && !memcmp(e->type, EV_CREATED, (size_t)is)) {
        group_def def = {.stream = stream, .name = name};
        stream = name = NULL;
        if (parse_settings(&d, jget(&d, 0, "settings"), &def) ||
            jnum(&d, jget(&d, 0, "checkpointBase"), &def.ckpt_base) ||
            jnum(&d, jget(&d, 0, "parkedBase"), &def.parked_base)) {
            group_def_free(&def);
            goto out;
        }
        if (at < *n) { /* cannot happen: create checks; keep the newest */
            group_def_free(&(*defs)[at]);
            (*defs)[at] = def;
        } else {
            if (*n == *cap) {
                size_t nc = *cap ? *cap * 2 : 8;
                group_def *nd = realloc(*defs, nc * sizeof *nd);
                if (!nd) {
                    group_def_free(&def);
                    goto out;
                }
                *defs = nd;
                *cap = nc;
            }
            (*defs)[(*n)++] = def;
        }
    } else if (is == sizeof EV_UPDATED - 1 && !memcmp(e->type, EV_UPDATED, (size_t)is)) {
        if (at == *n || parse_settings(&d, jget(&d, 0, "settings"), &(*defs)[at]))
            goto out;
    } else if (is == sizeof EV_DELETED - 1 && !memcmp(e->type, EV_DELETED, (size_t)is)) {
        if (at == *n)
            goto out;
        group_def_free(&(*defs)[at]);
        (*defs)[at] = (*defs)[--*n];
    } else {
        goto out;
    }
    rc = 0;
out:
    free(stream);
    free(name);
    free(d.t);
    return rc;
}

int gstore_load_defs(stele_db *db, group_def **defs, size_t *n)
{
    *defs = NULL;
    *n = 0;
    size_t cap = 0;
    backend *be = db->be;
    uint64_t from = 0;
    for (;;) {
        stele_page *pg;
        int rc = be->ops->read_stream(be, CONFIG_STREAM, sizeof CONFIG_STREAM - 1, from, 0, 1000,
                                      &pg);
        if (rc == STELE_ENOTFOUND) {
            err_clear();
            return 0;
        }
        if (rc)
            goto fail;
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            const stele_event *e = stele_page_event(pg, i);
            if (fold(e, defs, n, &cap)) {
                rc = err_set(STELE_ECORRUPT, "%s revision %llu: not a valid consumer group record",
                             CONFIG_STREAM, (unsigned long long)e->revision);
                stele_page_free(pg);
                goto fail;
            }
        }
        int more = stele_page_next(pg, &from);
        stele_page_free(pg);
        if (!more)
            return 0;
        continue;
    fail:
        for (size_t i = 0; i < *n; i++)
            group_def_free(&(*defs)[i]);
        free(*defs);
        *defs = NULL;
        *n = 0;
        return rc;
    }
}

int gstore_read_checkpoint(stele_db *db, const group *g, uint64_t *ckpt, uint64_t *trunc)
{
    *ckpt = STELE_NONE;
    *trunc = 0;
    backend *be = db->be;
    stele_page *pg;
    int rc = be->ops->read_stream(be, g->ckpt_stream, strlen(g->ckpt_stream), STELE_END, 1, 1, &pg);
    if (rc == STELE_ENOTFOUND) {
        err_clear();
        return 0;
    }
    if (rc)
        return rc;
    if (stele_page_count(pg) == 1) {
        const stele_event *e = stele_page_event(pg, 0);
        if (e->revision >= g->def.ckpt_base) {
            jdoc d;
            int bad = !(e->flags & STELE_EVENT_JSON) || jparse(e->data, e->data_len, &d);
            if (!bad) {
                bad = jnum(&d, jget(&d, 0, "checkpoint"), ckpt) ||
                      jnum(&d, jget(&d, 0, "parkedTruncateBefore"), trunc);
                free(d.t);
            }
            if (bad)
                rc = err_set(STELE_ECORRUPT, "%s revision %llu: not a valid checkpoint",
                             g->ckpt_stream, (unsigned long long)e->revision);
        }
    }
    stele_page_free(pg);
    return rc;
}

/* The event at `pos` of $all if its id is `id`. */
static int read_at(stele_db *db, int by_pos, uint64_t at, const char *stream,
                   const uint8_t id[16], ev_blob **out)
{
    backend *be = db->be;
    stele_page *pg;
    int rc = by_pos ? be->ops->read_all(be, at, 0, 1, &pg)
                    : be->ops->read_stream(be, stream, strlen(stream), at, 0, 1, &pg);
    if (rc == STELE_ENOTFOUND || rc == STELE_EDELETED) {
        err_clear();
        return 0;
    }
    if (rc)
        return rc;
    if (stele_page_count(pg) == 1) {
        const stele_event *e = stele_page_event(pg, 0);
        int match = !memcmp(e->id, id, 16) && (by_pos ? e->position == at : e->revision == at);
        if (match && !(*out = ev_blob_copy(e)))
            rc = err_set(STELE_ENOMEM, "out of memory");
    }
    stele_page_free(pg);
    return rc;
}

int gstore_resolve_link(stele_db *db, const stele_event *link, ev_blob **out)
{
    *out = NULL;
    jdoc d;
    if (!(link->flags & STELE_META_JSON) || jparse(link->metadata, link->metadata_len, &d))
        return 0; /* not a link this store wrote: nothing to resolve */
    uint64_t pos, rev;
    uint8_t id[16];
    char *sid = jstr(&d, jget(&d, 0, "eventId"));
    char *stream = jstr(&d, jget(&d, 0, "stream"));
    int rc = 0;
    if (sid && stream && stele_uuid_parse(sid, id) == 0) {
        /* By position first: $all keeps a soft-deleted stream's events. */
        if (jnum(&d, jget(&d, 0, "position"), &pos) == 0)
            rc = read_at(db, 1, pos, NULL, id, out);
        if (rc == 0 && !*out && jnum(&d, jget(&d, 0, "revision"), &rev) == 0 &&
            stream[0] && strlen(stream) <= 255)
            rc = read_at(db, 0, rev, stream, id, out);
    }
    free(sid);
    free(stream);
    free(d.t);
    return rc;
}

/* The fuzz driver's door to fold() (group_store_int.h). */
int gstore_fold_int(const stele_event *e, group_def **defs, size_t *n, size_t *cap)
{
    return fold(e, defs, n, cap);
}
