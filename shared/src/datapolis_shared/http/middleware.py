"""Pure ASGI middleware: request ids, unhandled errors, the request head and body limits."""

from __future__ import annotations

import json
import logging
import re
import uuid

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datapolis_shared.http.problems import PROBLEM_CONTENT_TYPE, TYPE_BASE, internal_error
from datapolis_shared.logs import request_id_var
from datapolis_shared.metrics import route_template

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
# What a caller's request id may look like to be reused as is: UUIDs, hex ids,
# W3C trace ids and the like. Anything else (spaces, quotes, control or
# non-ASCII characters, overlong) is replaced, so it cannot forge log fields.
WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")


def request_id_from(header: bytes) -> str:
    """The caller's request id when it is well-formed, otherwise a new one."""
    incoming = header.decode("latin-1")
    if WELL_FORMED_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


async def send_problem(
    send: Send,
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    close: bool = False,
    **extra: object,
) -> None:
    """Answer with a problem+json from an ASGI middleware, before any route
    (so without FastAPI's handlers), carrying the request id when there is one."""
    body: dict[str, object] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    if request_id := request_id_var.get():
        body["request_id"] = request_id
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(payload)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class RequestIdMiddleware:
    """Takes the caller's ``X-Request-Id`` (if well-formed) or makes one, puts
    it in the logging context and echoes it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(dict(scope["headers"]).get(REQUEST_ID_HEADER, b""))
        token = request_id_var.set(request_id)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)


class UnhandledErrorMiddleware:
    """Answers a bug with a 500 problem and logs it exactly once.

    It sits inside :class:`RequestIdMiddleware`, so the answer and the log
    record carry the request id, and it does not re-raise: an exception that
    left the app would be logged again, with its whole traceback, by the
    server. The log record names the route template, never the raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            method, route = scope["method"], route_template(scope)
            log.exception(
                "unhandled error on %s %s",
                method,
                route,
                extra={"http_method": method, "http_route": route},
            )
            if response_started:
                # Too late for a 500: returning without finishing the response
                # makes the server close the connection, so the client sees a
                # broken response rather than a complete-looking truncated one.
                return
            await internal_error(scope.get("path"))(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` while the app reads the body. It is an
    HTTPException so FastAPI's body parsing lets it through to the problem
    handler (it turns any other error while reading into a 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body exceeds {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413 problem+json, whether the
    client declares a Content-Length or streams chunks, without buffering."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        await send_problem(
            send,
            413,
            "payload-too-large",
            "Payload too large",
            f"the request body exceeds {self.max_bytes} bytes",
            max_bytes=self.max_bytes,
            close=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._reject(send)


class HeaderSizeLimitMiddleware:
    """Refuses a request whose line and headers exceed ``max_bytes`` with 431
    problem+json. The server (h11) enforces the same limit only on a head
    that arrives in pieces; one that arrives whole is measured here."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # As on the wire: "name: value\r\n" per header, after the request line.
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
        if size <= self.max_bytes:
            await self.app(scope, receive, send)
            return
        await send_problem(
            send,
            431,
            "headers-too-large",
            "Request header fields too large",
            f"the request line and headers exceed {self.max_bytes} bytes",
            max_bytes=self.max_bytes,
        )
