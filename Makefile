# outboxd: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2

.PHONY: all deps build bin test unit integration demo stack-up stack-down stack-status clean
.PHONY: python-test asan fuzz chaos registry-test
.PHONY: bench bench-quick portability conformance
.PHONY: deb deb-test image image-test helm-test kubernetes-manifests

all: build

deps:
	@bash scripts/deps.sh

# ccache, when installed, makes rebuilds after a branch switch cheap.
CCACHE := $(if $(shell command -v ccache),-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
CONFIGURE = cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CCACHE) >/dev/null

build:
	@$(CONFIGURE)
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Only the binaries (outboxd, outboxd-tail): what make demo and the Python tests run.
bin:
	@$(CONFIGURE)
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target outboxd outboxd-tail

# Everything CI runs: dependencies, the builds (scripts/test.sh compiles what it
# runs), unit and integration tests, fuzz smoke, Python tests, stack down.
# Non-zero on any failure.
test: deps
	@bash scripts/test.sh $(BUILD_DIR)

# Unit tests only: no servers needed.
unit: build
	@ctest --test-dir $(BUILD_DIR) -L unit --output-on-failure -j $(JOBS)

# Integration tests against an already running local stack.
integration: build
	@ctest --test-dir $(BUILD_DIR) -L integration --output-on-failure

# Python client and examples/flask-orders tests (venv in .run/python-venv) against an
# already running local stack and build/outboxd.
python-test: bin
	@bash scripts/python-test.sh $(BUILD_DIR)

# [schema_registry] end to end: builds (Maven + Quarkus, a few minutes the first time) and starts
# a local Apicurio Registry, and reads outboxd's records with confluent-kafka's
# ProtobufDeserializer (scripts/registry-test.sh). Starts the local stack if it is not running.
registry-test: deps build
	@bash scripts/registry-test.sh $(BUILD_DIR)

# The AddressSanitizer + UndefinedBehaviorSanitizer build (make test builds and
# runs it too); any report aborts the process that made it.
ASAN_DIR ?= build-asan
# clang compiles the sanitizer build about 1.5x quicker than gcc (scripts/test.sh).
ASAN_CXX ?= $(or $(shell command -v clang++),c++)
asan:
	@cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_COMPILER=$(ASAN_CXX) -DCMAKE_CXX_FLAGS="-O1 -g1" -DOUTBOXD_SANITIZE=ON $(CCACHE) >/dev/null
	@cmake --build $(ASAN_DIR) -j $(JOBS)

# libFuzzer targets (pgoutput decoder, frame codec, outbox mapping), FUZZ_SECONDS each.
FUZZ_SECONDS ?= 300
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

# The long chaos run (1,000,000 events, 100 outboxd kills, 10 broker kills,
# 5 PostgreSQL crashes); CHAOS_* variables override it (scripts/chaos.sh).
# CHAOS_DELIVERY=exactly_once runs it in exactly-once mode (read_committed: lost 0, duplicated 0).
chaos: deps build
	@bash scripts/chaos.sh $(BUILD_DIR)

demo: deps bin
	@bash scripts/demo.sh $(BUILD_DIR)

# Benchmarks against pg_recvlogical and Debezium (bench/bench.sh): installs what it needs,
# builds, starts and stops the local stack itself; results in bench/results/<date>.md. Not part of test.
bench:
	@bash bench/bench.sh full
bench-quick:
	@bash bench/bench.sh quick

# Builds outboxd and runs its unit tests on Debian 13 (trixie) in a debootstrap chroot
# (.run/trixie, made on first use; needs root). Not part of test.
portability:
	@bash scripts/portability.sh

# Debezium's Outbox Event Router and outboxd over the same outbox rows, compared event by event
# (topic, key, value bytes, headers, timestamp; scripts/conformance.sh). Slow (a JVM, Maven
# Central on first use); builds only outboxd; not part of test. Summary in .run/conformance/summary.txt.
conformance:
	@bash scripts/conformance.sh

# The Debian package: build-deb/outboxd_<version>_amd64.deb (+ -dbgsym .ddeb), built with CPack
# from the install() rules (cmake/Install.cmake) for this machine's Debian release.
deb:
	@bash scripts/deb.sh

# The package in a clean Debian 12 chroot (needs root): lintian, apt-get install ./outboxd_*.deb,
# systemd-analyze verify, the installed binary against the local stack (started if not running)
# until an event arrives, purge (tests/deploy/deb_test.sh). make test runs it too.
deb-test:
	@bash tests/deploy/deb_test.sh "$$(bash scripts/deb.sh | tail -n 1)"

# The container image of deploy/Dockerfile, built unchanged with buildah (vfs, chroot isolation;
# needs root) on a debian:trixie-slim made from a debootstrap (scripts/image.sh). Not part of test.
image:
	@bash scripts/image.sh

# The image run against the local stack (started if not running): non-root, mounted config, an
# event arrives, /healthz, SIGTERM exits 0, no compiler, ldd, size (tests/deploy/image_test.sh).
# Slow (the image build); not part of test.
image-test: image
	@bash tests/deploy/image_test.sh

# The Helm chart: helm lint, helm template with each values file, every manifest validated
# strictly, deploy/kubernetes/outboxd.yaml up to date (tests/deploy/helm_test.sh; installs helm
# from the Go module proxy into .run/ when missing). make test runs it too.
helm-test: bin
	@bash tests/deploy/helm_test.sh $(BUILD_DIR)/outboxd

# deploy/kubernetes/outboxd.yaml rendered from the chart (commit the result).
kubernetes-manifests:
	@bash tests/deploy/helm_test.sh --update

stack-up:
	@bash deploy/local/stack.sh up
stack-down:
	@bash deploy/local/stack.sh down
stack-status:
	@bash deploy/local/stack.sh status

clean:
	rm -rf $(BUILD_DIR)
