/*
 * js.h - one projection's JavaScript runtime (js.c): a duktape heap with a
 * memory limit and a time limit per call, the KurrentDB projection API
 * (prelude.js) and the user's query. Used by the projection runner and by
 * state reconstruction; one thread at a time per runtime.
 */
#ifndef STELE_PROJ_JS_H
#define STELE_PROJ_JS_H

#include <stddef.h>
#include <stdint.h>

#include "stele.h"
#include "util/util.h"

/* An event emitted by a handler (emit, linkTo, copyTo). Pointers are valid
 * during the callback only. */
typedef struct proj_emit {
    const char *stream;
    size_t stream_len;
    const char *type;
    size_t type_len;
    const char *data;
    size_t data_len;
    const char *meta; /* NULL: none */
    size_t meta_len;
    int data_json, meta_json;
} proj_emit;

/* What the runtime asks of its owner. A callback that returns non-zero
 * fails the handler call with its message (stele_errmsg()). */
typedef struct proj_js_cb {
    void *ctx;
    /* The stored state of partition `key` (or the bi-state shared state
     * when `shared`), appended to *out, and the position it was folded up
     * to; *found = 0 if there is none. */
    int (*load)(void *ctx, const char *key, size_t klen, int shared, buf *out, uint64_t *pos,
                int *found);
    int (*emit)(void *ctx, const proj_emit *e);
    void (*log)(void *ctx, const char *msg, size_t len);
} proj_js_cb;

/* What the query declared (from describe()). Owned by the runtime. */
typedef struct proj_source {
    int all;
    char **categories;
    size_t ncategories;
    char **streams;
    size_t nstreams;
    int partitioned, foreach_stream, bi_state, output_state, has_transforms;
    /* a $deleted handler that runs: foreachStream() and not reading
     * $deletes itself (then the runner subscribes to $deletes too) */
    int on_deleted;
    char **handlers; /* the names given to when(), special ones included */
    size_t nhandlers;
    char *result_stream; /* NULL: the default */
    char *json;          /* the whole description, for status */
} proj_source;

typedef struct proj_js proj_js;

/*
 * Make a runtime: a heap limited to `mem_limit` bytes, each call into
 * JavaScript limited to `timeout_ms`; run the prelude and the query (which
 * must declare a source). On failure returns STELE_EINVAL (syntax error,
 * a throwing query, no source) or ENOMEM with the reason in `err`.
 */
int proj_js_new(const char *query, size_t len, size_t mem_limit, uint32_t timeout_ms,
                const proj_js_cb *cb, proj_js **out, char *err, size_t errlen);
void proj_js_free(proj_js *js);
const proj_source *proj_js_source(const proj_js *js);

/*
 * Run the handlers on one event. *handled = 1 if a handler ran, 2 if it
 * also made a partition dirty for the first time since the last
 * proj_js_take_dirty(). On a
 * throw, timeout or memory exhaustion returns STELE_EINVAL with the
 * message in `err`; the runtime must then be freed (its states may be half
 * changed).
 */
int proj_js_event(proj_js *js, const stele_event *e, int *handled, char *err, size_t errlen);

/* The partitions whose handlers ran since the last call; *keys is an array
 * of *n NUL-terminated strings (lengths in *lens) the caller frees with
 * proj_js_keys_free(). *shared = 1 if the shared state changed. */
int proj_js_take_dirty(proj_js *js, char ***keys, size_t **lens, size_t *n, int *shared,
                       char *err, size_t errlen);
void proj_js_keys_free(char **keys, size_t *lens, size_t n);

/* A partition's state (or the shared state) as JSON, replacing *out's
 * contents; the result after transformBy/filterBy: *has_result = 0 when
 * the query has no transforms or filterBy dropped it. */
int proj_js_state(proj_js *js, const char *key, size_t klen, int shared, buf *out, char *err,
                  size_t errlen);
int proj_js_result(proj_js *js, const char *key, size_t klen, buf *out, int *has_result,
                   char *err, size_t errlen);
/* After a commit: the partition's stored state now holds events up to
 * `position`. */
void proj_js_committed(proj_js *js, const char *key, size_t klen, int shared, uint64_t position);
/* Did the $deleted handler drop the partition (since it was loaded)? */
int proj_js_dropped(proj_js *js, const char *key, size_t klen);
/* Drop a clean partition from the heap (it is loaded again when needed). */
void proj_js_evict(proj_js *js, const char *key, size_t klen);
/* Bytes the heap uses now. */
size_t proj_js_heap_bytes(const proj_js *js);

#endif

/*
 * Read top-level members of a JSON object (the projection records the
 * store keeps): for each of `n` names, strs[i] gets a malloc'd copy of a
 * string member (else NULL) and nums[i] a number or boolean member (else
 * 0); present[i] = 1 if the member exists. 0, or EINVAL (not a JSON
 * object) / ENOMEM.
 */
int proj_json_fields(const char *json, size_t len, const char *const *names, size_t n,
                     char **strs, double *nums, int *present);

/* Reconstructing one stream's state with a query's handlers: start from
 * `raw` (a stored state, or NULL for $init), fold events, take the JSON.
 * Emits are ignored while folding. Errors as proj_js_event(). */
int proj_js_fold_start(proj_js *js, const char *raw, size_t len, char *err, size_t errlen);
int proj_js_fold_event(proj_js *js, const stele_event *e, char *err, size_t errlen);
int proj_js_fold_json(proj_js *js, buf *out, char *err, size_t errlen);

/* A state's top-level member compared with a JSON value (read model
 * filters). One heap serves many calls. */
typedef struct proj_filter proj_filter;
/* `value` is JSON text ("\"c-1\"", "42", "true"); EINVAL if it is not. */
int proj_filter_new(const char *field, const char *value, size_t vlen, proj_filter **out);
/* *eq = 1 if `json` is an object whose member `field` equals the value
 * (same JSON text once re-serialised). */
int proj_filter_match(proj_filter *f, const char *json, size_t len, int *eq);
void proj_filter_free(proj_filter *f);

/* A transient query's answer (prelude.js dumpAll) into *out. */
int proj_js_dump(proj_js *js, buf *out, char *err, size_t errlen);
