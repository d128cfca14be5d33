/*
 * sigv4.h - AWS Signature Version 4 and AWS credentials, for the Kinesis
 * and DynamoDB rule targets (sigv4.c).
 */
#ifndef STELE_SIGV4_H
#define STELE_SIGV4_H

#include <stddef.h>
#include <stdint.h>

/* Credentials. Strings are owned (aws_creds_clear frees them); the secret
 * and the session token are never logged or shown in errors. */
typedef struct aws_creds {
    char *access_key, *secret_key, *session_token; /* token may be NULL */
} aws_creds;

/* Load credentials. file NULL: from the environment (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN). Otherwise from an AWS shared
 * credentials file (INI: [profile] with aws_access_key_id,
 * aws_secret_access_key, aws_session_token); profile NULL: "default".
 * 0, or STELE_EINVAL (STELE_ENOMEM) with a message naming what is missing
 * (never a secret). */
int aws_creds_load(const char *file, const char *profile, aws_creds *out);
void aws_creds_clear(aws_creds *c);

typedef struct sigv4_header {
    const char *name, *value;
} sigv4_header;

/* One request to sign. `path` is the URI path as sent (not yet encoded:
 * each segment is percent-encoded here); `query` the query string without
 * '?' (may be NULL), its names and values not yet encoded. `headers` must
 * include host and x-amz-date (and x-amz-security-token when the
 * credentials carry one); every header given is signed. */
typedef struct sigv4_request {
    const char *method, *path, *query;
    const sigv4_header *headers;
    size_t nheaders;
    const void *payload;
    size_t payload_len;
    const char *amz_date; /* YYYYMMDDTHHMMSSZ */
    const char *region, *service;
} sigv4_request;

/* The Authorization header value ("AWS4-HMAC-SHA256 Credential=...,
 * SignedHeaders=..., Signature=..."), malloc'd; NULL on out of memory or
 * a malformed amz_date. If creq is not NULL it receives the canonical
 * request (malloc'd), for tests. */
char *sigv4_authorization(const sigv4_request *r, const aws_creds *c, char **creq);

/* amz_date for unix time t: "YYYYMMDDTHHMMSSZ". */
void sigv4_date(int64_t t, char out[17]);

/* Lowercase hex SHA-256 of data. */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

#endif
