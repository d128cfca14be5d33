/*
 * routes_ui.c - the web UI (docs/ui.md): GET / answers the page and
 * GET /ui/NAME its scripts, styles and icon, every byte compiled into the
 * binary (ui_assets.h, generated from web/ by cmake/embed_web.cmake), so
 * the UI works offline and fetches nothing from elsewhere. The UI itself
 * is a client of the HTTP API like any other: this file only serves files.
 *
 * Caching: each asset's ETag is a hash of its bytes; answers say
 * "Cache-Control: no-cache" (the browser revalidates, a matching
 * If-None-Match gets an empty 304), so a new server version is picked up
 * at the next load and an unchanged one costs one small round trip per file.
 *
 * Every answer carries a strict Content-Security-Policy: scripts and
 * styles only from this server's own files (no inline script or style, no
 * eval), connections only to this origin, no frames, no plugins, no form
 * posts elsewhere. Together with the UI rendering every stored string as
 * text (never as markup), an event body holding "<script>" stays text.
 */
#include <stdio.h>
#include <string.h>

#include "server_int.h"
#include "ui_assets.h"

#define UI_HEADERS                                                                                 \
    "Cache-Control: no-cache\r\n"                                                                  \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "              \
    "frame-ancestors 'none'\r\n"                                                                   \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "X-Frame-Options: DENY\r\n"

/* Does If-None-Match (a list of quoted tags, or "*") name this ETag? */
static int ui_etag_matches(const char *inm, const char *etag)
{
    if (!inm[0])
        return 0;
    if (!strcmp(inm, "*"))
        return 1;
    size_t el = strlen(etag);
    for (const char *p = inm; (p = strstr(p, etag)) != NULL; p += el) {
        /* a weak validator (W/"...") matches too: the bytes never differ */
        char after = p[el];
        if (after == 0 || after == ',' || after == ' ')
            return 1;
    }
    return 0;
}

int route_ui(conn *c, const char *path, size_t plen)
{
    int is_root = plen == 1 && path[0] == '/';
    int is_ui = plen > 4 && !memcmp(path, "/ui/", 4);
    if (!is_root && !is_ui)
        return 0;
    int m = c->req.method;
    if (m != HTTP_GET && m != HTTP_HEAD) {
        http_error(c, 405, "METHOD_NOT_ALLOWED", "the web UI's files answer GET and HEAD only");
        conn_request_done(c);
        return 1;
    }
    const ui_asset *a = NULL;
    for (size_t i = 0; i < ui_nassets; i++)
        if (strlen(ui_assets[i].path) == plen && !memcmp(ui_assets[i].path, path, plen)) {
            a = &ui_assets[i];
            break;
        }
    if (!a) {
        http_error(c, 404, "NOT_FOUND", "no such file in the web UI");
        conn_request_done(c);
        return 1;
    }
    char extra[1024];
    snprintf(extra, sizeof extra, "ETag: %s\r\n" UI_HEADERS, a->etag);
    if (ui_etag_matches(c->req.if_none_match, a->etag)) {
        /* 304: headers only, no body and no Content-Type */
        http_respond(c, 304, NULL, NULL, 0, extra);
    } else {
        http_respond(c, 200, a->type, a->data, a->len, extra);
    }
    conn_request_done(c);
    return 1;
}
