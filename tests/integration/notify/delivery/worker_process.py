"""The notify worker as its own process, on stand-in parts: an open dataset
(``STANDIN_DATASET`` on ``STANDIN_TOPIC``) and a plain HTTP sender. Run by
the crash test, which SIGKILLs it."""

from __future__ import annotations

import asyncio
import os
import signal

from datapolis_notify.settings import NotifySettings
from datapolis_notify.webhooks.sender import HttpWebhookSender
from datapolis_notify.worker import Parts, serve
from datapolis_shared.logs import configure_logging
from datapolis_shared.runtime import Runtime
from tests.integration.notify.delivery.standins import StandInView


async def parts(runtime: Runtime, settings: NotifySettings) -> Parts:
    view = StandInView()
    view.add_dataset(
        os.environ["STANDIN_DATASET"],
        os.environ["STANDIN_TOPIC"],
        access_level="open",
        subject_field=None,
    )

    async def nothing() -> None:
        return None

    return Parts(
        view=view, sender=HttpWebhookSender(settings.webhooks), start=nothing, stop=nothing
    )


async def main() -> None:
    settings = NotifySettings()
    configure_logging(settings.service_name, settings.log_level, json=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop, parts_factory=parts)


if __name__ == "__main__":
    asyncio.run(main())
