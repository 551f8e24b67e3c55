"""Each service answers what its OpenAPI document says, under a property-based
tester (schemathesis) that generates valid and invalid requests from it.

The four services run as real processes against the real Kafka and
PostgreSQL. Schemathesis runs against each one twice: with the operator's key,
and with the key of an organisation made here, which publishes a dataset so
the path ids the tester uses exist. Its conformance checks fail the test on a
server error, a status, content type, header or body the document does not
describe, invalid data accepted, or a missing authentication ignored.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from datapolis_shared.settings import DEV_OPERATOR_KEY
from tests.conftest import _free_port
from tests.e2e.service_env import service_env
from tests.infra import REPO

SERVICES = ("catalog", "ingest", "consent", "notify")
# Bounded and deterministic: the same requests on every run, and the whole
# test within about three minutes on a two-core machine.
SEED = 20261202
MAX_EXAMPLES = 25
# Every check that applies to single requests. Left out: positive_data_acceptance
# (a request valid by the schema may still break a business rule: an unknown
# organisation, a slug already taken) and the checks that need the stateful
# phase (use_after_free, ensure_resource_availability), which is off because it
# would revoke the keys and retire the dataset the other operations need.
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "ignored_auth",
    ]
)

OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}
ALL_SCOPES = ["read", "publish", "ingest", "consent", "subscribe", "admin"]


# Data subjects authenticate to consent with a subject token, not a key: the
# service trusts this issuer, and the tester sends its token to /subjects.
SUBJECT_ISSUER = "https://subjects.conformance.example"
SUBJECT_AUDIENCE = "https://consent.conformance.example"
SUBJECT_SIGNER = Ed25519PrivateKey.generate()


def _subject_issuers() -> str:
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(SUBJECT_SIGNER.public_key()))
    return json.dumps(
        [{"issuer": SUBJECT_ISSUER, "audience": SUBJECT_AUDIENCE, "jwks": {"keys": [jwk]}}]
    )


def _subject_token(dataset: str) -> str:
    now = int(time.time())
    claims = {
        "iss": SUBJECT_ISSUER,
        "aud": SUBJECT_AUDIENCE,
        "sub": "conformance-subject",
        "dataset": dataset,
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, SUBJECT_SIGNER, algorithm="EdDSA")


@dataclass
class Service:
    name: str
    url: str
    process: asyncio.subprocess.Process


def _env(name: str, kafka: str, database_url: str, schema: str, port: int) -> dict[str, str]:
    prefix = name.upper()
    return service_env(
        name,
        kafka=kafka,
        database_url=database_url,
        schema=schema,
        port=port,
        **{
            f"{prefix}_LOG_LEVEL": "WARNING",
            # The tester sends hundreds of bad keys from one address on purpose
            # (to check that each operation refuses them); throttled, every later
            # request would get 429 and test nothing.
            f"{prefix}_AUTH__MAX_FAILURES": "1000000",
            **({"CONSENT_SUBJECT_TOKEN_ISSUERS": _subject_issuers()} if name == "consent" else {}),
        },
    )


@pytest.fixture
async def services(
    kafka_bootstrap: str, control_topics: None, database_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, Service]]:
    run_id = uuid.uuid4().hex[:8]
    started: dict[str, Service] = {}
    try:
        for name in SERVICES:
            port = _free_port()
            env = _env(name, kafka_bootstrap, database_url, f"oa_{name}_{run_id}", port)
            migrate = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"datapolis_{name}", "migrate", env=env, cwd=REPO,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, errors = await asyncio.wait_for(migrate.communicate(), 60)
            assert migrate.returncode == 0, errors.decode()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"datapolis_{name}", "api", env=env, cwd=REPO,
                stdout=(tmp_path / f"{name}.log").open("wb"), stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            started[name] = Service(name, f"http://127.0.0.1:{port}", process)
        async with httpx.AsyncClient(timeout=10) as client:
            await _until_ready(client, list(started.values()), timeout_s=90)
        yield started
    finally:
        for service in started.values():
            service.process.terminate()
        for service in started.values():
            try:
                await asyncio.wait_for(service.process.wait(), 20)
            except TimeoutError:
                service.process.kill()
        await _clean_up(kafka_bootstrap, database_url, run_id)


async def _clean_up(kafka_bootstrap: str, database_url: str, run_id: str) -> None:
    """Drops the run's schemas and the topics of the datasets it registered."""
    conn = await asyncpg.connect(database_url)
    try:
        catalog_schema = f"oa_catalog_{run_id}"
        slugs: list[str] = []
        if await conn.fetchval("SELECT to_regclass($1)", f"{catalog_schema}.datasets"):
            slugs = [
                r["slug"] for r in await conn.fetch(f'SELECT slug FROM "{catalog_schema}".datasets')
            ]
        for name in SERVICES:
            await conn.execute(f'DROP SCHEMA IF EXISTS "oa_{name}_{run_id}" CASCADE')
    finally:
        await conn.close()
    if not slugs:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = [
            topic
            for topic in await admin.list_topics()
            for slug in slugs
            if topic in (f"data.{slug}", f"raw.{slug}") or topic.startswith(f"data.{slug}.v")
        ]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


async def _until_ready(
    client: httpx.AsyncClient, services: list[Service], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        codes = {}
        for service in services:
            try:
                codes[service.name] = (await client.get(f"{service.url}/readyz")).status_code
            except httpx.TransportError:
                codes[service.name] = 0
        if all(code == 200 for code in codes.values()):
            return
        assert time.monotonic() < deadline, f"not ready after {timeout_s}s: {codes}"
        await asyncio.sleep(0.25)


@dataclass
class Tenant:
    org_id: str
    token: str
    spare_key_id: str  # a key the tester may revoke
    slug: str
    spare_slug: str  # a dataset the tester may retire


async def _tenant(client: httpx.AsyncClient, services: dict[str, Service]) -> Tenant:
    """An organisation with a key of every scope and a dataset ingest knows."""
    catalog = services["catalog"].url
    suffix = uuid.uuid4().hex[:8]
    org = await client.post(
        f"{catalog}/organisations",
        headers=OPERATOR,
        json={
            "name": f"Conformance {suffix}",
            "kind": "public-authority",
            "contact_email": "data@example.org",
        },
    )
    assert org.status_code == 201, org.text
    org_id = org.json()["org_id"]
    keys = [
        await client.post(
            f"{catalog}/organisations/{org_id}/keys", headers=OPERATOR, json={"scopes": ALL_SCOPES}
        )
        for _ in range(2)
    ]
    assert all(key.status_code == 201 for key in keys), [key.text for key in keys]
    token = keys[0].json()["token"]
    slug, spare_slug = f"conformance-{suffix}", f"conformance-{suffix}-retired"
    for new_slug in (slug, spare_slug):
        dataset = await client.post(
            f"{catalog}/datasets",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "slug": new_slug,
                "title": "Conformance meters",
                "description": "Records the conformance test pushes.",
                "theme": "energy",
                "licence": "odbl-1.0",
                "access_level": "open",
                "key_field": "meter_id",
                "retention_days": 1,
                "partitions": 1,
                "json_schema": {
                    "type": "object",
                    "properties": {"meter_id": {"type": "string"}, "kwh": {"type": "number"}},
                    "required": ["meter_id", "kwh"],
                },
            },
        )
        assert dataset.status_code == 201, dataset.text
    # Ingest learns the dataset and the key from catalog's events.
    deadline = time.monotonic() + 60
    while True:
        pushed = await client.post(
            f"{services['ingest'].url}/datasets/{slug}/records",
            headers={"Authorization": f"Bearer {token}"},
            json=[{"meter_id": "m-1", "kwh": 1.5}],
        )
        if pushed.status_code == 200:
            break
        assert time.monotonic() < deadline, pushed.text
        await asyncio.sleep(0.25)
    return Tenant(org_id, token, keys[1].json()["key_id"], slug, spare_slug)


async def _schemathesis(
    service: Service, token: str, tenant: Tenant, workdir: Path, *, must_pass_auth: bool
) -> str | None:
    """Runs schemathesis against one service; its report if anything failed."""
    run = f"{service.name}-{'organisation' if must_pass_auth else 'operator'}"
    config = workdir / f"{run}.toml"
    # A run whose requests all come back 401/403 (or 429) proves nothing: with
    # the organisation's key (which may do everything here) that fails the test.
    fail_on = [
        "missing_deserializer",
        "unused_openapi_auth",
        "unresolvable_reference",
        "rate_limited",
    ]
    if must_pass_auth:
        fail_on.append("missing_auth")
    config.write_text(
        "[parameters]\n"
        f'"path.slug" = "{tenant.slug}"\n'
        f'"path.org_id" = "{tenant.org_id}"\n'
        f'"path.key_id" = "{tenant.spare_key_id}"\n'
        # The version the tenant's dataset has: another one is a 503 while
        # ingest waits for catalog to announce it (documented, retryable).
        '"header.Datapolis-Schema-Version" = "1"\n'
        "[warnings]\n"
        f"fail-on = {fail_on!r}\n".replace("'", '"')
    )
    if service.name == "catalog":
        with config.open("a") as toml:
            # The example dataset's topics are no business of a test on a broker
            # that a local platform may share: its register is fuzzed, not replayed.
            toml.write(
                '[[operations]]\ninclude-path = "/datasets"\ninclude-method = "POST"\n'
                "phases.examples.enabled = false\n"
            )
            # Retiring takes a dataset of its own: the others keep theirs active.
            toml.write(
                '[[operations]]\ninclude-path = "/datasets/{slug}"\ninclude-method = "DELETE"\n'
                f'parameters = {{ "path.slug" = "{tenant.spare_slug}" }}\n'
            )
    if service.name == "notify":
        with config.open("a") as toml:
            # A stream that answers 200 never ends: the tester reads only
            # its refusals, on a subscription that does not exist.
            toml.write(
                '[[operations]]\ninclude-path = "/subscriptions/{subscription_id}/events"\n'
                'parameters = { "path.subscription_id" = "sub-conformance-none" }\n'
            )
    if service.name == "consent":
        with config.open("a") as toml:
            toml.write(
                '[[operations]]\ninclude-path-regex = "^/subjects/"\n'
                f'headers = {{ Authorization = "Bearer {_subject_token(tenant.slug)}" }}\n'
            )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
        "run", f"{service.url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--no-shrink",
        "--workers", "1",
        "--output-truncate", "false",
        "--no-color",
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    (workdir / f"{run}.txt").write_text(report)
    return None if process.returncode == 0 else report


@pytest.mark.timeout(300)
async def test_every_service_answers_as_its_openapi_document_says(
    services: dict[str, Service], tmp_path: Path
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        tenant = await _tenant(client, services)
    failures: list[str] = []
    for name in ("ingest", "consent", "notify", "catalog"):
        for who, token in (("organisation", tenant.token), ("operator", DEV_OPERATOR_KEY)):
            report = await _schemathesis(
                services[name], token, tenant, tmp_path, must_pass_auth=who == "organisation"
            )
            if report is not None:
                failures.append(f"===== {name} with the {who}'s key\n{report}")
    assert not failures, "\n".join(failures)
