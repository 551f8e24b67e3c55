"""Data-subject consents against the real broker and database: grant and
withdraw with their events in order and their receipts, only within an
active agreement, seen only by their subject, expiry, export, and withdrawal
while Kafka is down."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from datapolis_consent.ledger import verify_chain
from datapolis_shared.events.base import CATALOG_EVENTS, CONSENT_EVENTS
from datapolis_shared.kafka import Producer, control_topic_specs, ensure_topics
from datapolis_shared.settings import KafkaSettings
from tests.conftest import PrivateKafka
from tests.integration.consent.conftest import (
    SETUP_WAIT_S,
    CatalogTopic,
    ConsentFactory,
)
from tests.integration.consent.test_agreements import (
    Parties,
    _dataset,
    _parties,
    _problem,
    _requested,
    _verify_receipt,
)
from tests.kafka_util import TopicTail, eventually

ISSUER = "https://city.example/subjects"
AUDIENCE = "https://consent.datapolis.example"
SIGNER = Ed25519PrivateKey.generate()
FOREIGN_SIGNER = Ed25519PrivateKey.generate()
ISSUER_SETTINGS = {
    "issuer": ISSUER,
    "audience": AUDIENCE,
    "jwks": {
        "keys": [
            {
                **json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(SIGNER.public_key())),
                "kid": "city-1",
            }
        ]
    },
}
PURPOSE = "dpv:ScientificResearch"


def _token(
    subject: str, dataset: str, *, signer: Ed25519PrivateKey = SIGNER, **claims: Any
) -> dict[str, str]:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "dataset": dataset,
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    token = jwt.encode(body, signer, algorithm="EdDSA", headers={"kid": "city-1"})
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Personal:
    parties: Parties
    dataset: str
    agreement_id: str


async def _personal(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    **settings: Any,
) -> Personal:
    parties = await _parties(
        start_consent,
        catalog_topic,
        producer,
        subject_token_issuers=[ISSUER_SETTINGS],
        **settings,
    )
    dataset = await _dataset(parties, access_level="personal")
    agreement = await _requested(parties, dataset)
    granted = await parties.consent.client.post(
        f"/agreements/{agreement['agreement_id']}/grant", headers=parties.publisher.headers
    )
    assert granted.status_code == 200, granted.text
    return Personal(parties, dataset, agreement["agreement_id"])


def _consent(personal: Personal, **changes: Any) -> dict[str, Any]:
    return {
        "dataset": personal.dataset,
        "consumer_org_id": personal.parties.consumer.org_id,
        "purpose": PURPOSE,
        "valid_until": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
        **changes,
    }


def _key(personal: Personal, subject: str) -> bytes:
    return f"{personal.dataset}/{subject}/{personal.parties.consumer.org_id}".encode()


async def _events_keyed(tail: TopicTail, key: bytes, expect: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        found.clear()
        found.extend(orjson.loads(r.value) for r in await tail.read() if r.key == key)
        return len(found) >= expect

    await eventually(arrived, timeout_s=SETUP_WAIT_S)
    return found


async def test_a_subject_grants_and_withdraws_with_one_event_each_in_order_and_receipts(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    kafka_settings: KafkaSettings,
) -> None:
    personal = await _personal(start_consent, catalog_topic, producer)
    client = personal.parties.consent.client
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    me = _token(subject, personal.dataset)
    tail = await TopicTail.at_end(kafka_settings.bootstrap_servers, CONSENT_EVENTS)

    granted = await client.post("/subjects/me/consents", json=_consent(personal), headers=me)
    assert granted.status_code == 201, granted.text
    consent = granted.json()["consent"]
    cid = consent["consent_id"]
    assert consent["status"] == "granted"
    assert consent["effective"] is True
    assert consent["agreement_id"] == personal.agreement_id

    listed = await client.get("/subjects/me/consents", headers=me)
    assert [c["consent_id"] for c in listed.json()] == [cid]

    withdrawn = await client.post(f"/subjects/me/consents/{cid}/withdraw", headers=me)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["consent"]["status"] == "withdrawn"
    assert withdrawn.json()["consent"]["effective"] is False
    assert withdrawn.json()["deliveries_stop_within_s"] == 1.0
    # Acknowledged by Kafka before the answer.
    assert await personal.parties.consent.pool.fetchval(
        "SELECT bool_and(published_at IS NOT NULL) FROM outbox WHERE key = $1",
        _key(personal, subject),
    )

    rows = await personal.parties.consent.pool.fetch(
        "SELECT sequence, hash, change FROM ledger WHERE entity_id = $1 ORDER BY sequence", cid
    )
    assert [r["change"] for r in rows] == ["granted", "withdrawn"]
    events = await _events_keyed(tail, _key(personal, subject), expect=2)
    assert [e["type"] for e in events] == [
        "org.datapolis.consent.granted.v1",
        "org.datapolis.consent.withdrawn.v1",
    ]
    assert [(e["data"]["ledger_sequence"], e["data"]["ledger_hash"]) for e in events] == [
        (r["sequence"], r["hash"]) for r in rows
    ]
    async with personal.parties.consent.pool.acquire() as conn:
        verification = await verify_chain(conn)
    assert verification.ok, verification

    jwks = (await client.get("/.well-known/jwks.json")).json()
    for response, change, row in zip(
        (granted, withdrawn), ("granted", "withdrawn"), rows, strict=True
    ):
        receipt = _verify_receipt(response.json()["receipt"], jwks)
        assert receipt["event"]["type"] == change
        assert receipt["event"]["ledger_sequence"] == row["sequence"]
        assert receipt["event"]["ledger_hash"] == row["hash"]
        assert receipt["parties"]["data_subject"] == subject
        assert receipt["parties"]["controller"]["id"] == personal.parties.publisher.org_id
        assert receipt["header"]["record_id"] == cid

    history = await client.get("/subjects/me/history", headers=me)
    assert [h["change"] for h in history.json()] == ["granted", "withdrawn"]
    # Withdrawing again is a repeat of the withdrawal, not a conflict.
    again = await client.post(f"/subjects/me/consents/{cid}/withdraw", headers=me)
    assert again.status_code == 200, again.text
    assert again.json()["consent"] == withdrawn.json()["consent"]
    assert (
        _verify_receipt(again.json()["receipt"], jwks)["event"]["ledger_sequence"]
        == (rows[1]["sequence"])
    )


async def test_no_consent_without_an_active_agreement_for_that_purpose(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer
) -> None:
    personal = await _personal(start_consent, catalog_topic, producer)
    client = personal.parties.consent.client
    me = _token("subj-a", personal.dataset)
    # A purpose the agreement does not cover.
    other_purpose = _consent(personal, purpose="dpv:CommercialPurpose")
    _problem(
        await client.post("/subjects/me/consents", json=other_purpose, headers=me),
        409,
        "no-active-agreement",
    )
    # A consumer without an agreement.
    stranger = _consent(personal, consumer_org_id=personal.parties.stranger.org_id)
    _problem(
        await client.post("/subjects/me/consents", json=stranger, headers=me),
        409,
        "no-active-agreement",
    )
    # Once the agreement is revoked: no new consent, and the old one ended with it.
    granted = await client.post("/subjects/me/consents", json=_consent(personal), headers=me)
    assert granted.status_code == 201, granted.text
    revoked = await client.post(
        f"/agreements/{personal.agreement_id}/revoke",
        json={"reason": "breach"},
        headers=personal.parties.publisher.headers,
    )
    assert revoked.status_code == 200, revoked.text
    _problem(
        await client.post("/subjects/me/consents", json=_consent(personal), headers=me),
        409,
        "no-active-agreement",
    )
    current = await client.get(
        f"/subjects/me/consents/{granted.json()['consent']['consent_id']}", headers=me
    )
    assert current.json()["status"] == "expired"
    assert current.json()["agreement_status"] == "revoked"
    assert current.json()["effective"] is False


async def test_a_subject_sees_only_their_own_consents_and_bad_tokens_are_refused(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer
) -> None:
    personal = await _personal(start_consent, catalog_topic, producer)
    client = personal.parties.consent.client
    me = _token("subj-me", personal.dataset)
    granted = await client.post("/subjects/me/consents", json=_consent(personal), headers=me)
    assert granted.status_code == 201, granted.text
    cid = granted.json()["consent"]["consent_id"]

    other = _token("subj-other", personal.dataset)
    assert (await client.get("/subjects/me/consents", headers=other)).json() == []
    assert (await client.get("/subjects/me/history", headers=other)).json() == []
    _problem(
        await client.get(f"/subjects/me/consents/{cid}", headers=other), 404, "consent-not-found"
    )
    _problem(
        await client.post(f"/subjects/me/consents/{cid}/withdraw", headers=other),
        404,
        "consent-not-found",
    )
    exported = (await client.get("/subjects/me/export", headers=other)).json()
    assert exported["consents"] == []
    assert exported["history"] == []

    # A token for another dataset: refused for this one, and sees nothing.
    another = await _dataset(personal.parties, access_level="personal")
    elsewhere = _token("subj-me", another)
    _problem(
        await client.post("/subjects/me/consents", json=_consent(personal), headers=elsewhere),
        403,
        "wrong-dataset-token",
    )
    _problem(
        await client.get(f"/subjects/me/consents/{cid}", headers=elsewhere),
        404,
        "consent-not-found",
    )

    expired = _token("subj-me", personal.dataset, exp=int(time.time()) - 3600)
    _problem(
        await client.get("/subjects/me/consents", headers=expired), 401, "expired-subject-token"
    )
    foreign = _token("subj-me", personal.dataset, signer=FOREIGN_SIGNER)
    _problem(
        await client.get("/subjects/me/consents", headers=foreign), 401, "invalid-subject-token"
    )
    unknown = _token("subj-me", personal.dataset, iss="https://elsewhere.example")
    _problem(await client.get("/subjects/me/export", headers=unknown), 401, "unknown-token-issuer")
    _problem(await client.get("/subjects/me/consents"), 401, "invalid-subject-token")
    # An API key is not a subject token.
    _problem(
        await client.get("/subjects/me/consents", headers=personal.parties.consumer.headers),
        401,
        "invalid-subject-token",
    )

    # Nothing of the other subjects' consents changed.
    mine = await client.get(f"/subjects/me/consents/{cid}", headers=me)
    assert mine.json()["status"] == "granted"


async def test_export_holds_exactly_the_subjects_data(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer
) -> None:
    personal = await _personal(start_consent, catalog_topic, producer)
    client = personal.parties.consent.client
    me = _token("subj-export", personal.dataset)
    other = _token("subj-neighbour", personal.dataset)
    first = await client.post("/subjects/me/consents", json=_consent(personal), headers=me)
    second = await client.post("/subjects/me/consents", json=_consent(personal), headers=me)
    theirs = await client.post("/subjects/me/consents", json=_consent(personal), headers=other)
    for response in (first, second, theirs):
        assert response.status_code == 201, response.text
    mine = {first.json()["consent"]["consent_id"], second.json()["consent"]["consent_id"]}
    withdrawn = await client.post(
        f"/subjects/me/consents/{first.json()['consent']['consent_id']}/withdraw", headers=me
    )
    assert withdrawn.status_code == 200, withdrawn.text

    exported = await client.get("/subjects/me/export", headers=me)
    assert exported.status_code == 200, exported.text
    document = exported.json()
    assert document["subject_id"] == "subj-export"
    assert document["dataset_id"] == personal.dataset
    assert {c["consent_id"] for c in document["consents"]} == mine
    assert {h["consent_id"] for h in document["history"]} == mine
    assert sorted(h["change"] for h in document["history"]) == ["granted", "granted", "withdrawn"]
    ledger = await personal.parties.consent.pool.fetch(
        "SELECT sequence FROM ledger WHERE entity_id = ANY($1::text[]) ORDER BY sequence",
        list(mine),
    )
    assert [h["sequence"] for h in document["history"]] == [r["sequence"] for r in ledger]


async def test_a_consent_expires_within_5_s_of_the_end_of_its_period(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    kafka_settings: KafkaSettings,
) -> None:
    personal = await _personal(start_consent, catalog_topic, producer)
    client = personal.parties.consent.client
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    me = _token(subject, personal.dataset)
    tail = await TopicTail.at_end(kafka_settings.bootstrap_servers, CONSENT_EVENTS)
    end = datetime.now(UTC) + timedelta(seconds=3)
    granted = await client.post(
        "/subjects/me/consents", json=_consent(personal, valid_until=end.isoformat()), headers=me
    )
    assert granted.status_code == 201, granted.text
    events = await _events_keyed(tail, _key(personal, subject), expect=2)
    expired = events[1]
    assert expired["type"] == "org.datapolis.consent.expired.v1"
    took = datetime.fromisoformat(expired["data"]["occurred_at"]) - end
    assert timedelta(0) <= took <= timedelta(seconds=5), took
    current = await client.get(
        f"/subjects/me/consents/{granted.json()['consent']['consent_id']}", headers=me
    )
    assert current.json()["status"] == "expired"
    assert current.json()["effective"] is False
    # An expired consent is not the subject's to withdraw: a conflict.
    cid = granted.json()["consent"]["consent_id"]
    _problem(
        await client.post(f"/subjects/me/consents/{cid}/withdraw", headers=me),
        409,
        "consent-not-active",
    )


async def test_withdraw_is_not_a_2xx_while_kafka_is_down(
    private_kafka: PrivateKafka, start_consent: ConsentFactory
) -> None:
    kafka = KafkaSettings(bootstrap_servers=private_kafka.bootstrap, delivery_timeout_s=3)
    await ensure_topics(kafka, control_topic_specs())
    catalog_producer = Producer(kafka, client_id="test-catalog")
    await catalog_producer.start()
    try:
        catalog_topic = CatalogTopic(CATALOG_EVENTS, catalog_producer)
        personal = await _personal(
            start_consent, catalog_topic, catalog_producer, kafka=kafka, publish_wait_s=2
        )
    finally:
        await catalog_producer.stop()
    client = personal.parties.consent.client
    me = _token("subj-down", personal.dataset)
    granted = await client.post("/subjects/me/consents", json=_consent(personal), headers=me)
    assert granted.status_code == 201, granted.text
    cid = granted.json()["consent"]["consent_id"]

    async def backlog_empty() -> bool:
        count = await personal.parties.consent.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        return bool(count == 0)

    await eventually(backlog_empty, timeout_s=SETUP_WAIT_S)
    await private_kafka.stop()
    withdrawn = await client.post(f"/subjects/me/consents/{cid}/withdraw", headers=me)
    _problem(withdrawn, 503, "event-not-acknowledged")
    # Committed and waiting in the outbox: never committed and lost.
    status = await personal.parties.consent.pool.fetchval(
        "SELECT status FROM subject_consents WHERE consent_id = $1", cid
    )
    assert status == "withdrawn"
    # The subject retries while Kafka is still down: the same answer, not
    # "not active".
    retried = await client.post(f"/subjects/me/consents/{cid}/withdraw", headers=me)
    _problem(retried, 503, "event-not-acknowledged")
    await private_kafka.start()
    await eventually(backlog_empty, timeout_s=SETUP_WAIT_S)
    # Once the event is on Kafka, the retry gets the first call's success,
    # with the withdrawal's receipt; the ledger holds one withdrawal.
    after = await client.post(f"/subjects/me/consents/{cid}/withdraw", headers=me)
    assert after.status_code == 200, after.text
    assert after.json()["consent"]["status"] == "withdrawn"
    assert after.json()["deliveries_stop_within_s"] == 1.0
    jwks = (await client.get("/.well-known/jwks.json")).json()
    receipt = _verify_receipt(after.json()["receipt"], jwks)
    assert receipt["event"]["type"] == "withdrawn"
    assert receipt["event"]["ledger_sequence"] == after.json()["consent"]["ledger_sequence"]
    withdrawals = await personal.parties.consent.pool.fetchval(
        "SELECT count(*) FROM ledger WHERE entity_id = $1 AND change = 'withdrawn'", cid
    )
    assert withdrawals == 1


async def test_an_agreement_that_ends_ends_the_consents_granted_within_it(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    kafka_settings: KafkaSettings,
) -> None:
    personal = await _personal(start_consent, catalog_topic, producer)
    client = personal.parties.consent.client
    pool = personal.parties.consent.pool
    tail = await TopicTail.at_end(kafka_settings.bootstrap_servers, CONSENT_EVENTS)
    subjects = [f"subj-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    consents: dict[str, str] = {}
    for subject in subjects:
        me = _token(subject, personal.dataset)
        granted = await client.post("/subjects/me/consents", json=_consent(personal), headers=me)
        assert granted.status_code == 201, granted.text
        consents[subject] = granted.json()["consent"]["consent_id"]
    # One withdrawn before: it stays withdrawn, with no row more.
    first = subjects[0]
    withdrawn = await client.post(
        f"/subjects/me/consents/{consents[first]}/withdraw",
        headers=_token(first, personal.dataset),
    )
    assert withdrawn.status_code == 200, withdrawn.text

    revoked = await client.post(
        f"/agreements/{personal.agreement_id}/revoke",
        json={"reason": "breach of terms"},
        headers=personal.parties.publisher.headers,
    )
    assert revoked.status_code == 200, revoked.text
    agreement_row = revoked.json()["agreement"]["ledger_sequence"]

    # The live consent ended in the revocation's transaction: its ledger row
    # right after the agreement's, its projection, its event with the reason.
    second = subjects[1]
    me = _token(second, personal.dataset)
    current = await client.get(f"/subjects/me/consents/{consents[second]}", headers=me)
    assert current.json()["status"] == "expired"
    assert current.json()["effective"] is False
    assert current.json()["ledger_sequence"] == agreement_row + 1
    history = (await client.get("/subjects/me/history", headers=me)).json()
    assert [h["change"] for h in history] == ["granted", "expired"]
    assert history[1]["payload"] == {
        "reason": "agreement revoked",
        "agreement_id": personal.agreement_id,
    }
    assert history[1]["actor"] == f"org:{personal.parties.publisher.org_id}"
    events = await _events_keyed(tail, _key(personal, second), expect=2)
    assert [e["type"] for e in events] == [
        "org.datapolis.consent.granted.v1",
        "org.datapolis.consent.expired.v1",
    ]
    assert events[1]["data"]["reason"] == "agreement revoked"
    assert events[1]["data"]["ledger_sequence"] == agreement_row + 1
    assert [
        r["change"]
        for r in await pool.fetch(
            "SELECT change FROM ledger WHERE entity_id = $1 ORDER BY sequence", consents[first]
        )
    ] == ["granted", "withdrawn"]
    async with pool.acquire() as conn:
        verification = await verify_chain(conn)
    assert verification.ok, verification
