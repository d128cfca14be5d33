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

int cmd_projection(int argc, char **argv)
{
    /* argv[0] "stele", argv[1] "projection": work from the subcommand */
    argc--;
    argv++;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return argc < 2 ? cli_usage_error("projection", synopsis, "a subcommand is missing")
                        : usage();
    const char *sub = argv[1];
    static const char *const subs[] = {"list", "create", "status", "query", "update",
                                       "enable", "disable", "reset", "delete", "state",
                                       "partitions", "fold", "run", NULL};
    int known = 0;
    for (int i = 0; subs[i]; i++)
        known |= !strcmp(sub, subs[i]);
    if (!known)
        return cli_usage_error("projection", synopsis, "unknown subcommand '%s'", sub);
    cli_common co = {0};
    const char *name = NULL, *stream = NULL, *file = NULL, *query = NULL, *v;
    const char *partition = NULL, *after = NULL, *limit = NULL, *where = NULL, *to = NULL,
               *as_of = NULL, *mem = NULL, *timeout = NULL, *cache = NULL, *snap = NULL;
    int onetime = 0, emit = -1, disabled = 0, del_state = 0, del_emitted = 0, result = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int r;
        if ((r = cli_common_opt(&co, "projection", argc, argv, &i)) != 0) {
            if (r < 0)
                return CLI_EUSAGE;
            continue;
        }
#define OPT(n, var)                                                           \
    if ((r = cli_opt("projection", argc, argv, &i, n, &v)) != 0) {            \
        if (r < 0)                                                            \
            return CLI_EUSAGE;                                                \
        var = v;                                                              \
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
        if (!strcmp(a, "--onetime"))
            onetime = 1;
        else if (!strcmp(a, "--emit"))
            emit = 1;
        else if (!strcmp(a, "--no-emit"))
            emit = 0;
        else if (!strcmp(a, "--disabled"))
            disabled = 1;
        else if (!strcmp(a, "--delete-state"))
            del_state = 1;
        else if (!strcmp(a, "--delete-emitted"))
            del_emitted = 1;
        else if (!strcmp(a, "--result"))
            result = 1;
        else if (!strcmp(a, "--help"))
            return usage();
        else if (a[0] == '-' && a[1])
            return cli_usage_error("projection", synopsis, "unknown option '%s'", a);
        else if (!name)
            name = a;
        else if (!stream && !strcmp(sub, "fold"))
            stream = a;
        else
            return cli_usage_error("projection", synopsis, "unexpected argument '%s'", a);
    }
    int needs_name = strcmp(sub, "list") != 0 && strcmp(sub, "run") != 0;
    if (needs_name && !name)
        return cli_usage_error("projection", synopsis, "the projection NAME is missing");
    if (!strcmp(sub, "fold") && !stream)
        return cli_usage_error("projection", synopsis, "fold needs NAME and STREAM");
    int needs_query = !strcmp(sub, "create") || !strcmp(sub, "update") || !strcmp(sub, "run");
    if (needs_query && !!file == !!query)
        return cli_usage_error("projection", synopsis, "give the query with --file or --query");
    if (to && as_of)
        return cli_usage_error("projection", synopsis, "give --to or --as-of, not both");
    if (where && !strchr(where, '='))
        return cli_usage_error("projection", synopsis, "--where takes FIELD=JSON");
    cli_buf body = {0};
    if (file && cli_buf_slurp(&body, file)) {
        fprintf(stderr, "stele projection: cannot read %s\n", file);
        cli_buf_free(&body);
        return CLI_EUSAGE;
    }
    if (query)
        cli_buf_adds(&body, query);

    cli_client *c = cli_client_open(co.server);
    if (!c) {
        cli_buf_free(&body);
        return CLI_ECONNECT;
    }
    cli_buf path = {0};
    const char *method = "GET";
    char *en = name ? cli_escape(c, name) : NULL;
    if (!strcmp(sub, "list")) {
        cli_buf_adds(&path, "/projections");
    } else if (!strcmp(sub, "run")) {
        method = "POST";
        cli_buf_adds(&path, "/projections/transient");
    } else if (!strcmp(sub, "fold")) {
        char *es = cli_escape(c, stream);
        cli_buf_adds(&path, "/streams/");
        cli_buf_adds(&path, es);
        cli_buf_adds(&path, "/state");
        free(es);
        param(c, &path, "projection", name);
        if (to)
            param(c, &path, "to", to);
        if (as_of)
            param(c, &path, "asOf", as_of);
    } else {
        cli_buf_adds(&path, "/projections/");
        cli_buf_adds(&path, en);
        if (!strcmp(sub, "create")) {
            method = "POST";
            cli_buf_adds(&path, onetime ? "?mode=onetime" : "?mode=continuous");
            if (emit == 1)
                param(c, &path, "emit", "true");
            if (disabled)
                param(c, &path, "enabled", "false");
            if (mem)
                param(c, &path, "memoryLimit", mem);
            if (timeout)
                param(c, &path, "timeoutMs", timeout);
            if (cache)
                param(c, &path, "cachePartitions", cache);
            if (snap)
                param(c, &path, "snapshotEvery", snap);
        } else if (!strcmp(sub, "update")) {
            method = "PUT";
            cli_buf_adds(&path, "/query");
            if (emit >= 0)
                param(c, &path, "emit", emit ? "true" : "false");
        } else if (!strcmp(sub, "query")) {
            cli_buf_adds(&path, "/query");
        } else if (!strcmp(sub, "enable") || !strcmp(sub, "disable") || !strcmp(sub, "reset")) {
            method = "POST";
            cli_buf_adds(&path, "/");
            cli_buf_adds(&path, sub);
        } else if (!strcmp(sub, "delete")) {
            method = "DELETE";
            if (del_state)
                param(c, &path, "deleteState", "true");
            if (del_emitted)
                param(c, &path, "deleteEmittedStreams", "true");
        } else if (!strcmp(sub, "state")) {
            cli_buf_adds(&path, result ? "/result" : "/state");
            if (partition)
                param(c, &path, "partition", partition);
        } else if (!strcmp(sub, "partitions")) {
            cli_buf_adds(&path, "/partitions");
            if (after)
                param(c, &path, "after", after);
            if (limit)
                param(c, &path, "limit", limit);
            if (where) {
                const char *eq = strchr(where, '=');
                char *f = strndup(where, (size_t)(eq - where));
                param(c, &path, "field", f);
                param(c, &path, "value", eq + 1);
                free(f);
            }
        }
    }
    free(en);
    cli_response resp = {0};
    int rc = cli_request(c, method, path.p, NULL, body.p, body.len, NULL, &resp);
    if (rc == CLI_OK && (resp.status < 200 || resp.status > 299))
        rc = cli_report_error(&resp);
    else if (rc == CLI_OK) {
        cli_span b = {resp.body.p ? resp.body.p : "", resp.body.len};
        if (cli_human(&co) && !strcmp(sub, "list")) {
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
        } else if (cli_human(&co) && (!strcmp(sub, "status") || !strcmp(sub, "create") ||
                                      !strcmp(sub, "enable") || !strcmp(sub, "disable") ||
                                      !strcmp(sub, "reset") || !strcmp(sub, "update"))) {
            print_status_row(b, 1);
        } else {
            fwrite(b.p, 1, b.n, stdout);
            if (b.n && b.p[b.n - 1] != '\n')
                putchar('\n');
        }
        rc = cli_finish_output("projection", CLI_OK);
    }
    cli_buf_free(&resp.body);
    cli_buf_free(&path);
    cli_buf_free(&body);
    cli_client_close(c);
    return rc;
}
