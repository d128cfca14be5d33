/*
 * cmd_tail.c - `stele tail STREAM` and `stele tail --all [filters]`: follow
 * events as they are appended, over the server's event stream
 * (GET /subscribe/streams/{stream} or /subscribe/all, Server-Sent Events;
 * docs/subscriptions.md).
 *
 * Output is that of `stele read`: for programs (stdout not a terminal, or
 * --json) each event on its own line exactly as the server sent it
 * (NDJSON); for people a table row per event, and a note when the
 * subscription has caught up with the end of the log or fallen behind.
 *
 * The command never gives up on a connection it had: when the connection
 * drops (the server restarted, the network broke, nothing arrived for
 * IDLE_S seconds although the server sends keep-alive comments) it
 * reconnects with growing pauses (up to 5 s) and resumes with
 * Last-Event-ID set to the last id it received, so no event is missed or
 * printed twice. Only the first connection must succeed (exit 3 if the
 * server cannot be reached then). Ctrl-C (SIGINT) or SIGTERM ends it with
 * status 0; a tombstoned stream with status 1.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define IDLE_S 60          /* no byte for this long: the connection is dead */
#define MAX_PAUSE_MS 5000  /* between reconnection attempts */
#define MAX_LIST 64

static const char synopsis[] =
    "stele tail (STREAM | --all) [--from N|start|end] [--filter-category C]\n"
    "                  [--filter-type T] [--filter-type-prefix P] [--filter-type-regex R]\n"
    "                  [--filter-stream-prefix P] [--filter-stream-regex R] [--filter-tag T]\n"
    "                  [--exclude-system] [--json] [--server URL]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Follows the events of STREAM, or with --all of every stream in global order,\n"
           "as they are appended, until Ctrl-C.\n\n"
           "Options:\n"
           "  --all                    follow $all instead of one stream\n"
           "  --from N                 start at revision N (position N with --all), or\n"
           "                           'start'; default 'end' (only new events)\n"
           "  --filter-category C      (--all) streams of category C (the name before '-')\n"
           "  --filter-type T          (--all) events of type T exactly\n"
           "  --filter-type-prefix P   (--all) event types starting with P\n"
           "  --filter-type-regex R    (--all) event types matching the POSIX extended\n"
           "                           regular expression R (unanchored: use ^ and $)\n"
           "  --filter-stream-prefix P (--all) stream names starting with P\n"
           "  --filter-stream-regex R  (--all) stream names matching R\n"
           "  --filter-tag T           (--all) events with tag T\n"
           "  --exclude-system         (--all) no events of system streams ($...)\n"
           "  --json                   NDJSON output even on a terminal\n"
           "  --server URL             the server (default: $STELE_SERVER, else %s)\n\n"
           "Each --filter option may be repeated: an event passes when it matches one of\n"
           "the values of every option given.\n\n"
           "On a terminal the events are shown as a table; otherwise, or with --json,\n"
           "each event is printed on its own line as the server sent it (NDJSON).\n"
           "A dropped connection is resumed where it stopped, without gaps or repeats.\n"
           "Exit status: 0 after Ctrl-C, 1 the server refused (bad filter, tombstoned\n"
           "stream), 2 bad arguments, 3 server unreachable at the start.\n",
           synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

/* ------------------------------------------------------------ signals */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int should_stop(void)
{
    return interrupted;
}

/* ------------------------------------------------------------ SSE */

typedef struct tail {
    int human;
    int width;
    int rows;          /* table rows printed (for the header) */
    cli_buf line;      /* the line being received */
    cli_buf data;      /* data lines of the current message */
    char event[64];    /* event field of the current message */
    char id[32];       /* id field of the current message */
    int has_id;
    char last_id[32];  /* the resume point: last id received */
    int after_cr;      /* the last byte was a CR */
    int deleted;       /* the stream was tombstoned */
    int out_closed;    /* writing stdout failed */
    int out_errno;
    int was_caught_up;
} tail;

/* A complete message: print an event, note a marker. */
static int dispatch(tail *t)
{
    if (t->has_id)
        snprintf(t->last_id, sizeof t->last_id, "%s", t->id);
    cli_span d = {t->data.p ? t->data.p : "", t->data.len};
    const char *ev = t->event[0] ? t->event : "message";
    if (!strcmp(ev, "message")) {
        if (t->human) {
            cli_event_row(d, t->width, t->rows == 0);
            t->rows++;
        } else {
            fwrite(d.p, 1, d.n, stdout);
            fputc('\n', stdout);
        }
    } else if (!strcmp(ev, "deleted")) {
        cli_span err, msg;
        char *m = NULL;
        if (cli_json_get(d, "error", &err) && cli_json_get(err, "message", &msg))
            m = cli_json_str(msg);
        fprintf(stderr, "stele tail: %s\n", m ? m : "the stream was deleted");
        free(m);
        t->deleted = 1;
        return 1;
    } else if (!strcmp(ev, "error")) {
        fprintf(stderr, "stele tail: the server ended the subscription: %.*s\n", (int)d.n, d.p);
    } else if (t->human && (!strcmp(ev, "caught-up") || !strcmp(ev, "fell-behind"))) {
        /* Notes for people only: a program reads events, not markers. */
        cli_span v;
        uint64_t at = 0, head = 0;
        const char *unit = cli_json_get(d, "position", &v) ? "position" : "revision";
        int has_at = (cli_json_get(d, unit, &v) && cli_json_u64(v, &at) == 0);
        if (!strcmp(ev, "caught-up") && !t->was_caught_up) {
            if (has_at)
                printf("-- caught up at %s %llu; waiting for new events (Ctrl-C to stop)\n",
                       unit, (unsigned long long)at);
            else
                printf("-- caught up; waiting for new events (Ctrl-C to stop)\n");
        } else if (!strcmp(ev, "fell-behind") && cli_json_get(d, "head", &v) &&
                   cli_json_u64(v, &head) == 0) {
            printf("-- fell behind: at %s %llu, the end is at %llu (reading on from disk)\n",
                   unit, (unsigned long long)at, (unsigned long long)head);
        }
        t->was_caught_up = !strcmp(ev, "caught-up");
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        t->out_closed = 1; /* EPIPE or another write error: see cmd_tail */
        t->out_errno = errno;
        return 1;
    }
    return 0;
}

/* One line of the SSE stream (without its line ending). */
static int sse_line(tail *t, const char *p, size_t n)
{
    if (n == 0) {
        int rc = 0;
        if (t->data.len || t->event[0] || t->has_id)
            rc = dispatch(t);
        t->data.len = 0;
        if (t->data.p)
            t->data.p[0] = '\0';
        t->event[0] = '\0';
        t->has_id = 0;
        return rc;
    }
    if (p[0] == ':')
        return 0; /* a comment (keep-alive) */
    const char *colon = memchr(p, ':', n);
    size_t klen = colon ? (size_t)(colon - p) : n;
    const char *v = colon ? colon + 1 : p + n;
    size_t vlen = colon ? n - klen - 1 : 0;
    if (vlen && *v == ' ')
        v++, vlen--;
    if (klen == 4 && !memcmp(p, "data", 4)) {
        if (t->data.len)
            cli_buf_add(&t->data, "\n", 1);
        cli_buf_add(&t->data, v, vlen);
    } else if (klen == 5 && !memcmp(p, "event", 5)) {
        snprintf(t->event, sizeof t->event, "%.*s", (int)vlen, v);
    } else if (klen == 2 && !memcmp(p, "id", 2) && vlen < sizeof t->id) {
        snprintf(t->id, sizeof t->id, "%.*s", (int)vlen, v);
        t->has_id = 1;
    }
    return 0;
}

/* The body as it arrives: split into lines (LF, CRLF or CR). */
static int on_data(void *ctx, const char *p, size_t n)
{
    tail *t = ctx;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\n' && t->after_cr) {
            t->after_cr = 0; /* the LF of a CRLF */
            continue;
        }
        t->after_cr = ch == '\r';
        if (ch == '\n' || ch == '\r') {
            int rc = sse_line(t, t->line.p ? t->line.p : "", t->line.len);
            t->line.len = 0;
            if (rc)
                return rc;
            continue;
        }
        cli_buf_add(&t->line, &ch, 1);
    }
    return interrupted;
}

/* ------------------------------------------------------------ command */

typedef struct filters {
    const char *name;  /* query parameter */
    const char *flag;  /* option */
    const char *v[MAX_LIST];
    size_t n;
} filters;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (!interrupted && nanosleep(&ts, &ts) != 0)
        ;
}

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

enum { NFILTERS = 7 };

/* The parsed command line. */
typedef struct tail_args {
    cli_common co;
    filters fl[NFILTERS];
    const char *stream, *from;
    int all, exclude_system, any_filter;
} tail_args;

/* A filter option (argv[*i] is an option none of the others took): -1 to
 * go on, else the exit status after a message. */
static int filter_opt(tail_args *ta, int argc, char **argv, int *i)
{
    size_t k;
    int r = 0;
    const char *v = NULL;
    for (k = 0; k < NFILTERS; k++)
        if ((r = cli_opt("tail", argc, argv, i, ta->fl[k].flag, &v)))
            break;
    if (k == NFILTERS)
        return cli_usage_error("tail", synopsis, "unknown option '%s'", argv[*i]);
    if (r < 0)
        return CLI_EUSAGE;
    filters *f = &ta->fl[k];
    if (!*v)
        return cli_usage_error("tail", synopsis, "%s needs a non-empty value", f->flag);
    if (f->n == MAX_LIST)
        return cli_usage_error("tail", synopsis, "more than %d %s options", MAX_LIST, f->flag);
    f->v[f->n++] = v;
    ta->any_filter = 1;
    return -1;
}

/* Options and STREAM from argv[2] on, then their consistency: -1 to go
 * on, else the exit status (usage printed or an error given). */
static int parse_args(int argc, char **argv, tail_args *ta)
{
    int opts_done = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (ta->stream)
                return cli_usage_error("tail", synopsis, "unexpected argument '%s'", a);
            ta->stream = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            opts_done = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage();
        if (!strcmp(a, "--all")) {
            ta->all = 1;
            continue;
        }
        if (!strcmp(a, "--exclude-system")) {
            ta->exclude_system = 1;
            ta->any_filter = 1;
            continue;
        }
        if ((r = cli_common_opt(&ta->co, "tail", argc, argv, &i)) ||
            (r = cli_opt("tail", argc, argv, &i, "--from", &ta->from))) {
            if (r < 0)
                return CLI_EUSAGE;
            continue;
        }
        if ((r = filter_opt(ta, argc, argv, &i)) >= 0)
            return r;
    }
    if (ta->all && ta->stream)
        return cli_usage_error("tail", synopsis, "give STREAM or --all, not both");
    if (!ta->all && (!ta->stream || !*ta->stream))
        return cli_usage_error("tail", synopsis, "missing STREAM (or --all)");
    if (!ta->all && ta->any_filter)
        return cli_usage_error("tail", synopsis, "filters work with --all only");
    if (!valid_from(ta->from))
        return cli_usage_error("tail", synopsis,
                               "--from must be a number, 'start' or 'end' (got '%s')", ta->from);
    return -1;
}

/* /subscribe/all or /subscribe/streams/NAME, with from= and the filters. */
static void build_path(cli_client *c, const tail_args *ta, cli_buf *path)
{
    if (ta->all) {
        cli_buf_adds(path, "/subscribe/all?from=");
    } else {
        char *p = cli_stream_path(c, ta->stream, NULL);
        cli_buf_adds(path, "/subscribe");
        cli_buf_adds(path, p);
        cli_buf_adds(path, "?from=");
        free(p);
    }
    cli_buf_adds(path, ta->from);
    for (size_t k = 0; k < NFILTERS; k++)
        for (size_t j = 0; j < ta->fl[k].n; j++) {
            char *enc = cli_escape(c, ta->fl[k].v[j]);
            cli_buf_adds(path, "&");
            cli_buf_adds(path, ta->fl[k].name);
            cli_buf_adds(path, "=");
            cli_buf_adds(path, enc);
            free(enc);
        }
    if (ta->exclude_system)
        cli_buf_adds(path, "&excludeSystem=true");
}

/* SIGINT and SIGTERM end the tail cleanly (the loop sees `interrupted`). */
static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* One connection: the stream read until it ends, resuming after
 * t->last_id when set. The response status in *status, the transport
 * error in err; when the server refused (reported on stderr), *refused is
 * the exit status, else -1. cli_stream's result. */
static int stream_once(cli_client *c, const char *path, tail *t, int *status, int *refused,
                       char *err, size_t errsz)
{
    char hdr[64];
    const char *headers[3] = {"Accept: text/event-stream", NULL, NULL};
    if (t->last_id[0]) {
        snprintf(hdr, sizeof hdr, "Last-Event-ID: %s", t->last_id);
        headers[1] = hdr;
    }
    cli_response resp;
    t->line.len = t->data.len = 0;
    t->event[0] = '\0';
    t->has_id = t->after_cr = 0;
    int got = cli_stream(c, path, headers, on_data, t, should_stop, IDLE_S, &resp, err, errsz);
    *status = resp.status;
    *refused = -1;
    int ok_status = resp.status >= 200 && resp.status < 300;
    if (got != CLI_EUSAGE && resp.status && !ok_status && resp.status != 503)
        *refused = cli_report_error(&resp); /* a bad filter, a tombstoned stream */
    cli_buf_free(&resp.body);
    return got;
}

/* Reads until interrupted, the output closes, the stream is deleted or a
 * lasting error; reconnects with backoff after a dropped connection once
 * connected. The exit status. */
static int follow(cli_client *c, const char *path, tail *t)
{
    int connected = 0, pause_ms = 250, reported = 0;
    while (!interrupted) {
        char err[512];
        int status, refused;
        int got = stream_once(c, path, t, &status, &refused, err, sizeof err);
        int ok_status = status >= 200 && status < 300;
        if (got == CLI_EUSAGE) {
            fprintf(stderr, "stele: bad server URL '%s': %s\n", cli_client_url(c), err);
            return CLI_EUSAGE;
        }
        if (refused >= 0)
            return refused;
        if (t->out_closed || t->deleted || interrupted)
            return t->deleted ? CLI_ESERVER : CLI_OK;
        if (ok_status) {
            connected = 1;
            pause_ms = 250;
            reported = 0;
        } else if (!connected) {
            fprintf(stderr, "stele: cannot reach %s: %s\n", cli_client_url(c),
                    err[0] ? err : "the server is unavailable");
            return CLI_ECONNECT;
        }
        /* The connection dropped, or the server ended the stream (it is
         * stopping): resume after the last id. */
        if (!reported) {
            fprintf(stderr, "stele tail: connection lost (%s); reconnecting%s%s\n",
                    err[0] ? err : status == 503 ? "server unavailable"
                                                 : "the server ended the stream",
                    t->last_id[0] ? " after id " : "", t->last_id);
            reported = 1;
        }
        sleep_ms(pause_ms);
        pause_ms = pause_ms * 2 > MAX_PAUSE_MS ? MAX_PAUSE_MS : pause_ms * 2;
    }
    return CLI_OK;
}

int cmd_tail(int argc, char **argv)
{
    tail_args ta = {
        .fl = {
            {"category", "--filter-category", {0}, 0},
            {"type", "--filter-type", {0}, 0},
            {"typePrefix", "--filter-type-prefix", {0}, 0},
            {"typeRegex", "--filter-type-regex", {0}, 0},
            {"streamPrefix", "--filter-stream-prefix", {0}, 0},
            {"streamRegex", "--filter-stream-regex", {0}, 0},
            {"tag", "--filter-tag", {0}, 0},
        },
        .from = "end",
    };
    int rc = parse_args(argc, argv, &ta);
    if (rc >= 0)
        return rc;
    cli_client *c = cli_client_open(ta.co.server);
    if (!c)
        return CLI_ECONNECT;
    cli_buf path = {0};
    build_path(c, &ta, &path);
    catch_signals();

    tail t;
    memset(&t, 0, sizeof t);
    t.human = cli_human(&ta.co);
    t.width = cli_term_width();
    rc = follow(c, path.p, &t);
    cli_buf_free(&t.line);
    cli_buf_free(&t.data);
    cli_buf_free(&path);
    cli_client_close(c);
    if (t.out_closed) {
        if (t.out_errno == EPIPE)
            return CLI_OK; /* the reader went away (`stele tail --all | head`) */
        fprintf(stderr, "stele tail: writing output: %s\n", strerror(t.out_errno));
        return CLI_ESERVER;
    }
    return cli_finish_output("tail", rc);
}
