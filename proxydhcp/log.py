"""Logging setup: human text by default, one JSON object per line with `--log-format json`.

Modules log through `logging.getLogger("proxydhcp.<subsystem>")` with lazy `%s` arguments and put
structured fields in `extra={"fields": {...}}`; the JSON formatter emits them as top-level keys, the
text formatter appends them as `key=value` pairs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, "fields", None)
    return value if isinstance(value, dict) else {}


def _text_value(value: Any) -> str:
    text = str(value)
    return text if text and " " not in text and '"' not in text else json.dumps(text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extra = fields_of(record)
        if extra:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extra.items() if v is not None)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, separators=(",", ":"))


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Install one handler on the `proxydhcp` logger (idempotent: replaces a previous one)."""
    logger = logging.getLogger("proxydhcp")
    for handler in list(logger.handlers):
        if getattr(handler, "_proxydhcp", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._proxydhcp = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(LEVELS.get(level, logging.INFO))
    logger.propagate = False
