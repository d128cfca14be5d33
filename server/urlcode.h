/*
 * urlcode.h - percent-decoding of request targets (RFC 3986): one path
 * segment ("/streams/Order%2D1" -> "Order-1") and query parameters
 * ("?from=10&direction=backwards").
 *
 * Decoding never produces a NUL byte (%00 is rejected), so the results are
 * safe as C strings. Whether the decoded bytes are valid UTF-8 or a valid
 * name is the caller's business (stele_append and friends check names).
 */
#ifndef STELE_SERVER_URLCODE_H
#define STELE_SERVER_URLCODE_H

#include <stddef.h>

/**
 * Decode a path segment in[0..len): each %XX (hex, either case) becomes one
 * byte; '+' stays '+' (it means a space only in query strings). Writes a
 * NUL-terminated result to out (outlen bytes) and its length to *out_len
 * (may be NULL).
 * Returns 0, STELE_EINVAL for a '%' not followed by two hex digits or for
 * %00, or STELE_ETOOBIG if the result and its NUL do not fit in outlen.
 */
int url_decode(const char *in, size_t len, char *out, size_t outlen, size_t *out_len);

/**
 * Find parameter `name` in a query string query[0..len) (the part after
 * '?', without it): "a=1&b=x%20y". Keys and values are decoded as
 * application/x-www-form-urlencoded ('+' is a space, %XX a byte). A
 * parameter without '=' ("?tombstone") has the empty value. Empty pieces
 * ("a=1&&b=2") are skipped. If the name occurs more than once, the first
 * one counts.
 * Returns 1 with the decoded, NUL-terminated value in out (outlen bytes), 0
 * if the parameter is absent (out set to ""), STELE_EINVAL if that
 * parameter's value has an invalid escape or %00, or STELE_ETOOBIG if it
 * does not fit in outlen. Other parameters are not checked.
 */
int query_get(const char *query, size_t len, const char *name, char *out, size_t outlen);

/**
 * Iterate the parameters of a query string in order (for repeated names,
 * "?type=A&type=B"). Start with *off = 0. Each call decodes the next
 * non-empty parameter's key and value (NUL-terminated, keylen / vallen
 * bytes) and returns 1; 0 at the end; STELE_EINVAL for an invalid escape
 * or %00 in that parameter, STELE_ETOOBIG if its key or value does not
 * fit (then `key` holds as much of the key as could be decoded, or "").
 * After an error the iteration can go on with the next parameter.
 */
int query_next(const char *query, size_t len, size_t *off, char *key, size_t keylen, char *val,
               size_t vallen);

/**
 * Percent-encode in[0..len) as one path segment: unreserved characters
 * (A-Z a-z 0-9 - . _ ~) stay, every other byte becomes %XX. Writes a
 * NUL-terminated result (truncated at a whole escape if outlen is too
 * small) and returns its length.
 */
size_t url_encode(const char *in, size_t len, char *out, size_t outlen);

/**
 * Split a path path[0..len) (without its leading '/') at each '/' into at
 * most `max` segments: seg[i] points into the path, seglen[i] is its
 * length ("a//b/" is "a", "", "b", ""; the empty path is one empty
 * segment). Returns the number of segments, or -1 if there are more than
 * `max`.
 */
int url_path_split(const char *path, size_t len, const char **seg, size_t *seglen, size_t max);

/**
 * Decode path segment in[0..len) naming something (a stream, group, rule):
 * 0, or -1 if it is empty, malformed (url_decode) or does not fit in
 * outlen.
 */
int url_decode_name(const char *in, size_t len, char *out, size_t outlen);

#endif
