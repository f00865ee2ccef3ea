"""Which asyncio event loop runs `serve` and `tftp`: uvloop (a default dependency on Linux) when it
is installed, else the standard one; PROXYDHCP_EVENT_LOOP=asyncio forces the standard one (to compare
them, or where uvloop misbehaves). The choice is logged once, so a log or a bench report says which ran."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any, TypeVar

log = logging.getLogger("proxydhcp.loop")

ENV = "PROXYDHCP_EVENT_LOOP"
T = TypeVar("T")


class EventLoop(StrEnum):
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def choose() -> tuple[EventLoop, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop to run and its factory (None: asyncio's default), from PROXYDHCP_EVENT_LOOP."""
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted not in ("", *EventLoop):
        log.warning("%s=%r is not one of %s: using the default", ENV, wanted, ", ".join(EventLoop))
        wanted = ""
    if wanted == EventLoop.ASYNCIO:
        return EventLoop.ASYNCIO, None
    try:
        import uvloop
    except ImportError:
        if wanted == EventLoop.UVLOOP:
            log.warning("%s=uvloop but uvloop is not installed: using asyncio", ENV)
        return EventLoop.ASYNCIO, None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return EventLoop.UVLOOP, factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on the chosen loop, after one log line naming it."""
    loop, factory = choose()
    log.info("event loop: %s", loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
