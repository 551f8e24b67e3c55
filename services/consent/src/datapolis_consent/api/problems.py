"""The problem codes consent's routes answer, for its OpenAPI document.

Each route lists the ones it can answer (``responses=problem_responses(...)``);
the statuses come from the domain errors that carry them.
"""

from __future__ import annotations

from datapolis_shared.http.openapi import ProblemCode

DATASET_NOT_FOUND = ProblemCode(
    "dataset-not-found", 404, "consent knows no dataset by this id or slug"
)
DATASET_IS_OPEN = ProblemCode(
    "dataset-is-open", 409, "the dataset is open: open datasets need no agreement"
)
DATASET_RETIRED = ProblemCode("dataset-retired", 409, "the dataset is retired: no new agreement")
UNKNOWN_FIELDS = ProblemCode(
    "unknown-fields",
    422,
    "fields not in the dataset's current schema",
    (("fields", ["favourite_colour"]), ("schema_version", 3)),
)
UNKNOWN_PURPOSES = ProblemCode(
    "unknown-purposes",
    422,
    "purposes outside the vocabulary (W3C DPV purposes listed in `known`)",
    (("purposes", ["dpv:Gossip"]),),
)
INVALID_PERIOD = ProblemCode(
    "invalid-period",
    422,
    "the period ends in the past or before it starts, or (grant) exceeds the one requested",
)
OWN_DATASET = ProblemCode("own-dataset", 422, "a publisher needs no agreement on its own dataset")
FIELDS_NOT_REQUESTED = ProblemCode(
    "fields-not-requested", 422, "a grant or amendment may only narrow the fields requested"
)
NOTHING_TO_AMEND = ProblemCode("nothing-to-amend", 422, "an amendment changes fields or period")
AGREEMENT_NOT_FOUND = ProblemCode(
    "agreement-not-found", 404, "no agreement by this id that the caller is a party to"
)
NOT_THE_PUBLISHER = ProblemCode(
    "not-the-publisher", 403, "only the dataset's publisher decides on its agreements"
)
NOT_THE_CONSUMER = ProblemCode("not-the-consumer", 403, "only the consumer terminates an agreement")
AGREEMENT_NOT_PENDING = ProblemCode(
    "agreement-not-pending",
    409,
    "the agreement is no longer a request",
    (("agreement_status", "granted"),),
)
AGREEMENT_NOT_ACTIVE = ProblemCode(
    "agreement-not-active", 409, "the agreement is not granted", (("agreement_status", "revoked"),)
)
EVENT_NOT_ACKNOWLEDGED = ProblemCode(
    "event-not-acknowledged",
    503,
    "the change is committed but Kafka has not acknowledged its event yet; the service "
    "publishes it once Kafka answers (retry after `Retry-After` seconds to see it)",
    retry_after=True,
)
INVALID_SUBJECT_TOKEN = ProblemCode(
    "invalid-subject-token",
    401,
    "no subject token, or one malformed, badly signed, for another audience or lacking a claim",
)
EXPIRED_SUBJECT_TOKEN = ProblemCode("expired-subject-token", 401, "the subject token has expired")
UNKNOWN_TOKEN_ISSUER = ProblemCode(
    "unknown-token-issuer", 401, "the subject token's issuer is not one the platform trusts"
)
WRONG_DATASET_TOKEN = ProblemCode(
    "wrong-dataset-token", 403, "the subject token is for another dataset than the one named"
)
SUBJECT_DATASET_NOT_FOUND = ProblemCode(
    "dataset-not-found", 404, "consent knows no dataset by the id or slug the token names"
)
CONSENT_NOT_FOUND = ProblemCode(
    "consent-not-found", 404, "no consent by this id that the token's subject gave"
)
DATASET_NOT_PERSONAL = ProblemCode(
    "dataset-not-personal", 409, "subjects consent only on datasets of access level `personal`"
)
NO_ACTIVE_AGREEMENT = ProblemCode(
    "no-active-agreement",
    409,
    "the consumer holds no granted agreement on the dataset covering this purpose and period",
)
CONSENT_NOT_ACTIVE = ProblemCode(
    "consent-not-active",
    409,
    "the consent is no longer granted",
    (("consent_status", "withdrawn"),),
)
UNKNOWN_PURPOSE = ProblemCode(
    "unknown-purposes",
    422,
    "a purpose outside the vocabulary (W3C DPV purposes listed in `known`)",
    (("purposes", ["dpv:Gossip"]),),
)
