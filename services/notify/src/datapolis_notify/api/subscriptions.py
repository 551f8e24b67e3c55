"""Subscriptions: create, read, change, delete; signing keys; health; a test."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from datapolis_notify import subscriptions
from datapolis_notify.api import problems as p
from datapolis_notify.subscriptions import (
    DEFAULT_PAGE,
    MAX_PAGE,
    CreatedSubscription,
    Health,
    NewSecret,
    NewSubscription,
    Page,
    Rotation,
    Subscription,
    SubscriptionChange,
    TestQueued,
)
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.webhooks.targets import TargetPolicy
from datapolis_shared.http.app import Caller, RuntimeDep
from datapolis_shared.http.openapi import MISSING_SCOPE, problem_responses
from datapolis_shared.http.strict_json import StrictJsonRoute
from datapolis_shared.postgres.pool import Pool

SubscriptionId = Annotated[
    str,
    Path(
        description="the subscription's id",
        examples=["6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b"],
        max_length=200,
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="items per page")]
After = Annotated[str | None, Query(max_length=500, description="the `next` of the previous page")]

router = APIRouter(prefix="/subscriptions", tags=["subscriptions"], route_class=StrictJsonRoute)


async def get_pool(runtime: RuntimeDep) -> Pool:
    return runtime.pool


PoolDep = Annotated[Pool, Depends(get_pool)]


async def get_targets(request: Request) -> TargetPolicy:
    """The webhook target allow-list (``NOTIFY_WEBHOOKS__ALLOW_TARGETS``),
    parsed once."""
    policy: TargetPolicy | None = getattr(request.app.state, "target_policy", None)
    if policy is None:
        webhooks = getattr(request.app.state.settings, "webhooks", None) or WebhookSettings()
        policy = TargetPolicy.from_entries(webhooks.allow_targets)
        request.app.state.target_policy = policy
    return policy


TargetsDep = Annotated[TargetPolicy, Depends(get_targets)]

_ONE = (MISSING_SCOPE, p.SUBSCRIPTION_NOT_FOUND)


@router.post(
    "",
    status_code=201,
    response_model=CreatedSubscription,
    summary="Subscribe to a dataset the caller may receive, or to notifications only",
    description="Checks that the caller may receive the dataset now: any organisation an "
    "open one; a shared or personal one, under a granted agreement in its period (and, "
    "personal, for one of its purposes). The delivery worker checks again at every "
    "attempt. A webhook subscription's first signing key is in `signing_key`, shown only "
    "in this answer: `secret` (`whsec_...`) for `v1`, or `public_key` (`whpk_...`) for "
    "`v1a`. A kafka subscription names its topic, `deliver.<consumer>.<dataset slug>`.",
    responses=problem_responses(
        MISSING_SCOPE,
        p.DATASET_NOT_FOUND,
        p.DATASET_RETIRED,
        p.NO_ACTIVE_AGREEMENT,
        p.PURPOSE_REQUIRED,
        p.PURPOSE_NOT_AGREED,
        p.UNKNOWN_FIELDS,
        p.FILTER_FIELD_NOT_GRANTED,
        p.INVALID_WEBHOOK_URL,
        p.URL_REQUIRED,
        p.WEBHOOK_ONLY,
        p.DATASET_REQUIRED,
        p.NOTHING_TO_DELIVER,
    ),
)
async def create_subscription(
    body: NewSubscription, caller: Caller, pool: PoolDep, targets: TargetsDep, response: Response
) -> CreatedSubscription:
    created = await subscriptions.create(pool, caller, body, targets=targets)
    response.headers["Location"] = f"/subscriptions/{created.subscription_id}"
    return created


@router.get(
    "",
    response_model=Page,
    summary="The caller's subscriptions (the operator: all), oldest first",
    responses=problem_responses(MISSING_SCOPE, p.INVALID_CURSOR),
)
async def list_subscriptions(
    caller: Caller, pool: PoolDep, limit: Limit = DEFAULT_PAGE, after: After = None
) -> Page:
    return await subscriptions.list_page(pool, caller, limit=limit, after=after)


@router.get(
    "/{subscription_id}",
    response_model=Subscription,
    summary="One subscription (its consumer and the operator only)",
    responses=problem_responses(*_ONE),
)
async def get_subscription(
    subscription_id: SubscriptionId, caller: Caller, pool: PoolDep
) -> Subscription:
    return await subscriptions.get(pool, caller, subscription_id)


@router.patch(
    "/{subscription_id}",
    response_model=Subscription,
    summary="Change a subscription; `status: active` re-enables a disabled endpoint",
    description="Members left out stay as they are. Re-enabling resets the endpoint's "
    "health (counters and failing streak) and checks the entitlement again.",
    responses=problem_responses(
        *_ONE,
        p.DATASET_NOT_FOUND,
        p.DATASET_RETIRED,
        p.NO_ACTIVE_AGREEMENT,
        p.PURPOSE_REQUIRED,
        p.PURPOSE_NOT_AGREED,
        p.UNKNOWN_FIELDS,
        p.FILTER_FIELD_NOT_GRANTED,
        p.INVALID_WEBHOOK_URL,
        p.WEBHOOK_ONLY,
        p.DATASET_REQUIRED,
        p.NOTHING_TO_DELIVER,
    ),
)
async def update_subscription(
    subscription_id: SubscriptionId,
    body: SubscriptionChange,
    caller: Caller,
    pool: PoolDep,
    targets: TargetsDep,
) -> Subscription:
    return await subscriptions.update(pool, caller, subscription_id, body, targets=targets)


@router.delete(
    "/{subscription_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a subscription; its queued messages are withheld",
    responses=problem_responses(*_ONE),
)
async def delete_subscription(
    subscription_id: SubscriptionId, caller: Caller, pool: PoolDep
) -> None:
    await subscriptions.delete(pool, caller, subscription_id)


@router.post(
    "/{subscription_id}/secrets/rotate",
    response_model=NewSecret,
    summary="A new signing key; the previous ones sign on until the overlap ends",
    description="Every message is signed with every current key, so during the overlap "
    "(default 24 h) a receiver accepts either. The new secret (v1) or public key (v1a) "
    "is shown only in this answer.",
    responses=problem_responses(*_ONE, p.NOT_A_WEBHOOK),
)
async def rotate_secret(
    subscription_id: SubscriptionId,
    caller: Caller,
    pool: PoolDep,
    body: Rotation | None = None,
) -> NewSecret:
    return await subscriptions.rotate(pool, caller, subscription_id, body or Rotation())


@router.get(
    "/{subscription_id}/health",
    response_model=Health,
    summary="The endpoint's health: attempts, failures, last success and failure, state",
    responses=problem_responses(*_ONE),
)
async def endpoint_health(subscription_id: SubscriptionId, caller: Caller, pool: PoolDep) -> Health:
    return await subscriptions.health(pool, caller, subscription_id)


@router.post(
    "/{subscription_id}/test",
    status_code=202,
    response_model=TestQueued,
    summary="Queue a test notification (org.datapolis.notify.test.v1) for the endpoint",
    description="The delivery worker sends it like any message: signed, retried, logged "
    "(GET /deliveries/{delivery_id}).",
    responses=problem_responses(*_ONE, p.SUBSCRIPTION_DISABLED),
)
async def send_test(subscription_id: SubscriptionId, caller: Caller, pool: PoolDep) -> TestQueued:
    return await subscriptions.queue_test(pool, caller, subscription_id)
