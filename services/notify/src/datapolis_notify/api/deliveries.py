"""The delivery log and the dead letters, with replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from datapolis_notify import deliveries
from datapolis_notify.api import problems as p
from datapolis_notify.api.subscriptions import After, Limit, PoolDep
from datapolis_notify.deliveries import (
    DeadLetterPage,
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    Replayed,
    ReplayRange,
)
from datapolis_notify.subscriptions import DEFAULT_PAGE, Instant
from datapolis_shared.http.app import Caller
from datapolis_shared.http.openapi import MISSING_SCOPE, problem_responses
from datapolis_shared.http.strict_json import StrictJsonRoute

DeliveryId = Annotated[str, Path(description="the delivery's (message's) id", max_length=200)]
OfSubscription = Annotated[str | None, Query(max_length=200, description="one subscription's")]
Since = Annotated[Instant | None, Query(description="from this time, included")]
Until = Annotated[Instant | None, Query(description="to this time, excluded")]

log_router = APIRouter(prefix="/deliveries", tags=["delivery log"], route_class=StrictJsonRoute)
dead_router = APIRouter(prefix="/dead-letters", tags=["dead letters"], route_class=StrictJsonRoute)


@log_router.get(
    "",
    response_model=DeliveryPage,
    summary="The delivery log, newest first: a consumer's deliveries, a publisher's "
    "datasets', or (the operator) all",
    description="Each delivery lists the agreement and consent ids it relied on. "
    "`since` and `until` bound its creation time.",
    responses=problem_responses(MISSING_SCOPE, p.INVALID_CURSOR, p.INVALID_TIME_RANGE),
)
async def list_deliveries(
    caller: Caller,
    pool: PoolDep,
    subscription_id: OfSubscription = None,
    dataset: Annotated[
        str | None, Query(max_length=200, description="a dataset's id or slug")
    ] = None,
    status: DeliveryStatus | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_PAGE,
    after: After = None,
) -> DeliveryPage:
    return await deliveries.list_deliveries(
        pool,
        caller,
        subscription_id=subscription_id,
        dataset_id=dataset,
        status=status,
        since=since,
        until=until,
        limit=limit,
        after=after,
    )


@log_router.get(
    "/{delivery_id}",
    response_model=Delivery,
    summary="One delivery (its consumer, its dataset's publisher and the operator only)",
    responses=problem_responses(MISSING_SCOPE, p.DELIVERY_NOT_FOUND),
)
async def get_delivery(delivery_id: DeliveryId, caller: Caller, pool: PoolDep) -> Delivery:
    return await deliveries.get_delivery(pool, caller, delivery_id)


@dead_router.get(
    "",
    response_model=DeadLetterPage,
    summary="Messages given up after the last retry: the caller's (the operator: all)",
    description="`since` and `until` bound the time each was given up.",
    responses=problem_responses(MISSING_SCOPE, p.INVALID_CURSOR, p.INVALID_TIME_RANGE),
)
async def list_dead_letters(
    caller: Caller,
    pool: PoolDep,
    subscription_id: OfSubscription = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_PAGE,
    after: After = None,
) -> DeadLetterPage:
    return await deliveries.list_dead_letters(
        pool,
        caller,
        subscription_id=subscription_id,
        since=since,
        until=until,
        limit=limit,
        after=after,
    )


_REPLAY_NOTE = (
    "Replayed messages go back to the queue with attempt 0, due now, with their id "
    "unchanged. The delivery worker checks the entitlement (agreement, and the subject's "
    "consent for a personal dataset) again at the attempt, so nothing is sent that the "
    "consumer may no longer receive: such a message is logged `withheld`."
)


@dead_router.post(
    "/replay",
    status_code=202,
    response_model=Replayed,
    summary="Replay the caller's dead letters of a subscription or a time range",
    description=_REPLAY_NOTE,
    responses=problem_responses(MISSING_SCOPE, p.INVALID_TIME_RANGE),
)
async def replay_range(caller: Caller, pool: PoolDep, body: ReplayRange) -> Replayed:
    return await deliveries.replay_range(pool, caller, body)


@dead_router.post(
    "/{delivery_id}/replay",
    status_code=202,
    response_model=Replayed,
    summary="Replay one dead letter",
    description=_REPLAY_NOTE,
    responses=problem_responses(MISSING_SCOPE, p.DEAD_LETTER_NOT_FOUND),
)
async def replay_one(delivery_id: DeliveryId, caller: Caller, pool: PoolDep) -> Replayed:
    return await deliveries.replay_one(pool, caller, delivery_id)
