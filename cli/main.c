/*
 * main.c - the `stele` command. Uses only include/stele.h.
 *
 *   stele serve [...]    run the server (cli/serve.c)
 *   stele check DIR      verify a store (checksums, framing, index)
 *   stele version
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "stele.h"

static int usage(FILE *f)
{
    fprintf(f, "usage: stele <command> [args]\n\n"
               "commands:\n"
               "  serve         run the server (stele serve --help)\n"
               "  check DIR     verify every checksum and index entry of the store in DIR;\n"
               "                prints the first damage with its segment and offset\n"
               "  version       print the version\n");
    return f == stderr ? 2 : 0;
}

static int cmd_check(int argc, char **argv)
{
    if (argc != 3)
        return usage(stderr);
    char report[1024] = "";
    int rc = stele_check(argv[2], report, sizeof report);
    if (rc) {
        fprintf(stderr, "stele check: %s: %s\n", argv[2], stele_errmsg());
        return rc == STELE_ECORRUPT ? 1 : 2;
    }
    fputs(report, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "serve"))
        return cmd_serve(argc, argv);
    if (!strcmp(argv[1], "check"))
        return cmd_check(argc, argv);
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("stele %s\n", STELE_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return usage(stdout);
    fprintf(stderr, "stele: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
