/*
 * targets.c - the list of target types a rule may name in "target.type".
 * Each type lives in its own file behind target_ops (rules_int.h); a type
 * built without its client library (CMake options) is simply absent, and
 * a rule naming it is refused with the list of known types.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_int.h"

static const target_ops *const all[] = {
    &target_webhook,
    &target_stream,
#ifdef STELE_WITH_POSTGRES
    &target_postgres,
#endif
#ifdef STELE_WITH_NATS
    &target_nats,
#endif
#ifdef STELE_WITH_RABBITMQ
    &target_rabbitmq,
#endif
    NULL,
};

const target_ops *target_find(const char *type)
{
    for (size_t i = 0; all[i]; i++)
        if (!strcmp(all[i]->type, type))
            return all[i];
    return NULL;
}

static char names[256];
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void names_fill(void)
{
    size_t n = 0;
    for (size_t i = 0; all[i] && n + 40 < sizeof names; i++) {
        size_t k = strlen(all[i]->type);
        if (i)
            names[n++] = ',', names[n++] = ' ';
        names[n++] = '"';
        memcpy(names + n, all[i]->type, k);
        n += k;
        names[n++] = '"';
    }
    names[n] = 0;
}

const char *target_names(void)
{
    pthread_once(&names_once, names_fill);
    return names;
}

int target_secret(const char *env, const char *file, char *out, size_t cap, char err[256])
{
    out[0] = 0;
    if (env) {
        const char *v = getenv(env);
        if (!v) {
            snprintf(err, 256, "environment variable %s is not set", env);
            return -1;
        }
        snprintf(out, cap, "%s", v);
    } else if (file) {
        FILE *f = fopen(file, "r");
        if (!f) {
            snprintf(err, 256, "file %s cannot be read", file);
            return -1;
        }
        size_t n = fread(out, 1, cap - 1, f);
        fclose(f);
        out[n] = 0;
        out[strcspn(out, "\r\n")] = 0;
    }
    return 0;
}
