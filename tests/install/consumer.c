/*
 * consumer.c - a program outside the source tree that uses the installed
 * library: built by tests/install/test_install.sh with nothing but
 * `pkg-config --cflags --libs stele`, it appends an event and reads it back.
 */
#include <stdio.h>
#include <string.h>

#include <stele.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: consumer DIR\n");
        return 2;
    }
    stele_db *db;
    if (stele_open(argv[1], NULL, &db) != 0) {
        fprintf(stderr, "open: %s\n", stele_errmsg());
        return 1;
    }
    stele_event_in ev = {.type = "Installed", .data = "{\"ok\":true}", .data_len = 11,
                         .flags = STELE_EVENT_JSON};
    stele_append_result res;
    int rc = stele_append(db, "Install-1", STELE_NO_STREAM, &ev, 1, &res);
    if (rc != 0) {
        fprintf(stderr, "append: %s: %s\n", stele_errname(rc), stele_errmsg());
        stele_close(db);
        return 1;
    }
    stele_page *pg;
    rc = stele_read_stream(db, "Install-1", 0, STELE_FORWARDS, 10, &pg);
    if (rc != 0 || stele_page_count(pg) != 1) {
        fprintf(stderr, "read: %s\n", stele_errmsg());
        stele_close(db);
        return 1;
    }
    const stele_event *e = stele_page_event(pg, 0);
    int ok = e->data_len == 11 && memcmp(e->data, "{\"ok\":true}", 11) == 0 &&
             !strcmp(e->type, "Installed");
    printf("%s %s revision %llu position %llu\n", STELE_VERSION, ok ? "ok" : "MISMATCH",
           (unsigned long long)e->revision, (unsigned long long)e->position);
    stele_page_free(pg);
    stele_close(db);
    return ok ? 0 : 1;
}
