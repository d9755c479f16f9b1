"""Logging of AgentFlow's processes: JSON lines where a machine reads them, text on a terminal.

Both processes log through ``setup``. Each JSON line has ``time``, ``level``, ``component``, ``logger``,
``message`` and the ``tenant``, ``run_id``, ``task_id`` and ``trace_id`` of the work it is about: taken from
the record's ``extra`` where given, else from ``scope`` (a context variable, so each asyncio task working on
one task sees its own), else from the current span.
"""

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, NamedTuple

from bus import tracing
from bus.config import SettingsError
from bus.messages import json_text

LOG_FORMATS = ("auto", "json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")


class Scope(NamedTuple):
    """The work a log line is about."""

    tenant: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    traceparent: str | None = None


scope: ContextVar[Scope | None] = ContextVar("agentflow_log_scope", default=None)
_KEYS = ("tenant", "run_id", "task_id")


def check_log_format(value: str) -> None:
    if value not in LOG_FORMATS:
        raise SettingsError(f"AF_LOG_FORMAT: expected one of {', '.join(LOG_FORMATS)}, got {value!r}")


def check_log_level(value: str) -> None:
    if value.lower() not in LOG_LEVELS:
        raise SettingsError(f"AF_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {value!r}")


def set_level(level: str) -> None:
    """Let records of ``level`` and above through (at the start, and when the settings are reloaded)."""
    logging.getLogger().setLevel(level.upper())


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str, fields: dict[str, str]) -> None:
        super().__init__()
        self._component = component
        self._fields = fields

    def format(self, record: logging.LogRecord) -> str:
        current = scope.get() or Scope()
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self._component,
            **self._fields,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _KEYS:
            line[key] = getattr(record, key, None) or getattr(current, key)
        line["trace_id"] = getattr(record, "trace_id", None) or _trace_id(current)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json_text(line)


def _trace_id(current: Scope) -> str | None:
    if tracing.enabled and (trace_id := tracing.current_trace_id()):
        return trace_id
    # traceparent: 00-<trace id>-<span id>-<flags>
    return current.traceparent[3:35] if current.traceparent else None


def setup(component: str, level: str, log_format: str, **fields: str) -> None:
    """Send every log record of the process to stderr, as JSON lines (``json``, or ``auto`` off a
    terminal) or as text; ``fields`` are added to every JSON line (a worker's id, say)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json" or (log_format == "auto" and not sys.stderr.isatty()):
        handler.setFormatter(JsonFormatter(component, fields))
    else:
        named = " ".join([component, *fields.values()])
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {named} %(name)s: %(message)s"))
    logging.getLogger().handlers = [handler]
    set_level(level)
