"""`make demo DEMO_ARGS=--once` against the services as `make up` runs them
(deploy/local/services.sh), on a broker of the test's own: the story is told,
every claim holds, and a second run finds what the first one seeded."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import PrivateKafka, _free_port
from tests.infra import REPO

SERVICES = ("catalog", "ingest", "consent", "notify")


@pytest.fixture
async def stack(
    private_kafka: PrivateKafka, database_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    run_id = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "DATAPOLIS_STATE_DIR": str(tmp_path / "local"),
        "DATABASE_URL": database_url,
        "KAFKA_PORT": str(private_kafka.port),
        "DEMO_PORT": str(_free_port()),
        "DEMO_STATE_DIR": str(tmp_path / "demo"),
    }
    for name in SERVICES:
        env[f"{name.upper()}_PORT"] = str(_free_port())
        env[f"{name.upper()}_WORKER_PORT"] = str(_free_port())
        env[f"{name.upper()}_POSTGRES__DB_SCHEMA"] = f"e2e_demo_{name}_{run_id}"
    script = str(REPO / "deploy/local/services.sh")
    for command in ("migrate", "start"):
        done = await asyncio.create_subprocess_exec(
            script,
            command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(done.communicate(), 180)
        assert done.returncode == 0, out.decode()
    try:
        yield env
    finally:
        stop = await asyncio.create_subprocess_exec(script, "stop", env=env)
        await asyncio.wait_for(stop.wait(), 120)


async def _demo(env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "datapolis_demo", "--once",
        env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 240)
    return process.returncode or 0, out.decode()


@pytest.mark.timeout(600)
async def test_the_demo_tells_its_story_once_and_again(stack: dict[str, str]) -> None:
    code, out = await _demo(stack)
    assert code == 0, out
    for line in (
        "registered (personal, energy)",
        "✔ every record is projected to the granted fields: ['district', 'observed_at', 'people']",
        "✔ the lab receives every consenting resident's readings",
        "✔ stopped within the bound of 1 s",
        "✔ the other 5 residents' records keep flowing",
        "✔ the start-up is notified of the revocation by a signed webhook",
        "✔ datapolis receipt verify crowd-density-revoked.jws: revoked",
        "✔ datapolis ledger verify: the whole ledger is intact",
        "every claim held",
    ):
        assert line in out, out
    assert "✘" not in out, out

    again, out = await _demo(stack)
    assert again == 0, out
    assert "organisation Telco Rhône found" in out, out
    assert "dataset crowd-density found" in out, out
    assert "created:" not in out, out
    assert "key issued" not in out, out
