/*
 * target_pg.c - the "postgres" target: a read model in a PostgreSQL
 * table, updated by parameterised SQL, exactly once.
 *
 *   {"type": "postgres",
 *    "conninfo": "host=db port=5432 dbname=shop user=stele",   no password
 *    "passwordEnv": "STELE_PG_PASSWORD" | "passwordFile": "/run/secrets/pg",
 *    "sql": "INSERT ... VALUES (${data.orderId}, ${data.total}) ..."
 *         | {"OrderPlaced": "...", "OrderShipped": "...", "*": "..."},
 *    "checkpointTable": "stele_checkpoints", "batchSize": 100}
 *
 * Templates: ${stream} ${category} ${type} ${id} ${revision} ${position}
 * ${created} ${data} ${metadata} ${data.a.b} ${metadata.a} are replaced by
 * $1..$n when the rule is saved; each event's values are sent as bind
 * parameters (text), never spliced into the SQL. A string member is sent
 * as its text, any other JSON value as its JSON text, a missing member as
 * NULL. With an object of statements, an event runs the statement of its
 * type, else "*", else none (it still advances the checkpoint).
 *
 * Exactly once: the engine gives this target one queue in position order
 * (target_ops.exactly_once). A batch runs in one transaction that first
 * locks the rule's row of the checkpoint table (rule name -> last applied
 * position; created if missing), skips events at or below it, runs the
 * statements of the others and moves the row to the batch's last
 * position before COMMIT. So a retry, a redelivery after a crash of
 * Stele, a lost COMMIT acknowledgement or a replay never applies an event
 * twice, and two writers of one rule (the live worker and a replay)
 * serialise on the row lock.
 *
 * Errors: if event i of a batch fails, the transaction is rolled back, the
 * events before i are applied again in a new transaction, event i gets the
 * error and the rest wait. SQLSTATE classes 22 (data exception) and 23
 * (integrity constraint) are final for the event (dead-lettered); any
 * other error (no connection, wrong password, missing table, deadlock,
 * shutdown) is retried under the rule's retry policy, with PostgreSQL's own
 * message as the error. Passwords come from the environment or a file and
 * are never part of the stored definition or any message.
 */
#ifdef STELE_WITH_POSTGRES
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "rules/rules_int.h"

#define PG_PARAMS_MAX 64u
#define PG_STMTS_MAX 64u
#define PG_SQL_MAX (64u << 10)

/* Where a parameter's value comes from. */
enum { PV_STREAM, PV_CATEGORY, PV_TYPE, PV_ID, PV_REVISION, PV_POSITION, PV_CREATED, PV_DATA,
       PV_META };

typedef struct pg_param {
    int src;
    char *path; /* PV_DATA / PV_META: dotted member path, NULL: the whole value */
} pg_param;

typedef struct pg_stmt {
    char *type;  /* event type, "*" for the default */
    char *sql;   /* with $1..$n */
    pg_param params[PG_PARAMS_MAX];
    unsigned nparams;
} pg_stmt;

typedef struct pg_cfg {
    char *conninfo, *password_env, *password_file, *cp_table;
    pg_stmt stmts[PG_STMTS_MAX];
    unsigned nstmts;
    uint32_t batch;
} pg_cfg;

typedef struct pg_conn {
    PGconn *c;
    const pg_cfg *cfg;
    char rule[STELE_RULE_NAME_MAX + 1];
    char cp_sql_lock[600], cp_sql_set[600];
} pg_conn;

static void cfg_free(pg_cfg *g)
{
    if (!g)
        return;
    free(g->conninfo);
    free(g->password_env);
    free(g->password_file);
    free(g->cp_table);
    for (unsigned i = 0; i < g->nstmts; i++) {
        free(g->stmts[i].type);
        free(g->stmts[i].sql);
        for (unsigned k = 0; k < g->stmts[i].nparams; k++)
            free(g->stmts[i].params[k].path);
    }
    free(g);
}

static void pg_free_cfg(rule_def *d)
{
    cfg_free(d->tcfg);
    d->tcfg = NULL;
}

/* Compile template t into s: ${...} -> $n. Same placeholder, same $n. */
static int compile_sql(const char *path, const char *t, pg_stmt *s)
{
    static const char *const names[] = {"stream", "category", "type", "id", "revision",
                                        "position", "created", "data", "metadata"};
    buf out = {0};
    int rc = 0;
    for (const char *p = t; *p && !rc;) {
        if (!(p[0] == '$' && p[1] == '{')) {
            buf_append(&out, p, 1);
            p++;
            continue;
        }
        const char *e = strchr(p + 2, '}');
        if (!e) {
            rc = err_set(STELE_EINVAL, "%s: '${' at byte %zu is not closed", path,
                         (size_t)(p - t));
            break;
        }
        size_t n = (size_t)(e - p - 2);
        char name[256];
        if (n == 0 || n >= sizeof name) {
            rc = err_set(STELE_EINVAL, "%s: empty or too long placeholder at byte %zu", path,
                         (size_t)(p - t));
            break;
        }
        memcpy(name, p + 2, n);
        name[n] = 0;
        int src = -1;
        const char *sub = NULL;
        for (int i = 0; i < 9 && src < 0; i++) {
            size_t k = strlen(names[i]);
            if (!strcmp(name, names[i]))
                src = i;
            else if (i >= 7 && !strncmp(name, names[i], k) && name[k] == '.' && name[k + 1])
                src = i, sub = name + k + 1;
        }
        if (src < 0) {
            rc = err_set(STELE_EINVAL,
                         "%s: unknown placeholder '${%s}' at byte %zu (known: stream category "
                         "type id revision position created data metadata data.PATH "
                         "metadata.PATH)",
                         path, name, (size_t)(p - t));
            break;
        }
        unsigned k = 0;
        while (k < s->nparams && !(s->params[k].src == src &&
                                   ((!sub && !s->params[k].path) ||
                                    (sub && s->params[k].path && !strcmp(sub, s->params[k].path)))))
            k++;
        if (k == s->nparams) {
            if (s->nparams == PG_PARAMS_MAX) {
                rc = err_set(STELE_EINVAL, "%s: more than %u distinct placeholders", path,
                             PG_PARAMS_MAX);
                break;
            }
            s->params[k].src = src;
            if (sub && !(s->params[k].path = strdup(sub))) {
                rc = err_set(STELE_ENOMEM, "out of memory");
                break;
            }
            s->nparams++;
        }
        char num[16];
        int m = snprintf(num, sizeof num, "$%u", k + 1);
        buf_append(&out, num, (size_t)m);
        p = e + 1;
    }
    buf_append(&out, "", 1);
    if (rc || !out.p) {
        buf_free(&out);
        return rc ? rc : err_set(STELE_ENOMEM, "out of memory");
    }
    s->sql = (char *)out.p; /* owned now */
    return 0;
}

static int add_stmt(pg_cfg *g, const char *path, const char *type, json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > PG_SQL_MAX ||
        strlen(json_string_value(v)) != json_string_length(v))
        return err_set(STELE_EINVAL, "%s: must be SQL text of 1 to %u bytes", path, PG_SQL_MAX);
    if (g->nstmts == PG_STMTS_MAX)
        return err_set(STELE_EINVAL, "target.sql: more than %u statements", PG_STMTS_MAX);
    pg_stmt *s = &g->stmts[g->nstmts++];
    if (!(s->type = strdup(type)))
        return err_set(STELE_ENOMEM, "out of memory");
    return compile_sql(path, json_string_value(v), s);
}

/* A table name: identifier or schema.identifier, letters, digits, '_'. */
static int table_name_ok(const char *s)
{
    int dots = 0;
    if (!*s || isdigit((unsigned char)*s))
        return 0;
    for (const char *p = s; *p; p++) {
        if (*p == '.') {
            if (++dots > 1 || p == s || !p[1] || isdigit((unsigned char)p[1]))
                return 0;
        } else if (!(isalnum((unsigned char)*p) || *p == '_')) {
            return 0;
        }
    }
    return 1;
}

static int pg_parse(json_t *t, rule_def *d)
{
    static const char *const keys[] = {"type", "conninfo", "passwordEnv", "passwordFile", "sql",
                                       "checkpointTable", "batchSize", NULL};
    pg_cfg *g = calloc(1, sizeof *g);
    if (!g)
        return err_set(STELE_ENOMEM, "out of memory");
    d->tcfg = g;
    int rc;
    uint64_t batch = 100;
    if ((rc = rdef_only_keys(t, "target", keys)) ||
        (rc = rdef_get_str(t, "target", "conninfo", 4096, 1, &g->conninfo)) ||
        (rc = rdef_get_str(t, "target", "passwordEnv", 255, 0, &g->password_env)) ||
        (rc = rdef_get_str(t, "target", "passwordFile", 4096, 0, &g->password_file)) ||
        (rc = rdef_get_str(t, "target", "checkpointTable", 127, 0, &g->cp_table)) ||
        (rc = rdef_get_uint(t, "target", "batchSize", 1, 1000, &batch)))
        return rc;
    g->batch = (uint32_t)batch;
    d->batch = g->batch;
    if (g->password_env && g->password_file)
        return err_set(STELE_EINVAL, "target.passwordEnv: give passwordEnv or passwordFile, not both");
    char *perr = NULL;
    PQconninfoOption *o = PQconninfoParse(g->conninfo, &perr);
    if (!o) {
        rc = err_set(STELE_EINVAL, "target.conninfo: %s", perr ? perr : "cannot be parsed");
        PQfreemem(perr);
        return rc;
    }
    int has_pw = 0;
    for (PQconninfoOption *x = o; x->keyword; x++)
        if (!strcmp(x->keyword, "password") && x->val && *x->val)
            has_pw = 1;
    PQconninfoFree(o);
    if (has_pw)
        return err_set(STELE_EINVAL, "target.conninfo: must not hold a password (it would be "
                                     "stored and shown): use passwordEnv or passwordFile");
    if (!g->cp_table && !(g->cp_table = strdup("stele_checkpoints")))
        return err_set(STELE_ENOMEM, "out of memory");
    if (!table_name_ok(g->cp_table))
        return err_set(STELE_EINVAL, "target.checkpointTable: a table name (letters, digits, "
                                     "'_', optionally schema.table)");
    json_t *sql = json_object_get(t, "sql");
    if (!sql)
        return err_set(STELE_EINVAL, "target.sql: required");
    if (json_is_object(sql)) {
        if (json_object_size(sql) == 0)
            return err_set(STELE_EINVAL, "target.sql: an empty object");
        const char *k;
        json_t *v;
        json_object_foreach(sql, k, v) {
            char path[300];
            snprintf(path, sizeof path, "target.sql.%s", k);
            if ((rc = add_stmt(g, path, k, v)))
                return rc;
        }
        return 0;
    }
    return add_stmt(g, "target.sql", "*", sql);
}

static int pg_normalize(json_t *t, const rule_def *d)
{
    const pg_cfg *g = d->tcfg;
    return json_object_set_new(t, "checkpointTable", json_string(g->cp_table)) |
           json_object_set_new(t, "batchSize", json_integer(g->batch));
}

/* ------------------------------------------------------------ connection */

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = 0;
}

static int read_password(const pg_cfg *g, char *pw, size_t cap, char err[256])
{
    pw[0] = 0;
    if (g->password_env) {
        const char *v = getenv(g->password_env);
        if (!v) {
            snprintf(err, 256, "environment variable %s (passwordEnv) is not set",
                     g->password_env);
            return -1;
        }
        snprintf(pw, cap, "%s", v);
    } else if (g->password_file) {
        FILE *f = fopen(g->password_file, "r");
        if (!f) {
            snprintf(err, 256, "passwordFile %s cannot be read", g->password_file);
            return -1;
        }
        size_t n = fread(pw, 1, cap - 1, f);
        fclose(f);
        pw[n] = 0;
        pw[strcspn(pw, "\r\n")] = 0;
    }
    return 0;
}

static int exec_ok(PGconn *c, const char *sql, char err[256])
{
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok && err) {
        snprintf(err, 256, "%s", PQresultErrorMessage(r));
        trim(err);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static void pg_close(void *conn)
{
    pg_conn *p = conn;
    if (!p)
        return;
    PQfinish(p->c);
    free(p);
}

static int pg_open(const rule_def *d, stele_db *db, const char *rule_name, void **conn,
                   char err[256])
{
    (void)db;
    const pg_cfg *g = d->tcfg;
    char pw[1024];
    if (read_password(g, pw, sizeof pw, err))
        return -1;
    /* Without passwordEnv/passwordFile, libpq's own PGPASSWORD or
     * PGPASSFILE (.pgpass) apply. */
    const char *kw[5] = {"dbname", "application_name", "connect_timeout", NULL, NULL};
    const char *vals[5] = {g->conninfo, "stele-rules", "10", NULL, NULL};
    if (pw[0])
        kw[3] = "password", vals[3] = pw;
    PGconn *c = PQconnectdbParams(kw, vals, 1); /* expand_dbname: conninfo in "dbname" */
    memset(pw, 0, sizeof pw);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, 256, "postgres: %s", PQerrorMessage(c));
        trim(err);
        PQfinish(c);
        return -1;
    }
    pg_conn *p = calloc(1, sizeof *p);
    if (!p) {
        PQfinish(c);
        snprintf(err, 256, "out of memory");
        return -1;
    }
    p->c = c;
    p->cfg = g;
    snprintf(p->rule, sizeof p->rule, "%s", rule_name);
    snprintf(p->cp_sql_lock, sizeof p->cp_sql_lock,
             "SELECT position FROM %s WHERE rule = $1 FOR UPDATE", g->cp_table);
    snprintf(p->cp_sql_set, sizeof p->cp_sql_set,
             "UPDATE %s SET position = $2, updated = now() WHERE rule = $1", g->cp_table);
    char sql[800], e2[256];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s (rule text PRIMARY KEY, position bigint NOT NULL, "
             "updated timestamptz NOT NULL DEFAULT now())",
             g->cp_table);
    if (exec_ok(c, "SET client_min_messages = warning", e2) || exec_ok(c, sql, e2)) {
        snprintf(err, 256, "postgres: checkpoint table %s: %.180s", g->cp_table, e2);
        pg_close(p);
        return -1;
    }
    *conn = p;
    return 0;
}

/* ------------------------------------------------------------ delivery */

static const pg_stmt *stmt_for(const pg_cfg *g, const stele_event *e)
{
    const pg_stmt *any = NULL;
    for (unsigned i = 0; i < g->nstmts; i++) {
        if (!strcmp(g->stmts[i].type, "*"))
            any = &g->stmts[i];
        else if (strlen(g->stmts[i].type) == e->type_len &&
                 !memcmp(g->stmts[i].type, e->type, e->type_len))
            return &g->stmts[i];
    }
    return any;
}

/* The value of a data/metadata placeholder: malloc'd text, or NULL. */
static char *json_param(const void *raw, size_t len, int is_json, const char *path)
{
    if (!path) {
        char *s = malloc(len + 1);
        if (s) {
            memcpy(s, raw, len);
            s[len] = 0;
        }
        return s;
    }
    if (!is_json)
        return NULL;
    json_error_t je;
    json_t *root = json_loadb(raw, len, 0, &je), *v = root;
    char seg[256];
    for (const char *p = path; v && *p;) {
        size_t n = strcspn(p, ".");
        if (n >= sizeof seg)
            n = sizeof seg - 1;
        memcpy(seg, p, n);
        seg[n] = 0;
        v = json_is_object(v) ? json_object_get(v, seg) : NULL;
        p += n;
        if (*p == '.')
            p++;
    }
    char *out = NULL;
    if (json_is_string(v))
        out = strdup(json_string_value(v));
    else if (v && !json_is_null(v))
        out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(root);
    return out;
}

static char *param_value(const pg_param *pp, const stele_event *e)
{
    char tmp[64];
    switch (pp->src) {
    case PV_STREAM:
        return strndup(e->stream, e->stream_len);
    case PV_CATEGORY:
        return strndup(e->stream, stream_category_len(e->stream, e->stream_len));
    case PV_TYPE:
        return strndup(e->type, e->type_len);
    case PV_ID:
        stele_uuid_format(e->id, tmp);
        return strdup(tmp);
    case PV_REVISION:
        snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)e->revision);
        return strdup(tmp);
    case PV_POSITION:
        snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)e->position);
        return strdup(tmp);
    case PV_CREATED: {
        time_t s = (time_t)(e->created_us / 1000000);
        struct tm tm;
        gmtime_r(&s, &tm);
        char d[40];
        strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(tmp, sizeof tmp, "%s.%06lldZ", d, (long long)(e->created_us % 1000000));
        return strdup(tmp);
    }
    case PV_DATA:
        return json_param(e->data, e->data_len, (e->flags & STELE_EVENT_JSON) != 0, pp->path);
    default:
        return json_param(e->metadata, e->metadata_len, (e->flags & STELE_META_JSON) != 0,
                          pp->path);
    }
}

/* Run event e's statement. 0, or -1 with r filled. */
static int apply_one(pg_conn *p, const stele_event *e, tgt_result *r)
{
    const pg_stmt *s = stmt_for(p->cfg, e);
    if (!s)
        return 0;
    char *vals[PG_PARAMS_MAX] = {0};
    for (unsigned i = 0; i < s->nparams; i++)
        vals[i] = param_value(&s->params[i], e);
    PGresult *res = PQexecParams(p->c, s->sql, (int)s->nparams, NULL,
                                 (const char *const *)vals, NULL, NULL, 0);
    for (unsigned i = 0; i < s->nparams; i++)
        free(vals[i]);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(res);
        return 0;
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int final = state && (!strncmp(state, "22", 2) || !strncmp(state, "23", 2));
    r->outcome = final ? TGT_FAIL : TGT_RETRY;
    r->kind = PQstatus(p->c) == CONNECTION_BAD ? STELE_FAIL_CONNECT : STELE_FAIL_OTHER;
    snprintf(r->error, sizeof r->error, "postgres%s%s: %s", state ? " " : "", state ? state : "",
             PQresultErrorMessage(res));
    trim(r->error);
    PQclear(res);
    return -1;
}

static void conn_error(pg_conn *p, tgt_result *r, const char *what)
{
    r->outcome = TGT_RETRY;
    r->kind = PQstatus(p->c) == CONNECTION_BAD ? STELE_FAIL_CONNECT : STELE_FAIL_OTHER;
    snprintf(r->error, sizeof r->error, "postgres: %s: %s", what, PQerrorMessage(p->c));
    trim(r->error);
}

/* One transaction over evs[0..n): the checkpoint row locked, events above
 * it applied, the row moved. Returns -1 (and index of the failing event in
 * *bad, or n for the transaction itself) after a rollback. */
static int apply_tx(pg_conn *p, const stele_event *const *evs, size_t n, tgt_result *res,
                    size_t *bad)
{
    char err[256];
    *bad = 0;
    if (exec_ok(p->c, "BEGIN", err)) {
        conn_error(p, &res[0], "BEGIN");
        return -1;
    }
    char ins[700];
    snprintf(ins, sizeof ins, "INSERT INTO %s (rule, position) VALUES ($1, -1) "
                              "ON CONFLICT (rule) DO NOTHING", p->cfg->cp_table);
    const char *rv[2] = {p->rule, NULL};
    PGresult *r = PQexecParams(p->c, ins, 1, NULL, rv, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    long long cp = -1;
    if (ok) {
        r = PQexecParams(p->c, p->cp_sql_lock, 1, NULL, rv, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        if (ok)
            cp = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    if (!ok) {
        conn_error(p, &res[0], "checkpoint row");
        exec_ok(p->c, "ROLLBACK", NULL);
        return -1;
    }
    long long last = cp;
    for (size_t i = 0; i < n; i++) {
        if ((long long)evs[i]->position <= cp)
            continue; /* applied before: a retry, a redelivery or a replay */
        if (apply_one(p, evs[i], &res[i])) {
            *bad = i;
            exec_ok(p->c, "ROLLBACK", NULL);
            return -1;
        }
        last = (long long)evs[i]->position;
    }
    if (last != cp) {
        char pos[32];
        snprintf(pos, sizeof pos, "%lld", last);
        const char *sv[2] = {p->rule, pos};
        r = PQexecParams(p->c, p->cp_sql_set, 2, NULL, sv, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            conn_error(p, &res[0], "checkpoint update");
            exec_ok(p->c, "ROLLBACK", NULL);
            return -1;
        }
    }
    if (exec_ok(p->c, "COMMIT", err)) {
        /* Committed or not, the checkpoint row tells on the retry. */
        res[0].outcome = TGT_RETRY;
        res[0].kind = PQstatus(p->c) == CONNECTION_BAD ? STELE_FAIL_CONNECT : STELE_FAIL_OTHER;
        snprintf(res[0].error, sizeof res[0].error, "postgres: COMMIT: %.200s", err);
        return -1;
    }
    return 0;
}

static void pg_deliver(void *conn, const rule_def *d, const stele_event *const *evs, size_t n,
                       uint64_t replay_id, tgt_result *res)
{
    (void)d;
    (void)replay_id;
    pg_conn *p = conn;
    size_t bad;
    if (apply_tx(p, evs, n, res, &bad) == 0) {
        for (size_t i = 0; i < n; i++)
            res[i].outcome = TGT_DELIVERED;
        return;
    }
    /* Event `bad` failed (or the transaction did, bad = 0): apply the ones
     * before it on their own, then report it. */
    if (bad > 0) {
        tgt_result *pre = calloc(bad, sizeof *pre);
        size_t bad2 = 0;
        if (!pre) {
            res[0] = (tgt_result){.outcome = TGT_RETRY, .kind = STELE_FAIL_OTHER,
                                  .retry_after_ms = -1, .error = "out of memory"};
            bad = 0;
        } else if (apply_tx(p, evs, bad, pre, &bad2) == 0) {
            for (size_t i = 0; i < bad; i++)
                res[i].outcome = TGT_DELIVERED;
        } else {
            res[0] = pre[bad2];
            bad = 0;
        }
        free(pre);
    }
    for (size_t i = bad + 1; i < n; i++)
        res[i].outcome = TGT_NOT_TRIED;
}

const target_ops target_postgres = {
    .type = "postgres",
    .parse = pg_parse,
    .normalize = pg_normalize,
    .free_cfg = pg_free_cfg,
    .open = pg_open,
    .deliver = pg_deliver,
    .close = pg_close,
    .batch_max = 1000,
    .exactly_once = 1,
};
#else
typedef int target_pg_absent; /* built without libpq */
#endif
