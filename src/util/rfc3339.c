/*
 * rfc3339.c - RFC 3339 date-times for the public API (stele_time_parse,
 * stele_time_format): the time bounds of queries and temporal reads, in
 * the server's query strings and the CLI's options.
 *
 * Accepted: YYYY-MM-DDTHH:MM:SS, optional fraction of a second (1..9
 * digits), then Z or a UTC offset +HH:MM / -HH:MM. 't' and 'z' may be
 * lower case and a space may separate date and time (RFC 3339 allows
 * both). A space where the offset's sign belongs is read as '+': in a URL
 * query string an unencoded '+' arrives as a space. Years 0000-9999;
 * leap seconds (second 60) are refused. Proleptic Gregorian calendar.
 */
#include <stdio.h>
#include <string.h>

#include "stele.h"
#include "util/util.h"

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/*
 * Parse an RFC 3339 date-time into seconds since the Unix epoch and
 * nanoseconds (0..999999999). 0, or -1 with the reason in err.
 */
static int parse(const char *s, int64_t *secs, int32_t *nanos, char *err, size_t errlen)
{
    int y, mo, d, h, mi, se;
    size_t n = strlen(s);
    if (n < 19 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
        digits(s + 17, 2, &se)) {
        snprintf(err, errlen, "expected YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)");
        return -1;
    }
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12) {
        snprintf(err, errlen, "month %02d is out of range", mo);
        return -1;
    }
    if (d < 1 || (unsigned)d > mdays[mo - 1] + (mo == 2 && leap)) {
        snprintf(err, errlen, "day %02d is out of range for %04d-%02d", d, y, mo);
        return -1;
    }
    if (h > 23 || mi > 59 || se > 59) {
        snprintf(err, errlen, "%s %02d is out of range%s",
                 h > 23 ? "hour" : mi > 59 ? "minute" : "second", h > 23 ? h : mi > 59 ? mi : se,
                 se == 60 ? " (leap seconds are not supported)" : "");
        return -1;
    }
    const char *p = s + 19;
    int32_t ns = 0;
    if (*p == '.') {
        p++;
        int k = 0;
        for (; p[k] >= '0' && p[k] <= '9'; k++)
            if (k < 9)
                ns = ns * 10 + (p[k] - '0');
        if (k == 0) {
            snprintf(err, errlen, "a '.' must be followed by digits");
            return -1;
        }
        if (k > 9) {
            snprintf(err, errlen, "more than 9 fractional digits");
            return -1;
        }
        for (int i = k; i < 9; i++)
            ns *= 10;
        p += k;
    }
    int off = 0;
    if ((p[0] == 'Z' || p[0] == 'z') && p[1] == 0) {
        off = 0;
    } else if ((p[0] == '+' || p[0] == '-' || p[0] == ' ') && strlen(p) == 6 && p[3] == ':') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || digits(p + 4, 2, &om)) {
            snprintf(err, errlen, "malformed UTC offset '%s'", p);
            return -1;
        }
        if (oh > 23 || om > 59) {
            snprintf(err, errlen, "UTC offset '%s' is out of range", p);
            return -1;
        }
        off = (oh * 60 + om) * 60 * (p[0] == '-' ? -1 : 1);
    } else {
        snprintf(err, errlen, "expected 'Z' or a UTC offset (+HH:MM, -HH:MM) after the time%s",
                 *p ? "" : ", got nothing");
        return -1;
    }
    *secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se - off;
    *nanos = ns;
    return 0;
}

int stele_time_parse(const char *text, int round_up, int64_t *us)
{
    err_clear();
    if (!text || !us)
        return err_set(STELE_EINVAL, "%s is NULL", !text ? "text" : "us");
    char err[160];
    int64_t secs;
    int32_t ns;
    if (parse(text, &secs, &ns, err, sizeof err))
        return err_set(STELE_EINVAL, "'%.100s' is not an RFC 3339 time: %s", text, err);
    *us = secs * 1000000 + ns / 1000 + (round_up && ns % 1000 ? 1 : 0);
    return 0;
}

/* The civil date of a day count (days since 1970-01-01). */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t year = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(year + (*m <= 2));
}

void stele_time_format(int64_t us, char out[32])
{
    const int64_t min_us = -62167219200LL * 1000000;
    const int64_t max_us = 253402300799LL * 1000000 + 999999;
    if (us < min_us)
        us = min_us;
    if (us > max_us)
        us = max_us;
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    /* The clamping above keeps every field in range (GCC cannot see it). */
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%04d-%02u-%02uT%02d:%02d:%02d.%06dZ", y % 10000, m % 100, d % 100,
             (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), (int)frac);
    memcpy(out, tmp, 28);
}
