/*
 * aws_http.c - AWS's JSON protocol over libcurl: one easy handle per
 * client, used by one thread, so its connection is kept alive and reused
 * from call to call. Each call is
 *
 *   POST / HTTP/1.1
 *   Host: <endpoint host[:port]>
 *   Content-Type: application/x-amz-json-1.x
 *   X-Amz-Date: <now>
 *   X-Amz-Target: <Service_Version.Operation>
 *   X-Amz-Security-Token: <session token, when there is one>
 *   Authorization: AWS4-HMAC-SHA256 ... (sigv4.c, all of the above signed)
 *
 * An error answer's body is {"__type": "...#Type", "message": "..."}
 * (DynamoDB prefixes the type with its namespace, Kinesis does not); the
 * type and message are kept for dead letters and the rule's last error.
 * Credentials are never written to a message.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "rules/aws_http.h"
#include "stele.h"

struct aws_client {
    CURL *easy;
    char *url, *host, *region, *service, *content_type;
    aws_creds creds;
    uint32_t timeout_ms;
};

static pthread_once_t aws_curl_once = PTHREAD_ONCE_INIT;
static void aws_curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void aws_client_free(aws_client *a)
{
    if (!a)
        return;
    if (a->easy)
        curl_easy_cleanup(a->easy);
    free(a->url);
    free(a->host);
    free(a->region);
    free(a->service);
    free(a->content_type);
    aws_creds_clear(&a->creds);
    free(a);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int aws_client_new(const char *endpoint, const char *region, const char *service,
                   const char *content_type, const aws_creds *c, uint32_t timeout_ms, aws_client **out)
{
    pthread_once(&aws_curl_once, aws_curl_init);
    *out = NULL;
    char def[256];
    if (!endpoint) {
        snprintf(def, sizeof def, "https://%s.%s.amazonaws.com", service, region);
        endpoint = def;
    }
    const char *host = !strncmp(endpoint, "http://", 7) ? endpoint + 7
                       : !strncmp(endpoint, "https://", 8) ? endpoint + 8
                                                           : NULL;
    if (!host || !*host || *host == '/' || *host == ':')
        return err_set(STELE_EINVAL, "endpoint must be http://host[:port] or https://host[:port]");
    size_t hl = strcspn(host, "/?#");
    for (size_t i = 0; i < hl; i++)
        if ((unsigned char)host[i] <= ' ' || host[i] == 0x7f || host[i] == '@')
            return err_set(STELE_EINVAL, "endpoint: bad character in the host");
    aws_client *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(STELE_ENOMEM, "out of memory");
    a->host = strndup(host, hl);
    size_t ul = (size_t)(host - endpoint) + hl;
    a->url = malloc(ul + 2);
    if (a->url) {
        memcpy(a->url, endpoint, ul);
        memcpy(a->url + ul, "/", 2);
    }
    a->region = strdup(region);
    a->service = strdup(service);
    a->content_type = strdup(content_type);
    a->creds.access_key = dup_or_null(c->access_key);
    a->creds.secret_key = dup_or_null(c->secret_key);
    a->creds.session_token = dup_or_null(c->session_token);
    a->timeout_ms = timeout_ms;
    a->easy = curl_easy_init();
    if (!a->host || !a->url || !a->region || !a->service || !a->content_type || !a->creds.access_key ||
        !a->creds.secret_key || (c->session_token && !a->creds.session_token) || !a->easy) {
        aws_client_free(a);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    *out = a;
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    buf *b = ud;
    if (b->len + size * n > (64u << 20)) /* no AWS answer is this large */
        return 0;
    return buf_append(b, p, size * n) ? 0 : size * n;
}

void aws_resp_free(aws_resp *r) { buf_free(&r->body); }

static void parse_error(aws_resp *r)
{
    json_t *j = json_loadb((const char *)r->body.p, r->body.len, 0, NULL);
    const char *type = j ? json_string_value(json_object_get(j, "__type")) : NULL;
    const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
    if (j && !msg)
        msg = json_string_value(json_object_get(j, "Message"));
    if (type) {
        const char *hash = strrchr(type, '#');
        snprintf(r->type, sizeof r->type, "%s", hash ? hash + 1 : type);
    }
    if (msg)
        snprintf(r->message, sizeof r->message, "%s", msg);
    else if (!type)
        snprintf(r->message, sizeof r->message, "HTTP %ld: %.*s", r->status,
                 (int)(r->body.len > 200 ? 200 : r->body.len), r->body.p ? (const char *)r->body.p : "");
    json_decref(j);
}

int aws_call(aws_client *a, const char *target, const void *body, size_t len, aws_resp *r)
{
    memset(r, 0, sizeof *r);
    char date[17];
    sigv4_date(time_now_us() / 1000000, date);
    sigv4_header h[5] = {{"Host", a->host},
                         {"Content-Type", a->content_type},
                         {"X-Amz-Date", date},
                         {"X-Amz-Target", target}};
    size_t nh = 4;
    if (a->creds.session_token)
        h[nh++] = (sigv4_header){"X-Amz-Security-Token", a->creds.session_token};
    sigv4_request sr = {.method = "POST", .path = "/", .headers = h, .nheaders = nh, .payload = body,
                        .payload_len = len, .amz_date = date, .region = a->region, .service = a->service};
    char *auth = sigv4_authorization(&sr, &a->creds, NULL);
    if (!auth) {
        snprintf(r->message, sizeof r->message, "out of memory signing the request");
        return -1;
    }
    struct curl_slist *hl = NULL;
    char line[4096];
    int oom = 0;
    for (size_t i = 0; i < nh && !oom; i++) {
        snprintf(line, sizeof line, "%s: %s", h[i].name, h[i].value);
        struct curl_slist *n = curl_slist_append(hl, line);
        oom = !n;
        hl = n ? n : hl;
    }
    snprintf(line, sizeof line, "Authorization: %s", auth);
    struct curl_slist *n = oom ? NULL : curl_slist_append(hl, line);
    oom |= !n;
    hl = n ? n : hl;
    n = oom ? NULL : curl_slist_append(hl, "Expect:");
    oom |= !n;
    hl = n ? n : hl;
    memset(line, 0, sizeof line);
    free(auth);
    if (oom) {
        curl_slist_free_all(hl);
        snprintf(r->message, sizeof r->message, "out of memory");
        return -1;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *e = a->easy;
    curl_easy_setopt(e, CURLOPT_URL, a->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)a->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(a->timeout_ms < 5000 ? a->timeout_ms : 5000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(e);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hl);
    if (cc != CURLE_OK) {
        snprintf(r->message, sizeof r->message, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        return -1;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->status < 200 || r->status > 299)
        parse_error(r);
    return 0;
}

int aws_error_retryable(long status, const char *type)
{
    static const char *const transient[] = {
        "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling",
        "LimitExceededException", "RequestLimitExceeded", "InternalFailure",
        "InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
        "KMSThrottlingException", "TransactionInProgressException", "RequestTimeout", NULL};
    for (size_t i = 0; type && transient[i]; i++)
        if (!strcmp(type, transient[i]))
            return 1;
    return status >= 500 || status == 429 || status == 408;
}

int aws_fail_kind(long status, const char *type)
{
    if (status == 0)
        return STELE_FAIL_CONNECT;
    if (aws_error_retryable(status, type) && status < 500)
        return STELE_FAIL_HTTP_429; /* throttled */
    if (status >= 500)
        return STELE_FAIL_HTTP_5XX;
    return STELE_FAIL_HTTP_4XX;
}
