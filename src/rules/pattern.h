/*
 * pattern.h - EventBridge event patterns over Stele events (docs/patterns.md).
 *
 * A pattern is compiled once (when a rule is saved) and matched against many
 * events. The event is seen as reads render it: id, stream, category, type,
 * revision, position, created (RFC 3339, as the HTTP API renders it), tags,
 * and the JSON data and metadata, which are parsed only when a pattern needs
 * them, once per pattern_input whatever the number of patterns.
 *
 * Threads: a compiled pattern is immutable and may be matched from any
 * number of threads at once. A pattern_input caches what it parsed and
 * belongs to one thread at a time.
 */
#ifndef STELE_RULES_PATTERN_H
#define STELE_RULES_PATTERN_H

#include <stddef.h>

#include "stele.h"

/* Limits (docs/patterns.md): EventBridge's pattern size quota can be raised
 * to 4096 characters; its $or expansion is refused above 1000 combinations. */
#define PATTERN_MAX_BYTES 4096
#define PATTERN_MAX_COMBINATIONS 1000
/* Objects nested in a pattern (the root is depth 1). */
#define PATTERN_MAX_DEPTH 32
/* Objects and arrays nested in event data/metadata that are looked into;
 * values nested deeper are not seen by any pattern. */
#define PATTERN_EVENT_MAX_DEPTH 64

typedef struct pattern pattern;             /* a compiled EventBridge event pattern */
typedef struct pattern_input pattern_input; /* one event, parsed lazily once for any number of patterns */

/* Compile JSON pattern text; on error returns STELE_EINVAL and writes "path: reason" into err
 * (ENOMEM and ETOOBIG are possible too, also with a message). `err` may be NULL if errlen is 0. */
int pattern_compile(const char *json, size_t len, pattern **out, char *err, size_t errlen);
void pattern_free(pattern *p);

/* Wrap an event (borrowed: it must outlive the input) for matching. */
int pattern_input_new(const stele_event *ev, pattern_input **out);
/* Point an input at another event, keeping its allocations (for loops over many events). */
void pattern_input_reset(pattern_input *in, const stele_event *ev);
void pattern_input_free(pattern_input *in);

/* 1 if the event matches, 0 if not. */
int pattern_match(const pattern *p, pattern_input *in);

#endif
