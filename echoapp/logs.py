"""
Logs as JSON lines: C{twistd --logger echoapp.logs.json_observer ...}.

Every event becomes one JSON object on one line, with its structured fields
(peer, service, reason, ...) kept as fields rather than flattened into the
text, so a log pipeline can filter on them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, formatEvent
from twisted.python.failure import Failure

__all__ = ["event_as_json", "json_observer"]

# Event keys that are Twisted's bookkeeping, not the event's own fields.
_INTERNAL = {
    "log_logger",
    "log_source",
    "log_format",
    "log_flattened",
    "log_trace",
    "log_io",
    "message",
    "format",
}


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def event_as_json(event: Mapping[str, object]) -> str:
    """One log event as one line of JSON (newline included)."""
    when = event.get("log_time", 0)
    seconds = when if isinstance(when, int | float) else 0
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(seconds, timezone.utc).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(dict(event)),
    }
    for key, value in event.items():
        if key in _INTERNAL or key in record:
            continue
        if key == "log_failure":
            record["traceback"] = value.getTraceback() if isinstance(value, Failure) else str(value)
        elif not key.startswith("log_"):
            record[key] = _plain(value)
    return json.dumps(record, ensure_ascii=False) + "\n"


def json_observer(stream: IO[str] | None = None) -> ILogObserver:
    """
    The observer factory for C{twistd --logger}: JSON lines on standard
    output (where a supervisor such as systemd or Docker collects them).
    """
    return FileLogObserver(stream or sys.stdout, event_as_json)
