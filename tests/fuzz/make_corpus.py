#!/usr/bin/env python3
"""Seed corpora for the fuzz targets from the golden pgoutput payloads.

    make_corpus.py TESTDATA_DIR OUT_DIR

Writes OUT_DIR/pgoutput_decoder/<case>-<n> (one pgoutput message each, as the
server sent it) and OUT_DIR/copy_frame/<case>-<n> (the same message inside an
XLogData 'w' frame), plus a keepalive and a standby status update, and
OUT_DIR/outbox_mapping/ seeds: logical message contents and outbox rows in the
layout tests/fuzz/outbox_mapping_fuzz.cc reads, and OUT_DIR/timeline_history/ seeds:
timeline history files.
"""
import pathlib
import struct
import sys


def main() -> None:
    testdata, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    decoder, frames = out / "pgoutput_decoder", out / "copy_frame"
    decoder.mkdir(parents=True, exist_ok=True)
    frames.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(testdata.glob("*.hex")):
        for n, line in enumerate(l for l in path.read_text().splitlines() if l and not l.startswith("#")):
            lsn_text, _xid, payload_hex = line.split("\t")
            hi, lo = (int(part, 16) for part in lsn_text.split("/"))
            lsn = hi << 32 | lo
            payload = bytes.fromhex(payload_hex)
            name = f"{path.name.removesuffix('.hex')}-{n}"
            (decoder / name).write_bytes(payload)
            (frames / name).write_bytes(b"w" + struct.pack(">QQq", lsn, lsn + len(payload), 1) + payload)
            count += 1
    frames.joinpath("keepalive").write_bytes(b"k" + struct.pack(">Qq", 0x21ACC50, 1) + b"\x01")
    frames.joinpath("standby").write_bytes(b"r" + struct.pack(">QQQq", 3, 2, 1, 4) + b"\x00")
    mapping = out / "outbox_mapping"
    mapping.mkdir(parents=True, exist_ok=True)
    uuid = b"0190f6a1-8a4b-7c3d-9e2f-0123456789ab"
    message = (b'{"id": "' + uuid + b'", "aggregate_type": "order", "aggregate_id": 42, '
               b'"event_type": "OrderCreated", "payload": {"total": 12.50, "items": [1, {"x": "}"}]}, '
               b'"headers": {"traceparent": "00-abc-01", "n": [1, {"a": null}]}, '
               b'"destination": "orders", "created_at": "2026-11-27T03:09:58.123456+00:00"}')
    mapping.joinpath("message").write_bytes(b"\x00" + message)
    mapping.joinpath("message-deep").write_bytes(b"\x00" + message.replace(b'"n": [1', b'"n": ' + b"[" * 300 + b"]" * 299))
    # Columns: text unless the first byte says otherwise (0x01 NULL, 0x03 binary).
    row = [uuid, b"order", b"42", b"OrderCreated", b'{"total": 12.50}', b'{"traceparent": "00-abc-01"}',
           b"orders", b"2026-11-27 03:09:58.123456+00"]
    for variant in range(5):
        mapping.joinpath(f"row-{variant}").write_bytes(bytes([1 | variant << 1]) + b"\xff".join(row))
    mapping.joinpath("row-nulls").write_bytes(b"\x01" + b"\xff".join(row[:5] + [b"\x01", b"\x01", b"\x01"]))
    # Timeline history files as PostgreSQL writes them (TIMELINE_HISTORY's content).
    history = out / "timeline_history"
    history.mkdir(parents=True, exist_ok=True)
    history.joinpath("promoted").write_bytes(b"1\t0/3000158\tno recovery target specified\n")
    history.joinpath("restored").write_bytes(
        b"1\t0/3000158\tno recovery target specified\n\n2\t0/5000A28\tat restore point \"before\"\n")
    print(f"fuzz corpus: {count} pgoutput messages from {testdata}, outbox mapping and timeline history seeds")


if __name__ == "__main__":
    main()
