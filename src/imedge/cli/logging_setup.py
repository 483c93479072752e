"""Logging for the command line: one handler on stderr, plain text or one JSON object a line.

Text lines read `2026-11-22 10:00:00 INFO imedge.server.c2s.stream [stream=… peer=…] message`;
the bracket holds the `extra` fields a record carries (the c2s stream's adapter adds
`stream` and `peer`). JSON lines carry the same fields as keys, for log shippers.

Records logged before the configuration is known (the config loader's own warnings) are
held by `EarlyLogs` and replayed through the handler chosen from that configuration.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sys
from collections.abc import Iterator
from logging.handlers import BufferingHandler
from typing import TextIO

from imedge.config import LogConfig, LogFormat

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Libraries too talkative for the configured level: logger -> (its level at debug, otherwise).
# aiosqlite logs every statement at DEBUG, too much even for `log.level = "debug"`; alembic
# explains its SQLite implementation at INFO at every start.
_CHATTY = {"aiosqlite": (logging.INFO, logging.INFO), "alembic": (logging.DEBUG, logging.WARNING)}
# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)


def record_extras(record: logging.LogRecord) -> dict[str, object]:
    """The `extra` fields of a record (e.g. `stream`, `peer`), in the order given."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(datefmt=TIME_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        extras = record_extras(record)
        context = " ".join(f"{key}={value}" for key, value in extras.items())
        context = f"[{context}] " if context else ""
        return f"{record.asctime} {record.levelname} {record.name} {context}{record.message}"

    def usesTime(self) -> bool:
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 with offset), level, logger, message,
    the record's extra fields, and `exception` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created).astimezone()
        entry: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt is LogFormat.JSON else TextFormatter()


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class EarlyLogs(BufferingHandler):
    """Holds records logged before the logging configuration is known."""

    def __init__(self) -> None:
        super().__init__(capacity=1000)

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return False

    def replay(self, target: logging.Handler) -> None:
        self.acquire()
        try:
            for record in self.buffer:
                if record.levelno >= target.level and record.levelno >= logging.root.level:
                    target.handle(record)
            self.buffer.clear()
        finally:
            self.release()


@contextlib.contextmanager
def early_logs() -> Iterator[EarlyLogs]:
    """Buffer every record of level WARNING and above until the block ends."""
    root = logging.getLogger()
    handler = EarlyLogs()
    handler.setLevel(logging.WARNING)
    saved = root.level
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


@contextlib.contextmanager
def logging_to_stderr(
    config: LogConfig, *, minimum: int = logging.NOTSET, early: EarlyLogs | None = None
) -> Iterator[logging.Handler]:
    """Send log records to stderr as `config` says, for the duration of the block.

    `minimum` raises the level (the admin commands show warnings and errors only); the
    records held by `early` are replayed first. The previous root level is restored after.
    """
    root = logging.getLogger()
    level = max(config.level.number, minimum)
    handler = _StderrHandler()
    handler.setFormatter(make_formatter(config.format))
    handler.setLevel(level)
    saved_root = root.level
    saved_chatty = {name: logging.getLogger(name).level for name in _CHATTY}
    root.setLevel(level)
    for name, (at_debug, otherwise) in _CHATTY.items():
        floor = at_debug if level <= logging.DEBUG else otherwise
        logging.getLogger(name).setLevel(max(level, floor))
    root.addHandler(handler)
    try:
        if early is not None:
            early.replay(handler)
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, saved in saved_chatty.items():
            logging.getLogger(name).setLevel(saved)
