/*
 * cmd_user.c - `stele user ...` and `stele api-key ...`: users and API keys
 * of a server with users (HTTP /users and /api-keys; docs/security.md).
 * The caller's own credentials come from STELE_USER / STELE_PASSWORD or
 * STELE_API_KEY (cli/client.c); passwords for the users being created or
 * changed come from the environment variable named by --password-env
 * (default STELE_NEW_PASSWORD), never from an argument (arguments show in
 * `ps` and shell history).
 *
 *   stele user list | get NAME | create NAME [--full-name F] [--group G]...
 *   stele user update NAME [--full-name F] [--group G]... | delete NAME
 *   stele user enable NAME | disable NAME
 *   stele user password NAME      (current password: STELE_CURRENT_PASSWORD)
 *   stele user reset-password NAME
 *   stele api-key list | create USER [--name N] | revoke ID
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char synopsis[] =
    "stele user list|get|create|update|delete|enable|disable|password|reset-password [NAME] "
    "[--full-name F] [--group G]... [--password-env VAR] [--server URL]";

static int usage(void)
{
    printf("usage: %s\n"
           "       stele api-key list | create USER [--name N] | revoke ID\n\n"
           "Manages the users and API keys of a server with users (docs/security.md).\n"
           "Your own credentials: STELE_USER and STELE_PASSWORD, or STELE_API_KEY;\n"
           "STELE_CA_FILE trusts a private CA for https:// servers.\n\n"
           "  create, password, reset-password take the new password from the\n"
           "  environment variable --password-env names (default STELE_NEW_PASSWORD);\n"
           "  password also needs the current one in STELE_CURRENT_PASSWORD.\n"
           "  --group G       a group of the user (repeat for several; $admins, $ops, ...)\n"
           "  --full-name F   the user's full name\n"
           "  --name N        the API key's name (what it is for)\n\n"
           "Exit status: 0 done, 1 the server refused, 2 bad arguments, 3 unreachable.\n",
           synopsis);
    return CLI_OK;
}

static int run(cli_common *co, const char *method, const char *path, const char *body)
{
    cli_client *c = cli_client_open(co->server);
    if (!c)
        return CLI_ECONNECT;
    cli_response resp;
    int rc = cli_request(c, method, path, NULL, body, body ? strlen(body) : 0, NULL, &resp);
    if (rc == CLI_OK && (resp.status < 200 || resp.status > 299))
        rc = cli_report_error(&resp);
    else if (rc == CLI_OK && resp.body.len)
        fwrite(resp.body.p, 1, resp.body.len, stdout);
    else if (rc == CLI_OK)
        printf("ok\n");
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return cli_finish_output("user", rc);
}

/* Percent-encode a path segment. */
static void add_segment(cli_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~", ch)) {
            cli_buf_add(b, s, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            cli_buf_add(b, e, 3);
        }
    }
}

/* The parsed command line. */
typedef struct user_args {
    const char *cmd; /* "user" or "api-key" */
    cli_common co;
    const char *sub, *name, *full, *pwenv, *keyname;
    const char *groups[16];
    int ngroups, groups_given;
} user_args;

/* Options, the subcommand and NAME from argv[2] on: -1 to go on, else the
 * exit status (usage printed or an error given). */
static int parse_args(int argc, char **argv, user_args *ua)
{
    const char *cmd = ua->cmd;
    for (int i = 2; i < argc; i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage();
        if ((r = cli_common_opt(&ua->co, cmd, argc, argv, &i)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--full-name", &ua->full)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--password-env", &ua->pwenv)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--name", &ua->keyname))) {
            if (r < 0)
                return CLI_EUSAGE;
            continue;
        }
        if ((r = cli_opt(cmd, argc, argv, &i, "--group", &v)) < 0)
            return CLI_EUSAGE;
        if (r) {
            if (ua->ngroups == 16)
                return cli_usage_error(cmd, synopsis, "at most 16 --group");
            ua->groups[ua->ngroups++] = v;
            ua->groups_given = 1;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error(cmd, synopsis, "unknown option '%s'", argv[i]);
        if (!ua->sub)
            ua->sub = argv[i];
        else if (!ua->name)
            ua->name = argv[i];
        else
            return cli_usage_error(cmd, synopsis, "unexpected argument '%s'", argv[i]);
    }
    if (!ua->sub)
        return cli_usage_error(cmd, synopsis, "what to do? (list, get, create ...)");
    if (strcmp(ua->sub, "list") != 0 && !ua->name)
        return cli_usage_error(cmd, synopsis, "%s needs a %s", ua->sub,
                               !strcmp(cmd, "api-key") ? "user or id" : "name");
    return -1;
}

/* A request being built: path and body grow, method starts as GET; pw is
 * the new password for the subcommands that set one. */
typedef struct user_req {
    cli_buf path, body;
    const char *method;
    const char *pw;
} user_req;

/* Each subcommand completes *q: -1 to send it, else the exit status. */
typedef int user_sub_fn(const user_args *a, user_req *q);

static int key_list(const user_args *a, user_req *q)
{
    (void)a;
    (void)q;
    return -1;
}

static int key_create(const user_args *a, user_req *q)
{
    q->method = "POST";
    cli_buf_adds(&q->body, "{\"loginName\":");
    cli_buf_add_jstr(&q->body, a->name);
    cli_buf_adds(&q->body, ",\"name\":");
    cli_buf_add_jstr(&q->body, a->keyname ? a->keyname : "");
    cli_buf_adds(&q->body, "}");
    return -1;
}

static int key_revoke(const user_args *a, user_req *q)
{
    q->method = "DELETE";
    cli_buf_adds(&q->path, "/");
    add_segment(&q->path, a->name);
    return -1;
}

/* list, get: GET /users[/NAME] as it is */
static int user_get(const user_args *a, user_req *q)
{
    (void)a;
    (void)q;
    return -1;
}

/* create (PUT) and update (POST): the given fields; groups are sent when
 * given, and always with a password (a new user). */
static int user_put(const user_args *a, user_req *q)
{
    cli_buf *b = &q->body;
    q->method = !strcmp(a->sub, "create") ? "PUT" : "POST";
    cli_buf_adds(b, "{");
    if (q->pw) {
        cli_buf_adds(b, "\"password\":");
        cli_buf_add_jstr(b, q->pw);
        cli_buf_adds(b, ",");
    }
    if (a->full) {
        cli_buf_adds(b, "\"fullName\":");
        cli_buf_add_jstr(b, a->full);
        cli_buf_adds(b, ",");
    }
    if (a->groups_given || q->pw) {
        cli_buf_adds(b, "\"groups\":[");
        for (int g = 0; g < a->ngroups; g++) {
            if (g)
                cli_buf_adds(b, ",");
            cli_buf_add_jstr(b, a->groups[g]);
        }
        cli_buf_adds(b, "],");
    }
    if (b->len > 1)
        b->len--; /* the last comma */
    cli_buf_adds(b, "}");
    return -1;
}

static int user_delete(const user_args *a, user_req *q)
{
    (void)a;
    q->method = "DELETE";
    return -1;
}

/* enable, disable: POST /users/NAME/<sub> */
static int user_enable(const user_args *a, user_req *q)
{
    q->method = "POST";
    cli_buf_adds(&q->path, "/");
    cli_buf_adds(&q->path, a->sub);
    return -1;
}

/* password (with the current one) and reset-password */
static int user_password(const user_args *a, user_req *q)
{
    int own = !strcmp(a->sub, "password");
    q->method = "POST";
    cli_buf_adds(&q->path, own ? "/password" : "/reset-password");
    cli_buf_adds(&q->body, "{\"newPassword\":");
    cli_buf_add_jstr(&q->body, q->pw);
    if (own) {
        const char *cur = getenv("STELE_CURRENT_PASSWORD");
        if (!cur || !*cur)
            return cli_usage_error(a->cmd, synopsis,
                                   "set the current password in $STELE_CURRENT_PASSWORD");
        cli_buf_adds(&q->body, ",\"currentPassword\":");
        cli_buf_add_jstr(&q->body, cur);
    }
    cli_buf_adds(&q->body, "}");
    return -1;
}

typedef struct user_sub {
    const char *name;
    user_sub_fn *fn;
    int new_password; /* takes the new password from --password-env */
} user_sub;

static const user_sub key_subs[] = {
    {"list", key_list, 0},
    {"create", key_create, 0},
    {"revoke", key_revoke, 0},
    {NULL, NULL, 0},
};

static const user_sub user_subs[] = {
    {"list", user_get, 0},          {"get", user_get, 0},
    {"create", user_put, 1},        {"update", user_put, 0},
    {"delete", user_delete, 0},     {"enable", user_enable, 0},
    {"disable", user_enable, 0},    {"password", user_password, 1},
    {"reset-password", user_password, 1}, {NULL, NULL, 0},
};

/* The request for the subcommand into *q: -1 to send it, else the exit
 * status after a message. */
static int build_request(const user_args *a, user_req *q)
{
    int keys = !strcmp(a->cmd, "api-key");
    const user_sub *s = keys ? key_subs : user_subs;
    while (s->name && strcmp(s->name, a->sub))
        s++;
    cli_buf_adds(&q->path, keys ? "/api-keys" : "/users");
    if (!keys && a->name) {
        cli_buf_adds(&q->path, "/");
        add_segment(&q->path, a->name);
    }
    if (!s->name)
        return cli_usage_error(a->cmd, synopsis, "unknown: %s", a->sub);
    if (s->new_password) {
        q->pw = getenv(a->pwenv);
        if (!q->pw || !*q->pw)
            return cli_usage_error(a->cmd, synopsis, "set the new password in $%s", a->pwenv);
    }
    return s->fn(a, q);
}

int cmd_user(int argc, char **argv)
{
    user_args ua = {.cmd = !strcmp(argv[1], "api-key") ? "api-key" : "user",
                    .pwenv = "STELE_NEW_PASSWORD"};
    int rc = parse_args(argc, argv, &ua);
    if (rc >= 0)
        return rc;
    user_req q = {.method = "GET"};
    rc = build_request(&ua, &q);
    if (rc < 0) {
        cli_buf_add(&q.path, "", 1);
        if (q.body.len)
            cli_buf_add(&q.body, "", 1);
        rc = run(&ua.co, q.method, q.path.p, q.body.len ? q.body.p : NULL);
    }
    if (q.body.p)
        memset(q.body.p, 0, q.body.len); /* it may hold a password */
    cli_buf_free(&q.path);
    cli_buf_free(&q.body);
    return rc;
}
