/*
 * render.c - request bodies for targets: an event as JSON in the shape
 * reads return it (docs/http-api.md: id, stream, type, revision, position,
 * created, data or dataBase64, metadata or metadataBase64, tags), plus
 * "replay": true when a replay delivers it; or a rule's template, where
 * each {{placeholder}} becomes a JSON value (strings quoted, data and
 * metadata as stored JSON, or base64 strings for bytes).
 *
 * Stored JSON data is copied byte for byte (it was validated on append);
 * every other string is escaped here.
 */
#include <stdio.h>
#include <string.h>

#include "rules/rules_int.h"

#define W(b, s) buf_append((b), (s), strlen(s))

static int w_str(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = buf_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        rc |= buf_append(b, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 0};
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            esc[6] = 0;
        }
        rc |= W(b, esc);
    }
    rc |= buf_append(b, s + run, n - run);
    return rc | buf_append(b, "\"", 1);
}

static int w_b64(buf *b, const void *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *s = p;
    int rc = buf_append(b, "\"", 1);
    for (size_t i = 0; i < n && rc == 0; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        char o[4] = {tab[v >> 18 & 63], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        rc |= buf_append(b, o, 4);
    }
    return rc | buf_append(b, "\"", 1);
}

static int w_u64(buf *b, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    return buf_append(b, t, (size_t)n);
}

static int w_id(buf *b, const uint8_t id[16])
{
    char u[37];
    stele_uuid_format(id, u);
    return w_str(b, u, 36);
}

static int w_time(buf *b, int64_t us)
{
    char t[32];
    stele_time_format(us, t);
    return w_str(b, t, strlen(t));
}

static int w_data(buf *b, const void *p, size_t n, int json)
{
    if (!n)
        return W(b, "null");
    if (json)
        return buf_append(b, p, n);
    return w_b64(b, p, n);
}

static int w_tags(buf *b, const stele_event *e)
{
    int rc = W(b, "[");
    for (size_t i = 0; i < e->ntags; i++)
        rc |= (i ? W(b, ",") : 0) | w_str(b, e->tags[i], strlen(e->tags[i]));
    return rc | W(b, "]");
}

int render_event_json(buf *b, const stele_event *e, int is_replay)
{
    int rc = W(b, "{\"id\":") | w_id(b, e->id) | W(b, ",\"stream\":") |
             w_str(b, e->stream, e->stream_len) | W(b, ",\"type\":") |
             w_str(b, e->type, e->type_len) | W(b, ",\"revision\":") | w_u64(b, e->revision) |
             W(b, ",\"position\":") | w_u64(b, e->position) | W(b, ",\"created\":") |
             w_time(b, e->created_us);
    if (e->data_len)
        rc |= W(b, (e->flags & STELE_EVENT_JSON) ? ",\"data\":" : ",\"dataBase64\":") |
              w_data(b, e->data, e->data_len, e->flags & STELE_EVENT_JSON);
    if (e->metadata_len)
        rc |= W(b, (e->flags & STELE_META_JSON) ? ",\"metadata\":" : ",\"metadataBase64\":") |
              w_data(b, e->metadata, e->metadata_len, e->flags & STELE_META_JSON);
    if (e->ntags)
        rc |= W(b, ",\"tags\":") | w_tags(b, e);
    if (is_replay)
        rc |= W(b, ",\"replay\":true");
    rc |= W(b, "}");
    return rc ? err_set(STELE_ENOMEM, "out of memory") : 0;
}

static int w_placeholder(buf *b, const char *name, size_t n, const stele_event *e, int is_replay)
{
#define IS(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))
    if (IS("event"))
        return render_event_json(b, e, is_replay);
    if (IS("id"))
        return w_id(b, e->id);
    if (IS("stream"))
        return w_str(b, e->stream, e->stream_len);
    if (IS("category"))
        return w_str(b, e->stream, stream_category_len(e->stream, e->stream_len));
    if (IS("type"))
        return w_str(b, e->type, e->type_len);
    if (IS("revision"))
        return w_u64(b, e->revision);
    if (IS("position"))
        return w_u64(b, e->position);
    if (IS("created"))
        return w_time(b, e->created_us);
    if (IS("data"))
        return w_data(b, e->data, e->data_len, e->flags & STELE_EVENT_JSON);
    if (IS("metadata"))
        return w_data(b, e->metadata, e->metadata_len, e->flags & STELE_META_JSON);
    if (IS("tags"))
        return w_tags(b, e);
    if (IS("replay"))
        return W(b, is_replay ? "true" : "false");
#undef IS
    return -1; /* checked when the rule was saved */
}

int render_body(buf *b, const rule_def *d, const stele_event *e, int is_replay)
{
    if (!d->tmpl)
        return render_event_json(b, e, is_replay);
    const char *t = d->tmpl;
    int rc = 0;
    for (const char *p; rc == 0 && (p = strstr(t, "{{"));) {
        const char *end = strstr(p + 2, "}}");
        rc |= buf_append(b, t, (size_t)(p - t));
        rc |= w_placeholder(b, p + 2, (size_t)(end - p - 2), e, is_replay);
        t = end + 2;
    }
    rc |= W(b, t);
    return rc ? err_set(STELE_ENOMEM, "out of memory") : 0;
}
