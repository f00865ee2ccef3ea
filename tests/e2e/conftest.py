"""Fixtures for the QEMU end-to-end boots (pytest -m e2e). Needs root; in CI (env CI set) missing
tools are an error, not a skip, so the suite cannot pass by not running."""

from __future__ import annotations

import os

import pytest

from tests.e2e import harness


@pytest.fixture(scope="session")
def e2e_ready() -> None:
    reason = harness.missing_requirements()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"e2e cannot run in CI: {reason} (see .ci/run)")
        pytest.skip(reason)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if harness.TIMINGS:
        terminalreporter.section("e2e boots (seconds from QEMU start to the verdict)")
        for line in harness.TIMINGS:
            terminalreporter.write_line(line)
