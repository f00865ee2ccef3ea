"""A lossy link: two namespaces joined by a veth pair, 10% of UDP dropped on the client's input.

`netem` is not available on these kernels, and a drop in the output hook would return EPERM to the
sender instead of losing the packet, so loss is an nft rule on the client's input hook.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

from tests.netlab import Lab, have_root_netns

REPO = Path(__file__).resolve().parents[2]
MTU = 33000  # a jumbo veth: few, large blocks keep the test short; blksize must clamp to MTU - 32

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not have_root_netns(), reason="needs root and ip netns"),
    pytest.mark.skipif(
        shutil.which("nft") is None or shutil.which("atftp") is None, reason="needs nft and atftp"
    ),
]


def test_transfer_survives_10_percent_loss(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 5)
    (root / "initrd").write_bytes(data)
    net = secrets.randbelow(250) + 1
    server_ip, client_ip = f"10.250.{net}.1", f"10.250.{net}.2"
    with Lab(prefix="tfl", workdir=tmp_path / "lab") as lab:
        lab.link("srv", "eth0", "cli", "eth0")
        srv, cli = lab.ns("srv"), lab.ns("cli")
        for node, address in ((srv, server_ip), (cli, client_ip)):
            node.run(["ip", "link", "set", "eth0", "mtu", str(MTU)])
            node.run(["ip", "addr", "add", f"{address}/30", "dev", "eth0"])
        cli.run(["nft", "add", "table", "inet", "loss"])
        cli.run(["nft", "add", "chain", "inet", "loss", "inp", "{ type filter hook input priority 0; }"])
        cli.run(["nft", "add", "rule", "inet", "loss", "inp", "meta", "l4proto", "udp",
                 "numgen", "random", "mod", "100", "<", "10", "drop"])  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "proxydhcp", "tftp", "--root", str(root), "--address", server_ip,
                "--port", "69", "--max-blksize", "65464", "--log-format", "json"]  # fmt: skip
        proc = srv.spawn(argv, log="tftp.log", env=env)
        srv.wait_udp_bound(69)
        out = tmp_path / "out"
        # timeout 2: the client asks for 2 s retransmissions (RFC 2349); the server default is 1 s
        result = cli.run(
            ["atftp", "--option", "blksize 65464", "--option", "timeout 2", "--option", "tsize 0",
             "--tftp-timeout", "3", "-g", "-r", "initrd", "-l", str(out), server_ip, "69"],
            check=False, timeout=100,
        )  # fmt: skip
        srv.stop(proc)
        log = (tmp_path / "lab" / "tftp.log").read_text()
        assert result.returncode == 0, result.stdout + result.stderr + log
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    done = [r for r in records if r.get("file") == "initrd" and r.get("outcome") == "completed"]
    assert len(done) == 1, log
    record = done[0]
    assert record["blksize"] == MTU - 32
    assert record["bytes"] == len(data)
    # ~97 packets (OACK + 96 blocks) at 10% loss: some were lost and resent, each after >= 2 s
    assert record["retransmits"] >= 1
    assert record["duration"] >= 1.9 * record["retransmits"]


_WINDOW_CLIENT = """
import hashlib, socket, struct, sys, time
server, name, window = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(0.5)
rrq = b"\\0\\1" + name + b"\\0octet\\0blksize\\0" + b"1468\\0windowsize\\0" + str(window).encode() + b"\\0"
sock.sendto(rrq, (server, 69))
got, expected, peer, sizes = bytearray(), 1, None, set()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        data, addr = sock.recvfrom(70000)
    except socket.timeout:
        if peer is None:
            sock.sendto(rrq, (server, 69))
        continue
    opcode, number = struct.unpack("!HH", data[:4])
    if opcode == 6:
        peer = addr
        sock.sendto(b"\\0\\4\\0\\0", peer)
        continue
    if opcode != 3:
        sys.exit(f"opcode {opcode}: {data!r}")
    sizes.add(len(data))
    if number != expected & 0xFFFF:  # a gap: ACK what arrived in order (RFC 7440)
        sock.sendto(struct.pack("!HH", 4, (expected - 1) & 0xFFFF), peer)
        continue
    got += data[4:]
    last = len(data) < 1472
    if last or expected % window == 0:
        sock.sendto(struct.pack("!HH", 4, number), peer)
    expected += 1
    if last:
        print(hashlib.sha256(got).hexdigest(), max(sizes))
        sys.exit(0)
sys.exit("deadline")
"""


def test_windowed_transfer_over_veth_survives_loss(tmp_path: Path) -> None:
    """Windows leave as GSO sends where the kernel allows: through a 1500-byte-MTU veth with 5% loss
    the client still gets one 1472-byte datagram per block, and the file intact."""
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(150_000)
    (root / "kernel").write_bytes(data)
    net = secrets.randbelow(250) + 1
    server_ip, client_ip = f"10.251.{net}.1", f"10.251.{net}.2"
    with Lab(prefix="tfw", workdir=tmp_path / "lab") as lab:
        lab.link("srv", "eth0", "cli", "eth0")
        srv, cli = lab.ns("srv"), lab.ns("cli")
        for node, address in ((srv, server_ip), (cli, client_ip)):
            node.run(["ip", "link", "set", "eth0", "mtu", "1500"])
            node.run(["ip", "addr", "add", f"{address}/30", "dev", "eth0"])
        cli.run(["nft", "add", "table", "inet", "loss"])
        cli.run(["nft", "add", "chain", "inet", "loss", "inp", "{ type filter hook input priority 0; }"])
        cli.run(["nft", "add", "rule", "inet", "loss", "inp", "meta", "l4proto", "udp",
                 "numgen", "random", "mod", "100", "<", "5", "drop"])  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "proxydhcp", "tftp", "--root", str(root), "--address", server_ip,
                "--port", "69", "--max-blksize", "1468", "--max-windowsize", "8", "--log-format", "json",
                "-v"]  # fmt: skip
        proc = srv.spawn(argv, log="tftp.log", env=env)
        srv.wait_udp_bound(69)
        result = cli.run(
            [sys.executable, "-c", _WINDOW_CLIENT, server_ip, "kernel", "8"], check=False, timeout=90
        )
        srv.stop(proc)
        log = (tmp_path / "lab" / "tftp.log").read_text()
    assert result.returncode == 0, result.stdout + result.stderr + log
    digest, largest = result.stdout.split()
    assert digest == hashlib.sha256(data).hexdigest()
    assert int(largest) == 1472  # one datagram per block: GSO segmented at block boundaries
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    done = [r for r in records if r.get("file") == "kernel" and r.get("outcome") == "completed"]
    assert len(done) == 1 and done[0]["windowsize"] == 8, log
    assert "GSO send" not in log  # the veth took the GSO sends: no fallback (logged at debug, -v)
