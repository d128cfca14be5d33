/*
 * test_errors.c - the error vocabulary (src/util/errors.c): its invariants,
 * docs/errors.md listing exactly the same rows, and every server call site
 * that spells a code and a status by hand agreeing with the table.
 *
 * The doors themselves (the same failure giving the same code over HTTP and
 * gRPC against one server) are tests/grpc/test_errors_doors.js.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *grpc_name(int g)
{
    static const char *const n[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"};
    return g >= 0 && g <= 16 ? n[g] : "?";
}

static int test_invariants(void)
{
    size_t n;
    const stele_error_info *t = stele_error_table(&n);
    CHECK(n > 20);
    for (size_t i = 0; i < n; i++) {
        CHECK(t[i].code && t[i].when && *t[i].when);
        for (const char *p = t[i].code; *p; p++)
            CHECK(isupper((unsigned char)*p) || *p == '_');
        CHECK(t[i].http_status >= 400 && t[i].http_status <= 599);
        CHECK(t[i].grpc_status >= 1 && t[i].grpc_status <= 16);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(t[i].code, t[j].code) != 0);
        CHECK(stele_error_lookup(t[i].code) == &t[i]);
        /* An rc's own row comes first among the rows with that rc. */
        if (t[i].rc)
            CHECK(stele_error_info_of(t[i].rc)->rc == t[i].rc &&
                  stele_error_info_of(t[i].rc) <= &t[i]);
    }
    /* Every STELE_E* code has its row. */
#define HAS_ROW_(name, num, text)                                               \
    do {                                                                        \
        const stele_error_info *e_ = stele_error_info_of(num);                  \
        if (e_->rc != (num))                                                    \
            fprintf(stderr, "no vocabulary row for STELE_%s\n", #name);         \
        CHECK(e_->rc == (num));                                                 \
    } while (0);
    STELE_ERRORS(HAS_ROW_)
#undef HAS_ROW_
    /* What the KurrentDB clients rely on (tests/grpc pins it on the wire). */
    const stele_error_info *e = stele_error_info_of(STELE_EWRONGREV);
    CHECK(!strcmp(e->code, "WRONG_EXPECTED_REVISION") && e->http_status == 409 &&
          e->grpc_status == 9 && !strcmp(e->exception, "wrong-expected-version"));
    e = stele_error_info_of(STELE_EDELETED);
    CHECK(!strcmp(e->code, "STREAM_DELETED") && e->http_status == 410 && e->grpc_status == 9 &&
          !strcmp(e->exception, "stream-deleted"));
    e = stele_error_info_of(STELE_ETOOBIG);
    CHECK(e->http_status == 413 && e->grpc_status == 3 &&
          !strcmp(e->exception, "maximum-append-size-exceeded"));
    e = stele_error_lookup("ACCESS_DENIED");
    CHECK(e && e->http_status == 403 && e->grpc_status == 7 &&
          !strcmp(e->exception, "access-denied"));
    CHECK(stele_error_lookup("NO_SUCH_CODE") == NULL && stele_error_lookup(NULL) == NULL);
    CHECK(!strcmp(stele_error_info_of(-999)->code, "INTERNAL"));
    return 1;
}

/* The directory of this source file's project: __FILE__ is
 * <root>/tests/test_errors.c. */
static void root_path(char *out, size_t cap, const char *rel)
{
    const char *f = __FILE__;
    const char *slash = strrchr(f, '/');
    size_t n = slash ? (size_t)(slash - f) : 0;
    snprintf(out, cap, "%.*s/../%s", (int)n, f, rel);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return s;
}

/* docs/errors.md's table has one line per row, in the table's order. */
static int test_docs(void)
{
    char path[4096];
    root_path(path, sizeof path, "docs/errors.md");
    char *doc = slurp(path, NULL);
    CHECK(doc != NULL);
    if (!doc)
        return 0;
    size_t n;
    const stele_error_info *t = stele_error_table(&n);
    const char *at = doc;
    for (size_t i = 0; i < n; i++) {
        char rc[48], line[512];
        if (t[i].rc)
            snprintf(rc, sizeof rc, "`STELE_E%s`", stele_errname(t[i].rc));
        else
            snprintf(rc, sizeof rc, "-");
        snprintf(line, sizeof line, "| `%s` | %s | %d | %d %s | %s%s%s | %s |\n", t[i].code, rc,
                 t[i].http_status, t[i].grpc_status, grpc_name(t[i].grpc_status),
                 t[i].exception ? "`" : "", t[i].exception ? t[i].exception : "-",
                 t[i].exception ? "`" : "", t[i].when);
        const char *hit = strstr(at, line);
        if (!hit)
            fprintf(stderr, "docs/errors.md lacks (after the previous row):\n%s", line);
        CHECK(hit != NULL);
        if (hit)
            at = hit + strlen(line);
    }
    /* ... and no row the table does not have. */
    size_t rows = 0;
    for (const char *p = doc; (p = strstr(p, "\n| `")); p++)
        rows++;
    if (rows != n)
        fprintf(stderr, "docs/errors.md has %zu rows, the table %zu\n", rows, n);
    CHECK(rows == n);
    free(doc);
    return 1;
}

/* Call sites in the server's .c files that spell a status and a code together:
 * `(c, 404, "NOT_FOUND"`, `.status = 403, .code = "ACCESS_DENIED"`,
 * `ref->status = 401; ref->code = "UNAUTHENTICATED"`. Each
 * code must be in the table, with that status. */
static int check_sites(const char *file, const char *s, int *sites)
{
    int bad = 0;
    for (const char *p = s; *p; p++) {
        int status = 0;
        const char *q = NULL;
        if (p[0] == ',' && p[1] == ' ' && isdigit((unsigned char)p[2]) &&
            isdigit((unsigned char)p[3]) && isdigit((unsigned char)p[4]) && p[5] == ',') {
            status = (p[2] - '0') * 100 + (p[3] - '0') * 10 + (p[4] - '0');
            q = p + 6;
        } else if ((!strncmp(p, ".status = ", 10) || !strncmp(p, ">status = ", 10)) &&
                   isdigit((unsigned char)p[10])) {
            /* `.status = 403, .code = "..."` and `ref->status = 401;
             * ref->code = "..."` */
            status = atoi(p + 10);
            q = strstr(p, "code = ");
            if (!q || q - p > 40)
                continue;
            q += 6;
        } else {
            continue;
        }
        while (*q == ' ' || *q == '\n')
            q++;
        if (*q != '"' || !isupper((unsigned char)q[1]))
            continue;
        char code[64];
        size_t k = 0;
        for (q++; *q != '"' && k + 1 < sizeof code; q++)
            code[k++] = *q;
        code[k] = 0;
        if (status < 400 || strchr(code, ' '))
            continue;
        (*sites)++;
        const stele_error_info *e = stele_error_lookup(code);
        if (!e || e->http_status != status) {
            int line = 1;
            for (const char *r = s; r < p; r++)
                line += *r == '\n';
            fprintf(stderr, "%s:%d: %d %s %s\n", file, line, status, code,
                    e ? "has another status in the error vocabulary"
                      : "is not in the error vocabulary (src/util/errors.c)");
            bad++;
        }
    }
    return bad;
}

static int test_call_sites(void)
{
    char dir[4096];
    root_path(dir, sizeof dir, "server");
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d)
        return 0;
    int sites = 0, bad = 0, files = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 3 || strcmp(de->d_name + n - 2, ".c"))
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        char *s = slurp(path, NULL);
        CHECK(s != NULL);
        if (!s)
            continue;
        files++;
        bad += check_sites(de->d_name, s, &sites);
        free(s);
    }
    closedir(d);
    printf("call sites: %d in %d files, %d disagree with the table\n", sites, files, bad);
    CHECK(files > 10 && sites > 50);
    CHECK(bad == 0);
    return 1;
}

int main(void)
{
    int passed = 0;
    passed += test_invariants();
    passed += test_docs();
    passed += test_call_sites();
    return t_done("test_errors", passed);
}
