/*
 * fuzz_http.c - HTTP/1.1 requests through the real server (server/http.c,
 * its parser callbacks and limits, then routing and the routes'
 * decoding of paths, query strings, headers such as Last-Event-ID and
 * bodies: server/routes*.c, urlcode.c, json.c, json_doc.c, guard.c,
 * subscribe.c). The input is the bytes a client sends on one connection
 * (pipelined requests included); the server runs in a thread of this
 * process on a scratch store, and the answer is read until the server
 * closes or goes quiet (an event stream stays open: it is cut).
 *
 * Left out: requests naming /admin/ (the admin jobs): a backup writes to
 * any directory the request names, which a fuzzer must not do to the
 * machine it runs on. A crash of the server thread is a crash of this
 * process, which is what libFuzzer reports.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static int port = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (port < 0) {
        server_config cfg;
        fz_server_config(&cfg);
        cfg.max_body_bytes = 1u << 20;
        port = fz_server_start(&cfg);
    }
    if (memmem(data, size, "/admin", 6))
        return 0;
    fz_exchange(port, data, size, 50);
    return 0;
}
