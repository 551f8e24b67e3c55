"""Events of the consent service: agreements and data-subject consents."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from datapolis_shared.events.base import CONSENT_EVENTS, Event, register


class _ConsentEvent(Event):
    topic: ClassVar[str] = CONSENT_EVENTS
    source: ClassVar[str] = "/datapolis/consent"


class _AgreementEvent(_ConsentEvent):
    key_field: ClassVar[str] = "agreement_id"
    agreement_id: str
    dataset_id: str
    consumer_org_id: str


@register
class AgreementRequested(_AgreementEvent):
    type: ClassVar[str] = "org.datapolis.consent.agreement.requested.v1"
    purposes: list[str]


@register
class AgreementGranted(_AgreementEvent):
    type: ClassVar[str] = "org.datapolis.consent.agreement.granted.v1"
    purposes: list[str]
    fields: list[str]
    valid_from: datetime
    valid_until: datetime | None = None
    rate_per_s: float | None = None


@register
class AgreementAmended(_AgreementEvent):
    type: ClassVar[str] = "org.datapolis.consent.agreement.amended.v1"
    purposes: list[str]
    fields: list[str]
    valid_until: datetime | None = None
    rate_per_s: float | None = None


@register
class AgreementRevoked(_AgreementEvent):
    type: ClassVar[str] = "org.datapolis.consent.agreement.revoked.v1"
    revoked_at: datetime
    reason: str | None = None


@register
class AgreementExpired(_AgreementEvent):
    type: ClassVar[str] = "org.datapolis.consent.agreement.expired.v1"
    expired_at: datetime


class _SubjectConsentEvent(_ConsentEvent):
    key_field: ClassVar[str] = "consent_id"
    consent_id: str
    dataset_id: str
    subject_id: str
    consumer_org_id: str
    purpose: str


@register
class ConsentGranted(_SubjectConsentEvent):
    type: ClassVar[str] = "org.datapolis.consent.granted.v1"
    granted_at: datetime


@register
class ConsentRevoked(_SubjectConsentEvent):
    """A data subject withdrew consent (GDPR Art. 7(3))."""

    type: ClassVar[str] = "org.datapolis.consent.revoked.v1"
    revoked_at: datetime
