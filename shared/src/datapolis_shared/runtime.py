"""What a running service holds: pool, producer, relay, consumers, checks.

Built once per process by the app factory (or a worker) from the service's
settings. Connecting happens in the background with retries, so a service
started before Kafka or PostgreSQL comes up reports not-ready instead of
crash-looping, and becomes ready once both answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord

from datapolis_shared.auth import ApiKeyStore, FailedAuthThrottle, apply_key_event
from datapolis_shared.errors import Unavailable, public_message
from datapolis_shared.events import CATALOG_EVENTS
from datapolis_shared.events.base import parse_event
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.kafka import (
    BatchHandler,
    ConsumerLoop,
    Dependency,
    Handler,
    Park,
    Producer,
    RetryPolicy,
    TopicSpec,
    control_topic_specs,
    ensure_topics,
)
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.postgres import inbox
from datapolis_shared.postgres.outbox import OutboxRelay
from datapolis_shared.postgres.pool import Pool, create_pool, ping
from datapolis_shared.retry import Backoff, retry
from datapolis_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]


@dataclass
class Runtime:
    settings: ServiceSettings
    metrics: ServiceMetrics
    # Set once connected; until then requests that need them get a 503.
    _pool: Pool | None = None
    producer: Producer | None = None
    relay: OutboxRelay | None = None
    keys: ApiKeyStore | None = None
    consumers: list[ConsumerLoop] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    topics: list[TopicSpec] = field(default_factory=control_topic_specs)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _connect_error: str | None = "connecting"
    _connect_task: asyncio.Task[None] | None = None
    _with_relay: bool = True
    _readiness_cache: tuple[float, Readiness] | None = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise Unavailable("PostgreSQL is not connected yet", retry_after_s=2)
        return self._pool

    def require_producer(self) -> Producer:
        if self.producer is None or not self.producer.started:
            raise Unavailable("Kafka is not connected yet", retry_after_s=2)
        return self.producer

    def require_keys(self) -> ApiKeyStore:
        if self.keys is None:
            raise Unavailable("the service is still starting", retry_after_s=2)
        return self.keys

    def add_consumer(
        self,
        *,
        name: str,
        topics: Sequence[str] = (),
        pattern: str | None = None,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        max_records: int = 500,
        retry: RetryPolicy | None = None,
        park: Park | None = None,
        dependencies: Sequence[Dependency] = (),
    ) -> ConsumerLoop:
        """Start a consumer loop that readiness watches (see ``ConsumerLoop``).
        ``dependencies`` are probed besides Kafka and PostgreSQL (e.g. that
        the service's tables exist)."""
        loop = ConsumerLoop(
            self.settings.kafka,
            name=name,
            # A group per consumer: two consumers of one topic in the same
            # service must each see every partition, not split them.
            group_id=f"datapolis-{self.settings.service_name}-{name}",
            producer=self.require_producer(),
            topics=topics,
            pattern=pattern,
            handler=handler,
            batch_handler=batch_handler,
            max_records=max_records,
            metrics=self.metrics,
            # A handler failing while PostgreSQL is down pauses the loop
            # rather than parking good records (Kafka is always probed).
            dependencies=[self.ping_postgres, *dependencies],
            retry=retry,
            park=park,
        )
        self.consumers.append(loop)
        loop.start()
        return loop

    async def start(
        self,
        on_connected: Callable[[Runtime], Awaitable[None]] | None = None,
        *,
        sync_keys: bool = True,
        relay: bool = True,
    ) -> None:
        """Connect in the background; ``on_connected`` runs once both answer.

        ``relay=False`` is for a process that writes no outbox rows (a stats
        worker): it leaves the service's outbox to the processes that do."""
        self._with_relay = relay
        self._connect_task = asyncio.create_task(
            self._connect(on_connected, sync_keys=sync_keys), name="runtime-connect"
        )

    async def _connect(
        self, on_connected: Callable[[Runtime], Awaitable[None]] | None, *, sync_keys: bool
    ) -> None:
        settings = self.settings
        pool, producer = await retry(
            self._connect_dependencies,
            doing="connecting to Kafka and PostgreSQL",
            on=Unavailable,
            backoff=Backoff(initial_s=0.5, max_s=5.0),
        )
        self.keys = ApiKeyStore(
            pool,
            operator_key=settings.operator_key.get_secret_value(),
            throttle=FailedAuthThrottle(settings.auth),
        )
        if self._with_relay:
            self.relay = OutboxRelay(pool, producer, metrics=self.metrics)
            self.relay.start()
        if sync_keys:
            self.add_consumer(
                name="api-keys", topics=[CATALOG_EVENTS], handler=self._apply_catalog_key_event
            )
        if on_connected is not None:
            await on_connected(self)
        self._connect_error = None
        self.connected.set()
        log.info("connected to Kafka and PostgreSQL")

    async def ping_postgres(self) -> None:
        """A consumer loop's probe of PostgreSQL (raises Unavailable)."""
        await ping(self.pool)

    async def _connect_dependencies(self) -> tuple[Pool, Producer]:
        """One try: what is already connected stays, the rest is tried again."""
        settings = self.settings
        try:
            if self._pool is None:
                self._pool = await create_pool(settings.postgres)
            if self.producer is None or not self.producer.started:
                self.producer = Producer(
                    settings.kafka, client_id=f"datapolis-{settings.service_name}"
                )
                await self.producer.start()
            await ensure_topics(settings.kafka, self.topics)
            return self._pool, self.producer
        except Unavailable as exc:
            self._connect_error = public_message(exc)
            if self.producer is not None and not self.producer.started:
                self.producer = None
            raise

    async def _apply_catalog_key_event(self, record: ConsumerRecord[bytes, bytes]) -> None:
        envelope = from_structured(record.value or b"")
        if not envelope.type.startswith("org.datapolis.catalog.apikey."):
            return
        event = parse_event(envelope)
        async with self.pool.acquire() as conn, conn.transaction():
            if await inbox.first_time(conn, "api-keys", envelope.id):
                await apply_key_event(conn, event)

    async def readiness(self) -> Readiness:
        """Can the service do its job now? Cached for a second: probes are cheap
        but a scraping load balancer should not multiply them."""
        now = time.monotonic()
        if self._readiness_cache and now - self._readiness_cache[0] < 1.0:
            return self._readiness_cache[1]
        checks: dict[str, str] = {}
        if self._connect_error:
            checks["startup"] = self._connect_error
        else:

            async def pg() -> str | None:
                await ping(self.pool)
                return None

            async def kafka() -> str | None:
                await self.require_producer().ping()
                return None

            async def relay() -> str | None:
                return self.relay.problem() if self.relay else "no outbox relay"

            probes: dict[str, Check] = {"postgres": pg, "kafka": kafka}
            if self._with_relay:
                probes["outbox"] = relay
            probes.update(self.checks)
            names = list(probes)
            outcomes = await asyncio.gather(*(probes[n]() for n in names), return_exceptions=True)
            for name, outcome in zip(names, outcomes, strict=True):
                # /readyz is answered to anyone: plain sentences, the driver's
                # errors go to the log.
                if isinstance(outcome, Unavailable):
                    checks[name] = public_message(outcome)
                elif isinstance(outcome, BaseException):
                    log.warning("readiness check %s failed: %r", name, outcome)
                    checks[name] = "the check failed unexpectedly (see the service's log)"
                else:
                    checks[name] = outcome or "ok"
            for consumer in self.consumers:
                checks[f"consumer:{consumer.name}"] = consumer.problem() or "ok"
        ready = all(v == "ok" for v in checks.values())
        self.metrics.ready.set(1 if ready else 0)
        result = Readiness(ready, checks)
        self._readiness_cache = (now, result)
        return result

    async def stop(self) -> None:
        if self._connect_task:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        for consumer in self.consumers:
            await consumer.stop()
        if self.relay:
            await self.relay.stop()
        if self.producer:
            await self.producer.stop()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), timeout=5)
