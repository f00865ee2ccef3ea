"""Client system architectures (option 93, RFC 4578 §2.1; IANA "Processor Architecture Types").

IANA (and real firmware, EDK II, iPXE) say 7 = x64 UEFI and 9 = EBC; RFC 4578 before erratum 4624 had
them swapped, and some firmware still sends 9 for x64, so 9 is mapped to the x64 boot file too, as
pixiecore, smee and PyPXE do.
"""

from __future__ import annotations

# Option-93 value → the name used in configuration and on the command line.
ARCH_NAMES: dict[int, str] = {
    0: "bios",
    6: "efi-ia32",
    7: "efi-x64",
    9: "efi-x64",  # EBC per IANA, x64 per the unfixed RFC table: treat as x64 (see module docstring)
    10: "efi-arm32",
    11: "efi-arm64",
    15: "efi-ia32-http",
    16: "efi-x64-http",
    18: "efi-arm32-http",
    19: "efi-arm64-http",
    25: "efi-riscv32",
    27: "efi-riscv64",
}

# Human descriptions for logs, `explain` and `diagnose`.
ARCH_DESCRIPTIONS: dict[int, str] = {
    0: "x86 BIOS",
    1: "NEC/PC98",
    2: "Itanium",
    3: "DEC Alpha",
    4: "Arc x86",
    5: "Intel Lean Client",
    6: "x86 UEFI",
    7: "x64 UEFI",
    8: "EFI Xscale",
    9: "EBC (x64 UEFI on old firmware)",
    10: "ARM 32-bit UEFI",
    11: "ARM 64-bit UEFI",
    15: "x86 UEFI HTTP",
    16: "x64 UEFI HTTP",
    18: "ARM 32-bit UEFI HTTP",
    19: "ARM 64-bit UEFI HTTP",
    20: "PC/AT BIOS HTTP",
    25: "RISC-V 32-bit UEFI",
    27: "RISC-V 64-bit UEFI",
}

# Architectures whose firmware boots over HTTP (option 60 "HTTPClient"), not PXE/TFTP.
HTTP_ARCHES: frozenset[int] = frozenset({15, 16, 18, 19, 20, 26, 28, 30})

_NAME_TO_CODE: dict[str, int] = {name: code for code, name in ARCH_NAMES.items() if code != 9}


def arch_name(code: int) -> str:
    """The configuration name of an option-93 value; unnamed values are their decimal number."""
    return ARCH_NAMES.get(code, str(code))


def describe_arch(code: int | None) -> str:
    if code is None:
        return "unknown architecture"
    return ARCH_DESCRIPTIONS.get(code, f"architecture {code}")


def parse_arch(text: str) -> int:
    """Parse an architecture as given by a user: a name from ARCH_NAMES or an option-93 number.

    Raises ValueError with a message listing the accepted names.
    """
    # `efi_x64` too: environment variable names cannot carry `-` (PROXYDHCP_BOOT__EFI_X64).
    key = text.strip().lower().replace("_", "-")
    if key in _NAME_TO_CODE:
        return _NAME_TO_CODE[key]
    try:
        code = int(key, 0)
    except ValueError:
        names = ", ".join(sorted(_NAME_TO_CODE))
        raise ValueError(
            f"unknown architecture {text!r} (use one of {names}, or an option-93 number)"
        ) from None
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"architecture {code} is outside 0..65535")
    return code


def canonical_arch_key(text: str) -> str:
    """Normalise a configured architecture key: names stay names, numbers become names when known."""
    return arch_name(parse_arch(text))


def is_uefi(code: int | None) -> bool:
    """Arch ≥ 6 is UEFI (or later), which gets the BINL-style offer and the port-4011 step (R-05/R-06)."""
    return code is not None and code >= 6
