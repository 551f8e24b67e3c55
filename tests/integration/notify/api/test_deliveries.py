"""The delivery log and the dead letters against the real database: each
party sees only its own, the filters and pages, and replay puts dead
letters back in the queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.notify.api.conftest import OPERATOR, Notify, Org, problem

HOOK = "https://partner.example/hooks/datapolis"


async def _subscription(notify: Notify, publisher: Org, consumer: Org) -> dict[str, Any]:
    dataset_id, slug = await notify.dataset(publisher)
    await notify.agreement(dataset_id, publisher, consumer)
    response = await notify.client.post(
        "/subscriptions",
        json={"dataset": slug, "channel": "webhook", "url": HOOK},
        headers=consumer.headers,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["delivery_id"] for item in response.json()["items"]]


async def test_each_party_sees_only_its_own_deliveries(notify: Notify) -> None:
    publisher, other_publisher = await notify.org("pub"), await notify.org("pub2")
    consumer, other_consumer = await notify.org("con"), await notify.org("con2")
    mine = await _subscription(notify, publisher, consumer)
    theirs = await _subscription(notify, other_publisher, other_consumer)
    delivered = await notify.delivery(
        mine, publisher=publisher, agreement_ids=["agr-1"], consent_ids=["cst-1", "cst-2"]
    )
    dead = await notify.delivery(mine, publisher=publisher, dead=True)
    foreign = await notify.delivery(theirs, publisher=other_publisher)

    as_consumer = await notify.client.get("/deliveries", headers=consumer.headers)
    as_publisher = await notify.client.get("/deliveries", headers=publisher.headers)
    as_operator = await notify.client.get("/deliveries", headers=OPERATOR)

    assert set(_ids(as_consumer)) == {delivered, dead}
    assert set(_ids(as_publisher)) == {delivered, dead}
    assert set(_ids(as_operator)) == {delivered, dead, foreign}
    row = next(d for d in as_consumer.json()["items"] if d["delivery_id"] == delivered)
    assert row["agreement_ids"] == ["agr-1"]
    assert row["consent_ids"] == ["cst-1", "cst-2"]
    # The consumer's endpoint errors are not the publisher's to read.
    by_id = {d["delivery_id"]: d for d in as_publisher.json()["items"]}
    assert by_id[dead]["last_error"] is None
    consumer_view = await notify.client.get(f"/deliveries/{dead}", headers=consumer.headers)
    assert consumer_view.json()["last_error"] == "connection refused"

    for who in (other_consumer, other_publisher):
        problem(
            await notify.client.get(f"/deliveries/{delivered}", headers=who.headers),
            404,
            "delivery-not-found",
        )
    outsider = await notify.org("nobody")
    assert _ids(await notify.client.get("/deliveries", headers=outsider.headers)) == []
    assert (await notify.client.get(f"/deliveries/{foreign}", headers=OPERATOR)).status_code == 200


async def test_the_log_filters_and_pages_newest_first(notify: Notify) -> None:
    publisher, consumer = await notify.org("pub"), await notify.org("con")
    first = await _subscription(notify, publisher, consumer)
    second = await _subscription(notify, publisher, consumer)
    start = datetime.now(UTC) - timedelta(hours=10)
    made = [
        await notify.delivery(
            first if i % 2 == 0 else second,
            publisher=publisher,
            status="delivered" if i < 4 else "withheld",
            created_at=start + timedelta(hours=i),
        )
        for i in range(6)
    ]

    async def get(**params: Any) -> list[str]:
        return _ids(await notify.client.get("/deliveries", params=params, headers=consumer.headers))

    assert await get(subscription_id=first["subscription_id"]) == [made[4], made[2], made[0]]
    assert await get(dataset=second["dataset_id"]) == [made[5], made[3], made[1]]
    slug = await notify.pool.fetchval(
        "SELECT slug FROM datasets WHERE dataset_id = $1", second["dataset_id"]
    )
    assert await get(dataset=slug) == [made[5], made[3], made[1]]
    assert await get(status="withheld") == [made[5], made[4]]
    window = {
        "since": (start + timedelta(hours=1)).isoformat(),
        "until": (start + timedelta(hours=3)).isoformat(),
    }
    assert await get(**window) == [made[2], made[1]]

    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 4, **({"after": after} if after else {})}
        page = await notify.client.get("/deliveries", params=params, headers=consumer.headers)
        seen += _ids(page)
        after = page.json()["next"]
        if after is None:
            break
    assert seen == list(reversed(made))

    problem(
        await notify.client.get(
            "/deliveries",
            params={"since": window["until"], "until": window["since"]},
            headers=consumer.headers,
        ),
        422,
        "invalid-time-range",
    )
    problem(
        await notify.client.get("/deliveries", params={"after": "x"}, headers=consumer.headers),
        422,
        "invalid-cursor",
    )
    # A date-time is RFC 3339 text, as documented, not a Unix time.
    problem(
        await notify.client.get("/deliveries", params={"until": "0.5"}, headers=consumer.headers),
        422,
        "validation-failed",
    )


async def test_dead_letters_are_listed_to_their_consumer_only(notify: Notify) -> None:
    publisher, consumer, other = (
        await notify.org("pub"),
        await notify.org("con"),
        await notify.org("o"),
    )
    mine = await _subscription(notify, publisher, consumer)
    theirs = await _subscription(notify, publisher, other)
    dead = await notify.delivery(mine, publisher=publisher, dead=True)
    await notify.delivery(mine, publisher=publisher, status="pending")
    foreign = await notify.delivery(theirs, publisher=publisher, dead=True)

    listed = await notify.client.get("/dead-letters", headers=consumer.headers)

    assert _ids(listed) == [dead]
    item = listed.json()["items"][0]
    assert item["attempt"] == 8
    assert item["dead_at"] is not None
    # The queued records are never shown: they are not yet filtered nor projected.
    assert "payload" not in item
    assert "kwh" not in listed.text
    assert set(_ids(await notify.client.get("/dead-letters", headers=OPERATOR))) == {dead, foreign}
    # A publisher replays nothing of its consumers'.
    assert _ids(await notify.client.get("/dead-letters", headers=publisher.headers)) == []
    problem(
        await notify.client.post(f"/dead-letters/{foreign}/replay", headers=consumer.headers),
        404,
        "dead-letter-not-found",
    )
    state = await notify.pool.fetchval(
        "SELECT state FROM delivery_queue WHERE delivery_id = $1", foreign
    )
    assert state == "dead"


async def _queue_row(notify: Notify, delivery_id: str) -> Any:
    return await notify.pool.fetchrow(
        "SELECT q.state, q.attempt, q.next_attempt_at <= now() AS due, q.dead_at, d.status "
        "FROM delivery_queue q JOIN deliveries d USING (delivery_id) WHERE delivery_id = $1",
        delivery_id,
    )


async def test_replaying_one_dead_letter_puts_it_back_due_now(notify: Notify) -> None:
    publisher, consumer = await notify.org("pub"), await notify.org("con")
    mine = await _subscription(notify, publisher, consumer)
    dead = await notify.delivery(mine, publisher=publisher, dead=True)
    other = await notify.delivery(mine, publisher=publisher, dead=True)

    replayed = await notify.client.post(f"/dead-letters/{dead}/replay", headers=consumer.headers)

    assert replayed.status_code == 202, replayed.text
    assert replayed.json() == {"replayed": 1}
    row = await _queue_row(notify, dead)
    assert (row["state"], row["attempt"], row["due"], row["dead_at"], row["status"]) == (
        "waiting",
        0,
        True,
        None,
        "pending",
    )
    assert (await _queue_row(notify, other))["state"] == "dead"
    # Once replayed it is no dead letter any more.
    problem(
        await notify.client.post(f"/dead-letters/{dead}/replay", headers=consumer.headers),
        404,
        "dead-letter-not-found",
    )


async def test_replaying_a_range_replays_the_callers_dead_letters_in_it(notify: Notify) -> None:
    publisher, consumer, other = (
        await notify.org("pub"),
        await notify.org("con"),
        await notify.org("o"),
    )
    first = await _subscription(notify, publisher, consumer)
    second = await _subscription(notify, publisher, consumer)
    theirs = await _subscription(notify, publisher, other)
    now = datetime.now(UTC)
    old = await notify.delivery(first, dead=True, created_at=now - timedelta(days=3))
    recent = await notify.delivery(first, dead=True, created_at=now - timedelta(hours=1))
    elsewhere = await notify.delivery(second, dead=True, created_at=now - timedelta(hours=1))
    foreign = await notify.delivery(theirs, dead=True, created_at=now - timedelta(hours=1))

    replayed = await notify.client.post(
        "/dead-letters/replay",
        json={
            "subscription_id": first["subscription_id"],
            "since": (now - timedelta(days=1)).isoformat(),
        },
        headers=consumer.headers,
    )

    assert replayed.status_code == 202, replayed.text
    assert replayed.json() == {"replayed": 1}
    assert (await _queue_row(notify, recent))["state"] == "waiting"
    for still_dead in (old, elsewhere, foreign):
        assert (await _queue_row(notify, still_dead))["state"] == "dead"

    # Without a subscription: every dead letter of the caller's, never another's.
    everything = await notify.client.post("/dead-letters/replay", json={}, headers=consumer.headers)
    assert everything.json() == {"replayed": 2}
    assert (await _queue_row(notify, foreign))["state"] == "dead"
    problem(
        await notify.client.post(
            "/dead-letters/replay",
            json={"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()},
            headers=consumer.headers,
        ),
        422,
        "invalid-time-range",
    )
    reader = await notify.org("reader", scopes=["read"])
    problem(
        await notify.client.post("/dead-letters/replay", json={}, headers=reader.headers),
        403,
        "missing-scope",
    )
