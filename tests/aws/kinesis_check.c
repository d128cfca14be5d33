/*
 * kinesis_check.c - drives the Kinesis target (src/rules/kinesis.c)
 * against kinesalite for tests/aws/test_kinesis.sh, which starts, stops
 * and restarts kinesalite between the steps:
 *   setup STREAM           create STREAM (2 shards), wait until ACTIVE
 *   put STREAM FROM COUNT  deliver events FROM..FROM+COUNT-1, handing the
 *                          engine's retryable ones back until all are in
 *   big STREAM FROM        8 events of ~900 KiB: batches must split at 5 MiB
 *   down                   the endpoint is down: every event retryable,
 *                          with the transport's error text
 *   errors STREAM          a missing stream and an oversized record are
 *                          final with the service's / Stele's reason; no
 *                          credentials fail at open with a message
 *   wrongcreds STREAM      the endpoint rejects the signature: final, with
 *                          the service's text, no secret in it
 *   dump STREAM            print "n partitionkey stream type" per record
 *   check STREAM TOTAL [allow-dups]  read every shard back: each event
 *                          0..TOTAL-1 there, once (or at least once with
 *                          allow-dups), partition key = its stream
 * Events: stream "order-(i % 7)", type "OrderPlaced", data {"n": i}.
 * Exit 0 on success; messages on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "rules/aws_targets.h"

static int failures;
static int dump_mode; /* "dump": print every record, check nothing */
#define EXPECT(c, ...)                                                                                 \
    do {                                                                                               \
        if (!(c)) {                                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c);                               \
            fprintf(stderr, __VA_ARGS__);                                                              \
            fprintf(stderr, "\n");                                                                     \
            failures++;                                                                                \
        }                                                                                              \
    } while (0)

typedef struct evbox {
    stele_event e;
    char stream[32], data[64];
    char *big;
} evbox;

static void make_event(evbox *b, long i, size_t big)
{
    memset(b, 0, sizeof *b);
    snprintf(b->stream, sizeof b->stream, "order-%ld", i % 7);
    if (big) {
        b->big = malloc(big + 64);
        int n = snprintf(b->big, 64, "{\"n\":%ld,\"pad\":\"", i);
        memset(b->big + n, 'x', big);
        memcpy(b->big + n + big, "\"}", 3);
        b->e.data = b->big;
        b->e.data_len = strlen(b->big);
    } else {
        b->e.data_len = (size_t)snprintf(b->data, sizeof b->data, "{\"n\":%ld}", i);
        b->e.data = b->data;
    }
    b->e.stream = b->stream;
    b->e.stream_len = strlen(b->stream);
    b->e.type = "OrderPlaced";
    b->e.type_len = 11;
    b->e.flags = STELE_EVENT_JSON;
    b->e.revision = (uint64_t)(i / 7);
    b->e.position = (uint64_t)i + 1;
    b->e.created_us = 1700000000000000LL;
    for (int k = 0; k < 8; k++)
        b->e.id[k] = (uint8_t)(i >> (8 * k));
    b->e.id[8] = 0x80;
    b->e.id[6] = 0x40;
}

static kin_cfg *cfg_for(const char *stream, const char *extra)
{
    char js[1024];
    snprintf(js, sizeof js, "{\"type\":\"kinesis\",\"streamName\":\"%s\",\"endpoint\":\"%s\",\"region\":\"us-east-1\"%s}",
             stream, getenv("KINESIS_ENDPOINT"), extra ? extra : "");
    json_t *t = json_loads(js, 0, NULL);
    kin_cfg *c = NULL;
    int rc = kin_parse(t, &c);
    json_decref(t);
    if (rc) {
        fprintf(stderr, "kin_parse: %s\n", stele_errmsg());
        exit(2);
    }
    return c;
}

static json_t *call(aws_client *a, const char *op, json_t *req, aws_resp *r)
{
    char target[96];
    snprintf(target, sizeof target, "Kinesis_20131202.%s", op);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int rc = aws_call(a, target, body, strlen(body), r);
    free(body);
    if (rc || r->status != 200)
        return NULL;
    return json_loadb((const char *)r->body.p, r->body.len, 0, NULL);
}

static int setup(kin_conn *k, const char *stream)
{
    aws_resp r;
    json_t *j = call(kin_client(k), "CreateStream", json_pack("{s:s,s:i}", "StreamName", stream, "ShardCount", 2), &r);
    EXPECT(r.status == 200, "CreateStream: %ld %s %s", r.status, r.type, r.message);
    json_decref(j);
    aws_resp_free(&r);
    for (int i = 0; i < 200; i++) {
        j = call(kin_client(k), "DescribeStream", json_pack("{s:s}", "StreamName", stream), &r);
        const char *st = json_string_value(json_object_get(json_object_get(j, "StreamDescription"), "StreamStatus"));
        int active = st && !strcmp(st, "ACTIVE");
        json_decref(j);
        aws_resp_free(&r);
        if (active)
            return 0;
        usleep(100000);
    }
    EXPECT(0, "stream %s never became ACTIVE", stream);
    return -1;
}

/* Deliver [from, from+count) in calls of up to 700, re-handing retryable
 * ones back like the engine does, until none is left (bounded). */
static void put(kin_conn *k, long from, long count, size_t big)
{
    long *todo = malloc(sizeof(long) * (size_t)count);
    size_t ntodo = 0;
    for (long i = 0; i < count; i++)
        todo[ntodo++] = from + i;
    size_t retried = 0;
    for (int round = 0; ntodo && round < 100; round++) {
        size_t nleft = 0;
        for (size_t s = 0; s < ntodo; s += 700) {
            size_t n = ntodo - s < 700 ? ntodo - s : 700;
            evbox *bx = calloc(n, sizeof *bx);
            const stele_event **evs = calloc(n, sizeof *evs);
            aws_result *res = calloc(n, sizeof *res);
            for (size_t i = 0; i < n; i++) {
                make_event(&bx[i], todo[s + i], big);
                evs[i] = &bx[i].e;
            }
            kin_deliver(k, evs, n, 0, res);
            for (size_t i = 0; i < n; i++) {
                EXPECT(res[i].outcome == AWS_DELIVERED || res[i].outcome == AWS_RETRY, "event %ld: %d %s",
                       todo[s + i], res[i].outcome, res[i].error);
                if (res[i].outcome == AWS_RETRY) {
                    todo[nleft++] = todo[s + i]; /* nleft <= s + i: safe in place */
                    retried++;
                }
                free(bx[i].big);
            }
            free(bx);
            free(evs);
            free(res);
        }
        ntodo = nleft;
        if (ntodo)
            usleep(200000);
    }
    EXPECT(ntodo == 0, "%zu events never delivered", ntodo);
    printf("put %ld..%ld: delivered, %zu retried\n", from, from + count - 1, retried);
    free(todo);
}

static void down(kin_conn *k)
{
    evbox b[3];
    const stele_event *evs[3];
    aws_result res[3];
    for (int i = 0; i < 3; i++) {
        make_event(&b[i], i, 0);
        evs[i] = &b[i].e;
    }
    kin_deliver(k, evs, 3, 0, res);
    for (int i = 0; i < 3; i++)
        EXPECT(res[i].outcome == AWS_RETRY && res[i].error[0], "down: %d %s", res[i].outcome, res[i].error);
    printf("down: retryable: %s\n", res[0].error);
}

static void errors(const char *stream)
{
    kin_cfg *c = cfg_for("no-such-stream", NULL);
    kin_conn *k = NULL;
    char err[256];
    EXPECT(kin_open(c, &k, err) == 0, "%s", err);
    evbox b;
    make_event(&b, 1, 0);
    const stele_event *ev = &b.e;
    aws_result res;
    kin_deliver(k, &ev, 1, 0, &res);
    EXPECT(res.outcome == AWS_FAIL && strstr(res.error, "ResourceNotFound"), "missing stream: %d %s", res.outcome,
           res.error);
    printf("missing stream: %s\n", res.error);
    kin_close(k);
    kin_cfg_free(c);

    c = cfg_for(stream, NULL);
    EXPECT(kin_open(c, &k, err) == 0, "%s", err);
    make_event(&b, 1, (1u << 20) + 10);
    kin_deliver(k, &ev, 1, 0, &res);
    EXPECT(res.outcome == AWS_FAIL && strstr(res.error, "1 MiB"), "oversized: %d %s", res.outcome, res.error);
    printf("oversized: %s\n", res.error);
    free(b.big);
    kin_close(k);

    /* No credentials: open fails with a message, nothing crashes. */
    char *saved = strdup(getenv("AWS_SECRET_ACCESS_KEY"));
    unsetenv("AWS_SECRET_ACCESS_KEY");
    EXPECT(kin_open(c, &k, err) != 0 && strstr(err, "secret"), "no credentials: %s", err);
    printf("no credentials: %s\n", err);
    setenv("AWS_SECRET_ACCESS_KEY", saved, 1);
    free(saved);
    kin_cfg_free(c);

    /* Bad definitions are refused with the member's path. */
    const char *bad[] = {"{\"type\":\"kinesis\"}", "{\"type\":\"kinesis\",\"streamName\":\"a b\"}",
                         "{\"type\":\"kinesis\",\"streamName\":\"s\",\"partitionKey\":\"{{nope}}\"}",
                         "{\"type\":\"kinesis\",\"streamName\":\"s\",\"endpoint\":\"ftp://x\"}",
                         "{\"type\":\"kinesis\",\"streamName\":\"s\",\"shards\":2}", NULL};
    for (int i = 0; bad[i]; i++) {
        json_t *t = json_loads(bad[i], 0, NULL);
        kin_cfg *x = NULL;
        EXPECT(kin_parse(t, &x) == STELE_EINVAL && strstr(stele_errmsg(), "target."), "%s accepted", bad[i]);
        json_decref(t);
    }
}

static void check(kin_conn *k, const char *stream, long total, int allow_dups)
{
    aws_resp r;
    json_t *d = call(kin_client(k), "DescribeStream", json_pack("{s:s}", "StreamName", stream), &r);
    aws_resp_free(&r);
    json_t *shards = json_object_get(json_object_get(d, "StreamDescription"), "Shards");
    unsigned char *seen = calloc((size_t)total, 1);
    long dups = 0, records = 0;
    size_t si;
    json_t *sh;
    json_array_foreach(shards, si, sh) {
        json_t *it = call(kin_client(k), "GetShardIterator",
                          json_pack("{s:s,s:O,s:s}", "StreamName", stream, "ShardId", json_object_get(sh, "ShardId"),
                                    "ShardIteratorType", "TRIM_HORIZON"),
                          &r);
        aws_resp_free(&r);
        char *iter = strdup(json_string_value(json_object_get(it, "ShardIterator")));
        json_decref(it);
        for (int empty = 0; iter && empty < 2;) {
            json_t *g = call(kin_client(k), "GetRecords", json_pack("{s:s,s:i}", "ShardIterator", iter, "Limit", 10000), &r);
            EXPECT(g != NULL, "GetRecords: %ld %s", r.status, r.message);
            aws_resp_free(&r);
            json_t *recs = json_object_get(g, "Records");
            empty = json_array_size(recs) ? 0 : empty + 1;
            size_t ri;
            json_t *rec;
            json_array_foreach(recs, ri, rec) {
                const char *b64 = json_string_value(json_object_get(rec, "Data"));
                size_t bl = strlen(b64);
                unsigned char *raw = malloc(bl + 4);
                int n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)bl);
                while (n > 0 && bl && b64[bl - 1] == '=') {
                    n--;
                    bl--;
                }
                json_t *ev = json_loadb((const char *)raw, (size_t)n, 0, NULL);
                long num = (long)json_integer_value(json_object_get(json_object_get(ev, "data"), "n"));
                const char *evstream = json_string_value(json_object_get(ev, "stream"));
                const char *pk = json_string_value(json_object_get(rec, "PartitionKey"));
                const char *evtype = json_string_value(json_object_get(ev, "type"));
                if (dump_mode)
                    printf("%ld %s %s %s\n", num, pk ? pk : "?", evstream ? evstream : "?", evtype ? evtype : "?");
                else
                    EXPECT(ev && evstream && pk && !strcmp(pk, evstream), "record %ld: key %s, stream %s", num,
                           pk ? pk : "?", evstream ? evstream : "?");
                if (num >= 0 && num < total) {
                    dups += seen[num];
                    seen[num] = 1;
                }
                records++;
                json_decref(ev);
                free(raw);
            }
            free(iter);
            const char *next = json_string_value(json_object_get(g, "NextShardIterator"));
            iter = next ? strdup(next) : NULL;
            json_decref(g);
        }
        free(iter);
    }
    if (dump_mode) {
        free(seen);
        json_decref(d);
        return;
    }
    long missing = 0;
    for (long i = 0; i < total; i++)
        missing += !seen[i];
    printf("check: %ld records, %ld missing, %ld duplicates\n", records, missing, dups);
    EXPECT(missing == 0, "%ld events missing", missing);
    EXPECT(allow_dups || dups == 0, "%ld duplicates", dups);
    free(seen);
    json_decref(d);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !getenv("KINESIS_ENDPOINT")) {
        fprintf(stderr, "usage: KINESIS_ENDPOINT=http://... kinesis_check setup|put|big|down|errors|check ...\n");
        return 2;
    }
    const char *mode = argv[1], *stream = argc > 2 ? argv[2] : "s";
    if (!strcmp(mode, "errors")) {
        errors(stream);
        return failures ? 1 : 0;
    }
    kin_cfg *c = cfg_for(stream, NULL);
    kin_conn *k = NULL;
    char err[256];
    if (kin_open(c, &k, err)) {
        fprintf(stderr, "kin_open: %s\n", err);
        return 1;
    }
    if (!strcmp(mode, "setup"))
        setup(k, stream);
    else if (!strcmp(mode, "put") && argc > 4)
        put(k, atol(argv[3]), atol(argv[4]), 0);
    else if (!strcmp(mode, "big") && argc > 3)
        put(k, atol(argv[3]), 8, 900u << 10);
    else if (!strcmp(mode, "down"))
        down(k);
    else if (!strcmp(mode, "wrongcreds")) {
        evbox b;
        make_event(&b, 1, 0);
        const stele_event *ev = &b.e;
        aws_result res;
        kin_deliver(k, &ev, 1, 0, &res);
        EXPECT(res.outcome == AWS_FAIL && strstr(res.error, "InvalidSignature") &&
                   !strstr(res.error, getenv("AWS_SECRET_ACCESS_KEY")),
               "wrong credentials: %d %s", res.outcome, res.error);
        printf("wrong credentials: %s\n", res.error);
    }
    else if (!strcmp(mode, "dump")) {
        dump_mode = 1;
        check(k, stream, 1, 1);
    } else if (!strcmp(mode, "check") && argc > 3)
        check(k, stream, atol(argv[3]), argc > 4 && !strcmp(argv[4], "allow-dups"));
    else
        failures++;
    kin_close(k);
    kin_cfg_free(c);
    return failures ? 1 : 0;
}
