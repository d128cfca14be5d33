/*
 * cmd_query.c - `stele query KIND KEY`: events across streams through the
 * server's secondary indexes (GET /categories/{c}, /types/{t}, /tags/{t},
 * /correlations/{id}, /actors/{a}, and /all?after=&before=). Output and
 * paging are those of `stele read` (cmd_read.c): a table on a terminal,
 * NDJSON otherwise or with --json; positions are the cursor.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "stele.h"

#define DEFAULT_LIMIT 100

static const char synopsis[] =
    "stele query (category|type|tag|correlation|causation|actor) KEY [--type T] [--after TIME]\n"
    "                   [--before TIME] [--from N] [--backwards] [--limit N] [--follow-next]\n"
    "                   [--json] [--server URL]\n"
    "       stele query all --after TIME [--before TIME] [...]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Reads the events of every stream that match KEY, in global order (by position):\n"
           "  category KEY      events of streams named KEY-... (KurrentDB's $ce-KEY stream);\n"
           "                    a name without '-' is its own category\n"
           "  type KEY          events of type KEY\n"
           "  tag KEY           events with the tag KEY\n"
           "  correlation KEY   events whose metadata has $correlationId (or correlationId,\n"
           "                    correlation_id) KEY\n"
           "  causation KEY     events whose metadata has $causationId (or causationId,\n"
           "                    causation_id) KEY\n"
           "  actor KEY         events whose metadata has $actor (or userId, actorId, user_id)\n"
           "                    KEY\n"
           "  all               every event ($all); give a time range\n\n"
           "Options:\n"
           "  --type T          only events of type T (not with type or all)\n"
           "  --after TIME      only events created at or after TIME (RFC 3339, e.g.\n"
           "                    2026-11-23T16:30:00Z or 2026-11-23T17:30:00+01:00)\n"
           "  --before TIME     only events created before TIME\n"
           "  --from N          start at position N (also 'start' or 'end')\n"
           "  --backwards       newest first\n"
           "  --limit N         at most N events (default %d)\n"
           "  --follow-next     read on to the end (--limit then sets the page size)\n"
           "  --json            NDJSON output even on a terminal\n"
           "  --server URL      the server (default: $STELE_SERVER, else %s)\n\n"
           "Exit status: 0 ok, 1 the server refused, 2 bad arguments, 3 server unreachable.\n",
           synopsis, DEFAULT_LIMIT, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

static const struct {
    const char *kind, *path;
} kinds[] = {
    {"category", "/categories/"}, {"type", "/types/"},   {"tag", "/tags/"},
    {"correlation", "/correlations/"}, {"actor", "/actors/"}, {"all", "/all"},
    {"causation", "/causations/"},
};

/* Percent-encode every byte but the unreserved ones (RFC 3986). */
static void add_encoded(cli_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p)) {
            cli_buf_add(b, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            cli_buf_add(b, e, 3);
        }
    }
}

/* "&name=<RFC 3339>" for a time option, normalised (UTC, microseconds). */
static int add_time(cli_buf *b, const char *opt, const char *name, const char *text, int round_up)
{
    int64_t us;
    if (stele_time_parse(text, round_up, &us))
        return cli_usage_error("query", synopsis, "%s: %s", opt, stele_errmsg());
    char t[32];
    stele_time_format(us, t);
    cli_buf_adds(b, b->len ? "&" : "");
    cli_buf_adds(b, name);
    cli_buf_adds(b, "=");
    cli_buf_adds(b, t);
    return CLI_OK;
}

int cmd_query(int argc, char **argv)
{
    cli_common co = {0};
    cli_read_opts o = {0};
    const char *limit = NULL, *kind = NULL, *key = NULL, *type = NULL, *after = NULL,
               *before = NULL;
    int opts_done = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (!kind)
                kind = a;
            else if (!key)
                key = a;
            else
                return cli_usage_error("query", synopsis, "unexpected argument '%s'", a);
            continue;
        }
        if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else if (!strcmp(a, "--backwards")) {
            o.backwards = 1;
        } else if (!strcmp(a, "--follow-next")) {
            o.follow = 1;
        } else if ((r = cli_common_opt(&co, "query", argc, argv, &i)) ||
                   (r = cli_opt("query", argc, argv, &i, "--from", &o.from)) ||
                   (r = cli_opt("query", argc, argv, &i, "--limit", &limit)) ||
                   (r = cli_opt("query", argc, argv, &i, "--type", &type)) ||
                   (r = cli_opt("query", argc, argv, &i, "--after", &after)) ||
                   (r = cli_opt("query", argc, argv, &i, "--before", &before))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else {
            return cli_usage_error("query", synopsis, "unknown option '%s'", a);
        }
    }
    if (!kind)
        return cli_usage_error("query", synopsis, "missing KIND (category, type, tag, "
                                                  "correlation, causation, actor or all)");
    size_t k = 0;
    while (k < sizeof kinds / sizeof kinds[0] && strcmp(kinds[k].kind, kind))
        k++;
    if (k == sizeof kinds / sizeof kinds[0])
        return cli_usage_error("query", synopsis,
                               "unknown kind '%s' (category, type, tag, correlation, "
                               "causation, actor, all)",
                               kind);
    int all = !strcmp(kind, "all");
    if (all && key)
        return cli_usage_error("query", synopsis, "'all' takes no KEY, only a time range");
    if (!all && (!key || !*key))
        return cli_usage_error("query", synopsis, "missing KEY for '%s'", kind);
    if (all && !after && !before)
        return cli_usage_error("query", synopsis,
                               "'all' needs --after and/or --before (else: stele read --all)");
    if (type && (all || !strcmp(kind, "type")))
        return cli_usage_error("query", synopsis, "--type does not apply to '%s'", kind);
    if (type && !*type)
        return cli_usage_error("query", synopsis, "--type is empty");
    if (o.from && !cli_valid_from(o.from))
        return cli_usage_error("query", synopsis,
                               "--from must be a number, 'start' or 'end' (got '%s')", o.from);
    if (limit && cli_parse_limit("query", synopsis, limit, &o.limit))
        return CLI_EUSAGE;

    cli_buf path = {0}, params = {0};
    cli_buf_adds(&path, kinds[k].path);
    if (!all)
        add_encoded(&path, key);
    if (type) {
        cli_buf_adds(&params, "type=");
        add_encoded(&params, type);
    }
    int rc = CLI_OK;
    if (after)
        rc = add_time(&params, "--after", "after", after, 1);
    if (rc == CLI_OK && before)
        rc = add_time(&params, "--before", "before", before, 1);
    if (rc != CLI_OK) {
        cli_buf_free(&path);
        cli_buf_free(&params);
        return rc;
    }
    o.base = path.p;
    o.params = params.len ? params.p : NULL;

    cli_client *c = cli_client_open(co.server);
    if (!c) {
        rc = CLI_ECONNECT;
    } else {
        rc = cli_finish_output("query", cli_read_events(c, &o, cli_human(&co)));
        cli_client_close(c);
    }
    cli_buf_free(&path);
    cli_buf_free(&params);
    return rc;
}
