"""Seeding the metropolis, idempotently: organisations are found by name,
keys kept in the state folder (and issued again only when they no longer
work), datasets found by slug."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datapolis_demo.metropolis import DATASETS, ORGANISATIONS, SCOPES
from datapolis_demo.platform import Platform, StepFailed, describe

# Keys reach the other services through Kafka; far more than it takes.
KEY_PROPAGATION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Member:
    org_id: str
    key: str


def _load(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


async def seed(
    platform: Platform, state_dir: Path, say: Callable[[str], None]
) -> dict[str, Member]:
    keys_file = state_dir / "keys.json"
    stored = _load(keys_file)
    op = platform.operator_key

    existing = {
        org["name"]: org["org_id"]
        for org in (await platform.call("GET", "catalog", "/organisations", key=op)).json()
    }
    members: dict[str, Member] = {}
    for org in ORGANISATIONS:
        org_id = existing.get(org.name)
        if org_id is None:
            created = await platform.call(
                "POST", "catalog", "/organisations", key=op,
                json={"name": org.name, "kind": org.kind, "contact_email": org.email},
            )  # fmt: skip
            org_id = created.json()["org_id"]
            say(f"organisation {org.name} ({org.kind}) created: {org_id}")
        else:
            say(f"organisation {org.name} found: {org_id}")
        kept = stored.get(org.handle)
        key = kept["key"] if kept and kept.get("org_id") == org_id else None
        if key is not None:
            check = await platform.http.get(
                f"{platform.urls.catalog}/organisations/{org_id}",
                headers={"Authorization": f"Bearer {key}"},
            )
            key = key if check.status_code == 200 else None
        if key is None:
            issued = await platform.call(
                "POST", "catalog", f"/organisations/{org_id}/keys", key=op,
                json={"scopes": SCOPES, "label": "demo metropolis"},
            )  # fmt: skip
            key = issued.json()["token"]
            stored[org.handle] = {"org_id": org_id, "key": key}
            state_dir.mkdir(parents=True, exist_ok=True)
            keys_file.write_text(json.dumps(stored, indent=2))
            keys_file.chmod(0o600)
            say(f"  key issued for {org.name} (kept in {keys_file})")
        members[org.handle] = Member(org_id, key)

    for spec in DATASETS:
        found = await platform.http.get(
            f"{platform.urls.catalog}/datasets/{spec.slug}",
            headers={"Authorization": f"Bearer {op}"},
        )
        publisher = members[spec.publisher.handle]
        if found.status_code == 200:
            if (found.json().get("publisher") or {}).get("org_id") != publisher.org_id:
                raise StepFailed(
                    f"dataset {spec.slug} exists with another publisher; "
                    "run the demo on a fresh platform (make clean, make up)"
                )
            say(f"dataset {spec.slug} found ({spec.access_level}, {spec.theme})")
            continue
        await platform.call(
            "POST", "catalog", "/datasets", key=op, json=spec.body(publisher.org_id)
        )
        say(
            f"dataset {spec.slug} registered ({spec.access_level}, {spec.theme}), "
            f"published by {spec.publisher.name}"
        )
    await _keys_known_everywhere(platform, members, say)
    return members


async def _keys_known_everywhere(
    platform: Platform, members: dict[str, Member], say: Callable[[str], None]
) -> None:
    """Ingest, consent and notify learn a new key from catalog's events: wait
    until each answers something other than 401 to every member's key."""
    probes = [
        ("ingest", "POST", f"/datasets/{DATASETS[0].slug}/records"),
        ("consent", "GET", "/agreements"),
        ("notify", "GET", "/subscriptions"),
    ]
    deadline = time.monotonic() + KEY_PROPAGATION_TIMEOUT_S
    for service, method, path in probes:
        url = getattr(platform.urls, service) + path
        for handle, member in members.items():
            while True:
                answer = await platform.http.request(
                    method, url, headers={"Authorization": f"Bearer {member.key}"},
                    json=[] if method == "POST" else None,
                )  # fmt: skip
                if answer.status_code != 401:
                    break
                if time.monotonic() > deadline:
                    raise StepFailed(
                        f"{service} still does not know {handle}'s key after "
                        f"{KEY_PROPAGATION_TIMEOUT_S:g} s: {describe(answer)}"
                    )
                await asyncio.sleep(0.2)
    say("every organisation's key is known to ingest, consent and notify")
