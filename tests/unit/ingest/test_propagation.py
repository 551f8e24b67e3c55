"""When ingest says "not known yet" and when "does not exist"; what it skips."""

from __future__ import annotations

from typing import cast

import pytest

from datapolis_ingest.api import schema_version
from datapolis_ingest.propagation import UnknownNames
from datapolis_ingest.registry import DatasetRegistry
from datapolis_shared.errors import InvalidInput
from datapolis_shared.events.catalog import DatasetChanges, DatasetUpdated
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.postgres.pool import Pool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_name_is_not_known_yet_during_the_bound_after_its_first_request() -> None:
    clock = Clock()
    names = UnknownNames(5.0, clock=clock)
    assert not names.settled(("org-a", "meters"))
    clock.now += 4.9
    assert not names.settled(("org-a", "meters"))
    clock.now += 0.2
    assert names.settled(("org-a", "meters"))


def test_a_final_answer_closes_the_window() -> None:
    # A producer told 404 may register the name and push again: it gets a
    # new window, not a stale 404.
    clock = Clock()
    names = UnknownNames(5.0, clock=clock)
    names.settled("meters")
    clock.now += 6
    assert names.settled("meters")
    assert not names.settled("meters")


def test_nothing_is_settled_while_behind_catalogs_events() -> None:
    clock = Clock()
    names = UnknownNames(5.0, clock=clock)
    assert not names.settled("meters", caught_up=False)
    clock.now += 60
    assert not names.settled("meters", caught_up=False)
    # The window started at the first request, not when it caught up.
    assert names.settled("meters")


def test_one_askers_requests_do_not_shorten_anothers_window() -> None:
    clock = Clock()
    names = UnknownNames(5.0, clock=clock)
    names.settled(("org-a", "meters"))
    clock.now += 6
    assert not names.settled(("org-b", "meters"))
    assert names.settled(("org-a", "meters"))


def test_the_windows_held_are_bounded() -> None:
    clock = Clock()
    names = UnknownNames(5.0, max_names=3, clock=clock)
    for i in range(10):
        names.settled(f"name-{i}")
    assert len(names) == 3
    clock.now += 6
    # The oldest were forgotten: they only start a new window.
    assert not names.settled("name-0")
    assert names.settled("name-9")


@pytest.mark.parametrize(
    ("header", "expected"), [(None, None), ("1", 1), ("12", 12), ("123456789", 123456789)]
)
def test_the_schema_version_header(header: str | None, expected: int | None) -> None:
    assert schema_version(header) == expected


@pytest.mark.parametrize(
    "header", ["", "0", "01", "-1", "+2", "v2", "1.0", "\u0661", "1234567890", "9" * 5000]
)
def test_a_bad_schema_version_header_is_refused(header: str) -> None:
    with pytest.raises(InvalidInput) as info:
        schema_version(header)
    assert info.value.code == "invalid-schema-version"


class NoDatabase:
    """A pool that must not be used."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the registry used the database ({name}) for an event it skips")


async def test_ingest_skips_dataset_updates() -> None:
    # An update changes a dataset's description, retention or partitions,
    # none of which ingest uses: nothing to apply, nothing to reload.
    registry = DatasetRegistry(cast(Pool, NoDatabase()), catalog_url="http://catalog")
    update = DatasetUpdated(
        dataset_id="d1", slug="meters", changes=DatasetChanges(title="Relevés", partitions=6)
    )
    value, _ = to_structured(update.to_cloudevent())
    await registry.on_catalog_event(value)
