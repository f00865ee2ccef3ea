"""proxydhcp.eventloop: uvloop by default on Linux (a declared dependency), asyncio when forced or
when uvloop is absent, and a warning (not a crash) for a value it does not know."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from proxydhcp import eventloop
from proxydhcp.eventloop import EventLoop


async def _which() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_default_is_uvloop_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert sys.platform == "linux"
    loop, factory = eventloop.choose()
    assert loop is EventLoop.UVLOOP and factory is not None
    assert eventloop.run(_which()) == "uvloop"


@pytest.mark.parametrize("value", ["asyncio", "ASYNCIO ", "Asyncio"])
def test_forced_asyncio(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(eventloop.ENV, value)
    assert eventloop.choose() == (EventLoop.ASYNCIO, None)
    assert eventloop.run(_which()) == "asyncio"


def test_absent_uvloop_falls_back(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.choose() == (EventLoop.ASYNCIO, None)
    monkeypatch.setenv(eventloop.ENV, "uvloop")
    with caplog.at_level(logging.WARNING, logger="proxydhcp.loop"):
        assert eventloop.choose() == (EventLoop.ASYNCIO, None)
    assert "uvloop is not installed" in caplog.text


def test_unknown_value_warns_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(eventloop.ENV, "trio")
    with caplog.at_level(logging.WARNING, logger="proxydhcp.loop"):
        loop, _ = eventloop.choose()
    assert loop is EventLoop.UVLOOP
    assert "'trio' is not one of uvloop, asyncio" in caplog.text


def test_run_logs_the_loop(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    with caplog.at_level(logging.INFO, logger="proxydhcp.loop"):
        eventloop.run(_which())
    assert "event loop: asyncio" in caplog.text
