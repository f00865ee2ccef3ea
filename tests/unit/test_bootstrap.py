"""The newcomer's two commands (issue 13): one list of Debian packages (debian-packages.txt) that
scripts/bootstrap installs, that the README names and that .ci/run reaches only through the same
`make` targets; every target that needs them runs the bootstrap first; the bootstrap names what is
missing when it cannot install, and does nothing (no pip, no apt) when everything is there."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "scripts" / "bootstrap"
# Packages the current suite, the demo and the bench-smoke run use, and those the e2e firmware,
# HTTP and DHCPv6 tests use (issues 15-17).
NEEDED = {
    "python3-venv", "iproute2", "nftables", "tcpdump", "tshark", "isc-dhcp-server", "isc-dhcp-relay",
    "dnsmasq-base", "tftp-hpa", "atftp", "busybox", "curl", "gcc", "libc6-dev", "qemu-system-x86",
    "ipxe-qemu", "ipxe", "ovmf", "pxelinux", "syslinux-common", "qemu-system-arm", "qemu-efi-aarch64",
    "shim-signed", "grub-efi-amd64-signed", "sbsigntool", "binutils", "openssl", "kea-dhcp6-server",
    "radvd", "nginx-light", "apache2-utils",
}  # fmt: skip
TARGETS = ("demo", "test", "test-fast", "lint", "typecheck", "bench", "bench-smoke", "install")


def listed() -> list[str]:
    return subprocess.run([BOOTSTRAP, "list"], capture_output=True, text=True, check=True).stdout.split()


def test_the_list_holds_what_the_tests_need_once() -> None:
    packages = listed()
    assert len(packages) == len(set(packages)), "a package listed twice"
    assert NEEDED - set(packages) == set()
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", p) for p in packages), packages
    assert "atftpd" not in packages  # bench unpacks its .deb into bench/.work (it conflicts with tftpd-hpa)


def test_readme_quick_start_is_clone_and_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert len(commands) == 3 and commands[0].startswith("git clone"), commands
    assert commands[1:] == ["make demo", "make test"]
    assert "debian-packages.txt" in quick
    # Wherever the README still shows an apt-get line, its packages are in the list.
    for line in re.findall(r"apt-get install[^\n`]*", readme):
        names = [w for w in line.split()[2:] if not w.startswith("-") and w not in {"$missing", "\\"}]
        assert set(names) <= set(listed()), line


def test_ci_runs_the_readme_targets_from_a_clone_in_a_0700_directory() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    code = "\n".join(line for line in ci.splitlines() if not line.lstrip().startswith("#"))
    for target in ("lint", "typecheck", "test", "bench-smoke"):
        assert re.search(rf"^make {target}$", code, re.M), target
    # No second package list: apt-get there only fetches git and make, to clone and start.
    for line in re.findall(r"apt-get install[^\n]*", code):
        flags = {"-y", "-qq", "--no-install-recommends", ">/dev/null"}
        assert set(line.split()[2:]) - flags == {"git", "make"}, line
    assert re.search(r"mktemp -d", code) and re.search(r"chmod 0700", code)
    assert re.search(r"git clone .*\n(.*\n)*cd .*\n(.*\n)*make test", code)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("target", TARGETS)
def test_every_target_runs_the_bootstrap_first(target: str) -> None:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(ROOT), target],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out and "scripts/bootstrap all" in out[0], out
    assert all("scripts/bootstrap" not in line for line in out[1:]), out


def _fake_bin(tmp_path: Path, uid: int, installed: set[str]) -> Path:
    """A PATH of the tools the bootstrap uses, with `id` and `dpkg-query` faked and no sudo."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tools = ("bash", "sed", "tr", "grep", "sort", "comm", "awk", "cat", "cut", "sha256sum", "rm", "dirname")
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    (bindir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    lines = "".join(f"echo '{p} ii '\n" for p in sorted(installed))
    (bindir / "dpkg-query").write_text(f"#!/bin/sh\n{lines}")
    (bindir / "python3").write_text("#!/bin/sh\necho python3 ran >&2\nexit 9\n")
    for fake in ("id", "dpkg-query", "python3"):
        (bindir / fake).chmod(0o755)
    return bindir


def _bootstrap(bindir: Path, step: str, venv: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bindir), "VENV": str(venv), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run([BOOTSTRAP, step], capture_output=True, text=True, env=env, timeout=30)


def test_without_root_or_sudo_it_names_what_is_missing(tmp_path: Path) -> None:
    packages = set(listed())
    bindir = _fake_bin(tmp_path, 1000, packages - {"radvd", "tshark"})
    out = _bootstrap(bindir, "packages", tmp_path / "venv")
    assert out.returncode == 1
    assert "missing Debian packages: radvd tshark" in out.stderr, out.stderr
    assert "apt-get install --no-install-recommends radvd tshark" in out.stderr


def test_everything_there_is_a_silent_no_op(tmp_path: Path) -> None:
    bindir = _fake_bin(tmp_path, 1000, set(listed()))
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to(shutil.which("true") or "/bin/true")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".bootstrap-stamp").write_text(f"{digest} [test]\n")
    out = _bootstrap(bindir, "all", venv)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    # pyproject.toml changed (another stamp): pip runs again (here the fake python3 fails, loudly).
    (venv / ".bootstrap-stamp").write_text("0123 [test]\n")
    out = _bootstrap(bindir, "venv", venv)
    assert out.returncode != 0 and "installing proxydhcp" in out.stderr and "python3 ran" in out.stderr
