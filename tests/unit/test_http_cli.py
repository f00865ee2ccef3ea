"""The HTTP pieces of the command line and configuration: `proxydhcp http`, --http-port/--http-root,
[http] in check-config, explain showing the URL, and bad values exiting 2 with the key named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proxydhcp.cli import app


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PROXYDHCP_"):
            monkeypatch.delenv(name)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_http_command_help_and_bad_input(tmp_path: Path) -> None:
    code, out, _ = run("http", "--help")
    assert code == 0 and "--root" in out and "--address" in out and "--port" in out
    code, _, err = run("http", "--root", str(tmp_path), "--address", "not-an-ip")
    assert code == 2 and "http.address: not an IP address" in err
    code, _, err = run("http", "--root", str(tmp_path / "nope"))
    assert code == 2 and "http.root (--root): not a directory" in err


def test_check_config_shows_http(tmp_path: Path) -> None:
    code, out, _ = run(
        "check-config", "-s", "10.0.0.0/24", "--http-port", "8080", "--http-root", str(tmp_path)
    )
    assert code == 0
    section = out.split("[http]\n", 1)[1].split("\n\n", 1)[0]
    assert "port = 8080" in section and f'root = "{tmp_path}"' in section and "enabled = true" in section


@pytest.mark.parametrize(
    ("toml", "key"),
    [("[http]\nport = 0\n", "http.port"), ('[http]\naddress = "nowhere"\n', "http.address"),
     ("[http]\nsend_timeout = -1\n", "http.send_timeout")],
)  # fmt: skip
def test_bad_http_settings_exit_2(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    code, _, err = run("check-config", "-c", str(path))
    assert code == 2 and key in err and len(err.strip().splitlines()) == 1


def test_explain_shows_the_url() -> None:
    args = ["explain", "-s", "10.77.0.0/24", "--boot-file", "efi-x64-http=ipxe.efi",
            "--mac", "52:54:00:12:34:56", "--arch", "efi-x64-http", "--local-ip", "10.77.0.2"]  # fmt: skip
    code, out, _ = run(*args, "--http-port", "8080")
    assert code == 0
    assert "boot file    http://10.77.0.2:8080/ipxe.efi" in out
    assert '60 VENDOR_CLASS       "HTTPClient"' in out
    assert "4011" not in out.split("result:", 1)[1]
    code, out, _ = run(*args)
    assert code == 0 and "the HTTP server is off (--http-port)" in out
