"""HTTP calls to the services, and their problems turned into ``CliError``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import httpx

from datapolis_cli import __name__ as _package
from datapolis_cli.config import Profile
from datapolis_cli.errors import CliError, ExitCode, exit_code_for_status

Service = Literal["catalog", "ingest", "consent", "notify"]
Auth = Literal["key", "subject", "none"]

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
USER_AGENT = f"{_package.replace('_', '-')}/0.1.0"


def problem_error(response: httpx.Response, service: str) -> CliError:
    """The service's problem+json as an error: its title, detail and code."""
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    title = str(problem.get("title") or response.reason_phrase or "error")
    detail = problem.get("detail")
    if detail is None and not problem and response.text:
        detail = response.text[:500]
    return CliError(
        f"{service}: {title}",
        exit_code=exit_code_for_status(response.status_code),
        detail=str(detail) if detail is not None else None,
        code=str(problem["code"]) if problem.get("code") else None,
        status=response.status_code,
        problem=problem,
    )


def unreachable(service: str, url: str, exc: Exception) -> CliError:
    return CliError(
        f"{service} is unavailable",
        exit_code=ExitCode.UNAVAILABLE,
        detail=f"no answer from {url}: {exc.__class__.__name__}: {exc}".rstrip(": "),
        code="service-unreachable",
    )


class Api:
    """One service of one profile."""

    def __init__(self, profile: Profile, service: Service) -> None:
        self.profile = profile
        self.service = service
        self.base_url = profile.url(service)
        # One connection pool per service for the command's life: a push
        # sends its batches over kept-alive connections.
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=TIMEOUT)
        return self._client

    def _auth_headers(self, auth: Auth) -> dict[str, str]:
        if auth == "none":
            return {}
        if auth == "subject":
            token = self.profile.subject_token
            if not token:
                raise CliError(
                    "no subject token",
                    exit_code=ExitCode.AUTH,
                    detail="pass --subject-token to `datapolis login`, "
                    "or set DATAPOLIS_SUBJECT_TOKEN",
                    code="missing-subject-token",
                )
            return {"Authorization": f"Bearer {token}"}
        if not self.profile.api_key:
            raise CliError(
                "no API key",
                exit_code=ExitCode.AUTH,
                detail="run `datapolis login`, or set DATAPOLIS_API_KEY",
                code="missing-api-key",
            )
        return {"Authorization": f"Bearer {self.profile.api_key}"}

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Auth = "key",
    ) -> httpx.Response:
        """The raw response of a call, 2xx or not; unreachable: ``CliError``."""
        all_headers = {"User-Agent": USER_AGENT, **self._auth_headers(auth), **(headers or {})}
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base_url + path
        try:
            return self.client.request(
                method, url, json=json, params=clean, content=content, headers=all_headers
            )
        except httpx.TransportError as exc:
            raise unreachable(self.service, self.base_url, exc) from None

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Auth = "key",
    ) -> Any:
        """The JSON answer of a successful call; a problem raises ``CliError``."""
        response = self.send(
            method, path, json=json, params=params, content=content, headers=headers, auth=auth
        )
        if response.is_error:
            raise problem_error(response, self.service)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.call("POST", path, **kwargs)

    @contextmanager
    def stream(
        self, path: str, *, headers: Mapping[str, str] | None = None, auth: Auth = "key"
    ) -> Iterator[httpx.Response]:
        """A streamed GET (server-sent events), no read timeout. A service
        that does not answer is ``CliError``; a connection that drops while
        the body is read raises ``httpx.TransportError``, for the caller to
        resume."""
        all_headers = {"User-Agent": USER_AGENT, **self._auth_headers(auth), **(headers or {})}
        timeout = httpx.Timeout(None, connect=5.0)
        with httpx.Client(timeout=timeout) as client:
            request = client.build_request("GET", self.base_url + path, headers=all_headers)
            try:
                response = client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise unreachable(self.service, self.base_url, exc) from None
            try:
                if response.is_error:
                    try:
                        response.read()
                    except httpx.TransportError as exc:
                        raise unreachable(self.service, self.base_url, exc) from None
                    raise problem_error(response, self.service)
                yield response
            finally:
                response.close()
