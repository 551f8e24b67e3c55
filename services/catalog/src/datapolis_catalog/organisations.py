"""Organisations and their API keys.

Catalog is the source of keys: it stores their hashes in its own ``api_keys``
table and announces every issue and revocation on ``datapolis.catalog.events``
through the outbox, in the same transaction, so the other services (which
verify keys locally from those events) never miss one. The secret is shown to
its owner once, in the answer to the request that created it.

Object-level rule: an organisation sees and manages only its own keys (with the
``admin`` scope, and never granting a scope its own key lacks); the operator
manages everyone's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from datapolis_catalog.vocabulary import OrganisationKind
from datapolis_shared.auth import SCOPES, Principal, generate_key, revoke_key, save_key
from datapolis_shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from datapolis_shared.events.catalog import ApiKeyIssued, ApiKeyRevoked, OrganisationRegistered
from datapolis_shared.postgres import outbox
from datapolis_shared.postgres.pool import Connection, Pool

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

INSERT_ORGANISATION = """
INSERT INTO organisations (org_id, name, kind, contact_email) VALUES ($1, $2, $3, $4)
RETURNING org_id, name, kind, contact_email, created_at
"""
SELECT_ORGANISATION = """
SELECT org_id, name, kind, contact_email, created_at FROM organisations WHERE org_id = $1
"""
SELECT_ORGANISATIONS = """
SELECT org_id, name, kind, contact_email, created_at FROM organisations ORDER BY lower(name)
"""
# The publishers of active datasets, as public exports describe them.
SELECT_PUBLISHER_PROFILES = """
SELECT o.org_id, o.name, o.kind, o.contact_email FROM organisations o
WHERE EXISTS (SELECT 1 FROM datasets d WHERE d.publisher_id = o.org_id AND d.status = 'active')
"""
SELECT_PUBLISHER_PROFILE = """
SELECT org_id, name, kind, contact_email FROM organisations WHERE org_id = $1
"""
SET_KEY_LABEL = "UPDATE api_keys SET label = $2 WHERE key_id = $1"
SELECT_KEYS = """
SELECT key_id, org_id, scopes, label, issued_at, revoked_at FROM api_keys
WHERE org_id = $1 ORDER BY issued_at, key_id
"""
SELECT_KEY_FOR_UPDATE = """
SELECT key_id, org_id, scopes, label, issued_at, revoked_at FROM api_keys
WHERE key_id = $1 AND org_id = $2 FOR UPDATE
"""


class NewOrganisation(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Métropole de Lyon",
                    "kind": "public-authority",
                    "contact_email": "data@example.org",
                }
            ]
        },
    )

    name: str = Field(min_length=2, max_length=200)
    kind: OrganisationKind
    contact_email: str = Field(
        pattern=EMAIL_PATTERN,
        max_length=254,
        description="A functional address: once the organisation publishes a dataset, it is "
        "the dataset's public contact point (DCAT-AP export and public page).",
    )


class Organisation(BaseModel):
    org_id: str
    name: str
    kind: OrganisationKind
    # Shown to the operator and to the organisation itself only.
    contact_email: str | None = None
    created_at: datetime


@dataclass(frozen=True)
class PublisherProfile:
    """What the public exports say of a dataset's publisher. Its contact email
    is the contact point of the datasets it publishes (DCAT-AP
    ``dcat:contactPoint``), so it is public for publishers of active datasets."""

    org_id: str
    name: str
    kind: OrganisationKind
    contact_email: str


class NewApiKey(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"scopes": ["publish", "ingest", "read"], "label": "meters"}]
        },
    )

    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES))
    label: str | None = Field(default=None, max_length=200)


class ApiKey(BaseModel):
    """A key as listed: never its secret, never its hash."""

    key_id: str
    org_id: str
    scopes: list[str]
    label: str | None
    issued_at: datetime
    revoked_at: datetime | None


class IssuedApiKey(ApiKey):
    token: str = Field(description="The key itself. Shown once: store it now.")


def _organisation(row: Any, caller: Principal) -> Organisation:
    sees_contact = caller.is_operator or caller.org_id == row["org_id"]
    return Organisation(
        org_id=row["org_id"],
        name=row["name"],
        kind=row["kind"],
        contact_email=row["contact_email"] if sees_contact else None,
        created_at=row["created_at"],
    )


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        org_id=row["org_id"],
        scopes=sorted(row["scopes"]),
        label=row["label"],
        issued_at=row["issued_at"],
        revoked_at=row["revoked_at"],
    )


async def register_organisation(
    pool: Pool, caller: Principal, command: NewOrganisation
) -> Organisation:
    caller.require_operator()
    org_id = str(uuid.uuid4())
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                INSERT_ORGANISATION, org_id, command.name, command.kind, command.contact_email
            )
            await outbox.enqueue(
                conn, OrganisationRegistered(org_id=org_id, name=command.name, kind=command.kind)
            )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(
            f"an organisation named {command.name!r} already exists", code="organisation-exists"
        ) from exc
    return _organisation(row, caller)


async def list_organisations(pool: Pool, caller: Principal) -> list[Organisation]:
    return [_organisation(row, caller) for row in await pool.fetch(SELECT_ORGANISATIONS)]


async def get_organisation(pool: Pool, caller: Principal, org_id: str) -> Organisation:
    row = await pool.fetchrow(SELECT_ORGANISATION, org_id)
    if row is None:
        raise NotFound(f"no organisation {org_id!r}", code="organisation-not-found")
    return _organisation(row, caller)


async def _require_key_admin(conn: Connection | Pool, caller: Principal, org_id: str) -> None:
    """The operator, or an ``admin`` key of this very organisation."""
    if caller.is_operator:
        if await conn.fetchrow(SELECT_ORGANISATION, org_id) is None:
            raise NotFound(f"no organisation {org_id!r}", code="organisation-not-found")
        return
    if caller.org_id != org_id:
        raise Forbidden("an organisation manages only its own keys", code="not-your-organisation")
    caller.require("admin")


async def issue_key(pool: Pool, caller: Principal, org_id: str, command: NewApiKey) -> IssuedApiKey:
    scopes = sorted(set(command.scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise InvalidInput(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}",
            code="unknown-scope",
        )
    if not caller.is_operator:
        beyond = [s for s in scopes if s not in caller.scopes]
        if beyond:
            raise Forbidden(
                f"a key cannot grant scopes it lacks itself: {', '.join(beyond)}",
                code="scope-escalation",
            )
    new_key = generate_key()
    issued_at = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        await _require_key_admin(conn, caller, org_id)
        await save_key(
            conn,
            key_id=new_key.key_id,
            org_id=org_id,
            scopes=scopes,
            secret_hash=new_key.secret_hash,
            issued_at=issued_at,
        )
        await conn.execute(SET_KEY_LABEL, new_key.key_id, command.label)
        await outbox.enqueue(
            conn,
            ApiKeyIssued(
                key_id=new_key.key_id,
                org_id=org_id,
                scopes=scopes,
                secret_hash=new_key.secret_hash,
                issued_at=issued_at,
            ),
        )
    return IssuedApiKey(
        key_id=new_key.key_id,
        org_id=org_id,
        scopes=scopes,
        label=command.label,
        issued_at=issued_at,
        revoked_at=None,
        token=new_key.token,
    )


async def list_keys(pool: Pool, caller: Principal, org_id: str) -> list[ApiKey]:
    await _require_key_admin(pool, caller, org_id)
    return [_api_key(row) for row in await pool.fetch(SELECT_KEYS, org_id)]


async def revoke(pool: Pool, caller: Principal, org_id: str, key_id: str) -> ApiKey:
    """Revoke a key; revoking a revoked key again changes nothing."""
    async with pool.acquire() as conn, conn.transaction():
        await _require_key_admin(conn, caller, org_id)
        row = await conn.fetchrow(SELECT_KEY_FOR_UPDATE, key_id, org_id)
        if row is None:
            raise NotFound(
                f"organisation {org_id!r} has no key {key_id!r}", code="api-key-not-found"
            )
        if row["revoked_at"] is not None:
            return _api_key(row)
        revoked_at = datetime.now(UTC)
        await revoke_key(conn, key_id, revoked_at)
        await outbox.enqueue(
            conn, ApiKeyRevoked(key_id=key_id, org_id=org_id, revoked_at=revoked_at)
        )
    return _api_key({**dict(row), "revoked_at": revoked_at})


def _publisher_profile(row: Any) -> PublisherProfile:
    return PublisherProfile(
        org_id=row["org_id"], name=row["name"], kind=row["kind"], contact_email=row["contact_email"]
    )


async def publisher_profiles(pool: Pool) -> dict[str, PublisherProfile]:
    """The publishers of every active dataset, by organisation id."""
    rows = await pool.fetch(SELECT_PUBLISHER_PROFILES)
    return {row["org_id"]: _publisher_profile(row) for row in rows}


async def publisher_profile(pool: Pool, org_id: str) -> PublisherProfile:
    row = await pool.fetchrow(SELECT_PUBLISHER_PROFILE, org_id)
    if row is None:
        raise NotFound(f"no organisation {org_id!r}", code="organisation-not-found")
    return _publisher_profile(row)
