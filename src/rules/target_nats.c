/*
 * target_nats.c - the "nats" target: each matched event is published to a
 * NATS JetStream stream and counts as delivered when JetStream has
 * acknowledged it (stored, and replicated as the stream is configured).
 *
 *   {"type": "nats", "url": "nats://host:4222",
 *    "subject": "orders.{{category}}.{{type}}",           (target_tmpl.c)
 *    "tokenEnv": "NATS_TOKEN" | "userEnv": "..", "passwordEnv": ".."
 *    | "credentialsFile": "/run/secrets/stele.creds",
 *    "ackTimeoutMs": 5000}
 *
 * The message: the event as JSON (the webhook body), with headers
 *   Nats-Msg-Id     the event's id: JetStream drops a message whose id it
 *                   saw within the stream's duplicate window (2 minutes by
 *                   default), so a retry, a redelivery after a crash of
 *                   Stele or a replay within the window is stored once;
 *   Stele-Rule, Stele-Event-Id, Stele-Stream, Stele-Type.
 * Values substituted into the subject have spaces, control bytes, '*' and
 * '>' replaced by '_'.
 *
 * Outcomes: acknowledged (also as a duplicate) -> delivered; no responders
 * (no stream takes the subject), a timeout, a lost connection -> retried;
 * a JetStream error (e.g. the stream is full with discard new, a wrong
 * expected stream) -> retried too, with JetStream's error text, under the
 * rule's retry policy. Each publish waits for its acknowledgement in turn,
 * so the order within a partition is the order of the stream.
 */
#ifdef STELE_WITH_NATS
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include "rules/rules_int.h"

#define SUBJECT_MAX 1024

typedef struct nats_cfg {
    char *url, *subject, *token_env, *user_env, *password_env, *creds;
    uint32_t ack_timeout_ms;
} nats_cfg;

typedef struct nats_conn {
    natsConnection *nc;
    jsCtx *js;
    char rule[STELE_RULE_NAME_MAX + 1];
} nats_conn;

static void nt_free_cfg(rule_def *d)
{
    nats_cfg *g = d->tcfg;
    if (!g)
        return;
    free(g->url);
    free(g->subject);
    free(g->token_env);
    free(g->user_env);
    free(g->password_env);
    free(g->creds);
    free(g);
    d->tcfg = NULL;
}

static int nt_parse(json_t *t, rule_def *d)
{
    static const char *const keys[] = {"type", "url", "subject", "tokenEnv", "userEnv",
                                       "passwordEnv", "credentialsFile", "ackTimeoutMs", NULL};
    nats_cfg *g = calloc(1, sizeof *g);
    if (!g)
        return err_set(STELE_ENOMEM, "out of memory");
    d->tcfg = g;
    uint64_t to = 5000;
    int rc;
    if ((rc = rdef_only_keys(t, "target", keys)) ||
        (rc = rdef_get_str(t, "target", "url", 2048, 1, &g->url)) ||
        (rc = rdef_get_str(t, "target", "subject", SUBJECT_MAX / 2, 1, &g->subject)) ||
        (rc = rdef_get_str(t, "target", "tokenEnv", 255, 0, &g->token_env)) ||
        (rc = rdef_get_str(t, "target", "userEnv", 255, 0, &g->user_env)) ||
        (rc = rdef_get_str(t, "target", "passwordEnv", 255, 0, &g->password_env)) ||
        (rc = rdef_get_str(t, "target", "credentialsFile", 4096, 0, &g->creds)) ||
        (rc = rdef_get_uint(t, "target", "ackTimeoutMs", 100, 300000, &to)))
        return rc;
    g->ack_timeout_ms = (uint32_t)to;
    if (strncmp(g->url, "nats://", 7) && strncmp(g->url, "tls://", 6))
        return err_set(STELE_EINVAL, "target.url: must start with nats:// or tls://");
    if (strchr(g->url, '@'))
        return err_set(STELE_EINVAL, "target.url: must not hold credentials (they would be "
                                     "stored and shown): use tokenEnv, userEnv/passwordEnv "
                                     "or credentialsFile");
    if (!g->user_env != !g->password_env)
        return err_set(STELE_EINVAL, "target.userEnv: userEnv and passwordEnv go together");
    if ((g->token_env != NULL) + (g->user_env != NULL) + (g->creds != NULL) > 1)
        return err_set(STELE_EINVAL, "target.tokenEnv: one of tokenEnv, userEnv/passwordEnv, "
                                     "credentialsFile");
    if ((rc = tmpl_check("target.subject", g->subject)))
        return rc;
    for (const char *p = g->subject; *p; p++)
        if (*p == ' ' || *p == '*' || *p == '>' || (unsigned char)*p < ' ')
            return err_set(STELE_EINVAL, "target.subject: no spaces, wildcards or control "
                                         "characters (byte %zu)",
                           (size_t)(p - g->subject));
    return 0;
}

static int nt_normalize(json_t *t, const rule_def *d)
{
    const nats_cfg *g = d->tcfg;
    return json_object_set_new(t, "ackTimeoutMs", json_integer(g->ack_timeout_ms));
}

static pthread_once_t nats_once = PTHREAD_ONCE_INIT;
static void nats_open_once(void) { nats_Open(-1); }

static void nt_close(void *conn)
{
    nats_conn *c = conn;
    if (!c)
        return;
    jsCtx_Destroy(c->js);
    natsConnection_Destroy(c->nc);
    free(c);
}

static void status_text(natsStatus s, const char *what, char err[256])
{
    natsStatus ls = s;
    const char *t = nats_GetLastError(&ls);
    /* Composed whole, then cut to the 256 bytes of `err` (a long subject or
     * library message loses its end, never the status). */
    char full[768];
    snprintf(full, sizeof full, "nats: %.300s: %s%s%.300s", what, natsStatus_GetText(s),
             t && *t ? ": " : "", t ? t : "");
    size_t n = strlen(full);
    if (n > 255)
        n = 255;
    memcpy(err, full, n);
    err[n] = 0;
}

static int nt_open(const rule_def *d, stele_db *db, const char *rule_name, void **conn,
                   char err[256])
{
    (void)db;
    const nats_cfg *g = d->tcfg;
    pthread_once(&nats_once, nats_open_once);
    char user[256] = "", pw[1024] = "", token[1024] = "";
    if (g->token_env && target_secret(g->token_env, NULL, token, sizeof token, err))
        return -1;
    if (g->user_env && (target_secret(g->user_env, NULL, user, sizeof user, err) ||
                        target_secret(g->password_env, NULL, pw, sizeof pw, err)))
        return -1;
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetURL(o, g->url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, 5000);
    if (s == NATS_OK) /* reconnect in the background; publishes wait meanwhile */
        s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, 200);
    if (s == NATS_OK)
        s = natsOptions_SetName(o, "stele-rules");
    if (s == NATS_OK && token[0])
        s = natsOptions_SetToken(o, token);
    if (s == NATS_OK && user[0])
        s = natsOptions_SetUserInfo(o, user, pw);
    if (s == NATS_OK && g->creds)
        s = natsOptions_SetUserCredentialsFromFiles(o, g->creds, NULL);
    memset(pw, 0, sizeof pw);
    memset(token, 0, sizeof token);
    nats_conn *c = calloc(1, sizeof *c);
    if (!c) {
        natsOptions_Destroy(o);
        snprintf(err, 256, "out of memory");
        return -1;
    }
    snprintf(c->rule, sizeof c->rule, "%s", rule_name);
    if (s == NATS_OK)
        s = natsConnection_Connect(&c->nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        status_text(s, "connect", err);
        nt_close(c);
        return -1;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = g->ack_timeout_ms;
    if ((s = natsConnection_JetStream(&c->js, c->nc, &jo)) != NATS_OK) {
        status_text(s, "JetStream", err);
        nt_close(c);
        return -1;
    }
    *conn = c;
    return 0;
}

static void nt_deliver(void *conn, const rule_def *d, const stele_event *const *evs, size_t n,
                       uint64_t replay_id, tgt_result *res)
{
    nats_conn *c = conn;
    const nats_cfg *g = d->tcfg;
    for (size_t i = 0; i < n; i++) {
        const stele_event *e = evs[i];
        tgt_result *r = &res[i];
        char subject[SUBJECT_MAX], id[37];
        stele_uuid_format(e->id, id);
        if (tmpl_render(g->subject, e, " *>", subject, sizeof subject)) {
            r->outcome = TGT_FAIL;
            r->kind = STELE_FAIL_OTHER;
            snprintf(r->error, sizeof r->error, "nats: the subject is longer than %d bytes",
                     SUBJECT_MAX - 1);
            return;
        }
        buf body = {0};
        natsMsg *m = NULL;
        natsStatus s = NATS_NO_MEMORY;
        if (render_event_json(&body, e, replay_id != 0) == 0)
            s = natsMsg_Create(&m, subject, NULL, (const char *)body.p, (int)body.len);
        char stream[1024], type[256];
        snprintf(stream, sizeof stream, "%.*s", (int)e->stream_len, e->stream);
        snprintf(type, sizeof type, "%.*s", (int)e->type_len, e->type);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, "Stele-Rule", c->rule);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, "Stele-Event-Id", id);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, "Stele-Stream", stream);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, "Stele-Type", type);
        jsPubAck *ack = NULL;
        jsErrCode jerr = 0;
        if (s == NATS_OK) {
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MsgId = id;
            po.MaxWait = g->ack_timeout_ms;
            s = js_PublishMsg(&ack, c->js, m, &po, &jerr);
        }
        natsMsg_Destroy(m);
        buf_free(&body);
        jsPubAck_Destroy(ack);
        if (s == NATS_OK) {
            r->outcome = TGT_DELIVERED;
            continue;
        }
        r->outcome = TGT_RETRY;
        r->kind = s == NATS_TIMEOUT ? STELE_FAIL_TIMEOUT
                  : (s == NATS_CONNECTION_CLOSED || s == NATS_NO_SERVER ||
                     s == NATS_CONNECTION_DISCONNECTED || s == NATS_STALE_CONNECTION)
                      ? STELE_FAIL_CONNECT
                      : STELE_FAIL_OTHER;
        char what[300];
        snprintf(what, sizeof what, "publish to '%.200s'%s", subject,
                 jerr ? " (JetStream error)" : "");
        status_text(s, what, r->error);
        return; /* the rest waits: order is kept */
    }
}

const target_ops target_nats = {
    .type = "nats",
    .parse = nt_parse,
    .normalize = nt_normalize,
    .free_cfg = nt_free_cfg,
    .open = nt_open,
    .deliver = nt_deliver,
    .close = nt_close,
    .batch_max = 256,
};
#else
typedef int target_nats_absent; /* built without libnats */
#endif
