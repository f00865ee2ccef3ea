"""bench/run.py: only a full run (every workload and peer, not --smoke) may rewrite the README summary."""

from __future__ import annotations

import pytest

from bench import run


@pytest.mark.parametrize(
    ("argv", "full"),
    [
        ([], True),
        (["--rounds", "5"], True),
        (["--only", "single,window,rollover,storm,small,discover,request,discover-cold,request-cold"], True),
        (["--only", "single,window,rollover,storm,small,discover,request"], False),
        (["--only", "request"], False),
        (["--only", "discover,request"], False),
        (["--servers", "proxydhcp,dnsmasq"], False),
        (["--only", "request", "--servers", "proxydhcp,dnsmasq"], False),
        (["--smoke"], False),
    ],
)
def test_only_full_runs_update_the_readme(argv: list[str], full: bool) -> None:
    assert run.is_full_run(run.parse(argv)) is full
