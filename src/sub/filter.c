/*
 * filter.c - server-side filters on events of $all: stream name prefixes,
 * categories, exact event types, type prefixes, regular expressions on the
 * stream name and the type, tags, and "no system streams". Every given
 * criterion must match; within a list, any entry.
 */
#include <stdlib.h>
#include <string.h>

#include "sub/sub_int.h"
#include "util/util.h"

static int copy_list(const char *what, const char *const *in, size_t n, str_list *out)
{
    if (n == 0)
        return 0;
    if (!in)
        return err_set(STELE_EINVAL, "filter: %s is NULL but its count is %zu", what, n);
    if (n > FILTER_MAX_ENTRIES)
        return err_set(STELE_EINVAL, "filter: %zu %s (at most %u)", n, what, FILTER_MAX_ENTRIES);
    out->v = calloc(n, sizeof *out->v);
    if (!out->v)
        return err_set(STELE_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!in[i])
            return err_set(STELE_EINVAL, "filter: %s entry %zu is NULL", what, i);
        size_t len = strnlen(in[i], 256);
        size_t at;
        const char *why = len == 0 ? "is empty" : len > 255 ? "is longer than 255 bytes" : NULL;
        if (why)
            return err_set(STELE_EINVAL, "filter: %s entry %zu %s", what, i, why);
        if ((why = utf8_check_name(in[i], len, &at)))
            return err_set(STELE_EINVAL, "filter: %s entry %zu: %s at byte %zu", what, i, why, at);
        if (!(out->v[i] = strdup(in[i])))
            return err_set(STELE_ENOMEM, "out of memory");
        out->n++;
    }
    return 0;
}

static void free_list(str_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int compile(const char *what, const char *text, regex_t *re, int *has)
{
    if (!text)
        return 0;
    size_t len = strnlen(text, FILTER_MAX_REGEX + 1);
    if (len == 0)
        return err_set(STELE_EINVAL, "filter: %s is empty", what);
    if (len > FILTER_MAX_REGEX)
        return err_set(STELE_EINVAL, "filter: %s is longer than %u bytes", what,
                       FILTER_MAX_REGEX);
    int rc = regcomp(re, text, REG_EXTENDED | REG_NOSUB);
    if (rc) {
        char msg[256];
        regerror(rc, re, msg, sizeof msg);
        return err_set(STELE_EINVAL, "filter: %s '%s': %s", what, text, msg);
    }
    *has = 1;
    return 0;
}

int sub_filter_new(const stele_filter *in, sub_filter **out)
{
    *out = NULL;
    if (!in)
        return 0;
    if (in->exclude_system != 0 && in->exclude_system != 1)
        return err_set(STELE_EINVAL, "filter: exclude_system is %d (0 or 1)", in->exclude_system);
    sub_filter *f = calloc(1, sizeof *f);
    if (!f)
        return err_set(STELE_ENOMEM, "out of memory");
    f->exclude_system = in->exclude_system;
    int rc = copy_list("stream prefixes", in->stream_prefixes, in->n_stream_prefixes,
                       &f->stream_prefixes);
    if (rc == 0)
        rc = copy_list("categories", in->categories, in->n_categories, &f->categories);
    if (rc == 0)
        rc = copy_list("types", in->types, in->n_types, &f->types);
    if (rc == 0)
        rc = copy_list("type prefixes", in->type_prefixes, in->n_type_prefixes,
                       &f->type_prefixes);
    if (rc == 0)
        rc = copy_list("tags", in->tags, in->n_tags, &f->tags);
    if (rc == 0)
        rc = compile("stream regex", in->stream_regex, &f->stream_re, &f->has_stream_re);
    if (rc == 0)
        rc = compile("type regex", in->type_regex, &f->type_re, &f->has_type_re);
    if (rc) {
        sub_filter_free(f);
        return rc;
    }
    if (!f->stream_prefixes.n && !f->categories.n && !f->types.n && !f->type_prefixes.n &&
        !f->tags.n && !f->has_stream_re && !f->has_type_re && !f->exclude_system) {
        sub_filter_free(f);
        return 0;
    }
    *out = f;
    return 0;
}

void sub_filter_free(sub_filter *f)
{
    if (!f)
        return;
    free_list(&f->stream_prefixes);
    free_list(&f->categories);
    free_list(&f->types);
    free_list(&f->type_prefixes);
    free_list(&f->tags);
    if (f->has_stream_re)
        regfree(&f->stream_re);
    if (f->has_type_re)
        regfree(&f->type_re);
    free(f);
}

static int any_prefix(const str_list *l, const char *s, size_t len)
{
    for (size_t i = 0; i < l->n; i++) {
        size_t n = strlen(l->v[i]);
        if (n <= len && memcmp(s, l->v[i], n) == 0)
            return 1;
    }
    return 0;
}

static int any_equal(const str_list *l, const char *s, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->v[i]) == len && memcmp(s, l->v[i], len) == 0)
            return 1;
    return 0;
}

int sub_filter_match(const sub_filter *f, const stele_event *e)
{
    if (!f)
        return 1;
    if (f->exclude_system && e->stream_len && e->stream[0] == '$')
        return 0;
    if (f->stream_prefixes.n && !any_prefix(&f->stream_prefixes, e->stream, e->stream_len))
        return 0;
    if (f->categories.n) {
        size_t clen = stream_category_len(e->stream, e->stream_len);
        if (!any_equal(&f->categories, e->stream, clen))
            return 0;
    }
    if (f->types.n && !any_equal(&f->types, e->type, e->type_len))
        return 0;
    if (f->type_prefixes.n && !any_prefix(&f->type_prefixes, e->type, e->type_len))
        return 0;
    if (f->tags.n) {
        int hit = 0;
        for (size_t i = 0; i < e->ntags && !hit; i++)
            hit = any_equal(&f->tags, e->tags[i], strlen(e->tags[i]));
        if (!hit)
            return 0;
    }
    if (f->has_stream_re && regexec(&f->stream_re, e->stream, 0, NULL, 0) != 0)
        return 0;
    if (f->has_type_re && regexec(&f->type_re, e->type, 0, NULL, 0) != 0)
        return 0;
    return 1;
}
