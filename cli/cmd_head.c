/*
 * cmd_head.c - `stele head STREAM`: where a stream ends and whether it is
 * deleted (GET /streams/{stream}/head).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char synopsis[] = "stele head STREAM [--json] [--server URL]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Shows the last revision and position of STREAM, the revision before which\n"
           "its events are gone (truncateBefore, after a soft delete), and whether it is\n"
           "deleted or tombstoned.\n\n"
           "Options:\n"
           "  --json          print the server's JSON even on a terminal\n"
           "  --server URL    the server (default: $STELE_SERVER, else %s)\n\n"
           "Exit status: 0 ok, 1 the server refused, 2 bad arguments, 3 server\n"
           "unreachable.\n",
           synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

/* One "name   value" line; numbers may be null ("-": no events). */
static void field(cli_span head, const char *label, const char *key, int is_bool)
{
    cli_span v;
    uint64_t x;
    printf("%-17s", label);
    if (!cli_json_get(head, key, &v))
        printf("?\n");
    else if (is_bool)
        printf("%s\n", cli_json_true(v) ? "yes" : "no");
    else if (!cli_json_u64(v, &x))
        printf("%llu\n", (unsigned long long)x);
    else
        printf("-\n");
}

static void print_head(const cli_response *r)
{
    cli_span head = {r->body.p ? r->body.p : "", r->body.len}, v;
    char *name = cli_json_get(head, "stream", &v) ? cli_json_str(v) : NULL;
    printf("%-17s%s\n", "stream", name ? name : "?");
    free(name);
    field(head, "last revision", "lastRevision", 0);
    field(head, "last position", "lastPosition", 0);
    field(head, "truncate before", "truncateBefore", 0);
    field(head, "deleted", "deleted", 1);
    field(head, "tombstoned", "tombstoned", 1);
}

int cmd_head(int argc, char **argv)
{
    cli_common co = {0};
    const char *stream = NULL;
    int opts_done = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (stream)
                return cli_usage_error("head", synopsis, "unexpected argument '%s'", a);
            stream = a;
        } else if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else if ((r = cli_common_opt(&co, "head", argc, argv, &i))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else {
            return cli_usage_error("head", synopsis, "unknown option '%s'", a);
        }
    }
    if (!stream || !*stream)
        return cli_usage_error("head", synopsis, "missing STREAM");

    cli_client *c = cli_client_open(co.server);
    if (!c)
        return CLI_ECONNECT;
    char *path = cli_stream_path(c, stream, "/head");
    cli_response resp;
    int rc = cli_request(c, "GET", path, NULL, NULL, 0, NULL, &resp);
    if (rc == CLI_OK) {
        if (resp.status < 200 || resp.status >= 300) {
            rc = cli_report_error(&resp);
        } else if (cli_human(&co)) {
            print_head(&resp);
        } else {
            fwrite(resp.body.p ? resp.body.p : "", 1, resp.body.len, stdout);
            if (!resp.body.len || resp.body.p[resp.body.len - 1] != '\n')
                putchar('\n');
        }
    }
    rc = cli_finish_output("head", rc);
    free(path);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}
