"""bench/http.py's report: ratios are medians of per-round ratios, and the small files' spread is the
lowest and highest ratio of a single run to the nginx run beside it."""

from __future__ import annotations

from bench import http


def test_report_ratios_and_spread() -> None:
    small = http.HttpWorkload("http-small", "small", 4096, 2000, 32, small=True)
    large = http.HttpWorkload("http-large", "large", 1 << 30, 1, 1)
    res = {
        "http-small": {
            "proxydhcp": [http.Run(rate=30.0, runs=[30.0, 20.0, 40.0]), http.Run(rate=45.0, runs=[45.0])],
            "nginx": [http.Run(rate=50.0, runs=[50.0, 50.0, 40.0]), http.Run(rate=50.0, runs=[50.0])],
        },
        "http-large": {
            "proxydhcp": [http.Run(rate=90.0), http.Run(rate=200.0), http.Run(rate=50.0)],
            "nginx": [http.Run(rate=100.0), http.Run(rate=100.0), http.Run(rate=25.0)],
        },
    }
    md = http.report(res, {}, [large, small], smoke=False, rounds=3)
    assert "| large | proxydhcp | 90 MB/s | 2.00x (0.90, 2.00, 2.00) |" in md  # not 90/100
    assert "| small | proxydhcp | 38 req/s | 0.75x (0.60, 0.90); single runs 0.40-1.00 |" in md
    assert "memory" not in md  # none measured (--only)
