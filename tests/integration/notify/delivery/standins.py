"""A stand-in of the entitlement view for the engine's tests: the test sets
what each consumer is entitled to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from datapolis_notify.ports import (
    AccessLevel,
    DatasetView,
    Decision,
    Entitled,
    NotEntitled,
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
