/*
 * rule_def.c - a rule's definition: the JSON document PUT /rules/{name}
 * takes (docs/rules.md), checked whole and compiled before anything is
 * stored, and its normalized form (every default filled in), which is what
 * the store keeps in "$rules" and what GET shows (with the secret hidden).
 *
 *   {"pattern": {...},                                       required
 *    "source": {"streamPrefixes": [..], "categories": [..], "types": [..],
 *               "typePrefixes": [..], "streamRegex": "..", "typeRegex": "..",
 *               "tags": [..]},
 *    "target": {"type": "webhook", "url": "http://..", "secret": "..",
 *               "timeoutMs": 10000, "template": "..", "contentType": "..",
 *               "headers": {"X-A": "b"}}
 *            | {"type": "stream", "stream": "Audit", "mode": "copy"|"link"}
 *            | any other type of targets.c, parsed by its own file,
 *    "retry": {"maxAttempts": 10, "maxAgeSeconds": 3600,
 *              "backoffMs": 200, "maxBackoffMs": 60000},
 *    "partitionKey": "stream"|"category"|"type"|"none"|"data.F"|"metadata.F",
 *    "maxInFlight": 16, "maxBuffered": 1000,
 *    "start": "end"|"beginning"|position, "enabled": true,
 *    "description": ".."}
 *
 * Every error names the path of the offending member ("target.url: ...",
 * "retry.maxAttempts: ..."); pattern errors come from pattern_compile with
 * its own path, prefixed by "pattern.".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_int.h"

#define URL_MAX 2048u
#define SECRET_MAX 256u
#define TEMPLATE_MAX (64u << 10)
#define HEADERS_MAX 32u

int rule_name_check(const char *name)
{
    if (!name)
        return err_set(STELE_EINVAL, "rule name is NULL");
    size_t n = strnlen(name, STELE_RULE_NAME_MAX + 1);
    if (n == 0)
        return err_set(STELE_EINVAL, "rule name is empty");
    if (n > STELE_RULE_NAME_MAX)
        return err_set(STELE_EINVAL, "rule name is longer than %u bytes", STELE_RULE_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        if (!ok)
            return err_set(STELE_EINVAL,
                           "rule name '%s': byte %zu is not one of A-Z a-z 0-9 . _ -", name, i);
    }
    return 0;
}

rule_def *rule_def_ref(rule_def *d)
{
    if (d)
        atomic_fetch_add(&d->refs, 1);
    return d;
}

void rule_def_unref(rule_def *d)
{
    if (!d || atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    if (d->ops && d->ops->free_cfg)
        d->ops->free_cfg(d);
    json_decref(d->doc);
    pattern_free(d->pat);
    sub_filter_free(d->source);
    free(d->url);
    free(d->secret);
    free(d->tmpl);
    free(d->content_type);
    json_decref(d->headers);
    free(d->stream);
    free(d->pkey_field);
    free(d);
}

/* ------------------------------------------------------------ checks */

int rdef_only_keys(json_t *obj, const char *path, const char *const *keys)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        int known = 0;
        for (size_t i = 0; keys[i] && !known; i++)
            known = !strcmp(k, keys[i]);
        if (!known) {
            /* Name what is accepted ("type" goes without saying). */
            char list[512];
            size_t n = 0;
            list[0] = 0;
            for (size_t i = 0; keys[i]; i++) {
                if (!strcmp(keys[i], "type"))
                    continue;
                int w = snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", keys[i]);
                if (w < 0 || (size_t)w >= sizeof list - n)
                    break;
                n += (size_t)w;
            }
            return err_set(STELE_EINVAL, "%s%s%s: unknown member (known: %s)", path, *path ? "." : "",
                           k, list);
        }
    }
    return 0;
}

/* An optional integer member in [lo, hi]; *out keeps its default if absent. */
int rdef_get_uint(json_t *obj, const char *path, const char *key, uint64_t lo, uint64_t hi,
                  uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) < lo || (uint64_t)json_integer_value(v) > hi)
        return err_set(STELE_EINVAL, "%s%s%s: must be an integer from %llu to %llu", path,
                       *path ? "." : "", key, (unsigned long long)lo, (unsigned long long)hi);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int rdef_get_str(json_t *obj, const char *path, const char *key, size_t max, int required,
                 char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return err_set(STELE_EINVAL, "%s.%s: required", path, key);
        return 0;
    }
    if (!json_is_string(v))
        return err_set(STELE_EINVAL, "%s.%s: must be a string", path, key);
    size_t n = json_string_length(v);
    if (n == 0 || n > max)
        return err_set(STELE_EINVAL, "%s.%s: must be 1 to %zu bytes", path, key, max);
    if (strlen(json_string_value(v)) != n)
        return err_set(STELE_EINVAL, "%s.%s: contains a NUL character", path, key);
    if (!(*out = strdup(json_string_value(v))))
        return err_set(STELE_ENOMEM, "out of memory");
    return 0;
}

/* Placeholders a template may use. */
static const char *const placeholders[] = {"event", "id", "stream", "category", "type",
                                           "revision", "position", "created", "data",
                                           "metadata", "tags", "replay", NULL};

int rdef_check_template(const char *t)
{
    for (const char *p = strstr(t, "{{"); p; p = strstr(p + 2, "{{")) {
        const char *e = strstr(p + 2, "}}");
        if (!e)
            return err_set(STELE_EINVAL, "target.template: '{{' at byte %zu is not closed",
                           (size_t)(p - t));
        size_t n = (size_t)(e - p - 2);
        int ok = 0;
        for (size_t i = 0; placeholders[i] && !ok; i++)
            ok = strlen(placeholders[i]) == n && !memcmp(placeholders[i], p + 2, n);
        if (!ok)
            return err_set(STELE_EINVAL,
                           "target.template: unknown placeholder '{{%.*s}}' at byte %zu (known: "
                           "event id stream category type revision position created data "
                           "metadata tags replay)",
                           (int)(n > 64 ? 64 : n), p + 2, (size_t)(p - t));
        p = e;
    }
    return 0;
}

static int parse_target(json_t *t, rule_def *d)
{
    if (!t)
        return err_set(STELE_EINVAL, "target: required");
    if (!json_is_object(t))
        return err_set(STELE_EINVAL, "target: must be an object");
    json_t *type = json_object_get(t, "type");
    const char *ty = json_is_string(type) ? json_string_value(type) : NULL;
    if (!ty)
        return err_set(STELE_EINVAL, "target.type: required, one of %s", target_names());
    const target_ops *ops = target_find(ty);
    if (!ops)
        return err_set(STELE_EINVAL, "target.type: unknown target type '%s' (one of %s)", ty,
                       target_names());
    d->ops = ops;
    d->target = ops == &target_webhook ? TARGET_WEBHOOK
                : ops == &target_stream ? TARGET_STREAM : TARGET_OTHER;
    return ops->parse(t, d);
}

static int parse_source(json_t *s, rule_def *d)
{
    if (!s)
        return 0;
    if (!json_is_object(s))
        return err_set(STELE_EINVAL, "source: must be an object");
    static const char *const keys[] = {"streamPrefixes", "categories", "types", "typePrefixes",
                                       "streamRegex", "typeRegex", "tags", NULL};
    int rc = rdef_only_keys(s, "source", keys);
    if (rc)
        return rc;
    const char *lists[5] = {"streamPrefixes", "categories", "types", "typePrefixes", "tags"};
    const char **vals[5] = {0};
    size_t ns[5] = {0};
    for (int l = 0; l < 5 && rc == 0; l++) {
        json_t *a = json_object_get(s, lists[l]);
        if (!a)
            continue;
        if (!json_is_array(a)) {
            rc = err_set(STELE_EINVAL, "source.%s: must be an array of strings", lists[l]);
            break;
        }
        ns[l] = json_array_size(a);
        vals[l] = calloc(ns[l] ? ns[l] : 1, sizeof(char *));
        if (!vals[l]) {
            rc = err_set(STELE_ENOMEM, "out of memory");
            break;
        }
        for (size_t i = 0; i < ns[l]; i++) {
            json_t *x = json_array_get(a, i);
            if (!json_is_string(x)) {
                rc = err_set(STELE_EINVAL, "source.%s[%zu]: must be a string", lists[l], i);
                break;
            }
            vals[l][i] = json_string_value(x);
        }
    }
    const char *res[2] = {NULL, NULL};
    const char *rk[2] = {"streamRegex", "typeRegex"};
    for (int i = 0; i < 2 && rc == 0; i++) {
        json_t *x = json_object_get(s, rk[i]);
        if (x && !json_is_string(x))
            rc = err_set(STELE_EINVAL, "source.%s: must be a string", rk[i]);
        else if (x)
            res[i] = json_string_value(x);
    }
    if (rc == 0) {
        stele_filter f = {.stream_prefixes = vals[0], .n_stream_prefixes = ns[0],
                          .categories = vals[1], .n_categories = ns[1],
                          .types = vals[2], .n_types = ns[2],
                          .type_prefixes = vals[3], .n_type_prefixes = ns[3],
                          .tags = vals[4], .n_tags = ns[4],
                          .stream_regex = res[0], .type_regex = res[1],
                          .exclude_system = 1};
        if ((rc = sub_filter_new(&f, &d->source)))
            rc = err_set(rc, "source: %s", stele_errmsg());
    }
    for (int l = 0; l < 5; l++)
        free(vals[l]);
    return rc;
}

static int parse_pkey(json_t *v, rule_def *d)
{
    d->pkey = PKEY_STREAM;
    if (!v)
        return 0;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (!s)
        return err_set(STELE_EINVAL, "partitionKey: must be a string");
    static const char *const names[] = {"stream", "category", "type", "none"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) {
            d->pkey = i;
            return 0;
        }
    const char *field = !strncmp(s, "data.", 5) ? s + 5 : !strncmp(s, "metadata.", 9) ? s + 9 : NULL;
    if (!field || !*field || strlen(field) > 255 || strchr(field, '.'))
        return err_set(STELE_EINVAL,
                       "partitionKey: '%s' is not one of stream, category, type, none, "
                       "data.FIELD, metadata.FIELD (a top-level member)",
                       s);
    d->pkey = s[0] == 'd' ? PKEY_DATA : PKEY_METADATA;
    if (!(d->pkey_field = strdup(field)))
        return err_set(STELE_ENOMEM, "out of memory");
    return 0;
}

static int parse_doc(json_t *doc, rule_def *d)
{
    static const char *const keys[] = {"pattern", "source", "target", "retry", "partitionKey",
                                       "maxInFlight", "maxBuffered", "start", "enabled",
                                       "description", NULL};
    int rc = rdef_only_keys(doc, "", keys);
    if (rc)
        return rc;
    json_t *p = json_object_get(doc, "pattern");
    if (!p)
        return err_set(STELE_EINVAL, "pattern: required");
    if (!json_is_object(p))
        return err_set(STELE_EINVAL, "pattern: must be an object");
    char *ptext = json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!ptext)
        return err_set(STELE_ENOMEM, "out of memory");
    char perr[512] = "";
    rc = pattern_compile(ptext, strlen(ptext), &d->pat, perr, sizeof perr);
    free(ptext);
    if (rc && !strncmp(perr, "pattern", 7) && (perr[7] == ':' || perr[7] == '.' || perr[7] == '['))
        return err_set(rc, "%s", perr); /* the compiler named the root itself */
    if (rc)
        return err_set(rc, "pattern%s%s", perr[0] && perr[0] != '[' ? "." : "",
                       perr[0] ? perr : ": invalid");
    if ((rc = parse_source(json_object_get(doc, "source"), d)) ||
        (rc = parse_target(json_object_get(doc, "target"), d)) ||
        (rc = parse_pkey(json_object_get(doc, "partitionKey"), d)))
        return rc;
    json_t *r = json_object_get(doc, "retry");
    uint64_t attempts = 10, age_s = 3600, backoff = 200, backoff_max = 60000;
    if (r) {
        static const char *const rkeys[] = {"maxAttempts", "maxAgeSeconds", "backoffMs",
                                            "maxBackoffMs", NULL};
        if (!json_is_object(r))
            return err_set(STELE_EINVAL, "retry: must be an object");
        if ((rc = rdef_only_keys(r, "retry", rkeys)) ||
            (rc = rdef_get_uint(r, "retry", "maxAttempts", 1, 185, &attempts)) ||
            (rc = rdef_get_uint(r, "retry", "maxAgeSeconds", 1, 82800, &age_s)) ||
            (rc = rdef_get_uint(r, "retry", "backoffMs", 1, 3600000, &backoff)) ||
            (rc = rdef_get_uint(r, "retry", "maxBackoffMs", 1, 3600000, &backoff_max)))
            return rc;
        if (backoff_max < backoff)
            return err_set(STELE_EINVAL, "retry.maxBackoffMs: below retry.backoffMs");
    }
    d->max_attempts = (uint32_t)attempts;
    d->max_age_ms = age_s * 1000;
    d->backoff_ms = (uint32_t)backoff;
    d->backoff_max_ms = (uint32_t)backoff_max;
    uint64_t mif = 16, mbuf = 1000;
    if ((rc = rdef_get_uint(doc, "", "maxInFlight", 1, 1000, &mif)) ||
        (rc = rdef_get_uint(doc, "", "maxBuffered", 1, 10000, &mbuf)))
        return rc;
    if (mbuf < mif)
        return err_set(STELE_EINVAL, "maxBuffered: below maxInFlight");
    d->max_in_flight = (uint32_t)mif;
    d->max_buffered = (uint32_t)mbuf;
    json_t *st = json_object_get(doc, "start");
    d->start = STELE_END;
    if (json_is_string(st) && !strcmp(json_string_value(st), "beginning"))
        d->start = 0;
    else if (json_is_integer(st) && json_integer_value(st) >= 0)
        d->start = (uint64_t)json_integer_value(st);
    else if (st && !(json_is_string(st) && !strcmp(json_string_value(st), "end")))
        return err_set(STELE_EINVAL, "start: must be \"end\", \"beginning\" or a position");
    json_t *en = json_object_get(doc, "enabled");
    if (en && !json_is_boolean(en))
        return err_set(STELE_EINVAL, "enabled: must be true or false");
    d->enabled = !en || json_is_true(en);
    json_t *desc = json_object_get(doc, "description");
    if (desc && (!json_is_string(desc) || json_string_length(desc) > 1024))
        return err_set(STELE_EINVAL, "description: must be a string of at most 1024 bytes");
    return 0;
}

/* The normalized document: the input with every default written out. */
static int normalize(json_t *doc, const rule_def *d)
{
    json_t *t = json_object_get(doc, "target");
    int rc = d->ops->normalize ? d->ops->normalize(t, d) : 0;
    json_t *r = json_object();
    rc |= json_object_set_new(r, "maxAttempts", json_integer(d->max_attempts));
    rc |= json_object_set_new(r, "maxAgeSeconds", json_integer((json_int_t)(d->max_age_ms / 1000)));
    rc |= json_object_set_new(r, "backoffMs", json_integer(d->backoff_ms));
    rc |= json_object_set_new(r, "maxBackoffMs", json_integer(d->backoff_max_ms));
    rc |= json_object_set_new(doc, "retry", r);
    if (!json_object_get(doc, "partitionKey"))
        rc |= json_object_set_new(doc, "partitionKey", json_string("stream"));
    rc |= json_object_set_new(doc, "maxInFlight", json_integer(d->max_in_flight));
    rc |= json_object_set_new(doc, "maxBuffered", json_integer(d->max_buffered));
    if (!json_object_get(doc, "start"))
        rc |= json_object_set_new(doc, "start", json_string("end"));
    rc |= json_object_set_new(doc, "enabled", json_boolean(d->enabled));
    return rc ? err_set(STELE_ENOMEM, "out of memory") : 0;
}

int rule_def_from_doc(json_t *doc, rule_def **out)
{
    *out = NULL;
    if (!json_is_object(doc))
        return err_set(STELE_EINVAL, "the definition must be a JSON object");
    rule_def *d = calloc(1, sizeof *d);
    if (!d)
        return err_set(STELE_ENOMEM, "out of memory");
    atomic_store(&d->refs, 1);
    d->doc = json_incref(doc);
    int rc = parse_doc(doc, d);
    if (rc == 0)
        rc = normalize(doc, d);
    if (rc) {
        rule_def_unref(d);
        return rc;
    }
    *out = d;
    return 0;
}

int rule_def_parse(const char *json, size_t len, rule_def **out)
{
    *out = NULL;
    json_error_t je;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        return err_set(STELE_EINVAL, "the definition is not valid JSON: %s (at byte %d)", je.text,
                       je.position);
    int rc = rule_def_from_doc(doc, out);
    json_decref(doc);
    return rc;
}

char *rule_def_public_json(const rule_def *d)
{
    json_t *c = json_deep_copy(d->doc);
    if (!c)
        return NULL;
    json_t *t = json_object_get(c, "target");
    if (d->ops && d->ops->redact)
        d->ops->redact(t);
    char *s = json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(c);
    return s;
}

int rule_def_matches(const rule_def *d, const stele_event *e, pattern_input **in)
{
    if (e->stream_len && e->stream[0] == '$')
        return 0;
    if (d->target == TARGET_STREAM && !strcmp(e->stream, d->stream))
        return 0; /* never feed a rule its own output */
    if (d->source && !sub_filter_match(d->source, e))
        return 0;
    if (!*in) {
        if (pattern_input_new(e, in))
            return -1;
    } else {
        pattern_input_reset(*in, e);
    }
    return pattern_match(d->pat, *in);
}
