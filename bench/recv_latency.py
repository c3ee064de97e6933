#!/usr/bin/env python3
"""The reference reader's latency: commit -> receive by pg_recvlogical (bench/bench.sh).

Reads pg_recvlogical's test_decoding output (include-timestamp on) from stdin and, for every
COMMIT line, takes the wall clock at which the line arrived minus the commit time it names:
what the walsender alone costs on this machine under the same load, the floor outboxd's
commit -> consumer latency is compared with. At end of input prints one line in
bench_consumer's format:

    count=N p50_ms=.. p99_ms=.. p999_ms=.. max_ms=.. warm_count=N warm_p99_ms=..

Commits within --warm-s seconds of the first one are the warm-up, summarised apart.
"""
import argparse
import datetime
import sys
import time


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    i = min(int(p * (len(sorted_values) - 1) + 0.5), len(sorted_values) - 1)
    return sorted_values[i] / 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm-s", type=float, default=0.0)
    args = parser.parse_args()
    steady, warm = [], []
    first_commit = None
    # "COMMIT 747 (at 2026-12-02 04:51:03.123456+00)"
    for line in sys.stdin.buffer:
        now = time.time_ns()
        if not line.startswith(b"COMMIT "):
            continue
        at = line.find(b"(at ")
        if at < 0:
            continue
        text = line[at + 4:].rstrip().rstrip(b")").decode()
        commit = datetime.datetime.fromisoformat(text)
        commit_ns = int(commit.timestamp()) * 1_000_000_000 + commit.microsecond * 1000
        if first_commit is None:
            first_commit = commit_ns
        warming = commit_ns < first_commit + int(args.warm_s * 1e9)
        (warm if warming else steady).append(now - commit_ns)
    steady.sort()
    warm.sort()
    print(f"count={len(steady) + len(warm)} p50_ms={percentile(steady, 0.5):.3f} "
          f"p99_ms={percentile(steady, 0.99):.3f} p999_ms={percentile(steady, 0.999):.3f} "
          f"max_ms={(steady[-1] / 1e6 if steady else 0):.3f} warm_count={len(warm)} "
          f"warm_p99_ms={percentile(warm, 0.99):.3f}")


if __name__ == "__main__":
    main()
