"""How every API and worker probe server runs uvicorn: with an explicit limit
on the request head (request line and headers), and problem+json answers to
requests that are not valid HTTP, which never reach the app.

uvicorn (on h11) answers those with a plain-text 400; a client should meet
the same RFC 9457 problems everywhere: 431 ``headers-too-large`` when the head
exceeds ``http.max_header_bytes``, 400 ``malformed-http`` otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from datapolis_shared.http.problems import PROBLEM_CONTENT_TYPE, TYPE_BASE
from datapolis_shared.settings import HttpSettings

HEADERS_TOO_LARGE = "headers-too-large"
MALFORMED_HTTP = "malformed-http"
# h11's own default, when a server was configured without uvicorn_options.
H11_DEFAULT_MAX_HEAD_BYTES = 16 * 1024


class ProblemH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering unparseable requests with problem+json."""

    def send_400_response(self, msg: str) -> None:
        pending, _closed = self.conn.trailing_data
        limit = self.config.h11_max_incomplete_event_size or H11_DEFAULT_MAX_HEAD_BYTES
        if len(pending) > limit:
            status, code, title = 431, HEADERS_TOO_LARGE, "Request header fields too large"
            detail = f"the request line and headers exceed {limit} bytes"
            extra: dict[str, Any] = {"max_bytes": limit}
        else:
            status, code, title = 400, MALFORMED_HTTP, "Bad request"
            detail = "the request is not valid HTTP/1.1"
            extra = {}
        body = json.dumps(
            {
                "type": TYPE_BASE + code,
                "title": title,
                "status": status,
                "detail": detail,
                "code": code,
                **extra,
            }
        ).encode()
        headers = [
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(
            self.conn.send(h11.Response(status_code=status, headers=headers, reason=title)) or b""
        )
        self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()


def uvicorn_options(http: HttpSettings) -> dict[str, Any]:
    """Options of ``uvicorn.run`` / ``uvicorn.Config`` every server shares."""
    return {
        "http": ProblemH11Protocol,
        "h11_max_incomplete_event_size": http.max_header_bytes,
        "log_config": None,
        "access_log": False,
    }
