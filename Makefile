# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test build release lint bench bench-ir bench-pauses bench-micro setup fuzz soak

setup:
	@scripts/setup.sh build

build: setup
	cargo build -p portico -p portico-e2e --bins

## Run the gateway on conf/portico.yaml with its demo upstreams (no Redis needed).
run: build
	scripts/run-demo.sh conf/portico.yaml

## Unit tests, end-to-end tests against the real binary, and the deploy/ checks.
test: build
	@scripts/setup.sh test
	cargo test --workspace --no-fail-fast
	cargo test -p pingora-http -p pingora-runtime
	target/tools-venv/bin/python scripts/check-deploy.py

## The release binary, built with profile-guided optimisation: target/pgo/release/portico
## (scripts/release.sh; what the Dockerfile ships and the load benchmark measures).
release:
	@scripts/setup.sh pgo
	scripts/release.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Load benchmark: Portico beside nginx, HAProxy and direct-to-upstream (see benches/README.md).
bench: release
	@scripts/setup.sh bench
	benches/load/run.sh

## Instructions per proxied request under callgrind: nginx; Portico passthrough (alone, with 10
## and with 10k routes, with its access log), full chain, and full chain traced.
bench-ir:
	@scripts/setup.sh bench
	cargo build --release -p portico
	benches/ir/ir.py

## Tail latency at a fixed rate in alternating rounds (the scheduler trace with `--sched`).
bench-pauses: release
	@scripts/setup.sh bench
	cargo build --release -p portico-e2e --bins
	benches/load/pauses.py

## Criterion micro-benchmarks.
bench-micro:
	cargo bench -p portico --bench hot_path

## Fuzz targets (tests/fuzz; cargo-fuzz on a nightly toolchain): FUZZ_SECONDS each, 600 by default.
FUZZ_SECONDS ?= 600
fuzz:
	@scripts/setup.sh fuzz
	cd tests/fuzz && for t in $$(cargo +nightly fuzz list); do \
	  cargo +nightly fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 || exit 1; \
	done

## One hour under steady load with reloads, member and Redis restarts (benches/soak).
soak:
	@scripts/setup.sh test
	cargo build --release -p portico -p portico-e2e --bins
	benches/soak/soak.py
