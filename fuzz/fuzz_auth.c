/*
 * fuzz_auth.c - the Authorization header (server/auth.c: auth_start), on
 * a real store with users on (the admin user and one API key), without
 * the event loop: the input is the header's value. The decoder must answer
 * AUTH_OK, AUTH_FAIL (401 or 429, with a reason) or AUTH_PENDING (a
 * password check to run, only for a well-formed Basic header; the job is
 * freed here, nothing is submitted to the verifier thread).
 */
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

#include "auth.h"
#include "harness.h"

static server *srv;

static void setup(void)
{
    srv = calloc(1, sizeof *srv);
    if (!srv)
        abort();
    server_config_init(&srv->cfg);
    srv->cfg.log_level = -1;
    srv->cfg.admin_password = "the-admin-password";
    srv->cfg.auth_fail_limit = 1000000; /* failures are the point here */
    if (stele_open(fz_tmpdir("auth"), NULL, &srv->db) != 0 || auth_init(srv) != 0 ||
        !auth_enabled(srv))
        abort();
    char token[128], id[32], err[256];
    if (auth_new_key(srv, "admin", "fuzz", token, sizeof token, id, sizeof id, err,
                     sizeof err) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv)
        setup();
    /* An exact copy: the header is not NUL-terminated. */
    char *h = malloc(size ? size : 1);
    if (!h)
        return 0;
    memcpy(h, data, size);
    auth_who who;
    struct auth_job *job = NULL;
    auth_refusal ref;
    memset(&ref, 0, sizeof ref);
    int rc = auth_start(srv, size ? h : NULL, size, "127.0.0.9", &who, &job, &ref);
    if (rc == AUTH_PENDING) {
        if (!job || size < 6 || strncasecmp(h, "Basic ", 6) != 0)
            abort(); /* only a Basic header goes to a password check */
        auth_job_free(job);
    } else if (rc == AUTH_FAIL) {
        if (job || (ref.status != 401 && ref.status != 429) || !ref.message)
            abort();
    } else if (rc != AUTH_OK || job) {
        abort();
    }
    free(h);
    return 0;
}
