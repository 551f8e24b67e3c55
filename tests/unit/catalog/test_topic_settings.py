"""Pure rules of changing a dataset's topics: bounds of the PATCH fields,
partitions that only grow, and the config written to converge a topic."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from datapolis_catalog.datasets import DatasetPatch, check_partitions_change
from datapolis_catalog.provisioning import DAY_MS, topic_spec
from datapolis_shared.errors import Conflict
from datapolis_shared.kafka import topic_config_update


@pytest.mark.parametrize(
    "body",
    [
        {"partitions": 1},
        {"partitions": 64},
        {"retention_days": 1},
        {"retention_days": 3650},
        {"partitions": 8, "retention_days": 90},
    ],
)
def test_topic_settings_within_bounds_are_accepted(body: dict[str, Any]) -> None:
    assert DatasetPatch.model_validate(body).model_dump(exclude_unset=True) == body


@pytest.mark.parametrize(
    "body",
    [
        {"partitions": 0},
        {"partitions": 65},
        {"partitions": -3},
        {"partitions": 2.5},
        {"partitions": 3.0},
        {"partitions": "4"},
        {"partitions": True},
        {"retention_days": 0},
        {"retention_days": 3651},
        {"retention_days": "30"},
        {"retention_days": True},
        {"retention_ms": 1000},
    ],
)
def test_topic_settings_out_of_bounds_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DatasetPatch.model_validate(body)


def test_partitions_may_grow_or_stay() -> None:
    check_partitions_change("meters", 3, 3)
    check_partitions_change("meters", 3, 4)


def test_fewer_partitions_are_refused_with_the_reason() -> None:
    with pytest.raises(Conflict) as refused:
        check_partitions_change("meters", 4, 2)
    assert refused.value.code == "partitions-cannot-decrease"
    assert "Kafka cannot remove partitions" in refused.value.message
    assert refused.value.extra == {"current_partitions": 4, "requested_partitions": 2}


def test_a_topic_already_as_wanted_is_left_alone() -> None:
    wanted = topic_spec("data.meters", partitions=3, retention_ms=7 * DAY_MS).config
    effective: dict[str, str | None] = {
        "retention.ms": str(7 * DAY_MS),
        "cleanup.policy": "delete",
        "segment.bytes": "1073741824",
    }
    assert topic_config_update(wanted, effective, {"retention.ms": str(7 * DAY_MS)}) is None


def test_a_drifted_topic_gets_the_wanted_values_and_keeps_its_own() -> None:
    wanted = topic_spec("data.meters", partitions=3, retention_ms=14 * DAY_MS).config
    effective: dict[str, str | None] = {
        "retention.ms": str(7 * DAY_MS),
        "cleanup.policy": "delete",
        "max.message.bytes": "2000000",
    }
    own = {"retention.ms": str(7 * DAY_MS), "max.message.bytes": "2000000"}
    assert topic_config_update(wanted, effective, own) == {
        "retention.ms": str(14 * DAY_MS),
        "cleanup.policy": "delete",
        "max.message.bytes": "2000000",
    }
