/*
 * cli.h - the subcommands of the `stele` command (cli/main.c dispatches).
 */
#ifndef STELE_CLI_H
#define STELE_CLI_H

int cmd_serve(int argc, char **argv);

#endif
