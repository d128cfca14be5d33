/*
 * ddb_api.c - the DynamoDB backend's calls and tables: a small pool of
 * SigV4-signed HTTP clients (src/rules/aws_http.c, one kept-alive
 * connection each), DynamoDB attribute values in and out of jansson, the
 * tables' creation (`stele migrate` and the first open), and the stream
 * items every other part reads.
 *
 * Errors. A call that cannot reach DynamoDB (connection refused, timeout)
 * fails with STELE_EIO and a message that names the endpoint; throttling
 * and 5xx answers are retried a few times with exponential back-off and
 * then fail with STELE_EBUSY; any other refusal is STELE_EINTERNAL with
 * DynamoDB's own type and message. Nothing is retried blindly where the
 * outcome matters: a TransactWriteItems whose answer was lost may have
 * committed, and the writer (ddb.c) re-reads before it tries again.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/ddb_int.h"
#include "backend/visibility.h"
#include "util/util.h"

/* ------------------------------------------------------------- calls */

static aws_client *take(ddb *D)
{
    pthread_mutex_lock(&D->cmu);
    while (D->nfree == 0)
        pthread_cond_wait(&D->ccv, &D->cmu);
    aws_client *c = D->clients[--D->nfree];
    pthread_mutex_unlock(&D->cmu);
    return c;
}

static void give(ddb *D, aws_client *c)
{
    pthread_mutex_lock(&D->cmu);
    D->clients[D->nfree++] = c;
    pthread_cond_signal(&D->ccv);
    pthread_mutex_unlock(&D->cmu);
}

int ddb_call(ddb *D, const char *op, json_t *req, json_t **resp, char type[128])
{
    if (resp)
        *resp = NULL;
    if (type)
        type[0] = 0;
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!body)
        return err_set(STELE_ENOMEM, "out of memory");
    char target[64];
    snprintf(target, sizeof target, "DynamoDB_20120810.%s", op);
    size_t len = strlen(body);
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        aws_resp r;
        aws_client *c = take(D);
        int t = aws_call(c, target, body, len, &r);
        give(D, c);
        if (t < 0) {
            atomic_store(&D->down, 1);
            rc = err_set(STELE_EIO, "dynamodb %s at %s: %s", op, D->endpoint, r.message);
            aws_resp_free(&r);
            break;
        }
        atomic_store(&D->down, 0);
        if (r.status >= 200 && r.status < 300) {
            if (resp) {
                json_error_t je;
                *resp = json_loadb((const char *)r.body.p, r.body.len, 0, &je);
                if (!*resp)
                    rc = err_set(STELE_EINTERNAL, "dynamodb %s: unreadable answer: %s", op, je.text);
            }
            aws_resp_free(&r);
            break;
        }
        if (type)
            snprintf(type, 128, "%s", r.type);
        if (aws_error_retryable(r.status, r.type) && strcmp(r.type, "TransactionCanceledException") &&
            attempt < 5) {
            aws_resp_free(&r);
            atomic_fetch_add(&D->retries, 1);
            usleep((useconds_t)(20000u << attempt));
            continue;
        }
        if (!strcmp(r.type, "TransactionCanceledException") && resp)
            *resp = json_loadb((const char *)r.body.p, r.body.len, 0, NULL);
        if (aws_error_retryable(r.status, r.type) && strcmp(r.type, "TransactionCanceledException"))
            rc = err_set(STELE_EBUSY, "dynamodb %s: %s: %s (after retries)", op, r.type, r.message);
        else
            rc = err_set(STELE_EINTERNAL, "dynamodb %s: %s: %s", op, r.type[0] ? r.type : "error",
                         r.message);
        aws_resp_free(&r);
        break;
    }
    free(body);
    return rc;
}

int ddb_pages(ddb *D, const char *op, json_t *req, int (*fn)(void *ctx, json_t *items), void *ctx)
{
    int rc = 0;
    for (;;) {
        json_t *resp;
        if ((rc = ddb_call(D, op, json_incref(req), &resp, NULL)))
            break;
        rc = fn(ctx, json_object_get(resp, "Items"));
        json_t *lek = json_object_get(resp, "LastEvaluatedKey");
        if (rc == 0 && lek)
            json_object_set(req, "ExclusiveStartKey", lek);
        json_decref(resp);
        if (rc || !lek)
            break;
    }
    json_decref(req);
    return rc < 0 ? rc : 0;
}

void ddb_count_capacity(ddb *D, json_t *resp, int write)
{
    json_t *cc = json_object_get(resp, "ConsumedCapacity");
    double units = 0;
    if (json_is_array(cc)) {
        size_t i;
        json_t *c;
        json_array_foreach(cc, i, c) units += json_number_value(json_object_get(c, "CapacityUnits"));
    } else if (cc) {
        units = json_number_value(json_object_get(cc, "CapacityUnits"));
    }
    atomic_fetch_add(write ? &D->wcu_milli : &D->rcu_milli, (uint64_t)(units * 1000.0 + 0.5));
}

/* ------------------------------------------------------ attribute values */

json_t *ddb_s(const char *s, size_t n)
{
    return json_pack("{s:s%}", "S", s, n);
}

json_t *ddb_n(int64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)v);
    return json_pack("{s:s}", "N", b);
}

json_t *ddb_nu(uint64_t v)
{
    if (v == UINT64_MAX)
        return ddb_n(-1);
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return json_pack("{s:s}", "N", b);
}

json_t *ddb_b(const void *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    json_t *v = json_pack("{s:s}", "B", out);
    free(out);
    return v;
}

static json_t *attr(json_t *item, const char *name, const char *t)
{
    json_t *a = json_object_get(item, name);
    return a ? json_object_get(a, t) : NULL;
}

int ddb_get_n(json_t *item, const char *name, int64_t *out)
{
    json_t *v = attr(item, name, "N");
    if (!v)
        return STELE_ENOTFOUND;
    const char *s = json_string_value(v);
    if (!s)
        return STELE_ECORRUPT;
    char *end;
    *out = strtoll(s, &end, 10);
    return *end ? STELE_ECORRUPT : 0;
}

uint64_t ddb_get_nu(json_t *item, const char *name)
{
    json_t *v = attr(item, name, "N");
    const char *s = v ? json_string_value(v) : NULL;
    if (!s || s[0] == '-')
        return UINT64_MAX;
    return strtoull(s, NULL, 10);
}

const char *ddb_get_s(json_t *item, const char *name, size_t *len)
{
    json_t *v = attr(item, name, "S");
    if (!v || !json_is_string(v))
        return NULL;
    if (len)
        *len = json_string_length(v);
    return json_string_value(v);
}

int ddb_get_b(json_t *item, const char *name, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    json_t *v = attr(item, name, "B");
    if (!v)
        return 0;
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;
    if (!s || n % 4)
        return err_set(STELE_ECORRUPT, "dynamodb: attribute %s is not base64", name);
    uint8_t *p = malloc(n / 4 * 3 + 1);
    if (!p)
        return err_set(STELE_ENOMEM, "out of memory");
    int m = EVP_DecodeBlock(p, (const unsigned char *)s, (int)n);
    if (m < 0) {
        free(p);
        return err_set(STELE_ECORRUPT, "dynamodb: attribute %s is not base64", name);
    }
    /* EVP_DecodeBlock counts the padding's zero bytes. */
    if (n && s[n - 1] == '=')
        m--;
    if (n > 1 && s[n - 2] == '=')
        m--;
    p[m] = 0;
    *out = p;
    *len = (size_t)m;
    return 0;
}

/* ------------------------------------------------------------ streams */

void ddb_state_parse(json_t *item, dstate *st)
{
    memset(st, 0, sizeof *st);
    st->last = st->last_pos = st->md_version = UINT64_MAX;
    if (!item)
        return;
    st->found = 1;
    int64_t v;
    st->ver = ddb_get_n(item, "ver", &v) == 0 ? (uint64_t)v : 0;
    st->last = ddb_get_nu(item, "lastRevision");
    st->last_pos = ddb_get_nu(item, "lastPosition");
    st->tb = ddb_get_n(item, "truncateBefore", &v) == 0 ? (uint64_t)v : 0;
    st->deleted = ddb_get_n(item, "deleted", &v) == 0 && v;
    st->tombstoned = ddb_get_n(item, "tombstoned", &v) == 0 && v;
    st->md_version = ddb_get_nu(item, "metaVersion");
    st->max_age = ddb_get_n(item, "maxAge", &v) == 0 ? (uint64_t)v : 0;
    st->max_count = ddb_get_n(item, "maxCount", &v) == 0 ? (uint64_t)v : 0;
    st->md_tb = ddb_get_n(item, "metaTruncateBefore", &v) == 0 ? (uint64_t)v : 0;
    st->max_snaps = ddb_get_n(item, "maxSnapshots", &v) == 0 ? (uint32_t)v : 0;
    if (ddb_get_b(item, "custom", &st->custom, &st->custom_len))
        err_clear();
}

void ddb_state_free(dstate *st)
{
    free(st->custom);
    st->custom = NULL;
}

int ddb_state_get(ddb *D, const char *stream, size_t len, dstate *st)
{
    json_t *resp;
    int rc = ddb_call(D, "GetItem",
                      json_pack("{s:s, s:{s:o}, s:b}", "TableName", D->t_streams, "Key", "stream",
                                ddb_s(stream, len), "ConsistentRead", 1),
                      &resp, NULL);
    if (rc)
        return rc;
    ddb_state_parse(json_object_get(resp, "Item"), st);
    json_decref(resp);
    return 0;
}

int ddb_seq_get(ddb *D, uint64_t *next)
{
    json_t *resp;
    int rc = ddb_call(D, "GetItem",
                      json_pack("{s:s, s:{s:o}, s:b}", "TableName", D->t_streams, "Key", "stream",
                                ddb_s(DDB_SEQ_KEY, strlen(DDB_SEQ_KEY)), "ConsistentRead", 1),
                      &resp, NULL);
    if (rc)
        return rc;
    json_t *it = json_object_get(resp, "Item");
    int64_t v = 0;
    *next = it && ddb_get_n(it, "next", &v) == 0 ? (uint64_t)v : 0;
    json_decref(resp);
    return 0;
}

uint64_t ddb_visible_rev(const dstate *st)
{
    if (!st->found || st->deleted || st->last == UINT64_MAX)
        return STELE_NONE;
    return st->last;
}

/* The rule every backend shares (visibility.c, docs/streams.md). */
static stream_vis vis_of(const dstate *st)
{
    return (stream_vis){.last_rev = st->last,
                        .truncate_before = st->deleted || st->tb ? st->tb : 0,
                        .tombstoned = st->tombstoned,
                        .max_age_us = st->max_age,
                        .max_count = st->max_count,
                        .meta_tb = st->md_tb};
}

uint64_t ddb_stream_start(const dstate *st)
{
    stream_vis v = vis_of(st);
    return vis_stream_start(&v);
}

int ddb_event_visible(const dstate *st, uint64_t rev, int64_t created, int64_t now)
{
    stream_vis v = vis_of(st);
    return vis_event_visible(&v, rev, created, now);
}

/* ------------------------------------------------------------- tables */

static json_t *keydef(const char *h, const char *r)
{
    json_t *k = json_pack("[{s:s, s:s}]", "AttributeName", h, "KeyType", "HASH");
    if (r)
        json_array_append_new(k, json_pack("{s:s, s:s}", "AttributeName", r, "KeyType", "RANGE"));
    return k;
}

static json_t *gsi(const char *name, const char *h)
{
    return json_pack("{s:s, s:o, s:{s:s}}", "IndexName", name, "KeySchema", keydef(h, "timePos"),
                     "Projection", "ProjectionType", "ALL");
}

/* A view index: only the keys (the events are then read consistently). */
static json_t *gsi_keys(const char *name, const char *h, const char *r)
{
    return json_pack("{s:s, s:o, s:{s:s}}", "IndexName", name, "KeySchema", keydef(h, r), "Projection",
                     "ProjectionType", "KEYS_ONLY");
}

/* Wait until the table and its indexes are ACTIVE (at once on DynamoDB
 * Local); *desc (if not NULL) gets the last description. */
static int wait_active(ddb *D, const char *table, json_t **desc)
{
    for (int i = 0; i < 3000; i++) {
        json_t *resp;
        int rc = ddb_call(D, "DescribeTable", json_pack("{s:s}", "TableName", table), &resp, NULL);
        if (rc)
            return rc;
        json_t *t = json_object_get(resp, "Table");
        const char *s = json_string_value(json_object_get(t, "TableStatus"));
        int active = s && !strcmp(s, "ACTIVE");
        size_t k;
        json_t *ix;
        json_array_foreach(json_object_get(t, "GlobalSecondaryIndexes"), k, ix) {
            const char *is = json_string_value(json_object_get(ix, "IndexStatus"));
            active = active && (!is || !strcmp(is, "ACTIVE"));
        }
        if (active) {
            if (desc)
                *desc = resp;
            else
                json_decref(resp);
            return 0;
        }
        json_decref(resp);
        usleep(200000);
    }
    return err_set(STELE_EIO, "dynamodb: table %s did not become ACTIVE", table);
}

/* A table created by an earlier version lacks the newer indexes: add each
 * missing one (UpdateTable takes one at a time; DynamoDB backfills it). */
static int add_missing_indexes(ddb *D, const char *table, json_t *want, json_t *attrs)
{
    json_t *desc;
    int rc = wait_active(D, table, &desc);
    if (rc)
        return rc;
    size_t i;
    json_t *w;
    json_array_foreach(want, i, w) {
        const char *name = json_string_value(json_object_get(w, "IndexName"));
        int have = 0;
        size_t k;
        json_t *ix;
        json_array_foreach(json_object_get(json_object_get(desc, "Table"), "GlobalSecondaryIndexes"), k, ix)
            have |= !strcmp(json_string_value(json_object_get(ix, "IndexName")), name);
        if (have)
            continue;
        /* The definitions of the index's key attributes only. */
        json_t *defs = json_array(), *ks;
        size_t a, b;
        json_t *ad;
        json_array_foreach(json_object_get(w, "KeySchema"), a, ks) {
            json_array_foreach(attrs, b, ad) {
                if (json_equal(json_object_get(ad, "AttributeName"), json_object_get(ks, "AttributeName")))
                    json_array_append(defs, ad);
            }
        }
        rc = ddb_call(D, "UpdateTable",
                      json_pack("{s:s, s:o, s:[{s:{s:O, s:O, s:O}}]}", "TableName", table, "AttributeDefinitions",
                                defs, "GlobalSecondaryIndexUpdates", "Create", "IndexName",
                                json_object_get(w, "IndexName"), "KeySchema", json_object_get(w, "KeySchema"),
                                "Projection", json_object_get(w, "Projection")),
                      NULL, NULL);
        if (rc == 0)
            rc = wait_active(D, table, NULL);
        if (rc)
            break;
    }
    json_decref(desc);
    return rc;
}

static int create(ddb *D, const char *table, json_t *req)
{
    char type[128];
    json_object_set_new(req, "TableName", json_string(table));
    json_object_set_new(req, "BillingMode", json_string("PAY_PER_REQUEST"));
    json_t *want = json_incref(json_object_get(req, "GlobalSecondaryIndexes"));
    json_t *attrs = json_incref(json_object_get(req, "AttributeDefinitions"));
    int rc = ddb_call(D, "CreateTable", req, NULL, type);
    if (rc && !strcmp(type, "ResourceInUseException")) {
        err_clear();
        rc = want ? add_missing_indexes(D, table, want, attrs) : 0;
    }
    json_decref(want);
    json_decref(attrs);
    return rc ? rc : wait_active(D, table, NULL);
}

#define ATTR(n, t) json_pack("{s:s, s:s}", "AttributeName", n, "AttributeType", t)

int ddb_migrate(ddb *D)
{
    int rc;
    json_t *ev = json_pack(
        "{s:[o,o,o,o,o,o,o,o,o,o,o,o,o], s:o, s:[o,o,o,o,o,o,o,o,o]}", "AttributeDefinitions",
        ATTR("stream", "S"), ATTR("revision", "N"), ATTR("eventType", "S"), ATTR("category", "S"),
        ATTR("actor", "S"), ATTR("timePos", "N"), ATTR("correlationId", "S"), ATTR("causationId", "S"),
        ATTR("ceRev", "N"), ATTR("etRev", "N"), ATTR("bcRev", "N"), ATTR("nk", "S"), ATTR("streamNo", "N"),
        "KeySchema", keydef("stream", "revision"), "GlobalSecondaryIndexes", gsi("byType", "eventType"),
        gsi("byCategory", "category"), gsi("byActor", "actor"), gsi("byCorrelation", "correlationId"),
        gsi("byCausation", "causationId"), gsi_keys("viewCategory", "category", "ceRev"),
        gsi_keys("viewType", "eventType", "etRev"), gsi_keys("viewCorrelation", "correlationId", "bcRev"),
        gsi_keys("viewStreams", "nk", "streamNo"));
    if ((rc = create(D, D->t_events, ev)))
        return rc;
    /* byName: streams (nk "s") and the view counters of categories ("c")
     * and types ("t") in byte order of their keys, for stele_list_names. */
    if ((rc = create(D, D->t_streams,
                     json_pack("{s:[o,o], s:o, s:[{s:s, s:o, s:{s:s, s:[s,s,s,s,s]}}]}", "AttributeDefinitions",
                               ATTR("stream", "S"), ATTR("nk", "S"), "KeySchema", keydef("stream", NULL),
                               "GlobalSecondaryIndexes", "IndexName", "byName", "KeySchema",
                               keydef("nk", "stream"), "Projection", "ProjectionType", "INCLUDE",
                               "NonKeyAttributes", "lastRevision", "lastPosition", "deleted", "tombstoned",
                               "next"))))
        return rc;
    if ((rc = create(D, D->t_ids,
                     json_pack("{s:[o], s:o}", "AttributeDefinitions", ATTR("eventId", "S"),
                               "KeySchema", keydef("eventId", NULL)))))
        return rc;
    if ((rc = create(D, D->t_feed,
                     json_pack("{s:[o,o], s:o}", "AttributeDefinitions", ATTR("bucket", "N"),
                               ATTR("position", "N"), "KeySchema", keydef("bucket", "position")))))
        return rc;
    return create(D, D->t_snaps,
                  json_pack("{s:[o,o], s:o}", "AttributeDefinitions", ATTR("stream", "S"),
                            ATTR("revision", "N"), "KeySchema", keydef("stream", "revision")));
}
