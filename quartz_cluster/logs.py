"""Structured (JSON lines) logging. Context such as node, shard and epoch travels as
`extra={...}` and becomes top-level fields."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import orjson

# set by observability/tracing.py when tracing is on: the current trace id, or None
trace_id: Callable[[], str | None] | None = None
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, object] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if trace_id is not None and (tid := trace_id()) is not None:
            entry["trace_id"] = tid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # OPT_NON_STR_KEYS: a dict keyed by shard numbers in `extra` once made every such record
        # "Logging error: TypeError: Dict key must be str" (and the record was lost)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure(level: str = "info", **static: object) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class ContextAdapter(logging.LoggerAdapter):
    """Adds fixed context (shard, epoch, ...) while keeping each call's own `extra`
    (the stdlib adapter replaces it before Python 3.13)."""

    def process(self, msg, kwargs):
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs
