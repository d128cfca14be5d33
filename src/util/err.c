/*
 * err.c - error names, texts and the per-thread error message.
 *
 * The STELE_ERRORS X-macro in stele.h is the single table of error codes;
 * both switches below are generated from it, so adding a code there is the
 * whole change. stele_errname() is the code's name without the leading 'E'
 * ("WRONGREV"), which the server sends as the stable code in error bodies.
 *
 * Each thread has one message buffer. A failing internal path records the
 * detail with `return err_set(code, "...")`; public calls clear it on entry
 * (err_clear) so stele_errmsg() describes the thread's latest failure. The
 * buffer is thread-local, so no locking, and stele_errmsg() never returns
 * NULL.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "stele.h"
#include "util/util.h"

#define ERRMSG_MAX 1024

static _Thread_local char errmsg[ERRMSG_MAX];

const char *stele_strerror(int code)
{
    switch (code) {
    case 0:
        return "ok";
#define ERR_TEXT_(name, num, text) \
    case (num):                    \
        return (text);
        STELE_ERRORS(ERR_TEXT_)
#undef ERR_TEXT_
    default:
        return "unknown error";
    }
}

const char *stele_errname(int code)
{
    switch (code) {
    case 0:
        return "OK";
        /* #name is "EWRONGREV"; &#name[1] skips the 'E' and still points
         * into the string literal, so the result has static storage. */
#define ERR_NAME_(name, num, text) \
    case (num):                    \
        return &#name[1];
        STELE_ERRORS(ERR_NAME_)
#undef ERR_NAME_
    default:
        return "UNKNOWN";
    }
}

const char *stele_errmsg(void) { return errmsg; }

int err_set(int code, const char *fmt, ...)
{
    /* Format into a scratch buffer first: callers may add context to the
     * message already there, err_set(rc, "segment %s: %s", name,
     * stele_errmsg()), and vsnprintf must not read the buffer it writes. */
    char tmp[ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        tmp[0] = '\0';
    memcpy(errmsg, tmp, strlen(tmp) + 1);
    return code;
}

void err_clear(void) { errmsg[0] = '\0'; }
