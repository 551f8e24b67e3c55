"""What decides a delivery: notify's in-memory view of datasets, agreements
and data-subject consents.

:class:`Entitlements` implements :class:`~datapolis_notify.ports.EntitlementView`.
It is fed catalog's and consent's events (``apply``, pure and synchronous)
by a feed (:mod:`datapolis_notify.entitlements.feed`) that also tells it when
it last caught up with Kafka; it answers ``decide`` from dictionaries, with
no I/O, in constant time whatever the number of consents.

The decision for one record, in this order:

1. an unknown dataset is refused (``unknown-dataset``), a retired one too
   (``dataset-retired``); while the view is not current, an unknown dataset
   is ``state-not-current`` instead (it may exist and be open);
2. an open dataset is delivered whole (``Entitled(None, None, None)``);
3. while the view is not current, nothing else is delivered
   (``state-not-current``): unknown state means no delivery;
4. shared and personal: the consumer's agreements on the dataset that are
   granted and in their period at ``now`` (no event is needed for an end of
   period to take effect). None: ``no-active-agreement``. With a purpose,
   only those whose purposes include it count; none of them:
   ``purpose-not-agreed``. Several: the one granted or amended last (highest
   ledger sequence) decides, so the answer does not depend on dict order;
5. personal: a record without a subject id is ``no-subject``; then the
   subject's consent for (dataset, consumer) that is granted, in its period,
   for the purpose (any of them without one) and under one of the agreements
   of step 4 (the last recorded, if several); none: ``no-active-consent``.
   The agreement is the consent's own.

``Entitled.fields`` are the agreement's fields as consent records them: top
level names, or dotted paths (``address.city``) for a nested part. Reading a
path as a top-level name drops the field rather than widening it.

An event never replaces a newer state: an agreement's or a consent's change
carries its ledger sequence, and one lower than the state's is ignored (the
same event twice, or a replay from older offsets, changes nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from datapolis_notify.entitlements.state import (
    AgreementState,
    AgreementStatus,
    ConsentState,
    ConsentStatus,
    DatasetState,
    Snapshot,
    top_level_fields,
)
from datapolis_notify.ports import DatasetView, Decision, Entitled, NotEntitled
from datapolis_shared.events.base import Event
from datapolis_shared.events.catalog import (
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

log = logging.getLogger(__name__)

DEFAULT_STALENESS_S = 0.5
# The type prefix of consent's events (agreements and consents).
CONSENT_TYPES = "org.datapolis.consent."
# The sequence of an unreadable change that does not say its own: nothing
# replaces it (the process must restart from newer state).
UNREADABLE_SEQUENCE = 2**63 - 1

ChangeKind = Literal["dataset", "agreement", "consent"]
State = DatasetState | AgreementState | ConsentState


@dataclass(frozen=True, slots=True)
class Change:
    """One event that changed the view: the state before (None: new) and
    after. ``event`` is None for a change that could not be read (see
    ``Entitlements.distrust``)."""

    kind: ChangeKind
    event: Event | None
    before: State | None
    after: State


Listener = Callable[[Change], None]

_CATALOG_EVENTS = (DatasetRegistered, SchemaVersionAdded, DatasetUpdated, DatasetRetired)
_AGREEMENT_EVENTS = (
    AgreementRequested,
    AgreementGranted,
    AgreementAmended,
    AgreementRefused,
    AgreementRevoked,
    AgreementTerminated,
    AgreementExpired,
)
_CONSENT_EVENTS = (ConsentGranted, ConsentWithdrawn, ConsentExpired)
# The event types the view applies (the others are skipped unparsed).
APPLIED_EVENT_TYPES = frozenset(
    cls.type for cls in (*_CATALOG_EVENTS, *_AGREEMENT_EVENTS, *_CONSENT_EVENTS)
)

_AGREEMENT_STATUS: dict[type[Event], AgreementStatus] = {
    AgreementRefused: "refused",
    AgreementRevoked: "revoked",
    AgreementTerminated: "terminated",
    AgreementExpired: "expired",
}
_CONSENT_STATUS: dict[type[Event], ConsentStatus] = {
    ConsentWithdrawn: "withdrawn",
    ConsentExpired: "expired",
}


def agreement_after(event: Event, before: AgreementState | None) -> AgreementState | None:
    """The agreement's state after ``event``, or None when the event is not
    an agreement's or is older than ``before`` (the newer state stays)."""
    if not isinstance(event, _AGREEMENT_EVENTS):
        return None
    if before is not None and before.ledger_sequence >= event.ledger_sequence:
        return None
    if isinstance(event, AgreementRequested | AgreementGranted | AgreementAmended):
        status: AgreementStatus = (
            "requested" if isinstance(event, AgreementRequested) else "granted"
        )
        return AgreementState(
            agreement_id=event.agreement_id,
            dataset_id=event.dataset_id,
            publisher_id=event.publisher_org_id,
            consumer_id=event.consumer_org_id,
            status=status,
            purposes=frozenset(event.purposes),
            fields=frozenset(event.fields),
            valid_from=event.valid_from,
            valid_until=event.valid_until,
            ledger_sequence=event.ledger_sequence,
        )
    status = _AGREEMENT_STATUS[type(event)]
    if before is None:
        # An end whose terms were never seen: it can only refuse.
        return AgreementState(
            agreement_id=event.agreement_id,
            dataset_id=event.dataset_id,
            publisher_id=event.publisher_org_id,
            consumer_id=event.consumer_org_id,
            status=status,
            purposes=frozenset(),
            fields=frozenset(),
            valid_from=None,
            valid_until=None,
            ledger_sequence=event.ledger_sequence,
        )
    return replace(before, status=status, ledger_sequence=event.ledger_sequence)


def consent_after(event: Event, before: ConsentState | None) -> ConsentState | None:
    """The consent's state after ``event`` (see :func:`agreement_after`)."""
    if not isinstance(event, _CONSENT_EVENTS):
        return None
    if before is not None and before.ledger_sequence >= event.ledger_sequence:
        return None
    if isinstance(event, ConsentGranted):
        valid_from: datetime | None = event.valid_from
        valid_until: datetime | None = event.valid_until
        status: ConsentStatus = "granted"
    else:
        valid_from = before.valid_from if before else None
        valid_until = before.valid_until if before else None
        status = _CONSENT_STATUS[type(event)]
    return ConsentState(
        consent_id=event.consent_id,
        dataset_id=event.dataset_id,
        subject_id=event.subject_id,
        consumer_id=event.consumer_org_id,
        agreement_id=event.agreement_id,
        purpose=event.purpose,
        status=status,
        valid_from=valid_from,
        valid_until=valid_until,
        ledger_sequence=event.ledger_sequence,
    )


def dataset_after(event: Event, before: DatasetState | None) -> DatasetState | None:
    """The dataset's state after a catalog event, or None when unchanged."""
    if isinstance(event, DatasetRegistered):
        after: DatasetState | None = _registered(event, before)
    elif before is None:
        # A change of a dataset never registered here: nothing to attach it to.
        after = None
    elif isinstance(event, SchemaVersionAdded):
        newer = before.schema_version is None or before.schema_version < event.version
        after = (
            replace(
                before, schema_version=event.version, fields=top_level_fields(event.json_schema)
            )
            if newer
            else None
        )
    elif isinstance(event, DatasetUpdated):
        changes = event.changes
        theme = changes.theme if "theme" in changes.changed else before.view.theme
        after = replace(before, view=replace(before.view, slug=event.slug, theme=theme))
    elif isinstance(event, DatasetRetired):
        after = replace(before, view=replace(before.view, retired=True))
    else:
        after = None
    return None if after == before else after


def _registered(event: DatasetRegistered, before: DatasetState | None) -> DatasetState:
    view = DatasetView(
        dataset_id=event.dataset_id,
        slug=event.slug,
        publisher_id=event.publisher_id,
        access_level=event.access_level,
        topic_name=event.topic_name,
        key_field=event.key_field_name,
        subject_field=event.subject_field,
        theme=event.theme if event.theme is not None or before is None else before.view.theme,
        # Registration never brings a retired dataset back.
        retired=before.view.retired if before else False,
    )
    return DatasetState(
        view,
        schema_version=before.schema_version if before else None,
        fields=before.fields if before else frozenset(),
    )


class Entitlements:
    """The in-memory :class:`~datapolis_notify.ports.EntitlementView`.

    ``staleness_s``: how long after its last catch-up the view still counts
    as current (well under the 1 s revocation bound); ``clock``: the
    monotonic clock that ``caught_up`` times are read on."""

    def __init__(
        self,
        *,
        staleness_s: float = DEFAULT_STALENESS_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.staleness_s = staleness_s
        self._clock = clock
        self._caught_up_at: float | None = None
        self._datasets: dict[str, DatasetState] = {}
        self._by_topic: dict[str, str] = {}
        self._agreements: dict[str, AgreementState] = {}
        # (consumer, dataset) -> the ids of its agreements, whatever their status.
        self._agreements_of: dict[tuple[str, str], set[str]] = {}
        self._consents: dict[str, ConsentState] = {}
        # (dataset, subject, consumer) -> the ids of the subject's consents.
        self._consents_of: dict[tuple[str, str, str], set[str]] = {}
        self._listeners: list[Listener] = []
        self.applied = 0

    # -- being current ---------------------------------------------------

    def clock(self) -> float:
        """The view's monotonic clock, that ``caught_up`` times are read on."""
        return self._clock()

    def caught_up(self, at: float) -> None:
        """Every change acknowledged by Kafka before ``at`` (on ``clock``)
        is in the view."""
        if self._caught_up_at is None or at > self._caught_up_at:
            self._caught_up_at = at

    @property
    def caught_up_at(self) -> float | None:
        return self._caught_up_at

    def seconds_behind(self) -> float | None:
        """Seconds since the view last caught up; None: never."""
        if self._caught_up_at is None:
            return None
        return max(0.0, self._clock() - self._caught_up_at)

    def is_current(self) -> bool:
        behind = self.seconds_behind()
        return behind is not None and behind <= self.staleness_s

    # -- reading ---------------------------------------------------------

    def dataset(self, dataset_id: str) -> DatasetView | None:
        state = self._datasets.get(dataset_id)
        return state.view if state else None

    def dataset_for_topic(self, topic: str) -> DatasetView | None:
        dataset_id = self._by_topic.get(topic)
        return self.dataset(dataset_id) if dataset_id is not None else None

    def dataset_state(self, dataset_id: str) -> DatasetState | None:
        return self._datasets.get(dataset_id)

    def agreement(self, agreement_id: str) -> AgreementState | None:
        return self._agreements.get(agreement_id)

    def consent(self, consent_id: str) -> ConsentState | None:
        return self._consents.get(consent_id)

    def snapshot(self) -> Snapshot:
        """Every state held (for comparisons and diagnostics; no offsets)."""
        return Snapshot(
            datasets=list(self._datasets.values()),
            agreements=list(self._agreements.values()),
            consents=list(self._consents.values()),
        )

    def decide(
        self,
        *,
        dataset_id: str,
        consumer_id: str,
        purpose: str | None,
        subject_id: str | None,
        now: datetime,
    ) -> Decision:
        state = self._datasets.get(dataset_id)
        settled = self._by_dataset(state)
        if settled is not None or state is None:
            return settled or NotEntitled("unknown-dataset")
        agreements = self._agreements_for(consumer_id, dataset_id, purpose, now)
        if isinstance(agreements, NotEntitled):
            return agreements
        if state.view.access_level == "shared":
            chosen = max(agreements, key=lambda a: a.ledger_sequence)
            return Entitled(chosen.agreement_id, None, chosen.fields)
        if not subject_id:
            return NotEntitled("no-subject")
        return self._by_consent(agreements, dataset_id, subject_id, consumer_id, purpose, now)

    def _by_dataset(self, state: DatasetState | None) -> Decision | None:
        """The decision that the dataset and the view's currency settle
        alone, or None when agreements decide."""
        current = self.is_current()
        if state is None:
            return NotEntitled("unknown-dataset" if current else "state-not-current")
        if state.view.retired:
            return NotEntitled("dataset-retired")
        if state.view.access_level == "open":
            return Entitled(None, None, None)
        return None if current else NotEntitled("state-not-current")

    def _agreements_for(
        self, consumer_id: str, dataset_id: str, purpose: str | None, now: datetime
    ) -> list[AgreementState] | NotEntitled:
        """The consumer's agreements in force on the dataset for the purpose."""
        agreements = self._active_agreements(consumer_id, dataset_id, now)
        if not agreements:
            return NotEntitled("no-active-agreement")
        if purpose is not None:
            agreements = [a for a in agreements if purpose in a.purposes]
            if not agreements:
                return NotEntitled("purpose-not-agreed")
        return agreements

    def _by_consent(
        self,
        agreements: list[AgreementState],
        dataset_id: str,
        subject_id: str,
        consumer_id: str,
        purpose: str | None,
        now: datetime,
    ) -> Decision:
        by_id = {a.agreement_id: a for a in agreements}
        consents = [
            c
            for c in self._consents_for(dataset_id, subject_id, consumer_id)
            if c.agreement_id in by_id
            and c.active_at(now)
            and (purpose is None or c.purpose == purpose)
            # An amendment that dropped the consent's purpose ends it too.
            and c.purpose in by_id[c.agreement_id].purposes
        ]
        if not consents:
            return NotEntitled("no-active-consent")
        consent = max(consents, key=lambda c: c.ledger_sequence)
        agreement = by_id[consent.agreement_id]
        return Entitled(agreement.agreement_id, consent.consent_id, agreement.fields)

    def _active_agreements(
        self, consumer_id: str, dataset_id: str, now: datetime
    ) -> list[AgreementState]:
        ids = self._agreements_of.get((consumer_id, dataset_id), ())
        return [a for i in ids if (a := self._agreements[i]).active_at(now)]

    def _consents_for(
        self, dataset_id: str, subject_id: str, consumer_id: str
    ) -> list[ConsentState]:
        ids = self._consents_of.get((dataset_id, subject_id, consumer_id), ())
        return [self._consents[i] for i in ids]

    # -- changing --------------------------------------------------------

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after each event that changed the view (in the
        feed's task: it must not block). Returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def apply(self, event: Event) -> bool:
        """Apply one catalog or consent event; True when it changed the view
        (other events, and older changes than the state held, change nothing)."""
        change = self._apply(event)
        if change is None:
            return False
        self.applied += 1
        self._notify(change)
        return True

    def _notify(self, change: Change) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                # A listener's bug must not stop the view from following.
                log.exception("entitlement change listener failed (%s change)", change.kind)

    def _apply(self, event: Event) -> Change | None:
        if isinstance(event, _CATALOG_EVENTS):
            before_d = self._datasets.get(event.dataset_id)
            after_d = dataset_after(event, before_d)
            if after_d is not None:
                self.put_dataset(after_d)
                return Change("dataset", event, before_d, after_d)
        elif isinstance(event, _CONSENT_EVENTS):
            before_c = self._consents.get(event.consent_id)
            after_c = consent_after(event, before_c)
            if after_c is not None:
                self.put_consent(after_c)
                return Change("consent", event, before_c, after_c)
        elif isinstance(event, _AGREEMENT_EVENTS):
            before_a = self._agreements.get(event.agreement_id)
            after_a = agreement_after(event, before_a)
            if after_a is not None:
                self.put_agreement(after_a)
                return Change("agreement", event, before_a, after_a)
        return None

    def distrust(self, data: Mapping[str, Any]) -> bool:
        """A change of an agreement or consent that could not be read (a
        newer version of its event, say): unknown state means no delivery,
        so the agreement is taken as terminated, the consent as expired,
        until a readable change newer than it arrives. ``data`` is the
        event's raw data; True when the view changed."""
        sequence = data.get("ledger_sequence")
        if not isinstance(sequence, int):
            sequence = UNREADABLE_SEQUENCE
        consent_id, agreement_id = data.get("consent_id"), data.get("agreement_id")
        if isinstance(consent_id, str):
            before_c = self._consents.get(consent_id)
            if before_c is None or before_c.ledger_sequence >= sequence:
                return False
            after_c = replace(before_c, status="expired", ledger_sequence=sequence)
            self.put_consent(after_c)
            self._notify(Change("consent", None, before_c, after_c))
            return True
        if isinstance(agreement_id, str):
            before_a = self._agreements.get(agreement_id)
            if before_a is None or before_a.ledger_sequence >= sequence:
                return False
            after_a = replace(before_a, status="terminated", ledger_sequence=sequence)
            self.put_agreement(after_a)
            self._notify(Change("agreement", None, before_a, after_a))
            return True
        return False

    def put_dataset(self, state: DatasetState) -> None:
        before = self._datasets.get(state.view.dataset_id)
        if (
            before is not None
            and self._by_topic.get(before.view.topic_name) == before.view.dataset_id
        ):
            del self._by_topic[before.view.topic_name]
        self._datasets[state.view.dataset_id] = state
        self._by_topic[state.view.topic_name] = state.view.dataset_id

    def put_agreement(self, state: AgreementState) -> None:
        self._agreements[state.agreement_id] = state
        self._agreements_of.setdefault((state.consumer_id, state.dataset_id), set()).add(
            state.agreement_id
        )

    def put_consent(self, state: ConsentState) -> None:
        self._consents[state.consent_id] = state
        self._consents_of.setdefault(
            (state.dataset_id, state.subject_id, state.consumer_id), set()
        ).add(state.consent_id)

    def restore(self, snapshot: Snapshot) -> None:
        """Load a snapshot's rows (at start, before any event)."""
        for dataset in snapshot.datasets:
            self.put_dataset(dataset)
        for agreement in snapshot.agreements:
            self.put_agreement(agreement)
        for consent in snapshot.consents:
            self.put_consent(consent)
