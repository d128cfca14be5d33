/*
 * json.h - JSON for the HTTP server: parsing append bodies into
 * stele_event_in arrays, and writing responses (events, errors) into a
 * growable buffer.
 *
 * Event data is never re-serialised: a `data` or `metadata` value in a
 * request is stored as the exact bytes the client sent (a span of the body),
 * and a stored JSON value is written back verbatim. The parser validates the
 * whole body against RFC 8259 first (escapes, UTF-8, number grammar,
 * literals, nesting depth, nothing after the value), so a span stored with
 * STELE_EVENT_JSON / STELE_META_JSON is always one valid JSON value.
 *
 * Error messages name the place: byte offsets are 0-based offsets into the
 * body, event indexes are 0-based like stele_append's own messages
 * ("event 0: unknown field \"tpye\"").
 */
#ifndef STELE_SERVER_JSON_H
#define STELE_SERVER_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "stele.h"
#include "util/json_text.h"
#include "util/shared.h"

/* Limits of an append body. A body nests at most JSON_MAX_DEPTH arrays and
 * objects deep, counting the envelope (the events array, the event object,
 * and the {"events": ...} object if used). JSON_MAX_VALUES bounds the
 * tokenizer's memory (20 bytes per JSON value of the body). */
#define JSON_MAX_DEPTH JTEXT_MAX_DEPTH
#define JSON_MAX_EVENTS 100000
#define JSON_MAX_TAGS 64
#define JSON_MAX_VALUES (1u << 22)

/** Memory owned by a parsed append (private to json.c). */
typedef struct json_arena json_arena;

/**
 * A parsed append body. The events' `data` / `metadata` point INTO the body
 * passed to json_parse_append when they came from `data` / `metadata` (with
 * STELE_EVENT_JSON / STELE_META_JSON set), and into memory owned by this
 * struct when they came from `dataBase64` / `metadataBase64` (flags clear).
 * `type`, `tags` and `id` are always owned by this struct. So the events are
 * valid while both the body and this struct live: until json_append_free().
 */
typedef struct json_append {
    stele_event_in *events;
    size_t n;             /* >= 1 on success */
    int64_t expected;     /* STELE_ANY unless the body had "expectedRevision" */
    int has_expected;     /* 1 if the body had "expectedRevision" */
    /* The stream's new state, if the body had "state" (any JSON value, its
     * exact bytes, STELE_EVENT_JSON in state_flags) or "stateBase64"
     * (decoded into the arena, flags 0), with "stateSchemaVersion"
     * (default 0). Valid as the events are. */
    int has_state;
    const void *state;
    size_t state_len;
    uint32_t state_flags;
    uint32_t state_schema;
    /* After a STELE_EINVAL failure: 1 if the body is not valid JSON (HTTP
     * code INVALID_JSON), 0 if it is JSON of the wrong shape
     * (INVALID_ARGUMENT). */
    int bad_json;
    json_arena *arena;
    size_t arena_first; /* private: the size of the arena's first block */
} json_append;

/**
 * Parse an append body: a JSON array of events, or an object
 * {"expectedRevision": "any" | "no_stream" | "stream_exists" | <integer >= 0>,
 *  "events": [...], "state": <any JSON> | "stateBase64": "<base64>",
 *  "stateSchemaVersion": <0..4294967295>} (every field optional except
 *  "events", any order; "stateSchemaVersion" only with a state).
 *
 * An event is an object with the fields of docs/http-api.md: "id" (UUID
 * string), "type" (string, required), "data" (any JSON value) or
 * "dataBase64" (strict RFC 4648 base64, padded), "metadata" or
 * "metadataBase64", "tags" (array of at most JSON_MAX_TAGS strings),
 * "contentType" (a string; accepted and ignored for now). Unknown and
 * duplicate fields are errors, so a typo never drops data silently. An
 * absent "data" gives data_len 0 and no flag; "data": null is the 4 bytes
 * `null`, flagged JSON. Strings are unescaped; a type or tag containing
 * U+0000 is rejected (it could not be NUL-terminated). Type and tag lengths,
 * control characters and the nil UUID are left to stele_append, which
 * reports them with the same event index.
 *
 * Returns 0 and fills *out (free with json_append_free), or:
 *   STELE_EINVAL   malformed JSON ("invalid JSON at byte 17: leading zero in
 *                  number"; out->bad_json = 1) or a wrong shape ("event 2:
 *                  \"type\" must be a string", "no events")
 *   STELE_ETOOBIG  more than JSON_MAX_EVENTS events or JSON_MAX_VALUES
 *                  values, or a body over 2 GiB
 *   STELE_ENOMEM
 * with a NUL-terminated message in err (errlen bytes; err may be NULL if
 * errlen is 0). On failure *out holds nothing to free (json_append_free on
 * it is harmless).
 */
int json_parse_append(const char *body, size_t len, json_append *out, char *err,
                      size_t errlen);

/** Free what json_parse_append allocated and zero *a. NULL is a no-op. */
void json_append_free(json_append *a);

/**
 * Check that s[0..len) is exactly one JSON value per RFC 8259, optionally
 * surrounded by whitespace, nesting at most JSON_MAX_DEPTH deep. Returns 0,
 * or STELE_EINVAL with *err_at (byte offset) and *why (static text) set;
 * both out-pointers may be NULL.
 */
int json_validate(const char *s, size_t len, size_t *err_at, const char **why);

/*
 * Writers. Each appends to `b` and returns 0 or STELE_ENOMEM; after a
 * failure the buffer's content is unspecified (discard the response).
 */

/** Raw bytes, unchanged (for literal JSON punctuation and stored JSON). */
int json_w_raw(buf *b, const void *p, size_t len);

/**
 * A JSON string: quotes, then the text escaped per RFC 8259: \" \\ and
 * \b \f \n \r \t, other control characters below 0x20 as \u00XX. Valid UTF-8
 * passes through unchanged; a byte that is not part of valid UTF-8 is
 * written as \ufffd so the output is always valid JSON.
 */
int json_w_str(buf *b, const char *s, size_t len);

/** A non-negative integer in decimal. */
int json_w_u64(buf *b, uint64_t v);

/** A JSON string holding the RFC 4648 base64 (padded) of p[0..len). */
int json_w_base64(buf *b, const void *p, size_t len);

/**
 * A JSON string with the UTC time `us` microseconds after the Unix epoch,
 * always with six fractional digits: "2026-11-23T16:30:00.123456Z". Times
 * outside years 0000..9999 are clamped to that range (RFC 3339 has 4-digit
 * years).
 */
int json_w_time_rfc3339(buf *b, int64_t us);

/** A JSON string with the UUID's canonical lower-case text. */
int json_w_uuid(buf *b, const uint8_t id[16]);
int json_w_id(buf *b, const uint8_t id[16], uint32_t flags); /* UUID or ULID, as flags say */

/**
 * One event as docs/http-api.md shows it, in this order: id, stream, type,
 * revision, position, created, data, metadata, tags. Data is written as
 * raw JSON ("data") when STELE_EVENT_JSON is set, else as "dataBase64";
 * metadata likewise with STELE_META_JSON. Empty data (data_len 0), empty
 * metadata and an empty tag list are omitted. The JSON flag is trusted: the
 * server only sets it on validated JSON.
 */
int json_w_event(buf *b, const stele_event *e);

/** {"error":{"code":"<code>","message":"<message>"}} */
int json_w_error(buf *b, const char *code, const char *message);

/**
 * The same with "currentRevision": a number, or null when `current` is
 * STELE_NONE (for WRONG_EXPECTED_REVISION).
 */
int json_w_error_rev(buf *b, const char *code, const char *message, uint64_t current);

/*
 * Base64 (RFC 4648 section 4, with padding), also used by the server for
 * other fields.
 */

/** Bytes needed to decode n base64 characters (an upper bound). */
static inline size_t json_b64_decoded_max(size_t n) { return n / 4 * 3; }

/**
 * Strict decode: length a multiple of 4, only the standard alphabet, '='
 * only as the last one or two characters, zero padding bits (so every
 * byte string has exactly one accepted encoding), no whitespace. `out`
 * needs json_b64_decoded_max(n) bytes. Returns 0 with *outn set, or
 * STELE_EINVAL with *bad_at (character offset) and *why set.
 */
int json_b64_decode(const char *in, size_t n, uint8_t *out, size_t *outn, size_t *bad_at,
                    const char **why);

#endif
