/*
 * harness.h - what the fuzz drivers share (harness.c): scratch
 * directories removed at exit, one store per process, and a real
 * `stele serve` running in a thread of the fuzzing process, so the HTTP,
 * HTTP/2, gRPC and TLS drivers feed their bytes through a socket into the
 * server's own loop (the coverage of the server code counts for libFuzzer
 * because it runs in the same process).
 */
#ifndef STELE_FUZZ_HARNESS_H
#define STELE_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"
#include "stele.h"

/* A new empty directory under $TMPDIR (or /tmp), removed at exit. Aborts
 * on failure (a driver cannot run without it). */
const char *fz_tmpdir(const char *name);

/* Remove a directory tree (the recovery driver's per-input stores). */
void fz_rmtree(const char *path);

/* The server's configuration for fz_server_start: defaults, a fresh data
 * directory, 127.0.0.1 port 0 and no logging; the driver may change it. */
void fz_server_config(server_config *cfg);

/* Start `stele serve` with *cfg in a thread (once per process) and return
 * its port; stopped with SIGTERM and joined at exit. */
int fz_server_start(const server_config *cfg);

/* Send data[0..len) on a new connection to 127.0.0.1:port, half-close,
 * and read the answer until the server closes or stays silent for
 * `quiet_ms`. Returns the bytes read (discarded). */
size_t fz_exchange(int port, const uint8_t *data, size_t len, int quiet_ms);

/* A blocking connection to the server on 127.0.0.1:port (a connect that
 * libFuzzer's SIGINT interrupts completes first); aborts if it fails. */
int fz_connect(int port);

#endif
