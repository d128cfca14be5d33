/*
 * fuzz_grpc.c - the gRPC request messages (server/grpc.c's framing and
 * protobuf-c decoding, then each method's handler in grpc_streams.c,
 * grpc_read.c, grpc_persistent.c, grpc_projections.c, grpc_users.c,
 * grpc_v2.c) through the real server. The driver makes a well-formed
 * HTTP/2 call so the fuzzed bytes are the messages, not the framing:
 *
 *   input = method index (1 byte, modulo the table below), then messages,
 *           each a 2-byte little-endian length and that many bytes (the
 *           last one takes what is left if it is shorter)
 *
 * sent as the client preface, an empty SETTINGS frame, a HEADERS frame
 * (HPACK literals: POST, the method's path, application/grpc) and one
 * DATA frame per message with gRPC's 5-byte length prefix, the last with
 * END_STREAM. Operations/Shutdown is left out (it would stop the server
 * under the fuzzer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "util/shared.h"

static const char *const methods[] = {
    "/event_store.client.streams.Streams/Read",
    "/event_store.client.streams.Streams/Append",
    "/event_store.client.streams.Streams/BatchAppend",
    "/event_store.client.streams.Streams/Delete",
    "/event_store.client.streams.Streams/Tombstone",
    "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
    "/event_store.client.gossip.Gossip/Read",
    "/event_store.client.operations.Operations/StartScavenge",
    "/event_store.client.operations.Operations/StopScavenge",
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Create",
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Update",
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Delete",
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Read",
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/GetInfo",
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/ReplayParked",
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/List",
    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/RestartSubsystem",
    "/event_store.client.projections.Projections/Create",
    "/event_store.client.projections.Projections/Update",
    "/event_store.client.projections.Projections/Delete",
    "/event_store.client.projections.Projections/Statistics",
    "/event_store.client.projections.Projections/Disable",
    "/event_store.client.projections.Projections/Enable",
    "/event_store.client.projections.Projections/Reset",
    "/event_store.client.projections.Projections/State",
    "/event_store.client.projections.Projections/Result",
    "/event_store.client.projections.Projections/RestartSubsystem",
    "/event_store.client.users.Users/Create",
    "/event_store.client.users.Users/Update",
    "/event_store.client.users.Users/Delete",
    "/event_store.client.users.Users/Disable",
    "/event_store.client.users.Users/Enable",
    "/event_store.client.users.Users/Details",
    "/event_store.client.users.Users/ChangePassword",
    "/event_store.client.users.Users/ResetPassword",
    "/kurrentdb.protocol.v2.streams.StreamsService/AppendSession",
    "/kurrentdb.protocol.v2.streams.StreamsService/Append",
    "/kurrentdb.protocol.v2.streams.StreamsService/AppendRecords",
};
#define NMETHODS (sizeof methods / sizeof *methods)

static int port = -1;

typedef struct out {
    uint8_t *p;
    size_t len, cap;
} out;

static void put(out *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t nc = (o->len + n) * 2 + 256;
        uint8_t *np = realloc(o->p, nc);
        if (!np)
            abort();
        o->p = np;
        o->cap = nc;
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void frame_head(out *o, size_t len, uint8_t type, uint8_t flags, uint32_t stream)
{
    uint8_t h[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, type, flags,
                    (uint8_t)(stream >> 24), (uint8_t)(stream >> 16), (uint8_t)(stream >> 8),
                    (uint8_t)stream};
    put(o, h, 9);
}

/* HPACK: a literal header field without indexing, new name, no Huffman
 * (RFC 7541 6.2.2); names and values here are shorter than 127 bytes. */
static void hpack_lit(out *o, const char *name, const char *value)
{
    uint8_t b = 0;
    put(o, &b, 1);
    b = (uint8_t)strlen(name);
    put(o, &b, 1);
    put(o, name, strlen(name));
    b = (uint8_t)strlen(value);
    put(o, &b, 1);
    put(o, value, strlen(value));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (port < 0) {
        server_config cfg;
        fz_server_config(&cfg);
        port = fz_server_start(&cfg);
    }
    const char *path = methods[data[0] % NMETHODS];
    out o = {0};
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    put(&o, preface, sizeof preface - 1);
    frame_head(&o, 0, 0x4, 0, 0); /* SETTINGS */
    out hb = {0};
    hpack_lit(&hb, ":method", "POST");
    hpack_lit(&hb, ":scheme", "http");
    hpack_lit(&hb, ":path", path);
    hpack_lit(&hb, ":authority", "localhost");
    hpack_lit(&hb, "content-type", "application/grpc");
    hpack_lit(&hb, "te", "trailers");
    frame_head(&o, hb.len, 0x1, 0x4, 1); /* HEADERS, END_HEADERS */
    put(&o, hb.p, hb.len);
    free(hb.p);
    size_t off = 1;
    do {
        size_t n = 0;
        if (size - off >= 2) {
            n = (size_t)data[off] | (size_t)data[off + 1] << 8;
            off += 2;
        } else {
            off = size;
        }
        if (n > size - off)
            n = size - off;
        if (n > 16384 - 5)
            n = 16384 - 5; /* one DATA frame within the default frame size */
        int last = off + n >= size;
        uint8_t g[5] = {0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                        (uint8_t)n};
        frame_head(&o, 5 + n, 0x0, last ? 0x1 : 0, 1); /* DATA */
        put(&o, g, 5);
        put(&o, data + off, n);
        off += n;
    } while (off < size);
    fz_exchange(port, o.p, o.len, 50);
    free(o.p);
    return 0;
}
