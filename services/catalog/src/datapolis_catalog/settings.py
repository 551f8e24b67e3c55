"""Settings of the catalog service: environment variables prefixed `CATALOG_`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from datapolis_catalog.vocabulary import OrganisationKind
from datapolis_shared.events import INGEST_EVENTS
from datapolis_shared.settings import HttpSettings, ServiceSettings


class StatsSettings(BaseModel):
    """The live-stats worker (``python -m datapolis_catalog worker``)."""

    # Where ingest announces its batches; tests point it at a topic of their own.
    source_topic: str = INGEST_EVENTS
    window_s: float = Field(default=60.0, gt=0)
    expires_s: float = Field(default=3600.0, gt=0)
    # How often the windowed counts are written to the dataset_stats table.
    flush_interval_s: float = Field(default=5.0, gt=0)
    # faust's working directory (tables live in memory and in their Kafka
    # changelogs; faust still wants a folder). Never the current directory.
    data_dir: Path = Path(tempfile.gettempdir()) / "datapolis-faust"


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CATALOG_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "catalog"
    http: HttpSettings = HttpSettings(port=8001)

    # Catalog is the source of keys: its own cache is short so a revocation
    # bites here within about a second.
    key_cache_ttl_s: float = Field(default=1.0, ge=0)
    # Topics of a dataset are created right after the commit that registers
    # it; this reconciliation retries whatever that missed (Kafka down).
    provisioning_interval_s: float = Field(default=30.0, gt=0)
    # Public addresses shown on a dataset's page ("how to subscribe").
    ingest_public_url: str = "http://127.0.0.1:8002"
    notify_public_url: str = "http://127.0.0.1:8004"
    consent_public_url: str = "http://127.0.0.1:8003"
    # The bootstrap servers consumers should use; the broker the catalog
    # itself talks to when unset (in Kubernetes these differ).
    kafka_public_bootstrap: str | None = None
    stats: StatsSettings = StatsSettings()
    # How the exports name this catalog and its publisher (the operator).
    catalog_title: str = "datapolis metropolitan data catalogue"
    catalog_publisher_name: str = "Metropolitan data service (operator)"
    # What kind of organisation the operator is (its ADMS publisher type).
    catalog_publisher_kind: OrganisationKind = "public-authority"
    # The operator's public contact address: the contact point of the catalog
    # and of its data service in the DCAT-AP export (none when unset).
    catalog_contact_email: str | None = Field(
        default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254
    )
