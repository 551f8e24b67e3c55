"""The closed vocabularies of the catalog and their mapping to EU authority
tables, so DCAT-AP harvesters understand them without a lookup table of ours."""

from __future__ import annotations

from typing import Literal, get_args

OrganisationKind = Literal["public-authority", "company", "association", "research", "other"]
Theme = Literal[
    "energy", "water", "mobility", "socio-demographic", "environment", "public-services", "other"
]
AccessLevel = Literal["open", "shared", "personal"]
Licence = Literal["etalab-2.0", "odbl-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc0-1.0", "proprietary"]
UpdateFrequency = Literal[
    "continuous", "hourly", "daily", "weekly", "monthly", "annual", "irregular", "unknown"
]

THEMES: tuple[str, ...] = get_args(Theme)
ACCESS_LEVELS: tuple[str, ...] = get_args(AccessLevel)
LICENCES: tuple[str, ...] = get_args(Licence)

# A dataset anyone may read needs a licence that lets them reuse it.
OPEN_LICENCES = frozenset(LICENCES) - {"proprietary"}

EU_DATA_THEME = "http://publications.europa.eu/resource/authority/data-theme/"
EU_ACCESS_RIGHT = "http://publications.europa.eu/resource/authority/access-right/"
EU_FREQUENCY = "http://publications.europa.eu/resource/authority/frequency/"

# Water is an environmental resource in the EU data-theme table (there is no
# water theme); OP_DATPRO is the table's "not yet classified".
THEME_CODES: dict[str, str] = {
    "energy": "ENER",
    "water": "ENVI",
    "mobility": "TRAN",
    "socio-demographic": "SOCI",
    "environment": "ENVI",
    "public-services": "GOVE",
    "other": "OP_DATPRO",
}

ACCESS_RIGHT_CODES: dict[str, str] = {
    "open": "PUBLIC",
    "shared": "RESTRICTED",
    "personal": "NON_PUBLIC",
}

FREQUENCY_CODES: dict[str, str] = {
    "continuous": "UPDATE_CONT",
    "hourly": "HOURLY",
    "daily": "DAILY",
    "weekly": "WEEKLY",
    "monthly": "MONTHLY",
    "annual": "ANNUAL",
    "irregular": "IRREG",
    "unknown": "UNKNOWN",
}

LICENCE_URIS: dict[str, str] = {
    "etalab-2.0": "https://www.etalab.gouv.fr/licence-ouverte-open-licence/",
    "odbl-1.0": "https://opendatacommons.org/licenses/odbl/1-0/",
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "cc-by-sa-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
}
