/*
 * sub_int.h - what the subscription modules share: compiled filters on
 * events (used by catch-up subscriptions and by consumer groups).
 */
#ifndef STELE_SUB_INT_H
#define STELE_SUB_INT_H

#include <regex.h>
#include <stddef.h>

#include "stele.h"

#define FILTER_MAX_ENTRIES 64u
#define FILTER_MAX_REGEX 1024u

typedef struct str_list {
    char **v;
    size_t n;
} str_list;

typedef struct sub_filter {
    str_list stream_prefixes, categories, types, type_prefixes, tags;
    regex_t stream_re, type_re;
    int has_stream_re, has_type_re;
    int exclude_system;
} sub_filter;

/* Check and compile `in`. *out is NULL if `in` is NULL or selects
 * everything. 0, EINVAL (with the reason) or ENOMEM. */
int sub_filter_new(const stele_filter *in, sub_filter **out);
/* 1 if the event passes (a NULL filter passes everything). */
int sub_filter_match(const sub_filter *f, const stele_event *e);
void sub_filter_free(sub_filter *f);

#endif
