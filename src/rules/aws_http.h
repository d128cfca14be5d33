/*
 * aws_http.h - a small client for AWS's JSON protocol (POST / with an
 * X-Amz-Target header, SigV4-signed), shared by the Kinesis and DynamoDB
 * targets and their tests (aws_http.c).
 */
#ifndef STELE_AWS_HTTP_H
#define STELE_AWS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "rules/sigv4.h"
#include "util/util.h"

typedef struct aws_client aws_client;

/* The answer to one call. */
typedef struct aws_resp {
    long status;       /* HTTP status, 0 if no answer came */
    buf body;          /* the response body (caller: buf_free) */
    char type[128];    /* error: the service's error type ("ResourceNotFoundException"),
                          or "" */
    char message[384]; /* error: the service's message, or the transport error */
} aws_resp;

/* endpoint: "http(s)://host[:port]" (NULL: https://SERVICE.REGION.amazonaws.com);
 * service: "kinesis" or "dynamodb" (signing name and endpoint prefix);
 * content_type: "application/x-amz-json-1.1" (Kinesis) or "-1.0" (DynamoDB).
 * The credentials are copied. EINVAL on a bad endpoint. */
int aws_client_new(const char *endpoint, const char *region, const char *service,
                   const char *content_type, const aws_creds *c, uint32_t timeout_ms, aws_client **out);
void aws_client_free(aws_client *a);

/* POST body with X-Amz-Target: target. Returns 0 when an HTTP answer came
 * (r->status set; 2xx or an error with r->type and r->message), -1 on a
 * transport error (r->message says what). Keeps the connection for the
 * next call. */
int aws_call(aws_client *a, const char *target, const void *body, size_t len, aws_resp *r);
void aws_resp_free(aws_resp *r);

/* 1 if an error type is throttling or a transient service fault (retry
 * with backoff), 0 if it is final (bad credentials, missing resource, bad
 * request). */
int aws_error_retryable(long status, const char *type);
/* The rule failure kind (STELE_FAIL_*) of an answer: throttling counts as
 * http_429, other 4xx as http_4xx, 5xx as http_5xx, none as connection. */
int aws_fail_kind(long status, const char *type);

#endif
