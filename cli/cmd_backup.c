/*
 * cmd_backup.c - `stele backup` and `stele restore` (docs/operations.md).
 *
 * `stele backup DEST` asks a running server for a backup (POST
 * /admin/backup, then GET /admin/backup until it ends); DEST is a
 * directory on the server's machine (a relative one is made absolute here,
 * for the usual case of a server on this machine). `--data DIR` instead
 * opens the store in DIR itself, when no server has it open. Either way the
 * backup is then verified from DEST when this machine can read it
 * (stele_backup_verify: every file's checksum and every record), unless
 * --no-verify.
 *
 * `stele restore SRC --data NEW [--to-position P | --to-time T]` builds a
 * new store from a backup or archive directory (stele_restore), which is
 * checked before the command returns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "stele.h"

static const char synopsis[] =
    "stele backup [--server URL] [--no-verify] [--json] DEST | "
    "stele backup --data DIR [--archive] [--no-verify] [--json] DEST";

static const char rsynopsis[] =
    "stele restore SRC --data NEW [--to-position P | --to-time T] [--json]";

static int usage(void)
{
    printf("usage: %s\n\n"
           "Copies the store into directory DEST while appends go on: every sealed log\n"
           "segment and the segment being written up to the last acknowledged commit.\n"
           "Events, stream metadata, snapshots, consumer-group checkpoints and projection\n"
           "state are all in the log, so the copy has all of them as of that commit.\n"
           "Incremental: segments DEST already holds unchanged are not copied again.\n"
           "DEST gets a manifest with a CRC32C per file; the copy is then verified.\n\n"
           "Options:\n"
           "  --server URL   the server that copies its store (default: $STELE_SERVER,\n"
           "                 else %s); DEST is a directory on the server's machine\n"
           "  --data DIR     back up the store in DIR directly (no server may have it open)\n"
           "  --archive      archive mode: never replace a sealed segment already in DEST\n"
           "                 (what `stele serve --archive-dir` does)\n"
           "  --no-verify    do not read DEST back afterwards\n"
           "  --json         print the result as JSON even on a terminal\n\n"
           "Exit status: 0 done, 1 the backup or its verification failed, 2 bad arguments,\n"
           "3 server unreachable.\n",
           synopsis, CLI_DEFAULT_SERVER);
    return CLI_OK;
}

static int rusage(void)
{
    printf("usage: %s\n\n"
           "Builds a new store in NEW (a missing or empty directory) from the backup or\n"
           "archive in SRC, as it was right after one commit: the one holding position P,\n"
           "the last one made at or before time T, or the backup's last. Positions, ids and\n"
           "times are unchanged; metadata, snapshots, consumer-group checkpoints and\n"
           "projection state are those of that moment. The indexes are rebuilt and the new\n"
           "store is checked (as `stele check`) before the command returns.\n\n"
           "Options:\n"
           "  --data NEW         the directory of the new store\n"
           "  --to-position P    up to the commit holding event position P\n"
           "  --to-time T        up to the last commit at or before T: RFC 3339\n"
           "                     (2026-12-06T23:10:00Z) or microseconds since the epoch\n"
           "  --json             print the result as JSON even on a terminal\n\n"
           "Damage in SRC (a missing, cut or changed file) stops the restore with a\n"
           "message naming the file; nothing is left in NEW then.\n"
           "Exit status: 0 restored, 1 the restore failed, 2 bad arguments.\n",
           rsynopsis);
    return CLI_OK;
}

static void print_bytes(const char *label, uint64_t v)
{
    if (v >= (10ull << 20))
        printf("%-20s%llu (%.1f MiB)\n", label, (unsigned long long)v, (double)v / 1048576.0);
    else
        printf("%-20s%llu\n", label, (unsigned long long)v);
}

static void print_result(const char *status, const char *dest, const stele_backup_result *r)
{
    char t[32] = "-";
    if (r->end_time_us)
        stele_time_format(r->end_time_us, t);
    printf("%-20s%s\n", "status", status);
    printf("%-20s%s\n", "dest", dest);
    printf("%-20s%llu (%llu copied, %llu kept)\n", "segments", (unsigned long long)r->segments,
           (unsigned long long)r->segments_copied, (unsigned long long)r->segments_kept);
    print_bytes("bytes copied", r->bytes_copied);
    print_bytes("bytes in backup", r->bytes_total);
    printf("%-20s%llu\n", "end position", (unsigned long long)r->end_position);
    printf("%-20s%s\n", "last commit at", t);
    printf("%-20s%.3f s\n", "duration", (double)r->duration_us / 1e6);
    if (r->duration_us)
        printf("%-20s%.1f MB/s\n", "throughput",
               (double)r->bytes_copied / ((double)r->duration_us / 1e6) / 1e6);
}

static void print_json(const char *status, const stele_backup_result *r, int verified)
{
    printf("{\"backup\":{\"status\":\"%s\",\"segments\":%llu,\"segmentsCopied\":%llu,"
           "\"segmentsKept\":%llu,\"bytesCopied\":%llu,\"bytesTotal\":%llu,"
           "\"endPosition\":%llu,\"endTimeUs\":%lld,\"durationMs\":%llu,\"verified\":%s}}\n",
           status, (unsigned long long)r->segments, (unsigned long long)r->segments_copied,
           (unsigned long long)r->segments_kept, (unsigned long long)r->bytes_copied,
           (unsigned long long)r->bytes_total, (unsigned long long)r->end_position,
           (long long)r->end_time_us, (unsigned long long)(r->duration_us / 1000),
           verified ? "true" : "false");
}

/* Verify DEST when this machine can read it: 1 verified, 0 skipped, -1
 * damaged (message printed). */
static int verify(const char *dest, int human)
{
    struct stat sb;
    char path[4200];
    snprintf(path, sizeof path, "%s/stele-backup.manifest", dest);
    if (stat(path, &sb) != 0) {
        if (human)
            fprintf(stderr, "stele backup: %s is not readable here: not verified (run `stele "
                    "check %s` on the server's machine)\n", dest, dest);
        return 0;
    }
    char report[1024];
    int vrc = stele_backup_verify(dest, report, sizeof report);
    if (vrc) {
        cli_lib_error("backup", "verification failed", vrc);
        return -1;
    }
    if (human)
        printf("%-20s%s\n", "verified", "every file's checksum and every record");
    return 1;
}

/* --------------------------------------------------------------- offline */

static int progress(void *ctx, const stele_backup_result *r)
{
    if (*(int *)ctx)
        fprintf(stderr, "\rbacking up: segment %llu of %llu, %llu bytes copied",
                (unsigned long long)r->segments_done, (unsigned long long)r->segments_todo,
                (unsigned long long)r->bytes_copied);
    return 0;
}

static int backup_dir(const char *dir, const char *dest, int archive, int check,
                      const cli_common *co)
{
    stele_options o = {.flags = STELE_OPEN_NOCREATE};
    stele_db *db;
    int rc = stele_open(dir, &o, &db);
    if (rc) {
        cli_lib_error("backup", dir, rc);
        return rc == STELE_EINVAL ? CLI_EUSAGE : CLI_ESERVER;
    }
    int tty = cli_human(co) && isatty(2);
    stele_backup_options bo = {archive ? STELE_BACKUP_ARCHIVE : 0, progress, &tty};
    stele_backup_result r;
    rc = stele_backup(db, dest, &bo, &r);
    if (tty)
        fprintf(stderr, "\n");
    if (rc)
        cli_lib_error("backup", dest, rc);
    stele_close(db);
    if (rc)
        return CLI_ESERVER;
    if (cli_human(co))
        print_result("done", dest, &r);
    int v = check ? verify(dest, cli_human(co)) : 0;
    if (!cli_human(co))
        print_json("done", &r, v == 1);
    return cli_finish_output("backup", v < 0 ? CLI_ESERVER : CLI_OK);
}

/* ---------------------------------------------------------------- online */

/* Progress on a terminal while the server copies. */
static void show_progress(cli_span bk)
{
    fprintf(stderr, "\rbacking up: segment %llu of %llu, %llu bytes copied",
            (unsigned long long)cli_json_field_u64(bk, "segmentsDone"),
            (unsigned long long)cli_json_field_u64(bk, "segmentsTodo"),
            (unsigned long long)cli_json_field_u64(bk, "bytesCopied"));
}

static int backup_server(const cli_common *co, const char *dest, int check)
{
    cli_buf body = {0};
    cli_buf_adds(&body, "{\"dest\":");
    cli_buf_add_jstr(&body, dest);
    cli_buf_adds(&body, "}");
    cli_client *c = cli_client_open(co->server);
    if (!c) {
        cli_buf_free(&body);
        return CLI_ECONNECT;
    }
    int tty = cli_human(co) && isatty(2);
    cli_job job = {.command = "backup", .name = "backup", .body = body.p, .wait = 1,
                   .progress = tty ? show_progress : NULL};
    cli_response resp;
    cli_span bk;
    char *status;
    int rc = cli_admin_job(c, &job, &resp, &bk, &status);
    cli_buf_free(&body);
    if (tty)
        fprintf(stderr, "\n");
    int v = 0;
    if (rc == CLI_OK) {
        stele_backup_result r = {
            .segments = cli_json_field_u64(bk, "segments"),
            .segments_copied = cli_json_field_u64(bk, "segmentsCopied"),
            .segments_kept = cli_json_field_u64(bk, "segmentsKept"),
            .bytes_copied = cli_json_field_u64(bk, "bytesCopied"),
            .bytes_total = cli_json_field_u64(bk, "bytesTotal"),
            .end_position = cli_json_field_u64(bk, "endPosition"),
            .duration_us = cli_json_field_u64(bk, "durationMs") * 1000,
        };
        cli_span et;
        if (cli_json_get(bk, "endTime", &et)) {
            char *t = cli_json_str(et);
            if (t)
                stele_time_parse(t, 0, &r.end_time_us);
            free(t);
        }
        int failed = strcmp(status, "done") != 0;
        if (cli_human(co)) {
            print_result(status, dest, &r);
            cli_job_print_error(bk);
        }
        if (!failed && check)
            v = verify(dest, cli_human(co));
        if (!cli_human(co))
            fwrite(resp.body.p ? resp.body.p : "", 1, resp.body.len, stdout);
        if (failed || v < 0)
            rc = CLI_ESERVER;
    }
    free(status);
    rc = cli_finish_output("backup", rc);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}

int cmd_backup(int argc, char **argv)
{
    cli_common co = {0};
    const char *dir = NULL, *dest = NULL;
    int archive = 0, check = 1, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return usage();
        } else if (!strcmp(a, "--archive")) {
            archive = 1;
        } else if (!strcmp(a, "--no-verify")) {
            check = 0;
        } else if ((r = cli_common_opt(&co, "backup", argc, argv, &i)) ||
                   (r = cli_opt("backup", argc, argv, &i, "--data", &dir))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("backup", synopsis, "unknown option '%s'", a);
        } else if (!dest) {
            dest = a;
        } else {
            return cli_usage_error("backup", synopsis, "unexpected argument '%s'", a);
        }
    }
    if (!dest || !*dest)
        return cli_usage_error("backup", synopsis, "DEST (the backup directory) is missing");
    if (dir && co.server)
        return cli_usage_error("backup", synopsis,
                               "--data backs up a store directly: --server does not apply");
    if (dir && !*dir)
        return cli_usage_error("backup", synopsis, "--data needs a directory");
    if (!dir && archive)
        return cli_usage_error("backup", synopsis,
                               "--archive needs --data (a server archives with "
                               "`stele serve --archive-dir`)");
    if (dir)
        return backup_dir(dir, dest, archive, check, &co);
    char abs[4096];
    if (dest[0] != '/') {
        char cwd[3000];
        if (!getcwd(cwd, sizeof cwd))
            return cli_usage_error("backup", synopsis, "cannot make '%s' absolute", dest);
        snprintf(abs, sizeof abs, "%s/%s", cwd, dest);
        dest = abs;
    }
    return backup_server(&co, dest, check);
}

/* --------------------------------------------------------------- restore */

int cmd_restore(int argc, char **argv)
{
    cli_common co = {0};
    const char *src = NULL, *dir = NULL, *pos = NULL, *when = NULL;
    int r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            return rusage();
        } else if (!strcmp(a, "--json")) {
            co.json = 1;
        } else if ((r = cli_opt("restore", argc, argv, &i, "--data", &dir)) ||
                   (r = cli_opt("restore", argc, argv, &i, "--to-position", &pos)) ||
                   (r = cli_opt("restore", argc, argv, &i, "--to-time", &when))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("restore", rsynopsis, "unknown option '%s'", a);
        } else if (!src) {
            src = a;
        } else {
            return cli_usage_error("restore", rsynopsis, "unexpected argument '%s'", a);
        }
    }
    if (!src || !*src)
        return cli_usage_error("restore", rsynopsis, "SRC (a backup or archive) is missing");
    if (!dir || !*dir)
        return cli_usage_error("restore", rsynopsis, "--data NEW (the new store) is missing");
    if (pos && when)
        return cli_usage_error("restore", rsynopsis,
                               "give --to-position or --to-time, not both");
    stele_restore_options o = {0};
    if (pos) {
        char *end;
        unsigned long long v = strtoull(pos, &end, 10);
        if (!*pos || *end || pos[0] == '-')
            return cli_usage_error("restore", rsynopsis,
                                   "--to-position must be a position (a number), got '%s'", pos);
        o.flags = STELE_RESTORE_TO_POSITION;
        o.to_position = v;
    }
    if (when) {
        char *end;
        long long v = strtoll(when, &end, 10);
        o.flags = STELE_RESTORE_TO_TIME;
        if (*when && !*end) {
            o.to_time_us = v;
        } else if (stele_time_parse(when, 0, &o.to_time_us)) {
            return cli_usage_error("restore", rsynopsis,
                                   "--to-time must be RFC 3339 or microseconds: %s",
                                   stele_errmsg());
        }
    }
    stele_restore_result res;
    int rc = stele_restore(src, dir, &o, &res);
    if (rc) {
        cli_lib_error("restore", NULL, rc);
        return CLI_ESERVER;
    }
    char t[32] = "-";
    if (res.end_time_us)
        stele_time_format(res.end_time_us, t);
    if (cli_human(&co)) {
        printf("%-20s%s\n", "restored", dir);
        printf("%-20s%llu\n", "segments", (unsigned long long)res.segments);
        print_bytes("log bytes", res.bytes);
        printf("%-20s%llu\n", "events", (unsigned long long)res.end_position);
        printf("%-20s%s\n", "last commit at", t);
        printf("%-20s%.3f s\n", "duration", (double)res.duration_us / 1e6);
        printf("%-20s%s\n", "check", "passed");
    } else {
        cli_buf jd = {0};
        cli_buf_add_jstr(&jd, dir);
        printf("{\"restore\":{\"dir\":%s,\"segments\":%llu,\"bytes\":%llu,"
               "\"endPosition\":%llu,\"endTime\":\"%s\",\"durationMs\":%llu,\"check\":\"passed\"}}\n",
               jd.p, (unsigned long long)res.segments, (unsigned long long)res.bytes,
               (unsigned long long)res.end_position, t,
               (unsigned long long)(res.duration_us / 1000));
        cli_buf_free(&jd);
    }
    return cli_finish_output("restore", CLI_OK);
}
