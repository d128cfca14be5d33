/*
 * test_auth_header.c - the Authorization header decoder of server/auth.c
 * (auth_start) against garbage: random bytes, truncated and corrupted
 * base64 of real credentials, embedded NULs, overlong names and passwords,
 * malformed bearer keys, every prefix of valid headers. A unit test (it
 * runs under ASan+UBSan and valgrind): the decoder must never read out of
 * bounds, must refuse everything malformed (AUTH_FAIL) and may only ask for
 * a password check (AUTH_PENDING) for a well-formed Basic header; a valid
 * API key passes at once (AUTH_OK) and any change to it fails.
 *
 * It runs auth.c on a real store (the admin user from admin_password, an
 * API key created through auth_new_key) without the event loop: nothing is
 * submitted to the verifier thread, pending jobs are freed.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "testutil.h"

/* What auth.c needs from the rest of the server, here without a loop. */
static server *new_server(const char *dir)
{
    server *s = calloc(1, sizeof *s);
    CHECK(s);
    server_config_init(&s->cfg);
    s->cfg.log_level = 0;
    s->cfg.admin_password = "the-admin-password";
    s->cfg.auth_fail_limit = 1000000; /* failures are the point here */
    CHECK_OK(stele_open(dir, NULL, &s->db));
    CHECK(auth_init(s) == 0);
    CHECK(auth_enabled(s));
    return s;
}

static int try_header(server *s, const char *h, size_t n, auth_who *who)
{
    struct auth_job *job = NULL;
    auth_refusal ref;
    int rc = auth_start(s, h, n, "127.0.0.9", who, &job, &ref);
    CHECK(rc == AUTH_OK || rc == AUTH_FAIL || rc == AUTH_PENDING);
    if (rc == AUTH_PENDING) {
        CHECK(job != NULL);
        auth_job_free(job);
    } else {
        CHECK(job == NULL);
    }
    if (rc == AUTH_FAIL)
        CHECK(ref.status == 401 || ref.status == 429);
    return rc;
}

static size_t b64(const char *in, size_t n, char *out, size_t cap)
{
    sodium_bin2base64(out, cap, (const unsigned char *)in, n, sodium_base64_VARIANT_ORIGINAL);
    return strlen(out);
}

int main(void)
{
    const char *dir = t_tmpdir("auth_header");
    server *s = new_server(dir);
    auth_who who;
    char h[4096], enc[3000];

    /* A real key: valid passes, every one-character change fails. */
    char token[128], id[32], err[256];
    CHECK(auth_new_key(s, "admin", "test", token, sizeof token, id, sizeof id, err, sizeof err) ==
          0);
    int n = snprintf(h, sizeof h, "Bearer %s", token);
    CHECK(try_header(s, h, (size_t)n, &who) == AUTH_OK);
    CHECK(who.admin && !strcmp(who.name, "admin") && who.via_key);
    for (int i = 7; i < n; i++) {
        char saved = h[i];
        h[i] = saved == 'a' ? 'b' : 'a';
        CHECK(try_header(s, h, (size_t)n, &who) == AUTH_FAIL);
        h[i] = saved;
    }
    /* Every prefix of valid headers, and of the key. */
    size_t bl = b64("admin:the-admin-password", 24, enc, sizeof enc);
    int bn = snprintf(h, sizeof h, "Basic %s", enc);
    CHECK(try_header(s, h, (size_t)bn, &who) == AUTH_PENDING);
    for (int i = 0; i < bn; i++)
        try_header(s, h, (size_t)i, &who);
    n = snprintf(h, sizeof h, "Bearer %s", token);
    for (int i = 0; i < n; i++)
        CHECK(try_header(s, h, (size_t)i, &who) == AUTH_FAIL);
    (void)bl;

    /* Structured garbage. */
    const char *cases[] = {
        "", "Basic", "Basic ", "Basic =", "Basic ====", "Basic !!!!", "Basic YQ", "Basic YQ==",
        "Basic Og==",            /* ":" */
        "Basic YWRtaW4=",        /* "admin" (no colon) */
        "Basic OnBhc3M=",        /* ":pass" */
        "Basic YWRtaW4AOng=",    /* "admin\0:x" */
        "Bearer", "Bearer ", "Bearer stele_", "Bearer stele__", "Bearer stele_x_",
        "Bearer stele_0123456789abcdef_", "Digest username=admin", "basic YWRtaW46eA==",
        "BASIC YWRtaW46eA==", "Basic\tYWRtaW46eA==", "Negotiate abc",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = try_header(s, cases[i], strlen(cases[i]), &who);
        /* Only a well-formed Basic header may go to a password check. */
        CHECK(rc == AUTH_FAIL || !strncasecmp(cases[i], "Basic ", 6));
    }
    /* Overlong names and passwords, NULs, high bytes. */
    char raw[2100];
    for (size_t len = 0; len < sizeof raw; len += 97) {
        for (size_t k = 0; k < len; k++)
            raw[k] = (char)(k == len / 2 ? ':' : 'a' + (int)(k % 26));
        size_t el = b64(raw, len, enc, sizeof enc);
        n = snprintf(h, sizeof h, "Basic %.*s", (int)el, enc);
        try_header(s, h, (size_t)n, &who);
    }
    /* Random bytes, random base64 of random bytes, corrupted valid ones. */
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)t_rand_below(600);
        int kind = (int)t_rand_below(4);
        for (size_t k = 0; k < len; k++)
            raw[k] = (char)t_rand_below(256);
        if (kind == 0) {
            try_header(s, raw, len, &who);
        } else if (kind == 1) {
            size_t el = b64(raw, len, enc, sizeof enc);
            n = snprintf(h, sizeof h, "Basic %.*s", (int)el, enc);
            try_header(s, h, (size_t)n, &who);
        } else if (kind == 2) {
            /* "admin:the-admin-password" with one byte changed */
            bn = snprintf(h, sizeof h, "Basic %s", "YWRtaW46dGhlLWFkbWluLXBhc3N3b3Jk");
            h[6 + t_rand_below((uint64_t)bn - 6)] = (char)t_rand_below(256);
            try_header(s, h, (size_t)bn, &who);
        } else {
            memcpy(h, "Bearer ", 7);
            memcpy(h + 7, raw, len);
            try_header(s, h, 7 + len, &who);
        }
    }
    auth_free(s);
    stele_close(s->db);
    free(s);
    t_rmdir(dir);
    return t_done("test_auth_header", 1);
}
