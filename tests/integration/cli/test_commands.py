"""Every `datapolis` command against the real services, over real HTTP: its
happy path, and the exit code and problem code of its main errors."""

from __future__ import annotations

import json
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import _free_port
from tests.integration.cli.conftest import SCHEMA, Platform, fails, new_org, problem_code, register

pytestmark = pytest.mark.integration

UNTIL = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
PURPOSE = "dpv:ScientificResearch"


def test_org_and_key_commands(platform: Platform) -> None:
    org = platform.ok("org", "create", f"Transit {uuid.uuid4().hex[:6]}", "--kind",
                      "public-authority", "--email", "ops@transit.example")  # fmt: skip
    assert org["kind"] == "public-authority"
    assert org["org_id"] in {o["org_id"] for o in platform.ok("org", "list")}
    assert platform.ok("org", "show", org["org_id"])["name"] == org["name"]
    # --json before the command works as after it.
    first = platform.run("--json", "org", "list")
    assert org["org_id"] in {o["org_id"] for o in first.json()}
    table = platform.run("org", "list")
    assert table.code == 0, table.stderr
    assert org["name"] in table.stdout

    issued = platform.ok("key", "issue", org["org_id"], "--scope", "read", "--label", "ci")
    assert issued["token"].startswith("dpk_")
    assert issued["key_id"] in {k["key_id"] for k in platform.ok("key", "list", org["org_id"])}
    # The new key works for its organisation...
    assert platform.ok("org", "show", org["org_id"], key=issued["token"])["org_id"] == org["org_id"]
    revoked = platform.ok("key", "revoke", org["org_id"], issued["key_id"])
    assert revoked["revoked_at"] is not None

    missing = platform.run("org", "show", "org-does-not-exist")
    assert missing.code == 4, missing.stderr
    assert problem_code(missing) == "organisation-not-found"
    bad_key = platform.run("org", "list", key="dpk_nope_not-a-key")
    assert bad_key.code == 3, bad_key.stderr
    assert problem_code(bad_key) in {"invalid-api-key", "missing-api-key"}
    no_key = platform.run("org", "list", key=None)
    fails(no_key, 3, "missing-api-key")
    invalid = platform.run("org", "create", "X", "--kind", "spaceship", "--email", "a@b.org")
    assert invalid.code == 6, invalid.stderr
    usage = platform.run("org", "create")
    assert usage.code == 2


def test_service_down_is_exit_7_without_a_traceback(platform: Platform) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    result = platform.run("org", "list", DATAPOLIS_CATALOG_URL=down)
    assert result.code == 7, result.stderr
    assert problem_code(result) == "service-unreachable"
    assert "catalog is unavailable" in result.stderr


def test_login_stores_a_private_profile_used_afterwards(platform: Platform, tmp_path: Path) -> None:
    config = tmp_path / "conf" / "config.toml"
    env = {"DATAPOLIS_CONFIG": str(config)}
    refused = platform.run("login", "--api-key", "dpk_nope_wrong", key=None, **env)
    assert refused.code == 3
    assert not config.exists()
    saved = platform.run(
        "--profile", "city", "login", "--api-key", platform_operator_key(),
        "--catalog-url", platform.urls["catalog"], "--default", key=None,
        DATAPOLIS_CATALOG_URL=None, **env,
    )  # fmt: skip
    assert saved.code == 0, saved.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "city" in config.read_text()
    # No key in the environment: the stored profile's is used.
    listed = platform.run("org", "list", "--json", key=None, **env)
    assert listed.code == 0, listed.stderr


def platform_operator_key() -> str:
    from datapolis_shared.settings import DEV_OPERATOR_KEY

    return DEV_OPERATOR_KEY


def test_dataset_commands(platform: Platform, tmp_path: Path) -> None:
    publisher = new_org(platform, "Env Agency", ["publish", "ingest", "read"])
    slug = register(platform, publisher, tmp_path)
    shown = platform.ok("dataset", "show", slug, key=publisher.token)
    assert (shown["schema_version"], shown["access_level"]) == (1, "open")
    assert slug in {d["slug"] for d in platform.ok("dataset", "list", "--all")}
    assert slug in {d["slug"] for d in platform.ok("dataset", "search", "qualité air")}
    assert platform.ok("dataset", "stats", slug)["slug"] == slug

    v2 = {**SCHEMA, "properties": {**SCHEMA["properties"], "no2": {"type": "number"}}}
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    added = platform.ok("dataset", "schema", "add", slug, str(tmp_path / "v2.json"),
                        key=publisher.token)  # fmt: skip
    assert added["version"] == 2
    assert len(platform.ok("dataset", "schema", "list", slug)) == 2

    narrower = {**SCHEMA, "properties": {**SCHEMA["properties"], "pm25": {"type": "string"}}}
    (tmp_path / "bad.json").write_text(json.dumps(narrower))
    conflict = platform.run("dataset", "schema", "add", slug, str(tmp_path / "bad.json"),
                            key=publisher.token)  # fmt: skip
    assert conflict.code == 5, conflict.stderr
    assert problem_code(conflict) == "incompatible-schema"

    (tmp_path / "odd.json").write_text(json.dumps({**SCHEMA, "$schema": "draft-04"}))
    invalid = platform.run("dataset", "register", str(tmp_path / "odd.json"), "--slug",
                           f"odd-{uuid.uuid4().hex[:8]}", "--title", "Odd one", "--theme", "other",
                           "--licence", "cc0-1.0", key=publisher.token)  # fmt: skip
    fails(invalid, 6, "invalid-json-schema")

    missing = platform.run("dataset", "show", "no-such-dataset")
    fails(missing, 4, "dataset-not-found")

    retired = platform.ok("dataset", "retire", slug, "--yes", key=publisher.token)
    assert retired["status"] == "retired"


def test_push_batches_rejects_to_a_file_and_resumes(platform: Platform, tmp_path: Path) -> None:
    publisher = new_org(platform, "Air Watch", ["publish", "ingest", "read"])
    slug = register(platform, publisher, tmp_path)
    source = tmp_path / "readings.ndjson"
    lines = [json.dumps({"id": f"r{i}", "station_id": f"s{i % 3}", "pm25": i}) for i in range(9)]
    lines.insert(4, json.dumps({"id": "bad", "station_id": "s1", "pm25": -5}))
    source.write_text("\n".join(lines) + "\n")
    rejected = tmp_path / "rejected.ndjson"
    args = ("push", slug, str(source), "--batch-size", "4", "--rejected", str(rejected), "--json")
    first = platform.run(*args, key=publisher.token)
    assert first.code == 6, first.stderr
    summary = first.json()
    assert summary["accepted"] == 9
    assert summary["rejected"] == 1
    assert summary["batches"] == 3
    (entry,) = [json.loads(line) for line in rejected.read_text().splitlines()]
    assert entry["position"] == 4
    assert json.loads(entry["record"])["id"] == "bad"
    assert entry["errors"]

    # The same command again: every batch is replayed by ingest, none written twice.
    again = platform.run(*args, key=publisher.token)
    assert again.json()["replayed"] == 3, again.stdout

    csv_file = tmp_path / "readings.csv"
    csv_file.write_text("id,station_id,pm25,count\nc1,s1,12.5,3\nc2,s2,7,4\n")
    from_csv = platform.ok("push", slug, str(csv_file), key=publisher.token)
    assert from_csv["accepted"] == 2
    assert from_csv["rejected"] == 0

    array = json.dumps([{"id": "j1", "station_id": "s1", "pm25": 1.5}])
    from_stdin = platform.ok("push", slug, "-", "--format", "json", key=publisher.token,
                             stdin=array)  # fmt: skip
    assert from_stdin["accepted"] == 1

    tailed = platform.run("tail", slug, "--kafka", "--from-beginning", "--max", "12", "--json",
                          key=publisher.token)  # fmt: skip
    records = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert {r["value"]["id"] for r in records} >= {"r0", "c1", "j1"}
    assert tailed.code == 0, tailed.stderr
    assert records[0]["headers"]["ce_source"].endswith(slug)

    wrong = platform.run("push", slug, str(source), key="dpk_nope_wrong")
    assert wrong.code == 3
    # Ingest answers 503 "not known yet" for a few seconds, then 404 for good.
    unknown = platform.run("push", "no-such-dataset", str(source), "--retry-for", "30",
                           key=publisher.token)  # fmt: skip
    fails(unknown, 4, "dataset-not-found")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    assert platform.run("push", slug, str(broken), key=publisher.token).code == 6
