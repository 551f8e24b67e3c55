"""`python -m datapolis_demo [--once]`: seed the metropolis, stream its
records and tell the story (see demo/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from datetime import datetime
from pathlib import Path

from datapolis_demo.platform import DEV_OPERATOR_KEY, Platform, StepFailed, Urls
from datapolis_demo.receiver import Receiver, ReceiverAddress, SubjectIssuer
from datapolis_demo.seed import seed
from datapolis_demo.story import Story, tell
from datapolis_demo.stream import Streamer


def say(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S.%f}"[:-3] + f"] {text}", flush=True)


async def run(once: bool) -> int:
    address = ReceiverAddress.from_env(os.environ)
    # Beside the local stack's own state (make clean removes both).
    state_dir = Path(
        os.environ.get("DEMO_STATE_DIR")
        or Path(os.environ.get("DATAPOLIS_STATE_DIR", ".local")) / "demo"
    )
    base = address.public_url
    platform = Platform(Urls.from_env(), os.environ.get("DATAPOLIS_OPERATOR_KEY", DEV_OPERATOR_KEY))
    issuer = SubjectIssuer(state_dir / "subject-issuer.pem", f"{base}/subjects")
    receiver = Receiver(secrets.token_hex(4), issuer)
    await receiver.start(address.host, address.port)
    say(
        "the demo's webhook receiver and residents' token issuer listen on "
        f"{address.host}:{address.port}, reached at {base}"
    )
    streamer: Streamer | None = None
    try:
        say("seeding the metropolis")
        members = await seed(platform, state_dir, say)
        streamer = Streamer(platform, members, say)
        streamer.start()
        say("producers stream: bikes, buses, water, meters, crowds, population, air")
        story = Story(platform, members, receiver, issuer, base, state_dir, say)
        await tell(story)
        if story.failures:
            say(f"{len(story.failures)} claim(s) did not hold:")
            for failure in story.failures:
                say(f"  ✘ {failure}")
        else:
            say("every claim held")
        accepted = ", ".join(f"{slug} {n}" for slug, n in sorted(streamer.accepted.items()))
        say(f"records accepted so far: {accepted}")
        if once:
            return 1 if story.failures else 0
        say("streaming on; explore with the datapolis command line (Ctrl-C to stop)")
        while True:
            await asyncio.sleep(30)
            accepted = ", ".join(f"{slug} {n}" for slug, n in sorted(streamer.accepted.items()))
            meters = receiver.hooks.get("meters")
            received = f"; the lab has received {len(meters.arrivals)} readings" if meters else ""
            say(f"records accepted: {accepted}{received}")
    except StepFailed as error:
        say(f"✘ {error}")
        return 1
    finally:
        if streamer is not None:
            await streamer.stop()
        await receiver.stop()
        await platform.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="datapolis-demo",
        description="A living demo metropolis on the running platform (make up).",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="tell the story once and exit: 0 only if every claim held",
    )
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(run(arguments.once)))
    say("stopped; the data stays in place for exploring")


if __name__ == "__main__":
    main()
