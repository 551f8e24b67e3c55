"""A consumer loop's retries are bounded: a record whose handler keeps
failing transiently is parked (the dead letters, or the handler's own park
path) and the records behind it on the same partition are handled; a record
that recovers within the bound is handled once. When the failure is the
loop's own infrastructure (PostgreSQL here, cut off by a link the test
controls), the loop pauses instead: no good record is parked because a
database was down, and readiness says why the loop is not moving."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
from aiokafka import ConsumerRecord

from datapolis_shared.errors import Unavailable
from datapolis_shared.kafka import ConsumerLoop, OutgoingRecord, Producer, RetryPolicy
from datapolis_shared.postgres.pool import ping
from datapolis_shared.retry import Backoff
from datapolis_shared.settings import KafkaSettings
from tests.conftest import TopicFactory
from tests.kafka_util import TopicTail, eventually

# Retries in tenths of seconds, so that the bound is reached quickly.
QUICK = RetryPolicy(
    max_attempts=5, max_elapsed_s=30, backoff=Backoff(initial_s=0.05, max_s=0.2, jitter_s=0.05)
)


def _loop(
    settings: KafkaSettings, producer: Producer, topic: str, handler: object, **options: object
) -> ConsumerLoop:
    return ConsumerLoop(
        settings,
        name=f"retries-{topic}",
        group_id=f"g-{topic}",
        topics=[topic],
        handler=handler,  # type: ignore[arg-type]
        producer=producer,
        **options,  # type: ignore[arg-type]
    )


def _dead_letters_of(records: list[ConsumerRecord[bytes, bytes]], topic: str) -> list[bytes]:
    return [
        r.value or b""
        for r in records
        if dict(r.headers).get("dl_consumer") == f"retries-{topic}".encode()
    ]


async def test_a_record_failing_transiently_forever_is_parked_and_its_partition_moves_on(
    producer: Producer,
    new_topic: TopicFactory,
    kafka_settings: KafkaSettings,
    dead_letters_tail: TopicTail,
) -> None:
    topic = await new_topic("retries", partitions=1)
    handled: list[bytes] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.value == b"endpoint-down":
            raise Unavailable("the webhook endpoint answers 503")
        handled.append(record.value or b"")

    for value in (b"before", b"endpoint-down", b"after-1", b"after-2"):
        await producer.send(OutgoingRecord(topic, value))
    loop = _loop(kafka_settings, producer, topic, handle, retry=QUICK)
    loop.start()
    try:
        await eventually(lambda: handled == [b"before", b"after-1", b"after-2"], timeout_s=30)
        assert loop.dead_lettered == 1
        assert loop.problem() is None
    finally:
        await loop.stop()

    parked = [r for r in await dead_letters_tail.read() if r.value == b"endpoint-down"]
    assert _dead_letters_of(parked, topic) == [b"endpoint-down"]
    reason = dict(parked[0].headers)["dl_error"].decode()
    assert reason.startswith("still failing after 5 attempts")
    assert "the webhook endpoint answers 503" in reason
    assert dict(parked[0].headers)["dl_source_offset"] == b"1"


async def test_a_record_recovering_within_the_bound_is_handled_once(
    producer: Producer,
    new_topic: TopicFactory,
    kafka_settings: KafkaSettings,
    dead_letters_tail: TopicTail,
) -> None:
    topic = await new_topic("retries", partitions=1)
    failures_left = 3
    effects: list[bytes] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        nonlocal failures_left
        if record.value == b"flaky" and failures_left:
            failures_left -= 1
            raise TimeoutError("the endpoint took too long")
        effects.append(record.value or b"")

    for value in (b"flaky", b"next"):
        await producer.send(OutgoingRecord(topic, value))
    loop = _loop(kafka_settings, producer, topic, handle, retry=QUICK)
    loop.start()
    try:
        await eventually(lambda: effects == [b"flaky", b"next"], timeout_s=30)
    finally:
        await loop.stop()
    assert failures_left == 0
    assert (loop.processed, loop.dead_lettered) == (2, 0)
    assert _dead_letters_of(await dead_letters_tail.read(), topic) == []


async def test_the_handlers_own_park_path_takes_the_exhausted_record(
    producer: Producer, new_topic: TopicFactory, kafka_settings: KafkaSettings
) -> None:
    """Notify's case: an endpoint down for hours goes to a retry schedule."""
    topic = await new_topic("retries", partitions=1)
    handled: list[bytes] = []
    scheduled: list[tuple[bytes, str]] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.value == b"endpoint-down":
            raise OSError("connection refused by the endpoint")
        handled.append(record.value or b"")

    async def schedule(records: Sequence[ConsumerRecord[bytes, bytes]], reason: str) -> None:
        scheduled.extend((r.value or b"", reason) for r in records)

    for value in (b"endpoint-down", b"after"):
        await producer.send(OutgoingRecord(topic, value))
    loop = _loop(kafka_settings, producer, topic, handle, retry=QUICK, park=schedule)
    loop.start()
    try:
        await eventually(lambda: handled == [b"after"], timeout_s=30)
    finally:
        await loop.stop()
    assert [value for value, _ in scheduled] == [b"endpoint-down"]
    assert "connection refused by the endpoint" in scheduled[0][1]
    assert (loop.parked, loop.dead_lettered) == (1, 0)


async def test_readiness_reports_a_loop_stuck_retrying(
    producer: Producer,
    new_topic: TopicFactory,
    kafka_settings: KafkaSettings,
) -> None:
    topic = await new_topic("retries", partitions=1)
    release = asyncio.Event()

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        if not release.is_set():
            raise Unavailable("the search index is rebuilding")

    await producer.send(OutgoingRecord(topic, b"waiting"))
    patient = RetryPolicy(
        max_attempts=1000,
        max_elapsed_s=60,
        backoff=Backoff(initial_s=0.05, max_s=0.1, jitter_s=0.05),
    )
    loop = _loop(kafka_settings, producer, topic, handle, retry=patient, stuck_after_s=0.5)
    loop.start()
    try:
        await eventually(lambda: "retrying" in (loop.problem() or ""), timeout_s=20)
        problem = loop.problem() or ""
        assert f"{topic}/0@0" in problem
        assert "the search index is rebuilding" in problem
        release.set()
        await eventually(lambda: loop.processed == 1, timeout_s=10)
        assert loop.problem() is None
    finally:
        await loop.stop()


async def test_a_loop_whose_database_is_down_pauses_instead_of_parking(
    producer: Producer,
    new_topic: TopicFactory,
    kafka_settings: KafkaSettings,
    database_url: str,
    schema: str,
    dead_letters_tail: TopicTail,
) -> None:
    topic = await new_topic("retries", partitions=1)
    link = await Link.to(database_url)
    pool = await asyncpg.create_pool(
        link.dsn(database_url),
        min_size=0,
        max_size=2,
        timeout=2,
        server_settings={"search_path": schema},
    )
    assert pool is not None
    await pool.execute("CREATE TABLE seen (value TEXT PRIMARY KEY)")

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        await pool.execute(
            "INSERT INTO seen VALUES ($1) ON CONFLICT DO NOTHING", (record.value or b"").decode()
        )

    async def postgres() -> None:
        await ping(pool, timeout_s=1)

    loop = _loop(kafka_settings, producer, topic, handle, retry=QUICK, dependencies=[postgres])
    loop.start()
    try:
        await producer.send(OutgoingRecord(topic, b"before"))
        await eventually(lambda: loop.processed == 1, timeout_s=30)

        link.cut()
        for value in (b"during-1", b"during-2"):
            await producer.send(OutgoingRecord(topic, value))
        await eventually(lambda: "paused" in (loop.problem() or ""), timeout_s=30)
        assert "PostgreSQL" in (loop.problem() or "")
        assert loop.dead_lettered == 0

        link.restore()
        await eventually(lambda: loop.processed == 3, timeout_s=30)
        assert loop.problem() is None
    finally:
        await loop.stop()
        await pool.close()
        await link.close()
    rows = await _values(database_url, schema)
    assert rows == ["before", "during-1", "during-2"]
    assert loop.dead_lettered == 0
    assert _dead_letters_of(await dead_letters_tail.read(), topic) == []


async def _values(database_url: str, schema: str) -> list[str]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        return [r["value"] for r in await conn.fetch("SELECT value FROM seen ORDER BY value")]
    finally:
        await conn.close()


class Link:
    """A TCP link to the real PostgreSQL that the test can cut: connections
    through it are dropped and new ones refused until it is restored, as in
    a network partition or a database restart."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._up = True
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @classmethod
    async def to(cls, database_url: str) -> Link:
        address = database_url.split("@", 1)[1].split("/", 1)[0]
        host, _, port = address.rpartition(":")
        link = cls((host, int(port)))
        link._server = await asyncio.start_server(link._serve, "127.0.0.1", 0)
        link.port = link._server.sockets[0].getsockname()[1]
        return link

    def dsn(self, database_url: str) -> str:
        head, tail = database_url.split("@", 1)
        return f"{head}@127.0.0.1:{self.port}/{tail.split('/', 1)[1]}"

    def cut(self) -> None:
        self._up = False
        for writer in list(self._pipes):
            writer.close()

    def restore(self) -> None:
        self._up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._pipes |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._pipes -= {writer, up_writer}
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
