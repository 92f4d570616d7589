"""JSON log lines, one object per line, for the app's loggers and uvicorn's alike.

Each line carries the time, level, logger and message, the ``request_id`` of the request being
handled (from a context variable the access-log middleware sets), and any ``fields`` passed as
``extra={"fields": {...}}``, so one ``grep`` for a request ID finds every line about it.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            line["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    """Root gets one JSON handler; uvicorn's loggers (configured before the app is imported) keep
    their handlers, with the JSON formatter."""
    formatter = JsonFormatter()
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        root.addHandler(handler)
    for name in UVICORN_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
