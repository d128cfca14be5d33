/*
 * guard.c - what keeps web pages and other machines from using the server
 * in ways its owner did not mean (docs/http-api.md "Browsers and other
 * sites", docs/limits.md):
 *
 *   Host     (DNS rebinding) A page on evil.example whose name is made to
 *            resolve to this machine is same-origin with itself, so the
 *            browser lets it read our answers. Its requests carry
 *            "Host: evil.example", so every HTTP/1.1 request's Host must be
 *            one of our names: localhost (and *.localhost), the machine's
 *            host name, any IP address literal (a page whose origin is an
 *            address cannot be rebound), a single-label name without a dot
 *            ("myserver": resolved by the local network's own DNS search
 *            path, which an outside attacker does not control), or a name
 *            in --allowed-hosts ("*" turns the check off). A request
 *            without Host (HTTP/1.0 tools) passes.
 *   Origin   A browser names the page behind a cross-origin request (and
 *            behind every POST/PUT/DELETE). A request whose Origin is
 *            present and neither our own (same scheme-less host:port as its
 *            Host header) nor listed in --allowed-origins is refused,
 *            whatever its method: no write ("simple" cross-site POSTs need
 *            no preflight), no consumer-group pull. "null" (sandboxed
 *            pages, file:) is never allowed. No Origin: a program, not a
 *            page; it passes.
 *   Sec-Fetch-Site  Requests a page makes without CORS (an <img>, a
 *            no-cors fetch) carry no Origin; browsers mark them
 *            "Sec-Fetch-Site: cross-site" (or same-site). Those are refused
 *            too, except top-level navigations (a link the user follows).
 *   Content-Type  Every request body is JSON: a body with a Content-Type
 *            other than application/json or application/...+json is 415.
 *            No Content-Type is accepted (curl --data-binary, most HTTP
 *            libraries); the Origin rule covers browsers.
 *   CORS     A request from an allowed origin gets
 *            Access-Control-Allow-Origin (its origin) and Vary: Origin; its
 *            preflight (OPTIONS with Access-Control-Request-Method) gets 204
 *            with the methods and headers the API uses.
 *   Loopback Operations that stop or reconfigure the server (gRPC
 *            Operations.Shutdown, Start/StopScavenge; POST/DELETE
 *            /admin/scavenge) are accepted only from a loopback peer until
 *            the server has authentication.
 *
 * gRPC (HTTP/2 with prior knowledge) is not reachable from browser pages,
 * so only the loopback rule applies to it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_int.h"

#define GUARD_MAX 64

struct guard {
    int any_host, any_origin;
    char *hosts[GUARD_MAX]; /* lower case, no port, no brackets */
    size_t nhosts;
    char *origins[GUARD_MAX]; /* lower case scheme://host[:port], default port dropped */
    size_t norigins;
    char names[300];          /* our names, for messages */
};

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* "http://h:80" -> "http://h", "https://h:443/" -> "https://h". */
static void origin_normalize(char *o)
{
    lower(o);
    size_t n = strlen(o);
    while (n && o[n - 1] == '/')
        o[--n] = 0;
    if (!strncmp(o, "http://", 7) && n > 3 && !strcmp(o + n - 3, ":80"))
        o[n - 3] = 0;
    else if (!strncmp(o, "https://", 8) && n > 4 && !strcmp(o + n - 4, ":443"))
        o[n - 4] = 0;
}

/* Split a comma-separated list into out[] (each item trimmed, normalized);
 * "*" sets *any. -1 if there are more than GUARD_MAX or out of memory. */
static int split(const char *list, char **out, size_t *n, int *any, int is_origin)
{
    if (!list)
        return 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if (t > p) {
            if (t - p == 1 && *p == '*') {
                *any = 1;
            } else {
                if (*n >= GUARD_MAX)
                    return -1;
                char *item = strndup(p, (size_t)(t - p));
                if (!item)
                    return -1;
                if (is_origin)
                    origin_normalize(item);
                else {
                    lower(item);
                    size_t l = strlen(item);
                    if (item[0] == '[' && l > 1 && item[l - 1] == ']') {
                        memmove(item, item + 1, l - 2);
                        item[l - 2] = 0;
                    }
                }
                out[(*n)++] = item;
            }
        }
        p = e;
    }
    return 0;
}

int guard_init(server *s)
{
    struct guard *g = calloc(1, sizeof *g);
    if (!g)
        return -1;
    s->guard = g;
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) == 0 && host[0]) {
        lower(host);
        g->hosts[g->nhosts++] = strdup(host);
        char *dot = strchr(host, '.');
        if (dot) {
            *dot = 0; /* the short name too */
            g->hosts[g->nhosts++] = strdup(host);
        }
    }
    snprintf(g->names, sizeof g->names,
             "localhost, *.localhost, names without a dot, IP addresses%s%.200s",
             host[0] ? ", " : "", host);
    if (split(s->cfg.allowed_hosts, g->hosts, &g->nhosts, &g->any_host, 0) ||
        split(s->cfg.allowed_origins, g->origins, &g->norigins, &g->any_origin, 1)) {
        fprintf(stderr, "stele serve: --allowed-hosts and --allowed-origins take at most %d "
                        "names each\n", GUARD_MAX - 2);
        return -1;
    }
    for (size_t i = 0; i < g->nhosts; i++)
        if (!g->hosts[i])
            return -1;
    return 0;
}

void guard_free(server *s)
{
    struct guard *g = s->guard;
    if (!g)
        return;
    for (size_t i = 0; i < g->nhosts; i++)
        free(g->hosts[i]);
    for (size_t i = 0; i < g->norigins; i++)
        free(g->origins[i]);
    free(g);
    s->guard = NULL;
}

/* The host part of a Host header value, lower case, without port or
 * brackets or a final dot. 0, or -1 if malformed. */
static int host_part(const char *v, char *out, size_t cap)
{
    const char *end, *port;
    if (*v == '[') {
        v++;
        end = strchr(v, ']');
        if (!end)
            return -1;
        port = end + 1;
    } else {
        end = v + strcspn(v, ":");
        port = end;
        /* A DNS name or an IPv4 address: anything else (a second Host
         * header joined with ',', spaces) is malformed. */
        for (const char *p = v; p < end; p++)
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
                return -1;
    }
    if (*port == ':')
        port++;
    else if (*port)
        return -1;
    for (; *port; port++)
        if (*port < '0' || *port > '9')
            return -1;
    size_t n = (size_t)(end - v);
    if (n == 0 || n >= cap)
        return -1;
    memcpy(out, v, n);
    out[n] = 0;
    lower(out);
    if (n > 1 && out[n - 1] == '.')
        out[n - 1] = 0;
    return 0;
}

static int host_allowed(const struct guard *g, const char *h)
{
    if (g->any_host)
        return 1;
    unsigned char a[16];
    if (inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1)
        return 1;
    size_t n = strlen(h);
    if (!strchr(h, '.') || (n > 10 && !strcmp(h + n - 10, ".localhost")))
        return 1; /* localhost, this machine's short name, intranet names */
    for (size_t i = 0; i < g->nhosts; i++)
        if (!strcmp(g->hosts[i], h))
            return 1;
    return 0;
}

/* Is `origin` (normalized) this server itself, reached as `host` (the Host
 * header)? Either scheme: a TLS-terminating proxy in front keeps Host. */
static int same_origin(const char *origin, const char *host)
{
    char h[300];
    snprintf(h, sizeof h, "%s", host);
    lower(h);
    size_t n = strlen(h);
    if (n > 3 && !strcmp(h + n - 3, ":80"))
        h[n - 3] = 0;
    const char *rest = !strncmp(origin, "http://", 7)    ? origin + 7
                       : !strncmp(origin, "https://", 8) ? origin + 8
                                                         : NULL;
    return rest && !strcmp(rest, h);
}

static int origin_allowed(const struct guard *g, const request *r, const char *norm)
{
    if (!strcmp(norm, "null"))
        return 0;
    if (g->any_origin)
        return 1;
    if (r->has_host && same_origin(norm, r->host))
        return 1;
    for (size_t i = 0; i < g->norigins; i++)
        if (!strcmp(g->origins[i], norm))
            return 1;
    return 0;
}

/* application/json, application/...+json, any parameters. */
static int json_media_type(const char *ct)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && !strncasecmp(ct, "application/json", 16))
        return 1;
    return n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5);
}

/* application/javascript or text/javascript, any parameters. */
static int js_media_type(const char *ct)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    return (n == 22 && !strncasecmp(ct, "application/javascript", 22)) ||
           (n == 15 && !strncasecmp(ct, "text/javascript", 15));
}

static void refuse(conn *c, int status, const char *code, const char *msg)
{
    c->req.cors = 0;
    http_error(c, status, code, msg);
    conn_request_done(c);
}

int guard_http_request(conn *c)
{
    const struct guard *g = c->srv->guard;
    request *r = &c->req;
    char msg[900];
    /* A connection's requests carry the same Host: the last one found
     * allowed is remembered (the allowed names do not change while
     * serving), and the same value again skips parsing and lookups. */
    if (r->has_host && !r->host_too_long && c->host_ok[0] && !strcmp(r->host, c->host_ok)) {
        /* allowed before */
    } else if (r->has_host) {
        char h[256];
        if (r->host_too_long || host_part(r->host, h, sizeof h) || !host_allowed(g, h)) {
            snprintf(msg, sizeof msg,
                     "Host '%.200s' is not one of this server's names (%s); to reach the server "
                     "under another name, list it in --allowed-hosts (this check stops DNS "
                     "rebinding)",
                     r->host, g->names);
            refuse(c, 403, "HOST_NOT_ALLOWED", msg);
            return -1;
        }
        if (strlen(r->host) < sizeof c->host_ok)
            strcpy(c->host_ok, r->host);
    }
    if (r->has_origin) {
        char norm[sizeof r->origin];
        snprintf(norm, sizeof norm, "%s", r->origin);
        origin_normalize(norm);
        if (r->origin_too_long || !origin_allowed(g, r, norm)) {
            snprintf(msg, sizeof msg,
                     "requests from pages of origin '%.200s' are not allowed; list the origin in "
                     "--allowed-origins to let pages there use this server",
                     r->origin);
            refuse(c, 403, "ORIGIN_NOT_ALLOWED", msg);
            return -1;
        }
        r->cors = 1;
    } else if ((!strcasecmp(r->fetch_site, "cross-site") || !strcasecmp(r->fetch_site, "same-site")) &&
               strcasecmp(r->fetch_mode, "navigate")) {
        snprintf(msg, sizeof msg,
                 "a %s request from a web page without an allowed Origin (Sec-Fetch-Site: %s) is "
                 "refused",
                 r->fetch_site, r->fetch_site);
        refuse(c, 403, "CROSS_SITE", msg);
        return -1;
    }
    /* Projection queries are JavaScript (the web UI sends them as such):
     * like JSON, not a type a page can send cross-site without a preflight. */
    if (r->body.len && r->has_content_type && !json_media_type(r->content_type) &&
        !js_media_type(r->content_type)) {
        snprintf(msg, sizeof msg,
                 "request bodies are JSON: send Content-Type: application/json (got '%.200s'; "
                 "with curl, use --json instead of -d)",
                 r->content_type);
        refuse(c, 415, "UNSUPPORTED_MEDIA_TYPE", msg);
        return -1;
    }
    if (r->method == HTTP_OPTIONS && r->cors && r->has_acr_method) {
        /* A CORS preflight from an allowed origin (any other OPTIONS is
         * routed, and no route takes OPTIONS: 405). */
        static const char pre[] =
            "Access-Control-Allow-Methods: GET, HEAD, POST, PUT, DELETE\r\n"
            "Access-Control-Allow-Headers: Content-Type, Accept, Stele-Expected-Revision, "
            "Last-Event-ID, Authorization\r\n"
            "Access-Control-Max-Age: 600\r\n";
        http_respond(c, 204, NULL, NULL, 0, pre);
        conn_request_done(c);
        return -1;
    }
    return 0;
}

void guard_cors_headers(const conn *c, buf *out)
{
    if (!c->req.cors || c->h2)
        return;
    buf_append(out, "Access-Control-Allow-Origin: ", 29);
    buf_append(out, c->req.origin, strlen(c->req.origin));
    buf_append(out, "\r\nVary: Origin\r\n", 16);
}

int guard_peer_is_loopback(const conn *c, char *addr, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    snprintf(addr, cap, "unknown");
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)cap);
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)cap);
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return ss.ss_family == AF_UNIX;
}

void guard_loopback_message(const char *what, const char *addr, char *msg, size_t cap)
{
    snprintf(msg, cap,
             "%s is only accepted from a loopback address (this request came from %s): the "
             "server has no authentication yet, so operations that stop or reconfigure it are "
             "limited to clients on the same machine",
             what, addr);
}
