"""Configuration: one pydantic model tree, filled from a TOML file, `PROXYDHCP_*` environment variables
and command-line flags (highest priority first: flags, environment, file, defaults).

Defaults live here and only here. Every key mirrors a flag of `proxydhcp serve` (DESIGN.md §3-4).
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from proxydhcp.dhcp.arch import canonical_arch_key
from proxydhcp.errors import ConfigError
from proxydhcp.tftp.config import TftpSettings

IPXE_KEY = "ipxe"  # the [boot] key naming what clients already running iPXE get
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}$")


def normalize_mac(text: str) -> str:
    """`52-54-00-AA-BB-CC`, `525400aabbcc` or `52:54:00:aa:bb:cc` → `52:54:00:aa:bb:cc`."""
    value = text.strip().lower()
    if not _MAC_RE.match(value):
        raise ValueError(f"not a MAC address: {text!r}")
    digits = re.sub(r"[:-]", "", value)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def parse_network(text: str) -> IPv4Network | IPv6Network:
    """`10.0.0.0/24` or `2001:db8:1::/64` (host bits allowed); ValueError naming what is wrong."""
    try:
        return ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not an IPv4 network or IPv6 prefix: {text!r}") from None


def _check_boot_file(value: object, what: str) -> str:
    # The name goes into the 128-byte BOOTP `file` field, NUL-terminated.
    if not isinstance(value, str) or not value or len(value.encode()) > 127 or "\0" in value:
        raise ValueError(f"{what} must be a non-empty name of at most 127 bytes without NUL")
    return value


def _normalize_boot_table(table: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        name = IPXE_KEY if key.strip().lower() == IPXE_KEY else canonical_arch_key(key)
        out[name] = _check_boot_file(value, f"boot file for {key!r}")
    return out


class _Derives(BaseModel):
    """A model with values derived from its fields (cached_property: `Settings.lookup`, the texts of
    `SubnetSettings.cidr_text` and `ServerSettings.server_ip_text`), built on first use."""

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """As BaseModel's, without the derived values the copy carried over: they would describe the
        original's fields."""
        copied = super().model_copy(update=update, deep=deep)
        for klass in type(copied).__mro__:
            for name, attr in vars(klass).items():
                if isinstance(attr, cached_property):
                    copied.__dict__.pop(name, None)
        return copied


class _Section(_Derives):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ServerSettings(_Section):
    interfaces: list[str] = Field(default_factory=list)
    """Interfaces to listen on; empty: every interface with an IPv4 address in an enabled subnet, or
    every non-loopback IPv4 interface when all enabled subnets are relayed."""
    server_ip: IPv4Address | None = None
    """Address put in option 54 / siaddr; default: the receiving interface's address."""
    colocated: bool = False
    """Bind port 4011 only (the DHCP server on this host sends option 60 PXEClient)."""
    reply_delay_ms: int = Field(default=0, ge=0, le=10_000)
    """Delay before each proxy offer: some firmware (Raspberry Pi) takes the first offer it sees."""
    uefi_mode: dict[str, Literal["binl", "direct"]] = Field(default_factory=dict)
    """How UEFI architectures are offered their file: "binl" (default; offer without option 43, the
    client fetches its file on port 4011, which every EDK II fork accepts) or "direct" (option 43
    {6: 8} + file + siaddr in the offer itself, as for BIOS). Keys: architecture names or "default"."""
    dhcp6_preference: int | None = Field(default=None, ge=0, le=255)
    """DHCPv6 Preference (option 7) in the proxy's Advertise; unset: none sent. 255 makes a client
    stop collecting Advertises at once (RFC 8415 §18.2.1): with a proxy, that can be before the
    address-granting server's Advertise arrives, so it is not the default."""
    boot_file_params: list[str] = Field(default_factory=list)
    """DHCPv6 Boot File Parameters (option 60, RFC 5970 §3.2) sent with the Boot File URL."""
    dhcp6_port: int = Field(default=547, ge=1, le=65535)
    dhcp_port: int = Field(default=67, ge=1, le=65535)
    pxe_port: int = Field(default=4011, ge=1, le=65535)
    user: str | None = None
    """Drop to this user (and its group) after binding the ports."""
    reply_memo: bool = True
    """Answer a request shaped like one already answered (a boot storm's identical machines) from
    that answer, its own identity patched in; false: every request runs the whole pipeline."""

    @field_validator("uefi_mode")
    @classmethod
    def _uefi_mode_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return {(k if k.strip().lower() == "default" else canonical_arch_key(k)): v for k, v in value.items()}

    @cached_property
    def server_ip_text(self) -> str:
        """`str(server_ip)` ("" when unset), converted once (not a field, as `SubnetSettings.cidr_text`):
        the next server of most answers, named by every answered request's record."""
        return "" if self.server_ip is None else str(self.server_ip)


class HttpSettings(_Section):
    enabled: bool = True
    """With `port` set, serve files over HTTP (UEFI HTTP boot, iPXE); false switches it off."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """TCP port of the built-in HTTP server; unset: no HTTP server (HTTP boot clients then need URLs)."""
    root: Path | None = None
    """Directory served over HTTP; default: the TFTP root."""
    address: str = "0.0.0.0"
    """Address to listen on (IPv4 or IPv6)."""
    max_connections: int = Field(default=1024, ge=1)
    head_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a connection gets to send a whole request head (keep-alive idle time included)."""
    send_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a response may go without the client taking a byte before the connection is reset."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ip_address(value))
        except ValueError:
            raise ValueError(f"not an IP address: {value!r}") from None

    @property
    def serving(self) -> bool:
        return self.enabled and self.port is not None


class SubnetSettings(_Section):
    cidr: IPv4Network | IPv6Network
    """An IPv4 subnet (DHCPv4 proxy) or an IPv6 prefix (DHCPv6 proxy, RFC 5970)."""
    boot: dict[str, str] = Field(default_factory=dict)
    """Per-subnet architecture → boot file overrides (same keys as [boot])."""
    next_server: IPv4Address | IPv6Address | None = None
    """TFTP server other than this host for clients of this subnet (of the subnet's family)."""

    @field_validator("cidr", mode="before")
    @classmethod
    def _strict_cidr(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_network(value)
        return value

    @model_validator(mode="after")
    def _same_family(self) -> SubnetSettings:
        if self.next_server is not None and self.next_server.version != self.cidr.version:
            raise ValueError(
                f"next_server {self.next_server} is IPv{self.next_server.version} but cidr {self.cidr} "
                f"is IPv{self.cidr.version}"
            )
        if isinstance(self.cidr, IPv6Network) and (self.cidr.is_link_local or self.cidr.is_multicast):
            raise ValueError(
                f"{self.cidr} is not a prefix clients get addresses in: use the global or ULA prefix "
                "of the link (DHCPv6 clients are placed by their address or the relay's link-address)"
            )
        if isinstance(self.cidr, IPv6Network) and self.cidr.prefixlen > 128 - 8:
            raise ValueError(f"IPv6 prefix {self.cidr} is too long to hold clients (at most /120)")
        return self

    @field_validator("boot")
    @classmethod
    def _boot_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _normalize_boot_table(value)

    @cached_property
    def cidr_text(self) -> str:
        """`str(cidr)`, converted once per subnet (not a field: pydantic's ==, dumps and validation
        ignore it; a reload builds new subnets): every answered request's record names it."""
        return str(self.cidr)


class HostSettings(_Section):
    mac: str
    boot_file: str | None = None
    next_server: IPv4Address | None = None
    ignore: bool = False

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        return normalize_mac(value)

    @field_validator("boot_file")
    @classmethod
    def _boot_file(cls, value: str | None) -> str | None:
        return None if value is None else _check_boot_file(value, "boot_file")

    @model_validator(mode="after")
    def _one_action(self) -> HostSettings:
        if not self.ignore and not self.boot_file:
            raise ValueError("a host needs boot_file, or ignore = true")
        return self


class LogSettings(_Section):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


def parse_listen(listen: str) -> tuple[str, int]:
    """`ADDR:PORT`, `[V6ADDR]:PORT` or `:PORT` (every IPv4 address) → (address, port)."""
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"metrics.listen: expected ADDR:PORT, got {listen!r}")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    try:
        address: IPv4Address | IPv6Address = ip_address(host)
    except ValueError:
        raise ConfigError(f"metrics.listen: not an IP address: {host!r}") from None
    return str(address), int(port_text)


class MetricsSettings(_Section):
    listen: str | None = None
    """ADDR:PORT to serve Prometheus metrics on; off when unset."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_listen(value)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("metrics.listen: ")) from None
        return value


class Settings(_Derives, BaseSettings):
    """The whole configuration of `proxydhcp serve`."""

    model_config = SettingsConfigDict(
        env_prefix="PROXYDHCP_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    tftp: TftpSettings = Field(default_factory=TftpSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    boot: dict[str, str] = Field(default_factory=dict)
    subnet: list[SubnetSettings] = Field(default_factory=list)
    host: list[HostSettings] = Field(default_factory=list)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @field_validator("boot")
    @classmethod
    def _boot_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _normalize_boot_table(value)

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        macs = [h.mac for h in self.host]
        dup = {m for m in macs if macs.count(m) > 1}
        if dup:
            raise ValueError(f"host: MAC {sorted(dup)[0]} is listed twice")
        return self

    # What every request reads, as plain attributes, built on first use. Settings are not changed once
    # built (a reload builds new ones, and model_copy drops it), so it never goes stale.
    @cached_property
    def lookup(self) -> Lookup:
        """The per-request view of these settings (one pydantic attribute read instead of one a
        field: a BaseModel attribute goes through its __getattr__ hook)."""
        # Per family (an IPv4 address as an int must never match an IPv6 prefix's mask); most specific
        # first, and sorted() is stable, so the first listed wins a tie.
        ranked = sorted(self.subnet, key=lambda entry: -entry.cidr.prefixlen)
        server = self.server
        subnets = {
            version: tuple(
                (int(e.cidr.network_address), int(e.cidr.netmask), e)
                for e in ranked
                if e.cidr.version == version
            )
            for version in (4, 6)
        }
        return Lookup(
            subnets=subnets,
            views={
                version: tuple(
                    (
                        network,
                        mask,
                        SubnetView(
                            cidr=e.cidr, cidr_text=e.cidr_text, boot=e.boot, next_server=e.next_server
                        ),
                    )
                    for network, mask, e in table
                )
                for version, table in subnets.items()
            },
            hosts={h.mac: h for h in self.host},
            boot=self.boot,
            server_ip=server.server_ip,
            server_ip_text=server.server_ip_text,
            uefi_mode=server.uefi_mode,
            reply_delay_ms=server.reply_delay_ms,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges file < environment < flags itself (so `--subnet` can add to the
        # file's list), and passes the result as init kwargs: that is the only source here.
        return (init_settings,)

    def subnet_table(self, version: int) -> tuple[tuple[int, int, SubnetSettings], ...]:
        """What `subnet_for` walks for addresses of IP `version`: (network, mask, entry) as ints, the
        most specific first (the reply memo keys 4011 requests on the same choice)."""
        return self.lookup.subnets[version]

    def subnet_for(self, address: IPv4Address | IPv6Address) -> SubnetSettings | None:
        """The enabled subnet containing `address` (the most specific one), or None."""
        return self.lookup.subnet_for(address)


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the policies read of `Settings` on every request, derived once per settings
    (`Settings.lookup`): plain attributes, where a pydantic model's cost a __getattr__ hook each."""

    subnets: dict[int, tuple[tuple[int, int, SubnetSettings], ...]]  # per IP version: (network, mask, entry)
    views: dict[int, tuple[tuple[int, int, SubnetView], ...]]  # the same, each entry as a SubnetView
    hosts: dict[str, HostSettings]  # by normalised MAC
    boot: dict[str, str]  # the global architecture table
    server_ip: IPv4Address | None
    server_ip_text: str
    uefi_mode: Mapping[str, str]
    reply_delay_ms: int  # read by the service for every answer

    def subnet_for(self, address: IPv4Address | IPv6Address) -> SubnetSettings | None:
        """`Settings.subnet_for`."""
        # The family by type: `address.version` is a Python-level property (a third of the lookup).
        return _most_specific(self.subnets[4 if isinstance(address, IPv4Address) else 6], address)

    def view_for(self, address: IPv4Address | IPv6Address) -> SubnetView | None:
        """`subnet_for`'s subnet as a SubnetView (the same walk, on the same table)."""
        return _most_specific(self.views[4 if isinstance(address, IPv4Address) else 6], address)


def _most_specific(table: tuple[tuple[int, int, _T], ...], address: IPv4Address | IPv6Address) -> _T | None:
    """The first (most specific) entry of a `Lookup` table whose network holds `address`."""
    value = int(address)
    for network, mask, entry in table:
        if value & mask == network:
            return entry
    return None


@dataclass(frozen=True, slots=True)
class SubnetView:
    """A `SubnetSettings` as the policies read it on every request: the same values as plain
    attributes (its cidr as text too), derived once per settings (`Lookup.view_for`)."""

    cidr: IPv4Network | IPv6Network
    cidr_text: str
    boot: dict[str, str]
    next_server: IPv4Address | IPv6Address | None


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _has_path(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> bool:
    node: Any = data
    for part in loc:
        in_map = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if not (in_map or in_list):
            return False
        node = node[part]
    return True


def _format_error(exc: ValidationError, sources: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """One line: where the bad value came from (flags, environment or file), the key, the reason."""
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    # The first source that set the key; whole-model errors (empty loc) are the file's.
    source = next((name for name, data in sources if loc and _has_path(data, loc[:2])), sources[-1][0])
    key = ".".join(str(part) for part in loc) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {key}: {message}{more}"


def load_settings(config_file: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the effective settings: `overrides` (flags) over `PROXYDHCP_*` environment over the TOML file.

    `overrides` uses the file's shape (`{"server": {"colocated": True}}`); a `subnet` list in it is
    merged by `cidr` into the file's list rather than replacing it, so `--subnet` adds subnets.
    Raises ConfigError with a one-line reason naming the key.
    """
    data: dict[str, Any] = read_toml(config_file) if config_file else {}
    source = str(config_file) if config_file else "configuration"
    flags = dict(overrides or {})
    extra_subnets = flags.pop("subnet", None)
    if extra_subnets:
        known: set[str] = set()
        for entry in data.get("subnet", []):
            with contextlib.suppress(KeyError, ValueError, TypeError, AttributeError):  # the model reports it
                known.add(str(parse_network(entry["cidr"])))
        merged = list(data.get("subnet", []))
        for entry in extra_subnets:
            try:
                cidr = str(parse_network(entry["cidr"]))
            except ValueError as exc:
                raise ConfigError(f"--subnet: {exc}") from None
            if cidr not in known:
                merged.append(entry)
                known.add(cidr)
        data["subnet"] = merged
    try:
        env = EnvSettingsSource(Settings)()
    except Exception as exc:  # pydantic-settings raises SettingsError on undecodable JSON values
        raise ConfigError(f"environment: {exc}") from None
    effective = _deep_merge(_deep_merge(data, env), flags)
    try:
        return Settings(**effective)
    except ValidationError as exc:
        sources = (("command line", flags), ("environment (PROXYDHCP_*)", env), (source, data))
        raise ConfigError(_format_error(exc, sources)) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def effective_toml(settings: Settings) -> str:
    """Render settings as TOML (for `check-config`); None values are left out."""
    data = settings.model_dump(mode="json", exclude_none=True)
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{ " + ", ".join(f"{_key(k)} = {scalar(v)}" for k, v in value.items()) + " }"
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def _key(key: str) -> str:
        return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else scalar(key)

    for section in ("server", "tftp", "http", "boot", "log", "metrics"):
        lines.append(f"[{section}]")
        for key, value in data[section].items():
            lines.append(f"{_key(key)} = {scalar(value)}")
        lines.append("")
    for table in ("subnet", "host"):
        for entry in data[table]:
            lines.append(f"[[{table}]]")
            for key, value in entry.items():
                lines.append(f"{_key(key)} = {scalar(value)}")
            lines.append("")
    return "\n".join(lines)
