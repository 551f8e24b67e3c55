"""Synthetic but plausible records: each generator follows the city's daily
rhythm (commuting peaks, night lows, afternoon ozone) with a little noise,
and stays inside the ranges its dataset's JSON Schema declares.

Pure functions of the time and a seeded random source, so tests can check the
ranges at every hour and the shape of each day."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# The metropolis keeps Central European time: its rush hours are local.
CITY_TIME = ZoneInfo("Europe/Paris")

Record = dict[str, Any]


@dataclass(frozen=True)
class District:
    name: str
    area_km2: float
    residents: int
    # Share of the daytime crowd a district draws (offices, shops, campus).
    attraction: float
    # Residential districts empty in the morning, central ones fill up.
    residential: bool


DISTRICTS: tuple[District, ...] = (
    District("Centre", 4.2, 38_000, 3.0, residential=False),
    District("Old Town", 2.1, 21_000, 1.8, residential=False),
    District("Riverside", 5.6, 47_000, 1.0, residential=True),
    District("University", 3.9, 29_000, 1.6, residential=False),
    District("Harbour", 7.3, 18_000, 1.2, residential=False),
    District("Hillside", 9.8, 52_000, 0.5, residential=True),
    District("Garden City", 11.5, 61_000, 0.4, residential=True),
    District("Airport", 14.0, 6_000, 0.9, residential=False),
)


def local_hour(at: datetime) -> float:
    """The hour of the day in the city, 0 to 24 with minutes as a fraction."""
    local = at.astimezone(CITY_TIME)
    return local.hour + local.minute / 60 + local.second / 3600


def peak(hour: float, centre: float, width: float) -> float:
    """A bell around `centre` o'clock (1 at the centre), wrapping midnight."""
    distance = min(abs(hour - centre), 24 - abs(hour - centre))
    return math.exp(-((distance / width) ** 2) / 2)


def activity(hour: float) -> float:
    """How awake the city is: about 0.1 at 4 am, 1 in the daytime."""
    return 0.1 + 0.9 * (1 / (1 + math.exp(-(hour - 7) * 1.5))) * (
        1 / (1 + math.exp((hour - 23) * 1.2))
    )


def commute(hour: float) -> float:
    """The two rush hours: 8 am and, longer, 6 pm."""
    return peak(hour, 8.0, 1.2) + 0.9 * peak(hour, 18.0, 1.6)


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_id(prefix: str, at: datetime) -> str:
    return f"{prefix}-{at.astimezone(UTC):%Y%m%dT%H%M%S%f}"


class BikeShare:
    """Station availability: residential stations empty in the morning rush
    and fill in the evening; central ones do the opposite."""

    slug = "bike-share-stations"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.stations = [
            (f"BS-{i:03d}", district, 20 + (i * 7) % 21)
            for i, district in enumerate(DISTRICTS[:6] * 2, start=1)
        ]

    def records(self, at: datetime) -> list[Record]:
        hour = local_hour(at)
        out = []
        for station_id, district, capacity in self.stations:
            # Bikes leave home in the morning and come back in the evening.
            flow = peak(hour, 9.0, 2.0) - peak(hour, 19.0, 2.5)
            fill = 0.5 + (-0.4 if district.residential else 0.4) * flow
            bikes = round(clamp(fill + self.rng.gauss(0, 0.05), 0, 1) * capacity)
            out.append(
                {
                    "id": record_id(station_id, at),
                    "station_id": station_id,
                    "district": district.name,
                    "capacity": capacity,
                    "bikes_available": bikes,
                    "docks_available": capacity - bikes,
                    "observed_at": stamp(at),
                }
            )
        return out


class BusPositions:
    """Buses on radial lines: more of them in service and fuller at the rush
    hours, slower in the traffic then."""

    slug = "bus-positions"
    # The metropolis's centre (a city of the Rhône valley's latitude).
    CENTRE = (45.76, 4.84)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.buses = [(f"BUS-{i:03d}", f"C{1 + i % 5}", i * 36.0) for i in range(10)]

    def records(self, at: datetime) -> list[Record]:
        hour = local_hour(at)
        out = []
        for vehicle_id, line, bearing in self.buses:
            # Each bus shuttles along its line's radius, one round trip an hour.
            phase = (at.timestamp() / 3600 + bearing / 360) % 1.0
            radius_km = 8.0 * (1 - abs(2 * phase - 1))
            lat = self.CENTRE[0] + radius_km / 111.0 * math.cos(math.radians(bearing))
            lon = self.CENTRE[1] + radius_km / 78.0 * math.sin(math.radians(bearing))
            traffic = commute(hour)
            speed = clamp(32 - 14 * traffic + self.rng.gauss(0, 4), 0, 70)
            occupancy = clamp(
                0.08 + 0.75 * traffic * activity(hour) + self.rng.gauss(0, 0.05), 0, 1
            )
            out.append(
                {
                    "id": record_id(vehicle_id, at),
                    "vehicle_id": vehicle_id,
                    "line": line,
                    "lat": round(lat, 6),
                    "lon": round(lon, 6),
                    "speed_kmh": round(speed, 1),
                    "occupancy": round(occupancy, 2),
                    "observed_at": stamp(at),
                }
            )
        return out


class WaterQuality:
    """Drinking-water sensors: pH near neutral, chlorine falling as demand
    peaks (water stays less time in the network), temperature with the day."""

    slug = "water-quality"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sensors = [
            ("WQ-01", "Reservoir North"),
            ("WQ-02", "Treatment plant outlet"),
            ("WQ-03", "Centre main"),
            ("WQ-04", "Hillside tower"),
            ("WQ-05", "Harbour main"),
        ]

    def records(self, at: datetime) -> list[Record]:
        hour = local_hour(at)
        demand = peak(hour, 7.5, 1.5) + peak(hour, 20.0, 2.0)
        out = []
        for sensor_id, site in self.sensors:
            out.append(
                {
                    "id": record_id(sensor_id, at),
                    "sensor_id": sensor_id,
                    "site": site,
                    "ph": round(clamp(7.4 + self.rng.gauss(0, 0.08), 6.5, 8.5), 2),
                    "temperature_c": round(
                        clamp(12 + 2.5 * peak(hour, 16, 4) + self.rng.gauss(0, 0.2), 4, 25), 2
                    ),
                    "turbidity_ntu": round(
                        clamp(0.2 + 0.15 * demand + abs(self.rng.gauss(0, 0.05)), 0, 4), 3
                    ),
                    "chlorine_mg_l": round(
                        clamp(0.35 - 0.08 * demand + self.rng.gauss(0, 0.01), 0.05, 0.6), 3
                    ),
                    "observed_at": stamp(at),
                }
            )
        return out


@dataclass(frozen=True)
class Household:
    meter_id: str
    resident_id: str
    district: str
    # A larger household draws more at each moment of the day.
    size: float


HOUSEHOLDS: tuple[Household, ...] = (
    Household("MTR-0001", "p-3f9a21", "Riverside", 1.0),
    Household("MTR-0002", "p-7c04be", "Hillside", 1.6),
    Household("MTR-0003", "p-b25d10", "Garden City", 2.2),
    Household("MTR-0004", "p-e81c77", "Old Town", 0.8),
    Household("MTR-0005", "p-44d0a9", "University", 0.6),
    Household("MTR-0006", "p-91fe35", "Centre", 1.2),
)


class SmartMeters:
    """Household electricity: a base load around the clock, a breakfast peak
    and a larger evening peak (cooking, heating, screens)."""

    slug = "household-smart-meters"

    def __init__(self, rng: random.Random, households: tuple[Household, ...] = HOUSEHOLDS) -> None:
        self.rng = rng
        self.households = households

    def records(self, at: datetime) -> list[Record]:
        hour = local_hour(at)
        out = []
        for home in self.households:
            power = (
                home.size
                * (0.25 + 0.9 * peak(hour, 7.5, 1.0) + 1.8 * peak(hour, 19.5, 1.8))
                * (1 + self.rng.gauss(0, 0.08))
            )
            power = clamp(power, 0.05, 9.0)
            out.append(
                {
                    "id": record_id(home.meter_id, at),
                    "meter_id": home.meter_id,
                    "resident_id": home.resident_id,
                    "district": home.district,
                    "power_kw": round(power, 3),
                    # energy over the meter's 15-minute interval
                    "energy_kwh": round(power * 0.25, 4),
                    "voltage_v": round(clamp(230 + self.rng.gauss(0, 2.5), 207, 253), 1),
                    "observed_at": stamp(at),
                }
            )
        return out


class CrowdDensity:
    """People per district, estimated from the telecom operator's network:
    the centre fills in the daytime, residential districts at night."""

    slug = "crowd-density"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def records(self, at: datetime) -> list[Record]:
        hour = local_hour(at)
        day = activity(hour) * (0.6 + 0.4 * peak(hour, 14.0, 4.0))
        out = []
        for district in DISTRICTS:
            at_home = district.residents * (1 - 0.55 * day) * 0.92
            visitors = 15_000 * district.attraction * day
            people = max(0, round((at_home + visitors) * (1 + self.rng.gauss(0, 0.02))))
            out.append(
                {
                    "id": record_id(f"CD-{district.name.replace(' ', '')}", at),
                    "district": district.name,
                    "people": people,
                    "density_per_km2": round(people / district.area_km2, 1),
                    "devices_sampled": round(people * 0.31),
                    "network_share": 0.31,
                    "observed_at": stamp(at),
                }
            )
        return out


class PopulationByDistrict:
    """Registered residents (steady) and the population present, which
    swings with commuting."""

    slug = "population-by-district"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def records(self, at: datetime) -> list[Record]:
        hour = local_hour(at)
        day = activity(hour) * (0.6 + 0.4 * peak(hour, 14.0, 4.0))
        out = []
        for district in DISTRICTS:
            present = district.residents * (1 - 0.5 * day) + 8_000 * district.attraction * day
            out.append(
                {
                    "id": record_id(f"POP-{district.name.replace(' ', '')}", at),
                    "district": district.name,
                    "residents": district.residents,
                    "households": round(district.residents / 2.1),
                    "present_population": max(0, round(present)),
                    "area_km2": district.area_km2,
                    "observed_at": stamp(at),
                }
            )
        return out


class AirQuality:
    """NO2 follows traffic (rush hours), ozone the afternoon sun, PM2.5
    heating and traffic with a slower rhythm."""

    slug = "air-quality"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.stations = [
            ("AQ-CTR", "Centre", 1.3),
            ("AQ-OLD", "Old Town", 1.1),
            ("AQ-RIV", "Riverside", 0.9),
            ("AQ-HAR", "Harbour", 1.2),
            ("AQ-HIL", "Hillside", 0.6),
            ("AQ-APT", "Airport", 1.0),
        ]

    def records(self, at: datetime) -> list[Record]:
        hour = local_hour(at)
        out = []
        for station_id, district, exposure in self.stations:
            no2 = exposure * (12 + 45 * commute(hour)) + self.rng.gauss(0, 2)
            o3 = 25 + 70 * peak(hour, 15.0, 2.5) - 0.3 * no2 + self.rng.gauss(0, 3)
            pm25 = exposure * (6 + 10 * peak(hour, 9.0, 2.5) + 14 * peak(hour, 21.0, 3.0))
            out.append(
                {
                    "id": record_id(station_id, at),
                    "station_id": station_id,
                    "district": district,
                    "no2_ug_m3": round(clamp(no2, 0, 400), 1),
                    "o3_ug_m3": round(clamp(o3, 0, 400), 1),
                    "pm25_ug_m3": round(clamp(pm25 + self.rng.gauss(0, 1), 0, 300), 1),
                    "observed_at": stamp(at),
                }
            )
        return out


Generator = (
    BikeShare
    | BusPositions
    | WaterQuality
    | SmartMeters
    | CrowdDensity
    | PopulationByDistrict
    | AirQuality
)


def every_generator(seed: int = 2026) -> list[Generator]:
    rng = random.Random(seed)  # noqa: S311  # synthetic readings, not secrets
    return [
        BikeShare(rng),
        BusPositions(rng),
        WaterQuality(rng),
        SmartMeters(rng),
        CrowdDensity(rng),
        PopulationByDistrict(rng),
        AirQuality(rng),
    ]


def day_of(start: datetime, step: timedelta = timedelta(minutes=30)) -> list[datetime]:
    """Every `step` over the 24 hours from `start` (tests and previews)."""
    return [start + i * step for i in range(int(timedelta(days=1) / step))]
