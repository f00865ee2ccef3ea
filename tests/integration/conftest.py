"""Fixtures for the namespace integration tests: a `Lab` per test (skipped unless root) and a
factory that runs `python -m proxydhcp serve` inside one of its namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.netlab import Lab, Netns, have_root_netns

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if have_root_netns():
        return
    skip = pytest.mark.skip(reason="needs root and `ip netns` (network namespace tests)")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab() -> Iterator[Lab]:
    if not have_root_netns():
        pytest.skip("needs root and `ip netns`")
    with Lab(prefix="pds") as made:
        yield made


class Proxy:
    """One `proxydhcp serve` process in a lab namespace, with its log."""

    def __init__(self, node: Netns, proc: subprocess.Popen[bytes]) -> None:
        self.node = node
        self.proc = proc
        self.logfile: Path = proc.logfile  # type: ignore[attr-defined]

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_log(self, *parts: str, timeout: float = 15.0, after: int = 0) -> str:
        """Wait until one log line (past offset `after`) contains every one of `parts`; return it.
        Fails early if the process dies."""
        text = " + ".join(repr(p) for p in parts)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log()[after:].splitlines():
                if all(part in line for part in parts):
                    return line
            if self.proc.poll() is not None:
                pytest.fail(f"proxydhcp exited with {self.proc.returncode} before {text}:\n{self.log()}")
            time.sleep(0.05)
        pytest.fail(f"{text} not in one line of the proxydhcp log within {timeout}s:\n{self.log()}")

    def signal(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)

    def pid(self) -> int:
        """The PID of the Python process itself (under `ip netns exec`)."""
        for pid in (self.proc.pid, *self._children()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"proxydhcp" in cmdline and b"python" in cmdline.split(b"\0", 1)[0]:
                return pid
        raise LookupError("proxydhcp process not found")

    def _children(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def spawn_proxy(
    lab: Lab, ns: str, args: Sequence[str], *, name: str = "proxydhcp", wrapper: Sequence[str] = ()
) -> Proxy:
    """Start `[WRAPPER] python -m proxydhcp serve ARGS` in namespace `ns` (no PROXYDHCP_* from our
    environment); `wrapper` is e.g. a `setpriv ...` command line that runs it with fewer privileges."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYDHCP_")}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = lab.ns(ns).spawn(
        [*wrapper, sys.executable, "-m", "proxydhcp", "serve", *args], log=f"{ns}-{name}.log", env=env
    )
    return Proxy(lab.ns(ns), proc)


@pytest.fixture
def start_proxy(lab: Lab) -> Iterator[Callable[..., Proxy]]:
    """`start_proxy(ns, args, ready="serving proxyDHCP")`: a running proxydhcp, stopped at the end."""
    started: list[Proxy] = []

    def start(ns: str, args: Sequence[str], *, ready: str | None = "serving proxyDHCP") -> Proxy:
        proxy = spawn_proxy(lab, ns, args, name=f"proxydhcp-{len(started)}")
        started.append(proxy)
        if ready:
            proxy.wait_log(ready)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def tftp_root(files: dict[str, bytes]) -> Path:
    """A TFTP root readable by anyone (so `--user nobody` can serve it); the caller removes it."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="pds-tftp-"))
    root.chmod(0o755)
    for name, data in files.items():
        path = root / name
        path.write_bytes(data)
        path.chmod(0o644)
    return root
