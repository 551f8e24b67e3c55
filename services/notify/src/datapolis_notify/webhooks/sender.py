"""Sends one signed webhook message to one endpoint, and says what came of it.

One ``aiohttp`` session (one connection pool) serves every endpoint, with a
per-host limit so a hanging endpoint holds only its own share. Its resolver
is the target guard's (:class:`~.targets.GuardedResolver`): every new
connection, the first or after a redirect, goes only to an address vetted
when it is made. aiohttp rather than httpx: under a fan-out of many
concurrent requests httpx's pool spends its time re-scanning its
connections, an order of magnitude slower here.

Failures of the target (statuses, timeouts, resets, nonsense) become an
:class:`~datapolis_notify.ports.Outcome`; ``send`` raises only for notify's
own faults (a malformed stored key).
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from datetime import UTC, datetime
from importlib import metadata

import aiohttp
from yarl import URL

from datapolis_notify.ports import Outcome, WebhookEndpoint
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.webhooks.signing import signature_headers
from datapolis_notify.webhooks.targets import (
    GuardedResolver,
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


class _TargetFault(Exception):
    """The target answered something unusable (e.g. a bad Location)."""


class HttpWebhookSender:
    """The :class:`~datapolis_notify.ports.WebhookSender` over HTTP.

    Made anywhere; its session is opened on first use, inside the event loop
    that uses it. Close it with :meth:`aclose`."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        resolver: Resolver = resolve,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._settings = settings
        self._policy = TargetPolicy.from_entries(settings.allow_targets)
        self._resolver = resolver
        self._verify = verify
        self._user_agent = _user_agent()
        self._session: aiohttp.ClientSession | None = None

    @property
    def policy(self) -> TargetPolicy:
        return self._policy

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            settings = self._settings
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._policy, resolver=self._resolver),
                # Every new connection resolves (and is vetted) again.
                use_dns_cache=False,
                limit=settings.max_connections,
                limit_per_host=settings.max_connections_per_host,
                keepalive_timeout=settings.keepalive_expiry_s,
                ssl=self._verify,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
                # A small gzip bomb must stay small: the body is read as sent.
                auto_decompress=False,
                # No proxy from the environment: a proxy would make the
                # connection, out of the guard's sight.
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
            # Bounds the whole attempt, waiting for a connection included.
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
        except TimeoutError:
            error = f"timeout after {self._settings.timeout_s:g} s"
        except (aiohttp.ClientError, OSError, _TargetFault) as fault:
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
        session = self._open()
        for hop in range(self._settings.max_redirects + 1):
            # IP literals, scheme and credentials; names are vetted on connect.
            check_url(url, self._policy)
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                location = response.headers.get("location")
                if (
                    status in _FOLLOWED_REDIRECTS
                    and location
                    and hop < self._settings.max_redirects
                ):
                    url = _redirect_target(response.url, location)
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


def _redirect_target(base: URL, location: str) -> str:
    try:
        return str(base.join(URL(location)))
    except ValueError as error:
        raise _TargetFault(f"unusable Location {location[:80]!r}") from error


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


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; the rest is never read (the
    connection is closed instead of drained)."""
    head = bytearray()
    while len(head) < limit:
        chunk = await response.content.read(limit - len(head))
        if not chunk:
            break
        head += chunk
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
