# outboxd: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2

.PHONY: all deps build test unit integration demo stack-up stack-down stack-status clean
.PHONY: python-test asan fuzz chaos
.PHONY: bench bench-quick conformance

all: build

deps:
	@bash scripts/deps.sh

build:
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Everything CI runs: dependencies, build, unit tests, the local stack,
# integration tests, stack down. Non-zero on any failure.
test: deps build
	@bash scripts/test.sh $(BUILD_DIR)

# Unit tests only: no servers needed.
unit: build
	@ctest --test-dir $(BUILD_DIR) -L unit --output-on-failure -j $(JOBS)

# Integration tests against an already running local stack.
integration: build
	@ctest --test-dir $(BUILD_DIR) -L integration --output-on-failure

# Python client and examples/flask-orders tests (venv in .run/python-venv) against an
# already running local stack and build/outboxd.
python-test: build
	@bash scripts/python-test.sh $(BUILD_DIR)

# The AddressSanitizer + UndefinedBehaviorSanitizer build (make test builds and
# runs it too); any report aborts the process that made it.
ASAN_DIR ?= build-asan
asan:
	@cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DOUTBOXD_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_DIR) -j $(JOBS)

# libFuzzer targets (pgoutput decoder, frame codec), FUZZ_SECONDS each.
FUZZ_SECONDS ?= 300
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

# The long chaos run (1,000,000 events, 100 outboxd kills, 10 broker kills,
# 5 PostgreSQL crashes); CHAOS_* variables override it (scripts/chaos.sh).
chaos: deps build
	@bash scripts/chaos.sh $(BUILD_DIR)

demo: deps build
	@bash scripts/demo.sh $(BUILD_DIR)

# Benchmarks against pg_recvlogical and Debezium (bench/bench.sh): installs what it needs,
# builds, starts and stops the local stack itself; results in bench/results/<date>.md. Not part of test.
bench:
	@bash bench/bench.sh full
bench-quick:
	@bash bench/bench.sh quick

# Debezium's Outbox Event Router and outboxd over the same outbox rows, compared event by event
# (topic, key, value bytes, headers, timestamp; scripts/conformance.sh). Slow (a JVM, Maven
# Central on first use); builds only outboxd; not part of test. Summary in .run/conformance/summary.txt.
conformance:
	@bash scripts/conformance.sh

stack-up:
	@bash deploy/local/stack.sh up
stack-down:
	@bash deploy/local/stack.sh down
stack-status:
	@bash deploy/local/stack.sh status

clean:
	rm -rf $(BUILD_DIR)
