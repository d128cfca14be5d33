/*
 * meta.c - the correlation id and the actor of an event, taken from its
 * JSON metadata for the secondary indexes (src/index/index_sec.c).
 *
 * Only top-level members of a metadata object count, and only string
 * values. Field names, first match wins in this order:
 *
 *   correlation id   "$correlationId", then "correlationId", then
 *                    "correlation_id"
 *   causation id     "$causationId", then "causationId", then "causation_id"
 *   actor            "$actor", then "userId", then "actorId", then "user_id"
 *
 * (the snake_case names are the seeds' conventions, seed 000 and 004).
 *
 * "First match" means the first of these names (in that order) whose value
 * is a usable string: a JSON string that, once its escapes are decoded, is
 * a valid name (1..255 bytes of UTF-8 without control characters, the rule
 * for event types and tags). A field that is present but not usable (a
 * number, an empty or overlong string) is skipped and the next name is
 * tried. If a name occurs twice in the object, its first usable occurrence
 * counts.
 *
 * The writer and recovery both index through this function, so its result
 * must depend on the bytes alone: a metadata value that is not a JSON
 * object (or not JSON at all, although flagged as JSON) yields nothing,
 * never an error. The only error is running out of memory for the tokens,
 * which the caller treats as a storage fault rather than index the event
 * differently from a later rebuild.
 */
#include <stdlib.h>
#include <string.h>

#include "stele.h"
#include "util/json_text.h"
#include "util/util.h"

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#define STACK_TOKENS 64

/* Field names in order of precedence: rank 0 is the best. */
static const char *const corr_names[] = {"$correlationId", "correlationId", "correlation_id"};
static const char *const actor_names[] = {"$actor", "userId", "actorId", "user_id"};
static const char *const cause_names[] = {"$causationId", "causationId", "causation_id"};

static int rank_of(const char *key, size_t n, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (strlen(names[i]) == n && !memcmp(names[i], key, n))
            return i;
    return -1;
}

int meta_ids_extract(const void *json, size_t len, meta_ids *out)
{
    out->correlation_len = 0;
    out->actor_len = 0;
    out->causation_len = 0;
    const char *js = json;
    size_t i0 = 0;
    while (i0 < len && (js[i0] == ' ' || js[i0] == '\t' || js[i0] == '\n' || js[i0] == '\r'))
        i0++;
    if (i0 == len || js[i0] != '{')
        return 0;
    jsmntok_t stack_toks[STACK_TOKENS], *toks = stack_toks;
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, js, len, toks, STACK_TOKENS);
    if (n == JSMN_ERROR_NOMEM) {
        jsmn_init(&p);
        int need = jsmn_parse(&p, js, len, NULL, 0);
        if (need <= 0)
            return 0;
        toks = malloc((size_t)need * sizeof *toks);
        if (!toks)
            return err_set(STELE_ENOMEM, "out of memory indexing event metadata");
        jsmn_init(&p);
        n = jsmn_parse(&p, js, len, toks, (unsigned)need);
    }
    int best_corr = 99, best_actor = 99, best_cause = 99;
    if (n > 0 && toks[0].type == JSMN_OBJECT) {
        for (int j = 1; j + 1 < n; j++) {
            if (toks[j].parent != 0 || toks[j].type != JSMN_STRING)
                continue;
            /* A key: decode it (the names we look for are short). */
            char key[32];
            long kl = jtext_unescape(js + toks[j].start, (size_t)(toks[j].end - toks[j].start), key,
                               sizeof key);
            const jsmntok_t *v = &toks[j + 1];
            if (kl < 0 || v->type != JSMN_STRING)
                continue;
            int rc_ = rank_of(key, (size_t)kl, corr_names, 3);
            int ra = rank_of(key, (size_t)kl, actor_names, 4);
            int ru = rank_of(key, (size_t)kl, cause_names, 3);
            char *dst = NULL;
            size_t *dlen = NULL;
            int *best = NULL, rank = -1;
            if (rc_ >= 0 && rc_ < best_corr) {
                dst = out->correlation, dlen = &out->correlation_len, best = &best_corr, rank = rc_;
            } else if (ra >= 0 && ra < best_actor) {
                dst = out->actor, dlen = &out->actor_len, best = &best_actor, rank = ra;
            } else if (ru >= 0 && ru < best_cause) {
                dst = out->causation, dlen = &out->causation_len, best = &best_cause, rank = ru;
            }
            if (!dst)
                continue;
            char val[META_NAME_MAX];
            long vl = jtext_unescape(js + v->start, (size_t)(v->end - v->start), val, sizeof val);
            size_t bad;
            if (vl <= 0 || utf8_check_name(val, (size_t)vl, &bad))
                continue;
            memcpy(dst, val, (size_t)vl);
            dst[vl] = 0;
            *dlen = (size_t)vl;
            *best = rank;
        }
    }
    if (toks != stack_toks)
        free(toks);
    return 0;
}
