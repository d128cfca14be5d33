/*
 * target_rabbitmq.c - the "rabbitmq" target: each matched event is
 * published to an exchange as a persistent message, and counts as
 * delivered when the broker confirmed it (publisher confirms).
 *
 *   {"type": "rabbitmq", "host": "mq", "port": 5672, "vhost": "/",
 *    "user": "stele", "passwordEnv": "RABBITMQ_PASSWORD" | "passwordFile": "..",
 *    "exchange": "events", "routingKey": "{{category}}.{{type}}",
 *    "confirmTimeoutMs": 5000}
 *
 * exchange and routingKey are templates (target_tmpl.c). The message: the
 * event as JSON (a webhook's body), delivery mode 2 (persistent),
 * content-type application/json, message-id = the event's id, type = the
 * event's type, app-id "stele", timestamp = the commit time. Published as
 * mandatory: a message no queue takes comes back (basic.return, just before
 * its confirm) and counts as a failure ("NO_ROUTE"), retried.
 *
 * A batch is published at once on one channel in confirm mode, then the
 * confirms are read (delivery tags count from 1 per channel; "multiple"
 * confirms all up to a tag). Nacked, returned or unconfirmed messages are
 * retried; an error closing the channel (no such exchange: 404, access
 * refused: 403) or the connection is retried with the broker's text, on a
 * new connection. At least once: a retry after a lost confirm publishes
 * again; consumers deduplicate on message-id.
 */
#ifdef STELE_WITH_RABBITMQ
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include "rules/rules_int.h"

#define NAME_MAX_ 256

typedef struct rmq_cfg {
    char *host, *vhost, *user, *password_env, *password_file, *exchange, *rkey;
    uint32_t port, confirm_ms;
} rmq_cfg;

typedef struct rmq_conn {
    amqp_connection_state_t c;
    uint64_t next_tag; /* delivery tag of the next publish */
} rmq_conn;

static void rq_free_cfg(rule_def *d)
{
    rmq_cfg *g = d->tcfg;
    if (!g)
        return;
    free(g->host);
    free(g->vhost);
    free(g->user);
    free(g->password_env);
    free(g->password_file);
    free(g->exchange);
    free(g->rkey);
    free(g);
    d->tcfg = NULL;
}

static int rq_parse(json_t *t, rule_def *d)
{
    static const char *const keys[] = {"type", "host", "port", "vhost", "user", "passwordEnv",
                                       "passwordFile", "exchange", "routingKey",
                                       "confirmTimeoutMs", NULL};
    rmq_cfg *g = calloc(1, sizeof *g);
    if (!g)
        return err_set(STELE_ENOMEM, "out of memory");
    d->tcfg = g;
    uint64_t port = 5672, to = 5000;
    int rc;
    if ((rc = rdef_only_keys(t, "target", keys)) ||
        (rc = rdef_get_str(t, "target", "host", 255, 1, &g->host)) ||
        (rc = rdef_get_uint(t, "target", "port", 1, 65535, &port)) ||
        (rc = rdef_get_str(t, "target", "vhost", 255, 0, &g->vhost)) ||
        (rc = rdef_get_str(t, "target", "user", 255, 0, &g->user)) ||
        (rc = rdef_get_str(t, "target", "passwordEnv", 255, 0, &g->password_env)) ||
        (rc = rdef_get_str(t, "target", "passwordFile", 4096, 0, &g->password_file)) ||
        (rc = rdef_get_str(t, "target", "routingKey", NAME_MAX_ - 1, 0, &g->rkey)) ||
        (rc = rdef_get_uint(t, "target", "confirmTimeoutMs", 100, 300000, &to)))
        return rc;
    json_t *ex = json_object_get(t, "exchange");
    if (!json_is_string(ex) || json_string_length(ex) > NAME_MAX_ - 1 ||
        strlen(json_string_value(ex)) != json_string_length(ex))
        return err_set(STELE_EINVAL, "target.exchange: required, a string (\"\" is the "
                                     "default exchange)");
    if (!(g->exchange = strdup(json_string_value(ex))))
        return err_set(STELE_ENOMEM, "out of memory");
    g->port = (uint32_t)port;
    g->confirm_ms = (uint32_t)to;
    if (g->password_env && g->password_file)
        return err_set(STELE_EINVAL, "target.passwordEnv: give passwordEnv or passwordFile, not both");
    if (!g->vhost && !(g->vhost = strdup("/")))
        return err_set(STELE_ENOMEM, "out of memory");
    if (!g->user && !(g->user = strdup("guest")))
        return err_set(STELE_ENOMEM, "out of memory");
    if (!g->rkey && !(g->rkey = strdup("{{type}}")))
        return err_set(STELE_ENOMEM, "out of memory");
    if ((rc = tmpl_check("target.exchange", g->exchange)) ||
        (rc = tmpl_check("target.routingKey", g->rkey)))
        return rc;
    return 0;
}

static int rq_normalize(json_t *t, const rule_def *d)
{
    const rmq_cfg *g = d->tcfg;
    return json_object_set_new(t, "port", json_integer(g->port)) |
           json_object_set_new(t, "vhost", json_string(g->vhost)) |
           json_object_set_new(t, "user", json_string(g->user)) |
           json_object_set_new(t, "routingKey", json_string(g->rkey)) |
           json_object_set_new(t, "confirmTimeoutMs", json_integer(g->confirm_ms));
}

static void rq_close(void *conn)
{
    rmq_conn *r = conn;
    if (!r)
        return;
    if (r->c) {
        amqp_connection_close(r->c, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(r->c);
    }
    free(r);
}

/* The text of a failed RPC reply. */
static void reply_text(amqp_rpc_reply_t x, const char *what, char err[256])
{
    if (x.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        snprintf(err, 256, "rabbitmq: %s: %s", what, amqp_error_string2(x.library_error));
    } else if (x.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               x.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = x.reply.decoded;
        snprintf(err, 256, "rabbitmq: %s: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else if (x.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               x.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = x.reply.decoded;
        snprintf(err, 256, "rabbitmq: %s: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else {
        snprintf(err, 256, "rabbitmq: %s: failed", what);
    }
}

static int rq_open(const rule_def *d, stele_db *db, const char *rule_name, void **conn,
                   char err[256])
{
    (void)db;
    (void)rule_name;
    const rmq_cfg *g = d->tcfg;
    char pw[1024] = "guest";
    if ((g->password_env || g->password_file) &&
        target_secret(g->password_env, g->password_file, pw, sizeof pw, err))
        return -1;
    rmq_conn *r = calloc(1, sizeof *r);
    if (!r || !(r->c = amqp_new_connection())) {
        free(r);
        snprintf(err, 256, "out of memory");
        return -1;
    }
    amqp_socket_t *s = amqp_tcp_socket_new(r->c);
    struct timeval tv = {.tv_sec = 5};
    int st = s ? amqp_socket_open_noblock(s, g->host, (int)g->port, &tv) : AMQP_STATUS_NO_MEMORY;
    if (st != AMQP_STATUS_OK) {
        snprintf(err, 256, "rabbitmq: connect to %s:%u: %s", g->host, g->port,
                 amqp_error_string2(st));
        amqp_destroy_connection(r->c);
        free(r);
        return -1;
    }
    amqp_rpc_reply_t x =
        amqp_login(r->c, g->vhost, 1, 131072, 0, AMQP_SASL_METHOD_PLAIN, g->user, pw);
    memset(pw, 0, sizeof pw);
    if (x.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_text(x, "login", err);
        amqp_destroy_connection(r->c);
        free(r);
        return -1;
    }
    amqp_channel_open(r->c, 1);
    x = amqp_get_rpc_reply(r->c);
    if (x.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_confirm_select(r->c, 1);
        x = amqp_get_rpc_reply(r->c);
    }
    if (x.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_text(x, "channel", err);
        rq_close(r);
        return -1;
    }
    r->next_tag = 1;
    *conn = r;
    return 0;
}

static void fail_rest(tgt_result *res, size_t from, size_t n, int kind, const char *err)
{
    for (size_t i = from; i < n; i++) {
        if (res[i].outcome == TGT_DELIVERED || res[i].outcome == TGT_RETRY)
            continue;
        res[i].outcome = TGT_RETRY;
        res[i].kind = kind;
        snprintf(res[i].error, sizeof res[i].error, "%s", err);
    }
}

/* Publish the events in order (persistent, with the event's id, type and
 * time) until one cannot be: its result says why (and the rest's, when
 * the connection failed). r->next_tag counts what was published. */
static void rq_publish(rmq_conn *r, const rmq_cfg *g, const stele_event *const *evs, size_t n,
                       uint64_t replay_id, tgt_result *res)
{
    size_t sent = 0;
    for (; sent < n; sent++) {
        const stele_event *e = evs[sent];
        char ex[NAME_MAX_], rk[NAME_MAX_], id[37], type[256];
        if (tmpl_render(g->exchange, e, NULL, ex, sizeof ex) ||
            tmpl_render(g->rkey, e, NULL, rk, sizeof rk)) {
            res[sent].outcome = TGT_FAIL;
            res[sent].kind = STELE_FAIL_OTHER;
            snprintf(res[sent].error, sizeof res[sent].error,
                     "rabbitmq: the exchange or routing key is longer than 255 bytes");
            break;
        }
        stele_uuid_format(e->id, id);
        snprintf(type, sizeof type, "%.*s", (int)e->type_len, e->type);
        buf body = {0};
        if (render_event_json(&body, e, replay_id != 0)) {
            buf_free(&body);
            break;
        }
        amqp_basic_properties_t p = {0};
        p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_APP_ID_FLAG |
                   AMQP_BASIC_TIMESTAMP_FLAG;
        p.content_type = amqp_cstring_bytes("application/json");
        p.delivery_mode = 2;
        p.message_id = amqp_cstring_bytes(id);
        p.type = amqp_cstring_bytes(type);
        p.app_id = amqp_cstring_bytes("stele");
        p.timestamp = (uint64_t)(e->created_us / 1000000);
        amqp_bytes_t b = {.len = body.len, .bytes = body.p};
        int st = amqp_basic_publish(r->c, 1, amqp_cstring_bytes(ex), amqp_cstring_bytes(rk), 1, 0,
                                    &p, b);
        buf_free(&body);
        if (st != AMQP_STATUS_OK) {
            char err[256];
            snprintf(err, sizeof err, "rabbitmq: publish: %s", amqp_error_string2(st));
            fail_rest(res, sent, n, STELE_FAIL_CONNECT, err);
            break;
        }
        r->next_tag++;
    }
}

/* Read the broker's confirms for tags [first, first + published) until
 * each is settled (delivered, or to retry: returned or nacked), the
 * confirm time runs out or the connection breaks (the unsettled ones are
 * then retried). */
static void rq_confirms(rmq_conn *r, const rmq_cfg *g, uint64_t first, size_t published,
                        tgt_result *res)
{
    size_t settled = 0;
    int returned = 0, broken = 0;
    char err[256] = "";
    int64_t deadline = (int64_t)(time_mono_ns() / 1000000u) + g->confirm_ms;
    while (settled < published && !broken) {
        int64_t left = deadline - (int64_t)(time_mono_ns() / 1000000u);
        if (left <= 0) {
            snprintf(err, sizeof err, "rabbitmq: no confirm within %ums", g->confirm_ms);
            broken = STELE_FAIL_TIMEOUT;
            break;
        }
        struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
        amqp_frame_t f;
        amqp_maybe_release_buffers(r->c);
        int st = amqp_simple_wait_frame_noblock(r->c, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT)
            continue;
        if (st != AMQP_STATUS_OK) {
            snprintf(err, sizeof err, "rabbitmq: waiting for confirms: %s",
                     amqp_error_string2(st));
            broken = STELE_FAIL_CONNECT;
            break;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        amqp_method_number_t m = f.payload.method.id;
        if (m == AMQP_BASIC_RETURN_METHOD) {
            amqp_basic_return_t *rt = f.payload.method.decoded;
            snprintf(err, sizeof err, "rabbitmq: returned: %u %.*s", rt->reply_code,
                     (int)rt->reply_text.len, (const char *)rt->reply_text.bytes);
            amqp_message_t msg;
            amqp_rpc_reply_t x = amqp_read_message(r->c, f.channel, &msg, 0);
            if (x.reply_type == AMQP_RESPONSE_NORMAL)
                amqp_destroy_message(&msg);
            returned = 1; /* the confirm that follows is for this message */
        } else if (m == AMQP_BASIC_ACK_METHOD || m == AMQP_BASIC_NACK_METHOD) {
            uint64_t tag;
            int multiple;
            if (m == AMQP_BASIC_ACK_METHOD) {
                amqp_basic_ack_t *a = f.payload.method.decoded;
                tag = a->delivery_tag, multiple = a->multiple;
            } else {
                amqp_basic_nack_t *a = f.payload.method.decoded;
                tag = a->delivery_tag, multiple = a->multiple;
            }
            uint64_t lo = multiple ? first + settled : tag;
            for (uint64_t t = lo; t <= tag && t >= first && t < first + published; t++) {
                tgt_result *x = &res[t - first];
                if (m == AMQP_BASIC_ACK_METHOD && !returned) {
                    x->outcome = TGT_DELIVERED;
                } else {
                    x->outcome = TGT_RETRY;
                    x->kind = STELE_FAIL_OTHER;
                    snprintf(x->error, sizeof x->error, "%s",
                             returned ? err : "rabbitmq: the broker nacked the message");
                }
                settled++;
            }
            returned = 0;
        } else if (m == AMQP_CHANNEL_CLOSE_METHOD || m == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_channel_close_t *c = f.payload.method.decoded; /* same leading fields */
            snprintf(err, sizeof err, "rabbitmq: %s closed: %u %.*s",
                     m == AMQP_CHANNEL_CLOSE_METHOD ? "channel" : "connection", c->reply_code,
                     (int)c->reply_text.len, (const char *)c->reply_text.bytes);
            broken = STELE_FAIL_CONNECT; /* reopened on the next attempt */
        }
    }
    if (broken)
        for (size_t i = 0; i < published; i++)
            if (res[i].outcome == TGT_NOT_TRIED) {
                res[i].outcome = TGT_RETRY;
                res[i].kind = broken;
                snprintf(res[i].error, sizeof res[i].error, "%s", err);
            }
}

static void rq_deliver(void *conn, const rule_def *d, const stele_event *const *evs, size_t n,
                       uint64_t replay_id, tgt_result *res)
{
    rmq_conn *r = conn;
    const rmq_cfg *g = d->tcfg;
    uint64_t first = r->next_tag;
    rq_publish(r, g, evs, n, replay_id, res);
    rq_confirms(r, g, first, (size_t)(r->next_tag - first), res);
}

const target_ops target_rabbitmq = {
    .type = "rabbitmq",
    .parse = rq_parse,
    .normalize = rq_normalize,
    .free_cfg = rq_free_cfg,
    .open = rq_open,
    .deliver = rq_deliver,
    .close = rq_close,
    .batch_max = 256,
};
#else
typedef int target_rabbitmq_absent; /* built without librabbitmq */
#endif
