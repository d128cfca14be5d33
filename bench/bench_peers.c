/*
 * bench_peers.c - bench_http's workloads against the durable peers Stele
 * is measured against: PostgreSQL (through libpq) and Redis (RESP spoken
 * over a socket here).
 *
 *   bench_peers postgres --conninfo STR --mode setup|append|read [...]
 *   bench_peers redis --port P [--host H] --mode append|read [...]
 *
 * Workloads are those of bench_http (the same flags): N connections, one
 * request in flight per connection (PostgreSQL: a thread per connection,
 * libpq's blocking calls, as behind a connection pool; Redis: one thread and
 * one epoll loop over the connections, as bench_http, so that the load
 * generator costs the server no more CPU than bench_http costs Stele on
 * this small machine); each appending
 * connection owns one stream (<prefix>-<workload>-<i>) and appends K events
 * of DATA_BYTES bytes of JSON (the same bytes as bench_http) with an exact
 * expected version, so the check is real on every append; a failed check is
 * counted as a conflict. --warmup seconds, then --duration seconds counted.
 *
 * PostgreSQL: the schema of seeds/001 (--schema seed, the default):
 *   events(id UUID PRIMARY KEY DEFAULT gen_random_uuid(), stream_id
 *   VARCHAR(255), stream_type, event_type, event_data JSONB, metadata JSONB,
 *   version BIGINT, global_position BIGSERIAL, created_at TIMESTAMPTZ,
 *   UNIQUE (stream_id, version)) and its indexes on (stream_id, version),
 *   global_position and event_type;
 * or --schema minimal: events(global_position BIGSERIAL PRIMARY KEY,
 *   stream_id TEXT, version INT, event_type TEXT, data JSONB, metadata
 *   JSONB, created_at TIMESTAMPTZ DEFAULT now(), UNIQUE (stream_id, version)).
 * An append is one autocommit statement (one round trip, one transaction):
 *   INSERT ... SELECT FROM (SELECT COALESCE(MAX(version), 0) ... WHERE
 *   stream_id = $1) cur, jsonb_array_elements($3) WITH ORDINALITY
 *   WHERE cur.v = $2
 * which inserts nothing when the stream's version is not the expected one
 * (seeds/001's check), and which the UNIQUE (stream_id, version) constraint
 * fails when a concurrent append got there first (SQLSTATE 23505): both are
 * conflicts. Versions are 1-based as in seeds/001 (expected 0 = no stream).
 * Read: SELECT * FROM events WHERE global_position > $1 ORDER BY
 * global_position LIMIT page (seeds/001's read_all), from the last position
 * seen.
 *
 * Redis: EVALSHA of a Lua script that compares XLEN of the stream with the
 * expected version and XADDs the K events (fields type, data) atomically;
 * run with appendonly yes, appendfsync always (other settings at Redis's
 * defaults, so the AOF is rewritten in a forked child as it grows: that
 * child's CPU shows in other_cpu, not server_cpu). Read: the streams with the
 * prefix (SCAN), each read with XRANGE ... COUNT page from the last id
 * seen: Redis has no global order across streams, so this is a read of
 * every stream, not of an ordered $all.
 *
 * Output: one line as bench_http's, with target=postgres or target=redis.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pg_seed.h"

#include "measure.h"

/* ------------------------------------------------------------ options */

enum { T_PG, T_REDIS };
enum { M_SETUP, M_APPEND, M_READ };

static struct {
    int target;
    int mode;
    const char *conninfo;
    const char *host;
    int port;
    int clients, batch;
    double duration, warmup;
    const char *workload, *prefix;
    long page;
    unsigned long long range;
    int data_bytes;
    int schema_minimal;
    int server_pid;
} opt = {.target = T_PG, .mode = M_APPEND, .conninfo = "", .host = "127.0.0.1", .port = 6379,
       .clients = 1, .batch = 1, .duration = 10, .warmup = 1, .page = 1000, .data_bytes = 200};

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_peers postgres --conninfo STR --mode setup|append|read [--schema seed|minimal]\n"
            "       bench_peers redis [--host 127.0.0.1] --port P --mode append|read\n"
            "  common: [--clients N] [--batch K] [--duration S] [--warmup S] [--workload NAME]\n"
            "          [--prefix STREAM_PREFIX] [--page L] [--range M] [--data-bytes B]\n"
            "          [--server-pid PID (reports its CPU and its children's)]\n");
    exit(2);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* ------------------------------------------------------------ time, cpu, latencies */

static void sleep_until(uint64_t t)
{
    for (uint64_t n = bench_now_ns(); n < t; n = bench_now_ns()) {
        uint64_t d = t - n;
        struct timespec ts = {(time_t)(d / 1000000000u), (long)(d % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------ payload (as bench_http) */

static char *g_data;

/* ------------------------------------------------------------ workers */

typedef struct worker {
    int idx;
    pthread_t th;
    char stream[128];
    long long expected; /* PG: version (0 = none); Redis: XLEN */
    bench_lats lat;
    unsigned long long events, requests, errors, conflicts;
    /* PostgreSQL */
    PGconn *pg;
    unsigned long long from;
    /* Redis */
    int fd;
    char *rb;
    size_t rb_len, rb_cap;
    char **keys;
    size_t nkeys, key_idx;
    char last_id[64];
    unsigned long long read_since_wrap;
    /* Redis request in flight (the epoll loop) */
    char head[512];
    char *cmd;
    size_t cmd_cap;
    struct iovec iov[2];
    int iovn;
    uint64_t t0;
} worker;

static atomic_int g_go, g_stop;
static uint64_t g_win_start, g_win_end;
static atomic_int g_reported;

static void report_once(const char *fmt, const char *a, const char *b)
{
    /* Racy by design: at most a few lines. */
    if (atomic_fetch_add(&g_reported, 1) < 3)
        fprintf(stderr, fmt, a, b);
}

static void record(worker *w, uint64_t t0, int ok, unsigned long long ev)
{
    uint64_t t = bench_now_ns();
    if (t < g_win_start || t > g_win_end)
        return;
    if (ok) {
        w->events += ev;
        w->requests++;
    }
    bench_lat_add(&w->lat, t - t0);
}

/* ------------------------------------------------------------ PostgreSQL */

static const char *SEED_SCHEMA = PG_SEED_SCHEMA;

static const char *MIN_SCHEMA =
    "DROP TABLE IF EXISTS events, snapshots, subscription_checkpoints;"
    "CREATE TABLE events ("
    "  global_position BIGSERIAL PRIMARY KEY,"
    "  stream_id TEXT NOT NULL,"
    "  version INT NOT NULL,"
    "  event_type TEXT NOT NULL,"
    "  data JSONB,"
    "  metadata JSONB,"
    "  created_at TIMESTAMPTZ DEFAULT now(),"
    "  UNIQUE (stream_id, version));";

static const char *SEED_APPEND =
    "INSERT INTO events (stream_id, stream_type, event_type, event_data, version) "
    "SELECT $1, 'Bench', 'BenchEvent', t.d, cur.v + t.i "
    "FROM (SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE stream_id = $1) cur, "
    "     jsonb_array_elements($3::jsonb) WITH ORDINALITY AS t(d, i) "
    "WHERE cur.v = $2::bigint ORDER BY t.i";

static const char *MIN_APPEND =
    "INSERT INTO events (stream_id, event_type, data, version) "
    "SELECT $1, 'BenchEvent', t.d, cur.v + t.i "
    "FROM (SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE stream_id = $1) cur, "
    "     jsonb_array_elements($3::jsonb) WITH ORDINALITY AS t(d, i) "
    "WHERE cur.v = $2::bigint ORDER BY t.i";

static const char *READ_ALL =
    "SELECT * FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2";

static char *g_pg_array; /* [DATA,DATA,...] of K elements */

static PGconn *pg_connect(void)
{
    PGconn *c = PQconnectdb(opt.conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_peers: postgres: %s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

static void pg_prepare(PGconn *c)
{
    PGresult *r = opt.mode == M_APPEND
                      ? PQprepare(c, "append", opt.schema_minimal ? MIN_APPEND : SEED_APPEND, 3, NULL)
                      : PQprepare(c, "read", READ_ALL, 2, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_peers: postgres: prepare: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
}

static long long pg_current_version(worker *w)
{
    const char *v[1] = {w->stream};
    PGresult *r = PQexecParams(w->pg, "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1",
                               1, NULL, v, NULL, NULL, 0);
    long long cur = PQresultStatus(r) == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return cur;
}

static void pg_append(worker *w)
{
    char exp[32];
    snprintf(exp, sizeof exp, "%lld", w->expected);
    const char *v[3] = {w->stream, exp, g_pg_array};
    uint64_t t0 = bench_now_ns();
    PGresult *r = PQexecPrepared(w->pg, "append", 3, v, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    int ok = 0, conflict = 0;
    if (st == PGRES_COMMAND_OK) {
        long n = atol(PQcmdTuples(r));
        if (n == opt.batch) {
            ok = 1;
            w->expected += opt.batch;
        } else if (n == 0) {
            conflict = 1;
        } else {
            report_once("bench_peers: postgres: inserted %s rows%s\n", PQcmdTuples(r), "");
        }
    } else {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && !strcmp(state, "23505"))
            conflict = 1;
        else
            report_once("bench_peers: postgres: append: %s%s", PQresultErrorMessage(r), "");
    }
    PQclear(r);
    record(w, t0, ok, (unsigned long long)opt.batch);
    uint64_t t = bench_now_ns();
    if (t >= g_win_start && t <= g_win_end) {
        if (conflict)
            w->conflicts++;
        else if (!ok)
            w->errors++;
    }
    if (conflict)
        w->expected = pg_current_version(w);
}

static void pg_read(worker *w)
{
    char from[32], lim[32];
    snprintf(from, sizeof from, "%llu", w->from);
    snprintf(lim, sizeof lim, "%ld", opt.page);
    const char *v[2] = {from, lim};
    uint64_t t0 = bench_now_ns();
    PGresult *r = PQexecPrepared(w->pg, "read", 2, v, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    unsigned long long n = 0;
    if (ok) {
        n = (unsigned long long)PQntuples(r);
        int col = PQfnumber(r, "global_position");
        if (n)
            w->from = strtoull(PQgetvalue(r, (int)n - 1, col), NULL, 10);
        w->read_since_wrap += n;
        if (n < (unsigned long long)opt.page || (opt.range && w->read_since_wrap >= opt.range)) {
            w->from = 0;
            w->read_since_wrap = 0;
        }
    } else {
        report_once("bench_peers: postgres: read: %s%s", PQresultErrorMessage(r), "");
    }
    PQclear(r);
    record(w, t0, ok, n);
    if (!ok && bench_now_ns() >= g_win_start && bench_now_ns() <= g_win_end)
        w->errors++;
}

static int pg_setup(void)
{
    PGconn *c = pg_connect();
    PGresult *r = PQexec(c, opt.schema_minimal ? MIN_SCHEMA : SEED_SCHEMA);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_peers: postgres: setup: %s", PQerrorMessage(c));
        return 1;
    }
    PQclear(r);
    r = PQexec(c, "SHOW fsync");
    char fs[16] = "?", sc[16] = "?";
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        snprintf(fs, sizeof fs, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    r = PQexec(c, "SHOW synchronous_commit");
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        snprintf(sc, sizeof sc, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    printf("# postgres: schema %s created; fsync=%s synchronous_commit=%s; server %d\n",
           opt.schema_minimal ? "minimal" : "seeds/001", fs, sc, PQserverVersion(c));
    PQfinish(c);
    return 0;
}

/* ------------------------------------------------------------ Redis (RESP) */

static const char LUA[] =
    "local n = redis.call('XLEN', KEYS[1])\n"
    "if n ~= tonumber(ARGV[1]) then return -1 - n end\n"
    "for i = 2, #ARGV do\n"
    "  redis.call('XADD', KEYS[1], '*', 'type', 'BenchEvent', 'data', ARGV[i])\n"
    "end\n"
    "return n + #ARGV - 1\n";

static char g_sha[48];
static char *g_redis_tail; /* the K data arguments, RESP-encoded */
static size_t g_redis_tail_len;

static int redis_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bench_peers: bad host %s\n", opt.host);
        exit(2);
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect to redis");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void resp_arg(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 32 > *cap) {
        *cap = (*len + n + 32) * 2;
        *b = realloc(*b, *cap);
        if (!*b)
            die("realloc");
    }
    *len += (size_t)sprintf(*b + *len, "$%zu\r\n", n);
    memcpy(*b + *len, s, n);
    *len += n;
    memcpy(*b + *len, "\r\n", 2);
    *len += 2;
}

static void send_all(int fd, const struct iovec *iov0, int n)
{
    struct iovec iov[4];
    memcpy(iov, iov0, (size_t)n * sizeof *iov);
    int i = 0;
    while (i < n) {
        ssize_t w = writev(fd, iov + i, n - i);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("redis send");
        }
        size_t left = (size_t)w;
        while (i < n && left >= iov[i].iov_len) {
            left -= iov[i].iov_len;
            i++;
        }
        if (i < n) {
            iov[i].iov_base = (char *)iov[i].iov_base + left;
            iov[i].iov_len -= left;
        }
    }
}

/* Skip one RESP value at b[*pos..n). 1 = complete, 0 = need more bytes. */
static int resp_skip(const char *b, size_t n, size_t *pos)
{
    if (*pos >= n)
        return 0;
    const char *p = b + *pos;
    const char *nl = memchr(p, '\n', n - *pos);
    if (!nl)
        return 0;
    size_t line = (size_t)(nl - p) + 1;
    long long v = strtoll(p + 1, NULL, 10);
    switch (p[0]) {
    case '+':
    case '-':
    case ':':
    case '_':
    case ',':
    case '#':
        *pos += line;
        return 1;
    case '$':
        if (v < 0) {
            *pos += line;
            return 1;
        }
        if (*pos + line + (size_t)v + 2 > n)
            return 0;
        *pos += line + (size_t)v + 2;
        return 1;
    case '*':
    case '%': {
        size_t q = *pos + line;
        long long items = p[0] == '%' ? 2 * v : v;
        for (long long i = 0; i < items; i++)
            if (!resp_skip(b, n, &q))
                return 0;
        *pos = q;
        return 1;
    }
    default:
        fprintf(stderr, "bench_peers: redis: bad reply byte '%c'\n", p[0]);
        exit(1);
    }
}

/* Read one whole reply into w->rb (from offset 0); returns its length. */
static size_t redis_reply(worker *w)
{
    w->rb_len = 0;
    for (;;) {
        size_t pos = 0;
        if (w->rb_len && resp_skip(w->rb, w->rb_len, &pos)) {
            if (pos != w->rb_len) {
                fprintf(stderr, "bench_peers: redis: unexpected extra bytes\n");
                exit(1);
            }
            return pos;
        }
        if (w->rb_cap - w->rb_len < 65536) {
            w->rb_cap = w->rb_cap ? w->rb_cap * 2 : 262144;
            w->rb = realloc(w->rb, w->rb_cap);
            if (!w->rb)
                die("realloc");
        }
        ssize_t r = recv(w->fd, w->rb + w->rb_len, w->rb_cap - w->rb_len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "bench_peers: redis closed the connection\n");
            exit(1);
        }
        w->rb_len += (size_t)r;
    }
}

/* One command from NUL-terminated arguments; the reply is in w->rb. */
static size_t redis_cmd(worker *w, int argc, const char *const *argv)
{
    char *b = NULL;
    size_t len = 0, cap = 0;
    char head[32];
    int hn = snprintf(head, sizeof head, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        resp_arg(&b, &len, &cap, argv[i], strlen(argv[i]));
    struct iovec iov[2] = {{head, (size_t)hn}, {b, len}};
    send_all(w->fd, iov, 2);
    free(b);
    return redis_reply(w);
}

static void redis_init_conn(worker *w)
{
    w->fd = redis_connect();
    const char *a[3] = {"SCRIPT", "LOAD", LUA};
    size_t n = redis_cmd(w, 3, a);
    if (w->rb[0] != '$') {
        fprintf(stderr, "bench_peers: redis: SCRIPT LOAD: %.*s\n", (int)n, w->rb);
        exit(1);
    }
    const char *s = memchr(w->rb, '\n', n) + 1;
    snprintf(g_sha, sizeof g_sha, "%.40s", s);
}

/* The EVALSHA of an append: its head here, the K data arguments shared. */
static void redis_append_prepare(worker *w)
{
    char exp[32];
    int en = snprintf(exp, sizeof exp, "%lld", w->expected);
    size_t sl = strlen(w->stream);
    int hn = snprintf(w->head, sizeof w->head,
                      "*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$%zu\r\n%s\r\n$%d\r\n%s\r\n",
                      5 + opt.batch, g_sha, sl, w->stream, en, exp);
    w->iov[0] = (struct iovec){w->head, (size_t)hn};
    w->iov[1] = (struct iovec){g_redis_tail, g_redis_tail_len};
    w->iovn = 2;
}

/* The reply (n bytes in w->rb) to an append sent at w->t0. */
static void redis_append_done(worker *w, size_t n)
{
    int ok = 0, conflict = 0;
    if (w->rb[0] == ':') {
        long long v = strtoll(w->rb + 1, NULL, 10);
        if (v >= 0) {
            if (v != w->expected + opt.batch)
                report_once("bench_peers: redis: unexpected length %s%s\n", w->rb + 1, "");
            ok = 1;
            w->expected = v;
        } else {
            conflict = 1;
            w->expected = -1 - v;
        }
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "%.*s", (int)(n > 150 ? 150 : n), w->rb);
        report_once("bench_peers: redis: append: %s%s\n", msg, "");
    }
    record(w, w->t0, ok, (unsigned long long)opt.batch);
    uint64_t t = bench_now_ns();
    if (t >= g_win_start && t <= g_win_end) {
        if (conflict)
            w->conflicts++;
        else if (!ok)
            w->errors++;
    }
}

static void redis_list_keys(worker *w)
{
    char cursor[32] = "0", match[160];
    snprintf(match, sizeof match, "%s*", opt.prefix);
    size_t cap = 0;
    do {
        const char *a[8] = {"SCAN", cursor, "MATCH", match, "COUNT", "10000", "TYPE", "stream"};
        size_t n = redis_cmd(w, 8, a);
        /* *2 $len cursor *N $len key ... */
        const char *p = w->rb, *e = w->rb + n;
        if (*p != '*') {
            fprintf(stderr, "bench_peers: redis: SCAN: %.*s\n", (int)n, w->rb);
            exit(1);
        }
        p = memchr(p, '\n', (size_t)(e - p)) + 1; /* $len */
        p = memchr(p, '\n', (size_t)(e - p)) + 1; /* cursor */
        const char *ce = memchr(p, '\r', (size_t)(e - p));
        snprintf(cursor, sizeof cursor, "%.*s", (int)(ce - p), p);
        p = ce + 2;
        long items = strtol(p + 1, NULL, 10);
        p = memchr(p, '\n', (size_t)(e - p)) + 1;
        for (long i = 0; i < items; i++) {
            long kl = strtol(p + 1, NULL, 10);
            p = memchr(p, '\n', (size_t)(e - p)) + 1;
            if (w->nkeys == cap) {
                cap = cap ? cap * 2 : 256;
                w->keys = realloc(w->keys, cap * sizeof *w->keys);
            }
            w->keys[w->nkeys++] = strndup(p, (size_t)kl);
            p += kl + 2;
        }
    } while (strcmp(cursor, "0"));
    if (!w->nkeys) {
        fprintf(stderr, "bench_peers: redis: no stream matches %s\n", match);
        exit(1);
    }
    w->key_idx = (size_t)w->idx % w->nkeys;
    strcpy(w->last_id, "-");
}

/* XRANGE <stream> (<last id> + COUNT <page>. */
static void redis_read_prepare(worker *w)
{
    char start[80], count[32];
    if (!strcmp(w->last_id, "-"))
        strcpy(start, "-");
    else
        snprintf(start, sizeof start, "(%s", w->last_id);
    snprintf(count, sizeof count, "%ld", opt.page);
    const char *a[6] = {"XRANGE", w->keys[w->key_idx], start, "+", "COUNT", count};
    size_t len = (size_t)snprintf(w->head, sizeof w->head, "*6\r\n");
    size_t hlen = len;
    char *b = w->cmd;
    len = 0;
    for (int i = 0; i < 6; i++)
        resp_arg(&b, &len, &w->cmd_cap, a[i], strlen(a[i]));
    w->cmd = b;
    w->iov[0] = (struct iovec){w->head, hlen};
    w->iov[1] = (struct iovec){w->cmd, len};
    w->iovn = 2;
}

/* The reply (n bytes in w->rb) to an XRANGE sent at w->t0. */
static void redis_read_done(worker *w, size_t n)
{
    int ok = w->rb[0] == '*';
    unsigned long long entries = 0;
    if (ok) {
        entries = strtoull(w->rb + 1, NULL, 10);
        /* Find the last entry's id: walk the entries. */
        size_t pos = (size_t)((const char *)memchr(w->rb, '\n', n) - w->rb) + 1;
        for (unsigned long long i = 0; i < entries; i++) {
            /* *2\r\n $len\r\n id \r\n ... */
            const char *p = (const char *)memchr(w->rb + pos, '\n', n - pos) + 1;
            long il = strtol(p + 1, NULL, 10);
            p = (const char *)memchr(p, '\n', (size_t)(w->rb + n - p)) + 1;
            if (i + 1 == entries)
                snprintf(w->last_id, sizeof w->last_id, "%.*s", (int)il, p);
            resp_skip(w->rb, n, &pos);
        }
        w->read_since_wrap += entries;
        if (entries < (unsigned long long)opt.page) {
            w->key_idx = (w->key_idx + 1) % w->nkeys;
            strcpy(w->last_id, "-");
        }
        if (opt.range && w->read_since_wrap >= opt.range) {
            w->key_idx = (size_t)w->idx % w->nkeys;
            strcpy(w->last_id, "-");
            w->read_since_wrap = 0;
        }
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "%.*s", (int)(n > 150 ? 150 : n), w->rb);
        report_once("bench_peers: redis: read: %s%s\n", msg, "");
    }
    record(w, w->t0, ok, entries);
    uint64_t t = bench_now_ns();
    if (!ok && t >= g_win_start && t <= g_win_end)
        w->errors++;
}

/* Send what is left of the request in flight; 0 when EAGAIN stops it. */
static void redis_send_more(worker *w)
{
    while (w->iovn) {
        ssize_t r = writev(w->fd, w->iov + (2 - w->iovn), w->iovn);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return; /* EPOLLOUT resumes */
            die("redis send");
        }
        size_t left = (size_t)r;
        while (w->iovn && left >= w->iov[2 - w->iovn].iov_len) {
            left -= w->iov[2 - w->iovn].iov_len;
            w->iovn--;
        }
        if (w->iovn) {
            struct iovec *v = &w->iov[2 - w->iovn];
            v->iov_base = (char *)v->iov_base + left;
            v->iov_len -= left;
        }
    }
}

static void redis_start(worker *w)
{
    if (opt.mode == M_APPEND)
        redis_append_prepare(w);
    else
        redis_read_prepare(w);
    w->rb_len = 0;
    w->t0 = bench_now_ns();
    redis_send_more(w);
}

/* Read what has arrived; 1 when the whole reply is in. */
static int redis_recv(worker *w)
{
    for (;;) {
        if (w->rb_cap - w->rb_len < 65536) {
            w->rb_cap = w->rb_cap ? w->rb_cap * 2 : 262144;
            w->rb = realloc(w->rb, w->rb_cap);
            if (!w->rb)
                die("realloc");
        }
        size_t room = w->rb_cap - w->rb_len;
        ssize_t r = recv(w->fd, w->rb + w->rb_len, room, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (r <= 0) {
            fprintf(stderr, "bench_peers: redis closed the connection\n");
            exit(1);
        }
        w->rb_len += (size_t)r;
        size_t pos = 0;
        if (resp_skip(w->rb, w->rb_len, &pos)) {
            if (pos != w->rb_len) {
                fprintf(stderr, "bench_peers: redis: unexpected extra bytes\n");
                exit(1);
            }
            return 1;
        }
        if ((size_t)r < room)
            return 0; /* drained: edge-triggered epoll reports more */
    }
}

static worker *g_ws;
static pthread_barrier_t g_ready;

/* Redis: one thread, one epoll loop over every connection (as bench_http),
 * so the load generator costs Redis no more CPU than it costs Stele. */
static void *redis_loop_main(void *arg)
{
    (void)arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < opt.clients; i++) {
        worker *w = &g_ws[i];
        redis_init_conn(w);
        if (opt.mode == M_READ)
            redis_list_keys(w);
        fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = w};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, w->fd, &ev))
            die("epoll_ctl");
    }
    pthread_barrier_wait(&g_ready);
    while (!atomic_load(&g_go))
        usleep(100);
    int inflight = 0;
    for (int i = 0; i < opt.clients; i++) {
        redis_start(&g_ws[i]);
        inflight++;
    }
    uint64_t deadline = 0;
    struct epoll_event evs[512];
    while (inflight > 0) {
        int stop = atomic_load_explicit(&g_stop, memory_order_relaxed);
        if (stop && !deadline)
            deadline = bench_now_ns() + 30000000000ull;
        if (deadline && bench_now_ns() > deadline) {
            fprintf(stderr, "bench_peers: redis: %d requests still in flight after 30 s\n", inflight);
            break;
        }
        int n = epoll_wait(ep, evs, 512, 5);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            worker *w = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT)
                redis_send_more(w);
            if ((evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && redis_recv(w)) {
                if (opt.mode == M_APPEND)
                    redis_append_done(w, w->rb_len);
                else
                    redis_read_done(w, w->rb_len);
                inflight--;
                if (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
                    redis_start(w);
                    inflight++;
                }
            }
        }
    }
    for (int i = 0; i < opt.clients; i++)
        close(g_ws[i].fd);
    close(ep);
    return NULL;
}

/* ------------------------------------------------------------ the run */

/* PostgreSQL: a thread per connection (libpq's blocking calls), as an
 * application with a connection pool does. */
static void *pg_worker_main(void *arg)
{
    worker *w = arg;
    w->pg = pg_connect();
    pg_prepare(w->pg);
    pthread_barrier_wait(&g_ready);
    while (!atomic_load(&g_go))
        usleep(100);
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed))
        opt.mode == M_APPEND ? pg_append(w) : pg_read(w);
    PQfinish(w->pg);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "postgres"))
        opt.target = T_PG;
    else if (!strcmp(argv[1], "redis"))
        opt.target = T_REDIS;
    else
        usage();
    static const struct option lo[] = {
        {"conninfo", 1, 0, 'C'}, {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},
        {"mode", 1, 0, 'm'},     {"clients", 1, 0, 'c'},  {"batch", 1, 0, 'b'},
        {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'},   {"workload", 1, 0, 'W'},
        {"prefix", 1, 0, 'P'},   {"page", 1, 0, 'L'},     {"range", 1, 0, 'R'},
        {"data-bytes", 1, 0, 'D'}, {"schema", 1, 0, 'S'},
        {"server-pid", 1, 0, 'X'},  {0, 0, 0, 0}};
    optind = 2;
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'C': opt.conninfo = optarg; break;
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'm':
            if (!strcmp(optarg, "setup"))
                opt.mode = M_SETUP;
            else if (!strcmp(optarg, "append"))
                opt.mode = M_APPEND;
            else if (!strcmp(optarg, "read"))
                opt.mode = M_READ;
            else
                usage();
            break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'b': opt.batch = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'W': opt.workload = optarg; break;
        case 'P': opt.prefix = optarg; break;
        case 'L': opt.page = atol(optarg); break;
        case 'R': opt.range = strtoull(optarg, NULL, 10); break;
        case 'D': opt.data_bytes = atoi(optarg); break;
        case 'X': opt.server_pid = atoi(optarg); break;
        case 'S':
            if (!strcmp(optarg, "minimal"))
                opt.schema_minimal = 1;
            else if (strcmp(optarg, "seed"))
                usage();
            break;
        default: usage();
        }
    }
    if (optind != argc || opt.clients < 1 || opt.batch < 1 || opt.duration <= 0 || opt.warmup < 0 ||
        (opt.mode == M_READ && opt.page < 1) || (opt.target == T_REDIS && opt.mode == M_SETUP))
        usage();
    signal(SIGPIPE, SIG_IGN);
    if (opt.target == T_PG && opt.mode == M_SETUP)
        return pg_setup();

    char wl[64], pfx[64];
    if (!opt.workload) {
        if (opt.mode == M_READ)
            snprintf(wl, sizeof wl, "read%dx%ld", opt.clients, opt.page);
        else
            snprintf(wl, sizeof wl, "%dx%d", opt.clients, opt.batch);
        opt.workload = wl;
    }
    if (!opt.prefix) {
        snprintf(pfx, sizeof pfx, opt.mode == M_READ ? "bench" : "bench%ld", (long)getpid());
        opt.prefix = pfx;
    }
    g_data = bench_order_json("bench_peers", opt.data_bytes);
    if (opt.mode == M_APPEND) {
        size_t dl = strlen(g_data);
        if (opt.target == T_PG) {
            g_pg_array = malloc(2 + (size_t)opt.batch * (dl + 1));
            size_t n = 0;
            g_pg_array[n++] = '[';
            for (int i = 0; i < opt.batch; i++) {
                if (i)
                    g_pg_array[n++] = ',';
                memcpy(g_pg_array + n, g_data, dl);
                n += dl;
            }
            g_pg_array[n++] = ']';
            g_pg_array[n] = 0;
        } else {
            size_t cap = 0;
            for (int i = 0; i < opt.batch; i++)
                resp_arg(&g_redis_tail, &g_redis_tail_len, &cap, g_data, dl);
        }
    }

    worker *ws = calloc((size_t)opt.clients, sizeof *ws);
    g_ws = ws;
    int nthreads = opt.target == T_PG ? opt.clients : 1;
    pthread_barrier_init(&g_ready, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < opt.clients; i++) {
        worker *w = &ws[i];
        w->idx = i;
        w->fd = -1;
        snprintf(w->stream, sizeof w->stream, "%s-%s-%d", opt.prefix, opt.workload, i);
        if (opt.mode == M_READ && opt.target == T_PG && opt.range)
            w->from = opt.range / (unsigned long long)opt.clients * (unsigned long long)i;
    }
    pthread_t redis_thread;
    for (int i = 0; i < nthreads; i++) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 1u << 20);
        if (pthread_create(opt.target == T_PG ? &ws[i].th : &redis_thread, &at,
                           opt.target == T_PG ? pg_worker_main : redis_loop_main, &ws[i]))
            die("pthread_create");
        pthread_attr_destroy(&at);
    }
    pthread_barrier_wait(&g_ready);
    uint64_t t_begin = bench_now_ns();
    g_win_start = t_begin + (uint64_t)(opt.warmup * 1e9);
    g_win_end = g_win_start + (uint64_t)(opt.duration * 1e9);
    atomic_store(&g_go, 1);
    sleep_until(g_win_start);
    double cpu0 = bench_self_cpu_s(), srv0 = bench_proc_tree_cpu_s(opt.server_pid);
    unsigned long long mb0, mt0, mb1, mt1;
    bench_machine_cpu(&mb0, &mt0);
    sleep_until(g_win_end);
    double cpu1 = bench_self_cpu_s(), srv1 = bench_proc_tree_cpu_s(opt.server_pid);
    bench_machine_cpu(&mb1, &mt1);
    atomic_store(&g_stop, 1);
    bench_lats all = {0};
    unsigned long long events = 0, requests = 0, errors = 0, conflicts = 0;
    if (opt.target == T_REDIS)
        pthread_join(redis_thread, NULL);
    for (int i = 0; i < opt.clients; i++) {
        worker *w = &ws[i];
        if (opt.target == T_PG)
            pthread_join(w->th, NULL);
        for (size_t k = 0; k < w->lat.n; k++)
            bench_lat_add(&all, w->lat.v[k]);
        events += w->events;
        requests += w->requests;
        errors += w->errors;
        conflicts += w->conflicts;
        free(w->lat.v);
        free(w->rb);
        free(w->cmd);
        for (size_t k = 0; k < w->nkeys; k++)
            free(w->keys[k]);
        free(w->keys);
    }
    bench_lat_sort(&all);
    double secs = opt.duration;
    char srv_pct[32] = "n/a";
    if (opt.server_pid > 0)
        snprintf(srv_pct, sizeof srv_pct, "%.0f%%", 100.0 * (srv1 - srv0) / secs);
    double cpu_busy = mt1 > mt0 ? 100.0 * (double)(mb1 - mb0) / (double)(mt1 - mt0) : 0;
    /* Everything else the machine did meanwhile (other processes, and the
     * kernel's work not charged to us or the server), 100% = one core:
     * a measure of how disturbed this result is. */
    char other_pct[32] = "n/a";
    if (opt.server_pid > 0)
        snprintf(other_pct, sizeof other_pct, "%.0f%%",
                 100.0 * ((double)(mb1 - mb0) / (double)sysconf(_SC_CLK_TCK) - (cpu1 - cpu0) -
                          (srv1 - srv0)) / secs);
    printf("http workload=%s target=%s events_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
           "requests_per_s=%.0f events=%llu requests=%llu errors=%llu conflicts=%llu "
           "seconds=%.2f clients=%d batch=%ld client_cpu=%.0f%% server_cpu=%s other_cpu=%s cpu_busy=%.0f%%\n",
           opt.workload, opt.target == T_PG ? "postgres" : "redis", (double)events / secs,
           bench_lat_ms(&all, 0.50), bench_lat_ms(&all, 0.99), bench_lat_ms(&all, 0.999), (double)requests / secs,
           events, requests, errors, conflicts, secs, opt.clients,
           opt.mode == M_READ ? opt.page : (long)opt.batch, 100.0 * (cpu1 - cpu0) / secs,
           srv_pct, other_pct, cpu_busy);
    fflush(stdout);
    free(all.v);
    free(ws);
    free(g_data);
    free(g_pg_array);
    free(g_redis_tail);
    return 0;
}
