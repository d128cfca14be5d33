/*
 * target_stream.c - the "stream" target: each matched event is appended
 * to a stream of this store, as a copy (type, data, metadata and tags) or
 * as a link ("$>" to revision@stream), through the system append path.
 *
 * Idempotence: a copy's id is derived from the source event's id, the
 * target stream and the mode, so a redelivery after a crash appends an
 * event the store already has under that id: an idempotent retry, not a
 * second copy. A rule never matches events of its own target stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_int.h"

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* A deterministic id for the copy of event e made by this rule: the same
 * source event always gives the same copy id, so a redelivery after a
 * crash is an idempotent retry, not a second copy. */
static void copy_id(const rule_def *d, const stele_event *e, uint8_t out[16])
{
    uint32_t h[4];
    const char *name = d->stream;
    for (int i = 0; i < 4; i++) {
        h[i] = hash_bytes((const char *)e->id, 16) ^ (0x9e3779b9u * (uint32_t)(i + 1));
        h[i] = (h[i] ^ hash_bytes(name, strlen(name))) * 16777619u;
        h[i] ^= (uint32_t)d->link << i;
        h[i] = h[i] * 2654435761u ^ (h[i] >> 15);
    }
    memcpy(out, h, 16);
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x80); /* version 8: custom */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

static int st_parse(json_t *t, rule_def *d)
{
    int rc;
    static const char *const keys[] = {"type", "stream", "mode", NULL};
    d->target = TARGET_STREAM;
    char *mode = NULL;
    if ((rc = rdef_only_keys(t, "target", keys)) ||
        (rc = rdef_get_str(t, "target", "stream", 255, 1, &d->stream)) ||
        (rc = rdef_get_str(t, "target", "mode", 16, 0, &mode)))
        return free(mode), rc;
    d->link = mode && !strcmp(mode, "link");
    int bad_mode = mode && strcmp(mode, "link") && strcmp(mode, "copy");
    free(mode);
    if (bad_mode)
        return err_set(STELE_EINVAL, "target.mode: must be \"copy\" or \"link\"");
    size_t len;
    if ((rc = check_stream(d->stream, &len)))
        return err_set(rc, "target.stream: %s", stele_errmsg());
    return 0;
}

static int st_normalize(json_t *t, const rule_def *d)
{
    return json_object_set_new(t, "mode", json_string(d->link ? "link" : "copy"));
}

static int st_open(const rule_def *d, stele_db *db, const char *rule_name, void **conn,
                   char err[256])
{
    (void)d;
    (void)rule_name;
    (void)err;
    *conn = db;
    return 0;
}

/* One durable append per event. */
static void st_deliver(void *conn, const rule_def *d, const stele_event *const *evs, size_t n,
                       uint64_t replay_id, tgt_result *res)
{
    stele_db *db = conn;
    (void)replay_id;
    for (size_t i = 0; i < n; i++) {
        const stele_event *e = evs[i];
        uint8_t id[16];
        copy_id(d, e, id);
        char link[300];
        stele_event_in in = {.id = id};
        if (d->link) {
            int k = snprintf(link, sizeof link, "%llu@%s", (unsigned long long)e->revision,
                             e->stream);
            in.type = "$>";
            in.data = link;
            in.data_len = (size_t)k;
        } else {
            in.type = e->type;
            in.data = e->data;
            in.data_len = e->data_len;
            in.metadata = e->metadata;
            in.metadata_len = e->metadata_len;
            in.tags = e->tags;
            in.ntags = e->ntags;
            in.flags = e->flags;
        }
        tgt_result *r = &res[i];
        r->retry_after_ms = -1;
        int rc = store_append_system(db, d->stream, STELE_ANY, &in, 1, NULL);
        if (rc == 0) {
            r->outcome = TGT_DELIVERED;
            continue;
        }
        snprintf(r->error, sizeof r->error, "append to '%s': %s: %s", d->stream,
                 stele_errname(rc), stele_errmsg());
        int retryable = rc == STELE_EIO || rc == STELE_ENOSPC || rc == STELE_EREADONLY ||
                        rc == STELE_EBUSY || rc == STELE_ENOMEM;
        r->outcome = retryable ? TGT_RETRY : TGT_FAIL;
        r->kind = STELE_FAIL_OTHER;
    }
}

static void st_close(void *conn) { (void)conn; }

const target_ops target_stream = {
    .type = "stream",
    .parse = st_parse,
    .normalize = st_normalize,
    .open = st_open,
    .deliver = st_deliver,
    .close = st_close,
    .batch_max = 64,
};
