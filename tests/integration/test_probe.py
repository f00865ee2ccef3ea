"""`proxydhcp probe` in network namespaces the test creates: a client namespace and a server namespace
joined by a veth pair (own addresses, no route out).

(1) only an ordinary DHCP server (dnsmasq-base, no PXE) → exit 1, the E53-class verdict;
(2) `proxydhcp serve` with TFTP → exit 0 and the boot file fetched with the announced size.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]

REPO = Path(__file__).resolve().parents[2]


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


@dataclass
class Segment:
    """srv holds a bridge (srv_if, .1) joining the client namespace (.50) and a DHCP namespace (.2)."""

    srv: str
    cli: str
    dhcp: str
    srv_if: str
    cli_if: str
    dhcp_if: str
    net: str  # "10.a.b"

    def ns(self, ns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]


@pytest.fixture
def segment() -> Iterator[Segment]:
    tag = secrets.token_hex(3)
    a, b = secrets.randbelow(200) + 20, secrets.randbelow(250) + 1
    seg = Segment(f"pbs-{tag}", f"pbc-{tag}", f"pbd-{tag}", f"br{tag}", f"vc{tag}", f"vd{tag}", f"10.{a}.{b}")
    made: list[str] = []
    try:
        for ns in (seg.srv, seg.cli, seg.dhcp):
            _run("ip", "netns", "add", ns)
            made.append(ns)
        _run(*seg.ns(seg.srv, "ip", "link", "add", seg.srv_if, "type", "bridge"))
        for peer_ns, peer_if, host in ((seg.cli, seg.cli_if, 50), (seg.dhcp, seg.dhcp_if, 2)):
            port = f"p{peer_if}"
            _run(
                "ip",
                "link",
                "add",
                port,
                "netns",
                seg.srv,
                "type",
                "veth",
                "peer",
                "name",
                peer_if,
                "netns",
                peer_ns,
            )
            _run(*seg.ns(seg.srv, "ip", "link", "set", port, "master", seg.srv_if, "up"))
            _run(*seg.ns(peer_ns, "ip", "addr", "add", f"{seg.net}.{host}/24", "dev", peer_if))
            _run(*seg.ns(peer_ns, "ip", "link", "set", peer_if, "up"))
        _run(*seg.ns(seg.srv, "ip", "addr", "add", f"{seg.net}.1/24", "dev", seg.srv_if))
        _run(*seg.ns(seg.srv, "ip", "link", "set", seg.srv_if, "up"))
        for ns in made:
            _run(*seg.ns(ns, "ip", "link", "set", "lo", "up"))
        yield seg
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _start_dhcp_server(seg: Segment, background: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """An ordinary DHCP server (no PXE options at all) in its own namespace."""
    background.append(
        subprocess.Popen(
            seg.ns(
                seg.dhcp,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--bind-interfaces",
                f"--interface={seg.dhcp_if}",
                f"--dhcp-range={seg.net}.100,{seg.net}.150,255.255.255.0,10m",
                f"--dhcp-leasefile={tmp_path / 'leases'}",
                "--pid-file=",
                "--user=root",
                "--no-ping",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    _wait_udp_port(seg, seg.dhcp, 67)


def _probe(seg: Segment, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = seg.ns(
        seg.cli, sys.executable, "-m", "proxydhcp", "probe", "-i", seg.cli_if, "--timeout", "3", *args
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)


def _wait_udp_port(seg: Segment, ns: str, port: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        out = subprocess.run(seg.ns(ns, "ss", "-uln"), capture_output=True, text=True, timeout=10).stdout
        if f":{port} " in out:
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on UDP {port} in {ns}")


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq-base")
@pytest.mark.timeout(90)
def test_probe_without_proxy_is_e53(
    segment: Segment, background: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    seg = segment
    _start_dhcp_server(seg, background, tmp_path)
    result = _probe(seg, "--arch", "bios")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PXE-E53" in result.stdout
    assert "offers without 60/66/67 and no proxy" in result.stdout
    assert f"{seg.net}.2  DHCP server (grants addresses)" in result.stdout


def _serve(seg: Segment, root: Path) -> list[str]:
    return seg.ns(
        seg.srv,
        sys.executable,
        "-m",
        "proxydhcp",
        "serve",
        "--interface",
        seg.srv_if,
        "--subnet",
        f"{seg.net}.0/24",
        "--boot-file",
        "bios=undionly.kpxe",
        "--boot-file",
        "efi-x64=ipxe.efi",
        "--tftp-root",
        str(root),
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("arch", "name", "size"), [("bios", "undionly.kpxe", 70001), ("efi-x64", "ipxe.efi", 4000)]
)
def test_probe_against_serve_is_ready(
    segment: Segment,
    background: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    arch: str,
    name: str,
    size: int,
) -> None:
    seg = segment
    root = tmp_path / "tftp"
    root.mkdir()
    (root / name).write_bytes(os.urandom(size))
    background.append(
        subprocess.Popen(_serve(seg, root), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )
    _start_dhcp_server(seg, background, tmp_path)
    _wait_udp_port(seg, seg.srv, 67)
    _wait_udp_port(seg, seg.srv, 69)
    result = _probe(seg, "--arch", arch, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ready"] is True
    (client,) = data["clients"]
    transfer = next(t for t in client["tftp"] if t["complete"])
    assert (transfer["file"], transfer["bytes"]) == (name, size)
    assert transfer["oack"]["tsize"] == str(size)
    roles = {r["server"]: r["role"] for r in client["responders"]}
    assert roles == {f"{seg.net}.1": "proxy", f"{seg.net}.2": "dhcp"}
    assert "READY" in data["summary"]
