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

int cmd_user(int argc, char **argv)
{
    int keys = !strcmp(argv[1], "api-key");
    const char *cmd = keys ? "api-key" : "user";
    cli_common co = {0};
    const char *sub = NULL, *name = NULL, *full = NULL, *pwenv = "STELE_NEW_PASSWORD",
               *keyname = NULL;
    const char *groups[16];
    int ngroups = 0, groups_given = 0;
    for (int i = 2; i < argc; i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage();
        if ((r = cli_common_opt(&co, cmd, argc, argv, &i)) < 0)
            return CLI_EUSAGE;
        if (r)
            continue;
        if ((r = cli_opt(cmd, argc, argv, &i, "--full-name", &full)) < 0)
            return CLI_EUSAGE;
        if (r)
            continue;
        if ((r = cli_opt(cmd, argc, argv, &i, "--password-env", &pwenv)) < 0)
            return CLI_EUSAGE;
        if (r)
            continue;
        if ((r = cli_opt(cmd, argc, argv, &i, "--name", &keyname)) < 0)
            return CLI_EUSAGE;
        if (r)
            continue;
        if ((r = cli_opt(cmd, argc, argv, &i, "--group", &v)) < 0)
            return CLI_EUSAGE;
        if (r) {
            if (ngroups == 16)
                return cli_usage_error(cmd, synopsis, "at most 16 --group");
            groups[ngroups++] = v;
            groups_given = 1;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error(cmd, synopsis, "unknown option '%s'", argv[i]);
        if (!sub)
            sub = argv[i];
        else if (!name)
            name = argv[i];
        else
            return cli_usage_error(cmd, synopsis, "unexpected argument '%s'", argv[i]);
    }
    if (!sub)
        return cli_usage_error(cmd, synopsis, "what to do? (list, get, create ...)");
    int needs_name = strcmp(sub, "list") != 0;
    if (needs_name && !name)
        return cli_usage_error(cmd, synopsis, "%s needs a %s", sub, keys ? "user or id" : "name");
    cli_buf path = {0}, body = {0};
    const char *method = "GET";
    int rc;
    if (keys) {
        cli_buf_adds(&path, "/api-keys");
        if (!strcmp(sub, "create")) {
            method = "POST";
            cli_buf_adds(&body, "{\"loginName\":");
            cli_buf_add_jstr(&body, name);
            cli_buf_adds(&body, ",\"name\":");
            cli_buf_add_jstr(&body, keyname ? keyname : "");
            cli_buf_adds(&body, "}");
        } else if (!strcmp(sub, "revoke")) {
            method = "DELETE";
            cli_buf_adds(&path, "/");
            add_segment(&path, name);
        } else if (strcmp(sub, "list")) {
            cli_buf_free(&path);
            return cli_usage_error(cmd, synopsis, "unknown: %s", sub);
        }
    } else {
        cli_buf_adds(&path, "/users");
        if (name) {
            cli_buf_adds(&path, "/");
            add_segment(&path, name);
        }
        const char *pw = NULL;
        if (!strcmp(sub, "create") || !strcmp(sub, "password") ||
            !strcmp(sub, "reset-password")) {
            pw = getenv(pwenv);
            if (!pw || !*pw) {
                cli_buf_free(&path);
                return cli_usage_error(cmd, synopsis, "set the new password in $%s", pwenv);
            }
        }
        if (!strcmp(sub, "list") || !strcmp(sub, "get")) {
        } else if (!strcmp(sub, "create") || !strcmp(sub, "update")) {
            method = !strcmp(sub, "create") ? "PUT" : "POST";
            cli_buf_adds(&body, "{");
            if (pw) {
                cli_buf_adds(&body, "\"password\":");
                cli_buf_add_jstr(&body, pw);
                cli_buf_adds(&body, ",");
            }
            if (full) {
                cli_buf_adds(&body, "\"fullName\":");
                cli_buf_add_jstr(&body, full);
                cli_buf_adds(&body, ",");
            }
            if (groups_given || pw) {
                cli_buf_adds(&body, "\"groups\":[");
                for (int g = 0; g < ngroups; g++) {
                    if (g)
                        cli_buf_adds(&body, ",");
                    cli_buf_add_jstr(&body, groups[g]);
                }
                cli_buf_adds(&body, "],");
            }
            if (body.len > 1)
                body.len--; /* the last comma */
            cli_buf_adds(&body, "}");
        } else if (!strcmp(sub, "delete")) {
            method = "DELETE";
        } else if (!strcmp(sub, "enable") || !strcmp(sub, "disable")) {
            method = "POST";
            cli_buf_adds(&path, "/");
            cli_buf_adds(&path, sub);
        } else if (!strcmp(sub, "password") || !strcmp(sub, "reset-password")) {
            method = "POST";
            cli_buf_adds(&path, !strcmp(sub, "password") ? "/password" : "/reset-password");
            cli_buf_adds(&body, "{\"newPassword\":");
            cli_buf_add_jstr(&body, pw);
            if (!strcmp(sub, "password")) {
                const char *cur = getenv("STELE_CURRENT_PASSWORD");
                if (!cur || !*cur) {
                    cli_buf_free(&path);
                    cli_buf_free(&body);
                    return cli_usage_error(cmd, synopsis,
                                           "set the current password in $STELE_CURRENT_PASSWORD");
                }
                cli_buf_adds(&body, ",\"currentPassword\":");
                cli_buf_add_jstr(&body, cur);
            }
            cli_buf_adds(&body, "}");
        } else {
            cli_buf_free(&path);
            cli_buf_free(&body);
            return cli_usage_error(cmd, synopsis, "unknown: %s", sub);
        }
    }
    cli_buf_add(&path, "", 1);
    if (body.len)
        cli_buf_add(&body, "", 1);
    rc = run(&co, method, path.p, body.len ? body.p : NULL);
    if (body.p)
        memset(body.p, 0, body.len);
    cli_buf_free(&path);
    cli_buf_free(&body);
    return rc;
}
