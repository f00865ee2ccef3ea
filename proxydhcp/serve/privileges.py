"""Dropping root after the privileged ports are bound (`serve --user NAME`).

Order matters: supplementary groups and the group go first (only root may change them), the user
last. A setuid() from root to another uid clears the permitted and effective capability sets (no
SECBIT_KEEP_CAPS is set here), and PR_SET_NO_NEW_PRIVS stops any later exec from gaining them back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
from dataclasses import dataclass

from proxydhcp.errors import ProxyDhcpError

PR_SET_NO_NEW_PRIVS = 38


class PrivilegeError(ProxyDhcpError):
    """The requested user cannot be switched to (the message says why)."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    uid: int
    gid: int


def lookup(user: str) -> Identity:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"--user: no such user {user!r}") from None
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)


def drop_privileges(user: str) -> Identity:
    """Become `user` with its primary group only; the process keeps no capabilities."""
    who = lookup(user)
    if os.geteuid() != 0:
        if os.geteuid() == who.uid:
            return who  # already that user: nothing to drop
        raise PrivilegeError(f"--user {user}: only root can switch users (running as uid {os.geteuid()})")
    try:
        os.setgroups([])
        os.setgid(who.gid)
        os.setuid(who.uid)
    except OSError as exc:
        raise PrivilegeError(f"--user {user}: cannot switch: {exc.strerror}") from None
    if os.getuid() != who.uid or os.geteuid() != who.uid or os.getegid() != who.gid:
        raise PrivilegeError(f"--user {user}: switch did not take effect")
    _no_new_privs()
    return who


def _no_new_privs() -> None:
    name = ctypes.util.find_library("c")
    if not name:
        return
    libc = ctypes.CDLL(name, use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # best effort: the uid change already dropped the caps


def capabilities(pid: int | str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process as integers (from /proc)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                out[key] = int(value.strip(), 16)
    return out
