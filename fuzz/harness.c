/*
 * harness.c - scratch directories, the in-process server and a socket
 * exchange for the fuzz drivers (harness.h). Nothing here decodes
 * anything: the drivers call the real decoders, and the server drivers
 * reach them through the real server loop.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FZ_MAX_DIRS 8

static char *dirs[FZ_MAX_DIRS];
static int ndirs;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void fz_rmtree(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static void rm_dirs(void)
{
    for (int i = 0; i < ndirs; i++) {
        fz_rmtree(dirs[i]);
        free(dirs[i]);
    }
    ndirs = 0;
}

const char *fz_tmpdir(const char *name)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/stele-fuzz-%s-XXXXXX", base && *base ? base : "/tmp", name);
    if (!mkdtemp(tmpl) || ndirs == FZ_MAX_DIRS) {
        fprintf(stderr, "fuzz: cannot make a scratch directory %s: %s\n", tmpl, strerror(errno));
        abort();
    }
    if (ndirs == 0)
        atexit(rm_dirs);
    dirs[ndirs] = strdup(tmpl);
    return dirs[ndirs++];
}

/* ------------------------------------------------------------ server */

static pthread_t srv_thread;
static server_config srv_cfg;
static int srv_port = -1;
static int srv_ready[2] = {-1, -1};

void fz_server_config(server_config *cfg)
{
    server_config_init(cfg);
    cfg->data_dir = fz_tmpdir("server");
    cfg->host = "127.0.0.1";
    cfg->port = 0;
    /* FUZZ_SERVER_LOG=N: the server's log level (silent by default). */
    const char *lv = getenv("FUZZ_SERVER_LOG");
    cfg->log_level = lv ? atoi(lv) : -1;
    cfg->auth_fail_limit = 1000000;
}

static void *serve(void *arg)
{
    (void)arg;
    int rc = server_run(&srv_cfg);
    if (rc != 0)
        fprintf(stderr, "fuzz: the server stopped with %d\n", rc);
    return NULL;
}

static void server_stop(void)
{
    /* SIGTERM is blocked in the server thread, so it stays pending there
     * and the server's signalfd reads it: a clean stop. (Sent to the
     * thread, not the process: libFuzzer's own threads do not block it.) */
    pthread_kill(srv_thread, SIGTERM);
    pthread_join(srv_thread, NULL);
    rm_dirs();
}

int fz_server_start(const server_config *cfg)
{
    if (srv_port >= 0)
        return srv_port;
    srv_cfg = *cfg;
    if (pipe(srv_ready) != 0)
        abort();
    srv_cfg.ready_fd = srv_ready[1];
    /* Before the thread starts, so it and every later thread block them
     * (server_run reads them from a signalfd). */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_create(&srv_thread, NULL, serve, NULL) != 0)
        abort();
    char line[64] = {0};
    size_t n = 0;
    while (n < sizeof line - 1) {
        ssize_t k = read(srv_ready[0], line + n, 1);
        if (k <= 0)
            break;
        if (line[n++] == '\n')
            break;
    }
    if (sscanf(line, "ready %d", &srv_port) != 1) {
        fprintf(stderr, "fuzz: the server did not start\n");
        abort();
    }
    atexit(server_stop);
    return srv_port;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connect() interrupted by a signal (libFuzzer's SIGINT when a run is
 * stopped) goes on in the background: wait for it and read its outcome. */
static int connect_finish(int fd)
{
    if (errno != EINTR)
        return 0;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r;
    do
        r = poll(&p, 1, 5000);
    while (r < 0 && errno == EINTR);
    int err = 0;
    socklen_t elen = sizeof err;
    if (r != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
        return 0;
    errno = err;
    return err == 0;
}

int fz_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && !connect_finish(fd)) {
        fprintf(stderr, "fuzz: cannot connect to the server: %s\n", strerror(errno));
        abort();
    }
    return fd;
}

size_t fz_exchange(int port, const uint8_t *data, size_t len, int quiet_ms)
{
    int fd = fz_connect(port);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t off = 0, got = 0;
    int wr_open = 1;
    int64_t last = mono_ms();
    char sink[65536];
    /* FUZZ_VERBOSE=1: show the start of each answer (writing seeds). */
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("FUZZ_VERBOSE") != NULL;
    for (;;) {
        if (wr_open && off == len) {
            shutdown(fd, SHUT_WR);
            wr_open = 0;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN | (wr_open ? POLLOUT : 0)};
        int r = poll(&p, 1, quiet_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 && mono_ms() - last >= quiet_ms)
            break; /* silent: an open subscription, or a request left waiting */
        if (p.revents & POLLOUT) {
            ssize_t k = send(fd, data + off, len - off, MSG_NOSIGNAL);
            if (k > 0) {
                off += (size_t)k;
                last = mono_ms();
            } else if (k < 0 && errno != EAGAIN) {
                wr_open = 0; /* the server closed: read what it said */
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = recv(fd, sink, sizeof sink, 0);
            if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
                break;
            if (k > 0) {
                if (verbose && got == 0) {
                    fprintf(stderr, "fuzz: answer: ");
                    for (ssize_t i = 0; i < k && i < 400; i++)
                        fputc(sink[i] >= 32 && sink[i] < 127 ? sink[i] : '.', stderr);
                    fputc('\n', stderr);
                }
                got += (size_t)k;
                last = mono_ms();
            }
        }
    }
    close(fd);
    return got;
}
