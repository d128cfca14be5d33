/*
 * views.c - the API edge of the system view streams ($ce-{category},
 * $et-{type}, $bc-{correlationId}, $streams; include/stele.h): which names
 * are views, and reading them through the backend's read_view. Views live
 * here, in the library, so every door (HTTP, gRPC, the CLI) and the
 * projections read them the same way, through stele_read_stream() and
 * stele_subscribe_stream().
 */
#include <string.h>

#include "backend/page.h"
#include "store/store_int.h"
#include "util/util.h"

int store_view_parse(const char *stream, size_t len, int *kind, const char **key,
                     size_t *key_len)
{
    static const struct {
        const char *prefix;
        int kind;
    } views[] = {
        {"$ce-", STELE_QUERY_CATEGORY},
        {"$et-", STELE_QUERY_TYPE},
        {"$bc-", STELE_QUERY_CORRELATION},
    };
    if (len == 8 && !memcmp(stream, "$streams", 8)) {
        *kind = VIEW_STREAMS;
        *key = NULL;
        *key_len = 0;
        return 1;
    }
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        if (len < 4 || memcmp(stream, views[i].prefix, 4))
            continue;
        *kind = views[i].kind;
        *key = stream + 4;
        *key_len = len - 4;
        return 1;
    }
    return 0;
}

int store_view_check(const char *stream, size_t len, int *kind, const char **key,
                     size_t *klen)
{
    if (!store_view_parse(stream, len, kind, key, klen))
        return err_set(STELE_EINVAL, "'%s' is not a view stream", stream);
    if (*kind != VIEW_STREAMS && *klen == 0)
        return err_set(STELE_EINVAL, "view stream '%s' needs %s after the '-'", stream,
                       *kind == STELE_QUERY_CATEGORY ? "a category"
                       : *kind == STELE_QUERY_TYPE   ? "an event type"
                                                    : "a correlation id");
    return 0;
}

int store_read_view(stele_db *db, const char *stream, size_t len, uint64_t from, int backwards,
                    size_t limit, stele_page **out)
{
    int kind;
    const char *key;
    size_t klen;
    int rc = store_view_check(stream, len, &kind, &key, &klen);
    if (rc)
        return rc;
    if (!db->be->ops->read_view)
        return err_set(STELE_EINVAL, "the %s backend has no view streams", db->be->ops->name);
    stele_page *pg;
    rc = db->be->ops->read_view(db->be, kind, key, klen, from, backwards, limit, &pg);
    if (rc)
        return rc;
    if ((rc = page_set_view(pg, stream, len))) {
        stele_page_free(pg);
        return rc;
    }
    *out = pg;
    return 0;
}
