"""A data subject's consent rows, recorded by the service, verified against
the chain and a published checkpoint after they were edited, deleted or
reordered directly in PostgreSQL: by the subject over HTTP, by the operator,
and by the command."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger.jws import KeyRingSigner
from datapolis_consent.ledger.publish import checkpoint_if_moved
from datapolis_shared.kafka import Producer
from datapolis_shared.settings import DEV_OPERATOR_KEY
from tests.integration.consent.conftest import CatalogTopic, ConsentFactory
from tests.integration.consent.test_ledger import (
    ledger_command,
    rehash_from,
    unguarded,
    unguarded_checkpoints,
)
from tests.integration.consent.test_subject_consents import (
    Personal,
    _consent,
    _personal,
    _token,
)

OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}


@dataclass
class Recorded:
    """Two subjects' consents: A granted, B granted, A withdrawn, in that
    order on the ledger, then a checkpoint of the head that a subject kept."""

    personal: Personal
    a: str
    b: str
    a_granted: int
    b_granted: int
    a_withdrawn: int
    token: str
    me_a: dict[str, str]
    me_b: dict[str, str]


async def _recorded(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer
) -> Recorded:
    personal = await _personal(start_consent, catalog_topic, producer)
    client = personal.parties.consent.client
    me_a = _token(f"subj-a-{uuid.uuid4().hex[:6]}", personal.dataset)
    me_b = _token(f"subj-b-{uuid.uuid4().hex[:6]}", personal.dataset)
    granted_a = await client.post("/subjects/me/consents", json=_consent(personal), headers=me_a)
    granted_b = await client.post("/subjects/me/consents", json=_consent(personal), headers=me_b)
    assert granted_a.status_code == granted_b.status_code == 201
    a, b = (r.json()["consent"]["consent_id"] for r in (granted_a, granted_b))
    withdrawn = await client.post(f"/subjects/me/consents/{a}/withdraw", headers=me_a)
    assert withdrawn.status_code == 200, withdrawn.text
    keys: KeyRing = personal.parties.consent.app.state.receipt_keys
    async with personal.parties.consent.pool.acquire() as conn:
        checkpoint = await checkpoint_if_moved(conn, KeyRingSigner(keys))
    assert checkpoint is not None
    return Recorded(
        personal,
        a,
        b,
        a_granted=granted_a.json()["consent"]["ledger_sequence"],
        b_granted=granted_b.json()["consent"]["ledger_sequence"],
        a_withdrawn=withdrawn.json()["consent"]["ledger_sequence"],
        token=checkpoint.token,
        me_a=me_a,
        me_b=me_b,
    )


async def _verify(
    client: httpx.AsyncClient, consent_id: str, me: dict[str, str], tokens: tuple[str, ...] = ()
) -> dict[str, Any]:
    answer = await client.post(
        f"/subjects/me/consents/{consent_id}/verify", json={"checkpoints": list(tokens)}, headers=me
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _break(result: dict[str, Any]) -> tuple[int, str]:
    assert result["ok"] is False, result
    return result["broken"]["sequence"], result["broken"]["kind"]


@pytest.mark.parametrize("edit", ["altered", "deleted-withdrawal", "deleted-grant", "reordered"])
async def test_a_consents_rows_edited_in_postgresql_are_found_by_the_chain_and_a_checkpoint(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    database_url: str,
    edit: str,
) -> None:
    r = await _recorded(start_consent, catalog_topic, producer)
    assert r.a_granted < r.b_granted < r.a_withdrawn
    consent = r.personal.parties.consent
    client = consent.client
    schema = consent.app.state.settings.postgres.db_schema

    intact = await _verify(client, r.a, r.me_a, (r.token,))
    assert intact["ok"] is True, intact
    assert intact["anchored_at"] == r.a_withdrawn
    assert (intact["first_sequence"], intact["last_sequence"]) == (r.a_granted, r.a_withdrawn)
    status, out = await ledger_command(database_url, schema, "verify", "--consent", r.a)
    assert status == 0, out

    # Whose consent the edit breaks, where the chain check finds it, and
    # where the checkpoint finds it once the forger made the chain consistent.
    a, b = r.a_granted, r.b_granted
    w = r.a_withdrawn
    statements: list[str]
    if edit == "altered":
        statements = [f"UPDATE ledger SET actor = 'subject:someone-else' WHERE sequence = {w}"]
        who, chain_break, rehash, forged_break = "a", (w, "altered"), w, (w, "checkpoint_mismatch")
    elif edit == "deleted-withdrawal":
        statements = [f"DELETE FROM ledger WHERE sequence = {w}"]
        who, chain_break, rehash, forged_break = "a", (w, "missing"), w, (w, "missing")
    elif edit == "deleted-grant":
        statements = [f"DELETE FROM ledger WHERE sequence = {a}"]
        who, chain_break, rehash, forged_break = "a", (w, "missing"), a, (w, "missing")
    else:
        statements = [
            f"UPDATE ledger SET sequence = 1000000 WHERE sequence = {a}",
            f"UPDATE ledger SET sequence = {a} WHERE sequence = {b}",
            f"UPDATE ledger SET sequence = {b} WHERE sequence = 1000000",
        ]
        who, chain_break, rehash, forged_break = (
            "b",
            (a, "reordered"),
            a,
            (w, "checkpoint_mismatch"),
        )
    owner = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        for statement in statements:
            await unguarded(owner, statement)
        consent_id, me = (r.a, r.me_a) if who == "a" else (r.b, r.me_b)

        # The chain alone finds it, for the subject, the operator and the command.
        assert _break(await _verify(client, consent_id, me)) == chain_break
        operator = await client.post(
            "/ledger/verify", json={"consent_id": consent_id}, headers=OPERATOR
        )
        assert _break(operator.json()) == chain_break
        status, out = await ledger_command(database_url, schema, "verify", "--consent", consent_id)
        assert status == 1, out
        assert _break(json.loads(out)) == chain_break

        # A forger recomputes every hash after the edit and deletes the stored
        # checkpoints: the checkpoint the subject kept still finds it.
        await rehash_from(owner, rehash)
        await unguarded_checkpoints(owner)
    finally:
        await owner.close()
    assert _break(await _verify(client, consent_id, me, (r.token,))) == forged_break
    status, out = await ledger_command(
        database_url, schema, "verify", "--consent", consent_id, "--checkpoint", r.token
    )
    assert status == 1, out
    assert _break(json.loads(out)) == forged_break


async def test_each_party_verifies_its_own_rows_and_never_another_partys(
    start_consent: ConsentFactory, catalog_topic: CatalogTopic, producer: Producer
) -> None:
    r = await _recorded(start_consent, catalog_topic, producer)
    parties = r.personal.parties
    client = parties.consent.client
    aid = r.personal.agreement_id

    # The publisher and the consumer verify their agreement's rows.
    for party in (parties.publisher, parties.consumer):
        answer = await client.post(
            "/ledger/verify",
            json={"agreement_id": aid, "checkpoints": [r.token]},
            headers=party.headers,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["ok"] is True
        assert answer.json()["first_sequence"] == 1
    # Another organisation: the agreement does not exist for it.
    stranger = await client.post(
        "/ledger/verify", json={"agreement_id": aid}, headers=parties.stranger.headers
    )
    assert stranger.status_code == 404, stranger.text
    assert stranger.json()["code"] == "agreement-not-found"
    assert "head" not in stranger.json()
    # The whole chain, or a subject's consent, is not a party's to verify.
    for body in ({}, {"consent_id": r.a}, {"checkpoints": [r.token]}):
        refused = await client.post("/ledger/verify", json=body, headers=parties.consumer.headers)
        assert refused.status_code == 403, body
        assert refused.json()["code"] == "operator-only"
    # A subject verifies their own consent, never another subject's.
    own = await client.post(f"/subjects/me/consents/{r.b}/verify", headers=r.me_b)
    assert own.status_code == 200, own.text
    assert own.json()["ok"] is True
    other = await client.post(f"/subjects/me/consents/{r.a}/verify", headers=r.me_b)
    assert other.status_code == 404, other.text
    assert other.json()["code"] == "consent-not-found"
    assert "head" not in other.json()
    # An organisation's key is no subject token.
    as_org = await client.post(
        f"/subjects/me/consents/{r.a}/verify", headers=parties.consumer.headers
    )
    assert as_org.status_code == 401, as_org.text
    # The operator verifies anything.
    for body in ({}, {"agreement_id": aid}, {"consent_id": r.a}):
        everything = await client.post("/ledger/verify", json=body, headers=OPERATOR)
        assert everything.status_code == 200, body
        assert everything.json()["ok"] is True
