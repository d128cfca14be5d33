/*
 * backup.c - the public edge of backups and restores (include/stele.h,
 * "backup and restore"; docs/operations.md): arguments are checked here,
 * then the backend copies (stele_backup: an open store's own backend, the
 * local engine's local_backup.c; other backends have none and are backed
 * up with their database's tools) or the local engine writes a new store's
 * log from a backup (local_restore.c), which this layer then opens, so
 * that the engine rebuilds the indexes, and checks like any store.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "stele.h"
#include "store/store_int.h"
#include "util/util.h"

/* The bounds stele_open accepts for a segment size (store.c). */
#define RESTORE_MIN_SEGMENT (64ull << 10)
#define RESTORE_MAX_SEGMENT (2ull << 30)

int stele_backup(stele_db *db, const char *dest, const stele_backup_options *opts,
                 stele_backup_result *res)
{
    err_clear();
    stele_backup_result tmp;
    if (!res)
        res = &tmp;
    memset(res, 0, sizeof *res);
    if (!db || !dest || !*dest)
        return err_set(STELE_EINVAL, "%s is NULL or empty", !db ? "db" : "dest");
    if (strlen(dest) > 3000)
        return err_set(STELE_EINVAL, "backup destination path is longer than 3000 bytes");
    if (opts && (opts->flags & ~STELE_BACKUP_ARCHIVE))
        return err_set(STELE_EINVAL, "unknown backup flags 0x%x", opts->flags);
    if (!db->be->ops->backup)
        return err_set(STELE_EINVAL, "this store's backend has no backup of its own: back its "
                       "database up with the database's tools (docs/operations.md)");
    return db->be->ops->backup(db->be, dest, opts, res);
}

int stele_backup_verify(const char *src, char *report, size_t report_len)
{
    err_clear();
    if (!src || !*src)
        return err_set(STELE_EINVAL, "src is NULL or empty");
    return local_backup_verify(src, report, report_len);
}

int stele_restore(const char *src, const char *dir, const stele_restore_options *opts,
                  stele_restore_result *res)
{
    err_clear();
    stele_restore_result tmp;
    if (!res)
        res = &tmp;
    memset(res, 0, sizeof *res);
    if (!src || !*src || !dir || !*dir)
        return err_set(STELE_EINVAL, "%s is NULL or empty", !src || !*src ? "src" : "dir");
    if (strlen(src) > 3000 || strlen(dir) > 3000)
        return err_set(STELE_EINVAL, "a path is longer than 3000 bytes");
    if (opts && (opts->flags & ~(STELE_RESTORE_TO_POSITION | STELE_RESTORE_TO_TIME)))
        return err_set(STELE_EINVAL, "unknown restore flags 0x%x", opts->flags);
    if (opts && (opts->flags & STELE_RESTORE_TO_POSITION) && (opts->flags & STELE_RESTORE_TO_TIME))
        return err_set(STELE_EINVAL, "restore to a position or to a time, not both");
    uint64_t t0 = time_mono_ns(), seg_size = 0;
    int rc = local_restore(src, dir, opts, res, &seg_size);
    if (rc)
        return rc;
    /* Opening the new store rebuilds its indexes from the log; then it
     * must pass the same check as any store. */
    stele_options o = {.segment_size = seg_size >= RESTORE_MIN_SEGMENT && seg_size <= RESTORE_MAX_SEGMENT
                                           ? seg_size
                                           : 0,
                       .flags = STELE_OPEN_NOCREATE};
    stele_db *db;
    rc = stele_open(dir, &o, &db);
    if (rc)
        return err_set(rc, "restored store %s does not open: %s", dir, stele_errmsg());
    stele_close(db);
    char report[512];
    rc = local_check(dir, report, sizeof report);
    if (rc)
        return err_set(rc, "restored store %s fails its check: %s", dir, stele_errmsg());
    res->duration_us = (time_mono_ns() - t0) / 1000;
    return 0;
}
