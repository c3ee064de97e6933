#!/usr/bin/env python3
"""deploy/local/stack.sh status when another process holds the stack's ports.

The script is copied into an empty checkout (its .run/ does not exist, so this checkout's
stack is down) and asked for its status while this process listens on both ports: it must say
that the ports are held and by whom (this pid), not just "down", which sent people to `up`
only to be told the ports are in use.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile

repo = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    return s


def main():
    failures = []
    with tempfile.TemporaryDirectory() as checkout:
        os.makedirs(os.path.join(checkout, "deploy", "local"))
        shutil.copy(os.path.join(repo, "deploy", "local", "stack.sh"), os.path.join(checkout, "deploy", "local"))
        pg, kafka = listener(), listener()
        env = dict(os.environ, OUTBOXD_PG_PORT=str(pg.getsockname()[1]),
                   OUTBOXD_KAFKA_PORT=str(kafka.getsockname()[1]))
        env.pop("OUTBOXD_KAFKA_CONTROLLER_PORT", None)
        run = subprocess.run(["bash", os.path.join(checkout, "deploy", "local", "stack.sh"), "status"],
                             env=env, capture_output=True, text=True, timeout=60)
        out = run.stdout
        print(out, end="")
        if run.returncode == 0:
            failures.append("status exited 0 although this checkout's stack is not running")
        for name, sock in (("postgres", pg), ("kafka", kafka)):
            port = sock.getsockname()[1]
            line = next((l for l in out.splitlines() if l.startswith(name + ":")), "")
            if f"127.0.0.1:{port} is held by another process" not in line:
                failures.append(f"{name}: the status line does not say that the port is held: {line!r}")
            if shutil.which("ss") and f"pid {os.getpid()}" not in line:
                failures.append(f"{name}: the status line does not name the holder (pid {os.getpid()}): {line!r}")
        # With nothing on the ports, plain "down".
        pg.close()
        kafka.close()
        run = subprocess.run(["bash", os.path.join(checkout, "deploy", "local", "stack.sh"), "status"],
                             env=env, capture_output=True, text=True, timeout=60)
        for name in ("postgres", "kafka"):
            if f"{name}: down (127.0.0.1:" not in run.stdout:
                failures.append(f"{name}: free port not reported as plain down: {run.stdout!r}")
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
