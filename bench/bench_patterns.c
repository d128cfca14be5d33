/*
 * bench_patterns.c - matching throughput of EventBridge event patterns
 * (src/rules/pattern.h): R rules of mixed operators over N events, one
 * thread, the way a rules engine runs them: one pattern_input per event
 * (reset onto the next event, so data and metadata are parsed again for
 * every event, once whatever the number of rules), every rule matched.
 *
 *   bench_patterns [events (1000000)] [rules (100)]
 *
 * The events are 10,000 distinct ones (built up front, about 300 bytes of
 * JSON data each, with arrays of objects, nested objects, IPs, strings,
 * numbers) cycled through; the rules are 20 shapes (exact values, prefix,
 * suffix, equals-ignore-case, wildcard, anything-but forms, numeric
 * ranges, exists, cidr, $or, arrays of objects), each in R/20 variants with
 * different operands. Prints events/s, rule evaluations/s, the number of
 * matches (so the work cannot be optimised away and a broken matcher shows)
 * and the same run with one rule, for scale. docs/benchmarks.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rules/pattern.h"
#include "util/util.h"

#define NEVENTS_DISTINCT 10000

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static int below(int n) { return (int)(rnd() % (uint64_t)n); }

typedef struct bev {
    stele_event e;
    char stream[32], type[32];
    char *data, *meta;
    const char *tags[3];
} bev;

static const char *const TYPES[] = {"OrderPlaced", "OrderShipped", "PaymentReceived",
                                    "PaymentFailed", "UserRegistered", "ItemAdded"};
static const char *const CATS[] = {"Order", "Payment", "User", "Cart"};
static const char *const COUNTRIES[] = {"FR", "DE", "US", "GB", "JP", "BR"};
static const char *const CURRENCIES[] = {"EUR", "USD", "GBP", "JPY"};
static const char *const STATUS[] = {"new", "paid", "shipped", "cancelled", "refunded"};
static const char *const TAGS[] = {"vip", "eu", "b2b", "test", "mobile"};

static void make_event(bev *b, int i)
{
    memset(&b->e, 0, sizeof b->e);
    uuid_v7(b->e.id);
    snprintf(b->stream, sizeof b->stream, "%s-%d", CATS[below(4)], below(5000));
    snprintf(b->type, sizeof b->type, "%s", TYPES[below(6)]);
    b->e.stream = b->stream;
    b->e.stream_len = strlen(b->stream);
    b->e.type = b->type;
    b->e.type_len = strlen(b->type);
    b->e.revision = (uint64_t)below(50);
    b->e.position = (uint64_t)i * 7;
    b->e.created_us = 1765000000000000LL + (int64_t)i * 1000;
    size_t nt = 0;
    for (int k = 0; k < 5 && nt < 3; k++)
        if (below(4) == 0)
            b->tags[nt++] = TAGS[k];
    b->e.tags = b->tags;
    b->e.ntags = nt;
    char items[256];
    size_t o = 0;
    int nitems = 1 + below(3);
    for (int k = 0; k < nitems; k++)
        o += (size_t)snprintf(items + o, sizeof items - o, "%s{\"sku\": \"SKU-%03d\", \"qty\": %d}",
                              k ? ", " : "", below(200), 1 + below(5));
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "{\"orderId\": \"o-%d\", \"amount\": %d.%02d, \"currency\": \"%s\", "
                     "\"status\": \"%s\", \"customer\": {\"id\": \"c-%d\", \"country\": \"%s\", "
                     "\"email\": \"User%d@Example.com\", \"tier\": %d}, \"items\": [%s], "
                     "\"ip\": \"10.%d.%d.%d\", \"path\": \"/api/v%d/orders/%d\", \"flag\": %s, "
                     "\"note\": %s}",
                     i, below(2000), below(100), CURRENCIES[below(4)], STATUS[below(5)], below(10000),
                     COUNTRIES[below(6)], below(1000), below(4), items, below(4), below(256),
                     below(256), 1 + below(3), below(100000), below(2) ? "true" : "false",
                     below(3) ? "null" : "\"gift\"");
    b->data = malloc((size_t)n + 1);
    memcpy(b->data, text, (size_t)n + 1);
    b->e.data = b->data;
    b->e.data_len = (size_t)n;
    b->e.flags = STELE_EVENT_JSON;
    n = snprintf(text, sizeof text, "{\"correlationId\": \"corr-%d\", \"actor\": \"%s\"}", below(1000),
                 below(2) ? "api" : "batch");
    b->meta = malloc((size_t)n + 1);
    memcpy(b->meta, text, (size_t)n + 1);
    b->e.metadata = b->meta;
    b->e.metadata_len = (size_t)n;
    b->e.flags |= STELE_META_JSON;
}

/* Rule shape s, variant v: the pattern text. */
static void make_rule(char *out, size_t cap, int s, int v)
{
    switch (s) {
    case 0:
        snprintf(out, cap, "{\"type\": [\"%s\"]}", TYPES[v % 6]);
        break;
    case 1:
        snprintf(out, cap, "{\"category\": [\"%s\"], \"type\": [\"%s\", \"%s\"]}", CATS[v % 4],
                 TYPES[v % 6], TYPES[(v + 1) % 6]);
        break;
    case 2:
        snprintf(out, cap, "{\"stream\": [{\"prefix\": \"%s-%d\"}]}", CATS[v % 4], v + 1);
        break;
    case 3:
        snprintf(out, cap, "{\"tags\": [\"%s\"], \"type\": [{\"anything-but\": \"%s\"}]}",
                 TAGS[v % 5], TYPES[v % 6]);
        break;
    case 4:
        snprintf(out, cap, "{\"data\": {\"currency\": [\"%s\"], \"status\": [\"paid\", \"shipped\"]}}",
                 CURRENCIES[v % 4]);
        break;
    case 5:
        snprintf(out, cap,
                 "{\"type\": [\"OrderPlaced\"], \"data\": {\"amount\": [{\"numeric\": [\">=\", %d, "
                 "\"<\", %d]}]}}",
                 v * 300, v * 300 + 250);
        break;
    case 6:
        snprintf(out, cap, "{\"data\": {\"customer\": {\"country\": [{\"anything-but\": [\"%s\", \"%s\"]}], "
                           "\"tier\": [{\"numeric\": [\">\", %d]}]}}}",
                 COUNTRIES[v % 6], COUNTRIES[(v + 2) % 6], v % 3);
        break;
    case 7:
        snprintf(out, cap,
                 "{\"data\": {\"customer\": {\"email\": [{\"equals-ignore-case\": \"user%d@example.com\"}]}}}",
                 v * 37);
        break;
    case 8:
        snprintf(out, cap, "{\"data\": {\"path\": [{\"wildcard\": \"/api/v%d/*/%d*\"}]}}", 1 + v % 3, v);
        break;
    case 9:
        snprintf(out, cap, "{\"data\": {\"orderId\": [{\"suffix\": \"%d\"}]}}", v * 11);
        break;
    case 10:
        snprintf(out, cap, "{\"data\": {\"ip\": [{\"cidr\": \"10.%d.%d.0/20\"}]}}", v % 4, v * 16 % 256);
        break;
    case 11:
        snprintf(out, cap, "{\"data\": {\"note\": [{\"exists\": %s}], \"flag\": [true]}, \"type\": [{\"prefix\": \"%s\"}]}",
                 v % 2 ? "true" : "false", v % 2 ? "Order" : "Payment");
        break;
    case 12:
        snprintf(out, cap,
                 "{\"$or\": [{\"type\": [\"PaymentFailed\"]}, {\"data\": {\"status\": [\"%s\"]}}, "
                 "{\"tags\": [\"%s\"]}]}",
                 STATUS[v % 5], TAGS[v % 5]);
        break;
    case 13:
        snprintf(out, cap, "{\"data\": {\"items\": {\"sku\": [\"SKU-%03d\"], \"qty\": [{\"numeric\": [\">=\", %d]}]}}}",
                 v * 9 % 200, 1 + v % 5);
        break;
    case 14:
        snprintf(out, cap, "{\"data\": {\"status\": [{\"anything-but\": {\"prefix\": \"%s\"}}], "
                           "\"currency\": [{\"prefix\": {\"equals-ignore-case\": \"%c\"}}]}}",
                 STATUS[v % 5], "eugj"[v % 4]);
        break;
    case 15:
        snprintf(out, cap, "{\"metadata\": {\"actor\": [\"%s\"], \"correlationId\": [{\"wildcard\": \"corr-%d*\"}]}}",
                 v % 2 ? "api" : "batch", v % 10);
        break;
    case 16:
        snprintf(out, cap, "{\"revision\": [{\"numeric\": [\"<\", %d]}], \"data\": {\"customer\": {\"id\": [{\"suffix\": {\"equals-ignore-case\": \"%d\"}}]}}}",
                 v + 2, v);
        break;
    case 17:
        snprintf(out, cap,
                 "{\"data\": {\"$or\": [{\"amount\": [{\"numeric\": [\">\", %d]}]}, {\"items\": {\"qty\": [5]}}], "
                 "\"currency\": [{\"anything-but\": {\"equals-ignore-case\": [\"eur\", \"%s\"]}}]}}",
                 1900 - v, v % 2 ? "usd" : "gbp");
        break;
    case 18:
        snprintf(out, cap, "{\"data\": {\"status\": [{\"anything-but\": {\"wildcard\": \"*e%c*\"}}], \"flag\": [false]}}",
                 "dfnr"[v % 4]);
        break;
    default:
        snprintf(out, cap, "{\"type\": [{\"suffix\": \"%s\"}], \"data\": {\"customer\": {\"country\": [\"%s\"]}, \"missing\": [{\"exists\": false}]}}",
                 v % 2 ? "Placed" : "Failed", COUNTRIES[v % 6]);
        break;
    }
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Returns wall seconds; *cpu = the thread's CPU seconds (the machine may
 * be shared: CPU time is the figure that does not depend on the load). */
static double run(bev *evs, long nevents, pattern **rules, int nrules, long *matches, double *cpu)
{
    pattern_input *in = NULL;
    long m = 0;
    double c0 = cpu_s();
    uint64_t t0 = time_mono_ns();
    for (long i = 0; i < nevents; i++) {
        const stele_event *e = &evs[i % NEVENTS_DISTINCT].e;
        if (!in) {
            if (pattern_input_new(e, &in))
                abort();
        } else {
            pattern_input_reset(in, e);
        }
        for (int r = 0; r < nrules; r++)
            m += pattern_match(rules[r], in);
    }
    uint64_t t1 = time_mono_ns();
    *cpu = cpu_s() - c0;
    pattern_input_free(in);
    *matches = m;
    return (double)(t1 - t0) / 1e9;
}

int main(int argc, char **argv)
{
    long nevents = argc > 1 ? atol(argv[1]) : 1000000;
    int nrules = argc > 2 ? atoi(argv[2]) : 100;
    if (nevents <= 0 || nrules <= 0) {
        fprintf(stderr, "usage: bench_patterns [events] [rules]\n");
        return 2;
    }
    bev *evs = calloc(NEVENTS_DISTINCT, sizeof *evs);
    size_t bytes = 0;
    for (int i = 0; i < NEVENTS_DISTINCT; i++) {
        make_event(&evs[i], i);
        bytes += evs[i].e.data_len;
    }
    pattern **rules = calloc((size_t)nrules, sizeof *rules);
    for (int r = 0; r < nrules; r++) {
        char text[1024], err[256];
        make_rule(text, sizeof text, r % 20, r / 20);
        if (pattern_compile(text, strlen(text), &rules[r], err, sizeof err)) {
            fprintf(stderr, "rule %d: %s\n  %s\n", r, err, text);
            return 1;
        }
    }
    printf("bench_patterns: %ld events (%d distinct, %zu bytes of JSON data on average), %d rules "
           "of 20 shapes\n",
           nevents, NEVENTS_DISTINCT, bytes / NEVENTS_DISTINCT, nrules);
    long matches;
    double cpu, s = run(evs, nevents, rules, nrules, &matches, &cpu);
    printf("  %d rules: %.2f s wall (%.2f s CPU): %.0f events/s (%.0f per CPU second), %.1f M rule "
           "evaluations/s, %ld matches (%.2f per event)\n",
           nrules, s, cpu, (double)nevents / s, (double)nevents / cpu,
           (double)nevents * nrules / s / 1e6, matches, (double)matches / (double)nevents);
    long n1 = nevents < 1000000 ? nevents : 1000000, m1;
    pattern *one = rules[4 < nrules ? 4 : 0];
    double cpu1, s1 = run(evs, n1, &one, 1, &m1, &cpu1);
    printf("  1 rule on data fields: %.2f s wall (%.2f s CPU): %.0f events/s (%.0f per CPU second), "
           "%ld matches\n",
           s1, cpu1, (double)n1 / s1, (double)n1 / cpu1, m1);
    for (int r = 0; r < nrules; r++)
        pattern_free(rules[r]);
    free(rules);
    for (int i = 0; i < NEVENTS_DISTINCT; i++) {
        free(evs[i].data);
        free(evs[i].meta);
    }
    free(evs);
    return 0;
}
