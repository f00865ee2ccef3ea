"""TFTP over IPv6 (issue 16/20): a server on `::` serves IPv6 and IPv4 clients alike (dual stack), with
the same confinement; `proxydhcp tftp --address ::` is accepted. Real clients: curl and tftp-hpa."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proxydhcp.cli import app
from proxydhcp.outcome import TransferOutcome
from tests.integration.tftp_fixtures import RunningServer, make_tree, start_server, stop_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dual_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("tftp6") / "root"
    root.mkdir()
    contents = make_tree(root)
    running = start_server(root, contents, address="::")
    try:
        yield running
    finally:
        stop_server(running)


def curl(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-s", "-S", *extra, "-o", str(out), url], capture_output=True, timeout=30)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("host", ["[::1]", "127.0.0.1"])
@pytest.mark.parametrize("blksize", [None, "1400"])
def test_curl_fetches_over_both_families(dual_stack: RunningServer, tmp_path: Path, host: str,
                                         blksize: str | None) -> None:  # fmt: skip
    out = tmp_path / "got"
    before = len(dual_stack.finished)
    extra = ("--tftp-blksize", blksize) if blksize else ()
    done = curl(f"tftp://{host}:{dual_stack.port}/random3m", out, *extra)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == dual_stack.contents["random3m"]
    stats = dual_stack.wait_finished(before + 1)[before:]
    family = "::1" if host == "[::1]" else "::ffff:127.0.0.1"
    assert any(s.client[0] == family and s.outcome is TransferOutcome.COMPLETED for s in stats)


@pytest.mark.skipif(shutil.which("tftp") is None, reason="needs tftp-hpa")
def test_tftp_hpa_over_ipv6_and_confinement(dual_stack: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "file.bin"
    done = subprocess.run(
        ["tftp", "-6", "::1", str(dual_stack.port), "-m", "binary", "-c", "get", "sub/dir/file.bin",
         str(out)],
        capture_output=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert out.read_bytes() == dual_stack.contents["sub/dir/file.bin"], done
    escaped = curl(f"tftp://[::1]:{dual_stack.port}/escape", tmp_path / "secret")
    assert escaped.returncode != 0  # the symlink out of the root is refused over IPv6 too
    assert not (tmp_path / "secret").exists() or b"secret" not in (tmp_path / "secret").read_bytes()


def test_cli_tftp_accepts_an_ipv6_address(tmp_path: Path) -> None:
    # `proxydhcp tftp --address ::` used to exit with "not an IPv4 address" (issue 20).
    result = CliRunner().invoke(app, ["tftp", "--root", str(tmp_path / "missing"), "--address", "::"])
    assert result.exit_code == 2
    assert "--root" in result.output and "--address" not in result.output
    bad = CliRunner().invoke(app, ["tftp", "--root", str(tmp_path), "--address", "::g"])
    assert bad.exit_code == 2 and "--address: not an IP address: '::g'" in bad.output
