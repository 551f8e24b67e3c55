"""The decision table of notify's entitlement view, on the pure view fed
events by hand: what a consumer may receive, and why not."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from datapolis_notify.entitlements.state import AgreementState
from datapolis_notify.entitlements.view import Change, Entitlements
from datapolis_notify.ports import Entitled, NotEntitled
from datapolis_shared.events.catalog import (
    AccessLevel,
    DatasetChanges,
    DatasetRegistered,
    DatasetRetired,
    DatasetUpdated,
    SchemaVersionAdded,
)
from datapolis_shared.events.consent import (
    AgreementAmended,
    AgreementExpired,
    AgreementGranted,
    AgreementRefused,
    AgreementRequested,
    AgreementRevoked,
    AgreementTerminated,
    ConsentExpired,
    ConsentGranted,
    ConsentWithdrawn,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PUBLISHER = "org-pub"
CONSUMER = "org-con"
RESEARCH = "dpv:ScientificResearch"
STATISTICS = "dpv:ProvideOfficialStatistics"
COMMERCE = "dpv:CommercialPurpose"
_sequence = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _view(*, current: bool = True) -> tuple[Entitlements, Clock]:
    clock = Clock()
    view = Entitlements(staleness_s=0.5, clock=clock)
    if current:
        view.caught_up(clock.now)
    return view, clock


def _register(view: Entitlements, access_level: AccessLevel, **extra: Any) -> str:
    dataset_id = f"ds-{uuid.uuid4().hex[:8]}"
    view.apply(
        DatasetRegistered(
            dataset_id=dataset_id,
            slug=f"s-{dataset_id}",
            publisher_id=PUBLISHER,
            access_level=access_level,
            key_field_name="meter_id",
            subject_field="household" if access_level == "personal" else None,
            topic_name=f"data.s-{dataset_id}",
            **extra,
        )
    )
    view.apply(
        SchemaVersionAdded(
            dataset_id=dataset_id,
            slug=f"s-{dataset_id}",
            version=1,
            major=1,
            topic_name=f"data.s-{dataset_id}",
            json_schema={"properties": {"meter_id": {}, "kwh": {}, "household": {}}},
        )
    )
    return dataset_id


def _agreement(dataset_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "agreement_id": f"agr-{uuid.uuid4().hex[:8]}",
        "dataset_id": dataset_id,
        "publisher_org_id": PUBLISHER,
        "consumer_org_id": CONSUMER,
        "ledger_hash": "h",
        "occurred_at": NOW,
        **overrides,
    }


def _grant(
    view: Entitlements,
    dataset_id: str,
    *,
    purposes: tuple[str, ...] = (RESEARCH, STATISTICS),
    fields: tuple[str, ...] = ("meter_id", "kwh"),
    valid_from: datetime = NOW - timedelta(days=1),
    valid_until: datetime = NOW + timedelta(days=30),
    **overrides: Any,
) -> dict[str, Any]:
    base = _agreement(dataset_id, **overrides)
    view.apply(
        AgreementGranted(
            **base,
            ledger_sequence=next(_sequence),
            purposes=list(purposes),
            fields=list(fields),
            valid_from=valid_from,
            valid_until=valid_until,
        )
    )
    return base


def _consent(
    view: Entitlements,
    dataset_id: str,
    agreement_id: str,
    subject: str = "subj-1",
    *,
    purpose: str = RESEARCH,
    valid_until: datetime = NOW + timedelta(days=7),
) -> dict[str, Any]:
    base = {
        "consent_id": f"con-{uuid.uuid4().hex[:8]}",
        "dataset_id": dataset_id,
        "subject_id": subject,
        "consumer_org_id": CONSUMER,
        "agreement_id": agreement_id,
        "purpose": purpose,
        "ledger_hash": "h",
        "occurred_at": NOW,
    }
    view.apply(
        ConsentGranted(
            **base,
            ledger_sequence=next(_sequence),
            valid_from=NOW - timedelta(hours=1),
            valid_until=valid_until,
        )
    )
    return base


def _decide(
    view: Entitlements,
    dataset_id: str,
    *,
    consumer: str = CONSUMER,
    purpose: str | None = None,
    subject: str | None = None,
    now: datetime = NOW,
) -> Entitled | NotEntitled:
    return view.decide(
        dataset_id=dataset_id, consumer_id=consumer, purpose=purpose, subject_id=subject, now=now
    )


def test_an_open_dataset_is_delivered_whole_even_when_the_view_is_not_current() -> None:
    view, _ = _view(current=False)
    dataset = _register(view, "open")
    assert _decide(view, dataset) == Entitled(None, None, None)


def test_unknown_and_retired_datasets_are_refused() -> None:
    view, _ = _view()
    assert _decide(view, "ds-nowhere") == NotEntitled("unknown-dataset")
    dataset = _register(view, "open")
    view.apply(DatasetRetired(dataset_id=dataset, slug=f"s-{dataset}"))
    assert _decide(view, dataset) == NotEntitled("dataset-retired")
    stale, _ = _view(current=False)
    assert _decide(stale, "ds-nowhere") == NotEntitled("state-not-current")


def test_shared_needs_a_granted_agreement_in_its_period_and_gets_its_fields() -> None:
    view, _ = _view()
    dataset = _register(view, "shared")
    assert _decide(view, dataset) == NotEntitled("no-active-agreement")
    agreement = _grant(view, dataset)
    assert _decide(view, dataset) == Entitled(
        agreement["agreement_id"], None, frozenset({"meter_id", "kwh"})
    )
    # Another consumer has no agreement of its own.
    assert _decide(view, dataset, consumer="org-other") == NotEntitled("no-active-agreement")
    # Before its period and at its end, without any event.
    assert _decide(view, dataset, now=NOW - timedelta(days=2)) == NotEntitled("no-active-agreement")
    assert _decide(view, dataset, now=NOW + timedelta(days=30)) == NotEntitled(
        "no-active-agreement"
    )


def test_a_subscriptions_purpose_must_be_among_the_agreements() -> None:
    view, _ = _view()
    dataset = _register(view, "shared")
    agreement = _grant(view, dataset, purposes=(RESEARCH,))
    assert isinstance(_decide(view, dataset, purpose=RESEARCH), Entitled)
    assert _decide(view, dataset, purpose=COMMERCE) == NotEntitled("purpose-not-agreed")
    # A second agreement for that purpose decides for it; without a purpose,
    # the one recorded last.
    commercial = _grant(view, dataset, purposes=(COMMERCE,), fields=("kwh",))
    assert _decide(view, dataset, purpose=COMMERCE) == Entitled(
        commercial["agreement_id"], None, frozenset({"kwh"})
    )
    assert _decide(view, dataset, purpose=RESEARCH) == Entitled(
        agreement["agreement_id"], None, frozenset({"meter_id", "kwh"})
    )
    decided = _decide(view, dataset)
    assert isinstance(decided, Entitled)
    assert decided.agreement_id == commercial["agreement_id"]


@pytest.mark.parametrize(
    ("end", "extra", "expected"),
    [
        (AgreementRevoked, {"reason": "breach"}, "revoked"),
        (AgreementTerminated, {}, "terminated"),
        (AgreementExpired, {}, "expired"),
        (AgreementRefused, {"reason": "no"}, "refused"),
    ],
)
def test_an_ended_agreement_stops_deliveries(
    end: Any, extra: dict[str, Any], expected: str
) -> None:
    view, _ = _view()
    dataset = _register(view, "shared")
    agreement = _grant(view, dataset)
    changes: list[Change] = []
    view.on_change(changes.append)
    assert view.apply(end(**agreement, ledger_sequence=next(_sequence), **extra))
    assert _decide(view, dataset) == NotEntitled("no-active-agreement")
    [change] = changes
    assert change.kind == "agreement"
    assert isinstance(change.before, AgreementState)
    assert isinstance(change.after, AgreementState)
    assert (change.before.status, change.after.status) == ("granted", expected)


def test_requested_is_not_granted_and_an_amendment_changes_the_fields() -> None:
    view, _ = _view()
    dataset = _register(view, "shared")
    base = _agreement(dataset)
    terms = {
        "purposes": [RESEARCH],
        "fields": ["meter_id", "kwh"],
        "valid_from": NOW - timedelta(days=1),
        "valid_until": NOW + timedelta(days=3),
    }
    view.apply(
        AgreementRequested(**base, ledger_sequence=next(_sequence), project_name="p", **terms)
    )
    assert _decide(view, dataset) == NotEntitled("no-active-agreement")
    view.apply(AgreementGranted(**base, ledger_sequence=next(_sequence), **terms))
    view.apply(
        AgreementAmended(**base, ledger_sequence=next(_sequence), **{**terms, "fields": ["kwh"]})
    )
    assert _decide(view, dataset) == Entitled(base["agreement_id"], None, frozenset({"kwh"}))


def test_personal_needs_the_subjects_consent_under_the_active_agreement() -> None:
    view, _ = _view()
    dataset = _register(view, "personal")
    agreement = _grant(view, dataset)
    assert _decide(view, dataset, subject=None) == NotEntitled("no-subject")
    assert _decide(view, dataset, subject="subj-1") == NotEntitled("no-active-consent")
    consent = _consent(view, dataset, agreement["agreement_id"], "subj-1")
    assert _decide(view, dataset, subject="subj-1", purpose=RESEARCH) == Entitled(
        agreement["agreement_id"], consent["consent_id"], frozenset({"meter_id", "kwh"})
    )
    # Another subject, another purpose, after the consent's period: no.
    assert _decide(view, dataset, subject="subj-2") == NotEntitled("no-active-consent")
    assert _decide(view, dataset, subject="subj-1", purpose=STATISTICS) == NotEntitled(
        "no-active-consent"
    )
    assert _decide(view, dataset, subject="subj-1", now=NOW + timedelta(days=8)) == NotEntitled(
        "no-active-consent"
    )
    # The agreement revoked: the consent is no longer effective.
    view.apply(AgreementRevoked(**agreement, ledger_sequence=next(_sequence), reason="breach"))
    assert _decide(view, dataset, subject="subj-1") == NotEntitled("no-active-agreement")


@pytest.mark.parametrize("end", [ConsentWithdrawn, ConsentExpired])
def test_a_withdrawal_after_a_grant_stops_deliveries(end: Any) -> None:
    view, _ = _view()
    dataset = _register(view, "personal")
    agreement = _grant(view, dataset)
    consent = _consent(view, dataset, agreement["agreement_id"])
    assert isinstance(_decide(view, dataset, subject="subj-1"), Entitled)
    changes: list[Change] = []
    view.on_change(changes.append)
    assert view.apply(end(**consent, ledger_sequence=next(_sequence)))
    assert _decide(view, dataset, subject="subj-1") == NotEntitled("no-active-consent")
    assert [c.kind for c in changes] == ["consent"]


def test_a_consent_under_a_replaced_agreement_does_not_count() -> None:
    view, _ = _view()
    dataset = _register(view, "personal")
    old = _grant(view, dataset)
    consent = _consent(view, dataset, old["agreement_id"])
    view.apply(AgreementTerminated(**old, ledger_sequence=next(_sequence)))
    _grant(view, dataset)
    # The new agreement is active but the subject consented under the old one.
    assert _decide(view, dataset, subject="subj-1") == NotEntitled("no-active-consent")
    assert view.consent(consent["consent_id"]) is not None


def test_older_events_never_undo_a_newer_state() -> None:
    view, _ = _view()
    dataset = _register(view, "personal")
    base = _agreement(dataset)
    terms = {
        "purposes": [RESEARCH],
        "fields": ["kwh"],
        "valid_from": NOW - timedelta(days=1),
        "valid_until": NOW + timedelta(days=3),
    }
    granted = AgreementGranted(**base, ledger_sequence=10, **terms)
    revoked = AgreementRevoked(**base, ledger_sequence=11, reason="breach")
    # Applied out of order (the revoke first), and the grant again later.
    assert view.apply(revoked)
    assert not view.apply(granted)
    assert not view.apply(revoked)
    assert _decide(view, dataset, subject="s") == NotEntitled("no-active-agreement")

    other = _grant(view, dataset, purposes=(RESEARCH,))
    consent = {
        "consent_id": "con-x",
        "dataset_id": dataset,
        "subject_id": "s",
        "consumer_org_id": CONSUMER,
        "agreement_id": other["agreement_id"],
        "purpose": RESEARCH,
        "ledger_hash": "h",
        "occurred_at": NOW,
    }
    assert view.apply(ConsentWithdrawn(**consent, ledger_sequence=1001))
    assert not view.apply(
        ConsentGranted(
            **consent, ledger_sequence=1000, valid_from=NOW, valid_until=NOW + timedelta(days=1)
        )
    )
    assert _decide(view, dataset, subject="s") == NotEntitled("no-active-consent")


def test_nothing_but_open_data_while_the_view_is_not_current() -> None:
    view, clock = _view()
    shared = _register(view, "shared")
    personal = _register(view, "personal")
    agreement = _grant(view, shared)
    personal_agreement = _grant(view, personal)
    _consent(view, personal, personal_agreement["agreement_id"])
    assert isinstance(_decide(view, shared), Entitled)
    clock.now += 0.6  # beyond the staleness: a revoke may be unseen
    assert not view.is_current()
    assert _decide(view, shared) == NotEntitled("state-not-current")
    assert _decide(view, personal, subject="subj-1") == NotEntitled("state-not-current")
    view.caught_up(clock.now)
    assert _decide(view, shared) == Entitled(
        agreement["agreement_id"], None, frozenset({"meter_id", "kwh"})
    )
    # An older catch-up never moves it back.
    view.caught_up(clock.now - 10)
    assert view.is_current()


def test_datasets_follow_catalog_topic_theme_fields_and_slug() -> None:
    view, _ = _view()
    dataset = _register(view, "shared", theme="energy")
    seen = view.dataset(dataset)
    assert seen is not None
    assert seen.theme == "energy"
    assert view.dataset_for_topic(f"data.s-{dataset}") == seen
    state = view.dataset_state(dataset)
    assert state is not None
    assert state.fields == {"meter_id", "kwh", "household"}
    view.apply(
        DatasetUpdated(
            dataset_id=dataset, slug="renamed", changes=DatasetChanges(theme="transport")
        )
    )
    updated = view.dataset(dataset)
    assert updated is not None
    assert (updated.slug, updated.theme) == ("renamed", "transport")
    # An older schema version never replaces the current one.
    for version in (3, 2):
        view.apply(
            SchemaVersionAdded(
                dataset_id=dataset,
                slug="renamed",
                version=version,
                major=1,
                topic_name=f"data.s-{dataset}",
                json_schema={"properties": {f"v{version}": {}}},
            )
        )
    state = view.dataset_state(dataset)
    assert state is not None
    assert (state.schema_version, state.fields) == (3, frozenset({"v3"}))


def test_a_failing_listener_does_not_stop_the_view() -> None:
    view, _ = _view()
    dataset = _register(view, "shared")

    def broken(change: Change) -> None:
        raise RuntimeError("bug")

    seen: list[Change] = []
    view.on_change(broken)
    remove = view.on_change(seen.append)
    _grant(view, dataset)
    assert len(seen) == 1
    assert isinstance(_decide(view, dataset), Entitled)
    remove()
    _grant(view, dataset)
    assert len(seen) == 1


def test_ten_thousand_consents_decide_in_constant_time() -> None:
    view, _ = _view()
    dataset = _register(view, "personal")
    agreement = _grant(view, dataset)
    for n in range(10_000):
        _consent(view, dataset, agreement["agreement_id"], f"subj-{n}")
    started = time.perf_counter()
    for n in range(10_000):
        decided = _decide(view, dataset, subject=f"subj-{n}", purpose=RESEARCH)
        assert isinstance(decided, Entitled)
    per_decision = (time.perf_counter() - started) / 10_000
    # Generous for a shared CI machine: a scan of 10,000 consents per
    # decision would take milliseconds.
    assert per_decision < 0.0005, per_decision


def test_an_unreadable_change_of_a_consent_or_agreement_refuses_until_a_newer_one() -> None:
    view, _ = _view()
    dataset = _register(view, "personal")
    agreement = _grant(view, dataset)
    consent = _consent(view, dataset, agreement["agreement_id"])
    changes: list[Change] = []
    view.on_change(changes.append)
    # A withdrawal in a newer version of its event, say.
    unreadable = next(_sequence)
    assert view.distrust({**consent, "ledger_sequence": unreadable, "reason": "new field"})
    assert _decide(view, dataset, subject="subj-1") == NotEntitled("no-active-consent")
    assert [(c.kind, c.event) for c in changes] == [("consent", None)]
    # An older change never undoes it; a newer readable one decides.
    assert not view.distrust({**consent, "ledger_sequence": unreadable - 1})
    view.apply(
        ConsentGranted(
            **consent,
            ledger_sequence=next(_sequence),
            valid_from=NOW - timedelta(hours=1),
            valid_until=NOW + timedelta(days=1),
        )
    )
    assert isinstance(_decide(view, dataset, subject="subj-1"), Entitled)
    # Without a ledger sequence: refused for good.
    assert view.distrust({"agreement_id": agreement["agreement_id"]})
    assert _decide(view, dataset, subject="subj-1") == NotEntitled("no-active-agreement")
    assert not view.apply(
        AgreementRevoked(**agreement, ledger_sequence=next(_sequence), reason="late")
    )
