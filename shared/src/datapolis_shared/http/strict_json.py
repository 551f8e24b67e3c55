"""Request bodies parsed as strict JSON (RFC 8259), with orjson.

Python's json module accepts what JSON does not have and what the rest of
the system cannot store or compare: ``NaN`` and ``Infinity``, numbers that
overflow a double (``1e400`` becomes infinity), integers thousands of digits
long (an error that is not a decode error), lone surrogates (``"\\ud800"``,
which PostgreSQL and UTF-8 refuse). orjson refuses all of them, and nesting
deeper than 1,024 levels, as a decode error, so FastAPI answers them like any
malformed body: 422 ``validation-failed``.

Every router of a service is an ``APIRouter(route_class=StrictJsonRoute)``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI maps it.
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
