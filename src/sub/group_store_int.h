/*
 * group_store_int.h - internal entry points of group_store.c for the fuzz
 * drivers (fuzz/fuzz_group_store.c): the consumer group records' decoder
 * is a static function there, reached through this door instead of a copy.
 */
#ifndef STELE_SUB_GROUP_STORE_INT_H
#define STELE_SUB_GROUP_STORE_INT_H

#include "sub/group_int.h"

/* Apply one $persistent-config event (GroupCreated / GroupUpdated /
 * GroupDeleted, JSON data) to the definitions *defs[0..*n) (capacity
 * *cap, realloc'ed): 0, or -1 if the event is not a valid group record. */
int gstore_fold_int(const stele_event *e, group_def **defs, size_t *n, size_t *cap);

#endif
