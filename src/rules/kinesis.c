/*
 * kinesis.c - the Amazon Kinesis Data Streams target: events go out with
 * PutRecords (AWS JSON 1.1, X-Amz-Target Kinesis_20131202.PutRecords).
 *
 * A record is
 *   Data          the event as reads render it (render.c), or the rule's
 *                 JSON template; base64 on the wire
 *   PartitionKey  the event's stream name by default, or the rule's
 *                 partitionKey text template ("{{category}}",
 *                 "{{data.orderId}}"); 1 to 256 characters
 * Batches keep Kinesis's limits: at most 500 records and 5 MiB (data plus
 * keys) per call, 1 MiB per record (a larger record fails at once, with
 * that reason, and is dead-lettered).
 *
 * Outcomes. PutRecords answers 200 even when some records failed; each
 * failed record carries ErrorCode/ErrorMessage. Failed records with
 * ProvisionedThroughputExceededException or InternalFailure are sent
 * again alone (only they) up to KIN_ROUNDS times with doubling backoff,
 * then handed back as retryable (the rule's retry policy takes over). A
 * whole call failing with throttling, a 5xx or a transport error is
 * retryable likewise; any other error (ResourceNotFoundException,
 * UnrecognizedClientException, ValidationException, AccessDenied...) is
 * final and dead-letters the events with the service's text.
 *
 * Duplicates: a record whose answer was lost (timeout, crash after the
 * call) is sent again, so Kinesis may hold it twice; consumers
 * deduplicate on the event's id, which is in every record's data. Order:
 * records of one partition key keep their order except when one fails
 * inside a batch and is retried after later ones were accepted (Kinesis
 * gives no order across a PutRecords batch's failures either).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "rules/aws_targets.h"
#include "rules/rules_int.h"

#define KIN_ROUNDS 4
#define KIN_PK_MAX 256u

struct kin_cfg {
    aws_conf aws;
    char *stream_name;
    char *pkey;     /* text template, NULL: the event's stream */
    char *tmpl;     /* JSON template for Data, NULL: the event */
};

struct kin_conn {
    const kin_cfg *cfg;
    aws_client *cli;
};

static const char *const kin_keys[] = {"type", "streamName", "partitionKey", "template", "endpoint", "region",
                                       "credentialsFile", "profile", "timeoutMs", NULL};

int kin_parse(json_t *t, kin_cfg **out)
{
    *out = NULL;
    int rc = rdef_only_keys(t, "target", kin_keys);
    if (rc)
        return rc;
    kin_cfg *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(STELE_ENOMEM, "out of memory");
    rc = aws_conf_parse(t, &c->aws);
    if (rc) {
        free(c);
        return rc;
    }
    json_t *sn = json_object_get(t, "streamName");
    const char *s = json_string_value(sn);
    size_t sl = s ? strlen(s) : 0;
    int bad = !s || sl == 0 || sl > 128;
    for (size_t i = 0; i < sl && !bad; i++)
        bad = !((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
                s[i] == '_' || s[i] == '-' || s[i] == '.');
    if (bad)
        rc = err_set(STELE_EINVAL, "target.streamName: required, 1 to 128 of a-z A-Z 0-9 _ - .");
    json_t *pk = json_object_get(t, "partitionKey");
    if (!rc && pk) {
        if (!json_is_string(pk) || json_string_length(pk) == 0 || json_string_length(pk) > 1024)
            rc = err_set(STELE_EINVAL, "target.partitionKey: must be a non-empty text template");
        else
            rc = aws_text_template_check(json_string_value(pk), "target.partitionKey");
    }
    json_t *tm = json_object_get(t, "template");
    if (!rc && tm) {
        if (!json_is_string(tm) || json_string_length(tm) == 0 || json_string_length(tm) > (64u << 10))
            rc = err_set(STELE_EINVAL, "target.template: must be a non-empty string of at most 64 KiB");
    }
    if (!rc && (!(c->stream_name = strdup(s)) || (pk && !(c->pkey = strdup(json_string_value(pk)))) ||
                (tm && !(c->tmpl = strdup(json_string_value(tm))))))
        rc = err_set(STELE_ENOMEM, "out of memory");
    if (rc) {
        kin_cfg_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void kin_cfg_free(kin_cfg *c)
{
    if (!c)
        return;
    aws_conf_clear(&c->aws);
    free(c->stream_name);
    free(c->pkey);
    free(c->tmpl);
    free(c);
}

int kin_open(const kin_cfg *c, kin_conn **out, char err[256])
{
    kin_conn *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, 256, "out of memory");
        return STELE_ENOMEM;
    }
    k->cfg = c;
    int rc = aws_conf_client(&c->aws, "kinesis", "application/x-amz-json-1.1", &k->cli, err);
    if (rc) {
        free(k);
        return rc;
    }
    *out = k;
    return 0;
}

void kin_close(kin_conn *k)
{
    if (!k)
        return;
    aws_client_free(k->cli);
    free(k);
}

aws_client *kin_client(kin_conn *k) { return k->cli; }

/* ------------------------------------------------------------ records */

typedef struct rec {
    size_t ev;      /* index into evs */
    char *data_b64; /* base64 of the Data */
    size_t data_len;
    char *pk;
    size_t pk_len;
} rec;

static int w_jstr(buf *b, const char *s, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    int rc = buf_append(b, "\"", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = buf_append(b, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hx[c >> 4], hx[c & 15]};
            rc = buf_append(b, e, 6);
        } else {
            rc = buf_append(b, &s[i], 1);
        }
    }
    return rc | buf_append(b, "\"", 1);
}

/* Build record r for event e; 0, or -1 with res set (final). */
static int make_record(const kin_cfg *c, const stele_event *e, int is_replay, rec *r, aws_result *res)
{
    buf data = {0}, pk = {0};
    int rc;
    if (c->tmpl) {
        rule_def tmp = {.tmpl = c->tmpl};
        rc = render_body(&data, &tmp, e, is_replay);
    } else {
        rc = render_event_json(&data, e, is_replay);
    }
    if (!rc && c->pkey) {
        json_t *dd = (e->flags & STELE_EVENT_JSON) && e->data_len ? json_loadb(e->data, e->data_len, 0, NULL) : NULL;
        json_t *md = (e->flags & STELE_META_JSON) && e->metadata_len
                         ? json_loadb(e->metadata, e->metadata_len, 0, NULL)
                         : NULL;
        rc = aws_text_template_render(&pk, c->pkey, e, dd, md);
        json_decref(dd);
        json_decref(md);
    } else if (!rc) {
        rc = buf_append(&pk, e->stream, e->stream_len);
    }
    if (rc) {
        res->outcome = AWS_RETRY;
        snprintf(res->error, sizeof res->error, "out of memory");
    } else if (pk.len == 0 || pk.len > KIN_PK_MAX) {
        res->outcome = AWS_FAIL;
        snprintf(res->error, sizeof res->error, "partition key of %zu bytes (Kinesis takes 1 to %u)", pk.len,
                 KIN_PK_MAX);
        rc = -1;
    } else if (data.len + pk.len > KIN_RECORD_BYTES) {
        res->outcome = AWS_FAIL;
        snprintf(res->error, sizeof res->error, "record of %zu bytes is over Kinesis's 1 MiB limit",
                 data.len + pk.len);
        rc = -1;
    } else if (!(r->data_b64 = malloc(4 * ((data.len + 2) / 3) + 1)) || !(r->pk = malloc(pk.len))) {
        res->outcome = AWS_RETRY;
        snprintf(res->error, sizeof res->error, "out of memory");
        rc = -1;
    } else {
        EVP_EncodeBlock((unsigned char *)r->data_b64, data.p ? data.p : (const uint8_t *)"", (int)data.len);
        r->data_len = data.len;
        memcpy(r->pk, pk.p, pk.len);
        r->pk_len = pk.len;
    }
    buf_free(&data);
    buf_free(&pk);
    return rc ? -1 : 0;
}

static void res_err(aws_result *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void res_err(aws_result *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->error, sizeof x->error, fmt, ap);
    va_end(ap);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One PutRecords of recs[idx[0..n)]. Fills res for each; puts the indices
 * to try again into again[] (*nagain). */
static void put_batch(kin_conn *k, rec *recs, const size_t *idx, size_t n, aws_result *res, size_t *again,
                      size_t *nagain)
{
    buf b = {0};
    int rc = buf_append(&b, "{\"StreamName\":", 14) |
             w_jstr(&b, k->cfg->stream_name, strlen(k->cfg->stream_name)) | buf_append(&b, ",\"Records\":[", 12);
    for (size_t i = 0; i < n && !rc; i++) {
        rec *r = &recs[idx[i]];
        rc = buf_append(&b, i ? ",{\"Data\":\"" : "{\"Data\":\"", i ? 10 : 9) |
             buf_append(&b, r->data_b64, strlen(r->data_b64)) | buf_append(&b, "\",\"PartitionKey\":", 17) |
             w_jstr(&b, r->pk, r->pk_len) | buf_append(&b, "}", 1);
    }
    rc |= buf_append(&b, "]}", 2);
    aws_resp resp;
    int call = rc ? -1 : aws_call(k->cli, "Kinesis_20131202.PutRecords", b.p, b.len, &resp);
    buf_free(&b);
    if (rc) {
        for (size_t i = 0; i < n; i++) {
            aws_result *x = &res[recs[idx[i]].ev];
            x->outcome = AWS_RETRY;
            x->kind = STELE_FAIL_OTHER;
            snprintf(x->error, sizeof x->error, "out of memory");
        }
        return;
    }
    json_t *doc = NULL, *arr = NULL;
    if (call == 0 && resp.status == 200) {
        doc = json_loadb((const char *)resp.body.p, resp.body.len, 0, NULL);
        arr = json_object_get(doc, "Records");
        if (!json_is_array(arr) || json_array_size(arr) != n) {
            call = -1;
            snprintf(resp.message, sizeof resp.message, "PutRecords answer without one result per record");
        }
    }
    for (size_t i = 0; i < n; i++) {
        aws_result *x = &res[recs[idx[i]].ev];
        if (call != 0) { /* transport: retry */
            x->outcome = AWS_RETRY;
            x->kind = STELE_FAIL_CONNECT;
            res_err(x, "kinesis: %s", resp.message);
            continue;
        }
        if (resp.status != 200) {
            int retry = aws_error_retryable(resp.status, resp.type);
            x->outcome = retry ? AWS_RETRY : AWS_FAIL;
            x->kind = aws_fail_kind(resp.status, resp.type);
            res_err(x, "kinesis %ld %s: %s", resp.status, resp.type, resp.message);
            if (retry)
                again[(*nagain)++] = idx[i];
            continue;
        }
        json_t *one = json_array_get(arr, i);
        const char *code = json_string_value(json_object_get(one, "ErrorCode"));
        if (!code) {
            x->outcome = AWS_DELIVERED;
            x->error[0] = 0;
            continue;
        }
        const char *msg = json_string_value(json_object_get(one, "ErrorMessage"));
        int retry = aws_error_retryable(500, code) || !strcmp(code, "InternalFailure");
        x->outcome = retry ? AWS_RETRY : AWS_FAIL;
        x->kind = retry ? STELE_FAIL_HTTP_429 : STELE_FAIL_OTHER;
        snprintf(x->error, sizeof x->error, "kinesis record %s: %s", code, msg ? msg : "");
        if (retry)
            again[(*nagain)++] = idx[i];
    }
    json_decref(doc);
    aws_resp_free(&resp);
}

void kin_deliver(kin_conn *k, const stele_event *const *evs, size_t n, int is_replay, aws_result *res)
{
    rec *recs = calloc(n ? n : 1, sizeof *recs);
    size_t *pend = calloc(n ? n : 1, sizeof *pend), *again = calloc(n ? n : 1, sizeof *again);
    size_t npend = 0;
    for (size_t i = 0; i < n; i++) {
        res[i] = (aws_result){.outcome = AWS_NOT_TRIED, .retry_after_ms = -1};
        if (!recs || !pend || !again) {
            res[i].outcome = AWS_RETRY;
            snprintf(res[i].error, sizeof res[i].error, "out of memory");
            continue;
        }
        recs[i].ev = i;
        if (make_record(k->cfg, evs[i], is_replay, &recs[i], &res[i]) == 0)
            pend[npend++] = i;
    }
    for (int round = 0; round < KIN_ROUNDS && npend; round++) {
        if (round)
            sleep_ms(50L << round); /* 100, 200, 400 ms */
        size_t nagain = 0, start = 0;
        while (start < npend) {
            size_t bytes = 0, cnt = 0;
            while (start + cnt < npend && cnt < KIN_BATCH_RECORDS) {
                rec *r = &recs[pend[start + cnt]];
                size_t sz = r->data_len + r->pk_len;
                if (cnt && bytes + sz > KIN_BATCH_BYTES)
                    break;
                bytes += sz;
                cnt++;
            }
            put_batch(k, recs, pend + start, cnt, res, again, &nagain);
            start += cnt;
        }
        /* Only a throttled or failed-inside-the-batch subset goes again; a
         * transport error is left to the engine's backoff (the endpoint
         * may be down for a while). */
        size_t keep = 0;
        for (size_t i = 0; i < nagain; i++)
            again[keep++] = again[i];
        memcpy(pend, again, keep * sizeof *pend);
        npend = keep;
    }
    for (size_t i = 0; i < npend; i++)
        if (res[recs[pend[i]].ev].outcome == AWS_RETRY)
            res[recs[pend[i]].ev].retry_after_ms = 1000;
    for (size_t i = 0; recs && i < n; i++) {
        free(recs[i].data_b64);
        free(recs[i].pk);
    }
    free(recs);
    free(pend);
    free(again);
}

/* ------------------------------------------------------------ the target */

static int kt_parse(json_t *t, rule_def *d)
{
    kin_cfg *c = NULL;
    d->target = TARGET_OTHER;
    int rc = kin_parse(t, &c);
    d->tcfg = c;
    return rc;
}

static void kt_free(rule_def *d)
{
    kin_cfg_free(d->tcfg);
    d->tcfg = NULL;
}

static int kt_open(const rule_def *d, stele_db *db, const char *rule_name, void **conn, char err[256])
{
    (void)db;
    (void)rule_name;
    kin_conn *k = NULL;
    int rc = kin_open(d->tcfg, &k, err);
    *conn = k;
    return rc;
}

static void kt_deliver(void *conn, const rule_def *d, const stele_event *const *evs, size_t n, uint64_t replay_id,
                       tgt_result *res)
{
    (void)d;
    aws_result *ar = calloc(n ? n : 1, sizeof *ar);
    if (!ar) {
        for (size_t i = 0; i < n; i++) {
            res[i].outcome = TGT_RETRY;
            res[i].kind = STELE_FAIL_OTHER;
            snprintf(res[i].error, sizeof res[i].error, "out of memory");
        }
        return;
    }
    kin_deliver(conn, evs, n, replay_id != 0, ar);
    for (size_t i = 0; i < n; i++) {
        res[i].outcome = ar[i].outcome == AWS_DELIVERED ? TGT_DELIVERED
                         : ar[i].outcome == AWS_RETRY   ? TGT_RETRY
                         : ar[i].outcome == AWS_FAIL    ? TGT_FAIL
                                                        : TGT_NOT_TRIED;
        res[i].kind = ar[i].kind;
        res[i].retry_after_ms = ar[i].retry_after_ms;
        memcpy(res[i].error, ar[i].error, sizeof res[i].error);
    }
    free(ar);
}

static void kt_close(void *conn) { kin_close(conn); }

const target_ops target_kinesis = {
    .type = "kinesis",
    .parse = kt_parse,
    .free_cfg = kt_free,
    .open = kt_open,
    .deliver = kt_deliver,
    .close = kt_close,
    .batch_max = KIN_BATCH_RECORDS,
};
