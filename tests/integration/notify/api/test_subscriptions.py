"""Subscriptions against the real database: who may subscribe to what, each
refusal's problem code, signing keys and their rotation, health, re-enabling,
the test notification, and that no organisation reaches another's."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.integration.notify.api.conftest import OPERATOR, Notify, Org, problem

HOOK = "https://partner.example/hooks/datapolis"


async def _parties(notify: Notify) -> tuple[Org, Org, Org]:
    return await notify.org("pub"), await notify.org("con"), await notify.org("other")


async def _subscribe(notify: Notify, who: Org, **body: Any) -> dict[str, Any]:
    response = await notify.client.post("/subscriptions", json=body, headers=who.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/subscriptions/{created['subscription_id']}"
    return created


async def test_a_consumer_with_a_granted_agreement_subscribes_by_slug_and_gets_its_secret_once(
    notify: Notify,
) -> None:
    publisher, consumer, _ = await _parties(notify)
    dataset_id, slug = await notify.dataset(publisher)
    await notify.agreement(dataset_id, publisher, consumer)

    created = await _subscribe(
        notify, consumer, dataset=slug, channel="webhook", url=HOOK,
        purpose="dpv:ScientificResearch", fields=["meter_id", "kwh"],
        filter={"district": "Centre"}, notifications=["agreements", "endpoint"],
        batch={"max_records": 50, "linger_ms": 5},
    )  # fmt: skip

    assert created["dataset_id"] == dataset_id
    assert created["consumer_id"] == consumer.org_id
    assert created["fields"] == ["meter_id", "kwh"]
    assert created["filter"] == {"district": "Centre"}
    assert created["batch"] == {"max_records": 50, "linger_ms": 5}
    assert created["status"] == "active"
    secret = created["signing_key"]["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    # Kept for the worker, never shown again.
    stored = await notify.pool.fetchval(
        "SELECT secret FROM subscription_secrets WHERE subscription_id = $1",
        created["subscription_id"],
    )
    assert stored == secret
    again = await notify.client.get(
        f"/subscriptions/{created['subscription_id']}", headers=consumer.headers
    )
    assert again.status_code == 200
    assert secret not in again.text
    assert [k["scheme"] for k in again.json()["keys"]] == ["v1"]


async def test_v1a_answers_the_public_key_that_matches_the_kept_private_key(
    notify: Notify,
) -> None:
    publisher, consumer, _ = await _parties(notify)
    _, slug = await notify.dataset(publisher, access_level="open")

    created = await _subscribe(
        notify, consumer, dataset=slug, channel="webhook", url=HOOK, signature_scheme="v1a"
    )

    shown = created["signing_key"]
    assert shown["scheme"] == "v1a"
    assert shown["secret"] is None
    assert shown["public_key"].startswith("whpk_")
    private = await notify.pool.fetchval(
        "SELECT secret FROM subscription_secrets WHERE subscription_id = $1",
        created["subscription_id"],
    )
    assert private.startswith("whsk_")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private[5:]))
    verifier = Ed25519PublicKey.from_public_bytes(base64.b64decode(shown["public_key"][5:]))
    verifier.verify(signer.sign(b"msg_1.1700000000.{}"), b"msg_1.1700000000.{}")


async def test_open_datasets_need_no_agreement_and_kafka_names_the_topic(notify: Notify) -> None:
    publisher, consumer, _ = await _parties(notify)
    dataset_id, slug = await notify.dataset(publisher, access_level="open")

    created = await _subscribe(notify, consumer, dataset=dataset_id, channel="kafka")

    assert created["kafka_topic"] == f"deliver.{consumer.org_id}.{slug}"
    assert created["signing_key"] is None
    assert created["url"] is None


async def test_notifications_only_subscription(notify: Notify) -> None:
    consumer = await notify.org("con")
    created = await _subscribe(
        notify, consumer, channel="sse", notifications=["agreements"], themes=["energy"]
    )
    assert created["dataset_id"] is None
    assert created["themes"] == ["energy"]
    response = await notify.client.post(
        "/subscriptions", json={"channel": "sse"}, headers=consumer.headers
    )
    problem(response, 422, "nothing-to-deliver")


async def test_every_refusal_has_its_own_code(notify: Notify) -> None:
    publisher, consumer, other = await _parties(notify)
    shared_id, shared = await notify.dataset(publisher)
    personal_id, personal = await notify.dataset(publisher, access_level="personal")
    _, retired = await notify.dataset(publisher, access_level="open", retired=True)
    await notify.agreement(shared_id, publisher, consumer)
    await notify.agreement(personal_id, publisher, consumer)
    # Not in force: revoked, or expired by its period.
    await notify.agreement(shared_id, publisher, other, status="revoked")
    await notify.agreement(
        personal_id, publisher, other, valid_until=datetime.now(UTC) - timedelta(minutes=1)
    )

    async def post(who: Org, **body: Any) -> Any:
        return await notify.client.post("/subscriptions", json=body, headers=who.headers)

    problem(
        await post(consumer, dataset="no-such-dataset", channel="sse"), 404, "dataset-not-found"
    )
    problem(await post(consumer, dataset=retired, channel="sse"), 409, "dataset-retired")
    problem(await post(other, dataset=shared, channel="sse"), 403, "no-active-agreement")
    problem(
        await post(other, dataset=personal, channel="sse", purpose="dpv:ScientificResearch"),
        403,
        "no-active-agreement",
    )
    missing = problem(
        await post(consumer, dataset=personal, channel="sse"), 422, "purpose-required"
    )
    assert missing["purposes"] == ["dpv:ScientificResearch"]
    problem(
        await post(consumer, dataset=personal, channel="sse", purpose="dpv:Marketing"),
        422,
        "purpose-not-agreed",
    )
    unknown = problem(
        await post(consumer, dataset=shared, channel="sse", fields=["kwh", "favourite_colour"]),
        422,
        "unknown-fields",
    )
    assert unknown["fields"] == ["favourite_colour"]
    problem(
        await post(consumer, dataset=shared, channel="sse", filter={"colour": "red"}),
        422,
        "unknown-fields",
    )
    # household is in the dataset but not granted: filtering on it would leak it.
    problem(
        await post(consumer, dataset=shared, channel="sse", filter={"household": "h-1"}),
        422,
        "filter-field-not-granted",
    )
    for url, reason in (
        ("ftp://partner.example/x", "scheme-not-allowed"),
        ("https://user:pw@partner.example/x", "userinfo-not-allowed"),
        ("http://partner.example/x", "https-required"),
        ("https://127.0.0.1:8080/x", "loopback"),
        ("https://192.168.1.10/x", "private"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
    ):
        refused = problem(
            await post(consumer, dataset=shared, channel="webhook", url=url),
            422,
            "invalid-webhook-url",
        )
        assert refused["reason"] == reason
    problem(await post(consumer, dataset=shared, channel="webhook"), 422, "url-required")
    problem(await post(consumer, dataset=shared, channel="sse", url=HOOK), 422, "webhook-only")
    problem(
        await post(consumer, dataset=shared, channel="kafka", signature_scheme="v1a"),
        422,
        "webhook-only",
    )
    problem(
        await post(consumer, channel="kafka", notifications=["agreements"]), 422, "dataset-required"
    )
    problem(
        await post(consumer, channel="sse", notifications=["agreements"], fields=["kwh"]),
        422,
        "dataset-required",
    )
    reader = await notify.org("reader", scopes=["read"])
    problem(await post(reader, dataset=shared, channel="sse"), 403, "missing-scope")
    # Nothing of the refused ones was stored.
    assert await notify.pool.fetchval("SELECT count(*) FROM subscriptions") == 0


async def test_another_organisation_sees_nothing_of_a_subscription(notify: Notify) -> None:
    publisher, consumer, other = await _parties(notify)
    _, slug = await notify.dataset(publisher, access_level="open")
    created = await _subscribe(notify, consumer, dataset=slug, channel="webhook", url=HOOK)
    sid = created["subscription_id"]

    for method, path, body in (
        ("GET", f"/subscriptions/{sid}", None),
        ("PATCH", f"/subscriptions/{sid}", {"themes": ["x"]}),
        ("DELETE", f"/subscriptions/{sid}", None),
        ("POST", f"/subscriptions/{sid}/secrets/rotate", None),
        ("GET", f"/subscriptions/{sid}/health", None),
        ("POST", f"/subscriptions/{sid}/test", None),
    ):
        response = await notify.client.request(method, path, json=body, headers=other.headers)
        problem(response, 404, "subscription-not-found")
        assert HOOK not in response.text
    listed = await notify.client.get("/subscriptions", headers=other.headers)
    assert listed.json() == {"items": [], "next": None}
    # The operator sees it; the owner still has it, unchanged.
    seen = await notify.client.get(f"/subscriptions/{sid}", headers=OPERATOR)
    assert seen.status_code == 200
    assert seen.json()["themes"] == []
    everyone = await notify.client.get("/subscriptions", headers=OPERATOR)
    assert [s["subscription_id"] for s in everyone.json()["items"]] == [sid]


async def test_the_list_is_paginated_with_a_cursor(notify: Notify) -> None:
    consumer = await notify.org("con")
    made = [
        (await _subscribe(notify, consumer, channel="sse", themes=[f"t{i}"]))["subscription_id"]
        for i in range(5)
    ]
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = (
            await notify.client.get("/subscriptions", params=params, headers=consumer.headers)
        ).json()
        seen += [s["subscription_id"] for s in page["items"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == made
    assert pages == 3
    bad = await notify.client.get(
        "/subscriptions", params={"after": "bm90LWEtY3Vyc29y"}, headers=consumer.headers
    )
    problem(bad, 422, "invalid-cursor")


async def test_rotation_keeps_the_old_key_signing_until_the_overlap_ends(notify: Notify) -> None:
    publisher, consumer, _ = await _parties(notify)
    _, slug = await notify.dataset(publisher, access_level="open")
    created = await _subscribe(notify, consumer, dataset=slug, channel="webhook", url=HOOK)
    sid = created["subscription_id"]
    first = created["signing_key"]

    before = datetime.now(UTC)
    rotated = await notify.client.post(
        f"/subscriptions/{sid}/secrets/rotate", json={"overlap_seconds": 3600},
        headers=consumer.headers,
    )  # fmt: skip

    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["secret"].startswith("whsec_")
    assert new["secret"] != first["secret"]
    rows = {
        r["secret_id"]: r
        for r in await notify.pool.fetch(
            "SELECT secret_id, secret, expires_at FROM subscription_secrets "
            "WHERE subscription_id = $1",
            sid,
        )
    }
    assert rows[new["secret_id"]]["expires_at"] is None
    old = rows[first["secret_id"]]
    assert old["secret"] == first["secret"]
    assert before + timedelta(seconds=3590) < old["expires_at"] < before + timedelta(seconds=3700)
    keys = (await notify.client.get(f"/subscriptions/{sid}", headers=consumer.headers)).json()
    assert {k["secret_id"] for k in keys["keys"]} == {first["secret_id"], new["secret_id"]}

    # The default overlap is a day, and never lengthens one already running.
    third = (
        await notify.client.post(f"/subscriptions/{sid}/secrets/rotate", headers=consumer.headers)
    ).json()
    expiries = {
        r["secret_id"]: r["expires_at"]
        for r in await notify.pool.fetch(
            "SELECT secret_id, expires_at FROM subscription_secrets WHERE subscription_id = $1",
            sid,
        )
    }
    assert expiries[first["secret_id"]] == old["expires_at"]
    assert expiries[new["secret_id"]] > before + timedelta(hours=23)
    assert expiries[third["secret_id"]] is None

    # A rotation may change the scheme: the new key is Ed25519, its public half shown.
    switched = await notify.client.post(
        f"/subscriptions/{sid}/secrets/rotate",
        json={"signature_scheme": "v1a"},
        headers=consumer.headers,
    )
    assert switched.json()["scheme"] == "v1a"
    assert switched.json()["public_key"].startswith("whpk_")
    assert switched.json()["secret"] is None

    sse = await _subscribe(notify, consumer, dataset=slug, channel="sse")
    refused = await notify.client.post(
        f"/subscriptions/{sse['subscription_id']}/secrets/rotate", headers=consumer.headers
    )
    problem(refused, 409, "not-a-webhook")


async def test_health_reads_the_workers_row_and_re_enabling_resets_it(notify: Notify) -> None:
    publisher, consumer, _ = await _parties(notify)
    _, slug = await notify.dataset(publisher, access_level="open")
    sid = (await _subscribe(notify, consumer, dataset=slug, channel="webhook", url=HOOK))[
        "subscription_id"
    ]
    path = f"/subscriptions/{sid}/health"

    fresh = (await notify.client.get(path, headers=consumer.headers)).json()
    assert fresh["state"] == "healthy"
    assert fresh["attempts"] == 0
    assert fresh["failures"] == 0

    since = datetime.now(UTC) - timedelta(hours=30)
    await notify.pool.execute(
        """INSERT INTO endpoint_health (subscription_id, attempts, failures, consecutive_failures,
               last_success_at, last_failure_at, last_failure_reason, failing_since)
           VALUES ($1, 40, 12, 12, $2, now(), 'HTTP 503', $2)""",
        sid, since,
    )  # fmt: skip
    await notify.pool.execute(
        "UPDATE subscriptions SET status = 'disabled', disabled_reason = 'failing for 24 h', "
        "disabled_at = now() WHERE subscription_id = $1",
        sid,
    )
    sick = (await notify.client.get(path, headers=consumer.headers)).json()
    assert sick["state"] == "disabled"
    assert sick["disabled_reason"] == "failing for 24 h"
    assert (sick["attempts"], sick["failures"], sick["last_failure_reason"]) == (40, 12, "HTTP 503")
    assert datetime.fromisoformat(sick["failing_since"]) == since
    problem(
        await notify.client.post(f"/subscriptions/{sid}/test", headers=consumer.headers),
        409,
        "subscription-disabled",
    )

    enabled = await notify.client.patch(
        f"/subscriptions/{sid}", json={"status": "active"}, headers=consumer.headers
    )

    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["status"] == "active"
    assert enabled.json()["disabled_reason"] is None
    healthy = (await notify.client.get(path, headers=consumer.headers)).json()
    assert healthy["state"] == "healthy"
    assert healthy["failing_since"] is None
    assert healthy["consecutive_failures"] == 0


async def test_re_enabling_checks_the_agreement_again(notify: Notify) -> None:
    publisher, consumer, _ = await _parties(notify)
    dataset_id, slug = await notify.dataset(publisher)
    agreement = await notify.agreement(dataset_id, publisher, consumer)
    sid = (await _subscribe(notify, consumer, dataset=slug, channel="sse"))["subscription_id"]
    await notify.pool.execute(
        "UPDATE subscriptions SET status = 'disabled' WHERE subscription_id = $1", sid
    )
    await notify.pool.execute(
        "UPDATE agreements SET status = 'revoked' WHERE agreement_id = $1", agreement
    )
    refused = await notify.client.patch(
        f"/subscriptions/{sid}", json={"status": "active"}, headers=consumer.headers
    )
    problem(refused, 403, "no-active-agreement")


async def test_patch_changes_what_is_given_and_checks_it(notify: Notify) -> None:
    publisher, consumer, _ = await _parties(notify)
    dataset_id, slug = await notify.dataset(publisher)
    await notify.agreement(dataset_id, publisher, consumer)
    sid = (
        await _subscribe(
            notify, consumer, dataset=slug, channel="webhook", url=HOOK, fields=["kwh"]
        )
    )["subscription_id"]
    path = f"/subscriptions/{sid}"

    changed = await notify.client.patch(
        path,
        json={"url": "https://other.example/hook", "filter": {"district": "Nord"},
              "batch": {"max_records": 10, "linger_ms": 0}, "themes": ["energy"]},
        headers=consumer.headers,
    )  # fmt: skip

    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["url"] == "https://other.example/hook"
    assert body["fields"] == ["kwh"]
    assert body["filter"] == {"district": "Nord"}
    assert body["batch"]["max_records"] == 10
    cleared = await notify.client.patch(path, json={"fields": None}, headers=consumer.headers)
    assert cleared.json()["fields"] is None
    problem(
        await notify.client.patch(path, json={"fields": ["nope"]}, headers=consumer.headers),
        422,
        "unknown-fields",
    )
    problem(
        await notify.client.patch(path, json={"url": "gopher://x"}, headers=consumer.headers),
        422,
        "invalid-webhook-url",
    )


async def test_the_test_notification_is_queued_for_the_worker(notify: Notify) -> None:
    publisher, consumer, _ = await _parties(notify)
    _, slug = await notify.dataset(publisher, access_level="open")
    sid = (await _subscribe(notify, consumer, dataset=slug, channel="webhook", url=HOOK))[
        "subscription_id"
    ]

    queued = await notify.client.post(f"/subscriptions/{sid}/test", headers=consumer.headers)

    assert queued.status_code == 202, queued.text
    delivery_id = queued.json()["delivery_id"]
    row = await notify.pool.fetchrow(
        "SELECT d.kind, d.event_type, d.status, d.consumer_id, q.state, q.attempt, "
        "q.next_attempt_at <= now() AS due, q.payload FROM deliveries d "
        "JOIN delivery_queue q USING (delivery_id) WHERE delivery_id = $1",
        delivery_id,
    )
    assert row is not None
    assert (row["kind"], row["event_type"], row["status"]) == (
        "notification",
        "org.datapolis.notify.test.v1",
        "pending",
    )
    assert row["consumer_id"] == consumer.org_id
    assert (row["state"], row["attempt"], row["due"]) == ("waiting", 0, True)
    logged = await notify.client.get(f"/deliveries/{delivery_id}", headers=consumer.headers)
    assert logged.status_code == 200
    assert logged.json()["status"] == "pending"


async def test_deleting_withholds_what_was_queued(notify: Notify) -> None:
    publisher, consumer, _ = await _parties(notify)
    _, slug = await notify.dataset(publisher, access_level="open")
    created = await _subscribe(notify, consumer, dataset=slug, channel="webhook", url=HOOK)
    sid = created["subscription_id"]
    waiting = await notify.delivery(created, status="pending")

    deleted = await notify.client.delete(f"/subscriptions/{sid}", headers=consumer.headers)

    assert deleted.status_code == 204
    problem(
        await notify.client.get(f"/subscriptions/{sid}", headers=consumer.headers),
        404,
        "subscription-not-found",
    )
    assert await notify.pool.fetchval("SELECT count(*) FROM delivery_queue") == 0
    status = await notify.pool.fetchval(
        "SELECT status FROM deliveries WHERE delivery_id = $1", waiting
    )
    assert status == "withheld"
