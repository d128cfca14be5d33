/*
 * cmd_projection.c - `stele projection ...`: manage and read projections
 * through the server's HTTP API (docs/projections.md):
 *
 *   stele projection list
 *   stele projection create NAME (--file FILE | --query JS) [--onetime] [--emit]
 *                           [--disabled] [--memory-limit BYTES] [--timeout-ms N]
 *                           [--cache-partitions N] [--snapshot-every N]
 *   stele projection status NAME | query NAME
 *   stele projection update NAME (--file FILE | --query JS) [--emit | --no-emit]
 *   stele projection enable NAME | disable NAME | reset NAME
 *   stele projection delete NAME [--delete-state] [--delete-emitted]
 *   stele projection state NAME [--partition KEY] [--result]
 *   stele projection partitions NAME [--after KEY] [--limit N] [--where FIELD=JSON]
 *   stele projection fold NAME STREAM [--to REV | --as-of TIME]
 *   stele projection run (--file FILE | --query JS)   a transient query
 *
 * Answers are the server's JSON on one line; `list` and `status` print a
 * short table on a terminal (unless --json).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char synopsis[] =
    "stele projection list\n"
    "       stele projection create NAME (--file FILE | --query JS) [--onetime] [--emit] [--disabled]\n"
    "                               [--memory-limit BYTES] [--timeout-ms N] [--cache-partitions N]\n"
    "                               [--snapshot-every N]\n"
    "       stele projection status NAME | query NAME | enable NAME | disable NAME | reset NAME\n"
    "       stele projection update NAME (--file FILE | --query JS) [--emit | --no-emit]\n"
    "       stele projection delete NAME [--delete-state] [--delete-emitted]\n"
    "       stele projection state NAME [--partition KEY] [--result]\n"
    "       stele projection partitions NAME [--after KEY] [--limit N] [--where FIELD=JSON]\n"
    "       stele projection fold NAME STREAM [--to REV | --as-of TIME]\n"
    "       stele projection run (--file FILE | --query JS)\n"
    "       (each with [--json] [--server URL])";

static int usage(void)
{
    printf("usage: %s\n\n"
           "JavaScript projections (KurrentDB's API, ES5) on the server: create, manage,\n"
           "read their state, list their partitions as a read model, reconstruct a\n"
           "stream's state with a projection's handlers. FILE may be - (stdin).\n"
           "--where FIELD=JSON keeps partitions whose state has FIELD equal to the JSON\n"
           "value (a string needs quotes: --where 'customerId=\"c-1\"').\n\n"
           "Exit status: 0 done, 1 the server refused (message on stderr), 2 bad\n"
           "arguments, 3 server unreachable.\n",
           synopsis);
    return CLI_OK;
}

/* Append "&name=<escaped value>" (or "?..." first). */
static void param(cli_client *c, cli_buf *path, const char *name, const char *value)
{
    char *e = cli_escape(c, value);
    cli_buf_adds(path, strchr(path->p, '?') ? "&" : "?");
    cli_buf_adds(path, name);
    cli_buf_adds(path, "=");
    cli_buf_adds(path, e);
    free(e);
}

static void print_status_row(cli_span p, int header)
{
    if (header)
        printf("%-28s %-10s %-10s %12s %12s %8s\n", "NAME", "MODE", "STATUS", "POSITION", "LAG",
               "PARTS");
    cli_span v;
    char *name = cli_json_get(p, "name", &v) ? cli_json_str(v) : NULL;
    char *mode = cli_json_get(p, "mode", &v) ? cli_json_str(v) : NULL;
    char *st = cli_json_get(p, "status", &v) ? cli_json_str(v) : NULL;
    uint64_t pos = 0, lag = 0, parts = 0;
    if (cli_json_get(p, "position", &v))
        cli_json_u64(v, &pos);
    if (cli_json_get(p, "lag", &v))
        cli_json_u64(v, &lag);
    if (cli_json_get(p, "partitionsCached", &v))
        cli_json_u64(v, &parts);
    printf("%-28s %-10s %-10s %12llu %12llu %8llu\n", name ? name : "?", mode ? mode : "?",
           st ? st : "?", (unsigned long long)pos, (unsigned long long)lag,
           (unsigned long long)parts);
    char *fault = cli_json_get(p, "fault", &v) ? cli_json_str(v) : NULL;
    if (fault)
        printf("  fault: %s\n", fault);
    free(fault);
    free(name);
    free(mode);
    free(st);
}

/* The parsed command line. */
typedef struct proj_args {
    cli_common co;
    const char *sub, *name, *stream, *file, *query;
    const char *partition, *after, *limit, *where, *to, *as_of, *mem, *timeout, *cache, *snap;
    int onetime, emit, disabled, del_state, del_emitted, result;
} proj_args;

/* Each subcommand appends its path (and query string) to *path after
 * "/projections/NAME" when `under_name`, and returns the HTTP method. */
typedef const char *proj_path_fn(cli_client *c, const proj_args *a, cli_buf *path);

static const char *proj_list(cli_client *c, const proj_args *a, cli_buf *path)
{
    (void)c;
    (void)a;
    cli_buf_adds(path, "/projections");
    return "GET";
}

static const char *proj_run(cli_client *c, const proj_args *a, cli_buf *path)
{
    (void)c;
    (void)a;
    cli_buf_adds(path, "/projections/transient");
    return "POST";
}

/* GET /streams/STREAM/state?projection=NAME[&to=|&asOf=] */
static const char *proj_fold(cli_client *c, const proj_args *a, cli_buf *path)
{
    char *es = cli_escape(c, a->stream);
    cli_buf_adds(path, "/streams/");
    cli_buf_adds(path, es);
    cli_buf_adds(path, "/state");
    free(es);
    param(c, path, "projection", a->name);
    if (a->to)
        param(c, path, "to", a->to);
    if (a->as_of)
        param(c, path, "asOf", a->as_of);
    return "GET";
}

static const char *proj_create(cli_client *c, const proj_args *a, cli_buf *path)
{
    cli_buf_adds(path, a->onetime ? "?mode=onetime" : "?mode=continuous");
    if (a->emit == 1)
        param(c, path, "emit", "true");
    if (a->disabled)
        param(c, path, "enabled", "false");
    if (a->mem)
        param(c, path, "memoryLimit", a->mem);
    if (a->timeout)
        param(c, path, "timeoutMs", a->timeout);
    if (a->cache)
        param(c, path, "cachePartitions", a->cache);
    if (a->snap)
        param(c, path, "snapshotEvery", a->snap);
    return "POST";
}

static const char *proj_status(cli_client *c, const proj_args *a, cli_buf *path)
{
    (void)c;
    (void)a;
    (void)path;
    return "GET";
}

static const char *proj_query(cli_client *c, const proj_args *a, cli_buf *path)
{
    (void)c;
    (void)a;
    cli_buf_adds(path, "/query");
    return "GET";
}

static const char *proj_update(cli_client *c, const proj_args *a, cli_buf *path)
{
    cli_buf_adds(path, "/query");
    if (a->emit >= 0)
        param(c, path, "emit", a->emit ? "true" : "false");
    return "PUT";
}

/* enable, disable, reset: POST /projections/NAME/<sub> */
static const char *proj_command(cli_client *c, const proj_args *a, cli_buf *path)
{
    (void)c;
    cli_buf_adds(path, "/");
    cli_buf_adds(path, a->sub);
    return "POST";
}

static const char *proj_delete(cli_client *c, const proj_args *a, cli_buf *path)
{
    if (a->del_state)
        param(c, path, "deleteState", "true");
    if (a->del_emitted)
        param(c, path, "deleteEmittedStreams", "true");
    return "DELETE";
}

static const char *proj_state(cli_client *c, const proj_args *a, cli_buf *path)
{
    cli_buf_adds(path, a->result ? "/result" : "/state");
    if (a->partition)
        param(c, path, "partition", a->partition);
    return "GET";
}

static const char *proj_partitions(cli_client *c, const proj_args *a, cli_buf *path)
{
    cli_buf_adds(path, "/partitions");
    if (a->after)
        param(c, path, "after", a->after);
    if (a->limit)
        param(c, path, "limit", a->limit);
    if (a->where) {
        const char *eq = strchr(a->where, '=');
        char *f = strndup(a->where, (size_t)(eq - a->where));
        param(c, path, "field", f);
        param(c, path, "value", eq + 1);
        free(f);
    }
    return "GET";
}

/* How each subcommand prints a successful answer on a terminal. */
enum { PROJ_OUT_JSON, PROJ_OUT_TABLE, PROJ_OUT_ROW };

static const struct proj_sub {
    const char *name;
    proj_path_fn *path;
    int under_name; /* the path starts with /projections/NAME */
    int needs_query;
    int out;
} proj_subs[] = {
    {"list", proj_list, 0, 0, PROJ_OUT_TABLE},
    {"create", proj_create, 1, 1, PROJ_OUT_ROW},
    {"status", proj_status, 1, 0, PROJ_OUT_ROW},
    {"query", proj_query, 1, 0, PROJ_OUT_JSON},
    {"update", proj_update, 1, 1, PROJ_OUT_ROW},
    {"enable", proj_command, 1, 0, PROJ_OUT_ROW},
    {"disable", proj_command, 1, 0, PROJ_OUT_ROW},
    {"reset", proj_command, 1, 0, PROJ_OUT_ROW},
    {"delete", proj_delete, 1, 0, PROJ_OUT_JSON},
    {"state", proj_state, 1, 0, PROJ_OUT_JSON},
    {"partitions", proj_partitions, 1, 0, PROJ_OUT_JSON},
    {"fold", proj_fold, 0, 0, PROJ_OUT_JSON},
    {"run", proj_run, 0, 1, PROJ_OUT_JSON},
    {NULL, NULL, 0, 0, 0},
};

/* Options and positional arguments from argv[2] on into *a: -1 to go on,
 * else the exit status (usage printed or an error given). */
static int parse_args(int argc, char **argv, proj_args *a)
{
    const char *v;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        int r;
        if ((r = cli_common_opt(&a->co, "projection", argc, argv, &i)) != 0) {
            if (r < 0)
                return CLI_EUSAGE;
            continue;
        }
#define OPT(n, var)                                                           \
    if ((r = cli_opt("projection", argc, argv, &i, n, &v)) != 0) {            \
        if (r < 0)                                                            \
            return CLI_EUSAGE;                                                \
        a->var = v;                                                           \
        continue;                                                             \
    }
        OPT("--file", file)
        OPT("--query", query)
        OPT("--partition", partition)
        OPT("--after", after)
        OPT("--limit", limit)
        OPT("--where", where)
        OPT("--to", to)
        OPT("--as-of", as_of)
        OPT("--memory-limit", mem)
        OPT("--timeout-ms", timeout)
        OPT("--cache-partitions", cache)
        OPT("--snapshot-every", snap)
#undef OPT
        if (!strcmp(s, "--onetime"))
            a->onetime = 1;
        else if (!strcmp(s, "--emit"))
            a->emit = 1;
        else if (!strcmp(s, "--no-emit"))
            a->emit = 0;
        else if (!strcmp(s, "--disabled"))
            a->disabled = 1;
        else if (!strcmp(s, "--delete-state"))
            a->del_state = 1;
        else if (!strcmp(s, "--delete-emitted"))
            a->del_emitted = 1;
        else if (!strcmp(s, "--result"))
            a->result = 1;
        else if (!strcmp(s, "--help"))
            return usage();
        else if (s[0] == '-' && s[1])
            return cli_usage_error("projection", synopsis, "unknown option '%s'", s);
        else if (!a->name)
            a->name = s;
        else if (!a->stream && !strcmp(a->sub, "fold"))
            a->stream = s;
        else
            return cli_usage_error("projection", synopsis, "unexpected argument '%s'", s);
    }
    return -1;
}

/* The arguments each subcommand needs, and those that exclude each other:
 * -1 when fine, else CLI_EUSAGE after a message. */
static int check_args(const struct proj_sub *sp, const proj_args *a)
{
    int needs_name = strcmp(a->sub, "list") != 0 && strcmp(a->sub, "run") != 0;
    if (needs_name && !a->name)
        return cli_usage_error("projection", synopsis, "the projection NAME is missing");
    if (!strcmp(a->sub, "fold") && !a->stream)
        return cli_usage_error("projection", synopsis, "fold needs NAME and STREAM");
    if (sp->needs_query && !!a->file == !!a->query)
        return cli_usage_error("projection", synopsis, "give the query with --file or --query");
    if (a->to && a->as_of)
        return cli_usage_error("projection", synopsis, "give --to or --as-of, not both");
    if (a->where && !strchr(a->where, '='))
        return cli_usage_error("projection", synopsis, "--where takes FIELD=JSON");
    return -1;
}

/* A successful answer: a table or status row on a terminal, else the
 * server's JSON on one line. */
static int print_answer(const struct proj_sub *sp, const proj_args *a, cli_response *resp)
{
    cli_span b = {resp->body.p ? resp->body.p : "", resp->body.len};
    if (cli_human(&a->co) && sp->out == PROJ_OUT_TABLE) {
        cli_span arr, p;
        size_t pos = 0;
        int first = 1;
        if (cli_json_get(b, "projections", &arr))
            while (cli_json_next(arr, &pos, &p)) {
                print_status_row(p, first);
                first = 0;
            }
        if (first)
            printf("no projections\n");
    } else if (cli_human(&a->co) && sp->out == PROJ_OUT_ROW) {
        print_status_row(b, 1);
    } else {
        fwrite(b.p, 1, b.n, stdout);
        if (b.n && b.p[b.n - 1] != '\n')
            putchar('\n');
    }
    return cli_finish_output("projection", CLI_OK);
}

int cmd_projection(int argc, char **argv)
{
    /* argv[0] "stele", argv[1] "projection": work from the subcommand */
    argc--;
    argv++;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return argc < 2 ? cli_usage_error("projection", synopsis, "a subcommand is missing")
                        : usage();
    proj_args a = {.sub = argv[1], .emit = -1};
    const struct proj_sub *sp = proj_subs;
    while (sp->name && strcmp(sp->name, a.sub))
        sp++;
    if (!sp->name)
        return cli_usage_error("projection", synopsis, "unknown subcommand '%s'", a.sub);
    int rc = parse_args(argc, argv, &a);
    if (rc < 0)
        rc = check_args(sp, &a);
    if (rc >= 0)
        return rc;
    cli_buf body = {0};
    if (a.file && cli_buf_slurp(&body, a.file)) {
        fprintf(stderr, "stele projection: cannot read %s\n", a.file);
        cli_buf_free(&body);
        return CLI_EUSAGE;
    }
    if (a.query)
        cli_buf_adds(&body, a.query);

    cli_client *c = cli_client_open(a.co.server);
    if (!c) {
        cli_buf_free(&body);
        return CLI_ECONNECT;
    }
    cli_buf path = {0};
    if (sp->under_name) {
        char *en = cli_escape(c, a.name);
        cli_buf_adds(&path, "/projections/");
        cli_buf_adds(&path, en);
        free(en);
    }
    const char *method = sp->path(c, &a, &path);
    cli_response resp = {0};
    rc = cli_request(c, method, path.p, NULL, body.p, body.len, NULL, &resp);
    if (rc == CLI_OK && (resp.status < 200 || resp.status > 299))
        rc = cli_report_error(&resp);
    else if (rc == CLI_OK)
        rc = print_answer(sp, &a, &resp);
    cli_buf_free(&resp.body);
    cli_buf_free(&path);
    cli_buf_free(&body);
    cli_client_close(c);
    return rc;
}
