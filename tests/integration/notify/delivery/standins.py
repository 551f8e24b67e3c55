"""Stand-ins implementing notify's ports for the engine's tests: a view
whose entitlements the test sets, and a plain HTTP sender."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from datapolis_notify.ports import (
    AccessLevel,
    DatasetView,
    Decision,
    Entitled,
    NotEntitled,
    Outcome,
    WebhookEndpoint,
)


@dataclass
class StandInView:
    datasets: dict[str, DatasetView] = field(default_factory=dict)
    # (dataset, consumer) -> agreement id and fields
    agreements: dict[tuple[str, str], tuple[str, frozenset[str]]] = field(default_factory=dict)
    # (dataset, consumer, subject) -> consent id
    consents: dict[tuple[str, str, str], str] = field(default_factory=dict)
    current: bool = True

    def add_dataset(
        self, dataset_id: str, topic: str, *, access_level: AccessLevel, subject_field: str | None
    ) -> None:
        self.datasets[dataset_id] = DatasetView(
            dataset_id,
            dataset_id,
            "org-publisher",
            access_level,
            topic,
            None,
            subject_field,
            None,
            False,
        )

    def dataset(self, dataset_id: str) -> DatasetView | None:
        return self.datasets.get(dataset_id)

    def dataset_for_topic(self, topic: str) -> DatasetView | None:
        return next((d for d in self.datasets.values() if d.topic_name == topic), None)

    def decide(  # noqa: PLR0911 - one return per rule reads best
        self,
        *,
        dataset_id: str,
        consumer_id: str,
        purpose: str | None,
        subject_id: str | None,
        now: datetime,
    ) -> Decision:
        dataset = self.datasets.get(dataset_id)
        if dataset is None:
            return NotEntitled("unknown-dataset")
        if dataset.access_level == "open":
            return Entitled(None, None, None)
        if not self.current:
            return NotEntitled("state-not-current")
        agreement = self.agreements.get((dataset_id, consumer_id))
        if agreement is None:
            return NotEntitled("no-active-agreement")
        if dataset.access_level == "personal":
            if subject_id is None:
                return NotEntitled("no-subject")
            consent = self.consents.get((dataset_id, consumer_id, subject_id))
            if consent is None:
                return NotEntitled("no-active-consent")
            return Entitled(agreement[0], consent, agreement[1])
        return Entitled(agreement[0], None, agreement[1])

    def is_current(self) -> bool:
        return self.current


class StandInSender:
    """POSTs the body with the message id; no signature (the real sender's
    own tests check those)."""

    def __init__(self, *, timeout_s: float = 15.0) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def send(
        self,
        endpoint: WebhookEndpoint,
        *,
        message_id: str,
        body: bytes,
        content_type: str,
        now: datetime,
    ) -> Outcome:
        started = time.monotonic()
        try:
            response = await self._client.post(
                endpoint.url,
                content=body,
                headers={
                    "content-type": content_type,
                    "webhook-id": message_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                },
            )
        except httpx.HTTPError as exc:
            return Outcome("retry", None, None, repr(exc), time.monotonic() - started)
        elapsed = time.monotonic() - started
        if 200 <= response.status_code < 300:
            return Outcome("delivered", response.status_code, None, None, elapsed)
        if response.status_code == 410:
            return Outcome("gone", 410, None, "410 Gone", elapsed)
        return Outcome("retry", response.status_code, None, f"HTTP {response.status_code}", elapsed)
