/*
 * store_int.h - the handle behind stele_db, shared by the files of the API
 * edge (store.c: opening, appends, reads; query.c: queries).
 */
#ifndef STELE_STORE_INT_H
#define STELE_STORE_INT_H

#include "backend/backend.h"
#include "stele.h"

struct stele_db {
    backend *be;
    stele_options opts;
};

#endif
