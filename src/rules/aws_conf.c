/*
 * aws_conf.c - what the Kinesis and DynamoDB targets share: the endpoint,
 * region, credentials and timeout members of their "target" object, and
 * text templates (a partition key, a table key) over event fields.
 *
 * The region comes from the rule, else $AWS_REGION, else
 * $AWS_DEFAULT_REGION; credentials from the environment or the shared
 * credentials file the rule names, read when a delivery engine opens its
 * connection (so rotating the file needs no rule change, and the rule's
 * stored definition never holds a secret).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/aws_targets.h"
#include "util/util.h"

static int get_str(json_t *t, const char *key, size_t max, char **out)
{
    json_t *v = json_object_get(t, key);
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max)
        return err_set(STELE_EINVAL, "target.%s: must be a non-empty string of at most %zu bytes", key, max);
    const char *s = json_string_value(v);
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            return err_set(STELE_EINVAL, "target.%s: control character at byte %zu", key, (size_t)(p - s));
    if (!(*out = strdup(s)))
        return err_set(STELE_ENOMEM, "out of memory");
    return 0;
}

int aws_conf_parse(json_t *t, aws_conf *c)
{
    memset(c, 0, sizeof *c);
    int rc;
    if ((rc = get_str(t, "endpoint", 1024, &c->endpoint)) || (rc = get_str(t, "region", 64, &c->region)) ||
        (rc = get_str(t, "credentialsFile", 4096, &c->credentials_file)) ||
        (rc = get_str(t, "profile", 128, &c->profile)))
        goto fail;
    if (c->endpoint && strncmp(c->endpoint, "http://", 7) && strncmp(c->endpoint, "https://", 8)) {
        rc = err_set(STELE_EINVAL, "target.endpoint: must start with http:// or https://");
        goto fail;
    }
    if (c->region)
        for (const char *p = c->region; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
                rc = err_set(STELE_EINVAL, "target.region: lowercase letters, digits and '-' (us-east-1)");
                goto fail;
            }
    c->timeout_ms = 10000;
    json_t *to = json_object_get(t, "timeoutMs");
    if (to) {
        if (!json_is_integer(to) || json_integer_value(to) < 100 || json_integer_value(to) > 300000) {
            rc = err_set(STELE_EINVAL, "target.timeoutMs: must be an integer from 100 to 300000");
            goto fail;
        }
        c->timeout_ms = (uint32_t)json_integer_value(to);
    }
    return 0;
fail:
    aws_conf_clear(c);
    return rc;
}

void aws_conf_clear(aws_conf *c)
{
    free(c->endpoint);
    free(c->region);
    free(c->credentials_file);
    free(c->profile);
    memset(c, 0, sizeof *c);
}

int aws_conf_client(const aws_conf *c, const char *service, const char *content_type, aws_client **out,
                    char err[256])
{
    const char *region = c->region ? c->region : getenv("AWS_REGION");
    if (!region || !*region)
        region = getenv("AWS_DEFAULT_REGION");
    if (!region || !*region) {
        snprintf(err, 256, "no region: set target.region or AWS_REGION");
        return STELE_EINVAL;
    }
    aws_creds cr;
    int rc = aws_creds_load(c->credentials_file, c->profile, &cr);
    if (rc == 0) {
        rc = aws_client_new(c->endpoint, region, service, content_type, &cr, c->timeout_ms, out);
        aws_creds_clear(&cr);
    }
    if (rc)
        snprintf(err, 256, "%s", stele_errmsg());
    return rc;
}

/* ------------------------------------------------------------ text templates */

static const char *const text_fields[] = {"stream", "category", "type", "id", "revision", "position", NULL};

int aws_text_template_check(const char *t, const char *path)
{
    for (const char *p = strstr(t, "{{"); p; p = strstr(p + 2, "{{")) {
        const char *e = strstr(p + 2, "}}");
        if (!e)
            return err_set(STELE_EINVAL, "%s: '{{' at byte %zu is not closed", path, (size_t)(p - t));
        size_t n = (size_t)(e - p - 2);
        const char *name = p + 2;
        int ok = (n > 5 && !memcmp(name, "data.", 5)) || (n > 9 && !memcmp(name, "metadata.", 9));
        for (size_t i = 0; text_fields[i] && !ok; i++)
            ok = strlen(text_fields[i]) == n && !memcmp(text_fields[i], name, n);
        if (!ok)
            return err_set(STELE_EINVAL,
                           "%s: unknown placeholder '{{%.*s}}' at byte %zu (known: stream category type id "
                           "revision position data.NAME metadata.NAME)",
                           path, (int)(n > 64 ? 64 : n), name, (size_t)(p - t));
        p = e;
    }
    return 0;
}

static int put_member(buf *b, json_t *doc, const char *name, size_t n)
{
    char key[256];
    if (!doc || n >= sizeof key)
        return 0;
    memcpy(key, name, n);
    key[n] = 0;
    json_t *v = json_object_get(doc, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v))
        return buf_append(b, json_string_value(v), json_string_length(v));
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    int rc = s ? buf_append(b, s, strlen(s)) : -1;
    free(s);
    return rc;
}

int aws_text_template_render(buf *b, const char *t, const stele_event *e, json_t *data_doc, json_t *meta_doc)
{
    int rc = 0;
    char num[40];
    for (const char *p; rc == 0 && (p = strstr(t, "{{"));) {
        const char *end = strstr(p + 2, "}}");
        const char *name = p + 2;
        size_t n = (size_t)(end - name);
        rc |= buf_append(b, t, (size_t)(p - t));
#define IS(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))
        if (IS("stream"))
            rc |= buf_append(b, e->stream, e->stream_len);
        else if (IS("category"))
            rc |= buf_append(b, e->stream, stream_category_len(e->stream, e->stream_len));
        else if (IS("type"))
            rc |= buf_append(b, e->type, e->type_len);
        else if (IS("id")) {
            stele_uuid_format(e->id, num);
            rc |= buf_append(b, num, 36);
        } else if (IS("revision") || IS("position")) {
            int k = snprintf(num, sizeof num, "%llu",
                             (unsigned long long)(IS("revision") ? e->revision : e->position));
            rc |= buf_append(b, num, (size_t)k);
        } else if (n > 5 && !memcmp(name, "data.", 5))
            rc |= put_member(b, data_doc, name + 5, n - 5);
        else if (n > 9 && !memcmp(name, "metadata.", 9))
            rc |= put_member(b, meta_doc, name + 9, n - 9);
#undef IS
        t = end + 2;
    }
    rc |= buf_append(b, t, strlen(t));
    return rc ? err_set(STELE_ENOMEM, "out of memory") : 0;
}
