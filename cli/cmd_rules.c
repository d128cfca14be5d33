/*
 * cmd_rules.c - `stele rules ...`: manage rules, their dead letters and
 * replays over the server's /rules API (docs/rules.md).
 *
 *   stele rules list
 *   stele rules get NAME
 *   stele rules put NAME (--file FILE | JSON | -)     definition from a file, the argument or stdin
 *   stele rules delete|pause|resume NAME
 *   stele rules dead-letters NAME [--from N] [--limit N]
 *   stele rules redrive NAME [--max N]
 *   stele rules truncate-dead NAME [--before N]
 *   stele rules replay NAME --from X [--to Y]         X, Y: positions or RFC 3339 times
 *   stele rules replays NAME [ID]
 *   stele rules cancel-replay NAME ID
 *
 * Output: the server's JSON, one object per line; `list` on a terminal is a
 * table (name, state, matched, delivered, dead letters, lag).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char synopsis[] =
    "stele rules list|get|put|delete|pause|resume|dead-letters|redrive|truncate-dead|replay|"
    "replays|cancel-replay [NAME] [options]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Manages rules: each routes the events that match its pattern to a target\n"
           "(a webhook or a stream), at least once, in order per stream, with retries and\n"
           "a dead-letter stream (docs/rules.md).\n\n"
           "  list                          every rule with its counters\n"
           "  get NAME                      definition and counters\n"
           "  put NAME (--file F | JSON | -)  create or replace (definition from a file,\n"
           "                                the argument, or stdin with -)\n"
           "  delete NAME                   delete the rule, its checkpoint, dead letters\n"
           "  pause NAME | resume NAME      stop / restart delivery\n"
           "  dead-letters NAME [--from N] [--limit N]\n"
           "  redrive NAME [--max N]        deliver dead letters again (default all)\n"
           "  truncate-dead NAME [--before N]  drop dead letters (default all)\n"
           "  replay NAME --from X [--to Y] deliver a window again (positions or RFC 3339\n"
           "                                times; to: default now)\n"
           "  replays NAME [ID]             progress of replays\n"
           "  cancel-replay NAME ID\n\n"
           "Options:\n"
           "  --json          JSON even on a terminal\n"
           "  --server URL    the server (default: $STELE_SERVER, else %s)\n\n"
           "Exit status: 0 ok, 1 the server refused (RULE_NOT_FOUND, INVALID_ARGUMENT ...),\n"
           "2 bad arguments, 3 server unreachable.\n",
           synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

static int read_all(FILE *f, cli_buf *b)
{
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        cli_buf_add(b, tmp, n);
    return ferror(f) ? -1 : 0;
}

static int is_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* A window end as JSON: a number stays a number, anything else a string. */
static void add_end(cli_buf *b, const char *key, const char *v)
{
    cli_buf_adds(b, key);
    if (is_digits(v))
        cli_buf_adds(b, v);
    else
        cli_buf_add_jstr(b, v);
}

static void print_table(cli_span out)
{
    cli_span rules;
    if (!cli_json_get(out, "rules", &rules)) {
        fwrite(out.p, 1, out.n, stdout);
        return;
    }
    printf("%-24s %-8s %10s %10s %8s %10s\n", "NAME", "STATE", "MATCHED", "DELIVERED", "DEAD",
           "LAG");
    cli_span item;
    size_t at = 0;
    while (cli_json_next(rules, &at, &item)) {
        cli_span v, stats;
        char *name = cli_json_get(item, "name", &v) ? cli_json_str(v) : NULL;
        int enabled = cli_json_get(item, "enabled", &v) && cli_json_true(v);
        uint64_t matched = 0, delivered = 0, dead = 0, lag = 0;
        if (cli_json_get(item, "stats", &stats)) {
            if (cli_json_get(stats, "matched", &v))
                cli_json_u64(v, &matched);
            if (cli_json_get(stats, "delivered", &v))
                cli_json_u64(v, &delivered);
            if (cli_json_get(stats, "deadLetters", &v))
                cli_json_u64(v, &dead);
            if (cli_json_get(stats, "lagEvents", &v))
                cli_json_u64(v, &lag);
        }
        printf("%-24s %-8s %10llu %10llu %8llu %10llu\n", name ? name : "?",
               enabled ? "enabled" : "paused",
               (unsigned long long)matched, (unsigned long long)delivered,
               (unsigned long long)dead, (unsigned long long)lag);
        free(name);
    }
}

/* The parsed command line: pos[0] the rule name, pos[1] a replay id. */
typedef struct rules_args {
    cli_common co;
    const char *sub, *pos[2], *file, *from, *to, *limit, *max, *before, *def;
} rules_args;

/* Each subcommand appends to *path (already "/rules[/NAME]"), sets
 * *has_body when it sends one, and returns the HTTP method. */
typedef const char *rules_path_fn(const rules_args *a, cli_buf *path, int *has_body);

static const char *rules_get(const rules_args *a, cli_buf *path, int *has_body)
{
    (void)a;
    (void)path;
    (void)has_body;
    return "GET";
}

static const char *rules_put(const rules_args *a, cli_buf *path, int *has_body)
{
    (void)a;
    (void)path;
    (void)has_body;
    return "PUT";
}

static const char *rules_delete(const rules_args *a, cli_buf *path, int *has_body)
{
    (void)a;
    (void)path;
    (void)has_body;
    return "DELETE";
}

/* pause, resume: POST /rules/NAME/<sub> with an empty body */
static const char *rules_pause(const rules_args *a, cli_buf *path, int *has_body)
{
    cli_buf_adds(path, strcmp(a->sub, "pause") ? "/resume" : "/pause");
    *has_body = 1;
    return "POST";
}

static const char *rules_dead_letters(const rules_args *a, cli_buf *path, int *has_body)
{
    (void)has_body;
    cli_buf_adds(path, "/dead-letters?limit=");
    cli_buf_adds(path, a->limit ? a->limit : "100");
    cli_buf_adds(path, "&from=");
    cli_buf_adds(path, a->from ? a->from : "0");
    return "GET";
}

static const char *rules_redrive(const rules_args *a, cli_buf *path, int *has_body)
{
    cli_buf_adds(path, "/dead-letters/redrive?max=");
    cli_buf_adds(path, a->max ? a->max : "0");
    *has_body = 1;
    return "POST";
}

static const char *rules_truncate_dead(const rules_args *a, cli_buf *path, int *has_body)
{
    (void)has_body;
    cli_buf_adds(path, "/dead-letters");
    if (a->before) {
        cli_buf_adds(path, "?before=");
        cli_buf_adds(path, a->before);
    }
    return "DELETE";
}

static const char *rules_replay(const rules_args *a, cli_buf *path, int *has_body)
{
    (void)a;
    (void)has_body;
    cli_buf_adds(path, "/replays");
    return "POST";
}

/* replays [ID] (GET) and cancel-replay ID (DELETE) */
static const char *rules_replays(const rules_args *a, cli_buf *path, int *has_body)
{
    (void)has_body;
    cli_buf_adds(path, "/replays");
    if (a->pos[1]) {
        cli_buf_adds(path, "/");
        cli_buf_adds(path, a->pos[1]);
    }
    return strcmp(a->sub, "cancel-replay") ? "GET" : "DELETE";
}

static const struct rules_sub {
    const char *name;
    rules_path_fn *path;
} rules_subs[] = {
    {"list", rules_get},
    {"get", rules_get},
    {"put", rules_put},
    {"delete", rules_delete},
    {"pause", rules_pause},
    {"resume", rules_pause},
    {"dead-letters", rules_dead_letters},
    {"redrive", rules_redrive},
    {"truncate-dead", rules_truncate_dead},
    {"replay", rules_replay},
    {"replays", rules_replays},
    {"cancel-replay", rules_replays},
    {NULL, NULL},
};

/* Options and positional arguments from argv[3] on: -1 to go on, else the
 * exit status (usage printed or an error given). */
static int parse_args(int argc, char **argv, rules_args *ra)
{
    int npos = 0, r;
    int put = !strcmp(ra->sub, "put");
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1] || (put && a[0] == '{')) {
            if (put && npos == 1) {
                ra->def = a;
                continue;
            }
            if (npos == 2)
                return cli_usage_error("rules", synopsis, "unexpected argument '%s'", a);
            ra->pos[npos++] = a;
        } else if (!strcmp(a, "-") && put) {
            ra->def = "-";
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else if ((r = cli_common_opt(&ra->co, "rules", argc, argv, &i)) ||
                   (r = cli_opt("rules", argc, argv, &i, "--file", &ra->file)) ||
                   (r = cli_opt("rules", argc, argv, &i, "--from", &ra->from)) ||
                   (r = cli_opt("rules", argc, argv, &i, "--to", &ra->to)) ||
                   (r = cli_opt("rules", argc, argv, &i, "--limit", &ra->limit)) ||
                   (r = cli_opt("rules", argc, argv, &i, "--max", &ra->max)) ||
                   (r = cli_opt("rules", argc, argv, &i, "--before", &ra->before))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else {
            return cli_usage_error("rules", synopsis, "unknown option '%s'", a);
        }
    }
    return -1;
}

/* The arguments each subcommand needs and the numbers: -1 when fine, else
 * CLI_EUSAGE after a message. */
static int check_args(const rules_args *a)
{
    const char *sub = a->sub;
    if (strcmp(sub, "list") != 0 && !a->pos[0])
        return cli_usage_error("rules", synopsis, "%s: missing the rule name", sub);
    if (!strcmp(sub, "cancel-replay") && (!a->pos[1] || !is_digits(a->pos[1])))
        return cli_usage_error("rules", synopsis, "cancel-replay: missing the replay id");
    if (!strcmp(sub, "replays") && a->pos[1] && !is_digits(a->pos[1]))
        return cli_usage_error("rules", synopsis, "replays: the replay id is a number");
    if (!strcmp(sub, "replay") && !a->from)
        return cli_usage_error("rules", synopsis, "replay: --from is required");
    const char *nums[4][2] = {{"--limit", a->limit}, {"--max", a->max}, {"--before", a->before},
                              {NULL, NULL}};
    for (int k = 0; nums[k][0]; k++)
        if (nums[k][1] && !is_digits(nums[k][1]))
            return cli_usage_error("rules", synopsis, "%s must be a number", nums[k][0]);
    if (a->from && strcmp(sub, "replay") && !is_digits(a->from))
        return cli_usage_error("rules", synopsis, "--from must be a number");
    return -1;
}

/* put's definition (--file FILE, JSON or - for stdin) into *body: -1 when
 * read, else CLI_EUSAGE after a message. */
static int read_definition(const rules_args *a, cli_buf *body)
{
    if ((a->file != NULL) + (a->def != NULL) != 1)
        return cli_usage_error("rules", synopsis,
                               "put: give the definition once: --file FILE, JSON or -");
    FILE *f = a->file ? fopen(a->file, "rb") : a->def && !strcmp(a->def, "-") ? stdin : NULL;
    if (a->file && !f) {
        fprintf(stderr, "stele: cannot open %s\n", a->file);
        return CLI_EUSAGE;
    }
    if (!f) {
        cli_buf_adds(body, a->def);
        return -1;
    }
    int bad = read_all(f, body);
    if (f != stdin)
        fclose(f);
    if (bad) {
        fprintf(stderr, "stele: cannot read the definition\n");
        cli_buf_free(body);
        return CLI_EUSAGE;
    }
    return -1;
}

/* The request body of put and replay into *body (*has_body set): -1 to go
 * on, else the exit status. */
static int build_body(const rules_args *a, cli_buf *body, int *has_body)
{
    if (!strcmp(a->sub, "put")) {
        int rc = read_definition(a, body);
        if (rc >= 0)
            return rc;
        *has_body = 1;
    } else if (!strcmp(a->sub, "replay")) {
        add_end(body, "{\"from\":", a->from);
        if (a->to)
            add_end(body, ",\"to\":", a->to);
        cli_buf_adds(body, "}");
        *has_body = 1;
    }
    return -1;
}

int cmd_rules(int argc, char **argv)
{
    if (argc < 3)
        return cli_usage_error("rules", synopsis, "missing a subcommand");
    rules_args ra = {.sub = argv[2]};
    if (!strcmp(ra.sub, "--help") || !strcmp(ra.sub, "-h") || !strcmp(ra.sub, "help"))
        return usage();
    const struct rules_sub *sp = rules_subs;
    while (sp->name && strcmp(sp->name, ra.sub))
        sp++;
    if (!sp->name)
        return cli_usage_error("rules", synopsis, "unknown subcommand '%s'", ra.sub);
    cli_buf body = {0};
    int has_body = 0;
    int rc = parse_args(argc, argv, &ra);
    if (rc < 0)
        rc = check_args(&ra);
    if (rc < 0)
        rc = build_body(&ra, &body, &has_body);
    if (rc >= 0)
        return rc;

    cli_client *c = cli_client_open(ra.co.server);
    if (!c) {
        cli_buf_free(&body);
        return CLI_ECONNECT;
    }
    cli_buf path = {0};
    cli_buf_adds(&path, "/rules");
    if (ra.pos[0]) {
        char *e = cli_escape(c, ra.pos[0]);
        cli_buf_adds(&path, "/");
        cli_buf_adds(&path, e);
        free(e);
    }
    const char *method = sp->path(&ra, &path, &has_body);
    cli_response resp;
    rc = cli_request(c, method, path.p, NULL, has_body ? (body.p ? body.p : "") : NULL, body.len,
                     NULL, &resp);
    if (rc == CLI_OK) {
        cli_span out = {resp.body.p ? resp.body.p : "", resp.body.len};
        if (resp.status < 200 || resp.status >= 300)
            rc = cli_report_error(&resp);
        else if (!strcmp(ra.sub, "list") && cli_human(&ra.co))
            print_table(out);
        else if (resp.body.len) {
            fwrite(resp.body.p, 1, resp.body.len, stdout);
            if (resp.body.p[resp.body.len - 1] != '\n')
                putchar('\n');
        }
    }
    rc = cli_finish_output("rules", rc);
    cli_buf_free(&body);
    cli_buf_free(&path);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}
