/*
 * bench_rules_worker.c - the hand-written worker that bench/run_rules.sh
 * measures Stele's rules against: the way seed 002's handlers are fed
 * without rules. It holds one Server-Sent Events connection to
 * GET /subscribe/all?from=end&type=T and POSTs each event's JSON to a
 * webhook, one at a time, in order, on one kept-alive connection (libcurl),
 * retrying a failed POST after 100 ms. It runs until killed.
 *
 *   bench_rules_worker SERVER_URL TYPE TARGET_URL
 *
 * The SSE connection is a libcurl multi transfer whose write callback only
 * queues the events' data lines; the POSTs happen outside the callback.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

typedef struct line_buf {
    char *p;
    size_t n, cap;
} line_buf;

static line_buf pending;      /* partial SSE input */
static char **queue;          /* data lines of events to POST */
static size_t qn, qcap;
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void push_event(const char *data, size_t n)
{
    if (qn == qcap) {
        qcap = qcap ? qcap * 2 : 1024;
        queue = realloc(queue, qcap * sizeof *queue);
        if (!queue)
            abort();
    }
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, data, n);
    s[n] = 0;
    queue[qn++] = s;
}

/* Parse complete SSE messages: "event:" lines mark control messages
 * (caught-up, checkpoint...), which are skipped; plain messages carry an
 * event in their "data:" line. */
static void parse(void)
{
    size_t start = 0;
    for (;;) {
        char *end = NULL;
        for (size_t i = start; i + 1 < pending.n; i++)
            if (pending.p[i] == '\n' && pending.p[i + 1] == '\n') {
                end = pending.p + i;
                break;
            }
        if (!end)
            break;
        const char *msg = pending.p + start, *data = NULL;
        size_t mlen = (size_t)(end - msg), dlen = 0;
        int control = 0;
        for (const char *l = msg; l < msg + mlen;) {
            const char *nl = memchr(l, '\n', (size_t)(msg + mlen - l));
            size_t ll = nl ? (size_t)(nl - l) : (size_t)(msg + mlen - l);
            if (ll >= 6 && !memcmp(l, "event:", 6))
                control = 1;
            else if (ll >= 5 && !memcmp(l, "data:", 5)) {
                data = l + 5 + (ll > 5 && l[5] == ' ');
                dlen = ll - (size_t)(data - l);
            }
            l += ll + 1;
        }
        if (!control && data)
            push_event(data, dlen);
        start = (size_t)(end - pending.p) + 2;
    }
    memmove(pending.p, pending.p + start, pending.n - start);
    pending.n -= start;
}

static size_t on_sse(char *p, size_t size, size_t n, void *ctx)
{
    (void)ctx;
    size_t len = size * n;
    if (pending.n + len > pending.cap) {
        pending.cap = (pending.n + len) * 2;
        pending.p = realloc(pending.p, pending.cap);
        if (!pending.p)
            abort();
    }
    memcpy(pending.p + pending.n, p, len);
    pending.n += len;
    parse();
    return len;
}

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: bench_rules_worker SERVER_URL TYPE TARGET_URL\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char url[2048];
    snprintf(url, sizeof url, "%s/subscribe/all?from=end&type=%s", argv[1], argv[2]);
    CURL *sse = curl_easy_init();
    curl_easy_setopt(sse, CURLOPT_URL, url);
    curl_easy_setopt(sse, CURLOPT_WRITEFUNCTION, on_sse);
    curl_easy_setopt(sse, CURLOPT_NOSIGNAL, 1L);
    CURLM *m = curl_multi_init();
    curl_multi_add_handle(m, sse);

    CURL *post = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(post, CURLOPT_URL, argv[3]);
    curl_easy_setopt(post, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(post, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(post, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(post, CURLOPT_NOSIGNAL, 1L);
    printf("ready\n");
    fflush(stdout);
    unsigned long long posted = 0;
    while (!stop) {
        int running = 0, nfd;
        curl_multi_perform(m, &running);
        if (!running) {
            fprintf(stderr, "bench_rules_worker: the event stream ended\n");
            break;
        }
        if (qn == 0) {
            curl_multi_poll(m, NULL, 0, 100, &nfd);
            continue;
        }
        /* Take the queue, then POST each event in order. */
        char **batch = queue;
        size_t bn = qn;
        queue = NULL;
        qn = qcap = 0;
        for (size_t i = 0; i < bn && !stop; i++) {
            curl_easy_setopt(post, CURLOPT_POSTFIELDS, batch[i]);
            for (;;) {
                long status = 0;
                CURLcode rc = curl_easy_perform(post);
                curl_easy_getinfo(post, CURLINFO_RESPONSE_CODE, &status);
                if (rc == CURLE_OK && status >= 200 && status < 300)
                    break;
                if (stop)
                    break;
                usleep(100000);
            }
            posted++;
            free(batch[i]);
            /* Keep reading the feed between POSTs so it never stalls. */
            if (i % 64 == 63)
                curl_multi_perform(m, &running);
        }
        free(batch);
    }
    fprintf(stderr, "bench_rules_worker: %llu events posted\n", posted);
    curl_multi_remove_handle(m, sse);
    curl_easy_cleanup(sse);
    curl_multi_cleanup(m);
    curl_easy_cleanup(post);
    curl_slist_free_all(h);
    curl_global_cleanup();
    return 0;
}
