/*
 * test_sigv4.c - AWS Signature Version 4 (src/rules/sigv4.c) against cases
 * of AWS's published SigV4 test suite (aws-sig-v4-test-suite: credentials
 * AKIDEXAMPLE, region us-east-1, service "service", 20150830T123600Z; the
 * request, and the Authorization header AWS gives for it), plus credential
 * loading from the environment and from a shared credentials file, and
 * that no error message quotes the secret. Label unit.
 */
#include <stdlib.h>
#include <string.h>

#include "rules/sigv4.h"
#include "testutil.h"

#define SUITE_PREFIX "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "

typedef struct vcase {
    const char *name, *method, *query;
    sigv4_header extra[3]; /* besides host and x-amz-date */
    const char *body;
    const char *want; /* SignedHeaders=..., Signature=... */
} vcase;

static const vcase cases[] = {
    {"get-vanilla", "GET", NULL, {{0}}, "",
     "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
    {"get-vanilla-query-order-key-case", "GET", "Param2=value2&Param1=value1", {{0}}, "",
     "SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
    {"post-vanilla", "POST", NULL, {{0}}, "",
     "SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
    {"post-vanilla-query", "POST", "Param1=value1", {{0}}, "",
     "SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
    {"post-header-key-sort", "POST", NULL, {{"My-Header1", "value1"}}, "",
     "SignedHeaders=host;my-header1;x-amz-date, "
     "Signature=c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"},
    {"post-header-value-case", "POST", NULL, {{"My-Header1", "VALUE1"}}, "",
     "SignedHeaders=host;my-header1;x-amz-date, "
     "Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
    {"get-header-value-trim", "GET", NULL, {{"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}}, "",
     "SignedHeaders=host;my-header1;my-header2;x-amz-date, "
     "Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
    {"post-x-www-form-urlencoded", "POST", NULL, {{"Content-Type", "application/x-www-form-urlencoded"}},
     "Param1=value1",
     "SignedHeaders=content-type;host;x-amz-date, "
     "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
    {"post-x-www-form-urlencoded-parameters", "POST", NULL,
     {{"Content-Type", "application/x-www-form-urlencoded; charset=utf8"}}, "Param1=value1",
     "SignedHeaders=content-type;host;x-amz-date, "
     "Signature=1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe"},
};

static int test_suite(void)
{
    aws_creds c = {.access_key = "AKIDEXAMPLE", .secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const vcase *v = &cases[i];
        sigv4_header h[5] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
        size_t n = 2;
        for (size_t k = 0; k < 3 && v->extra[k].name; k++)
            h[n++] = v->extra[k];
        sigv4_request r = {.method = v->method, .path = "/", .query = v->query, .headers = h, .nheaders = n,
                           .payload = v->body, .payload_len = strlen(v->body), .amz_date = "20150830T123600Z",
                           .region = "us-east-1", .service = "service"};
        char *creq = NULL;
        char *got = sigv4_authorization(&r, &c, &creq);
        char want[512];
        snprintf(want, sizeof want, "%s%s", SUITE_PREFIX, v->want);
        CHECK(got != NULL);
        if (got && strcmp(got, want) != 0) {
            fprintf(stderr, "%s:\n  got  %s\n  want %s\n  canonical request:\n%s\n", v->name, got, want,
                    creq ? creq : "?");
            CHECK(0);
        }
        free(got);
        free(creq);
    }
    /* The canonical request of get-vanilla, as the suite's .creq file has it. */
    sigv4_header h[2] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
    sigv4_request r = {.method = "GET", .path = "/", .headers = h, .nheaders = 2,
                       .amz_date = "20150830T123600Z", .region = "us-east-1", .service = "service"};
    char *creq = NULL;
    char *got = sigv4_authorization(&r, &c, &creq);
    CHECK(creq && strcmp(creq, "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
                               "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    free(got);
    free(creq);
    /* A path and query needing encoding: segments keep '/', the rest is %XX. */
    r.path = "/a b/\xe1\x88\xb4";
    r.query = "k=v w&a=/";
    got = sigv4_authorization(&r, &c, &creq);
    CHECK(creq && strncmp(creq, "GET\n/a%20b/%E1%88%B4\na=%2F&k=v%20w\n", 33) == 0);
    free(got);
    free(creq);
    /* A malformed date is refused, not signed. */
    r.amz_date = "2015-08-30";
    CHECK(sigv4_authorization(&r, &c, NULL) == NULL);
    char d[17];
    sigv4_date(1440938160, d);
    CHECK(strcmp(d, "20150830T123600Z") == 0);
    return 1;
}

static int test_creds(void)
{
    aws_creds c;
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    unsetenv("AWS_SESSION_TOKEN");
    CHECK_OK(aws_creds_load(NULL, NULL, &c));
    CHECK(strcmp(c.access_key, "AKIDENV") == 0 && strcmp(c.secret_key, "envsecret") == 0 && !c.session_token);
    aws_creds_clear(&c);
    setenv("AWS_SESSION_TOKEN", "tok", 1);
    CHECK_OK(aws_creds_load(NULL, NULL, &c));
    CHECK(c.session_token && strcmp(c.session_token, "tok") == 0);
    aws_creds_clear(&c);
    unsetenv("AWS_SECRET_ACCESS_KEY");
    CHECK_RC(aws_creds_load(NULL, NULL, &c), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "secret access key") != NULL);

    const char *dir = t_tmpdir("sigv4");
    char path[512];
    snprintf(path, sizeof path, "%s/credentials", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("# comment\n[default]\naws_access_key_id = AKIDDEF\naws_secret_access_key = defsecret\n\n"
          "[profile other]\naws_access_key_id=AKIDOTHER\naws_secret_access_key=othersecret\n"
          "aws_session_token = othertoken\n[broken]\naws_access_key_id = AKIDBROKEN\n",
          f);
    fclose(f);
    CHECK_OK(aws_creds_load(path, NULL, &c));
    CHECK(strcmp(c.access_key, "AKIDDEF") == 0 && strcmp(c.secret_key, "defsecret") == 0 && !c.session_token);
    aws_creds_clear(&c);
    CHECK_OK(aws_creds_load(path, "other", &c));
    CHECK(strcmp(c.access_key, "AKIDOTHER") == 0 && strcmp(c.session_token, "othertoken") == 0);
    aws_creds_clear(&c);
    CHECK_RC(aws_creds_load(path, "broken", &c), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "secret") && !strstr(stele_errmsg(), "AKIDBROKEN"));
    CHECK_RC(aws_creds_load(path, "nope", &c), STELE_EINVAL);
    CHECK(strstr(stele_errmsg(), "[nope]") != NULL && !strstr(stele_errmsg(), "defsecret"));
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK_RC(aws_creds_load(path, NULL, &c), STELE_EINVAL);
    t_rmdir(dir);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SESSION_TOKEN");
    return 1;
}

int main(void)
{
    int passed = 0;
    passed += test_suite();
    passed += test_creds();
    return t_done("test_sigv4", passed);
}
