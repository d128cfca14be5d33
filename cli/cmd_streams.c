/*
 * cmd_streams.c - stream metadata and snapshots from the command line
 * (docs/streams.md, docs/http-api.md):
 *
 *   stele metadata STREAM [--set JSON | --set-file FILE] [--expect-version V]
 *       GET or PUT /streams/{stream}/metadata
 *   stele snapshot put STREAM --revision N [--schema N]
 *                         (--state JSON | --state-file FILE | --bytes-file FILE)
 *   stele snapshot get STREAM [--at-or-before N]
 *   stele snapshot load STREAM [--limit N]
 *
 * On a terminal the answers are shown as short tables; otherwise (or with
 * --json) the server's JSON is printed as one line.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char md_synopsis[] =
    "stele metadata STREAM [--set JSON | --set-file FILE] [--expect-version V] [--json] "
    "[--server URL]";
static const char sn_synopsis[] =
    "stele snapshot put STREAM --revision N [--schema N] (--state JSON | --state-file FILE | "
    "--bytes-file FILE)\n"
    "       stele snapshot get STREAM [--at-or-before N]\n"
    "       stele snapshot load STREAM [--limit N]\n"
    "       (each with [--json] [--server URL])";

/* ------------------------------------------------------------ helpers */

static void add_base64(cli_buf *b, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        q[0] = tab[v >> 18 & 63];
        q[1] = tab[v >> 12 & 63];
        q[2] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        cli_buf_add(b, q, 4);
    }
}

static int is_number(const char *s)
{
    if (!*s || strlen(s) > 19)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Print the body as one line (non-human output). */
static void print_raw(const cli_response *r)
{
    fwrite(r->body.p ? r->body.p : "", 1, r->body.len, stdout);
    if (!r->body.len || r->body.p[r->body.len - 1] != '\n')
        putchar('\n');
}

static void print_span(cli_span v)
{
    fwrite(v.p, 1, v.n, stdout);
}

/* One request and the common answer handling; `show` prints a 2xx body on
 * a terminal. */
static int run(const cli_common *co, const char *cmd, const char *method, const char *stream,
               const char *suffix, const char *body, size_t body_len,
               void (*show)(const cli_response *))
{
    cli_client *c = cli_client_open(co->server);
    if (!c)
        return CLI_ECONNECT;
    char *path = cli_stream_path(c, stream, suffix);
    cli_response resp;
    int rc = cli_request(c, method, path, NULL, body, body_len, NULL, &resp);
    if (rc == CLI_OK) {
        if (resp.status < 200 || resp.status >= 300)
            rc = cli_report_error(&resp);
        else if (cli_human(co))
            show(&resp);
        else
            print_raw(&resp);
    }
    rc = cli_finish_output(cmd, rc);
    free(path);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}

/* ------------------------------------------------------------ metadata */

static void show_metadata(const cli_response *r)
{
    cli_span o = {r->body.p ? r->body.p : "", r->body.len}, v;
    uint64_t x;
    printf("%-10s", "version");
    if (cli_json_get(o, "version", &v) && !cli_json_u64(v, &x))
        printf("%llu\n", (unsigned long long)x);
    else
        printf("- (no metadata)\n");
    printf("%-10s", "metadata");
    if (cli_json_get(o, "metadata", &v))
        print_span(v);
    putchar('\n');
}

static int md_usage(void)
{
    printf("usage: %s\n\n"
           "Shows the metadata of STREAM, or replaces it with --set. Metadata is a JSON\n"
           "object: maxAge (seconds), maxCount, truncateBefore (a revision) and\n"
           "maxSnapshots are enforced by the store at once (docs/streams.md); any other\n"
           "member is a custom field, stored as given. Setting replaces the whole object.\n\n"
           "Options:\n"
           "  --set JSON           the new metadata, e.g. '{\"maxCount\":100,\"owner\":\"ops\"}'\n"
           "  --set-file FILE      the same from a file ('-' for stdin)\n"
           "  --expect-version V   any (default), none (no metadata yet), exists or the\n"
           "                       current version; otherwise WRONG_EXPECTED_VERSION\n"
           "  --json               print the server's JSON even on a terminal\n"
           "  --server URL         the server (default: $STELE_SERVER, else %s)\n\n"
           "Exit status: 0 ok, 1 the server refused, 2 bad arguments, 3 server\n"
           "unreachable.\n",
           md_synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

int cmd_metadata(int argc, char **argv)
{
    cli_common co = {0};
    const char *stream = NULL, *set = NULL, *set_file = NULL, *expect = NULL;
    int opts_done = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (stream)
                return cli_usage_error("metadata", md_synopsis, "unexpected argument '%s'", a);
            stream = a;
        } else if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return md_usage();
        } else if ((r = cli_common_opt(&co, "metadata", argc, argv, &i)) ||
                   (r = cli_opt("metadata", argc, argv, &i, "--set-file", &set_file)) ||
                   (r = cli_opt("metadata", argc, argv, &i, "--set", &set)) ||
                   (r = cli_opt("metadata", argc, argv, &i, "--expect-version", &expect))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else {
            return cli_usage_error("metadata", md_synopsis, "unknown option '%s'", a);
        }
    }
    if (!stream || !*stream)
        return cli_usage_error("metadata", md_synopsis, "missing STREAM");
    if (set && set_file)
        return cli_usage_error("metadata", md_synopsis, "give --set or --set-file, not both");
    if (expect && !set && !set_file)
        return cli_usage_error("metadata", md_synopsis, "--expect-version needs --set");
    if (expect && strcmp(expect, "any") && strcmp(expect, "none") && strcmp(expect, "exists") &&
        !is_number(expect))
        return cli_usage_error("metadata", md_synopsis,
                               "--expect-version must be any, none, exists or a version number "
                               "(got '%s')",
                               expect);
    if (!set && !set_file)
        return run(&co, "metadata", "GET", stream, "/metadata", NULL, 0, show_metadata);
    cli_buf body = {0};
    if (set_file) {
        if (cli_buf_slurp(&body, set_file)) {
            cli_buf_free(&body);
            fprintf(stderr, "stele metadata: cannot read %s\n", set_file);
            return CLI_EUSAGE;
        }
    } else {
        cli_buf_adds(&body, set);
    }
    size_t at;
    int kind = cli_json_check(body.p ? body.p : "", body.len, &at);
    if (kind != '{') {
        cli_buf_free(&body);
        if (!kind)
            return cli_usage_error("metadata", md_synopsis, "the metadata is not valid JSON (byte %zu)",
                                   at);
        return cli_usage_error("metadata", md_synopsis, "the metadata must be a JSON object");
    }
    char suffix[64];
    snprintf(suffix, sizeof suffix, "/metadata?expectedVersion=%s", expect ? expect : "any");
    int rc = run(&co, "metadata", "PUT", stream, suffix, body.p, body.len, show_metadata);
    cli_buf_free(&body);
    return rc;
}

/* ------------------------------------------------------------ snapshots */

static void show_snapshot_fields(cli_span s)
{
    cli_span v;
    uint64_t x;
    char *t;
    if (cli_json_get(s, "revision", &v) && !cli_json_u64(v, &x))
        printf("%-10s%llu\n", "revision", (unsigned long long)x);
    if (cli_json_get(s, "schemaVersion", &v) && !cli_json_u64(v, &x))
        printf("%-10s%llu\n", "schema", (unsigned long long)x);
    if (cli_json_get(s, "created", &v) && (t = cli_json_str(v))) {
        printf("%-10s%s\n", "created", t);
        free(t);
    }
    if (cli_json_get(s, "state", &v)) {
        printf("%-10s", "state");
        print_span(v);
        putchar('\n');
    } else if (cli_json_get(s, "stateBase64", &v)) {
        printf("%-10s(bytes, base64) ", "state");
        print_span(v);
        putchar('\n');
    }
}

static void show_put(const cli_response *r)
{
    cli_span o = {r->body.p ? r->body.p : "", r->body.len}, v;
    uint64_t x = 0;
    if (cli_json_get(o, "revision", &v))
        cli_json_u64(v, &x);
    printf("saved snapshot at revision %llu\n", (unsigned long long)x);
}

static void show_get(const cli_response *r)
{
    show_snapshot_fields((cli_span){r->body.p ? r->body.p : "", r->body.len});
}

static void show_load(const cli_response *r)
{
    cli_span o = {r->body.p ? r->body.p : "", r->body.len}, v, ev, f;
    if (cli_json_get(o, "snapshot", &v) && v.n && v.p[0] == '{')
        show_snapshot_fields(v);
    else
        printf("no snapshot\n");
    size_t pos = 0, n = 0;
    if (cli_json_get(o, "events", &v)) {
        while (cli_json_next(v, &pos, &ev)) {
            uint64_t rev = 0;
            char *type = cli_json_get(ev, "type", &f) ? cli_json_str(f) : NULL;
            if (cli_json_get(ev, "revision", &f))
                cli_json_u64(f, &rev);
            printf("%-10llu%s\n", (unsigned long long)rev, type ? type : "?");
            free(type);
            n++;
        }
    }
    printf("%zu event%s after the snapshot%s\n", n, n == 1 ? "" : "s",
           cli_json_get(o, "next", &f) ? " (more follow: stele read)" : "");
}

static int sn_usage(void)
{
    printf("usage: %s\n\n"
           "Snapshots are saved states of a stream's fold at a revision; loading a\n"
           "stream returns the latest one and the events after it. The stream keeps\n"
           "its latest maxSnapshots (default 5; see stele metadata).\n\n"
           "  put    save a snapshot: --revision N (required), --schema N (the state's\n"
           "         schema version, default 0), and the state as JSON (--state,\n"
           "         --state-file) or as bytes (--bytes-file); FILE '-' is stdin\n"
           "  get    the latest snapshot, or the latest at or before --at-or-before N\n"
           "  load   the latest snapshot and up to --limit N (default 10000) events\n"
           "         after it\n\n"
           "Options:\n"
           "  --json          print the server's JSON even on a terminal\n"
           "  --server URL    the server (default: $STELE_SERVER, else %s)\n\n"
           "Exit status: 0 ok, 1 the server refused (SNAPSHOT_NOT_FOUND when there is\n"
           "none), 2 bad arguments, 3 server unreachable.\n",
           sn_synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

int cmd_snapshot(int argc, char **argv)
{
    cli_common co = {0};
    const char *verb = NULL, *stream = NULL, *revision = NULL, *schema = NULL, *state = NULL,
               *state_file = NULL, *bytes_file = NULL, *at = NULL, *limit = NULL;
    int opts_done = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (!verb)
                verb = a;
            else if (!stream)
                stream = a;
            else
                return cli_usage_error("snapshot", sn_synopsis, "unexpected argument '%s'", a);
        } else if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return sn_usage();
        } else if ((r = cli_common_opt(&co, "snapshot", argc, argv, &i)) ||
                   (r = cli_opt("snapshot", argc, argv, &i, "--revision", &revision)) ||
                   (r = cli_opt("snapshot", argc, argv, &i, "--schema", &schema)) ||
                   (r = cli_opt("snapshot", argc, argv, &i, "--state-file", &state_file)) ||
                   (r = cli_opt("snapshot", argc, argv, &i, "--state", &state)) ||
                   (r = cli_opt("snapshot", argc, argv, &i, "--bytes-file", &bytes_file)) ||
                   (r = cli_opt("snapshot", argc, argv, &i, "--at-or-before", &at)) ||
                   (r = cli_opt("snapshot", argc, argv, &i, "--limit", &limit))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else {
            return cli_usage_error("snapshot", sn_synopsis, "unknown option '%s'", a);
        }
    }
    if (!verb)
        return cli_usage_error("snapshot", sn_synopsis, "missing put, get or load");
    int put = !strcmp(verb, "put"), get = !strcmp(verb, "get"), load = !strcmp(verb, "load");
    if (!put && !get && !load)
        return cli_usage_error("snapshot", sn_synopsis, "unknown action '%s' (put, get or load)",
                               verb);
    if (!stream || !*stream)
        return cli_usage_error("snapshot", sn_synopsis, "missing STREAM");
    if ((!put && (revision || schema || state || state_file || bytes_file)) ||
        (!get && at) || (!load && limit))
        return cli_usage_error("snapshot", sn_synopsis, "an option does not fit 'snapshot %s'",
                               verb);
    const char *num_bad = at && !is_number(at) ? "--at-or-before"
                        : limit && !is_number(limit) ? "--limit"
                        : revision && !is_number(revision) ? "--revision"
                        : schema && !is_number(schema) ? "--schema"
                                                      : NULL;
    if (num_bad)
        return cli_usage_error("snapshot", sn_synopsis, "%s must be a non-negative number", num_bad);
    char suffix[96];
    if (get) {
        snprintf(suffix, sizeof suffix, "/snapshots%s%s", at ? "?atOrBefore=" : "", at ? at : "");
        return run(&co, "snapshot", "GET", stream, suffix, NULL, 0, show_get);
    }
    if (load) {
        snprintf(suffix, sizeof suffix, "/load%s%s", limit ? "?limit=" : "", limit ? limit : "");
        return run(&co, "snapshot", "GET", stream, suffix, NULL, 0, show_load);
    }
    if (!revision)
        return cli_usage_error("snapshot", sn_synopsis, "put needs --revision");
    if (!!state + !!state_file + !!bytes_file != 1)
        return cli_usage_error("snapshot", sn_synopsis,
                               "put needs one of --state, --state-file or --bytes-file");
    cli_buf raw = {0}, body = {0};
    if (state) {
        cli_buf_adds(&raw, state);
    } else if (cli_buf_slurp(&raw, state_file ? state_file : bytes_file)) {
        cli_buf_free(&raw);
        fprintf(stderr, "stele snapshot: cannot read %s\n", state_file ? state_file : bytes_file);
        return CLI_EUSAGE;
    }
    size_t bad_at;
    if (!bytes_file && !cli_json_check(raw.p ? raw.p : "", raw.len, &bad_at)) {
        cli_buf_free(&raw);
        return cli_usage_error("snapshot", sn_synopsis, "the state is not valid JSON (byte %zu)",
                               bad_at);
    }
    cli_buf_adds(&body, "{\"revision\":");
    cli_buf_adds(&body, revision);
    cli_buf_adds(&body, ",\"schemaVersion\":");
    cli_buf_adds(&body, schema ? schema : "0");
    if (bytes_file) {
        cli_buf_adds(&body, ",\"stateBase64\":\"");
        add_base64(&body, (const unsigned char *)(raw.p ? raw.p : ""), raw.len);
        cli_buf_adds(&body, "\"}");
    } else {
        cli_buf_adds(&body, ",\"state\":");
        cli_buf_add(&body, raw.p, raw.len);
        cli_buf_adds(&body, "}");
    }
    cli_buf_free(&raw);
    int rc = run(&co, "snapshot", "PUT", stream, "/snapshots", body.p, body.len, show_put);
    cli_buf_free(&body);
    return rc;
}
