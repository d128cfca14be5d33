/*
 * metrics.c - counters and latency histograms, rendered in Prometheus text
 * format for GET /metrics. Only the loop thread updates them, so they need
 * no atomics.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "server_int.h"

/* Upper bounds of the latency buckets, seconds. */
static const double bounds[LAT_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                           0.025,  0.05,    0.1,    0.25,  0.5,    1,    2.5};

void metrics_observe(metrics *m, int is_append, double seconds)
{
    uint64_t *h = is_append ? m->lat_append : m->lat_read;
    int i = 0;
    while (i < LAT_BUCKETS && seconds > bounds[i])
        i++;
    h[i]++;
    if (is_append)
        m->lat_append_sum += seconds;
    else
        m->lat_read_sum += seconds;
}

void metrics_error(metrics *m, int status, int stele_rc)
{
    int i = status == 400 ? 0 : status == 404 ? 1 : status == 409 ? 2 : status == 410 ? 3
          : status == 413 ? 4 : status >= 500 ? 5 : -1;
    if (i >= 0)
        m->errors_by_status[i]++;
    if (stele_rc < 0 && -stele_rc < 24)
        m->errors_by_code[-stele_rc]++;
}

void metrics_line(buf *out, const char *fmt, ...)
{
    char b[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_append(out, b, (size_t)n < sizeof b ? (size_t)n : sizeof b - 1);
}

static void histogram(buf *out, const char *name, const char *help, const uint64_t *h, double sum)
{
    metrics_line(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < LAT_BUCKETS; i++) {
        cum += h[i];
        metrics_line(out, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
    }
    cum += h[LAT_BUCKETS];
    metrics_line(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
                 (unsigned long long)cum, name, sum, name, (unsigned long long)cum);
}

/* Per projection (KurrentDB's kurrentdb_projection_* are the model). */
static void metrics_projections(server *s, buf *out)
{
    stele_projection_info *all;
    size_t n;
    if (stele_projection_list(s->db, &all, &n) || n == 0)
        return;
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"stele_projection_events_processed_total", "counter", "Events a handler ran on."},
        {"stele_projection_events_read_total", "counter", "Events read from the source."},
        {"stele_projection_commits_total", "counter", "Batches committed."},
        {"stele_projection_handler_seconds_total", "counter", "Time spent in handlers."},
        {"stele_projection_state_bytes_written_total", "counter", "Bytes of state written."},
        {"stele_projection_position", "gauge", "Next position to process."},
        {"stele_projection_lag_events", "gauge", "Positions between the projection and the store's end."},
        {"stele_projection_partitions_cached", "gauge", "Partition states in memory."},
        {"stele_projection_heap_bytes", "gauge", "Bytes of the JavaScript heap."},
        {"stele_projection_running", "gauge", "1 if running, 0 otherwise."},
        {"stele_projection_faulted", "gauge", "1 if faulted."},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        metrics_line(out, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name,
                     fam[f].type);
        for (size_t i = 0; i < n; i++) {
            const stele_projection_info *p = &all[i];
            double v = 0;
            switch (f) {
            case 0: v = (double)p->events_processed; break;
            case 1: v = (double)p->events_read; break;
            case 2: v = (double)p->commits; break;
            case 3: v = (double)p->handler_ns / 1e9; break;
            case 4: v = (double)p->state_bytes; break;
            case 5: v = (double)p->position; break;
            case 6: v = (double)p->lag; break;
            case 7: v = (double)p->partitions_cached; break;
            case 8: v = (double)p->heap_bytes; break;
            case 9: v = !strcmp(p->status, "Running"); break;
            default: v = !strcmp(p->status, "Faulted"); break;
            }
            /* names are UTF-8 without control characters; escape the
             * label's quote and backslash */
            char esc[256];
            size_t k = 0;
            for (const char *c = p->name; *c && k < sizeof esc - 3; c++) {
                if (*c == '"' || *c == '\\')
                    esc[k++] = '\\';
                esc[k++] = *c;
            }
            esc[k] = 0;
            metrics_line(out, "%s{projection=\"%s\"} %.17g\n", fam[f].name, esc, v);
        }
    }
    stele_projection_info_free(all);
}

void metrics_render(server *s, buf *out)
{
    metrics *m = &s->m;
    stele_stats st;
    memset(&st, 0, sizeof st);
    stele_get_stats(s->db, &st);
#define COUNTER(name, help, v)                                                                     \
    metrics_line(out, "# HELP " name " " help "\n# TYPE " name " counter\n" name " %llu\n",        \
                 (unsigned long long)(v))
#define GAUGE(name, help, v)                                                                       \
    metrics_line(out, "# HELP " name " " help "\n# TYPE " name " gauge\n" name " %llu\n",          \
                 (unsigned long long)(v))
    COUNTER("stele_http_requests_total", "HTTP requests served.", m->requests);
    COUNTER("stele_appends_total", "Append requests completed (any outcome).", m->appends);
    COUNTER("stele_append_events_total", "Events received in append requests.", m->append_events);
    COUNTER("stele_http_early_replies_total",
            "HTTP appends answered by the store's writer thread (http_early.c).",
            m->early_replies);
    COUNTER("stele_append_bytes_total", "Bytes of append request bodies.", m->append_bytes);
    COUNTER("stele_reads_total", "Read requests.", m->reads);
    COUNTER("stele_read_events_total", "Events returned by reads.", m->read_events);
    COUNTER("stele_connections_total", "Connections accepted.", m->connections_total);
    GAUGE("stele_connections_open", "Open connections.", s->nconns);
    GAUGE("stele_store_events", "Events in the store.", st.events);
    GAUGE("stele_store_streams", "Streams in the store.", st.streams);
    GAUGE("stele_store_log_bytes", "Bytes of log records.", st.log_bytes);
    GAUGE("stele_store_group_commits", "Group commits (fdatasyncs) since start.", st.groups);
    GAUGE("stele_store_readonly", "1 after a storage fault.", st.readonly);
    GAUGE("stele_subscribers", "Event streams (SSE) open.", sse_count(s));
    COUNTER("stele_subscriptions_total", "Event streams (SSE) started.", m->subscriptions_total);
    COUNTER("stele_subscription_events_total", "Events sent to subscribers.", m->sse_events);
    COUNTER("stele_subscription_events_shared_total",
            "Events sent to subscribers from the rendering shared by all of them.",
            m->sse_events_shared);
    COUNTER("stele_subscription_checkpoints_total", "Checkpoint markers sent.", m->sse_checkpoints);
    COUNTER("stele_subscription_caught_up_total", "Caught-up markers sent.", m->sse_caught_up);
    COUNTER("stele_subscription_fell_behind_total", "Fell-behind markers sent.",
            m->sse_fell_behind);
    GAUGE("stele_memory_anon_bytes", "Anonymous resident memory (the budget's measure).",
          s->mem_anon);
    GAUGE("stele_memory_budget_bytes", "The memory budget (0: none).", s->cfg.memory_budget);
    COUNTER("stele_busy_refusals_total", "Requests refused over the memory budget.",
            m->busy_refusals);
    COUNTER("stele_limit_refusals_total", "Subscriptions refused by --max-subscriptions.",
            m->limit_refusals);
    COUNTER("stele_memory_trims_total", "Times free memory was given back (malloc_trim).",
            m->mem_trims);
    GAUGE("stele_grpc_subscriptions", "gRPC subscriptions open.", s->subscriptions);
#undef COUNTER
#undef GAUGE
    static const int statuses[] = {400, 404, 409, 410, 413, 500};
    metrics_line(out, "# HELP stele_http_errors_total Error responses by status.\n"
                      "# TYPE stele_http_errors_total counter\n");
    for (int i = 0; i < 6; i++)
        metrics_line(out, "stele_http_errors_total{status=\"%d%s\"} %llu\n",
                     statuses[i] == 500 ? 5 : statuses[i], statuses[i] == 500 ? "xx" : "",
                     (unsigned long long)m->errors_by_status[i]);
    metrics_line(out, "# HELP stele_errors_total Store errors by code.\n"
                      "# TYPE stele_errors_total counter\n");
    for (int i = 1; i < 24; i++) {
        const char *name = stele_errname(-i);
        if (strcmp(name, "UNKNOWN"))
            metrics_line(out, "stele_errors_total{code=\"%s\"} %llu\n", name,
                         (unsigned long long)m->errors_by_code[i]);
    }
    histogram(out, "stele_append_latency_seconds", "Append request latency (parse to response).",
              m->lat_append, m->lat_append_sum);
    histogram(out, "stele_read_latency_seconds", "Read request latency (first page).", m->lat_read,
              m->lat_read_sum);
    metrics_projections(s, out);
    metrics_render_rules(s, out);
    tls_metrics(s, out);
    auth_metrics(s, out);
}
