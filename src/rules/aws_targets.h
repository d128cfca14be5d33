/*
 * aws_targets.h - the Amazon Kinesis (kinesis.c) and DynamoDB (dynamodb.c)
 * rule targets. Each has a configuration parsed from the rule's "target"
 * object when the rule is saved, and a connection (an AWS client with its
 * kept-alive HTTP connection) that delivers batches of events in order on
 * the delivery engine's thread.
 */
#ifndef STELE_AWS_TARGETS_H
#define STELE_AWS_TARGETS_H

#include <jansson.h>

#include "rules/aws_http.h"
#include "stele.h"

/* The outcome of one event of a batch. */
enum { AWS_DELIVERED, AWS_RETRY, AWS_FAIL, AWS_NOT_TRIED };

typedef struct aws_result {
    int outcome;            /* AWS_* */
    int kind;               /* STELE_FAIL_* when not delivered */
    int64_t retry_after_ms; /* -1: none */
    char error[256];        /* the service's error type and message */
} aws_result;

/* What both targets share: where and as whom. */
typedef struct aws_conf {
    char *endpoint;         /* NULL: AWS's regional endpoint */
    char *region;           /* NULL: $AWS_REGION, then $AWS_DEFAULT_REGION */
    char *credentials_file; /* NULL: the environment */
    char *profile;          /* NULL: "default" */
    uint32_t timeout_ms;
} aws_conf;

/* Parse the shared members of target object t; EINVAL naming
 * "target.<member>". */
int aws_conf_parse(json_t *t, aws_conf *c);
void aws_conf_clear(aws_conf *c);
/* Load the credentials and make a client; on failure err says why
 * (never quoting a secret). */
int aws_conf_client(const aws_conf *c, const char *service, const char *content_type, aws_client **out,
                    char err[256]);

/* A text template ("{{stream}}-{{data.orderId}}"): placeholders stream,
 * category, type, id, revision, position, data.NAME, metadata.NAME
 * (a top-level member; strings as they are, other JSON values as JSON
 * text; a missing member renders as nothing). */
int aws_text_template_check(const char *t, const char *path);
/* Render into b (appending); data_doc / meta_doc: the parsed data and
 * metadata, or NULL. */
int aws_text_template_render(buf *b, const char *t, const stele_event *e, json_t *data_doc,
                             json_t *meta_doc);

/* ---- Kinesis */
typedef struct kin_cfg kin_cfg;
typedef struct kin_conn kin_conn;

#define KIN_BATCH_RECORDS 500u
#define KIN_BATCH_BYTES (5u << 20)
#define KIN_RECORD_BYTES (1u << 20)

int kin_parse(json_t *t, kin_cfg **out);
void kin_cfg_free(kin_cfg *c);
int kin_open(const kin_cfg *c, kin_conn **out, char err[256]);
/* Put evs[0..n) (any n) with PutRecords, in batches within Kinesis's
 * limits; records that fail inside a batch are retried alone a few times
 * with backoff before being reported AWS_RETRY. */
void kin_deliver(kin_conn *k, const stele_event *const *evs, size_t n, int is_replay, aws_result *res);
void kin_close(kin_conn *k);
/* For tests: the client a connection uses. */
aws_client *kin_client(kin_conn *k);

#endif
