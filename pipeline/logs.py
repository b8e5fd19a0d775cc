"""Logging setup: human-readable lines, or one JSON object per line for log shippers."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "process", "message"}``, plus ``exc`` with a traceback."""

    def __init__(self, process_name: str = "") -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process_name or record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup(log_format: str = "text", level: int = logging.INFO, process_name: str = "") -> None:
    """Configure the root logger on stderr, replacing whatever was there."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process_name))
    else:
        prefix = f"{process_name} " if process_name else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)



@dataclass
class _Window:
    start: float
    lines: int = 0
    dropped: int = 0


class Throttle:
    """At most ``burst`` log lines per ``window_s`` for each key; the rest are counted, not logged.

    A hostile client can make the server log on every message it sends (a bad handshake,
    a wrong key, a message that trips a bug); a flood of lines would cost more than the
    messages. The first line after a quiet spell says how many were dropped. Time is
    passed in. Keys should be reasons, not addresses; at most ``max_keys`` are kept.
    """

    def __init__(self, window_s: float = 10.0, burst: int = 5, max_keys: int = 256) -> None:
        self.window_s = window_s
        self.burst = burst
        self.max_keys = max_keys
        self._keys: dict[str, _Window] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None: drop this line. Otherwise log it, with how many of ``key`` were dropped before it."""
        window = self._keys.get(key)
        if window is None:
            if len(self._keys) >= self.max_keys:
                self._keys.pop(next(iter(self._keys)))
            window = self._keys[key] = _Window(now)
        if now - window.start >= self.window_s:
            window.start, window.lines = now, 0
        if window.lines >= self.burst:
            window.dropped += 1
            return None
        window.lines += 1
        dropped, window.dropped = window.dropped, 0
        return dropped
