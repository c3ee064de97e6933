# outboxd: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2

.PHONY: all deps build test unit integration demo stack-up stack-down stack-status clean
.PHONY: bench bench-quick

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

demo: deps build
	@bash scripts/demo.sh $(BUILD_DIR)

# Benchmarks against pg_recvlogical and Debezium (bench/bench.sh): installs what it needs,
# builds, starts and stops the local stack itself; results in bench/results/<date>.md. Not part of test.
bench:
	@bash bench/bench.sh full
bench-quick:
	@bash bench/bench.sh quick

stack-up:
	@bash deploy/local/stack.sh up
stack-down:
	@bash deploy/local/stack.sh down
stack-status:
	@bash deploy/local/stack.sh status

clean:
	rm -rf $(BUILD_DIR)
