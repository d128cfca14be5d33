/*
 * jsjson.h - JSON text to duktape values without JSON.parse (jsjson.c),
 * for the event data handlers read.
 */
#ifndef STELE_PROJ_JSJSON_H
#define STELE_PROJ_JSJSON_H

#include <stddef.h>
#include <stdlib.h>

#include "duktape.h"
#include "util/json_text.h"

/* A token buffer kept between calls (zero it; free with proj_json_toks_free). */
typedef struct proj_json_toks {
    jtext_tok *toks;
    size_t cap;
} proj_json_toks;

/* Push the value of the JSON text s[0..n) onto ctx's stack, exactly as
 * JSON.parse would make it: 0. Or 1, with the stack as it was, when the
 * text is one this fast path leaves to JSON.parse (a scalar at the top, a
 * backslash in a string, a number it cannot convert exactly, invalid JSON
 * ... see jsjson.c). */
int proj_json_push(duk_context *ctx, const char *s, size_t n, proj_json_toks *tk);

void proj_json_toks_free(proj_json_toks *tk);

#endif
