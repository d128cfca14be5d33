/*
 * fuzz_h2.c - HTTP/2 frames through the real server's nghttp2 session
 * (server/h2.c, then server/grpc*.c for whatever call the frames make):
 * the driver sends the client preface, then the input as the frames that
 * follow it, on one connection to a server running in a thread of this
 * process (fuzz/harness.c), and reads until the server closes or goes
 * quiet.
 *
 * Left out: inputs naming Operations/Shutdown (it would stop the server
 * under the fuzzer; HPACK may hide the name in Huffman code, which is
 * unlikely enough not to matter).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static int port = -1;
static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (port < 0) {
        server_config cfg;
        fz_server_config(&cfg);
        port = fz_server_start(&cfg);
    }
    if (memmem(data, size, "Shutdown", 8))
        return 0;
    size_t n = sizeof preface - 1;
    uint8_t *msg = malloc(n + size);
    if (!msg)
        return 0;
    memcpy(msg, preface, n);
    memcpy(msg + n, data, size);
    fz_exchange(port, msg, n + size, 50);
    free(msg);
    return 0;
}
