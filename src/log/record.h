/*
 * record.h - the on-disk format of the log: segment headers and records.
 * docs/file-format.md mirrors this file; change both together.
 *
 * A segment file is a 64-byte header followed by records, then zeros up to
 * the preallocated size:
 *
 *   segment header (64 bytes, little-endian)
 *   +0  STELESEG             magic
 *   +8  u32 version (1)
 *   +12 u32 crc32c of bytes 16..63
 *   +16 u64 segment number   (matches the file name NNNNNNNN.seg)
 *   +24 u64 first position   (position of the first event in this segment)
 *   +32 i64 created (µs)
 *   +40 zeros
 *
 * A segment rewritten by scavenging (version 2, see log_rewrite.c) has the
 * same first 40 bytes and then:
 *   +40 u64 table offset     end of its records, start of the relocation
 *                            table (a multiple of 8)
 *   +48 u32 runs             entries in the table (>= 1)
 *   +52 u32 crc32c of the table
 *   +56 i64 scavenged (µs)
 * Its records are the kept records of the original segment, in order and
 * unchanged, packed from offset 64; the table follows them and the file
 * ends with the table (no zero padding). Each table entry is one run of
 * records that were contiguous in the original file:
 *   +0 u32 original offset (the offset locations in the index use)
 *   +4 u32 offset in this file
 * sorted by both. A version 1 reader refuses the segment.
 *
 * Every record is a 72-byte header and a body, padded with zeros to a
 * multiple of 8 bytes. The CRC covers everything after itself up to `len`:
 *
 *   +0  u32 len      whole record, padding included (multiple of 8, >= 72)
 *   +4  u32 crc32c   of bytes 8..len-1
 *   +8  u8  kind     1 event, 2 delete, 3 tombstone, 4 seal, 5 stream
 *                    metadata, 6 snapshot
 *   +9  u8  flags    STELE_EVENT_JSON, STELE_META_JSON, STELE_EVENT_ID_ULID
 *                    (0x4: the id is written as a ULID), REC_ID_MADE, REC_MULTI
 *   +10 u16 stream_len
 *   +12 u16 type_len
 *   +14 u16 ntags
 *   +16 u32 commit_count   events (records) in this commit
 *   +20 u32 commit_index   0 .. commit_count-1
 *   +24 u64 position       event; delete: truncate-before revision;
 *                          seal: next position after this segment;
 *                          metadata: its version; snapshot: schema version
 *   +32 u64 revision       event; delete/tombstone/metadata: the stream's
 *                          last revision then (UINT64_MAX if none);
 *                          snapshot: the revision it was taken at
 *   +40 i64 created (µs)
 *   +48 u8[16] event id
 *   +64 u32 data_len
 *   +68 u32 metadata_len
 *   +72 stream bytes, NUL; type bytes, NUL; per tag: u16 len, bytes, NUL;
 *       data; metadata; zero padding
 *
 * Stream metadata and snapshot records have the body layout of an event
 * (type empty, no tags): a metadata record's data is the fixed
 * REC_META_DATA_SIZE-byte block below and its metadata the custom fields (a
 * JSON object, STELE_META_JSON) or nothing; a snapshot record's data is the
 * state (STELE_EVENT_JSON if JSON). Neither takes a position.
 *
 *   metadata data block (little-endian)
 *   +0  u64 max age, µs (0: none)
 *   +8  u64 max count (0: none)
 *   +16 u64 truncate-before revision (0: none)
 *   +24 u32 max snapshots (0: the default)
 *   +28 u32 zero
 *
 * A commit is the records of one append (or one delete/tombstone/metadata/
 * snapshot record): they are
 * contiguous in one segment, and it is complete only if all commit_count
 * records are present with valid CRCs and consecutive indexes. Recovery cuts
 * an incomplete commit at the tail; anything else invalid is damage.
 *
 * A multi-stream commit (stele_append_multi) sets REC_MULTI on every one
 * of its records. Its event records come first, in the request's order, at
 * consecutive positions; each names its own stream, and each stream's
 * revisions ascend by one from record to record. After the events come the
 * state snapshots the request saves (REC_SNAPSHOT records, also flagged,
 * commit_count counting them too, no position). Commits without the flag
 * are exactly as before, so stores that never use multi-stream appends keep
 * their bytes; a reader that predates REC_MULTI refuses the flag (malformed
 * record header) instead of misreading such a commit.
 *
 * A stream delete or tombstone (since the `$deleted` work, December 2026)
 * is one event record flagged REC_REMOVES: a commit of its own
 * (commit_count 1, never REC_MULTI) in the system stream `$deletes`, type
 * `$streamDeleted`, with a position and the next revision of `$deletes`
 * like any event, so `$all` readers and projections see the delete in
 * commit order. Its data is JSON for readers: {"streamId": S, "revision":
 * R or null, "truncateBefore": T or null, "tombstone": B}. Its metadata is
 * the fixed block below, which recovery, `stele check` and scavenging read
 * (they never parse JSON):
 *
 *   removes block (little-endian)
 *   +0  u8  REC_DELETE or REC_TOMBSTONE
 *   +1  u8[7] zero
 *   +8  u64 truncate-before revision (delete; 0 for a tombstone)
 *   +16 u64 the deleted stream's last revision then (UINT64_MAX if none)
 *   +24 the deleted stream's name (the rest of the metadata, no NUL)
 *
 * The record and the delete are one: kept or cut whole like any commit.
 * REC_DELETE / REC_TOMBSTONE marker records (kinds 2 and 3) are what older
 * stores hold; they are still read and applied the same way. A reader that
 * predates REC_REMOVES refuses the flag (malformed record header).
 *
 * The compact event record (kind 8, REC_COMPACT; since December 2026,
 * issue 21) carries exactly what a kind 1 event record carries, with the
 * numbers as varints (unsigned LEB128, shortest form) instead of a fixed
 * 72-byte header. It keeps `len` and the CRC at the front, its length a
 * multiple of 8 and its start a multiple of 8, so framing, torn-tail and
 * damage rules are those of every other record:
 *
 *   +0  u32 len      whole record, padding included (multiple of 8, >= 48)
 *   +4  u32 crc32c   of bytes 8..len-1
 *   +8  u8  kind     8
 *   +9  u8  flags    as a kind 1 event record
 *   +10 u8[16] event id
 *   +26 i64 created (µs)
 *   +34 varints: commit_count, commit_index, position, revision,
 *       stream_len, type_len, ntags, data_len, metadata_len
 *   then the body of a kind 1 record: stream bytes, NUL; type bytes, NUL;
 *       per tag: u16 len, bytes, NUL; data; metadata; zero padding (< 8)
 *
 * Decoding gives the same `rec` as the kind 1 record of the same event
 * (kind REC_EVENT, compact set), so nothing above the decoder tells them
 * apart. Kind 1 records stay readable for ever. A build before kind 8
 * refuses it as a malformed record header: the kind is the format mark.
 *
 * The shared-names event record (kind 9, REC_SHARED; since December 2026,
 * issue 21 item 3) is a compact record whose stream name, type or both are
 * not repeated: each is held by an earlier event record of the same commit
 * (its *holder*, which carries that field inline) and named by how far
 * back that record starts:
 *
 *   +0..+33 as kind 8 (len, crc, kind 9, flags, id, created)
 *   +34 varints: commit_count, commit_index, position, revision,
 *       stream_ref, type_ref   (0: inline here; else the holder starts
 *                               ref * 8 bytes before this record)
 *       stream_len             (only when stream_ref is 0)
 *       type_len               (only when type_ref is 0)
 *       ntags, data_len, metadata_len
 *   then: stream bytes, NUL (only when inline); type bytes, NUL (only when
 *       inline); per tag: u16 len, bytes, NUL; data; metadata; zero padding
 *
 * At least one ref is nonzero (else the record is written as kind 8), and
 * commit_index 0 has none. The holder is an event record (kind 1, 8, or 9
 * with that field inline) of the same commit: same commit_count, created
 * time and REC_MULTI flag, a lower commit_index, and the same first
 * position (position - commit_index). Refs never chain: the holder has the
 * field itself. Scavenging keeps or removes whole commits, so a kept record
 * keeps its holders, at the same original locations (the index's and the
 * relocation table's coordinates), and every record can be decoded from its
 * own bytes and at most two earlier records of its commit.
 *
 * rec_decode() resolves nothing: a valid kind 9 record whose holders lie
 * outside the bytes given is REC_FAR, every field but the far ones filled
 * and stream_back / type_back saying where their holders start (bytes
 * before the record). rec_decode_in() resolves holders found earlier in the
 * same buffer; log_share_fetch() (log.h) reads the others. New events are
 * written as kind 9 where a field can be shared and kind 8 otherwise
 * (rec_event_kind()); STELE_RECORD_KIND=8 or =1 writes the older kinds.
 */
#ifndef STELE_RECORD_H
#define STELE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "stele.h"

#define SEG_MAGIC "STELESEG"
#define SEG_VERSION 1u
#define SEG_VERSION_SCAVENGED 2u
#define SEG_RUN_SIZE 8u
#define SEG_HEADER_SIZE 64u
#define REC_HEADER_SIZE 72u
#define REC_ALIGN 8u
/* A compact record's fixed part (len, crc, kind, flags, id, created) and
 * the smallest record of any kind (a compact one with every varint one
 * byte, two NULs, padded). */
#define REC_COMPACT_FIXED 34u
#define REC_MIN_SIZE 48u
/* Bytes that hold the header of any record (a compact one's widest
 * varints included): what rec_peek() reads. */
#define REC_PEEK_SIZE 88u

enum rec_kind {
    REC_EVENT = 1,
    REC_DELETE = 2,
    REC_TOMBSTONE = 3,
    REC_SEAL = 4,
    REC_METADATA = 5,
    REC_SNAPSHOT = 6,
    REC_CHAIN = 7,
    REC_COMPACT = 8, /* on disk only: decoded as REC_EVENT with `compact` set */
    REC_SHARED = 9,  /* on disk only: decoded as REC_EVENT, `compact` 2 */
};

/* Bits of rec.far: a field of a kind 9 record not resolved yet. */
#define REC_FAR_STREAM 0x1u
#define REC_FAR_TYPE 0x2u

/*
 * A chain record (kind 7, src/backend/local_chain.c) sits immediately before
 * every commit written since the hash chain began: stream and type empty, no
 * tags, a zero id, commit_count 1, position = the log's next position after
 * its commit, revision = the commit's number in the chain (0, 1, ...), and a
 * CHAIN_DATA_SIZE-byte data block:
 *   +0  u8[32] prev    the chain hash of the previous chained commit (zeros
 *                      for the first)
 *   +32 u8[32] digest  SHA-256 of the commit's records, byte for byte
 * The commit's chain hash is SHA-256(prev || digest). It is not part of the
 * commit (commit_count does not count it); log iterators skip it unless
 * asked (log_iter.chain), so only the chain code sees it.
 *
 * Flags: 0, or REC_CHAIN_PENDING with a zero data block: the writer puts a
 * pending record in the commit's group write and rewrites it in place once
 * the group is durable and hashed (local_chain.c, "Hashing after the
 * fsync"). Only the last groups before a crash can still hold pending
 * records; open fills them in from their commits' bytes. (Builds before
 * this flag refuse a chain record with flags set as malformed.)
 */
#define REC_CHAIN_PENDING 0x01u
/* Flags bit (since 2026-12-08, branch chain21d): the record *follows* its
 * commit instead of preceding it (local_chain.c, "Trailing records"): the
 * commit's records end where it starts. A store's writer uses one layout
 * per open; the chain's walks take each record as its flag says, so one
 * store can hold both. Builds before this bit refuse such a record as a
 * malformed chain record (never misread it). */
#define REC_CHAIN_TRAILING 0x02u
#define CHAIN_DATA_SIZE 64u
#define CHAIN_REC_SIZE 144u /* REC_HEADER_SIZE + 2 NULs + 64, padded */

/* The fixed data block of a REC_METADATA record (layout above). */
#define REC_META_DATA_SIZE 32u

/* flags bit: the id was made by the store (not given by the client), so it
 * is not indexed for idempotent retries. */
#define REC_ID_MADE 0x80u
/* flags bit: the record belongs to a multi-stream commit (its events may
 * name several streams, and snapshot records may follow them). */
#define REC_MULTI 0x40u
/* flags bit: the event records a stream delete or tombstone (the removes
 * block above); only on a single-record REC_EVENT commit in `$deletes`. */
#define REC_REMOVES 0x20u
#define REC_REMOVES_FIXED 24u
#define REC_REMOVES_STREAM "$deletes"
#define REC_REMOVES_TYPE "$streamDeleted"
/* The event's own flags, kept as given (the id's text form among them). */
#define REC_EVENT_FLAGS (STELE_EVENT_JSON | STELE_META_JSON | STELE_EVENT_ID_ULID)
#define REC_FLAGS_MASK (REC_EVENT_FLAGS | REC_ID_MADE | REC_MULTI | REC_REMOVES)

/* A decoded record: pointers into the buffer it was decoded from. */
typedef struct rec {
    uint32_t len;
    uint8_t kind;
    uint8_t flags;
    uint8_t compact;   /* written as kind 8 (1) or 9 (2); kind says REC_EVENT */
    uint8_t far;       /* REC_FAR_* fields whose holder is still to be read */
    uint32_t stream_back; /* kind 9: bytes back to the holder of the stream, */
    uint32_t type_back;   /* and of the type; 0 when inline */
    const uint8_t *at; /* the record's first byte */
    uint32_t commit_count;
    uint32_t commit_index;
    uint64_t position;
    uint64_t revision;
    int64_t created_us;
    const uint8_t *id;
    const char *stream;
    uint16_t stream_len;
    const char *type;
    uint16_t type_len;
    uint16_t ntags;
    const uint8_t *tags; /* ntags x (u16 len, bytes, NUL) */
    const uint8_t *data;
    uint32_t data_len;
    const uint8_t *meta;
    uint32_t meta_len;
} rec;

/* The kind new event records are written in: REC_SHARED (kind 9 where a
 * name can be shared, kind 8 where not), or REC_COMPACT (kind 8 only) or
 * REC_EVENT when the environment says STELE_RECORD_KIND=8 or =1 (to write
 * a store an older build reads) or a test chose it. Process-wide. */
uint8_t rec_event_kind(void);
/* Choose it (REC_EVENT, REC_COMPACT or REC_SHARED; anything else means
 * REC_SHARED), for tests: only while no store of this process is being
 * written. */
void rec_set_event_kind(uint8_t kind);

/*
 * Laying out the event records of one commit with shared names: call
 * rec_share_next() once per event record, in commit order, with the same
 * arguments when planning and when encoding (it is deterministic). It
 * returns the record's exact size and the refs to pass to
 * rec_encode_event_shared(). A few recent holders of each field are
 * remembered (REC_SHARE_SLOTS); a name not among them is written inline
 * and becomes a holder. Records of other kinds in the commit (a multi-stream
 * commit's snapshots) are added with rec_share_skip().
 */
#define REC_SHARE_SLOTS 4
typedef struct rec_share {
    uint64_t off; /* bytes of the commit laid out so far */
    uint32_t n[2];
    struct {
        const char *s;
        size_t len;
        uint64_t at;
    } slot[2][REC_SHARE_SLOTS];
} rec_share;
void rec_share_init(rec_share *sh);
uint64_t rec_share_next(rec_share *sh, const char *stream, size_t stream_len, const char *type,
                        const char *const *tags, size_t ntags, size_t data_len, size_t meta_len,
                        uint32_t commit_count, uint32_t commit_index, uint64_t position,
                        uint64_t revision, uint32_t *stream_back, uint32_t *type_back);
void rec_share_skip(rec_share *sh, uint64_t bytes);
/* rec_share_next() in two steps, for an encoder that learns the size by
 * writing the record: the refs for the next record, then the record
 * written (its refs and bytes). */
void rec_share_refs(const rec_share *sh, const char *stream, size_t stream_len, const char *type,
                    size_t type_len, uint32_t commit_index, uint32_t *stream_back,
                    uint32_t *type_back);
void rec_share_add(rec_share *sh, const char *stream, size_t stream_len, const char *type,
                   size_t type_len, uint32_t stream_back, uint32_t type_back, uint64_t bytes);

/* The most bytes an event record with these parts takes (padding
 * included), whatever its position and revision: a kind 1 record's exact
 * size; the budget of a compact one before the writer plans it. */
uint64_t rec_event_size(size_t stream_len, size_t type_len, const char *const *tags,
                        size_t ntags, size_t data_len, size_t meta_len);
/* The exact size of the record rec_encode_event() writes for these parts
 * and numbers. */
uint64_t rec_event_size_at(size_t stream_len, size_t type_len, const char *const *tags,
                           size_t ntags, size_t data_len, size_t meta_len, uint32_t commit_count,
                           uint32_t commit_index, uint64_t position, uint64_t revision);

/* Encode an event record, in rec_event_kind(), into `out` (room for
 * rec_event_size_at bytes; zeroing by the caller is not needed). Returns
 * the bytes written. */
size_t rec_encode_event(uint8_t *out, const char *stream, size_t stream_len,
                        const stele_event_in *ev, const uint8_t id[16], uint8_t flags,
                        uint32_t commit_count, uint32_t commit_index, uint64_t position,
                        uint64_t revision, int64_t created_us);

/* rec_encode_event() of a record laid out by rec_share_next(): kind 9
 * when a back distance is nonzero (the event kind is REC_SHARED), else as
 * rec_encode_event(). */
size_t rec_encode_event_shared(uint8_t *out, const char *stream, size_t stream_len,
                               const stele_event_in *ev, const uint8_t id[16], uint8_t flags,
                               uint32_t commit_count, uint32_t commit_index, uint64_t position,
                               uint64_t revision, int64_t created_us, uint32_t stream_back,
                               uint32_t type_back);

/* Encode a delete, tombstone or seal record (REC_HEADER_SIZE + name). */
uint64_t rec_marker_size(size_t stream_len);
size_t rec_encode_marker(uint8_t *out, uint8_t kind, const char *stream, size_t stream_len,
                         uint64_t position, uint64_t revision, int64_t created_us);

/* A stream metadata or snapshot record: the body of an event without type,
 * tags or id (see the layout above). */
uint64_t rec_body_size(size_t stream_len, size_t data_len, size_t meta_len);
size_t rec_encode_body(uint8_t *out, uint8_t kind, uint8_t flags, const char *stream,
                       size_t stream_len, const void *data, size_t data_len, const void *meta,
                       size_t meta_len, uint64_t position, uint64_t revision, int64_t created_us);

/* rec_encode_body() for a snapshot record inside a multi-stream commit:
 * REC_MULTI is set and the commit's count and this record's index given. */
size_t rec_encode_body_in(uint8_t *out, uint8_t kind, uint8_t flags, const char *stream,
                          size_t stream_len, const void *data, size_t data_len,
                          uint32_t commit_count, uint32_t commit_index, uint64_t position,
                          uint64_t revision, int64_t created_us);

/* The removes block of a REC_REMOVES record, decoded: 0, or -1 when the
 * block is malformed (then the record is damage). */
typedef struct rec_removes {
    uint8_t kind; /* REC_DELETE or REC_TOMBSTONE */
    uint64_t truncate_before;
    uint64_t last_rev;
    const char *stream; /* not NUL-terminated */
    size_t stream_len;
} rec_removes;
int rec_removes_decode(const rec *r, rec_removes *out);
/* Encode the block for a removal of `stream` into out (REC_REMOVES_FIXED
 * + stream_len bytes). */
void rec_removes_encode(uint8_t *out, uint8_t kind, uint64_t truncate_before, uint64_t last_rev,
                        const char *stream, size_t stream_len);

/* Outcome of decoding the bytes at some offset. */
typedef enum rec_status {
    REC_OK = 0,
    REC_ZERO,      /* a zero length word: the end of written data */
    REC_SHORT,     /* the record runs past the bytes available */
    REC_BAD,       /* bad length, CRC mismatch or malformed body */
    REC_FAR,       /* a valid kind 9 record whose holder (r->far) lies
                      before the bytes given: everything else is filled */
} rec_status;

/* Decode the record at `p` with `avail` bytes available. On REC_OK fills
 * *r. On REC_BAD sets *why to a static reason. Verifies the CRC. */
rec_status rec_decode(const uint8_t *p, uint64_t avail, rec *r, const char **why);
/* The same without the CRC check, for bytes this process has just encoded
 * or already verified (the writer's own group; recovery's replayed
 * commits): every other check stays. */
rec_status rec_decode_trusted(const uint8_t *p, uint64_t avail, rec *r, const char **why);
/* Decode the record at base + off (avail bytes from there), resolving a
 * kind 9 record's holders that lie in base[0..off): bytes read together
 * from one location, so contiguous as written. REC_FAR when a holder lies
 * before base. The _trusted form skips every CRC, the holders' too. */
rec_status rec_decode_in(const uint8_t *base, uint64_t off, uint64_t avail, rec *r,
                         const char **why);
rec_status rec_decode_trusted_in(const uint8_t *base, uint64_t off, uint64_t avail, rec *r,
                                 const char **why);
/* Take r's far field `which` (REC_FAR_STREAM or REC_FAR_TYPE) from
 * `holder`, the record decoded at r->stream_back (or type_back) bytes
 * before r: 0, or -1 with *why when it cannot hold it (not an event of
 * r's commit, or without that field inline). r then points into holder's
 * bytes. */
int rec_share_apply(rec *r, unsigned which, const rec *holder, const char **why);

/* A chain record torn while rewritten in place (local_chain.c, "Torn
 * rewrites"): 1 when `p` holds CHAIN_REC_SIZE bytes whose checksum fails
 * but which carry every byte a pending chain record and its complete form
 * share (all but the CRC, the pending flag, and the 64
 * data bytes at REC_CHAIN_DATA_OFF). Event readers skip such a record (it
 * holds no event); only the chain's own walks judge it. */
int rec_chain_torn(const uint8_t *p, uint64_t avail);
#define REC_CHAIN_DATA_OFF (REC_HEADER_SIZE + 2u)

/* The kind (REC_EVENT for a compact record), position and created time
 * of the record whose first `n` bytes are at p, read without checking its
 * CRC or body: for scans that look at headers only. n is at least
 * REC_PEEK_SIZE or the record's length. 0, or -1 when the bytes do not
 * start a record header this build writes or reads. */
int rec_peek(const uint8_t *p, uint64_t n, uint8_t *kind, uint64_t *position,
             int64_t *created_us);

/* Segment header. */
void seg_header_encode(uint8_t out[SEG_HEADER_SIZE], uint64_t segno, uint64_t first_position,
                       int64_t created_us);
/* NULL if valid (fills segno and first_position), else a static reason. */
const char *seg_header_decode(const uint8_t in[SEG_HEADER_SIZE], uint64_t *segno,
                              uint64_t *first_position);

/* Every field of a segment header, either version. */
typedef struct seg_info {
    uint32_t version;        /* SEG_VERSION or SEG_VERSION_SCAVENGED */
    uint64_t segno;
    uint64_t first_position;
    int64_t created_us;
    /* version 2 only (zero otherwise) */
    uint64_t table_off;
    uint32_t nruns;
    uint32_t table_crc;
    int64_t scavenged_us;
} seg_info;

/* Decode a header of either version: NULL if valid, else a static reason. */
const char *seg_header_read(const uint8_t in[SEG_HEADER_SIZE], seg_info *out);
/* Encode a version 2 (scavenged) header from every field of *si. */
void seg_header_encode_scavenged(uint8_t out[SEG_HEADER_SIZE], const seg_info *si);

#endif
