/*
 * pg_retry.c - is an append that repeats written event ids the same
 * append, or a different one reusing them? (PostgreSQL's side of
 * local_retry.c; docs/consistency.md has the rule.)
 *
 * The writer (pg_write.c, in its first round trip) and multi-stream
 * appends (pg_multi.c, pgw_lookup_ids) look up the client-given ids of
 * what they are about to write with one statement (PGW_IDS_SQL). Only ids already written come back, so an append of
 * new ids pays for one index probe per id and nothing else; a row that
 * does come back carries the stored event's type, data, metadata, flags
 * and tags as well, so the retry check needs no second round trip.
 *
 * A retry is first recognised by the ids' places (the same stream, the
 * revisions the expectation names, the same append: commit_index and
 * commit_count), then each stored event is compared with the one offered
 * again (pgw_retry_diff): type, data, metadata and tags byte for byte, and
 * the JSON content flags. The id's text form (UUID or ULID) is not part of
 * the event. A difference is EIDCONFLICT naming the event and the part, so
 * a client reusing an id for new data is told rather than silently given
 * the original's result.
 *
 * Events a scavenge removed are not found by their ids any more: the
 * append is then planned as a new one (PostgreSQL keeps no id of a
 * removed event); docs/backends.md says so.
 */
#ifdef STELE_WITH_POSTGRES
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg_write.h"
#include "util/util.h"

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int pgw_ids_from(PGresult *r, idrow **out, size_t *nout)
{
    size_t n = (size_t)PQntuples(r);
    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    idrow *ids = calloc(n, sizeof *ids);
    if (!ids)
        return err_set(STELE_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        int row = (int)i;
        memcpy(ids[i].id, PQgetvalue(r, row, 0), 16);
        snprintf(ids[i].stream, sizeof ids[i].stream, "%.*s", PQgetlength(r, row, 1),
                 PQgetvalue(r, row, 1));
        ids[i].rev = pg_u64(r, row, 2);
        ids[i].pos = pg_u64(r, row, 3);
        ids[i].ci = pg_i32(r, row, 4);
        ids[i].cc = pg_i32(r, row, 5);
        ids[i].src = r;
        ids[i].row = row;
    }
    *out = ids;
    *nout = n;
    return 0;
}

int pgw_lookup_ids(PGconn *c, const char *idarr, idrow **out, size_t *nout, PGresult **keep,
                   char state[6])
{
    const char *v[1] = {idarr};
    PGresult *r = NULL;
    *out = NULL;
    *nout = 0;
    *keep = NULL;
    int rc = pgw_wexec(c, PGW_IDS_SQL, 1, v, NULL, NULL, 1, &r, "looking up event ids", state);
    if (rc == 0 && (rc = pgw_ids_from(r, out, nout)) == 0)
        *keep = r;
    else if (r)
        PQclear(r);
    return rc;
}

/* Whether the binary text[] `a` (alen bytes) holds exactly y's tags. */
static int tags_equal(const uint8_t *a, int alen, const stele_event_in *y)
{
    if (alen < 12)
        return 0;
    uint32_t ndim = rd32(a);
    if (ndim == 0)
        return y->ntags == 0;
    if (ndim != 1 || alen < 20 || rd32(a + 12) != y->ntags)
        return 0;
    const uint8_t *p = a + 20, *end = a + alen;
    for (size_t t = 0; t < y->ntags; t++) {
        if (p + 4 > end)
            return 0;
        uint32_t l = rd32(p);
        p += 4;
        size_t yl = strlen(y->tags[t]);
        if (l == 0xffffffffu || l != yl || p + l > end || memcmp(p, y->tags[t], yl))
            return 0;
        p += l;
    }
    return 1;
}

const char *pgw_retry_diff(const idrow *f, const stele_event_in *y)
{
    const PGresult *r = f->src;
    int i = f->row;
    const uint32_t fm = STELE_EVENT_JSON | STELE_META_JSON;
    size_t tl = strlen(y->type);
    if ((size_t)PQgetlength(r, i, 6) != tl || memcmp(PQgetvalue(r, i, 6), y->type, tl))
        return "type";
    if ((size_t)PQgetlength(r, i, 7) != y->data_len ||
        (y->data_len && memcmp(PQgetvalue(r, i, 7), y->data, y->data_len)))
        return "data";
    if ((size_t)PQgetlength(r, i, 8) != y->metadata_len ||
        (y->metadata_len && memcmp(PQgetvalue(r, i, 8), y->metadata, y->metadata_len)))
        return "metadata";
    uint32_t flags = PQgetlength(r, i, 9) == 2 ? (uint8_t)PQgetvalue(r, i, 9)[1] : 0;
    if ((flags & fm) != (y->flags & fm))
        return "content type";
    if (!tags_equal((const uint8_t *)PQgetvalue(r, i, 10), PQgetlength(r, i, 10), y))
        return "tags";
    return NULL;
}

int pgw_retry_conflict(const uint8_t id[16], const char *stream, uint64_t rev, const char *part)
{
    char idt[37];
    stele_uuid_format(id, idt);
    return err_set(STELE_EIDCONFLICT,
                   "event id %s was already written at revision %llu of '%s' with a different "
                   "%s; an event id names one event: use a new id for new data",
                   idt, (unsigned long long)rev, stream, part);
}

#endif /* STELE_WITH_POSTGRES */
