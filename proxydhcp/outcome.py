"""What became of a request or a transfer, as enums: the record, the metric label and the log level
are derived from these members, never from the wording of a message.

Family-neutral: the DHCP/PXE pipeline uses them today; a DHCPv6 policy or an HTTP file server adds
members here (with their labels) and gets records, metrics and log levels without a second rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum, StrEnum
from ipaddress import IPv4Network, IPv6Network


class Outcome(StrEnum):
    """The kind of end a request came to."""

    ANSWER = "answer"
    IGNORE = "ignore"  # a decodable request that gets no reply on purpose
    MALFORMED = "malformed"  # bytes that are not a message of the protocol
    ERROR = "error"  # a bug or a send failure: logged with a traceback, no reply


class Stage(StrEnum):
    """The pipeline step that decided (ARCHITECTURE.md)."""

    DECODE = "decode"
    CLASSIFY = "classify"
    POLICY = "policy"
    SEND = "send"


class Reason(Enum):
    """Why a request got no reply: (metric label, outcome, log level, log text).

    The log text is the member's wording with the detail of the instance put in where it says `{}`
    (a MAC, an architecture, the codec's own message); the label never carries a detail, so metric
    series stay few whatever the peers send."""

    label: str
    outcome: Outcome
    level: int
    text: str

    def __init__(self, label: str, outcome: Outcome, level: int, text: str) -> None:
        self.label = label
        self.outcome = outcome
        self.level = level
        self.text = text

    # Decode: the codec's message is the whole text (it names the offending field).
    TOO_SHORT = ("too_short", Outcome.MALFORMED, logging.DEBUG, "{}")
    BAD_HEADER = ("bad_header", Outcome.MALFORMED, logging.DEBUG, "{}")
    BAD_MAGIC_COOKIE = ("bad_magic_cookie", Outcome.MALFORMED, logging.DEBUG, "{}")
    NO_MESSAGE_TYPE = ("no_message_type", Outcome.MALFORMED, logging.DEBUG, "{}")
    OPTION_OVERRUN = ("option_overrun", Outcome.MALFORMED, logging.DEBUG, "{}")
    BAD_OPTION_LENGTH = ("bad_option", Outcome.MALFORMED, logging.DEBUG, "{}")
    MALFORMED = ("other", Outcome.MALFORMED, logging.DEBUG, "{}")  # a codec message not sorted above
    # Classify: what is not PXE traffic (a busy LAN is full of it) is logged at debug.
    NOT_BOOTREQUEST = ("not_bootrequest", Outcome.IGNORE, logging.DEBUG, "not a BOOTREQUEST")
    NOT_DISCOVER = ("not_discover", Outcome.IGNORE, logging.DEBUG, "not a DISCOVER on port 67")
    UNSUPPORTED_MESSAGE_TYPE = (
        "unsupported_message_type",
        Outcome.IGNORE,
        logging.DEBUG,
        "unsupported message type on 4011",
    )
    NO_CLIENT_ADDRESS = (
        "no_client_address",
        Outcome.IGNORE,
        logging.DEBUG,
        "4011 request without a client address",
    )
    NOT_PXE = ("not_pxe", Outcome.IGNORE, logging.DEBUG, "not a PXE client")
    BAD_HARDWARE_ADDRESS = (
        "bad_hardware_address",
        Outcome.IGNORE,
        logging.DEBUG,
        "hardware address is not 6 bytes",
    )
    BAD_OPTION = ("bad_option", Outcome.IGNORE, logging.DEBUG, "bad option: {}")
    BIS_UNSUPPORTED = ("bis_unsupported", Outcome.IGNORE, logging.DEBUG, "PXE BIS not supported")
    # Policy: a subnet miss at debug (a proxy serving one subnet on a shared segment hears every other
    # subnet's relayed clients); a PXE client turned away at info, since an admin wonders why.
    SUBNET_NOT_ENABLED = ("subnet_not_enabled", Outcome.IGNORE, logging.DEBUG, "subnet {} not enabled")
    HOST_IGNORED = ("host_ignored", Outcome.IGNORE, logging.INFO, "host {} ignored")
    NO_BOOT_FILE = ("no_boot_file", Outcome.IGNORE, logging.INFO, "no boot file for {}")
    # HTTP boot: a name becomes a URL only on the built-in HTTP server.
    BOOT_FILE_NOT_URL = (
        "boot_file_not_url",
        Outcome.IGNORE,
        logging.INFO,
        "boot file for {} is not a URL and the HTTP server is off (--http-port)",
    )
    URL_TOO_LONG = (
        "boot_file_not_url",
        Outcome.IGNORE,
        logging.INFO,
        "boot file for {} is not a URL: the 128-byte file field is too short for its URL",
    )
    # DHCPv6 (RFC 8415, RFC 5970): its own decode, classify and policy exits, with labels shared with
    # IPv4 where the meaning is the same (a metric series counts both families). Levels as above:
    # what is not PXE traffic, or another server's, at debug; a PXE client turned away at info.
    # Decode (the codec's message is the text; too short, overruns and bad values as above).
    BAD_MESSAGE_TYPE = ("bad_message_type", Outcome.MALFORMED, logging.DEBUG, "{}")
    BAD_RELAY = ("bad_relay", Outcome.MALFORMED, logging.DEBUG, "{}")  # no option 9, nesting too deep
    # Classify.
    NOT_RELAY_FORWARD = (
        "not_relay_forward",
        Outcome.IGNORE,
        logging.DEBUG,
        "relay message is not a Relay-Forward",
    )
    NESTED_NOT_RELAY_FORWARD = (
        "not_relay_forward",
        Outcome.IGNORE,
        logging.DEBUG,
        "nested relay message is not a Relay-Forward",
    )
    RELAY_ON_PXE_PORT = ("relay_on_4011", Outcome.IGNORE, logging.DEBUG, "Relay-Forward on 4011")
    NO_LINK_ADDRESS = ("no_link_address", Outcome.IGNORE, logging.DEBUG, "relayed without a link-address")
    NOT_SOLICIT_OR_REQUEST = (
        "unsupported_message_type",
        Outcome.IGNORE,
        logging.DEBUG,
        "not a Solicit, Request or Information-Request on 547 ({})",
    )
    NOT_REQUEST_ON_PXE_PORT = (
        "unsupported_message_type",
        Outcome.IGNORE,
        logging.DEBUG,
        "not a Request on 4011 ({})",
    )
    SOLICIT_WITH_SERVER_ID = ("bad_server_id", Outcome.IGNORE, logging.DEBUG, "Solicit with a Server ID")
    REQUEST_WITHOUT_SERVER_ID = (
        "bad_server_id",
        Outcome.IGNORE,
        logging.DEBUG,
        "Request without a Server ID",
    )
    OTHER_SERVER = ("other_server", Outcome.IGNORE, logging.DEBUG, "addressed to another server")
    NO_CLIENT_ID = ("no_client_id", Outcome.IGNORE, logging.DEBUG, "no Client ID")
    PREFIX_NOT_ENABLED = ("subnet_not_enabled", Outcome.IGNORE, logging.DEBUG, "prefix {} not enabled")
    NO_SERVER_ADDRESS = (
        "no_server_address",
        Outcome.IGNORE,
        logging.INFO,
        "no address of this host in {} for the boot file URL",
    )
    BOOT_FILE_NOT_HTTP_URL = (
        "boot_file_not_url",
        Outcome.IGNORE,
        logging.INFO,
        "boot file for {} is not an http URL",
    )
    # A bug, or a reply the kernel refused: logged with its traceback.
    INTERNAL_ERROR = ("internal_error", Outcome.ERROR, logging.ERROR, "internal error: {}")

    def describe(self, detail: str = "") -> str:
        """The log text of one instance of this reason."""
        return self.text.replace("{}", detail) if "{}" in self.text else self.text


@dataclass(frozen=True, slots=True)
class Ignore:
    """No reply, and why: the reason's kind, the detail its log text names (a MAC, an architecture),
    and the enabled subnet the client belongs to when the policy knew it (for the record)."""

    reason: Reason
    detail: str = ""
    subnet: IPv4Network | IPv6Network | None = None

    def __str__(self) -> str:
        return self.reason.describe(self.detail)


class TransferOutcome(Enum):
    """How a file transfer (TFTP today, HTTP next) ended: (metric label, log level, log text); the
    text takes the instance's detail where it says `{}`."""

    label: str
    level: int
    text: str

    def __init__(self, label: str, level: int, text: str) -> None:
        self.label = label
        self.level = level
        self.text = text

    COMPLETED = ("completed", logging.INFO, "completed")
    # ERROR right after the OACK: a client asking for the size (UEFI Mtftp4GetInfo, R-62), not a failure.
    PROBE = ("probe", logging.DEBUG, "probe")
    TIMEOUT = ("timeout", logging.WARNING, "timed out")
    CLIENT_ERROR = ("client_error", logging.WARNING, "aborted by client")  # ERROR mid-transfer
    FILE_ERROR = ("file_error", logging.WARNING, "error: {}")  # the file changed or could not be read
    SUPERSEDED = ("superseded", logging.WARNING, "error: {}")  # the client asked again from scratch
    ABORTED = ("aborted", logging.WARNING, "error: {}")  # the server shut down with it in flight

    def describe(self, detail: str = "") -> str:
        return self.text.replace("{}", detail) if "{}" in self.text else self.text

    @property
    def failed(self) -> bool:
        return self is not TransferOutcome.COMPLETED and self is not TransferOutcome.PROBE
