"""Settings of the ingest service: environment variables prefixed `INGEST_`."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from datapolis_shared.settings import HttpSettings, ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="INGEST_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "ingest"
    http: HttpSettings = HttpSettings(port=8002)

    # A request carries at most this many records (and at most
    # http.max_body_bytes); beyond either it is refused with 413.
    max_batch_records: int = Field(default=5000, ge=1)
    # Records accepted by this process and not yet acknowledged by Kafka. Past
    # it, new batches get 429 with Retry-After instead of an unbounded buffer.
    max_in_flight_records: int = Field(default=20_000, ge=1)
    # How long a request's Idempotency-Key replays its first answer.
    idempotency_window_s: int = Field(default=24 * 3600, ge=1)
    # A request that holds a key longer than this is taken to have died with
    # its process; the key may then be used again.
    idempotency_lease_s: int = Field(default=120, ge=1)
    # Record ids are remembered per dataset, in this process's memory, for
    # this long or until this many ids are held, whichever comes first.
    dedup_window_s: float = Field(default=900.0, gt=0)
    dedup_max_ids: int = Field(default=500_000, ge=1)
    # BatchIngested events aggregate counts per dataset and producer over this interval.
    stats_interval_s: float = Field(default=1.0, gt=0)
    # Base of the schema URLs put in ce_dataschema (catalog serves them).
    catalog_url: str = "http://127.0.0.1:8001"
    # The bound ingest states for using a dataset or schema version catalog
    # has just answered 201 for (see README: propagation). A request for one
    # ingest does not know gets 503 "not known yet" during this long after its
    # first attempt, then 404 / 409.
    propagation_bound_s: float = Field(default=5.0, ge=0)
    # The raw-topic worker waits this long for a dataset it does not know yet
    # (catalog events still on their way) before dead-lettering its records.
    unknown_dataset_grace_s: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _a_batch_fits_in_flight(self) -> Self:
        if self.max_in_flight_records < self.max_batch_records:
            raise ValueError(
                "max_in_flight_records must be at least max_batch_records, "
                "or a full batch could never be admitted"
            )
        return self
