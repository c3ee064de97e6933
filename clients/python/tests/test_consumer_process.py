"""The consumer as a process: SIGKILL in the middle of a batch with after_commit e-mails, a
restart that takes its partitions back at once with group.instance.id, and a SIGTERM that ends
it within a bounded time, with a log line at start, assignment, each offset commit and stop."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from outboxd.schema import create_processed_events
from outboxd.testing import make_envelope, pg_url, produce, scalar, unique_name, wait_for

CHILDREN = Path(__file__).resolve().parent / "children"
TIMEOUT = 60.0


class Child:
    """``python -m welcome_consumer`` with its log in a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], name: str) -> None:
        self.log_path = tmp_path / f"{name}.log"
        self.started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "welcome_consumer"], stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONPATH": str(CHILDREN), **env})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def welcome_db(database: tuple[str, Engine], tmp_path: Path) -> Iterator[tuple[Engine, dict[str, str]]]:
    name, engine = database
    table = unique_name("welcomed")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (event_id uuid NOT NULL, customer text NOT NULL)"))
    create_processed_events(engine)
    env = {"DATABASE_URL": pg_url(name), "TOPIC": unique_name("pyt.welcome"), "GROUP": unique_name("welcome"),
           "EMAIL_LOG": str(tmp_path / "emails.txt"), "WELCOMED": table}
    Path(env["EMAIL_LOG"]).touch()
    yield engine, env


def emails(env: dict[str, str]) -> collections.Counter[str]:
    return collections.Counter(line.split()[0] for line in Path(env["EMAIL_LOG"]).read_text().splitlines())


def test_sigkill_mid_batch_effects_once_and_after_commit_duplicates_bounded(
        welcome_db: tuple[Engine, dict[str, str]], tmp_path: Path, report: Callable[[str], None]) -> None:
    engine, env = welcome_db
    events = [make_envelope(aggregate_id=f"c{n:03}") for n in range(300)]
    produce(env["TOPIC"], events)
    env.update(INSTANCE_ID=unique_name("welcome-0"), EMAIL_DELAY="0.01", MAX_BATCH="50")
    first = Child(tmp_path, env, "first")
    try:
        # Kill while the callbacks of a committed batch are being sent.
        assert wait_for(lambda: sum(emails(env).values()) >= 75, TIMEOUT), first.log()
        first.kill()
    finally:
        first.kill()
    sent_before = emails(env)
    # Committed but whose callbacks were not recorded as run: the only ones that may be sent twice.
    with engine.connect() as conn:
        pending = {str(r[0]) for r in conn.execute(text(
            "SELECT event_id FROM processed_events WHERE consumer_group = :g AND after_commit IS NOT NULL"),
            {"g": env["GROUP"]})}
    second = Child(tmp_path, env, "second")
    try:
        assert wait_for(lambda: len(emails(env)) == 300, TIMEOUT), second.log()
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(30) == 0, second.log()
    finally:
        second.kill()

    sent = emails(env)
    duplicated = {i for i, n in sent.items() if n > 1}
    with engine.connect() as conn:
        rows = dict(tuple(r) for r in conn.execute(text(
            f"SELECT event_id::text, count(*) FROM {env['WELCOMED']} GROUP BY event_id")).all())
    report(f"SIGKILL mid-batch: {len(sent_before)} e-mails sent before the kill, {len(pending)} committed events "
           f"with after_commit callbacks pending at the kill; after the restart every one of 300 customers welcomed "
           f"once in the database, e-mails sent twice: {len(duplicated)} (bound {len(pending)})")
    assert rows == {str(e[0]): 1 for e in events}       # database effects once each
    assert set(sent) == {str(e[0]) for e in events}     # every e-mail at least once
    assert duplicated <= pending                        # repeats only from the window
    assert all(n <= 2 for n in sent.values())
    assert scalar(engine, "SELECT count(*) FROM processed_events WHERE consumer_group = :g AND after_commit IS NOT NULL",
                  g=env["GROUP"]) == 0


def test_restart_with_group_instance_id_and_a_bounded_sigterm(
        welcome_db: tuple[Engine, dict[str, str]], tmp_path: Path, report: Callable[[str], None]) -> None:
    engine, env = welcome_db
    env["INSTANCE_ID"] = unique_name("welcome-0")
    produce(env["TOPIC"], [make_envelope(aggregate_id="before")])
    first = Child(tmp_path, env, "first")
    try:
        assert wait_for(lambda: len(emails(env)) == 1, TIMEOUT), first.log()
        first.kill()  # stays a member of the group until session.timeout.ms, unless it comes back
    finally:
        first.kill()
    later = make_envelope(aggregate_id="after")
    produce(env["TOPIC"], [later])
    second = Child(tmp_path, env, "second")
    try:
        assert wait_for(lambda: str(later[0]) in emails(env), TIMEOUT), second.log()
        took = time.monotonic() - second.started
        # SIGTERM: the batch in progress, the offsets, then exit.
        stopping = time.monotonic()
        second.proc.send_signal(signal.SIGTERM)
        code = second.proc.wait(30)
        stop_took = time.monotonic() - stopping
    finally:
        second.kill()
    log = second.log()
    report(f"restart with group.instance.id: first record handled {took:.2f} s after the process started; "
           f"SIGTERM to exit: {stop_took:.2f} s")
    assert took < 5.0, f"{took:.1f} s\n{log}"
    assert code == 0 and stop_took < 20, log
    for line in ("starting: topics", "static member", "assigned", "committed offsets", "1 processed", "SIGTERM: stopping",
                 "stopped: 1 processed"):
        assert line in log, f"no {line!r} in the log:\n{log}"
