"""The steps the instruction-counting scripts share (bench/tftp_instructions.py,
bench/http_instructions.py): wait for the server under valgrind to listen, then count the
instructions of one piece of client traffic against it (zero, instrument, run, dump)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def wait_listening(port: int, ss_flags: str, tries: int) -> None:
    """Bounded: `tries` looks at `ss ss_flags` (-Hlun for UDP, -Hltn for TCP), 0.1 s apart."""
    for _ in range(tries):
        ss = subprocess.run(["ss", ss_flags], capture_output=True, text=True, check=True).stdout
        if f":{port} " in ss:
            return
        time.sleep(0.1)
    raise SystemExit("the server under valgrind did not start")


def counted(pid: str, work: Path, name: str, traffic: Callable[[], T]) -> tuple[int, T]:
    """The instructions the server `pid` (started with --instr-atstart=no and its dumps in `work`
    as cg.*) runs while `traffic()` runs, and what `traffic` returned."""
    subprocess.run(["callgrind_control", "-z", pid], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=True)
    result = traffic()
    subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "-d", name, pid], capture_output=True, check=True)
    trigger = f"Trigger: dump {name}"
    dumps = [p for p in work.glob("cg.*") if trigger in p.read_text(errors="replace")[:4000]]
    return totals(dumps[-1]), result
