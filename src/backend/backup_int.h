/*
 * backup_int.h - the backup directory shared by local_backup.c (writing a
 * backup or an archive from an open store) and local_restore.c (checking
 * one and rebuilding a store from it). docs/operations.md describes the
 * layout for operators; this is the one place that reads and writes it.
 *
 *   DEST/stele-backup.manifest   text, one item per line (below)
 *   DEST/segments/00000000.seg   copies of the log's segment files
 *   DEST/stele-backup.lock       flocked by the backup writing into DEST
 *
 * A segment copy holds the file's bytes up to the end of its written data
 * (a sealed plain segment: up to the end of its seal record; a scavenged
 * one: the whole file; the segment being written when the backup began:
 * up to the end of the last commit acknowledged then). The zero padding
 * of a preallocated segment is not copied; restore puts it back. The copy
 * of a segment that was being written is extended in place by the next
 * backup (the log only grows there), so it may be longer than its
 * manifest line says while or after that backup runs: readers take the
 * manifest's `bytes` and check those; a sealed copy is exactly `bytes`.
 *
 * Manifest:
 *
 *   stele-backup 1
 *   store <created µs of the store's first segment>
 *   end <next position> <location past the last commit> <created µs of it>
 *   seg <no> <version> <bytes> <size> <crc32c> <header crc32c> <sealed 0|1>
 *   ...
 *   done
 *
 * `bytes` is the copy's length and `crc32c` its checksum; `size` the
 * length of the segment file in the store (restore pads to it); `header
 * crc32c` the checksum of the file's first 64 bytes, which tells an
 * unchanged sealed segment (same header) from one rewritten by scavenging
 * (a version 2 header with its own scavenge time). The last line "done"
 * shows the manifest is whole. The manifest is replaced atomically (written
 * under a temporary name, synced, renamed), after every copy it names is
 * synced: a backup that stops half way leaves the previous one usable.
 */
#ifndef STELE_BACKUP_INT_H
#define STELE_BACKUP_INT_H

#include <stdint.h>

#define BK_MANIFEST "stele-backup.manifest"
#define BK_SEGDIR "segments"
#define BK_VERSION 1

typedef struct bk_seg {
    uint32_t segno;
    uint32_t version;     /* the segment header's: 1 plain, 2 scavenged */
    uint64_t bytes;       /* length of the copy */
    uint64_t size;        /* length of the file in the store */
    uint32_t crc;         /* CRC32C of the copy */
    uint32_t hdr_crc;     /* CRC32C of the first 64 bytes */
    int sealed;
} bk_seg;

typedef struct bk_manifest {
    int64_t store_created;  /* identity of the store it was taken from */
    uint64_t end_position;  /* next position after the last event */
    uint64_t end_loc;       /* location past the last commit */
    int64_t end_time;       /* created µs of the last commit (0 if none) */
    bk_seg *segs;           /* by segment number, without gaps */
    uint32_t nsegs, cap;
} bk_manifest;

/* Read DEST's manifest. 0; STELE_ENOTFOUND when there is none (message
 * set); ECORRUPT naming the manifest and line when it is malformed. */
int bk_manifest_read(const char *dir, bk_manifest *m);
/* Write it atomically (temporary file, fsync, rename, fsync dir). */
int bk_manifest_write(const char *dir, const bk_manifest *m);
int bk_manifest_add(bk_manifest *m, const bk_seg *s);
void bk_manifest_free(bk_manifest *m);
/* "DIR/segments/00000003.seg" */
void bk_seg_path(const char *dir, uint32_t segno, char *out, size_t n);

#endif
