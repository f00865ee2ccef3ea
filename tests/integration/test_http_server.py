"""`proxydhcp http` over real loopback sockets: traversal in every encoding, malformed requests, the
connection limit, idle and dripping clients beside a real download, a client that stops reading
mid-file; and the HTTP behaviour curl sees (Range, HEAD, If-Modified-Since, keep-alive, IPv6)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT\n"
BIG = 64 * 1024 * 1024
CURL = shutil.which("curl")


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    host: str
    logfile: Path
    root: Path

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert found
        return int(found.group(1))


def make_root(base: Path) -> Path:
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (base / "secret").write_bytes(SECRET)
    (root / "small.bin").write_bytes(os.urandom(4096))
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    with (root / "big.bin").open("wb") as handle:  # sparse: fast to make, read as zeros
        handle.truncate(BIG)
    (root / "link-out").symlink_to(base / "secret")
    (root / "link-dev").symlink_to("/dev/zero")
    (root / "link-in").symlink_to(root / "small.bin")
    os.mkfifo(root / "fifo")
    return root


def start(base: Path, *extra: str, host: str = "127.0.0.1") -> Running:
    root = make_root(base)
    logfile = base / "http.log"
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxydhcp", "http", "--root", str(root), "--address", host,
             "--port", "0", *extra],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = re.search(r"HTTP serving .* on \[?[0-9a-f.:]+\]?:(\d+)", logfile.read_text())
        if found:
            return Running(proc, int(found.group(1)), host, logfile, root)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"proxydhcp http did not start:\n{logfile.read_text()}")


def stop(running: Running) -> None:
    if running.proc.poll() is None:
        running.proc.terminate()
        try:
            running.proc.wait(10)
        except subprocess.TimeoutExpired:
            running.proc.kill()
            running.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path, "--head-timeout", "2", "--send-timeout", "2")
    yield running
    stop(running)


def exchange(running: Running, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout`)."""
    with socket.create_connection((running.host, running.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while data := sock.recv(65536):
                chunks.append(data)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert found, response[:200]
    return int(found.group(1))


def get(running: Running, target: str) -> bytes:
    return exchange(running, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())


def alive(running: Running) -> None:
    response = get(running, "/sub/inner.txt")
    assert status_of(response) == 200 and response.endswith(b"\r\n\r\ninner\n")


TRAVERSALS = [
    ("/../secret", 403),
    ("/%2e%2e/secret", 403),
    ("/%2E%2E%2Fsecret", 403),
    ("/..%2fsecret", 403),
    ("/sub/..%2f..%2fsecret", 403),
    ("/sub/%2e%2e/%2e%2e/secret", 403),
    ("/..\\secret", 403),
    ("/..%5csecret", 403),
    ("/sub\\..\\..\\secret", 403),
    ("/%252e%252e/secret", 404),  # decoded once: a file literally named `%2e%2e` (none)
    ("/%252e%252e%252fsecret", 404),
    ("/%c0%ae%c0%ae/secret", 400),  # overlong UTF-8
    ("/%00/../secret", 400),
    ("/secret%00.bin", 400),
    ("//..//secret", 403),
    ("/etc/passwd", 404),  # an absolute path is relative to the root
    ("/%2Fetc%2Fpasswd", 404),
    ("//etc//passwd", 404),
    ("/%2F..%2F..%2Fetc%2Fpasswd", 403),
    (f"/{'..%2f' * 20}etc/passwd", 403),
    ("/link-out", 403),  # a symlink leaving the root
    ("/link-dev", 403),  # ... to a device
    ("/fifo", 403),
    ("/sub", 403),  # a directory: no listing
    ("/sub/", 404),
    ("/", 404),
    ("http://evil.example/../secret", 403),  # absolute-form target
    ("http://evil.example/%2e%2e/secret", 403),
]


@pytest.mark.parametrize(("target", "status"), TRAVERSALS)
def test_nothing_outside_the_root_in_any_encoding(server: Running, target: str, status: int) -> None:
    response = get(server, target)
    assert status_of(response) == status
    assert SECRET not in response and b"root:" not in response
    assert b"Traceback" not in response


def test_symlink_inside_the_root_is_served(server: Running) -> None:
    response = get(server, "/link-in")
    assert status_of(response) == 200
    assert response.endswith((server.root / "small.bin").read_bytes())


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /small.bin HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /small.bin HTTP/1.1\r\nHost: x\r\nX: \x00\x01\r\n\r\n",
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long
        b"GET /small.bin HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 10000 + b"\r\n\r\n",  # header too long
        b"GET /small.bin HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(200)) + b"\r\n",
        b"GET /small.bin HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /small.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS hello
        b"GET /small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=oops\r\n\r\n",  # ignored: whole file
    ],
    ids=[
        "garbage", "no-target", "http-9.9", "header-no-colon", "header-ctl", "long-line", "long-header",
        "200-headers", "negative-length", "bad-chunked", "tls-hello", "bad-range",
    ],
)  # fmt: skip
def test_malformed_requests_get_a_clean_answer_and_the_server_lives(
    server: Running, request_bytes: bytes
) -> None:
    response = exchange(server, request_bytes)
    if response:
        assert status_of(response) in (200, 400, 413, 431, 501, 505)
        assert b"Traceback" not in response
    alive(server)
    assert "Traceback" not in server.log()


def test_other_methods_are_refused(server: Running) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        response = exchange(server, f"{method} /small.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                    "Connection: close\r\n\r\n".encode())  # fmt: skip
        assert status_of(response) == 405
        assert b"Allow: GET, HEAD" in response


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except (BlockingIOError, TimeoutError):
        return False


def test_1000_idle_connections_beside_a_real_download(tmp_path: Path) -> None:
    running = start(tmp_path, "--head-timeout", "3", "--max-connections", "1100")
    try:
        idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(1000)]
        drip = socket.create_connection(("127.0.0.1", running.port))
        drip.sendall(b"GET /small.bin HTTP/1.1\r\n")
        rss_idle = running.rss_kib()
        started = time.monotonic()
        assert CURL
        out = subprocess.run(
            [CURL, "-sS", "-o", str(tmp_path / "got"), "-w", "%{http_code}", running.url("/big.bin")],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert out.stdout == "200"
        assert (tmp_path / "got").stat().st_size == BIG
        assert hashlib.sha256((tmp_path / "got").read_bytes()).digest() == hashlib.sha256(bytes(BIG)).digest()
        # the dripping client keeps sending a header line a second; it is closed all the same
        for sock in [*idle, drip]:
            sock.setblocking(False)
        deadline = started + 15
        open_ones = [*idle, drip]
        while open_ones and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                drip.send(b"X: y\r\n")
            open_ones = [s for s in open_ones if not _closed_by_peer(s)]
            time.sleep(0.5)
        assert not open_ones, f"{len(open_ones)} idle connections still open"
        # 1,000 connections cost little: well under 64 KiB each
        assert rss_idle < 200_000
        alive(running)
    finally:
        for sock in idle:
            sock.close()
        stop(running)


def test_connections_past_the_limit_are_reset(tmp_path: Path) -> None:
    running = start(tmp_path, "--max-connections", "20", "--head-timeout", "30")
    try:
        held = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(20)]
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        assert _closed_by_peer(extra)
        extra.close()
        for sock in held:
            sock.close()
        time.sleep(0.3)
        alive(running)
    finally:
        stop(running)


def test_a_client_that_stops_reading_is_reset_and_costs_no_memory(server: Running) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    before = server.rss_kib()
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(0.5)
    with contextlib.suppress(TimeoutError):
        sock.recv(1024)  # the headers and a little of the body: then the client stops reading
    deadline = time.monotonic() + 20
    while "outcome=timeout" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "outcome=timeout" in server.log()
    assert server.rss_kib() - before < 16 * 1024  # the file was never buffered in the server
    # the connection is gone: draining what the kernel held ends in EOF or a reset
    sock.settimeout(5)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(1 << 20):
            pass
    sock.close()
    alive(server)


# -- behaviour seen by curl ------------------------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    assert CURL, "curl is installed on the test machines"
    return subprocess.run([CURL, "-sS", *args], capture_output=True, text=True, timeout=30)


def test_curl_range_head_conditional_keepalive(server: Running, tmp_path: Path) -> None:
    data = (server.root / "small.bin").read_bytes()
    got = tmp_path / "part"
    out = curl("-r", "100-199", "-o", str(got), "-w", "%{http_code}", server.url("/small.bin"))
    assert out.stdout == "206" and got.read_bytes() == data[100:200]
    out = curl("-r", "-10", "-o", str(got), "-w", "%{http_code}", server.url("/small.bin"))
    assert out.stdout == "206" and got.read_bytes() == data[-10:]
    out = curl("-r", "5000-", "-o", "/dev/null", "-D", "-", server.url("/small.bin"))
    assert " 416 " in out.stdout and "Content-Range: bytes */4096" in out.stdout
    # a range of a big file goes the sendfile way
    out = curl("-r", "1048576-1048675", "-o", str(got), "-w", "%{http_code}", server.url("/big.bin"))
    assert out.stdout == "206" and got.read_bytes() == bytes(100)
    # HEAD: the length a GET would send, no body
    out = curl("-I", server.url("/big.bin"))
    assert out.stdout.startswith("HTTP/1.1 200") and f"Content-Length: {BIG}" in out.stdout
    last_modified = re.search(r"Last-Modified: ([^\r\n]+)", out.stdout)
    assert last_modified
    # If-Modified-Since with the file's own date: 304; an older date: 200
    out = curl("-H", f"If-Modified-Since: {last_modified.group(1)}", "-o", "/dev/null", "-w", "%{http_code}",
               server.url("/big.bin"))  # fmt: skip
    assert out.stdout == "304"
    out = curl("-H", "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT", "-o", "/dev/null", "-w",
               "%{http_code}", server.url("/small.bin"))  # fmt: skip
    assert out.stdout == "200"
    # keep-alive: three requests, one connection
    out = curl("-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n",
               server.url("/small.bin"), server.url("/sub/inner.txt"), server.url("/small.bin"))  # fmt: skip
    assert out.stdout.split() == ["1", "0", "0"]
    # one structured record per request
    log = server.log()
    assert "method=GET file=/small.bin status=206 bytes=100" in log
    assert "method=HEAD file=/big.bin status=200 bytes=0" in log


def test_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    running = start(tmp_path, host="::1")
    try:
        out = curl("-g", "-o", "/dev/null", "-w", "%{http_code}", running.url("/small.bin"))
        assert out.stdout == "200"
        assert "client=[::1]:" in running.log()
        assert status_of(get(running, "/%2e%2e/secret")) == 403
    finally:
        stop(running)


def test_any_ipv6_address_serves_both_families(tmp_path: Path) -> None:
    # `::` is dual stack, as for TFTP (serve uses it when an IPv6 prefix is enabled): IPv4 clients
    # get the same server and are logged as themselves, not as ::ffff:a.b.c.d.
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    running = start(tmp_path, host="::")
    try:
        for host in ("127.0.0.1", "[::1]"):
            out = curl("-g", "-o", "/dev/null", "-w", "%{http_code}", f"http://{host}:{running.port}/small.bin")
            assert out.stdout == "200", host
        deadline = time.monotonic() + 5  # the log writer flushes once per loop iteration
        while "client=[::1]:" not in (log := running.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "client=127.0.0.1:" in log and "client=[::1]:" in log and "::ffff:" not in log
    finally:
        stop(running)


def test_a_cached_name_swapped_for_a_symlink_out_is_refused(server: Running) -> None:
    """Names seen a moment ago are answered from memory: the swap must still be noticed, within the
    kept answer's bound (`answer_recheck`, 0.1 s) at most; meanwhile only the bytes that were inside
    the root, never the secret."""
    from proxydhcp.http.server import ANSWER_RECHECK

    assert status_of(get(server, "/sub/inner.txt")) == 200
    assert status_of(get(server, "/sub/inner.txt")) == 200  # now from the resolve cache, or kept whole
    target = server.root / "sub" / "inner.txt"
    target.unlink()
    target.symlink_to(server.root.parent / "secret")
    swapped = time.monotonic()
    response = get(server, "/sub/inner.txt")
    assert SECRET not in response and (status_of(response) == 403 or response.endswith(b"inner\n"))
    time.sleep(max(0.0, ANSWER_RECHECK - (time.monotonic() - swapped)) + 0.01)
    response = get(server, "/sub/inner.txt")
    assert status_of(response) == 403 and SECRET not in response


def _read_responses(sock: socket.socket, count: int, timeout: float = 10.0) -> list[tuple[bytes, bytes]]:
    """`count` responses (head, body) read off one connection, by their Content-Length."""
    sock.settimeout(timeout)
    buf = b""
    out: list[tuple[bytes, bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(out)} responses"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        found = re.search(rb"Content-Length: (\d+)", head)
        length = int(found.group(1)) if found and not head.startswith(b"HTTP/1.1 304") else 0
        while len(buf) < length:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed mid-body"
            buf += chunk
        out.append((head, buf[:length]))
        buf = buf[length:]
    return out


def test_pipelined_requests_are_answered_in_order(server: Running) -> None:
    """Small (memory), big (sendfile, in a task), missing and refused requests in one write: each
    answered in the order asked, on the one connection, with one record each."""
    small = (server.root / "small.bin").read_bytes()
    targets = ["/small.bin", "/big.bin", "/sub/inner.txt", "/nope", "/small.bin"]
    wire_bytes = b"".join(f"GET {t} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for t in targets)
    wire_bytes += b"POST /small.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    wire_bytes += b"GET /sub/inner.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(wire_bytes)
        got = _read_responses(sock, 7, timeout=30)
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed after the last, which asked for it
    assert [status_of(head) for head, _ in got] == [200, 200, 200, 404, 200, 405, 200]
    assert got[0][1] == small and got[4][1] == small
    assert len(got[1][1]) == BIG and got[1][1].count(0) == BIG
    assert got[2][1] == got[6][1] == b"inner\n"
    deadline = time.monotonic() + 5
    while server.log().count("method=") < 7 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.log().count("method=") == 7


def test_http10_keep_alive_and_close(server: Running) -> None:
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"GET /sub/inner.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n" * 2)
        got = _read_responses(sock, 2)
        assert all(b"Connection: keep-alive" in head and body == b"inner\n" for head, body in got)
        sock.sendall(b"GET /sub/inner.txt HTTP/1.0\r\n\r\n")
        ((head, body),) = _read_responses(sock, 1)
        assert b"Connection: close" in head and body == b"inner\n"
        assert sock.recv(1) == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /small.bin HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /small.bin HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(100)) + b"\r\n", 431),
        (b"GET /small.bin HTTP/1.1\r\nX: " + b"v" * 9000 + b"\r\n\r\n", 431),
        # each field and their number within bounds, the whole head (80 KB) not
        (b"GET /small.bin HTTP/1.1\r\n" + b"".join(b"X%d: %s\r\n" % (i, b"v" * 2000) for i in range(40))
         + b"\r\n", 431),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 400),
        (b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # a target that is no UTF-8
    ],
    ids=["http-2.0", "too-many-fields", "long-field", "head-too-large", "long-target", "not-utf8"],
)  # fmt: skip
def test_bounds_answer_with_their_status_and_a_record(
    server: Running, request_bytes: bytes, status: int
) -> None:
    response = exchange(server, request_bytes)
    assert status_of(response) == status
    deadline = time.monotonic() + 5
    while f"status={status}" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"status={status}" in server.log() and "outcome=refused" in server.log()
    alive(server)
