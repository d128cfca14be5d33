/*
 * test_recovery.c - recovery from torn tails and from damage.
 *
 * Two stores are built with a known set of commits (some multi-event, ids
 * given by the test or made by the store, metadata, tags, flags): one with
 * 64 KiB segments (several segment files) whose last commit is small (2
 * events), and one with the default segment size whose last commit is big
 * (7 events of ~15 KB: it always holds a sparse $all position entry, which
 * the index puts every 64 KiB of log). Every case works on a fresh copy of
 * a store (what `cp -a` does, done in-process: a fork+exec per case costs
 * more than the case, and the index is a sparse file whose holes must stay
 * holes):
 *
 *   torn tails   the last segment file is cut (ftruncate) at every byte
 *                offset of its last commit (for the big commit: a stride
 *                plus every record boundary +-1), or the last commit (or
 *                its last record) is overwritten with zeros: the store must
 *                open and equal the store before that commit exactly ($all
 *                both ways, every stream, heads, stats), a retry of the cut
 *                commit (same ids) must be written anew at the next
 *                positions, and stele_check must pass after close;
 *   damage       a flipped byte in an event record before the last commit
 *                (early segments, and the last segment): stele_check, the
 *                CLI and open with STELE_OPEN_VERIFY fail with ECORRUPT
 *                naming the segment file and the record's offset; a plain
 *                open may succeed, but reads of the damaged event then fail
 *                with ECORRUPT naming the place (never skip it, never return
 *                wrong bytes); with the index deleted, the plain open (a
 *                rebuild) and stele_check fail naming the place. A flipped
 *                byte in a non-last segment header, or a missing middle
 *                segment: open and check fail naming the segment. A flipped
 *                byte in the last segment's header (the segment holds
 *                acknowledged commits): open fails naming the segment, or
 *                keeps every event and leaves a store that passes check;
 *   index        a deleted index is rebuilt with identical data; an index
 *                damaged behind the engine's back plus "open <other boot
 *                id>" in stele.lock (a machine crash while open) is rebuilt;
 *   locking      stele_check (and a second stele_open) of a store open in
 *                this process fail with ELOCKED.
 *
 * Replay with TEST_SEED=n. TEST_KEEP_DIRS=1 keeps the directories.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "index/index.h"
#include "log/record.h"
#include "util/util.h"

#define SMALL_SEG (64u * 1024u)
#define MAX_STREAMS 16

static uint64_t g_seed;
static int g_passed;

/* ------------------------------------------------------------ the model */

typedef struct mev {
    char stream[32];
    char type[32];
    uint8_t *data;
    size_t data_len;
    uint8_t *meta;
    size_t meta_len;
    char tags[3][24];
    size_t ntags;
    uint32_t flags;
    uint8_t id[16];
    int client_id;
    uint64_t revision, position;
    int64_t created_us;
    size_t commit_first, commit_n; /* the commit (append) it was written by */
} mev;

typedef struct store {
    char dir[512];
    uint64_t seg_size;     /* what stele_open gets (0 = default) */
    mev *ev;
    size_t n, cap;
    size_t last_first;     /* model index of the last commit's first event */
    size_t last_count;     /* events in the last commit */
    int64_t last_expected; /* expected revision the last commit was written with */
    char streams[MAX_STREAMS][32];
    int nstreams;
    /* where the last commit is in the log */
    uint32_t last_segno;
    uint64_t last_off, last_end;          /* [off, end) in the last segment */
    uint64_t last_rec_off[64];             /* record boundaries of the last commit */
    int last_nrec;
} store;

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct lrng {
    uint64_t s;
} lrng;

static uint64_t lr_next(lrng *r) { return r->s = mix64(r->s); }
static uint64_t lr_below(lrng *r, uint64_t n) { return n ? lr_next(r) % n : 0; }

/* Fill model event `e` deterministically from (seed, salt). */
static void make_event(mev *e, const char *stream, uint64_t salt, size_t min_data,
                       size_t max_data, int force_client_id)
{
    lrng r = {mix64(g_seed ^ (salt * 0x100000001b3ull))};
    memset(e, 0, sizeof *e);
    snprintf(e->stream, sizeof e->stream, "%s", stream);
    snprintf(e->type, sizeof e->type, "Type%" PRIu64 "-%" PRIu64, lr_below(&r, 20), salt);
    e->data_len = min_data + lr_below(&r, max_data - min_data + 1);
    e->data = malloc(e->data_len + 1);
    for (size_t i = 0; i < e->data_len; i++)
        e->data[i] = (uint8_t)lr_next(&r);
    if (lr_below(&r, 3)) {
        e->meta_len = lr_below(&r, max_data <= 64 ? 16 : 120);
        e->meta = malloc(e->meta_len + 1);
        for (size_t i = 0; i < e->meta_len; i++)
            e->meta[i] = (uint8_t)lr_next(&r);
    }
    e->ntags = lr_below(&r, max_data <= 64 ? 2 : 4);
    if (max_data <= 64 && e->meta_len > 8)
        e->meta_len = 8;
    for (size_t i = 0; i < e->ntags; i++)
        snprintf(e->tags[i], sizeof e->tags[i], "tag-%" PRIu64, lr_below(&r, 1000));
    e->flags = (uint32_t)lr_below(&r, 4);
    e->client_id = force_client_id || lr_below(&r, 2);
    if (e->client_id) {
        for (int i = 0; i < 16; i++)
            e->id[i] = (uint8_t)lr_next(&r);
        e->id[6] = (uint8_t)(0x40 | (e->id[6] & 0x0f));
        e->id[8] = (uint8_t)(0x80 | (e->id[8] & 0x3f));
    }
}

static void model_free(store *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->ev[i].data);
        free(s->ev[i].meta);
    }
    free(s->ev);
    s->ev = NULL;
    s->n = s->cap = 0;
}

static mev *model_push(store *s)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->ev = realloc(s->ev, s->cap * sizeof *s->ev);
        if (!s->ev)
            abort();
    }
    return &s->ev[s->n++];
}

static void note_stream(store *s, const char *name)
{
    for (int i = 0; i < s->nstreams; i++)
        if (!strcmp(s->streams[i], name))
            return;
    if (s->nstreams < MAX_STREAMS)
        snprintf(s->streams[s->nstreams++], sizeof s->streams[0], "%s", name);
}

/* Last revision of `stream` among the first n model events, or STELE_NONE. */
static uint64_t model_last_rev(const store *s, const char *stream, size_t n)
{
    for (size_t i = n; i-- > 0;)
        if (!strcmp(s->ev[i].stream, stream))
            return s->ev[i].revision;
    return STELE_NONE;
}

static void to_event_in(const mev *e, stele_event_in *in, const char **tagp)
{
    memset(in, 0, sizeof *in);
    in->id = e->client_id ? e->id : NULL;
    in->type = e->type;
    in->data = e->data;
    in->data_len = e->data_len;
    in->metadata = e->meta;
    in->metadata_len = e->meta_len;
    for (size_t i = 0; i < e->ntags; i++)
        tagp[i] = e->tags[i];
    in->tags = e->ntags ? tagp : NULL;
    in->ntags = e->ntags;
    in->flags = e->flags;
}

/* Compare a stored event with the model. `full`: also the made id and
 * created_us (known once the store has been read back). */
static int ev_equal(const stele_event *e, const mev *m, int full)
{
    const char *why = NULL;
    if (e->stream_len != strlen(m->stream) || strcmp(e->stream, m->stream))
        why = "stream";
    else if (e->type_len != strlen(m->type) || strcmp(e->type, m->type))
        why = "type";
    else if (e->data_len != m->data_len || (m->data_len && memcmp(e->data, m->data, m->data_len)))
        why = "data";
    else if (e->metadata_len != m->meta_len ||
             (m->meta_len && memcmp(e->metadata, m->meta, m->meta_len)))
        why = "metadata";
    else if (e->ntags != m->ntags)
        why = "tag count";
    else if (e->flags != m->flags)
        why = "flags";
    else if (e->revision != m->revision)
        why = "revision";
    else if (e->position != m->position)
        why = "position";
    else if ((m->client_id || full) && memcmp(e->id, m->id, 16))
        why = "id";
    else if (full && e->created_us != m->created_us)
        why = "created_us";
    for (size_t i = 0; !why && i < m->ntags; i++)
        if (strcmp(e->tags[i], m->tags[i]))
            why = "tag";
    if (why)
        fprintf(stderr, "event at position %" PRIu64 " (model position %" PRIu64
                        ", stream %s rev %" PRIu64 "): %s differs\n",
                e->position, m->position, m->stream, m->revision, why);
    return why == NULL;
}

/* ----------------------------------------------------------- file helpers */

/* Remove everything inside `dir` (not `dir` itself). */
static void clear_tree(const char *dir)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        CHECK(lstat(path, &st) == 0);
        if (S_ISDIR(st.st_mode)) {
            clear_tree(path);
            CHECK(rmdir(path) == 0);
        } else {
            CHECK(unlink(path) == 0);
        }
    }
    if (d)
        closedir(d);
}

/* Copy a regular file, keeping holes: the index (LMDB with MDB_WRITEMAP)
 * is a large sparse file, and copying its holes as zeros would write
 * gigabytes. Copies the data extents (SEEK_DATA/SEEK_HOLE) like cp. */
static void copy_file(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, mode & 07777);
    CHECK(in >= 0 && out >= 0);
    struct stat st;
    CHECK(fstat(in, &st) == 0);
    CHECK(ftruncate(out, st.st_size) == 0);
    static uint8_t chunk[1 << 20];
    off_t off = 0;
    while (off < st.st_size) {
        off_t data = lseek(in, off, SEEK_DATA);
        if (data < 0)
            break; /* ENXIO: only a hole is left */
        off_t hole = lseek(in, data, SEEK_HOLE);
        CHECK(hole > data);
        if (hole <= data)
            break;
        for (off_t p = data; p < hole;) {
            size_t want = (size_t)(hole - p) < sizeof chunk ? (size_t)(hole - p) : sizeof chunk;
            ssize_t n = pread(in, chunk, want, p);
            CHECK(n > 0);
            if (n <= 0)
                break;
            CHECK(pwrite(out, chunk, (size_t)n, p) == n);
            p += n;
        }
        off = hole;
    }
    close(in);
    close(out);
}

/* Copy the contents of directory `src` into the existing directory `dst`
 * (what `cp -a src/. dst/` does for a store: directories and regular
 * files with their modes; done in-process because a fork+exec per case
 * costs more than the case itself). */
static void copy_tree(const char *src, const char *dst)
{
    DIR *d = opendir(src);
    CHECK(d != NULL);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char from[1024], to[1024];
        snprintf(from, sizeof from, "%s/%s", src, de->d_name);
        snprintf(to, sizeof to, "%s/%s", dst, de->d_name);
        struct stat st;
        CHECK(lstat(from, &st) == 0);
        if (S_ISDIR(st.st_mode)) {
            CHECK(mkdir(to, st.st_mode & 07777) == 0);
            copy_tree(from, to);
        } else if (S_ISREG(st.st_mode)) {
            copy_file(from, to, st.st_mode);
        }
    }
    if (d)
        closedir(d);
}

/* One scratch directory (from t_tmpdir) reused by every case: emptied and
 * refilled with a fresh copy of the store. */
static char g_work[512];

static const char *copy_store(const char *src, const char *tag)
{
    (void)tag;
    if (!g_work[0])
        snprintf(g_work, sizeof g_work, "%s", t_tmpdir("recovery-work"));
    clear_tree(g_work);
    copy_tree(src, g_work);
    return g_work;
}

static void remove_index(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/index", dir);
    clear_tree(path);
    CHECK(rmdir(path) == 0);
}

static void seg_file(const char *dir, uint32_t segno, char *out, size_t n)
{
    snprintf(out, n, "%s/log/%08u.seg", dir, segno);
}

/* Highest segment number in dir/log. */
static uint32_t last_segno(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/log", dir);
    DIR *d = opendir(path);
    CHECK(d != NULL);
    long best = -1;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len == 12 && !strcmp(de->d_name + 8, ".seg")) {
            long v = strtol(de->d_name, NULL, 10);
            if (v > best)
                best = v;
        }
    }
    if (d)
        closedir(d);
    CHECK(best >= 0);
    return (uint32_t)best;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    uint8_t *p = malloc((size_t)st.st_size + 1);
    size_t done = 0;
    while (done < (size_t)st.st_size) {
        ssize_t r = pread(fd, p + done, (size_t)st.st_size - done, (off_t)done);
        CHECK(r > 0);
        if (r <= 0)
            break;
        done += (size_t)r;
    }
    close(fd);
    *len = done;
    return p;
}

typedef struct recinfo {
    uint64_t off;
    uint32_t len;
    uint8_t kind;
    uint32_t ci, cc;
    uint64_t pos, rev;
    char stream[64];
} recinfo;

/* Every record of segment `segno` (decoded with rec_decode) but chain records. */
static int scan_segment(const char *dir, uint32_t segno, recinfo **out)
{
    char path[600];
    seg_file(dir, segno, path, sizeof path);
    size_t len;
    uint8_t *p = read_file(path, &len);
    int n = 0, cap = 0;
    recinfo *v = NULL;
    uint64_t off = SEG_HEADER_SIZE;
    for (;;) {
        rec r;
        const char *why = "";
        rec_status st = rec_decode_in(p, off, off < len ? len - off : 0, &r, &why);
        if (st == REC_ZERO)
            break;
        if (st != REC_OK) {
            fprintf(stderr, "%s offset %" PRIu64 ": rec_decode %d %s\n", path, off, st, why);
            CHECK(st == REC_OK);
            break;
        }
        if (r.kind == REC_CHAIN) { /* the hash chain's, before each commit: not listed */
            off += r.len;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            v = realloc(v, (size_t)cap * sizeof *v);
        }
        recinfo *ri = &v[n++];
        memset(ri, 0, sizeof *ri);
        ri->off = off;
        ri->len = r.len;
        ri->kind = r.kind;
        ri->ci = r.commit_index;
        ri->cc = r.commit_count;
        ri->pos = r.position;
        ri->rev = r.revision;
        snprintf(ri->stream, sizeof ri->stream, "%.*s", (int)r.stream_len, r.stream);
        off += r.len;
        if (r.kind == REC_SEAL)
            break;
    }
    free(p);
    *out = v;
    return n;
}

static void truncate_file(const char *path, uint64_t len)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)len) == 0);
    close(fd);
}

static void zero_range(const char *path, uint64_t off, uint64_t len)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t *z = calloc(1, len ? len : 1);
    CHECK(pwrite(fd, z, len, (off_t)off) == (ssize_t)len);
    free(z);
    close(fd);
}

static void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t b = 0;
    CHECK(pread(fd, &b, 1, (off_t)off) == 1);
    b ^= 0x5a;
    CHECK(pwrite(fd, &b, 1, (off_t)off) == 1);
    close(fd);
}

static void write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
}

/* "segment 0000000N.seg" and "offset OFF" (OFF not followed by a digit). */
static int names_place(const char *msg, uint32_t segno, int64_t off)
{
    char name[32], o[48];
    snprintf(name, sizeof name, "%08u.seg", segno);
    if (!strstr(msg, name))
        return 0;
    if (off < 0)
        return 1;
    snprintf(o, sizeof o, "offset %" PRId64, off);
    for (const char *p = strstr(msg, o); p; p = strstr(p + 1, o)) {
        char c = p[strlen(o)];
        if (c < '0' || c > '9')
            return 1;
    }
    return 0;
}

#define CHECK_PLACE(msg, segno, off)                                                     \
    do {                                                                                 \
        const char *m_ = (msg);                                                          \
        if (!names_place(m_, (segno), (off))) {                                          \
            fprintf(stderr, "message \"%s\" does not name %08u.seg offset %" PRId64 "\n", \
                    m_, (unsigned)(segno), (int64_t)(off));                              \
            CHECK(!"message names the damaged place");                                  \
        }                                                                                \
    } while (0)

static const char *cli_path(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("STELE_CLI");
    if (env && *env)
        return env;
    /* Run by hand from build/tests: the CLI is build/stele. */
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 16);
    if (n > 0) {
        path[n] = 0;
        char *slash = strrchr(path, '/');
        if (slash) {
            strcpy(slash, "/../stele");
            if (access(path, X_OK) == 0)
                return path;
        }
    }
    fprintf(stderr, "STELE_CLI is not set and build/stele was not found\n");
    CHECK(!"STELE_CLI");
    return "stele";
}

/* Run `stele check DIR`; returns its exit status, output in out. */
static int cli_check(const char *dir, char *out, size_t n)
{
    char cmd[PATH_MAX + 1024];
    snprintf(cmd, sizeof cmd, "'%s' check '%s' 2>&1", cli_path(), dir);
    FILE *f = popen(cmd, "r");
    CHECK(f != NULL);
    size_t got = 0;
    if (f) {
        size_t r;
        while (got + 1 < n && (r = fread(out + got, 1, n - 1 - got, f)) > 0)
            got += r;
    }
    out[got] = 0;
    int st = f ? pclose(f) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* --------------------------------------------------------------- verify */

static stele_db *open_store(const store *s, const char *dir, uint32_t flags, int *rc)
{
    stele_options o = {0};
    o.segment_size = s->seg_size;
    o.flags = flags;
    stele_db *db = NULL;
    *rc = stele_open(dir, &o, &db);
    return *rc ? NULL : db;
}

/* The store holds exactly the first n model events. Stops at the first
 * difference (one report is enough). */
static void verify_prefix(stele_db *db, const store *s, size_t n)
{
    int failures = t_failures;
#define VCHECK(cond)                                                                    \
    do {                                                                                \
        CHECK(cond);                                                                    \
        if (t_failures != failures) {                                                   \
            fprintf(stderr, "  (verifying the first %zu events of %s)\n", n, s->dir);    \
            return;                                                                     \
        }                                                                               \
    } while (0)
    stele_stats stats;
    VCHECK(stele_get_stats(db, &stats) == 0);
    if (stats.events != n)
        fprintf(stderr, "store has %" PRIu64 " events, want %zu\n", stats.events, n);
    VCHECK(stats.events == n);
    VCHECK(stats.readonly == 0);

    /* $all forwards, in pages. */
    uint64_t from = 0;
    size_t seen = 0;
    size_t limit = 1 + (size_t)t_rand_below(60);
    for (int guard = 0; guard < 100000; guard++) {
        stele_page *pg = NULL;
        int rc = stele_read_all(db, from, STELE_FORWARDS, limit, &pg);
        CHECK_OK(rc);
        VCHECK(rc == 0);
        size_t c = stele_page_count(pg);
        int ok = 1;
        for (size_t i = 0; i < c && ok; i++, seen++) {
            const stele_event *e = stele_page_event(pg, i);
            ok = seen < n && e->position == seen && ev_equal(e, &s->ev[seen], 1);
        }
        uint64_t next = 0;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        VCHECK(ok);
        if (!more || c == 0)
            break;
        VCHECK(next == seen);
        from = next;
    }
    VCHECK(seen == n);

    /* $all backwards from the end. */
    uint64_t at = STELE_END;
    size_t back = 0;
    for (int guard = 0; guard < 100000; guard++) {
        stele_page *pg = NULL;
        int rc = stele_read_all(db, at, STELE_BACKWARDS, 97, &pg);
        CHECK_OK(rc);
        VCHECK(rc == 0);
        size_t c = stele_page_count(pg);
        int ok = 1;
        for (size_t i = 0; i < c && ok; i++, back++) {
            const stele_event *e = stele_page_event(pg, i);
            uint64_t want = n - 1 - back;
            ok = back < n && e->position == want && ev_equal(e, &s->ev[want], 1);
        }
        uint64_t next = 0;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        VCHECK(ok);
        if (!more || c == 0)
            break;
        at = next;
    }
    VCHECK(back == n);

    /* Every stream: forwards, its head, and the last event backwards. */
    for (int k = 0; k < s->nstreams; k++) {
        const char *name = s->streams[k];
        uint64_t last = model_last_rev(s, name, n);
        stele_stream_info info;
        stele_page *pg = NULL;
        if (last == STELE_NONE) {
            CHECK_RC(stele_stream_head(db, name, &info), STELE_ENOTFOUND);
            CHECK_RC(stele_read_stream(db, name, 0, STELE_FORWARDS, 10, &pg), STELE_ENOTFOUND);
            VCHECK(1);
            continue;
        }
        CHECK_OK(stele_stream_head(db, name, &info));
        VCHECK(info.last_revision == last);
        VCHECK(!info.deleted && !info.tombstoned);
        size_t mi = 0; /* model cursor over this stream's events */
        uint64_t rev = 0;
        for (int guard = 0; guard < 100000; guard++) {
            int rc = stele_read_stream(db, name, rev, STELE_FORWARDS, 7, &pg);
            CHECK_OK(rc);
            VCHECK(rc == 0);
            size_t c = stele_page_count(pg);
            int ok = 1;
            for (size_t i = 0; i < c && ok; i++) {
                while (mi < n && strcmp(s->ev[mi].stream, name))
                    mi++;
                ok = mi < n && ev_equal(stele_page_event(pg, i), &s->ev[mi], 1);
                mi++;
            }
            uint64_t next = 0;
            int more = stele_page_next(pg, &next);
            stele_page_free(pg);
            VCHECK(ok);
            if (!more || c == 0)
                break;
            rev = next;
        }
        while (mi < n && strcmp(s->ev[mi].stream, name))
            mi++;
        VCHECK(mi == n); /* no model event of the stream left unread */
        int rc = stele_read_stream(db, name, STELE_END, STELE_BACKWARDS, 1, &pg);
        CHECK_OK(rc);
        VCHECK(rc == 0);
        int ok = stele_page_count(pg) == 1 && stele_page_event(pg, 0)->revision == last &&
                 stele_page_event(pg, 0)->position == info.last_position;
        stele_page_free(pg);
        VCHECK(ok);
    }
#undef VCHECK
}

/* ---------------------------------------------------------------- build */

static void append_commit(stele_db *db, store *s, const char *stream, size_t count,
                          size_t min_data, size_t max_data, int force_ids, int64_t *expected_out)
{
    uint64_t cur = model_last_rev(s, stream, s->n);
    int64_t expected;
    switch (t_rand_below(4)) {
    case 0: expected = STELE_ANY; break;
    case 1: expected = cur == STELE_NONE ? STELE_NO_STREAM : STELE_STREAM_EXISTS; break;
    default: expected = cur == STELE_NONE ? STELE_NO_STREAM : (int64_t)cur; break;
    }
    if (force_ids) /* the retry test needs an exact expected revision */
        expected = cur == STELE_NONE ? STELE_NO_STREAM : (int64_t)cur;
    stele_event_in in[16];
    const char *tagp[16][3];
    size_t first = s->n;
    for (size_t i = 0; i < count; i++) {
        mev *e = model_push(s);
        make_event(e, stream, first + i, min_data, max_data, force_ids);
        e->position = first + i;
        e->revision = (cur == STELE_NONE ? 0 : cur + 1) + i;
        e->commit_first = first;
        e->commit_n = count;
    }
    for (size_t i = 0; i < count; i++)
        to_event_in(&s->ev[first + i], &in[i], tagp[i]);
    stele_append_result res;
    CHECK_OK(stele_append(db, stream, expected, in, count, &res));
    CHECK(res.first_position == first && res.last_position == first + count - 1);
    CHECK(res.first_revision == s->ev[first].revision);
    CHECK(!res.idempotent);
    note_stream(s, stream);
    if (expected_out)
        *expected_out = expected;
}

/* Build a store: `ncommits` random commits over 7 streams, then the last
 * commit (last_count events with client ids) to `last_stream`. */
static void build_store(store *s, uint64_t seg_size, int ncommits, size_t max_data,
                        const char *last_stream, size_t last_count, size_t last_min,
                        size_t last_max)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", t_tmpdir("recovery-base"));
    s->seg_size = seg_size;
    int rc;
    stele_db *db = open_store(s, s->dir, 0, &rc);
    CHECK_OK(rc);
    if (!db)
        return;
    for (int c = 0; c < ncommits; c++) {
        char stream[32];
        snprintf(stream, sizeof stream, "S-%d", (int)t_rand_below(7));
        /* Every fourth commit has client ids only (retried in tests). */
        append_commit(db, s, stream, 1 + (size_t)t_rand_below(4), 0, max_data, c % 4 == 3,
                      NULL);
    }
    s->last_first = s->n;
    s->last_count = last_count;
    append_commit(db, s, last_stream, last_count, last_min, last_max, 1, &s->last_expected);

    /* Learn the made ids and timestamps (checking everything else). */
    uint64_t from = 0;
    size_t seen = 0;
    for (;;) {
        stele_page *pg;
        CHECK_OK(stele_read_all(db, from, STELE_FORWARDS, 1000, &pg));
        size_t c = stele_page_count(pg);
        for (size_t i = 0; i < c && seen < s->n; i++, seen++) {
            const stele_event *e = stele_page_event(pg, i);
            CHECK(ev_equal(e, &s->ev[seen], 0));
            if (!s->ev[seen].client_id)
                memcpy(s->ev[seen].id, e->id, 16);
            s->ev[seen].created_us = e->created_us;
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || !c)
            break;
        from = next;
    }
    CHECK(seen == s->n);
    verify_prefix(db, s, s->n);
    stele_stats st;
    CHECK_OK(stele_get_stats(db, &st));
    printf("  built %s: %zu events in %" PRIu64 " segment(s)\n", s->dir, s->n, st.segments);
    stele_close(db);
    CHECK_OK(stele_check(s->dir, NULL, 0));

    /* Find the last commit in the last segment file. */
    s->last_segno = last_segno(s->dir);
    recinfo *ri;
    int nr = scan_segment(s->dir, s->last_segno, &ri);
    CHECK(nr >= (int)last_count);
    int first_rec = nr - (int)last_count;
    CHECK(first_rec >= 0 && ri[first_rec].ci == 0 && ri[first_rec].kind == REC_EVENT);
    CHECK(ri[first_rec].cc == last_count && ri[first_rec].pos == s->last_first);
    CHECK(!strcmp(ri[first_rec].stream, last_stream));
    s->last_off = ri[first_rec].off;
    s->last_end = ri[nr - 1].off + ri[nr - 1].len;
    s->last_nrec = 0;
    for (int i = first_rec; i < nr; i++)
        s->last_rec_off[s->last_nrec++] = ri[i].off;
    free(ri);
}

/* ------------------------------------------------------------ torn tails */

/* Open a damaged copy whose last commit is gone (or intact if `intact`),
 * check it, retry the last commit, close, check. */
static void expect_previous_state(const store *s, const char *dir, int intact, const char *what)
{
    int rc;
    stele_db *db = open_store(s, dir, 0, &rc);
    if (rc) {
        fprintf(stderr, "%s: open: %s: %s\n", what, stele_errname(rc), stele_errmsg());
        CHECK_OK(rc);
        return;
    }
    size_t prev = intact ? s->n : s->last_first;
    int failures = t_failures;
    verify_prefix(db, s, prev);
    if (t_failures != failures)
        fprintf(stderr, "  (case: %s)\n", what);

    /* Retry the last commit with the same ids and expected revision: new
     * if it was cut (the cut ids are no longer indexed), idempotent if not. */
    stele_event_in in[16];
    const char *tagp[16][3];
    for (size_t i = 0; i < s->last_count; i++)
        to_event_in(&s->ev[s->last_first + i], &in[i], tagp[i]);
    stele_append_result res;
    rc = stele_append(db, s->ev[s->last_first].stream, s->last_expected, in, s->last_count,
                      &res);
    if (rc)
        fprintf(stderr, "%s: retry of the last commit: %s: %s\n", what, stele_errname(rc),
                stele_errmsg());
    CHECK_OK(rc);
    CHECK(res.first_position == s->last_first);
    CHECK(res.first_revision == s->ev[s->last_first].revision);
    CHECK(res.idempotent == intact);
    stele_page *pg;
    CHECK_OK(stele_read_all(db, s->last_first, STELE_FORWARDS, 100, &pg));
    CHECK(stele_page_count(pg) == s->last_count);
    for (size_t i = 0; i < stele_page_count(pg) && i < s->last_count; i++)
        CHECK(ev_equal(stele_page_event(pg, i), &s->ev[s->last_first + i], intact));
    stele_page_free(pg);
    if (intact) {
        /* One more append gets the next position. */
        stele_event_in one = {.type = "After", .data = "x", .data_len = 1};
        CHECK_OK(stele_append(db, "After", STELE_NO_STREAM, &one, 1, &res));
        CHECK(res.first_position == s->n);
    }
    stele_close(db);
    char report[1024];
    rc = stele_check(dir, report, sizeof report);
    if (rc)
        fprintf(stderr, "%s: check: %s\n", what, stele_errmsg());
    CHECK_OK(rc);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Cut the last segment at offsets of the last commit: every offset when
 * stride is 1, else a stride plus every record boundary +-1. */
static void test_torn_tails(const store *s, uint64_t stride)
{
    char seg[600];
    uint64_t *offs = malloc(sizeof *offs * (s->last_end - s->last_off + 64));
    size_t n = 0;
    for (uint64_t o = s->last_off; o <= s->last_end; o += stride)
        offs[n++] = o;
    offs[n++] = s->last_end;
    for (int i = 0; i < s->last_nrec; i++) {
        uint64_t b = s->last_rec_off[i];
        offs[n++] = b - 1;
        offs[n++] = b;
        offs[n++] = b + 1;
    }
    offs[n++] = s->last_end - 1;
    qsort(offs, n, sizeof *offs, cmp_u64);
    size_t cases = 0;
    for (size_t i = 0; i < n; i++) {
        if ((i && offs[i] == offs[i - 1]) || offs[i] < s->last_off || offs[i] > s->last_end)
            continue;
        const char *dir = copy_store(s->dir, "recovery-cut");
        seg_file(dir, s->last_segno, seg, sizeof seg);
        truncate_file(seg, offs[i]);
        char what[128];
        snprintf(what, sizeof what, "cut %08u.seg at %" PRIu64 " (last commit %" PRIu64 "..%" PRIu64
                 ")", s->last_segno, offs[i], s->last_off, s->last_end);
        expect_previous_state(s, dir, offs[i] == s->last_end, what);
        cases++;
        g_passed++;
    }
    free(offs);
    printf("  torn tails: %zu cut offsets in [%" PRIu64 ", %" PRIu64 "]\n", cases, s->last_off,
           s->last_end);

    /* The whole last commit overwritten with zeros, file size kept. */
    const char *dir = copy_store(s->dir, "recovery-zero");
    seg_file(dir, s->last_segno, seg, sizeof seg);
    struct stat before, after;
    CHECK(stat(seg, &before) == 0);
    zero_range(seg, s->last_off, s->last_end - s->last_off);
    CHECK(stat(seg, &after) == 0 && after.st_size == before.st_size);
    expect_previous_state(s, dir, 0, "last commit zeroed");
    /* Only its last record zeroed: an incomplete commit. */
    dir = copy_store(s->dir, "recovery-zero");
    seg_file(dir, s->last_segno, seg, sizeof seg);
    uint64_t lr = s->last_rec_off[s->last_nrec - 1];
    zero_range(seg, lr, s->last_end - lr);
    expect_previous_state(s, dir, 0, "last record of the last commit zeroed");
    g_passed += 2;
}

/* -------------------------------------------------------------- damage */

/* Expect a read to fail with ECORRUPT naming (segno, off), after returning
 * only correct events: page through with `limit`. */
static void expect_read_corrupt(stele_db *db, const store *s, const char *stream, int all,
                                uint64_t from, int dir, size_t limit, uint32_t segno,
                                uint64_t off, uint64_t bad_pos)
{
    int got_corrupt = 0;
    for (int guard = 0; guard < 100000; guard++) {
        stele_page *pg = NULL;
        int rc = all ? stele_read_all(db, from, dir, limit, &pg)
                     : stele_read_stream(db, stream, from, dir, limit, &pg);
        if (rc) {
            if (rc != STELE_ECORRUPT)
                fprintf(stderr, "read %s from %" PRIu64 " dir %d: %s: %s\n", all ? "$all" : stream,
                        from, dir, stele_errname(rc), stele_errmsg());
            CHECK_RC(rc, STELE_ECORRUPT);
            CHECK_PLACE(stele_errmsg(), segno, (int64_t)off);
            got_corrupt = 1;
            break;
        }
        size_t c = stele_page_count(pg);
        for (size_t i = 0; i < c; i++) {
            const stele_event *e = stele_page_event(pg, i);
            CHECK(e->position != bad_pos);
            CHECK(e->position < s->n);
            if (e->position < s->n)
                CHECK(ev_equal(e, &s->ev[e->position], 1));
        }
        uint64_t next;
        int more = stele_page_next(pg, &next);
        stele_page_free(pg);
        if (!more || !c)
            break;
        from = next;
    }
    if (!got_corrupt)
        fprintf(stderr, "read %s from %" PRIu64 " dir %d limit %zu ended without ECORRUPT "
                        "(damaged position %" PRIu64 " skipped)\n",
                all ? "$all" : stream, from, dir, limit, bad_pos);
    CHECK(got_corrupt);
}

/* Flip byte `byte` of the record `ri` in segment `segno` and run every
 * damage expectation. */
static void damage_case(const store *s, uint32_t segno, const recinfo *ri, uint64_t byte,
                        const char *what)
{
    char seg[600], out[4096];
    uint64_t pos = ri->pos;
    CHECK(ri->kind == REC_EVENT && pos < s->last_first);
    const mev *m = &s->ev[pos];
    printf("  damage: %s: %08u.seg record at %" PRIu64 " byte %" PRIu64 " (position %" PRIu64
           ", %s rev %" PRIu64 ")\n",
           what, segno, ri->off, byte, pos, m->stream, m->revision);

    const char *dir = copy_store(s->dir, "recovery-flip");
    seg_file(dir, segno, seg, sizeof seg);
    flip_byte(seg, ri->off + byte);

    /* stele_check and the CLI. */
    char report[1024];
    CHECK_RC(stele_check(dir, report, sizeof report), STELE_ECORRUPT);
    CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
    int st = cli_check(dir, out, sizeof out);
    CHECK(st != 0);
    CHECK_PLACE(out, segno, (int64_t)ri->off);

    /* Open with VERIFY. */
    int rc;
    stele_db *db = open_store(s, dir, STELE_OPEN_VERIFY, &rc);
    CHECK_RC(rc, STELE_ECORRUPT);
    if (rc == STELE_ECORRUPT)
        CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
    stele_close(db);

    /* Plain open: may succeed (the indexed log is not rescanned), but the
     * damaged event is never read as if it were fine. */
    db = open_store(s, dir, 0, &rc);
    if (rc) {
        CHECK_RC(rc, STELE_ECORRUPT);
        CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
    } else {
        stele_page *pg = NULL;
        CHECK_RC(stele_read_stream(db, m->stream, m->revision, STELE_FORWARDS, 1, &pg),
                 STELE_ECORRUPT);
        CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
        CHECK_RC(stele_read_stream(db, m->stream, m->revision, STELE_BACKWARDS, 1, &pg),
                 STELE_ECORRUPT);
        CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
        CHECK_RC(stele_read_all(db, pos, STELE_FORWARDS, 1, &pg), STELE_ECORRUPT);
        CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
        CHECK_RC(stele_read_all(db, pos, STELE_BACKWARDS, 1, &pg), STELE_ECORRUPT);
        CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
        /* Paging over it, both ways, with several page sizes. */
        size_t limits[] = {1, 5, 64, 100000};
        for (int i = 0; i < 4; i++) {
            expect_read_corrupt(db, s, NULL, 1, 0, STELE_FORWARDS, limits[i], segno, ri->off, pos);
            expect_read_corrupt(db, s, NULL, 1, STELE_END, STELE_BACKWARDS, limits[i], segno,
                                ri->off, pos);
            expect_read_corrupt(db, s, m->stream, 0, 0, STELE_FORWARDS, limits[i], segno, ri->off,
                                pos);
            expect_read_corrupt(db, s, m->stream, 0, STELE_END, STELE_BACKWARDS, limits[i],
                                segno, ri->off, pos);
        }
        stele_close(db);
    }

    /* Without the index the open rebuilds from the log: it must fail. */
    dir = copy_store(s->dir, "recovery-flip");
    seg_file(dir, segno, seg, sizeof seg);
    flip_byte(seg, ri->off + byte);
    remove_index(dir);
    CHECK_RC(stele_check(dir, report, sizeof report), STELE_ECORRUPT);
    CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
    db = open_store(s, dir, 0, &rc);
    CHECK_RC(rc, STELE_ECORRUPT);
    if (rc == STELE_ECORRUPT)
        CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
    stele_close(db);
    /* ... and keeps failing (the failed open cut nothing). */
    db = open_store(s, dir, 0, &rc);
    CHECK_RC(rc, STELE_ECORRUPT);
    stele_close(db);
    CHECK_RC(stele_check(dir, report, sizeof report), STELE_ECORRUPT);
    CHECK_PLACE(stele_errmsg(), segno, (int64_t)ri->off);
    g_passed++;
}

static void test_flipped_records(const store *s)
{
    CHECK(s->last_segno >= 3);
    recinfo *ri;
    /* (1) the middle record of segment 1, a byte in its body; */
    int nr = scan_segment(s->dir, 1, &ri);
    int k = nr / 2;
    while (k < nr && ri[k].kind != REC_EVENT)
        k++;
    CHECK(k < nr);
    damage_case(s, 1, &ri[k], ri[k].len / 2, "body byte, mid segment");
    /* (2) a random record of segment 1, a random byte (header or body); */
    k = (int)t_rand_below((uint64_t)nr - 1);
    damage_case(s, 1, &ri[k], t_rand_below(ri[k].len), "random byte");
    free(ri);
    /* (3) the first record of segment 2 (a sparse position entry points at
     * it), its position field; */
    nr = scan_segment(s->dir, 2, &ri);
    CHECK(nr > 2 && ri[0].kind == REC_EVENT);
    damage_case(s, 2, &ri[0], 24, "position field, first record of a segment");
    free(ri);
    /* (4) the last segment, a commit before the last one. */
    nr = scan_segment(s->dir, s->last_segno, &ri);
    k = nr - (int)s->last_count - 1;
    if (k >= 0 && ri[k].kind == REC_EVENT)
        damage_case(s, s->last_segno, &ri[k], 72 + t_rand_below(ri[k].len - 72),
                    "last segment, commit before the last");
    else
        fprintf(stderr, "note: the last segment holds only the last commit\n");
    free(ri);
}

/* A byte of a non-last segment's header. */
static void test_segment_header(const store *s)
{
    static const uint64_t bytes[] = {0, 7, 8, 12, 16, 24, 31, 32, 40, 63};
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++) {
        uint32_t segno = 1 + (uint32_t)t_rand_below(s->last_segno - 1);
        const char *dir = copy_store(s->dir, "recovery-hdr");
        char seg[600];
        seg_file(dir, segno, seg, sizeof seg);
        flip_byte(seg, bytes[i]);
        int rc;
        stele_db *db = open_store(s, dir, 0, &rc);
        if (rc != STELE_ECORRUPT)
            fprintf(stderr, "segment %u header byte %" PRIu64 " flipped\n", segno, bytes[i]);
        /* The version field is outside the header CRC: "unsupported
         * version" is an acceptable answer there. */
        int version = bytes[i] >= 8 && bytes[i] < 12;
        if (!(version && rc == STELE_EVERSION))
            CHECK_RC(rc, STELE_ECORRUPT);
        CHECK_PLACE(stele_errmsg(), segno, -1);
        stele_close(db);
        rc = stele_check(dir, NULL, 0);
        if (!(version && rc == STELE_EVERSION))
            CHECK_RC(rc, STELE_ECORRUPT);
        CHECK_PLACE(stele_errmsg(), segno, -1);
        }
    /* Segment 0's header too (the first segment, not the last). */
    const char *dir = copy_store(s->dir, "recovery-hdr");
    char seg[600];
    seg_file(dir, 0, seg, sizeof seg);
    flip_byte(seg, 20);
    int rc;
    stele_db *db = open_store(s, dir, 0, &rc);
    CHECK_RC(rc, STELE_ECORRUPT);
    CHECK_PLACE(stele_errmsg(), 0, -1);
    stele_close(db);
    g_passed++;
}

/* A byte of the LAST segment's header, the segment holding data: damage
 * like any other (the header is not the torn tail; the records after it are
 * acknowledged). Open must fail naming the segment, or - if it repairs the
 * header - keep every event. */
static void test_last_segment_header(const store *s)
{
    static const uint64_t bytes[] = {0, 20, 28, 50};
    for (int noindex = 0; noindex < 2; noindex++)
        for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++) {
            const char *dir = copy_store(s->dir, "recovery-lasthdr");
            char seg[600];
            seg_file(dir, s->last_segno, seg, sizeof seg);
            flip_byte(seg, bytes[i]);
            if (noindex)
                remove_index(dir);
            int rc;
            stele_db *db = open_store(s, dir, 0, &rc);
            printf("  last segment header byte %" PRIu64 "%s: open %s: %s\n", bytes[i],
                   noindex ? " (no index)" : "", stele_errname(rc), rc ? stele_errmsg() : "");
            if (rc) {
                CHECK_RC(rc, STELE_ECORRUPT);
                CHECK_PLACE(stele_errmsg(), s->last_segno, -1);
            } else {
                int failures = t_failures;
                verify_prefix(db, s, s->n);
                stele_close(db);
                CHECK_OK(stele_check(dir, NULL, 0));
                if (t_failures != failures)
                    fprintf(stderr, "  (case: last segment header byte %" PRIu64 "%s)\n",
                            bytes[i], noindex ? ", no index" : "");
            }
        }
    g_passed++;
}

static void test_missing_segment(const store *s)
{
    for (uint32_t segno = 1; segno < s->last_segno; segno++) {
        const char *dir = copy_store(s->dir, "recovery-missing");
        char seg[600];
        seg_file(dir, segno, seg, sizeof seg);
        CHECK(unlink(seg) == 0);
        int rc;
        stele_db *db = open_store(s, dir, 0, &rc);
        CHECK(rc != 0);
        CHECK_RC(rc, STELE_ECORRUPT);
        CHECK_PLACE(stele_errmsg(), segno, -1);
        stele_close(db);
        CHECK(stele_check(dir, NULL, 0) != 0);
        CHECK_PLACE(stele_errmsg(), segno, -1);
        }
    g_passed++;
}

/* ------------------------------------------------------------ the index */

/* The first event of a commit in the middle of the log whose events all
 * have client ids (a retry of it is idempotent). */
static size_t find_client_commit(const store *s)
{
    for (size_t i = s->last_first / 2; i < s->last_first; i++) {
        const mev *e = &s->ev[i];
        if (e->commit_first != i)
            continue;
        int all = 1;
        for (size_t j = 0; j < e->commit_n; j++)
            all &= s->ev[i + j].client_id;
        if (all)
            return i;
    }
    return SIZE_MAX;
}

static void check_rebuilt(const store *s, const char *dir, const char *what)
{
    int rc;
    stele_db *db = open_store(s, dir, 0, &rc);
    if (rc)
        fprintf(stderr, "%s: open: %s\n", what, stele_errmsg());
    CHECK_OK(rc);
    if (!db)
        return;
    verify_prefix(db, s, s->n);
    /* The ids index is back: retrying a single client-id event of the
     * middle of the log is idempotent, not a new event. */
    size_t i = find_client_commit(s);
    CHECK(i != SIZE_MAX);
    if (i != SIZE_MAX) {
        stele_event_in in[16];
        const char *tagp[16][3];
        size_t cn = s->ev[i].commit_n;
        for (size_t j = 0; j < cn; j++)
            to_event_in(&s->ev[i + j], &in[j], tagp[j]);
        stele_append_result res;
        int64_t exp = s->ev[i].revision == 0 ? STELE_NO_STREAM : (int64_t)s->ev[i].revision - 1;
        CHECK_OK(stele_append(db, s->ev[i].stream, exp, in, cn, &res));
        CHECK(res.idempotent == 1);
        CHECK(res.first_position == s->ev[i].position);
        CHECK(res.last_position == s->ev[i].position + cn - 1);
    }
    stele_event_in one = {.type = "After", .data = "y", .data_len = 1};
    stele_append_result res;
    CHECK_OK(stele_append(db, "After", STELE_NO_STREAM, &one, 1, &res));
    CHECK(res.first_position == s->n);
    stele_close(db);
    rc = stele_check(dir, NULL, 0);
    if (rc)
        fprintf(stderr, "%s: check: %s\n", what, stele_errmsg());
    CHECK_OK(rc);
}

static void test_deleted_index(const store *s)
{
    const char *dir = copy_store(s->dir, "recovery-noindex");
    remove_index(dir);
    char report[1024];
    CHECK_OK(stele_check(dir, report, sizeof report)); /* the log alone is sound */
    check_rebuilt(s, dir, "deleted index");
    g_passed++;
}

/* A commit whose checksums match but which holds one client event id
 * twice (the append edge refuses such an append, so only an altered log has
 * one): recovery refuses to replay it, naming where it lies, and so does
 * stele check. Made from a real two-event commit by copying its first
 * event's id over the second's and fixing that record's CRC. */
static void test_duplicate_id(const store *s)
{
    const char *dir = copy_store(s->dir, "recovery-dupid");
    char seg[600];
    uint32_t segno = 1;
    seg_file(dir, segno, seg, sizeof seg);
    size_t len;
    uint8_t *p = read_file(seg, &len);
    uint64_t off = SEG_HEADER_SIZE, cstart = 0, at = 0;
    rec prev = {0};
    int have_prev = 0;
    while (off < len) {
        rec r;
        const char *why = "";
        if (rec_decode_in(p, off, len - off, &r, &why) != REC_OK || r.kind == REC_SEAL)
            break;
        int client = r.kind == REC_EVENT && !(r.flags & (REC_ID_MADE | REC_MULTI));
        if (r.kind == REC_EVENT && r.commit_index == 0)
            cstart = off;
        if (client && have_prev && r.commit_index == prev.commit_index + 1) {
            at = off;
            break;
        }
        have_prev = client;
        if (client)
            prev = r;
        off += r.len;
    }
    CHECK(at != 0);
    if (at == 0) {
        free(p);
        return;
    }
    rec r;
    const char *why = "";
    CHECK(rec_decode_in(p, at, len - at, &r, &why) == REC_OK);
    memcpy(p + (r.id - p), prev.id, 16);
    uint32_t rlen = ld32(p + at);
    st32(p + at + 4, crc32c(0, p + at + 8, rlen - 8));
    CHECK(rec_decode_in(p, at, len - at, &r, &why) == REC_OK); /* the CRC is right again */
    int fd = open(seg, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, p + at, rlen, (off_t)at) == (ssize_t)rlen);
    close(fd);
    free(p);
    remove_index(dir);

    int rc;
    stele_db *db = open_store(s, dir, 0, &rc);
    CHECK_RC(rc, STELE_ECORRUPT);
    if (rc == STELE_ECORRUPT) {
        CHECK(strstr(stele_errmsg(), "twice") != NULL);
        CHECK_PLACE(stele_errmsg(), segno, (int64_t)cstart);
    }
    stele_close(db);
    char report[2048];
    CHECK_RC(stele_check(dir, report, sizeof report), STELE_ECORRUPT);
    g_passed++;
}

static void read_boot_id(char *out, size_t n)
{
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (fgets(out, (int)n, f))
            out[strcspn(out, "\n")] = 0;
        fclose(f);
    }
}

/* The index lost writes (as after a machine crash with MDB_NOSYNC): the
 * ids table is empty and one stream's state is wrong, the checkpoint is
 * intact. stele.lock says the store was open under another boot. */
static void test_other_boot(const store *s)
{
    const char *dir = copy_store(s->dir, "recovery-boot");
    idx *ix;
    CHECK_OK(idx_open(dir, 0, 1, &ix));
    MDB_txn *txn;
    CHECK_OK(idx_begin(ix, 0, &txn));
    CHECK(mdb_drop(txn, ix->ids, 0) == 0);
    idx_stream st;
    CHECK_OK(idx_stream_get(ix, txn, "S-1", 3, &st));
    st.last_rev += 5;
    CHECK_OK(idx_stream_put(ix, txn, "S-1", 3, &st));
    CHECK_OK(idx_commit_txn(txn));
    CHECK_OK(idx_sync(ix));
    idx_close(ix);
    /* The damage is real: check sees it. */
    CHECK_RC(stele_check(dir, NULL, 0), STELE_ECORRUPT);

    char boot[64], text[128], path[600];
    read_boot_id(boot, sizeof boot);
    const char *other = strcmp(boot, "00000000-1111-2222-3333-444444444444")
                            ? "00000000-1111-2222-3333-444444444444"
                            : "55555555-1111-2222-3333-444444444444";
    snprintf(text, sizeof text, "open %s\n", other);
    snprintf(path, sizeof path, "%s/stele.lock", dir);
    write_text(path, text);
    check_rebuilt(s, dir, "open under another boot id");

    /* Undamaged index, other boot id: same data after the rebuild. */
    dir = copy_store(s->dir, "recovery-boot");
    snprintf(path, sizeof path, "%s/stele.lock", dir);
    write_text(path, text);
    check_rebuilt(s, dir, "open under another boot id, index intact");
    g_passed++;
}

static void test_locked(const store *s)
{
    const char *dir = copy_store(s->dir, "recovery-locked");
    int rc;
    stele_db *db = open_store(s, dir, 0, &rc);
    CHECK_OK(rc);
    CHECK_RC(stele_check(dir, NULL, 0), STELE_ELOCKED);
    stele_db *db2 = open_store(s, dir, 0, &rc);
    CHECK_RC(rc, STELE_ELOCKED);
    stele_close(db2);
    char out[4096];
    CHECK(cli_check(dir, out, sizeof out) != 0);
    /* The handle still works after the refused check and open. */
    if (db)
        verify_prefix(db, s, s->n);
    stele_close(db);
    CHECK_OK(stele_check(dir, NULL, 0));
    CHECK(cli_check(dir, out, sizeof out) == 0);
    g_passed++;
}

/* ----------------------------------------------------------------- main */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define STEP(call)                                                    \
    do {                                                              \
        double t0_ = now_s();                                         \
        call;                                                         \
        printf("    (%s: %.1f s)\n", #call, now_s() - t0_);           \
    } while (0)

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_seed = t_seed();
    store small, big;

    printf("64 KiB segments\n");
    STEP(build_store(&small, SMALL_SEG, 150, 1800, "S-0", 2, 16, 40));
    CHECK(small.last_end - small.last_off < 1024);
    STEP(test_torn_tails(&small, 1));
    STEP(test_flipped_records(&small));
    STEP(test_segment_header(&small));
    STEP(test_missing_segment(&small));
    STEP(test_last_segment_header(&small));
    STEP(test_deleted_index(&small));
    STEP(test_other_boot(&small));
    STEP(test_duplicate_id(&small));
    STEP(test_locked(&small));
    t_rmdir(small.dir);
    model_free(&small);

    printf("default segments\n");
    STEP(build_store(&big, 0, 120, 900, "Last", 7, 14000, 16000));
    CHECK(big.last_end - big.last_off > 80 * 1024); /* holds a position entry */
    STEP(test_torn_tails(&big, 6000));
    {
        /* A flipped byte in an early commit of the only segment. */
        recinfo *ri;
        int nr = scan_segment(big.dir, 0, &ri);
        CHECK(nr > 20);
        int k = 5 + (int)t_rand_below(10);
        damage_case(&big, 0, &ri[k], ri[k].len / 2, "single segment, early commit");
        free(ri);
    }
    STEP(test_deleted_index(&big));
    t_rmdir(big.dir);
    model_free(&big);
    if (g_work[0])
        t_rmdir(g_work);
    return t_done("test_recovery", g_passed);
}
