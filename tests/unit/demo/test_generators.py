"""The demo's records look like a city's: inside their datasets' schemas at
every hour of the day, and following the day's rhythm rather than noise."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from statistics import mean

import jsonschema
import pytest

from datapolis_demo.generators import (
    CITY_TIME,
    DISTRICTS,
    AirQuality,
    BikeShare,
    BusPositions,
    CrowdDensity,
    Generator,
    PopulationByDistrict,
    SmartMeters,
    WaterQuality,
    day_of,
    every_generator,
)
from datapolis_demo.metropolis import DATASETS

MIDNIGHT = datetime(2026, 12, 2, tzinfo=CITY_TIME)
SCHEMAS = {spec.slug: spec.json_schema for spec in DATASETS}


def at(hour: float, day: int = 0) -> datetime:
    return MIDNIGHT + timedelta(days=day, hours=hour)


def average(generator: Generator, field: str, hour: float, **where: str) -> float:
    """The field's mean over a week of readings at that hour (noise averaged out)."""
    values = [
        record[field]
        for day in range(7)
        for record in generator.records(at(hour, day))
        if all(record[k] == v for k, v in where.items())
    ]
    return float(mean(values))


def rng() -> random.Random:
    return random.Random(7)


def test_every_dataset_has_a_generator_and_every_record_fits_its_schema() -> None:
    generators = every_generator(seed=1)
    assert {g.slug for g in generators} == set(SCHEMAS)
    for generator in generators:
        validator = jsonschema.Draft202012Validator(
            SCHEMAS[generator.slug], format_checker=jsonschema.FormatChecker()
        )
        for moment in day_of(MIDNIGHT, timedelta(minutes=20)):
            for record in generator.records(moment):
                errors = [e.message for e in validator.iter_errors(record)]
                assert errors == [], (generator.slug, moment, record)


def test_record_ids_are_unique_so_ingest_never_drops_a_reading_as_a_duplicate() -> None:
    ids = [
        record["id"]
        for generator in every_generator()
        for moment in day_of(MIDNIGHT, timedelta(seconds=1))[:120]
        for record in generator.records(moment)
    ]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("seed", range(5))
def test_ranges_hold_whatever_the_noise(seed: int) -> None:
    generators = every_generator(seed)
    for moment in day_of(MIDNIGHT, timedelta(minutes=7)):
        for generator in generators:
            for r in generator.records(moment):
                if isinstance(generator, BikeShare):
                    assert 0 <= r["bikes_available"] <= r["capacity"]
                    assert r["bikes_available"] + r["docks_available"] == r["capacity"]
                elif isinstance(generator, BusPositions):
                    assert 45.6 < r["lat"] < 45.9  # within the metropolis
                    assert 4.6 < r["lon"] < 5.0
                    assert 0 <= r["speed_kmh"] <= 70
                    assert 0 <= r["occupancy"] <= 1
                elif isinstance(generator, WaterQuality):
                    assert 6.5 <= r["ph"] <= 8.5  # the drinking-water limits
                    assert 0.05 <= r["chlorine_mg_l"] <= 0.6
                    assert r["turbidity_ntu"] < 1  # drinking water stays clear
                elif isinstance(generator, SmartMeters):
                    assert 0.05 <= r["power_kw"] <= 9
                    assert r["energy_kwh"] == pytest.approx(r["power_kw"] * 0.25, abs=1e-3)
                    assert 207 <= r["voltage_v"] <= 253  # 230 V ± 10 %
                elif isinstance(generator, CrowdDensity | PopulationByDistrict):
                    assert r["district"] in {d.name for d in DISTRICTS}
                elif isinstance(generator, AirQuality):
                    assert 0 <= r["no2_ug_m3"] < 200
                    assert 0 <= r["pm25_ug_m3"] < 75
                    assert 0 <= r["o3_ug_m3"] < 200


def test_air_no2_peaks_at_the_rush_hours_and_ozone_in_the_afternoon() -> None:
    air = AirQuality(rng())
    no2 = {h: average(air, "no2_ug_m3", h, station_id="AQ-CTR") for h in (3, 8, 13, 18)}
    assert no2[8] > 2 * no2[3]
    assert no2[18] > 2 * no2[3]
    assert no2[8] > no2[13]
    o3 = {h: average(air, "o3_ug_m3", h, station_id="AQ-HIL") for h in (3, 15)}
    assert o3[15] > 1.5 * o3[3]


def test_households_draw_most_in_the_evening_and_least_at_night() -> None:
    meters = SmartMeters(rng())
    night, breakfast, evening = (average(meters, "power_kw", h) for h in (3.5, 7.5, 19.5))
    assert evening > breakfast > 2 * night
    # a larger household draws more
    assert average(meters, "power_kw", 19.5, meter_id="MTR-0003") > average(
        meters, "power_kw", 19.5, meter_id="MTR-0005"
    )


def test_crowds_fill_the_centre_by_day_and_the_residential_districts_by_night() -> None:
    crowd = CrowdDensity(rng())
    assert average(crowd, "people", 14, district="Centre") > 1.5 * average(
        crowd, "people", 3, district="Centre"
    )
    assert average(crowd, "people", 3, district="Garden City") > average(
        crowd, "people", 14, district="Garden City"
    )


def test_bikes_leave_residential_stations_in_the_morning_and_come_back_at_night() -> None:
    bikes = BikeShare(rng())
    residential = next(s for s, d, _ in bikes.stations if d.residential)
    central = next(s for s, d, _ in bikes.stations if not d.residential)

    def share(station: str, hour: float) -> float:
        return average(bikes, "bikes_available", hour, station_id=station)

    assert share(residential, 9) < share(residential, 21)
    assert share(central, 9) > share(central, 21)


def test_buses_are_fuller_and_slower_at_the_rush_hour_than_at_night() -> None:
    buses = BusPositions(rng())
    assert average(buses, "occupancy", 8) > 3 * average(buses, "occupancy", 3)
    assert average(buses, "speed_kmh", 8) < average(buses, "speed_kmh", 3)


def test_present_population_swings_with_commuting_but_residents_stay() -> None:
    population = PopulationByDistrict(rng())
    day = population.records(at(14))
    night = population.records(at(3))
    assert [r["residents"] for r in day] == [r["residents"] for r in night]
    centre_day, centre_night = (
        next(r for r in rs if r["district"] == "Centre")["present_population"]
        for rs in (day, night)
    )
    assert centre_day > centre_night
