"""`proxydhcp tftp` configured like `serve`: the per-client cap comes from a flag, the environment
or the file's [tftp] section (issue: 100 concurrent reads from one address got 84 refusals, and
nothing could raise the cap)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

READERS = 100


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _first_replies(port: int) -> list[bytes]:
    """READERS read requests from one address, none acknowledged: every transfer the server takes
    stays in flight, so each reply is a first DATA block or a refusal."""
    socks = []
    try:
        for _ in range(READERS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            socks.append(s)
            s.sendto(b"\0\1f\0octet\0", ("127.0.0.1", port))
        return [s.recvfrom(2048)[0][:2] for s in socks]
    finally:
        for s in socks:
            s.close()


def _serve(root: Path, port: int, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "proxydhcp", "tftp", "--root", str(root), "--address", "127.0.0.1",
            "--port", str(port), *flags]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROXYDHCP_")}
    proc = subprocess.Popen(argv, env={**environ, **(env or {})}, cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return proc  # bound by the server
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("proxydhcp tftp did not start")


@pytest.mark.parametrize(
    ("how", "flags", "env", "config"),
    [
        ("default", (), {}, None),
        ("flag", ("--max-transfers-per-client", "100"), {}, None),
        ("environment", (), {"PROXYDHCP_TFTP__MAX_TRANSFERS_PER_CLIENT": "100"}, None),
        ("file", (), {}, "[tftp]\nmax_transfers_per_client = 100\n"),
    ],
)
def test_the_per_client_cap_of_the_standalone_server_can_be_raised(
    tmp_path: Path, how: str, flags: tuple[str, ...], env: dict[str, str], config: str | None
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(os.urandom(4 * 512))
    if config is not None:
        (tmp_path / "tftp.toml").write_text(config)
        flags = ("-c", str(tmp_path / "tftp.toml"))
    port = _free_port()
    proc = _serve(root, port, *flags, env=env)
    try:
        replies = _first_replies(port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    data, refused = replies.count(b"\0\3"), replies.count(b"\0\5")
    if how == "default":
        assert (data, refused) == (16, READERS - 16)  # max_transfers_per_client = 16
    else:
        assert (data, refused) == (READERS, 0), how
