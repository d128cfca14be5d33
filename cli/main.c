/*
 * main.c - the `stele` command. Uses only include/stele.h.
 *
 *   stele serve [...]        run the server (cli/serve.c)
 *   stele append STREAM ...  client commands: talk to a running server over
 *   stele read STREAM ...    HTTP (cli/client.c, cli/cmd_*.c)
 *   stele query KIND KEY
 *   stele head STREAM
 *   stele delete STREAM
 *   stele metadata STREAM    stream metadata; snapshots (cli/cmd_streams.c)
 *   stele snapshot put|get|load STREAM
 *   stele tail STREAM        follow new events (Server-Sent Events)
 *   stele scavenge           reclaim deleted events' space (cli/cmd_scavenge.c)
 *   stele check DIR          verify a store (checksums, framing, index), or a backup
 *   stele backup DEST        back the store up (cli/cmd_backup.c)
 *   stele restore SRC        a new store from a backup, to a point
 *   stele keygen, verify     the hash chain's keys and offline checks; and
 *   stele chain ...          its head, proofs and exports (cli/cmd_chain.c)
 *   stele version
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "stele.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
} command;

static int cmd_check(int argc, char **argv);

static const command commands[] = {
    {"serve", cmd_serve},   {"append", cmd_append}, {"read", cmd_read},
    {"head", cmd_head},     {"delete", cmd_delete}, {"check", cmd_check},
    {"metadata", cmd_metadata}, {"snapshot", cmd_snapshot},
    {"tail", cmd_tail},
    {"groups", cmd_groups},
    {"rules", cmd_rules},
    {"scavenge", cmd_scavenge},
    {"backup", cmd_backup},
    {"restore", cmd_restore},
    {"query", cmd_query},
    {"projection", cmd_projection},
    {"user", cmd_user},
    {"api-key", cmd_user},
    {"migrate", cmd_migrate},
    {"keygen", cmd_keygen},
    {"verify", cmd_verify},
    {"chain", cmd_chain},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static int usage(FILE *f)
{
    fprintf(f, "usage: stele <command> [args]\n\n"
               "Server:\n"
               "  serve           run the server (stele serve --help)\n"
               "  check DIR       verify every checksum and index entry of the store in DIR;\n"
               "                  prints the first damage with its segment and offset\n"
               "                  (or every file and record of the backup in DIR)\n"
               "  backup DEST     copy the store into DEST while it runs (--data DIR: offline)\n"
               "  restore SRC --data NEW [--to-position P | --to-time T]\n"
               "                  a new store from a backup or archive, as of one commit\n"
               "  migrate --store URI\n"
               "                  create or migrate a store's schema (PostgreSQL) and exit\n"
               "  keygen FILE     a new Ed25519 key for serve --signing-key (FILE.pub: public)\n"
               "  verify FILE     verify a hash-chain export offline (--public-key FILE)\n\n"
               "Client (of a running server: --server URL, else $STELE_SERVER,\n"
               "else " CLI_DEFAULT_SERVER "):\n"
               "  append STREAM   append events from arguments, a JSON file or NDJSON on stdin\n"
               "  read STREAM     read a stream's events; read --all reads every stream\n"
               "  query KIND KEY  events by category, type, tag, correlation or causation id, actor\n"
               "  head STREAM     show a stream's last revision and position\n"
               "  delete STREAM   delete a stream (--tombstone: for good)\n"
               "  metadata STREAM show or --set a stream's metadata (retention, custom fields)\n"
               "  snapshot put|get|load STREAM\n"
               "                  save, fetch a stream's snapshots; load one with later events\n"
               "  tail STREAM     follow new events as they are appended; tail --all follows\n"
               "                  every stream, with --filter-... options\n"
               "  groups ...      consumer groups: list, info, create, update, delete,\n"
               "                  parked, replay-parked, truncate-parked\n"
               "  rules ...       rules (event patterns to webhooks or streams): list, get,\n"
               "                  put, delete, pause, resume, dead-letters, redrive, replay\n"
               "  projection ...  projections: list, create, status, update, enable, disable,\n"
               "                  reset, delete, state, partitions, fold, run\n"
               "  chain head|proof P|export F T\n"
               "                  the hash chain's head, an event's proof, an export\n"
               "  scavenge        give back the space of deleted events (--dir DIR: offline)\n"
               "  user ...        users of a server with users: list, get, create, update,\n"
               "                  delete, enable, disable, password, reset-password\n"
               "  api-key ...     API keys: list, create USER, revoke ID\n"
               "                  (credentials: STELE_USER/STELE_PASSWORD or STELE_API_KEY;\n"
               "                  STELE_CA_FILE for https:// with a private CA)\n\n"
               "  version         print the version\n"
               "  help [COMMAND]  this text, or a command's (the same as stele COMMAND --help)\n\n"
               "Client commands print a table on a terminal and JSON (one object per line)\n"
               "otherwise or with --json. Exit status: 0 ok, 1 the server answered with an\n"
               "error (shown as 'stele: CODE: message'), 2 usage error, 3 server unreachable.\n");
    return f == stderr ? 2 : 0;
}

static int cmd_check(int argc, char **argv)
{
    if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        printf("usage: stele check DIR (or file:DIR)\n\n"
               "Verifies every checksum, commit and index entry of the store in DIR (which\n"
               "no server may have open) and prints a report; the first damage is named\n"
               "with its segment and offset. A backup or archive directory (stele backup)\n"
               "is verified as such: its manifest, every file's length and checksum, every\n"
               "record. Exit status: 0 sound, 1 damaged, 2 cannot check.\n");
        return 0;
    }
    if (argc != 3)
        return usage(stderr);
    char report[1024] = "", manifest[4200];
    struct stat sb;
    snprintf(manifest, sizeof manifest, "%s/stele-backup.manifest", argv[2]);
    int backup = stat(manifest, &sb) == 0; /* a backup or archive directory */
    int rc = backup ? stele_backup_verify(argv[2], report, sizeof report)
                    : stele_check(argv[2], report, sizeof report);
    if (rc) {
        cli_lib_error("check", argv[2], rc);
        return rc == STELE_ECORRUPT || (backup && rc == STELE_ENOTFOUND) ? 1 : 2;
    }
    fputs(report, stdout);
    return 0;
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    const char *name = argv[1];
    if (!strcmp(name, "version") || !strcmp(name, "--version")) {
        printf("stele %s\n", STELE_VERSION);
        return 0;
    }
    if (!strcmp(name, "help") || !strcmp(name, "--help") || !strcmp(name, "-h")) {
        if (argc < 3 || !strcmp(name, "--help") || !strcmp(name, "-h"))
            return usage(stdout);
        const command *cmd = find_command(argv[2]);
        if (!cmd) {
            fprintf(stderr, "stele: unknown command '%s'\n", argv[2]);
            return usage(stderr);
        }
        static char help_flag[] = "--help";
        char *help_argv[] = {argv[0], argv[2], help_flag, NULL};
        return cmd->run(3, help_argv);
    }
    const command *cmd = find_command(name);
    if (cmd)
        return cmd->run(argc, argv);
    fprintf(stderr, "stele: unknown command '%s'\n", name);
    return usage(stderr);
}
