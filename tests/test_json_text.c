/*
 * test_json_text.c - the shared JSON text module (src/util/json_text.c):
 * \u escapes and surrogate pairs, UTF-8 per Unicode table 3-7, strict
 * unescaping with its capacity bound, escaping of arbitrary bytes, and the
 * validator's messages. Then random strings: whatever jtext_escape writes
 * is valid JSON and decodes back to the input when the input is valid
 * UTF-8; a string the validator accepts always unescapes, and one it
 * rejects for its escapes never does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "util/json_text.h"

static int test_hex4(void)
{
    CHECK(jtext_hex4("0000") == 0);
    CHECK(jtext_hex4("00e9") == 0xe9);
    CHECK(jtext_hex4("FFfF") == 0xffff);
    CHECK(jtext_hex4("D83D") == 0xd83d);
    CHECK(jtext_hex4("12G4") == -1);
    CHECK(jtext_hex4("-123") == -1);
    CHECK(jtext_hex4("12 4") == -1);
    return 1;
}

static int test_utf8(void)
{
    struct {
        const char *s;
        size_t want;
    } cases[] = {
        {"\xc3\xa9", 2},             /* é */
        {"\xe2\x82\xac", 3},         /* € */
        {"\xf0\x9f\x98\x80", 4},     /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 4},     /* U+10FFFF */
        {"\xc0\xaf", 0},             /* overlong '/' */
        {"\xc1\xbf", 0},             /* overlong */
        {"\xe0\x80\xaf", 0},         /* overlong 3-byte */
        {"\xf0\x80\x80\xaf", 0},     /* overlong 4-byte */
        {"\xed\xa0\x80", 0},         /* U+D800, a surrogate */
        {"\xed\xbf\xbf", 0},         /* U+DFFF */
        {"\xf4\x90\x80\x80", 0},     /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 0},     /* no such lead byte */
        {"\x80", 0},                 /* stray continuation */
        {"\xc3\x28", 0},             /* bad continuation */
        {"\xe2\x82", 0},             /* cut short */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].s);
        size_t got = jtext_utf8_seq((const uint8_t *)cases[i].s, n);
        if (got != cases[i].want)
            fprintf(stderr, "utf8 case %zu: got %zu want %zu\n", i, got, cases[i].want);
        CHECK(got == cases[i].want);
    }
    uint8_t u[4];
    CHECK(jtext_utf8_put(0x41, u) == 1 && u[0] == 0x41);
    CHECK(jtext_utf8_put(0xe9, u) == 2 && !memcmp(u, "\xc3\xa9", 2));
    CHECK(jtext_utf8_put(0x20ac, u) == 3 && !memcmp(u, "\xe2\x82\xac", 3));
    CHECK(jtext_utf8_put(0x1f600, u) == 4 && !memcmp(u, "\xf0\x9f\x98\x80", 4));
    return 1;
}

static int test_u_escape(void)
{
    uint32_t cp = 0;
    CHECK(jtext_u_escape("\\u00e9", 6, &cp) == 6 && cp == 0xe9);
    CHECK(jtext_u_escape("\\ud83d\\ude00", 12, &cp) == 12 && cp == 0x1f600);
    CHECK(jtext_u_escape("\\uD83D\\uDE00xyz", 15, &cp) == 12 && cp == 0x1f600);
    CHECK(jtext_u_escape("\\u00e", 5, &cp) == JTEXT_U_SHORT);
    CHECK(jtext_u_escape("\\u0g00", 6, &cp) == JTEXT_U_HEX);
    CHECK(jtext_u_escape("\\udc00", 6, &cp) == JTEXT_U_LONE);        /* low first */
    CHECK(jtext_u_escape("\\ud800", 6, &cp) == JTEXT_U_LONE);        /* high at the end */
    CHECK(jtext_u_escape("\\ud800\\u0041", 12, &cp) == JTEXT_U_LONE); /* high, then no low */
    CHECK(jtext_u_escape("\\ud800\\ud800", 12, &cp) == JTEXT_U_LONE);
    CHECK(jtext_u_escape("\\ud800\\udc0", 11, &cp) == JTEXT_U_LONE);  /* low cut short */
    CHECK(jtext_u_escape("\\ud800x\\udc00", 13, &cp) == JTEXT_U_LONE);
    return 1;
}

static long unesc(const char *raw, char *out, size_t cap)
{
    return jtext_unescape(raw, strlen(raw), out, cap);
}

static int test_unescape(void)
{
    char out[64];
    long n = unesc("a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t", out, sizeof out);
    CHECK(n == 12 && !memcmp(out, "a\"b\\c/d\b\f\n\r\t", 12));
    n = unesc("caf\\u00e9 \\ud83d\\ude00", out, sizeof out);
    CHECK(n == 10 && !memcmp(out, "caf\xc3\xa9 \xf0\x9f\x98\x80", 10));
    n = unesc("x\\u0000y", out, sizeof out); /* a NUL byte: the caller decides */
    CHECK(n == 3 && out[1] == 0);
    CHECK(unesc("\\q", out, sizeof out) == -1);
    CHECK(unesc("abc\\", out, sizeof out) == -1);
    CHECK(unesc("\\u12", out, sizeof out) == -1);
    CHECK(unesc("\\udc00", out, sizeof out) == -1);
    CHECK(unesc("\\ud800", out, sizeof out) == -1);
    /* The capacity is a hard bound, for plain runs and escapes alike. */
    CHECK(unesc("abcd", out, 4) == 4);
    CHECK(unesc("abcde", out, 4) == -1);
    CHECK(unesc("abc\\n", out, 3) == -1);
    CHECK(unesc("ab\\u00e9", out, 3) == -1);
    CHECK(unesc("ab\\u00e9", out, 4) == 4);
    CHECK(unesc("", out, 0) == 0);
    return 1;
}

static int test_escape(void)
{
    struct {
        const char *in;
        size_t n;
        const char *want;
    } cases[] = {
        {"plain", 5, "\"plain\""},
        {"q\"b\\", 4, "\"q\\\"b\\\\\""},
        {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
        {"\x01\x1f", 2, "\"\\u0001\\u001f\""},
        {"a\0b", 3, "\"a\\u0000b\""},
        {"caf\xc3\xa9", 5, "\"caf\xc3\xa9\""},
        {"bad\xff", 4, "\"bad\\ufffd\""},
        {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},
        {"/", 1, "\"/\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b = {0};
        CHECK(jtext_escape(&b, cases[i].in, cases[i].n) == 0);
        size_t wn = strlen(cases[i].want);
        if (b.len != wn || memcmp(b.p, cases[i].want, wn))
            fprintf(stderr, "escape case %zu: got %.*s\n", i, (int)b.len, (const char *)b.p);
        CHECK(b.len == wn && !memcmp(b.p, cases[i].want, wn));
        buf_free(&b);
    }
    return 1;
}

static int test_validate(void)
{
    struct {
        const char *s;
        size_t at; /* (size_t)-1: valid */
        const char *why;
    } cases[] = {
        {"{\"a\":[1,2.5e-3,true,false,null,\"x\"]}", (size_t)-1, NULL},
        {"  \"\\ud83d\\ude00\"  ", (size_t)-1, NULL},
        {"-0", (size_t)-1, NULL},
        {"", 0, "unexpected end of input"},
        {"01", 0, "leading zero in number"},
        {"1.x", 2, "digit expected in number"},
        {"1.", 2, "unexpected end of input"},
        {"tru", 3, "unexpected end of input"},
        {"trux", 0, "invalid literal"},
        {"[1,]", 2, "trailing comma"},
        {"{1:2}", 1, "expected a string key"},
        {"{\"a\" 1}", 5, "expected ':'"},
        {"[1 2]", 3, "expected ',' or ']'"},
        {"\"a\\x\"", 2, "invalid escape in string"},
        {"\"\\u12G4\"", 1, "invalid \\u escape"},
        {"\"\\udc00\"", 1, "lone surrogate in \\u escape"},
        {"\"\xc0\xaf\"", 1, "invalid UTF-8 in string"},
        {"\"a\tb\"", 2, "unescaped control character in string"},
        {"1 2", 2, "data after the JSON value"},
        {"@", 0, "unexpected character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t at = 0;
        const char *why = NULL;
        int rc = jtext_validate(cases[i].s, strlen(cases[i].s), &at, &why);
        int ok = cases[i].why ? rc == -1 && at == cases[i].at && !strcmp(why, cases[i].why)
                              : rc == 0;
        if (!ok)
            fprintf(stderr, "validate case %zu: rc %d at %zu why %s\n", i, rc, at,
                    why ? why : "-");
        CHECK(ok);
    }
    /* Depth: 64 levels pass, 65 fail at the 65th bracket. */
    char deep[200];
    for (int d = 64; d <= 65; d++) {
        memset(deep, '[', (size_t)d);
        memset(deep + d, ']', (size_t)d);
        size_t at = 0;
        const char *why = NULL;
        int rc = jtext_validate(deep, 2 * (size_t)d, &at, &why);
        if (d == 64)
            CHECK(rc == 0);
        else
            CHECK(rc == -1 && at == 64 && !strcmp(why, "nesting deeper than 64"));
    }
    return 1;
}

/* Random byte strings, weighted towards the interesting bytes. */
static size_t random_bytes(char *s, size_t cap)
{
    static const char pool[] = {'a', '"', '\\', 'u', 'd', '8', '0', 'c', 'n', '/', '\n',
                                0x01, (char)0xc3, (char)0xa9, (char)0xed, (char)0xa0,
                                (char)0xf0, (char)0x9f, (char)0x80, (char)0xff};
    size_t n = (size_t)t_rand_below(cap);
    for (size_t i = 0; i < n; i++)
        s[i] = t_rand_below(4) ? pool[t_rand_below(sizeof pool)] : (char)t_rand_below(256);
    return n;
}

static int test_random(void)
{
    char in[48], out[64], quoted[64];
    long roundtrips = 0, valid = 0, rejected = 0;
    int iterations = getenv("TEST_QUICK") ? 20000 : 200000; /* valgrind, ASan */
    for (int it = 0; it < iterations; it++) {
        size_t n = random_bytes(in, sizeof in);
        /* Escape: always valid JSON; decodes back when the input was UTF-8. */
        buf b = {0};
        CHECK(jtext_escape(&b, in, n) == 0);
        CHECK(jtext_validate((const char *)b.p, b.len, NULL, NULL) == 0);
        int utf8 = 1;
        for (size_t i = 0; i < n;) {
            size_t k = (uint8_t)in[i] < 0x80 ? 1 : jtext_utf8_seq((const uint8_t *)in + i, n - i);
            if (!k) {
                utf8 = 0;
                break;
            }
            i += k;
        }
        char *dec = malloc(b.len);
        long d = jtext_unescape((const char *)b.p + 1, b.len - 2, dec, b.len);
        CHECK(d >= 0);
        if (utf8) {
            CHECK(d == (long)n && !memcmp(dec, in, n));
            roundtrips++;
        }
        free(dec);
        buf_free(&b);
        /* The same bytes as a string's raw text: what the validator accepts
         * unescapes within n bytes. */
        quoted[0] = '"';
        memcpy(quoted + 1, in, n);
        quoted[n + 1] = '"';
        if (jtext_validate(quoted, n + 2, NULL, NULL) == 0) {
            valid++;
            CHECK(jtext_unescape(in, n, out, n) >= 0);
        } else {
            rejected++;
        }
    }
    printf("random: %ld round trips, %ld valid strings, %ld rejected\n", roundtrips, valid,
           rejected);
    CHECK(roundtrips > 0 && valid > 0 && rejected > 0);
    return 1;
}

/* The scanner's tokens (one pass: validate and tokenize, server/json.c):
 * jsmn's layout, grown from nothing, capped at tok_max. */
static int test_tokens(void)
{
    const char *text = " [{\"a\": \"x\\\"y\", \"b\": [1, -2.5e3, true, null, []]}, {}, \"\"] ";
    jtext_scan v;
    jtext_scan_init(&v, text, strlen(text), 0);
    v.tok_max = 100; /* toks NULL, tok_cap 0: the scanner allocates */
    CHECK(jtext_scan_text(&v) == 0);
    CHECK(!v.tok_oom && v.nvalues == 13);
    static const struct {
        int type, size;
        const char *span;
    } want[] = {
        {JTEXT_T_ARRAY, 3, NULL}, {JTEXT_T_OBJECT, 2, NULL}, {JTEXT_T_STRING, 0, "a"},
        {JTEXT_T_STRING, 0, "x\\\"y"}, {JTEXT_T_STRING, 0, "b"}, {JTEXT_T_ARRAY, 5, NULL},
        {JTEXT_T_PRIMITIVE, 0, "1"}, {JTEXT_T_PRIMITIVE, 0, "-2.5e3"},
        {JTEXT_T_PRIMITIVE, 0, "true"}, {JTEXT_T_PRIMITIVE, 0, "null"},
        {JTEXT_T_ARRAY, 0, "[]"}, {JTEXT_T_OBJECT, 0, "{}"}, {JTEXT_T_STRING, 0, ""},
    };
    for (size_t i = 0; i < 13; i++) {
        const jtext_tok *t = &v.toks[i];
        CHECK(t->type == want[i].type);
        CHECK(t->size == want[i].size);
        if (want[i].span) {
            CHECK((size_t)(t->end - t->start) == strlen(want[i].span));
            CHECK(!memcmp(text + t->start, want[i].span, strlen(want[i].span)));
        }
    }
    /* The outer array spans from its bracket to just past its end. */
    CHECK(v.toks[0].start == 1 && text[v.toks[0].end - 1] == ']' &&
          (size_t)v.toks[0].end == strlen(text) - 1);
    CHECK(text[v.toks[1].start] == '{' && text[v.toks[1].end - 1] == '}');
    free(v.toks);

    /* Past tok_max values are counted, not recorded; growth is bounded. */
    jtext_scan_init(&v, text, strlen(text), 0);
    v.tok_max = 4;
    CHECK(jtext_scan_text(&v) == 0);
    CHECK(v.nvalues == 13 && v.tok_cap == 4 && !v.tok_oom);
    CHECK(v.toks[3].type == JTEXT_T_STRING && v.toks[0].size == 3);
    free(v.toks);

    /* Without tok_max nothing is recorded, and errors are unchanged. */
    jtext_scan_init(&v, "[1,]", 4, 0);
    CHECK(jtext_scan_text(&v) == -1 && v.toks == NULL);
    CHECK(!strcmp(v.why, "trailing comma"));
    return 1;
}

/* The string scanner looks at 16 bytes per step where it can (SSE2): a
 * quote, a backslash, a control character or a non-ASCII byte at every
 * offset of a long string, the body ending at every length, must be seen
 * exactly where the byte-by-byte loop sees it. */
static int test_string_blocks(void)
{
    char text[80];
    for (size_t at = 0; at < 48; at++) {
        for (int kind = 0; kind < 6; kind++) {
            /* ["aaaa...X...aaaa"] with X at offset `at` of the string */
            size_t n = 0;
            text[n++] = '[';
            text[n++] = '"';
            size_t start = n;
            memset(text + n, 'a', 56);
            n += 56;
            text[n++] = '"';
            text[n++] = ']';
            char *x = text + start + at;
            size_t err_at = 0;
            const char *why = NULL;
            int rc;
            switch (kind) {
            case 0: /* a control character: refused at its offset */
                *x = '\n';
                rc = jtext_validate(text, n, &err_at, &why);
                CHECK(rc == -1 && err_at == start + at);
                CHECK(!strcmp(why, "unescaped control character in string"));
                break;
            case 1: /* an escaped quote: accepted */
                x[0] = '\\', x[1] = '"';
                CHECK(jtext_validate(text, n, NULL, NULL) == 0);
                break;
            case 2: /* two-byte UTF-8 (é): accepted */
                x[0] = (char)0xc3, x[1] = (char)0xa9;
                CHECK(jtext_validate(text, n, NULL, NULL) == 0);
                break;
            case 3: /* a byte that is never UTF-8: refused at its offset */
                *x = (char)0xff;
                rc = jtext_validate(text, n, &err_at, &why);
                CHECK(rc == -1 && err_at == start + at && !strcmp(why, "invalid UTF-8 in string"));
                break;
            case 4: /* the string ends early: what follows is not JSON */
                *x = '"';
                rc = jtext_validate(text, n, &err_at, &why);
                CHECK(rc == -1 && err_at == start + at + 1);
                break;
            default: /* cut after X: the input ends inside the string */
                rc = jtext_validate(text, start + at, &err_at, &why);
                CHECK(rc == -1 && err_at == start + at && !strcmp(why, "unexpected end of input"));
                break;
            }
        }
    }
    /* A string token's span is exact whatever its length. */
    for (size_t len = 0; len < 40; len++) {
        size_t n = 0;
        text[n++] = '"';
        memset(text + n, 'b', len);
        n += len;
        text[n++] = '"';
        jtext_scan v;
        jtext_tok one[1];
        jtext_scan_init(&v, text, n, 0);
        v.toks = one, v.tok_cap = 1, v.tok_max = 1, v.toks_borrowed = 1;
        CHECK(jtext_scan_text(&v) == 0 && v.toks_borrowed && v.toks == one);
        CHECK(one[0].type == JTEXT_T_STRING && one[0].start == 1 && (size_t)one[0].end == 1 + len);
    }
    return 1;
}

/* Tokens into the caller's array (toks_borrowed): growing copies them
 * into a malloc'd array and leaves the caller's alone. */
static int test_tokens_borrowed(void)
{
    const char *text = "[1,2,3,[4,5],{\"k\":6},\"s\"]";
    jtext_tok mine[3];
    memset(mine, 0, sizeof mine);
    jtext_scan v;
    jtext_scan_init(&v, text, strlen(text), 0);
    v.toks = mine, v.tok_cap = 3, v.tok_max = 100, v.toks_borrowed = 1;
    CHECK(jtext_scan_text(&v) == 0);
    CHECK(v.nvalues == 11 && !v.toks_borrowed && v.toks != mine && v.tok_cap >= 11);
    CHECK(v.toks[0].type == JTEXT_T_ARRAY && v.toks[0].size == 6);
    CHECK(v.toks[1].type == JTEXT_T_PRIMITIVE && text[v.toks[1].start] == '1');
    CHECK(v.toks[4].type == JTEXT_T_ARRAY && v.toks[4].size == 2);
    CHECK(v.toks[8].type == JTEXT_T_STRING && text[v.toks[8].start] == 'k');
    CHECK(v.toks[10].type == JTEXT_T_STRING && text[v.toks[10].start] == 's');
    /* the first three were recorded into `mine` before the move */
    CHECK(mine[0].type == JTEXT_T_ARRAY && mine[2].type == JTEXT_T_PRIMITIVE);
    free(v.toks);
    return 1;
}

int main(void)
{
    t_seed();
    int passed = 0;
    passed += test_hex4();
    passed += test_utf8();
    passed += test_u_escape();
    passed += test_unescape();
    passed += test_escape();
    passed += test_validate();
    passed += test_random();
    passed += test_tokens();
    passed += test_string_blocks();
    passed += test_tokens_borrowed();
    return t_done("test_json_text", passed);
}
