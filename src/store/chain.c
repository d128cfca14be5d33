/*
 * chain.c - the hash chain's public calls: the head (signed with Ed25519
 * when a key is set), exports of a range of events with what links them to
 * the head, their offline verification, and key generation.
 *
 * The backend keeps the chain (src/backend/local_chain.c: one chain record
 * per commit, h = SHA-256(prev || SHA-256(commit records))); this file only
 * signs, formats and verifies, so the rules of an export live in one place:
 *
 *   {"format": "stele-chain-export/1", "from": F, "to": T,
 *    "firstCommit": K, "prev": hex h(K-1),
 *    "commits": [{"records": base64} | {"digest": hex}, ...],  K, K+1, ...
 *    "head": {"commits": N, "position": P, "hash": hex,
 *             "signature": hex, "publicKey": hex}}            (signed only)
 *
 * A verifier folds h = SHA-256(h || d) from `prev` over the commits, d
 * being SHA-256 of the records (each record's CRC checked too) or the
 * given digest, and must arrive at the head's hash after N - K commits. The
 * signature covers "stele-chain-head/1" || N (u64 le) || P (u64 le) || hash.
 * Commits given as a digest are those after the range and those scavenging
 * removed: their bytes are not needed to link the range to the head.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/record.h"
#include "store/store_int.h"
#include "util/util.h"

#define CHAIN_FORMAT "stele-chain-export/1"
#define HEAD_DOMAIN "stele-chain-head/1"

struct store_chain_key {
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
};

void store_chain_close(stele_db *db)
{
    if (db->chain_key) {
        sodium_memzero(db->chain_key, sizeof *db->chain_key);
        free(db->chain_key);
        db->chain_key = NULL;
    }
}

/* Read a file of 64 hex digits (and optional white space) into 32 bytes. */
static int read_hex32(const char *path, const char *what, uint8_t out[32])
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(STELE_EINVAL, "%s %s: %s", what, path, strerror(errno));
    char text[200];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
        text[--n] = 0;
    size_t got = 0;
    if (n != 64 || sodium_hex2bin(out, 32, text, n, NULL, &got, NULL) != 0 || got != 32)
        return err_set(STELE_EINVAL, "%s %s: expected 64 hex digits (as `stele keygen` writes)",
                       what, path);
    return 0;
}

int stele_chain_set_signing_key(stele_db *db, const char *key_file)
{
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    if (!key_file) {
        store_chain_close(db);
        return 0;
    }
    if (sodium_init() < 0)
        return err_set(STELE_EINTERNAL, "libsodium failed to initialise");
    uint8_t seed[32];
    int rc = read_hex32(key_file, "signing key", seed);
    if (rc)
        return rc;
    struct store_chain_key *k = calloc(1, sizeof *k);
    if (!k)
        return err_set(STELE_ENOMEM, "out of memory");
    crypto_sign_seed_keypair(k->pk, k->sk, seed);
    sodium_memzero(seed, sizeof seed);
    store_chain_close(db);
    db->chain_key = k;
    return 0;
}

int stele_chain_keygen(const char *key_file, char public_hex[65])
{
    if (!key_file || !public_hex)
        return err_set(STELE_EINVAL, "key_file and public_hex are required");
    if (sodium_init() < 0)
        return err_set(STELE_EINTERNAL, "libsodium failed to initialise");
    uint8_t seed[32], pk[32], sk[64];
    randombytes_buf(seed, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, seed, sizeof seed);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);
    int fd = open(key_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(errno == EEXIST ? STELE_EEXISTS : STELE_EINVAL, "create %s: %s", key_file,
                       strerror(errno));
    hex[64] = '\n';
    ssize_t w = write(fd, hex, 65);
    int bad = w != 65 || fsync(fd) != 0;
    close(fd);
    sodium_memzero(hex, sizeof hex);
    if (bad) {
        unlink(key_file);
        return err_set(STELE_EIO, "write %s: %s", key_file, strerror(errno));
    }
    sodium_bin2hex(public_hex, 65, pk, sizeof pk);
    return 0;
}

static void head_message(const stele_chain_head *h, uint8_t m[sizeof HEAD_DOMAIN - 1 + 48])
{
    memcpy(m, HEAD_DOMAIN, sizeof HEAD_DOMAIN - 1);
    st64(m + sizeof HEAD_DOMAIN - 1, h->commits);
    st64(m + sizeof HEAD_DOMAIN - 1 + 8, h->position);
    memcpy(m + sizeof HEAD_DOMAIN - 1 + 16, h->hash, 32);
}

static void sign_head(stele_db *db, stele_chain_head *h)
{
    h->is_signed = 0;
    if (!db->chain_key)
        return;
    uint8_t m[sizeof HEAD_DOMAIN - 1 + 48];
    head_message(h, m);
    crypto_sign_detached(h->signature, NULL, m, sizeof m, db->chain_key->sk);
    memcpy(h->public_key, db->chain_key->pk, 32);
    h->is_signed = 1;
}

static int no_chain(stele_db *db)
{
    return err_set(STELE_EINVAL, "the %s backend keeps no hash chain (a local-engine feature)",
                   db->be->ops->name);
}

int stele_chain_get_head(stele_db *db, stele_chain_head *out)
{
    if (!db || !out)
        return err_set(STELE_EINVAL, "db and out are required");
    if (!db->be->ops->chain_head)
        return no_chain(db);
    int rc = db->be->ops->chain_head(db->be, out);
    if (rc == 0)
        sign_head(db, out);
    return rc;
}

/* ----------------------------------------------------------------- export */

static json_t *hex_json(const uint8_t *p, size_t n)
{
    char s[129];
    sodium_bin2hex(s, sizeof s, p, n);
    return json_string(s);
}

static int add_commit(void *ctx, uint64_t seq, const uint8_t *bytes, size_t n,
                      const uint8_t digest[32])
{
    (void)seq;
    json_t *arr = ctx, *o;
    if (bytes) {
        size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = malloc(cap);
        if (!b64)
            return err_set(STELE_ENOMEM, "out of memory");
        sodium_bin2base64(b64, cap, bytes, n, sodium_base64_VARIANT_ORIGINAL);
        o = json_pack("{s:s}", "records", b64);
        free(b64);
    } else {
        o = json_pack("{s:o}", "digest", hex_json(digest, 32));
    }
    if (!o || json_array_append_new(arr, o))
        return err_set(STELE_ENOMEM, "out of memory");
    return 0;
}

int stele_chain_export(stele_db *db, uint64_t from, uint64_t to, char **json, size_t *len)
{
    if (!db || !json)
        return err_set(STELE_EINVAL, "db and json are required");
    *json = NULL;
    if (!db->be->ops->chain_export)
        return no_chain(db);
    json_t *commits = json_array();
    if (!commits)
        return err_set(STELE_ENOMEM, "out of memory");
    uint64_t first = 0;
    uint8_t prev[32];
    stele_chain_head h;
    int rc = db->be->ops->chain_export(db->be, from, to, add_commit, commits, &first, prev, &h);
    if (rc) {
        json_decref(commits);
        return rc;
    }
    sign_head(db, &h);
    json_t *head = json_pack("{s:I,s:I,s:o}", "commits", (json_int_t)h.commits, "position",
                             (json_int_t)h.position, "hash", hex_json(h.hash, 32));
    if (head && h.is_signed) {
        json_object_set_new(head, "signature", hex_json(h.signature, 64));
        json_object_set_new(head, "publicKey", hex_json(h.public_key, 32));
    }
    json_t *doc = head ? json_pack("{s:s,s:I,s:I,s:I,s:o,s:o,s:o}", "format", CHAIN_FORMAT, "from",
                                   (json_int_t)from, "to", (json_int_t)to, "firstCommit",
                                   (json_int_t)first, "prev", hex_json(prev, 32), "commits",
                                   commits, "head", head)
                       : NULL;
    if (!doc) {
        json_decref(head);
        json_decref(commits);
        return err_set(STELE_ENOMEM, "out of memory");
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        return err_set(STELE_ENOMEM, "out of memory");
    *json = text;
    if (len)
        *len = strlen(text);
    return 0;
}

/* ----------------------------------------------------------------- verify */

static int bad(const char *fmt, const char *detail)
{
    return err_set(STELE_ECORRUPT, fmt, detail);
}

static int get_hex(json_t *o, const char *key, uint8_t *out, size_t n)
{
    const char *s = json_string_value(json_object_get(o, key));
    size_t got = 0;
    if (!s || strlen(s) != 2 * n || sodium_hex2bin(out, n, s, 2 * n, NULL, &got, NULL) || got != n)
        return err_set(STELE_EINVAL, "export: \"%s\" is missing or not %zu bytes of hex", key, n);
    return 0;
}

static int get_u64(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return err_set(STELE_EINVAL, "export: \"%s\" is missing or not a count", key);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Check the records of one commit and count the range's events in it. */
static int check_records(const uint8_t *p, size_t n, uint64_t seq, uint64_t from, uint64_t to,
                         stele_chain_verified *v)
{
    size_t off = 0;
    while (off < n) {
        rec r;
        const char *why = "record runs past the end";
        rec_status st = rec_decode_in(p, off, n - off, &r, &why); /* the whole commit */
        if (st == REC_ZERO)
            why = "a zero length";
        if (st == REC_OK && (r.kind == REC_CHAIN || r.kind == REC_SEAL)) {
            why = "not a record of a commit";
            st = REC_BAD;
        }
        if (st != REC_OK) {
            char msg[160];
            snprintf(msg, sizeof msg, "commit %llu, record at byte %zu: %s",
                     (unsigned long long)seq, off, why);
            return bad("export: %s", msg);
        }
        if (r.kind == REC_EVENT && r.position >= from && r.position <= to) {
            if (v->events == 0)
                v->first = r.position;
            v->last = r.position;
            v->events++;
        }
        off += r.len;
    }
    return 0;
}

/* Only the members the format has (a renamed one is a change, not an
 * extension). */
static int only_keys(json_t *o, const char *const *keys, const char *what)
{
    const char *k;
    json_t *val;
    json_object_foreach(o, k, val)
    {
        int ok = 0;
        for (const char *const *p = keys; *p && !ok; p++)
            ok = strcmp(k, *p) == 0;
        if (!ok)
            return err_set(STELE_EINVAL, "export: unknown member \"%s\" in %s", k, what);
    }
    return 0;
}

static int verify_doc(json_t *doc, const uint8_t *public_key, stele_chain_verified *v)
{
    static const char *const top[] = {"format", "from", "to", "firstCommit", "prev",
                                      "commits", "head", NULL};
    static const char *const hk[] = {"commits", "position", "hash", "signature", "publicKey",
                                     NULL};
    static const char *const ck[] = {"records", "digest", NULL};
    const char *fmt = json_string_value(json_object_get(doc, "format"));
    if (!fmt || strcmp(fmt, CHAIN_FORMAT) != 0)
        return err_set(STELE_EINVAL, "not a Stele chain export (format \"%s\" expected)",
                       CHAIN_FORMAT);
    uint64_t from = 0, to = 0, k = 0; /* set by get_u64 (gcc -O3 cannot tell) */
    uint8_t h[32];
    json_t *head = json_object_get(doc, "head"), *commits = json_object_get(doc, "commits");
    int rc;
    if ((rc = get_u64(doc, "from", &from)) || (rc = get_u64(doc, "to", &to)) ||
        (rc = get_u64(doc, "firstCommit", &k)) || (rc = get_hex(doc, "prev", h, 32)))
        return rc;
    if (!json_is_object(head) || !json_is_array(commits))
        return err_set(STELE_EINVAL, "export: \"head\" or \"commits\" is missing");
    if ((rc = only_keys(doc, top, "the export")) || (rc = only_keys(head, hk, "the head")))
        return rc;
    if ((rc = get_u64(head, "commits", &v->head.commits)) ||
        (rc = get_u64(head, "position", &v->head.position)) ||
        (rc = get_hex(head, "hash", v->head.hash, 32)))
        return rc;
    size_t i;
    json_t *c;
    json_array_foreach(commits, i, c)
    {
        uint64_t seq = k + i;
        uint8_t m[64], d[32];
        if (!json_is_object(c) || json_object_size(c) != 1 || (rc = only_keys(c, ck, "a commit")))
            return rc ? rc : err_set(STELE_EINVAL, "export: commit %zu is not one member", i);
        const char *b64 = json_string_value(json_object_get(c, "records"));
        if (b64) {
            size_t blen = strlen(b64), n = 0;
            uint8_t *bytes = malloc(blen ? blen : 1);
            if (!bytes)
                return err_set(STELE_ENOMEM, "out of memory");
            if (sodium_base642bin(bytes, blen, b64, blen, NULL, &n, NULL,
                                  sodium_base64_VARIANT_ORIGINAL) != 0) {
                free(bytes);
                return bad("export: %s", "a commit's records are not base64");
            }
            rc = check_records(bytes, n, seq, from, to, v);
            SHA256(bytes, n, d);
            free(bytes);
            if (rc)
                return rc;
        } else if ((rc = get_hex(c, "digest", d, 32))) {
            return rc;
        }
        memcpy(m, h, 32);
        memcpy(m + 32, d, 32);
        SHA256(m, sizeof m, h);
    }
    v->commits = json_array_size(commits);
    if (k + v->commits != v->head.commits)
        return bad("export: %s", "the commits do not reach the head");
    if (memcmp(h, v->head.hash, 32) != 0)
        return bad("export: %s", "the chain does not arrive at the head's hash (altered)");
    if (v->events == 0 || v->first != from)
        return bad("export: %s", "the range's first event is missing");
    if (public_key) {
        uint8_t m[sizeof HEAD_DOMAIN - 1 + 48];
        if (get_hex(head, "signature", v->head.signature, 64)) {
            err_clear();
            return bad("export: %s", "the head is not signed");
        }
        uint8_t named[32];
        if (get_hex(head, "publicKey", named, 32) || memcmp(named, public_key, 32) != 0) {
            err_clear();
            return bad("export: %s", "the head names another public key");
        }
        head_message(&v->head, m);
        if (crypto_sign_verify_detached(v->head.signature, m, sizeof m, public_key) != 0)
            return bad("export: %s", "the head's signature does not verify with this public key");
        memcpy(v->head.public_key, public_key, 32);
        v->head.is_signed = v->is_signed = 1;
    }
    return 0;
}

int stele_chain_verify(const char *json, size_t len, const uint8_t *public_key,
                       stele_chain_verified *out)
{
    if (!json)
        return err_set(STELE_EINVAL, "json is required");
    if (sodium_init() < 0)
        return err_set(STELE_EINTERNAL, "libsodium failed to initialise");
    json_error_t e;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &e);
    if (!doc)
        return err_set(STELE_EINVAL, "export is not JSON: %s (line %d)", e.text, e.line);
    stele_chain_verified v;
    memset(&v, 0, sizeof v);
    int rc = json_is_object(doc) ? verify_doc(doc, public_key, &v)
                                 : err_set(STELE_EINVAL, "export is not a JSON object");
    json_decref(doc);
    if (rc == 0 && out)
        *out = v;
    return rc;
}
