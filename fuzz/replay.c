/*
 * replay.c - a main for the fuzz drivers without libFuzzer: runs
 * LLVMFuzzerTestOneInput once on every file of the directories (or files)
 * given, in name order, so `make test` replays each checked-in corpus with
 * whatever compiler and sanitizers the build uses (gcc with ASan+UBSan in
 * the test-asan pass). A crash, a sanitizer report or a driver's own check
 * ends the process with a failure; an empty or missing corpus is a failure
 * too, so a test can never pass by finding nothing to replay.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *p = malloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            p = realloc(p, cap);
        }
        if (!p) {
            fclose(f);
            return -1;
        }
        size_t k = fread(p + n, 1, cap - n, f);
        if (k == 0)
            break;
        n += k;
    }
    fclose(f);
    /* An exact-size copy, so ASan sees a read one byte past the input. */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(p);
        return -1;
    }
    memcpy(exact, p, n);
    free(p);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static long replay_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s does not exist\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return replay_file(path) == 0 ? 1 : -1;
    DIR *d = opendir(path);
    if (!d)
        return -1;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *names);
            if (!nn)
                break;
            names = nn;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    long done = 0;
    for (size_t i = 0; i < n; i++) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        if (replay_file(full) == 0)
            done++;
        else
            done = -1000000;
        free(names[i]);
    }
    free(names);
    return done;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    long total = 0;
    for (int i = 1; i < argc; i++) {
        long n = replay_path(argv[i]);
        if (n <= 0) {
            fprintf(stderr, "replay: nothing replayed from %s\n", argv[i]);
            return 1;
        }
        total += n;
    }
    printf("replay: %ld inputs, no failure\n", total);
    return 0;
}
