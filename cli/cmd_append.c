/*
 * cmd_append.c - `stele append STREAM`: one atomic append
 * (POST /streams/{stream}) of events taken from
 *
 *   - the arguments: one event from --type, --data, --metadata, --id, --tag;
 *   - a file (--file): a JSON array of events, a single event object, or a
 *     {"expectedRevision": ..., "events": [...]} body;
 *   - standard input, when neither is given: NDJSON, one event object per
 *     line (blank lines skipped).
 *
 * `stele append --multi FILE` sends FILE ('-': stdin), a multi-stream append
 * body ({"streams": [...], "condition": ...}, docs/http-api.md), to
 * POST /streams: one commit over several streams.
 *
 * Event JSON is checked for syntax here, so that a typo is a usage error
 * with its place rather than a server error about the combined body, and
 * then sent byte for byte: the server stores data and metadata as written.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define MAX_TAGS 64

static const char synopsis[] =
    "stele append STREAM [--expect E] [--json] [--server URL]\n"
    "                    (--type T [--data JSON] [--metadata JSON] [--id UUID] [--tag T]...\n"
    "                     | --file FILE | < events.ndjson)\n"
    "       stele append --multi FILE [--json] [--server URL]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Appends events to STREAM atomically: all of them or none.\n\n"
           "Events come from one of:\n"
           "  --type T            one event of type T, with\n"
           "    --data JSON       its data, any JSON value (a string needs its quotes:\n"
           "                      --data '\"text\"')\n"
           "    --metadata JSON   its metadata, any JSON value\n"
           "    --id UUID         its id (retrying with the same id is idempotent)\n"
           "    --tag T           a tag (repeatable, up to %d)\n"
           "  --file FILE         a JSON array of events ('-' for stdin); see docs/http-api.md\n"
           "  standard input      NDJSON: one event object per line, e.g.\n"
           "                      {\"type\":\"OrderPlaced\",\"data\":{\"total\":42}}\n\n"
           "With --multi FILE ('-' for stdin), FILE holds one multi-stream append\n"
           "(docs/http-api.md, POST /streams): {\"streams\": [{\"stream\": S,\n"
           "\"expectedRevision\": E, \"events\": [...]}, ...], \"condition\": {...}}; all\n"
           "its events are written in one commit, or none.\n\n"
           "Options:\n"
           "  --expect E          expected revision of STREAM: any (default), no_stream,\n"
           "                      stream_exists or a revision number; the append fails\n"
           "                      with WRONG_EXPECTED_REVISION otherwise\n"
           "  --json              print the server's JSON result even on a terminal\n"
           "  --server URL        the server (default: $STELE_SERVER, else %s)\n\n"
           "Prints the revisions and positions given to the events (JSON when stdout is\n"
           "not a terminal). Exit status: 0 appended, 1 the server refused (the reason\n"
           "is on stderr), 2 bad arguments or input, 3 server unreachable.\n",
           synopsis, MAX_TAGS, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

static int body_from_file(const char *path, cli_buf *body)
{
    cli_buf raw = {0};
    if (cli_buf_slurp(&raw, path)) {
        fprintf(stderr, "stele append: cannot read %s: %m\n", path);
        cli_buf_free(&raw);
        return CLI_EUSAGE;
    }
    size_t at;
    int kind = cli_json_check(raw.p, raw.len, &at);
    cli_span v;
    if (!kind) {
        fprintf(stderr, "stele append: %s: invalid JSON at byte %zu\n", path, at);
    } else if (kind == '[' || (kind == '{' && cli_json_get((cli_span){raw.p, raw.len},
                                                             "events", &v))) {
        *body = raw;
        return CLI_OK;
    } else if (kind == '{') {
        cli_buf_add(body, "[", 1);
        cli_buf_add(body, raw.p, raw.len);
        cli_buf_add(body, "]", 1);
        cli_buf_free(&raw);
        return CLI_OK;
    } else {
        fprintf(stderr, "stele append: %s: expected a JSON array of events\n", path);
    }
    cli_buf_free(&raw);
    return CLI_EUSAGE;
}

static int body_from_stdin(cli_buf *body)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0, events = 0, rc = CLI_OK;
    cli_buf_add(body, "[", 1);
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        size_t ws = 0;
        while (ws < (size_t)n && (line[ws] == ' ' || line[ws] == '\t'))
            ws++;
        if (ws == (size_t)n)
            continue;
        size_t at;
        int kind = cli_json_check(line, (size_t)n, &at);
        if (kind != '{') {
            if (!kind)
                fprintf(stderr, "stele append: stdin line %d: invalid JSON at column %zu\n",
                        lineno, at + 1);
            else
                fprintf(stderr, "stele append: stdin line %d: expected an event object\n",
                        lineno);
            rc = CLI_EUSAGE;
            break;
        }
        if (events++)
            cli_buf_add(body, ",", 1);
        cli_buf_add(body, line, (size_t)n);
    }
    if (rc == CLI_OK && ferror(stdin)) {
        fprintf(stderr, "stele append: reading stdin: %m\n");
        rc = CLI_EUSAGE;
    }
    if (rc == CLI_OK && events == 0) {
        fprintf(stderr, "stele append: no events on stdin\n");
        rc = CLI_EUSAGE;
    }
    free(line);
    cli_buf_add(body, "]", 1);
    return rc;
}

/* The one event given by --type and friends. */
typedef struct arg_event {
    const char *type, *data, *metadata, *id;
    const char *tags[MAX_TAGS];
    int ntags;
} arg_event;

static int check_arg_json(const char *flag, const char *v)
{
    size_t at;
    if (cli_json_check(v, strlen(v), &at))
        return 0;
    return cli_usage_error("append", synopsis,
                           "%s is not valid JSON (at byte %zu); a string needs its quotes: "
                           "%s '\"text\"'",
                           flag, at, flag);
}

static int body_from_args(const arg_event *ev, cli_buf *body)
{
    int rc;
    if ((ev->data && (rc = check_arg_json("--data", ev->data))) ||
        (ev->metadata && (rc = check_arg_json("--metadata", ev->metadata))))
        return rc;
    cli_buf_adds(body, "[{\"type\":");
    cli_buf_add_jstr(body, ev->type);
    if (ev->id) {
        cli_buf_adds(body, ",\"id\":");
        cli_buf_add_jstr(body, ev->id);
    }
    if (ev->data) {
        cli_buf_adds(body, ",\"data\":");
        cli_buf_adds(body, ev->data);
    }
    if (ev->metadata) {
        cli_buf_adds(body, ",\"metadata\":");
        cli_buf_adds(body, ev->metadata);
    }
    if (ev->ntags) {
        cli_buf_adds(body, ",\"tags\":[");
        for (int i = 0; i < ev->ntags; i++) {
            if (i)
                cli_buf_add(body, ",", 1);
            cli_buf_add_jstr(body, ev->tags[i]);
        }
        cli_buf_add(body, "]", 1);
    }
    cli_buf_adds(body, "}]");
    return CLI_OK;
}

/* "revision 3" or "revisions 3-5" from the result's first/last fields. */
static void print_range(cli_span res, const char *word, const char *first, const char *last)
{
    cli_span a, b;
    uint64_t lo, hi;
    if (!cli_json_get(res, first, &a) || !cli_json_get(res, last, &b) || cli_json_u64(a, &lo) ||
        cli_json_u64(b, &hi)) {
        printf("%ss ?", word);
        return;
    }
    if (lo == hi)
        printf("%s %llu", word, (unsigned long long)lo);
    else
        printf("%ss %llu-%llu", word, (unsigned long long)lo, (unsigned long long)hi);
}

static void print_result(const char *stream, const cli_response *r)
{
    cli_span res = {r->body.p ? r->body.p : "", r->body.len}, a, b, idem;
    uint64_t lo = 0, hi = 0;
    int have = cli_json_get(res, "firstRevision", &a) && cli_json_get(res, "lastRevision", &b) &&
               !cli_json_u64(a, &lo) && !cli_json_u64(b, &hi) && hi >= lo;
    int idempotent = cli_json_get(res, "idempotent", &idem) && cli_json_true(idem);
    unsigned long long n = have ? (unsigned long long)(hi - lo + 1) : 0;
    if (idempotent)
        printf("already appended (idempotent retry): ");
    else if (have)
        printf("appended %llu event%s to %s: ", n, n == 1 ? "" : "s", stream);
    else
        printf("appended to %s: ", stream);
    print_range(res, "revision", "firstRevision", "lastRevision");
    printf(", ");
    print_range(res, "position", "firstPosition", "lastPosition");
    printf("\n");
}

/* `stele append --multi FILE`. */
static int append_multi(const cli_common *co, const char *file)
{
    cli_buf body = {0};
    if (cli_buf_slurp(&body, file)) {
        fprintf(stderr, "stele append: cannot read %s: %m\n", file);
        cli_buf_free(&body);
        return CLI_EUSAGE;
    }
    size_t at;
    cli_span v;
    int kind = cli_json_check(body.p, body.len, &at);
    if (kind != '{' || !cli_json_get((cli_span){body.p, body.len}, "streams", &v)) {
        if (!kind)
            fprintf(stderr, "stele append: %s: invalid JSON at byte %zu\n", file, at);
        else
            fprintf(stderr, "stele append: %s: expected an object with \"streams\"\n", file);
        cli_buf_free(&body);
        return CLI_EUSAGE;
    }
    cli_client *c = cli_client_open(co->server);
    if (!c) {
        cli_buf_free(&body);
        return CLI_ECONNECT;
    }
    cli_response resp;
    int rc = cli_request(c, "POST", "/streams", NULL, body.p, body.len, NULL, &resp);
    if (rc == CLI_OK) {
        if (resp.status < 200 || resp.status >= 300) {
            rc = cli_report_error(&resp);
        } else if (cli_human(co)) {
            cli_span res = {resp.body.p ? resp.body.p : "", resp.body.len}, idem;
            int idempotent = cli_json_get(res, "idempotent", &idem) && cli_json_true(idem);
            printf(idempotent ? "already appended (idempotent retry): "
                              : "appended in one commit: ");
            print_range(res, "position", "firstPosition", "lastPosition");
            printf("\n");
        } else {
            fwrite(resp.body.p ? resp.body.p : "", 1, resp.body.len, stdout);
            if (!resp.body.len || resp.body.p[resp.body.len - 1] != '\n')
                putchar('\n');
        }
    }
    rc = cli_finish_output("append", rc);
    cli_buf_free(&resp.body);
    cli_buf_free(&body);
    cli_client_close(c);
    return rc;
}

/* The parsed command line. */
typedef struct append_args {
    cli_common co;
    arg_event ev;
    const char *stream, *expect, *file, *multi;
} append_args;

/* Options and STREAM from argv[2] on: -1 to go on, else the exit status
 * (usage printed or an error given). */
static int parse_args(int argc, char **argv, append_args *aa)
{
    arg_event *ev = &aa->ev;
    const char *v;
    int opts_done = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (aa->stream)
                return cli_usage_error("append", synopsis, "unexpected argument '%s'", a);
            aa->stream = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else if ((r = cli_common_opt(&aa->co, "append", argc, argv, &i)) ||
                   (r = cli_opt("append", argc, argv, &i, "--expect", &aa->expect)) ||
                   (r = cli_opt("append", argc, argv, &i, "--file", &aa->file)) ||
                   (r = cli_opt("append", argc, argv, &i, "--multi", &aa->multi)) ||
                   (r = cli_opt("append", argc, argv, &i, "--type", &ev->type)) ||
                   (r = cli_opt("append", argc, argv, &i, "--data", &ev->data)) ||
                   (r = cli_opt("append", argc, argv, &i, "--metadata", &ev->metadata)) ||
                   (r = cli_opt("append", argc, argv, &i, "--id", &ev->id))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else if ((r = cli_opt("append", argc, argv, &i, "--tag", &v))) {
            if (r < 0)
                return CLI_EUSAGE;
            if (ev->ntags == MAX_TAGS)
                return cli_usage_error("append", synopsis, "more than %d tags", MAX_TAGS);
            ev->tags[ev->ntags++] = v;
        } else {
            return cli_usage_error("append", synopsis, "unknown option '%s'", a);
        }
    }
    return -1;
}

/* One stream's append: STREAM, --expect and one source of events (the
 * event options, --file or stdin). -1 when fine, else CLI_EUSAGE after a
 * message. */
static int check_args(const append_args *aa)
{
    const arg_event *ev = &aa->ev;
    if (!aa->stream || !*aa->stream)
        return cli_usage_error("append", synopsis, "missing STREAM");
    if (aa->expect && !cli_valid_expected(aa->expect))
        return cli_usage_error("append", synopsis,
                               "--expect must be any, no_stream, stream_exists or a revision "
                               "number (got '%s')",
                               aa->expect);
    int from_args = ev->type || ev->data || ev->metadata || ev->id || ev->ntags;
    if (from_args && aa->file)
        return cli_usage_error("append", synopsis, "give either --type (with --data ...) or --file");
    if (from_args && !ev->type)
        return cli_usage_error("append", synopsis, "--data, --metadata, --id and --tag need --type");
    if (!from_args && !aa->file && isatty(STDIN_FILENO))
        return cli_usage_error("append", synopsis,
                               "no events: give --type and --data, --file FILE, or NDJSON on stdin");
    return -1;
}

/* POST the events in body to the stream, with the expected revision; the
 * exit status. */
static int send_append(const append_args *aa, const cli_buf *body)
{
    cli_client *c = cli_client_open(aa->co.server);
    if (!c)
        return CLI_ECONNECT;
    char hexpect[64];
    const char *headers[2] = {NULL, NULL};
    if (aa->expect) {
        snprintf(hexpect, sizeof hexpect, "Stele-Expected-Revision: %s", aa->expect);
        headers[0] = hexpect;
    }
    char *path = cli_stream_path(c, aa->stream, NULL);
    cli_response resp;
    int rc = cli_request(c, "POST", path, headers, body->p, body->len, NULL, &resp);
    if (rc == CLI_OK) {
        if (resp.status < 200 || resp.status >= 300) {
            rc = cli_report_error(&resp);
        } else if (cli_human(&aa->co)) {
            print_result(aa->stream, &resp);
        } else {
            fwrite(resp.body.p ? resp.body.p : "", 1, resp.body.len, stdout);
            if (!resp.body.len || resp.body.p[resp.body.len - 1] != '\n')
                putchar('\n');
        }
    }
    rc = cli_finish_output("append", rc);
    free(path);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}

int cmd_append(int argc, char **argv)
{
    append_args aa = {0};
    const arg_event *ev = &aa.ev;
    int rc = parse_args(argc, argv, &aa);
    if (rc >= 0)
        return rc;
    if (aa.multi) {
        if (aa.stream || aa.expect || aa.file || ev->type || ev->data || ev->metadata || ev->id ||
            ev->ntags)
            return cli_usage_error("append", synopsis,
                                   "--multi FILE takes no STREAM, --expect, --file or event "
                                   "options: the file names the streams");
        return append_multi(&aa.co, aa.multi);
    }
    if ((rc = check_args(&aa)) >= 0)
        return rc;
    cli_buf body = {0};
    rc = ev->type ? body_from_args(ev, &body)
         : aa.file ? body_from_file(aa.file, &body)
                   : body_from_stdin(&body);
    if (!rc)
        rc = send_append(&aa, &body);
    cli_buf_free(&body);
    return rc;
}
