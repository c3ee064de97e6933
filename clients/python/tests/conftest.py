"""Fixtures for the outboxd package tests: the real PostgreSQL and Kafka of the local stack
(deploy/local/stack.sh up, ports from OUTBOXD_PG_PORT and OUTBOXD_KAFKA_PORT)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from outboxd.testing import temp_database


@pytest.fixture(scope="session")
def database() -> Iterator[tuple[str, Engine]]:
    """One throwaway database for the session's tests (each test uses its own table names)."""
    try:
        with temp_database("pyclient") as db:
            yield db
    except Exception as e:  # pragma: no cover - environment
        if "Connection refused" in str(e):
            pytest.fail(f"the local PostgreSQL is not running (deploy/local/stack.sh up): {e}")
        raise


@pytest.fixture
def engine(database: tuple[str, Engine]) -> Engine:
    return database[1]


_lines: list[str] = []


@pytest.fixture
def report() -> Callable[[str], None]:
    """Adds a line to pytest's summary (the protobuf range, the consumer's throughput)."""
    return _lines.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _lines:
        terminalreporter.section("outboxd package")
        for line in _lines:
            terminalreporter.write_line(line)
