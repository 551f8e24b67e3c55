"""The consent API publishes the keys that verify its receipts, to anyone,
and nothing but their public part."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt as pyjwt
import pytest
from joserfc.jwk import OKPKey

from datapolis_consent.app import create_app
from datapolis_consent.keys import KeyRing
from datapolis_consent.receipts import (
    Event,
    Parties,
    Party,
    Period,
    Processing,
    build_receipt,
)
from datapolis_consent.settings import ConsentSettings, ReceiptSettings
from datapolis_shared.postgres.migrate import service_migrations
from datapolis_shared.settings import ServiceSettings
from tests.apps import running

pytestmark = pytest.mark.integration

RETIRED = OKPKey.generate_key("Ed25519")
CURRENT = OKPKey.generate_key("Ed25519")


@pytest.fixture
async def consent(service_settings: ServiceSettings) -> AsyncIterator[httpx.AsyncClient]:
    retired_public = {k: v for k, v in RETIRED.as_dict(private=False).items() if k != "d"}
    settings = ConsentSettings(
        **{
            **dict(service_settings),
            "receipts": ReceiptSettings(
                signing_key=json.dumps(CURRENT.as_dict(private=True)),
                retired_keys=[retired_public],
            ),
        }
    )
    app = create_app(settings)
    async with running(app, migrations=service_migrations("datapolis_consent")) as client:
        yield client


async def test_the_jwks_is_public_and_holds_only_public_keys(
    consent: httpx.AsyncClient,
) -> None:
    for headers in ({}, {"Authorization": "Bearer dpk_not_a_key"}):
        answer = await consent.get("/.well-known/jwks.json", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "public, max-age=300"
        keys = answer.json()["keys"]
        assert [key["kid"] for key in keys] == [CURRENT.thumbprint(), RETIRED.thumbprint()]
        for key in keys:
            assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}
            assert "d" not in key
            assert (key["kty"], key["crv"], key["alg"], key["use"]) == (
                "OKP",
                "Ed25519",
                "EdDSA",
                "sig",
            )

    document = (await consent.get("/openapi.json")).json()
    operation = document["paths"]["/.well-known/jwks.json"]["get"]
    assert operation["security"] == []
    assert "401" not in operation["responses"]


async def test_receipts_old_and_new_verify_with_the_served_keys_in_another_library(
    consent: httpx.AsyncClient,
) -> None:
    now = datetime.now(UTC)

    def receipt(keys: KeyRing) -> str:
        return build_receipt(
            keys=keys,
            issuer="http://test",
            record_kind="agreement",
            record_id="agr-1",
            event=Event(type="granted", time=now, ledger_sequence=1, ledger_hash="0" * 64),
            processing=Processing(
                dataset="household-energy",
                fields=("kwh",),
                purposes=("dpv:Statistics",),
                period=Period(start=now, end=now + timedelta(days=1)),
            ),
            parties=Parties(controller=Party(id="org-a"), consumer=Party(id="org-b")),
        )

    before_rotation = receipt(KeyRing(signing_key=RETIRED))
    after_rotation = receipt(KeyRing(signing_key=CURRENT))
    published = pyjwt.PyJWKSet.from_dict((await consent.get("/.well-known/jwks.json")).json())
    for token in (before_rotation, after_rotation):
        kid = pyjwt.get_unverified_header(token)["kid"]
        key = next(k for k in published.keys if k.key_id == kid)
        verified = pyjwt.api_jws.PyJWS().decode_complete(token, key.key, algorithms=["EdDSA"])
        assert json.loads(verified["payload"])["header"]["record_id"] == "agr-1"
