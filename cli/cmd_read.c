/*
 * cmd_read.c - `stele read STREAM` and `stele read --all`: events of one
 * stream (GET /streams/{stream}) or of every stream in global order
 * (GET /all).
 *
 * Two outputs:
 *
 *   - For programs (stdout not a terminal, or --json): one event per line
 *     (NDJSON) exactly as the server wrote it. The request asks for
 *     application/x-ndjson, which the server streams in a single response
 *     with no page limit, and the body goes to stdout as it arrives.
 *
 *   - For people (a terminal): an aligned table, one row per event, with
 *     the data cut to the terminal's width. These requests ask for JSON
 *     pages ({"events": [...], "next": "..."}); the rows are printed page by
 *     page, following `next` for as long as events are wanted.
 *
 * How many events: --limit N (default 100), or with --follow-next every
 * event up to the end (the table then follows `next` with pages of --limit
 * events, default 1000).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "stele.h"

#define DEFAULT_LIMIT 100
#define FOLLOW_PAGE 1000
#define MAX_PAGE 10000 /* the server's largest JSON page */
#define NAME_MAX_COLS 32
#define CREATED_COLS 23 /* "2026-11-23 16:30:00.123" */

static const char synopsis[] =
    "stele read (STREAM | --all) [--from N] [--backwards] [--limit N] [--follow-next]\n"
    "                  [--to REV | --as-of TIME] [--json] [--server URL]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Reads the events of STREAM in revision order, or with --all the events of\n"
           "every stream in global order ($all, by position).\n\n"
           "Options:\n"
           "  --all             read $all instead of one stream\n"
           "  --from N          start at revision N (position N with --all); also 'start'\n"
           "                    or 'end' (default: start, or end with --backwards)\n"
           "  --backwards       newest first\n"
           "  --limit N         at most N events (default %d)\n"
           "  --follow-next     read on to the end: the table follows each page's `next`\n"
           "                    link (--limit then sets the page size); NDJSON output is\n"
           "                    streamed in one response\n"
           "  --to REV          the stream as it was at revision REV: its events up to REV\n"
           "  --as-of TIME      the stream as it was at TIME (RFC 3339, e.g.\n"
           "                    2026-11-23T16:30:00Z): its events committed by then\n"
           "  --json            NDJSON output even on a terminal\n"
           "  --server URL      the server (default: $STELE_SERVER, else %s)\n\n"
           "On a terminal the events are shown as a table (position, revision, stream,\n"
           "type, created, data cut to the width). Otherwise, or with --json, each event\n"
           "is printed on its own line as the server returned it (NDJSON).\n"
           "Exit status: 0 ok, 1 the server refused (e.g. STREAM_NOT_FOUND), 2 bad\n"
           "arguments, 3 server unreachable.\n",
           synopsis, DEFAULT_LIMIT, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

typedef cli_read_opts read_opts;

/* "/streams/x?direction=..&from=..&limit=.." (limit 0: none). */
static char *read_path(cli_client *c, const read_opts *o, const char *from, uint64_t limit)
{
    cli_buf b = {0};
    if (o->base) {
        cli_buf_adds(&b, o->base);
    } else if (o->stream) {
        char *p = cli_stream_path(c, o->stream, NULL);
        cli_buf_adds(&b, p);
        free(p);
    } else {
        cli_buf_adds(&b, "/all");
    }
    cli_buf_adds(&b, o->backwards ? "?direction=backwards" : "?direction=forwards");
    if (o->params) {
        cli_buf_adds(&b, "&");
        cli_buf_adds(&b, o->params);
    }
    if (from) {
        cli_buf_adds(&b, "&from=");
        cli_buf_adds(&b, from);
    }
    if (limit) {
        char n[32];
        snprintf(n, sizeof n, "&limit=%llu", (unsigned long long)limit);
        cli_buf_adds(&b, n);
    }
    return b.p;
}

/* ------------------------------------------------------------ NDJSON */

static int read_ndjson(cli_client *c, const read_opts *o)
{
    uint64_t limit = o->follow ? 0 : o->limit ? o->limit : DEFAULT_LIMIT;
    char *path = read_path(c, o, o->from, limit);
    static const char *const headers[] = {"Accept: application/x-ndjson", NULL};
    cli_response resp;
    int rc = cli_request(c, "GET", path, headers, NULL, 0, stdout, &resp);
    if (rc == CLI_OK && !resp.sink_done && (resp.status < 200 || resp.status >= 300))
        rc = cli_report_error(&resp);
    free(path);
    cli_buf_free(&resp.body);
    return rc;
}

/* ------------------------------------------------------------ table */

typedef struct table {
    int started;
    int pos_w, rev_w, stream_w, type_w;
    int width; /* of the terminal */
} table;

/* Display columns of UTF-8 text (one per code point). */
static int cols(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Print s padded (or cut, with an ellipsis) to exactly w columns. */
static void put_cell(const char *s, int w, int pad)
{
    int n = cols(s);
    if (n <= w) {
        fputs(s, stdout);
        if (pad)
            printf("%*s", w - n, "");
        return;
    }
    /* Keep w-1 code points, then "…". */
    const char *p = s;
    for (int k = 0; *p && k < w - 1;) {
        p++;
        if (((unsigned char)*p & 0xC0) != 0x80)
            k++;
    }
    fwrite(s, 1, (size_t)(p - s), stdout);
    fputs("\xE2\x80\xA6", stdout);
}

/* Data for a cell: JSON without the whitespace between tokens. */
static char *compact(cli_span v)
{
    cli_buf b = {0};
    cli_buf_add(&b, "", 0);
    int in_str = 0, esc = 0;
    for (size_t i = 0; i < v.n; i++) {
        char ch = v.p[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (ch == '\\')
                esc = 1;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            continue;
        }
        cli_buf_add(&b, &ch, 1);
    }
    return b.p;
}

typedef struct row {
    char pos[24], rev[24];
    char *stream, *type, *created, *data;
} row;

static void row_parse(cli_span ev, row *r)
{
    cli_span v;
    uint64_t x;
    memset(r, 0, sizeof *r);
    snprintf(r->pos, sizeof r->pos, "?");
    snprintf(r->rev, sizeof r->rev, "?");
    if (cli_json_get(ev, "position", &v) && !cli_json_u64(v, &x))
        snprintf(r->pos, sizeof r->pos, "%llu", (unsigned long long)x);
    if (cli_json_get(ev, "revision", &v) && !cli_json_u64(v, &x))
        snprintf(r->rev, sizeof r->rev, "%llu", (unsigned long long)x);
    if (cli_json_get(ev, "stream", &v))
        r->stream = cli_json_str(v);
    if (cli_json_get(ev, "type", &v))
        r->type = cli_json_str(v);
    if (cli_json_get(ev, "created", &v) && (r->created = cli_json_str(v))) {
        /* RFC 3339 with microseconds: shown to the millisecond, without T/Z. */
        if (strlen(r->created) >= CREATED_COLS && r->created[10] == 'T') {
            r->created[10] = ' ';
            r->created[CREATED_COLS] = '\0';
        }
    }
    if (cli_json_get(ev, "data", &v)) {
        r->data = compact(v);
    } else if (cli_json_get(ev, "dataBase64", &v)) {
        char *b64 = cli_json_str(v);
        cli_buf b = {0};
        cli_buf_adds(&b, "base64:");
        cli_buf_adds(&b, b64 ? b64 : "");
        free(b64);
        r->data = b.p;
    }
#define OR_EMPTY(f)                                                                        \
    if (!r->f)                                                                             \
        r->f = strdup("");
    OR_EMPTY(stream) OR_EMPTY(type) OR_EMPTY(created) OR_EMPTY(data)
#undef OR_EMPTY
}

static void row_free(row *r)
{
    free(r->stream);
    free(r->type);
    free(r->created);
    free(r->data);
}

static int imax(int a, int b)
{
    return a > b ? a : b;
}

static void table_page(table *t, cli_span events, size_t *count)
{
    size_t n = 0, pos = 0;
    cli_span ev;
    while (cli_json_next(events, &pos, &ev))
        n++;
    row *rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows) {
        fprintf(stderr, "stele: out of memory\n");
        exit(CLI_ESERVER);
    }
    pos = 0;
    for (size_t i = 0; i < n && cli_json_next(events, &pos, &ev); i++)
        row_parse(ev, &rows[i]);
    /* The first page with events sets the widths of the names, printed in
     * its header; later pages cut longer names rather than misalign the
     * table. Numbers are never cut: their columns may still grow. */
    for (size_t i = 0; i < n; i++) {
        t->pos_w = imax(t->pos_w, (int)strlen(rows[i].pos));
        t->rev_w = imax(t->rev_w, (int)strlen(rows[i].rev));
        if (!t->started) {
            t->stream_w = imax(t->stream_w, imax(6, cols(rows[i].stream)));
            t->type_w = imax(t->type_w, imax(4, cols(rows[i].type)));
        }
    }
    t->pos_w = imax(t->pos_w, 8);
    t->rev_w = imax(t->rev_w, 8);
    if (t->stream_w > NAME_MAX_COLS)
        t->stream_w = NAME_MAX_COLS;
    if (t->type_w > NAME_MAX_COLS)
        t->type_w = NAME_MAX_COLS;
    int data_w = t->width - (t->pos_w + t->rev_w + t->stream_w + t->type_w + CREATED_COLS + 10);
    if (data_w < 10)
        data_w = 10;
    if (!t->started && n) {
        printf("%*s  %*s  ", t->pos_w, "POSITION", t->rev_w, "REVISION");
        put_cell("STREAM", t->stream_w, 1);
        printf("  ");
        put_cell("TYPE", t->type_w, 1);
        printf("  %-*s  DATA\n", CREATED_COLS, "CREATED");
        t->started = 1;
    }
    for (size_t i = 0; i < n; i++) {
        row *r = &rows[i];
        printf("%*s  %*s  ", t->pos_w, r->pos, t->rev_w, r->rev);
        put_cell(r->stream, t->stream_w, 1);
        printf("  ");
        put_cell(r->type, t->type_w, 1);
        printf("  ");
        put_cell(r->created, CREATED_COLS, r->data[0] != '\0');
        if (r->data[0]) {
            printf("  ");
            put_cell(r->data, data_w, 0);
        }
        printf("\n");
        row_free(r);
    }
    free(rows);
    *count = n;
}

/* The from= value of a `next` link ("/all?from=100&direction=..."). */
static char *next_from(const char *link)
{
    const char *q = strchr(link, '?');
    for (const char *p = q; p && *p; p = strchr(p + 1, '&')) {
        if (!strncmp(p + 1, "from=", 5)) {
            size_t n = strcspn(p + 6, "&");
            return strndup(p + 6, n);
        }
    }
    return NULL;
}

static int read_table(cli_client *c, const read_opts *o)
{
    table t = {.width = cli_term_width()};
    uint64_t remaining = o->follow ? UINT64_MAX : o->limit ? o->limit : DEFAULT_LIMIT;
    uint64_t page = o->follow ? (o->limit ? o->limit : FOLLOW_PAGE) : remaining;
    if (page > MAX_PAGE)
        page = MAX_PAGE;
    char *path = read_path(c, o, o->from, page < remaining ? page : remaining);
    size_t total = 0;
    int rc = CLI_OK;
    for (;;) {
        cli_response resp;
        rc = cli_request(c, "GET", path, NULL, NULL, 0, NULL, &resp);
        if (rc == CLI_OK && (resp.status < 200 || resp.status >= 300))
            rc = cli_report_error(&resp);
        if (rc != CLI_OK) {
            cli_buf_free(&resp.body);
            break;
        }
        cli_span body = {resp.body.p ? resp.body.p : "", resp.body.len}, events, next;
        size_t n = 0;
        if (!cli_json_get(body, "events", &events)) {
            fprintf(stderr, "stele: unexpected response from %s: no events\n", cli_client_url(c));
            cli_buf_free(&resp.body);
            rc = CLI_ESERVER;
            break;
        }
        table_page(&t, events, &n);
        total += n;
        remaining -= n < remaining ? n : remaining;
        char *link = cli_json_get(body, "next", &next) ? cli_json_str(next) : NULL;
        cli_buf_free(&resp.body);
        if (!link || n == 0) {
            free(link);
            break;
        }
        char *from = next_from(link);
        if (remaining == 0 || !from) {
            if (from)
                fprintf(stderr, "(more events: add --from %s to go on, or use --follow-next)\n",
                        from);
            free(from);
            free(link);
            break;
        }
        free(path);
        if (o->follow) {
            path = link; /* the server's own link, page size unchanged */
        } else {
            path = read_path(c, o, from, page < remaining ? page : remaining);
            free(link);
        }
        free(from);
    }
    free(path);
    if (rc == CLI_OK && total == 0)
        printf("(no events)\n");
    return rc;
}

/* ------------------------------------------------------------ command */

static int valid_from(const char *s)
{
    if (!strcmp(s, "start") || !strcmp(s, "end"))
        return 1;
    if (!*s || strlen(s) > 20)
        return 0;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

int cli_read_events(cli_client *c, const cli_read_opts *o, int human)
{
    return human ? read_table(c, o) : read_ndjson(c, o);
}

int cli_parse_limit(const char *cmd, const char *synopsis_, const char *limit, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(limit, &end, 10);
    if (*limit < '0' || *limit > '9' || *end || v == 0 || strlen(limit) > 19)
        return cli_usage_error(cmd, synopsis_, "--limit must be a positive number (got '%s')",
                               limit);
    *out = v;
    return CLI_OK;
}

int cli_valid_from(const char *s)
{
    return valid_from(s);
}

int cmd_read(int argc, char **argv)
{
    cli_common co = {0};
    read_opts o = {0};
    const char *limit = NULL, *stream = NULL, *to = NULL, *as_of = NULL;
    int all = 0, opts_done = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (stream)
                return cli_usage_error("read", synopsis, "unexpected argument '%s'", a);
            stream = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else if (!strcmp(a, "--all")) {
            all = 1;
        } else if (!strcmp(a, "--backwards")) {
            o.backwards = 1;
        } else if (!strcmp(a, "--follow-next")) {
            o.follow = 1;
        } else if ((r = cli_common_opt(&co, "read", argc, argv, &i)) ||
                   (r = cli_opt("read", argc, argv, &i, "--from", &o.from)) ||
                   (r = cli_opt("read", argc, argv, &i, "--limit", &limit)) ||
                   (r = cli_opt("read", argc, argv, &i, "--to", &to)) ||
                   (r = cli_opt("read", argc, argv, &i, "--as-of", &as_of))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else {
            return cli_usage_error("read", synopsis, "unknown option '%s'", a);
        }
    }
    if (all && stream)
        return cli_usage_error("read", synopsis, "give STREAM or --all, not both");
    if (!all && (!stream || !*stream))
        return cli_usage_error("read", synopsis, "missing STREAM (or --all)");
    if (o.from && !valid_from(o.from))
        return cli_usage_error("read", synopsis,
                               "--from must be a number, 'start' or 'end' (got '%s')", o.from);
    if (limit && cli_parse_limit("read", synopsis, limit, &o.limit))
        return CLI_EUSAGE;
    o.stream = all ? NULL : stream;
    char params[128];
    if ((to || as_of) && all)
        return cli_usage_error("read", synopsis,
                               "--to and --as-of read one stream as it was, not --all (for $all "
                               "by time: stele query all --after/--before)");
    if (to && as_of)
        return cli_usage_error("read", synopsis, "give --to or --as-of, not both");
    if (to) {
        if (!*to || strlen(to) > 19 || strspn(to, "0123456789") != strlen(to))
            return cli_usage_error("read", synopsis, "--to must be a revision (got '%s')", to);
        snprintf(params, sizeof params, "to=%s", to);
        o.params = params;
    }
    if (as_of) {
        int64_t us;
        if (stele_time_parse(as_of, 0, &us))
            return cli_usage_error("read", synopsis, "--as-of: %s", stele_errmsg());
        char t[32];
        stele_time_format(us, t);
        snprintf(params, sizeof params, "asOf=%s", t);
        o.params = params;
    }

    cli_client *c = cli_client_open(co.server);
    if (!c)
        return CLI_ECONNECT;
    int rc = cli_read_events(c, &o, cli_human(&co));
    rc = cli_finish_output("read", rc);
    cli_client_close(c);
    return rc;
}

/* ------------------------------------------------------------ one row */

void cli_event_row(cli_span ev, int width, int header)
{
    /* Widths fixed in advance: positions up to 10 digits, names cut. */
    enum { POS_W = 10, REV_W = 8, STREAM_W = 24, TYPE_W = 20 };
    int data_w = width - (POS_W + REV_W + STREAM_W + TYPE_W + CREATED_COLS + 10);
    if (data_w < 10)
        data_w = 10;
    if (header) {
        printf("%*s  %*s  ", POS_W, "POSITION", REV_W, "REVISION");
        put_cell("STREAM", STREAM_W, 1);
        printf("  ");
        put_cell("TYPE", TYPE_W, 1);
        printf("  %-*s  DATA\n", CREATED_COLS, "CREATED");
    }
    row r;
    row_parse(ev, &r);
    printf("%*s  %*s  ", POS_W, r.pos, REV_W, r.rev);
    put_cell(r.stream, STREAM_W, 1);
    printf("  ");
    put_cell(r.type, TYPE_W, 1);
    printf("  ");
    put_cell(r.created, CREATED_COLS, r.data[0] != '\0');
    if (r.data[0]) {
        printf("  ");
        put_cell(r.data, data_w, 0);
    }
    printf("\n");
    row_free(&r);
}
