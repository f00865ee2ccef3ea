"""One HTTP request's record: its outcome, its numbers (`RequestStats`, which the log line and the
metrics read) and the text of its log line.

The text is rendered once per request, when the log handler writes (log.emit_fast), and costs more
than answering a small file from memory did; so it is built in one step: what a connection repeats
(client, method, file, status, bytes) is rendered once and kept, and the two rounded numbers are
formatted once (format()) instead of twice (round(), then repr()). `fields()` is the reference:
`text_fields() == log.text_pairs(fields())` for every value (tests/unit/test_http_record.py).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Any

from proxydhcp.log import text_value


class Outcome(enum.Enum):
    COMPLETED = "completed"  # the whole answer was handed to the kernel (2xx, 304, HEAD)
    REFUSED = "refused"  # an error status was sent instead of a file (4xx)
    ABORTED = "aborted"  # the client went away mid-answer
    TIMEOUT = "timeout"  # the send watchdog reset a client that stopped reading
    ERROR = "error"  # a failure on our side (500)


@functools.lru_cache(maxsize=4096)  # per request, for the same few clients
def hostport(addr: tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# (client, method, file, status, bytes) → (the log message, the text fields up to `duration=`).
# Keys come from clients (file names): bounded, cleared when full.
_Key = tuple[tuple[str, int], str, str, int, int]
_TEXTS: dict[_Key, tuple[str, str]] = {}
TEXTS_KEPT = 1024


@dataclass(slots=True)  # not frozen: one per request, and a frozen init costs a setattr call per field
class RequestStats:
    client: tuple[str, int]
    method: str
    filename: str
    status: int
    bytes: int
    duration: float
    outcome: Outcome
    reason: str = ""
    # `_texts()` once looked up: the message is asked for when the request is recorded, the fields
    # when its line is written.
    texts: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.duration / 1e6 if self.duration > 0 else 0.0

    def message(self) -> str:
        """The log line's message: `GET /a.efi from 10.0.0.9:5000: 200`."""
        return self._texts()[0]

    def text_fields(self) -> str:
        """`log.text_pairs(self.fields())`, in one step (log.StructuredFields)."""
        duration = self.duration
        mbps = self.bytes / duration / 1e6 if duration > 0 else 0.0
        reason = f" reason={text_value(self.reason)}" if self.reason else ""
        return (
            f"{self._texts()[1]}{round4_text(duration)} mbps={round2_text(mbps)} "
            f"outcome={self.outcome._value_}{reason}"
        )

    def fields(self) -> dict[str, Any]:
        """The log record's fields, in the style of a TFTP transfer's."""
        out: dict[str, Any] = {
            "client": hostport(self.client),
            "method": self.method,
            "file": self.filename,
            "status": self.status,
            "bytes": self.bytes,
            "duration": round(self.duration, 4),
            "mbps": round(self.mb_per_s, 2),
            "outcome": self.outcome.value,
        }
        if self.reason:
            out["reason"] = self.reason
        return out

    def _texts(self) -> tuple[str, str]:
        texts = self.texts
        if texts is not None:
            return texts
        key = (self.client, self.method, self.filename, self.status, self.bytes)
        texts = _TEXTS.get(key)
        if texts is None:
            if len(_TEXTS) >= TEXTS_KEPT:
                _TEXTS.clear()
            client = hostport(self.client)
            texts = _TEXTS[key] = (
                f"{self.method} {self.filename} from {client}: {self.status}",
                f"client={client} method={text_value(self.method)} file={text_value(self.filename)} "
                f"status={self.status} bytes={self.bytes} duration=",
            )
        self.texts = texts
        return texts


def round4_text(value: float) -> str:
    """`str(round(value, 4))`, at a third of the cost for a small file's duration (see `_trimmed`)."""
    if 0.0 < value < 1e10:
        if value < 0.0000499:  # below 0.00005, which rounds to 0 (a small file's answer, most often)
            return "0.0"
        text = "%.4f" % value  # noqa: UP031 (format(value, ".4f") at 3/5 of the cost: no spec to parse)
        return text if text[-1] != "0" else _trimmed(text)
    return str(round(value, 4))


def round2_text(value: float) -> str:
    """`str(round(value, 2))`, at half the cost (see `_trimmed`)."""
    if 0.0 < value < 1e12:
        text = "%.2f" % value  # noqa: UP031 (format(value, ".2f"), as above)
        return text if text[-1] != "0" else _trimmed(text)
    return str(round(value, 2))


def _trimmed(text: str) -> str:
    """Why `format(value, ".Nf")` with its trailing zeros cut to one is `str(round(value, N))`:
    round() and format() give the same digits (the exact binary value rounded half-even to N places,
    both by dtoa's mode 3); round() returns the double nearest that decimal, and repr() shows the
    shortest decimal that reads back as it, which is that decimal, trailing zeros cut, as long as it
    has at most 15 significant digits (two such decimals are never the same double): the bounds
    above ensure it. Zeros, negative values, NaN and big values go to round() itself."""
    text = text.rstrip("0")
    return text + "0" if text[-1] == "." else text
