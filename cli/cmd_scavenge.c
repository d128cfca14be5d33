/*
 * cmd_scavenge.c - `stele scavenge`: give back the space of deleted events.
 *
 * Against a running server (the usual way): POST /admin/scavenge starts a
 * scavenge on the server's own thread, then the command polls
 * GET /admin/scavenge until it ends (or returns at once with --no-wait).
 * With --dir DIR it opens the store in DIR itself (no server may have it
 * open) and scavenges it in this process. Both print the same result.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "stele.h"

static const char synopsis[] =
    "stele scavenge [--no-wait] [--json] [--server URL] | stele scavenge --dir DIR [--json]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Rewrites the store's full log segments without the events no read can return\n"
           "any more (soft-deleted, tombstoned or past their stream's retention) and\n"
           "reports the space given back. Appends and reads go on meanwhile; positions of\n"
           "the remaining events never change. A stream's last append, and every delete\n"
           "and tombstone, are always kept.\n\n"
           "Options:\n"
           "  --no-wait       start the scavenge on the server and return at once\n"
           "                  (GET /admin/scavenge shows its progress)\n"
           "  --dir DIR       scavenge the store in DIR directly (it must not be open in\n"
           "                  a server)\n"
           "  --json          print the result as JSON even on a terminal\n"
           "  --server URL    the server (default: $STELE_SERVER, else %s)\n\n"
           "Exit status: 0 done (or stopped), 1 the scavenge failed or the server refused,\n"
           "2 bad arguments, 3 server unreachable.\n",
           synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

static void print_bytes(const char *label, uint64_t v)
{
    if (v >= (10ull << 20))
        printf("%-20s%llu (%.1f MiB)\n", label, (unsigned long long)v, (double)v / 1048576.0);
    else
        printf("%-20s%llu\n", label, (unsigned long long)v);
}

static void print_result(const char *status, const stele_scavenge_result *r)
{
    printf("%-20s%s\n", "status", status);
    printf("%-20s%llu of %llu\n", "segments rewritten", (unsigned long long)r->segments_rewritten,
           (unsigned long long)r->segments_scanned);
    printf("%-20s%llu\n", "events removed", (unsigned long long)r->events_removed);
    print_bytes("bytes removed", r->bytes_removed);
    print_bytes("bytes reclaimed", r->bytes_reclaimed);
    print_bytes("bytes scanned", r->bytes_scanned);
    printf("%-20s%.3f s\n", "duration", (double)r->duration_us / 1e6);
}

/* --------------------------------------------------------------- offline */

static int progress(void *ctx, const stele_scavenge_result *r)
{
    if (*(int *)ctx)
        fprintf(stderr, "\rscavenging: %llu segments, %llu rewritten, %llu events removed",
                (unsigned long long)r->segments_scanned, (unsigned long long)r->segments_rewritten,
                (unsigned long long)r->events_removed);
    return 0;
}

static int scavenge_dir(const char *dir, const cli_common *co)
{
    stele_options o = {.flags = STELE_OPEN_NOCREATE};
    stele_db *db;
    int rc = stele_open(dir, &o, &db);
    if (rc) {
        cli_lib_error("scavenge", dir, rc);
        return rc == STELE_EINVAL ? CLI_EUSAGE : CLI_ESERVER;
    }
    int tty = cli_human(co) && isatty(2);
    stele_scavenge_options so = {progress, &tty};
    stele_scavenge_result r;
    rc = stele_scavenge(db, &so, &r);
    if (tty)
        fprintf(stderr, "\n");
    if (rc)
        cli_lib_error("scavenge", dir, rc);
    stele_close(db);
    if (rc)
        return CLI_ESERVER;
    if (cli_human(co))
        print_result("done", &r);
    else
        printf("{\"scavenge\":{\"status\":\"done\",\"segmentsScanned\":%llu,"
               "\"segmentsRewritten\":%llu,\"eventsRemoved\":%llu,\"bytesRemoved\":%llu,"
               "\"bytesReclaimed\":%llu,\"bytesScanned\":%llu,\"durationMs\":%llu}}\n",
               (unsigned long long)r.segments_scanned, (unsigned long long)r.segments_rewritten,
               (unsigned long long)r.events_removed, (unsigned long long)r.bytes_removed,
               (unsigned long long)r.bytes_reclaimed, (unsigned long long)r.bytes_scanned,
               (unsigned long long)(r.duration_us / 1000));
    return cli_finish_output("scavenge", CLI_OK);
}

/* ---------------------------------------------------------------- online */

static int scavenge_server(const cli_common *co, int wait)
{
    cli_client *c = cli_client_open(co->server);
    if (!c)
        return CLI_ECONNECT;
    cli_job job = {.command = "scavenge", .name = "scavenge", .wait = wait};
    cli_response resp;
    cli_span scav;
    char *status;
    int rc = cli_admin_job(c, &job, &resp, &scav, &status);
    if (rc == CLI_OK) {
        if (cli_human(co)) {
            stele_scavenge_result r = {
                .segments_scanned = cli_json_field_u64(scav, "segmentsScanned"),
                .segments_rewritten = cli_json_field_u64(scav, "segmentsRewritten"),
                .events_removed = cli_json_field_u64(scav, "eventsRemoved"),
                .bytes_removed = cli_json_field_u64(scav, "bytesRemoved"),
                .bytes_reclaimed = cli_json_field_u64(scav, "bytesReclaimed"),
                .bytes_scanned = cli_json_field_u64(scav, "bytesScanned"),
                .duration_us = cli_json_field_u64(scav, "durationMs") * 1000,
            };
            print_result(status, &r);
            cli_job_print_error(scav);
        } else {
            fwrite(resp.body.p ? resp.body.p : "", 1, resp.body.len, stdout);
        }
        if (!strcmp(status, "failed"))
            rc = CLI_ESERVER;
    }
    free(status);
    rc = cli_finish_output("scavenge", rc);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}

int cmd_scavenge(int argc, char **argv)
{
    cli_common co = {0};
    const char *dir = NULL;
    int wait = 1, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else if (!strcmp(a, "--no-wait")) {
            wait = 0;
        } else if ((r = cli_common_opt(&co, "scavenge", argc, argv, &i)) ||
                   (r = cli_opt("scavenge", argc, argv, &i, "--dir", &dir))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else {
            return cli_usage_error("scavenge", synopsis, "unexpected argument '%s'", a);
        }
    }
    if (dir && (co.server || !wait))
        return cli_usage_error("scavenge", synopsis,
                               "--dir scavenges a store directly: --server and --no-wait do not "
                               "apply");
    if (dir && !*dir)
        return cli_usage_error("scavenge", synopsis, "--dir needs a directory");
    return dir ? scavenge_dir(dir, &co) : scavenge_server(&co, wait);
}
