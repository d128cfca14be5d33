/*
 * admin_job.c - the client side of the server's admin jobs.
 *
 * A long admin operation (/admin/scavenge, /admin/backup) is a job on the
 * server: POST starts it and answers with its state, GET answers with the
 * state of the current or last one, and the state is one JSON object under
 * the job's name with at least a "status" ("running", "done", "failed",
 * ...). The commands that start one (cmd_scavenge.c, cmd_backup.c) share
 * this loop: start, then poll about three times a second until the status
 * is no longer "running", showing progress if the caller wants to. What the
 * job's fields mean, and how its result is printed, stays with each command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define JOB_POLL_US (300 * 1000)

uint64_t cli_json_field_u64(cli_span obj, const char *key)
{
    cli_span v;
    uint64_t x = 0;
    if (cli_json_get(obj, key, &v))
        cli_json_u64(v, &x);
    return x;
}

void cli_job_print_error(cli_span job)
{
    cli_span err, msg;
    if (cli_json_get(job, "error", &err) && cli_json_get(err, "message", &msg)) {
        char *m = cli_json_str(msg);
        printf("%-20s%s\n", "error", m ? m : "?");
        free(m);
    }
}

/* The job's object in a response, and its status (caller frees); NULL when
 * the body has neither. */
static char *job_status(const cli_response *resp, const char *name, cli_span *job)
{
    cli_span body = {resp->body.p ? resp->body.p : "", resp->body.len}, v;
    if (!cli_json_get(body, name, job) || !cli_json_get(*job, "status", &v))
        return NULL;
    return cli_json_str(v);
}

int cli_admin_job(cli_client *c, const cli_job *job, cli_response *resp, cli_span *state,
                  char **status)
{
    char path[64];
    snprintf(path, sizeof path, "/admin/%s", job->name);
    static const char *const json_hdrs[] = {"Content-Type: application/json", NULL};
    const char *body = job->body ? job->body : "";
    int rc = cli_request(c, "POST", path, job->body ? json_hdrs : NULL, body, strlen(body), NULL,
                         resp);
    *status = NULL;
    *state = (cli_span){"", 0};
    while (rc == CLI_OK) {
        if (resp->status < 200 || resp->status >= 300)
            return cli_report_error(resp);
        free(*status);
        *status = job_status(resp, job->name, state);
        if (!*status) {
            fprintf(stderr, "stele %s: unexpected response from the server\n", job->command);
            return CLI_ESERVER;
        }
        if (!job->wait || strcmp(*status, "running") != 0)
            return CLI_OK;
        if (job->progress)
            job->progress(*state);
        usleep(JOB_POLL_US);
        cli_buf_free(&resp->body);
        rc = cli_request(c, "GET", path, NULL, NULL, 0, NULL, resp);
    }
    return rc;
}
