"""`serve` as a process: co-located mode, SIGHUP reload, SIGTERM with TFTP in flight, --user, and
the one-line errors when a port is taken or privileges are missing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from proxydhcp.dhcp.codes import MessageType
from tests.integration import dhcpclient as dc
from tests.integration.conftest import Proxy, spawn_proxy, tftp_root
from tests.integration.readable_install import interpreter, readable_install

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

PXE, CLI = "10.77.0.2", "10.77.0.50"
FLAGS = ["--interface", "eth0", "--boot-file", "bios=undionly.kpxe", "--boot-file", "efi-x64=ipxe.efi"]


def _ack(
    lab, xid: int, *, port: int = 4011, arch: int = 7, server_id: str | None = None
) -> dc.Received | None:
    sock = dc.udp_socket(lab.ns("cli").name, port=port, address=CLI)
    try:
        req = dc.request4011(
            f"52:54:00:11:00:{xid & 255:02x}", xid, ciaddr=CLI, arch=arch, server_id=server_id
        )
        got = dc.exchange(sock, req, (PXE, 4011), window=1.5, until=lambda g: bool(dc.replies_for(g, xid)))
        replies = dc.replies_for(got, xid, source_ip=PXE)
        return replies[0] if replies else None
    finally:
        sock.close()


def _udp_ports(lab, ns: str) -> set[int]:
    out = lab.ns(ns).run(["ss", "-Hlunp"]).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if "python" in line}


def test_colocated_binds_4011_only_and_answers_without_offer(lab, start_proxy) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE, "cli": CLI})
    start_proxy("pxe", [*FLAGS, "--subnet", "10.77.0.0/24", "--colocated", "--no-tftp"])
    assert _udp_ports(lab, "pxe") == {4011}
    edk2 = _ack(lab, 0xC01)  # EDK II: from port 4011, no option 54
    assert edk2 is not None and edk2.packet is not None and edk2.packet.file == b"ipxe.efi"
    assert edk2.packet.message_type == MessageType.ACK and edk2.packet.siaddr == IPv4Address(PXE)
    ipxe = _ack(lab, 0xC02, port=68, arch=0, server_id=PXE)  # iPXE: from port 68, 54 = this host
    assert ipxe is not None and ipxe.packet is not None and ipxe.packet.file == b"undionly.kpxe"


def test_sighup_reload_adds_subnet_and_refuses_bad_config(lab, start_proxy, tmp_path: Path) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE, "cli": CLI})
    config = tmp_path / "proxydhcp.toml"
    base = '[boot]\nefi-x64 = "ipxe.efi"\n\n[[subnet]]\ncidr = "10.88.0.0/24"\n'
    config.write_text(base)
    proxy = start_proxy("pxe", ["-c", str(config), "--interface", "eth0", "--no-tftp", "-v"])
    assert _ack(lab, 0xD01) is None  # 10.77.0.0/24 is not enabled yet
    proxy.wait_log("xid=0x00000d01", "not enabled")

    xids = iter(range(0xD02, 0xD06))

    def reload(text: str, *expect: str) -> bytes | None:
        """Write the config, SIGHUP, wait for the log line with `expect`; the boot file a client gets now."""
        config.write_text(text)
        mark = len(proxy.log())
        proxy.signal(signal.SIGHUP)
        proxy.wait_log(*expect, after=mark)
        ack = _ack(lab, next(xids))
        return None if ack is None or ack.packet is None else ack.packet.file

    assert reload(base + '\n[[subnet]]\ncidr = "10.77.0.0/24"\nboot = { efi-x64 = "new.efi" }\n',
                  "configuration reloaded") == b"new.efi"  # fmt: skip
    # The old configuration stays in force when the new one is refused.
    assert reload(base + '\n[[subnet]]\ncidr = "10.77.0.0/33"\n', "reload refused", "subnet") == b"new.efi"
    no_subnet = '[boot]\nefi-x64 = "ipxe.efi"\n'  # valid TOML, but it would answer no one
    assert reload(no_subnet, "reload refused", "no subnet") == b"new.efi"
    # D02-D04 share one shape, so the reply memo answers them; a reload must not leave it answering.
    assert reload(base + '\n[[subnet]]\ncidr = "10.77.0.0/24"\nboot = { efi-x64 = "newer.efi" }\n',
                  "configuration reloaded") == b"newer.efi"  # fmt: skip
    assert proxy.proc.poll() is None


def _tftp_slow_read(sock: socket.socket, server: str, name: str, on_block: int, action) -> bytes:
    """RRQ (blksize 512), ACK every block after a short pause; call `action()` after block `on_block`."""
    sock.settimeout(5)
    sock.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", (server, 69))
    data, expected = bytearray(), 1
    for _ in range(10_000):
        pkt, peer = sock.recvfrom(2048)
        opcode, block = struct.unpack("!HH", pkt[:4])
        assert opcode == 3, f"expected DATA, got {pkt[:40]!r}"
        if block == expected:
            data += pkt[4:]
            expected = (expected + 1) & 0xFFFF
        sock.sendto(struct.pack("!HH", 4, block), peer)
        if block == on_block:
            action()
        if len(pkt) < 516:
            return bytes(data)
        time.sleep(0.01)
    raise AssertionError("transfer did not end")


def test_sigterm_lets_tftp_transfer_finish_then_exits_0(lab, start_proxy) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE, "cli": CLI})
    content = bytes(range(256)) * 200  # 51,200 bytes: 101 blocks of 512, ~1.5 s at 10 ms per ACK
    root = tftp_root({"big.bin": content})
    try:
        proxy = start_proxy("pxe", [*FLAGS, "--subnet", "10.77.0.0/24", "--tftp-root", str(root)])
        sock = dc.udp_socket(lab.ns("cli").name, port=0, address=CLI)
        got = _tftp_slow_read(sock, PXE, "big.bin", 10, lambda: proxy.signal(signal.SIGTERM))
        sock.close()
        assert got == content
        assert proxy.proc.wait(15) == 0
        assert "stopped" in proxy.log()
        assert _udp_ports(lab, "pxe") == set()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _assert_nobody_with_caps(pid: int, caps: int) -> None:
    """The process runs as nobody (real, effective, saved, fs uid) with exactly `caps` effective."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True, check=True).stdout.strip()
    assert fields["Uid"].split() == [nobody] * 4
    assert int(fields["CapEff"], 16) == caps, fields["CapEff"]
    assert int(fields["CapPrm"], 16) & ~caps == 0, fields["CapPrm"]


def _answers_and_serves(lab, xid: int, content: bytes) -> None:
    """A 4011 ACK with the arch's file, then `undionly.kpxe` over TFTP (busybox) equal to `content`."""
    ack = _ack(lab, xid)
    assert ack is not None and ack.packet is not None and ack.packet.file == b"ipxe.efi"
    fetch = ["busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l", "/dev/stdout", PXE]
    out = lab.ns("cli").run(fetch, timeout=20)
    assert out.stdout == content.decode()


def test_user_nobody_drops_root_and_still_serves(lab, start_proxy) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE, "cli": CLI})
    root = tftp_root({"undionly.kpxe": b"pxe-rom" * 300})
    try:
        proxy = start_proxy(
            "pxe", [*FLAGS, "--subnet", "10.77.0.0/24", "--tftp-root", str(root), "--user", "nobody"]
        )
        proxy.wait_log("dropped privileges to nobody")
        _assert_nobody_with_caps(proxy.pid(), 0)
        _answers_and_serves(lab, 0xE01, b"pxe-rom" * 300)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _serve_fails(lab, args: list[str], wrapper: list[str] | None = None) -> str:
    proxy = spawn_proxy(lab, "pxe", args, name="fail", wrapper=wrapper or ())
    code = proxy.proc.wait(20)
    assert code == 2, proxy.log()
    return proxy.log()


def test_port_67_taken_by_dhcpd_is_one_clear_line(lab) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE})
    lab.ns("pxe").start_dhcpd("eth0", [("10.77.0.0/24", "10.77.0.100", "10.77.0.150", None)])
    log = _serve_fails(lab, [*FLAGS, "--subnet", "10.77.0.0/24", "--no-tftp"])
    assert "another DHCP server (dhcpd, dnsmasq, kea)" in log and "--colocated" in log
    assert "Traceback" not in log


def test_port_69_taken_suggests_no_tftp(lab, tmp_path: Path) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE})
    with dc.in_netns(lab.ns("pxe").name):
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("0.0.0.0", 69))
    try:
        log = _serve_fails(lab, [*FLAGS, "--subnet", "10.77.0.0/24", "--tftp-root", str(tmp_path)])
    finally:
        holder.close()
    assert "--no-tftp" in log and "--tftp-port" in log and "Traceback" not in log


def test_unprivileged_bind_says_what_is_needed(lab) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE})
    # Root without CAP_NET_BIND_SERVICE (this Python may not be readable by an ordinary user).
    log = _serve_fails(
        lab,
        [*FLAGS, "--subnet", "10.77.0.0/24", "--no-tftp"],
        wrapper=["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"],
    )
    assert "needs root or CAP_NET_BIND_SERVICE" in log and "Traceback" not in log, log


def test_unprivileged_with_only_cap_net_bind_service_answers_and_serves(lab) -> None:
    # The model of examples/proxydhcp.service: started as an ordinary user whose only capability is
    # CAP_NET_BIND_SERVICE (ambient), never root. It must bind 67/4011/69, answer and serve. It runs
    # from an install `nobody` can read: the checkout may be in a directory only root can enter.
    lab.segment("10.77.0.0/24", {"pxe": PXE, "cli": CLI})
    content = b"unit-rom" * 250
    root = tftp_root({"undionly.kpxe": content})
    install = readable_install()
    unit = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            "--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service", "--no-new-privs"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXYDHCP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(install), PYTHONUNBUFFERED="1")
    argv = [*unit, "env", "-C", str(install), interpreter(), "-S", "-m", "proxydhcp", "serve",
            *FLAGS, "--subnet", "10.77.0.0/24", "--tftp-root", str(root)]  # fmt: skip
    proxy = Proxy(lab.ns("pxe"), lab.ns("pxe").spawn(argv, log="pxe-unit.log", env=env))
    try:
        proxy.wait_log("serving proxyDHCP")
        pid = proxy.pid()
        cap_net_bind_service = 1 << 10
        _assert_nobody_with_caps(pid, cap_net_bind_service)
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"CapBnd:\t{cap_net_bind_service:016x}" in status
        _answers_and_serves(lab, 0xE11, content)
    finally:
        proxy.node.stop(proxy.proc)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(install, ignore_errors=True)
