"""The problem codes notify's routes answer, for its OpenAPI document.

Each route lists the ones it can answer (``responses=problem_responses(...)``);
the statuses come from the domain errors that carry them
(:mod:`datapolis_notify.subscriptions`, :mod:`datapolis_notify.deliveries`).
"""

from __future__ import annotations

from datapolis_shared.http.openapi import ProblemCode

SUBSCRIPTION_NOT_FOUND = ProblemCode(
    "subscription-not-found", 404, "no subscription by this id that the caller owns"
)
DATASET_NOT_FOUND = ProblemCode(
    "dataset-not-found", 404, "notify knows no dataset by this id or slug (yet)"
)
DATASET_RETIRED = ProblemCode("dataset-retired", 409, "the dataset is retired: nothing to receive")
NO_ACTIVE_AGREEMENT = ProblemCode(
    "no-active-agreement",
    403,
    "a shared or personal dataset: the caller holds no granted agreement on it in its period",
)
PURPOSE_REQUIRED = ProblemCode(
    "purpose-required",
    422,
    "a personal dataset is received under one purpose (`purposes` lists the agreed ones)",
    (("purposes", ["dpv:ScientificResearch"]),),
)
PURPOSE_NOT_AGREED = ProblemCode(
    "purpose-not-agreed",
    422,
    "the purpose is not among the agreement's (`purposes` lists them)",
    (("purposes", ["dpv:ScientificResearch"]),),
)
UNKNOWN_FIELDS = ProblemCode(
    "unknown-fields",
    422,
    "fields or filter members not in the dataset's current schema (`fields` lists them)",
    (("fields", ["favourite_colour"]),),
)
FILTER_FIELD_NOT_GRANTED = ProblemCode(
    "filter-field-not-granted",
    422,
    "a filter on a field the agreement does not grant (`fields` lists them)",
    (("fields", ["household"]),),
)
INVALID_WEBHOOK_URL = ProblemCode("invalid-webhook-url", 422, "the url cannot be a webhook target")
URL_REQUIRED = ProblemCode("url-required", 422, "a webhook subscription needs a url")
WEBHOOK_ONLY = ProblemCode(
    "webhook-only", 422, "url and signature_scheme apply to the webhook channel only"
)
DATASET_REQUIRED = ProblemCode(
    "dataset-required",
    422,
    "the kafka channel, a purpose, fields and a filter need a dataset",
)
NOTHING_TO_DELIVER = ProblemCode(
    "nothing-to-deliver", 422, "without a dataset, a subscription names notifications or themes"
)
NOT_A_WEBHOOK = ProblemCode("not-a-webhook", 409, "only webhook subscriptions have signing keys")
SUBSCRIPTION_DISABLED = ProblemCode(
    "subscription-disabled", 409, "the subscription is disabled: re-enable it first"
)
INVALID_CURSOR = ProblemCode("invalid-cursor", 422, "`after` is not a cursor this API gave")
INVALID_TIME_RANGE = ProblemCode("invalid-time-range", 422, "`since` is after `until`")
DELIVERY_NOT_FOUND = ProblemCode(
    "delivery-not-found", 404, "no delivery by this id that the caller may see"
)
DEAD_LETTER_NOT_FOUND = ProblemCode(
    "dead-letter-not-found", 404, "no dead letter by this id that the caller may replay"
)
