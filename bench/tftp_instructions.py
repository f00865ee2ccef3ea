"""User-space instructions per TFTP block of `proxydhcp tftp`, counted by callgrind: immune to the noise
of a shared machine, so it judges a change where a wall-clock run cannot (run as root, under the bench
lock: `flock /tmp/proxydhcp-heavy.lock python3 -m bench.tftp_instructions ...`).

    python3 -m bench.tftp_instructions [--python PY] [--mib 36] [--windowsize 1]

The server runs under valgrind (instrumentation off), pinned to CPU 0 with the C load client; two
transfers of MIB and 2 × MIB are counted, and the difference over the difference in blocks is the cost of
one block in the steady state (start-up, the RRQ and the first chunk cancel out). Over 32 MiB a file is
read in chunks, as the bench's 64 MiB lockstep file is; under it, the whole file is cached, and its
one-time load (a zeroed bytearray: valgrind counts each byte of a `rep stosb`) lands in the difference.
`--python` runs another checkout's interpreter (its tree is the one three levels above it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import setup_env
from bench.callgrind import counted, wait_listening


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the checkout to measure")
    ap.add_argument("--mib", type=int, default=36, help="size of the first file (the second is twice it)")
    ap.add_argument("--windowsize", type=int, default=1)
    ap.add_argument("--blksize", type=int, default=1468)
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    python = Path(args.python).absolute()
    tree = python.resolve().parent.parent.parent if args.python != sys.executable else setup_env.BENCH.parent
    load = setup_env.build_loadgen()["tftpload"]
    with tempfile.TemporaryDirectory(prefix="pxinstr-") as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        sizes = (args.mib, 2 * args.mib)
        for mib in sizes:
            (root / f"f{mib}.bin").write_bytes(os.urandom(mib << 20))
        port = 17000 + secrets.randbelow(2000)
        server = subprocess.Popen(
            ["taskset", "-c", "0", "valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={work}/cg.%p", str(python), "-m", "proxydhcp", "tftp",
             "--root", str(root), "--address", "127.0.0.1", "--port", str(port),
             "--max-blksize", str(args.blksize), "--max-windowsize", "16"],
            cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_listening(port, "-Hlun", 300)
            pid = str(server.pid)
            counts: list[tuple[int, int]] = []
            for mib in sizes:
                name = f"f{mib}.bin"
                count, out = counted(pid, work, name, lambda name=name: subprocess.run(
                    ["taskset", "-c", "0", str(load), "--port", str(port), "--file", name, "--expect",
                     str(root / name), "--blksize", str(args.blksize), "--windowsize", str(args.windowsize),
                     "--tsize", "--deadline", "600", "--timeout-ms", "5000"],
                    capture_output=True, text=True, check=False,
                ))  # fmt: skip
                result = json.loads(out.stdout.strip().splitlines()[-1])
                if result.get("ok") != 1 or result.get("retransmits"):
                    raise SystemExit(f"{name}: {result}")
                counts.append((count, int(result["blocks"])))
        finally:
            server.terminate()
            server.wait(30)
    (small, small_blocks), (big, big_blocks) = counts
    per_block = (big - small) / (big_blocks - small_blocks)
    print(f"{python} (windowsize {args.windowsize}, blksize {args.blksize}, {args.mib} and {2 * args.mib} "
          f"MiB): {per_block:,.0f} instructions per block")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
