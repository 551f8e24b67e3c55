"""The types the parts of notify agree on.

Delivery is decided by three parts that are built and tested apart:

- the entitlement view (``entitlements``) knows datasets, agreements and
  consents, from catalog's and consent's events, and answers whether a
  consumer may receive a record now, and which fields;
- the webhook sender (``webhooks``) signs and sends one message to one
  endpoint and says what came of it;
- the delivery engine (``delivery``) reads the dataset topics, asks the
  view at every attempt, projects the records, and hands messages to the
  channels (webhook, server-sent events, Kafka).

None of these types knows HTTP, Kafka or PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

AccessLevel = Literal["open", "shared", "personal"]
Channel = Literal["webhook", "sse", "kafka"]


@dataclass(frozen=True, slots=True)
class DatasetView:
    """What notify knows of one dataset, from catalog's events."""

    dataset_id: str
    slug: str
    publisher_id: str
    access_level: AccessLevel
    topic_name: str
    key_field: str | None
    subject_field: str | None
    theme: str | None
    retired: bool


@dataclass(frozen=True, slots=True)
class Entitled:
    """The consumer may receive the record now.

    ``fields`` are the paths it may receive (an agreement's projection:
    ``kwh``, ``address.city``, see ``projection``); ``None`` means every
    field (an open dataset). The ids are
    what the delivery log records as relied on."""

    agreement_id: str | None
    consent_id: str | None
    fields: frozenset[str] | None


# Why a record is not delivered. Stable strings: they go into the delivery
# log and the metrics' labels.
RefusalReason = Literal[
    "unknown-dataset",  # notify has not heard of the dataset (yet)
    "dataset-retired",
    "no-active-agreement",  # shared or personal: no granted agreement in its period
    "purpose-not-agreed",  # the subscription's purpose is not among the agreement's
    "no-subject",  # personal: the record has no subject id
    "no-active-consent",  # personal: the subject's consent is not active
    "state-not-current",  # the view has not caught up recently: unknown state
]


@dataclass(frozen=True, slots=True)
class NotEntitled:
    reason: RefusalReason


Decision = Entitled | NotEntitled


class EntitlementView(Protocol):
    """Answers from memory, without I/O: it is asked at every attempt."""

    def dataset(self, dataset_id: str) -> DatasetView | None: ...

    def dataset_for_topic(self, topic: str) -> DatasetView | None: ...

    def decide(
        self,
        *,
        dataset_id: str,
        consumer_id: str,
        purpose: str | None,
        subject_id: str | None,
        now: datetime,
    ) -> Decision:
        """The decision for one record. Unknown state decides no delivery:
        while the view is not current (see ``is_current``), every dataset
        but an open one is refused with ``state-not-current``."""
        ...

    def is_current(self) -> bool:
        """True while every change acknowledged by Kafka more than the
        stated staleness ago (well under the 1 s revocation bound) is in
        the view."""
        ...


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A Standard Webhooks key: scheme 'v1' with a 'whsec_' secret, or
    'v1a' with a 'whsk_' Ed25519 private key."""

    secret_id: str
    scheme: Literal["v1", "v1a"]
    secret: str


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    subscription_id: str
    url: str
    # Every key that signs now: two during a rotation's overlap.
    keys: tuple[SigningKey, ...]


OutcomeKind = Literal[
    "delivered",  # 2xx
    "retry",  # timeout, connection error, 5xx, 429, other 4xx: try again later
    "gone",  # 410: the endpoint is to be disabled
    "refused-target",  # the URL resolves to a forbidden address: not sent
]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    status: int | None
    # Seconds the target asked to wait (Retry-After on 429 or 503).
    retry_after_s: float | None
    error: str | None
    elapsed_s: float


class WebhookSender(Protocol):
    async def send(
        self,
        endpoint: WebhookEndpoint,
        *,
        message_id: str,
        body: bytes,
        content_type: str,
        now: datetime,
    ) -> Outcome:
        """Sign ``body`` with every key of the endpoint and POST it once."""
        ...
