/*
 * record.c - encoding and decoding of log records and segment headers (the
 * layout is drawn in record.h). Decoding is defensive: every length is
 * checked against the record's own length before it is used, so a damaged
 * or hostile file can make rec_decode() say REC_BAD but never read out of
 * bounds.
 *
 * Shared names (kind 9). A kind 9 record names the holders of its stream
 * and type by distance back (in units of REC_ALIGN). decode() checks the
 * record alone and leaves those fields "far"; resolve() then looks for the
 * holders in the bytes before the record when the caller has them
 * (rec_decode_in), and rec_share_apply() takes a field from a holder read
 * elsewhere (log_share_fetch). A holder must be an event of the same
 * commit with the field inline, so a record resolves the same way
 * wherever its holder's bytes come from, and never through a chain.
 */
#include "log/record.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static uint64_t pad8(uint64_t n) { return (n + (REC_ALIGN - 1)) & ~(uint64_t)(REC_ALIGN - 1); }

/* ------------------------------------------------------------- varints */

/* Unsigned LEB128: 7 bits a byte, low first, the high bit set on every
 * byte but the last. Always the shortest form (the decoder refuses
 * others, so a record has one encoding). */
static unsigned varint_len(uint64_t v)
{
    /* 7 bits a byte: the bits v needs, rounded up to sevens. */
    unsigned bits = 64 - (unsigned)__builtin_clzll(v | 1);
    return (bits + 6) / 7;
}

static uint8_t *varint_put(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* The varint at *q (before end): its value, *q moved past it; -1 when it
 * runs past end, is longer than needed or exceeds 64 bits. */
static int varint_slow(const uint8_t **q, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *q;
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p == end)
            return -1;
        uint8_t b = *p++;
        uint64_t bits = (uint64_t)(b & 0x7f);
        if (shift == 63 && bits > 1)
            return -1; /* past 64 bits */
        v |= bits << shift;
        if (!(b & 0x80)) {
            if (b == 0 && shift)
                return -1; /* a longer form than needed */
            *q = p;
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* varint_slow() with the one- and two-byte forms (counts, lengths, small
 * revisions) inline. */
static inline int varint_get(const uint8_t **q, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *q;
    if (end - p >= 2) {
        if (p[0] < 0x80) {
            *out = p[0];
            *q = p + 1;
            return 0;
        }
        if (p[1] < 0x80) {
            *out = (uint64_t)(p[0] & 0x7f) | (uint64_t)p[1] << 7;
            *q = p + 2;
            return p[1] ? 0 : -1;
        }
        if (end - p >= 3 && p[2] < 0x80) { /* positions below 2^21, refs */
            *out = (uint64_t)(p[0] & 0x7f) | (uint64_t)(p[1] & 0x7f) << 7 | (uint64_t)p[2] << 14;
            *q = p + 3;
            return p[2] ? 0 : -1;
        }
    }
    return varint_slow(q, end, out);
}

/* ------------------------------------------------ the kind of new events */

static atomic_int event_kind; /* 0: not chosen yet */

uint8_t rec_event_kind(void)
{
    int k = atomic_load_explicit(&event_kind, memory_order_relaxed);
    if (k == 0) {
        const char *e = getenv("STELE_RECORD_KIND");
        k = e && !strcmp(e, "1")   ? REC_EVENT
            : e && !strcmp(e, "8") ? REC_COMPACT
                                   : REC_SHARED;
        int unset = 0;
        if (!atomic_compare_exchange_strong(&event_kind, &unset, k))
            k = unset;
    }
    return (uint8_t)k;
}

void rec_set_event_kind(uint8_t kind)
{
    atomic_store(&event_kind,
                 kind == REC_EVENT || kind == REC_COMPACT ? kind : (uint8_t)REC_SHARED);
}

/* --------------------------------------------------------- event records */

/* The body both event kinds share: stream, type and tags with their NULs,
 * data and metadata. */
static uint64_t body_size(size_t stream_len, size_t type_len, const char *const *tags,
                          size_t ntags, size_t data_len, size_t meta_len)
{
    uint64_t n = stream_len + 1 + type_len + 1;
    for (size_t i = 0; i < ntags; i++)
        n += 2 + strlen(tags[i]) + 1;
    return n + (uint64_t)data_len + meta_len;
}

static uint64_t compact_head(size_t stream_len, size_t type_len, size_t ntags, size_t data_len,
                             size_t meta_len, uint32_t count, uint32_t index, uint64_t position,
                             uint64_t revision)
{
    return REC_COMPACT_FIXED + varint_len(count) + varint_len(index) + varint_len(position) +
           varint_len(revision) + varint_len(stream_len) + varint_len(type_len) +
           varint_len(ntags) + varint_len(data_len) + varint_len(meta_len);
}

uint64_t rec_event_size(size_t stream_len, size_t type_len, const char *const *tags,
                        size_t ntags, size_t data_len, size_t meta_len)
{
    uint64_t body = body_size(stream_len, type_len, tags, ntags, data_len, meta_len);
    if (rec_event_kind() == REC_EVENT)
        return pad8(REC_HEADER_SIZE + body);
    /* The widest numbers a record can hold: u32s take 5 bytes, u64s 10,
     * u16s 3. */
    return pad8(REC_COMPACT_FIXED + 5 + 5 + 10 + 10 + 3 + 3 + 3 + 5 + 5 + body);
}

uint64_t rec_event_size_at(size_t stream_len, size_t type_len, const char *const *tags,
                           size_t ntags, size_t data_len, size_t meta_len, uint32_t commit_count,
                           uint32_t commit_index, uint64_t position, uint64_t revision)
{
    uint64_t body = body_size(stream_len, type_len, tags, ntags, data_len, meta_len);
    if (rec_event_kind() == REC_EVENT)
        return pad8(REC_HEADER_SIZE + body);
    return pad8(compact_head(stream_len, type_len, ntags, data_len, meta_len, commit_count,
                             commit_index, position, revision) +
                body);
}

static void put_header(uint8_t *out, uint32_t len, uint8_t kind, uint8_t flags,
                       size_t stream_len, size_t type_len, size_t ntags, uint32_t count,
                       uint32_t index, uint64_t position, uint64_t revision, int64_t created)
{
    st32(out + 0, len);
    out[8] = kind;
    out[9] = flags;
    st16(out + 10, (uint16_t)stream_len);
    st16(out + 12, (uint16_t)type_len);
    st16(out + 14, (uint16_t)ntags);
    st32(out + 16, count);
    st32(out + 20, index);
    st64(out + 24, position);
    st64(out + 32, revision);
    st64(out + 40, (uint64_t)created);
}

/* A kind 9 record's size: the compact one's, less each shared field's
 * length varint, bytes and NUL, plus both refs. */
static uint64_t shared_size(size_t stream_len, size_t type_len, const char *const *tags,
                            size_t ntags, size_t data_len, size_t meta_len, uint32_t count,
                            uint32_t index, uint64_t position, uint64_t revision,
                            uint32_t stream_back, uint32_t type_back)
{
    uint64_t n = compact_head(stream_len, type_len, ntags, data_len, meta_len, count, index,
                              position, revision) +
                 body_size(stream_len, type_len, tags, ntags, data_len, meta_len);
    n += varint_len(stream_back / REC_ALIGN) + varint_len(type_back / REC_ALIGN);
    if (stream_back)
        n -= varint_len(stream_len) + stream_len + 1;
    if (type_back)
        n -= varint_len(type_len) + type_len + 1;
    return pad8(n);
}

void rec_share_init(rec_share *sh) { memset(sh, 0, sizeof *sh); }

/* The distance back to a remembered holder of s in field f (0: none, or
 * not worth it: a ref no shorter than the field inline). */
static uint32_t share_find(const rec_share *sh, int f, const char *s, size_t len)
{
    for (uint32_t i = 0; i < sh->n[f] && i < REC_SHARE_SLOTS; i++) {
        /* The same string (a client's batch often repeats one type), or
         * equal bytes. */
        const char *held = sh->slot[f][i].s;
        if (sh->slot[f][i].len != len || (held != s && memcmp(held, s, len)))
            continue;
        uint64_t back = sh->off - sh->slot[f][i].at;
        if (back > UINT32_MAX || varint_len(back / REC_ALIGN) >= varint_len(len) + len + 1)
            return 0;
        return (uint32_t)back;
    }
    return 0;
}

static void share_note(rec_share *sh, int f, const char *s, size_t len)
{
    uint32_t i = sh->n[f]++ % REC_SHARE_SLOTS; /* the oldest goes */
    sh->slot[f][i].s = s;
    sh->slot[f][i].len = len;
    sh->slot[f][i].at = sh->off;
}

void rec_share_refs(const rec_share *sh, const char *stream, size_t stream_len, const char *type,
                    size_t type_len, uint32_t commit_index, uint32_t *stream_back,
                    uint32_t *type_back)
{
    *stream_back = *type_back = 0;
    if (rec_event_kind() == REC_SHARED && commit_index > 0) {
        *stream_back = share_find(sh, 0, stream, stream_len);
        *type_back = share_find(sh, 1, type, type_len);
    }
}

void rec_share_add(rec_share *sh, const char *stream, size_t stream_len, const char *type,
                   size_t type_len, uint32_t stream_back, uint32_t type_back, uint64_t bytes)
{
    if (!stream_back)
        share_note(sh, 0, stream, stream_len);
    if (!type_back)
        share_note(sh, 1, type, type_len);
    sh->off += bytes;
}

uint64_t rec_share_next(rec_share *sh, const char *stream, size_t stream_len, const char *type,
                        const char *const *tags, size_t ntags, size_t data_len, size_t meta_len,
                        uint32_t commit_count, uint32_t commit_index, uint64_t position,
                        uint64_t revision, uint32_t *stream_back, uint32_t *type_back)
{
    size_t type_len = strlen(type);
    uint32_t sb, tb;
    rec_share_refs(sh, stream, stream_len, type, type_len, commit_index, &sb, &tb);
    uint64_t n = sb || tb ? shared_size(stream_len, type_len, tags, ntags, data_len, meta_len,
                                        commit_count, commit_index, position, revision, sb, tb)
                          : rec_event_size_at(stream_len, type_len, tags, ntags, data_len,
                                              meta_len, commit_count, commit_index, position,
                                              revision);
    rec_share_add(sh, stream, stream_len, type, type_len, sb, tb, n);
    *stream_back = sb;
    *type_back = tb;
    return n;
}

void rec_share_skip(rec_share *sh, uint64_t bytes) { sh->off += bytes; }

size_t rec_encode_event(uint8_t *out, const char *stream, size_t stream_len,
                        const stele_event_in *ev, const uint8_t id[16], uint8_t flags,
                        uint32_t commit_count, uint32_t commit_index, uint64_t position,
                        uint64_t revision, int64_t created_us)
{
    return rec_encode_event_shared(out, stream, stream_len, ev, id, flags, commit_count,
                                   commit_index, position, revision, created_us, 0, 0);
}

size_t rec_encode_event_shared(uint8_t *out, const char *stream, size_t stream_len,
                               const stele_event_in *ev, const uint8_t id[16], uint8_t flags,
                               uint32_t commit_count, uint32_t commit_index, uint64_t position,
                               uint64_t revision, int64_t created_us, uint32_t stream_back,
                               uint32_t type_back)
{
    size_t type_len = strlen(ev->type);
    uint64_t len = 0; /* a compact record's is known once its body is written */
    uint8_t *p;
    if (rec_event_kind() == REC_EVENT) {
        len = rec_event_size_at(stream_len, type_len, ev->tags, ev->ntags, ev->data_len,
                                ev->metadata_len, commit_count, commit_index, position,
                                revision);
        put_header(out, (uint32_t)len, REC_EVENT, flags, stream_len, type_len, ev->ntags,
                   commit_count, commit_index, position, revision, created_us);
        memcpy(out + 48, id, 16);
        st32(out + 64, (uint32_t)ev->data_len);
        st32(out + 68, (uint32_t)ev->metadata_len);
        p = out + REC_HEADER_SIZE;
    } else {
        int shared = stream_back || type_back;
        st32(out, (uint32_t)len);
        out[8] = shared ? REC_SHARED : REC_COMPACT;
        out[9] = flags;
        memcpy(out + 10, id, 16);
        st64(out + 26, (uint64_t)created_us);
        p = out + REC_COMPACT_FIXED;
        p = varint_put(p, commit_count);
        p = varint_put(p, commit_index);
        p = varint_put(p, position);
        p = varint_put(p, revision);
        if (shared) {
            p = varint_put(p, stream_back / REC_ALIGN);
            p = varint_put(p, type_back / REC_ALIGN);
        }
        if (!stream_back)
            p = varint_put(p, stream_len);
        if (!type_back)
            p = varint_put(p, type_len);
        p = varint_put(p, ev->ntags);
        p = varint_put(p, ev->data_len);
        p = varint_put(p, ev->metadata_len);
    }
    if (!stream_back) {
        memcpy(p, stream, stream_len);
        p += stream_len;
        *p++ = 0;
    }
    if (!type_back) {
        memcpy(p, ev->type, type_len);
        p += type_len;
        *p++ = 0;
    }
    for (size_t i = 0; i < ev->ntags; i++) {
        size_t tl = strlen(ev->tags[i]);
        st16(p, (uint16_t)tl);
        memcpy(p + 2, ev->tags[i], tl);
        p[2 + tl] = 0;
        p += 3 + tl;
    }
    if (ev->data_len)
        memcpy(p, ev->data, ev->data_len);
    p += ev->data_len;
    if (ev->metadata_len)
        memcpy(p, ev->metadata, ev->metadata_len);
    p += ev->metadata_len;
    if (!len) {
        len = pad8((uint64_t)(p - out));
        st32(out, (uint32_t)len);
    }
    memset(p, 0, (size_t)(out + len - p));
    st32(out + 4, crc32c(0, out + 8, len - 8));
    return len;
}

uint64_t rec_marker_size(size_t stream_len)
{
    return pad8(REC_HEADER_SIZE + stream_len + 1 + 1);
}

size_t rec_encode_marker(uint8_t *out, uint8_t kind, const char *stream, size_t stream_len,
                         uint64_t position, uint64_t revision, int64_t created_us)
{
    uint64_t len = rec_marker_size(stream_len);
    memset(out, 0, len);
    put_header(out, (uint32_t)len, kind, 0, stream_len, 0, 0, 1, 0, position, revision,
               created_us);
    if (stream_len)
        memcpy(out + REC_HEADER_SIZE, stream, stream_len);
    st32(out + 4, crc32c(0, out + 8, len - 8));
    return len;
}

uint64_t rec_body_size(size_t stream_len, size_t data_len, size_t meta_len)
{
    return pad8(REC_HEADER_SIZE + stream_len + 1 + 1 + (uint64_t)data_len + meta_len);
}

static size_t encode_body(uint8_t *out, uint8_t kind, uint8_t flags, const char *stream,
                          size_t stream_len, const void *data, size_t data_len, const void *meta,
                          size_t meta_len, uint32_t count, uint32_t index, uint64_t position,
                          uint64_t revision, int64_t created_us)
{
    uint64_t len = rec_body_size(stream_len, data_len, meta_len);
    memset(out, 0, len);
    put_header(out, (uint32_t)len, kind, flags, stream_len, 0, 0, count, index, position,
               revision, created_us);
    st32(out + 64, (uint32_t)data_len);
    st32(out + 68, (uint32_t)meta_len);
    uint8_t *p = out + REC_HEADER_SIZE;
    memcpy(p, stream, stream_len);
    p += stream_len + 2; /* stream NUL, empty type NUL */
    if (data_len)
        memcpy(p, data, data_len);
    p += data_len;
    if (meta_len)
        memcpy(p, meta, meta_len);
    st32(out + 4, crc32c(0, out + 8, len - 8));
    return len;
}

size_t rec_encode_body(uint8_t *out, uint8_t kind, uint8_t flags, const char *stream,
                       size_t stream_len, const void *data, size_t data_len, const void *meta,
                       size_t meta_len, uint64_t position, uint64_t revision, int64_t created_us)
{
    return encode_body(out, kind, flags, stream, stream_len, data, data_len, meta, meta_len, 1, 0,
                       position, revision, created_us);
}

size_t rec_encode_body_in(uint8_t *out, uint8_t kind, uint8_t flags, const char *stream,
                          size_t stream_len, const void *data, size_t data_len,
                          uint32_t commit_count, uint32_t commit_index, uint64_t position,
                          uint64_t revision, int64_t created_us)
{
    return encode_body(out, kind, (uint8_t)(flags | REC_MULTI), stream, stream_len, data,
                       data_len, NULL, 0, commit_count, commit_index, position, revision,
                       created_us);
}

/* The header of a compact record, kind 8 or 9 (its len checked): the
 * fields of *r and where its body starts, or NULL when a varint is
 * malformed. */
static const uint8_t *compact_header(const uint8_t *p, uint32_t len, rec *r)
{
    const uint8_t *q = p + REC_COMPACT_FIXED, *end = p + len;
    uint64_t v[9], ref[2] = {0, 0};
    if (varint_get(&q, end, &v[0]) || varint_get(&q, end, &v[1]) ||
        varint_get(&q, end, &v[2]) || varint_get(&q, end, &v[3]))
        return NULL;
    if (p[8] == REC_SHARED) {
        /* One encoding per event: a record sharing nothing is kind 8, and
         * the first of its commit has nothing before it to share. */
        if (varint_get(&q, end, &ref[0]) || varint_get(&q, end, &ref[1]) ||
            (ref[0] | ref[1]) > UINT32_MAX / REC_ALIGN || !(ref[0] | ref[1]) || v[1] == 0)
            return NULL;
    }
    v[4] = v[5] = 0;
    if ((!ref[0] && varint_get(&q, end, &v[4])) || (!ref[1] && varint_get(&q, end, &v[5])) ||
        varint_get(&q, end, &v[6]) || varint_get(&q, end, &v[7]) ||
        varint_get(&q, end, &v[8]))
        return NULL;
    /* Each number within its field: u32 counts and data lengths, u16
     * name, type and tag counts. */
    if ((v[0] | v[1] | v[7] | v[8]) > UINT32_MAX || (v[4] | v[5] | v[6]) > 0xffff)
        return NULL;
    r->kind = REC_EVENT;
    r->compact = p[8] == REC_SHARED ? 2 : 1;
    r->stream_back = (uint32_t)ref[0] * REC_ALIGN;
    r->type_back = (uint32_t)ref[1] * REC_ALIGN;
    r->far = (uint8_t)((ref[0] ? REC_FAR_STREAM : 0) | (ref[1] ? REC_FAR_TYPE : 0));
    r->flags = p[9];
    r->id = p + 10;
    r->created_us = (int64_t)ld64(p + 26);
    r->commit_count = (uint32_t)v[0];
    r->commit_index = (uint32_t)v[1];
    r->position = v[2];
    r->revision = v[3];
    r->stream_len = (uint16_t)v[4];
    r->type_len = (uint16_t)v[5];
    r->ntags = (uint16_t)v[6];
    r->data_len = (uint32_t)v[7];
    r->meta_len = (uint32_t)v[8];
    return q;
}

/* crc: check the CRC; head: a holder's decode, which needs the header and
 * the stream and type only (the rest of the body is not walked). */
static rec_status decode_part(const uint8_t *p, uint64_t avail, rec *r, const char **why, int crc,
                              int head);

static rec_status decode(const uint8_t *p, uint64_t avail, rec *r, const char **why, int crc)
{
    return decode_part(p, avail, r, why, crc, 0);
}

static rec_status decode_part(const uint8_t *p, uint64_t avail, rec *r, const char **why, int crc,
                              int head)
{
    if (avail < 4)
        return avail == 0 ? REC_ZERO : REC_SHORT;
    uint32_t len = ld32(p);
    if (len == 0)
        return REC_ZERO;
    if (len < REC_MIN_SIZE || len % REC_ALIGN) {
        *why = "bad record length";
        return REC_BAD;
    }
    if (len > avail)
        return REC_SHORT;
    int compact = p[8] == REC_COMPACT || p[8] == REC_SHARED;
    if (!compact && len < REC_HEADER_SIZE) {
        *why = "bad record length";
        return REC_BAD;
    }
    if (crc && crc32c(0, p + 8, len - 8) != ld32(p + 4)) {
        *why = "checksum mismatch";
        return REC_BAD;
    }
    r->len = len;
    r->at = p;
    const uint8_t *body = p + REC_HEADER_SIZE;
    if (compact) {
        if (!(body = compact_header(p, len, r))) {
            *why = "malformed record header";
            return REC_BAD;
        }
    } else {
        r->kind = p[8];
        r->compact = 0;
        r->far = 0;
        r->stream_back = r->type_back = 0;
        r->flags = p[9];
        r->stream_len = ld16(p + 10);
        r->type_len = ld16(p + 12);
        r->ntags = ld16(p + 14);
        r->commit_count = ld32(p + 16);
        r->commit_index = ld32(p + 20);
        r->position = ld64(p + 24);
        r->revision = ld64(p + 32);
        r->created_us = (int64_t)ld64(p + 40);
        r->id = p + 48;
        r->data_len = ld32(p + 64);
        r->meta_len = ld32(p + 68);
    }
    if (r->kind < REC_EVENT || r->kind > REC_CHAIN || (r->flags & ~REC_FLAGS_MASK) ||
        r->commit_count == 0 || r->commit_index >= r->commit_count ||
        ((r->flags & REC_REMOVES) &&
         (r->kind != REC_EVENT || r->commit_count != 1 || (r->flags & REC_MULTI)))) {
        *why = "malformed record header";
        return REC_BAD;
    }
    if ((r->kind == REC_METADATA || r->kind == REC_SNAPSHOT) &&
        ((r->commit_count != 1 && !(r->kind == REC_SNAPSHOT && (r->flags & REC_MULTI))) || r->type_len || r->ntags ||
         (r->kind == REC_METADATA && r->data_len != REC_META_DATA_SIZE))) {
        *why = "malformed metadata or snapshot record";
        return REC_BAD;
    }
    if (r->kind == REC_CHAIN &&
        (r->commit_count != 1 || r->type_len || r->ntags || r->stream_len ||
         (r->flags & ~(REC_CHAIN_PENDING | REC_CHAIN_TRAILING)) ||
         r->data_len != CHAIN_DATA_SIZE || r->meta_len || len != CHAIN_REC_SIZE)) {
        *why = "malformed chain record";
        return REC_BAD;
    }
    /* Walk the body with bounds checks against len. */
    const uint8_t *end = p + len, *q = body;
    if (r->far & REC_FAR_STREAM) {
        r->stream = ""; /* until resolved: REC_FAR keeps callers off it */
    } else {
        if ((uint64_t)(end - q) < (uint64_t)r->stream_len + 1 || q[r->stream_len] != 0)
            goto malformed;
        r->stream = (const char *)q;
        q += r->stream_len + 1;
    }
    if (r->kind == REC_DELETE || r->kind == REC_TOMBSTONE || r->kind == REC_SEAL) {
        /* A marker is a header and a name (rec_encode_marker): lengths of a
         * type, tags or data it does not have would point past its body
         * for any reader that trusted them (found by fuzz/fuzz_record.c). */
        if (r->type_len || r->ntags || r->data_len || r->meta_len)
            goto malformed;
        r->type = "";
        r->tags = q;
        r->data = r->meta = q;
        return REC_OK;
    }
    if (r->far & REC_FAR_TYPE) {
        r->type = "";
    } else {
        if ((uint64_t)(end - q) < (uint64_t)r->type_len + 1 || q[r->type_len] != 0)
            goto malformed;
        r->type = (const char *)q;
        q += r->type_len + 1;
    }
    if (head)
        return r->far ? REC_FAR : REC_OK;
    r->tags = q;
    for (unsigned i = 0; i < r->ntags; i++) {
        if (end - q < 3)
            goto malformed;
        uint16_t tl = ld16(q);
        if ((uint64_t)(end - q) < 3u + tl || q[2 + tl] != 0)
            goto malformed;
        q += 3 + tl;
    }
    if ((uint64_t)(end - q) < (uint64_t)r->data_len + r->meta_len)
        goto malformed;
    r->data = q;
    r->meta = q + r->data_len;
    if (r->compact) {
        /* Exactly the padding to the next multiple of 8, all zeros: one
         * encoding per record. */
        q += (uint64_t)r->data_len + r->meta_len;
        if (end - q >= (ptrdiff_t)REC_ALIGN)
            goto malformed;
        for (; q < end; q++)
            if (*q)
                goto malformed;
    }
    return r->far ? REC_FAR : REC_OK;
malformed:
    *why = "malformed record body";
    return REC_BAD;
}

int rec_peek(const uint8_t *p, uint64_t n, uint8_t *kind, uint64_t *position,
             int64_t *created_us)
{
    if (n < REC_MIN_SIZE)
        return -1;
    uint32_t len = ld32(p);
    if (len < REC_MIN_SIZE || len % REC_ALIGN)
        return -1;
    if (p[8] == REC_COMPACT || p[8] == REC_SHARED) {
        /* Only the varints up to the position (count, index, position):
         * they end within REC_PEEK_SIZE bytes, or within the record. */
        const uint8_t *q = p + REC_COMPACT_FIXED, *end = p + (n < len ? n : len);
        uint64_t count, index, pos;
        if (varint_get(&q, end, &count) || varint_get(&q, end, &index) ||
            varint_get(&q, end, &pos))
            return -1;
        *kind = REC_EVENT;
        *position = pos;
        *created_us = (int64_t)ld64(p + 26);
        return 0;
    }
    if (p[8] < REC_EVENT || p[8] > REC_CHAIN || len < REC_HEADER_SIZE || n < REC_HEADER_SIZE)
        return -1;
    *kind = p[8];
    *position = ld64(p + 24);
    *created_us = (int64_t)ld64(p + 40);
    return 0;
}

void seg_header_encode(uint8_t out[SEG_HEADER_SIZE], uint64_t segno, uint64_t first_position,
                       int64_t created_us)
{
    memset(out, 0, SEG_HEADER_SIZE);
    memcpy(out, SEG_MAGIC, 8);
    st32(out + 8, SEG_VERSION);
    st64(out + 16, segno);
    st64(out + 24, first_position);
    st64(out + 32, (uint64_t)created_us);
    st32(out + 12, crc32c(0, out + 16, SEG_HEADER_SIZE - 16));
}

const char *seg_header_decode(const uint8_t in[SEG_HEADER_SIZE], uint64_t *segno,
                              uint64_t *first_position)
{
    seg_info si;
    const char *why = seg_header_read(in, &si);
    if (why)
        return why;
    if (si.version != SEG_VERSION)
        return "unsupported segment version";
    *segno = si.segno;
    *first_position = si.first_position;
    return NULL;
}

const char *seg_header_read(const uint8_t in[SEG_HEADER_SIZE], seg_info *out)
{
    memset(out, 0, sizeof *out);
    if (memcmp(in, SEG_MAGIC, 8) != 0)
        return "bad segment magic";
    if (crc32c(0, in + 16, SEG_HEADER_SIZE - 16) != ld32(in + 12))
        return "segment header checksum mismatch";
    out->version = ld32(in + 8);
    if (out->version != SEG_VERSION && out->version != SEG_VERSION_SCAVENGED)
        return "unsupported segment version";
    out->segno = ld64(in + 16);
    out->first_position = ld64(in + 24);
    out->created_us = (int64_t)ld64(in + 32);
    if (out->version == SEG_VERSION_SCAVENGED) {
        out->table_off = ld64(in + 40);
        out->nruns = ld32(in + 48);
        out->table_crc = ld32(in + 52);
        out->scavenged_us = (int64_t)ld64(in + 56);
        if (out->nruns == 0 || out->table_off < SEG_HEADER_SIZE || out->table_off % REC_ALIGN ||
            out->table_off > UINT32_MAX)
            return "malformed scavenged segment header";
    }
    return NULL;
}

void seg_header_encode_scavenged(uint8_t out[SEG_HEADER_SIZE], const seg_info *si)
{
    memset(out, 0, SEG_HEADER_SIZE);
    memcpy(out, SEG_MAGIC, 8);
    st32(out + 8, SEG_VERSION_SCAVENGED);
    st64(out + 16, si->segno);
    st64(out + 24, si->first_position);
    st64(out + 32, (uint64_t)si->created_us);
    st64(out + 40, si->table_off);
    st32(out + 48, si->nruns);
    st32(out + 52, si->table_crc);
    st64(out + 56, (uint64_t)si->scavenged_us);
    st32(out + 12, crc32c(0, out + 16, SEG_HEADER_SIZE - 16));
}

rec_status rec_decode(const uint8_t *p, uint64_t avail, rec *r, const char **why)
{
    return decode(p, avail, r, why, 1);
}

rec_status rec_decode_trusted(const uint8_t *p, uint64_t avail, rec *r, const char **why)
{
    return decode(p, avail, r, why, 0);
}

int rec_share_apply(rec *r, unsigned which, const rec *h, const char **why)
{
    int stream = which == REC_FAR_STREAM;
    if (!(r->far & which))
        return 0;
    if (h->kind != REC_EVENT || (h->far & which) || h->commit_count != r->commit_count ||
        h->commit_index >= r->commit_index || h->created_us != r->created_us ||
        ((h->flags ^ r->flags) & REC_MULTI) ||
        h->position - h->commit_index != r->position - r->commit_index) {
        *why = stream ? "the record holding its stream name is not of its commit"
                      : "the record holding its event type is not of its commit";
        return -1;
    }
    if (stream) {
        r->stream = h->stream;
        r->stream_len = h->stream_len;
    } else {
        r->type = h->type;
        r->type_len = h->type_len;
    }
    r->far &= (uint8_t)~which;
    return 0;
}

/* Resolve r's far fields from holders in base[0..off) (r is at base+off). */
static rec_status resolve(const uint8_t *base, uint64_t off, rec *r, const char **why, int crc)
{
    static const unsigned fields[2] = {REC_FAR_STREAM, REC_FAR_TYPE};
    rec h;
    uint32_t h_back = 0; /* h holds the record that far back (the usual
                          * holder of both fields is one record) */
    for (int i = 0; i < 2; i++) {
        unsigned f = fields[i];
        uint32_t back = f == REC_FAR_STREAM ? r->stream_back : r->type_back;
        if (!(r->far & f) || back > off)
            continue;
        /* The holder ends at or before r: back bytes hold it. Its CRC is
         * checked (unless trusted), its names bounds-checked; the rest of
         * its body is not needed here. */
        rec_status st = back == h_back ? REC_OK
                                       : decode_part(base + off - back, back, &h, why, crc, 1);
        if (st == REC_OK || st == REC_FAR) {
            h_back = back;
            if (rec_share_apply(r, f, &h, why))
                return REC_BAD;
            continue;
        }
        if (st != REC_BAD)
            *why = f == REC_FAR_STREAM ? "no record holds its stream name"
                                       : "no record holds its event type";
        return REC_BAD;
    }
    return r->far ? REC_FAR : REC_OK;
}

rec_status rec_decode_in(const uint8_t *base, uint64_t off, uint64_t avail, rec *r,
                         const char **why)
{
    rec_status st = decode(base + off, avail, r, why, 1);
    return st == REC_FAR ? resolve(base, off, r, why, 1) : st;
}

rec_status rec_decode_trusted_in(const uint8_t *base, uint64_t off, uint64_t avail, rec *r,
                                 const char **why)
{
    rec_status st = decode(base + off, avail, r, why, 0);
    return st == REC_FAR ? resolve(base, off, r, why, 0) : st;
}

int rec_chain_torn(const uint8_t *p, uint64_t avail)
{
    if (avail < CHAIN_REC_SIZE || ld32(p) != CHAIN_REC_SIZE || p[8] != REC_CHAIN ||
        (p[9] & ~(REC_CHAIN_PENDING | REC_CHAIN_TRAILING)) ||
        crc32c(0, p + 8, CHAIN_REC_SIZE - 8) == ld32(p + 4))
        return 0;
    /* The shared bytes as a pending record of this number, position and
     * time has them. */
    static const uint8_t zeros[CHAIN_DATA_SIZE];
    uint8_t t[CHAIN_REC_SIZE];
    rec_encode_body(t, REC_CHAIN, REC_CHAIN_PENDING | (p[9] & REC_CHAIN_TRAILING), "", 0, zeros,
                    sizeof zeros, NULL, 0, ld64(p + 24), ld64(p + 32), (int64_t)ld64(p + 40));
    return memcmp(p, t, 4) == 0 && memcmp(p + 10, t + 10, REC_CHAIN_DATA_OFF - 10) == 0 &&
           memcmp(p + REC_CHAIN_DATA_OFF + CHAIN_DATA_SIZE,
                  t + REC_CHAIN_DATA_OFF + CHAIN_DATA_SIZE,
                  CHAIN_REC_SIZE - REC_CHAIN_DATA_OFF - CHAIN_DATA_SIZE) == 0;
}

/* ------------------------------------------------------------ removes */

int rec_removes_decode(const rec *r, rec_removes *out)
{
    if (r->kind != REC_EVENT || !(r->flags & REC_REMOVES) || r->meta_len <= REC_REMOVES_FIXED ||
        r->meta_len - REC_REMOVES_FIXED > 0xffffu ||
        (r->meta[0] != REC_DELETE && r->meta[0] != REC_TOMBSTONE))
        return -1;
    for (int i = 1; i < 8; i++)
        if (r->meta[i])
            return -1;
    out->kind = r->meta[0];
    out->truncate_before = ld64(r->meta + 8);
    out->last_rev = ld64(r->meta + 16);
    out->stream = (const char *)r->meta + REC_REMOVES_FIXED;
    out->stream_len = r->meta_len - REC_REMOVES_FIXED;
    if (memchr(out->stream, 0, out->stream_len))
        return -1;
    return 0;
}

void rec_removes_encode(uint8_t *out, uint8_t kind, uint64_t truncate_before, uint64_t last_rev,
                        const char *stream, size_t stream_len)
{
    memset(out, 0, REC_REMOVES_FIXED);
    out[0] = kind;
    st64(out + 8, truncate_before);
    st64(out + 16, last_rev);
    memcpy(out + REC_REMOVES_FIXED, stream, stream_len);
}
