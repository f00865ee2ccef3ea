"""`probe --arch efi-x64-http` against `serve --http-port`: the offered URL is fetched over HTTP
(READY), and a URL naming a missing file is NOT READY at the http step with the status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_probe import (  # noqa: F401  (fixtures)
    REPO,
    Segment,
    _probe,
    _start_dhcp_server,
    _wait_udp_port,
    background,
    segment,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq-base"),
    pytest.mark.timeout(90),
]


def _serve_http(seg: Segment, root: Path, boot_file: str) -> list[str]:
    return seg.ns(
        seg.srv, sys.executable, "-m", "proxydhcp", "serve", "--interface", seg.srv_if,
        "--subnet", f"{seg.net}.0/24", "--boot-file", f"efi-x64-http={boot_file}", "--tftp-root", str(root),
        "--http-port", "8080",
    )  # fmt: skip


@pytest.mark.parametrize(("boot_file", "ready"), [("ipxe.efi", True), ("missing.efi", False)])
def test_probe_fetches_the_offered_url(
    segment: Segment,  # noqa: F811
    background: list[subprocess.Popen[bytes]],  # noqa: F811
    tmp_path: Path,
    boot_file: str,
    ready: bool,
) -> None:
    seg = segment
    root = tmp_path / "root"
    root.mkdir()
    (root / "ipxe.efi").write_bytes(os.urandom(1_500_000))
    argv = _serve_http(seg, root, boot_file)
    background.append(subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _start_dhcp_server(seg, background, tmp_path)
    _wait_udp_port(seg, seg.srv, 67)
    result = _probe(seg, "--arch", "efi-x64-http", "--json")
    data = json.loads(result.stdout)
    url = f"http://{seg.net}.1:8080/{boot_file}"
    if ready:
        assert result.returncode == 0, result.stdout + result.stderr
        assert data["ready"] is True and url in data["summary"] and "1500000 bytes" in data["summary"]
    else:
        assert result.returncode == 1
        assert data["summary"] == f"NOT READY at http: {url}: HEAD answered 404 Not Found"
