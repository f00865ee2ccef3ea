"""The servers compared: how to start each one, on which port, and what it claims to support.

Every TFTP server runs in the bench's own namespace on 127.0.0.1 (dnsmasq's TFTP port is fixed at 69, so
the namespace is what gives it a port of its own); every proxyDHCP server runs in a server namespace joined
to a client namespace by a veth pair. Nothing listens on the machine's real interfaces.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import setup_env

REPO = setup_env.BENCH.parent


@dataclass(frozen=True)
class Ctx:
    """What a server's command line needs."""

    root: Path  # TFTP root
    port: int  # TFTP port (ignored by dnsmasq: 69)
    iface: str = ""  # proxy: the server's veth
    server_ip: str = ""
    subnet: str = ""


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # "tftp" or "proxy"
    origin: str  # "this project", "C", "Python"
    argv: Callable[[Ctx], list[str]]
    available: Callable[[], bool]
    cwd: Callable[[Ctx], Path] = lambda ctx: REPO
    windowsize: bool = False  # RFC 7440 support, for the table's notes
    serves_4011: bool = True
    port: int = 0  # fixed TFTP port; 0 = the one the harness gives
    note: str = ""


def _venv(tool: str) -> str:
    return str(setup_env.VENV / "bin" / tool)


def _venv_ok() -> bool:
    return (setup_env.VENV / ".bench-installed").exists()


def _atftpd() -> str:
    return str(setup_env.WORK / "atftpd" / "usr" / "sbin" / "atftpd")


def _ours(name: str, python: str, tree: Path = REPO) -> tuple[Peer, Peer]:
    """This project's TFTP and proxy servers as run by `python` (`-m proxydhcp`) from `tree`: the
    checkout itself, or with --baseline an older tree, so a change is measured against it in one run."""
    return (
        Peer(
            name, "tftp", "this project",
            lambda c: [python, "-m", "proxydhcp", "tftp", "--root", str(c.root), "--address", "127.0.0.1",
                       "--port", str(c.port), "--max-blksize", "1468", "--max-windowsize", "16"],
            lambda: Path(python).exists(),
            cwd=lambda c: tree,
            windowsize=True,
        ),
        Peer(
            name, "proxy", "this project",
            lambda c: [python, "-m", "proxydhcp", "serve", "-i", c.iface, "-s", c.subnet,
                       "--server-ip", c.server_ip, "--boot-file", "bios=undionly.kpxe",
                       "--boot-file", "efi-x64=ipxe.efi", "--no-tftp"],
            lambda: Path(python).exists(),
            cwd=lambda c: tree,
        ),
    )


def baseline(python: Path) -> tuple[Peer, Peer]:
    """`proxydhcp@base`: the proxydhcp that `python` imports (a virtual environment of an older
    checkout, e.g. `git worktree add ../base REV` with its own .venv), run from that checkout."""
    return _ours("proxydhcp@base", str(python), python.resolve().parent.parent.parent)


_TFTPY = (
    "import logging, sys, tftpy; logging.getLogger('tftpy').setLevel(logging.ERROR); "
    "tftpy.TftpServer(sys.argv[1]).listen(sys.argv[2], int(sys.argv[3]))"
)

TFTP_PEERS: tuple[Peer, ...] = (
    *_ours("proxydhcp", sys.executable)[:1],
    Peer(
        "tftpd-hpa", "tftp", "C",
        lambda c: ["in.tftpd", "-L", "-s", str(c.root), "-a", f"127.0.0.1:{c.port}"],
        lambda: setup_env.which("in.tftpd") is not None,
        note="forks one process per transfer; memory is the listener's",
    ),
    Peer(
        "dnsmasq", "tftp", "C",
        lambda c: ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--enable-tftp",
                   f"--tftp-root={c.root}", "--listen-address=127.0.0.1", "--bind-interfaces",
                   "--tftp-max=1000",
                   "--quiet-tftp", "--log-facility=-", "--pid-file=", "--user=root"],
        lambda: setup_env.which("dnsmasq") is not None,
        port=69,
    ),
    Peer(
        "atftpd", "tftp", "C",
        lambda c: [_atftpd(), "--daemon", "--no-fork", "--port", str(c.port), "--bind-address", "127.0.0.1",
                   "--logfile", "/dev/null", "--maxthread", "1000", "--user", "root", "--group", "root",
                   str(c.root)],
        lambda: Path(_atftpd()).exists(),
        windowsize=True,
    ),
    Peer(
        "py3tftp", "tftp", "Python",
        lambda c: [_venv("py3tftp"), "--host", "127.0.0.1", "-p", str(c.port)],
        _venv_ok,
        cwd=lambda c: c.root,
        windowsize=True,
    ),
    Peer(
        "tftpy", "tftp", "Python",
        lambda c: [_venv("python"), "-c", _TFTPY, str(c.root), "127.0.0.1", str(c.port)],
        _venv_ok,
    ),
    Peer(
        "PyPXE", "tftp", "Python",
        lambda c: [_venv("pypxe"), "--tftp", "--tftp-port", str(c.port), "--tftp-server-ip", "127.0.0.1",
                   "--netboot-dir", str(c.root)],
        _venv_ok,
    ),
)

PROXY_PEERS: tuple[Peer, ...] = (
    *_ours("proxydhcp", sys.executable)[1:],
    Peer(
        "dnsmasq", "proxy", "C",
        lambda c: ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", f"--interface={c.iface}",
                   "--bind-interfaces", f"--dhcp-range={c.subnet.split('/')[0]},proxy",
                   '--pxe-service=x86PC,"Boot",undionly', '--pxe-service=X86-64_EFI,"Boot",ipxe',
                   "--log-facility=-", "--quiet-dhcp", "--pid-file=", "--leasefile-ro", "--user=root"],
        lambda: setup_env.which("dnsmasq") is not None,
    ),
    Peer(
        "PyPXE", "proxy", "Python",
        lambda c: [_venv("pypxe"), "--dhcp-proxy", "--no-tftp", "--dhcp-server-ip", c.server_ip,
                   "--dhcp-fileserver", c.server_ip, "--netboot-file", "undionly.kpxe"],
        _venv_ok,
        serves_4011=False,
    ),
)

SMOKE_NAMES = ("proxydhcp", "tftpd-hpa", "dnsmasq")
