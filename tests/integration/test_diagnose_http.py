"""`diagnose` follows HTTP in a real capture (tcpdump on loopback): a fetched file, a 404, a refused
connection, a reset mid-file and a stalled transfer, each from a client address of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxydhcp.diagnose.http import judge, read_exchanges
from tests.integration.test_http_server import BIG, start, stop

pytestmark = [pytest.mark.timeout(120)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stalled_client(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tcpdump"), reason="needs root and tcpdump")
def test_diagnose_names_each_http_failure(tmp_path: Path) -> None:
    running = start(tmp_path, "--send-timeout", "3")
    closed = _free_port()
    pcap = tmp_path / "http.pcap"
    dump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-s", "0", "-U", "-w", str(pcap),
         f"tcp port {running.port} or tcp port {closed}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    socks: list[socket.socket] = []
    try:
        time.sleep(1.0)
        curl = shutil.which("curl")
        assert curl
        url = f"http://127.0.0.1:{running.port}"
        for address, target in (("127.0.0.2", f"{url}/small.bin"), ("127.0.0.3", f"{url}/missing.efi"),
                                ("127.0.0.4", f"http://127.0.0.1:{closed}/x")):  # fmt: skip
            subprocess.run([curl, "-s", "--interface", address, "-o", "/dev/null", target])
        socks.append(_stalled_client("127.0.0.5", running.port))  # reset by the server's send watchdog
        time.sleep(6.0)
        socks.append(_stalled_client("127.0.0.6", running.port))
        time.sleep(0.5)
        running.proc.kill()  # the server vanishes: 127.0.0.6's transfer just stops, without FIN or RST
        running.proc.wait()
        time.sleep(8.0)  # the stall lasts past diagnose's timeout before the capture ends
    finally:
        stop(running)
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
        for sock in socks:
            sock.close()
    exchanges, _ = read_exchanges(pcap)
    by_client = {str(e.client): e for e in exchanges}
    assert by_client["127.0.0.2"].outcome == "ok" and by_client["127.0.0.2"].status == 200
    assert by_client["127.0.0.3"].outcome == "http-error" and by_client["127.0.0.3"].status == 404
    assert by_client["127.0.0.4"].outcome == "refused"
    assert by_client["127.0.0.5"].outcome == "reset"
    assert by_client["127.0.0.5"].expected == BIG and by_client["127.0.0.5"].received < BIG
    assert by_client["127.0.0.6"].outcome == "stalled"
    verdict, findings = judge([by_client["127.0.0.3"]]) or (None, [])
    assert verdict is not None and verdict.verdict == "failed" and verdict.step == "http"
    assert "404" in verdict.cause and "/missing.efi" in verdict.cause and verdict.fix
    assert [f.check for f in findings] == ["http-status"]
    # the command line: one note per HTTP client seen without DHCP, with its verdict
    out = subprocess.run([sys.executable, "-m", "proxydhcp", "diagnose", "--json", str(pcap)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    notes = json.loads(out.stdout)["notes"]
    assert any("127.0.0.3" in n and "failed" in n and "404" in n for n in notes), notes
    assert any("127.0.0.4" in n and "refused" in n for n in notes), notes
    assert any("127.0.0.2" in n and "booted" in n for n in notes), notes
