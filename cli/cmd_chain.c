/*
 * cmd_chain.c - the hash chain from the command line (docs/security.md,
 * "The hash chain"):
 *
 *   stele keygen FILE               a new Ed25519 signing key for
 *                                   `stele serve --signing-key FILE`; the
 *                                   public key goes to FILE.pub and stdout
 *   stele chain head                the server's chain head (GET /chain/head)
 *   stele chain proof POSITION      one event's proof (GET /chain/proof)
 *   stele chain export FROM TO      an export for auditors (GET /chain/export)
 *   stele verify FILE [--public-key KEY]
 *                                   check an export offline, without the store
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "stele.h"

static const char keygen_synopsis[] = "stele keygen FILE";
static const char verify_synopsis[] = "stele verify FILE [--public-key FILE|HEX]";
static const char chain_synopsis[] =
    "stele chain head | proof POSITION | export FROM TO [--out FILE] [--server URL]";

int cmd_keygen(int argc, char **argv)
{
    if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        printf("usage: %s\n\n"
               "Makes an Ed25519 key for signing the hash chain's head: its secret seed goes\n"
               "to FILE (64 hex digits, mode 0600; it must not exist), its public key to\n"
               "FILE.pub and to stdout. Give FILE to `stele serve --signing-key FILE`, and\n"
               "the public key to auditors for `stele verify --public-key`.\n",
               keygen_synopsis);
        return CLI_OK;
    }
    if (argc != 3 || argv[2][0] == '-')
        return cli_usage_error("keygen", keygen_synopsis, "expected one FILE");
    char pub[65], path[4200];
    if (stele_chain_keygen(argv[2], pub)) {
        fprintf(stderr, "stele keygen: %s\n", stele_errmsg());
        return CLI_ESERVER;
    }
    snprintf(path, sizeof path, "%s.pub", argv[2]);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%s\n", pub) < 0 || fclose(f) != 0) {
        fprintf(stderr, "stele keygen: write %s: %s\n", path, strerror(errno));
        return CLI_ESERVER;
    }
    printf("%s\n", pub);
    return CLI_OK;
}

/* --public-key: a file of 64 hex digits, or the digits themselves. */
static int load_public_key(const char *arg, uint8_t out[32])
{
    char text[200] = "";
    FILE *f = fopen(arg, "r");
    if (f) {
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = 0;
        fclose(f);
    } else {
        snprintf(text, sizeof text, "%s", arg);
    }
    text[strcspn(text, " \r\n")] = 0;
    if (strlen(text) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(text + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", text[2 * i]) ||
            !strchr("0123456789abcdefABCDEF", text[2 * i + 1]))
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static void print_hex(const char *label, const uint8_t *p, size_t n)
{
    printf("%-12s", label);
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
    putchar('\n');
}

int cmd_verify(int argc, char **argv)
{
    const char *file = NULL, *key = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v;
        int r;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: %s\n\n"
                   "Verifies an export of the hash chain (stele chain export, GET\n"
                   "/chain/export or /chain/proof) without the store: every record's checksum,\n"
                   "the chain from the export's first commit to its head, and with\n"
                   "--public-key (the FILE.pub of stele keygen, or its 64 hex digits) the\n"
                   "head's Ed25519 signature. Any change to the export makes it fail.\n"
                   "Exit status: 0 verified, 1 it does not verify, 2 bad arguments or file.\n",
                   verify_synopsis);
            return CLI_OK;
        }
        if ((r = cli_opt("verify", argc, argv, &i, "--public-key", &v))) {
            if (r < 0)
                return CLI_EUSAGE;
            key = v;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("verify", verify_synopsis, "unknown option '%s'", a);
        } else if (file) {
            return cli_usage_error("verify", verify_synopsis, "unexpected argument '%s'", a);
        } else {
            file = a;
        }
    }
    if (!file)
        return cli_usage_error("verify", verify_synopsis, "missing FILE");
    uint8_t pk[32];
    if (key && load_public_key(key, pk))
        return cli_usage_error("verify", verify_synopsis,
                               "--public-key: expected a file of 64 hex digits, or the digits");
    cli_buf b = {0};
    if (cli_buf_slurp(&b, file)) {
        fprintf(stderr, "stele verify: %s: %s\n", file, strerror(errno));
        return CLI_EUSAGE;
    }
    stele_chain_verified v;
    int rc = stele_chain_verify(b.p ? b.p : "", b.len, key ? pk : NULL, &v);
    cli_buf_free(&b);
    if (rc) {
        fprintf(stderr, "stele verify: %s: %s\n", file, stele_errmsg());
        return rc == STELE_ECORRUPT ? CLI_ESERVER : CLI_EUSAGE;
    }
    printf("verified: %llu events (positions %llu..%llu), linked through %llu commits to the "
           "head\n",
           (unsigned long long)v.events, (unsigned long long)v.first,
           (unsigned long long)v.last, (unsigned long long)v.commits);
    printf("%-12s%llu\n%-12s%llu\n", "commits", (unsigned long long)v.head.commits, "position",
           (unsigned long long)v.head.position);
    print_hex("hash", v.head.hash, 32);
    if (v.is_signed)
        print_hex("signed by", v.head.public_key, 32);
    else
        printf("%-12snot checked (no --public-key): only the chain's consistency is shown\n",
               "signature");
    return CLI_OK;
}

static int parse_pos(const char *s, unsigned long long *out)
{
    char *end;
    if (!*s || *s < '0' || *s > '9')
        return -1;
    *out = strtoull(s, &end, 10);
    return *end ? -1 : 0;
}

int cmd_chain(int argc, char **argv)
{
    cli_common co = {0};
    const char *args[3] = {0}, *out = NULL;
    int nargs = 0, r;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: %s\n\n"
                   "The server's hash chain (docs/security.md):\n"
                   "  head               the chain head: commits, position, hash, and its\n"
                   "                     signature when the server has --signing-key\n"
                   "  proof POSITION     the proof linking one event to the head\n"
                   "  export FROM TO     events FROM..TO with their chain data (at most 10000\n"
                   "                     positions a request), for `stele verify`\n\n"
                   "Options:\n"
                   "  --out FILE         write the proof or export to FILE (default: stdout)\n"
                   "  --server URL       the server (default: $STELE_SERVER, else %s)\n",
                   chain_synopsis, CLI_DEFAULT_SERVER);
            return CLI_OK;
        }
        if ((r = cli_opt("chain", argc, argv, &i, "--out", &v))) {
            if (r < 0)
                return CLI_EUSAGE;
            out = v;
        } else if ((r = cli_common_opt(&co, "chain", argc, argv, &i))) {
            if (r < 0)
                return CLI_EUSAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("chain", chain_synopsis, "unknown option '%s'", a);
        } else if (nargs == 3) {
            return cli_usage_error("chain", chain_synopsis, "unexpected argument '%s'", a);
        } else {
            args[nargs++] = a;
        }
    }
    char path[128];
    unsigned long long p1, p2;
    if (nargs == 1 && !strcmp(args[0], "head")) {
        snprintf(path, sizeof path, "/chain/head");
    } else if (nargs == 2 && !strcmp(args[0], "proof")) {
        if (parse_pos(args[1], &p1))
            return cli_usage_error("chain", chain_synopsis, "POSITION must be a number");
        snprintf(path, sizeof path, "/chain/proof?position=%llu", p1);
    } else if (nargs == 3 && !strcmp(args[0], "export")) {
        if (parse_pos(args[1], &p1) || parse_pos(args[2], &p2))
            return cli_usage_error("chain", chain_synopsis, "FROM and TO must be numbers");
        snprintf(path, sizeof path, "/chain/export?from=%llu&to=%llu", p1, p2);
    } else {
        return cli_usage_error("chain", chain_synopsis, "expected head, proof or export");
    }
    cli_client *c = cli_client_open(co.server);
    if (!c)
        return CLI_ECONNECT;
    cli_response resp;
    int rc = cli_request(c, "GET", path, NULL, NULL, 0, NULL, &resp);
    if (rc == CLI_OK) {
        if (resp.status < 200 || resp.status >= 300) {
            rc = cli_report_error(&resp);
        } else {
            FILE *f = out ? fopen(out, "w") : stdout;
            if (!f) {
                fprintf(stderr, "stele chain: %s: %s\n", out, strerror(errno));
                rc = CLI_EUSAGE;
            } else {
                fwrite(resp.body.p ? resp.body.p : "", 1, resp.body.len, f);
                fputc('\n', f);
                if (out && fclose(f) != 0) {
                    fprintf(stderr, "stele chain: %s: %s\n", out, strerror(errno));
                    rc = CLI_ESERVER;
                }
            }
        }
    }
    rc = cli_finish_output("chain", rc);
    cli_buf_free(&resp.body);
    cli_client_close(c);
    return rc;
}
