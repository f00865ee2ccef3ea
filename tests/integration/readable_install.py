"""A copy of proxydhcp and its runtime dependencies that any user can read, for tests that start the
service as an unprivileged user (`nobody`).

The checkout and its .venv may sit where `nobody` cannot enter (root's home is mode 0700, and the
README lets you clone anywhere), so such a test must not run the service from there. This copies
what `pip install .` would put in site-packages (the package, and the files each installed
distribution of the dependency closure recorded) into a fresh 0755 directory under /tmp, and runs
it with the base interpreter and `-S`, so only the standard library and that directory are seen: a
dependency missing from pyproject.toml fails here instead of being found in some other site-packages.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
# As nobody without capabilities (root's CAP_DAC_* would hide an unreadable path).
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
AS_NOBODY += ["--inh-caps=-all", "--bounding-set=-all"]


def _closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions `requirements` need on this platform, transitively (no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(text) for text in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        dist = metadata.distribution(req.name)  # PackageNotFoundError: the test venv lacks a dependency
        seen[key] = dist
        todo.extend(Requirement(text) for text in dist.requires or [])
    return list(seen.values())


def readable_install() -> Path:
    """A new directory (mode 0755, files 0644/0755) holding proxydhcp and its dependencies; the
    caller removes it. Put it on PYTHONPATH of `interpreter()` run with `-S`."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    target = Path(tempfile.mkdtemp(prefix="pds-install-"))
    target.chmod(0o755)
    shutil.copytree(REPO / "proxydhcp", target / "proxydhcp", ignore=shutil.ignore_patterns("__pycache__"))
    for dist in _closure(dependencies):
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # console scripts (../../bin) and byte code: not needed to import
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                dest = target / file
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return target


def interpreter() -> str:
    """An interpreter of this one's version that `nobody` can run: this (virtual) environment's own
    may sit in a directory only root can enter (a venv in the checkout, pyenv under /root), while a
    system one (/usr/bin/python3.X) of the same version loads the same compiled extensions."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.realpath(sys.executable), f"/usr/bin/{version}", f"/usr/local/bin/{version}"]
    for candidate in dict.fromkeys(candidates):
        probe = subprocess.run(
            [*AS_NOBODY, "env", "-C", "/", candidate, "-S", "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, cwd="/",
        )  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return candidate
    pytest.fail(f"no {version} that user nobody can run among {candidates}")
