/*
 * targets.c - the list of target types a rule may name in "target.type".
 * Each type lives in its own file behind target_ops (rules_int.h); a type
 * built without its client library (CMake options) is simply absent, and
 * a rule naming it is refused with the list of known types.
 */
#include <string.h>

#include "rules/rules_int.h"

static const target_ops *const all[] = {
    &target_webhook,
    &target_stream,
    &target_kinesis,
    &target_dynamodb,
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
