"""Both event loops serve (issue 13): uvloop, a default dependency on Linux, runs unless
PROXYDHCP_EVENT_LOOP=asyncio, and the standard loop works when forced or when uvloop is absent.
Each process says in its log which loop ran."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import dhcpclient as dc
from tests.integration.conftest import REPO, spawn_proxy, tftp_root
from tests.integration.tftp_fixtures import fetch

pytestmark = pytest.mark.timeout(60)

# `python -c` with uvloop made unimportable, then the CLI: a machine where uvloop is not installed.
WITHOUT_UVLOOP = "import sys; sys.modules['uvloop'] = None; from proxydhcp.cli import main; main()"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Standalone:
    """`proxydhcp tftp` on 127.0.0.1 in a subprocess, its output in a log file."""

    def __init__(self, root: Path, log: Path, loop_env: str | None, *, without_uvloop: bool) -> None:
        self.port = _free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYDHCP_")}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        if loop_env is not None:
            env["PROXYDHCP_EVENT_LOOP"] = loop_env
        head = [sys.executable, *(["-c", WITHOUT_UVLOOP] if without_uvloop else ["-m", "proxydhcp"])]
        argv = [*head, "tftp", "--root", str(root), "--address", "127.0.0.1", "--port", str(self.port)]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_log(self, part: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if part in text:
                return text
            assert self.proc.poll() is None, f"proxydhcp tftp exited {self.proc.returncode}:\n{text}"
            time.sleep(0.05)
        pytest.fail(f"{part!r} not in the log within {timeout}s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def content(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(1468 * 40 + 17)
    (root / "boot.bin").write_bytes(data)
    yield root, data


@pytest.mark.parametrize(
    ("loop_env", "without_uvloop", "expected"),
    [
        (None, False, "uvloop"),  # the default install (uvloop is a Linux dependency)
        ("asyncio", False, "asyncio"),  # forced
        ("uvloop", True, "asyncio"),  # asked for, but absent: falls back
        (None, True, "asyncio"),  # absent
    ],
)
def test_standalone_tftp_serves_on_the_loop_it_names(
    content: tuple[Path, bytes], tmp_path: Path, loop_env: str | None, without_uvloop: bool, expected: str
) -> None:
    root, data = content
    server = Standalone(root, tmp_path / "tftp.log", loop_env, without_uvloop=without_uvloop)
    try:
        log = server.wait_log("event loop:")
        assert f"event loop: {expected}" in log, log
        got = None
        for _ in range(50):  # the loop line comes before the bind: retry until it listens
            try:
                got = fetch(server.port, "boot.bin", {"blksize": "1468", "windowsize": "4"}, timeout=0.5)
                break
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.1)
        assert got is not None, server.log.read_text()
        assert got.data == data and got.oack == {"blksize": "1468", "windowsize": "4"}
        lockstep = fetch(server.port, "boot.bin")
        assert lockstep.data == data
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log.read_text()


@pytest.mark.netns
def test_serve_with_the_asyncio_loop_answers_and_serves(lab) -> None:
    pxe, cli = "10.77.0.2", "10.77.0.50"
    lab.segment("10.77.0.0/24", {"pxe": pxe, "cli": cli})
    data = b"asyncio-rom" * 300
    root = tftp_root({"undionly.kpxe": data})
    args = ["--interface", "eth0", "--subnet", "10.77.0.0/24", "--boot-file", "efi-x64=ipxe.efi",
            "--tftp-root", str(root)]  # fmt: skip
    proxy = spawn_proxy(lab, "pxe", args, name="asyncio", wrapper=["env", "PROXYDHCP_EVENT_LOOP=asyncio"])
    try:
        proxy.wait_log("serving proxyDHCP")
        assert "event loop: asyncio" in proxy.log(), proxy.log()
        sock = dc.udp_socket(lab.ns("cli").name, port=4011, address=cli)
        try:
            req = dc.request4011("52:54:00:13:00:01", 0x1301, ciaddr=cli, arch=7)
            got = dc.exchange(
                sock, req, (pxe, 4011), window=1.5, until=lambda g: bool(dc.replies_for(g, 0x1301))
            )
        finally:
            sock.close()
        replies = dc.replies_for(got, 0x1301, source_ip=pxe)
        assert replies and replies[0].packet is not None and replies[0].packet.file == b"ipxe.efi"
        out = lab.ns("cli").run(["busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l", "/dev/stdout", pxe])
        assert out.stdout == data.decode()
    finally:
        proxy.stop()
        shutil.rmtree(root, ignore_errors=True)
