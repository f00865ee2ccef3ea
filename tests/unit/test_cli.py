"""Command line: --version, --help of every command, exit code 2 with a one-line reason naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from proxydhcp import __version__
from proxydhcp.cli import app

# DESIGN.md §3: the commands users and scripts rely on.
DESIGN_COMMANDS = ("serve", "tftp", "check-config", "explain", "diagnose", "probe")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PROXYDHCP_"):
            monkeypatch.delenv(name)


def registered() -> set[str]:
    group = typer.main.get_group(app)
    return set(group.commands)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"proxydhcp {__version__}"


def test_version_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "proxydhcp", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"proxydhcp {__version__}"


def test_no_arguments_shows_help() -> None:
    code, out, err = run()
    assert code in (0, 2)  # click exits 2 for a group called without a command, after printing help
    assert "serve" in out + err and "check-config" in out + err


def test_core_commands_registered() -> None:
    assert {"serve", "tftp", "check-config"} <= registered()


@pytest.mark.parametrize("command", DESIGN_COMMANDS)
def test_help_of_every_command(command: str) -> None:
    if command not in registered():
        pytest.skip(f"`{command}` is not wired into cli.py yet")
    code, out, _ = run(command, "--help")
    assert code == 0
    assert f"proxydhcp {command}" in out and "--help" in out


def test_help_lists_every_registered_command() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in registered():
        assert command in out


def test_serve_help_maps_flags_to_keys() -> None:
    _, out, _ = run("serve", "--help")
    for flag in (
        "--config",
        "--interface",
        "--subnet",
        "--boot-file",
        "--ipxe-boot-file",
        "--server-ip",
        "--tftp-root",
        "--no-tftp",
        "--tftp-port",
        "--colocated",
        "--log-format",
        "--verbose",
        "--metrics",
        "--user",
    ):
        assert flag in out, flag


def one_line_error(args: list[str], *expected: str) -> str:
    code, out, err = run(*args)
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("proxydhcp: ")
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in out + err
    return lines[0]


def test_check_config_bad_key_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[tftp]\nmax_blksize = 99999\n")
    one_line_error(["check-config", "-c", str(path)], str(path), "tftp.max_blksize")


def test_check_config_unknown_key_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[subnet]]\ncidr = "10.0.0.0/24"\nnextserver = "10.0.0.1"\n')
    one_line_error(["check-config", "-c", str(path)], "subnet.0.nextserver")


def test_check_config_bad_toml_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[boot\nbios = 1\n")
    one_line_error(["check-config", "-c", str(path)], "not valid TOML")


def test_check_config_missing_file_exits_2(tmp_path: Path) -> None:
    one_line_error(["check-config", "-c", str(tmp_path / "nope.toml")], "cannot read")


def test_boot_file_without_equals_exits_2() -> None:
    one_line_error(["check-config", "--boot-file", "undionly.kpxe"], "--boot-file", "ARCH=FILE")


def test_boot_file_unknown_arch_exits_2() -> None:
    one_line_error(["check-config", "-s", "10.0.0.0/24", "--boot-file", "vax=a.bin"], "unknown architecture")


def test_serve_config_error_exits_2_before_binding() -> None:
    # fails in validation, so no socket is ever opened
    one_line_error(["serve", "--boot-file", "bios"], "--boot-file")
    one_line_error(["serve", "-s", "10.0.0.0/99"], "--subnet")


def test_check_config_prints_effective_settings() -> None:
    code, out, err = run("check-config", "-s", "10.0.0.0/24", "--boot-file", "7=ipxe.efi", "--colocated")
    assert code == 0, err
    assert 'cidr = "10.0.0.0/24"' in out and 'efi-x64 = "ipxe.efi"' in out and "colocated = true" in out
    assert err == ""


def test_check_config_warns_without_subnet() -> None:
    code, _, err = run("check-config")
    assert code == 0
    assert "no subnet" in err and "--subnet" in err


def test_tftp_bad_address_and_root(tmp_path: Path) -> None:
    one_line_error(["tftp", "--root", str(tmp_path), "--address", "nowhere"], "--address")
    one_line_error(["tftp", "--root", str(tmp_path / "absent")], "--root", "not a directory")


def test_usage_error_exits_2() -> None:
    code, _, err = run("serve", "--no-such-flag")
    assert code == 2 and "no-such-flag" in err


def test_serve_without_subnet_exits_2_and_says_how_to_add_one() -> None:
    # It would answer no one: refuse at start rather than listen on every interface.
    proc = subprocess.run(
        [sys.executable, "-m", "proxydhcp", "serve", "--no-tftp"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("proxydhcp: no subnet is enabled") and "--subnet" in lines[-1]


def _tftp_config(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, Any]:
    """Run `proxydhcp tftp ARGS` up to the server start; the TftpConfig it would serve with."""
    from proxydhcp.tftp import standalone

    seen: list[Any] = []
    monkeypatch.setattr(standalone, "run_standalone", lambda config, emit=None: seen.append(config) or 0)
    monkeypatch.setattr("proxydhcp.cli.setup_logging", lambda *args: None)
    code, _, err = run("tftp", *args)
    return code, err, seen[0] if seen else None


def test_tftp_takes_file_environment_and_flags_with_the_precedence_of_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "proxydhcp.toml"
    conf.write_text(
        f'[tftp]\nroot = "{tmp_path}"\nmax_transfers_per_client = 4\ntimeout = 2.0\ngive_up = 20.0\n'
        "max_transfers = 300\n"
    )
    monkeypatch.setenv("PROXYDHCP_TFTP__MAX_TRANSFERS_PER_CLIENT", "50")
    monkeypatch.setenv("PROXYDHCP_TFTP__GIVE_UP", "9")
    code, err, config = _tftp_config(
        monkeypatch, "-c", str(conf), "--max-transfers-per-client", "64", "--port", "6969"
    )
    assert code == 0, err
    assert config.root == tmp_path and config.port == 6969
    assert config.max_transfers_per_client == 64  # flag over environment over file
    assert config.give_up == 9.0  # environment over file
    assert (config.timeout, config.max_transfers) == (2.0, 300)  # the file's
    code, err, config = _tftp_config(
        monkeypatch, "--root", str(tmp_path), "--max-transfers", "7", "--timeout", "0.5", "--give-up", "3"
    )
    assert code == 0, err
    assert (config.max_transfers, config.timeout, config.give_up) == (7, 0.5, 3.0)
    assert config.max_transfers_per_client == 50  # no file: the environment's


def test_tftp_without_a_root_or_with_a_bad_value_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err, config = _tftp_config(monkeypatch)
    assert code == 2 and "tftp.root" in err and config is None
    code, err, config = _tftp_config(monkeypatch, "--root", str(tmp_path), "--max-transfers-per-client", "0")
    assert code == 2 and "max_transfers_per_client" in err and config is None
    code, err, config = _tftp_config(monkeypatch, "--root", str(tmp_path), "--address", "nowhere")
    assert code == 2 and "address" in err and config is None
