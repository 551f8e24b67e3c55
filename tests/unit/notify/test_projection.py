"""The field projection every channel applies: what of a record leaves the
platform under an agreement's paths and a subscription's."""

from __future__ import annotations

from datapolis_notify.projection import matches, project, rule_of, subject_id

RECORD = {
    "meter_id": "m-1",
    "kwh": 3.5,
    "household": "h-9",
    "address": {"city": "Rennes", "postcode": "35000", "street": "rue de Brest"},
}


def test_nothing_to_narrow_keeps_the_record_as_it_is() -> None:
    assert project(RECORD, None, None) is RECORD
    assert project([1, 2], None) == [1, 2]


def test_a_nested_path_keeps_that_member_only() -> None:
    agreed = frozenset({"meter_id", "kwh", "address.city"})
    assert project(RECORD, agreed, None) == {
        "meter_id": "m-1",
        "kwh": 3.5,
        "address": {"city": "Rennes"},
    }


def test_a_whole_field_covers_its_members_whatever_the_order() -> None:
    assert rule_of(["address.city", "address"]) == {"address": True}
    assert rule_of(["address", "address.city"]) == {"address": True}
    assert project(RECORD, frozenset({"address", "address.city"}), None) == {
        "address": RECORD["address"]
    }


def test_the_subscription_never_widens_the_agreement() -> None:
    agreed = frozenset({"kwh", "address.city"})
    # Asking for the whole address yields the agreed city only.
    assert project(RECORD, agreed, frozenset({"address", "household"})) == {
        "address": {"city": "Rennes"}
    }
    # Asking for less narrows it.
    assert project(RECORD, agreed, frozenset({"kwh"})) == {"kwh": 3.5}
    assert project(RECORD, frozenset({"kwh"}), frozenset({"household"})) == {}


def test_a_path_into_something_not_an_object_selects_nothing() -> None:
    record = {"address": "35000 Rennes", "kwh": 1.0}
    assert project(record, frozenset({"address.city", "kwh"}), None) == {"kwh": 1.0}
    assert project("not an object", frozenset({"kwh"}), None) == {}


def test_filter_and_subject_are_read_alike_for_every_channel() -> None:
    assert matches({"district": "Centre", "n": 1}, {"district": "Centre"})
    assert not matches("not an object", {"district": "Centre"})
    assert subject_id({"household": "h-9"}, "household") == "h-9"
    assert subject_id({"household": 42}, "household") == "42"
    # No subject: a personal record without one is never delivered.
    for odd in (None, True, {"id": "h-9"}, ["h-9"]):
        assert subject_id({"household": odd}, "household") is None
    assert subject_id({"household": "h-9"}, None) is None
