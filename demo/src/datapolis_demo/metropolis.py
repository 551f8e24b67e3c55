"""Who lives in the demo metropolis and what they publish: organisations, and
datasets with their JSON Schemas (ranges matching the generators')."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datapolis_demo.generators import DISTRICTS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Org:
    handle: str
    name: str
    kind: str
    email: str


AUTHORITY = Org("authority", "Métropole de Rivière", "public-authority", "data@metropole.example")
TRANSIT = Org("transit", "Rivière Transit", "company", "open-data@transit.example")
WATER = Org("water", "Eaux de Rivière", "company", "quality@water.example")
ENERGY = Org("energy", "Rivière Énergie", "company", "meters@energy.example")
TELECOM = Org("telecom", "Telco Rhône", "company", "data-partners@telco.example")
STARTUP = Org("startup", "Footfall Analytics", "company", "hello@footfall.example")
STARTUP_2 = Org("startup2", "Veloplan", "company", "team@veloplan.example")
LAB = Org("lab", "Urban Energy Lab", "research", "lab@university.example")

ORGANISATIONS: tuple[Org, ...] = (
    AUTHORITY,
    TRANSIT,
    WATER,
    ENERGY,
    TELECOM,
    STARTUP,
    STARTUP_2,
    LAB,
)
SCOPES = ["read", "publish", "ingest", "consent", "subscribe"]


def _schema(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "required": ["id", *required, "observed_at"],
        "properties": {
            "id": {"type": "string"},
            **properties,
            "observed_at": {"type": "string", "format": "date-time"},
        },
    }


def _number(low: float, high: float, description: str) -> dict[str, Any]:
    return {"type": "number", "minimum": low, "maximum": high, "description": description}


def _integer(low: int, high: int, description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high, "description": description}


DISTRICT = {"type": "string", "enum": [d.name for d in DISTRICTS]}


@dataclass(frozen=True)
class DatasetSpec:
    slug: str
    title: str
    description: str
    theme: str
    access_level: str
    publisher: Org
    key_field: str
    json_schema: dict[str, Any]
    licence: str = "etalab-2.0"
    subject_field: str | None = None
    keywords: list[str] = field(default_factory=list)

    def body(self, publisher_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "slug": self.slug,
            "title": self.title,
            "description": self.description,
            "theme": self.theme,
            "licence": self.licence,
            "access_level": self.access_level,
            "key_field": self.key_field,
            "keywords": self.keywords,
            "update_frequency": "continuous",
            "spatial_coverage": "Métropole de Rivière",
            "publisher_id": publisher_id,
            "retention_days": 7,
            "json_schema": self.json_schema,
        }
        if self.subject_field:
            body["subject_field"] = self.subject_field
        return body


BIKES = DatasetSpec(
    "bike-share-stations",
    "Bike-share station availability",
    "Bikes and free docks at each station, every few seconds.",
    "mobility",
    "open",
    TRANSIT,
    "station_id",
    _schema(
        ["station_id", "capacity", "bikes_available", "docks_available"],
        {
            "station_id": {"type": "string"},
            "district": DISTRICT,
            "capacity": _integer(1, 80, "docks at the station"),
            "bikes_available": _integer(0, 80, "bikes ready to rent"),
            "docks_available": _integer(0, 80, "free docks"),
        },
    ),
    keywords=["bike", "vélo"],
)
BUSES = DatasetSpec(
    "bus-positions",
    "Bus positions",
    "Where each bus is, how fast and how full.",
    "mobility",
    "open",
    TRANSIT,
    "vehicle_id",
    _schema(
        ["vehicle_id", "line", "lat", "lon"],
        {
            "vehicle_id": {"type": "string"},
            "line": {"type": "string"},
            "lat": _number(-90, 90, "WGS 84 latitude"),
            "lon": _number(-180, 180, "WGS 84 longitude"),
            "speed_kmh": _number(0, 120, "speed"),
            "occupancy": _number(0, 1, "share of the bus's capacity in use"),
        },
    ),
    keywords=["bus", "transit"],
)
WATER_QUALITY = DatasetSpec(
    "water-quality",
    "Drinking-water quality sensors",
    "pH, temperature, turbidity and free chlorine in the network.",
    "water",
    "open",
    WATER,
    "sensor_id",
    _schema(
        ["sensor_id", "ph", "chlorine_mg_l"],
        {
            "sensor_id": {"type": "string"},
            "site": {"type": "string"},
            "ph": _number(0, 14, "pH"),
            "temperature_c": _number(-5, 40, "water temperature, °C"),
            "turbidity_ntu": _number(0, 100, "turbidity, NTU"),
            "chlorine_mg_l": _number(0, 5, "free chlorine, mg/L"),
        },
    ),
    keywords=["eau", "water"],
)
SMART_METERS = DatasetSpec(
    "household-smart-meters",
    "Household smart-meter readings",
    "Electricity drawn by consenting households: personal data, shared only under "
    "an agreement and each resident's consent.",
    "energy",
    "personal",
    ENERGY,
    "meter_id",
    _schema(
        ["meter_id", "resident_id", "power_kw", "energy_kwh"],
        {
            "meter_id": {"type": "string"},
            "resident_id": {"type": "string", "description": "the resident's pseudonymous id"},
            "district": DISTRICT,
            "power_kw": _number(0, 36, "power drawn, kW"),
            "energy_kwh": _number(0, 10, "energy over the 15-minute interval, kWh"),
            "voltage_v": _number(180, 280, "supply voltage, V"),
        },
    ),
    licence="proprietary",
    subject_field="resident_id",
    keywords=["electricity", "compteurs"],
)
CROWD = DatasetSpec(
    "crowd-density",
    "Crowd density per district",
    "People present in each district, estimated from the mobile network.",
    "socio-demographic",
    "shared",
    TELECOM,
    "district",
    _schema(
        ["district", "people"],
        {
            "district": DISTRICT,
            "people": _integer(0, 1_000_000, "people present"),
            "density_per_km2": _number(0, 100_000, "people per km²"),
            "devices_sampled": _integer(0, 1_000_000, "devices behind the estimate"),
            "network_share": _number(0, 1, "the operator's share of the market"),
        },
    ),
    licence="proprietary",
    keywords=["footfall", "fréquentation"],
)
POPULATION = DatasetSpec(
    "population-by-district",
    "Population by district",
    "Registered residents and the population present, per district.",
    "socio-demographic",
    "open",
    AUTHORITY,
    "district",
    _schema(
        ["district", "residents"],
        {
            "district": DISTRICT,
            "residents": _integer(0, 1_000_000, "registered residents"),
            "households": _integer(0, 1_000_000, "households"),
            "present_population": _integer(0, 1_000_000, "people present now"),
            "area_km2": _number(0, 1_000, "area, km²"),
        },
    ),
    keywords=["population", "recensement"],
)
AIR = DatasetSpec(
    "air-quality",
    "Air quality",
    "NO2, ozone and PM2.5 at the monitoring stations.",
    "environment",
    "open",
    AUTHORITY,
    "station_id",
    _schema(
        ["station_id", "no2_ug_m3"],
        {
            "station_id": {"type": "string"},
            "district": DISTRICT,
            "no2_ug_m3": _number(0, 400, "nitrogen dioxide, µg/m³"),
            "o3_ug_m3": _number(0, 400, "ozone, µg/m³"),
            "pm25_ug_m3": _number(0, 300, "fine particles, µg/m³"),
        },
    ),
    keywords=["air", "pollution"],
)

DATASETS: tuple[DatasetSpec, ...] = (
    BIKES,
    BUSES,
    WATER_QUALITY,
    SMART_METERS,
    CROWD,
    POPULATION,
    AIR,
)
