"""The platform as the demo sees it: the four services' public HTTP APIs."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx

DEV_OPERATOR_KEY = "dpk_operator_dev-only-operator-key-change-me"


class StepFailed(Exception):
    """A call the story relies on did not do what it should."""


@dataclass(frozen=True)
class Urls:
    catalog: str
    ingest: str
    consent: str
    notify: str

    @classmethod
    def from_env(cls) -> Urls:
        def url(service: str, port: int) -> str:
            explicit = os.environ.get(f"DATAPOLIS_{service.upper()}_URL")
            if explicit:
                return explicit.rstrip("/")
            return f"http://127.0.0.1:{os.environ.get(f'{service.upper()}_PORT', port)}"

        return cls(
            url("catalog", 8001), url("ingest", 8002), url("consent", 8003), url("notify", 8004)
        )


def describe(response: httpx.Response) -> str:
    """A service's answer as a sentence: its problem's title, detail and code."""
    try:
        problem = response.json()
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"
    if isinstance(problem, dict) and "code" in problem:
        detail = f": {problem['detail']}" if problem.get("detail") else ""
        return f"{response.status_code} {problem.get('title', '')}{detail} ({problem['code']})"
    return f"{response.status_code} {str(problem)[:200]}"


class Platform:
    def __init__(self, urls: Urls, operator_key: str) -> None:
        self.urls = urls
        self.operator_key = operator_key
        self.http = httpx.AsyncClient(timeout=20.0)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        retry_for_s: float = 15.0,
        retry_codes: tuple[str, ...] = (),
    ) -> httpx.Response:
        """One call, retried while the service says "not yet" (503, 429, or
        one of `retry_codes`), for at most `retry_for_s`; StepFailed when the
        answer is not one of `ok`."""
        url = getattr(self.urls, service) + path
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        deadline = time.monotonic() + retry_for_s
        while True:
            try:
                response = await self.http.request(method, url, json=json, headers=all_headers)
            except httpx.TransportError as error:
                if time.monotonic() > deadline:
                    raise StepFailed(f"{method} {url}: {error!r}") from error
                await asyncio.sleep(0.5)
                continue
            if response.status_code in ok:
                return response
            code = _code(response)
            retryable = response.status_code in (429, 503) or code in retry_codes
            if not retryable or time.monotonic() > deadline:
                raise StepFailed(f"{method} {path} on {service}: {describe(response)}")
            await asyncio.sleep(min(float(response.headers.get("Retry-After", "0.3") or 0.3), 1.0))


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None
