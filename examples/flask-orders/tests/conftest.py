"""Prints the end-to-end figures (duplicates Kafka received, orders billed) in pytest's summary,
so that they show in `make test` output even though the test passed and its output was captured."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_lines: list[str] = []


@pytest.fixture
def report() -> Callable[[str], None]:
    return _lines.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _lines:
        terminalreporter.section("flask-orders end to end")
        for line in _lines:
            terminalreporter.write_line(line)
