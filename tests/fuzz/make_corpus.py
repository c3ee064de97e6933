#!/usr/bin/env python3
"""Seed corpora for the fuzz targets from the golden pgoutput payloads.

    make_corpus.py TESTDATA_DIR OUT_DIR

Writes OUT_DIR/pgoutput_decoder/<case>-<n> (one pgoutput message each, as the
server sent it) and OUT_DIR/copy_frame/<case>-<n> (the same message inside an
XLogData 'w' frame), plus a keepalive and a standby status update.
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
    print(f"fuzz corpus: {count} pgoutput messages from {testdata}")


if __name__ == "__main__":
    main()
