/*
 * cmd_delete.c - `stele delete STREAM`: a soft delete, or with --tombstone
 * a permanent one (DELETE /streams/{stream}[?tombstone=true]).
 *
 * A soft-deleted stream reads as not found and can be written again (its
 * revisions go on from where they were); a tombstoned one can never be
 * written or read again. docs/architecture.md has the details.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char synopsis[] =
    "stele delete STREAM [--tombstone] [--expect E] [--json] [--server URL]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Deletes STREAM. A soft delete hides its events (reads answer\n"
           "STREAM_NOT_FOUND) and the stream may be appended to again; with --tombstone\n"
           "the stream is deleted for good and any later append or read fails with\n"
           "STREAM_DELETED.\n\n"
           "Options:\n"
           "  --tombstone     delete permanently\n"
           "  --expect E      expected revision: any (default), no_stream, stream_exists\n"
           "                  or a revision number; otherwise WRONG_EXPECTED_REVISION\n"
           "  --json          no message on success, even on a terminal\n"
           "  --server URL    the server (default: $STELE_SERVER, else %s)\n\n"
           "Prints a line on a terminal and nothing otherwise. Exit status: 0 deleted,\n"
           "1 the server refused, 2 bad arguments, 3 server unreachable.\n",
           synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

int cmd_delete(int argc, char **argv)
{
    cli_common co = {0};
    const char *stream = NULL, *expect = NULL;
    int tombstone = 0, opts_done = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (stream)
                return cli_usage_error("delete", synopsis, "unexpected argument '%s'", a);
            stream = a;
        } else if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else if (!strcmp(a, "--tombstone")) {
            tombstone = 1;
        } else if ((r = cli_common_opt(&co, "delete", argc, argv, &i)) ||
                   (r = cli_opt("delete", argc, argv, &i, "--expect", &expect))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else {
            return cli_usage_error("delete", synopsis, "unknown option '%s'", a);
        }
    }
    if (!stream || !*stream)
        return cli_usage_error("delete", synopsis, "missing STREAM");
    if (expect && !cli_valid_expected(expect))
        return cli_usage_error("delete", synopsis,
                               "--expect must be any, no_stream, stream_exists or a revision "
                               "number (got '%s')",
                               expect);

    cli_client *c = cli_client_open(co.server);
    if (!c)
        return CLI_ECONNECT;
    char hexpect[64];
    const char *headers[2] = {NULL, NULL};
    if (expect) {
        snprintf(hexpect, sizeof hexpect, "Stele-Expected-Revision: %s", expect);
        headers[0] = hexpect;
    }
    char *path = cli_stream_path(c, stream, tombstone ? "?tombstone=true" : NULL);
    cli_response resp;
    int rc = cli_request(c, "DELETE", path, headers, NULL, 0, NULL, &resp);
    if (rc == CLI_OK) {
        if (resp.status < 200 || resp.status >= 300)
            rc = cli_report_error(&resp);
        else if (cli_human(&co))
            printf("%s stream %s\n", tombstone ? "tombstoned" : "deleted", stream);
    }
    rc = cli_finish_output("delete", rc);
    free(path);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}
