"""The consent ledger: an append-only, hash-chained record of every state
change of an agreement or a consent, with signed checkpoints of its head.

``append`` records a change in the caller's transaction; ``verify_chain`` and
``verify_entity`` recompute the chain and check it against the checkpoints;
``create_checkpoint`` signs the head, ``checkpoint_if_moved`` only when it
moved (the worker's tick). See the service README, "Ledger".
"""

from datapolis_consent.ledger.chain import (
    CHANGES,
    GENESIS_HASH,
    EntityKind,
    InvalidChange,
    JsonValue,
    LedgerEntry,
    LedgerError,
    Payload,
    canonical_entry,
    entry_hash,
)
from datapolis_consent.ledger.checkpoints import (
    Checkpoint,
    InvalidCheckpoint,
    InvalidSignature,
    Signer,
    create_checkpoint,
    open_checkpoint,
)
from datapolis_consent.ledger.publish import (
    StoredCheckpoint,
    checkpoint_if_moved,
    latest_checkpoint,
    list_checkpoints,
)
from datapolis_consent.ledger.store import Head, NotInTransaction, append, entry_at, head
from datapolis_consent.ledger.verify import (
    ChainBreak,
    EntityNotInLedger,
    Verification,
    verify_chain,
    verify_entity,
)

__all__ = [
    "CHANGES",
    "GENESIS_HASH",
    "ChainBreak",
    "Checkpoint",
    "EntityKind",
    "EntityNotInLedger",
    "Head",
    "InvalidChange",
    "InvalidCheckpoint",
    "InvalidSignature",
    "JsonValue",
    "LedgerEntry",
    "LedgerError",
    "NotInTransaction",
    "Payload",
    "Signer",
    "StoredCheckpoint",
    "Verification",
    "append",
    "canonical_entry",
    "checkpoint_if_moved",
    "create_checkpoint",
    "entry_at",
    "entry_hash",
    "head",
    "latest_checkpoint",
    "list_checkpoints",
    "open_checkpoint",
    "verify_chain",
    "verify_entity",
]
