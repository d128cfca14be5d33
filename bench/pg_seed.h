/*
 * pg_seed.h - seeds/001's PostgreSQL schema, as the benchmarks' PostgreSQL
 * peers create it (bench_peers --schema seed, bench_multi_pg,
 * bench_pgnotify, bench_scavenge), in one place so that they all measure
 * the same tables. String literals, to be joined with a peer's own
 * statements.
 */
#ifndef BENCH_PG_SEED_H
#define BENCH_PG_SEED_H

/* The events table with its unique (stream_id, version) and its indexes. */
#define PG_SEED_EVENTS                                                                             \
    "CREATE TABLE events ("                                                                        \
    "  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),"                                             \
    "  stream_id VARCHAR(255) NOT NULL,"                                                           \
    "  stream_type VARCHAR(255) NOT NULL,"                                                         \
    "  event_type VARCHAR(255) NOT NULL,"                                                          \
    "  event_data JSONB NOT NULL,"                                                                 \
    "  metadata JSONB DEFAULT '{}',"                                                               \
    "  version BIGINT NOT NULL,"                                                                   \
    "  global_position BIGSERIAL,"                                                                 \
    "  created_at TIMESTAMPTZ DEFAULT NOW(),"                                                      \
    "  CONSTRAINT unique_stream_version UNIQUE (stream_id, version));"                             \
    "CREATE INDEX idx_events_stream ON events(stream_id, version);"                                \
    "CREATE INDEX idx_events_global ON events(global_position);"                                   \
    "CREATE INDEX idx_events_type ON events(event_type);"

/* Every seeds/001 table, dropped first: events, snapshots,
 * subscription_checkpoints. */
#define PG_SEED_SCHEMA                                                                             \
    "DROP TABLE IF EXISTS events, snapshots, subscription_checkpoints;" PG_SEED_EVENTS             \
    "CREATE TABLE snapshots ("                                                                     \
    "  stream_id VARCHAR(255) PRIMARY KEY,"                                                        \
    "  stream_type VARCHAR(255) NOT NULL,"                                                         \
    "  snapshot_data JSONB NOT NULL,"                                                              \
    "  version BIGINT NOT NULL,"                                                                   \
    "  created_at TIMESTAMPTZ DEFAULT NOW());"                                                     \
    "CREATE TABLE subscription_checkpoints ("                                                      \
    "  subscription_id VARCHAR(255) PRIMARY KEY,"                                                  \
    "  last_position BIGINT NOT NULL DEFAULT 0,"                                                   \
    "  updated_at TIMESTAMPTZ DEFAULT NOW());"

#endif
