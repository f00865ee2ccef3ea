"""Shell completion (typer): the script `--show-completion` prints, and the completion protocol it uses.

How typer 0.2x does it: `--show-completion` is a flag; the shell comes from shellingham (the process
tree), or, with `_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION` set, from the option's value
(`--show-completion bash`). The printed script calls the program again with `_PROXYDHCP_COMPLETE=
complete_<shell>` and the words typed so far (bash: COMP_WORDS/COMP_CWORD, zsh/fish:
_TYPER_COMPLETE_ARGS); the program prints the candidates and exits. The env var's name comes from
the program name, which `cli.main` pins to "proxydhcp" (so `python -m proxydhcp` completes too).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PROXYDHCP_", "_PROXYDHCP_"))}
    env.pop("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def proxydhcp(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxydhcp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(**env),
        check=False,
    )


def complete_bash(*words: str) -> list[str]:
    """What the bash protocol offers for the last of `words` (the word being completed)."""
    proc = proxydhcp(
        _PROXYDHCP_COMPLETE="complete_bash",
        COMP_WORDS=" ".join(("proxydhcp", *words)),
        COMP_CWORD=str(len(words)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout.split()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_for_a_named_shell(shell: str) -> None:
    proc = proxydhcp("--show-completion", shell, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert "proxydhcp" in script
    assert f"_PROXYDHCP_COMPLETE=complete_{shell}" in script
    if shell == "bash":
        assert "complete -o default -F _proxydhcp_completion proxydhcp" in script
    elif shell == "zsh":
        assert "#compdef proxydhcp" in script
    else:
        assert "complete --command proxydhcp" in script


def test_show_completion_detects_the_calling_shell() -> None:
    """The user's path: `proxydhcp --show-completion` typed in bash prints the bash script."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    # `; true` keeps bash alive as the parent (a lone command would be exec'd in its place).
    proc = subprocess.run(
        [bash, "-c", f"{sys.executable} -m proxydhcp --show-completion; true"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "_PROXYDHCP_COMPLETE=complete_bash" in proc.stdout
    assert "complete -o default -F _proxydhcp_completion proxydhcp" in proc.stdout


def test_complete_command_names() -> None:
    assert complete_bash("se") == ["serve"]
    assert complete_bash("check") == ["check-config"]
    assert complete_bash("xyz") == []
    everything = set(complete_bash(""))
    assert {"serve", "tftp", "check-config", "explain", "diagnose", "probe"} <= everything


def test_complete_options_of_a_command() -> None:
    assert complete_bash("serve", "--reply") == ["--reply-delay-ms"]
    assert complete_bash("serve", "--log") == ["--log-format"]
    offered = set(complete_bash("serve", "--"))
    assert {"--config", "--subnet", "--boot-file", "--metrics", "--log-format", "--help"} <= offered
    # Options of another command are not offered.
    assert "--root" not in offered


def test_complete_zsh_protocol_describes_commands() -> None:
    proc = proxydhcp(_PROXYDHCP_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="proxydhcp se")
    assert proc.returncode == 0, proc.stderr
    assert '"serve"' in proc.stdout and "Run the proxyDHCP service" in proc.stdout
    assert "check-config" not in proc.stdout


def test_bash_runs_the_script_and_offers_serve(tmp_path: Path) -> None:
    """End to end in a real bash: source the printed script, call its completion function, read COMPREPLY.

    The script runs `proxydhcp` by name, so a stand-in on PATH runs this tree's package."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    shim = tmp_path / "proxydhcp"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m proxydhcp "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    script = (
        "set -e\n"
        'eval "$(proxydhcp --show-completion bash)"\n'
        "COMP_WORDS=(proxydhcp se); COMP_CWORD=1\n"
        "_proxydhcp_completion proxydhcp\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        [bash, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(
            PATH=f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}",
            _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1",
        ),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["serve"]
