/*
 * pstore_int.h - internal entry points of pstore.c for the fuzz drivers
 * (fuzz/fuzz_proj.c): the decoder of stored projection definitions is a
 * static function there, reached through this door instead of a copy.
 */
#ifndef STELE_PROJ_PSTORE_INT_H
#define STELE_PROJ_PSTORE_INT_H

#include "proj/proj_int.h"

/* Decode one $ProjectionDefinition event of $projections-$all into *d:
 * 0 (free with proj_def_free), or ECORRUPT with the reason. */
int pstore_parse_def_int(const stele_event *e, proj_def *d);

#endif
