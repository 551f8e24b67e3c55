"""The ledger over HTTP: anyone fetches the signed checkpoints and verifies
them with the published keys; the operator asks the service to verify the
chain, or one agreement's rows, and hears of the first break."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI

from datapolis_consent.app import create_app
from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger import append
from datapolis_consent.ledger.jws import KeyRingSigner
from datapolis_consent.ledger.publish import checkpoint_if_moved
from datapolis_consent.settings import ConsentSettings
from datapolis_shared.kafka import Producer
from datapolis_shared.postgres.migrate import service_migrations
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import DEV_OPERATOR_KEY, ServiceSettings
from tests.apps import running
from tests.integration.ingest.conftest import issue_key
from tests.kafka_util import eventually

pytestmark = pytest.mark.integration

OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}


@dataclass
class Consent:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def pool(self) -> Pool:
        pool: Pool = self.app.state.runtime.pool
        return pool

    async def record(self, entity_id: str, change: str = "requested") -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await append(
                conn,
                entity_kind="agreement",
                entity_id=entity_id,
                change=change,
                payload={"dataset": "ds-meters"},
                actor="org:consumer",
            )

    async def checkpoint(self) -> None:
        keys: KeyRing = self.app.state.receipt_keys
        async with self.pool.acquire() as conn:
            assert await checkpoint_if_moved(conn, KeyRingSigner(keys)) is not None


@pytest.fixture
async def consent(service_settings: ServiceSettings) -> AsyncIterator[Consent]:
    app = create_app(ConsentSettings(**dict(service_settings)))
    async with running(app, migrations=service_migrations("datapolis_consent")) as client:
        yield Consent(app, client)


async def test_checkpoints_are_public_and_verify_with_the_published_keys(
    consent: Consent,
) -> None:
    client = consent.client
    none_yet = await client.get("/ledger/checkpoints/latest")
    assert none_yet.status_code == 404
    assert none_yet.headers["content-type"] == "application/problem+json"
    assert none_yet.json()["code"] == "no-checkpoint-yet"
    assert (await client.get("/ledger/checkpoints")).json() == {"items": [], "next_after": None}

    for i in range(3):
        await consent.record(f"agr-{i}")
    await consent.checkpoint()
    await consent.record("agr-0", "granted")
    await consent.checkpoint()

    # No key, or a key that is not one: the checkpoints are for anyone.
    for headers in ({}, {"Authorization": "Bearer dpk_not_a_key"}):
        latest = await client.get("/ledger/checkpoints/latest", headers=headers)
        assert latest.status_code == 200, latest.text
    body = latest.json()
    assert body["sequence"] == 4

    # Verified by a JOSE library other than the one that signed it.
    published = pyjwt.PyJWKSet.from_dict((await client.get("/.well-known/jwks.json")).json())
    kid = pyjwt.get_unverified_header(body["token"])["kid"]
    key = next(k for k in published.keys if k.key_id == kid)
    verified = pyjwt.api_jws.PyJWS().decode_complete(body["token"], key.key, algorithms=["EdDSA"])
    claims = json.loads(verified["payload"])
    assert claims["type"] == "datapolis.consent.ledger.checkpoint"
    assert (claims["sequence"], claims["hash"]) == (4, body["hash"])
    tampered = body["token"][:-4] + ("AAAA" if not body["token"].endswith("AAAA") else "BBBB")
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.api_jws.PyJWS().decode_complete(tampered, key.key, algorithms=["EdDSA"])

    first = await client.get("/ledger/checkpoints", params={"limit": 1})
    assert first.status_code == 200
    page = first.json()
    assert [c["sequence"] for c in page["items"]] == [3]
    rest = await client.get("/ledger/checkpoints", params={"after": page["next_after"], "limit": 1})
    assert [c["sequence"] for c in rest.json()["items"]] == [4]
    assert rest.json()["next_after"] is None
    bad = await client.get("/ledger/checkpoints", params={"limit": 0})
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation-failed"


async def _verify(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post("/ledger/verify", json=body, headers=OPERATOR)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_verify_answers_intact_then_names_the_row_altered_in_postgresql(
    consent: Consent, database_url: str
) -> None:
    client = consent.client
    for i in range(4):
        await consent.record(f"agr-{i % 2}")
    await consent.checkpoint()
    token = (await client.get("/ledger/checkpoints/latest")).json()["token"]

    whole = await _verify(client, {"checkpoints": [token]})
    assert whole["ok"] is True
    assert (whole["rows"], whole["broken"], whole["append_only_enforced"]) == (4, None, True)
    assert whole["checkpoints_matched"] == 2  # the stored one and the one brought
    one = await _verify(client, {"agreement_id": "agr-1"})
    assert one["ok"] is True

    # The tables' owner switches the guard off and edits row 2.
    schema = consent.app.state.settings.postgres.db_schema
    owner = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        async with owner.transaction():
            await owner.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
            await owner.execute("UPDATE ledger SET actor = 'org:someone-else' WHERE sequence = 2")
            await owner.execute("ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_append_only")
    finally:
        await owner.close()

    whole = await _verify(client, {})
    assert whole["ok"] is False
    assert whole["broken"]["sequence"] == 2
    assert whole["broken"]["kind"] == "altered"
    assert whole["last_sequence"] == 1
    one = await _verify(client, {"agreement_id": "agr-1"})
    assert (one["ok"], one["broken"]["sequence"], one["broken"]["kind"]) == (False, 2, "altered")
    # agr-0's own rows (1 and 3) sit on row 2's link, which no longer holds.
    assert (await _verify(client, {"agreement_id": "agr-0"}))["ok"] is False

    forged = await _verify(client, {"checkpoints": ["e30.e30.AAAA"]})
    assert (forged["ok"], forged["broken"]["kind"]) == (False, "checkpoint_invalid")


async def test_verify_is_the_operators_and_refuses_bad_input(
    consent: Consent, producer: Producer
) -> None:
    client = consent.client
    await consent.record("agr-0")
    unknown = await client.post(
        "/ledger/verify", json={"agreement_id": "agr-nobody"}, headers=OPERATOR
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not-in-ledger"
    for body in (
        {"agreement_id": "agr-0", "consent_id": "con-0"},
        {"agreement_id": ""},
        {"unknown": 1},
        {"checkpoints": "not-a-list"},
    ):
        refused = await client.post("/ledger/verify", json=body, headers=OPERATOR)
        assert refused.status_code == 422, body
        assert refused.json()["code"] == "validation-failed"

    assert (await client.post("/ledger/verify", json={})).status_code == 401
    org = await issue_key(producer, f"org-{uuid.uuid4().hex[:8]}", ["read"])
    keys = consent.app.state.runtime.keys

    async def known() -> bool:
        try:
            await keys.resolve(org.token)
        except Exception:
            return False
        return True

    await eventually(known, timeout_s=60)
    forbidden = await client.post("/ledger/verify", json={}, headers=org.headers)
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "operator-only"
    assert "head" not in forbidden.json()
