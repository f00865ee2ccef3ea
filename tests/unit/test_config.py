"""Configuration: TOML validation, one-line errors naming the key, and the flags > env > file order."""

from __future__ import annotations

import os
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proxydhcp.cli import app, build_overrides
from proxydhcp.config import Settings, effective_toml, load_settings, normalize_mac, read_toml
from proxydhcp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own PROXYDHCP_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.upper().startswith("PROXYDHCP_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxydhcp.toml"
    path.write_text(text)
    return path


def config_error(path: Path | None, overrides: dict[str, object] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, overrides)
    message = str(info.value)
    assert "\n" not in message, "config errors are one line"
    return message


def test_defaults() -> None:
    s = load_settings()
    assert s.server.interfaces == [] and s.server.server_ip is None and not s.server.colocated
    assert (s.server.dhcp_port, s.server.pxe_port, s.server.reply_delay_ms) == (67, 4011, 0)
    assert s.tftp.enabled and s.tftp.root is None and s.tftp.port == 69
    assert (s.tftp.max_blksize, s.tftp.max_windowsize) == (1468, 16)
    assert (s.tftp.max_transfers, s.tftp.max_transfers_per_client) == (1000, 16)
    assert (s.tftp.timeout, s.tftp.give_up) == (1.0, 30.0)
    assert s.boot == {} and s.subnet == [] and s.host == []
    assert (s.log.format, s.log.level, s.metrics.listen) == ("text", "info", None)


def test_full_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
interfaces = ["eth0", "eth1"]
server_ip = "10.0.0.5"
reply_delay_ms = 250
[tftp]
root = "/srv/tftp"
max_blksize = 8192
[boot]
bios = "undionly.kpxe"
7 = "ipxe.efi"
IPXE = "http://10.0.0.5/boot.ipxe"
[[subnet]]
cidr = "10.0.0.17/24"
boot = { 11 = "arm64.efi" }
next_server = "10.0.0.6"
[[host]]
mac = "52-54-00-AA-BB-CC"
boot_file = "special.efi"
[[host]]
mac = "525400aabbcd"
ignore = true
""",
    )
    s = load_settings(path)
    assert s.server.interfaces == ["eth0", "eth1"]
    assert s.server.server_ip == IPv4Address("10.0.0.5")
    assert s.tftp.root == Path("/srv/tftp") and s.tftp.max_blksize == 8192
    # arch numbers become names, `ipxe` is case-insensitive
    assert s.boot == {"bios": "undionly.kpxe", "efi-x64": "ipxe.efi", "ipxe": "http://10.0.0.5/boot.ipxe"}
    assert s.subnet[0].cidr == IPv4Network("10.0.0.0/24")  # host bits are forgiven
    assert s.subnet[0].boot == {"efi-arm64": "arm64.efi"}
    assert s.host[0].mac == "52:54:00:aa:bb:cc" and s.host[1].ignore
    assert s.lookup.hosts.get("52:54:00:aa:bb:cd") is s.host[1]
    assert s.subnet_for(IPv4Address("10.0.0.99")) is s.subnet[0]
    assert s.subnet_for(IPv4Address("10.0.1.1")) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\ncolocatd = true\n", "server.colocatd: Extra inputs are not permitted"),
        ("[serverr]\n", "serverr: Extra inputs are not permitted"),
        ("[server]\nreply_delay_ms = -1\n", "server.reply_delay_ms:"),
        ('[server]\nserver_ip = "10.0.0.300"\n', "server.server_ip:"),
        ("[tftp]\nport = 70000\n", "tftp.port:"),
        ("[tftp]\nmax_blksize = 4\n", "tftp.max_blksize:"),
        ("[tftp]\ntimeout = 0\n", "tftp.timeout:"),
        ('[boot]\nefi-x65 = "a.efi"\n', "boot: unknown architecture 'efi-x65'"),
        ('[boot]\nbios = ""\n', "boot: boot file for 'bios' must be a non-empty name"),
        ('[boot]\nbios = "' + "a" * 128 + '"\n', "at most 127 bytes"),
        ('[[subnet]]\ncidr = "10.0.0.0/33"\n', "subnet.0.cidr: not an IPv4 network"),
        ('[[subnet]]\nnext_server = "10.0.0.1"\n', "subnet.0.cidr: Field required"),
        ('[[subnet]]\ncidr = "10.0.0.0/8"\nboot = { pdp11 = "x" }\n', "subnet.0.boot: unknown architecture"),
        ('[[host]]\nmac = "52:54:00:zz:00:01"\nignore = true\n', "host.0.mac: not a MAC address"),
        ('[[host]]\nmac = "52:54:00:00:00:01"\n', "host.0: a host needs boot_file, or ignore = true"),
        (
            '[[host]]\nmac = "52:54:00:00:00:01"\nignore = true\n'
            '[[host]]\nmac = "525400000001"\nignore = true\n',
            "MAC 52:54:00:00:00:01 is listed twice",
        ),
        ('[log]\nformat = "xml"\n', "log.format:"),
        ('[log]\nlevel = "trace"\n', "log.level:"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_invalid_file_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_two_errors_are_counted_not_listed(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "[tftp]\nport = 0\nmax_blksize = 1\n"))
    assert message.endswith("(and 1 more)")


def test_missing_file(tmp_path: Path) -> None:
    message = config_error(tmp_path / "absent.toml")
    assert "absent.toml: cannot read" in message


def test_flags_override_environment_override_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[tftp]\nport = 6900\nroot = "/from/file"\n[server]\nreply_delay_ms = 10\n')
    assert load_settings(path).tftp.port == 6900
    monkeypatch.setenv("PROXYDHCP_TFTP__PORT", "6901")
    monkeypatch.setenv("PROXYDHCP_TFTP__ROOT", "/x")
    monkeypatch.setenv("PROXYDHCP_SERVER__COLOCATED", "true")
    s = load_settings(path)
    assert (s.tftp.port, s.tftp.root, s.server.colocated) == (6901, Path("/x"), True)
    assert s.server.reply_delay_ms == 10  # keys the environment does not name keep the file's value
    s = load_settings(path, build_overrides(tftp_port=6902, tftp_root=Path("/flag")))
    assert (s.tftp.port, s.tftp.root, s.server.colocated) == (6902, Path("/flag"), True)


def test_environment_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYDHCP_SERVER__INTERFACES", '["eth0", "eth1"]')
    monkeypatch.setenv("PROXYDHCP_BOOT__BIOS", "undionly.kpxe")
    monkeypatch.setenv("PROXYDHCP_LOG__FORMAT", "json")
    monkeypatch.setenv("PROXYDHCP_METRICS__LISTEN", "127.0.0.1:9267")
    s = load_settings()
    assert s.server.interfaces == ["eth0", "eth1"]
    assert s.boot == {"bios": "undionly.kpxe"}
    assert s.log.format == "json" and s.metrics.listen == "127.0.0.1:9267"


def test_environment_boot_entries_merge_with_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[boot]\nbios = "undionly.kpxe"\nefi-x64 = "ipxe.efi"\n')
    monkeypatch.setenv("PROXYDHCP_BOOT__BIOS", "pxelinux.0")
    assert load_settings(path).boot == {"bios": "pxelinux.0", "efi-x64": "ipxe.efi"}


def test_bad_environment_value_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYDHCP_TFTP__PORT", "abc")
    assert "tftp.port:" in config_error(None)
    monkeypatch.delenv("PROXYDHCP_TFTP__PORT")
    monkeypatch.setenv("PROXYDHCP_SERVER__INTERFACES", "not json")
    assert config_error(None).startswith("environment: ")


def test_subnet_flag_adds_to_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[[subnet]]\ncidr = "10.0.0.0/24"\nnext_server = "10.0.0.6"\n')
    s = load_settings(path, build_overrides(subnet=["10.1.0.0/24", "10.0.0.1/24", "10.2.0.0/16"]))
    assert [str(n.cidr) for n in s.subnet] == ["10.0.0.0/24", "10.1.0.0/24", "10.2.0.0/16"]
    # the flag naming a subnet the file already has does not wipe the file's details
    assert s.subnet[0].next_server == IPv4Address("10.0.0.6")
    assert (
        config_error(path, build_overrides(subnet=["10.0.0.0/40"]))
        == "--subnet: not an IPv4 network or IPv6 prefix: '10.0.0.0/40'"
    )


def test_boot_file_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[boot]\nbios = "undionly.kpxe"\nefi-x64 = "ipxe.efi"\n')
    s = load_settings(
        path, build_overrides(boot_file=["efi-x64=snponly.efi", "11=arm.efi"], ipxe_boot_file="b.ipxe")
    )
    assert s.boot == {
        "bios": "undionly.kpxe",
        "efi-x64": "snponly.efi",
        "efi-arm64": "arm.efi",
        "ipxe": "b.ipxe",
    }
    with pytest.raises(ConfigError, match="--boot-file: expected ARCH=FILE, got 'bios'"):
        build_overrides(boot_file=["bios"])
    assert "unknown architecture 'vax'" in config_error(None, build_overrides(boot_file=["vax=a"]))


def test_other_flags_map_to_keys() -> None:
    s = load_settings(
        None,
        build_overrides(
            interface=["eth0"],
            server_ip="10.0.0.5",
            no_tftp=True,
            colocated=True,
            reply_delay_ms=200,
            log_format="json",
            verbose=True,
            metrics="127.0.0.1:9267",
            user="nobody",
        ),
    )
    assert s.server.interfaces == ["eth0"] and s.server.server_ip == IPv4Address("10.0.0.5")
    assert not s.tftp.enabled and s.server.colocated and s.server.reply_delay_ms == 200
    assert (s.log.format, s.log.level, s.metrics.listen, s.server.user) == (
        "json",
        "debug",
        "127.0.0.1:9267",
        "nobody",
    )


def test_normalize_mac() -> None:
    assert normalize_mac(" 52-54-00-AA-BB-CC ") == "52:54:00:aa:bb:cc"
    for bad in ("52:54:00:aa:bb", "52:54:00:aa:bb:cc:dd", "g2:54:00:aa:bb:cc", ""):
        with pytest.raises(ValueError):
            normalize_mac(bad)


def test_effective_toml_round_trips(tmp_path: Path) -> None:
    for example in EXAMPLES:
        s = load_settings(example)
        again = tmp_path / "again.toml"
        again.write_text(effective_toml(s))
        assert load_settings(again) == s, example.name


# --- every shipped example is valid, checked the way an admin would ----------------------------------


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"proxydhcp.toml", "minimal.toml", "relay.toml", "colocated.toml", "uefi-bios-ipxe.toml"} <= names


def test_commented_example_names_every_key() -> None:
    """examples/proxydhcp.toml documents every key of Settings (set, or commented out)."""
    text = (ROOT / "examples" / "proxydhcp.toml").read_text()
    model_sections = {
        "server": Settings.model_fields["server"].annotation,
        "tftp": Settings.model_fields["tftp"].annotation,
        "http": Settings.model_fields["http"].annotation,
        "log": Settings.model_fields["log"].annotation,
        "metrics": Settings.model_fields["metrics"].annotation,
    }
    from proxydhcp.config import HostSettings, SubnetSettings

    missing = []
    for section, model in [*model_sections.items(), ("subnet", SubnetSettings), ("host", HostSettings)]:
        for key in model.model_fields:  # type: ignore[union-attr]
            if f"\n{key} = " not in text and f"\n# {key} = " not in text:
                missing.append(f"{section}.{key}")
    assert not missing, f"keys not documented in examples/proxydhcp.toml: {missing}"
    assert "\n[boot]\n" in text and "\nipxe = " in text


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_check_config_cli_runner(example: Path) -> None:
    result = CliRunner().invoke(app, ["check-config", "-c", str(example)])
    assert result.exit_code == 0, result.output
    assert "[server]" in result.stdout and "[[subnet]]" in result.stdout
    assert "warning" not in result.output  # every example enables a subnet
    assert read_toml(example)  # and parses as plain TOML


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_check_config_subprocess(example: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PROXYDHCP_")}
    proc = subprocess.run(
        [sys.executable, "-m", "proxydhcp", "check-config", "-c", str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "[boot]" in proc.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[boot]\nbios = "a\\u0000b"\n',
            "boot: boot file for 'bios' must be a non-empty name of at most 127 bytes without NUL",
        ),
        (
            '[[host]]\nmac = "52:54:00:00:00:01"\nboot_file = "' + "a" * 128 + '"\n',
            "host.0.boot_file: boot_file must be",
        ),
        (
            '[[host]]\nmac = "52:54:00:00:00:01"\nboot_file = "a\\u0000"\n',
            "host.0.boot_file: boot_file must be",
        ),
    ],
)
def test_boot_file_names_fit_the_bootp_file_field(tmp_path: Path, text: str, expected: str) -> None:
    message = config_error(write(tmp_path, text))
    assert expected in message


def test_subnet_cidr_text_is_the_cidr_and_no_field() -> None:
    """The subnet's text, converted once for the records, is `str(cidr)` and leaves equality, dumps
    and a reload's fresh settings alone."""
    raw = {"subnet": [{"cidr": "10.1.2.0/24"}, {"cidr": "fd00:1::/64"}]}
    first, second = Settings.model_validate(raw), Settings.model_validate(raw)
    dump = first.model_dump()
    texts = [s.cidr_text for s in first.subnet]
    assert texts == [str(s.cidr) for s in first.subnet] == ["10.1.2.0/24", "fd00:1::/64"]
    assert first == second and first.subnet[0] == second.subnet[0]  # one cached, the other not
    assert first.model_dump() == dump and "cidr_text" not in dump["subnet"][0]
    reloaded = Settings.model_validate({"subnet": [{"cidr": "10.9.0.0/16"}]})
    assert reloaded.subnet[0].cidr_text == "10.9.0.0/16"


def test_lookup_is_the_settings_per_request_view_and_copies_drop_it() -> None:
    s = Settings.model_validate(
        {
            "server": {"server_ip": "10.0.0.1", "uefi_mode": {"efi-x64": "direct"}},
            "boot": {"bios": "undionly.kpxe"},
            "subnet": [{"cidr": "10.0.0.0/16"}, {"cidr": "10.0.1.0/24"}, {"cidr": "fd00::/64"}],
            "host": [{"mac": "52:54:00:aa:bb:cc", "boot_file": "a.efi"}],
        }
    )
    lookup = s.lookup
    assert (lookup.boot, lookup.uefi_mode) == (s.boot, s.server.uefi_mode)
    assert lookup.reply_delay_ms == s.server.reply_delay_ms == 0
    assert (lookup.server_ip, lookup.server_ip_text) == (IPv4Address("10.0.0.1"), "10.0.0.1")
    assert lookup.hosts == {"52:54:00:aa:bb:cc": s.host[0]}
    assert [e for _, _, e in lookup.subnets[4]] == [s.subnet[1], s.subnet[0]]  # most specific first
    assert [e for _, _, e in lookup.subnets[6]] == [s.subnet[2]]
    for version in (4, 6):  # the views: the same walk, each entry's values as plain attributes
        assert [(n, m) for n, m, _ in lookup.views[version]] == [
            (n, m) for n, m, _ in lookup.subnets[version]
        ]
        for (_, _, view), (_, _, entry) in zip(lookup.views[version], lookup.subnets[version], strict=True):
            assert (view.cidr, view.cidr_text, view.boot, view.next_server) == (
                entry.cidr,
                str(entry.cidr),
                entry.boot,
                entry.next_server,
            )
    for text in ("10.0.1.7", "10.0.2.7", "10.1.0.1", "fd00::5"):
        address = ip_address(text)
        entry, view = lookup.subnet_for(address), lookup.view_for(address)
        assert (entry is None and view is None) or (
            entry is not None and view is not None and entry.cidr == view.cidr
        )
    assert (
        s.subnet_for(IPv4Address("10.0.1.7")) is s.subnet[1]
        and s.subnet_for(IPv4Address("10.0.2.7")) is s.subnet[0]
    )
    assert s == Settings.model_validate(s.model_dump()) and "lookup" not in s.model_dump()
    # A copy with other fields derives its own view, not the original's.
    moved = s.model_copy(
        update={"server": s.server.model_copy(update={"server_ip": IPv4Address("10.0.0.9")})}
    )
    assert moved.lookup.server_ip == IPv4Address("10.0.0.9") and moved.lookup.server_ip_text == "10.0.0.9"
    assert s.lookup is lookup
