/*
 * serve.c - `stele serve`: settings from flags, STELE_* environment
 * variables and an optional config file, in that order of precedence, then
 * server_run().
 *
 * The config file has one `name = value` per line (the flag names without
 * dashes: port, data, host, log-level, ...); `#` starts a comment.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "server.h"

typedef struct setting {
    const char *name; /* flag name without "--"; env is STELE_ + upper, '-' -> '_' */
    const char *help;
    const char *value;
} setting;

static setting settings[] = {
    {"port", "TCP port to listen on (default 2113)", NULL},
    {"host", "IPv4 address to listen on (default 127.0.0.1; 0.0.0.0 for all)", NULL},
    {"store", "store URI: DIR, file:DIR, postgres://..., dynamodb://... (default ./data)", NULL},
    {"data", "store directory (the local form of --store)", NULL},
    {"log-level", "error, info (default) or debug (one line per request)", NULL},
    {"max-connections", "connections served at once (default 10000)", NULL},
    {"max-body", "largest request body in bytes (default 67108864)", NULL},
    {"idle-timeout", "seconds an idle keep-alive connection stays open (default 60)", NULL},
    {"request-timeout", "seconds a request may take to arrive (default 30)", NULL},
    {"segment-size", "log segment size in bytes for a new store (default 67108864)", NULL},
    {"max-event-size", "largest event in bytes (default 16777216)", NULL},
    {"max-append-size", "largest append in bytes (default 67108864)", NULL},
    {"sse-keepalive", "seconds before a keep-alive comment on a silent event stream (default 15)",
     NULL},
    {"sse-stall-timeout", "seconds an event stream may not drain before it is closed (default 60)",
     NULL},
    {"sub-behind-events", "a live subscriber this far behind has fallen behind (default 10000)",
     NULL},
    {"sub-behind-seconds", "... or one not caught up for this many seconds (default 5)", NULL},
    {"sub-batch-us", "under a stream of commits, 100 or more live subscribers are woken at most once per this many microseconds, fewer in proportion; with 10 or more, up to 10 times longer when the rounds are dear (0: at every commit; default 2000)", NULL},
    {"sub-checkpoint-events", "a checkpoint after this many filtered-out events (default 1000)",
     NULL},
    {"memory-budget", "MiB of memory above which new requests get 503 BUSY (default 1024; 0 off)",
     NULL},
    {"max-streams-per-connection", "concurrent HTTP/2 (gRPC) streams per connection (default 100)",
     NULL},
    {"max-subscriptions", "subscriptions open at once, SSE and gRPC (default 10000)", NULL},
    {"max-groups", "consumer groups that may exist (default 1000)", NULL},
    {"max-consumers-per-group", "consumers connected to one group at once (default 100)", NULL},
    {"node", "this server's name among the servers sharing consumer groups (default: random; "
             "a server restarted under its name takes its claims back at once)", NULL},
    {"group-lease-ms", "ms before a dead server's claimed group events go to another server "
                       "(default 10000)", NULL},
    {"archive-dir", "copy each sealed log segment, and the tail on a schedule, into this directory"
                    " (default: no archive; docs/operations.md)", NULL},
    {"archive-interval", "seconds between copies of the tail into the archive (default 60)", NULL},
    {"allowed-hosts", "more names clients may reach the server by (Host header), comma-separated;"
                      " * for any (default: localhost, IP addresses, this machine's name)", NULL},
    {"allowed-origins", "web page origins allowed to use the API (CORS), comma-separated, e.g. "
                        "http://app.example:8080; * for any (default: only the server's own)",
     NULL},
    {"tls-cert", "PEM certificate chain: the port then speaks TLS (HTTP/1.1, SSE, gRPC)", NULL},
    {"tls-key", "PEM private key of --tls-cert (both reloaded on SIGHUP)", NULL},
    {"tls-client-ca", "PEM CA(s): require client certificates signed by them", NULL},
    {"allow-cleartext", "(no value) with TLS, also serve cleartext clients on the same port",
     NULL},
    {"admin-password", "creates the user admin ($admins) if missing; then every request "
                       "must authenticate (docs/security.md)", NULL},
    {"signing-key", "Ed25519 key file (stele keygen): chain heads and exports are signed "
                    "(docs/security.md)", NULL},
    {"insecure", "(no value) allow a non-loopback --host without TLS and users", NULL},
    {"auth-fail-limit", "failed authentications per client address a minute before it is "
                        "refused for the rest of the minute (default 5)", NULL},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

static int serve_usage(FILE *f)
{
    fprintf(f, "usage: stele serve [--name value ...] [--config FILE]\n\n"
               "Runs the Stele server (HTTP/1.1 JSON API) on the store named by --store\n"
               "(or the directory --data).\n"
               "Each setting comes from its flag, else the environment variable shown,\n"
               "else the config file (--config or STELE_CONFIG), else its default.\n\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        char env[64];
        snprintf(env, sizeof env, "STELE_%s", settings[i].name);
        for (char *p = env; *p; p++)
            *p = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        fprintf(f, "  --%-17s %-24s %s\n", settings[i].name, env, settings[i].help);
    }
    fprintf(f, "\nSIGTERM or SIGINT stops it gracefully: in-flight appends finish, the store\n"
               "closes cleanly.\n");
    return f == stderr ? 2 : 0;
}

static setting *find(const char *name)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (!strcmp(settings[i].name, name))
            return &settings[i];
    return NULL;
}

/* Settings that take no value on the command line (--allow-cleartext);
 * in the environment or the config file they are 1/true/yes or 0/false/no. */
static int is_flag(const setting *st)
{
    static const char *const flags[] = {"allow-cleartext", "insecure"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strcmp(st->name, flags[i]))
            return 1;
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

/* Fill settings not given by flag or environment from the file. */
static int read_config(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "stele serve: config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            fprintf(stderr, "stele serve: %s:%d: expected 'name = value'\n", path, lineno);
            fclose(f);
            return -1;
        }
        *eq = 0;
        char *name = trim(s), *value = trim(eq + 1);
        setting *st = find(name);
        if (!st) {
            fprintf(stderr, "stele serve: %s:%d: unknown setting '%s'\n", path, lineno, name);
            fclose(f);
            return -1;
        }
        if (!st->value)
            st->value = strdup(value);
    }
    fclose(f);
    return 0;
}

static int num(const char *name, const char *v, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < min || x > max) {
        fprintf(stderr, "stele serve: %s must be a number from %lld to %lld (got '%s')\n", name,
                min, max, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* A flag's value: 1, 0, or -1 with a message. */
static int yes(const setting *st)
{
    const char *v = st->value;
    if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
        return 1;
    if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off"))
        return 0;
    fprintf(stderr, "stele serve: %s must be 1/true/yes or 0/false/no (got '%s')\n", st->name, v);
    return -1;
}

/* Flags from argv[2] on into the settings table (and --config into
 * *config): -1 to go on, else the exit status after usage. */
static int parse_flags(int argc, char **argv, const char **config)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return serve_usage(stdout);
        setting *fl = !strncmp(a, "--", 2) ? find(a + 2) : NULL;
        if (fl && is_flag(fl)) {
            fl->value = "1";
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "stele serve: expected --name value, got '%s'\n", a);
            return serve_usage(stderr);
        }
        if (!strcmp(a + 2, "config")) {
            *config = argv[++i];
            continue;
        }
        setting *st = find(a + 2);
        if (!st) {
            fprintf(stderr, "stele serve: unknown option '%s'\n", a);
            return serve_usage(stderr);
        }
        st->value = argv[++i];
    }
    return -1;
}

/* Settings no flag gave from STELE_<NAME> (dashes as underscores). */
static void settings_from_env(void)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (settings[i].value)
            continue;
        char env[64];
        snprintf(env, sizeof env, "STELE_%s", settings[i].name);
        for (char *p = env; *p; p++)
            *p = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        settings[i].value = getenv(env);
    }
}

/* port, host, node and the data directory (store or its older name,
 * data): 0, or 2 after a message. */
static int apply_location(server_config *cfg)
{
    long long v;
    setting *st;
    if ((st = find("port"))->value) {
        if (num("port", st->value, 0, 65535, &v))
            return 2;
        cfg->port = (int)v;
    }
    if ((st = find("host"))->value)
        cfg->host = st->value;
    if ((st = find("node"))->value) {
        size_t n = strlen(st->value);
        if (n == 0 || n >= sizeof cfg->store.node_name || strpbrk(st->value, " \t\r\n")) {
            fprintf(stderr, "stele serve: node must be 1..%zu bytes without spaces\n",
                    sizeof cfg->store.node_name - 1);
            return 2;
        }
        memcpy(cfg->store.node_name, st->value, n + 1);
    }
    setting *data = find("data");
    if ((st = find("store"))->value && data->value && strcmp(st->value, data->value) != 0) {
        fprintf(stderr, "stele serve: both store (%s) and data (%s) are set: give one (flags, "
                        "STELE_STORE/STELE_DATA or the config file)\n",
                st->value, data->value);
        return 2;
    }
    if (st->value || data->value)
        cfg->data_dir = st->value ? st->value : data->value;
    return 0;
}

/* Allowed hosts and origins, TLS, credentials, archive and log level: 0,
 * or 2 after a message. */
static int apply_access(server_config *cfg)
{
    setting *st;
    if ((st = find("allowed-hosts"))->value)
        cfg->allowed_hosts = st->value;
    if ((st = find("allowed-origins"))->value)
        cfg->allowed_origins = st->value;
    cfg->tls_cert = find("tls-cert")->value;
    cfg->tls_key = find("tls-key")->value;
    cfg->tls_client_ca = find("tls-client-ca")->value;
    if ((st = find("allow-cleartext"))->value && (cfg->allow_cleartext = yes(st)) < 0)
        return 2;
    if ((st = find("insecure"))->value && (cfg->insecure = yes(st)) < 0)
        return 2;
    cfg->admin_password = find("admin-password")->value;
    cfg->signing_key = find("signing-key")->value;
    if ((st = find("archive-dir"))->value && *st->value)
        cfg->archive_dir = st->value;
    if ((st = find("log-level"))->value) {
        if (!strcmp(st->value, "error"))
            cfg->log_level = 0;
        else if (!strcmp(st->value, "info"))
            cfg->log_level = 1;
        else if (!strcmp(st->value, "debug"))
            cfg->log_level = 2;
        else {
            fprintf(stderr, "stele serve: log-level must be error, info or debug\n");
            return 2;
        }
    }
    return 0;
}

/* The numeric limits, each checked against its range: 0, or 2 after a
 * message. */
static int apply_numbers(server_config *cfg)
{
    struct {
        const char *name;
        long long min, max;
        void *dst;
        int kind; /* 0 size_t, 1 int ms from seconds, 2 uint64, 3 size_t MiB, 4 uint32, 5 int */
    } nums[] = {
        {"max-connections", 1, 1000000, &cfg->max_connections, 0},
        {"max-body", 1024, 1LL << 30, &cfg->max_body_bytes, 0},
        {"idle-timeout", 1, 86400, &cfg->idle_timeout_ms, 1},
        {"request-timeout", 1, 86400, &cfg->request_timeout_ms, 1},
        {"segment-size", 65536, 2LL << 30, &cfg->store.segment_size, 2},
        {"max-event-size", 1, 1LL << 30, &cfg->store.max_event_size, 2},
        {"max-append-size", 1, 1LL << 30, &cfg->store.max_append_size, 2},
        {"sse-keepalive", 1, 3600, &cfg->sse_keepalive_ms, 1},
        {"sse-stall-timeout", 1, 86400, &cfg->sse_stall_timeout_ms, 1},
        {"sub-behind-events", 1, 1LL << 40, &cfg->sub_behind_events, 2},
        {"sub-behind-seconds", 1, 86400, &cfg->sub_behind_ms, 1},
        {"sub-checkpoint-events", 1, 1LL << 40, &cfg->sub_checkpoint_events, 2},
        {"sub-batch-us", 0, 1000000, &cfg->sub_batch_us, 5},
        {"memory-budget", 0, 1LL << 30, &cfg->memory_budget, 3},
        {"max-streams-per-connection", 1, 1LL << 20, &cfg->max_streams_per_connection, 0},
        {"max-subscriptions", 1, 10000000, &cfg->max_subscriptions, 0},
        {"max-groups", 1, 1000000, &cfg->store.max_groups, 4},
        {"max-consumers-per-group", 1, 1000000, &cfg->store.max_consumers_per_group, 4},
        {"group-lease-ms", 300, 3600000, &cfg->store.group_lease_ms, 4},
        {"auth-fail-limit", 1, 1000000, &cfg->auth_fail_limit, 5},
        {"archive-interval", 1, 86400, &cfg->archive_interval_ms, 1},
    };
    long long v;
    setting *st;
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (!(st = find(nums[i].name))->value)
            continue;
        if (num(nums[i].name, st->value, nums[i].min, nums[i].max, &v))
            return 2;
        if (nums[i].kind == 0)
            *(size_t *)nums[i].dst = (size_t)v;
        else if (nums[i].kind == 1)
            *(int *)nums[i].dst = (int)v * 1000;
        else if (nums[i].kind == 3)
            *(size_t *)nums[i].dst = (size_t)v << 20;
        else if (nums[i].kind == 4)
            *(uint32_t *)nums[i].dst = (uint32_t)v;
        else if (nums[i].kind == 5)
            *(int *)nums[i].dst = (int)v;
        else
            *(uint64_t *)nums[i].dst = (uint64_t)v;
    }
    return 0;
}

/* Settings come from flags, then STELE_* variables, then the config file
 * (each only where the earlier ones are silent). */
int cmd_serve(int argc, char **argv)
{
    const char *config = getenv("STELE_CONFIG");
    int rc = parse_flags(argc, argv, &config);
    if (rc >= 0)
        return rc;
    settings_from_env();
    if (config && read_config(config))
        return 2;

    server_config cfg;
    server_config_init(&cfg);
    if (apply_location(&cfg) || apply_access(&cfg) || apply_numbers(&cfg))
        return 2;
    const char *ready = getenv("STELE_READY_FD");
    if (ready)
        cfg.ready_fd = atoi(ready);
    return server_run(&cfg);
}
