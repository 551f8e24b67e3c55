"""Which change notifies whom, with what: the pure part of partner
notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from datapolis_notify.notifications import (
    DATASET_LISTENERS,
    ORGANISATION_LISTENERS,
    THEME_LISTENERS,
    message_id,
    notice_for,
)
from datapolis_shared.events.catalog import DatasetChanges, DatasetRegistered, DatasetUpdated
from datapolis_shared.events.consent import (
    AgreementExpired,
    AgreementRequested,
    AgreementRevoked,
    ConsentWithdrawn,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
AGREEMENT = {
    "agreement_id": "agr-1",
    "dataset_id": "ds-1",
    "publisher_org_id": "org-pub",
    "consumer_org_id": "org-con",
    "ledger_sequence": 3,
    "ledger_hash": "h",
    "occurred_at": NOW,
}


def test_a_request_goes_to_the_publisher_with_its_project_and_terms() -> None:
    requested = AgreementRequested(
        **AGREEMENT,
        project_name="Heat map",
        purposes=["dpv:ScientificResearch"],
        fields=["kwh"],
        valid_from=NOW,
        valid_until=NOW + timedelta(days=1),
    )
    notice = notice_for(requested, slug="meters")
    assert notice is not None
    assert notice.event_type == "org.datapolis.notify.agreement.requested.v1"
    assert (notice.listeners, notice.listener_key) == (ORGANISATION_LISTENERS, "org-pub")
    assert notice.agreement_id == "agr-1"
    assert notice.data["project_name"] == "Heat map"
    assert notice.data["terms"]["fields"] == ["kwh"]
    assert notice.data["dataset"] == "meters"


def test_the_other_changes_go_to_the_consumer_with_the_reason() -> None:
    revoked = notice_for(AgreementRevoked(**AGREEMENT, reason="breach"), slug="meters")
    assert revoked is not None
    assert (revoked.listeners, revoked.listener_key) == (ORGANISATION_LISTENERS, "org-con")
    assert revoked.event_type == "org.datapolis.notify.agreement.revoked.v1"
    assert revoked.data["reason"] == "breach"
    assert "project_name" not in revoked.data
    expired = notice_for(AgreementExpired(**AGREEMENT), slug=None)
    assert expired is not None
    assert expired.listener_key == "org-con"
    assert expired.data["status"] == "expired"
    assert "reason" not in expired.data


def test_datasets_notify_their_subscribers_and_themes_their_followers() -> None:
    registered = DatasetRegistered(
        dataset_id="ds-1",
        slug="meters",
        publisher_id="org-pub",
        access_level="shared",
        topic_name="data.meters",
        theme="energy",
    )
    notice = notice_for(registered, slug="meters")
    assert notice is not None
    assert (notice.listeners, notice.listener_key) == (THEME_LISTENERS, "energy")
    without_theme = registered.model_copy(update={"theme": None})
    assert notice_for(without_theme, slug="meters") is None
    renamed = DatasetUpdated(dataset_id="ds-1", slug="m2", changes=DatasetChanges(title="M"))
    assert notice_for(renamed, slug="m2") is None
    assert DATASET_LISTENERS != THEME_LISTENERS


def test_a_subject_consent_notifies_no_one() -> None:
    withdrawn = ConsentWithdrawn(
        consent_id="c-1",
        dataset_id="ds-1",
        subject_id="s-1",
        consumer_org_id="org-con",
        agreement_id="agr-1",
        purpose="p",
        ledger_sequence=4,
        ledger_hash="h",
        occurred_at=NOW,
    )
    assert notice_for(withdrawn, slug="meters") is None


def test_message_ids_are_stable_per_event_and_subscription() -> None:
    assert message_id("ev-1", "sub-1") == message_id("ev-1", "sub-1")
    assert message_id("ev-1", "sub-1") != message_id("ev-1", "sub-2")
    assert message_id("ev-1", "sub-1") != message_id("ev-2", "sub-1")
    assert message_id("ev-1", "sub-1").startswith("msg_")
