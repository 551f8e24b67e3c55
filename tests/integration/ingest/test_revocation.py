"""A key revoked in catalog is refused by ingest within 5 s."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from datapolis_shared.events.catalog import ApiKeyRevoked
from datapolis_shared.kafka import Producer
from tests.integration.ingest.conftest import (
    DatasetFactory,
    Ingest,
    Publisher,
    reading,
    until_key_works,
    until_known,
)

REVOCATION_BOUND_S = 5.0


async def test_a_revoked_key_is_refused_within_five_seconds(
    ingest: Ingest, publisher: Publisher, register_dataset: DatasetFactory, producer: Producer
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await until_known(ingest, dataset.slug, version=1)
    await until_key_works(ingest, publisher)
    url = f"/datasets/{dataset.slug}/records"
    # The key is in use (and in the positive cache) when it is revoked.
    assert (await ingest.client.post(url, json=[reading(0)], headers=publisher.headers)).is_success

    revoked_at = time.monotonic()
    await producer.send_event(
        ApiKeyRevoked(
            key_id=publisher.key_id, org_id=publisher.org_id, revoked_at=datetime.now(UTC)
        )
    )
    while True:
        response = await ingest.client.post(url, json=[reading(1)], headers=publisher.headers)
        elapsed = time.monotonic() - revoked_at
        if response.status_code == 401:
            break
        assert response.status_code == 200, response.text
        assert elapsed < REVOCATION_BOUND_S, f"revoked key still accepted after {elapsed:.1f}s"
        await asyncio.sleep(0.05)
    assert response.json()["code"] == "revoked-api-key"
    assert elapsed < REVOCATION_BOUND_S
    print(f"revoked key refused after {elapsed:.2f}s")
