/*
 * test_json.c - the server's JSON module (server/json.c) and URL decoding
 * (server/urlcode.c).
 *
 * Both files are included here (as h2o's unit tests do) so this test builds
 * from tests/ alone and can reach their static helpers; link it with
 * libstele only, not with the server's objects.
 *
 * Parts: append bodies that must parse (spans byte-exact, every JSON type
 * as data, base64), bodies that must fail with a given code and a message
 * naming the place, the validator against RFC 8259 cases, the writers
 * (escaping, numbers, RFC 3339 times, base64, events, errors), URL decoding,
 * and a mutation fuzz loop: the parser must never crash and everything it
 * accepts as JSON data must be valid JSON. Every body is copied into a
 * malloc'd buffer of exactly its length (no NUL after it) so ASan and
 * valgrind catch any read past the end.
 */
#include "../server/json.c"
#include "../server/urlcode.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

/* A parse of a body held in an exact-size copy (the events point into it). */
typedef struct parsed {
    char *body;
    size_t len;
    json_append a;
    int rc;
    char err[256];
} parsed;

static void parse_n(parsed *p, const char *text, size_t len)
{
    p->len = len;
    p->body = malloc(len ? len : 1);
    memcpy(p->body, text, len);
    p->rc = json_parse_append(p->body, len, &p->a, p->err, sizeof p->err);
}

static void parse(parsed *p, const char *text) { parse_n(p, text, strlen(text)); }

static void parsed_free(parsed *p)
{
    json_append_free(&p->a);
    free(p->body);
    p->body = NULL;
}

static int span_is(const void *p, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(p, want, n) == 0;
}

/* Parse a body that must succeed. */
#define PARSE_OK(p, text)                                                        \
    do {                                                                         \
        parse((p), (text));                                                      \
        if ((p)->rc != 0)                                                        \
            fprintf(stderr, "body %s: rc %d: %s\n", (text), (p)->rc, (p)->err); \
        CHECK((p)->rc == 0);                                                     \
    } while (0)

/* ------------------------------------------------------------ valid bodies */

static int test_valid_array(void)
{
    parsed p;
    const char *body =
        "[ {\"type\":\"OrderPlaced\" , \"data\" :  { \"x\" : [1, 2 ,3] ,\n \"s\":\"\\u00e9\" }  ,"
        "\"metadata\":{\"$correlationId\":\"c-1\"},\"tags\":[\"tenant:acme\",\"t\\u00e9\\n\"],"
        "\"id\":\"0190F1A2-7c3e-7b21-9a4e-2f1c0d9e8b7a\"},\n"
        "  {\"type\":\"Second\"} ]";
    PARSE_OK(&p, body);
    CHECK(p.a.n == 2);
    CHECK(p.a.has_expected == 0 && p.a.expected == STELE_ANY);
    const stele_event_in *e = &p.a.events[0];
    CHECK(strcmp(e->type, "OrderPlaced") == 0);
    CHECK(span_is(e->data, e->data_len, "{ \"x\" : [1, 2 ,3] ,\n \"s\":\"\\u00e9\" }"));
    CHECK((const char *)e->data > p.body && (const char *)e->data < p.body + p.len);
    CHECK(span_is(e->metadata, e->metadata_len, "{\"$correlationId\":\"c-1\"}"));
    CHECK(e->flags == (STELE_EVENT_JSON | STELE_META_JSON));
    CHECK(e->ntags == 2);
    CHECK(strcmp(e->tags[0], "tenant:acme") == 0);
    CHECK(strcmp(e->tags[1], "t\xc3\xa9\n") == 0);
    static const uint8_t want_id[16] = {0x01, 0x90, 0xf1, 0xa2, 0x7c, 0x3e, 0x7b, 0x21,
                                        0x9a, 0x4e, 0x2f, 0x1c, 0x0d, 0x9e, 0x8b, 0x7a};
    CHECK(e->id && memcmp(e->id, want_id, 16) == 0);
    e = &p.a.events[1];
    CHECK(strcmp(e->type, "Second") == 0);
    CHECK(e->id == NULL && e->data == NULL && e->data_len == 0 && e->metadata_len == 0);
    CHECK(e->ntags == 0 && e->flags == 0);
    parsed_free(&p);
    return 1;
}

static int test_valid_object(void)
{
    static const struct {
        const char *body;
        int64_t expected;
        int has;
    } cases[] = {
        {"{\"events\":[{\"type\":\"A\"}]}", STELE_ANY, 0},
        {"{\"expectedRevision\":\"any\",\"events\":[{\"type\":\"A\"}]}", STELE_ANY, 1},
        {"{\"events\":[{\"type\":\"A\"}],\"expectedRevision\":\"no_stream\"}", STELE_NO_STREAM, 1},
        {"{\"expectedRevision\":\"stream_exists\",\"events\":[{\"type\":\"A\"}]}",
         STELE_STREAM_EXISTS, 1},
        {"{\"expectedRevision\":0,\"events\":[{\"type\":\"A\"}]}", 0, 1},
        {" {\n\"expectedRevision\" : 42 , \"events\" : [ {\"type\":\"A\"} ] }\n", 42, 1},
        {"{\"expectedRevision\":9223372036854775807,\"events\":[{\"type\":\"A\"}]}", INT64_MAX,
         1},
        /* Escaped keys and values mean the same as plain ones. */
        {"{\"\\u0065vents\":[{\"\\u0074ype\":\"A\"}],\"expectedRevision\":\"n\\u006f_stream\"}",
         STELE_NO_STREAM, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parsed p;
        PARSE_OK(&p, cases[i].body);
        CHECK(p.a.n == 1 && strcmp(p.a.events[0].type, "A") == 0);
        CHECK(p.a.expected == cases[i].expected);
        CHECK(p.a.has_expected == cases[i].has);
        parsed_free(&p);
    }
    return 1;
}

/* Every JSON type as data, with whitespace around it: the span is the
 * value's bytes exactly. */
static int test_data_types(void)
{
    static const char *values[] = {
        "{}", "{ }", "{\"a\" : {\"b\":[ ]}}", "[]", "[1, \"two\", [3], {\"4\":null}]",
        "\"\"", "\"a\\\"b\\\\c\\/\\u0041\\ud83d\\ude00\"", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
        "0", "-0", "-1.5e+3", "1E-7", "123456789012345678901234567890", "0.25",
        "true", "false", "null",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "[{\"type\":\"T\",\"data\" : \t%s\n ,\"metadata\":%s  }]", values[i], values[i]);
        parsed p;
        PARSE_OK(&p, body);
        if (p.rc == 0) {
            const stele_event_in *e = &p.a.events[0];
            CHECK(span_is(e->data, e->data_len, values[i]));
            CHECK(span_is(e->metadata, e->metadata_len, values[i]));
            CHECK(e->flags == (STELE_EVENT_JSON | STELE_META_JSON));
        }
        parsed_free(&p);
    }
    return 1;
}

static int test_base64_bodies(void)
{
    parsed p;
    PARSE_OK(&p, "[{\"type\":\"Bin\",\"dataBase64\":\"aGVsbG8=\",\"contentType\":\"text/plain\","
                 "\"metadataBase64\":\"\\/w==\"},"
                 "{\"type\":\"E\",\"dataBase64\":\"\",\"metadata\":{}}]");
    const stele_event_in *e = &p.a.events[0];
    CHECK(span_is(e->data, e->data_len, "hello"));
    CHECK(e->metadata_len == 1 && ((const uint8_t *)e->metadata)[0] == 0xff);
    CHECK(e->flags == 0);
    e = &p.a.events[1];
    CHECK(e->data_len == 0 && e->flags == STELE_META_JSON);
    parsed_free(&p);

    /* RFC 4648 test vectors. */
    static const char *vec[][2] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                   {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                   {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        uint8_t out[16];
        size_t n = 99, at;
        const char *why;
        CHECK(json_b64_decode(vec[i][1], strlen(vec[i][1]), out, &n, &at, &why) == 0);
        CHECK(span_is(out, n, vec[i][0]));
        buf b = {0};
        CHECK(json_w_base64(&b, vec[i][0], strlen(vec[i][0])) == 0);
        CHECK(b.len == strlen(vec[i][1]) + 2 && memcmp(b.p + 1, vec[i][1], b.len - 2) == 0);
        buf_free(&b);
    }
    /* Strictness: every byte string has one encoding. */
    static const char *bad[] = {"abc", "ab=c", "a===", "=abc", "YR==", "aGVsbG9=", "YQ= =",
                                "YQ==YQ==", "Y Q=", "YQ\n=", "Zm9v-_==", "YQ=A"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t out[16];
        size_t n, at = 999;
        const char *why = NULL;
        CHECK(json_b64_decode(bad[i], strlen(bad[i]), out, &n, &at, &why) == STELE_EINVAL);
        CHECK(why != NULL && at <= strlen(bad[i]));
    }
    /* Random round trips. */
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)t_rand_below(200);
        uint8_t data[200], back[200];
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)t_rand();
        buf b = {0};
        CHECK(json_w_base64(&b, data, len) == 0);
        CHECK(json_validate((const char *)b.p, b.len, NULL, NULL) == 0);
        size_t n, at;
        const char *why;
        CHECK(json_b64_decode((const char *)b.p + 1, b.len - 2, back, &n, &at, &why) == 0);
        CHECK(n == len && memcmp(back, data, len) == 0);
        buf_free(&b);
    }
    return 1;
}

/* ---------------------------------------------------------------- errors */

typedef struct bad_case {
    const char *body;
    int rc;
    int bad_json;
    const char *msg; /* must appear in the message */
} bad_case;

static const bad_case bad_cases[] = {
    /* Malformed JSON. */
    {"", STELE_EINVAL, 1, "invalid JSON: the body is empty"},
    {" \n ", STELE_EINVAL, 1, "invalid JSON at byte 3: unexpected end of input"},
    {"[{\"type\":\"A\"}", STELE_EINVAL, 1, "invalid JSON at byte 13: unexpected end of input"},
    {"[{\"type\":\"A", STELE_EINVAL, 1, "at byte 11: unexpected end of input"},
    {"[{\"type\":\"A\"},]", STELE_EINVAL, 1, "invalid JSON at byte 13: trailing comma"},
    {"[{\"type\":\"A\",}]", STELE_EINVAL, 1, "invalid JSON at byte 12: trailing comma"},
    {"[{'type':\"A\"}]", STELE_EINVAL, 1, "at byte 2: expected a string key (''')"},
    {"[{\"type\":'A'}]", STELE_EINVAL, 1, "at byte 9: unexpected character (''')"},
    {"[{\"type\":\"A\tB\"}]", STELE_EINVAL, 1, "at byte 11: unescaped control character"},
    {"[{\"type\":\"A\nB\"}]", STELE_EINVAL, 1, "at byte 11: unescaped control character"},
    {"[{\"type\":\"A\\xB\"}]", STELE_EINVAL, 1, "at byte 11: invalid escape in string"},
    {"[{\"type\":\"A\\u12G4\"}]", STELE_EINVAL, 1, "at byte 11: invalid \\u escape"},
    {"[{\"type\":\"\\ud800\"}]", STELE_EINVAL, 1, "at byte 10: lone surrogate"},
    {"[{\"type\":\"\\ud800\\u0041\"}]", STELE_EINVAL, 1, "at byte 10: lone surrogate"},
    {"[{\"type\":\"x\\udc00\"}]", STELE_EINVAL, 1, "at byte 11: lone surrogate"},
    {"[{\"type\":\"\\udbff\\udbff\"}]", STELE_EINVAL, 1, "lone surrogate"},
    {"[{\"type\":\"A\xff\"}]", STELE_EINVAL, 1, "at byte 11: invalid UTF-8 in string"},
    {"[{\"type\":\"\xc0\x80\"}]", STELE_EINVAL, 1, "at byte 10: invalid UTF-8"},
    {"[{\"type\":\"\xed\xa0\x80\"}]", STELE_EINVAL, 1, "at byte 10: invalid UTF-8"},
    {"[{\"type\":\"\xe2\x82\"}]", STELE_EINVAL, 1, "at byte 10: invalid UTF-8"},
    {"[{\"type\":\"\xf4\x90\x80\x80\"}]", STELE_EINVAL, 1, "at byte 10: invalid UTF-8"},
    {"[{\"type\":\"A\",\"data\":01}]", STELE_EINVAL, 1, "at byte 20: leading zero in number"},
    {"[{\"type\":\"A\",\"data\":-01}]", STELE_EINVAL, 1, "at byte 21: leading zero"},
    {"[{\"type\":\"A\",\"data\":NaN}]", STELE_EINVAL, 1, "at byte 20: unexpected character ('N')"},
    {"[{\"type\":\"A\",\"data\":-Infinity}]", STELE_EINVAL, 1, "at byte 21: digit expected"},
    {"[{\"type\":\"A\",\"data\":1.}]", STELE_EINVAL, 1, "at byte 22: digit expected"},
    {"[{\"type\":\"A\",\"data\":.5}]", STELE_EINVAL, 1, "unexpected character ('.')"},
    {"[{\"type\":\"A\",\"data\":+1}]", STELE_EINVAL, 1, "unexpected character ('+')"},
    {"[{\"type\":\"A\",\"data\":1e}]", STELE_EINVAL, 1, "at byte 22: digit expected"},
    {"[{\"type\":\"A\",\"data\":0x10}]", STELE_EINVAL, 1, "expected ',' or '}' ('x')"},
    {"[{\"type\":\"A\",\"data\":tru}]", STELE_EINVAL, 1, "at byte 20: invalid literal"},
    {"[{\"type\":\"A\",\"data\":True}]", STELE_EINVAL, 1, "unexpected character ('T')"},
    {"[{\"type\":\"A\",\"data\":nul", STELE_EINVAL, 1, "at byte 23: unexpected end of input"},
    {"[{\"type\":\"A\",\"data\":truex}]", STELE_EINVAL, 1, "at byte 24: expected ',' or '}'"},
    {"[{\"type\":\"A\"}] x", STELE_EINVAL, 1, "at byte 15: data after the JSON value ('x')"},
    {"[{\"type\":\"A\"}][]", STELE_EINVAL, 1, "at byte 14: data after the JSON value"},
    {"[{\"type\" \"A\"}]", STELE_EINVAL, 1, "at byte 9: expected ':'"},
    {"[{\"type\":\"A\"} {\"type\":\"B\"}]", STELE_EINVAL, 1, "at byte 14: expected ',' or ']'"},
    {"[{\"type\":\"A\",,\"data\":1}]", STELE_EINVAL, 1, "expected a string key (',')"},
    {"[,{\"type\":\"A\"}]", STELE_EINVAL, 1, "at byte 1: unexpected character (',')"},
    {"[{\"type\":\"A\"}}", STELE_EINVAL, 1, "at byte 13: expected ',' or ']' ('}')"},
    {"\xef\xbb\xbf[{\"type\":\"A\"}]", STELE_EINVAL, 1, "at byte 0: unexpected character (byte 0xEF)"},
    /* Wrong shapes. */
    {"[{\"type\":5}]", STELE_EINVAL, 0, "event 0: \"type\" must be a string, not a number"},
    {"[{\"type\":null}]", STELE_EINVAL, 0, "event 0: \"type\" must be a string, not null"},
    {"[{\"type\":\"A\",\"tags\":\"x\"}]", STELE_EINVAL, 0,
     "event 0: \"tags\" must be an array of strings, not a string"},
    {"[{\"type\":\"A\"},{\"type\":\"B\",\"tags\":[\"a\",7]}]", STELE_EINVAL, 0,
     "event 1: tag 1 must be a string, not a number"},
    {"[{\"type\":\"A\",\"tags\":[[\"a\"]]}]", STELE_EINVAL, 0,
     "event 0: tag 0 must be a string, not an array"},
    {"[{\"type\":\"A\",\"id\":\"not-a-uuid\"}]", STELE_EINVAL, 0,
     "event 0: \"id\" is not a UUID or a ULID: \"not-a-uuid\""},
    {"[{\"type\":\"A\",\"id\":\"0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7\"}]", STELE_EINVAL, 0,
     "\"id\" is not a UUID"},
    {"[{\"type\":\"A\",\"id\":\"0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7ab\"}]", STELE_EINVAL, 0,
     "\"id\" is not a UUID"},
    {"[{\"type\":\"A\",\"id\":\"0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7\\u0000\"}]", STELE_EINVAL, 0,
     "\"id\" is not a UUID"},
    {"[{\"type\":\"A\",\"id\":12}]", STELE_EINVAL, 0, "event 0: \"id\" must be a string, not a number"},
    {"{\"expectedRevision\":-1,\"events\":[{\"type\":\"A\"}]}", STELE_EINVAL, 0,
     "\"expectedRevision\" must be \"any\", \"no_stream\", \"stream_exists\" or a revision number "
     ">= 0, not -1"},
    {"{\"expectedRevision\":\"maybe\",\"events\":[{\"type\":\"A\"}]}", STELE_EINVAL, 0,
     "a revision number >= 0, not \"maybe\""},
    {"{\"expectedRevision\":\"5\",\"events\":[{\"type\":\"A\"}]}", STELE_EINVAL, 0, "not \"5\""},
    {"{\"expectedRevision\":1.5,\"events\":[{\"type\":\"A\"}]}", STELE_EINVAL, 0, "not 1.5"},
    {"{\"expectedRevision\":1e3,\"events\":[{\"type\":\"A\"}]}", STELE_EINVAL, 0, "not 1e3"},
    {"{\"expectedRevision\":true,\"events\":[{\"type\":\"A\"}]}", STELE_EINVAL, 0,
     "revision number >= 0, not true"},
    {"{\"expectedRevision\":null,\"events\":[{\"type\":\"A\"}]}", STELE_EINVAL, 0, "not null"},
    {"{\"expectedRevision\":9223372036854775808,\"events\":[{\"type\":\"A\"}]}", STELE_EINVAL, 0,
     "\"expectedRevision\" 9223372036854775808 is too large"},
    {"[{\"data\":{}}]", STELE_EINVAL, 0, "event 0: missing \"type\""},
    {"[{\"type\":\"A\"},{\"type\":\"B\"},{\"tpye\":\"C\"}]", STELE_EINVAL, 0,
     "event 2: unknown field \"tpye\""},
    {"[{\"type\":\"A\",\"type\":\"B\"}]", STELE_EINVAL, 0, "event 0: duplicate field \"type\""},
    {"[{\"type\":\"A\",\"\\u0074ype\":\"B\"}]", STELE_EINVAL, 0, "duplicate field \"type\""},
    {"[{\"type\":\"A\",\"data\":1,\"dataBase64\":\"\"}]", STELE_EINVAL, 0,
     "event 0: both \"data\" and \"dataBase64\""},
    {"[{\"type\":\"A\",\"metadataBase64\":\"\",\"metadata\":1}]", STELE_EINVAL, 0,
     "event 0: both \"metadata\" and \"metadataBase64\""},
    {"[{\"type\":\"A\",\"dataBase64\":\"abc\"}]", STELE_EINVAL, 0,
     "event 0: \"dataBase64\" is not valid base64: length is not a multiple of 4"},
    {"[{\"type\":\"A\",\"metadataBase64\":\"ab!d\"}]", STELE_EINVAL, 0,
     "event 0: \"metadataBase64\" is not valid base64: invalid character at character 2"},
    {"[{\"type\":\"A\",\"dataBase64\":{}}]", STELE_EINVAL, 0,
     "event 0: \"dataBase64\" must be a string, not an object"},
    {"[{\"type\":\"A\",\"contentType\":1}]", STELE_EINVAL, 0,
     "event 0: \"contentType\" must be a string, not a number"},
    {"[{\"type\":\"A\\u0000B\"}]", STELE_EINVAL, 0, "event 0: \"type\" contains U+0000"},
    {"[{\"type\":\"A\",\"tags\":[\"x\",\"\\u0000\"]}]", STELE_EINVAL, 0,
     "event 0: tag 1 contains U+0000"},
    {"[{\"type\":\"A\"},[]]", STELE_EINVAL, 0, "event 1: must be an object, not an array"},
    {"[]", STELE_EINVAL, 0, "no events"},
    {" [ ] ", STELE_EINVAL, 0, "no events"},
    {"{\"events\":[]}", STELE_EINVAL, 0, "no events"},
    {"{}", STELE_EINVAL, 0, "missing \"events\""},
    {"{\"expectedRevision\":\"any\"}", STELE_EINVAL, 0, "missing \"events\""},
    {"{\"events\":{}}", STELE_EINVAL, 0, "\"events\" must be an array, not an object"},
    {"{\"events\":[{\"type\":\"A\"}],\"stream\":\"x\"}", STELE_EINVAL, 0,
     "unknown field \"stream\""},
    {"{\"events\":[],\"events\":[]}", STELE_EINVAL, 0, "duplicate field \"events\""},
    {"\"events\"", STELE_EINVAL, 0,
     "the body must be an array of events or an object with \"events\", not a string"},
    {"42", STELE_EINVAL, 0, "not a number"},
    {"null", STELE_EINVAL, 0, "not null"},
};

/* Bodies with an embedded NUL byte: {body, length, message}. */
static const struct {
    const char *body;
    size_t len;
    const char *msg;
} nul_cases[] = {
    {"[{\"type\":\"A\"}]\x00", 15, "at byte 14: data after the JSON value (byte 0x00)"},
    {"[{\"type\":\"A\x00\"}]", 16, "at byte 11: unescaped control character"},
    {"[{\"type\":\"A\"},\x00{\"type\":\"A\"}]", 28, "at byte 14: unexpected character (byte 0x00)"},
};

static int test_errors(void)
{
    int ok = 1;
    for (size_t i = 0; i < sizeof nul_cases / sizeof nul_cases[0]; i++) {
        parsed p;
        parse_n(&p, nul_cases[i].body, nul_cases[i].len);
        if (p.rc != STELE_EINVAL || !p.a.bad_json || !strstr(p.err, nul_cases[i].msg))
            fprintf(stderr, "NUL case %zu: rc %d: %s\n", i, p.rc, p.err);
        CHECK(p.rc == STELE_EINVAL && p.a.bad_json && strstr(p.err, nul_cases[i].msg));
        parsed_free(&p);
    }
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        parsed p;
        parse(&p, c->body);
        int good = p.rc == c->rc && p.a.bad_json == c->bad_json && strstr(p.err, c->msg) &&
                   p.a.events == NULL && p.a.n == 0 && p.a.arena == NULL;
        if (!good) {
            fprintf(stderr, "case %zu %s: rc %d bad_json %d err \"%s\"; want rc %d bad_json %d "
                    "\"%s\"\n", i, c->body, p.rc, p.a.bad_json, p.err, c->rc, c->bad_json,
                    c->msg);
            ok = 0;
        }
        CHECK(good);
        parsed_free(&p);
    }
    return ok;
}

/* Nesting: the body may be JSON_MAX_DEPTH deep, counting the envelope. */
static int test_depth(void)
{
    for (int extra = 60; extra <= 64; extra++) {
        char body[512];
        int n = snprintf(body, sizeof body, "[{\"type\":\"A\",\"data\":");
        for (int i = 0; i < extra; i++)
            body[n++] = '[';
        for (int i = 0; i < extra; i++)
            body[n++] = ']';
        n += snprintf(body + n, sizeof body - (size_t)n, "}]");
        parsed p;
        parse_n(&p, body, (size_t)n);
        if (2 + extra <= JSON_MAX_DEPTH) {
            CHECK(p.rc == 0);
        } else {
            CHECK(p.rc == STELE_EINVAL && p.a.bad_json);
            CHECK(strstr(p.err, "invalid JSON at byte ") && strstr(p.err, "nesting deeper than 64"));
        }
        parsed_free(&p);
    }
    /* Deep nesting far beyond the limit fails fast, without recursion
     * trouble. */
    size_t big = 1000000;
    char *deep = malloc(big);
    memset(deep, '[', big);
    parsed p;
    parse_n(&p, deep, big);
    CHECK(p.rc == STELE_EINVAL && strstr(p.err, "at byte 64: nesting deeper than 64"));
    parsed_free(&p);
    free(deep);
    return 1;
}

static int test_limits(void)
{
    /* JSON_MAX_EVENTS events are fine, one more is too many. */
    const char *ev = "{\"type\":\"a\"},";
    size_t evlen = strlen(ev);
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = JSON_MAX_EVENTS + (size_t)extra;
        char *body = malloc(n * evlen + 2);
        body[0] = '[';
        for (size_t i = 0; i < n; i++)
            memcpy(body + 1 + i * evlen, ev, evlen);
        body[n * evlen] = ']';
        parsed p;
        parse_n(&p, body, n * evlen + 1);
        if (extra) {
            CHECK(p.rc == STELE_ETOOBIG && strstr(p.err, "100001 events, more than 100000"));
        } else {
            CHECK(p.rc == 0 && p.a.n == n);
            CHECK(strcmp(p.a.events[n - 1].type, "a") == 0);
        }
        parsed_free(&p);
        free(body);
    }
    /* 64 tags, then 65. */
    for (int ntags = 64; ntags <= 65; ntags++) {
        char body[2048];
        int n = snprintf(body, sizeof body, "[{\"type\":\"A\",\"tags\":[");
        for (int i = 0; i < ntags; i++)
            n += snprintf(body + n, sizeof body - (size_t)n, "%s\"t%d\"", i ? "," : "", i);
        n += snprintf(body + n, sizeof body - (size_t)n, "]}]");
        parsed p;
        parse_n(&p, body, (size_t)n);
        if (ntags == 64) {
            CHECK(p.rc == 0 && p.a.events[0].ntags == 64);
            CHECK(strcmp(p.a.events[0].tags[63], "t63") == 0);
        } else {
            CHECK(p.rc == STELE_EINVAL && strstr(p.err, "event 0: 65 tags, more than 64"));
        }
        parsed_free(&p);
    }
    /* Too many values overall: the tokenizer's memory is bounded. */
    size_t nvals = JSON_MAX_VALUES + 1;
    size_t len = 23 + 2 * nvals;
    char *body = malloc(len);
    size_t o = (size_t)sprintf(body, "[{\"type\":\"A\",\"data\":[");
    for (size_t i = 0; i < nvals - 4; i++) {
        body[o++] = '0';
        body[o++] = ',';
    }
    body[o - 1] = ']';
    body[o++] = '}';
    body[o++] = ']';
    parsed p;
    parse_n(&p, body, o);
    CHECK(p.rc == STELE_ETOOBIG && strstr(p.err, "JSON values, more than 4194304"));
    parsed_free(&p);
    free(body);
    return 1;
}

/* --------------------------------------------------------------- validator */

static int test_validator(void)
{
    static const char *yes[] = {
        "0", "-0", "1", "-1.0e10", "1E+2", "0.000001", "[]", "{}", "\"\"", " [ 1 , 2 ] ",
        "{\"a\":{\"b\":{\"c\":[true,false,null]}}}", "\"\\u0000\"", "\"\\ud834\\udd1e\"",
        "\"\\uD834\\uDD1E\"", "\"\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "{\"\":0}", "{\"a\":1,\"a\":2}", "\t\r\n[\t\r\n]\t\r\n",
        "1.5", "[-0.0e-0]",
    };
    static const char *no[] = {
        "", " ", "[", "]", "[1,]", "[,1]", "{,}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{1:1}",
        "{\"a\":1,}", "[1 2]", "01", "1.", ".1", "1e", "1e+", "-", "--1", "+1", "0x1", "1.e1",
        "Infinity", "NaN", "nul", "truee", "TRUE", "'a'", "\"a", "\"\\\"", "\"\\a\"",
        "\"\\u12\"", "\"\\ud800\"", "\"\\udfff\"", "\"\\ud800\\ud800\"", "\"\x01\"",
        "\"\x80\"", "\"\xc1\xbf\"", "\"\xe0\x9f\xbf\"", "\"\xed\xbf\xbf\"", "\"\xf0\x8f\xbf\xbf\"",
        "\"\xf4\x90\x80\x80\"", "\"\xf5\x80\x80\x80\"", "\"\xff\"", "[1]x", "[1] [2]", "1 2",
        "[\"a\"\"b\"]", "/* */ 1", "[1]//",
    };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        size_t at = 0;
        const char *why = NULL;
        int rc = json_validate(yes[i], strlen(yes[i]), &at, &why);
        if (rc)
            fprintf(stderr, "should be valid: %s (%s at %zu)\n", yes[i], why, at);
        CHECK(rc == 0);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        size_t at = 99999;
        const char *why = NULL;
        int rc = json_validate(no[i], strlen(no[i]), &at, &why);
        if (rc == 0)
            fprintf(stderr, "should be invalid: %s\n", no[i]);
        CHECK(rc == STELE_EINVAL && why && at <= strlen(no[i]));
    }
    /* An embedded NUL outside a string is not whitespace. */
    CHECK(json_validate("[1]\0", 4, NULL, NULL) == STELE_EINVAL);
    CHECK(json_validate("[1,\0 2]", 6, NULL, NULL) == STELE_EINVAL);
    return 1;
}

/* ----------------------------------------------------------------- writers */

static int buf_has(const buf *b, const char *part)
{
    return memmem(b->p, b->len, part, strlen(part)) != NULL;
}

static int buf_ends(const buf *b, const char *tail)
{
    size_t n = strlen(tail);
    return b->len >= n && memcmp(b->p + b->len - n, tail, n) == 0;
}

static int buf_is(const buf *b, const char *want)
{
    int ok = b->len == strlen(want) && memcmp(b->p, want, b->len) == 0;
    if (!ok)
        fprintf(stderr, "got  %.*s\nwant %s\n", (int)b->len, (const char *)b->p, want);
    return ok;
}

static int test_w_str(void)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"", 0, "\"\""},
        {"plain", 5, "\"plain\""},
        {"a\"b\\c/d", 7, "\"a\\\"b\\\\c/d\""},
        {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
        {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\""},
        {"nul\0x", 5, "\"nul\\u0000x\""},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
        {"\xc2\x85", 2, "\"\xc2\x85\""}, /* C1 control: valid UTF-8, legal in JSON */
        {"bad\xff!", 5, "\"bad\\ufffd!\""},
        {"\xe2\x82", 2, "\"\\ufffd\\ufffd\""},
        {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},
        {"\xc0\xaf", 2, "\"\\ufffd\\ufffd\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b = {0};
        CHECK(json_w_str(&b, cases[i].in, cases[i].len) == 0);
        CHECK(buf_is(&b, cases[i].out));
        CHECK(json_validate((const char *)b.p, b.len, NULL, NULL) == 0);
        buf_free(&b);
    }
    /* Random strings of valid UTF-8 and control characters come back
     * unchanged through the writer and the parser's unescaper. */
    static const uint32_t pool[] = {0, 1, 0x1f, ' ', '"', '\\', '/', 'a', 0x7f, 0x80, 0x7ff,
                                    0x800, 0xfffd, 0xffff, 0x10000, 0x10ffff, 0xe9, 0x20ac};
    for (int round = 0; round < 2000; round++) {
        char s[400];
        size_t n = 0, count = (size_t)t_rand_below(60);
        for (size_t k = 0; k < count; k++) {
            uint32_t cp = pool[t_rand_below(sizeof pool / sizeof pool[0])];
            if (cp < 0x80) {
                s[n++] = (char)cp;
            } else if (cp < 0x800) {
                s[n++] = (char)(0xc0 | cp >> 6);
                s[n++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                s[n++] = (char)(0xe0 | cp >> 12);
                s[n++] = (char)(0x80 | (cp >> 6 & 0x3f));
                s[n++] = (char)(0x80 | (cp & 0x3f));
            } else {
                s[n++] = (char)(0xf0 | cp >> 18);
                s[n++] = (char)(0x80 | (cp >> 12 & 0x3f));
                s[n++] = (char)(0x80 | (cp >> 6 & 0x3f));
                s[n++] = (char)(0x80 | (cp & 0x3f));
            }
        }
        buf b = {0};
        CHECK(json_w_str(&b, s, n) == 0);
        CHECK(json_validate((const char *)b.p, b.len, NULL, NULL) == 0);
        char back[400];
        size_t m = str_unescape((const char *)b.p + 1, b.len - 2, back);
        CHECK(m == n && memcmp(back, s, n) == 0);
        buf_free(&b);
    }
    return 1;
}

static int test_w_numbers_times(void)
{
    buf b = {0};
    CHECK(json_w_u64(&b, 0) == 0 && buf_is(&b, "0"));
    b.len = 0;
    CHECK(json_w_u64(&b, 18446744073709551615ull) == 0 && buf_is(&b, "18446744073709551615"));
    b.len = 0;
    CHECK(json_w_u64(&b, 1000000) == 0 && buf_is(&b, "1000000"));

    static const struct {
        int64_t us;
        const char *text;
    } times[] = {
        {0, "\"1970-01-01T00:00:00.000000Z\""},
        {1000000000000000LL + 123456, "\"2001-09-09T01:46:40.123456Z\""},
        {-1, "\"1969-12-31T23:59:59.999999Z\""},
        {951782400000000LL, "\"2000-02-29T00:00:00.000000Z\""},
        {1795451400123456LL, "\"2026-11-23T16:30:00.123456Z\""},
        {253402300799999999LL, "\"9999-12-31T23:59:59.999999Z\""},
        {INT64_MAX, "\"9999-12-31T23:59:59.999999Z\""},
        {-62167219200000000LL, "\"0000-01-01T00:00:00.000000Z\""},
        {INT64_MIN, "\"0000-01-01T00:00:00.000000Z\""},
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        b.len = 0;
        CHECK(json_w_time_rfc3339(&b, times[i].us) == 0);
        CHECK(buf_is(&b, times[i].text));
    }
    /* Random times against the C library. */
    for (int round = 0; round < 20000; round++) {
        int64_t us = (int64_t)(t_rand() % 253402300800000000ull) - 62135596800000000LL / 2;
        time_t secs = (time_t)(us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000));
        long frac = (long)(us - (int64_t)secs * 1000000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        char want[64];
        snprintf(want, sizeof want, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\"", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
        b.len = 0;
        CHECK(json_w_time_rfc3339(&b, us) == 0);
        CHECK(buf_is(&b, want));
    }
    buf_free(&b);
    return 1;
}

static int test_w_event(void)
{
    static const uint8_t id[16] = {0x01, 0x90, 0xf1, 0xa2, 0x7c, 0x3e, 0x7b, 0x21,
                                   0x9a, 0x4e, 0x2f, 0x1c, 0x0d, 0x9e, 0x8b, 0x7a};
    const char *tags[] = {"tenant:acme", "q\"t"};
    stele_event e = {0};
    memcpy(e.id, id, 16);
    e.stream = "Order-1";
    e.stream_len = 7;
    e.type = "OrderPlaced";
    e.type_len = 11;
    e.data = "{\"orderId\":\"1\", \"total\":42}";
    e.data_len = strlen(e.data);
    e.metadata = "{\"$correlationId\":\"c-1\"}";
    e.metadata_len = strlen(e.metadata);
    e.tags = tags;
    e.ntags = 2;
    e.flags = STELE_EVENT_JSON | STELE_META_JSON;
    e.created_us = 1795451400123456LL;
    e.revision = 0;
    e.position = 17;
    buf b = {0};
    CHECK(json_w_event(&b, &e) == 0);
    CHECK(buf_is(&b, "{\"id\":\"0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7a\",\"stream\":\"Order-1\","
                     "\"type\":\"OrderPlaced\",\"revision\":0,\"position\":17,"
                     "\"created\":\"2026-11-23T16:30:00.123456Z\","
                     "\"data\":{\"orderId\":\"1\", \"total\":42},"
                     "\"metadata\":{\"$correlationId\":\"c-1\"},"
                     "\"tags\":[\"tenant:acme\",\"q\\\"t\"]}"));
    CHECK(json_validate((const char *)b.p, b.len, NULL, NULL) == 0);

    /* Binary data, no metadata, no tags. */
    e.data = "\x00\xff\x10";
    e.data_len = 3;
    e.metadata_len = 0;
    e.ntags = 0;
    e.flags = 0;
    e.revision = 18446744073709551614ull;
    b.len = 0;
    CHECK(json_w_event(&b, &e) == 0);
    CHECK(buf_is(&b, "{\"id\":\"0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7a\",\"stream\":\"Order-1\","
                     "\"type\":\"OrderPlaced\",\"revision\":18446744073709551614,\"position\":17,"
                     "\"created\":\"2026-11-23T16:30:00.123456Z\",\"dataBase64\":\"AP8Q\"}"));
    /* Binary metadata, no data. */
    e.data_len = 0;
    e.metadata = "hi";
    e.metadata_len = 2;
    b.len = 0;
    CHECK(json_w_event(&b, &e) == 0);
    CHECK(!buf_has(&b, "\"dataBase64\"") && !buf_has(&b, "\"data\""));
    CHECK(buf_ends(&b, "\"created\":\"2026-11-23T16:30:00.123456Z\",\"metadataBase64\":\"aGk=\"}"));
    CHECK(json_validate((const char *)b.p, b.len, NULL, NULL) == 0);

    /* A parsed body, "stored" and written back: data and metadata come back
     * byte for byte, binary as base64. */
    parsed p;
    PARSE_OK(&p, "[{\"type\":\"T\\u00e9\",\"data\":[1, {\"a\" : \"\\u00e9\"}],"
                 "\"metadataBase64\":\"AAEC\",\"tags\":[\"x\\ty\"]}]");
    const stele_event_in *in = &p.a.events[0];
    stele_event out = {0};
    out.stream = "s";
    out.stream_len = 1;
    out.type = in->type;
    out.type_len = strlen(in->type);
    out.data = in->data;
    out.data_len = in->data_len;
    out.metadata = in->metadata;
    out.metadata_len = in->metadata_len;
    out.tags = in->tags;
    out.ntags = in->ntags;
    out.flags = in->flags;
    b.len = 0;
    CHECK(json_w_event(&b, &out) == 0);
    CHECK(buf_is(&b, "{\"id\":\"00000000-0000-0000-0000-000000000000\",\"stream\":\"s\","
                     "\"type\":\"T\xc3\xa9\",\"revision\":0,\"position\":0,"
                     "\"created\":\"1970-01-01T00:00:00.000000Z\","
                     "\"data\":[1, {\"a\" : \"\\u00e9\"}],\"metadataBase64\":\"AAEC\","
                     "\"tags\":[\"x\\ty\"]}"));
    parsed_free(&p);
    buf_free(&b);
    return 1;
}

static int test_w_error(void)
{
    buf b = {0};
    CHECK(json_w_error(&b, "INVALID_JSON", "invalid JSON at byte 3: \"x\"\n") == 0);
    CHECK(buf_is(&b, "{\"error\":{\"code\":\"INVALID_JSON\","
                     "\"message\":\"invalid JSON at byte 3: \\\"x\\\"\\n\"}}"));
    b.len = 0;
    CHECK(json_w_error_rev(&b, "WRONG_EXPECTED_REVISION", "stream 'Order-1': expected revision "
                           "no_stream, but its revision is 0", 0) == 0);
    CHECK(buf_is(&b, "{\"error\":{\"code\":\"WRONG_EXPECTED_REVISION\",\"message\":\"stream "
                     "'Order-1': expected revision no_stream, but its revision is 0\","
                     "\"currentRevision\":0}}"));
    b.len = 0;
    CHECK(json_w_error_rev(&b, "WRONG_EXPECTED_REVISION", "m", STELE_NONE) == 0);
    CHECK(buf_is(&b, "{\"error\":{\"code\":\"WRONG_EXPECTED_REVISION\",\"message\":\"m\","
                     "\"currentRevision\":null}}"));
    b.len = 0;
    CHECK(json_w_error_rev(&b, "C", "m", 12345) == 0);
    CHECK(buf_is(&b, "{\"error\":{\"code\":\"C\",\"message\":\"m\",\"currentRevision\":12345}}"));
    buf_free(&b);
    return 1;
}

/* --------------------------------------------------------------------- url */

static int test_url(void)
{
    char out[16];
    size_t n = 99;
    CHECK(url_decode("Order%2D1", 9, out, sizeof out, &n) == 0 && strcmp(out, "Order-1") == 0 &&
          n == 7);
    CHECK(url_decode("a+b%2fc%2F", 10, out, sizeof out, &n) == 0 && strcmp(out, "a+b/c/") == 0);
    CHECK(url_decode("%41%62%e2%82%ac", 15, out, sizeof out, &n) == 0 &&
          strcmp(out, "Ab\xe2\x82\xac") == 0 && n == 5);
    CHECK(url_decode("", 0, out, sizeof out, NULL) == 0 && out[0] == '\0');
    CHECK(url_decode("%", 1, out, sizeof out, NULL) == STELE_EINVAL);
    CHECK(url_decode("a%4", 3, out, sizeof out, NULL) == STELE_EINVAL);
    CHECK(url_decode("%zz", 3, out, sizeof out, NULL) == STELE_EINVAL);
    CHECK(url_decode("%4g", 3, out, sizeof out, NULL) == STELE_EINVAL);
    CHECK(url_decode("a%00b", 5, out, sizeof out, NULL) == STELE_EINVAL);
    /* The length bounds the input: "%41" cut to "%4" is invalid. */
    CHECK(url_decode("%41", 2, out, sizeof out, NULL) == STELE_EINVAL);
    CHECK(url_decode("0123456789abcde", 15, out, sizeof out, &n) == 0 && n == 15);
    CHECK(url_decode("0123456789abcdef", 16, out, sizeof out, NULL) == STELE_ETOOBIG);
    CHECK(url_decode("x", 1, out, 1, NULL) == STELE_ETOOBIG);
    CHECK(url_decode("x", 1, out, 0, NULL) == STELE_ETOOBIG);

    const char *q = "from=10&direction=backwards&limit=5&tombstone&&q=a+b%20c&fr%6Fm=7";
    size_t ql = strlen(q);
    CHECK(query_get(q, ql, "from", out, sizeof out) == 1 && strcmp(out, "10") == 0);
    CHECK(query_get(q, ql, "direction", out, sizeof out) == 1 && strcmp(out, "backwards") == 0);
    CHECK(query_get(q, ql, "limit", out, sizeof out) == 1 && strcmp(out, "5") == 0);
    CHECK(query_get(q, ql, "tombstone", out, sizeof out) == 1 && strcmp(out, "") == 0);
    CHECK(query_get(q, ql, "q", out, sizeof out) == 1 && strcmp(out, "a b c") == 0);
    CHECK(query_get(q, ql, "missing", out, sizeof out) == 0 && out[0] == '\0');
    CHECK(query_get(q, ql, "fro", out, sizeof out) == 0);
    CHECK(query_get(q, ql, "", out, sizeof out) == 0);
    CHECK(query_get("fr%6Fm=7", 8, "from", out, sizeof out) == 1 && strcmp(out, "7") == 0);
    CHECK(query_get("fromage=1&from=2", 16, "from", out, sizeof out) == 1 &&
          strcmp(out, "2") == 0);
    CHECK(query_get("from=1&from=2", 13, "from", out, sizeof out) == 1 && strcmp(out, "1") == 0);
    CHECK(query_get("a=%zz&from=3", 12, "from", out, sizeof out) == 1 && strcmp(out, "3") == 0);
    CHECK(query_get("from=%zz", 8, "from", out, sizeof out) == STELE_EINVAL && out[0] == '\0');
    CHECK(query_get("from=%00", 8, "from", out, sizeof out) == STELE_EINVAL);
    CHECK(query_get("from=0123456789abcdef", 21, "from", out, sizeof out) == STELE_ETOOBIG);
    CHECK(query_get("from=a=b", 8, "from", out, sizeof out) == 1 && strcmp(out, "a=b") == 0);
    CHECK(query_get("", 0, "from", out, sizeof out) == 0);
    CHECK(query_get("&", 1, "from", out, sizeof out) == 0);
    CHECK(query_get("=5", 2, "", out, sizeof out) == 1 && strcmp(out, "5") == 0);
    /* The length bounds the query: "from=12" cut after "from=1". */
    CHECK(query_get("from=12", 6, "from", out, sizeof out) == 1 && strcmp(out, "1") == 0);

    /* Path segments (the routes' /rules/{name}/..., /subscriptions/...). */
    const char *seg[3];
    size_t sl[3];
    CHECK(url_path_split("a//bc/", 6, seg, sl, 3) == -1);
    CHECK(url_path_split("a//bc/", 5, seg, sl, 3) == 3 && sl[0] == 1 && sl[1] == 0 && sl[2] == 2 &&
          !memcmp(seg[2], "bc", 2));
    CHECK(url_path_split("x/", 2, seg, sl, 3) == 2 && sl[0] == 1 && sl[1] == 0);
    CHECK(url_path_split("", 0, seg, sl, 3) == 1 && sl[0] == 0);
    CHECK(url_path_split("a/b/c/d", 7, seg, sl, 3) == -1);
    CHECK(url_decode_name("Order%2D1", 9, out, sizeof out) == 0 && strcmp(out, "Order-1") == 0);
    CHECK(url_decode_name("", 0, out, sizeof out) == -1);
    CHECK(url_decode_name("a%00", 4, out, sizeof out) == -1);
    CHECK(url_decode_name("0123456789abcdef", 16, out, sizeof out) == -1);
    return 1;
}

/* -------------------------------------------------------------------- fuzz */

static const char *const seeds[] = {
    "[{\"type\":\"OrderPlaced\",\"data\":{\"orderId\":\"1\",\"total\":42.5e1},"
    "\"metadata\":{\"$correlationId\":\"c-1\"},\"tags\":[\"tenant:acme\"]}]",
    "{\"expectedRevision\":5,\"events\":[{\"id\":\"0190f1a2-7c3e-7b21-9a4e-2f1c0d9e8b7a\","
    "\"type\":\"A\",\"data\":[1,-2,\"\\u00e9\\ud83d\\ude00\",null,true,false,{}]},"
    "{\"type\":\"B\",\"dataBase64\":\"aGVsbG8=\",\"contentType\":\"x\"}]}",
    "[ {\"type\":\"caf\xc3\xa9\", \"data\" : \"str\\n\\\"q\\\"\" , \"metadata\": -0.5 } ,"
    "{\"type\":\"T\",\"data\":[[[[{\"a\":[0]}]]]],\"metadataBase64\":\"\\/w==\"} ]",
    "{\"events\":[{\"type\":\"x\",\"data\":null,\"tags\":[]}],\"expectedRevision\":\"no_stream\"}",
};

static void fuzz_check_accepted(const parsed *p)
{
    CHECK(p->a.n >= 1 && p->a.events);
    for (size_t i = 0; i < p->a.n; i++) {
        const stele_event_in *e = &p->a.events[i];
        CHECK(e->type != NULL);
        struct {
            const void *ptr;
            size_t len;
            uint32_t flag;
        } spans[2] = {{e->data, e->data_len, e->flags & STELE_EVENT_JSON},
                      {e->metadata, e->metadata_len, e->flags & STELE_META_JSON}};
        for (int k = 0; k < 2; k++) {
            if (!spans[k].flag)
                continue;
            const char *s = spans[k].ptr;
            size_t n = spans[k].len;
            CHECK(n > 0 && s >= p->body && s + n <= p->body + p->len);
            CHECK(json_validate(s, n, NULL, NULL) == 0);
            CHECK(s[0] != ' ' && s[0] != '\n' && s[n - 1] != ' ' && s[n - 1] != '\n');
        }
        for (size_t t = 0; t < e->ntags; t++)
            CHECK(e->tags[t] != NULL);
    }
}

static int test_fuzz(void)
{
    static const char interesting[] = "{}[],:\"\\ 0123456789-+.eEtfnul\x00\x1f\x80\xc3\xa9\xff";
    long iterations = getenv("TEST_QUICK") ? 10000 : 100000;
    long accepted = 0, bad_json = 0, bad_shape = 0;
    char work[1024];
    for (long it = 0; it < iterations; it++) {
        const char *seed = seeds[t_rand_below(sizeof seeds / sizeof seeds[0])];
        size_t len = strlen(seed);
        memcpy(work, seed, len);
        int nmut = 1 + (int)t_rand_below(4);
        for (int m = 0; m < nmut && len > 0; m++) {
            size_t at = (size_t)t_rand_below(len);
            switch (t_rand_below(6)) {
            case 0: /* random byte */
                work[at] = (char)t_rand();
                break;
            case 1: /* interesting byte */
                work[at] = interesting[t_rand_below(sizeof interesting - 1)];
                break;
            case 2: /* flip a bit */
                work[at] ^= (char)(1 << t_rand_below(8));
                break;
            case 3: /* truncate */
                len = at;
                break;
            case 4: /* insert */
                if (len < sizeof work - 1) {
                    memmove(work + at + 1, work + at, len - at);
                    work[at] = interesting[t_rand_below(sizeof interesting - 1)];
                    len++;
                }
                break;
            default: /* delete */
                memmove(work + at, work + at + 1, len - at - 1);
                len--;
                break;
            }
        }
        parsed p;
        parse_n(&p, work, len);
        int valid = json_validate(p.body, len, NULL, NULL) == 0;
        if (p.rc == 0) {
            accepted++;
            CHECK(valid);
            fuzz_check_accepted(&p);
        } else {
            CHECK(p.rc == STELE_EINVAL || p.rc == STELE_ETOOBIG);
            CHECK(p.err[0] != '\0');
            CHECK(p.a.bad_json == !valid);
            if (p.a.bad_json)
                bad_json++;
            else
                bad_shape++;
        }
        parsed_free(&p);
    }
    printf("fuzz: %ld bodies: %ld accepted, %ld invalid JSON, %ld wrong shape\n", iterations,
           accepted, bad_json, bad_shape);
    CHECK(accepted > 0 && bad_json > 0 && bad_shape > 0);
    return 1;
}

/* A small body tokenizes on the parser's stack; one with more values
 * than that array holds (short numbers: many values per byte) moves its
 * tokens to the heap mid-scan, and must parse the same. */
static int test_many_values(void)
{
    for (int values = 100; values <= 700; values += 150) {
        char body[4096];
        int n = snprintf(body, sizeof body, "[{\"type\":\"a\",\"data\":[");
        for (int i = 0; i < values; i++)
            n += snprintf(body + n, sizeof body - (size_t)n, "%s%d", i ? "," : "", i % 10);
        int data_end = n + 1;
        n += snprintf(body + n, sizeof body - (size_t)n,
                      "]},{\"type\":\"b\",\"data\":{\"k\":\"v\"},\"metadata\":[true]}]");
        parsed p;
        parse_n(&p, body, (size_t)n);
        CHECK(p.rc == 0 && p.a.n == 2);
        CHECK(!strcmp(p.a.events[0].type, "a") && !strcmp(p.a.events[1].type, "b"));
        CHECK((const char *)p.a.events[0].data == p.body + 20);
        CHECK(p.a.events[0].data_len == (size_t)(data_end - 20));
        CHECK(span_is(p.a.events[1].data, p.a.events[1].data_len, "{\"k\":\"v\"}"));
        CHECK(span_is(p.a.events[1].metadata, p.a.events[1].metadata_len, "[true]"));
        parsed_free(&p);
        /* The same with a trailing comma in the long array: the error's
         * offset is exact, and nothing leaks (valgrind). */
        memcpy(body + data_end - 1, ",]", 2);
        n = data_end + 1;
        n += snprintf(body + n, sizeof body - (size_t)n, "}]");
        parse_n(&p, body, (size_t)n);
        char want[64];
        snprintf(want, sizeof want, "invalid JSON at byte %d: trailing comma", data_end - 1);
        CHECK(p.rc == STELE_EINVAL && p.a.bad_json && strstr(p.err, want));
        parsed_free(&p);
    }
    return 1;
}

int main(void)
{
    t_seed();
    int passed = 0;
    passed += test_valid_array();
    passed += test_valid_object();
    passed += test_data_types();
    passed += test_base64_bodies();
    passed += test_errors();
    passed += test_depth();
    passed += test_limits();
    passed += test_many_values();
    passed += test_validator();
    passed += test_w_str();
    passed += test_w_numbers_times();
    passed += test_w_event();
    passed += test_w_error();
    passed += test_url();
    passed += test_fuzz();
    return t_done("test_json", passed);
}
