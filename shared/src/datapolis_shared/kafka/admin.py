"""Topic provisioning: the control topics, creation and convergence of
partitions and configs through the admin client."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from datapolis_shared.errors import Unavailable
from datapolis_shared.kafka.deadletters import DEAD_LETTERS
from datapolis_shared.kafka.options import client_options, describe
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


def control_topic_specs() -> list[TopicSpec]:
    forever = {"retention.ms": "-1", "cleanup.policy": "delete"}
    thirty_days = {"retention.ms": str(30 * 24 * 3600 * 1000)}
    return [
        # Catalog and consent events are deltas that share a key per dataset or
        # agreement (registered, then schema added, amended...): compaction
        # would keep only the last one and a replaying consumer would miss the
        # rest. They are the system's memory, so they are kept forever.
        TopicSpec("datapolis.catalog.events", 3, forever),
        TopicSpec("datapolis.consent.events", 3, forever),
        TopicSpec("datapolis.ingest.events", 3, {"retention.ms": str(7 * 24 * 3600 * 1000)}),
        TopicSpec("datapolis.ingest.rejected", 3, thirty_days),
        TopicSpec(DEAD_LETTERS, 1, thirty_days),
    ]


@contextlib.asynccontextmanager
async def admin_client(settings: KafkaSettings, failing: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed after; Kafka errors become
    :class:`Unavailable` naming the ``failing`` operation (the client's own
    error stays its ``__cause__``, for the logs)."""
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="datapolis-admin")
    try:
        await admin.start()
    except KafkaError as exc:
        # Where and as whom, for the operator (the exception's message may
        # reach an API client, so it names neither).
        log.warning("Kafka admin client could not connect to %s: %r", describe(settings), exc)
        raise Unavailable("Kafka is unreachable; try again later") from exc
    try:
        yield admin
    except KafkaError as exc:
        raise Unavailable(f"Kafka refused or failed the {failing}; try again later") from exc
    finally:
        await admin.close()


async def ensure_topics(settings: KafkaSettings, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    async with admin_client(settings, "topic creation") as admin:
        existing = set(await admin.list_topics())
        wanted = [s for s in specs if s.name not in existing]
        if not wanted:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=s.config,
                )
                for s in wanted
            ]
        )
        created = []
        for name, code, *rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                message = rest[0] if rest else ""
                raise Unavailable(f"could not create topic {name}: error {code} {message}")
        return created


# DescribeConfigs (v1+) config_source of a value set on the topic itself.
DYNAMIC_TOPIC_CONFIG = 1


@dataclass
class TopicChanges:
    """What :func:`converge_topics` did, and what it could not do."""

    created: list[str] = field(default_factory=list)
    # Topic name -> its partition count now.
    partitions_added: dict[str, int] = field(default_factory=dict)
    configs_altered: list[str] = field(default_factory=list)
    # Topic name -> partitions it has beyond the wanted count: Kafka cannot
    # remove partitions, so these are reported, never "fixed".
    extra_partitions: dict[str, int] = field(default_factory=dict)


def topic_config_update(
    wanted: dict[str, str], effective: dict[str, str | None], own: dict[str, str]
) -> dict[str, str] | None:
    """The full config to write on a topic so it has ``wanted``, or None when
    its ``effective`` values already match. AlterConfigs (aiokafka has no
    IncrementalAlterConfigs) replaces every value set on the topic, so the
    topic's ``own`` values are written back with the wanted ones on top."""
    if all(effective.get(name) == value for name, value in wanted.items()):
        return None
    return {**own, **wanted}


async def converge_topics(settings: KafkaSettings, specs: Iterable[TopicSpec]) -> TopicChanges:
    """Make Kafka match ``specs``: create missing topics, add partitions up to
    the wanted count and set the wanted configs on existing ones (keeping the
    other values set on them). Raises :class:`Unavailable` when Kafka cannot."""
    specs = list(specs)
    changes = TopicChanges(created=await ensure_topics(settings, specs))
    existing = [s for s in specs if s.name not in changes.created]
    if not existing:
        return changes
    async with admin_client(settings, "topic convergence") as admin:
        await _converge_partitions(admin, existing, changes)
        await _converge_configs(admin, existing, changes)
    return changes


async def _converge_partitions(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], changes: TopicChanges
) -> None:
    counts: dict[str, int] = {}
    for described in await admin.describe_topics([s.name for s in specs]):
        if described["error_code"]:
            raise Unavailable(
                f"could not describe topic {described['topic']}: error {described['error_code']}"
            )
        counts[described["topic"]] = len(described["partitions"])
    grow = {s.name: s.partitions for s in specs if counts[s.name] < s.partitions}
    if grow:
        await admin.create_partitions({n: NewPartitions(c) for n, c in grow.items()})
        changes.partitions_added.update(grow)
    changes.extra_partitions.update(
        {s.name: counts[s.name] for s in specs if counts[s.name] > s.partitions}
    )


async def _converge_configs(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], changes: TopicChanges
) -> None:
    effective: dict[str, dict[str, str | None]] = {}
    own: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    ):
        for code, message, _type, name, entries in response.resources:
            if code:
                raise Unavailable(f"could not describe topic {name}: error {code} {message}")
            effective[name] = {e[0]: e[1] for e in entries}
            # Version 0 says is_default where later versions give the source.
            own[name] = {
                e[0]: e[1]
                for e in entries
                if e[1] is not None
                and (e[3] == DYNAMIC_TOPIC_CONFIG if response.API_VERSION >= 1 else not e[3])
            }
    updates = {
        s.name: update
        for s in specs
        if (update := topic_config_update(s.config, effective[s.name], own[s.name])) is not None
    }
    if not updates:
        return
    for response in await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n, c) for n, c in updates.items()]
    ):
        for code, message, _type, name in response.resources:
            if code:
                raise Unavailable(f"could not configure topic {name}: error {code} {message}")
    changes.configs_altered.extend(updates)


async def topic_max_message_bytes(settings: KafkaSettings, topic: str) -> int | None:
    """The topic's effective ``max.message.bytes`` (its own value or the
    broker's default), None when the topic does not exist. Raises
    :class:`Unavailable` when Kafka cannot answer."""
    async with admin_client(settings, "describing a topic's configuration") as admin:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    for response in responses:
        for code, _message, _type, _name, entries in response.resources:
            if code:
                return None
            for entry in entries:
                if entry[0] == "max.message.bytes" and entry[1] is not None:
                    return int(entry[1])
    return None
