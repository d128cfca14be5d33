/*
 * errors.c - the error vocabulary: one table naming every error the way
 * each door shows it (docs/errors.md is this table for humans, and
 * test_errors keeps the two equal).
 *
 * A row is a stable code, the STELE_E* code it stands for, its HTTP status,
 * its gRPC status and the KurrentDB `exception` trailer the official
 * clients understand. The first row of each STELE_E* code is that code's
 * own: stele_error_info_of(rc) returns it, and every door uses it for a
 * failure it does not name more precisely. The rows after them name the
 * thing a failure is about (GROUP_NOT_FOUND is STELE_ENOTFOUND for a
 * consumer group), or errors of the protocols themselves (rc 0:
 * METHOD_NOT_ALLOWED, UNAUTHENTICATED ...).
 *
 * Invariants (test_errors checks them): codes are unique; every STELE_E*
 * code has its row, first among the rows with its rc; each code has one
 * HTTP status and one gRPC status wherever it is sent.
 */
#include <string.h>

#include "stele.h"

/* gRPC status codes (grpc/status.h), spelled here so libstele does not
 * depend on the server's headers. */
enum {
    G_INVALID_ARGUMENT = 3,
    G_DEADLINE_EXCEEDED = 4,
    G_NOT_FOUND = 5,
    G_ALREADY_EXISTS = 6,
    G_PERMISSION_DENIED = 7,
    G_RESOURCE_EXHAUSTED = 8,
    G_FAILED_PRECONDITION = 9,
    G_UNIMPLEMENTED = 12,
    G_INTERNAL = 13,
    G_UNAVAILABLE = 14,
    G_DATA_LOSS = 15,
    G_UNAUTHENTICATED = 16,
};

static const stele_error_info table[] = {
    /* Each STELE_E* code's own row, in the order of STELE_ERRORS. */
    {"INVALID_ARGUMENT", STELE_EINVAL, 400, G_INVALID_ARGUMENT, NULL,
     "a request or argument that is not valid: wrong types, missing fields, bad names"},
    {"STREAM_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, "stream-not-found",
     "the stream was never written, or was soft-deleted"},
    {"WRONG_EXPECTED_REVISION", STELE_EWRONGREV, 409, G_FAILED_PRECONDITION,
     "wrong-expected-version", "the expected revision does not match (the body gives the current one)"},
    {"STREAM_DELETED", STELE_EDELETED, 410, G_FAILED_PRECONDITION, "stream-deleted",
     "the stream is tombstoned"},
    {"TOO_LARGE", STELE_ETOOBIG, 413, G_INVALID_ARGUMENT, "maximum-append-size-exceeded",
     "a body, event or append over the limits"},
    {"ID_CONFLICT", STELE_EIDCONFLICT, 409, G_ALREADY_EXISTS, NULL,
     "an event id already used by a different event"},
    {"READ_ONLY", STELE_EREADONLY, 503, G_UNAVAILABLE, NULL,
     "the store turned read-only after a storage fault"},
    {"IO_ERROR", STELE_EIO, 503, G_UNAVAILABLE, NULL, "an I/O error of the store"},
    {"NO_SPACE", STELE_ENOSPC, 503, G_UNAVAILABLE, NULL,
     "no room on disk: appends resume once space is freed"},
    {"CORRUPT", STELE_ECORRUPT, 500, G_DATA_LOSS, NULL, "the store is damaged"},
    {"OUT_OF_MEMORY", STELE_ENOMEM, 500, G_RESOURCE_EXHAUSTED, NULL, "out of memory"},
    {"STORE_LOCKED", STELE_ELOCKED, 500, G_INTERNAL, NULL,
     "the store is in use by another process"},
    {"UNAVAILABLE", STELE_ECLOSED, 503, G_UNAVAILABLE, NULL, "the server or store is shutting down"},
    {"UNSUPPORTED_VERSION", STELE_EVERSION, 500, G_INTERNAL, NULL,
     "the store's format version is not supported"},
    {"INTERNAL", STELE_EINTERNAL, 500, G_INTERNAL, NULL, "an internal error"},
    {"ALREADY_EXISTS", STELE_EEXISTS, 409, G_ALREADY_EXISTS, NULL, "the thing exists already"},
    {"CONDITION_FAILED", STELE_ECONDITION, 409, G_FAILED_PRECONDITION, NULL,
     "a multi-stream append's condition matched an event (the body gives its position)"},
    {"BUSY", STELE_EBUSY, 503, G_UNAVAILABLE, NULL,
     "at a resource limit (memory budget, running replays): retry later (Retry-After)"},

    /* Failures named after what they are about. */
    {"INVALID_JSON", STELE_EINVAL, 400, G_INVALID_ARGUMENT, NULL,
     "a body that is not JSON (the message gives the byte offset)"},
    {"GROUP_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND,
     "persistent-subscription-does-not-exist", "no such consumer group"},
    {"CONSUMER_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, NULL,
     "no such consumer in the group"},
    {"NOT_IN_FLIGHT", STELE_ENOTFOUND, 404, G_NOT_FOUND, NULL,
     "an event id that is not in flight for the consumer"},
    {"PROJECTION_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, NULL, "no such projection"},
    {"RULE_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, NULL, "no such rule"},
    {"REPLAY_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, NULL, "no such replay"},
    {"SNAPSHOT_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, NULL, "no snapshot"},
    {"STATE_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, NULL, "no saved state"},
    {"SCAVENGE_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, "scavenge-not-found",
     "no running scavenge has that id"},
    {"USER_NOT_FOUND", STELE_ENOTFOUND, 404, G_NOT_FOUND, "user-not-found", "no such user"},
    {"GROUP_EXISTS", STELE_EEXISTS, 409, G_ALREADY_EXISTS, "persistent-subscription-exists",
     "creating a consumer group that exists"},
    {"CONSUMER_EXISTS", STELE_EEXISTS, 409, G_ALREADY_EXISTS, NULL,
     "a consumer name already connected to the group"},
    {"PROJECTION_EXISTS", STELE_EEXISTS, 409, G_ALREADY_EXISTS, NULL,
     "creating a projection that exists"},
    {"CONSUMER_BUSY", STELE_EBUSY, 409, G_FAILED_PRECONDITION, NULL,
     "a second waiting pull of one consumer"},
    {"BACKUP_RUNNING", STELE_EBUSY, 409, G_FAILED_PRECONDITION, NULL,
     "a backup or archive job is already running"},
    {"TOO_MANY_SUBSCRIPTIONS", STELE_EBUSY, 503, G_RESOURCE_EXHAUSTED, NULL,
     "at a count limit: subscriptions, consumer groups, consumers of a group"},

    /* Errors of the protocols and of access control (no STELE_E* code). */
    {"BAD_REQUEST", 0, 400, G_INVALID_ARGUMENT, NULL, "a malformed HTTP request"},
    {"NOT_FOUND", 0, 404, G_NOT_FOUND, NULL, "an unknown route or resource"},
    {"UNAUTHENTICATED", 0, 401, G_UNAUTHENTICATED, NULL,
     "missing or wrong credentials"},
    {"ACCESS_DENIED", 0, 403, G_PERMISSION_DENIED, "access-denied",
     "the user may not do this (ACLs, docs/security.md)"},
    {"PERMISSION_DENIED", 0, 403, G_PERMISSION_DENIED, NULL,
     "an operation allowed from a loopback address only"},
    {"HOST_NOT_ALLOWED", 0, 403, G_PERMISSION_DENIED, NULL,
     "a Host header the server does not answer to"},
    {"ORIGIN_NOT_ALLOWED", 0, 403, G_PERMISSION_DENIED, NULL, "a web page from another origin"},
    {"CROSS_SITE", 0, 403, G_PERMISSION_DENIED, NULL, "a cross-site request from a browser"},
    {"METHOD_NOT_ALLOWED", 0, 405, G_UNIMPLEMENTED, NULL, "a known route, a wrong method"},
    {"REQUEST_TIMEOUT", 0, 408, G_DEADLINE_EXCEEDED, NULL, "a request that was not sent in time"},
    {"DEADLINE_EXCEEDED", 0, 408, G_DEADLINE_EXCEEDED, NULL,
     "a call that ran past its deadline"},
    {"UNSUPPORTED_MEDIA_TYPE", 0, 415, G_INVALID_ARGUMENT, NULL,
     "a body whose Content-Type is not JSON"},
    {"TOO_MANY_FAILED_LOGINS", 0, 429, G_RESOURCE_EXHAUSTED, NULL,
     "too many failed logins from one address (Retry-After)"},
    {"HEADERS_TOO_LARGE", 0, 431, G_RESOURCE_EXHAUSTED, NULL, "request headers over the limit"},
    {"HTTP_VERSION_NOT_SUPPORTED", 0, 505, G_UNIMPLEMENTED, NULL,
     "a request line with a version other than HTTP/1.0 or HTTP/1.1"},
};

#define NROWS (sizeof table / sizeof table[0])

const stele_error_info *stele_error_info_of(int rc)
{
    for (size_t i = 0; i < NROWS; i++)
        if (table[i].rc == rc && rc != 0)
            return &table[i];
    return stele_error_lookup("INTERNAL");
}

const stele_error_info *stele_error_lookup(const char *code)
{
    if (!code)
        return NULL;
    for (size_t i = 0; i < NROWS; i++)
        if (!strcmp(table[i].code, code))
            return &table[i];
    return NULL;
}

const stele_error_info *stele_error_table(size_t *n)
{
    *n = NROWS;
    return table;
}
