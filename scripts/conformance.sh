#!/usr/bin/env bash
# Conformance with Debezium, measured (make conformance; slow, not part of make test).
#
# Two outbox tables in Debezium's default shape, one set of rows, two readers with equivalent
# configuration: Debezium's PostgreSQL connector with the Outbox Event Router in Kafka Connect
# standalone (jars from bench/debezium/pom.xml, as bench/bench.sh resolves them), and outboxd
# with the migration guide's own config (docs/examples/debezium-outboxd.toml, one outboxd per
# table, only the site's values replaced by scripts/guide_config.py, which also checks that
# docs/migrating-from-debezium.md shows the file). Each writes under its own topic prefix;
# scripts/conformance_compare.py
# reads both and compares event by event (matched by the id header): topic suffix, key bytes,
# value bytes (tombstones), headers, record timestamp. Summary on stdout and in
# .run/conformance/summary.txt; exit 1 when an event differs in a way not listed as intended.
#
# Environment: OUTBOXD_PG_PORT, OUTBOXD_KAFKA_PORT (the local stack; started and stopped here
# unless already up), CONFORMANCE_CONNECT_PORT (Kafka Connect REST, default 18084), BUILD_DIR
# (default build), CONFORMANCE_MAX_S (how long to wait for both sides' events, default 240).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"
build=${BUILD_DIR:-build}
pg_port=${OUTBOXD_PG_PORT:-54329}
kafka_port=${OUTBOXD_KAFKA_PORT:-59092}
connect_port=${CONFORMANCE_CONNECT_PORT:-18084}
max_s=${CONFORMANCE_MAX_S:-240}
brokers=127.0.0.1:$kafka_port
dsn="host=127.0.0.1 port=$pg_port dbname=app user=postgres"
psql=(psql -X -q -t -A -v ON_ERROR_STOP=1 "$dsn")
run_id=$(date +%Y%m%d%H%M%S)
out=$repo/.run/conformance
work=$out/$run_id
mkdir -p "$work"
say() { printf 'conformance: %s\n' "$*" >&2; }
die() { printf 'conformance: error: %s\n' "$*" >&2; exit 1; }

# Dependencies: outboxd, the Debezium jars (shared with bench/), a venv with confluent-kafka
# pinned as in clients/python/requirements-test.txt (binary wheel: no compiler needed).
say "building outboxd ($build)"
[[ -f $build/CMakeCache.txt ]] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target outboxd -j "${JOBS:-2}" >/dev/null
dbz_jars=$repo/.run/bench/debezium/jars
if [[ ! -d $dbz_jars || bench/debezium/pom.xml -nt $dbz_jars ]]; then
  say "resolving Debezium and Kafka Connect jars (Maven Central -> ~/.m2 -> $dbz_jars)"
  rm -rf "$dbz_jars"
  mvn -B -q -f bench/debezium/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$dbz_jars" >"$work/mvn.log" 2>&1 || { tail "$work/mvn.log"; die "Maven failed"; }
fi
venv=$out/venv
ck=$(sed -n 's/^confluent-kafka==//p' clients/python/requirements-test.txt)
if [[ ! -x $venv/bin/python || ! -f $venv/.ck-$ck ]]; then
  say "creating $venv (confluent-kafka==$ck)"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: "confluent-kafka==$ck"
  touch "$venv/.ck-$ck"
fi

started_stack=0
if ! bash deploy/local/stack.sh status >/dev/null 2>&1; then
  bash deploy/local/stack.sh up
  started_stack=1
fi
table=conformance_$run_id
dbz_slot=conf_dbz_$run_id
ox_slot=conf_ox_$run_id
cleanup() {
  local p
  for p in $(jobs -pr); do kill -TERM "$p" 2>/dev/null || true; done
  for p in $(jobs -p); do wait "$p" 2>/dev/null || true; done
  "${psql[@]}" >/dev/null 2>&1 <<SQL || true
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
  WHERE slot_name IN ('$dbz_slot', '$ox_slot', '${ox_slot}_t') AND NOT active;
DROP PUBLICATION IF EXISTS $table;
DROP PUBLICATION IF EXISTS ${table}_ox;
DROP PUBLICATION IF EXISTS ${table}_oxt;
DROP TABLE IF EXISTS $table, ${table}_text;
SQL
  if ((started_stack)); then bash deploy/local/stack.sh down || true; fi
}
trap cleanup EXIT

# The table: Debezium's default outbox columns, plus a tracing span context, a correlation
# column placed in a header, and a creation time. The router's table.field.event.timestamp
# takes only a column Debezium maps to io.debezium.time.{Timestamp,MicroTimestamp,NanoTimestamp}:
# a `timestamp` without time zone (a timestamptz is a string to it and a bigint is refused with
# "Unsupported field type INT64"), read as UTC.
"${psql[@]}" >/dev/null <<SQL
CREATE TABLE $table (
  id uuid PRIMARY KEY,
  aggregatetype varchar(255) NOT NULL,
  aggregateid varchar(255) NOT NULL,
  type varchar(255) NOT NULL,
  payload jsonb,
  tracingspancontext text,
  correlation text,
  created_at timestamp NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC'));
-- The same shape with a text payload (Debezium's router handles several outbox tables of one
-- structure in one connector): plain text values and whitespace-only tombstones.
CREATE TABLE ${table}_text (LIKE $table INCLUDING DEFAULTS, PRIMARY KEY (id));
ALTER TABLE ${table}_text ALTER COLUMN payload TYPE text;
CREATE PUBLICATION $table FOR TABLE $table, ${table}_text WITH (publish = 'insert');
-- outboxd: the guide's config names one table, so one publication and slot per table.
CREATE PUBLICATION ${table}_ox FOR TABLE $table WITH (publish = 'insert');
CREATE PUBLICATION ${table}_oxt FOR TABLE ${table}_text WITH (publish = 'insert');
SELECT pg_create_logical_replication_slot('$dbz_slot', 'pgoutput');
SELECT pg_create_logical_replication_slot('$ox_slot', 'pgoutput');
SELECT pg_create_logical_replication_slot('${ox_slot}_t', 'pgoutput');
SQL

# The rows, after both slots exist: each reader streams exactly these.
"${psql[@]}" >/dev/null <<SQL
BEGIN;
INSERT INTO $table (id, aggregatetype, aggregateid, type, payload, tracingspancontext, correlation) VALUES
 ('8f5b0a5e-0001-4000-8000-000000000001', 'Order', '1001', 'OrderCreated',
  '{"id": 1001, "customer": "Zoë Ångström", "lines": [{"sku": "A-1", "qty": 2, "price": 19.99}], "note": "naïve café ☕ 日本語 \ud83d\ude00"}',
  NULL, 'corr-1'),
 ('8f5b0a5e-0001-4000-8000-000000000002', 'Order', '1001', 'OrderPaid',
  '{"id": 1001, "paid": true, "amount": {"value": 39.98, "currency": "EUR"}, "meta": {"nested": {"deep": [1, 2.5, null, false, "x"]}}}',
  E'#Thu Jan 01 00:00:00 UTC 2026\ntraceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n', 'corr-2'),
 ('8f5b0a5e-0001-4000-8000-000000000003', 'Customer', 'c-42', 'CustomerRegistered',
  '{"name": "O''Brien \"quoted\"", "tags": [], "empty": {}, "escaped": "tab\there\nnewline", "big": 12345678901234567890}',
  NULL, NULL),
 ('8f5b0a5e-0001-4000-8000-000000000004', 'Shipment', 's-7', 'ShipmentDispatched',
  '"a bare JSON string"', NULL, 'corr-4');
COMMIT;
INSERT INTO $table (id, aggregatetype, aggregateid, type, payload, correlation) VALUES
 ('8f5b0a5e-0001-4000-8000-000000000005', 'Order', '1001', 'OrderArchived', NULL, 'corr-5');
INSERT INTO $table (id, aggregatetype, aggregateid, type, payload) VALUES
 ('8f5b0a5e-0001-4000-8000-000000000006', 'Customer', 'c-43', 'CustomerRegistered', '[1, "two", {"three": 3}]'),
 ('8f5b0a5e-0001-4000-8000-000000000007', 'Order', '1002', 'OrderCreated', '{}');
INSERT INTO ${table}_text (id, aggregatetype, aggregateid, type, payload) VALUES
 ('8f5b0a5e-0002-4000-8000-000000000001', 'Note', 'n-1', 'NoteWritten', 'plain text, not JSON: ☕ ü'),
 ('8f5b0a5e-0002-4000-8000-000000000002', 'Note', 'n-1', 'NoteCleared', ''),
 ('8f5b0a5e-0002-4000-8000-000000000003', 'Note', 'n-2', 'NoteCleared', E'  \t\r\n '),
 ('8f5b0a5e-0002-4000-8000-000000000004', 'Note', 'n-3', 'NoteWritten', E'  padded\n');
SQL
expected=$("${psql[@]}" -c "SELECT (SELECT count(*) FROM $table) + (SELECT count(*) FROM ${table}_text)")
prefix=conf.$run_id

# Debezium: the settings its outbox documentation starts from, with StringConverter for keys and
# values (the payload column's text as the value; what Debezium users with a jsonb payload and
# no schema registry run).
mkdir -p "$work/connect"
cat >"$work/connect/worker.properties" <<EOF
bootstrap.servers=$brokers
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
offset.storage.file.filename=$work/connect/offsets
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:$connect_port
plugin.discovery=service_load
EOF
cat >"$work/connect/outbox.properties" <<EOF
name=conformance-outbox
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
database.hostname=127.0.0.1
database.port=$pg_port
database.user=postgres
database.dbname=app
topic.prefix=confdbz$run_id
plugin.name=pgoutput
slot.name=$dbz_slot
publication.name=$table
publication.autocreate.mode=disabled
snapshot.mode=no_data
table.include.list=public.$table,public.${table}_text
tombstones.on.delete=false
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.table.field.event.id=id
transforms.outbox.table.field.event.key=aggregateid
transforms.outbox.table.field.event.payload=payload
transforms.outbox.table.field.event.timestamp=created_at
transforms.outbox.table.fields.additional.placement=type:header:eventType,correlation:header:correlationId
transforms.outbox.table.field.additional.missing=ignore
transforms.outbox.route.by.field=aggregatetype
transforms.outbox.route.topic.replacement=$prefix.dbz.outbox.event.\${routedByValue}
transforms.outbox.route.tombstone.on.empty.payload=true
transforms.outbox.tracing.span.context.field=tracingspancontext
EOF
cat >"$work/connect/log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="out"/></Root>
    <Logger name="io.debezium" level="INFO"/></Loggers>
</Configuration>
EOF

# outboxd: the migration guide's config, as the guide shows it, with this run's values.
guide_config() {  # guide_config TABLE SLOT PUBLICATION
  /usr/bin/python3 scripts/guide_config.py docs/examples/debezium-outboxd.toml \
    --check-doc docs/migrating-from-debezium.md \
    --set "source:dsn=$dsn" --set "source:slot=$2" --set "source:publication=$3" \
    --set "sink.kafka:\"bootstrap.servers\"=$brokers" --set "outbox:table=public.$1" \
    --set "outbox:topic=$prefix.ox.outbox.event.{aggregate_type}" --set "http:listen=off"
}
guide_config "$table" "$ox_slot" "${table}_ox" >"$work/outboxd.toml" || die "the guide's config (above)"
guide_config "${table}_text" "${ox_slot}_t" "${table}_oxt" >"$work/outboxd-text.toml" || die "the guide's config (above)"
"$build/outboxd" check --config "$work/outboxd.toml" >"$work/check.txt" 2>&1 ||
  { cat "$work/check.txt" >&2; die "outboxd check fails on the guide's config"; }

say "$expected rows in public.$table and public.${table}_text; starting outboxd and Debezium $(ls "$dbz_jars" | sed -n 's/^debezium-connector-postgres-\(.*\)\.jar$/\1/p') in Kafka Connect standalone"
"$build/outboxd" run --config "$work/outboxd.toml" >"$work/outboxd.log" 2>&1 &
"$build/outboxd" run --config "$work/outboxd-text.toml" >"$work/outboxd-text.log" 2>&1 &
java -Xms128m -Xmx1g -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$work/connect/log4j2.xml" -cp "$dbz_jars/*" \
  org.apache.kafka.connect.cli.ConnectStandalone "$work/connect/worker.properties" \
  "$work/connect/outbox.properties" >"$work/connect/connect.log" 2>&1 &

# Every option the router's jar defines must have a row in the migration guide's table.
plugins_jar=$(ls "$dbz_jars"/debezium-connect-plugins-*.jar 2>/dev/null | head -1)
[[ -n $plugins_jar ]] || die "no debezium-connect-plugins jar in $dbz_jars"
mkdir -p "$work/classes"
(cd "$work/classes" && unzip -q -o "$plugins_jar" 'io/debezium/transforms/outbox/*' 'io/debezium/transforms/tracing/*')
options=$(javap -v -p -cp "$work/classes" io.debezium.transforms.outbox.EventRouterConfigDefinition \
    io.debezium.transforms.tracing.ActivateTracingSpan |
  sed -n 's/^ *#[0-9]* = Utf8 *\(\(table\|route\|tracing\)\.[a-z.]*[a-z]\)$/\1/p' | sort -u)
[[ -n $options ]] || die "no Outbox Event Router options found in $plugins_jar"
undocumented=()
for o in $options; do
  grep -q "^| \`$o\`\|, \`$o\`" docs/migrating-from-debezium.md || undocumented+=("$o")
done
say "documented: $(( $(wc -w <<<"$options") - ${#undocumented[@]} )) of $(wc -w <<<"$options") Outbox Event Router options in docs/migrating-from-debezium.md"

rc=0
"$venv/bin/python" scripts/conformance_compare.py --brokers "$brokers" --prefix "$prefix" \
  --expect "$expected" --max-s "$max_s" --summary "$work/summary.txt" || rc=$?
cp "$work/summary.txt" "$out/summary.txt" 2>/dev/null || true
((rc != 2)) || die "not every event arrived (logs: $work/outboxd.log, $work/connect/connect.log)"
((${#undocumented[@]} == 0)) || die "options missing from docs/migrating-from-debezium.md: ${undocumented[*]}"
exit "$rc"
