/*
 * streams.c - the API edge of stream metadata and snapshots
 * (include/stele.h, docs/streams.md): every argument is checked here with
 * a precise message before the backend sees it, as store.c does for
 * appends and reads. The rules that need the stream's state (revision
 * beyond the head, tombstones, expected metadata version, retention of
 * snapshots) are the backend's, since it decides them atomically.
 */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"
#include "util/util.h"

static int check_version(int64_t expected)
{
    if (expected >= 0 || expected == STELE_ANY || expected == STELE_NO_STREAM ||
        expected == STELE_STREAM_EXISTS)
        return 0;
    return err_set(STELE_EINVAL,
                   "expected metadata version %lld is not a version, STELE_ANY, STELE_NO_STREAM "
                   "or STELE_STREAM_EXISTS",
                   (long long)expected);
}

static int set_metadata(stele_db *db, const char *stream, const stele_stream_metadata *md,
                        int64_t expected_version, uint64_t *version, int sys)
{
    err_clear();
    size_t slen;
    if (version)
        *version = STELE_NONE;
    if (!db || !md)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "md");
    int rc = sys ? store_check_read_stream(stream, &slen) : check_stream(stream, &slen);
    if (rc == 0)
        rc = check_version(expected_version);
    if (rc)
        return rc;
    if (md->max_age_us > INT64_MAX)
        return err_set(STELE_EINVAL, "max_age_us %llu is larger than %lld",
                       (unsigned long long)md->max_age_us, (long long)INT64_MAX);
    if (md->max_count > INT64_MAX)
        return err_set(STELE_EINVAL, "max_count %llu is larger than %lld",
                       (unsigned long long)md->max_count, (long long)INT64_MAX);
    if (md->truncate_before > INT64_MAX)
        return err_set(STELE_EINVAL, "truncate_before %llu is larger than %lld",
                       (unsigned long long)md->truncate_before, (long long)INT64_MAX);
    if (md->max_snapshots > STELE_MAX_SNAPSHOTS_LIMIT)
        return err_set(STELE_EINVAL, "max_snapshots %u is larger than %u", md->max_snapshots,
                       STELE_MAX_SNAPSHOTS_LIMIT);
    if (md->custom_len && !md->custom)
        return err_set(STELE_EINVAL, "custom is NULL with a non-zero length");
    if (md->custom_len > STELE_MAX_CUSTOM_METADATA)
        return err_set(STELE_ETOOBIG, "custom metadata is %zu bytes, more than the %u-byte limit",
                       md->custom_len, STELE_MAX_CUSTOM_METADATA);
    if (md->custom_len &&
        (rc = meta_json_check_custom(md->custom, md->custom_len, STELE_MAX_CUSTOM_FIELDS)))
        return rc;
    return db->be->ops->set_metadata(db->be, stream, slen, md, expected_version, version);
}

int stele_set_stream_metadata(stele_db *db, const char *stream, const stele_stream_metadata *md,
                              int64_t expected_version, uint64_t *version)
{
    return set_metadata(db, stream, md, expected_version, version, 0);
}

int store_set_metadata_system(stele_db *db, const char *stream, const stele_stream_metadata *md,
                              int64_t expected_version, uint64_t *version)
{
    return set_metadata(db, stream, md, expected_version, version, 1);
}

static int get_metadata(stele_db *db, const char *stream, stele_stream_metadata **out, int sys)
{
    err_clear();
    size_t slen;
    if (!db || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "out");
    *out = NULL;
    int rc = sys ? store_check_read_stream(stream, &slen) : check_stream(stream, &slen);
    if (rc)
        return rc;
    return db->be->ops->get_metadata(db->be, stream, slen, out);
}

int stele_get_stream_metadata(stele_db *db, const char *stream, stele_stream_metadata **out)
{
    return get_metadata(db, stream, out, 0);
}

int store_get_metadata_system(stele_db *db, const char *stream, stele_stream_metadata **out)
{
    return get_metadata(db, stream, out, 1);
}

int stele_put_snapshot(stele_db *db, const char *stream, const stele_snapshot_in *snap)
{
    err_clear();
    size_t slen;
    if (!db || !snap)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "snap");
    int rc = check_stream(stream, &slen);
    if (rc)
        return rc;
    if (snap->flags & ~(uint32_t)STELE_EVENT_JSON)
        return err_set(STELE_EINVAL, "snapshot: unknown flags 0x%x (only STELE_EVENT_JSON)",
                       snap->flags);
    if (snap->state_len && !snap->state)
        return err_set(STELE_EINVAL, "snapshot: state is NULL with a non-zero length");
    if ((snap->flags & STELE_EVENT_JSON) && !snap->state_len)
        return err_set(STELE_EINVAL, "snapshot: a JSON state cannot be empty");
    if (snap->state_len > db->opts.max_event_size)
        return err_set(STELE_ETOOBIG, "snapshot: state is %zu bytes, more than the %llu-byte limit",
                       snap->state_len, (unsigned long long)db->opts.max_event_size);
    if (snap->revision > INT64_MAX)
        return err_set(STELE_EINVAL, "snapshot: revision %llu is larger than %lld",
                       (unsigned long long)snap->revision, (long long)INT64_MAX);
    return db->be->ops->put_snapshot(db->be, stream, slen, snap);
}

int stele_get_snapshot(stele_db *db, const char *stream, uint64_t at_or_before,
                       stele_snapshot **out)
{
    err_clear();
    size_t slen;
    if (!db || !out)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "out");
    *out = NULL;
    int rc = check_stream(stream, &slen);
    if (rc)
        return rc;
    return db->be->ops->get_snapshot(db->be, stream, slen, at_or_before, out);
}

int stele_load_stream(stele_db *db, const char *stream, size_t limit, stele_snapshot **snap,
                      stele_page **events)
{
    err_clear();
    size_t slen;
    if (!db || !snap || !events)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : !snap ? "snap" : "events");
    *snap = NULL;
    *events = NULL;
    int rc = check_stream(stream, &slen);
    if (rc)
        return rc;
    return db->be->ops->load(db->be, stream, slen, limit, snap, events);
}

void stele_free(void *p) { free(p); }
