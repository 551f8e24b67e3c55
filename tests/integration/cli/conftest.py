"""The four services as processes on ports of the tests' own, each on a
PostgreSQL schema of its own, and the `datapolis` console script run against
them as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from datapolis_shared.settings import DEV_OPERATOR_KEY
from tests.conftest import _free_port
from tests.infra import REPO
from tests.integration.catalog.conftest import delete_topics

SERVICES = ("catalog", "ingest", "consent", "notify")
DATAPOLIS = str(Path(sys.executable).parent / "datapolis")
# Generous: five processes and a broker share two cores with other work.
READY_WAIT_S = 180
SUBJECT_ISSUER = "https://subjects.test.example"
SUBJECT_AUDIENCE = "datapolis-consent"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Platform:
    urls: dict[str, str]
    schemas: dict[str, str]
    database_url: str
    kafka: str
    config: Path
    subject_key: Ed25519PrivateKey
    topics: list[str] = field(default_factory=list)

    def env(self, **extra: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPOLIS_")}
        env.update({f"DATAPOLIS_{name.upper()}_URL": url for name, url in self.urls.items()})
        env["DATAPOLIS_CONFIG"] = str(self.config)
        env["DATAPOLIS_KAFKA_BOOTSTRAP_SERVERS"] = self.kafka
        env["COLUMNS"] = "200"
        for k, v in extra.items():
            if v is not None:
                env[k] = v
        return env

    def run(
        self, *args: str, key: str | None = DEV_OPERATOR_KEY, subject: str | None = None,
        stdin: str | None = None, timeout: float = 90, **env: str | None,
    ) -> Result:  # fmt: skip
        """``datapolis args...`` with ``key`` as DATAPOLIS_API_KEY."""
        completed = subprocess.run(
            [DATAPOLIS, *args],
            env=self.env(DATAPOLIS_API_KEY=key, DATAPOLIS_SUBJECT_TOKEN=subject, **env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = Result(completed.returncode, completed.stdout, completed.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def ok(self, *args: str, **kwargs: Any) -> Any:
        """Run with --json; must exit 0; the parsed output."""
        result = self.run(*args, "--json", **kwargs)
        assert result.code == 0, f"{args}: exit {result.code}\n{result.stderr}\n{result.stdout}"
        return result.json()

    def until_ok(self, *args: str, timeout_s: float = 60, **kwargs: Any) -> Any:
        """``ok`` once the services have learnt what the test just did
        elsewhere (a key, a dataset): retried while it is unknown to them."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.run(*args, "--json", **kwargs)
            if result.code == 0:
                return result.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"{args}: exit {result.code}\n{result.stderr}")
            time.sleep(0.3)

    def subject_token(self, subject: str, dataset: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": SUBJECT_ISSUER, "aud": SUBJECT_AUDIENCE, "sub": subject,
                   "dataset": dataset, "iat": now, "exp": now + 600, **claims}  # fmt: skip
        return jwt.encode(payload, self.subject_key, algorithm="EdDSA", headers={"kid": "s1"})

    def sql(self, service: str, query: str, *args: Any) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.database_url)
            try:
                await conn.execute(f'SET search_path TO "{self.schemas[service]}"')
                await conn.execute(query, *args)
            finally:
                await conn.close()

        asyncio.run(run())


def problem_code(result: Result) -> str:
    """The problem code the command printed on stderr."""
    for line in result.stderr.splitlines():
        if line.strip().startswith("code:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no code in: {result.stderr}")


def fails(result: Result, exit_code: int, code: str) -> None:
    """The command exited with ``exit_code``, showing the problem ``code``."""
    assert result.code == exit_code, result.stderr
    assert problem_code(result) == code, result.stderr


def _service_env(
    name: str, kafka: str, database_url: str, schema: str, port: int, run_id: str, issuers: str
) -> dict[str, str]:
    prefix = name.upper()
    env = {
        **os.environ,
        f"{prefix}_DEV": "true",
        f"{prefix}_SERVICE_NAME": f"cli{name}{run_id}",
        f"{prefix}_KAFKA__BOOTSTRAP_SERVERS": kafka,
        f"{prefix}_POSTGRES__DSN": database_url,
        f"{prefix}_POSTGRES__DB_SCHEMA": schema,
        f"{prefix}_HTTP__PORT": str(port),
        f"{prefix}_LOG_JSON": "true",
    }
    if name == "consent":
        env["CONSENT_SUBJECT_TOKEN_ISSUERS"] = issuers
    return env


@pytest.fixture(scope="session")
def platform(
    kafka_bootstrap: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    run_id = uuid.uuid4().hex[:8]
    logs = tmp_path_factory.mktemp("cli-services")
    subject_key = Ed25519PrivateKey.generate()
    public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(subject_key.public_key()))
    issuers = json.dumps([{"issuer": SUBJECT_ISSUER, "audience": SUBJECT_AUDIENCE,
                           "jwks": {"keys": [{**public, "kid": "s1"}]}}])  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    schemas: dict[str, str] = {}
    try:
        for name in SERVICES:
            port = _free_port()
            schemas[name] = f"cli_{name}_{run_id}"
            env = _service_env(
                name, kafka_bootstrap, database_url, schemas[name], port, run_id, issuers
            )
            module = f"datapolis_{name}"
            subprocess.run(
                [sys.executable, "-m", module, "migrate"], env=env, cwd=REPO, check=True,
                capture_output=True, timeout=120,
            )  # fmt: skip
            log = (logs / f"{name}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", module, "api"],
                    env=env,
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            urls[name] = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_WAIT_S
        with httpx.Client(timeout=5) as client:
            for name, url in urls.items():
                while True:
                    try:
                        if client.get(f"{url}/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        tail = (logs / f"{name}.log").read_text()[-3000:]
                        pytest.fail(f"{name} not ready after {READY_WAIT_S}s:\n{tail}")
                    time.sleep(0.3)
        yield Platform(
            urls, schemas, database_url, kafka_bootstrap,
            tmp_path_factory.mktemp("cli-config") / "config.toml", subject_key,
        )  # fmt: skip
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

        async def drop() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                if "catalog" in schemas:
                    # The datasets' topics catalog created for the tests.
                    with contextlib.suppress(asyncpg.UndefinedTableError):
                        rows = await conn.fetch(
                            f'SELECT topic_name FROM "{schemas["catalog"]}".dataset_topics'
                        )
                        await delete_topics(kafka_bootstrap, [r["topic_name"] for r in rows])
                for schema in schemas.values():
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())


@dataclass(frozen=True)
class Org:
    org_id: str
    token: str
    key_id: str


def new_org(platform: Platform, name: str, scopes: list[str], kind: str = "company") -> Org:
    org = platform.ok("org", "create", f"{name} {uuid.uuid4().hex[:6]}", "--kind", kind,
                      "--email", "ops@example.org")  # fmt: skip
    args = ["key", "issue", org["org_id"], "--label", "tests"]
    for scope in scopes:
        args += ["--scope", scope]
    issued = platform.ok(*args)
    return Org(org["org_id"], issued["token"], issued["key_id"])


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "station_id": {"type": "string"},
        "pm25": {"type": "number", "minimum": 0},
        "count": {"type": "integer"},
        "district": {"type": "string"},
        "resident": {"type": "string"},
    },
    "required": ["station_id", "pm25"],
}


def register(
    platform: Platform, publisher: Org, tmp: Path, access_level: str = "open",
    subject_field: str | None = None,
) -> str:  # fmt: skip
    slug = f"air-{uuid.uuid4().hex[:10]}"
    schema_file = tmp / f"{slug}.schema.json"
    schema = SCHEMA
    if subject_field:
        # A personal dataset's records must each name their subject.
        schema = {**SCHEMA, "required": [*SCHEMA["required"], subject_field]}
    schema_file.write_text(json.dumps(schema))
    args = ["dataset", "register", str(schema_file), "--slug", slug, "--title",
            "Qualité de l'air", "--theme", "environment", "--licence", "etalab-2.0",
            "--access-level", access_level, "--key-field", "station_id", "--partitions", "1",
            "--keyword", "air"]  # fmt: skip
    if subject_field:
        args += ["--subject-field", subject_field]
    created = platform.ok(*args, key=publisher.token)
    assert created["slug"] == slug
    return slug


def notify_knows(platform: Platform, slug: str, publisher: Org) -> dict[str, Any]:
    """Writes notify's projection of the dataset (its worker's job, which
    these tests do not run); the dataset as catalog shows it."""
    dataset: dict[str, Any] = platform.ok("dataset", "show", slug)
    platform.sql(
        "notify",
        """INSERT INTO datasets (dataset_id, slug, publisher_id, access_level, topic_name,
               key_field, theme, schema_version, fields)
           VALUES ($1, $2, $3, $4, $5, 'station_id', 'environment', 1, $6)""",
        dataset["dataset_id"], slug, publisher.org_id, dataset["access_level"],
        dataset["topic"], list(SCHEMA["properties"]),
    )  # fmt: skip
    return dataset
