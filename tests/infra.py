"""Where the tests find the real Kafka broker and PostgreSQL.

In order: the ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` environment
variables; testcontainers when a Docker engine answers; the project's own local
stack (``make infra``). When none answers the test fails with the command that
fixes it: a test that needs the broker or the database never skips.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_DATABASE_URL = "postgresql://datapolis:datapolis@127.0.0.1:55432/datapolis"


def _answers(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=5, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


class MissingInfrastructure(RuntimeError):
    pass


@contextlib.contextmanager
def kafka_bootstrap() -> Iterator[str]:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
        return
    if _answers(LOCAL_KAFKA):
        yield LOCAL_KAFKA
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.7.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    raise MissingInfrastructure(
        f"no Kafka broker: KAFKA_BOOTSTRAP_SERVERS is unset, nothing answers on {LOCAL_KAFKA} "
        "and no Docker engine answers. Start the local stack: make infra"
    )


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    if _answers("127.0.0.1:55432"):
        yield LOCAL_DATABASE_URL
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as pg:
            yield pg.get_connection_url()
        return
    raise MissingInfrastructure(
        "no PostgreSQL: DATABASE_URL is unset, nothing answers on 127.0.0.1:55432 and no "
        "Docker engine answers. Start the local stack: make infra"
    )
