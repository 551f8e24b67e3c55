"""Sharing agreements against the real broker and database: the life cycle,
its events in order with their ledger rows, receipts, authorisation, expiry,
and revocation while Kafka is down."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import orjson

from datapolis_consent.ledger import verify_chain
from datapolis_shared.events.base import CATALOG_EVENTS, CONSENT_EVENTS
from datapolis_shared.events.catalog import DatasetRetired
from datapolis_shared.kafka import Producer, control_topic_specs, ensure_topics
from datapolis_shared.settings import DEV_OPERATOR_KEY, KafkaSettings
from tests.conftest import PrivateKafka
from tests.integration.consent.conftest import (
    SETUP_WAIT_S,
    CatalogTopic,
    Consent,
    ConsentFactory,
)
from tests.integration.ingest.conftest import Publisher, issue_key
from tests.kafka_util import TopicTail, eventually

PROBLEM = "application/problem+json"


@dataclass
class Parties:
    consent: Consent
    catalog: CatalogTopic
    publisher: Publisher
    consumer: Publisher
    stranger: Publisher


async def _until_keys_work(consent: Consent, *who: Publisher) -> None:
    async def works() -> bool:
        keys = consent.app.state.runtime.keys
        if keys is None:
            return False
        try:
            for party in who:
                await keys.resolve(party.token)
        except Exception:
            return False
        return True

    await eventually(works, timeout_s=SETUP_WAIT_S)


async def _parties(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer, **settings: Any
) -> Parties:
    consent = await start_consent(catalog_topic.name, **settings)
    scopes = ["consent", "read"]
    publisher = await issue_key(producer, f"org-pub-{uuid.uuid4().hex[:8]}", scopes)
    consumer = await issue_key(producer, f"org-con-{uuid.uuid4().hex[:8]}", scopes)
    stranger = await issue_key(producer, f"org-other-{uuid.uuid4().hex[:8]}", scopes)
    await _until_keys_work(consent, publisher, consumer, stranger)
    return Parties(consent, catalog_topic, publisher, consumer, stranger)


async def _dataset(parties: Parties, access_level: Any = "shared") -> str:
    registered = await parties.catalog.register(
        access_level=access_level, publisher_id=parties.publisher.org_id
    )
    await parties.consent.until_known(registered.dataset_id, version=1)
    return registered.dataset_id


def _request(dataset: str, **changes: Any) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "project": {"name": "Heat map", "description": "Where energy is used, street by street"},
        "purposes": ["dpv:ScientificResearch", "dpv:ProvideOfficialStatistics"],
        "fields": ["meter_id", "kwh", "address.city"],
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        **changes,
    }


async def _requested(parties: Parties, dataset: str, **changes: Any) -> dict[str, Any]:
    response = await parties.consent.client.post(
        "/agreements", json=_request(dataset, **changes), headers=parties.consumer.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "requested"
    return body


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


async def _events_of(tail: TopicTail, agreement_id: str, expect: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        found.clear()
        for record in await tail.read():
            if record.key == agreement_id.encode():
                found.append(orjson.loads(record.value))
        return len(found) >= expect

    await eventually(arrived, timeout_s=SETUP_WAIT_S)
    return found


def _verify_receipt(receipt: str, jwks: dict[str, Any]) -> dict[str, Any]:
    # PyJWT, another JOSE library than the one that signs receipts.
    key_set = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(receipt)["kid"]
    key = next(k for k in key_set.keys if k.key_id == kid)
    payload: dict[str, Any] = orjson.loads(
        jwt.api_jws.PyJWS().decode(receipt, key.key, algorithms=["EdDSA"])
    )
    return payload


async def test_request_grant_amend_revoke_one_event_per_change_in_order_on_the_ledger(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    kafka_settings: KafkaSettings,
) -> None:
    parties = await _parties(start_consent, catalog_topic, producer)
    client = parties.consent.client
    dataset = await _dataset(parties)
    tail = await TopicTail.at_end(kafka_settings.bootstrap_servers, CONSENT_EVENTS)

    agreement = await _requested(parties, dataset)
    aid = agreement["agreement_id"]
    assert agreement["publisher_org_id"] == parties.publisher.org_id
    assert agreement["consumer_org_id"] == parties.consumer.org_id

    granted = await client.post(
        f"/agreements/{aid}/grant",
        json={"fields": ["meter_id", "kwh"]},
        headers=parties.publisher.headers,
    )
    assert granted.status_code == 200, granted.text
    assert granted.json()["agreement"]["status"] == "granted"
    assert granted.json()["agreement"]["granted_fields"] == ["meter_id", "kwh"]

    new_end = datetime.now(UTC) + timedelta(days=7)
    amended = await client.post(
        f"/agreements/{aid}/amend",
        json={"fields": ["kwh"], "valid_until": new_end.isoformat()},
        headers=parties.publisher.headers,
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["agreement"]["granted_fields"] == ["kwh"]

    revoked = await client.post(
        f"/agreements/{aid}/revoke",
        json={"reason": "the project ended early"},
        headers=parties.publisher.headers,
    )
    assert revoked.status_code == 200, revoked.text
    answer = revoked.json()
    assert answer["agreement"]["status"] == "revoked"
    assert answer["agreement"]["reason"] == "the project ended early"
    assert answer["deliveries_stop_within_s"] == 1.0

    # Answered only once Kafka acknowledged the revocation: its event is
    # already in the outbox as published.
    published = await parties.consent.pool.fetchval(
        "SELECT bool_and(published_at IS NOT NULL) FROM outbox WHERE key = $1", aid.encode()
    )
    assert published

    events = await _events_of(tail, aid, expect=4)
    types = [e["type"] for e in events]
    assert types == [
        "org.datapolis.consent.agreement.requested.v1",
        "org.datapolis.consent.agreement.granted.v1",
        "org.datapolis.consent.agreement.amended.v1",
        "org.datapolis.consent.agreement.revoked.v1",
    ]
    rows = await parties.consent.pool.fetch(
        "SELECT sequence, change, hash FROM ledger WHERE entity_id = $1 ORDER BY sequence", aid
    )
    assert [r["change"] for r in rows] == ["requested", "granted", "amended", "revoked"]
    assert [(e["data"]["ledger_sequence"], e["data"]["ledger_hash"]) for e in events] == [
        (r["sequence"], r["hash"]) for r in rows
    ]
    assert events[2]["data"]["fields"] == ["kwh"]

    async with parties.consent.pool.acquire() as conn:
        verification = await verify_chain(conn)
    assert verification.ok, verification

    # Each receipt verifies with the published key and names its ledger row.
    jwks = (await client.get("/.well-known/jwks.json")).json()
    for response, change, row in zip(
        (granted, amended, revoked), ("granted", "amended", "revoked"), rows[1:], strict=True
    ):
        receipt = _verify_receipt(response.json()["receipt"], jwks)
        assert receipt["event"]["type"] == change
        assert receipt["event"]["ledger_sequence"] == row["sequence"]
        assert receipt["event"]["ledger_hash"] == row["hash"]
        assert receipt["parties"]["controller"]["id"] == parties.publisher.org_id
        assert receipt["parties"]["consumer"]["id"] == parties.consumer.org_id
        assert receipt["header"]["record_id"] == aid
    tampered = granted.json()["receipt"].split(".")
    tampered[1] = tampered[1][:-4] + ("AAAA" if not tampered[1].endswith("AAAA") else "BBBB")
    try:
        _verify_receipt(".".join(tampered), jwks)
    except jwt.exceptions.InvalidSignatureError:
        pass
    except jwt.exceptions.DecodeError:
        pass
    else:
        raise AssertionError("a tampered receipt verified")

    # Revoked is final.
    again = await client.post(
        f"/agreements/{aid}/amend", json={"fields": ["kwh"]}, headers=parties.publisher.headers
    )
    _problem(again, 409, "agreement-not-active")


async def test_bad_requests_get_a_problem_with_a_stable_code(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer
) -> None:
    parties = await _parties(start_consent, catalog_topic, producer)
    client = parties.consent.client
    shared = await _dataset(parties)
    open_dataset = await _dataset(parties, "open")
    headers = parties.consumer.headers

    _problem(
        await client.post("/agreements", json=_request(open_dataset), headers=headers),
        409,
        "dataset-is-open",
    )
    unknown = await client.post(
        "/agreements", json=_request(shared, fields=["kwh", "salary"]), headers=headers
    )
    _problem(unknown, 422, "unknown-fields")
    assert unknown.json()["fields"] == ["salary"]
    _problem(
        await client.post(
            "/agreements", json=_request(shared, purposes=["dpv:Gossip"]), headers=headers
        ),
        422,
        "unknown-purposes",
    )
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    _problem(
        await client.post("/agreements", json=_request(shared, valid_until=past), headers=headers),
        422,
        "invalid-period",
    )
    _problem(
        await client.post("/agreements", json=_request("no-such-dataset"), headers=headers),
        404,
        "dataset-not-found",
    )
    _problem(
        await client.post("/agreements", json=_request(shared), headers=parties.publisher.headers),
        422,
        "own-dataset",
    )

    agreement = await _requested(parties, shared)
    aid = agreement["agreement_id"]
    # A refusal needs a reason.
    no_reason = await client.post(
        f"/agreements/{aid}/refuse", json={}, headers=parties.publisher.headers
    )
    assert no_reason.status_code == 422, no_reason.text
    assert no_reason.headers["content-type"] == PROBLEM
    empty = await client.post(
        f"/agreements/{aid}/refuse", json={"reason": ""}, headers=parties.publisher.headers
    )
    assert empty.status_code == 422, empty.text
    # A grant may only narrow the request.
    _problem(
        await client.post(
            f"/agreements/{aid}/grant",
            json={"fields": ["household"]},
            headers=parties.publisher.headers,
        ),
        422,
        "fields-not-requested",
    )
    refused = await client.post(
        f"/agreements/{aid}/refuse",
        json={"reason": "household-level data is not shared"},
        headers=parties.publisher.headers,
    )
    assert refused.status_code == 200, refused.text
    assert refused.json()["agreement"]["status"] == "refused"
    assert refused.json()["agreement"]["reason"] == "household-level data is not shared"
    _problem(
        await client.post(f"/agreements/{aid}/grant", json={}, headers=parties.publisher.headers),
        409,
        "agreement-not-pending",
    )


async def test_no_one_but_the_parties_sees_or_changes_an_agreement(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer
) -> None:
    parties = await _parties(start_consent, catalog_topic, producer)
    client = parties.consent.client
    dataset = await _dataset(parties)
    agreement = await _requested(parties, dataset)
    aid = agreement["agreement_id"]
    stranger = parties.stranger.headers

    _problem(await client.get(f"/agreements/{aid}", headers=stranger), 404, "agreement-not-found")
    listed = await client.get("/agreements", headers=stranger)
    assert listed.status_code == 200
    assert listed.json() == []
    for action, body in (
        ("grant", {}),
        ("refuse", {"reason": "no"}),
        ("amend", {"fields": ["kwh"]}),
        ("revoke", {"reason": "no"}),
        ("terminate", {}),
    ):
        response = await client.post(f"/agreements/{aid}/{action}", json=body, headers=stranger)
        _problem(response, 404, "agreement-not-found")
        assert aid not in response.text or "no agreement" in response.json()["detail"]

    # The consumer cannot decide on its own request; the publisher cannot terminate.
    _problem(
        await client.post(f"/agreements/{aid}/grant", json={}, headers=parties.consumer.headers),
        403,
        "not-the-publisher",
    )
    granted = await client.post(
        f"/agreements/{aid}/grant", json={}, headers=parties.publisher.headers
    )
    assert granted.status_code == 200, granted.text
    _problem(
        await client.post(
            f"/agreements/{aid}/terminate", json={}, headers=parties.publisher.headers
        ),
        403,
        "not-the-consumer",
    )

    # Both parties see it, each in their list.
    for party in (parties.consumer, parties.publisher):
        mine = await client.get("/agreements", headers=party.headers)
        assert [a["agreement_id"] for a in mine.json()] == [aid]
        assert (await client.get(f"/agreements/{aid}", headers=party.headers)).status_code == 200

    # The operator sees every agreement but decides none.
    operator = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}
    everything = await client.get("/agreements", headers=operator)
    assert aid in [a["agreement_id"] for a in everything.json()]
    assert (await client.get(f"/agreements/{aid}", headers=operator)).status_code == 200
    _problem(
        await client.post(f"/agreements/{aid}/revoke", json={"reason": "x"}, headers=operator),
        403,
        "not-the-publisher",
    )

    terminated = await client.post(
        f"/agreements/{aid}/terminate",
        json={"reason": "we have what we need"},
        headers=parties.consumer.headers,
    )
    assert terminated.status_code == 200, terminated.text
    assert terminated.json()["agreement"]["status"] == "terminated"
    assert terminated.json()["receipt"] is None
    assert terminated.json()["deliveries_stop_within_s"] == 1.0
    # The consumer's retry (a lost answer) gets the same answer; another
    # reason is a conflict.
    again = await client.post(
        f"/agreements/{aid}/terminate",
        json={"reason": "we have what we need"},
        headers=parties.consumer.headers,
    )
    assert again.status_code == 200, again.text
    assert again.json() == terminated.json()
    _problem(
        await client.post(
            f"/agreements/{aid}/terminate", json={}, headers=parties.consumer.headers
        ),
        409,
        "agreement-not-active",
    )
    _problem(
        await client.post(
            f"/agreements/{aid}/revoke", json={"reason": "x"}, headers=parties.publisher.headers
        ),
        409,
        "agreement-not-active",
    )


async def test_an_agreement_expires_within_5_s_of_the_end_of_its_period(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    kafka_settings: KafkaSettings,
) -> None:
    parties = await _parties(start_consent, catalog_topic, producer)
    client = parties.consent.client
    dataset = await _dataset(parties)
    tail = await TopicTail.at_end(kafka_settings.bootstrap_servers, CONSENT_EVENTS)
    end = datetime.now(UTC) + timedelta(seconds=3)
    agreement = await _requested(parties, dataset, valid_until=end.isoformat())
    aid = agreement["agreement_id"]
    # Without a body: granted as requested.
    granted = await client.post(f"/agreements/{aid}/grant", headers=parties.publisher.headers)
    assert granted.status_code == 200, granted.text
    assert granted.json()["agreement"]["granted_fields"] == agreement["requested_fields"]

    events = await _events_of(tail, aid, expect=3)
    expired = events[2]
    assert expired["type"] == "org.datapolis.consent.agreement.expired.v1"
    took = datetime.fromisoformat(expired["data"]["occurred_at"]) - end
    assert timedelta(0) <= took <= timedelta(seconds=5), took
    current = await client.get(f"/agreements/{aid}", headers=parties.consumer.headers)
    assert current.json()["status"] == "expired"
    # Exactly one expiry recorded.
    changes = await parties.consent.pool.fetch(
        "SELECT change FROM ledger WHERE entity_id = $1 ORDER BY sequence", aid
    )
    assert [r["change"] for r in changes] == ["requested", "granted", "expired"]


async def test_a_retired_dataset_ends_its_agreements(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer
) -> None:
    consent_hooked = await _parties(start_consent, catalog_topic, producer)
    client = consent_hooked.consent.client
    dataset = await _dataset(consent_hooked)
    granted_one = await _requested(consent_hooked, dataset)
    pending = await _requested(consent_hooked, dataset)
    response = await client.post(
        f"/agreements/{granted_one['agreement_id']}/grant",
        json={},
        headers=consent_hooked.publisher.headers,
    )
    assert response.status_code == 200, response.text
    await catalog_topic.send(DatasetRetired(dataset_id=dataset, slug="retired"))

    async def ended() -> bool:
        rows = await consent_hooked.consent.pool.fetch(
            "SELECT agreement_id, status FROM agreements WHERE dataset_id = $1", dataset
        )
        return {r["agreement_id"]: r["status"] for r in rows} == {
            granted_one["agreement_id"]: "terminated",
            pending["agreement_id"]: "refused",
        }

    await eventually(ended, timeout_s=SETUP_WAIT_S)
    # Terminated by the retirement, not by the consumer: its termination,
    # even with the same reason, is a conflict rather than a repeat.
    ended_one = await client.get(
        f"/agreements/{granted_one['agreement_id']}", headers=consent_hooked.consumer.headers
    )
    _problem(
        await client.post(
            f"/agreements/{granted_one['agreement_id']}/terminate",
            json={"reason": ended_one.json()["reason"]},
            headers=consent_hooked.consumer.headers,
        ),
        409,
        "agreement-not-active",
    )


async def test_revoke_is_not_a_2xx_while_kafka_is_down_and_is_published_later(
    private_kafka: PrivateKafka, start_consent: ConsentFactory
) -> None:
    kafka = KafkaSettings(bootstrap_servers=private_kafka.bootstrap, delivery_timeout_s=3)
    await ensure_topics(kafka, control_topic_specs())
    catalog_producer = Producer(kafka, client_id="test-catalog")
    await catalog_producer.start()
    try:
        catalog_topic = CatalogTopic(CATALOG_EVENTS, catalog_producer)
        parties = await _parties(
            start_consent, catalog_topic, catalog_producer, kafka=kafka, publish_wait_s=2
        )
        dataset = await _dataset(parties)
        agreement = await _requested(parties, dataset)
    finally:
        await catalog_producer.stop()
    aid = agreement["agreement_id"]
    client = parties.consent.client
    granted = await client.post(
        f"/agreements/{aid}/grant", json={}, headers=parties.publisher.headers
    )
    assert granted.status_code == 200, granted.text

    async def backlog_empty() -> bool:
        count = await parties.consent.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        return bool(count == 0)

    await eventually(backlog_empty, timeout_s=SETUP_WAIT_S)

    await private_kafka.stop()
    revoked = await client.post(
        f"/agreements/{aid}/revoke",
        json={"reason": "breach of terms"},
        headers=parties.publisher.headers,
    )
    _problem(revoked, 503, "event-not-acknowledged")
    assert revoked.headers["retry-after"].isdigit()
    # Committed, waiting in the outbox: never committed and lost.
    row = await parties.consent.pool.fetchrow(
        "SELECT status FROM agreements WHERE agreement_id = $1", aid
    )
    assert row is not None
    assert row["status"] == "revoked"
    assert not await backlog_empty()
    # The publisher retries while Kafka is still down: the same answer, not
    # "already revoked", and no second revocation on the ledger.
    retried = await client.post(
        f"/agreements/{aid}/revoke",
        json={"reason": "breach of terms"},
        headers=parties.publisher.headers,
    )
    _problem(retried, 503, "event-not-acknowledged")

    await private_kafka.start()
    await eventually(backlog_empty, timeout_s=SETUP_WAIT_S)
    # Once the event is on Kafka, the retry gets the first call's success.
    after = await client.post(
        f"/agreements/{aid}/revoke",
        json={"reason": "breach of terms"},
        headers=parties.publisher.headers,
    )
    assert after.status_code == 200, after.text
    assert after.json()["agreement"]["status"] == "revoked"
    assert after.json()["deliveries_stop_within_s"] == 1.0
    jwks = (await client.get("/.well-known/jwks.json")).json()
    receipt = _verify_receipt(after.json()["receipt"], jwks)
    assert receipt["event"]["type"] == "revoked"
    assert receipt["event"]["ledger_sequence"] == row_sequence(after.json())
    # Asked again, it is still the same answer: the revocation is recorded once.
    again = await client.post(
        f"/agreements/{aid}/revoke",
        json={"reason": "breach of terms"},
        headers=parties.publisher.headers,
    )
    assert again.status_code == 200, again.text
    assert again.json()["agreement"] == after.json()["agreement"]
    # A receipt of its own (its id), of the same ledger row.
    assert _verify_receipt(again.json()["receipt"], jwks)["event"] == receipt["event"]
    revocations = await parties.consent.pool.fetchval(
        "SELECT count(*) FROM ledger WHERE entity_id = $1 AND change = 'revoked'", aid
    )
    assert revocations == 1
    # Another reason is another revocation, which an ended agreement refuses.
    other = await client.post(
        f"/agreements/{aid}/revoke",
        json={"reason": "another reason"},
        headers=parties.publisher.headers,
    )
    _problem(other, 409, "agreement-not-active")


def row_sequence(outcome: dict[str, Any]) -> int:
    sequence: int = outcome["agreement"]["ledger_sequence"]
    return sequence
