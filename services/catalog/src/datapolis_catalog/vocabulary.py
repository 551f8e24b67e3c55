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

# Labels of the authority-table entries the export uses, so a harvester that
# does not load the tables still shows a name (DCAT-AP wants a skos:prefLabel
# on every concept).
EU_DATA_THEME_LABELS: dict[str, str] = {
    "ENER": "Energy",
    "ENVI": "Environment",
    "TRAN": "Transport",
    "SOCI": "Population and society",
    "GOVE": "Government and public sector",
    "OP_DATPRO": "Provisional data",
}
EU_ACCESS_RIGHT_LABELS: dict[str, str] = {
    "PUBLIC": "public",
    "RESTRICTED": "restricted",
    "NON_PUBLIC": "non-public",
}
EU_FREQUENCY_LABELS: dict[str, str] = {
    "UPDATE_CONT": "continuously updated",
    "HOURLY": "hourly",
    "DAILY": "daily",
    "WEEKLY": "weekly",
    "MONTHLY": "monthly",
    "ANNUAL": "annual",
    "IRREG": "irregular",
    "UNKNOWN": "unknown",
}

# Every distribution is a topic of JSON records (the value of each Kafka
# record is the record's own JSON).
EU_FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
# A dataset's topic lives as long as the dataset: STABLE in the EU
# planned-availability table (records themselves age out after the dataset's
# retention, which the distribution's description states).
EU_PLANNED_AVAILABILITY = "http://publications.europa.eu/resource/authority/planned-availability/"

# The ADMS publisher types (dct:type of a foaf:Agent). "other" maps to none:
# nothing true can be said of it.
ADMS_PUBLISHER_TYPE = "http://purl.org/adms/publishertype/"
PUBLISHER_TYPES: dict[str, tuple[str, str]] = {
    # The platform serves a metropolis: its public authorities are local ones.
    "public-authority": ("LocalAuthority", "Local Authority"),
    "company": ("Company", "Company"),
    "association": ("NonProfitOrganisation", "Non-Profit Organisation"),
    "research": ("Academia-ScientificOrganisation", "Academia/Scientific organisation"),
}

# The ADMS licence types (dct:type of a dct:LicenseDocument).
ADMS_LICENCE_TYPE = "http://purl.org/adms/licencetype/"
_ATTRIBUTION = ("Attribution", "Attribution")
_SHARE_ALIKE = ("ViralEffect-ShareAlike", "Viral effect (share-alike)")
LICENCE_TYPES: dict[str, tuple[tuple[str, str], ...]] = {
    "etalab-2.0": (_ATTRIBUTION,),
    "odbl-1.0": (_ATTRIBUTION, _SHARE_ALIKE),
    "cc-by-4.0": (_ATTRIBUTION,),
    "cc-by-sa-4.0": (_ATTRIBUTION, _SHARE_ALIKE),
    "cc0-1.0": (("PublicDomain", "Public domain"),),
    # Conditions defined in a sharing agreement with the publisher.
    "proprietary": (("OtherRestrictiveClauses", "Other restrictive clauses"),),
}
