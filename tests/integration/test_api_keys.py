"""API keys on a real service: no key, a wrong key, a revoked key and a key
without the scope each get their own 401/403 problem; keys issued and revoked
by catalog reach every service through datapolis.catalog.events."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import APIRouter, Depends

from datapolis_shared.auth import Principal, generate_key, revoke_key, save_key
from datapolis_shared.events.catalog import ApiKeyIssued, ApiKeyRevoked
from datapolis_shared.http.app import Caller, create_service_app, require_scope
from datapolis_shared.kafka import Producer
from datapolis_shared.settings import DEV_OPERATOR_KEY, ServiceSettings
from tests.apps import running
from tests.kafka_util import eventually

router = APIRouter()


@router.get("/whoami")
async def whoami(caller: Caller) -> dict[str, object]:
    return {"org_id": caller.org_id, "scopes": sorted(caller.scopes)}


@router.post("/records")
async def push(caller: Principal = Depends(require_scope("ingest"))) -> dict[str, str]:  # noqa: B008
    return {"pushed_by": caller.org_id}


@pytest.fixture
def app_settings(service_settings: ServiceSettings) -> ServiceSettings:
    return service_settings


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_keys_none_wrong_revoked_and_wrong_scope(app_settings: ServiceSettings) -> None:
    app = create_service_app(app_settings, title="t", description="t", routers=[router])
    async with running(app) as client:
        pool = app.state.runtime.pool
        reader, producer_key = generate_key(), generate_key()
        await save_key(
            pool,
            key_id=reader.key_id,
            org_id="org-a",
            scopes=["read"],
            secret_hash=reader.secret_hash,
        )
        await save_key(
            pool,
            key_id=producer_key.key_id,
            org_id="org-b",
            scopes=["ingest"],
            secret_hash=producer_key.secret_hash,
        )

        missing = await client.get("/whoami")
        _problem(missing, 401, "missing-api-key")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        _problem(
            await client.get("/whoami", headers={"Authorization": "Bearer dpk_nope_nope"}),
            401,
            "invalid-api-key",
        )
        # Right id, wrong secret.
        forged = f"dpk_{reader.key_id}_{'A' * 43}"
        _problem(await client.get("/whoami", headers={"X-API-Key": forged}), 401, "invalid-api-key")

        ok = await client.get("/whoami", headers={"Authorization": f"Bearer {reader.token}"})
        assert ok.json() == {"org_id": "org-a", "scopes": ["read"]}
        _problem(
            await client.post("/records", headers={"X-API-Key": reader.token}), 403, "missing-scope"
        )
        pushed = await client.post("/records", headers={"X-API-Key": producer_key.token})
        assert pushed.json() == {"pushed_by": "org-b"}
        operator = await client.post("/records", headers={"X-API-Key": DEV_OPERATOR_KEY})
        assert operator.json() == {"pushed_by": "operator"}

        await revoke_key(pool, producer_key.key_id, datetime.now(UTC))
        await asyncio.sleep(1.1)  # the positive cache holds a key for 1 s
        _problem(
            await client.post("/records", headers={"X-API-Key": producer_key.token}),
            401,
            "revoked-api-key",
        )


async def test_keys_follow_catalog_events(
    app_settings: ServiceSettings, producer: Producer
) -> None:
    app = create_service_app(app_settings, title="t", description="t", routers=[router])
    key = generate_key()
    async with running(app) as client:
        headers = {"X-API-Key": key.token}
        _problem(await client.get("/whoami", headers=headers), 401, "invalid-api-key")
        await producer.send_event(
            ApiKeyIssued(
                key_id=key.key_id,
                org_id="org-events",
                scopes=["read", "ingest"],
                secret_hash=key.secret_hash,
                issued_at=datetime.now(UTC),
            )
        )

        async def works() -> bool:
            return (await client.get("/whoami", headers=headers)).status_code == 200

        await eventually(works, timeout_s=15)

        await producer.send_event(
            ApiKeyRevoked(key_id=key.key_id, org_id="org-events", revoked_at=datetime.now(UTC))
        )
        revoked_at = time.monotonic()

        async def refused() -> bool:
            return (await client.get("/whoami", headers=headers)).status_code == 401

        await eventually(refused, timeout_s=10)
        assert time.monotonic() - revoked_at < 5, "a revoked key must stop working within 5 s"
