"""DHCPv4 numbers, in one place: BOOTP op codes and flags (RFC 951, RFC 2131 §2), message types
(option 53, RFC 2132 §9.6) and the option codes this project reads or writes (RFC 2132, 3004, 3046,
4578; iPXE 175), and the PXE sub-options of option 43 (PXE 2.1 §2.4)."""

from __future__ import annotations

from enum import IntEnum

BOOTREQUEST = 1
BOOTREPLY = 2
BROADCAST_FLAG = 0x8000


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 §9.6)."""

    __hash__ = int.__hash__  # as the int it is (Enum hashes the name): option tables are keyed by int

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    """The option codes this project reads or writes (RFC 2132, 3004, 3046, 4578; iPXE 175)."""

    __hash__ = int.__hash__  # as the int it is (Enum hashes the name): option tables are keyed by int

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAM_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER = 66
    BOOTFILE = 67
    USER_CLASS = 77
    RELAY_AGENT = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_UUID = 97
    IPXE_ENCAP = 175
    END = 255


class PxeSubOpt(IntEnum):
    """Option 43 PXE sub-options (PXE 2.1 §2.4)."""

    __hash__ = int.__hash__  # as the int it is (Enum hashes the name): option tables are keyed by int

    PAD = 0
    DISCOVERY_CONTROL = 6
    BOOT_SERVERS = 8
    BOOT_MENU = 9
    MENU_PROMPT = 10
    BOOT_ITEM = 71
    END = 255
