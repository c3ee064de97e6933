#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets (tests/fuzz) with clang++ in build-fuzz,
# seeds their corpora from the golden pgoutput payloads, and runs each for
# FUZZ_SECONDS (default 300). A crash leaves its input in build-fuzz/artifacts/
# and exits non-zero; the corpora grow in build-fuzz/corpus/ from run to run.
#
#   FUZZ_SECONDS=20 scripts/fuzz.sh      (the smoke run of make test)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
seconds=${FUZZ_SECONDS:-300}
build=${FUZZ_BUILD_DIR:-build-fuzz}
targets=(pgoutput_decoder copy_frame outbox_mapping timeline_history)

command -v clang++ >/dev/null || { echo "fuzz: clang++ not found; run scripts/deps.sh" >&2; exit 1; }
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DOUTBOXD_FUZZ=ON -DOUTBOXD_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "${JOBS:-2}" --target "${targets[@]/%/_fuzz}"
python3 tests/fuzz/make_corpus.py tests/testdata/pgoutput "$build/corpus"

for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "$build/artifacts/$t"
    log="$build/artifacts/$t/last-run.log"
    if ! "$build/tests/fuzz/${t}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" "$build/corpus/$t" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $t failed; the input that triggered it is in $build/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | sed "s/^/fuzz $t: /"
    echo "fuzz $t: corpus $(find "$build/corpus/$t" -type f | wc -l) inputs"
done
