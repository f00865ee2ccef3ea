"""proxydhcp.chains: loader names, harmless misses, and what check-config / explain warn about."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from proxydhcp.chains import (
    ChainNeed,
    LoaderKind,
    chain_warnings,
    harmless_missing,
    loader_kind,
    shim_next_loader,
)
from proxydhcp.cli import app


@pytest.mark.parametrize(
    "name,kind",
    [
        ("shimx64.efi", LoaderKind.SHIM),
        ("efi/SHIMAA64.EFI", LoaderKind.SHIM),
        ("shimx64.efi.signed", LoaderKind.SHIM),
        ("grubx64.efi", LoaderKind.GRUB),
        ("grubnetx64.efi.signed", LoaderKind.GRUB),
        ("debian/grubnetaa64.efi", LoaderKind.GRUB),
        ("ipxe.efi", LoaderKind.OTHER),
        ("undionly.kpxe", LoaderKind.OTHER),
        ("mmx64.efi", LoaderKind.OTHER),
    ],
)
def test_loader_kind(name: str, kind: LoaderKind) -> None:
    assert loader_kind(name) is kind


def test_shim_next_loader_is_beside_shim() -> None:
    assert shim_next_loader("shimx64.efi") == "grubx64.efi"
    assert shim_next_loader("/efi/debian/shimaa64.efi") == "/efi/debian/grubaa64.efi"
    assert shim_next_loader("ipxe.efi") is None


@pytest.mark.parametrize(
    "name",
    [
        "revocations_sku.efi",
        "revocations_sbat.efi",
        "shim_certificate_0.efi",
        "/grub/x86_64-efi/command.lst",
        "/grub/arm64-efi/terminal.lst",
        "/grub/x86_64-efi/grub.cfg",
        "/grub/grub.cfg-01-52-54-00-7a-00-03",
        "/grub/grub.cfg-0A4D0064",
        "pxelinux.cfg/01-52-54-00-09-00-01",
        "pxelinux.cfg/0A090064",
        "autoexec.ipxe",
    ],
)
def test_harmless_missing(name: str) -> None:
    assert harmless_missing(name)


@pytest.mark.parametrize(
    "name", ["grubx64.efi", "/grub/grub.cfg", "boot.ipxe", "pxelinux.cfg/default", "ipxe.efi"]
)
def test_not_harmless(name: str) -> None:
    assert not harmless_missing(name)


def test_chain_warnings_with_and_without_root() -> None:
    entries = [("[boot] efi-x64", "shimx64.efi"), ("[boot] bios", "undionly.kpxe")]
    needs = {w.need for w in chain_warnings(entries, lambda _name: False)}
    assert needs == {ChainNeed.NEXT_LOADER, ChainNeed.GRUB_CONFIG, ChainNeed.NEXT_SERVER}
    complete = chain_warnings(entries, lambda name: name in {"grubx64.efi", "grub/grub.cfg"})
    assert [w.need for w in complete] == [ChainNeed.NEXT_SERVER]
    assert [w.need for w in chain_warnings(entries, None)] == [ChainNeed.NEXT_SERVER]
    assert chain_warnings([("[boot] efi-x64", "ipxe.efi")], lambda _n: False) == []
    assert chain_warnings([("[boot] efi-x64", "http://10.0.0.1/shimx64.efi")], None) == []


def test_check_config_and_explain_warn(tmp_path: Path) -> None:
    runner = CliRunner()
    base = [
        "-s",
        "10.0.0.0/24",
        "--boot-file",
        "efi-x64=shimx64.efi",
        "--boot-file",
        "efi-arm64=grubnetaa64.efi",
    ]
    out = runner.invoke(app, ["check-config", *base, "--tftp-root", str(tmp_path)])
    assert out.exit_code == 0, out.output
    text = out.stderr
    assert "the root has no grubx64.efi" in text
    assert "/grub/grub.cfg" in text
    assert text.count("set next-server on the DHCP server") == 2  # shim's chain and the ARM64 GRUB
    (tmp_path / "grubx64.efi").write_bytes(b"MZ")
    (tmp_path / "grub").mkdir()
    (tmp_path / "grub" / "grub.cfg").write_text("")
    out = runner.invoke(app, ["check-config", *base, "--tftp-root", str(tmp_path)])
    assert "the root has no" not in out.stderr and "set next-server" in out.stderr
    out = runner.invoke(app, ["explain", *base, "--mac", "52:54:00:00:00:01", "--arch", "efi-arm64"])
    assert out.exit_code == 0, out.output
    assert "grubnetaa64.efi leads to a network GRUB" in out.stderr and "shimx64" not in out.stderr
    out = runner.invoke(app, ["explain", *base, "--mac", "52:54:00:00:00:01", "--arch", "bios"])
    assert "network GRUB" not in out.stderr
