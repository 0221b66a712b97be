"""Structured logs: one JSON object per line on stderr. Callers pass identifiers and counts, never credentials."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = error_text(record.exc_info[1])
        return json.dumps(doc, default=str)


#: The longest error text a log line carries: a line stays readable, and a library's verbose message stays out.
MAX_ERROR_CHARS = 300


def error_text(exc: BaseException) -> str:
    """``Class: message``, its first line only and at most ``MAX_ERROR_CHARS`` characters."""
    message = str(exc).strip().split("\n", 1)[0]
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def fields(**values: Any) -> dict[str, Any]:
    """``logger.info("msg", extra=fields(page=1000))``."""
    return {"fields": values}
