"""Organisations and API keys: the operator onboards organisations, an
organisation manages its own keys and no one else's, a revoked key stops
working at once, and every change is announced on datapolis.catalog.events."""

from __future__ import annotations

from datapolis_shared.events.cloudevents import CloudEvent
from tests.integration.catalog.conftest import (
    OPERATOR,
    CatalogApp,
    bearer,
    catalog_events,
    problem,
    wait_until,
)


async def test_operator_onboards_an_organisation_and_its_keys(catalog: CatalogApp) -> None:
    client = catalog.client
    created = await client.post(
        "/organisations",
        json={"name": "Régie des eaux", "kind": "public-authority", "contact_email": "eau@ex.fr"},
        headers=OPERATOR,
    )
    assert created.status_code == 201, created.text
    org = created.json()
    assert org["kind"] == "public-authority"
    assert created.headers["location"] == f"/organisations/{org['org_id']}"

    again = await client.post(
        "/organisations",
        json={"name": "régie des eaux", "kind": "company", "contact_email": "x@ex.fr"},
        headers=OPERATOR,
    )
    problem(again, 409, "organisation-exists")
    bad_kind = await client.post(
        "/organisations",
        json={"name": "Nope", "kind": "cartel", "contact_email": "x@ex.fr"},
        headers=OPERATOR,
    )
    problem(bad_kind, 422, "validation-failed")

    issued = await client.post(
        f"/organisations/{org['org_id']}/keys",
        json={"scopes": ["admin", "read"], "label": "ops"},
        headers=OPERATOR,
    )
    assert issued.status_code == 201, issued.text
    key = issued.json()
    assert key["token"].startswith(f"dpk_{key['key_id']}_")
    assert key["scopes"] == ["admin", "read"]
    admin = bearer(key["token"])

    # The organisation's admin key issues a key with a scope it holds...
    reader = await client.post(
        f"/organisations/{org['org_id']}/keys", json={"scopes": ["read"]}, headers=admin
    )
    assert reader.status_code == 201, reader.text
    # ...but never one it lacks, nor an unknown one.
    problem(
        await client.post(
            f"/organisations/{org['org_id']}/keys", json={"scopes": ["publish"]}, headers=admin
        ),
        403,
        "scope-escalation",
    )
    problem(
        await client.post(
            f"/organisations/{org['org_id']}/keys", json={"scopes": ["root"]}, headers=OPERATOR
        ),
        422,
        "unknown-scope",
    )

    listed = await client.get(f"/organisations/{org['org_id']}/keys", headers=admin)
    assert listed.status_code == 200
    assert {k["key_id"] for k in listed.json()} == {key["key_id"], reader.json()["key_id"]}
    for listed_key in listed.json():
        assert "token" not in listed_key
        assert "secret_hash" not in listed_key
        assert key["token"] not in str(listed_key)

    # Only the operator onboards organisations.
    problem(
        await client.post(
            "/organisations",
            json={"name": "Rogue", "kind": "company", "contact_email": "r@ex.fr"},
            headers=admin,
        ),
        403,
        "operator-only",
    )

    events = await catalog_events(
        catalog.settings.kafka.bootstrap_servers,
        {org["org_id"], key["key_id"], reader.json()["key_id"]},
        until=lambda found: len(found) >= 3,
    )
    by_type = {e.type: e for e in events}
    registered = by_type["org.datapolis.catalog.organisation.registered.v1"]
    assert registered.data == {
        "org_id": org["org_id"],
        "name": "Régie des eaux",
        "kind": "public-authority",
    }
    issued_event = next(
        e
        for e in events
        if e.type == "org.datapolis.catalog.apikey.issued.v1" and e.subject == key["key_id"]
    )
    assert issued_event.data["org_id"] == org["org_id"]
    assert issued_event.data["scopes"] == ["admin", "read"]
    # The hash travels so other services verify locally; the token never does.
    assert len(issued_event.data["secret_hash"]) == 64
    assert key["token"] not in issued_event.model_dump_json()


async def test_revoked_key_stops_working_and_revocation_is_announced(
    catalog: CatalogApp,
) -> None:
    client = catalog.client
    org = await catalog.organisation()
    token = await catalog.key(org.org_id, ["read"], headers=org.admin)
    assert (await client.get("/datasets", headers=bearer(token))).status_code == 200

    key_id = token.split("_")[1]
    revoked = await client.delete(f"/organisations/{org.org_id}/keys/{key_id}", headers=org.admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None

    async def refused() -> bool:
        response = await client.get("/datasets", headers=bearer(token))
        return response.status_code == 401 and response.json()["code"] == "revoked-api-key"

    # Catalog's key cache lives one second.
    await wait_until(refused, timeout_s=3)

    # Revoking again changes nothing and announces nothing more.
    again = await client.delete(f"/organisations/{org.org_id}/keys/{key_id}", headers=org.admin)
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]

    def revocations(found: list[CloudEvent]) -> list[CloudEvent]:
        return [e for e in found if e.type == "org.datapolis.catalog.apikey.revoked.v1"]

    events = await catalog_events(
        catalog.settings.kafka.bootstrap_servers,
        {key_id},
        until=lambda found: len(revocations(found)) >= 1 and len(found) >= 2,
    )
    [revocation] = revocations(events)
    assert revocation.data["key_id"] == key_id
    assert revocation.data["org_id"] == org.org_id


async def test_an_organisation_cannot_touch_another_organisations_keys(
    catalog: CatalogApp,
) -> None:
    client = catalog.client
    lyon = await catalog.organisation("Ville de Lyon", kind="public-authority")
    startup = await catalog.organisation("Startup", kind="company")
    lyon_key = await catalog.key(lyon.org_id, ["read"], headers=lyon.admin)
    lyon_key_id = lyon_key.split("_")[1]

    # The start-up's admin key sees, issues and revokes nothing of Lyon's.
    problem(
        await client.get(f"/organisations/{lyon.org_id}/keys", headers=startup.admin),
        403,
        "not-your-organisation",
    )
    problem(
        await client.post(
            f"/organisations/{lyon.org_id}/keys", json={"scopes": ["read"]}, headers=startup.admin
        ),
        403,
        "not-your-organisation",
    )
    problem(
        await client.delete(
            f"/organisations/{lyon.org_id}/keys/{lyon_key_id}", headers=startup.admin
        ),
        403,
        "not-your-organisation",
    )
    # Nor through its own organisation's path: the key is not one of its own.
    problem(
        await client.delete(
            f"/organisations/{startup.org_id}/keys/{lyon_key_id}", headers=startup.admin
        ),
        404,
        "api-key-not-found",
    )
    # Lyon's key still works.
    assert (await client.get("/datasets", headers=bearer(lyon_key))).status_code == 200

    # A key without the admin scope manages no keys, even its own organisation's.
    problem(
        await client.get(f"/organisations/{lyon.org_id}/keys", headers=bearer(lyon_key)),
        403,
        "missing-scope",
    )
    # Contact details are for the organisation itself and the operator.
    seen_by_startup = await client.get(f"/organisations/{lyon.org_id}", headers=startup.admin)
    assert seen_by_startup.json()["contact_email"] is None
    seen_by_lyon = await client.get(f"/organisations/{lyon.org_id}", headers=lyon.admin)
    assert seen_by_lyon.json()["contact_email"] == "data@example.org"
    problem(
        await client.get("/organisations/nope", headers=lyon.admin), 404, "organisation-not-found"
    )
    problem(
        await client.get("/organisations", headers=bearer("dpk_nope_nope")), 401, "invalid-api-key"
    )
