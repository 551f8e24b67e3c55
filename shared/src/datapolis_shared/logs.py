"""Structured JSON logs carrying the current request and event ids.

Every traceback a service writes is bounded (:func:`format_exception_bounded`):
a recursion error or an exception whose message holds a whole request body
would otherwise put hundreds of kilobytes in one log line, which log shippers
truncate or drop, losing the very record that explains a 500.
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextvars import ContextVar
from types import TracebackType
from typing import TypeAlias

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)

ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None]

# The innermost frames say where it broke; the outer ones are the same ASGI
# and middleware stack on every request.
MAX_TRACEBACK_FRAMES = 30
MAX_TRACEBACK_LINE_CHARS = 1_000
MAX_TRACEBACK_CHARS = 16_000


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}[... {len(text) - 2 * half} characters left out ...]{text[-half:]}"


def format_exception_bounded(
    exc: BaseException,
    *,
    max_frames: int = MAX_TRACEBACK_FRAMES,
    max_line_chars: int = MAX_TRACEBACK_LINE_CHARS,
    max_chars: int = MAX_TRACEBACK_CHARS,
) -> str:
    """``exc``'s traceback (with its causes), no locals, at most ``max_frames``
    innermost frames per exception, each line and the whole text clipped."""
    depth = sum(1 for _ in traceback.walk_tb(exc.__traceback__))
    summary = traceback.TracebackException.from_exception(
        exc, limit=-max_frames, capture_locals=False, max_group_width=5, max_group_depth=3
    )
    parts = [_clip(part, max_line_chars) for part in summary.format(chain=True)]
    if depth > max_frames:
        parts.insert(1, f"  [... {depth - max_frames} outer frames left out ...]\n")
    return _clip("".join(parts).rstrip("\n"), max_chars)


def _format_exc_info(ei: ExcInfo | tuple[None, None, None]) -> str:
    exc = ei[1]
    if exc is None:
        return ""
    return format_exception_bounded(exc)


class _BoundedJsonFormatter(JsonFormatter):
    def formatException(self, ei: ExcInfo | tuple[None, None, None]) -> str:  # noqa: N802 - logging's name
        # JsonFormatter may return a list of lines; this project keeps one string.
        return _format_exc_info(ei)


class _BoundedFormatter(logging.Formatter):
    def formatException(self, ei: ExcInfo | tuple[None, None, None]) -> str:  # noqa: N802 - logging's name
        return _format_exc_info(ei)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = request_id_var.get()
        record.event_id = event_id_var.get()
        return True


def configure_logging(service: str, level: str = "INFO", *, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(service))
    if json:
        handler.setFormatter(
            _BoundedJsonFormatter(
                "%(levelname)s %(name)s %(message)s %(service)s %(request_id)s %(event_id)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(
            _BoundedFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every reconnection attempt at ERROR while the broker is down;
    # readiness reports that state, so keep the log readable.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").disabled = True
