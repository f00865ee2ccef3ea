"""sockets6: IPv6 interfaces from /proc/net/if_inet6, which ones to serve, and the DUID (DUID-LL of the
first served interface's MAC: stable across restarts, no state file)."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from proxydhcp.dhcp6.options import duid_ll, duid_mac
from proxydhcp.serve import sockets6
from proxydhcp.serve.sockets import InterfaceError

IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
20010db8000100000000000000000002 04 40 00 80     eth0
fe80000000000000505400fffe123456 04 40 20 80     eth0
20010db8000900000000000000000002 05 40 00 c0     eth1
fe80000000000000505400fffe999999 05 40 20 80     eth1
"""


def test_interfaces_from_proc_skip_tentative_addresses(tmp_path: Path) -> None:
    proc = tmp_path / "if_inet6"
    proc.write_text(IF_INET6)
    found = {i.name: i for i in sockets6.interfaces6(proc)}
    assert [a for a, _ in found["eth0"].addresses] == [
        IPv6Address("2001:db8:1::2"),
        IPv6Address("fe80::5054:ff:fe12:3456"),
    ]
    assert found["eth0"].index == 4 and found["eth0"].addresses[0][1] == 64
    # flags 0xc0 include IFA_F_TENTATIVE (0x40): still in DAD, not bindable yet
    assert [a for a, _ in found["eth1"].addresses] == [IPv6Address("fe80::5054:ff:fe99:9999")]
    assert sockets6.interfaces6(tmp_path / "missing") == []  # IPv6 disabled


def test_select_and_duid(tmp_path: Path) -> None:
    proc = tmp_path / "if_inet6"
    proc.write_text(IF_INET6)
    mac = bytes.fromhex("525400123456")
    available = [
        sockets6.Interface6(i.name, i.index, mac if i.name == "eth0" else None, i.addresses)
        for i in sockets6.interfaces6(proc)
    ]
    chosen = sockets6.select_interfaces6(available, [], [IPv6Network("2001:db8:1::/64")])
    assert [i.name for i in chosen] == ["eth0"]
    # every prefix behind a relay: each interface with a routable address
    assert [i.name for i in sockets6.select_interfaces6(available, [], [IPv6Network("2001:db8:7::/64")])] == [
        "eth0"
    ]
    assert [i.name for i in sockets6.select_interfaces6(available, ["eth1", "nope"], [])] == ["eth1"]
    duid = sockets6.server_duid(chosen)
    assert duid == duid_ll(bytes.fromhex("525400123456")) and duid_mac(duid) == "52:54:00:12:34:56"
    assert sockets6.server_duid(list(reversed(available))) == duid  # by name, not by order: stable
    with pytest.raises(InterfaceError, match="no served IPv6 interface has a MAC"):
        sockets6.server_duid([i for i in available if i.name == "eth1"])
    with pytest.raises(InterfaceError, match="no interface with a routable IPv6 address"):
        sockets6.select_interfaces6([i for i in available if i.name in ("lo", "eth1")], [], [])
