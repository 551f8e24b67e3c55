"""Errors on a real service (real PostgreSQL and Kafka): a bug answers a 500
problem carrying the request id and is logged once, briefly; a dependency
that is down is described in a plain sentence while the log keeps the
driver's error; failed authentication is throttled per client without
database lookups, and other clients' keys keep working."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import SecretStr

from datapolis_shared.auth import SELECT_KEY, generate_key, save_key
from datapolis_shared.http.app import Caller, create_service_app
from datapolis_shared.kafka import Producer, TopicSpec, ensure_topics
from datapolis_shared.postgres.pool import create_pool
from datapolis_shared.settings import (
    AuthSettings,
    KafkaSettings,
    PostgresSettings,
    ServiceSettings,
)
from tests.apps import running

DEEP = 400
MARKER = "the-bug-behind-this-500"
HUGE = "x" * 200_000


def _recurse(depth: int) -> None:
    if depth == 0:
        raise RuntimeError(f"{MARKER}: {HUGE}")
    _recurse(depth - 1)


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


router = APIRouter()


@router.get("/boom/{depth}")
async def boom(depth: int) -> None:
    _recurse(depth)


@router.get("/down/kafka")
async def kafka_down() -> None:
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}", request_timeout_ms=1000)
    await Producer(dead, client_id="tests-down").start()


@router.get("/down/kafka-admin")
async def kafka_admin_down() -> None:
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}", request_timeout_ms=1000)
    await ensure_topics(dead, [TopicSpec("never.created", 1)])


@router.get("/down/postgres")
async def postgres_down() -> None:
    dsn = f"postgresql://datapolis:datapolis@127.0.0.1:{_closed_port()}/datapolis"
    await create_pool(PostgresSettings(dsn=SecretStr(dsn)))


@router.get("/whoami")
async def whoami(caller: Caller) -> dict[str, str]:
    return {"org_id": caller.org_id}


class _Formatted(logging.Handler):
    """Every record the process logs, as the service's own handler writes it."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_logs_settings(service_settings: ServiceSettings) -> ServiceSettings:
    return service_settings.model_copy(update={"log_json": True})


@pytest.fixture
def logs() -> Iterator[list[_Formatted]]:
    handlers: list[_Formatted] = []
    yield handlers
    for handler in handlers:
        logging.getLogger().removeHandler(handler)


def _capture(handlers: list[_Formatted]) -> _Formatted:
    # After the app factory configured logging: use the formatter it installed.
    root = logging.getLogger()
    handler = _Formatted(root.handlers[0].formatter)
    root.addHandler(handler)
    handlers.append(handler)
    return handler


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def _app(settings: ServiceSettings) -> FastAPI:
    return create_service_app(settings, title="t", description="t", routers=[router])


async def test_a_bug_is_a_500_with_the_request_id_logged_once_and_briefly(
    json_logs_settings: ServiceSettings, logs: list[_Formatted]
) -> None:
    app = _app(json_logs_settings)
    captured = _capture(logs)
    async with running(app) as client:
        # The client's transport raises what escapes the app: what a server
        # would log a second time, with its whole traceback.
        response = await client.get(f"/boom/{DEEP}", headers={"X-Request-ID": "req-0042"})
        body = _problem(response, 500, "internal-error")
        assert response.headers["x-request-id"] == "req-0042"
        assert body["request_id"] == "req-0042"
        assert MARKER not in response.text

        made = await client.get("/boom/1", headers={"X-Request-ID": "bad id\twith spaces"})
        made_id = made.headers["x-request-id"]
        assert made_id != "bad id\twith spaces"
        assert len(made_id) == 32
        assert _problem(made, 500, "internal-error")["request_id"] == made_id

    about_first = [line for line in captured.lines if "req-0042" in line]
    assert len(about_first) == 1, about_first
    record = json.loads(about_first[0])
    assert len(about_first[0]) < 20_000, f"a log record of {len(about_first[0])} characters"
    assert record["level"] == "ERROR"
    assert record["request_id"] == "req-0042"
    assert record["http_method"] == "GET"
    assert record["http_route"] == "/boom/{depth}"  # the template, not the raw path
    assert MARKER in record["exc_info"]
    assert "RuntimeError" in record["exc_info"]
    assert sum(MARKER in line for line in captured.lines) == 2  # one per request


DRIVER_WORDS = ("Error(", "Exception", "KafkaConnectionError", "ConnectionRefused", "Errno")


@pytest.mark.parametrize(
    ("path", "sentence", "driver_error"),
    [
        ("/down/kafka", "Kafka is unreachable", "KafkaConnectionError"),
        ("/down/kafka-admin", "Kafka is unreachable", "KafkaConnectionError"),
        ("/down/postgres", "PostgreSQL is unreachable", "ConnectionRefusedError"),
    ],
)
async def test_a_dependency_down_is_a_plain_sentence_and_the_log_keeps_the_cause(
    service_settings: ServiceSettings,
    logs: list[_Formatted],
    path: str,
    sentence: str,
    driver_error: str,
) -> None:
    app = _app(service_settings)
    captured = _capture(logs)
    async with running(app) as client:
        response = await client.get(path)
    body = _problem(response, 503, "unavailable")
    assert "retry-after" in response.headers
    assert body["detail"].startswith(sentence), body["detail"]
    for word in DRIVER_WORDS:
        assert word not in body["detail"], body["detail"]
    assert any(driver_error in line for line in captured.lines), captured.lines


class _CountingPool:
    """The service's pool, counting the API key lookups that reach it."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.key_lookups = 0

    async def fetchrow(self, query: str, *args: object) -> Any:
        if query == SELECT_KEY:
            self.key_lookups += 1
        return await self._pool.fetchrow(query, *args)


async def test_failed_authentication_is_throttled_per_client_without_lookups(
    service_settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = service_settings.model_copy(
        update={"auth": AuthSettings(max_failures=5, failure_interval_s=30)}
    )
    app = _app(settings)
    async with running(app) as client:
        runtime = app.state.runtime
        good = generate_key()
        await save_key(
            runtime.pool,
            key_id=good.key_id,
            org_id="org-good",
            scopes=["read"],
            secret_hash=good.secret_hash,
        )
        counting = _CountingPool(runtime.pool)
        monkeypatch.setattr(runtime.keys, "_pool", counting)

        def from_address(host: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(host, 40_000))
            return httpx.AsyncClient(transport=transport, base_url="http://test")

        async with from_address("127.0.0.2") as guesser, from_address("127.0.0.3") as other:
            for _ in range(5):
                wrong = {"Authorization": f"Bearer {generate_key().token}"}
                _problem(await guesser.get("/whoami", headers=wrong), 401, "invalid-api-key")
            assert counting.key_lookups == 5

            for _ in range(100):
                wrong = {"Authorization": f"Bearer {generate_key().token}"}
                refused = await guesser.get("/whoami", headers=wrong)
                body = _problem(refused, 429, "too-many-failed-authentications")
                assert 1 <= int(refused.headers["retry-after"]) <= 30
                assert body["request_id"] == refused.headers["x-request-id"]
            assert counting.key_lookups == 5, "a throttled client must cost no lookup"

            # Refused before any comparison: a throttled client learns nothing,
            # not even from a good key.
            good_headers = {"X-API-Key": good.token}
            _problem(
                await guesser.get("/whoami", headers=good_headers),
                429,
                "too-many-failed-authentications",
            )

            ok = await other.get("/whoami", headers=good_headers)
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"org_id": "org-good"}
            assert (await client.get("/whoami", headers=good_headers)).status_code == 200
