"""What every recorded change of an agreement or a consent shares: text
PostgreSQL can store, the id of the event that announces it, and the answer
when Kafka has not acknowledged that event yet."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator

from datapolis_shared.errors import Unavailable

# The bound within which deliveries stop once a revocation's, a termination's
# or a withdrawal's event is on Kafka (notify's promise), stated in the answer.
DELIVERIES_STOP_WITHIN_S = 1.0

# Event ids are derived from the ledger row they announce, so that a call
# repeated after its change was committed finds that change's event again
# (to wait for it, or to see it acknowledged) without storing the id twice.
_EVENT_IDS = uuid.UUID("6f0b3c52-1d7e-5a49-9a8e-2c4f7b1d0e93")


def event_id_for(ledger_hash: str) -> str:
    """The CloudEvents id of the event announcing the ledger row ``ledger_hash``."""
    return str(uuid.uuid5(_EVENT_IDS, ledger_hash))


def _storable_text(text: str) -> str:
    # PostgreSQL text holds neither NUL nor a lone surrogate: refused here as
    # bad input rather than failing in the driver.
    if "\x00" in text:
        raise ValueError("text cannot hold the NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("text cannot hold a lone surrogate") from None
    return text


Text = Annotated[str, AfterValidator(_storable_text)]


class NotYetPublished(Unavailable):
    """The change is committed, but Kafka did not acknowledge its event in
    time: the outbox relay publishes it once Kafka answers."""

    code = "event-not-acknowledged"
