#!/usr/bin/env python3
"""Compares Debezium's Outbox Event Router records with outboxd's, event by event.

scripts/conformance.sh runs both readers over the same outbox rows, Debezium writing to
<prefix>.dbz.<suffix> and outboxd to <prefix>.ox.<suffix>. This reads every topic under
<prefix>, matches the records of the two sides by their `id` header (the outbox row's id),
and compares topic suffix, key bytes, value bytes (None: a tombstone), headers (names, values,
order) and the record timestamp. It prints a per-event report, a summary, and the Outbox Event
Router options the run exercised with "checked" or "differs".

Exit status: 0 all events identical (or differing only as listed in INTENDED), 1 a difference
not listed, 2 not every event arrived in time.
"""
import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaError

# Headers only one side writes, by design; compared separately and listed in the summary.
# outboxd turns tracingspancontext's traceparent into a W3C header (Debezium needs the
# OpenTelemetry SDK on Connect's class path to do anything with that column, and then writes
# the span it creates, not the row's traceparent).
OUTBOXD_ONLY_HEADERS = {"traceparent"}
# Debezium 3.x adds its connector context to every record (connector option
# extended.headers.enabled, default true); outboxd has no equivalent.
DEBEZIUM_ONLY_HEADERS = {
    "__debezium.context.connectorLogicalName",
    "__debezium.context.connectorName",
    "__debezium.context.runId",
    "__debezium.context.taskId",
}

# Which router option governs each compared field (the options this run configures).
OPTIONS = [
    ("route.by.field, route.topic.replacement", "topic"),
    ("table.field.event.key", "key"),
    ("table.field.event.payload (jsonb and text, StringConverter)", "value"),
    ("route.tombstone.on.empty.payload (NULL, empty and whitespace-only text)", "tombstone"),
    ("table.field.event.id", "header id"),
    ("table.fields.additional.placement (header, alias)", "header eventType"),
    ("table.fields.additional.placement (NULL column), table.field.additional.missing", "header correlationId"),
    ("table.field.event.timestamp", "timestamp"),
    ("tracing.span.context.field", "header traceparent"),
]


def consume(brokers, prefix, expect, max_s):
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"{prefix}.compare",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "topic.metadata.refresh.interval.ms": 1000,
    })
    consumer.subscribe([f"^{prefix.replace('.', '[.]')}[.].*"])
    sides = {"dbz": [], "ox": []}
    # A regex subscription rebalances when a matching topic appears; with nothing committed the
    # reassigned partitions start again from the beginning, so records are keyed by position.
    seen = set()
    deadline = time.monotonic() + max_s
    try:
        while time.monotonic() < deadline:
            if all(len(v) >= expect for v in sides.values()):
                break
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue
                raise SystemExit(f"conformance: consumer error: {msg.error()}")
            rest = msg.topic()[len(prefix) + 1:]
            side, _, suffix = rest.partition(".")
            position = (msg.topic(), msg.partition(), msg.offset())
            if side not in sides or position in seen:
                continue
            seen.add(position)
            sides[side].append({
                "suffix": suffix,
                "key": msg.key(),
                "value": msg.value(),
                "headers": [(k, v) for k, v in (msg.headers() or [])],
                "timestamp": msg.timestamp(),
                "offset": (msg.partition(), msg.offset()),
            })
    finally:
        consumer.close()
    return sides


def event_id(rec):
    for k, v in rec["headers"]:
        if k == "id":
            return v.decode() if v is not None else None
    return None


def show(b):
    if b is None:
        return "null"
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return b.hex()
    return repr(s if len(s) <= 160 else s[:157] + "...")


def compare(d, o):
    """Returns {field: reason} for every field where outboxd's record o differs from Debezium's d."""
    diff = {}
    if d["suffix"] != o["suffix"]:
        diff["topic"] = f"Debezium {d['suffix']!r}, outboxd {o['suffix']!r}"
    if d["key"] != o["key"]:
        diff["key"] = f"Debezium {show(d['key'])}, outboxd {show(o['key'])}"
    if (d["value"] is None) != (o["value"] is None):
        diff["tombstone"] = f"Debezium {show(d['value'])}, outboxd {show(o['value'])}"
    elif d["value"] != o["value"]:
        diff["value"] = f"Debezium {show(d['value'])}, outboxd {show(o['value'])}"
    if d["timestamp"] != o["timestamp"]:
        diff["timestamp"] = f"Debezium {d['timestamp']}, outboxd {o['timestamp']}"
    dh = dict(d["headers"])
    oh = dict(o["headers"])
    for name in sorted(set(dh) | set(oh)):
        if dh.get(name) != oh.get(name):
            diff[f"header {name}"] = (f"Debezium {show(dh[name]) if name in dh else '(absent)'}, "
                                      f"outboxd {show(oh[name]) if name in oh else '(absent)'}")
    # Order of the headers both sides write (one-sided headers left out).
    d_order = [k for k, _ in d["headers"] if k in oh]
    o_order = [k for k, _ in o["headers"] if k in dh]
    if d_order != o_order:
        diff["header order"] = f"Debezium {d_order}, outboxd {o_order}"
    return diff


def intended(field):
    name = field[len("header "):] if field.startswith("header ") else None
    return name in OUTBOXD_ONLY_HEADERS or name in DEBEZIUM_ONLY_HEADERS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--max-s", type=float, default=240)
    ap.add_argument("--summary", required=True)
    args = ap.parse_args()

    sides = consume(args.brokers, args.prefix, args.expect, args.max_s)
    lines = []
    out = lines.append
    by_id = {s: {} for s in sides}
    for s, recs in sides.items():
        for r in recs:
            by_id[s].setdefault(event_id(r), []).append(r)
    ids = sorted(set(by_id["dbz"]) | set(by_id["ox"]), key=lambda x: x or "")
    identical = intended_only = different = missing = 0
    field_diffs = {}
    for i in ids:
        d = by_id["dbz"].get(i, [])
        o = by_id["ox"].get(i, [])
        if len(d) != 1 or len(o) != 1:
            missing += 1
            out(f"event {i}: Debezium {len(d)} record(s), outboxd {len(o)} record(s)")
            continue
        diff = compare(d[0], o[0])
        for f in diff:
            field_diffs.setdefault(f, []).append(i)
        if not diff:
            identical += 1
            out(f"event {i}: identical (topic .{d[0]['suffix']}, key {show(d[0]['key'])}, "
                f"headers {[k for k, _ in d[0]['headers']]}, value {show(d[0]['value'])})")
        elif all(intended(f) for f in diff):
            intended_only += 1
            out(f"event {i}: identical but for intended differences (topic .{d[0]['suffix']}, "
                f"key {show(d[0]['key'])}, value {show(d[0]['value'])}):")
        else:
            different += 1
            out(f"event {i}: DIFFERENT:")
        for f, why in diff.items():
            out(f"    {f}{' (intended)' if intended(f) else ''}: {why}")
    compared = identical + intended_only + different
    out("")
    out(f"Debezium records: {len(sides['dbz'])}, outboxd records: {len(sides['ox'])}, rows: {args.expect}")
    out(f"events compared: {compared}, identical: {identical}, "
        f"identical but for intended differences: {intended_only}, different: {different}, "
        f"unmatched: {missing}")
    out(f"intended differences (headers written by one side only): "
        f"outboxd {sorted(OUTBOXD_ONLY_HEADERS)}, Debezium {sorted(DEBEZIUM_ONLY_HEADERS)}")
    out("fields that differ: " + (", ".join(f"{f} ({len(v)} event(s){', intended' if intended(f) else ''})"
                                            for f, v in sorted(field_diffs.items())) or "none"))
    out("")
    out("Outbox Event Router options exercised:")
    for option, field in OPTIONS:
        bad = field_diffs.get(field, [])
        if field.startswith("header ") and "header order" in field_diffs:
            bad = bad or field_diffs["header order"]
        verdict = "not checked (no event compared)" if not compared else "checked: same" if not bad else (
            f"checked: differs (intended) in {len(bad)} event(s)" if intended(field)
            else f"checked: DIFFERS in {len(bad)} event(s)")
        out(f"  {option:<78} [{field}] {verdict}")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(args.summary, "w", encoding="utf-8") as f:
        f.write(text)
    if compared + missing < args.expect or missing:
        return 2
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
