"""Agreements, receipts, the ledger, data-subject consents and subscriptions
from the command line, against the real services."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.cli.conftest import Org, Platform, fails, new_org, notify_knows, register

pytestmark = pytest.mark.integration

UNTIL = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
PURPOSE = "dpv:ScientificResearch"


def _request(platform: Platform, slug: str, consumer: Org) -> str:
    # consent learns of the dataset and the consumer's key from Kafka.
    created = platform.until_ok(
        "agreement", "request", slug, "--project", "Footfall", "--purpose", PURPOSE,
        "--field", "station_id", "--field", "pm25", "--field", "district", "--until", UNTIL,
        key=consumer.token,
    )  # fmt: skip
    assert created["status"] == "requested"
    return str(created["agreement_id"])


def test_agreement_commands_receipts_and_ledger(platform: Platform, tmp_path: Path) -> None:
    publisher = new_org(platform, "Telecom", ["publish", "ingest", "read", "consent"])
    consumer = new_org(platform, "Start-up", ["read", "consent", "subscribe"])
    slug = register(platform, publisher, tmp_path, access_level="shared")
    agreement = _request(platform, slug, consumer)

    not_publisher = platform.run("agreement", "grant", agreement, key=consumer.token)
    fails(not_publisher, 3, "not-the-publisher")
    receipt = tmp_path / "grant.jws"
    granted = platform.until_ok("agreement", "grant", agreement, "--field", "station_id",
                                "--field", "pm25", "--receipt", str(receipt),
                                key=publisher.token)  # fmt: skip
    assert granted["agreement"]["granted_fields"] == ["station_id", "pm25"]
    again = platform.run("agreement", "grant", agreement, key=publisher.token)
    fails(again, 5, "agreement-not-pending")

    verified = platform.ok("receipt", "verify", str(receipt))
    assert verified["payload"]["header"]["record_id"] == agreement
    jwks = tmp_path / "jwks.json"
    # Offline: the JWKS from a file, consent unreachable.
    jwks.write_text(httpx.get(f"{platform.urls['consent']}/.well-known/jwks.json").text)
    offline = platform.ok("receipt", "verify", str(receipt), "--jwks", str(jwks),
                          DATAPOLIS_CONSENT_URL="http://127.0.0.1:9")  # fmt: skip
    assert offline["payload"]["event"]["type"] == "granted"
    head, payload, signature = receipt.read_text().strip().split(".")
    forged = tmp_path / "forged.jws"
    forged.write_text(f"{head}.{payload}.{signature[:-4]}AAAA")
    refused = platform.run("receipt", "verify", str(forged), "--jwks", str(jwks))
    fails(refused, 6, "bad-signature")

    amended = platform.ok("agreement", "amend", agreement, "--field", "pm25", key=publisher.token)
    assert amended["agreement"]["granted_fields"] == ["pm25"]
    assert agreement in {a["agreement_id"] for a in platform.ok("agreement", "list",
                                                              key=consumer.token)}  # fmt: skip
    assert platform.ok("agreement", "show", agreement, key=consumer.token)["status"] == "granted"
    revoked = platform.ok("agreement", "revoke", agreement, "--reason", "project over",
                          key=publisher.token)  # fmt: skip
    assert revoked["agreement"]["status"] == "revoked"
    assert revoked["deliveries_stop_within_s"] is not None

    refused_request = _request(platform, slug, consumer)
    refusal = platform.ok("agreement", "refuse", refused_request, "--reason", "no",
                          key=publisher.token)  # fmt: skip
    assert refusal["agreement"]["status"] == "refused"
    to_end = _request(platform, slug, consumer)
    platform.ok("agreement", "grant", to_end, key=publisher.token)
    ended = platform.ok("agreement", "terminate", to_end, "--reason", "done", key=consumer.token)
    assert ended["agreement"]["status"] == "terminated"

    unknown = platform.run("agreement", "show", str(uuid.uuid4()), key=consumer.token)
    fails(unknown, 4, "agreement-not-found")
    bad_purpose = platform.run("agreement", "request", slug, "--project", "p", "--purpose",
                               "dpv:Nope", "--field", "pm25", "--until", UNTIL,
                               key=consumer.token)  # fmt: skip
    fails(bad_purpose, 6, "unknown-purposes")

    verified_ledger = platform.ok("ledger", "verify")
    assert verified_ledger["ok"] is True
    assert verified_ledger["rows"] >= 6
    assert platform.ok("ledger", "verify", "--agreement", agreement)["ok"] is True


def test_consent_commands_as_a_data_subject(platform: Platform, tmp_path: Path) -> None:
    publisher = new_org(platform, "Energy", ["publish", "ingest", "read", "consent"])
    lab = new_org(platform, "Lab", ["read", "consent", "subscribe"], kind="research")
    slug = register(platform, publisher, tmp_path, access_level="personal",
                    subject_field="resident")  # fmt: skip
    agreement = _request(platform, slug, lab)
    platform.until_ok("agreement", "grant", agreement, key=publisher.token)
    token = platform.subject_token("resident-7", slug)

    receipt = tmp_path / "consent.jws"
    granted = platform.ok("consent", "grant", slug, "--consumer", lab.org_id, "--purpose",
                          PURPOSE, "--until", UNTIL, "--receipt", str(receipt),
                          key=None, subject=token)  # fmt: skip
    consent_id = granted["consent"]["consent_id"]
    assert granted["consent"]["effective"] is True
    assert platform.ok("receipt", "verify", str(receipt))["payload"]["header"]["record_id"] == (
        consent_id
    )
    assert [c["consent_id"] for c in platform.ok("consent", "list", key=None, subject=token)] == [
        consent_id
    ]
    assert platform.ok("consent", "show", consent_id, key=None, subject=token)["status"] == (
        "granted"
    )
    withdrawn = platform.ok("consent", "withdraw", consent_id, key=None, subject=token)
    assert withdrawn["consent"]["status"] == "withdrawn"
    exported = platform.run("consent", "export", key=None, subject=token)
    assert exported.code == 0
    assert exported.json()["consents"][0]["consent_id"] == consent_id
    out = tmp_path / "mine.json"
    assert platform.run("consent", "export", "-o", str(out), key=None, subject=token).code == 0
    assert json.loads(out.read_text())["subject_id"]

    unknown = platform.run("consent", "show", str(uuid.uuid4()), key=None, subject=token)
    fails(unknown, 4, "consent-not-found")
    expired = platform.subject_token("resident-7", slug, exp=1)
    assert platform.run("consent", "list", key=None, subject=expired).code == 3
    assert platform.run("consent", "list", key=None, subject="not-a-jwt").code == 3
    no_token = platform.run("consent", "list", key=None)
    fails(no_token, 3, "missing-subject-token")


def test_subscription_commands(platform: Platform, tmp_path: Path) -> None:
    publisher = new_org(platform, "Water", ["publish", "ingest", "read"])
    consumer = new_org(platform, "Partner", ["read", "subscribe"])
    slug = register(platform, publisher, tmp_path)
    notify_knows(platform, slug, publisher)
    created = platform.until_ok("subscription", "create", "--dataset", slug, "--channel",
                                "webhook", "--url", "https://partner.example/hooks",
                                key=consumer.token)  # fmt: skip
    sub = created["subscription_id"]
    assert created["signing_key"]["secret"].startswith("whsec_")
    assert sub in {s["subscription_id"] for s in platform.ok("subscription", "list", "--all",
                                                             key=consumer.token)}  # fmt: skip
    assert platform.ok("subscription", "show", sub, key=consumer.token)["channel"] == "webhook"
    queued = platform.ok("subscription", "test", sub, key=consumer.token)
    assert queued["event_type"] == "org.datapolis.notify.test.v1"
    assert platform.ok("subscription", "health", sub, key=consumer.token)["subscription_id"] == sub
    assert platform.ok("subscription", "dead-letters", "--subscription", sub,
                       key=consumer.token) == []  # fmt: skip
    assert platform.ok("subscription", "replay", "--subscription", sub,
                       key=consumer.token)["replayed"] == 0  # fmt: skip
    missing = platform.run("subscription", "replay", "msg_nope", key=consumer.token)
    fails(missing, 4, "dead-letter-not-found")
    assert platform.run("subscription", "replay", key=consumer.token).code == 2

    bad_url = platform.run("subscription", "create", "--dataset", slug, "--url",
                           "http://169.254.169.254/latest", key=consumer.token)  # fmt: skip
    fails(bad_url, 6, "invalid-webhook-url")
    other = platform.run("subscription", "show", sub, key=publisher.token)
    assert other.code in (3, 4), other.stderr
    assert platform.ok("subscription", "delete", sub, key=consumer.token) == {"deleted": sub}
    gone = platform.run("subscription", "health", sub, key=consumer.token)
    fails(gone, 4, "subscription-not-found")
