"""Events of the consent service: agreements and data-subject consents."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from datapolis_shared.events.base import CONSENT_EVENTS, Event, register


class _ConsentEvent(Event):
    topic: ClassVar[str] = CONSENT_EVENTS
    source: ClassVar[str] = "/datapolis/consent"


class _AgreementEvent(_ConsentEvent):
    """Every change of one agreement shares its key, so consumers see an
    agreement's changes in the order they were recorded. Each carries the
    ledger row that recorded it (``ledger_sequence``, ``ledger_hash``)."""

    key_field: ClassVar[str] = "agreement_id"
    agreement_id: str
    dataset_id: str
    publisher_org_id: str
    consumer_org_id: str
    ledger_sequence: int
    ledger_hash: str
    occurred_at: datetime


class _AgreementTerms(_AgreementEvent):
    """The terms in force after the change."""

    purposes: list[str]
    fields: list[str]
    valid_from: datetime
    valid_until: datetime


@register
class AgreementRequested(_AgreementEvent):
    type: ClassVar[str] = "org.datapolis.consent.agreement.requested.v1"
    project_name: str
    purposes: list[str]
    fields: list[str]
    valid_from: datetime
    valid_until: datetime


@register
class AgreementGranted(_AgreementTerms):
    type: ClassVar[str] = "org.datapolis.consent.agreement.granted.v1"


@register
class AgreementAmended(_AgreementTerms):
    type: ClassVar[str] = "org.datapolis.consent.agreement.amended.v1"


@register
class AgreementRefused(_AgreementEvent):
    type: ClassVar[str] = "org.datapolis.consent.agreement.refused.v1"
    reason: str


@register
class AgreementRevoked(_AgreementEvent):
    """The publisher ended the agreement: deliveries stop."""

    type: ClassVar[str] = "org.datapolis.consent.agreement.revoked.v1"
    reason: str


@register
class AgreementTerminated(_AgreementEvent):
    """The consumer ended the agreement, or its dataset was retired."""

    type: ClassVar[str] = "org.datapolis.consent.agreement.terminated.v1"
    reason: str | None = None


@register
class AgreementExpired(_AgreementEvent):
    """The agreement's period ended."""

    type: ClassVar[str] = "org.datapolis.consent.agreement.expired.v1"


class _SubjectConsentEvent(_ConsentEvent):
    """Every change of one subject's consents for a dataset and a consumer
    shares one key (dataset, subject, consumer), so whoever decides a
    delivery sees them in the order they were recorded. Each carries the
    ledger row that recorded it."""

    key_field: ClassVar[str] = "subject_key"
    consent_id: str
    dataset_id: str
    subject_id: str
    consumer_org_id: str
    agreement_id: str
    purpose: str
    ledger_sequence: int
    ledger_hash: str
    occurred_at: datetime

    @property
    def subject_key(self) -> str:
        return f"{self.dataset_id}/{self.subject_id}/{self.consumer_org_id}"


@register
class ConsentGranted(_SubjectConsentEvent):
    type: ClassVar[str] = "org.datapolis.consent.granted.v1"
    valid_from: datetime
    valid_until: datetime


@register
class ConsentWithdrawn(_SubjectConsentEvent):
    """A data subject withdrew consent (GDPR Art. 7(3))."""

    type: ClassVar[str] = "org.datapolis.consent.withdrawn.v1"


@register
class ConsentExpired(_SubjectConsentEvent):
    """The consent ended without its subject: its period ended, or the
    agreement it was granted within ended (``reason``: ``agreement revoked``,
    ``agreement terminated``, ``agreement expired``; None: its own period)."""

    type: ClassVar[str] = "org.datapolis.consent.expired.v1"
    reason: str | None = None
