/*
 * cmd_migrate.c - `stele migrate --store URI`: create or migrate the store
 * a URI names, then exit. On PostgreSQL this creates Stele's tables or
 * brings an older schema up to this build's version (docs/backends.md),
 * as `stele serve` would on its first start; on a directory it creates or
 * recovers the local store. Exit status: 0 done, 1 failed, 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "stele.h"

int cmd_migrate(int argc, char **argv)
{
    const char *uri = getenv("STELE_STORE");
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: stele migrate --store URI\n\n"
                   "Creates the store URI names, or migrates its schema to this build's\n"
                   "version (PostgreSQL: postgres://... or postgresql://...; a directory: the\n"
                   "local engine), then exits. `stele serve` does the same on start; this\n"
                   "lets a deployment do it once, before starting its servers.\n"
                   "STELE_STORE is used when --store is not given.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--store") && i + 1 < argc) {
            uri = argv[++i];
            continue;
        }
        fprintf(stderr, "stele migrate: unexpected argument '%s' (usage: stele migrate --store "
                        "URI)\n",
                argv[i]);
        return 2;
    }
    if (!uri || !*uri) {
        fprintf(stderr, "stele migrate: give --store URI (or STELE_STORE)\n");
        return 2;
    }
    stele_db *db = NULL;
    int orc = stele_open(uri, NULL, &db);
    if (orc) {
        cli_lib_error("migrate", "cannot open the store", orc);
        return 1;
    }
    stele_close(db);
    printf("the store is ready: schema created or migrated\n");
    return 0;
}
