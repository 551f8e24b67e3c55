"""Profiles: the services' URLs and the caller's credentials.

A value comes, in order of precedence, from an environment variable, the
chosen profile of the config file, or the defaults of the local stack
(`make up`). The file lives in the user's config folder (``DATAPOLIS_CONFIG``
names another) and holds secrets, so it is written readable by its owner only.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

DEFAULT_PROFILE = "default"

# The ports `make up` serves the four services on.
DEFAULTS: dict[str, str] = {
    "catalog_url": "http://127.0.0.1:8001",
    "ingest_url": "http://127.0.0.1:8002",
    "consent_url": "http://127.0.0.1:8003",
    "notify_url": "http://127.0.0.1:8004",
    "kafka_bootstrap_servers": "127.0.0.1:9092",
}

# Each setting's environment variable: DATAPOLIS_ + its name in capitals.
ENV_PREFIX = "DATAPOLIS_"


@dataclass(frozen=True)
class Profile:
    name: str = DEFAULT_PROFILE
    catalog_url: str = DEFAULTS["catalog_url"]
    ingest_url: str = DEFAULTS["ingest_url"]
    consent_url: str = DEFAULTS["consent_url"]
    notify_url: str = DEFAULTS["notify_url"]
    kafka_bootstrap_servers: str = DEFAULTS["kafka_bootstrap_servers"]
    api_key: str | None = None
    subject_token: str | None = None

    def url(self, service: str) -> str:
        value: str = getattr(self, f"{service}_url")
        return value.rstrip("/")

    def stored(self) -> dict[str, str]:
        """What the config file keeps of it: every value that is set."""
        return {k: v for k, v in asdict(self).items() if k != "name" and v is not None}


SETTINGS = tuple(f.name for f in fields(Profile) if f.name != "name")


def config_path() -> Path:
    override = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if override:
        return Path(override)
    return platformdirs.user_config_path("datapolis") / "config.toml"


def read_file(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.exists():
        return {}
    with path.open("rb") as f:
        return tomllib.load(f)


def profile_name(requested: str | None, document: dict[str, Any]) -> str:
    if requested:
        return requested
    from_env = os.environ.get(f"{ENV_PREFIX}PROFILE")
    if from_env:
        return from_env
    default = document.get("default_profile")
    return default if isinstance(default, str) else DEFAULT_PROFILE


def load_profile(requested: str | None = None) -> Profile:
    document = read_file()
    name = profile_name(requested, document)
    stored = document.get("profiles", {}).get(name, {})
    values: dict[str, Any] = {k: v for k, v in stored.items() if k in SETTINGS}
    for setting in SETTINGS:
        from_env = os.environ.get(ENV_PREFIX + setting.upper())
        if from_env:
            values[setting] = from_env
    return replace(Profile(name=name), **values)


def save_profile(profile: Profile, *, make_default: bool) -> Path:
    """Write ``profile`` into the config file (other profiles kept), mode 0600."""
    path = config_path()
    document = read_file(path)
    profiles = document.setdefault("profiles", {})
    profiles[profile.name] = profile.stored()
    if make_default or "default_profile" not in document:
        document["default_profile"] = profile.name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created with 0600 from the start: the key is never readable by others,
    # not even between writing and a later chmod.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        tomli_w.dump(document, f)
    path.chmod(0o600)
    return path
