"""Packaging (issue 8): a built wheel and `pip install .` each give a working `proxydhcp` command in a
fresh virtual environment, with every runtime dependency declared.

The source is copied to a temporary directory first: setuptools builds in the source tree (build/,
*.egg-info), and the shared working tree must not change under other runs. Dependencies come from
the configured package index (pip's cache makes the second install quick).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from proxydhcp import __version__

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
# What a checkout needs in order to build (pyproject's readme and license files included).
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE")
COMMANDS = ("serve", "tftp", "check-config", "explain", "diagnose", "probe")
# Every module must import with only the declared dependencies (`__main__` runs the CLI on import).
IMPORT_ALL = """
import importlib, pkgutil, proxydhcp
names = [m.name for m in pkgutil.walk_packages(proxydhcp.__path__, "proxydhcp.")]
for name in names:
    if not name.endswith("__main__"):
        importlib.import_module(name)
print(proxydhcp.__file__)
print(len(names))
"""


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (it would import this tree instead of the install), no PROXYDHCP_* settings."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PROXYDHCP_")}


def run(argv: list[str | Path], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=_clean_env(), timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{argv} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the checkout's buildable files."""
    dest = tmp_path / "src"
    dest.mkdir()
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "proxydhcp",
        dest / "proxydhcp",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    return dest


def fresh_venv(path: Path) -> Path:
    """A new virtual environment with pip; returns its bin/ directory."""
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot create a virtual environment here: {exc}")
    bindir = path / "bin"
    if not (bindir / "python").exists():
        pytest.skip("virtual environment has no bin/python")
    return bindir


def check_installed(bindir: Path, workdir: Path) -> None:
    """The console script and the package of the venv work, from outside the source tree."""
    script = bindir / "proxydhcp"
    assert script.is_file(), "no `proxydhcp` console script installed"

    out = run([script, "--version"], workdir).stdout
    assert out.strip() == f"proxydhcp {__version__}"

    out = run([script, "--help"], workdir).stdout
    for command in COMMANDS:
        assert command in out, f"`{command}` missing from --help"
    assert "serve" in run([script, "serve", "--help"], workdir).stdout

    proc = run([script, "check-config", "-c", ROOT / "examples" / "minimal.toml"], workdir)
    assert 'cidr = "192.168.1.0/24"' in proc.stdout
    assert 'bios = "undionly.kpxe"' in proc.stdout

    # The installed copy is the one in use, and every module imports with the declared dependencies.
    lines = run([bindir / "python", "-c", IMPORT_ALL], workdir).stdout.split()
    venv_root = bindir.parent.resolve()
    assert Path(lines[0]).resolve().is_relative_to(venv_root), lines[0]
    assert int(lines[1]) >= 20


def test_built_wheel_installs_and_runs(source: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, source], tmp_path)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    assert re.fullmatch(rf"proxydhcp-{re.escape(__version__)}-py3-none-any\.whl", wheel.name), wheel.name

    # Every module of the package, and the PEP 561 marker, are in the wheel; the entry point is declared.
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "proxydhcp = proxydhcp.cli:main" in zf.read(entry_points).decode()
    expected = {p.relative_to(source).as_posix() for p in (source / "proxydhcp").rglob("*.py")}
    assert expected - names == set(), "modules missing from the wheel"
    assert "proxydhcp/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))], "tests or bench packaged"

    bindir = fresh_venv(tmp_path / "venv-wheel")
    run([bindir / "python", "-m", "pip", "install", wheel], tmp_path)
    check_installed(bindir, tmp_path)


def test_pip_install_source_dir(source: Path, tmp_path: Path) -> None:
    bindir = fresh_venv(tmp_path / "venv-src")
    run([bindir / "python", "-m", "pip", "install", source], tmp_path)
    check_installed(bindir, tmp_path)
    # pip records the dependencies the project declares (a check that pyproject's list is the one used).
    show = run([bindir / "python", "-m", "pip", "show", "proxydhcp"], tmp_path).stdout
    requires = next(line for line in show.splitlines() if line.startswith("Requires:"))
    # uvloop on Linux: the default install is the fast one (issue 13).
    for dep in ("dpkt", "aiofiles", "pydantic", "pydantic-settings", "typer", "prometheus-client", "uvloop"):
        assert re.search(rf"(^|[ ,]){re.escape(dep)}(,|$)", requires.split(":", 1)[1].strip()), requires
