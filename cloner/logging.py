"""Structured logging: one event per line, tenant and step bound per run, secrets redacted.

JSON when stderr is not a terminal, key=value console output when it is.
Redaction is value-based (every password cloner generated is registered)
plus patterns for DSNs and ``password=`` forms, and runs after exception
formatting so tracebacks are covered too.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "***"

_PATTERNS = (
    re.compile(r"(?i)(password|passwd|pwd|secret|token)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|\S+)"),
    re.compile(r"(?i)(password\s+)('[^']*')"),
    re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]+:)([^@\s]+)(@)"),
    re.compile(r"(SCRAM-SHA-256\$)(\S+)"),
)


class Redactor:
    """Replaces known secret values and secret-looking patterns in strings."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        """Register secret values; any later log line containing one is redacted."""
        with self._lock:
            self._values.update(v for v in values if v and len(v) >= 8)

    def redact(self, text: str) -> str:
        """``text`` with every known secret and secret pattern replaced."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        text = _PATTERNS[0].sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        text = _PATTERNS[1].sub(lambda m: m.group(1) + "'" + REDACTED + "'", text)
        text = _PATTERNS[2].sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
        return _PATTERNS[3].sub(lambda m: m.group(1) + REDACTED, text)

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            if isinstance(value, str):
                event_dict[key] = self.redact(value)
            elif isinstance(value, BaseException):
                event_dict[key] = self.redact(f"{type(value).__name__}: {value}")
        return event_dict


#: Process-wide, like logging itself: every generated secret is registered here.
REDACTOR = Redactor()


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog and route stdlib loggers (uvicorn, asyncio) through it."""
    stream = stream or sys.stderr
    json_output = fmt == "json" or (fmt == "auto" and not stream.isatty())
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks only at DEBUG; otherwise the exception collapses to one line.
    exc_processor: Any = (
        structlog.processors.format_exc_info
        if numeric_level <= logging.DEBUG
        else _one_line_exception
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, exc_processor, REDACTOR, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exc_processor,
                REDACTOR,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric_level, logging.INFO))


def _one_line_exception(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if exc is not None:
            event_dict.setdefault("error", f"{type(exc).__name__}: {exc}")
    return event_dict


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; bind ``tenant_id`` and ``step`` via contextvars."""
    return structlog.get_logger(name)
