/*
 * pg_open.c - choosing the backend from a store URI, until the backend
 * contract's registry replaces it: "postgres://..." and "postgresql://..."
 * (any libpq connection URI) open the PostgreSQL backend, anything else is
 * the local engine's directory.
 */
#include <string.h>

#include "backend/backend.h"
#include "util/util.h"

#ifdef STELE_WITH_POSTGRES
int pg_open(const char *uri, const stele_options *opts, backend **out);
#endif

int backend_is_postgres(const char *uri)
{
    return strncmp(uri, "postgres://", 11) == 0 || strncmp(uri, "postgresql://", 13) == 0;
}

int backend_open(const char *uri, const stele_options *opts, backend **out)
{
    if (backend_is_postgres(uri)) {
#ifdef STELE_WITH_POSTGRES
        return pg_open(uri, opts, out);
#else
        return err_set(STELE_EINVAL, "this build has no PostgreSQL backend (STELE_TARGET_POSTGRES=OFF)");
#endif
    }
    return local_open(uri, opts, out);
}
