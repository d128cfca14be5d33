/*
 * rules.c - the rules of a store: the public calls of include/stele.h's
 * "rules" section, the registry and the definitions kept in the store.
 *
 * Definitions are events of the system stream "$rules":
 *   RuleSaved   {"name": "n", "definition": {...normalized...}}
 *   RuleDeleted {"name": "n"}
 * Folding the stream from the start gives the live rules; the registry
 * does that on the first rule call of a store handle. A rule's delivery
 * state is its consumer group "$rule-{name}" on $all (created with the
 * rule, deleted with it): the group's checkpoint is the rule's, and its
 * parked stream is the rule's dead-letter stream.
 *
 * Every change is checked whole before anything is written, and written
 * (durably) before the live rule changes: a bad definition stores nothing,
 * and a crash never leaves a rule that the store does not hold.
 *
 * Threads: after stele_rules_start(), each enabled rule has a worker thread
 * (worker.c) and each running replay one more (replay.c). Administrative
 * calls are serialised by reg.admin; they stop and start workers without
 * holding reg.mu or rule.mu.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_int.h"

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t admin_mu = PTHREAD_MUTEX_INITIALIZER;

static const double lat_bounds[STELE_RULE_LAT_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60};

double stele_rule_latency_bound(int i)
{
    return i >= 0 && i < STELE_RULE_LAT_BUCKETS ? lat_bounds[i] : 0;
}

const char *stele_rule_failure_name(int kind)
{
    switch (kind) {
#define STELE_RULEFAILNAME_(name, code, text)                                                  \
    case code:                                                                               \
        return text;
        STELE_RULE_FAILURES(STELE_RULEFAILNAME_)
#undef STELE_RULEFAILNAME_
    }
    return "unknown";
}

/* ------------------------------------------------------------ rules */

void rule_unref(rule *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    rule_def_unref(r->def);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void rule_set_error(rule *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&r->mu);
    vsnprintf(r->last_error, sizeof r->last_error, fmt, ap);
    pthread_mutex_unlock(&r->mu);
    va_end(ap);
}

rule_def *rule_current_def(rule *r, uint64_t *gen)
{
    pthread_mutex_lock(&r->mu);
    rule_def *d = rule_def_ref(r->def);
    *gen = r->def_gen;
    pthread_mutex_unlock(&r->mu);
    return d;
}

static rule *rule_new(rules_reg *reg, const char *name, rule_def *def)
{
    rule *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->reg = reg;
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->group, sizeof r->group, RULE_GROUP_PREFIX "%s", name);
    pthread_mutex_init(&r->mu, NULL);
    r->def = def;
    r->def_gen = 1;
    atomic_store(&r->refs, 1);
    return r;
}

static rule *find(rules_reg *reg, const char *name)
{
    pthread_mutex_lock(&reg->mu);
    rule *r = reg->list;
    while (r && strcmp(r->name, name))
        r = r->next;
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&reg->mu);
    return r;
}

/* Start (reg->started and the rule enabled) or stop the rule's worker.
 * Called with admin_mu held, never reg->mu or r->mu. */
static void worker_sync(rules_reg *reg, rule *r)
{
    pthread_mutex_lock(&r->mu);
    int want = reg->started && !r->deleted && r->def && r->def->enabled;
    pthread_mutex_unlock(&r->mu);
    if (want && !r->running) {
        atomic_store(&r->stop, 0);
        if (pthread_create(&r->thread, NULL, rule_worker_main, r) == 0)
            r->running = 1;
        else
            rule_set_error(r, "could not start its delivery thread");
    } else if (!want && r->running) {
        atomic_store(&r->stop, 1);
        pthread_join(r->thread, NULL);
        r->running = 0;
    }
}

/* ------------------------------------------------------------ the store */

static int write_event(stele_db *db, const char *type, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s)
        return err_set(STELE_ENOMEM, "out of memory");
    stele_event_in ev = {.type = type, .data = s, .data_len = strlen(s), .flags = STELE_EVENT_JSON};
    int rc = store_append_system(db, RULES_STREAM, STELE_ANY, &ev, 1, NULL);
    free(s);
    return rc;
}

/* Fold "$rules" into the registry's list. */
static int load(rules_reg *reg)
{
    json_t *live = json_object();
    if (!live)
        return err_set(STELE_ENOMEM, "out of memory");
    uint64_t from = 0;
    int rc = 0;
    for (;;) {
        stele_page *pg = NULL;
        rc = stele_read_stream(reg->db, RULES_STREAM, from, STELE_FORWARDS, 256, &pg);
        if (rc == STELE_ENOTFOUND) {
            rc = 0;
            err_clear();
            break;
        }
        if (rc)
            break;
        for (size_t i = 0; i < stele_page_count(pg); i++) {
            const stele_event *e = stele_page_event(pg, i);
            json_error_t je;
            json_t *j = json_loadb(e->data, e->data_len, 0, &je);
            json_t *name = json_object_get(j, "name");
            if (!json_is_string(name)) {
                json_decref(j);
                continue;
            }
            if (!strcmp(e->type, EV_RULE_SAVED))
                json_object_set(live, json_string_value(name), json_object_get(j, "definition"));
            else if (!strcmp(e->type, EV_RULE_DELETED))
                json_object_del(live, json_string_value(name));
            json_decref(j);
        }
        int more = stele_page_next(pg, &from);
        stele_page_free(pg);
        if (!more)
            break;
    }
    const char *k;
    json_t *v;
    json_object_foreach(live, k, v) {
        rule_def *d = NULL;
        int drc = rule_def_from_doc(v, &d);
        rule *r = rule_new(reg, k, d);
        if (!r) {
            rule_def_unref(d);
            continue;
        }
        if (drc)
            snprintf(r->last_error, sizeof r->last_error, "stored definition refused: %s",
                     stele_errmsg());
        r->next = reg->list;
        reg->list = r;
    }
    json_decref(live);
    return rc;
}

static int reg_get(stele_db *db, rules_reg **out)
{
    rules_reg *reg = __atomic_load_n(&db->rules, __ATOMIC_ACQUIRE);
    if (reg) {
        *out = reg;
        return 0;
    }
    int rc = 0;
    pthread_mutex_lock(&init_mu);
    if (!(reg = db->rules)) {
        reg = calloc(1, sizeof *reg);
        if (!reg) {
            rc = err_set(STELE_ENOMEM, "out of memory");
        } else {
            reg->db = db;
            pthread_mutex_init(&reg->mu, NULL);
            if ((rc = load(reg))) {
                free(reg);
                reg = NULL;
            } else {
                db->close_up[STORE_UP_RULES] = rules_close;
                __atomic_store_n(&db->rules, reg, __ATOMIC_RELEASE);
            }
        }
    }
    pthread_mutex_unlock(&init_mu);
    *out = reg;
    return rc;
}

void rules_close(stele_db *db)
{
    rules_reg *reg = db->rules;
    if (!reg)
        return;
    pthread_mutex_lock(&admin_mu);
    for (rule *r = reg->list; r; r = r->next) {
        replays_stop_all(r);
        if (r->running) {
            atomic_store(&r->stop, 1);
            pthread_join(r->thread, NULL);
            r->running = 0;
        }
    }
    pthread_mutex_unlock(&admin_mu);
    while (reg->list) {
        rule *r = reg->list;
        reg->list = r->next;
        rule_unref(r);
    }
    pthread_mutex_destroy(&reg->mu);
    free(reg);
    db->rules = NULL;
}

/* ------------------------------------------------------------ admin */

static int not_found(const char *name)
{
    return err_set(STELE_ENOTFOUND, "rule '%s' does not exist", name);
}

/* The start of every call on one rule: clear the error, check the name,
 * and take a reference on the rule (the caller drops it with rule_unref).
 * `reg` may be NULL when the caller needs only the rule. */
static int lookup(stele_db *db, const char *name, rules_reg **reg, rule **r)
{
    err_clear();
    rules_reg *own;
    if (!reg)
        reg = &own;
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    int rc = rule_name_check(name);
    if (rc == 0)
        rc = reg_get(db, reg);
    if (rc)
        return rc;
    if (!(*r = find(*reg, name)))
        return not_found(name);
    return 0;
}

/* The rule's group: made if missing (a crash between the group and the
 * definition, or a first save). */
static int ensure_group(stele_db *db, const char *gname, const rule_def *d)
{
    stele_group_settings s;
    stele_group_settings_init(&s);
    stele_filter f = {.exclude_system = 1};
    s.filter = &f;
    s.start = d->start;
    s.max_in_flight = d->max_buffered;
    /* Twice what the rule holds: the group then reads the log in pages of
     * at least maxBuffered events, not in dribbles as slots free up (each
     * read of $all starts at an index point, so small reads cost more). */
    s.buffer_size = d->max_buffered < 250 ? 500 : 2 * d->max_buffered;
    s.message_timeout_ms = 86400000; /* above any maxAgeSeconds: never taken back */
    s.max_retries = 1000;            /* only the worker parks */
    s.checkpoint_after_ms = 1000;
    s.checkpoint_min_count = 1;
    int rc = stele_group_create(db, "$all", gname, &s);
    if (rc == STELE_EEXISTS) {
        err_clear();
        stele_group_info *gi = NULL;
        if ((rc = stele_group_get(db, "$all", gname, &gi)) == 0) {
            s.start = gi->settings.start;
            stele_group_info_free(gi);
            rc = stele_group_update(db, "$all", gname, &s);
        }
    }
    return rc;
}

int stele_rule_put(stele_db *db, const char *name, const char *json, size_t len, int *created)
{
    err_clear();
    if (created)
        *created = 0;
    if (!db || !json)
        return err_set(STELE_EINVAL, "%s is NULL", !db ? "db" : "json");
    rules_reg *reg;
    rule_def *d = NULL;
    int rc = rule_name_check(name);
    if (rc == 0)
        rc = rule_def_parse(json, len, &d);
    if (rc == 0)
        rc = reg_get(db, &reg);
    if (rc) {
        rule_def_unref(d);
        return rc;
    }
    char gname[sizeof((rule *)0)->group];
    snprintf(gname, sizeof gname, RULE_GROUP_PREFIX "%s", name);
    pthread_mutex_lock(&admin_mu);
    rc = ensure_group(db, gname, d);
    if (rc == 0) {
        json_t *ev = json_pack("{s:s,s:O}", "name", name, "definition", d->doc);
        rc = ev ? write_event(db, EV_RULE_SAVED, ev) : err_set(STELE_ENOMEM, "out of memory");
        json_decref(ev);
    }
    if (rc) {
        pthread_mutex_unlock(&admin_mu);
        rule_def_unref(d);
        return rc;
    }
    rule *r = find(reg, name);
    if (r) {
        pthread_mutex_lock(&r->mu);
        rule_def *old = r->def;
        r->def = d;
        r->def_gen++;
        r->last_error[0] = 0;
        pthread_mutex_unlock(&r->mu);
        rule_def_unref(old);
    } else if ((r = rule_new(reg, name, d))) {
        atomic_fetch_add(&r->refs, 1);
        pthread_mutex_lock(&reg->mu);
        r->next = reg->list;
        reg->list = r;
        pthread_mutex_unlock(&reg->mu);
        if (created)
            *created = 1;
    } else {
        rule_def_unref(d);
        rc = err_set(STELE_ENOMEM, "out of memory (the rule is stored: it runs after a restart)");
    }
    if (r)
        worker_sync(reg, r);
    pthread_mutex_unlock(&admin_mu);
    rule_unref(r);
    return rc;
}

int stele_rule_delete(stele_db *db, const char *name)
{
    rules_reg *reg;
    rule *r = NULL;
    int rc = lookup(db, name, &reg, &r);
    if (rc)
        return rc;
    pthread_mutex_lock(&admin_mu);
    json_t *ev = json_pack("{s:s}", "name", name);
    rc = ev ? write_event(db, EV_RULE_DELETED, ev) : err_set(STELE_ENOMEM, "out of memory");
    json_decref(ev);
    if (rc == 0) {
        pthread_mutex_lock(&r->mu);
        r->deleted = 1;
        pthread_mutex_unlock(&r->mu);
        replays_stop_all(r);
        worker_sync(reg, r);
        pthread_mutex_lock(&reg->mu);
        rule **s = &reg->list;
        while (*s && *s != r)
            s = &(*s)->next;
        if (*s) {
            *s = r->next;
            rule_unref(r); /* the list's reference */
        }
        pthread_mutex_unlock(&reg->mu);
        int grc = stele_group_delete(db, "$all", r->group);
        if (grc && grc != STELE_ENOTFOUND)
            rc = grc;
        else
            err_clear();
    }
    pthread_mutex_unlock(&admin_mu);
    rule_unref(r);
    return rc;
}

int stele_rule_set_enabled(stele_db *db, const char *name, int enabled)
{
    rules_reg *reg;
    rule *r = NULL;
    int rc = lookup(db, name, &reg, &r);
    if (rc)
        return rc;
    pthread_mutex_lock(&admin_mu);
    uint64_t gen;
    rule_def *cur = rule_current_def(r, &gen), *nd = NULL;
    json_t *doc = cur ? json_deep_copy(cur->doc) : NULL;
    if (!cur) {
        rc = err_set(STELE_EINVAL, "rule '%s' has no usable definition: %s", name, r->last_error);
    } else if (!doc || json_object_set_new(doc, "enabled", json_boolean(enabled))) {
        rc = err_set(STELE_ENOMEM, "out of memory");
    } else if ((rc = rule_def_from_doc(doc, &nd)) == 0) {
        json_t *ev = json_pack("{s:s,s:O}", "name", name, "definition", nd->doc);
        rc = ev ? write_event(db, EV_RULE_SAVED, ev) : err_set(STELE_ENOMEM, "out of memory");
        json_decref(ev);
    }
    json_decref(doc);
    rule_def_unref(cur);
    if (rc == 0) {
        pthread_mutex_lock(&r->mu);
        rule_def *old = r->def;
        r->def = nd;
        r->def_gen++;
        pthread_mutex_unlock(&r->mu);
        rule_def_unref(old);
        worker_sync(reg, r);
    } else {
        rule_def_unref(nd);
    }
    pthread_mutex_unlock(&admin_mu);
    rule_unref(r);
    return rc;
}

int stele_rules_start(stele_db *db)
{
    err_clear();
    if (!db)
        return err_set(STELE_EINVAL, "db is NULL");
    rules_reg *reg;
    int rc = reg_get(db, &reg);
    if (rc)
        return rc;
    pthread_mutex_lock(&admin_mu);
    reg->started = 1;
    pthread_mutex_lock(&reg->mu);
    size_t n = 0;
    for (rule *r = reg->list; r; r = r->next)
        n++;
    rule **v = calloc(n ? n : 1, sizeof *v);
    size_t k = 0;
    for (rule *r = reg->list; v && r; r = r->next) {
        atomic_fetch_add(&r->refs, 1);
        v[k++] = r;
    }
    pthread_mutex_unlock(&reg->mu);
    for (size_t i = 0; i < k; i++) {
        worker_sync(reg, v[i]);
        rule_unref(v[i]);
    }
    free(v);
    pthread_mutex_unlock(&admin_mu);
    return v ? 0 : err_set(STELE_ENOMEM, "out of memory");
}

/* ------------------------------------------------------------ info */

/* One allocation per info array: the structs, then the strings. */
typedef struct info_hdr {
    size_t n;
    char **strs;
    size_t nstrs;
} info_hdr;

static const char *keep(info_hdr *h, char *s)
{
    char **v = realloc(h->strs, (h->nstrs + 1) * sizeof *v);
    if (!v) {
        free(s);
        return "";
    }
    h->strs = v;
    v[h->nstrs++] = s;
    return s ? s : "";
}

static void fill_info(stele_db *db, info_hdr *h, stele_rule_info *in, rule *r, uint64_t head)
{
    memset(in, 0, sizeof *in);
    uint64_t gen;
    rule_def *d = rule_current_def(r, &gen);
    in->name = keep(h, strdup(r->name));
    in->definition = keep(h, d ? rule_def_public_json(d) : strdup("null"));
    in->enabled = d && d->enabled;
    rule_def_unref(d);
    pthread_mutex_lock(&r->mu);
    in->last_error = keep(h, strdup(r->last_error));
    pthread_mutex_unlock(&r->mu);
    rule_stats *st = &r->st;
    in->matched = atomic_load(&st->matched);
    in->delivered = atomic_load(&st->delivered);
    for (int i = 0; i < STELE_FAIL_KINDS; i++)
        in->failures[i] = atomic_load(&st->failures[i]);
    in->retries = atomic_load(&st->retries);
    in->dead_lettered = atomic_load(&st->dead);
    in->in_flight = atomic_load(&st->in_flight);
    in->pending = atomic_load(&st->pending);
    for (int i = 0; i <= STELE_RULE_LAT_BUCKETS; i++)
        in->latency[i] = atomic_load(&st->latency[i]);
    in->latency_sum = (double)atomic_load(&st->latency_sum_us) / 1e6;
    int64_t oldest = atomic_load(&st->oldest_us);
    in->lag_seconds = oldest ? (double)(time_now_us() - oldest) / 1e6 : 0;
    if (in->lag_seconds < 0)
        in->lag_seconds = 0;
    char parked[256], ck[256];
    group_sys_names(NULL, r->group, ck, parked);
    in->dead_letter_stream = keep(h, strdup(parked));
    stele_group_info *gi = NULL;
    if (stele_group_get(db, "$all", r->group, &gi) == 0) {
        in->checkpoint = gi->checkpoint;
        in->dead_letters = gi->parked;
        in->lag_events = head > gi->checkpoint ? head - gi->checkpoint : 0;
        /* A paused or stuck rule holds nothing, yet is behind: the age of
         * the first event after its checkpoint counts too. */
        stele_page *pg = NULL;
        if (in->lag_events && stele_read_all(db, gi->checkpoint, STELE_FORWARDS, 1, &pg) == 0 &&
            stele_page_count(pg)) {
            double age = (double)(time_now_us() - stele_page_event(pg, 0)->created_us) / 1e6;
            if (age > in->lag_seconds)
                in->lag_seconds = age;
        }
        stele_page_free(pg);
    }
    stele_group_info_free(gi);
    err_clear();
}

static stele_rule_info *infos_alloc(size_t n)
{
    info_hdr *h = calloc(1, sizeof *h + (n ? n : 1) * sizeof(stele_rule_info));
    if (!h)
        return NULL;
    h->n = n;
    return (stele_rule_info *)(h + 1);
}

void stele_rule_info_free(stele_rule_info *infos)
{
    if (!infos)
        return;
    info_hdr *h = (info_hdr *)infos - 1;
    for (size_t i = 0; i < h->nstrs; i++)
        free(h->strs[i]);
    free(h->strs);
    free(h);
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(rule *const *)a)->name, (*(rule *const *)b)->name);
}

int stele_rule_list(stele_db *db, stele_rule_info **out, size_t *n)
{
    err_clear();
    if (!db || !out || !n)
        return err_set(STELE_EINVAL, "a NULL argument");
    *out = NULL;
    *n = 0;
    rules_reg *reg;
    int rc = reg_get(db, &reg);
    if (rc)
        return rc;
    pthread_mutex_lock(&reg->mu);
    size_t cnt = 0;
    for (rule *r = reg->list; r; r = r->next)
        cnt++;
    rule **v = calloc(cnt ? cnt : 1, sizeof *v);
    size_t k = 0;
    for (rule *r = reg->list; v && r; r = r->next) {
        atomic_fetch_add(&r->refs, 1);
        v[k++] = r;
    }
    pthread_mutex_unlock(&reg->mu);
    if (!v)
        return err_set(STELE_ENOMEM, "out of memory");
    qsort(v, k, sizeof *v, by_name);
    stele_rule_info *in = infos_alloc(k);
    uint64_t head = 0; /* the end of $all, for the lag */
    stele_position_head(db, &head);
    for (size_t i = 0; i < k; i++) {
        if (in)
            fill_info(db, (info_hdr *)in - 1, &in[i], v[i], head);
        rule_unref(v[i]);
    }
    free(v);
    if (!in)
        return err_set(STELE_ENOMEM, "out of memory");
    *out = in;
    *n = k;
    return 0;
}

int stele_rule_get(stele_db *db, const char *name, stele_rule_info **out)
{
    err_clear();
    if (!out)
        return err_set(STELE_EINVAL, "out is NULL");
    *out = NULL;
    rule *r = NULL;
    int rc = lookup(db, name, NULL, &r);
    if (rc)
        return rc;
    stele_rule_info *in = infos_alloc(1);
    uint64_t head = 0; /* the end of $all, for the lag */
    stele_position_head(db, &head);
    if (in)
        fill_info(db, (info_hdr *)in - 1, in, r, head);
    rule_unref(r);
    if (!in)
        return err_set(STELE_ENOMEM, "out of memory");
    *out = in;
    return 0;
}

/* ------------------------------------------------------------ dead letters */

int stele_rule_read_dead(stele_db *db, const char *name, uint64_t from, size_t limit,
                         stele_page **out)
{
    rule *r = NULL;
    int rc = lookup(db, name, NULL, &r);
    if (rc)
        return rc;
    rc = stele_group_read_parked(db, "$all", r->group, from, limit, out);
    rule_unref(r);
    return rc;
}

int stele_rule_redrive(stele_db *db, const char *name, uint64_t max, uint64_t *count)
{
    rule *r = NULL;
    int rc = lookup(db, name, NULL, &r);
    if (rc)
        return rc;
    rc = stele_group_replay_parked(db, "$all", r->group, max, count);
    rule_unref(r);
    return rc;
}

int stele_rule_truncate_dead(stele_db *db, const char *name, uint64_t before)
{
    rule *r = NULL;
    int rc = lookup(db, name, NULL, &r);
    if (rc)
        return rc;
    rc = stele_group_truncate_parked(db, "$all", r->group, before);
    rule_unref(r);
    return rc;
}

/* ------------------------------------------------------------ replays */

int stele_rule_replay_start(stele_db *db, const char *name, const stele_replay_window *w,
                            uint64_t *id)
{
    err_clear();
    if (!w)
        return err_set(STELE_EINVAL, "window is NULL");
    if (w->by_time && w->has_to && w->from_us > w->to_us)
        return err_set(STELE_EINVAL, "replay window: from is after to");
    if (!w->by_time && w->has_to && w->to_pos != STELE_END && w->from_pos > w->to_pos)
        return err_set(STELE_EINVAL, "replay window: from is after to");
    rules_reg *reg;
    rule *r = NULL;
    int rc = lookup(db, name, &reg, &r);
    if (rc)
        return rc;
    pthread_mutex_lock(&reg->mu);
    uint64_t n = ++reg->next_replay_id;
    pthread_mutex_unlock(&reg->mu);
    rc = replay_start(r, w, n);
    if (rc == 0 && id)
        *id = n;
    rule_unref(r);
    return rc;
}

int stele_rule_replays(stele_db *db, const char *name, stele_replay_info **out, size_t *n)
{
    err_clear();
    if (!out || !n)
        return err_set(STELE_EINVAL, "a NULL argument");
    rule *r = NULL;
    int rc = lookup(db, name, NULL, &r);
    if (rc)
        return rc;
    rc = replay_infos(r, out, n);
    rule_unref(r);
    return rc;
}

int stele_rule_replay_cancel(stele_db *db, const char *name, uint64_t id)
{
    rule *r = NULL;
    int rc = lookup(db, name, NULL, &r);
    if (rc)
        return rc;
    rc = replay_cancel(r, id);
    rule_unref(r);
    return rc;
}
