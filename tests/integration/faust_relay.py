"""A minimal faust app built by the shared factory, run as its own process by
the Kafka security tests: it copies each record of ``RELAY_SOURCE`` to
``RELAY_SINK`` with faust's own consumer and producer. Its Kafka settings come
from the environment (``RELAY_KAFKA__...``), as a service's do.

    python -m tests.integration.faust_relay worker
"""

from __future__ import annotations

import os
from typing import Any

import faust
from pydantic_settings import SettingsConfigDict

from datapolis_shared.settings import ServiceSettings
from datapolis_shared.streams import create_faust_app


class RelaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RELAY_", env_nested_delimiter="__")


def main() -> None:
    settings = RelaySettings(dev=True, service_name="relay")
    app = create_faust_app(
        settings, app_id=os.environ["RELAY_APP_ID"], datadir=os.environ["RELAY_DATA_DIR"]
    )
    source = app.topic(os.environ["RELAY_SOURCE"], key_serializer="raw", value_serializer="raw")
    sink = app.topic(os.environ["RELAY_SINK"], key_serializer="raw", value_serializer="raw")

    async def relay(stream: Any) -> None:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value, force=True)

    app.agent(source, name="relay")(relay)
    faust.Worker(
        app, loglevel="INFO", redirect_stdouts=False, override_logging=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
