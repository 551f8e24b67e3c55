"""RFC 9457 problem details for every error, each with a stable ``code``.

This is the one place where domain errors meet HTTP status codes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from datapolis_shared import errors
from datapolis_shared.logs import request_id_var

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "urn:datapolis:problem:"

_STATUS: list[tuple[type[errors.DatapolisError], int]] = [
    (errors.InvalidInput, 422),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.TooLarge, 413),
    (errors.Overloaded, 429),
    (errors.Throttled, 429),
    (errors.Unavailable, 503),
]

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal error",
    503: "Service unavailable",
}

_HTTP_CODES = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
    431: "headers-too-large",
}


def title_for(status: int) -> str:
    return _TITLES.get(status, "Error")


class ProblemResponse(JSONResponse):
    """problem+json that always renders: a detail echoing the caller's input
    may hold what UTF-8 cannot encode (a lone surrogate from a JSON escape),
    which is replaced rather than turned into a server error."""

    media_type = PROBLEM_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8", errors="replace")


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title_for(status),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return ProblemResponse(body, status_code=status, headers=headers)


def status_for(exc: errors.DatapolisError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def _log_cause(exc: errors.DatapolisError) -> None:
    """The driver error behind a domain error goes to the log (with the request
    id, so a caller's report finds it), not to the caller. No traceback: the
    cause's own words say what failed."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, errors.DatapolisError):
        return
    log.warning("answered %s: %s (cause: %r)", exc.code, errors.public_message(exc), cause)


def from_domain_error(exc: errors.DatapolisError, instance: str | None = None) -> JSONResponse:
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.Unavailable | errors.Overloaded | errors.Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="datapolis"'
    if status == 500:
        log.error("unmapped domain error %s: %s", type(exc).__name__, exc.message)
    _log_cause(exc)
    return problem(
        status,
        exc.code,
        errors.public_message(exc),
        instance=instance,
        headers=headers,
        **exc.extra,
    )


def internal_error(instance: str | None = None) -> JSONResponse:
    """The answer to a bug: no detail of it, only the request id to find it in the log."""
    return problem(500, "internal-error", "an unexpected error occurred", instance=instance)


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path answers. Starlette's 405 names only the
    methods of the first route whose path matched, so GET and POST on one path
    (two routes) each claimed to be the only one."""
    path = request.scope["path"]
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
        elif (
            isinstance(route, Mount)
            and isinstance(route.app, StaticFiles)
            and route.path_regex.match(path)
        ):
            # The docs' assets (see ``docs``): files read, never written.
            methods |= {"GET", "HEAD"}
    return sorted(methods)


def install(app: FastAPI) -> None:
    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.DatapolisError)
        return from_domain_error(exc, request.url.path)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {
                "location": ".".join(str(p) for p in err.get("loc", ())),
                "message": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        return problem(
            422,
            "validation-failed",
            "the request does not match what this endpoint accepts",
            instance=request.url.path,
            errors=details,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http-{exc.status_code}")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem(
            exc.status_code,
            code,
            str(exc.detail),
            instance=request.url.path,
            headers=headers,
        )

    app.add_exception_handler(errors.DatapolisError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Any other exception is answered by ``middleware.UnhandledErrorMiddleware``:
    # an ``Exception`` handler here would run in Starlette's outermost
    # middleware, outside the request id, and Starlette re-raises after it, so
    # the server would log the same traceback a second time.
