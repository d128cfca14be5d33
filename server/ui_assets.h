/*
 * ui_assets.h - the web UI's files, compiled into the server
 * (cmake/embed_web.cmake generates the table from web/ at build time).
 */
#ifndef STELE_UI_ASSETS_H
#define STELE_UI_ASSETS_H

#include <stddef.h>

typedef struct ui_asset {
    const char *path;         /* "/" for index.html, "/ui/NAME" otherwise */
    const char *type;         /* Content-Type */
    const char *etag;         /* quoted: a SHA-256 prefix of the bytes */
    const unsigned char *data;
    size_t len;
} ui_asset;

extern const ui_asset ui_assets[];
extern const size_t ui_nassets;
extern const size_t ui_total_bytes;

#endif
