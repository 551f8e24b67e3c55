"""Server-sent events under the real consent service: the notify app feeds
its own entitlement view from consent's and catalog's events, as in
production, and a subject's withdrawal or the publisher's revocation, made
through consent's API, takes effect on an open stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.ports import Entitled, NotEntitled
from datapolis_shared.kafka import Producer, TopicSpec, ensure_topics
from datapolis_shared.settings import KafkaSettings
from tests.integration.catalog.conftest import delete_topics
from tests.integration.consent.conftest import (  # noqa: F401
    CatalogTopic,
    ConsentFactory,
    catalog_topic,
    start_consent,
)
from tests.integration.consent.test_agreements import Parties, _parties, _requested
from tests.integration.consent.test_subject_consents import (
    ISSUER_SETTINGS,
    PURPOSE,
    _token,
)
from tests.integration.notify.stream.conftest import SETUP_WAIT_S, Notify, NotifyFactory
from tests.kafka_util import eventually

# The platform's promise: a stream whose entitlement ends is closed within
# 1 s of the revoke call's answer.
BOUND_S = 1.0


@dataclass
class Personal:
    parties: Parties
    notify: Notify
    dataset_id: str
    topic: str
    agreement_id: str
    subscription_id: str


@pytest.fixture
async def personal(
    start_consent: ConsentFactory,  # noqa: F811
    catalog_topic: CatalogTopic,  # noqa: F811
    producer: Producer,
    kafka_settings: KafkaSettings,
    start_notify: NotifyFactory,
) -> AsyncIterator[Personal]:
    """A personal dataset whose subject is `household`, an agreement granted
    through consent to a consumer, and its `sse` subscription in a notify
    app that follows the same events."""
    parties = await _parties(
        start_consent, catalog_topic, producer, subject_token_issuers=[ISSUER_SETTINGS]
    )
    notify = await start_notify(
        stand_in=False,
        entitlements=EntitlementSettings(catalog_events_topic=catalog_topic.name),
    )
    registered = await catalog_topic.register(
        access_level="personal",
        subject_field="household",
        publisher_id=parties.publisher.org_id,
    )
    topic = registered.topic_name
    await ensure_topics(kafka_settings, [TopicSpec(topic, 2)])
    try:
        await parties.consent.until_known(registered.dataset_id, version=1)
        agreement = await _requested(parties, registered.dataset_id)
        granted = await parties.consent.client.post(
            f"/agreements/{agreement['agreement_id']}/grant", headers=parties.publisher.headers
        )
        assert granted.status_code == 200, granted.text
        await notify.until_known(parties.consumer)
        view = await notify.until_view()
        await eventually(
            lambda: view.dataset(registered.dataset_id) is not None, timeout_s=SETUP_WAIT_S
        )
        subscription = await notify.subscription(
            parties.consumer.org_id,
            registered.dataset_id,
            purpose=PURPOSE,
            notifications=["agreements"],
        )
        yield Personal(
            parties, notify, registered.dataset_id, topic, agreement["agreement_id"], subscription
        )
    finally:
        await delete_topics(kafka_settings.bootstrap_servers, [topic])


async def _consent(personal: Personal, subject: str) -> tuple[str, dict[str, str]]:
    """``subject`` consents; its consent id and token once notify knows."""
    me = _token(subject, personal.dataset_id)
    granted = await personal.parties.consent.client.post(
        "/subjects/me/consents",
        json={
            "dataset": personal.dataset_id,
            "consumer_org_id": personal.parties.consumer.org_id,
            "purpose": PURPOSE,
            "valid_until": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
        },
        headers=me,
    )
    assert granted.status_code == 201, granted.text
    await eventually(lambda: isinstance(_decide(personal, subject), Entitled), timeout_s=30)
    return granted.json()["consent"]["consent_id"], me


def _decide(personal: Personal, subject: str) -> object:
    return personal.notify.decide(
        personal.dataset_id, personal.parties.consumer.org_id, PURPOSE, subject
    )


def _meter(n: int, household: str) -> dict[str, object]:
    return {
        "meter_id": f"m-{n}",
        "kwh": n / 10,
        "household": household,
        "address": {"city": "Ghent", "postcode": "9000"},
    }


async def test_a_withdrawn_subjects_records_stop_while_others_continue(
    personal: Personal,
) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    alice_consent, alice_token = await _consent(personal, alice)
    await _consent(personal, bob)
    notify = personal.notify
    async with notify.stream(personal.subscription_id, personal.parties.consumer) as events:
        await notify.send(personal.topic, _meter(1, alice), _meter(2, bob), _meter(3, "carol"))
        before = await events.records(2, timeout_s=30)
        withdrawn = await personal.parties.consent.client.post(
            f"/subjects/me/consents/{alice_consent}/withdraw", headers=alice_token
        )
        answered = time.monotonic()
        assert withdrawn.status_code == 200, withdrawn.text
        await eventually(lambda: _decide(personal, alice) == NotEntitled("no-active-consent"))
        assert time.monotonic() - answered < BOUND_S
        await notify.send(personal.topic, _meter(4, alice), _meter(5, bob), _meter(6, alice))
        after = await events.records(1, timeout_s=30)
        with pytest.raises(TimeoutError):
            await events.next(timeout_s=1.0)
    # Agreed: meter_id, kwh and address.city; household (the subject) is not.
    assert sorted(e.json()["data"]["meter_id"] for e in before) == ["m-1", "m-2"]
    assert all("household" not in e.json()["data"] for e in before + after)
    assert [e.json()["data"]["meter_id"] for e in after] == ["m-5"]


async def test_a_revoked_agreement_closes_the_stream_within_a_second_of_the_answer(
    personal: Personal,
) -> None:
    subject = f"dana-{uuid.uuid4().hex[:6]}"
    await _consent(personal, subject)
    notify = personal.notify
    async with notify.stream(personal.subscription_id, personal.parties.consumer) as events:
        await notify.send(personal.topic, _meter(1, subject))
        await events.records(1, timeout_s=30)
        revoked = await personal.parties.consent.client.post(
            f"/agreements/{personal.agreement_id}/revoke",
            json={"reason": "breach of terms"},
            headers=personal.parties.publisher.headers,
        )
        answered = time.monotonic()
        assert revoked.status_code == 200, revoked.text
        # The consumer learns why from the platform, then the stream ends.
        notice = await events.next(timeout_s=5)
        assert notice is not None
        assert notice.event == "notification"
        assert notice.id is None
        assert notice.json()["type"] == "org.datapolis.consent.agreement.revoked.v1"
        assert notice.json()["data"]["agreement_id"] == personal.agreement_id
        end = await events.next(timeout_s=5)
        assert end is not None
        assert end.event == "end"
        assert end.json() == {"reason": "no-active-agreement"}
        assert await events.next(timeout_s=5) is None
        closed_after_s = time.monotonic() - answered
    assert closed_after_s < BOUND_S, closed_after_s
    refused = await notify.client.get(
        f"{notify.url}/subscriptions/{personal.subscription_id}/events",
        headers=personal.parties.consumer.headers,
    )
    assert refused.status_code == 403
    assert refused.json()["reason"] == "no-active-agreement"
