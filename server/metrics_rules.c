/*
 * metrics_rules.c - the /metrics series of rules and consumer groups, read
 * from libstele's counters on each scrape (stele_rule_list,
 * stele_group_list): one labelled series per rule or group. Alert rules
 * over them ship in deploy/prometheus/stele-alerts.yml.
 */
#include <stdio.h>
#include <string.h>

#include "server_int.h"

/* A label value with \, " and newlines escaped (Prometheus text format). */
static void label(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            dst[o++] = '\\';
            dst[o++] = *s;
        } else if (*s == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *s;
        }
    }
    dst[o] = 0;
}

static void head(buf *b, const char *name, const char *type, const char *help)
{
    metrics_line(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

#define RULE_SERIES(metric, type, help, expr)                                                      \
    do {                                                                                           \
        head(b, metric, type, help);                                                               \
        for (size_t i = 0; i < n; i++)                                                             \
            metrics_line(b, metric "{rule=\"%s\"} %llu\n", v[i].name, (unsigned long long)(expr)); \
    } while (0)

static void render_rules(stele_db *db, buf *b)
{
    stele_rule_info *v = NULL;
    size_t n = 0;
    if (stele_rule_list(db, &v, &n))
        return;
    RULE_SERIES("stele_rule_enabled", "gauge", "1 if the rule delivers, 0 if paused.",
                v[i].enabled);
    RULE_SERIES("stele_rule_matched_total", "counter",
                "Events that passed the rule's source filter and pattern.", v[i].matched);
    RULE_SERIES("stele_rule_delivered_total", "counter", "Events delivered to the target.",
                v[i].delivered);
    RULE_SERIES("stele_rule_retries_total", "counter", "Delivery attempts scheduled again.",
                v[i].retries);
    RULE_SERIES("stele_rule_dead_lettered_total", "counter",
                "Events sent to the rule's dead-letter stream.", v[i].dead_lettered);
    RULE_SERIES("stele_rule_dead_letters", "gauge",
                "Events in the dead-letter stream (not truncated).", v[i].dead_letters);
    RULE_SERIES("stele_rule_in_flight", "gauge", "Deliveries on the wire.", v[i].in_flight);
    RULE_SERIES("stele_rule_pending", "gauge",
                "Matched events held: waiting, backing off or on the wire.", v[i].pending);
    RULE_SERIES("stele_rule_lag_events", "gauge",
                "Events in the store after the rule's checkpoint.", v[i].lag_events);
    head(b, "stele_rule_lag_seconds", "gauge",
         "Age of the oldest matched event not delivered yet (0 when none).");
    for (size_t i = 0; i < n; i++)
        metrics_line(b, "stele_rule_lag_seconds{rule=\"%s\"} %.3f\n", v[i].name, v[i].lag_seconds);
    head(b, "stele_rule_failures_total", "counter", "Failed delivery attempts by kind.");
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < STELE_FAIL_KINDS; k++)
            metrics_line(b, "stele_rule_failures_total{rule=\"%s\",kind=\"%s\"} %llu\n", v[i].name,
                         stele_rule_failure_name(k), (unsigned long long)v[i].failures[k]);
    head(b, "stele_rule_delivery_latency_seconds", "histogram",
         "Commit to delivered (2xx or stream append), live deliveries.");
    for (size_t i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (int k = 0; k < STELE_RULE_LAT_BUCKETS; k++) {
            cum += v[i].latency[k];
            metrics_line(b,
                         "stele_rule_delivery_latency_seconds_bucket{rule=\"%s\",le=\"%g\"} %llu\n",
                         v[i].name, stele_rule_latency_bound(k), (unsigned long long)cum);
        }
        cum += v[i].latency[STELE_RULE_LAT_BUCKETS];
        metrics_line(b,
                     "stele_rule_delivery_latency_seconds_bucket{rule=\"%s\",le=\"+Inf\"} %llu\n",
                     v[i].name, (unsigned long long)cum);
        metrics_line(b, "stele_rule_delivery_latency_seconds_sum{rule=\"%s\"} %.6f\n", v[i].name,
                     v[i].latency_sum);
        metrics_line(b, "stele_rule_delivery_latency_seconds_count{rule=\"%s\"} %llu\n", v[i].name,
                     (unsigned long long)cum);
    }
    stele_rule_info_free(v);
}

static void render_groups(stele_db *db, buf *b)
{
    stele_group_info *v = NULL;
    size_t n = 0;
    if (stele_group_list(db, &v, &n))
        return;
    uint64_t end = 0; /* the end of $all */
    stele_position_head(db, &end);
    static const struct {
        const char *name, *type, *help;
    } series[] = {
        {"stele_group_parked", "gauge", "Parked events (not truncated)."},
        {"stele_group_parked_total", "counter", "Events parked since start."},
        {"stele_group_nacks_total", "counter", "Nacks since start."},
        {"stele_group_timeouts_total", "counter", "Message timeouts since start."},
        {"stele_group_delivered_total", "counter", "Deliveries to consumers since start."},
        {"stele_group_acked_total", "counter", "Acks since start."},
        {"stele_group_in_flight", "gauge", "Events in flight to consumers."},
        {"stele_group_consumers", "gauge", "Connected consumers."},
        {"stele_group_checkpoint_lag_events", "gauge",
         "$all groups: events in the store after the group's checkpoint."},
    };
    for (size_t s = 0; s < sizeof series / sizeof series[0]; s++) {
        head(b, series[s].name, series[s].type, series[s].help);
        for (size_t i = 0; i < n; i++) {
            const stele_group_info *g = &v[i];
            if (s == 8 && strcmp(g->stream, "$all"))
                continue;
            uint64_t x = s == 0 ? g->parked : s == 1 ? g->parked_total : s == 2 ? g->nacked
                       : s == 3 ? g->timed_out : s == 4 ? g->delivered : s == 5 ? g->acked
                       : s == 6 ? g->in_flight : s == 7 ? (uint64_t)g->n_consumers
                       : end > g->checkpoint ? end - g->checkpoint : 0;
            char ls[600], lg[600];
            label(ls, sizeof ls, g->stream);
            label(lg, sizeof lg, g->group);
            metrics_line(b, "%s{stream=\"%s\",group=\"%s\"} %llu\n", series[s].name, ls, lg,
                         (unsigned long long)x);
        }
    }
    stele_group_info_free(v);
}

void metrics_render_rules(server *s, buf *b)
{
    render_rules(s->db, b);
    render_groups(s->db, b);
}
