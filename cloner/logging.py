"""Structured logging: one event per line, tenant and step bound per run, secrets redacted.

JSON when stderr is not a terminal, key=value console output when it is.
Redaction is value-based (every password cloner generated is registered)
plus patterns for DSNs and ``password=`` forms, reaches into nested dicts,
lists and tuples, and runs after exception formatting so tracebacks are
covered too.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "***"

_PATTERNS = (
    re.compile(r"(?i)(password|passwd|pwd|secret|token)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|\S+)"),
    re.compile(r"(?i)(password\s+)('[^']*')"),
    re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]+:)([^@\s]+)(@)"),
    re.compile(r"(SCRAM-SHA-256\$)(\S+)"),
)


#: Characters of every secret cloner generates (``token_urlsafe`` passwords, Fernet keys).
_URLSAFE_RUN = re.compile(r"[A-Za-z0-9_=-]+")
#: Nesting deeper than this is replaced whole rather than walked (cycles, hostile input).
_MAX_DEPTH = 16
#: structlog's own bookkeeping entries of stdlib records: objects, not log content.
_STRUCTLOG_META = frozenset({"_record", "_from_structlog"})


class Redactor:
    """Replaces known secret values and secret-looking patterns in log values.

    Known values made of URL-safe characters (all generated secrets) are found
    by looking every window of each URL-safe run of the text up in a set per
    secret length: the cost per log line depends on the line and on the few
    distinct secret lengths, not on how many tenants (secrets) there are. Other
    values (rare: operator-given) are scanned one by one.
    """

    def __init__(self) -> None:
        # Copy-on-write snapshots: a log line never iterates a set another thread grows.
        self._by_length: dict[int, frozenset[str]] = {}
        self._others: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        """Register secret values; any later log line containing one is redacted."""
        fresh = [v for v in values if v and len(v) >= 8]
        with self._lock:
            by_length = dict(self._by_length)
            others = set(self._others)
            for value in fresh:
                if _URLSAFE_RUN.fullmatch(value):
                    by_length[len(value)] = by_length.get(len(value), frozenset()) | {value}
                else:
                    others.add(value)
            self._by_length, self._others = by_length, frozenset(others)

    def _known_spans(self, text: str) -> list[tuple[int, int]]:
        by_length = self._by_length
        if not by_length:
            return []
        shortest = min(by_length)
        spans: list[tuple[int, int]] = []
        for run in _URLSAFE_RUN.finditer(text):
            start, end = run.span()
            if end - start < shortest:
                continue
            for length, values in by_length.items():
                for i in range(start, end - length + 1):
                    if text[i:i + length] in values:
                        spans.append((i, i + length))
        return spans

    def redact(self, text: str) -> str:
        """``text`` with every known secret and secret pattern replaced."""
        spans = self._known_spans(text)
        if spans:
            merged: list[list[int]] = []
            for start, end in sorted(spans):
                if merged and start < merged[-1][1]:  # overlapping: one redaction
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            parts, last = [], 0
            for start, end in merged:
                parts += [text[last:start], REDACTED]
                last = end
            parts.append(text[last:])
            text = "".join(parts)
        for value in self._others:
            if value in text:
                text = text.replace(value, REDACTED)
        text = _PATTERNS[0].sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        text = _PATTERNS[1].sub(lambda m: m.group(1) + "'" + REDACTED + "'", text)
        text = _PATTERNS[2].sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
        return _PATTERNS[3].sub(lambda m: m.group(1) + REDACTED, text)

    def redact_value(self, value: Any, depth: int = 0) -> Any:
        """``value`` redacted all the way down: strings, exceptions, dicts, lists, tuples, sets.

        Numbers, booleans and None pass as they are; any other object is logged as
        its redacted ``str`` (its ``repr`` could hold a secret the renderer would print).
        """
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.redact(value)
        if depth >= _MAX_DEPTH:
            return REDACTED
        if isinstance(value, BaseException):
            return self.redact(f"{type(value).__name__}: {value}")
        if isinstance(value, Mapping):
            return {
                (self.redact(k) if isinstance(k, str) else k): self.redact_value(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            items = [self.redact_value(v, depth + 1) for v in value]
            return items if isinstance(value, list | set | frozenset) else tuple(items)
        return self.redact(str(value))

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            if key in _STRUCTLOG_META:
                continue
            event_dict[key] = self.redact_value(value)
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
