/*
 * backend.c - choosing a backend by the store URI.
 *
 * A store is named by a URI (shared/DESIGN.md, docs/backends.md):
 *
 *   /var/lib/stele, ./data, file:/var/lib/stele,
 *   file:///var/lib/stele                           the local engine
 *   postgres://user@host/db, postgresql://...       PostgreSQL (libpq URI)
 *   dynamodb://PREFIX?endpoint=URL&region=R         DynamoDB
 *
 * Anything that does not start with "scheme://" or "file:" is a directory,
 * so every path that worked before URIs still does (a directory named
 * "a:b" included). The table below maps a scheme to its backend's open
 * function; a backend this build does not have keeps its entry with a NULL
 * function, so the error says what is missing rather than "unknown scheme".
 * Adding a backend is one line in the table.
 *
 * Every backend's ops carry the contract's version (BACKEND_OPS_VERSION):
 * a backend built against another version of backend.h is refused at open,
 * never called with a table whose slots mean something else.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "backend/backend.h"
#include "util/assert.h"
#include "util/util.h"

typedef int (*backend_open_fn)(const char *uri, const stele_options *opts, backend **out);

typedef struct backend_entry {
    const char *scheme; /* as written before "://", lower case */
    const char *what;   /* for messages */
    backend_open_fn open;
} backend_entry;

#ifdef STELE_WITH_POSTGRES
#define PG_OPEN pg_backend_open
#else
#define PG_OPEN NULL
#endif

static const backend_entry backends[] = {
    {"postgres", "PostgreSQL", PG_OPEN},
    {"postgresql", "PostgreSQL", PG_OPEN},
    {"dynamodb", "DynamoDB", ddb_backend_open},
};
#define NBACKENDS (sizeof backends / sizeof backends[0])

/* The scheme of `uri` if it has the form "scheme://..." (RFC 3986 scheme
 * characters), with its length in *len; else NULL. */
static const char *uri_scheme(const char *uri, size_t *len)
{
    if (!isalpha((unsigned char)uri[0]))
        return NULL;
    size_t i = 1;
    while (isalnum((unsigned char)uri[i]) || uri[i] == '+' || uri[i] == '-' || uri[i] == '.')
        i++;
    if (strncmp(uri + i, "://", 3) != 0)
        return NULL;
    *len = i;
    return uri;
}

const char *backend_local_dir(const char *uri)
{
    if (strncmp(uri, "file://", 7) == 0) {
        /* file:///abs/path (empty authority) or file://localhost/abs/path. */
        const char *p = uri + 7;
        if (strncmp(p, "localhost/", 10) == 0)
            p += 9;
        return *p == '/' ? p : NULL;
    }
    if (strncmp(uri, "file:", 5) == 0)
        return uri[5] ? uri + 5 : NULL;
    size_t n;
    if (uri_scheme(uri, &n))
        return NULL;
    return uri;
}

int backend_open(const char *uri, const stele_options *opts, backend **out)
{
    *out = NULL;
    size_t n;
    const char *scheme = uri_scheme(uri, &n);
    int rc;
    if (strncmp(uri, "file:", 5) == 0) {
        const char *dir = backend_local_dir(uri);
        if (!dir)
            return err_set(STELE_EINVAL,
                           "store URI '%s': a file: URI names a directory (file:DIR or "
                           "file:///absolute/dir)",
                           uri);
        rc = local_open(dir, opts, out);
    } else if (!scheme) {
        rc = local_open(uri, opts, out);
    } else {
        const backend_entry *e = NULL;
        for (size_t i = 0; i < NBACKENDS; i++)
            if (strlen(backends[i].scheme) == n && strncasecmp(backends[i].scheme, uri, n) == 0)
                e = &backends[i];
        if (!e)
            return err_set(STELE_EINVAL,
                           "store URI '%.*s://...': unknown scheme (expected a directory, "
                           "file:DIR, postgres://, postgresql:// or dynamodb://)",
                           (int)(n > 32 ? 32 : n), uri);
        if (!e->open)
            return err_set(STELE_EINVAL, "store URI '%.*s://...': this build has no %s backend",
                           (int)n, uri, e->what);
        rc = e->open(uri, opts, out);
    }
    if (rc)
        return rc;
    STELE_ASSERT(*out && (*out)->ops);
    if ((rc = backend_check_version(*out)))
        *out = NULL;
    return rc;
}

int backend_check_version(backend *b)
{
    if (b->ops->version == BACKEND_OPS_VERSION)
        return 0;
    char name[64];
    snprintf(name, sizeof name, "%s", b->ops->name ? b->ops->name : "?");
    unsigned v = b->ops->version;
    b->ops->close(b);
    return err_set(STELE_EINTERNAL,
                   "backend '%s' implements contract version %u, this build needs %u", name, v,
                   (unsigned)BACKEND_OPS_VERSION);
}

/* ------------------------------------------------ the API edge's promises */

static int expected_ok(int64_t e)
{
    return e >= 0 || e == STELE_ANY || e == STELE_NO_STREAM || e == STELE_STREAM_EXISTS;
}

void backend_assert_append(const append_args *a)
{
    STELE_ASSERT(a && a->stream && a->stream_len >= 1 && a->stream_len <= BACKEND_NAME_MAX);
    STELE_ASSERT(a->n >= 1 && a->events && a->ids && a->made && expected_ok(a->expected));
#if STELE_DEBUG_ASSERTS_ON
    for (size_t i = 0; i < a->n; i++) {
        STELE_ASSERT(a->events[i].type && a->made[i] <= 1 && !uuid_is_nil(a->ids[i]));
        STELE_ASSERT(a->events[i].data || a->events[i].data_len == 0);
        STELE_ASSERT(a->events[i].metadata || a->events[i].metadata_len == 0);
    }
#endif
}

void backend_assert_multi(const multi_args *m)
{
    STELE_ASSERT(m && m->streams && m->nstreams >= 1 && m->nstreams <= STELE_MAX_APPEND_STREAMS);
    STELE_ASSERT(m->records && m->nrecords >= 1 && m->ids && m->made);
#if STELE_DEBUG_ASSERTS_ON
    size_t events = 0;
    for (size_t i = 0; i < m->nstreams; i++) {
        STELE_ASSERT(m->streams[i].stream && m->streams[i].len >= 1 &&
                     m->streams[i].len <= BACKEND_NAME_MAX);
        events += m->streams[i].nevents;
    }
    STELE_ASSERT(events == m->nrecords);
    for (size_t k = 0; k < m->nrecords; k++)
        STELE_ASSERT(m->records[k].stream < m->nstreams && m->made[k] <= 1 &&
                     !uuid_is_nil(m->ids[k]));
#endif
}

void backend_assert_remove(const char *stream, size_t len, int64_t expected)
{
    STELE_ASSERT(stream && len >= 1 && len <= BACKEND_NAME_MAX && expected_ok(expected));
}
