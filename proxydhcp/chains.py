"""What the boot loaders of distribution chains fetch after the boot file, and what they need.

Measured on real firmware (tests/e2e/test_chains.py, README "Secure Boot"):
- shim (shimx64.efi, shimaa64.efi) loads grub<arch>.efi from its own directory on the server it came
  from; before that, shim 16 asks for revocations_*.efi and shim_certificate_*.efi, which may be absent.
- Debian's network GRUB (grubnetx64.efi.signed, installed as grubx64.efi; grubnetaa64.efi.signed)
  reads only the DHCP server's ACK (siaddr, then sname), never the proxy offer or the 4011 ACK: without
  next-server on the DHCP server it sends no request at all. With one, it asks for
  /grub/<platform>/*.lst (absent: harmless) and then /grub/grub.cfg.

Pure: the caller says which files exist (`present`), so check-config, explain and diagnose share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxydhcp.config import Settings

# shim<arch>.efi → the GRUB it loads from the same directory.
_SHIM = re.compile(r"^shim(x64|aa64|ia32|arm)\.efi(\.signed)?$", re.I)
_GRUB = re.compile(r"^(grub(net)?(x64|aa64|ia32|arm)\.efi(\.signed)?|core\.efi)$", re.I)
# Files loaders look for and may not find, by design (shim's optional revocation/certificate files;
# GRUB's module lists, per-platform config and per-MAC/IP config search; pxelinux's config search;
# iPXE's autoexec.ipxe).
_HARMLESS_MISSING = (
    re.compile(r"(^|/)revocations_[^/]*\.efi$", re.I),
    re.compile(r"(^|/)shim_certificate_[^/]*\.efi$", re.I),
    re.compile(r"(^|/)[a-z0-9_]+-(efi|pc|ieee1275|uboot|emu)/[^/]+\.lst$", re.I),
    re.compile(r"(^|/)[a-z0-9_]+-(efi|pc|ieee1275|uboot|emu)/grub\.cfg$", re.I),
    re.compile(r"(^|/)grub\.cfg-[0-9A-Fa-f-]+$"),
    re.compile(r"(^|/)pxelinux\.cfg/(01-[0-9a-f-]+|[0-9A-F]{1,8}|[0-9a-f-]{36})$"),
    re.compile(r"(^|/)autoexec\.ipxe$", re.I),  # iPXE looks for it beside itself before its own DHCP
)
GRUB_CONFIG = "grub/grub.cfg"  # Debian's network GRUB: built-in prefix /grub


class LoaderKind(Enum):
    SHIM = "shim"
    GRUB = "grub"
    OTHER = "other"


class ChainNeed(Enum):
    """One thing a chain needs that the service alone does not provide."""

    NEXT_LOADER = "next-loader"  # shim's GRUB beside it in the root
    GRUB_CONFIG = "grub-config"  # /grub/grub.cfg in the root
    NEXT_SERVER = "next-server"  # next-server on the DHCP server: GRUB ignores proxy offers


@dataclass(frozen=True, slots=True)
class ChainWarning:
    where: str  # the boot table entry, e.g. "[boot] efi-x64"
    boot_file: str
    need: ChainNeed
    message: str


def loader_kind(name: str) -> LoaderKind:
    base = PurePosixPath(name.replace("\\", "/")).name
    if _SHIM.match(base):
        return LoaderKind.SHIM
    if _GRUB.match(base):
        return LoaderKind.GRUB
    return LoaderKind.OTHER


def shim_next_loader(name: str) -> str | None:
    """The file shim asks for next (grubx64.efi for shimx64.efi), in shim's own directory."""
    path = PurePosixPath(name.replace("\\", "/"))
    found = _SHIM.match(path.name)
    if found is None:
        return None
    grub = f"grub{found.group(1).lower()}.efi"
    return grub if str(path.parent) in ("", ".") else f"{path.parent}/{grub}"


def harmless_missing(name: str) -> bool:
    """A file a loader probes for and does without: its "not found" is no failure."""
    return any(p.search(name) for p in _HARMLESS_MISSING)


def chain_warnings(
    entries: Iterable[tuple[str, str]], present: Callable[[str], bool] | None
) -> list[ChainWarning]:
    """What the shim/GRUB chains in (where, boot file) entries need. `present(name)` says whether a
    root-relative file exists (None: the root is not known here, only the DHCP-side need is told)."""
    out: list[ChainWarning] = []
    seen: set[tuple[str, ChainNeed]] = set()

    def add(where: str, boot_file: str, need: ChainNeed, message: str) -> None:
        if (boot_file, need) not in seen:
            seen.add((boot_file, need))
            out.append(ChainWarning(where, boot_file, need, message))

    for where, boot_file in entries:
        kind = loader_kind(boot_file)
        if kind is LoaderKind.OTHER or "://" in boot_file:
            continue
        clean = boot_file.replace("\\", "/").lstrip("/")
        if kind is LoaderKind.SHIM:
            grub = shim_next_loader(clean)
            if grub is not None and present is not None and not present(grub):
                add(
                    where,
                    boot_file,
                    ChainNeed.NEXT_LOADER,
                    f"{boot_file} is shim: it loads {grub} from beside itself, and the root has no {grub} "
                    "(install the signed network GRUB under that name, e.g. grubnetx64.efi.signed)",
                )
        if present is not None and not present(GRUB_CONFIG):
            add(
                where,
                boot_file,
                ChainNeed.GRUB_CONFIG,
                f"{boot_file} leads to a network GRUB, which reads /{GRUB_CONFIG} (Debian's built-in prefix "
                "/grub); the root has none",
            )
        add(
            where,
            boot_file,
            ChainNeed.NEXT_SERVER,
            f"{boot_file} leads to a network GRUB, which does not read proxy offers: it takes its server "
            "from the DHCP server's ACK, so set next-server on the DHCP server for PXE clients to this "
            "host, use a GRUB with proxy support, or use the site-key iPXE chain (README: Secure Boot)",
        )
    return out


def boot_entries(settings: Settings) -> list[tuple[str, str]]:
    """Every boot file the settings can hand out, with where it is configured."""
    out = [(f"[boot] {key}", name) for key, name in settings.boot.items()]
    for subnet in settings.subnet:
        out += [(f"[[subnet]] {subnet.cidr} {key}", name) for key, name in subnet.boot.items()]
    out += [(f"[[host]] {h.mac}", h.boot_file) for h in settings.host if h.boot_file]
    return out


def settings_warnings(settings: Settings) -> list[ChainWarning]:
    """chain_warnings for the settings' boot tables, checked against the TFTP root when it is served
    here (the only I/O: whether a file exists)."""
    root = settings.tftp.root if settings.tftp.enabled else None

    def present(name: str) -> bool:
        assert root is not None
        return (root / name).is_file()

    return chain_warnings(boot_entries(settings), present if root is not None else None)
