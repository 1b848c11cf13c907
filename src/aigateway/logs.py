"""Log lines of the gateway, as text or JSON (``LOG_FORMAT``), on stderr.

Given the node's secrets, the handler scrubs them from every line (``aigateway.scrub``).

Records may carry ``fields`` (``logger.info("request", extra={"fields": {...}})``): text
lines show them as ``key=value`` pairs, JSON lines as keys of the object.  A line written
while a request is handled names its request id.  Nothing here adds headers or bodies:
what a line holds is what its caller put in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from aigateway.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
_QUOTE_IF = frozenset(' ="\t\n')

#: The id of the request being handled, set by the request middleware so that every line
#: logged meanwhile names it (only that: what the request did travels explicitly, see
#: ``core.observer``).  Tasks started for the request (a shared provider call) inherit it.
REQUEST_ID: ContextVar[str | None] = ContextVar("aigateway_request_id", default=None)


def logging_config(level: str, fmt: str = "text", secrets: Sequence[str] = ()) -> dict[str, Any]:
    """One format for the gateway's and Granian's log lines, all on stderr, ``secrets``
    masked (a dictionary, since Granian configures each worker's logging from it)."""
    formatter: dict[str, Any] = (
        {"()": "aigateway.logs.JsonFormatter"}
        if fmt == "json"
        else {"()": "aigateway.logs.TextFormatter", "fmt": TEXT_FORMAT}
    )
    handler: dict[str, Any] = {
        "class": "logging.StreamHandler",
        "formatter": "main",
        "stream": "ext://sys.stderr",
    }
    filters: dict[str, Any] = {}
    if secrets:
        filters["secrets"] = {"()": "aigateway.scrub.SecretFilter", "secrets": list(secrets)}
        handler["filters"] = ["secrets"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "filters": filters,
        "handlers": {"console": handler},
        "loggers": {
            "aigateway": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "_granian": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        },
    }


def apply_log_level(old: Settings, new: Settings) -> None:
    """Live settings: LOG_LEVEL, in this worker."""
    logging.getLogger("aigateway").setLevel(new.log_level.upper())


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
    if "request_id" not in fields:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            fields["request_id"] = request_id
    return fields


def _text(value: Any) -> str:
    text = str(value)
    if not text or any(c in _QUOTE_IF for c in text):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, then the record's fields as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        pairs = " ".join(f"{key}={_text(value)}" for key, value in fields.items())
        head, newline, rest = text.partition("\n")  # a traceback stays below the line
        return f"{head} {pairs}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, pid, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        document.update(_fields(record))
        if record.exc_info:  # the text a handler's filter may have scrubbed, if any
            document["exception"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()
