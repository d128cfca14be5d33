/*
 * target_tmpl.c - short text templates of the message targets: a NATS
 * subject, a RabbitMQ exchange and routing key. "{{name}}" is replaced by
 * the event's value as plain text (no JSON quoting):
 *
 *   {{stream}} {{category}} {{type}} {{id}} {{revision}} {{position}}
 *   {{data.PATH}} {{metadata.PATH}}   a member of JSON data (a.b.c): a
 *                                     string as is, another value as JSON,
 *                                     missing: empty
 *
 * Checked when the rule is saved (tmpl_check), rendered per event
 * (tmpl_render) into a bounded buffer. Bytes the caller names in `bad`
 * (e.g. NATS wildcards and spaces) are replaced by '_' in substituted
 * values, so an event's content can never change the shape of a subject.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_int.h"

static const char *const names[] = {"stream", "category", "type", "id", "revision", "position",
                                    NULL};

static int known(const char *p, size_t n)
{
    for (size_t i = 0; names[i]; i++)
        if (strlen(names[i]) == n && !memcmp(names[i], p, n))
            return 1;
    if ((n > 5 && !memcmp(p, "data.", 5)) || (n > 9 && !memcmp(p, "metadata.", 9)))
        return 1;
    return 0;
}

int tmpl_check(const char *path, const char *t)
{
    for (const char *p = strstr(t, "{{"); p; p = strstr(p + 2, "{{")) {
        const char *e = strstr(p + 2, "}}");
        if (!e)
            return err_set(STELE_EINVAL, "%s: '{{' at byte %zu is not closed", path,
                           (size_t)(p - t));
        size_t n = (size_t)(e - p - 2);
        if (!known(p + 2, n))
            return err_set(STELE_EINVAL,
                           "%s: unknown placeholder '{{%.*s}}' at byte %zu (known: stream "
                           "category type id revision position data.PATH metadata.PATH)",
                           path, (int)(n > 64 ? 64 : n), p + 2, (size_t)(p - t));
        p = e;
    }
    return 0;
}

static void member(const void *raw, size_t len, int is_json, const char *path, size_t pn,
                   buf *out)
{
    if (!is_json)
        return;
    json_error_t je;
    json_t *root = json_loadb(raw, len, 0, &je), *v = root;
    char seg[256];
    for (size_t i = 0; v && i < pn;) {
        size_t k = 0;
        while (i + k < pn && path[i + k] != '.')
            k++;
        size_t c = k < sizeof seg ? k : sizeof seg - 1;
        memcpy(seg, path + i, c);
        seg[c] = 0;
        v = json_is_object(v) ? json_object_get(v, seg) : NULL;
        i += k + 1;
    }
    if (json_is_string(v)) {
        buf_append(out, json_string_value(v), json_string_length(v));
    } else if (v && !json_is_null(v)) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s)
            buf_append(out, s, strlen(s));
        free(s);
    }
    json_decref(root);
}

int tmpl_render(const char *t, const stele_event *e, const char *bad, char *out, size_t cap)
{
    buf b = {0};
    for (const char *p; (p = strstr(t, "{{"));) {
        const char *end = strstr(p + 2, "}}");
        buf_append(&b, t, (size_t)(p - t));
        const char *n = p + 2;
        size_t nl = (size_t)(end - n), from = b.len;
        char num[40];
#define IS(s) (nl == sizeof(s) - 1 && !memcmp(n, s, nl))
        if (IS("stream"))
            buf_append(&b, e->stream, e->stream_len);
        else if (IS("category"))
            buf_append(&b, e->stream, stream_category_len(e->stream, e->stream_len));
        else if (IS("type"))
            buf_append(&b, e->type, e->type_len);
        else if (IS("id")) {
            stele_uuid_format(e->id, num);
            buf_append(&b, num, strlen(num));
        } else if (IS("revision") || IS("position")) {
            int k = snprintf(num, sizeof num, "%llu",
                             (unsigned long long)(IS("revision") ? e->revision : e->position));
            buf_append(&b, num, (size_t)k);
        } else if (nl > 5 && !memcmp(n, "data.", 5))
            member(e->data, e->data_len, (e->flags & STELE_EVENT_JSON) != 0, n + 5, nl - 5, &b);
        else if (nl > 9 && !memcmp(n, "metadata.", 9))
            member(e->metadata, e->metadata_len, (e->flags & STELE_META_JSON) != 0, n + 9, nl - 9,
                   &b);
#undef IS
        for (size_t i = from; bad && i < b.len; i++)
            if (strchr(bad, ((char *)b.p)[i]) || (unsigned char)((char *)b.p)[i] < ' ')
                ((char *)b.p)[i] = '_';
        t = end + 2;
    }
    buf_append(&b, t, strlen(t));
    int rc = 0;
    if (!b.p || b.len >= cap)
        rc = -1;
    else {
        memcpy(out, b.p, b.len);
        out[b.len] = 0;
    }
    buf_free(&b);
    return rc;
}
