"""bench/run.py measures what `pip install .` gives unless told otherwise, and every report says which
event loop proxydhcp ran on (issue 13)."""

from __future__ import annotations

import collections
from pathlib import Path

from bench import run


def test_this_venv_is_the_default_install() -> None:
    # The test environment (make venv: `pip install -e .[test]`) has every runtime dependency.
    assert run.install_check() == []


def test_loops_come_from_the_log_lines_of_this_run(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"INFO event loop: asyncio\nserving\n")
    offset = log.stat().st_size
    with log.open("ab") as f:
        f.write(b"2026 INFO proxydhcp.loop event loop: uvloop\nlistening on 69\n")
    assert run.logged_loops(log, offset) == ["uvloop"]
    assert run.logged_loops(log, 0) == ["asyncio", "uvloop"]


def test_the_report_names_the_loop_and_the_install() -> None:
    default = run.loop_summary(collections.Counter({"uvloop": 3}), False, [])
    assert default.startswith("proxydhcp event loop: uvloop (3 server starts); what `pip install .` gives")
    forced = run.loop_summary(collections.Counter({"asyncio": 1}), True, [])
    assert "asyncio (1 server start);" in forced and "--loop asyncio" in forced
    lacking = run.loop_summary(collections.Counter({"asyncio": 2}), False, ["uvloop>=0.19"])
    assert "NOT the default install: the interpreter lacks uvloop>=0.19" in lacking
    assert "unknown" in run.loop_summary(collections.Counter(), False, [])
    md = run.report({}, [], [], True, 1, 0.0, default)
    assert default in md.splitlines()


def test_a_forced_loop_does_not_rewrite_the_readme_summary() -> None:
    assert run.is_full_run(run.parse([])) is True
    assert run.is_full_run(run.parse(["--loop", "asyncio"])) is False
    assert run.parse([]).loop == "installed"
