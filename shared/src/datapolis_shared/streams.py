"""faust-streaming apps configured the datapolis way.

Stream workers (catalog's live stats, ingest's raw-topic validation) are faust
apps built here, so every worker gets the same broker settings, acks=all, and
at-least-once processing: an offset is committed only after the agent finished
with the event.
"""

from __future__ import annotations

from typing import Any

import faust

from datapolis_shared.settings import ServiceSettings


def broker_url(settings: ServiceSettings) -> str:
    hosts = [h.strip() for h in settings.kafka.bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def create_faust_app(settings: ServiceSettings, *, app_id: str, **overrides: Any) -> faust.App:
    options: dict[str, Any] = {
        "broker": broker_url(settings),
        "store": "memory://",
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "topic_replication_factor": settings.kafka.replication_factor,
        "topic_partitions": 3,
        "web_enabled": False,
        "broker_commit_every": 500,
        "broker_commit_interval": 1.0,
        "loghandlers": [],
    }
    options.update(overrides)
    return faust.App(f"datapolis-{settings.service_name}-{app_id}", **options)
