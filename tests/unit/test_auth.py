"""API keys: format, hashing, scopes."""

from __future__ import annotations

import pytest

from datapolis_shared.auth import (
    KEY_PREFIX,
    OPERATOR_ORG,
    SCOPES,
    Principal,
    generate_key,
    hash_key,
    parse_key_id,
)
from datapolis_shared.errors import Forbidden


def test_keys_are_random_prefixed_and_parse_back() -> None:
    first, second = generate_key(), generate_key()
    assert first.token.startswith(KEY_PREFIX)
    assert first.token != second.token
    assert parse_key_id(first.token) == first.key_id
    assert len(first.token) > 50


def test_only_the_hash_is_kept_and_it_is_stable() -> None:
    key = generate_key()
    assert key.secret_hash == hash_key(key.token)
    assert key.token not in key.secret_hash


@pytest.mark.parametrize("token", ["", "dpk_", "dpk_abc", "Bearer dpk_x_y", "sk_abc_def"])
def test_malformed_keys_have_no_id(token: str) -> None:
    assert parse_key_id(token) is None


def test_scopes_are_enforced_except_for_the_operator() -> None:
    producer = Principal("org-1", "k1", frozenset({"ingest"}))
    producer.require("ingest")
    with pytest.raises(Forbidden) as info:
        producer.require("publish")
    assert info.value.code == "missing-scope"
    operator = Principal(OPERATOR_ORG, "operator", SCOPES)
    operator.require("publish")
    with pytest.raises(Forbidden):
        producer.require_operator()
