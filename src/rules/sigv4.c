/*
 * sigv4.c - AWS Signature Version 4 (the "AWS4-HMAC-SHA256" Authorization
 * header) and AWS credentials, for the Kinesis and DynamoDB targets.
 *
 * Signing follows AWS's published algorithm:
 *   canonical request = METHOD \n URI \n QUERY \n HEADERS \n SIGNED \n HASH
 *     URI      the path, each byte outside A-Z a-z 0-9 - . _ ~ / as %XX
 *              (the targets only ever send "/"; dot segments are not
 *              normalized)
 *     QUERY    name=value pairs, both percent-encoded the same way
 *              ('/' too), sorted by name then value, joined by '&'
 *     HEADERS  "name:value\n" per header: names lowercased, values with
 *              leading/trailing blanks cut and inner runs of spaces made
 *              one, sorted by name, repeated names joined with ','
 *     SIGNED   the lowercased names, sorted, joined by ';'
 *     HASH     lowercase hex SHA-256 of the payload
 *   string to sign = "AWS4-HMAC-SHA256" \n DATE \n SCOPE \n hex(SHA-256(creq))
 *     SCOPE    YYYYMMDD/region/service/aws4_request
 *   key = HMAC(HMAC(HMAC(HMAC("AWS4" secret, YYYYMMDD), region), service),
 *              "aws4_request"); signature = hex(HMAC(key, string to sign)).
 * tests/test_sigv4.c checks it against cases of AWS's SigV4 test suite.
 *
 * Credentials come from the environment or from an AWS shared credentials
 * file; the secret and session token stay in memory only, are wiped when
 * cleared, and no message ever quotes them.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "rules/sigv4.h"
#include "util/util.h"
#include "stele.h"

/* ------------------------------------------------------------ hashing */

static void hexify(const unsigned char *d, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[2 * n] = 0;
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) || n != 32) {
        out[0] = 0;
        return;
    }
    hexify(md, 32, out);
}

static int hmac256(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char out[32])
{
    unsigned int n = 0;
    return HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n) && n == 32 ? 0 : -1;
}

void sigv4_date(int64_t t, char out[17])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* ------------------------------------------------------------ canonical request */

static int unreserved(int c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static int put_encoded(buf *b, const char *s, size_t n, int keep_slash)
{
    static const char hx[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            if (buf_append(b, &c, 1))
                return -1;
        } else {
            char e[3] = {'%', hx[c >> 4], hx[c & 15]};
            if (buf_append(b, e, 3))
                return -1;
        }
    }
    return 0;
}

static int put_str(buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

typedef struct qpair {
    char *name, *value; /* encoded */
} qpair;

static int qpair_cmp(const void *a, const void *b)
{
    const qpair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static char *encode_dup(const char *s, size_t n)
{
    buf b = {0};
    if (put_encoded(&b, s, n, 0) || buf_append(&b, "", 1)) {
        buf_free(&b);
        return NULL;
    }
    return (char *)b.p;
}

static int put_query(buf *b, const char *q)
{
    if (!q || !*q)
        return 0;
    size_t n = 1;
    for (const char *p = q; *p; p++)
        n += *p == '&';
    qpair *v = calloc(n, sizeof *v);
    if (!v)
        return -1;
    size_t k = 0;
    int rc = 0;
    for (const char *p = q; *p && rc == 0;) {
        const char *end = strchr(p, '&');
        if (!end)
            end = p + strlen(p);
        if (end > p) {
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *nend = eq ? eq : end;
            v[k].name = encode_dup(p, (size_t)(nend - p));
            v[k].value = eq ? encode_dup(eq + 1, (size_t)(end - eq - 1)) : encode_dup("", 0);
            if (!v[k].name || !v[k].value)
                rc = -1;
            k++;
        }
        p = *end ? end + 1 : end;
    }
    if (rc == 0)
        qsort(v, k, sizeof *v, qpair_cmp);
    for (size_t i = 0; i < k && rc == 0; i++)
        if ((i && put_str(b, "&")) || put_str(b, v[i].name) || put_str(b, "=") || put_str(b, v[i].value))
            rc = -1;
    for (size_t i = 0; i < k; i++) {
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
    return rc;
}

typedef struct hdr {
    char *name;  /* lowercased */
    char *value; /* trimmed, spaces collapsed */
    size_t order;
} hdr;

static int hdr_cmp(const void *a, const void *b)
{
    const hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->order < y->order ? -1 : x->order > y->order);
}

static char *trim_value(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    while (*s == ' ' || *s == '\t')
        s++;
    int space = 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t') {
            space = 1;
            continue;
        }
        if (space && o > out)
            *o++ = ' ';
        space = 0;
        *o++ = *s;
    }
    *o = 0;
    return out;
}

static void free_headers(hdr *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

/* The request's headers with lower-case names and trimmed values, in
 * SigV4's canonical order; NULL when out of memory. */
static hdr *sorted_headers(const sigv4_request *r)
{
    hdr *h = calloc(r->nheaders ? r->nheaders : 1, sizeof *h);
    if (!h)
        return NULL;
    for (size_t i = 0; i < r->nheaders; i++) {
        h[i].name = strdup(r->headers[i].name);
        h[i].value = trim_value(r->headers[i].value);
        h[i].order = i;
        if (!h[i].name || !h[i].value) {
            free_headers(h, r->nheaders);
            return NULL;
        }
        for (char *p = h[i].name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    qsort(h, r->nheaders, sizeof *h, hdr_cmp);
    return h;
}

/* The canonical request (METHOD, URI, QUERY, HEADERS, SIGNED, payload
 * hash, one per line) and the signed headers' list. 0, or -1 when out of
 * memory. */
static int canonical_request(const sigv4_request *r, const hdr *h, buf *creq, buf *signed_h)
{
    const char *path = r->path && *r->path ? r->path : "/";
    if (put_str(creq, r->method) || put_str(creq, "\n") ||
        put_encoded(creq, path, strlen(path), 1) || put_str(creq, "\n") ||
        put_query(creq, r->query) || put_str(creq, "\n"))
        return -1;
    for (size_t i = 0; i < r->nheaders; i++) {
        int repeat = i && strcmp(h[i].name, h[i - 1].name) == 0;
        if (repeat) {
            /* replace the previous "\n" by ",value\n" */
            creq->len--;
            if (put_str(creq, ",") || put_str(creq, h[i].value) || put_str(creq, "\n"))
                return -1;
            continue;
        }
        if (put_str(creq, h[i].name) || put_str(creq, ":") || put_str(creq, h[i].value) ||
            put_str(creq, "\n") || (signed_h->len && put_str(signed_h, ";")) ||
            put_str(signed_h, h[i].name))
            return -1;
    }
    char phash[65];
    sigv4_sha256_hex(r->payload ? r->payload : "", r->payload ? r->payload_len : 0, phash);
    if (put_str(creq, "\n") || buf_append(creq, signed_h->p, signed_h->len) ||
        put_str(creq, "\n") || put_str(creq, phash))
        return -1;
    return 0;
}

/* The signature of the string to sign, with the key derived from the
 * secret, the day, the region and the service, into k. 0 or -1. */
static int sign(const aws_creds *c, const sigv4_request *r, const char *day, const buf *sts,
                unsigned char k[32])
{
    size_t sn = strlen(c->secret_key);
    char *k0 = malloc(sn + 5);
    if (!k0)
        return -1;
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, c->secret_key, sn + 1);
    int ok = hmac256(k0, sn + 4, day, 8, k) == 0 &&
             hmac256(k, 32, r->region, strlen(r->region), k) == 0 &&
             hmac256(k, 32, r->service, strlen(r->service), k) == 0 &&
             hmac256(k, 32, "aws4_request", 12, k) == 0 && hmac256(k, 32, sts->p, sts->len, k) == 0;
    OPENSSL_cleanse(k0, sn + 4);
    free(k0);
    return ok ? 0 : -1;
}

char *sigv4_authorization(const sigv4_request *r, const aws_creds *c, char **creq_out)
{
    if (creq_out)
        *creq_out = NULL;
    if (!r->amz_date || strlen(r->amz_date) != 16 || r->amz_date[8] != 'T')
        return NULL;
    hdr *h = sorted_headers(r);
    if (!h)
        return NULL;
    buf creq = {0}, signed_h = {0}, sts = {0}, out = {0};
    char *result = NULL;
    int ok = canonical_request(r, h, &creq, &signed_h) == 0;

    char day[9], scope[256], chash[65];
    memcpy(day, r->amz_date, 8);
    day[8] = 0;
    int sl = snprintf(scope, sizeof scope, "%s/%s/%s/aws4_request", day, r->region, r->service);
    if (sl < 0 || (size_t)sl >= sizeof scope)
        ok = 0;
    if (ok) {
        sigv4_sha256_hex(creq.p, creq.len, chash);
        if (put_str(&sts, "AWS4-HMAC-SHA256\n") || put_str(&sts, r->amz_date) ||
            put_str(&sts, "\n") || put_str(&sts, scope) || put_str(&sts, "\n") ||
            put_str(&sts, chash))
            ok = 0;
    }
    unsigned char k[32];
    if (ok && sign(c, r, day, &sts, k))
        ok = 0;
    if (ok) {
        char sig[65];
        hexify(k, 32, sig);
        OPENSSL_cleanse(k, sizeof k);
        if (put_str(&out, "AWS4-HMAC-SHA256 Credential=") || put_str(&out, c->access_key) ||
            put_str(&out, "/") || put_str(&out, scope) || put_str(&out, ", SignedHeaders=") ||
            buf_append(&out, signed_h.p, signed_h.len) || put_str(&out, ", Signature=") ||
            put_str(&out, sig) || buf_append(&out, "", 1))
            ok = 0;
    }
    if (ok) {
        result = (char *)out.p;
        out.p = NULL;
        if (creq_out && buf_append(&creq, "", 1) == 0) {
            *creq_out = (char *)creq.p;
            creq.p = NULL;
        }
    }
    free_headers(h, r->nheaders);
    buf_free(&creq);
    buf_free(&signed_h);
    buf_free(&sts);
    buf_free(&out);
    return result;
}

/* ------------------------------------------------------------ credentials */

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void aws_creds_clear(aws_creds *c)
{
    free(c->access_key);
    wipe_free(c->secret_key);
    wipe_free(c->session_token);
    memset(c, 0, sizeof *c);
}

static char *strip(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    return s;
}

static int creds_from_file(const char *file, const char *profile, aws_creds *out)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return err_set(STELE_EINVAL, "credentials file %s: %s", file,
                       strerror(errno));
    char line[4096];
    int in = 0, found = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        char *s = strip(line);
        if (*s == '#' || *s == ';' || !*s)
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (e)
                *e = 0;
            char *name = strip(s + 1);
            if (strncmp(name, "profile ", 8) == 0)
                name = strip(name + 8);
            in = strcmp(name, profile) == 0;
            found |= in;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!in || !eq)
            continue;
        *eq = 0;
        char *k = strip(s), *v = strip(eq + 1);
        char **dst = strcmp(k, "aws_access_key_id") == 0       ? &out->access_key
                     : strcmp(k, "aws_secret_access_key") == 0 ? &out->secret_key
                     : strcmp(k, "aws_session_token") == 0     ? &out->session_token
                                                               : NULL;
        if (dst) {
            wipe_free(*dst);
            if (!(*dst = strdup(v)))
                rc = err_set(STELE_ENOMEM, "out of memory");
        }
    }
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    if (rc == 0 && !found)
        rc = err_set(STELE_EINVAL, "credentials file %s has no profile [%s]", file, profile);
    return rc;
}

int aws_creds_load(const char *file, const char *profile, aws_creds *out)
{
    memset(out, 0, sizeof *out);
    int rc = 0;
    const char *where = file ? file : "the environment";
    if (file) {
        rc = creds_from_file(file, profile ? profile : "default", out);
    } else {
        const char *a = getenv("AWS_ACCESS_KEY_ID"), *s = getenv("AWS_SECRET_ACCESS_KEY"),
                   *t = getenv("AWS_SESSION_TOKEN");
        if ((a && !(out->access_key = strdup(a))) || (s && !(out->secret_key = strdup(s))) ||
            (t && *t && !(out->session_token = strdup(t))))
            rc = err_set(STELE_ENOMEM, "out of memory");
    }
    if (rc == 0 && (!out->access_key || !*out->access_key))
        rc = err_set(STELE_EINVAL, "no AWS access key id in %s", where);
    else if (rc == 0 && (!out->secret_key || !*out->secret_key))
        rc = err_set(STELE_EINVAL, "no AWS secret access key in %s", where);
    if (rc)
        aws_creds_clear(out);
    return rc;
}
