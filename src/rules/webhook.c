/*
 * webhook.c - HTTP webhook targets: POSTs on one libcurl multi handle per
 * delivery engine, so connections to a target are kept alive and reused,
 * and many requests run at once on the engine's one thread.
 *
 * Each request carries:
 *   Content-Type        the rule's contentType (application/json)
 *   Stele-Rule          the rule's name
 *   Stele-Event-Id      the event's id (receivers deduplicate on it)
 *   Stele-Attempt       1 for the first attempt, 2 for the first retry...
 *   Stele-Replay        the replay's number, only on replayed deliveries
 *   Stele-Signature     t=UNIX_SECONDS,v1=HEX(HMAC-SHA256(secret, "t.body"))
 *                       when the rule has a secret (docs/rules.md shows how
 *                       to verify it)
 *   and the rule's own headers.
 *
 * Outcomes: 2xx delivered; 408, 429 and 5xx retryable (Retry-After, in
 * seconds or as an HTTP date, is reported); any other status is final;
 * a timeout, a refused or reset connection or any other transport error
 * is retryable.
 */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "rules/rules_int.h"

#define URL_MAX 2048u
#define SECRET_MAX 256u
#define TEMPLATE_MAX (64u << 10)
#define HEADERS_MAX 32u

/* One request in flight. */
typedef struct wh_req {
    struct wh_req *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    buf body;
    void *tag;
    char errbuf[CURL_ERROR_SIZE];
} wh_req;

struct wh {
    CURLM *multi;
    size_t running;
    wh_req *reqs; /* in flight */
    CURL *idle[64]; /* finished easy handles, reused (curl_easy_reset) */
    size_t nidle;
};

static void unlink_req(wh *w, wh_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        w->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

int wh_new(wh **out)
{
    pthread_once(&curl_once, curl_init_once);
    wh *w = calloc(1, sizeof *w);
    if (!w || !(w->multi = curl_multi_init())) {
        free(w);
        return err_set(STELE_ENOMEM, "out of memory (curl)");
    }
    curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, 64L);
    *out = w;
    return 0;
}

static void req_free_to(wh *w, wh_req *r)
{
    if (!r)
        return;
    if (r->easy && w && w->nidle < sizeof w->idle / sizeof w->idle[0])
        w->idle[w->nidle++] = r->easy;
    else if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    buf_free(&r->body);
    free(r);
}

static void req_free(wh_req *r) { req_free_to(NULL, r); }

void wh_free(wh *w)
{
    if (!w)
        return;
    while (w->reqs) {
        wh_req *r = w->reqs;
        unlink_req(w, r);
        curl_multi_remove_handle(w->multi, r->easy);
        req_free(r);
    }
    while (w->nidle)
        curl_easy_cleanup(w->idle[--w->nidle]);
    curl_multi_cleanup(w->multi);
    free(w);
}

size_t wh_running(const wh *w) { return w->running; }

/* libcrypto's HMAC implementation, fetched once (a fetch looks providers
 * up: too slow to do per request). */
static EVP_MAC *hmac_impl;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static void hmac_fetch(void) { hmac_impl = EVP_MAC_fetch(NULL, "HMAC", NULL); }

void wh_sign(const char *secret, int64_t t, const void *body, size_t len, char out[96])
{
    char ts[24];
    int tn = snprintf(ts, sizeof ts, "%lld.", (long long)t);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    pthread_once(&hmac_once, hmac_fetch);
    EVP_MAC_CTX *c = hmac_impl ? EVP_MAC_CTX_new(hmac_impl) : NULL;
    OSSL_PARAM params[2] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                            OSSL_PARAM_construct_end()};
    if (!(c && EVP_MAC_init(c, (const unsigned char *)secret, strlen(secret), params) &&
          EVP_MAC_update(c, (const unsigned char *)ts, (size_t)tn) &&
          EVP_MAC_update(c, body, len) && EVP_MAC_final(c, mac, &maclen, sizeof mac)))
        maclen = 0; /* an empty v1: the receiver refuses it */
    EVP_MAC_CTX_free(c);
    static const char hex[] = "0123456789abcdef";
    int n = snprintf(out, 96, "t=%lld,v1=", (long long)t);
    for (size_t i = 0; i < maclen && n + 2 < 96; i++) {
        out[n++] = hex[mac[i] >> 4];
        out[n++] = hex[mac[i] & 15];
    }
    out[n] = 0;
}

static int add_header(wh_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_header(wh_req *r, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct curl_slist *n = curl_slist_append(r->headers, line);
    if (!n)
        return -1;
    r->headers = n;
    return 0;
}

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

int wh_post(wh *w, const rule_def *d, const char *rule_name, const stele_event *e, uint32_t attempt,
            uint64_t replay_id, void *tag)
{
    wh_req *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(STELE_ENOMEM, "out of memory");
    r->tag = tag;
    int rc = render_body(&r->body, d, e, replay_id != 0);
    if (rc) {
        req_free(r);
        return rc;
    }
    char id[37];
    stele_uuid_format(e->id, id);
    int bad = add_header(r, "Content-Type: %s", d->content_type) ||
              add_header(r, "Stele-Rule: %s", rule_name) || add_header(r, "Stele-Event-Id: %s", id) ||
              add_header(r, "Stele-Attempt: %u", attempt) || add_header(r, "Expect:");
    if (replay_id)
        bad |= add_header(r, "Stele-Replay: %llu", (unsigned long long)replay_id);
    if (d->secret) {
        char sig[96];
        wh_sign(d->secret, time_now_us() / 1000000, r->body.p, r->body.len, sig);
        bad |= add_header(r, "Stele-Signature: %s", sig);
    }
    const char *k;
    json_t *v;
    if (d->headers)
        json_object_foreach(d->headers, k, v) bad |= add_header(r, "%s: %s", k, json_string_value(v));
    if (!bad && w->nidle) {
        r->easy = w->idle[--w->nidle];
        curl_easy_reset(r->easy);
    }
    if (bad || (!r->easy && !(r->easy = curl_easy_init()))) {
        req_free(r);
        return err_set(STELE_ENOMEM, "out of memory (curl)");
    }
    CURL *c = r->easy;
    curl_easy_setopt(c, CURLOPT_URL, d->url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, (char *)r->body.p);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)d->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(d->timeout_ms < 5000 ? d->timeout_ms : 5000));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PRIVATE, (char *)r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "stele/" STELE_VERSION);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    /* The response body is not kept: only its status matters. */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    if (curl_multi_add_handle(w->multi, c) != CURLM_OK) {
        req_free(r);
        return err_set(STELE_ENOMEM, "curl_multi_add_handle failed");
    }
    w->running++;
    r->next = w->reqs;
    if (w->reqs)
        w->reqs->prev = r;
    w->reqs = r;
    return 0;
}

/* Retry-After: delay-seconds or an HTTP date; -1 if absent or unusable. */
static int64_t retry_after_ms(CURL *c)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(c, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
        return -1;
    const char *v = h->value;
    char *end;
    long long s = strtoll(v, &end, 10);
    if (end != v && *end == 0 && s >= 0)
        return s > 86400 ? 86400000 : s * 1000;
    time_t t = curl_getdate(v, NULL);
    if (t < 0)
        return -1;
    int64_t d = (int64_t)t * 1000 - time_now_us() / 1000;
    return d < 0 ? 0 : d > 86400000 ? 86400000 : d;
}

static void classify(CURL *c, CURLcode cc, const char *errbuf, wh_result *out)
{
    memset(out, 0, sizeof *out);
    out->retry_after_ms = -1;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    out->status = status;
    if (cc != CURLE_OK) {
        out->retryable = 1;
        out->kind = cc == CURLE_OPERATION_TIMEDOUT ? STELE_FAIL_TIMEOUT
                    : (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                       cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR ||
                       cc == CURLE_GOT_NOTHING)
                        ? STELE_FAIL_CONNECT
                        : STELE_FAIL_OTHER;
        snprintf(out->error, sizeof out->error, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        return;
    }
    if (status >= 200 && status < 300) {
        out->kind = -1;
        return;
    }
    out->retryable = status == 408 || status == 429 || status >= 500;
    out->kind = status == 408 ? STELE_FAIL_HTTP_408 : status == 429 ? STELE_FAIL_HTTP_429
                : status >= 500 ? STELE_FAIL_HTTP_5XX : STELE_FAIL_HTTP_4XX;
    if (out->retryable)
        out->retry_after_ms = retry_after_ms(c);
    snprintf(out->error, sizeof out->error, "HTTP status %ld", status);
}

int wh_poll(wh *w, int timeout_ms, int extra_fd, wh_done_fn done, void *ctx)
{
    int still = 0;
    curl_multi_perform(w->multi, &still);
    struct curl_waitfd wf = {.fd = extra_fd, .events = CURL_WAIT_POLLIN};
    int n = 0;
    if (timeout_ms > 0)
        curl_multi_poll(w->multi, extra_fd >= 0 ? &wf : NULL, extra_fd >= 0 ? 1 : 0, timeout_ms, &n);
    if (extra_fd >= 0 && (wf.revents & CURL_WAIT_POLLIN)) {
        uint64_t v;
        ssize_t r = read(extra_fd, &v, sizeof v);
        (void)r;
    }
    curl_multi_perform(w->multi, &still);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(w->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *c = m->easy_handle;
        CURLcode cc = m->data.result;
        wh_req *r = NULL;
        curl_easy_getinfo(c, CURLINFO_PRIVATE, (char **)&r);
        wh_result res;
        classify(c, cc, r->errbuf, &res);
        curl_multi_remove_handle(w->multi, c);
        unlink_req(w, r);
        w->running--;
        void *tag = r->tag;
        req_free_to(w, r);
        done(ctx, tag, &res);
    }
    return 0;
}

/* ------------------------------------------------------------ the target */

static int wh_parse(json_t *t, rule_def *d)
{
    int rc;
    static const char *const keys[] = {"type", "url", "secret", "timeoutMs", "template",
                                       "contentType", "headers", NULL};
    d->target = TARGET_WEBHOOK;
    if ((rc = rdef_only_keys(t, "target", keys)) ||
        (rc = rdef_get_str(t, "target", "url", URL_MAX, 1, &d->url)) ||
        (rc = rdef_get_str(t, "target", "secret", SECRET_MAX, 0, &d->secret)) ||
        (rc = rdef_get_str(t, "target", "template", TEMPLATE_MAX, 0, &d->tmpl)) ||
        (rc = rdef_get_str(t, "target", "contentType", 255, 0, &d->content_type)))
        return rc;
    int http = !strncmp(d->url, "http://", 7), https = !strncmp(d->url, "https://", 8);
    const char *host = d->url + (http ? 7 : 8);
    if (!http && !https)
        return err_set(STELE_EINVAL, "target.url: must start with http:// or https://");
    if (!*host || *host == '/' || *host == ':' || *host == '?' || *host == '#')
        return err_set(STELE_EINVAL, "target.url: has no host");
    for (const char *p = d->url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return err_set(STELE_EINVAL, "target.url: space or control character at byte %zu",
                           (size_t)(p - d->url));
    uint64_t to = 10000;
    if ((rc = rdef_get_uint(t, "target", "timeoutMs", 100, 300000, &to)))
        return rc;
    d->timeout_ms = (uint32_t)to;
    if (d->tmpl && (rc = rdef_check_template(d->tmpl)))
        return rc;
    if (!d->content_type && !(d->content_type = strdup("application/json")))
        return err_set(STELE_ENOMEM, "out of memory");
    for (const char *p = d->content_type; *p; p++)
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            return err_set(STELE_EINVAL, "target.contentType: control character");
    json_t *h = json_object_get(t, "headers");
    if (h) {
        if (!json_is_object(h) || json_object_size(h) > HEADERS_MAX)
            return err_set(STELE_EINVAL, "target.headers: must be an object of at most %u "
                                         "strings", HEADERS_MAX);
        const char *k;
        json_t *v;
        json_object_foreach(h, k, v) {
            int bad = !*k || strlen(k) > 128 || !json_is_string(v) ||
                      json_string_length(v) > 1024;
            for (const char *p = k; *p && !bad; p++)
                bad = !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                        (*p >= '0' && *p <= '9') || *p == '-' || *p == '_');
            for (const char *p = json_is_string(v) ? json_string_value(v) : ""; *p && !bad;
                 p++)
                bad = (unsigned char)*p < ' ' || *p == 0x7f;
            if (!bad && (!strncasecmp(k, "Stele-", 6) || !strcasecmp(k, "Content-Type") ||
                         !strcasecmp(k, "Content-Length") || !strcasecmp(k, "Host")))
                return err_set(STELE_EINVAL, "target.headers.%s: set by Stele", k);
            if (bad)
                return err_set(STELE_EINVAL,
                               "target.headers.%s: names are letters, digits, '-' and '_'; "
                               "values strings of at most 1024 printable bytes",
                               k);
        }
        d->headers = json_incref(h);
    }
    return 0;
}

static int wh_normalize(json_t *t, const rule_def *d)
{
    return json_object_set_new(t, "timeoutMs", json_integer(d->timeout_ms)) |
           json_object_set_new(t, "contentType", json_string(d->content_type));
}

static void wh_redact(json_t *t)
{
    if (json_object_get(t, "secret"))
        json_object_set_new(t, "secret", json_string("***"));
}

const target_ops target_webhook = {
    .type = "webhook",
    .parse = wh_parse,
    .normalize = wh_normalize,
    .redact = wh_redact,
    .async = 1,
};
