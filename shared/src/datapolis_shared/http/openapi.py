"""The OpenAPI document tells the truth about errors and authentication.

A route names the problem codes it can answer, one constant each::

    @router.get("/datasets/{slug}", responses=problem_responses(DATASET_NOT_FOUND))

and :func:`complete_openapi` (installed by the app factory) adds what every
route of a kind can answer without saying so:

- a route that depends on :func:`datapolis_shared.http.app.authenticate`
  declares the Bearer and ``X-API-Key`` schemes and answers 401 and 429;
- a route with parameters or a body answers 422 ``validation-failed`` (the
  problem+json the services send, instead of FastAPI's ``HTTPValidationError``);
- a route with a body answers 413 ``payload-too-large``, and 400
  ``bad-request`` when FastAPI decodes it (a body that is not UTF-8);
- a route of a service (not a probe) answers 503 ``unavailable``.

Each status is one ``application/problem+json`` response whose schema is the
shared ``Problem`` with ``code`` limited to the codes listed, whose description
lists what each code means, and with one example per code.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from datapolis_shared.http.problems import PROBLEM_CONTENT_TYPE, TYPE_BASE, title_for

# Where problem_responses leaves the codes for complete_openapi to render.
_CODES_KEY = "x-problem-codes"

BEARER_SCHEME = "bearer"
API_KEY_SCHEME = "apiKey"


@dataclass(frozen=True)
class ProblemCode:
    """A stable problem code, the status it comes with, and what it means."""

    code: str
    status: int
    meaning: str
    # Extension members the problem carries besides the standard ones.
    example_extra: tuple[tuple[str, Any], ...] = ()
    retry_after: bool = False

    def example(self) -> dict[str, Any]:
        return {
            "type": TYPE_BASE + self.code,
            "title": title_for(self.status),
            "status": self.status,
            "detail": self.meaning,
            "code": self.code,
            "request_id": "4f1c2a9be0d34c6f8d2b7a51c3e9f006",
            **dict(self.example_extra),
        }


# Codes the shared library itself answers.
MISSING_API_KEY = ProblemCode(
    "missing-api-key", 401, "no key in `Authorization: Bearer` or `X-API-Key`"
)
INVALID_API_KEY = ProblemCode("invalid-api-key", 401, "the key is not one the platform issued")
REVOKED_API_KEY = ProblemCode("revoked-api-key", 401, "the key was revoked")
MISSING_SCOPE = ProblemCode(
    "missing-scope", 403, "the key lacks the scope this needs", (("scope", "publish"),)
)
OPERATOR_ONLY = ProblemCode("operator-only", 403, "only the operator's key may do this")
TOO_MANY_FAILED_AUTHENTICATIONS = ProblemCode(
    "too-many-failed-authentications",
    429,
    "too many failed authentications from this client; retry after `Retry-After` seconds",
    retry_after=True,
)
VALIDATION_FAILED = ProblemCode(
    "validation-failed",
    422,
    "a parameter or the body does not match this operation's schema; `errors` says where",
    (("errors", [{"location": "body.name", "message": "Field required", "type": "missing"}]),),
)
PAYLOAD_TOO_LARGE = ProblemCode(
    "payload-too-large",
    413,
    "the body exceeds the service's limit (`<PREFIX>_HTTP__MAX_BODY_BYTES`)",
    (("max_bytes", 1048576),),
)
BODY_UNREADABLE = ProblemCode(
    "bad-request", 400, "the body cannot be read as JSON text (it is not UTF-8)"
)
UNSUPPORTED_MEDIA_TYPE = ProblemCode(
    "unsupported-media-type", 415, "the body's Content-Type is not one this operation reads"
)
UNAVAILABLE = ProblemCode(
    "unavailable",
    503,
    "Kafka or PostgreSQL cannot do its part now (or the service is starting); "
    "retry after `Retry-After` seconds",
    retry_after=True,
)
NOT_READY = ProblemCode(
    "not-ready",
    503,
    "the service cannot do its job now; `checks` says which dependency fails",
    (("checks", {"postgres": "ok", "kafka": "Kafka is unreachable"}),),
    retry_after=True,
)
HEADERS_TOO_LARGE = ProblemCode(
    "headers-too-large",
    431,
    "the request line and headers exceed the service's limit (`<PREFIX>_HTTP__MAX_HEADER_BYTES`)",
    (("max_bytes", 16384),),
)
MALFORMED_HTTP = ProblemCode(
    "malformed-http", 400, "the request is not valid HTTP/1.1 (answered by the server itself)"
)
OVERLOADED = ProblemCode(
    "overloaded",
    429,
    "too much work in flight; retry after `Retry-After` seconds",
    retry_after=True,
)

# What every authenticated operation can answer.
AUTHENTICATION_CODES: tuple[ProblemCode, ...] = (
    MISSING_API_KEY,
    INVALID_API_KEY,
    REVOKED_API_KEY,
    TOO_MANY_FAILED_AUTHENTICATIONS,
)

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem. `code` is stable and what a client should branch "
    "on; `detail` is for people and may change. Some codes add members of their own "
    "(listed below); a client ignores members it does not know.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": f"`{TYPE_BASE}<code>`"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the path of the request"},
        "code": {"type": "string", "description": "stable, machine-readable"},
        "request_id": {
            "type": "string",
            "description": "also in the `X-Request-Id` response header and the service's logs",
        },
        "errors": {
            "type": "array",
            "description": "validation-failed: each parameter or body member refused",
            "items": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "scope": {"type": "string", "description": "missing-scope: the scope needed"},
        "slug": {"type": "string", "description": "the dataset concerned"},
        "max_bytes": {"type": "integer", "description": "payload-too-large: the limit"},
        "max_records": {"type": "integer", "description": "too-many-records: the limit"},
        "checks": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "not-ready: each readiness check and its state",
        },
        "changes": {
            "type": "array",
            "items": {"type": "object"},
            "description": "incompatible-schema: each change that breaks consumers",
        },
        "current_version": {"type": "integer"},
        "current_partitions": {"type": "integer"},
        "requested_partitions": {"type": "integer"},
        "line": {"type": "integer", "description": "malformed-json: where the parser stopped"},
        "column": {"type": "integer"},
        "position": {"type": "integer"},
    },
    "additionalProperties": True,
}

SECURITY_SCHEMES: dict[str, Any] = {
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "dpk_<key id>_<secret>",
        "description": "An API key issued by the catalog (or the operator's key).",
    },
    API_KEY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key, for clients that cannot set `Authorization`.",
    },
}


_SCHEMES_KEY = "x-security-schemes"


def own_security(name: str, scheme: dict[str, Any]) -> dict[str, Any]:
    """The ``openapi_extra=`` of a route that authenticates its callers by
    ``scheme`` rather than by an API key: the operation names it as its
    security and the document lists it among its schemes."""
    return {"security": [{name: []}], _SCHEMES_KEY: {name: scheme}}


def problem_responses(*codes: ProblemCode) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer these problem codes."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry = responses.setdefault(code.status, {"description": title_for(code.status)})
        entry.setdefault(_CODES_KEY, []).append(code)
    return responses


def _dependency_calls(dependant: Dependant) -> Iterable[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _dependency_calls(sub)


def _render(status: int, codes: Sequence[ProblemCode]) -> dict[str, Any]:
    unique = list({c.code: c for c in codes}.values())
    lines = "\n".join(f"- `{c.code}`: {c.meaning}" for c in unique)
    response: dict[str, Any] = {
        "description": f"{title_for(status)}, with one of these codes:\n\n{lines}",
        "content": {
            PROBLEM_CONTENT_TYPE: {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Problem"},
                        {
                            "type": "object",
                            "properties": {
                                "status": {"const": status},
                                "code": {"enum": [c.code for c in unique]},
                            },
                        },
                    ]
                },
                "examples": {c.code: {"value": c.example()} for c in unique},
            }
        },
    }
    if any(c.retry_after for c in unique):
        response["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}
        }
    return response


def complete_openapi(
    app: FastAPI,
    *,
    authenticate: Callable[..., Any],
    probe_paths: Collection[str] = (),
    input_codes: Sequence[ProblemCode] = (),
) -> dict[str, Any]:
    """The app's OpenAPI document with the problems, security and examples
    (see the module's docstring). ``input_codes`` are answered by every
    operation that takes parameters or a body; ``probe_paths`` are the routes
    that answer no ``unavailable`` (they report their dependencies' state)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = dict(SECURITY_SCHEMES)

    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        operations = document["paths"].get(route.path_format, {})
        for method in route.methods:
            operation = operations.get(method.lower())
            if operation is None:
                continue
            # A route authenticated otherwise than by an API key declares its
            # schemes itself (see OWN_SECURITY); they join the document's.
            components["securitySchemes"].update(operation.pop(_SCHEMES_KEY, {}))
            _complete_operation(
                operation,
                route,
                authenticated=authenticate in set(_dependency_calls(route.dependant)),
                probe=route.path_format in probe_paths,
                input_codes=input_codes,
            )
    return document


def _complete_operation(
    operation: dict[str, Any],
    route: APIRoute,
    *,
    authenticated: bool,
    probe: bool,
    input_codes: Sequence[ProblemCode],
) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    by_status: dict[int, list[ProblemCode]] = {}
    # Read from the route: the generated document holds them JSON-encoded.
    for key, declared in route.responses.items():
        codes = declared.get(_CODES_KEY)
        if codes is not None:
            by_status.setdefault(int(key), []).extend(codes)
            responses.pop(str(key), None)

    def add(*codes: ProblemCode) -> None:
        for code in codes:
            by_status.setdefault(code.status, []).append(code)

    if authenticated:
        operation["security"] = [{BEARER_SCHEME: []}, {API_KEY_SCHEME: []}]
        add(*AUTHENTICATION_CODES)
    elif (route.openapi_extra or {}).get("security"):
        # Declared by the route with own_security(); its 401 codes are in its
        # responses like any other.
        pass
    else:
        operation["security"] = []
    takes_input = bool(route.dependant.path_params or route.dependant.query_params)
    takes_input |= bool(route.dependant.header_params or "requestBody" in operation)
    if takes_input:
        add(VALIDATION_FAILED, *input_codes)
    if "requestBody" in operation:
        add(PAYLOAD_TOO_LARGE)
    if route.body_field is not None:
        # FastAPI decodes a declared body itself, and answers 400 when it cannot.
        add(BODY_UNREADABLE)
    if not probe:
        add(UNAVAILABLE)
    # The server and the outermost middleware answer these before any route.
    add(HEADERS_TOO_LARGE, MALFORMED_HTTP)
    # FastAPI's own 422 describes a body the services never send.
    generated_422 = responses.get("422", {})
    if "HTTPValidationError" in str(generated_422):
        del responses["422"]
    for status, codes in sorted(by_status.items()):
        responses[str(status)] = _render(status, codes)


def install_openapi(
    app: FastAPI,
    *,
    authenticate: Callable[..., Any],
    probe_paths: Collection[str] = (),
    input_codes: Sequence[ProblemCode] = (),
) -> None:
    """Serve :func:`complete_openapi` as the app's document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_openapi(
                app, authenticate=authenticate, probe_paths=probe_paths, input_codes=input_codes
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the document
