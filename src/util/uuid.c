/*
 * uuid.c - UUIDv7 generation (RFC 9562) and the text form of UUIDs.
 *
 * Layout of the 16 bytes made by uuid_v7 (big-endian fields):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |             unix_ts_ms: 48-bit Unix time in milliseconds      |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |     unix_ts_ms (cont.)        |  ver  |   counter (rand_a)    |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |var|                   rand_b: 62 random bits                  |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                       rand_b (cont.)                          |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * ver = 0111, var = 10. The 12-bit rand_a field is RFC 9562's "fixed
 * bit-length dedicated counter" (method 1 of section 6.2), which gives the
 * invariant this file exists for: every id this process makes compares
 * greater (memcmp) than every id it made before, whatever the threads and
 * the clock do. The last (ms, counter) pair is one 64-bit atomic word,
 * ms << 12 | counter, advanced with compare-and-swap (no lock per id; issue
 * 21). Each successful swap makes the word strictly greater, so ids are
 * ordered by the order of their swaps:
 *   - a later millisecond starts a new counter at a random value below
 *     0x800 (the RFC's advice: random, so ids reveal less, with the top bit
 *     clear so at least 2048 ids fit in the millisecond);
 *   - the same or an earlier millisecond (the wall clock may step back)
 *     increments the counter;
 *   - a counter past 0xFFF moves the timestamp one millisecond ahead of
 *     the clock and starts a new counter. The clock catches up later.
 *
 * Random bits come from getrandom(2) through a pool per thread refilled
 * 1 KiB at a time, not a syscall per id. After fork() every pool is stale
 * (a generation number changes in the child), so parent and child never
 * hand out the same random bits.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "stele.h"
#include "util/util.h"

#define UUID_POOL_SIZE 1024

static pthread_once_t uuid_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t uuid_state;    /* ms << 12 | counter of the last id */
static _Atomic unsigned uuid_fork_gen; /* bumped in a forked child */
static _Thread_local uint8_t uuid_pool[UUID_POOL_SIZE];
static _Thread_local size_t uuid_pool_pos = UUID_POOL_SIZE; /* empty: fill on first use */
static _Thread_local unsigned uuid_pool_gen;
static _Thread_local uint64_t uuid_fallback_state;

/* Fill `n` bytes from the kernel. getrandom without flags blocks only until
 * the kernel's pool is first seeded, and may return short when a signal
 * arrives, hence the loop. If the syscall is missing (ENOSYS on an ancient
 * kernel or a strict seccomp filter) we fall back to splitmix64 seeded from
 * the clock and pid: weaker, but ids stay unique within the process because
 * of the counter, which is the property the store relies on. */
static void rand_fill(uint8_t *p, size_t n)
{
    int saved_errno = errno;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            break;
        }
    }
    if (n > 0) {
        uint64_t x = uuid_fallback_state ^ time_mono_ns() ^
                     ((uint64_t)getpid() << 32) ^ (uint64_t)time_now_us();
        while (n > 0) {
            x += 0x9e3779b97f4a7c15ull;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            size_t k = n < 8 ? n : 8;
            memcpy(p, &z, k);
            p += k;
            n -= k;
        }
        uuid_fallback_state = x;
    }
    errno = saved_errno;
}

/* Take `n` random bytes from this thread's pool. */
static void pool_take(uint8_t *out, size_t n)
{
    unsigned gen = atomic_load_explicit(&uuid_fork_gen, memory_order_relaxed);
    if (UUID_POOL_SIZE - uuid_pool_pos < n || uuid_pool_gen != gen) {
        rand_fill(uuid_pool, UUID_POOL_SIZE);
        uuid_pool_pos = 0;
        uuid_pool_gen = gen;
    }
    memcpy(out, uuid_pool + uuid_pool_pos, n);
    uuid_pool_pos += n;
}

/* fork() copies the pools: the child's are marked stale. */
static void uuid_atfork_child(void)
{
    atomic_fetch_add_explicit(&uuid_fork_gen, 1, memory_order_relaxed);
}

static void uuid_init(void) { pthread_atfork(NULL, NULL, uuid_atfork_child); }

void uuid_v7(uint8_t out[16]) { uuid_v7_at(out, time_now_us()); }

void uuid_v7_at(uint8_t out[16], int64_t now_us)
{
    pthread_once(&uuid_once, uuid_init);
    uint8_t r[10]; /* 2 bytes: a new counter's seed; 8: rand_b */
    pool_take(r, sizeof r);
    uint32_t seed = ((uint32_t)r[0] << 8 | r[1]) & 0x7ff;
    uint64_t now_ms = (now_us > 0 ? (uint64_t)now_us / 1000 : 0) & 0xffffffffffffull;

    uint64_t old = atomic_load_explicit(&uuid_state, memory_order_relaxed), next;
    do {
        uint64_t last_ms = old >> 12;
        if (now_ms > last_ms)
            next = now_ms << 12 | seed;
        else if ((old & 0xfff) == 0xfff)
            next = (last_ms + 1) << 12 | seed;
        else
            next = old + 1;
    } while (!atomic_compare_exchange_weak_explicit(&uuid_state, &old, next,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    uint64_t ms = next >> 12;
    uint32_t counter = (uint32_t)(next & 0xfff);

    for (int i = 0; i < 6; i++)
        out[i] = (uint8_t)(ms >> (40 - 8 * i));
    out[6] = (uint8_t)(0x70 | (counter >> 8));
    out[7] = (uint8_t)counter;
    memcpy(out + 8, r + 2, 8);
    out[8] = (uint8_t)(0x80 | (out[8] & 0x3f));
}

int uuid_is_nil(const uint8_t id[16])
{
    uint8_t acc = 0;
    for (int i = 0; i < 16; i++)
        acc |= id[i];
    return acc == 0;
}

void stele_uuid_format(const uint8_t id[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[id[i] >> 4];
        *o++ = hex[id[i] & 0xf];
    }
    *o = '\0';
}

int stele_uuid_parse(const char *text, uint8_t id[16])
{
    if (!text || !id)
        return err_set(STELE_EINVAL, "UUID: NULL argument");
    /* Parse into a scratch copy so `id` is untouched on failure. The loop
     * stops at a NUL, so a short string is never read past its end. */
    uint8_t tmp[16];
    int nib = 0;
    for (int i = 0; i < 36; i++) {
        char c = text[i];
        if (c == '\0')
            return err_set(STELE_EINVAL, "invalid UUID: %d characters, want 36", i);
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return err_set(STELE_EINVAL,
                               "invalid UUID: expected '-' at character %d", i);
            continue;
        }
        int v = hex_digit(c);
        if (v < 0)
            return err_set(STELE_EINVAL,
                           "invalid UUID: character %d is not a hex digit", i);
        if (nib % 2 == 0)
            tmp[nib / 2] = (uint8_t)(v << 4);
        else
            tmp[nib / 2] |= (uint8_t)v;
        nib++;
    }
    if (text[36] != '\0')
        return err_set(STELE_EINVAL, "invalid UUID: longer than 36 characters");
    memcpy(id, tmp, 16);
    return 0;
}

/*
 * ULIDs (seed 004's event ids): the same 128 bits as a UUID, written as 26
 * characters of Crockford's base32 (0-9, A-Z without I, L, O, U), the most
 * significant bit first. 26 x 5 = 130 bits, so the first character carries
 * only 3 bits and is 0-7. The 48-bit millisecond prefix of a ULID sits
 * where a UUIDv7 keeps its timestamp, so an id the store makes reads as a
 * valid ULID of its creation time. Parsing is case-insensitive (the spec's
 * advice); the letters I, L, O, U are refused rather than guessed.
 */
static const char ulid_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static int ulid_digit(char c)
{
    if (c >= 'a' && c <= 'z')
        c = (char)(c - 'a' + 'A');
    for (int i = 0; i < 32; i++)
        if (ulid_alphabet[i] == c)
            return i;
    return -1;
}

void stele_ulid_format(const uint8_t id[16], char out[27])
{
    /* 130 bits: two zero bits, then the id's 128, five at a time. */
    for (int k = 0; k < 26; k++) {
        int bit = k * 5 - 2; /* first bit of this character within the id */
        int v = 0;
        for (int j = 0; j < 5; j++, bit++) {
            int b = bit < 0 ? 0 : (id[bit / 8] >> (7 - bit % 8)) & 1;
            v = v << 1 | b;
        }
        out[k] = ulid_alphabet[v];
    }
    out[26] = '\0';
}

int stele_ulid_parse(const char *text, uint8_t id[16])
{
    if (!text || !id)
        return err_set(STELE_EINVAL, "ULID: NULL argument");
    uint8_t tmp[16] = {0};
    for (int k = 0; k < 26; k++) {
        if (text[k] == '\0')
            return err_set(STELE_EINVAL, "invalid ULID: %d characters, want 26", k);
        int v = ulid_digit(text[k]);
        if (v < 0)
            return err_set(STELE_EINVAL,
                           "invalid ULID: character %d is not Crockford base32", k);
        if (k == 0 && v > 7)
            return err_set(STELE_EINVAL, "invalid ULID: larger than 128 bits (first "
                                         "character above 7)");
        int bit = k * 5 - 2;
        for (int j = 4; j >= 0; j--, bit++)
            if (bit >= 0 && (v >> j) & 1)
                tmp[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
    }
    if (text[26] != '\0')
        return err_set(STELE_EINVAL, "invalid ULID: longer than 26 characters");
    memcpy(id, tmp, 16);
    return 0;
}

int stele_id_parse(const char *text, uint8_t id[16], uint32_t *flags)
{
    if (!text || !id)
        return err_set(STELE_EINVAL, "event id: NULL argument");
    size_t n = strnlen(text, 37);
    int rc;
    if (n == 26) {
        rc = stele_ulid_parse(text, id);
        if (rc == 0 && flags)
            *flags |= STELE_EVENT_ID_ULID;
        return rc;
    }
    if (n == 36)
        return stele_uuid_parse(text, id);
    return err_set(STELE_EINVAL, "not a UUID (36 characters) or a ULID (26): %zu characters",
                   n);
}

void stele_id_format(const uint8_t id[16], uint32_t flags, char out[37])
{
    if (flags & STELE_EVENT_ID_ULID)
        stele_ulid_format(id, out);
    else
        stele_uuid_format(id, out);
}

static int uuid_cmp_ref(const void *a, const void *b, void *arg)
{
    const uint8_t(*ids)[16] = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = memcmp(ids[x], ids[y], 16);
    return c ? c : (x > y) - (x < y);
}

long uuid_find_dup(const uint8_t (*ids)[16], const uint8_t *skip, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += !skip || !skip[i];
    if (k < 2)
        return -1;
    if (k <= 8) { /* small appends: no allocation */
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n && (!skip || !skip[i]); j++)
                if ((!skip || !skip[j]) && !memcmp(ids[i], ids[j], 16))
                    return (long)j;
        return -1;
    }
    size_t *ord = malloc(k * sizeof *ord);
    if (!ord)
        return -2;
    k = 0;
    for (size_t i = 0; i < n; i++)
        if (!skip || !skip[i])
            ord[k++] = i;
    qsort_r(ord, k, sizeof *ord, uuid_cmp_ref, (void *)ids);
    long dup = -1;
    for (size_t i = 1; i < k && dup < 0; i++)
        if (!memcmp(ids[ord[i - 1]], ids[ord[i]], 16))
            dup = (long)ord[i];
    free(ord);
    return dup;
}
