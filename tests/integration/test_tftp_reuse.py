"""What the server reuses between requests (transfer sockets, where a name led, negotiated options) must
not change what a client sees: live transfers never share a port, a changed, replaced or removed file
is noticed on the next request, and a symlink out of the root is refused as before."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.tftp_fixtures import (
    ClientError,
    RunningServer,
    client,
    fetch,
    replies,
    rrq,
    start_server,
    stop_server,
    udp_peers_on,
)

pytestmark = pytest.mark.timeout(60)

OPTIONS = {"tsize": "0", "blksize": "1468"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    contents = {
        "small.bin": os.urandom(4096),
        "sub/boot.efi": os.urandom(3000),
        "big.bin": os.urandom(200_000),
    }
    for name, data in contents.items():
        (root / name).write_bytes(data)
    (tmp_path / "secret").write_bytes(b"top secret\n")
    running = start_server(root, contents, timeout=1.0, give_up=5.0)
    try:
        yield running
    finally:
        stop_server(running)


def first_block(sock: socket.socket, port: int, name: bytes = b"big.bin") -> tuple[str, int]:
    """Start a lockstep read and leave it waiting for the ACK of block 1; the transfer's address."""
    sock.settimeout(3)
    sock.sendto(rrq(name), ("127.0.0.1", port))
    data, peer = sock.recvfrom(2000)
    assert data[:4] == b"\0\3\0\1"
    return (str(peer[0]), int(peer[1]))


def test_sequential_transfers_reuse_ports_and_stay_correct(server: RunningServer) -> None:
    ports = []
    for _ in range(20):
        got = fetch(server.port, "small.bin", OPTIONS)
        assert got.data == server.contents["small.bin"]
        assert got.oack == {"tsize": "4096", "blksize": "1468"}
        ports.append(got.server_port)
    assert len(set(ports)) < len(ports)  # pooled sockets came back
    assert server.port not in ports


def test_live_transfers_never_share_a_port(server: RunningServer) -> None:
    for _ in range(3):  # sockets go back to the pool between rounds, and out again
        socks = [client() for _ in range(12)]
        try:
            peers = [first_block(sock, server.port) for sock in socks]
            assert len({peer[1] for peer in peers}) == len(peers)
            for sock, peer in zip(socks, peers, strict=True):
                sock.sendto(b"\0\5\0\0done\0", peer)  # abort
        finally:
            for sock in socks:
                sock.close()
        server.wait_finished(len(server.finished) + 12, timeout=5)


def test_same_client_does_not_get_the_port_it_just_used(server: RunningServer) -> None:
    with client() as sock:
        for _ in range(5):
            before = first_block(sock, server.port)
            sock.sendto(b"\0\5\0\0done\0", before)
            server.wait_finished(len(server.finished) + 1, timeout=5)
            after = first_block(sock, server.port)
            assert after != before
            sock.sendto(b"\0\5\0\0done\0", after)


def test_stale_datagram_to_a_reused_port_is_a_stray(server: RunningServer) -> None:
    """A late ACK of a finished transfer, reaching its port while it serves another client: unknown TID
    for the old client, and the new transfer goes on."""
    with client() as old:
        old_peer = first_block(old, server.port, b"small.bin")
        old.sendto(b"\0\4\0\1", old_peer)
        while True:
            data, _ = old.recvfrom(2000)
            if len(data) < 516:
                break
            old.sendto(b"\0\4" + data[2:4], old_peer)
        old.sendto(b"\0\4" + data[2:4], old_peer)
        server.wait_finished(1, timeout=5)
        for _ in range(40):  # find the new transfer that got the old port
            with client() as new:
                peer = first_block(new, server.port)
                if peer != old_peer:
                    new.sendto(b"\0\5\0\0done\0", peer)
                    continue
                old.sendto(b"\0\4\0\3", peer)
                got = replies(old, 0.5)
                assert [d for d, _ in got] == [b"\0\5\0\5Unknown transfer ID\0"]
                new.sendto(b"\0\4\0\1", peer)
                assert b"\0\3\0\2" in [d[:4] for d, _ in replies(new, 0.5)]
                new.sendto(b"\0\5\0\0done\0", peer)
                return
        pytest.fail("no transfer reused the old port")


def test_long_lockstep_transfer_reads_its_client_through_a_connected_twin(server: RunningServer) -> None:
    """A lockstep transfer of PAIR_MIN_BLOCKS blocks or more gets a second socket on its port, connected
    to the client (the fast path: no address work per block). The client still sees one TID, every
    block arrives intact, a stranger to that port still gets ERROR 5 and the transfer goes on, and the
    twin is gone when the transfer is over (the pooled socket stays)."""
    data = server.contents["big.bin"]  # 391 blocks of 512
    with client() as sock, client() as stranger:
        peer = first_block(sock, server.port)
        assert sorted(udp_peers_on(peer[1])) == [("0.0.0.0", 0), sock.getsockname()]
        stranger.sendto(b"\0\4\0\1", peer)
        assert [d for d, _ in replies(stranger, 0.5)] == [b"\0\5\0\5Unknown transfer ID\0"]
        replies(sock, 0)  # a timer's resend of block 1, perhaps
        sock.settimeout(3)
        sock.sendto(b"\0\4\0\0", peer)  # a duplicate: ignored, as on one socket
        sock.sendto(b"\0\4\0\1", peer)
        received = bytearray(data[:512])
        for block in range(2, 1000):
            got, addr = sock.recvfrom(2000)
            assert addr == peer
            assert got[:4] == b"\0\3" + block.to_bytes(2, "big"), (got[:4], block)
            received += got[4:]
            sock.sendto(b"\0\4" + got[2:4], peer)
            if len(got) < 516:
                break
        assert bytes(received) == data
        stats = server.wait_finished(1, timeout=5)
        assert stats[-1].outcome_text == "completed"
        assert udp_peers_on(peer[1]) == [("0.0.0.0", 0)]


def test_short_lockstep_transfer_has_no_twin(server: RunningServer) -> None:
    """Under PAIR_MIN_BLOCKS (small.bin: 9 blocks) a twin would cost more system calls than it saves."""
    with client() as sock:
        peer = first_block(sock, server.port, b"small.bin")
        assert udp_peers_on(peer[1]) == [("0.0.0.0", 0)]
        sock.sendto(b"\0\5\0\0done\0", peer)


@pytest.mark.parametrize("name", [b"big.bin", b"small.bin"], ids=["twin", "one-socket"])
def test_repeated_ack_in_backoff_gets_the_block_again(server: RunningServer, name: bytes) -> None:
    """Block 2 lost, the timer has resent it once and backs off (2 s next): the client's repeated ACK 1,
    a timeout later, gets block 2 at once (ReadTransfer's RESEND_NOW), on the lockstep fast path with
    and without a twin."""
    with client() as sock:
        peer = first_block(sock, server.port, name)
        sock.sendto(b"\0\4\0\1", peer)
        assert sock.recvfrom(2000)[0][:4] == b"\0\3\0\2"  # "lost": not acknowledged
        assert sock.recvfrom(2000)[0][:4] == b"\0\3\0\2"  # the timer's resend, after 1 s
        time.sleep(1.05)  # a timeout after the resend: allowed again; the timer's next is 2 s after it
        sock.sendto(b"\0\4\0\1", peer)
        got = replies(sock, 0.3)
        assert [d[:4] for d, _ in got] == [b"\0\3\0\2"]
        sock.sendto(b"\0\5\0\0done\0", peer)


def test_changed_file_is_served_new(server: RunningServer) -> None:
    path = server.root / "small.bin"
    assert fetch(server.port, "small.bin", OPTIONS).data == server.contents["small.bin"]
    new = os.urandom(5000)
    path.write_bytes(new)  # same inode, new size and mtime
    assert fetch(server.port, "small.bin", OPTIONS).data == new
    replaced = os.urandom(4096)
    (server.root / "tmp").write_bytes(replaced)
    os.replace(server.root / "tmp", path)  # a new inode, same size
    assert fetch(server.port, "small.bin", OPTIONS).data == replaced


def test_removed_file_is_not_found(server: RunningServer) -> None:
    assert fetch(server.port, "sub/boot.efi").data == server.contents["sub/boot.efi"]
    (server.root / "sub" / "boot.efi").unlink()
    with pytest.raises(ClientError) as err:
        fetch(server.port, "sub/boot.efi")
    assert err.value.code == 1


def test_file_swapped_for_a_symlink_out_of_the_root_is_refused(server: RunningServer) -> None:
    secret = server.root.parent / "secret"
    assert fetch(server.port, "small.bin").data == server.contents["small.bin"]
    (server.root / "small.bin").unlink()
    (server.root / "small.bin").symlink_to(secret)
    with pytest.raises(ClientError) as err:
        fetch(server.port, "small.bin")
    assert err.value.code == 2


def test_directory_swapped_for_a_symlink_out_of_the_root_is_refused(server: RunningServer) -> None:
    """The file itself unchanged (same inode), its directory moved out of the root and linked back."""
    assert fetch(server.port, "sub/boot.efi").data == server.contents["sub/boot.efi"]
    outside = server.root.parent / "moved"
    os.rename(server.root / "sub", outside)
    (server.root / "sub").symlink_to(outside)
    with pytest.raises(ClientError) as err:
        fetch(server.port, "sub/boot.efi")
    assert err.value.code == 2


def test_option_sets_negotiated_per_request(server: RunningServer) -> None:
    """Memoised negotiation: each request still gets the OACK for its own options and file."""
    for options, name in [
        (OPTIONS, "small.bin"),
        ({"blksize": "512"}, "small.bin"),
        (OPTIONS, "sub/boot.efi"),
        ({}, "small.bin"),
        ({"tsize": "0", "windowsize": "4"}, "big.bin"),
    ]:
        got = fetch(server.port, name, options)
        assert got.data == server.contents[name]
        want = {k: (str(len(server.contents[name])) if k == "tsize" else v) for k, v in options.items()}
        assert got.oack == want
