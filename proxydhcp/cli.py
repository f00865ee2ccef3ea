"""Command line (typer). Builds Settings from flags + file, sets up logging, hands over to a module.

No protocol code lives here: each command calls one function of the module that owns the work.
Exit codes: 0 ok, 1 the command ran and found a failure (e.g. `probe`: would not boot), 2 usage or
configuration error with a one-line reason.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any

import typer

from proxydhcp import __version__
from proxydhcp.config import Settings, effective_toml, load_settings
from proxydhcp.errors import ConfigError
from proxydhcp.log import setup_logging

app = typer.Typer(
    name="proxydhcp",
    help="PXE network boot beside a DHCP server you may not touch: proxyDHCP (67/4011) + TFTP.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"proxydhcp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """proxydhcp: answers PXE clients with boot server and file, never with an address."""


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"proxydhcp: {message}", err=True)
    return typer.Exit(code)


# Flags shared by `serve`, `check-config` and `explain` (DESIGN.md §3). Each maps to one config key.
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.")]
InterfaceOpt = Annotated[
    list[str] | None,
    typer.Option("--interface", "-i", help="Interface to serve (repeat). [server.interfaces]"),
]
SubnetOpt = Annotated[
    list[str] | None,
    typer.Option("--subnet", "-s", help="Enable a subnet, e.g. 10.0.0.0/24 (repeat). [[subnet]]"),
]
BootFileOpt = Annotated[
    list[str] | None,
    typer.Option("--boot-file", help="ARCH=FILE, e.g. bios=undionly.kpxe, efi-x64=ipxe.efi (repeat). [boot]"),
]
IpxeOpt = Annotated[
    str | None,
    typer.Option("--ipxe-boot-file", help="File or URL for clients already running iPXE. [boot.ipxe]"),
]
ServerIpOpt = Annotated[
    str | None, typer.Option("--server-ip", help="Address for option 54/siaddr. [server.server_ip]")
]
TftpRootOpt = Annotated[
    Path | None, typer.Option("--tftp-root", help="Serve this directory over TFTP. [tftp.root]")
]
HttpPortOpt = Annotated[
    int | None, typer.Option("--http-port", help="Serve files over HTTP on this port. [http.port]")
]
HttpRootOpt = Annotated[
    Path | None,
    typer.Option("--http-root", help="Directory served over HTTP (default: the TFTP root). [http.root]"),
]
NoTftpOpt = Annotated[bool, typer.Option("--no-tftp", help="Do not start the TFTP server. [tftp.enabled]")]
TftpPortOpt = Annotated[int | None, typer.Option("--tftp-port", help="TFTP port. [tftp.port]")]
ColocatedOpt = Annotated[
    bool,
    typer.Option("--colocated", help="Bind port 4011 only (DHCP server on this host). [server.colocated]"),
]
DelayOpt = Annotated[
    int | None, typer.Option("--reply-delay-ms", help="Delay proxy offers. [server.reply_delay_ms]")
]
LogFormatOpt = Annotated[str | None, typer.Option("--log-format", help="text or json. [log.format]")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level. [log.level]")]
MetricsOpt = Annotated[
    str | None, typer.Option("--metrics", help="Serve Prometheus metrics on ADDR:PORT. [metrics.listen]")
]
UserOpt = Annotated[str | None, typer.Option("--user", help="Drop privileges to this user. [server.user]")]
UefiModeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--uefi-mode",
        help="ARCH=binl|direct (or default=...): how UEFI gets its file (repeat). [server.uefi_mode]",
    ),
]


def build_overrides(
    interface: list[str] | None = None,
    subnet: list[str] | None = None,
    boot_file: list[str] | None = None,
    ipxe_boot_file: str | None = None,
    server_ip: str | None = None,
    tftp_root: Path | None = None,
    no_tftp: bool = False,
    tftp_port: int | None = None,
    colocated: bool = False,
    reply_delay_ms: int | None = None,
    log_format: str | None = None,
    verbose: bool = False,
    metrics: str | None = None,
    user: str | None = None,
    uefi_mode: list[str] | None = None,
    http_port: int | None = None,
    http_root: Path | None = None,
) -> dict[str, Any]:
    """Flags → the config file's shape. Unset flags are left out so the file's values stand."""
    server: dict[str, Any] = {}
    tftp: dict[str, Any] = {}
    http: dict[str, Any] = {}
    boot: dict[str, str] = {}
    log: dict[str, Any] = {}
    if interface:
        server["interfaces"] = list(interface)
    if server_ip:
        server["server_ip"] = server_ip
    if colocated:
        server["colocated"] = True
    if reply_delay_ms is not None:
        server["reply_delay_ms"] = reply_delay_ms
    if user:
        server["user"] = user
    for item in uefi_mode or []:
        arch, sep, mode = item.partition("=")
        if not sep or not arch or not mode:
            raise ConfigError(f"--uefi-mode: expected ARCH=binl|direct, got {item!r}")
        server.setdefault("uefi_mode", {})[arch] = mode
    if tftp_root is not None:
        tftp["root"] = str(tftp_root)
    if no_tftp:
        tftp["enabled"] = False
    if tftp_port is not None:
        tftp["port"] = tftp_port
    if http_port is not None:
        http["port"] = http_port
    if http_root is not None:
        http["root"] = str(http_root)
    for item in boot_file or []:
        arch, sep, name = item.partition("=")
        if not sep or not arch or not name:
            raise ConfigError(f"--boot-file: expected ARCH=FILE, got {item!r}")
        boot[arch] = name
    if ipxe_boot_file:
        boot["ipxe"] = ipxe_boot_file
    if log_format:
        log["format"] = log_format
    if verbose:
        log["level"] = "debug"
    out: dict[str, Any] = {}
    for key, value in (("server", server), ("tftp", tftp), ("http", http), ("boot", boot), ("log", log)):
        if value:
            out[key] = value
    if subnet:
        out["subnet"] = [{"cidr": cidr} for cidr in subnet]
    if metrics:
        out["metrics"] = {"listen": metrics}
    return out


def settings_from_flags(config: Path | None, **flags: Any) -> Settings:
    try:
        return load_settings(config, build_overrides(**flags))
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _service_flags(
    config: ConfigOpt = None,
    interface: InterfaceOpt = None,
    subnet: SubnetOpt = None,
    boot_file: BootFileOpt = None,
    ipxe_boot_file: IpxeOpt = None,
    server_ip: ServerIpOpt = None,
    tftp_root: TftpRootOpt = None,
    no_tftp: NoTftpOpt = False,
    tftp_port: TftpPortOpt = None,
    http_port: HttpPortOpt = None,
    http_root: HttpRootOpt = None,
    colocated: ColocatedOpt = False,
    reply_delay_ms: DelayOpt = None,
    log_format: LogFormatOpt = None,
    verbose: VerboseOpt = False,
    metrics: MetricsOpt = None,
    user: UserOpt = None,
    uefi_mode: UefiModeOpt = None,
) -> None:
    """The flags of `serve` and `check-config`, declared once (typer reads this signature)."""


def _service_command(run: Callable[[Path | None, dict[str, Any]], None]) -> Callable[..., None]:
    """A command taking the service's flags: `run(config file, overrides)` gets them as the config
    file's shape (`build_overrides`), or the command exits 2 with the offending key."""

    def command(**flags: Any) -> None:
        config = flags.pop("config")
        try:
            overrides = build_overrides(**flags)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        run(config, overrides)

    command.__signature__ = inspect.signature(_service_flags, eval_str=True)  # type: ignore[attr-defined]
    command.__annotations__ = dict(_service_flags.__annotations__)
    command.__name__, command.__doc__ = run.__name__, run.__doc__
    return command


def serve(config: Path | None, overrides: dict[str, Any]) -> None:
    """Run the proxyDHCP service (ports 67 and 4011) and, with --tftp-root, the TFTP server."""
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    setup_logging(settings.log.format, settings.log.level)
    from proxydhcp.serve.service import run_service

    # The file and flags go along so that SIGHUP can rebuild the settings the same way.
    raise typer.Exit(run_service(settings, config_file=config, overrides=overrides))


def _chain_warnings(settings: Settings, prefix: str, only: str | None = None) -> None:
    """What a shim/GRUB chain needs beyond the boot file (proxydhcp.chains), on stderr."""
    from proxydhcp.chains import settings_warnings

    for warning in settings_warnings(settings):
        if only is None or warning.boot_file == only:
            typer.echo(f"{prefix}{warning.where}: {warning.message}", err=True)


def check_config(config: Path | None, overrides: dict[str, Any]) -> None:
    """Validate the configuration and print the effective settings as TOML."""
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    typer.echo(effective_toml(settings), nl=False)
    if not settings.subnet:
        typer.echo(
            "# warning: no subnet is enabled, so no client will be answered;"
            " add --subnet CIDR or a [[subnet]] table",
            err=True,
        )
    _chain_warnings(settings, prefix="# warning: ")


app.command("serve")(_service_command(serve))
app.command("check-config")(_service_command(check_config))


@app.command()
def tftp(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file (its tftp and log sections)."),
    ] = None,
    root: Annotated[
        Path | None, typer.Option("--root", help="Directory to serve (read-only). [tftp.root]")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Address to listen on. [tftp.address]")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="UDP port. [tftp.port]")] = None,
    max_blksize: Annotated[
        int | None, typer.Option("--max-blksize", help="Largest blksize granted. [tftp.max_blksize]")
    ] = None,
    max_windowsize: Annotated[
        int | None, typer.Option("--max-windowsize", help="Largest windowsize granted. [tftp.max_windowsize]")
    ] = None,
    max_transfers: Annotated[
        int | None, typer.Option("--max-transfers", help="Transfers at once, in all. [tftp.max_transfers]")
    ] = None,
    max_transfers_per_client: Annotated[
        int | None,
        typer.Option(
            "--max-transfers-per-client",
            help="Transfers at once from one client address. [tftp.max_transfers_per_client]",
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="First retransmission timeout, seconds. [tftp.timeout]")
    ] = None,
    give_up: Annotated[
        float | None,
        typer.Option("--give-up", help="Seconds without progress before giving up. [tftp.give_up]"),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Server processes sharing the port (SO_REUSEPORT), 1-64.")
    ] = 1,
    log_format: LogFormatOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the TFTP server alone: flags over PROXYDHCP_TFTP__* over the file's tftp section, as for serve."""
    if address is not None:
        try:
            IPv4Address(address)
        except ValueError:
            raise fail(f"--address: not an IPv4 address: {address!r}") from None
    flags = {
        "root": None if root is None else str(root),
        "address": address,
        "port": port,
        "max_blksize": max_blksize,
        "max_windowsize": max_windowsize,
        "max_transfers": max_transfers,
        "max_transfers_per_client": max_transfers_per_client,
        "timeout": timeout,
        "give_up": give_up,
    }
    overrides: dict[str, Any] = {"tftp": {k: v for k, v in flags.items() if v is not None}}
    log = build_overrides(log_format=log_format, verbose=verbose).get("log")
    if log:
        overrides["log"] = log
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    tftp_root = settings.tftp.root
    if tftp_root is None:
        raise fail("tftp.root: no directory to serve: give --root DIR or [tftp] root in the file")
    if not tftp_root.is_dir():
        raise fail(f"tftp.root (--root): not a directory: {tftp_root}")
    setup_logging(settings.log.format, settings.log.level)
    from proxydhcp.log import emit_fast
    from proxydhcp.tftp.config import TftpConfig
    from proxydhcp.tftp.standalone import run_standalone

    config_ = TftpConfig.from_settings(settings.tftp, tftp_root, workers=workers)
    raise typer.Exit(run_standalone(config_, emit=emit_fast))


@app.command("http")
def http_cmd(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file (its http and log sections)."),
    ] = None,
    root: Annotated[
        Path | None, typer.Option("--root", help="Directory to serve (read-only). [http.root]")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Address to listen on, IPv4 or IPv6. [http.address]")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="TCP port (default 80; 0: any free one). [http.port]")
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections", help="Open connections at most; more are reset. [http.max_connections]"
        ),
    ] = None,
    head_timeout: Annotated[
        float | None,
        typer.Option(
            "--head-timeout", help="Seconds a connection gets to send a request head. [http.head_timeout]"
        ),
    ] = None,
    send_timeout: Annotated[
        float | None,
        typer.Option(
            "--send-timeout", help="Seconds a response may stall before a reset. [http.send_timeout]"
        ),
    ] = None,
    log_format: LogFormatOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the HTTP file server alone (UEFI HTTP boot, iPXE): flags over PROXYDHCP_HTTP__* over the
    file's http section, as for serve."""
    flags = {
        "root": None if root is None else str(root),
        "address": address,
        "port": port or None,  # 0 is no port for [http] in serve (its URLs name one): set below
        "max_connections": max_connections,
        "head_timeout": head_timeout,
        "send_timeout": send_timeout,
    }
    overrides: dict[str, Any] = {"http": {k: v for k, v in flags.items() if v is not None}}
    log = build_overrides(log_format=log_format, verbose=verbose).get("log")
    if log:
        overrides["log"] = log
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    http_root = settings.http.root
    if http_root is None:
        raise fail("http.root: no directory to serve: give --root DIR or [http] root in the file")
    if not http_root.is_dir():
        raise fail(f"http.root (--root): not a directory: {http_root}")
    if port == 0:  # any free port, named by the "HTTP serving" line (tests, benches)
        settings = settings.model_copy(update={"http": settings.http.model_copy(update={"port": 0})})
    elif settings.http.port is None:  # alone, the server has a port whatever the file says
        settings = settings.model_copy(update={"http": settings.http.model_copy(update={"port": 80})})
    setup_logging(settings.log.format, settings.log.level)
    from proxydhcp.http.server import run_standalone
    from proxydhcp.httpboot import http_config

    raise typer.Exit(run_standalone(http_config(settings, http_root)))


@app.command("diagnose")
def diagnose_cmd(
    capture: Annotated[Path, typer.Argument(help="pcap or pcapng capture file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the diagnosis as JSON.")] = False,
) -> None:
    """Read a packet capture and say, per client, whether and why its PXE boot failed."""
    import json

    from proxydhcp.diagnose import CaptureError, diagnose, stderr_progress

    progress = stderr_progress()
    try:
        report = diagnose(capture, progress)
    except CaptureError as exc:
        raise fail(str(exc)) from None
    if progress is not None:
        progress(1, 1)
    if json_out:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        typer.echo(report.render_text(), nl=False)


@app.command("explain")
def explain_cmd(
    mac: Annotated[str, typer.Option("--mac", help="Client MAC address.")],
    arch: Annotated[str, typer.Option("--arch", help="Client architecture: name or option-93 code.")] = (
        "bios"
    ),
    user_class: Annotated[
        str | None, typer.Option("--user-class", help='User class the client sends, e.g. "iPXE".')
    ] = None,
    giaddr: Annotated[str | None, typer.Option("--giaddr", help="Relay address: a relayed client.")] = None,
    client_ip: Annotated[
        str | None, typer.Option("--client-ip", help="Address the client has when it asks on 4011.")
    ] = None,
    local_ip: Annotated[
        str | None,
        typer.Option("--local-ip", help="Receiving interface address (default: server_ip, else assumed)."),
    ] = None,
    config: ConfigOpt = None,
    subnet: SubnetOpt = None,
    boot_file: BootFileOpt = None,
    ipxe_boot_file: IpxeOpt = None,
    server_ip: ServerIpOpt = None,
    colocated: ColocatedOpt = False,
    http_port: HttpPortOpt = None,
) -> None:
    """Say what the service would answer a client, and why: subnet, rule, boot file, exact reply.

    Exits 0 whether the client would be answered or ignored (the reason is printed); 2 on bad input.
    """
    from proxydhcp.config import normalize_mac
    from proxydhcp.dhcp.arch import parse_arch
    from proxydhcp.pxe.explain import assumed_receiver, explain

    settings = settings_from_flags(
        config,
        subnet=subnet,
        boot_file=boot_file,
        ipxe_boot_file=ipxe_boot_file,
        server_ip=server_ip,
        colocated=colocated,
        http_port=http_port,
    )
    try:
        mac = normalize_mac(mac)
        code = parse_arch(arch)
        addresses: dict[str, IPv4Address] = {}
        for flag, value in (("--giaddr", giaddr), ("--client-ip", client_ip), ("--local-ip", local_ip)):
            if value is not None:
                try:
                    addresses[flag] = IPv4Address(value)
                except ValueError:
                    raise ValueError(f"{flag}: not an IPv4 address: {value!r}") from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    relay, client = addresses.get("--giaddr"), addresses.get("--client-ip")
    local, network = assumed_receiver(settings, giaddr=relay, client_ip=client)
    note = ""
    if "--local-ip" in addresses:
        local = addresses["--local-ip"]
        found = settings.subnet_for(local)
        network = found.cidr if found else None
    else:
        note = f"note: receiving interface assumed to be {local} (use --local-ip to set it)\n"
    result = explain(
        settings,
        mac=mac,
        arch=code,
        user_class=user_class,
        giaddr=relay,
        client_ip=client,
        local_ip=local,
        local_network=network,
    )
    typer.echo(note + result.text(), nl=False)
    if result.decision is not None:
        _chain_warnings(settings, prefix="warning: ", only=result.decision.boot_file)


@app.command("probe")
def probe_cmd(
    interface: Annotated[str, typer.Option("--interface", "-i", help="Interface to probe on.")],
    arch: Annotated[str, typer.Option("--arch", help="Client arch: name or option-93 code.")] = "bios",
    mac: Annotated[str | None, typer.Option("--mac", help="Client MAC (default: the interface's).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to collect offers.")] = 5.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Act as a PXE client on a segment (no lease taken); exit 0 only if such a client would boot."""
    import json

    from proxydhcp.dhcp.arch import parse_arch
    from proxydhcp.probe import ProbeError, probe

    try:
        code = parse_arch(arch)
    except ValueError as exc:
        raise fail(f"--arch: {exc}") from None
    try:
        result = probe(interface, code, mac, timeout)
    except ProbeError as exc:
        raise fail(str(exc)) from None
    if json_out:
        typer.echo(
            json.dumps(
                {**result.report.to_json(), "ready": result.ready, "summary": result.summary}, indent=2
            )
        )
    else:
        typer.echo(result.report.render_text(), nl=False)
        typer.echo(result.summary)
    raise typer.Exit(0 if result.ready else 1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="proxydhcp")
