/*
 * ddb_groups.c - the claims of consumer groups shared by the servers of one
 * DynamoDB store (backend_group_ops in backend.h; the design is in
 * src/sub/group_share.c and docs/backends.md).
 *
 * One table, "{prefix}-groups", made on first use (PAY_PER_REQUEST):
 *
 *   gkey (S, hash)         rto (N, range)   attributes
 *   group key              -1               frontier
 *   group key              range's `to`     rfrom, owner (absent once released)
 *   group key "#hb:" owner 0                expires (the owner's lease)
 *
 * A claim's lease is its owner's heartbeat item, so renewing every claim
 * of a server is one PutItem whatever it holds; a claim has expired when
 * its owner's heartbeat is missing or past, or it has no owner.
 * - claim: one TransactWriteItems: the frontier item updated on the
 *   condition that it still holds `from`, the claim item put on the
 *   condition that it does not exist, the heartbeat renewed. A cancelled
 *   transaction means another server moved the frontier first.
 * - steal: a consistent Query of the group's items and a read of the
 *   owners' heartbeats, then a transaction that moves the lowest expired
 *   claim of another owner to this one, conditioned on the owner just
 *   read, so two servers never take the same one.
 * - sync: the heartbeat put, a consistent Query, then one conditional
 *   write (owner = me) per claim whose start moved or that is finished.
 *   Releasing deletes the heartbeat and removes the owner of each claim.
 * DynamoDB has no clock to compare with: expiries are the servers' wall
 * clocks in ms, so their clocks must agree to well within a lease (NTP
 * does); a clock ahead only makes a server take over sooner, which costs
 * duplicates, never a lost event.
 * Capacity (items under 1 KB): a claim 3 WCU x 2 (a transaction), a renewal
 * 1 WCU + a Query (0.5 RCU per 4 KB of the group's claims), a checkpoint's
 * sync that plus 1 WCU per claim that moved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/ddb_int.h"
#include "util/util.h"

#define FRONTIER_RTO (-1)

static void table_name(ddb *D, char *out, size_t n)
{
    snprintf(out, n, "%s-groups", D->prefix ? D->prefix : "");
}

static int ensure_table(ddb *D, const char *t)
{
    char type[128] = "";
    json_t *req = json_pack(
        "{s:s, s:s, s:[{s:s, s:s}, {s:s, s:s}], s:[{s:s, s:s}, {s:s, s:s}]}", "TableName", t,
        "BillingMode", "PAY_PER_REQUEST", "AttributeDefinitions", "AttributeName", "gkey",
        "AttributeType", "S", "AttributeName", "rto", "AttributeType", "N", "KeySchema",
        "AttributeName", "gkey", "KeyType", "HASH", "AttributeName", "rto", "KeyType", "RANGE");
    int rc = ddb_call(D, "CreateTable", req, NULL, type);
    if (rc && !strcmp(type, "ResourceInUseException")) {
        err_clear();
        rc = 0;
    }
    for (int i = 0; rc == 0 && i < 600; i++) {
        json_t *resp;
        rc = ddb_call(D, "DescribeTable", json_pack("{s:s}", "TableName", t), &resp, NULL);
        if (rc)
            break;
        const char *s =
            json_string_value(json_object_get(json_object_get(resp, "Table"), "TableStatus"));
        int active = s && !strcmp(s, "ACTIVE");
        json_decref(resp);
        if (active)
            return 0;
        usleep(200000);
    }
    return rc ? rc : err_set(STELE_EIO, "dynamodb: table %s did not become ACTIVE", t);
}

static int64_t wall_ms(void) { return time_now_us() / 1000; }

/* Every item of a group, consistently: *items (caller json_decref's resp). */
static int group_items(ddb *D, const char *t, const char *key, json_t **resp)
{
    return ddb_call(D, "Query",
                    json_pack("{s:s, s:s, s:{s:s}, s:{s:o}, s:b}", "TableName", t,
                              "KeyConditionExpression", "#k = :k", "ExpressionAttributeNames",
                              "#k", "gkey", "ExpressionAttributeValues", ":k",
                              ddb_s(key, strlen(key)), "ConsistentRead", 1),
                    resp, NULL);
}

static json_t *item_key(const char *key, int64_t rto)
{
    return json_pack("{s:o, s:o}", "gkey", ddb_s(key, strlen(key)), "rto", ddb_n(rto));
}

static int read_frontier(ddb *D, const char *t, const char *key, uint64_t *out)
{
    json_t *resp;
    int rc = ddb_call(D, "GetItem",
                      json_pack("{s:s, s:o, s:b}", "TableName", t, "Key",
                                item_key(key, FRONTIER_RTO), "ConsistentRead", 1),
                      &resp, NULL);
    if (rc)
        return rc;
    int64_t f;
    json_t *it = json_object_get(resp, "Item");
    rc = it ? ddb_get_n(it, "frontier", &f) : STELE_ENOTFOUND;
    json_decref(resp);
    if (rc)
        return err_set(STELE_ENOTFOUND, "consumer group claims: no state for '%s'", key);
    *out = (uint64_t)f;
    return 0;
}

static int dg_frontier(backend *b, const char *key, uint64_t start, uint64_t *frontier)
{
    ddb *D = (ddb *)b;
    char t[300];
    table_name(D, t, sizeof t);
    int rc = ensure_table(D, t);
    if (rc)
        return rc;
    json_t *item = item_key(key, FRONTIER_RTO);
    json_object_set_new(item, "frontier", ddb_n((int64_t)start));
    char type[128] = "";
    rc = ddb_call(D, "PutItem",
                  json_pack("{s:s, s:o, s:s}", "TableName", t, "Item", item,
                            "ConditionExpression", "attribute_not_exists(gkey)"),
                  NULL, type);
    if (rc && !strcmp(type, "ConditionalCheckFailedException")) {
        err_clear();
        rc = 0;
    }
    return rc ? rc : read_frontier(D, t, key, frontier);
}

/* The heartbeat item of `owner` (the lease of all its claims of `key`). */
static json_t *hb_key(const char *key, const char *owner)
{
    char k[600];
    int n = snprintf(k, sizeof k, "%s#hb:%s", key, owner);
    return json_pack("{s:o, s:o}", "gkey", ddb_s(k, (size_t)n), "rto", ddb_n(0));
}

static json_t *hb_put(const char *t, const char *key, const char *owner, uint32_t ttl_ms)
{
    json_t *item = hb_key(key, owner);
    json_object_set_new(item, "expires", ddb_n(wall_ms() + ttl_ms));
    return json_pack("{s:{s:s, s:o}}", "Put", "TableName", t, "Item", item);
}

static int dg_claim(backend *b, const char *key, const char *owner, uint64_t from, uint64_t to,
                    uint32_t ttl_ms, uint64_t *frontier)
{
    ddb *D = (ddb *)b;
    char t[300];
    table_name(D, t, sizeof t);
    json_t *claim = item_key(key, (int64_t)to);
    json_object_set_new(claim, "rfrom", ddb_n((int64_t)from));
    json_object_set_new(claim, "owner", ddb_s(owner, strlen(owner)));
    json_t *req = json_pack(
        "{s:[{s:{s:s, s:o, s:s, s:s, s:{s:s}, s:{s:o, s:o}}}, {s:{s:s, s:o, s:s}}, o]}",
        "TransactItems", "Update", "TableName", t, "Key", item_key(key, FRONTIER_RTO),
        "UpdateExpression", "SET #f = :to", "ConditionExpression", "#f = :from",
        "ExpressionAttributeNames", "#f", "frontier", "ExpressionAttributeValues", ":to",
        ddb_n((int64_t)to), ":from", ddb_n((int64_t)from), "Put", "TableName", t, "Item", claim,
        "ConditionExpression", "attribute_not_exists(gkey)", hb_put(t, key, owner, ttl_ms));
    char type[128] = "";
    json_t *resp = NULL;
    int rc = ddb_call(D, "TransactWriteItems", req, &resp, type);
    json_decref(resp);
    if (rc == 0) {
        *frontier = to;
        return 0;
    }
    if (strcmp(type, "TransactionCanceledException"))
        return rc;
    err_clear();
    if ((rc = read_frontier(D, t, key, frontier)))
        return rc;
    return err_set(STELE_EWRONGREV, "another server claimed the group's events first");
}

/* Whether `owner`'s lease has run out (no heartbeat, or a past one). */
static int hb_expired(ddb *D, const char *t, const char *key, const char *owner, int64_t now,
                      int *expired)
{
    json_t *resp;
    int rc = ddb_call(D, "GetItem",
                      json_pack("{s:s, s:o, s:b}", "TableName", t, "Key", hb_key(key, owner),
                                "ConsistentRead", 1),
                      &resp, NULL);
    if (rc)
        return rc;
    int64_t exp = 0;
    json_t *it = json_object_get(resp, "Item");
    *expired = !it || ddb_get_n(it, "expires", &exp) || exp <= now;
    json_decref(resp);
    return 0;
}

static int dg_steal(backend *b, const char *key, const char *owner, uint32_t ttl_ms,
                    group_claim *out)
{
    ddb *D = (ddb *)b;
    char t[300];
    table_name(D, t, sizeof t);
    json_t *resp;
    int rc = group_items(D, t, key, &resp);
    if (rc)
        return rc;
    int64_t now = wall_ms();
    /* Mark each claim of another owner expired or live (one heartbeat
     * read per owner), then take the lowest expired one. */
    json_t *live = json_object(), *items = json_object_get(resp, "Items");
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        int64_t rto;
        if (ddb_get_n(it, "rto", &rto) || rto < 0)
            continue;
        const char *o = ddb_get_s(it, "owner", NULL);
        if (!o || json_object_get(live, o))
            continue;
        int expired = 0;
        if (strcmp(o, owner) && (rc = hb_expired(D, t, key, o, now, &expired)))
            break;
        json_object_set_new(live, o, json_boolean(!strcmp(o, owner) || !expired));
    }
    for (int tries = 0; rc == 0 && tries < 8; tries++) {
        json_t *best = NULL;
        int64_t best_from = 0;
        json_array_foreach(items, i, it) {
            int64_t rto, rfrom;
            if (ddb_get_n(it, "rto", &rto) || rto < 0 || ddb_get_n(it, "rfrom", &rfrom) ||
                json_object_get(it, "taken"))
                continue;
            const char *o = ddb_get_s(it, "owner", NULL);
            if (o && json_is_true(json_object_get(live, o)))
                continue;
            if (!best || rfrom < best_from) {
                best = it;
                best_from = rfrom;
            }
        }
        if (!best)
            break;
        json_object_set_new(best, "taken", json_true()); /* not again */
        int64_t rto;
        ddb_get_n(best, "rto", &rto);
        const char *o = ddb_get_s(best, "owner", NULL);
        json_t *upd = json_pack("{s:s, s:o, s:s, s:s, s:{s:s}, s:{s:o}}", "TableName", t, "Key",
                                item_key(key, rto), "UpdateExpression", "SET #o = :me",
                                "ConditionExpression",
                                o ? "#o = :old" : "attribute_exists(rfrom) AND attribute_not_exists(#o)",
                                "ExpressionAttributeNames", "#o", "owner",
                                "ExpressionAttributeValues", ":me", ddb_s(owner, strlen(owner)));
        if (o)
            json_object_set_new(json_object_get(upd, "ExpressionAttributeValues"), ":old",
                                ddb_s(o, strlen(o)));
        json_t *req = json_pack("{s:[{s:o}, o]}", "TransactItems", "Update", upd,
                                hb_put(t, key, owner, ttl_ms));
        char type[128] = "";
        json_t *r2 = NULL;
        rc = ddb_call(D, "TransactWriteItems", req, &r2, type);
        json_decref(r2);
        if (rc == 0) {
            out->from = (uint64_t)best_from;
            out->to = (uint64_t)rto;
            json_decref(live);
            json_decref(resp);
            return 0;
        }
        if (strcmp(type, "TransactionCanceledException"))
            break;
        err_clear(); /* someone else took it first */
        rc = 0;
    }
    json_decref(live);
    json_decref(resp);
    return rc ? rc : STELE_ENOTFOUND;
}

static int dg_sync(backend *b, const char *key, const char *owner, const group_claim *v,
                   size_t n, uint32_t ttl_ms, uint64_t *frontier, uint64_t *others)
{
    ddb *D = (ddb *)b;
    char t[300];
    table_name(D, t, sizeof t);
    int rc;
    if (ttl_ms) {
        json_t *put = hb_put(t, key, owner, ttl_ms);
        rc = ddb_call(D, "PutItem", json_incref(json_object_get(put, "Put")), NULL, NULL);
        json_decref(put);
    } else {
        rc = ddb_call(D, "DeleteItem",
                      json_pack("{s:s, s:o}", "TableName", t, "Key", hb_key(key, owner)), NULL,
                      NULL);
    }
    json_t *resp = NULL;
    if (rc == 0)
        rc = group_items(D, t, key, &resp);
    if (rc)
        return rc;
    uint64_t f = STELE_NONE, low = STELE_NONE;
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(resp, "Items"), i, it) {
        int64_t rto, rfrom;
        if (ddb_get_n(it, "rto", &rto))
            continue;
        if (rto < 0) {
            int64_t fv;
            if (ddb_get_n(it, "frontier", &fv) == 0)
                f = (uint64_t)fv;
            continue;
        }
        if (ddb_get_n(it, "rfrom", &rfrom))
            continue; /* a heartbeat */
        const char *o = ddb_get_s(it, "owner", NULL);
        if (!o || strcmp(o, owner)) {
            if (low == STELE_NONE || (uint64_t)rfrom < low)
                low = (uint64_t)rfrom;
            continue;
        }
        /* One of ours: write it only if its start moved, it is done, or
         * it is released. */
        uint64_t nf = (uint64_t)rfrom;
        for (size_t k = 0; k < n; k++)
            if (v[k].to == (uint64_t)rto && v[k].from > nf)
                nf = v[k].from;
        if (nf == (uint64_t)rfrom && nf < (uint64_t)rto && ttl_ms)
            continue;
        json_t *req;
        if (nf >= (uint64_t)rto)
            req = json_pack("{s:s, s:o, s:s, s:{s:s}, s:{s:o}}", "TableName", t, "Key",
                            item_key(key, rto), "ConditionExpression", "#o = :me",
                            "ExpressionAttributeNames", "#o", "owner",
                            "ExpressionAttributeValues", ":me", ddb_s(owner, strlen(owner)));
        else
            req = json_pack("{s:s, s:o, s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o}}", "TableName", t,
                            "Key", item_key(key, rto), "UpdateExpression",
                            ttl_ms ? "SET #f = :f" : "SET #f = :f REMOVE #o",
                            "ConditionExpression", "#o = :me", "ExpressionAttributeNames", "#o",
                            "owner", "#f", "rfrom", "ExpressionAttributeValues", ":me",
                            ddb_s(owner, strlen(owner)), ":f", ddb_n((int64_t)nf));
        char type[128] = "";
        rc = ddb_call(D, nf >= (uint64_t)rto ? "DeleteItem" : "UpdateItem", req, NULL, type);
        if (rc && !strcmp(type, "ConditionalCheckFailedException")) {
            err_clear(); /* taken over meanwhile: no longer ours */
            rc = 0;
            if (low == STELE_NONE || (uint64_t)rfrom < low)
                low = (uint64_t)rfrom;
        }
        if (rc)
            break;
    }
    json_decref(resp);
    if (rc)
        return rc;
    if (f == STELE_NONE)
        return err_set(STELE_ENOTFOUND, "consumer group claims: no state for '%s'", key);
    *frontier = f;
    *others = low;
    return 0;
}

static int dg_reset(backend *b, const char *key, uint64_t pos)
{
    ddb *D = (ddb *)b;
    char t[300];
    table_name(D, t, sizeof t);
    int rc = ensure_table(D, t);
    json_t *resp = NULL;
    if (rc == 0)
        rc = group_items(D, t, key, &resp);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(resp, "Items"), i, it) {
        int64_t rto;
        if (rc || ddb_get_n(it, "rto", &rto) || rto < 0)
            continue;
        rc = ddb_call(D, "DeleteItem",
                      json_pack("{s:s, s:o}", "TableName", t, "Key", item_key(key, rto)), NULL,
                      NULL);
    }
    json_decref(resp);
    if (rc)
        return rc;
    if (pos == STELE_NONE)
        return ddb_call(D, "DeleteItem",
                        json_pack("{s:s, s:o}", "TableName", t, "Key",
                                  item_key(key, FRONTIER_RTO)),
                        NULL, NULL);
    json_t *item = item_key(key, FRONTIER_RTO);
    json_object_set_new(item, "frontier", ddb_n((int64_t)pos));
    return ddb_call(D, "PutItem", json_pack("{s:s, s:o}", "TableName", t, "Item", item), NULL,
                    NULL);
}

const backend_group_ops ddb_group_ops = {
    .frontier = dg_frontier,
    .claim = dg_claim,
    .steal = dg_steal,
    .sync = dg_sync,
    .reset = dg_reset,
};
