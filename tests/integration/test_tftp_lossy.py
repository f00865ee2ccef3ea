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
