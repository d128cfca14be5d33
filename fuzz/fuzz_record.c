/*
 * fuzz_record.c - the log's decoders (src/log/record.c): a segment header
 * of either version (seg_header_read) and the records after it, walked the
 * way recovery and readers walk a segment (rec_decode at each offset, on
 * by the record's length). The input is the file's bytes from offset 0.
 *
 * A random input almost never carries a right CRC, which would keep the
 * fuzzer at the checksum; so when the first byte of the input is odd, the
 * driver first writes the right crc32c into every record it can frame (the
 * checksums of a real file), and the body checks behind the CRC get fuzzed
 * too. rec_decode_trusted (no CRC) runs on the same bytes. Records are
 * decoded with the bytes before them (rec_decode_in), so a kind 9 record
 * resolves its stream and type from earlier records as readers do; one
 * whose holder is not there (REC_FAR) is checked for what it does hold.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log/record.h"
#include "util/util.h"

static void check_rec(const rec *r, uint64_t avail)
{
    /* What a reader relies on after REC_OK: the parts lie inside the
     * record, and the record inside the bytes given. */
    if (r->len < REC_MIN_SIZE || r->len > avail || r->len % REC_ALIGN)
        abort();
    if (r->stream && r->stream[r->stream_len] != 0)
        abort();
    if (r->type && r->type[r->type_len] != 0)
        abort();
    if (r->kind == REC_EVENT && r->meta + r->meta_len > r->at + r->len)
        abort();
    /* Far fields are only of kind 9 records, whose back distances then
     * point before the record. */
    if (r->far && (r->compact != 2 || ((r->far & REC_FAR_STREAM) && !r->stream_back) ||
                   ((r->far & REC_FAR_TYPE) && !r->type_back)))
        abort();
}

/* A compact record has one encoding: encoding what it decoded to gives
 * its bytes back (the CRC aside, which the trusted walk does not check). */
static void check_compact(const rec *r)
{
    if (!r->compact || r->far)
        return;
    const char *tags[64];
    char type[65536];
    const uint8_t *t = r->tags;
    if (r->ntags > 64)
        return;
    /* The encoder takes C strings: a NUL inside a type or tag (which the
     * API never lets through) would not survive the trip. */
    if (memchr(r->type, 0, r->type_len))
        return;
    for (unsigned i = 0; i < r->ntags; i++) {
        tags[i] = (const char *)t + 2;
        if (memchr(t + 2, 0, ld16(t)))
            return;
        t += 3 + ld16(t);
    }
    memcpy(type, r->type, r->type_len);
    type[r->type_len] = 0;
    stele_event_in ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.tags = tags;
    ev.ntags = r->ntags;
    ev.data = r->data;
    ev.data_len = r->data_len;
    ev.metadata = r->meta;
    ev.metadata_len = r->meta_len;
    uint8_t *out = malloc(r->len);
    if (!out)
        return;
    rec_set_event_kind(REC_COMPACT);
    size_t n = rec_encode_event_shared(out, r->stream, r->stream_len, &ev, r->id, r->flags,
                                       r->commit_count, r->commit_index, r->position,
                                       r->revision, r->created_us, r->stream_back, r->type_back);
    if (n != r->len || ld32(out) != ld32(r->at) || memcmp(out + 8, r->at + 8, n - 8))
        abort();
    free(out);
}

static void walk(const uint8_t *p, size_t n, int trusted)
{
    size_t off = 0;
    while (off + 4 <= n) {
        rec r;
        const char *why = NULL;
        rec_status st = trusted ? rec_decode_trusted_in(p, off, n - off, &r, &why)
                                : rec_decode_in(p, off, n - off, &r, &why);
        if (st != REC_OK && st != REC_FAR) {
            if (st == REC_BAD && !why)
                abort(); /* REC_BAD always says why */
            break;
        }
        check_rec(&r, n - off);
        check_compact(&r);
        off += r.len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fix_crc = data[0] & 1;
    uint8_t *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    memcpy(p, data, size);

    if (size >= SEG_HEADER_SIZE) {
        seg_info si;
        uint64_t segno, first;
        (void)seg_header_read(p, &si);
        (void)seg_header_decode(p, &segno, &first);
    }
    /* Records start after a segment header when there is one, else at 0. */
    size_t start = size >= SEG_HEADER_SIZE && !memcmp(p, SEG_MAGIC, 8) ? SEG_HEADER_SIZE : 0;
    if (fix_crc) {
        size_t off = start;
        while (off + REC_MIN_SIZE <= size) {
            uint32_t len = ld32(p + off);
            if (len < REC_MIN_SIZE || len % REC_ALIGN || len > size - off)
                break;
            st32(p + off + 4, crc32c(0, p + off + 8, len - 8));
            off += len;
        }
    }
    walk(p + start, size - start, 0);
    walk(p + start, size - start, 1);
    free(p);
    return 0;
}
