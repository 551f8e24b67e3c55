"""The story the demo tells, step by step, checking each claim it prints."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from datapolis_demo.generators import HOUSEHOLDS
from datapolis_demo.metropolis import (
    BIKES,
    CROWD,
    ENERGY,
    LAB,
    SMART_METERS,
    STARTUP,
    STARTUP_2,
    TELECOM,
)
from datapolis_demo.platform import Platform, StepFailed
from datapolis_demo.receiver import Arrival, Receiver, SubjectIssuer
from datapolis_demo.seed import Member

CROWD_REQUESTED = ["district", "people", "density_per_km2", "devices_sampled", "observed_at"]
CROWD_GRANTED = ["district", "people", "observed_at"]
METERS_FIELDS = ["meter_id", "resident_id", "power_kw", "energy_kwh", "observed_at"]
RESEARCH = "dpv:ScientificResearch"
# How long the demo watches the flows after a withdrawal or a revocation.
WATCH_S = 4.0
# Partner notifications are queued by notify's worker as it reads consent's
# events: far less than this.
NOTICE_TIMEOUT_S = 10.0
REVOKED_NOTICE = "org.datapolis.notify.agreement.revoked.v1"


def _items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return body
    items = body.get("items", [])
    return items if isinstance(items, list) else []


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class Story:
    def __init__(
        self,
        platform: Platform,
        members: dict[str, Member],
        receiver: Receiver,
        issuer: SubjectIssuer,
        receiver_base: str,
        state_dir: Path,
        say: Callable[[str], None],
    ) -> None:
        self.platform = platform
        self.members = members
        self.receiver = receiver
        self.issuer = issuer
        self.base = receiver_base
        self.receipts_dir = state_dir / "receipts"
        self.say = say
        self.failures: list[str] = []
        self.receipts: dict[str, Path] = {}

    def claim(self, held: bool, text: str) -> None:
        self.say(f"  {'✔' if held else '✘'} {text}")
        if not held:
            self.failures.append(text)

    def keep_receipt(self, name: str, receipt: str) -> None:
        self.receipts_dir.mkdir(parents=True, exist_ok=True)
        path = self.receipts_dir / f"{name}.jws"
        path.write_text(receipt + "\n")
        self.receipts[name] = path

    def key(self, handle: str) -> str:
        return self.members[handle].key

    async def tidy(self) -> None:
        """Leave no subscription or agreement of an earlier run flowing."""
        for handle in (STARTUP.handle, STARTUP_2.handle, LAB.handle):
            subscriptions = await self.platform.call(
                "GET", "notify", "/subscriptions?limit=100", key=self.key(handle)
            )
            for subscription in _items(subscriptions.json()):
                await self.platform.call(
                    "DELETE", "notify", f"/subscriptions/{subscription['subscription_id']}",
                    key=self.key(handle), ok=(200, 204, 404),
                )  # fmt: skip
            agreements = await self.platform.call(
                "GET", "consent", "/agreements", key=self.key(handle)
            )
            for agreement in _items(agreements.json()):
                if agreement["consumer_org_id"] == self.members[handle].org_id and agreement[
                    "status"
                ] in ("granted", "requested"):
                    action = "terminate" if agreement["status"] == "granted" else None
                    if action:
                        await self.platform.call(
                            "POST", "consent", f"/agreements/{agreement['agreement_id']}/terminate",
                            key=self.key(handle), json={"reason": "an earlier demo run ended"},
                            ok=(200, 409),
                        )  # fmt: skip

    async def subscribe(self, handle: str, name: str, body: dict[str, Any]) -> str:
        """A webhook subscription to the receiver; notify may learn of a grant
        a moment after consent answered, hence the retries."""
        created = await self.platform.call(
            "POST", "notify", "/subscriptions", key=self.key(handle),
            json={**body, "channel": "webhook", "url": self.receiver.url(self.base, name)},
            retry_codes=("no-active-agreement", "dataset-not-found", "purpose-not-agreed"),
        )  # fmt: skip
        answer = created.json()
        self.receiver.expect(name, answer["signing_key"]["secret"])
        return str(answer["subscription_id"])

    # 0 ----------------------------------------------------------------------
    async def open_data_for_everyone(self) -> None:
        self.say(
            f"0. open data needs no agreement: {STARTUP_2.name} subscribes to "
            f"{BIKES.slug} for its cycling app"
        )
        await self.subscribe(
            STARTUP_2.handle, "bikes",
            {"dataset": BIKES.slug, "batch": {"max_records": 100, "linger_ms": 200}},
        )  # fmt: skip
        hook = self.receiver.hooks["bikes"]
        arrived = await wait_for(lambda: len(hook.arrivals) >= 12, 30)
        self.claim(arrived, f"station availability arrives ({len(hook.arrivals)} records)")
        everything = set(BIKES.json_schema["properties"])
        self.claim(
            arrived and all(set(a.event.get("data", {})) == everything for a in hook.arrivals),
            "with every field: open data is not projected",
        )
        if hook.arrivals:
            self.say(f"  e.g. {hook.arrivals[-1].event.get('data')}")

    # 1 ----------------------------------------------------------------------
    async def crowd_density_for_a_startup(self) -> str:
        self.say(
            f"1. {STARTUP.name} asks {TELECOM.name} for crowd density per district, "
            "for a footfall map of shopping streets"
        )
        requested = await self.platform.call(
            "POST", "consent", "/agreements", key=self.key(STARTUP.handle),
            json={
                "dataset": CROWD.slug,
                "project": {"name": "Footfall map", "description": "Where shoppers walk, by hour"},
                "purposes": ["dpv:ServiceProvision"],
                "fields": CROWD_REQUESTED,
                "valid_until": (datetime.now(UTC) + timedelta(days=90)).isoformat(),
            },
            retry_codes=("dataset-not-found", "unknown-fields"),
        )  # fmt: skip
        agreement_id = str(requested.json()["agreement_id"])
        self.say(f"  requested {', '.join(CROWD_REQUESTED)}: agreement {agreement_id}")
        granted = await self.platform.call(
            "POST", "consent", f"/agreements/{agreement_id}/grant", key=self.key(TELECOM.handle),
            json={"fields": CROWD_GRANTED},
        )  # fmt: skip
        self.keep_receipt("crowd-density-granted", granted.json()["receipt"])
        self.say(
            f"  {TELECOM.name} grants fewer fields: {', '.join(CROWD_GRANTED)} "
            "(no device counts, no market share); signed receipt kept"
        )
        await self.subscribe(
            STARTUP.handle, "notices", {"notifications": ["agreements", "endpoint"]}
        )
        await self.subscribe(
            STARTUP.handle, "crowd",
            {"dataset": CROWD.slug, "batch": {"max_records": 50, "linger_ms": 100}},
        )  # fmt: skip
        self.say(f"  {STARTUP.name} subscribes with a webhook to {self.base}/hooks/…/crowd")
        hook = self.receiver.hooks["crowd"]
        arrived = await wait_for(lambda: len(hook.arrivals) >= 16, 30)
        self.claim(
            arrived, f"deliveries arrive at the start-up's webhook ({len(hook.arrivals)} records)"
        )
        fields = {frozenset(a.event.get("data", {})) for a in hook.arrivals}
        self.claim(
            bool(fields) and all(f <= set(CROWD_GRANTED) for f in fields),
            f"every record is projected to the granted fields: {sorted(set().union(*fields))}",
        )
        if hook.arrivals:
            self.say(f"  e.g. {hook.arrivals[-1].event.get('data')}")
        self.claim(
            hook.invalid == 0 and hook.verified > 0,
            f"every webhook signature verifies ({hook.verified} requests, {hook.invalid} bad)",
        )
        return agreement_id

    # 2 ----------------------------------------------------------------------
    async def smart_meters_for_the_lab(self) -> dict[str, str]:
        self.say(f"2. {LAB.name} asks {ENERGY.name} for household smart-meter readings")
        requested = await self.platform.call(
            "POST", "consent", "/agreements", key=self.key(LAB.handle),
            json={
                "dataset": SMART_METERS.slug,
                "project": {"name": "Evening peak study", "description": "When homes draw most"},
                "purposes": [RESEARCH],
                "fields": [*METERS_FIELDS, "district"],
                "valid_until": (datetime.now(UTC) + timedelta(days=180)).isoformat(),
            },
            retry_codes=("dataset-not-found", "unknown-fields"),
        )  # fmt: skip
        agreement_id = requested.json()["agreement_id"]
        granted = await self.platform.call(
            "POST", "consent", f"/agreements/{agreement_id}/grant", key=self.key(ENERGY.handle),
            json={"fields": METERS_FIELDS},
        )  # fmt: skip
        self.keep_receipt("smart-meters-granted", granted.json()["receipt"])
        self.say(f"  {ENERGY.name} grants {', '.join(METERS_FIELDS)} (agreement {agreement_id})")
        consents: dict[str, str] = {}
        for home in HOUSEHOLDS:
            token = self.issuer.token(home.resident_id, SMART_METERS.slug)
            answer = await self.platform.call(
                "POST", "consent", "/subjects/me/consents", key=token,
                json={
                    "dataset": SMART_METERS.slug,
                    "consumer_org_id": self.members[LAB.handle].org_id,
                    "purpose": RESEARCH,
                    "valid_until": (datetime.now(UTC) + timedelta(days=90)).isoformat(),
                },
                # Consent fetches the issuer's keys again for a key it does not
                # know (a new demo state folder), at most every 30 s.
                retry_codes=("invalid-subject-token",), retry_for_s=40,
            )  # fmt: skip
            consents[home.resident_id] = answer.json()["consent"]["consent_id"]
            if len(consents) == 1:
                self.keep_receipt("resident-consent-granted", answer.json()["receipt"])
        self.say(
            f"  {len(consents)} residents consent, each with their own subject token: "
            f"{', '.join(consents)}"
        )
        await self.subscribe(
            LAB.handle, "meters",
            {"dataset": SMART_METERS.slug, "purpose": RESEARCH,
             "batch": {"max_records": 20, "linger_ms": 20}},
        )  # fmt: skip
        hook = self.receiver.hooks["meters"]

        def everyone() -> bool:
            return {self._resident(a) for a in hook.arrivals} >= set(consents)

        self.claim(
            await wait_for(everyone, 30),
            f"the lab receives every consenting resident's readings ({len(hook.arrivals)} records)",
        )
        return consents

    @staticmethod
    def _resident(arrival: Arrival) -> str | None:
        data = arrival.event.get("data")
        return data.get("resident_id") if isinstance(data, dict) else None

    # 3 ----------------------------------------------------------------------
    async def a_resident_withdraws(self, consents: dict[str, str]) -> None:
        leaving = HOUSEHOLDS[2].resident_id
        self.say(f"3. resident {leaving} withdraws their consent")
        hook = self.receiver.hooks["meters"]
        token = self.issuer.token(leaving, SMART_METERS.slug)
        called = time.monotonic()
        answer = await self.platform.call(
            "POST", "consent", f"/subjects/me/consents/{consents[leaving]}/withdraw", key=token
        )
        answered = time.monotonic()
        body = answer.json()
        bound = float(body["deliveries_stop_within_s"])
        self.keep_receipt("resident-consent-withdrawn", body["receipt"])
        self.say(
            f"  withdrawn in {(answered - called) * 1000:.0f} ms; the stated bound: {bound:g} s"
        )
        await asyncio.sleep(WATCH_S)
        every = [a.at for a in hook.arrivals if self._resident(a) == leaving]
        theirs = [moment for moment in every if moment >= called]
        last = max(every, default=called)
        stopped_after = max(0.0, last - answered)
        self.say(
            f"  their records stopped arriving {stopped_after * 1000:.0f} ms after the answer: "
            f"the last came {_relative(last - answered)} it ({len(theirs)} after the call), "
            f"though the meter kept sending; watched {WATCH_S:g} s"
        )
        self.claim(stopped_after <= bound, f"stopped within the bound of {bound:g} s")
        later = {self._resident(a) for a in hook.arrivals if a.at > answered + bound}
        others = set(consents) - {leaving}
        self.claim(
            others <= later and leaving not in later,
            f"the other {len(others)} residents' records keep flowing",
        )

    # 4 ----------------------------------------------------------------------
    async def the_telecom_revokes(self, agreement_id: str) -> None:
        self.say(f"4. {TELECOM.name} revokes {STARTUP.name}'s agreement")
        hook = self.receiver.hooks["crowd"]
        notices = self.receiver.hooks["notices"]
        called = time.monotonic()
        answer = await self.platform.call(
            "POST", "consent", f"/agreements/{agreement_id}/revoke", key=self.key(TELECOM.handle),
            json={"reason": "the footfall pilot is over"},
        )  # fmt: skip
        answered = time.monotonic()
        body = answer.json()
        bound = float(body["deliveries_stop_within_s"])
        self.keep_receipt("crowd-density-revoked", body["receipt"])
        self.say(f"  revoked in {(answered - called) * 1000:.0f} ms; the stated bound: {bound:g} s")

        def revocation() -> Arrival | None:
            return next(
                (
                    a
                    for a in notices.arrivals
                    if a.event.get("type") == REVOKED_NOTICE
                    and (a.event.get("data") or {}).get("agreement_id") == agreement_id
                ),
                None,
            )

        await wait_for(lambda: revocation() is not None, NOTICE_TIMEOUT_S)
        notice = revocation()
        if notice is not None:
            data = notice.event.get("data") or {}
            self.say(
                f"  {(notice.at - answered) * 1000:.0f} ms after the answer, the start-up's "
                f'webhook is told: {notice.event.get("type")}, reason "{data.get("reason")}"'
            )
        self.claim(
            notice is not None and notices.invalid == 0,
            "the start-up is notified of the revocation by a signed webhook",
        )
        if notice is None:
            received = [a.event.get("type") for a in notices.arrivals]
            self.say(f"    its notifications webhook received: {received or 'nothing'}")
        # Watch the flow as long after the answer as after the withdrawal.
        await asyncio.sleep(max(0.0, WATCH_S - (time.monotonic() - answered)))
        last = max((a.at for a in hook.arrivals), default=called)
        stopped_after = max(0.0, last - answered)
        self.say(
            f"  crowd density stopped arriving {stopped_after * 1000:.0f} ms after the answer: "
            f"the start-up's last record came {_relative(last - answered)} it; "
            f"watched {WATCH_S:g} s"
        )
        self.claim(stopped_after <= bound, f"stopped within the bound of {bound:g} s")

    # 5 ----------------------------------------------------------------------
    async def verify_with_the_cli(self) -> None:
        self.say("5. the receipts and the ledger, checked with the datapolis command line")
        jwks = self.receipts_dir / "jwks.json"
        published = await self.platform.call("GET", "consent", "/.well-known/jwks.json")
        jwks.write_bytes(published.content)
        self.say(f"  consent's published keys saved to {jwks}: receipts are checked offline")
        checks = [
            self._cli("--json", "receipt", "verify", str(path), "--jwks", str(jwks))
            for path in self.receipts.values()
        ]
        for path, (code, out, err) in zip(
            self.receipts.values(), await asyncio.gather(*checks), strict=True
        ):
            event = _receipt_event(out)
            self.claim(code == 0, f"datapolis receipt verify {path.name}: {event}")
            if code != 0:
                self.say(f"    {(err or out).strip()[:300]}")
        code, out, err = await self._cli("--json", "ledger", "verify")
        self.claim(code == 0, "datapolis ledger verify: the whole ledger is intact")
        try:
            report = json.loads(out)
            self.say(
                f"    ok={report['ok']}, rows {report['first_sequence']} to "
                f"{report['last_sequence']}, checkpoints matched {report['checkpoints_matched']}, "
                f"append-only enforced: {report['append_only_enforced']}"
            )
        except (ValueError, KeyError, TypeError):
            self.say(f"    {(out or err).strip()[:300]}")

    async def _cli(self, *arguments: str) -> tuple[int, str, str]:
        """The datapolis command line installed beside this Python, as the operator."""
        env = {
            **os.environ,
            "DATAPOLIS_CATALOG_URL": self.platform.urls.catalog,
            "DATAPOLIS_INGEST_URL": self.platform.urls.ingest,
            "DATAPOLIS_CONSENT_URL": self.platform.urls.consent,
            "DATAPOLIS_NOTIFY_URL": self.platform.urls.notify,
            "DATAPOLIS_API_KEY": self.platform.operator_key,
        }
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("datapolis")), *arguments,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()


def _relative(seconds: float) -> str:
    return f"{abs(seconds) * 1000:.0f} ms {'after' if seconds > 0 else 'before'}"


def _receipt_event(out: str) -> str:
    """What a verified receipt says happened: `revoked, agreement 51de…`."""
    try:
        payload = json.loads(out)["payload"]
        header = payload["header"]
        return f"{payload['event']['type']} ({header['record_kind']} {header['record_id'][:8]}…)"
    except (ValueError, KeyError, TypeError):
        return "no readable receipt"


async def tell(story: Story) -> None:
    """The five steps; a failed call ends the story as a failed claim."""
    try:
        await story.tidy()
        await story.open_data_for_everyone()
        crowd_agreement = await story.crowd_density_for_a_startup()
        consents = await story.smart_meters_for_the_lab()
        await story.a_resident_withdraws(consents)
        await story.the_telecom_revokes(crowd_agreement)
    except StepFailed as error:
        story.claim(False, str(error))
    await story.verify_with_the_cli()
    story.claim(
        story.receiver.invalid == 0,
        f"all {story.receiver.verified} webhook requests carried a valid signature",
    )
