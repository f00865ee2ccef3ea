"""proxydhcp's DHCPv6 proxy beside a real DHCPv6 server that knows nothing of PXE (dnsmasq-base: DHCPv6
+ router advertisements), on one lab segment, with a scripted client that follows EDK II's PXE over
IPv6 sequence (issue 20): Solicit → both Advertises (dnsmasq's with an address, ours with 59 and
no IA) → Request to dnsmasq → lease → boot-service Request to [proxy]:4011 from the lease and from
the link-local address → Reply from [proxy]:4011 → TFTP over IPv6 of the file in that Reply.
Then a flood of Solicits from many DUIDs: all answered, memory flat."""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxydhcp.dhcp6 import options
from proxydhcp.dhcp6.packet import IA_OPTIONS, MalformedDhcp6, Message, MessageType, Opt, decode
from tests.dhcp6_requests import DUID_LLT, edk2_boot_request, edk2_solicit, opt, vendor_class
from tests.integration import dhcpclient as dc
from tests.integration.conftest import tftp_root
from tests.netlab import Lab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq-base"),
]

PREFIX = "2001:db8:78::"
RTR, PXE = PREFIX + "1", PREFIX + "2"
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IPXE = b"MZ fake ipxe.efi " * 3000


def no_dad(lab: Lab, *names: str) -> None:
    """Addresses usable at once: no duplicate address detection in these namespaces (set before
    their interfaces exist, so link-local addresses skip it too)."""
    for name in names:
        node = lab.ns(name)
        for key in ("all", "default"):
            node.run(["sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0"], check=False)
            node.run(["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=0"], check=False)


def link_local(lab: Lab, name: str, dev: str = "eth0") -> str:
    out = lab.ns(name).run(["ip", "-o", "-6", "addr", "show", "dev", dev, "scope", "link"]).stdout
    return out.split()[3].split("/")[0]


def udp6(lab: Lab, name: str, address: str, port: int, dev: str = "eth0") -> socket.socket:
    with dc.in_netns(lab.ns(name).name):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        index = socket.if_nametoindex(dev)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, dev.encode())
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 1 << 23)
    sock.bind((address, port, 0, index if address.startswith("fe80") else 0))
    return sock


def ifindex(lab: Lab, name: str, dev: str = "eth0") -> int:
    with dc.in_netns(lab.ns(name).name):
        return socket.if_nametoindex(dev)


Got = list[tuple[Message, tuple[str, int, int, int]]]


def collect(sock: socket.socket, window: float, until: Callable[[Got], bool] | None = None) -> Got:
    got: Got = []
    deadline = time.monotonic() + window
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        data, source = sock.recvfrom(65535)
        with contextlib.suppress(MalformedDhcp6):
            msg = decode(data)
            if isinstance(msg, Message):
                got.append((msg, source))
        if until is not None and until(got):
            break
    return got


def is_proxy(msg: Message) -> bool:
    return msg.option(Opt.SERVERID) is not None and not msg.has_option(Opt.IA_NA)


def assert_proxy_answer(msg: Message, mtype: int, xid: int) -> None:
    assert msg.msg_type == mtype and msg.transaction_id == xid
    assert not {code for code, _ in msg.options} & IA_OPTIONS  # never an address
    assert msg.option(Opt.CLIENTID) == DUID_LLT
    assert msg.option(Opt.VENDOR_CLASS) == bytes.fromhex("00000157 0009") + b"PXEClient"


def _start_dnsmasq6(lab: Lab) -> None:
    # The DHCPv6 server and router advertisements (M=1, the prefix on-link): a real peer, no PXE.
    lab.ns("rtr").spawn(
        ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--log-dhcp", "--conf-file=/dev/null",
         "--port=0", "--bind-interfaces", "--interface=eth0", "--user=root",
         f"--dhcp-range={PREFIX}100,{PREFIX}1ff,64,1h", "--enable-ra",
         f"--dhcp-leasefile={lab.workdir}/dnsmasq6.leases", f"--pid-file={lab.workdir}/dnsmasq6.pid"],
        log="rtr-dnsmasq6.log",
    )  # fmt: skip


def _start_kea6(lab: Lab) -> None:
    # ISC Kea as the DHCPv6 server and radvd for the router advertisements (the other Debian pair).
    rtr, work = lab.ns("rtr"), lab.workdir
    (work / "kea6.json").write_text(json.dumps({"Dhcp6": {
        "interfaces-config": {"interfaces": ["eth0"]},
        "lease-database": {"type": "memfile", "persist": False},
        "server-id": {"type": "LL", "persist": False},  # no DUID file under /var/lib/kea
        "subnet6": [{"id": 1, "subnet": f"{PREFIX}/64", "interface": "eth0",
                     "pools": [{"pool": f"{PREFIX}100-{PREFIX}1ff"}]}],
        "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}], "severity": "INFO"}],
    }}))  # fmt: skip
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "KEA_LOCKFILE_DIR": "none", "KEA_PIDFILE_DIR": str(work)}
    rtr.spawn(["kea-dhcp6", "-c", str(work / "kea6.json")], log="rtr-kea6.log", env=env)
    (work / "radvd.conf").write_text(
        "interface eth0 { AdvSendAdvert on; AdvManagedFlag on; MinRtrAdvInterval 3; MaxRtrAdvInterval 10;\n"
        f"  prefix {PREFIX}/64 {{ AdvOnLink on; AdvAutonomous off; }}; }};\n"
    )
    rtr.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])  # radvd refuses to run without it
    rtr.spawn(["radvd", "-n", "-C", str(work / "radvd.conf"), "-p", str(work / "radvd.pid"), "-m", "stderr"],
              log="rtr-radvd.log")  # fmt: skip


SERVERS6 = {"dnsmasq": (("dnsmasq",), _start_dnsmasq6), "kea": (("kea-dhcp6", "radvd"), _start_kea6)}


@pytest.fixture(params=["dnsmasq"])
def v6lab(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One segment: rtr (the address server: dnsmasq, or kea + radvd), pxe (the proxy), cli."""
    binaries, start = SERVERS6[request.param]
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (kea-dhcp6-server, radvd)")
    no_dad(lab, "wire", "rtr", "pxe", "cli")
    lab.segment("10.78.0.0/24", {"rtr": "10.78.0.1", "pxe": "10.78.0.2", "cli": None})
    lab.ns("rtr").run(["ip", "-6", "addr", "add", f"{RTR}/64", "dev", "eth0", "nodad"])
    lab.ns("pxe").run(["ip", "-6", "addr", "add", f"{PXE}/64", "dev", "eth0", "nodad"])
    start(lab)
    lab.ns("rtr").wait_udp_bound(547)
    yield lab


@pytest.mark.parametrize("v6lab", ["dnsmasq", "kea"], indirect=True)
def test_edk2_sequence_beside_a_dhcpv6_server(v6lab: Lab, start_proxy) -> None:
    lab = v6lab
    root = tftp_root({"ipxe.efi": IPXE})
    proxy = start_proxy(
        "pxe",
        ["--interface", "eth0", "--subnet", f"{PREFIX}/64", "--boot-file", "efi-x64=ipxe.efi",
         "--tftp-root", str(root)],
        ready="serving DHCPv6 proxy",
    )  # fmt: skip
    duid = bytes.fromhex(proxy.wait_log("serving DHCPv6 proxy").rsplit("DUID ", 1)[1].split()[0])
    client = udp6(lab, "cli", "::", 546)
    group = ("ff02::1:2", 547, 0, ifindex(lab, "cli"))

    # 1-2. The PXE Solicit: dnsmasq's Advertise (an address) and ours (2, 1, 59, 16; no IA).
    xid = 0x16A001
    client.sendto(edk2_solicit(xid), group)
    got = collect(
        client, 8.0, until=lambda g: len({is_proxy(m) for m, _ in g if m.transaction_id == xid}) == 2
    )
    ours = [(m, s) for m, s in got if is_proxy(m)]
    theirs = [m for m, _ in got if not is_proxy(m) and m.msg_type == MessageType.ADVERTISE]
    assert ours and theirs, f"want both Advertises, got {got}\n{proxy.log()}"
    advertise, source = ours[0]
    assert_proxy_answer(advertise, MessageType.ADVERTISE, xid)
    assert [code for code, _ in advertise.options] == [2, 1, 59, 16]
    assert advertise.option(Opt.SERVERID) == duid
    assert advertise.option(Opt.BOOTFILE_URL) == f"tftp://[{PXE}]/ipxe.efi".encode()
    assert source[0] == link_local(lab, "pxe") and source[1] == 547

    # 3. The Request goes to dnsmasq (its Server ID): the lease. The proxy stays silent.
    offer = theirs[0]
    ia = offer.option(Opt.IA_NA)
    assert ia is not None
    request = (
        bytes([3]) + (xid + 1).to_bytes(3, "big") + opt(1, DUID_LLT)
        + opt(2, offer.option(Opt.SERVERID) or b"") + opt(3, ia) + opt(8, b"\x00\x00") + opt(61, b"\x00\x07")
        + vendor_class(b"PXEClient:Arch:00007:UNDI:003000")
    )  # fmt: skip
    client.sendto(request, group)
    replies = collect(client, 5.0, until=lambda g: any(m.msg_type == MessageType.REPLY for m, _ in g))
    lease_reply = [m for m, _ in replies if m.msg_type == MessageType.REPLY]
    assert lease_reply and not any(is_proxy(m) for m, _ in replies)
    ia_body = lease_reply[0].option(Opt.IA_NA) or b""
    inner = dict((code, value) for code, value in __import__(
        "proxydhcp.dhcp6.packet", fromlist=["decode_options"]).decode_options(ia_body, 12))  # fmt: skip
    lease = str(__import__("ipaddress").IPv6Address(inner[5][:16]))
    assert lease.startswith(PREFIX)
    lab.ns("cli").run(["ip", "-6", "addr", "add", f"{lease}/64", "dev", "eth0", "nodad"])

    # 4. The boot-service Request from [lease]:4011 and from [link-local]:4011 to [proxy]:4011 →
    #    a Reply from [proxy]:4011 (EDK II reads only that) to the request's address and port 4011.
    for address in (lease, link_local(lab, "cli")):
        sock = udp6(lab, "cli", address, 4011)
        try:
            sock.sendto(edk2_boot_request(duid, xid), (PXE, 4011))
            # The Reply, then the same again at +0.25 s and +1 s (pxe6.pipeline.REPEATS).
            answer = collect(sock, 3.0, until=lambda g: len(g) >= 3)
            assert answer, f"no 4011 Reply to [{address}]:4011\n{proxy.log()}"
            assert len(answer) == 3 and len({m.encode() for m, _ in answer}) == 1, answer
            reply, src = answer[0]
            assert src[:2] == (PXE, 4011), f"Reply from {src}, EDK II reads only [{PXE}]:4011"
            assert_proxy_answer(reply, MessageType.REPLY, xid)
            assert reply.option(Opt.BOOTFILE_URL) == f"tftp://[{PXE}]/ipxe.efi".encode()
        finally:
            sock.close()

    # 5. TFTP over IPv6 of the file named in that Reply, from the lease and from link-local.
    out = lab.workdir / "ipxe.efi"
    fetched = lab.ns("cli").run(["curl", "-s", "-S", "-o", str(out), f"tftp://[{PXE}]/ipxe.efi"], check=False)
    assert fetched.returncode == 0 and out.read_bytes() == IPXE, fetched.stderr
    ll = link_local(lab, "pxe")
    out.unlink()
    fetched = lab.ns("cli").run(
        ["curl", "-s", "-S", "-o", str(out), f"tftp://[{ll}%eth0]/ipxe.efi"], check=False
    )
    assert fetched.returncode == 0 and out.read_bytes() == IPXE, fetched.stderr
    client.close()
    shutil.rmtree(root, ignore_errors=True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("no VmRSS")


def test_solicit_flood_from_many_duids_memory_flat(v6lab: Lab, start_proxy) -> None:
    lab = v6lab
    proxy = start_proxy(
        "pxe",
        ["--interface", "eth0", "--subnet", f"{PREFIX}/64", "--boot-file", "efi-x64=ipxe.efi", "--no-tftp"],
        ready="serving DHCPv6 proxy",
    )  # fmt: skip
    client = udp6(lab, "cli", "::", 546)
    group = ("ff02::1:2", 547, 0, ifindex(lab, "cli"))
    per_round, burst, answered, sizes = 1500, 100, [], []
    for round_ in range(3):
        ours: list[Message] = []
        for start in range(0, per_round, burst):  # bursts of 100 new DUIDs, each collected before the next
            xids = set()
            for i in range(start, start + burst):
                xid = round_ * per_round + i
                duid = options.duid_ll((0x020000000000 + xid).to_bytes(6, "big"))
                client.sendto(edk2_solicit(xid, duid=duid, ia=True), group)
                xids.add(xid)
            got = collect(
                client,
                5.0,
                until=lambda g, x=xids: len({m.transaction_id for m, _ in g if is_proxy(m)} & x) >= len(x),
            )
            ours += [m for m, _ in got if is_proxy(m)]
        for msg in ours:
            assert not {code for code, _ in msg.options} & IA_OPTIONS
        answered.append(len({m.transaction_id for m in ours}))
        sizes.append(rss_kib(proxy.pid()))
    print(f"\nDHCPv6 Solicit flood: answered {answered} of {per_round} per round; VmRSS {sizes} KiB")
    assert answered == [per_round] * 3, answered
    assert sizes[-1] - sizes[0] < 4096, f"VmRSS grew {sizes} KiB over rounds of new DUIDs"
    assert "Traceback" not in proxy.log()
    client.close()


def _probe6(lab: Lab, *args: str) -> tuple[int, dict]:
    import json
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYDHCP_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        lab.ns("cli").cmd([sys.executable, "-m", "proxydhcp", "probe", "-6", "-i", "eth0", "--json", *args]),
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_probe_6_follows_the_edk2_sequence(v6lab: Lab, start_proxy) -> None:
    lab = v6lab
    # Without the proxy: dnsmasq answers the Solicit alone, the classic failure in its IPv6 form.
    code, result = _probe6(lab, "--timeout", "2")
    assert code == 1 and result["ready"] is False
    (client,) = result["clients"]
    assert (client["verdict"], client["step"]) == ("failed", "Solicit"), result["summary"]
    assert "no Advertise carried a Boot File URL" in client["cause"]

    root = tftp_root({"ipxe.efi": IPXE})
    start_proxy(
        "pxe",
        ["--interface", "eth0", "--subnet", f"{PREFIX}/64", "--boot-file", "efi-x64=ipxe.efi",
         "--tftp-root", str(root)],
        ready="serving DHCPv6 proxy",
    )  # fmt: skip
    code, result = _probe6(lab, "--timeout", "3")
    assert code == 0 and result["ready"], result["summary"]
    assert f"tftp://[{PXE}]/ipxe.efi: {len(IPXE)} bytes" in result["summary"]
    events = [e["event"] for e in result["clients"][0]["timeline"]]
    assert events[0] == "SOLICIT" and events.count("ADVERTISE") == 2 and "RRQ" in events
    assert tuple(events[events.index("REQUEST") : events.index("REQUEST") + 2]) == ("REQUEST", "REPLY")
    shutil.rmtree(root, ignore_errors=True)


def test_global_address_added_after_start_is_picked_up(v6lab: Lab, start_proxy) -> None:
    # The proxy host's own address often comes by SLAAC after the service started: its first Solicits
    # are ignored ("no global address"), then it serves without a SIGHUP.
    lab = v6lab
    lab.ns("pxe").run(["ip", "-6", "addr", "del", f"{PXE}/64", "dev", "eth0"])
    proxy = start_proxy(
        "pxe", ["--interface", "eth0", "--subnet", f"{PREFIX}/64", "--boot-file", "efi-x64=ipxe.efi", "-v"],
        ready="serving DHCPv6 proxy",
    )  # fmt: skip
    client = udp6(lab, "cli", "::", 546)
    group = ("ff02::1:2", 547, 0, ifindex(lab, "cli"))
    client.sendto(edk2_solicit(0x16B001), group)
    assert not [m for m, _ in collect(client, 1.5) if is_proxy(m)]
    proxy.wait_log("no global address")
    lab.ns("pxe").run(["ip", "-6", "addr", "add", f"{PXE}/64", "dev", "eth0", "nodad"])
    answered = []
    for attempt in range(6):  # a client retransmits its Solicit; within REFRESH_INTERVAL it is answered
        client.sendto(edk2_solicit(0x16B002 + attempt), group)
        answered = [m for m, _ in collect(client, 1.0) if is_proxy(m)]
        if answered:
            break
    assert answered and answered[0].option(Opt.BOOTFILE_URL) == f"tftp://[{PXE}]/ipxe.efi".encode()
    client.close()


RELAYED = "2001:db8:79::"


@pytest.mark.skipif(shutil.which("dhcrelay") is None, reason="needs isc-dhcp-relay")
def test_relayed_solicit_through_isc_dhcrelay_6(lab: Lab, start_proxy) -> None:
    # The client's link is behind a router running ISC dhcrelay -6 (the IPv6 ip helper-address): its
    # Solicit reaches the proxy as a Relay-Forward with the router's link-address and an Interface-ID,
    # and the Relay-Reply goes back through the relay.
    no_dad(lab, "wire", "rtr", "pxe", "cli")
    lab.segment("10.79.0.0/24", {"rtr": None, "cli": None}, bridge="br1")  # the client's link
    lab.segment("10.78.0.0/24", {"rtr": None, "pxe": None}, bridge="br0")  # the server's link
    rtr, pxe = lab.ns("rtr"), lab.ns("pxe")
    rtr.run(["ip", "-6", "addr", "add", f"{RELAYED}1/64", "dev", "eth0", "nodad"])
    rtr.run(["ip", "-6", "addr", "add", f"{PREFIX}1/64", "dev", "eth1", "nodad"])
    rtr.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    pxe.run(["ip", "-6", "addr", "add", f"{PXE}/64", "dev", "eth0", "nodad"])
    pxe.run(["ip", "-6", "route", "add", f"{RELAYED}/64", "via", f"{PREFIX}1"])
    proxy = start_proxy(
        "pxe",
        ["--interface", "eth0", "--subnet", f"{RELAYED}/64", "--boot-file", "efi-x64=ipxe.efi", "--no-tftp"],
        ready="serving DHCPv6 proxy",
    )  # fmt: skip
    rtr.spawn(
        ["dhcrelay", "-6", "-d", "-I", "--no-pid", "-l", "eth0", "-u", f"{PXE}%eth1"], log="rtr-dhcrelay6.log"
    )
    rtr.wait_udp_bound(547)
    client = udp6(lab, "cli", "::", 546)
    group = ("ff02::1:2", 547, 0, ifindex(lab, "cli"))
    answered: list[Message] = []
    for attempt in range(5):  # dhcrelay may still be joining ff02::1:2: retransmit as a client does
        client.sendto(edk2_solicit(0x16C001 + attempt), group)
        answered = [m for m, _ in collect(client, 1.0) if is_proxy(m)]
        if answered:
            break
    assert answered, proxy.log()
    assert_proxy_answer(answered[0], MessageType.ADVERTISE, answered[0].transaction_id)
    # A relayed client is placed by the relay's link-address; the URL names the proxy's routable address.
    assert answered[0].option(Opt.BOOTFILE_URL) == f"tftp://[{PXE}]/ipxe.efi".encode()
    line = proxy.wait_log("answered SOLICIT")
    assert f"subnet={RELAYED}/64" in line and f"destination=[{PREFIX}1]:547" in line
    client.close()


def test_sighup_reload_changes_the_ipv6_boot_file(v6lab: Lab, start_proxy, tmp_path: Path) -> None:
    import signal

    lab = v6lab
    conf = tmp_path / "proxydhcp.toml"
    conf.write_text(f'[boot]\nefi-x64 = "ipxe.efi"\n\n[[subnet]]\ncidr = "{PREFIX}/64"\n')
    conf.chmod(0o644)
    proxy = start_proxy(
        "pxe", ["--interface", "eth0", "-c", str(conf), "--no-tftp"], ready="serving DHCPv6 proxy"
    )
    client = udp6(lab, "cli", "::", 546)
    group = ("ff02::1:2", 547, 0, ifindex(lab, "cli"))

    def url(xid: int) -> bytes | None:
        client.sendto(edk2_solicit(xid), group)
        got = [
            m for m, _ in collect(client, 3.0, until=lambda g: any(is_proxy(m) for m, _ in g)) if is_proxy(m)
        ]
        return got[0].option(Opt.BOOTFILE_URL) if got else None

    assert url(0x16D001) == f"tftp://[{PXE}]/ipxe.efi".encode()
    conf.write_text(f'[boot]\nefi-x64 = "snp.efi"\n\n[[subnet]]\ncidr = "{PREFIX}/64"\n')
    mark = len(proxy.log())
    proxy.signal(signal.SIGHUP)
    proxy.wait_log("configuration reloaded", after=mark)
    assert url(0x16D002) == f"tftp://[{PXE}]/snp.efi".encode()
    client.close()
