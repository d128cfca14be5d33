/*
 * client.c - what the client commands (append, read, head, delete) share:
 * HTTP requests to a Stele server over libcurl, option parsing and output
 * mode, and a small JSON reader for the server's responses.
 *
 * Requests. One cli_client holds one curl easy handle, so a command that
 * follows `next` links reuses its keep-alive connection. A response body is
 * either kept in memory (errors, JSON pages, append results) or, for a 2xx
 * NDJSON read, written to the caller's sink as it arrives so that reading a
 * whole store needs no memory beyond curl's buffer.
 *
 * NDJSON records stay one per line. The server returns `data` and
 * `metadata` byte for byte as they were appended, and a pretty-printed
 * event carries newlines inside them; a raw newline can only be whitespace
 * between tokens (JSON strings cannot hold one), so the sink filter turns
 * any CR or LF inside a record (nesting depth > 0) into a space. The
 * records are otherwise passed through unchanged.
 *
 * Errors. Connection problems become "stele: cannot reach URL: reason"
 * (exit 3); a non-2xx response becomes "stele: CODE: message" from the
 * server's error body (exit 1).
 *
 * The JSON reader trusts nothing: every function bounds-checks and fails
 * softly on malformed input. cli_json_check is a full RFC 8259 grammar
 * check, used to reject bad --data/--file/stdin input before sending it.
 */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"
#include "stele.h"
#include "util/json_text.h"

/* ------------------------------------------------------------ options */

int cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "stele %s: %s needs a value (see 'stele %s --help')\n", cmd, name, cmd);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

int cli_common_opt(cli_common *co, const char *cmd, int argc, char **argv, int *i)
{
    if (!strcmp(argv[*i], "--json")) {
        co->json = 1;
        return 1;
    }
    return cli_opt(cmd, argc, argv, i, "--server", &co->server);
}

int cli_usage_error(const char *cmd, const char *synopsis, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "stele %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\n(see 'stele %s --help')\n", synopsis, cmd);
    return CLI_EUSAGE;
}

int cli_human(const cli_common *co)
{
    return !co->json && isatty(STDOUT_FILENO);
}

int cli_term_width(void)
{
    const char *env = getenv("COLUMNS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v >= 20 && v <= 10000)
            return (int)v;
    }
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 80;
}

int cli_finish_output(const char *cmd, int rc)
{
    if (fflush(stdout) != 0 && errno != EPIPE && rc == CLI_OK) {
        fprintf(stderr, "stele %s: writing output: %s\n", cmd, strerror(errno));
        rc = CLI_ESERVER;
    }
    return rc;
}

int cli_valid_expected(const char *s)
{
    if (!strcmp(s, "any") || !strcmp(s, "no_stream") || !strcmp(s, "stream_exists"))
        return 1;
    if (!*s || strlen(s) > 19)
        return 0;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

/* ------------------------------------------------------------ buffers */

void cli_buf_add(cli_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            fprintf(stderr, "stele: out of memory\n");
            exit(CLI_ESERVER);
        }
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cli_buf_adds(cli_buf *b, const char *s)
{
    cli_buf_add(b, s, strlen(s));
}

void cli_buf_add_jstr(cli_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    cli_buf_add(b, "\"", 1);
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '"' || *u == '\\') {
            char e[2] = {'\\', (char)*u};
            cli_buf_add(b, e, 2);
        } else if (*u < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[*u >> 4], hex[*u & 15]};
            cli_buf_add(b, e, 6);
        } else {
            cli_buf_add(b, u, 1);
        }
    }
    cli_buf_add(b, "\"", 1);
}

void cli_buf_free(cli_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int cli_buf_slurp(cli_buf *b, const char *path)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f)
        return -1;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        cli_buf_add(b, chunk, n);
    int err = ferror(f);
    if (f != stdin)
        fclose(f);
    cli_buf_add(b, "", 0);
    return err ? -1 : 0;
}

/* ------------------------------------------------------------ HTTP */

struct cli_client {
    CURL *curl;
    char *base;
    char errbuf[CURL_ERROR_SIZE];
};

cli_client *cli_client_open(const char *server)
{
    if (!server || !*server)
        server = getenv("STELE_SERVER");
    if (!server || !*server)
        server = CLI_DEFAULT_SERVER;
    /* A reader that goes away (`stele read --all | head`) is EPIPE on a
     * write, handled where output is written, rather than a signal. */
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "stele: cannot start libcurl\n");
        return NULL;
    }
    cli_client *c = calloc(1, sizeof *c);
    if (!c || !(c->base = strdup(server)) || !(c->curl = curl_easy_init())) {
        fprintf(stderr, "stele: cannot start libcurl\n");
        if (c)
            free(c->base);
        free(c);
        curl_global_cleanup();
        return NULL;
    }
    size_t n = strlen(c->base);
    while (n > 1 && c->base[n - 1] == '/')
        c->base[--n] = '\0';
    return c;
}

void cli_client_close(cli_client *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    free(c->base);
    free(c);
    curl_global_cleanup();
}

const char *cli_client_url(const cli_client *c)
{
    return c->base;
}

char *cli_stream_path(cli_client *c, const char *stream, const char *suffix)
{
    char *enc = curl_easy_escape(c->curl, stream, (int)strlen(stream));
    if (!enc) {
        fprintf(stderr, "stele: out of memory\n");
        exit(CLI_ESERVER);
    }
    cli_buf b = {0};
    cli_buf_adds(&b, "/streams/");
    cli_buf_adds(&b, enc);
    cli_buf_adds(&b, suffix ? suffix : "");
    curl_free(enc);
    return b.p;
}

char *cli_escape(cli_client *c, const char *s)
{
    char *enc = curl_easy_escape(c->curl, s, (int)strlen(s));
    char *out = enc ? strdup(enc) : NULL;
    curl_free(enc);
    if (!out) {
        fprintf(stderr, "stele: out of memory\n");
        exit(CLI_ESERVER);
    }
    return out;
}

/* One transfer: where the body goes and the NDJSON filter's state. */
typedef struct xfer {
    cli_client *c;
    cli_response *resp;
    FILE *sink;
    cli_body_fn fn; /* cli_stream: where a 2xx body goes */
    void *fn_ctx;
    int (*stop)(void);
    int mode;      /* 0 undecided, 1 keep in resp->body, 2 stream to sink, 3 to fn */
    int sink_errno;
    int depth, in_str, esc; /* NDJSON filter: position inside the current record */
    char tmp[16384];
} xfer;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    xfer *x = ud;
    size_t n = size * nmemb;
    if (x->mode == 0) {
        long st = 0;
        curl_easy_getinfo(x->c->curl, CURLINFO_RESPONSE_CODE, &st);
        int ok = st >= 200 && st < 300;
        x->mode = ok && x->fn ? 3 : ok && x->sink ? 2 : 1;
    }
    if (x->mode == 1) {
        cli_buf_add(&x->resp->body, data, n);
        return n;
    }
    if (x->mode == 3) {
        if (x->fn(x->fn_ctx, data, n) != 0) {
            x->resp->sink_done = 1;
            return 0;
        }
        return n;
    }
    for (size_t off = 0; off < n;) {
        size_t k = n - off < sizeof x->tmp ? n - off : sizeof x->tmp;
        for (size_t i = 0; i < k; i++) {
            char ch = data[off + i];
            if (x->in_str) {
                if (x->esc)
                    x->esc = 0;
                else if (ch == '\\')
                    x->esc = 1;
                else if (ch == '"')
                    x->in_str = 0;
            } else if (ch == '"') {
                x->in_str = 1;
            } else if (ch == '{' || ch == '[') {
                x->depth++;
            } else if ((ch == '}' || ch == ']') && x->depth > 0) {
                x->depth--;
            } else if ((ch == '\n' || ch == '\r') && x->depth > 0) {
                ch = ' ';
            }
            x->tmp[i] = ch;
        }
        if (fwrite(x->tmp, 1, k, x->sink) != k) {
            x->sink_errno = errno ? errno : EIO;
            return 0;
        }
        off += k;
    }
    if (fflush(x->sink) != 0) {
        x->sink_errno = errno ? errno : EIO;
        return 0;
    }
    return n;
}

/*
 * Credentials and TLS from the environment, for servers with users
 * (docs/security.md): STELE_USER and STELE_PASSWORD (HTTP Basic), or
 * STELE_API_KEY (a bearer key, added to the header list); STELE_CA_FILE, a
 * PEM CA to trust for https:// servers instead of the system's. Never
 * printed.
 */
static struct curl_slist *apply_security(CURL *h, struct curl_slist *hl)
{
    const char *user = getenv("STELE_USER"), *pw = getenv("STELE_PASSWORD");
    const char *key = getenv("STELE_API_KEY"), *ca = getenv("STELE_CA_FILE");
    if (key && *key) {
        cli_buf b = {0};
        cli_buf_adds(&b, "Authorization: Bearer ");
        cli_buf_adds(&b, key);
        cli_buf_add(&b, "", 1);
        struct curl_slist *t = curl_slist_append(hl, b.p);
        memset(b.p, 0, b.len);
        cli_buf_free(&b);
        if (t)
            hl = t;
    } else if (user && *user) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, pw ? pw : "");
    }
    if (ca && *ca)
        curl_easy_setopt(h, CURLOPT_CAINFO, ca);
    return hl;
}

int cli_request(cli_client *c, const char *method, const char *path, const char *const *headers,
                const char *body, size_t body_len, FILE *sink, cli_response *resp)
{
    memset(resp, 0, sizeof *resp);
    cli_buf url = {0};
    cli_buf_adds(&url, c->base);
    cli_buf_adds(&url, path);

    struct curl_slist *hl = NULL, *t;
    int has_accept = 0;
    for (size_t i = 0; headers && headers[i]; i++) {
        if (!strncasecmp(headers[i], "Accept:", 7))
            has_accept = 1;
        if (!(t = curl_slist_append(hl, headers[i])))
            goto nomem;
        hl = t;
    }
    if (!has_accept && !(hl = curl_slist_append(hl, "Accept: application/json")))
        goto nomem;
    /* The server does not answer "Expect: 100-continue"; curl would wait a
     * second for it before sending a large body. */
    if (!(t = curl_slist_append(hl, "Expect:")))
        goto nomem;
    hl = t;
    if (body && !(hl = curl_slist_append(hl, "Content-Type: application/json")))
        goto nomem;

    xfer *x = calloc(1, sizeof *x);
    if (!x)
        goto nomem;
    x->c = c;
    x->resp = resp;
    x->sink = sink;

    CURL *h = c->curl;
    c->errbuf[0] = '\0';
    hl = apply_security(h, hl);
    curl_easy_setopt(h, CURLOPT_URL, url.p);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "stele/" STELE_VERSION);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    if (body || !strcmp(method, "POST")) {
        /* A body goes out the POST way; PUT etc. only rename the method. */
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") ? method : NULL);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") ? method : NULL);
    }

    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    int ret = CLI_OK;
    if (rc == CURLE_WRITE_ERROR && x->sink_errno) {
        if (x->sink_errno == EPIPE) {
            resp->sink_done = 1;
        } else {
            fprintf(stderr, "stele: writing output: %s\n", strerror(x->sink_errno));
            ret = CLI_ESERVER;
        }
    } else if (rc != CURLE_OK) {
        long oserr = 0;
        curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
        const char *why = oserr ? strerror((int)oserr)
                                : c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
        ret = CLI_ECONNECT;
        if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT) {
            fprintf(stderr, "stele: bad server URL '%s': %s\n", c->base, why);
            ret = CLI_EUSAGE;
        } else if (resp->status == 0 &&
                   (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                    rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_OPERATION_TIMEDOUT)) {
            fprintf(stderr, "stele: cannot reach %s: %s\n", c->base, why);
        } else {
            fprintf(stderr, "stele: %s %s: connection failed: %s\n", method, url.p,
                    c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
        }
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, NULL);
    free(x);
    curl_slist_free_all(hl);
    cli_buf_free(&url);
    return ret;

nomem:
    curl_slist_free_all(hl);
    cli_buf_free(&url);
    fprintf(stderr, "stele: out of memory\n");
    return CLI_ESERVER;
}

/* cli_stream: stop the transfer when asked (polled about once a second
 * while idle, more often while data flows). */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    xfer *x = ud;
    if (x->stop && x->stop()) {
        x->resp->sink_done = 1;
        return 1;
    }
    return 0;
}

int cli_stream(cli_client *c, const char *path, const char *const *headers, cli_body_fn fn,
               void *ctx, int (*stop)(void), int idle_s, cli_response *resp, char *err,
               size_t errlen)
{
    memset(resp, 0, sizeof *resp);
    err[0] = '\0';
    cli_buf url = {0};
    cli_buf_adds(&url, c->base);
    cli_buf_adds(&url, path);
    struct curl_slist *hl = NULL, *t;
    for (size_t i = 0; headers && headers[i]; i++) {
        if (!(t = curl_slist_append(hl, headers[i]))) {
            curl_slist_free_all(hl);
            cli_buf_free(&url);
            snprintf(err, errlen, "out of memory");
            return CLI_ESERVER;
        }
        hl = t;
    }
    xfer *x = calloc(1, sizeof *x);
    if (!x) {
        curl_slist_free_all(hl);
        cli_buf_free(&url);
        snprintf(err, errlen, "out of memory");
        return CLI_ESERVER;
    }
    x->c = c;
    x->resp = resp;
    x->fn = fn;
    x->fn_ctx = ctx;
    x->stop = stop;
    CURL *h = c->curl;
    c->errbuf[0] = '\0';
    hl = apply_security(h, hl);
    curl_easy_setopt(h, CURLOPT_URL, url.p);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "stele/" STELE_VERSION);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    /* A connection that carries nothing (not even the server's keep-alive
     * comments) for idle_s seconds is dead. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)idle_s);

    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    int ret = CLI_OK;
    if (rc != CURLE_OK && !resp->sink_done) {
        long oserr = 0;
        curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
        const char *why = c->errbuf[0] ? c->errbuf
                          : oserr      ? strerror((int)oserr)
                                       : curl_easy_strerror(rc);
        snprintf(err, errlen, "%s", why);
        ret = rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT ? CLI_EUSAGE
                                                                            : CLI_ECONNECT;
    }
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, NULL);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 0L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, NULL);
    free(x);
    curl_slist_free_all(hl);
    cli_buf_free(&url);
    return ret;
}

int cli_report_error(const cli_response *r)
{
    cli_span body = {r->body.p ? r->body.p : "", r->body.len}, err, code, msg;
    char *c = NULL, *m = NULL;
    if (cli_json_get(body, "error", &err) && cli_json_get(err, "code", &code) &&
        cli_json_get(err, "message", &msg) && (c = cli_json_str(code)) &&
        (m = cli_json_str(msg))) {
        fprintf(stderr, "stele: %s: %s\n", c, m);
    } else {
        /* Not a Stele error body (a proxy, another server): show its start. */
        size_t n = 0;
        while (n < body.n && n < 200 && body.p[n] != '\n' && body.p[n] != '\r')
            n++;
        if (n)
            fprintf(stderr, "stele: HTTP %ld: %.*s\n", r->status, (int)n, body.p);
        else
            fprintf(stderr, "stele: HTTP %ld\n", r->status);
    }
    free(c);
    free(m);
    return CLI_ESERVER;
}

void cli_lib_error(const char *cmd, const char *subject, int rc)
{
    const char *m = stele_errmsg();
    fprintf(stderr, "stele %s: %s%s%s: %s\n", cmd, subject ? subject : "", subject ? ": " : "",
            stele_error_info_of(rc)->code, *m ? m : stele_strerror(rc));
}

/* ------------------------------------------------------------ JSON */

#define JSON_MAX_DEPTH 1000

typedef struct jctx {
    const char *end;
    const char *err; /* where the first problem is */
    int depth;
} jctx;

static const char *j_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *j_fail(jctx *c, const char *p)
{
    if (!c->err)
        c->err = p;
    return NULL;
}

/* p at '"': returns the position after the closing quote. */
static const char *j_string(jctx *c, const char *p)
{
    for (p++; p < c->end; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"')
            return p + 1;
        if (ch < 0x20)
            return j_fail(c, p);
        if (ch == '\\') {
            if (++p >= c->end)
                break;
            if (*p == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (p + k >= c->end || hex_digit((unsigned char)p[k]) < 0)
                        return j_fail(c, p + k < c->end ? p + k : c->end);
                p += 4;
            } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
                return j_fail(c, p);
            }
        }
    }
    return j_fail(c, c->end);
}

static const char *j_digits(const char *p, const char *end)
{
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

static const char *j_number(jctx *c, const char *p)
{
    const char *q;
    if (p < c->end && *p == '-')
        p++;
    if (p >= c->end || *p < '0' || *p > '9')
        return j_fail(c, p);
    p = *p == '0' ? p + 1 : j_digits(p, c->end);
    if (p < c->end && *p == '.') {
        if ((q = j_digits(p + 1, c->end)) == p + 1)
            return j_fail(c, q);
        p = q;
    }
    if (p < c->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < c->end && (*p == '+' || *p == '-'))
            p++;
        if ((q = j_digits(p, c->end)) == p)
            return j_fail(c, q);
        p = q;
    }
    return p;
}

/* p at the first character of a value (no leading whitespace). */
static const char *j_value(jctx *c, const char *p)
{
    if (p >= c->end)
        return j_fail(c, p);
    switch (*p) {
    case '"':
        return j_string(c, p);
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        if (++c->depth > JSON_MAX_DEPTH)
            return j_fail(c, p);
        p = j_ws(p + 1, c->end);
        if (p < c->end && *p == close) {
            c->depth--;
            return p + 1;
        }
        for (;;) {
            if (close == '}') {
                if (p >= c->end || *p != '"' || !(p = j_string(c, p)))
                    return j_fail(c, p);
                p = j_ws(p, c->end);
                if (p >= c->end || *p != ':')
                    return j_fail(c, p);
                p = j_ws(p + 1, c->end);
            }
            if (!(p = j_value(c, p)))
                return NULL;
            p = j_ws(p, c->end);
            if (p < c->end && *p == ',') {
                p = j_ws(p + 1, c->end);
                continue;
            }
            if (p < c->end && *p == close) {
                c->depth--;
                return p + 1;
            }
            return j_fail(c, p);
        }
    }
    case 't':
    case 'f':
    case 'n': {
        const char *lit = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
        size_t n = strlen(lit);
        if ((size_t)(c->end - p) < n || memcmp(p, lit, n))
            return j_fail(c, p);
        return p + n;
    }
    default:
        return j_number(c, p);
    }
}

int cli_json_check(const char *p, size_t n, size_t *err_at)
{
    jctx c = {p + n, NULL, 0};
    const char *s = j_ws(p, c.end), *e = j_value(&c, s);
    if (e && (e = j_ws(e, c.end)) != c.end)
        c.err = e;
    if (c.err) {
        if (err_at)
            *err_at = (size_t)(c.err - p);
        return 0;
    }
    return (unsigned char)*s;
}

int cli_json_get(cli_span obj, const char *key, cli_span *value)
{
    jctx c = {obj.p + obj.n, NULL, 0};
    size_t klen = strlen(key);
    const char *p = j_ws(obj.p, c.end);
    if (p >= c.end || *p != '{')
        return 0;
    p = j_ws(p + 1, c.end);
    while (p < c.end && *p == '"') {
        const char *k = p + 1, *v;
        if (!(p = j_string(&c, p)))
            return 0;
        /* Keys are compared as written: the server's keys have no escapes. */
        int match = (size_t)(p - 1 - k) == klen && !memcmp(k, key, klen);
        p = j_ws(p, c.end);
        if (p >= c.end || *p != ':')
            return 0;
        v = j_ws(p + 1, c.end);
        if (!(p = j_value(&c, v)))
            return 0;
        if (match) {
            value->p = v;
            value->n = (size_t)(p - v);
            return 1;
        }
        p = j_ws(p, c.end);
        if (p >= c.end || *p != ',')
            return 0;
        p = j_ws(p + 1, c.end);
    }
    return 0;
}

int cli_json_next(cli_span arr, size_t *pos, cli_span *elem)
{
    jctx c = {arr.p + arr.n, NULL, 0};
    const char *p = arr.p + *pos;
    if (*pos == 0) {
        p = j_ws(p, c.end);
        if (p >= c.end || *p != '[')
            return 0;
        p++;
    }
    p = j_ws(p, c.end);
    if (p < c.end && *p == ',')
        p = j_ws(p + 1, c.end);
    if (p >= c.end || *p == ']')
        return 0;
    const char *e = j_value(&c, p);
    if (!e)
        return 0;
    elem->p = p;
    elem->n = (size_t)(e - p);
    *pos = (size_t)(e - arr.p);
    return 1;
}

static void put_utf8(cli_buf *b, unsigned long cp)
{
    uint8_t u[4];
    cli_buf_add(b, (const char *)u, jtext_utf8_put((uint32_t)cp, u));
}

char *cli_json_str(cli_span v)
{
    jctx c = {v.p + v.n, NULL, 0};
    const char *p = j_ws(v.p, c.end), *e;
    if (p >= c.end || *p != '"' || !(e = j_string(&c, p)))
        return NULL;
    cli_buf b = {0};
    cli_buf_add(&b, "", 0);
    for (p++, e--; p < e; p++) {
        if (*p != '\\') {
            cli_buf_add(&b, (unsigned char)*p < 0x20 ? "?" : p, 1);
            continue;
        }
        char ch = *++p;
        if (ch == 'u') {
            unsigned long cp = (unsigned long)jtext_hex4(p + 1); /* j_string checked the digits */
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && e - p > 6 && p[1] == '\\' && p[2] == 'u') {
                long lo = jtext_hex4(p + 3);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            if (cp < 0x20 || (cp >= 0xD800 && cp < 0xE000))
                cli_buf_add(&b, "?", 1);
            else
                put_utf8(&b, cp);
        } else {
            cli_buf_add(&b, ch == '"' || ch == '\\' || ch == '/' ? &ch : "?", 1);
        }
    }
    return b.p;
}

int cli_json_u64(cli_span v, uint64_t *out)
{
    const char *p = v.p, *end = v.p + v.n;
    p = j_ws(p, end);
    while (end > p && (end[-1] == ' ' || end[-1] == '\n' || end[-1] == '\r' || end[-1] == '\t'))
        end--;
    if (p >= end || end - p > 20)
        return -1;
    uint64_t x = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

int cli_json_true(cli_span v)
{
    const char *p = j_ws(v.p, v.p + v.n);
    return (size_t)(v.p + v.n - p) >= 4 && !memcmp(p, "true", 4);
}
