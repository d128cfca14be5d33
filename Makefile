# Stele: the two commands a newcomer needs are `make run` and `make test`.
# Both install missing Debian packages (scripts/deps.sh) and build first.
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS ?= $(shell nproc)
RELEASE_BUILD ?= build-release
PREFIX ?= /usr/local

.PHONY: all deps build run install release release-check example test test-unit test-asan test-valgrind bench bench-http bench-grpc bench-subs bench-scavenge bench-query bench-multi bench-pg bench-pg-profile bench-patterns bench-rules bench-limits bench-proj bench-tls bench-ddb bench-chain clean

all: build

deps:
	@./scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTELE_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The server on its embedded default store in ./data, port 2113
# (stele serve --help lists the settings; STELE_* variables work too).
run: build
	./$(BUILD)/stele serve --data ./data

# The smallest embedding of the library, against ./data-example.
example: build
	./$(BUILD)/examples/stele_example ./data-example

# Every test: the full suite, then the unit tests under ASan+UBSan, then
# valgrind's leak check on the library's unit tests.
test: build test-asan test-valgrind
	cd $(BUILD) && ctest --output-on-failure -j 2
	@echo "make test: all suites passed"

test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSTELE_SANITIZE=ON -DSTELE_WERROR=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && TEST_QUICK=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -L unit -j 2

# The threaded tests (library, server load and SSE subscribers) under
# ThreadSanitizer in build-tsan, at a reduced size; fails on any race
# report (scripts/tsan.sh, docs/testing.md). A few minutes on 2 cores.
.PHONY: test-tsan
test-tsan: deps
	./scripts/tsan.sh $(TSAN_BUILD)

# Coverage-guided fuzzing (fuzz/, docs/testing.md): builds every libFuzzer
# driver with clang in $(FUZZ_BUILD), then fuzzes each for FUZZ_SECONDS
# (one at a time, niced); new corpus entries stay in $(FUZZ_BUILD)/fuzz-out.
# FUZZ_DRIVERS="http grpc" picks some. `make test` replays the corpora.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_DRIVERS ?=
.PHONY: fuzz
fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTELE_FUZZ=ON -DSTELE_WERROR=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_drivers
	./scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_DRIVERS)

test-valgrind: build
	./scripts/valgrind.sh $(BUILD)

# The crash loop (tests/soak.c, docs/testing.md): ROUNDS times kill -9 of a
# writer process under 8 writers, recover, verify every acknowledged event
# and run `stele check`. CI runs 100 rounds.
ROUNDS ?= 100
.PHONY: soak
soak: build
	@cmake --build $(BUILD) -j $(JOBS) --target stele_soak
	./$(BUILD)/tests/stele_soak --rounds $(ROUNDS) --stele ./$(BUILD)/stele

bench: build
	./bench/run.sh $(BUILD)

# HTTP benchmark: Stele vs PostgreSQL vs Redis in one run (installs and
# starts both peers itself; docs/benchmarks-http.md).
bench-http: build
	./bench/run_http.sh $(BUILD)

# gRPC benchmark: appends over the KurrentDB client protocol (Append and
# BatchAppend) beside the same appends over the HTTP/JSON API, one server,
# one run (docs/benchmarks.md).
bench-grpc: build
	./bench/run_grpc.sh $(BUILD)

# Subscriptions over SSE: catch-up of 10M events, live latency, 100
# subscribers vs none; PostgreSQL LISTEN/NOTIFY as the peer (docs/benchmarks.md).
bench-subs: build
	./bench/run_subs.sh $(BUILD)

# Rules: delivery to a local webhook (events/s, append-to-delivery latency)
# beside a hand-written SSE-to-POST worker (docs/benchmarks.md).
# DynamoDB backend: appends through Stele on DynamoDB Local beside seed
# 000's own path (Node, @aws-sdk/client-dynamodb) in one run (docs/benchmarks.md).
bench-ddb: build
	./bench/run_ddb.sh $(BUILD)

bench-rules: build
	./bench/run_rules.sh $(BUILD)

# The hash chain's cost: durable appends with and without it, alternating
# rounds of one run; an export's and a proof's time (docs/benchmarks.md).
bench-chain: build
	./bench/run_chain.sh $(BUILD)

# Open after a machine crash: stores of 1M and 10M events opened with the
# durable index checkpoint and with a full index rebuild (docs/benchmarks.md).
.PHONY: bench-open
bench-open: build
	./bench/run_open.sh $(BUILD)

# Scavenging benchmark: Stele's scavenge vs PostgreSQL's VACUUM on half-deleted
# stores, and append latency while each runs (docs/benchmarks.md).
bench-scavenge: build
	./bench/run_scavenge.sh $(BUILD)

# Backup benchmark: online backup of a 10M-event store while durable appends
# run (their throughput beside the same appends without it), an incremental
# backup, a restore to the middle (docs/benchmarks.md).
.PHONY: bench-backup
bench-backup: build
	./bench/run_backup.sh $(BUILD)

# Query benchmark: secondary indexes on/off, then category and type-over-time
# reads of a 10M-event store against PostgreSQL with the seeds' indexes
# (installs and starts PostgreSQL itself; docs/benchmarks.md).
bench-query: build
	./bench/run_query.sh $(BUILD)

# Web UI benchmark: first paint of the dashboard and stream pages on a
# 10M-event store, and the live tail under 10,000 events/s (docs/benchmarks.md).
.PHONY: bench-ui
bench-ui: build
	./bench/run_ui.sh $(BUILD)

# Memory-limits benchmark: throughput beside the build before the limits
# (commit a2cbad6, built in the same run) and server RSS under the hostile
# clients of issue 10 (docs/limits.md, docs/benchmarks.md).
bench-limits: build
	./bench/run_limits.sh $(BUILD)

# TLS beside cleartext on one server (appends, reads, pings; ratio
# tls/cleartext per workload; then instructions and system calls per append
# under callgrind and strace; docs/benchmarks.md). About 4.5 minutes.
bench-tls: build
	./bench/run_tls.sh $(BUILD)

# Issue 21's wire goals in one run (docs/benchmarks.md): the disk's fdatasync
# rate beside HTTP 1x1, wrk's no-op ceiling beside 256x1 appends, TLS 256x1
# beside cleartext, PostgreSQL and Redis beside; STELE_OLD=path/to/stele
# alternates another build's server with this one. About 7 minutes.
.PHONY: bench-wire
bench-wire: build
	./bench/run_wire.sh $(BUILD)

# The same wire's cost in instructions (callgrind, tmpfs store): the loop
# thread's and the whole server's per wrk POST append and per no-op; with
# STELE_OLD=path/to/stele another build first. About 3 minutes.
.PHONY: bench-wire-cost
bench-wire-cost: build
	./bench/wire_cost.sh $(BUILD)

# Issue 21's unmet goals against what this machine allows: Stele beside
# bench/bench_floor.c's floors (an ideal 1x1 server, the same in Stele's
# two-thread shape, an ideal in-process group commit; none of Stele's code)
# in the same alternating rounds (docs/benchmarks.md, floor21). About 12
# minutes; TMPFS=1 FLOOR_SPIN_US=50 add two 1x1 targets.
.PHONY: bench-floor
bench-floor: build
	./bench/run_floor.sh $(BUILD)

# Multi-stream appends and DCB conditions: transfers vs single appends in
# process, over HTTP and on PostgreSQL; DCB conditional appends with 1 and 64
# clients (docs/benchmarks.md). A minute or two.
bench-multi: build
	./bench/run_multi.sh $(BUILD)

# Stele on PostgreSQL (issue 15): 1, 2 and 4 servers on one PostgreSQL beside
# seeds/001's schema under pgbench and the local engine, and subscriber
# latency across servers (starts its own PostgreSQL; docs/benchmarks.md).
bench-pg: build
	./bench/run_pg.sh $(BUILD)

# Where Stele's PostgreSQL writer spends its time at 256 x 1 (appends per
# group commit, statements per batch; OTHER=path/to/older/stele compares).
bench-pg-profile: build
	./bench/run_pg_profile.sh $(BUILD) $(OTHER)

# Event pattern matching (rules): 100 rules of mixed operators over 1M
# events, one thread, no store involved (docs/benchmarks.md).
bench-patterns: build
	./$(BUILD)/bench/bench_patterns 1000000 100

# Projection benchmark: counting and per-stream projections over 1M events,
# reconstructState p50/p99, seed 001's OrderSummaryProjection on PostgreSQL
# (installs and starts PostgreSQL itself; docs/benchmarks.md).
bench-proj: build
	./bench/run_proj.sh $(BUILD)

# Inline projections' appends with / without (wall, CPU-seconds, callgrind
# instructions per append; docs/benchmarks.md). PEER_BUILD=dir adds that
# build's bench_proj for a before/after in the same run.
.PHONY: bench-inline
bench-inline: build
	./bench/run_inline.sh $(BUILD)

# A user's build: optimised, warnings shown but not fatal (STELE_WERROR off),
# installed under PREFIX (default /usr/local), staged under DESTDIR if set.
# Needs only the build dependencies (docs/operations.md, "Installing").
release:
	@cmake -S . -B $(RELEASE_BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(RELEASE_BUILD) -j $(JOBS) --target stele stele_shared stele_static

install: release
	DESTDIR=$(DESTDIR) cmake --install $(RELEASE_BUILD)

# Release builds with gcc and clang at -O2 and -O3 with warnings as errors:
# the check that a user's Release build compiles cleanly.
release-check:
	./scripts/release-check.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(RELEASE_BUILD)
