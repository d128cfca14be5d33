/*
 * bench_subs_floor.c - what loopback TCP costs a sender that fans bytes out
 * to many receivers, with no server around it: the floor under the cost
 * of live SSE subscribers (bench_subs fanout) on this machine.
 *
 *   bench_subs_floor --conns N --bytes B [--gap-us G] [--duration S]
 *
 * N TCP connections over 127.0.0.1; a child process holds the receiving
 * ends and reads them the way bench_subs' subscribers do (one epoll loop,
 * edge-triggered, one 256 KiB recv per wake-up while the data fits). The
 * parent sends rounds: B bytes to each of the N connections with one send
 * each, then waits G µs (default 0: the next round at once), for S seconds
 * (default 5). A send that the socket does not fully take waits for
 * EPOLLOUT, so a slow receiver slows the sender, never loses bytes; the
 * child checks that it received every byte (and each connection's bytes
 * in order: they are a running counter, byte k of a connection is k mod
 * 251).
 *
 * The result line gives the sender's CPU per send and per KiB, user and
 * system apart, and the receiver's CPU. Two runs, one with small sends and
 * one with large ones, separate what a send costs from what a byte costs:
 * the server's subscriber sends cannot be cheaper than these.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "measure.h"

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static double tv_s(struct timeval t)
{
    return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

/* The receiving ends: read every connection until it closes, checking the
 * byte pattern. Exits 0 when every byte was as expected. */
static int receiver(int port, int conns, int ready_fd)
{
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    uint64_t *got = calloc((size_t)conns, sizeof *got);
    int *fds = calloc((size_t)conns, sizeof *fds);
    if (!got || !fds)
        die("calloc");
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa))
            die("connect");
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        fds[i] = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET,
                                 .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
            die("epoll_ctl");
    }
    if (write(ready_fd, "R", 1) != 1)
        die("write");
    static unsigned char buf[1 << 18];
    int open = conns, bad = 0;
    while (open) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            int hup = (evs[k].events & (EPOLLRDHUP | EPOLLHUP)) != 0;
            for (;;) {
                ssize_t r = recv(fds[i], buf, sizeof buf, 0);
                if (r > 0) {
                    /* Check the pattern at the start and end of each read
                     * (every byte would cost more than the copy). */
                    if (buf[0] != (unsigned char)(got[i] % 251) ||
                        buf[r - 1] != (unsigned char)((got[i] + (uint64_t)r - 1) % 251))
                        bad++;
                    got[i] += (uint64_t)r;
                    /* A short read drained the socket (the next bytes
                     * raise a new edge), unless the sender has closed:
                     * then read on to the end. */
                    if ((size_t)r < sizeof buf && !hup)
                        break;
                    continue;
                }
                if (r == 0) {
                    close(fds[i]);
                    open--;
                }
                break;
            }
        }
    }
    uint64_t total = 0;
    for (int i = 0; i < conns; i++)
        total += got[i];
    if (write(ready_fd, &total, sizeof total) != (ssize_t)sizeof total)
        die("write");
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    int conns = 100, bytes = 350, gap_us = 0;
    double duration = 5;
    static const struct option lo[] = {{"conns", 1, 0, 'n'},
                                       {"bytes", 1, 0, 'b'},
                                       {"gap-us", 1, 0, 'g'},
                                       {"duration", 1, 0, 'd'},
                                       {0, 0, 0, 0}};
    for (int ch; (ch = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        switch (ch) {
        case 'n': conns = atoi(optarg); break;
        case 'b': bytes = atoi(optarg); break;
        case 'g': gap_us = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        default:
            fprintf(stderr, "usage: bench_subs_floor --conns N --bytes B [--gap-us G] "
                            "[--duration S]\n");
            return 2;
        }
    }
    if (conns < 1 || conns > 10000 || bytes < 1 || bytes > (64 << 20) || gap_us < 0 ||
        duration <= 0) {
        fprintf(stderr, "bench_subs_floor: bad arguments\n");
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, conns) ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl))
        die("listen");
    int pipefd[2];
    if (pipe(pipefd))
        die("pipe");
    fflush(NULL);
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(pipefd[0]);
        _exit(receiver(ntohs(sa.sin_port), conns, pipefd[1]));
    }
    close(pipefd[1]);
    int *fds = calloc((size_t)conns, sizeof *fds);
    uint64_t *sent = calloc((size_t)conns, sizeof *sent);
    unsigned char *pat = malloc((size_t)bytes + 251);
    if (!fds || !sent || !pat)
        die("calloc");
    for (int i = 0; i < bytes + 251; i++)
        pat[i] = (unsigned char)(i % 251);
    for (int i = 0; i < conns; i++) {
        if ((fds[i] = accept(lfd, NULL, NULL)) < 0)
            die("accept");
        int one = 1;
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    }
    char r;
    if (read(pipefd[0], &r, 1) != 1)
        die("receiver");
    struct rusage u0, u1, c1;
    getrusage(RUSAGE_SELF, &u0);
    uint64_t t0 = bench_now_ns(), end = t0 + (uint64_t)(duration * 1e9);
    uint64_t sends = 0, total = 0, rounds = 0, waits = 0;
    while (bench_now_ns() < end) {
        for (int i = 0; i < conns; i++) {
            /* B bytes from where this connection's pattern stands. */
            size_t left = (size_t)bytes;
            while (left) {
                const unsigned char *p = pat + (sent[i] % 251);
                ssize_t n = send(fds[i], p, left, MSG_NOSIGNAL);
                sends++;
                if (n > 0) {
                    sent[i] += (uint64_t)n;
                    total += (uint64_t)n;
                    left -= (size_t)n;
                    continue;
                }
                if (n < 0 && errno != EAGAIN && errno != EINTR)
                    die("send");
                /* Full: wait until this socket takes more. */
                struct pollfd pf = {.fd = fds[i], .events = POLLOUT};
                waits++;
                poll(&pf, 1, 100);
            }
        }
        rounds++;
        if (gap_us) {
            struct timespec ts = {gap_us / 1000000, (long)(gap_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
        }
    }
    uint64_t t1 = bench_now_ns();
    getrusage(RUSAGE_SELF, &u1);
    for (int i = 0; i < conns; i++)
        close(fds[i]);
    uint64_t got = 0;
    if (read(pipefd[0], &got, sizeof got) != (ssize_t)sizeof got)
        die("receiver result");
    int st;
    if (wait4(child, &st, 0, &c1) < 0)
        die("wait4");
    double s = (double)(t1 - t0) / 1e9;
    double usr = tv_s(u1.ru_utime) - tv_s(u0.ru_utime), sys = tv_s(u1.ru_stime) - tv_s(u0.ru_stime);
    double rcv = tv_s(c1.ru_utime) + tv_s(c1.ru_stime);
    printf("subs_floor conns=%d bytes=%d gap_us=%d rounds=%llu sends=%llu full_waits=%llu "
           "mb_per_s=%.1f sender_usr_us_per_send=%.2f sender_sys_us_per_send=%.2f "
           "sender_us_per_kib=%.3f sender_cpu=%.0f%% receiver_cpu=%.0f%% received_all=%s\n",
           conns, bytes, gap_us, (unsigned long long)rounds, (unsigned long long)sends,
           (unsigned long long)waits, (double)total / s / 1e6, usr * 1e6 / (double)sends,
           sys * 1e6 / (double)sends, (usr + sys) * 1e6 / ((double)total / 1024.0),
           100 * (usr + sys) / s, 100 * rcv / s,
           got == total && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "yes" : "NO");
    return got == total && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
