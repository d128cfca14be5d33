/*
 * example.c - the smallest use of libstele: open a store, append two
 * events to a stream with an expected revision, read them back, and read
 * the end of $all. `make run` runs it until the server exists.
 */
#include <stdio.h>
#include <string.h>

#include "stele.h"

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "./data";
    stele_db *db;
    int rc = stele_open(dir, NULL, &db);
    if (rc) {
        fprintf(stderr, "open %s: %s\n", dir, stele_errmsg());
        return 1;
    }
    stele_stream_info info;
    int64_t expected = STELE_NO_STREAM;
    if (stele_stream_head(db, "Order-1", &info) == 0 && !info.deleted)
        expected = (int64_t)info.last_revision;

    const char *placed = "{\"orderId\":\"1\",\"total\":42}";
    const char *paid = "{\"orderId\":\"1\",\"amount\":42}";
    const char *meta = "{\"$correlationId\":\"c-1\",\"$actor\":\"alice\"}";
    stele_event_in ev[2] = {
        {.type = "OrderPlaced", .data = placed, .data_len = strlen(placed), .metadata = meta,
         .metadata_len = strlen(meta), .flags = STELE_EVENT_JSON | STELE_META_JSON},
        {.type = "OrderPaid", .data = paid, .data_len = strlen(paid), .metadata = meta,
         .metadata_len = strlen(meta), .flags = STELE_EVENT_JSON | STELE_META_JSON},
    };
    stele_append_result res;
    rc = stele_append(db, "Order-1", expected, ev, 2, &res);
    if (rc) {
        fprintf(stderr, "append: %s\n", stele_errmsg());
        stele_close(db);
        return 1;
    }
    printf("appended revisions %llu..%llu at positions %llu..%llu (durable)\n",
           (unsigned long long)res.first_revision, (unsigned long long)res.last_revision,
           (unsigned long long)res.first_position, (unsigned long long)res.last_position);

    stele_page *page;
    if (stele_read_stream(db, "Order-1", STELE_END, STELE_BACKWARDS, 4, &page) == 0) {
        printf("last events of Order-1:\n");
        for (size_t i = 0; i < stele_page_count(page); i++) {
            const stele_event *e = stele_page_event(page, i);
            char id[37];
            stele_uuid_format(e->id, id);
            printf("  rev %llu pos %llu %s %s %.*s\n", (unsigned long long)e->revision,
                   (unsigned long long)e->position, id, e->type, (int)e->data_len,
                   (const char *)e->data);
        }
        stele_page_free(page);
    }
    stele_stats st;
    if (stele_get_stats(db, &st) == 0)
        printf("store %s: %llu events in %llu streams, %llu segment(s)\n", dir,
               (unsigned long long)st.events, (unsigned long long)st.streams,
               (unsigned long long)st.segments);
    stele_close(db);
    return 0;
}
