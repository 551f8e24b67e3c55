"""The ledger's command: check the chain, or one agreement's or consent's
rows, against the stored checkpoints and any published ones; or sign a
checkpoint of the head now.

    python -m datapolis_consent.ledger verify [--agreement ID | --consent ID]
        [--checkpoint TOKEN ...] [--checkpoints-file FILE]
    python -m datapolis_consent.ledger checkpoint

Settings as the service's (``CONSENT_POSTGRES__DSN``, ``CONSENT_RECEIPTS__*``).
``verify`` prints the report as JSON and exits 0 when the ledger is intact,
1 when it is not, 2 when it cannot tell (bad settings, unknown entity).
``checkpoint`` prints the signed token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import asyncpg
from pydantic import ValidationError

from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger.checkpoints import create_checkpoint
from datapolis_consent.ledger.jws import KeyRingSigner
from datapolis_consent.ledger.verify import EntityNotInLedger, verify_chain, verify_entity
from datapolis_consent.settings import ConsentSettings


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m datapolis_consent.ledger")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check the chain against the checkpoints")
    which = verify.add_mutually_exclusive_group()
    which.add_argument("--agreement", metavar="ID", help="only this agreement's rows")
    which.add_argument("--consent", metavar="ID", help="only this consent's rows")
    verify.add_argument(
        "--checkpoint", metavar="TOKEN", action="append", default=[], help="a published token"
    )
    verify.add_argument(
        "--checkpoints-file", metavar="FILE", type=Path, help="published tokens, one a line"
    )
    sub.add_parser("checkpoint", help="sign a checkpoint of the head now and print it")
    return parser.parse_args(argv)


async def _run(settings: ConsentSettings, args: argparse.Namespace) -> int:
    signer = KeyRingSigner(
        KeyRing.load(
            settings.receipts.signing_key.get_secret_value(), settings.receipts.retired_keys
        )
    )
    conn = await asyncpg.connect(
        settings.postgres.dsn.get_secret_value(),
        server_settings={"search_path": settings.postgres.db_schema},
    )
    try:
        if args.command == "checkpoint":
            print((await create_checkpoint(conn, signer)).token)
            return 0
        tokens = list(args.checkpoint)
        if args.checkpoints_file is not None:
            lines = args.checkpoints_file.read_text().splitlines()
            tokens += [line.strip() for line in lines if line.strip()]
        if args.agreement:
            result = await verify_entity(
                conn, "agreement", args.agreement, signer=signer, tokens=tokens
            )
        elif args.consent:
            result = await verify_entity(
                conn, "consent", args.consent, signer=signer, tokens=tokens
            )
        else:
            result = await verify_chain(conn, signer=signer, tokens=tokens)
    finally:
        await conn.close()
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        settings = ConsentSettings()
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(settings, args))
    except EntityNotInLedger as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
