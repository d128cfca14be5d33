/*
 * time.c - the two clocks of libstele. Wall time (CLOCK_REALTIME) stamps
 * events and UUIDv7s; it may jump, so durations and timeouts use the
 * monotonic clock instead. clock_gettime cannot fail for these clock ids
 * with a valid pointer, so neither function reports errors.
 */
#include <time.h>

#include "util/util.h"

int64_t time_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
