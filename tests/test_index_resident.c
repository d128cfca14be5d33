/*
 * test_index_resident.c - the index drops its map's pages from the
 * process's resident set (src/index/index.c, "Resident pages") and loses
 * nothing by it.
 *
 *   drop     40,000 stream entries written in 40 transactions without
 *            dropping: data.mdb's mapping is resident (smaps Rss); then a
 *            drop is due (IDX_RESIDENT_MAX lowered to 1 MiB, the last drop
 *            made long ago): idx_reserve() leaves less than a tenth of
 *            it resident, and every entry reads back the same.
 *   dirty    entries rewritten and committed (dirty pages of a MAP_SHARED
 *            WRITEMAP map, never synced), dropped at once, more written on
 *            the refaulted pages, dropped again, then the index closed
 *            and opened again: every entry has its newest value.
 *   off      STELE_INDEX_RESIDENT_MB=0 never drops.
 *
 * Nothing here depends on time: the test sets the time of the last drop
 * instead of waiting for the second between drops.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"

#define N 40000
#define PER_TXN 1000

/* kB of data.mdb's mapping resident in this process (smaps Rss); -1 if
 * the mapping is not found. */
static long mapped_kb(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[4352];
    long kb = -1;
    int in = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long a, b;
        if (sscanf(line, "%llx-%llx ", &a, &b) == 2 && strchr(line, '/'))
            in = strstr(line, "/index/data.mdb") != NULL;
        else if (sscanf(line, "%llx-%llx ", &a, &b) == 2)
            in = 0;
        long v;
        if (in && sscanf(line, "Rss: %ld kB", &v) == 1)
            kb = (kb < 0 ? 0 : kb) + v;
    }
    if (f)
        fclose(f);
    return kb;
}

static void name_of(int i, char *out, size_t cap, size_t *len)
{
    *len = (size_t)snprintf(out, cap, "Order-%d-%08x", i, (unsigned)(i * 2654435761u));
}

static void write_all(idx *ix, uint64_t round)
{
    for (int i = 0; i < N; i += PER_TXN) {
        CHECK_OK(idx_reserve(ix));
        MDB_txn *txn;
        CHECK_OK(idx_begin(ix, 0, &txn));
        for (int j = i; j < i + PER_TXN; j++) {
            char name[64];
            size_t len;
            name_of(j, name, sizeof name, &len);
            idx_stream st = {.sid = (uint64_t)j + 1, .last_rev = round, .last_pos = round * N + (uint64_t)j};
            CHECK_OK(idx_stream_put(ix, txn, name, len, &st));
        }
        CHECK_OK(idx_commit_txn(txn));
    }
}

static void read_all(idx *ix, uint64_t round)
{
    MDB_txn *txn;
    CHECK_OK(idx_begin(ix, 1, &txn));
    int bad = 0;
    for (int j = 0; j < N; j++) {
        char name[64];
        size_t len;
        name_of(j, name, sizeof name, &len);
        idx_stream st;
        int rc = idx_stream_get(ix, txn, name, len, &st);
        if (rc || st.sid != (uint64_t)j + 1 || st.last_rev != round ||
            st.last_pos != round * N + (uint64_t)j)
            bad++;
    }
    mdb_txn_abort(txn);
    if (bad)
        fprintf(stderr, "round %llu: %d of %d entries wrong\n", (unsigned long long)round, bad, N);
    CHECK(bad == 0);
}

/* A drop is due at the next idx_reserve. */
static void due(idx *ix)
{
    ix->resident_max = 1u << 20;
    ix->trimmed_ns = 0;
}

int main(void)
{
    const char *dir = t_tmpdir("index_resident");
    idx *ix;
    setenv("STELE_INDEX_MAP_MB", "256", 1);
    CHECK_OK(idx_open(dir, 1, 0, &ix));
    CHECK(ix->map != NULL); /* the mapping was found */

    /* drop */
    ix->resident_max = 0;
    write_all(ix, 1);
    read_all(ix, 1);
    long before = mapped_kb();
    fprintf(stderr, "resident before a drop: %ld kB\n", before);
    CHECK(before > 1024);
    due(ix);
    CHECK_OK(idx_reserve(ix));
    long after = mapped_kb();
    fprintf(stderr, "resident after a drop: %ld kB\n", after);
    CHECK(after >= 0 && after < before / 10);
    read_all(ix, 1);

    /* dirty: rewrite, drop with dirty pages, rewrite again, drop, reopen */
    ix->resident_max = 0;
    write_all(ix, 2);
    due(ix);
    CHECK_OK(idx_reserve(ix));
    read_all(ix, 2);
    ix->resident_max = 0;
    write_all(ix, 3);
    due(ix);
    CHECK_OK(idx_reserve(ix));
    idx_close(ix);
    CHECK_OK(idx_open(dir, 0, 0, &ix));
    read_all(ix, 3);

    /* off: the variable set to 0 never drops */
    idx_close(ix);
    setenv("STELE_INDEX_RESIDENT_MB", "0", 1);
    CHECK_OK(idx_open(dir, 0, 0, &ix));
    CHECK(ix->resident_max == 0);
    read_all(ix, 3);
    long warm = mapped_kb();
    ix->trimmed_ns = 0;
    CHECK_OK(idx_reserve(ix));
    CHECK(mapped_kb() >= warm);
    idx_close(ix);

    t_rmdir(dir);
    if (t_failures)
        fprintf(stderr, "test_index_resident: %d failures\n", (int)t_failures);
    return t_failures != 0;
}
