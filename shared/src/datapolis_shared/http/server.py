"""How every API and worker probe server runs uvicorn: with an explicit limit
on the request head (request line and headers), and problem+json answers to
requests that are not valid HTTP, which never reach the app.

uvicorn answers those with a plain-text 400, and its httptools protocol (the
C parser, the one it runs) buffers a head of any size while it trickles in. A client should meet the
same RFC 9457 problems everywhere: 431 ``headers-too-large`` when the head
exceeds ``http.max_header_bytes``, 400 ``malformed-http`` otherwise. A head
that arrives whole is measured by ``HeaderSizeLimitMiddleware``; one still
arriving is cut off here, at the same limit.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from datapolis_shared.http.problems import PROBLEM_CONTENT_TYPE, TYPE_BASE
from datapolis_shared.settings import HttpSettings

HEADERS_TOO_LARGE = "headers-too-large"
MALFORMED_HTTP = "malformed-http"
# uvicorn's default, when a server was configured without uvicorn_options.
DEFAULT_MAX_HEAD_BYTES = 16 * 1024


def _head_limit(config: Any) -> int:
    # uvicorn's one setting for the size of a head still arriving (named after
    # its other protocol, h11, which enforces it itself).
    limit: int | None = config.h11_max_incomplete_event_size
    return limit or DEFAULT_MAX_HEAD_BYTES


def _problem(too_large: bool, limit: int) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
    """Status, reason, body and headers of the answer to a refused head."""
    if too_large:
        status, code, title = 431, HEADERS_TOO_LARGE, "Request header fields too large"
        detail = f"the request line and headers exceed {limit} bytes"
        extra: dict[str, Any] = {"max_bytes": limit}
    else:
        status, code, title = 400, MALFORMED_HTTP, "Bad request"
        detail = "the request is not valid HTTP/1.1"
        extra = {}
    body = json.dumps(
        {"type": TYPE_BASE + code, "title": title, "status": status, "detail": detail}
        | {"code": code, **extra}
    ).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return status, title, body, headers


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (the C parser: the fast one), with a
    bound on a head still arriving and problem+json answers."""

    _head_open = False
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._head_open or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        limit = _head_limit(self.config)
        if self._head_bytes > limit:
            self._refuse(too_large=True)

    def send_400_response(self, msg: str) -> None:
        self._refuse(too_large=False)

    def _refuse(self, *, too_large: bool) -> None:
        status, title, body, headers = _problem(too_large, _head_limit(self.config))
        head = [f"HTTP/1.1 {status} {title}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()


def uvicorn_options(http: HttpSettings) -> dict[str, Any]:
    """Options of ``uvicorn.run`` / ``uvicorn.Config`` every server shares."""
    return {
        "http": ProblemHttpToolsProtocol,
        "h11_max_incomplete_event_size": http.max_header_bytes,
        "log_config": None,
        "access_log": False,
    }
