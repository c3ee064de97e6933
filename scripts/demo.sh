#!/usr/bin/env bash
# make demo: the local stack, the outbox schema, outboxd, a producer that
# commits orders with their outbox events in one transaction, and a consumer
# that prints the envelopes as they arrive. Ctrl-C stops everything.
# DEMO_SECONDS=N stops by itself after N seconds (used to check the demo).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
cd "$repo"
pg_port=${OUTBOXD_PG_PORT:-54329}
kafka_port=${OUTBOXD_KAFKA_PORT:-59092}
psql_app=(psql -X -q -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$pg_port dbname=app user=postgres")
mkdir -p .run/demo
export PGOPTIONS="-c client_min_messages=warning"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  bash deploy/local/stack.sh down
}
trap cleanup INT TERM EXIT

echo "== starting PostgreSQL and Kafka (deploy/local/stack.sh up)"
bash deploy/local/stack.sh up
"${psql_app[@]}" -f sql/outbox.sql -f sql/demo.sql

sed -e "s/port=54329/port=$pg_port/" -e "s/127.0.0.1:59092/127.0.0.1:$kafka_port/" \
  deploy/local/outboxd.toml > .run/demo/outboxd.toml
echo "== outboxd run --config deploy/local/outboxd.toml (log: .run/demo/outboxd.log)"
"$build/outboxd" run --config .run/demo/outboxd.toml > .run/demo/outboxd.log 2>&1 &
pids+=($!)
# Events are captured from the moment the slot exists: start writing only once
# outboxd streams (on a first start it creates the slot).
for _ in $(seq 1 300); do
  grep -q "streaming slot" .run/demo/outboxd.log && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat .run/demo/outboxd.log; exit 1; }
  sleep 0.1
done
grep -q "streaming slot" .run/demo/outboxd.log || { echo "outboxd did not start streaming:"; cat .run/demo/outboxd.log; exit 1; }

echo "== consumer: outboxd-tail --from-beginning '^outbox\\.event\\..*'"
"$build/outboxd-tail" --brokers "127.0.0.1:$kafka_port" --from-beginning '^outbox\.event\..*' &
pids+=($!)

echo "== producer: one order + its OrderCreated event per transaction, every second"
(
  customers=(ada grace linus barbara ken margaret)
  n=0
  while true; do
    n=$((n + 1))
    c=${customers[$((n % ${#customers[@]}))]}
    total=$(( (n * 1237) % 10000 + 100 ))
    "${psql_app[@]}" <<SQL
BEGIN;
WITH o AS (INSERT INTO orders (customer, total_cents) VALUES ('$c', $total) RETURNING id, customer, total_cents)
INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, headers)
SELECT 'order', o.id::text, 'OrderCreated',
       jsonb_build_object('order_id', o.id, 'customer', o.customer, 'total_cents', o.total_cents),
       jsonb_build_object('traceparent', '00-' || md5(o.id::text) || '-' || left(md5(o.customer), 16) || '-01')
FROM o;
COMMIT;
SQL
    if (( n % 5 == 0 )); then
      # The table-less source: a transactional logical decoding message.
      "${psql_app[@]}" -c "SELECT outbox_emit('customer', '$c', 'CustomerLoyaltyReached', jsonb_build_object('customer', '$c', 'orders', $n))" >/dev/null
    fi
    sleep 1
  done
) &
pids+=($!)

if [[ -n "${DEMO_SECONDS:-}" ]]; then
  sleep "$DEMO_SECONDS"
  exit 0
fi
echo "== events appear below as they are committed; Ctrl-C stops everything"
wait
