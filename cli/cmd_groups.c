/*
 * cmd_groups.c - `stele groups ...`: manage consumer groups (persistent
 * subscriptions) and their parked messages over the server's
 * /subscriptions API (docs/http-api.md, docs/consumer-groups.md).
 *
 *   stele groups list [STREAM]
 *   stele groups info STREAM GROUP
 *   stele groups create STREAM GROUP [settings]
 *   stele groups update STREAM GROUP [settings]
 *   stele groups delete STREAM GROUP
 *   stele groups parked STREAM GROUP [--from N] [--limit N]
 *   stele groups replay-parked STREAM GROUP [--max N]
 *   stele groups truncate-parked STREAM GROUP [--before N]
 *
 * STREAM is a stream name, or $all (or --all) for a group on $all. On a
 * terminal the output is a table or a list of fields; otherwise (or with
 * --json) it is the server's JSON, one object per line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char synopsis[] =
    "stele groups list|info|create|update|delete|parked|replay-parked|truncate-parked "
    "[STREAM|--all] [GROUP] [options]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Manages consumer groups (persistent subscriptions): servers keep each group's\n"
           "checkpoint, hand its events to the consumers connected to it, retry what they\n"
           "do not ack and park what keeps failing (docs/consumer-groups.md).\n\n"
           "  list [STREAM]                   every group (or those of STREAM)\n"
           "  info STREAM GROUP               settings, checkpoint, counts, consumers\n"
           "  create STREAM GROUP [settings]  a new group (defaults for what is not given)\n"
           "  update STREAM GROUP [settings]  change the settings given (not the filter)\n"
           "  delete STREAM GROUP             delete the group, its checkpoint and parked\n"
           "                                  messages\n"
           "  parked STREAM GROUP [--from N] [--limit N]\n"
           "                                  the parked messages (dead-letter queue)\n"
           "  replay-parked STREAM GROUP [--max N]\n"
           "                                  deliver parked messages again (default all)\n"
           "  truncate-parked STREAM GROUP [--before N]\n"
           "                                  drop parked messages (default all)\n\n"
           "STREAM is a stream name, or $all (quote it in a shell) or --all for a group on\n"
           "every stream.\n\n"
           "Settings (create, update):\n"
           "  --start N|start|end      first position ($all) or revision to deliver\n"
           "                           (default start; used until the first checkpoint)\n"
           "  --strategy S             round-robin (default) or pinned (one consumer per\n"
           "                           stream at a time)\n"
           "  --max-in-flight N        events in flight per consumer (default 10)\n"
           "  --message-timeout MS     time to ack before redelivery (default 30000)\n"
           "  --max-retries N          redeliveries before parking (default 10)\n"
           "  --buffer-size N          events the group holds in memory (default 500)\n"
           "  --checkpoint-after MS    checkpoint at most this often (default 2000)\n"
           "  --checkpoint-min N       ... after this many completed events (default 10)\n"
           "  --checkpoint-max N       ... and at once after this many (default 1000)\n"
           "  --settings JSON          settings as the HTTP API's JSON object (flags above\n"
           "                           override its fields)\n"
           "Filter ($all groups, create only; each may repeat):\n"
           "  --stream-prefix P  --category C  --type T  --type-prefix P  --tag T\n"
           "  --stream-regex RE  --type-regex RE  --exclude-system\n\n"
           "Options:\n"
           "  --json          the server's JSON even on a terminal\n"
           "  --server URL    the server (default: $STELE_SERVER, else %s)\n\n"
           "Exit status: 0 ok, 1 the server refused (GROUP_NOT_FOUND, GROUP_EXISTS,\n"
           "INVALID_ARGUMENT ...), 2 bad arguments, 3 server unreachable.\n",
           synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

/* ------------------------------------------------------------ paths */

static void add_encoded(cli_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if ((*u >= 'A' && *u <= 'Z') || (*u >= 'a' && *u <= 'z') || (*u >= '0' && *u <= '9') ||
            *u == '-' || *u == '.' || *u == '_' || *u == '~') {
            cli_buf_add(b, u, 1);
        } else {
            char e[3] = {'%', hex[*u >> 4], hex[*u & 15]};
            cli_buf_add(b, e, 3);
        }
    }
}

/* "/subscriptions[/stream[/group]]" + suffix; caller frees. */
static char *group_path(const char *stream, const char *group, const char *suffix)
{
    cli_buf b = {0};
    cli_buf_adds(&b, "/subscriptions");
    if (stream) {
        cli_buf_adds(&b, "/");
        add_encoded(&b, stream);
    }
    if (group) {
        cli_buf_adds(&b, "/");
        add_encoded(&b, group);
    }
    cli_buf_adds(&b, suffix ? suffix : "");
    return b.p;
}

/* ------------------------------------------------------------ output */

static void print_u64_field(cli_span obj, const char *label, const char *key)
{
    cli_span v;
    uint64_t x;
    printf("%-20s", label);
    if (!cli_json_get(obj, key, &v))
        printf("?\n");
    else if (!cli_json_u64(v, &x))
        printf("%llu\n", (unsigned long long)x);
    else
        printf("-\n");
}

static void print_str_field(cli_span obj, const char *label, const char *key)
{
    cli_span v;
    char *s = cli_json_get(obj, key, &v) ? cli_json_str(v) : NULL;
    printf("%-20s%s\n", label, s ? s : "");
    free(s);
}

/* A JSON value as it is (compact enough for a line). */
static void print_raw_field(cli_span obj, const char *label, const char *key)
{
    cli_span v;
    if (cli_json_get(obj, key, &v))
        printf("%-20s%.*s\n", label, (int)v.n, v.p);
}

static void print_info(cli_span in)
{
    cli_span st, cons, c;
    print_str_field(in, "stream", "stream");
    print_str_field(in, "group", "group");
    if (cli_json_get(in, "settings", &st)) {
        print_str_field(st, "strategy", "strategy");
        print_u64_field(st, "start from", "startFrom");
        print_u64_field(st, "max in flight", "maxInFlight");
        print_u64_field(st, "message timeout ms", "messageTimeoutMs");
        print_u64_field(st, "max retries", "maxRetries");
        print_u64_field(st, "buffer size", "bufferSize");
        print_u64_field(st, "checkpoint after ms", "checkpointAfterMs");
        print_u64_field(st, "checkpoint min", "checkpointMinCount");
        print_u64_field(st, "checkpoint max", "checkpointMaxCount");
        print_raw_field(st, "filter", "filter");
    }
    print_u64_field(in, "checkpoint", "checkpoint");
    print_u64_field(in, "checkpoint saved", "checkpointSaved");
    print_u64_field(in, "read position", "readPosition");
    print_u64_field(in, "in flight", "inFlight");
    print_u64_field(in, "waiting", "waiting");
    print_u64_field(in, "parked", "parked");
    print_u64_field(in, "replaying", "replaying");
    print_u64_field(in, "delivered", "delivered");
    print_u64_field(in, "acked", "acked");
    print_u64_field(in, "nacked", "nacked");
    print_u64_field(in, "timed out", "timedOut");
    print_u64_field(in, "parked in all", "parkedTotal");
    print_str_field(in, "last error", "lastError");
    if (cli_json_get(in, "consumers", &cons)) {
        size_t pos = 0;
        int any = 0;
        while (cli_json_next(cons, &pos, &c)) {
            cli_span v;
            uint64_t inf = 0, del = 0;
            char *name = cli_json_get(c, "name", &v) ? cli_json_str(v) : NULL;
            if (cli_json_get(c, "inFlight", &v))
                cli_json_u64(v, &inf);
            if (cli_json_get(c, "delivered", &v))
                cli_json_u64(v, &del);
            printf("%-20s%s (in flight %llu, delivered %llu)\n", any ? "" : "consumers",
                   name ? name : "?", (unsigned long long)inf, (unsigned long long)del);
            free(name);
            any = 1;
        }
        if (!any)
            printf("%-20s-\n", "consumers");
    }
}

static void print_list(cli_span body)
{
    cli_span groups, g;
    if (!cli_json_get(body, "groups", &groups))
        return;
    printf("%-24s %-20s %-10s %9s %9s %9s %8s %12s\n", "STREAM", "GROUP", "STRATEGY",
           "CONSUMERS", "IN-FLIGHT", "WAITING", "PARKED", "CHECKPOINT");
    size_t pos = 0;
    while (cli_json_next(groups, &pos, &g)) {
        cli_span v, st, cons, c;
        char *stream = cli_json_get(g, "stream", &v) ? cli_json_str(v) : NULL;
        char *name = cli_json_get(g, "group", &v) ? cli_json_str(v) : NULL;
        char *strat = cli_json_get(g, "settings", &st) && cli_json_get(st, "strategy", &v)
                          ? cli_json_str(v)
                          : NULL;
        uint64_t inf = 0, wait = 0, parked = 0, ck = 0, nc = 0;
        if (cli_json_get(g, "inFlight", &v))
            cli_json_u64(v, &inf);
        if (cli_json_get(g, "waiting", &v))
            cli_json_u64(v, &wait);
        if (cli_json_get(g, "parked", &v))
            cli_json_u64(v, &parked);
        int has_ck = cli_json_get(g, "checkpoint", &v) && !cli_json_u64(v, &ck);
        if (cli_json_get(g, "consumers", &cons)) {
            size_t p = 0;
            while (cli_json_next(cons, &p, &c))
                nc++;
        }
        char ckbuf[24];
        snprintf(ckbuf, sizeof ckbuf, has_ck ? "%llu" : "-", (unsigned long long)ck);
        printf("%-24s %-20s %-10s %9llu %9llu %9llu %8llu %12s\n", stream ? stream : "?",
               name ? name : "?", strat ? strat : "?", (unsigned long long)nc,
               (unsigned long long)inf, (unsigned long long)wait, (unsigned long long)parked,
               ckbuf);
        free(stream);
        free(name);
        free(strat);
    }
}

static void print_parked(cli_span body)
{
    cli_span msgs, m;
    if (!cli_json_get(body, "messages", &msgs))
        return;
    printf("%-8s %-30s %-20s %7s  %s\n", "PARKED", "EVENT", "TYPE", "RETRIES", "REASON");
    size_t pos = 0;
    while (cli_json_next(msgs, &pos, &m)) {
        cli_span v, p;
        uint64_t rev = 0, retries = 0;
        if (cli_json_get(m, "parkedRevision", &v))
            cli_json_u64(v, &rev);
        char *link = cli_json_get(m, "link", &v) ? cli_json_str(v) : NULL;
        char *type = NULL, *reason = NULL;
        if (cli_json_get(m, "parked", &p)) {
            if (cli_json_get(p, "eventType", &v))
                type = cli_json_str(v);
            if (cli_json_get(p, "reason", &v))
                reason = cli_json_str(v);
            if (cli_json_get(p, "retryCount", &v))
                cli_json_u64(v, &retries);
        }
        printf("%-8llu %-30s %-20s %7llu  %s\n", (unsigned long long)rev, link ? link : "?",
               type ? type : "?", (unsigned long long)retries, reason ? reason : "");
        free(link);
        free(type);
        free(reason);
    }
}

/* The elements of body[key] as JSON lines (for --json / pipes). */
static void print_lines(cli_span body, const char *key)
{
    cli_span arr, e;
    if (!cli_json_get(body, key, &arr))
        return;
    size_t pos = 0;
    while (cli_json_next(arr, &pos, &e))
        printf("%.*s\n", (int)e.n, e.p);
}

/* ------------------------------------------------------------ settings */

typedef struct settings_args {
    cli_buf filter; /* the filter object's members */
    cli_buf fields; /* other members */
    const char *json;
    int exclude_system;
} settings_args;

static void add_field(cli_buf *b, const char *key, const char *raw)
{
    if (b->len)
        cli_buf_adds(b, ",");
    cli_buf_add_jstr(b, key);
    cli_buf_adds(b, ":");
    cli_buf_adds(b, raw);
}

static int is_uint(const char *s)
{
    if (!*s || strlen(s) > 19)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Filter lists: key -> every value given, in order. */
typedef struct flist {
    const char *flag, *key;
    const char *v[64];
    int n;
} flist;

static int parse_setting(int argc, char **argv, int *i, settings_args *sa, flist *fl, int nfl,
                         const char *cmd, int *taken)
{
    static const struct {
        const char *flag, *key;
    } nums[] = {{"--max-in-flight", "maxInFlight"},        {"--message-timeout", "messageTimeoutMs"},
                {"--max-retries", "maxRetries"},           {"--buffer-size", "bufferSize"},
                {"--checkpoint-after", "checkpointAfterMs"}, {"--checkpoint-min", "checkpointMinCount"},
                {"--checkpoint-max", "checkpointMaxCount"}};
    const char *v;
    int r;
    *taken = 1;
    for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
        if ((r = cli_opt(cmd, argc, argv, i, nums[k].flag, &v))) {
            if (r < 0)
                return -1;
            if (!is_uint(v))
                return cli_usage_error(cmd, synopsis, "%s needs a non-negative number (got '%s')",
                                       nums[k].flag, v);
            add_field(&sa->fields, nums[k].key, v);
            return 0;
        }
    }
    if ((r = cli_opt(cmd, argc, argv, i, "--start", &v))) {
        if (r < 0)
            return -1;
        if (!is_uint(v) && strcmp(v, "start") && strcmp(v, "end"))
            return cli_usage_error(cmd, synopsis,
                                   "--start needs a number, start or end (got '%s')", v);
        if (is_uint(v)) {
            add_field(&sa->fields, "startFrom", v);
        } else {
            cli_buf q = {0};
            cli_buf_add_jstr(&q, v);
            add_field(&sa->fields, "startFrom", q.p);
            cli_buf_free(&q);
        }
        return 0;
    }
    if ((r = cli_opt(cmd, argc, argv, i, "--strategy", &v))) {
        if (r < 0)
            return -1;
        const char *s = !strcmp(v, "round-robin") || !strcmp(v, "RoundRobin") ? "\"RoundRobin\""
                        : !strcmp(v, "pinned") || !strcmp(v, "Pinned")     ? "\"Pinned\""
                                                                           : NULL;
        if (!s)
            return cli_usage_error(cmd, synopsis,
                                   "--strategy must be round-robin or pinned (got '%s')", v);
        add_field(&sa->fields, "strategy", s);
        return 0;
    }
    if ((r = cli_opt(cmd, argc, argv, i, "--settings", &v))) {
        if (r < 0)
            return -1;
        size_t at;
        if (cli_json_check(v, strlen(v), &at) != '{')
            return cli_usage_error(cmd, synopsis,
                                   "--settings must be a JSON object (problem at byte %zu)", at);
        sa->json = v;
        return 0;
    }
    if (!strcmp(argv[*i], "--exclude-system")) {
        sa->exclude_system = 1;
        return 0;
    }
    for (int k = 0; k < nfl; k++) {
        if ((r = cli_opt(cmd, argc, argv, i, fl[k].flag, &v))) {
            if (r < 0)
                return -1;
            if (fl[k].n == 64)
                return cli_usage_error(cmd, synopsis, "at most 64 %s", fl[k].flag);
            fl[k].v[fl[k].n++] = v;
            return 0;
        }
    }
    *taken = 0;
    return 0;
}

/* The request body from the flags (NULL when nothing was given). */
static char *settings_body(settings_args *sa, flist *fl, int nfl)
{
    for (int k = 0; k < nfl; k++) {
        if (!fl[k].n)
            continue;
        int single = !strcmp(fl[k].key, "streamRegex") || !strcmp(fl[k].key, "typeRegex");
        cli_buf val = {0};
        if (single) {
            cli_buf_add_jstr(&val, fl[k].v[fl[k].n - 1]);
        } else {
            cli_buf_adds(&val, "[");
            for (int j = 0; j < fl[k].n; j++) {
                if (j)
                    cli_buf_adds(&val, ",");
                cli_buf_add_jstr(&val, fl[k].v[j]);
            }
            cli_buf_adds(&val, "]");
        }
        add_field(&sa->filter, fl[k].key, val.p);
        cli_buf_free(&val);
    }
    if (sa->exclude_system)
        add_field(&sa->filter, "excludeSystem", "true");
    if (sa->filter.len) {
        cli_buf f = {0};
        cli_buf_adds(&f, "{");
        cli_buf_add(&f, sa->filter.p, sa->filter.len);
        cli_buf_adds(&f, "}");
        add_field(&sa->fields, "filter", f.p);
        cli_buf_free(&f);
    }
    if (!sa->fields.len && !sa->json)
        return NULL;
    cli_buf b = {0};
    if (sa->json && sa->fields.len) {
        /* The server applies an object's fields in order, so the flags go
         * after the object's own fields and win. */
        const char *open = strchr(sa->json, '{'), *close = strrchr(sa->json, '}');
        cli_buf_add(&b, sa->json, (size_t)(close - sa->json));
        const char *p = open + 1;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p != '}')
            cli_buf_adds(&b, ",");
        cli_buf_add(&b, sa->fields.p, sa->fields.len);
        cli_buf_adds(&b, "}");
    } else if (sa->json) {
        cli_buf_adds(&b, sa->json);
    } else {
        cli_buf_adds(&b, "{");
        cli_buf_add(&b, sa->fields.p, sa->fields.len);
        cli_buf_adds(&b, "}");
    }
    return b.p;
}

/* ------------------------------------------------------------ command */

typedef struct sub {
    const char *name;
    int args;       /* 0: [STREAM]; 2: STREAM GROUP */
    const char *method;
    const char *suffix;
} sub;

static const sub subs[] = {
    {"list", 0, "GET", NULL},
    {"info", 2, "GET", NULL},
    {"create", 2, "PUT", NULL},
    {"update", 2, "POST", NULL},
    {"delete", 2, "DELETE", NULL},
    {"parked", 2, "GET", "/parked"},
    {"replay-parked", 2, "POST", "/parked/replay"},
    {"truncate-parked", 2, "DELETE", "/parked"},
};

enum { NFLISTS = 7 };

/* The parsed command line. */
typedef struct groups_args {
    const sub *sc;
    int is_set; /* create or update: settings flags allowed, a body sent */
    cli_common co;
    settings_args sa;
    flist fl[NFLISTS];
    const char *pos[3], *from, *limit, *max, *before;
    const char *stream, *group; /* from pos and --all */
    int npos, all;
} groups_args;

/* argv[*i], an option other than --help: 0 when taken, else CLI_EUSAGE
 * after a message. */
static int parse_opt(int argc, char **argv, int *i, groups_args *ga)
{
    const char *a = argv[*i], *name = ga->sc->name;
    int r, taken = 0;
    if (!strcmp(a, "--all")) {
        ga->all = 1;
        return 0;
    }
    if ((r = cli_common_opt(&ga->co, "groups", argc, argv, i)))
        return r < 0 ? CLI_EUSAGE : 0;
    if (!strcmp(name, "parked") &&
        ((r = cli_opt("groups", argc, argv, i, "--from", &ga->from)) ||
         (r = cli_opt("groups", argc, argv, i, "--limit", &ga->limit))))
        return r < 0 ? CLI_EUSAGE : 0;
    if (!strcmp(name, "replay-parked") && (r = cli_opt("groups", argc, argv, i, "--max", &ga->max)))
        return r < 0 ? CLI_EUSAGE : 0;
    if (!strcmp(name, "truncate-parked") &&
        (r = cli_opt("groups", argc, argv, i, "--before", &ga->before)))
        return r < 0 ? CLI_EUSAGE : 0;
    if (ga->is_set &&
        (r = parse_setting(argc, argv, i, &ga->sa, ga->fl, NFLISTS, "groups", &taken), r || taken))
        return r ? CLI_EUSAGE : 0;
    return cli_usage_error("groups", synopsis, "unknown option '%s' for %s", a, name);
}

/* Options and positional arguments from argv[3] on: -1 to go on, else the
 * exit status. */
static int parse_args(int argc, char **argv, groups_args *ga)
{
    int opts_done = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (ga->npos == 3)
                return cli_usage_error("groups", synopsis, "unexpected argument '%s'", a);
            ga->pos[ga->npos++] = a;
        } else if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else {
            int rc = parse_opt(argc, argv, &i, ga);
            if (rc)
                return rc;
        }
    }
    return -1;
}

/* STREAM (or --all) and GROUP from the positional arguments, and the
 * numbers checked: -1 when fine, else CLI_EUSAGE after a message. */
static int check_args(groups_args *ga)
{
    int need = ga->sc->args;
    int k = 0;
    ga->stream = ga->all ? "$all" : NULL;
    if (!ga->all && ga->npos > k)
        ga->stream = ga->pos[k++];
    if (need == 2 && ga->npos > k)
        ga->group = ga->pos[k++];
    const char *stream = ga->stream, *group = ga->group;
    int bad = ga->npos > k || (need == 2 && (!stream || !group)) || (stream && !*stream) ||
              (group && !*group);
    const char *numbad = NULL;
    if (ga->from && !is_uint(ga->from))
        numbad = "--from";
    else if (ga->limit && !is_uint(ga->limit))
        numbad = "--limit";
    else if (ga->max && !is_uint(ga->max))
        numbad = "--max";
    else if (ga->before && !is_uint(ga->before))
        numbad = "--before";
    if (numbad)
        return cli_usage_error("groups", synopsis, "%s needs a non-negative number", numbad);
    if (bad)
        return cli_usage_error("groups", synopsis,
                               need == 2 ? "%s needs STREAM (or --all) and GROUP"
                                         : "%s takes at most a STREAM",
                               ga->sc->name);
    return -1;
}

/* The group's path with the subcommand's suffix and query parameters;
 * caller frees. */
static char *build_path(const groups_args *ga)
{
    cli_buf q = {0};
    cli_buf_adds(&q, ga->sc->suffix ? ga->sc->suffix : "");
    const char *qp[4][2] = {
        {"from", ga->from}, {"limit", ga->limit}, {"max", ga->max}, {"before", ga->before}};
    for (int j = 0; j < 4; j++)
        if (qp[j][1]) {
            cli_buf_adds(&q, strchr(q.p, '?') ? "&" : "?");
            cli_buf_adds(&q, qp[j][0]);
            cli_buf_adds(&q, "=");
            cli_buf_adds(&q, qp[j][1]);
        }
    char *path = group_path(ga->stream, ga->group, q.p);
    cli_buf_free(&q);
    return path;
}

/* A successful answer on a terminal: a table, the group's settings or a
 * sentence. */
static void print_human(const groups_args *ga, cli_span out)
{
    const char *name = ga->sc->name, *group = ga->group, *stream = ga->stream;
    if (!strcmp(name, "list"))
        print_list(out);
    else if (!strcmp(name, "parked"))
        print_parked(out);
    else if (!strcmp(name, "delete"))
        printf("deleted group %s on %s\n", group, stream);
    else if (!strcmp(name, "truncate-parked"))
        printf("truncated the parked messages of group %s on %s\n", group, stream);
    else if (!strcmp(name, "replay-parked")) {
        cli_span v;
        uint64_t n = 0;
        if (cli_json_get(out, "replaying", &v))
            cli_json_u64(v, &n);
        printf("replaying %llu parked message%s of group %s on %s\n", (unsigned long long)n,
               n == 1 ? "" : "s", group, stream);
    } else
        print_info(out);
}

/* A successful answer: for people on a terminal, else one JSON line per
 * group or message, or the server's JSON. */
static void print_answer(const groups_args *ga, const cli_response *resp)
{
    cli_span out = {resp->body.p ? resp->body.p : "", resp->body.len};
    if (cli_human(&ga->co)) {
        print_human(ga, out);
    } else if (!strcmp(ga->sc->name, "list")) {
        print_lines(out, "groups");
    } else if (!strcmp(ga->sc->name, "parked")) {
        print_lines(out, "messages");
    } else if (resp->body.len) {
        fwrite(resp->body.p, 1, resp->body.len, stdout);
        if (resp->body.p[resp->body.len - 1] != '\n')
            putchar('\n');
    }
}

int cmd_groups(int argc, char **argv)
{
    if (argc < 3)
        return cli_usage_error("groups", synopsis, "missing a subcommand");
    if (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h") || !strcmp(argv[2], "help"))
        return usage();
    const sub *sc = NULL;
    for (size_t k = 0; k < sizeof subs / sizeof subs[0]; k++)
        if (!strcmp(argv[2], subs[k].name))
            sc = &subs[k];
    if (!sc)
        return cli_usage_error("groups", synopsis, "unknown subcommand '%s'", argv[2]);
    groups_args ga = {
        .sc = sc,
        .is_set = !strcmp(sc->name, "create") || !strcmp(sc->name, "update"),
        .fl = {{"--stream-prefix", "streamPrefixes", {0}, 0},
               {"--category", "categories", {0}, 0},
               {"--type", "types", {0}, 0},
               {"--type-prefix", "typePrefixes", {0}, 0},
               {"--tag", "tags", {0}, 0},
               {"--stream-regex", "streamRegex", {0}, 0},
               {"--type-regex", "typeRegex", {0}, 0}},
    };
    int rc = parse_args(argc, argv, &ga);
    if (rc < 0)
        rc = check_args(&ga);
    if (rc >= 0) {
        cli_buf_free(&ga.sa.fields);
        cli_buf_free(&ga.sa.filter);
        return rc;
    }
    char *body = ga.is_set ? settings_body(&ga.sa, ga.fl, NFLISTS) : NULL;
    cli_buf_free(&ga.sa.fields);
    cli_buf_free(&ga.sa.filter);
    char *path = build_path(&ga);

    cli_client *c = cli_client_open(ga.co.server);
    if (!c) {
        free(body);
        free(path);
        return CLI_ECONNECT;
    }
    cli_response resp;
    /* An update or replay with no body still needs a (empty) POST body. */
    rc = cli_request(c, sc->method, path, NULL, body ? body : (ga.is_set ? "" : NULL),
                     body ? strlen(body) : 0, NULL, &resp);
    if (rc == CLI_OK) {
        if (resp.status < 200 || resp.status >= 300)
            rc = cli_report_error(&resp);
        else
            print_answer(&ga, &resp);
    }
    rc = cli_finish_output("groups", rc);
    free(body);
    free(path);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}
