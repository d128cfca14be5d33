/*
 * js.c - a projection's JavaScript runtime on duktape.
 *
 * Each runtime is its own duktape heap, so projections share nothing and a
 * faulted one is simply freed. Three limits keep a hostile query from
 * hurting the server:
 *
 *   memory   the heap's allocator (alloc/realloc/free below) counts the
 *            bytes it holds, in a header before each block, and refuses
 *            anything above the limit: duktape then collects garbage,
 *            retries, and throws RangeError inside the handler call.
 *   time     duktape is compiled with DUK_USE_EXEC_TIMEOUT_CHECK (see the
 *            derived duk_config.h in CMakeLists.txt): before the first
 *            instruction of each call from C and then every 256K bytecode
 *            instructions (its interrupt counter) it calls
 *            stele_duk_timeout_check(), which answers 1 once the current
 *            call has used more than its limit of CPU time; the call then
 *            ends with "RangeError: execution timeout". The time is the
 *            calling thread's CPU clock (CLOCK_THREAD_CPUTIME_ID), not the
 *            wall clock, so a handler that waits for a CPU on a loaded
 *            machine, or for the store in a native call, is not faulted
 *            for it. The clock is first read at the call's second check,
 *            not when the call starts: a call costs no clock read (a
 *            system call) unless it runs 256K instructions, and the limit
 *            counts from at most one interrupt interval (a few ms) into
 *            the call.
 *   fatal    an error outside any protected call (duktape calls that
 *            "double faults") reaches the fatal handler, which long-jumps
 *            back to the guarded entry point; the runtime is then marked
 *            dead and leaked on purpose (duktape's heap cannot be used or
 *            freed after a fatal error), never the process aborted.
 *
 * Every call from C into JavaScript is duk_pcall() under one guard. The
 * prelude (prelude.js, embedded at build time) defines KurrentDB's API and
 * the object __stele whose functions this file calls; their values sit at
 * fixed indexes of the value stack (IDX_*) so that the per-event call
 * costs no property lookup.
 */
#include <setjmp.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duktape.h"
#include "prelude.h"
#include "proj/js.h"
#include "proj/jsjson.h"

#define IDX_API 0 /* the __stele object */
#define IDX_ON 1  /* __stele.on */
#define IDX_HOT 2 /* its `this`: the per-event path's object (prelude.js) */
#define IDX_STATES 3   /* hot.states: partition -> state */
#define IDX_STATEPOS 4 /* hot.statePos: partition -> position its stored state covers */

struct proj_js {
    duk_context *ctx;
    size_t mem_limit, mem_used;
    uint32_t timeout_ms;
    int armed;            /* a call is running */
    uint32_t checks;      /* interrupts seen in this call */
    uint64_t cpu_start;   /* its thread CPU time at its second check; 0: none yet */
    int timed_out;
    int refused; /* the allocator refused a block for the limit */
    jmp_buf jb;
    int dead;
    proj_js_cb cb;
    proj_source src;
    char fatal_msg[256];
    /* The event being handled (proj_js_event), for __stele_raw: valid
     * while its handler runs; gen numbers the events. */
    const stele_event *cur;
    double gen;
    proj_json_toks toks; /* __stele_body's token buffer */
};

/* ------------------------------------------------------------ limits */

typedef struct {
    size_t size;
    size_t pad;
} blk_hdr;

static void *js_alloc(void *udata, duk_size_t size)
{
    proj_js *js = udata;
    if (size == 0)
        return NULL;
    if (js->mem_used + size > js->mem_limit) {
        js->refused = 1;
        return NULL;
    }
    blk_hdr *h = malloc(sizeof *h + size);
    if (!h)
        return NULL;
    h->size = size;
    js->mem_used += size;
    return h + 1;
}

static void js_free(void *udata, void *ptr)
{
    proj_js *js = udata;
    if (!ptr)
        return;
    blk_hdr *h = (blk_hdr *)ptr - 1;
    js->mem_used -= h->size;
    free(h);
}

static void *js_realloc(void *udata, void *ptr, duk_size_t size)
{
    proj_js *js = udata;
    if (!ptr)
        return js_alloc(udata, size);
    if (size == 0) {
        js_free(udata, ptr);
        return NULL;
    }
    blk_hdr *h = (blk_hdr *)ptr - 1;
    size_t old = h->size;
    if (size > old && js->mem_used + (size - old) > js->mem_limit) {
        js->refused = 1;
        return NULL;
    }
    blk_hdr *n = realloc(h, sizeof *n + size);
    if (!n)
        return NULL;
    n->size = size;
    js->mem_used = js->mem_used - old + size;
    return n + 1;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int stele_duk_timeout_check(void *udata);
int stele_duk_timeout_check(void *udata)
{
    proj_js *js = udata;
    if (!js || !js->armed)
        return 0;
    if (js->timed_out)
        return 1; /* duktape wants the answer kept until the call unwinds */
    /* duktape forces an interrupt before the first instruction of every
     * call from C (duk_heap_switch_thread zeroes the counter on initial
     * entry), so the first check of a call comes at once: it reads no
     * clock, or every handler call would pay a CPU-clock system call
     * (measured: a fifth of a per-stream projection's time). */
    if (js->checks++ == 0)
        return 0;
    uint64_t now = thread_cpu_ns();
    if (!js->cpu_start) {
        js->cpu_start = now ? now : 1;
        return 0;
    }
    if (now - js->cpu_start > (uint64_t)js->timeout_ms * 1000000u) {
        js->timed_out = 1;
        return 1;
    }
    return 0;
}

static void js_fatal(void *udata, const char *msg)
{
    proj_js *js = udata;
    snprintf(js->fatal_msg, sizeof js->fatal_msg, "%s", msg ? msg : "fatal error");
    js->dead = 1;
    longjmp(js->jb, 1);
}

/* ------------------------------------------------------------ natives */

static proj_js *self(duk_context *ctx)
{
    duk_memory_functions mf;
    duk_get_memory_functions(ctx, &mf);
    return mf.udata;
}

/* __stele_load(key, shared) -> null | [json, position] | [json, position,
 * true] (a partition the $deleted handler dropped) */
static duk_ret_t nat_load(duk_context *ctx)
{
    proj_js *js = self(ctx);
    duk_size_t klen;
    const char *key = duk_require_lstring(ctx, 0, &klen);
    int shared = duk_to_boolean(ctx, 1);
    buf b = {0};
    uint64_t pos = 0;
    int found = 0;
    int rc = js->cb.load(js->cb.ctx, key, klen, shared, &b, &pos, &found);
    if (rc) {
        buf_free(&b);
        return duk_error(ctx, DUK_ERR_ERROR, "loading the state of partition '%s': %s", key,
                         stele_errmsg());
    }
    if (!found) {
        buf_free(&b);
        duk_push_null(ctx);
        return 1;
    }
    duk_push_array(ctx);
    duk_push_lstring(ctx, b.len ? (const char *)b.p : "", b.len);
    buf_free(&b);
    duk_put_prop_index(ctx, -2, 0);
    duk_push_number(ctx, pos == STELE_NONE ? -1.0 : (double)pos);
    duk_put_prop_index(ctx, -2, 1);
    if (found == 2) { /* dropped by $deleted: [json, position, true] */
        duk_push_true(ctx);
        duk_put_prop_index(ctx, -2, 2);
    }
    return 1;
}

/* __stele_emit(stream, type, data, metadata|null, dataIsJson, metaIsJson) */
static duk_ret_t nat_emit(duk_context *ctx)
{
    proj_js *js = self(ctx);
    proj_emit e;
    memset(&e, 0, sizeof e);
    e.stream = duk_require_lstring(ctx, 0, &e.stream_len);
    e.type = duk_require_lstring(ctx, 1, &e.type_len);
    e.data = duk_is_null_or_undefined(ctx, 2) ? "" : duk_to_lstring(ctx, 2, &e.data_len);
    if (!duk_is_null_or_undefined(ctx, 3))
        e.meta = duk_to_lstring(ctx, 3, &e.meta_len);
    e.data_json = duk_to_boolean(ctx, 4);
    e.meta_json = duk_to_boolean(ctx, 5);
    if (js->cb.emit(js->cb.ctx, &e))
        return duk_error(ctx, DUK_ERR_ERROR, "%s", stele_errmsg());
    return 0;
}

/* __stele_raw(which, n): event n's data (0) or metadata (1, null if none). */
static duk_ret_t nat_raw(duk_context *ctx)
{
    proj_js *js = self(ctx);
    int which = duk_to_int(ctx, 0);
    double n = duk_to_number(ctx, 1);
    if (!js->cur || n != js->gen)
        return duk_error(ctx, DUK_ERR_ERROR,
                         "an event's data can be read only while its handler runs");
    const stele_event *e = js->cur;
    if (which == 0)
        duk_push_lstring(ctx, e->data_len ? (const char *)e->data : "", e->data_len);
    else if (e->metadata_len)
        duk_push_lstring(ctx, (const char *)e->metadata, e->metadata_len);
    else
        duk_push_null(ctx);
    return 1;
}

/* __stele_body(n): event n's data parsed (jsjson.c) while its handler
 * runs, or null when that fast path leaves it to JSON.parse. */
static duk_ret_t nat_body(duk_context *ctx)
{
    proj_js *js = self(ctx);
    double n = duk_to_number(ctx, 0);
    if (!js->cur || n != js->gen)
        return duk_error(ctx, DUK_ERR_ERROR,
                         "an event's data can be read only while its handler runs");
    const stele_event *e = js->cur;
    if (proj_json_push(ctx, (const char *)e->data, e->data_len, &js->toks))
        duk_push_null(ctx);
    return 1;
}

static duk_ret_t nat_log(duk_context *ctx)
{
    proj_js *js = self(ctx);
    duk_size_t n;
    const char *s = duk_to_lstring(ctx, 0, &n);
    if (js->cb.log)
        js->cb.log(js->cb.ctx, s, n);
    return 0;
}

/* ------------------------------------------------------------ calls */

/* The message of the error on top of the stack (then popped). */
static void take_error(proj_js *js, char *err, size_t errlen)
{
    if (js->timed_out)
        snprintf(err, errlen, "execution timeout: a handler used more than %u ms of CPU time",
                 js->timeout_ms);
    else {
        const char *m = NULL;
        if (duk_is_error(js->ctx, -1)) {
            duk_get_prop_string(js->ctx, -1, "stack");
            m = duk_safe_to_string(js->ctx, -1);
            /* the first line of the stack is "Name: message" */
            snprintf(err, errlen, "%s", m ? m : "error");
            duk_pop(js->ctx);
        } else {
            m = duk_safe_to_string(js->ctx, -1);
            snprintf(err, errlen, "uncaught %s", m ? m : "value");
        }
        char *nl = strchr(err, '\n');
        if (nl) {
            /* keep the first two lines: the message and where it was thrown */
            char *nl2 = strchr(nl + 1, '\n');
            if (nl2)
                *nl2 = 0;
        }
        if (js->refused) {
            char tmp[512];
            snprintf(tmp, sizeof tmp, "memory limit of %zu bytes reached (%s)", js->mem_limit,
                     err);
            snprintf(err, errlen, "%s", tmp);
        }
    }
    duk_pop(js->ctx);
}

static void arm(proj_js *js)
{
    js->timed_out = 0;
    js->refused = 0;
    js->cpu_start = 0;
    js->checks = 0;
    js->armed = 1;
}

static void disarm(proj_js *js) { js->armed = 0; }

/* Call __stele.<name>(args on the stack: nargs) protected; the result
 * stays on the stack on success. */
static int call_api(proj_js *js, const char *name, int nargs, char *err, size_t errlen)
{
    duk_context *ctx = js->ctx;
    duk_get_prop_string(ctx, IDX_API, name);
    duk_insert(ctx, -(nargs + 1));
    arm(js);
    int rc = duk_pcall(ctx, nargs);
    disarm(js);
    if (rc != DUK_EXEC_SUCCESS) {
        take_error(js, err, errlen);
        return STELE_EINVAL;
    }
    return 0;
}

#define GUARD(js, err, errlen)                                                           \
    do {                                                                                 \
        if ((js)->dead) {                                                                \
            snprintf(err, errlen, "the JavaScript runtime failed earlier: %s", (js)->fatal_msg); \
            return STELE_EINVAL;                                                         \
        }                                                                                \
        if (setjmp((js)->jb)) {                                                          \
            snprintf(err, errlen, "JavaScript engine fatal error: %s", (js)->fatal_msg); \
            return STELE_EINVAL;                                                         \
        }                                                                                \
    } while (0)

/* ------------------------------------------------------------ source */

static char *dup_str(duk_context *ctx, int idx)
{
    duk_size_t n;
    const char *s = duk_safe_to_lstring(ctx, idx, &n);
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, s, n);
        r[n] = 0;
    }
    return r;
}

static int str_list(duk_context *ctx, const char *prop, char ***out, size_t *n)
{
    duk_get_prop_string(ctx, -1, prop);
    size_t len = duk_get_length(ctx, -1);
    *out = calloc(len ? len : 1, sizeof **out);
    if (!*out) {
        duk_pop(ctx);
        return STELE_ENOMEM;
    }
    for (size_t i = 0; i < len; i++) {
        duk_get_prop_index(ctx, -1, (duk_uarridx_t)i);
        (*out)[i] = dup_str(ctx, -1);
        duk_pop(ctx);
        if (!(*out)[i]) {
            *n = i;
            duk_pop(ctx);
            return STELE_ENOMEM;
        }
    }
    *n = len;
    duk_pop(ctx);
    return 0;
}

static int flag(duk_context *ctx, const char *prop)
{
    duk_get_prop_string(ctx, -1, prop);
    int v = duk_to_boolean(ctx, -1);
    duk_pop(ctx);
    return v;
}

/* Read the description (JSON text on top of the stack) into js->src. */
static int read_source(proj_js *js)
{
    duk_context *ctx = js->ctx;
    js->src.json = dup_str(ctx, -1);
    duk_json_decode(ctx, -1);
    js->src.all = flag(ctx, "all");
    js->src.partitioned = flag(ctx, "partitioned");
    js->src.foreach_stream = flag(ctx, "foreachStream");
    js->src.on_deleted = flag(ctx, "onDeleted");
    js->src.bi_state = flag(ctx, "biState");
    js->src.output_state = flag(ctx, "outputState");
    duk_get_prop_string(ctx, -1, "transforms");
    js->src.has_transforms = duk_to_int(ctx, -1) > 0;
    duk_pop(ctx);
    duk_get_prop_string(ctx, -1, "resultStream");
    if (duk_is_string(ctx, -1))
        js->src.result_stream = dup_str(ctx, -1);
    duk_pop(ctx);
    int rc = str_list(ctx, "categories", &js->src.categories, &js->src.ncategories);
    if (!rc)
        rc = str_list(ctx, "streams", &js->src.streams, &js->src.nstreams);
    if (!rc)
        rc = str_list(ctx, "handlers", &js->src.handlers, &js->src.nhandlers);
    duk_pop(ctx);
    if (!js->src.json)
        rc = STELE_ENOMEM;
    return rc;
}

static void source_free(proj_source *s)
{
    for (size_t i = 0; i < s->ncategories; i++)
        free(s->categories[i]);
    for (size_t i = 0; i < s->nstreams; i++)
        free(s->streams[i]);
    for (size_t i = 0; i < s->nhandlers; i++)
        free(s->handlers[i]);
    free(s->categories);
    free(s->streams);
    free(s->handlers);
    free(s->result_stream);
    free(s->json);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------ public */

static int setup(proj_js *js, const char *query, size_t len, char *err, size_t errlen)
{
    GUARD(js, err, errlen);
    duk_context *ctx = js->ctx;
    static const struct {
        const char *name;
        duk_c_function f;
        duk_idx_t nargs;
    } natives[] = {{"__stele_load", nat_load, 2},
                   {"__stele_emit", nat_emit, 6},
                   {"__stele_raw", nat_raw, 2},
                   {"__stele_body", nat_body, 1},
                   {"__stele_log", nat_log, 1}};
    for (size_t i = 0; i < sizeof natives / sizeof natives[0]; i++) {
        duk_push_c_function(ctx, natives[i].f, natives[i].nargs);
        duk_put_global_string(ctx, natives[i].name);
    }
    arm(js);
    duk_push_string(ctx, "prelude.js");
    int rc = duk_pcompile_string_filename(ctx, 0, proj_prelude_js);
    if (rc == 0)
        rc = duk_pcall(ctx, 0);
    disarm(js);
    if (rc) {
        take_error(js, err, errlen);
        return STELE_EINTERNAL;
    }
    duk_pop(ctx);
    duk_get_global_string(ctx, "__stele");        /* IDX_API */
    duk_get_prop_string(ctx, IDX_API, "on");       /* IDX_ON */
    /* The query: compiled as a program, so a syntax error names its line. */
    arm(js);
    duk_push_lstring(ctx, query, len);
    duk_push_string(ctx, "query");
    rc = duk_pcompile(ctx, 0);
    if (rc == 0)
        rc = duk_pcall(ctx, 0);
    disarm(js);
    if (rc) {
        take_error(js, err, errlen);
        return STELE_EINVAL;
    }
    duk_pop(ctx);
    if ((rc = call_api(js, "describe", 0, err, errlen)))
        return rc;
    rc = read_source(js);
    if (rc) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    if ((rc = call_api(js, "hot", 0, err, errlen))) /* IDX_HOT */
        return rc;
    if (duk_get_top(ctx) != IDX_HOT + 1) {
        snprintf(err, errlen, "internal error: the runtime's value stack is not as expected");
        return STELE_EINTERNAL;
    }
    duk_get_prop_string(ctx, IDX_HOT, "states");   /* IDX_STATES */
    duk_get_prop_string(ctx, IDX_HOT, "statePos"); /* IDX_STATEPOS */
    return 0;
}

int proj_js_new(const char *query, size_t len, size_t mem_limit, uint32_t timeout_ms,
                const proj_js_cb *cb, proj_js **out, char *err, size_t errlen)
{
    *out = NULL;
    err[0] = 0;
    proj_js *js = calloc(1, sizeof *js);
    if (!js) {
        snprintf(err, errlen, "out of memory");
        return STELE_ENOMEM;
    }
    js->mem_limit = mem_limit;
    js->timeout_ms = timeout_ms;
    js->cb = *cb;
    js->ctx = duk_create_heap(js_alloc, js_realloc, js_free, js, js_fatal);
    if (!js->ctx) {
        free(js);
        snprintf(err, errlen, "cannot create a JavaScript heap within %zu bytes", mem_limit);
        return STELE_ENOMEM;
    }
    int rc = setup(js, query, len, err, errlen);
    if (rc) {
        proj_js_free(js);
        return rc;
    }
    *out = js;
    return 0;
}

void proj_js_free(proj_js *js)
{
    if (!js)
        return;
    /* After a fatal error the heap cannot be destroyed safely: leak it. */
    if (js->ctx && !js->dead)
        duk_destroy_heap(js->ctx);
    source_free(&js->src);
    proj_json_toks_free(&js->toks);
    if (!js->dead)
        free(js);
}

const proj_source *proj_js_source(const proj_js *js) { return &js->src; }

size_t proj_js_heap_bytes(const proj_js *js) { return js->mem_used; }

int proj_js_event(proj_js *js, const stele_event *e, int *handled, char *err, size_t errlen)
{
    *handled = 0;
    GUARD(js, err, errlen);
    duk_context *ctx = js->ctx;
    duk_dup(ctx, IDX_ON);
    duk_dup(ctx, IDX_HOT);
    duk_push_lstring(ctx, e->stream, e->stream_len);
    duk_push_lstring(ctx, e->type, e->type_len);
    duk_push_number(ctx, (double)e->revision);
    /* data and metadata on demand (__stele_raw) */
    js->cur = e;
    js->gen += 1;
    duk_push_undefined(ctx);
    duk_push_number(ctx, js->gen);
    duk_push_uint(ctx, e->flags);
    duk_push_number(ctx, (double)e->created_us);
    duk_push_number(ctx, (double)e->position);
    arm(js);
    int rc = duk_pcall_method(ctx, 8);
    disarm(js);
    js->cur = NULL;
    if (rc != DUK_EXEC_SUCCESS) {
        take_error(js, err, errlen);
        return STELE_EINVAL;
    }
    *handled = duk_to_int(ctx, -1);
    duk_pop(ctx);
    return 0;
}

void proj_js_keys_free(char **keys, size_t *lens, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    free(lens);
}

int proj_js_take_dirty(proj_js *js, char ***keys, size_t **lens, size_t *n, int *shared,
                       char *err, size_t errlen)
{
    *keys = NULL;
    *lens = NULL;
    *n = 0;
    *shared = 0;
    GUARD(js, err, errlen);
    duk_context *ctx = js->ctx;
    int rc = call_api(js, "takeDirty", 0, err, errlen);
    if (rc)
        return rc;
    size_t cnt = duk_get_length(ctx, -1);
    char **k = calloc(cnt ? cnt : 1, sizeof *k);
    size_t *l = calloc(cnt ? cnt : 1, sizeof *l);
    if (!k || !l) {
        free(k);
        free(l);
        duk_pop(ctx);
        snprintf(err, errlen, "out of memory");
        return STELE_ENOMEM;
    }
    for (size_t i = 0; i < cnt; i++) {
        duk_get_prop_index(ctx, -1, (duk_uarridx_t)i);
        duk_size_t sl;
        const char *s = duk_safe_to_lstring(ctx, -1, &sl);
        k[i] = malloc(sl + 1);
        if (!k[i]) {
            duk_pop_2(ctx);
            proj_js_keys_free(k, l, i);
            snprintf(err, errlen, "out of memory");
            return STELE_ENOMEM;
        }
        memcpy(k[i], s, sl);
        k[i][sl] = 0;
        l[i] = sl;
        duk_pop(ctx);
    }
    duk_pop(ctx);
    if ((rc = call_api(js, "sharedDirty", 0, err, errlen))) {
        proj_js_keys_free(k, l, cnt);
        return rc;
    }
    *shared = duk_to_boolean(ctx, -1);
    duk_pop(ctx);
    *keys = k;
    *lens = l;
    *n = cnt;
    return 0;
}

static int take_string(proj_js *js, buf *out)
{
    duk_size_t n;
    const char *s = duk_get_lstring(js->ctx, -1, &n);
    out->len = 0;
    int rc = buf_append(out, s ? s : "null", s ? n : 4);
    duk_pop(js->ctx);
    return rc;
}

int proj_js_state(proj_js *js, const char *key, size_t klen, int shared, buf *out, char *err,
                  size_t errlen)
{
    GUARD(js, err, errlen);
    int rc;
    if (shared) {
        rc = call_api(js, "sharedJson", 0, err, errlen);
    } else {
        duk_push_lstring(js->ctx, key, klen);
        rc = call_api(js, "stateJson", 1, err, errlen);
    }
    if (rc)
        return rc;
    if (take_string(js, out)) {
        snprintf(err, errlen, "out of memory");
        return STELE_ENOMEM;
    }
    return 0;
}

int proj_js_result(proj_js *js, const char *key, size_t klen, buf *out, int *has_result,
                   char *err, size_t errlen)
{
    *has_result = 0;
    GUARD(js, err, errlen);
    duk_push_lstring(js->ctx, key, klen);
    int rc = call_api(js, "resultJson", 1, err, errlen);
    if (rc)
        return rc;
    if (duk_is_null_or_undefined(js->ctx, -1)) {
        duk_pop(js->ctx);
        return 0;
    }
    *has_result = 1;
    if (take_string(js, out)) {
        snprintf(err, errlen, "out of memory");
        return STELE_ENOMEM;
    }
    return 0;
}

void proj_js_committed(proj_js *js, const char *key, size_t klen, int shared, uint64_t position)
{
    char err[64];
    if (js->dead || setjmp(js->jb))
        return;
    duk_push_number(js->ctx, (double)position);
    if (shared) {
        if (call_api(js, "sharedCommitted", 1, err, sizeof err) == 0)
            duk_pop(js->ctx);
        return;
    }
    /* statePos[key] = position, without a call into JavaScript (one per
     * committed partition: a call costs more than the put) */
    duk_put_prop_lstring(js->ctx, IDX_STATEPOS, key, klen);
}

int proj_js_dropped(proj_js *js, const char *key, size_t klen)
{
    char err[64];
    if (js->dead || setjmp(js->jb))
        return 0;
    duk_push_lstring(js->ctx, key, klen);
    if (call_api(js, "isDropped", 1, err, sizeof err))
        return 0;
    int d = duk_to_boolean(js->ctx, -1);
    duk_pop(js->ctx);
    return d;
}

void proj_js_evict(proj_js *js, const char *key, size_t klen)
{
    if (js->dead || setjmp(js->jb))
        return;
    /* delete states[key], statePos[key]: plain configurable properties of
     * objects without prototype, so nothing can run or throw */
    duk_del_prop_lstring(js->ctx, IDX_STATES, key, klen);
    duk_del_prop_lstring(js->ctx, IDX_STATEPOS, key, klen);
}

/* ------------------------------------------------------------ records */

typedef struct {
    const char *json;
    size_t len;
    const char *const *names;
    size_t n;
    char **strs;
    double *nums;
    int *present;
    int rc;
} fields_job;

static duk_ret_t fields_run(duk_context *ctx, void *udata)
{
    fields_job *j = udata;
    duk_push_lstring(ctx, j->json, j->len);
    duk_json_decode(ctx, -1);
    if (!duk_is_object(ctx, -1) || duk_is_array(ctx, -1)) {
        j->rc = STELE_EINVAL;
        return 0;
    }
    for (size_t i = 0; i < j->n; i++) {
        j->present[i] = duk_get_prop_string(ctx, -1, j->names[i]) ? 1 : 0;
        if (duk_is_string(ctx, -1)) {
            j->strs[i] = dup_str(ctx, -1);
            if (!j->strs[i])
                j->rc = STELE_ENOMEM;
        } else if (duk_is_number(ctx, -1) || duk_is_boolean(ctx, -1)) {
            j->nums[i] = duk_to_number(ctx, -1);
        }
        duk_pop(ctx);
    }
    return 0;
}

static void fields_fatal(void *udata, const char *msg)
{
    (void)udata;
    (void)msg;
    abort(); /* only reached on an engine bug: the job runs protected */
}

int proj_json_fields(const char *json, size_t len, const char *const *names, size_t n,
                     char **strs, double *nums, int *present)
{
    for (size_t i = 0; i < n; i++) {
        strs[i] = NULL;
        nums[i] = 0;
        present[i] = 0;
    }
    duk_context *ctx = duk_create_heap(NULL, NULL, NULL, NULL, fields_fatal);
    if (!ctx)
        return STELE_ENOMEM;
    fields_job j = {json, len, names, n, strs, nums, present, 0};
    if (duk_safe_call(ctx, fields_run, &j, 0, 1) != DUK_EXEC_SUCCESS)
        j.rc = STELE_EINVAL;
    duk_destroy_heap(ctx);
    if (j.rc) {
        for (size_t i = 0; i < n; i++) {
            free(strs[i]);
            strs[i] = NULL;
        }
    }
    return j.rc;
}

/* ------------------------------------------------------------ folding */

int proj_js_fold_start(proj_js *js, const char *raw, size_t len, char *err, size_t errlen)
{
    GUARD(js, err, errlen);
    if (raw)
        duk_push_lstring(js->ctx, raw, len);
    else
        duk_push_null(js->ctx);
    int rc = call_api(js, "foldStart", 1, err, errlen);
    if (!rc)
        duk_pop(js->ctx);
    return rc;
}

int proj_js_fold_event(proj_js *js, const stele_event *e, char *err, size_t errlen)
{
    GUARD(js, err, errlen);
    duk_context *ctx = js->ctx;
    duk_push_lstring(ctx, e->stream, e->stream_len);
    duk_push_lstring(ctx, e->type, e->type_len);
    duk_push_number(ctx, (double)e->revision);
    duk_push_lstring(ctx, e->data_len ? (const char *)e->data : "", e->data_len);
    if (e->metadata_len)
        duk_push_lstring(ctx, (const char *)e->metadata, e->metadata_len);
    else
        duk_push_null(ctx);
    duk_push_uint(ctx, e->flags);
    duk_push_number(ctx, (double)e->created_us);
    duk_push_number(ctx, (double)e->position);
    int rc = call_api(js, "foldEvent", 8, err, errlen);
    if (!rc)
        duk_pop(ctx);
    return rc;
}

int proj_js_fold_json(proj_js *js, buf *out, char *err, size_t errlen)
{
    GUARD(js, err, errlen);
    int rc = call_api(js, "foldJson", 0, err, errlen);
    if (rc)
        return rc;
    if (take_string(js, out)) {
        snprintf(err, errlen, "out of memory");
        return STELE_ENOMEM;
    }
    return 0;
}

/* ------------------------------------------------------------ filters */

struct proj_filter {
    duk_context *ctx;
    char *field;
    char *value; /* canonical JSON of the wanted value */
    const char *json;
    size_t len;
    int eq;
};

static duk_ret_t canon_run(duk_context *ctx, void *udata)
{
    proj_filter *f = udata;
    duk_push_lstring(ctx, f->json, f->len);
    duk_json_decode(ctx, -1);
    duk_json_encode(ctx, -1);
    f->value = dup_str(ctx, -1);
    return 0;
}

static duk_ret_t match_run(duk_context *ctx, void *udata)
{
    proj_filter *f = udata;
    f->eq = 0;
    duk_push_lstring(ctx, f->json, f->len);
    duk_json_decode(ctx, -1);
    if (!duk_is_object(ctx, -1) || duk_is_array(ctx, -1))
        return 0;
    if (!duk_get_prop_string(ctx, -1, f->field))
        return 0;
    duk_json_encode(ctx, -1);
    const char *s = duk_get_string(ctx, -1);
    f->eq = s && !strcmp(s, f->value);
    return 0;
}

int proj_filter_new(const char *field, const char *value, size_t vlen, proj_filter **out)
{
    *out = NULL;
    proj_filter *f = calloc(1, sizeof *f);
    if (!f || !(f->field = strdup(field)) ||
        !(f->ctx = duk_create_heap(NULL, NULL, NULL, NULL, fields_fatal))) {
        if (f)
            free(f->field);
        free(f);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    f->json = value;
    f->len = vlen;
    if (duk_safe_call(f->ctx, canon_run, f, 0, 1) != DUK_EXEC_SUCCESS || !f->value) {
        proj_filter_free(f);
        return err_set(STELE_EINVAL, "the filter value is not JSON (a string needs quotes: "
                                     "\"c-1\")");
    }
    duk_pop(f->ctx);
    *out = f;
    return 0;
}

int proj_filter_match(proj_filter *f, const char *json, size_t len, int *eq)
{
    f->json = json;
    f->len = len;
    *eq = 0;
    int rc = duk_safe_call(f->ctx, match_run, f, 0, 1);
    duk_pop(f->ctx);
    if (rc == DUK_EXEC_SUCCESS)
        *eq = f->eq;
    return 0;
}

void proj_filter_free(proj_filter *f)
{
    if (!f)
        return;
    if (f->ctx)
        duk_destroy_heap(f->ctx);
    free(f->field);
    free(f->value);
    free(f);
}

int proj_js_dump(proj_js *js, buf *out, char *err, size_t errlen)
{
    GUARD(js, err, errlen);
    int rc = call_api(js, "dumpAll", 0, err, errlen);
    if (rc)
        return rc;
    if (take_string(js, out)) {
        snprintf(err, errlen, "out of memory");
        return STELE_ENOMEM;
    }
    return 0;
}
