"""Entitlement view benchmark: prints figures, it is not a timed test.

    uv run python bench/entitlements.py [--consents 10000]

Pure CPU, nothing to start. Loads one notify entitlement view with a
personal dataset, one agreement and ``--consents`` active data-subject
consents (one subject each), as the feed would from consent's events, then
prints the cost of a decision (p50, p99, max over every subject) and of
applying a grant/withdraw pair, with that many consents held. Both must stay
flat as the number of consents grows (the view indexes by subject), so that
deciding at every delivery attempt and following withdrawals never fall
behind the 1 s revocation bound.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from datapolis_notify.entitlements.view import Entitlements
from datapolis_notify.ports import Entitled
from datapolis_shared.events.catalog import DatasetRegistered
from datapolis_shared.events.consent import AgreementGranted, ConsentGranted, ConsentWithdrawn

PURPOSE = "dpv:ScientificResearch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consents", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=1_000)
    args = parser.parse_args()

    now = datetime.now(UTC)
    view = Entitlements()
    view.caught_up(view.clock() + 3600)  # current for the whole run
    view.apply(
        DatasetRegistered(
            dataset_id="ds",
            slug="meters",
            publisher_id="pub",
            access_level="personal",
            subject_field="household",
            topic_name="data.meters",
        )
    )
    agreement = {"agreement_id": "agr", "dataset_id": "ds", "publisher_org_id": "pub"}
    view.apply(
        AgreementGranted(
            **agreement,
            consumer_org_id="con",
            ledger_sequence=1,
            ledger_hash="h",
            occurred_at=now,
            purposes=[PURPOSE],
            fields=["kwh"],
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=30),
        )
    )

    def consent(n: int) -> dict[str, Any]:
        return {
            "consent_id": f"c-{n}",
            "dataset_id": "ds",
            "subject_id": f"s-{n}",
            "consumer_org_id": "con",
            "agreement_id": "agr",
            "purpose": PURPOSE,
            "ledger_hash": "h",
            "occurred_at": now,
        }

    sequence = 2
    started = time.perf_counter()
    for n in range(args.consents):
        view.apply(
            ConsentGranted(
                **consent(n),
                ledger_sequence=sequence,
                valid_from=now - timedelta(hours=1),
                valid_until=now + timedelta(days=7),
            )
        )
        sequence += 1
    loaded = time.perf_counter() - started
    print(f"{args.consents:,} active consents applied in {loaded:.2f} s")

    costs = []
    for n in range(args.consents):
        t = time.perf_counter()
        decided = view.decide(
            dataset_id="ds", consumer_id="con", purpose=PURPOSE, subject_id=f"s-{n}", now=now
        )
        costs.append(time.perf_counter() - t)
        assert isinstance(decided, Entitled)
    costs.sort()
    print(
        f"decide: p50 {statistics.median(costs) * 1e6:.1f} µs, "
        f"p99 {costs[int(len(costs) * 0.99)] * 1e6:.1f} µs, max {costs[-1] * 1e6:.1f} µs"
    )

    cycle_costs = []
    for n in range(args.cycles):
        subject = args.consents + n
        t = time.perf_counter()
        view.apply(
            ConsentGranted(
                **consent(subject),
                ledger_sequence=sequence,
                valid_from=now - timedelta(hours=1),
                valid_until=now + timedelta(days=7),
            )
        )
        view.apply(ConsentWithdrawn(**consent(subject), ledger_sequence=sequence + 1))
        cycle_costs.append(time.perf_counter() - t)
        sequence += 2
        refused = view.decide(
            dataset_id="ds", consumer_id="con", purpose=PURPOSE, subject_id=f"s-{subject}", now=now
        )
        assert not isinstance(refused, Entitled)
    cycle_costs.sort()
    print(
        f"grant+withdraw applied ({args.cycles:,} cycles): "
        f"p50 {statistics.median(cycle_costs) * 1e6:.1f} µs, "
        f"p99 {cycle_costs[int(len(cycle_costs) * 0.99)] * 1e6:.1f} µs"
    )


if __name__ == "__main__":
    main()
