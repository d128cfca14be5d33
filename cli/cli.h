/*
 * cli.h - the subcommands of the `stele` command (cli/main.c dispatches)
 * and what the client commands share (cli/client.c): HTTP requests to a
 * Stele server over libcurl, option parsing, output mode, and a small
 * JSON reader for server responses.
 *
 * The client commands use only include/stele.h and this header; they talk
 * to the server over its HTTP API (docs/http-api.md), never to src/ or
 * server/.
 */
#ifndef STELE_CLI_H
#define STELE_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int cmd_serve(int argc, char **argv);
int cmd_append(int argc, char **argv);
int cmd_read(int argc, char **argv);
int cmd_head(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_metadata(int argc, char **argv); /* cmd_streams.c */
int cmd_snapshot(int argc, char **argv); /* cmd_streams.c */
int cmd_tail(int argc, char **argv);
int cmd_groups(int argc, char **argv);
int cmd_rules(int argc, char **argv);
int cmd_scavenge(int argc, char **argv);
int cmd_backup(int argc, char **argv);  /* cmd_backup.c */
int cmd_restore(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_projection(int argc, char **argv);
int cmd_user(int argc, char **argv); /* cmd_user.c: also `stele api-key` */
/* cmd_chain.c: the hash chain */
int cmd_keygen(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_chain(int argc, char **argv);

/* Exit codes of the client commands. */
enum {
    CLI_OK = 0,       /* done */
    CLI_ESERVER = 1,  /* the server answered with an error (or output failed) */
    CLI_EUSAGE = 2,   /* bad arguments or input; nothing was sent */
    CLI_ECONNECT = 3, /* cannot reach the server, or the connection failed */
};

#define CLI_DEFAULT_SERVER "http://127.0.0.1:2113"

/* ------------------------------------------------------------ options */

/* The options every client command takes. */
typedef struct cli_common {
    const char *server; /* --server URL; NULL: STELE_SERVER, else the default */
    int json;           /* --json: JSON output even on a terminal */
} cli_common;

/*
 * If argv[*i] is the option `name` ("--name value" or "--name=value"),
 * store its value in *value, move *i past it and return 1. Return 0 when
 * argv[*i] is another option, -1 (after a message naming `cmd`) when the
 * value is missing.
 */
int cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value);

/* --server URL and --json: 1 taken, 0 not one of them, -1 missing value. */
int cli_common_opt(cli_common *co, const char *cmd, int argc, char **argv, int *i);

/*
 * Print "stele CMD: <message>", the synopsis and a pointer to --help on
 * stderr; returns CLI_EUSAGE.
 */
int cli_usage_error(const char *cmd, const char *synopsis, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Whether output is for people: stdout is a terminal and --json not given. */
int cli_human(const cli_common *co);

/* Columns of the terminal on stdout (COLUMNS, else the tty, else 80). */
int cli_term_width(void);

/*
 * Flush stdout at the end of command `cmd`: a write error (other than a
 * reader that went away) turns a CLI_OK `rc` into CLI_ESERVER after a
 * message. Returns the exit code.
 */
int cli_finish_output(const char *cmd, int rc);

/* An expected revision argument: any, no_stream, stream_exists or a number. */
int cli_valid_expected(const char *s);

/* ------------------------------------------------------------ reads */

typedef struct cli_client cli_client;

/* A read of events page by page (cmd_read.c; also used by cmd_query.c). */
typedef struct cli_read_opts {
    const char *stream; /* NULL: $all (unless base is set) */
    const char *base;   /* a path to read instead ("/categories/Order"), or NULL */
    const char *params; /* extra query parameters "a=1&b=2" (encoded), or NULL */
    const char *from;   /* NULL: the server's default */
    int backwards;
    int follow;
    uint64_t limit; /* 0: not given */
} cli_read_opts;

/* Print the events: a table when `human`, else NDJSON. An exit code. */
int cli_read_events(cli_client *c, const cli_read_opts *o, int human);
/* --limit N: CLI_OK with *out, or CLI_EUSAGE after a message. */
int cli_parse_limit(const char *cmd, const char *synopsis, const char *limit, uint64_t *out);
/* --from: a number, 'start' or 'end'. */
int cli_valid_from(const char *s);

/* ------------------------------------------------------------ buffers */

typedef struct cli_buf {
    char *p; /* NUL-terminated when non-NULL */
    size_t len, cap;
} cli_buf;

/* Append bytes; exits the process with a message when memory runs out. */
void cli_buf_add(cli_buf *b, const void *p, size_t n);
void cli_buf_adds(cli_buf *b, const char *s);
/* Append s as a JSON string (quotes, escapes of '"', '\\' and controls). */
void cli_buf_add_jstr(cli_buf *b, const char *s);
void cli_buf_free(cli_buf *b);
/* Append all of file `path` ("-": stdin) to b: 0, or -1 if it cannot be
 * opened or read (errno says why). */
int cli_buf_slurp(cli_buf *b, const char *path);

/* ------------------------------------------------------------ HTTP */

typedef struct cli_response {
    long status;   /* HTTP status; 0 before a response */
    cli_buf body;  /* the body, unless it went to the sink */
    int sink_done; /* the sink's reader went away (EPIPE): stop quietly */
} cli_response;

/*
 * A client of the server at `server` (NULL: env STELE_SERVER, else
 * CLI_DEFAULT_SERVER). Returns NULL after a message if libcurl cannot
 * start. Close with cli_client_close.
 */
cli_client *cli_client_open(const char *server);
void cli_client_close(cli_client *c);

/* The server's base URL, without a trailing '/'. */
const char *cli_client_url(const cli_client *c);

/*
 * "/streams/<stream percent-encoded><suffix>"; caller frees with free().
 */
char *cli_stream_path(cli_client *c, const char *stream, const char *suffix);

/* s percent-encoded for a URL path segment or query value; caller frees. */
char *cli_escape(cli_client *c, const char *s);

/*
 * One request: `method` on base URL + `path` (which may carry a query),
 * with extra `headers` (NULL-terminated list of "Name: value", may be
 * NULL) and an optional body. On a 2xx status with `sink` non-NULL the body
 * is written to `sink` as it arrives (NDJSON records kept one per line, see
 * client.c) instead of being kept in resp->body. The same client reuses
 * its connection across calls.
 *
 * Returns CLI_OK when a response arrived, whatever its status (the caller
 * checks resp->status); otherwise an exit code after printing why
 * (CLI_ECONNECT: cannot reach the server or the connection failed;
 * CLI_EUSAGE: the server URL is malformed; CLI_ESERVER: writing to the sink
 * failed). The caller frees resp->body
 * with cli_buf_free in every case.
 */
int cli_request(cli_client *c, const char *method, const char *path, const char *const *headers,
                const char *body, size_t body_len, FILE *sink, cli_response *resp);

/* Receives a streamed body: return 0 to go on, non-zero to stop. */
typedef int (*cli_body_fn)(void *ctx, const char *p, size_t n);

/*
 * A long GET (an event stream): a 2xx body goes to `fn` as it arrives;
 * any other body is kept in resp->body. `stop` (may be NULL) is polled
 * about once a second; when it returns non-zero, or `fn` does, the
 * transfer stops and resp->sink_done is set. A connection that carries no
 * byte for `idle_s` seconds counts as broken. Nothing is printed.
 *
 * Returns CLI_OK when a response arrived and its transfer ended (the
 * server ended it, or it was stopped); CLI_ECONNECT when the server could
 * not be reached or the connection broke (after a status, resp->status is
 * set), with the reason in err; CLI_EUSAGE for a malformed server URL.
 * The caller frees resp->body.
 */
int cli_stream(cli_client *c, const char *path, const char *const *headers, cli_body_fn fn,
               void *ctx, int (*stop)(void), int idle_s, cli_response *resp, char *err,
               size_t errlen);

/*
 * Report a response whose status is not 2xx: "stele: CODE: message" from
 * its error body ({"error":{"code":...,"message":...}}), or
 * "stele: HTTP <status>: <start of the body>" when it has none. Returns
 * CLI_ESERVER.
 */
int cli_report_error(const cli_response *r);

/*
 * A failed libstele call of a local command, as the server would name it:
 * "stele <cmd>: <subject>: <CODE>: <message>" on stderr, CODE from the
 * error vocabulary (stele_error_info_of, docs/errors.md); subject may be
 * NULL.
 */
void cli_lib_error(const char *cmd, const char *subject, int rc);

/* ------------------------------------------------------------ JSON */

/* A span of JSON text (not NUL-terminated). */
typedef struct cli_span {
    const char *p;
    size_t n;
} cli_span;

/*
 * Check that p[0..n) is exactly one JSON value (RFC 8259 grammar; UTF-8 is
 * left to the server), with optional whitespace around it. Returns the
 * value's first character ('{', '[', '"', 't', 'f', 'n', '-' or a digit),
 * or 0 when it is not valid, with *err_at the byte offset of the problem.
 */
int cli_json_check(const char *p, size_t n, size_t *err_at);

/* The value of member `key` of the object `obj` (top level only): 1 found. */
int cli_json_get(cli_span obj, const char *key, cli_span *value);

/*
 * Iterate the elements of the array `arr`: start with *pos = 0; each call
 * stores the next element and returns 1, or returns 0 at the end.
 */
int cli_json_next(cli_span arr, size_t *pos, cli_span *elem);

/*
 * The text of a JSON string value, decoded (escapes, \u surrogate pairs),
 * with control characters and NUL shown as '?'; caller frees. NULL when the
 * value is not a string.
 */
char *cli_json_str(cli_span v);

/* A non-negative integer value: 0 ok, -1 when null or not such a number. */
int cli_json_u64(cli_span v, uint64_t *out);

/* Whether the value is the literal true. */
int cli_json_true(cli_span v);

/* The non-negative integer member `key` of `obj`; 0 when absent or not one. */
uint64_t cli_json_field_u64(cli_span obj, const char *key);

/* ------------------------------------------------------------ admin jobs */

/* A long admin operation on the server (admin_job.c): /admin/NAME. */
typedef struct cli_job {
    const char *command; /* for messages: "backup", "scavenge" */
    const char *name;    /* the path under /admin/ and the response's member */
    const char *body;    /* the POST's JSON body, or NULL for none */
    int wait;            /* poll until the status is not "running" */
    void (*progress)(cli_span state); /* called while running; may be NULL */
} cli_job;

/*
 * Start the job and, with job->wait, poll it until it ends. On CLI_OK,
 * *state is the job's object in resp->body and *status its status (the
 * caller frees it, and resp->body, in every case); otherwise the exit code,
 * after printing why (a refusal through cli_report_error).
 */
int cli_admin_job(cli_client *c, const cli_job *job, cli_response *resp, cli_span *state,
                  char **status);

/* Print the job's "error" message as a result line, if it has one. */
void cli_job_print_error(cli_span job);

/* ------------------------------------------------------------ tables */

/*
 * One event (a JSON object as the server renders it) as a row of the
 * table `stele read` prints, with fixed column widths for output that
 * arrives one event at a time (stele tail); `header` first prints the
 * column names. `width` is the terminal's.
 */
void cli_event_row(cli_span ev, int width, int header);

#endif
