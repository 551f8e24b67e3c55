"""The delivery engine: each record to every subscription of its dataset,
decided and projected at each attempt, batched, in order per key.

Per subscription an :class:`Outlet` batches records (``batch_max_records``,
``batch_linger_ms``) and sends up to ``max_in_flight_per_endpoint`` messages
at once, each carrying keys no other message in flight carries: the records
of a key wait for its message in flight (order per key), other keys go on.
Each outlet runs its own tasks, so a slow endpoint only holds its own.

A failed attempt puts the message, unprojected, into the durable queue with
its next attempt time; the later records of its keys queue behind it (by
seq), so order per key holds across retries; the queue task claims due
messages, decides and projects again, and sends. Every outcome is logged
(``deliveries``) and counted into ``endpoint_health``; each held record is
released (its offset may be committed) only once its outcome is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from datapolis_notify.delivery.channels import Channels, ChannelSender
from datapolis_notify.delivery.metrics import DeliveryMetrics
from datapolis_notify.delivery.offsets import Release
from datapolis_notify.delivery.records import (
    Decided,
    SourceRecord,
    decided,
    message_id,
    relied_on,
    subject_of,
)
from datapolis_notify.delivery.store import (
    Enqueue,
    HealthDelta,
    LogEntry,
    QueuedMessage,
    Subscription,
    active_subscriptions,
    claim_due,
    disable_endpoint,
    enqueue,
    kill_waiting,
    postpone,
    queue_depth,
    settle_queued,
    waiting_keys,
    write_log,
)
from datapolis_notify.ports import EntitlementView, NotEntitled, Outcome
from datapolis_notify.projection import matches
from datapolis_notify.settings import DeliverySettings
from datapolis_notify.webhooks.schedule import next_delay
from datapolis_shared.postgres.pool import Pool

log = logging.getLogger(__name__)

# Given the attempts made so far and the Retry-After the target asked for,
# the seconds before the next attempt, or None: no more attempts (dead).
RetryDelay = Callable[[int, float | None], float | None]
Clock = Callable[[], datetime]

# Decisions that say "not known yet" rather than "not entitled": the records
# wait for the view instead of being withheld.
WAIT_REASONS = frozenset({"state-not-current"})
# Backoff while PostgreSQL refuses a write the engine cannot go on without.
DURABLE_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)


def schedule_delay(schedule: Sequence[float], jitter: float) -> RetryDelay:
    """Delays from a fixed schedule with jitter; Retry-After (429, 503) is
    honoured when it asks for longer, up to a day."""

    def delay(attempts: int, retry_after_s: float | None) -> float | None:
        if attempts < 1 or attempts > len(schedule):
            return None
        base = schedule[attempts - 1]
        base += base * jitter * random.random()  # noqa: S311 - jitter, not secrecy
        if retry_after_s is not None:
            base = max(base, min(retry_after_s, 86400.0))
        return base

    return delay


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Held:
    """A record offered to one subscription, and the hold on its offset."""

    record: SourceRecord
    release: Release


async def durably(what: str, write: Callable[[], Awaitable[Any]]) -> Any:
    """Retry a write the engine cannot go on without (the records it covers
    stay held, so nothing is committed meanwhile)."""
    attempt = 0
    while True:
        try:
            return await write()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            wait = DURABLE_RETRY_S[min(attempt, len(DURABLE_RETRY_S) - 1)]
            attempt += 1
            log.warning("delivery: %s failed (retrying in %.1fs): %r", what, wait, exc)
            await asyncio.sleep(wait)


@dataclass
class _Pending:
    entries: list[LogEntry] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    health: dict[str, HealthDelta] = field(default_factory=dict)


class Outlet:
    """One subscription's share of the engine: its batch, its keys in flight,
    its waiting records, its bounded concurrency."""

    def __init__(self, engine: DeliveryEngine, subscription: Subscription) -> None:
        self.engine = engine
        self.subscription = subscription
        self.buffer: list[Held] = []
        self.in_flight: Counter[str] = Counter()
        self.waiting: dict[str, deque[Held]] = {}
        # Keys with a waiting message in the durable queue (or one being
        # written there): their later records queue behind it.
        self.queued_keys: set[str] = set()
        self.inserting: Counter[str] = Counter()
        self.semaphore = asyncio.Semaphore(engine.settings.max_in_flight_per_endpoint)
        self.tasks: set[asyncio.Task[None]] = set()
        self._linger: asyncio.TimerHandle | None = None
        self.spilling: list[Held] = []
        self.waiting_count = 0
        # Records of live messages not finished (sending, or waiting to).
        self.in_flight_records = 0
        # Queued messages of this endpoint being attempted now.
        self.queued_in_progress = 0
        self._spill_writer = False
        self.closed = False

    # -- live records ---------------------------------------------------------

    def offer(self, held: Held) -> None:
        if self.closed or not matches(held.record.value, self.subscription.filter):
            held.release()
            return
        self._route(held)

    def _route(self, held: Held) -> None:
        key = held.record.key
        # A key in flight first: should its message fail, its waiting
        # records are queued right after it, never before it.
        if key is not None and (self.in_flight[key] > 0 or key in self.waiting):
            self.waiting.setdefault(key, deque()).append(held)
            self.waiting_count += 1
        elif key is not None and (key in self.queued_keys or self.inserting[key] > 0):
            self._spill([held])
        elif self.overloaded():
            # An endpoint too slow for its records: they go through the
            # durable queue rather than pile up in memory (and hold back the
            # reader, so every other endpoint). The batch goes first, so
            # each key keeps its order.
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            batch, self.buffer = self.buffer, []
            self._spill([*batch, held])
        else:
            self._buffer(held)

    def _buffer(self, held: Held) -> None:
        self.buffer.append(held)
        if len(self.buffer) >= self.subscription.batch_max_records:
            self.flush()
        elif self._linger is None:
            linger_s = self.subscription.batch_linger_ms / 1000
            self._linger = asyncio.get_running_loop().call_later(linger_s, self.flush)

    def flush(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self.semaphore.locked():
            # Every message slot is taken: the records wait here, where the
            # next ones join them, and leave as one message when a slot
            # frees (``_send_live``). Cut into messages now, they would
            # queue at the semaphore one small message each, and an
            # endpoint a little slower than its records would fall ever
            # further behind.
            return
        while self.buffer:
            batch = self.buffer[: self.subscription.batch_max_records]
            self.buffer = self.buffer[self.subscription.batch_max_records :]
            for key in _keys(held.record for held in batch):
                self.in_flight[key] += 1
            self.in_flight_records += len(batch)
            self._spawn(self._send_live(batch))

    def _flush_waiting(self) -> None:
        """A message slot is free: the records that waited for one leave
        (unless the engine is stopping: they are read again at restart)."""
        task = asyncio.current_task()
        stopping = task is not None and task.cancelling() > 0
        if self.buffer and self._linger is None and not self.closed and not stopping:
            self.flush()

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "delivery: subscription %s: a task failed",
                self.subscription.subscription_id,
                exc_info=task.exception(),
            )

    def _finish(self, keys: Sequence[str]) -> None:
        """A message in flight is over: its keys' waiting records go on,
        into the queue behind it when it was queued."""
        for key in keys:
            self.in_flight[key] -= 1
            if self.in_flight[key] > 0:
                continue
            del self.in_flight[key]
            behind = self.waiting.pop(key, None)
            if not behind:
                continue
            self.waiting_count -= len(behind)
            # Routed again one by one: once a batch of them is in flight,
            # the rest wait for it.
            for held in behind:
                self._route(held)

    def _spill(self, helds: list[Held]) -> None:
        """Records behind a queued message of their key: into the queue too,
        due now, in the order they came (one writer per outlet, so their
        seq follows their offsets), released once written."""
        for key in _keys(held.record for held in helds):
            self.inserting[key] += 1
        self.spilling.extend(helds)
        if not self._spill_writer:
            self._spill_writer = True
            self._spawn(self._write_spilled())

    async def _write_spilled(self) -> None:
        try:
            while self.spilling:
                helds, self.spilling = self.spilling, []
                keys = _keys(held.record for held in helds)
                now = self.engine.clock()
                item = self.engine.enqueue_item(
                    self.subscription,
                    [held.record for held in helds],
                    attempt=0,
                    next_at=now,
                    now=now,
                    outcome=None,
                )
                await durably(
                    "queueing records behind their key",
                    lambda item=item: enqueue(self.engine.pool, [item]),  # type: ignore[misc]
                )
                self.queued_keys.update(keys)
                for held in helds:
                    for key in _keys([held.record]):
                        self.inserting[key] -= 1
                    held.release()
        finally:
            self._spill_writer = False

    async def _send_live(self, batch: list[Held]) -> None:
        records = [held.record for held in batch]
        keys = _keys(records)
        try:
            async with self.semaphore, self.engine.host_slot(self.subscription):
                await self._attempt_live(batch, records, keys)
        except BaseException:
            self._finish(keys)
            raise
        finally:
            self.in_flight_records -= len(batch)
            self._flush_waiting()

    async def _attempt_live(
        self, batch: list[Held], records: list[SourceRecord], keys: list[str]
    ) -> None:
        engine = self.engine
        sub = self.subscription
        mid = message_id(sub.subscription_id, records)
        items = await engine.decide_when_current(sub, records, lambda: self.closed)
        if items is None:  # closed while waiting
            for held in batch:
                held.release()
            self._finish(keys)
            return
        entitled, withheld = _split(items)
        now = engine.clock()
        releases = [held.release for held in batch]
        if withheld:
            engine.log_withheld(sub, f"{mid}_withheld", withheld, attempts=1, now=now)
        if not entitled:
            engine.log_later(None, releases)
            self._finish(keys)
            return
        outcome = await engine.attempt(sub, mid, entitled)
        now = engine.clock()
        if outcome.kind == "delivered":
            engine.log_later(
                engine.log_entry(
                    sub, mid, entitled, "delivered", attempts=1, outcome=outcome, now=now
                ),
                releases,
            )
            self._finish(keys)
            return
        await self._queue_failed(batch, entitled, keys, mid, outcome)

    async def _queue_failed(
        self,
        batch: list[Held],
        entitled: list[Decided],
        keys: list[str],
        mid: str,
        outcome: Outcome,
    ) -> None:
        """A failed first attempt: the message into the queue (waiting, or
        dead when no retry is left), its keys' later records behind it."""
        engine = self.engine
        sub = self.subscription
        now = engine.clock()
        releases = [held.release for held in batch]
        delay = None if outcome.kind == "gone" else engine.retry_delay(1, outcome.retry_after_s)
        item = engine.enqueue_item(
            sub,
            [i.record for i in entitled],
            attempt=1,
            next_at=now + timedelta(seconds=delay or 0),
            now=now,
            outcome=outcome,
            dead=delay is None,
            message=mid,
            decided_items=entitled,
        )
        dead = delay is None
        if not dead:
            for key in keys:
                self.inserting[key] += 1
        try:
            await durably("queueing a failed message", lambda: enqueue(engine.pool, [item]))
        finally:
            if not dead:
                for key in keys:
                    self.inserting[key] -= 1
        if not dead:
            self.queued_keys.update(keys)
        for release in releases:
            release()
        self._finish(keys)
        if outcome.kind == "gone":
            await engine.disable(sub, f"the endpoint answered {outcome.status or 410} Gone")

    # -- queued messages ------------------------------------------------------

    def overloaded(self) -> bool:
        held = len(self.buffer) + self.waiting_count + len(self.spilling) + self.in_flight_records
        return held >= self.engine.settings.max_held_per_endpoint

    def busy(self) -> bool:
        """As many queued messages under way as it may send at once: the
        queue task claims no more of its messages (their lease would run
        out while they wait for the endpoint)."""
        return self.queued_in_progress >= self.engine.settings.max_in_flight_per_endpoint

    async def attempt_queued(self, message: QueuedMessage) -> None:
        try:
            await self._attempt_queued(message)
        finally:
            self.queued_in_progress -= 1
            self._flush_waiting()

    async def _attempt_queued(self, message: QueuedMessage) -> None:
        async with self.semaphore, self.engine.host_slot(self.subscription):
            try:
                await self.engine.attempt_queued(self, message)
            finally:
                if message.keys:
                    remaining = await durably(
                        "reading the queue",
                        lambda: self.engine.pool.fetchval(
                            "SELECT array_agg(DISTINCT k) FROM delivery_queue, unnest(keys) k "
                            "WHERE subscription_id = $1 AND state = 'waiting' AND keys && $2",
                            self.subscription.subscription_id,
                            message.keys,
                        ),
                    )
                    still = set(remaining or ())
                    for key in message.keys:
                        if key not in still:
                            self.queued_keys.discard(key)

    def close(self) -> None:
        """The subscription is no longer active: what it holds is released
        (not delivered, and not owed: the endpoint is gone)."""
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        for held in self.buffer:
            held.release()
        self.buffer = []
        for behind in self.waiting.values():
            for held in behind:
                held.release()
        self.waiting = {}
        self.waiting_count = 0


def _keys(records: Any) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        if record.key is not None:
            seen[record.key] = None
    return list(seen)


def _split(items: Sequence[Decided]) -> tuple[list[Decided], list[Decided]]:
    entitled = [i for i in items if i.entitled is not None]
    withheld = [i for i in items if i.entitled is None]
    return entitled, withheld


class DeliveryEngine:
    def __init__(
        self,
        *,
        pool: Pool,
        view: EntitlementView,
        channels: Channels,
        settings: DeliverySettings,
        metrics: DeliveryMetrics,
        retry_delay: RetryDelay | None = None,
        clock: Clock = utcnow,
        connections_per_host: int | None = None,
    ) -> None:
        self.pool = pool
        self.view = view
        self.channels = channels
        self.settings = settings
        self.metrics = metrics
        if retry_delay is None:
            retry_delay = (
                next_delay
                if settings.retry_schedule_s is None
                else schedule_delay(settings.retry_schedule_s, settings.retry_jitter)
            )
        self.retry_delay = retry_delay
        self.clock = clock
        # Attempts at once per webhook host (the sender's connections to it):
        # an attempt decides only once it has one, so no decision waits for
        # a connection, long enough for a revocation to pass it by.
        self._connections_per_host = connections_per_host
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self.outlets: dict[str, Outlet] = {}
        self._by_topic: dict[str, list[Outlet]] = {}
        self._pending = _Pending()
        self._tasks: list[asyncio.Task[None]] = []
        self._queue_tasks: set[asyncio.Task[None]] = set()
        self._problem: str | None = "starting"
        self.loaded = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        await durably("loading subscriptions", self.refresh)
        keys = await durably("reading the queue", lambda: waiting_keys(self.pool))
        for subscription_id, waiting in keys.items():
            if (outlet := self.outlets.get(subscription_id)) is not None:
                outlet.queued_keys.update(waiting)
        self.loaded.set()
        self._problem = None
        for name, loop in (
            ("subscriptions", self._refresh_loop),
            ("queue", self._queue_loop),
            ("log", self._log_loop),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"delivery-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        outlet_tasks = [t for o in self.outlets.values() for t in o.tasks] + list(self._queue_tasks)
        for task in outlet_tasks:
            task.cancel()
        await asyncio.gather(*outlet_tasks, return_exceptions=True)
        # What is logged by now is durable; the rest is read again at restart.
        with contextlib.suppress(Exception):
            await self._flush_log()

    def problem(self) -> str | None:
        return self._problem

    # -- subscriptions --------------------------------------------------------

    async def refresh(self) -> None:
        """Subscriptions as they stand in PostgreSQL: new ones get an outlet
        (they receive records read from now on, never records older than
        themselves), changed ones their new settings, gone ones are closed."""
        subscriptions = {s.subscription_id: s for s in await active_subscriptions(self.pool)}
        for subscription_id, outlet in list(self.outlets.items()):
            if subscription_id not in subscriptions:
                outlet.close()
                del self.outlets[subscription_id]
        for subscription_id, subscription in subscriptions.items():
            known = self.outlets.get(subscription_id)
            if known is None:
                self.outlets[subscription_id] = Outlet(self, subscription)
            else:
                known.subscription = subscription
        by_topic: dict[str, list[Outlet]] = defaultdict(list)
        for outlet in self.outlets.values():
            topic = self.topic_of(outlet.subscription)
            if topic is not None:
                by_topic[topic].append(outlet)
        self._by_topic = dict(by_topic)

    def host_slot(self, subscription: Subscription) -> contextlib.AbstractAsyncContextManager[Any]:
        if self._connections_per_host is None or subscription.url is None:
            return contextlib.nullcontext()
        parts = urlsplit(subscription.url)
        host = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        slot = self._hosts.get(host)
        if slot is None:
            slot = self._hosts[host] = asyncio.Semaphore(self._connections_per_host)
        return slot

    def topic_of(self, subscription: Subscription) -> str | None:
        if subscription.dataset_id is None:
            return None
        dataset = self.view.dataset(subscription.dataset_id)
        return dataset.topic_name if dataset is not None else subscription.topic_name

    def targets(self, record: SourceRecord) -> list[Outlet]:
        """The outlets a record is for: its topic's, not older than they are."""
        outlets = self._by_topic.get(record.topic, ())
        at_ms = record.timestamp_ms
        return [
            o
            for o in outlets
            if not o.closed and at_ms >= o.subscription.created_at.timestamp() * 1000
        ]

    def offer(self, record: SourceRecord, hold: Callable[[int], Release]) -> None:
        """Hand a record to its subscriptions; ``hold(n)`` holds its offset
        until each of the ``n`` releases it."""
        targets = self.targets(record)
        release = hold(len(targets))
        for outlet in targets:
            outlet.offer(Held(record, release))

    def held_records(self) -> int:
        return sum(
            len(o.buffer) + sum(len(w) for w in o.waiting.values()) for o in self.outlets.values()
        )

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.subscription_refresh_s)
            try:
                await self.refresh()
                depth = await queue_depth(self.pool)
                for state, count in depth.items():
                    self.metrics.queue_depth.labels(state).set(count)
                self._problem = None
            except Exception as exc:
                self._problem = f"cannot read subscriptions: {type(exc).__name__}"
                log.warning("delivery: cannot refresh subscriptions: %r", exc)

    # -- deciding and sending -------------------------------------------------

    def decide(self, sub: Subscription, records: Sequence[SourceRecord]) -> list[Decided]:
        now = self.clock()
        dataset = self.view.dataset(sub.dataset_id) if sub.dataset_id else None
        items = []
        for record in records:
            decision = self.view.decide(
                dataset_id=sub.dataset_id or "",
                consumer_id=sub.consumer_id,
                purpose=sub.purpose,
                subject_id=subject_of(record, dataset),
                now=now,
            )
            if (
                isinstance(decision, NotEntitled)
                and decision.reason == "unknown-dataset"
                and not self.view.is_current()
            ):
                decision = NotEntitled("state-not-current")
            items.append(decided(record, decision, sub.fields))
        return items

    def must_wait(self, items: Sequence[Decided]) -> bool:
        return any(i.refusal is not None and i.refusal.reason in WAIT_REASONS for i in items)

    async def decide_when_current(
        self, sub: Subscription, records: Sequence[SourceRecord], closed: Callable[[], bool]
    ) -> list[Decided] | None:
        """Decide; while the view cannot say (not current), wait for it: the
        records are not refused for what notify does not know yet."""
        while True:
            items = self.decide(sub, records)
            if not self.must_wait(items):
                return items
            if closed():
                return None
            await asyncio.sleep(self.settings.view_wait_s)

    async def attempt(self, sub: Subscription, mid: str, entitled: Sequence[Decided]) -> Outcome:
        channel: ChannelSender | None = self.channels.of(sub)
        started = asyncio.get_running_loop().time()
        if channel is None:
            outcome = Outcome("retry", None, None, f"no {sub.channel} channel here", 0.0)
        else:
            try:
                outcome = await channel.send_records(sub, mid, entitled, self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("delivery: sending %s failed", mid)
                outcome = Outcome("retry", None, None, repr(exc)[:300], 0.0)
        self._observe(sub, outcome, started, entitled)
        return outcome

    def _observe(
        self, sub: Subscription, outcome: Outcome, started: float, entitled: Sequence[Decided]
    ) -> None:
        loop_now = asyncio.get_running_loop().time()
        self.metrics.attempt_seconds.labels(sub.channel).observe(loop_now - started)
        now = self.clock()
        health = self._pending.health.setdefault(sub.subscription_id, HealthDelta())
        if outcome.kind == "delivered":
            health.success(now)
            self.metrics.deliveries.labels(sub.channel, "delivered").inc()
            wall = now.timestamp()
            for item in entitled:
                if item.record.timestamp_ms:
                    self.metrics.lag_seconds.labels(sub.channel).observe(
                        max(0.0, wall - item.record.timestamp_ms / 1000)
                    )
        else:
            reason = outcome.error or (f"HTTP {outcome.status}" if outcome.status else outcome.kind)
            health.failure(now, reason)
            kind = "gone" if outcome.kind == "gone" else "retry"
            self.metrics.deliveries.labels(sub.channel, kind).inc()

    # -- the delivery log -----------------------------------------------------

    def log_entry(
        self,
        sub: Subscription,
        delivery_id: str,
        items: Sequence[Decided],
        status: Any,
        *,
        attempts: int,
        outcome: Outcome | None,
        now: datetime,
        error: str | None = None,
        kind: Any = "records",
        event_type: str | None = None,
    ) -> LogEntry:
        agreements, consents = relied_on(items)
        dataset = self.view.dataset(sub.dataset_id) if sub.dataset_id else None
        return LogEntry(
            delivery_id=delivery_id,
            subscription_id=sub.subscription_id,
            consumer_id=sub.consumer_id,
            publisher_id=dataset.publisher_id if dataset is not None else sub.publisher_id,
            dataset_id=sub.dataset_id,
            channel=sub.channel,
            kind=kind,
            event_type=event_type,
            record_count=len(items),
            agreement_ids=agreements,
            consent_ids=consents,
            status=status,
            attempts=attempts,
            last_status=outcome.status if outcome is not None else None,
            last_error=error if error is not None else (outcome.error if outcome else None),
            attempted_at=now if attempts else None,
        )

    def log_withheld(
        self,
        sub: Subscription,
        delivery_id: str,
        withheld: Sequence[Decided],
        *,
        attempts: int,
        now: datetime,
    ) -> None:
        self.count_withheld(sub, withheld)
        self.log_later(
            self.log_entry(
                sub,
                delivery_id,
                withheld,
                "withheld",
                attempts=attempts,
                outcome=None,
                now=now,
                error=withheld_reason(withheld),
            ),
            [],
        )

    def count_withheld(self, sub: Subscription, withheld: Sequence[Decided]) -> None:
        for item in withheld:
            if item.refusal is not None:
                self.metrics.withheld.labels(item.refusal.reason).inc()
        self.metrics.deliveries.labels(sub.channel, "withheld").inc()

    def log_later(self, entry: LogEntry | None, releases: Sequence[Release]) -> None:
        """Written with the next batch; the records are released after."""
        if entry is not None:
            self._pending.entries.append(entry)
        self._pending.releases.extend(releases)

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log_flush_s)
            try:
                await self._flush_log()
            except Exception as exc:
                self._problem = f"cannot write the delivery log: {type(exc).__name__}"
                log.warning("delivery: cannot write the delivery log: %r", exc)

    async def _flush_log(self) -> None:
        pending = self._pending
        if not pending.entries and not pending.releases and not pending.health:
            return
        self._pending = _Pending()
        try:
            failing = await write_log(self.pool, pending.entries, pending.health)
        except BaseException:
            # Written with the next batch: put them back in front.
            self._pending.entries[:0] = pending.entries
            self._pending.releases[:0] = pending.releases
            for sid, delta in pending.health.items():
                self._pending.health.setdefault(sid, delta)
            raise
        for release in pending.releases:
            release()
        now = self.clock()
        for subscription_id, since in failing:
            if (now - since).total_seconds() >= self.settings.disable_after_s:
                outlet = self.outlets.get(subscription_id)
                if outlet is not None:
                    await self.disable(
                        outlet.subscription,
                        f"every attempt failed since {since.isoformat()}",
                    )

    async def disable(self, sub: Subscription, reason: str) -> None:
        now = self.clock()
        disabled = await durably(
            "disabling an endpoint",
            lambda: disable_endpoint(self.pool, sub.subscription_id, reason, now=now),
        )
        await durably(
            "ending a disabled endpoint's messages",
            lambda: kill_waiting(self.pool, sub.subscription_id, f"endpoint disabled: {reason}"),
        )
        if disabled:
            log.warning("delivery: endpoint of %s disabled: %s", sub.subscription_id, reason)
        outlet = self.outlets.pop(sub.subscription_id, None)
        if outlet is not None:
            outlet.close()
            topic = self.topic_of(sub)
            if topic is not None and topic in self._by_topic:
                self._by_topic[topic] = [o for o in self._by_topic[topic] if o is not outlet]

    # -- the durable queue ----------------------------------------------------

    def enqueue_item(
        self,
        sub: Subscription,
        records: Sequence[SourceRecord],
        *,
        attempt: int,
        next_at: datetime,
        now: datetime,
        outcome: Outcome | None,
        dead: bool = False,
        message: str | None = None,
        decided_items: Sequence[Decided] = (),
    ) -> Enqueue:
        mid = message or message_id(sub.subscription_id, records)
        entry = self.log_entry(
            sub,
            mid,
            decided_items,
            "dead" if dead else "pending",
            attempts=attempt,
            outcome=outcome,
            now=now,
        )
        if not decided_items:
            entry = LogEntry(**{**_fields(entry), "record_count": len(records)})
        if dead:
            self.metrics.deliveries.labels(sub.channel, "dead").inc()
        return Enqueue(
            log=entry,
            keys=_keys(records),
            payload=[r.to_json() for r in records],
            attempt=attempt,
            next_attempt_at=next_at,
            dead=dead,
        )

    async def _queue_loop(self) -> None:
        idle_polls = 0
        while True:
            # Polled less often while the queue has nothing due (up to four
            # times the interval): the claim is a query, not a wake-up.
            await asyncio.sleep(self.settings.queue_poll_s * min(1 + idle_polls, 4))
            busy = [sid for sid, outlet in self.outlets.items() if outlet.busy()]
            try:
                claimed = await claim_due(
                    self.pool, self.settings.queue_claim_limit, self.settings.queue_lease_s, busy
                )
            except Exception as exc:
                log.warning("delivery: cannot read the queue: %r", exc)
                continue
            idle_polls = 0 if claimed else idle_polls + 1
            for message in claimed:
                outlet = self.outlets.get(message.subscription_id)
                if outlet is None:
                    with contextlib.suppress(Exception):
                        await self._orphaned(message)
                    continue
                outlet.queued_in_progress += 1
                task = asyncio.create_task(outlet.attempt_queued(message))
                self._queue_tasks.add(task)
                task.add_done_callback(self._queue_tasks.discard)

    async def _orphaned(self, message: QueuedMessage) -> None:
        """A message of no outlet here: its subscription was disabled or
        deleted (the message ends dead, as the others of a disabled
        endpoint), or is too new for this replica yet (looked at again)."""
        status = await self.pool.fetchval(
            "SELECT status FROM subscriptions WHERE subscription_id = $1",
            message.subscription_id,
        )
        if status == "active":
            await postpone(self.pool, message.seq, self.clock() + timedelta(seconds=5))
        else:
            await kill_waiting(self.pool, message.subscription_id, "subscription not active")

    async def attempt_queued(self, outlet: Outlet, message: QueuedMessage) -> None:
        sub = outlet.subscription
        attempts = message.attempt + 1
        now = self.clock()
        if isinstance(message.payload, dict):
            await self._attempt_notification(sub, message, attempts)
            return
        records = [SourceRecord.from_json(r) for r in message.payload]
        items = self.decide(sub, records)
        if self.must_wait(items):
            await durably(
                "postponing a message",
                lambda: postpone(
                    self.pool, message.seq, now + timedelta(seconds=self.settings.view_wait_s)
                ),
            )
            return
        entitled, withheld = _split(items)
        if withheld and entitled:
            self.log_withheld(
                sub,
                f"{message.delivery_id}_withheld_{attempts}",
                withheld,
                attempts=attempts,
                now=now,
            )
        if not entitled:
            # The message itself is withheld: its own log row says why.
            self.count_withheld(sub, withheld)
            entry = self.log_entry(
                sub,
                message.delivery_id,
                withheld,
                "withheld",
                attempts=attempts,
                outcome=None,
                now=now,
                error=withheld_reason(withheld),
            )
            await durably(
                "settling a message",
                lambda: settle_queued(self.pool, message, entry, done=True),
            )
            return
        outcome = await self.attempt(sub, message.delivery_id, entitled)
        await self._settle(sub, message, entitled, outcome, attempts)

    async def _attempt_notification(
        self, sub: Subscription, message: QueuedMessage, attempts: int
    ) -> None:
        channel = self.channels.of(sub)
        started = asyncio.get_running_loop().time()
        if channel is None:
            outcome = Outcome("retry", None, None, "no channel", 0.0)
        else:
            try:
                outcome = await channel.send_event(
                    sub, message.delivery_id, message.payload, self.clock()
                )
            except Exception as exc:
                outcome = Outcome("retry", None, None, repr(exc)[:300], 0.0)
        self._observe(sub, outcome, started, [])
        await self._settle(
            sub,
            message,
            [],
            outcome,
            attempts,
            kind="notification",
            event_type=str(message.payload.get("type")),
        )

    async def _settle(
        self,
        sub: Subscription,
        message: QueuedMessage,
        entitled: Sequence[Decided],
        outcome: Outcome,
        attempts: int,
        *,
        kind: str = "records",
        event_type: str | None = None,
    ) -> None:
        now = self.clock()
        delay = (
            None if outcome.kind == "gone" else self.retry_delay(attempts, outcome.retry_after_s)
        )
        if outcome.kind == "delivered":
            status = "delivered"
        elif delay is None:
            status = "dead"
            self.metrics.deliveries.labels(sub.channel, "dead").inc()
        else:
            status = "pending"
        entry = self.log_entry(
            sub,
            message.delivery_id,
            entitled,
            status,
            attempts=attempts,
            outcome=outcome,
            now=now,
            kind=kind,
            event_type=event_type,
        )
        if kind == "notification":
            entry = LogEntry(**{**_fields(entry), "record_count": 0})
        await durably(
            "settling a message",
            lambda: settle_queued(
                self.pool,
                message,
                entry,
                done=status == "delivered",
                dead=status == "dead",
                next_attempt_at=now + timedelta(seconds=delay or 0),
            ),
        )
        if outcome.kind == "gone":
            await self.disable(sub, f"the endpoint answered {outcome.status or 410} Gone")


def withheld_reason(withheld: Sequence[Decided]) -> str:
    """The log's last_error for records not sent: the refusal reasons."""
    reasons = sorted({i.refusal.reason for i in withheld if i.refusal is not None})
    return "not entitled: " + ", ".join(reasons)


def _fields(entry: LogEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in LogEntry.__slots__}
