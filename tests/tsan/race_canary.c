/*
 * race_canary.c - a program with one deliberate data race, built only in the
 * ThreadSanitizer build (STELE_TSAN). The tsan_canary test expects TSan's
 * report from it: it shows that the build is instrumented and that TSan
 * reports races with the options make test-tsan uses, so a clean run of the
 * real tests means something.
 */
#include <pthread.h>
#include <stdio.h>

static long counter; /* written by two threads without a lock: the race */

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        counter++;
    return NULL;
}

int main(void)
{
    pthread_t a, b;
    pthread_create(&a, NULL, bump, NULL);
    pthread_create(&b, NULL, bump, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("counter=%ld\n", counter);
    return 0;
}
