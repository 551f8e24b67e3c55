"""Sends one signed webhook message to one endpoint, and says what came of it.

One ``httpx.AsyncClient`` serves every endpoint. Its connections are made by
the target guard (:mod:`.targets`), so every connection, the first or after
a redirect, goes only to an address that was vetted when it was made.

Failures of the target (statuses, timeouts, resets, nonsense) become an
:class:`~datapolis_notify.ports.Outcome`; ``send`` raises only for notify's
own faults (a malformed stored key).
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import metadata
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from datapolis_notify.ports import Outcome, WebhookEndpoint
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.webhooks.signing import signature_headers
from datapolis_notify.webhooks.targets import (
    GuardedNetworkBackend,
    Resolver,
    TargetPolicy,
    TargetRefused,
    check_url,
    resolve,
)

# 307 and 308 keep the method and the body; 301, 302 and 303 turn a POST
# into a GET in most clients, which is not a delivery.
_FOLLOWED_REDIRECTS = frozenset({307, 308})
_ERROR_TEXT_CHARS = 200


def _user_agent() -> str:
    try:
        version = metadata.version("datapolis-notify")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"datapolis-notify/{version}"


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection is
    made by the target guard. httpx 0.28 takes no network backend, so the
    pool it builds is replaced by one that has it (same options)."""

    def __init__(
        self, *, backend: GuardedNetworkBackend, ssl_context: ssl.SSLContext, limits: httpx.Limits
    ) -> None:
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class _HostSlots:
    """At most ``limit`` requests at once per (scheme, host, port): a host
    that hangs holds its own slots, not the shared pool."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[tuple[str, str, int | None], tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def hold(self, url: str) -> AsyncIterator[None]:
        parts = urlsplit(url)
        key = (parts.scheme, (parts.hostname or "").lower(), parts.port)
        semaphore, users = self._slots.get(key, (asyncio.Semaphore(self._limit), 0))
        self._slots[key] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._slots[key]
            if users <= 1:
                del self._slots[key]
            else:
                self._slots[key] = (semaphore, users - 1)


class HttpWebhookSender:
    """The :class:`~datapolis_notify.ports.WebhookSender` over HTTP."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        resolver: Resolver = resolve,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._settings = settings
        self._policy = TargetPolicy.from_entries(settings.allow_targets)
        self._user_agent = _user_agent()
        self._slots = _HostSlots(settings.max_connections_per_host)
        transport = _GuardedTransport(
            backend=GuardedNetworkBackend(self._policy, resolver=resolver),
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
                keepalive_expiry=settings.keepalive_expiry_s,
            ),
        )
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_s),
            follow_redirects=False,
            # No proxy from the environment: a proxy would make the
            # connection, out of the guard's sight.
            trust_env=False,
        )

    @property
    def policy(self) -> TargetPolicy:
        return self._policy

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(
        self,
        endpoint: WebhookEndpoint,
        *,
        message_id: str,
        body: bytes,
        content_type: str,
        now: datetime,
    ) -> Outcome:
        headers = {
            "content-type": content_type,
            "user-agent": self._user_agent,
            **signature_headers(endpoint.keys, message_id=message_id, body=body, now=now),
        }
        started = time.monotonic()
        try:
            # httpx's timeout is per read or write; this one bounds the whole
            # attempt, so a target dripping bytes cannot hold it longer.
            async with asyncio.timeout(self._settings.timeout_s):
                return await self._post(endpoint.url, headers, body, started)
        except TargetRefused as refused:
            return Outcome(
                kind="refused-target",
                status=None,
                retry_after_s=None,
                error=f"target refused: {refused.reason} ({refused.detail})",
                elapsed_s=time.monotonic() - started,
            )
        except (TimeoutError, httpx.TimeoutException):
            error = f"timeout after {self._settings.timeout_s:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as fault:
            error = f"{type(fault).__name__}: {fault}"[:_ERROR_TEXT_CHARS]
        return Outcome(
            kind="retry",
            status=None,
            retry_after_s=None,
            error=error,
            elapsed_s=time.monotonic() - started,
        )

    async def _post(
        self, url: str, headers: dict[str, str], body: bytes, started: float
    ) -> Outcome:
        for hop in range(self._settings.max_redirects + 1):
            check_url(url, self._policy)
            async with (
                self._slots.hold(url),
                self._client.stream("POST", url, content=body, headers=headers) as response,
            ):
                status = response.status_code
                location = response.headers.get("location")
                if (
                    status in _FOLLOWED_REDIRECTS
                    and location
                    and hop < self._settings.max_redirects
                ):
                    url = urljoin(str(response.url), location)
                    continue
                head = await _read_bounded(response, self._settings.max_response_bytes)
                retry_after = (
                    parse_retry_after(
                        response.headers.get("retry-after"),
                        datetime.now(UTC),
                        self._settings.max_retry_after_s,
                    )
                    if status in (429, 503)
                    else None
                )
            return _classify(status, retry_after, head, time.monotonic() - started)
        raise AssertionError("the loop returns or continues")  # pragma: no cover


def _classify(status: int, retry_after_s: float | None, head: bytes, elapsed_s: float) -> Outcome:
    if 200 <= status < 300:
        return Outcome("delivered", status, None, None, elapsed_s)
    text = head.decode("utf-8", "replace").strip()[:_ERROR_TEXT_CHARS]
    error = f"HTTP {status}" + (f": {text}" if text else "")
    if 300 <= status < 400:
        error = f"HTTP {status}: redirect not followed"
    if status == 410:
        return Outcome("gone", status, None, error, elapsed_s)
    return Outcome("retry", status, retry_after_s, error, elapsed_s)


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the body, as sent (no decompression: a
    small gzip bomb must stay small)."""
    if limit <= 0:
        return b""
    head = bytearray()
    async for chunk in response.aiter_raw():
        head += chunk[: limit - len(head)]
        if len(head) >= limit:
            break
    return bytes(head)


def parse_retry_after(value: str | None, now: datetime, cap_s: float) -> float | None:
    """Seconds a ``Retry-After`` asks for (delta-seconds or HTTP-date),
    between 0 and ``cap_s``; ``None`` when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(int(text))
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), cap_s)
