"""How `serve` and `tftp` hand `[tftp]` settings and transfer outcomes to the TFTP package."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from proxydhcp.metrics import TFTP_FAILURES
from proxydhcp.outcome import TransferOutcome
from proxydhcp.tftp.config import TftpConfig, TftpSettings

# Settings the caller handles itself rather than passing on.
NOT_MAPPED = {"enabled", "root"}


def test_every_tftp_setting_reaches_tftp_config(tmp_path: Path) -> None:
    settings = TftpSettings(
        address=IPv4Address("10.1.2.3"),
        port=6969,
        max_blksize=1024,
        max_windowsize=4,
        max_transfers=7,
        max_transfers_per_client=3,
        timeout=2.5,
        give_up=12.0,
    )
    config = TftpConfig.from_settings(settings, tmp_path)
    defaults = TftpConfig(root=tmp_path)
    config_fields = {f.name for f in dataclasses.fields(TftpConfig)}
    for name in set(TftpSettings.model_fields) - NOT_MAPPED:
        assert name in config_fields, f"tftp.{name} has no TftpConfig field"
        want = getattr(settings, name)
        got = getattr(config, name)
        assert got == (str(want) if isinstance(want, IPv4Address) else want), name
        assert got != getattr(defaults, name), f"tftp.{name}: test value equals the default"
    assert config.root == tmp_path
    assert config.cache_bytes == defaults.cache_bytes


@pytest.mark.parametrize(
    ("outcome", "label"),
    [
        (TransferOutcome.COMPLETED, "completed"),
        (TransferOutcome.PROBE, "probe"),
        (TransferOutcome.CLIENT_ERROR, "client_error"),
        (TransferOutcome.TIMEOUT, "timeout"),
        (TransferOutcome.ABORTED, "aborted"),
    ],
)
def test_outcome_labels(outcome: TransferOutcome, label: str) -> None:
    assert outcome.label == label
    assert label in TFTP_FAILURES | {"completed", "probe"}


def test_the_tftp_servers_defaults_are_the_settings_defaults(tmp_path: Path) -> None:
    """One source of defaults: a TftpConfig built without settings equals one built from defaults."""
    assert TftpConfig(root=tmp_path) == TftpConfig.from_settings(TftpSettings(), tmp_path)
