"""What a benchmarked server costs, read from the kernel: CPU from a cpuacct cgroup (or its session's
/proc figures), memory from /proc. Shared by bench.run and bench.http."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class CpuGroup:
    """A cpuacct cgroup (v1) holding one server and everything it forks: exact CPU, children included.

    tftpd-hpa forks a process per transfer; /proc/<pid>/stat would miss them, and its 10 ms ticks are too
    coarse for a smoke run. Falls back to the session's /proc figures where the hierarchy is absent.
    """

    BASE = Path("/sys/fs/cgroup/cpuacct")

    def __init__(self) -> None:
        self.path: Path | None = self.BASE / f"pxbench-{secrets.token_hex(4)}"
        try:
            self.path.mkdir()
        except OSError:
            self.path = None

    def enter(self) -> None:  # runs in the child between fork and exec
        if self.path is not None:
            with contextlib.suppress(OSError):
                (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self, sid: int) -> float:
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError):
                return int((self.path / "cpuacct.usage").read_text()) / 1e9
        return session_cpu(sid)

    def remove(self) -> None:
        for _ in range(50):  # bounded: the group empties once its processes are reaped
            if self.path is None:
                return
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def session_cpu(sid: int) -> float:
    """CPU seconds (user+system, reaped children included) of every process in session `sid`."""
    ticks = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on
        if int(f[3]) == sid:  # field 6: session
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    return ticks / CLK_TCK


def proc_mem(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out
