"""DatasetUpdated names what changed in a typed model, and the events catalog
wrote when ``changes`` was a plain dict still parse, with the same meaning."""

from __future__ import annotations

from typing import Any

import pytest

from datapolis_shared.errors import InvalidInput
from datapolis_shared.events import cloudevents as ce
from datapolis_shared.events.base import parse_event
from datapolis_shared.events.catalog import DatasetChanges, DatasetUpdated


def _on_the_topic(changes: dict[str, Any]) -> bytes:
    """A DatasetUpdated as catalog wrote it to the outbox, byte for byte in shape."""
    envelope = ce.CloudEvent(
        source="/datapolis/catalog",
        type=DatasetUpdated.type,
        subject="d1",
        data={"dataset_id": "d1", "slug": "meters", "changes": changes},
    )
    value, _headers = ce.to_structured(envelope)
    return value


@pytest.mark.parametrize(
    "changes",
    [
        {"title": "Relevés des compteurs"},
        {"keywords": ["compteurs", "énergie"], "update_frequency": None},
        {"spatial_coverage": None, "licence": "odbl-1.0", "theme": "energy"},
        {"retention_days": 14, "partitions": 6},
        {
            "title": "Relevés",
            "description": "",
            "theme": "energy",
            "keywords": [],
            "licence": "etalab-2.0",
            "update_frequency": "hourly",
            "spatial_coverage": "Métropole de Lyon",
            "retention_days": 7,
            "partitions": 3,
        },
    ],
)
def test_events_already_on_the_topic_parse_and_keep_their_meaning(
    changes: dict[str, Any],
) -> None:
    event = parse_event(ce.from_structured(_on_the_topic(changes)))
    assert isinstance(event, DatasetUpdated)
    assert event.changes.changed == set(changes)
    for name, value in changes.items():
        got = getattr(event.changes, name)
        assert (list(got) if isinstance(got, tuple) else got) == value
    # Written again, it is the same JSON: readers that took it as a dict
    # (present = changed, null = cleared) read it as before.
    assert event.to_cloudevent().data["changes"] == changes


def test_a_cleared_field_is_not_confused_with_an_unchanged_one() -> None:
    cleared = DatasetChanges.model_validate({"update_frequency": None})
    assert cleared.changed == {"update_frequency"}
    assert cleared.model_dump(mode="json") == {"update_frequency": None}
    assert DatasetChanges(title="x").model_dump(mode="json") == {"title": "x"}


def test_a_field_catalog_never_sends_is_refused() -> None:
    # The access level, key and subject fields are fixed at registration:
    # an update naming one is not a valid v1 event.
    with pytest.raises(InvalidInput) as info:
        parse_event(ce.from_structured(_on_the_topic({"access_level": "personal"})))
    assert info.value.code == "invalid-event"


def test_changes_are_typed() -> None:
    with pytest.raises(InvalidInput):
        parse_event(ce.from_structured(_on_the_topic({"partitions": "many"})))
