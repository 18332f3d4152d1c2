# pairdb — the commands a developer needs. `make test` is what CI runs.

CARGO ?= cargo

.PHONY: test test-faults deps build run lint fmt bench-http bench-layers soak-engine bench-engine bench-compare loadtest loadtest-ycsb ring-sim bench-join bench-handoff bench-hints

## Install what the tests need (PostgreSQL and Redis server packages), then run every test;
## then the cluster suite again with every cluster on a throwaway PostgreSQL and Redis (the
## tests that start separate processes, or stores of their own, ran once already).
## Incremental compilation is off here: a one-off build gains nothing from it and it would double
## the disk the build takes.
test: export CARGO_INCREMENTAL = 0
test: deps
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	PAIRDB_TEST_STORES=postgres+redis $(CARGO) test -p pairdb --test it -- \
		--skip processes:: --skip process_ --skip traces:: --skip exactly_once:: --skip stores::

## The fault suite at length: each fault (a storage process frozen, killed, partitioned; a
## coordinator killed mid-migration; membership and RF changes) held for PAIRDB_FAULT_SECS
## (default 60) under write load, with the checker of every acknowledged write.
test-faults: deps
	PAIRDB_FAULT_SECS=$${PAIRDB_FAULT_SECS:-60} $(CARGO) test -p pairdb --test it -- --nocapture \
		process_faults:: process_membership:: membership:: handoff:: anti_entropy::

## Install missing server packages (apt, as root), or name them.
deps:
	@scripts/test-deps.sh

build:
	$(CARGO) build --release --bin pairdb

run:
	$(CARGO) run --release --bin pairdb -- dev

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## PUT/GET throughput and latency of `pairdb dev` with wrk, per engine in one run (ENGINES="lsm memory" by default; see scripts/bench-http.sh).
bench-http:
	@for engine in $${ENGINES:-lsm memory}; do ENGINE=$$engine scripts/bench-http.sh || exit 1; done

## What rate limiting and idempotency records cost: bench-http on the memory engine, every PUT with a client idempotency key, with the layers on and then off, on the embedded stores and on PostgreSQL + Redis, in one run.
bench-layers:
	@for stores in embedded postgres+redis; do for admission in on off; do STORES=$$stores ENGINE=memory IDEMPOTENCY_KEYS=1 ADMISSION=$$admission scripts/bench-http.sh || exit 1; done; done

## The LSM crash tests at length: its writer process SIGKILLed 500 times, and 500 simulated power cuts, per durability mode.
soak-engine:
	PAIRDB_CRASH_ROUNDS=$${PAIRDB_CRASH_ROUNDS:-500} PAIRDB_POWER_ROUNDS=$${PAIRDB_POWER_ROUNDS:-500} $(CARGO) test -p pairdb-storage --test it -- --nocapture crash:: power::

## The storage engines side by side (lsm, memory, fjall; RocksDB too with ROCKSDB=1), db_bench style (see bench/src/main.rs).
bench-engine:
ifdef ROCKSDB
	@command -v clang >/dev/null 2>&1 || [ -e /usr/lib/llvm-14/lib/libclang.so ] || dpkg -s libclang-dev >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null; \
	    else echo "RocksDB's build needs libclang: sudo apt-get install -y libclang-dev" >&2; exit 1; fi; }
	cd bench && $(CARGO) run --release --features rocksdb
else
	cd bench && $(CARGO) run --release
endif

## The smoke scenario (loadtest/scenarios/smoke.toml) with pairdb-loadtest against a fresh `pairdb dev`; exits 99 if a threshold fails.
loadtest:
	@scripts/loadtest.sh $(SCENARIO)

## YCSB A–F against a fresh `pairdb dev`, one table of them, and redis-benchmark on the same machine for scale.
loadtest-ycsb:
	@YCSB_TABLE=1 scripts/loadtest.sh loadtest/scenarios/ycsb-a.toml loadtest/scenarios/ycsb-b.toml loadtest/scenarios/ycsb-c.toml loadtest/scenarios/ycsb-d.toml loadtest/scenarios/ycsb-e.toml loadtest/scenarios/ycsb-f.toml

## pairdb dev (memory, LSM fsync never, LSM fsync always) against a bare hyper server, redis and a 3-member etcd cluster, same wrk settings, one table with the ratios (installs wrk, redis-server and etcd-server when missing, as root).
bench-compare:
	@scripts/bench-compare.sh

## Ring balance at 10–1,000 nodes (max/mean, min/mean ownership) and what one node added or removed moves, against the ideal 1/N.
## How fast a node joining under no load receives its share (4th node, 100k x 1 KiB at RF 3; FSYNC=always|never).
bench-join:
	@scripts/bench-join.sh

## How fast a returning node is caught up from hints (20k x 1 KiB written while it was gone; FSYNC=always|never).
bench-handoff:
	@scripts/bench-handoff.sh

ring-sim:
	@$(CARGO) run --release -q -p pairdb-core --example ring_sim

## How many hints a leader records per second, fsynced, with 1 to 64 concurrent recorders (group commit).
bench-hints:
	$(CARGO) run --release -p pairdb-storage --example hint_rate
