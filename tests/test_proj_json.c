/*
 * test_proj_json.c - an event's `body` in a handler (parsed in C by
 * src/proj/jsjson.c when it can, else by JSON.parse) is exactly what
 * JSON.parse(e.bodyRaw) gives: same types, values (-0 included), key
 * order, prototypes, an own "__proto__" key; invalid JSON gives undefined.
 *
 * Checked inside the runtime: the handler compares e.body with
 * JSON.parse(e.bodyRaw) by a strict deep comparison and counts mismatches
 * in its state. Fixed documents at the edges of the fast path, then random
 * documents (seeded: TEST_SEED replays a run).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proj/js.h"
#include "testutil.h"

static int passed;

static int no_load(void *ctx, const char *key, size_t klen, int shared, buf *out, uint64_t *pos,
                   int *found)
{
    (void)ctx, (void)key, (void)klen, (void)shared, (void)out, (void)pos;
    *found = 0;
    return 0;
}

static int no_emit(void *ctx, const proj_emit *e)
{
    (void)ctx, (void)e;
    return err_set(STELE_EINVAL, "no emit here");
}

static const char query[] =
    "function same(a, b) {\n"
    "  if (typeof a !== typeof b) return false;\n"
    "  if (typeof a === 'number') return a === b ? (a !== 0 || 1 / a === 1 / b) : (a !== a && b !== b);\n"
    "  if (a === null || b === null || typeof a !== 'object') return a === b;\n"
    "  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;\n"
    "  if (Array.isArray(a) !== Array.isArray(b)) return false;\n"
    "  var ka = Object.getOwnPropertyNames(a), kb = Object.getOwnPropertyNames(b);\n"
    "  if (ka.length !== kb.length) return false;\n"
    "  for (var i = 0; i < ka.length; i++) {\n"
    "    if (ka[i] !== kb[i]) return false;\n"
    "    if (!same(a[ka[i]], b[ka[i]])) return false;\n"
    "  }\n"
    "  return true;\n"
    "}\n"
    "fromAll().when({$init: function () { return {n: 0, bad: 0, first: null}; },\n"
    "  $any: function (s, e) {\n"
    "    var got = e.body;\n" /* first: before bodyRaw is fetched */
    "    var want; try { want = JSON.parse(e.bodyRaw); } catch (x) { want = undefined; }\n"
    "    s.n++;\n"
    "    if (!same(got, want) || e.body !== got || e.data !== got) {\n"
    "      s.bad++;\n"
    "      if (s.first === null) s.first = e.bodyRaw;\n"
    "    }\n"
    "  }});";

static proj_js *js;
static uint64_t pos;

static void feed(const char *doc, size_t len)
{
    stele_event e;
    memset(&e, 0, sizeof e);
    e.stream = "Doc-1";
    e.stream_len = 5;
    e.type = "Doc";
    e.type_len = 3;
    e.data = doc;
    e.data_len = len;
    e.flags = STELE_EVENT_JSON;
    e.position = pos++;
    char err[1024];
    int handled;
    int rc = proj_js_event(js, &e, &handled, err, sizeof err);
    if (rc)
        fprintf(stderr, "handler failed on %.*s: %s\n", (int)len, doc, err);
    CHECK(rc == 0);
}

/* The state's "bad" count must be 0 after n documents. */
static void check_state(uint64_t n)
{
    char err[1024];
    buf b = {0};
    CHECK_OK(proj_js_state(js, "", 0, 0, &b, err, sizeof err));
    char want[64];
    snprintf(want, sizeof want, "{\"n\":%llu,\"bad\":0,", (unsigned long long)n);
    if (b.len < strlen(want) || memcmp(b.p, want, strlen(want)))
        fprintf(stderr, "state: %.*s\n", (int)b.len, (const char *)b.p);
    CHECK(b.len >= strlen(want) && !memcmp(b.p, want, strlen(want)));
    buf_free(&b);
}

static const char *const fixed[] = {
    "{}", "[]", " { } ", "\t[ ]\n", "{\"a\":1}", "[1,2,3]",
    "{\"order_id\":\"o1\",\"customer_id\":\"c1\",\"total_cents\":223}",
    "{\"a\":{\"b\":{\"c\":[1,{\"d\":null}]}}}", "[true,false,null]",
    /* numbers: the fast path's edges and what it leaves to JSON.parse */
    "[0]", "[-0]", "[-0.0]", "[0e5]", "[1e22]", "[1e23]", "[1e-22]", "[1e-23]",
    "[123456789012345]", "[1234567890123456]", "[9007199254740993]", "[0.1]", "[0.3]",
    "[1.5e-7]", "[-2.5E+3]", "[3.14159265358979]", "[3.141592653589793]", "[1E400]",
    "[-1e400]", "[0.000001]", "[100e-2]", "[12.50]", "[0.1000000000000000000001]",
    "[1e0]", "[5e-324]", "[1.7976931348623157e308]", "[123.456e7]", "[-123456789.012345]",
    /* strings */
    "[\"\"]", "[\"a\\\"b\"]", "[\"\\u00e9\"]", "[\"\\ud83d\\ude00\"]", "[\"\xc3\xa9\"]",
    "[\"\xf0\x9f\x98\x80\"]", "[\"tab\\there\"]", "{\"k\\u0041\":1}", "{\"\xc3\xa9\":\"x\"}",
    /* keys */
    "{\"__proto__\":{\"x\":1}}", "{\"a\":1,\"a\":2}", "{\"b\":1,\"a\":2,\"b\":3}",
    "{\"1\":\"x\",\"0\":\"y\",\"b\":1}", "{\"length\":3}", "{\"toString\":1}", "[[[[[[[[[[]]]]]]]]]]",
    /* not for the fast path or not JSON at all */
    "5", "\"s\"", "null", "true", "", " ", "{", "{\"a\":}", "[1,]", "{\"a\":1,}", "[01]",
    "[\"\\ud800\"]", "[\"\\x\"]", "[1 2]", "{\"a\" 1}", "{} {}", "[\"\x80\"]", "[\"a\nb\"]",
    "[.5]", "[1.]", "[-]", "[+1]", "[NaN]", "[Infinity]", "{a:1}", "['x']",
};

/* Random JSON value text into b (depth-bounded), mixing the forms above. */
static void rnd_value(buf *b, int depth)
{
    static const char *const nums[] = {"0", "-0", "1", "-1", "42", "3.5", "-0.25", "1e3",
                                       "2E-5", "123456789012345", "99999999999999999",
                                       "0.1", "6.02e23", "1.0", "10.010"};
    static const char *const strs[] = {"\"\"", "\"a\"", "\"hello world\"", "\"\\n\"",
                                       "\"\\u0041\"", "\"\xc3\xa9t\xc3\xa9\"", "\"x\\\\y\"",
                                       "\"\\ud83d\\ude00\"", "\"__proto__\""};
    uint64_t r = t_rand() % (depth > 3 ? 4 : 7);
    char tmp[64];
    if (r == 0) {
        const char *s = nums[t_rand() % (sizeof nums / sizeof nums[0])];
        buf_append(b, s, strlen(s));
    } else if (r == 1) {
        const char *s = strs[t_rand() % (sizeof strs / sizeof strs[0])];
        buf_append(b, s, strlen(s));
    } else if (r == 2) {
        const char *s = t_rand() % 3 == 0 ? "null" : t_rand() % 2 ? "true" : "false";
        buf_append(b, s, strlen(s));
    } else if (r == 3) {
        int n = snprintf(tmp, sizeof tmp, "%lld", (long long)(t_rand() % 2000001) - 1000000);
        buf_append(b, tmp, (size_t)n);
    } else if (r == 4 || r == 5) {
        int obj = r == 4;
        size_t n = (size_t)(t_rand() % 5);
        buf_append(b, obj ? "{" : "[", 1);
        for (size_t i = 0; i < n; i++) {
            int plain = t_rand() % 4 != 0;
            if (i)
                buf_append(b, plain ? "," : " , ", plain ? 1 : 3);
            if (obj) {
                const char *s = t_rand() % 5 == 0 ? strs[t_rand() % (sizeof strs / sizeof strs[0])]
                                                  : NULL;
                if (s)
                    buf_append(b, s, strlen(s));
                else {
                    int k = snprintf(tmp, sizeof tmp, "\"k%u\"", (unsigned)(t_rand() % 6));
                    buf_append(b, tmp, (size_t)k);
                }
                buf_append(b, ":", 1);
            }
            rnd_value(b, depth + 1);
        }
        buf_append(b, obj ? "}" : "]", 1);
    } else {
        int n = snprintf(tmp, sizeof tmp, "%u.%u", (unsigned)(t_rand() % 100000),
                         (unsigned)(t_rand() % 1000000));
        buf_append(b, tmp, (size_t)n);
    }
}

int main(void)
{
    t_seed();
    proj_js_cb cb = {.load = no_load, .emit = no_emit};
    char err[1024];
    CHECK_OK(proj_js_new(query, strlen(query), 64u << 20, 10000, &cb, &js, err, sizeof err));
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++, n++)
        feed(fixed[i], strlen(fixed[i]));
    check_state(n);
    passed++;

    buf b = {0};
    for (int i = 0; i < 3000; i++, n++) {
        b.len = 0;
        int obj = t_rand() % 2;
        buf_append(&b, obj ? "{\"v\":" : "[", obj ? 5 : 1); /* closed to match below */
        rnd_value(&b, 0);
        buf_append(&b, obj ? "}" : "]", 1);
        feed((const char *)b.p, b.len);
    }
    buf_free(&b);
    check_state(n);
    passed++;

    /* A broken fast path is caught: a non-JSON event says undefined, a
     * JSON one its value (the handler's comparison must see differences). */
    proj_js_free(js);
    static const char q2[] =
        "fromAll().when({$init: function () { return {s: ''}; },\n"
        "  $any: function (s, e) { s.s += JSON.stringify(e.body) + '|'; }});";
    CHECK_OK(proj_js_new(q2, strlen(q2), 64u << 20, 10000, &cb, &js, err, sizeof err));
    static const char *const three[] = {"{\"a\":[1,2.5,-0,\"x\"],\"b\":{\"c\":true}}", "{bad",
                                        "[1e400]"};
    for (int i = 0; i < 3; i++)
        feed(three[i], strlen(three[i]));
    buf s = {0};
    CHECK_OK(proj_js_state(js, "", 0, 0, &s, err, sizeof err));
    static const char want[] = "{\"s\":\"{\\\"a\\\":[1,2.5,0,\\\"x\\\"],\\\"b\\\":{\\\"c\\\":true}}|"
                               "undefined|[null]|\"}";
    if (s.len != strlen(want) || memcmp(s.p, want, s.len))
        fprintf(stderr, "state: %.*s\nwant:  %s\n", (int)s.len, (const char *)s.p, want);
    CHECK(s.len == strlen(want) && !memcmp(s.p, want, s.len));
    buf_free(&s);
    proj_js_free(js);
    passed++;
    return t_done("test_proj_json", passed);
}
