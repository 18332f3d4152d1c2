# pairdb — the commands a developer needs. `make test` is what CI runs.

CARGO ?= cargo

.PHONY: test deps build run lint fmt bench-http soak-engine bench-engine

## Install what the tests need (PostgreSQL and Redis server packages), then run every test.
test: deps
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

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

## The LSM crash tests at length: its writer process SIGKILLed 500 times, and 500 simulated power cuts, per durability mode.
soak-engine:
	PAIRDB_CRASH_ROUNDS=$${PAIRDB_CRASH_ROUNDS:-500} PAIRDB_POWER_ROUNDS=$${PAIRDB_POWER_ROUNDS:-500} $(CARGO) test -p pairdb-storage --test it -- --nocapture crash:: power::

## The storage engines side by side (lsm, memory, fjall), db_bench style (see bench/src/main.rs).
bench-engine:
	cd bench && $(CARGO) run --release
