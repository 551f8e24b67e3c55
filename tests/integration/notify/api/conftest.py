"""A notify app on the test's schema, organisations with keys, and notify's
projection rows (datasets, agreements) and the worker's rows (deliveries,
queue, health) written directly: the parts that fill them in production
(the entitlement feed, the delivery worker) are not under test here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from datapolis_notify.app import create_app
from datapolis_notify.settings import NotifySettings
from datapolis_shared.auth import generate_key, save_key
from datapolis_shared.postgres.migrate import service_migrations
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import DEV_OPERATOR_KEY, ServiceSettings
from tests.apps import running

PROBLEM = "application/problem+json"
OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}


@dataclass(frozen=True)
class Org:
    org_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Notify:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def pool(self) -> Pool:
        pool: Pool = self.app.state.runtime.pool
        return pool

    async def org(self, prefix: str = "org", scopes: Sequence[str] = ("read", "subscribe")) -> Org:
        """An organisation with a key, saved as the key sync would."""
        key = generate_key()
        org_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        await save_key(
            self.pool, key_id=key.key_id, org_id=org_id, scopes=list(scopes),
            secret_hash=key.secret_hash,
        )  # fmt: skip
        return Org(org_id, key.token)

    async def dataset(
        self,
        publisher: Org,
        *,
        access_level: str = "shared",
        fields: Sequence[str] = ("meter_id", "kwh", "district", "household"),
        retired: bool = False,
    ) -> tuple[str, str]:
        dataset_id = f"ds-{uuid.uuid4().hex[:12]}"
        slug = f"meters-{uuid.uuid4().hex[:8]}"
        await self.pool.execute(
            """INSERT INTO datasets (dataset_id, slug, publisher_id, access_level, topic_name,
                   key_field, subject_field, theme, schema_version, fields, retired_at)
               VALUES ($1, $2, $3, $4, $5, 'meter_id', $6, 'energy', 1, $7, $8)""",
            dataset_id, slug, publisher.org_id, access_level, f"data.{slug}",
            "household" if access_level == "personal" else None, list(fields),
            datetime.now(UTC) if retired else None,
        )  # fmt: skip
        return dataset_id, slug

    async def agreement(
        self,
        dataset_id: str,
        publisher: Org,
        consumer: Org,
        *,
        status: str = "granted",
        purposes: Sequence[str] = ("dpv:ScientificResearch",),
        fields: Sequence[str] = ("meter_id", "kwh", "district"),
        valid_until: datetime | None = None,
    ) -> str:
        agreement_id = str(uuid.uuid4())
        await self.pool.execute(
            """INSERT INTO agreements (agreement_id, dataset_id, publisher_id, consumer_id,
                   status, purposes, fields, valid_from, valid_until, ledger_sequence)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)""",
            agreement_id, dataset_id, publisher.org_id, consumer.org_id, status,
            list(purposes), list(fields), datetime.now(UTC) - timedelta(days=1),
            valid_until or datetime.now(UTC) + timedelta(days=30),
        )  # fmt: skip
        return agreement_id

    async def delivery(
        self,
        subscription: dict[str, Any],
        *,
        publisher: Org | None = None,
        status: str = "delivered",
        dead: bool = False,
        created_at: datetime | None = None,
        agreement_ids: Sequence[str] = (),
        consent_ids: Sequence[str] = (),
    ) -> str:
        """A delivery as the worker logs it; ``dead``: left dead in the queue."""
        delivery_id = f"msg_{uuid.uuid4().hex}"
        await self.pool.execute(
            """INSERT INTO deliveries (delivery_id, subscription_id, consumer_id, publisher_id,
                   dataset_id, channel, kind, record_count, agreement_ids, consent_ids, status,
                   attempts, last_error, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, 'records', 3, $7, $8, $9, $10, $11, $12)""",
            delivery_id, subscription["subscription_id"], subscription["consumer_id"],
            publisher.org_id if publisher else None, subscription["dataset_id"],
            subscription["channel"], list(agreement_ids), list(consent_ids),
            "dead" if dead else status, 8 if dead else 1,
            "connection refused" if dead else None, created_at or datetime.now(UTC),
        )  # fmt: skip
        if dead or status == "pending":
            await self.pool.execute(
                """INSERT INTO delivery_queue (delivery_id, subscription_id, keys, payload,
                       attempt, state, dead_at, next_attempt_at)
                   VALUES ($1, $2, '{m-1}', $3::jsonb, $4, $5, $6, now() + interval '1 hour')""",
                delivery_id, subscription["subscription_id"],
                orjson.dumps([{"key": "m-1", "value": {"kwh": 1}}]).decode(),
                8 if dead else 1, "dead" if dead else "waiting",
                (created_at or datetime.now(UTC)) if dead else None,
            )  # fmt: skip
        return delivery_id


@pytest.fixture
async def notify(service_settings: ServiceSettings) -> AsyncIterator[Notify]:
    app = create_app(NotifySettings(**dict(service_settings)))
    async with running(app, migrations=service_migrations("datapolis_notify")) as client:
        yield Notify(app, client)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body
