/*
 * dynamodb.c - the DynamoDB read-model target: each event becomes one
 * PutItem, UpdateItem or DeleteItem (AWS JSON 1.0, DynamoDB_20120810.*)
 * chosen by its type and built from templates over its fields:
 *
 *   "table": "AccountSummary",
 *   "key": {"AccountId": "{{data.accountId}}", "ProjectionType": "AccountSummary"},
 *   "operations": {
 *     "TransactionProcessed": {
 *       "update": "SET Balance = Balance + :amount, TransactionCount = TransactionCount + :one",
 *       "values": {":amount": "{{data.amount}}", ":one": 1}},
 *     "OrderPlaced": {"put": {"status": "placed", "total": {"N": "{{data.total}}"}}},
 *     "AccountDeleted": {"delete": true},
 *     "*": ...                                  (any other type; else dead-lettered)
 *   }
 *
 * Values become DynamoDB attribute values: a string that is exactly one
 * placeholder takes the field's JSON type (number N, string S, boolean
 * BOOL, null NULL, object M, array L); any other string is text (S) with
 * its placeholders rendered (aws_conf.c's text templates); JSON numbers,
 * booleans and null map to N, BOOL, NULL; an object with one member named
 * S, N or BOOL is typed explicitly, its string rendered as text (so
 * {"N": "{{data.total}}"} stores an exact decimal given as a string).
 * Numbers keep 15 significant digits.
 *
 * Exactly once. Every write also sets the item's "last applied position"
 * attribute (positionAttribute, default "stelePosition") to the event's
 * $all position, under the condition
 *   attribute_not_exists(#pos) OR #pos < :pos
 * so an event already applied to the item (a retry whose answer was lost,
 * a redelivery after a crash, a replay) fails the condition and counts as
 * delivered without changing anything: increments are applied once. The
 * target is exactly_once for the delivery engine, which then keeps all of
 * the rule's events in one queue in position order, so the positions an
 * item sees only grow. A delete removes the item and its position with
 * it: a replay of events from before the delete recreates the item.
 *
 * Errors: throttling and 5xx are retried (the rule's policy);
 * ResourceNotFoundException (no table), ValidationException (a template
 * that does not fit the table or the expression) and credential errors
 * are final and dead-letter the event with DynamoDB's message.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules/aws_targets.h"
#include "rules/rules_int.h"

enum { OP_PUT, OP_UPDATE, OP_DELETE };

typedef struct ddb_op {
    char *type; /* event type, "*" for any other */
    int kind;
    json_t *put;    /* OP_PUT: attribute name -> value template */
    char *update;   /* OP_UPDATE: the expression, SET clause extended here */
    json_t *names;  /* OP_UPDATE: ExpressionAttributeNames, or NULL */
    json_t *values; /* OP_UPDATE: ":name" -> value template, or NULL */
} ddb_op;

typedef struct ddb_cfg {
    aws_conf aws;
    char *table;
    json_t *key; /* attribute name -> value template */
    char *pos_attr;
    ddb_op *ops;
    size_t nops;
} ddb_cfg;

typedef struct ddb_conn {
    const ddb_cfg *cfg;
    aws_client *cli;
} ddb_conn;

/* ------------------------------------------------------------ parsing */

static void cfg_free(ddb_cfg *c)
{
    if (!c)
        return;
    aws_conf_clear(&c->aws);
    free(c->table);
    json_decref(c->key);
    free(c->pos_attr);
    for (size_t i = 0; i < c->nops; i++) {
        free(c->ops[i].type);
        json_decref(c->ops[i].put);
        free(c->ops[i].update);
        json_decref(c->ops[i].names);
        json_decref(c->ops[i].values);
    }
    free(c->ops);
    free(c);
}

/* Check a value template (see the top). */
static int check_value(json_t *v, const char *path)
{
    if (json_is_string(v))
        return aws_text_template_check(json_string_value(v), path);
    if (json_is_number(v) || json_is_boolean(v) || json_is_null(v))
        return 0;
    if (json_is_object(v) && json_object_size(v) == 1) {
        const char *k = json_object_iter_key(json_object_iter(v));
        json_t *x = json_object_get(v, k);
        if ((!strcmp(k, "S") || !strcmp(k, "N") || !strcmp(k, "BOOL")) && json_is_string(x))
            return aws_text_template_check(json_string_value(x), path);
    }
    return err_set(STELE_EINVAL, "%s: a value is a string template, a number, true, false, null or "
                                 "{\"S\"|\"N\"|\"BOOL\": \"template\"}",
                   path);
}

static int check_values(json_t *obj, const char *path, int colon)
{
    if (!json_is_object(obj) || json_object_size(obj) == 0 || json_object_size(obj) > 100)
        return err_set(STELE_EINVAL, "%s: must be an object of 1 to 100 members", path);
    const char *k;
    json_t *v;
    char p[512];
    json_object_foreach(obj, k, v) {
        snprintf(p, sizeof p, "%s.%s", path, k);
        if (!*k || strlen(k) > 255 || (colon && k[0] != ':'))
            return err_set(STELE_EINVAL, "%s: %s", p, colon ? "names start with ':'" : "bad attribute name");
        int rc = check_value(v, p);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_op(const char *type, json_t *o, ddb_op *op)
{
    char path[320];
    snprintf(path, sizeof path, "target.operations.%s", type);
    if (!json_is_object(o))
        return err_set(STELE_EINVAL, "%s: must be an object with put, update or delete", path);
    json_t *put = json_object_get(o, "put"), *upd = json_object_get(o, "update"),
           *del = json_object_get(o, "delete"), *names = json_object_get(o, "names"),
           *values = json_object_get(o, "values");
    if ((put != NULL) + (upd != NULL) + (del != NULL) != 1)
        return err_set(STELE_EINVAL, "%s: exactly one of put, update, delete", path);
    static const char *const op_keys[] = {"put", "update", "delete", "names", "values", NULL};
    int rc = rdef_only_keys(o, path, op_keys);
    if (rc)
        return rc;
    if ((names || values) && !upd)
        return err_set(STELE_EINVAL, "%s: names and values go with update", path);
    if (!(op->type = strdup(type)))
        return err_set(STELE_ENOMEM, "out of memory");
    char sub[400];
    const char *k;
    json_t *v;
    if (put) {
        op->kind = OP_PUT;
        snprintf(sub, sizeof sub, "%s.put", path);
        rc = check_values(put, sub, 0);
        op->put = json_incref(put);
    } else if (del) {
        op->kind = OP_DELETE;
        if (!json_is_true(del))
            return err_set(STELE_EINVAL, "%s.delete: must be true", path);
    } else {
        op->kind = OP_UPDATE;
        if (!json_is_string(upd) || json_string_length(upd) == 0 || json_string_length(upd) > 4096)
            return err_set(STELE_EINVAL, "%s.update: an update expression (SET/REMOVE/ADD/DELETE clauses)", path);
        if (!(op->update = strdup(json_string_value(upd))))
            return err_set(STELE_ENOMEM, "out of memory");
        if (names) {
            json_object_foreach(names, k, v) {
                if (k[0] != '#' || !json_is_string(v) || !strcmp(k, "#stelePos"))
                    return err_set(STELE_EINVAL, "%s.names.%s: names start with '#' and map to strings", path, k);
            }
            if (!json_is_object(names))
                return err_set(STELE_EINVAL, "%s.names: must be an object", path);
            op->names = json_incref(names);
        }
        if (values) {
            snprintf(sub, sizeof sub, "%s.values", path);
            if ((rc = check_values(values, sub, 1)))
                return rc;
            if (json_object_get(values, ":stelePos"))
                return err_set(STELE_EINVAL, "%s.values.:stelePos: reserved for Stele", path);
            op->values = json_incref(values);
        }
    }
    return rc;
}

static const char *const ddb_keys[] = {"type", "table", "key", "operations", "positionAttribute", "endpoint",
                                       "region", "credentialsFile", "profile", "timeoutMs", NULL};

static int ddb_parse_cfg(json_t *t, ddb_cfg **out)
{
    *out = NULL;
    const char *k;
    json_t *v;
    int rc = rdef_only_keys(t, "target", ddb_keys);
    if (rc)
        return rc;
    ddb_cfg *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(STELE_ENOMEM, "out of memory");
    rc = aws_conf_parse(t, &c->aws);
    if (rc) {
        free(c);
        return rc;
    }
    const char *table = json_string_value(json_object_get(t, "table"));
    size_t tl = table ? strlen(table) : 0;
    int bad = tl < 3 || tl > 255;
    for (size_t i = 0; i < tl && !bad; i++)
        bad = !((table[i] >= 'a' && table[i] <= 'z') || (table[i] >= 'A' && table[i] <= 'Z') ||
                (table[i] >= '0' && table[i] <= '9') || table[i] == '_' || table[i] == '-' || table[i] == '.');
    if (bad)
        rc = err_set(STELE_EINVAL, "target.table: required, 3 to 255 of a-z A-Z 0-9 _ - .");
    json_t *key = json_object_get(t, "key");
    if (!rc && (!json_is_object(key) || json_object_size(key) < 1 || json_object_size(key) > 2))
        rc = err_set(STELE_EINVAL, "target.key: required, the table's key: 1 or 2 attributes -> value templates");
    if (!rc)
        rc = check_values(key, "target.key", 0);
    json_t *pa = json_object_get(t, "positionAttribute");
    if (!rc && pa && (!json_is_string(pa) || json_string_length(pa) == 0 || json_string_length(pa) > 255))
        rc = err_set(STELE_EINVAL, "target.positionAttribute: a non-empty attribute name");
    json_t *ops = json_object_get(t, "operations");
    if (!rc && (!json_is_object(ops) || json_object_size(ops) == 0 || json_object_size(ops) > 256))
        rc = err_set(STELE_EINVAL, "target.operations: required, event type -> {put|update|delete}, 1 to 256");
    if (!rc) {
        c->table = strdup(table);
        c->key = json_incref(key);
        c->pos_attr = strdup(pa ? json_string_value(pa) : "stelePosition");
        c->ops = calloc(json_object_size(ops), sizeof *c->ops);
        if (!c->table || !c->pos_attr || !c->ops)
            rc = err_set(STELE_ENOMEM, "out of memory");
    }
    if (!rc) {
        json_object_foreach(ops, k, v) {
            if (json_object_get(key, c->pos_attr)) {
                rc = err_set(STELE_EINVAL, "target.positionAttribute: must not be a key attribute");
                break;
            }
            rc = parse_op(k, v, &c->ops[c->nops++]);
            if (rc)
                break;
        }
    }
    if (rc) {
        cfg_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ requests */

typedef struct evctx {
    const stele_event *e;
    json_t *data, *meta;
} evctx;

static json_t *json_to_attr(json_t *v);

static json_t *json_to_attr(json_t *v)
{
    char num[64];
    switch (json_typeof(v)) {
    case JSON_STRING:
        return json_pack("{s:s%}", "S", json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return json_pack("{s:s}", "N", num);
    case JSON_REAL:
        snprintf(num, sizeof num, "%.15g", json_real_value(v));
        return json_pack("{s:s}", "N", num);
    case JSON_TRUE:
    case JSON_FALSE:
        return json_pack("{s:b}", "BOOL", json_is_true(v));
    case JSON_OBJECT: {
        json_t *m = json_object();
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) json_object_set_new(m, k, json_to_attr(x));
        return json_pack("{s:o}", "M", m);
    }
    case JSON_ARRAY: {
        json_t *l = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) json_array_append_new(l, json_to_attr(x));
        return json_pack("{s:o}", "L", l);
    }
    default:
        return json_pack("{s:b}", "NULL", 1);
    }
}

static char *render_text(const char *t, const evctx *x)
{
    buf b = {0};
    if (aws_text_template_render(&b, t, x->e, x->data, x->meta) || buf_append(&b, "", 1)) {
        buf_free(&b);
        return NULL;
    }
    return (char *)b.p;
}

/* One value template to an attribute value (new reference), NULL on out
 * of memory. */
static json_t *value_attr(json_t *v, const evctx *x)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = strlen(s);
        /* exactly "{{data.X}}" / "{{metadata.X}}": keep the field's JSON type */
        if (n > 4 && !strncmp(s, "{{", 2) && !strcmp(s + n - 2, "}}") && !strstr(s + 2, "{{")) {
            json_t *doc = !strncmp(s + 2, "data.", 5) ? x->data : !strncmp(s + 2, "metadata.", 9) ? x->meta : NULL;
            if (doc || !strncmp(s + 2, "data.", 5) || !strncmp(s + 2, "metadata.", 9)) {
                const char *name = strchr(s + 2, '.') + 1;
                char key[256];
                snprintf(key, sizeof key, "%.*s", (int)(s + n - 2 - name), name);
                json_t *f = doc ? json_object_get(doc, key) : NULL;
                return f ? json_to_attr(f) : json_pack("{s:b}", "NULL", 1);
            }
            if (!strcmp(s, "{{revision}}") || !strcmp(s, "{{position}}")) {
                char *t = render_text(s, x);
                json_t *r = t ? json_pack("{s:s}", "N", t) : NULL;
                free(t);
                return r;
            }
        }
        char *t = render_text(s, x);
        json_t *r = t ? json_pack("{s:s}", "S", t) : NULL;
        free(t);
        return r;
    }
    if (json_is_object(v)) {
        const char *k = json_object_iter_key(json_object_iter(v));
        char *t = render_text(json_string_value(json_object_get(v, k)), x);
        json_t *r = NULL;
        if (t && !strcmp(k, "BOOL"))
            r = json_pack("{s:b}", "BOOL", !strcmp(t, "true"));
        else if (t)
            r = json_pack("{s:s}", k, t);
        free(t);
        return r;
    }
    return json_to_attr(v);
}

static json_t *values_attrs(json_t *obj, const evctx *x)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        json_t *a = value_attr(v, x);
        if (!a || json_object_set_new(out, k, a)) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* The update expression with "#stelePos = :stelePos" added to its SET
 * clause (or a SET clause added). */
static char *with_position(const char *expr)
{
    size_t n = strlen(expr);
    char *out = malloc(n + 40);
    if (!out)
        return NULL;
    for (size_t i = 0; i + 3 <= n; i++) {
        int start = i == 0 || expr[i - 1] == ' ' || expr[i - 1] == '\t' || expr[i - 1] == '\n';
        if (start && !strncasecmp(expr + i, "SET", 3) && (i + 3 == n || expr[i + 3] == ' ' || expr[i + 3] == '\t')) {
            memcpy(out, expr, i + 3);
            sprintf(out + i + 3, " #stelePos = :stelePos,%s", expr + i + 3);
            return out;
        }
    }
    sprintf(out, "SET #stelePos = :stelePos %s", expr);
    return out;
}

static const ddb_op *find_op(const ddb_cfg *c, const stele_event *e)
{
    const ddb_op *any = NULL;
    for (size_t i = 0; i < c->nops; i++) {
        if (strlen(c->ops[i].type) == e->type_len && !memcmp(c->ops[i].type, e->type, e->type_len))
            return &c->ops[i];
        if (!strcmp(c->ops[i].type, "*"))
            any = &c->ops[i];
    }
    return any;
}

static void res_err(aws_result *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void res_err(aws_result *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->error, sizeof x->error, fmt, ap);
    va_end(ap);
}

/* Apply one event; fills r. */
static void apply_one(ddb_conn *k, const stele_event *e, aws_result *r)
{
    const ddb_cfg *c = k->cfg;
    const ddb_op *op = find_op(c, e);
    if (!op) {
        r->outcome = AWS_FAIL;
        r->kind = STELE_FAIL_OTHER;
        res_err(r, "dynamodb: no operation for event type '%.*s'", (int)(e->type_len > 100 ? 100 : e->type_len),
                e->type);
        return;
    }
    evctx x = {.e = e};
    if ((e->flags & STELE_EVENT_JSON) && e->data_len)
        x.data = json_loadb(e->data, e->data_len, 0, NULL);
    if ((e->flags & STELE_META_JSON) && e->metadata_len)
        x.meta = json_loadb(e->metadata, e->metadata_len, 0, NULL);
    char pos[24];
    snprintf(pos, sizeof pos, "%llu", (unsigned long long)e->position);
    json_t *key = values_attrs(c->key, &x);
    json_t *req = json_pack("{s:s,s:s}", "TableName", c->table, "ConditionExpression",
                            "attribute_not_exists(#stelePos) OR #stelePos < :stelePos");
    json_t *names = op->names ? json_deep_copy(op->names) : json_object();
    json_t *vals = op->values ? values_attrs(op->values, &x) : json_object();
    const char *target = NULL;
    int oom = !key || !req || !names || !vals;
    if (!oom) {
        json_object_set_new(names, "#stelePos", json_string(c->pos_attr));
        json_object_set_new(vals, ":stelePos", json_pack("{s:s}", "N", pos));
        json_object_set_new(req, "ExpressionAttributeNames", json_incref(names));
        if (op->kind == OP_PUT) {
            target = "DynamoDB_20120810.PutItem";
            json_t *item = values_attrs(op->put, &x);
            oom = !item;
            if (item) {
                json_object_update(item, key);
                json_object_set_new(item, c->pos_attr, json_pack("{s:s}", "N", pos));
                json_object_set_new(req, "Item", item);
            }
            json_object_set_new(req, "ExpressionAttributeValues", json_pack("{s:{s:s}}", ":stelePos", "N", pos));
        } else if (op->kind == OP_UPDATE) {
            target = "DynamoDB_20120810.UpdateItem";
            char *ex = with_position(op->update);
            oom = !ex;
            if (ex)
                json_object_set_new(req, "UpdateExpression", json_string(ex));
            free(ex);
            json_object_set(req, "Key", key);
            json_object_set(req, "ExpressionAttributeValues", vals);
        } else {
            target = "DynamoDB_20120810.DeleteItem";
            json_object_set(req, "Key", key);
            json_object_set_new(req, "ExpressionAttributeValues", json_pack("{s:{s:s}}", ":stelePos", "N", pos));
        }
    }
    char *body = oom ? NULL : json_dumps(req, JSON_COMPACT);
    json_decref(key);
    json_decref(req);
    json_decref(names);
    json_decref(vals);
    json_decref(x.data);
    json_decref(x.meta);
    if (!body) {
        r->outcome = AWS_RETRY;
        r->kind = STELE_FAIL_OTHER;
        res_err(r, "out of memory");
        return;
    }
    aws_resp resp;
    int rc = aws_call(k->cli, target, body, strlen(body), &resp);
    free(body);
    if (rc) {
        r->outcome = AWS_RETRY;
        r->kind = STELE_FAIL_CONNECT;
        res_err(r, "dynamodb: %s", resp.message);
    } else if (resp.status == 200 || !strcmp(resp.type, "ConditionalCheckFailedException")) {
        r->outcome = AWS_DELIVERED; /* applied now, or already applied before */
    } else {
        int retry = aws_error_retryable(resp.status, resp.type);
        r->outcome = retry ? AWS_RETRY : AWS_FAIL;
        r->kind = aws_fail_kind(resp.status, resp.type);
        res_err(r, "dynamodb %ld %s: %s", resp.status, resp.type, resp.message);
    }
    aws_resp_free(&resp);
}

/* ------------------------------------------------------------ the target */

static int dt_parse(json_t *t, rule_def *d)
{
    ddb_cfg *c = NULL;
    d->target = TARGET_OTHER;
    int rc = ddb_parse_cfg(t, &c);
    d->tcfg = c;
    return rc;
}

static void dt_free(rule_def *d)
{
    cfg_free(d->tcfg);
    d->tcfg = NULL;
}

static int dt_open(const rule_def *d, stele_db *db, const char *rule_name, void **conn, char err[256])
{
    (void)db;
    (void)rule_name;
    const ddb_cfg *c = d->tcfg;
    ddb_conn *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, 256, "out of memory");
        return STELE_ENOMEM;
    }
    k->cfg = c;
    int rc = aws_conf_client(&c->aws, "dynamodb", "application/x-amz-json-1.0", &k->cli, err);
    if (rc) {
        free(k);
        return rc;
    }
    *conn = k;
    return 0;
}

/* In order; the first event not delivered stops the batch (the engine
 * keeps one queue for an exactly-once target, so the rest waits anyway). */
static void dt_deliver(void *conn, const rule_def *d, const stele_event *const *evs, size_t n, uint64_t replay_id,
                       tgt_result *res)
{
    (void)d;
    (void)replay_id;
    ddb_conn *k = conn;
    for (size_t i = 0; i < n; i++) {
        aws_result r = {.outcome = AWS_NOT_TRIED, .retry_after_ms = -1};
        apply_one(k, evs[i], &r);
        res[i].outcome = r.outcome == AWS_DELIVERED ? TGT_DELIVERED : r.outcome == AWS_RETRY ? TGT_RETRY : TGT_FAIL;
        res[i].kind = r.kind;
        res[i].retry_after_ms = r.retry_after_ms;
        memcpy(res[i].error, r.error, sizeof res[i].error);
        if (r.outcome != AWS_DELIVERED)
            break;
    }
}

static void dt_close(void *conn)
{
    ddb_conn *k = conn;
    if (!k)
        return;
    aws_client_free(k->cli);
    free(k);
}

const target_ops target_dynamodb = {
    .type = "dynamodb",
    .parse = dt_parse,
    .free_cfg = dt_free,
    .open = dt_open,
    .deliver = dt_deliver,
    .close = dt_close,
    .batch_max = 100,
    .exactly_once = 1,
};
