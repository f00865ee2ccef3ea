"""User-space instructions per keep-alive request of `proxydhcp http` for a 4 KiB file, counted by
callgrind: immune to the noise of a shared machine, so it judges a change to the HTTP server where the
wall-clock rounds of `bench.http` cannot (run as root, under the bench lock:
`flock /tmp/proxydhcp-heavy.lock python3 -m bench.http_instructions ...`).

    python3 -m bench.http_instructions [--python PY] [--requests 2000] [--keep DIR]

The server runs under valgrind (instrumentation off) and logs every request as `bench.http` has it do
(to a file); a warm-up of 500 requests, then `ab -k -c 32` with N and 2 × N requests for one 4 KiB
file are counted, and the difference over N is the cost of one request in the steady state
(connections, start-up and the first read of the file cancel out). The kernel's share (a recv and a
send per request) is not in it. `--python` runs another checkout's interpreter (its tree is the one
three levels above it).
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--requests", type=int, default=2000, help="requests of the first count (then twice)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--keep", type=Path, default=None, help="copy the callgrind dumps here")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "ab"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    python = Path(args.python).absolute()
    tree = python.resolve().parent.parent.parent if args.python != sys.executable else setup_env.BENCH.parent
    with tempfile.TemporaryDirectory(prefix="pxhttpinstr-") as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        (root / "s0.bin").write_bytes(os.urandom(4096))
        port = 19000 + secrets.randbelow(2000)
        url = f"http://127.0.0.1:{port}/s0.bin"
        with (work / "server.log").open("wb") as log:
            server = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={work}/cg.%p",
                 str(python), "-m", "proxydhcp", "http", "--root", str(root), "--address", "127.0.0.1",
                 "--port", str(port)],
                cwd=tree, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_listening(port, "-Hltn", 600)
            pid = str(server.pid)
            ab = ["ab", "-q", "-k", "-c", str(args.clients), "-s", "120"]
            subprocess.run([*ab, "-n", "500", url], capture_output=True, check=True)  # warm-up
            counts: list[int] = []
            for n in (args.requests, 2 * args.requests):
                name = f"n{n}"
                count, out = counted(pid, work, name, lambda n=n: subprocess.run(
                    [*ab, "-n", str(n), url], capture_output=True, text=True, check=False))  # fmt: skip
                if "Failed requests:        0" not in out.stdout or out.returncode != 0:
                    raise SystemExit(f"ab failed: {out.stdout[-600:]} {out.stderr[-300:]}")
                counts.append(count)
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                for dump in work.glob("cg.*"):
                    shutil.copy(dump, args.keep / dump.name)
        finally:
            server.terminate()
            server.wait(60)
    small, big = counts
    per_request = (big - small) / args.requests
    print(f"{python} ({args.requests} and {2 * args.requests} requests, {args.clients} clients, ab -k): "
          f"{per_request:,.0f} instructions per request")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
