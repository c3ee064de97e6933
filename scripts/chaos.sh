#!/usr/bin/env bash
# make chaos: the long form of the chaos suite (tests/chaos/chaos_test.cc) against
# the local stack: by default 100 outboxd SIGKILLs, 10 broker SIGKILLs, 5 PostgreSQL
# crashes and 10 walsender terminations while writers commit 1,000,000 events.
# The seed is printed first ("chaos: seed N"); CHAOS_SEED=N replays it.
# Every CHAOS_* variable can be overridden from the environment, e.g.
#   CHAOS_EVENTS=200000 CHAOS_OUTBOXD_KILLS=20 make chaos
# CHAOS_DELIVERY=exactly_once runs the exactly-once mode instead of the default
# at_least_once: outboxd with [sink] delivery = "exactly_once", Kafka read back
# with read_committed, and the run fails unless lost = 0 and duplicated = 0.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
cd "$repo"
export CHAOS_EVENTS=${CHAOS_EVENTS:-1000000}
export CHAOS_OUTBOXD_KILLS=${CHAOS_OUTBOXD_KILLS:-100}
export CHAOS_BROKER_KILLS=${CHAOS_BROKER_KILLS:-10}
export CHAOS_PG_CRASHES=${CHAOS_PG_CRASHES:-5}
export CHAOS_WALSENDER_KILLS=${CHAOS_WALSENDER_KILLS:-10}
export CHAOS_RATE=${CHAOS_RATE:-1000}
export CHAOS_DELIVERY=${CHAOS_DELIVERY:-at_least_once}
case $CHAOS_DELIVERY in
    at_least_once) filter=ChaosTest.NoLossBoundedDuplicatesUnderFaults ;;
    exactly_once) filter=ChaosTest.ExactlyOnceNoLossNoDuplicatesUnderFaults ;;
    *) echo "chaos: CHAOS_DELIVERY must be at_least_once or exactly_once, not '$CHAOS_DELIVERY'" >&2; exit 2 ;;
esac
# A broker restarted on a busy machine can take more than the default 120 s.
export OUTBOXD_STACK_TIMEOUT=${OUTBOXD_STACK_TIMEOUT:-300}

started_stack=0
if ! bash deploy/local/stack.sh status >/dev/null 2>&1; then
    trap 'bash deploy/local/stack.sh down || true' EXIT
    bash deploy/local/stack.sh up
    started_stack=1
fi
echo "== chaos ($CHAOS_DELIVERY): $CHAOS_EVENTS events, kills: outboxd $CHAOS_OUTBOXD_KILLS, broker $CHAOS_BROKER_KILLS," \
    "postgres $CHAOS_PG_CRASHES, walsender $CHAOS_WALSENDER_KILLS (stack started here: $started_stack)"
"$build/tests/chaos/chaos_test" --gtest_filter="$filter"
