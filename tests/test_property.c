/*
 * test_property.c - model-based property test of the public API: the
 * single-stream operations of property_model.h (appends with every kind of
 * expected revision, idempotent retries, id conflicts, soft deletes,
 * tombstones, paged reads, heads, reopens) against an in-memory model,
 * whose comment states the semantics checked (A1-A9). The multi-stream
 * operations run in test_property_multi.c. The store comes from t_store():
 * STELE_TEST_STORE picks the backend (a fresh temporary directory by
 * default). Replay a failure with TEST_SEED=n.
 */
#include "property_model.h"

int main(void)
{
    t_seed();
    quick = getenv("TEST_QUICK") != NULL && atoi(getenv("TEST_QUICK")) != 0;
    init_pools();
    for (run = 0; run < NRUNS; run++)
        one_run(run % 2 == 0, NULL); /* runs 0 and 2 use 64 KiB segments */
    model_reset();
    return t_done("test_property", NRUNS);
}
