"""Installs what the peers need into bench/.work and bench/.venv (nothing system-wide; atftpd is a .deb).

Each step is idempotent and reports "missing" instead of failing, so the bench runs with the peers it has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
BUILD = BENCH / ".build"
VENV = BENCH / ".venv"
VENV_PACKAGES = ("py3tftp==1.3.0", "tftpy==0.8.7", "pypxe==1.8.4")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11")


def build_loadgen() -> dict[str, Path]:
    """Compile bench/loadgen/*.c into bench/.build/ (only when the source is newer)."""
    BUILD.mkdir(exist_ok=True)
    out: dict[str, Path] = {}
    for src in sorted((BENCH / "loadgen").glob("*.c")):
        exe = BUILD / src.stem
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["gcc", *CFLAGS, "-o", str(exe), str(src)], check=True, timeout=120)
        out[src.stem] = exe
    return out


def ensure_atftpd() -> Path | None:
    """atftpd conflicts with tftpd-hpa as a package: download the .deb and unpack it into bench/.work."""
    exe = WORK / "atftpd" / "usr" / "sbin" / "atftpd"
    if exe.exists():
        return exe
    dl = WORK / "deb"
    dl.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", "atftpd"], cwd=dl, check=True, timeout=180,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
        print(f"bench: atftpd unavailable ({exc})", file=sys.stderr)
        return None
    debs = sorted(dl.glob("atftpd_*.deb"))
    if not debs:
        return None
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(WORK / "atftpd")], check=True, timeout=60)
    return exe if exe.exists() else None


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path | None:
    """A separate venv for the PyPI peers, so they never touch the project's interpreter."""
    py = venv_python()
    stamp = VENV / ".bench-installed"
    if stamp.exists() and stamp.read_text() == "\n".join(VENV_PACKAGES):
        return py
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=180)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *VENV_PACKAGES],
                       check=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"bench: PyPI peers unavailable ({exc})", file=sys.stderr)
        return None
    stamp.write_text("\n".join(VENV_PACKAGES))
    return py


def which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


if __name__ == "__main__":
    print(build_loadgen(), ensure_atftpd(), ensure_venv())
